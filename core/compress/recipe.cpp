#include "core/compress/recipe.h"

#include "core/common/json_file.h"
#include "core/common/pattern.h"
#include "core/compress/spinquant.h"

#include "core/compress/block_grad.h"
#include "core/compress/spinquant.h"
#include "core/model/model.h"
#include "core/runtime/activation_sparsity.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

namespace lcw::compress {

using json = nlohmann::json;

namespace {

std::string ruleWhere(int rule, const std::string& field) {
    std::string s = rule >= 0 ? "recipe rule " + std::to_string(rule) : std::string("recipe");
    if (!field.empty()) s += ", field " + field;
    return s;
}

[[noreturn]] void fail(int rule, const std::string& field, const std::string& problem) {
    throw RecipeError(rule, field, problem);
}

bool patternMatches(const std::string& pat, const std::string& name) {
    return namePatternMatches(pat, name); // "re:" patterns: RE2, linear time (pattern.h)
}

void checkKeys(const json& obj, const std::set<std::string>& allowed, int rule,
               const std::string& prefix) {
    for (auto it = obj.begin(); it != obj.end(); ++it)
        if (!allowed.count(it.key())) {
            std::string list;
            for (const auto& k : allowed) list += (list.empty() ? "" : ", ") + k;
            fail(rule, prefix + it.key(), "unknown key (allowed: " + list + ")");
        }
}

int64_t intField(const json& v, int rule, const std::string& field, int64_t lo, int64_t hi) {
    if (!v.is_number_integer()) fail(rule, field, "expected an integer, got " + v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi)
        fail(rule, field,
             std::to_string(x) + " is out of range " + std::to_string(lo) + ".." +
                 std::to_string(hi));
    return x;
}

std::string strField(const json& v, int rule, const std::string& field,
                     const std::vector<std::string>& allowed) {
    if (!v.is_string()) fail(rule, field, "expected a string, got " + v.dump());
    const auto s = v.get<std::string>();
    if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
        std::string list;
        for (const auto& k : allowed) list += (list.empty() ? "" : ", ") + k;
        fail(rule, field, "'" + s + "' is not one of " + list);
    }
    return s;
}

bool boolField(const json& v, int rule, const std::string& field) {
    if (!v.is_boolean()) fail(rule, field, "expected true or false, got " + v.dump());
    return v.get<bool>();
}

double numField(const json& v, int rule, const std::string& field, double lo, double hi) {
    if (!v.is_number()) fail(rule, field, "expected a number, got " + v.dump());
    const double x = v.get<double>();
    if (!(x >= lo && x <= hi))
        fail(rule, field,
             v.dump() + " is out of range " + json(lo).dump() + ".." + json(hi).dump());
    return x;
}

const std::vector<std::string> kFormats = {"int", "fp8_e4m3", "nf4"};
const std::vector<std::string> kGranularities = {"tensor", "channel", "group"};
// In WeightMethod order.
const std::vector<std::string> kMethods = {"rtn", "q8_0", "q4_0", "q4_1", "q5_0", "gptq", "awq",
                                           "omniquant", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
                                           "q6_k", "iq4_nl", "iq4_xs", "f16",
                                           // compact formats (compact_formats.h)
                                           "squeezellm", "dgq", "slim",
                                           // block-trained int grids (efficientqat.h)
                                           "efficientqat"};
static_assert(kWeightMethodCount == 21);

WeightMethod methodFromName(const std::string& s) {
    const auto i = std::find(kMethods.begin(), kMethods.end(), s) - kMethods.begin();
    return WeightMethod(i);
}

struct GgufMethod {
    WeightMethod method;
    DType type;
    int bits;       // nominal code bits (WeightSettings::bits)
    bool symmetric; // no per-block minimum
    int subBlock;   // weights per scale (WeightSettings::groupSize)
};
const GgufMethod kGguf[] = {
    {WeightMethod::Q8_0, DType::Q8_0, 8, true, 32},
    {WeightMethod::Q4_0, DType::Q4_0, 4, true, 32},
    {WeightMethod::Q4_1, DType::Q4_1, 4, false, 32},
    {WeightMethod::Q5_0, DType::Q5_0, 5, true, 32},
    {WeightMethod::Q5_1, DType::Q5_1, 5, false, 32},
    {WeightMethod::Q2_K, DType::Q2_K, 2, false, 16},
    {WeightMethod::Q3_K, DType::Q3_K, 3, true, 16},
    {WeightMethod::Q4_K, DType::Q4_K, 4, false, 32},
    {WeightMethod::Q5_K, DType::Q5_K, 5, false, 32},
    {WeightMethod::Q6_K, DType::Q6_K, 6, true, 16},
    {WeightMethod::IQ4_NL, DType::IQ4_NL, 4, true, 32},
    {WeightMethod::IQ4_XS, DType::IQ4_XS, 4, true, 32},
    {WeightMethod::F16, DType::F16, 16, true, 1},
};
const GgufMethod* ggufInfo(WeightMethod m) {
    for (const auto& g : kGguf)
        if (g.method == m) return &g;
    return nullptr;
}

/// Validates a weight section on its own (types, ranges, consistency within the section).
void validateWeight(const json& w, int rule) {
    if (!w.is_object()) fail(rule, "weight", "expected an object or null, got " + w.dump());
    checkKeys(w, {"bits",         "format",     "symmetric",     "granularity",
                  "group_size",   "method",     "gguf",          "damp",
                  "act_order",    "block_size", "static_groups", "groups",
                  "sym_grid",     "awq",        "epochs",        "lr",
                  "let",          "lr_let",     "let_shift",     "true_sequential",
                  "outliers_pct", "avg_bits",   "affine",        "lr_w",
                  "lr_q",         "e2e_epochs", "lr_e2e",        "gptq",
                  "sensitivity",  "sqc",        "sqc_lambda",    "clip_ratio"},
              rule, "weight.");
    // EfficientQAT's learning rates and E2E-QP epochs.
    if (w.contains("lr_w")) numField(w["lr_w"], rule, "weight.lr_w", 0.0, 1.0);
    if (w.contains("lr_q")) numField(w["lr_q"], rule, "weight.lr_q", 0.0, 1.0);
    if (w.contains("e2e_epochs")) intField(w["e2e_epochs"], rule, "weight.e2e_epochs", 0, 1000);
    if (w.contains("lr_e2e")) numField(w["lr_e2e"], rule, "weight.lr_e2e", 1e-9, 1.0);
    // Compact methods (squeezellm, slim): their own fields.
    if (w.contains("outliers_pct")) numField(w["outliers_pct"], rule, "weight.outliers_pct", 0, 10);
    if (w.contains("avg_bits")) numField(w["avg_bits"], rule, "weight.avg_bits", 2, 4);
    if (w.contains("gptq")) boolField(w["gptq"], rule, "weight.gptq");
    if (w.contains("sqc")) boolField(w["sqc"], rule, "weight.sqc");
    if (w.contains("sqc_lambda")) numField(w["sqc_lambda"], rule, "weight.sqc_lambda", 0, 1e6);
    if (w.contains("sensitivity"))
        strField(w["sensitivity"], rule, "weight.sensitivity", {"gram", "fisher"});
    if (w.contains("clip_ratio")) numField(w["clip_ratio"], rule, "weight.clip_ratio", 0.1, 1.0);
    if (w.contains("true_sequential"))
        boolField(w["true_sequential"], rule, "weight.true_sequential");
    if (w.contains("damp")) numField(w["damp"], rule, "weight.damp", 1e-6, 1.0);
    if (w.contains("act_order")) boolField(w["act_order"], rule, "weight.act_order");
    if (w.contains("block_size")) intField(w["block_size"], rule, "weight.block_size", 1, 4096);
    if (w.contains("static_groups")) boolField(w["static_groups"], rule, "weight.static_groups");
    if (w.contains("groups"))
        strField(w["groups"], rule, "weight.groups", {"reference", "updated"});
    if (w.contains("sym_grid"))
        strField(w["sym_grid"], rule, "weight.sym_grid", {"reference", "rtn"});
    if (w.contains("epochs")) intField(w["epochs"], rule, "weight.epochs", 0, 1000);
    if (w.contains("lr")) numField(w["lr"], rule, "weight.lr", 1e-7, 1.0);
    if (w.contains("let")) boolField(w["let"], rule, "weight.let");
    if (w.contains("lr_let")) numField(w["lr_let"], rule, "weight.lr_let", 1e-7, 1.0);
    if (w.contains("let_shift")) boolField(w["let_shift"], rule, "weight.let_shift");
    if (w.contains("affine")) {
        // AffineQuant on top of omniquant: true/false or an object of its options.
        const json& a = w["affine"];
        if (!a.is_boolean() && !a.is_object())
            fail(rule, "weight.affine", "expected true, false or an object, got " + a.dump());
        if (a.is_object()) {
            checkKeys(a, {"lr", "alpha", "mask", "dominance", "min_diag"}, rule, "weight.affine.");
            if (a.contains("lr")) numField(a["lr"], rule, "weight.affine.lr", 1e-7, 1.0);
            if (a.contains("alpha")) numField(a["alpha"], rule, "weight.affine.alpha", 1e-6, 10.0);
            if (a.contains("mask"))
                strField(a["mask"], rule, "weight.affine.mask", {"gradual", "full", "diagonal"});
            if (a.contains("dominance"))
                numField(a["dominance"], rule, "weight.affine.dominance", 0.01, 0.99);
            if (a.contains("min_diag"))
                numField(a["min_diag"], rule, "weight.affine.min_diag", 1e-3, 1.0);
        }
    }
    if (w.contains("awq")) {
        const json& a = w["awq"];
        if (!a.is_object()) fail(rule, "weight.awq", "expected an object, got " + a.dump());
        checkKeys(a,
                  {"grid", "clip_search", "clip_grid", "max_shrink", "objective", "grid_rule",
                   "clip", "stats", "rows", "seed"},
                  rule, "weight.awq.");
        if (a.contains("objective"))
            strField(a["objective"], rule, "weight.awq.objective",
                     {"module-output", "joint-linears"});
        if (a.contains("grid_rule"))
            strField(a["grid_rule"], rule, "weight.awq.grid_rule", {"reference", "inclusive"});
        if (a.contains("clip")) strField(a["clip"], rule, "weight.awq.clip", {"auto", "range"});
        if (a.contains("stats"))
            strField(a["stats"], rule, "weight.awq.stats", {"fp", "compressed"});
        if (a.contains("rows")) intField(a["rows"], rule, "weight.awq.rows", 1, 1 << 20);
        if (a.contains("seed")) intField(a["seed"], rule, "weight.awq.seed", 0, int64_t(1) << 62);
        if (a.contains("grid")) intField(a["grid"], rule, "weight.awq.grid", 1, 1000);
        if (a.contains("clip_search")) boolField(a["clip_search"], rule, "weight.awq.clip_search");
        if (a.contains("clip_grid"))
            intField(a["clip_grid"], rule, "weight.awq.clip_grid", 1, 1000);
        if (a.contains("max_shrink"))
            numField(a["max_shrink"], rule, "weight.awq.max_shrink", 0.0, 0.99);
    }
    if (w.contains("bits")) intField(w["bits"], rule, "weight.bits", 2, 8);
    std::string fmt = w.contains("format") ? strField(w["format"], rule, "weight.format", kFormats)
                                           : std::string();
    if (w.contains("symmetric")) boolField(w["symmetric"], rule, "weight.symmetric");
    if (w.contains("granularity"))
        strField(w["granularity"], rule, "weight.granularity", kGranularities);
    if (w.contains("group_size"))
        intField(w["group_size"], rule, "weight.group_size", 1, int64_t(1) << 30);
    if (w.contains("method")) strField(w["method"], rule, "weight.method", kMethods);
    if (w.contains("gguf")) {
        std::vector<std::string> grids;
        for (const auto& m : kMethods) {
            const auto wm = weightMethodFromName(m);
            if (wm && methodIsGguf(*wm) && *wm != WeightMethod::F16) grids.push_back(m);
        }
        strField(w["gguf"], rule, "weight.gguf", grids);
    }
    if (fmt == "fp8_e4m3" && w.contains("bits") && w["bits"] != 8)
        fail(rule, "weight.bits", "format fp8_e4m3 has 8 bits, got " + w["bits"].dump());
    if (fmt == "nf4" && w.contains("bits") && w["bits"] != 4)
        fail(rule, "weight.bits", "format nf4 has 4 bits, got " + w["bits"].dump());
}

RotationSettings parseRotation(const json& r) {
    if (!r.is_object()) fail(-1, "rotation", "expected an object or null, got " + r.dump());
    checkKeys(r, {"method", "seed", "online_down", "online_qk", "steps", "lr", "batch"}, -1,
              "rotation.");
    RotationSettings s;
    if (r.contains("method"))
        s.learned =
            strField(r["method"], -1, "rotation.method", {"hadamard", "spinquant"}) == "spinquant";
    for (const char* k : {"steps", "lr", "batch"})
        if (r.contains(k) && !s.learned)
            fail(-1, std::string("rotation.") + k,
                 "applies to learned rotations only (\"method\": \"spinquant\")");
    if (r.contains("steps")) s.steps = int(intField(r["steps"], -1, "rotation.steps", 0, 100000));
    if (r.contains("lr")) s.lr = numField(r["lr"], -1, "rotation.lr", 0, 100);
    if (r.contains("batch")) s.batch = int(intField(r["batch"], -1, "rotation.batch", 1, 4096));
    if (r.contains("seed"))
        s.seed = uint64_t(intField(r["seed"], -1, "rotation.seed", 0, int64_t(1) << 62));
    if (r.contains("online_down")) s.down = boolField(r["online_down"], -1, "rotation.online_down");
    if (r.contains("online_qk")) s.kv = boolField(r["online_qk"], -1, "rotation.online_qk");
    return s;
}

void validateSmoothQuant(const json& q, int rule) {
    if (!q.is_object()) fail(rule, "smoothquant", "expected an object or null, got " + q.dump());
    checkKeys(q, {"alpha", "stats", "rule"}, rule, "smoothquant.");
    if (q.contains("stats")) strField(q["stats"], rule, "smoothquant.stats", {"fp", "compressed"});
    if (q.contains("rule"))
        strField(q["rule"], rule, "smoothquant.rule", {"reference", "ratio", "percentile"});
    if (q.value("rule", std::string()) == "percentile") { // DGQ's: no migration strength
        if (q.contains("alpha"))
            fail(rule, "smoothquant.alpha",
                 "does not apply to rule percentile (DGQ's smoothing scales the loudest channels "
                 "down to a percentile of the activation ranges)");
        return;
    }
    if (!q.contains("alpha")) fail(rule, "smoothquant.alpha", "missing");
    numField(q["alpha"], rule, "smoothquant.alpha", 0.0, 1.0);
}

void validateActivation(const json& a, int rule) {
    if (!a.is_object()) fail(rule, "activation", "expected an object or null, got " + a.dump());
    checkKeys(a, {"bits", "mode", "clip", "group_size"}, rule, "activation.");
    if (a.contains("bits")) intField(a["bits"], rule, "activation.bits", 2, 16);
    if (a.contains("mode"))
        strField(a["mode"], rule, "activation.mode", {"dynamic_per_token", "static_per_tensor"});
    if (a.contains("clip")) numField(a["clip"], rule, "activation.clip", 1e-6, 1.0);
    if (a.contains("group_size")) {
        intField(a["group_size"], rule, "activation.group_size", 1, 1 << 20);
        if (a.value("mode", std::string("dynamic_per_token")) != "dynamic_per_token")
            fail(rule, "activation.group_size",
                 "groups are per token: they go with mode dynamic_per_token");
    }
}

/// A token count: an integer >= lo, or a fraction in (0, 1) (of the context, or of the budget).
double tokensField(const json& v, int rule, const std::string& field, int64_t lo) {
    if (v.is_number_integer()) return double(intField(v, rule, field, lo, int64_t(1) << 30));
    if (!v.is_number() || !(v.get<double>() > 0 && v.get<double>() < 1))
        fail(rule, field,
             "expected a token count (an integer >= " + std::to_string(lo) +
                 ") or a fraction in (0, 1), got " + v.dump());
    return v.get<double>();
}

const std::vector<std::string> kKvPolicies = {"full", "h2o", "sinks", "mass"};

/// The eviction-policy keys of a kv section: a policy's own keys only (with its policy given in
/// the same section).
void validateKvPolicy(const json& k, int rule) {
    static const std::map<std::string, std::vector<std::string>> kKeysOf = {
        {"budget", {"h2o"}},
        {"recent", {"h2o", "mass"}},
        {"sinks", {"sinks"}},
        {"window", {"sinks"}},
        {"mass", {"mass"}}};
    const std::string policy =
        k.contains("policy") ? strField(k["policy"], rule, "kv.policy", kKvPolicies) : "";
    for (const auto& [key, owners] : kKeysOf) {
        if (!k.contains(key)) continue;
        if (!policy.empty() && std::find(owners.begin(), owners.end(), policy) == owners.end())
            fail(rule, "kv." + key, "does not apply to policy '" + policy + "'");
    }
    if (k.contains("budget")) tokensField(k["budget"], rule, "kv.budget", 1);
    if (k.contains("window")) tokensField(k["window"], rule, "kv.window", 1);
    if (k.contains("recent")) {
        const json& r = k["recent"];
        if (r.is_number_integer())
            intField(r, rule, "kv.recent", 0, int64_t(1) << 30);
        else if (!r.is_number() || !(r.get<double>() >= 0 && r.get<double>() < 1))
            fail(rule, "kv.recent",
                 "expected a token count (an integer >= 0) or a fraction in [0, 1), got " +
                     r.dump());
    }
    if (k.contains("sinks")) intField(k["sinks"], rule, "kv.sinks", 0, 1 << 20);
    if (k.contains("mass")) {
        const double m = numField(k["mass"], rule, "kv.mass", 0.0, 1.0);
        if (!(m > 0)) fail(rule, "kv.mass", "must be greater than 0");
    }
}

void validateActivationSparsity(const json& a, int rule) {
    if (!a.is_object())
        fail(rule, "activation_sparsity", "expected an object or null, got " + a.dump());
    checkKeys(a, {"topk"}, rule, "activation_sparsity.");
    if (!a.contains("topk")) fail(rule, "activation_sparsity.topk", "missing");
    const double k = numField(a["topk"], rule, "activation_sparsity.topk", 0.0, 1.0);
    if (!(k > 0.0))
        fail(rule, "activation_sparsity.topk",
             "must be above 0 (the fraction of each token's input entries kept)");
}

void validateKv(const json& k, int rule) {
    if (!k.is_object()) fail(rule, "kv", "expected an object or null, got " + k.dump());
    checkKeys(k,
              {"k_bits", "v_bits", "k_granularity", "v_granularity", "group_size", "past_only",
               "smooth", "crr_blocks", "crr_steps", "crr_lr", "crr_weights", "policy", "budget",
               "recent", "sinks", "window", "mass"},
              rule, "kv.");
    validateKvPolicy(k, rule);
    if (k.contains("k_bits")) intField(k["k_bits"], rule, "kv.k_bits", 2, 16);
    if (k.contains("v_bits")) intField(k["v_bits"], rule, "kv.v_bits", 2, 16);
    if (k.contains("k_granularity"))
        strField(k["k_granularity"], rule, "kv.k_granularity", {"channel", "token"});
    if (k.contains("v_granularity"))
        strField(k["v_granularity"], rule, "kv.v_granularity", {"channel", "token"});
    if (k.contains("group_size")) intField(k["group_size"], rule, "kv.group_size", 1, 1 << 20);
    if (k.contains("past_only")) boolField(k["past_only"], rule, "kv.past_only");
    if (k.contains("smooth")) boolField(k["smooth"], rule, "kv.smooth");
    if (k.contains("crr_blocks")) intField(k["crr_blocks"], rule, "kv.crr_blocks", 0, 64);
    if (k.contains("crr_steps")) intField(k["crr_steps"], rule, "kv.crr_steps", 0, 10000);
    if (k.contains("crr_lr")) numField(k["crr_lr"], rule, "kv.crr_lr", 1e-6, 1.0);
    if (k.contains("crr_weights")) boolField(k["crr_weights"], rule, "kv.crr_weights");
}

void validateOutliers(const json& o, int rule) {
    if (!o.is_object()) fail(rule, "outliers", "expected an object or null, got " + o.dump());
    checkKeys(o, {"threshold", "count", "bits", "select"}, rule, "outliers.");
    if (o.contains("select")) {
        strField(o["select"], rule, "outliers.select", {"absmax", "sum_sq"});
        if (!o.contains("count"))
            fail(rule, "outliers.select",
                 "ranks the channels for outliers.count; a threshold compares abs-max values");
    }
    if (o.contains("threshold")) numField(o["threshold"], rule, "outliers.threshold", 0.0, 1e30);
    if (o.contains("count")) {
        intField(o["count"], rule, "outliers.count", 0, 1 << 20);
        if (o.contains("threshold"))
            fail(rule, "outliers.count",
                 "give either threshold (channels above an abs-max) or count (the top channels), "
                 "not both");
    }
    if (o.contains("bits")) {
        const int64_t b = intField(o["bits"], rule, "outliers.bits", 8, 16);
        if (b != 8 && b != 16)
            fail(rule, "outliers.bits",
                 "expected 16 (kept in 16 bits) or 8 (quantised at 8 bits, Atom), got " +
                     o["bits"].dump());
        if (b == 8 && !o.contains("count"))
            fail(rule, "outliers.bits", "8-bit outlier channels need outliers.count (Atom)");
    }
}

/// Parses "N:M" (1 <= N < M <= 64); false when the text is not of that form.
bool parseNM(const std::string& p, int& n, int& m) {
    const auto c = p.find(':');
    if (c == std::string::npos || c == 0 || c + 1 >= p.size()) return false;
    for (size_t i = 0; i < p.size(); ++i)
        if (i != c && !std::isdigit(static_cast<unsigned char>(p[i]))) return false;
    if (c > 3 || p.size() - c - 1 > 3) return false;
    n = std::stoi(p.substr(0, c));
    m = std::stoi(p.substr(c + 1));
    return true;
}

void validateSparsity(const json& o, int rule) {
    if (!o.is_object()) fail(rule, "sparsity", "expected an object or null, got " + o.dump());
    checkKeys(o, {"method", "ratio", "pattern", "block_size", "damp", "count"}, rule, "sparsity.");
    if (o.contains("method"))
        strField(o["method"], rule, "sparsity.method", {"magnitude", "wanda", "sparsegpt"});
    if (o.contains("ratio")) {
        numField(o["ratio"], rule, "sparsity.ratio", 0.0, 1.0);
        if (o["ratio"].get<double>() >= 1.0)
            fail(rule, "sparsity.ratio", "must be below 1 (1 would remove every weight)");
    }
    if (o.contains("pattern")) {
        if (!o["pattern"].is_string())
            fail(rule, "sparsity.pattern", "expected a string, got " + o["pattern"].dump());
        const auto p = o["pattern"].get<std::string>();
        int n = 0, m = 0;
        if (p != "unstructured" && p != "per_row") {
            if (!parseNM(p, n, m))
                fail(rule, "sparsity.pattern",
                     "'" + p + "' is not one of unstructured, per_row or N:M (e.g. 2:4)");
            if (n < 1 || m > 64 || n >= m)
                fail(rule, "sparsity.pattern", "N:M needs 1 <= N < M <= 64, got " + p);
            if (o.contains("ratio"))
                fail(rule, "sparsity.ratio", "an N:M pattern fixes the ratio (1 - N/M)");
        }
    }
    if (o.contains("block_size"))
        intField(o["block_size"], rule, "sparsity.block_size", 1, 1 << 16);
    if (o.contains("damp")) numField(o["damp"], rule, "sparsity.damp", 0.0, 1.0);
    if (o.contains("count")) strField(o["count"], rule, "sparsity.count", {"reference", "exact"});
}

void validateStructured(const json& o, int rule) {
    if (!o.is_object()) fail(rule, "structured", "expected an object or null, got " + o.dump());
    checkKeys(o, {"mlp_ratio", "head_ratio", "score"}, rule, "structured.");
    for (const char* k : {"mlp_ratio", "head_ratio"})
        if (o.contains(k)) {
            numField(o[k], rule, std::string("structured.") + k, 0.0, 1.0);
            if (o[k].get<double>() >= 1.0)
                fail(rule, std::string("structured.") + k, "must be below 1");
        }
    if (o.contains("score"))
        strField(o["score"], rule, "structured.score", {"magnitude", "wanda", "loss"});
}

void validateLowRank(const json& o, int rule) {
    if (!o.is_object()) fail(rule, "lowrank", "expected an object or null, got " + o.dump());
    checkKeys(o, {"method", "rank", "energy", "param_ratio", "alpha"}, rule, "lowrank.");
    if (o.contains("method"))
        strField(o["method"], rule, "lowrank.method", {"svd", "asvd", "svd-llm"});
    int targets = 0;
    if (o.contains("rank"))
        intField(o["rank"], rule, "lowrank.rank", 1, int64_t(1) << 30), ++targets;
    if (o.contains("energy")) {
        numField(o["energy"], rule, "lowrank.energy", 0.0, 1.0), ++targets;
        if (o["energy"].get<double>() <= 0) fail(rule, "lowrank.energy", "must be above 0");
    }
    if (o.contains("param_ratio")) {
        numField(o["param_ratio"], rule, "lowrank.param_ratio", 0.0, 1.0), ++targets;
        if (o["param_ratio"].get<double>() <= 0 || o["param_ratio"].get<double>() >= 1)
            fail(rule, "lowrank.param_ratio", "must be in (0, 1)");
    }
    if (targets > 1) fail(rule, "lowrank", "give only one of rank, energy and param_ratio");
    if (o.contains("alpha")) numField(o["alpha"], rule, "lowrank.alpha", 0.0, 4.0);
}

/// Merges a section into the layer's accumulated settings field by field (null clears).
void mergeFields(const std::optional<json>& sec, std::optional<json>& acc,
                 std::map<std::string, int>& origin, int rule, const std::string& section) {
    if (!sec) return;
    if (sec->is_null()) {
        acc.reset();
        origin.clear();
        return;
    }
    if (!acc) acc = json::object();
    for (auto it = sec->begin(); it != sec->end(); ++it) {
        if (section == "lowrank" &&
            (it.key() == "rank" || it.key() == "energy" || it.key() == "param_ratio")) {
            acc->erase("rank"), acc->erase("energy"), acc->erase("param_ratio");
        }
        (*acc)[it.key()] = it.value();
        origin[it.key()] = rule;
    }
    origin[section] = rule;
}

std::vector<std::string> patternList(const json& v, int rule, const std::string& field,
                                     bool required) {
    if (!v.is_array()) {
        if (v.is_string()) return patternList(json::array({v}), rule, field, required);
        fail(rule, field, "expected an array of strings, got " + v.dump());
    }
    if (required && v.empty()) fail(rule, field, "must name at least one target");
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
        const std::string f = field + "[" + std::to_string(i) + "]";
        if (!v[i].is_string()) fail(rule, f, "expected a string, got " + v[i].dump());
        auto s = v[i].get<std::string>();
        if (s.empty()) fail(rule, f, "empty pattern");
        if (s.rfind("re:", 0) == 0) {
            try {
                checkNamePattern(s);
            } catch (const ArgumentError& e) {
                fail(rule, f, e.what());
            }
        }
        out.push_back(std::move(s));
    }
    return out;
}

