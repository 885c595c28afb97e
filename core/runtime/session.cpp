// Llama-family forward pass (llama, mistral, qwen2, qwen3) on the CPU.
//
// Weight storage: the runtime never converts the model to float32 as a whole. F32 weights are
// multiplied in place from the memory map; F16, BF16 and GGUF block formats are dequantised tile
// by tile inside the matrix product (a few rows at a time into a per-thread buffer that stays in
// cache, then multiplied), so memory use stays at the file size plus small per-thread scratch.
// Embedding lookups dequantise only the rows of the requested tokens; only the small vectors
// (norm weights, biases) are converted to float32 when the Session is created.
#include "core/runtime/session.h"

#include "core/common/error.h"
#include "core/runtime/kernels.h"
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
    }
    return "?";
}

namespace {

std::string shapeString(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

const TensorView& checkTensor(const TensorView& t, const std::string& name,
                              const std::vector<int64_t>& shape) {
    if (t.shape != shape)
        throw Error((t.file.empty() ? std::string() : t.file + ": ") + "tensor '" + name +
                    "' has shape " + shapeString(t.shape) + ", the runtime expects " +
                    shapeString(shape));
    if (!dtypeIsFloatLike(t.dtype))
        throw UnsupportedError((t.file.empty() ? std::string() : t.file + ": ") + "tensor '" +
                               name + "' has dtype " + std::string(dtypeName(t.dtype)) +
                               ", which the runtime cannot use as a weight");
    return t;
}

const TensorView& requireTensor(const WeightSource& w, const std::string& name,
                                const std::vector<int64_t>& shape) {
    return checkTensor(w.get(name), name, shape);
}

std::vector<float> toFloat(const TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    if (t.numel() > 0) kernels::dequantizeRows(t, 0, t.rows(), v.data());
    return v;
}

std::vector<float> optionalVector(const WeightSource& w, const std::string& name, int64_t n) {
    const TensorView* t = w.find(name);
    if (!t) return {};
    if (t->numel() != n)
        throw Error((t->file.empty() ? std::string() : t->file + ": ") + "tensor '" + name +
                    "' has shape " + shapeString(t->shape) + ", expected " + std::to_string(n) +
                    " elements");
    return toFloat(*t);
}

struct LayerWeights {
    const TensorView *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    const TensorView *gate = nullptr, *up = nullptr, *down = nullptr;
    std::vector<float> attnNorm, mlpNorm, qNorm, kNorm;
    std::vector<float> bq, bk, bv, bo, bGate, bUp, bDown;
    bool sliding = false;
    std::string name[7]; // canonical names of q k v o gate up down
};

inline const float* ptrOrNull(const std::vector<float>& v) {
    return v.empty() ? nullptr : v.data();
}

} // namespace

struct Session::Impl {
    const WeightSource& w;
    const ModelSpec& s;
    SessionOptions opts;
    int64_t ctx = 0, batch = 0, pos = 0;
    int64_t qDim = 0, kvDim = 0;
    int threads = 0;

    const TensorView* embed = nullptr;
    const TensorView* lmHead = nullptr;
    std::vector<float> finalNorm;
    std::vector<LayerWeights> layers;
    kernels::RopeFreqs rope; // for every rope type but dynamic

    // KV cache per layer, [rows, kvDim], grown on demand up to ctx rows.
    std::vector<kernels::FloatBuffer> kCache, vCache;
    int64_t cacheRows = 0;

    // Scratch for one batch of up to `batch` tokens.
    kernels::FloatBuffer h, xn, q, k, kPre, v, att, tmp, gate, up, cosT, sinT;
    std::vector<Observer*> observers;
    std::vector<int32_t> eos;

    Impl(const WeightSource& ws, SessionOptions o) : w(ws), s(ws.spec()), opts(o) {}

    void validateAndBind();
    void ensureCache(int64_t rows);
    void runBatch(const int32_t* ids, int64_t n, int64_t logitsFrom, float* logitsOut);
    void checkFinite(const float* logits, int64_t rows);

