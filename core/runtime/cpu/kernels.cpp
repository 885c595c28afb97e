// CPU float kernels. The binary targets baseline x86-64 (no -march), so the hot dot products exist
// in several versions: portable code and instruction-set paths compiled with function-level target
// attributes (simd.h) and chosen at run time from the CPU's features (activeIsa()). Within one
// level every output element is accumulated in the same order whatever the number of tokens in
// the call and whatever the weights' storage (F32, F16 and BF16 convert exactly), so decoding one
// token at a time gives bit-identical results to a batched prefill:
//   portable and AVX2: 8 partial sums, lane l takes the products k = l (mod 8) in increasing k;
//   AVX-512: 16 partial sums, lane l takes k = l (mod 16), in increasing k (fused multiply-add);
// each level then reduces its partial sums in one fixed order (microGeneric, hsum8, hsum16).
#include "core/runtime/cpu/kernels.h"

#include "core/common/error.h"
#include "core/io/quants.h"
#include "core/runtime/cpu/simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numbers>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

namespace lcw::kernels {

using namespace detail;

namespace {

std::atomic<Isa> g_forced{Isa::Auto};

// ---------------------------------------------------------------------------------------------
// Portable micro-kernel: MT tokens x MR weight rows, 8 partial sums per output element. The weight
// loaders (scalar: F32 as is, F16 and BF16 converted exactly) let one kernel serve every storage.
struct SF32 {
    using T = float;
    static float at(const T* p) { return *p; }
};
struct SF16 {
    using T = uint16_t;
    static float at(const T* p) { return f16ToF32(*p); }
};
struct SBF16 {
    using T = uint16_t;
    static float at(const T* p) { return bf16ToF32(*p); }
};

template <int MT, int MR, class WL>
inline void microGeneric(const typename WL::T* w, int64_t ldw, const float* x, int64_t ldx,
                         float* y, int64_t ldy, int64_t n) {
    float acc[MT][MR][8] = {};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        for (int r = 0; r < MR; ++r)
            for (int l = 0; l < 8; ++l) {
                const float wv = WL::at(w + r * ldw + k + l);
                for (int t = 0; t < MT; ++t) acc[t][r][l] += x[t * ldx + k + l] * wv;
            }
    }
    for (int l = 0; k + l < n; ++l)
        for (int r = 0; r < MR; ++r) {
            const float wv = WL::at(w + r * ldw + k + l);
            for (int t = 0; t < MT; ++t) acc[t][r][l] += x[t * ldx + k + l] * wv;
        }
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) {
            const float* a = acc[t][r];
            y[t * ldy + r] = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
        }
}

template <int MT, class WL>
void rowsGeneric(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx,
                 float* y, int64_t ldy, int64_t n) {
    int64_t r = 0;
    for (; r + 4 <= nRows; r += 4) microGeneric<MT, 4, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
    for (; r < nRows; ++r) microGeneric<MT, 1, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n);
}

template <class WL>
void gemmGeneric(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx,
                 int64_t nTok, float* y, int64_t ldy, int64_t n) {
    int64_t t = 0;
    for (; t + 2 <= nTok; t += 2)
        rowsGeneric<2, WL>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n);
    if (t < nTok) rowsGeneric<1, WL>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n);
}

// ---------------------------------------------------------------------------------------------
#if LCW_X86
template <int MT, int MR, class WL>
LCW_AVX2 inline void microAvx2(const typename WL::T* w, int64_t ldw, const float* x, int64_t ldx,
                               float* y, int64_t ldy, int64_t n, const char* next) {
    __m256 acc[MT][MR];
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) acc[t][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        prefetchStreams<sizeof(typename WL::T), MR>(reinterpret_cast<const char*>(w), next, ldw, n,
                                                    k);
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
                       int64_t ldx, float* y, int64_t ldy, int64_t n, bool stream) {
    if constexpr (MT == 1)
        if (stream)
            return decodeSplit(
                w, ldw, nRows, y,
                [&](const typename WL::T* wp, int64_t ldp, float* out, const char* nx) {
                    microAvx2<1, kDecodeParts, WL>(wp, ldp, x, ldx, out, 1, n, nx);
                },
                [&](const typename WL::T* wr, float* yr, const char* nx) {
                    microAvx2<1, 1, WL>(wr, ldw, x, ldx, yr, 1, n, nx);
                });
    int64_t r = 0;
    for (; r + 4 <= nRows; r += 4)
        microAvx2<MT, 4, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n,
                             rowsAfter(w, ldw, r, 4, stream));
    for (; r < nRows; ++r)
        microAvx2<MT, 1, WL>(w + r * ldw, ldw, x, ldx, y + r, ldy, n,
                             rowsAfter(w, ldw, r, 1, stream));
}

