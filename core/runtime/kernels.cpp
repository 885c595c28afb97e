// CPU kernels. The binary targets baseline x86-64 (no -march), so the hot dot products exist twice:
// a portable version and an AVX2+FMA version compiled with a function-level target attribute and
// chosen at run time with __builtin_cpu_supports. Both accumulate every output element in the
// same order (8 interleaved partial sums, fixed reduction), whatever the number of tokens in the
// call, so decoding one token at a time gives bit-identical results to a batched prefill.
#include "core/runtime/kernels.h"

#include "core/common/error.h"
#include "core/io/quants.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numbers>
#include <span>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LCW_X86 1
#else
#define LCW_X86 0
#endif

namespace lcw::kernels {

namespace {

std::atomic<Isa> g_forced{Isa::Auto};

bool cpuHasAvx2() {
#if LCW_X86
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                            __builtin_cpu_supports("f16c");
    return has;
#else
    return false;
#endif
}

constexpr int64_t kMinParallelWork = 1 << 18;

int resolveThreads(int threads) {
    return threads > 0 ? threads : omp_get_max_threads();
}

// ---------------------------------------------------------------------------------------------
// Portable micro-kernel: MT tokens x MR weight rows, 8 partial sums per output element.
template <int MT, int MR>
inline void microGeneric(const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
                         int64_t ldy, int64_t n) {
    float acc[MT][MR][8] = {};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        for (int t = 0; t < MT; ++t)
            for (int r = 0; r < MR; ++r)
                for (int l = 0; l < 8; ++l) acc[t][r][l] += x[t * ldx + k + l] * w[r * ldw + k + l];
    }
    for (int l = 0; k + l < n; ++l)
        for (int t = 0; t < MT; ++t)
            for (int r = 0; r < MR; ++r) acc[t][r][l] += x[t * ldx + k + l] * w[r * ldw + k + l];
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) {
            const float* a = acc[t][r];
            y[t * ldy + r] = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
        }
}

template <int MT>
void rowsGeneric(const float* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int64_t n) {
    int64_t r = 0;
    for (; r + 4 <= nRows; r += 4) microGeneric<MT, 4>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
    for (; r < nRows; ++r) microGeneric<MT, 1>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
}

void gemmGeneric(const float* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx,
                 int64_t nTok, float* y, int64_t ldy, int64_t n) {
    int64_t t = 0;
    for (; t + 2 <= nTok; t += 2)
        rowsGeneric<2>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n);
    if (t < nTok) rowsGeneric<1>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n);
}

// ---------------------------------------------------------------------------------------------
#if LCW_X86
#define LCW_AVX2 __attribute__((target("avx2,fma,f16c")))

LCW_AVX2 inline float hsum8(__m256 v) {
    // Same reduction order as microGeneric: (a0+a4), (a2+a6), (a1+a5), (a3+a7).
    const __m128 lo = _mm256_castps256_ps128(v);
    const __m128 hi = _mm256_extractf128_ps(v, 1);
    const __m128 s = _mm_add_ps(lo, hi);         // s0=a0+a4 s1=a1+a5 s2=a2+a6 s3=a3+a7
    const __m128 sh = _mm_movehl_ps(s, s);       // s2 s3
    const __m128 p = _mm_add_ps(s, sh);          // p0=s0+s2 p1=s1+s3
    const __m128 q = _mm_shuffle_ps(p, p, 0x55); // p1
    return _mm_cvtss_f32(_mm_add_ss(p, q));      // p0+p1
}

