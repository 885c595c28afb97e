// llm-compressor recipe YAML: export of a planned lcw recipe, import back into an lcw recipe.
//
// What an llm-compressor recipe cannot express, and what the export therefore lists (in its
// report and in the comment at the top of the written file) instead of writing:
//   - OmniQuant (no such modifier): the layers are written as QuantizationModifier (RTN) on the
//     same grid and listed as an approximation;
//   - low-rank factorisation (SVD / ASVD / SVD-LLM) and structured pruning (MLP channels, KV
//     groups): no modifier; the layers' factorisation / removal is left out;
//   - NF4 and every GGUF type (q4_k, q8_0, iq4_nl, f16, GPTQ/AWQ on GGUF grids): not a
//     compressed-tensors QuantizationArgs; those layers' weights are left out;
//   - outlier columns / channels (LLM.int8()): no equivalent;
//   - activation clipping (clip < 1): written without it (approximation);
//   - KV cache: llm-compressor has one kv_cache_scheme for K and V of every block: different K
//     and V bits, per-channel (KIVI) keys, or blocks with different settings are listed;
//   - AWQ's clipping search (lcw's awq.clip_search, AutoAWQ's auto_clip): llm-compressor's
//     AWQModifier searches the scales only; written without it (approximation);
//   - per-row pruning for magnitude / SparseGPT (llm-compressor's masks are unstructured or N:M);
//   - weights of modules that are not nn.Linear in transformers (embeddings, GPT-2's Conv1D).
// The field names and enums follow llm-compressor (src/llmcompressor/recipe/recipe.py,
// modifiers/gptq/base.py, modifiers/quantization/quantization/mixin.py, modifiers/transform/awq/
// base.py, modifiers/transform/smoothquant/base.py, modifiers/pruning/sparsegpt/sgpt_base.py,
// modifiers/pruning/magnitude/base.py) and compressed-tensors (quantization/quant_args.py,
// quant_scheme.py).
#include "core/export/llmcompressor.h"

#include "core/common/error.h"
#include "core/io/atomic_writer.h"
#include "core/io/tensor_names.h"
#include "core/model/model.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

namespace lcw::exporter {

using json = nlohmann::json;
using compress::Granularity;
using compress::WeightFormat;
using compress::WeightMethod;

namespace {

// ---------------------------------------------------------------- export

std::string fmtNum(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.10g", v);
    return buf;
}

// The module lists of one config group / pruning modifier: canonical layers grouped by their
// module suffix (the part after "<prefix>N."), or exact names for model-level modules.
struct Targets {
    std::map<std::string, std::set<int64_t>> bySuffix; // suffix -> blocks
    std::vector<std::string> suffixOrder;
    std::vector<std::string> exact; // lm_head, ...
    int layers = 0;
    void add(const std::string& canonical, const std::string& module, const std::string& prefix) {
        ++layers;
        const auto l = splitCanonical(canonical);
        if (l && l->layer >= 0 && module.rfind(prefix, 0) == 0) {
            const std::string rest = module.substr(prefix.size());
            const size_t dot = rest.find('.');
            const std::string suffix = rest.substr(dot + 1);
            if (!bySuffix.count(suffix)) suffixOrder.push_back(suffix);
            bySuffix[suffix].insert(l->layer);
        } else if (std::find(exact.begin(), exact.end(), module) == exact.end()) {
            exact.push_back(module);
        }
    }
    YAML::Node node(const std::string& prefix, int64_t nLayers) const {
        YAML::Node n(YAML::NodeType::Sequence);
        for (const auto& s : suffixOrder) {
            const auto& blocks = bySuffix.at(s);
            std::string layers;
            if (int64_t(blocks.size()) == nLayers) {
                layers = "\\d+";
            } else {
                layers = "(?:";
                bool first = true;
                for (int64_t b : blocks) {
                    if (!first) layers += '|';
                    layers += std::to_string(b);
                    first = false;
                }
                layers += ")";
            }
            n.push_back("re:^" + regexEscape(prefix) + layers + "\\." + regexEscape(s) + "$");
        }
        for (const auto& e : exact) n.push_back(e);
        return n;
    }
};

YAML::Node weightArgs(const compress::WeightSettings& w) {
    YAML::Node a;
    a["num_bits"] = w.format == WeightFormat::Fp8E4M3 ? 8 : w.bits;
    a["type"] = w.format == WeightFormat::Fp8E4M3 ? "float" : "int";
    a["symmetric"] = w.format == WeightFormat::Fp8E4M3 ? true : w.symmetric;
    a["strategy"] = compress::granularityName(w.granularity);
    if (w.granularity == Granularity::Group) a["group_size"] = w.groupSize;
    a["dynamic"] = false;
    a["observer"] = "minmax";
    return a;
}

YAML::Node activationArgs(const compress::ActivationSettings& s) {
    YAML::Node a;
    a["num_bits"] = s.bits;
    a["type"] = "int";
    a["symmetric"] = true;
    if (s.perToken && s.groupSize > 0) {
        // per token, groups of consecutive channels (without outlier channels, which are
        // refused, lcw's groups are exactly these)
        a["strategy"] = "group";
        a["group_size"] = s.groupSize;
        a["dynamic"] = true;
    } else if (s.perToken) {
        a["strategy"] = "token";
        a["dynamic"] = true;
    } else {
        a["strategy"] = "tensor";
        a["dynamic"] = false;
        a["observer"] = "static_minmax"; // the largest |x| of all calibration batches
    }
    return a;
}

// Emits `n` block style, double-quoting the scalars that PyYAML (YAML 1.1, what llm-compressor
// reads recipes with) would not read back as the same string: "2:4" is a base-60 integer there.
void emitNode(YAML::Emitter& e, const YAML::Node& n) {
    if (n.IsMap()) {
        e << YAML::BeginMap;
        for (const auto& kv : n) {
            e << YAML::Key << kv.first.Scalar() << YAML::Value;
            emitNode(e, kv.second);
        }
        e << YAML::EndMap;
    } else if (n.IsSequence()) {
        e << YAML::BeginSeq;
        for (const auto& x : n) emitNode(e, x);
        e << YAML::EndSeq;
    } else if (n.IsNull()) {
        e << YAML::Null;
    } else {
        const std::string& v = n.Scalar();
        const bool ratio = v.find(':') != std::string::npos &&
                           v.find_first_not_of("0123456789:") == std::string::npos;
        if (ratio)
            e << YAML::DoubleQuoted << v;
        else
            e << v;
    }
}

std::string dumpKey(const YAML::Node& n) {
    YAML::Emitter e;
    e << YAML::Flow << n;
    return e.c_str();
}

// One llm-compressor modifier being built: its type, its own arguments and its config groups
// (each keyed by the group's weights / input_activations arguments).
struct ModifierBuild {
    std::string type;
    YAML::Node args;
    std::string argsKey;
    std::vector<std::string> groupOrder;
    std::map<std::string, std::pair<YAML::Node, Targets>> groups; // key -> (scheme, targets)
    Targets targets; // pruning modifiers: their own targets
    bool hasKv = false;
};

struct KvKey {
    compress::KvSettings kv;
    bool operator==(const KvKey& o) const {
        return kv.kBits == o.kv.kBits && kv.vBits == o.kv.vBits &&
               kv.kGranularity == o.kv.kGranularity && kv.vGranularity == o.kv.vGranularity &&
               kv.groupSize == o.kv.groupSize;
    }
};

/// Joins the layers listed under each reason into one line per reason (six names at most).
std::vector<std::string> reasonLines(const std::map<std::string, std::vector<std::string>>& m) {
    std::vector<std::string> lines;
    for (const auto& [reason, layers] : m) {
        std::string l = reason + ": ";
        for (size_t i = 0; i < layers.size() && i < 6; ++i) l += (i ? ", " : "") + layers[i];
        if (layers.size() > 6) l += ", ... (" + std::to_string(layers.size()) + " in all)";
        lines.push_back(l);
    }
    return lines;
}

/// Resolves the recipe against the model as llm-compressor would run it: calibrated.
compress::Plan planForExport(const compress::Recipe& recipe, const Model& model) {
    compress::PlanOptions po;
    po.hasCalibration = true; // llm-compressor calibrates with its own data set
    return compress::planRecipe(recipe, model, po);
}

/// The modifier type and arguments of one layer's pruning (SparseGPT / Wanda / magnitude).
std::pair<std::string, YAML::Node> pruningModifier(const compress::SparsitySettings& s) {
    const bool nm = s.pattern == compress::SparsityPattern::NM;
    YAML::Node a;
    std::string type;
    const double sparsity = nm ? 1.0 - double(s.n) / double(s.m) : s.ratio;
    const std::string mask = nm ? std::to_string(s.n) + ":" + std::to_string(s.m) : std::string();
    if (s.method == compress::SparsityMethod::Magnitude) {
        type = "MagnitudePruningModifier";
        a["init_sparsity"] = sparsity;
        a["final_sparsity"] = sparsity;
        a["start"] = 0;
        a["end"] = 0;
        a["update"] = 0;
        a["mask_structure"] = nm ? mask : "unstructured";
    } else {
        type = s.method == compress::SparsityMethod::SparseGpt ? "SparseGPTModifier"
                                                               : "WandaPruningModifier";
        a["sparsity"] = sparsity;
        a["mask_structure"] = nm ? mask : "0:0";
        if (s.method == compress::SparsityMethod::SparseGpt) {
            a["block_size"] = s.blockSize;
            a["dampening_frac"] = s.damp;
        }
    }
    return {type, a};
}

/// The sequence of "lm_head" when no group or target of `m` names it, else empty.
YAML::Node ignoreNode(const ModifierBuild& m) {
    bool lmHead = false;
    for (const auto& k : m.groupOrder)
        for (const auto& e : m.groups.at(k).second.exact) lmHead |= e == "lm_head";
    for (const auto& e : m.targets.exact) lmHead |= e == "lm_head";
    YAML::Node ig(YAML::NodeType::Sequence);
    if (!lmHead) ig.push_back("lm_head");
    return ig;
}

/// One export: the plan's layers grouped into modifiers, the lists of what is not expressible
/// or approximated, then the YAML document and the file's text.
class LlmcExporter {
public:
    LlmcExporter(const compress::Recipe& recipe, const Model& model, const LlmcExportOptions& opts)
        : m_recipe(recipe), m_model(model), m_opts(opts), m_plan(planForExport(recipe, model)),
          m_arch(model.spec().arch), m_prefix(hfLayerPrefix(m_arch)),
          m_nLayers(model.spec().nLayers) {}

