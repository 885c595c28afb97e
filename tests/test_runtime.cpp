// Tests of core/runtime: kernels against naive double-precision references, the Llama-family
// forward on small in-memory models against a naive reference forward (every architecture
// feature), Session behaviour (cache, errors, observers, sampling), and logits/greedy output of
// the shared models against the transformers/llama.cpp references.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/npy.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/simd.h"
#include "core/runtime/session.h"
#include "mem_weights.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <random>

using namespace lcw;

namespace {

// ---- an in-memory WeightSource ----------------------------------------------------------------
using lcwtest::MemWeights;

std::vector<float> randomVec(std::mt19937_64& rng, int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
}

struct TinyConfig {
    std::string arch = "llama";
    int64_t dim = 64, layers = 2, heads = 4, kvHeads = 2, headDim = 16, hidden = 96, vocab = 97;
    int64_t maxSeq = 64;
    DType dtype = DType::F32;
    bool bias = false, qkNorm = false, tied = false;
    int64_t slidingWindow = 0;
    RopeConfig rope;
    uint64_t seed = 7;
};

std::unique_ptr<MemWeights> makeTiny(const TinyConfig& c) {
    auto m = std::make_unique<MemWeights>();
    ModelSpec& s = m->sp;
    s.arch = c.arch;
    s.sourceFormat = "memory";
    s.dim = c.dim, s.nLayers = c.layers, s.nHeads = c.heads, s.nKvHeads = c.kvHeads;
    s.headDim = c.headDim, s.hidden = c.hidden, s.vocab = c.vocab, s.maxSeq = c.maxSeq;
    s.normEps = 1e-5f;
    s.rope = c.rope;
    s.attnBias = c.bias;
    s.qkNorm = c.qkNorm;
    s.tiedEmbeddings = c.tied;
    s.slidingWindow = c.slidingWindow;
    s.bosId = 1;
    s.eosIds = {2};
    std::mt19937_64 rng(c.seed);
    const int64_t qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
    const float a = 0.25f;
    m->add("embed", {c.vocab, c.dim}, randomVec(rng, c.vocab * c.dim, -1, 1), c.dtype);
    for (int64_t l = 0; l < c.layers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        m->add(p + "attn_norm", {c.dim}, randomVec(rng, c.dim, 0.8f, 1.2f));
        m->add(p + "mlp_norm", {c.dim}, randomVec(rng, c.dim, 0.8f, 1.2f));
        m->add(p + "attn.q", {qd, c.dim}, randomVec(rng, qd * c.dim, -a, a), c.dtype);
        m->add(p + "attn.k", {kvd, c.dim}, randomVec(rng, kvd * c.dim, -a, a), c.dtype);
        m->add(p + "attn.v", {kvd, c.dim}, randomVec(rng, kvd * c.dim, -a, a), c.dtype);
        m->add(p + "attn.o", {c.dim, qd}, randomVec(rng, c.dim * qd, -a, a), c.dtype);
        m->add(p + "mlp.gate", {c.hidden, c.dim}, randomVec(rng, c.hidden * c.dim, -a, a), c.dtype);
        m->add(p + "mlp.up", {c.hidden, c.dim}, randomVec(rng, c.hidden * c.dim, -a, a), c.dtype);
        m->add(p + "mlp.down", {c.dim, c.hidden}, randomVec(rng, c.dim * c.hidden, -a, a), c.dtype);
        if (c.bias) {
            m->add(p + "attn.q.bias", {qd}, randomVec(rng, qd, -0.5f, 0.5f));
            m->add(p + "attn.k.bias", {kvd}, randomVec(rng, kvd, -0.5f, 0.5f));
            m->add(p + "attn.v.bias", {kvd}, randomVec(rng, kvd, -0.5f, 0.5f));
        }
        if (c.qkNorm) {
            m->add(p + "attn.q_norm", {c.headDim}, randomVec(rng, c.headDim, 0.5f, 1.5f));
            m->add(p + "attn.k_norm", {c.headDim}, randomVec(rng, c.headDim, 0.5f, 1.5f));
        }
    }
    m->add("final_norm", {c.dim}, randomVec(rng, c.dim, 0.8f, 1.2f));
    if (!c.tied)
        m->add("lm_head", {c.vocab, c.dim}, randomVec(rng, c.vocab * c.dim, -a, a), c.dtype);
    return m;
}

// ---- naive double-precision reference forward (all positions from 0) -----------------------
std::vector<double> refLinear(const std::vector<float>& w, int64_t out, int64_t in,
                              const std::vector<double>& x) {
    std::vector<double> y(size_t(out), 0.0);
    for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i)
            y[size_t(o)] += double(w[size_t(o * in + i)]) * x[size_t(i)];
    return y;
}

void refRms(std::vector<double>& x, int64_t off, int64_t n, const std::vector<float>& w,
            double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[size_t(off + i)] * x[size_t(off + i)];
    const double inv = 1.0 / std::sqrt(ss / double(n) + eps);
    for (int64_t i = 0; i < n; ++i) x[size_t(off + i)] *= inv * double(w[size_t(i)]);
}

void refRope(std::vector<double>& x, int64_t heads, int64_t hd, int64_t pos,
             const kernels::RopeFreqs& f, bool interleaved) {
    const int64_t half = f.rotDim / 2;
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < half; ++i) {
            const double c = std::cos(double(pos) * f.invFreq[size_t(i)]) * f.attnScale;
            const double s = std::sin(double(pos) * f.invFreq[size_t(i)]) * f.attnScale;
            const size_t ia = size_t(h * hd + (interleaved ? 2 * i : i));
            const size_t ib = size_t(h * hd + (interleaved ? 2 * i + 1 : i + half));
            const double a = x[ia], b = x[ib];
            x[ia] = a * c - b * s;
            x[ib] = b * c + a * s;
        }
}