Recipe weightOnly(const std::string& name, const std::string& desc, json weight) {
    json j = {{"lcw_recipe", 1},
              {"name", name},
              {"description", desc},
              {"rules", json::array({{{"targets", {"*"}}, {"weight", std::move(weight)}}})}};
    return Recipe::fromJson(j);
}

Recipe oneRule(const std::string& name, const std::string& desc, json rule) {
    rule["targets"] = {"*"};
    json j = {{"lcw_recipe", 1},
              {"name", name},
              {"description", desc},
              {"rules", json::array({std::move(rule)})}};
    return Recipe::fromJson(j);
}

/// Merges a rule's section into a layer's accumulated section (null clears it).
void mergeSection(std::optional<json>& acc, int& origin, const std::optional<json>& sec, int rule) {
    if (!sec) return;
    if (sec->is_null()) {
        acc.reset();
        origin = -1;
        return;
    }
    if (!acc) acc = json::object();
    for (auto it = sec->begin(); it != sec->end(); ++it) (*acc)[it.key()] = it.value();
    origin = rule;
}

std::string lower(std::string s) {
    for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

} // namespace

RecipeError::RecipeError(int rule, std::string field, const std::string& problem)
    : ArgumentError(ruleWhere(rule, field) + ": " + problem), m_rule(rule),
      m_field(std::move(field)) {}

