// Attention kernels: causal softmax(q.k * scale) v over a float32 or F16 KV cache, with sliding
// windows, soft-capping and ALiBi (kernels.h).
//
// Flash-style: the keys are visited in chunks of kChunk positions (chunk c holds the absolute
// positions [c*kChunk, (c+1)*kChunk)), and each query row keeps a running softmax state (max m,
// sum l, unnormalised output acc) instead of a row of scores over the whole context, so memory is
// O(chunk), never O(context) or O(context^2). The query heads that share a KV head are processed
// together (a "row" is one query token of one head of the group), so a K/V chunk is read, and K
// transposed, once per group of rows. Chunks are grouped into super-chunks of kSuperChunks; a
// query's state is the sequential merge, in key order, of its super-chunk states, each the
// sequential merge of its chunk states. Decode (few rows) splits the super-chunks over the
// threads and merges their states afterwards (flash-decoding).
//
// Every number a query's output depends on is computed the same way whatever the batch, the
// query's place in it and the thread count: chunk boundaries are absolute positions, the keys a
// query does not see enter as exact zeros (or not at all), and merges happen in key order. So a
// token decoded alone gets bit-identical output to the same token in a batched prefill, on each
// instruction-set level (the levels differ from each other in the last bits: exp, FMA).
//
// An F16 cache is read by the same kernels with its values widened as they are loaded (K in the
// transposition, V in the weighted sum); widening is exact, so an F16 cache gives the bits of
// the f32 kernels run on the widened cache.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/parallel.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/simd.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace lcw::kernels {

using namespace detail;

namespace {

constexpr int64_t kChunk = 128;                   // keys per chunk (a multiple of 16)
constexpr int64_t kSuperChunks = 4;               // chunks per super-chunk
constexpr int64_t kSuper = kChunk * kSuperChunks; // keys per super-chunk
constexpr int kGroup = 8;                         // rows per register-blocked row group
constexpr int64_t kRowTarget = 256; // rows per prefill task (tokens x heads): K/V chunks reused
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kHalfMax = 65504.0f; // the largest finite F16 value

using Half = uint16_t; // an IEEE binary16 value

std::atomic<size_t> g_scratchPeak{0};

void notePeak(size_t bytes) {
    size_t cur = g_scratchPeak.load(std::memory_order_relaxed);
    while (bytes > cur && !g_scratchPeak.compare_exchange_weak(cur, bytes)) {
    }
}

/// How a raw score s = q.k of one row becomes its softmax input.
struct RowScore {
    float scale = 1;
    float softcap = 0; ///< 0: off
    float slope = 0;   ///< ALiBi slope
    bool plain = true; ///< no ALiBi, no softcap: the input is s * scale
    bool alibiBefore = false;
    int64_t relBase = 0; ///< chunk start position minus the query position
};

/// The non-plain softmax input of one score at key - query = rel (portable reference form).
inline float transformScore(float s, float rel, const RowScore& rs) {
    float x = rs.alibiBefore ? (s + rs.slope * rel) * rs.scale : s * rs.scale + rs.slope * rel;
    if (rs.softcap > 0) x = rs.softcap * std::tanh(x / rs.softcap);
    return x;
}

/// The instruction-set kernels of one chunk. Layouts: kt [hd][kChunk] (K transposed), s [row]
/// [kChunk] (scores, then probabilities), acc [row][hd]. The K and V kernels come in two forms,
/// for a float32 and for an F16 cache (`H` suffix).
struct Kern {
    /// kt[d][j] = k[j*ldk + d] for j < nk; zero for nk <= j < nk rounded up to 16. As it reads a
    /// line of K, it prefetches the same line of the next chunk's K and of this chunk's V (v, same
    /// row stride): the rows of a KV head are strided in the cache, which the hardware
    /// prefetchers follow poorly.
    void (*transpose)(const float* k, const float* v, int64_t ldk, int64_t nk, int64_t hd,
                      float* kt);
    void (*transposeH)(const Half* k, const Half* v, int64_t ldk, int64_t nk, int64_t hd,
                       float* kt);
    /// s[r][c] = q[r] . kt[:, c] for r < nr (<= kGroup), c in [c0, c1) (multiples of 16), each
    /// a sequential sum over d.
    void (*scores)(const float* const* q, int nr, const float* kt, int64_t hd, int64_t c0,
                   int64_t c1, float* s);
    /// One row: the softmax inputs of columns [a, b) (a < b), their maximum mc and
    /// s[c] = exp(input - mc) there, zero on the rest of [c0, c1); returns mc, *sum = the sum.
    float (*expRow)(float* s, int64_t c0, int64_t c1, int64_t a, int64_t b, const RowScore& rs,
                    float* sum);
    /// acc[r] = acc[r] * fa[r] + (sum over j in [j0, j1) of s[r][j] v[j]) * fb[r], r < nr.
    void (*pv)(const float* s, int nr, const float* v, int64_t ldv, int64_t hd, int64_t j0,
               int64_t j1, const float* fa, const float* fb, float* acc);
    /// Null where the level has none (portable: its pv would widen V once per row): V chunks
    /// are then always widened by widenV.
    void (*pvH)(const float* s, int nr, const Half* v, int64_t ldv, int64_t hd, int64_t j0,
                int64_t j1, const float* fa, const float* fb, float* acc);
    /// vt[j][d] = v[j*ldv + d] widened, for j < nk, d < hd: a chunk of an F16 V that more than
    /// one row group reads (prefill) is widened once instead of by every group's pvH.
    void (*widenV)(const Half* v, int64_t ldv, int64_t nk, int64_t hd, float* vt);

    /// Whether `rows` rows read V of an F16 cache through widenV rather than pvH.
    bool widensV(int64_t rows) const { return rows > kGroup || pvH == nullptr; }

