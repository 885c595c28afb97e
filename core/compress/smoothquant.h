#pragma once
/// \file
/// SmoothQuant (Xiao et al. 2022): moves activation outliers into the weights with a per-input-
/// channel scale s, X' = X diag(1/s), W' = W diag(s), folded into the preceding norm (q/k/v
/// and gate/up inputs, folding.h). The migration strength α follows the reference code
/// (mit-han-lab/smoothquant smoothquant/smooth.py smooth_ln_fcs):
///     s_j = max(max|X_j|^α / max(max|W_j|, 1e-5)^(1−α), 1e-5),
/// max|W_j| over all rows of all linears sharing X. α = 0.5 is the paper's default; α = 0 gives
/// s_j = 1 / max|W_j| (not the identity); channels whose activation range is 0 get s = 1e-5.
/// SmoothQuantRule::Ratio is lcw's earlier rule s_j = (max|X_j| / max|W_j|)^α (equal to the
/// reference at α = 0.5 except where a range is 0), with s = 1 at α = 0 and where a range is 0.
/// SmoothQuantRule::Percentile is DGQ's percentile clipping smoothing (Zhang et al. 2023;
/// ilur98/DGQ dgq/quant/smooth.py smooth_ln_fcs, smooth_llama_mlp): only the loudest channels
/// are scaled, down to a baseline b = the k-th largest max|X_j| of the C channels,
/// k = int(0.005 · C + 1.5): s_j = max|X_j| / b where max|X_j| > b, else 1 (all 1 when
/// b < 1e-4); α and the weights play no part. DGQ applies it at the norm-fed inputs and at the
/// down projection's input (folded into the up projection's rows).
#include <cstdint>
#include <vector>

namespace lcw::compress {

enum class SmoothQuantRule { Reference, Ratio, Percentile };

/// xAbsMax: per input channel; weights: row-major [rows[k], cols] of each linear sharing X.
std::vector<float> smoothQuantScales(const std::vector<float>& xAbsMax,
                                     const std::vector<const float*>& weights,
                                     const std::vector<int64_t>& rows, int64_t cols, double alpha,
                                     SmoothQuantRule rule = SmoothQuantRule::Reference);

} // namespace lcw::compress
