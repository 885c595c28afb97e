// Tests of the float products of core/runtime (kernels.cpp) on every instruction-set level this CPU
// runs (portable, AVX2, AVX-512): gemmNT over F32 weights and detail::gemmNT16 over F16/BF16
// weights against a double-precision reference and against the portable level, odd sizes and
// tails, unaligned pointers and strides, batch invariance (one token at a time gives the same bits
// as the batch), the fused 16-bit product equal to the product over converted rows, gemmNN, and
// dequantizeRows against the scalar conversions, special values included; linear() over F32, F16
// and BF16 weights with the batch crossing the driver's switch from the fused product to tiles;
// the AVX-512 BF16 product (bf16 activations, vdpbf16ps) against the double product of the
// bf16-rounded activations, its invariance over tokens and rows, and linear()'s use of it.
//
// Tolerance against the double reference: |y - ref| <= (n/8 + 8) * 2^-24 * sum_i |x_i w_i|, a bound
// on the rounding of a sum split into 8 or 16 partial sums of float products (each partial sum of
// length <= n/8 accumulates at most n/8 roundings, the fixed reduction a few more). Against the
// portable level the bound is twice that (both sides round).
#include "core/common/dtype.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/simd.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace lcw;

namespace {

struct IsaGuard {
    ~IsaGuard() { kernels::setIsa(kernels::Isa::Auto); }
};

QString isaStr(kernels::Isa isa) {
    return QString::fromLatin1(kernels::isaName(isa));
}

// Weights stored as `dt` (F32, F16 or BF16) and their exact float values.
struct StoredRows {
    DType dt = DType::F32;
    std::vector<std::byte> bytes; // with `offset` leading bytes (unaligned starts)
    size_t offset = 0;
    std::vector<float> values; // the stored values as floats (exact)
    int64_t rows = 0, ld = 0;

    const std::byte* data() const { return bytes.data() + offset; }
    const float* f32() const { return reinterpret_cast<const float*>(data()); }
    const uint16_t* u16() const { return reinterpret_cast<const uint16_t*>(data()); }
};

size_t elemSize(DType dt) {
    return dt == DType::F32 ? 4 : 2;
}

// rows x ld values in [-1, 1] (only the first n of each row are used); `misalign` elements of
// offset from a 64-byte boundary.
StoredRows makeRows(std::mt19937_64& rng, DType dt, int64_t rows, int64_t ld, int misalign) {
    StoredRows s;
    s.dt = dt, s.rows = rows, s.ld = ld;
    const size_t es = elemSize(dt);
    s.bytes.resize(size_t(rows * ld) * es + 128);
    const auto base = reinterpret_cast<uintptr_t>(s.bytes.data());
    s.offset = size_t((64 - base % 64) % 64) + size_t(misalign) * es;
    s.values.resize(size_t(rows * ld));
    std::uniform_real_distribution<float> d(-1, 1);
    for (int64_t i = 0; i < rows * ld; ++i) {
        const float f = d(rng);
        std::byte* p = s.bytes.data() + s.offset + size_t(i) * es;
        if (dt == DType::F32) {
            std::memcpy(p, &f, 4);
            s.values[size_t(i)] = f;
        } else if (dt == DType::F16) {
            const uint16_t h = f32ToF16(f);
            std::memcpy(p, &h, 2);
            s.values[size_t(i)] = f16ToF32(h);
        } else {
            const uint16_t h = f32ToBf16(f);
            std::memcpy(p, &h, 2);
            s.values[size_t(i)] = bf16ToF32(h);
        }
    }
    return s;
}

// Float activations with `misalign` floats of offset from a 64-byte boundary.
struct Acts {
    std::vector<float> buf;
    size_t offset = 0;
    float* data() { return buf.data() + offset; }
    const float* data() const { return buf.data() + offset; }
};
Acts makeActs(std::mt19937_64& rng, int64_t count, int misalign) {
    Acts a;
    a.buf.resize(size_t(count) + 32);
    const auto base = reinterpret_cast<uintptr_t>(a.buf.data());
    a.offset = size_t((64 - base % 64) % 64) / 4 + size_t(misalign);
    std::uniform_real_distribution<float> d(-1, 1);
    for (auto& v : a.buf) v = d(rng);
    return a;
}

// y = x . W^T through the product for the stored type (gemmNT for F32, gemmNT16 otherwise).
void product(const StoredRows& w, const float* x, int64_t ldx, int64_t nTok, float* y, int64_t ldy,
             int64_t n) {
    if (w.dt == DType::F32)
        kernels::gemmNT(w.f32(), w.ld, w.rows, x, ldx, nTok, y, ldy, n);
    else
        kernels::detail::gemmNT16(w.dt == DType::BF16, w.u16(), w.ld, w.rows, x, ldx, nTok, y, ldy,
                                  n);
}

struct Case {
    int64_t n, rows, nTok;
};

} // namespace