template <class WL>
LCW_AVX2 void gemmAvx2(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x,
                       int64_t ldx, int64_t nTok, float* y, int64_t ldy, int64_t n) {
    const bool stream = nTok <= kStreamTokens;
    int64_t t = 0;
    for (; t + 2 <= nTok; t += 2)
        rowsAvx2<2, WL>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n, stream);
    if (t < nTok) rowsAvx2<1, WL>(w, ldw, nRows, x + t * ldx, ldx, y + t * ldy, ldy, n, stream);
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

LCW_AVX2 void f16RowAvx2(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

// ---------------------------------------------------------------------------------------------
// AVX-512: MT tokens x MR weight rows, 16 partial sums per output element (one zmm), the last
// partial vector of a row loaded under a mask (masked lanes read nothing and add 0). `next`
// (decode, or null): the rows after these, into which the rows' prefetch streams run on
// (prefetchStreams). The inputs
// [k0, k1) of a longer product: the 16 partial sums start from `part` unless k0 == 0 and go back
// there unless k1 reaches n, where they are reduced into y. Spilling them between blocks changes
// no bit, so a blocked product equals an unblocked one.
template <int MT, int MR, class WL>
LCW_AVX512 inline void microAvx512(const typename WL::T* w, int64_t ldw, const float* x,
                                   int64_t ldx, int64_t k0, int64_t k1, int64_t n, float* part,
                                   int64_t ldp, float* y, int64_t ldy, const char* next) {
    __m512 acc[MT][MR];
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r)
            acc[t][r] = k0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(part + (t * ldp + r) * 16);
    const int64_t kEnd = std::min(k1, n) & ~int64_t(15);
    int64_t k = k0;
    for (; k < kEnd; k += 16) {
        if constexpr (MT <= kStreamTokens)
            prefetchStreams<sizeof(typename WL::T), MR>(reinterpret_cast<const char*>(w), next, ldw,
                                                        n, k);
        __m512 xv[MT];
        for (int t = 0; t < MT; ++t) xv[t] = _mm512_loadu_ps(x + t * ldx + k);
        for (int r = 0; r < MR; ++r) {
            const __m512 wv = WL::load16(w + r * ldw + k);
            for (int t = 0; t < MT; ++t) acc[t][r] = _mm512_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
    if (k1 < n) {
        for (int t = 0; t < MT; ++t)
            for (int r = 0; r < MR; ++r) _mm512_store_ps(part + (t * ldp + r) * 16, acc[t][r]);
        return;
    }
    if (k < n) {
        const __mmask16 m = laneMask16(n - k);
        __m512 xv[MT];
        for (int t = 0; t < MT; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
        for (int r = 0; r < MR; ++r) {
            const __m512 wv = WL::load16(w + r * ldw + k, m);
            for (int t = 0; t < MT; ++t) acc[t][r] = _mm512_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) y[t * ldy + r] = hsum16(acc[t][r]);
}

// Inputs per block of the blocked product: the MT token rows of one block (6 x 4 KiB) stay in L1
// while the weight rows stream from L2.
constexpr int64_t kAvx512KBlock = 1024;
// Weight rows per row block: bounds the partial sums (6 x 64 x 64 B = 24 KiB).
constexpr int64_t kAvx512RowBlock = 64;

// MT tokens against nRows rows (nRows <= kAvx512RowBlock when the inputs are blocked), inputs in
// blocks of kc (a multiple of 16), the partial sums of the block in `part`.
template <int MT, class WL>
LCW_AVX512 void rowsAvx512(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x,
                           int64_t ldx, float* y, int64_t ldy, int64_t n, int64_t kc, float* part,
                           bool stream) {
    if constexpr (MT == 1)
        if (stream)
            return decodeSplit(
                w, ldw, nRows, y,
                [&](const typename WL::T* wp, int64_t ldp, float* out, const char* next) {
                    microAvx512<1, kDecodeParts, WL>(wp, ldp, x, ldx, 0, n, n, part, nRows, out, 1,
                                                     next);
                },
                [&](const typename WL::T* wr, float* yr, const char* next) {
                    microAvx512<1, 1, WL>(wr, ldw, x, ldx, 0, n, n, part, nRows, yr, 1, next);
                });
    // MT*MR accumulators + MT input vectors + 1 weight vector fit the 32 zmm registers. Two or
    // three tokens take 8 rows at a time: more independent weight streams in flight.
    constexpr int MR = MT <= 3 ? 8 : 4;
    for (int64_t k0 = 0; k0 < n || k0 == 0; k0 += kc) {
        const int64_t k1 = k0 + kc;
        int64_t r = 0;
        for (; r + MR <= nRows; r += MR)
            microAvx512<MT, MR, WL>(w + r * ldw, ldw, x, ldx, k0, k1, n, part + r * 16, nRows,
                                    y + r, ldy, rowsAfter(w, ldw, r, MR, stream));
        if constexpr (MR > 4)
            for (; r + 4 <= nRows; r += 4)
                microAvx512<MT, 4, WL>(w + r * ldw, ldw, x, ldx, k0, k1, n, part + r * 16, nRows,
                                       y + r, ldy, rowsAfter(w, ldw, r, 4, stream));
        for (; r < nRows; ++r)
            microAvx512<MT, 1, WL>(w + r * ldw, ldw, x, ldx, k0, k1, n, part + r * 16, nRows, y + r,
                                   ldy, rowsAfter(w, ldw, r, 1, stream));
    }
}

// Blocks of 6 tokens (24 accumulators per 4 rows: 10 loads per 24 multiply-adds), the remaining
// 1..5 tokens in one narrower block. From 6 tokens on, long float rows are cut into input blocks
// (see kAvx512KBlock) within row blocks; fewer tokens (decode) read each row in one pass.
template <class WL>
LCW_AVX512 void gemmAvx512(const typename WL::T* w, int64_t ldw, int64_t nRows, const float* x,
                           int64_t ldx, int64_t nTok, float* y, int64_t ldy, int64_t n) {
    constexpr int kTok = 6;
    // Only float rows gain from it (measured); 16-bit rows are half the bytes to stream.
    const bool blocked = std::is_same_v<typename WL::T, float> && nTok >= kTok &&
                         n > kAvx512KBlock + kAvx512KBlock / 2;
    const int64_t kc = blocked ? kAvx512KBlock : std::max<int64_t>(n, 16);
    const int64_t rowBlock = blocked ? kAvx512RowBlock : std::max<int64_t>(nRows, 1);
    const bool stream = nTok <= kStreamTokens;
    thread_local FloatBuffer part;
    if (blocked && part.size() < size_t(kTok * kAvx512RowBlock * 16))
        part.resize(size_t(kTok * kAvx512RowBlock * 16));
    for (int64_t r0 = 0; r0 < nRows; r0 += rowBlock) {
        const int64_t rows = std::min(rowBlock, nRows - r0);
        const auto* wb = w + r0 * ldw;
        int64_t t = 0;
        for (; t + kTok <= nTok; t += kTok)
            rowsAvx512<kTok, WL>(wb, ldw, rows, x + t * ldx, ldx, y + t * ldy + r0, ldy, n, kc,
                                 part.data(), false);
        const float* xt = x + t * ldx;
        float* yt = y + t * ldy + r0;
        float* p = part.data();
        switch (nTok - t) {
        case 1:
            rowsAvx512<1, WL>(wb, ldw, rows, xt, ldx, yt, ldy, n, kc, p, stream);
            break;
        case 2:
            rowsAvx512<2, WL>(wb, ldw, rows, xt, ldx, yt, ldy, n, kc, p, stream);
            break;
        case 3:
            rowsAvx512<3, WL>(wb, ldw, rows, xt, ldx, yt, ldy, n, kc, p, stream);
            break;
        case 4:
            rowsAvx512<4, WL>(wb, ldw, rows, xt, ldx, yt, ldy, n, kc, p, stream);
            break;
        case 5:
            rowsAvx512<5, WL>(wb, ldw, rows, xt, ldx, yt, ldy, n, kc, p, stream);
            break;
        default:
            break;
        }
    }
}

// C = A * B (row-major): broadcast one A element, multiply NV 16-wide segments of a B row; the last
// segment may be partial (masked). Every C element is a plain k-ordered chain of multiply-adds.
template <int MR, int NV>
LCW_AVX512 inline void microNNAvx512(const float* a, int64_t lda, const float* b, int64_t ldb,
                                     float* c, int64_t ldc, int64_t K, __mmask16 lastMask) {
    __m512 acc[MR][NV];
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        __m512 bv[NV];
        for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
        bv[NV - 1] = _mm512_maskz_loadu_ps(lastMask, b + k * ldb + 16 * (NV - 1));
        for (int r = 0; r < MR; ++r) {
            const __m512 av = _mm512_set1_ps(a[r * lda + k]);
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; ++r) {
        for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
        _mm512_mask_storeu_ps(c + r * ldc + 16 * (NV - 1), lastMask, acc[r][NV - 1]);
    }
}

template <int MR>
LCW_AVX512 void rowsNNAvx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                             int64_t ldc, int64_t N, int64_t K) {
    int64_t j = 0;
    for (; j + 64 <= N; j += 64)
        microNNAvx512<MR, 4>(a, lda, b + j, ldb, c + j, ldc, K, laneMask16(16));
    if (j == N) return;
    const int64_t rest = N - j; // 1..63
    const __mmask16 m = laneMask16(rest - 16 * ((rest - 1) / 16));
    switch ((rest + 15) / 16) {
    case 1:
        return microNNAvx512<MR, 1>(a, lda, b + j, ldb, c + j, ldc, K, m);
    case 2:
        return microNNAvx512<MR, 2>(a, lda, b + j, ldb, c + j, ldc, K, m);
    case 3:
        return microNNAvx512<MR, 3>(a, lda, b + j, ldb, c + j, ldc, K, m);
    default:
        return microNNAvx512<MR, 4>(a, lda, b + j, ldb, c + j, ldc, K, m);
    }
}

LCW_AVX512 void gemmNNAvx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                             int64_t ldc, int64_t M, int64_t N, int64_t K) {
    int64_t i = 0;
    for (; i + 6 <= M; i += 6) rowsNNAvx512<6>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, N, K);
    for (; i + 2 <= M; i += 2) rowsNNAvx512<2>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, N, K);
    if (i < M) rowsNNAvx512<1>(a + i * lda, lda, b, ldb, c + i * ldc, ldc, N, K);
}

