// Integer dot products of the 256-element GGUF block types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
// IQ4_XS) with activations quantised to Q8_K blocks (qdot.h).
//
// Every type is read as 16 groups of 16 codes u (small unsigned integers; IQ4_XS: signed table
// values) with one integer scale s per group, one float super-block scale d, and a per-group
// float bias b_k that multiplies the activation group sum (the Q8_K bsums):
//   super-block · activation block = d·da·Σ_k s_k·Σ_{i∈k} u_i·q_i − da·Σ_k b_k·bsum_k
//   Q4_K, Q5_K: b_k = dmin·min(k/2)  Q2_K: b_k = dmin·min_k
//   Q6_K: b_k = 32·d·s_k (codes stored +32)  Q3_K: b_k = 4·d·s_k (codes stored +4)
// The inner sums are exact integers in every version. The portable version keeps the bias term
// an integer too (ggml's generic arithmetic); the vector versions keep per-lane float
// accumulators, so they differ from it by float rounding only. Within one version the operations
// on one output element never depend on how many rows or tokens share a call.
#include "core/common/dtype.h"
#include "core/runtime/cpu/qdot.h"
#include "core/runtime/cpu/qdot_common.h"
#include "core/runtime/cpu/simd.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

namespace lcw::kernels::detail {

namespace {

constexpr int kQK = 256;          // values per super-block
constexpr size_t kQ8KBytes = 292; // f32 d, int8 q[256], int16 bsums[16]
constexpr size_t kQ8KQs = 4;      // offset of q
constexpr size_t kQ8KSums = 260;  // offset of bsums

inline uint16_t rd16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline float rdF32(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
}
inline const uint8_t* u8(const std::byte* p) {
    return reinterpret_cast<const uint8_t*>(p);
}

// The IQ4_NL / IQ4_XS code book (a fact of the format).
alignas(16) constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                               1,    13,   25,  38,  53,  69,  89,  113};

// Round to nearest, ties to even, for |f| < 2^22 (ggml's nearest_int; cvtps2dq in the default
// rounding mode gives the same integers). NaN gives 0.
inline int nearestInt(float f) {
    const float v = f + 12582912.f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// The 12-byte packing of eight 6-bit (scale, min) pairs of Q4_K and Q5_K, unpacked four at a
// time: out[0..1] = scales 0-3, 4-7; out[2..3] = mins 0-3, 4-7 (one byte each).
inline void unpackScaleMin(const uint8_t* p, uint32_t out[4]) {
    uint32_t u[3];
    std::memcpy(u, p, 12);
    out[0] = u[0] & 0x3f3f3f3fu;
    out[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    out[2] = u[1] & 0x3f3f3f3fu;
    out[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
}

// Q3_K's sixteen 6-bit scales (stored +32) from 12 bytes: low nibbles in bytes 0-7, the two
// high bits of each in bytes 8-11.
inline void unpackQ3Scales(const uint8_t* p, uint32_t out[4]) {
    uint32_t a[3];
    std::memcpy(a, p, 12);
    const uint32_t t = a[2];
    out[0] = (a[0] & 0x0f0f0f0fu) | (((t >> 0) & 0x03030303u) << 4);
    out[1] = (a[1] & 0x0f0f0f0fu) | (((t >> 2) & 0x03030303u) << 4);
    out[2] = ((a[0] >> 4) & 0x0f0f0f0fu) | (((t >> 4) & 0x03030303u) << 4);
    out[3] = ((a[1] >> 4) & 0x0f0f0f0fu) | (((t >> 6) & 0x03030303u) << 4);
}

// IQ4_XS block scale ib (stored +32): 4 low bits in scales_l, 2 high bits in scales_h.
inline int iq4xsScale(const uint8_t* b, int ib) {
    return ((b[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((rd16(b + 2) >> 2 * ib) & 3) << 4);
}

// ---- Q8_K activations ----

// Writes one Q8_K block from the already found signed extreme `maxv` (the first value of the
// largest magnitude amax). The scalar tail shared by every version.
void q8kQuantizeGeneric(const float* x, uint8_t* out) {
    float amax = 0, maxv = 0;
    for (int j = 0; j < kQK; ++j) {
        const float ax = std::fabs(x[j]);
        if (ax > amax) {
            amax = ax;
            maxv = x[j];
        }
    }
    if (amax == 0) {
        std::memset(out, 0, kQ8KBytes);
        return;
    }
    const float iscale = -127.f / maxv;
    auto* q = reinterpret_cast<int8_t*>(out + kQ8KQs);
    for (int j = 0; j < kQK; ++j) q[j] = int8_t(std::min(127, nearestInt(iscale * x[j])));
    int16_t sums[16];
    for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int i = 0; i < 16; ++i) s += q[16 * g + i];
        sums[g] = int16_t(s);
    }
    std::memcpy(out + kQ8KSums, sums, sizeof sums);
    const float d = 1 / iscale;
    std::memcpy(out, &d, 4);
}

void quantizeQ8KGeneric(const float* x, void* dst, int64_t n) {
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t b = 0; b < n / kQK; ++b) q8kQuantizeGeneric(x + b * kQK, out + b * kQ8KBytes);
}

// ---- portable weight decoding ----

struct Decoded {
    int8_t q[kQK];  // codes
    int16_t sc[16]; // scale per group of 16
    int16_t mn[16]; // min per group (types with mins)
    float d = 0, dmin = 0;
};

void decodeQ4K(const uint8_t* b, Decoded& o) {
    o.d = f16ToF32(rd16(b));
    o.dmin = f16ToF32(rd16(b + 2));
    uint32_t sm[4];
    unpackScaleMin(b + 4, sm);
    const auto* s = reinterpret_cast<const uint8_t*>(sm);
    for (int k = 0; k < 16; ++k) {
        o.sc[k] = s[k / 2];
        o.mn[k] = s[8 + k / 2];
    }
    const uint8_t* qs = b + 16;
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
            o.q[64 * c + l] = int8_t(qs[32 * c + l] & 0xF);
            o.q[64 * c + 32 + l] = int8_t(qs[32 * c + l] >> 4);
        }
}

void decodeQ5K(const uint8_t* b, Decoded& o) {
    decodeQ4K(b, o); // scales and mins are laid out alike; the codes differ
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
            o.q[64 * c + l] = int8_t((qs[32 * c + l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4));
            o.q[64 * c + 32 + l] =
                int8_t((qs[32 * c + l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4));
        }
}

void decodeQ6K(const uint8_t* b, Decoded& o) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    for (int k = 0; k < 16; ++k) o.sc[k] = int8_t(b[192 + k]);
    o.d = f16ToF32(rd16(b + 208));
    for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
            const uint8_t* L = ql + 64 * h;
            const int H = qh[32 * h + l];
            int8_t* q = o.q + 128 * h;
            q[l] = int8_t((L[l] & 0xF) | ((H & 3) << 4));
            q[l + 32] = int8_t((L[l + 32] & 0xF) | (((H >> 2) & 3) << 4));
            q[l + 64] = int8_t((L[l] >> 4) | (((H >> 4) & 3) << 4));
            q[l + 96] = int8_t((L[l + 32] >> 4) | (((H >> 6) & 3) << 4));
        }
}

void decodeQ3K(const uint8_t* b, Decoded& o) {
    const uint8_t* hm = b;
    const uint8_t* qs = b + 32;
    uint32_t s[4];
    unpackQ3Scales(b + 96, s);
    const auto* sb = reinterpret_cast<const uint8_t*>(s);
    for (int k = 0; k < 16; ++k) o.sc[k] = int16_t(sb[k] - 32);
    o.d = f16ToF32(rd16(b + 108));
    for (int h = 0; h < 2; ++h)
        for (int g = 0; g < 4; ++g)
            for (int l = 0; l < 32; ++l)
                o.q[128 * h + 32 * g + l] =
                    int8_t(((qs[32 * h + l] >> (2 * g)) & 3) | (((hm[l] >> (4 * h + g)) & 1) << 2));
}

void decodeQ2K(const uint8_t* b, Decoded& o) {
    for (int k = 0; k < 16; ++k) {
        o.sc[k] = b[k] & 0xF;
        o.mn[k] = b[k] >> 4;
    }
    const uint8_t* qs = b + 16;
    o.d = f16ToF32(rd16(b + 80));
    o.dmin = f16ToF32(rd16(b + 82));
    for (int h = 0; h < 2; ++h)
        for (int g = 0; g < 4; ++g)
            for (int l = 0; l < 32; ++l)
                o.q[128 * h + 32 * g + l] = int8_t((qs[32 * h + l] >> (2 * g)) & 3);
}

void decodeIq4Xs(const uint8_t* b, Decoded& o) {
    o.d = f16ToF32(rd16(b));
    const uint8_t* qs = b + 8;
    for (int ib = 0; ib < 8; ++ib) {
        o.sc[2 * ib] = o.sc[2 * ib + 1] = int16_t(iq4xsScale(b, ib) - 32);
        for (int j = 0; j < 16; ++j) {
            o.q[32 * ib + j] = kIq4Values[qs[16 * ib + j] & 0xf];
            o.q[32 * ib + 16 + j] = kIq4Values[qs[16 * ib + j] >> 4];
        }
    }
}

// The per-type facts the portable and vector versions share.
enum class Bias { None, Mins, Offset };

struct TypeInfo {
    size_t bytes;
    void (*decode)(const uint8_t*, Decoded&);
    Bias bias;
    int offset; // Offset: the value codes are stored with
};

template <DType T> constexpr TypeInfo info();
template <> constexpr TypeInfo info<DType::Q2_K>() {
    return {84, decodeQ2K, Bias::Mins, 0};
}
template <> constexpr TypeInfo info<DType::Q3_K>() {
    return {110, decodeQ3K, Bias::Offset, 4};
}
template <> constexpr TypeInfo info<DType::Q4_K>() {
    return {144, decodeQ4K, Bias::Mins, 0};
}
template <> constexpr TypeInfo info<DType::Q5_K>() {
    return {176, decodeQ5K, Bias::Mins, 0};
}
template <> constexpr TypeInfo info<DType::Q6_K>() {
    return {210, decodeQ6K, Bias::Offset, 32};
}
template <> constexpr TypeInfo info<DType::IQ4_XS>() {
    return {136, decodeIq4Xs, Bias::None, 0};
}

// Portable: each weight super-block is decoded once and multiplied with every token's block.
template <DType T>
void gemmGeneric(const std::byte* w, size_t ldw, int64_t nRows, const std::byte* xq, size_t ldx,
                 int64_t nTok, float* y, int64_t ldy, int64_t n) {
    constexpr TypeInfo ti = info<T>();
    const int64_t nb = n / kQK;
    thread_local std::vector<float> acc;
    acc.resize(size_t(nTok));
    Decoded blk;
    for (int64_t r = 0; r < nRows; ++r) {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t b = 0; b < nb; ++b) {
            ti.decode(u8(w) + size_t(r) * ldw + size_t(b) * ti.bytes, blk);
            for (int64_t t = 0; t < nTok; ++t) {
                const uint8_t* a = u8(xq) + size_t(t) * ldx + size_t(b) * kQ8KBytes;
                const float da = rdF32(a);
                const auto* q = reinterpret_cast<const int8_t*>(a + kQ8KQs);
                int16_t bs[16];
                std::memcpy(bs, a + kQ8KSums, sizeof bs);
                int32_t isum = 0, bsum = 0;
                for (int k = 0; k < 16; ++k) {
                    int32_t s = 0;
                    for (int i = 0; i < 16; ++i) s += int32_t(blk.q[16 * k + i]) * q[16 * k + i];
                    isum += blk.sc[k] * s;
                    if constexpr (ti.bias == Bias::Mins) bsum += blk.mn[k] * bs[k];
                    if constexpr (ti.bias == Bias::Offset) bsum += blk.sc[k] * bs[k];
                }
                if constexpr (ti.bias == Bias::Mins)
                    acc[size_t(t)] += (blk.d * da) * float(isum) - (blk.dmin * da) * float(bsum);
                else if constexpr (ti.bias == Bias::Offset)
                    acc[size_t(t)] += (blk.d * da) * float(isum - ti.offset * bsum);
                else
                    acc[size_t(t)] += (blk.d * da) * float(isum);
            }
        }
        for (int64_t t = 0; t < nTok; ++t) y[t * ldy + r] = acc[size_t(t)];
    }
}

