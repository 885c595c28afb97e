#pragma once
/// \file
/// AWQ (Lin et al. 2023): activation-aware per-input-channel scales, as the authors' code does it
/// by default (mit-han-lab/llm-awq, awq/quantize/auto_scale.py and auto_clip.py):
///   - per site (the linears sharing an input), s = max(x̄^α, 1e-4) with x̄ = mean|x| per channel
///     over all calibration tokens, normalised so that max(s)·min(s) = 1, for α = i/grid,
///     i = 0 .. grid−1 (0 .. 0.95 for grid 20); the α whose Q(W·s)/s gives the smallest loss wins
///     (ties: the smaller α). The loss is given by the caller (awqSearchScaleLoss): the pipeline
///     uses the mean squared difference of the inspected module's output (the whole attention
///     for q/k/v, the whole MLP for gate/up, the linear itself for o and down);
///   - auto_clip (awqClipQuantize with AwqClipMode::Auto): per output row and group, the weights
///     are clamped to ±f·max|w| for f = 1 − i/clip_grid, i = 0 .. ⌊max_shrink·clip_grid⌋ − 1, and
///     the f whose quantised group gives the smallest mean over the sampled tokens of
///     (x·(Q(w_f) − w))² is kept (always).
/// lcw's earlier variants stay available: AwqGridRule::Inclusive (α = i/(grid−1) up to 1,
/// s = max(x̄, 1e-4)^α), the joint-linears objective Σ_k ||X W_kᵀ − (X/s) Q(W_k diag s)ᵀ||²
/// (awqSearchScale) and AwqClipMode::Range (the range [f·min, f·max] per group, kept only when it
/// lowers the layer's total output error). The scales are folded into the preceding op
/// (folding.h).
#include "core/compress/quantizer.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lcw::compress {

/// What the scale search minimises (recipe "objective").
enum class AwqObjective {
    ModuleOutput, ///< "module-output": MSE of the inspected module's output (llm-awq)
    JointLinears, ///< "joint-linears": Σ_k ||X W_kᵀ − (X/s) Q(W_k s)ᵀ||² on strided rows (lcw)
};
/// Which α values the search tries (recipe "grid_rule").
enum class AwqGridRule {
    Reference, ///< "reference": α = i/grid, i < grid; s = max(x̄^α, 1e-4) (llm-awq)
    Inclusive, ///< "inclusive": α = i/(grid−1), i < grid (up to 1); s = max(x̄, 1e-4)^α (lcw)
};
/// The clipping search after the scales (recipe "clip").
enum class AwqClipMode {
    Auto,  ///< "auto": llm-awq's auto_clip: clamp to ±f·max|w| per group, always applied
    Range, ///< "range": lcw's [f·min, f·max] per group, kept when it lowers the layer error
};

struct AwqOptions {
    int grid = 20; ///< number of α values (see AwqGridRule)
    AwqGridRule gridRule = AwqGridRule::Reference;
    AwqObjective objective = AwqObjective::ModuleOutput;
    /// Statistics and search inputs from the unquantised model (true, llm-awq) or through the
    /// overlay built so far (false, recipe "stats": "compressed").
    bool fpStats = true;
    bool clipSearch = true; ///< weight-clipping search after the scales
    AwqClipMode clip = AwqClipMode::Auto;
    int clipGrid = 20; ///< shrink steps of 1 / clip_grid
    double maxShrink = 0.5; ///< auto: ⌊max_shrink·clip_grid⌋ steps; range: factors > 1 − max_shrink
    /// joint-linears: rows of X used by the search (evenly strided); auto clip: tokens sampled at
    /// random (seeded, without replacement) for the clip error.
    int64_t maxRows = 512;
    uint64_t seed = 0; ///< of the auto clip's token sample
};

/// The α values of the grid, in search order.
std::vector<double> awqAlphas(const AwqOptions& o);
/// The per-channel scales for one α (normalised so that max·min = 1; exactly 1 at α = 0).
std::vector<float> awqScales(const std::vector<float>& meanAbs, double alpha, AwqGridRule rule);
/// `count` distinct indices of [0, total) drawn at random (a partial Fisher–Yates shuffle driven
/// by std::mt19937_64(seed): for i < count, swap i with i + rng() % (total − i)), sorted; all of
/// them when total <= count.
std::vector<int64_t> awqSampleTokens(int64_t total, int64_t count, uint64_t seed);

/// One linear reading the shared input.
struct AwqMember {
    const float* w = nullptr; ///< [rows, cols] row-major
    int64_t rows = 0;
    WeightSettings settings;
    bool quantized = true; ///< false: rescaled but kept in float (adds no error)
    std::string name;
};

struct AwqScaleResult {
    std::vector<float> scale; ///< per input channel
    double alpha = 0;
    double error = 0;         ///< search objective at the chosen α
    double identityError = 0; ///< at α = 0 (= RTN)
};

/// The loss of one candidate: the members' fake-quantised weights Q(W·s)/s (one [rows, cols]
/// matrix per member, empty for members that are not quantised) and the scales s.
using AwqLoss =
    std::function<double(const std::vector<std::vector<float>>& wq, const std::vector<float>& s)>;

/// The scale search with a caller-given loss (the module-output objective).
AwqScaleResult awqSearchScaleLoss(int64_t cols, const std::vector<float>& meanAbs,
                                  const std::vector<AwqMember>& members, const AwqOptions& o,
                                  const AwqLoss& loss);

/// The joint-linears objective. X: [n, cols] rows of the input; meanAbs: per-channel statistic
/// (already averaged over tied channels where s must be shared).
AwqScaleResult awqSearchScale(const float* X, int64_t n, int64_t cols,
                              const std::vector<float>& meanAbs,
                              const std::vector<AwqMember>& members, const AwqOptions& o);

struct AwqClipResult {
    PackedTensor packed;
    double meanClip = 1; ///< mean range factor over groups
    double error = 0;    ///< output error (sum of squares on X) of the result
    double unclippedError = 0;
    bool clipped = false;
    double minClip = 1;       ///< smallest factor chosen
    std::vector<float> ratio; ///< factor per (row, group) (one for tensor granularity); empty when
                              ///< there was no search
};

/// Quantises w [rows, cols] (scales already applied) with the clipping search on X [n, cols]
/// (o.clip: auto or range; the errors of auto are means over the n rows of X). With a GGUF grid
/// (s.ggufGrid) ggml's quantiser chooses the blocks (with `importance`, one value per column, when
/// given) and there is no clipping search.
AwqClipResult awqClipQuantize(const float* X, int64_t n, int64_t cols, const float* w, int64_t rows,
                              const WeightSettings& s, const AwqOptions& o, const std::string& name,
                              const float* importance = nullptr);

/// Σ over rows of ||X (w − ŵ)ᵀ||² (double accumulation of a float matrix product).
double outputSqError(const float* X, int64_t n, int64_t cols, const float* w, const float* wq,
                     int64_t rows);

} // namespace lcw::compress
