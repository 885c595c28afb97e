#include "core/io/gguf.h"

#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/atomic_writer.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace lcw {

namespace {

constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;

struct GgmlTypeInfo {
    uint32_t id;
    const char* name;
    std::optional<DType> dtype;
};
// ggml's type numbering (facts of the format). Types without a DType are known but unsupported.
const GgmlTypeInfo kGgmlTypes[] = {
    {0, "f32", DType::F32},        {1, "f16", DType::F16},        {2, "q4_0", DType::Q4_0},
    {3, "q4_1", DType::Q4_1},      {6, "q5_0", DType::Q5_0},      {7, "q5_1", DType::Q5_1},
    {8, "q8_0", DType::Q8_0},      {9, "q8_1", std::nullopt},     {10, "q2_k", DType::Q2_K},
    {11, "q3_k", DType::Q3_K},     {12, "q4_k", DType::Q4_K},     {13, "q5_k", DType::Q5_K},
    {14, "q6_k", DType::Q6_K},     {15, "q8_k", std::nullopt},    {16, "iq2_xxs", std::nullopt},
    {17, "iq2_xs", std::nullopt},  {18, "iq3_xxs", std::nullopt}, {19, "iq1_s", std::nullopt},
    {20, "iq4_nl", DType::IQ4_NL}, {21, "iq3_s", std::nullopt},   {22, "iq2_s", std::nullopt},
    {23, "iq4_xs", DType::IQ4_XS}, {24, "i8", DType::I8},         {25, "i16", DType::I16},
    {26, "i32", DType::I32},       {27, "i64", DType::I64},       {28, "f64", DType::F64},
    {29, "iq1_m", std::nullopt},   {30, "bf16", DType::BF16},     {34, "tq1_0", std::nullopt},
    {35, "tq2_0", std::nullopt},   {39, "mxfp4", std::nullopt},
};

const GgmlTypeInfo* ggmlInfo(uint32_t id) {
    for (const auto& t : kGgmlTypes)
        if (t.id == id) return &t;
    return nullptr;
}

bool validType(uint32_t t) {
    return t <= uint32_t(GgufType::Float64);
}

struct Reader {
    const uint8_t* p;
    uint64_t size;
    uint64_t pos = 0;
    const std::string& path;

    uint64_t left() const { return size - pos; }
    void need(uint64_t n, const std::string& what) const {
        if (n > left())
            throw FormatError(path,
                              "truncated: " + what + " needs " + std::to_string(n) +
                                  " bytes but only " + std::to_string(left()) + " remain",
                              pos);
    }
    template <class T> T rd(const std::string& what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, p + pos, sizeof(T));
        pos += sizeof(T);
        return v;
    }
    std::string str(const std::string& what) {
        const uint64_t at = pos;
        const uint64_t n = rd<uint64_t>(what + " length");
        if (n > left())
            throw FormatError(path,
                              what + ": string length " + std::to_string(n) +
                                  " runs past the end of the file",
                              at);
        std::string s(reinterpret_cast<const char*>(p + pos), size_t(n));
        pos += n;
        return s;
    }
};

