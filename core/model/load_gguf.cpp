// GGUF model loader: architecture metadata → spec, tensors by llama.cpp names → canonical
// names, tokenizer.ggml.* → GgufVocab.
#include "core/common/checked.h"
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/gguf.h"
#include "core/io/hf_config.h"
#include "core/io/tensor_names.h"
#include "core/model/loaders.h"
#include "core/tokenizer/tokenizer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>

namespace lcw::detail {

namespace {

// GGUF general.architecture → lcw's architecture name.
struct ArchName {
    const char* gguf;
    const char* lcw;
};
constexpr ArchName kArchs[] = {
    {"llama", "llama"},       {"qwen2", "qwen2"},   {"qwen3", "qwen3"}, {"gemma", "gemma"},
    {"gemma2", "gemma2"},     {"phi3", "phi3"},     {"gpt2", "gpt2"},   {"gptneox", "gpt_neox"},
    {"stablelm", "stablelm"}, {"falcon", "falcon"}, {"bloom", "bloom"}, {"mamba", "mamba"},
};

bool isLayerNormArch(const std::string& a) {
    return a == "gpt2" || a == "gpt_neox" || a == "stablelm" || a == "falcon" || a == "bloom";
}

bool endsWith(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
}

// Values of a small F32/F16/BF16 tensor as floats.
std::vector<float> floatValues(const TensorView& t) {
    const auto n = size_t(t.numel());
    std::vector<float> v(n);
    if (t.dtype == DType::F32 && t.nbytes == n * 4) {
        std::memcpy(v.data(), t.data, n * 4);
    } else if ((t.dtype == DType::F16 || t.dtype == DType::BF16) && t.nbytes == n * 2) {
        for (size_t i = 0; i < n; ++i) {
            uint16_t h;
            std::memcpy(&h, t.data + i * 2, 2);
            v[i] = t.dtype == DType::F16 ? f16ToF32(h) : bf16ToF32(h);
        }
    } else {
        throw UnsupportedError(t.file + ": tensor '" + t.fileName + "' has dtype " +
                               std::string(dtypeName(t.dtype)) + "; F32, F16 or BF16 expected");
    }
    return v;
}

// llama.cpp's Mamba converter stores A = -exp(A_log) ("ssm_a"); lcw keeps A_log.
TensorView aLogFromSsmA(Model& m, const TensorView& t) {
    std::vector<float> a = floatValues(t);
    std::vector<std::byte> buf(a.size() * sizeof(float));
    for (size_t i = 0; i < a.size(); ++i) {
        if (!(a[i] < 0))
            throw FormatError(t.file, "tensor '" + t.fileName +
                                          "' (Mamba A = -exp(A_log)) has a non-negative entry");
        const float l = float(std::log(-double(a[i])));
        std::memcpy(buf.data() + i * sizeof(float), &l, sizeof(float));
    }
    TensorView v = t;
    v.dtype = DType::F32;
    v.nbytes = buf.size();
    v.data = m.ownBuffer(std::move(buf));
    v.fileTransposed = false;
    return v;
}

// Row r of a 2-D tensor as a 1-D view (StableLM's stacked per-head q/k norms).
TensorView rowView(const TensorView& t, std::string name, int64_t r) {
    TensorView v = t;
    v.name = std::move(name);
    v.data = t.data + uint64_t(r) * t.rowBytes();
    v.nbytes = t.rowBytes();
    v.shape = {t.cols()};
    v.fileRowOffset = t.fileRowOffset + r;
    return v;
}

// Token ids are stored as uint32 with 0xFFFFFFFF (or any negative int) meaning "none".
int32_t tokenId(const GgufFile& g, const std::string& key) {
    const GgufValue* v = g.find(key);
    if (!v) return -1;
    auto i = v->asInt();
    if (!i || v->type == GgufType::Bool)
        throw FormatError(g.path, "metadata '" + key + "' should be a token id, is " +
                                      std::string(ggufTypeName(v->type)));
    if (*i < 0 || *i > std::numeric_limits<int32_t>::max()) return -1;
    return int32_t(*i);
}

std::optional<GgufVocab> readVocab(const GgufFile& g) {
    const GgufValue* toks = g.find("tokenizer.ggml.tokens");
    const auto model = g.getString("tokenizer.ggml.model");
    if (!toks || (model && (*model == "none" || *model == "no_vocab"))) return std::nullopt;
    if (!toks->isArray() || toks->elemType != GgufType::String)
        throw FormatError(g.path, "tokenizer.ggml.tokens must be an array of strings");
    if (toks->count > uint64_t(std::numeric_limits<int32_t>::max()))
        throw FormatError(g.path, "tokenizer.ggml.tokens is too long");
    GgufVocab v;
    v.model = model.value_or("llama");
    v.pre = g.getString("tokenizer.ggml.pre").value_or("default");
    v.tokens = toks->strings;
    const uint64_t n = toks->count;
    if (const GgufValue* sc = g.find("tokenizer.ggml.scores")) {
        if (!sc->isArray() || sc->count != n || ggufScalarSize(sc->elemType) == 0 ||
            sc->elemType == GgufType::Bool)
            throw FormatError(g.path, "tokenizer.ggml.scores must be a numeric array with one "
                                      "entry per token (" +
                                          std::to_string(n) + ")");
        v.scores.resize(size_t(n));
        for (uint64_t i = 0; i < n; ++i) v.scores[size_t(i)] = float(*sc->arrayDouble(i));
    }
    if (const GgufValue* tt = g.find("tokenizer.ggml.token_type")) {
        if (!tt->isArray() || tt->count != n || !tt->arrayInt(0).has_value() ||
            tt->elemType == GgufType::Bool)
            throw FormatError(g.path, "tokenizer.ggml.token_type must be an integer array "
                                      "with one entry per token (" +
                                          std::to_string(n) + ")");
        v.tokenTypes.resize(size_t(n));
        for (uint64_t i = 0; i < n; ++i) v.tokenTypes[size_t(i)] = int32_t(*tt->arrayInt(i));
    }
    if (const GgufValue* mg = g.find("tokenizer.ggml.merges")) {
        if (!mg->isArray() || mg->elemType != GgufType::String)
            throw FormatError(g.path, "tokenizer.ggml.merges must be an array of strings");
        v.merges = mg->strings;
    }
    v.bosId = tokenId(g, "tokenizer.ggml.bos_token_id");
    v.eosId = tokenId(g, "tokenizer.ggml.eos_token_id");
    v.unkId = tokenId(g, "tokenizer.ggml.unknown_token_id");
    v.padId = tokenId(g, "tokenizer.ggml.padding_token_id");
    for (int32_t id : {v.bosId, v.eosId, v.unkId, v.padId})
        if (id >= int32_t(n))
            throw FormatError(g.path, "special token id " + std::to_string(id) +
                                          " is outside the vocabulary of " + std::to_string(n));
    // llama.cpp's defaults: SentencePiece vocabularies add BOS and a space prefix, BPE ones not.
    const bool spm = v.model == "llama";
    v.addBos = g.getBool("tokenizer.ggml.add_bos_token").value_or(spm);
    v.addEos = g.getBool("tokenizer.ggml.add_eos_token").value_or(false);
    v.addSpacePrefix = g.getBool("tokenizer.ggml.add_space_prefix").value_or(spm);
    v.chatTemplate = g.getString("tokenizer.chat_template").value_or("");
    return v;
}

} // namespace

namespace {

/// The file's general.architecture as lcw's name; unsupported ones are refused.
std::string lcwArch(const GgufFile& g, const std::string& file) {
    const auto garch = g.getString("general.architecture");
    if (!garch) throw FormatError(file, "missing general.architecture");
    std::string arch;
    std::string supported;
    for (const auto& a : kArchs) {
        if (*garch == a.gguf) arch = a.lcw;
        supported += std::string(supported.empty() ? "" : ", ") + a.gguf;
    }
    if (arch.empty())
        throw UnsupportedError(file + ": unsupported GGUF architecture '" + *garch +
                               "' (supported: " + supported + "; llama includes Mixtral)");
    return arch;
}

/// The architecture's metadata keys ("<general.architecture>.<key>"), checked as they are read.
struct ArchMeta {
    const GgufFile& g;
    const std::string& file;
    std::string p; ///< the key prefix

