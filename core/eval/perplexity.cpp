#include "core/eval/perplexity.h"

#include "core/eval/chunk_runner.h"

#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include <omp.h>

namespace lcw {

const char* perplexityModeName(PerplexityMode m) {
    switch (m) {
    case PerplexityMode::LlamaCppChunks:
        return "llama.cpp chunks";
    case PerplexityMode::SlidingWindow:
        return "sliding window (HF)";
    }
    return "?";
}

namespace {

struct Accum {
    double sum = 0, sum2 = 0;
    int64_t count = 0;
    void add(double nll) {
        sum += nll;
        sum2 += nll * nll;
        ++count;
    }
};

void finish(PerplexityResult& r, const Accum& a, double seconds) {
    r.scoredTokens = a.count;
    r.seconds = seconds;
    r.tokensPerSecond = seconds > 0 ? double(r.tokensEvaluated) / seconds : 0;
    if (a.count == 0) return;
    r.meanNll = a.sum / double(a.count);
    r.ppl = std::exp(r.meanNll);
    // llama.cpp: uncertainty of the mean NLL, sqrt((<nll^2> - <nll>^2) / (N - 1)), times PPL.
    const double var = a.sum2 / double(a.count) - r.meanNll * r.meanNll;
    r.pplError = (a.count > 1 && var > 0) ? r.ppl * std::sqrt(var / double(a.count - 1)) : 0;
}

} // namespace

KvMemory measureKvCache(const WeightSource& weights, const std::vector<int32_t>& tokens,
                        int64_t ctx) {
    KvMemory m;
    m.tokens = std::min<int64_t>(ctx, int64_t(tokens.size()));
    if (m.tokens <= 0) return m;
    SessionOptions so;
    so.contextLength = ctx;
    so.batchSize = std::min<int64_t>(m.tokens, 512);
    Session s(weights, so);
    std::vector<float> logits;
    for (int64_t p = 0; p < m.tokens; p += so.batchSize)
        s.forward(std::span(tokens.data() + p, size_t(std::min(so.batchSize, m.tokens - p))),
                  logits);
    m.bytes = s.kvCacheBytes();
    m.bytesF32 = s.kvCacheBytesF32();
    return m;
}

void checkChunkedEvalInput(const char* what, const WeightSource& weights,
                           const std::vector<int32_t>& tokens, const PerplexityOptions& opts) {
    const std::string w(what);
    if (opts.ctx < 4) throw ArgumentError(w + ": context must be at least 4 tokens");
    if (opts.batch <= 0) throw ArgumentError(w + ": batch must be > 0");
    const int64_t n = int64_t(tokens.size());
    if (n < opts.ctx)
        throw ArgumentError(w + ": the text has " + std::to_string(n) +
                            " tokens, fewer than one context of " + std::to_string(opts.ctx));
    if (opts.bosId >= weights.spec().vocab)
        throw ArgumentError(w + ": BOS id " + std::to_string(opts.bosId) +
                            " is outside the vocabulary");
}

PerplexityResult computePerplexity(const WeightSource& weights, const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& opts, Progress& progress) {
    using Clock = std::chrono::steady_clock;
    checkChunkedEvalInput("perplexity", weights, tokens, opts);
    const int64_t n = int64_t(tokens.size());
    const ModelSpec& spec = weights.spec();
    const int64_t vocab = spec.vocab;

    PerplexityResult r;
    r.mode = opts.mode;
    r.ctx = opts.ctx;
    const int64_t ctx = opts.ctx;
    int64_t stride = 0;
    if (opts.mode == PerplexityMode::LlamaCppChunks) {
        r.totalChunks = n / ctx;
    } else {
        stride = opts.stride > 0 ? opts.stride : ctx / 2;
        if (stride > ctx) throw ArgumentError("perplexity: stride must not exceed the context");
        // Windows start at 0, stride, 2*stride, ... until one reaches the end of the text.
        r.totalChunks = n <= ctx ? 1 : 1 + (n - ctx + stride - 1) / stride;
    }
    const int64_t chunks =
        opts.maxChunks > 0 ? std::min(opts.maxChunks, r.totalChunks) : r.totalChunks;

    // Chunks are independent (the cache is cleared between them), so with several threads each
    // thread runs its own single-threaded Session on whole chunks: no synchronisation inside the
    // forward pass, which matters for small models whose per-layer products are too small to
    // split. Large models (where per-session memory would be large) split each product instead.
    const int threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
    const int64_t batch = std::min(opts.batch, ctx);
    const double sessionBytes =
        4.0 * (double(spec.nLayers) * double(ctx) * double(2 * spec.nKvHeads * spec.headDim) +
               double(batch) * double(4 * spec.dim + 2 * spec.nHeads * spec.headDim +
                                      3 * spec.nKvHeads * spec.headDim + 2 * spec.hidden) +
               double(ctx) * double(vocab));
    const int workers =
        int(std::clamp<int64_t>(std::min<int64_t>(threads, chunks), 1,
                                sessionBytes * threads <= 1024.0 * 1024 * 1024 ? threads : 1));
    std::vector<std::unique_ptr<Session>> sessions;
    for (int i = 0; i < workers; ++i) {
        SessionOptions so;
        so.contextLength = ctx;
        so.batchSize = batch;
        so.threads = workers > 1 ? 1 : threads;
        so.exactActivations = opts.exactActivations;
        so.kvCache = opts.kvCache;
        sessions.push_back(std::make_unique<Session>(weights, so));
    }

    std::vector<std::vector<double>> chunkNll(static_cast<size_t>(chunks));
    std::vector<char> chunkDone(size_t(chunks), 0);
    std::vector<std::vector<double>> logProbs(static_cast<size_t>(workers)); // per thread
    std::vector<std::vector<int32_t>> windows(static_cast<size_t>(workers));
    Accum live;
    const auto t0 = Clock::now();
    auto work = [&](int64_t c, int thread) {
        Session& session = *sessions[size_t(thread)];
        std::vector<int32_t>& window = windows[size_t(thread)];
        int64_t first = 0; // first window index whose token is scored
        int64_t begin = 0, end = 0;
        if (opts.mode == PerplexityMode::LlamaCppChunks) {
            begin = c * ctx;
            end = begin + ctx;
            first = ctx / 2 + 1; // positions ctx/2 .. ctx-2 predict ctx/2+1 .. ctx-1
        } else {
            begin = c * stride;
            end = std::min(begin + ctx, n);
            // Score what the previous window did not: tokens from its end on (HF).
            const int64_t prevEnd = c == 0 ? 0 : std::min((c - 1) * stride + ctx, n);
            first = std::max<int64_t>(prevEnd - begin, 1);
        }
        window.assign(tokens.begin() + begin, tokens.begin() + end);
        if (opts.mode == PerplexityMode::LlamaCppChunks && opts.bosId >= 0) window[0] = opts.bosId;
        const int64_t len = end - begin;
        session.reset();
        // log p(window[i]) for i in [first, len): on a resident GPU forward the logits stay on
        // the device and only these numbers come back.
        std::vector<double>& lp = logProbs[size_t(thread)];
        session.scoreFrom(window, first - 1, lp);
        auto& out = chunkNll[size_t(c)];
        out.clear();
        for (int64_t i = first; i < len; ++i) out.push_back(-lp[size_t(i - first)]);
    };
    auto merge = [&](int64_t c, int thread, int64_t finished) {
        const Session& session = *sessions[size_t(thread)];
        r.kvCacheBytes = std::max(r.kvCacheBytes, session.kvCacheBytes());
        r.kvCacheBytesF32 = std::max(r.kvCacheBytesF32, session.kvCacheBytesF32());
        r.kvCacheF16 = session.kvCacheF16();
        chunkDone[size_t(c)] = 1;
        for (double v : chunkNll[size_t(c)]) live.add(v);
        char stage[96];
        std::snprintf(stage, sizeof stage, "chunk %lld/%lld, PPL %.4f", (long long)finished,
                      (long long)chunks, std::exp(live.sum / double(live.count)));
        return std::string(stage);
    };
    const bool complete = runChunks(chunks, workers, progress, "perplexity", work, merge);

    // Aggregate in chunk order (the same numbers whatever the thread count).
    Accum acc;
    for (int64_t c = 0; c < chunks; ++c) {
        if (!chunkDone[size_t(c)]) continue;
        for (double v : chunkNll[size_t(c)]) {
            acc.add(v);
            r.nll.push_back(float(v));
        }
        r.runningPpl.push_back(std::exp(acc.sum / double(std::max<int64_t>(acc.count, 1))));
        r.tokensEvaluated += opts.mode == PerplexityMode::LlamaCppChunks
                                 ? ctx
                                 : std::min(c * stride + ctx, n) - c * stride;
        ++r.chunks;
    }
    for (const auto& s : sessions) {
        const Session::MacCounts mc = s->macCounts();
        r.macs.dense += mc.dense;
        r.macs.zeroInput += mc.zeroInput;
    }
    if (!complete) r.status = Status::Cancelled;
    finish(r, acc, std::chrono::duration<double>(Clock::now() - t0).count());
    return r;
}

} // namespace lcw
