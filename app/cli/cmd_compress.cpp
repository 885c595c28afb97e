// lcw-cli compress / recipe, and the --recipe / --preset / --overlay options of the evaluation
// commands.
#include "args.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/export/gguf_preset.h"
#include "core/model/model.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <cmath>
#include <cstdio>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;

/// Forwards to a base model (what applyRecipeOptions returns without recipe options).
class BaseRef final : public WeightSource {
public:
    explicit BaseRef(const Model& m) : m_model(m) {}
    const ModelSpec& spec() const override { return m_model.spec(); }
    const TensorView* find(std::string_view n) const override { return m_model.find(n); }
    std::string describeOrigin() const override { return m_model.describeOrigin(); }
    std::optional<std::string> firstNonFiniteWeight() const override {
        return m_model.firstNonFiniteWeight();
    }
    /// A checkpoint's declared input activations (compressed-tensors W8A8) run as in the model.
    const RuntimeQuant* runtimeQuant() const override { return m_model.runtimeQuant(); }

private:
    const Model& m_model;
};

compress::Recipe recipeFromArgs(const Args& a, const Model& model) {
    const bool r = a.has("--recipe"), p = a.has("--preset");
    if (r && p) throw UsageError{"give either --recipe or --preset, not both"};
    if (r) return compress::Recipe::load(*a.get("--recipe"));
    // lcw's presets and llama.cpp's mixes (Q4_K_M, Q4_K_M-GPTQ, ...) for this model.
    if (p) return presetRecipe(model, *a.get("--preset"));
    throw UsageError{"--recipe R.json or --preset NAME is required"};
}

std::unique_ptr<Model> openModelArg(const Args& a, size_t i, bool needTokenizer) {
    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = needTokenizer;
    return Model::load(a.positional(i, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"),
                       lo);
}

/// `v` in `format` when finite, else `otherwise`.
std::string fmtFinite(double v, const char* format, const char* otherwise) {
    char b[32];
    if (std::isfinite(v))
        std::snprintf(b, sizeof b, format, v);
    else
        std::snprintf(b, sizeof b, "%s", otherwise);
    return b;
}

std::string fmtDb(double v) {
    return fmtFinite(v, "%.2f", "inf");
}

std::string fmtRel(double v) {
    char b[32];
    if (std::isnan(v))
        std::snprintf(b, sizeof b, "-");
    else
        std::snprintf(b, sizeof b, "%.5f", v);
    return b;
}

json presetsJson() {
    json arr = json::array();
    for (const auto& p : compress::presets())
        arr.push_back(
            {{"name", p.name},
             {"description", p.description},
             {"recipe", parseOrderedJsonText(p.recipe.toJson().dump(), "preset " + p.name)}});
    return arr;
}

} // namespace

/// --calib FILE [--samples N] [--seq-len N] [--calib-sampling random|consecutive]
/// [--calib-seed N]; null without --calib (methods that need calibration then fail with the rule
/// and field that asked for it).
std::unique_ptr<compress::CalibrationSet> calibrationFromArgs(const Model& model, const Args& a) {
    if (!a.has("--calib")) {
        for (const char* o : {"--samples", "--seq-len", "--calib-sampling", "--calib-seed"})
            if (a.has(o)) throw UsageError{std::string(o) + " needs --calib FILE"};
        return nullptr;
    }
    compress::CalibrationOptions co;
    co.samples = a.getInt("--samples", co.samples);
    co.seqLen = a.getInt("--seq-len", co.seqLen);
    if (co.samples < 1) throw UsageError{"--samples must be >= 1"};
    if (co.seqLen < 2) throw UsageError{"--seq-len must be >= 2"};
    const std::string sampling = a.getOr("--calib-sampling", "random");
    if (sampling == "consecutive")
        co.sampling = compress::CalibrationSampling::Consecutive;
    else if (sampling != "random")
        throw UsageError{"--calib-sampling must be random or consecutive, got '" + sampling + "'"};
    if (a.has("--calib-seed")) {
        if (co.sampling != compress::CalibrationSampling::Random)
            throw UsageError{"--calib-seed is for --calib-sampling random"};
        const long long seed = a.getInt("--calib-seed", 0);
        if (seed < 0) throw UsageError{"--calib-seed must be >= 0"};
        co.seed = uint64_t(seed);
    }
    return std::make_unique<compress::CalibrationSet>(
        compress::loadCalibration(model, *a.get("--calib"), co));
}

