#pragma once
// Quantised Hugging Face checkpoints built in the tests from a small float model, with packers
// written independently from the formats' own definitions (not from lcw's loader):
//  * compressed-tensors: neuralmagic/compressed-tensors
//      src/compressed_tensors/compressors/quantized_compressors/pack_quantized.py
//        (pack_to_int32: q + 2^(b-1) as unsigned, 32/b values per int32 LSB first; zero points
//        packed along dim 0), naive_quantized.py (int8 / float8 "weight"),
//      src/compressed_tensors/compressors/sparse_compressors/sparse_24_bitmask.py and
//      utils/helpers.py pack_bitmasks (numpy.packbits bitorder little),
//      src/compressed_tensors/quantization/lifecycle/forward.py (_dequantize: (q - zp) * scale;
//        g_idx picks each column's group).
//  * GPTQ: AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py QuantLinear.pack (the
//    2/4/8-bit and the 3-bit word loops, qzeros stored as zero - 1) and qlinear_cuda.py (g_idx);
//    GPTQModel gptqmodel/utils/model.py (checkpoint_format gptq_v2 stores the zero itself).
//  * AWQ: AutoAWQ awq/modules/linear/gemm.py WQLinear_GEMM.from_linear (order_map
//    [0, 2, 4, 6, 1, 3, 5, 7], qweight [in, out/8], qzeros [in/g, out/8]).
#include "core/common/dtype.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_names.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace hfq {

using json = nlohmann::ordered_json;

inline const char* kBase = "models/tiny-random/llama2_sp_f32/model";

/// float8 e4m3fn decode written from the format (bias 7, 3 mantissa bits, 0x7f/0xff NaN).
inline float e4m3(uint8_t v) {
    const int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    float x;
    if (e == 0 && m == 0)
        x = 0.0f;
    else if (e == 15 && m == 7)
        x = NAN;
    else if (e == 0)
        x = std::ldexp(float(m) / 8.0f, -6);
    else
        x = std::ldexp(1.0f + float(m) / 8.0f, e - 7);
    return s ? -x : x;
}
/// Nearest e4m3 byte by search (slow but obviously right; values are small here).
inline uint8_t toE4m3(float x) {
    uint8_t best = 0;
    float bd = INFINITY;
    for (int b = 0; b < 256; ++b) {
        const float v = e4m3(uint8_t(b));
        if (std::isnan(v)) continue;
        const float d = std::fabs(v - x);
        if (d < bd) {
            bd = d;
            best = uint8_t(b);
        }
    }
    return best;
}

