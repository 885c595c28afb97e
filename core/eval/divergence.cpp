#include "core/eval/divergence.h"

#include "core/eval/chunk_runner.h"

#include "core/runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include <omp.h>

namespace lcw {

namespace {

/// Linear interpolation between order statistics (llama.cpp's percentile, numpy's default).
double percentile(const std::vector<double>& sorted, double fraction) {
    if (sorted.empty()) return 0;
    if (fraction <= 0) return sorted.front();
    if (fraction >= 1) return sorted.back();
    const double p = fraction * double(sorted.size() - 1);
    const size_t ip = size_t(p);
    const double f = p - double(ip);
    const size_t next = std::min(ip + 1, sorted.size() - 1);
    return (1 - f) * sorted[ip] + f * sorted[next];
}

/// Mean and standard error of the mean as llama.cpp computes them: sqrt(var / (N - 1)).
void meanAndError(const std::vector<double>& v, double& mean, double& error) {
    mean = error = 0;
    if (v.empty()) return;
    double s = 0, s2 = 0;
    for (double x : v) {
        s += x;
        s2 += x * x;
    }
    const double n = double(v.size());
    mean = s / n;
    const double var = s2 / n - mean * mean;
    error = (v.size() > 1 && var > 0) ? std::sqrt(var / (n - 1)) : 0;
}

/// ln of Σ exp(row[i]) in double.
double logSumExp(const float* row, int64_t n) {
    double mx = row[0];
    for (int64_t i = 1; i < n; ++i) mx = std::max(mx, double(row[i]));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(double(row[i]) - mx);
    return mx + std::log(s);
}

int64_t argmax(const float* row, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
        if (row[i] > row[best]) best = i;
    return best;
}

/// Per scored token values of one configuration over one chunk.
struct TokenValues {
    std::vector<double> kld, dp, nll;
    std::vector<char> sameTop;
    void clear() {
        kld.clear();
        dp.clear();
        nll.clear();
        sameTop.clear();
    }
};

} // namespace

Distribution summarize(std::vector<double> values) {
    Distribution d;
    if (values.empty()) return d;
    meanAndError(values, d.mean, d.meanError);
    std::sort(values.begin(), values.end());
    d.min = values.front();
    d.max = values.back();
    d.median = percentile(values, 0.5);
    d.p999 = percentile(values, 0.999);
    d.p99 = percentile(values, 0.99);
    d.p95 = percentile(values, 0.95);
    d.p90 = percentile(values, 0.90);
    d.p10 = percentile(values, 0.10);
    d.p5 = percentile(values, 0.05);
    d.p1 = percentile(values, 0.01);
    d.p01 = percentile(values, 0.001);
    return d;
}

namespace {

void checkDivergenceInput(const WeightSource& baseline,
                          const std::vector<DivergenceConfig>& configs,
                          const std::vector<int32_t>& tokens, const PerplexityOptions& opts) {
    if (opts.mode != PerplexityMode::LlamaCppChunks)
        throw ArgumentError("divergence: only llama.cpp chunks are supported");
    checkChunkedEvalInput("divergence", baseline, tokens, opts);
    const int64_t vocab = baseline.spec().vocab;
    for (const auto& c : configs) {
        if (!c.weights) throw ArgumentError("divergence: configuration '" + c.name + "' is null");
        if (c.weights->spec().vocab != vocab)
            throw ArgumentError("divergence: configuration '" + c.name + "' has a vocabulary of " +
                                std::to_string(c.weights->spec().vocab) + " tokens, the baseline " +
                                std::to_string(vocab) + "; they cannot be compared");
    }
    for (int32_t t : tokens)
        if (t < 0 || t >= vocab)
            throw ArgumentError("divergence: token id " + std::to_string(t) +
                                " is outside the vocabulary");
}

/// One session per source (sessions[0] the baseline, sessions[1 + k] configuration k) for each
/// worker. As computePerplexity: whole chunks per single-threaded worker for small models, one
/// worker splitting each product for large ones.
std::vector<std::vector<std::unique_ptr<Session>>>
makeWorkerSessions(const WeightSource& baseline, const std::vector<DivergenceConfig>& configs,
                   const PerplexityOptions& opts, int64_t chunks, int threads) {
    const int64_t ctx = opts.ctx;
    const int64_t batch = std::min(opts.batch, ctx);
    double sessionBytes = 0;
    auto addSession = [&](const ModelSpec& s) {
        sessionBytes +=
            4.0 * (double(s.nLayers) * double(ctx) * double(2 * s.nKvHeads * s.headDim) +
                   double(batch) * double(4 * s.dim + 2 * s.nHeads * s.headDim +
                                          3 * s.nKvHeads * s.headDim + 2 * s.hidden) +
                   double(ctx) * double(s.vocab));
    };
    addSession(baseline.spec());
    for (const auto& c : configs) addSession(c.weights->spec());
    const int workers =
        int(std::clamp<int64_t>(std::min<int64_t>(threads, chunks), 1,
                                sessionBytes * threads <= 1024.0 * 1024 * 1024 ? threads : 1));
    std::vector<std::vector<std::unique_ptr<Session>>> sessions(static_cast<size_t>(workers));
    for (int w = 0; w < workers; ++w) {
        SessionOptions so;
        so.contextLength = ctx;
        so.batchSize = batch;
        so.threads = workers > 1 ? 1 : threads;
        so.exactActivations = opts.exactActivations;
        so.kvCache = opts.kvCache;
        sessions[size_t(w)].push_back(std::make_unique<Session>(baseline, so));
        for (const auto& c : configs)
            sessions[size_t(w)].push_back(std::make_unique<Session>(*c.weights, so));
    }
    return sessions;
}

/// Per worker: scratch and the seconds spent on each source.
struct Scratch {
    std::vector<float> baseLogits, logits;
    std::vector<double> baseLse;
    std::vector<int64_t> baseTop;
    std::vector<int32_t> window;
    std::vector<double> seconds;
};

/// The baseline's log-sum-exp, top token and NLL of every scored row (rows from position
/// first − 1 of sc.baseLogits).
void scoreBaselineRows(Scratch& sc, int64_t rows, int64_t first, int64_t vocab,
                       std::vector<double>& nll) {
    sc.baseLse.resize(size_t(rows));
    sc.baseTop.resize(size_t(rows));
    nll.clear();
    for (int64_t i = 0; i < rows; ++i) {
        const float* row = sc.baseLogits.data() + i * vocab;
        sc.baseLse[size_t(i)] = logSumExp(row, vocab);
        sc.baseTop[size_t(i)] = argmax(row, vocab);
        nll.push_back(sc.baseLse[size_t(i)] - double(row[sc.window[size_t(first + i)]]));
    }
}

/// KLD, Δp, NLL and top-token agreement of a configuration's rows (sc.logits) against the
/// baseline's.
void scoreConfigRows(const Scratch& sc, int64_t rows, int64_t first, int64_t vocab,
                     TokenValues& tv) {
    tv.clear();
    for (int64_t i = 0; i < rows; ++i) {
        const float* qb = sc.baseLogits.data() + i * vocab;
        const float* qq = sc.logits.data() + i * vocab;
        const double lseB = sc.baseLse[size_t(i)];
        const double lseQ = logSumExp(qq, vocab);
        double kld = 0;
        for (int64_t v = 0; v < vocab; ++v) {
            const double lb = double(qb[v]) - lseB;
            const double lq = double(qq[v]) - lseQ;
            kld += std::exp(lb) * (lb - lq);
        }
        const int32_t t = sc.window[size_t(first + i)];
        const double lbt = double(qb[t]) - lseB;
        const double lqt = double(qq[t]) - lseQ;
        tv.kld.push_back(kld);
        tv.dp.push_back(std::exp(lqt) - std::exp(lbt));
        tv.nll.push_back(-lqt);
        tv.sameTop.push_back(argmax(qq, vocab) == sc.baseTop[size_t(i)] ? 1 : 0);
    }
}

/// PPL, ln-ratio, correlation, KLD and Δp distributions and top-token agreement of one
/// configuration from its per-token values (nllB: the baseline's, in the same order).
void summarizeConfig(DivergenceStats& st, std::vector<double> kld, std::vector<double> dp,
                     const std::vector<double>& nllQ, const std::vector<double>& nllB,
                     int64_t same) {
    const size_t m = nllQ.size();
    double meanQ = 0, errQ = 0;
    meanAndError(nllQ, meanQ, errQ);
    st.ppl = std::exp(meanQ);
    st.pplError = st.ppl * errQ;
    std::vector<double> lnRatio(m), dp2(m);
    double sb = 0, sq = 0, sbb = 0, sqq = 0, sbq = 0;
    for (size_t i = 0; i < m; ++i) {
        lnRatio[i] = nllQ[i] - nllB[i];
        dp2[i] = dp[i] * dp[i];
        sb += nllB[i];
        sq += nllQ[i];
        sbb += nllB[i] * nllB[i];
        sqq += nllQ[i] * nllQ[i];
        sbq += nllB[i] * nllQ[i];
    }
    meanAndError(lnRatio, st.meanLnRatio, st.meanLnRatioError);
    st.pplRatio = std::exp(st.meanLnRatio);
    const double dn = double(m);
    const double cov = sbq / dn - (sb / dn) * (sq / dn);
    const double varB = sbb / dn - (sb / dn) * (sb / dn);
    const double varQ = sqq / dn - (sq / dn) * (sq / dn);
    st.lnProbCorrelation = varB > 0 && varQ > 0 ? cov / std::sqrt(varB * varQ) : 1.0;
    st.kld = summarize(std::move(kld));
    st.deltaP = summarize(std::move(dp));
    double ms = 0, msErr = 0;
    meanAndError(dp2, ms, msErr);
    st.rmsDeltaP = std::sqrt(ms);
    st.rmsDeltaPError = st.rmsDeltaP > 0 ? msErr / (2 * st.rmsDeltaP) : 0;
    st.sameTop = double(same) / dn;
    st.sameTopError = m > 1 ? std::sqrt(st.sameTop * (1 - st.sameTop) / (dn - 1)) : 0;
}

} // namespace

DivergenceResult compareToBaseline(const WeightSource& baseline,
                                   const std::vector<DivergenceConfig>& configs,
                                   const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& opts, Progress& progress) {
    using Clock = std::chrono::steady_clock;
    checkDivergenceInput(baseline, configs, tokens, opts);
    const int64_t vocab = baseline.spec().vocab;
    const int64_t ctx = opts.ctx;
    const size_t nc = configs.size();
    DivergenceResult r;
    r.ctx = ctx;
    r.totalChunks = int64_t(tokens.size()) / ctx;
    const int64_t chunks =
        opts.maxChunks > 0 ? std::min(opts.maxChunks, r.totalChunks) : r.totalChunks;
    const int threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
    auto sessions = makeWorkerSessions(baseline, configs, opts, chunks, threads);
    const int workers = int(sessions.size());

    std::vector<std::vector<double>> baseNll(static_cast<size_t>(chunks));
    std::vector<std::vector<TokenValues>> values(static_cast<size_t>(chunks),
                                                 std::vector<TokenValues>(nc));
    std::vector<char> chunkDone(static_cast<size_t>(chunks), 0);
    std::vector<Scratch> scratch(static_cast<size_t>(workers));
    for (Scratch& sc : scratch) sc.seconds.assign(nc + 1, 0.0);
    const auto t0 = Clock::now();
    // Each chunk runs through the baseline once and through every configuration once.
    auto work = [&](int64_t c, int thread) {
        auto& mySessions = sessions[size_t(thread)];
        Scratch& sc = scratch[size_t(thread)];
        const int64_t first = ctx / 2 + 1; // positions ctx/2 .. ctx-2 are scored
        sc.window.assign(tokens.begin() + c * ctx, tokens.begin() + c * ctx + ctx);
        if (opts.bosId >= 0) sc.window[0] = opts.bosId;
        const int64_t rows = ctx - first;
        for (size_t k = 0; k <= nc; ++k) {
            const auto ts = Clock::now();
            Session& s = *mySessions[k];
            s.reset();
            if (k == 0) {
                s.forwardFrom(sc.window, sc.baseLogits, first - 1);
                scoreBaselineRows(sc, rows, first, vocab, baseNll[size_t(c)]);
            } else {
                s.forwardFrom(sc.window, sc.logits, first - 1);
                scoreConfigRows(sc, rows, first, vocab, values[size_t(c)][k - 1]);
            }
            sc.seconds[k] += std::chrono::duration<double>(Clock::now() - ts).count();
        }
    };
    auto merge = [&](int64_t c, int, int64_t finished) {
        chunkDone[size_t(c)] = 1;
        char stage[64];
        std::snprintf(stage, sizeof stage, "chunk %lld/%lld", (long long)finished,
                      (long long)chunks);
        return std::string(stage);
    };
    const bool complete = runChunks(chunks, workers, progress, "divergence", work, merge);
    std::vector<double> threadSeconds(nc + 1, 0.0);
    for (const Scratch& sc : scratch)
        for (size_t k = 0; k <= nc; ++k) threadSeconds[k] += sc.seconds[k];
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();

    // Aggregate in chunk order (the same numbers whatever the thread count).
    std::vector<double> nllB;
    for (int64_t c = 0; c < chunks; ++c) {
        if (!chunkDone[size_t(c)]) continue;
        ++r.chunks;
        nllB.insert(nllB.end(), baseNll[size_t(c)].begin(), baseNll[size_t(c)].end());
    }
    r.scoredTokens = int64_t(nllB.size());
    double meanB = 0, errB = 0;
    meanAndError(nllB, meanB, errB);
    r.baselinePpl = std::exp(meanB);
    r.baselinePplError = r.baselinePpl * errB;
    double totalThread = 0;
    for (double s : threadSeconds) totalThread += s;
    auto share = [&](size_t k) {
        return workers > 1 && totalThread > 0 ? r.seconds * threadSeconds[k] / totalThread
                                              : threadSeconds[k];
    };
    r.baselineSeconds = share(0);
    auto macsOf = [&](size_t k) { // source k's counts, summed over the workers
        Session::MacCounts m;
        for (const auto& ws : sessions) {
            const Session::MacCounts c = ws[k]->macCounts();
            m.dense += c.dense;
            m.zeroInput += c.zeroInput;
        }
        return m;
    };
    r.baselineMacs = macsOf(0);

    for (size_t k = 0; k < nc; ++k) {
        DivergenceStats st;
        st.name = configs[k].name;
        std::vector<double> kld, dp, nllQ;
        int64_t same = 0;
        for (int64_t c = 0; c < chunks; ++c) {
            if (!chunkDone[size_t(c)]) continue;
            const TokenValues& tv = values[size_t(c)][k];
            kld.insert(kld.end(), tv.kld.begin(), tv.kld.end());
            dp.insert(dp.end(), tv.dp.begin(), tv.dp.end());
            nllQ.insert(nllQ.end(), tv.nll.begin(), tv.nll.end());
            for (char s : tv.sameTop) same += s;
        }
        st.scoredTokens = int64_t(nllQ.size());
        st.seconds = share(1 + k);
        st.macs = macsOf(1 + k);
        if (!nllQ.empty()) {
            st.baselinePpl = r.baselinePpl;
            summarizeConfig(st, std::move(kld), std::move(dp), nllQ, nllB, same);
        }
        r.configs.push_back(std::move(st));
    }
    if (!complete) r.status = Status::Cancelled;
    return r;
}

} // namespace lcw