    void notifyLinear(int layer, LinearRole role, const std::string& name, const float* x,
                      int64_t n, int64_t dim) {
        for (Observer* o : observers) o->onLinearInput(layer, role, name, x, n, dim);
    }
};

void Session::Impl::validateAndBind() {
    static const char* kArchs[] = {"llama", "mistral", "qwen2", "qwen3"};
    if (std::find_if(std::begin(kArchs), std::end(kArchs),
                     [&](const char* a) { return s.arch == a; }) == std::end(kArchs))
        throw UnsupportedError("the CPU runtime does not support architecture '" + s.arch +
                               "' (supported: llama, mistral, qwen2, qwen3)");
    if (s.hiddenAct != "silu" && s.hiddenAct != "swish")
        throw UnsupportedError("the CPU runtime does not support activation '" + s.hiddenAct +
                               "' (supported: silu)");
    if (s.dim <= 0 || s.nLayers <= 0 || s.nHeads <= 0 || s.nKvHeads <= 0 || s.headDim <= 0 ||
        s.hidden <= 0 || s.vocab <= 0)
        throw ArgumentError("model spec has non-positive dimensions");
    if (s.nHeads % s.nKvHeads != 0)
        throw ArgumentError("num_attention_heads (" + std::to_string(s.nHeads) +
                            ") is not a multiple of num_key_value_heads (" +
                            std::to_string(s.nKvHeads) + ")");
    qDim = s.nHeads * s.headDim;
    kvDim = s.nKvHeads * s.headDim;

    embed = &requireTensor(w, "embed", {s.vocab, s.dim});
    lmHead = &checkTensor(w.lmHead(), w.find("lm_head") ? "lm_head" : "embed (tied lm_head)",
                          {s.vocab, s.dim});
    finalNorm = toFloat(requireTensor(w, "final_norm", {s.dim}));

    layers.resize(size_t(s.nLayers));
    for (int64_t l = 0; l < s.nLayers; ++l) {
        LayerWeights& L = layers[size_t(l)];
        const std::string p = "layers." + std::to_string(l) + ".";
        L.name[0] = p + "attn.q", L.name[1] = p + "attn.k", L.name[2] = p + "attn.v";
        L.name[3] = p + "attn.o", L.name[4] = p + "mlp.gate", L.name[5] = p + "mlp.up";
        L.name[6] = p + "mlp.down";
        L.attnNorm = toFloat(requireTensor(w, p + "attn_norm", {s.dim}));
        L.mlpNorm = toFloat(requireTensor(w, p + "mlp_norm", {s.dim}));
        L.q = &requireTensor(w, L.name[0], {qDim, s.dim});
        L.k = &requireTensor(w, L.name[1], {kvDim, s.dim});
        L.v = &requireTensor(w, L.name[2], {kvDim, s.dim});
        L.o = &requireTensor(w, L.name[3], {s.dim, qDim});
        L.gate = &requireTensor(w, L.name[4], {s.hidden, s.dim});
        L.up = &requireTensor(w, L.name[5], {s.hidden, s.dim});
        L.down = &requireTensor(w, L.name[6], {s.dim, s.hidden});
        if (s.qkNorm) {
            L.qNorm = toFloat(requireTensor(w, p + "attn.q_norm", {s.headDim}));
            L.kNorm = toFloat(requireTensor(w, p + "attn.k_norm", {s.headDim}));
        }
        // Biases are used whenever present (the spec flags only say which to expect).
        L.bq = optionalVector(w, L.name[0] + ".bias", qDim);
        L.bk = optionalVector(w, L.name[1] + ".bias", kvDim);
        L.bv = optionalVector(w, L.name[2] + ".bias", kvDim);
        L.bo = optionalVector(w, L.name[3] + ".bias", s.dim);
        L.bGate = optionalVector(w, L.name[4] + ".bias", s.hidden);
        L.bUp = optionalVector(w, L.name[5] + ".bias", s.hidden);
        L.bDown = optionalVector(w, L.name[6] + ".bias", s.dim);
        if (s.attnBias && (L.bq.empty() || L.bk.empty() || L.bv.empty()))
            throw Error("model spec says q/k/v have biases but layer " + std::to_string(l) +
                        " lacks them");
        L.sliding = s.layerIsSliding(l);
    }

    eos = s.eosIds;
    if (const auto* model = dynamic_cast<const Model*>(&w); model && model->hasTokenizer()) {
        const int32_t e = model->tokenizer().eosId();
        if (e >= 0 && std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
    }
}

void Session::Impl::ensureCache(int64_t rows) {
    if (rows <= cacheRows) return;
    int64_t n = std::max<int64_t>({rows, 2 * cacheRows, 256});
    n = std::min(n, ctx);
    for (int64_t l = 0; l < s.nLayers; ++l) {
        kCache[size_t(l)].resize(size_t(n * kvDim));
        vCache[size_t(l)].resize(size_t(n * kvDim));
    }
    cacheRows = n;
}

void Session::Impl::checkFinite(const float* logits, int64_t rows) {
    const int64_t total = rows * s.vocab;
    for (int64_t i = 0; i < total; ++i) {
        if (std::isfinite(logits[i])) continue;
        if (const auto* model = dynamic_cast<const Model*>(&w)) {
            if (auto bad = model->findNonFinite()) throw Error("logits became non-finite: " + *bad);
            throw Error(model->path() + ": logits became non-finite (all weights are finite; "
                                        "the activations overflowed)");
        }
        throw Error("logits became non-finite");
    }
}

void Session::Impl::runBatch(const int32_t* ids, int64_t n, int64_t logitsFrom, float* logitsOut) {
    const int64_t dim = s.dim, hd = s.headDim, pos0 = pos;
    const int nt = threads;
    ensureCache(pos0 + n);

    for (int64_t t = 0; t < n; ++t) kernels::dequantizeRows(*embed, ids[t], 1, h.data() + t * dim);

    // RoPE tables for this batch's positions, shared by all layers.
    const kernels::RopeFreqs* rf = &rope;
    kernels::RopeFreqs dyn;
    if (s.rope.type == RopeType::Dynamic) {
        dyn = kernels::ropeFrequencies(s.rope, hd, s.maxSeq, pos0 + n);
        rf = &dyn;
    }
    kernels::ropeTables(*rf, pos0, n, cosT.data(), sinT.data());
    const bool observed = !observers.empty();

    for (int64_t l = 0; l < s.nLayers; ++l) {
        const int li = int(l);
        LayerWeights& L = layers[size_t(l)];
        // ---- attention ----
        kernels::rmsNorm(h.data(), L.attnNorm.data(), xn.data(), n, dim, dim, s.normEps);
        if (observed) {
            notifyLinear(li, LinearRole::Q, L.name[0], xn.data(), n, dim);
            notifyLinear(li, LinearRole::K, L.name[1], xn.data(), n, dim);
            notifyLinear(li, LinearRole::V, L.name[2], xn.data(), n, dim);
        }
        const kernels::LinearJob qkv[3] = {{L.q, q.data(), qDim, ptrOrNull(L.bq)},
                                           {L.k, k.data(), kvDim, ptrOrNull(L.bk)},
                                           {L.v, v.data(), kvDim, ptrOrNull(L.bv)}};
        kernels::linearBatch(qkv, xn.data(), dim, n, nt);
        if (s.qkNorm) {
            kernels::rmsNorm(q.data(), L.qNorm.data(), q.data(), n * s.nHeads, hd, hd, s.normEps);
            kernels::rmsNorm(k.data(), L.kNorm.data(), k.data(), n * s.nKvHeads, hd, hd, s.normEps);
        }
        if (observed) std::copy(k.begin(), k.begin() + n * kvDim, kPre.begin());
        kernels::applyRope(q.data(), n, qDim, s.nHeads, hd, rf->rotDim, s.rope.interleaved,
                           cosT.data(), sinT.data());
        kernels::applyRope(k.data(), n, kvDim, s.nKvHeads, hd, rf->rotDim, s.rope.interleaved,
                           cosT.data(), sinT.data());
        if (observed)
            for (Observer* o : observers)
                o->onKV(li, kPre.data(), k.data(), v.data(), n, s.nKvHeads, hd, pos0);
        std::copy(k.begin(), k.begin() + n * kvDim, kCache[size_t(l)].begin() + pos0 * kvDim);
        std::copy(v.begin(), v.begin() + n * kvDim, vCache[size_t(l)].begin() + pos0 * kvDim);
        kernels::attention(q.data(), qDim, kCache[size_t(l)].data(), vCache[size_t(l)].data(),
                           att.data(), qDim, n, pos0, s.nHeads, s.nKvHeads, hd,
                           L.sliding ? s.slidingWindow : 0, nt);
        if (observed) notifyLinear(li, LinearRole::O, L.name[3], att.data(), n, qDim);
        kernels::linear(*L.o, att.data(), qDim, n, tmp.data(), dim, ptrOrNull(L.bo), nt);
        for (int64_t i = 0; i < n * dim; ++i) h[size_t(i)] += tmp[size_t(i)];

        // ---- MLP (SwiGLU) ----
        kernels::rmsNorm(h.data(), L.mlpNorm.data(), xn.data(), n, dim, dim, s.normEps);
        if (observed) {
            notifyLinear(li, LinearRole::Gate, L.name[4], xn.data(), n, dim);
            notifyLinear(li, LinearRole::Up, L.name[5], xn.data(), n, dim);
        }
        const kernels::LinearJob gateUp[2] = {{L.gate, gate.data(), s.hidden, ptrOrNull(L.bGate)},
                                              {L.up, up.data(), s.hidden, ptrOrNull(L.bUp)}};
        kernels::linearBatch(gateUp, xn.data(), dim, n, nt);
        const int64_t nh = n * s.hidden;
        float* g = gate.data();
        const float* u = up.data();
#pragma omp parallel for num_threads(nt) if (nh >= 65536) schedule(static)
        for (int64_t i = 0; i < nh; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        if (observed) notifyLinear(li, LinearRole::Down, L.name[6], gate.data(), n, s.hidden);
        kernels::linear(*L.down, gate.data(), s.hidden, n, tmp.data(), dim, ptrOrNull(L.bDown), nt);
        for (int64_t i = 0; i < n * dim; ++i) h[size_t(i)] += tmp[size_t(i)];
        if (observed)
            for (Observer* o : observers) o->onResidual(li, h.data(), n, dim);
    }

    pos = pos0 + n;
    if (logitsFrom >= n) return;
    const int64_t nOut = n - logitsFrom;
    float* xo = xn.data() + logitsFrom * dim;
    kernels::rmsNorm(h.data() + logitsFrom * dim, finalNorm.data(), xo, nOut, dim, dim, s.normEps);
    if (observed) notifyLinear(int(s.nLayers), LinearRole::LmHead, "lm_head", xo, nOut, dim);
    kernels::linear(*lmHead, xo, dim, nOut, logitsOut, s.vocab, nullptr, nt);
    checkFinite(logitsOut, nOut);
}

Session::Session(const WeightSource& weights, SessionOptions opts)
    : m(std::make_unique<Impl>(weights, opts)) {
    m->validateAndBind();
    const ModelSpec& s = m->s;
    if (opts.contextLength < 0) throw ArgumentError("context length must be >= 0");
    m->ctx = opts.contextLength > 0 ? opts.contextLength : s.maxSeq;
    if (m->ctx <= 0) m->ctx = 2048;
    if (opts.batchSize <= 0) throw ArgumentError("batch size must be > 0");
    m->batch = std::min(opts.batchSize, m->ctx);
    m->threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
    m->rope = kernels::ropeFrequencies(s.rope, s.headDim, s.maxSeq, m->ctx);
    m->kCache.resize(size_t(s.nLayers));
    m->vCache.resize(size_t(s.nLayers));

    const size_t B = size_t(m->batch);
    m->h.resize(B * size_t(s.dim));
    m->xn.resize(B * size_t(s.dim));
    m->tmp.resize(B * size_t(s.dim));
    m->q.resize(B * size_t(m->qDim));
    m->att.resize(B * size_t(m->qDim));
    m->k.resize(B * size_t(m->kvDim));
    m->kPre.resize(B * size_t(m->kvDim));
    m->v.resize(B * size_t(m->kvDim));
    m->gate.resize(B * size_t(s.hidden));
    m->up.resize(B * size_t(s.hidden));
    m->cosT.resize(B * size_t(m->rope.rotDim / 2));
    m->sinT.resize(B * size_t(m->rope.rotDim / 2));
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

void Session::forwardFrom(std::span<const int32_t> ids, std::vector<float>& logits,
                          int64_t firstLogit) {
    const int64_t n = int64_t(ids.size());
    if (n == 0) throw ArgumentError("forward() needs at least one token");
    for (int64_t i = 0; i < n; ++i)
        if (ids[size_t(i)] < 0 || ids[size_t(i)] >= m->s.vocab)
            throw ArgumentError("token id " + std::to_string(ids[size_t(i)]) + " at index " +
                                std::to_string(i) + " is outside the vocabulary [0, " +
                                std::to_string(m->s.vocab) + ")");
    if (m->pos + n > m->ctx)
        throw ArgumentError("context overflow: " + std::to_string(m->pos) + " cached + " +
                            std::to_string(n) + " new tokens exceed the context length " +
                            std::to_string(m->ctx));
    firstLogit = std::clamp<int64_t>(firstLogit, 0, n);
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