    /// Runs the steps of the export in order.
    LlmcExport run() {
        m_out.warnings = m_plan.warnings;
        for (const auto& ap : m_plan.activations) m_acts[ap.name] = &ap;
        collectModuleSettings();
        for (const compress::LayerPlan& lp : m_plan.layers) addLayer(lp);
        for (const auto& ap : m_plan.activations) addActivationOnly(ap);
        listStructuredPruning();
        const YAML::Node smooth = smoothQuantArgs();
        const YAML::Node kvScheme = kvCacheScheme();
        YAML::Node doc(YAML::NodeType::Map);
        addSparsityStage(doc);
        addQuantStage(doc, smooth, kvScheme);
        m_out.layersExported = int(m_exported.size());
        m_out.notExpressible = reasonLines(m_notByReason);
        m_out.approximations = reasonLines(m_approxByReason);
        m_out.yaml = documentText(doc);
        return m_out;
    }

private:
    const compress::Recipe& m_recipe;
    const Model& m_model;
    const LlmcExportOptions& m_opts;
    const compress::Plan m_plan;
    const std::string m_arch;
    const std::string m_prefix;
    const int64_t m_nLayers;
    LlmcExport m_out;
    std::map<std::string, const compress::ActivationPlan*> m_acts;
    // modifiers, keyed by type + arguments, in the order they appear
    std::vector<std::string> m_quantOrder, m_pruneOrder;
    std::map<std::string, ModifierBuild> m_mods;
    std::map<std::string, std::vector<std::string>> m_approxByReason, m_notByReason;
    std::set<std::string> m_exported;
    // layers whose activation settings were written or listed with their weights
    std::set<std::string> m_actsDone;
    // Fused modules (phi3 qkv_proj / gate_up_proj, falcon query_key_value, ...) hold several
    // lcw layers: one module, one setting, so parts with different settings are not expressible.
    std::map<std::string, std::set<std::string>> m_moduleSettings;
    std::map<std::string, int> m_groupNames;

    /// Lists `layer` under an approximation `reason`.
    void approx(const std::string& reason, const std::string& layer) {
        m_approxByReason[reason].push_back(layer);
    }

    /// Lists `layer` under a not-expressible `reason`.
    void notExpr(const std::string& reason, const std::string& layer) {
        m_notByReason[reason].push_back(layer);
    }

    /// The modifier of `type` with `args`, created (and appended to `order`) on first use.
    ModifierBuild& modifier(std::vector<std::string>& order, const std::string& type,
                            const YAML::Node& args) {
        const std::string key = type + " " + dumpKey(args);
        auto it = m_mods.find(key);
        if (it == m_mods.end()) {
            order.push_back(key);
            ModifierBuild b;
            b.type = type;
            b.args = args;
            b.argsKey = key;
            it = m_mods.emplace(key, std::move(b)).first;
        }
        return it->second;
    }

    /// Adds a layer to the config group of `m` with `scheme`, created on first use.
    void addToGroup(ModifierBuild& m, const YAML::Node& scheme, const std::string& canonical,
                    const std::string& module) {
        const std::string key = dumpKey(scheme);
        auto it = m.groups.find(key);
        if (it == m.groups.end()) {
            m.groupOrder.push_back(key);
            it = m.groups.emplace(key, std::make_pair(scheme, Targets{})).first;
        }
        it->second.second.add(canonical, module, m_prefix);
    }

    /// A string that differs when two layers' written settings differ.
    std::string settingsOf(const std::string& name) const {
        std::string k;
        for (const auto& lp : m_plan.layers)
            if (lp.name == name) {
                const json w = lp.weightJson.is_object() ? lp.weightJson : json::object();
                const json awq = w.value("awq", json::object());
                k += lp.describe() + "|" + fmtNum(w.value("damp", 0.01)) + "|" +
                     std::to_string(w.value("block_size", 128)) + "|" +
                     std::to_string(w.value("act_order", false)) + "|" +
                     std::to_string(w.value("static_groups", false)) + "|" +
                     w.value("groups", std::string("reference")) + "|" +
                     std::to_string(awq.value("grid", 20)) + "|" +
                     std::to_string(awq.value("clip_search", true));
            }
        if (auto it = m_acts.find(name); it != m_acts.end()) k += "|" + it->second->act.describe();
        if (auto it = m_plan.smooth.find(name); it != m_plan.smooth.end())
            k += "|sq " + fmtNum(it->second.first);
        return k;
    }

    /// Collects the distinct settings of the layers inside each transformers module.
    void collectModuleSettings() {
        std::set<std::string> names;
        for (const auto& lp : m_plan.layers) names.insert(lp.name);
        for (const auto& ap : m_plan.activations) names.insert(ap.name);
        for (const auto& t : m_model.tensors())
            if (t.shape.size() == 2 && compress::isTargetable(t.name)) names.insert(t.name);
        for (const auto& n : names)
            if (auto mod = hfModuleFromCanonical(n, m_arch))
                m_moduleSettings[*mod].insert(settingsOf(n));
    }

    /// Lists `name` (and returns true) when its fused `module` holds differing settings.
    bool fusedConflict(const std::string& name, const std::string& module) {
        if (m_moduleSettings[module].size() <= 1) return false;
        notExpr("parts of one fused module with different settings (llm-compressor quantises the "
                "module as a whole)",
                name + " in " + module);
        return true;
    }

