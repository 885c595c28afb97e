// Integer dot products of the 32-element GGUF block types (core/runtime/cpu/qdot_legacy.cpp): the
// activation quantisers against their definition and across ISAs, every kernel variant against
// the portable one (bit for bit), against dequantise-then-double-dot (activations dequantised:
// float rounding only; float activations: the 8-bit activation error bound), batch invariance,
// and linear() with GGUF weights.
#include "core/common/tensor.h"
#include "core/io/quants.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/qdot.h"
#include "core/runtime/cpu/qdot_common.h"
#include "core/runtime/cpu/repack_cache.h"

#include <QtTest/QtTest>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lcw;
using namespace lcw::kernels;

namespace {

const DType kTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0,
                        DType::Q5_1, DType::Q8_0, DType::IQ4_NL};

struct Variant {
    std::string name;
    const QDotKernel* k;
};

/// Every kernel this CPU runs for t: each supported ISA, and its VNNI-free variant where that
/// is a different kernel. The first is the portable one.
std::vector<Variant> variants(DType t) {
    std::vector<Variant> v;
    for (Isa isa : supportedIsas()) {
        const QDotKernel* k = qdotKernel(t, isa);
        if (!k) continue;
        v.push_back({isaName(isa), k});
        const QDotKernel* nv = detail::qdotLegacyNoVnni(t, isa);
        if (nv && nv != k) v.push_back({std::string(isaName(isa)) + "-novnni", nv});
    }
    return v;
}

/// Activations: normal values with a few outliers, one all-zero block per row.
std::vector<float> activations(int64_t nTok, int64_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(size_t(nTok * n));
    for (auto& v : x) v = nd(rng) * (rng() % 17 == 0 ? 8.0f : 1.0f);
    for (int64_t t = 0; t < nTok; ++t)
        if (n >= 64) std::fill_n(x.begin() + t * n + 32, 32, 0.0f);
    return x;
}

/// Weight rows of type t: even rows quantised from normal floats by lcw's GGUF quantiser (what
/// files hold), odd rows random code bytes with sane f16 scales (every code and fifth-bit
/// pattern, Q8_0's -128).
std::vector<std::byte> weights(DType t, int64_t rows, int64_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    const size_t rb = size_t(n / 32 * dtypeBlockBytes(t));
    std::vector<std::byte> w(rb * size_t(rows));
    std::vector<float> src(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
        std::byte* row = w.data() + size_t(r) * rb;
        if (r % 2 == 0) {
            for (auto& v : src) v = nd(rng);
            quantizeRow(t, src.data(), row, n);
            continue;
        }
        for (size_t i = 0; i < rb; ++i) row[i] = std::byte(rng() & 0xFF);
        const int64_t bb = dtypeBlockBytes(t);
        const bool hasMin = t == DType::Q4_1 || t == DType::Q5_1;
        for (int64_t b = 0; b < n / 32; ++b) {
            detail::writeHalf(row + b * bb, 0.001f + 0.01f * float(rng() % 100) / 100.0f);
            if (hasMin) detail::writeHalf(row + b * bb + 2, -0.05f * float(rng() % 100) / 100.0f);
        }
    }
    return w;
}

std::vector<std::byte> quantizeActs(const QDotKernel& k, const std::vector<float>& x, int64_t nTok,
                                    int64_t n) {
    const size_t ld = actRowBytes(k.act, n);
    std::vector<std::byte> xq(ld * size_t(nTok));
    for (int64_t t = 0; t < nTok; ++t) k.quantizeRow(x.data() + t * n, xq.data() + ld * t, n);
    return xq;
}

std::vector<float> run(const QDotKernel& k, const std::vector<std::byte>& w, int64_t rows,
                       const std::vector<std::byte>& xq, int64_t nTok, int64_t n, int64_t ldy) {
    std::vector<float> y(size_t(ldy * nTok), -7.0f);
    k.gemm(w.data(), w.size() / size_t(rows), rows, xq.data(), actRowBytes(k.act, n), nTok,
           y.data(), ldy, n);
    return y;
}

