#include "core/export/gguf_mix.h"

#include "core/common/error.h"
#include "core/common/pattern.h"
#include "core/compress/recipe.h"
#include "core/io/gguf.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <numeric>

// The rules below follow llama.cpp b4747's src/llama-quant.cpp (llama_model_quantize_impl and
// llama_tensor_get_type), restricted to the file types lcw can hold. Where later llama.cpp differs
// (fallback of Q2_K/Q3_K, fused attn_qkv following the attn_v rules, --tensor-type handling), the
// b4747 behaviour is kept: ../shared/models/gguf-k/ was made with it.

namespace lcw {

namespace {

using F = LlamaFtype;

// llama-quantize's listing order (QUANT_OPTIONS), restricted to what lcw holds.
const std::vector<LlamaFtypeInfo> kFtypes = {
    {F::Q4_0, "Q4_0", 2, DType::Q4_0},        {F::Q4_1, "Q4_1", 3, DType::Q4_1},
    {F::Q5_0, "Q5_0", 8, DType::Q5_0},        {F::Q5_1, "Q5_1", 9, DType::Q5_1},
    {F::Q2_K, "Q2_K", 10, DType::Q2_K},       {F::Q2_K_S, "Q2_K_S", 21, DType::Q2_K},
    {F::Q3_K_S, "Q3_K_S", 11, DType::Q3_K},   {F::Q3_K_M, "Q3_K_M", 12, DType::Q3_K},
    {F::Q3_K_L, "Q3_K_L", 13, DType::Q3_K},   {F::IQ4_NL, "IQ4_NL", 25, DType::IQ4_NL},
    {F::IQ4_XS, "IQ4_XS", 30, DType::IQ4_XS}, {F::Q4_K_S, "Q4_K_S", 14, DType::Q4_K},
    {F::Q4_K_M, "Q4_K_M", 15, DType::Q4_K},   {F::Q5_K_S, "Q5_K_S", 16, DType::Q5_K},
    {F::Q5_K_M, "Q5_K_M", 17, DType::Q5_K},   {F::Q6_K, "Q6_K", 18, DType::Q6_K},
    {F::Q8_0, "Q8_0", 7, DType::Q8_0},        {F::F16, "F16", 1, DType::F16},
    {F::BF16, "BF16", 32, DType::BF16},       {F::F32, "F32", 0, DType::F32},
};

struct TypeName {
    DType type;
    std::string_view name;
    bool weight; // llama-quantize can write a weight in this type
};
// ggml's type_traits[].type_name spellings.
constexpr TypeName kTypeNames[] = {
    {DType::F32, "f32", true},   {DType::F16, "f16", true},       {DType::BF16, "bf16", true},
    {DType::Q4_0, "q4_0", true}, {DType::Q4_1, "q4_1", true},     {DType::Q5_0, "q5_0", true},
    {DType::Q5_1, "q5_1", true}, {DType::Q8_0, "q8_0", true},     {DType::Q2_K, "q2_K", true},
    {DType::Q3_K, "q3_K", true}, {DType::Q4_K, "q4_K", true},     {DType::Q5_K, "q5_K", true},
    {DType::Q6_K, "q6_K", true}, {DType::IQ4_NL, "iq4_nl", true}, {DType::IQ4_XS, "iq4_xs", true},
    {DType::I8, "i8", false},    {DType::I16, "i16", false},      {DType::I32, "i32", false},
    {DType::I64, "i64", false},  {DType::F64, "f64", false},
};

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

std::string typeStr(DType t) {
    return std::string(llamaCppTypeName(t));
}

bool isWeightType(DType t) {
    for (const auto& n : kTypeNames)
        if (n.type == t) return n.weight;
    return false;
}

void requireWeightType(DType t, const std::string& what) {
    if (!isWeightType(t))
        throw ArgumentError(what + ": " + std::string(dtypeName(t)) +
                            " is not a type llama.cpp writes weights in");
}

bool contains(const std::string& s, std::string_view part) {
    return s.find(part) != std::string::npos;
}

// ggml_n_dims: 1 + the index of the last dimension that is not 1.
int ggmlNDims(const std::vector<int64_t>& ne) {
    for (int i = int(ne.size()) - 1; i >= 1; --i)
        if (ne[size_t(i)] > 1) return i + 1;
    return 1;
}

int64_t rowLength(const GgufMixTensor& t) {
    return t.ne.empty() ? 1 : t.ne[0];
}

int layerOf(const std::string& name) {
    int layer = -1;
    std::sscanf(name.c_str(), "blk.%d.", &layer);
    return layer;
}

// llama_model_loader's weights_map order: by layer (non-layer tensors first), then by name.
std::vector<size_t> llamaCppOrderOf(const std::vector<GgufMixTensor>& tensors) {
    std::vector<int> layer(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) layer[i] = layerOf(tensors[i].name);
    std::vector<size_t> order(tensors.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        if (layer[a] != layer[b]) return layer[a] < layer[b];
        return tensors[a].name < tensors[b].name;
    });
    return order;
}

// Which tensors llama-quantize (re)quantises at all; `why` says why not.
bool allowsQuantization(const GgufMixTensor& t, bool quantizeOutput, std::string& why) {
    const std::string& name = t.name;
    // llama.cpp's own test, kept as written: it is also true for every 5-character name.
    if (name.rfind("weight") != name.size() - 6) {
        why = "name does not end in 'weight'";
        return false;
    }
    if (ggmlNDims(t.ne) < 2) {
        why = "1-D";
        return false;
    }
    if (contains(name, "_norm.weight")) {
        why = "norm";
        return false;
    }
    if (!quantizeOutput && name == "output.weight") {
        why = "--leave-output-tensor";
        return false;
    }
    if (contains(name, "ffn_gate_inp.weight")) {
        why = "MoE router (ffn_gate_inp)";
        return false;
    }
    if (name == "position_embd.weight" || name == "token_types.weight") {
        why = "position / token-type embedding";
        return false;
    }
    if (contains(name, "ssm_conv1d.weight")) {
        why = "Mamba conv1d";
        return false;
    }
    static constexpr std::string_view kRwkv[] = {
        "time_mix_first.weight",    "time_mix_w0.weight",       "time_mix_w1.weight",
        "time_mix_w2.weight",       "time_mix_v0.weight",       "time_mix_v1.weight",
        "time_mix_v2.weight",       "time_mix_a0.weight",       "time_mix_a1.weight",
        "time_mix_a2.weight",       "time_mix_g1.weight",       "time_mix_g2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    };
    for (auto k : kRwkv)
        if (contains(name, k)) {
            why = "small RWKV weight";
            return false;
        }
    if (contains(name, "attn_rel_b.weight")) {
        why = "T5 relative position bias";
        return false;
    }
    return true;
}

struct Pick {
    DType type = DType::F32;
    std::optional<DType> wanted;
    GgufMixSource source = GgufMixSource::Kept;
    bool quantizable = false;
    std::string reason;
};

// Applies the row-length fallback to p.type; `fallbacks` gets llama-quantize's warning.
void applyFallback(const GgufMixTensor& t, Pick& p, std::vector<std::string>* fallbacks) {
    const int64_t nx = rowLength(t);
    const int64_t qk = dtypeBlockElems(p.type);
    if (nx % qk == 0) return;
    // llama.cpp's substitutes (b4747), then F16: the one table the recipe methods use too.
    const auto method = compress::ggufMethodForType(p.type);
    const auto fit = method ? compress::ggufFallback(*method, nx) : std::nullopt;
    if (!fit)
        throw UnsupportedError(t.name + ": rows of " + std::to_string(nx) +
                               " elements are not a multiple of " + std::to_string(qk) +
                               " (the block of " + typeStr(p.type) +
                               ") and llama.cpp has no fallback for " + typeStr(p.type));
    const DType sub = compress::ggufMethodType(*fit);
    const std::string line = t.name + ": rows of " + std::to_string(nx) +
                             " are not a multiple of " + std::to_string(qk) + " (" +
                             typeStr(p.type) + ") → " + typeStr(sub);
    if (fallbacks) fallbacks->push_back(line);
    p.reason += "; fallback: rows of " + std::to_string(nx) + " not a multiple of " +
                std::to_string(qk) + " → " + typeStr(sub);
    p.wanted = p.type;
    p.type = sub;
}

bool derive70B(const GgufMixModel& m, int nHead, int nHeadKv) {
    if (m.is70B) return *m.is70B;
    if (m.nLayer != 80) return false;
    if (m.arch == "llama") return m.nExpert != 8 && nHead != nHeadKv;
    return m.arch == "deci" || m.arch == "qwen2" || m.arch == "qwen2vl" || m.arch == "olmo";
}

struct RunParams {
    LlamaFtype ftype = F::Q4_K_M;
    const GgufMixModel* model = nullptr;
    const std::vector<GgufMixTensor>* tensors = nullptr;
    bool hasImatrix = false;
    bool quantizeOutput = true;
    std::optional<DType> outputFlag, tokenFlag;
    /// Simulates a newer llama-quantize's --tensor-type: these tensors take the given type
    /// instead of the rules and are not counted by them (then the fallback applies).
    const std::map<size_t, DType>* manual = nullptr;
    std::vector<std::string>* fallbacks = nullptr;
    std::vector<std::string>* warnings = nullptr;
};

// One llama-quantize run's type choice (b4747), per input index.
class LlamaQuantize {
public:
    explicit LlamaQuantize(const RunParams& p)
        : m_p(p), m_model(*p.model), m_tensors(*p.tensors), m_info(llamaFtypeInfo(p.ftype)) {
        const int nHead0 = m_model.nHead;
        const int nHeadKv0 =
            m_model.nHeadKvPerLayer.empty() ? m_model.nHeadKv : m_model.nHeadKvPerLayer[0];
        m_nGqa = nHeadKv0 == 0 ? 0 : nHead0 / nHeadKv0;
        m_is70B = derive70B(m_model, nHead0, nHeadKv0);
        m_falcon = m_model.arch == "falcon";
        for (const auto& t : m_tensors) {
            if (contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight") ||
                contains(t.name, "attn_kv_b.weight"))
                ++m_nAttentionWv;
            if (t.name == "output.weight") m_hasOutput = true;
        }
        if (m_nAttentionWv != 0 && p.warnings) {
            int nAttn = m_model.nLayer;
            for (int l = 0; l < m_model.nLayer; ++l) {
                const int kv =
                    m_model.nHeadKvPerLayer.empty()
                        ? m_model.nHeadKv
                        : m_model.nHeadKvPerLayer[size_t(l) % m_model.nHeadKvPerLayer.size()];
                if (kv == 0) --nAttn;
            }
            if (m_model.arch == "t5" || m_model.arch == "t5encoder") nAttn *= 3;
            if (nAttn != m_nAttentionWv)
                p.warnings->push_back("llama-quantize b4747 would stop: it counts " +
                                      std::to_string(m_nAttentionWv) +
                                      " attn_v / attn_qkv / attn_kv_b tensors but the model has " +
                                      std::to_string(nAttn) + " attention layers");
        }
    }

    std::vector<Pick> run(std::vector<size_t>& order) {
        order = llamaCppOrderOf(m_tensors);
        std::vector<Pick> picks(m_tensors.size());
        for (size_t idx : order) picks[idx] = pick(idx);
        return picks;
    }

private:
    Pick pick(size_t idx) {
        const GgufMixTensor& t = m_tensors[idx];
        Pick p;
        std::string why;
        if (!allowsQuantization(t, m_p.quantizeOutput, why)) {
            p.type = t.type;
            p.reason =
                "kept as " + typeStr(t.type) + ": llama.cpp does not quantise it (" + why + ")";
            return p;
        }
        p.quantizable = true;
        p.source = GgufMixSource::Preset;
        p.type = m_info.defaultType;
        p.reason = std::string(m_info.name) + ": default type " + typeStr(p.type);
        if (dtypeIsQuantized(m_info.defaultType)) {
            const auto* manual = m_p.manual;
            const auto hit = manual ? manual->find(idx) : std::map<size_t, DType>::const_iterator();
            if (manual && hit != manual->end()) {
                p.type = hit->second;
                p.source = GgufMixSource::Regex;
                p.reason = "--tensor-type " + typeStr(p.type);
            } else {
                rules(t, p);
            }
            applyFallback(t, p, m_p.fallbacks);
        }
        // b4747 sets the two flags once more after the rules, without a fallback.
        std::optional<DType> flag;
        if (m_p.tokenFlag && t.name == "token_embd.weight") flag = m_p.tokenFlag;
        if (m_p.outputFlag && t.name == "output.weight") flag = m_p.outputFlag;
        if (flag) {
            if (rowLength(t) % dtypeBlockElems(*flag) != 0)
                throw UnsupportedError(t.name + ": rows of " + std::to_string(rowLength(t)) +
                                       " elements do not fit " + typeStr(*flag) + " (blocks of " +
                                       std::to_string(dtypeBlockElems(*flag)) +
                                       "), given by the output / token-embedding type option");
            p.type = *flag;
            p.wanted.reset();
            p.source = GgufMixSource::Flag;
            p.reason =
                (t.name == "output.weight" ? "--output-tensor-type " : "--token-embedding-type ") +
                typeStr(*flag);
        }
        return p;
    }

    static bool useMoreBits(int i, int n) {
        return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    }

    // The layer a ffn tensor belongs to: the running counter for dense models, the name's
    // blk.N for MoE models (llama.cpp's layer_info).
    int layerInfo(int counter, const std::string& name) const {
        if (std::max(1, m_model.nExpert) <= 1) return counter;
        int layer = counter;
        if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1)
            throw UnsupportedError(name + ": llama.cpp cannot determine the layer of this tensor "
                                          "of a MoE model (it expects 'blk.N.')");
        if (layer < 0 || layer >= m_model.nLayer)
            throw UnsupportedError(name + ": layer " + std::to_string(layer) + " is outside [0, " +
                                   std::to_string(m_model.nLayer) + ")");
        return layer;
    }

    void set(Pick& p, DType t, const std::string& rule) {
        p.type = t;
        p.reason = std::string(m_info.name) + ": " + rule + " → " + typeStr(t);
    }

    // llama_tensor_get_type without the fallback, for lcw's file types (the IQ1/IQ2/IQ3/TQ
    // branches of llama.cpp cannot be reached from them).
    void rules(const GgufMixTensor& t, Pick& p) {
        const std::string& name = t.name;
        const F f = m_p.ftype;
        const int nLayer = m_model.nLayer;
        const int nExpert = m_model.nExpert;
        if (name == "output.weight" || (!m_hasOutput && name == "token_embd.weight")) {
            const std::string what =
                name == "output.weight" ? "output.weight" : "token_embd.weight (tied output)";
            if (m_p.outputFlag) {
                p.type = *m_p.outputFlag;
                p.source = GgufMixSource::Flag;
                p.reason = what + ": --output-tensor-type " + typeStr(p.type);
            } else if (m_falcon) {
                set(p, DType::Q8_0, what + " of falcon");
            } else if (rowLength(t) % dtypeBlockElems(p.type) != 0) {
                set(p, DType::Q8_0,
                    what + " with rows of " + std::to_string(rowLength(t)) +
                        " (not a multiple of " + std::to_string(dtypeBlockElems(p.type)) + ")");
            } else if (p.type != DType::Q8_0) {
                set(p, DType::Q6_K, what);
            }
        } else if (name == "token_embd.weight") {
            if (m_p.tokenFlag) {
                p.type = *m_p.tokenFlag;
                p.source = GgufMixSource::Flag;
                p.reason = "--token-embedding-type " + typeStr(p.type);
            }
        } else if (contains(name, "attn_v.weight")) {
            const int i = m_iAttentionWv, n = m_nAttentionWv;
            const std::string at =
                " (attn_v " + std::to_string(i) + " of " + std::to_string(n) + ")";
            if (f == F::Q2_K)
                set(p, m_nGqa >= 4 ? DType::Q4_K : DType::Q3_K,
                    m_nGqa >= 4 ? "attn_v with GQA >= 4" : "attn_v");
            else if (f == F::Q2_K_S && m_nGqa >= 4)
                set(p, DType::Q4_K, "attn_v with GQA >= 4");
            else if (f == F::Q3_K_M)
                set(p, i < 2 ? DType::Q5_K : DType::Q4_K,
                    std::string(i < 2 ? "attn_v of the first 2 layers" : "attn_v") + at);
            else if (f == F::Q3_K_L)
                set(p, DType::Q5_K, "attn_v");
            else if ((f == F::IQ4_NL || f == F::IQ4_XS) && m_nGqa >= 4)
                set(p, DType::Q5_K, "attn_v with GQA >= 4");
            else if ((f == F::Q4_K_M || f == F::Q5_K_M) && useMoreBits(i, n))
                set(p, DType::Q6_K, "attn_v in a use_more_bits layer" + at);
            else if (f == F::Q4_K_S && i < 4)
                set(p, DType::Q5_K, "attn_v of the first 4 layers" + at);
            if (m_is70B && (p.type == DType::Q3_K || p.type == DType::Q4_K))
                set(p, DType::Q5_K, "attn_v of a 70B model");
            if (nExpert == 8) set(p, DType::Q8_0, "attn_v of an 8-expert model");
            ++m_iAttentionWv;
        } else if (contains(name, "attn_k.weight")) {
            if (nExpert == 8) set(p, DType::Q8_0, "attn_k of an 8-expert model");
        } else if (contains(name, "attn_q.weight")) {
            // llama.cpp's attn_q rules are for IQ3 file types only
        } else if (contains(name, "ffn_down")) {
            const int il = layerInfo(m_iFfnDown, name), n = nLayer;
            const std::string at =
                " (layer " + std::to_string(il) + " of " + std::to_string(n) + ")";
            if (f == F::Q2_K)
                set(p, DType::Q3_K, "ffn_down");
            else if (f == F::Q2_K_S) {
                if (il < n / 8) set(p, DType::Q4_K, "ffn_down of the first n/8 layers" + at);
            } else if (f == F::Q3_K_M) {
                if (il < n / 16)
                    set(p, DType::Q5_K, "ffn_down of the first n/16 layers" + at);
                else if (!m_falcon || useMoreBits(il, n))
                    set(p, DType::Q4_K,
                        std::string(m_falcon ? "ffn_down in a use_more_bits layer" : "ffn_down") +
                            at);
                else
                    set(p, DType::Q3_K, "falcon ffn_down" + at);
            } else if (f == F::Q3_K_L) {
                set(p, m_falcon ? DType::Q4_K : DType::Q5_K, "ffn_down");
            } else if (f == F::Q4_K_M) {
                if (m_falcon) {
                    if (il < n / 16)
                        set(p, DType::Q6_K, "falcon ffn_down of the first n/16 layers" + at);
                    else if (useMoreBits(il, n))
                        set(p, DType::Q5_K, "falcon ffn_down in a use_more_bits layer" + at);
                    else
                        set(p, DType::Q4_K, "falcon ffn_down" + at);
                } else if (useMoreBits(il, n)) {
                    set(p, DType::Q6_K, "ffn_down in a use_more_bits layer" + at);
                }
            } else if (il < n / 8 && (f == F::IQ4_NL || f == F::IQ4_XS) && !m_p.hasImatrix) {
                set(p, DType::Q5_K, "ffn_down of the first n/8 layers without an imatrix" + at);
            } else if (f == F::Q5_K_M && useMoreBits(il, n)) {
                set(p, DType::Q6_K, "ffn_down in a use_more_bits layer" + at);
            } else if (f == F::Q4_K_S && !m_falcon && il < n / 8) {
                set(p, DType::Q5_K, "ffn_down of the first n/8 layers" + at);
            } else if ((f == F::Q4_0 || f == F::Q5_0) && m_p.hasImatrix && il < n / 8) {
                set(p, f == F::Q4_0 ? DType::Q4_1 : DType::Q5_1,
                    "ffn_down of the first n/8 layers with an imatrix" + at);
            }
            ++m_iFfnDown;
        } else if (contains(name, "attn_output.weight")) {
            if (!m_falcon) {
                if (nExpert == 8) {
                    if (f == F::Q2_K || f == F::Q3_K_S || f == F::Q3_K_M || f == F::IQ4_NL ||
                        f == F::Q4_K_S || f == F::Q4_K_M || f == F::IQ4_XS)
                        set(p, DType::Q5_K, "attn_output of an 8-expert model");
                } else if (f == F::Q2_K) {
                    set(p, DType::Q3_K, "attn_output");
                } else if (f == F::Q3_K_M) {
                    set(p, DType::Q4_K, "attn_output");
                } else if (f == F::Q3_K_L) {
                    set(p, DType::Q5_K, "attn_output");
                }
            } else if (f == F::Q3_K_L) {
                set(p, DType::Q4_K, "falcon attn_output");
            }
        } else if (contains(name, "attn_qkv.weight")) {
            if (f == F::Q3_K_M || f == F::Q3_K_L)
                set(p, DType::Q4_K, "attn_qkv");
            else if (f == F::Q4_K_M)
                set(p, DType::Q5_K, "attn_qkv");
            else if (f == F::Q5_K_M)
                set(p, DType::Q6_K, "attn_qkv");
        } else if (contains(name, "ffn_gate")) {
            layerInfo(m_iFfnGate, name); // llama.cpp's rule is for IQ3_XS only, its check is not
            ++m_iFfnGate;
        } else if (contains(name, "ffn_up")) {
            layerInfo(m_iFfnUp, name);
            ++m_iFfnUp;
        }
    }

    const RunParams& m_p;
    const GgufMixModel& m_model;
    const std::vector<GgufMixTensor>& m_tensors;
    const LlamaFtypeInfo& m_info;
    int m_nGqa = 0;
    bool m_is70B = false;
    bool m_falcon = false;
    bool m_hasOutput = false;
    int m_nAttentionWv = 0;
    int m_iAttentionWv = 0, m_iFfnDown = 0, m_iFfnGate = 0, m_iFfnUp = 0;
};

void validateInputs(const GgufMixModel& model, const std::vector<GgufMixTensor>& tensors) {
    if (model.nLayer < 0 || model.nHead < 0 || model.nHeadKv < 0 || model.nExpert < 0)
        throw ArgumentError("model description: negative layer / head / expert count");
    for (int kv : model.nHeadKvPerLayer)
        if (kv < 0) throw ArgumentError("model description: negative KV head count");
    std::vector<std::string_view> names;
    names.reserve(tensors.size());
    for (const auto& t : tensors) {
        if (t.name.empty()) throw ArgumentError("a tensor without a name");
        if (t.ne.empty() || t.ne.size() > 4)
            throw ArgumentError(t.name + ": " + std::to_string(t.ne.size()) +
                                " dimensions (GGUF tensors have 1 to 4)");
        for (int64_t d : t.ne)
            if (d < 0) throw ArgumentError(t.name + ": negative dimension");
        names.push_back(t.name);
    }
    std::sort(names.begin(), names.end());
    auto dup = std::adjacent_find(names.begin(), names.end());
    if (dup != names.end()) throw ArgumentError("tensor " + std::string(*dup) + " listed twice");
}

std::vector<Pick> runOnce(const RunParams& p, std::vector<size_t>* order = nullptr) {
    std::vector<size_t> o;
    LlamaQuantize q(p);
    auto picks = q.run(o);
    if (order) *order = std::move(o);
    return picks;
}

std::string escapeRegex(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

// The --tensor-type pattern for one tensor: "blk\.3\.attn_v" (what early --tensor-type versions
// accept: the name must end in a tensor role) when no other tensor name contains that stem,
// else the anchored full name.
std::string tensorPattern(const std::string& name, const std::vector<GgufMixTensor>& all) {
    constexpr std::string_view kSuffix = ".weight";
    if (name.size() > kSuffix.size() &&
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
        const std::string stem = name.substr(0, name.size() - kSuffix.size());
        int hits = 0;
        for (const auto& t : all) hits += contains(t.name, stem) ? 1 : 0;
        if (hits == 1) return escapeRegex(stem);
    }
    return "^" + escapeRegex(name) + "$";
}

std::string shellQuote(const std::string& s) {
    const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) ||
               std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
    });
    if (plain) return s;
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

} // namespace

