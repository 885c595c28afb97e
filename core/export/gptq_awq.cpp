// GPTQ and AWQ checkpoint formats (see gptq_awq.h and docs/hf-formats.md). Layouts follow
// AutoGPTQ's QuantLinear.pack (qlinear_cuda_old.py), GPTQModel's v1/v2 zero-point conventions
// (gptqmodel/utils/model.py) and AutoAWQ's WQLinear_GEMM.from_linear (awq/modules/linear/gemm.py).
#include "core/export/gptq_awq.h"

#include "core/common/dtype.h"
#include "core/common/error.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <string>

namespace lcw {
namespace {

static_assert(std::endian::native == std::endian::little, "tensor bytes are written as in memory");

using compress::PackedTensor;
using compress::WeightSettings;
using json = nlohmann::ordered_json;

/// The one setting a GPTQ / AWQ config states: bits, group_size (-1: per output channel), sym.
struct Key {
    int bits = 4;
    int64_t groupSize = 128;
    bool sym = true;
    bool operator==(const Key&) const = default;
    std::string describe() const {
        std::string s = "int";
        s += std::to_string(bits);
        if (groupSize < 0) {
            s += " channel";
        } else {
            s += " g";
            s += std::to_string(groupSize);
        }
        s += sym ? " sym" : " asym";
        return s;
    }
};

Key keyOf(const PackedTensor& p) {
    const WeightSettings& s = p.settings;
    return {s.bits, s.granularity == compress::Granularity::Group ? s.groupSize : -1, s.symmetric};
}

/// The most common key (ties: the first seen).
std::optional<Key> majority(const std::vector<Key>& keys) {
    std::vector<std::pair<Key, int>> counts;
    for (const Key& k : keys) {
        auto it =
            std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == k; });
        if (it == counts.end())
            counts.push_back({k, 1});
        else
            ++it->second;
    }
    if (counts.empty()) return std::nullopt;
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it)
        if (it->second > best->second) best = it;
    return best->first;
}

/// Reasons shared by both formats (format, granularity, outliers, activations), or empty.
std::string commonReason(const HfQuantModule& m) {
    if (!m.packed) return "pruned but not quantised (the format stores integer codes only)";
    const PackedTensor& p = *m.packed;
    const WeightSettings& s = p.settings;
    if (compress::methodIsGguf(s.method))
        return "GGUF block type " + s.describe() + " (ggml blocks have no GPTQ/AWQ layout)";
    if (compress::methodIsCompact(s.method))
        return std::string(compress::weightMethodName(s.method)) +
               " codes (code books, 8-bit group scales or mixed-bit groups have no GPTQ/AWQ "
               "layout)";
    if (s.format != compress::WeightFormat::Int)
        return std::string(compress::weightFormatName(s.format)) + " weights (integer codes only)";
    if (s.granularity == compress::Granularity::Tensor)
        return "tensor granularity (scales are per group or per output channel)";
    if (s.granularity == compress::Granularity::Group && (s.groupSize <= 0 || p.cols % s.groupSize))
        return "a last group shorter than group_size (in = " + std::to_string(p.cols) +
               ", group_size = " + std::to_string(s.groupSize) + ")";
    if (!p.outlierCols.empty())
        return std::to_string(p.outlierCols.size()) +
               " outlier input columns kept in 16 bits (no place for them in the format)";
    if (m.activation.active())
        return "input-activation quantisation (a" + std::to_string(m.activation.bits) +
               (m.activation.perToken ? " per-token" : " per-tensor") +
               ") has no equivalent in the format (weight-only)";
    if (p.rows != m.rows || p.cols != m.cols)
        return "packed shape [" + std::to_string(p.rows) + ", " + std::to_string(p.cols) +
               "] differs from the module's [" + std::to_string(m.rows) + ", " +
               std::to_string(m.cols) + "]";
    return {};
}