std::unique_ptr<WeightSource> applyRecipeOptions(const Model& model, const Args& a) {
    const int n = int(a.has("--recipe")) + int(a.has("--preset")) + int(a.has("--overlay"));
    if (n > 1) throw UsageError{"give only one of --recipe, --preset and --overlay"};
    if (n == 0) return std::make_unique<BaseRef>(model);
    if (a.has("--overlay")) return compress::CompressedModel::load(*a.get("--overlay"), model);
    const compress::Recipe recipe = recipeFromArgs(a, model);
    const auto cal = calibrationFromArgs(model, a);
    compress::CompressOptions co;
    co.calibration = cal.get();
    TerminalProgress progress("compress", !a.flag("--quiet"));
    compress::CompressResult r = compress::compress(model, recipe, progress, co);
    progress.finish();
    if (r.status == Status::Cancelled) throw Error("cancelled while applying the recipe");
    for (const auto& w : r.plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (!a.flag("--quiet")) {
        const auto q = r.model->compressedSize();
        std::fprintf(stderr,
                     "recipe '%s': %zu layers quantised, %.3f bits/weight; %zu activation "
                     "inputs and %zu KV caches quantised at run time, %zu with an eviction "
                     "policy\n",
                     recipe.name.c_str(), r.layers.size(), q.bitsPerWeight(),
                     r.plan.activations.size(), r.plan.kv.size(), r.plan.kvPolicy.size());
    }
    return std::move(r.model);
}

namespace {

/// compress --json: the report, the recipe's name, the calibration and where it was saved.
json compressJson(const compress::CompressResult& r, const compress::Recipe& recipe,
                  const compress::CalibrationSet* cal, const std::optional<std::string>& saved) {
    json j = compressReportJson(r);
    j["recipe"] = recipe.name;
    if (cal)
        j["calibration"] = {{"source", cal->source},
                            {"samples", cal->samples.size()},
                            {"sampling", compress::calibrationSamplingName(cal->sampling)},
                            {"seq_len", cal->seqLen()},
                            {"tokens", cal->tokens()},
                            {"bos_first", cal->bosFirst}};
    if (cal && cal->sampling == compress::CalibrationSampling::Random)
        j["calibration"]["seed"] = cal->seed;
    if (saved) j["saved"] = *saved;
    return j;
}

/// Whether any layer went through low-rank, sparsity or structured stages (the wider table).
bool anyStaged(const compress::CompressResult& r) {
    bool staged = false;
    for (const auto& l : r.layers)
        staged |= l.lowrank.applied || l.sparsity.applied || !l.structured.empty();
    return staged;
}

std::string outStr(double v) {
    return fmtFinite(v, "%.5f", "-");
}

/// A layer of the plain table; OmniQuant's / EfficientQAT's block loss is printed once per block.
void printPlainLayerRow(const compress::LayerReport& l, const char* shape, double& omniBlockLoss) {
    std::printf("%-28s %-14s %-22s %5d %8.3f %12.4e %9s %9.5f %9s %8.2f\n", l.name.c_str(), shape,
                l.scheme.c_str(), l.rule, l.bitsPerWeight, l.error.mse,
                fmtDb(l.error.sqnrDb).c_str(), l.error.relError, fmtRel(l.outputRelError).c_str(),
                l.seconds * 1e3);
    if (l.details.contains("note"))
        std::printf("  note: %s\n", l.details["note"].get<std::string>().c_str());
    if (l.details.contains("block_loss_start") &&
        l.details["block_loss_start"].get<double>() != omniBlockLoss) {
        omniBlockLoss = l.details["block_loss_start"].get<double>();
        const bool eqat = l.details.contains("efficientqat_epochs");
        std::printf("  %s block output MSE: %.4e (%s) -> %.4e (epoch %d)\n",
                    eqat ? "efficientqat" : "omniquant", omniBlockLoss,
                    eqat ? "RTN grid" : "no clipping", l.details["block_loss_end"].get<double>(),
                    l.details["best_epoch"].get<int>());
    }
}

/// A layer of the staged table: every stage's output error.
void printStagedLayerRow(const compress::LayerReport& l, const char* shape) {
    char sp[16] = "-", rk[16] = "-";
    if (l.sparsity.applied) std::snprintf(sp, sizeof sp, "%.4f", l.sparsityRatio);
    if (l.lowrank.applied) std::snprintf(rk, sizeof rk, "%lld", (long long)l.rank);
    const std::string scheme =
        l.structured.empty() ? l.scheme : l.scheme + " [" + l.structured + "]";
    std::printf("%-24s %-11s %-34s %4d %7.3f %9.5f %8s %5s %9s %9s %9s %9s %7.2f\n", l.name.c_str(),
                shape, scheme.c_str(), l.rule, l.bitsPerWeight, l.error.relError, sp, rk,
                outStr(l.lowrank.applied ? l.lowrank.outputRelError : NAN).c_str(),
                outStr(l.sparsity.applied ? l.sparsity.outputRelError : NAN).c_str(),
                outStr(l.quant.applied ? l.quant.outputRelError : NAN).c_str(),
                outStr(l.outputRelError).c_str(), l.seconds * 1e3);
}

/// The per-layer table, then the structurally pruned blocks.
void printLayerTable(const compress::CompressResult& r) {
    const bool staged = anyStaged(r);
    if (!staged) {
        std::printf("%-28s %-14s %-22s %5s %8s %12s %9s %9s %9s %8s\n", "layer", "shape", "scheme",
                    "rule", "bits/w", "mse", "sqnr_dB", "rel_err", "out_err", "ms");
    } else {
        std::printf("%-24s %-11s %-34s %4s %7s %9s %8s %5s %9s %9s %9s %9s %7s\n", "layer", "shape",
                    "scheme", "rule", "bits/w", "rel_err", "sparsity", "rank", "lr_out",
                    "prune_out", "quant_out", "out_err", "ms");
    }
    double omniBlockLoss = -1;
    for (const auto& l : r.layers) {
        char shape[48];
        std::snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)l.shape[0],
                      (long long)l.shape[1]);
        if (!staged)
            printPlainLayerRow(l, shape, omniBlockLoss);
        else
            printStagedLayerRow(l, shape);
    }
    for (const auto& s : r.structured)
        std::printf("structured layers.%d (%s): MLP channels %lld/%lld, heads %lld/%lld\n", s.layer,
                    s.score.c_str(), (long long)(s.mlpTotal ? s.mlpKept : 0), (long long)s.mlpTotal,
                    (long long)(s.headsTotal ? s.headsKept : 0), (long long)s.headsTotal);
}