// ---- names ----

const std::vector<LlamaFtypeInfo>& llamaFtypes() {
    return kFtypes;
}

const LlamaFtypeInfo& llamaFtypeInfo(LlamaFtype ftype) {
    for (const auto& i : kFtypes)
        if (i.ftype == ftype) return i;
    throw ArgumentError("unknown llama.cpp file type " + std::to_string(int(ftype)));
}

LlamaFtype llamaFtypeFromName(std::string_view name) {
    for (const auto& i : kFtypes)
        if (iequals(i.name, name)) return i.ftype;
    if (iequals(name, "Q3_K")) return F::Q3_K_M;
    if (iequals(name, "Q4_K")) return F::Q4_K_M;
    if (iequals(name, "Q5_K")) return F::Q5_K_M;
    std::string known;
    for (const auto& i : kFtypes) known += (known.empty() ? "" : ", ") + std::string(i.name);
    throw ArgumentError("unknown llama.cpp preset '" + std::string(name) + "'; known: " + known +
                        " (and the aliases Q3_K, Q4_K, Q5_K)");
}

std::optional<LlamaFtype> llamaFtypeFromId(uint32_t id) {
    for (const auto& i : kFtypes)
        if (i.id == id) return i.ftype;
    return std::nullopt;
}

std::string_view llamaCppTypeName(DType t) {
    for (const auto& n : kTypeNames)
        if (n.type == t) return n.name;
    throw UnsupportedError("dtype " + std::string(dtypeName(t)) + " has no ggml type name");
}

