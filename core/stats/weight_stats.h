#pragma once
/// \file
/// Weight statistics: for every 2-D tensor, per tensor and per input/output channel moments and
/// extrema, exact |x| percentiles, outlier fractions, histograms and a round-to-nearest
/// quantization preview. Streams over the memory-mapped rows (dequantizeRow for F16/BF16/GGUF
/// blocks: statistics are of the values the model computes with), in parallel with per-thread
/// accumulators merged with Chan/Pébay's formulas; no copy of a tensor is made.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/common/tensor.h"
#include "core/stats/tensor_stats.h"

#include <functional>
#include <vector>

namespace lcw {
class Model;
}

namespace lcw::stats {

struct WeightStatsOptions {
    /// Quantization previews to compute for every tensor.
    std::vector<PreviewConfig> previews = {PreviewConfig{4, 128, false}};
    int histBins = 256;
    /// Linear histogram range: 0 = [min, max] of the tensor (fixed by the data); k > 0 = robust
    /// range [mean − kσ, mean + kσ] clipped to [min, max] (values outside land in the end bins).
    double histSigma = 0;
    /// Which tensors (default: every tensor with two dimensions).
    std::function<bool(const TensorView&)> filter;
};

/// Statistics of one 2-D tensor ([rows = output channels, cols = input channels]).
/// Throws UnsupportedError for dtypes dequantizeRow cannot read.
TensorStats computeTensorStats(const TensorView& t, const WeightStatsOptions& opts = {});

/// Statistics of every selected tensor of the model, in file order (a tied lm_head is the embed
/// and is not repeated). Checks `progress` between tensors; returns Cancelled (with `out`
/// holding only the finished tensors) when asked to stop.
Status computeWeightStats(const Model& model, const WeightStatsOptions& opts,
                          std::vector<TensorStats>& out, Progress& progress);

/// Layer index of a canonical name: N for "layers.N.*", −1 for embed, nLayers for lm_head and
/// final_norm (pass nLayers), −2 for anything else.
int layerOfName(const std::string& name, int nLayers);

} // namespace lcw::stats