    void transposeOf(const float* k, const float* v, int64_t ldk, int64_t nk, int64_t hd,
                     float* kt) const {
        transpose(k, v, ldk, nk, hd, kt);
    }
    void transposeOf(const Half* k, const Half* v, int64_t ldk, int64_t nk, int64_t hd,
                     float* kt) const {
        transposeH(k, v, ldk, nk, hd, kt);
    }
    void pvOf(const float* s, int nr, const float* v, int64_t ldv, int64_t hd, int64_t j0,
              int64_t j1, const float* fa, const float* fb, float* acc) const {
        pv(s, nr, v, ldv, hd, j0, j1, fa, fb, acc);
    }
    void pvOf(const float* s, int nr, const Half* v, int64_t ldv, int64_t hd, int64_t j0,
              int64_t j1, const float* fa, const float* fb, float* acc) const {
        pvH(s, nr, v, ldv, hd, j0, j1, fa, fb, acc);
    }
};

inline int64_t roundUp16(int64_t x) {
    return (x + 15) & ~int64_t(15);
}

// ---------------------------------------------------------------------------------------------
// Portable kernels (the reference the vector levels are tested against).

inline float widen(float x) {
    return x;
}
inline float widen(Half x) {
    return f16ToF32(x);
}

template <class T>
void transposeGeneric(const T* k, const T* v, int64_t ldk, int64_t nk, int64_t hd, float* kt) {
    const int64_t nkp = roundUp16(nk);
    for (int64_t j = 0; j < nk; ++j) {
        for (int64_t d = 0; d < hd; d += 16) {
            __builtin_prefetch(k + (j + kChunk) * ldk + d); // prefetches never fault
            __builtin_prefetch(v + j * ldk + d);
        }
        for (int64_t d = 0; d < hd; ++d) kt[d * kChunk + j] = widen(k[j * ldk + d]);
    }
    for (int64_t d = 0; d < hd; ++d)
        for (int64_t j = nk; j < nkp; ++j) kt[d * kChunk + j] = 0.0f;
}

void scoresGeneric(const float* const* q, int nr, const float* kt, int64_t hd, int64_t c0,
                   int64_t c1, float* s) {
    for (int r = 0; r < nr; ++r) {
        float acc[kChunk] = {};
        for (int64_t d = 0; d < hd; ++d) {
            const float qd = q[r][d];
            const float* kr = kt + d * kChunk;
            for (int64_t c = c0; c < c1; ++c) acc[c] += qd * kr[c];
        }
        std::copy(acc + c0, acc + c1, s + r * kChunk + c0);
    }
}

float expRowGeneric(float* s, int64_t c0, int64_t c1, int64_t a, int64_t b, const RowScore& rs,
                    float* sum) {
    if (!rs.plain)
        for (int64_t j = a; j < b; ++j) s[j] = transformScore(s[j], float(rs.relBase + j), rs);
    float mx = kNegInf;
    for (int64_t j = a; j < b; ++j) mx = std::max(mx, s[j]);
    const float mc = rs.plain ? mx * rs.scale : mx; // scale > 0 keeps the argmax
    float acc = 0;
    for (int64_t j = a; j < b; ++j) {
        const float e = std::exp(rs.plain ? s[j] * rs.scale - mc : s[j] - mc);
        s[j] = e;
        acc += e;
    }
    std::fill(s + c0, s + a, 0.0f);
    std::fill(s + b, s + c1, 0.0f);
    *sum = acc;
    return mc;
}

void pvGeneric(const float* s, int nr, const float* v, int64_t ldv, int64_t hd, int64_t j0,
               int64_t j1, const float* fa, const float* fb, float* acc) {
    constexpr int64_t DB = 64;
    for (int r = 0; r < nr; ++r)
        for (int64_t d0 = 0; d0 < hd; d0 += DB) {
            const int64_t nd = std::min(DB, hd - d0);
            float t[DB] = {};
            for (int64_t j = j0; j < j1; ++j) {
                const float p = s[r * kChunk + j];
                const float* vr = v + j * ldv + d0;
                for (int64_t d = 0; d < nd; ++d) t[d] += p * vr[d];
            }
            float* ar = acc + r * hd + d0;
            for (int64_t d = 0; d < nd; ++d) ar[d] = ar[d] * fa[r] + t[d] * fb[r];
        }
}

void widenVGeneric(const Half* v, int64_t ldv, int64_t nk, int64_t hd, float* vt) {
    for (int64_t j = 0; j < nk; ++j)
        for (int64_t d = 0; d < hd; ++d) vt[j * hd + d] = f16ToF32(v[j * ldv + d]);
}

constexpr Kern kGeneric = {transposeGeneric<float>,
                           transposeGeneric<Half>,
                           scoresGeneric,
                           expRowGeneric,
                           pvGeneric,
                           nullptr,
                           widenVGeneric};

/// Kern::pv for up to 4 rows at a time (Rows[n - 1] handles n rows).
template <class T>
using PvRows = void (*)(const float* s, const T* v, int64_t ldv, int64_t hd, int64_t j0, int64_t j1,
                        const float* fa, const float* fb, float* acc);
template <class T, const PvRows<T>* Rows>
void pvInRowTiles(const float* s, int nr, const T* v, int64_t ldv, int64_t hd, int64_t j0,
                  int64_t j1, const float* fa, const float* fb, float* acc) {
    for (int r = 0; r < nr; r += 4)
        Rows[std::min(4, nr - r) - 1](s + r * kChunk, v, ldv, hd, j0, j1, fa + r, fb + r,
                                      acc + r * hd);
}

#if LCW_X86
// ---------------------------------------------------------------------------------------------
// AVX2 + FMA kernels (8 lanes).

// exp(x) for x <= 88 with ~2 ulp error (results below e^-87 flush to about 1e-38): 2^n * p(r),
// r = x - n ln2, degree-6 polynomial (the classic Cephes expf coefficients).
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

// tanh(x): odd Taylor series through x^15 for |x| < 0.5 (truncation < 2e-9), else
// sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) (no cancellation there).
LCW_AVX2 inline __m256 tanhAvx2(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-929569.0f / 638512875.0f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(21844.0f / 6081075.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1382.0f / 155925.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(62.0f / 2835.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-17.0f / 315.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.0f / 15.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3.0f));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(x, x2), p, x);
    const __m256 e = expAvx2(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0f)));
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 big = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.5f), _CMP_LT_OQ));
}

LCW_AVX2 inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 0x55));
    return _mm_cvtss_f32(m);
}

/// Lanes j..j+7 inside [a, b).
LCW_AVX2 inline __m256 laneMaskAvx2(int64_t j, int64_t a, int64_t b) {
    const __m256i idx =
        _mm256_add_epi32(_mm256_set1_epi32(int(j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i lo = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(int(a - 1)));
    const __m256i hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(b)), idx);
    return _mm256_castsi256_ps(_mm256_and_si256(lo, hi));
}

/// 8 cache values from p as floats; the Masked forms read the first n (< 8, the rest zero).
LCW_AVX2 inline __m256 load8(const float* p) {
    return _mm256_loadu_ps(p);
}
LCW_AVX2 inline __m256 load8(const Half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LCW_AVX2 inline __m256 load8Masked(const float* p, int64_t n) {
    return _mm256_maskload_ps(
        p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - n)));
}
LCW_AVX2 inline __m256 load8Masked(const Half* p, int64_t n) {
    Half t[8] = {};
    std::memcpy(t, p, size_t(n) * sizeof(Half));
    return load8(t);
}