/// The activation inputs and KV caches quantised at run time.
void printRuntimeQuantTables(const compress::CompressResult& r) {
    if (!r.plan.activations.empty()) {
        std::printf("\n%-28s %-26s %5s %10s %9s\n", "activation input", "scheme", "rule", "abs_max",
                    "outliers");
        const RuntimeQuant* rq = r.model->runtimeQuant();
        for (const auto& ap : r.plan.activations) {
            const ActQuantSpec* s = rq ? rq->activation(ap.name) : nullptr;
            char am[32] = "-";
            if (s && !s->perToken) std::snprintf(am, sizeof am, "%.4g", s->absMax);
            std::printf("%-28s %-26s %5d %10s %9zu\n", ap.name.c_str(), ap.act.describe().c_str(),
                        ap.rule, am, s ? s->outlierChannels.size() : size_t(0));
        }
    }
    if (!r.plan.kv.empty()) {
        std::printf("\n%-10s %-40s %5s %12s %12s\n", "kv cache", "scheme", "rule", "K bits/val",
                    "V bits/val");
        for (const auto& kp : r.plan.kv)
            std::printf("layers.%-3lld %-40s %5d %12.3f %12.3f\n", (long long)kp.layer,
                        kp.kv.describe().c_str(), kp.rule,
                        compress::KvSettings::bitsPerValue(kp.kv.kBits, kp.kv.kGranularity,
                                                           kp.kv.groupSize, kp.width),
                        compress::KvSettings::bitsPerValue(kp.kv.vBits, kp.kv.vGranularity,
                                                           kp.kv.groupSize, kp.width));
    }
    if (!r.plan.kvPolicy.empty()) {
        std::printf("\n%-10s %-58s %5s\n", "kv policy", "eviction", "rule");
        for (const auto& pp : r.plan.kvPolicy)
            std::printf("layers.%-3lld %-58s %5d\n", (long long)pp.layer, pp.describe().c_str(),
                        pp.rule);
    }
}

/// The linears whose inputs are top-K sparsified, and the MACs that leaves (as planned).
void printActivationSparsity(const compress::CompressResult& r) {
    if (r.plan.activationSparsity.empty()) return;
    std::printf("\n%-28s %8s %12s %5s\n", "top-K sparsified input", "topk", "kept/cols", "rule");
    for (const auto& a : r.plan.activationSparsity) {
        char kc[48];
        std::snprintf(kc, sizeof kc, "%lld/%lld", (long long)a.kept, (long long)a.cols);
        std::printf("%-28s %8.4f %12s %5d\n", a.name.c_str(), a.topk, kc, a.rule);
    }
    const json m = compressReportJson(r).value("activation_sparsity_macs", json());
    if (m.is_object())
        std::printf("MACs per token (planned): %lld of %lld in the sparsified linears; "
                    "%lld of %lld (%.1f %%) in all linears\n",
                    (long long)m["sparse_linears_kept_per_token"].get<int64_t>(),
                    (long long)m["sparse_linears_dense_per_token"].get<int64_t>(),
                    (long long)m["model_kept_per_token"].get<int64_t>(),
                    (long long)m["model_dense_per_token"].get<int64_t>(),
                    100.0 * m["model_kept_fraction"].get<double>());
}

