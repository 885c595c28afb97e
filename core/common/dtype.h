#pragma once
/// \file
/// Element types of stored tensors (plain and GGUF block-quantized) and scalar conversions.
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace lcw {

enum class DType : uint8_t {
    F32,
    F16,
    BF16,
    F64,
    I8,
    U8,
    I16,
    I32,
    I64,
    Bool,
    // GGUF block formats (ggml type ids in ggmlTypeId()).
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL, ///< 32 elements: f16 d + 16 bytes of 4-bit indices into a non-linear table
    IQ4_XS, ///< 256 elements: f16 d, u16 high scale bits, 4 bytes low scale bits, 128 bytes
    /// float8 e4m3fn, one byte (safetensors "F8_E4M3"; compressed-tensors' float-quantized
    /// weights). Not a weight type of the runtime: loaders decode it (lowbit.h e4m3ToF32).
    F8_E4M3,
};

/// Lower-case name as users see it ("f32", "bf16", "q4_k").
std::string_view dtypeName(DType t);
/// Parses dtypeName() output and safetensors names ("F32", "BF16", "I64", "BOOL").
std::optional<DType> dtypeFromName(std::string_view name);
/// Elements per block: 1 for plain types, 32 for Q4_0..Q8_0, 256 for k-quants.
int64_t dtypeBlockElems(DType t);
/// Bytes per block (for plain types: bytes per element).
int64_t dtypeBlockBytes(DType t);
/// True for the GGUF block-quantized formats.
bool dtypeIsQuantized(DType t);
/// True for types the runtime can use as weights (floats and GGUF block formats).
bool dtypeIsFloatLike(DType t);
/// Bytes of n consecutive elements; nullopt if n is not a multiple of the block size or overflows.
std::optional<uint64_t> dtypeBytesFor(DType t, uint64_t n);

// ---- scalar conversions (exact IEEE semantics, round-to-nearest-even on narrowing) ----
inline float bf16ToF32(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint16_t f32ToBf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}
/// Exact. The half's exponent and mantissa are moved to their float positions and the exponent
/// rebiased; a zero or subnormal half (exponent 0) is then 2^-14 * (1 + m/1024) - 2^-14, one
/// exact float subtraction; infinities and NaNs keep their class and payload. Branch-light and
/// inline: the portable kernels widen F16 values in their inner loops.
inline float f16ToF32(uint16_t h) {
    uint32_t u = uint32_t(h & 0x7fffu) << 13;
    const uint32_t e = u & 0x0f800000u;
    u += uint32_t(127 - 15) << 23;
    float f;
    if (e == 0x0f800000u) { // infinity or NaN
        u += uint32_t(128 - 16) << 23;
        std::memcpy(&f, &u, 4);
    } else if (e == 0) { // zero or subnormal
        u += 1u << 23;
        std::memcpy(&f, &u, 4);
        f -= 6.103515625e-05f; // 2^-14
    } else {
        std::memcpy(&f, &u, 4);
    }
    std::memcpy(&u, &f, 4);
    u |= uint32_t(h & 0x8000u) << 16;
    std::memcpy(&f, &u, 4);
    return f;
}
uint16_t f32ToF16(float f);

} // namespace lcw
