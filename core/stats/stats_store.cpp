#include "core/stats/stats_store.h"

#include "core/stats/h5_util.h"

#include "core/common/error.h"

#include <H5Cpp.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

namespace lcw::stats {

const TensorStats* StatsReport::findWeight(const std::string& name) const {
    for (auto& t : weights)
        if (t.name == name) return &t;
    return nullptr;
}
const TensorStats* StatsReport::findActivation(const std::string& name) const {
    for (auto& t : activations)
        if (t.name == name) return &t;
    return nullptr;
}

namespace {

using h5::putDouble;
using h5::putInt;
using h5::putStr;

const char* kFormat = "lcw-stats";

// ------------------------------------------------------------------------------- writing

void putIntArrayAttr(H5::H5Object& o, const std::string& name, const std::vector<int64_t>& v) {
    hsize_t d = v.size();
    H5::Attribute a = o.createAttribute(name, H5::PredType::NATIVE_INT64, H5::DataSpace(1, &d));
    if (!v.empty()) a.write(H5::PredType::NATIVE_INT64, v.data());
}

template <class T>
void putDataset(H5::Group& g, const std::string& name, const std::vector<T>& v,
                const H5::PredType& mem, const H5::PredType& file) {
    hsize_t d = v.size();
    H5::DataSpace sp(1, &d);
    H5::DSetCreatPropList pl;
    if (d >= 4096) { // large arrays (per-token, per-channel of big models): chunked + deflate
        hsize_t ch = std::min<hsize_t>(d, 65536);
        pl.setChunk(1, &ch);
        pl.setDeflate(4);
    }
    H5::DataSet ds = g.createDataSet(name, file, sp, pl);
    if (d) ds.write(v.data(), mem);
}

void writeTensor(H5::Group& parent, const TensorStats& t) {
    H5::Group g = parent.createGroup(t.name);
    putStr(g, "name", t.name);
    putStr(g, "kind", t.kind);
    putStr(g, "dtype", t.dtype);
    putInt(g, "layer", t.layer);
    putIntArrayAttr(g, "shape", t.shape);
    for (auto& [k, v] : t.scalars) putDouble(g, k, v);
    for (auto& [k, v] : t.arrays)
        putDataset(g, k, v, H5::PredType::NATIVE_DOUBLE, H5::PredType::IEEE_F64LE);
    for (auto& [k, v] : t.counts)
        putDataset(g, k, v, H5::PredType::NATIVE_INT64, H5::PredType::STD_I64LE);
}

std::string previewList(const std::vector<PreviewConfig>& p) {
    std::string s;
    for (auto& c : p) {
        if (!s.empty()) s += ',';
        s += c.label();
    }
    return s;
}

// ------------------------------------------------------------------------------- reading

struct AttrValue {
    H5T_class_t cls;
    std::string s;
    double d = 0;
    std::vector<int64_t> ints;
};

// `legacy`: the reader of files without lcw's userblock (older lcw files), which runs only in
// the converter child process (lcw-cli h5-convert): variable-length strings are read there and
// refused everywhere else.
AttrValue readAttr(const H5::Attribute& a, bool legacy) {
    AttrValue r;
    r.cls = a.getTypeClass();
    if (r.cls == H5T_STRING) {
        r.s = h5::readStr(a, legacy);
    } else if (r.cls == H5T_FLOAT) {
        a.read(H5::PredType::NATIVE_DOUBLE, &r.d);
    } else if (r.cls == H5T_INTEGER) {
        const hssize_t n = a.getSpace().getSimpleExtentNpoints();
        r.ints.resize(size_t(std::max<hssize_t>(n, 0)));
        if (n > 0) a.read(H5::PredType::NATIVE_INT64, r.ints.data());
        r.d = r.ints.empty() ? 0 : double(r.ints[0]);
    }
    return r;
}

struct Reader {
    bool legacy = false;