template <class T> std::vector<std::byte> bytesOf(const std::vector<T>& v) {
    std::vector<std::byte> b(v.size() * sizeof(T));
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

struct Tensor {
    std::string name;
    lcw::DType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> data;
};

/// A float linear weight from the base model.
struct Linear {
    std::string module; ///< "model.layers.0.self_attn.q_proj"
    int64_t rows = 0, cols = 0;
    std::vector<float> w; ///< empty when the tensor is no longer float (replaced by codes)
};

/// The base folder's tensors; quantise() replaces the linears it is given.
struct Fixture {
    std::string baseDir, dir;
    std::vector<Tensor> tensors;
    /// Expected dequantised values by HF weight name.
    std::map<std::string, std::vector<float>> expected;

    Fixture(const std::string& base, const std::string& out) : baseDir(base), dir(out) {
        lcw::SafetensorsSet st = lcw::readSafetensors(base + "/model.safetensors");
        for (const auto& t : st.tensors) {
            Tensor x{t.name, t.dtype, t.shape, std::vector<std::byte>(t.nbytes)};
            std::memcpy(x.data.data(), t.data, t.nbytes);
            tensors.push_back(std::move(x));
        }
    }

    /// The block linears (q k v o gate up down of every layer), in file order.
    std::vector<Linear> linears() const {
        std::vector<Linear> out;
        for (const auto& t : tensors) {
            const std::string& n = t.name;
            if (n.find("model.layers.") != 0 || n.size() < 7 ||
                n.compare(n.size() - 7, 7, ".weight") != 0 || t.shape.size() != 2)
                continue;
            Linear l;
            l.module = n.substr(0, n.size() - 7);
            l.rows = t.shape[0];
            l.cols = t.shape[1];
            if (t.dtype == lcw::DType::F32) { // a linear already replaced by codes: shape only
                l.w.resize(size_t(l.rows * l.cols));
                std::memcpy(l.w.data(), t.data.data(), l.w.size() * 4);
            }
            out.push_back(std::move(l));
        }
        return out;
    }

    /// Replaces "<module>.weight" by `parts` (at the weight's place) and records the expectation.
    void replace(const std::string& module, std::vector<Tensor> parts, std::vector<float> expect) {
        const std::string wn = module + ".weight";
        auto it = std::find_if(tensors.begin(), tensors.end(),
                               [&](const Tensor& t) { return t.name == wn; });
        if (it == tensors.end()) throw std::runtime_error("no tensor " + wn);
        it = tensors.erase(it);
        tensors.insert(it, parts.begin(), parts.end());
        expected[wn] = std::move(expect);
    }

    void removeTensor(const std::string& name) {
        tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                     [&](const Tensor& t) { return t.name == name; }),
                      tensors.end());
    }
    Tensor* find(const std::string& name) {
        for (auto& t : tensors)
            if (t.name == name) return &t;
        return nullptr;
    }

    /// Writes config.json (the base's plus `qcfg` as quantization_config unless null),
    /// tokenizer.json and model.safetensors.
    void write(const json& qcfg, const std::string& configKey = "quantization_config") const {
        namespace fs = std::filesystem;
        fs::create_directories(dir);
        std::ifstream in(baseDir + "/config.json");
        json cfg = json::parse(in);
        if (!qcfg.is_null()) cfg[configKey] = qcfg;
        std::ofstream(dir + "/config.json") << cfg.dump(2);
        fs::copy_file(baseDir + "/tokenizer.json", dir + "/tokenizer.json",
                      fs::copy_options::overwrite_existing);
        std::vector<lcw::TensorDesc> descs;
        for (const auto& t : tensors) descs.push_back({t.name, t.dtype, t.shape});
        lcw::writeSafetensors(dir + "/model.safetensors", descs,
                              [&](size_t i, std::byte* dst, uint64_t n) {
                                  std::memcpy(dst, tensors[i].data.data(), size_t(n));
                              });
    }
};

// ------------------------------------------------------------------------------ RTN (test's own)

/// Asymmetric min/max RTN of one group: scale (rounded through `roundScale`, the stored dtype),
/// zero and codes in [0, 2^b - 1].
struct Rtn {
    float scale = 1;
    int zero = 0;
};
inline Rtn rtnAsym(const float* x, int64_t n, int bits, const std::function<float(float)>& rs) {
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
    }
    const int maxq = (1 << bits) - 1;
    Rtn r;
    r.scale = rs(std::max((hi - lo) / float(maxq), 1e-6f));
    r.zero = std::clamp(int(std::lround(-lo / r.scale)), 0, maxq);
    return r;
}
inline int codeAsym(float x, const Rtn& r, int bits) {
    return std::clamp(int(std::lround(x / r.scale)) + r.zero, 0, (1 << bits) - 1);
}
inline float toF16(float x) {
    return lcw::f16ToF32(lcw::f32ToF16(x));
}
inline float toBf16(float x) {
    return lcw::bf16ToF32(lcw::f32ToBf16(x));
}
inline std::vector<std::byte> f16Bytes(const std::vector<float>& v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = lcw::f32ToF16(v[i]);
    return bytesOf(h);
}
inline std::vector<std::byte> bf16Bytes(const std::vector<float>& v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = lcw::f32ToBf16(v[i]);
    return bytesOf(h);
}

// --------------------------------------------------------------------------- compressed-tensors