    std::optional<int64_t> getInt(const std::string& key) const { return g.getInt(p + key); }
    /// A float value; NaN or ±Inf (which JSON configs cannot hold, but GGUF files can) is refused
    /// here, naming the key, so no check downstream has to think of them.
    std::optional<double> getDouble(const std::string& key) const {
        const auto v = g.getDouble(p + key);
        if (v && !std::isfinite(*v))
            throw FormatError(file, "metadata '" + p + key + "' is " + std::to_string(*v) +
                                        ", not a finite number");
        return v;
    }
    /// A required positive count (at most kMaxFileDim; block_count at most kMaxLayers).
    int64_t req(const std::string& key) const {
        auto v = g.getInt(p + key);
        if (!v) throw FormatError(file, "missing metadata '" + p + key + "'");
        return check(key, *v);
    }
    /// An optional positive count.
    int64_t opt(const std::string& key, int64_t def) const {
        auto v = g.getInt(p + key);
        return v ? check(key, *v) : def;
    }
    int64_t check(const std::string& key, int64_t v) const {
        if (v <= 0)
            throw FormatError(file,
                              "metadata '" + p + key + "' has invalid value " + std::to_string(v));
        return checked::count(v, file, "metadata '" + p + key + "'",
                              key == "block_count" ? kMaxLayers : kMaxFileDim);
    }
};

/// Widths, depth, heads (or Mamba's state sizes), context length and norm epsilon.
void readDimensions(const ArchMeta& meta, ModelSpec& s, bool mamba, bool layerNorm) {
    const std::string& file = meta.file;
    s.dim = meta.req("embedding_length");
    s.nLayers = meta.req("block_count");
    if (mamba) {
        // llama.cpp writes feed_forward_length = head_count = 0 for Mamba.
        s.ssmInner = meta.req("ssm.inner_size");
        s.ssmState = meta.req("ssm.state_size");
        s.ssmConv = meta.req("ssm.conv_kernel");
        s.ssmDtRank = meta.req("ssm.time_step_rank");
        s.hidden = s.ssmInner;
        s.maxSeq = int64_t(1) << 20;      // recurrent: no positional limit
        s.posEmbed = PosEmbedding::Alibi; // unused; no rotary tables
    } else {
        s.hidden = meta.req("feed_forward_length");
        s.nHeads = meta.req("attention.head_count");
        s.nKvHeads = meta.opt("attention.head_count_kv", s.nHeads);
        if (s.dim % s.nHeads != 0 && !meta.g.find(meta.p + "attention.key_length"))
            throw FormatError(file, "embedding_length is not a multiple of attention.head_count "
                                    "and there is no attention.key_length");
        s.headDim = meta.opt("attention.key_length", s.dim / s.nHeads);
        if (auto vl = meta.getInt("attention.value_length"); vl && *vl != s.headDim)
            throw UnsupportedError(file + ": attention.value_length differs from key_length");
        s.maxSeq = meta.opt("context_length", 2048);
    }
    const std::string epsKey =
        layerNorm ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon";
    s.normEps = float(meta.getDouble(epsKey).value_or(1e-5));
    if (!(s.normEps > 0 && s.normEps < 1))
        throw FormatError(file, "metadata '" + meta.p + epsKey + "' is " +
                                    std::to_string(s.normEps) + ", not in (0, 1)");
}

/// Rotary base, layout, partial rotation and scaling (none, linear, YaRN).
void readRope(const ArchMeta& meta, ModelSpec& s, const std::string& arch, bool mamba) {
    const std::string& file = meta.file;
    s.rope.theta = meta.getDouble("rope.freq_base").value_or(10000.0);
    // llama.cpp permutes llama q/k rows to Meta's adjacent-pair layout; the other families keep
    // the rotate-half (NEOX) order of the Hugging Face weights.
    s.rope.interleaved = (arch == "llama");
    if (auto rd = meta.getInt("rope.dimension_count"); rd && !mamba) {
        if (*rd <= 0 || *rd > s.headDim || *rd % 2)
            throw FormatError(file, "rope.dimension_count " + std::to_string(*rd) +
                                        " is invalid for head size " + std::to_string(s.headDim));
        s.rope.partialRotaryFactor = double(*rd) / double(s.headDim);
    }
    const std::string scaling = meta.g.getString(meta.p + "rope.scaling.type").value_or("none");
    const double factor = meta.getDouble("rope.scaling.factor")
                              .value_or(meta.getDouble("rope.scale_linear").value_or(1.0));
    if (scaling == "none" || scaling.empty()) {
        if (factor != 1.0 && meta.g.find(meta.p + "rope.scale_linear")) {
            s.rope.type = RopeType::Linear;
            s.rope.factor = factor;
        }
    } else if (scaling == "linear") {
        s.rope.type = RopeType::Linear;
        s.rope.factor = factor;
    } else if (scaling == "yarn") {
        s.rope.type = RopeType::Yarn;
        s.rope.factor = factor;
        s.rope.originalMaxPositions = meta.opt("rope.scaling.original_context_length", s.maxSeq);
        if (auto af = meta.getDouble("rope.scaling.attn_factor")) {
            if (!(*af > 0))
                throw FormatError(file, "metadata '" + meta.p +
                                            "rope.scaling.attn_factor' must be positive");
            s.rope.attentionFactor = *af;
        }
    } else {
        throw UnsupportedError(file + ": unsupported rope scaling type '" + scaling +
                               "' (supported: none, linear, yarn)");
    }
    if (!(s.rope.factor > 0)) throw FormatError(file, "rope scaling factor must be positive");
    if (auto clamp = meta.getDouble("attention.clamp_kqv"); clamp && *clamp != 0)
        throw UnsupportedError(file + ": attention.clamp_kqv (q/k/v clamping) is not supported");
}

/// Gemma 2: GeGLU, embedding scale, post-norms, logit soft-caps, query scale, sliding window
/// on even layers.
void readGemma2(const ArchMeta& meta, ModelSpec& s) {
    // Norm weights are stored with the +1 already added (as for gemma).
    s.hiddenAct = "gelu_tanh";
    s.embedScale = float(std::sqrt(double(s.dim)));
    s.postNorms = true;
    auto cap = [&](const std::string& key, double def) {
        const double v = meta.getDouble(key).value_or(def);
        if (!(v >= 0)) throw FormatError(meta.file, "metadata '" + meta.p + key + "' must be >= 0");
        return float(v);
    };
    s.attnSoftcap = cap("attn_logit_softcapping", 50.0);
    s.finalSoftcap = cap("final_logit_softcapping", 30.0);
    // GGUF has no query_pre_attn_scalar: llama.cpp scales by 1/sqrt(head_dim), except for the
    // 27B model (46 blocks) whose query_pre_attn_scalar is embedding_length / head_count.
    // A generic attention.scale, where a writer sets it, wins.
    if (auto sc = meta.getDouble("attention.scale")) {
        if (!(*sc > 0)) throw FormatError(meta.file, "attention.scale must be positive");
        s.attnScale = float(*sc);
    } else if (s.nLayers == 46) {
        s.attnScale = float(1.0 / std::sqrt(double(s.dim / s.nHeads)));
    }
    // Even layers use the sliding window (llama.cpp's swa pattern 2, as transformers).
    const int64_t window = meta.getInt("attention.sliding_window").value_or(4096);
    if (window > 0) {
        s.slidingWindow = window;
        s.slidingLayers.assign(size_t(s.nLayers), false);
        for (int64_t i = 0; i < s.nLayers; i += 2) s.slidingLayers[size_t(i)] = true;
    }
}

/// What each family's graph in llama.cpp fixes beyond the metadata: layouts, activations,
/// residual style, position embedding, ALiBi, experts.
void readFamilyTraits(const ArchMeta& meta, ModelSpec& s, const std::string& arch, bool layerNorm) {
    if (arch == "phi3") {
        s.qkvLayout = QkvLayout::Contiguous;
        s.gateUpFused = true;
        s.slidingWindow = meta.getInt("attention.sliding_window").value_or(0);
    }
    if (layerNorm) {
        s.norm = NormType::LayerNorm;
        s.normBias = true;
        // llama.cpp's converters store every fused qkv as [q rows; k rows; v rows]: GPT-2's
        // c_attn already is (after transposing the Conv1D weight to [out, in]); GPT-NeoX and
        // Bloom ([head][q|k|v] per head in Hugging Face) and Falcon ([kv group][q.., k, v]) are
        // re-ordered by convert_hf_to_gguf.py so that ggml can take q, k and v as plain views.
        s.qkvLayout = QkvLayout::Contiguous;
    }
    if (arch == "gpt2") {
        // convert_hf_to_gguf.py transposes GPT-2's Conv1D weights to [out, in].
        s.gatedMlp = false;
        s.hiddenAct = "gelu_tanh";
        s.posEmbed = PosEmbedding::Learned;
    } else if (arch == "gpt_neox") {
        s.gatedMlp = false;
        s.hiddenAct = "gelu";
        if (meta.g.getBool(meta.p + "use_parallel_residual").value_or(true))
            s.residual = ResidualStyle::Parallel;
    } else if (arch == "stablelm") {
        s.hiddenAct = "silu";
        s.qkNormPerHead = true;
    } else if (arch == "falcon") {
        // llama.cpp's Falcon is always parallel attention + MLP with rotary positions (the
        // ALiBi Falcon-RW models are not a llama.cpp architecture).
        s.gatedMlp = false;
        s.hiddenAct = "gelu";
        s.residual = ResidualStyle::Parallel;
    } else if (arch == "bloom") {
        s.gatedMlp = false;
        s.hiddenAct = "gelu_tanh";
        s.posEmbed = PosEmbedding::Alibi;
        s.embedNorm = true;
    } else if (arch == "gemma2") {
        readGemma2(meta, s);
    }
    if (arch == "bloom" || arch == "falcon") {
        if (auto mb = meta.getDouble("attention.max_alibi_bias"); mb && *mb != 8.0)
            throw UnsupportedError(meta.file + ": attention.max_alibi_bias other than 8 is not "
                                               "supported");
    }
    if (auto ne = meta.getInt("expert_count"); ne && *ne > 0) {
        s.nExperts = meta.check("expert_count", *ne);
        s.nExpertsPerTok = meta.opt("expert_used_count", 2);
    }
}

/// Falcon-40B (two norms): convert_hf_to_gguf.py names ln_mlp "attn_norm" and ln_attn
/// "attn_norm_2", and llama.cpp's graph feeds attention from attn_norm_2 and the MLP from
/// attn_norm. lcw's attn_norm is the attention's norm, so the two swap.
void swapFalconNorms(std::string& c) {
    const std::string bias = endsWith(c, ".bias") ? ".bias" : "";
    const size_t dot = c.find('.', 7); // after "layers.N"
    const std::string role = c.substr(dot + 1);
    if (role == "attn_norm" + bias)
        c = c.substr(0, dot) + ".mlp_norm" + bias;
    else if (role == "mlp_norm" + bias)
        c = c.substr(0, dot) + ".attn_norm" + bias;
}

/// Adds one tensor under its canonical name, reshaped where llama.cpp stores it differently
/// from the Hugging Face weight (Mamba's A, conv1d and D; StableLM's stacked per-head norms).
void addCanonicalTensor(Model& m, const ModelSpec& s, const std::string& arch, TensorView v) {
    const bool mamba = arch == "mamba";
    if (mamba && endsWith(v.name, ".mixer.A_log")) {
        v = aLogFromSsmA(m, v);
    } else if (mamba && endsWith(v.name, ".mixer.conv1d") && v.shape.size() == 2) {
        // squeezed [d_inner, kernel] → the [d_inner, 1, kernel] of the HF weight
        v.shape = {v.shape[0], 1, v.shape[1]};
    } else if (mamba && endsWith(v.name, ".mixer.D") && v.shape.size() == 2 && v.shape[1] == 1) {
        v.shape = {v.shape[0]};
    } else if (arch == "stablelm" && v.shape.size() == 2 &&
               (endsWith(v.name, ".attn.q_norm") || endsWith(v.name, ".attn.k_norm"))) {
        // llama.cpp stacks StableLM's per-head LayerNorm weights into [heads, head_dim]
        for (int64_t h = 0; h < v.shape[0]; ++h)
            m.addTensor(rowView(v, v.name + "." + std::to_string(h), h));
        return;
    }
    addSplitTensor(m, s, std::move(v));
}

/// Every tensor of the file under its canonical name; the ones lcw has no name for are kept
/// as "extra.<gguf name>".
void addTensors(const GgufFile& g, Model& m, const ModelSpec& s, const std::string& arch,
                const std::string& file) {
    const bool falconTwoNorms = arch == "falcon" && g.findTensor("blk.0.attn_norm_2.weight");
    for (auto& t : g.tensors) {
        TensorView v = t;
        if (auto c = canonicalFromGguf(t.name, arch)) {
            if (falconTwoNorms) swapFalconNorms(*c);
            auto ln = splitCanonical(*c);
            if (ln && ln->layer >= s.nLayers)
                throw FormatError(file, "tensor '" + t.name + "' belongs to layer " +
                                            std::to_string(ln->layer) + " but block_count is " +
                                            std::to_string(s.nLayers));
            v.name = *c;
            addCanonicalTensor(m, s, arch, std::move(v));
            continue;
        }
        v.name = "extra." + t.name;
        if (t.name == "rope_freqs.weight")
            m.addWarning(file + ": rope_freqs.weight (per-dimension rope scaling) is not "
                                "applied; long-context results may differ from llama.cpp");
        m.addTensor(std::move(v));
    }
}

/// What the metadata leaves to the tensors: vocabulary size, tied embeddings, biases, q/k
/// norms, shared parallel norms, learned position count.
void readFromTensors(const ArchMeta& meta, const Model& m, ModelSpec& s, const std::string& arch) {
    if (auto vs = meta.getInt("vocab_size"))
        s.vocab = meta.check("vocab_size", *vs);
    else if (const TensorView* e = m.find("embed"); e && e->shape.size() == 2)
        s.vocab = e->shape[0];
    else if (const GgufValue* toks = meta.g.find("tokenizer.ggml.tokens"))
        s.vocab = int64_t(toks->count);
    s.tiedEmbeddings = m.find("lm_head") == nullptr;
    if (arch == "mamba") {
        s.ssmConvBias = m.find("layers.0.mixer.conv1d.bias") != nullptr;
        s.ssmBias = m.find("layers.0.mixer.in_proj.bias") != nullptr;
    } else {
        s.attnBias = m.find("layers.0.attn.q.bias") != nullptr;
        if (arch == "qwen2" && !s.attnBias)
            throw FormatError(meta.file,
                              "qwen2 model without q/k/v biases (blk.0.attn_q.bias missing)");
        s.attnOutBias = m.find("layers.0.attn.o.bias") != nullptr;
        s.mlpBias = m.find("layers.0.mlp.gate.bias") != nullptr ||
                    (!s.gatedMlp && m.find("layers.0.mlp.up.bias") != nullptr);
    }
    s.qkNorm = (arch == "qwen3") || (arch == "stablelm" && m.find("layers.0.attn.q_norm.0"));
    if (arch == "stablelm" && !m.find("layers.0.mlp_norm")) {
        // llama.cpp: a StableLM block without ffn_norm is a parallel-residual one whose MLP
        // reads the attention norm's output.
        s.residual = ResidualStyle::Parallel;
        s.sharedParallelNorm = true;
    }
    if (arch == "falcon") s.sharedParallelNorm = m.find("layers.0.mlp_norm") == nullptr;
    if (s.posEmbed == PosEmbedding::Learned)
        if (const TensorView* pe = m.find("pos_embed"); pe && pe->shape.size() == 2)
            s.maxSeq = pe->shape[0];
    if (arch == "gemma") {
        // llama.cpp's converter stores Gemma's RMSNorm weights with the +1 already added; the
        // embedding scale and GeGLU activation are part of the architecture.
        s.hiddenAct = "gelu_tanh";
        s.embedScale = float(std::sqrt(double(s.dim)));
        s.normPlusOne = false;
    }
}

/// The tokenizer: a separate file when asked for, else the file's own vocabulary; a model
/// without one loads with a warning unless a tokenizer is required.
void attachTokenizer(Model& m, int64_t vocabSize, const std::optional<GgufVocab>& vocab,
                     const LoadOptions& opts, const std::string& file) {
    if (!opts.tokenizerPath.empty()) {
        m.setTokenizer(loadTokenizerFile(opts.tokenizerPath, vocabSize));
    } else if (vocab) {
        try {
            m.setTokenizer(Tokenizer::fromGguf(*vocab, file));
        } catch (const std::exception& e) {
            if (opts.requireTokenizer) rethrowWithContext("loading tokenizer");
            m.addWarning(file + ": loading tokenizer: " + e.what() +
                         " (continuing without a tokenizer)");
        }
    } else if (opts.requireTokenizer) {
        throw FormatError(file, "no tokenizer: the file has no tokenizer.ggml.tokens");
    } else {
        m.addWarning(file + ": no tokenizer.ggml.tokens; loaded without a tokenizer");
    }
}

} // namespace

std::unique_ptr<Model> loadGgufModel(const std::string& file, const LoadOptions& opts) {
    GgufFile g = readGguf(file);
    const std::string arch = lcwArch(g, file);
    const ArchMeta meta{g, file, *g.getString("general.architecture") + "."};
    auto m = std::make_unique<Model>();
    m->setPath(file);
    ModelSpec s;
    s.arch = arch;
    s.sourceFormat = "gguf";
    const bool layerNorm = isLayerNormArch(arch);
    readDimensions(meta, s, arch == "mamba", layerNorm);
    readRope(meta, s, arch, arch == "mamba");
    readFamilyTraits(meta, s, arch, layerNorm);
    checkSpecSizes(s, file); // before the fused tensors are split by these dimensions

    m->keepAlive(g.file);
    addTensors(g, *m, s, arch, file);
    readFromTensors(meta, *m, s, arch);
    checkSpecSizes(s, file);
    std::optional<GgufVocab> vocab = readVocab(g);
    if (vocab) {
        s.bosId = vocab->bosId;
        if (vocab->eosId >= 0) s.eosIds.push_back(vocab->eosId);
        const int32_t eot = tokenId(g, "tokenizer.ggml.eot_token_id");
        if (eot >= 0 && eot != vocab->eosId) s.eosIds.push_back(eot);
    }
    m->mutableSpec() = s;
    validateModel(*m, file);
    attachTokenizer(*m, s.vocab, vocab, opts, file);
    return m;
}

} // namespace lcw::detail
