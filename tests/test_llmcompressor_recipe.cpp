// llm-compressor recipe YAML: export (lcw-cli export --format llmcompressor), import (lcw-cli
// recipe import), and the HF module name mapping (core/io/tensor_names.h).
//
// The expected keys and enums are llm-compressor's and compressed-tensors' own, read from their
// source (vllm-project/llm-compressor at ab1ba3e, neuralmagic/compressed-tensors at 52792be):
//   - src/llmcompressor/recipe/recipe.py, Recipe.from_dict: top-level keys ending in "_stage",
//     inside them keys ending in "_modifiers", inside those {ModifierClassName: {args}};
//   - src/llmcompressor/modifiers/gptq/base.py, GPTQModifier: block_size (128), dampening_frac
//     (0.01), actorder (default Sentinel "static"; null = no reordering), config_groups, targets,
//     ignore, kv_cache_scheme (QuantizationMixin, modifiers/quantization/quantization/mixin.py);
//   - src/llmcompressor/modifiers/transform/awq/base.py, AWQModifier: n_grid (20), duo_scaling
//     (True | False | "both"), mappings; must be followed by a QuantizationMixin modifier
//     (recipe.py, validate_model_after);
//   - src/llmcompressor/modifiers/transform/smoothquant/base.py: smoothing_strength (0.5);
//   - src/llmcompressor/modifiers/pruning/sparsegpt/{base,sgpt_base}.py: sparsity,
//     mask_structure ("0:0" | "N:M"), block_size, dampening_frac; wanda/base.py the same without
//     block_size / dampening_frac;
//   - compressed-tensors src/compressed_tensors/quantization/quant_args.py, QuantizationArgs:
//     num_bits, type ("int" | "float"), symmetric, group_size, strategy ("tensor" | "channel" |
//     "group" | "block" | "token" | "tensor_group" | "attn_head"), dynamic, actorder ("group" |
//     "weight" | aliases "dynamic" | "static"), observer ("minmax", "static_minmax", ...:
//     src/llmcompressor/observers/min_max.py); token strategy requires dynamic;
//   - compressed-tensors src/compressed_tensors/utils/match.py, _match_name: "re:" targets are
//     matched with Python's re.match (anchored at the start only) against module names, other
//     strings exactly or as class names ("Linear").
#include "test_util.h"

#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/recipe.h"
#include "core/export/llmcompressor.h"
#include "core/io/tensor_names.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

using namespace lcw;
using namespace lcw::compress;
using lcw::exporter::exportLlmCompressorRecipe;
using lcw::exporter::importLlmCompressorRecipe;
using json = nlohmann::json;