/// pack_to_int32 along dim 1 of unsigned values [rows, cols] (already offset by 2^(b-1)).
inline std::vector<int32_t> ctPackRows(const std::vector<int>& u, int64_t rows, int64_t cols,
                                       int bits) {
    const int64_t pf = 32 / bits, wc = (cols + pf - 1) / pf;
    std::vector<uint32_t> p(size_t(rows * wc), 0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            p[size_t(r * wc + c / pf)] |= uint32_t(u[size_t(r * cols + c)]) << (bits * (c % pf));
    return std::vector<int32_t>(p.begin(), p.end());
}
/// pack_to_int32 with packed_dim=0: [rows, cols] → [ceil(rows/pf), cols].
inline std::vector<int32_t> ctPackDim0(const std::vector<int>& u, int64_t rows, int64_t cols,
                                       int bits) {
    const int64_t pf = 32 / bits, wr = (rows + pf - 1) / pf;
    std::vector<uint32_t> p(size_t(wr * cols), 0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            p[size_t((r / pf) * cols + c)] |= uint32_t(u[size_t(r * cols + c)])
                                              << (bits * (r % pf));
    return std::vector<int32_t>(p.begin(), p.end());
}

/// pack-quantized, int `bits`, group `g`: asymmetric (packed zero points) or symmetric, with
/// an optional g_idx (column → group; groups of g columns each, in permuted order).
inline void ctPackQuantized(Fixture& f, const Linear& l, int bits, int64_t g, bool asym,
                            const std::vector<int32_t>* gidx = nullptr) {
    const int64_t groups = (l.cols + g - 1) / g;
    std::vector<float> scale(static_cast<size_t>(l.rows * groups));
    std::vector<int> zp(size_t(l.rows * groups), 0); // signed
    std::vector<int> u(static_cast<size_t>(l.rows * l.cols));
    std::vector<float> expect(u.size());
    const int off = 1 << (bits - 1);
    for (int64_t r = 0; r < l.rows; ++r)
        for (int64_t j = 0; j < groups; ++j) {
            std::vector<float> xs;
            std::vector<int64_t> cs;
            for (int64_t c = 0; c < l.cols; ++c)
                if ((gidx ? (*gidx)[size_t(c)] : c / g) == j) {
                    xs.push_back(l.w[size_t(r * l.cols + c)]);
                    cs.push_back(c);
                }
            Rtn q;
            if (asym) {
                q = rtnAsym(xs.data(), int64_t(xs.size()), bits, toBf16);
            } else {
                float amax = 1e-6f;
                for (float x : xs) amax = std::max(amax, std::fabs(x));
                q.scale = toBf16(amax / float(off - 1));
                q.zero = off;
            }
            scale[size_t(r * groups + j)] = q.scale;
            zp[size_t(r * groups + j)] = q.zero - off;
            for (size_t k = 0; k < cs.size(); ++k) {
                const int code = codeAsym(xs[k], q, bits);
                u[size_t(r * l.cols + cs[k])] = code;
                expect[size_t(r * l.cols + cs[k])] = q.scale * float(code - q.zero);
            }
        }
    std::vector<Tensor> parts;
    parts.push_back({l.module + ".weight_packed",
                     lcw::DType::I32,
                     {l.rows, (l.cols + 32 / bits - 1) / (32 / bits)},
                     bytesOf(ctPackRows(u, l.rows, l.cols, bits))});
    parts.push_back(
        {l.module + ".weight_scale", lcw::DType::BF16, {l.rows, groups}, bf16Bytes(scale)});
    parts.push_back({l.module + ".weight_shape",
                     lcw::DType::I64,
                     {2},
                     bytesOf(std::vector<int64_t>{l.rows, l.cols})});
    if (asym) {
        std::vector<int> zu(zp.size());
        for (size_t i = 0; i < zp.size(); ++i) zu[i] = zp[i] + off;
        const int64_t pf = 32 / bits;
        parts.push_back({l.module + ".weight_zero_point",
                         lcw::DType::I32,
                         {(l.rows + pf - 1) / pf, groups},
                         bytesOf(ctPackDim0(zu, l.rows, groups, bits))});
    }
    if (gidx)
        parts.push_back({l.module + ".weight_g_idx", lcw::DType::I32, {l.cols}, bytesOf(*gidx)});
    f.replace(l.module, std::move(parts), std::move(expect));
}

/// int-quantized int8 symmetric, per channel (f16 scales [rows, 1]).
inline void ctInt8Channel(Fixture& f, const Linear& l) {
    std::vector<float> scale(static_cast<size_t>(l.rows));
    std::vector<int8_t> q(static_cast<size_t>(l.rows * l.cols));
    std::vector<float> expect(q.size());
    for (int64_t r = 0; r < l.rows; ++r) {
        float amax = 1e-6f;
        for (int64_t c = 0; c < l.cols; ++c)
            amax = std::max(amax, std::fabs(l.w[size_t(r * l.cols + c)]));
        scale[size_t(r)] = toF16(amax / 127.0f);
        for (int64_t c = 0; c < l.cols; ++c) {
            const int v = std::clamp(
                int(std::lround(l.w[size_t(r * l.cols + c)] / scale[size_t(r)])), -128, 127);
            q[size_t(r * l.cols + c)] = int8_t(v);
            expect[size_t(r * l.cols + c)] = scale[size_t(r)] * float(v);
        }
    }
    f.replace(l.module,
              {{l.module + ".weight", lcw::DType::I8, {l.rows, l.cols}, bytesOf(q)},
               {l.module + ".weight_scale", lcw::DType::F16, {l.rows, 1}, f16Bytes(scale)}},
              std::move(expect));
}

/// float-quantized fp8 e4m3, per channel (bf16 scales) or per tensor (f32 scale); with
/// `sparse24` the fp8 weight is 2:4 pruned and stored sparse-24-bitmask.
inline void ctFp8(Fixture& f, const Linear& l, bool perTensor, bool sparse24) {
    std::vector<float> scale(perTensor ? 1 : size_t(l.rows));
    std::vector<uint8_t> q(static_cast<size_t>(l.rows * l.cols));
    std::vector<float> expect(q.size());
    float tmax = 1e-6f;
    for (float x : l.w) tmax = std::max(tmax, std::fabs(x));
    for (int64_t r = 0; r < l.rows; ++r) {
        float amax = 1e-6f;
        for (int64_t c = 0; c < l.cols; ++c)
            amax = std::max(amax, std::fabs(l.w[size_t(r * l.cols + c)]));
        const float s = perTensor ? tmax / 448.0f : toBf16(amax / 448.0f);
        scale[perTensor ? 0 : size_t(r)] = s;
        for (int64_t c = 0; c < l.cols; ++c) {
            uint8_t b = toE4m3(l.w[size_t(r * l.cols + c)] / s);
            q[size_t(r * l.cols + c)] = b;
        }
    }
    std::vector<uint8_t> mask(q.size(), 1);
    if (sparse24) // keep the 2 largest magnitudes of every 4 (get_24_bytemasks)
        for (size_t i = 0; i < q.size(); i += 4) {
            std::vector<size_t> idx = {i, i + 1, i + 2, i + 3};
            std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
                return std::fabs(e4m3(q[a])) > std::fabs(e4m3(q[b]));
            });
            mask[idx[2]] = mask[idx[3]] = 0;
        }
    for (int64_t r = 0; r < l.rows; ++r)
        for (int64_t c = 0; c < l.cols; ++c) {
            const size_t i = size_t(r * l.cols + c);
            expect[i] = mask[i] ? scale[perTensor ? 0 : size_t(r)] * e4m3(q[i]) : 0.0f;
        }
    std::vector<Tensor> parts;
    if (sparse24) {
        std::vector<uint8_t> vals;
        const int64_t bc = (l.cols + 7) / 8;
        std::vector<uint8_t> bits(size_t(l.rows * bc), 0);
        for (int64_t r = 0; r < l.rows; ++r)
            for (int64_t c = 0; c < l.cols; ++c)
                if (mask[size_t(r * l.cols + c)]) {
                    vals.push_back(q[size_t(r * l.cols + c)]);
                    bits[size_t(r * bc + c / 8)] |= uint8_t(1u << (c % 8));
                }
        parts.push_back(
            {l.module + ".compressed", lcw::DType::F8_E4M3, {l.rows, l.cols / 2}, bytesOf(vals)});
        parts.push_back({l.module + ".bitmask", lcw::DType::U8, {l.rows, bc}, bytesOf(bits)});
        parts.push_back({l.module + ".shape",
                         lcw::DType::I64,
                         {2, 1},
                         bytesOf(std::vector<int64_t>{l.rows, l.cols})});
    } else {
        parts.push_back({l.module + ".weight", lcw::DType::F8_E4M3, {l.rows, l.cols}, bytesOf(q)});
    }
    if (perTensor)
        parts.push_back({l.module + ".weight_scale", lcw::DType::F32, {1}, bytesOf(scale)});
    else
        parts.push_back(
            {l.module + ".weight_scale", lcw::DType::BF16, {l.rows, 1}, bf16Bytes(scale)});
    f.replace(l.module, std::move(parts), std::move(expect));
}

