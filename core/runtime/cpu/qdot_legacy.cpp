// Integer dot products of the 32-element GGUF block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL)
// with activations quantised to Q8_0 / Q8_1 blocks (qdot.h). Block layouts are ggml's (see
// core/io/quants.cpp). Every version computes, per output element and block b in order,
//   sumi = Σ w·q over the block (exact, int32)
//   acc  = fma(float(sumi), d_w·d_x, acc)       then, for Q4_1 / Q5_1, acc = fma(m_w, s_x, acc)
// so the portable version (here) and the x86 versions (qdot_legacy_x86.inc) return identical
// bits, whatever the numbers of rows and tokens of a call.
#include "core/runtime/cpu/qdot_common.h"
#include "core/runtime/cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace lcw::kernels::detail {

namespace {

/// Byte layout of a weight block and its activation block (offsets; -1: absent).
struct Fmt {
    int bytes;    ///< weight block size
    int qs;       ///< low 4 bits (Q8_0: the int8 values)
    int qh;       ///< fifth bits (Q5_0 / Q5_1)
    int m;        ///< f16 min (Q4_1 / Q5_1; activations are then Q8_1)
    int bias;     ///< unsigned code = value + bias (Q8_0 / IQ4_NL: value ^ 0x80 in the SIMD paths)
    int actBytes; ///< activation block size
    int actQ;     ///< offset of the activation's int8 values
};

constexpr Fmt fmtOf(DType t) {
    switch (t) {
    case DType::Q4_0:
        return {18, 2, -1, -1, 8, 34, 2};
    case DType::Q4_1:
        return {20, 4, -1, 2, 0, 36, 4};
    case DType::Q5_0:
        return {22, 6, 2, -1, 16, 34, 2};
    case DType::Q5_1:
        return {24, 8, 4, 2, 0, 36, 4};
    case DType::Q8_0:
        return {34, 2, -1, -1, 128, 34, 2};
    case DType::IQ4_NL:
        return {18, 2, -1, -1, 128, 34, 2};
    default:
        return {0, 0, -1, -1, 0, 0, 0};
    }
}

/// Offsets inside one repacked (group, block) of type t: scales, mins, fifth bits, code words.
struct RepackFmt {
    int d = 0, m = -1, qh = -1, qs = 0, words = 0, bytes = 0;
};
constexpr RepackFmt repackFmt(DType t) {
    const Fmt f = fmtOf(t);
    RepackFmt r;
    if (f.bytes == 0) return r;
    constexpr int L = int(kRepackRows);
    int at = 2 * L; // f16 d per row
    if (f.m >= 0) {
        r.m = at;
        at += 2 * L;
    }
    if (f.qh >= 0) {
        r.qh = at;
        at += 4 * L;
    }
    r.qs = at;
    r.words = (f.bytes - f.qs) / 4;
    r.bytes = at + 4 * L * r.words;
    return r;
}
static_assert(repackFmt(DType::Q4_0).bytes == 16 * 18 && repackFmt(DType::Q5_1).bytes == 16 * 24 &&
              repackFmt(DType::Q8_0).bytes == 16 * 34 && repackFmt(DType::Q5_0).qs == 96);

/// k(std::integral_constant<DType, t>) for the six types, nullptr for others.
template <class K> const QDotKernel* byType(DType t, K k) {
    switch (t) {
    case DType::Q4_0:
        return k(std::integral_constant<DType, DType::Q4_0>{});
    case DType::Q4_1:
        return k(std::integral_constant<DType, DType::Q4_1>{});
    case DType::Q5_0:
        return k(std::integral_constant<DType, DType::Q5_0>{});
    case DType::Q5_1:
        return k(std::integral_constant<DType, DType::Q5_1>{});
    case DType::Q8_0:
        return k(std::integral_constant<DType, DType::Q8_0>{});
    case DType::IQ4_NL:
        return k(std::integral_constant<DType, DType::IQ4_NL>{});
    default:
        return nullptr;
    }
}

/// IQ4_NL code book (a fact of the format).
constexpr int8_t kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                               1,    13,   25,  38,  53,  69,  89,  113};

