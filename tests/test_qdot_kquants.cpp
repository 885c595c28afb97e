// Integer dot products of the 256-element GGUF types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) with
// activations quantised to Q8_K blocks (core/runtime/cpu/qdot.h), at every instruction-set level
// this CPU runs: the Q8_K bytes against an independent transcription of ggml's
// quantize_row_q8_K_ref; the products against the portable version, against dequantised weights ×
// dequantised activations in double, and against float activations (a rigorous bound); batch
// invariance; the linear driver; and llama.cpp's own K-quant files of ../shared/models/gguf-k end
// to end.
#include "core/common/dtype.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/qdot.h"
#include "core/runtime/cpu/repack_cache.h"
#include "core/runtime/cpu/simd.h"
#include "core/runtime/session.h"
#include "mem_weights.h"
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace lcw;
namespace kr = lcw::kernels;

namespace {

const DType kTypes[] = {DType::Q4_K, DType::Q6_K, DType::Q5_K,
                        DType::Q3_K, DType::Q2_K, DType::IQ4_XS};
constexpr size_t kQ8K = 292;

// Tolerances, relative to S = Σ|w_i·a_i| (dequantised weights and activations):
// the portable version against the double product of the dequantised operands (its integer sums
// are exact; only the float scaling of each super-block's sums rounds) ...
constexpr double kTolExact = 3e-7;
// ... and each vector version against the portable one (per-lane float accumulation, the bias
// term in float).
constexpr double kTolIsa = 1e-6;
// End to end on the gguf-k model (relative RMS of all logits; see ggufModels): against the exact
// float path, and each level against portable.
constexpr double kTolModelExact = 0.06;
constexpr double kTolModelIsa = 0.05;

QString tn(DType t) {
    return QString::fromUtf8(dtypeName(t).data(), qsizetype(dtypeName(t).size()));
}

struct IsaGuard {
    ~IsaGuard() { kr::setIsa(kr::Isa::Auto); }
};

// Offsets of the f16 scale fields of one block (random blocks get sane values there).
std::vector<int> halfFields(DType t) {
    switch (t) {
    case DType::Q2_K:
        return {80, 82};
    case DType::Q3_K:
        return {108};
    case DType::Q4_K:
    case DType::Q5_K:
        return {0, 2};
    case DType::Q6_K:
        return {208};
    default:
        return {0};
    }
}

size_t blockBytes(DType t) {
    return size_t(dtypeBytesFor(t, 256).value());
}

// Weight rows: random bytes (every code, scale and min pattern, f16 scales in [1e-3, 0.05]) or
// the lcw quantiser's blocks of heavy-tailed floats.
std::vector<std::byte> weightRows(DType t, int64_t rows, int64_t n, bool quantised,
                                  std::mt19937& g) {
    const size_t bb = blockBytes(t);
    std::vector<std::byte> w(size_t(rows) * size_t(n / 256) * bb);
    if (quantised) {
        std::student_t_distribution<float> sd(3.f);
        std::vector<float> x(static_cast<size_t>(n));
        const size_t rb = size_t(n / 256) * bb;
        for (int64_t r = 0; r < rows; ++r) {
            for (auto& v : x) v = 0.02f * sd(g);
            quantizeRow(t, x.data(), w.data() + size_t(r) * rb, n);
        }
        return w;
    }
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(1e-3f, 0.05f);
    for (auto& b : w) b = std::byte(byte(g));
    for (size_t blk = 0; blk < w.size() / bb; ++blk)
        for (int off : halfFields(t)) {
            const uint16_t h = f32ToF16(scale(g));
            std::memcpy(w.data() + blk * bb + size_t(off), &h, 2);
        }
    return w;
}

// Activations: gaussian with outliers; block 0 of token 1 all zero.
std::vector<float> activations(int64_t nTok, int64_t n, std::mt19937& g) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_int_distribution<int64_t> pos(0, n - 1);
    std::vector<float> x(size_t(nTok * n));
    for (auto& v : x) v = nd(g);
    for (int64_t t = 0; t < nTok; ++t)
        for (int k = 0; k < 3; ++k) x[size_t(t * n + pos(g))] *= 20.f;
    if (nTok > 1)
        for (int i = 0; i < 256; ++i) x[size_t(n + i)] = 0.f;
    return x;
}