std::optional<DType> dtypeFromLlamaCppTypeName(std::string_view name) {
    for (const auto& n : kTypeNames)
        if (iequals(n.name, name)) return n.type;
    return std::nullopt;
}

std::string_view ggufMixSourceName(GgufMixSource s) {
    switch (s) {
    case GgufMixSource::Kept:
        return "kept";
    case GgufMixSource::Preset:
        return "preset";
    case GgufMixSource::Flag:
        return "flag";
    case GgufMixSource::Regex:
        return "regex";
    case GgufMixSource::PerTensor:
        return "per-tensor";
    }
    return "?";
}

GgufMixTensor GgufMixTensor::fromRowMajor(std::string name, const std::vector<int64_t>& shape,
                                          DType type) {
    GgufMixTensor t;
    t.name = std::move(name);
    t.ne.assign(shape.rbegin(), shape.rend());
    if (t.ne.empty()) t.ne.push_back(1);
    t.type = type;
    return t;
}

const GgufMixChoice* GgufMix::find(std::string_view name) const {
    for (const auto& c : tensors)
        if (c.name == name) return &c;
    return nullptr;
}

int GgufMix::changedCount() const {
    return int(std::count_if(tensors.begin(), tensors.end(),
                             [](const GgufMixChoice& c) { return c.type != c.presetType; }));
}

