// Quantised Hugging Face checkpoints → exact float32 weights.
//
// The formats, as their own sources define them:
//  * compressed-tensors (neuralmagic/compressed-tensors, compressors/quantized_compressors/
//    pack_quantized.py, naive_quantized.py, sparse_compressors/sparse_24_bitmask.py,
//    sparse_bitmask.py, quantization/quant_args.py, quantization/lifecycle/forward.py):
//    w = (q - zero_point) * scale with q and zero_point signed integers in
//    [-2^(b-1), 2^(b-1) - 1] (or float8 e4m3 values); pack-quantized stores q + 2^(b-1) in int32
//    words, 32/b values per word LSB first along the row (weight_packed [rows, ceil(cols/pf)],
//    weight_shape [2]); asymmetric group/channel zero points are packed the same way along dim 0
//    (weight_zero_point int32 [ceil(rows/pf), groups]; before compressed-tensors 0.10 they were
//    stored unpacked, int8 [rows, groups]). Group scales weight_scale [rows, ceil(cols/g)],
//    channel [rows, 1], tensor [1], block [ceil(rows/bh), ceil(cols/bw)]; weight_g_idx [cols]
//    maps each column to its group (activation ordering; all -1 = column order). The sparse
//    formats store the nonzero values row-major in `compressed` with a little-endian bitmask
//    [rows, ceil(cols/8)] and the dense shape in `shape`; quantisation is applied first, so the
//    values are the quantised int8 / fp8 weights.
//  * GPTQ (AutoGPTQ nn_modules/qlinear/qlinear_cuda.py pack / forward, GPTQModel
//    utils/model.py v1↔v2): qweight int32 [in*b/32, out] packs the codes of each column along
//    the input dimension as one little-endian bit stream (value k at bit k*b; 3-bit values
//    straddle words), qzeros int32 [groups, out*b/32] packs the zero points the same way along
//    the output dimension, scales [groups, out], g_idx int32 [in] the group of each input
//    column (desc_act). checkpoint_format "gptq" (v1) stores zero - 1, "gptq_v2" the zero.
//    w[n, k] = scales[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k].
//  * AWQ GEMM (AutoAWQ modules/linear/gemm.py from_linear, utils/packing_utils.py): qweight
//    int32 [in, out/8] and qzeros int32 [groups, out/8] pack 8 output columns per word, column
//    8c + order[i] in nibble i with order = [0, 2, 4, 6, 1, 3, 5, 7]; scales [groups, out];
//    w[n, k] = scales[k/g, n] * (q[k, n] - zero[k/g, n]).
// The arithmetic is float(scale) * float(q - zero) in float32, the scale converted exactly from
// its stored dtype: the same as lcw's own decoder (core/compress/quantizer.cpp), so a checkpoint
// lcw writes reopens with bit-identical weights.
#include "core/model/load_hf_quant.h"

#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/lowbit.h"
#include "core/common/parallel.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <set>

namespace lcw::detail {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ------------------------------------------------------------------------------ config access

/// Errors in the quantisation config name the file and the field path.
struct Cfg {
    std::string path; ///< the JSON file
    std::string root; ///< "quantization_config" (config.json) or "" (quantize_config.json)

    std::string field(const std::string& f) const { return root.empty() ? f : root + "." + f; }
    [[noreturn]] void fail(const std::string& f, const std::string& problem) const {
        throw FormatError(path, field(f) + ": " + problem);
    }
    [[noreturn]] void unsupported(const std::string& f, const std::string& problem) const {
        throw UnsupportedError(path + ": " + field(f) + ": " + problem);
    }
};

const json* member(const json& o, const char* key) {
    if (!o.is_object()) return nullptr;
    auto it = o.find(key);
    return it == o.end() || it->is_null() ? nullptr : &*it;
}

std::string join(const std::string& a, const char* key) {
    return a.empty() ? std::string(key) : a + "." + key;
}

int64_t getInt(const Cfg& c, const json& o, const char* key, const std::string& at, int64_t def) {
    const json* v = member(o, key);
    if (!v) return def;
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_number_float()) {
        const double d = v->get<double>();
        if (d == double(int64_t(d)) && d > -1e15 && d < 1e15) return int64_t(d);
    }
    c.fail(join(at, key), "must be an integer, not " + v->dump());
}

bool getBool(const Cfg& c, const json& o, const char* key, const std::string& at, bool def) {
    const json* v = member(o, key);
    if (!v) return def;
    if (!v->is_boolean()) c.fail(join(at, key), "must be true or false, not " + v->dump());
    return v->get<bool>();
}

std::string getString(const Cfg& c, const json& o, const char* key, const std::string& at,
                      const std::string& def) {
    const json* v = member(o, key);
    if (!v) return def;
    if (!v->is_string()) c.fail(join(at, key), "must be a string, not " + v->dump());
    return v->get<std::string>();
}