GgufValue readValue(Reader& r, GgufType type, const std::string& key, int depth) {
    GgufValue v;
    v.type = type;
    const std::string what = "value of '" + key + "'";
    if (type == GgufType::String) {
        v.str = r.str(what);
        return v;
    }
    if (type == GgufType::Array) {
        if (depth >= kMaxArrayDepth)
            throw FormatError(r.path, "'" + key + "': arrays nested too deeply", r.pos);
        const uint64_t at = r.pos;
        const uint32_t et = r.rd<uint32_t>(what + " element type");
        if (!validType(et))
            throw FormatError(
                r.path, "'" + key + "': unknown array element type " + std::to_string(et), at);
        v.elemType = GgufType(et);
        v.count = r.rd<uint64_t>(what + " element count");
        const size_t es = ggufScalarSize(v.elemType);
        // Smallest encoding of one element: a string is at least its 8-byte length, an array
        // at least its 12-byte type+count. Refuse counts the rest of the file cannot hold
        // before reserving anything.
        const uint64_t minElem = es ? es : (v.elemType == GgufType::String ? 8 : 12);
        if (v.count > r.left() / minElem)
            throw FormatError(r.path,
                              "'" + key + "': array of " + std::to_string(v.count) +
                                  " elements cannot fit in the remaining " +
                                  std::to_string(r.left()) + " bytes",
                              at);
        if (es) {
            const uint64_t n = v.count * es;
            v.raw.assign(r.p + r.pos, r.p + r.pos + n);
            r.pos += n;
        } else if (v.elemType == GgufType::String) {
            v.strings.reserve(size_t(v.count));
            for (uint64_t i = 0; i < v.count; ++i) v.strings.push_back(r.str(what));
        } else {
            v.arrays.reserve(size_t(v.count));
            for (uint64_t i = 0; i < v.count; ++i)
                v.arrays.push_back(readValue(r, GgufType::Array, key, depth + 1));
        }
        return v;
    }
    const size_t es = ggufScalarSize(type);
    r.need(es, what);
    std::memcpy(&v.bits, r.p + r.pos, es);
    r.pos += es;
    return v;
}

// Decodes one packed element of a numeric type.
std::optional<int64_t> decodeInt(GgufType t, const uint8_t* p) {
    switch (t) {
    case GgufType::UInt8:
        return int64_t(p[0]);
    case GgufType::Int8:
        return int64_t(int8_t(p[0]));
    case GgufType::Bool:
        return int64_t(p[0] != 0);
    case GgufType::UInt16: {
        uint16_t v;
        std::memcpy(&v, p, 2);
        return int64_t(v);
    }
    case GgufType::Int16: {
        int16_t v;
        std::memcpy(&v, p, 2);
        return int64_t(v);
    }
    case GgufType::UInt32: {
        uint32_t v;
        std::memcpy(&v, p, 4);
        return int64_t(v);
    }
    case GgufType::Int32: {
        int32_t v;
        std::memcpy(&v, p, 4);
        return int64_t(v);
    }
    case GgufType::Int64: {
        int64_t v;
        std::memcpy(&v, p, 8);
        return v;
    }
    case GgufType::UInt64: {
        uint64_t v;
        std::memcpy(&v, p, 8);
        if (v > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
        return int64_t(v);
    }
    default:
        return std::nullopt;
    }
}
std::optional<double> decodeDouble(GgufType t, const uint8_t* p) {
    if (t == GgufType::Float32) {
        float f;
        std::memcpy(&f, p, 4);
        return double(f);
    }
    if (t == GgufType::Float64) {
        double d;
        std::memcpy(&d, p, 8);
        return d;
    }
    if (t == GgufType::UInt64) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        return double(v);
    }
    if (auto i = decodeInt(t, p)) return double(*i);
    return std::nullopt;
}

GgufValue scalar(GgufType t, const void* v) {
    GgufValue g;
    g.type = t;
    std::memcpy(&g.bits, v, ggufScalarSize(t));
    return g;
}

template <class T> GgufValue packed(GgufType t, const std::vector<T>& v) {
    std::vector<uint8_t> raw(v.size() * sizeof(T));
    if (!raw.empty()) std::memcpy(raw.data(), v.data(), raw.size());
    return GgufValue::numericArray(t, std::move(raw));
}

} // namespace

std::string_view ggufTypeName(GgufType t) {
    static const char* names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                  "int32",  "float32", "bool",   "string", "array",
                                  "uint64", "int64",   "float64"};
    return validType(uint32_t(t)) ? names[uint32_t(t)] : "unknown";
}