// ggml's quantize_row_q8_K_ref, transcribed independently: the first value of the largest
// magnitude is the signed max, iscale = -127/max, q = min(127, round-half-even(iscale·x)),
// d = 1/iscale, bsums = sums of 16 consecutive q.
std::vector<std::byte> refQ8K(const float* x, int64_t n) {
    std::vector<std::byte> out(size_t(n / 256) * kQ8K);
    for (int64_t b = 0; b < n / 256; ++b) {
        const float* xb = x + b * 256;
        std::byte* o = out.data() + size_t(b) * kQ8K;
        int first = -1;
        for (int j = 0; j < 256; ++j)
            if (std::fabs(xb[j]) > (first < 0 ? 0.f : std::fabs(xb[first]))) first = j;
        if (first < 0) continue; // all zero: every byte 0
        const float iscale = -127.f / xb[first];
        int8_t q[256];
        for (int j = 0; j < 256; ++j) {
            const float p = iscale * xb[j];
            q[j] = int8_t(std::min(127.f, std::nearbyint(p)));
        }
        int16_t sums[16];
        for (int k = 0; k < 16; ++k) {
            int s = 0;
            for (int i = 0; i < 16; ++i) s += q[16 * k + i];
            sums[k] = int16_t(s);
        }
        const float d = 1 / iscale;
        std::memcpy(o, &d, 4);
        std::memcpy(o + 4, q, 256);
        std::memcpy(o + 260, sums, 32);
    }
    return out;
}

// Dequantised Q8_K activation values d·q.
std::vector<double> dequantQ8K(const std::byte* p, int64_t n) {
    std::vector<double> v(static_cast<size_t>(n));
    for (int64_t b = 0; b < n / 256; ++b) {
        float d;
        std::memcpy(&d, p + size_t(b) * kQ8K, 4);
        const auto* q = reinterpret_cast<const int8_t*>(p + size_t(b) * kQ8K + 4);
        for (int j = 0; j < 256; ++j) v[size_t(b * 256 + j)] = double(d) * q[j];
    }
    return v;
}

struct Problem {
    DType type;
    int64_t rows, n, nTok;
    std::vector<std::byte> w;
    std::vector<float> wDeq; // [rows, n]
    std::vector<float> x;    // [nTok, n]
    size_t rowBytes() const { return w.size() / size_t(rows); }
};

Problem makeProblem(DType t, int64_t rows, int64_t n, int64_t nTok, bool quantised, uint32_t seed) {
    std::mt19937 g(seed);
    Problem p{t, rows, n, nTok, weightRows(t, rows, n, quantised, g), {}, activations(nTok, n, g)};
    p.wDeq.resize(size_t(rows * n));
    for (int64_t r = 0; r < rows; ++r)
        dequantizeRow(t, p.w.data() + size_t(r) * p.rowBytes(), p.wDeq.data() + r * n, n);
    return p;
}

// The problem's weight as a tensor.
TensorView viewOf(const Problem& p) {
    TensorView w;
    w.name = "w";
    w.dtype = p.type;
    w.shape = {p.rows, p.n};
    w.data = p.w.data();
    w.nbytes = p.w.size();
    return w;
}

std::vector<std::byte> quantizeActs(const kr::QDotKernel& k, const Problem& p) {
    const size_t ld = kr::actRowBytes(k.act, p.n);
    std::vector<std::byte> xq(ld * size_t(p.nTok));
    for (int64_t t = 0; t < p.nTok; ++t)
        k.quantizeRow(p.x.data() + t * p.n, xq.data() + size_t(t) * ld, p.n);
    return xq;
}