/// Sizes of the quantised layers and of the whole model, calibration, time and the overlay.
void printCompressTotals(const compress::CompressResult& r, const Model& model,
                         const compress::CalibrationSet* cal,
                         const std::optional<std::string>& saved) {
    const auto q = r.model->compressedSize(), tot = r.model->totalSize();
    std::printf("\nquantised: %lld weights, %.4f bits/weight, %llu bytes\n", (long long)q.params,
                q.bitsPerWeight(), (unsigned long long)q.bytes());
    std::printf("model:     %lld weights, %.4f bits/weight, %llu bytes (base %llu bytes)\n",
                (long long)tot.params, tot.bitsPerWeight(), (unsigned long long)tot.bytes(),
                (unsigned long long)model.storedBytes());
    int64_t baseParams = 0;
    for (const auto& t : model.tensors()) baseParams += t.numel();
    if (tot.params != baseParams)
        std::printf("params:    %lld of the base's %lld; %.4f bits per base weight\n",
                    (long long)tot.params, (long long)baseParams,
                    double(tot.bits) / double(baseParams));
    if (const auto& rot = r.rotation; rot.is_object())
        std::printf("rotation:  spinquant, %d steps x %d windows, loss %.4f -> %.4f nats/token "
                    "(%s), %.1f s\n",
                    rot["steps"].get<int>(), rot["batch"].get<int>(),
                    rot["loss_start"].get<double>(), rot["loss_end"].get<double>(),
                    rot["kept"].get<bool>() ? "learned rotation kept"
                                            : "not lower: the Hadamard start kept",
                    rot["seconds"].get<double>());
    if (cal)
        std::printf("calibration: %s, %zu samples x %lld tokens\n", cal->source.c_str(),
                    cal->samples.size(), (long long)cal->seqLen());
    std::printf("time:      %.3f s\n", r.seconds);
    if (saved) std::printf("saved overlay to %s\n", saved->c_str());
}

} // namespace

int cmdCompress(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--recipe", "--preset", "--save", "--calib", "--samples",
            "--seq-len", "--calib-sampling", "--calib-seed"},
           {"--quiet", "--json"});
    applyThreads(a);
    if (!a.has("--recipe") && !a.has("--preset"))
        throw UsageError{"--recipe R.json or --preset NAME is required"};
    auto model = openModelArg(a, 0, a.has("--calib"));
    const compress::Recipe recipe = recipeFromArgs(a, *model);
    const auto cal = calibrationFromArgs(*model, a);
    compress::CompressOptions co;
    co.calibration = cal.get();
    TerminalProgress progress("compress", !a.flag("--quiet"));
    compress::CompressResult r = compress::compress(*model, recipe, progress, co);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    const auto saved = a.get("--save");
    if (saved) r.model->save(*saved);
    if (a.flag("--json")) {
        std::printf("%s\n", compressJson(r, recipe, cal.get(), saved).dump(2).c_str());
        return 0;
    }
    for (const auto& w : r.plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    printLayerTable(r);
    printRuntimeQuantTables(r);
    printActivationSparsity(r);
    printCompressTotals(r, *model, cal.get(), saved);
    return 0;
}