template <class T>
LCW_AVX2 void transposeAvx2(const T* k, const T* v, int64_t ldk, int64_t nk, int64_t hd,
                            float* kt) {
    const int64_t nkp = roundUp16(nk);
    for (int64_t j0 = 0; j0 < nkp; j0 += 8)
        for (int64_t d0 = 0; d0 < hd; d0 += 8) {
            const int64_t nd = std::min<int64_t>(8, hd - d0);
            __m256 r[8];
            const T* src = k + j0 * ldk + d0;
            if (j0 + 8 <= nk && nd == 8) { // the common case: no branch per row, plain loads
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i) {
                    r[i] = load8(src + i * ldk);
                    if (d0 % 16 == 0) { // once per 64-byte line (prefetches never fault)
                        _mm_prefetch(reinterpret_cast<const char*>(src + (i + kChunk) * ldk),
                                     _MM_HINT_T0);
                        _mm_prefetch(reinterpret_cast<const char*>(v + (j0 + i) * ldk + d0),
                                     _MM_HINT_T0);
                    }
                }
            } else {
                for (int i = 0; i < 8; ++i)
                    r[i] = j0 + i < nk
                               ? (nd == 8 ? load8(src + i * ldk) : load8Masked(src + i * ldk, nd))
                               : _mm256_setzero_ps();
            }
            __m256 t[8], u[8];
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            // u[c] (rows 0-3 in the low half, 4-7 in the high half of u[4 + c]) -> column c
            for (int c = 0; c < 4; ++c) {
                if (c < nd)
                    _mm256_storeu_ps(kt + (d0 + c) * kChunk + j0,
                                     _mm256_permute2f128_ps(u[c], u[4 + c], 0x20));
                if (c + 4 < nd)
                    _mm256_storeu_ps(kt + (d0 + c + 4) * kChunk + j0,
                                     _mm256_permute2f128_ps(u[c], u[4 + c], 0x31));
            }
        }
}

// The unroll pragmas let GCC keep the accumulator arrays in registers (without them it stores
// them to the stack on every iteration).
template <int R>
LCW_AVX2 inline void scoreTileAvx2(const float* const* q, const float* kt, int64_t hd, int64_t c,
                                   float* s) {
    __m256 acc[R][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm256_setzero_ps();
        acc[r][1] = _mm256_setzero_ps();
    }
    for (int64_t d = 0; d < hd; ++d) {
        const __m256 k0 = _mm256_loadu_ps(kt + d * kChunk + c);
        const __m256 k1 = _mm256_loadu_ps(kt + d * kChunk + c + 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m256 b = _mm256_broadcast_ss(q[r] + d);
            acc[r][0] = _mm256_fmadd_ps(b, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, k1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        _mm256_storeu_ps(s + r * kChunk + c, acc[r][0]);
        _mm256_storeu_ps(s + r * kChunk + c + 8, acc[r][1]);
    }
}

LCW_AVX2 void scoresAvx2(const float* const* q, int nr, const float* kt, int64_t hd, int64_t c0,
                         int64_t c1, float* s) {
    // Rows in tiles of 6 (12 accumulators, 2 key vectors, 1 broadcast of 16 registers).
    constexpr decltype(&scoreTileAvx2<1>) tile[] = {scoreTileAvx2<1>, scoreTileAvx2<2>,
                                                    scoreTileAvx2<3>, scoreTileAvx2<4>,
                                                    scoreTileAvx2<5>, scoreTileAvx2<6>};
    for (int r = 0; r < nr; r += 6)
        for (int64_t c = c0; c < c1; c += 16)
            tile[std::min(6, nr - r) - 1](q + r, kt, hd, c, s + r * kChunk);
}

LCW_AVX2 float expRowAvx2(float* s, int64_t c0, int64_t c1, int64_t a, int64_t b,
                          const RowScore& rs, float* sum) {
    const int64_t va = a & ~int64_t(7), vb = (b + 7) & ~int64_t(7);
    const __m256 ninf = _mm256_set1_ps(kNegInf);
    __m256 mx = ninf;
    for (int64_t j = va; j < vb; j += 8) {
        __m256 x = _mm256_loadu_ps(s + j);
        if (!rs.plain) {
            const __m256 rel = _mm256_cvtepi32_ps(_mm256_add_epi32(
                _mm256_set1_epi32(int(rs.relBase + j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
            const __m256 sc = _mm256_set1_ps(rs.scale),
                         sl = _mm256_mul_ps(_mm256_set1_ps(rs.slope), rel);
            x = rs.alibiBefore ? _mm256_mul_ps(_mm256_add_ps(x, sl), sc)
                               : _mm256_add_ps(_mm256_mul_ps(x, sc), sl);
            if (rs.softcap > 0) {
                const __m256 cap = _mm256_set1_ps(rs.softcap);
                x = _mm256_mul_ps(cap, tanhAvx2(_mm256_div_ps(x, cap)));
            }
            _mm256_storeu_ps(s + j, x);
        }
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, x, laneMaskAvx2(j, a, b)));
    }
    const float mc = rs.plain ? hmax8(mx) * rs.scale : hmax8(mx);
    const __m256 vm = _mm256_set1_ps(mc), vs = _mm256_set1_ps(rs.plain ? rs.scale : 1.0f);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = c0; j < c1; j += 8) {
        if (j + 8 <= a || j >= b) {
            _mm256_storeu_ps(s + j, _mm256_setzero_ps());
            continue;
        }
        const __m256 x = _mm256_loadu_ps(s + j);
        const __m256 e = _mm256_and_ps(expAvx2(_mm256_fmsub_ps(x, vs, vm)), laneMaskAvx2(j, a, b));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    *sum = hsum8(acc);
    return mc;
}

// Tail: the last of the ND vectors is partial (masked loads and stores; AMD's masked stores are
// slow, so full tiles avoid them).
template <class T, int R, int ND, bool Tail>
LCW_AVX2 inline void pvTileAvx2(const float* s, const T* v, int64_t ldv, int64_t j0, int64_t j1,
                                int64_t nd, const float* fa, const float* fb, float* acc,
                                int64_t hd) {
    const __m256i m =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - (nd - (ND - 1) * 8)));
    __m256 c[R][ND];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int i = 0; i < ND; ++i) c[r][i] = _mm256_setzero_ps();
    for (int64_t j = j0; j < j1; ++j) {
        const T* vr = v + j * ldv;
        __m256 vv[ND];
#pragma GCC unroll 2
        for (int i = 0; i < ND; ++i)
            vv[i] = Tail && i == ND - 1 ? load8Masked(vr + 8 * i, nd - (ND - 1) * 8)
                                        : load8(vr + 8 * i);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const __m256 p = _mm256_broadcast_ss(s + r * kChunk + j);
#pragma GCC unroll 2
            for (int i = 0; i < ND; ++i) c[r][i] = _mm256_fmadd_ps(p, vv[i], c[r][i]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
        const __m256 a = _mm256_set1_ps(fa[r]), b = _mm256_set1_ps(fb[r]);
        float* ar = acc + r * hd;
#pragma GCC unroll 2
        for (int i = 0; i < ND; ++i) {
            if (Tail && i == ND - 1)
                _mm256_maskstore_ps(ar + 8 * i, m,
                                    _mm256_fmadd_ps(_mm256_maskload_ps(ar + 8 * i, m), a,
                                                    _mm256_mul_ps(c[r][i], b)));
            else
                _mm256_storeu_ps(ar + 8 * i, _mm256_fmadd_ps(_mm256_loadu_ps(ar + 8 * i), a,
                                                             _mm256_mul_ps(c[r][i], b)));
        }
    }
}

template <class T, int R>
LCW_AVX2 void pvRowsAvx2(const float* s, const T* v, int64_t ldv, int64_t hd, int64_t j0,
                         int64_t j1, const float* fa, const float* fb, float* acc) {
    for (int64_t d0 = 0; d0 < hd; d0 += 16) {
        const int64_t nd = std::min<int64_t>(16, hd - d0);
        const T* vd = v + d0;
        float* ad = acc + d0;
        if (nd == 16)
            pvTileAvx2<T, R, 2, false>(s, vd, ldv, j0, j1, nd, fa, fb, ad, hd);
        else if (nd > 8)
            pvTileAvx2<T, R, 2, true>(s, vd, ldv, j0, j1, nd, fa, fb, ad, hd);
        else if (nd == 8)
            pvTileAvx2<T, R, 1, false>(s, vd, ldv, j0, j1, nd, fa, fb, ad, hd);
        else
            pvTileAvx2<T, R, 1, true>(s, vd, ldv, j0, j1, nd, fa, fb, ad, hd);
    }
}

template <class T>
constexpr PvRows<T> kPvRowsAvx2[] = {pvRowsAvx2<T, 1>, pvRowsAvx2<T, 2>, pvRowsAvx2<T, 3>,
                                     pvRowsAvx2<T, 4>};

LCW_AVX2 void widenVAvx2(const Half* v, int64_t ldv, int64_t nk, int64_t hd, float* vt) {
    for (int64_t j = 0; j < nk; ++j) {
        int64_t d = 0;
        for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(vt + j * hd + d, load8(v + j * ldv + d));
        for (; d < hd; ++d) vt[j * hd + d] = f16ToF32(v[j * ldv + d]);
    }
}

constexpr Kern kAvx2 = {transposeAvx2<float>,
                        transposeAvx2<Half>,
                        scoresAvx2,
                        expRowAvx2,
                        pvInRowTiles<float, kPvRowsAvx2<float>>,
                        pvInRowTiles<Half, kPvRowsAvx2<Half>>,
                        widenVAvx2};

// ---------------------------------------------------------------------------------------------
// AVX-512 kernels (16 lanes).

// GCC 12's AVX-512 intrinsics pass an uninitialised "undefined" vector as the unused merge
// operand, which -W(maybe-)uninitialized reports once they are inlined (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// The Cephes exp of expAvx2 with the scaling by 2^n done by vscalefps (exact, flushes to zero
// below the denormals); x <= 88.
LCW_AVX512 inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

// tanhAvx2 on 16 lanes.
LCW_AVX512 inline __m512 tanh512(__m512 x) {
    const __m512 ax = _mm512_abs_ps(x);
    const __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-929569.0f / 638512875.0f);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(21844.0f / 6081075.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1382.0f / 155925.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(62.0f / 2835.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-17.0f / 315.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.0f / 15.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.0f / 3.0f));
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(x, x2), p, x);
    const __m512 e = exp512(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 big = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    const __m512 res = _mm512_or_ps(big, _mm512_and_ps(x, _mm512_set1_ps(-0.0f))); // big >= 0
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.5f), _CMP_LT_OQ), res,
                                small);
}