    /// Writes or lists one planned layer: its pruning and its weight quantisation.
    void addLayer(const compress::LayerPlan& lp) {
        const auto module = hfModuleFromCanonical(lp.name, m_arch);
        const bool linear = module && hfModuleIsLinear(lp.name, m_arch);
        if (!linear || lp.lowrank) m_actsDone.insert(lp.name); // listed below with the layer
        if (linear && fusedConflict(lp.name, *module)) {
            m_actsDone.insert(lp.name);
            return;
        }
        if (!linear) {
            notExpr("not an nn.Linear module in transformers (llm-compressor quantises and prunes "
                    "Linear layers)",
                    lp.name + " (" + lp.describe() + ")");
            return;
        }
        if (lp.lowrank) {
            notExpr("low-rank factorisation: llm-compressor has no low-rank modifier; the layer's "
                    "settings are left out",
                    lp.name + " (" + lp.describe() + ")");
            return;
        }
        if (lp.sparsity) addSparsity(lp, *module);
        if (lp.quantize) addQuantization(lp, *module);
    }

    /// Adds a layer's pruning to its pruning modifier, or lists it (per-row masks).
    void addSparsity(const compress::LayerPlan& lp, const std::string& module) {
        const compress::SparsitySettings& s = *lp.sparsity;
        if (s.pattern == compress::SparsityPattern::PerRow &&
            s.method != compress::SparsityMethod::Wanda) {
            notExpr("per-row pruning: llm-compressor's magnitude and SparseGPT masks are "
                    "unstructured or N:M",
                    lp.name + " (" + s.describe() + ")");
            return;
        }
        const auto [type, a] = pruningModifier(s);
        ModifierBuild& m = modifier(m_pruneOrder, type, a);
        m.targets.add(lp.name, module, m_prefix);
        m_exported.insert(lp.name);
    }

    /// Adds a layer's weight (and activation) scheme to its quantisation modifier, or lists it
    /// (GGUF types, NF4).
    void addQuantization(const compress::LayerPlan& lp, const std::string& module) {
        const compress::WeightSettings& w = lp.weight;
        if (compress::methodIsGguf(w.method) || w.ggufGrid) {
            notExpr("GGUF block types (llama.cpp's own formats) are not compressed-tensors "
                    "schemes; the layer's weights are left out",
                    lp.name + " (" + w.describe() + ")");
            return;
        }
        if (compress::methodIsCompact(w.method)) {
            notExpr("SqueezeLLM, DGQ and SliM-LLM have no compressed-tensors QuantizationArgs or "
                    "llm-compressor modifier; the layer's weights are left out",
                    lp.name + " (" + w.describe() + ")");
            return;
        }
        if (w.format == WeightFormat::Nf4) {
            notExpr("NF4 (NormalFloat) has no compressed-tensors QuantizationArgs; the layer's "
                    "weights are left out",
                    lp.name + " (" + w.describe() + ")");
            return;
        }
        const YAML::Node scheme = quantScheme(lp);
        YAML::Node margs(YAML::NodeType::Map);
        std::string type = "QuantizationModifier";
        if (w.method == WeightMethod::Gptq) {
            type = "GPTQModifier";
            gptqArgs(lp, margs);
        } else if (w.method == WeightMethod::Awq) {
            awqArgs(lp, margs);
        } else if (w.method == WeightMethod::OmniQuant) {
            approx("OmniQuant: llm-compressor has no OmniQuant modifier; written as "
                   "QuantizationModifier (round to nearest) on the same grid",
                   lp.name + " (" + w.describe() + ")");
        } else if (w.method == WeightMethod::EfficientQat) {
            approx("EfficientQAT: llm-compressor has no EfficientQAT modifier; written as "
                   "QuantizationModifier (round to nearest) on the same grid",
                   lp.name + " (" + w.describe() + ")");
        }
        ModifierBuild& m = modifier(m_quantOrder, type, margs);
        addToGroup(m, scheme, lp.name, module);
        m_exported.insert(lp.name);
    }

    /// A layer's config-group scheme: its weights and, when planned, its input activations.
    YAML::Node quantScheme(const compress::LayerPlan& lp) {
        YAML::Node scheme;
        scheme["weights"] = weightArgs(lp.weight);
        if (lp.weight.clipRatio != 1.0)
            approx("weight clip_ratio < 1 (Atom's fixed clipping): compressed-tensors' minmax "
                   "observer takes the full range; written without it",
                   lp.name + " (" + lp.weight.describe() + ")");
        m_actsDone.insert(lp.name);
        if (auto it = m_acts.find(lp.name); it != m_acts.end()) {
            scheme["input_activations"] = activationArgs(it->second->act);
            if (it->second->act.clip != 1.0)
                approx("activation clip < 1: compressed-tensors has no clipping of activation "
                       "ranges; written without it",
                       lp.name + " (" + it->second->act.describe() + ")");
            if (it->second->outliers)
                notExpr("outlier channels (LLM.int8()) are not expressible", lp.name);
        }
        return scheme;
    }

    /// GPTQModifier's arguments for a layer: block size, dampening, activation ordering.
    void gptqArgs(const compress::LayerPlan& lp, YAML::Node& margs) {
        const compress::WeightSettings& w = lp.weight;
        const json& wj = lp.weightJson;
        margs["block_size"] = wj.value("block_size", int64_t(128));
        margs["dampening_frac"] = wj.value("damp", 0.01);
        // lcw's act_order with the reference groups (consecutive in act order, g_idx):
        // compressed-tensors' ActivationOrdering "group"; with static_groups (or "groups":
        // "updated") the groups stay in column order: "static" (alias of "weight").
        // Written explicitly: GPTQModifier's default is "static".
        if (wj.value("act_order", false) && w.granularity == Granularity::Group) {
            const bool contiguous =
                wj.value("static_groups", false) || wj.value("groups", std::string()) == "updated";
            margs["actorder"] = contiguous ? "static" : "group";
            if (!contiguous)
                approx("GPTQ act-order groups: llm-compressor's actorder \"group\" forms the "
                       "same groups but fixes their scales before the loop; lcw (as "
                       "IST-DASLab/gptq) chooses them when a group's first column is reached",
                       lp.name);
        } else {
            margs["actorder"] = YAML::Node(YAML::NodeType::Null);
        }
        if (wj.value("act_order", false) && w.granularity != Granularity::Group)
            approx("GPTQ act_order without groups: compressed-tensors allows activation "
                   "ordering only with strategy group; written without it",
                   lp.name);
    }

    /// The AWQ transform's grid for a layer (as a key removed when written) and its
    /// approximations.
    void awqArgs(const compress::LayerPlan& lp, YAML::Node& margs) {
        const json a = lp.weightJson.value("awq", json::object());
        const int grid = a.value("grid", 20);
        margs["awq_n_grid"] = grid; // key of the transform in front; removed when written
        if (a.value("clip_search", true))
            approx("AWQ clipping search (awq.clip_search): llm-compressor's AWQModifier "
                   "searches the scales only; written without it",
                   lp.name);
        if (a.value("objective", "module-output") == "joint-linears" ||
            a.value("grid_rule", "reference") == "inclusive")
            approx("AWQ objective joint-linears / grid_rule inclusive (lcw's variants): "
                   "AWQModifier searches α = i/n_grid on the module output; written as that",
                   lp.name);
    }