alignas(32) const int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Weight loaders: 8 consecutive weights as floats. F16 and BF16 convert exactly, so a product
// over converted rows and one over the raw rows give identical results.
struct WF32 {
    using T = float;
    LCW_AVX2 static __m256 load(const T* p) { return _mm256_loadu_ps(p); }
    LCW_AVX2 static __m256 loadTail(const T* p, int64_t, __m256i mask) {
        return _mm256_maskload_ps(p, mask);
    }
};
struct WF16 {
    using T = uint16_t;
    LCW_AVX2 static __m256 load(const T* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    LCW_AVX2 static __m256 loadTail(const T* p, int64_t rem, __m256i) {
        alignas(16) T tmp[8] = {};
        std::memcpy(tmp, p, size_t(rem) * sizeof(T));
        return load(tmp);
    }
};
struct WBF16 {
    using T = uint16_t;
    LCW_AVX2 static __m256 load(const T* p) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    LCW_AVX2 static __m256 loadTail(const T* p, int64_t rem, __m256i) {
        alignas(16) T tmp[8] = {};
        std::memcpy(tmp, p, size_t(rem) * sizeof(T));
        return load(tmp);
    }
};

template <int MT, int MR, class WL>
LCW_AVX2 inline void microAvx2(const typename WL::T* w, int64_t ldw, const float* x, int64_t ldx,
                               float* y, int64_t ldy, int64_t n) {
    __m256 acc[MT][MR];
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) acc[t][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv[MT];
        for (int t = 0; t < MT; ++t) xv[t] = _mm256_loadu_ps(x + t * ldx + k);
        for (int r = 0; r < MR; ++r) {
            const __m256 wv = WL::load(w + r * ldw + k);
            for (int t = 0; t < MT; ++t) acc[t][r] = _mm256_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
    if (k < n) {
        const __m256i mask =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - (n - k)));
        __m256 xv[MT];
        for (int t = 0; t < MT; ++t) xv[t] = _mm256_maskload_ps(x + t * ldx + k, mask);
        for (int r = 0; r < MR; ++r) {
            const __m256 wv = WL::loadTail(w + r * ldw + k, n - k, mask);
            for (int t = 0; t < MT; ++t) acc[t][r] = _mm256_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) y[t * ldy + r] = hsum8(acc[t][r]);
}

template <int MT, class WL>
LCW_AVX2 void rowsAvx2(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x,
                       int64_t ldx, float* y, int64_t ldy, int64_t n) {
    int64_t r = 0;
    // One token (decode): 8 rows at a time keep more independent memory streams in flight.
    if constexpr (MT == 1)
        for (; r + 8 <= nRows; r += 8) microAvx2<1, 8, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
    for (; r + 4 <= nRows; r += 4) microAvx2<MT, 4, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
    for (; r < nRows; ++r) microAvx2<MT, 1, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
}

template <class WL>
LCW_AVX2 void gemmAvx2(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x,
                       int64_t ldx, int64_t nTok, float* y, int64_t ldy, int64_t n) {
    int64_t t = 0;
    for (; t + 2 <= nTok; t += 2)
        rowsAvx2<2, WL>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n);
    if (t < nTok) rowsAvx2<1, WL>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n);
}

LCW_AVX2 void bf16RowAvx2(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, WBF16::load(src + i));
    for (; i < n; ++i) {
        const uint32_t u = uint32_t(src[i]) << 16;
        std::memcpy(dst + i, &u, 4);
    }
}

// C[M x N] = A[M x K] * B[K x N], all row-major: broadcast one A element, multiply a row segment of
// B. MR rows of C by NV 8-wide vectors; the last vector of a row may be partial (masked).
template <int MR, int NV>
LCW_AVX2 inline void microNNAvx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                                 int64_t ldc, int64_t K, __m256i lastMask) {
    __m256 acc[MR][NV];
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        __m256 bv[NV];
        for (int v = 0; v < NV - 1; ++v) bv[v] = _mm256_loadu_ps(b + k * ldb + 8 * v);
        bv[NV - 1] = _mm256_maskload_ps(b + k * ldb + 8 * (NV - 1), lastMask);
        for (int r = 0; r < MR; ++r) {
            const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; ++r) {
        for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
        _mm256_maskstore_ps(c + r * ldc + 8 * (NV - 1), lastMask, acc[r][NV - 1]);
    }
}