std::vector<double> refForward(const MemWeights& m, const std::vector<int32_t>& ids) {
    const ModelSpec& s = m.sp;
    const int64_t n = int64_t(ids.size()), D = s.dim, hd = s.headDim;
    const int64_t qd = s.nHeads * hd, kvd = s.nKvHeads * hd;
    const auto& R = m.ref;
    auto W = [&](const std::string& name) -> const std::vector<float>& { return R.at(name); };
    const auto f = kernels::ropeFrequencies(s.rope, hd, s.maxSeq, n);
    std::vector<std::vector<double>> h(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t)
        h[size_t(t)].assign(W("embed").begin() + ids[size_t(t)] * D,
                            W("embed").begin() + (ids[size_t(t)] + 1) * D);
    for (int64_t l = 0; l < s.nLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        std::vector<std::vector<double>> K(static_cast<size_t>(n)), V(K), Q(K);
        for (int64_t t = 0; t < n; ++t) {
            auto x = h[size_t(t)];
            refRms(x, 0, D, W(p + "attn_norm"), s.normEps);
            Q[size_t(t)] = refLinear(W(p + "attn.q"), qd, D, x);
            K[size_t(t)] = refLinear(W(p + "attn.k"), kvd, D, x);
            V[size_t(t)] = refLinear(W(p + "attn.v"), kvd, D, x);
            if (R.count(p + "attn.q.bias")) {
                for (int64_t i = 0; i < qd; ++i)
                    Q[size_t(t)][size_t(i)] += W(p + "attn.q.bias")[size_t(i)];
                for (int64_t i = 0; i < kvd; ++i)
                    K[size_t(t)][size_t(i)] += W(p + "attn.k.bias")[size_t(i)];
                for (int64_t i = 0; i < kvd; ++i)
                    V[size_t(t)][size_t(i)] += W(p + "attn.v.bias")[size_t(i)];
            }
            if (s.qkNorm) {
                for (int64_t hh = 0; hh < s.nHeads; ++hh)
                    refRms(Q[size_t(t)], hh * hd, hd, W(p + "attn.q_norm"), s.normEps);
                for (int64_t hh = 0; hh < s.nKvHeads; ++hh)
                    refRms(K[size_t(t)], hh * hd, hd, W(p + "attn.k_norm"), s.normEps);
            }
            refRope(Q[size_t(t)], s.nHeads, hd, t, f, s.rope.interleaved);
            refRope(K[size_t(t)], s.nKvHeads, hd, t, f, s.rope.interleaved);
        }
        const bool sliding = s.layerIsSliding(l);
        for (int64_t t = 0; t < n; ++t) {
            std::vector<double> att(size_t(qd), 0.0);
            for (int64_t hh = 0; hh < s.nHeads; ++hh) {
                const int64_t kh = hh / (s.nHeads / s.nKvHeads);
                const int64_t j0 = sliding ? std::max<int64_t>(0, t - s.slidingWindow + 1) : 0;
                std::vector<double> sc;
                double mx = -1e300;
                for (int64_t j = j0; j <= t; ++j) {
                    double d = 0;
                    for (int64_t i = 0; i < hd; ++i)
                        d += Q[size_t(t)][size_t(hh * hd + i)] * K[size_t(j)][size_t(kh * hd + i)];
                    sc.push_back(d / std::sqrt(double(hd)));
                    mx = std::max(mx, sc.back());
                }
                double sum = 0;
                for (auto& v : sc) sum += (v = std::exp(v - mx));
                for (int64_t j = j0; j <= t; ++j)
                    for (int64_t i = 0; i < hd; ++i)
                        att[size_t(hh * hd + i)] +=
                            sc[size_t(j - j0)] / sum * V[size_t(j)][size_t(kh * hd + i)];
            }
            const auto o = refLinear(W(p + "attn.o"), D, qd, att);
            for (int64_t i = 0; i < D; ++i) h[size_t(t)][size_t(i)] += o[size_t(i)];
            auto x = h[size_t(t)];
            refRms(x, 0, D, W(p + "mlp_norm"), s.normEps);
            auto g = refLinear(W(p + "mlp.gate"), s.hidden, D, x);
            const auto u = refLinear(W(p + "mlp.up"), s.hidden, D, x);
            for (int64_t i = 0; i < s.hidden; ++i)
                g[size_t(i)] = g[size_t(i)] / (1 + std::exp(-g[size_t(i)])) * u[size_t(i)];
            const auto d = refLinear(W(p + "mlp.down"), D, s.hidden, g);
            for (int64_t i = 0; i < D; ++i) h[size_t(t)][size_t(i)] += d[size_t(i)];
        }
    }
    std::vector<double> logits;
    const auto& lm = R.count("lm_head") ? W("lm_head") : W("embed");
    for (int64_t t = 0; t < n; ++t) {
        auto x = h[size_t(t)];
        refRms(x, 0, D, W("final_norm"), s.normEps);
        const auto y = refLinear(lm, s.vocab, D, x);
        logits.insert(logits.end(), y.begin(), y.end());
    }
    return logits;
}

double maxAbsDiff(const float* a, const double* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
    return m;
}
double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

std::vector<int32_t> someIds(int64_t n, int64_t vocab, uint64_t seed = 3) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = int32_t(rng() % uint64_t(vocab));
    return ids;
}

struct IsaGuard {
    ~IsaGuard() { kernels::setIsa(kernels::Isa::Auto); }
};

std::vector<kernels::Isa> isasToTest() {
    return kernels::supportedIsas();
}

// ---- shared references --------------------------------------------------------------------
nlohmann::json readJson(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
}

class CountingObserver : public Observer {
public:
    std::map<std::string, int> linearCalls;
    std::map<std::string, std::pair<int64_t, int64_t>> linearShape;
    int kvCalls = 0, residualCalls = 0;
    std::vector<float> lmInput;
    std::vector<float> kPre, kPost, vObs;
    int64_t lastPos0 = -1, kvTokens = 0;
    void onLinearInput(int, LinearRole role, const std::string& name, const float* x,
                       int64_t nTokens, int64_t dim) override {
        ++linearCalls[name];
        linearShape[name] = {nTokens, dim};
        if (role == LinearRole::LmHead) lmInput.assign(x, x + nTokens * dim);
    }
    void onKV(int layer, const float* kp, const float* kq, const float* v, int64_t nTokens,
              int64_t nKvHeads, int64_t headDim, int64_t pos0) override {
        ++kvCalls;
        lastPos0 = pos0;
        kvTokens = nTokens;
        if (layer == 0) {
            kPre.assign(kp, kp + nTokens * nKvHeads * headDim);
            kPost.assign(kq, kq + nTokens * nKvHeads * headDim);
            vObs.assign(v, v + nTokens * nKvHeads * headDim);
        }
    }
    void onResidual(int, const float*, int64_t, int64_t) override { ++residualCalls; }
};

} // namespace

class TestRuntime : public QObject {
    Q_OBJECT

    // exact: SessionOptions::exactActivations (quantised weights multiply float32 activations).
    void checkForwardAgainstReference(const TinyConfig& c, double tol, const char* what,
                                      bool exact = false) {
        auto m = makeTiny(c);
        const auto ids = someIds(23, c.vocab);
        const auto ref = refForward(*m, ids);
        for (auto isa : isasToTest()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            Session s(
                *m,
                {.contextLength = 32, .threads = 2, .batchSize = 512, .exactActivations = exact});
            std::vector<float> logits;
            s.forward(ids, logits, true);
            QCOMPARE(logits.size(), ref.size());
            const double d = maxAbsDiff(logits.data(), ref.data(), ref.size());
            if (d > tol)
                QFAIL(qPrintable(QString("%1 (%2): max |diff| %3 > %4")
                                     .arg(what, kernels::isaName(isa))
                                     .arg(d)
                                     .arg(tol)));
        }
    }

