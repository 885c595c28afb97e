// GGUF export: per-family metadata and tensor plan (the inverse of core/model/load_gguf.cpp,
// following convert_hf_to_gguf.py), the tokenizer as tokenizer.ggml.*, the type choice, and
// the streaming, row-parallel fill of writeGguf.
#include "core/export/gguf_export.h"

#include "core/common/mapped_file.h"
#include "core/common/parallel.h"

#include "core/compress/compressed_model.h"
#include "core/io/quants.h"
#include "core/io/tensor_names.h"
#include "core/model/expected_tensors.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <numbers>
#include <set>

namespace lcw {

namespace {

namespace fs = std::filesystem;
using compress::CompressedModel;
using compress::CompressedTensor;
using Metadata = std::vector<std::pair<std::string, GgufValue>>;

/// Thrown from inside the fill callback to unwind writeGguf (whose temporary file is then
/// removed); turned into Status::Cancelled.
struct CancelSignal {};

bool endsWith(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string shapeStr(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

// ---- families ---------------------------------------------------------------------------------

// Per-block roles in file order. A role is a canonical role, or one of the composite roles
// "attn.qkv" (+ ".bias"), "mlp.gate_up" and "experts". Suffix "?": written when present;
// "!": written as zeros when absent but its weight (the role without ".bias") is written;
// none: required.
struct Family {
    std::string gguf;
    bool layerNorm = false; // LayerNorm epsilon key (else RMS)
    bool permuteQk = false; // llama: q/k rows to adjacent rope pairs
    bool outputRequired = false;
    bool tiedOnly = false; // llama.cpp always reads the output projection from token_embd
    std::vector<std::string> top;
    std::vector<std::string> layer;
};

Family familyOf(const ModelSpec& s) {
    const std::string& a = s.arch;
    const std::vector<std::string> gatedMlp = {"mlp_norm", "mlp.gate", "mlp.up", "mlp.down"};
    const std::vector<std::string> lnFused = {
        "attn_norm", "attn_norm.bias!", "attn.qkv", "attn.qkv.bias!", "attn.o",   "attn.o.bias!",
        "mlp_norm",  "mlp_norm.bias!",  "mlp.up",   "mlp.up.bias!",   "mlp.down", "mlp.down.bias!"};
    Family f;
    auto layer = [&](std::vector<std::string> head, const std::vector<std::string>& tail) {
        head.insert(head.end(), tail.begin(), tail.end());
        f.layer = std::move(head);
    };
    if (a == "llama" || a == "mistral" || a == "mixtral") {
        f.gguf = "llama";
        f.permuteQk = !s.rope.interleaved;
        f.top = {"embed", "final_norm", "lm_head?"};
        layer({"attn_norm", "attn.q", "attn.q.bias?", "attn.k", "attn.k.bias?", "attn.v",
               "attn.v.bias?", "attn.o", "attn.o.bias?", "mlp_norm"},
              s.isMoe() ? std::vector<std::string>{"mlp.router", "experts"}
                        : std::vector<std::string>{"mlp.gate", "mlp.gate.bias?", "mlp.up",
                                                   "mlp.up.bias?", "mlp.down", "mlp.down.bias?"});
    } else if (a == "qwen2") {
        f.gguf = "qwen2";
        f.top = {"embed", "final_norm", "lm_head?"};
        layer({"attn_norm", "attn.q", "attn.q.bias!", "attn.k", "attn.k.bias!", "attn.v",
               "attn.v.bias!", "attn.o"},
              gatedMlp);
    } else if (a == "qwen3") {
        f.gguf = "qwen3";
        f.top = {"embed", "final_norm", "lm_head?"};
        layer({"attn_norm", "attn.q", "attn.q_norm", "attn.k", "attn.k_norm", "attn.v", "attn.o"},
              gatedMlp);
    } else if (a == "gemma" || a == "gemma2") {
        f.gguf = a;
        f.tiedOnly = true;
        f.top = {"embed", "final_norm"};
        if (a == "gemma")
            layer({"attn_norm", "attn.q", "attn.k", "attn.v", "attn.o"}, gatedMlp);
        else
            layer({"attn_norm", "attn.q", "attn.k", "attn.v", "attn.o", "attn_post_norm"},
                  {"mlp_norm", "mlp.gate", "mlp.up", "mlp.down", "mlp_post_norm"});
    } else if (a == "phi3") {
        f.gguf = "phi3";
        f.outputRequired = true;
        f.top = {"embed", "final_norm", "lm_head?"};
        f.layer = {"attn_norm", "attn.qkv", "attn.o", "mlp_norm", "mlp.gate_up", "mlp.down"};
    } else if (a == "gpt2" || a == "gpt_neox" || a == "bloom") {
        f.gguf = a == "gpt_neox" ? "gptneox" : a;
        f.layerNorm = true;
        f.outputRequired = a == "gpt_neox";
        f.top = {"embed"};
        if (a == "gpt2") f.top.push_back("pos_embed");
        if (a == "bloom") f.top.insert(f.top.end(), {"embed_norm", "embed_norm.bias!"});
        f.top.insert(f.top.end(), {"final_norm", "final_norm.bias!", "lm_head?"});
        f.layer = lnFused;
    } else if (a == "stablelm") {
        f.gguf = "stablelm";
        f.layerNorm = true;
        f.top = {"embed", "final_norm", "final_norm.bias!", "lm_head?"};
        layer({"attn_norm", "attn_norm.bias!", "attn.q", "attn.q.bias?", "attn.k", "attn.k.bias?",
               "attn.v", "attn.v.bias?", "attn.q_norm?", "attn.k_norm?", "attn.o", "mlp_norm?",
               "mlp_norm.bias!"},
              {"mlp.gate", "mlp.up", "mlp.down"});
    } else if (a == "falcon") {
        f.gguf = "falcon";
        f.layerNorm = true;
        f.top = {"embed", "final_norm", "final_norm.bias!", "lm_head?"};
        f.layer = {"attn_norm", "attn_norm.bias!", "mlp_norm?", "mlp_norm.bias!",
                   "attn.qkv",  "attn.o",          "mlp.up",    "mlp.down"};
    } else if (a == "mamba") {
        f.gguf = "mamba";
        f.top = {"embed", "final_norm", "lm_head?"};
        f.layer = {"norm",         "mixer.in_proj", "mixer.conv1d",       "mixer.conv1d.bias!",
                   "mixer.x_proj", "mixer.dt_proj", "mixer.dt_proj.bias", "mixer.A_log",
                   "mixer.D",      "mixer.out_proj"};
    }
    return f;
}

// What llama.cpp's graph for the family computes, checked against the spec: a model that
// differs would load in llama.cpp and give other results.
void checkFamily(const ModelSpec& s, const Family& f) {
    const std::string& a = f.gguf;
    auto need = [&](bool ok, const std::string& what) {
        if (!ok)
            throw UnsupportedError("GGUF export: this " + s.arch + " model " + what +
                                   ", which llama.cpp's '" + a + "' architecture cannot express");
    };
    if (a == "mamba") {
        need(s.norm == NormType::RMSNorm, "uses LayerNorm");
        return;
    }
    const bool ln = s.norm == NormType::LayerNorm;
    need(ln == f.layerNorm, ln ? "uses LayerNorm" : "uses RMSNorm");
    need(s.embeddingDim() == s.dim, "projects the embedding (word_embed_proj_dim)");
    need(s.finalNorm, "has no final norm");
    need(!s.residualFromNorm, "takes the residual after the norm");
    need(!s.scaleByInverseLayer, "scales attention by the inverse layer index");
    need(s.rope.type != RopeType::Dynamic, "uses dynamic rope scaling");
    const bool gemma = a == "gemma" || a == "gemma2";
    need(gemma || s.embedScale == 1.0f, "scales the embedding");
    need(a == "gemma2" || (s.attnSoftcap == 0 && s.finalSoftcap == 0), "soft-caps logits");
    need(s.postNorms == (a == "gemma2"),
         s.postNorms ? "has post-sub-layer norms" : "has no post-sub-layer norms");
    const PosEmbedding pos = a == "gpt2"    ? PosEmbedding::Learned
                             : a == "bloom" ? PosEmbedding::Alibi
                                            : PosEmbedding::Rope;
    need(s.posEmbed == pos, "encodes positions differently");
    need(s.embedNorm == (a == "bloom"), "differs in the embedding norm");
    const bool gated = !(a == "gpt2" || a == "gptneox" || a == "falcon" || a == "bloom");
    need(s.gatedMlp == gated, gated ? "has an ungated MLP" : "has a gated MLP");
    need(!s.isMoe() || a == "llama", "is a mixture of experts");
    if (a == "llama" || a == "qwen2" || a == "qwen3" || a == "phi3" || a == "stablelm")
        need(s.hiddenAct == "silu", "uses activation '" + s.hiddenAct + "'");
    need(s.qkNorm == (a == "qwen3" || (a == "stablelm" && s.qkNorm)),
         s.qkNorm ? "normalises q and k" : "does not normalise q and k");
    if (a == "stablelm" && s.qkNorm) need(s.qkNormPerHead, "normalises q/k over all heads");
    if (a == "qwen3") need(!s.qkNormPerHead, "normalises q/k per head");
    switch (s.residual) {
    case ResidualStyle::PostNorm:
        need(false, "normalises after the residual");
        break;
    case ResidualStyle::Parallel:
        need(a == "gptneox" || a == "falcon" || a == "stablelm", "runs attention and MLP in "
                                                                 "parallel");
        if (a == "stablelm") need(s.sharedParallelNorm, "has a second parallel norm");
        if (a == "gptneox") need(!s.sharedParallelNorm, "shares one norm in parallel");
        break;
    case ResidualStyle::PreNorm:
        need(a != "falcon", "runs attention and MLP one after the other");
        break;
    }
    if (a == "llama" || a == "falcon")
        need(s.rope.partialRotaryFactor == 1.0, "rotates only part of each head");
    need(s.attnScale == 0 || a == "llama" || a == "gemma2", "scales attention scores");
}

// dst row r of a q/k projection comes from this source row. Within each head of hd rows, HF's
// rotate-half pairs (i, i + rot/2) become adjacent rows (2i, 2i+1) as convert_hf_to_gguf.py's
// LlamaModel.permute arranges them; rows from rot on (partial rotary) stay.
int64_t sourceRow(int64_t r, int64_t hd, int64_t rot) {
    const int64_t h = r / hd, j = r % hd;
    if (j >= rot) return r;
    return h * hd + (j % 2) * (rot / 2) + j / 2;
}

int64_t rotaryDims(const ModelSpec& s) {
    int64_t rot = int64_t(std::lround(double(s.headDim) * s.rope.partialRotaryFactor));
    return rot - rot % 2;
}

// llama.cpp's llama3 rope scaling: per rotated pair, the factor its frequency is divided by
// (convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors).
std::vector<float> llama3RopeFactors(const ModelSpec& s, int64_t rot) {
    const auto& r = s.rope;
    const double oldCtx = double(r.originalMaxPositions > 0 ? r.originalMaxPositions : 8192);
    const double lowWavelen = oldCtx / r.lowFreqFactor, highWavelen = oldCtx / r.highFreqFactor;
    std::vector<float> f;
    for (int64_t i = 0; i < rot; i += 2) {
        const double freq = 1.0 / std::pow(r.theta, double(i) / double(rot));
        const double wavelen = 2 * std::numbers::pi / freq;
        if (wavelen < highWavelen) {
            f.push_back(1.0f);
        } else if (wavelen > lowWavelen) {
            f.push_back(float(r.factor));
        } else {
            const double smooth =
                (oldCtx / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
            f.push_back(float(1.0 / ((1 - smooth) / r.factor + smooth)));
        }
    }
    return f;
}

// ---- metadata ---------------------------------------------------------------------------------

GgufValue u32(int64_t v) {
    return GgufValue::u32(uint32_t(v));
}

void archMetadata(Metadata& md, const ModelSpec& s, const Family& f,
                  std::vector<std::string>& warnings) {
    const std::string p = f.gguf + ".";
    auto put = [&](const std::string& key, GgufValue v) { md.emplace_back(p + key, std::move(v)); };
    put("vocab_size", u32(s.vocab));
    if (s.isMamba()) {
        // As convert_hf_to_gguf.py: no positional limit, and zero FFN/heads (unused but read).
        put("context_length", u32(int64_t(1) << 20));
        put("embedding_length", u32(s.dim));
        put("feed_forward_length", u32(0));
        put("attention.head_count", u32(0));
        put("block_count", u32(s.nLayers));
        put("ssm.conv_kernel", u32(s.ssmConv));
        put("ssm.inner_size", u32(s.ssmInner));
        put("ssm.state_size", u32(s.ssmState));
        put("ssm.time_step_rank", u32(s.ssmDtRank));
        put("attention.layer_norm_rms_epsilon", GgufValue::f32(s.normEps));
        put("ssm.dt_b_c_rms", GgufValue::boolean(false));
        return;
    }
    put("context_length", u32(s.maxSeq));
    put("embedding_length", u32(s.dim));
    put("block_count", u32(s.nLayers));
    put("feed_forward_length", u32(s.hidden));
    put("attention.head_count", u32(s.nHeads));
    put("attention.head_count_kv", u32(s.nKvHeads));
    if (s.headDim * s.nHeads != s.dim || f.gguf == "gemma" || f.gguf == "gemma2") {
        put("attention.key_length", u32(s.headDim));
        put("attention.value_length", u32(s.headDim));
    }
    put(f.layerNorm ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon",
        GgufValue::f32(s.normEps));
    if (s.posEmbed == PosEmbedding::Rope) {
        put("rope.freq_base", GgufValue::f32(float(s.rope.theta)));
        put("rope.dimension_count", u32(rotaryDims(s)));
        switch (s.rope.type) {
        case RopeType::Linear:
            put("rope.scaling.type", GgufValue::string("linear"));
            put("rope.scaling.factor", GgufValue::f32(float(s.rope.factor)));
            break;
        case RopeType::Yarn:
            put("rope.scaling.type", GgufValue::string("yarn"));
            put("rope.scaling.factor", GgufValue::f32(float(s.rope.factor)));
            if (s.rope.originalMaxPositions > 0)
                put("rope.scaling.original_context_length", u32(s.rope.originalMaxPositions));
            if (s.rope.attentionFactor > 0)
                put("rope.scaling.attn_factor", GgufValue::f32(float(s.rope.attentionFactor)));
            break;
        case RopeType::Llama3:
            if (f.gguf != "llama")
                throw UnsupportedError("GGUF export: llama3 rope scaling is only part of "
                                       "llama.cpp's llama architecture");
            break; // rope_freqs.weight
        default:
            break;
        }
    }
    if (s.isMoe()) {
        put("expert_count", u32(s.nExperts));
        put("expert_used_count", u32(s.nExpertsPerTok));
        if (!s.normTopkProb)
            warnings.push_back("llama.cpp renormalises the selected experts' weights; this "
                               "model does not");
    }
    if (f.gguf == "phi3") {
        if (s.rope.originalMaxPositions > 0)
            put("rope.scaling.original_context_length", u32(s.rope.originalMaxPositions));
        put("attention.sliding_window", u32(s.slidingWindow));
    } else if (f.gguf == "gemma2") {
        put("attn_logit_softcapping", GgufValue::f32(s.attnSoftcap));
        put("final_logit_softcapping", GgufValue::f32(s.finalSoftcap));
        put("attention.sliding_window", u32(s.slidingWindow));
        bool evenLayers = true;
        for (int64_t l = 0; l < s.nLayers; ++l)
            evenLayers &= s.layerIsSliding(l) == (l % 2 == 0 && s.slidingWindow > 0);
        if (!evenLayers)
            warnings.push_back("llama.cpp's gemma2 uses the sliding window on even layers; this "
                               "model uses it on other layers");
        if (s.attnSoftcap == 0 || s.finalSoftcap == 0)
            warnings.push_back("llama.cpp's gemma2 always soft-caps logits; this model does not");
    } else if (f.gguf == "gptneox" || f.gguf == "stablelm") {
        put("use_parallel_residual", GgufValue::boolean(s.residual == ResidualStyle::Parallel));
    } else if (s.slidingWindow > 0) {
        warnings.push_back("the sliding window of " + std::to_string(s.slidingWindow) +
                           " tokens is dropped: llama.cpp's " + f.gguf +
                           " attends to the whole context");
    }
    if (s.attnScale != 0) {
        put("attention.scale", GgufValue::f32(s.attnScale));
        if (f.gguf == "gemma2" &&
            std::abs(s.attnScale * std::sqrt(float(s.headDim)) - 1.0f) > 1e-6f)
            warnings.push_back("llama.cpp's gemma2 scales attention by 1/sqrt(head_dim) (or "
                               "1/sqrt(dim/heads) at 46 layers) and ignores attention.scale");
    }
}

void vocabMetadata(Metadata& md, const Tokenizer* tok, const ModelSpec& s,
                   std::vector<std::string>& warnings) {
    if (!tok) {
        warnings.push_back("the model has no tokenizer: the file has no vocabulary (llama.cpp "
                           "can run it only on token ids)");
        md.emplace_back("tokenizer.ggml.model", GgufValue::string("no_vocab"));
        return;
    }
    GgufVocab v = tok->ggufVocab(&warnings);
    const size_t n = v.tokens.size();
    if (int64_t(n) > s.vocab)
        throw UnsupportedError("GGUF export: the tokenizer has " + std::to_string(n) +
                               " tokens but the embedding only " + std::to_string(s.vocab) +
                               " rows");
    // llama.cpp needs one vocabulary entry per embedding row: unused padding tokens.
    for (int64_t id = int64_t(n); id < s.vocab; ++id) {
        v.tokens.push_back("[PAD" + std::to_string(id) + "]");
        if (!v.scores.empty()) v.scores.push_back(-1000.0f);
        v.tokenTypes.push_back(kGgufTokenUnused);
    }
    md.emplace_back("tokenizer.ggml.model", GgufValue::string(v.model));
    if (v.model == "gpt2") md.emplace_back("tokenizer.ggml.pre", GgufValue::string(v.pre));
    md.emplace_back("tokenizer.ggml.tokens", GgufValue::stringArray(std::move(v.tokens)));
    if (!v.scores.empty()) md.emplace_back("tokenizer.ggml.scores", GgufValue::f32Array(v.scores));
    md.emplace_back("tokenizer.ggml.token_type", GgufValue::i32Array(v.tokenTypes));
    if (!v.merges.empty())
        md.emplace_back("tokenizer.ggml.merges", GgufValue::stringArray(std::move(v.merges)));
    if (v.bosId >= 0) md.emplace_back("tokenizer.ggml.bos_token_id", u32(v.bosId));
    if (v.eosId >= 0) md.emplace_back("tokenizer.ggml.eos_token_id", u32(v.eosId));
    if (v.unkId >= 0) md.emplace_back("tokenizer.ggml.unknown_token_id", u32(v.unkId));
    if (v.padId >= 0) md.emplace_back("tokenizer.ggml.padding_token_id", u32(v.padId));
    md.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(v.addBos));
    md.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::boolean(v.addEos));
    if (v.model == "llama")
        md.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue::boolean(v.addSpacePrefix));
    if (!v.chatTemplate.empty())
        md.emplace_back("tokenizer.chat_template", GgufValue::string(v.chatTemplate));
}

// ---- tensor plan ------------------------------------------------------------------------------

enum class ValueOp { None, PlusOne, NegExp };

// One lcw tensor feeding a GGUF tensor.
struct Source {
    std::string name;
    const TensorView* view = nullptr;          // values (null: low-rank)
    const TensorView* lrA = nullptr;           // low-rank A [r, in]
    const TensorView* lrB = nullptr;           // low-rank B [out, r]
    const CompressedTensor* overlay = nullptr; // the overlay's entry, when it changed it
    int64_t rows = 0;                          // rows it contributes
    std::optional<DType> copyType;             // its rows are stored as this type at:
    const std::byte* copyData = nullptr;       //   row r at copyData + r * copyRowBytes
    uint64_t copyRowBytes = 0;                 //
    bool lossy = false;                        // other quantisation, pruning, low rank
    bool fromRecipe = false;                   // copyType is the overlay's GGUF packing
    std::string from;                          // for the report: what it is stored as
};

struct Planned {
    GgufTensorInfo info;
    std::vector<Source> sources;  // concatenated along rows (elements for 1-D)
    std::vector<float> generated; // no sources: these values (rope factors, zero biases)
    int64_t permuteHd = 0, rot = 0;
    ValueOp op = ValueOp::None;
};

struct Plan {
    Family family;
    std::vector<Planned> tensors;
};

class Planner {
public:
    Planner(const WeightSource& w, std::optional<DType> type)
        : m_w(w), m_s(w.spec()), m_type(type), m_overlay(dynamic_cast<const CompressedModel*>(&w)) {
    }