int cmdRecipe(const std::vector<std::string>& argv) {
    if (!argv.empty() && argv[0] == "import") return cmdRecipeImport(argv);
    Args a(argv, {"--tokenizer", "--threads"}, {"--quiet", "--json"});
    const std::string sub = a.positional(0, "SUBCOMMAND (presets or check)");
    const bool asJson = a.flag("--json");
    if (sub == "presets") {
        if (asJson) {
            std::printf("%s\n", presetsJson().dump(2).c_str());
            return 0;
        }
        for (const auto& p : compress::presets())
            std::printf("%-12s %s\n", p.name.c_str(), p.description.c_str());
        std::string names;
        for (const auto& n : llamaPresetNames()) names += (names.empty() ? "" : ", ") + n;
        std::printf("\nllama.cpp presets (llama-quantize's per-tensor types for the model at hand; "
                    "these names win over lcw's of the same name):\n  %s\n  add -GPTQ or -AWQ "
                    "(e.g. Q4_K_M-GPTQ) for the same types with codes chosen on calibration data\n",
                    names.c_str());
        return 0;
    }
    if (sub != "check")
        throw UsageError{"unknown recipe subcommand '" + sub + "' (presets, check, import)"};
    const std::string path = a.positional(1, "R.json");
    json j = {{"recipe", path}};
    // With --json an invalid recipe still prints one object (valid: false) before exit 1.
    auto printInvalid = [&](const compress::RecipeError& e) {
        if (!asJson) return;
        j["valid"] = false;
        j["error"] = e.what();
        j["rule"] = e.rule();
        j["field"] = e.field();
        std::printf("%s\n", j.dump(2).c_str());
    };
    compress::Recipe recipe;
    try {
        recipe = compress::Recipe::load(path);
    } catch (const compress::RecipeError& e) {
        printInvalid(e);
        throw;
    }
    j["name"] = recipe.name;
    j["rules"] = recipe.rules.size();
    if (a.positionals().size() > 2) {
        auto model = openModelArg(a, 2, false);
        compress::Plan plan;
        try {
            compress::PlanOptions po;
            po.hasCalibration = model->hasTokenizer();
            plan = compress::planRecipe(recipe, *model, po);
        } catch (const compress::RecipeError& e) {
            printInvalid(e);
            throw;
        }
        json matches = json::array();
        for (const auto& m : plan.matches)
            matches.push_back(
                {{"rule", m.rule}, {"matched", m.layers.size()}, {"layers", m.layers}});
        json layers = json::array();
        for (const auto& l : plan.layers)
            layers.push_back({{"name", l.name},
                              {"scheme", l.describe()},
                              {"rule", l.origin.count("weight") ? l.origin.at("weight") : -1}});
        json acts = json::array(), kvs = json::array();
        for (const auto& ap : plan.activations)
            acts.push_back({{"name", ap.name}, {"scheme", ap.act.describe()}, {"rule", ap.rule}});
        for (const auto& kp : plan.kv)
            kvs.push_back({{"layer", kp.layer}, {"scheme", kp.kv.describe()}, {"rule", kp.rule}});
        j["matches"] = matches;
        j["layers"] = layers;
        j["activations"] = acts;
        j["kv"] = kvs;
        json structured = json::array();
        for (const auto& b : plan.structured)
            structured.push_back({{"layer", b.layer},
                                  {"mlp_ratio", b.settings.mlpRatio},
                                  {"head_ratio", b.settings.headRatio},
                                  {"score", compress::structuredScoreName(b.settings.score)},
                                  {"mlp_rule", b.mlpRule},
                                  {"head_rule", b.headRule}});
        j["structured"] = structured;
        j["warnings"] = plan.warnings;
        j["valid"] = true;
        if (asJson) {
            std::printf("%s\n", j.dump(2).c_str());
            return 0;
        }
        std::printf("%s: valid (%zu rules)\n", path.c_str(), recipe.rules.size());
        for (const auto& m : plan.matches) {
            std::printf("rule %d: %zu layers", m.rule, m.layers.size());
            for (size_t i = 0; i < m.layers.size() && i < 6; ++i)
                std::printf("%s%s", i ? ", " : " (", m.layers[i].c_str());
            if (!m.layers.empty()) std::printf("%s)", m.layers.size() > 6 ? ", ..." : "");
            std::printf("\n");
        }
        for (const auto& l : plan.layers)
            std::printf("  %-30s %s\n", l.name.c_str(), l.describe().c_str());
        for (const auto& ap : plan.activations)
            std::printf("  %-30s input %s\n", ap.name.c_str(), ap.act.describe().c_str());
        for (const auto& kp : plan.kv)
            std::printf("  layers.%-23lld kv %s\n", (long long)kp.layer, kp.kv.describe().c_str());
        for (const auto& b : plan.structured)
            std::printf("  layers.%-23d structured: %g of MLP channels, %g of KV groups (%s)\n",
                        b.layer, b.settings.mlpRatio, b.settings.headRatio,
                        compress::structuredScoreName(b.settings.score));
        for (const auto& w : plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
        return 0;
    }
    j["valid"] = true;
    if (asJson)
        std::printf("%s\n", j.dump(2).c_str());
    else
        std::printf("%s: valid (%zu rules)\n", path.c_str(), recipe.rules.size());
    return 0;
}

} // namespace lcw::cli