    std::string getStr(const H5::H5Object& o, const std::string& name,
                       const std::string& def = "") const {
        if (!o.attrExists(name)) return def;
        return readAttr(o.openAttribute(name), legacy).s;
    }
    double getNum(const H5::H5Object& o, const std::string& name, double def = 0) const {
        if (!o.attrExists(name)) return def;
        return readAttr(o.openAttribute(name), legacy).d;
    }
    /// A text stored as a byte dataset (schema 2) or, in schema 1, as a string attribute.
    std::string getText(const H5::Group& g, const std::string& name) const {
        if (g.nameExists(name)) return h5::getBytesAsString(g, name);
        return getStr(g, name);
    }
    TensorStats readTensor(const H5::Group& g) const;
    std::vector<TensorStats> readTensors(const H5::H5File& f, const std::string& group) const;
};

TensorStats Reader::readTensor(const H5::Group& g) const {
    TensorStats t;
    const int na = g.getNumAttrs();
    for (int i = 0; i < na; ++i) {
        H5::Attribute a = g.openAttribute(unsigned(i));
        const std::string n = a.getName();
        AttrValue v = readAttr(a, legacy);
        if (n == "name")
            t.name = v.s;
        else if (n == "kind")
            t.kind = v.s;
        else if (n == "dtype")
            t.dtype = v.s;
        else if (n == "layer")
            t.layer = int(v.d);
        else if (n == "shape")
            t.shape = v.ints;
        else if (v.cls == H5T_FLOAT)
            t.scalars[n] = v.d;
    }
    const hsize_t no = g.getNumObjs();
    for (hsize_t i = 0; i < no; ++i) {
        const std::string n = g.getObjnameByIdx(i);
        if (g.childObjType(n) != H5O_TYPE_DATASET) continue;
        H5::DataSet ds = g.openDataSet(n);
        const hssize_t cnt = ds.getSpace().getSimpleExtentNpoints();
        if (ds.getTypeClass() == H5T_FLOAT) {
            std::vector<double> v(size_t(std::max<hssize_t>(cnt, 0)));
            if (cnt > 0) ds.read(v.data(), H5::PredType::NATIVE_DOUBLE);
            t.arrays[n] = std::move(v);
        } else {
            std::vector<int64_t> v(size_t(std::max<hssize_t>(cnt, 0)));
            if (cnt > 0) ds.read(v.data(), H5::PredType::NATIVE_INT64);
            t.counts[n] = std::move(v);
        }
    }
    return t;
}

std::vector<TensorStats> Reader::readTensors(const H5::H5File& f, const std::string& group) const {
    std::vector<TensorStats> r;
    if (!f.nameExists(group)) return r;
    H5::Group g = f.openGroup(group);
    // Stored order: "order" lists names as written (groups iterate by name).
    const std::string order = getText(g, "order");
    std::stringstream ss(order);
    std::string n;
    while (std::getline(ss, n, '\n'))
        if (!n.empty()) r.push_back(readTensor(g.openGroup(n)));
    return r;
}

PreviewConfig parseLabel(const std::string& l) {
    // w<bits>(t|c|g<G>)(s|a)
    PreviewConfig c;
    size_t i = 1;
    c.bits = std::stoi(l.substr(i));
    while (i < l.size() && std::isdigit(static_cast<unsigned char>(l[i]))) ++i;
    if (i >= l.size()) throw std::invalid_argument("preview label '" + l + "'");
    if (l[i] == 't')
        c.group = -1, ++i;
    else if (l[i] == 'c')
        c.group = 0, ++i;
    else {
        c.group = std::stoll(l.substr(i + 1));
        ++i;
        while (i < l.size() && std::isdigit(static_cast<unsigned char>(l[i]))) ++i;
    }
    c.symmetric = i < l.size() && l[i] == 's';
    return c;
}

/// Reads with libhdf5: only files that passed h5::verify() (or, with `legacy`, in the converter
/// child process).
StatsReport readHdf5(const std::string& path, bool headerOnly, bool legacy) {
    const std::lock_guard<std::mutex> lock(h5::fileMutex());
    H5::Exception::dontPrint();
    if (!std::filesystem::exists(path)) throw FormatError(path, "file not found");
    if (!h5::hasHdf5Signature(path)) throw FormatError(path, "not an HDF5 file");
    const Reader rd{legacy};
    auto getStr = [&rd](const H5::H5Object& o, const std::string& name) {
        return rd.getStr(o, name);
    };
    auto getNum = [&rd](const H5::H5Object& o, const std::string& name, double def = 0) {
        return rd.getNum(o, name, def);
    };
    try {
        h5::noteLibraryOpen();
        H5::H5File f(path, H5F_ACC_RDONLY);
        if (getStr(f, "format") != kFormat)
            throw FormatError(path, std::string("not an lcw statistics file (root attribute "
                                                "'format' is not '") +
                                        kFormat + "')");
        StatsReport r;
        r.schemaVersion = int(getNum(f, "schema_version", -1));
        if (r.schemaVersion < 1 || r.schemaVersion > kStatsSchemaVersion)
            throw FormatError(path, "statistics schema version " + std::to_string(r.schemaVersion) +
                                        " is not supported (this build reads 1.." +
                                        std::to_string(kStatsSchemaVersion) + ")");
        if (getNum(f, "complete", 0) != 1)
            throw FormatError(path, "statistics file is incomplete (not marked complete)");
        r.lcwVersion = getStr(f, "lcw_version");
        r.createdUtc = getStr(f, "created_utc");
        r.modelPath = getStr(f, "model_path");
        r.modelFingerprint = getStr(f, "model_fingerprint");
        r.statsKey = getStr(f, "stats_key");
        r.hasWeights = getNum(f, "has_weights") != 0;
        r.hasActivations = getNum(f, "has_activations") != 0;
        if (headerOnly) return r;
        H5::Group m = f.openGroup("model");
        r.arch = getStr(m, "arch");
        r.nLayers = int64_t(getNum(m, "n_layers"));
        r.dim = int64_t(getNum(m, "dim"));
        r.nHeads = int64_t(getNum(m, "n_heads"));
        r.nKvHeads = int64_t(getNum(m, "n_kv_heads"));
        r.headDim = int64_t(getNum(m, "head_dim"));
        r.hidden = int64_t(getNum(m, "hidden"));
        r.vocab = int64_t(getNum(m, "vocab"));
        H5::Group o = f.openGroup("options");
        r.histBins = int(getNum(o, "hist_bins", 256));
        r.histSigma = getNum(o, "hist_sigma", 0);
        {
            std::stringstream ss(getStr(o, "previews"));
            std::string l;
            while (std::getline(ss, l, ','))
                if (!l.empty()) r.previews.push_back(parseLabel(l));
        }
        if (f.nameExists("calibration")) {
            H5::Group c = f.openGroup("calibration");
            r.calibration.source = getStr(c, "source");
            r.calibration.builtin = getNum(c, "builtin") != 0;
            r.calibration.sha256 = getStr(c, "sha256");
            r.calibration.samples = int64_t(getNum(c, "samples"));
            r.calibration.seqLen = int64_t(getNum(c, "seq_len"));
            r.calibration.tokens = int64_t(getNum(c, "tokens"));
            r.calibration.textTokens = int64_t(getNum(c, "text_tokens"));
        }
        r.weights = rd.readTensors(f, "weights");
        r.activations = rd.readTensors(f, "activations");
        if (f.nameExists("summary")) r.summaryJson = rd.getText(f.openGroup("summary"), "json");
        return r;
    } catch (const H5::Exception& e) {
        throw FormatError(path, "corrupt statistics file (HDF5: " + e.getDetailMsg() + ")");
    } catch (const std::logic_error& e) {
        throw FormatError(path, std::string("corrupt statistics file (") + e.what() + ")");
    }
}

/// Verifies the file's lcw header, then reads it; a file without one is converted in a child
/// process first (the file itself is left as it is; the converted copy is read and removed).
StatsReport readFile(const std::string& path, bool headerOnly) {
    if (h5::verify(path, h5::Kind::Stats, kStatsSchemaVersion) == h5::Check::Verified)
        return readHdf5(path, headerOnly, false);
    const h5::TempDir dir("lcw-h5convert-");
    const std::string converted =
        h5::convertInChild(path, h5::Kind::Stats, kStatsSchemaVersion, dir);
    try {
        return readHdf5(converted, headerOnly, false);
    } catch (const FormatError& e) {
        throw FormatError(path, "the converted copy cannot be read: " + e.problem());
    }
}

} // namespace

void StatsStore::save(const std::string& path, const StatsReport& r) {
    h5::writeFileAtomically(
        path, "statistics", h5::Kind::Stats, kStatsSchemaVersion, [&](H5::H5File& f) {
            putStr(f, "format", kFormat);
            putInt(f, "schema_version", kStatsSchemaVersion);
            putStr(f, "lcw_version", r.lcwVersion);
            putStr(f, "created_utc", r.createdUtc);
            putStr(f, "model_path", r.modelPath);
            putStr(f, "model_fingerprint", r.modelFingerprint);
            putStr(f, "stats_key", r.statsKey);
            putInt(f, "has_weights", r.hasWeights);
            putInt(f, "has_activations", r.hasActivations);
            H5::Group m = f.createGroup("model");
            putStr(m, "arch", r.arch);
            putInt(m, "n_layers", r.nLayers);
            putInt(m, "dim", r.dim);
            putInt(m, "n_heads", r.nHeads);
            putInt(m, "n_kv_heads", r.nKvHeads);
            putInt(m, "head_dim", r.headDim);
            putInt(m, "hidden", r.hidden);
            putInt(m, "vocab", r.vocab);
            H5::Group o = f.createGroup("options");
            putStr(o, "previews", previewList(r.previews));
            putInt(o, "hist_bins", r.histBins);
            putDouble(o, "hist_sigma", r.histSigma);
            if (r.hasActivations) {
                H5::Group c = f.createGroup("calibration");
                putStr(c, "source", r.calibration.source);
                putInt(c, "builtin", r.calibration.builtin);
                putStr(c, "sha256", r.calibration.sha256);
                putInt(c, "samples", r.calibration.samples);
                putInt(c, "seq_len", r.calibration.seqLen);
                putInt(c, "tokens", r.calibration.tokens);
                putInt(c, "text_tokens", r.calibration.textTokens);
            }
            for (const char* grp : {"weights", "activations"}) {
                const auto& list = std::string(grp) == "weights" ? r.weights : r.activations;
                H5::Group g = f.createGroup(grp);
                std::string order;
                for (auto& t : list) {
                    writeTensor(g, t);
                    order += t.name + "\n";
                }
                h5::putBytes(g, "order", order);
            }
            H5::Group s = f.createGroup("summary");
            h5::putBytes(s, "json", r.summaryJson);
            // Marked complete last: a file cut short by a crash mid-write never reads as valid.
            putInt(f, "complete", 1);
        });
}

StatsReport StatsStore::load(const std::string& path) {
    return readFile(path, false);
}
StatsReport StatsStore::loadHeader(const std::string& path) {
    return readFile(path, true);
}
StatsReport StatsStore::loadLegacyUnverified(const std::string& path) {
    return readHdf5(path, false, true);
}

} // namespace lcw::stats