    std::unique_ptr<Model> loadOrFail(const std::string& rel) {
        std::unique_ptr<Model> m;
        try {
            m = Model::load(lcwtest::sharedPath(rel));
        } catch (const std::exception& e) {
            qWarning("loading %s: %s", rel.c_str(), e.what());
            throw;
        }
        return m;
    }

private slots:
    // ================= kernels =================
    void matmulAllDtypesAgainstDouble() {
        std::mt19937_64 rng(11);
        const DType types[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};
        for (auto isa : isasToTest()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (DType dt : types) {
                for (int64_t in : {32, 96, 160}) {
                    for (int64_t out : {1, 7, 37, 300}) {
                        MemWeights mw;
                        mw.add("w", {out, in}, randomVec(rng, out * in, -1, 1), dt);
                        const auto& wref = mw.ref.at("w");
                        const auto bias = randomVec(rng, out, -1, 1);
                        for (int64_t nTok : {1, 2, 3, 5}) {
                            const auto x = randomVec(rng, nTok * in, -1, 1);
                            // exact: float32 activations, the error of the weights' decoding
                            // only. Otherwise quantised types read activations rounded to 8-bit
                            // blocks: |error| <= sum |w| * max|x| / 254 per output.
                            for (bool exact : {true, false}) {
                                std::vector<float> y(size_t(nTok * out));
                                kernels::linear(*mw.find("w"), x.data(), in, nTok, y.data(), out,
                                                bias.data(), 2, exact);
                                double worst = 0; // error / allowed
                                double maxErr = 0;
                                for (int64_t t = 0; t < nTok; ++t) {
                                    double xmax = 0;
                                    for (int64_t i = 0; i < in; ++i)
                                        xmax =
                                            std::max(xmax, std::abs(double(x[size_t(t * in + i)])));
                                    for (int64_t o = 0; o < out; ++o) {
                                        double r = bias[size_t(o)], wabs = 0;
                                        for (int64_t i = 0; i < in; ++i) {
                                            r += double(wref[size_t(o * in + i)]) *
                                                 double(x[size_t(t * in + i)]);
                                            wabs += std::abs(double(wref[size_t(o * in + i)]));
                                        }
                                        const double err = std::abs(r - y[size_t(t * out + o)]);
                                        const bool q = !exact && dtypeIsQuantized(dt);
                                        // BF16 with AVX-512 BF16: activations rounded to bf16
                                        // (relative error <= 2^-8 each).
                                        const bool b = !exact && dt == DType::BF16 &&
                                                       kernels::detail::bf16DotAvailable();
                                        const double allowed = 2e-5 +
                                                               (q ? wabs * xmax / 254 : 0) +
                                                               (b ? wabs * xmax / 256 : 0);
                                        worst = std::max(worst, err / allowed);
                                        maxErr = std::max(maxErr, err);
                                    }
                                }
                                if (worst > 1)
                                    QFAIL(qPrintable(
                                        QString("%1 %2 out=%3 in=%4 nTok=%5 exact=%6: err %7")
                                            .arg(kernels::isaName(isa))
                                            .arg(QString::fromUtf8(dtypeName(dt).data(),
                                                                   int(dtypeName(dt).size())))
                                            .arg(out)
                                            .arg(in)
                                            .arg(nTok)
                                            .arg(exact)
                                            .arg(maxErr)));
                            }
                        }
                    }
                }
            }
        }
    }
    void gemmOddSizesAndBatchInvariance() {
        // Odd inner sizes exercise the tails; one token at a time must equal the batch exactly.
        std::mt19937_64 rng(5);
        for (auto isa : isasToTest()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (int64_t n : {1, 5, 8, 13, 67}) {
                const int64_t rows = 11, T = 5;
                const auto w = randomVec(rng, rows * n, -1, 1);
                const auto x = randomVec(rng, T * n, -1, 1);
                std::vector<float> yb(size_t(T * rows)), y1(size_t(T * rows));
                kernels::gemmNT(w.data(), n, rows, x.data(), n, T, yb.data(), rows, n);
                for (int64_t t = 0; t < T; ++t)
                    kernels::gemmNT(w.data(), n, rows, x.data() + t * n, n, 1, y1.data() + t * rows,
                                    rows, n);
                QCOMPARE(maxAbsDiff(yb, y1), 0.0);
                for (int64_t t = 0; t < T; ++t)
                    for (int64_t r = 0; r < rows; ++r) {
                        double ref = 0;
                        for (int64_t i = 0; i < n; ++i)
                            ref += double(w[size_t(r * n + i)]) * double(x[size_t(t * n + i)]);
                        QVERIFY(std::abs(ref - yb[size_t(t * rows + r)]) < 1e-5);
                    }
            }
        }
    }
    void rmsNormAgainstDouble() {
        std::mt19937_64 rng(2);
        const auto x = randomVec(rng, 3 * 10, -3, 3);
        const auto w = randomVec(rng, 10, 0.5f, 1.5f);
        std::vector<float> y(30);
        kernels::rmsNorm(x.data(), w.data(), y.data(), 3, 10, 10, 1e-5f);
        for (int t = 0; t < 3; ++t) {
            double ss = 0;
            for (int i = 0; i < 10; ++i)
                ss += double(x[size_t(t * 10 + i)]) * x[size_t(t * 10 + i)];
            const double inv = 1 / std::sqrt(ss / 10 + 1e-5);
            for (int i = 0; i < 10; ++i)
                QVERIFY(std::abs(y[size_t(t * 10 + i)] -
                                 x[size_t(t * 10 + i)] * inv * w[size_t(i)]) < 1e-6);
        }
    }
    void ropeDefaultAndLinear() {
        RopeConfig r;
        r.theta = 10000;
        auto f = kernels::ropeFrequencies(r, 8, 128, 10);
        QCOMPARE(f.rotDim, int64_t(8));
        QCOMPARE(f.invFreq.size(), size_t(4));
        QCOMPARE(f.invFreq[0], 1.0);
        QVERIFY(std::abs(f.invFreq[1] - 0.1) < 1e-15);   // 10000^(-2/8)
        QVERIFY(std::abs(f.invFreq[3] - 0.001) < 1e-15); // 10000^(-6/8)
        QCOMPARE(f.attnScale, 1.0);
        r.type = RopeType::Linear;
        r.factor = 4;
        f = kernels::ropeFrequencies(r, 8, 128, 10);
        QVERIFY(std::abs(f.invFreq[1] - 0.025) < 1e-15);
        // Partial rotary: half the head rotates.
        r = RopeConfig{};
        r.partialRotaryFactor = 0.5;
        f = kernels::ropeFrequencies(r, 16, 128, 10);
        QCOMPARE(f.rotDim, int64_t(8));
    }
    void ropeDynamicNtk() {
        RopeConfig r;
        r.type = RopeType::Dynamic;
        r.theta = 10000;
        r.factor = 2;
        // Within the original context: the default frequencies.
        auto f = kernels::ropeFrequencies(r, 8, 100, 100);
        QVERIFY(std::abs(f.invFreq[1] - 0.1) < 1e-15);
        // seq 200 = 2x original: base = 10000 * (2*200/100 - 1)^(8/6) = 10000 * 3^(4/3).
        f = kernels::ropeFrequencies(r, 8, 100, 200);
        const double base = 10000 * std::pow(3.0, 4.0 / 3.0);
        for (int i = 0; i < 4; ++i)
            QVERIFY(std::abs(f.invFreq[size_t(i)] - std::pow(base, -2.0 * i / 8)) < 1e-15);
        // originalMaxPositions wins over max_position_embeddings.
        r.originalMaxPositions = 50;
        f = kernels::ropeFrequencies(r, 8, 100, 100);
        QVERIFY(std::abs(f.invFreq[1] - std::pow(base, -0.25)) < 1e-15);
    }
    void ropeLlama3() {
        // Llama 3.1 settings: factor 8, low 1, high 4, original 8192, theta 500000, head 128.
        RopeConfig r;
        r.type = RopeType::Llama3;
        r.theta = 500000;
        r.factor = 8;
        r.lowFreqFactor = 1;
        r.highFreqFactor = 4;
        r.originalMaxPositions = 8192;
        const auto f = kernels::ropeFrequencies(r, 128, 131072, 10);
        int high = 0, low = 0, mid = 0;
        for (int i = 0; i < 64; ++i) {
            const double base = std::pow(500000.0, -2.0 * i / 128);
            const double wavelen = 2 * std::numbers::pi / base;
            if (wavelen < 8192.0 / 4) {
                QCOMPARE(f.invFreq[size_t(i)], base); // high frequency: unchanged
                ++high;
            } else if (wavelen > 8192.0 / 1) {
                QVERIFY(std::abs(f.invFreq[size_t(i)] - base / 8) < 1e-18); // divided by factor
                ++low;
            } else {
                const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
                const double want = (1 - smooth) * base / 8 + smooth * base;
                QVERIFY(std::abs(f.invFreq[size_t(i)] - want) < 1e-15 * base);
                QVERIFY(f.invFreq[size_t(i)] < base && f.invFreq[size_t(i)] > base / 8);
                ++mid;
            }
        }
        QVERIFY(high > 0 && low > 0 && mid > 0);
    }
    void ropeYarn() {
        RopeConfig r;
        r.type = RopeType::Yarn;
        r.theta = 10000;
        r.factor = 4;
        r.originalMaxPositions = 2048;
        const auto f = kernels::ropeFrequencies(r, 64, 8192, 10);
        QVERIFY(std::abs(f.attnScale - (0.1 * std::log(4.0) + 1)) < 1e-15);
        // Correction range by hand: 64*ln(2048/(rot*2pi)) / (2 ln 10000) = 8.06 (rot 32), 20.1
        // (rot 1) -> floor 8, ceil 21. Dims 0..8 keep their frequency, 21.. are divided by 4.
        for (int i = 0; i <= 8; ++i) QCOMPARE(f.invFreq[size_t(i)], std::pow(10000.0, -i / 32.0));
        for (int i = 21; i < 32; ++i)
            QVERIFY(std::abs(f.invFreq[size_t(i)] - std::pow(10000.0, -i / 32.0) / 4) < 1e-17);
        // Dim 14: ramp (14-8)/13.
        const double b14 = std::pow(10000.0, -14 / 32.0), ramp = 6.0 / 13.0;
        QVERIFY(std::abs(f.invFreq[14] - (b14 / 4 * ramp + b14 * (1 - ramp))) < 1e-16);
        r.factor = 1;
        QCOMPARE(kernels::ropeFrequencies(r, 64, 8192, 10).attnScale, 1.0);
    }
    void ropeYarnRamp() {
        RopeConfig r;
        r.type = RopeType::Yarn;
        r.theta = 10000;
        r.factor = 4;
        r.originalMaxPositions = 2048;
        r.attentionFactor = 1.5;
        const int64_t hd = 64;
        auto f = kernels::ropeFrequencies(r, hd, 8192, 10);
        QCOMPARE(f.attnScale, 1.5);
        auto corr = [&](double rot) {
            return 64 * std::log(2048 / (rot * 2 * std::numbers::pi)) / (2 * std::log(10000.0));
        };
        const double low = std::max(std::floor(corr(32)), 0.0);
        const double high = std::min(std::ceil(corr(1)), 63.0);
        for (int i = 0; i < 32; ++i) {
            const double base = std::pow(10000.0, -2.0 * i / 64);
            if (i <= low)
                QCOMPARE(f.invFreq[size_t(i)], base); // extrapolated: unchanged
            else if (i >= high)
                QVERIFY(std::abs(f.invFreq[size_t(i)] - base / 4) < 1e-16);
            else {
                const double ramp = (i - low) / (high - low);
                QVERIFY(std::abs(f.invFreq[size_t(i)] - (base / 4 * ramp + base * (1 - ramp))) <
                        1e-15);
            }
        }
        // cos/sin tables carry the attention factor.
        std::vector<float> c(32), s(32);
        kernels::ropeTables(f, 0, 1, c.data(), s.data());
        QCOMPARE(c[0], 1.5f);
        QCOMPARE(s[0], 0.0f);
    }
    void ropeApplyPairings() {
        // Half-split (rotate_half) and interleaved pairings on a hand-computed case.
        RopeConfig r;
        r.theta = 100; // head 4: invFreq = {1, 0.1}
        const auto f = kernels::ropeFrequencies(r, 4, 16, 4);
        std::vector<float> c(2), s(2);
        kernels::ropeTables(f, 3, 1, c.data(), s.data()); // position 3
        const double a0 = 3.0, a1 = 0.3;
        float x[4] = {1, 2, 3, 4};
        kernels::applyRope(x, 1, 4, 1, 4, 4, false, c.data(), s.data());
        // pairs (0,2) angle 3, (1,3) angle 0.3
        QVERIFY(std::abs(x[0] - (1 * std::cos(a0) - 3 * std::sin(a0))) < 1e-6);
        QVERIFY(std::abs(x[2] - (3 * std::cos(a0) + 1 * std::sin(a0))) < 1e-6);
        QVERIFY(std::abs(x[1] - (2 * std::cos(a1) - 4 * std::sin(a1))) < 1e-6);
        QVERIFY(std::abs(x[3] - (4 * std::cos(a1) + 2 * std::sin(a1))) < 1e-6);
        float y[4] = {1, 2, 3, 4};
        kernels::applyRope(y, 1, 4, 1, 4, 4, true, c.data(), s.data());
        // pairs (0,1) angle 3, (2,3) angle 0.3
        QVERIFY(std::abs(y[0] - (1 * std::cos(a0) - 2 * std::sin(a0))) < 1e-6);
        QVERIFY(std::abs(y[1] - (2 * std::cos(a0) + 1 * std::sin(a0))) < 1e-6);
        QVERIFY(std::abs(y[2] - (3 * std::cos(a1) - 4 * std::sin(a1))) < 1e-6);
        QVERIFY(std::abs(y[3] - (4 * std::cos(a1) + 3 * std::sin(a1))) < 1e-6);
        // Partial rotary: dims beyond rotDim untouched.
        float z[6] = {1, 2, 3, 4, 5, 6};
        kernels::applyRope(z, 1, 6, 1, 6, 4, false, c.data(), s.data());
        QCOMPARE(z[4], 5.0f);
        QCOMPARE(z[5], 6.0f);
    }
    void ropeRelativePosition() {
        // <rope(q, p), rope(k, p')> depends only on p - p' (both pairings).
        RopeConfig r;
        const auto f = kernels::ropeFrequencies(r, 16, 64, 64);
        std::mt19937_64 rng(1);
        const auto q = randomVec(rng, 16, -1, 1), k = randomVec(rng, 16, -1, 1);
        for (bool inter : {false, true}) {
            auto dotAt = [&](int pq, int pk) {
                std::vector<float> c(8), s(8), a = q, b = k;
                kernels::ropeTables(f, pq, 1, c.data(), s.data());
                kernels::applyRope(a.data(), 1, 16, 1, 16, 16, inter, c.data(), s.data());
                kernels::ropeTables(f, pk, 1, c.data(), s.data());
                kernels::applyRope(b.data(), 1, 16, 1, 16, 16, inter, c.data(), s.data());
                double d = 0;
                for (int i = 0; i < 16; ++i) d += double(a[size_t(i)]) * b[size_t(i)];
                return d;
            };
            QVERIFY(std::abs(dotAt(10, 7) - dotAt(5, 2)) < 1e-5);
            QVERIFY(std::abs(dotAt(30, 30) - dotAt(0, 0)) < 1e-5);
        }
    }
    void attentionWindowAgainstDouble() {
        // Decode (1 query), one block and several query blocks; with and without a window.
        std::mt19937_64 rng(9);
        const int64_t H = 4, KH = 2, hd = 8;
        for (auto isa : isasToTest()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (auto [n, pos0] : {std::pair<int64_t, int64_t>{1, 0}, {1, 9}, {6, 5}, {70, 3}}) {
                const int64_t total = pos0 + n;
                const auto q = randomVec(rng, n * H * hd, -2, 2);
                const auto K = randomVec(rng, total * KH * hd, -2, 2);
                const auto V = randomVec(rng, total * KH * hd, -1, 1);
                for (int64_t window : {0, 1, 3, 40}) {
                    std::vector<float> out(static_cast<size_t>(n * H * hd));
                    kernels::attention(q.data(), H * hd, K.data(), V.data(), out.data(), H * hd, n,
                                       pos0, H, KH, hd, window, 2);
                    double err = 0;
                    for (int64_t t = 0; t < n; ++t)
                        for (int64_t h = 0; h < H; ++h) {
                            const int64_t p = pos0 + t, kh = h / 2;
                            const int64_t j0 =
                                window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
                            std::vector<double> sc;
                            for (int64_t j = j0; j <= p; ++j) {
                                double d = 0;
                                for (int64_t i = 0; i < hd; ++i)
                                    d += double(q[size_t(t * H * hd + h * hd + i)]) *
                                         K[size_t(j * KH * hd + kh * hd + i)];
                                sc.push_back(d / std::sqrt(double(hd)));
                            }
                            const double mx = *std::max_element(sc.begin(), sc.end());
                            double sum = 0;
                            for (auto& v : sc) sum += (v = std::exp(v - mx));
                            for (int64_t i = 0; i < hd; ++i) {
                                double o = 0;
                                for (int64_t j = j0; j <= p; ++j)
                                    o += sc[size_t(j - j0)] / sum *
                                         V[size_t(j * KH * hd + kh * hd + i)];
                                err = std::max(err,
                                               std::abs(o - out[size_t(t * H * hd + h * hd + i)]));
                            }
                        }
                    if (err > 2e-6)
                        QFAIL(qPrintable(QString("%1 n=%2 pos0=%3 window=%4: err %5")
                                             .arg(kernels::isaName(isa))
                                             .arg(n)
                                             .arg(pos0)
                                             .arg(window)
                                             .arg(err)));
                }
            }
        }
    }
    void gemmNNAgainstDouble() {
        std::mt19937_64 rng(4);
        for (auto isa : isasToTest()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (int64_t M : {1, 3, 4, 9})
                for (int64_t N : {1, 7, 8, 9, 16, 17, 40})
                    for (int64_t K : {1, 8, 33}) {
                        const int64_t lda = K + 2, ldb = N + 3, ldc = N + 1;
                        const auto a = randomVec(rng, M * lda, -1, 1);
                        const auto b = randomVec(rng, K * ldb, -1, 1);
                        std::vector<float> c(static_cast<size_t>(M * ldc), 123.0f);
                        kernels::gemmNN(a.data(), lda, b.data(), ldb, c.data(), ldc, M, N, K);
                        for (int64_t i = 0; i < M; ++i) {
                            for (int64_t j = 0; j < N; ++j) {
                                double r = 0;
                                for (int64_t k = 0; k < K; ++k)
                                    r += double(a[size_t(i * lda + k)]) * b[size_t(k * ldb + j)];
                                QVERIFY(std::abs(r - c[size_t(i * ldc + j)]) < 1e-5);
                            }
                            QCOMPARE(c[size_t(i * ldc + N)], 123.0f); // padding untouched
                        }
                    }
        }
    }
    void logSoftmaxAgainstDouble() {
        const float l[4] = {1.0f, 2.0f, -1.0f, 1000.0f};
        const double z = std::exp(1.0 - 1000) + std::exp(2.0 - 1000) + std::exp(-1.0 - 1000) + 1;
        QVERIFY(std::abs(kernels::logSoftmaxAt(l, 4, 1) - (2.0 - 1000 - std::log(z))) < 1e-9);
        QVERIFY(std::abs(kernels::logSoftmaxAt(l, 4, 3) - (-std::log(z))) < 1e-12);
    }