std::string lower(std::string s) {
    for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

// ------------------------------------------------------------------------------ tensor access

std::string tname(const TensorView& t) {
    return "tensor '" + t.fileName + "'";
}

bool isIntType(DType d) {
    return d == DType::I8 || d == DType::U8 || d == DType::I16 || d == DType::I32 ||
           d == DType::I64;
}
bool isFloatType(DType d) {
    return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64;
}

int64_t intAt(const TensorView& t, int64_t i) {
    const std::byte* p = t.data;
    switch (t.dtype) {
    case DType::I8: {
        int8_t v;
        std::memcpy(&v, p + i, 1);
        return v;
    }
    case DType::U8:
        return int64_t(uint8_t(p[i]));
    case DType::I16: {
        int16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case DType::I32: {
        int32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case DType::I64: {
        int64_t v;
        std::memcpy(&v, p + 8 * i, 8);
        return v;
    }
    default:
        return 0;
    }
}

/// The unsigned bits of an integer word (I8..I64), for unpacking.
uint64_t wordAt(const TensorView& t, int64_t i) {
    const uint64_t es = uint64_t(dtypeBlockBytes(t.dtype));
    uint64_t v = 0;
    std::memcpy(&v, t.data + uint64_t(i) * es, size_t(es)); // little-endian host
    return v;
}

/// Exact conversion of a stored scale.
float floatAt(const TensorView& t, int64_t i) {
    switch (t.dtype) {
    case DType::F32: {
        float v;
        std::memcpy(&v, t.data + 4 * i, 4);
        return v;
    }
    case DType::F16: {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        return f16ToF32(h);
    }
    case DType::BF16: {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        return bf16ToF32(h);
    }
    case DType::F64: {
        double v;
        std::memcpy(&v, t.data + 8 * i, 8);
        return float(v);
    }
    case DType::F8_E4M3:
        return e4m3ToF32(uint8_t(t.data[i]));
    default:
        return 0.0f;
    }
}

void needDType(const TensorView& t, bool ok, const std::string& expected) {
    if (!ok)
        throw FormatError(t.file, tname(t) + " has dtype " + std::string(dtypeName(t.dtype)) +
                                      ", expected " + expected);
}

void needShape(const TensorView& t, const std::vector<int64_t>& shape, const std::string& why) {
    if (t.shape != shape)
        throw FormatError(t.file, tname(t) + " has shape " + checked::shapeString(t.shape) +
                                      ", expected " + checked::shapeString(shape) + " (" + why +
                                      ")");
}

/// A scale table: one float per entry, read exactly.
std::vector<float> readScales(const TensorView& t) {
    needDType(t,
              t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16 ||
                  t.dtype == DType::F64,
              "f32, f16 or bf16 (scales)");
    const int64_t n = checked::numel(t.shape, t.file, tname(t));
    std::vector<float> s(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) s[size_t(i)] = floatAt(t, i);
    return s;
}

int64_t ceilDiv(int64_t a, int64_t b) {
    return b <= 0 ? 0 : (a + b - 1) / b;
}

// ---------------------------------------------------------------------------- dequantisation

/// How element (r, c) of an [rows, cols] weight finds its scale / zero point in a table of
/// `tcols` columns.
struct Layout {
    enum Map { Tensor, Row, RowGroup, Block, GroupRow } map = Tensor;
    int64_t groupSize = 1, bh = 1, bw = 1, tcols = 1;
    const std::vector<int32_t>* gidx = nullptr; ///< group of each column (size cols) or null

    int64_t at(int64_t r, int64_t c) const {
        switch (map) {
        case Tensor:
            return 0;
        case Row:
            return r;
        case RowGroup:
            return r * tcols + (gidx ? (*gidx)[size_t(c)] : c / groupSize);
        case Block:
            return (r / bh) * tcols + c / bw;
        case GroupRow:
            return (gidx ? (*gidx)[size_t(c)] : c / groupSize) * tcols + r;
        }
        return 0;
    }
};

/// w = float(scale) * float(q - zero), row-major [rows, cols].
std::vector<float> dequantInts(const std::vector<int32_t>& q, int64_t rows, int64_t cols,
                               const std::vector<float>& scale, const std::vector<int32_t>& zero,
                               const Layout& L) {
    std::vector<float> out(static_cast<size_t>(rows * cols));
    const bool hasZero = !zero.empty();
    // omp: nothrow (arithmetic on buffers allocated above; indices validated before)
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
            const int64_t i = L.at(r, c);
            const int32_t z = hasZero ? zero[size_t(i)] : 0;
            out[size_t(r * cols + c)] = scale[size_t(i)] * float(q[size_t(r * cols + c)] - z);
        }
    }
    return out;
}

/// Float8 e4m3 values: w = float(scale) * e4m3(u) (lcw's fp8 decode).
std::vector<float> dequantFp8(const std::byte* codes, int64_t rows, int64_t cols,
                              const std::vector<float>& scale, const Layout& L) {
    std::vector<float> out(static_cast<size_t>(rows * cols));
    // omp: nothrow (arithmetic on buffers allocated above; indices validated before)
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            out[size_t(r * cols + c)] =
                scale[size_t(L.at(r, c))] * e4m3ToF32(uint8_t(codes[r * cols + c]));
    return out;
}

/// A group index per column from a g_idx tensor; empty when absent or all -1 (column order).
std::vector<int32_t> readGidx(const TensorView* t, int64_t cols, int64_t groups,
                              bool allowMinusOne) {
    if (!t) return {};
    needDType(*t, t->dtype == DType::I32 || t->dtype == DType::I64, "i32 or i64 (g_idx)");
    needShape(*t, {cols}, "one group index per input column");
    std::vector<int32_t> g(static_cast<size_t>(cols));
    bool allMinusOne = true;
    for (int64_t c = 0; c < cols; ++c) {
        const int64_t v = intAt(*t, c);
        if (v != -1) allMinusOne = false;
        g[size_t(c)] = int32_t(std::clamp<int64_t>(v, -1, INT32_MAX));
    }
    if (allowMinusOne && allMinusOne) return {};
    for (int64_t c = 0; c < cols; ++c) {
        const int64_t v = intAt(*t, c);
        if (v < 0 || v >= groups)
            throw FormatError(t->file, tname(*t) + " has group " + std::to_string(v) +
                                           " at column " + std::to_string(c) + ", outside [0, " +
                                           std::to_string(groups) + ")");
    }
    return g;
}

// ---------------------------------------------------------------------------- module grouping

struct Module {
    std::string name;                              ///< HF module name (no trailing '.')
    std::map<std::string, const TensorView*> part; ///< parameter name → tensor
    size_t first = 0;                              ///< index of its first tensor in the file

    const TensorView* get(const std::string& p) const {
        auto it = part.find(p);
        return it == part.end() ? nullptr : it->second;
    }
    std::string full(const std::string& p) const { return name + "." + p; }
    /// The file of the module's tensors, for errors about a missing one.
    std::string file() const { return part.empty() ? std::string() : part.begin()->second->file; }
    [[noreturn]] void missing(const std::string& p, const std::string& because) const {
        throw FormatError(file(), "quantised module '" + name + "' has no tensor '" + full(p) +
                                      "' (" + because + ")");
    }
};

/// Splits the file's tensors into modules by the parameter names of a format.
std::map<std::string, Module> groupModules(const std::vector<TensorView>& tensors,
                                           const std::set<std::string>& params) {
    std::map<std::string, Module> mods;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const std::string& n = tensors[i].name;
        const size_t dot = n.rfind('.');
        if (dot == std::string::npos) continue;
        const std::string p = n.substr(dot + 1);
        if (!params.count(p)) continue;
        Module& m = mods[n.substr(0, dot)];
        if (m.part.empty()) {
            m.name = n.substr(0, dot);
            m.first = i;
        }
        m.part[p] = &tensors[i];
    }
    return mods;
}

struct Result {
    std::vector<float> values;
    int64_t rows = 0, cols = 0;
    std::string scheme;         ///< per-tensor scheme text
    std::string summaryKey;     ///< what the summary counts
    const TensorView* main{};   ///< the tensor whose file the weight is attributed to
    std::set<std::string> used; ///< parameters consumed
};

// ----------------------------------------------------------------------- compressed-tensors

struct CtArgs {
    int bits = 8;
    bool isFloat = false;
    bool symmetric = true;
    std::string strategy; ///< tensor | channel | group | block
    int64_t groupSize = 0, bh = 0, bw = 0;
    std::string actorder; ///< "" | group | weight
    std::string dynamic;  ///< "" | "dynamic" | "local"

    std::string text() const {
        std::string s = isFloat ? (bits == 8 ? "fp8" : "fp" + std::to_string(bits))
                                : "int" + std::to_string(bits);
        if (!isFloat || !symmetric) s += symmetric ? " sym" : " asym";
        if (strategy == "group")
            s += " group " + std::to_string(groupSize);
        else if (strategy == "block")
            s += " block " + std::to_string(bh) + "x" + std::to_string(bw);
        else
            s += " " + strategy;
        if (!actorder.empty()) s += " actorder " + actorder;
        if (!dynamic.empty()) s += dynamic == "local" ? " dynamic (local)" : " dynamic";
        return s;
    }
};

CtArgs parseCtArgs(const Cfg& c, const json& o, const std::string& at, bool weights) {
    if (!o.is_object()) c.fail(at, "must be an object, not " + o.dump());
    CtArgs a;
    const std::string type = lower(getString(c, o, "type", at, "int"));
    if (type != "int" && type != "float") c.fail(join(at, "type"), "unknown '" + type + "'");
    a.isFloat = type == "float";
    const int64_t bits = getInt(c, o, "num_bits", at, 8);
    if (bits < 1 || bits > 64) c.fail(join(at, "num_bits"), "is " + std::to_string(bits));
    a.bits = int(bits);
    a.symmetric = getBool(c, o, "symmetric", at, true);
    const json* gs = member(o, "group_size");
    if (gs) a.groupSize = getInt(c, o, "group_size", at, 0);
    std::string strategy = lower(getString(c, o, "strategy", at, ""));
    if (strategy.empty()) {
        if (!gs)
            strategy = "tensor";
        else if (a.groupSize > 0)
            strategy = "group";
        else if (a.groupSize == -1)
            strategy = "channel";
        else
            c.fail(join(at, "group_size"),
                   "is " + std::to_string(a.groupSize) + " (use > 0 for groups, -1 for channels)");
    }
    static const std::set<std::string> known = {"tensor", "channel",      "group",    "block",
                                                "token",  "tensor_group", "attn_head"};
    if (!known.count(strategy)) c.fail(join(at, "strategy"), "unknown '" + strategy + "'");
    a.strategy = strategy;
    if (strategy == "group" && a.groupSize <= 0)
        c.fail(join(at, "group_size"),
               "must be positive for strategy 'group' (is " + std::to_string(a.groupSize) + ")");
    if (strategy == "block") {
        const json* bs = member(o, "block_structure");
        std::vector<int64_t> dims;
        if (bs && bs->is_array() && bs->size() == 2 && (*bs)[0].is_number_integer() &&
            (*bs)[1].is_number_integer())
            dims = {(*bs)[0].get<int64_t>(), (*bs)[1].get<int64_t>()};
        else if (bs && bs->is_string()) {
            const std::string s = bs->get<std::string>();
            const size_t x = s.find('x');
            try {
                if (x != std::string::npos)
                    dims = {std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))};
            } catch (const std::exception&) {
                dims.clear();
            }
        }
        if (dims.size() != 2 || dims[0] <= 0 || dims[1] <= 0 || dims[0] > kMaxFileDim ||
            dims[1] > kMaxFileDim)
            c.fail(join(at, "block_structure"),
                   "must be [rows, cols] of positive integers for strategy 'block'" +
                       (bs ? std::string(", not ") + bs->dump() : std::string(" (missing)")));
        a.bh = dims[0];
        a.bw = dims[1];
    }
    if (const json* ao = member(o, "actorder")) {
        if (ao->is_boolean())
            a.actorder = ao->get<bool>() ? "group" : "";
        else if (ao->is_string()) {
            a.actorder = lower(ao->get<std::string>());
            if (a.actorder == "dynamic") a.actorder = "group";
            if (a.actorder == "static") a.actorder = "weight";
            if (a.actorder != "group" && a.actorder != "weight")
                c.fail(join(at, "actorder"), "unknown '" + a.actorder + "'");
        } else
            c.fail(join(at, "actorder"), "must be a string or a boolean, not " + ao->dump());
    }
    if (const json* d = member(o, "dynamic")) {
        if (d->is_boolean())
            a.dynamic = d->get<bool>() ? "dynamic" : "";
        else if (d->is_string() && lower(d->get<std::string>()) == "local")
            a.dynamic = "local";
        else
            c.fail(join(at, "dynamic"), "must be true, false or \"local\", not " + d->dump());
    }
    if (weights) {
        if (strategy == "token" || strategy == "tensor_group" || strategy == "attn_head")
            c.unsupported(join(at, "strategy"),
                          "'" + strategy +
                              "' weights are not supported (tensor, channel, group "
                              "and block are)");
        if (!a.dynamic.empty())
            c.unsupported(join(at, "dynamic"), "dynamically quantised weights have no stored "
                                               "scales; not supported");
        if (a.isFloat && a.bits != 8)
            c.unsupported(join(at, "num_bits"), "float weights of " + std::to_string(a.bits) +
                                                    " bits are not supported (fp8 e4m3 is)");
        if (a.isFloat && !a.symmetric)
            c.unsupported(join(at, "symmetric"), "asymmetric float weights are not supported");
        if (!a.isFloat && a.bits > 8)
            c.unsupported(join(at, "num_bits"), std::to_string(a.bits) +
                                                    "-bit integer weights are not supported "
                                                    "(1 to 8 bits are)");
    }
    return a;
}