    /// Writes or lists the activations of a layer whose weights stay unquantised (or are not
    /// expressible: NF4, GGUF).
    void addActivationOnly(const compress::ActivationPlan& ap) {
        if (m_actsDone.count(ap.name)) return;
        const auto module = hfModuleFromCanonical(ap.name, m_arch);
        if (module && hfModuleIsLinear(ap.name, m_arch) && fusedConflict(ap.name, *module)) return;
        if (!module || !hfModuleIsLinear(ap.name, m_arch)) {
            notExpr("not an nn.Linear module in transformers (llm-compressor quantises and prunes "
                    "Linear layers)",
                    ap.name + " (" + ap.act.describe() + ")");
            return;
        }
        YAML::Node scheme;
        scheme["weights"] = YAML::Node(YAML::NodeType::Null);
        scheme["input_activations"] = activationArgs(ap.act);
        if (ap.outliers) notExpr("outlier channels (LLM.int8()) are not expressible", ap.name);
        if (ap.act.clip != 1.0)
            approx("activation clip < 1: compressed-tensors has no clipping of activation "
                   "ranges; written without it",
                   ap.name + " (" + ap.act.describe() + ")");
        ModifierBuild& m =
            modifier(m_quantOrder, "QuantizationModifier", YAML::Node(YAML::NodeType::Map));
        addToGroup(m, scheme, ap.name, *module);
        m_exported.insert(ap.name);
    }

    /// Lists the blocks with structured pruning (no llm-compressor modifier).
    void listStructuredPruning() {
        for (const auto& b : m_plan.structured)
            notExpr("structured pruning (removal of MLP channels / KV groups): llm-compressor has "
                    "no such one-shot modifier; left out",
                    "block " + std::to_string(b.layer));
    }

    /// SmoothQuantModifier's arguments: one strength for the model (empty without SmoothQuant).
    YAML::Node smoothQuantArgs() {
        YAML::Node smooth;
        std::map<double, int> count;
        int smoothed = 0;
        for (const auto& [name, a] : m_plan.smooth) {
            const auto& q = m_recipe.rules[size_t(a.second)].smoothquant;
            if (q && q->is_object() && q->value("rule", std::string()) == "percentile") {
                notExpr("DGQ's percentile smoothing: llm-compressor's SmoothQuantModifier has no "
                        "such rule; left out",
                        name);
                continue;
            }
            ++count[a.first];
            ++smoothed;
        }
        if (count.empty()) return smooth;
        double alpha = count.begin()->first;
        for (const auto& [a, c] : count)
            if (c > count[alpha]) alpha = a;
        smooth["smoothing_strength"] = alpha;
        if (count.size() > 1)
            approx("SmoothQuant strengths differ between layers: llm-compressor's "
                   "SmoothQuantModifier has one smoothing_strength; written with " +
                       fmtNum(alpha),
                   std::to_string(count.size()) + " strengths");
        int targetable = 0;
        for (const auto& t : m_model.tensors())
            if (t.shape.size() == 2 && compress::isTargetable(t.name)) {
                bool explicitOnly = false;
                compress::isTargetable(t.name, &explicitOnly);
                if (!explicitOnly) ++targetable;
            }
        if (smoothed < targetable)
            approx("SmoothQuant on part of the model: llm-compressor's default mappings smooth "
                   "every block's attention and MLP inputs",
                   std::to_string(smoothed) + " of " + std::to_string(targetable) + " layers");
        return smooth;
    }

    /// The one kv_cache_scheme (empty without KV quantisation or when not expressible).
    YAML::Node kvCacheScheme() {
        YAML::Node kvScheme;
        if (m_plan.kv.empty()) return kvScheme;
        const compress::KvSettings& kv = m_plan.kv.front().kv;
        bool uniform = int64_t(m_plan.kv.size()) == m_nLayers;
        for (const auto& kp : m_plan.kv) uniform &= KvKey{kp.kv} == KvKey{kv};
        if (!uniform)
            notExpr("KV cache settings that differ between blocks: llm-compressor has one "
                    "kv_cache_scheme; the first block's settings are written",
                    std::to_string(m_plan.kv.size()) + " blocks");
        if (kv.kBits != kv.vBits || kv.kGranularity != kv.vGranularity) {
            notExpr("different K and V settings: kv_cache_scheme is one QuantizationArgs for "
                    "both; not written",
                    kv.describe());
        } else if (kv.kGranularity == KvGranularity::Channel) {
            notExpr("per-channel KV blocks (KIVI): compressed-tensors has no such strategy; not "
                    "written",
                    kv.describe());
        } else {
            // lcw: asymmetric ints, a scale and minimum per group of channels of each token,
            // computed as the token enters the cache.
            kvScheme["num_bits"] = kv.kBits;
            kvScheme["type"] = "int";
            kvScheme["symmetric"] = false;
            kvScheme["strategy"] = "group";
            // token groups are cut to the K/V row (nKvHeads * headDim) as the cache cuts them
            kvScheme["group_size"] = std::min(kv.groupSize, m_plan.kv.front().width);
            kvScheme["dynamic"] = true;
        }
        return kvScheme;
    }

    /// The next unused modifier group name for `base` ("gptq_modifiers", "gptq_1_modifiers").
    std::string groupName(const std::string& base) {
        const int n = m_groupNames[base]++;
        return n == 0 ? base + "_modifiers" : base + "_" + std::to_string(n) + "_modifiers";
    }

    /// Writes the pruning modifiers as doc's sparsity_stage.
    void addSparsityStage(YAML::Node& doc) {
        if (m_pruneOrder.empty()) return;
        YAML::Node stage(YAML::NodeType::Map);
        for (const auto& key : m_pruneOrder) {
            const ModifierBuild& m = m_mods.at(key);
            YAML::Node a = YAML::Clone(m.args);
            a["targets"] = m.targets.node(m_prefix, m_nLayers);
            a["ignore"] = ignoreNode(m);
            const std::string g = groupName(m.type == "SparseGPTModifier" ? "obcq" : "pruning");
            stage[g][m.type] = a;
            m_out.modifiers.push_back({"sparsity_stage", g, m.type, m.targets.layers});
        }
        doc["sparsity_stage"] = stage;
    }

    /// Writes SmoothQuant, the AWQ transforms, the quantisation modifiers and the KV cache
    /// scheme as doc's quant_stage.
    void addQuantStage(YAML::Node& doc, const YAML::Node& smooth, const YAML::Node& kvScheme) {
        if (m_quantOrder.empty() && !smooth.size() && !kvScheme.size()) return;
        YAML::Node stage(YAML::NodeType::Map);
        if (smooth.size()) {
            const std::string g = groupName("smoothing");
            stage[g]["SmoothQuantModifier"] = smooth;
            m_out.modifiers.push_back({"quant_stage", g, "SmoothQuantModifier", 0});
        }
        bool kvWritten = false;
        for (const auto& key : m_quantOrder) {
            const bool withKv = !kvWritten && kvScheme.size();
            addQuantModifier(stage, m_mods.at(key), withKv ? &kvScheme : nullptr);
            kvWritten |= withKv;
        }
        if (!kvWritten && kvScheme.size()) {
            YAML::Node a;
            a["kv_cache_scheme"] = kvScheme;
            const std::string g = groupName("quant");
            stage[g]["QuantizationModifier"] = a;
            m_out.modifiers.push_back({"quant_stage", g, "QuantizationModifier", 0});
        }
        doc["quant_stage"] = stage;
    }

    /// Writes one quantisation modifier (after its AWQ transform, if any) into `stage`, with
    /// the kv_cache_scheme when `kvScheme` is given.
    void addQuantModifier(YAML::Node& stage, const ModifierBuild& m, const YAML::Node* kvScheme) {
        YAML::Node a = YAML::Clone(m.args);
        const std::string type = m.type;
        if (a["awq_n_grid"]) {
            YAML::Node t;
            t["duo_scaling"] = false; // lcw scales by the activations only
            t["n_grid"] = a["awq_n_grid"].as<int>();
            a.remove("awq_n_grid");
            const std::string g = groupName("awq");
            stage[g]["AWQModifier"] = t;
            m_out.modifiers.push_back({"quant_stage", g, "AWQModifier", 0});
        }
        int layers = 0;
        a["config_groups"] = configGroups(m, layers);
        a["ignore"] = ignoreNode(m);
        if (kvScheme) a["kv_cache_scheme"] = *kvScheme;
        const std::string g = groupName(type == "GPTQModifier" ? "gptq" : "quant");
        stage[g][type] = a;
        m_out.modifiers.push_back({"quant_stage", g, type, layers});
    }