const char* weightFormatName(WeightFormat f) {
    switch (f) {
    case WeightFormat::Int:
        return "int";
    case WeightFormat::Fp8E4M3:
        return "fp8_e4m3";
    case WeightFormat::Nf4:
        return "nf4";
    }
    return "?";
}

const char* granularityName(Granularity g) {
    switch (g) {
    case Granularity::Tensor:
        return "tensor";
    case Granularity::Channel:
        return "channel";
    case Granularity::Group:
        return "group";
    }
    return "?";
}

const char* weightMethodName(WeightMethod m) {
    return kMethods[size_t(m)].c_str();
}

std::optional<WeightMethod> weightMethodFromName(std::string_view name) {
    for (size_t i = 0; i < kMethods.size(); ++i)
        if (kMethods[i] == name) return WeightMethod(i);
    return std::nullopt;
}

bool methodIsGguf(WeightMethod m) {
    return ggufInfo(m) != nullptr;
}

DType ggufMethodType(WeightMethod m) {
    if (const GgufMethod* g = ggufInfo(m)) return g->type;
    throw ArgumentError(std::string("method '") + weightMethodName(m) + "' is not a GGUF type");
}

WeightSettings ggufSettings(WeightMethod m) {
    const GgufMethod* g = ggufInfo(m);
    if (!g)
        throw ArgumentError(std::string("method '") + weightMethodName(m) + "' is not a GGUF type");
    WeightSettings s;
    s.method = m;
    s.format = WeightFormat::Int;
    s.granularity = Granularity::Group;
    s.groupSize = g->subBlock;
    s.bits = g->bits;
    s.symmetric = g->symmetric;
    return s;
}

std::optional<WeightMethod> ggufMethodForType(DType t) {
    for (const auto& g : kGguf)
        if (g.type == t) return g.method;
    return std::nullopt;
}

double ggufBitsPerWeight(WeightMethod m) {
    const GgufMethod* g = ggufInfo(m);
    if (!g) return 0;
    return 8.0 * double(dtypeBlockBytes(g->type)) / double(dtypeBlockElems(g->type));
}

std::optional<WeightMethod> ggufFallback(WeightMethod m, int64_t cols) {
    const GgufMethod* g = ggufInfo(m);
    if (!g) return m;
    auto fits = [&](DType t) { return cols % dtypeBlockElems(t) == 0; };
    if (fits(g->type)) return m;
    WeightMethod sub;
    switch (m) {
    case WeightMethod::Q2_K:
    case WeightMethod::Q3_K:
    case WeightMethod::IQ4_XS:
        sub = WeightMethod::IQ4_NL;
        break;
    case WeightMethod::Q4_K:
        sub = WeightMethod::Q5_0;
        break;
    case WeightMethod::Q5_K:
        sub = WeightMethod::Q5_1;
        break;
    case WeightMethod::Q6_K:
        sub = WeightMethod::Q8_0;
        break;
    default:
        return std::nullopt; // a 32-element type: no fallback
    }
    return fits(ggufMethodType(sub)) ? sub : WeightMethod::F16;
}

bool squeezeUsesFisher(const json& weight) {
    return weight.is_object() && weight.contains("sensitivity") &&
           weight["sensitivity"] == "fisher";
}

bool slimUsesGptq(const json& weight) {
    return !(weight.is_object() && weight.contains("gptq") && weight["gptq"].is_boolean() &&
             !weight["gptq"].get<bool>());
}

bool methodNeedsCalibration(WeightMethod m) {
    return m == WeightMethod::Gptq || m == WeightMethod::Awq || m == WeightMethod::OmniQuant ||
           m == WeightMethod::SqueezeLlm || m == WeightMethod::Slim ||
           m == WeightMethod::EfficientQat;
}

bool methodIsCompact(WeightMethod m) {
    return m == WeightMethod::SqueezeLlm || m == WeightMethod::Dgq || m == WeightMethod::Slim;
}

WeightSettings WeightSettings::stored() const {
    return ggufGrid ? ggufSettings(*ggufGrid) : *this;
}

std::string WeightSettings::describe() const {
    if (methodIsGguf(method)) return weightMethodName(method);
    if (ggufGrid) return std::string(weightMethodName(method)) + " " + weightMethodName(*ggufGrid);
    if (method == WeightMethod::SqueezeLlm || method == WeightMethod::Slim) {
        char buf[96];
        if (method == WeightMethod::SqueezeLlm)
            std::snprintf(buf, sizeof buf, "squeezellm %d-bit codebook + %g%% sparse", bits,
                          outliersPct);
        else
            std::snprintf(buf, sizeof buf, "slim %g-bit avg g%lld asym", avgBits,
                          static_cast<long long>(groupSize));
        return buf;
    }
    std::string s;
    if (format == WeightFormat::Int)
        s = "int" + std::to_string(bits);
    else
        s = weightFormatName(format);
    if (granularity == Granularity::Group)
        s += " g" + std::to_string(groupSize);
    else
        s += std::string(" ") + granularityName(granularity);
    if (format == WeightFormat::Int) s += symmetric ? " sym" : " asym";
    if (clipRatio != 1.0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " clip %g", clipRatio);
        s += buf;
    }
    if (method != WeightMethod::Rtn) s += std::string(" ") + weightMethodName(method);
    return s;
}

OutlierSettings outlierSettingsOf(const json& o) {
    OutlierSettings s;
    s.threshold = o.value("threshold", 6.0);
    s.count = o.value("count", int64_t(-1));
    s.bits = int(o.value("bits", 16));
    s.sumSq = o.value("select", std::string("absmax")) == "sum_sq";
    return s;
}

std::vector<int32_t> outlierChannelsOf(const OutlierSettings& o, const std::vector<float>& score) {
    std::vector<int32_t> ch;
    const int64_t n = int64_t(score.size());
    if (!o.byCount()) {
        for (int64_t c = 0; c < n; ++c)
            if (double(score[size_t(c)]) >= o.threshold) ch.push_back(int32_t(c));
        return ch;
    }
    std::vector<int32_t> idx(static_cast<size_t>(n));
    for (int64_t c = 0; c < n; ++c) idx[size_t(c)] = int32_t(c);
    const int64_t k = std::min(o.count, n);
    auto key = [&](int32_t c) {
        const float v = score[size_t(c)];
        return std::isnan(v) ? -INFINITY : v;
    };
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
        return key(a) > key(b) || (key(a) == key(b) && a < b);
    });
    ch.assign(idx.begin(), idx.begin() + k);
    std::sort(ch.begin(), ch.end());
    return ch;
}

std::string ActivationSettings::describe() const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "a%d %s", bits, perToken ? "per-token" : "per-tensor");
    std::string r = buf;
    if (groupSize > 0) r += " g" + std::to_string(groupSize);
    if (clip < 1.0) {
        std::snprintf(buf, sizeof buf, " clip %.3g", clip);
        r += buf;
    }
    return r;
}

std::string KvSettings::describe() const {
    auto part = [&](char c, int b, KvGranularity g) {
        if (b >= 16) return std::string(1, c) + "16";
        return std::string(1, c) + std::to_string(b) +
               (g == KvGranularity::Token ? " token g" : " channel g") + std::to_string(groupSize);
    };
    std::string d = part('k', kBits, kGranularity) + ", " + part('v', vBits, vGranularity);
    if (pastOnly) d += ", past-only";
    if (smooth)
        d += ", WKVQuant smoothing (CRR " + std::to_string(crrBlocks) +
             (crrSteps > 0 ? ", " + std::to_string(crrSteps) + " steps" : std::string()) +
             (crrWeights ? ", weights learned with it" : "") + ")";
    return d;
}

std::string KvPolicyPlan::describe() const {
    auto count = [](double v, const char* of) {
        char b[64];
        if (v >= 1)
            std::snprintf(b, sizeof b, "%lld", (long long)v);
        else
            std::snprintf(b, sizeof b, "%g%% of the %s", v * 100, of);
        return std::string(b);
    };
    switch (policy.kind) {
    case KvPolicyKind::H2O:
        return "h2o budget " + count(policy.budget, "context") + ", recent " +
               count(policy.recent, "budget");
    case KvPolicyKind::Sinks:
        return "sinks " + std::to_string(policy.sinks) + " + window " +
               count(policy.window, "context");
    case KvPolicyKind::Mass: {
        char b[32];
        std::snprintf(b, sizeof b, "%g", policy.mass);
        return std::string("mass ") + b + ", recent " + count(policy.recent, "context");
    }
    case KvPolicyKind::None:
        break;
    }
    return "full";
}

double KvSettings::bitsPerValue(int bits, KvGranularity g, int64_t groupSize, int64_t width) {
    if (bits >= 16) return 32.0;
    const int64_t group = g == KvGranularity::Token ? std::min(groupSize, width) : groupSize;
    if (g == KvGranularity::Token) {
        const int64_t groups = (width + group - 1) / group;
        const double rowBits = double((width * bits + 7) / 8 * 8);
        return (rowBits + double(groups) * 64.0) / double(width);
    }
    return double((width * bits + 7) / 8 * 8) / double(width) + 64.0 / double(group);
}

bool Rule::matches(const std::string& name) const {
    bool explicitOnly = false;
    isTargetable(name, &explicitOnly);
    bool hit = false;
    for (const auto& t : targets) {
        if (explicitOnly ? t == name : patternMatches(t, name)) {
            hit = true;
            break;
        }
    }
    if (!hit) return false;
    for (const auto& t : ignore)
        if (patternMatches(t, name)) return false;
    return true;
}

namespace {

/// A rule's sections: the key, its validator and where the rule keeps it.
struct RuleSection {
    const char* key;
    void (*validate)(const json&, int);
    std::optional<json> Rule::*member;
};
const RuleSection kRuleSections[] = {
    {"weight", validateWeight, &Rule::weight},
    {"activation", validateActivation, &Rule::activation},
    {"kv", validateKv, &Rule::kv},
    {"outliers", validateOutliers, &Rule::outliers},
    {"smoothquant", validateSmoothQuant, &Rule::smoothquant},
    {"sparsity", validateSparsity, &Rule::sparsity},
    {"structured", validateStructured, &Rule::structured},
    {"lowrank", validateLowRank, &Rule::lowrank},
    {"activation_sparsity", validateActivationSparsity, &Rule::activationSparsity},
};

} // namespace