struct CtTarget {
    std::string text;
    bool isRegex = false;
    std::regex re;
};

std::vector<CtTarget> parseTargets(const Cfg& c, const json* arr, const std::string& at) {
    std::vector<CtTarget> out;
    if (!arr) return out;
    if (!arr->is_array()) c.fail(at, "must be a list of names, not " + arr->dump());
    for (size_t i = 0; i < arr->size(); ++i) {
        const json& t = (*arr)[i];
        if (!t.is_string())
            c.fail(at + "[" + std::to_string(i) + "]", "must be a string, not " + t.dump());
        CtTarget ct;
        ct.text = t.get<std::string>();
        if (ct.text.rfind("re:", 0) == 0) {
            ct.isRegex = true;
            try {
                ct.re = std::regex(ct.text.substr(3), std::regex::ECMAScript);
            } catch (const std::regex_error& e) {
                c.fail(at + "[" + std::to_string(i) + "]",
                       "regular expression '" + ct.text.substr(3) + "' does not parse (" +
                           e.what() + ")");
            }
        }
        out.push_back(std::move(ct));
    }
    return out;
}

/// compressed-tensors matching: "re:" + re.match (anchored at the start) on the module name, or
/// the exact module name. Class names ("Linear") are matched separately.
bool matchesName(const CtTarget& t, const std::string& module) {
    if (t.isRegex) return std::regex_search(module, t.re, std::regex_constants::match_continuous);
    return t.text == module;
}
/// A target that names a class rather than a module: no "re:", no dots.
bool isClassTarget(const CtTarget& t) {
    return !t.isRegex && t.text.find('.') == std::string::npos;
}

struct CtGroup {
    std::string name;
    std::vector<CtTarget> targets;
    std::optional<CtArgs> weights, input, output;
    std::string format; ///< the group's own format, or empty
};

/// Input activations lcw's runtime quantises exactly as vLLM does for such a checkpoint:
/// symmetric int, dynamic per token (s = abs-max / (2^(b-1) - 1) per row) or static per tensor
/// (the stored input_scale). See core/model/runtime_quant.h.
bool appliesAsRuntime(const CtArgs& a) {
    if (a.isFloat || !a.symmetric || a.bits < 2 || a.bits > 8) return false;
    return (a.strategy == "token" && a.dynamic == "dynamic") ||
           (a.strategy == "tensor" && a.dynamic.empty());
}

/// The runtime spec of one module's inputs. Static: lcw's scale is clip * absMax / qmax, so
/// absMax is chosen (among the floats next to input_scale * qmax) to give input_scale back
/// exactly.
ActQuantSpec runtimeActivation(const Cfg& c, const Module& m, const CtArgs& a) {
    ActQuantSpec q;
    q.bits = a.bits;
    q.perToken = a.strategy == "token";
    if (q.perToken) return q;
    const TensorView* t = m.get("input_scale");
    if (!t)
        m.missing("input_scale",
                  "static per-tensor input activations need their scale (" + c.path + ")");
    if (t->numel() != 1 || !(isFloatType(t->dtype) || t->dtype == DType::F64))
        throw FormatError(t->file, "tensor '" + t->name +
                                       "' must hold one float (a static per-tensor input scale)");
    const float s = floatAt(*t, 0);
    if (!std::isfinite(s) || s <= 0)
        throw FormatError(t->file, "tensor '" + t->name + "' is not a positive finite scale");
    const float qmax = float((1 << (a.bits - 1)) - 1);
    float best = s * qmax;
    for (int step = 0; step < 8 && best / qmax != s; ++step)
        best = std::nextafter(best, best / qmax < s ? INFINITY : 0.0f);
    q.absMax = best;
    return q;
}

const std::set<std::string> kCtFormats = {
    "dense",           "sparse-bitmask",       "sparse-24-bitmask",   "int-quantized",
    "float-quantized", "naive-quantized",      "pack-quantized",      "marlin-24",
    "mixed-precision", "nvfp4-pack-quantized", "mxfp4-pack-quantized"};

void checkCtFormat(const Cfg& c, const std::string& f, const std::string& at, bool allowMixed) {
    if (!kCtFormats.count(f)) c.fail(at, "unknown '" + f + "'");
    if (f == "marlin-24" || f == "nvfp4-pack-quantized" || f == "mxfp4-pack-quantized" ||
        (f == "mixed-precision" && !allowMixed) || f == "sparse-bitmask" ||
        f == "sparse-24-bitmask")
        c.unsupported(at, "'" + f +
                              "' is not supported as a quantisation format (dense, "
                              "pack-quantized, int-quantized, float-quantized and "
                              "naive-quantized are)");
}

/// The dense weight a sparse module decompresses to: values in the `compressed` dtype.
struct DenseBytes {
    std::vector<std::byte> bytes;
    DType dtype = DType::F32;
    int64_t rows = 0, cols = 0;
    std::string file, name;
};

std::vector<int64_t> readShapeTensor(const TensorView& t) {
    needDType(t, t.dtype == DType::I32 || t.dtype == DType::I64, "i32 or i64 (a shape)");
    const int64_t n = checked::numel(t.shape, t.file, tname(t));
    if (n != 2)
        throw FormatError(t.file,
                          tname(t) + " must hold 2 values (rows, cols), has " + std::to_string(n));
    std::vector<int64_t> s = {intAt(t, 0), intAt(t, 1)};
    for (int64_t& d : s) checked::count(d, t.file, tname(t) + " dimension");
    checked::numel(s, t.file, tname(t));
    return s;
}

DenseBytes decompressSparse(const Module& m, bool is24) {
    const TensorView* shp = m.get("shape");
    const TensorView* val = m.get("compressed");
    const TensorView* bm = m.get("bitmask");
    if (!shp) m.missing("shape", "sparse bitmask compression");
    if (!val) m.missing("compressed", "sparse bitmask compression");
    if (!bm) m.missing("bitmask", "sparse bitmask compression");
    const std::vector<int64_t> s = readShapeTensor(*shp);
    DenseBytes d;
    d.rows = s[0];
    d.cols = s[1];
    d.dtype = val->dtype;
    d.file = val->file;
    d.name = val->fileName;
    needDType(*val,
              isFloatType(val->dtype) || val->dtype == DType::I8 || val->dtype == DType::F8_E4M3,
              "a float, int8 or float8 dtype (sparse values)");
    needDType(*bm, bm->dtype == DType::U8 || bm->dtype == DType::I8 || bm->dtype == DType::Bool,
              "u8 (a packed bitmask)");
    const int64_t bcols = ceilDiv(d.cols, 8);
    needShape(*bm, {d.rows, bcols},
              "one bit per weight, 8 per byte, rows of " + std::to_string(bcols) + " bytes");
    const int64_t nvals = checked::numel(val->shape, val->file, tname(*val));
    if (is24) {
        if (d.cols % 4 != 0)
            throw FormatError(shp->file, tname(*shp) + " has " + std::to_string(d.cols) +
                                             " columns, not a multiple of 4 (2:4 sparsity)");
        needShape(*val, {d.rows, d.cols / 2}, "2 of every 4 weights");
    } else {
        if (val->shape.size() != 1)
            throw FormatError(val->file, tname(*val) + " must be 1-D (the nonzero values)");
    }
    const int64_t n = checked::mul(d.rows, d.cols, shp->file, tname(*shp));
    const uint64_t es = uint64_t(dtypeBlockBytes(d.dtype));
    d.bytes.assign(size_t(uint64_t(n) * es), std::byte{0});
    // Row offsets of the unstructured form must agree with the mask.
    const TensorView* ro = is24 ? nullptr : m.get("row_offsets");
    if (!is24 && !ro) m.missing("row_offsets", "sparse-bitmask compression");
    if (ro) {
        needDType(*ro, isIntType(ro->dtype), "an integer dtype (row offsets)");
        needShape(*ro, {d.rows}, "one offset per row");
    }
    int64_t k = 0;
    for (int64_t r = 0; r < d.rows; ++r) {
        if (ro && intAt(*ro, r) != k)
            throw FormatError(ro->file, tname(*ro) + " says row " + std::to_string(r) +
                                            " starts at value " + std::to_string(intAt(*ro, r)) +
                                            ", the bitmask at " + std::to_string(k));
        const std::byte* bits = bm->data + uint64_t(r) * uint64_t(bcols);
        for (int64_t c = 0; c < d.cols; ++c) {
            if (!((uint8_t(bits[c >> 3]) >> (c & 7)) & 1u)) continue;
            if (k >= nvals)
                throw FormatError(bm->file, tname(*bm) + " marks more weights than " + tname(*val) +
                                                " holds (" + std::to_string(nvals) + ")");
            std::memcpy(d.bytes.data() + uint64_t(r * d.cols + c) * es,
                        val->data + uint64_t(k) * es, size_t(es));
            ++k;
        }
    }
    if (k != nvals)
        throw FormatError(bm->file, tname(*bm) + " marks " + std::to_string(k) + " weights but " +
                                        tname(*val) + " holds " + std::to_string(nvals));
    return d;
}