class TestFloatKernels : public QObject {
    Q_OBJECT
private slots:
    void gemmNTAgainstDoubleAndPortable() {
        std::mt19937_64 rng(11);
        const Case cases[] = {
            {1, 3, 1},   {7, 5, 2},    {15, 4, 3},    {16, 9, 4},  {17, 8, 5},
            {31, 13, 6}, {33, 1, 7},   {64, 12, 13},  {100, 3, 8}, {257, 17, 9},
            {511, 8, 1}, {2048, 4, 2}, {2085, 70, 13}}; // the last: AVX-512 input and row blocks of
                                                        // floats
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
            for (const Case& c : cases) {
                const int mis = int(c.n % 3); // 0, 1 or 2 elements off a 64-byte boundary
                const int64_t ldw = c.n + (c.n % 2), ldx = c.n + 3, ldy = c.rows + 2;
                const StoredRows w = makeRows(rng, dt, c.rows, ldw, mis);
                const Acts x = makeActs(rng, c.nTok * ldx, mis + 1);
                // Double reference and the bound of each element.
                std::vector<double> ref(size_t(c.nTok * c.rows)), bound(ref.size());
                for (int64_t t = 0; t < c.nTok; ++t)
                    for (int64_t r = 0; r < c.rows; ++r) {
                        double s = 0, a = 0;
                        for (int64_t i = 0; i < c.n; ++i) {
                            const double p =
                                double(x.data()[t * ldx + i]) * w.values[size_t(r * ldw + i)];
                            s += p, a += std::abs(p);
                        }
                        ref[size_t(t * c.rows + r)] = s;
                        bound[size_t(t * c.rows + r)] =
                            (double(c.n) / 8 + 8) * std::ldexp(1.0, -24) * a + 1e-30;
                    }
                std::vector<float> portable;
                for (auto isa : kernels::supportedIsas()) {
                    IsaGuard guard;
                    kernels::setIsa(isa);
                    std::vector<float> y(size_t(c.nTok * ldy), 1234.5f);
                    product(w, x.data(), ldx, c.nTok, y.data(), ldy, c.n);
                    const QString where = QString("%1 %2 n=%3 rows=%4 nTok=%5")
                                              .arg(isaStr(isa))
                                              .arg(QString::fromUtf8(dtypeName(dt).data()))
                                              .arg(c.n)
                                              .arg(c.rows)
                                              .arg(c.nTok);
                    std::vector<float> dense(size_t(c.nTok * c.rows));
                    for (int64_t t = 0; t < c.nTok; ++t) {
                        for (int64_t r = 0; r < c.rows; ++r) {
                            const size_t i = size_t(t * c.rows + r);
                            dense[i] = y[size_t(t * ldy + r)];
                            if (!(std::abs(dense[i] - ref[i]) <= bound[i]))
                                QFAIL(qPrintable(where + QString(": y[%1,%2] = %3, reference %4")
                                                             .arg(t)
                                                             .arg(r)
                                                             .arg(dense[i], 0, 'g', 9)
                                                             .arg(ref[i], 0, 'g', 9)));
                            if (!portable.empty() &&
                                !(std::abs(dense[i] - portable[i]) <= 2 * bound[i]))
                                QFAIL(qPrintable(where + " differs from the portable level"));
                        }
                        for (int64_t r = c.rows; r < ldy; ++r)
                            QVERIFY2(y[size_t(t * ldy + r)] == 1234.5f,
                                     qPrintable(where + ": wrote past the rows"));
                    }
                    if (isa == kernels::Isa::Generic) portable = dense;
                }
            }
        }
    }

    void batchInvarianceAndFusedEqualsConverted() {
        // Within one level: each token alone gives the batch's bits, and the F16/BF16 product
        // over the raw rows gives the bits of the F32 product over the converted rows (the driver
        // uses the first for few tokens and the second for batches).
        std::mt19937_64 rng(12);
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
            for (int64_t n : {5, 16, 23, 48, 130, 1601, 3100}) {
                const int64_t rows = n > 1000 ? 67 : 19, T = 14;
                const StoredRows w = makeRows(rng, dt, rows, n, 1);
                const Acts x = makeActs(rng, T * n, 3);
                for (auto isa : kernels::supportedIsas()) {
                    IsaGuard guard;
                    kernels::setIsa(isa);
                    const QString where = QString("%1 %2 n=%3")
                                              .arg(isaStr(isa))
                                              .arg(QString::fromUtf8(dtypeName(dt).data()))
                                              .arg(n);
                    std::vector<float> batch(size_t(T * rows)), one(batch.size()),
                        conv(batch.size());
                    product(w, x.data(), n, T, batch.data(), rows, n);
                    for (int64_t t = 0; t < T; ++t)
                        product(w, x.data() + t * n, n, 1, one.data() + t * rows, rows, n);
                    QVERIFY2(std::memcmp(batch.data(), one.data(), batch.size() * 4) == 0,
                             qPrintable(where + ": one token at a time differs from the batch"));
                    // Every split of the batch (blocks of 1..7 tokens) gives the same bits.
                    for (int64_t step = 2; step <= 7; ++step) {
                        std::vector<float> part(batch.size());
                        for (int64_t t = 0; t < T; t += step)
                            product(w, x.data() + t * n, n, std::min(step, T - t),
                                    part.data() + t * rows, rows, n);
                        QVERIFY2(
                            std::memcmp(batch.data(), part.data(), batch.size() * 4) == 0,
                            qPrintable(where + QString(": blocks of %1 tokens differ").arg(step)));
                    }
                    kernels::gemmNT(w.values.data(), n, rows, x.data(), n, T, conv.data(), rows, n);
                    QVERIFY2(std::memcmp(batch.data(), conv.data(), batch.size() * 4) == 0,
                             qPrintable(where + ": differs from the product over float rows"));
                }
            }
        }
    }

    void gemmNNAgainstDoubleAndRowInvariance() {
        std::mt19937_64 rng(13);
        for (auto isa : kernels::supportedIsas()) {
            IsaGuard guard;
            kernels::setIsa(isa);
            for (int64_t M : {1, 2, 5, 6, 7, 13})
                for (int64_t N : {1, 15, 16, 17, 33, 64, 65, 130})
                    for (int64_t K : {0, 1, 9, 64}) {
                        const int64_t lda = K + 1, ldb = N + 5, ldc = N + 3;
                        const Acts a = makeActs(rng, M * lda, 1);
                        const Acts b = makeActs(rng, std::max<int64_t>(K, 1) * ldb, 2);
                        std::vector<float> c(size_t(M * ldc), 77.0f), c1(c.size(), 77.0f);
                        kernels::gemmNN(a.data(), lda, b.data(), ldb, c.data(), ldc, M, N, K);
                        for (int64_t i = 0; i < M; ++i)
                            kernels::gemmNN(a.data() + i * lda, lda, b.data(), ldb,
                                            c1.data() + i * ldc, ldc, 1, N, K);
                        const QString where =
                            QString("%1 M=%2 N=%3 K=%4").arg(isaStr(isa)).arg(M).arg(N).arg(K);
                        QVERIFY2(std::memcmp(c.data(), c1.data(), c.size() * 4) == 0,
                                 qPrintable(where + ": one row at a time differs"));
                        for (int64_t i = 0; i < M; ++i) {
                            for (int64_t j = 0; j < N; ++j) {
                                double r = 0, bnd = 0;
                                for (int64_t k = 0; k < K; ++k) {
                                    const double p = double(a.data()[i * lda + k]) *
                                                     double(b.data()[k * ldb + j]);
                                    r += p, bnd += std::abs(p);
                                }
                                bnd = (double(K) + 2) * std::ldexp(1.0, -24) * bnd;
                                QVERIFY2(std::abs(r - c[size_t(i * ldc + j)]) <= bnd,
                                         qPrintable(where));
                            }
                            for (int64_t j = N; j < ldc; ++j)
                                QVERIFY2(c[size_t(i * ldc + j)] == 77.0f,
                                         qPrintable(where + ": wrote past the columns"));
                        }
                    }
        }
    }

    void dequantizeRowsExact() {
        // Every 16-bit pattern (normals, subnormals, zeros, infinities, NaNs) at an odd row
        // length and an unaligned start converts exactly as the scalar conversion does.
        const int64_t n = 4099, rows = 16;
        std::vector<std::byte> raw(size_t(n * rows) * 2 + 64);
        for (DType dt : {DType::F16, DType::BF16}) {
            for (size_t mis : {size_t(0), size_t(1), size_t(2)}) {
                std::byte* p = raw.data() + mis;
                for (int64_t i = 0; i < n * rows; ++i) {
                    const uint16_t h = uint16_t((i * 40503) & 0xffff);
                    std::memcpy(p + 2 * i, &h, 2);
                }
                TensorView v;
                v.name = "t";
                v.dtype = dt;
                v.shape = {rows, n};
                v.data = p;
                v.nbytes = uint64_t(n * rows) * 2;
                for (auto isa : kernels::supportedIsas()) {
                    IsaGuard guard;
                    kernels::setIsa(isa);
                    std::vector<float> out(size_t((rows - 3) * n) + 1, -5.0f);
                    kernels::dequantizeRows(v, 2, rows - 3, out.data());
                    QCOMPARE(out.back(), -5.0f);
                    for (int64_t i = 0; i < (rows - 3) * n; ++i) {
                        uint16_t h;
                        std::memcpy(&h, p + 2 * (2 * n + i), 2);
                        const float want = dt == DType::F16 ? f16ToF32(h) : bf16ToF32(h);
                        const float got = out[size_t(i)];
                        const bool ok =
                            std::isnan(want) ? std::isnan(got) : std::memcmp(&want, &got, 4) == 0;
                        if (!ok)
                            QFAIL(qPrintable(QString("%1 %2 misalign %3: 0x%4 -> %5, want %6")
                                                 .arg(isaStr(isa))
                                                 .arg(QString::fromUtf8(dtypeName(dt).data()))
                                                 .arg(mis)
                                                 .arg(h, 4, 16, QChar('0'))
                                                 .arg(got)
                                                 .arg(want)));
                    }
                }
            }
        }
    }

    void linearAcrossTheFusedSwitch() {
        // linear() uses the fused 16-bit product for 1..3 tokens and converted tiles beyond; F32
        // weights are read in place. Each token alone must give the batch's bits, bias included,
        // with one and two threads.
        std::mt19937_64 rng(14);
        const int64_t out = 70, in = 333, T = 11;
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
            const StoredRows w = makeRows(rng, dt, out, in, 0);
            TensorView v;
            v.name = "w";
            v.dtype = dt;
            v.shape = {out, in};
            v.data = w.data();
            v.nbytes = uint64_t(out * in) * elemSize(dt);
            const Acts x = makeActs(rng, T * in, 0);
            const Acts bias = makeActs(rng, out, 0);
            for (auto isa : kernels::supportedIsas()) {
                IsaGuard guard;
                kernels::setIsa(isa);
                for (int threads : {1, 2}) {
                    std::vector<float> yb(size_t(T * out)), y1(yb.size()), y3(yb.size());
                    kernels::linear(v, x.data(), in, T, yb.data(), out, bias.data(), threads);
                    for (int64_t t = 0; t < T; ++t)
                        kernels::linear(v, x.data() + t * in, in, 1, y1.data() + t * out, out,
                                        bias.data(), threads);
                    for (int64_t t = 0; t < T; t += 3)
                        kernels::linear(v, x.data() + t * in, in, std::min<int64_t>(3, T - t),
                                        y3.data() + t * out, out, bias.data(), threads);
                    const QString where = QString("%1 %2 threads=%3")
                                              .arg(isaStr(isa))
                                              .arg(QString::fromUtf8(dtypeName(dt).data()))
                                              .arg(threads);
                    QVERIFY2(std::memcmp(yb.data(), y1.data(), yb.size() * 4) == 0,
                             qPrintable(where + ": one token differs from the batch"));
                    QVERIFY2(std::memcmp(yb.data(), y3.data(), yb.size() * 4) == 0,
                             qPrintable(where + ": three tokens differ from the batch"));
                    // BF16 weights on a CPU with AVX-512 BF16 multiply bf16-rounded activations
                    // (as llama.cpp does) unless the call asks for exact ones.
                    const bool bdot = dt == DType::BF16 && kernels::detail::bf16DotAvailable();
                    if (bdot && threads == 1) {
                        std::vector<float> ye(yb.size()), yc(yb.size());
                        kernels::linear(v, x.data(), in, T, ye.data(), out, nullptr, 1, true);
                        kernels::gemmNT(w.values.data(), in, out, x.data(), in, T, yc.data(), out,
                                        in);
                        QVERIFY2(std::memcmp(ye.data(), yc.data(), ye.size() * 4) == 0,
                                 qPrintable(where + ": exact activations left the float path"));
                    }
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t o = 0; o < out; ++o) {
                            double r = bias.data()[o], a = std::abs(r);
                            for (int64_t i = 0; i < in; ++i) {
                                float xi = x.data()[t * in + i];
                                if (bdot) xi = bf16ToF32(f32ToBf16(xi));
                                const double p = double(xi) * w.values[size_t(o * in + i)];
                                r += p, a += std::abs(p);
                            }
                            const double bnd = (double(in) / 8 + 9) * std::ldexp(1.0, -24) * a;
                            QVERIFY2(std::abs(r - yb[size_t(t * out + o)]) <= bnd,
                                     qPrintable(where));
                        }
                }
            }
        }
    }

    void bf16DotAgainstDoubleAndInvariance() {
        // vdpbf16ps: every bf16 product exact in float, pairs added to 16 float lanes (two
        // roundings per pair, n/16 per lane), then the fixed 16-lane sum; the bound of the file
        // head holds. Row and token groupings must not change an output's bits.
        IsaGuard guard;
        if (!kernels::isaSupported(kernels::Isa::Avx512))
            QSKIP("lcw: no AVX-512 on this CPU, the BF16 dot product is not built for it");
        kernels::setIsa(kernels::Isa::Avx512);
        if (!kernels::detail::bf16DotAvailable())
            QSKIP("lcw: this CPU has no AVX-512 BF16 (vdpbf16ps)");
        std::mt19937_64 rng(15);
        for (int64_t n : {1, 7, 31, 32, 33, 100, 1601, 4096}) {
            const int64_t rows = 13, T = 9, ldb = kernels::detail::bf16RowStride(n);
            const StoredRows w = makeRows(rng, DType::BF16, rows, n + 3, 1);
            const Acts x = makeActs(rng, T * n, 1);
            std::vector<uint16_t> xb(size_t(T * ldb), 0xFFFF);
            kernels::detail::toBf16Rows(x.data(), n, T, n, xb.data());
            for (int64_t t = 0; t < T; ++t) {
                for (int64_t i = 0; i < n; ++i)
                    QCOMPARE(xb[size_t(t * ldb + i)], f32ToBf16(x.data()[t * n + i]));
                for (int64_t i = n; i < ldb; ++i) QCOMPARE(xb[size_t(t * ldb + i)], uint16_t(0));
            }
            std::vector<float> y(size_t(T * rows));
            kernels::detail::gemmBf16Dot(w.u16(), w.ld, rows, xb.data(), T, y.data(), rows, n);
            for (int64_t t = 0; t < T; ++t)
                for (int64_t r = 0; r < rows; ++r) {
                    double ref = 0, a = 0;
                    for (int64_t i = 0; i < n; ++i) {
                        const double p = double(bf16ToF32(xb[size_t(t * ldb + i)])) *
                                         w.values[size_t(r * w.ld + i)];
                        ref += p, a += std::abs(p);
                    }
                    const double bnd = (double(n) / 8 + 8) * std::ldexp(1.0, -24) * a;
                    QVERIFY2(std::abs(ref - y[size_t(t * rows + r)]) <= bnd,
                             qPrintable(QString("n=%1 t=%2 r=%3").arg(n).arg(t).arg(r)));
                }
            // One token at a time, and rows from an odd start, give the same bits.
            for (int64_t t = 0; t < T; ++t) {
                std::vector<float> one(static_cast<size_t>(rows));
                kernels::detail::gemmBf16Dot(w.u16(), w.ld, rows, xb.data() + t * ldb, 1,
                                             one.data(), rows, n);
                QVERIFY(std::memcmp(one.data(), y.data() + t * rows, size_t(rows) * 4) == 0);
            }
            std::vector<float> part(size_t(T * rows));
            kernels::detail::gemmBf16Dot(w.u16() + 3 * w.ld, w.ld, rows - 3, xb.data(), T,
                                         part.data(), rows - 3, n);
            for (int64_t t = 0; t < T; ++t)
                QVERIFY(std::memcmp(part.data() + t * (rows - 3), y.data() + t * rows + 3,
                                    size_t(rows - 3) * 4) == 0);
        }
    }
};

QTEST_GUILESS_MAIN(TestFloatKernels)
#include "test_float_kernels.moc"