// ---- the type choice ----

GgufMix chooseGgufMix(LlamaFtype ftype, const GgufMixModel& model,
                      const std::vector<GgufMixTensor>& tensors, const GgufMixOptions& options) {
    validateInputs(model, tensors);
    for (auto* flag : {&options.outputTensorType, &options.tokenEmbeddingType})
        if (*flag) requireWeightType(**flag, "output / token-embedding type option");

    GgufMix mix;
    mix.ftype = ftype;
    mix.model = model;
    mix.inputs = tensors;
    mix.options = options;

    // The pure preset (what `llama-quantize IN OUT FTYPE` writes), for presetType.
    RunParams pure;
    pure.ftype = ftype;
    pure.model = &mix.model;
    pure.tensors = &mix.inputs;
    pure.hasImatrix = options.hasImatrix;
    const std::vector<Pick> preset = runOnce(pure);

    RunParams withFlags = pure;
    withFlags.quantizeOutput = options.quantizeOutput;
    withFlags.outputFlag = options.outputTensorType;
    withFlags.tokenFlag = options.tokenEmbeddingType;
    withFlags.fallbacks = &mix.fallbacks;
    withFlags.warnings = &mix.warnings;
    std::vector<Pick> picks = runOnce(withFlags, &mix.llamaCppOrder);

    // lcw overrides on top: exact names first, then the first matching regex.
    for (const auto& [name, type] : options.perTensor) {
        requireWeightType(type, "override of " + name);
        auto it = std::find_if(tensors.begin(), tensors.end(),
                               [&n = name](const GgufMixTensor& t) { return t.name == n; });
        if (it == tensors.end())
            throw ArgumentError("override names tensor '" + name + "', which the model lacks");
        const Pick& p = picks[size_t(it - tensors.begin())];
        if (!p.quantizable)
            throw ArgumentError("override of " + name +
                                ": llama.cpp never quantises this tensor (" + p.reason + ")");
    }
    // RE2 (core/common/pattern.h): linear-time search, whatever the pattern.
    std::vector<std::pair<Regex, DType>> patterns;
    for (const auto& [re, type] : options.tensorTypes) {
        requireWeightType(type, "tensor-type '" + re + "'");
        try {
            patterns.emplace_back(Regex::cached(re), type);
        } catch (const RegexError& e) {
            throw ArgumentError("invalid tensor-type regex '" + re + "': " + e.problem());
        }
    }
    for (size_t idx : mix.llamaCppOrder) {
        const GgufMixTensor& t = tensors[idx];
        Pick& p = picks[idx];
        if (!p.quantizable) continue;
        std::optional<DType> type;
        GgufMixSource source = GgufMixSource::PerTensor;
        std::string label;
        if (auto it = options.perTensor.find(t.name); it != options.perTensor.end()) {
            type = it->second;
            label = "override";
        } else if (!((options.outputTensorType && t.name == "output.weight") ||
                     (options.tokenEmbeddingType && t.name == "token_embd.weight"))) {
            for (size_t k = 0; k < patterns.size() && !type; ++k)
                if (patterns[k].first.search(t.name)) {
                    type = patterns[k].second;
                    source = GgufMixSource::Regex;
                    label = "tensor-type '" + options.tensorTypes[k].first + "'";
                }
        }
        if (!type) continue;
        const DType before = p.type;
        p.type = *type;
        p.wanted.reset();
        p.source = source;
        p.reason = label + ": " + typeStr(*type) + " (preset: " + typeStr(preset[idx].type) +
                   (before != preset[idx].type ? ", options: " + typeStr(before) : "") + ")";
        applyFallback(t, p, &mix.fallbacks);
    }

    mix.tensors.reserve(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        GgufMixChoice c;
        c.name = tensors[i].name;
        c.sourceType = tensors[i].type;
        c.type = picks[i].type;
        c.presetType = preset[i].type;
        c.wanted = picks[i].wanted;
        c.source = picks[i].source;
        c.quantizable = picks[i].quantizable;
        c.reason = std::move(picks[i].reason);
        mix.tensors.push_back(std::move(c));
    }

    if (ftype == F::Q2_K_S && !options.hasImatrix)
        for (const auto& c : mix.tensors)
            if (c.converted() && c.type == DType::Q2_K && c.name != "token_embd.weight")
                throw ArgumentError("Q2_K_S needs an importance matrix: llama-quantize refuses to "
                                    "write " +
                                    c.name + " as q2_K without one");
    return mix;
}