    Plan build() {
        const auto archName = ggufArchitecture(m_s);
        if (!archName)
            throw UnsupportedError("GGUF export: llama.cpp has no architecture for '" + m_s.arch +
                                   "' models");
        m_plan.family = familyOf(m_s);
        const Family& f = m_plan.family;
        checkFamily(m_s, f);
        for (const auto& e : expectedTensors(m_s)) m_expected[e.name] = e.shape;
        for (const std::string& role : f.top) addRole(-1, role);
        if (f.gguf == "llama" && m_s.rope.type == RopeType::Llama3) {
            Planned t;
            t.generated = llama3RopeFactors(m_s, rotaryDims(m_s));
            finish(t, "rope_freqs", "rope_freqs.weight", {int64_t(t.generated.size())}, -1);
        } else if (m_w.find("extra.rope_freqs.weight")) {
            // a GGUF source's llama3 factors, passed on
            Planned t;
            t.sources.push_back(source("extra.rope_freqs.weight", 0));
            finish(t, "rope_freqs", "rope_freqs.weight", {t.sources[0].rows}, -1);
        }
        // Top-level tensors after the blocks in llama.cpp's order: move final norm and output.
        std::vector<Planned> tail;
        for (auto it = m_plan.tensors.begin(); it != m_plan.tensors.end();) {
            const std::string& c = it->info.canonical;
            if (c == "final_norm" || c == "final_norm.bias" || c == "lm_head") {
                tail.push_back(std::move(*it));
                it = m_plan.tensors.erase(it);
            } else {
                ++it;
            }
        }
        for (int64_t l = 0; l < m_s.nLayers; ++l)
            for (const std::string& role : f.layer) addRole(l, role);
        for (auto& t : tail) m_plan.tensors.push_back(std::move(t));
        if (!m_w.find("lm_head") && f.outputRequired) {
            // llama.cpp requires an output projection here: the tied embedding, written again.
            Planned t;
            t.sources.push_back(source("embed", m_s.embeddingDim()));
            finish(t, "lm_head", "output.weight", m_expected.at("embed"), -1);
        }
        checkEverythingWritten();
        return std::move(m_plan);
    }

private:
    std::string layerName(int64_t l, const std::string& role) const {
        return l < 0 ? role : "layers." + std::to_string(l) + "." + role;
    }