struct Unpacked {
    int64_t rows = 0, cols = 0, groups = 0, groupLen = 0;
    int bits = 0;
    const PackedTensor* p = nullptr;
    uint64_t rowBytes = 0;
    /// Code (r, j): LSB-first b-bit values, each row starting on a byte; b <= 8, so a code
    /// lies within two bytes.
    uint32_t code(int64_t r, int64_t j) const {
        const uint8_t* row = p->codes.data() + uint64_t(r) * rowBytes;
        const uint64_t bit = uint64_t(j) * uint64_t(bits);
        const uint64_t by = bit >> 3;
        uint32_t v = row[by];
        if (by + 1 < rowBytes) v |= uint32_t(row[by + 1]) << 8;
        return (v >> (bit & 7)) & ((1u << bits) - 1u);
    }
    /// Group k of row r: index into scales / zeros.
    size_t gi(int64_t r, int64_t k) const { return size_t(r * groups + k); }
    /// The integer zero point (symmetric: 2^(bits-1)).
    uint32_t zero(int64_t r, int64_t k) const {
        if (p->settings.symmetric) return 1u << (bits - 1);
        return uint32_t(std::lround(f16ToF32(p->zeros[gi(r, k)])));
    }
    uint16_t scale(int64_t r, int64_t k) const { return p->scales[gi(r, k)]; }
};

Unpacked view(const HfQuantModule& m, const std::string& fmt) {
    const PackedTensor& p = *m.packed;
    Unpacked u;
    u.p = &p;
    u.rows = p.rows;
    u.cols = p.cols;
    u.bits = p.settings.bits;
    u.groupLen =
        p.settings.granularity == compress::Granularity::Group ? p.settings.groupSize : p.cols;
    u.groups = p.cols / u.groupLen;
    u.rowBytes = (uint64_t(p.cols) * uint64_t(u.bits) + 7) / 8;
    const bool asym = !p.settings.symmetric;
    if (p.codes.size() != uint64_t(p.rows) * u.rowBytes ||
        p.scales.size() != size_t(p.rows * u.groups) ||
        (asym && p.zeros.size() != size_t(p.rows * u.groups)))
        throw ArgumentError(
            fmt + " export of " + m.module + ": packed sizes (" + std::to_string(p.codes.size()) +
            " code bytes, " + std::to_string(p.scales.size()) + " scales) do not fit [" +
            std::to_string(p.rows) + ", " + std::to_string(p.cols) + "] " + p.settings.describe());
    return u;
}

