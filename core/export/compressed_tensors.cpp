// The compressed-tensors format (see compressed_tensors.h for the layout and its sources).
#include "core/export/compressed_tensors.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

namespace lcw {

namespace {

using compress::Granularity;
using compress::PackedTensor;
using compress::SparsityPattern;
using compress::WeightFormat;
using compress::WeightSettings;
using json = nlohmann::ordered_json;

constexpr const char* kPackQuantized = "pack-quantized";
constexpr const char* kNaiveQuantized = "naive-quantized";
constexpr const char* kIntQuantized = "int-quantized";
constexpr const char* kFloatQuantized = "float-quantized";

int codeBitsOf(const WeightSettings& s) {
    return s.format == WeightFormat::Fp8E4M3 ? 8 : s.bits;
}

uint32_t getBits(const uint8_t* row, int64_t j, int bits) {
    const uint64_t bit = uint64_t(j) * uint64_t(bits);
    uint32_t u = 0;
    for (int b = 0; b < bits; ++b) u |= uint32_t(row[(bit + b) >> 3] >> ((bit + b) & 7) & 1u) << b;
    return u;
}

/// Groups per row as compressed-tensors shapes the scale: tensor 0 (scale [1]), channel 1,
/// group ceil(in / g).
int64_t groupsPerRow(const WeightSettings& s, int64_t cols) {
    switch (s.granularity) {
    case Granularity::Tensor:
        return 0;
    case Granularity::Channel:
        return 1;
    case Granularity::Group:
        return (cols + s.groupSize - 1) / s.groupSize;
    }
    return 0;
}

/// compressed-tensors' own choice (config/format.py _get_quant_compression_format).
std::string quantFormatOf(const HfQuantModule& m) {
    const WeightSettings& s = m.packed->settings;
    const bool weightOnly = !m.activation.active();
    if (s.format == WeightFormat::Fp8E4M3) return weightOnly ? kNaiveQuantized : kFloatQuantized;
    if (weightOnly) return s.bits == 4 || s.bits == 8 ? kPackQuantized : kNaiveQuantized;
    return kIntQuantized;
}

bool isTwoFour(const HfQuantModule& m) {
    return m.sparsity && m.sparsity->pattern == SparsityPattern::NM && m.sparsity->n == 2 &&
           m.sparsity->m == 4 && m.cols % 4 == 0 && m.maskTwoFour;
}

/// The weight goes through the sparse compressor: float values, or I8 / F8_E4M3 codes whose
/// zero point is 0 (the compressor's zeros must decode to 0).
bool sparseCompressed(const HfQuantModule& m) {
    if (!m.sparsity) return false;
    if (!m.packed) return true;
    const WeightSettings& s = m.packed->settings;
    return quantFormatOf(m) != kPackQuantized && (s.format == WeightFormat::Fp8E4M3 || s.symmetric);
}

/// compressed-tensors' actorder of a GPTQ weight: "group" when the groups follow the act order
/// (PackedTensor::colOrder, written as weight_g_idx), "weight" when act_order kept the groups
/// contiguous (static_groups, "groups": "updated"), null otherwise.
json actorderOf(const HfQuantModule& m) {
    const WeightSettings& s = m.packed->settings;
    if (!m.packed->colOrder.empty()) return "group";
    if (s.granularity != Granularity::Group || s.method != compress::WeightMethod::Gptq)
        return nullptr;
    const auto it = m.weightJson.find("act_order");
    const bool ao = it != m.weightJson.end() && it->is_boolean() && it->get<bool>();
    return ao ? json("weight") : json(nullptr);
}

json weightArgs(const HfQuantModule& m) {
    const WeightSettings& s = m.packed->settings;
    json a;
    const bool fp8 = s.format == WeightFormat::Fp8E4M3;
    a["num_bits"] = codeBitsOf(s);
    a["type"] = fp8 ? "float" : "int";
    a["symmetric"] = fp8 || s.symmetric;
    a["group_size"] = s.granularity == Granularity::Group ? json(s.groupSize) : json(nullptr);
    a["strategy"] = s.granularity == Granularity::Tensor    ? "tensor"
                    : s.granularity == Granularity::Channel ? "channel"
                                                            : "group";
    a["block_structure"] = nullptr;
    a["dynamic"] = false;
    a["actorder"] = actorderOf(m);
    a["observer"] = "minmax";
    a["observer_kwargs"] = json::object();
    return a;
}

json inputArgs(const ActQuantSpec& act) {
    json a;
    a["num_bits"] = act.bits;
    a["type"] = "int";
    a["symmetric"] = true;
    a["group_size"] = nullptr;
    a["strategy"] = act.perToken ? "token" : "tensor";
    a["block_structure"] = nullptr;
    a["dynamic"] = act.perToken;
    a["actorder"] = nullptr;
    a["observer"] = act.perToken ? json(nullptr) : json("minmax");
    a["observer_kwargs"] = json::object();
    return a;
}

HfTensorBlob makeBlob(const std::string& name, DType dt, std::vector<int64_t> shape) {
    HfTensorBlob b;
    b.name = name;
    b.dtype = dt;
    b.shape = std::move(shape);
    int64_t n = 1;
    for (int64_t d : b.shape) n *= d;
    b.data.resize(size_t(n) * size_t(dtypeBlockBytes(dt)));
    return b;
}

template <typename T> void put(HfTensorBlob& b, size_t i, T v) {
    std::memcpy(b.data.data() + i * sizeof(T), &v, sizeof(T));
}

/// The sparse compressor's tensors for a dense [rows, cols] weight of `elem`-byte values:
/// sparse-24-bitmask (compressed [rows, cols / 2], bitmask, shape I64 [2, 1]) or sparse-bitmask
/// (compressed [kept], bitmask, shape I64 [2], row_offsets I64 [rows]). The bitmask is
/// numpy.packbits(mask, axis=-1, bitorder="little"): U8 [rows, ceil(cols / 8)].
void sparseBlobs(std::vector<HfTensorBlob>& out, const HfQuantModule& m, const std::byte* values,
                 size_t elem, DType dt) {
    const int64_t rows = m.rows, cols = m.cols;
    const std::vector<uint8_t>& mask = *m.mask;
    const bool two4 = isTwoFour(m);
    int64_t kept = 0;
    for (uint8_t k : mask) kept += k != 0;
    HfTensorBlob comp =
        makeBlob(m.module + ".compressed", dt,
                 two4 ? std::vector<int64_t>{rows, cols / 2} : std::vector<int64_t>{kept});
    const int64_t mb = (cols + 7) / 8;
    HfTensorBlob bits = makeBlob(m.module + ".bitmask", DType::U8, {rows, mb});
    HfTensorBlob offs = makeBlob(m.module + ".row_offsets", DType::I64, {rows});
    size_t w = 0;
    for (int64_t r = 0; r < rows; ++r) {
        put<int64_t>(offs, size_t(r), int64_t(w));
        for (int64_t j = 0; j < cols; ++j) {
            const size_t i = size_t(r * cols + j);
            if (!mask[i]) continue;
            std::memcpy(comp.data.data() + w * elem, values + i * elem, elem);
            ++w;
            bits.data[size_t(r * mb + j / 8)] |= std::byte(uint8_t(1u << (j % 8)));
        }
    }
    HfTensorBlob shape = makeBlob(m.module + ".shape", DType::I64,
                                  two4 ? std::vector<int64_t>{2, 1} : std::vector<int64_t>{2});
    put<int64_t>(shape, 0, rows);
    put<int64_t>(shape, 1, cols);
    out.push_back(std::move(shape));
    out.push_back(std::move(comp));
    out.push_back(std::move(bits));
    if (!two4) out.push_back(std::move(offs));
}

/// The descriptors of sparseBlobs(), in its order.
void sparseDescs(std::vector<TensorDesc>& out, const HfQuantModule& m, DType dt) {
    const int64_t rows = m.rows, cols = m.cols;
    const bool two4 = isTwoFour(m);
    int64_t kept = 0;
    for (uint8_t k : *m.mask) kept += k != 0;
    out.push_back({m.module + ".shape", DType::I64,
                   two4 ? std::vector<int64_t>{2, 1} : std::vector<int64_t>{2}});
    out.push_back({m.module + ".compressed", dt,
                   two4 ? std::vector<int64_t>{rows, cols / 2} : std::vector<int64_t>{kept}});
    out.push_back({m.module + ".bitmask", DType::U8, {rows, (cols + 7) / 8}});
    if (!two4) out.push_back({m.module + ".row_offsets", DType::I64, {rows}});
}

/// How a packed module's codes, scales and zero points are laid out in compressed-tensors.
struct PackedLayout {
    bool fp8 = false, asym = false;
    int bits = 0;
    int32_t off = 0; ///< compressed-tensors' code offset 2^(b-1) (0 for fp8)
    int64_t gpr = 0; ///< groups per row (0: one tensor scale)
    int64_t gl = 0;  ///< columns per group
    std::string fmt; ///< quantFormatOf()
    std::vector<int64_t> scaleShape;
    std::vector<int64_t> pos; ///< stored column of input column j (PackedTensor::colOrder)
    uint64_t rowBytes = 0;    ///< packed code bytes of a row