// Repacked layout of one group of 16 rows and one super-block (qdot.h: repackRows): the fields of
// the row's block in this order (RepackSeg, qdot_common.h). Q4_K: d, dmin, the 3 scale words, the
// 32 code words; Q5_K: the same with the 8 qh words before the code words; Q6_K: d, the 4 scale
// words, the 32 ql words, the 16 qh words; IQ4_XS: d, scales_h, the scales_l word, the 32 code
// words; Q3_K: d, the 3 scale words, the 8 hmask words, the 16 qs words; Q2_K: d, dmin, the 4
// scale words, the 16 qs words. The kernels take their offsets from here.
struct KRepack {
    RepackSeg seg[5];
    int n;
    /// Offset of field i in a group's block (16 rows of each earlier field); i = n: its size.
    constexpr int at(int i) const {
        int o = 0;
        for (int j = 0; j < i; ++j) o += int(kRepackRows) * seg[j].bytes;
        return o;
    }
    constexpr int bytes() const { return at(n); }
};
constexpr KRepack kRepackK(DType t) {
    switch (t) {
    case DType::Q4_K:
        return {{{0, 2, 2}, {2, 2, 2}, {4, 12, 4}, {16, 128, 4}}, 4};
    case DType::Q5_K:
        return {{{0, 2, 2}, {2, 2, 2}, {4, 12, 4}, {16, 32, 4}, {48, 128, 4}}, 5};
    case DType::Q6_K:
        return {{{208, 2, 2}, {192, 16, 4}, {0, 128, 4}, {128, 64, 4}}, 4};
    case DType::IQ4_XS:
        return {{{0, 2, 2}, {2, 2, 2}, {4, 4, 4}, {8, 128, 4}}, 4};
    case DType::Q3_K:
        return {{{108, 2, 2}, {96, 12, 4}, {0, 32, 4}, {32, 64, 4}}, 4};
    case DType::Q2_K:
        return {{{80, 2, 2}, {82, 2, 2}, {0, 16, 4}, {16, 64, 4}}, 4};
    default:
        return {{}, 0};
    }
}
static_assert(kRepackK(DType::Q4_K).bytes() == 16 * 144 &&
              kRepackK(DType::Q5_K).bytes() == 16 * 176 &&
              kRepackK(DType::Q6_K).bytes() == 16 * 210 &&
              kRepackK(DType::IQ4_XS).bytes() == 16 * 136 &&
              kRepackK(DType::Q3_K).bytes() == 16 * 110 &&
              kRepackK(DType::Q2_K).bytes() == 16 * 84);

#if LCW_X86

// GCC 12's AVX-512 headers fill the unused operand of many intrinsics with a self-initialised
// "undefined" vector, which -Wuninitialized reports once those intrinsics are inlined here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// ================= AVX2 =================
// 32 values per step (one or two groups of 16); a step's scales are the group scales of its
// two groups, expanded to int16 lanes by a byte shuffle.

// The vector versions unpack scales in registers: scalar stores read back by a vector load
// would stall store forwarding once per super-block.

// unpackScaleMin() on 16 loaded bytes (p: the 12 scale bytes, followed by at least 4 more bytes
// of the block): bytes 0-7 scales, 8-15 mins.
LCW_AVX2 inline __m128i scaleMinVec(const uint8_t* p) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); // u0 u1 u2 -
    const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));        // u0 u2 u1 u2
    const __m128i lo =
        _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)); // u0 u0 u1 u1
    const __m128i hi =
        _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

// unpackQ3Scales() in a register (the 12 bytes are read exactly: they end 2 bytes before the
// block does).
LCW_AVX2 inline __m128i q3ScalesVec(const uint8_t* p) {
    uint32_t t;
    std::memcpy(&t, p + 8, 4);
    const __m128i a01 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); // a0 a1 0 0
    const __m128i a = _mm_unpacklo_epi64(a01, a01);                           // a0 a1 a0 a1
    const __m128i lo =
        _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 4, 4)), _mm_set1_epi8(0x0f));
    const __m128i hi = _mm_and_si128(
        _mm_srlv_epi32(_mm_set1_epi32(int(t)), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(0x03));
    return _mm_or_si128(lo, _mm_slli_epi32(hi, 4));
}

// The eight IQ4_XS block scales (stored +32) as int32.
LCW_AVX2 inline __m256i iq4xsScalesVec(const uint8_t* b) {
    uint32_t sl;
    std::memcpy(&sl, b + 4, 4);
    const __m256i lo =
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(sl)),
                                           _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                         _mm256_set1_epi32(0xF));
    const __m256i hi =
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(rd16(b + 2)),
                                           _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                         _mm256_set1_epi32(3));
    return _mm256_or_si256(lo, _mm256_slli_epi32(hi, 4));
}

struct RowY {
    alignas(32) int16_t sc[16]; // scale per group of 16
    __m256 bLo, bHi;            // bias of groups 0-7, 8-15
    float d;
};

LCW_AVX2 inline float halfY(const uint8_t* p) {
    return _cvtsh_ss(rd16(p));
}

// Q4_K / Q5_K scales and mins from the packed 12 bytes into a RowY.
LCW_AVX2 inline void prepScaleMinY(const uint8_t* p, float d, float dmin, RowY& r) {
    const __m128i v = scaleMinVec(p);
    // Each scale and min covers two groups of 16.
    const __m128i dupS = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m128i dupM = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r.sc),
                       _mm256_cvtepu8_epi16(_mm_shuffle_epi8(v, dupS)));
    const __m128i m = _mm_shuffle_epi8(v, dupM);
    const __m256 vdmin = _mm256_set1_ps(dmin);
    r.bLo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m)), vdmin);
    r.bHi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(m, 8))), vdmin);
    r.d = d;
}

// Bias = factor · s_k for 16 int16 group scales.
LCW_AVX2 inline void biasFromScalesY(__m256i s16, float factor, RowY& r) {
    const __m256 f = _mm256_set1_ps(factor);
    r.bLo =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(s16))), f);
    r.bHi = _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(s16, 1))), f);
}

LCW_AVX2 inline __m256i loadY(const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Bytes of v whose bit `mask` is set, as `val`; 0 elsewhere.
LCW_AVX2 inline __m256i bitToY(__m256i v, uint8_t mask, uint8_t val) {
    const __m256i m = _mm256_set1_epi8(char(mask));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, m), m),
                            _mm256_set1_epi8(char(val)));
}

struct Q4KY {
    static constexpr DType kType = DType::Q4_K;
    LCW_AVX2 static void prep(const uint8_t* b, RowY& r) {
        prepScaleMinY(b + 4, halfY(b), halfY(b + 2), r);
    }
    // Step c: values 32c..32c+31, the low (c even) or high nibbles of qs[32(c/2) ..].
    LCW_AVX2 static __m256i codes(const uint8_t* b, int c) {
        const __m256i q = loadY(b + 16 + 32 * (c / 2));
        return _mm256_and_si256(c % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
    }
};

struct Q5KY {
    static constexpr DType kType = DType::Q5_K;
    LCW_AVX2 static void prep(const uint8_t* b, RowY& r) {
        prepScaleMinY(b + 4, halfY(b), halfY(b + 2), r);
    }
    LCW_AVX2 static __m256i codes(const uint8_t* b, int c) {
        const __m256i q = loadY(b + 48 + 32 * (c / 2));
        const __m256i lo =
            _mm256_and_si256(c % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
        return _mm256_or_si256(lo, bitToY(loadY(b + 16), uint8_t(1u << c), 16));
    }
};

struct Q6KY {
    static constexpr DType kType = DType::Q6_K;
    LCW_AVX2 static void prep(const uint8_t* b, RowY& r) {
        const __m256i s16 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
        _mm256_store_si256(reinterpret_cast<__m256i*>(r.sc), s16);
        r.d = halfY(b + 208);
        biasFromScalesY(s16, 32 * r.d, r);
    }
    // Step c: half h = c/4, quarter k = c%4: values 128h + 32k + l.
    LCW_AVX2 static __m256i codes(const uint8_t* b, int c) {
        const int h = c / 4, k = c % 4;
        const __m256i l = loadY(b + 64 * h + 32 * (k % 2));
        const __m256i lo =
            _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(l, 4) : l, _mm256_set1_epi8(0x0F));
        const __m256i qh = loadY(b + 128 + 32 * h);
        // Bits 2k, 2k+1 of qh to bits 4, 5.
        const __m256i hi = k == 0   ? _mm256_slli_epi16(qh, 4)
                           : k == 1 ? _mm256_slli_epi16(qh, 2)
                           : k == 2 ? qh
                                    : _mm256_srli_epi16(qh, 2);
        return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
    }
};

struct Q3KY {
    static constexpr DType kType = DType::Q3_K;
    LCW_AVX2 static void prep(const uint8_t* b, RowY& r) {
        const __m256i s16 =
            _mm256_sub_epi16(_mm256_cvtepu8_epi16(q3ScalesVec(b + 96)), _mm256_set1_epi16(32));
        _mm256_store_si256(reinterpret_cast<__m256i*>(r.sc), s16);
        r.d = halfY(b + 108);
        biasFromScalesY(s16, 4 * r.d, r);
    }
    LCW_AVX2 static __m256i codes(const uint8_t* b, int c) {
        const int h = c / 4, g = c % 4;
        const __m256i q = loadY(b + 32 + 32 * h);
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * g), _mm256_set1_epi8(3));
        return _mm256_or_si256(lo, bitToY(loadY(b), uint8_t(1u << (4 * h + g)), 4));
    }
};

struct Q2KY {
    static constexpr DType kType = DType::Q2_K;
    LCW_AVX2 static void prep(const uint8_t* b, RowY& r) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
        const __m128i m4 = _mm_set1_epi8(0x0F);
        _mm256_store_si256(reinterpret_cast<__m256i*>(r.sc),
                           _mm256_cvtepu8_epi16(_mm_and_si128(v, m4)));
        const __m128i mins = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        const __m256 vdmin = _mm256_set1_ps(halfY(b + 82));
        r.bLo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mins)), vdmin);
        r.bHi =
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(mins, 8))), vdmin);
        r.d = halfY(b + 80);
    }
    LCW_AVX2 static __m256i codes(const uint8_t* b, int c) {
        const int h = c / 4, g = c % 4;
        return _mm256_and_si256(_mm256_srli_epi16(loadY(b + 16 + 32 * h), 2 * g),
                                _mm256_set1_epi8(3));
    }
};

struct Iq4XsY {
    static constexpr DType kType = DType::IQ4_XS;
    LCW_AVX2 static void prep(const uint8_t* b, RowY& r) {
        const __m256i s = _mm256_sub_epi32(iq4xsScalesVec(b), _mm256_set1_epi32(32));
        // Each block scale covers two groups of 16: duplicate, then narrow to int16.
        const __m256i lo =
            _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
        const __m256i hi =
            _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
        _mm256_store_si256(
            reinterpret_cast<__m256i*>(r.sc),
            _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0)));
        r.d = halfY(b);
    }
    // Step c: block c, low nibbles of qs[16c ..] then high nibbles, through the code book.
    LCW_AVX2 static __m256i codes(const uint8_t* b, int c) {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 8 + 16 * c));
        const __m256i idx =
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
        const __m256i table = _mm256_broadcastsi128_si256(
            _mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
        return _mm256_shuffle_epi8(table, idx);
    }
};

template <class K> constexpr TypeInfo infoOf() {
    return info<K::kType>();
}