// y[t, r] for rows [r0, r0+nr) and tokens [t0, t0+nt) written into y (ld = p.rows).
void runGemm(const kr::QDotKernel& k, const Problem& p, const std::vector<std::byte>& xq,
             int64_t r0, int64_t nr, int64_t t0, int64_t nt, std::vector<float>& y) {
    const size_t ld = kr::actRowBytes(k.act, p.n);
    k.gemm(p.w.data() + size_t(r0) * p.rowBytes(), p.rowBytes(), nr, xq.data() + size_t(t0) * ld,
           ld, nt, y.data() + t0 * p.rows + r0, p.rows, p.n);
}

bool sameFloats(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double relRms(const std::vector<float>& ref, const std::vector<float>& v) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        num += (double(v[i]) - ref[i]) * (double(v[i]) - ref[i]);
        den += double(ref[i]) * ref[i];
    }
    return std::sqrt(num / den);
}

// Every tensor dequantised to F32 in memory: the same weights on the exact float path.
void dequantisedCopy(const WeightSource& src, const std::vector<TensorView>& tensors,
                     lcwtest::MemWeights& out) {
    out.sp = src.spec();
    for (const auto& t : tensors) {
        std::vector<float> v(size_t(t.numel()));
        for (int64_t r = 0; r < t.rows(); ++r)
            dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
        out.add(t.name, t.shape, v);
    }
}

std::vector<int32_t> someIds() {
    std::vector<int32_t> ids;
    for (int i = 0; i < 24; ++i) ids.push_back(int32_t((i * 37 + 5) % 512));
    return ids;
}

} // namespace

class TestQdotKquants : public QObject {
    Q_OBJECT

    // The repacked bytes from their definition: per group of 16 rows and super-block, each
    // field of the row's block (source offset, bytes), as 2- or 4-byte units with unit u of
    // rows 0..15 side by side, fields one after another; rows past the end are zero.
    void checkKLayout(DType t, const Problem& p, const std::vector<std::byte>& rp) {
        struct F {
            int src, bytes, unit;
        };
        const std::vector<F> fields =
            t == DType::Q4_K ? std::vector<F>{{0, 2, 2}, {2, 2, 2}, {4, 12, 4}, {16, 128, 4}}
            : t == DType::Q5_K
                ? std::vector<F>{{0, 2, 2}, {2, 2, 2}, {4, 12, 4}, {16, 32, 4}, {48, 128, 4}}
            : t == DType::Q6_K
                ? std::vector<F>{{208, 2, 2}, {192, 16, 4}, {0, 128, 4}, {128, 64, 4}}
            : t == DType::Q3_K ? std::vector<F>{{108, 2, 2}, {96, 12, 4}, {0, 32, 4}, {32, 64, 4}}
            : t == DType::Q2_K
                ? std::vector<F>{{80, 2, 2}, {82, 2, 2}, {0, 16, 4}, {16, 64, 4}}
                : std::vector<F>{{0, 2, 2}, {2, 2, 2}, {4, 4, 4}, {8, 128, 4}}; // IQ4_XS
        const size_t bb = blockBytes(t), rb = p.rowBytes(), gb = kr::repackedGroupBytes(t, p.n);
        for (int64_t r = 0; r < 48; ++r)
            for (int64_t b = 0; b < p.n / 256; ++b) {
                std::vector<std::byte> expect(bb, std::byte{0});
                if (r < p.rows)
                    std::memcpy(expect.data(), p.w.data() + size_t(r) * rb + b * bb, bb);
                size_t at = size_t(r / 16) * gb + size_t(b) * 16 * bb;
                const int l = int(r % 16);
                for (const F& f : fields) {
                    for (int u = 0; u < f.bytes / f.unit; ++u)
                        QVERIFY2(std::memcmp(rp.data() + at + size_t((u * 16 + l) * f.unit),
                                             expect.data() + f.src + u * f.unit,
                                             size_t(f.unit)) == 0,
                                 qPrintable(QString("%1 row %2 block %3 field at %4 unit %5")
                                                .arg(tn(t))
                                                .arg(r)
                                                .arg(b)
                                                .arg(f.src)
                                                .arg(u)));
                    at += size_t(16 * f.bytes);
                }
            }
    }

private slots:
    void kernelsExist() {
        for (DType t : kTypes)
            for (kr::Isa isa : kr::supportedIsas()) {
                const kr::QDotKernel* k = kr::qdotKernel(t, isa);
                QVERIFY2(k, qPrintable(tn(t)));
                QCOMPARE(int(k->act), int(kr::ActQ::Q8_K));
                QVERIFY(k->quantizeRow && k->gemm);
            }
        QVERIFY(!kr::qdotKernel(DType::F16, kr::Isa::Generic));
    }