    // ================= sampling =================
    void samplingGreedyAndTopK() {
        std::mt19937_64 rng(1);
        std::vector<float> l = {0.1f, 3.0f, -2.0f, 3.0f, 2.9f};
        QCOMPARE(sampleToken(l.data(), 5, {}, rng), 1); // ties: lowest index
        SamplingParams p;
        p.temperature = 1.0f;
        p.topK = 1;
        for (int i = 0; i < 20; ++i) QCOMPARE(sampleToken(l.data(), 5, p, rng), 1);
        p.topK = 0;
        p.topP = 1e-6f;
        for (int i = 0; i < 20; ++i) QCOMPARE(sampleToken(l.data(), 5, p, rng), 1);
        // top-k 2 only ever picks the two best.
        p.topP = 1.0f;
        p.topK = 2;
        p.temperature = 5.0f;
        for (int i = 0; i < 200; ++i) {
            const int32_t t = sampleToken(l.data(), 5, p, rng);
            QVERIFY(t == 1 || t == 3);
        }
    }
    void samplingTopP() {
        // P = 0.5, 0.3, 0.2: top-p 0.7 keeps the first two (0.5 + 0.3 >= 0.7).
        std::vector<float> l = {std::log(0.3f), std::log(0.2f), std::log(0.5f)};
        SamplingParams p;
        p.temperature = 1.0f;
        p.topP = 0.7f;
        std::mt19937_64 rng(3);
        int counts[3] = {};
        for (int i = 0; i < 4000; ++i) ++counts[sampleToken(l.data(), 3, p, rng)];
        QCOMPARE(counts[1], 0);
        QVERIFY(std::abs(counts[2] / 4000.0 - 0.625) < 0.03); // 0.5 / 0.8
        // A flat distribution over 1000 ids: top-p 0.5 needs 500 of them (grows the sorted
        // prefix beyond its first 64); ties go to the lower ids.
        std::vector<float> flat(1000, 0.0f);
        p.topP = 0.5f;
        int maxId = 0;
        for (int i = 0; i < 3000; ++i)
            maxId = std::max(maxId, int(sampleToken(flat.data(), 1000, p, rng)));
        QVERIFY(maxId < 500 && maxId > 400);
        // top-k and top-p together.
        p.topK = 10;
        for (int i = 0; i < 300; ++i) QVERIFY(sampleToken(flat.data(), 1000, p, rng) < 6);
    }
    void samplingDistributionAndSeed() {
        // Two tokens with logits log(3) and 0 at temperature 1: P = 0.75 / 0.25.
        std::vector<float> l = {std::log(3.0f), 0.0f};
        SamplingParams p;
        p.temperature = 1.0f;
        std::mt19937_64 rng(42);
        int zeros = 0;
        const int N = 20000;
        for (int i = 0; i < N; ++i) zeros += sampleToken(l.data(), 2, p, rng) == 0;
        QVERIFY(std::abs(zeros / double(N) - 0.75) < 0.015);
        // Fixed seed: same sequence.
        std::vector<float> big(50);
        for (size_t i = 0; i < big.size(); ++i) big[i] = float(std::sin(double(i)));
        std::mt19937_64 a(123), b(123);
        for (int i = 0; i < 100; ++i)
            QCOMPARE(sampleToken(big.data(), 50, p, a), sampleToken(big.data(), 50, p, b));
    }