    Source source(const std::string& name, int64_t cols) {
        Source s;
        s.name = name;
        const CompressedTensor* c = m_overlay ? m_overlay->compressed(name) : nullptr;
        // A quantised overlay tensor is read row by row from its packed form (sourceRowFloats);
        // find() would keep a float32 copy of the whole tensor.
        s.view = c && c->quantized ? &c->view : m_w.find(name);
        if (!s.view && m_overlay && m_overlay->isLowRank(name)) {
            s.lrA = m_w.find(name + ".lowrank_a");
            s.lrB = m_w.find(name + ".lowrank_b");
            if (!s.lrA || !s.lrB || s.lrA->dtype != DType::F32 || s.lrB->dtype != DType::F32)
                throw Error("GGUF export: the low-rank factors of '" + name + "' are missing");
            s.lossy = true;
            s.from = "low-rank factors";
        }
        if (!s.view && !s.lrA) throw Error("GGUF export: tensor '" + name + "' is missing");
        m_used.insert(name);
        const int64_t numel = s.view ? s.view->numel() : s.lrB->rows() * s.lrA->cols();
        const int64_t srcCols = s.view ? s.view->cols() : s.lrA->cols();
        if (auto e = m_expected.find(name); e != m_expected.end()) {
            const std::vector<int64_t> shape =
                s.view ? s.view->shape : std::vector<int64_t>{s.lrB->rows(), s.lrA->cols()};
            if (shape != e->second)
                throw UnsupportedError(
                    "GGUF export: tensor '" + name + "' has shape " + shapeStr(shape) +
                    " but the model's dimensions give " + shapeStr(e->second) +
                    " (per-block shapes from structured pruning cannot be written to GGUF)");
        }
        if (cols > 0 && (srcCols != cols || numel % cols != 0))
            throw Error("GGUF export: tensor '" + name + "' has rows of " +
                        std::to_string(srcCols) + ", " + std::to_string(cols) + " expected");
        s.rows = cols > 0 ? numel / cols : 1;
        if (c) {
            s.overlay = c;
            s.lossy = c->quantized || c->sparsity.has_value();
            const auto& ps = c->packed.settings;
            if (c->quantized) s.from = ps.describe();
            if (c->sparsity) s.from += std::string(s.from.empty() ? "" : ", ") + "pruned";
            if (c->quantized && compress::methodIsGguf(ps.method) && !c->sparsity &&
                c->packed.outlierCols.empty() && cols > 0) {
                s.copyType = compress::ggufMethodType(ps.method);
                s.copyData = reinterpret_cast<const std::byte*>(c->packed.codes.data());
                s.copyRowBytes = *dtypeBytesFor(*s.copyType, uint64_t(cols));
                s.fromRecipe = true;
            } else if (!s.lossy && s.view) {
                s.copyType = DType::F32; // a float replacement (folded scales): its values
            }
        } else if (s.view) {
            s.lossy = dtypeIsQuantized(s.view->dtype);
            s.from = std::string(dtypeName(s.view->dtype));
            if (dtypeIsFloatLike(s.view->dtype)) s.copyType = s.view->dtype;
        }
        if (s.copyType && !s.copyData && s.view) {
            s.copyData = s.view->data;
            s.copyRowBytes = s.view->rowBytes();
        }
        return s;
    }

