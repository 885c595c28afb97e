#include "core/compress/recipe.h"
#include "core/common/json_file.h"

#include "core/model/model.h"

#include <algorithm>
#include <cctype>
#include <regex>
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

bool globMatch(const char* p, const char* s) {
    // Iterative '*' / '?' matcher ('*' also crosses dots).
    const char *star = nullptr, *ss = nullptr;
    while (*s) {
        if (*p == '?' || *p == *s) {
            ++p, ++s;
        } else if (*p == '*') {
            star = p++;
            ss = s;
        } else if (star) {
            p = star + 1;
            s = ++ss;
        } else {
            return false;
        }
    }
    while (*p == '*') ++p;
    return *p == 0;
}

bool patternMatches(const std::string& pat, const std::string& name) {
    if (pat.rfind("re:", 0) == 0) return std::regex_match(name, std::regex(pat.substr(3)));
    return globMatch(pat.c_str(), name.c_str());
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
const std::vector<std::string> kMethods = {"rtn",  "q8_0", "q4_0", "q4_1",
                                           "q5_0", "gptq", "awq",  "omniquant"};

WeightMethod methodFromName(const std::string& s) {
    const auto i = std::find(kMethods.begin(), kMethods.end(), s) - kMethods.begin();
    return WeightMethod(i);
}

/// Validates a weight section on its own (types, ranges, consistency within the section).
void validateWeight(const json& w, int rule) {
    if (!w.is_object()) fail(rule, "weight", "expected an object or null, got " + w.dump());
    checkKeys(w,
              {"bits", "format", "symmetric", "granularity", "group_size", "method", "damp",
               "act_order", "block_size", "awq", "epochs", "lr", "let", "lr_let"},
              rule, "weight.");
    if (w.contains("damp")) numField(w["damp"], rule, "weight.damp", 1e-6, 1.0);
    if (w.contains("act_order")) boolField(w["act_order"], rule, "weight.act_order");
    if (w.contains("block_size")) intField(w["block_size"], rule, "weight.block_size", 1, 4096);
    if (w.contains("epochs")) intField(w["epochs"], rule, "weight.epochs", 0, 1000);
    if (w.contains("lr")) numField(w["lr"], rule, "weight.lr", 1e-7, 1.0);
    if (w.contains("let")) boolField(w["let"], rule, "weight.let");
    if (w.contains("lr_let")) numField(w["lr_let"], rule, "weight.lr_let", 1e-7, 1.0);
    if (w.contains("awq")) {
        const json& a = w["awq"];
        if (!a.is_object()) fail(rule, "weight.awq", "expected an object, got " + a.dump());
        checkKeys(a, {"grid", "clip_search", "clip_grid", "max_shrink"}, rule, "weight.awq.");
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
    if (fmt == "fp8_e4m3" && w.contains("bits") && w["bits"] != 8)
        fail(rule, "weight.bits", "format fp8_e4m3 has 8 bits, got " + w["bits"].dump());
    if (fmt == "nf4" && w.contains("bits") && w["bits"] != 4)
        fail(rule, "weight.bits", "format nf4 has 4 bits, got " + w["bits"].dump());
}

void validateSmoothQuant(const json& q, int rule) {
    if (!q.is_object()) fail(rule, "smoothquant", "expected an object or null, got " + q.dump());
    checkKeys(q, {"alpha"}, rule, "smoothquant.");
    if (!q.contains("alpha")) fail(rule, "smoothquant.alpha", "missing");
    numField(q["alpha"], rule, "smoothquant.alpha", 0.0, 1.0);
}

void validateActivation(const json& a, int rule) {
    if (!a.is_object()) fail(rule, "activation", "expected an object or null, got " + a.dump());
    checkKeys(a, {"bits", "mode", "clip"}, rule, "activation.");
    if (a.contains("bits")) intField(a["bits"], rule, "activation.bits", 2, 16);
    if (a.contains("mode"))
        strField(a["mode"], rule, "activation.mode", {"dynamic_per_token", "static_per_tensor"});
    if (a.contains("clip")) numField(a["clip"], rule, "activation.clip", 1e-6, 1.0);
}

void validateKv(const json& k, int rule) {
    if (!k.is_object()) fail(rule, "kv", "expected an object or null, got " + k.dump());
    checkKeys(k, {"k_bits", "v_bits", "k_granularity", "v_granularity", "group_size"}, rule, "kv.");
    if (k.contains("k_bits")) intField(k["k_bits"], rule, "kv.k_bits", 2, 16);
    if (k.contains("v_bits")) intField(k["v_bits"], rule, "kv.v_bits", 2, 16);
    if (k.contains("k_granularity"))
        strField(k["k_granularity"], rule, "kv.k_granularity", {"channel", "token"});
    if (k.contains("v_granularity"))
        strField(k["v_granularity"], rule, "kv.v_granularity", {"channel", "token"});
    if (k.contains("group_size")) intField(k["group_size"], rule, "kv.group_size", 1, 1 << 20);
}

void validateOutliers(const json& o, int rule) {
    if (!o.is_object()) fail(rule, "outliers", "expected an object or null, got " + o.dump());
    checkKeys(o, {"threshold", "bits"}, rule, "outliers.");
    if (o.contains("threshold")) numField(o["threshold"], rule, "outliers.threshold", 0.0, 1e30);
    if (o.contains("bits")) intField(o["bits"], rule, "outliers.bits", 16, 16);
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
                std::regex re(s.substr(3));
            } catch (const std::regex_error& e) {
                fail(rule, f, "invalid regex '" + s.substr(3) + "': " + e.what());
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

bool methodIsGguf(WeightMethod m) {
    return m == WeightMethod::Q8_0 || m == WeightMethod::Q4_0 || m == WeightMethod::Q4_1 ||
           m == WeightMethod::Q5_0;
}

bool methodNeedsCalibration(WeightMethod m) {
    return m == WeightMethod::Gptq || m == WeightMethod::Awq || m == WeightMethod::OmniQuant;
}

std::string WeightSettings::describe() const {
    if (methodIsGguf(method)) return weightMethodName(method);
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
    if (method != WeightMethod::Rtn) s += std::string(" ") + weightMethodName(method);
    return s;
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

Recipe Recipe::fromJson(const json& j) {
    if (!j.is_object()) fail(-1, "", "expected a JSON object");
    checkKeys(j, {"lcw_recipe", "name", "description", "rules"}, -1, "");
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
    if (!j.contains("rules") || !j["rules"].is_array())
        fail(-1, "rules", "missing or not an array");
    for (size_t i = 0; i < j["rules"].size(); ++i) {
        const int ri = int(i);
        const json& rj = j["rules"][i];
        if (!rj.is_object()) fail(ri, "", "expected an object");
        checkKeys(rj,
                  {"targets", "ignore", "weight", "activation", "kv", "outliers", "smoothquant",
                   "comment"},
                  ri, "");
        Rule rule;
        if (!rj.contains("targets")) fail(ri, "targets", "missing");
        rule.targets = patternList(rj["targets"], ri, "targets", true);
        if (rj.contains("ignore")) rule.ignore = patternList(rj["ignore"], ri, "ignore", false);
        if (rj.contains("comment")) {
            if (!rj["comment"].is_string()) fail(ri, "comment", "expected a string");
            rule.comment = rj["comment"].get<std::string>();
        }
        if (rj.contains("weight")) {
            if (!rj["weight"].is_null()) validateWeight(rj["weight"], ri);
            rule.weight = rj["weight"];
        }
        if (rj.contains("activation")) {
            if (!rj["activation"].is_null()) validateActivation(rj["activation"], ri);
            rule.activation = rj["activation"];
        }
        if (rj.contains("kv")) {
            if (!rj["kv"].is_null()) validateKv(rj["kv"], ri);
            rule.kv = rj["kv"];
        }
        if (rj.contains("outliers")) {
            if (!rj["outliers"].is_null()) validateOutliers(rj["outliers"], ri);
            rule.outliers = rj["outliers"];
        }
        if (rj.contains("smoothquant")) {
            if (!rj["smoothquant"].is_null()) validateSmoothQuant(rj["smoothquant"], ri);
            rule.smoothquant = rj["smoothquant"];
        }
        if (!rule.weight && !rule.activation && !rule.kv && !rule.outliers && !rule.smoothquant)
            fail(ri, "", "sets nothing (give weight, activation, kv, outliers or smoothquant)");
        r.rules.push_back(std::move(rule));
    }
    return r;
}

Recipe Recipe::load(const std::string& path) {
    const json j = readJsonFile(path);
    try {
        return fromJson(j);
    } catch (const RecipeError& e) {
        throw RecipeError(e.rule(), e.field(),
                          std::string(e.what()).substr(ruleWhere(e.rule(), e.field()).size() + 2) +
                              " (" + path + ")");
    }
}

json Recipe::toJson() const {
    json j = {{"lcw_recipe", kVersion}, {"name", name}};
    if (!description.empty()) j["description"] = description;
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
        j["rules"].push_back(std::move(rj));
    }
    return j;
}

const std::vector<Preset>& presets() {
    static const std::vector<Preset> p = [] {
        std::vector<Preset> v;
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
        // Calibrated methods (lcw-cli compress --calib FILE).
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
        {
            const std::string n = "W8A8-SQ";
            const std::string d = "SmoothQuant (alpha 0.5) + int8 per-channel weights + int8 "
                                  "dynamic per-token activations (needs --calib)";
            json j = {
                {"lcw_recipe", 1},
                {"name", n},
                {"description", d},
                {"rules",
                 json::array(
                     {{{"targets", {"*"}},
                       {"smoothquant", {{"alpha", 0.5}}},
                       {"weight", {{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}}},
                       {"activation", {{"bits", 8}, {"mode", "dynamic_per_token"}}}}})}};
            v.push_back({n, d, Recipe::fromJson(j)});
        }
        return v;
    }();
    return p;
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
    static const std::regex kLinear(
        R"(layers\.\d+\.(attn\.(q|k|v|o)|mlp\.(gate|up|down)|mlp\.experts\.\d+\.(gate|up|down)|mixer\.(in_proj|x_proj|dt_proj|out_proj)))");
    static const std::regex kExplicit(R"(embed|lm_head|layers\.\d+\.mlp\.router)");
    const bool ex = std::regex_match(n, kExplicit);
    if (explicitOnly) *explicitOnly = ex;
    return ex || std::regex_match(n, kLinear);
}

Plan planRecipe(const Recipe& r, const Model& model, const PlanOptions& opts) {
    Plan plan;
    plan.matches.resize(r.rules.size());
    for (size_t i = 0; i < r.rules.size(); ++i) plan.matches[i].rule = int(i);
    for (const TensorView& t : model.tensors()) {
        if (t.shape.size() != 2 || !isTargetable(t.name)) continue;
        std::optional<json> w;
        std::map<std::string, int> origin;
        LayerPlan lp;
        lp.name = t.name;
        lp.rows = t.shape[0];
        lp.cols = t.shape[1];
        for (size_t i = 0; i < r.rules.size(); ++i) {
            const Rule& rule = r.rules[i];
            if (!rule.matches(t.name)) continue;
            plan.matches[i].layers.push_back(t.name);
            if (rule.weight) {
                if (rule.weight->is_null()) {
                    w.reset();
                    origin.clear();
                } else {
                    if (!w) w = json::object();
                    for (auto it = rule.weight->begin(); it != rule.weight->end(); ++it) {
                        (*w)[it.key()] = it.value();
                        origin[it.key()] = int(i);
                    }
                    origin["weight"] = int(i);
                }
            }
            if (rule.activation) lp.hasActivation = !rule.activation->is_null();
            if (rule.kv) lp.hasKv = !rule.kv->is_null();
            if (rule.outliers) lp.hasOutliers = !rule.outliers->is_null();
            if (rule.smoothquant) {
                lp.smoothAlpha =
                    rule.smoothquant->is_null() ? -1.0 : (*rule.smoothquant)["alpha"].get<double>();
                lp.smoothRule = rule.smoothquant->is_null() ? -1 : int(i);
            }
        }
        if (lp.smoothAlpha >= 0) plan.smooth[t.name] = {lp.smoothAlpha, lp.smoothRule};
        if (!w) continue;
        const int wr = origin["weight"];
        auto org = [&](const std::string& f) { return origin.count(f) ? origin[f] : wr; };
        WeightSettings& s = lp.weight;
        if (w->contains("method")) s.method = methodFromName((*w)["method"].get<std::string>());
        if (w->contains("format")) {
            const auto f = (*w)["format"].get<std::string>();
            s.format = f == "int"   ? WeightFormat::Int
                       : f == "nf4" ? WeightFormat::Nf4
                                    : WeightFormat::Fp8E4M3;
        }
        if (w->contains("bits")) s.bits = (*w)["bits"].get<int>();
        if (s.format == WeightFormat::Nf4) {
            if (w->contains("bits") && s.bits != 4)
                fail(org("bits"), "weight.bits",
                     "format nf4 (rule " + std::to_string(org("format")) + ") has 4 bits, got " +
                         std::to_string(s.bits) + " for " + t.name);
            s.bits = 4;
        }
        if (s.format == WeightFormat::Fp8E4M3) {
            if (w->contains("bits") && s.bits != 8)
                fail(org("bits"), "weight.bits",
                     "format fp8_e4m3 (rule " + std::to_string(org("format")) +
                         ") has 8 bits, got " + std::to_string(s.bits) + " for " + t.name);
            s.bits = 8;
        }
        if (w->contains("symmetric")) s.symmetric = (*w)["symmetric"].get<bool>();
        if (w->contains("granularity")) {
            const auto g = (*w)["granularity"].get<std::string>();
            s.granularity = g == "tensor"    ? Granularity::Tensor
                            : g == "channel" ? Granularity::Channel
                                             : Granularity::Group;
        } else if (w->contains("group_size")) {
            s.granularity = Granularity::Group;
        }
        if (w->contains("group_size")) s.groupSize = (*w)["group_size"].get<int64_t>();
        if (s.format == WeightFormat::Nf4 && !w->contains("granularity") &&
            !w->contains("group_size")) {
            s.granularity = Granularity::Group;
            s.groupSize = 64;
        }
        if (methodIsGguf(s.method)) {
            s.format = WeightFormat::Int;
            s.granularity = Granularity::Group;
            s.groupSize = 32;
            s.bits = s.method == WeightMethod::Q8_0 ? 8 : s.method == WeightMethod::Q5_0 ? 5 : 4;
            s.symmetric = s.method != WeightMethod::Q4_1;
            if (lp.cols % 32 != 0)
                fail(org("method"), "weight.method",
                     std::string(weightMethodName(s.method)) +
                         " needs rows that are a multiple of 32 but " + t.name + " has rows of " +
                         std::to_string(lp.cols) +
                         " (ignore it in this rule or give it an RTN rule after this one)");
        } else {
            if (s.format == WeightFormat::Nf4 && s.method != WeightMethod::Rtn)
                fail(org("method"), "weight.method", "nf4 supports only rtn");
            if (s.granularity == Granularity::Group && s.groupSize > lp.cols)
                fail(org("group_size"), "weight.group_size",
                     "group size " + std::to_string(s.groupSize) + " is larger than " + t.name +
                         "'s row length " + std::to_string(lp.cols));
        }
        if (methodNeedsCalibration(s.method) && !opts.hasCalibration)
            fail(org("method"), "weight.method",
                 std::string("'") + weightMethodName(s.method) +
                     "' needs calibration data and none was given");
        lp.origin = origin;
        lp.weightJson = *w;
        plan.layers.push_back(std::move(lp));
    }
    if (!opts.hasCalibration && !plan.smooth.empty())
        fail(plan.smooth.begin()->second.second, "smoothquant",
             "SmoothQuant needs calibration data (activation ranges) and none was given");
    for (const auto& m : plan.matches) {
        if (m.layers.empty())
            plan.warnings.push_back("recipe rule " + std::to_string(m.rule) +
                                    " matches no layer of the model");
    }
    bool act = false, kv = false, outl = false;
    for (size_t i = 0; i < r.rules.size(); ++i) {
        if (plan.matches[i].layers.empty()) continue;
        act |= r.rules[i].activation && !r.rules[i].activation->is_null();
        kv |= r.rules[i].kv && !r.rules[i].kv->is_null();
        outl |= r.rules[i].outliers && !r.rules[i].outliers->is_null();
    }
    if (act) plan.warnings.push_back("activation settings are validated but not applied yet");
    if (kv) plan.warnings.push_back("kv settings are validated but not applied yet");
    if (outl) plan.warnings.push_back("outlier settings are validated but not applied yet");
    return plan;
}

} // namespace lcw::compress