/// Lanes j..j+15 inside [a, b).
inline __mmask16 laneMask512(int64_t j, int64_t a, int64_t b) {
    const int lo = int(std::clamp<int64_t>(a - j, 0, 16));
    const int hi = int(std::clamp<int64_t>(b - j, 0, 16));
    return __mmask16(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/// The cache values of the lanes of m from p as floats (the other lanes zero).
LCW_AVX512 inline __m512 load16(__mmask16 m, const float* p) {
    return _mm512_maskz_loadu_ps(m, p);
}
LCW_AVX512 inline __m512 load16(__mmask16 m, const Half* p) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

template <class T>
LCW_AVX512 void transpose512(const T* k, const T* v, int64_t ldk, int64_t nk, int64_t hd,
                             float* kt) {
    const int64_t nkp = roundUp16(nk);
    for (int64_t j0 = 0; j0 < nkp; j0 += 16)
        for (int64_t d0 = 0; d0 < hd; d0 += 16) {
            const int64_t nd = std::min<int64_t>(16, hd - d0);
            const __mmask16 m = __mmask16((1u << nd) - 1u);
            __m512 r[16], t[16], u[16];
            const T* src = k + j0 * ldk + d0;
            if (j0 + 16 <= nk) { // the common case without a branch per row
#pragma GCC unroll 16
                for (int i = 0; i < 16; ++i) {
                    r[i] = load16(m, src + i * ldk);
                    // (prefetches never fault)
                    _mm_prefetch(reinterpret_cast<const char*>(src + (i + kChunk) * ldk),
                                 _MM_HINT_T0);
                    _mm_prefetch(reinterpret_cast<const char*>(v + (j0 + i) * ldk + d0),
                                 _MM_HINT_T0);
                }
            } else {
                for (int i = 0; i < 16; ++i)
                    r[i] = j0 + i < nk ? load16(m, src + i * ldk) : _mm512_setzero_ps();
            }
            for (int i = 0; i < 16; i += 2) {
                t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
            }
            // u[4i + c], 128-bit lane L: column 4L + c of rows 4i..4i+3
            for (int i = 0; i < 16; i += 4) {
                u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
                u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
                u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            for (int c = 0; c < 4; ++c) {
                const __m512 a0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
                const __m512 a1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
                const __m512 b0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
                const __m512 b1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
                const __m512 col[4] = {
                    _mm512_shuffle_f32x4(a0, b0, 0x88), _mm512_shuffle_f32x4(a1, b1, 0x88),
                    _mm512_shuffle_f32x4(a0, b0, 0xDD), _mm512_shuffle_f32x4(a1, b1, 0xDD)};
                for (int L = 0; L < 4; ++L)
                    if (4 * L + c < nd)
                        _mm512_storeu_ps(kt + (d0 + 4 * L + c) * kChunk + j0, col[L]);
            }
        }
}

template <int R, int NV>
LCW_AVX512 inline void scoreTile512(const float* const* q, const float* kt, int64_t hd, int64_t c,
                                    float* s) {
    __m512 acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
        __m512 kv[NV];
#pragma GCC unroll 2
        for (int i = 0; i < NV; ++i) kv[i] = _mm512_loadu_ps(kt + d * kChunk + c + 16 * i);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m512 b = _mm512_set1_ps(q[r][d]);
#pragma GCC unroll 2
            for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_fmadd_ps(b, kv[i], acc[r][i]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int i = 0; i < NV; ++i) _mm512_storeu_ps(s + r * kChunk + c + 16 * i, acc[r][i]);
}

template <int R>
LCW_AVX512 void scoreRows512(const float* const* q, const float* kt, int64_t hd, int64_t c0,
                             int64_t c1, float* s) {
    int64_t c = c0;
    for (; c + 32 <= c1; c += 32) scoreTile512<R, 2>(q, kt, hd, c, s);
    if (c < c1) scoreTile512<R, 1>(q, kt, hd, c, s);
}

LCW_AVX512 void scores512(const float* const* q, int nr, const float* kt, int64_t hd, int64_t c0,
                          int64_t c1, float* s) {
    constexpr decltype(&scoreRows512<1>) rows[] = {
        scoreRows512<1>, scoreRows512<2>, scoreRows512<3>, scoreRows512<4>,
        scoreRows512<5>, scoreRows512<6>, scoreRows512<7>, scoreRows512<8>};
    rows[nr - 1](q, kt, hd, c0, c1, s);
}

LCW_AVX512 float expRow512(float* s, int64_t c0, int64_t c1, int64_t a, int64_t b,
                           const RowScore& rs, float* sum) {
    const int64_t va = a & ~int64_t(15), vb = roundUp16(b);
    __m512 mx = _mm512_set1_ps(kNegInf);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t j = va; j < vb; j += 16) {
        __m512 x = _mm512_loadu_ps(s + j);
        if (!rs.plain) {
            const __m512 rel =
                _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_set1_epi32(int(rs.relBase + j)), iota));
            const __m512 sc = _mm512_set1_ps(rs.scale),
                         sl = _mm512_mul_ps(_mm512_set1_ps(rs.slope), rel);
            x = rs.alibiBefore ? _mm512_mul_ps(_mm512_add_ps(x, sl), sc)
                               : _mm512_add_ps(_mm512_mul_ps(x, sc), sl);
            if (rs.softcap > 0) {
                const __m512 cap = _mm512_set1_ps(rs.softcap);
                x = _mm512_mul_ps(cap, tanh512(_mm512_div_ps(x, cap)));
            }
            _mm512_storeu_ps(s + j, x);
        }
        mx = _mm512_mask_max_ps(mx, laneMask512(j, a, b), mx, x);
    }
    const float m = _mm512_reduce_max_ps(mx);
    const float mc = rs.plain ? m * rs.scale : m;
    const __m512 vm = _mm512_set1_ps(mc), vs = _mm512_set1_ps(rs.plain ? rs.scale : 1.0f);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = c0; j < c1; j += 16) {
        if (j + 16 <= a || j >= b) {
            _mm512_storeu_ps(s + j, _mm512_setzero_ps());
            continue;
        }
        const __m512 x = _mm512_loadu_ps(s + j);
        const __m512 e =
            _mm512_maskz_mov_ps(laneMask512(j, a, b), exp512(_mm512_fmsub_ps(x, vs, vm)));
        _mm512_storeu_ps(s + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    *sum = _mm512_reduce_add_ps(acc);
    return mc;
}

template <class T, int R, int ND>
LCW_AVX512 inline void pvTile512(const float* s, const T* v, int64_t ldv, int64_t j0, int64_t j1,
                                 int64_t nd, const float* fa, const float* fb, float* acc,
                                 int64_t hd) {
    __mmask16 m[ND];
#pragma GCC unroll 4
    for (int i = 0; i < ND; ++i) m[i] = __mmask16((1u << std::min<int64_t>(16, nd - 16 * i)) - 1u);
    __m512 c[R][ND];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int i = 0; i < ND; ++i) c[r][i] = _mm512_setzero_ps();
    for (int64_t j = j0; j < j1; ++j) {
        const T* vr = v + j * ldv;
        __m512 vv[ND];
#pragma GCC unroll 4
        for (int i = 0; i < ND; ++i) vv[i] = load16(m[i], vr + 16 * i);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const __m512 p = _mm512_set1_ps(s[r * kChunk + j]);
#pragma GCC unroll 4
            for (int i = 0; i < ND; ++i) c[r][i] = _mm512_fmadd_ps(p, vv[i], c[r][i]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
        const __m512 a = _mm512_set1_ps(fa[r]), b = _mm512_set1_ps(fb[r]);
        float* ar = acc + r * hd;
#pragma GCC unroll 4
        for (int i = 0; i < ND; ++i)
            _mm512_mask_storeu_ps(ar + 16 * i, m[i],
                                  _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[i], ar + 16 * i), a,
                                                  _mm512_mul_ps(c[r][i], b)));
    }
}

