#include "core/io/safetensors.h"
#include "core/common/json_file.h"

#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/atomic_writer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>

namespace lcw {

namespace {

using json = nlohmann::json;

// safetensors' own dtype spellings; the reader accepts only these (not the GGUF block names).
std::optional<DType> safetensorsDType(const std::string& s) {
    static const std::pair<const char*, DType> kNames[] = {
        {"F32", DType::F32}, {"F16", DType::F16},   {"BF16", DType::BF16},      {"F64", DType::F64},
        {"I8", DType::I8},   {"U8", DType::U8},     {"I16", DType::I16},        {"I32", DType::I32},
        {"I64", DType::I64}, {"BOOL", DType::Bool}, {"F8_E4M3", DType::F8_E4M3}};
    for (const auto& [n, t] : kNames)
        if (s == n) return t;
    return std::nullopt;
}

std::string safetensorsName(DType t) {
    switch (t) {
    case DType::F32:
        return "F32";
    case DType::F16:
        return "F16";
    case DType::BF16:
        return "BF16";
    case DType::F64:
        return "F64";
    case DType::I8:
        return "I8";
    case DType::U8:
        return "U8";
    case DType::I16:
        return "I16";
    case DType::I32:
        return "I32";
    case DType::I64:
        return "I64";
    case DType::Bool:
        return "BOOL";
    case DType::F8_E4M3:
        return "F8_E4M3";
    default:
        return {};
    }
}

// The reference implementation refuses headers above 100 MB; so do we (before allocating).
constexpr uint64_t kMaxHeader = uint64_t(100) << 20;

uint64_t readU64le(const std::byte* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | uint64_t(std::to_integer<uint8_t>(p[i]));
    return v;
}

} // namespace

const TensorView* SafetensorsSet::find(std::string_view name) const {
    for (const auto& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

namespace {

/// The JSON header of a mapped safetensors file; `hlen` receives its length in bytes.
json readHeader(const MappedFile& file, const std::string& path, uint64_t& hlen) {
    const uint64_t size = file.size();
    if (size < 8)
        throw FormatError(path, "file too short for a safetensors header (" + std::to_string(size) +
                                    " bytes)");
    hlen = readU64le(file.data());
    if (hlen > size - 8)
        throw FormatError(path,
                          "header length " + std::to_string(hlen) +
                              " runs past the end of the file (" + std::to_string(size) +
                              " bytes); truncated or not a safetensors file",
                          0);
    if (hlen > kMaxHeader)
        throw FormatError(path, "header length " + std::to_string(hlen) + " exceeds 100 MB", 0);
    const char* hbeg = reinterpret_cast<const char*>(file.data() + 8);
    json header;
    try {
        header = parseJsonText(std::string_view(hbeg, hlen), path, 8);
    } catch (const FormatError& e) {
        throw FormatError(path, "header: " + e.problem(), e.offset());
    }
    if (!header.is_object()) throw FormatError(path, "header is not a JSON object", 8);
    return header;
}

/// Where a file's data section starts and how long it is.
struct DataSection {
    const std::byte* base = nullptr; ///< the mapped file
    uint64_t start = 0, size = 0;
};

/// A header entry's dtype (a string) and shape (an array), checked; `where` names the tensor.
void readDtypeAndShape(const json& dt, const json& sh, const std::string& path,
                       const std::string& where, TensorView& t) {
    const std::string dtName = dt.get<std::string>();
    const auto dtype = safetensorsDType(dtName);
    if (!dtype)
        throw UnsupportedError(path + ": " + where + "unsupported dtype '" + dtName +
                               "' (supported: F32 F16 BF16 F64 I8 U8 I16 I32 I64 BOOL)");
    t.dtype = *dtype;
    for (const auto& d : sh) {
        if (!d.is_number_unsigned())
            throw FormatError(path, where + "shape entries must be non-negative integers", 8);
        const uint64_t dv = d.get<uint64_t>();
        if (dv > uint64_t(INT64_MAX))
            throw FormatError(path, where + "shape " + sh.dump() + " overflows", 8);
        t.shape.push_back(int64_t(dv));
    }
}

/// One tensor of the header, its bytes checked against the data section; `range` receives its
/// data_offsets.
TensorView readTensorEntry(const std::string& name, const json& v, const std::string& path,
                           const DataSection& data, std::pair<uint64_t, uint64_t>& range) {
    const std::string where = "tensor '" + name + "': ";
    if (!v.is_object()) throw FormatError(path, where + "entry is not a JSON object", 8);
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string())
        throw FormatError(path, where + "missing or non-string \"dtype\"", 8);
    if (sh == v.end() || !sh->is_array())
        throw FormatError(path, where + "missing or non-array \"shape\"", 8);
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
        throw FormatError(path, where + "\"data_offsets\" must be two non-negative integers", 8);
    TensorView t;
    t.name = name;
    t.fileName = name;
    t.file = path;
    readDtypeAndShape(*dt, *sh, path, where, t);
    // At most kMaxTensorElements elements, checked before anything is sized by the shape.
    const uint64_t numel = uint64_t(checked::numel(t.shape, path, "tensor '" + name + "'"));
    const auto bytes = dtypeBytesFor(t.dtype, numel);
    if (!bytes) throw FormatError(path, where + "byte size of shape overflows", 8);
    const uint64_t b = (*off)[0].get<uint64_t>();
    const uint64_t e = (*off)[1].get<uint64_t>();
    const std::string offsets = "data_offsets [" + std::to_string(b) + ", " + std::to_string(e);
    if (b > e) throw FormatError(path, where + offsets + "] are reversed", 8);
    if (e > data.size)
        throw FormatError(path,
                          where + offsets + "] run past the end of the data section (" +
                              std::to_string(data.size) + " bytes); file truncated?",
                          data.start + b);
    if (e - b != *bytes)
        throw FormatError(path,
                          where + "holds " + std::to_string(e - b) + " bytes but dtype " +
                              dt->get<std::string>() + " and shape " + sh->dump() + " need " +
                              std::to_string(*bytes),
                          data.start + b);
    t.data = data.base + data.start + b;
    t.nbytes = *bytes;
    range = {b, e};
    return t;
}

/// The tensors in data order; no two may share bytes.
std::vector<TensorView> inDataOrder(std::vector<TensorView> tensors,
                                    const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                                    const std::string& path, uint64_t dataStart) {
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
    uint64_t maxEnd = 0;
    size_t maxEndAt = 0;
    for (size_t k = 0; k < order.size(); ++k) {
        const auto& cur = ranges[order[k]];
        if (cur.second == cur.first) continue; // empty tensors own no bytes
        if (cur.first < maxEnd)
            throw FormatError(path,
                              "tensors '" + tensors[maxEndAt].name + "' and '" +
                                  tensors[order[k]].name + "' overlap in the data section",
                              dataStart + cur.first);
        maxEnd = cur.second;
        maxEndAt = order[k];
    }
    std::vector<TensorView> sorted;
    sorted.reserve(tensors.size());
    for (size_t i : order) sorted.push_back(std::move(tensors[i]));
    return sorted;
}

} // namespace

SafetensorsSet readSafetensors(const std::string& path) {
    auto file = MappedFile::open(path);
    uint64_t hlen = 0;
    const json header = readHeader(*file, path, hlen);
    const DataSection data{file->data(), 8 + hlen, file->size() - (8 + hlen)};
    SafetensorsSet set;
    set.paths.push_back(path);
    std::vector<TensorView> tensors;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const json& v = it.value();
        if (it.key() == "__metadata__") {
            if (!v.is_object()) throw FormatError(path, "__metadata__ is not a JSON object", 8);
            for (auto m = v.begin(); m != v.end(); ++m)
                set.metadata.emplace_back(m.key(),
                                          m->is_string() ? m->get<std::string>() : m->dump());
            continue;
        }
        ranges.emplace_back();
        tensors.push_back(readTensorEntry(it.key(), v, path, data, ranges.back()));
    }
    set.tensors = inDataOrder(std::move(tensors), ranges, path, data.start);
    set.files.push_back(std::move(file));
    return set;
}

SafetensorsSet readSafetensorsIndex(const std::string& indexPath) {
    namespace fs = std::filesystem;
    const json idx = readJsonFile(indexPath);
    if (!idx.is_object()) throw FormatError(indexPath, "not a JSON object");
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object())
        throw FormatError(indexPath, "missing \"weight_map\" object");
    // Shards in order of first appearance of their file name (sorted by name for stability).
    std::map<std::string, std::vector<std::string>> byShard;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
        if (!it->is_string())
            throw FormatError(indexPath, "weight_map entry '" + it.key() + "' is not a string");
        const std::string shard = it->get<std::string>();
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
            throw FormatError(indexPath, "weight_map entry '" + it.key() +
                                             "' names an invalid shard file '" + shard + "'");
        byShard[shard].push_back(it.key());
    }
    if (byShard.empty()) throw FormatError(indexPath, "weight_map is empty");
    const fs::path dir = fs::path(indexPath).parent_path();
    SafetensorsSet out;
    std::set<std::string> seen;
    for (const auto& [shard, names] : byShard) {
        const std::string sp = (dir / shard).string();
        std::error_code ec;
        if (!fs::exists(sp, ec))
            throw FormatError(indexPath, "shard '" + shard + "' (listed for tensor '" +
                                             names.front() + "') is missing: " + sp);
        SafetensorsSet s = readSafetensors(sp);
        for (const auto& n : names)
            if (!s.find(n))
                throw FormatError(sp, "tensor '" + n + "' is listed in " + indexPath +
                                          " but not present in this shard");
        for (auto& t : s.tensors) {
            if (!seen.insert(t.name).second)
                throw FormatError(sp, "tensor '" + t.name + "' appears in more than one shard");
            out.tensors.push_back(std::move(t));
        }
        if (out.metadata.empty()) out.metadata = std::move(s.metadata);
        out.paths.push_back(sp);
        out.files.push_back(std::move(s.files.front()));
    }
    return out;
}