// NR weight rows × NT tokens; every (row, token) element sees the same operations whatever NR
// and NT are.
template <class K, int NR, int NT>
LCW_AVX2 void microY(const uint8_t* w, size_t ldw, const uint8_t* x, size_t ldx, int64_t nb,
                     float* y, int64_t ldy) {
    constexpr TypeInfo ti = infoOf<K>();
    constexpr bool kSigned = ti.bias == Bias::None;
    __m256 acc[NR][NT];
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    // Step c's scales: int16 lanes 0-7 from group 2c, 8-15 from group 2c+1.
    const __m256i pair = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2,
                                          3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* wb = w + size_t(b) * ti.bytes;
        const uint8_t* xb = x + size_t(b) * kQ8KBytes;
        RowY rw[NR];
        for (int r = 0; r < NR; ++r) K::prep(wb + r * ldw, rw[r]);
        __m256i is[NR][NT];
        for (int r = 0; r < NR; ++r)
            for (int t = 0; t < NT; ++t) is[r][t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) {
            for (int r = 0; r < NR; ++r) {
                __m256i wv = K::codes(wb + r * ldw, c);
                int32_t s2;
                std::memcpy(&s2, rw[r].sc + 2 * c, 4);
                const __m256i s = _mm256_shuffle_epi8(_mm256_set1_epi32(s2), pair);
                const __m256i wSigned = wv;
                if constexpr (kSigned) wv = _mm256_sign_epi8(wv, wv);
                for (int t = 0; t < NT; ++t) {
                    __m256i a = loadY(xb + t * ldx + kQ8KQs + 32 * c);
                    if constexpr (kSigned) a = _mm256_sign_epi8(a, wSigned);
                    is[r][t] = _mm256_add_epi32(is[r][t],
                                                _mm256_madd_epi16(_mm256_maddubs_epi16(wv, a), s));
                }
            }
        }
        for (int t = 0; t < NT; ++t) {
            const uint8_t* xt = xb + t * ldx;
            const float da = rdF32(xt);
            __m256 fLo = _mm256_setzero_ps(), fHi = _mm256_setzero_ps();
            if constexpr (!kSigned) {
                const __m256 vda = _mm256_set1_ps(da);
                const __m128i s0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + kQ8KSums));
                const __m128i s1 =
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + kQ8KSums + 16));
                fLo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(s0)), vda);
                fHi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(s1)), vda);
            }
            for (int r = 0; r < NR; ++r) {
                __m256 a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[r][t]),
                                           _mm256_set1_ps(rw[r].d * da), acc[r][t]);
                if constexpr (!kSigned) {
                    a = _mm256_fnmadd_ps(rw[r].bLo, fLo, a);
                    a = _mm256_fnmadd_ps(rw[r].bHi, fHi, a);
                }
                acc[r][t] = a;
            }
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) y[t * ldy + r] = hsum8(acc[r][t]);
}

// ================= AVX-512 with VNNI =================
// 64 values per step (four groups of 16); a step's int16 scales come from one vpermw of the
// row's scale vector; the int16 pair sums are scaled and accumulated by vpdpwssd.

#define LCW_QZ LCW_AVX512VNNI

// A row holds a few super-blocks (16 for 4096 values: 2.3 KB), too few for the hardware
// prefetchers to ramp up before it ends, and decode reads every row once: fetch each row this
// many super-blocks ahead (Llama-3-8B Q4_K_M decode, 2 threads: 6.4 → 7.9 tok/s; 2 and 8 ahead
// gave 7.1-7.2).
constexpr size_t kPrefetchBlocks = 4;

struct RowZ {
    __m512i sc;  // int16 scales: 8 (per 32 values) or 16 (per 16 values) in the low lanes
    __m512 bias; // per group of 16
    float d;
};

LCW_QZ inline __m512i bcastZ(const uint8_t* p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// 32 bytes → their low nibbles (bytes 0-31) then their high nibbles (bytes 32-63).
LCW_QZ inline __m512i nibblesZ(const uint8_t* p) {
    const __m512i z = bcastZ(p);
    return _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFFFF0000u, z, 4), _mm512_set1_epi8(0x0F));
}
LCW_QZ inline __m512 halfZ(const uint8_t* p) {
    return _mm512_set1_ps(_cvtsh_ss(rd16(p)));
}

LCW_QZ inline void prepScaleMinZ(const uint8_t* p, float d, float dmin, RowZ& r) {
    const __m128i v = scaleMinVec(p);
    r.sc = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(v)); // scales in lanes 0-7
    const __m128i dupM = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    r.bias = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_shuffle_epi8(v, dupM))),
                           _mm512_set1_ps(dmin));
    r.d = d;
}

// Shift counts per 64-bit lane: the low 32 bytes by a, the high 32 bytes by b.
LCW_QZ inline __m512i counts64(int a, int b) {
    return _mm512_setr_epi64(a, a, a, a, b, b, b, b);
}

struct Q4KZ {
    static constexpr DType kType = DType::Q4_K;
    static constexpr bool kPer32 = true;
    LCW_QZ static void prep(const uint8_t* b, RowZ& r) {
        prepScaleMinZ(b + 4, _cvtsh_ss(rd16(b)), _cvtsh_ss(rd16(b + 2)), r);
    }
    // Step c: values 64c..64c+63 = low then high nibbles of qs[32c ..].
    LCW_QZ static __m512i codes(const uint8_t* b, int c) { return nibblesZ(b + 16 + 32 * c); }
};

alignas(64) constexpr uint8_t kQ5Bits[4][2] = {{1, 2}, {4, 8}, {16, 32}, {64, 128}};

struct Q5KZ {
    static constexpr DType kType = DType::Q5_K;
    static constexpr bool kPer32 = true;
    LCW_QZ static void prep(const uint8_t* b, RowZ& r) {
        prepScaleMinZ(b + 4, _cvtsh_ss(rd16(b)), _cvtsh_ss(rd16(b + 2)), r);
    }
    LCW_QZ static __m512i codes(const uint8_t* b, int c) {
        const __m512i lo = nibblesZ(b + 48 + 32 * c);
        const __m512i bits =
            _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, _mm512_set1_epi8(char(kQ5Bits[c][0])),
                                   _mm512_set1_epi8(char(kQ5Bits[c][1])));
        const __mmask64 k = _mm512_test_epi8_mask(bcastZ(b + 16), bits);
        return _mm512_mask_add_epi8(lo, k, lo, _mm512_set1_epi8(16));
    }
};

struct Q6KZ {
    static constexpr DType kType = DType::Q6_K;
    static constexpr bool kPer32 = false;
    LCW_QZ static void prep(const uint8_t* b, RowZ& r) {
        const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
        r.sc = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(s8));
        r.d = _cvtsh_ss(rd16(b + 208));
        r.bias =
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(s8)), _mm512_set1_ps(32 * r.d));
    }
    // Step c: half h = c/2; c even: low nibbles of ql[64h .. 64h+63] with qh bits 0-1 (first 32)
    // and 2-3 (next 32); c odd: high nibbles with bits 4-5 and 6-7.
    LCW_QZ static __m512i codes(const uint8_t* b, int c) {
        const int h = c / 2;
        const __m512i l = _mm512_loadu_si512(b + 64 * h);
        const __m512i qh = bcastZ(b + 128 + 32 * h);
        const __m512i w16a = _mm512_setr_epi64(
            0x0004000400040004ll, 0x0004000400040004ll, 0x0004000400040004ll, 0x0004000400040004ll,
            0x0002000200020002ll, 0x0002000200020002ll, 0x0002000200020002ll, 0x0002000200020002ll);
        const __m512i w16b =
            _mm512_setr_epi64(0, 0, 0, 0, 0x0002000200020002ll, 0x0002000200020002ll,
                              0x0002000200020002ll, 0x0002000200020002ll);
        const __m512i lo = c % 2 ? _mm512_srli_epi16(l, 4) : l;
        const __m512i hi = c % 2 ? _mm512_srlv_epi16(qh, w16b) : _mm512_sllv_epi16(qh, w16a);
        // (lo & 0x0F) | (hi & 0x30)
        return _mm512_ternarylogic_epi32(lo, _mm512_set1_epi8(0x0F),
                                         _mm512_and_si512(hi, _mm512_set1_epi8(0x30)), 0xEA);
    }
};

struct Q3KZ {
    static constexpr DType kType = DType::Q3_K;
    static constexpr bool kPer32 = false;
    LCW_QZ static void prep(const uint8_t* b, RowZ& r) {
        const __m256i s16 =
            _mm256_sub_epi16(_mm256_cvtepu8_epi16(q3ScalesVec(b + 96)), _mm256_set1_epi16(32));
        r.sc = _mm512_zextsi256_si512(s16);
        r.d = _cvtsh_ss(rd16(b + 108));
        r.bias =
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(s16)), _mm512_set1_ps(4 * r.d));
    }
    // Step c: half h = c/2, groups of 32 g0 = 2(c%2) and g0+1.
    LCW_QZ static __m512i codes(const uint8_t* b, int c) {
        const int h = c / 2, g0 = 2 * (c % 2);
        const __m512i lo = _mm512_and_si512(
            _mm512_srlv_epi64(bcastZ(b + 32 + 32 * h), counts64(2 * g0, 2 * g0 + 2)),
            _mm512_set1_epi8(3));
        const __m512i bits = _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull,
                                                    _mm512_set1_epi8(char(1u << (4 * h + g0))),
                                                    _mm512_set1_epi8(char(1u << (4 * h + g0 + 1))));
        const __mmask64 k = _mm512_test_epi8_mask(bcastZ(b), bits);
        return _mm512_mask_add_epi8(lo, k, lo, _mm512_set1_epi8(4));
    }
};

struct Q2KZ {
    static constexpr DType kType = DType::Q2_K;
    static constexpr bool kPer32 = false;
    LCW_QZ static void prep(const uint8_t* b, RowZ& r) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
        const __m128i m4 = _mm_set1_epi8(0x0F);
        r.sc = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(v, m4)));
        const __m128i mins = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        r.bias = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mins)), halfZ(b + 82));
        r.d = _cvtsh_ss(rd16(b + 80));
    }
    LCW_QZ static __m512i codes(const uint8_t* b, int c) {
        const int h = c / 2, g0 = 2 * (c % 2);
        return _mm512_and_si512(
            _mm512_srlv_epi64(bcastZ(b + 16 + 32 * h), counts64(2 * g0, 2 * g0 + 2)),
            _mm512_set1_epi8(3));
    }
};

struct Iq4XsZ {
    static constexpr DType kType = DType::IQ4_XS;
    static constexpr bool kPer32 = true;
    LCW_QZ static void prep(const uint8_t* b, RowZ& r) {
        const __m256i s = _mm256_sub_epi32(iq4xsScalesVec(b), _mm256_set1_epi32(32));
        r.sc = _mm512_zextsi128_si512(_mm256_cvtepi32_epi16(s));
        r.d = _cvtsh_ss(rd16(b));
    }
    // Step c: blocks 2c and 2c+1 (qs[32c .. 32c+31]): low then high nibbles of each 16 bytes.
    LCW_QZ static __m512i codes(const uint8_t* b, int c) {
        const __m512i q = _mm512_castsi256_si512(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 8 + 32 * c)));
        const __m512i aabb = _mm512_shuffle_i64x2(q, q, 0x50);
        const __m512i idx =
            _mm512_and_si512(_mm512_srlv_epi64(aabb, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                             _mm512_set1_epi8(0x0F));
        const __m512i table =
            _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
        return _mm512_shuffle_epi8(table, idx);
    }
};

// vpermw indices of step c: int16 lane i takes scale 2c + i/16 (scales per 32 values) or
// 4c + i/8 (per 16).
struct ScaleIdx {
    alignas(64) int16_t per32[4][32];
    alignas(64) int16_t per16[4][32];
    constexpr ScaleIdx() : per32{}, per16{} {
        for (int c = 0; c < 4; ++c)
            for (int i = 0; i < 32; ++i) {
                per32[c][i] = int16_t(2 * c + i / 16);
                per16[c][i] = int16_t(4 * c + i / 8);
            }
    }
};
constexpr ScaleIdx kScaleIdx;