    int64_t packFactor() const { return 32 / bits; }
    int64_t packedCols() const { return (int64_t(pos.size()) + packFactor() - 1) / packFactor(); }
    int64_t packedRows(int64_t rows) const { return (rows + packFactor() - 1) / packFactor(); }
    DType codeType() const { return fp8 ? DType::F8_E4M3 : DType::I8; }
    size_t groupOf(int64_t r, int64_t j) const {
        return gpr == 0 ? 0 : size_t(r * gpr + pos[size_t(j)] / gl);
    }
};

PackedLayout layoutOf(const HfQuantModule& m) {
    const PackedTensor& p = *m.packed;
    const WeightSettings& s = p.settings;
    PackedLayout L;
    L.fp8 = s.format == WeightFormat::Fp8E4M3;
    L.asym = !L.fp8 && !s.symmetric;
    L.bits = codeBitsOf(s);
    L.off = L.fp8 ? 0 : 1 << (L.bits - 1);
    L.gpr = groupsPerRow(s, m.cols);
    L.gl = s.granularity == Granularity::Group ? s.groupSize : m.cols;
    L.fmt = quantFormatOf(m);
    L.rowBytes = compress::packedCodeBytes(1, m.cols, s);
    L.scaleShape = L.gpr == 0 ? std::vector<int64_t>{1} : std::vector<int64_t>{m.rows, L.gpr};
    // GPTQ act-order groups are written in input-column order with weight_g_idx.
    L.pos.resize(size_t(m.cols));
    for (int64_t k = 0; k < m.cols; ++k)
        L.pos[size_t(p.colOrder.empty() ? k : p.colOrder[size_t(k)])] = k;
    return L;
}

/// Unsigned code u of weight (r, j) (compressed-tensors' q + 2^(b-1)); pruned weights get the
/// zero point.
uint32_t codeAt(const HfQuantModule& m, const PackedLayout& L, int64_t r, int64_t j) {
    const PackedTensor& p = *m.packed;
    if (m.mask && !(*m.mask)[size_t(r * m.cols + j)]) {
        if (L.fp8) return 0;
        return L.asym ? uint32_t(f16ToF32(p.zeros[L.groupOf(r, j)])) : uint32_t(L.off);
    }
    return getBits(p.codes.data() + uint64_t(r) * L.rowBytes, L.pos[size_t(j)], L.bits);
}

HfTensorBlob gIdxBlob(const HfQuantModule& m, const PackedLayout& L) {
    HfTensorBlob gidx = makeBlob(m.module + ".weight_g_idx", DType::I32, {m.cols});
    for (int64_t j = 0; j < m.cols; ++j)
        put<int32_t>(gidx, size_t(j), int32_t(L.pos[size_t(j)] / L.gl));
    return gidx;
}

/// pack-quantized: the codes of a row packed LSB-first into int32 words.
HfTensorBlob packedWeightBlob(const HfQuantModule& m, const PackedLayout& L) {
    const int64_t pf = L.packFactor(), pc = L.packedCols();
    HfTensorBlob packed = makeBlob(m.module + ".weight_packed", DType::I32, {m.rows, pc});
    for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t k = 0; k < pc; ++k) {
            uint32_t word = 0;
            for (int64_t i = 0; i < pf && k * pf + i < m.cols; ++i)
                word |= codeAt(m, L, r, k * pf + i) << (L.bits * i);
            put<uint32_t>(packed, size_t(r * pc + k), word);
        }
    return packed;
}

/// pack-quantized zero points: one I8 for a tensor scale, else pack_to_int32(zero_point, bits,
/// packed_dim=0), along the output rows.
HfTensorBlob packedZeroPointBlob(const HfQuantModule& m, const PackedLayout& L) {
    const std::vector<uint16_t>& zeros = m.packed->zeros;
    if (L.gpr == 0) {
        HfTensorBlob zp = makeBlob(m.module + ".weight_zero_point", DType::I8, {1});
        put<int8_t>(zp, 0, int8_t(int32_t(f16ToF32(zeros[0])) - L.off));
        return zp;
    }
    const int64_t pf = L.packFactor(), pr = L.packedRows(m.rows), gpr = L.gpr;
    HfTensorBlob zp = makeBlob(m.module + ".weight_zero_point", DType::I32, {pr, gpr});
    for (int64_t k = 0; k < pr; ++k)
        for (int64_t g = 0; g < gpr; ++g) {
            uint32_t word = 0;
            for (int64_t i = 0; i < pf && k * pf + i < m.rows; ++i)
                word |= uint32_t(f16ToF32(zeros[size_t((k * pf + i) * gpr + g)])) << (L.bits * i);
            put<uint32_t>(zp, size_t(k * gpr + g), word);
        }
    return zp;
}

/// naive / int / float-quantized: a byte per code (signed int8 or fp8), dense or sparse.
void byteCodeBlobs(std::vector<HfTensorBlob>& out, const HfQuantModule& m, const PackedLayout& L) {
    const int64_t rows = m.rows, cols = m.cols;
    std::vector<std::byte> w(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
            const uint32_t u = codeAt(m, L, r, j);
            w[size_t(r * cols + j)] =
                L.fp8 ? std::byte(uint8_t(u)) : std::byte(uint8_t(int8_t(int32_t(u) - L.off)));
        }
    if (sparseCompressed(m)) {
        sparseBlobs(out, m, w.data(), 1, L.codeType());
        return;
    }
    HfTensorBlob wb = makeBlob(m.module + ".weight", L.codeType(), {rows, cols});
    wb.data = std::move(w);
    out.push_back(std::move(wb));
}

class CompressedTensorsFormat final : public HfQuantFormat {
public:
    std::string name() const override { return "compressed-tensors"; }