    /// The config_groups of `m` ("group_0", ...); adds the layers they cover to `layers`.
    YAML::Node configGroups(const ModifierBuild& m, int& layers) const {
        YAML::Node groups(YAML::NodeType::Map);
        int gi = 0;
        for (const auto& gk : m.groupOrder) {
            const auto& [scheme, targets] = m.groups.at(gk);
            YAML::Node s = YAML::Clone(scheme);
            s["targets"] = targets.node(m_prefix, m_nLayers);
            groups["group_" + std::to_string(gi++)] = s;
            layers += targets.layers;
        }
        return groups;
    }

    /// The file's text: a comment header (source, model, the lists), then the YAML.
    std::string documentText(const YAML::Node& doc) const {
        std::ostringstream text;
        text << "# llm-compressor recipe written by lcw from the recipe "
             << (m_opts.recipeSource.empty() ? "\"" + m_recipe.name + "\"" : m_opts.recipeSource)
             << "\n";
        text << "# model: " << m_model.path() << " (" << m_arch << ", " << m_nLayers
             << " blocks); targets are re: regexes over the transformers module names\n";
        text << "# run with: llmcompressor.oneshot(model=..., dataset=..., recipe=\"this file\")\n";
        if (m_out.notExpressible.empty()) {
            text << "# Not expressible in llm-compressor: nothing (every setting is written "
                    "below)\n";
        } else {
            text << "# Not expressible in llm-compressor (NOT in this file):\n";
            for (const auto& l : m_out.notExpressible) text << "#   - " << l << "\n";
        }
        if (!m_out.approximations.empty()) {
            text << "# Written as the closest llm-compressor equivalent:\n";
            for (const auto& l : m_out.approximations) text << "#   - " << l << "\n";
        }
        YAML::Emitter e;
        e.SetNullFormat(YAML::LowerNull);
        e.SetIndent(2);
        emitNode(e, doc);
        if (!e.good()) throw Error("llm-compressor recipe: YAML emitter: " + e.GetLastError());
        text << (doc.size() ? e.c_str() : "{}") << "\n";
        return text.str();
    }
};

} // namespace

LlmcExport exportLlmCompressorRecipe(const compress::Recipe& recipe, const Model& model,
                                     const LlmcExportOptions& opts) {
    if (recipe.rotation)
        throw UnsupportedError("llm-compressor export: the recipe's rotation (QuaRot, lcw's seeded "
                               "Hadamard transforms) has no llm-compressor form here");
    return LlmcExporter(recipe, model, opts).run();
}

void writeLlmCompressorRecipe(const std::string& path, const LlmcExport& e) {
    AtomicFileWriter w(path);
    w.write(e.yaml);
    w.commit();
}

// ---------------------------------------------------------------- import

namespace {

class Importer {
public:
    Importer(std::string path, std::string_view arch) : m_path(std::move(path)), m_arch(arch) {}

    LlmcImport run() {
        YAML::Node root;
        try {
            root = YAML::LoadFile(m_path);
        } catch (const YAML::BadFile&) {
            throw FormatError(m_path, "cannot read the file");
        } catch (const YAML::Exception& ex) {
            throw FormatError(m_path, "YAML syntax error at line " +
                                          std::to_string(ex.mark.line + 1) + ", column " +
                                          std::to_string(ex.mark.column + 1) + ": " + ex.msg);
        }
        if (!root.IsMap())
            throw FormatError(m_path, "an llm-compressor recipe is a mapping of NAME_stage keys");
        int stages = 0;
        for (const auto& st : root) {
            const std::string sk = st.first.as<std::string>();
            if (!endsWith(sk, "_stage")) {
                warn(sk, "ignored (llm-compressor reads only NAME_stage keys" +
                             std::string(sk == "args" ? "; args are training arguments)" : ")"));
                continue;
            }
            if (!st.second.IsMap()) throw bad(sk, "a stage is a mapping of NAME_modifiers keys");
            ++stages;
            for (const auto& gr : st.second) {
                const std::string gk = gr.first.as<std::string>();
                const std::string where = sk + "." + gk;
                if (!endsWith(gk, "_modifiers")) {
                    warn(where, "ignored (llm-compressor reads only NAME_modifiers keys)");
                    continue;
                }
                if (!gr.second.IsMap())
                    throw bad(where, "a modifier group is a mapping of modifier names");
                for (const auto& md : gr.second)
                    modifier(where + "." + md.first.as<std::string>(), md.first.as<std::string>(),
                             md.second);
            }
        }
        if (stages == 0)
            throw FormatError(m_path, "no NAME_stage key: this is not an llm-compressor recipe");
        if (m_pendingAwq)
            throw bad(m_awqWhere, "AWQModifier needs a following QuantizationModifier (as in "
                                  "llm-compressor)");
        json j = {{"lcw_recipe", 1},
                  {"name", std::filesystem::path(m_path).stem().string()},
                  {"description", "imported from the llm-compressor recipe " + m_path},
                  {"rules", m_rules}};
        if (m_rules.empty()) throw FormatError(m_path, "the recipe has no modifier lcw can use");
        LlmcImport r;
        try {
            r.recipe = compress::Recipe::fromJson(j);
        } catch (const compress::RecipeError& e) {
            throw FormatError(m_path, std::string("the imported recipe is invalid: ") + e.what());
        }
        r.warnings = std::move(m_warnings);
        return r;
    }

private:
    static bool endsWith(const std::string& s, std::string_view suf) {
        return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
    }
    FormatError bad(const std::string& key, const std::string& problem) const {
        return FormatError(m_path, "key " + key + ": " + problem);
    }
    void warn(const std::string& key, const std::string& problem) {
        m_warnings.push_back(m_path + ": key " + key + ": " + problem);
    }
    template <class T> T get(const YAML::Node& n, const std::string& key) const {
        try {
            return n.as<T>();
        } catch (const YAML::Exception&) {
            throw bad(key, "unreadable value '" + (n.IsScalar() ? n.Scalar() : dumpKey(n)) + "'");
        }
    }
    bool isNull(const YAML::Node& n) const { return !n || n.IsNull(); }
    // QuantizationArgs.dynamic: a bool, or "local" (NVFP4 only)
    bool isDynamic(const YAML::Node& n, const std::string& key) const {
        if (isNull(n)) return false;
        if (n.IsScalar() && n.Scalar() == "local")
            throw bad(key, "dynamic 'local' (NVFP4's) is not supported");
        return get<bool>(n, key);
    }

