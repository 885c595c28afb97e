#include "core/eval/generation_compare.h"

#include "core/compress/compressed_model.h"
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

namespace lcw {

namespace {

/// ln Σ exp(row[i]) in double.
double logSumExp(const float* row, int64_t n) {
    double mx = row[0];
    for (int64_t i = 1; i < n; ++i) mx = std::max(mx, double(row[i]));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(double(row[i]) - mx);
    return mx + std::log(s);
}

std::vector<int32_t> defaultEos(const WeightSource& w) {
    std::vector<int32_t> eos = w.spec().eosIds;
    const Model* model = dynamic_cast<const Model*>(&w);
    if (!model)
        if (const auto* cm = dynamic_cast<const compress::CompressedModel*>(&w))
            model = &cm->base();
    if (model && model->hasTokenizer()) {
        const int32_t e = model->tokenizer().eosId();
        if (e >= 0 && std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
    }
    return eos;
}

/// Counts work units for the progress bar and forwards cancellation.
struct Ticker {
    Progress& progress;
    int64_t total, done = 0;
    bool cancelled = false;
    bool tick(const std::string& stage) {
        ++done;
        if (!cancelled && !progress.report(double(done) / double(total), stage)) cancelled = true;
        return !cancelled;
    }
};

/// Generates one continuation; false when cancelled.
bool generateTrack(const WeightSource& w, const std::vector<int32_t>& prompt, int64_t maxNew,
                   const GenerationCompareOptions& opts, const std::vector<int32_t>& eos,
                   GenerationTrack& t, Ticker& ticker) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    SessionOptions so;
    so.contextLength = int64_t(prompt.size()) + maxNew;
    so.threads = opts.threads;
    so.exactActivations = opts.exactActivations;
    Session s(w, so);
    std::mt19937_64 rng(opts.sampling.seed);
    std::vector<float> logits;
    const int64_t vocab = w.spec().vocab;
    s.forward(prompt, logits, false);
    bool ok = true;
    for (int64_t i = 0; i < maxNew; ++i) {
        const int32_t tok = sampleToken(logits.data(), vocab, opts.sampling, rng);
        t.ids.push_back(tok);
        t.logProbs.push_back(double(logits[size_t(tok)]) - logSumExp(logits.data(), vocab));
        if (!ticker.tick(t.name + " token " + std::to_string(i + 1))) {
            ok = false;
            break;
        }
        if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
            t.stoppedAtEos = true;
            break;
        }
        if (i + 1 == maxNew) break;
        const int32_t one[1] = {tok};
        s.forward(one, logits, false);
    }
    t.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    return ok;
}

/// Logits of `w` predicting each of the `n` tokens after the prompt, teacher-forced over
/// prompt + text[0..n-2]: [n, vocab].
void teacherForced(const WeightSource& w, const std::vector<int32_t>& prompt,
                   const std::vector<int32_t>& text, const GenerationCompareOptions& opts,
                   std::vector<float>& logits) {
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), text.begin(), text.end() - 1);
    SessionOptions so;
    so.contextLength = int64_t(ids.size());
    so.threads = opts.threads;
    so.exactActivations = opts.exactActivations;
    Session s(w, so);
    s.forwardFrom(ids, logits, int64_t(prompt.size()) - 1);
}

} // namespace

int64_t firstDifference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    const size_t n = std::min(a.size(), b.size());
    for (size_t i = 0; i < n; ++i)
        if (a[i] != b[i]) return int64_t(i);
    return a.size() == b.size() ? -1 : int64_t(n);
}