SafetensorsSet readSafetensorsFolder(const std::string& folder) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path dir(folder);
    if (fs::exists(dir / "model.safetensors.index.json", ec))
        return readSafetensorsIndex((dir / "model.safetensors.index.json").string());
    if (fs::exists(dir / "model.safetensors", ec))
        return readSafetensors((dir / "model.safetensors").string());
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    if (ec) throw FormatError(folder, "cannot list folder: " + ec.message());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw FormatError(folder, "no model.safetensors, model.safetensors.index.json or "
                                  "*.safetensors file in the folder");
    SafetensorsSet out;
    std::set<std::string> seen;
    for (const auto& f : files) {
        SafetensorsSet s = readSafetensors(f);
        for (auto& t : s.tensors) {
            if (!seen.insert(t.name).second)
                throw FormatError(f, "tensor '" + t.name + "' appears in more than one file");
            out.tensors.push_back(std::move(t));
        }
        if (out.metadata.empty()) out.metadata = std::move(s.metadata);
        out.paths.push_back(f);
        out.files.push_back(std::move(s.files.front()));
    }
    return out;
}

namespace {

// Builds the header text, padded with spaces to a multiple of 8 so the data section is aligned.
std::string buildHeader(const std::vector<TensorDesc>& tensors, const std::vector<size_t>& which,
                        const std::vector<uint64_t>& bytes,
                        const std::vector<std::pair<std::string, std::string>>& metadata,
                        const std::string& path) {
    json h = json::object();
    if (!metadata.empty()) {
        json m = json::object();
        for (const auto& [k, v] : metadata) m[k] = v;
        h["__metadata__"] = m;
    }
    uint64_t off = 0;
    for (size_t i : which) {
        const auto& d = tensors[i];
        const std::string dt = safetensorsName(d.dtype);
        if (dt.empty())
            throw ArgumentError(path + ": tensor '" + d.name + "' has dtype " +
                                std::string(dtypeName(d.dtype)) +
                                ", which safetensors cannot store");
        if (d.name.empty() || d.name == "__metadata__")
            throw ArgumentError(path + ": invalid tensor name '" + d.name + "'");
        if (h.contains(d.name))
            throw ArgumentError(path + ": duplicate tensor name '" + d.name + "'");
        json e = json::object();
        e["dtype"] = dt;
        e["shape"] = d.shape;
        e["data_offsets"] = {off, off + bytes[i]};
        h[d.name] = e;
        off += bytes[i];
    }
    std::string s = h.dump();
    s.append((8 - s.size() % 8) % 8, ' ');
    return s;
}

void writeOne(const std::string& path, const std::vector<TensorDesc>& tensors,
              const std::vector<size_t>& which, const std::vector<uint64_t>& bytes,
              const TensorFill& fill,
              const std::vector<std::pair<std::string, std::string>>& metadata,
              std::vector<std::byte>& buf) {
    const std::string header = buildHeader(tensors, which, bytes, metadata, path);
    AtomicFileWriter w(path);
    uint8_t len[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
    w.write(len, 8);
    w.write(header);
    for (size_t i : which) {
        appendTensorBytes(w, fill, i, bytes[i], buf);
    }
    w.commit();
}

std::vector<uint64_t> descBytes(const std::vector<TensorDesc>& tensors) {
    std::vector<uint64_t> b;
    b.reserve(tensors.size());
    for (const auto& d : tensors) b.push_back(tensorDescBytes(d));
    return b;
}

std::string shardName(const std::string& base, size_t i, size_t n) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i + 1, n);
    return base + buf;
}

} // namespace