    // ================= forward vs naive reference =================
    void forwardLlamaGqa() { checkForwardAgainstReference(TinyConfig{}, 2e-4, "llama gqa f32"); }
    void forwardQwen2Bias() {
        TinyConfig c;
        c.arch = "qwen2";
        c.bias = true;
        c.tied = true;
        c.rope.theta = 1000000;
        checkForwardAgainstReference(c, 2e-4, "qwen2 bias tied");
    }
    void forwardQwen3QkNorm() {
        TinyConfig c;
        c.arch = "qwen3";
        c.qkNorm = true;
        c.headDim = 32; // head_dim independent of dim / heads
        checkForwardAgainstReference(c, 2e-4, "qwen3 qk-norm");
    }
    void forwardMistralSlidingWindow() {
        TinyConfig c;
        c.arch = "mistral";
        c.slidingWindow = 5;
        checkForwardAgainstReference(c, 2e-4, "mistral sliding window");
        // And the window really matters: same weights without it differ.
        auto a = makeTiny(c);
        c.slidingWindow = 0;
        auto b = makeTiny(c);
        const auto ids = someIds(20, c.vocab);
        std::vector<float> la, lb;
        Session(*a).forward(ids, la, false);
        Session(*b).forward(ids, lb, false);
        QVERIFY(maxAbsDiff(la, lb) > 1e-3);
    }
    void forwardRopeVariants() {
        TinyConfig c;
        c.rope.interleaved = true;
        checkForwardAgainstReference(c, 2e-4, "interleaved");
        c.rope.partialRotaryFactor = 0.5;
        checkForwardAgainstReference(c, 2e-4, "interleaved partial");
        c.rope.interleaved = false;
        checkForwardAgainstReference(c, 2e-4, "partial");
        c.rope = RopeConfig{};
        c.rope.type = RopeType::Yarn;
        c.rope.factor = 4;
        c.rope.originalMaxPositions = 16;
        checkForwardAgainstReference(c, 2e-4, "yarn");
        c.rope = RopeConfig{};
        c.rope.type = RopeType::Llama3;
        c.rope.factor = 8;
        c.rope.originalMaxPositions = 16;
        checkForwardAgainstReference(c, 2e-4, "llama3");
        c.rope = RopeConfig{};
        c.rope.type = RopeType::Linear;
        c.rope.factor = 2;
        checkForwardAgainstReference(c, 2e-4, "linear");
        c.rope = RopeConfig{};
        c.rope.type = RopeType::Dynamic;
        c.rope.factor = 2;
        c.maxSeq = 16; // 23 tokens > 16: theta grows
        checkForwardAgainstReference(c, 2e-4, "dynamic");
    }
    void forwardQuantizedWeights() {
        for (DType dt : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_1}) {
            TinyConfig c;
            c.dtype = dt;
            c.hidden = 96;
            c.vocab = 96;
            const std::string name(dtypeName(dt));
            checkForwardAgainstReference(c, 2e-4, (name + " exact").c_str(), true);
            // 8-bit activation blocks (llama.cpp's way) for Q8_0 / Q4_1: logits of this model
            // (|logit| up to ~3) move by a few hundredths; BF16 on a CPU with AVX-512 BF16 rounds
            // the activations to bf16 (llama.cpp's way too): about the same.
            checkForwardAgainstReference(c,
                                         dtypeIsQuantized(dt)  ? 0.25
                                         : dt == DType::BF16 ? 0.1
                                                             : 2e-4,
                                         name.c_str());
        }
    }

    // ================= Session behaviour =================
    void decodeEqualsPrefill() {
        TinyConfig c;
        c.bias = true;
        c.arch = "qwen2";
        auto m = makeTiny(c);
        const auto ids = someIds(20, c.vocab);
        Session s(*m, {.contextLength = 32, .threads = 2, .batchSize = 7}); // prefill in 3 batches
        std::vector<float> all, one;
        s.forward(ids, all, true);
        QCOMPARE(s.position(), int64_t(20));
        s.reset();
        QCOMPARE(s.position(), int64_t(0));
        std::vector<float> stepwise;
        for (int32_t id : ids) {
            const int32_t x[1] = {id};
            s.forward(x, one, false);
            QCOMPARE(one.size(), size_t(c.vocab));
            stepwise.insert(stepwise.end(), one.begin(), one.end());
        }
        QVERIFY(maxAbsDiff(all, stepwise) < 1e-5);
        // Reset gives the same again; the last-only logits equal the last row.
        s.reset();
        s.forward(ids, one, false);
        QVERIFY(maxAbsDiff(one, std::vector<float>(all.end() - c.vocab, all.end())) < 1e-5);
        // forwardFrom returns the tail rows.
        s.reset();
        s.forwardFrom(ids, one, 15);
        QVERIFY(maxAbsDiff(one, std::vector<float>(all.begin() + 15 * c.vocab, all.end())) < 1e-5);
    }
    void errors() {
        auto m = makeTiny(TinyConfig{});
        Session s(*m, {.contextLength = 8});
        QCOMPARE(s.contextLength(), int64_t(8));
        std::vector<float> logits;
        const std::vector<int32_t> bad = {1, 97};
        QVERIFY_THROWS_EXCEPTION(ArgumentError, s.forward(bad, logits));
        const std::vector<int32_t> neg = {-1};
        QVERIFY_THROWS_EXCEPTION(ArgumentError, s.forward(neg, logits));
        QCOMPARE(s.position(), int64_t(0));
        s.forward(someIds(6, 97), logits);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, s.forward(someIds(3, 97), logits));
        QCOMPARE(s.position(), int64_t(6)); // failed call appended nothing
        s.forward(someIds(2, 97), logits);
        QCOMPARE(s.position(), int64_t(8));
        const std::vector<int32_t> one = {3};
        QVERIFY_THROWS_EXCEPTION(ArgumentError, s.forward(one, logits));
        // Unsupported architecture.
        TinyConfig c;
        c.arch = "t5";
        auto g = makeTiny(c);
        QVERIFY_THROWS_EXCEPTION(UnsupportedError, Session{*g});
    }
    void nonFiniteLogits() {
        TinyConfig c;
        auto m = makeTiny(c);
        std::vector<float> w(size_t(c.hidden * c.dim), 0.0f);
        w[5] = std::numeric_limits<float>::infinity();
        m->add("layers.1.mlp.up", {c.hidden, c.dim}, w);
        Session s(*m);
        std::vector<float> logits;
        try {
            s.forward(someIds(3, c.vocab), logits);
            QFAIL("expected an error");
        } catch (const Error& e) {
            QVERIFY(QString(e.what()).contains("non-finite"));
        }
    }
    void observers() {
        TinyConfig c;
        auto m = makeTiny(c);
        Session s(*m);
        CountingObserver obs;
        s.addObserver(&obs);
        std::vector<float> logits;
        const auto ids = someIds(9, c.vocab);
        s.forward(ids, logits, true);
        for (int l = 0; l < 2; ++l)
            for (const char* r :
                 {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"}) {
                const std::string name = "layers." + std::to_string(l) + "." + r;
                QCOMPARE(obs.linearCalls[name], 1);
                const int64_t dim = std::string(r) == "mlp.down" ? c.hidden
                                    : std::string(r) == "attn.o" ? c.heads * c.headDim
                                                                 : c.dim;
                QCOMPARE(obs.linearShape[name], std::make_pair(int64_t(9), dim));
            }
        QCOMPARE(obs.linearCalls["lm_head"], 1);
        QCOMPARE(obs.linearShape["lm_head"], std::make_pair(int64_t(9), c.dim));
        QCOMPARE(int(obs.linearCalls.size()), 2 * 7 + 1);
        QCOMPARE(obs.kvCalls, 2);
        QCOMPARE(obs.residualCalls, 2);
        QCOMPARE(obs.kvTokens, int64_t(9));
        QCOMPARE(obs.lastPos0, int64_t(0));
        // lm_head input is the final normed hidden state: logits = lm_head * x.
        const auto& lm = m->ref.at("lm_head");
        double err = 0;
        for (int64_t t = 0; t < 9; ++t)
            for (int64_t o = 0; o < c.vocab; ++o) {
                double y = 0;
                for (int64_t i = 0; i < c.dim; ++i)
                    y += double(lm[size_t(o * c.dim + i)]) * obs.lmInput[size_t(t * c.dim + i)];
                err = std::max(err, std::abs(y - logits[size_t(t * c.vocab + o)]));
            }
        QVERIFY(err < 1e-5);
        // K post-RoPE at position 0 equals K pre-RoPE (angle 0), and differs later.
        const int64_t kvd = c.kvHeads * c.headDim;
        for (int64_t i = 0; i < kvd; ++i) QCOMPARE(obs.kPost[size_t(i)], obs.kPre[size_t(i)]);
        QVERIFY(maxAbsDiff(std::vector<float>(obs.kPost.begin() + kvd, obs.kPost.end()),
                           std::vector<float>(obs.kPre.begin() + kvd, obs.kPre.end())) > 1e-3);
        // Decode step: one token at position 9; lm_head sees only the last token.
        const int32_t one[1] = {5};
        s.forward(one, logits, false);
        QCOMPARE(obs.lastPos0, int64_t(9));
        QCOMPARE(obs.linearShape["lm_head"], std::make_pair(int64_t(1), c.dim));
        QCOMPARE(obs.linearCalls["layers.0.attn.q"], 2);
        s.removeObserver(&obs);
        s.forward(one, logits, false);
        QCOMPARE(obs.linearCalls["layers.0.attn.q"], 2);
    }
    void generateStopsAndCancels() {
        TinyConfig c;
        auto m = makeTiny(c);
        Session s(*m, {.contextLength = 40});
        const std::vector<int32_t> prompt = {1, 5, 9};
        auto r = s.generate(prompt, 10, {});
        QCOMPARE(r.promptTokens, int64_t(3));
        QVERIFY(r.generatedTokens <= 10);
        QCOMPARE(int64_t(r.ids.size()), 3 + r.generatedTokens);
        // Greedy generate equals argmax of step-by-step forward.
        std::vector<float> logits;
        s.reset();
        s.forward(prompt, logits);
        std::mt19937_64 rng;
        for (size_t i = 3; i < r.ids.size(); ++i) {
            const int32_t t = sampleToken(logits.data(), c.vocab, {}, rng);
            QCOMPARE(t, r.ids[i]);
            const int32_t one[1] = {t};
            if (i + 1 < r.ids.size()) s.forward(one, logits);
        }
        // EOS stop: make the first generated token the EOS id.
        m->sp.eosIds = {r.ids[3]};
        Session s2(*m, {.contextLength = 40});
        auto r2 = s2.generate(prompt, 10, {});
        QVERIFY(r2.stoppedAtEos);
        QCOMPARE(r2.generatedTokens, int64_t(1));
        // Cancel after 2 tokens.
        m->sp.eosIds = {};
        Session s3(*m, {.contextLength = 40});
        int seen = 0;
        auto r3 = s3.generate(prompt, 10, {}, [&](int32_t) { return ++seen < 2; });
        QCOMPARE(r3.status, Status::Cancelled);
        QCOMPARE(r3.generatedTokens, int64_t(2));
        // Context full: stops without error.
        Session s4(*m, {.contextLength = 6});
        auto r4 = s4.generate(prompt, 10, {});
        QCOMPARE(r4.generatedTokens, int64_t(4)); // positions 3,4,5 decoded + the last sample
    }

    // ================= shared models =================
    void stories260KLogitsAllFormats() {
        LCW_REQUIRE_SHARED("reference/stories260K.json");
        const auto ref = readJson(lcwtest::sharedPath("reference/stories260K.json"));
        const auto ids = ref["logits"]["ids"].get<std::vector<int32_t>>();
        const NpyArray want = readNpy(lcwtest::sharedPath("reference/stories260K_logits_lily.npy"));
        QCOMPARE(want.shape, (std::vector<int64_t>{16, 512}));
        for (const char* rel :
             {"models/stories260K/hf", "models/stories260K/gguf/stories260K-f32.gguf",
              "models/stories260K/llama2c/stories260K.bin"}) {
            auto m = loadOrFail(rel);
            Session s(*m);
            std::vector<float> logits;
            s.forward(ids, logits, true);
            const double d = maxAbsDiff(logits, want.data);
            qInfo("%s: max |logit diff| %.3g", rel, d);
            QVERIFY2(d < 1e-4, rel);
        }
    }
    void stories260KGreedyAllFormats() {
        LCW_REQUIRE_SHARED("reference/stories260K.json");
        const auto ref = readJson(lcwtest::sharedPath("reference/stories260K.json"));
        const auto prompt = ref["greedy"]["prompt_ids"].get<std::vector<int32_t>>();
        const auto want = ref["greedy"]["ids"].get<std::vector<int32_t>>();
        const int64_t nNew = ref["greedy"]["new_tokens"].get<int64_t>();
        for (const char* rel :
             {"models/stories260K/hf", "models/stories260K/gguf/stories260K-f32.gguf",
              "models/stories260K/llama2c/stories260K.bin"}) {
            auto m = loadOrFail(rel);
            Session s(*m);
            const auto r = s.generate(prompt, nNew, {});
            QCOMPARE(r.ids, want);
            QVERIFY(!r.stoppedAtEos);
            qInfo("%s: prefill %lld tok in %.2f ms, decode %lld tok at %.0f tok/s", rel,
                  (long long)r.promptTokens, r.prefillSeconds * 1e3, (long long)r.generatedTokens,
                  double(r.generatedTokens) / r.decodeSeconds);
        }
    }
    void tinyRandomLogitsAndGreedy_data() {
        QTest::addColumn<QString>("name");
        QTest::newRow("llama2_sp_f32") << "llama2_sp_f32";
        QTest::newRow("qwen2_sharded") << "qwen2_sharded";
    }
    void tinyRandomLogitsAndGreedy() {
        QFETCH(QString, name);
        const std::string dir = "models/tiny-random/" + name.toStdString();
        LCW_REQUIRE_SHARED(dir + "/reference.json");
        const auto ref = readJson(lcwtest::sharedPath(dir + "/reference.json"));
        auto m = loadOrFail(dir + "/model");
        const auto ids = ref["ids"].get<std::vector<int32_t>>();
        const NpyArray want = readNpy(lcwtest::sharedPath(dir + "/logits.npy"));
        Session s(*m);
        std::vector<float> logits;
        s.forward(ids, logits, true);
        const double d = maxAbsDiff(logits, want.data);
        qInfo("%s: max |logit diff| %.3g", dir.c_str(), d);
        QVERIFY(d < 1e-4);
        const auto prompt = ref["greedy_prompt"].get<std::vector<int32_t>>();
        const auto greedy = ref["greedy_ids"].get<std::vector<int32_t>>();
        Session g(*m);
        const auto r = g.generate(prompt, int64_t(greedy.size() - prompt.size()), {});
        QCOMPARE(r.ids, greedy);
    }
    void nanWeightNamesTensor() {
        // A copy of the HF folder with one NaN in a weight: the error names tensor and file.
        LCW_REQUIRE_SHARED("models/stories260K/hf/model.safetensors");
        namespace fs = std::filesystem;
        const std::string dir = lcwtest::tempDir("nan");
        for (const auto& e : fs::directory_iterator(lcwtest::sharedPath("models/stories260K/hf")))
            fs::copy_file(e.path(), fs::path(dir) / e.path().filename());
        fs::permissions(fs::path(dir) / "model.safetensors", fs::perms::owner_write,
                        fs::perm_options::add);
        std::string target;
        {
            auto m = Model::load(dir);
            const TensorView& t = m->get("layers.2.mlp.up");
            QCOMPARE(t.dtype, DType::F32);
            target = t.fileName;
            // Offset of the tensor in the file: data pointer relative to the mapping start is not
            // exposed, so find the bytes of the first few floats.
            std::ifstream in(dir + "/model.safetensors", std::ios::binary);
            std::string bytes((std::istreambuf_iterator<char>(in)), {});
            const auto off = bytes.find(std::string(reinterpret_cast<const char*>(t.data), 64));
            QVERIFY(off != std::string::npos);
            m.reset();
            std::fstream out(dir + "/model.safetensors",
                             std::ios::in | std::ios::out | std::ios::binary);
            out.seekp(std::streamoff(off + 4 * 10));
            const float nan = std::numeric_limits<float>::quiet_NaN();
            out.write(reinterpret_cast<const char*>(&nan), 4);
        }
        auto m = Model::load(dir);
        Session s(*m);
        std::vector<float> logits;
        try {
            s.forward(std::vector<int32_t>{1, 403, 407}, logits);
            QFAIL("expected an error");
        } catch (const Error& e) {
            const QString msg = e.what();
            qInfo("%s", e.what());
            QVERIFY(msg.contains(QString::fromStdString(target)));
            QVERIFY(msg.contains("model.safetensors"));
            QVERIFY(msg.contains("NaN"));
        }
        fs::remove_all(dir);
    }
};

QTEST_GUILESS_MAIN(TestRuntime)
#include "test_runtime.moc"