Recipe Recipe::fromJson(const json& j) {
    if (!j.is_object()) fail(-1, "", "expected a JSON object");
    checkKeys(j, {"lcw_recipe", "name", "description", "imatrix", "rotation", "rules"}, -1, "");
    if (!j.contains("lcw_recipe"))
        fail(-1, "lcw_recipe", "missing (a recipe starts with \"lcw_recipe\": 1)");
    if (!j["lcw_recipe"].is_number_integer() || j["lcw_recipe"].get<int64_t>() != kVersion)
        fail(-1, "lcw_recipe",
             "unsupported version " + j["lcw_recipe"].dump() + " (this lcw reads version 1)");
    Recipe r;
    if (j.contains("name")) {
        if (!j["name"].is_string()) fail(-1, "name", "expected a string");
        r.name = j["name"].get<std::string>();
    }
    if (j.contains("description")) {
        if (!j["description"].is_string()) fail(-1, "description", "expected a string");
        r.description = j["description"].get<std::string>();
    }
    if (j.contains("imatrix")) {
        if (!j["imatrix"].is_string() || j["imatrix"].get<std::string>().empty())
            fail(-1, "imatrix", "expected the path of a llama.cpp imatrix file or \"calibrate\"");
        r.imatrix = j["imatrix"].get<std::string>();
    }
    if (j.contains("rotation") && !j["rotation"].is_null())
        r.rotation = parseRotation(j["rotation"]);
    if (!j.contains("rules") || !j["rules"].is_array())
        fail(-1, "rules", "missing or not an array");
    for (size_t i = 0; i < j["rules"].size(); ++i) {
        const int ri = int(i);
        const json& rj = j["rules"][i];
        if (!rj.is_object()) fail(ri, "", "expected an object");
        checkKeys(rj,
                  {"targets", "ignore", "weight", "activation", "kv", "outliers", "smoothquant",
                   "comment", "sparsity", "structured", "lowrank", "activation_sparsity"},
                  ri, "");
        Rule rule;
        if (!rj.contains("targets")) fail(ri, "targets", "missing");
        rule.targets = patternList(rj["targets"], ri, "targets", true);
        if (rj.contains("ignore")) rule.ignore = patternList(rj["ignore"], ri, "ignore", false);
        if (rj.contains("comment")) {
            if (!rj["comment"].is_string()) fail(ri, "comment", "expected a string");
            rule.comment = rj["comment"].get<std::string>();
        }
        // Each section: null (switched off) or an object its validator accepts.
        for (const RuleSection& sec : kRuleSections)
            if (rj.contains(sec.key)) {
                if (!rj[sec.key].is_null()) sec.validate(rj[sec.key], ri);
                rule.*sec.member = rj[sec.key];
            }
        if (!rule.weight && !rule.activation && !rule.kv && !rule.outliers && !rule.smoothquant &&
            !rule.sparsity && !rule.structured && !rule.lowrank && !rule.activationSparsity)
            fail(ri, "",
                 "sets nothing (give weight, activation, kv, outliers, smoothquant, sparsity, "
                 "structured, lowrank or activation_sparsity)");
        r.rules.push_back(std::move(rule));
    }
    return r;
}

Recipe Recipe::load(const std::string& path) {
    const json j = readJsonFile(path);
    try {
        Recipe r = fromJson(j);
        if (!r.imatrix.empty() && r.imatrix != "calibrate" &&
            std::filesystem::path(r.imatrix).is_relative())
            r.imatrix =
                (std::filesystem::path(path).parent_path() / r.imatrix).lexically_normal().string();
        return r;
    } catch (const RecipeError& e) {
        // what() stops at a NUL, which a field name from the file may hold ("a\u0000b"): then
        // the prefix is longer than what() and the whole text is kept.
        const std::string what = e.what();
        const size_t skip = ruleWhere(e.rule(), e.field()).size() + 2;
        throw RecipeError(e.rule(), e.field(),
                          (skip <= what.size() ? what.substr(skip) : what) + " (" + path + ")");
    }
}

json Recipe::toJson() const {
    json j = {{"lcw_recipe", kVersion}, {"name", name}};
    if (!description.empty()) j["description"] = description;
    if (!imatrix.empty()) j["imatrix"] = imatrix;
    if (rotation)
        j["rotation"] = {{"method", rotation->learned ? "spinquant" : "hadamard"},
                         {"seed", rotation->seed},
                         {"online_down", rotation->down},
                         {"online_qk", rotation->kv}};
    if (rotation && rotation->learned) {
        j["rotation"]["steps"] = rotation->steps;
        j["rotation"]["lr"] = rotation->lr;
        j["rotation"]["batch"] = rotation->batch;
    }
    j["rules"] = json::array();
    for (const auto& r : rules) {
        json rj = {{"targets", r.targets}};
        if (!r.ignore.empty()) rj["ignore"] = r.ignore;
        if (!r.comment.empty()) rj["comment"] = r.comment;
        if (r.weight) rj["weight"] = *r.weight;
        if (r.activation) rj["activation"] = *r.activation;
        if (r.kv) rj["kv"] = *r.kv;
        if (r.outliers) rj["outliers"] = *r.outliers;
        if (r.smoothquant) rj["smoothquant"] = *r.smoothquant;
        if (r.sparsity) rj["sparsity"] = *r.sparsity;
        if (r.structured) rj["structured"] = *r.structured;
        if (r.lowrank) rj["lowrank"] = *r.lowrank;
        if (r.activationSparsity) rj["activation_sparsity"] = *r.activationSparsity;
        j["rules"].push_back(std::move(rj));
    }
    return j;
}

/// Weight-only RTN and NormalFloat/FP8 presets. (part of presets())
void addWeightOnlyPresets(std::vector<Preset>& v) {
    auto add = [&](const std::string& n, const std::string& d, json w) {
        v.push_back({n, d, weightOnly(n, d, std::move(w))});
    };
    add("W8A16", "int8 symmetric per-channel RTN weights, 16-bit activations",
        {{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}});
    add("W4A16-g128", "int4 asymmetric RTN, groups of 128 (f16 scale + zero)",
        {{"bits", 4}, {"symmetric", false}, {"granularity", "group"}, {"group_size", 128}});
    add("W4A16-g64", "int4 asymmetric RTN, groups of 64",
        {{"bits", 4}, {"symmetric", false}, {"granularity", "group"}, {"group_size", 64}});
    add("W4A16-g32", "int4 asymmetric RTN, groups of 32",
        {{"bits", 4}, {"symmetric", false}, {"granularity", "group"}, {"group_size", 32}});
    add("W3A16-g64", "int3 asymmetric RTN, groups of 64",
        {{"bits", 3}, {"symmetric", false}, {"granularity", "group"}, {"group_size", 64}});
    add("W2A16-g32", "int2 asymmetric RTN, groups of 32",
        {{"bits", 2}, {"symmetric", false}, {"granularity", "group"}, {"group_size", 32}});
    add("NF4-g64", "4-bit NormalFloat (QLoRA), absmax blocks of 64",
        {{"bits", 4}, {"format", "nf4"}, {"granularity", "group"}, {"group_size", 64}});
    add("FP8-E4M3", "fp8 e4m3 weights with a per-channel f16 scale",
        {{"bits", 8}, {"format", "fp8_e4m3"}, {"granularity", "channel"}});
    add("Q8_0", "GGUF q8_0: blocks of 32, int8 + f16 scale (8.5 bits/weight)",
        {{"method", "q8_0"}});
    add("Q5_0", "GGUF q5_0: blocks of 32, 5-bit + f16 scale (5.5 bits/weight)",
        {{"method", "q5_0"}});
    add("Q4_1", "GGUF q4_1: blocks of 32, 4-bit + f16 scale and min (5 bits/weight)",
        {{"method", "q4_1"}});
    add("Q4_0", "GGUF q4_0: blocks of 32, 4-bit + f16 scale (4.5 bits/weight)",
        {{"method", "q4_0"}});
}

/// Weights and activations. (part of presets())
void addWeightActivationPresets(std::vector<Preset>& v) {
    // Weights and activations (Qllm-Eval's W8A8/W4A8/W4A4, OmniQuant's W6A6/W4A4): RTN
    // per-channel weights, dynamic per-token symmetric activations at every linear input.
    auto addWA = [&](const std::string& n, const std::string& d, json w, json a) {
        v.push_back({n, d, oneRule(n, d, {{"weight", std::move(w)}, {"activation", a}})});
    };
    addWA("W8A8", "int8 sym per-channel weights, int8 dynamic per-token activations",
          {{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}},
          {{"bits", 8}, {"mode", "dynamic_per_token"}});
    addWA("W8A8-static",
          "int8 sym per-channel weights, int8 static per-tensor activations (calibrated)",
          {{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}},
          {{"bits", 8}, {"mode", "static_per_tensor"}});
    addWA("W6A6", "int6 asym per-channel weights, int6 dynamic per-token activations",
          {{"bits", 6}, {"symmetric", false}, {"granularity", "channel"}},
          {{"bits", 6}, {"mode", "dynamic_per_token"}});
    addWA("W4A8", "int4 asym per-channel weights, int8 dynamic per-token activations",
          {{"bits", 4}, {"symmetric", false}, {"granularity", "channel"}},
          {{"bits", 8}, {"mode", "dynamic_per_token"}});
    addWA("W4A4", "int4 asym per-channel weights, int4 dynamic per-token activations",
          {{"bits", 4}, {"symmetric", false}, {"granularity", "channel"}},
          {{"bits", 4}, {"mode", "dynamic_per_token"}});
}

/// KV cache only. (part of presets())
void addKvPresets(std::vector<Preset>& v) {
    // KV cache only (Qllm-Eval's KV8/KV4/KV2): asymmetric, per token in groups of 128
    // channels (the whole row when it is shorter); KIVI: keys per channel.
    auto addKv = [&](const std::string& n, const std::string& d, json kv) {
        v.push_back({n, d, oneRule(n, d, {{"kv", std::move(kv)}})});
    };
    for (int b : {8, 4, 2})
        addKv(
            "KV" + std::to_string(b),
            "KV cache: int" + std::to_string(b) +
                " asym K and V per token, groups of 128 channels; weights unchanged",
            {{"k_bits", b}, {"v_bits", b}, {"k_granularity", "token"}, {"v_granularity", "token"}});
    // Eviction policies (fractions of the context): H2O with half the budget for recent tokens,
    // StreamingLLM's 4 attention sinks + a sliding window of the same size, pruning by mass.
    addKv("KV-H2O-20",
          "KV cache: H2O eviction, 20% of the context (half recent, half heavy "
          "hitters); f32 values",
          {{"policy", "h2o"}, {"budget", 0.2}, {"recent", 0.5}});
    addKv("KV-sinks-window",
          "KV cache: 4 attention sinks + a sliding window of 20% of the context (StreamingLLM); "
          "f32 values",
          {{"policy", "sinks"}, {"sinks", 4}, {"window", 0.2}});
    addKv("KV4-H2O-20", "KV cache: H2O eviction (20% of the context) + int4 asym K and V per token",
          {{"policy", "h2o"},
           {"budget", 0.2},
           {"recent", 0.5},
           {"k_bits", 4},
           {"v_bits", 4},
           {"k_granularity", "token"},
           {"v_granularity", "token"}});
    addKv("KV-mass-90",
          "KV cache: keep the older tokens holding 90% of the accumulated attention, plus a "
          "recent window of 10% of the context; f32 values",
          {{"policy", "mass"}, {"mass", 0.9}, {"recent", 0.1}});
    addKv("KV2-KIVI",
          "KV cache: int2 asym, K per channel and V per token (KIVI), blocks/groups of 32",
          {{"k_bits", 2},
           {"v_bits", 2},
           {"k_granularity", "channel"},
           {"v_granularity", "token"},
           {"group_size", 32}});
}

/// Calibrated methods. (part of presets())
void addCalibratedPresets(std::vector<Preset>& v) {
    auto add = [&](const std::string& n, const std::string& d, json w) {
        v.push_back({n, d, weightOnly(n, d, std::move(w))});
    };
    // Calibrated methods (lcw-cli compress --calib FILE).
    add("W4A16-g128-GPTQ", "int4 asymmetric GPTQ, groups of 128 (needs --calib)",
        {{"bits", 4},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 128},
         {"method", "gptq"}});
    add("W4A16-g64-GPTQ", "int4 asymmetric GPTQ, groups of 64 (needs --calib)",
        {{"bits", 4},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 64},
         {"method", "gptq"}});
    add("W4A16-g32-GPTQ", "int4 asymmetric GPTQ, groups of 32 (needs --calib)",
        {{"bits", 4},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 32},
         {"method", "gptq"}});
    add("W3A16-g64-GPTQ", "int3 asymmetric GPTQ, groups of 64 (needs --calib)",
        {{"bits", 3},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 64},
         {"method", "gptq"}});
    // As llm-compressor's AWQModifier runs it: the scale search without AutoAWQ's clipping
    // search (lcw-cli export --format llmcompressor writes it exactly).
    add("W4A16-g128-AWQ",
        "int4 asymmetric AWQ, groups of 128, scale search only as llm-compressor's "
        "AWQModifier (needs --calib)",
        {{"bits", 4},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 128},
         {"method", "awq"},
         {"awq", {{"clip_search", false}}}});
    add("W4A16-g64-AWQ", "int4 asymmetric AWQ, groups of 64 (needs --calib)",
        {{"bits", 4},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 64},
         {"method", "awq"}});
    add("W4A16-g32-AWQ", "int4 asymmetric AWQ, groups of 32 (needs --calib)",
        {{"bits", 4},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 32},
         {"method", "awq"}});
    add("W3A16-g64-AWQ", "int3 asymmetric AWQ, groups of 64 (needs --calib)",
        {{"bits", 3},
         {"symmetric", false},
         {"granularity", "group"},
         {"group_size", 64},
         {"method", "awq"}});
}