namespace {

std::string readText(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

void writeText(const std::string& path, const std::string& text) {
    std::ofstream f(path);
    f << text;
}

// A Llama model whose rows are 128 and 256 wide (so groups of 128 fit), written once.
std::string wideModel() {
    static const std::string dir = [] {
        const std::string d = lcwtest::tempDir("llmc-wide");
        ModelSpec s = syntheticSpec("", "llama-tiny");
        s.dim = 128, s.hidden = 256, s.nHeads = 4, s.nKvHeads = 2, s.headDim = 32;
        NullProgress np;
        writeSyntheticModel(s, d, SynthOptions{}, np);
        return d;
    }();
    return dir;
}

// The module names of a model's 2-D weights as transformers names them (straight from the
// safetensors names, independent of lcw's mapping).
std::set<std::string> linearModules(const std::string& folder) {
    std::set<std::string> out;
    for (const auto& file : std::filesystem::directory_iterator(folder)) {
        if (file.path().extension() != ".safetensors") continue;
        std::ifstream f(file.path(), std::ios::binary);
        unsigned char len[8] = {};
        f.read(reinterpret_cast<char*>(len), 8);
        uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
        std::string header(n, '\0');
        f.read(header.data(), std::streamsize(n));
        const json h = json::parse(header);
        for (const auto& [name, t] : h.items()) {
            const std::string suffix = ".weight";
            if (name == "__metadata__" || t["shape"].size() != 2 || name.size() <= suffix.size() ||
                name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
                continue;
            out.insert(name.substr(0, name.size() - suffix.size()));
        }
    }
    return out;
}

// compressed-tensors' _match_name: "re:" → re.match (anchored at the start), else equality.
bool ctMatches(const std::string& name, const std::string& target) {
    if (target.rfind("re:", 0) == 0)
        return std::regex_search(name, std::regex(target.substr(3)),
                                 std::regex_constants::match_continuous);
    return name == target;
}

std::set<std::string> matchedModules(const std::set<std::string>& modules,
                                     const YAML::Node& targets, const YAML::Node& ignore) {
    std::set<std::string> out;
    for (const auto& m : modules) {
        bool hit = false, ig = false;
        for (const auto& t : targets) hit |= ctMatches(m, t.as<std::string>());
        if (ignore)
            for (const auto& t : ignore) ig |= ctMatches(m, t.as<std::string>());
        if (hit && !ig) out.insert(m);
    }
    return out;
}

// The KV groups as the cache uses them: token groups are cut to the K/V row.
int64_t effectiveKvGroup(const KvPlan& k) {
    const bool token =
        k.kv.kGranularity == KvGranularity::Token || k.kv.vGranularity == KvGranularity::Token;
    return token ? std::min(k.kv.groupSize, k.width) : k.kv.groupSize;
}

// The resolved settings of every layer, activation, KV block and SmoothQuant strength, as one
// comparable JSON (method options with their defaults filled in).
json planSummary(const Plan& p) {
    json j = json::object();
    for (const auto& l : p.layers) {
        json e = {{"quantize", l.quantize}};
        if (l.quantize) {
            const auto& w = l.weight;
            e["bits"] = w.bits;
            e["format"] = weightFormatName(w.format);
            e["symmetric"] = w.format == WeightFormat::Int ? w.symmetric : true;
            e["granularity"] = granularityName(w.granularity);
            if (w.granularity == Granularity::Group) e["group_size"] = w.groupSize;
            e["method"] = weightMethodName(w.method);
            if (w.method == WeightMethod::Gptq) {
                e["damp"] = l.weightJson.value("damp", 0.01);
                e["block_size"] = l.weightJson.value("block_size", 128);
                e["act_order"] = l.weightJson.value("act_order", false);
            }
            if (w.method == WeightMethod::Awq) {
                const json a = l.weightJson.value("awq", json::object());
                e["awq_grid"] = a.value("grid", 20);
                e["awq_clip_search"] = a.value("clip_search", true);
            }
        }
        if (l.sparsity) {
            const auto& s = *l.sparsity;
            e["sparsity"] = {{"method", sparsityMethodName(s.method)},
                             {"pattern", sparsityPatternName(s.pattern)},
                             {"n", s.n},
                             {"m", s.m},
                             {"ratio", s.pattern == SparsityPattern::NM ? 0.0 : s.ratio},
                             {"block_size", s.blockSize},
                             {"damp", s.damp}};
        }
        e["lowrank"] = l.lowrank.has_value();
        j["layers"][l.name] = e;
    }
    for (const auto& a : p.activations)
        j["activations"][a.name] = {{"bits", a.act.bits},
                                    {"per_token", a.act.perToken},
                                    {"clip", a.act.clip},
                                    {"outliers", a.outliers.has_value()}};
    for (const auto& k : p.kv)
        j["kv"][std::to_string(k.layer)] = {{"k", k.kv.kBits},
                                            {"v", k.kv.vBits},
                                            {"kg", int(k.kv.kGranularity)},
                                            {"vg", int(k.kv.vGranularity)},
                                            {"g", effectiveKvGroup(k)}};
    for (const auto& [name, a] : p.smooth) j["smooth"][name] = a.first;
    return j;
}

Plan planWithCalib(const Recipe& r, const Model& m) {
    PlanOptions po;
    po.hasCalibration = true;
    return planRecipe(r, m, po);
}

// The modifiers of a parsed recipe in file order: (stage, group, type, args).
struct Mod {
    std::string stage, group, type;
    YAML::Node args;
};
std::vector<Mod> modifiersOf(const YAML::Node& doc) {
    std::vector<Mod> out;
    for (const auto& st : doc)
        for (const auto& gr : st.second)
            for (const auto& md : gr.second)
                out.push_back({st.first.as<std::string>(), gr.first.as<std::string>(),
                               md.first.as<std::string>(), md.second});
    return out;
}

// The comment lines at the top of the file (before the first YAML line).
std::string topComment(const std::string& text) {
    std::istringstream in(text);
    std::string line, out;
    while (std::getline(in, line) && line.rfind("#", 0) == 0) out += line + "\n";
    return out;
}

} // namespace

class TestLlmCompressorRecipe : public QObject {
    Q_OBJECT

private slots:
    void moduleNamesPerFamily() {
        QCOMPARE(*hfModuleFromCanonical("layers.3.attn.q", "llama"),
                 std::string("model.layers.3.self_attn.q_proj"));
        QCOMPARE(*hfModuleFromCanonical("layers.0.mlp.down", "qwen2"),
                 std::string("model.layers.0.mlp.down_proj"));
        QCOMPARE(*hfModuleFromCanonical("lm_head", "llama"), std::string("lm_head"));
        QCOMPARE(*hfModuleFromCanonical("layers.1.attn.k", "phi3"),
                 std::string("model.layers.1.self_attn.qkv_proj"));
        QCOMPARE(*hfModuleFromCanonical("layers.1.mlp.up", "phi3"),
                 std::string("model.layers.1.mlp.gate_up_proj"));
        QCOMPARE(*hfModuleFromCanonical("layers.2.attn.o", "opt"),
                 std::string("model.decoder.layers.2.self_attn.out_proj"));
        QCOMPARE(*hfModuleFromCanonical("layers.0.attn.v", "gpt2"),
                 std::string("transformer.h.0.attn.c_attn"));
        QCOMPARE(*hfModuleFromCanonical("layers.0.mlp.experts.3.gate", "mixtral"),
                 std::string("model.layers.0.block_sparse_moe.experts.3.w1"));
        QCOMPARE(*hfModuleFromCanonical("layers.0.mixer.in_proj", "mamba"),
                 std::string("backbone.layers.0.mixer.in_proj"));
        QCOMPARE(*hfModuleFromCanonical("layers.0.attn_norm", "llama"), // the norm module
                 std::string("model.layers.0.input_layernorm"));
        QVERIFY(!hfModuleFromCanonical("layers.0.mixer.A_log", "mamba")); // a bare parameter
        QVERIFY(!hfModuleFromCanonical("layers.0.attn.q.bias", "qwen2"));
        QVERIFY(!hfModuleIsLinear("layers.0.attn.q", "gpt2")); // transformers' Conv1D
        QVERIFY(hfModuleIsLinear("layers.0.attn.q", "phi3"));
        QVERIFY(!hfModuleIsLinear("embed", "llama"));
        // inverse
        QCOMPARE(canonicalFromHfModule("model.layers.3.self_attn.q_proj", "llama"),
                 std::vector<std::string>{"layers.3.attn.q"});
        QCOMPARE(
            canonicalFromHfModule("model.layers.1.self_attn.qkv_proj", "phi3"),
            (std::vector<std::string>{"layers.1.attn.q", "layers.1.attn.k", "layers.1.attn.v"}));
        QCOMPARE(
            canonicalFromHfModule("gpt_neox.layers.0.attention.query_key_value", "gpt_neox"),
            (std::vector<std::string>{"layers.0.attn.q", "layers.0.attn.k", "layers.0.attn.v"}));
        QCOMPARE(canonicalFromHfModule("lm_head", "llama"), std::vector<std::string>{"lm_head"});
        QVERIFY(canonicalFromHfModule("model.layers.0.self_attn.rotary_emb", "llama").empty());
        // every linear role of every family maps back to itself
        for (const char* arch : {"llama", "qwen2", "phi3", "gemma2", "mixtral", "opt", "gpt_neox",
                                 "falcon", "bloom", "mamba"})
            for (const auto& mr : hfModuleRoles(arch)) {
                if (mr.suffix.find('*') != std::string::npos) continue;
                const std::string module = hfLayerPrefix(arch) + "2." + mr.suffix;
                std::vector<std::string> want;
                for (const auto& r : mr.roles) want.push_back("layers.2." + r);
                QCOMPARE(canonicalFromHfModule(module, arch), want);
                QVERIFY2(*hfModuleFromCanonical(want.front(), arch) == module,
                         (std::string(arch) + " " + module).c_str());
            }
        // regexes over module names -> regexes over canonical names
        QCOMPARE(
            canonicalRegexFromHfModuleRegex(R"(^model\.layers\.\d+\.self_attn\.q_proj$)", "llama"),
            std::string(R"(^layers\.\d+\.attn\.q$)"));
        QCOMPARE(canonicalRegexFromHfModuleRegex(".*down_proj", ""),
                 std::string(R"(.*mlp\.down.*)"));
        QCOMPARE(canonicalRegexFromHfModuleRegex(R"(.*self_attn\.qkv_proj$)", "phi3"),
                 std::string(R"(.*(?:attn\.q|attn\.k|attn\.v)$)"));
    }

    void presetsExistForTheIssuesChecks() {
        for (const char* n : {"W4A16-g128", "W4A16-g128-GPTQ", "W4A16-g128-AWQ", "W8A8-SQ",
                              "2:4-SparseGPT", "FP8-E4M3", "KV8"})
            QVERIFY2(findPresetIfAny(n) != nullptr, n);
        const Recipe& awq = findPreset("W4A16-g128-AWQ").recipe;
        QCOMPARE(awq.rules[0].weight->at("awq").at("clip_search").get<bool>(), false);
        const Recipe& sp = findPreset("2:4-SparseGPT").recipe;
        QVERIFY(sp.rules[0].sparsity && !sp.rules[0].weight);
    }

    void presetsExportAndRoundTrip_data() {
        QTest::addColumn<QString>("preset");
        QTest::addColumn<QString>("model");
        const QString wide = QString::fromStdString(wideModel());
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        QTest::newRow("W4A16-g128") << "W4A16-g128" << wide;
        QTest::newRow("W4A16-g128-GPTQ") << "W4A16-g128-GPTQ" << wide;
        QTest::newRow("W4A16-g128-AWQ") << "W4A16-g128-AWQ" << wide;
        QTest::newRow("W8A8-SQ") << "W8A8-SQ" << demo;
        QTest::newRow("2:4-SparseGPT") << "2:4-SparseGPT" << demo;
        QTest::newRow("FP8-E4M3") << "FP8-E4M3" << demo;
        QTest::newRow("KV8") << "KV8" << demo;
        QTest::newRow("W4A16-g32-GPTQ") << "W4A16-g32-GPTQ" << demo;
        QTest::newRow("W8A8-static") << "W8A8-static" << wide;
    }

    void presetsExportAndRoundTrip() {
        QFETCH(QString, preset);
        QFETCH(QString, model);
        auto m = Model::load(model.toStdString());
        const Recipe& recipe = findPreset(preset.toStdString()).recipe;
        const auto e = exportLlmCompressorRecipe(recipe, *m);
        QVERIFY2(e.notExpressible.empty(),
                 e.notExpressible.empty() ? "" : e.notExpressible[0].c_str());
        QVERIFY(e.approximations.empty());
        const std::string dir = lcwtest::tempDir("llmc-rt");
        const std::string path = dir + "/" + preset.toStdString() + ".yaml";
        exporter::writeLlmCompressorRecipe(path, e);
        const std::string text = readText(path);
        QCOMPARE(text, e.yaml);
        QVERIFY(topComment(text).find("Not expressible in llm-compressor: nothing") !=
                std::string::npos);

        // parse with yaml-cpp and check against llm-compressor's definitions
        const YAML::Node doc = YAML::LoadFile(path);
        QVERIFY(doc.IsMap());
        for (const auto& st : doc) {
            QVERIFY(st.first.as<std::string>().size() > 6);
            QVERIFY(st.first.as<std::string>().rfind("_stage") ==
                    st.first.as<std::string>().size() - 6);
            for (const auto& gr : st.second) {
                const std::string g = gr.first.as<std::string>();
                QVERIFY2(g.rfind("_modifiers") == g.size() - 10, g.c_str());
            }
        }
        const std::vector<Mod> mods = modifiersOf(doc);
        std::vector<std::string> types;
        for (const auto& md : mods) types.push_back(md.type);
        const std::set<std::string> modules = linearModules(model.toStdString());
        const Plan plan = planWithCalib(recipe, *m);
        // the modules lcw quantises / prunes, by their transformers names
        std::set<std::string> want;
        for (const auto& l : plan.layers)
            want.insert(*hfModuleFromCanonical(l.name, m->spec().arch));
        auto checkWeights = [&](const YAML::Node& w, int bits, const char* type, bool sym,
                                const char* strategy, int group) {
            QCOMPARE(w["num_bits"].as<int>(), bits);
            QCOMPARE(w["type"].as<std::string>(), std::string(type));
            QCOMPARE(w["symmetric"].as<bool>(), sym);
            QCOMPARE(w["strategy"].as<std::string>(), std::string(strategy));
            if (group)
                QCOMPARE(w["group_size"].as<int>(), group);
            else
                QVERIFY(!w["group_size"]);
            QCOMPARE(w["dynamic"].as<bool>(), false);
            QCOMPARE(w["observer"].as<std::string>(), std::string("minmax"));
        };
        auto checkTargets = [&](const Mod& md) {
            const YAML::Node groups = md.args["config_groups"];
            QVERIFY(groups && groups.IsMap());
            std::set<std::string> got;
            for (const auto& g : groups) {
                QVERIFY(g.first.as<std::string>().rfind("group_", 0) == 0);
                for (const auto& t : g.second["targets"])
                    QVERIFY(t.as<std::string>().rfind("re:", 0) == 0);
                for (const auto& x :
                     matchedModules(modules, g.second["targets"], md.args["ignore"]))
                    got.insert(x);
            }
            QCOMPARE(got, want);
            QCOMPARE(md.args["ignore"][0].as<std::string>(), std::string("lm_head"));
        };
        const std::string p = preset.toStdString();
        if (p == "W4A16-g128") {
            QCOMPARE(types, std::vector<std::string>{"QuantizationModifier"});
            checkTargets(mods[0]);
            checkWeights(mods[0].args["config_groups"]["group_0"]["weights"], 4, "int", false,
                         "group", 128);
            QVERIFY(!mods[0].args["config_groups"]["group_0"]["input_activations"]);
        } else if (p == "W4A16-g128-GPTQ" || p == "W4A16-g32-GPTQ") {
            QCOMPARE(types, std::vector<std::string>{"GPTQModifier"});
            checkTargets(mods[0]);
            checkWeights(mods[0].args["config_groups"]["group_0"]["weights"], 4, "int", false,
                         "group", p == "W4A16-g32-GPTQ" ? 32 : 128);
            QCOMPARE(mods[0].args["block_size"].as<int>(), 128);
            QCOMPARE(mods[0].args["dampening_frac"].as<double>(), 0.01);
            // lcw's default: no reordering; GPTQModifier's default would be "static"
            QVERIFY(mods[0].args["actorder"] && mods[0].args["actorder"].IsNull());
        } else if (p == "W4A16-g128-AWQ") {
            // AWQModifier (a transform) first, then the QuantizationModifier it needs
            QCOMPARE(types, (std::vector<std::string>{"AWQModifier", "QuantizationModifier"}));
            QCOMPARE(mods[0].stage, mods[1].stage);
            QCOMPARE(mods[0].args["duo_scaling"].as<bool>(), false);
            QCOMPARE(mods[0].args["n_grid"].as<int>(), 20);
            QVERIFY(!mods[0].args["config_groups"]);
            checkTargets(mods[1]);
            checkWeights(mods[1].args["config_groups"]["group_0"]["weights"], 4, "int", false,
                         "group", 128);
        } else if (p == "W8A8-SQ" || p == "W8A8-static") {
            if (p == "W8A8-SQ") {
                QCOMPARE(types,
                         (std::vector<std::string>{"SmoothQuantModifier", "QuantizationModifier"}));
                QCOMPARE(mods[0].args["smoothing_strength"].as<double>(), 0.5);
            } else {
                QCOMPARE(types, std::vector<std::string>{"QuantizationModifier"});
            }
            const Mod& q = mods.back();
            checkTargets(q);
            const YAML::Node g = q.args["config_groups"]["group_0"];
            checkWeights(g["weights"], 8, "int", true, "channel", 0);
            const YAML::Node a = g["input_activations"];
            QCOMPARE(a["num_bits"].as<int>(), 8);
            QCOMPARE(a["type"].as<std::string>(), std::string("int"));
            QCOMPARE(a["symmetric"].as<bool>(), true);
            if (p == "W8A8-SQ") {
                // compressed-tensors: token strategy requires dynamic
                QCOMPARE(a["strategy"].as<std::string>(), std::string("token"));
                QCOMPARE(a["dynamic"].as<bool>(), true);
            } else {
                QCOMPARE(a["strategy"].as<std::string>(), std::string("tensor"));
                QCOMPARE(a["dynamic"].as<bool>(), false);
                QCOMPARE(a["observer"].as<std::string>(), std::string("static_minmax"));
            }
        } else if (p == "2:4-SparseGPT") {
            QCOMPARE(types, std::vector<std::string>{"SparseGPTModifier"});
            QCOMPARE(mods[0].stage, std::string("sparsity_stage"));
            QCOMPARE(mods[0].args["sparsity"].as<double>(), 0.5);
            QCOMPARE(mods[0].args["mask_structure"].as<std::string>(), std::string("2:4"));
            // quoted: PyYAML (YAML 1.1) reads a plain 2:4 as the base-60 integer 124
            QVERIFY(text.find("mask_structure: \"2:4\"") != std::string::npos);
            QCOMPARE(mods[0].args["block_size"].as<int>(), 128);
            QCOMPARE(mods[0].args["dampening_frac"].as<double>(), 0.01);
            QCOMPARE(matchedModules(modules, mods[0].args["targets"], mods[0].args["ignore"]),
                     want);
        } else if (p == "FP8-E4M3") {
            QCOMPARE(types, std::vector<std::string>{"QuantizationModifier"});
            checkTargets(mods[0]);
            checkWeights(mods[0].args["config_groups"]["group_0"]["weights"], 8, "float", true,
                         "channel", 0);
        } else if (p == "KV8") {
            QCOMPARE(types, std::vector<std::string>{"QuantizationModifier"});
            QVERIFY(!mods[0].args["config_groups"]);
            const YAML::Node kv = mods[0].args["kv_cache_scheme"];
            QCOMPARE(kv["num_bits"].as<int>(), 8);
            QCOMPARE(kv["type"].as<std::string>(), std::string("int"));
            QCOMPARE(kv["symmetric"].as<bool>(), false);
            QCOMPARE(kv["strategy"].as<std::string>(), std::string("group"));
            // lcw's default 128 channels, cut to the K/V row (4 KV heads x 8 = 32 here)
            QCOMPARE(kv["group_size"].as<int>(), 32);
            QCOMPARE(kv["dynamic"].as<bool>(), true);
        }

        // recipe import: the same plan on the model, layer by layer
        const Recipe back = importLlmCompressorRecipe(path, m->spec().arch);
        const json a = planSummary(plan), b = planSummary(planWithCalib(back, *m));
        QVERIFY(!a.empty());
        if (a != b) qWarning("original %s\nimported %s", a.dump().c_str(), b.dump().c_str());
        QCOMPARE(a, b);
        // without the family given (every family's spellings tried) as well
        QCOMPARE(planSummary(planWithCalib(importLlmCompressorRecipe(path), *m)), a);
    }

    void partialAndMixedRecipesRoundTrip() {
        // per-layer differences: GPTQ with act order on attention, RTN int8 elsewhere, lm_head
        // at 8 bits, block 1 only gets activations
        auto m = Model::load(wideModel());
        const Recipe r =
            Recipe::fromJson(json::parse(R"({"lcw_recipe": 1, "name": "mixed", "rules": [
            {"targets": ["*"], "weight": {"bits": 8}},
            {"targets": ["layers.*.attn.*"], "weight": {"bits": 4, "granularity": "group",
              "group_size": 64, "symmetric": false, "method": "gptq", "act_order": true,
              "damp": 0.05, "block_size": 64}},
            {"targets": ["layers.1.mlp.*"], "activation": {"bits": 8}},
            {"targets": ["lm_head"], "weight": {"bits": 6, "granularity": "channel"}},
            {"targets": ["layers.0.mlp.down"], "weight": null},
            {"targets": ["*"], "kv": {"k_bits": 4, "v_bits": 4, "group_size": 32}}]})"));
        const auto e = exportLlmCompressorRecipe(r, *m);
        QVERIFY(e.notExpressible.empty());
        const std::string path = lcwtest::tempDir("llmc-mixed") + "/mixed.yaml";
        exporter::writeLlmCompressorRecipe(path, e);
        const YAML::Node doc = YAML::LoadFile(path);
        const auto mods = modifiersOf(doc);
        int gptq = 0;
        for (const auto& md : mods)
            if (md.type == "GPTQModifier") {
                ++gptq;
                // act_order's default groups are the reference's (consecutive in act order):
                // compressed-tensors' "group" ("static" is static_groups:
                // staticGroupsAreActorderStatic).
                QCOMPARE(md.args["actorder"].as<std::string>(), std::string("group"));
                QCOMPARE(md.args["dampening_frac"].as<double>(), 0.05);
                QCOMPARE(md.args["block_size"].as<int>(), 64);
            }
        QCOMPARE(gptq, 1);
        QVERIFY(e.yaml.find("- lm_head\n") != std::string::npos); // an exact target
        const Plan a = planWithCalib(r, *m);
        QCOMPARE(planSummary(planWithCalib(importLlmCompressorRecipe(path, "llama"), *m)),
                 planSummary(a));
    }

    void staticGroupsAreActorderStatic() {
        // static_groups (or lcw's "groups": "updated") keep the groups in column order:
        // llm-compressor's actorder "static", read back as static_groups.
        auto m = Model::load(wideModel());
        for (const char* extra : {"static_groups", "groups"}) {
            json w = {{"bits", 4},          {"granularity", "group"}, {"group_size", 64},
                      {"symmetric", false}, {"method", "gptq"},       {"act_order", true}};
            if (std::string(extra) == "static_groups")
                w["static_groups"] = true;
            else
                w["groups"] = "updated";
            const Recipe r = Recipe::fromJson(
                {{"lcw_recipe", 1},
                 {"name", "sg"},
                 {"rules", json::array({{{"targets", {"layers.*.attn.*"}}, {"weight", w}}})}});
            const auto e = exportLlmCompressorRecipe(r, *m);
            const std::string path = lcwtest::tempDir("llmc-sg") + "/sg.yaml";
            exporter::writeLlmCompressorRecipe(path, e);
            int gptq = 0;
            for (const auto& md : modifiersOf(YAML::LoadFile(path)))
                if (md.type == "GPTQModifier") {
                    ++gptq;
                    QCOMPARE(md.args["actorder"].as<std::string>(), std::string("static"));
                }
            QCOMPARE(gptq, 1);
            const Plan p = planWithCalib(importLlmCompressorRecipe(path, "llama"), *m);
            QVERIFY(!p.layers.empty());
            for (const auto& l : p.layers)
                if (l.weight.method == WeightMethod::Gptq)
                    QCOMPARE(l.weightJson.value("static_groups", false), true);
        }
    }

    void fusedModulesPhi3() {
        LCW_REQUIRE_SHARED("models/tiny-random/phi3/model");
        const std::string folder = lcwtest::sharedPath("models/tiny-random/phi3/model");
        auto m = Model::load(folder);
        const Recipe& r = findPreset("W8A8").recipe;
        const auto e = exportLlmCompressorRecipe(r, *m);
        QVERIFY(e.notExpressible.empty());
        QVERIFY(e.yaml.find(R"(self_attn\.qkv_proj$)") != std::string::npos);
        QVERIFY(e.yaml.find(R"(mlp\.gate_up_proj$)") != std::string::npos);
        const std::string path = lcwtest::tempDir("llmc-phi3") + "/phi3.yaml";
        exporter::writeLlmCompressorRecipe(path, e);
        const auto mods = modifiersOf(YAML::LoadFile(path));
        QCOMPARE(mods.size(), size_t(1));
        std::set<std::string> want;
        for (const auto& l : planWithCalib(r, *m).layers)
            want.insert(*hfModuleFromCanonical(l.name, "phi3"));
        QCOMPARE(matchedModules(linearModules(folder),
                                mods[0].args["config_groups"]["group_0"]["targets"],
                                mods[0].args["ignore"]),
                 want);
        QCOMPARE(planSummary(planWithCalib(importLlmCompressorRecipe(path, "phi3"), *m)),
                 planSummary(planWithCalib(r, *m)));
        // q, k and v with different settings cannot share the fused qkv_proj: listed, not
        // written; gate_up_proj stays expressible
        const Recipe split =
            Recipe::fromJson(json::parse(R"({"lcw_recipe": 1, "name": "s", "rules": [
            {"targets": ["*"], "weight": {"bits": 8}},
            {"targets": ["layers.0.attn.v"], "weight": {"bits": 4}}]})"));
        const auto e2 = exportLlmCompressorRecipe(split, *m);
        bool listed = false;
        for (const auto& l : e2.notExpressible)
            listed |=
                l.find("fused module") != std::string::npos &&
                l.find("layers.0.attn.v in model.layers.0.self_attn.qkv_proj") != std::string::npos;
        QVERIFY(listed);
        QVERIFY(e2.yaml.find(R"(model\.layers\.(?:1)\.self_attn\.qkv_proj$)") != std::string::npos);
        QVERIFY(e2.yaml.find(R"(model\.layers\.\d+\.mlp\.gate_up_proj$)") != std::string::npos);
    }