    // Q8_K bytes: every level gives the reference's bytes (zero blocks, ties of the largest
    // magnitude, exact halves, tiny and huge values included).
    void q8kBytesMatchReference() {
        std::mt19937 g(5);
        std::vector<std::vector<float>> rows;
        rows.push_back(activations(1, 2048, g));
        rows.push_back(std::vector<float>(512, 0.f));
        std::vector<float> halves(256);
        for (int j = 0; j < 256; ++j) halves[size_t(j)] = float(j % 64) - 31.5f; // iscale·x = ±k.5
        halves[7] = 127.f; // the max: iscale = -1
        rows.push_back(halves);
        std::vector<float> ties(256, 0.25f);
        ties[3] = -4.f;
        ties[9] = 4.f; // same magnitude, later: the first (negative) one is the max
        rows.push_back(ties);
        std::vector<float> tiny(256);
        for (int j = 0; j < 256; ++j) tiny[size_t(j)] = 1e-30f * float(j - 100);
        rows.push_back(tiny);
        std::vector<float> huge(256);
        for (int j = 0; j < 256; ++j) huge[size_t(j)] = 3e37f * std::sin(float(j));
        rows.push_back(huge);
        for (const auto& x : rows) {
            const int64_t n = int64_t(x.size());
            const auto want = refQ8K(x.data(), n);
            for (kr::Isa isa : kr::supportedIsas()) {
                const kr::QDotKernel* k = kr::qdotKernel(DType::Q4_K, isa);
                std::vector<std::byte> got(kr::actRowBytes(kr::ActQ::Q8_K, n), std::byte{0x55});
                k->quantizeRow(x.data(), got.data(), n);
                QVERIFY2(
                    got == want,
                    qPrintable(
                        QString("Q8_K bytes differ at %1, n=%2").arg(kr::isaName(isa)).arg(n)));
            }
            // The first max-magnitude value becomes -127 exactly, others stay within half a step.
            const auto v = dequantQ8K(want.data(), n);
            for (int64_t i = 0; i < n; ++i) {
                float d;
                std::memcpy(&d, want.data() + size_t(i / 256) * kQ8K, 4);
                QVERIFY(std::fabs(v[size_t(i)] - x[size_t(i)]) <=
                        0.5 * std::fabs(d) * (1 + 1e-6) + 1e-6 * std::fabs(x[size_t(i)]));
            }
        }
        const auto tw = refQ8K(ties.data(), 256);
        QCOMPARE(int(int8_t(tw[4 + 3])), -127);
        QCOMPARE(int(int8_t(tw[4 + 9])), 127);
    }