/// SmoothQuant and pruning presets. (part of presets())
void addSmoothQuantPresets(std::vector<Preset>& v) {
    // SmoothQuant (alpha 0.5) in front of the weight-activation settings above.
    auto addSq = [&](const std::string& n, const std::string& d, json weight, int actBits) {
        json j = {
            {"lcw_recipe", 1},
            {"name", n},
            {"description", d},
            {"rules",
             json::array({{{"targets", {"*"}},
                           {"smoothquant", {{"alpha", 0.5}}},
                           {"weight", std::move(weight)},
                           {"activation", {{"bits", actBits}, {"mode", "dynamic_per_token"}}}}})}};
        v.push_back({n, d, Recipe::fromJson(j)});
    };
    addSq("W8A8-SQ",
          "SmoothQuant (alpha 0.5) + int8 per-channel weights + int8 dynamic per-token "
          "activations (needs --calib)",
          {{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}}, 8);
    addSq("W6A6-SQ",
          "SmoothQuant (alpha 0.5) + int6 asym per-channel weights + int6 dynamic per-token "
          "activations (needs --calib)",
          {{"bits", 6}, {"symmetric", false}, {"granularity", "channel"}}, 6);
    addSq("W4A8-SQ",
          "SmoothQuant (alpha 0.5) + int4 asym per-channel weights + int8 dynamic per-token "
          "activations (needs --calib)",
          {{"bits", 4}, {"symmetric", false}, {"granularity", "channel"}}, 8);
    addSq("W4A4-SQ",
          "SmoothQuant (alpha 0.5) + int4 asym per-channel weights + int4 dynamic per-token "
          "activations (needs --calib)",
          {{"bits", 4}, {"symmetric", false}, {"granularity", "channel"}}, 4);
    // Pruning: NVIDIA's 2:4 semi-structured sparsity chosen by SparseGPT, weights unquantised.
    v.push_back(
        {"2:4-SparseGPT",
         "2:4 semi-structured pruning by SparseGPT, weights otherwise unchanged "
         "(needs --calib)",
         oneRule("2:4-SparseGPT", "2:4 semi-structured pruning by SparseGPT (needs --calib)",
                 {{"sparsity", {{"method", "sparsegpt"}, {"pattern", "2:4"}}}})});
}
/// Rotations (QuaRot): the randomised Hadamard rotation with online transforms in front of
/// W4A4 KV4. (part of presets())
void addRotationPresets(std::vector<Preset>& v) {
    auto addRot = [&](const std::string& n, const std::string& d, const std::string& method,
                      const std::string& rotation = "hadamard") {
        json j = {
            {"lcw_recipe", 1},
            {"name", n},
            {"description", d},
            {"rotation", {{"method", rotation}, {"seed", 0}}},
            {"rules", json::array({{{"targets", {"*"}},
                                    {"weight",
                                     {{"bits", 4},
                                      {"symmetric", false},
                                      {"granularity", "channel"},
                                      {"method", method}}},
                                    {"activation", {{"bits", 4}, {"mode", "dynamic_per_token"}}},
                                    {"kv",
                                     {{"k_bits", 4},
                                      {"v_bits", 4},
                                      {"k_granularity", "token"},
                                      {"v_granularity", "token"}}}}})}};
        v.push_back({n, d, Recipe::fromJson(j)});
    };
    addRot("W4A4-KV4-QuaRot",
           "Hadamard rotation (QuaRot, online down and q/k) + int4 asym per-channel RTN "
           "weights + int4 per-token activations + KV4",
           "rtn");
    addRot("W4A4-KV4-QuaRot-GPTQ",
           "Hadamard rotation (QuaRot, online down and q/k) + int4 asym per-channel GPTQ "
           "weights + int4 per-token activations + KV4 (needs --calib)",
           "gptq");
    addRot("W4A4-KV4-SpinQuant",
           "learned rotation (SpinQuant: Cayley SGD from the Hadamard start, 100 steps of 8 "
           "calibration windows, with the W4A4 KV4 RTN model simulated) + int4 asym per-channel "
           "RTN weights + int4 per-token activations + KV4 (needs --calib)",
           "rtn", "spinquant");
    addRot("W4A4-KV4-SpinQuant-GPTQ",
           "learned rotation (SpinQuant, learned with float weights and 4-bit activations and "
           "KV as the reference does before GPTQ) + int4 asym per-channel GPTQ weights + int4 "
           "per-token activations + KV4 (needs --calib)",
           "gptq", "spinquant");
}

/// AffineQuant: OmniQuant's LWC + LET with the learned per-head affine matrices between attn.v
/// and attn.o. (part of presets())
void addAffinePresets(std::vector<Preset>& v) {
    auto addAq = [&](const std::string& n, const std::string& d, json weight, int actBits) {
        json rule = {{"weight", std::move(weight)}};
        if (actBits > 0) rule["activation"] = {{"bits", actBits}, {"mode", "dynamic_per_token"}};
        v.push_back({n, d, oneRule(n, d, rule)});
    };
    addAq("W4A4-AffineQuant",
          "AffineQuant: OmniQuant LWC + LET with learned affine matrices between v and o "
          "(gradual mask), int4 asym per-channel weights, int4 per-token activations (needs "
          "--calib)",
          {{"bits", 4},
           {"symmetric", false},
           {"granularity", "channel"},
           {"method", "omniquant"},
           {"affine", true}},
          4);
    addAq("W3A16-g64-AffineQuant",
          "AffineQuant: OmniQuant LWC with learned affine matrices between v and o (gradual "
          "mask), int3 asym groups of 64 (needs --calib)",
          {{"bits", 3},
           {"symmetric", false},
           {"granularity", "group"},
           {"group_size", 64},
           {"method", "omniquant"},
           {"affine", true}},
          0);
}

/// Atom (Zhao et al. 2023): W4A4 in groups of 128 over the normal channels, the 128 input
/// channels of largest calibrated Σ x² (Atom's ranking) reordered to the end at 8 bits, KV4 per
/// token in groups of 128 (Llama-7B's head size). The paper's sizes: for 4096-wide models (layers
/// narrower than 256 input channels are refused; the README scales them down for tiny models).
/// (part of presets())
void addAtomPresets(std::vector<Preset>& v) {
    auto addAtom = [&](const std::string& n, const std::string& d, const std::string& method) {
        json j = {
            {"lcw_recipe", 1},
            {"name", n},
            {"description", d},
            {"rules",
             json::array({{{"targets", {"*"}},
                           {"weight",
                            {{"bits", 4},
                             {"symmetric", false},
                             {"granularity", "group"},
                             {"group_size", 128},
                             {"method", method}}},
                           {"activation",
                            {{"bits", 4}, {"mode", "dynamic_per_token"}, {"group_size", 128}}},
                           {"outliers", {{"count", 128}, {"bits", 8}, {"select", "sum_sq"}}},
                           {"kv",
                            {{"k_bits", 4},
                             {"v_bits", 4},
                             {"k_granularity", "token"},
                             {"v_granularity", "token"},
                             {"group_size", 128}}}}})}};
        v.push_back({n, d, Recipe::fromJson(j)});
    };
    addAtom("W4A4-KV4-Atom",
            "Atom: 128 outlier channels reordered to the end at 8 bits, int4 g128 asym RTN "
            "weights and int4 g128 per-token activations on the rest, KV4 (needs --calib)",
            "rtn");
    addAtom("W4A4-KV4-Atom-GPTQ",
            "Atom with GPTQ weights: 128 outlier channels at 8 bits, int4 g128 asym GPTQ "
            "weights and int4 g128 per-token activations on the rest, KV4 (needs --calib)",
            "gptq");
}

/// WKVQuant: weights and KV cache only (W4 KV4), int4 asym g64 weights by `method`, KV4 per
/// token with past-only quantisation and the smoothing learned by `steps` CRR steps (with the
/// weights' clipping when `joint`). (part of presets())
void addWkvPreset(std::vector<Preset>& v, const std::string& n, const std::string& d,
                  const char* method, int steps, bool joint) {
    json kv = {{"k_bits", 4},
               {"v_bits", 4},
               {"k_granularity", "token"},
               {"v_granularity", "token"},
               {"past_only", true},
               {"smooth", true},
               {"crr_blocks", 1},
               {"crr_steps", steps},
               {"crr_lr", 0.01}};
    if (joint) kv["crr_weights"] = true;
    v.push_back({n, d,
                 oneRule(n, d,
                         {{"weight",
                           {{"bits", 4},
                            {"symmetric", false},
                            {"granularity", "group"},
                            {"group_size", 64},
                            {"method", method}}},
                          {"kv", kv}})});
}

void addWkvPresets(std::vector<Preset>& v) {
    addWkvPreset(v, "W4-KV4-WKVQuant",
                 "WKVQuant: int4 asym g64 GPTQ weights, KV4 per token (g128) with past-only "
                 "quantisation and calibrated per-channel smoothing chosen by cross-block "
                 "reconstruction, searched then learned by 20 gradient steps (needs --calib)",
                 "gptq", 20, false);
    addWkvPreset(v, "W4-KV4-WKVQuant-LWC",
                 "WKVQuant with its weights learned too: int4 asym g64 weights whose clipping "
                 "(OmniQuant's LWC, from RTN) is learned jointly with the KV4 per-token smoothing "
                 "on the cross-block reconstruction objective, past-only, 40 gradient steps "
                 "(needs --calib)",
                 "rtn", 40, true);
}

/// SqueezeLLM, DGQ and SliM-LLM (compact_formats.h). (part of presets())
void addCompactPresets(std::vector<Preset>& v) {
    v.push_back({"W3-SqueezeLLM",
                 "SqueezeLLM: 3-bit per-row code books by curvature-weighted k-means, 0.45% "
                 "largest weights in sparse f16 (needs --calib)",
                 weightOnly("W3-SqueezeLLM", "SqueezeLLM 3-bit, 0.45% sparse outliers",
                            {{"method", "squeezellm"}, {"bits", 3}, {"outliers_pct", 0.45}})});
    const char* dgqDesc = "DGQ: int4 asym groups of 32 whose scales are 8-bit codes x an f16 "
                          "channel scale, int8 dynamic per-token activations";
    v.push_back({"W4A8-DGQ", dgqDesc,
                 oneRule("W4A8-DGQ", dgqDesc,
                         {{"weight",
                           {{"method", "dgq"},
                            {"bits", 4},
                            {"symmetric", false},
                            {"granularity", "group"},
                            {"group_size", 32}}},
                          {"activation", {{"bits", 8}, {"mode", "dynamic_per_token"}}}})});
    v.push_back({"W2.5-SliM",
                 "SliM-LLM: 2/3/4-bit asym column groups of 32 at 2.5 bits on average, salient "
                 "groups wider, quantised by GPTQ on SQC grids (needs --calib)",
                 weightOnly("W2.5-SliM", "SliM-LLM 2.5-bit average, groups of 32",
                            {{"method", "slim"},
                             {"avg_bits", 2.5},
                             {"granularity", "group"},
                             {"group_size", 32}})});
}

/// EfficientQAT Block-AP (efficientqat.h). (part of presets())
void addEfficientQatPresets(std::vector<Preset>& v) {
    v.push_back({"W2-g64-EfficientQAT",
                 "EfficientQAT Block-AP: int2 asym groups of 64 whose weights, step sizes and "
                 "zero points are trained block by block on the block output (needs --calib)",
                 weightOnly("W2-g64-EfficientQAT", "EfficientQAT Block-AP int2 asym g64",
                            {{"method", "efficientqat"},
                             {"bits", 2},
                             {"symmetric", false},
                             {"granularity", "group"},
                             {"group_size", 64}})});
    v.push_back({"W3-g64-EfficientQAT",
                 "EfficientQAT Block-AP: int3 asym groups of 64 whose weights, step sizes and "
                 "zero points are trained block by block on the block output (needs --calib)",
                 weightOnly("W3-g64-EfficientQAT", "EfficientQAT Block-AP int3 asym g64",
                            {{"method", "efficientqat"},
                             {"bits", 3},
                             {"symmetric", false},
                             {"granularity", "group"},
                             {"group_size", 64}})});
}

/// Activation top-K sparsity only. (part of presets())
void addActivationSparsityPresets(std::vector<Preset>& v) {
    // Q-Sparse's top-K of every linear input in the blocks (lm_head is only selected by name):
    // the number is the sparsity, the share of each token's input entries set to zero.
    auto add = [&](const std::string& n, double topk) {
        const std::string d = "top-K activation sparsity (Q-Sparse): keeps " +
                              std::to_string(int(std::lround(topk * 100))) +
                              " % of each token's linear inputs, weights unchanged";
        v.push_back({n, d, oneRule(n, d, {{"activation_sparsity", {{"topk", topk}}}})});
    };
    add("QSparse-50", 0.5);
    add("QSparse-70", 0.3);
}

const std::vector<Preset>& presets() {
    static const std::vector<Preset> p = [] {
        std::vector<Preset> v;
        addWeightOnlyPresets(v);
        addWeightActivationPresets(v);
        addKvPresets(v);
        addCalibratedPresets(v);
        addSmoothQuantPresets(v);
        addRotationPresets(v);
        addAffinePresets(v);
        addAtomPresets(v);
        addWkvPresets(v);
        addCompactPresets(v);
        addEfficientQatPresets(v);
        addActivationSparsityPresets(v);
        return v;
    }();
    return p;
}

const Preset* findPresetIfAny(const std::string& name) {
    for (const auto& p : presets())
        if (lower(p.name) == lower(name)) return &p;
    return nullptr;
}