// The token side of one Q8_K block, computed once per call: da and da·bsums.
struct TokZ {
    alignas(64) float fb[16];
    float da;
};

LCW_QZ void tokSideZ(const uint8_t* x, size_t ldx, int64_t nTok, int64_t nb, TokZ* out) {
    for (int64_t t = 0; t < nTok; ++t)
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* xb = x + size_t(t) * ldx + size_t(b) * kQ8KBytes;
            TokZ& o = out[t * nb + b];
            o.da = rdF32(xb);
            const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + kQ8KSums));
            _mm512_store_ps(o.fb, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(s)),
                                                _mm512_set1_ps(o.da)));
        }
}

template <class K, int NR, int NT>
LCW_QZ void microZ(const uint8_t* w, size_t ldw, const uint8_t* x, size_t ldx, const TokZ* tok,
                   int64_t nb, float* y, int64_t ldy) {
    constexpr TypeInfo ti = infoOf<K>();
    constexpr bool kSigned = ti.bias == Bias::None;
    __m512 acc[NR][NT];
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* wb = w + size_t(b) * ti.bytes;
        const uint8_t* xb = x + size_t(b) * kQ8KBytes;
        for (int r = 0; r < NR; ++r)
            for (size_t o = 0; o < ti.bytes; o += 64)
                _mm_prefetch(
                    reinterpret_cast<const char*>(wb + r * ldw + kPrefetchBlocks * ti.bytes + o),
                    _MM_HINT_T0);
        RowZ rw[NR];
        for (int r = 0; r < NR; ++r) K::prep(wb + r * ldw, rw[r]);
        __m512i is[NR][NT];
        for (int r = 0; r < NR; ++r)
            for (int t = 0; t < NT; ++t) is[r][t] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m512i idx =
                _mm512_load_si512(K::kPer32 ? kScaleIdx.per32[c] : kScaleIdx.per16[c]);
            for (int r = 0; r < NR; ++r) {
                __m512i wv = K::codes(wb + r * ldw, c);
                const __m512i s = _mm512_permutexvar_epi16(idx, rw[r].sc);
                __mmask64 neg = 0;
                if constexpr (kSigned) {
                    neg = _mm512_movepi8_mask(wv);
                    wv = _mm512_abs_epi8(wv);
                }
                for (int t = 0; t < NT; ++t) {
                    __m512i a = _mm512_loadu_si512(xb + t * ldx + kQ8KQs + 64 * c);
                    if constexpr (kSigned)
                        a = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
                    is[r][t] = _mm512_dpwssd_epi32(is[r][t], _mm512_maddubs_epi16(wv, a), s);
                }
            }
        }
        for (int t = 0; t < NT; ++t) {
            const TokZ& tz = tok[t * nb + b];
            for (int r = 0; r < NR; ++r) {
                __m512 a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][t]),
                                           _mm512_set1_ps(rw[r].d * tz.da), acc[r][t]);
                if constexpr (!kSigned) a = _mm512_fnmadd_ps(rw[r].bias, _mm512_load_ps(tz.fb), a);
                acc[r][t] = a;
            }
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// ---- repacked K-quants (qdot.h: repackRows; layout in kRepackK above) ----
//
// 16 rows per group, one dword lane per row: vpdpbusd multiplies 4 unsigned codes of each of the
// 16 rows with 4 broadcast activation bytes, so one instruction serves 16 rows and the scales
// and mins are unpacked once per 16 rows. Per super-block the arithmetic is the portable
// version's (gemmGeneric): the same exact integer sums, then (d·da)·isum − (dmin·da)·bsum or
// (d·da)·(isum − offset·bsum) in the same float operations, so the repacked product is the
// portable one bit for bit.

// Token side of one Q8_K block: da, and Q4_K / Q5_K: the 32-value sums as int16 pairs (sums 0
// and 2, 1 and 3, 4 and 6, 5 and 7: the pairs of mins the kernel forms); Q2_K: the 16-value
// bsums as int16 pairs in the same order (bsums 0 and 2, 1 and 3, 4 and 6, ...); Q6_K:
// −32·bsums[k]; Q3_K: −4·bsums[k]; IQ4_XS: −128 times the 32-value sums (its signed values are
// read +128, unsigned).
struct TokR {
    alignas(64) int32_t v[16];
    float da;
};

// Every tile of a call recomputes it for all the call's tokens (a prefill tile of 16 rows runs
// over 512 tokens), so it is a few vector operations per block.
template <DType T>
LCW_AVX2 void tokSideR(const uint8_t* x, size_t ldx, int64_t nTok, int64_t nb, TokR* out) {
    const __m128i ord = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
    for (int64_t t = 0; t < nTok; ++t)
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* xb = x + size_t(t) * ldx + size_t(b) * kQ8KBytes;
            TokR& o = out[t * nb + b];
            o.da = rdF32(xb);
            const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + kQ8KSums));
            if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
                // 32-value sums s0..s7 (|s| <= 4096: int16), reordered to s0 s2 s1 s3 s4 s6 s5 s7.
                const __m256i s32 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
                const __m128i s16 =
                    _mm_packs_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
                _mm_store_si128(reinterpret_cast<__m128i*>(o.v), _mm_shuffle_epi8(s16, ord));
            } else if constexpr (T == DType::Q2_K) {
                // bsums 0..15 reordered to 0 2 1 3 4 6 5 7 | 8 10 9 11 12 14 13 15.
                _mm256_store_si256(reinterpret_cast<__m256i*>(o.v),
                                   _mm256_shuffle_epi8(bs, _mm256_broadcastsi128_si256(ord)));
            } else if constexpr (T == DType::IQ4_XS) {
                const __m256i s32 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
                _mm256_store_si256(
                    reinterpret_cast<__m256i*>(o.v),
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s32, 7)));
            } else { // −offset·bsums (Q6_K: 32, Q3_K: 4)
                constexpr int kShift = std::countr_zero(unsigned(info<T>().offset));
                static_assert(info<T>().offset == 1 << kShift);
                for (int i = 0; i < 2; ++i)
                    _mm256_store_si256(
                        reinterpret_cast<__m256i*>(o.v + 8 * i),
                        _mm256_sub_epi32(_mm256_setzero_si256(),
                                         _mm256_slli_epi32(_mm256_cvtepi16_epi32(
                                                               i ? _mm256_extracti128_si256(bs, 1)
                                                                 : _mm256_castsi256_si128(bs)),
                                                           kShift)));
            }
        }
}

// Fetch the group's stream this many super-blocks ahead (4.6 KB for Q4_K).
constexpr int64_t kRepackAhead = 2;

// The float steps as separately rounded operations (the _round forms are never fused into an
// FMA, which -ffp-contract would do to plain vector * and +): the portable version's roundings.
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
LCW_QZ inline __m512 mulR(__m512 a, __m512 b) {
    return _mm512_mul_round_ps(a, b, kRound);
}

LCW_QZ inline __m512i bcast32(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}
LCW_QZ inline __m512i byteOf(__m512i v, int j) { // byte j of each dword, zero-extended
    return _mm512_and_si512(_mm512_srli_epi32(v, 8 * j), _mm512_set1_epi32(0xFF));
}
LCW_QZ inline __m512i sbyteOf(__m512i v, int j) { // byte j of each dword, sign-extended
    return _mm512_srai_epi32(_mm512_slli_epi32(v, unsigned(24 - 8 * j)), 24);
}
LCW_QZ inline __m512i shiftBits(__m512i v, int s) { // left by s, right by −s (32-bit lanes)
    return s >= 0 ? _mm512_slli_epi32(v, unsigned(s)) : _mm512_srli_epi32(v, unsigned(-s));
}
LCW_AVX2 inline void prefetchRange(const uint8_t* p, int bytes) {
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}
LCW_QZ inline __m512i loadZ(const uint8_t* p) {
    return _mm512_loadu_si512(p);
}

// One group of 16 rows (nr of them real) × NT tokens over all nb super-blocks: per super-block
// K::sums forms the exact integer sums of the group (isc: Σ_k s_k·Σ u·q, the offset bias
// included; imn: Σ_k min_k·bsum_k for types with mins), then the portable version's float step.
// tok: the group's token sides (token t, block b at tok[t·nb + b]).
template <class K, int NT>
LCW_QZ void repackedGroup(const uint8_t* wg, int64_t nb, const uint8_t* x, size_t ldx,
                          const TokR* tok, float* y, int64_t ldy, int nr) {
    constexpr int kBytes = kRepackK(K::kType).bytes();
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* p = wg + b * kBytes;
        const uint8_t* xb = x + size_t(b) * kQ8KBytes + kQ8KQs;
        prefetchRange(p + kRepackAhead * kBytes, K::kHead);
        __m512i isc[NT], imn[NT];
        for (int t = 0; t < NT; ++t) isc[t] = imn[t] = _mm512_setzero_si512();
        K::template sums<NT>(p, p + kRepackAhead * kBytes, xb, ldx, tok + b, nb, isc, imn);
        // d: the 16 rows' f16 scales first in every layout; dmin next for types with mins.
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        for (int t = 0; t < NT; ++t) {
            const TokR& tk = tok[t * nb + b];
            const __m512 da = _mm512_set1_ps(tk.da);
            const __m512 a = mulR(mulR(d, da), _mm512_cvtepi32_ps(isc[t]));
            if constexpr (K::kMins) {
                const __m512 dm =
                    _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
                const __m512 m = mulR(mulR(dm, da), _mm512_cvtepi32_ps(imn[t]));
                acc[t] = _mm512_add_round_ps(acc[t], _mm512_sub_round_ps(a, m, kRound), kRound);
            } else {
                acc[t] = _mm512_add_round_ps(acc[t], a, kRound);
            }
        }
    }
    const __mmask16 k = __mmask16((1u << nr) - 1);
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, k, acc[t]);
}

// The K::sums of each type. p: the group's super-block, pf: the same place kRepackAhead blocks on
// (prefetched as it is read), xb: token 0's activation codes of the block, tb: token 0's side of
// the block (token t at tb[t·nb]).