// One row of F16 or BF16 values (any alignment) to floats.
template <bool BF16> LCW_AVX512 void halfRowAvx512(const std::byte* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, BF16 ? loadBF16x16(src + 2 * i) : loadF16x16(src + 2 * i));
    if (i < n) {
        const __mmask16 m = laneMask16(n - i);
        _mm512_mask_storeu_ps(dst + i, m,
                              BF16 ? loadBF16x16(src + 2 * i, m) : loadF16x16(src + 2 * i, m));
    }
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

} // namespace

namespace detail {
const CpuFeatures& cpu() {
    static const CpuFeatures f = [] {
        CpuFeatures c;
#if LCW_X86
        __builtin_cpu_init();
        // F16C from CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports has no "f16c").
        unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
        const bool f16c = __get_cpuid(1, &a1, &b1, &c1, &d1) && (c1 & (1u << 29));
        c.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
        c.avx512 = c.avx2 && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512dq");
        c.avx512vnni = c.avx512 && __builtin_cpu_supports("avx512vnni");
        c.avx512bf16 = c.avx512 && __builtin_cpu_supports("avx512bf16");
        // GCC 12's __builtin_cpu_supports has no "avxvnni": CPUID leaf 7 sub-leaf 1, EAX bit 4.
        unsigned a = 0, b = 0, cc = 0, d = 0;
        if (__get_cpuid_count(7, 1, &a, &b, &cc, &d)) c.avxvnni = c.avx2 && (a & (1u << 4));
#endif
        return c;
    }();
    return f;
}

void gemmNT16(bool bf16, const uint16_t* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx,
              int64_t nTok, float* y, int64_t ldy, int64_t n) {
    if (nRows <= 0 || nTok <= 0) return;
#if LCW_X86
    switch (activeIsa()) {
    case Isa::Avx512:
        return bf16 ? gemmAvx512<WBF16>(w, ldw, nRows, x, ldx, nTok, y, ldy, n)
                    : gemmAvx512<WF16>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
    case Isa::Avx2:
        return bf16 ? gemmAvx2<WBF16>(w, ldw, nRows, x, ldx, nTok, y, ldy, n)
                    : gemmAvx2<WF16>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
    default:
        break;
    }
#endif
    if (bf16)
        gemmGeneric<SBF16>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
    else
        gemmGeneric<SF16>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
}
} // namespace detail