// ---- from a GGUF file ----

GgufMixModel ggufMixModel(const GgufFile& file) {
    GgufMixModel m;
    auto arch = file.getString("general.architecture");
    if (!arch) throw FormatError(file.path, "metadata 'general.architecture' is missing");
    m.arch = *arch;
    const std::string bcKey = m.arch + ".block_count";
    auto bc = file.getInt(bcKey);
    if (!bc) throw FormatError(file.path, "metadata '" + bcKey + "' is missing");
    if (*bc < 0 || *bc > 100000)
        throw FormatError(file.path, "metadata '" + bcKey + "' = " + std::to_string(*bc));
    m.nLayer = int(*bc);
    // A scalar or one value per layer.
    auto perLayer = [&](const std::string& key) -> std::optional<std::vector<int>> {
        const GgufValue* v = file.find(key);
        if (!v) return std::nullopt;
        std::vector<int> out;
        if (v->isArray()) {
            for (uint64_t i = 0; i < v->count; ++i) {
                auto x = v->arrayInt(i);
                if (!x || *x < 0 || *x > 1000000)
                    throw FormatError(file.path, "metadata '" + key + "' holds a bad value");
                out.push_back(int(*x));
            }
            if (out.empty()) throw FormatError(file.path, "metadata '" + key + "' is empty");
        } else {
            auto x = file.getInt(key);
            if (*x < 0 || *x > 1000000)
                throw FormatError(file.path, "metadata '" + key + "' = " + std::to_string(*x));
            out.push_back(int(*x));
        }
        return out;
    };
    auto heads = perLayer(m.arch + ".attention.head_count");
    auto kv = perLayer(m.arch + ".attention.head_count_kv");
    if (heads) m.nHead = (*heads)[0];
    if (!kv) kv = heads; // llama.cpp: n_head_kv defaults to n_head
    if (kv) {
        m.nHeadKv = (*kv)[0];
        if (kv->size() > 1) m.nHeadKvPerLayer = *kv;
    }
    if (auto e = file.getInt(m.arch + ".expert_count")) {
        if (*e < 0 || *e > 100000)
            throw FormatError(file.path,
                              "metadata '" + m.arch + ".expert_count' = " + std::to_string(*e));
        m.nExpert = int(*e);
    }
    return m;
}

