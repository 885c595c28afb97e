#include "core/compress/gguf_grid.h"

#include "core/common/error.h"
#include "core/io/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lcw::compress {

namespace {

// The 16 values of IQ4_NL / IQ4_XS codes (a fact of the format).
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
constexpr int kIq4One = 8; // the code whose table value is 1

uint8_t* bytes(std::byte* p) {
    return reinterpret_cast<uint8_t*>(p);
}
const uint8_t* bytes(const std::byte* p) {
    return reinterpret_cast<const uint8_t*>(p);
}

// Where the low bits of an element live: byte offset in the block, bit shift, bit count; and
// optionally one or two high bits elsewhere.
struct Field {
    int byte = 0, shift = 0, width = 0;
    int hiByte = -1, hiShift = 0, hiWidth = 0; // hiByte < 0: none
};

// 32-element nibble layout (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL): element j < 16 is the low nibble of
// byte j of the quants, element j + 16 the high nibble; q5 types keep bit 4 of element j in bit
// j of a u32 before the quants.
Field nibble32(int i, int qsOffset) {
    return {qsOffset + (i % 16), i < 16 ? 0 : 4, 4};
}

Field field(DType t, int i) {
    switch (t) {
    case DType::Q4_0:
    case DType::IQ4_NL:
        return nibble32(i, 2);
    case DType::Q4_1:
        return nibble32(i, 4);
    case DType::Q5_0: {
        Field f = nibble32(i, 6);
        f.hiByte = 2 + i / 8, f.hiShift = i % 8, f.hiWidth = 1;
        return f;
    }
    case DType::Q5_1: {
        Field f = nibble32(i, 8);
        f.hiByte = 4 + i / 8, f.hiShift = i % 8, f.hiWidth = 1;
        return f;
    }
    case DType::Q8_0:
        return {2 + i, 0, 8};
    case DType::Q2_K: { // scales[16], qs[64], d, dmin
        const int half = i / 128, w = i % 128, j = w / 32, l = w % 32;
        return {16 + half * 32 + l, 2 * j, 2};
    }
    case DType::Q3_K: { // hmask[32], qs[64], scales[12], d
        const int half = i / 128, w = i % 128, j = w / 32, l = w % 32;
        Field f{32 + half * 32 + l, 2 * j, 2};
        f.hiByte = l, f.hiShift = half * 4 + j, f.hiWidth = 1;
        return f;
    }
    case DType::Q4_K: { // d, dmin, scales[12], qs[128]
        const int j = i / 64, w = i % 64;
        return {16 + j * 32 + w % 32, w < 32 ? 0 : 4, 4};
    }
    case DType::Q5_K: { // d, dmin, scales[12], qh[32], qs[128]
        const int j = i / 64, w = i % 64;
        Field f{48 + j * 32 + w % 32, w < 32 ? 0 : 4, 4};
        f.hiByte = 16 + w % 32, f.hiShift = 2 * j + (w < 32 ? 0 : 1), f.hiWidth = 1;
        return f;
    }
    case DType::Q6_K: { // ql[128], qh[64], scales[16], d
        const int half = i / 128, w = i % 128, k = w / 32, l = w % 32;
        Field f{half * 64 + l + (k % 2) * 32, k < 2 ? 0 : 4, 4};
        f.hiByte = 128 + half * 32 + l, f.hiShift = 2 * k, f.hiWidth = 2;
        return f;
    }
    case DType::IQ4_XS: { // d, scales_h, scales_l[4], qs[128]
        const int ib = i / 32, w = i % 32;
        return {8 + ib * 16 + w % 16, w < 16 ? 0 : 4, 4};
    }
    default:
        throw UnsupportedError("GGUF grid: no code access for type " +
                               std::string(dtypeName(t)));
    }
}

uint32_t getBits(const uint8_t* p, int byte, int shift, int width) {
    return (uint32_t(p[byte]) >> shift) & ((1u << width) - 1);
}
void setBits(uint8_t* p, int byte, int shift, int width, uint32_t v) {
    const uint32_t mask = ((1u << width) - 1) << shift;
    p[byte] = uint8_t((p[byte] & ~mask) | ((v << shift) & mask));
}

} // namespace