// Q4_K / Q5_K: values 64c .. 64c+31 (group of 32 2c) in the low nibbles of words 8c .. 8c+7,
// the next 32 (group 2c+1) in the high nibbles; Q5_K: their fifth bits are bits 2c and 2c+1 of
// the bytes of qh word k (value 64c + l: qh byte l). Scales and mins: unpackScaleMin on 16 rows.
template <bool kQ5> struct Q45KR {
    static constexpr DType kType = kQ5 ? DType::Q5_K : DType::Q4_K;
    static constexpr bool kMins = true;
    static constexpr int kTokens = 4; // tokens per pass
    static constexpr KRepack f = kRepackK(kType);
    static constexpr int kScales = f.at(2), kQh = kQ5 ? f.at(3) : 0, kHead = f.at(f.n - 1);
    template <int NT>
    LCW_QZ static void sums(const uint8_t* p, const uint8_t* pf, const uint8_t* xb, size_t ldx,
                            const TokR* tb, int64_t nb, __m512i (&isc)[NT], __m512i (&imn)[NT]) {
        const __m512i m10 = _mm512_set1_epi8(0x10);
        const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F),
                      m30 = _mm512_set1_epi8(0x30), lo16 = _mm512_set1_epi32(0x00FF00FF);
        // Bytes j of sLo / sHi = scales j, 4 + j; of mLo / mHi = mins j, 4 + j.
        const __m512i v0 = loadZ(p + kScales), v1 = loadZ(p + kScales + 64),
                      v2 = loadZ(p + kScales + 128);
        const __m512i sLo = _mm512_and_si512(v0, m6), mLo = _mm512_and_si512(v1, m6);
        const __m512i sHi = _mm512_or_si512(_mm512_and_si512(v2, m4),
                                            _mm512_and_si512(_mm512_srli_epi32(v0, 2), m30));
        const __m512i mHi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(v2, 4), m4),
                                            _mm512_and_si512(_mm512_srli_epi32(v1, 2), m30));
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            __m512i s0[NT], s1[NT];
            for (int t = 0; t < NT; ++t) s0[t] = s1[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int k = 0; k < 8; ++k) {
                const int off = kHead + (8 * c + k) * 64;
                _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
                const __m512i v = loadZ(p + off);
                __m512i lo = _mm512_and_si512(v, m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), m4);
                if constexpr (kQ5) {
                    const __m512i h = loadZ(p + kQh + 64 * k);
                    // Bit 2c (2c + 1) of each byte to bit 4: (bit 4 comes from its own byte).
                    lo = _mm512_or_si512(lo, _mm512_and_si512(shiftBits(h, 4 - 2 * c), m10));
                    hi = _mm512_or_si512(hi, _mm512_and_si512(shiftBits(h, 3 - 2 * c), m10));
                }
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xt = xb + t * ldx + 64 * c + 4 * k;
                    s0[t] = _mm512_dpbusd_epi32(s0[t], lo, bcast32(xt));
                    s1[t] = _mm512_dpbusd_epi32(s1[t], hi, bcast32(xt + 32));
                }
            }
            const __m512i sv = c < 2 ? sLo : sHi;
            const __m512i c0 = byteOf(sv, (2 * c) % 4), c1 = byteOf(sv, (2 * c) % 4 + 1);
            for (int t = 0; t < NT; ++t)
                isc[t] = _mm512_add_epi32(isc[t], _mm512_add_epi32(_mm512_mullo_epi32(s0[t], c0),
                                                                   _mm512_mullo_epi32(s1[t], c1)));
        }
        // Mins as int16 pairs (0, 2), (1, 3), (4, 6), (5, 7) against TokR's 32-value sums.
        const __m512i mp[4] = {_mm512_and_si512(mLo, lo16), _mm512_srli_epi16(mLo, 8),
                               _mm512_and_si512(mHi, lo16), _mm512_srli_epi16(mHi, 8)};
        for (int t = 0; t < NT; ++t)
            for (int q = 0; q < 4; ++q)
                imn[t] = _mm512_dpwssd_epi32(imn[t], mp[q], _mm512_set1_epi32(tb[t * nb].v[q]));
    }
};

// The sums of the types whose code words carry four code sets (Q2_K, Q3_K, Q6_K): per half h of
// the super-block and half g of its 32-value groups, word k = 4g + kk of the half gives four code
// vectors i (values 128h + 32i + 4k .. +3 of the 16 rows), multiplied with the activation bytes
// there; group of 16 m = 8h + 2i + g then adds s_m times its sum. The sums start at TokR's
// v[m] (the offset types' −offset·bsum[m]) or at 0. C (a small struct over the block) gives
// codes(h, k, q): word k's four code vectors (prefetching what it reads kRepackAhead blocks on),
// and scale(m): s_m as int32 lanes.
template <bool kFromTok, int NT, class C>
LCW_QZ inline void fourSetSums(const C& c, const uint8_t* xb, size_t ldx, const TokR* tb,
                               int64_t nb, __m512i (&isc)[NT]) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h)
#pragma GCC unroll 2
        for (int g = 0; g < 2; ++g) {
            __m512i s[4][NT];
            for (int i = 0; i < 4; ++i)
                for (int t = 0; t < NT; ++t)
                    s[i][t] = kFromTok ? _mm512_set1_epi32(tb[t * nb].v[8 * h + 2 * i + g])
                                       : _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int kk = 0; kk < 4; ++kk) {
                const int k = 4 * g + kk;
                __m512i q[4];
                c.codes(h, k, q);
                for (int i = 0; i < 4; ++i)
                    for (int t = 0; t < NT; ++t)
                        s[i][t] = _mm512_dpbusd_epi32(
                            s[i][t], q[i], bcast32(xb + t * ldx + 128 * h + 32 * i + 4 * k));
            }
            for (int i = 0; i < 4; ++i) {
                const __m512i sc = c.scale(8 * h + 2 * i + g);
                for (int t = 0; t < NT; ++t)
                    isc[t] = _mm512_add_epi32(isc[t], _mm512_mullo_epi32(s[i][t], sc));
            }
        }
}

// Q2_K: value 128h + 32i + l is bits 2i, 2i+1 of qs byte 32h + l (word 8h + l/4); group of 16
// m = 8h + 2i + l/16. Scale m: low nibble of scales byte m, min m: its high nibble.
struct Q2KR {
    static constexpr DType kType = DType::Q2_K;
    static constexpr bool kMins = true;
    static constexpr int kTokens = 3; // tokens per pass: four code sets need the registers
    static constexpr KRepack f = kRepackK(kType);
    static constexpr int kScales = f.at(2), kHead = f.at(3);
    struct Block {
        const uint8_t *p, *pf;
        __m512i m3, m4;
        LCW_QZ void codes(int h, int k, __m512i (&q)[4]) const {
            const int off = kHead + (8 * h + k) * 64;
            _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
            const __m512i v = loadZ(p + off);
            for (int i = 0; i < 4; ++i) q[i] = _mm512_and_si512(shiftBits(v, -2 * i), m3);
        }
        LCW_QZ __m512i scale(int m) const {
            return _mm512_and_si512(shiftBits(loadZ(p + kScales + 64 * (m / 4)), -8 * (m % 4)),
                                    _mm512_set1_epi32(0x0F));
        }
    };
    template <int NT>
    LCW_QZ static void sums(const uint8_t* p, const uint8_t* pf, const uint8_t* xb, size_t ldx,
                            const TokR* tb, int64_t nb, __m512i (&isc)[NT], __m512i (&imn)[NT]) {
        const Block c{p, pf, _mm512_set1_epi8(3), _mm512_set1_epi8(0x0F)};
        fourSetSums<false, NT>(c, xb, ldx, tb, nb, isc);
        // Mins (high nibbles) as int16 pairs (4j, 4j+2), (4j+1, 4j+3) against TokR's bsums.
        for (int j = 0; j < 4; ++j) {
            const __m512i mn =
                _mm512_and_si512(_mm512_srli_epi32(loadZ(p + kScales + 64 * j), 4), c.m4);
            const __m512i mp[2] = {_mm512_and_si512(mn, _mm512_set1_epi32(0x00FF00FF)),
                                   _mm512_srli_epi16(mn, 8)};
            for (int t = 0; t < NT; ++t)
                for (int q = 0; q < 2; ++q)
                    imn[t] = _mm512_dpwssd_epi32(imn[t], mp[q],
                                                 _mm512_set1_epi32(tb[t * nb].v[2 * j + q]));
        }
    }
};

// Q3_K: value 128h + 32i + l is bits 2i, 2i+1 of qs byte 32h + l (word 8h + l/4) plus 4 × bit
// 4h + i of hmask byte l (word l/4); group of 16 m = 8h + 2i + l/16, its scale (stored +32) from
// the three scale words as unpackQ3Scales packs it. Sums start at −4·bsum (codes stored +4).
struct Q3KR {
    static constexpr DType kType = DType::Q3_K;
    static constexpr bool kMins = false;
    static constexpr int kTokens = 3; // tokens per pass: four code sets need the registers
    static constexpr KRepack f = kRepackK(kType);
    static constexpr int kScales = f.at(1), kHm = f.at(2), kHead = f.at(3);
    struct Block {
        const uint8_t *p, *pf;
        __m512i m3, m4;
        __m512i sc[4]; // byte j of sc[w]: scale 4w + j, signed
        LCW_QZ void codes(int h, int k, __m512i (&q)[4]) const {
            const int off = kHead + (8 * h + k) * 64;
            _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
            const __m512i v = loadZ(p + off), hm = loadZ(p + kHm + 64 * k);
            // (v >> 2i) & 3 | (hmask bit 4h + i moved to bit 2)
            for (int i = 0; i < 4; ++i)
                q[i] = _mm512_ternarylogic_epi32(
                    shiftBits(v, -2 * i), m3, _mm512_and_si512(shiftBits(hm, 2 - (4 * h + i)), m4),
                    0xEA);
        }
        LCW_QZ __m512i scale(int m) const { return sbyteOf(sc[m / 4], m % 4); }
    };
    template <int NT>
    LCW_QZ static void sums(const uint8_t* p, const uint8_t* pf, const uint8_t* xb, size_t ldx,
                            const TokR* tb, int64_t nb, __m512i (&isc)[NT], __m512i (&)[NT]) {
        Block c{p, pf, _mm512_set1_epi8(3), _mm512_set1_epi8(4), {}};
        // unpackQ3Scales on 16 rows, less 32.
        const __m512i mf = _mm512_set1_epi8(0x0F);
        const __m512i a0 = loadZ(p + kScales), a1 = loadZ(p + kScales + 64),
                      a2 = loadZ(p + kScales + 128);
        for (int w = 0; w < 4; ++w) {
            const __m512i lo = _mm512_and_si512(shiftBits(w % 2 ? a1 : a0, -4 * (w / 2)), mf);
            const __m512i hi = _mm512_and_si512(shiftBits(a2, -2 * w), c.m3);
            c.sc[w] = _mm512_sub_epi8(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)),
                                      _mm512_set1_epi8(32));
        }
        fourSetSums<true, NT>(c, xb, ldx, tb, nb, isc);
    }
};

// Q6_K: code set i of word trio k (ql words k and 8 + k of the half, qh word k) is the low (i
// = 0, 1) or high (i = 2, 3) nibbles of ql word k (i even) or 8 + k (i odd) with qh bits 2i,
// 2i + 1 on top; sums start at −32·bsum (codes stored +32).
struct Q6KR {
    static constexpr DType kType = DType::Q6_K;
    static constexpr bool kMins = false;
    static constexpr int kTokens = 3; // tokens per pass: four code sets need the registers
    static constexpr KRepack f = kRepackK(kType);
    static constexpr int kScales = f.at(1), kHead = f.at(2), kQh = f.at(3);
    struct Block {
        const uint8_t *p, *pf;
        __m512i m4, m30;
        LCW_QZ void codes(int h, int k, __m512i (&q)[4]) const {
            const int oa = kHead + (16 * h + k) * 64, ob = oa + 8 * 64, oh = kQh + (8 * h + k) * 64;
            for (int o : {oa, ob, oh})
                _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T0);
            const __m512i A = loadZ(p + oa), B = loadZ(p + ob), H = loadZ(p + oh);
            q[0] = _mm512_or_si512(_mm512_and_si512(A, m4),
                                   _mm512_and_si512(_mm512_slli_epi32(H, 4), m30));
            q[1] = _mm512_or_si512(_mm512_and_si512(B, m4),
                                   _mm512_and_si512(_mm512_slli_epi32(H, 2), m30));
            q[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(A, 4), m4),
                                   _mm512_and_si512(H, m30));
            q[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(B, 4), m4),
                                   _mm512_and_si512(_mm512_srli_epi32(H, 2), m30));
        }
        LCW_QZ __m512i scale(int m) const {
            return sbyteOf(loadZ(p + kScales + 64 * (m / 4)), m % 4);
        }
    };
    template <int NT>
    LCW_QZ static void sums(const uint8_t* p, const uint8_t* pf, const uint8_t* xb, size_t ldx,
                            const TokR* tb, int64_t nb, __m512i (&isc)[NT], __m512i (&)[NT]) {
        const Block c{p, pf, _mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30)};
        fourSetSums<true, NT>(c, xb, ldx, tb, nb, isc);
    }
};