// ---- portable ----

/// One weight block as signed values w[32], its scale d and (Q4_1 / Q5_1) min m.
template <DType T> void decodeBlock(const std::byte* blk, int8_t* w, float& d, float& m) {
    constexpr Fmt f = fmtOf(T);
    const auto* u = reinterpret_cast<const uint8_t*>(blk);
    d = readHalf(blk);
    m = f.m >= 0 ? readHalf(blk + f.m) : 0.0f;
    uint32_t qh = 0;
    if constexpr (f.qh >= 0) std::memcpy(&qh, blk + f.qh, 4);
    const uint8_t* qs = u + f.qs;
    for (int j = 0; j < 16; ++j) {
        if constexpr (T == DType::Q8_0) {
            w[j] = int8_t(qs[j]);
            w[j + 16] = int8_t(qs[j + 16]);
        } else if constexpr (T == DType::IQ4_NL) {
            w[j] = kIq4nl[qs[j] & 15];
            w[j + 16] = kIq4nl[qs[j] >> 4];
        } else {
            const int hi0 = int((qh >> j) & 1u) << 4, hi1 = int((qh >> (j + 16)) & 1u) << 4;
            w[j] = int8_t(((qs[j] & 15) | hi0) - f.bias);
            w[j + 16] = int8_t(((qs[j] >> 4) | hi1) - f.bias);
        }
    }
}

template <DType T>
void gemmPortable(const std::byte* w, size_t wRowBytes, int64_t nRows, const std::byte* xq,
                  size_t xqRowBytes, int64_t nTok, float* y, int64_t ldy, int64_t n) {
    constexpr Fmt f = fmtOf(T);
    const int64_t nb = n / kQ8Elems;
    thread_local std::vector<int8_t> wq;
    thread_local std::vector<float> wd, wm;
    wq.resize(size_t(n));
    wd.resize(size_t(nb));
    wm.resize(size_t(nb));
    for (int64_t r = 0; r < nRows; ++r) {
        const std::byte* row = w + size_t(r) * wRowBytes;
        for (int64_t b = 0; b < nb; ++b)
            decodeBlock<T>(row + b * f.bytes, wq.data() + b * kQ8Elems, wd[b], wm[b]);
        for (int64_t t = 0; t < nTok; ++t) {
            const std::byte* x = xq + size_t(t) * xqRowBytes;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b, x += f.actBytes) {
                const auto* q = reinterpret_cast<const int8_t*>(x + f.actQ);
                const int8_t* wb = wq.data() + b * kQ8Elems;
                int32_t sumi = 0;
                for (int j = 0; j < kQ8Elems; ++j) sumi += int32_t(wb[j]) * int32_t(q[j]);
                const float scale = wd[b] * readHalf(x);
                acc = std::fma(float(sumi), scale, acc);
                if constexpr (f.m >= 0) acc = std::fma(wm[b], readHalf(x + 2), acc);
            }
            y[t * ldy + r] = acc;
        }
    }
}

template <bool kSum> void quantizePortable(const float* x, void* vdst, int64_t n) {
    auto* dst = static_cast<std::byte*>(vdst);
    constexpr size_t kBytes = kSum ? kQ8_1Bytes : kQ8_0Bytes;
    for (int64_t i = 0; i < n / kQ8Elems; ++i, x += kQ8Elems, dst += kBytes) {
        float amax = 0.0f;
        for (int j = 0; j < kQ8Elems; ++j) {
            const float a = std::fabs(x[j]);
            amax = a > amax ? a : amax; // NaN never wins
        }
        const Q8Scale sc = q8Scale(amax);
        auto* q = reinterpret_cast<int8_t*>(dst + (kSum ? 4 : 2));
        int32_t sum = 0;
        for (int j = 0; j < kQ8Elems; ++j) {
            q[j] = q8Code(x[j] * sc.id);
            sum += q[j];
        }
        writeHalf(dst, sc.d);
        if constexpr (kSum) writeHalf(dst + 2, sc.d * float(sum));
    }
}

