#pragma once
/// \file
/// Automatic mixed precision: one weight scheme per target (layer or block) chosen from a
/// sensitivity scan so that the estimated KLD (the sum of the per-target KLDs of the scan) is
/// minimal while the quantised layers' bits stay within a bits/weight budget.
///
/// planAutotune's budget refers to the quantised linears only, including their scales and zero
/// points: Σ stored bits of the targets / Σ their weights — exactly what `lcw-cli compress --json`
/// reports as totals.quantized_bits_per_weight for the produced recipe. planAutotuneModel takes
/// the workbench's budget (whole-model bits per base weight) and converts it exactly.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/recipe.h"
#include "core/eval/divergence.h"
#include "core/eval/sensitivity.h"
#include "core/model/model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

/// Multiple-choice knapsack: pick one option per item (cost[j], value[j]) minimising Σ value
/// with Σ cost <= capacity.
struct KnapsackItem {
    std::vector<uint64_t> cost;
    std::vector<double> value;
};
struct KnapsackSolution {
    std::vector<int> choice; ///< option index per item
    uint64_t cost = 0;
    double value = 0;
    /// Cost units of the dynamic programme: 1 = exact optimum; > 1 the costs above each item's
    /// cheapest option were rounded up to multiples of it (always feasible, at most one unit per
    /// item from the optimum), then the spare exact capacity was filled greedily.
    uint64_t unit = 1;
};
/// Dynamic programme over the capacity left after every item's cheapest option, with at most
/// maxCells cells. Throws ArgumentError when an item has no option, cost/value sizes differ,
/// or even the cheapest options exceed the capacity (naming the minimum needed).
KnapsackSolution solveKnapsack(const std::vector<KnapsackItem>& items, uint64_t capacity,
                               int64_t maxCells = 1 << 18);

struct AutotuneChoice {
    std::string target;
    std::string scheme;
    int64_t params = 0;
    uint64_t bits = 0;
    double estimatedKld = 0; ///< the scan's mean KLD of this target at this scheme
};

/// The measured side of one recipe.
struct AutotuneMeasure {
    std::string name;
    double bitsPerWeight = 0; ///< compress() totals: quantized bits / quantized params
    uint64_t bits = 0;
    double estimatedKld = 0;  ///< Σ of the scan's per-target KLDs
    DivergenceStats measured; ///< compareToBaseline of the real overlay
    bool measuredValid = false;
};

struct AutotunePlan {
    double budgetBpw = 0;
    int64_t params = 0;      ///< weights of all targets
    uint64_t budgetBits = 0; ///< floor(budgetBpw * params)
    std::vector<AutotuneChoice> choices;
    uint64_t bits = 0;       ///< Σ chosen bits (what compress() will report)
    double estimatedKld = 0; ///< Σ chosen KLDs
    uint64_t knapsackUnit = 1;
    compress::Recipe recipe; ///< one rule per tensor, exact names
    /// The uniform scheme of the nearest size not above the budget (or the one asked for);
    /// empty when none fits.
    std::string uniformScheme;
    uint64_t uniformBits = 0;
    double uniformEstimatedKld = 0;
    compress::Recipe uniformRecipe;
    double bitsPerWeight() const { return params ? double(bits) / double(params) : 0.0; }
    /// The whole model (planAutotuneModel; 0 from planAutotune): the base's weights (every
    /// tensor, tied embeddings once), the stored bits of the tensors outside the targets, and
    /// the whole-model budget asked for.
    int64_t modelParams = 0;
    uint64_t otherBits = 0;
    double modelBudgetBpw = 0;
    /// Whole-model stored bits / base weights of the planned recipe: what the recipe editor's
    /// budget line and `compress --json` (totals.bits_per_base_weight) report for it.
    double modelBitsPerWeight() const {
        return modelParams ? double(otherBits + bits) / double(modelParams) : 0.0;
    }
};

/// Plans from a scan: every target must be scanned with at least one of `schemes` (all scanned
/// schemes when empty). `uniform` names the uniform comparison scheme (must be in the scan);
/// empty: the candidate scheme with the most bits not above the budget that applies to every
/// target. Throws ArgumentError for an infeasible budget (naming the smallest possible
/// bits/weight), unknown schemes, or a target no scheme applies to.
AutotunePlan planAutotune(const SensitivityScan& scan, double budgetBpw,
                          const std::vector<std::string>& schemes, const std::string& uniform = {},
                          const std::string& recipeName = {});

/// The whole-model side of a scan on `base`: its weights and the stored bits of every tensor
/// the scan's targets leave unchanged (embeddings, norms, unscanned linears).
struct ModelBudgetBase {
    int64_t modelParams = 0;
    uint64_t otherBits = 0;
    int64_t targetParams = 0;
};
ModelBudgetBase modelBudgetBase(const SensitivityScan& scan, const Model& base);

/// planAutotune with the budget as the workbench defines it everywhere: whole-model stored bits
/// per base weight (the recipe editor's target, `compress --json` bits_per_base_weight). The
/// targets get floor(modelBudgetBpw · modelParams) − otherBits bits, i.e. the quantised-layer
/// budget planAutotune receives (plan.budgetBpw / budgetBits keep that meaning); the model
/// fields of the plan are filled. Throws ArgumentError for an infeasible budget naming both
/// figures (the tensors outside the targets may already exceed it).
AutotunePlan planAutotuneModel(const SensitivityScan& scan, const Model& base,
                               double modelBudgetBpw, const std::vector<std::string>& schemes,
                               const std::string& uniform = {}, const std::string& recipeName = {});

struct AutotuneVerification {
    AutotuneMeasure autotuned, uniform; ///< uniform.name empty when there is no uniform recipe
    double baselinePpl = 0;
    int64_t chunks = 0, scoredTokens = 0;
    Status status = Status::Ok;
};

/// Compresses the planned recipe (and the uniform one) and evaluates both against the
/// baseline in one compareToBaseline pass. Throws Error when the compressed size differs from
/// the plan (the scan was made on another model).
AutotuneVerification verifyAutotune(const Model& base, const AutotunePlan& plan,
                                    const std::vector<int32_t>& tokens,
                                    const PerplexityOptions& opts, Progress& progress);

} // namespace lcw