/// Validates a compressed-tensors scale / zero-point table shape for args and [rows, cols].
Layout ctLayout(const CtArgs& a, const TensorView& t, int64_t rows, int64_t cols,
                const std::vector<int32_t>* gidx) {
    Layout L;
    const int64_t n = checked::numel(t.shape, t.file, tname(t));
    if (a.strategy == "tensor") {
        if (n != 1)
            throw FormatError(t.file, tname(t) + " has shape " + checked::shapeString(t.shape) +
                                          ", expected one value (strategy tensor)");
        L.map = Layout::Tensor;
    } else if (a.strategy == "channel") {
        if (t.shape != std::vector<int64_t>{rows, 1} && t.shape != std::vector<int64_t>{rows})
            needShape(t, {rows, 1}, "strategy channel: one per output row");
        L.map = Layout::Row;
    } else if (a.strategy == "group") {
        const int64_t g = ceilDiv(cols, a.groupSize);
        needShape(t, {rows, g},
                  "strategy group, group_size " + std::to_string(a.groupSize) + ": " +
                      std::to_string(cols) + " columns in " + std::to_string(g) + " groups");
        L.map = Layout::RowGroup;
        L.groupSize = a.groupSize;
        L.tcols = g;
        L.gidx = gidx;
    } else { // block
        const int64_t br = ceilDiv(rows, a.bh), bc = ceilDiv(cols, a.bw);
        needShape(t, {br, bc},
                  "strategy block " + std::to_string(a.bh) + "x" + std::to_string(a.bw));
        L.map = Layout::Block;
        L.bh = a.bh;
        L.bw = a.bw;
        L.tcols = bc;
    }
    return L;
}

/// Zero points from a weight_zero_point tensor (signed values), range-checked.
std::vector<int32_t> readCtZeros(const CtArgs& a, const TensorView& z, const std::string& format,
                                 int64_t rows, int64_t tableRows, int64_t tableCols) {
    const int64_t lo = -(int64_t(1) << (a.bits - 1)), hi = (int64_t(1) << (a.bits - 1)) - 1;
    const int64_t n = checked::mul(tableRows, tableCols, z.file, tname(z));
    std::vector<int32_t> out(static_cast<size_t>(n));
    const bool packedZp = format == "pack-quantized" &&
                          (a.strategy == "group" || a.strategy == "channel") &&
                          z.dtype == DType::I32;
    if (packedZp) {
        // Packed along dim 0: 32/b values per int32 word, q + 2^(b-1) unsigned.
        const int64_t pf = 32 / a.bits;
        needShape(z, {ceilDiv(rows, pf), tableCols},
                  "zero points packed " + std::to_string(pf) + " per int32 along the rows");
        const uint32_t mask = a.bits >= 32 ? 0xffffffffu : ((1u << a.bits) - 1u);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < tableCols; ++j) {
                const uint32_t w = uint32_t(wordAt(z, (r / pf) * tableCols + j));
                const uint32_t u = (w >> (a.bits * (r % pf))) & mask;
                out[size_t(r * tableCols + j)] = int32_t(int64_t(u) + lo);
            }
        return out;
    }
    needDType(z, z.dtype == DType::I8 || z.dtype == DType::I16 || z.dtype == DType::I32,
              "an integer dtype (zero points)");
    const int64_t zn = checked::numel(z.shape, z.file, tname(z));
    if (zn != n)
        throw FormatError(z.file, tname(z) + " has shape " + checked::shapeString(z.shape) +
                                      ", expected " + std::to_string(n) +
                                      " zero points like the scales");
    for (int64_t i = 0; i < n; ++i) {
        const int64_t v = intAt(z, i);
        if (v < lo || v > hi)
            throw FormatError(z.file, tname(z) + " has zero point " + std::to_string(v) +
                                          " at element " + std::to_string(i) + ", outside [" +
                                          std::to_string(lo) + ", " + std::to_string(hi) +
                                          "] for " + std::to_string(a.bits) + "-bit weights");
        out[size_t(i)] = int32_t(v);
    }
    return out;
}

/// The integer codes (signed q) or fp8 bytes of a compressed-tensors weight and its dense shape.
struct CtCodes {
    std::vector<int32_t> q;
    const std::byte* fp8 = nullptr;
    int64_t rows = 0, cols = 0;
    const TensorView* main = nullptr;
};

/// pack-quantized: int32 words of 32/bits codes each, offset by 2^(bits−1), and weight_shape.
CtCodes readPackedCodes(const Module& m, const CtArgs& a, Result& res) {
    CtCodes k;
    const TensorView* pk = m.get("weight_packed");
    const TensorView* ws = m.get("weight_shape");
    if (!pk) m.missing("weight_packed", "format pack-quantized");
    if (!ws) m.missing("weight_shape", "format pack-quantized");
    res.used.insert({"weight_packed", "weight_shape"});
    if (a.isFloat)
        throw FormatError(pk->file, tname(*pk) + ": pack-quantized needs integer weights, "
                                                 "the config says type float");
    const std::vector<int64_t> s = readShapeTensor(*ws);
    k.rows = s[0];
    k.cols = s[1];
    const int64_t pf = 32 / a.bits;
    needDType(*pk, pk->dtype == DType::I32, "i32 (packed codes)");
    needShape(*pk, {k.rows, ceilDiv(k.cols, pf)},
              std::to_string(a.bits) + "-bit codes, " + std::to_string(pf) +
                  " per int32, for weight_shape " + checked::shapeString(s));
    k.q.resize(size_t(checked::mul(k.rows, k.cols, ws->file, tname(*ws))));
    const int64_t wpr = ceilDiv(k.cols, pf);
    const uint32_t mask = (1u << a.bits) - 1u;
    const int32_t off = int32_t(1) << (a.bits - 1);
    // omp: nothrow (arithmetic on buffers allocated above; shapes validated)
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < k.rows; ++r)
        for (int64_t c = 0; c < k.cols; ++c) {
            const uint32_t w = uint32_t(wordAt(*pk, r * wpr + c / pf));
            k.q[size_t(r * k.cols + c)] = int32_t((w >> (a.bits * (c % pf))) & mask) - off;
        }
    k.main = pk;
    return k;
}