    // Fills in the info and appends.
    void finish(Planned& t, const std::string& canonical, const std::string& name,
                std::vector<int64_t> shape, int64_t layer) {
        GgufTensorInfo& i = t.info;
        i.name = name;
        i.canonical = canonical;
        i.shape = std::move(shape);
        i.layer = layer;
        for (const Source& s : t.sources) i.sources.push_back(s.name);
        const bool oneD = i.shape.size() <= 1;
        i.floatOnly =
            oneD || endsWith(name, "_norm.weight") || !endsWith(name, ".weight") ||
            endsWith(name, "ffn_gate_inp.weight") || endsWith(name, "position_embd.weight") ||
            endsWith(name, "ssm_conv1d.weight") || endsWith(name, "ssm_x.weight") ||
            endsWith(name, "ssm_dt.weight") || name == "rope_freqs.weight" || t.op != ValueOp::None;
        if (!t.sources.empty()) {
            const Source& s0 = t.sources[0];
            i.storedType = s0.fromRecipe            ? *s0.copyType
                           : s0.overlay || !s0.view ? DType::F32
                                                    : s0.view->dtype;
            bool same = t.op == ValueOp::None && (!oneD || t.permuteHd == 0);
            bool recipe = true;
            for (const Source& s : t.sources) {
                same = same && s.copyType && s.copyType == s0.copyType;
                recipe = recipe && s.fromRecipe;
            }
            if (same) i.packedType = s0.copyType;
            if (same && recipe) m_recipeType[name] = *s0.copyType;
        }
        if (i.floatOnly)
            i.defaultType = DType::F32;
        else if (auto r = m_recipeType.find(name); r != m_recipeType.end())
            i.defaultType = r->second;
        else if (m_type)
            i.defaultType = *m_type;
        else if (i.packedType)
            i.defaultType = *i.packedType;
        else
            i.defaultType = DType::F32;
        m_plan.tensors.push_back(std::move(t));
    }