// IQ4_XS: the 4-bit codes index the IQ4 code book +128 (vpshufb, unsigned for vpdpbusd); each
// 32-value sum starts at −128·Σx (TokR), so it is Σ value·x exactly.
struct Iq4XsR {
    static constexpr DType kType = DType::IQ4_XS;
    static constexpr bool kMins = false;
    static constexpr int kTokens = 4; // tokens per pass
    static constexpr KRepack f = kRepackK(kType);
    static constexpr int kSh = f.at(1), kSl = f.at(2), kHead = f.at(3);
    template <int NT>
    LCW_QZ static void sums(const uint8_t* p, const uint8_t* pf, const uint8_t* xb, size_t ldx,
                            const TokR* tb, int64_t nb, __m512i (&isc)[NT], __m512i (&)[NT]) {
        const __m512i m4 = _mm512_set1_epi8(0x0F);
        const __m512i book = _mm512_add_epi8(
            _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Values))),
            _mm512_set1_epi8(char(0x80)));
        const __m512i sh =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kSh)));
        const __m512i sl = loadZ(p + kSl);
#pragma GCC unroll 2
        for (int ib = 0; ib < 8; ++ib) {
            __m512i s[NT];
            for (int t = 0; t < NT; ++t) s[t] = _mm512_set1_epi32(tb[t * nb].v[ib]);
#pragma GCC unroll 4
            for (int k = 0; k < 4; ++k) {
                // Word k of block ib: bytes 4k..4k+3, values 4k.. (low nibbles), 16+4k.. (high).
                const int off = kHead + (4 * ib + k) * 64;
                _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
                const __m512i v = loadZ(p + off);
                const __m512i lo = _mm512_shuffle_epi8(book, _mm512_and_si512(v, m4));
                const __m512i hi =
                    _mm512_shuffle_epi8(book, _mm512_and_si512(_mm512_srli_epi32(v, 4), m4));
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xt = xb + t * ldx + 32 * ib + 4 * k;
                    s[t] = _mm512_dpbusd_epi32(s[t], lo, bcast32(xt));
                    s[t] = _mm512_dpbusd_epi32(s[t], hi, bcast32(xt + 16));
                }
            }
            // Block scale ib: 4 bits of scales_l, 2 of scales_h, stored +32.
            const __m512i ls = _mm512_sub_epi32(
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi32(sl, unsigned(4 * ib)),
                                     _mm512_set1_epi32(15)),
                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(sh, unsigned(2 * ib)),
                                                       _mm512_set1_epi32(3)),
                                      4)),
                _mm512_set1_epi32(32));
            for (int t = 0; t < NT; ++t)
                isc[t] = _mm512_add_epi32(isc[t], _mm512_mullo_epi32(s[t], ls));
        }
    }
};

// A repacked call: the token sides of all its tokens, then group.template operator()<NT>(wg, x,
// tok, y, nr, nb) for every block of NT <= kNT tokens and group of 16 rows (nr of them real) —
// wg the group, x the block's first activation row, tok its token sides, y its first output.
template <DType T, int kNT, class Group>
void repackedCall(const std::byte* wr, int64_t nRows, const std::byte* xq, size_t ldx, int64_t nTok,
                  float* y, int64_t ldy, int64_t n, Group group) {
    const int64_t nb = n / kQK;
    const size_t gb = repackedGroupBytes(T, n);
    thread_local std::vector<TokR> tok;
    if (tok.size() < size_t(nTok * nb)) tok.resize(size_t(nTok * nb));
    tokSideR<T>(u8(xq), ldx, nTok, nb, tok.data());
    for (int64_t t0 = 0; t0 < nTok; t0 += kNT)
        for (int64_t r0 = 0; r0 < nRows; r0 += kRepackRows) {
            const int nt = int(std::min<int64_t>(kNT, nTok - t0));
            const int nr = int(std::min<int64_t>(kRepackRows, nRows - r0));
            const uint8_t* wg = u8(wr) + size_t(r0 / kRepackRows) * gb;
            [&]<int... I>(std::integer_sequence<int, I...>) {
                ((nt == I + 1 ? (group.template operator()<I + 1>(wg, u8(xq) + size_t(t0) * ldx,
                                                                  tok.data() + t0 * nb,
                                                                  y + t0 * ldy + r0, nr, nb),
                                 0)
                              : 0),
                 ...);
            }
            (std::make_integer_sequence<int, kNT>{});
        }
}

// Tokens in blocks of up to K::kTokens over every group of the call.
template <class K>
void gemmRepackedK(const std::byte* wr, int64_t nRows, const std::byte* xq, size_t ldx,
                   int64_t nTok, float* y, int64_t ldy, int64_t n) {
    repackedCall<K::kType, K::kTokens>(
        wr, nRows, xq, ldx, nTok, y, ldy, n,
        [ldx, ldy]<int NT>(const uint8_t* wg, const uint8_t* x, const TokR* tk, float* yo, int nr,
                           int64_t nb) { repackedGroup<K, NT>(wg, nb, x, ldx, tk, yo, ldy, nr); });
}

// ================= AVX2, repacked (every K-quant) =================
// The arithmetic of the AVX-512 repacked kernels (the *R structs above) on the 8-row halves of a
// group (each field's 32-byte half: rows 8h .. 8h+7), without VNNI: vpmaddubsw pair sums add up
// in int16 over runs of words short enough not to overflow (|q| <= 127: Q8_K's quantiser maps
// the extreme to ±127), and vpmaddwd against the scale in both int16 halves of a row's lane gives
// the scaled int32 sum; mins by vpmaddwd as there. The same integer sums and float steps as the
// portable version, so its bits.

// a·b rounded to float, opaque to the compiler so that no later add is fused with it into an
// FMA (the portable version rounds every product).
LCW_AVX2 inline __m256 mulY(__m256 a, __m256 b) {
    __m256 r = _mm256_mul_ps(a, b);
    asm("" : "+x"(r));
    return r;
}

LCW_AVX2 inline __m256i shiftBitsY(__m256i v, int s) { // left by s, right by −s (32-bit lanes)
    return s >= 0 ? _mm256_slli_epi32(v, s) : _mm256_srli_epi32(v, -s);
}
// Half hh (rows 8hh ..) of the 16-row field word at p + off.
LCW_AVX2 inline __m256i wordsY(const uint8_t* p, int off, int hh) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + off + 32 * hh));
}
// An int32 lane value v (|v| < 2^15) in both int16 halves: vpmaddwd then scales a pair sum by v.
LCW_AVX2 inline __m256i bothHalves(__m256i v) {
    return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)),
                           _mm256_slli_epi32(v, 16));
}
// s[t] += vpmaddubsw(q, the 4 activation bytes at x + t·ldx), int16.
template <int NT>
LCW_AVX2 inline void pairSums(__m256i (&s)[NT], __m256i q, const uint8_t* x, size_t ldx) {
    for (int t = 0; t < NT; ++t) {
        int32_t a;
        std::memcpy(&a, x + t * ldx, 4);
        s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(q, _mm256_set1_epi32(a)));
    }
}
// The members every AVX2 repacked type takes from its AVX-512 one.
template <class R, bool kM> struct RepackedY {
    using Z = R;
    static constexpr DType kType = R::kType;
    static constexpr bool kMins = kM;
    static constexpr int kHead = R::kHead;
};

// Q4_K / Q5_K (Q45KR's words): a step's words in one run (Q4_K: 8 words of codes <= 15,
// 8·2·15·127 < 2^15) or two (Q5_K: 4 words each, codes <= 31).
template <bool kQ5> struct Q45KRY : RepackedY<Q45KR<kQ5>, true> {
    using Z = Q45KR<kQ5>;
    template <int NT>
    LCW_AVX2 static void sums(const uint8_t* p, const uint8_t* pf, int hh, const uint8_t* xb,
                              size_t ldx, const TokR* tb, int64_t nb, __m256i (&isc)[NT],
                              __m256i (&imn)[NT]) {
        const __m256i m10 = _mm256_set1_epi8(0x10), m4 = _mm256_set1_epi8(0x0F),
                      m6 = _mm256_set1_epi8(0x3F), m30 = _mm256_set1_epi8(0x30),
                      lo16 = _mm256_set1_epi32(0x00FF00FF), ff = _mm256_set1_epi32(0xFF);
        // Bytes j of sLo / sHi = scales j, 4 + j; of mLo / mHi = mins j, 4 + j.
        const __m256i v0 = wordsY(p, Z::kScales, hh), v1 = wordsY(p, Z::kScales + 64, hh),
                      v2 = wordsY(p, Z::kScales + 128, hh);
        const __m256i sLo = _mm256_and_si256(v0, m6), mLo = _mm256_and_si256(v1, m6);
        const __m256i sHi = _mm256_or_si256(_mm256_and_si256(v2, m4),
                                            _mm256_and_si256(_mm256_srli_epi32(v0, 2), m30));
        const __m256i mHi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(v2, 4), m4),
                                            _mm256_and_si256(_mm256_srli_epi32(v1, 2), m30));
        constexpr int kRun = kQ5 ? 4 : 8;
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i sv = c < 2 ? sLo : sHi;
            const int j = (2 * c) % 4;
            const __m256i c0 = bothHalves(_mm256_and_si256(_mm256_srli_epi32(sv, 8 * j), ff));
            const __m256i c1 = bothHalves(_mm256_and_si256(_mm256_srli_epi32(sv, 8 * j + 8), ff));
#pragma GCC unroll 2
            for (int k0 = 0; k0 < 8; k0 += kRun) {
                __m256i s0[NT], s1[NT];
                for (int t = 0; t < NT; ++t) s0[t] = s1[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int k = k0; k < k0 + kRun; ++k) {
                    const int off = Z::kHead + (8 * c + k) * 64;
                    _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
                    const __m256i v = wordsY(p, off, hh);
                    __m256i lo = _mm256_and_si256(v, m4);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi32(v, 4), m4);
                    if constexpr (kQ5) {
                        const __m256i q = wordsY(p, Z::kQh + 64 * k, hh);
                        lo = _mm256_or_si256(lo, _mm256_and_si256(shiftBitsY(q, 4 - 2 * c), m10));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(shiftBitsY(q, 3 - 2 * c), m10));
                    }
                    pairSums<NT>(s0, lo, xb + 64 * c + 4 * k, ldx);
                    pairSums<NT>(s1, hi, xb + 64 * c + 4 * k + 32, ldx);
                }
                for (int t = 0; t < NT; ++t)
                    isc[t] =
                        _mm256_add_epi32(isc[t], _mm256_add_epi32(_mm256_madd_epi16(s0[t], c0),
                                                                  _mm256_madd_epi16(s1[t], c1)));
            }
        }
        // Mins as int16 pairs (0, 2), (1, 3), (4, 6), (5, 7) against TokR's 32-value sums.
        const __m256i mp[4] = {_mm256_and_si256(mLo, lo16), _mm256_srli_epi16(mLo, 8),
                               _mm256_and_si256(mHi, lo16), _mm256_srli_epi16(mHi, 8)};
        for (int t = 0; t < NT; ++t)
            for (int q = 0; q < 4; ++q)
                imn[t] = _mm256_add_epi32(
                    imn[t], _mm256_madd_epi16(mp[q], _mm256_set1_epi32(tb[t * nb].v[q])));
    }
};

// The four-code-set types (Q2_K, Q3_K, Q6_K; fourSetSums' order): per half h of the
// super-block, half g of its 32-value groups and code set i, group m = 8h + 2i + g sums its four
// words (values 128h + 32i + 4k ..) in runs of kRun words, scaled by s_m (C::scale: int32
// lanes); kFromTok: plus s_m times TokR's v[m] (the offset types' −offset·bsum_m, by vpmulld).
// C::code(h, k, i): code set i of word k of half h (prefetching what it reads when i is 0).
template <int kRun, bool kFromTok, int NT, class C>
LCW_AVX2 inline void fourSetSumsY(const C& c, const uint8_t* xb, size_t ldx, const TokR* tb,
                                  int64_t nb, __m256i (&isc)[NT]) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h)
#pragma GCC unroll 2
        for (int g = 0; g < 2; ++g)
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
                const int m = 8 * h + 2 * i + g;
                const __m256i sc = c.scale(m), sc2 = bothHalves(sc);
