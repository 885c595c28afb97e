// Mamba (selective state space, Gu & Dao 2023) forward on the CPU, following transformers'
// MambaMixer reference path. Per block, for each token:
//   h_in  = RMSNorm(h)
//   x, z  = split(in_proj(h_in))                      (each [inner])
//   u     = silu(causal depthwise conv1d(x) + bias)    (kernel conv_kernel over the last tokens)
//   dt, B, C = split(x_proj(u))                        ([dt_rank], [state], [state])
//   dt    = softplus(dt_proj(dt) + bias)               ([inner])
//   s     = exp(dt * A) * s + dt * B * u,  A = -exp(A_log)   (state [inner, state])
//   y     = (s . C + D * u) * silu(z)
//   h    += out_proj(y)
// The recurrent state (conv window and s) replaces the KV cache; it is cleared when a sequence
// starts at position 0.
#include "core/common/error.h"
#include "core/runtime/arch.h"

#include <algorithm>
#include <cmath>

namespace lcw::runtime {

namespace {

struct MambaLayer {
    Norm norm;
    Weight inProj, xProj, dtProj, outProj;
    std::vector<float> conv, convBias, dtBias, A, D, inBias, outBias; // A = -exp(A_log)
    std::string name[4];                                              // in x dt out
    std::vector<float> convState; // [inner, conv-1]: the previous conv inputs, oldest first
    std::vector<float> ssmState;  // [inner, state]
};

inline float softplus(float x) {
    return x > 20.0f ? x : std::log1p(std::exp(x));
}
inline float silu(float x) {
    return x / (1.0f + std::exp(-x));
}

class MambaRunner final : public ArchRunner {
public:
    explicit MambaRunner(const RunEnv& e) : env(e), s(e.s), w(e.w) { bind(); }
    void run(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
             float* logitsOut) override;

private:
    RunEnv env;
    const ModelSpec& s;
    const WeightSource& w;
    int64_t di = 0, N = 0, R = 0, K = 0;
    Weight embed, lmHead;
    Norm finalNorm;
    std::vector<MambaLayer> layers;
    kernels::FloatBuffer h, xn, xz, u, xdbl, dtIn, dt, y, tmp;