size_t ggufScalarSize(GgufType t) {
    switch (t) {
    case GgufType::UInt8:
    case GgufType::Int8:
    case GgufType::Bool:
        return 1;
    case GgufType::UInt16:
    case GgufType::Int16:
        return 2;
    case GgufType::UInt32:
    case GgufType::Int32:
    case GgufType::Float32:
        return 4;
    case GgufType::UInt64:
    case GgufType::Int64:
    case GgufType::Float64:
        return 8;
    default:
        return 0;
    }
}

GgufValue GgufValue::u8(uint8_t v) {
    return scalar(GgufType::UInt8, &v);
}
GgufValue GgufValue::i8(int8_t v) {
    return scalar(GgufType::Int8, &v);
}
GgufValue GgufValue::u16(uint16_t v) {
    return scalar(GgufType::UInt16, &v);
}
GgufValue GgufValue::i16(int16_t v) {
    return scalar(GgufType::Int16, &v);
}
GgufValue GgufValue::u32(uint32_t v) {
    return scalar(GgufType::UInt32, &v);
}
GgufValue GgufValue::i32(int32_t v) {
    return scalar(GgufType::Int32, &v);
}
GgufValue GgufValue::u64(uint64_t v) {
    return scalar(GgufType::UInt64, &v);
}
GgufValue GgufValue::i64(int64_t v) {
    return scalar(GgufType::Int64, &v);
}
GgufValue GgufValue::f32(float v) {
    return scalar(GgufType::Float32, &v);
}
GgufValue GgufValue::f64(double v) {
    return scalar(GgufType::Float64, &v);
}
GgufValue GgufValue::boolean(bool v) {
    const uint8_t b = v ? 1 : 0;
    return scalar(GgufType::Bool, &b);
}
GgufValue GgufValue::string(std::string v) {
    GgufValue g;
    g.type = GgufType::String;
    g.str = std::move(v);
    return g;
}
GgufValue GgufValue::stringArray(std::vector<std::string> v) {
    GgufValue g;
    g.type = GgufType::Array;
    g.elemType = GgufType::String;
    g.count = v.size();
    g.strings = std::move(v);
    return g;
}
GgufValue GgufValue::f32Array(const std::vector<float>& v) {
    return packed(GgufType::Float32, v);
}
GgufValue GgufValue::i32Array(const std::vector<int32_t>& v) {
    return packed(GgufType::Int32, v);
}
GgufValue GgufValue::numericArray(GgufType elem, std::vector<uint8_t> raw) {
    const size_t es = ggufScalarSize(elem);
    if (es == 0 || raw.size() % es != 0)
        throw ArgumentError("GgufValue::numericArray: bad element type or byte count");
    GgufValue g;
    g.type = GgufType::Array;
    g.elemType = elem;
    g.count = raw.size() / es;
    g.raw = std::move(raw);
    return g;
}
GgufValue GgufValue::arrayArray(std::vector<GgufValue> v) {
    for (const auto& a : v)
        if (!a.isArray()) throw ArgumentError("GgufValue::arrayArray: element is not an array");
    GgufValue g;
    g.type = GgufType::Array;
    g.elemType = GgufType::Array;
    g.count = v.size();
    g.arrays = std::move(v);
    return g;
}

std::optional<int64_t> GgufValue::asInt() const {
    if (isArray() || type == GgufType::String) return std::nullopt;
    return decodeInt(type, reinterpret_cast<const uint8_t*>(&bits));
}
std::optional<double> GgufValue::asDouble() const {
    if (isArray() || type == GgufType::String || type == GgufType::Bool) return std::nullopt;
    return decodeDouble(type, reinterpret_cast<const uint8_t*>(&bits));
}
std::optional<bool> GgufValue::asBool() const {
    if (type != GgufType::Bool) return std::nullopt;
    return bits != 0;
}
std::optional<int64_t> GgufValue::arrayInt(uint64_t i) const {
    const size_t es = ggufScalarSize(elemType);
    if (!isArray() || es == 0 || i >= count) return std::nullopt;
    return decodeInt(elemType, raw.data() + i * es);
}
std::optional<double> GgufValue::arrayDouble(uint64_t i) const {
    const size_t es = ggufScalarSize(elemType);
    if (!isArray() || es == 0 || i >= count) return std::nullopt;
    return decodeDouble(elemType, raw.data() + i * es);
}