bool ggufHasCodes(DType t) {
    return dtypeIsQuantized(t); // every GGUF block type lcw holds
}

CodeRange ggufCodeRange(DType t) {
    switch (t) {
    case DType::Q8_0:
        return {1, 255};
    case DType::Q2_K:
        return {0, 3};
    case DType::Q3_K:
        return {0, 7};
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q5_K:
        return {0, 31};
    case DType::Q6_K:
        return {0, 63};
    default:
        (void)field(t, 0); // throws for types without codes
        return {0, 15};
    }
}

uint32_t ggufGetCode(DType t, const std::byte* block, int i) {
    const Field f = field(t, i);
    const uint8_t* p = bytes(block);
    if (t == DType::Q8_0) return uint32_t(uint8_t(int8_t(p[f.byte]) + 128));
    uint32_t q = getBits(p, f.byte, f.shift, f.width);
    if (f.hiByte >= 0) q |= getBits(p, f.hiByte, f.hiShift, f.hiWidth) << f.width;
    return q;
}

void ggufSetCode(DType t, std::byte* block, int i, uint32_t q) {
    const Field f = field(t, i);
    uint8_t* p = bytes(block);
    if (t == DType::Q8_0) {
        p[f.byte] = uint8_t(int(q) - 128);
        return;
    }
    setBits(p, f.byte, f.shift, f.width, q);
    if (f.hiByte >= 0) setBits(p, f.hiByte, f.hiShift, f.hiWidth, q >> f.width);
}

BlockGrid blockGrid(DType t, const std::byte* block) {
    const int n = int(dtypeBlockElems(t));
    const size_t nb = size_t(dtypeBlockBytes(t));
    const CodeRange r = ggufCodeRange(t);
    const bool table = t == DType::IQ4_NL || t == DType::IQ4_XS;
    std::vector<std::byte> tmp(block, block + nb);
    std::vector<float> v0(static_cast<size_t>(n)), v1(static_cast<size_t>(n));
    BlockGrid g;
    g.type = t;
    g.a.assign(size_t(n), 0.0f);
    g.b.assign(size_t(n), 0.0f);
    if (table) {
        for (int i = 0; i < n; ++i) ggufSetCode(t, tmp.data(), i, kIq4One);
        dequantizeRow(t, tmp.data(), v1.data(), n);
        g.b = v1;
        return g;
    }
    for (int i = 0; i < n; ++i) ggufSetCode(t, tmp.data(), i, r.qmin);
    dequantizeRow(t, tmp.data(), v0.data(), n);
    for (int i = 0; i < n; ++i) ggufSetCode(t, tmp.data(), i, r.qmin + 1);
    dequantizeRow(t, tmp.data(), v1.data(), n);
    for (int i = 0; i < n; ++i) {
        g.a[size_t(i)] = v0[size_t(i)];
        g.b[size_t(i)] = v1[size_t(i)] - v0[size_t(i)];
    }
    return g;
}

uint32_t BlockGrid::nearest(int i, float x) const {
    const float ai = a[size_t(i)], bi = b[size_t(i)];
    if (type == DType::IQ4_NL || type == DType::IQ4_XS) {
        uint32_t best = kIq4One;
        float bestErr = INFINITY;
        for (uint32_t q = 0; q < 16; ++q) {
            const float e = std::fabs(x - bi * float(kIq4Values[q]));
            if (e < bestErr) bestErr = e, best = q;
        }
        return best;
    }
    const CodeRange r = ggufCodeRange(type);
    if (bi == 0.0f || !std::isfinite(bi)) return r.qmin;
    const float t = std::nearbyint((x - ai) / bi);
    const float hi = float(r.qmax - r.qmin);
    return r.qmin + uint32_t(std::clamp(t, 0.0f, hi));
}

float BlockGrid::value(int i, uint32_t q) const {
    if (type == DType::IQ4_NL || type == DType::IQ4_XS) return b[size_t(i)] * float(kIq4Values[q]);
    return a[size_t(i)] + b[size_t(i)] * float(q - ggufCodeRange(type).qmin);
}

} // namespace lcw::compress
