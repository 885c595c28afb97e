#include "core/io/hf_config.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>

namespace lcw {

namespace {

using json = nlohmann::json;

struct Ctx {
    const json& cfg;
    const std::string& src;

    [[noreturn]] void fail(const std::string& what) const { throw FormatError(src, what); }

    const json* get(const json& obj, const char* key) const {
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return nullptr;
        return &*it;
    }

    std::optional<int64_t> optInt(const json& obj, const char* key) const {
        const json* v = get(obj, key);
        if (!v) return std::nullopt;
        if (v->is_number_integer()) return v->get<int64_t>();
        if (v->is_number_unsigned()) {
            const uint64_t u = v->get<uint64_t>();
            if (u > uint64_t(std::numeric_limits<int64_t>::max()))
                fail(std::string("\"") + key + "\" is too large");
            return int64_t(u);
        }
        if (v->is_number_float()) {
            const double d = v->get<double>();
            if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e18) return int64_t(d);
        }
        fail(std::string("\"") + key + "\" must be an integer, got " + v->dump());
    }
    std::optional<double> optNum(const json& obj, const char* key) const {
        const json* v = get(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_number())
            fail(std::string("\"") + key + "\" must be a number, got " + v->dump());
        return v->get<double>();
    }
    std::optional<bool> optBool(const json& obj, const char* key) const {
        const json* v = get(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_boolean())
            fail(std::string("\"") + key + "\" must be true or false, got " + v->dump());
        return v->get<bool>();
    }
    std::optional<std::string> optStr(const json& obj, const char* key) const {
        const json* v = get(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_string())
            fail(std::string("\"") + key + "\" must be a string, got " + v->dump());
        return v->get<std::string>();
    }
    int64_t reqPositive(const char* key) const {
        auto v = optInt(cfg, key);
        if (!v) fail(std::string("missing \"") + key + "\"");
        if (*v <= 0)
            fail(std::string("\"") + key + "\" must be positive, got " + std::to_string(*v));
        return *v;
    }
    // int, list of ints, or null
    std::vector<int32_t> idList(const char* key) const {
        std::vector<int32_t> out;
        const json* v = get(cfg, key);
        if (!v) return out;
        auto one = [&](const json& x) {
            if (!x.is_number_integer() || x.get<int64_t>() < 0 ||
                x.get<int64_t>() > std::numeric_limits<int32_t>::max())
                fail(std::string("\"") + key + "\" must hold non-negative token ids, got " +
                     v->dump());
            out.push_back(int32_t(x.get<int64_t>()));
        };
        if (v->is_array())
            for (const auto& x : *v) one(x);
        else
            one(*v);
        return out;
    }
};

void parseRope(const Ctx& c, ModelSpec& s, std::vector<std::string>* warnings) {
    const json& cfg = c.cfg;
    // transformers 5: rope_parameters {rope_type, rope_theta, ...}; 4.x: rope_theta at top level
    // and rope_scaling {type|rope_type, factor, ...} (or null).
    const json* rp = c.get(cfg, "rope_parameters");
    if (rp && !rp->is_object()) c.fail("\"rope_parameters\" must be an object");
    if (rp && !rp->contains("rope_type") && !rp->contains("rope_theta") && !rp->contains("type")) {
        // per-layer-type dictionaries ({"full_attention": {...}}) belong to other architectures
        c.fail("\"rope_parameters\" has no rope_type/rope_theta (per-layer-type rope parameters "
               "are not supported for this architecture)");
    }
    const json* rs = c.get(cfg, "rope_scaling");
    if (rs && !rs->is_object()) c.fail("\"rope_scaling\" must be an object or null");
    const json* p = rp ? rp : rs;

    RopeConfig& r = s.rope;
    r.interleaved = false;
    if (auto t = rp ? c.optNum(*rp, "rope_theta") : std::nullopt)
        r.theta = *t;
    else if (auto t2 = c.optNum(cfg, "rope_theta"))
        r.theta = *t2;
    else
        r.theta = 10000.0;
    if (!(r.theta > 0)) c.fail("rope_theta must be positive");

    if (auto prf = p ? c.optNum(*p, "partial_rotary_factor") : std::nullopt)
        r.partialRotaryFactor = *prf;
    else if (auto prf2 = c.optNum(cfg, "partial_rotary_factor"))
        r.partialRotaryFactor = *prf2;
    if (!(r.partialRotaryFactor > 0 && r.partialRotaryFactor <= 1))
        c.fail("partial_rotary_factor must be in (0, 1]");

    std::string type = "default";
    if (p) {
        if (auto t = c.optStr(*p, "rope_type"))
            type = *t;
        else if (auto t2 = c.optStr(*p, "type"))
            type = *t2;
    }
    auto factor = [&](bool required) {
        auto f = p ? c.optNum(*p, "factor") : std::nullopt;
        if (!f) {
            if (required) c.fail("rope type '" + type + "' needs \"factor\"");
            return 1.0;
        }
        if (!(*f > 0)) c.fail("rope scaling factor must be positive");
        return *f;
    };
    auto origMax = [&](bool required) -> int64_t {
        auto o = p ? c.optInt(*p, "original_max_position_embeddings") : std::nullopt;
        if (o) {
            if (*o <= 0) c.fail("original_max_position_embeddings must be positive");
            return *o;
        }
        if (required) c.fail("rope type '" + type + "' needs original_max_position_embeddings");
        return s.maxSeq;
    };
    if (type == "default") {
        r.type = RopeType::Default;
        if (p && p->contains("factor") && warnings)
            warnings->push_back(c.src + ": rope type 'default' ignores \"factor\"");
    } else if (type == "linear") {
        r.type = RopeType::Linear;
        r.factor = factor(true);
    } else if (type == "dynamic") {
        r.type = RopeType::Dynamic;
        r.factor = factor(true);
        r.originalMaxPositions = origMax(false);
    } else if (type == "llama3") {
        r.type = RopeType::Llama3;
        r.factor = factor(true);
        r.originalMaxPositions = origMax(true);
        r.lowFreqFactor = c.optNum(*p, "low_freq_factor").value_or(1.0);
        r.highFreqFactor = c.optNum(*p, "high_freq_factor").value_or(4.0);
        if (!(r.highFreqFactor > r.lowFreqFactor))
            c.fail("llama3 rope needs high_freq_factor > low_freq_factor");
    } else if (type == "yarn") {
        r.type = RopeType::Yarn;
        r.factor = factor(true);
        r.originalMaxPositions = origMax(false);
        r.betaFast = c.optNum(*p, "beta_fast").value_or(32.0);
        r.betaSlow = c.optNum(*p, "beta_slow").value_or(1.0);
        r.attentionFactor = c.optNum(*p, "attention_factor").value_or(0.0);
    } else {
        throw UnsupportedError(c.src + ": unsupported rope type '" + type +
                               "' (supported: default, linear, dynamic, llama3, yarn)");
    }
}

void parseSliding(const Ctx& c, ModelSpec& s) {
    const json& cfg = c.cfg;
    const int64_t window = c.optInt(cfg, "sliding_window").value_or(0);
    if (window < 0) c.fail("\"sliding_window\" must be non-negative");
    const json* lt = c.get(cfg, "layer_types");
    if (lt) {
        // transformers 5 spells the per-layer choice out; it wins over the older flags.
        if (!lt->is_array()) c.fail("\"layer_types\" must be an array");
        if (int64_t(lt->size()) != s.nLayers)
            c.fail("\"layer_types\" has " + std::to_string(lt->size()) + " entries for " +
                   std::to_string(s.nLayers) + " layers");
        std::vector<bool> sl;
        bool any = false;
        for (const auto& x : *lt) {
            if (!x.is_string()) c.fail("\"layer_types\" entries must be strings");
            const std::string v = x.get<std::string>();
            if (v == "sliding_attention")
                sl.push_back(true), any = true;
            else if (v == "full_attention")
                sl.push_back(false);
            else
                throw UnsupportedError(c.src + ": unsupported layer type '" + v +
                                       "' (supported: full_attention, sliding_attention)");
        }
        if (any && window == 0)
            c.fail("\"layer_types\" has sliding_attention layers but \"sliding_window\" is null");
        s.slidingWindow = any ? window : 0;
        s.slidingLayers = any ? sl : std::vector<bool>{};
        return;
    }
    if (s.arch == "mistral" || s.arch == "phi3" || s.arch == "mixtral") {
        s.slidingWindow = window; // every layer when set
    } else if (s.arch == "qwen2" || s.arch == "qwen3") {
        // transformers: sliding_window only counts with use_sliding_window, and then only for
        // layers at index >= max_window_layers.
        const bool use = c.optBool(cfg, "use_sliding_window").value_or(false);
        if (use && window > 0) {
            const int64_t mwl = c.optInt(cfg, "max_window_layers").value_or(28);
            std::vector<bool> sl(size_t(s.nLayers), false);
            bool any = false;
            for (int64_t i = 0; i < s.nLayers; ++i)
                if (i >= mwl) sl[size_t(i)] = true, any = true;
            s.slidingWindow = any ? window : 0;
            if (any) s.slidingLayers = std::move(sl);
        }
    }
}

// Integer from the first key present (config aliases such as n_embd / hidden_size).
std::optional<int64_t> optIntAny(const Ctx& c, std::initializer_list<const char*> keys) {
    for (const char* k : keys)
        if (auto v = c.optInt(c.cfg, k)) return v;
    return std::nullopt;
}
int64_t reqPositiveAny(const Ctx& c, std::initializer_list<const char*> keys) {
    auto v = optIntAny(c, keys);
    if (!v) c.fail(std::string("missing \"") + *keys.begin() + "\"");
    if (*v <= 0)
        c.fail(std::string("\"") + *keys.begin() + "\" must be positive, got " +
               std::to_string(*v));
    return *v;
}
double epsAny(const Ctx& c, std::initializer_list<const char*> keys, double def) {
    double eps = def;
    for (const char* k : keys)
        if (auto v = c.optNum(c.cfg, k)) {
            eps = *v;
            break;
        }
    if (!(eps > 0 && eps < 1)) c.fail("norm epsilon must be in (0, 1)");
    return eps;
}

// transformers' activation names → the runtime's: silu, gelu (erf), gelu_tanh, relu.
std::string normalizeAct(const Ctx& c, const std::string& a) {
    if (a == "silu" || a == "swish") return "silu";
    if (a == "gelu") return "gelu";
    if (a == "gelu_new" || a == "gelu_pytorch_tanh" || a == "gelu_fast" || a == "gelu_tanh")
        return "gelu_tanh";
    if (a == "relu") return "relu";
    throw UnsupportedError(c.src + ": unsupported activation '" + a +
                           "' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)");
}

void headDims(const Ctx& c, ModelSpec& s) {
    if (s.nKvHeads <= 0) c.fail("the KV head count must be positive");
    if (s.nHeads % s.nKvHeads != 0)
        c.fail("num_attention_heads (" + std::to_string(s.nHeads) +
               ") is not a multiple of num_key_value_heads (" + std::to_string(s.nKvHeads) + ")");
    if (auto hd = c.optInt(c.cfg, "head_dim")) {
        if (*hd <= 0) c.fail("\"head_dim\" must be positive");
        s.headDim = *hd;
    } else {
        if (s.dim % s.nHeads != 0)
            c.fail("hidden_size (" + std::to_string(s.dim) +
                   ") is not a multiple of num_attention_heads and there is no head_dim");
        s.headDim = s.dim / s.nHeads;
    }
}

// llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, mixtral, stablelm: the Llama layout.
void parseLlamaLike(const Ctx& c, ModelSpec& s, std::vector<std::string>* warnings) {
    const json& cfg = c.cfg;
    s.dim = c.reqPositive("hidden_size");
    s.nLayers = c.reqPositive("num_hidden_layers");
    s.nHeads = c.reqPositive("num_attention_heads");
    s.nKvHeads = c.optInt(cfg, "num_key_value_heads").value_or(s.nHeads);
    headDims(c, s);
    s.hidden = c.reqPositive("intermediate_size");
    s.vocab = c.reqPositive("vocab_size");
    const int64_t defMax = s.arch == "llama"     ? 2048
                           : s.arch == "mistral" ? 131072
                           : s.arch == "gemma" || s.arch == "gemma2" || s.arch == "stablelm"
                               ? (s.arch == "stablelm" ? 4096 : 8192)
                               : 32768;
    s.maxSeq = c.optInt(cfg, "max_position_embeddings").value_or(defMax);
    if (s.maxSeq <= 0) c.fail("\"max_position_embeddings\" must be positive");
    s.normEps =
        float(epsAny(c, {"rms_norm_eps", "layer_norm_eps"}, s.arch == "stablelm" ? 1e-5 : 1e-6));
    std::string act = c.optStr(cfg, "hidden_act").value_or("silu");
    if (s.arch == "gemma" || s.arch == "gemma2")
        act = c.optStr(cfg, "hidden_activation").value_or("gelu_pytorch_tanh");
    s.hiddenAct = normalizeAct(c, act);
    const bool tieDefault = s.arch == "gemma" || s.arch == "gemma2";
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(tieDefault);

    if (s.arch == "llama") {
        s.attnBias = c.optBool(cfg, "attention_bias").value_or(false);
        s.attnOutBias = s.attnBias;
        s.mlpBias = c.optBool(cfg, "mlp_bias").value_or(false);
    } else if (s.arch == "qwen2") {
        s.attnBias = true; // Qwen2 always has q/k/v biases (never on o_proj)
        s.attnOutBias = false;
    } else if (s.arch == "qwen3") {
        s.attnBias = c.optBool(cfg, "attention_bias").value_or(false);
        s.attnOutBias = s.attnBias;
        s.qkNorm = true;
    } else if (s.arch == "gemma" || s.arch == "gemma2") {
        s.attnBias = c.optBool(cfg, "attention_bias").value_or(false);
        s.attnOutBias = s.attnBias;
        s.normPlusOne = true;
        s.embedScale = float(std::sqrt(double(s.dim)));
        if (s.arch == "gemma2") {
            s.postNorms = true;
            const double qs = c.optNum(cfg, "query_pre_attn_scalar").value_or(double(s.headDim));
            if (!(qs > 0)) c.fail("\"query_pre_attn_scalar\" must be positive");
            s.attnScale = float(1.0 / std::sqrt(qs));
            // null disables soft-capping; absent means transformers' defaults (50, 30)
            auto cap = [&](const char* key, double def) {
                if (cfg.contains(key) && cfg[key].is_null()) return 0.0f;
                const double v = c.optNum(cfg, key).value_or(def);
                if (v < 0) c.fail(std::string("\"") + key + "\" must be non-negative");
                return float(v);
            };
            s.attnSoftcap = cap("attn_logit_softcapping", 50.0);
            s.finalSoftcap = cap("final_logit_softcapping", 30.0);
        }
    } else if (s.arch == "phi3") {
        s.qkvLayout = QkvLayout::Contiguous;
        s.gateUpFused = true;
    } else if (s.arch == "mixtral") {
        s.nExperts = c.reqPositive("num_local_experts");
        s.nExpertsPerTok = c.optInt(cfg, "num_experts_per_tok").value_or(2);
        if (s.nExpertsPerTok <= 0 || s.nExpertsPerTok > s.nExperts)
            c.fail("\"num_experts_per_tok\" must be in [1, num_local_experts]");
    } else if (s.arch == "stablelm") {
        s.norm = NormType::LayerNorm;
        s.normBias = true;
        s.attnBias = c.optBool(cfg, "use_qkv_bias").value_or(false);
        s.qkNorm = c.optBool(cfg, "qk_layernorm").value_or(false);
        s.qkNormPerHead = true;
        if (c.optBool(cfg, "use_parallel_residual").value_or(false)) {
            s.residual = ResidualStyle::Parallel;
            s.sharedParallelNorm = true;
        }
        if (!cfg.contains("partial_rotary_factor") &&
            !(cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object() &&
              cfg["rope_parameters"].contains("partial_rotary_factor")))
            s.rope.partialRotaryFactor = 0.25; // StableLM's default
    }

    parseRope(c, s, warnings);
    if (s.arch == "gemma2" && !cfg.contains("layer_types")) {
        // transformers 4.x: even layers use the sliding window
        const int64_t window = c.optInt(cfg, "sliding_window").value_or(4096);
        if (window > 0) {
            s.slidingWindow = window;
            s.slidingLayers.assign(size_t(s.nLayers), false);
            for (int64_t i = 0; i < s.nLayers; i += 2) s.slidingLayers[size_t(i)] = true;
        }
    } else {
        parseSliding(c, s);
    }
}

void parseOpt(const Ctx& c, ModelSpec& s) {
    const json& cfg = c.cfg;
    s.dim = c.reqPositive("hidden_size");
    s.nLayers = c.reqPositive("num_hidden_layers");
    s.nHeads = c.reqPositive("num_attention_heads");
    s.nKvHeads = s.nHeads;
    headDims(c, s);
    s.hidden = c.reqPositive("ffn_dim");
    s.vocab = c.reqPositive("vocab_size");
    s.maxSeq = c.optInt(cfg, "max_position_embeddings").value_or(2048);
    s.normEps = 1e-5f;
    s.hiddenAct = normalizeAct(c, c.optStr(cfg, "activation_function").value_or("relu"));
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(true);
    s.norm = NormType::LayerNorm;
    s.normBias = true;
    if (!c.optBool(cfg, "layer_norm_elementwise_affine").value_or(true))
        throw UnsupportedError(c.src + ": OPT without LayerNorm weights "
                                       "(layer_norm_elementwise_affine=false) is not supported");
    const bool bias = c.optBool(cfg, "enable_bias").value_or(true);
    s.attnBias = s.attnOutBias = s.mlpBias = bias;
    s.gatedMlp = false;
    const bool pre = c.optBool(cfg, "do_layer_norm_before").value_or(true);
    s.residual = pre ? ResidualStyle::PreNorm : ResidualStyle::PostNorm;
    s.finalNorm = pre && !c.optBool(cfg, "_remove_final_layer_norm").value_or(false);
    s.posEmbed = PosEmbedding::Learned;
    s.posOffset = 2;
    const int64_t proj = c.optInt(cfg, "word_embed_proj_dim").value_or(s.dim);
    if (proj <= 0) c.fail("\"word_embed_proj_dim\" must be positive");
    s.embedDim = proj == s.dim ? 0 : proj;
}

void parseGpt2(const Ctx& c, ModelSpec& s) {
    const json& cfg = c.cfg;
    s.dim = reqPositiveAny(c, {"n_embd", "hidden_size"});
    s.nLayers = reqPositiveAny(c, {"n_layer", "num_hidden_layers"});
    s.nHeads = reqPositiveAny(c, {"n_head", "num_attention_heads"});
    s.nKvHeads = s.nHeads;
    if (s.dim % s.nHeads != 0) c.fail("n_embd is not a multiple of n_head");
    s.headDim = s.dim / s.nHeads;
    s.hidden = c.optInt(cfg, "n_inner").value_or(4 * s.dim);
    if (s.hidden <= 0) c.fail("\"n_inner\" must be positive");
    s.vocab = c.reqPositive("vocab_size");
    s.maxSeq = optIntAny(c, {"n_positions", "max_position_embeddings"}).value_or(1024);
    s.normEps = float(epsAny(c, {"layer_norm_epsilon"}, 1e-5));
    s.hiddenAct = normalizeAct(c, c.optStr(cfg, "activation_function").value_or("gelu_new"));
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(true);
    s.norm = NormType::LayerNorm;
    s.normBias = true;
    s.attnBias = s.attnOutBias = s.mlpBias = true;
    s.gatedMlp = false;
    s.posEmbed = PosEmbedding::Learned;
    s.qkvLayout = QkvLayout::Contiguous;
    s.conv1dWeights = true;
    if (!c.optBool(cfg, "scale_attn_weights").value_or(true)) s.attnScale = 1.0f;
    s.scaleByInverseLayer = c.optBool(cfg, "scale_attn_by_inverse_layer_idx").value_or(false);
    if (c.optBool(cfg, "add_cross_attention").value_or(false))
        throw UnsupportedError(c.src + ": GPT-2 with cross-attention is not supported");
}

void parseGptNeox(const Ctx& c, ModelSpec& s, std::vector<std::string>* warnings) {
    const json& cfg = c.cfg;
    s.dim = c.reqPositive("hidden_size");
    s.nLayers = c.reqPositive("num_hidden_layers");
    s.nHeads = c.reqPositive("num_attention_heads");
    s.nKvHeads = s.nHeads;
    if (s.dim % s.nHeads != 0) c.fail("hidden_size is not a multiple of num_attention_heads");
    s.headDim = s.dim / s.nHeads;
    s.hidden = c.reqPositive("intermediate_size");
    s.vocab = c.reqPositive("vocab_size");
    s.maxSeq = c.optInt(cfg, "max_position_embeddings").value_or(2048);
    s.normEps = float(epsAny(c, {"layer_norm_eps"}, 1e-5));
    s.hiddenAct = normalizeAct(c, c.optStr(cfg, "hidden_act").value_or("gelu"));
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(false);
    s.norm = NormType::LayerNorm;
    s.normBias = true;
    s.attnBias = s.attnOutBias = c.optBool(cfg, "attention_bias").value_or(true);
    s.mlpBias = true;
    s.gatedMlp = false;
    s.qkvLayout = QkvLayout::PerHead;
    if (c.optBool(cfg, "use_parallel_residual").value_or(true))
        s.residual = ResidualStyle::Parallel;
    parseRope(c, s, warnings);
    // 4.x spellings: rotary_pct / rotary_emb_base
    if (auto pct = c.optNum(cfg, "rotary_pct")) {
        if (!(*pct > 0 && *pct <= 1)) c.fail("\"rotary_pct\" must be in (0, 1]");
        s.rope.partialRotaryFactor = *pct;
    } else if (!cfg.contains("partial_rotary_factor") &&
               !(cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object() &&
                 cfg["rope_parameters"].contains("partial_rotary_factor"))) {
        s.rope.partialRotaryFactor = 0.25;
    }
    if (auto b = c.optNum(cfg, "rotary_emb_base")) {
        if (!(*b > 0)) c.fail("\"rotary_emb_base\" must be positive");
        s.rope.theta = *b;
    }
}

// ALiBi / rotary Falcon (RW, 7B/40B multi-query, new decoder architecture).
void parseFalcon(const Ctx& c, ModelSpec& s, std::vector<std::string>* warnings) {
    const json& cfg = c.cfg;
    s.dim = c.reqPositive("hidden_size");
    s.nLayers = reqPositiveAny(c, {"num_hidden_layers", "n_layer"});
    s.nHeads = reqPositiveAny(c, {"num_attention_heads", "n_head"});
    if (s.dim % s.nHeads != 0) c.fail("hidden_size is not a multiple of num_attention_heads");
    s.headDim = s.dim / s.nHeads;
    // Pre-transformers checkpoints: "RefinedWeb" (40B) is the new decoder architecture,
    // "RefinedWebModel" (7B) the multi-query one.
    const bool refinedWeb = c.optStr(cfg, "model_type").value_or("") == "RefinedWeb";
    const bool newArch = c.optBool(cfg, "new_decoder_architecture").value_or(refinedWeb);
    const bool mq = c.optBool(cfg, "multi_query").value_or(true);
    if (newArch) {
        s.nKvHeads =
            optIntAny(c, {"num_kv_heads", "n_head_kv"}).value_or(refinedWeb ? 8 : s.nHeads);
        s.qkvLayout = QkvLayout::PerKvGroup;
    } else if (mq) {
        s.nKvHeads = 1;
        s.qkvLayout = QkvLayout::Contiguous;
    } else {
        s.nKvHeads = s.nHeads;
        s.qkvLayout = QkvLayout::PerHead;
    }
    if (s.nKvHeads <= 0 || s.nHeads % s.nKvHeads != 0)
        c.fail("num_attention_heads is not a multiple of num_kv_heads");
    s.hidden = c.optInt(cfg, "ffn_hidden_size").value_or(4 * s.dim);
    if (s.hidden <= 0) c.fail("\"ffn_hidden_size\" must be positive");
    s.vocab = c.reqPositive("vocab_size");
    s.maxSeq = c.optInt(cfg, "max_position_embeddings").value_or(2048);
    s.normEps = float(epsAny(c, {"layer_norm_epsilon"}, 1e-5));
    s.hiddenAct = normalizeAct(c, c.optStr(cfg, "activation").value_or("gelu"));
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(true);
    s.norm = NormType::LayerNorm;
    s.normBias = true;
    const bool bias = c.optBool(cfg, "bias").value_or(false);
    s.attnBias = s.attnOutBias = s.mlpBias = bias;
    s.gatedMlp = false;
    const bool parallel = c.optBool(cfg, "parallel_attn").value_or(true);
    if (newArch || parallel) {
        s.residual = ResidualStyle::Parallel;
        // new architecture: ln_attn + ln_mlp unless num_ln_in_parallel_attn == 1
        const int64_t nLn = c.optInt(cfg, "num_ln_in_parallel_attn").value_or(newArch ? 2 : 1);
        s.sharedParallelNorm = !(newArch && nLn == 2);
    }
    if (c.optBool(cfg, "alibi").value_or(false)) {
        s.posEmbed = PosEmbedding::Alibi;
        s.alibiScaled = true;
    } else {
        parseRope(c, s, warnings);
    }
}

void parseBloom(const Ctx& c, ModelSpec& s) {
    const json& cfg = c.cfg;
    s.dim = reqPositiveAny(c, {"hidden_size", "n_embed"});
    s.nLayers = reqPositiveAny(c, {"n_layer", "num_hidden_layers"});
    s.nHeads = reqPositiveAny(c, {"n_head", "num_attention_heads"});
    s.nKvHeads = s.nHeads;
    if (s.dim % s.nHeads != 0) c.fail("hidden_size is not a multiple of n_head");
    s.headDim = s.dim / s.nHeads;
    s.hidden = 4 * s.dim;
    s.vocab = c.reqPositive("vocab_size");
    s.maxSeq = c.optInt(cfg, "seq_length").value_or(2048);
    s.normEps = float(epsAny(c, {"layer_norm_epsilon"}, 1e-5));
    s.hiddenAct = "gelu_tanh";
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(true);
    s.norm = NormType::LayerNorm;
    s.normBias = true;
    s.attnBias = s.attnOutBias = s.mlpBias = true;
    s.gatedMlp = false;
    s.posEmbed = PosEmbedding::Alibi;
    s.embedNorm = true;
    s.qkvLayout = QkvLayout::PerHead;
    s.residualFromNorm = c.optBool(cfg, "apply_residual_connection_post_layernorm").value_or(false);
}

void parseMamba(const Ctx& c, ModelSpec& s) {
    const json& cfg = c.cfg;
    s.dim = c.reqPositive("hidden_size");
    s.nLayers = c.reqPositive("num_hidden_layers");
    s.vocab = c.reqPositive("vocab_size");
    s.normEps = float(epsAny(c, {"layer_norm_epsilon"}, 1e-5));
    const int64_t expand = c.optInt(cfg, "expand").value_or(2);
    s.ssmInner = c.optInt(cfg, "intermediate_size").value_or(expand * s.dim);
    s.ssmState = c.optInt(cfg, "state_size").value_or(16);
    s.ssmConv = c.optInt(cfg, "conv_kernel").value_or(4);
    const json* tr = c.get(cfg, "time_step_rank");
    if (!tr || (tr->is_string() && tr->get<std::string>() == "auto"))
        s.ssmDtRank = (s.dim + 15) / 16;
    else
        s.ssmDtRank = c.optInt(cfg, "time_step_rank").value_or(0);
    if (s.ssmInner <= 0 || s.ssmState <= 0 || s.ssmConv <= 0 || s.ssmDtRank <= 0)
        c.fail("mamba dimensions (intermediate_size, state_size, conv_kernel, time_step_rank) "
               "must be positive");
    s.ssmConvBias = c.optBool(cfg, "use_conv_bias").value_or(true);
    s.ssmBias = c.optBool(cfg, "use_bias").value_or(false);
    s.hiddenAct = normalizeAct(c, c.optStr(cfg, "hidden_act").value_or("silu"));
    if (s.hiddenAct != "silu")
        throw UnsupportedError(c.src + ": Mamba supports only the silu activation");
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(true);
    s.hidden = s.ssmInner;
    s.maxSeq = int64_t(1) << 20;      // recurrent: no positional limit
    s.posEmbed = PosEmbedding::Alibi; // unused; no rotary tables
}

} // namespace