const Preset& findPreset(const std::string& name) {
    std::string names;
    for (const auto& p : presets()) {
        if (lower(p.name) == lower(name)) return p;
        names += (names.empty() ? "" : ", ") + p.name;
    }
    throw ArgumentError("unknown preset '" + name + "' (presets: " + names + ")");
}

bool isTargetable(const std::string& n, bool* explicitOnly) {
    static const Regex kLinear(
        R"(layers\.\d+\.(attn\.(q|k|v|o)|mlp\.(gate|up|down)|mlp\.experts\.\d+\.(gate|up|down)|mixer\.(in_proj|x_proj|dt_proj|out_proj)))");
    static const Regex kExplicit(R"(embed|lm_head|layers\.\d+\.mlp\.router)");
    const bool ex = kExplicit.fullMatch(n);
    if (explicitOnly) *explicitOnly = ex;
    return ex || kLinear.fullMatch(n);
}

namespace {

SparsitySettings resolveSparsity(const json& o) {
    SparsitySettings s;
    if (o.contains("method")) {
        const auto m = o["method"].get<std::string>();
        s.method = m == "wanda"       ? SparsityMethod::Wanda
                   : m == "sparsegpt" ? SparsityMethod::SparseGpt
                                      : SparsityMethod::Magnitude;
    }
    if (o.contains("ratio")) s.ratio = o["ratio"].get<double>();
    if (o.contains("pattern")) {
        const auto p = o["pattern"].get<std::string>();
        if (p == "unstructured") {
            s.pattern = SparsityPattern::Unstructured;
        } else if (p == "per_row") {
            s.pattern = SparsityPattern::PerRow;
        } else {
            s.pattern = SparsityPattern::NM;
            parseNM(p, s.n, s.m);
            s.ratio = 1.0 - double(s.n) / double(s.m);
        }
    }
    if (o.contains("block_size")) s.blockSize = o["block_size"].get<int64_t>();
    if (o.contains("damp")) s.damp = o["damp"].get<double>();
    if (o.contains("count"))
        s.count = o["count"].get<std::string>() == "exact" ? SparsityCount::Exact
                                                           : SparsityCount::Reference;
    return s;
}

LowRankSettings resolveLowRank(const json& o, std::map<std::string, int>& origin,
                               const LayerPlan& lp) {
    LowRankSettings s;
    if (o.contains("method")) {
        const auto m = o["method"].get<std::string>();
        s.method = m == "asvd"      ? LowRankMethod::Asvd
                   : m == "svd-llm" ? LowRankMethod::SvdLlm
                                    : LowRankMethod::Svd;
    }
    if (o.contains("rank")) {
        s.target = LowRankTarget::Rank;
        s.rank = o["rank"].get<int64_t>();
        if (s.rank > std::min(lp.rows, lp.cols))
            fail(origin["rank"], "lowrank.rank",
                 "rank " + std::to_string(s.rank) + " exceeds min(rows, cols) = " +
                     std::to_string(std::min(lp.rows, lp.cols)) + " of " + lp.name);
    } else if (o.contains("energy")) {
        s.target = LowRankTarget::Energy;
        s.energy = o["energy"].get<double>();
    } else {
        s.target = LowRankTarget::ParamRatio;
        if (o.contains("param_ratio")) s.paramRatio = o["param_ratio"].get<double>();
    }
    if (o.contains("alpha")) s.alpha = o["alpha"].get<double>();
    return s;
}

std::optional<int> blockIndex(const std::string& name) {
    return layerIndexOf(name);
}

void resolveStructured(const json& o, std::map<std::string, int>& origin, const std::string& name,
                       const Model& model, std::map<int, BlockStructured>& out) {
    const auto layer = blockIndex(name);
    if (!layer) return;
    const bool mlp = name == "layers." + std::to_string(*layer) + ".mlp.down";
    const bool attn = name == "layers." + std::to_string(*layer) + ".attn.o";
    if (!mlp && !attn) return;
    BlockStructured& b = out[*layer];
    b.layer = *layer;
    const int rule = origin["structured"];
    if (o.contains("score")) {
        const auto sc = o["score"].get<std::string>();
        b.settings.score = sc == "wanda"  ? StructuredScore::Wanda
                           : sc == "loss" ? StructuredScore::Loss
                                          : StructuredScore::Magnitude;
    }
    if (mlp && o.contains("mlp_ratio") && o["mlp_ratio"].get<double>() > 0) {
        if (model.spec().isMoe())
            fail(origin["mlp_ratio"], "structured.mlp_ratio",
                 "mixture-of-experts MLPs cannot be pruned structurally (" + name + ")");
        b.settings.mlpRatio = o["mlp_ratio"].get<double>();
        b.mlpRule = rule;
    }
    if (attn && o.contains("head_ratio") && o["head_ratio"].get<double>() > 0) {
        b.settings.headRatio = o["head_ratio"].get<double>();
        b.headRule = rule;
    }
}

void finishStructured(std::map<int, BlockStructured>& blocks, Plan& plan, const Model& model,
                      const PlanOptions& opts) {
    for (auto& [layer, b] : blocks) {
        if (!b.settings.active()) continue;
        const int rule = b.mlpRule >= 0 ? b.mlpRule : b.headRule;
        if (model.spec().isMamba())
            fail(rule, "structured", "Mamba blocks have no MLP channels or attention heads");
        if (b.settings.needsCalibration() && !opts.hasCalibration)
            fail(rule, "structured.score",
                 std::string("'") + structuredScoreName(b.settings.score) +
                     "' needs calibration data and none was given");
        const std::string p = "layers." + std::to_string(layer) + ".";
        if (b.settings.headRatio > 0)
            for (const char* n : {"attn.q", "attn.k", "attn.v", "attn.o"})
                if (!model.find(p + n))
                    fail(b.headRule, "structured.head_ratio",
                         "head pruning needs separate " + p + n + " weights");
        plan.structured.push_back(b);
    }
}

/// Which of the block's structured prunings touch this layer.
bool structurallyPruned(const std::string& name, const Plan& plan) {
    const auto layer = blockIndex(name);
    if (!layer) return false;
    for (const auto& b : plan.structured) {
        if (b.layer != *layer) continue;
        const std::string rest = name.substr(name.find('.', 7) + 1);
        if (b.settings.mlpRatio > 0 &&
            (rest == "mlp.gate" || rest == "mlp.up" || rest == "mlp.down"))
            return true;
        if (b.settings.headRatio > 0 &&
            (rest == "attn.q" || rest == "attn.k" || rest == "attn.v" || rest == "attn.o"))
            return true;
    }
    return false;
}

void checkLayerCombination(const LayerPlan& lp, const Plan& plan, const PlanOptions& opts) {
    if (lp.sparsity && lp.lowrank)
        fail(lp.lowrankRule, "lowrank",
             lp.name + " is both pruned (rule " + std::to_string(lp.sparsityRule) +
                 ") and factorised; give it only one of sparsity and lowrank");
    if (lp.lowrank && structurallyPruned(lp.name, plan))
        fail(lp.lowrankRule, "lowrank",
             lp.name + " is structurally pruned; low-rank factorisation of it is not supported");
    if (lp.lowrank && lp.quantize && methodIsGguf(lp.weight.method))
        fail(lp.lowrankRule, "lowrank",
             std::string("the GGUF scheme ") + weightMethodName(lp.weight.method) +
                 " cannot quantise the low-rank factors of " + lp.name + " (use rtn)");
    if ((lp.sparsity || lp.lowrank) && lp.quantize && methodIsCompact(lp.weight.method))
        fail(lp.sparsity ? lp.sparsityRule : lp.lowrankRule, lp.sparsity ? "sparsity" : "lowrank",
             std::string("method ") + weightMethodName(lp.weight.method) + " of " + lp.name +
                 " cannot be combined with pruning or low-rank factors (use rtn)");
    if (lp.sparsity && lp.sparsity->needsCalibration() && !opts.hasCalibration)
        fail(lp.sparsityRule, "sparsity.method",
             std::string("'") + sparsityMethodName(lp.sparsity->method) +
                 "' needs calibration data and none was given");
    if (lp.lowrank && lp.lowrank->needsCalibration() && !opts.hasCalibration)
        fail(lp.lowrankRule, "lowrank.method",
             std::string("'") + lowRankMethodName(lp.lowrank->method) +
                 "' needs calibration data and none was given");
}

} // namespace

std::string LayerPlan::describe() const {
    std::string s;
    auto add = [&](const std::string& x) { s += (s.empty() ? "" : " + ") + x; };
    if (lowrank) add(lowrank->describe());
    if (sparsity) add(sparsity->describe());
    if (quantize) add(weight.describe());
    return s.empty() ? "none" : s;
}

bool LayerPlan::needsCalibration() const {
    return (quantize && methodNeedsCalibration(weight.method)) ||
           (sparsity && sparsity->needsCalibration()) || (lowrank && lowrank->needsCalibration());
}

bool Plan::needsCalibration() const {
    auto layerNeeds = [](const LayerPlan& l) { return l.needsCalibration() || l.hasOutliers; };
    auto blockNeeds = [](const BlockStructured& b) { return b.settings.needsCalibration(); };
    auto kvNeeds = [](const KvPlan& k) { return k.kv.smooth; }; // WKVQuant's CRR search
    return learnedRotation || !smooth.empty() ||
           std::any_of(layers.begin(), layers.end(), layerNeeds) ||
           std::any_of(structured.begin(), structured.end(), blockNeeds) ||
           std::any_of(kv.begin(), kv.end(), kvNeeds);
}