template <class T, int R>
LCW_AVX512 void pvRows512(const float* s, const T* v, int64_t ldv, int64_t hd, int64_t j0,
                          int64_t j1, const float* fa, const float* fb, float* acc) {
    constexpr decltype(&pvTile512<T, R, 1>) tile[] = {pvTile512<T, R, 1>, pvTile512<T, R, 2>,
                                                      pvTile512<T, R, 3>, pvTile512<T, R, 4>};
    for (int64_t d0 = 0; d0 < hd; d0 += 64) {
        const int64_t nd = std::min<int64_t>(64, hd - d0);
        tile[(nd + 15) / 16 - 1](s, v + d0, ldv, j0, j1, nd, fa, fb, acc + d0, hd);
    }
}

template <class T>
constexpr PvRows<T> kPvRows512[] = {pvRows512<T, 1>, pvRows512<T, 2>, pvRows512<T, 3>,
                                    pvRows512<T, 4>};

LCW_AVX512 void widenV512(const Half* v, int64_t ldv, int64_t nk, int64_t hd, float* vt) {
    for (int64_t j = 0; j < nk; ++j)
        for (int64_t d = 0; d < hd; d += 16) {
            const __mmask16 m = __mmask16(hd - d >= 16 ? 0xFFFFu : (1u << (hd - d)) - 1u);
            _mm512_mask_storeu_ps(vt + j * hd + d, m, load16(m, v + j * ldv + d));
        }
}