template <class T>
HfTensorBlob blob(std::string name, DType dt, std::vector<int64_t> shape, const std::vector<T>& v) {
    HfTensorBlob b;
    b.name = std::move(name);
    b.dtype = dt;
    b.shape = std::move(shape);
    b.data.resize(v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(b.data.data(), v.data(), b.data.size());
    return b;
}

/// ORs the `bits`-bit value v at bit `pos` of a little-endian stream of 32-bit words whose
/// word w lies at words[w * stride] (the stream may run from one word into the next).
void putStream(uint32_t* words, int64_t stride, uint64_t pos, int bits, uint32_t v) {
    const uint64_t w = pos / 32;
    const unsigned sh = unsigned(pos % 32);
    words[w * uint64_t(stride)] |= v << sh;
    if (sh + unsigned(bits) > 32) words[(w + 1) * uint64_t(stride)] |= v >> (32 - sh);
}

std::string regexLiteral(const std::string& s) {
    std::string r = "^";
    for (char c : s) {
        if (std::string_view(".^$*+?()[]{}|\\").find(c) != std::string_view::npos) r += '\\';
        r += c;
    }
    return r + "$";
}

/// The name of a module within its block ("model.layers.3.self_attn.q_proj" ->
/// "self_attn.q_proj"): what follows the first numeric path segment; none outside blocks.
std::optional<std::string> inBlockName(const std::string& module) {
    size_t pos = 0;
    while ((pos = module.find('.', pos)) != std::string::npos) {
        size_t e = pos + 1;
        while (e < module.size() && std::isdigit(static_cast<unsigned char>(module[e]))) ++e;
        if (e > pos + 1 && e < module.size() && module[e] == '.') return module.substr(e + 1);
        pos = pos + 1;
    }
    return std::nullopt;
}

bool isLmHead(const HfQuantModule& m) {
    return m.module == "lm_head" || (m.module.size() > 8 && m.module.ends_with(".lm_head"));
}

// ------------------------------------------------------------------------------------------ GPTQ

class GptqFormat : public HfQuantFormat {
public:
    explicit GptqFormat(GptqFormatOptions o) : m_opt(o) {}
    std::string name() const override { return "gptq"; }

    std::string intrinsicReason(const HfQuantModule& m) const {
        if (std::string r = commonReason(m); !r.empty()) return r;
        const PackedTensor& p = *m.packed;
        const int b = p.settings.bits;
        if (b != 2 && b != 3 && b != 4 && b != 8)
            return std::to_string(b) + "-bit codes (GPTQ packs 2, 3, 4 or 8 bits)";
        if (p.rows % 32 || p.cols % 32)
            return "shape [out " + std::to_string(p.rows) + ", in " + std::to_string(p.cols) +
                   "] not a multiple of 32 (GPTQ packs codes and zero points in 32-bit words: "
                   "qweight [in / 32 * bits, out], qzeros [groups, out / 32 * bits])";
        if (!m_opt.v2 && !p.settings.symmetric) {
            const Unpacked u = view(m, "GPTQ");
            for (int64_t r = 0; r < u.rows; ++r)
                for (int64_t k = 0; k < u.groups; ++k)
                    if (u.zero(r, k) == 0 && f16ToF32(u.scale(r, k)) != 0.0f)
                        return "zero point 0 (output " + std::to_string(r) + ", group " +
                               std::to_string(k) +
                               ") cannot be stored in GPTQ v1 (zero - 1 would wrap; "
                               "GPTQModel's v1 to v2 conversion then carries into the next "
                               "zero point): write checkpoint_format gptq_v2";
        }
        return {};
    }

    void plan(const std::vector<const HfQuantModule*>& modules) override {
        std::vector<Key> keys;
        for (const HfQuantModule* m : modules)
            if (m && intrinsicReason(*m).empty()) keys.push_back(keyOf(*m->packed));
        m_base = majority(keys);
    }

    std::string cannotExpress(const HfQuantModule& m) const override {
        if (std::string r = intrinsicReason(m); !r.empty()) return r;
        if (!m_opt.dynamic) {
            const Key k = keyOf(*m.packed);
            if (!m_base) m_base = k;
            if (!(k == *m_base))
                return k.describe() + " differs from the checkpoint's " + m_base->describe() +
                       " (a GPTQ config has one bits / group_size / sym; GPTQModel's dynamic "
                       "overrides are switched off)";
        }
        return {};
    }

    /// The module's codes, scales and zero points; throws when the format cannot hold them.
    Unpacked checkedView(const HfQuantModule& m) const {
        if (std::string r = intrinsicReason(m); !r.empty())
            throw ArgumentError("GPTQ export of " + m.module + ": " + r);
        return view(m, "GPTQ");
    }

    std::vector<TensorDesc> describe(const HfQuantModule& m) const override {
        const Unpacked u = checkedView(m);
        const int b = u.bits;
        const int64_t R = u.rows, C = u.cols, G = u.groups;
        return {{m.module + ".qweight", DType::I32, {C * b / 32, R}},
                {m.module + ".qzeros", DType::I32, {G, R * b / 32}},
                {m.module + ".scales", DType::F16, {G, R}},
                {m.module + ".g_idx", DType::I32, {C}}};
    }

    std::vector<HfTensorBlob> encode(const HfQuantModule& m) const override {
        const Unpacked u = checkedView(m);
        const int b = u.bits;
        const int64_t R = u.rows, C = u.cols, G = u.groups;
        // qweight [C * b / 32, R]: column r is the bit stream of its C codes.
        std::vector<uint32_t> qweight(size_t(C * b / 32 * R), 0u);
        // Stored column of input column j (PackedTensor::colOrder: GPTQ act-order groups);
        // qweight is in input-column order, g_idx names each input column's group.
        const std::vector<int32_t>& order = u.p->colOrder;
        std::vector<int64_t> pos(static_cast<size_t>(C));
        for (int64_t k = 0; k < C; ++k) pos[size_t(order.empty() ? k : order[size_t(k)])] = k;
            // omp: nothrow (bit packing; column r writes only its own words)
#pragma omp parallel for schedule(static) if (R * C >= (int64_t(1) << 16))
        for (int64_t r = 0; r < R; ++r)
            for (int64_t j = 0; j < C; ++j)
                putStream(qweight.data() + r, R, uint64_t(j) * uint64_t(b), b,
                          u.code(r, pos[size_t(j)]));
        // qzeros [G, R * b / 32]: row k is the bit stream of the R zero points of group k.
        const int64_t zw = R * b / 32;
        const uint32_t mask = (1u << b) - 1u;
        std::vector<uint32_t> qzeros(size_t(G * zw), 0u);
        std::vector<uint16_t> scales(size_t(G * R));
        for (int64_t k = 0; k < G; ++k)
            for (int64_t r = 0; r < R; ++r) {
                uint32_t z = u.zero(r, k);
                // A group with scale 0 dequantises to 0 whatever its zero point: keep v1
                // from wrapping.
                if (!m_opt.v2 && z == 0) z = 1u << (b - 1);
                const uint32_t stored = m_opt.v2 ? z : (z - 1u) & mask;
                putStream(qzeros.data() + k * zw, 1, uint64_t(r) * uint64_t(b), b, stored);
                scales[size_t(k * R + r)] = u.scale(r, k);
            }
        std::vector<int32_t> gidx(static_cast<size_t>(C));
        for (int64_t j = 0; j < C; ++j) gidx[size_t(j)] = int32_t(pos[size_t(j)] / u.groupLen);
        std::vector<HfTensorBlob> out;
        out.push_back(blob(m.module + ".qweight", DType::I32, {C * b / 32, R}, qweight));
        out.push_back(blob(m.module + ".qzeros", DType::I32, {G, zw}, qzeros));
        out.push_back(blob(m.module + ".scales", DType::F16, {G, R}, scales));
        out.push_back(blob(m.module + ".g_idx", DType::I32, {C}, gidx));
        return out;
    }

    json quantizationConfig(const std::vector<const HfQuantModule*>& written,
                            const std::vector<std::string>& ignored,
                            const std::vector<KvQuantSpec>& kv) const override {
        (void)kv; // GPTQ has no KV-cache quantisation: the writer reports it
        std::vector<Key> keys;
        std::optional<double> damp;
        bool actOrder = false, lmHead = false, reordered = false;
        for (const HfQuantModule* m : written) {
            if (!m || !m->packed) continue;
            keys.push_back(keyOf(*m->packed));
            reordered = reordered || !m->packed->colOrder.empty();
            lmHead = lmHead || isLmHead(*m);
            const auto& w = m->weightJson;
            if (w.is_object() && w.value("method", std::string()) == "gptq") {
                if (!damp) damp = w.value("damp", 0.01);
                actOrder = actOrder || w.value("act_order", false);
            }
        }
        const Key base = m_base ? *m_base : majority(keys).value_or(Key{});
        json c;
        c["quant_method"] = "gptq";
        c["bits"] = base.bits;
        c["group_size"] = base.groupSize;
        // GPTQ's act-order groups (lcw's default for act_order: PackedTensor::colOrder) give a
        // non-trivial g_idx, which kernels honour only with desc_act; static groups and
        // "groups": "updated" keep groups contiguous in the original order (trivial g_idx).
        c["desc_act"] = reordered;
        c["sym"] = base.sym;
        const double d = damp.value_or(0.01);
        if (d > 0 && d < 1) c["damp_percent"] = d;
        // lcw quantises a block's linears on the block's captured inputs (not one after another).
        c["true_sequential"] = false;
        c["static_groups"] = actOrder && !reordered;
        c["checkpoint_format"] = m_opt.v2 ? "gptq_v2" : "gptq";
        c["lm_head"] = lmHead;
        // transformers / optimum replace every linear of the blocks unless
        // modules_in_block_to_quantize lists the ones to keep (matched as name suffixes): list
        // the written modules' names within their block when some block linears stay in
        // floats and no written module shares such a name (otherwise only GPTQModel's
        // dynamic "-:" entries below can tell them apart).
        std::set<std::string> keptRel, floatRel;
        for (const HfQuantModule* m : written)
            if (m && m->packed)
                if (auto r = inBlockName(m->module)) keptRel.insert(*r);
        for (const std::string& name : ignored)
            if (auto r = inBlockName(name)) floatRel.insert(*r);
        const bool clash = std::any_of(floatRel.begin(), floatRel.end(),
                                       [&](const std::string& r) { return keptRel.count(r); });
        if (!floatRel.empty() && !keptRel.empty() && !clash)
            c["modules_in_block_to_quantize"] =
                json::array({json(std::vector<std::string>(keptRel.begin(), keptRel.end()))});
        if (m_opt.dynamic) {
            json dyn = json::object();
            for (const std::string& name : ignored) dyn["-:" + regexLiteral(name)] = json::object();
            for (const HfQuantModule* m : written) {
                if (!m || !m->packed) continue;
                const Key k = keyOf(*m->packed);
                if (k == base) continue;
                json o;
                o["bits"] = k.bits;
                o["group_size"] = k.groupSize;
                o["sym"] = k.sym;
                dyn["+:" + regexLiteral(m->module)] = o;
            }
            if (!dyn.empty()) c["dynamic"] = dyn;
        }
        return c;
    }

    std::vector<std::pair<std::string, std::string>> extraFiles(const json& q) const override {
        // quantize_config.json with AutoGPTQ's BaseQuantizeConfig.to_dict keys (plus
        // GPTQModel's lm_head / dynamic when present).
        json f;
        f["bits"] = q.value("bits", 4);
        f["group_size"] = q.value("group_size", int64_t(128));
        if (q.contains("damp_percent")) f["damp_percent"] = q["damp_percent"];
        f["desc_act"] = q.value("desc_act", false);
        f["static_groups"] = q.value("static_groups", false);
        f["sym"] = q.value("sym", true);
        f["true_sequential"] = q.value("true_sequential", false);
        f["model_name_or_path"] = nullptr;
        f["model_file_base_name"] = "model";
        f["quant_method"] = "gptq";
        f["checkpoint_format"] = q.value("checkpoint_format", std::string("gptq"));
        if (q.contains("lm_head")) f["lm_head"] = q["lm_head"];
        if (q.contains("dynamic")) f["dynamic"] = q["dynamic"];
        return {{"quantize_config.json", f.dump(2) + "\n"}};
    }

private:
    GptqFormatOptions m_opt;
    mutable std::optional<Key> m_base;
};

// ------------------------------------------------------------------------------------------- AWQ

/// Nibble k of a packed word holds output column kAwqOrder[k] of its 8 (AutoAWQ's AWQ_ORDER).
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

class AwqFormat : public HfQuantFormat {
public:
    std::string name() const override { return "awq"; }

    static std::string intrinsicReason(const HfQuantModule& m) {
        if (std::string r = commonReason(m); !r.empty()) return r;
        const PackedTensor& p = *m.packed;
        if (p.settings.bits != 4)
            return std::to_string(p.settings.bits) + "-bit codes (AWQ GEMM packs 4 bits only)";
        if (p.rows % 8)
            return "out = " + std::to_string(p.rows) +
                   " not a multiple of 8 (AWQ packs 8 outputs per 32-bit word)";
        if (!p.colOrder.empty())
            return "GPTQ act-order groups (columns stored in act order) have no place in the "
                   "AWQ format (no g_idx): export as gptq, or quantise with \"static_groups\": "
                   "true or \"groups\": \"updated\"";
        return {};
    }

    static int64_t groupOf(const PackedTensor& p) {
        return p.settings.granularity == compress::Granularity::Group ? p.settings.groupSize : -1;
    }

    void plan(const std::vector<const HfQuantModule*>& modules) override {
        std::vector<Key> keys;
        for (const HfQuantModule* m : modules)
            if (m && intrinsicReason(*m).empty()) keys.push_back({4, groupOf(*m->packed), true});
        if (auto k = majority(keys)) m_group = k->groupSize;
    }

    std::string cannotExpress(const HfQuantModule& m) const override {
        if (std::string r = intrinsicReason(m); !r.empty()) return r;
        const int64_t g = groupOf(*m.packed);
        if (!m_group) m_group = g;
        if (g != *m_group) {
            auto gs = [](int64_t v) {
                return v < 0 ? std::string("channel") : "group_size " + std::to_string(v);
            };
            return gs(g) + " differs from the checkpoint's " + gs(*m_group) +
                   " (an AWQ config has one group_size)";
        }
        return {};
    }

    /// The module's codes, scales and zero points; throws when the format cannot hold them.
    Unpacked checkedView(const HfQuantModule& m) const {
        if (std::string r = intrinsicReason(m); !r.empty())
            throw ArgumentError("AWQ export of " + m.module + ": " + r);
        return view(m, "AWQ");
    }

    std::vector<TensorDesc> describe(const HfQuantModule& m) const override {
        const Unpacked u = checkedView(m);
        const int64_t R = u.rows, C = u.cols, G = u.groups, W = R / 8;
        return {{m.module + ".qweight", DType::I32, {C, W}},
                {m.module + ".qzeros", DType::I32, {G, W}},
                {m.module + ".scales", DType::F16, {G, R}}};
    }

    std::vector<HfTensorBlob> encode(const HfQuantModule& m) const override {
        const Unpacked u = checkedView(m);
        const int64_t R = u.rows, C = u.cols, G = u.groups, W = R / 8;
        int slot[8]; // output r % 8 -> nibble
        for (int k = 0; k < 8; ++k) slot[kAwqOrder[k]] = k;
        std::vector<uint32_t> qweight(size_t(C * W), 0u), qzeros(size_t(G * W), 0u);
        std::vector<uint16_t> scales(size_t(G * R));
        // omp: nothrow (bit packing; input j writes only its own row of words)
#pragma omp parallel for schedule(static) if (R * C >= (int64_t(1) << 16))
        for (int64_t j = 0; j < C; ++j)
            for (int64_t r = 0; r < R; ++r)
                qweight[size_t(j * W + r / 8)] |= u.code(r, j) << unsigned(4 * slot[r % 8]);
        for (int64_t r = 0; r < R; ++r) {
            const unsigned sh = unsigned(4 * slot[r % 8]);
            for (int64_t k = 0; k < G; ++k) {
                qzeros[size_t(k * W + r / 8)] |= (u.zero(r, k) & 15u) << sh;
                scales[size_t(k * R + r)] = u.scale(r, k);
            }
        }
        std::vector<HfTensorBlob> out;
        out.push_back(blob(m.module + ".qweight", DType::I32, {C, W}, qweight));
        out.push_back(blob(m.module + ".qzeros", DType::I32, {G, W}, qzeros));
        out.push_back(blob(m.module + ".scales", DType::F16, {G, R}, scales));
        return out;
    }

    json quantizationConfig(const std::vector<const HfQuantModule*>& written,
                            const std::vector<std::string>& ignored,
                            const std::vector<KvQuantSpec>& kv) const override {
        (void)kv; // AWQ has no KV-cache quantisation: the writer reports it
        int64_t g = m_group.value_or(128);
        if (!m_group)
            for (const HfQuantModule* m : written)
                if (m && m->packed) {
                    g = groupOf(*m->packed);
                    break;
                }
        // AutoAWQ's AwqConfig.to_transformers_dict (awq/models/_config.py).
        json c;
        c["quant_method"] = "awq";
        c["zero_point"] = true;
        c["group_size"] = g;
        c["bits"] = 4;
        c["version"] = "gemm";
        if (ignored.empty())
            c["modules_to_not_convert"] = nullptr;
        else
            c["modules_to_not_convert"] = ignored;
        return c;
    }

private:
    mutable std::optional<int64_t> m_group;
};

} // namespace

std::unique_ptr<HfQuantFormat> gptqFormat(GptqFormatOptions o) {
    return std::make_unique<GptqFormat>(o);
}

std::unique_ptr<HfQuantFormat> awqFormat() {
    return std::make_unique<AwqFormat>();
}

} // namespace lcw
