// lcw-cli sensitivity (one layer or block quantised at a time, ranked by KLD) and
// lcw-cli autotune (mixed precision within a bits/weight budget from a sensitivity scan).
#include "commands.h"

#include "args.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/eval/autotune.h"
#include "core/eval/sensitivity.h"
#include "core/model/model.h"
#include "core/stats/activation_stats.h"
#include "core/stats/fingerprint.h"
#include "core/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;

std::vector<std::string> splitList(const std::vector<std::string>& values) {
    std::vector<std::string> out;
    for (const auto& v : values) {
        size_t b = 0;
        while (b <= v.size()) {
            const size_t e = std::min(v.find(',', b), v.size());
            if (e > b) out.push_back(v.substr(b, e - b));
            b = e + 1;
        }
    }
    return out;
}

/// What sensitivity and autotune share: the model, the text and the evaluation options.
struct EvalSetup {
    std::unique_ptr<Model> model;
    std::string textPath;
    std::vector<int32_t> tokens;
    PerplexityOptions po;
};

EvalSetup setup(const Args& a) {
    applyThreads(a);
    EvalSetup s;
    s.textPath = a.getOr("--text", stats::builtinCalibrationPath());
    s.po.ctx = a.getInt("--ctx", 256);
    if (s.po.ctx < 4) throw UsageError{"--ctx must be at least 4"};
    s.po.batch = s.po.ctx;
    s.po.exactActivations = a.flag("--exact-activations");
    s.po.maxChunks = a.getInt("--chunks", 8);
    if (s.po.maxChunks < 0) throw UsageError{"--chunks must be >= 0"};
    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    s.model =
        Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"), lo);
    s.po.bosId = s.model->tokenizer().bosId();
    s.tokens = s.model->tokenizer().encode(readTextFile(s.textPath), true);
    return s;
}

SensitivityGranularity granularityOption(const Args& a) {
    const std::string g = a.getOr("--granularity", "layer");
    if (g == "layer") return SensitivityGranularity::Layer;
    if (g == "block") return SensitivityGranularity::Block;
    throw UsageError{"--granularity must be 'layer' or 'block', got '" + g + "'"};
}

void printScan(const SensitivityScan& s, long long top) {
    std::printf("granularity: %s, ctx %lld, %lld chunks, %lld scored tokens, baseline PPL %.4f\n",
                sensitivityGranularityName(s.granularity), (long long)s.ctx, (long long)s.chunks,
                (long long)s.scoredTokens, s.baselinePpl);
    for (const auto& ss : s.schemes) {
        std::printf("\nscheme %s\n", ss.scheme.name.c_str());
        std::printf("  %4s  %-22s %22s %16s %8s %12s\n", "rank", "layer", "KLD ± s.e.",
                    "same top %", "bpw", "Δbits");
        for (const auto& e : ss.entries) {
            if (top > 0 && e.rank > top) break;
            char kld[48], st[32];
            std::snprintf(kld, sizeof kld, "%.6f ± %.6f", e.stats.kld.mean, e.stats.kld.meanError);
            std::snprintf(st, sizeof st, "%.2f ± %.2f", e.stats.sameTop * 100,
                          e.stats.sameTopError * 100);
            // ± is 2 bytes for one column: pad by hand.
            std::printf("  %4d  %-22s %23s %17s %8.3f %12.0f%s%s\n", e.rank, e.target.c_str(), kld,
                        st, e.bitsPerWeight(), e.deltaBits(),
                        e.note.empty() ? "" : "  note: ", e.note.c_str());
        }
        for (const auto& [t, why] : ss.skipped)
            std::printf("  skipped %s: %s\n", t.c_str(), why.c_str());
    }
    std::printf("\nKLD: mean KLD(baseline || model with only that %s quantised) per scored token; "
                "Δbits: change of the model's stored bits.\n",
                sensitivityGranularityName(s.granularity));
}

} // namespace