constexpr Kern kAvx512 = {transpose512<float>,
                          transpose512<Half>,
                          scores512,
                          expRow512,
                          pvInRowTiles<float, kPvRows512<float>>,
                          pvInRowTiles<Half, kPvRows512<Half>>,
                          widenV512};
#pragma GCC diagnostic pop
#endif

const Kern& kernFor(Isa isa) {
#if LCW_X86
    if (isa == Isa::Avx512) return kAvx512;
    if (isa == Isa::Avx2) return kAvx2;
#endif
    (void)isa;
    return kGeneric;
}

// ---------------------------------------------------------------------------------------------
// The driver (shared by every level).

/// One attention call.
struct Problem {
    const float* q;
    int64_t ldq;
    const void* k; ///< the cache: float, or Half when `half`
    const void* v;
    bool half;
    float* out;
    int64_t ldo;
    int64_t nTok, pos0, nKv, hd, G, kvDim, window;
    int64_t QT; ///< query tokens per task
    float scale;
    bool plain;
    const AttentionOptions* opt;
    const Kern* kern;

    int64_t keyLo(int64_t p) const { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; }
    int64_t tokens(int64_t blk) const { return std::min(QT, nTok - blk * QT); }
    /// Super-chunks [first, last] that the queries of block blk see.
    std::pair<int64_t, int64_t> supers(int64_t blk) const {
        const int64_t p0 = pos0 + blk * QT;
        return {keyLo(p0) / kSuper, (p0 + tokens(blk) - 1) / kSuper};
    }
};

/// Per-thread working memory; its size depends on the head size and rows per task only.
struct Scratch {
    FloatBuffer kt, vt, s, accS, accT; // vt: a widened F16 V chunk [kChunk][hd]
    std::vector<float> mS, lS, mT, lT;
    std::vector<const float*> qp;
    /// wideV: V chunks of an F16 cache are widened into vt.
    void ensure(int64_t rows, int64_t hd, bool wideV) {
        auto grow = [](auto& b, int64_t n) {
            if (b.size() < size_t(n)) b.resize(size_t(n));
        };
        grow(kt, hd * kChunk);
        if (wideV) grow(vt, kChunk * hd);
        grow(s, rows * kChunk);
        grow(accS, rows * hd), grow(accT, rows * hd);
        grow(mS, rows), grow(lS, rows), grow(mT, rows), grow(lT, rows);
        grow(qp, rows);
    }
    size_t bytes() const {
        return (kt.capacity() + vt.capacity() + s.capacity() + accS.capacity() + accT.capacity() +
                mS.capacity() + lS.capacity() + mT.capacity() + lT.capacity()) *
                   sizeof(float) +
               qp.capacity() * sizeof(const float*);
    }
};

Scratch& threadScratch() {
    static thread_local Scratch w;
    return w;
}

/// Softmax state (m, l, acc) of the rows of tokens blk*QT.. of KV head kvh over the keys of
/// super-chunk sc, starting from the empty state. Row r is token r / G, head kvh*G + r % G.
/// T: the cache's element type.
template <class T>
void superChunkOf(const Problem& P, Scratch& w, int64_t kvh, int64_t blk, int64_t sc, float* m,
                  float* l, float* acc) {
    const Kern& kn = *P.kern;
    const int64_t t0 = blk * P.QT, nq = P.tokens(blk), rows = nq * P.G, hd = P.hd;
    std::fill(m, m + rows, kNegInf);
    std::fill(l, l + rows, 0.0f);
    std::fill(acc, acc + rows * hd, 0.0f);
    for (int64_t r = 0; r < rows; ++r)
        w.qp[size_t(r)] = P.q + (t0 + r / P.G) * P.ldq + (kvh * P.G + r % P.G) * hd;
    const int64_t pFirst = P.pos0 + t0, keyHi = pFirst + nq; // keys [.., keyHi) exist
    const int64_t cFrom = std::max(sc * kSuperChunks, P.keyLo(pFirst) / kChunk);
    const int64_t cTo = std::min((sc + 1) * kSuperChunks, (keyHi + kChunk - 1) / kChunk);
    const float* slopes = P.opt->alibi;
    float fa[kGroup], fb[kGroup];
    int64_t ra[kGroup], rb[kGroup];
    const T* kBase = static_cast<const T*>(P.k) + kvh * hd;
    const T* vBase = static_cast<const T*>(P.v) + kvh * hd;
    // The first chunk's K rows (the transposition prefetches the next ones as it goes).
    for (int64_t j = cFrom * kChunk; j < std::min(keyHi, (cFrom + 1) * kChunk); ++j)
        for (int64_t d = 0; d < hd; d += 16) __builtin_prefetch(kBase + j * P.kvDim + d);
    for (int64_t c = cFrom; c < cTo; ++c) {
        const int64_t cs = c * kChunk, nk = std::min(kChunk, keyHi - cs);
        kn.transposeOf(kBase + cs * P.kvDim, vBase + cs * P.kvDim, P.kvDim, nk, hd, w.kt.data());
        // An F16 V chunk that several row groups read is widened once (the same values, so the
        // same bits as widening it in every group's pvH).
        const bool wideV = std::is_same_v<T, Half> && kn.widensV(rows);
        if constexpr (std::is_same_v<T, Half>)
            if (wideV) kn.widenV(vBase + cs * P.kvDim, P.kvDim, nk, hd, w.vt.data());
        for (int64_t g0 = 0; g0 < rows; g0 += kGroup) {
            const int nr = int(std::min<int64_t>(kGroup, rows - g0));
            int64_t lo = kChunk, hi = 0;
            for (int i = 0; i < nr; ++i) {
                const int64_t p = pFirst + (g0 + i) / P.G;
                ra[i] = std::clamp<int64_t>(P.keyLo(p) - cs, 0, nk);
                rb[i] = std::clamp<int64_t>(p + 1 - cs, 0, nk);
                if (ra[i] < rb[i]) lo = std::min(lo, ra[i]), hi = std::max(hi, rb[i]);
            }
            if (lo >= hi) continue; // no row of the group sees this chunk
            const int64_t c0 = lo & ~int64_t(15), c1 = roundUp16(hi);
            float* s = w.s.data() + g0 * kChunk;
            kn.scores(w.qp.data() + g0, nr, w.kt.data(), hd, c0, c1, s);
            for (int i = 0; i < nr; ++i) {
                const int64_t r = g0 + i;
                float* sr = s + i * kChunk;
                if (ra[i] >= rb[i]) {
                    std::fill(sr + c0, sr + c1, 0.0f);
                    fa[i] = 1, fb[i] = 0; // the state stays as it is
                    continue;
                }
                RowScore rs;
                rs.scale = P.scale;
                rs.plain = P.plain;
                if (!P.plain) {
                    rs.softcap = P.opt->softcap > 0 ? P.opt->softcap : 0.0f;
                    rs.slope = slopes ? slopes[kvh * P.G + r % P.G] : 0.0f;
                    rs.alibiBefore = P.opt->alibiBeforeScale;
                    rs.relBase = cs - (pFirst + r / P.G);
                }
                float sum;
                const float mc = kn.expRow(sr, c0, c1, ra[i], rb[i], rs, &sum);
                const float mn = std::max(m[r], mc);
                fa[i] = m[r] == kNegInf ? 0.0f : m[r] == mn ? 1.0f : std::exp(m[r] - mn);
                fb[i] = mc == mn ? 1.0f : std::exp(mc - mn); // exp(0) = 1 exactly
                l[r] = l[r] * fa[i] + sum * fb[i];
                m[r] = mn;
            }
            if (wideV) // row j of vt holds position cs + j
                kn.pvOf(s, nr, w.vt.data(), hd, hd, lo, hi, fa, fb, acc + g0 * hd);
            else
                kn.pvOf(s, nr, vBase + cs * P.kvDim, P.kvDim, hd, lo, hi, fa, fb, acc + g0 * hd);
        }
    }
}

