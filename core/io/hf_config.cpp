#include "core/io/hf_config.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

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
    if (s.arch == "mistral") {
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

} // namespace

const std::vector<std::string>& hfSupportedModelTypes() {
    static const std::vector<std::string> k = {"llama", "mistral", "qwen2", "qwen3"};
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
    }
    if (!cfg.is_object()) throw FormatError(source, "not a JSON object");
    Ctx c{cfg, source};
    const auto mt = c.optStr(cfg, "model_type");
    if (!mt) c.fail("missing \"model_type\"");
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
    s.dim = c.reqPositive("hidden_size");
    s.nLayers = c.reqPositive("num_hidden_layers");
    s.nHeads = c.reqPositive("num_attention_heads");
    s.nKvHeads = c.optInt(cfg, "num_key_value_heads").value_or(s.nHeads);
    if (s.nKvHeads <= 0) c.fail("\"num_key_value_heads\" must be positive");
    if (s.nHeads % s.nKvHeads != 0)
        c.fail("num_attention_heads (" + std::to_string(s.nHeads) +
               ") is not a multiple of num_key_value_heads (" + std::to_string(s.nKvHeads) + ")");
    if (auto hd = c.optInt(cfg, "head_dim")) {
        if (*hd <= 0) c.fail("\"head_dim\" must be positive");
        s.headDim = *hd;
    } else {
        if (s.dim % s.nHeads != 0)
            c.fail("hidden_size (" + std::to_string(s.dim) +
                   ") is not a multiple of num_attention_heads and there is no head_dim");
        s.headDim = s.dim / s.nHeads;
    }
    s.hidden = c.reqPositive("intermediate_size");
    s.vocab = c.reqPositive("vocab_size");
    const int64_t defMax = s.arch == "llama" ? 2048 : s.arch == "mistral" ? 131072 : 32768;
    s.maxSeq = c.optInt(cfg, "max_position_embeddings").value_or(defMax);
    if (s.maxSeq <= 0) c.fail("\"max_position_embeddings\" must be positive");
    const double eps = c.optNum(cfg, "rms_norm_eps").value_or(1e-6);
    if (!(eps > 0 && eps < 1)) c.fail("\"rms_norm_eps\" must be in (0, 1)");
    s.normEps = float(eps);
    s.hiddenAct = c.optStr(cfg, "hidden_act").value_or("silu");
    s.tiedEmbeddings = c.optBool(cfg, "tie_word_embeddings").value_or(false);

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
    }

    parseRope(c, s, warnings);
    parseSliding(c, s);

    auto bos = c.idList("bos_token_id");
    s.bosId = bos.empty() ? -1 : bos.front();
    s.eosIds = c.idList("eos_token_id");
    return s;
}

ModelSpec readHfConfig(const std::string& path, std::vector<std::string>* warnings) {
    return parseHfConfig(readTextFile(path), path, warnings);
}

} // namespace lcw