const std::vector<std::string>& hfSupportedModelTypes() {
    static const std::vector<std::string> k = {"llama",    "mistral",  "qwen2",   "qwen3", "gemma",
                                               "gemma2",   "phi3",     "mixtral", "opt",   "gpt2",
                                               "gpt_neox", "stablelm", "falcon",  "bloom", "mamba"};
    return k;
}

ModelSpec parseHfConfig(const std::string& jsonText, const std::string& source,
                        std::vector<std::string>* warnings) {
    json cfg;
    try {
        cfg = json::parse(jsonText);
    } catch (const json::parse_error& e) {
        throw FormatError(source, std::string("not valid JSON: ") + e.what(),
                          e.byte > 0 ? uint64_t(e.byte - 1) : 0);
    } catch (const json::exception& e) { // number overflow (1e309) is out_of_range
        throw FormatError(source, std::string("not valid JSON: ") + e.what());
    }
    if (!cfg.is_object()) throw FormatError(source, "not a JSON object");
    Ctx c{cfg, source};
    auto mt = c.optStr(cfg, "model_type");
    if (!mt) c.fail("missing \"model_type\"");
    if (*mt == "RefinedWeb" || *mt == "RefinedWebModel") mt = "falcon";
    bool known = false;
    for (const auto& k : hfSupportedModelTypes()) known |= (*mt == k);
    if (!known) {
        std::string list;
        for (const auto& k : hfSupportedModelTypes()) list += (list.empty() ? "" : ", ") + k;
        throw UnsupportedError(source + ": unsupported model_type '" + *mt +
                               "' (supported: " + list + ")");
    }
    ModelSpec s;
    s.arch = *mt;
    s.sourceFormat = "safetensors";
    s.rope.interleaved = false;
    if (s.arch == "opt")
        parseOpt(c, s);
    else if (s.arch == "gpt2")
        parseGpt2(c, s);
    else if (s.arch == "gpt_neox")
        parseGptNeox(c, s, warnings);
    else if (s.arch == "falcon")
        parseFalcon(c, s, warnings);
    else if (s.arch == "bloom")
        parseBloom(c, s);
    else if (s.arch == "mamba")
        parseMamba(c, s);
    else
        parseLlamaLike(c, s, warnings);

    auto bos = c.idList("bos_token_id");
    s.bosId = bos.empty() ? -1 : bos.front();
    s.eosIds = c.idList("eos_token_id");
    return s;
}

ModelSpec readHfConfig(const std::string& path, std::vector<std::string>* warnings) {
    return parseHfConfig(readTextFile(path), path, warnings);
}

} // namespace lcw
