#pragma once
/// \file
/// Generation compare: the same prompt through a baseline and several configurations.
///
/// Definitions (README "Compare generations"):
/// - Each source (baseline and every configuration) generates its OWN continuation of the prompt
///   with the same sampling parameters; for seeded sampling every source starts from the same
///   seed, so two sources with the same distributions draw the same tokens.
/// - logProbs[i] = ln p_src(ids[i] | prompt, ids[0..i-1]) of the token the source generated, under
///   its own unmodified distribution (softmax of the logits at temperature 1, whatever the
///   sampling temperature).
/// - firstDivergence = the first index i of the generated tokens where a configuration's token
///   differs from the baseline's (or where one of them has stopped and the other has not); -1
///   when both generated the same tokens.
/// - kld[i] = KLD(p_base || p_cfg) at position i of the BASELINE's generated text, teacher-forced:
///   both run over prompt + baseline tokens in one pass each and their next-token distributions
///   before baseline token i are compared. It is defined along one text for every configuration
///   (the GUI colours the baseline's text by it). baselineTokenLogProbs[i] = ln p_cfg of baseline
///   token i at the same position.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/eval/divergence.h"
#include "core/model/model.h"
#include "core/runtime/session.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct GenerationCompareOptions {
    int64_t maxNewTokens = 64;
    /// temperature <= 0: greedy; otherwise seeded sampling with sampling.seed for every source.
    SamplingParams sampling;
    /// Stop a source at these ids; empty: the baseline's spec().eosIds plus its tokenizer's EOS
    /// (when the baseline is a Model, or an overlay of one).
    std::vector<int32_t> eosIds;
    int threads = 0;
    /// SessionOptions::exactActivations of every session (float32 activations in all products).
    bool exactActivations = false;
};

/// One source's continuation and its per-token numbers.
struct GenerationTrack {
    std::string name;
    std::vector<int32_t> ids;     ///< generated tokens (without the prompt)
    std::vector<double> logProbs; ///< ln p_src(ids[i]) under the source's own distribution
    bool stoppedAtEos = false;
    int64_t firstDivergence = -1; ///< vs the baseline; -1: identical (always -1 for the baseline)
    std::vector<double> kld;      ///< per baseline token, teacher-forced (zeros for the baseline)
    std::vector<double> baselineTokenLogProbs; ///< ln p_src(baseline token i), teacher-forced
    double meanKld = 0, maxKld = 0;            ///< over kld
    double seconds = 0;
};

struct GenerationComparison {
    std::vector<int32_t> prompt;
    GenerationTrack baseline;
    std::vector<GenerationTrack> configs;
    Status status = Status::Ok;
};

/// Runs the comparison. Throws ArgumentError for an empty prompt, ids outside the vocabulary, a
/// null configuration or one with another vocabulary, maxNewTokens < 1. Prompt + maxNewTokens is
/// clamped to the model's maximum sequence length. Progress reports per generated token;
/// cancelling returns status Cancelled with what was done so far.
GenerationComparison compareGenerations(const WeightSource& base,
                                        const std::vector<DivergenceConfig>& configs,
                                        const std::vector<int32_t>& prompt,
                                        const GenerationCompareOptions& opts, Progress& progress);

/// First index where the two sequences differ, including one ending before the other; -1 when
/// equal.
int64_t firstDifference(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

} // namespace lcw