/// A [rows, n] weight of type t over the bytes of w.
TensorView view(DType t, int64_t rows, int64_t n, std::vector<std::byte>& w) {
    TensorView tv;
    tv.dtype = t;
    tv.shape = {rows, n};
    tv.data = w.data();
    tv.nbytes = w.size();
    return tv;
}

bool sameBits(float a, float b) {
    return std::memcmp(&a, &b, 4) == 0;
}

} // namespace

class TestQDotLegacy : public QObject {
    Q_OBJECT

private slots:
    void everyTypeHasKernels() {
        for (DType t : kTypes)
            for (Isa isa : supportedIsas()) {
                const QDotKernel* k = qdotKernel(t, isa);
                QVERIFY2(k && k->quantizeRow && k->gemm, dtypeName(t).data());
                const bool q81 = t == DType::Q4_1 || t == DType::Q5_1;
                QCOMPARE(k->act, q81 ? ActQ::Q8_1 : ActQ::Q8_0);
            }
        QCOMPARE(detail::qdotLegacy(DType::F32, Isa::Generic), nullptr);
        QCOMPARE(detail::qdotLegacy(DType::Q4_K, Isa::Generic), nullptr);
    }

    // The quantiser's definition: d = f16(amax / 127), q = round-half-even(x · 127/amax), and
    // for Q8_1 s = f16(d · Σq); identical bytes from every variant, special values included.
    void activationQuantiserMatchesDefinitionAndIsIdentical() {
        const int64_t n = 32 * 9;
        std::vector<float> x = activations(1, n, 7);
        for (int j = 0; j < 32; ++j) x[size_t(64 + j)] = float(j - 16) + 0.5f; // ties, amax 15.5
        for (int j = 0; j < 32; ++j) x[size_t(96 + j)] = float(j * 4 - 63);    // amax 63
        for (int j = 0; j < 32; ++j) x[size_t(128 + j)] = j == 5 ? 127.0f : float(j) + 0.5f;
        x[160] = std::numeric_limits<float>::quiet_NaN();
        x[161] = 3.0f;
        x[192] = std::numeric_limits<float>::infinity();
        std::fill_n(x.begin() + 224, 32, 0.0f);
        x[224] = 1e-40f; // denormal amax: 127/amax overflows to inf
        x[256] = -1e30f;
        for (ActQ a : {ActQ::Q8_0, ActQ::Q8_1}) {
            const DType t = a == ActQ::Q8_0 ? DType::Q4_0 : DType::Q4_1;
            const size_t bytes = actRowBytes(a, n), bb = a == ActQ::Q8_0 ? 34 : 36;
            std::vector<std::byte> ref;
            for (const Variant& v : variants(t)) {
                std::vector<std::byte> q(bytes);
                v.k->quantizeRow(x.data(), q.data(), n);
                if (ref.empty()) {
                    ref = q;
                    // The definition, on the finite blocks (0, 1, 2, 3, 4, 8).
                    for (int b : {0, 1, 2, 3, 4, 8}) {
                        const float* xb = x.data() + b * 32;
                        float amax = 0;
                        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
                        const std::byte* blk = q.data() + b * bb;
                        QCOMPARE(detail::readU16(blk), f32ToF16(amax / 127.f));
                        const auto* qs = reinterpret_cast<const int8_t*>(blk + bb - 32);
                        int sum = 0;
                        for (int j = 0; j < 32; ++j) {
                            const float v0 = amax ? xb[j] * (127.f / amax) : 0.0f;
                            QCOMPARE(int(qs[j]), int(std::nearbyint(v0)));
                            sum += qs[j];
                        }
                        if (a == ActQ::Q8_1)
                            QCOMPARE(detail::readU16(blk + 2), f32ToF16(amax / 127.f * float(sum)));
                    }
                    // Ties go to even: 0.5 → 0, 1.5 → 2, 2.5 → 2 (block 4: scale 127/127 = 1).
                    const auto* q3 = reinterpret_cast<const int8_t*>(q.data() + 4 * bb + bb - 32);
                    QCOMPARE(int(q3[0]), 0);
                    QCOMPARE(int(q3[1]), 2);
                    QCOMPARE(int(q3[2]), 2);
                    QCOMPARE(int(q3[5]), 127);
                    continue;
                }
                QVERIFY2(q == ref, (v.name + " " + dtypeName(t).data()).c_str());
            }
        }
    }