/// int-quantized / float-quantized / naive-quantized: i8 codes (checked against the bit width)
/// or fp8 bytes, dense or from the sparse decompression.
CtCodes readUnpackedCodes(const Module& m, const CtArgs& a, const std::string& format,
                          const std::optional<DenseBytes>& dense, Result& res) {
    CtCodes k;
    const TensorView* w = m.get("weight");
    DType dt;
    const std::byte* data;
    std::string file, name;
    if (dense) {
        dt = dense->dtype;
        data = dense->bytes.data();
        k.rows = dense->rows;
        k.cols = dense->cols;
        file = dense->file;
        name = dense->name;
        k.main = m.get("compressed");
    } else {
        if (!w) m.missing("weight", "format " + format);
        res.used.insert("weight");
        if (w->shape.size() != 2)
            throw FormatError(w->file, tname(*w) + " must be 2-D, has shape " +
                                           checked::shapeString(w->shape));
        dt = w->dtype;
        data = w->data;
        k.rows = w->shape[0];
        k.cols = w->shape[1];
        file = w->file;
        name = w->fileName;
        k.main = w;
    }
    if (a.isFloat) {
        if (dt != DType::F8_E4M3)
            throw FormatError(file, "tensor '" + name + "' has dtype " +
                                        std::string(dtypeName(dt)) +
                                        ", expected f8_e4m3 (fp8 weights)");
        k.fp8 = data;
    } else {
        if (dt != DType::I8)
            throw FormatError(file, "tensor '" + name + "' has dtype " +
                                        std::string(dtypeName(dt)) + ", expected i8 (" +
                                        std::to_string(a.bits) + "-bit integer weights)");
        const int64_t lo = -(int64_t(1) << (a.bits - 1)), hi = (int64_t(1) << (a.bits - 1)) - 1;
        const int64_t n = k.rows * k.cols;
        k.q.resize(size_t(n));
        for (int64_t i = 0; i < n; ++i) {
            const int64_t v = int8_t(data[i]);
            if (v < lo || v > hi)
                throw FormatError(file, "tensor '" + name + "' has code " + std::to_string(v) +
                                            " at element " + std::to_string(i) + ", outside [" +
                                            std::to_string(lo) + ", " + std::to_string(hi) +
                                            "] for " + std::to_string(a.bits) + "-bit weights");
            k.q[size_t(i)] = int32_t(v);
        }
    }
    return k;
}

/// weight_zero_point: the integer zero points (none when symmetric; float weights must store 0).
std::vector<int32_t> readCtZeroPoint(const Module& m, const CtArgs& a, const std::string& format,
                                     int64_t rows, const Layout& L, Result& res) {
    if (const TensorView* z = m.get("weight_zero_point")) {
        res.used.insert("weight_zero_point");
        const int64_t tr = a.strategy == "tensor"  ? 1
                           : a.strategy == "block" ? ceilDiv(rows, a.bh)
                                                   : rows;
        const int64_t tc = a.strategy == "tensor" || a.strategy == "channel" ? 1 : L.tcols;
        if (a.isFloat) {
            // Float weights are symmetric: a stored zero point must be 0.
            for (int64_t i = 0, n = checked::numel(z->shape, z->file, tname(*z)); i < n; ++i)
                if ((isIntType(z->dtype)                                   ? double(intAt(*z, i))
                     : isFloatType(z->dtype) || z->dtype == DType::F8_E4M3 ? double(floatAt(*z, i))
                                                                           : 1.0) != 0.0)
                    throw FormatError(z->file, tname(*z) + " has a nonzero zero point at element " +
                                                   std::to_string(i) +
                                                   " (float weights are symmetric)");
        } else {
            return readCtZeros(a, *z, format, rows, tr, tc);
        }
    } else if (!a.symmetric) {
        m.missing("weight_zero_point", "asymmetric weights");
    }
    return {};
}

Result decodeCtModule(const Module& m, const CtArgs& a, const std::string& format,
                      const std::string& sparseFormat) {
    Result res;
    const bool sparse = m.get("bitmask") != nullptr;
    std::optional<DenseBytes> dense;
    if (sparse) {
        if (sparseFormat != "sparse-24-bitmask" && sparseFormat != "sparse-bitmask")
            throw FormatError(m.get("bitmask")->file,
                              "tensor '" + m.full("bitmask") +
                                  "' is sparse bitmask compressed "
                                  "but config.json's sparsity_config.format is '" +
                                  sparseFormat + "'");
        dense = decompressSparse(m, sparseFormat == "sparse-24-bitmask");
        res.used = {"shape", "compressed", "bitmask", "row_offsets"};
    }
    const TensorView* sc = m.get("weight_scale");
    if (!sc) m.missing("weight_scale", "format " + format);
    res.used.insert("weight_scale");
    const std::vector<float> scale = readScales(*sc);

    CtCodes k;
    if (format == "pack-quantized") {
        if (sparse)
            throw FormatError(m.file(), "module '" + m.name +
                                            "': pack-quantized weights cannot "
                                            "be bitmask compressed");
        k = readPackedCodes(m, a, res);
    } else if (format == "int-quantized" || format == "float-quantized" ||
               format == "naive-quantized") {
        k = readUnpackedCodes(m, a, format, dense, res);
    } else {
        throw FormatError(m.file(), "module '" + m.name + "': format '" + format +
                                        "' does not store quantised weights");
    }
    const int64_t rows = k.rows, cols = k.cols;

    // Group index (activation ordering).
    std::vector<int32_t> gidx;
    if (const TensorView* g = m.get("weight_g_idx")) {
        res.used.insert("weight_g_idx");
        if (a.strategy != "group")
            throw FormatError(g->file, tname(*g) + " is given but the strategy is '" + a.strategy +
                                           "' (g_idx needs strategy group)");
        gidx = readGidx(g, cols, ceilDiv(cols, a.groupSize), true);
    }
    const Layout L = ctLayout(a, *sc, rows, cols, gidx.empty() ? nullptr : &gidx);

    const std::vector<int32_t> zero = readCtZeroPoint(m, a, format, rows, L, res);
    if (m.get("weight_global_scale"))
        throw UnsupportedError(m.get("weight_global_scale")->file + ": tensor '" +
                               m.full("weight_global_scale") +
                               "': global scales (NVFP4) are not supported");

    res.rows = rows;
    res.cols = cols;
    res.main = k.main;
    res.values = k.fp8 ? dequantFp8(k.fp8, rows, cols, scale, L)
                       : dequantInts(k.q, rows, cols, scale, zero, L);
    const std::string sp = sparse ? sparseFormat + " + " : std::string();
    res.scheme = sp + format + " " + a.text();
    res.summaryKey = (sparse ? (sparseFormat == "sparse-24-bitmask" ? "2:4 sparse " : "sparse ")
                             : std::string()) +
                     a.text();
    return res;
}

/// A sparse module without quantisation: the float values, exactly.
Result decodeSparseOnly(const Module& m, const std::string& sparseFormat) {
    Result res;
    DenseBytes d = decompressSparse(m, sparseFormat == "sparse-24-bitmask");
    res.used = {"shape", "compressed", "bitmask", "row_offsets"};
    if (!isFloatType(d.dtype))
        throw FormatError(d.file, "tensor '" + d.name + "' has dtype " +
                                      std::string(dtypeName(d.dtype)) +
                                      " but the module has no quantisation scheme");
    const int64_t n = d.rows * d.cols;
    res.values.resize(size_t(n));
    TensorView tv;
    tv.dtype = d.dtype;
    tv.data = d.bytes.data();
    for (int64_t i = 0; i < n; ++i) res.values[size_t(i)] = floatAt(tv, i);
    res.rows = d.rows;
    res.cols = d.cols;
    res.main = m.get("compressed");
    res.scheme = sparseFormat + " " + std::string(dtypeName(d.dtype));
    res.summaryKey = (sparseFormat == "sparse-24-bitmask" ? "2:4 sparse " : "sparse ") +
                     std::string(dtypeName(d.dtype));
    return res;
}

// ------------------------------------------------------------------------------------- GPTQ

struct GptqCfg {
    int bits = 4;
    int64_t groupSize = 128;
    bool descAct = false, sym = true, v1 = true;
    DType pack = DType::I32;
};

GptqCfg parseGptq(const Cfg& c, const json& q) {
    GptqCfg g;
    const int64_t bits = getInt(c, q, "bits", "", 4);
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        c.unsupported("bits", std::to_string(bits) + "-bit GPTQ is not supported (2, 3, 4 and 8 "
                                                     "are)");
    g.bits = int(bits);
    g.groupSize = getInt(c, q, "group_size", "", -1);
    if (g.groupSize == 0 || g.groupSize < -1)
        c.fail("group_size",
               "is " + std::to_string(g.groupSize) + " (use > 0, or -1 for one group)");
    g.descAct = getBool(c, q, "desc_act", "", false);
    g.sym = getBool(c, q, "sym", "", true);
    if (getBool(c, q, "is_marlin_format", "", false))
        c.unsupported("is_marlin_format", "Marlin-repacked GPTQ checkpoints are not supported");
    const char* fmtKey = member(q, "checkpoint_format") ? "checkpoint_format" : "format";
    const std::string fmt = lower(getString(c, q, fmtKey, "", "gptq"));
    if (fmt == "gptq_v2")
        g.v1 = false;
    else if (fmt != "gptq")
        c.unsupported(fmtKey, "'" + fmt + "' is not supported (gptq and gptq_v2 are)");
    const std::string pd = lower(getString(c, q, "pack_dtype", "", "int32"));
    if (pd == "int32")
        g.pack = DType::I32;
    else if (pd == "int16")
        g.pack = DType::I16;
    else if (pd == "int8")
        g.pack = DType::I8;
    else if (pd == "int64")
        g.pack = DType::I64;
    else
        c.fail("pack_dtype", "unknown '" + pd + "'");
    if (g.bits == 3 && g.pack != DType::I32)
        c.unsupported("pack_dtype", "3-bit GPTQ is read with int32 words only");
    return g;
}

