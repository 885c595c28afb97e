// Inference session: positions, batching, sampling and observers; the forward of each
// architecture family lives in arch_*.cpp behind runtime::ArchRunner.
//
// Weight storage: the runtime never converts the model to float32 as a whole. F32 weights are
// multiplied in place from the memory map; F16, BF16 and GGUF block formats are dequantised tile
// by tile inside the matrix product (a few rows at a time into a per-thread buffer that stays in
// cache, then multiplied), so memory use stays at the file size plus small per-thread scratch.
// Embedding lookups dequantise only the rows of the requested tokens; only the small vectors
// (norm weights, biases) are converted to float32 when the Session is created.
#include "core/runtime/session.h"

#include "core/common/error.h"
#include "core/runtime/arch.h"
#include "core/runtime/cpu/kernels.h"
#include "core/tokenizer/tokenizer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>

namespace lcw {

const char* linearRoleName(LinearRole r) {
    switch (r) {
    case LinearRole::Q:
        return "attn.q";
    case LinearRole::K:
        return "attn.k";
    case LinearRole::V:
        return "attn.v";
    case LinearRole::O:
        return "attn.o";
    case LinearRole::Gate:
        return "mlp.gate";
    case LinearRole::Up:
        return "mlp.up";
    case LinearRole::Down:
        return "mlp.down";
    case LinearRole::LmHead:
        return "lm_head";
    case LinearRole::Router:
        return "mlp.router";
    case LinearRole::EmbedProjIn:
        return "embed_proj_in";
    case LinearRole::EmbedProjOut:
        return "embed_proj_out";
    case LinearRole::SsmIn:
        return "mixer.in_proj";
    case LinearRole::SsmX:
        return "mixer.x_proj";
    case LinearRole::SsmDt:
        return "mixer.dt_proj";
    case LinearRole::SsmOut:
        return "mixer.out_proj";
    }
    return "?";
}

struct Session::Impl {
    const WeightSource& w;
    const ModelSpec& s;
    SessionOptions opts;
    int64_t ctx = 0, batch = 0, pos = 0;
    int threads = 0;
    std::vector<Observer*> observers;
    std::vector<int32_t> eos;
    std::unique_ptr<runtime::Backend> backend;
    std::string deviceNote;
    std::unique_ptr<runtime::ArchRunner> runner;
    runtime::MacCounter macs;
    bool kvF16 = false; ///< the plain KV cache holds F16 values

    Impl(const WeightSource& ws, SessionOptions o) : w(ws), s(ws.spec()), opts(o) {}