GenerationComparison compareGenerations(const WeightSource& base,
                                        const std::vector<DivergenceConfig>& configs,
                                        const std::vector<int32_t>& prompt,
                                        const GenerationCompareOptions& opts, Progress& progress) {
    using Clock = std::chrono::steady_clock;
    const ModelSpec& spec = base.spec();
    const int64_t vocab = spec.vocab;
    if (prompt.empty()) throw ArgumentError("compare generations: the prompt is empty");
    if (opts.maxNewTokens < 1)
        throw ArgumentError("compare generations: max new tokens must be at least 1, got " +
                            std::to_string(opts.maxNewTokens));
    for (int32_t t : prompt)
        if (t < 0 || t >= vocab)
            throw ArgumentError("compare generations: prompt token id " + std::to_string(t) +
                                " is outside the vocabulary of " + std::to_string(vocab));
    for (const auto& c : configs) {
        if (!c.weights)
            throw ArgumentError("compare generations: configuration '" + c.name + "' is null");
        if (c.weights->spec().vocab != vocab)
            throw ArgumentError("compare generations: configuration '" + c.name +
                                "' has a vocabulary of " + std::to_string(c.weights->spec().vocab) +
                                " tokens, the baseline " + std::to_string(vocab) +
                                "; they cannot be compared");
    }
    int64_t maxNew = opts.maxNewTokens;
    if (spec.maxSeq > 0) {
        if (int64_t(prompt.size()) >= spec.maxSeq)
            throw ArgumentError(
                "compare generations: the prompt has " + std::to_string(prompt.size()) +
                " tokens, the model's maximum sequence length is " + std::to_string(spec.maxSeq));
        maxNew = std::min(maxNew, spec.maxSeq - int64_t(prompt.size()));
    }
    const std::vector<int32_t> eos = opts.eosIds.empty() ? defaultEos(base) : opts.eosIds;

    GenerationComparison r;
    r.prompt = prompt;
    r.baseline.name = "baseline";
    r.configs.resize(configs.size());
    for (size_t k = 0; k < configs.size(); ++k) r.configs[k].name = configs[k].name;
    // Generation steps of every source, then one teacher-forced pass per source.
    Ticker ticker{progress, int64_t(configs.size() + 1) * (maxNew + 1)};
    if (!progress.report(0.0, "compare generations")) ticker.cancelled = true;

    auto finish = [&] {
        r.status = Status::Cancelled;
        return r;
    };
    if (ticker.cancelled || !generateTrack(base, prompt, maxNew, opts, eos, r.baseline, ticker))
        return finish();
    for (size_t k = 0; k < configs.size(); ++k)
        if (!generateTrack(*configs[k].weights, prompt, maxNew, opts, eos, r.configs[k], ticker))
            return finish();

    // Teacher-forced along the baseline's text.
    const std::vector<int32_t>& text = r.baseline.ids;
    const size_t n = text.size();
    std::vector<float> baseLogits, logits;
    auto t0 = Clock::now();
    teacherForced(base, prompt, text, opts, baseLogits);
    std::vector<double> baseLse(n);
    for (size_t i = 0; i < n; ++i) baseLse[i] = logSumExp(baseLogits.data() + i * vocab, vocab);
    r.baseline.kld.assign(n, 0.0);
    r.baseline.baselineTokenLogProbs.resize(n);
    for (size_t i = 0; i < n; ++i)
        r.baseline.baselineTokenLogProbs[i] =
            double(baseLogits[i * size_t(vocab) + size_t(text[i])]) - baseLse[i];
    r.baseline.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    if (!ticker.tick("baseline teacher-forced")) return finish();

    for (size_t k = 0; k < configs.size(); ++k) {
        GenerationTrack& t = r.configs[k];
        t0 = Clock::now();
        t.firstDivergence = firstDifference(text, t.ids);
        teacherForced(*configs[k].weights, prompt, text, opts, logits);
        t.kld.resize(n);
        t.baselineTokenLogProbs.resize(n);
        double sum = 0;
        for (size_t i = 0; i < n; ++i) {
            const float* pb = baseLogits.data() + i * size_t(vocab);
            const float* pq = logits.data() + i * size_t(vocab);
            const double lseQ = logSumExp(pq, vocab);
            double kld = 0;
            for (int64_t v = 0; v < vocab; ++v) {
                const double lb = double(pb[v]) - baseLse[i];
                kld += std::exp(lb) * (lb - (double(pq[v]) - lseQ));
            }
            kld = std::max(kld, 0.0); // rounding can leave -1e-17 for identical distributions
            t.kld[i] = kld;
            t.baselineTokenLogProbs[i] = double(pq[text[i]]) - lseQ;
            sum += kld;
            t.maxKld = std::max(t.maxKld, kld);
        }
        t.meanKld = n ? sum / double(n) : 0.0;
        t.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
        if (!ticker.tick(t.name + " teacher-forced")) return finish();
    }
    return r;
}

} // namespace lcw