    std::string gguf(const std::string& canonical) const {
        // Falcon-40B: llama.cpp's attn_norm is the MLP's norm and attn_norm_2 the attention's
        // (the reverse of ggufFromCanonical's one-name view; see load_gguf.cpp).
        if (m_plan.family.gguf == "falcon" && present("layers.0.mlp_norm"))
            if (auto ln = splitCanonical(canonical); ln && ln->layer >= 0) {
                const std::string head = "layers." + std::to_string(ln->layer) + ".";
                if (ln->role.rfind("attn_norm", 0) == 0)
                    return *ggufFromCanonical(head + "mlp_norm" + ln->role.substr(9), "falcon");
                if (ln->role.rfind("mlp_norm", 0) == 0)
                    return *ggufFromCanonical(head + "attn_norm" + ln->role.substr(8), "falcon");
            }
        auto n = ggufFromCanonical(canonical, m_plan.family.gguf);
        if (!n) throw Error("GGUF export: no GGUF name for '" + canonical + "'");
        return *n;
    }

    bool present(const std::string& name) const {
        return m_w.find(name) != nullptr || (m_overlay && m_overlay->isLowRank(name));
    }

    // Writes role (with its "?"/"!" marker) of block l (-1: model level).
    void addRole(int64_t l, std::string role) {
        const char mark = role.back();
        if (mark == '?' || mark == '!') role.pop_back();
        const std::string head = l < 0 ? "" : "layers." + std::to_string(l) + ".";
        const int64_t qd = m_s.nHeads * m_s.headDim, kvd = m_s.nKvHeads * m_s.headDim;
        const Family& f = m_plan.family;
        Planned t;
        if (role == "attn.qkv" || role == "attn.qkv.bias") {
            const std::string sfx = role == "attn.qkv" ? "" : ".bias";
            const std::vector<std::string> parts = {head + "attn.q" + sfx, head + "attn.k" + sfx,
                                                    head + "attn.v" + sfx};
            if (!sfx.empty() && !present(parts[0])) {
                if (mark == '!') zeros(t, head + role, qd + 2 * kvd, l);
                return;
            }
            for (const auto& p : parts) t.sources.push_back(source(p, sfx.empty() ? m_s.dim : 0));
            finish(t, head + role, gguf(head + role),
                   sfx.empty() ? std::vector<int64_t>{qd + 2 * kvd, m_s.dim}
                               : std::vector<int64_t>{qd + 2 * kvd},
                   l);
            return;
        }
        if (role == "mlp.gate_up") {
            t.sources.push_back(source(head + "mlp.gate", m_s.dim));
            t.sources.push_back(source(head + "mlp.up", m_s.dim));
            finish(t, head + role, gguf(head + "mlp.up"), {2 * m_s.hidden, m_s.dim}, l);
            return;
        }
        if (role == "experts") {
            for (const char* which : {"gate", "up", "down"}) {
                Planned e;
                const bool down = std::string(which) == "down";
                const int64_t cols = down ? m_s.hidden : m_s.dim;
                for (int64_t x = 0; x < m_s.nExperts; ++x)
                    e.sources.push_back(
                        source(head + "mlp.experts." + std::to_string(x) + "." + which, cols));
                const std::string merged = head + "mlp.experts_" + which;
                finish(e, merged, gguf(merged), {m_s.nExperts, down ? m_s.dim : m_s.hidden, cols},
                       l);
            }
            return;
        }
        if ((role == "attn.q_norm" || role == "attn.k_norm") && m_s.qkNormPerHead) {
            // StableLM: per-head LayerNorm weights stacked [heads, head_dim]
            const int64_t heads = role == "attn.q_norm" ? m_s.nHeads : m_s.nKvHeads;
            if (!present(head + role + ".0")) {
                if (mark != '?') throw Error("GGUF export: '" + head + role + ".0' is missing");
                return;
            }
            for (int64_t h = 0; h < heads; ++h)
                t.sources.push_back(source(head + role + "." + std::to_string(h), m_s.headDim));
            finish(t, head + role, gguf(head + role), {heads, m_s.headDim}, l);
            return;
        }
        const std::string name = head + role;
        if (!present(name)) {
            const std::string weight =
                endsWith(name, ".bias") ? name.substr(0, name.size() - 5) : std::string();
            if (mark == '!' && !weight.empty() && present(weight)) {
                const auto e = m_expected.find(weight);
                const int64_t n = e != m_expected.end() ? e->second.front() : 0;
                if (n <= 0) throw Error("GGUF export: no shape for '" + name + "'");
                zeros(t, name, n, l);
                return;
            }
            if (mark == '?' || mark == '!') return;
            throw Error("GGUF export: tensor '" + name + "' is missing");
        }
        const TensorView* v = m_w.find(name);
        std::vector<int64_t> shape = v ? v->shape : m_overlay->base().get(name).shape;
        if (role == "mixer.conv1d" && shape.size() == 3 && shape[1] == 1)
            shape = {shape[0], shape[2]}; // llama.cpp squeezes [d_inner, 1, kernel]
        if (role == "lm_head" && f.tiedOnly)
            throw UnsupportedError("GGUF export: llama.cpp's " + f.gguf +
                                   " always ties the output projection to the embedding; this "
                                   "model has its own lm_head");
        t.sources.push_back(source(name, shape.size() >= 2 ? shape.back() : 0));
        if (f.permuteQk && (role == "attn.q" || role == "attn.k" || role == "attn.q.bias" ||
                            role == "attn.k.bias")) {
            t.permuteHd = m_s.headDim;
            t.rot = rotaryDims(m_s);
        }
        if (m_s.normPlusOne &&
            (endsWith(role, "norm") && !endsWith(role, "q_norm") && !endsWith(role, "k_norm")))
            t.op = ValueOp::PlusOne;                       // Gemma: llama.cpp stores 1 + w
        if (role == "mixer.A_log") t.op = ValueOp::NegExp; // llama.cpp stores A = -exp(A_log)
        finish(t, name, gguf(name), std::move(shape), l);
    }