    void bind();
    void runBatch(const int32_t* ids, int64_t n, int64_t logitsFrom, float* logitsOut) {
        runner->run(ids, n, pos, logitsFrom, logitsOut);
        pos += n;
        if (logitsFrom < n) checkFinite(logitsOut, n - logitsFrom);
    }
    void checkFinite(const float* logits, int64_t rows);
    /// Throws the error of non-finite logits (naming the weights when they hold NaN/Inf).
    [[noreturn]] void nonFinite();
    /// forwardFrom()'s checks; returns firstLogit clamped (n when no logits are computed).
    int64_t checkForward(std::span<const int32_t> ids, int64_t firstLogit) const;
    std::vector<float> scoreLogits; ///< scoreFrom(): a batch's logits on the host path
};

void Session::Impl::bind() {
    static const char* kArchs[] = {"llama",    "mistral",  "qwen2",   "qwen3", "gemma",
                                   "gemma2",   "phi3",     "mixtral", "opt",   "gpt2",
                                   "gpt_neox", "stablelm", "falcon",  "bloom", "mamba"};
    if (std::find_if(std::begin(kArchs), std::end(kArchs),
                     [&](const char* a) { return s.arch == a; }) == std::end(kArchs)) {
        std::string list;
        for (const char* a : kArchs) list += (list.empty() ? "" : ", ") + std::string(a);
        throw UnsupportedError("the CPU runtime does not support architecture '" + s.arch +
                               "' (supported: " + list + ")");
    }
    const runtime::DeviceSpec dev =
        opts.device.empty() ? runtime::defaultDevice() : runtime::parseDeviceSpec(opts.device);
    backend = runtime::makeBackend(
        dev, w, opts.gpuLayers >= -1 ? opts.gpuLayers : runtime::defaultGpuLayers(), &deviceNote);
    kvF16 = !s.isMamba() && backend->device().id == "cpu" && opts.kvCache == KvCacheType::F16;
    const runtime::RunEnv env{w,
                              s,
                              threads,
                              ctx,
                              batch,
                              observers,
                              opts.stopAfterLayer,
                              opts.exactActivations,
                              backend.get(),
                              -1,
                              &macs,
                              kvF16};
    runner = s.isMamba() ? runtime::makeMambaRunner(env) : runtime::makeTransformerRunner(env);

    eos = s.eosIds;
    if (const auto* model = dynamic_cast<const Model*>(&w); model && model->hasTokenizer()) {
        const int32_t e = model->tokenizer().eosId();
        if (e >= 0 && std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
    }
}

void Session::Impl::checkFinite(const float* logits, int64_t rows) {
    const int64_t total = rows * s.vocab;
    for (int64_t i = 0; i < total; ++i)
        if (!std::isfinite(logits[i])) nonFinite();
}

void Session::Impl::nonFinite() {
    // Name the file: the first NaN / Inf weight when there is one (a scan, on this error path
    // only), else what the weights came from.
    if (auto bad = w.firstNonFiniteWeight()) throw Error("logits became non-finite: " + *bad);
    const std::string origin = w.describeOrigin();
    if (origin.empty()) throw Error("logits became non-finite");
    throw Error(origin + ": logits became non-finite (all weights are finite; the "
                         "activations overflowed)");
}

Session::Session(const WeightSource& weights, SessionOptions opts)
    : m(std::make_unique<Impl>(weights, opts)) {
    const ModelSpec& s = m->s;
    if (opts.contextLength < 0) throw ArgumentError("context length must be >= 0");
    m->ctx = opts.contextLength > 0 ? opts.contextLength : s.maxSeq;
    if (m->ctx <= 0) m->ctx = 2048;
    if (s.posEmbed == PosEmbedding::Learned && !s.isMamba() && m->ctx > s.maxSeq)
        throw ArgumentError("context length " + std::to_string(m->ctx) +
                            " exceeds the model's learned position table (" +
                            std::to_string(s.maxSeq) + " positions)");
    if (opts.batchSize <= 0) throw ArgumentError("batch size must be > 0");
    m->batch = std::min(opts.batchSize, m->ctx);
    m->threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
    m->bind();
}

Session::~Session() = default;

void Session::reset() {
    m->pos = 0;
}
int64_t Session::position() const {
    return m->pos;
}
int64_t Session::contextLength() const {
    return m->ctx;
}

void Session::forward(std::span<const int32_t> ids, std::vector<float>& logits, bool allLogits) {
    forwardFrom(ids, logits, allLogits ? 0 : int64_t(ids.size()) - 1);
}

int64_t Session::Impl::checkForward(std::span<const int32_t> ids, int64_t firstLogit) const {
    const int64_t n = int64_t(ids.size());
    if (n == 0) throw ArgumentError("forward() needs at least one token");
    for (int64_t i = 0; i < n; ++i)
        if (ids[size_t(i)] < 0 || ids[size_t(i)] >= s.vocab)
            throw ArgumentError("token id " + std::to_string(ids[size_t(i)]) + " at index " +
                                std::to_string(i) + " is outside the vocabulary [0, " +
                                std::to_string(s.vocab) + ")");
    if (pos + n > ctx)
        throw ArgumentError("context overflow: " + std::to_string(pos) + " cached + " +
                            std::to_string(n) + " new tokens exceed the context length " +
                            std::to_string(ctx));
    firstLogit = std::clamp<int64_t>(firstLogit, 0, n);
    if (opts.stopAfterLayer >= 0) firstLogit = n; // the blocks after the stop do not run
    return firstLogit;
}

void Session::forwardFrom(std::span<const int32_t> ids, std::vector<float>& logits,
                          int64_t firstLogit) {
    const int64_t n = int64_t(ids.size());
    firstLogit = m->checkForward(ids, firstLogit);
    logits.resize(size_t((n - firstLogit) * m->s.vocab));
    const int64_t startPos = m->pos;
    try {
        for (int64_t b0 = 0; b0 < n; b0 += m->batch) {
            const int64_t nb = std::min(m->batch, n - b0);
            const int64_t from = std::max<int64_t>(firstLogit - b0, 0);
            float* out = logits.data() + std::max<int64_t>(b0 - firstLogit, 0) * m->s.vocab;
            m->runBatch(ids.data() + b0, nb, from, out);
        }
    } catch (...) {
        // Keep the cache consistent: a failed call appends nothing.
        m->pos = startPos;
        throw;
    }
}

void Session::scoreFrom(std::span<const int32_t> ids, int64_t firstLogit,
                        std::vector<double>& logProbs) {
    const int64_t n = int64_t(ids.size()), vocab = m->s.vocab;
    firstLogit = m->checkForward(ids, firstLogit);
    logProbs.clear();
    const int64_t startPos = m->pos;
    std::vector<int32_t> targets;
    std::vector<float> lp;
    try {
        for (int64_t b0 = 0; b0 < n; b0 += m->batch) {
            const int64_t nb = std::min(m->batch, n - b0);
            const int64_t from = std::min(std::max<int64_t>(firstLogit - b0, 0), nb);
            const int64_t rows = nb - from;
            // Row r is token b0 + from + r; it scores the next id (none for the last token).
            targets.assign(size_t(rows) + 1, -1);
            for (int64_t r = 0; r < rows; ++r)
                if (b0 + from + r + 1 < n) targets[size_t(r)] = ids[size_t(b0 + from + r + 1)];
            lp.assign(size_t(rows) + 1, 0.0f);
            m->scoreLogits.resize(size_t(std::max<int64_t>(rows, 1) * vocab));
            const bool onHost =
                m->runner->runScored(ids.data() + b0, nb, m->pos, from, m->scoreLogits.data(),
                                     targets.data(), lp.data());
            m->pos += nb;
            for (int64_t r = 0; r < rows; ++r) {
                const int32_t t = targets[size_t(r)];
                if (onHost) {
                    const float* row = m->scoreLogits.data() + r * vocab;
                    m->checkFinite(row, 1);
                    if (t >= 0) logProbs.push_back(kernels::logSoftmaxAt(row, vocab, t));
                } else {
                    if (!std::isfinite(lp[size_t(r)])) m->nonFinite();
                    if (t >= 0) logProbs.push_back(double(lp[size_t(r)]));
                }
            }
        }
    } catch (...) {
        m->pos = startPos; // a failed call appends nothing
        throw;
    }
}

GenerateResult Session::generate(const std::vector<int32_t>& prompt, int64_t maxNewTokens,
                                 const SamplingParams& sampling,
                                 const std::function<bool(int32_t)>& onToken) {
    using Clock = std::chrono::steady_clock;
    GenerateResult r;
    r.ids = prompt;
    r.promptTokens = int64_t(prompt.size());
    reset();
    if (prompt.empty()) throw ArgumentError("generate() needs a non-empty prompt");
    std::mt19937_64 rng(sampling.seed);
    std::vector<float> logits;
    auto t0 = Clock::now();
    forward(prompt, logits, false);
    r.prefillSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t vocab = m->s.vocab;
    t0 = Clock::now();
    for (int64_t i = 0; i < maxNewTokens; ++i) {
        const int32_t tok = sampleToken(logits.data(), vocab, sampling, rng);
        r.ids.push_back(tok);
        ++r.generatedTokens;
        if (onToken && !onToken(tok)) {
            r.status = Status::Cancelled;
            break;
        }
        if (std::find(m->eos.begin(), m->eos.end(), tok) != m->eos.end()) {
            r.stoppedAtEos = true;
            break;
        }
        if (i + 1 == maxNewTokens || m->pos >= m->ctx) break;
        const int32_t one[1] = {tok};
        forward(one, logits, false);
    }
    r.decodeSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
}

void Session::addObserver(Observer* o) {
    if (o && std::find(m->observers.begin(), m->observers.end(), o) == m->observers.end())
        m->observers.push_back(o);
}

void Session::removeObserver(Observer* o) {
    m->observers.erase(std::remove(m->observers.begin(), m->observers.end(), o),
                       m->observers.end());
}

const WeightSource& Session::weights() const {
    return m->w;
}

const runtime::DeviceInfo& Session::device() const {
    return m->backend->device();
}

const std::string& Session::deviceNote() const {
    return m->deviceNote;
}

int64_t Session::deviceProducts() const {
    return m->backend->counters().deviceProducts;
}

int64_t Session::fallbackProducts() const {
    return m->backend->counters().fallbackProducts;
}

uint64_t Session::deviceMemoryBytes() const {
    return m->backend->counters().deviceTotalBytes;
}

int64_t Session::deviceAttention() const {
    return m->backend->counters().deviceAttention;
}

int64_t Session::deviceForwards() const {
    return m->backend->counters().deviceForwards;
}

std::string Session::residentNote() const {
    return m->backend->counters().residentNote;
}

std::vector<std::vector<int64_t>> Session::expertTokenCounts() const {
    return m->runner->expertTokenCounts();
}

void Session::resetExpertTokenCounts() {
    m->runner->resetExpertTokenCounts();
}

Session::MacCounts Session::macCounts() const {
    return {m->macs.dense.load(), m->macs.zeroInput.load()};
}

uint64_t Session::kvCacheBytes() const {
    return m->runner->kvCacheBytes(m->pos, false);
}

uint64_t Session::kvCacheBytesF32() const {
    return m->runner->kvCacheBytes(m->pos, true);
}

bool Session::kvCacheF16() const {
    return m->kvF16;
}

int32_t sampleToken(const float* logits, int64_t vocab, const SamplingParams& p,
                    std::mt19937_64& rng) {
    if (vocab <= 0) throw ArgumentError("sampleToken: empty vocabulary");
    if (p.temperature <= 0.0f) {
        int64_t best = 0;
        for (int64_t i = 1; i < vocab; ++i)
            if (logits[i] > logits[best]) best = i;
        return int32_t(best);
    }
    // Hugging Face's order: temperature, then top-k (ties by lower id), then the smallest set of
    // most likely tokens whose mass reaches top-p. Only as much of the vocabulary is sorted as the
    // cuts need (sorting 150k logits per token would cost more than a small model's forward).
    thread_local std::vector<int32_t> idx;
    thread_local std::vector<double> prob;
    idx.resize(size_t(vocab));
    for (int64_t i = 0; i < vocab; ++i) idx[size_t(i)] = int32_t(i);
    auto better = [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    int64_t keep = vocab, sorted = 0;
    if (p.topK > 0 && p.topK < vocab) {
        keep = p.topK;
        std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), better);
        sorted = keep;
    }
    float mxf = logits[idx[0]];
    for (int64_t i = 1; i < keep; ++i) mxf = std::max(mxf, logits[idx[size_t(i)]]);
    const double mx = mxf, invT = 1.0 / double(p.temperature);
    double sum = 0;
    for (int64_t i = 0; i < keep; ++i)
        sum += std::exp((double(logits[idx[size_t(i)]]) - mx) * invT);
    if (p.topP < 1.0f) {
        // Grow the sorted prefix until it holds top-p of the mass.
        int64_t cut = 0;
        double cum = 0;
        for (int64_t want = std::min<int64_t>(keep, 64);; want = std::min(keep, want * 4)) {
            if (want > sorted) {
                std::partial_sort(idx.begin() + sorted, idx.begin() + want, idx.begin() + keep,
                                  better);
                sorted = want;
            }
            for (; cut < sorted; ++cut) {
                cum += std::exp((double(logits[idx[size_t(cut)]]) - mx) * invT) / sum;
                if (cum >= double(p.topP)) break;
            }
            if (cut < sorted || sorted == keep) break;
        }
        keep = std::min(cut + 1, keep);
    }
    prob.resize(size_t(keep));
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) {
        prob[size_t(i)] = std::exp((double(logits[idx[size_t(i)]]) - mx) * invT);
        sum += prob[size_t(i)];
    }
    // 53 random bits -> uniform double in [0, 1): the same on every standard library.
    const double u = double(rng() >> 11) * (1.0 / 9007199254740992.0) * sum;
    double cum = 0;
    for (int64_t i = 0; i < keep; ++i) {
        cum += prob[size_t(i)];
        if (u < cum) return idx[size_t(i)];
    }
    return idx[size_t(keep - 1)];
}

} // namespace lcw