void superChunk(const Problem& P, Scratch& w, int64_t kvh, int64_t blk, int64_t sc, float* m,
                float* l, float* acc) {
    if (P.half)
        superChunkOf<Half>(P, w, kvh, blk, sc, m, l, acc);
    else
        superChunkOf<float>(P, w, kvh, blk, sc, m, l, acc);
}

/// (mT, lT, accT) = merge of itself and (mS, lS, accS), for `rows` rows.
void mergeStates(int64_t rows, int64_t hd, float* mT, float* lT, float* accT, const float* mS,
                 const float* lS, const float* accS) {
    for (int64_t r = 0; r < rows; ++r) {
        if (lS[r] == 0) continue; // no key of that super-chunk is visible to the row
        const float mn = std::max(mT[r], mS[r]);
        const float a = mT[r] == kNegInf ? 0.0f : std::exp(mT[r] - mn);
        const float b = std::exp(mS[r] - mn);
        lT[r] = lT[r] * a + lS[r] * b;
        mT[r] = mn;
        float* at = accT + r * hd;
        const float* as = accS + r * hd;
        for (int64_t d = 0; d < hd; ++d) at[d] = at[d] * a + as[d] * b;
    }
}

void initState(int64_t rows, int64_t hd, float* m, float* l, float* acc) {
    std::fill(m, m + rows, kNegInf);
    std::fill(l, l + rows, 0.0f);
    std::fill(acc, acc + rows * hd, 0.0f);
}

/// out = acc / l for the rows of block blk of KV head kvh.
void writeOut(const Problem& P, int64_t kvh, int64_t blk, const float* l, const float* acc) {
    const int64_t t0 = blk * P.QT, rows = P.tokens(blk) * P.G;
    for (int64_t r = 0; r < rows; ++r) {
        float* o = P.out + (t0 + r / P.G) * P.ldo + (kvh * P.G + r % P.G) * P.hd;
        const float inv = 1.0f / l[r];
        const float* a = acc + r * P.hd;
        for (int64_t d = 0; d < P.hd; ++d) o[d] = a[d] * inv;
    }
}

} // namespace

size_t attentionScratchPeak() {
    return g_scratchPeak.load();
}

void resetAttentionScratchPeak() {
    g_scratchPeak.store(0);
}

void attention(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
               int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
               int64_t headDim, int64_t window, int threads) {
    AttentionOptions opt;
    opt.window = window;
    attentionEx(q, ldq, kCache, vCache, out, ldo, nTok, pos0, nHeads, nKvHeads, headDim, opt,
                threads);
}

namespace {

void attendCache(const float* q, int64_t ldq, const void* kCache, const void* vCache, bool half,
                 float* out, int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads,
                 int64_t nKvHeads, int64_t headDim, const AttentionOptions& opt, int threads) {
    if (nTok <= 0) return;
    if (nKvHeads <= 0 || nHeads % nKvHeads != 0 || headDim <= 0 || pos0 < 0)
        throw ArgumentError("attention: " + std::to_string(nHeads) + " query heads over " +
                            std::to_string(nKvHeads) + " KV heads of size " +
                            std::to_string(headDim) + " at position " + std::to_string(pos0) +
                            " (need a whole number of query heads per KV head)");
    const int nt = resolveThreads(threads);
    Problem P;
    P.q = q, P.ldq = ldq, P.k = kCache, P.v = vCache, P.half = half, P.out = out, P.ldo = ldo;
    P.nTok = nTok, P.pos0 = pos0, P.nKv = nKvHeads, P.hd = headDim;
    P.G = nHeads / nKvHeads, P.kvDim = nKvHeads * headDim, P.window = opt.window;
    // Query tokens per task: kRowTarget rows, fewer when that leaves too few tasks to share.
    P.QT = std::max<int64_t>(1, kRowTarget / P.G);
    while (nt > 1 && P.QT > 1 && nKvHeads * ((nTok + P.QT - 1) / P.QT) < 4 * nt)
        P.QT = (P.QT + 1) / 2;
    P.scale = opt.scale > 0 ? opt.scale : float(1.0 / std::sqrt(double(headDim)));
    P.plain = opt.softcap <= 0 && opt.alibi == nullptr;
    P.opt = &opt;
    P.kern = &kernFor(activeIsa());

    const int64_t nBlocks = (nTok + P.QT - 1) / P.QT;
    const int64_t base = nKvHeads * nBlocks; // (KV head, query block) pairs
    const int64_t rowsMax = std::min(P.QT, nTok) * P.G;
    const bool wideV = half && P.kern->widensV(rowsMax); // some task widens V chunks
    const int64_t work = nHeads * nTok * (pos0 + nTok) * headDim;
    const bool parallel = nt > 1 && work >= kMinParallelWork;
    // Few (KV head, block) pairs and a long context (decode): split the key range too.
    int64_t maxSupers = 0;
    for (int64_t b = 0; b < nBlocks; ++b) {
        const auto [s0, s1] = P.supers(b);
        maxSupers = std::max(maxSupers, s1 - s0 + 1);
    }
    const bool split = parallel && base < 4 * nt && maxSupers > 1;

    ParallelErrors errors; // the per-thread scratch allocates
    if (!split) {
#pragma omp parallel num_threads(nt) if (parallel && base > 1)
        {
            Scratch& w = threadScratch();
            errors.run([&] { w.ensure(rowsMax, headDim, wideV); });
            notePeak(w.bytes());
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < base; ++task)
                errors.run([&] {
                    // Last blocks first: they see the most keys.
                    const int64_t blk = nBlocks - 1 - task / nKvHeads, kvh = task % nKvHeads;
                    const int64_t rows = P.tokens(blk) * P.G;
                    initState(rows, headDim, w.mT.data(), w.lT.data(), w.accT.data());
                    const auto [s0, s1] = P.supers(blk);
                    for (int64_t sc = s0; sc <= s1; ++sc) {
                        superChunk(P, w, kvh, blk, sc, w.mS.data(), w.lS.data(), w.accS.data());
                        mergeStates(rows, headDim, w.mT.data(), w.lT.data(), w.accT.data(),
                                    w.mS.data(), w.lS.data(), w.accS.data());
                    }
                    writeOut(P, kvh, blk, w.lT.data(), w.accT.data());
                });
        }
        errors.rethrow();
        return;
    }

