// Tests of the attention kernels (core/runtime/cpu/attention.cpp): every instruction-set level
// against a straightforward double-precision softmax(q.k) v for causal prefill, long-context
// decode, sliding windows, soft-capping, ALiBi in both orders, GQA ratios and head sizes; results
// that do not depend on the batch or the thread count (kernel and whole model: decode == prefill,
// bit for bit); bounded scratch memory at a 4096-token context; and the speed of prefill and decode
// at a TinyLlama-like head shape. The F16 cache: its rounding (every level against the scalar
// f32ToF16), the F16 kernels against the f32 kernels on the widened cache (bit for bit), and the
// model with an F16 cache against the f32 cache.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "test_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace lcw;

namespace {

struct IsaGuard {
    ~IsaGuard() { kernels::setIsa(kernels::Isa::Auto); }
};

std::vector<float> randomVec(std::mt19937_64& rng, int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
}

/// One attention call: shapes, options and random inputs (q in [-qr, qr], K in [-2, 2], V in
/// [-1, 1], so every output lies in [-1, 1]).
struct Case {
    int64_t nTok = 1, pos0 = 0, H = 4, KV = 2, hd = 64;
    int64_t window = 0;
    float scale = 0, softcap = 0, qRange = 2;
    bool alibi = false, alibiBeforeScale = false;
    uint64_t seed = 1;