    // Products against the portable version, against double, against float activations.
    void gemmMatchesReferences_data() {
        QTest::addColumn<int>("type");
        QTest::addColumn<bool>("quantised");
        for (DType t : kTypes)
            for (bool q : {false, true})
                QTest::newRow(qPrintable(QString("%1 %2").arg(tn(t), q ? "quantised" : "random")))
                    << int(t) << q;
    }
    void gemmMatchesReferences() {
        QFETCH(int, type);
        QFETCH(bool, quantised);
        const DType t = DType(type);
        const Problem p = makeProblem(t, 13, 1024, 7, quantised, 17u + uint32_t(type));
        const kr::QDotKernel* gen = kr::qdotKernel(t, kr::Isa::Generic);
        const auto xq = quantizeActs(*gen, p);
        std::vector<float> yGen(size_t(p.nTok * p.rows));
        runGemm(*gen, p, xq, 0, p.rows, 0, p.nTok, yGen);
        double worstExact = 0, worstIsa = 0, worstBound = 0;
        for (kr::Isa isa : kr::supportedIsas()) {
            const kr::QDotKernel* k = kr::qdotKernel(t, isa);
            QVERIFY(quantizeActs(*k, p) == xq);
            std::vector<float> y(size_t(p.nTok * p.rows));
            runGemm(*k, p, xq, 0, p.rows, 0, p.nTok, y);
            for (int64_t tk = 0; tk < p.nTok; ++tk) {
                const auto a =
                    dequantQ8K(xq.data() + size_t(tk) * (xq.size() / size_t(p.nTok)), p.n);
                for (int64_t r = 0; r < p.rows; ++r) {
                    const float* w = p.wDeq.data() + r * p.n;
                    const float* x = p.x.data() + tk * p.n;
                    double exact = 0, s = 0, yf = 0, bound = 0;
                    for (int64_t i = 0; i < p.n; ++i) {
                        exact += double(w[i]) * a[size_t(i)];
                        s += std::fabs(double(w[i]) * a[size_t(i)]);
                        yf += double(w[i]) * x[i];
                    }
                    // |x - d·q| <= |d|/2 per value: the float-activation bound.
                    for (int64_t b = 0; b < p.n / 256; ++b) {
                        float d;
                        std::memcpy(&d,
                                    xq.data() + size_t(tk) * (xq.size() / size_t(p.nTok)) +
                                        size_t(b) * kQ8K,
                                    4);
                        double sw = 0;
                        for (int i = 0; i < 256; ++i) sw += std::fabs(double(w[b * 256 + i]));
                        bound += 0.5 * std::fabs(double(d)) * sw;
                    }
                    const size_t at = size_t(tk * p.rows + r);
                    const double eGen = std::fabs(yGen[at] - exact),
                                 eIsa = std::fabs(y[at] - yGen[at]);
                    const double eF = std::fabs(y[at] - yf);
                    const double lim = s > 0 ? s : 1e-30;
                    worstExact = std::max(worstExact, eGen / lim);
                    worstIsa = std::max(worstIsa, eIsa / lim);
                    worstBound = std::max(worstBound, eF / (bound * (1 + 1e-6) + kTolIsa * lim));
                    if (eGen > kTolExact * lim || eIsa > kTolIsa * lim ||
                        eF > bound * (1 + 1e-6) + kTolIsa * lim)
                        QFAIL(qPrintable(QString("%1 %2 row %3 token %4: portable %5, %2 %6, "
                                                 "double %7, float-activation %8 (bound %9, S %10)")
                                             .arg(tn(t), kr::isaName(isa))
                                             .arg(r)
                                             .arg(tk)
                                             .arg(yGen[at], 0, 'g', 9)
                                             .arg(y[at], 0, 'g', 9)
                                             .arg(exact, 0, 'g', 9)
                                             .arg(yf, 0, 'g', 9)
                                             .arg(bound)
                                             .arg(s)));
                }
            }
        }
        qInfo("%s: |portable - double|/S <= %.2g, |isa - portable|/S <= %.2g, float-activation "
              "error <= %.2f of its bound",
              qPrintable(tn(t)), worstExact, worstIsa, worstBound);
    }