namespace {

/// A layer's sections merged over the rules that match it, with the rule of each field.
struct MergedSections {
    std::optional<json> w, act, outl, sp, lr, st, asp;
    int actRule = -1, outlRule = -1, aspRule = -1;
    std::map<std::string, int> origin, spOrigin, lrOrigin, stOrigin;
};

/// Merges, in rule order, the sections of the rules that match lp (recording the matches in
/// plan); sets lp's activation, kv, outlier and SmoothQuant fields.
MergedSections mergeRules(const Recipe& r, LayerPlan& lp, Plan& plan) {
    MergedSections m;
    for (size_t i = 0; i < r.rules.size(); ++i) {
        const Rule& rule = r.rules[i];
        if (!rule.matches(lp.name)) continue;
        plan.matches[i].layers.push_back(lp.name);
        if (rule.weight) {
            if (rule.weight->is_null()) {
                m.w.reset();
                m.origin.clear();
            } else {
                if (!m.w) m.w = json::object();
                for (auto it = rule.weight->begin(); it != rule.weight->end(); ++it) {
                    (*m.w)[it.key()] = it.value();
                    m.origin[it.key()] = int(i);
                }
                m.origin["weight"] = int(i);
            }
        }
        mergeFields(rule.sparsity, m.sp, m.spOrigin, int(i), "sparsity");
        mergeFields(rule.lowrank, m.lr, m.lrOrigin, int(i), "lowrank");
        mergeFields(rule.structured, m.st, m.stOrigin, int(i), "structured");
        if (rule.activation) lp.hasActivation = !rule.activation->is_null();
        if (rule.kv) lp.hasKv = !rule.kv->is_null();
        if (rule.outliers) lp.hasOutliers = !rule.outliers->is_null();
        mergeSection(m.act, m.actRule, rule.activation, int(i));
        mergeSection(m.outl, m.outlRule, rule.outliers, int(i));
        mergeSection(m.asp, m.aspRule, rule.activationSparsity, int(i));
        if (rule.smoothquant) {
            // (DGQ's percentile rule has no α: 0 marks the layer as smoothed)
            lp.smoothAlpha =
                rule.smoothquant->is_null() ? -1.0 : rule.smoothquant->value("alpha", 0.0);
            lp.smoothRule = rule.smoothquant->is_null() ? -1 : int(i);
        }
    }
    return m;
}

/// The layer's activation quantisation, when its merged section quantises below 16 bits.
void planActivation(const MergedSections& m, const TensorView& t, const Model& model, Plan& plan) {
    if (!m.act) return;
    const std::optional<json>& act = m.act;
    ActivationPlan ap;
    ap.name = t.name;
    ap.cols = t.shape[1];
    ap.rule = m.actRule;
    ap.act.bits = int(act->value("bits", 8));
    ap.act.perToken = act->value("mode", std::string("dynamic_per_token")) == "dynamic_per_token";
    ap.act.clip = act->value("clip", 1.0);
    ap.act.groupSize = act->value("group_size", int64_t(0));
    if (ap.act.groupSize > ap.cols)
        fail(m.actRule, "activation.group_size",
             "group size " + std::to_string(ap.act.groupSize) + " is larger than the input of " +
                 t.name + " (" + std::to_string(ap.cols) + " channels)");
    if (ap.act.groupSize > 0 && !ap.act.perToken)
        fail(m.actRule, "activation.group_size",
             "groups are per token: they go with mode dynamic_per_token (" + t.name + ")");
    if (m.outl) {
        ap.outlierRule = m.outlRule;
        ap.outliers = outlierSettingsOf(*m.outl);
    }
    if (ap.act.bits < 16) {
        if (t.name == "embed")
            fail(m.actRule, "activation",
                 "embed is a lookup table: it has no input activations to quantise");
        if (model.spec().isMamba())
            fail(m.actRule, "activation",
                 "activation quantisation is not implemented for Mamba blocks (" + t.name + ")");
        plan.activations.push_back(std::move(ap));
    }
}

/// The layer's top-K activation sparsity, when its merged section keeps less than everything.
void planActivationSparsity(const MergedSections& m, const TensorView& t, const Model& model,
                            Plan& plan) {
    if (!m.asp) return;
    ActivationSparsityPlan ap;
    ap.name = t.name;
    ap.cols = t.shape[1];
    ap.rule = m.aspRule;
    ap.topk = m.asp->value("topk", 1.0);
    if (!(ap.topk < 1.0)) return;
    ap.kept = runtime::topKCount(float(ap.topk), ap.cols);
    if (t.name == "embed")
        fail(m.aspRule, "activation_sparsity",
             "embed is a lookup table: it has no input activations to sparsify");
    if (model.spec().isMamba())
        fail(m.aspRule, "activation_sparsity",
             "activation sparsity is not implemented for Mamba blocks (" + t.name + ")");
    plan.activationSparsity.push_back(std::move(ap));
}

/// The rule that set a weight field (the weight section's last rule when none set it).
struct FieldOrigin {
    const std::map<std::string, int>& origin;
    int weightRule;
    int operator()(const std::string& f) const {
        return origin.count(f) ? origin.at(f) : weightRule;
    }
};

/// Reads the merged weight section's method, format, bits, symmetry and granularity into s.
void readWeightFields(const json& w, const FieldOrigin& org, const std::string& name,
                      WeightSettings& s) {
    if (w.contains("method")) s.method = methodFromName(w["method"].get<std::string>());
    if (w.contains("format")) {
        const auto f = w["format"].get<std::string>();
        s.format = f == "int"   ? WeightFormat::Int
                   : f == "nf4" ? WeightFormat::Nf4
                                : WeightFormat::Fp8E4M3;
    }
    if (w.contains("bits")) s.bits = w["bits"].get<int>();
    if (s.format == WeightFormat::Nf4) {
        if (w.contains("bits") && s.bits != 4)
            fail(org("bits"), "weight.bits",
                 "format nf4 (rule " + std::to_string(org("format")) + ") has 4 bits, got " +
                     std::to_string(s.bits) + " for " + name);
        s.bits = 4;
    }
    if (s.format == WeightFormat::Fp8E4M3) {
        if (w.contains("bits") && s.bits != 8)
            fail(org("bits"), "weight.bits",
                 "format fp8_e4m3 (rule " + std::to_string(org("format")) + ") has 8 bits, got " +
                     std::to_string(s.bits) + " for " + name);
        s.bits = 8;
    }
    if (w.contains("symmetric")) s.symmetric = w["symmetric"].get<bool>();
    if (w.contains("granularity")) {
        const auto g = w["granularity"].get<std::string>();
        s.granularity = g == "tensor"    ? Granularity::Tensor
                        : g == "channel" ? Granularity::Channel
                                         : Granularity::Group;
    } else if (w.contains("group_size")) {
        s.granularity = Granularity::Group;
    }
    if (w.contains("group_size")) s.groupSize = w["group_size"].get<int64_t>();
    if (w.contains("outliers_pct")) s.outliersPct = w["outliers_pct"].get<double>();
    if (w.contains("avg_bits")) s.avgBits = w["avg_bits"].get<double>();
    if (w.contains("clip_ratio")) s.clipRatio = w["clip_ratio"].get<double>();
    if (s.format == WeightFormat::Nf4 && !w.contains("granularity") && !w.contains("group_size")) {
        s.granularity = Granularity::Group;
        s.groupSize = 64;
    }
}

/// GPTQ / AWQ on a GGUF type's grid (`"gguf"`), with llama.cpp's fallback for short rows.
void applyGgufGrid(LayerPlan& lp, const json& w, const FieldOrigin& org, Plan& plan) {
    WeightSettings& s = lp.weight;
    if (s.method != WeightMethod::Gptq && s.method != WeightMethod::Awq)
        fail(org("gguf"), "weight.gguf",
             "a GGUF grid goes with method gptq or awq (rule " + std::to_string(org("method")) +
                 " sets " + weightMethodName(s.method) + " for " + lp.name +
                 "); ggml's own quantiser is method \"" + w["gguf"].get<std::string>() + "\"");
    const WeightMethod grid = methodFromName(w["gguf"].get<std::string>());
    const std::optional<WeightMethod> fit = ggufFallback(grid, lp.cols);
    if (!fit)
        fail(org("gguf"), "weight.gguf",
             std::string(weightMethodName(grid)) + " blocks do not fit " + lp.name + "'s rows of " +
                 std::to_string(lp.cols) + " weights");
    if (*fit != grid) {
        lp.fallbackFrom = grid;
        plan.warnings.push_back(lp.name + ": " + weightMethodName(grid) +
                                " needs rows that are a multiple of 256 but the rows "
                                "have " +
                                std::to_string(lp.cols) + " weights; using " +
                                weightMethodName(*fit) + " instead (llama.cpp's fallback)");
    }
    const WeightMethod method = s.method;
    s = ggufSettings(*fit);
    if (*fit != WeightMethod::F16) { // f16 (llama.cpp's last fallback) has no codes
        s.method = method;
        s.ggufGrid = *fit;
    }
}

/// One of ggml's own quantisers, with llama.cpp's fallback for short rows.
void applyGgufMethod(LayerPlan& lp, const FieldOrigin& org, Plan& plan) {
    WeightSettings& s = lp.weight;
    const std::optional<WeightMethod> fit = ggufFallback(s.method, lp.cols);
    if (!fit)
        fail(org("method"), "weight.method",
             std::string(weightMethodName(s.method)) +
                 " needs rows that are a multiple of 32 but " + lp.name + " has rows of " +
                 std::to_string(lp.cols) +
                 " (ignore it in this rule or give it an RTN rule after this one)");
    if (*fit != s.method) {
        lp.fallbackFrom = s.method;
        plan.warnings.push_back(lp.name + ": " + weightMethodName(s.method) +
                                " needs rows that are a " + "multiple of 256 but the rows have " +
                                std::to_string(lp.cols) + " weights; using " +
                                weightMethodName(*fit) + " instead (llama.cpp's fallback)");
        s.method = *fit;
    }
    s = ggufSettings(s.method);
}

// ---- compact methods: squeezellm, dgq, slim (compact_formats.h) ----

/// The weight keys of one compact method each; any of them sends the section to resolveCompact,
/// which refuses it with another method.
struct CompactKey {
    const char* key;
    WeightMethod method;
};
constexpr CompactKey kCompactKeys[] = {{"outliers_pct", WeightMethod::SqueezeLlm},
                                       {"sensitivity", WeightMethod::SqueezeLlm},
                                       {"avg_bits", WeightMethod::Slim},
                                       {"gptq", WeightMethod::Slim},
                                       {"sqc", WeightMethod::Slim},
                                       {"sqc_lambda", WeightMethod::Slim}};

bool hasCompactKey(const json& w) {
    for (const CompactKey& k : kCompactKeys)
        if (w.contains(k.key)) return true;
    return false;
}

/// Checks a compact method's fields (bits default: squeezellm 3, dgq 4); slim groups that do not
/// divide the row become the divisor of the row closest to the group size asked for (every
/// column group then has the same length; a warning says so).
void resolveCompact(LayerPlan& lp, const json& w, const FieldOrigin& org, Plan& plan) {
    WeightSettings& s = lp.weight;
    const std::string m = weightMethodName(s.method);
    for (const CompactKey& k : kCompactKeys)
        if (w.contains(k.key) && s.method != k.method)
            fail(org(k.key), std::string("weight.") + k.key,
                 std::string("goes with method ") + weightMethodName(k.method) + ", not " + m);
    if (w.contains("sqc") && w["sqc"].get<bool>() && !slimUsesGptq(w))
        fail(org("sqc"), "weight.sqc",
             "SQC chooses the grids of slim's GPTQ step: it needs \"gptq\": true");
    if (s.format != WeightFormat::Int)
        fail(org("format"), "weight.format",
             m + " works on int codes, not " + weightFormatName(s.format));
    if (!w.contains("bits")) s.bits = s.method == WeightMethod::SqueezeLlm ? 3 : 4;
    if (s.method == WeightMethod::SqueezeLlm) {
        s.granularity = Granularity::Channel; // one code book per output row
        if (s.bits > 4)
            fail(org("bits"), "weight.bits",
                 "squeezellm code books have 2^bits entries per row; bits 2..4, got " +
                     std::to_string(s.bits));
        return;
    }
    if (s.method == WeightMethod::Slim) {
        if (w.contains("bits"))
            fail(org("bits"), "weight.bits", "slim mixes 2/3/4-bit groups: give weight.avg_bits");
        s.bits = 4; // the widest code
        s.symmetric = false;
    }
    if (!w.contains("granularity")) s.granularity = Granularity::Group;
    if (s.granularity != Granularity::Group)
        fail(org("granularity"), "weight.granularity", m + " needs group granularity");
    if (s.groupSize > lp.cols)
        fail(org("group_size"), "weight.group_size",
             "group size " + std::to_string(s.groupSize) + " is larger than " + lp.name +
                 "'s row length " + std::to_string(lp.cols));
    if (s.method == WeightMethod::Slim && lp.cols % s.groupSize != 0) {
        int64_t g = 1; // the divisor of the row closest to the group size (ties: the smaller)
        for (int64_t d = 1; d <= lp.cols; ++d)
            if (lp.cols % d == 0 && std::llabs(d - s.groupSize) < std::llabs(g - s.groupSize))
                g = d;
        plan.warnings.push_back(lp.name + ": slim groups of " + std::to_string(s.groupSize) +
                                " do not divide rows of " + std::to_string(lp.cols) +
                                "; using groups of " + std::to_string(g));
        s.groupSize = g;
    }
}

/// Resolves the layer's merged weight section into lp.weight (throws naming rule and field).
void resolveWeight(LayerPlan& lp, MergedSections& m, const PlanOptions& opts, Plan& plan) {
    const json& w = *m.w;
    const FieldOrigin org{m.origin, m.origin["weight"]};
    WeightSettings& s = lp.weight;
    readWeightFields(w, org, lp.name, s);
    if (w.contains("clip_ratio") &&
        ((s.method != WeightMethod::Rtn && s.method != WeightMethod::Gptq) || w.contains("gguf")))
        fail(org("clip_ratio"), "weight.clip_ratio",
             "shrinks the int / fp8 / nf4 grids of methods rtn and gptq, not " +
                 (w.contains("gguf") ? "a GGUF grid"
                                     : std::string("method ") + weightMethodName(s.method)));
    if (w.contains("gguf")) {
        applyGgufGrid(lp, w, org, plan);
    } else if (methodIsGguf(s.method)) {
        applyGgufMethod(lp, org, plan);
    } else if (methodIsCompact(s.method) || hasCompactKey(w)) {
        resolveCompact(lp, w, org, plan);
    } else {
        if (s.method == WeightMethod::EfficientQat && s.format != WeightFormat::Int)
            fail(org("format"), "weight.format",
                 std::string("efficientqat trains int grids, not ") + weightFormatName(s.format));
        if (s.format == WeightFormat::Nf4 && s.method != WeightMethod::Rtn)
            fail(org("method"), "weight.method", "nf4 supports only rtn");
        if (s.granularity == Granularity::Group && s.groupSize > lp.cols)
            fail(org("group_size"), "weight.group_size",
                 "group size " + std::to_string(s.groupSize) + " is larger than " + lp.name +
                     "'s row length " + std::to_string(lp.cols));
    }
    if (w.contains("affine") && w["affine"] != false && s.method != WeightMethod::OmniQuant)
        fail(org("affine"), "weight.affine",
             lp.name + ": affine (AffineQuant) works on top of \"method\": \"omniquant\", not '" +
                 weightMethodName(s.method) + "'");
    if (methodNeedsCalibration(s.method) && !opts.hasCalibration)
        fail(org("method"), "weight.method",
             std::string("'") + weightMethodName(s.method) +
                 "' needs calibration data and none was given");
    for (const char* key : {"lr_w", "lr_q", "e2e_epochs", "lr_e2e"})
        if (w.contains(key) && s.method != WeightMethod::EfficientQat)
            fail(org(key), std::string("weight.") + key,
                 std::string("goes with method efficientqat, not ") + weightMethodName(s.method));
    lp.origin = m.origin;
    lp.weightJson = w;
}

/// Plans one targetable tensor: its rule matches, SmoothQuant, activations, structured
/// settings of its block, and (when it has a weight, sparsity or low-rank section) its layer.
void planLayer(const Recipe& r, const Model& model, const PlanOptions& opts, const TensorView& t,
               Plan& plan, std::map<int, BlockStructured>& structured) {
    LayerPlan lp;
    lp.name = t.name;
    lp.rows = t.shape[0];
    lp.cols = t.shape[1];
    MergedSections m = mergeRules(r, lp, plan);
    if (lp.smoothAlpha >= 0) plan.smooth[t.name] = {lp.smoothAlpha, lp.smoothRule};
    if (m.outl) {
        lp.outliers = outlierSettingsOf(*m.outl);
        lp.outlierRule = m.outlRule;
        if (lp.outliers.byCount() && lp.outliers.count >= lp.cols)
            fail(m.outlRule, "outliers.count",
                 std::to_string(lp.outliers.count) + " outlier channels leave none of the " +
                     std::to_string(lp.cols) + " input channels of " + t.name +
                     " to the normal groups");
        if (lp.outliers.byCount() && m.w && !opts.hasCalibration)
            fail(m.outlRule, "outliers.count",
                 "the weight columns of the top outlier channels are set apart on calibration "
                 "data, and none was given (--calib)");
    }
    planActivation(m, t, model, plan);
    planActivationSparsity(m, t, model, plan);
    if (m.st) resolveStructured(*m.st, m.stOrigin, t.name, model, structured);
    if (!m.w && !m.sp && !m.lr) return;
    if (m.sp) lp.sparsityRule = m.spOrigin["sparsity"], lp.sparsity = resolveSparsity(*m.sp);
    if (m.lr) {
        lp.lowrankRule = m.lrOrigin["lowrank"];
        lp.lowrank = resolveLowRank(*m.lr, m.lrOrigin, lp);
    }
    lp.quantize = bool(m.w);
    if (m.w) resolveWeight(lp, m, opts, plan);
    if (lp.quantize && lp.hasOutliers && lp.outliers.bits < 16) {
        // Atom's reordered mixed precision: the normal columns quantised by RTN or GPTQ in lcw's
        // own layouts (a stored column order), the outlier columns at 8 bits.
        const bool ok =
            (lp.weight.method == WeightMethod::Rtn || lp.weight.method == WeightMethod::Gptq) &&
            !lp.weight.ggufGrid && !lp.sparsity && !lp.lowrank;
        if (!ok)
            fail(lp.outlierRule, "outliers.bits",
                 "8-bit outlier columns (Atom) go with weight methods rtn and gptq on lcw's int, "
                 "fp8 or nf4 grids, without sparsity or low-rank (" +
                     t.name + " has " + lp.describe() + ")");
    }
    plan.layers.push_back(std::move(lp));
}

/// Block l's merged kv section: in rule order, the kv sections of the rules that match
/// layers.l.attn.k or layers.l.attn.v (`rule`: the last one); nullopt when none does.
std::optional<json> mergedKv(const Recipe& r, int64_t l, int& rule) {
    const std::string p = "layers." + std::to_string(l) + ".attn.";
    std::optional<json> kv;
    rule = -1;
    for (size_t i = 0; i < r.rules.size(); ++i)
        if (r.rules[i].kv && (r.rules[i].matches(p + "k") || r.rules[i].matches(p + "v")))
            mergeSection(kv, rule, r.rules[i].kv, int(i));
    return kv;
}

const char* const kKvQuantKeys[] = {"k_bits",     "v_bits",    "k_granularity", "v_granularity",
                                    "group_size", "past_only", "smooth",        "crr_blocks",
                                    "crr_steps",  "crr_lr",    "crr_weights"};
const char* const kKvPolicyKeys[] = {"policy", "budget", "recent", "sinks", "window", "mass"};

template <size_t N> bool hasAnyKey(const json& j, const char* const (&keys)[N]) {
    for (const char* k : keys)
        if (j.contains(k)) return true;
    return false;
}

/// Block l's KV-cache quantisation from its merged kv section; nullopt when both halves stay
/// 16-bit or the section sets only eviction-policy keys (the cache then stays f32).
std::optional<KvPlan> planKvBlock(const json& kvj, int kvRule, int64_t l, int64_t width) {
    if (!hasAnyKey(kvj, kKvQuantKeys) && hasAnyKey(kvj, kKvPolicyKeys)) return std::nullopt;
    const json* kv = &kvj;
    KvPlan kp;
    kp.layer = l;
    kp.width = width;
    kp.rule = kvRule;
    KvSettings& k = kp.kv;
    k.kBits = int(kv->value("k_bits", 8));
    k.vBits = int(kv->value("v_bits", 8));
    auto gran = [&](const char* key) {
        return kv->value(key, std::string("token")) == "channel" ? KvGranularity::Channel
                                                                 : KvGranularity::Token;
    };
    k.kGranularity = gran("k_granularity");
    k.vGranularity = gran("v_granularity");
    k.groupSize = kv->value("group_size", int64_t(128));
    k.pastOnly = kv->value("past_only", false);
    k.smooth = kv->value("smooth", false);
    k.crrBlocks = kv->value("crr_blocks", 1);
    k.crrSteps = kv->value("crr_steps", 0);
    k.crrLr = kv->value("crr_lr", 5e-3);
    // WKVQuant's past-only quantisation and two-dimensional smoothing work on per-token rows.
    const bool channel = (k.kBits < 16 && k.kGranularity == KvGranularity::Channel) ||
                         (k.vBits < 16 && k.vGranularity == KvGranularity::Channel);
    if (k.pastOnly && channel)
        fail(kvRule, "kv.past_only",
             "WKVQuant's past-only quantisation needs per-token KV quantisation (k_granularity "
             "and v_granularity \"token\")");
    if (k.smooth && channel)
        fail(kvRule, "kv.smooth",
             "WKVQuant's smoothing needs per-token KV quantisation (k_granularity and "
             "v_granularity \"token\")");
    k.crrWeights = kv->value("crr_weights", false);
    for (const char* key : {"crr_blocks", "crr_steps", "crr_lr", "crr_weights"})
        if (kv->contains(key) && !k.smooth)
            fail(kvRule, std::string("kv.") + key, "applies only with \"smooth\": true");
    if (k.crrWeights && k.crrSteps < 1)
        fail(kvRule, "kv.crr_weights",
             "the weights' clipping is learned by the gradient steps: give crr_steps > 0");
    const bool tokenGroups = (k.kBits < 16 && k.kGranularity == KvGranularity::Token) ||
                             (k.vBits < 16 && k.vGranularity == KvGranularity::Token);
    if (tokenGroups && kv->contains("group_size") && k.groupSize > width)
        fail(kvRule, "kv.group_size",
             "group size " + std::to_string(k.groupSize) + " is larger than the K/V row of block " +
                 std::to_string(l) + " (" + std::to_string(width) +
                 " = kv heads x head dim) for token granularity");
    if (k.kBits < 16 || k.vBits < 16) return kp;
    return std::nullopt;
}

/// Block l's eviction policy from its merged kv section (defaults: h2o recent 0.5 of the
/// budget, sinks 4, mass recent 0.1 of the context); nullopt for "full" or none. `quant`: the
/// block's KV quantisation, which must then be per token.
std::optional<KvPolicyPlan> planKvPolicyBlock(const json& kv, int kvRule, int64_t l,
                                              const std::optional<KvPlan>& quant) {
    if (!hasAnyKey(kv, kKvPolicyKeys)) return std::nullopt;
    if (!kv.contains("policy"))
        fail(kvRule, "kv.policy", "missing (the kv section sets eviction-policy keys)");
    const std::string name = kv["policy"].get<std::string>();
    validateKvPolicy(kv, kvRule); // the merged keys against the merged policy
    if (name == "full") return std::nullopt;
    KvPolicyPlan pp;
    pp.layer = l;
    pp.rule = kvRule;
    KvPolicySpec& sp = pp.policy;
    auto need = [&](const char* key) {
        if (!kv.contains(key))
            fail(kvRule, std::string("kv.") + key, "missing (policy '" + name + "' needs it)");
        return kv[key].get<double>();
    };
    if (name == "h2o") {
        sp.kind = KvPolicyKind::H2O;
        sp.budget = need("budget");
        sp.recent = kv.value("recent", 0.5);
    } else if (name == "sinks") {
        sp.kind = KvPolicyKind::Sinks;
        sp.sinks = kv.value("sinks", int64_t(4));
        sp.window = need("window");
    } else {
        sp.kind = KvPolicyKind::Mass;
        sp.mass = need("mass");
        sp.recent = kv.value("recent", 0.1);
    }
    if (quant && quant->kv.pastOnly)
        fail(kvRule, "kv.past_only",
             "past-only quantisation (WKVQuant) cannot be combined with an eviction policy");
    if (quant && ((quant->kv.kBits < 16 && quant->kv.kGranularity == KvGranularity::Channel) ||
                  (quant->kv.vBits < 16 && quant->kv.vGranularity == KvGranularity::Channel)))
        fail(kvRule, "kv.policy",
             "an eviction policy needs per-token KV quantisation (k_granularity and "
             "v_granularity \"token\"): rows of a per-channel block cannot be evicted");
    return pp;
}

/// Whether a rule that matched some layer sets a non-null section `sec` of Rule.
bool anyMatchedRuleSets(const Recipe& r, const Plan& plan, std::optional<json> Rule::*sec) {
    bool any = false;
    for (size_t i = 0; i < r.rules.size(); ++i) {
        if (plan.matches[i].layers.empty()) continue;
        any |= r.rules[i].*sec && !(r.rules[i].*sec)->is_null();
    }
    return any;
}

/// The KV-cache plans of the blocks.
void planKv(const Recipe& r, const Model& model, const PlanOptions& opts, Plan& plan) {
    const ModelSpec& sp = model.spec();
    const bool kvAny = anyMatchedRuleSets(r, plan, &Rule::kv);
    const int64_t width = sp.nKvHeads * sp.headDim;
    for (int64_t l = 0; kvAny && !sp.isMamba() && l < sp.nLayers; ++l) {
        int rule = -1;
        const std::optional<json> kv = mergedKv(r, l, rule);
        if (!kv) continue;
        std::optional<KvPlan> kp = planKvBlock(*kv, rule, l, width);
        if (auto pp = planKvPolicyBlock(*kv, rule, l, kp)) plan.kvPolicy.push_back(std::move(*pp));
        if (kp && kp->kv.smooth && !opts.hasCalibration)
            fail(rule, "kv.smooth",
                 "WKVQuant's smoothing is calibrated (cross-block reconstruction) and needs "
                 "calibration data (--calib)");
        if (kp) plan.kv.push_back(std::move(*kp));
    }
    if (kvAny && sp.isMamba())
        plan.warnings.push_back("kv settings ignored: Mamba blocks have no KV cache");
}

} // namespace