    // Every variant returns the portable kernel's bits; the portable kernel equals the double
    // dot of dequantised weights and dequantised activations to float rounding, and float
    // activations within the 8-bit activation error bound.
    void kernelsMatchPortableAndReferences() {
        // Row passes of 16 and 8 with tails, token groups of 8 (4 on AVX2) with tails, block
        // chunks of 256 with a tail (260).
        const std::pair<int64_t, int64_t> shapes[] = {{37, 11}, {8, 1}, {16, 2}, {9, 9}};
        for (auto [rows, nTok] : shapes)
            for (int64_t nb : {1, 3, 8, 64, 70, 260}) {
                const int64_t n = nb * 32;
                const std::vector<float> x = activations(nTok, n, uint32_t(100 + nb));
                for (DType t : kTypes) {
                    const std::vector<std::byte> w =
                        weights(t, rows, n, uint32_t(nb * 31 + int(t)));
                    const auto vs = variants(t);
                    const QDotKernel& p = *vs.front().k;
                    const std::vector<std::byte> xq = quantizeActs(p, x, nTok, n);
                    const std::vector<float> yp = run(p, w, rows, xq, nTok, n, rows + 3);
                    checkReferences(t, p, w, rows, x, xq, nTok, n, yp, rows + 3);
                    if (QTest::currentTestFailed()) return;
                    for (size_t i = 1; i < vs.size(); ++i) {
                        const std::vector<float> y = run(*vs[i].k, w, rows, xq, nTok, n, rows + 3);
                        for (int64_t tk = 0; tk < nTok; ++tk)
                            for (int64_t r = 0; r < rows + 3; ++r) {
                                const size_t at = size_t(tk * (rows + 3) + r);
                                if (!sameBits(y[at], yp[at]))
                                    QFAIL(qPrintable(QString("%1 %2 nb=%3 tok %4 row %5: %6 vs "
                                                             "portable %7")
                                                         .arg(vs[i].name.c_str())
                                                         .arg(dtypeName(t).data())
                                                         .arg(nb)
                                                         .arg(tk)
                                                         .arg(r)
                                                         .arg(double(y[at]), 0, 'g', 9)
                                                         .arg(double(yp[at]), 0, 'g', 9)));
                            }
                    }
                }
            }
    }

    // Within one variant an output does not depend on how many rows and tokens a call holds
    // (odd counts, single rows and tokens, offsets into the weight and activation rows).
    void batchInvariance() {
        const int64_t rows = 19, nTok = 13, nb = 261, n = nb * 32; // 261: chunks of 256 and 5
        const std::vector<float> x = activations(nTok, n, 5);
        for (DType t : kTypes) {
            const std::vector<std::byte> w = weights(t, rows, n, 77);
            const size_t rb = w.size() / rows;
            for (const Variant& v : variants(t)) {
                const std::vector<std::byte> xq = quantizeActs(*v.k, x, nTok, n);
                const size_t ldx = actRowBytes(v.k->act, n);
                const std::vector<float> full = run(*v.k, w, rows, xq, nTok, n, rows);
                for (int64_t r0 : {0, 1, 5, 16, 17})
                    for (int64_t nr : {1, 2, 3}) {
                        if (r0 + nr > rows) continue;
                        for (int64_t t0 : {0, 3, 8, 12})
                            for (int64_t nt : {1, 2, 5}) {
                                if (t0 + nt > nTok) continue;
                                std::vector<float> y(size_t(nt * nr));
                                v.k->gemm(w.data() + rb * r0, rb, nr, xq.data() + ldx * t0, ldx, nt,
                                          y.data(), nr, n);
                                for (int64_t a = 0; a < nt; ++a)
                                    for (int64_t r = 0; r < nr; ++r)
                                        QVERIFY2(sameBits(y[size_t(a * nr + r)],
                                                          full[size_t((t0 + a) * rows + r0 + r)]),
                                                 (v.name + " " + dtypeName(t).data()).c_str());
                            }
                    }
            }
        }
    }