    // Every K-quant repacked (qdot.h: repackRows): the layout from its definition,
    // and the repacked product of every level that has one equals the portable product bit for
    // bit (row ranges starting at any group, partial last groups, every token-block tail).
    void repackedProductIsThePortableOne() {
        bool anyKernel = false;
        for (DType t : kTypes) {
            QVERIFY(kr::repackable(t));
            // 37 rows: 3 groups, the last of 5 rows; 150: 10 groups.
            for (auto [quantised, rows] :
                 {std::pair<bool, int64_t>{false, 37}, {true, 37}, {true, 150}}) {
                const int64_t n = 768, groups = (rows + 15) / 16;
                const Problem p = makeProblem(t, rows, n, 11, quantised, 5u + uint32_t(t));
                const size_t rb = p.rowBytes(), gb = kr::repackedGroupBytes(t, n);
                QCOMPARE(gb, size_t(kr::kRepackRows) * rb);
                QCOMPARE(kr::repackedBytes(t, rows, n), size_t(groups) * gb);
                std::vector<std::byte> rp(size_t(groups) * gb, std::byte{0x5A});
                kr::repackRows(t, p.w.data(), rb, rows, n, rp.data(), 0, groups);
                checkKLayout(t, p, rp);
                if (QTest::currentTestFailed()) return;
                const kr::QDotKernel* gen = kr::qdotKernel(t, kr::Isa::Generic);
                const auto xq = quantizeActs(*gen, p);
                const size_t ldx = kr::actRowBytes(gen->act, n);
                std::vector<float> ref(size_t(p.nTok * rows));
                runGemm(*gen, p, xq, 0, rows, 0, p.nTok, ref);
                for (kr::Isa isa : kr::supportedIsas()) {
                    const kr::QDotKernel* k = kr::qdotKernel(t, isa);
                    if (!k->gemmRepacked) continue;
                    anyKernel = true;
                    for (int64_t nTok : {1, 2, 3, 4, 5, 7, 11})
                        for (auto [g0, nr] : {std::pair<int64_t, int64_t>{0, rows},
                                              {1, 21},
                                              {2, 5},
                                              {0, 16},
                                              {1, 3},
                                              {1, rows - 16},
                                              {2, 64}}) {
                            if (g0 * 16 + nr > rows) continue;
                            std::vector<float> y(size_t(nTok * nr), -7.0f);
                            k->gemmRepacked(rp.data() + size_t(g0) * gb, nr, xq.data(), ldx, nTok,
                                            y.data(), nr, n);
                            for (int64_t tk = 0; tk < nTok; ++tk)
                                for (int64_t r = 0; r < nr; ++r) {
                                    const float a = y[size_t(tk * nr + r)],
                                                b = ref[size_t(tk * rows + g0 * 16 + r)];
                                    if (std::memcmp(&a, &b, 4) != 0)
                                        QFAIL(qPrintable(
                                            QString("%1 %2 %3: %4 tokens, row %5 token %6: "
                                                    "repacked %7, portable %8")
                                                .arg(tn(t), kr::isaName(isa),
                                                     quantised ? "quantised" : "random")
                                                .arg(nTok)
                                                .arg(g0 * 16 + r)
                                                .arg(tk)
                                                .arg(double(a), 0, 'g', 9)
                                                .arg(double(b), 0, 'g', 9)));
                                }
                        }
                }
            }
        }
        // linearBatch over repacked jobs (the CPU backend's path: tiles aligned to groups, two
        // threads, a bias, 300 rows; 6 tokens, and one: decode's guided tiles, whose last one is
        // not a whole group) gives the portable product plus the bias.
        for (DType t : kTypes)
            for (int64_t nTok : {6, 1}) {
                const Problem p = makeProblem(t, 300, 512, nTok, true, 3u + uint32_t(t));
                const TensorView w = viewOf(p);
                std::vector<float> bias(size_t(p.rows), 0.5f), ref(size_t(p.nTok * p.rows)),
                    y(ref.size(), -1.f);
                {
                    IsaGuard guard;
                    kr::setIsa(kr::Isa::Generic);
                    kr::linear(w, p.x.data(), p.n, p.nTok, ref.data(), p.rows, bias.data(), 2);
                }
                kr::RepackCache cache;
                kr::LinearJob job{&w, y.data(), p.rows, bias.data()};
                job.repacked = cache.get(w);
                QCOMPARE(job.repacked != nullptr, kr::qdotKernel(t)->gemmRepacked != nullptr);
                kr::linearBatch({&job, 1}, p.x.data(), p.n, p.nTok, 2);
                if (job.repacked) QVERIFY2(sameFloats(ref, y), qPrintable(tn(t)));
            }
        // Every x86 level has them (AVX-512 without VNNI runs the AVX2 ones).
        if (!anyKernel) qInfo("no level of this CPU has a repacked k-quant product");
        for (kr::Isa isa : kr::supportedIsas())
            if (isa != kr::Isa::Generic)
                for (DType t : kTypes)
                    QVERIFY2(kr::qdotKernel(t, isa)->gemmRepacked, qPrintable(tn(t)));
    }