std::string GgufValue::toString() const {
    if (type == GgufType::String) return "\"" + str + "\"";
    if (type == GgufType::Bool) return bits ? "true" : "false";
    if (!isArray()) {
        if (type == GgufType::Float32 || type == GgufType::Float64)
            return std::to_string(*asDouble());
        if (auto i = asInt()) return std::to_string(*i);
        return std::to_string(bits);
    }
    std::string s = "[";
    s += ggufTypeName(elemType);
    s += " x ";
    s += std::to_string(count);
    if (count > 0) {
        s += ": ";
        const uint64_t show = std::min<uint64_t>(count, 4);
        for (uint64_t i = 0; i < show; ++i) {
            if (i) s += ", ";
            if (elemType == GgufType::String)
                s.append("\"").append(strings[i]).append("\"");
            else if (elemType == GgufType::Array)
                s += arrays[i].toString();
            else if (elemType == GgufType::Float32 || elemType == GgufType::Float64)
                s += std::to_string(*arrayDouble(i));
            else if (auto v = arrayInt(i))
                s += std::to_string(*v);
        }
        if (count > show) s += ", ...";
    }
    return s + "]";
}

std::optional<DType> dtypeFromGgmlType(uint32_t id) {
    const auto* i = ggmlInfo(id);
    return i ? i->dtype : std::nullopt;
}

uint32_t ggmlTypeId(DType t) {
    for (const auto& i : kGgmlTypes)
        if (i.dtype && *i.dtype == t) return i.id;
    throw UnsupportedError("dtype " + std::string(dtypeName(t)) + " has no GGUF/ggml type");
}

std::string ggmlTypeName(uint32_t id) {
    const auto* i = ggmlInfo(id);
    return i ? i->name : "type " + std::to_string(id);
}

