// BF16 weights times BF16 activations with AVX-512 BF16 (vdpbf16ps): the product llama.cpp runs
// for BF16 weights (its activations are converted to bf16 too). Each vdpbf16ps multiplies 32
// pairs of bf16 exactly in fp32 and adds them to 16 fp32 lanes: twice the multiply-adds of an
// fp32 FMA, with no conversion of the weights. Used by linearBatch for BF16 weights unless the
// call asks for exact (float32) activations; every token count goes through it, so a decode step
// gives the same outputs as the same token inside a prefill.
#include "core/runtime/cpu/simd.h"

#include <algorithm>
#include <cstring>

namespace lcw::kernels::detail {

#if LCW_X86
namespace {

/// MR rows x MT tokens over the whole row length n: per (row, token) 16 fp32 lanes accumulated
/// over k in order, then one fixed-order lane sum (hsum16), so an output does not depend on the
/// micro-tile it was computed in. `next` (or null): the rows after these (prefetchStreams).
template <int MR, int MT>
LCW_AVX512BF16 void bf16Micro(const uint16_t* w, int64_t ldw, const uint16_t* xb, int64_t ldb,
                              int64_t n, float* y, int64_t ldy, const char* next) {
    __m512 acc[MR][MT];
    for (int r = 0; r < MR; ++r)
        for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m512bh wv[MR];
        prefetchStreams<2, MR>(reinterpret_cast<const char*>(w), next, ldw, n, k);
        for (int r = 0; r < MR; ++r) wv[r] = __m512bh(_mm512_loadu_si512(w + r * ldw + k));
        for (int t = 0; t < MT; ++t) {
            const __m512bh xv = __m512bh(_mm512_loadu_si512(xb + t * ldb + k));
            for (int r = 0; r < MR; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
        }
    }
    if (k < n) { // the row's last n - k < 32 values; xb is zero-padded to ldb
        const __mmask32 m = __mmask32((1ULL << (n - k)) - 1);
        __m512bh wv[MR];
        for (int r = 0; r < MR; ++r) wv[r] = __m512bh(_mm512_maskz_loadu_epi16(m, w + r * ldw + k));
        for (int t = 0; t < MT; ++t) {
            const __m512bh xv = __m512bh(_mm512_loadu_si512(xb + t * ldb + k));
            for (int r = 0; r < MR; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
        }
    }
    for (int t = 0; t < MT; ++t)
        for (int r = 0; r < MR; ++r) y[t * ldy + r] = hsum16(acc[r][t]);
}

using MicroFn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, float*,
                         int64_t, const char*);
template <int MR>
constexpr MicroFn kByTokens[4] = {bf16Micro<MR, 1>, bf16Micro<MR, 2>, bf16Micro<MR, 3>,
                                  bf16Micro<MR, 4>};
constexpr const MicroFn* kMicro[4] = {kByTokens<1>, kByTokens<2>, kByTokens<3>, kByTokens<4>};

LCW_AVX512BF16 void toBf16Avx512(const float* x, int64_t ldx, int64_t nTok, int64_t n,
                                 uint16_t* dst, int64_t ldd) {
    for (int64_t t = 0; t < nTok; ++t) {
        const float* s = x + t * ldx;
        uint16_t* d = dst + t * ldd;
        int64_t k = 0;
        for (; k + 32 <= n; k += 32) {
            const __m512bh v =
                _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + k + 16), _mm512_loadu_ps(s + k));
            _mm512_storeu_si512(d + k, __m512i(v));
        }
        if (k < n) {
            const int64_t left = n - k;
            const __mmask16 lo = __mmask16(left >= 16 ? 0xFFFF : (1u << left) - 1);
            const __mmask16 hi = __mmask16(left > 16 ? (1u << (left - 16)) - 1 : 0);
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, s + k + 16),
                                                   _mm512_maskz_loadu_ps(lo, s + k));
            _mm512_storeu_si512(d + k, __m512i(v)); // zeros up to k + 32 <= ldd
            k += 32;
        }
        for (; k < ldd; ++k) d[k] = 0;
    }
}

} // namespace
#endif

bool bf16DotAvailable() {
#if LCW_X86
    return cpu().avx512bf16 && activeIsa() == Isa::Avx512;
#else
    return false;
#endif
}

int64_t bf16RowStride(int64_t n) {
    return (n + 31) / 32 * 32;
}

void toBf16Rows(const float* x, int64_t ldx, int64_t nTok, int64_t n, uint16_t* dst) {
#if LCW_X86
    toBf16Avx512(x, ldx, nTok, n, dst, bf16RowStride(n));
#else
    (void)x, (void)ldx, (void)nTok, (void)n, (void)dst;
#endif
}

void gemmBf16Dot(const uint16_t* w, int64_t ldw, int64_t nRows, const uint16_t* xb, int64_t nTok,
                 float* y, int64_t ldy, int64_t n) {
#if LCW_X86
    const int64_t ldb = bf16RowStride(n);
    // One token (decode): the rows as decodeSplit's parts, each one sequential stream.
    if (nTok == 1)
        return decodeSplit(
            w, ldw, nRows, y,
            [&](const uint16_t* wp, int64_t ldp, float* out, const char* next) {
                bf16Micro<kDecodeParts, 1>(wp, ldp, xb, ldb, n, out, 1, next);
            },
            [&](const uint16_t* wr, float* yr, const char* next) {
                bf16Micro<1, 1>(wr, ldw, xb, ldb, n, yr, 1, next);
            });
    // Token groups of 4 outside, rows inside: the tile's rows (linearBatch keeps a tile within
    // ~256 KB) stay in L2 while each group of tokens passes over them. The first group reads
    // them from memory, fetching each row ahead (prefetchStreams).
    for (int64_t t0 = 0; t0 < nTok; t0 += 4) {
        const int mt = int(std::min<int64_t>(4, nTok - t0));
        for (int64_t r0 = 0; r0 < nRows; r0 += 4) {
            const int mr = int(std::min<int64_t>(4, nRows - r0));
            kMicro[mr - 1][mt - 1](w + r0 * ldw, ldw, xb + t0 * ldb, ldb, n, y + t0 * ldy + r0, ldy,
                                   rowsAfter(w, ldw, r0, mr, t0 == 0));
        }
    }
#else
    (void)w, (void)ldw, (void)nRows, (void)xb, (void)nTok, (void)y, (void)ldy, (void)n;
#endif
}

} // namespace lcw::kernels::detail