    // linear() multiplies GGUF weights with these kernels: the result is the kernel's, at every
    // ISA, with the bias added; `exact` keeps float activations.
    void linearUsesTheKernels() {
        const int64_t out = 45, n = 256, nTok = 6;
        const std::vector<float> x = activations(nTok, n, 9);
        std::vector<float> bias(static_cast<size_t>(out));
        for (int64_t o = 0; o < out; ++o) bias[size_t(o)] = 0.01f * float(o);
        for (DType t : kTypes) {
            std::vector<std::byte> w = weights(t, out, n, 3);
            const TensorView tv = view(t, out, n, w);
            for (Isa isa : supportedIsas()) {
                setIsa(isa);
                const QDotKernel* k = qdotKernel(t, isa);
                const std::vector<float> yk =
                    run(*k, w, out, quantizeActs(*k, x, nTok, n), nTok, n, out);
                std::vector<float> y(size_t(out * nTok));
                linear(tv, x.data(), n, nTok, y.data(), out, bias.data(), 2);
                for (int64_t i = 0; i < out * nTok; ++i)
                    QVERIFY(sameBits(y[size_t(i)], yk[size_t(i)] + bias[size_t(i % out)]));
                std::vector<float> ye(size_t(out * nTok));
                linear(tv, x.data(), n, nTok, ye.data(), out, nullptr, 2, /*exact=*/true);
                std::vector<float> wf(static_cast<size_t>(n));
                for (int64_t o = 0; o < out; o += 11) {
                    dequantizeRow(t, tv.row(o), wf.data(), n);
                    double ref = 0, mag = 0;
                    for (int64_t i = 0; i < n; ++i) {
                        ref += double(wf[size_t(i)]) * double(x[size_t(i)]);
                        mag += std::fabs(double(wf[size_t(i)]) * double(x[size_t(i)]));
                    }
                    QVERIFY(std::fabs(ye[size_t(o)] - ref) <= 1e-5 * mag + 1e-6);
                }
            }
            setIsa(Isa::Auto);
        }
    }

