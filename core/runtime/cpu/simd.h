#pragma once
/// \file
/// Internal to core/runtime's kernels: CPU feature detection, the target attributes of the
/// instruction-set paths and small vector helpers shared by the kernel files (kernels.cpp: float
/// products, norms, RoPE; linear.cpp: the linear-layer driver; attention.cpp; qdot_*.cpp: GGUF
/// block dot products; packed_*.cpp: lcw's packed formats).
#include "core/runtime/cpu/kernels.h"

#include <omp.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
// GCC 12 reports the intrinsics' deliberately undefined pass-through operands
// (_mm512_undefined_ps) as uninitialised once they are inlined into target-attributed functions.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__) // clang has no -Wmaybe-uninitialized (and warns about the pragma)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
#define LCW_X86 1
#else
#define LCW_X86 0
#endif

#if LCW_X86
/// AVX2 level: AVX2 + FMA + F16C.
#define LCW_AVX2 __attribute__((target("avx2,fma,f16c")))
/// AVX-512 level: F, BW, VL, DQ (+ the AVX2 level's FMA/F16C).
#define LCW_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
/// AVX-512 with VNNI (vpdpbusd); only inside code that checked cpu().avx512vnni.
#define LCW_AVX512VNNI                                                                             \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
/// AVX-512 BF16 (vdpbf16ps); only inside code that checked cpu().avx512bf16.
#define LCW_AVX512BF16                                                                             \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
/// AVX-VNNI (VEX-encoded vpdpbusd on 256-bit vectors); only after checking cpu().avxvnni.
#define LCW_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#endif

