#pragma once
/// \file
/// Internal to the GGUF integer dot products (qdot_legacy.cpp, qdot_kquants.cpp): the byte
/// layout of the 8-bit activation blocks (qdot.h), f16 reads, and the one rounding every ISA
/// version of an activation quantiser uses, so that they write identical bytes.
#include "core/common/dtype.h"
#include "core/runtime/cpu/qdot.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lcw::kernels::detail {

/// Activation blocks: Q8_0 = f16 d, int8 q[32]; Q8_1 = f16 d, f16 s = d·Σq, int8 q[32].
constexpr int kQ8Elems = 32;
constexpr size_t kQ8_0Bytes = 34;
constexpr size_t kQ8_1Bytes = 36;

inline uint16_t readU16(const std::byte* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline float readHalf(const std::byte* p) {
    return f16ToF32(readU16(p));
}
inline void writeHalf(std::byte* p, float f) {
    const uint16_t h = f32ToF16(f);
    std::memcpy(p, &h, 2);
}

/// The 8-bit code of v = x · (127 / amax) as the x86 conversions give it (llama.cpp's
/// quantize_row_q8_0/q8_1 on x86): round to nearest, ties to even (the default rounding mode),
/// then int32 with out-of-range and NaN → INT32_MIN, then saturation to int8 (so NaN → -128).
inline int8_t q8Code(float v) {
    const float r = std::nearbyint(v);
    if (!(std::fabs(r) < 2147483648.0f)) return -128;
    const int32_t i = int32_t(r);
    return int8_t(i < -128 ? -128 : i > 127 ? 127 : i);
}

/// The scale of an activation block from its largest magnitude: d = amax / 127 (stored as f16)
/// and the multiplier 127 / amax (0 for an all-zero block).
struct Q8Scale {
    float d, id;
};
inline Q8Scale q8Scale(float amax) {
    return {amax / 127.f, amax != 0.0f ? 127.f / amax : 0.0f};
}

/// One field of a weight block in the repacked layouts (qdot.h: repackRows): `bytes` bytes at
/// `src` of every row's block, stored as units of `unit` bytes with unit u of the group's 16 rows
/// side by side; a block's fields follow one another in the order given.
struct RepackSeg {
    int src, bytes, unit;
};
/// Groups g0..g1-1 of rows of nb blocks of rowBlockBytes each (rows past `rows` zero) in that
/// layout, nSeg fields per block, into dst + g * (nb · 16 · rowBlockBytes).
void repackSegments(const RepackSeg* seg, int nSeg, size_t rowBlockBytes, int64_t nb,
                    const std::byte* w, size_t wRowBytes, int64_t rows, std::byte* dst, int64_t g0,
                    int64_t g1);

/// Test hook: the kernel of qdotLegacy(t, isa) with the VNNI instructions switched off (the
/// maddubs/madd paths), so that a VNNI machine tests both; nullptr where qdotLegacy has none.
const QDotKernel* qdotLegacyNoVnni(DType t, Isa isa);

} // namespace lcw::kernels::detail