    // Split: one task per (KV head, block, super-chunk) writes its state into a slot; then each
    // pair merges its slots in key order, exactly as the unsplit loop above does (serially: it
    // is little work, and one barrier fewer matters on a busy machine).
    struct Item {
        int64_t kvh, blk, sc, offset; // offset of the slot: m[rows], l[rows], acc[rows*hd]
    };
    std::vector<Item> items;
    std::vector<int64_t> firstItem(size_t(base + 1));
    int64_t total = 0;
    for (int64_t b = 0; b < base; ++b) {
        const int64_t kvh = b % nKvHeads, blk = b / nKvHeads;
        const int64_t rows = P.tokens(blk) * P.G;
        const auto [s0, s1] = P.supers(blk);
        firstItem[size_t(b)] = int64_t(items.size());
        for (int64_t sc = s0; sc <= s1; ++sc) {
            items.push_back({kvh, blk, sc, total});
            total += rows * (headDim + 2);
        }
    }
    firstItem[size_t(base)] = int64_t(items.size());
    FloatBuffer slots(static_cast<size_t>(total));
    const int64_t nItems = int64_t(items.size());
#pragma omp parallel num_threads(nt)
    {
        Scratch& w = threadScratch();
        errors.run([&] { w.ensure(rowsMax, headDim, wideV); });
        notePeak(w.bytes() + slots.capacity() * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < nItems; ++i)
            errors.run([&] {
                const Item& it = items[size_t(i)];
                const int64_t rows = P.tokens(it.blk) * P.G;
                float* m = slots.data() + it.offset;
                superChunk(P, w, it.kvh, it.blk, it.sc, m, m + rows, m + 2 * rows);
            });
    }
    errors.rethrow();
    Scratch& w = threadScratch();
    w.ensure(rowsMax, headDim, wideV);
    for (int64_t b = 0; b < base; ++b) {
        const int64_t kvh = b % nKvHeads, blk = b / nKvHeads;
        const int64_t rows = P.tokens(blk) * P.G;
        initState(rows, headDim, w.mT.data(), w.lT.data(), w.accT.data());
        for (int64_t i = firstItem[size_t(b)]; i < firstItem[size_t(b + 1)]; ++i) {
            const float* m = slots.data() + items[size_t(i)].offset;
            mergeStates(rows, headDim, w.mT.data(), w.lT.data(), w.accT.data(), m, m + rows,
                        m + 2 * rows);
        }
        writeOut(P, kvh, blk, w.lT.data(), w.accT.data());
    }
}

} // namespace

void attentionEx(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
                 int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
                 int64_t headDim, const AttentionOptions& opt, int threads) {
    attendCache(q, ldq, kCache, vCache, false, out, ldo, nTok, pos0, nHeads, nKvHeads, headDim, opt,
                threads);
}

void attentionExF16(const float* q, int64_t ldq, const uint16_t* kCache, const uint16_t* vCache,
                    float* out, int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads,
                    int64_t nKvHeads, int64_t headDim, const AttentionOptions& opt, int threads) {
    attendCache(q, ldq, kCache, vCache, true, out, ldo, nTok, pos0, nHeads, nKvHeads, headDim, opt,
                threads);
}

namespace {

// F16 rounding of cache rows. Every level: |x| > kHalfMax becomes +-kHalfMax, then round to
// nearest even (f32ToF16's rule; F16C's vcvtps2ph with _MM_FROUND_TO_NEAREST_INT is the same
// rounding, subnormal halves included); NaN stays NaN.
inline float saturateHalf(float x) {
    return std::fabs(x) > kHalfMax ? std::copysign(kHalfMax, x) : x;
}

void toF16Generic(const float* src, Half* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = f32ToF16(saturateHalf(src[i]));
}

#if LCW_X86
LCW_AVX2 void toF16Avx2(const float* src, Half* dst, int64_t n) {
    const __m256 hi = _mm256_set1_ps(kHalfMax), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(src + i);
        const __m256 ax = _mm256_andnot_ps(sign, x);
        const __m256 big = _mm256_cmp_ps(ax, hi, _CMP_GT_OQ);
        const __m256 y = _mm256_blendv_ps(x, _mm256_or_ps(hi, _mm256_and_ps(sign, x)), big);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                         _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    toF16Generic(src + i, dst + i, n - i);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
LCW_AVX512 void toF16Avx512(const float* src, Half* dst, int64_t n) {
    const __m512 hi = _mm512_set1_ps(kHalfMax);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = __mmask16(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
        const __m512 x = _mm512_maskz_loadu_ps(m, src + i);
        const __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(x), hi, _CMP_GT_OQ);
        const __m512 y = _mm512_mask_mov_ps(
            x, big,
            _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_castps_si512(hi),
                _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN)))));
        _mm256_mask_storeu_epi16(dst + i, m,
                                 _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}
#pragma GCC diagnostic pop
#endif

} // namespace

void convertToF16Saturated(const float* src, uint16_t* dst, int64_t n) {
#if LCW_X86
    const Isa isa = activeIsa();
    if (isa == Isa::Avx512) return toF16Avx512(src, dst, n);
    if (isa == Isa::Avx2) return toF16Avx2(src, dst, n);
#endif
    toF16Generic(src, dst, n);
}

} // namespace lcw::kernels
