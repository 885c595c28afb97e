#pragma once
/// \file
/// Where the error enters: the residual stream after every block of a configuration compared
/// with the baseline's on the same tokens (METRICS.md, "Layer sensitivity").
///
/// Both run over the same chunks of the text (llama.cpp chunking: non-overlapping chunks of
/// ctx tokens, the first replaced by BOS); every position of every chunk counts. For block l with
/// baseline hidden states h_t and configuration hidden states q_t (t over all tokens):
/// - relError      = sqrt(Σ_t ||q_t − h_t||²) / sqrt(Σ_t ||h_t||²) (ratio of sums: the relative
///                   Frobenius error of the whole [tokens, dim] matrix),
/// - meanRelError  = mean_t ||q_t − h_t|| / ||h_t||,
/// - meanCosine    = mean_t cos(q_t, h_t), minCosine its minimum.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/eval/divergence.h"
#include "core/eval/perplexity.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct BlockError {
    int layer = 0;
    double relError = 0;
    double meanRelError = 0;
    double meanCosine = 0;
    double minCosine = 0;
};

struct HiddenErrorStats {
    std::string name;
    std::vector<BlockError> blocks; ///< one per block, in order
};

struct HiddenErrorResult {
    int64_t ctx = 0;
    int64_t chunks = 0, totalChunks = 0;
    int64_t tokens = 0; ///< positions compared per block
    std::vector<HiddenErrorStats> configs;
    double seconds = 0;
    Status status = Status::Ok;
};

/// Throws ArgumentError as compareToBaseline does (short text, bad options, null configuration,
/// other vocabulary), and when a configuration has another width or block count. Progress after
/// each chunk; cancelling returns status Cancelled with the chunks finished so far.
HiddenErrorResult hiddenStateError(const WeightSource& baseline,
                                   const std::vector<DivergenceConfig>& configs,
                                   const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& opts, Progress& progress);

} // namespace lcw