template <int MR>
LCW_AVX2 void rowsNNAvx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                         int64_t ldc, int64_t N, int64_t K) {
    const __m256i full = _mm256_set1_epi32(-1);
    int64_t j = 0;
    for (; j + 16 <= N; j += 16) microNNAvx2<MR, 2>(a, lda, b + j, ldb, c + j, ldc, K, full);
    if (j < N) {
        const int64_t rest = N - j; // 1..15
        if (rest > 8) {
            const __m256i m =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - (rest - 8)));
            microNNAvx2<MR, 2>(a, lda, b + j, ldb, c + j, ldc, K, m);
        } else {
            const __m256i m =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - rest));
            microNNAvx2<MR, 1>(a, lda, b + j, ldb, c + j, ldc, K, m);
        }
    }
}

LCW_AVX2 void gemmNNAvx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                         int64_t ldc, int64_t M, int64_t N, int64_t K) {
    int64_t i = 0;
    for (; i + 4 <= M; i += 4) rowsNNAvx2<4>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, N, K);
    for (; i < M; ++i) rowsNNAvx2<1>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, N, K);
}

// exp(x) for x in [-87, 88] with ~2 ulp error: 2^n * p(r), r = x - n ln2, degree-6 polynomial
// (the classic Cephes expf coefficients).
LCW_AVX2 inline __m256 expAvx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// s[i] = exp(s[i] * scale - max), returns the sum (float accumulation in 8 lanes).
LCW_AVX2 float scaledExpAvx2(float* s, int64_t n, float scale, float mx) {
    const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = expAvx2(_mm256_fmsub_ps(_mm256_loadu_ps(s + i), vs, vm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum8(acc);
    if (i < n) {
        const __m256i m =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - (n - i)));
        const __m256 e = expAvx2(_mm256_fmsub_ps(_mm256_maskload_ps(s + i, m), vs, vm));
        const __m256 z = _mm256_and_ps(e, _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(s + i, m, z);
        sum += hsum8(z);
    }
    return sum;
}

LCW_AVX2 void f16RowAvx2(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}
#endif

void bf16Row(const std::byte* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        const uint32_t u = uint32_t(h) << 16;
        std::memcpy(dst + i, &u, 4);
    }
}

void gemmNNGeneric(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                   int64_t M, int64_t N, int64_t K) {
    for (int64_t i = 0; i < M; ++i) {
        float* ci = c + i * ldc;
        std::fill(ci, ci + N, 0.0f);
        for (int64_t k = 0; k < K; ++k) {
            const float av = a[i * lda + k];
            const float* bk = b + k * ldb;
            for (int64_t j = 0; j < N; ++j) ci[j] += av * bk[j];
        }
    }
}

float scaledExpGeneric(float* s, int64_t n, float scale, float mx) {
    float sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        s[i] = std::exp(s[i] * scale - mx);
        sum += s[i];
    }
    return sum;
}

/// Softmax of s[0..n) * scale in place.
void softmaxScaled(float* s, int64_t n, float scale) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, s[i]);
    mx *= scale; // scale > 0
    float sum;
#if LCW_X86
    if (activeIsa() == Isa::Avx2)
        sum = scaledExpAvx2(s, n, scale, mx);
    else
#endif
        sum = scaledExpGeneric(s, n, scale, mx);
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

} // namespace

void setIsa(Isa isa) {
    g_forced.store(isa);
}

Isa activeIsa() {
    const Isa f = g_forced.load();
    if (f == Isa::Generic) return Isa::Generic;
    if (f == Isa::Avx2) {
        if (!cpuHasAvx2()) throw UnsupportedError("this CPU does not support AVX2+FMA+F16C");
        return Isa::Avx2;
    }
    // LCW_ISA=generic in the environment forces the portable kernels (debugging, comparisons).
    static const bool envGeneric = [] {
        const char* e = std::getenv("LCW_ISA");
        return e && std::string_view(e) == "generic";
    }();
    return cpuHasAvx2() && !envGeneric ? Isa::Avx2 : Isa::Generic;
}