template <DType T>
constexpr QDotKernel kPortable{fmtOf(T).m >= 0 ? ActQ::Q8_1 : ActQ::Q8_0,
                               &quantizePortable<(fmtOf(T).m >= 0)>, &gemmPortable<T>};

const QDotKernel* portableKernel(DType t) {
    return byType(t, [](auto c) { return &kPortable<decltype(c)::value>; });
}

} // namespace

// ---- x86: one instantiation of qdot_legacy_x86.inc per instruction set ----
#if LCW_X86
// GCC 12's AVX-512 intrinsics pass an undefined vector as the unused merge operand, which
// -W(maybe-)uninitialized reports once they are inlined (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// clang-format off
#define QDOT_BITS 256
#define QDOT_VNNI 0
#define QDOT_TARGET LCW_AVX2
namespace { namespace avx2 {
#include "core/runtime/cpu/qdot_legacy_x86.inc"
} }
#undef QDOT_TARGET
#undef QDOT_VNNI
#define QDOT_VNNI 1
#define QDOT_TARGET LCW_AVXVNNI
namespace { namespace avxvnni {
#include "core/runtime/cpu/qdot_legacy_x86.inc"
} }
#undef QDOT_TARGET
#undef QDOT_VNNI
#undef QDOT_BITS
#define QDOT_BITS 512
#define QDOT_VNNI 0
#define QDOT_TARGET LCW_AVX512
namespace { namespace avx512 {
#include "core/runtime/cpu/qdot_legacy_x86.inc"
} }
#undef QDOT_TARGET
#undef QDOT_VNNI
#define QDOT_VNNI 1
#define QDOT_TARGET LCW_AVX512VNNI
namespace { namespace avx512vnni {
#include "core/runtime/cpu/qdot_legacy_x86.inc"
} }
#undef QDOT_TARGET
#undef QDOT_VNNI
#undef QDOT_BITS
// clang-format on
#pragma GCC diagnostic pop
#endif

namespace {
const QDotKernel* select(DType t, Isa isa, bool vnni) {
    switch (isa) {
    case Isa::Generic:
        return portableKernel(t);
#if LCW_X86
    case Isa::Avx2:
        if (!cpu().avx2) return nullptr;
        return vnni && cpu().avxvnni ? avxvnni::kernel(t) : avx2::kernel(t);
    case Isa::Avx512:
        if (!cpu().avx512) return nullptr;
        return vnni && cpu().avx512vnni ? avx512vnni::kernel(t) : avx512::kernel(t);
#endif
    default:
        return nullptr;
    }
}
} // namespace

const QDotKernel* qdotLegacy(DType t, Isa isa) {
    return select(t, isa, true);
}

const QDotKernel* qdotLegacyNoVnni(DType t, Isa isa) {
    return select(t, isa, false);
}

size_t legacyRepackBlockBytes(DType t) {
    return size_t(repackFmt(t).bytes);
}

void repackLegacyGroups(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                        std::byte* dst, int64_t g0, int64_t g1) {
    // repackFmt's order: d, (m), (qh), code words.
    const Fmt f = fmtOf(t);
    RepackSeg seg[4];
    int ns = 0;
    seg[ns++] = {0, 2, 2};
    if (f.m >= 0) seg[ns++] = {f.m, 2, 2};
    if (f.qh >= 0) seg[ns++] = {f.qh, 4, 4};
    seg[ns++] = {f.qs, f.bytes - f.qs, 4};
    repackSegments(seg, ns, size_t(f.bytes), n / kQ8Elems, w, wRowBytes, rows, dst, g0, g1);
}

} // namespace lcw::kernels::detail