    // The repacked layout (qdot.h): its size, the definition of its bytes, zero rows past the
    // end; every variant with a repacked product returns the stored product's bits for every
    // row range that starts at a group (16-row groups, tails, token groups, block chunks).
    void repackedProductIsTheStoredOne() {
        QVERIFY(!repackable(DType::F32) && !repackable(DType::F16) && repackable(DType::Q4_0));
        for (DType t : kTypes) {
            QVERIFY(repackable(t));
            // 37 rows: 3 groups; 150: 10 (one-token calls of 4 and more whole groups read them
            // as parts side by side).
            for (auto [nb, rows] : {std::pair<int64_t, int64_t>{1, 37},
                                    {3, 37},
                                    {70, 37},
                                    {3, 150},
                                    {70, 150},
                                    {260, 37}}) {
                const int64_t n = nb * 32, groups = (rows + 15) / 16;
                const std::vector<std::byte> w = weights(t, rows, n, uint32_t(nb * 7 + int(t)));
                const size_t rb = w.size() / rows;
                QCOMPARE(repackedGroupBytes(t, n), size_t(kRepackRows) * rb);
                QCOMPARE(repackedBytes(t, rows, n), size_t(groups) * repackedGroupBytes(t, n));
                std::vector<std::byte> rp(repackedBytes(t, rows, n), std::byte{0x5A});
                repackRows(t, w.data(), rb, rows, n, rp.data(), 0, groups);
                checkLayout(t, w, rows, n, rp);
                if (QTest::currentTestFailed()) return;
                for (const Variant& v : variants(t)) {
                    if (!v.k->gemmRepacked) continue;
                    for (int64_t nTok : {1, 2, 7, 9, 17}) {
                        if (rows > 37 && nTok > 2) continue;
                        const std::vector<float> x = activations(nTok, n, uint32_t(nTok + nb));
                        const std::vector<std::byte> xq = quantizeActs(*v.k, x, nTok, n);
                        const size_t ldx = actRowBytes(v.k->act, n);
                        const std::vector<float> ref = run(*v.k, w, rows, xq, nTok, n, rows);
                        for (auto [g0, nr] : {std::pair<int64_t, int64_t>{0, rows},
                                              {1, 21},
                                              {2, 5},
                                              {0, 16},
                                              {1, 1},
                                              {1, rows - 16},
                                              {2, 64}}) {
                            if (g0 * 16 + nr > rows) continue;
                            std::vector<float> y(size_t(nTok * nr), -7.0f);
                            v.k->gemmRepacked(rp.data() + size_t(g0) * repackedGroupBytes(t, n), nr,
                                              xq.data(), ldx, nTok, y.data(), nr, n);
                            for (int64_t tk = 0; tk < nTok; ++tk)
                                for (int64_t r = 0; r < nr; ++r)
                                    if (!sameBits(y[size_t(tk * nr + r)],
                                                  ref[size_t(tk * rows + g0 * 16 + r)]))
                                        QFAIL(qPrintable(
                                            QString("%1 %2 nb=%3 tokens %4 row %5 tok %6: "
                                                    "repacked %7 vs %8")
                                                .arg(v.name.c_str())
                                                .arg(dtypeName(t).data())
                                                .arg(nb)
                                                .arg(nTok)
                                                .arg(g0 * 16 + r)
                                                .arg(tk)
                                                .arg(double(y[size_t(tk * nr + r)]), 0, 'g', 9)
                                                .arg(double(ref[size_t(tk * rows + g0 * 16 + r)]),
                                                     0, 'g', 9)));
                        }
                    }
                }
            }
        }
        // Every x86 level this CPU has (256-bit: 8-row halves, 512-bit: whole groups) has the
        // repacked product.
        for (Isa isa : supportedIsas())
            if (isa != Isa::Generic)
                for (DType t : kTypes) QVERIFY(qdotKernel(t, isa)->gemmRepacked);
    }

