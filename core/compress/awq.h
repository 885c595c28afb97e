#pragma once
/// \file
/// AWQ (Lin et al. 2023): activation-aware per-input-channel scales. For the linears sharing an
/// input X, s = mean|X|^α (normalised so that max(s)·min(s) = 1) is searched over a grid of α
/// in [0, 1] (α = 0 is the identity, so the result is never worse than RTN on the search
/// objective), minimising Σ_k ||X W_kᵀ − (X/s) Q(W_k diag(s))ᵀ||² on sampled rows of X. The
/// scales are then folded into the preceding op (folding.h). A clipping search follows per
/// layer: each group's range is shrunk by the factor (from 1 down to 1 − max_shrink) that
/// minimises that group's output error; the clipped result is kept only when it lowers the
/// layer's total output error.
#include "core/compress/quantizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

struct AwqOptions {
    int grid = 20;          ///< α values 0, 1/(grid-1), ..., 1
    bool clipSearch = true; ///< weight-clipping search after the scales
    int clipGrid = 20;      ///< shrink steps of max_shrink / clip_grid
    double maxShrink = 0.5; ///< smallest range factor 1 − max_shrink (exclusive)
    int64_t maxRows = 512;  ///< rows of X used by the searches (evenly strided)
};

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

/// X: [n, cols] rows of the input; meanAbs: per-channel statistic (already averaged over tied
/// channels where s must be shared).
AwqScaleResult awqSearchScale(const float* X, int64_t n, int64_t cols,
                              const std::vector<float>& meanAbs,
                              const std::vector<AwqMember>& members, const AwqOptions& o);

struct AwqClipResult {
    PackedTensor packed;
    double meanClip = 1; ///< mean range factor over groups
    double error = 0;    ///< output error (sum of squares on X) of the result
    double unclippedError = 0;
    bool clipped = false;
};

/// Quantises w [rows, cols] (scales already applied) with the clipping search on X [n, cols].
/// With a GGUF grid (s.ggufGrid) ggml's quantiser chooses the blocks (with `importance`, one
/// value per column, when given) and there is no clipping search.
AwqClipResult awqClipQuantize(const float* X, int64_t n, int64_t cols, const float* w, int64_t rows,
                              const WeightSettings& s, const AwqOptions& o,
                              const std::string& name, const float* importance = nullptr);

/// Σ over rows of ||X (w − ŵ)ᵀ||² (double accumulation of a float matrix product).
double outputSqError(const float* X, int64_t n, int64_t cols, const float* w, const float* wq,
                     int64_t rows);

} // namespace lcw::compress