    // One output element does not depend on how many rows and tokens share the call, nor on where
    // the call starts (odd counts, the decode path, every register-block tail).
    void batchInvariance() {
        for (DType t : kTypes) {
            const Problem p = makeProblem(t, 11, 512, 9, false, 99u + uint32_t(t));
            for (kr::Isa isa : kr::supportedIsas()) {
                const kr::QDotKernel* k = kr::qdotKernel(t, isa);
                const auto xq = quantizeActs(*k, p);
                std::vector<float> all(size_t(p.nTok * p.rows));
                runGemm(*k, p, xq, 0, p.rows, 0, p.nTok, all);
                const std::pair<int64_t, int64_t> rowSplits[] = {{0, 1}, {1, 5}, {6, 2}, {8, 3}};
                const std::pair<int64_t, int64_t> tokSplits[] = {{0, 1}, {1, 3}, {4, 5}};
                std::vector<float> pieces(all.size(), -1.f), single(all.size(), -1.f);
                for (auto [r0, nr] : rowSplits)
                    for (auto [t0, nt] : tokSplits) runGemm(*k, p, xq, r0, nr, t0, nt, pieces);
                for (int64_t tk = 0; tk < p.nTok; ++tk)
                    runGemm(*k, p, xq, 0, p.rows, tk, 1, single);
                QVERIFY2(
                    sameFloats(all, pieces),
                    qPrintable(QString("%1 %2: split calls differ").arg(tn(t), kr::isaName(isa))));
                QVERIFY2(
                    sameFloats(all, single),
                    qPrintable(
                        QString("%1 %2: token-by-token differs").arg(tn(t), kr::isaName(isa))));
            }
        }
    }

    // kernels::linear runs these kernels (bit-identical to calling them directly); `exact` keeps
    // float activations: dequantised weights × float x.
    void linearDriver() {
        for (DType t : kTypes) {
            const Problem p = makeProblem(t, 300, 768, 5, true, 7u + uint32_t(t));
            const TensorView w = viewOf(p);
            for (kr::Isa isa : kr::supportedIsas()) {
                IsaGuard guard;
                kr::setIsa(isa);
                const kr::QDotKernel* k = kr::qdotKernel(t);
                const auto xq = quantizeActs(*k, p);
                std::vector<float> direct(size_t(p.nTok * p.rows)), y(direct.size()),
                    ye(direct.size());
                runGemm(*k, p, xq, 0, p.rows, 0, p.nTok, direct);
                kr::linear(w, p.x.data(), p.n, p.nTok, y.data(), p.rows, nullptr, 2);
                QVERIFY2(sameFloats(direct, y),
                         qPrintable(QString("%1 %2").arg(tn(t), kr::isaName(isa))));
                kr::linear(w, p.x.data(), p.n, p.nTok, ye.data(), p.rows, nullptr, 2, true);
                for (int64_t tk = 0; tk < p.nTok; ++tk)
                    for (int64_t r = 0; r < p.rows; ++r) {
                        double ref = 0, s = 0;
                        for (int64_t i = 0; i < p.n; ++i) {
                            ref += double(p.wDeq[size_t(r * p.n + i)]) * p.x[size_t(tk * p.n + i)];
                            s += std::fabs(double(p.wDeq[size_t(r * p.n + i)]) *
                                           p.x[size_t(tk * p.n + i)]);
                        }
                        QVERIFY(std::fabs(ye[size_t(tk * p.rows + r)] - ref) <= 1e-5 * s);
                    }
            }
        }
    }