const char* isaName(Isa isa) {
    switch (isa) {
    case Isa::Auto:
        return "auto";
    case Isa::Generic:
        return "generic";
    case Isa::Avx2:
        return "avx2";
    }
    return "?";
}

void gemmNT(const float* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx, int64_t nTok,
            float* y, int64_t ldy, int64_t n) {
    if (nRows <= 0 || nTok <= 0) return;
#if LCW_X86
    if (activeIsa() == Isa::Avx2) return gemmAvx2<WF32>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
#endif
    gemmGeneric(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
}

void gemmNN(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
            int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) return;
#if LCW_X86
    if (activeIsa() == Isa::Avx2) return gemmNNAvx2(a, lda, b, ldb, c, ldc, M, N, K);
#endif
    gemmNNGeneric(a, lda, b, ldb, c, ldc, M, N, K);
}

void dequantizeRows(const TensorView& w, int64_t r0, int64_t nRows, float* dst) {
    const int64_t n = w.cols();
    switch (w.dtype) {
    case DType::F32:
        std::memcpy(dst, w.row(r0), size_t(nRows * n) * sizeof(float));
        return;
    case DType::BF16:
#if LCW_X86
        if (activeIsa() == Isa::Avx2 && (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
            for (int64_t r = 0; r < nRows; ++r)
                bf16RowAvx2(reinterpret_cast<const uint16_t*>(w.row(r0 + r)), dst + r * n, n);
            return;
        }
#endif
        for (int64_t r = 0; r < nRows; ++r) bf16Row(w.row(r0 + r), dst + r * n, n);
        return;
    case DType::F16:
#if LCW_X86
        if (activeIsa() == Isa::Avx2 && (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
            for (int64_t r = 0; r < nRows; ++r)
                f16RowAvx2(reinterpret_cast<const uint16_t*>(w.row(r0 + r)), dst + r * n, n);
            return;
        }
#endif
        break;
    default:
        break;
    }
    for (int64_t r = 0; r < nRows; ++r) dequantizeRow(w.dtype, w.row(r0 + r), dst + r * n, n);
}

void linear(const TensorView& w, const float* x, int64_t ldx, int64_t nTok, float* y, int64_t ldy,
            const float* bias, int threads) {
    const LinearJob job{&w, y, ldy, bias};
    linearBatch({&job, 1}, x, ldx, nTok, threads);
}

void linearBatch(std::span<const LinearJob> jobs, const float* x, int64_t ldx, int64_t nTok,
                 int threads) {
    if (jobs.empty() || nTok <= 0) return;
    const int64_t n = jobs[0].w->cols();
    int64_t totalRows = 0;
    for (const auto& j : jobs) {
        if (j.w->cols() != n) throw ArgumentError("linearBatch: weights differ in input size");
        totalRows += j.w->rows();
    }
    if (totalRows <= 0) return;
    const int nt = resolveThreads(threads);

    // Row tile: at most ~256 KiB of float weights (stays in L2 while every token of the batch
    // passes over it), a multiple of 4 rows, and small enough that every thread gets several
    // tiles (dynamic scheduling evens out the load).
    int64_t R = std::clamp<int64_t>((65536 / std::max<int64_t>(n, 1)) & ~int64_t(3), 4, 256);
    while (R > 4 && totalRows / R < 8 * nt) R = std::max<int64_t>(4, (R / 2) & ~int64_t(3));
    // Tiles of all jobs in one list, so that one parallel region (one barrier) covers them.
    int64_t tileStart[8] = {0};
    const size_t nJobs = std::min<size_t>(jobs.size(), 7);
    if (jobs.size() > 7) throw ArgumentError("linearBatch: at most 7 weights per call");
    for (size_t j = 0; j < nJobs; ++j)
        tileStart[j + 1] = tileStart[j] + (jobs[j].w->rows() + R - 1) / R;
    const int64_t nTiles = tileStart[nJobs];
    // Below ~256K multiply-adds (~20 us on one core) a parallel region costs more than it saves,
    // and far more when the cores are shared with other processes (spinning barriers).
    const bool parallel = nt > 1 && nTiles > 1 && totalRows * n * nTok >= kMinParallelWork;

    // Converting a tile once pays off when several tokens reuse it; for one to three tokens the
    // conversion is folded into the product instead.
    [[maybe_unused]] const bool fused16 = nTok < 4 && activeIsa() == Isa::Avx2;

#pragma omp parallel num_threads(nt) if (parallel)
    {
        thread_local FloatBuffer buf;
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < nTiles; ++tile) {
            size_t j = 0;
            while (tile >= tileStart[j + 1]) ++j;
            const LinearJob& job = jobs[j];
            const TensorView& w = *job.w;
            const int64_t r0 = (tile - tileStart[j]) * R;
            const int64_t rows = std::min(R, w.rows() - r0);
            // F32 weights are read in place. A mapping that is not 32-byte aligned (safetensors
            // only guarantees 8) is copied tile by tile like any other dtype when the batch is
            // large enough for the copy to pay off (split vector loads slow the product ~25%).
            float* y = job.y;
#if LCW_X86
            // Decode with 16-bit floats: convert inside the product (one pass over the weights).
            if (fused16 && (w.dtype == DType::F16 || w.dtype == DType::BF16) &&
                (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
                const auto* w16 = reinterpret_cast<const uint16_t*>(w.data) + r0 * n;
                if (w.dtype == DType::F16)
                    gemmAvx2<WF16>(w16, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
                else
                    gemmAvx2<WBF16>(w16, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
                if (job.bias)
                    for (int64_t t = 0; t < nTok; ++t)
                        for (int64_t r = 0; r < rows; ++r)
                            y[t * job.ldy + r0 + r] += job.bias[r0 + r];
                continue;
            }
#endif
            const float* wt;
            const uintptr_t addr = reinterpret_cast<uintptr_t>(w.data + uint64_t(r0 * n) * 4);
            if (w.dtype == DType::F32 && addr % alignof(float) == 0 &&
                (nTok < 16 || addr % 32 == 0)) {
                wt = reinterpret_cast<const float*>(w.data) + r0 * n;
            } else {
                if (buf.size() < size_t(R * n)) buf.resize(size_t(R * n));
                dequantizeRows(w, r0, rows, buf.data());
                wt = buf.data();
            }
            gemmNT(wt, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
            if (job.bias)
                for (int64_t t = 0; t < nTok; ++t)
                    for (int64_t r = 0; r < rows; ++r) y[t * job.ldy + r0 + r] += job.bias[r0 + r];
        }
    }
}

void rmsNorm(const float* x, const float* w, float* out, int64_t nTok, int64_t n, int64_t ld,
             float eps) {
    for (int64_t t = 0; t < nTok; ++t) {
        const float* xr = x + t * ld;
        float* o = out + t * ld;
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * double(xr[i]);
        const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
        for (int64_t i = 0; i < n; ++i) o[i] = w[i] * (xr[i] * inv);
    }
}

void layerNorm(const float* x, const float* w, const float* b, float* out, int64_t nTok, int64_t n,
               int64_t ld, float eps) {
    for (int64_t t = 0; t < nTok; ++t) {
        const float* xr = x + t * ld;
        float* o = out + t * ld;
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += xr[i];
        const double mean = sum / double(n);
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
        const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
        const float m = float(mean);
        for (int64_t i = 0; i < n; ++i) o[i] = (xr[i] - m) * inv * w[i] + (b ? b[i] : 0.0f);
    }
}

Activation activationFromName(const std::string& name) {
    if (name == "silu" || name == "swish") return Activation::Silu;
    if (name == "gelu") return Activation::Gelu;
    if (name == "gelu_tanh" || name == "gelu_new" || name == "gelu_pytorch_tanh")
        return Activation::GeluTanh;
    if (name == "relu") return Activation::Relu;
    throw UnsupportedError("the CPU runtime does not support activation '" + name +
                           "' (supported: silu, gelu, gelu_tanh, relu)");
}

namespace {
inline float act1(Activation a, float x) {
    switch (a) {
    case Activation::Silu:
        return x / (1.0f + std::exp(-x));
    case Activation::Gelu:
        return 0.5f * x * (1.0f + std::erf(x * float(1.0 / std::numbers::sqrt2)));
    case Activation::GeluTanh: {
        constexpr float k = 0.7978845608028654f; // sqrt(2/pi)
        return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
    }
    case Activation::Relu:
        return x > 0 ? x : 0.0f;
    }
    return x;
}
} // namespace

void activate(Activation a, float* x, int64_t n, int threads) {
    const int nt = resolveThreads(threads);
#pragma omp parallel for num_threads(nt) if (n >= 65536) schedule(static)
    for (int64_t i = 0; i < n; ++i) x[i] = act1(a, x[i]);
}

void activateGated(Activation a, float* g, const float* u, int64_t n, int threads) {
    const int nt = resolveThreads(threads);
    if (a == Activation::Silu) {
#pragma omp parallel for num_threads(nt) if (n >= 65536) schedule(static)
        for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        return;
    }
#pragma omp parallel for num_threads(nt) if (n >= 65536) schedule(static)
    for (int64_t i = 0; i < n; ++i) g[i] = act1(a, g[i]) * u[i];
}

std::vector<float> alibiSlopes(int64_t nHeads) {
    std::vector<float> out;
    if (nHeads <= 0) return out;
    int64_t p = 1;
    while (p * 2 <= nHeads) p *= 2;
    // base = 2^(-8/p): slope_h = base^(h+1)
    const double base = std::pow(2.0, -8.0 / double(p));
    for (int64_t h = 0; h < p; ++h) out.push_back(float(std::pow(base, double(h + 1))));
    if (p < nHeads) {
        const double extra = std::pow(2.0, -4.0 / double(p)); // 2^(-8/(2p))
        for (int64_t i = 0; i < nHeads - p; ++i)
            out.push_back(float(std::pow(extra, double(2 * i + 1))));
    }
    return out;
}

RopeFreqs ropeFrequencies(const RopeConfig& rope, int64_t headDim, int64_t maxSeq, int64_t seqLen) {
    RopeFreqs f;
    f.rotDim = int64_t(double(headDim) * rope.partialRotaryFactor);
    f.rotDim -= f.rotDim % 2;
    if (f.rotDim <= 0 || f.rotDim > headDim)
        throw ArgumentError("invalid rotary dimension " + std::to_string(f.rotDim) +
                            " for head_dim " + std::to_string(headDim));
    const int64_t half = f.rotDim / 2;
    const double d = double(f.rotDim);
    const double factor = rope.factor > 0 ? rope.factor : 1.0;
    const double origMax =
        double(rope.originalMaxPositions > 0 ? rope.originalMaxPositions : maxSeq);
    double base = rope.theta;
    if (rope.type == RopeType::Dynamic && origMax > 0) {
        const double L = std::max(double(seqLen), origMax);
        base = rope.theta * std::pow(factor * L / origMax - (factor - 1.0), d / (d - 2.0));
    }
    f.invFreq.resize(size_t(half));
    for (int64_t i = 0; i < half; ++i)
        f.invFreq[size_t(i)] = 1.0 / std::pow(base, double(2 * i) / d);

    switch (rope.type) {
    case RopeType::Default:
    case RopeType::Dynamic:
        break;
    case RopeType::Linear:
        for (auto& v : f.invFreq) v /= factor;
        break;
    case RopeType::Llama3: {
        const double lowWavelen = origMax / rope.lowFreqFactor;
        const double highWavelen = origMax / rope.highFreqFactor;
        for (auto& v : f.invFreq) {
            const double wavelen = 2.0 * std::numbers::pi / v;
            if (wavelen < highWavelen) continue; // high frequency: unchanged
            if (wavelen > lowWavelen) {          // low frequency: interpolated
                v /= factor;
                continue;
            }
            const double smooth = (origMax / wavelen - rope.lowFreqFactor) /
                                  (rope.highFreqFactor - rope.lowFreqFactor);
            v = (1.0 - smooth) * v / factor + smooth * v;
        }
        break;
    }
    case RopeType::Yarn: {
        // Correction range: dimensions that rotate more than betaFast times over the original
        // context keep their frequency, fewer than betaSlow get interpolated, linear ramp between.
        auto corrDim = [&](double rotations) {
            return d * std::log(origMax / (rotations * 2.0 * std::numbers::pi)) /
                   (2.0 * std::log(rope.theta));
        };
        double low = std::floor(corrDim(rope.betaFast));
        double high = std::ceil(corrDim(rope.betaSlow));
        low = std::max(low, 0.0);
        high = std::min(high, d - 1.0);
        if (low == high) high += 0.001;
        for (int64_t i = 0; i < half; ++i) {
            const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
            const double extrapolationFactor = 1.0 - ramp;
            const double extra = f.invFreq[size_t(i)];
            const double inter = extra / factor;
            f.invFreq[size_t(i)] =
                inter * (1.0 - extrapolationFactor) + extra * extrapolationFactor;
        }
        f.attnScale = rope.attentionFactor > 0
                          ? rope.attentionFactor
                          : (factor <= 1.0 ? 1.0 : 0.1 * std::log(factor) + 1.0);
        break;
    }
    }
    return f;
}

void ropeTables(const RopeFreqs& f, int64_t pos0, int64_t n, float* cosOut, float* sinOut) {
    const int64_t half = f.rotDim / 2;
    for (int64_t t = 0; t < n; ++t) {
        const double p = double(pos0 + t);
        for (int64_t i = 0; i < half; ++i) {
            const double a = p * f.invFreq[size_t(i)];
            cosOut[t * half + i] = float(std::cos(a) * f.attnScale);
            sinOut[t * half + i] = float(std::sin(a) * f.attnScale);
        }
    }
}

void applyRope(float* x, int64_t nTok, int64_t ld, int64_t nHeads, int64_t headDim, int64_t rotDim,
               bool interleaved, const float* cosT, const float* sinT) {
    const int64_t half = rotDim / 2;
    for (int64_t t = 0; t < nTok; ++t) {
        const float* c = cosT + t * half;
        const float* s = sinT + t * half;
        for (int64_t h = 0; h < nHeads; ++h) {
            float* v = x + t * ld + h * headDim;
            if (interleaved) {
                for (int64_t i = 0; i < half; ++i) {
                    const float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * c[i] - b * s[i];
                    v[2 * i + 1] = a * s[i] + b * c[i];
                }
            } else {
                for (int64_t i = 0; i < half; ++i) {
                    const float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = b * c[i] + a * s[i];
                }
            }
        }
    }
}

void attention(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
               int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
               int64_t headDim, int64_t window, int threads) {
    AttentionOptions opt;
    opt.window = window;
    attentionEx(q, ldq, kCache, vCache, out, ldo, nTok, pos0, nHeads, nKvHeads, headDim, opt,
                threads);
}

void attentionEx(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
                 int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
                 int64_t headDim, const AttentionOptions& opt, int threads) {
    const int nt = resolveThreads(threads);
    const int64_t window = opt.window;
    const bool plain = opt.softcap <= 0 && opt.alibi == nullptr;
    const int64_t kvDim = nKvHeads * headDim;
    const int64_t group = nHeads / nKvHeads;
    const int64_t hd = headDim;
    const float scale = opt.scale > 0 ? opt.scale : float(1.0 / std::sqrt(double(headDim)));
    // Queries are processed in blocks: S = Q K^T and O = P V are then matrix products (K is
    // transposed into scratch once per block). The part of a block's key range that is masked for
    // its earlier queries is computed and zeroed, which costs ~QB/2 keys per query.
    constexpr int64_t QB = 32;
    const int64_t nBlocks = (nTok + QB - 1) / QB;
    const int64_t tasks = nHeads * nBlocks;
    const int64_t work = nHeads * nTok * (pos0 + nTok) * headDim;
    const bool parallel = nt > 1 && tasks > 1 && work >= kMinParallelWork;

#pragma omp parallel num_threads(nt) if (parallel)
    {
        thread_local FloatBuffer S, KT;
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; ++task) {
            // Block-major order: the longest blocks (last queries) are spread over the threads.
            const int64_t blk = nBlocks - 1 - task / nHeads, h = task % nHeads;
            const int64_t t0 = blk * QB, t1 = std::min(nTok, t0 + QB), nq = t1 - t0;
            const int64_t kvh = h / group;
            const int64_t jLo = window > 0 ? std::max<int64_t>(0, pos0 + t0 - window + 1) : 0;
            const int64_t jHi = pos0 + t1; // exclusive
            const int64_t nk = jHi - jLo;
            const float* kh = kCache + jLo * kvDim + kvh * hd;
            const float* vh = vCache + jLo * kvDim + kvh * hd;
            const float* qb = q + t0 * ldq + h * hd;
            float* ob = out + t0 * ldo + h * hd;
            if (S.size() < size_t(nq * nk)) S.resize(size_t(nq * nk));
            if (nq == 1) {
                // Decode: one query, dot products against the key rows directly.
                gemmNT(kh, kvDim, nk, qb, hd, 1, S.data(), 0, hd);
            } else {
                if (KT.size() < size_t(hd * nk)) KT.resize(size_t(hd * nk));
                for (int64_t j = 0; j < nk; ++j)
                    for (int64_t d = 0; d < hd; ++d) KT[size_t(d * nk + j)] = kh[j * kvDim + d];
                gemmNN(qb, ldq, KT.data(), nk, S.data(), nk, nq, nk, hd);
            }
            for (int64_t t = 0; t < nq; ++t) {
                const int64_t p = pos0 + t0 + t;
                const int64_t a = (window > 0 ? std::max<int64_t>(0, p - window + 1) : 0) - jLo;
                const int64_t b = p - jLo + 1; // exclusive
                float* row = S.data() + t * nk;
                std::fill(row, row + a, 0.0f);
                if (plain) {
                    softmaxScaled(row + a, b - a, scale);
                } else {
                    const float slope = opt.alibi ? opt.alibi[h] : 0.0f;
                    for (int64_t j = a; j < b; ++j) {
                        const float rel = float(jLo + j - p); // key position - query position
                        float sc = row[j];
                        if (opt.alibiBeforeScale)
                            sc = (sc + slope * rel) * scale;
                        else
                            sc = sc * scale + slope * rel;
                        if (opt.softcap > 0) sc = opt.softcap * std::tanh(sc / opt.softcap);
                        row[j] = sc;
                    }
                    softmaxScaled(row + a, b - a, 1.0f);
                }
                std::fill(row + b, row + nk, 0.0f);
            }
            if (nq == 1) {
                std::fill(ob, ob + hd, 0.0f);
                for (int64_t j = 0; j < nk; ++j) {
                    const float pj = S[size_t(j)];
                    const float* vr = vh + j * kvDim;
                    for (int64_t d = 0; d < hd; ++d) ob[d] += pj * vr[d];
                }
            } else {
                gemmNN(S.data(), nk, vh, kvDim, ob, ldo, nq, hd, nk);
            }
        }
    }
}

double logSoftmaxAt(const float* logits, int64_t vocab, int64_t target) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - double(mx));
    return double(logits[target]) - double(mx) - std::log(sum);
}

} // namespace lcw::kernels