    void zeros(Planned& t, const std::string& canonical, int64_t n, int64_t l) {
        t.generated.assign(size_t(n), 0.0f);
        finish(t, canonical, gguf(canonical), {n}, l);
    }

    // Every tensor the model's forward reads (and every tensor an overlay added) must be in the
    // file: llama.cpp has no place for anything else, and dropping it would change the model.
    void checkEverythingWritten() const {
        std::vector<std::string> names;
        for (const auto& [n, shape] : m_expected) names.push_back(n);
        for (int64_t l = 0; l < m_s.nLayers; ++l)
            for (const char* b : {"attn.q.bias", "attn.k.bias", "attn.v.bias", "attn.o.bias",
                                  "mlp.gate.bias", "mlp.up.bias", "mlp.down.bias"})
                names.push_back(layerName(l, b));
        if (m_overlay)
            for (const auto& n : m_overlay->addedNames()) names.push_back(n);
        for (const auto& n : names) {
            if (m_used.count(n) || !present(n)) continue;
            throw UnsupportedError("GGUF export: llama.cpp's " + m_plan.family.gguf +
                                   " architecture has no place for tensor '" + n + "'");
        }
    }

    const WeightSource& m_w;
    const ModelSpec& m_s;
    std::optional<DType> m_type;
    const CompressedModel* m_overlay;
    Plan m_plan;
    std::map<std::string, std::vector<int64_t>> m_expected;
    std::set<std::string> m_used;
    std::map<std::string, DType> m_recipeType;
};

// ---- writing ----------------------------------------------------------------------------------

// The values of all sources of a 1-D tensor, concatenated.
std::vector<float> vectorValues(const Planned& t, int64_t n) {
    if (t.sources.empty()) return t.generated;
    std::vector<float> v;
    v.reserve(size_t(n));
    for (const Source& s : t.sources) {
        const TensorView& view = *s.view;
        const size_t at = v.size();
        v.resize(at + size_t(view.numel()));
        for (int64_t r = 0; r < view.rows(); ++r)
            dequantizeRow(view.dtype, view.row(r), v.data() + at + r * view.cols(), view.cols());
    }
    return v;
}

void applyOp(ValueOp op, float* x, int64_t n) {
    if (op == ValueOp::PlusOne)
        for (int64_t i = 0; i < n; ++i) x[i] += 1.0f;
    else if (op == ValueOp::NegExp)
        for (int64_t i = 0; i < n; ++i) x[i] = -std::exp(x[i]);
}

// Row r of source s as floats.
void sourceRowFloats(const Source& s, int64_t r, float* out, int64_t cols) {
    if (s.overlay && s.overlay->quantized) {
        s.overlay->dequantizeRows(r, 1, out);
        return;
    }
    if (s.view) {
        dequantizeRow(s.view->dtype, s.view->row(r), out, cols);
        return;
    }
    // low rank: W[r, :] = B[r, :] · A
    const int64_t rank = s.lrA->rows();
    const auto* a = reinterpret_cast<const float*>(s.lrA->data);
    const auto* b = reinterpret_cast<const float*>(s.lrB->data) + r * rank;
    std::fill(out, out + cols, 0.0f);
    for (int64_t k = 0; k < rank; ++k) {
        const float bk = b[k];
        const float* ak = a + k * cols;
        for (int64_t j = 0; j < cols; ++j) out[j] += bk * ak[j];
    }
}

// Writes tensor t as `type` into dst; returns whether every row was copied as it was.
bool fillTensor(const Planned& t, DType type, std::byte* dst, uint64_t nbytes,
                const float* importance) {
    const std::vector<int64_t>& shape = t.info.shape;
    if (shape.size() <= 1) {
        const int64_t n = shape.empty() ? 1 : shape[0];
        std::vector<float> v = vectorValues(t, n);
        if (int64_t(v.size()) != n)
            throw Error("GGUF export: tensor '" + t.info.name + "' has " +
                        std::to_string(v.size()) + " values, " + std::to_string(n) + " expected");
        if (t.permuteHd > 0) {
            std::vector<float> p(v.size());
            for (int64_t e = 0; e < n; ++e)
                p[size_t(e)] = v[size_t(sourceRow(e, t.permuteHd, t.rot))];
            v.swap(p);
        }
        applyOp(t.op, v.data(), n);
        quantizeRow(type, v.data(), dst, n, importance);
        return !t.sources.empty() && t.info.packedType == type && t.op == ValueOp::None;
    }
    const int64_t cols = shape.back();
    const int64_t rows = t.info.shape.size() == 2 ? shape[0] : shape[0] * shape[1];
    const uint64_t rowBytes = nbytes / uint64_t(rows);
    const int64_t rowsPerExpert = shape.size() == 3 ? shape[1] : rows;
    std::vector<int64_t> starts; // first global row of each source
    int64_t total = 0;
    for (const Source& s : t.sources) {
        starts.push_back(total);
        total += s.rows;
    }
    if (total != rows)
        throw Error("GGUF export: the sources of '" + t.info.name + "' hold " +
                    std::to_string(total) + " rows, " + std::to_string(rows) + " expected");
    bool allExact = t.op == ValueOp::None;
    for (const Source& s : t.sources) allExact = allExact && s.copyType == type;
    ParallelErrors errors;
#pragma omp parallel if (uint64_t(rows) * uint64_t(cols) >= (1u << 16))
    {
        std::vector<float> buf;
        errors.run([&] { buf.resize(static_cast<size_t>(cols)); });
#pragma omp for schedule(dynamic, 8)
        for (int64_t r = 0; r < rows; ++r)
            errors.run([&] {
                const int64_t sr = t.permuteHd > 0 ? sourceRow(r, t.permuteHd, t.rot) : r;
                const size_t si =
                    size_t(std::upper_bound(starts.begin(), starts.end(), sr) - starts.begin() - 1);
                const Source& s = t.sources[si];
                const int64_t pr = sr - starts[si];
                std::byte* out = dst + uint64_t(r) * rowBytes;
                if (t.op == ValueOp::None && s.copyType == type) {
                    std::memcpy(out, s.copyData + uint64_t(pr) * s.copyRowBytes, rowBytes);
                    return;
                }
                sourceRowFloats(s, pr, buf.data(), cols);
                applyOp(t.op, buf.data(), cols);
                const float* imp = importance ? importance + (r / rowsPerExpert) * cols : nullptr;
                quantizeRow(type, buf.data(), out, cols, imp);
            });
    }
    errors.rethrow();
    return allExact;
}

// Checks once, before the file is opened, that each type can be read and written (so that
// a missing quantiser fails with the tensor's name and no file).
void probeTypes(const std::vector<Planned>& plan, const std::vector<DType>& types) {
    std::set<DType> checked;
    for (size_t i = 0; i < plan.size(); ++i) {
        const DType t = types[i];
        if (checked.count(t)) continue;
        const int64_t n = dtypeBlockElems(t);
        std::vector<float> x(size_t(n), 0.5f);
        std::vector<std::byte> b(size_t(dtypeBlockBytes(t)));
        try {
            quantizeRow(t, x.data(), b.data(), n);
            dequantizeRow(t, b.data(), x.data(), n);
        } catch (const std::exception& e) {
            throw UnsupportedError("GGUF export: tensor '" + plan[i].info.name +
                                   "' cannot be "
                                   "written as " +
                                   std::string(dtypeName(t)) + ": " + e.what());
        }
        checked.insert(t);
    }
}

std::string modelName(const std::string& path) {
    fs::path p(path);
    if (p.filename().empty()) p = p.parent_path();
    return p.filename().string();
}

} // namespace

const char* ggufTensorStatusName(GgufTensorStatus s) {
    switch (s) {
    case GgufTensorStatus::Exact:
        return "exact";
    case GgufTensorStatus::Converted:
        return "converted";
    case GgufTensorStatus::ReEncoded:
        return "re-encoded";
    }
    return "?";
}

std::optional<std::string> ggufArchitecture(const ModelSpec& spec) {
    const std::string g = familyOf(spec).gguf;
    if (g.empty()) return std::nullopt;
    return g;
}

DType ggufFallbackType(DType t, int64_t cols) {
    if (cols > 0 && cols % dtypeBlockElems(t) == 0) return t;
    // llama.cpp's substitutes: the table the recipe methods use
    if (const auto m = compress::ggufMethodForType(t))
        if (const auto f = compress::ggufFallback(*m, cols)) return compress::ggufMethodType(*f);
    return DType::F16;
}

uint32_t llamaFileType(DType t) {
    for (const auto& f : llamaFtypes()) // the "_S" mix comes first for the k-quants
        if (f.defaultType == t) return f.id;
    throw UnsupportedError("GGUF has no file type for " + std::string(dtypeName(t)));
}

std::vector<GgufTensorInfo> planGgufTensors(const WeightSource& weights,
                                            std::optional<DType> type) {
    Plan plan = Planner(weights, type).build();
    std::vector<GgufTensorInfo> out;
    out.reserve(plan.tensors.size());
    for (auto& t : plan.tensors) out.push_back(std::move(t.info));
    return out;
}

GgufMixModel ggufMixModelOf(const WeightSource& weights) {
    const ModelSpec& s = weights.spec();
    const auto arch = ggufArchitecture(s);
    if (!arch)
        throw UnsupportedError("GGUF export: llama.cpp has no architecture for '" + s.arch +
                               "' models");
    GgufMixModel m;
    m.arch = *arch;
    m.nLayer = int(s.nLayers);
    m.nHead = int(s.nHeads);
    m.nHeadKv = int(s.nKvHeads);
    m.nExpert = int(s.nExperts);
    return m;
}

std::vector<GgufMixTensor> ggufMixTensorsOf(const std::vector<GgufTensorInfo>& plan) {
    std::vector<GgufMixTensor> out;
    out.reserve(plan.size());
    for (const auto& t : plan)
        out.push_back(GgufMixTensor::fromRowMajor(
            t.name, t.shape, t.floatOnly || !t.packedType ? DType::F32 : *t.packedType));
    return out;
}

GgufExportResult exportGguf(const Model& model, const WeightSource& weights,
                            const GgufExportOptions& o) {
    GgufExportOptions named = o;
    if (named.name.empty()) named.name = modelName(model.path());
    return exportGguf(weights, model.hasTokenizer() ? &model.tokenizer() : nullptr, named);
}

namespace {

/// Refuses an output path whose folder is missing or that names a folder.
void checkOutputPath(const std::string& path) {
    if (path.empty()) throw ArgumentError("GGUF export: no output path");
    std::error_code ec;
    const fs::path dir = fs::path(path).parent_path();
    if (!dir.empty() && !fs::is_directory(dir, ec))
        throw ArgumentError(path + ": the folder " + dir.string() + " does not exist");
    if (fs::is_directory(path, ec)) throw ArgumentError(path + ": is a folder, not a file name");
}

/// Each tensor's type (the callback's choice, then llama-quantize's fallback where blocks do not
/// fit), its report row in res.tensors, and the file type (the requested one, else the type
/// holding most weights).
std::vector<DType> chooseTypes(const Plan& plan, const GgufExportOptions& o,
                               GgufExportResult& res) {
    std::vector<DType> types;
    std::map<DType, int64_t> elems;
    for (const Planned& t : plan.tensors) {
        const DType want = o.typeFor ? o.typeFor(t.info) : t.info.defaultType;
        const int64_t cols = t.info.shape.empty() ? 1 : t.info.shape.back();
        const DType got = ggufFallbackType(want, cols);
        types.push_back(got);
        GgufTensorReport r;
        r.name = t.info.name;
        r.shape = t.info.shape;
        r.requested = want;
        r.type = got;
        TensorDesc d{t.info.name, got, t.info.shape};
        r.bytes = tensorDescBytes(d);
        if (got != want)
            r.note = std::string(dtypeName(want)) + " needs rows that are a multiple of " +
                     std::to_string(dtypeBlockElems(want)) + " (these have " +
                     std::to_string(cols) + "): fallback to " + std::string(dtypeName(got));
        res.tensors.push_back(std::move(r));
        if (!t.info.floatOnly) {
            int64_t n = 1;
            for (int64_t x : t.info.shape) n *= x;
            elems[got] += n;
        }
    }
    probeTypes(plan.tensors, types);
    if (o.fileType) {
        res.fileType = *o.fileType;
    } else if (o.type) {
        res.fileType = llamaFileType(*o.type);
    } else {
        DType most = DType::F32;
        int64_t best = -1;
        for (const auto& [t, n] : elems)
            if (n > best) most = t, best = n;
        res.fileType = llamaFileType(most);
    }
    return types;
}

/// The file's metadata: general.*, the architecture's keys, the vocabulary, then the caller's
/// keys (replacing equal keys).
Metadata buildMetadata(const Plan& plan, const ModelSpec& s, const Tokenizer* tokenizer,
                       const GgufExportOptions& o, GgufExportResult& res) {
    Metadata md;
    md.emplace_back("general.architecture", GgufValue::string(plan.family.gguf));
    md.emplace_back("general.name", GgufValue::string(o.name.empty() ? s.arch : o.name));
    md.emplace_back("general.file_type", u32(res.fileType));
    md.emplace_back("general.quantization_version", u32(2));
    archMetadata(md, s, plan.family, res.warnings);
    vocabMetadata(md, tokenizer, s, res.warnings);
    for (const auto& kv : o.metadata) { // (clang 14 cannot capture structured bindings)
        const std::string& k = kv.first;
        auto it = std::find_if(md.begin(), md.end(), [&](const auto& e) { return e.first == k; });
        if (it != md.end())
            it->second = kv.second;
        else
            md.emplace_back(k, kv.second);
    }
    return md;
}

} // namespace

GgufExportResult exportGguf(const WeightSource& weights, const Tokenizer* tokenizer,
                            const GgufExportOptions& o) {
    const auto t0 = std::chrono::steady_clock::now();
    GgufExportResult res;
    res.path = o.path;
    checkOutputPath(o.path);
    Plan plan = Planner(weights, o.type).build();
    res.arch = plan.family.gguf;
    if (const RuntimeQuant* rq = weights.runtimeQuant(); rq && rq->rotation.active())
        throw UnsupportedError("GGUF export: the configuration's rotation has online transforms "
                               "(recipe rotation.online_down / online_qk) that llama.cpp does "
                               "not run");
    if (weights.runtimeQuant())
        res.warnings.push_back("activation and KV-cache quantisation are not part of GGUF "
                               "files: llama.cpp runs the weights only");
    const std::vector<DType> types = chooseTypes(plan, o, res);
    const Metadata md = buildMetadata(plan, weights.spec(), tokenizer, o, res);

    std::vector<TensorDesc> descs;
    uint64_t totalBytes = 0;
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
        descs.push_back({plan.tensors[i].info.name, types[i], plan.tensors[i].info.shape});
        totalBytes += res.tensors[i].bytes;
    }
    uint64_t done = 0;
    auto fill = [&](size_t i, std::byte* dst, uint64_t nbytes) {
        const Planned& t = plan.tensors[i];
        if (o.progress && !o.progress->report(totalBytes ? double(done) / double(totalBytes) : 0.0,
                                              "writing " + t.info.name))
            throw CancelSignal{};
        const float* imp = o.importance ? o.importance(t.info.name) : nullptr;
        GgufTensorReport& r = res.tensors[i];
        const bool exact = fillTensor(t, types[i], dst, nbytes, imp);
        bool lossy = false;
        std::string from;
        for (const Source& src : t.sources) {
            lossy = lossy || src.lossy;
            if (from.empty() && src.copyType != types[i]) from = src.from;
        }
        r.status = exact   ? GgufTensorStatus::Exact
                   : lossy ? GgufTensorStatus::ReEncoded
                           : GgufTensorStatus::Converted;
        if (t.sources.empty()) {
            r.status = GgufTensorStatus::Converted;
            if (r.note.empty()) r.note = "generated";
        } else if (r.status == GgufTensorStatus::ReEncoded && !from.empty()) {
            r.note += std::string(r.note.empty() ? "" : "; ") + "from " + from;
        }
        // Streaming: the source pages of a memory-mapped model leave the resident set once
        // their tensor is written (peak memory stays near one tensor, not the model).
        for (const Source& src : t.sources)
            for (const TensorView* v : {src.view, src.lrA, src.lrB})
                if (v && v->data) MappedFile::releasePages(v->data, v->nbytes);
        done += nbytes;
    };
    try {
        writeGguf(o.path, md, descs, fill, 3);
    } catch (const CancelSignal&) {
        res.status = Status::Cancelled;
        res.tensors.clear();
        res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return res;
    }
    if (o.progress) o.progress->report(1.0, "written");
    std::error_code ec;
    res.bytes = fs::file_size(o.path, ec);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

nlohmann::ordered_json ggufExportReportJson(const GgufExportResult& r) {
    nlohmann::ordered_json j;
    j["file"] = r.path;
    j["architecture"] = r.arch;
    j["file_type"] = r.fileType;
    j["status"] = r.status == Status::Ok ? "ok" : "cancelled";
    j["bytes"] = r.bytes;
    j["seconds"] = r.seconds;
    nlohmann::ordered_json ts = nlohmann::ordered_json::array();
    for (const auto& t : r.tensors)
        ts.push_back({{"name", t.name},
                      {"shape", t.shape},
                      {"type", std::string(dtypeName(t.type))},
                      {"requested", std::string(dtypeName(t.requested))},
                      {"bytes", t.bytes},
                      {"status", ggufTensorStatusName(t.status)},
                      {"note", t.note}});
    j["tensors"] = ts;
    j["warnings"] = r.warnings;
    return j;
}

} // namespace lcw