const GgufValue* GgufFile::find(std::string_view key) const {
    for (const auto& [k, v] : metadata)
        if (k == key) return &v;
    return nullptr;
}
const TensorView* GgufFile::findTensor(std::string_view name) const {
    for (const auto& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}
std::optional<int64_t> GgufFile::getInt(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    auto i = v->type == GgufType::Bool ? std::nullopt : v->asInt();
    if (!i)
        throw FormatError(path, "metadata '" + std::string(key) + "' should be an integer, is " +
                                    std::string(ggufTypeName(v->type)));
    return i;
}
std::optional<double> GgufFile::getDouble(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    auto d = v->asDouble();
    if (!d)
        throw FormatError(path, "metadata '" + std::string(key) + "' should be a number, is " +
                                    std::string(ggufTypeName(v->type)));
    return d;
}
std::optional<bool> GgufFile::getBool(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    auto b = v->asBool();
    if (!b)
        throw FormatError(path, "metadata '" + std::string(key) + "' should be a bool, is " +
                                    std::string(ggufTypeName(v->type)));
    return b;
}
std::optional<std::string> GgufFile::getString(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (v->type != GgufType::String)
        throw FormatError(path, "metadata '" + std::string(key) + "' should be a string, is " +
                                    std::string(ggufTypeName(v->type)));
    return v->str;
}

namespace {

/// Magic and version (v2 and v3; v1 and big-endian files are refused by name).
uint32_t readVersion(Reader& r, const std::string& path) {
    if (r.size < 4 || std::memcmp(r.p, "GGUF", 4) != 0)
        throw FormatError(path, "not a GGUF file (bad magic)", 0);
    r.pos = 4;
    const uint32_t version = r.rd<uint32_t>("version");
    if (version == 1)
        throw UnsupportedError(path + ": GGUF version 1 is not supported (only v2 and v3)");
    if (version != 2 && version != 3) {
        const uint32_t swapped = __builtin_bswap32(version);
        if (swapped == 2 || swapped == 3)
            throw UnsupportedError(path + ": big-endian GGUF files are not supported");
        throw UnsupportedError(path + ": unknown GGUF version " + std::to_string(version));
    }
    return version;
}

/// The key/value pairs (unique keys, known types) and general.alignment.
void readMetadata(Reader& r, GgufFile& g, uint64_t nKv) {
    const std::string& path = g.path;
    g.metadata.reserve(size_t(nKv));
    std::unordered_set<std::string> keys;
    for (uint64_t i = 0; i < nKv; ++i) {
        const uint64_t at = r.pos;
        std::string key = r.str("metadata key");
        const uint32_t t = r.rd<uint32_t>("type of '" + key + "'");
        if (!validType(t))
            throw FormatError(path, "metadata '" + key + "' has unknown type " + std::to_string(t),
                              r.pos - 4);
        GgufValue v = readValue(r, GgufType(t), key, 0);
        if (!keys.insert(key).second)
            throw FormatError(path, "duplicate metadata key '" + key + "'", at);
        g.metadata.emplace_back(std::move(key), std::move(v));
    }
    if (const GgufValue* a = g.find("general.alignment")) {
        if (a->type != GgufType::UInt32)
            throw FormatError(path, "general.alignment must be uint32, is " +
                                        std::string(ggufTypeName(a->type)));
        g.alignment = a->bits;
        if (g.alignment == 0 || (g.alignment & (g.alignment - 1)) != 0)
            throw FormatError(path, "general.alignment " + std::to_string(g.alignment) +
                                        " is not a power of two");
    }
}

/// Where a tensor's info says its data is, and where the info itself was (for errors).
struct TensorInfoAt {
    uint64_t offset;
    uint64_t at;
};

/// One tensor info: name (unique), shape (reversed to row-major), type, byte size and data offset.
TensorInfoAt readTensorInfo(Reader& r, const GgufFile& g, std::unordered_set<std::string>& names,
                            TensorView& t) {
    const std::string& path = g.path;
    const uint64_t at = r.pos;
    t.name = r.str("tensor name");
    t.fileName = t.name;
    t.file = path;
    const std::string where = "tensor '" + t.name + "'";
    if (!names.insert(t.name).second) throw FormatError(path, "duplicate " + where, at);
    const uint32_t nd = r.rd<uint32_t>(where + " dimension count");
    if (nd > kMaxDims)
        throw FormatError(path, where + " has " + std::to_string(nd) + " dimensions (at most 4)",
                          r.pos - 4);
    int64_t ne[kMaxDims] = {1, 1, 1, 1};
    for (uint32_t d = 0; d < nd; ++d) {
        ne[d] = r.rd<int64_t>(where + " shape");
        if (ne[d] < 0) throw FormatError(path, where + " has a negative dimension", r.pos - 8);
    }
    for (uint32_t d = nd; d-- > 0;) t.shape.push_back(ne[d]);
    // At most kMaxTensorElements elements, checked before anything is sized by the shape.
    const uint64_t numel = uint64_t(checked::numel(t.shape, path, where));
    const uint32_t type = r.rd<uint32_t>(where + " type");
    const GgmlTypeInfo* ti = ggmlInfo(type);
    if (!ti)
        throw FormatError(path, where + " has unknown ggml type " + std::to_string(type),
                          r.pos - 4);
    if (!ti->dtype)
        throw UnsupportedError(path + ": " + where + " has type " + ti->name +
                               ", which lcw does not support");
    t.dtype = *ti->dtype;
    const int64_t be = dtypeBlockElems(t.dtype);
    if (ne[0] % be != 0)
        throw FormatError(path,
                          where + " row length " + std::to_string(ne[0]) +
                              " is not a multiple of the " + ti->name + " block size " +
                              std::to_string(be),
                          at);
    const auto bytes = dtypeBytesFor(t.dtype, numel);
    if (!bytes) throw FormatError(path, where + " byte size overflows", at);
    t.nbytes = *bytes;
    const uint64_t off = r.rd<uint64_t>(where + " offset");
    if (off % g.alignment != 0)
        throw FormatError(path,
                          where + " data offset " + std::to_string(off) +
                              " is not a multiple of the alignment " + std::to_string(g.alignment),
                          r.pos - 8);
    return {off, at};
}

/// Points every tensor into the data section (which starts at the next alignment boundary
/// after the header), checking that it lies inside the file.
void placeTensorData(GgufFile& g, uint64_t headerEnd, const std::vector<TensorInfoAt>& infos) {
    uint64_t dataOff = headerEnd;
    if (dataOff % g.alignment) dataOff += g.alignment - dataOff % g.alignment;
    g.dataOffset = dataOff;
    const uint64_t size = g.file->size();
    const uint64_t dataSize = dataOff <= size ? size - dataOff : 0;
    g.tensorOffsets.reserve(g.tensors.size());
    for (size_t i = 0; i < g.tensors.size(); ++i) {
        TensorView& t = g.tensors[i];
        const uint64_t off = infos[i].offset;
        if (off > dataSize || t.nbytes > dataSize - off)
            throw FormatError(g.path,
                              "tensor '" + t.name + "' data [" + std::to_string(off) + ", +" +
                                  std::to_string(t.nbytes) +
                                  ") runs past the end of the file (data section holds " +
                                  std::to_string(dataSize) + " bytes); truncated?",
                              infos[i].at);
        t.data = g.file->data() + dataOff + off;
        g.tensorOffsets.push_back(off);
    }
}

/// No two tensors may share bytes.
void checkNoOverlap(const GgufFile& g, const std::vector<TensorInfoAt>& infos) {
    std::vector<size_t> order(g.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return g.tensorOffsets[a] < g.tensorOffsets[b]; });
    uint64_t maxEnd = 0;
    size_t maxAt = 0;
    for (size_t i : order) {
        const TensorView& t = g.tensors[i];
        if (t.nbytes == 0) continue;
        if (g.tensorOffsets[i] < maxEnd)
            throw FormatError(g.path,
                              "tensors '" + g.tensors[maxAt].name + "' and '" + t.name +
                                  "' overlap in the data section",
                              infos[i].at);
        maxEnd = g.tensorOffsets[i] + t.nbytes;
        maxAt = i;
    }
}

} // namespace