#pragma GCC unroll 2
                for (int k0 = 4 * g; k0 < 4 * g + 4; k0 += kRun) {
                    __m256i s[NT];
                    for (int t = 0; t < NT; ++t) s[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
                    for (int k = k0; k < k0 + kRun; ++k)
                        pairSums<NT>(s, c.code(h, k, i), xb + 128 * h + 32 * i + 4 * k, ldx);
                    for (int t = 0; t < NT; ++t)
                        isc[t] = _mm256_add_epi32(isc[t], _mm256_madd_epi16(s[t], sc2));
                }
                if constexpr (kFromTok)
                    for (int t = 0; t < NT; ++t)
                        isc[t] = _mm256_add_epi32(
                            isc[t], _mm256_mullo_epi32(sc, _mm256_set1_epi32(tb[t * nb].v[m])));
            }
}

// Q6_K (Q6KR's words): 6-bit codes, runs of two words (2·2·63·127 < 2^15).
struct Q6KRY : RepackedY<Q6KR, false> {
    struct Code {
        const uint8_t *p, *pf;
        int hh;
        LCW_AVX2 __m256i code(int h, int k, int i) const {
            const int ox = Z::kHead + (16 * h + 8 * (i % 2) + k) * 64;
            const int oh = Z::kQh + (8 * h + k) * 64;
            if (i < 2) _mm_prefetch(reinterpret_cast<const char*>(pf + ox), _MM_HINT_T0);
            if (i == 0) _mm_prefetch(reinterpret_cast<const char*>(pf + oh), _MM_HINT_T0);
            const __m256i X = wordsY(p, ox, hh);
            const __m256i lo =
                _mm256_and_si256(i < 2 ? X : _mm256_srli_epi32(X, 4), _mm256_set1_epi8(0x0F));
            return _mm256_or_si256(lo, _mm256_and_si256(shiftBitsY(wordsY(p, oh, hh), 4 - 2 * i),
                                                        _mm256_set1_epi8(0x30)));
        }
        LCW_AVX2 __m256i scale(int m) const { // int8 scale m, sign-extended
            return _mm256_srai_epi32(
                _mm256_slli_epi32(wordsY(p, Z::kScales + 64 * (m / 4), hh), 24 - 8 * (m % 4)), 24);
        }
    };
    template <int NT>
    LCW_AVX2 static void sums(const uint8_t* p, const uint8_t* pf, int hh, const uint8_t* xb,
                              size_t ldx, const TokR* tb, int64_t nb, __m256i (&isc)[NT],
                              __m256i (&)[NT]) {
        fourSetSumsY<2, true, NT>(Code{p, pf, hh}, xb, ldx, tb, nb, isc);
    }
};

// Q3_K (Q3KR's words): 3-bit codes (2 bits of qs, 1 of hmask), runs of four words; scales
// unpacked as unpackQ3Scales does, less 32.
struct Q3KRY : RepackedY<Q3KR, false> {
    struct Code {
        const uint8_t *p, *pf;
        int hh;
        __m256i sc[4]; // byte j of sc[w]: scale 4w + j, signed
        LCW_AVX2 __m256i code(int h, int k, int i) const {
            const int off = Z::kHead + (8 * h + k) * 64, om = Z::kHm + 64 * k;
            if (i == 0) {
                _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
                if (h == 0) _mm_prefetch(reinterpret_cast<const char*>(pf + om), _MM_HINT_T0);
            }
            // (v >> 2i) & 3 | (hmask bit 4h + i moved to bit 2)
            return _mm256_or_si256(
                _mm256_and_si256(shiftBitsY(wordsY(p, off, hh), -2 * i), _mm256_set1_epi8(3)),
                _mm256_and_si256(shiftBitsY(wordsY(p, om, hh), 2 - (4 * h + i)),
                                 _mm256_set1_epi8(4)));
        }
        LCW_AVX2 __m256i scale(int m) const {
            return _mm256_srai_epi32(_mm256_slli_epi32(sc[m / 4], 24 - 8 * (m % 4)), 24);
        }
    };
    template <int NT>
    LCW_AVX2 static void sums(const uint8_t* p, const uint8_t* pf, int hh, const uint8_t* xb,
                              size_t ldx, const TokR* tb, int64_t nb, __m256i (&isc)[NT],
                              __m256i (&)[NT]) {
        Code c{p, pf, hh, {}};
        const __m256i a0 = wordsY(p, Z::kScales, hh), a1 = wordsY(p, Z::kScales + 64, hh),
                      a2 = wordsY(p, Z::kScales + 128, hh);
        for (int w = 0; w < 4; ++w) {
            const __m256i lo =
                _mm256_and_si256(shiftBitsY(w % 2 ? a1 : a0, -4 * (w / 2)), _mm256_set1_epi8(15));
            const __m256i hi = _mm256_and_si256(shiftBitsY(a2, -2 * w), _mm256_set1_epi8(3));
            c.sc[w] = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)),
                                      _mm256_set1_epi8(32));
        }
        fourSetSumsY<4, true, NT>(c, xb, ldx, tb, nb, isc);
    }
};

// Q2_K (Q2KR's words): 2-bit codes, runs of four words; scale m the low nibble of scales byte
// m, min m its high nibble (vpmaddwd against TokR's bsum pairs as in Q2KR).
struct Q2KRY : RepackedY<Q2KR, true> {
    struct Code {
        const uint8_t *p, *pf;
        int hh;
        LCW_AVX2 __m256i code(int h, int k, int i) const {
            const int off = Z::kHead + (8 * h + k) * 64;
            if (i == 0) _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
            return _mm256_and_si256(_mm256_srli_epi32(wordsY(p, off, hh), 2 * i),
                                    _mm256_set1_epi8(3));
        }
        LCW_AVX2 __m256i scale(int m) const {
            return _mm256_and_si256(
                _mm256_srli_epi32(wordsY(p, Z::kScales + 64 * (m / 4), hh), 8 * (m % 4)),
                _mm256_set1_epi32(0x0F));
        }
    };
    template <int NT>
    LCW_AVX2 static void sums(const uint8_t* p, const uint8_t* pf, int hh, const uint8_t* xb,
                              size_t ldx, const TokR* tb, int64_t nb, __m256i (&isc)[NT],
                              __m256i (&imn)[NT]) {
        fourSetSumsY<4, false, NT>(Code{p, pf, hh}, xb, ldx, tb, nb, isc);
        // Mins (high nibbles) as int16 pairs (4j, 4j+2), (4j+1, 4j+3) against TokR's bsums.
        for (int j = 0; j < 4; ++j) {
            const __m256i mn = _mm256_and_si256(
                _mm256_srli_epi32(wordsY(p, Z::kScales + 64 * j, hh), 4), _mm256_set1_epi8(0x0F));
            const __m256i mp[2] = {_mm256_and_si256(mn, _mm256_set1_epi32(0x00FF00FF)),
                                   _mm256_srli_epi16(mn, 8)};
            for (int t = 0; t < NT; ++t)
                for (int q = 0; q < 2; ++q)
                    imn[t] = _mm256_add_epi32(
                        imn[t],
                        _mm256_madd_epi16(mp[q], _mm256_set1_epi32(tb[t * nb].v[2 * j + q])));
        }
    }
};

// IQ4_XS (Iq4XsR's words): the 4-bit codes look up the signed IQ4 code book (vpshufb), and
// vpmaddubsw multiplies |value| by the activation with the value's sign (|q| <= 127: a pair
// stays below 2^15); each word's pairs are scaled by vpmaddwd with the block scale in both
// int16 halves. The sums are exact without the AVX-512 kernel's +128 bias (TokR unused).
struct Iq4XsRY : RepackedY<Iq4XsR, false> {
    template <int NT>
    LCW_AVX2 static void sums(const uint8_t* p, const uint8_t* pf, int hh, const uint8_t* xb,
                              size_t ldx, const TokR*, int64_t, __m256i (&isc)[NT],
                              __m256i (&)[NT]) {
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        const __m256i book = _mm256_broadcastsi128_si256(
            _mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
        const __m256i sh = _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + Z::kSh + 16 * hh)));
        const __m256i sl = wordsY(p, Z::kSl, hh);
#pragma GCC unroll 2
        for (int ib = 0; ib < 8; ++ib) {
            // Block scale ib: 4 bits of scales_l, 2 of scales_h, stored +32.
            const __m256i ls = _mm256_sub_epi32(
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi32(sl, 4 * ib), _mm256_set1_epi32(15)),
                    _mm256_slli_epi32(
                        _mm256_and_si256(_mm256_srli_epi32(sh, 2 * ib), _mm256_set1_epi32(3)), 4)),
                _mm256_set1_epi32(32));
            const __m256i ls2 = bothHalves(ls);
#pragma GCC unroll 4
            for (int k = 0; k < 4; ++k) {
                // Word k of block ib: values 4k.. (low nibbles), 16+4k.. (high).
                const int off = Z::kHead + (4 * ib + k) * 64;
                _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
                const __m256i v = wordsY(p, off, hh);
                const __m256i lo = _mm256_shuffle_epi8(book, _mm256_and_si256(v, m4));
                const __m256i hi =
                    _mm256_shuffle_epi8(book, _mm256_and_si256(_mm256_srli_epi32(v, 4), m4));
                const __m256i alo = _mm256_sign_epi8(lo, lo), ahi = _mm256_sign_epi8(hi, hi);
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xt = xb + t * ldx + 32 * ib + 4 * k;
                    int32_t a, b;
                    std::memcpy(&a, xt, 4);
                    std::memcpy(&b, xt + 16, 4);
                    const __m256i pl =
                        _mm256_maddubs_epi16(alo, _mm256_sign_epi8(_mm256_set1_epi32(a), lo));
                    const __m256i ph =
                        _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(_mm256_set1_epi32(b), hi));
                    isc[t] = _mm256_add_epi32(isc[t], _mm256_add_epi32(_mm256_madd_epi16(pl, ls2),
                                                                       _mm256_madd_epi16(ph, ls2)));
                }
            }
        }
    }
};

// Halves h0 .. h0+NH-1 of one group (nr of its rows real; y at its first row) × NT tokens over
// all nb super-blocks; two halves in one sweep read the stream once.
template <class K, int NT, int NH>
LCW_AVX2 void repackedGroupY(const uint8_t* wg, int h0, int64_t nb, const uint8_t* x, size_t ldx,
                             const TokR* tok, float* y, int64_t ldy, int nr) {
    constexpr int kBytes = kRepackK(K::kType).bytes();
    __m256 acc[NH][NT];
    for (int i = 0; i < NH; ++i)
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* p = wg + b * kBytes;
        const uint8_t* xb = x + size_t(b) * kQ8KBytes + kQ8KQs;
        prefetchRange(p + kRepackAhead * kBytes, K::kHead);
#pragma GCC unroll 2
        for (int i = 0; i < NH; ++i) {
            const int h = h0 + i;
            __m256i isc[NT], imn[NT];
            for (int t = 0; t < NT; ++t) isc[t] = imn[t] = _mm256_setzero_si256();
            K::template sums<NT>(p, p + kRepackAhead * kBytes, h, xb, ldx, tok + b, nb, isc, imn);
            // The half's f16 d (16 rows' at p) and dmin (types with mins: at p + 32).
            const __m256 d =
                _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
            for (int t = 0; t < NT; ++t) {
                const __m256 da = _mm256_set1_ps(tok[t * nb + b].da);
                const __m256 a = mulY(mulY(d, da), _mm256_cvtepi32_ps(isc[t]));
                if constexpr (K::kMins) {
                    const __m256 dm = _mm256_cvtph_ps(
                        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32 + 16 * h)));
                    const __m256 m = mulY(mulY(dm, da), _mm256_cvtepi32_ps(imn[t]));
                    acc[i][t] = _mm256_add_ps(acc[i][t], _mm256_sub_ps(a, m));
                } else {
                    acc[i][t] = _mm256_add_ps(acc[i][t], a);
                }
            }
        }
    }
    for (int i = 0; i < NH; ++i) {
        const int n8 = std::min(8, nr - 8 * (h0 + i));
        const __m256i mask =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - n8));
        for (int t = 0; t < NT; ++t)
            _mm256_maskstore_ps(y + t * ldy + 8 * (h0 + i), mask, acc[i][t]);
    }
}