// ------------------------------------------------------------------------------------ GPTQ

/// AutoGPTQ QuantLinear.pack's word loop over intweight [in, out] → qweight [in*b/32, out].
inline std::vector<uint32_t> gptqPackRows(const std::vector<uint32_t>& iw, int64_t in, int64_t out,
                                          int bits) {
    std::vector<uint32_t> qw(size_t(in / 32 * bits * out), 0);
    auto I = [&](int64_t k, int64_t n) { return iw[size_t(k * out + n)]; };
    for (int64_t n = 0; n < out; ++n) {
        int64_t i = 0, row = 0;
        while (row < in / 32 * bits) {
            auto Q = [&](int64_t r) -> uint32_t& { return qw[size_t(r * out + n)]; };
            if (bits != 3) {
                for (int64_t j = i; j < i + 32 / bits; ++j) Q(row) |= I(j, n) << (bits * (j - i));
                i += 32 / bits;
                row += 1;
            } else {
                for (int64_t j = i; j < i + 10; ++j) Q(row) |= I(j, n) << (3 * (j - i));
                i += 10;
                Q(row) |= I(i, n) << 30;
                row += 1;
                Q(row) |= (I(i, n) >> 2) & 1;
                i += 1;
                for (int64_t j = i; j < i + 10; ++j) Q(row) |= I(j, n) << (3 * (j - i) + 1);
                i += 10;
                Q(row) |= I(i, n) << 31;
                row += 1;
                Q(row) |= (I(i, n) >> 1) & 0x3;
                i += 1;
                for (int64_t j = i; j < i + 10; ++j) Q(row) |= I(j, n) << (3 * (j - i) + 2);
                i += 10;
                row += 1;
            }
        }
    }
    return qw;
}
/// The same loop along the columns of zeros [groups, out] → qzeros [groups, out*b/32].
inline std::vector<uint32_t> gptqPackCols(const std::vector<uint32_t>& z, int64_t groups,
                                          int64_t out, int bits) {
    // Transpose, pack as rows, transpose back.
    std::vector<uint32_t> t(z.size());
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t n = 0; n < out; ++n) t[size_t(n * groups + g)] = z[size_t(g * out + n)];
    const std::vector<uint32_t> p = gptqPackRows(t, out, groups, bits); // [out*b/32, groups]
    const int64_t wc = out / 32 * bits;
    std::vector<uint32_t> r(static_cast<size_t>(groups * wc));
    for (int64_t w = 0; w < wc; ++w)
        for (int64_t g = 0; g < groups; ++g) r[size_t(g * wc + w)] = p[size_t(w * groups + g)];
    return r;
}