    // targets / ignore -> canonical patterns
    // `containers`: SparseGPT / Wanda targets select modules whose Linear submodules are pruned
    // (sgpt_base.py: "layers containing targets"), so a target also covers what lies below it.
    json patterns(const YAML::Node& n, const std::string& key, bool isIgnore, bool* linear,
                  bool containers = false) {
        std::vector<std::string> items;
        if (n.IsScalar())
            items.push_back(n.Scalar());
        else if (n.IsSequence())
            for (const auto& x : n) items.push_back(get<std::string>(x, key));
        else
            throw bad(key, "expected a name or a list of names");
        json out = json::array();
        for (const auto& t : items) {
            if (t.rfind("re:", 0) == 0) {
                std::string re = canonicalRegexFromHfModuleRegex(t.substr(3), m_arch);
                if (containers && re.size() > 1 && re.back() == '$' && re[re.size() - 2] != '\\')
                    re = "(?:" + re.substr(0, re.size() - 1) + ")(?:\\..*)?";
                out.push_back("re:" + re);
            } else if (t == "Linear") {
                if (isIgnore) throw bad(key, "ignoring every Linear leaves nothing to do");
                out.push_back("*");
                if (linear) *linear = true;
            } else {
                std::vector<std::string> c =
                    canonicalFromHfModule(t, m_arch.empty() ? "llama" : m_arch);
                for (std::string_view a : {"phi3", "mixtral", "opt", "gpt_neox", "falcon", "mamba"})
                    if (c.empty() && m_arch.empty()) c = canonicalFromHfModule(t, a);
                if (c.empty() && containers) {
                    // a decoder block ("model.layers.3"): every linear in it
                    for (std::string_view a : {"llama", "opt", "gpt2", "gpt_neox", "mamba"}) {
                        const std::string prefix =
                            hfLayerPrefix(m_arch.empty() ? a : std::string_view(m_arch));
                        const std::string rest =
                            t.rfind(prefix, 0) == 0 ? t.substr(prefix.size()) : std::string();
                        if (!rest.empty() &&
                            rest.find_first_not_of("0123456789") == std::string::npos) {
                            c.push_back("layers." + rest + ".*");
                            break;
                        }
                    }
                }
                if (c.empty()) {
                    if (!t.empty() && std::isupper(static_cast<unsigned char>(t[0]))) {
                        if (isIgnore) {
                            warn(key, "class name '" + t + "' ignored (lcw selects by name)");
                            continue;
                        }
                        throw bad(key, "class name '" + t +
                                           "' is not supported (lcw reads \"Linear\", module "
                                           "names and re: regexes)");
                    }
                    throw bad(key, "'" + t + "' is not a module name lcw knows");
                }
                for (auto& x : c) out.push_back(x);
            }
        }
        return out;
    }

    void checkKeys(const YAML::Node& n, const std::string& where,
                   std::initializer_list<std::string_view> known,
                   std::initializer_list<std::string_view> ignored) {
        if (!n.IsMap()) throw bad(where, "expected a mapping");
        for (const auto& kv : n) {
            const std::string k = kv.first.as<std::string>();
            if (std::find(known.begin(), known.end(), k) != known.end()) continue;
            if (std::find(ignored.begin(), ignored.end(), k) != ignored.end()) {
                warn(where + "." + k, "ignored (no lcw equivalent)");
                continue;
            }
            throw bad(where + "." + k, "unknown key");
        }
    }

    // compressed-tensors QuantizationArgs -> lcw weight section
    json weightSection(const YAML::Node& a, const std::string& where) {
        checkKeys(a, where,
                  {"num_bits", "type", "symmetric", "strategy", "group_size", "dynamic", "observer",
                   "actorder", "block_structure"},
                  {"observer_kwargs"});
        const int bits = a["num_bits"] ? get<int>(a["num_bits"], where + ".num_bits") : 8;
        const std::string type = a["type"] ? get<std::string>(a["type"], where + ".type") : "int";
        const bool sym = a["symmetric"] ? get<bool>(a["symmetric"], where + ".symmetric") : true;
        const bool hasGroup = !isNull(a["group_size"]);
        const int64_t group = hasGroup ? get<int64_t>(a["group_size"], where + ".group_size") : 0;
        std::string strategy = isNull(a["strategy"])
                                   ? (!hasGroup ? "tensor" : (group == -1 ? "channel" : "group"))
                                   : get<std::string>(a["strategy"], where + ".strategy");
        if (isDynamic(a["dynamic"], where + ".dynamic"))
            throw bad(where + ".dynamic", "dynamic weight quantisation is not supported");
        if (!isNull(a["block_structure"]) || strategy == "block")
            throw bad(where + ".strategy", "block strategy (2-D blocks) is not supported");
        if (strategy != "tensor" && strategy != "channel" && strategy != "group")
            throw bad(where + ".strategy",
                      "'" + strategy + "' is not supported for weights (tensor, channel, group)");
        json w;
        if (type == "int") {
            if (bits < 2 || bits > 8)
                throw bad(where + ".num_bits", std::to_string(bits) + " is out of lcw's 2..8");
            w = {{"bits", bits}, {"format", "int"}, {"symmetric", sym}};
        } else if (type == "float") {
            if (bits != 8)
                throw bad(where + ".num_bits", "float weights of " + std::to_string(bits) +
                                                   " bits are not supported (lcw has fp8_e4m3)");
            w = {{"bits", 8}, {"format", "fp8_e4m3"}};
            if (!sym) warn(where + ".symmetric", "fp8 weights are symmetric in lcw");
        } else {
            throw bad(where + ".type", "'" + type + "' (int or float)");
        }
        w["granularity"] = strategy;
        if (strategy == "group") {
            if (!hasGroup || group < 1)
                throw bad(where + ".group_size", "strategy group needs a positive group_size");
            w["group_size"] = group;
        }
        if (a["observer"] && !isNull(a["observer"])) {
            const std::string o = get<std::string>(a["observer"], where + ".observer");
            if (o != "minmax" && o != "memoryless_minmax" && o != "static_minmax")
                warn(where + ".observer",
                     "'" + o + "' read as min-max (lcw's round to nearest uses the weight range)");
        }
        if (!isNull(a["actorder"])) {
            const std::string o = get<std::string>(a["actorder"], where + ".actorder");
            m_argsActorder = o;
        }
        return w;
    }

    json activationSection(const YAML::Node& a, const std::string& where) {
        checkKeys(
            a, where,
            {"num_bits", "type", "symmetric", "strategy", "group_size", "dynamic", "observer"},
            {"observer_kwargs", "actorder"});
        const int bits = a["num_bits"] ? get<int>(a["num_bits"], where + ".num_bits") : 8;
        const std::string type = a["type"] ? get<std::string>(a["type"], where + ".type") : "int";
        if (type != "int")
            throw bad(where + ".type", "'" + type + "' activations are not supported (int only)");
        if (bits < 2 || bits > 16)
            throw bad(where + ".num_bits", std::to_string(bits) + " is out of lcw's 2..16");
        if (a["symmetric"] && !get<bool>(a["symmetric"], where + ".symmetric"))
            warn(where + ".symmetric", "asymmetric activations read as symmetric (lcw's are)");
        const bool dynamic = isDynamic(a["dynamic"], where + ".dynamic");
        const std::string strategy =
            isNull(a["strategy"]) ? "tensor" : get<std::string>(a["strategy"], where + ".strategy");
        if (strategy == "token" && dynamic) return {{"bits", bits}, {"mode", "dynamic_per_token"}};
        if (strategy == "tensor" && !dynamic)
            return {{"bits", bits}, {"mode", "static_per_tensor"}};
        throw bad(where + ".strategy", "activations '" + strategy + "'" +
                                           (dynamic ? " dynamic" : " static") +
                                           " are not supported (token dynamic, or tensor static)");
    }

    json kvSection(const YAML::Node& a, const std::string& where) {
        checkKeys(
            a, where,
            {"num_bits", "type", "symmetric", "strategy", "group_size", "dynamic", "observer"},
            {"observer_kwargs"});
        const int bits = a["num_bits"] ? get<int>(a["num_bits"], where + ".num_bits") : 8;
        const std::string type = a["type"] ? get<std::string>(a["type"], where + ".type") : "int";
        if (bits < 2 || bits > 16)
            throw bad(where + ".num_bits", std::to_string(bits) + " is out of lcw's 2..16");
        json kv = {{"k_bits", bits},
                   {"v_bits", bits},
                   {"k_granularity", "token"},
                   {"v_granularity", "token"}};
        if (type != "int")
            warn(where + ".type", "'" + type + "' KV cache read as int" + std::to_string(bits) +
                                      " (lcw's KV cache is asymmetric int per token group)");
        const std::string strategy =
            isNull(a["strategy"]) ? "tensor" : get<std::string>(a["strategy"], where + ".strategy");
        if (strategy == "group" && !isNull(a["group_size"]))
            kv["group_size"] = get<int64_t>(a["group_size"], where + ".group_size");
        else if (type == "int")
            warn(where + ".strategy",
                 "'" + strategy + "' read as lcw's per-token groups of 128 channels");
        return kv;
    }