GgufFile readGguf(const std::string& path) {
    GgufFile g;
    g.path = path;
    g.file = MappedFile::open(path);
    Reader r{reinterpret_cast<const uint8_t*>(g.file->data()), g.file->size(), 0, path};
    g.version = readVersion(r, path);
    const uint64_t nTensors = r.rd<uint64_t>("tensor count");
    const uint64_t nKv = r.rd<uint64_t>("metadata count");
    // Minimal encodings: a key/value pair takes >= 13 bytes, a tensor info >= 24.
    if (nTensors > r.left() / 24)
        throw FormatError(path,
                          "tensor count " + std::to_string(nTensors) +
                              " is impossible for a file of " + std::to_string(r.size) + " bytes",
                          8);
    if (nKv > r.left() / 13)
        throw FormatError(path,
                          "metadata count " + std::to_string(nKv) +
                              " is impossible for a file of " + std::to_string(r.size) + " bytes",
                          16);
    readMetadata(r, g, nKv);

    std::vector<TensorInfoAt> infos;
    infos.reserve(size_t(nTensors));
    g.tensors.reserve(size_t(nTensors));
    std::unordered_set<std::string> names;
    for (uint64_t i = 0; i < nTensors; ++i) {
        TensorView t;
        infos.push_back(readTensorInfo(r, g, names, t));
        g.tensors.push_back(std::move(t));
    }
    placeTensorData(g, r.pos, infos);
    checkNoOverlap(g, infos);
    return g;
}

