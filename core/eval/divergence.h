#pragma once
/// \file
/// Divergence of configurations from a baseline (METRICS.md, "Divergence from the baseline"):
/// the numbers llama.cpp's `llama-perplexity --kl-divergence` prints, computed in one pass over
/// the text. Each chunk runs through the baseline once and through every configuration once;
/// no logit files are written and the baseline is not recomputed per configuration.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/eval/perplexity.h"
#include "core/model/model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

/// One configuration to compare with the baseline: any WeightSource (a compressed overlay, or
/// another model file of the same architecture and vocabulary). Not owned.
struct DivergenceConfig {
    std::string name;
    const WeightSource* weights = nullptr;
};

/// Summary of a per-token quantity: mean ± standard error of the mean, and the order statistics
/// (linear interpolation between order statistics, as llama.cpp and numpy do).
struct Distribution {
    double mean = 0, meanError = 0;
    double median = 0, min = 0, max = 0;
    double p999 = 0, p99 = 0, p95 = 0, p90 = 0, p10 = 0, p5 = 0, p1 = 0, p01 = 0;
};

struct DivergenceStats {
    std::string name;
    int64_t scoredTokens = 0;
    double ppl = 0, pplError = 0; ///< PPL(Q) ± s.e. (llama.cpp's formula)
    double baselinePpl = 0;       ///< PPL(base) over the same tokens
    double pplRatio = 0;          ///< PPL(Q) / PPL(base)
    double meanLnRatio = 0;       ///< mean of NLL_q − NLL_base = ln(PPL ratio)
    double meanLnRatioError = 0;  ///< its standard error
    double lnProbCorrelation = 0; ///< Pearson correlation of per-token ln p_base(t), ln p_q(t)
    Distribution kld;             ///< nats
    Distribution deltaP;          ///< p_q(t) − p_base(t), as a fraction (×100 for %)
    double rmsDeltaP = 0;         ///< sqrt(mean Δp²)
    double rmsDeltaPError = 0;    ///< its standard error (propagated from mean Δp²)
    double sameTop = 0;           ///< fraction of scored positions whose argmax agrees
    double sameTopError = 0;      ///< sqrt(p (1 − p) / (n − 1))
    double seconds = 0;           ///< forward time of this configuration (see DivergenceResult)
    /// Weight-product MACs of this configuration's forwards (Session::macCounts, summed over the
    /// workers; zero when the forwards ran resident on a device).
    Session::MacCounts macs;
};

struct DivergenceResult {
    int64_t ctx = 0;
    int64_t chunks = 0, totalChunks = 0;
    int64_t scoredTokens = 0;
    double baselinePpl = 0, baselinePplError = 0;
    /// Forward time of the baseline. With several chunk workers the wall time is shared among
    /// baseline and configurations in proportion to the thread time each used.
    double baselineSeconds = 0;
    double seconds = 0;              ///< wall time of the whole comparison
    Session::MacCounts baselineMacs; ///< as DivergenceStats::macs, for the baseline
    std::vector<DivergenceStats> configs;
    Status status = Status::Ok;
};

/// Distribution of `values` (copied and sorted). Empty input gives zeros.
Distribution summarize(std::vector<double> values);

/// Compares every configuration with `baseline` over `tokens` (the whole text tokenized once,
/// BOS first) with llama.cpp's chunking: non-overlapping chunks of opts.ctx tokens, the first of
/// each replaced by opts.bosId (when >= 0), positions ctx/2 .. ctx-2 scoring the next token.
/// Only PerplexityMode::LlamaCppChunks is accepted. Throws ArgumentError when the text is shorter
/// than one chunk, the options are invalid, a configuration is null, or a configuration's
/// vocabulary differs from the baseline's. Progress reports after each chunk; returning false
/// stops with status Cancelled and the statistics of the chunks finished so far. The numbers do
/// not depend on the thread count.
DivergenceResult compareToBaseline(const WeightSource& baseline,
                                   const std::vector<DivergenceConfig>& configs,
                                   const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& opts, Progress& progress);

} // namespace lcw