    // linearBatch with repacked jobs (tiles aligned to groups, several weights, threads, a
    // bias, rows that are not a multiple of 16; 5 tokens, and one: decode's guided tiles over
    // both weights) gives the stored product's bits; the shared cache hands one copy to every
    // backend and none for types without a repacked form or when repacking is off.
    void linearWithRepackedRows() {
        const int64_t n = 512;
        const std::vector<float> x = activations(5, n, 21);
        for (int64_t nTok : {5, 1})
            for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q5_1}) {
                const int64_t rowsA = 45, rowsB = 300;
                std::vector<std::byte> wa = weights(t, rowsA, n, 4), wb = weights(t, rowsB, n, 5);
                const TensorView ta = view(t, rowsA, n, wa), tb = view(t, rowsB, n, wb);
                std::vector<float> bias(size_t(rowsB), 0.25f);
                for (int threads : {1, 2}) {
                    std::vector<float> y0(size_t(nTok * (rowsA + rowsB))), y1(y0.size(), -1.0f);
                    LinearJob plain[2] = {{&ta, y0.data(), rowsA + rowsB, nullptr},
                                          {&tb, y0.data() + rowsA, rowsA + rowsB, bias.data()}};
                    linearBatch(plain, x.data(), n, nTok, threads);
                    RepackCache cache, other;
                    LinearJob rep[2] = {plain[0], plain[1]};
                    rep[0].y = y1.data();
                    rep[1].y = y1.data() + rowsA;
                    rep[0].repacked = cache.get(ta);
                    rep[1].repacked = cache.get(tb);
                    const bool has = qdotKernel(t)->gemmRepacked != nullptr;
                    QCOMPARE(rep[0].repacked != nullptr, has);
                    QCOMPARE(other.get(tb), rep[1].repacked); // shared
                    if (has)
                        QCOMPARE(cache.bytes(),
                                 repackedBytes(t, rowsA, n) + repackedBytes(t, rowsB, n));
                    linearBatch(rep, x.data(), n, nTok, threads);
                    for (size_t i = 0; i < y0.size(); ++i) QVERIFY(sameBits(y0[i], y1[i]));
                }
            }
        // No repacked form (F16); a K-quant has one where the active level's kernel does.
        std::vector<std::byte> wf(size_t(2 * 512 * 16)), wk(size_t(110 * 2 * 16));
        const TensorView tf = view(DType::F16, 16, 512, wf), tk = view(DType::Q3_K, 16, 512, wk);
        RepackCache cache;
        QCOMPARE(cache.get(tf), nullptr);
        QCOMPARE(cache.get(tk) != nullptr, qdotKernel(DType::Q3_K)->gemmRepacked != nullptr);
        std::vector<std::byte> w4 = weights(DType::Q4_0, 16, 64, 1);
        const TensorView t4 = view(DType::Q4_0, 16, 64, w4);
        setRepackWeights(false);
        QCOMPARE(cache.get(t4), nullptr);
        setRepackWeights(true);
        QCOMPARE(cache.get(t4) != nullptr, qdotKernel(DType::Q4_0)->gemmRepacked != nullptr);
    }