/// Field k of a little-endian bit stream of `bits`-wide values over the words word(0), word(1)...
template <class Word> uint32_t streamField(Word&& word, int64_t k, int bits, int wbits) {
    const int64_t p = k * bits;
    const int64_t wi = p / wbits;
    const int sh = int(p % wbits);
    uint64_t v = word(wi) >> sh;
    if (sh + bits > wbits) v |= word(wi + 1) << (wbits - sh);
    return uint32_t(v & ((uint64_t(1) << bits) - 1));
}

Result decodeGptq(const Module& m, const GptqCfg& g) {
    Result res;
    const TensorView* qw = m.get("qweight");
    const TensorView* qz = m.get("qzeros");
    const TensorView* sc = m.get("scales");
    if (!qw) m.missing("qweight", "GPTQ");
    if (!qz) m.missing("qzeros", "GPTQ");
    if (!sc) m.missing("scales", "GPTQ");
    res.used = {"qweight", "qzeros", "scales", "g_idx"};
    const std::string pd(dtypeName(g.pack));
    needDType(*qw, qw->dtype == g.pack, pd + " (packed codes, quantization_config.pack_dtype)");
    needDType(*qz, qz->dtype == g.pack, pd + " (packed zero points)");
    if (qw->shape.size() != 2)
        throw FormatError(qw->file, tname(*qw) + " must be 2-D, has shape " +
                                        checked::shapeString(qw->shape));
    const int wbits = int(dtypeBlockBytes(g.pack)) * 8;
    const int64_t words = qw->shape[0], out = qw->shape[1];
    const int64_t inBits = checked::mul(words, wbits, qw->file, tname(*qw));
    if (inBits % g.bits != 0)
        throw FormatError(qw->file, tname(*qw) + " has " + std::to_string(words) +
                                        " rows of packed words, not a whole number of " +
                                        std::to_string(g.bits) + "-bit input columns");
    const int64_t in = inBits / g.bits;
    const int64_t groups = g.groupSize == -1 ? 1 : ceilDiv(in, g.groupSize);
    needShape(*sc, {groups, out},
              std::to_string(in) + " input columns in groups of " +
                  (g.groupSize == -1 ? std::to_string(in) : std::to_string(g.groupSize)) + ", " +
                  std::to_string(out) + " outputs");
    const std::vector<float> scale = readScales(*sc);
    const int64_t zBits = checked::mul(out, g.bits, qz->file, tname(*qz));
    if (zBits % wbits != 0)
        throw FormatError(qz->file, tname(*qz) + ": " + std::to_string(out) + " outputs of " +
                                        std::to_string(g.bits) + " bits do not fill whole " + pd +
                                        " words");
    needShape(*qz, {groups, zBits / wbits},
              std::to_string(out) + " zero points of " + std::to_string(g.bits) +
                  " bits per group, packed in " + pd + " words");
    std::vector<int32_t> gidx;
    if (const TensorView* gi = m.get("g_idx")) gidx = readGidx(gi, in, groups, false);

    // Zero points [groups, out]: v1 stores zero - 1.
    std::vector<int32_t> zero(static_cast<size_t>(groups * out));
    const int64_t zc = zBits / wbits;
    for (int64_t r = 0; r < groups; ++r) {
        auto word = [&](int64_t i) { return i < zc ? wordAt(*qz, r * zc + i) : uint64_t(0); };
        for (int64_t n = 0; n < out; ++n)
            zero[size_t(r * out + n)] =
                int32_t(streamField(word, n, g.bits, wbits)) + (g.v1 ? 1 : 0);
    }
    // Codes transposed to [out, in] row-major.
    std::vector<int32_t> q(size_t(checked::mul(out, in, qw->file, tname(*qw))));
    // omp: nothrow (arithmetic on buffers allocated above; shapes validated)
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < out; ++n) {
        auto word = [&](int64_t i) { return i < words ? wordAt(*qw, i * out + n) : uint64_t(0); };
        for (int64_t k = 0; k < in; ++k)
            q[size_t(n * in + k)] = int32_t(streamField(word, k, g.bits, wbits));
    }
    Layout L;
    L.map = Layout::GroupRow;
    L.groupSize = g.groupSize == -1 ? in : g.groupSize;
    L.tcols = out;
    L.gidx = gidx.empty() ? nullptr : &gidx;
    res.values = dequantInts(q, out, in, scale, zero, L);
    res.rows = out;
    res.cols = in;
    res.main = qw;
    std::string t =
        "int" + std::to_string(g.bits) + (g.sym ? " sym" : " asym") +
        (g.groupSize == -1 ? std::string(" channel") : " group " + std::to_string(g.groupSize));
    if (g.descAct) t += " desc_act";
    res.scheme = "gptq " + t;
    res.summaryKey = t;
    return res;
}

// -------------------------------------------------------------------------------------- AWQ

struct AwqCfg {
    int64_t groupSize = 128;
    bool zeroPoint = true;
    std::vector<std::string> notConvert;
};

AwqCfg parseAwq(const Cfg& c, const json& q) {
    AwqCfg a;
    const char* bitsKey = member(q, "bits") ? "bits" : "w_bit";
    const int64_t bits = getInt(c, q, bitsKey, "", 4);
    if (bits != 4)
        c.unsupported(bitsKey, std::to_string(bits) + "-bit AWQ is not supported (AutoAWQ GEMM "
                                                      "packs 4-bit weights)");
    const char* gsKey = member(q, "group_size") ? "group_size" : "q_group_size";
    a.groupSize = getInt(c, q, gsKey, "", 128);
    if (a.groupSize == 0 || a.groupSize < -1)
        c.fail(gsKey, "is " + std::to_string(a.groupSize) + " (use > 0, or -1 for one group)");
    a.zeroPoint = getBool(c, q, "zero_point", "", true);
    const std::string v = lower(getString(c, q, "version", "", "gemm"));
    if (v != "gemm")
        c.unsupported(
            "version",
            "'" + v + "' is not supported (only AutoAWQ's GEMM layout is read; " +
                (v == "gemv" || v == "gemv_fast" || v == "exllama" || v == "marlin" || v == "ipex"
                     ? std::string("re-save the model with version gemm)")
                     : std::string("unknown version)")));
    if (const json* nc = member(q, "modules_to_not_convert")) {
        if (!nc->is_array()) c.fail("modules_to_not_convert", "must be a list of names");
        for (const json& s : *nc)
            if (s.is_string()) a.notConvert.push_back(s.get<std::string>());
    }
    return a;
}

constexpr int kAwqReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7}; // column j sits in nibble kAwqReverse[j]

Result decodeAwq(const Module& m, const AwqCfg& a) {
    Result res;
    const TensorView* qw = m.get("qweight");
    const TensorView* qz = m.get("qzeros");
    const TensorView* sc = m.get("scales");
    if (!qw) m.missing("qweight", "AWQ");
    if (!sc) m.missing("scales", "AWQ");
    if (!qz && a.zeroPoint) m.missing("qzeros", "AWQ with zero_point");
    res.used = {"qweight", "qzeros", "scales"};
    needDType(*qw, qw->dtype == DType::I32, "i32 (8 packed 4-bit codes per word)");
    if (qw->shape.size() != 2)
        throw FormatError(qw->file, tname(*qw) + " must be 2-D, has shape " +
                                        checked::shapeString(qw->shape));
    const int64_t in = qw->shape[0];
    const int64_t out = checked::mul(qw->shape[1], 8, qw->file, tname(*qw));
    const int64_t gs = a.groupSize == -1 ? in : a.groupSize;
    const int64_t groups = ceilDiv(in, gs);
    needShape(*sc, {groups, out},
              std::to_string(in) + " input columns in groups of " + std::to_string(gs) + ", " +
                  std::to_string(out) + " outputs");
    const std::vector<float> scale = readScales(*sc);
    std::vector<int32_t> zero(size_t(groups * out), 8); // no zero points: symmetric around 8
    if (qz) {
        needDType(*qz, qz->dtype == DType::I32, "i32 (8 packed 4-bit zero points per word)");
        needShape(*qz, {groups, out / 8}, "8 zero points per word per group");
        for (int64_t r = 0; r < groups; ++r)
            for (int64_t n = 0; n < out; ++n) {
                const uint32_t w = uint32_t(wordAt(*qz, r * (out / 8) + n / 8));
                zero[size_t(r * out + n)] = int32_t((w >> (4 * kAwqReverse[n % 8])) & 15u);
            }
    }
    std::vector<int32_t> q(size_t(checked::mul(out, in, qw->file, tname(*qw))));
    // omp: nothrow (arithmetic on buffers allocated above; shapes validated)
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < out; ++n)
        for (int64_t k = 0; k < in; ++k) {
            const uint32_t w = uint32_t(wordAt(*qw, k * (out / 8) + n / 8));
            q[size_t(n * in + k)] = int32_t((w >> (4 * kAwqReverse[n % 8])) & 15u);
        }
    Layout L;
    L.map = Layout::GroupRow;
    L.groupSize = gs;
    L.tcols = out;
    res.values = dequantInts(q, out, in, scale, zero, L);
    res.rows = out;
    res.cols = in;
    res.main = qw;
    const std::string t =
        std::string("int4 ") + (a.zeroPoint ? "asym" : "sym") +
        (a.groupSize == -1 ? std::string(" channel") : " group " + std::to_string(a.groupSize));
    res.scheme = "awq gemm " + t;
    res.summaryKey = t;
    return res;
}

