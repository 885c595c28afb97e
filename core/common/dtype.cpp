#include "core/common/dtype.h"

#include <limits>

namespace lcw {

namespace {
struct Info {
    DType t;
    std::string_view name;
    std::string_view stName; // safetensors spelling
    int64_t blockElems;
    int64_t blockBytes;
};
// Block layouts follow ggml's definitions (facts of the format):
// q4_0: f16 d + 16 bytes; q4_1: f16 d, f16 m + 16; q5_0: f16 d + u32 qh + 16; q5_1: d, m, qh, 16;
// q8_0: f16 d + 32 int8; k-quants over 256 elements: q2_k 84, q3_k 110, q4_k 144, q5_k 176,
// q6_k 210 bytes; iq4_nl: f16 d + 16 (32 elements); iq4_xs: f16 d, u16 scales_h, 4 scales_l,
// 128 (256 elements).
constexpr Info kInfo[] = {
    {DType::F32, "f32", "F32", 1, 4},    {DType::F16, "f16", "F16", 1, 2},
    {DType::BF16, "bf16", "BF16", 1, 2}, {DType::F64, "f64", "F64", 1, 8},
    {DType::I8, "i8", "I8", 1, 1},       {DType::U8, "u8", "U8", 1, 1},
    {DType::I16, "i16", "I16", 1, 2},    {DType::I32, "i32", "I32", 1, 4},
    {DType::I64, "i64", "I64", 1, 8},    {DType::Bool, "bool", "BOOL", 1, 1},
    {DType::Q4_0, "q4_0", "", 32, 18},   {DType::Q4_1, "q4_1", "", 32, 20},
    {DType::Q5_0, "q5_0", "", 32, 22},   {DType::Q5_1, "q5_1", "", 32, 24},
    {DType::Q8_0, "q8_0", "", 32, 34},   {DType::Q2_K, "q2_k", "", 256, 84},
    {DType::Q3_K, "q3_k", "", 256, 110}, {DType::Q4_K, "q4_k", "", 256, 144},
    {DType::Q5_K, "q5_k", "", 256, 176}, {DType::Q6_K, "q6_k", "", 256, 210},
    {DType::IQ4_NL, "iq4_nl", "", 32, 18}, {DType::IQ4_XS, "iq4_xs", "", 256, 136},
    {DType::F8_E4M3, "f8_e4m3", "F8_E4M3", 1, 1},
};
const Info& info(DType t) {
    for (const auto& i : kInfo)
        if (i.t == t) return i;
    return kInfo[0];
}
} // namespace

std::string_view dtypeName(DType t) {
    return info(t).name;
}

std::optional<DType> dtypeFromName(std::string_view name) {
    for (const auto& i : kInfo)
        if (name == i.name || (!i.stName.empty() && name == i.stName)) return i.t;
    return std::nullopt;
}

int64_t dtypeBlockElems(DType t) {
    return info(t).blockElems;
}
int64_t dtypeBlockBytes(DType t) {
    return info(t).blockBytes;
}
bool dtypeIsQuantized(DType t) {
    return info(t).blockElems > 1;
}
bool dtypeIsFloatLike(DType t) {
    return t == DType::F32 || t == DType::F16 || t == DType::BF16 || dtypeIsQuantized(t);
}

std::optional<uint64_t> dtypeBytesFor(DType t, uint64_t n) {
    const auto& i = info(t);
    if (n % uint64_t(i.blockElems) != 0) return std::nullopt;
    uint64_t blocks = n / uint64_t(i.blockElems);
    if (blocks > std::numeric_limits<uint64_t>::max() / uint64_t(i.blockBytes)) return std::nullopt;
    return blocks * uint64_t(i.blockBytes);
}

uint16_t f32ToF16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    const uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00u); // NaN
    if (absu >= 0x47800000u) {                               // overflow or inf
        // values that round to >= 65520 become inf
        return uint16_t(sign | 0x7c00u);
    }
    if (absu < 0x38800000u) {                // below the smallest normal half: subnormal or zero
        if (absu < 0x33000000u) return sign; // rounds to zero
        const uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
        const int shift = 126 - int(absu >> 23); // 14..24
        uint32_t r = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return uint16_t(sign | r);
    }
    uint32_t r = absu - 0x38000000u; // rebias exponent 127 -> 15
    uint32_t out = r >> 13;
    const uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) ++out; // may carry into inf: correct
    return uint16_t(sign | out);
}

} // namespace lcw