private:
    // repackRows' bytes from their definition: per group and block the 16 rows' f16 d, then
    // (Q4_1 / Q5_1) f16 m, then (Q5_0 / Q5_1) the 32-bit qh words, then code word j of the 16
    // rows side by side for each j; rows past the end are zero.
    void checkLayout(DType t, const std::vector<std::byte>& w, int64_t rows, int64_t n,
                     const std::vector<std::byte>& rp) {
        const bool hasM = t == DType::Q4_1 || t == DType::Q5_1;
        const bool hasQh = t == DType::Q5_0 || t == DType::Q5_1;
        const int bb = int(dtypeBlockBytes(t)), qs = 2 + (hasM ? 2 : 0) + (hasQh ? 4 : 0);
        const int words = (bb - qs) / 4, m = 32, qh = hasM ? 64 : 32;
        const int codes = qh + (hasQh ? 64 : 0);
        const size_t rb = w.size() / size_t(rows), gb = repackedGroupBytes(t, n);
        for (int64_t r = 0; r < 48; ++r)
            for (int64_t b = 0; b < n / 32; ++b) {
                const std::byte* o = rp.data() + size_t(r / 16) * gb + size_t(b) * size_t(16 * bb);
                const int l = int(r % 16);
                std::byte expect[40] = {};
                if (r < rows)
                    std::memcpy(expect, w.data() + size_t(r) * rb + size_t(b * bb), size_t(bb));
                QVERIFY(std::memcmp(o + 2 * l, expect, 2) == 0);
                if (hasM) QVERIFY(std::memcmp(o + m + 2 * l, expect + 2, 2) == 0);
                if (hasQh) QVERIFY(std::memcmp(o + qh + 4 * l, expect + (hasM ? 4 : 2), 4) == 0);
                for (int j = 0; j < words; ++j)
                    QVERIFY(std::memcmp(o + codes + (j * 16 + l) * 4, expect + qs + 4 * j, 4) == 0);
            }
    }

    // Portable kernel vs (a) Σ dequantised weight · dequantised activation in double, with the
    // Q8_1 block sum s as stored: |Δ| <= 1e-5·Σ|w·x| (float rounding of the block scales and the
    // accumulation); (b) float activations: |Δ| <= Σ_i |w_i|·0.57·d_b (the 8-bit rounding, half a
    // step, plus the f16 rounding of d over up to 127 steps) + 2^-11·Σ_b|m_b·s_b| (Q8_1's f16 s)
    // + 1e-5·Σ|w·x|.
    void checkReferences(DType t, const QDotKernel& k, const std::vector<std::byte>& w,
                         int64_t rows, const std::vector<float>& x,
                         const std::vector<std::byte>& xq, int64_t nTok, int64_t n,
                         const std::vector<float>& y, int64_t ldy) {
        const bool q81 = k.act == ActQ::Q8_1;
        const size_t bb = q81 ? 36 : 34, ldx = actRowBytes(k.act, n), rb = w.size() / rows;
        const int64_t nb = n / 32, wbb = dtypeBlockBytes(t);
        std::vector<float> wf(static_cast<size_t>(n));
        for (int64_t r = 0; r < rows; ++r) {
            dequantizeRow(t, w.data() + rb * r, wf.data(), n);
            for (int64_t tk = 0; tk < nTok; ++tk) {
                const std::byte* xr = xq.data() + ldx * tk;
                double refQ = 0, refF = 0, mag = 0, bound = 0;
                for (int64_t b = 0; b < nb; ++b) {
                    const std::byte* blk = xr + bb * b;
                    const double d = detail::readHalf(blk);
                    const auto* q = reinterpret_cast<const int8_t*>(blk + bb - 32);
                    float amax = 0;
                    for (int j = 0; j < 32; ++j)
                        amax = std::max(amax, std::fabs(x[size_t(tk * n + b * 32 + j)]));
                    int sumq = 0;
                    for (int j = 0; j < 32; ++j) {
                        const double wv = wf[size_t(b * 32 + j)];
                        const double xv = x[size_t(tk * n + b * 32 + j)];
                        refQ += wv * d * q[j];
                        refF += wv * xv;
                        mag += std::fabs(wv * xv) + std::fabs(wv * d * q[j]);
                        bound += std::fabs(wv) * 0.57 * double(amax / 127.f);
                        sumq += q[j];
                    }
                    if (q81) {
                        // Q4_1 / Q5_1: value = d·code + m; the m·Σx term uses the stored s.
                        const double m = detail::readHalf(w.data() + rb * r + wbb * b + 2);
                        const double s = detail::readHalf(blk + 2);
                        refQ += m * (s - d * sumq);
                        bound += std::ldexp(std::fabs(m * s), -11) + std::fabs(m) * 1e-6;
                    }
                }
                const double got = y[size_t(tk * ldy + r)];
                const auto fail = [&](const char* vs, double ref, double tol) {
                    return QString("%1 row %2 tok %3: %4 vs %5 %6 (tolerance %7)")
                        .arg(dtypeName(t).data())
                        .arg(r)
                        .arg(tk)
                        .arg(got, 0, 'g', 9)
                        .arg(vs)
                        .arg(ref, 0, 'g', 9)
                        .arg(tol);
                };
                const double tolQ = 1e-5 * mag + 1e-7, tolF = bound + tolQ;
                if (!(std::fabs(got - refQ) <= tolQ))
                    QFAIL(qPrintable(fail("dequantised", refQ, tolQ)));
                if (!(std::fabs(got - refF) <= tolF))
                    QFAIL(qPrintable(fail("float activations", refF, tolF)));
            }
        }
    }
};

QTEST_APPLESS_MAIN(TestQDotLegacy)
#include "test_qdot_legacy.moc"