std::optional<Isa> isaFromName(std::string_view name) {
    if (name == "auto") return Isa::Auto;
    if (name == "portable" || name == "generic") return Isa::Generic;
    if (name == "avx2") return Isa::Avx2;
    if (name == "avx512") return Isa::Avx512;
    return std::nullopt;
}

bool isaSupported(Isa isa) {
    switch (isa) {
    case Isa::Auto:
    case Isa::Generic:
        return true;
    case Isa::Avx2:
        return cpu().avx2;
    case Isa::Avx512:
        return cpu().avx512;
    }
    return false;
}

void setIsa(Isa isa) {
    if (!isaSupported(isa))
        throw UnsupportedError(std::string("this CPU does not support the ") + isaName(isa) +
                               " kernels");
    g_forced.store(isa);
}

Isa activeIsa() {
    const Isa f = g_forced.load();
    if (f != Isa::Auto) return f;
    // LCW_ISA=portable|avx2|avx512 in the environment caps the kernels (debugging, comparisons,
    // tests of every path on one CPU); a level the CPU lacks falls back to the best it has.
    static const Isa best = [] {
        Isa b = cpu().avx512 ? Isa::Avx512 : cpu().avx2 ? Isa::Avx2 : Isa::Generic;
        if (const char* e = std::getenv("LCW_ISA")) {
            const auto want = isaFromName(e);
            if (want && *want != Isa::Auto && int(*want) < int(b)) b = *want;
        }
        return b;
    }();
    return best;
}