    std::string cannotExpress(const HfQuantModule& m) const override {
        if (!m.packed) {
            if (!m.values || !m.mask || !m.sparsity) return "neither quantised nor pruned";
            return {};
        }
        const PackedTensor& p = *m.packed;
        const WeightSettings& s = p.settings;
        if (compress::methodIsGguf(s.method) || s.ggufGrid)
            return std::string("GGUF block type ") + compress::weightMethodName(s.method) +
                   " (ggml blocks have no compressed-tensors form)";
        if (s.format == WeightFormat::Nf4) return "NF4 codes (compressed-tensors has no NF4 type)";
        if (compress::methodIsCompact(s.method))
            return std::string(compress::weightMethodName(s.method)) +
                   " codes (compressed-tensors has no code-book, dual-grain or mixed-bit type)";
        if (s.format == WeightFormat::Int && (s.bits < 2 || s.bits > 8))
            return std::to_string(s.bits) +
                   "-bit integer codes (compressed-tensors stores at most 8)";
        if (!p.outlierCols.empty())
            return "outlier weight columns kept in 16 bits (no compressed-tensors form)";
        if (s.granularity == Granularity::Group && m.cols % s.groupSize != 0 &&
            m.cols > s.groupSize)
            return "group size " + std::to_string(s.groupSize) + " does not divide the " +
                   std::to_string(m.cols) +
                   " input columns (compressed-tensors infers the group size as columns / groups)";
        if (s.format == WeightFormat::Int && !s.symmetric)
            for (uint16_t z : p.zeros) {
                const float f = f16ToF32(z);
                if (f != std::floor(f) || f < 0 || f > float((1 << s.bits) - 1))
                    return "asymmetric zero point " + std::to_string(f) +
                           " is not an integer code (compressed-tensors stores integer zero "
                           "points)";
            }
        if (m.activation.active()) {
            if (!m.activation.outlierChannels.empty())
                return "activation outlier channels (LLM.int8() style) have no compressed-tensors "
                       "form";
            if (m.activation.groupSize > 0)
                return "per-token activation groups of " + std::to_string(m.activation.groupSize) +
                       " channels (Atom) are not written to compressed-tensors";
            if (m.activation.perToken && m.activation.clip != 1.0f)
                return "per-token activation clip " + std::to_string(m.activation.clip) +
                       " (compressed-tensors' dynamic token scale is the full abs-max)";
        }
        return {};
    }

