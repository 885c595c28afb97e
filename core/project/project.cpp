#include "core/project/project.h"

#include "core/stats/h5_util.h"

#include <H5Cpp.h>

#include <chrono>
#include <ctime>
#include <filesystem>

namespace lcw::project {

using h5::putInt;
using h5::putStr;

namespace {

const char* kFormat = "lcw-project";

std::string getStr(const H5::H5Object& o, const std::string& name) {
    H5::Attribute a = o.openAttribute(name);
    H5::StrType st(H5::PredType::C_S1, H5T_VARIABLE);
    std::string v;
    a.read(st, v);
    return v;
}
int64_t getInt(const H5::H5Object& o, const std::string& name) {
    int64_t v = 0;
    o.openAttribute(name).read(H5::PredType::NATIVE_INT64, &v);
    return v;
}

/// A string as a 1-D uint8 dataset (JSON texts can exceed the attribute size limit).
void putBytes(H5::Group& g, const std::string& name, const void* data, size_t n) {
    hsize_t d = n;
    H5::DataSpace sp(1, &d);
    H5::DSetCreatPropList pl;
    if (n >= 4096) {
        hsize_t ch = std::min<hsize_t>(d, 1 << 20);
        pl.setChunk(1, &ch);
    }
    H5::DataSet ds = g.createDataSet(name, H5::PredType::STD_U8LE, sp, pl);
    if (n) ds.write(data, H5::PredType::NATIVE_UINT8);
}
std::vector<uint8_t> getBytes(const H5::Group& g, const std::string& name) {
    H5::DataSet ds = g.openDataSet(name);
    H5::DataSpace sp = ds.getSpace();
    if (sp.getSimpleExtentNdims() != 1) throw Error(name + ": not a 1-D byte array");
    hsize_t d = 0;
    sp.getSimpleExtentDims(&d);
    std::vector<uint8_t> v(static_cast<size_t>(d));
    if (d) ds.read(v.data(), H5::PredType::NATIVE_UINT8);
    return v;
}

void putList(H5::Group& root, const std::string& group, const std::vector<NamedJson>& items) {
    H5::Group g = root.createGroup(group);
    putInt(g, "count", int64_t(items.size()));
    for (size_t i = 0; i < items.size(); ++i) {
        const std::string key = std::to_string(i);
        putBytes(g, key, items[i].json.data(), items[i].json.size());
        H5::DataSet ds = g.openDataSet(key);
        putStr(ds, "name", items[i].name);
    }
}
std::vector<NamedJson> getList(const H5::Group& root, const std::string& group) {
    H5::Group g = root.openGroup(group);
    const int64_t n = getInt(g, "count");
    std::vector<NamedJson> out;
    for (int64_t i = 0; i < n; ++i) {
        const std::string key = std::to_string(i);
        const std::vector<uint8_t> b = getBytes(g, key);
        NamedJson item;
        item.json.assign(b.begin(), b.end());
        item.name = getStr(g.openDataSet(key), "name");
        out.push_back(std::move(item));
    }
    return out;
}

std::string utcNow() {
    const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

} // namespace

void save(const std::string& path, const Project& p) {
    h5::writeFileAtomically(path, "project", [&](H5::H5File& f) {
        H5::Group root = f.openGroup("/");
        putStr(root, "format", kFormat);
        putInt(root, "version", Project::kVersion);
        putStr(root, "model_path", p.modelPath);
        putStr(root, "model_fingerprint", p.modelFingerprint);
        putStr(root, "saved_utc", utcNow());
        H5::Group stats = root.createGroup("statistics");
        putStr(stats, "name", p.statsName);
        putBytes(stats, "file", p.statsFile.data(), p.statsFile.size());
        putList(root, "recipes", p.recipes);
        putList(root, "results", p.results);
        putBytes(root, "ui_state", p.uiState.data(), p.uiState.size());
        // Written last: a file without it is incomplete.
        putInt(root, "complete", 1);
    });
}

Project load(const std::string& path) {
    if (!std::filesystem::exists(path)) throw FormatError(path, "no such file");
    const std::lock_guard<std::mutex> lock(h5::fileMutex());
    try {
        H5::Exception::dontPrint();
        if (!H5::H5File::isHdf5(path)) throw FormatError(path, "not an HDF5 file");
    } catch (const H5::Exception&) {
        throw FormatError(path, "not an HDF5 file");
    }
    try {
        H5::H5File f(path, H5F_ACC_RDONLY);
        H5::Group root = f.openGroup("/");
        if (!root.attrExists("format") || getStr(root, "format") != kFormat)
            throw FormatError(path, "not an lcw project (another program's HDF5 file)");
        Project p;
        p.version = int(getInt(root, "version"));
        if (p.version > Project::kVersion)
            throw FormatError(path, "project version " + std::to_string(p.version) +
                                        " is newer than this lcw reads (" +
                                        std::to_string(Project::kVersion) + ")");
        if (!root.attrExists("complete"))
            throw FormatError(path, "incomplete project file (writing was interrupted)");
        p.modelPath = getStr(root, "model_path");
        p.modelFingerprint = getStr(root, "model_fingerprint");
        p.savedUtc = getStr(root, "saved_utc");
        H5::Group stats = root.openGroup("statistics");
        p.statsName = getStr(stats, "name");
        p.statsFile = getBytes(stats, "file");
        p.recipes = getList(root, "recipes");
        p.results = getList(root, "results");
        const std::vector<uint8_t> ui = getBytes(root, "ui_state");
        p.uiState.assign(ui.begin(), ui.end());
        return p;
    } catch (const H5::Exception& e) {
        throw FormatError(path, "corrupt or incomplete project: " + e.getDetailMsg());
    }
}

} // namespace lcw::project