    void notExpressibleListedInReportAndTopComment() {
        auto m = Model::load(lcwtest::demoModelPath());
        const Recipe r = Recipe::fromJson(json::parse(R"({"lcw_recipe": 1, "name": "odd", "rules": [
            {"targets": ["*"], "weight": {"bits": 4, "granularity": "group", "group_size": 32,
              "symmetric": false, "method": "omniquant"}},
            {"targets": ["layers.1.*"], "weight": {"format": "nf4", "group_size": 32,
              "method": "rtn"}},
            {"targets": ["layers.2.mlp.gate"], "weight": {"method": "q8_0"},
             "activation": {"bits": 8}},
            {"targets": ["*"], "kv": {"k_bits": 2, "v_bits": 2, "k_granularity": "channel",
              "v_granularity": "token", "group_size": 32}}]})"));
        const auto e = exportLlmCompressorRecipe(r, *m);
        auto listed = [](const std::vector<std::string>& v, const std::string& a,
                         const std::string& b) {
            for (const auto& l : v)
                if (l.find(a) != std::string::npos && l.find(b) != std::string::npos) return true;
            return false;
        };
        QVERIFY(listed(e.approximations, "OmniQuant", "layers.0.attn.q"));
        QVERIFY(listed(e.notExpressible, "NF4", "layers.1.attn.q"));
        QVERIFY(listed(e.notExpressible, "GGUF", "layers.2.mlp.gate"));
        QVERIFY(listed(e.notExpressible, "K and V", "k2 channel"));
        const std::string top = topComment(e.yaml);
        QVERIFY(top.find("Not expressible in llm-compressor (NOT in this file)") !=
                std::string::npos);
        QVERIFY(top.find("OmniQuant") != std::string::npos);
        QVERIFY(top.find("NF4") != std::string::npos);
        QVERIFY(top.find("GGUF") != std::string::npos);
        // the NF4 / GGUF layers are not targeted by any modifier
        QVERIFY(e.yaml.find(R"(layers\.(?:1)\.)") == std::string::npos);
        for (const auto& md : modifiersOf(YAML::Load(e.yaml))) QVERIFY(!md.args["kv_cache_scheme"]);
        // the q8_0 layer's activations are still written (weights: null)
        bool actOnly = false;
        for (const auto& md : modifiersOf(YAML::Load(e.yaml)))
            for (const auto& g : md.args["config_groups"])
                if (g.second["weights"].IsNull() && g.second["input_activations"])
                    for (const auto& t : g.second["targets"])
                        actOnly |=
                            t.as<std::string>() == R"(re:^model\.layers\.(?:2)\.mlp\.gate_proj$)";
        QVERIFY(actOnly);