namespace lcw::kernels::detail {

/// What the CPU supports (read once).
struct CpuFeatures {
    bool avx2 = false;       ///< AVX2 + FMA + F16C
    bool avx512 = false;     ///< AVX-512 F + BW + VL + DQ
    bool avx512vnni = false; ///< AVX-512 VNNI
    bool avxvnni = false;    ///< AVX-VNNI (256-bit)
    bool avx512bf16 = false; ///< AVX-512 BF16
};
const CpuFeatures& cpu();

/// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 18;

inline int resolveThreads(int threads) {
    return threads > 0 ? threads : omp_get_max_threads();
}

/// Fused F16 / BF16 product for few tokens (AVX2 level and up): y[t, r] = x[t] . W[r] with the
/// weights converted inside the product (kernels.cpp).
void gemmNT16(bool bf16, const uint16_t* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx,
              int64_t nTok, float* y, int64_t ldy, int64_t n);

/// BF16 weights times bf16-rounded activations (bf16_dot.cpp, AVX-512 BF16 vdpbf16ps: pairs of
/// bf16 products summed into fp32 lanes): what llama.cpp computes for BF16 weights. Available
/// when the CPU has AVX-512 BF16 and the active level is AVX-512.
bool bf16DotAvailable();
/// Row stride (elements) of toBf16Rows' output for rows of n values: n rounded up to 32.
int64_t bf16RowStride(int64_t n);
/// dst[t * bf16RowStride(n) + i] = bf16(x[t * ldx + i]) (round to nearest even), zero-padded.
void toBf16Rows(const float* x, int64_t ldx, int64_t nTok, int64_t n, uint16_t* dst);
/// y[t * ldy + r] = Σ_i W[r, i] · xb[t, i] over rows of n values (xb from toBf16Rows); each
/// output is accumulated in the same order whatever nRows and nTok (single-threaded).
void gemmBf16Dot(const uint16_t* w, int64_t ldw, int64_t nRows, const uint16_t* xb, int64_t nTok,
                 float* y, int64_t ldy, int64_t n);

#if LCW_X86
/// Decode (up to this many tokens) of float and 16-bit rows reads every weight once: streams of a
/// few KB per row (one 4 KB page per row for 2048 F16 values), over before the hardware
/// prefetchers ramp up on them. Each of a micro-kernel's MR row streams is fetched kStreamAhead
/// bytes ahead and runs on from the end of row r into row r of the next MR rows (`next`), so the
/// prefetch does not stop at every row end (prefetches never fault). TinyLlama-1.1B decode, 2
/// threads, interleaved runs against 2 KB ahead within each row (16-bit) or no prefetch (F32):
/// BF16 GGUF 18.5 -> 21.5 tok/s; F16 from a safetensors folder (4 KB pages) 16 -> 24.6 in a
/// fast phase of this VM and equal in a slow one; F32 GGUF 11.1 -> 11.4 (noise). One token
/// goes further (decodeSplit below).
constexpr int64_t kStreamTokens = 3;
template <int64_t kSize> constexpr int64_t kStreamAhead = kSize == 2 ? 2048 : 8192;

/// prefetchStreams' `next` for a micro-kernel over rows [r, r + rows): the rows after them, or
/// null when the call does not stream its weights from memory.
template <class T>
inline const char* rowsAfter(const T* w, int64_t ldw, int64_t r, int64_t rows, bool stream = true) {
    return stream ? reinterpret_cast<const char*>(w + (r + rows) * ldw) : nullptr;
}

/// One token (decode) over nRows rows, ldw elements apart: the rows fall into kDecodeParts
/// contiguous parts read side by side. Step i computes row i of every part with `micro` (a
/// micro-kernel of kDecodeParts rows whose row stride is one part, its outputs to out[]; `next`:
/// row i + 1 of the first part, for prefetchStreams), so each part is one sequential stream of
/// whole rows; the last nRows % kDecodeParts rows go to `single` one at a time. Every output is
/// computed as in any other micro-tile: the same bits. Against kDecodeParts (or 8) adjacent rows
/// side by side — streams one row apart that jump ahead by a whole block at every step — 2
/// threads, interleaved: TinyLlama-1.1B F16 GGUF 18 -> 22-23 tok/s (AVX2: 19 -> 30), F32 16.5 ->
/// 18, BF16 (vdpbf16ps) 23 -> 24-35; Llama-3-8B F16 3.7-3.8 -> 4.3-4.5 (one row at a time, one
/// stream but one multiply-add chain, 3.0-4.3).
constexpr int kDecodeParts = 4;

template <class T, class Micro, class Single>
inline void decodeSplit(const T* w, int64_t ldw, int64_t nRows, float* y, Micro micro,
                        Single single) {
    const int64_t part = nRows / kDecodeParts;
    float out[kDecodeParts];
    for (int64_t i = 0; i < part; ++i) {
        micro(w + i * ldw, part * ldw, out, rowsAfter(w, ldw, i, 1));
        for (int j = 0; j < kDecodeParts; ++j) y[i + j * part] = out[j];
    }
    for (int64_t r = kDecodeParts * part; r < nRows; ++r)
        single(w + r * ldw, y + r, rowsAfter(w, ldw, r, 1));
}

/// Called at each step k (elements of kSize bytes, rows of n elements ldw apart) of a product
/// over MR rows from w: fetches each row's stream kStreamAhead bytes ahead (none if `next`, the
/// rows after these, is null).
template <int64_t kSize, int MR>
inline void prefetchStreams(const char* w, const char* next, int64_t ldw, int64_t n, int64_t k) {
    if (!next || (k * kSize) % 64 != 0) return; // once per 64-byte line of a row
    const int64_t off = k * kSize + kStreamAhead<kSize>, rowBytes = n * kSize;
    const char* base = off < rowBytes ? w + off : next + (off - rowBytes);
    for (int r = 0; r < MR; ++r) _mm_prefetch(base + r * ldw * kSize, _MM_HINT_T0);
}

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

/// Sum of 16 lanes in a fixed order: the two 8-lane halves added lane-wise, then hsum8. Every
/// AVX-512 float product reduces with it, so one output element gets the same bits whatever
/// kernel computed it.
LCW_AVX512 inline float hsum16(__m512 v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm512_extractf32x8_ps(v, 1);
    return hsum8(_mm256_add_ps(lo, hi));
}

/// Mask of the first `rem` (0..16) lanes of a 16-lane vector.
inline __mmask16 laneMask16(int64_t rem) {
    return __mmask16((1u << rem) - 1u);
}

/// 16 halves (F16 or BF16, any alignment) as 16 floats; lanes outside `m` read nothing and are 0.
LCW_AVX512 inline __m512 loadF16x16(const void* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
}
LCW_AVX512 inline __m512 loadF16x16(const void* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
LCW_AVX512 inline __m512 bf16x16ToF32(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
LCW_AVX512 inline __m512 loadBF16x16(const void* p) {
    return bf16x16ToF32(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
}
LCW_AVX512 inline __m512 loadBF16x16(const void* p, __mmask16 m) {
    return bf16x16ToF32(_mm256_maskz_loadu_epi16(m, p));
}

alignas(32) inline constexpr int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                      0,  0,  0,  0,  0,  0,  0,  0};

// Weight loaders: 8 (load, loadTail) or 16 (load16) consecutive weights as floats. F16 and BF16
// convert exactly, so a product over converted rows and one over the raw rows give identical
// results.
struct WF32 {
    using T = float;
    LCW_AVX2 static __m256 load(const T* p) { return _mm256_loadu_ps(p); }
    LCW_AVX2 static __m256 loadTail(const T* p, int64_t, __m256i mask) {
        return _mm256_maskload_ps(p, mask);
    }
    LCW_AVX512 static __m512 load16(const T* p) { return _mm512_loadu_ps(p); }
    LCW_AVX512 static __m512 load16(const T* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
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
    LCW_AVX512 static __m512 load16(const T* p) { return loadF16x16(p); }
    LCW_AVX512 static __m512 load16(const T* p, __mmask16 m) { return loadF16x16(p, m); }
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
    LCW_AVX512 static __m512 load16(const T* p) { return loadBF16x16(p); }
    LCW_AVX512 static __m512 load16(const T* p, __mmask16 m) { return loadBF16x16(p, m); }
};
#endif

} // namespace lcw::kernels::detail