// ---------------------------------------------------------------------------------- assembly

/// "a (3 linears), b (1 linear)" in first-seen order.
std::string countList(const std::vector<std::pair<std::string, int>>& counts) {
    std::string s;
    for (const auto& [k, n] : counts) {
        if (!s.empty()) s += "; ";
        s += k + " (" + std::to_string(n) + (n == 1 ? " linear)" : " linears)");
    }
    return s;
}

void countKey(std::vector<std::pair<std::string, int>>& counts, const std::string& key) {
    for (auto& [k, n] : counts)
        if (k == key) {
            ++n;
            return;
        }
    counts.emplace_back(key, 1);
}

bool isLinearWeight(const TensorView& t) {
    return t.shape.size() == 2 && t.name.size() > 7 &&
           t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
}

/// What decoding a quantised checkpoint's modules produces before the tensor list is rebuilt.
struct Decoding {
    HfQuantized out;
    std::vector<Result> results;
    std::vector<const Module*> resultModule; ///< the module of each result (in `mods`)
    std::map<std::string, Module> mods;
    std::vector<std::pair<std::string, int>> counts; ///< quantised linears per scheme
    std::string summaryHead;
    std::vector<std::string> notes;                  ///< recorded, not applied
    std::function<bool(const std::string&)> ignored; ///< module names left in floats on purpose
    std::set<std::string> quantWeights;              ///< names of the dequantised weights
};

/// The quantisation config of a checkpoint: config.json's quantization_config, or AutoGPTQ's
/// quantize_config.json beside it (with quant_method "gptq") when the tensors have qweights.
/// Null when the folder is not quantised. `c` names the file and root of later errors.
const json* readQuantConfig(const std::string& cfgPath, const std::vector<TensorView>& tensors,
                            Cfg& c, json& config, json& fallback) {
    config = readJsonFile(cfgPath);
    const json* qp = member(config, "quantization_config");
    if (qp) return qp;
    // AutoGPTQ writes quantize_config.json (no quant_method) beside a config.json without
    // a quantization_config.
    const fs::path qc = fs::path(cfgPath).parent_path() / "quantize_config.json";
    std::error_code ec;
    bool hasQweight = false;
    for (const auto& t : tensors)
        if (t.name.size() > 8 && t.name.compare(t.name.size() - 8, 8, ".qweight") == 0)
            hasQweight = true;
    if (!hasQweight || !fs::exists(qc, ec)) return nullptr;
    fallback = readJsonFile(qc.string());
    c = Cfg{qc.string(), ""};
    if (!fallback.is_object()) c.fail("(top level)", "must be a JSON object");
    if (!member(fallback, "quant_method")) fallback["quant_method"] = "gptq";
    return &fallback;
}

/// compressed-tensors' config_groups (targets, weight / activation arguments, formats); input
/// activations lcw's runtime cannot apply and output activations are noted.
std::vector<CtGroup> parseCtGroups(const Cfg& c, const json& q, std::vector<std::string>& notes) {
    std::vector<CtGroup> groups;
    if (const json* cg = member(q, "config_groups")) {
        if (!cg->is_object()) c.fail("config_groups", "must be an object, not " + cg->dump());
        for (auto it = cg->begin(); it != cg->end(); ++it) {
            const std::string at = "config_groups." + it.key();
            const json& g = it.value();
            if (!g.is_object()) c.fail(at, "must be an object, not " + g.dump());
            CtGroup grp;
            grp.name = it.key();
            grp.targets = parseTargets(c, member(g, "targets"), at + ".targets");
            if (const json* w = member(g, "weights"))
                grp.weights = parseCtArgs(c, *w, at + ".weights", true);
            if (const json* ia = member(g, "input_activations"))
                grp.input = parseCtArgs(c, *ia, at + ".input_activations", false);
            if (const json* oa = member(g, "output_activations"))
                grp.output = parseCtArgs(c, *oa, at + ".output_activations", false);
            grp.format = getString(c, g, "format", at, "");
            if (!grp.format.empty()) checkCtFormat(c, grp.format, at + ".format", false);
            // int dynamic per-token and static per-tensor symmetric inputs are what lcw's
            // runtime quantises the same way (and vLLM runs them so): applied; others noted.
            if (grp.input && !appliesAsRuntime(*grp.input))
                notes.push_back("input activations " + grp.input->text() + " (" + grp.name + ")");
            if (grp.output)
                notes.push_back("output activations " + grp.output->text() + " (" + grp.name + ")");
            groups.push_back(std::move(grp));
        }
    }
    return groups;
}

/// compressed-tensors: the config groups, ignore list and sparsity format, then every module
/// with packed or sparse weights decoded.
void decodeCompressedTensors(const Cfg& c, const json& q, const std::string& cfgPath,
                             const std::vector<TensorView>& tensors, Decoding& d) {
    d.out.method = "compressed-tensors";
    if (const json* tc = member(q, "transform_config"))
        if (!tc->empty())
            c.unsupported("transform_config", "checkpoints with rotation transforms are not "
                                              "supported");
    if (const json* v = member(q, "version"))
        if (!v->is_string()) c.fail("version", "must be a string, not " + v->dump());
    const std::string topFormat = getString(c, q, "format", "", "dense");
    checkCtFormat(c, topFormat, "format", true);
    const std::vector<CtGroup> groups = parseCtGroups(c, q, d.notes);
    if (const json* kv = member(q, "kv_cache_scheme"))
        d.notes.push_back("KV cache " + parseCtArgs(c, *kv, "kv_cache_scheme", false).text());
    const std::vector<CtTarget> ignore = parseTargets(c, member(q, "ignore"), "ignore");
    std::string sparseFormat;
    if (const json* sp = member(q, "sparsity_config")) {
        if (!sp->is_object()) c.fail("sparsity_config", "must be an object, not " + sp->dump());
        sparseFormat = getString(c, *sp, "format", "sparsity_config", "dense");
        if (sparseFormat != "dense" && sparseFormat != "sparse-bitmask" &&
            sparseFormat != "sparse-24-bitmask") {
            if (kCtFormats.count(sparseFormat))
                c.unsupported("sparsity_config.format",
                              "'" + sparseFormat +
                                  "' is not supported (dense, sparse-bitmask "
                                  "and sparse-24-bitmask are)");
            c.fail("sparsity_config.format", "unknown '" + sparseFormat + "'");
        }
    }
    if (topFormat == "mixed-precision")
        for (const auto& g : groups)
            if (g.weights && g.format.empty())
                c.fail("config_groups." + g.name + ".format",
                       "missing (the top-level format is mixed-precision)");
    d.ignored = [ignore](const std::string& mod) {
        for (const auto& t : ignore)
            if (matchesName(t, mod)) return true;
        return false;
    };
    auto groupFor = [&](const std::string& mod) -> const CtGroup* {
        for (const auto& g : groups)
            for (const auto& t : g.targets)
                if (matchesName(t, mod)) return &g;
        for (const auto& g : groups)
            for (const auto& t : g.targets)
                if (isClassTarget(t)) return &g;
        return nullptr;
    };

    d.mods = groupModules(tensors, {"weight", "weight_packed", "weight_scale", "weight_zero_point",
                                    "weight_g_idx", "weight_shape", "weight_global_scale", "shape",
                                    "compressed", "bitmask", "row_offsets", "input_scale"});
    for (auto& [name, m] : d.mods) {
        const bool sparse = m.get("bitmask") || m.get("compressed");
        const bool quant = m.get("weight_packed") || m.get("weight_scale");
        if (!sparse && !quant) continue; // a plain float weight
        const CtGroup* g = quant ? groupFor(name) : nullptr;
        if (quant && (!g || !g->weights)) {
            if (!g)
                throw FormatError(m.file(), "quantised module '" + name +
                                                "' is not targeted by any config_groups "
                                                "entry in " +
                                                cfgPath);
            throw FormatError(cfgPath, c.field("config_groups." + g->name + ".weights") +
                                           ": missing, but module '" + name +
                                           "' has quantised weights");
        }
        const std::string format = g && !g->format.empty() ? g->format : topFormat;
        if (quant && format == "dense" && !sparse) {
            if (m.get("weight_packed"))
                c.fail(g && !g->format.empty() ? "config_groups." + g->name + ".format"
                                               : std::string("format"),
                       "is 'dense' but module '" + name + "' has packed weights (" +
                           m.full("weight_packed") + ")");
            // Fake-quantised floats with their parameters beside them: the weight stays.
            continue;
        }
        if (sparse && (!quant || format == "dense")) {
            if (sparseFormat.empty() || sparseFormat == "dense")
                throw FormatError(m.file(), "module '" + name +
                                                "' is sparse bitmask "
                                                "compressed but " +
                                                cfgPath + " has no sparsity_config.format");
            d.results.push_back(decodeSparseOnly(m, sparseFormat));
        } else {
            d.results.push_back(decodeCtModule(m, *g->weights, format, sparseFormat));
        }
        if (g && g->input && appliesAsRuntime(*g->input))
            d.out.activations[name] = runtimeActivation(c, m, *g->input);
        d.resultModule.push_back(&m);
    }
    d.summaryHead = "compressed-tensors " + topFormat;
    if (!sparseFormat.empty() && sparseFormat != "dense") d.summaryHead += " + " + sparseFormat;
}