        const Recipe lr = Recipe::fromJson(json::parse(R"({"lcw_recipe": 1, "name": "lr", "rules": [
            {"targets": ["*"], "weight": {"bits": 8}},
            {"targets": ["layers.0.mlp.down"], "lowrank": {"method": "svd", "param_ratio": 0.5}},
            {"targets": ["layers.1.mlp.down"], "structured": {"mlp_ratio": 0.25}},
            {"targets": ["layers.3.attn.q"], "activation": {"bits": 8, "clip": 0.9},
             "outliers": {"threshold": 6}}]})"));
        const auto e2 = exportLlmCompressorRecipe(lr, *m);
        QVERIFY(listed(e2.notExpressible, "low-rank", "layers.0.mlp.down"));
        QVERIFY(listed(e2.notExpressible, "structured pruning", "block 1"));
        QVERIFY(listed(e2.notExpressible, "outlier", "layers.3.attn.q"));
        QVERIFY(listed(e2.approximations, "clip", "layers.3.attn.q"));
        const std::string top2 = topComment(e2.yaml);
        QVERIFY(top2.find("low-rank") != std::string::npos);
        QVERIFY(top2.find("structured pruning") != std::string::npos);
        QVERIFY(e2.yaml.find(R"(layers\.(?:1|2|3|4)\.mlp\.down_proj$)") != std::string::npos);

        // the CLI prints the same lists (text and --json)
        const std::string dir = lcwtest::tempDir("llmc-cli");
        writeText(dir + "/lr.json", lr.toJson().dump());
        const auto run =
            lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()), "--recipe",
                             QString::fromStdString(dir + "/lr.json"), "--format", "llmcompressor",
                             "--out", QString::fromStdString(dir + "/lr.yaml"), "--json"});
        QCOMPARE(run.code, 0);
        const json j = json::parse(run.out.toStdString());
        QCOMPARE(j["format"].get<std::string>(), std::string("llmcompressor"));
        QCOMPARE(j["not_expressible"].size(), e2.notExpressible.size());
        QVERIFY(lcwtest::exists(dir + "/lr.yaml"));
        const auto text =
            lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()), "--preset",
                             "2:4-SparseGPT", "--format", "llmcompressor", "--out",
                             QString::fromStdString(dir + "/s.yaml")});
        QCOMPARE(text.code, 0);
        QVERIFY(text.out.contains("SparseGPTModifier"));
        QVERIFY(text.out.contains("not expressible: nothing"));
    }

    void importsLlmCompressorsOwnRecipes() {
        auto m = Model::load(lcwtest::demoModelPath());
        const std::string dir = lcwtest::tempDir("llmc-own");
        // tests/llmcompressor/transformers/compression/recipes/smoothquant_gptq_w8a8.yaml
        writeText(dir + "/sq.yaml", R"(quant_stage:
  quant_modifiers:
    SmoothQuantModifier:
      smoothing_strength: 0.8
      mappings:
      - - ['re:.*q_proj', 're:.*k_proj', 're:.*v_proj']
        - re:.*input_layernorm
      - - ['re:.*gate_proj', 're:.*up_proj']
        - re:.*post_attention_layernorm
    GPTQModifier:
      targets: ["Linear"]
      ignore: [lm_head]
      scheme: W8A8
)");
        const auto r = exporter::importLlmCompressorRecipeWithWarnings(dir + "/sq.yaml");
        bool mappingsWarned = false;
        for (const auto& w : r.warnings)
            mappingsWarned |= w.find(dir + "/sq.yaml") != std::string::npos &&
                              w.find("SmoothQuantModifier.mappings") != std::string::npos;
        QVERIFY(mappingsWarned);
        const Plan p = planWithCalib(r.recipe, *m);
        QCOMPARE(int(p.layers.size()), 35); // 5 blocks x 7 linears, lm_head tied (embed)
        for (const auto& l : p.layers) {
            QCOMPARE(l.weight.bits, 8);
            QCOMPARE(l.weight.method, WeightMethod::Gptq);
            QCOMPARE(l.weight.granularity, Granularity::Channel);
            QCOMPARE(l.weightJson.value("act_order", false), true); // GPTQModifier's default
            QCOMPARE(p.smooth.at(l.name).first, 0.8);
        }
        QCOMPARE(int(p.activations.size()), 35);
        QVERIFY(p.activations[0].act.perToken);

        // tests/e2e/recipes/actorder/recipe_w4a16_actorder_group.yaml (on 64-wide rows: g32)
        writeText(dir + "/ao.yaml", R"(quant_stage:
  quant_modifiers:
    GPTQModifier:
      ignore: ["lm_head"]
      actorder: "weight"
      config_groups:
        group_0:
          weights:
            num_bits: 4
            type: "int"
            symmetric: true
            strategy: "group"
            group_size: 32
          targets: ["Linear"]
)");
        const Plan p2 = planWithCalib(importLlmCompressorRecipe(dir + "/ao.yaml"), *m);
        QCOMPARE(int(p2.layers.size()), 35);
        QCOMPARE(p2.layers[0].weight.groupSize, int64_t(32));
        QVERIFY(p2.layers[0].weight.symmetric);
        QCOMPARE(p2.layers[0].weightJson.value("act_order", false), true);
        // "weight" (= "static"): groups in column order, scales before the loop.
        QCOMPARE(p2.layers[0].weightJson.value("static_groups", false), true);

        // tests/llmcompressor/transformers/compression/recipes/sparse_24.yaml
        writeText(dir + "/sp.yaml", R"(pruning_stage:
    obcq_modifiers:
        SparseGPTModifier:
            sparsity: 0.5
            mask_structure: "2:4"
            targets: ["Linear"]
            ignore: ["re:.*lm_head"]
)");
        const Plan p3 = planWithCalib(importLlmCompressorRecipe(dir + "/sp.yaml"), *m);
        QCOMPARE(int(p3.layers.size()), 35);
        QVERIFY(p3.layers[0].sparsity && p3.layers[0].sparsity->pattern == SparsityPattern::NM);
        QVERIFY(!p3.layers[0].quantize);

        // tests/sparsity/sparsegpt/recipes/sparse_with_mask_structure.yaml: SparseGPT targets
        // are modules whose Linear submodules are pruned (sgpt_base.py), here block 0
        writeText(dir + "/blk.yaml", R"(test_stage:
  obcq_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      block_size: 128
      dampening_frac: 0.01
      mask_structure: "2:4"
      targets: [
        "re:.*model.layers.0$",
      ]
)");
        const Plan p4 = planWithCalib(importLlmCompressorRecipe(dir + "/blk.yaml"), *m);
        QCOMPARE(int(p4.layers.size()), 7);
        for (const auto& l : p4.layers) QVERIFY(l.name.rfind("layers.0.", 0) == 0);

        // the CLI writes the imported recipe (atomically) and it loads as an lcw recipe
        const auto run =
            lcwtest::runCli({"recipe", "import", QString::fromStdString(dir + "/sq.yaml"), "--out",
                             QString::fromStdString(dir + "/sq.json")});
        QCOMPARE(run.code, 0);
        QVERIFY(run.err.contains("SmoothQuantModifier.mappings"));
        QCOMPARE(Recipe::load(dir + "/sq.json").toJson(), r.recipe.toJson());
    }

    void badInputNamesFileAndKey() {
        const std::string dir = lcwtest::tempDir("llmc-bad");
        auto expectError = [&](const std::string& name, const std::string& text,
                               std::vector<std::string> parts) {
            const std::string path = dir + "/" + name;
            writeText(path, text);
            try {
                importLlmCompressorRecipe(path);
                QFAIL(("no error for " + name).c_str());
            } catch (const FormatError& e) {
                const std::string what = e.what();
                parts.push_back(path);
                for (const auto& p : parts)
                    QVERIFY2(what.find(p) != std::string::npos, (what + " lacks " + p).c_str());
            }
        };
        expectError("syntax.yaml", "quant_stage:\n  quant_modifiers: [\n    GPTQModifier: {\n",
                    {"YAML syntax error", "line"});
        expectError(
            "unknown_modifier.yaml",
            "quant_stage:\n  quant_modifiers:\n    SpinQuantModifier:\n      rotations: [R1]\n",
            {"quant_stage.quant_modifiers.SpinQuantModifier", "not supported"});
        expectError("unknown_key.yaml",
                    "quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      dampening: 0.1\n"
                    "      scheme: W4A16\n",
                    {"quant_stage.quant_modifiers.GPTQModifier.dampening", "unknown key"});
        expectError("bad_value.yaml",
                    "s_stage:\n  q_modifiers:\n    QuantizationModifier:\n      config_groups:\n"
                    "        group_0:\n          targets: [Linear]\n          weights: {num_bits: "
                    "four}\n",
                    {"s_stage.q_modifiers.QuantizationModifier.config_groups.group_0.weights."
                     "num_bits",
                     "four"});
        expectError("fp4.yaml",
                    "s_stage:\n  q_modifiers:\n    QuantizationModifier:\n      scheme: NVFP4\n",
                    {"QuantizationModifier.scheme", "NVFP4"});
        expectError("no_stage.yaml", "QuantizationModifier:\n  scheme: W8A8\n", {"no NAME_stage"});
        expectError("awq_alone.yaml", "s_stage:\n  a_modifiers:\n    AWQModifier: {n_grid: 10}\n",
                    {"AWQModifier", "following QuantizationModifier"});
        expectError("module.yaml",
                    "s_stage:\n  q_modifiers:\n    QuantizationModifier:\n      targets: "
                    "[model.layers.0.self_attn.rotary]\n      scheme: W8A16\n",
                    {"QuantizationModifier.targets", "model.layers.0.self_attn.rotary"});
        // the CLI: exit 1 and the message on stderr
        const auto run = lcwtest::runCli(
            {"recipe", "import", QString::fromStdString(dir + "/unknown_modifier.yaml")});
        QCOMPARE(run.code, 1);
        QVERIFY(run.err.contains("SpinQuantModifier"));
        QVERIFY(run.err.contains(QByteArray::fromStdString(dir + "/unknown_modifier.yaml")));
        // export: --out is required, and the folder must exist
        QCOMPARE(lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()),
                                  "--preset", "KV8", "--format", "llmcompressor"})
                     .code,
                 2);
        QCOMPARE(lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()),
                                  "--preset", "KV8", "--format", "llmcompressor", "--out",
                                  "/nonexistent/dir/r.yaml"})
                     .code,
                 1);
    }

    void everyFamilyRoundTrips_data() {
        QTest::addColumn<QString>("family");
        for (const char* f :
             {"llama2_sp_f32", "gemma", "mixtral_moe", "opt", "phi3", "qwen2_sharded", "mamba"})
            QTest::newRow(f) << f;
    }

    void everyFamilyRoundTrips() {
        // per-block differences and lm_head over each family's module names
        QFETCH(QString, family);
        const std::string rel = "models/tiny-random/" + family.toStdString() + "/model";
        LCW_REQUIRE_SHARED(rel);
        const std::string folder = lcwtest::sharedPath(rel);
        auto m = Model::load(folder);
        const Recipe r = Recipe::fromJson(json::parse(R"({"lcw_recipe": 1, "name": "f", "rules": [
            {"targets": ["*"], "ignore": ["*.dt_proj"],
             "weight": {"bits": 4, "symmetric": false, "group_size": 32}},
            {"targets": ["layers.0.*"], "weight": {"bits": 8, "granularity": "channel",
              "symmetric": true}},
            {"targets": ["lm_head"], "weight": {"bits": 6, "granularity": "channel"}}]})"));
        const auto e = exportLlmCompressorRecipe(r, *m);
        QVERIFY2(e.notExpressible.empty(),
                 e.notExpressible.empty() ? "" : e.notExpressible[0].c_str());
        const std::string path = lcwtest::tempDir("llmc-fam") + "/r.yaml";
        exporter::writeLlmCompressorRecipe(path, e);
        const Plan plan = planWithCalib(r, *m);
        // the groups' targets select exactly the modules of the file that lcw quantises
        const auto mods = modifiersOf(YAML::LoadFile(path));
        QCOMPARE(mods.size(), size_t(1));
        std::set<std::string> want, got;
        for (const auto& l : plan.layers)
            want.insert(*hfModuleFromCanonical(l.name, m->spec().arch));
        const std::set<std::string> modules = linearModules(folder);
        for (const auto& w : want) QVERIFY2(modules.count(w), w.c_str());
        for (const auto& g : mods[0].args["config_groups"])
            for (const auto& x : matchedModules(modules, g.second["targets"], {})) got.insert(x);
        QCOMPARE(got, want);
        QCOMPARE(planSummary(planWithCalib(importLlmCompressorRecipe(path, m->spec().arch), *m)),
                 planSummary(plan));
        QCOMPARE(planSummary(planWithCalib(importLlmCompressorRecipe(path), *m)),
                 planSummary(plan));
    }

    void exportFromSavedOverlay() {
        // --overlay DIR exports the recipe the overlay was made with
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        const std::string dir = lcwtest::tempDir("llmc-ov");
        const QString ov = QString::fromStdString(dir + "/ov");
        QCOMPARE(lcwtest::runCli({"compress", demo, "--preset", "W8A8", "--save", ov}).code, 0);
        const QString a = QString::fromStdString(dir + "/a.yaml"),
                      b = QString::fromStdString(dir + "/b.yaml");
        QCOMPARE(lcwtest::runCli(
                     {"export", demo, "--overlay", ov, "--format", "llmcompressor", "--out", a})
                     .code,
                 0);
        QCOMPARE(lcwtest::runCli(
                     {"export", demo, "--preset", "W8A8", "--format", "llmcompressor", "--out", b})
                     .code,
                 0);
        auto body = [](const std::string& t) { return t.substr(t.find("\nquant_stage:")); };
        QCOMPARE(body(readText(a.toStdString())), body(readText(b.toStdString())));
        QVERIFY(readText(a.toStdString()).find("from the recipe overlay ") != std::string::npos);
    }

    void gpt2Conv1dListed() {
        LCW_REQUIRE_SHARED("models/tiny-random/gpt2/model");
        auto m = Model::load(lcwtest::sharedPath("models/tiny-random/gpt2/model"));
        const auto e = exportLlmCompressorRecipe(findPreset("W8A16").recipe, *m);
        bool listed = false;
        for (const auto& l : e.notExpressible)
            listed |= l.find("nn.Linear") != std::string::npos &&
                      l.find("layers.0.attn.q") != std::string::npos;
        QVERIFY(listed);
        QCOMPARE(e.layersExported, 0);
    }
};

QTEST_GUILESS_MAIN(TestLlmCompressorRecipe)
#include "test_llmcompressor_recipe.moc"