// --------------------------------------------------------------------------------- sensitivity
int cmdSensitivity(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--scheme", "--granularity", "--text", "--ctx", "--chunks",
            "--out", "--top"},
           {"--quiet", "--json", "--exact-activations"});
    const auto names = splitList(a.getAll("--scheme"));
    if (names.empty())
        throw UsageError{"--scheme PRESET is required (see 'lcw-cli recipe presets')"};
    std::vector<WeightScheme> schemes;
    for (const auto& n : names) schemes.push_back(schemeFromPreset(n));
    SensitivityOptions so;
    so.granularity = granularityOption(a);
    const long long top = a.getInt("--top", 0);
    EvalSetup s = setup(a);
    so.eval = s.po;
    TerminalProgress progress("sensitivity", !a.flag("--quiet"));
    const SensitivityScan scan = scanSensitivity(*s.model, schemes, s.tokens, so, progress);
    progress.finish();
    if (scan.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    json j = sensitivityToJson(scan);
    j["text_file"] = s.textPath;
    if (const auto out = a.get("--out")) {
        writeFileAtomic(*out, j.dump(1) + "\n");
        if (!a.flag("--json")) std::fprintf(stderr, "wrote %s\n", out->c_str());
    }
    if (a.flag("--json")) {
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("model: %s\ntext:  %s\n", s.model->path().c_str(), s.textPath.c_str());
    printScan(scan, top);
    std::printf("time:  %.2f s\n", scan.seconds);
    return 0;
}

// ------------------------------------------------------------------------------------ autotune
int cmdAutotune(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--budget-bpw", "--model-budget-bpw", "--out", "--schemes",
            "--scan", "--uniform", "--granularity", "--text", "--ctx", "--chunks", "--name"},
           {"--quiet", "--json", "--no-verify", "--exact-activations"});
    // --budget-bpw: bits/weight of the quantised linears (as before); --model-budget-bpw: the
    // workbench's budget, whole-model stored bits per base weight (the recipe editor's target,
    // compress --json totals.bits_per_base_weight). Exactly one.
    const bool modelBudget = a.get("--model-budget-bpw").has_value();
    if (modelBudget == a.get("--budget-bpw").has_value())
        throw UsageError{"one of --budget-bpw B (quantised layers) or --model-budget-bpw B (whole "
                         "model) is required"};
    const char* budgetFlag = modelBudget ? "--model-budget-bpw" : "--budget-bpw";
    const double budgetArg = a.getDouble(budgetFlag, 0);
    if (!(budgetArg > 0)) throw UsageError{std::string(budgetFlag) + " must be > 0"};
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out R.json is required"};
    auto schemeNames = splitList(a.getAll("--schemes"));
    if (schemeNames.empty()) schemeNames = {"W8A16", "W4A16-g64", "W3A16-g64", "W2A16-g32"};
    for (auto& n : schemeNames) n = schemeFromPreset(n).name; // presets and GGUF types
    std::string uniform = a.getOr("--uniform", "");
    if (!uniform.empty()) uniform = schemeFromPreset(uniform).name;
    const bool quiet = a.flag("--quiet");
    EvalSetup s = setup(a);

    SensitivityScan scan;
    std::string scanSource = "computed";
    if (const auto scanPath = a.get("--scan")) {
        scan = sensitivityFromJson(readJsonFile(*scanPath), *scanPath);
        scanSource = *scanPath;
        if (scan.baseFingerprint != stats::modelFingerprint(*s.model))
            throw Error("--scan " + *scanPath + " was made on another model (" + scan.model +
                        "); its layer sizes and KLDs do not apply to " + s.model->path());
        std::vector<std::string> missing;
        for (const auto& n : schemeNames)
            if (!scan.find(n)) missing.push_back(n);
        if (!uniform.empty() && !scan.find(uniform)) missing.push_back(uniform);
        if (!missing.empty()) {
            std::string l;
            for (const auto& m : missing) l += (l.empty() ? "" : ",") + m;
            throw Error("--scan " + *scanPath + " has no scan of " + l +
                        " (make one with: lcw-cli sensitivity MODEL --scheme " + l + " --out ...)");
        }
    } else {
        std::vector<WeightScheme> schemes;
        std::set<std::string> seen;
        for (const auto& n : schemeNames)
            if (seen.insert(n).second) schemes.push_back(schemeFromPreset(n));
        if (!uniform.empty() && seen.insert(uniform).second)
            schemes.push_back(schemeFromPreset(uniform));
        SensitivityOptions so;
        so.granularity = granularityOption(a);
        so.eval = s.po;
        TerminalProgress progress("sensitivity", !quiet);
        scan = scanSensitivity(*s.model, schemes, s.tokens, so, progress);
        progress.finish();
        if (scan.status == Status::Cancelled) {
            std::fprintf(stderr, "cancelled\n");
            return 130;
        }
    }

    AutotunePlan plan =
        modelBudget ? planAutotuneModel(scan, *s.model, budgetArg, schemeNames, uniform,
                                        a.getOr("--name", ""))
                    : planAutotune(scan, budgetArg, schemeNames, uniform, a.getOr("--name", ""));
    if (!modelBudget) {
        // the whole-model figures of a quantised-layer budget, reported beside it
        const ModelBudgetBase mb = modelBudgetBase(scan, *s.model);
        plan.modelParams = mb.modelParams;
        plan.otherBits = mb.otherBits;
    }
    // budget_bpw keeps its meaning: the quantised layers' budget (derived from a model budget)
    const double budget = plan.budgetBpw;
    writeFileAtomic(*out, plan.recipe.toJson().dump(2) + "\n");

    AutotuneVerification v;
    const bool verify = !a.flag("--no-verify");
    if (verify) {
        TerminalProgress progress("verify", !quiet);
        v = verifyAutotune(*s.model, plan, s.tokens, s.po, progress);
        progress.finish();
        if (v.status == Status::Cancelled) {
            std::fprintf(stderr, "cancelled (the recipe was written to %s)\n", out->c_str());
            return 130;
        }
    }

    if (a.flag("--json")) {
        json choices = json::array();
        for (const auto& c : plan.choices)
            choices.push_back({{"target", c.target},
                               {"scheme", c.scheme},
                               {"params", c.params},
                               {"bits", c.bits},
                               {"bits_per_weight", double(c.bits) / double(c.params)},
                               {"estimated_kld", c.estimatedKld}});
        auto measureJson = [&](const AutotuneMeasure& m, const std::string& name, double planBpw,
                               double est) {
            json j = {{"name", name},
                      {"bits_per_weight", verify ? m.bitsPerWeight : planBpw},
                      {"estimated_kld", est}};
            if (verify && m.measuredValid) {
                j["measured_kld"] = m.measured.kld.mean;
                j["measured_kld_se"] = m.measured.kld.meanError;
                j["ppl"] = m.measured.ppl;
                j["ppl_ratio"] = m.measured.pplRatio;
                j["same_top_percent"] = m.measured.sameTop * 100;
            }
            return j;
        };
        json j = {{"model", s.model->path()},
                  {"text_file", s.textPath},
                  {"scan", scanSource},
                  {"ctx", s.po.ctx},
                  {"chunks", scan.chunks},
                  {"budget_bpw", budget},
                  {"budget_definition",
                   "stored bits of the quantised linears (codes, scales, zeros) per weight: "
                   "compress --json totals.quantized_bits_per_weight"},
                  {"quantized_params", plan.params},
                  {"budget_bits", plan.budgetBits},
                  {"bits", plan.bits},
                  {"bits_per_weight", plan.bitsPerWeight()},
                  {"knapsack_unit_bits", plan.knapsackUnit},
                  {"budget_mode", modelBudget ? "model" : "quantized_layers"},
                  {"model_budget_bpw", modelBudget ? json(budgetArg) : json(nullptr)},
                  {"model_budget_definition",
                   "stored bits of every tensor per weight of the base model: compress --json "
                   "totals.bits_per_base_weight, the recipe editor's budget"},
                  {"model_params", plan.modelParams},
                  {"model_bits", plan.otherBits + plan.bits},
                  {"model_bits_per_weight", plan.modelBitsPerWeight()},
                  {"recipe", *out},
                  {"schemes", schemeNames},
                  {"choices", choices},
                  {"autotuned", measureJson(v.autotuned, plan.recipe.name, plan.bitsPerWeight(),
                                            plan.estimatedKld)},
                  {"uniform", plan.uniformScheme.empty()
                                  ? json(nullptr)
                                  : measureJson(v.uniform, "uniform " + plan.uniformScheme,
                                                double(plan.uniformBits) / double(plan.params),
                                                plan.uniformEstimatedKld)},
                  {"baseline_ppl", verify ? v.baselinePpl : scan.baselinePpl}};
        if (!plan.uniformScheme.empty()) {
            j["uniform"]["scheme"] = plan.uniformScheme;
            j["uniform"]["within_budget"] = plan.uniformBits <= plan.budgetBits;
        }
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }

    std::printf("model:   %s\nbudget:  %.4f bits/weight over the quantised linears (%lld weights, "
                "%llu bits)",
                s.model->path().c_str(), budget, (long long)plan.params,
                (unsigned long long)plan.budgetBits);
    if (modelBudget)
        std::printf(" = %.4f bits/weight of the whole model (%lld weights)", budgetArg,
                    (long long)plan.modelParams);
    std::printf("\nplanned: %.4f bits/weight of the whole model, %.4f of the quantised linears\n"
                "scan:    %s (%s granularity, %lld chunks of %lld)\n\n",
                plan.modelBitsPerWeight(), plan.bitsPerWeight(), scanSource.c_str(),
                sensitivityGranularityName(scan.granularity), (long long)scan.chunks,
                (long long)scan.ctx);
    std::printf("  %-22s %-12s %8s %14s\n", "layer", "scheme", "bpw", "est. KLD");
    for (const auto& c : plan.choices)
        std::printf("  %-22s %-12s %8.3f %14.6f\n", c.target.c_str(), c.scheme.c_str(),
                    double(c.bits) / double(c.params), c.estimatedKld);
    std::printf("\nwrote %s (%zu rules)\n\n", out->c_str(), plan.recipe.rules.size());
    std::printf("  %-24s %10s %14s %22s %12s %10s\n", "recipe", "bpw", "est. KLD", "measured KLD",
                "PPL ratio", "same top");
    auto row = [&](const std::string& name, double bpw, double est, const AutotuneMeasure& m) {
        if (verify && m.measuredValid) {
            char kld[48];
            std::snprintf(kld, sizeof kld, "%.6f ± %.6f", m.measured.kld.mean,
                          m.measured.kld.meanError);
            std::printf("  %-24s %10.4f %14.6f %23s %12.5f %9.2f%%\n", name.c_str(), bpw, est, kld,
                        m.measured.pplRatio, m.measured.sameTop * 100);
        } else {
            std::printf("  %-24s %10.4f %14.6f %22s %12s %10s\n", name.c_str(), bpw, est, "-", "-",
                        "-");
        }
    };
    row(plan.recipe.name, verify ? v.autotuned.bitsPerWeight : plan.bitsPerWeight(),
        plan.estimatedKld, v.autotuned);
    if (!plan.uniformScheme.empty())
        row("uniform " + plan.uniformScheme,
            verify ? v.uniform.bitsPerWeight : double(plan.uniformBits) / double(plan.params),
            plan.uniformEstimatedKld, v.uniform);
    else
        std::printf("  (no uniform candidate scheme fits the budget)\n");
    if (!plan.uniformScheme.empty() && plan.uniformBits > plan.budgetBits)
        std::printf("  note: uniform %s (--uniform) is above the budget\n",
                    plan.uniformScheme.c_str());
    std::printf("\nbpw: compress() totals.quantized_bits_per_weight; est. KLD: sum of the scan's "
                "per-layer KLDs; measured: one evaluation of the whole recipe.\n");
    return 0;
}

} // namespace lcw::cli