void writeSafetensors(const std::string& path, const std::vector<TensorDesc>& tensors,
                      const TensorFill& fill,
                      const std::vector<std::pair<std::string, std::string>>& metadata) {
    const auto bytes = descBytes(tensors);
    std::vector<size_t> all(tensors.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    std::vector<std::byte> buf;
    writeOne(path, tensors, all, bytes, fill, metadata, buf);
}

void writeSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                      const std::vector<std::pair<std::string, std::string>>& metadata) {
    writeSafetensors(path, tensorDescsFromViews(tensors), tensorFillFromViews(tensors), metadata);
}

std::vector<std::string>
writeSafetensorsSharded(const std::string& folder, const std::vector<TensorDesc>& tensors,
                        const TensorFill& fill, uint64_t maxShardBytes,
                        const std::vector<std::pair<std::string, std::string>>& metadata,
                        const std::string& base) {
    namespace fs = std::filesystem;
    const auto bytes = descBytes(tensors);
    std::vector<std::vector<size_t>> shards;
    uint64_t cur = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
        if (shards.empty() || (cur > 0 && cur + bytes[i] > maxShardBytes)) {
            shards.emplace_back();
            cur = 0;
        }
        shards.back().push_back(i);
        cur += bytes[i];
    }
    if (shards.empty()) shards.emplace_back();
    std::vector<std::string> written;
    std::vector<std::byte> buf;
    if (shards.size() == 1) {
        const std::string p = (fs::path(folder) / (base + ".safetensors")).string();
        writeOne(p, tensors, shards[0], bytes, fill, metadata, buf);
        written.push_back(p);
        return written;
    }
    json wm = json::object();
    uint64_t total = 0;
    for (size_t s = 0; s < shards.size(); ++s) {
        const std::string name = shardName(base, s, shards.size());
        const std::string p = (fs::path(folder) / name).string();
        writeOne(p, tensors, shards[s], bytes, fill, metadata, buf);
        written.push_back(p);
        for (size_t i : shards[s]) {
            wm[tensors[i].name] = name;
            total += bytes[i];
        }
    }
    json idx = json::object();
    idx["metadata"] = {{"total_size", total}};
    idx["weight_map"] = wm;
    const std::string ip = (fs::path(folder) / (base + ".safetensors.index.json")).string();
    writeFileAtomic(ip, idx.dump(2) + "\n");
    written.push_back(ip);
    return written;
}

} // namespace lcw
