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
namespace {

/// lcw-cli autotune's settings, checked.
struct AutotuneSettings {
    // --budget-bpw: bits/weight of the quantised linears (as before); --model-budget-bpw: the
    // workbench's budget, whole-model stored bits per base weight (the recipe editor's target,
    // compress --json totals.bits_per_base_weight). Exactly one.
    bool modelBudget = false;
    double budgetArg = 0;
    std::string out;
    std::vector<std::string> schemeNames;
    std::string uniform;
    bool quiet = false;
    bool verify = true;
};

AutotuneSettings parseAutotuneSettings(const Args& a) {
    AutotuneSettings o;
    o.modelBudget = a.get("--model-budget-bpw").has_value();
    if (o.modelBudget == a.get("--budget-bpw").has_value())
        throw UsageError{"one of --budget-bpw B (quantised layers) or --model-budget-bpw B (whole "
                         "model) is required"};
    const char* budgetFlag = o.modelBudget ? "--model-budget-bpw" : "--budget-bpw";
    o.budgetArg = a.getDouble(budgetFlag, 0);
    if (!(o.budgetArg > 0)) throw UsageError{std::string(budgetFlag) + " must be > 0"};
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out R.json is required"};
    o.out = *out;
    o.schemeNames = splitList(a.getAll("--schemes"));
    if (o.schemeNames.empty()) o.schemeNames = {"W8A16", "W4A16-g64", "W3A16-g64", "W2A16-g32"};
    for (auto& n : o.schemeNames) n = schemeFromPreset(n).name; // presets and GGUF types
    o.uniform = a.getOr("--uniform", "");
    if (!o.uniform.empty()) o.uniform = schemeFromPreset(o.uniform).name;
    o.quiet = a.flag("--quiet");
    o.verify = !a.flag("--no-verify");
    return o;
}

/// Reads the scan of --scan and checks that it was made on this model and has every scheme.
SensitivityScan readAutotuneScan(const std::string& scanPath, const AutotuneSettings& o,
                                 const Model& model) {
    SensitivityScan scan = sensitivityFromJson(readJsonFile(scanPath), scanPath);
    if (scan.baseFingerprint != stats::modelFingerprint(model))
        throw Error("--scan " + scanPath + " was made on another model (" + scan.model +
                    "); its layer sizes and KLDs do not apply to " + model.path());
    std::vector<std::string> missing;
    for (const auto& n : o.schemeNames)
        if (!scan.find(n)) missing.push_back(n);
    if (!o.uniform.empty() && !scan.find(o.uniform)) missing.push_back(o.uniform);
    if (!missing.empty()) {
        std::string l;
        for (const auto& m : missing) l += (l.empty() ? "" : ",") + m;
        throw Error("--scan " + scanPath + " has no scan of " + l +
                    " (make one with: lcw-cli sensitivity MODEL --scheme " + l + " --out ...)");
    }
    return scan;
}

/// Scans every candidate scheme (and the uniform one) once.
SensitivityScan computeAutotuneScan(const Args& a, const AutotuneSettings& o, const EvalSetup& s) {
    std::vector<WeightScheme> schemes;
    std::set<std::string> seen;
    for (const auto& n : o.schemeNames)
        if (seen.insert(n).second) schemes.push_back(schemeFromPreset(n));
    if (!o.uniform.empty() && seen.insert(o.uniform).second)
        schemes.push_back(schemeFromPreset(o.uniform));
    SensitivityOptions so;
    so.granularity = granularityOption(a);
    so.eval = s.po;
    TerminalProgress progress("sensitivity", !o.quiet);
    SensitivityScan scan = scanSensitivity(*s.model, schemes, s.tokens, so, progress);
    progress.finish();
    return scan;
}

AutotunePlan planFor(const Args& a, const AutotuneSettings& o, const SensitivityScan& scan,
                     const Model& model) {
    AutotunePlan plan = o.modelBudget ? planAutotuneModel(scan, model, o.budgetArg, o.schemeNames,
                                                          o.uniform, a.getOr("--name", ""))
                                      : planAutotune(scan, o.budgetArg, o.schemeNames, o.uniform,
                                                     a.getOr("--name", ""));
    if (!o.modelBudget) {
        // the whole-model figures of a quantised-layer budget, reported beside it
        const ModelBudgetBase mb = modelBudgetBase(scan, model);
        plan.modelParams = mb.modelParams;
        plan.otherBits = mb.otherBits;
    }
    return plan;
}

/// What autotune's reports are made of.
struct AutotuneReport {
    const AutotuneSettings& o;
    const EvalSetup& s;
    const SensitivityScan& scan;
    const std::string& scanSource;
    const AutotunePlan& plan;
    const AutotuneVerification& v;
};

json measureJson(const AutotuneReport& r, const AutotuneMeasure& m, const std::string& name,
                 double planBpw, double est) {
    json j = {{"name", name},
              {"bits_per_weight", r.o.verify ? m.bitsPerWeight : planBpw},
              {"estimated_kld", est}};
    if (r.o.verify && m.measuredValid) {
        j["measured_kld"] = m.measured.kld.mean;
        j["measured_kld_se"] = m.measured.kld.meanError;
        j["ppl"] = m.measured.ppl;
        j["ppl_ratio"] = m.measured.pplRatio;
        j["same_top_percent"] = m.measured.sameTop * 100;
    }
    return j;
}

void printAutotuneJson(const AutotuneReport& r) {
    const AutotunePlan& plan = r.plan;
    json choices = json::array();
    for (const auto& c : plan.choices)
        choices.push_back({{"target", c.target},
                           {"scheme", c.scheme},
                           {"params", c.params},
                           {"bits", c.bits},
                           {"bits_per_weight", double(c.bits) / double(c.params)},
                           {"estimated_kld", c.estimatedKld}});
    // budget_bpw keeps its meaning: the quantised layers' budget (derived from a model budget)
    json j = {{"model", r.s.model->path()},
              {"text_file", r.s.textPath},
              {"scan", r.scanSource},
              {"ctx", r.s.po.ctx},
              {"chunks", r.scan.chunks},
              {"budget_bpw", plan.budgetBpw},
              {"budget_definition",
               "stored bits of the quantised linears (codes, scales, zeros) per weight: "
               "compress --json totals.quantized_bits_per_weight"},
              {"quantized_params", plan.params},
              {"budget_bits", plan.budgetBits},
              {"bits", plan.bits},
              {"bits_per_weight", plan.bitsPerWeight()},
              {"knapsack_unit_bits", plan.knapsackUnit},
              {"budget_mode", r.o.modelBudget ? "model" : "quantized_layers"},
              {"model_budget_bpw", r.o.modelBudget ? json(r.o.budgetArg) : json(nullptr)},
              {"model_budget_definition",
               "stored bits of every tensor per weight of the base model: compress --json "
               "totals.bits_per_base_weight, the recipe editor's budget"},
              {"model_params", plan.modelParams},
              {"model_bits", plan.otherBits + plan.bits},
              {"model_bits_per_weight", plan.modelBitsPerWeight()},
              {"recipe", r.o.out},
              {"schemes", r.o.schemeNames},
              {"choices", choices},
              {"autotuned", measureJson(r, r.v.autotuned, plan.recipe.name, plan.bitsPerWeight(),
                                        plan.estimatedKld)},
              {"uniform", plan.uniformScheme.empty()
                              ? json(nullptr)
                              : measureJson(r, r.v.uniform, "uniform " + plan.uniformScheme,
                                            double(plan.uniformBits) / double(plan.params),
                                            plan.uniformEstimatedKld)},
              {"baseline_ppl", r.o.verify ? r.v.baselinePpl : r.scan.baselinePpl}};
    if (!plan.uniformScheme.empty()) {
        j["uniform"]["scheme"] = plan.uniformScheme;
        j["uniform"]["within_budget"] = plan.uniformBits <= plan.budgetBits;
    }
    std::printf("%s\n", j.dump(2).c_str());
}

/// The budget, the scan and the chosen scheme of every layer.
void printAutotunePlan(const AutotuneReport& r) {
    const AutotunePlan& plan = r.plan;
    std::printf("model:   %s\nbudget:  %.4f bits/weight over the quantised linears (%lld weights, "
                "%llu bits)",
                r.s.model->path().c_str(), plan.budgetBpw, (long long)plan.params,
                (unsigned long long)plan.budgetBits);
    if (r.o.modelBudget)
        std::printf(" = %.4f bits/weight of the whole model (%lld weights)", r.o.budgetArg,
                    (long long)plan.modelParams);
    std::printf("\nplanned: %.4f bits/weight of the whole model, %.4f of the quantised linears\n"
                "scan:    %s (%s granularity, %lld chunks of %lld)\n\n",
                plan.modelBitsPerWeight(), plan.bitsPerWeight(), r.scanSource.c_str(),
                sensitivityGranularityName(r.scan.granularity), (long long)r.scan.chunks,
                (long long)r.scan.ctx);
    std::printf("  %-22s %-12s %8s %14s\n", "layer", "scheme", "bpw", "est. KLD");
    for (const auto& c : plan.choices)
        std::printf("  %-22s %-12s %8.3f %14.6f\n", c.target.c_str(), c.scheme.c_str(),
                    double(c.bits) / double(c.params), c.estimatedKld);
    std::printf("\nwrote %s (%zu rules)\n\n", r.o.out.c_str(), plan.recipe.rules.size());
}

/// One row of the verification table: estimated and (when verified) measured.
void printAutotuneRow(const AutotuneReport& r, const std::string& name, double bpw, double est,
                      const AutotuneMeasure& m) {
    if (r.o.verify && m.measuredValid) {
        char kld[48];
        std::snprintf(kld, sizeof kld, "%.6f ± %.6f", m.measured.kld.mean,
                      m.measured.kld.meanError);
        std::printf("  %-24s %10.4f %14.6f %23s %12.5f %9.2f%%\n", name.c_str(), bpw, est, kld,
                    m.measured.pplRatio, m.measured.sameTop * 100);
    } else {
        std::printf("  %-24s %10.4f %14.6f %22s %12s %10s\n", name.c_str(), bpw, est, "-", "-",
                    "-");
    }
}

/// The autotuned recipe next to the uniform one.
void printAutotuneVerification(const AutotuneReport& r) {
    const AutotunePlan& plan = r.plan;
    std::printf("  %-24s %10s %14s %22s %12s %10s\n", "recipe", "bpw", "est. KLD", "measured KLD",
                "PPL ratio", "same top");
    printAutotuneRow(r, plan.recipe.name,
                     r.o.verify ? r.v.autotuned.bitsPerWeight : plan.bitsPerWeight(),
                     plan.estimatedKld, r.v.autotuned);
    if (!plan.uniformScheme.empty())
        printAutotuneRow(r, "uniform " + plan.uniformScheme,
                         r.o.verify ? r.v.uniform.bitsPerWeight
                                    : double(plan.uniformBits) / double(plan.params),
                         plan.uniformEstimatedKld, r.v.uniform);
    else
        std::printf("  (no uniform candidate scheme fits the budget)\n");
    if (!plan.uniformScheme.empty() && plan.uniformBits > plan.budgetBits)
        std::printf("  note: uniform %s (--uniform) is above the budget\n",
                    plan.uniformScheme.c_str());
    std::printf("\nbpw: compress() totals.quantized_bits_per_weight; est. KLD: sum of the scan's "
                "per-layer KLDs; measured: one evaluation of the whole recipe.\n");
}

} // namespace