// Tokens in blocks of up to 3 (halves one after the other) or, for one or two, both halves per
// sweep.
template <class K>
void gemmRepackedKY(const std::byte* wr, int64_t nRows, const std::byte* xq, size_t ldx,
                    int64_t nTok, float* y, int64_t ldy, int64_t n) {
    constexpr int kNT = 3; // 2: 56, 3: 73, 4: 62 tok/s prefill (Q4_K_M 1.1B, LCW_ISA=avx2)
    repackedCall<K::kType, kNT>(
        wr, nRows, xq, ldx, nTok, y, ldy, n,
        [ldx, ldy]<int NT>(const uint8_t* wg, const uint8_t* x, const TokR* tk, float* yo, int nr,
                           int64_t nb) {
            if constexpr (NT <= 2)
                if (nr > 8) return repackedGroupY<K, NT, 2>(wg, 0, nb, x, ldx, tk, yo, ldy, nr);
            for (int h = 0; 8 * h < nr; ++h)
                repackedGroupY<K, NT, 1>(wg, h, nb, x, ldx, tk, yo, ldy, nr);
        });
}

// ---- Q8_K quantisers (bytes identical to q8kQuantizeGeneric) ----

LCW_AVX2 void quantizeQ8KAvx2(const float* x, void* dst, int64_t n) {
    auto* out = static_cast<uint8_t*>(dst);
    const __m256 signMask = _mm256_set1_ps(-0.f);
    for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += kQ8KBytes) {
        // max_ps returns its second operand when the first is NaN: NaNs never win.
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < kQK; j += 8)
            m = _mm256_max_ps(_mm256_andnot_ps(signMask, _mm256_loadu_ps(x + j)), m);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        const float amax = _mm_cvtss_f32(m4);
        if (amax == 0) {
            std::memset(out, 0, kQ8KBytes);
            continue;
        }
        int first = 0;
        const __m256 vmax = _mm256_set1_ps(amax);
        for (int j = 0; j < kQK; j += 8) {
            const int k = _mm256_movemask_ps(_mm256_cmp_ps(
                _mm256_andnot_ps(signMask, _mm256_loadu_ps(x + j)), vmax, _CMP_EQ_OQ));
            if (k) {
                first = j + __builtin_ctz(unsigned(k));
                break;
            }
        }
        const float iscale = -127.f / x[first];
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        int16_t sums[16];
        for (int j = 0; j < kQK; j += 32) {
            __m256i v[4];
            for (int i = 0; i < 4; ++i) {
                __m256 p = _mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * i));
                p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q)); // NaN → 0
                v[i] = _mm256_min_epi32(_mm256_cvtps_epi32(p), lim);
            }
            const __m256i p16a = _mm256_packs_epi32(v[0], v[1]);
            const __m256i p16b = _mm256_packs_epi32(v[2], v[3]);
            const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), order);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + kQ8KQs + j), p8);
            for (int g = 0; g < 2; ++g) {
                const __m256i s = _mm256_add_epi32(v[2 * g], v[2 * g + 1]);
                __m128i s4 =
                    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
                sums[j / 16 + g] = int16_t(_mm_cvtsi128_si32(s4));
            }
        }
        std::memcpy(out + kQ8KSums, sums, sizeof sums);
        const float d = 1 / iscale;
        std::memcpy(out, &d, 4);
    }
}

LCW_QZ void quantizeQ8KAvx512(const float* x, void* dst, int64_t n) {
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += kQ8KBytes) {
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < kQK; j += 16)
            m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j)), m);
        const float amax = _mm512_reduce_max_ps(m);
        if (amax == 0) {
            std::memset(out, 0, kQ8KBytes);
            continue;
        }
        int first = 0;
        const __m512 vmax = _mm512_set1_ps(amax);
        for (int j = 0; j < kQK; j += 16) {
            const __mmask16 k =
                _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)), vmax, _CMP_EQ_OQ);
            if (k) {
                first = j + __builtin_ctz(unsigned(k));
                break;
            }
        }
        const float iscale = -127.f / x[first];
        const __m512 vs = _mm512_set1_ps(iscale);
        const __m512i lim = _mm512_set1_epi32(127);
        int16_t sums[16];
        for (int g = 0; g < 16; ++g) {
            __m512 p = _mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * g));
            p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, p, _CMP_ORD_Q), p); // NaN → 0
            const __m512i v = _mm512_min_epi32(_mm512_cvtps_epi32(p), lim);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + kQ8KQs + 16 * g),
                             _mm512_cvtepi32_epi8(v));
            sums[g] = int16_t(_mm512_reduce_add_epi32(v));
        }
        std::memcpy(out + kQ8KSums, sums, sizeof sums);
        const float d = 1 / iscale;
        std::memcpy(out, &d, 4);
    }
}

// ---- row × token blocking ----

// Decode (one token): four rows per micro-kernel call, four independent weight streams. Prefill:
// blocks of NR rows × up to NT tokens, so that a super-block's scales and codes are unpacked
// once for NT tokens while the tile's weight rows stay in cache (AVX-512 1 × 8, AVX2 2 × 3: the
// fastest of the shapes measured on Zen 5; larger blocks run out of vector registers).
template <int NR, int NT, class Micro>
inline void blocked(int64_t nRows, int64_t nTok, const Micro& micro) {
    if (nTok == 1) {
        int64_t r = 0;
        for (; r + 4 <= nRows; r += 4) micro.template run<4, 1>(r, 0);
        for (; r < nRows; ++r) micro.template run<1, 1>(r, 0);
        return;
    }
    for (int64_t t = 0; t < nTok; t += NT) {
        const int64_t nt = std::min<int64_t>(NT, nTok - t);
        auto rows = [&]<int TT>() {
            int64_t r = 0;
            for (; r + NR <= nRows; r += NR) micro.template run<NR, TT>(r, t);
            for (; r < nRows; ++r) micro.template run<1, TT>(r, t);
        };
        // The token count of this block as a template argument (1 .. NT).
        [&]<int... I>(std::integer_sequence<int, I...>) {
            ((nt == I + 1 ? (rows.template operator()<I + 1>(), 0) : 0), ...);
        }
        (std::make_integer_sequence<int, NT>{});
    }
}

template <class K> struct MicroY {
    const uint8_t *w, *x;
    size_t ldw, ldx;
    int64_t nb;
    float* y;
    int64_t ldy;
    template <int NR, int NT> void run(int64_t r, int64_t t) const {
        microY<K, NR, NT>(w + size_t(r) * ldw, ldw, x + size_t(t) * ldx, ldx, nb, y + t * ldy + r,
                          ldy);
    }
};

template <class K> struct MicroZ {
    const uint8_t *w, *x;
    size_t ldw, ldx;
    const TokZ* tok;
    int64_t nb;
    float* y;
    int64_t ldy;
    template <int NR, int NT> void run(int64_t r, int64_t t) const {
        microZ<K, NR, NT>(w + size_t(r) * ldw, ldw, x + size_t(t) * ldx, ldx, tok + t * nb, nb,
                          y + t * ldy + r, ldy);
    }
};

template <class K>
void gemmAvx2(const std::byte* w, size_t ldw, int64_t nRows, const std::byte* xq, size_t ldx,
              int64_t nTok, float* y, int64_t ldy, int64_t n) {
    const MicroY<K> m{u8(w), u8(xq), ldw, ldx, n / kQK, y, ldy};
    blocked<2, 3>(nRows, nTok, m);
}

template <class K>
void gemmAvx512(const std::byte* w, size_t ldw, int64_t nRows, const std::byte* xq, size_t ldx,
                int64_t nTok, float* y, int64_t ldy, int64_t n) {
    const int64_t nb = n / kQK;
    thread_local std::vector<TokZ> tok;
    if (tok.size() < size_t(nTok * nb)) tok.resize(size_t(nTok * nb));
    tokSideZ(u8(xq), ldx, nTok, nb, tok.data());
    const MicroZ<K> m{u8(w), u8(xq), ldw, ldx, tok.data(), nb, y, ldy};
    blocked<1, 8>(nRows, nTok, m);
}

#endif // LCW_X86

template <DType T> constexpr QDotKernel kGeneric{ActQ::Q8_K, quantizeQ8KGeneric, gemmGeneric<T>};
#if LCW_X86
// The repacked kernel of each k-quant: its AVX2 struct Y; Y::Z is the AVX-512 VNNI one.
template <DType T> constexpr auto repackedStructs() {
    if constexpr (T == DType::Q4_K || T == DType::Q5_K)
        return Q45KRY<T == DType::Q5_K>{};
    else if constexpr (T == DType::Q6_K)
        return Q6KRY{};
    else if constexpr (T == DType::Q3_K)
        return Q3KRY{};
    else if constexpr (T == DType::Q2_K)
        return Q2KRY{};
    else
        return Iq4XsRY{};
}
template <class K> using RepackedYOf = decltype(repackedStructs<K::kType>());
template <class K>
constexpr QDotKernel kAvx2{ActQ::Q8_K, quantizeQ8KAvx2, gemmAvx2<K>,
                           gemmRepackedKY<RepackedYOf<K>>};
template <class K>
constexpr QDotKernel kAvx512{ActQ::Q8_K, quantizeQ8KAvx512, gemmAvx512<K>,
                             gemmRepackedK<typename RepackedYOf<K>::Z>};
#endif

} // namespace

size_t kquantRepackBlockBytes(DType t) {
    return size_t(kRepackK(t).bytes());
}

void repackKQuantGroups(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                        std::byte* dst, int64_t g0, int64_t g1) {
    const KRepack f = kRepackK(t);
    repackSegments(f.seg, f.n, size_t(f.bytes()) / size_t(kRepackRows), n / kQK, w, wRowBytes, rows,
                   dst, g0, g1);
}

const QDotKernel* qdotKQuants(DType t, Isa isa) {
#if LCW_X86
    // AVX-512 without VNNI runs the AVX2 kernels.
    if (isa == Isa::Avx512 && !(cpu().avx512 && cpu().avx512vnni)) isa = Isa::Avx2;
    if (isa == Isa::Avx2 && !cpu().avx2) isa = Isa::Generic;
    if (isa == Isa::Avx512) {
        switch (t) {
        case DType::Q2_K:
            return &kAvx512<Q2KZ>;
        case DType::Q3_K:
            return &kAvx512<Q3KZ>;
        case DType::Q4_K:
            return &kAvx512<Q4KZ>;
        case DType::Q5_K:
            return &kAvx512<Q5KZ>;
        case DType::Q6_K:
            return &kAvx512<Q6KZ>;
        case DType::IQ4_XS:
            return &kAvx512<Iq4XsZ>;
        default:
            return nullptr;
        }
    }
    if (isa == Isa::Avx2) {
        switch (t) {
        case DType::Q2_K:
            return &kAvx2<Q2KY>;
        case DType::Q3_K:
            return &kAvx2<Q3KY>;
        case DType::Q4_K:
            return &kAvx2<Q4KY>;
        case DType::Q5_K:
            return &kAvx2<Q5KY>;
        case DType::Q6_K:
            return &kAvx2<Q6KY>;
        case DType::IQ4_XS:
            return &kAvx2<Iq4XsY>;
        default:
            return nullptr;
        }
    }
#else
    (void)isa;
#endif
    switch (t) {
    case DType::Q2_K:
        return &kGeneric<DType::Q2_K>;
    case DType::Q3_K:
        return &kGeneric<DType::Q3_K>;
    case DType::Q4_K:
        return &kGeneric<DType::Q4_K>;
    case DType::Q5_K:
        return &kGeneric<DType::Q5_K>;
    case DType::Q6_K:
        return &kGeneric<DType::Q6_K>;
    case DType::IQ4_XS:
        return &kGeneric<DType::IQ4_XS>;
    default:
        return nullptr;
    }
}

} // namespace lcw::kernels::detail