    void bind();
    void block(int64_t l, int64_t n);
    /// y = W x (+ bias) with the session's `exact` setting.
    void linear(const Weight& W, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                const float* bias) const {
        const kernels::LinearJob job = W.job(y, ldy, bias);
        env.linear({&job, 1}, x, ldx, n);
    }
};

void MambaRunner::bind() {
    di = s.ssmInner, N = s.ssmState, R = s.ssmDtRank, K = s.ssmConv;
    if (s.dim <= 0 || s.nLayers <= 0 || s.vocab <= 0 || di <= 0 || N <= 0 || R <= 0 || K <= 0)
        throw ArgumentError("mamba spec has non-positive dimensions");
    const int64_t dim = s.dim;
    embed = requireWeight(w, "embed", s.vocab, dim);
    if (Weight head = findWeight(w, "lm_head"))
        lmHead = checkWeight(head, "lm_head", s.vocab, dim);
    else
        lmHead = checkWeight(embed, "embed (tied lm_head)", s.vocab, dim);
    finalNorm = bindNorm(w, s, "final_norm", dim);
    layers.resize(size_t(s.nLayers));
    for (int64_t l = 0; l < s.nLayers; ++l) {
        MambaLayer& L = layers[size_t(l)];
        const std::string p = "layers." + std::to_string(l) + ".mixer.";
        L.name[0] = p + "in_proj", L.name[1] = p + "x_proj", L.name[2] = p + "dt_proj";
        L.name[3] = p + "out_proj";
        L.norm = bindNorm(w, s, "layers." + std::to_string(l) + ".norm", dim);
        L.inProj = requireWeight(w, L.name[0], 2 * di, dim);
        L.xProj = requireWeight(w, L.name[1], R + 2 * N, di);
        L.dtProj = requireWeight(w, L.name[2], di, R);
        L.outProj = requireWeight(w, L.name[3], dim, di);
        L.conv = toFloat(requireTensor(w, p + "conv1d", {di, 1, K}));
        L.convBias = optionalVector(w, p + "conv1d.bias", di);
        L.dtBias = toFloat(requireTensor(w, p + "dt_proj.bias", {di}));
        L.A = toFloat(requireTensor(w, p + "A_log", {di, N}));
        for (float& a : L.A) a = -std::exp(a);
        L.D = toFloat(requireTensor(w, p + "D", {di}));
        L.inBias = optionalVector(w, L.name[0] + ".bias", 2 * di);
        L.outBias = optionalVector(w, L.name[3] + ".bias", dim);
        L.convState.assign(size_t(di * (K - 1)), 0.0f);
        L.ssmState.assign(size_t(di * N), 0.0f);
    }
    const size_t B = size_t(env.batch);
    h.resize(B * size_t(dim));
    xn.resize(B * size_t(dim));
    tmp.resize(B * size_t(dim));
    xz.resize(B * size_t(2 * di));
    u.resize(B * size_t(di));
    xdbl.resize(B * size_t(R + 2 * N));
    dtIn.resize(B * size_t(R));
    dt.resize(B * size_t(di));
    y.resize(B * size_t(di));
}

void MambaRunner::block(int64_t l, int64_t n) {
    const int li = int(l);
    const int64_t dim = s.dim;
    const int nt = env.threads;
    const bool observed = !env.observers.empty();
    MambaLayer& L = layers[size_t(l)];
    L.norm.apply(h.data(), xn.data(), n, dim, dim);
    if (observed) env.notifyLinear(li, LinearRole::SsmIn, L.name[0], xn.data(), n, dim);
    linear(L.inProj, xn.data(), dim, n, xz.data(), 2 * di, ptrOrNull(L.inBias));

    // Causal depthwise conv over [previous K-1 inputs, this batch], then silu.
    const int64_t km1 = K - 1;
    // omp: nothrow (arithmetic on allocated buffers)
#pragma omp parallel for num_threads(nt) if (n * di * K >= 65536) schedule(static)
    for (int64_t c = 0; c < di; ++c) {
        const float* wc = L.conv.data() + c * K;
        const float* st = L.convState.data() + c * km1;
        for (int64_t t = 0; t < n; ++t) {
            float acc = L.convBias.empty() ? 0.0f : L.convBias[size_t(c)];
            for (int64_t j = 0; j < K; ++j) {
                const int64_t src = t - km1 + j; // index into this batch; < 0: from the state
                const float xv = src >= 0 ? xz[size_t(src * 2 * di + c)] : st[km1 + src];
                acc += wc[j] * xv;
            }
            u[size_t(t * di + c)] = silu(acc);
        }
    }
    // New conv state: the last K-1 inputs.
    for (int64_t c = 0; c < di; ++c) {
        float* st = L.convState.data() + c * km1;
        for (int64_t j = 0; j < km1; ++j) {
            const int64_t src = n - km1 + j;
            st[j] = src >= 0 ? xz[size_t(src * 2 * di + c)] : st[j + n];
        }
    }

    if (observed) env.notifyLinear(li, LinearRole::SsmX, L.name[1], u.data(), n, di);
    linear(L.xProj, u.data(), di, n, xdbl.data(), R + 2 * N, nullptr);
    for (int64_t t = 0; t < n; ++t)
        std::copy(xdbl.begin() + t * (R + 2 * N), xdbl.begin() + t * (R + 2 * N) + R,
                  dtIn.begin() + t * R);
    if (observed) env.notifyLinear(li, LinearRole::SsmDt, L.name[2], dtIn.data(), n, R);
    linear(L.dtProj, dtIn.data(), R, n, dt.data(), di, L.dtBias.data());

    // Selective scan, sequential in time, parallel over channels.
    // omp: nothrow (arithmetic on allocated buffers)
#pragma omp parallel for num_threads(nt) if (n * di * N >= 65536) schedule(static)
    for (int64_t c = 0; c < di; ++c) {
        float* st = L.ssmState.data() + c * N;
        const float* A = L.A.data() + c * N;
        for (int64_t t = 0; t < n; ++t) {
            const float d = softplus(dt[size_t(t * di + c)]);
            const float uc = u[size_t(t * di + c)];
            const float* Bt = xdbl.data() + t * (R + 2 * N) + R;
            const float* Ct = Bt + N;
            float acc = 0;
            for (int64_t j = 0; j < N; ++j) {
                st[j] = std::exp(A[j] * d) * st[j] + d * Bt[j] * uc;
                acc += st[j] * Ct[j];
            }
            acc += uc * L.D[size_t(c)];
            y[size_t(t * di + c)] = acc * silu(xz[size_t(t * 2 * di + di + c)]);
        }
    }
    if (observed) env.notifyLinear(li, LinearRole::SsmOut, L.name[3], y.data(), n, di);
    linear(L.outProj, y.data(), di, n, tmp.data(), dim, ptrOrNull(L.outBias));
    for (int64_t i = 0; i < n * dim; ++i) h[size_t(i)] += tmp[size_t(i)];
    if (observed)
        for (Observer* o : env.observers) o->onResidual(li, h.data(), n, dim);
}

void MambaRunner::run(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                      float* logitsOut) {
    const int64_t dim = s.dim;
    if (pos0 == 0)
        for (auto& L : layers) {
            std::fill(L.convState.begin(), L.convState.end(), 0.0f);
            std::fill(L.ssmState.begin(), L.ssmState.end(), 0.0f);
        }
    for (int64_t t = 0; t < n; ++t) embed.rowsF32(ids[t], 1, h.data() + t * dim);
    for (int64_t l = 0; l < s.nLayers; ++l) {
        if (!env.enterBlock(l, h.data(), n)) return;
        block(l, n);
    }
    if (logitsFrom >= n || env.stopAfterLayer >= 0) return;
    env.layer = int(s.nLayers);
    const int64_t nOut = n - logitsFrom;
    float* xo = xn.data() + logitsFrom * dim;
    finalNorm.apply(h.data() + logitsFrom * dim, xo, nOut, dim, dim);
    if (!env.observers.empty())
        env.notifyLinear(int(s.nLayers), LinearRole::LmHead, "lm_head", xo, nOut, dim);
    linear(lmHead, xo, dim, nOut, logitsOut, s.vocab, nullptr);
}

} // namespace

std::unique_ptr<ArchRunner> makeMambaRunner(const RunEnv& env) {
    return std::make_unique<MambaRunner>(env);
}

} // namespace lcw::runtime