/// GPTQ (v1 / v2): every module with a qweight.
void decodeGptqModules(const Cfg& c, const json& q, const std::vector<TensorView>& tensors,
                       Decoding& d) {
    d.out.method = "gptq";
    const GptqCfg g = parseGptq(c, q);
    d.mods = groupModules(tensors, {"qweight", "qzeros", "scales", "g_idx"});
    for (auto& [name, m] : d.mods) {
        if (!m.get("qweight")) m.missing("qweight", "GPTQ: it has " + m.part.begin()->first);
        d.results.push_back(decodeGptq(m, g));
        d.resultModule.push_back(&m);
    }
    d.summaryHead = std::string("gptq (") + (g.v1 ? "v1" : "v2") + " checkpoint)";
    d.ignored = [](const std::string&) { return false; };
}

/// AWQ GEMM: every module with a qweight; modules_to_not_convert are the ignored ones.
void decodeAwqModules(const Cfg& c, const json& q, const std::vector<TensorView>& tensors,
                      Decoding& d) {
    d.out.method = "awq";
    const AwqCfg a = parseAwq(c, q);
    d.mods = groupModules(tensors, {"qweight", "qzeros", "scales"});
    for (auto& [name, m] : d.mods) {
        if (!m.get("qweight")) m.missing("qweight", "AWQ: it has " + m.part.begin()->first);
        d.results.push_back(decodeAwq(m, a));
        d.resultModule.push_back(&m);
    }
    d.summaryHead = "awq gemm";
    const std::vector<std::string> nc = a.notConvert;
    d.ignored = [nc](const std::string& mod) {
        for (const auto& s : nc)
            if (mod.find(s) != std::string::npos) return true;
        return false;
    };
}

/// The tensor list with each decoded module's parts replaced by its dequantised F32 weight, at
/// the place of its first part (owned by `model`).
void replaceModuleParts(Model& model, const std::vector<TensorView>& tensors, Decoding& d) {
    // Replace each module's parts by its dequantised weight, at the place of its first part.
    std::set<const TensorView*> consumed;
    std::map<size_t, size_t> weightAt; // first tensor index → result
    for (size_t i = 0; i < d.results.size(); ++i) {
        const Module& m = *d.resultModule[i];
        for (const auto& [p, t] : m.part)
            if (d.results[i].used.count(p)) consumed.insert(t);
        size_t first = SIZE_MAX;
        for (const auto& [p, t] : m.part)
            if (d.results[i].used.count(p)) first = std::min(first, size_t(t - tensors.data()));
        weightAt[first] = i;
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
        if (auto it = weightAt.find(i); it != weightAt.end()) {
            Result& r = d.results[it->second];
            const Module& m = *d.resultModule[it->second];
            TensorView v;
            v.name = m.name + ".weight";
            v.fileName = v.name;
            v.file = r.main ? r.main->file : m.file();
            v.dtype = DType::F32;
            v.shape = {r.rows, r.cols};
            std::vector<std::byte> buf(r.values.size() * sizeof(float));
            std::memcpy(buf.data(), r.values.data(), buf.size());
            std::vector<float>().swap(r.values);
            v.nbytes = buf.size();
            v.data = model.ownBuffer(std::move(buf));
            HfQuantized::Info info;
            info.scheme = r.scheme;
            for (const auto& [p, t] : m.part)
                if (r.used.count(p)) info.fileBytes += t->nbytes;
            d.out.byWeight[v.name] = std::move(info);
            d.quantWeights.insert(v.name);
            countKey(d.counts, r.summaryKey);
            d.out.tensors.push_back(std::move(v));
        }
        if (consumed.count(&tensors[i])) continue;
        if (d.quantWeights.count(tensors[i].name))
            throw FormatError(tensors[i].file, "tensor '" + tensors[i].name +
                                                   "' is present both quantised and in floats");
        d.out.tensors.push_back(tensors[i]);
    }
}

/// The one-line summary (schemes, ignored linears, applied activations) and the warning about
/// what the config declares but lcw does not apply.
void summarise(const Cfg& c, Decoding& d, std::vector<std::string>& warnings) {
    int ignoredCount = 0;
    for (const auto& t : d.out.tensors)
        if (!d.quantWeights.count(t.name) && isLinearWeight(t) &&
            d.ignored(t.name.substr(0, t.name.size() - 7)))
            ++ignoredCount;
    d.out.summary = d.summaryHead + ": " +
                    (d.counts.empty() ? std::string("no quantised linears") : countList(d.counts));
    if (ignoredCount > 0) d.out.summary += ", " + std::to_string(ignoredCount) + " ignored";
    if (!d.out.activations.empty()) {
        std::vector<std::pair<std::string, int>> acts;
        for (const auto& [mod, a] : d.out.activations)
            countKey(acts, "int" + std::to_string(a.bits) +
                               (a.perToken ? " dynamic per token" : " static per tensor"));
        d.out.summary += "; input activations " + countList(acts) + " (applied)";
    }
    if (!d.notes.empty()) {
        std::string n;
        for (const auto& s : d.notes) n += (n.empty() ? "" : ", ") + s;
        d.out.summary += "; not applied: " + n;
        warnings.push_back(c.path + ": " +
                           (c.root.empty() ? std::string("the quantisation config") : c.root) +
                           " declares " + n +
                           "; recorded but not applied (lcw runs activations and the KV cache "
                           "in float; add a runtime quantisation in a recipe to simulate them)");
    }
}

} // namespace

std::optional<HfQuantized> loadHfQuantized(Model& model, const std::string& cfgPath,
                                           const std::vector<TensorView>& tensors,
                                           std::vector<std::string>& warnings) {
    Cfg c{cfgPath, "quantization_config"};
    json config, fallback;
    const json* qp = readQuantConfig(cfgPath, tensors, c, config, fallback);
    if (!qp) return std::nullopt;
    const json& q = *qp;
    if (!q.is_object()) c.fail("", "must be an object, not " + q.dump());
    const std::string method = lower(getString(c, q, "quant_method", "", ""));
    if (method.empty()) c.fail("quant_method", "missing");
    Decoding d;
    if (method == "compressed-tensors")
        decodeCompressedTensors(c, q, cfgPath, tensors, d);
    else if (method == "gptq")
        decodeGptqModules(c, q, tensors, d);
    else if (method == "awq")
        decodeAwqModules(c, q, tensors, d);
    else
        c.unsupported("quant_method", "'" + method +
                                          "' is not supported (compressed-tensors, gptq and awq "
                                          "are)");
    replaceModuleParts(model, tensors, d);
    summarise(c, d, warnings);
    return std::move(d.out);
}

} // namespace lcw::detail
