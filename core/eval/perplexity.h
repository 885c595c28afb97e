#pragma once
/// \file
/// Perplexity of a token stream: llama.cpp's chunked method (the default, comparable with
/// llama-perplexity) and a strided sliding-window mode (Hugging Face style).
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/model/model.h"
#include "core/runtime/session.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

enum class PerplexityMode {
    /// llama.cpp llama-perplexity: non-overlapping chunks of ctx tokens (incomplete tail
    /// dropped), first token of each chunk replaced by BOS, positions ctx/2 .. ctx-2 score the
    /// next token.
    LlamaCppChunks,
    /// Hugging Face "strided sliding window": windows of ctx tokens moved by `stride`; each
    /// window scores only the tokens not scored by the previous one, with up to ctx-stride tokens
    /// of context before them. Tokens are used as given (no BOS replacement).
    SlidingWindow,
};
const char* perplexityModeName(PerplexityMode m); // "llama.cpp chunks", "sliding window (HF)"

struct PerplexityOptions {
    int64_t ctx = 512;
    /// LlamaCppChunks: each chunk's first token becomes this id; -1 leaves the tokens alone.
    int32_t bosId = -1;
    /// Tokens per forward pass (<= ctx).
    int64_t batch = 512;
    int threads = 0;
    PerplexityMode mode = PerplexityMode::LlamaCppChunks;
    /// SlidingWindow: how far the window moves; 0 = ctx / 2.
    int64_t stride = 0;
    /// Stop after this many chunks/windows (0 = all), for quick estimates.
    int64_t maxChunks = 0;
    /// SessionOptions::exactActivations of every session (float32 activations in all products).
    bool exactActivations = false;
    /// SessionOptions::kvCache of every session (F16: llama.cpp's default cache).
    KvCacheType kvCache = KvCacheType::F32;
};

struct PerplexityResult {
    PerplexityMode mode = PerplexityMode::LlamaCppChunks;
    int64_t ctx = 0;
    double ppl = 0;
    /// Standard error of the PPL as llama.cpp prints it: PPL * sqrt(var(NLL) / (N - 1)).
    double pplError = 0;
    double meanNll = 0;
    int64_t chunks = 0;      ///< chunks (windows) evaluated
    int64_t totalChunks = 0; ///< chunks the text holds
    int64_t scoredTokens = 0;
    int64_t tokensEvaluated = 0; ///< tokens run through the model
    double seconds = 0;
    double tokensPerSecond = 0; ///< tokensEvaluated / seconds
    /// KV cache holding one full chunk (window): as stored (quantised layers: codes, scales,
    /// f32 tail) and as it would be in f32.
    uint64_t kvCacheBytes = 0, kvCacheBytesF32 = 0;
    bool kvCacheF16 = false; ///< the sessions' plain KV cache held F16 (Session::kvCacheF16)
    /// Weight-product MACs of all forwards (Session::macCounts summed over the sessions; zero
    /// when they ran resident on a device).
    Session::MacCounts macs;
    Status status = Status::Ok;
    /// PPL over the chunks done so far, after each chunk (for progress displays and plots).
    std::vector<double> runningPpl;
    /// Per scored token negative log-likelihood (nats), in scoring order.
    std::vector<float> nll;
};

/// tokens: the whole text tokenized once, BOS first. Throws ArgumentError when the text is
/// shorter than one chunk or the options are invalid. Progress reports after each chunk
/// ("chunk i/N, PPL x"); returning false stops with status Cancelled and the statistics of the
/// chunks finished so far. With several threads, small models evaluate chunks in parallel (one
/// single-threaded Session per thread); report() is then called from worker threads, one call at
/// a time. The numbers do not depend on the thread count.
PerplexityResult computePerplexity(const WeightSource& weights, const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& opts, Progress& progress);

/// The KV cache of one context: `tokens` cached tokens of a session of context `ctx` (eviction
/// policies evict as they run, quantised layers hold codes).
struct KvMemory {
    int64_t tokens = 0;
    uint64_t bytes = 0, bytesF32 = 0;
    double bytesPerToken() const { return tokens > 0 ? double(bytes) / double(tokens) : 0.0; }
};
/// Runs the first min(ctx, tokens.size()) tokens through a session of context ctx (in batches
/// of at most 512) and reads its KV cache size.
KvMemory measureKvCache(const WeightSource& weights, const std::vector<int32_t>& tokens,
                        int64_t ctx);

/// Validates options and tokens for the chunked evaluations (perplexity, divergence): context
/// at least 4, batch > 0, at least one context of tokens, BOS inside the vocabulary. Throws
/// ArgumentError whose message starts with `what` ("perplexity", "divergence").
void checkChunkedEvalInput(const char* what, const WeightSource& weights,
                           const std::vector<int32_t>& tokens, const PerplexityOptions& opts);

} // namespace lcw