    // llama.cpp's K-quant files of the gguf-k model (and IQ4_XS weights of its F32 model, which
    // llama.cpp's files do not have): logits with Q8_K activations stay near those of the same
    // weights dequantised to F32 on the exact float path, and every level stays near portable.
    // The model is random and sensitive: 8-bit activations move its logits by ~4 % relative RMS
    // (llama.cpp's own logits of these files are as far from the exact path), and the 1e-7
    // differences of the float kernels between levels flip a few activation roundings, which
    // the four layers amplify to ~2 %. The tight checks are the kernel tests above.
    void ggufModels_data() {
        QTest::addColumn<QString>("file");
        for (const char* f : {"model-Q4_K_M.gguf", "model-Q6_K.gguf", "model-Q5_K_M.gguf",
                              "model-Q3_K_M-imat.gguf", "model-Q2_K-imat.gguf", "model-f32.gguf"})
            QTest::newRow(f) << QString(f);
    }
    void ggufModels() {
        QFETCH(QString, file);
        const std::string rel = "models/gguf-k/" + file.toStdString();
        LCW_REQUIRE_SHARED(rel);
        auto model = Model::load(lcwtest::sharedPath(rel));
        // The F32 file: its 2-D weights quantised to IQ4_XS in memory.
        lcwtest::MemWeights xs;
        const WeightSource* src = model.get();
        std::vector<TensorView> tensors = model->tensors();
        if (file == "model-f32.gguf") {
            xs.sp = model->spec();
            for (const auto& t : model->tensors()) {
                std::vector<float> v(size_t(t.numel()));
                for (int64_t r = 0; r < t.rows(); ++r)
                    dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
                const bool q = t.shape.size() == 2 && t.cols() % 256 == 0;
                xs.add(t.name, t.shape, v, q ? DType::IQ4_XS : DType::F32);
            }
            src = &xs;
            tensors.clear();
            for (const auto& t : model->tensors()) tensors.push_back(*xs.find(t.name));
        }
        std::map<std::string, int> kinds;
        for (const auto& t : tensors) ++kinds[std::string(dtypeName(t.dtype))];
        QString kindList;
        int withKernel = 0;
        for (const auto& [k, c] : kinds)
            kindList += QString("%1×%2 ").arg(c).arg(QString::fromStdString(k));
        for (const auto& t : tensors)
            withKernel += kr::qdotKernel(t.dtype, kr::Isa::Generic) != nullptr;
        QVERIFY2(withKernel >= 28, qPrintable(kindList));

        lcwtest::MemWeights deq;
        dequantisedCopy(*src, tensors, deq);
        const auto ids = someIds();
        std::vector<float> exact;
        Session(deq, {.contextLength = 32, .threads = 2}).forward(ids, exact, true);
        std::vector<float> portable;
        for (kr::Isa isa : kr::supportedIsas()) {
            IsaGuard guard;
            kr::setIsa(isa);
            std::vector<float> logits;
            Session(*src, {.contextLength = 32, .threads = 2}).forward(ids, logits, true);
            QCOMPARE(logits.size(), exact.size());
            for (float v : logits) QVERIFY(std::isfinite(v));
            const double e = relRms(exact, logits);
            int sameTop = 0;
            const int64_t vocab = int64_t(exact.size() / ids.size());
            for (size_t tk = 0; tk < ids.size(); ++tk) {
                const float* a = exact.data() + tk * size_t(vocab);
                const float* b = logits.data() + tk * size_t(vocab);
                sameTop += std::max_element(a, a + vocab) - a == std::max_element(b, b + vocab) - b;
            }
            double eIsa = 0;
            if (isa == kr::Isa::Generic)
                portable = logits;
            else
                eIsa = relRms(portable, logits);
            qInfo("%s (%s) %s: relative RMS logit difference to the exact path %.4g, same top-1 "
                  "%d/%d, to portable %.3g",
                  qPrintable(file), qPrintable(kindList), kr::isaName(isa), e, sameTop,
                  int(ids.size()), eIsa);
            QVERIFY2(sameTop >= int(ids.size()) * 2 / 3,
                     qPrintable(QString("top-1 %1").arg(sameTop)));
            QVERIFY2(e < kTolModelExact && e > 1e-6,
                     qPrintable(QString("%1 vs exact %2").arg(kr::isaName(isa)).arg(e)));
            QVERIFY2(eIsa < kTolModelIsa,
                     qPrintable(QString("%1 vs portable %2").arg(kr::isaName(isa)).arg(eIsa)));
        }
    }
};

QTEST_GUILESS_MAIN(TestQdotKquants)
#include "test_qdot_kquants.moc"