/// GPTQ asymmetric `bits`, group g, f16 scales; `gidx` (desc_act) maps input columns to groups;
/// v1 stores zero - 1 (AutoGPTQ), v2 the zero (GPTQModel).
inline void gptq(Fixture& f, const Linear& l, int bits, int64_t g, const std::vector<int32_t>& gidx,
                 bool v1) {
    const int64_t in = l.cols, out = l.rows, groups = (in + g - 1) / g;
    std::vector<float> scale(static_cast<size_t>(groups * out));
    std::vector<uint32_t> zero(static_cast<size_t>(groups * out));
    std::vector<uint32_t> iw(static_cast<size_t>(in * out));
    std::vector<float> expect(static_cast<size_t>(out * in));
    for (int64_t n = 0; n < out; ++n)
        for (int64_t j = 0; j < groups; ++j) {
            std::vector<float> xs;
            std::vector<int64_t> ks;
            for (int64_t k = 0; k < in; ++k)
                if (gidx[size_t(k)] == j) {
                    xs.push_back(l.w[size_t(n * in + k)]);
                    ks.push_back(k);
                }
            Rtn q = rtnAsym(xs.data(), int64_t(xs.size()), bits, toF16);
            if (v1) q.zero = std::max(q.zero, 1); // v1 cannot store zero 0 (zero - 1 = -1)
            scale[size_t(j * out + n)] = q.scale;
            zero[size_t(j * out + n)] = uint32_t(q.zero - (v1 ? 1 : 0));
            for (size_t i = 0; i < ks.size(); ++i) {
                const int c = codeAsym(xs[i], q, bits);
                iw[size_t(ks[i] * out + n)] = uint32_t(c);
                expect[size_t(n * in + ks[i])] = q.scale * float(c - q.zero);
            }
        }
    std::vector<Tensor> parts;
    parts.push_back({l.module + ".qweight",
                     lcw::DType::I32,
                     {in / 32 * bits, out},
                     bytesOf(gptqPackRows(iw, in, out, bits))});
    parts.push_back({l.module + ".qzeros",
                     lcw::DType::I32,
                     {groups, out / 32 * bits},
                     bytesOf(gptqPackCols(zero, groups, out, bits))});
    parts.push_back({l.module + ".scales", lcw::DType::F16, {groups, out}, f16Bytes(scale)});
    parts.push_back({l.module + ".g_idx", lcw::DType::I32, {in}, bytesOf(gidx)});
    f.replace(l.module, std::move(parts), std::move(expect));
}