std::vector<GgufMixTensor> ggufMixTensors(const GgufFile& file) {
    std::vector<GgufMixTensor> out;
    out.reserve(file.tensors.size());
    for (const auto& t : file.tensors)
        out.push_back(GgufMixTensor::fromRowMajor(t.fileName.empty() ? t.name : t.fileName, t.shape,
                                                  t.dtype));
    return out;
}

// ---- llama.cpp command ----

std::string renderTensorTypeList(const GgufMix& mix) {
    std::string out;
    for (const auto& c : mix.tensors) out += c.name + " " + typeStr(c.type) + "\n";
    return out;
}

LlamaQuantizeCommand renderLlamaQuantizeCommand(const GgufMix& mix,
                                                const LlamaQuantizeCommandOptions& options) {
    if (mix.tensors.size() != mix.inputs.size())
        throw ArgumentError("mix: " + std::to_string(mix.tensors.size()) + " choices for " +
                            std::to_string(mix.inputs.size()) + " tensors");
    const LlamaFtypeInfo& info = llamaFtypeInfo(mix.ftype);
    const auto& inputs = mix.inputs;

    // output.weight / token_embd.weight through their own flags (b4747 has those).
    std::optional<DType> outputFlag, tokenFlag;
    for (const auto& c : mix.tensors) {
        const bool differs = c.type != c.presetType;
        if (c.name == "output.weight" && (differs || (options.pinAll && c.quantizable)))
            outputFlag = c.type;
        if (c.name == "token_embd.weight" && (differs || (options.pinAll && c.quantizable)))
            tokenFlag = c.type;
    }

    // --tensor-type entries: start from the tensors that differ (or all, pinAll), then add the
    // ones a newer llama-quantize would choose differently because overridden tensors no longer
    // advance its attn_v / ffn_down counters, until the simulated run gives the mix.
    std::map<size_t, DType> manual;
    auto isFlagTensor = [](const std::string& n) {
        return n == "output.weight" || n == "token_embd.weight";
    };
    if (options.pinAll)
        for (size_t i = 0; i < inputs.size(); ++i)
            if (mix.tensors[i].quantizable && !isFlagTensor(inputs[i].name))
                manual[i] = mix.tensors[i].type;
    RunParams sim;
    sim.ftype = mix.ftype;
    sim.model = &mix.model;
    sim.tensors = &inputs;
    sim.hasImatrix = mix.options.hasImatrix;
    sim.outputFlag = outputFlag;
    sim.tokenFlag = tokenFlag;
    sim.manual = &manual;
    for (size_t round = 0;; ++round) {
        const std::vector<Pick> got = runOnce(sim);
        std::vector<size_t> diffs;
        for (size_t i = 0; i < inputs.size(); ++i)
            if (got[i].type != mix.tensors[i].type) diffs.push_back(i);
        if (diffs.empty()) break;
        if (!dtypeIsQuantized(info.defaultType))
            throw UnsupportedError("the mix changes " + inputs[diffs[0]].name + " (and " +
                                   std::to_string(diffs.size() - 1) +
                                   " more), but llama-quantize ignores --tensor-type for the "
                                   "unquantised preset " +
                                   std::string(info.name) + "; start from a quantised preset");
        for (size_t i : diffs) {
            if (isFlagTensor(inputs[i].name) || manual.count(i) || round > inputs.size())
                throw Error("llama-quantize command: cannot reproduce the type of " +
                            inputs[i].name + " (" + typeStr(mix.tensors[i].type) + ", got " +
                            typeStr(got[i].type) + ")");
            manual[i] = mix.tensors[i].type;
        }
    }

    LlamaQuantizeCommand cmd;
    std::vector<std::vector<std::string>> groups; // one line each
    groups.push_back({options.program});
    if (mix.options.hasImatrix) {
        if (options.imatrix.empty())
            throw ArgumentError("the mix was chosen with an importance matrix: name its file");
        groups.push_back({"--imatrix", options.imatrix});
    }
    if (outputFlag) groups.push_back({"--output-tensor-type", typeStr(*outputFlag)});
    if (tokenFlag) groups.push_back({"--token-embedding-type", typeStr(*tokenFlag)});
    for (size_t idx : mix.llamaCppOrder) {
        auto it = manual.find(idx);
        if (it == manual.end()) continue;
        const std::string& name = inputs[idx].name;
        groups.push_back(
            {"--tensor-type", tensorPattern(name, inputs) + "=" + typeStr(it->second)});
        cmd.tensorTypeEntries.push_back(name);
        if (!options.pinAll && it->second == mix.tensors[idx].presetType)
            cmd.pinnedForCounters.push_back(name);
    }
    const std::string output =
        options.output.empty() ? "model-" + std::string(info.name) + "-lcw.gguf" : options.output;
    std::vector<std::string> last = {options.input, output, std::string(info.name)};
    if (options.threads > 0) last.push_back(std::to_string(options.threads));
    groups.push_back(last);

    for (size_t g = 0; g < groups.size(); ++g) {
        std::string line = g == 0 ? "" : "    ";
        for (size_t k = 0; k < groups[g].size(); ++k) {
            cmd.argv.push_back(groups[g][k]);
            if (k) line += ' ';
            line += shellQuote(groups[g][k]);
        }
        cmd.commandLine += line + (g + 1 < groups.size() ? " \\\n" : "\n");
    }

    const int changed = mix.changedCount();
    std::string& cm = cmd.comment;
    cm += "# llama.cpp preset " + std::string(info.name) + " (general.file_type " +
          std::to_string(info.id) + ")" +
          (mix.options.hasImatrix ? " with an importance matrix" : "") + "; " +
          std::to_string(changed) + " of " + std::to_string(mix.tensors.size()) +
          " tensors changed from the preset.\n";
    cm += "# Preset rules as in llama.cpp b4747; later versions changed some of them (fused "
          "attn_qkv, fallbacks),\n# so with another version compare its output with the type "
          "list (or pin every tensor).\n";
    if (!cmd.tensorTypeEntries.empty()) {
        cm += "# --tensor-type needs a llama-quantize newer than b4747 (added by llama.cpp PR "
              "#12511, spring 2025).\n";
        if (!cmd.pinnedForCounters.empty())
            cm += "# " + std::to_string(cmd.pinnedForCounters.size()) +
                  " entries keep their preset type: newer llama-quantize skips overridden "
                  "tensors when it\n# counts attn_v / ffn_down layers, which would shift the "
                  "preset's choice after them.\n";
    } else {
        cm += "# Runs with llama.cpp b4747 and later.\n";
    }
    return cmd;
}

} // namespace lcw
