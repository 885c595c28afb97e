// GGUF model loader: architecture metadata → spec, tensors by llama.cpp names → canonical
// names, tokenizer.ggml.* → GgufVocab.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/gguf.h"
#include "core/io/tensor_names.h"
#include "core/model/loaders.h"
#include "core/tokenizer/tokenizer.h"

#include <cmath>
#include <limits>

namespace lcw::detail {

namespace {

const char* const kArchs[] = {"llama", "qwen2", "qwen3", "gemma", "phi3"};

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
    return v;
}

} // namespace

std::unique_ptr<Model> loadGgufModel(const std::string& file, const LoadOptions& opts) {
    GgufFile g = readGguf(file);
    const auto arch = g.getString("general.architecture");
    if (!arch) throw FormatError(file, "missing general.architecture");
    bool known = false;
    for (const char* a : kArchs) known |= (*arch == a);
    if (!known)
        throw UnsupportedError(file + ": unsupported GGUF architecture '" + *arch +
                               "' (supported: llama (incl. Mixtral), qwen2, qwen3, gemma, phi3)");
    const std::string p = *arch + ".";
    auto req = [&](const std::string& key) {
        auto v = g.getInt(p + key);
        if (!v) throw FormatError(file, "missing metadata '" + p + key + "'");
        if (*v <= 0 || *v > (int64_t(1) << 40))
            throw FormatError(file,
                              "metadata '" + p + key + "' has invalid value " + std::to_string(*v));
        return *v;
    };
    auto opt = [&](const std::string& key, int64_t def) {
        auto v = g.getInt(p + key);
        if (v && (*v <= 0 || *v > (int64_t(1) << 40)))
            throw FormatError(file,
                              "metadata '" + p + key + "' has invalid value " + std::to_string(*v));
        return v.value_or(def);
    };

    auto m = std::make_unique<Model>();
    m->setPath(file);
    ModelSpec s;
    s.arch = *arch;
    s.sourceFormat = "gguf";
    s.dim = req("embedding_length");
    s.nLayers = req("block_count");
    s.hidden = req("feed_forward_length");
    s.nHeads = req("attention.head_count");
    s.nKvHeads = opt("attention.head_count_kv", s.nHeads);
    if (s.dim % s.nHeads != 0 && !g.find(p + "attention.key_length"))
        throw FormatError(file, "embedding_length is not a multiple of attention.head_count and "
                                "there is no attention.key_length");
    s.headDim = opt("attention.key_length", s.dim / s.nHeads);
    if (auto vl = g.getInt(p + "attention.value_length"); vl && *vl != s.headDim)
        throw UnsupportedError(file + ": attention.value_length differs from key_length");
    s.maxSeq = opt("context_length", 2048);
    s.normEps = float(g.getDouble(p + "attention.layer_norm_rms_epsilon").value_or(1e-5));
    if (!(s.normEps > 0)) throw FormatError(file, "layer_norm_rms_epsilon must be positive");
    s.rope.theta = g.getDouble(p + "rope.freq_base").value_or(10000.0);
    // llama.cpp permutes llama q/k rows to Meta's adjacent-pair layout; qwen uses NEOX order.
    s.rope.interleaved = (*arch == "llama");
    if (auto rd = g.getInt(p + "rope.dimension_count")) {
        if (*rd <= 0 || *rd > s.headDim || *rd % 2)
            throw FormatError(file, "rope.dimension_count " + std::to_string(*rd) +
                                        " is invalid for head size " + std::to_string(s.headDim));
        s.rope.partialRotaryFactor = double(*rd) / double(s.headDim);
    }
    const std::string scaling = g.getString(p + "rope.scaling.type").value_or("none");
    const double factor = g.getDouble(p + "rope.scaling.factor")
                              .value_or(g.getDouble(p + "rope.scale_linear").value_or(1.0));
    if (scaling == "none" || scaling.empty()) {
        if (factor != 1.0 && g.find(p + "rope.scale_linear")) {
            s.rope.type = RopeType::Linear;
            s.rope.factor = factor;
        }
    } else if (scaling == "linear") {
        s.rope.type = RopeType::Linear;
        s.rope.factor = factor;
    } else if (scaling == "yarn") {
        s.rope.type = RopeType::Yarn;
        s.rope.factor = factor;
        s.rope.originalMaxPositions = opt("rope.scaling.original_context_length", s.maxSeq);
        if (auto af = g.getDouble(p + "rope.scaling.attn_factor")) s.rope.attentionFactor = *af;
    } else {
        throw UnsupportedError(file + ": unsupported rope scaling type '" + scaling +
                               "' (supported: none, linear, yarn)");
    }
    if (!(s.rope.factor > 0)) throw FormatError(file, "rope scaling factor must be positive");

    if (*arch == "phi3") {
        s.qkvLayout = QkvLayout::Contiguous;
        s.gateUpFused = true;
        s.slidingWindow = g.getInt(p + "attention.sliding_window").value_or(0);
    }
    if (auto ne = g.getInt(p + "expert_count"); ne && *ne > 0) {
        s.nExperts = *ne;
        s.nExpertsPerTok = opt("expert_used_count", 2);
    }

    m->keepAlive(g.file);
    for (auto& t : g.tensors) {
        TensorView v = t;
        if (auto c = canonicalFromGguf(t.name)) {
            auto ln = splitCanonical(*c);
            if (ln && ln->layer >= s.nLayers)
                throw FormatError(file, "tensor '" + t.name + "' belongs to layer " +
                                            std::to_string(ln->layer) + " but block_count is " +
                                            std::to_string(s.nLayers));
            v.name = *c;
            addSplitTensor(*m, s, std::move(v));
            continue;
        }
        v.name = "extra." + t.name;
        if (t.name == "rope_freqs.weight")
            m->addWarning(file + ": rope_freqs.weight (per-dimension rope scaling) is not "
                                 "applied; long-context results may differ from llama.cpp");
        m->addTensor(std::move(v));
    }
    if (auto vs = g.getInt(p + "vocab_size"))
        s.vocab = *vs;
    else if (const TensorView* e = m->find("embed"); e && e->shape.size() == 2)
        s.vocab = e->shape[0];
    else if (const GgufValue* toks = g.find("tokenizer.ggml.tokens"))
        s.vocab = int64_t(toks->count);
    s.tiedEmbeddings = m->find("lm_head") == nullptr;
    s.attnBias = m->find("layers.0.attn.q.bias") != nullptr;
    if (*arch == "qwen2" && !s.attnBias)
        throw FormatError(file, "qwen2 model without q/k/v biases (blk.0.attn_q.bias missing)");
    s.attnOutBias = m->find("layers.0.attn.o.bias") != nullptr;
    s.mlpBias = m->find("layers.0.mlp.gate.bias") != nullptr;
    s.qkNorm = (*arch == "qwen3");
    if (*arch == "gemma") {
        // llama.cpp's converter stores Gemma's RMSNorm weights with the +1 already added; the
        // embedding scale and GeGLU activation are part of the architecture.
        s.hiddenAct = "gelu_tanh";
        s.embedScale = float(std::sqrt(double(s.dim)));
        s.normPlusOne = false;
    }

    std::optional<GgufVocab> vocab = readVocab(g);
    if (vocab) {
        s.bosId = vocab->bosId;
        if (vocab->eosId >= 0) s.eosIds.push_back(vocab->eosId);
        const int32_t eot = tokenId(g, "tokenizer.ggml.eot_token_id");
        if (eot >= 0 && eot != vocab->eosId) s.eosIds.push_back(eot);
    }
    m->mutableSpec() = s;
    validateModel(*m, file);

    if (!opts.tokenizerPath.empty()) {
        m->setTokenizer(loadTokenizerFile(opts.tokenizerPath, s.vocab));
    } else if (vocab) {
        try {
            m->setTokenizer(Tokenizer::fromGguf(*vocab, file));
        } catch (const std::exception& e) {
            if (opts.requireTokenizer) rethrowWithContext("loading tokenizer");
            m->addWarning(file + ": loading tokenizer: " + e.what() +
                          " (continuing without a tokenizer)");
        }
    } else if (opts.requireTokenizer) {
        throw FormatError(file, "no tokenizer: the file has no tokenizer.ggml.tokens");
    } else {
        m->addWarning(file + ": no tokenizer.ggml.tokens; loaded without a tokenizer");
    }
    return m;
}

} // namespace lcw::detail