    std::vector<float> q, K, V, slopes;
    void make() {
        std::mt19937_64 rng(seed);
        const int64_t ctx = pos0 + nTok;
        q = randomVec(rng, nTok * H * hd, -qRange, qRange);
        K = randomVec(rng, ctx * KV * hd, -2, 2);
        V = randomVec(rng, ctx * KV * hd, -1, 1);
        if (alibi) slopes = kernels::alibiSlopes(H);
    }
    kernels::AttentionOptions options() const {
        kernels::AttentionOptions o;
        o.window = window, o.scale = scale, o.softcap = softcap;
        o.alibi = alibi ? slopes.data() : nullptr;
        o.alibiBeforeScale = alibiBeforeScale;
        return o;
    }
    /// K and V rounded to F16 (the F16 cache), and V, K widened back (what it holds as floats).
    std::vector<uint16_t> kHalf, vHalf;
    std::vector<float> kWide, vWide;
    void makeHalf() {
        kHalf.resize(K.size()), vHalf.resize(V.size());
        kernels::convertToF16Saturated(K.data(), kHalf.data(), int64_t(K.size()));
        kernels::convertToF16Saturated(V.data(), vHalf.data(), int64_t(V.size()));
        kWide.resize(K.size()), vWide.resize(V.size());
        for (size_t i = 0; i < K.size(); ++i) kWide[i] = f16ToF32(kHalf[i]);
        for (size_t i = 0; i < V.size(); ++i) vWide[i] = f16ToF32(vHalf[i]);
    }
    /// run() over the F16 cache (half) or over its widened f32 copy.
    std::vector<float> runHalf(bool half, int threads, int64_t t0 = 0, int64_t n = -1) const {
        if (n < 0) n = nTok - t0;
        std::vector<float> out(size_t(n * H * hd), NAN);
        if (half)
            kernels::attentionExF16(q.data() + t0 * H * hd, H * hd, kHalf.data(), vHalf.data(),
                                    out.data(), H * hd, n, pos0 + t0, H, KV, hd, options(),
                                    threads);
        else
            kernels::attentionEx(q.data() + t0 * H * hd, H * hd, kWide.data(), vWide.data(),
                                 out.data(), H * hd, n, pos0 + t0, H, KV, hd, options(), threads);
        return out;
    }
    std::vector<float> run(int threads, int64_t t0 = 0, int64_t n = -1) const {
        // Queries t0..t0+n of the case (n = -1: all), as one call at position pos0 + t0.
        if (n < 0) n = nTok - t0;
        std::vector<float> out(size_t(n * H * hd), NAN);
        kernels::attentionEx(q.data() + t0 * H * hd, H * hd, K.data(), V.data(), out.data(), H * hd,
                             n, pos0 + t0, H, KV, hd, options(), threads);
        return out;
    }
    /// Output row of query t, head h in double precision.
    std::vector<double> reference(int64_t t, int64_t h) const {
        const int64_t p = pos0 + t, kvh = h / (H / KV), kvd = KV * hd;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
        const double sc = scale > 0 ? scale : double(float(1.0 / std::sqrt(double(hd))));
        const double slope = alibi ? double(slopes[size_t(h)]) : 0.0;
        std::vector<double> s;
        for (int64_t j = lo; j <= p; ++j) {
            double d = 0;
            for (int64_t i = 0; i < hd; ++i)
                d += double(q[size_t(t * H * hd + h * hd + i)]) * K[size_t(j * kvd + kvh * hd + i)];
            const double rel = double(j - p);
            double x = alibiBeforeScale ? (d + slope * rel) * sc : d * sc + slope * rel;
            if (softcap > 0) x = softcap * std::tanh(x / softcap);
            s.push_back(x);
        }
        const double mx = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        std::vector<double> o(size_t(hd), 0.0);
        for (int64_t j = lo; j <= p; ++j)
            for (int64_t i = 0; i < hd; ++i)
                o[size_t(i)] += s[size_t(j - lo)] / sum * V[size_t(j * kvd + kvh * hd + i)];
        return o;
    }
    /// Largest |out - reference| over the queries `ts` (all heads).
    double maxError(const std::vector<float>& out, const std::vector<int64_t>& ts) const {
        double e = 0;
        for (int64_t t : ts)
            for (int64_t h = 0; h < H; ++h) {
                const auto r = reference(t, h);
                for (int64_t i = 0; i < hd; ++i) {
                    const float v = out[size_t(t * H * hd + h * hd + i)];
                    e = std::max(e, std::isfinite(v) ? std::abs(double(v) - r[size_t(i)]) : 1e30);
                }
            }
        return e;
    }
    double maxError(const std::vector<float>& out) const {
        std::vector<int64_t> ts(static_cast<size_t>(nTok));
        for (int64_t t = 0; t < nTok; ++t) ts[size_t(t)] = t;
        return maxError(out, ts);
    }
    QString describe() const {
        return QString("nTok=%1 pos0=%2 H=%3 KV=%4 hd=%5 window=%6 scale=%7 softcap=%8 alibi=%9%10")
            .arg(nTok)
            .arg(pos0)
            .arg(H)
            .arg(KV)
            .arg(hd)
            .arg(window)
            .arg(double(scale))
            .arg(double(softcap))
            .arg(alibi)
            .arg(alibiBeforeScale ? " (before scale)" : "");
    }
};

// Outputs are convex combinations of V rows (|V| <= 1). Float rounding of the scores (|q.k| up to
// ~100 here), of exp and of the softmax sums stays near 1e-6 (measured: <= 9.1e-7 on every
// level; the previous kernel: 9.4e-7).
constexpr double kTol = 5e-6;

// Largest error seen per level (printed at the end, for the record).
std::map<std::string, double> g_worst;

void checkAllIsas(Case& c, double tol = kTol) {
    c.make();
    for (auto isa : kernels::supportedIsas()) {
        IsaGuard guard;
        kernels::setIsa(isa);
        const double e = c.maxError(c.run(2));
        double& w = g_worst[kernels::isaName(isa)];
        w = std::max(w, e);
        if (!(e <= tol))
            QFAIL(qPrintable(QString("%1 %2: max |err| %3 > %4")
                                 .arg(kernels::isaName(isa))
                                 .arg(c.describe())
                                 .arg(e)
                                 .arg(tol)));
    }
}

/// Prefill at a 600-token context (GQA 4:1); the same with a window, soft-capping, ALiBi and a
/// custom scale (no GQA); 20 queries at the end of a 3000-token context (8:1, head size 80).
std::vector<Case> invarianceCases() {
    std::vector<Case> cases(3);
    cases[0].nTok = 150, cases[0].pos0 = 600, cases[0].H = 8, cases[0].KV = 2;
    cases[1] = cases[0];
    cases[1].window = 300, cases[1].softcap = 20, cases[1].alibi = true;
    cases[1].scale = 0.1f, cases[1].H = 4, cases[1].KV = 4;
    cases[2].nTok = 20, cases[2].pos0 = 2990, cases[2].H = 8, cases[2].KV = 1, cases[2].hd = 80;
    return cases;
}

double medianMs(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

class TestAttention : public QObject {
    Q_OBJECT
private slots:
    void cleanupTestCase() {
        for (const auto& [isa, e] : g_worst)
            qInfo("%s: largest |error| against the double reference %.3g", isa.c_str(), e);
    }
    void causalPrefill() {
        // pos0 > 0 with several query blocks and key chunks; a short prompt; tiny heads.
        for (auto [n, pos0] : {std::pair<int64_t, int64_t>{37, 50}, {130, 0}, {3, 200}, {1, 0}}) {
            Case c;
            c.nTok = n, c.pos0 = pos0, c.H = 8, c.KV = 2;
            checkAllIsas(c);
        }
        for (int64_t hd : {1, 8, 20}) {
            Case c;
            c.nTok = 45, c.pos0 = 70, c.H = 6, c.KV = 3, c.hd = hd;
            checkAllIsas(c);
        }
    }
    void longContextDecode() {
        // One query at position 4095 (and at odd positions that end mid-chunk), 32 heads over 4
        // KV heads: the key range is split over the threads and merged.
        for (int64_t pos0 : {4095, 2999, 1024, 511}) {
            Case c;
            c.nTok = 1, c.pos0 = pos0, c.H = 32, c.KV = 4, c.hd = 64, c.seed = uint64_t(pos0);
            checkAllIsas(c);
        }
        // Multi-query attention (one KV head) and several tokens at a long context.
        Case c;
        c.nTok = 3, c.pos0 = 3000, c.H = 4, c.KV = 1, c.hd = 128;
        checkAllIsas(c);
    }
    void slidingWindow() {
        for (int64_t window : {1, 17, 64, 100, 700}) {
            Case c;
            c.nTok = 70, c.pos0 = 600, c.H = 4, c.KV = 2, c.window = window;
            checkAllIsas(c);
            Case d;
            d.nTok = 1, d.pos0 = 2500, d.H = 8, d.KV = 2, d.window = window;
            checkAllIsas(d);
        }
    }
    void softcapAndScale() {
        // Gemma2-like: scale 1/sqrt(256)-style custom scale, softcap 50, and a small cap that
        // saturates tanh (q in [-6, 6] makes |score| large).
        for (float cap : {50.0f, 5.0f}) {
            Case c;
            c.nTok = 40, c.pos0 = 90, c.H = 8, c.KV = 4, c.softcap = cap, c.scale = 0.0625f;
            c.qRange = 6;
            checkAllIsas(c);
            Case d = c;
            d.nTok = 1, d.pos0 = 1500, d.window = 300;
            checkAllIsas(d);
        }
    }
    void alibiBothOrders() {
        for (bool before : {false, true}) {
            Case c;
            c.nTok = 50, c.pos0 = 80, c.H = 8, c.KV = 8, c.alibi = true;
            c.alibiBeforeScale = before, c.scale = 0.125f;
            checkAllIsas(c);
            Case d = c;
            d.nTok = 1, d.pos0 = 1200, d.H = 6, d.KV = 6; // 6 heads: the odd-power slopes
            checkAllIsas(d);
            Case w = c; // with a window and a soft cap on top
            w.window = 33, w.softcap = 20;
            checkAllIsas(w);
        }
    }
    void gqaRatiosAndHeadDims() {
        // Query heads per KV head 1, 4, 8, and 3 and 16 (not a divisor / a multiple of the
        // kernel's 8-row groups).
        for (auto [H, KV] : {std::pair<int64_t, int64_t>{8, 8}, {8, 2}, {8, 1}, {6, 2}, {16, 1}})
            for (int64_t hd : {64, 80, 128}) {
                Case c;
                c.H = H, c.KV = KV, c.hd = hd, c.nTok = 20, c.pos0 = 100;
                c.seed = uint64_t(H * 1000 + KV * 100 + hd);
                checkAllIsas(c);
                Case d = c;
                d.nTok = 1, d.pos0 = 1100;
                checkAllIsas(d);
            }
    }
    void isasAgreeWithPortable() {
        // Every vector level within 3e-6 of the portable reference path (not bit-identical: the
        // vector exp differs from std::exp in the last bits, and FMA rounds once).
        Case c;
        c.nTok = 64, c.pos0 = 700, c.H = 8, c.KV = 2, c.hd = 80, c.window = 500, c.softcap = 30;
        c.make();
        IsaGuard guard;
        kernels::setIsa(kernels::Isa::Generic);
        const auto ref = c.run(2);
        for (auto isa : kernels::supportedIsas()) {
            kernels::setIsa(isa);
            const auto out = c.run(2);
            double d = 0;
            for (size_t i = 0; i < out.size(); ++i)
                d = std::max(d, double(std::abs(out[i] - ref[i])));
            QVERIFY2(d < 3e-6, qPrintable(QString("%1: %2").arg(kernels::isaName(isa)).arg(d)));
        }
    }
    void batchAndThreadInvariance() {
        // A query's output does not depend on the batch it is computed in, its place there, the
        // thread count or the split of a long key range over threads: bit-identical, per level.
        std::vector<Case> cases = invarianceCases();
        const auto same = [](const float* a, const float* b, int64_t n) {
            return std::memcmp(a, b, size_t(n) * sizeof(float)) == 0;
        };
        for (auto isa : kernels::supportedIsas()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (Case& c : cases) {
                c.make();
                const int64_t row = c.H * c.hd;
                const auto all1 = c.run(1), all2 = c.run(2);
                QVERIFY2(all1 == all2,
                         qPrintable(kernels::isaName(isa) + (" threads " + c.describe())));
                for (int64_t t : {int64_t(0), c.nTok / 3, c.nTok - 1}) {
                    const auto one = c.run(2, t, 1); // decode: split over the key range
                    QVERIFY2(same(one.data(), all1.data() + t * row, row),
                             qPrintable(kernels::isaName(isa) + QString(" decode t=%1 ").arg(t) +
                                        c.describe()));
                }
                const int64_t t0 = c.nTok / 4, n = c.nTok / 2; // a middle segment
                const auto seg = c.run(2, t0, n);
                QVERIFY2(same(seg.data(), all1.data() + t0 * row, n * row),
                         qPrintable(kernels::isaName(isa) + (" segment " + c.describe())));
            }
        }
    }
    void f16RoundingAtEveryLevel() {
        // convertToF16Saturated at every level against the scalar f32ToF16 of the saturated
        // value: normal, subnormal and underflowing halves, ties at both parities, the saturation
        // edge (65504 kept, 65519.99 rounds to 65504, beyond that saturated), infinities, zeros
        // of both signs; lengths with vector tails. NaN stays NaN.
        std::vector<float> x = {0.0f,      -0.0f,     1.0f,     -1.0f,          65504.0f,
                                -65504.0f, 65519.99f, 65520.0f, -70000.0f,      1e9f,
                                INFINITY,  -INFINITY, 6.0e-8f,  2.98e-8f,       -3.0e-8f,
                                1e-10f,    1e-40f,    6.1e-5f,  1.00048828125f, 1.00146484375f,
                                2049.0f,   2051.0f};
        std::mt19937_64 rng(7);
        std::uniform_real_distribution<float> e(-30.0f, 18.0f), sgn(-1.0f, 1.0f);
        for (int i = 0; i < 4000; ++i) x.push_back(std::copysign(std::exp2(e(rng)), sgn(rng)));
        const auto expect = [](float v) {
            const float s = std::fabs(v) > 65504.0f ? std::copysign(65504.0f, v) : v;
            return f32ToF16(s);
        };
        for (auto isa : kernels::supportedIsas()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (int64_t n : {int64_t(x.size()), int64_t(37), int64_t(7), int64_t(1)}) {
                std::vector<uint16_t> h(size_t(n) + 1, 0xABCD);
                kernels::convertToF16Saturated(x.data(), h.data(), n);
                QCOMPARE(h[size_t(n)], uint16_t(0xABCD)); // nothing written past n
                for (int64_t i = 0; i < n; ++i)
                    if (h[size_t(i)] != expect(x[size_t(i)]))
                        QFAIL(qPrintable(QString("%1: %2 -> 0x%3, expected 0x%4")
                                             .arg(kernels::isaName(isa))
                                             .arg(double(x[size_t(i)]), 0, 'g', 9)
                                             .arg(h[size_t(i)], 0, 16)
                                             .arg(expect(x[size_t(i)]), 0, 16)));
            }
            const float nan[3] = {NAN, -NAN, 1.0f};
            uint16_t hn[3];
            kernels::convertToF16Saturated(nan, hn, 3);
            QVERIFY(std::isnan(f16ToF32(hn[0])) && std::isnan(f16ToF32(hn[1])));
            QCOMPARE(hn[2], uint16_t(0x3C00));
        }
    }
    void f16WideningIsExact() {
        // f16ToF32 (which the portable kernels call per value) for all 65536 halves against
        // (-1)^s 2^(e-15) (1 + m/1024), or (-1)^s m 2^-24 for e = 0, in double; e = 31 gives
        // infinities (m = 0) and NaNs of the same sign.
        for (uint32_t h = 0; h < 65536; ++h) {
            const int s = int(h >> 15), e = int((h >> 10) & 31), mant = int(h & 1023);
            const float got = f16ToF32(uint16_t(h));
            uint32_t gotBits;
            std::memcpy(&gotBits, &got, 4);
            QVERIFY2((gotBits >> 31) == uint32_t(s), qPrintable(QString::number(h, 16)));
            if (e == 31) {
                QVERIFY2(mant == 0 ? std::isinf(got) : std::isnan(got),
                         qPrintable(QString::number(h, 16)));
                continue;
            }
            const double mag =
                e == 0 ? std::ldexp(double(mant), -24) : std::ldexp(1.0 + mant / 1024.0, e - 15);
            QVERIFY2(double(got) == (s ? -mag : mag), qPrintable(QString::number(h, 16)));
        }
    }
    void f16CacheEqualsWidenedF32() {
        // The F16 kernels widen each value as they load it: the output equals the f32 kernels'
        // on the widened cache bit for bit, per level, for prefill, decode split over the key
        // range, sliding windows, soft-capping, ALiBi and head sizes with vector tails (20, 72:
        // partial AVX2 and AVX-512 vectors), subnormal halves; and it is within the usual
        // tolerance of the double reference on the widened values.
        std::vector<Case> cases = invarianceCases();
        cases.resize(5);
        cases[3].nTok = 40, cases[3].pos0 = 130, cases[3].H = 6, cases[3].KV = 3, cases[3].hd = 20;
        cases[4].nTok = 1, cases[4].pos0 = 1500, cases[4].H = 4, cases[4].KV = 2, cases[4].hd = 72;
        for (auto isa : kernels::supportedIsas()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (Case& c : cases) {
                c.make();
                if (&c == &cases[3]) // V of subnormal halves (below 6.1e-5), K of small normal ones
                    for (auto* x : {&c.K, &c.V})
                        for (float& y : *x) y *= x == &c.V ? 3e-6f : 1e-3f;
                c.makeHalf();
                for (int threads : {1, 2}) {
                    const auto h = c.runHalf(true, threads), f = c.runHalf(false, threads);
                    QVERIFY2(h == f,
                             qPrintable(kernels::isaName(isa) +
                                        QString(" threads %1 ").arg(threads) + c.describe()));
                }
                const auto one = c.runHalf(true, 2, c.nTok - 1, 1); // decode of the last query
                const auto all = c.runHalf(false, 2);
                QVERIFY2(std::equal(one.begin(), one.end(), all.end() - int64_t(one.size())),
                         qPrintable(kernels::isaName(isa) + (" decode " + c.describe())));
                Case wide = c; // the reference on the values the cache holds
                wide.K = c.kWide, wide.V = c.vWide;
                const double e = wide.maxError(c.runHalf(true, 2));
                QVERIFY2(
                    e <= kTol,
                    qPrintable(
                        QString("%1 %2: %3").arg(kernels::isaName(isa)).arg(c.describe()).arg(e)));
            }
        }
    }
    void modelF16CacheAgainstF32() {
        // The bundled stories260K with an F16 cache against the f32 cache (the default): the
        // cache takes half the bytes, and the logits of 150 positions differ by at most 2e-3 of
        // their range (measured 0.019 of 19.9, about 1e-3).
        auto m = Model::load(lcwtest::demoModelPath());
        std::vector<int32_t> ids;
        for (int i = 0; i < 150; ++i) ids.push_back((i * 37 + 11) % 500 + 1);
        SessionOptions o{.contextLength = 256, .threads = 2, .batchSize = 64};
        Session f32(*m, o);
        o.kvCache = KvCacheType::F16;
        Session f16(*m, o);
        QVERIFY(!f32.kvCacheF16());
        QVERIFY(f16.kvCacheF16());
        std::vector<float> a, b;
        f32.forward(ids, a, true);
        f16.forward(ids, b, true);
        QCOMPARE(f16.kvCacheBytes() * 2, f32.kvCacheBytes());
        QCOMPARE(f16.kvCacheBytesF32(), f32.kvCacheBytes());
        QCOMPARE(a.size(), b.size());
        double range = 0, d = 0;
        for (size_t i = 0; i < a.size(); ++i) {
            range = std::max(range, double(std::abs(a[i])));
            d = std::max(d, double(std::abs(a[i] - b[i])));
        }
        qInfo("stories260K, 150 positions: largest |logit| %.3f, F16 vs f32 cache %.3g", range, d);
        QVERIFY(d > 0); // the caches do differ
        QVERIFY2(d <= 2e-3 * range, qPrintable(QString::number(d)));
    }
    void modelDecodeEqualsPrefillExactly() {
        // The whole model (the bundled stories260K: 8 heads over 4 KV heads): logits of a
        // prefill in batches of 64 and of token-by-token decoding are bit-identical (the linear
        // kernels are batch-invariant too), with an f32 and with an F16 cache.
        auto m = Model::load(lcwtest::demoModelPath());
        std::vector<int32_t> ids;
        for (int i = 0; i < 150; ++i) ids.push_back((i * 37 + 11) % 500 + 1);
        for (auto isa : kernels::supportedIsas()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (KvCacheType kv : {KvCacheType::F32, KvCacheType::F16}) {
                SessionOptions o{.contextLength = 256, .threads = 2, .batchSize = 64};
                o.kvCache = kv;
                Session s(*m, o);
                std::vector<float> all, one, stepwise;
                s.forward(ids, all, true);
                s.reset();
                for (int32_t id : ids) {
                    const int32_t x[1] = {id};
                    s.forward(x, one, false);
                    stepwise.insert(stepwise.end(), one.begin(), one.end());
                }
                QVERIFY2(all == stepwise, qPrintable(QString(kernels::isaName(isa)) +
                                                     (kv == KvCacheType::F16 ? " F16" : " f32")));
            }
        }
    }
    void scratchStaysSmall() {
        // 512 queries at the end of a 4096-token context, 32 heads over 4 KV heads: the working
        // memory is O(key chunk x rows per task), not O(context) or O(context^2) (4096^2 floats
        // = 64 MiB; the previous kernel's 32-query block of scores over the context plus K
        // transposed were 1.5 MiB). Per-thread buffers keep their largest size, so the bound
        // covers the head sizes of the earlier tests too (up to 128: < 512 KiB).
        Case c;
        c.nTok = 512, c.pos0 = 4096 - 512, c.H = 32, c.KV = 4, c.hd = 64;
        c.make();
        kernels::resetAttentionScratchPeak();
        const auto out = c.run(2);
        const size_t prefill = kernels::attentionScratchPeak();
        QVERIFY(prefill > 0);
        QVERIFY2(prefill < 512 * 1024, qPrintable(QString::number(prefill)));
        QVERIFY(c.maxError(out, {0, 200, 511}) < kTol);
        // Decode at 4096 (split over the threads: + 8 partial states per KV head).
        Case d = c;
        d.nTok = 1, d.pos0 = 4095;
        d.make();
        kernels::resetAttentionScratchPeak();
        QVERIFY(d.maxError(d.run(2)) < kTol);
        const size_t decode = kernels::attentionScratchPeak();
        QVERIFY2(decode > 0 && decode < 512 * 1024, qPrintable(QString::number(decode)));
        qInfo("attention scratch: prefill 512 at ctx 4096 %zu bytes/thread, decode %zu", prefill,
              decode);
    }
    void badHeadCounts() {
        std::vector<float> q(6 * 8), k(4 * 8), v(4 * 8), o(6 * 8);
        QVERIFY_THROWS_EXCEPTION(Error, kernels::attention(q.data(), 48, k.data(), v.data(),
                                                           o.data(), 48, 1, 0, 6, 4, 8, 0, 1));
        QVERIFY_THROWS_EXCEPTION(Error, kernels::attention(q.data(), 48, k.data(), v.data(),
                                                           o.data(), 48, 1, 0, 6, 0, 8, 0, 1));
    }
    void speed() {
        // Prefill 512 tokens and decode at context 4096; 32 heads, 4 KV heads, head size 64,
        // 2 threads. Timing only (the machine is shared): medians printed for the record.
        Case p;
        p.nTok = 512, p.pos0 = 0, p.H = 32, p.KV = 4, p.hd = 64;
        p.make();
        Case d;
        d.nTok = 1, d.pos0 = 4095, d.H = 32, d.KV = 4, d.hd = 64;
        d.make();
        std::vector<float> out(size_t(512 * 32 * 64));
        const auto time = [&](const Case& c, int reps) {
            std::vector<double> ms;
            for (int r = 0; r < reps; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                kernels::attentionEx(c.q.data(), c.H * c.hd, c.K.data(), c.V.data(), out.data(),
                                     c.H * c.hd, c.nTok, c.pos0, c.H, c.KV, c.hd, c.options(), 2);
                ms.push_back(
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count());
            }
            return medianMs(ms);
        };
        d.makeHalf();
        p.makeHalf();
        const auto timeHalf = [&](const Case& c, int reps) {
            std::vector<double> ms;
            for (int r = 0; r < reps; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                kernels::attentionExF16(c.q.data(), c.H * c.hd, c.kHalf.data(), c.vHalf.data(),
                                        out.data(), c.H * c.hd, c.nTok, c.pos0, c.H, c.KV, c.hd,
                                        c.options(), 2);
                ms.push_back(
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count());
            }
            return medianMs(ms);
        };
        for (auto isa : kernels::supportedIsas()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            time(p, 1), time(d, 3), timeHalf(p, 1), timeHalf(d, 3); // warm up
            const double pm = time(p, 7), dm = time(d, 41), ph = timeHalf(p, 7),
                         dh = timeHalf(d, 41);
            qInfo("%s: prefill 512 tok (32/4 heads, hd 64, 2 threads) %.2f ms (F16 cache %.2f); "
                  "decode at ctx 4096 %.3f ms (F16 cache %.3f)",
                  kernels::isaName(isa), pm, ph, dm, dh);
        }
    }
};

QTEST_GUILESS_MAIN(TestAttention)
#include "test_attention.moc"