    // One config group (or a preset scheme) -> one lcw rule.
    void schemeRule(const YAML::Node& scheme, const std::string& where, const json& targets,
                    const json& ignore, const json& method) {
        m_argsActorder.reset();
        json rule = {{"targets", targets}};
        if (!ignore.empty()) rule["ignore"] = ignore;
        if (!isNull(scheme["weights"])) {
            json w = weightSection(scheme["weights"], where + ".weights");
            for (auto it = method.begin(); it != method.end(); ++it) w[it.key()] = it.value();
            if (m_argsActorder) {
                if (!method.contains("method") || method["method"] != "gptq")
                    warn(where + ".weights.actorder", "ignored (only GPTQ orders columns)");
                else if (!m_modActorderSet) {
                    w["act_order"] = true;
                    const bool stat = *m_argsActorder == "static" || *m_argsActorder == "weight";
                    if (stat)
                        w["static_groups"] = true;
                    else
                        w.erase("static_groups");
                }
            }
            rule["weight"] = w;
        }
        if (!isNull(scheme["input_activations"]))
            rule["activation"] =
                activationSection(scheme["input_activations"], where + ".input_activations");
        if (!isNull(scheme["output_activations"]))
            throw bad(where + ".output_activations", "output activations are not supported");
        if (rule.size() == 1 + (ignore.empty() ? 0 : 1)) return; // nothing quantised
        m_rules.push_back(rule);
    }

    YAML::Node presetScheme(const std::string& name, const std::string& where) {
        std::string up;
        for (char c : name) up += char(std::toupper(static_cast<unsigned char>(c)));
        auto args = [](int bits, const char* type, bool sym, const char* strategy, int group,
                       bool dynamic) {
            YAML::Node a;
            a["num_bits"] = bits;
            a["type"] = type;
            a["symmetric"] = sym;
            a["strategy"] = strategy;
            if (group > 0) a["group_size"] = group;
            a["dynamic"] = dynamic;
            return a;
        };
        // compressed-tensors quantization/quant_scheme.py PRESET_SCHEMES
        YAML::Node s;
        if (up == "W8A16") {
            s["weights"] = args(8, "int", true, "channel", 0, false);
        } else if (up == "W4A16") {
            s["weights"] = args(4, "int", true, "group", 128, false);
        } else if (up == "W4A16_ASYM") {
            s["weights"] = args(4, "int", false, "group", 128, false);
        } else if (up == "W8A8" || up == "INT8") {
            s["weights"] = args(8, "int", true, "channel", 0, false);
            s["input_activations"] = args(8, "int", true, "token", 0, true);
        } else if (up == "W4A8") {
            s["weights"] = args(4, "int", true, "group", 128, false);
            s["input_activations"] = args(8, "int", true, "token", 0, true);
        } else if (up == "UNQUANTIZED") {
        } else {
            throw bad(where, "preset scheme '" + name +
                                 "' is not supported (W8A16, W4A16, W4A16_ASYM, W8A8, INT8, "
                                 "W4A8, UNQUANTIZED; fp8 / nvfp4 activations are not lcw's)");
        }
        return s;
    }

    void quantModifier(const std::string& where, const std::string& type, const YAML::Node& a) {
        json method = json::object();
        m_modActorderSet = false;
        if (type == "GPTQModifier") {
            checkKeys(a, where,
                      {"config_groups", "targets", "ignore", "scheme", "kv_cache_scheme",
                       "block_size", "dampening_frac", "actorder", "group", "index", "start", "end",
                       "update"},
                      {"offload_hessians", "weight_observer", "input_observer", "output_observer",
                       "observer", "bypass_divisibility_checks", "sequential_targets",
                       "sequential_update"});
            method["method"] = "gptq";
            if (a["block_size"])
                method["block_size"] = get<int64_t>(a["block_size"], where + ".block_size");
            if (!isNull(a["dampening_frac"]))
                method["damp"] = get<double>(a["dampening_frac"], where + ".dampening_frac");
            // GPTQModifier's default actorder is "static" (gptq/base.py): groups in column
            // order with scales fixed before the loop, lcw's static_groups.
            bool actOrder = true, staticGroups = true;
            if (a["actorder"]) {
                m_modActorderSet = true;
                if (isNull(a["actorder"])) {
                    actOrder = false;
                } else {
                    const std::string o = get<std::string>(a["actorder"], where + ".actorder");
                    if (o == "false" || o == "False") {
                        actOrder = false;
                    } else if (o == "group" || o == "dynamic" || o == "true" || o == "True") {
                        staticGroups = false;
                        warn(where + ".actorder",
                             "'" + o +
                                 "' read as lcw's act_order with the reference groups (the same "
                                 "groups; lcw chooses a group's scales when its first column is "
                                 "reached, llm-compressor before the loop)");
                    } else if (o != "static" && o != "weight") {
                        throw bad(where + ".actorder",
                                  "'" + o + "' (static, weight, group, dynamic or null)");
                    }
                }
            }
            method["act_order"] = actOrder;
            if (actOrder && staticGroups) method["static_groups"] = true;
        } else {
            checkKeys(a, where,
                      {"config_groups", "targets", "ignore", "scheme", "kv_cache_scheme", "group",
                       "index", "start", "end", "update"},
                      {"weight_observer", "input_observer", "output_observer", "observer",
                       "bypass_divisibility_checks"});
            if (m_pendingAwq) {
                method = {{"method", "awq"},
                          {"awq", {{"grid", m_awqGrid}, {"clip_search", false}}}};
                m_pendingAwq = false;
            }
        }
        bool linear = false;
        const json ignore =
            a["ignore"] ? patterns(a["ignore"], where + ".ignore", true, nullptr) : json::array();
        bool lmHeadIgnored = false;
        for (const auto& i : ignore) lmHeadIgnored |= i == "lm_head";
        auto finishTargets = [&](json t) {
            if (linear && !lmHeadIgnored) {
                bool has = false;
                for (const auto& x : t) has |= x == "lm_head";
                if (!has) t.push_back("lm_head"); // "Linear" includes the untied lm_head
            }
            return t;
        };
        if (!isNull(a["config_groups"])) {
            if (!a["config_groups"].IsMap())
                throw bad(where + ".config_groups", "expected a mapping of groups");
            for (const auto& g : a["config_groups"]) {
                const std::string gw = where + ".config_groups." + g.first.as<std::string>();
                checkKeys(g.second, gw,
                          {"targets", "weights", "input_activations", "output_activations"},
                          {"format"});
                if (!g.second["targets"]) throw bad(gw + ".targets", "missing");
                linear = false;
                json t =
                    finishTargets(patterns(g.second["targets"], gw + ".targets", false, &linear));
                schemeRule(g.second, gw, t, ignore, method);
            }
        }
        if (!isNull(a["scheme"])) {
            const YAML::Node& s = a["scheme"];
            linear = false;
            const json modTargets = finishTargets(
                a["targets"] ? patterns(a["targets"], where + ".targets", false, &linear)
                             : (linear = true, json::array({"*"})));
            if (s.IsScalar()) {
                schemeRule(presetScheme(s.Scalar(), where + ".scheme"), where + ".scheme",
                           finishTargets(modTargets), ignore, method);
            } else if (s.IsMap()) {
                for (const auto& p : s) {
                    const std::string pw = where + ".scheme." + p.first.as<std::string>();
                    linear = false;
                    json t = finishTargets(patterns(p.second, pw, false, &linear));
                    schemeRule(presetScheme(p.first.as<std::string>(), pw), pw, t, ignore, method);
                }
            } else {
                throw bad(where + ".scheme", "expected a preset name or {PRESET: targets}");
            }
        }
        if (!isNull(a["kv_cache_scheme"]))
            m_rules.push_back(
                {{"targets", {"*"}},
                 {"kv", kvSection(a["kv_cache_scheme"], where + ".kv_cache_scheme")}});
    }

