#pragma once
/// \file
/// SmoothQuant (Xiao et al. 2022): moves activation outliers into the weights with a per-input-
/// channel scale s, X' = X diag(1/s), W' = W diag(s), folded into the preceding norm (q/k/v
/// and gate/up inputs, folding.h). lcw's migration strength α uses
///     s_j = (max|X_j| / max|W_j|)^α,   max|W_j| over all rows of all linears sharing X,
/// so that α = 0 is exactly no smoothing (s = 1), α = 0.5 is the paper's default
/// max|X_j|^0.5 / max|W_j|^0.5, and α = 1 swaps the per-channel ranges of X and W.
/// Channels whose activation or weight range is zero keep s = 1.
#include <cstdint>
#include <vector>

namespace lcw::compress {

/// xAbsMax: per input channel; weights: row-major [rows[k], cols] of each linear sharing X.
std::vector<float> smoothQuantScales(const std::vector<float>& xAbsMax,
                                     const std::vector<const float*>& weights,
                                     const std::vector<int64_t>& rows, int64_t cols, double alpha);

} // namespace lcw::compress