    /// Throws when `m` cannot be written (cannotExpress()) or its packed data does not fit it.
    void checkEncodable(const HfQuantModule& m) const {
        const std::string why = cannotExpress(m);
        if (!why.empty())
            throw ArgumentError(m.module + ": cannot be written as compressed-tensors: " + why);
        if (!m.packed) return;
        const PackedTensor& p = *m.packed;
        if (p.rows != m.rows || p.cols != m.cols)
            throw ArgumentError(m.module + ": packed shape does not match the module's");
        const bool asym = p.settings.format != WeightFormat::Fp8E4M3 && !p.settings.symmetric;
        const int64_t gpr = groupsPerRow(p.settings, m.cols);
        const size_t nGroups = gpr == 0 ? 1 : size_t(m.rows * gpr);
        if (p.scales.size() != nGroups || (asym && p.zeros.size() != nGroups))
            throw ArgumentError(m.module + ": packed scales do not fit the settings");
    }

    std::vector<TensorDesc> describe(const HfQuantModule& m) const override {
        checkEncodable(m);
        std::vector<TensorDesc> out;
        if (!m.packed) {
            sparseDescs(out, m, DType::F32);
            return out;
        }
        const PackedLayout L = layoutOf(m);
        const int64_t rows = m.rows, cols = m.cols;
        if (!m.packed->colOrder.empty())
            out.push_back({m.module + ".weight_g_idx", DType::I32, {cols}});
        const TensorDesc scale{m.module + ".weight_scale", DType::F16, L.scaleShape};
        if (L.fmt == kPackQuantized) {
            out.push_back({m.module + ".weight_packed", DType::I32, {rows, L.packedCols()}});
            out.push_back(scale);
            out.push_back({m.module + ".weight_shape", DType::I64, {2}});
            if (L.asym)
                out.push_back(L.gpr == 0
                                  ? TensorDesc{m.module + ".weight_zero_point", DType::I8, {1}}
                                  : TensorDesc{m.module + ".weight_zero_point",
                                               DType::I32,
                                               {L.packedRows(rows), L.gpr}});
        } else {
            if (sparseCompressed(m))
                sparseDescs(out, m, L.codeType());
            else
                out.push_back({m.module + ".weight", L.codeType(), {rows, cols}});
            out.push_back(scale);
            if (L.asym) out.push_back({m.module + ".weight_zero_point", DType::I8, L.scaleShape});
        }
        if (m.activation.active() && !m.activation.perToken)
            out.push_back({m.module + ".input_scale", DType::F32, {1}});
        return out;
    }