    void pruningModifier(const std::string& where, const std::string& type, const YAML::Node& a) {
        json s;
        double sparsity = 0.5;
        std::string mask;
        if (type == "MagnitudePruningModifier") {
            checkKeys(a, where,
                      {"targets", "init_sparsity", "final_sparsity", "mask_structure", "group",
                       "index", "start", "end", "update"},
                      {"update_scheduler", "scheduler_args", "leave_enabled", "apply_globally"});
            s["method"] = "magnitude";
            if (!a["final_sparsity"]) throw bad(where + ".final_sparsity", "missing");
            sparsity = get<double>(a["final_sparsity"], where + ".final_sparsity");
            mask = a["mask_structure"]
                       ? get<std::string>(a["mask_structure"], where + ".mask_structure")
                       : "unstructured";
            if (mask == "unstructured") mask = "0:0";
        } else {
            checkKeys(a, where,
                      {"targets", "ignore", "sparsity", "mask_structure", "block_size",
                       "dampening_frac", "group", "index", "start", "end", "update"},
                      {"sparsity_profile", "owl_m", "owl_lmbda", "preserve_sparsity_mask",
                       "offload_hessians", "sequential_update", "sequential_targets"});
            s["method"] = type == "SparseGPTModifier" ? "sparsegpt" : "wanda";
            if (!a["sparsity"]) throw bad(where + ".sparsity", "missing");
            if (a["sparsity"].IsSequence())
                throw bad(where + ".sparsity", "per-layer sparsity lists are not supported");
            sparsity = get<double>(a["sparsity"], where + ".sparsity");
            mask = a["mask_structure"]
                       ? get<std::string>(a["mask_structure"], where + ".mask_structure")
                       : "0:0";
            if (type == "SparseGPTModifier") {
                if (a["block_size"])
                    s["block_size"] = get<int64_t>(a["block_size"], where + ".block_size");
                if (!isNull(a["dampening_frac"]))
                    s["damp"] = get<double>(a["dampening_frac"], where + ".dampening_frac");
            } else if (a["block_size"] || a["dampening_frac"]) {
                warn(where, "block_size / dampening_frac ignored (Wanda has neither)");
            }
        }
        const size_t colon = mask.find(':');
        if (colon == std::string::npos)
            throw bad(where + ".mask_structure",
                      "'" + mask + "' is not supported (N:M, 0:0 or unstructured)");
        int n = 0, m = 0;
        try {
            n = std::stoi(mask.substr(0, colon));
            m = std::stoi(mask.substr(colon + 1));
        } catch (const std::exception&) {
            throw bad(where + ".mask_structure", "'" + mask + "' is not N:M");
        }
        if (n == 0 && m == 0) {
            s["pattern"] = "unstructured";
            s["ratio"] = sparsity;
        } else {
            s["pattern"] = std::to_string(n) + ":" + std::to_string(m);
            if (m > 0 && std::abs(sparsity - (1.0 - double(n) / double(m))) > 1e-9)
                warn(where + ".sparsity", "ignored: the N:M pattern fixes the sparsity");
        }
        bool linear = false;
        json targets = a["targets"]
                           ? patterns(a["targets"], where + ".targets", false, &linear, true)
                           : json::array({"*"});
        json rule = {{"targets", targets}, {"sparsity", s}};
        if (a["ignore"]) {
            const json ig = patterns(a["ignore"], where + ".ignore", true, nullptr);
            if (!ig.empty()) rule["ignore"] = ig;
        }
        m_rules.push_back(rule);
    }

    void modifier(const std::string& where, const std::string& type, const YAML::Node& a) {
        if (!a.IsMap() && !a.IsNull()) throw bad(where, "modifier arguments must be a mapping");
        const YAML::Node args = a.IsNull() ? YAML::Node(YAML::NodeType::Map) : a;
        if (type == "QuantizationModifier" || type == "GPTQModifier") {
            if (m_pendingAwq && type == "GPTQModifier")
                throw bad(where, "AWQ followed by GPTQ is not supported by lcw (one method per "
                                 "layer)");
            quantModifier(where, type, args);
        } else if (type == "AWQModifier") {
            checkKeys(args, where,
                      {"n_grid", "duo_scaling", "mappings", "group", "index", "start", "end",
                       "update", "config_groups", "targets", "ignore", "scheme", "kv_cache_scheme"},
                      {"offload_device"});
            if (args["config_groups"] || args["scheme"] || args["kv_cache_scheme"] ||
                args["targets"])
                throw bad(where, "AWQModifier with quantisation arguments (the old API) is not "
                                 "supported: put them in a following QuantizationModifier");
            m_awqGrid = args["n_grid"] ? get<int>(args["n_grid"], where + ".n_grid") : 20;
            if (args["duo_scaling"]) {
                const std::string d = args["duo_scaling"].Scalar();
                if (d != "false" && d != "False")
                    warn(where + ".duo_scaling",
                         "'" + d + "' read as false (lcw's AWQ scales by activations only)");
            } else {
                warn(where + ".duo_scaling",
                     "absent (llm-compressor's default is true) read as false (lcw's AWQ scales "
                     "by activations only)");
            }
            if (args["mappings"])
                warn(where + ".mappings", "ignored (lcw uses each family's norm -> linear "
                                          "mappings)");
            m_pendingAwq = true;
            m_awqWhere = where;
        } else if (type == "SmoothQuantModifier") {
            checkKeys(args, where,
                      {"smoothing_strength", "mappings", "ignore", "algorithm", "group", "index",
                       "start", "end", "update"},
                      {"num_calibration_steps", "calibration_function"});
            if (args["algorithm"] && args["algorithm"].Scalar() != "smoothquant")
                throw bad(where + ".algorithm",
                          "'" + args["algorithm"].Scalar() + "' is not supported (smoothquant)");
            const double alpha =
                args["smoothing_strength"]
                    ? get<double>(args["smoothing_strength"], where + ".smoothing_strength")
                    : 0.5;
            if (args["mappings"])
                warn(where + ".mappings", "ignored (lcw uses each family's norm -> linear "
                                          "mappings)");
            json rule = {{"targets", {"*"}}, {"smoothquant", {{"alpha", alpha}}}};
            if (args["ignore"]) {
                const json ig = patterns(args["ignore"], where + ".ignore", true, nullptr);
                if (!ig.empty()) rule["ignore"] = ig;
            }
            m_rules.push_back(rule);
        } else if (type == "SparseGPTModifier" || type == "WandaPruningModifier" ||
                   type == "MagnitudePruningModifier") {
            pruningModifier(where, type, args);
        } else {
            throw bad(where, "modifier '" + type +
                                 "' is not supported by lcw (QuantizationModifier, GPTQModifier, "
                                 "AWQModifier, SmoothQuantModifier, SparseGPTModifier, "
                                 "WandaPruningModifier, MagnitudePruningModifier)");
        }
    }

    std::string m_path;
    std::string m_arch;
    json m_rules = json::array();
    std::vector<std::string> m_warnings;
    bool m_pendingAwq = false;
    int m_awqGrid = 20;
    std::string m_awqWhere;
    bool m_modActorderSet = false;
    std::optional<std::string> m_argsActorder;
};

} // namespace

LlmcImport importLlmCompressorRecipeWithWarnings(const std::string& path, std::string_view arch) {
    try {
        return Importer(path, arch).run();
    } catch (const YAML::Exception& ex) {
        // A node of an unexpected kind (a mapping where a name belongs, e.g. a `? {…}` complex
        // key) fails yaml-cpp's conversions: a format error naming the file and the place.
        const std::string where = ex.mark.is_null()
                                      ? std::string()
                                      : "line " + std::to_string(ex.mark.line + 1) + ", column " +
                                            std::to_string(ex.mark.column + 1) + ": ";
        throw FormatError(path, where + "unexpected YAML node (" + ex.msg +
                                    "): keys and names must be plain strings");
    }
}

compress::Recipe importLlmCompressorRecipe(const std::string& path, std::string_view arch) {
    return importLlmCompressorRecipeWithWarnings(path, arch).recipe;
}

} // namespace lcw::exporter