int cmdAutotune(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--budget-bpw", "--model-budget-bpw", "--out", "--schemes",
            "--scan", "--uniform", "--granularity", "--text", "--ctx", "--chunks", "--name"},
           {"--quiet", "--json", "--no-verify", "--exact-activations"});
    const AutotuneSettings o = parseAutotuneSettings(a);
    EvalSetup s = setup(a);

    SensitivityScan scan;
    std::string scanSource = "computed";
    if (const auto scanPath = a.get("--scan")) {
        scan = readAutotuneScan(*scanPath, o, *s.model);
        scanSource = *scanPath;
    } else {
        scan = computeAutotuneScan(a, o, s);
        if (scan.status == Status::Cancelled) {
            std::fprintf(stderr, "cancelled\n");
            return 130;
        }
    }

    const AutotunePlan plan = planFor(a, o, scan, *s.model);
    writeFileAtomic(o.out, plan.recipe.toJson().dump(2) + "\n");

    AutotuneVerification v;
    if (o.verify) {
        TerminalProgress progress("verify", !o.quiet);
        v = verifyAutotune(*s.model, plan, s.tokens, s.po, progress);
        progress.finish();
        if (v.status == Status::Cancelled) {
            std::fprintf(stderr, "cancelled (the recipe was written to %s)\n", o.out.c_str());
            return 130;
        }
    }

    const AutotuneReport report{o, s, scan, scanSource, plan, v};
    if (a.flag("--json")) {
        printAutotuneJson(report);
        return 0;
    }
    printAutotunePlan(report);
    printAutotuneVerification(report);
    return 0;
}

} // namespace lcw::cli