std::map<std::string, WeightSettings> wkvJointLinears(const Plan& plan, const KvPlan& kp) {
    const std::string bname = "layers." + std::to_string(kp.layer);
    std::map<std::string, WeightSettings> out;
    for (const LayerPlan& lp : plan.layers) {
        if (blockLinearIndex(bname, lp.name) < 0) continue;
        if (lp.sparsity || lp.lowrank)
            fail(kp.rule, "kv.crr_weights",
                 lp.name + " is pruned or factorised; WKVQuant's joint learning "
                           "learns the clipping of dense quantised weights");
        const bool let = !lp.weightJson.is_object() || lp.weightJson.value("let", true);
        if (lp.smoothAlpha >= 0 ||
            (lp.quantize && lp.weight.method == WeightMethod::OmniQuant && lp.hasActivation && let))
            fail(kp.rule, "kv.crr_weights",
                 lp.name + " gets scales folded into its block's norms (SmoothQuant, or "
                           "OmniQuant's LET with quantised activations); WKVQuant's joint "
                           "learning learns the clipping of the unquantised weights");
        if (!lp.quantize) continue;
        const WeightSettings& w = lp.weight;
        if ((w.method != WeightMethod::Rtn && w.method != WeightMethod::OmniQuant) ||
            w.format != WeightFormat::Int || w.ggufGrid || w.bits < 2 || w.bits > 8)
            fail(kp.rule, "kv.crr_weights",
                 lp.name + " is quantised as " + w.describe() +
                     "; WKVQuant's joint learning learns the clipping of int2..int8 "
                     "weights of method rtn or omniquant");
        WeightSettings st = w;
        st.clipRatio = 1.0;
        out[lp.name] = st;
    }
    if (out.empty())
        fail(kp.rule, "kv.crr_weights",
             bname + " has no quantised linear whose clipping could be learned");
    return out;
}

Plan planRecipe(const Recipe& r, const Model& model, const PlanOptions& opts) {
    Plan plan;
    std::map<int, BlockStructured> structured;
    plan.matches.resize(r.rules.size());
    for (size_t i = 0; i < r.rules.size(); ++i) plan.matches[i].rule = int(i);
    for (const TensorView& t : model.tensors())
        if (t.shape.size() == 2 && isTargetable(t.name))
            planLayer(r, model, opts, t, plan, structured);
    if (!opts.hasCalibration && !plan.smooth.empty())
        fail(plan.smooth.begin()->second.second, "smoothquant",
             "SmoothQuant needs calibration data (activation ranges) and none was given");
    finishStructured(structured, plan, model, opts);
    if (r.rotation && !model.find("lm_head") && model.find("embed"))
        plan.untiedLmHead = model.get("embed").numel();
    for (auto& lp : plan.layers) checkLayerCombination(lp, plan, opts);
    for (const auto& m : plan.matches) {
        if (m.layers.empty())
            plan.warnings.push_back("recipe rule " + std::to_string(m.rule) +
                                    " matches no layer of the model");
    }
    planKv(r, model, opts, plan);
    for (const KvPlan& kp : plan.kv)
        if (kp.kv.crrWeights) wkvJointLinears(plan, kp); // refused here, before any work
    if (r.rotation && r.rotation->learned) {
        plan.learnedRotation = true;
        if (!opts.hasCalibration)
            fail(-1, "rotation.method",
                 "learned rotations (spinquant) need calibration data (--calib)");
        spinQuantSimulation(plan, model.spec()); // refused here, before any work
    }
    if (anyMatchedRuleSets(r, plan, &Rule::outliers) && !opts.hasCalibration)
        plan.warnings.push_back("outlier columns need calibration data (--calib): the weights "
                                "are quantised without them");
    return plan;
}

} // namespace lcw::compress