namespace {

struct Out {
    AtomicFileWriter& w;
    template <class T> void put(T v) { w.write(&v, sizeof v); }
    void str(const std::string& s) {
        put<uint64_t>(s.size());
        w.write(s);
    }
    void value(const GgufValue& v) {
        if (v.type == GgufType::String) {
            str(v.str);
        } else if (v.type == GgufType::Array) {
            put<uint32_t>(uint32_t(v.elemType));
            put<uint64_t>(v.count);
            if (v.elemType == GgufType::String) {
                if (v.strings.size() != v.count) throw ArgumentError("GGUF array count mismatch");
                for (const auto& s : v.strings) str(s);
            } else if (v.elemType == GgufType::Array) {
                if (v.arrays.size() != v.count) throw ArgumentError("GGUF array count mismatch");
                for (const auto& a : v.arrays) value(a);
            } else {
                if (v.raw.size() != v.count * ggufScalarSize(v.elemType))
                    throw ArgumentError("GGUF array byte count mismatch");
                w.write(v.raw.data(), v.raw.size());
            }
        } else {
            const size_t es = ggufScalarSize(v.type);
            if (es == 0) throw ArgumentError("GGUF value has an invalid type");
            w.write(&v.bits, es);
        }
    }
};

} // namespace

void writeGguf(const std::string& path,
               const std::vector<std::pair<std::string, GgufValue>>& metadata,
               const std::vector<TensorDesc>& tensors, const TensorFill& fill, uint32_t version) {
    if (version != 2 && version != 3) throw ArgumentError(path + ": GGUF version must be 2 or 3");
    uint64_t alignment = 32;
    for (const auto& [k, v] : metadata)
        if (k == "general.alignment") {
            if (v.type != GgufType::UInt32 || v.bits == 0 || (v.bits & (v.bits - 1)))
                throw ArgumentError(path + ": general.alignment must be a uint32 power of two");
            alignment = v.bits;
        }
    std::vector<uint64_t> bytes, offsets;
    uint64_t off = 0;
    std::vector<uint32_t> types;
    for (const auto& d : tensors) {
        if (d.shape.size() > kMaxDims)
            throw ArgumentError(path + ": tensor '" + d.name + "' has more than 4 dimensions");
        types.push_back(ggmlTypeId(d.dtype));
        bytes.push_back(tensorDescBytes(d));
        offsets.push_back(off);
        off += bytes.back();
        if (off % alignment) off += alignment - off % alignment;
    }
    AtomicFileWriter w(path);
    Out o{w};
    w.write("GGUF", 4);
    o.put<uint32_t>(version);
    o.put<uint64_t>(tensors.size());
    o.put<uint64_t>(metadata.size());
    for (const auto& [k, v] : metadata) {
        o.str(k);
        o.put<uint32_t>(uint32_t(v.type));
        o.value(v);
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& d = tensors[i];
        o.str(d.name);
        const uint32_t nd = d.shape.empty() ? 1 : uint32_t(d.shape.size());
        o.put<uint32_t>(nd);
        if (d.shape.empty())
            o.put<int64_t>(1);
        else
            for (size_t j = d.shape.size(); j-- > 0;) o.put<int64_t>(d.shape[j]);
        o.put<uint32_t>(types[i]);
        o.put<uint64_t>(offsets[i]);
    }
    if (w.size() % alignment) w.writeZeros(size_t(alignment - w.size() % alignment));
    const uint64_t dataStart = w.size();
    std::vector<std::byte> buf;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const uint64_t pad = dataStart + offsets[i] - w.size();
        w.writeZeros(size_t(pad));
        appendTensorBytes(w, fill, i, bytes[i], buf);
    }
    w.commit();
}

void writeGguf(const std::string& path,
               const std::vector<std::pair<std::string, GgufValue>>& metadata,
               const std::vector<TensorView>& tensors, uint32_t version) {
    writeGguf(path, metadata, tensorDescsFromViews(tensors), tensorFillFromViews(tensors), version);
}

} // namespace lcw