    std::vector<HfTensorBlob> encode(const HfQuantModule& m) const override {
        checkEncodable(m);
        std::vector<HfTensorBlob> out;
        if (!m.packed) {
            sparseBlobs(out, m, reinterpret_cast<const std::byte*>(m.values->data()), 4,
                        DType::F32);
            return out;
        }
        const PackedLayout L = layoutOf(m);
        if (!m.packed->colOrder.empty()) out.push_back(gIdxBlob(m, L));
        HfTensorBlob scale = makeBlob(m.module + ".weight_scale", DType::F16, L.scaleShape);
        std::memcpy(scale.data.data(), m.packed->scales.data(), m.packed->scales.size() * 2);
        if (L.fmt == kPackQuantized) {
            out.push_back(packedWeightBlob(m, L));
            out.push_back(std::move(scale));
            HfTensorBlob shape = makeBlob(m.module + ".weight_shape", DType::I64, {2});
            put<int64_t>(shape, 0, m.rows);
            put<int64_t>(shape, 1, m.cols);
            out.push_back(std::move(shape));
            if (L.asym) out.push_back(packedZeroPointBlob(m, L));
        } else {
            byteCodeBlobs(out, m, L);
            out.push_back(std::move(scale));
            if (L.asym) {
                HfTensorBlob zp =
                    makeBlob(m.module + ".weight_zero_point", DType::I8, L.scaleShape);
                for (size_t g = 0; g < m.packed->zeros.size(); ++g)
                    put<int8_t>(zp, g, int8_t(int32_t(f16ToF32(m.packed->zeros[g])) - L.off));
                out.push_back(std::move(zp));
            }
        }
        if (m.activation.active() && !m.activation.perToken) {
            // Static per-tensor input scale, as the runtime computes it (runtime_quant.h).
            const float qmax = float((1 << (m.activation.bits - 1)) - 1);
            HfTensorBlob is = makeBlob(m.module + ".input_scale", DType::F32, {1});
            put<float>(is, 0, m.activation.clip * m.activation.absMax / qmax);
            out.push_back(std::move(is));
        }
        return out;
    }