// ------------------------------------------------------------------------------------- AWQ

inline void awq(Fixture& f, const Linear& l, int64_t g) {
    const int64_t in = l.cols, out = l.rows, groups = in / g;
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    std::vector<float> scale(static_cast<size_t>(groups * out));
    std::vector<uint32_t> zero(static_cast<size_t>(groups * out));
    std::vector<uint32_t> iw(static_cast<size_t>(in * out));
    std::vector<float> expect(static_cast<size_t>(out * in));
    for (int64_t n = 0; n < out; ++n)
        for (int64_t j = 0; j < groups; ++j) {
            std::vector<float> xs;
            for (int64_t k = j * g; k < (j + 1) * g; ++k) xs.push_back(l.w[size_t(n * in + k)]);
            const Rtn q = rtnAsym(xs.data(), g, 4, toF16);
            scale[size_t(j * out + n)] = q.scale;
            zero[size_t(j * out + n)] = uint32_t(q.zero);
            for (int64_t k = j * g; k < (j + 1) * g; ++k) {
                const int c = codeAsym(l.w[size_t(n * in + k)], q, 4);
                iw[size_t(k * out + n)] = uint32_t(c);
                expect[size_t(n * in + k)] = q.scale * float(c - q.zero);
            }
        }
    std::vector<uint32_t> qw(size_t(in * out / 8), 0), qz(size_t(groups * out / 8), 0);
    for (int64_t col = 0; col < out / 8; ++col)
        for (int i = 0; i < 8; ++i) {
            for (int64_t k = 0; k < in; ++k)
                qw[size_t(k * (out / 8) + col)] |= iw[size_t(k * out + col * 8 + order[i])]
                                                   << (i * 4);
            for (int64_t j = 0; j < groups; ++j)
                qz[size_t(j * (out / 8) + col)] |= zero[size_t(j * out + col * 8 + order[i])]
                                                   << (i * 4);
        }
    f.replace(l.module,
              {{l.module + ".qweight", lcw::DType::I32, {in, out / 8}, bytesOf(qw)},
               {l.module + ".qzeros", lcw::DType::I32, {groups, out / 8}, bytesOf(qz)},
               {l.module + ".scales", lcw::DType::F16, {groups, out}, f16Bytes(scale)}},
              std::move(expect));
}

/// A permutation of columns into groups of g (desc_act order): column c → group perm(c) / g.
inline std::vector<int32_t> permutedGroups(int64_t cols, int64_t g, unsigned seed) {
    std::vector<int32_t> perm(static_cast<size_t>(cols));
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> gidx(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) gidx[size_t(c)] = int32_t(perm[size_t(c)] / g);
    return gidx;
}

} // namespace hfq