const char* isaName(Isa isa) {
    switch (isa) {
    case Isa::Auto:
        return "auto";
    case Isa::Generic:
        return "portable";
    case Isa::Avx2:
        return "avx2";
    case Isa::Avx512:
        return "avx512";
    }
    return "?";
}

std::vector<Isa> supportedIsas() {
    std::vector<Isa> v{Isa::Generic};
    if (cpu().avx2) v.push_back(Isa::Avx2);
    if (cpu().avx512) v.push_back(Isa::Avx512);
    return v;
}

void gemmNT(const float* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx, int64_t nTok,
            float* y, int64_t ldy, int64_t n) {
    if (nRows <= 0 || nTok <= 0) return;
#if LCW_X86
    switch (activeIsa()) {
    case Isa::Avx512:
        return gemmAvx512<WF32>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
    case Isa::Avx2:
        return gemmAvx2<WF32>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
    default:
        break;
    }
#endif
    gemmGeneric<SF32>(w, ldw, nRows, x, ldx, nTok, y, ldy, n);
}

void gemmNN(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
            int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) return;
#if LCW_X86
    switch (activeIsa()) {
    case Isa::Avx512:
        return gemmNNAvx512(a, lda, b, ldb, c, ldc, M, N, K);
    case Isa::Avx2:
        return gemmNNAvx2(a, lda, b, ldb, c, ldc, M, N, K);
    default:
        break;
    }
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
        if (activeIsa() == Isa::Avx512) {
            for (int64_t r = 0; r < nRows; ++r) halfRowAvx512<true>(w.row(r0 + r), dst + r * n, n);
            return;
        }
        if (activeIsa() != Isa::Generic && (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
            for (int64_t r = 0; r < nRows; ++r)
                bf16RowAvx2(reinterpret_cast<const uint16_t*>(w.row(r0 + r)), dst + r * n, n);
            return;
        }
#endif
        for (int64_t r = 0; r < nRows; ++r) bf16Row(w.row(r0 + r), dst + r * n, n);
        return;
    case DType::F16:
#if LCW_X86
        if (activeIsa() == Isa::Avx512) {
            for (int64_t r = 0; r < nRows; ++r) halfRowAvx512<false>(w.row(r0 + r), dst + r * n, n);
            return;
        }
        if (activeIsa() != Isa::Generic && (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
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
    // omp: nothrow (element-wise arithmetic)
#pragma omp parallel for num_threads(nt) if (n >= 65536) schedule(static)
    for (int64_t i = 0; i < n; ++i) x[i] = act1(a, x[i]);
}

void activateGated(Activation a, float* g, const float* u, int64_t n, int threads) {
    const int nt = resolveThreads(threads);
    if (a == Activation::Silu) {
        // omp: nothrow (element-wise arithmetic)
#pragma omp parallel for num_threads(nt) if (n >= 65536) schedule(static)
        for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        return;
    }
    // omp: nothrow (element-wise arithmetic)
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

double logSoftmaxAt(const float* logits, int64_t vocab, int64_t target) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - double(mx));
    return double(logits[target]) - double(mx) - std::log(sum);
}

} // namespace lcw::kernels