    json quantizationConfig(const std::vector<const HfQuantModule*>& written,
                            const std::vector<std::string>& ignored,
                            const std::vector<KvQuantSpec>& kv) const override {
        (void)kv; // lcw's KV cache (dynamic asymmetric groups) has no kv_cache_scheme
        // One config group per distinct (weights, input_activations, format).
        std::vector<std::pair<json, std::vector<std::string>>> groups;
        std::map<std::string, size_t> groupIndex;
        std::vector<std::string> formats;
        std::vector<std::string> sparseTargets, denseSparseTargets;
        int sparse24 = 0, sparseOther = 0, allTwoFour = 1;
        int64_t zeros = 0, total = 0;
        for (const HfQuantModule* m : written) {
            if (m->sparsity) {
                zeros += m->maskZeros;
                total += m->rows * m->cols;
                const bool t4 = isTwoFour(*m);
                allTwoFour &= int(t4);
                if (sparseCompressed(*m)) {
                    sparseTargets.push_back(m->module);
                    (t4 ? sparse24 : sparseOther)++;
                } else {
                    denseSparseTargets.push_back(m->module);
                }
            }
            if (!m->packed) continue;
            json scheme;
            scheme["weights"] = weightArgs(*m);
            scheme["input_activations"] =
                m->activation.active() ? inputArgs(m->activation) : json(nullptr);
            scheme["output_activations"] = nullptr;
            const std::string fmt = quantFormatOf(*m);
            scheme["format"] = fmt;
            if (std::find(formats.begin(), formats.end(), fmt) == formats.end())
                formats.push_back(fmt);
            const std::string key = scheme.dump();
            auto it = groupIndex.find(key);
            if (it == groupIndex.end()) {
                it = groupIndex.emplace(key, groups.size()).first;
                groups.emplace_back(scheme, std::vector<std::string>{});
            }
            groups[it->second].second.push_back(m->module);
        }
        if (sparse24 > 0 && sparseOther > 0)
            throw UnsupportedError(
                "compressed-tensors: the configuration mixes 2:4 and other sparsity patterns; a "
                "checkpoint has one sparsity format (sparse-24-bitmask or sparse-bitmask)");
        json qc;
        qc["version"] = kCompressedTensorsVersion;
        qc["quant_method"] = "compressed-tensors";
        json sc = json::object();
        if (total > 0) {
            const bool compressed = !sparseTargets.empty();
            sc["format"] = !compressed    ? "dense"
                           : sparse24 > 0 ? "sparse-24-bitmask"
                                          : "sparse-bitmask";
            sc["targets"] = compressed ? sparseTargets : denseSparseTargets;
            sc["ignore"] = json::array();
            sc["global_sparsity"] = double(zeros) / double(total);
            sc["sparsity_structure"] = allTwoFour ? "2:4" : "unstructured";
        }
        qc["sparsity_config"] = sc;
        qc["transform_config"] = json::object();
        if (groups.empty()) return qc;
        json cg = json::object();
        for (size_t i = 0; i < groups.size(); ++i) {
            json g;
            g["targets"] = groups[i].second;
            for (auto& [k, v] : groups[i].first.items()) g[k] = v;
            cg["group_" + std::to_string(i)] = g;
        }
        qc["config_groups"] = cg;
        qc["kv_cache_scheme"] = nullptr;
        qc["format"] = formats.size() == 1 ? formats[0] : std::string("mixed-precision");
        qc["quantization_status"] = "compressed";
        qc["global_compression_ratio"] = nullptr;
        qc["ignore"] = ignored;
        return qc;
    }
};

} // namespace

std::unique_ptr<HfQuantFormat> compressedTensorsFormat() {
    return std::make_unique<CompressedTensorsFormat>();
}

} // namespace lcw
