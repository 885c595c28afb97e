// Row conversion for plain float types and the GGUF block formats. The block layouts and the
// arithmetic follow ggml's reference definitions (facts of the format), written out here so
// that results are bit-identical: same operand order, float arithmetic, fp16 scales converted
// exactly.
#include "core/io/quants.h"

#include "core/common/error.h"
#include "core/io/ggml_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace lcw {

namespace {

constexpr int QK = 32;    // elements per block of Q4_0..Q8_0
constexpr int QK_K = 256; // elements per k-quant super-block

// fp16 → fp32 through a table: the hot path for F16 weights and every block scale.
struct F16Table {
    float v[65536];
    F16Table() {
        for (uint32_t i = 0; i < 65536; ++i) v[i] = f16ToF32(uint16_t(i));
    }
};
const F16Table& f16Table() {
    static const F16Table t;
    return t;
}

inline uint16_t rdU16(const std::byte* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline float rdHalf(const float* tab, const std::byte* p) {
    return tab[rdU16(p)];
}
inline const uint8_t* u8(const std::byte* p) {
    return reinterpret_cast<const uint8_t*>(p);
}

inline void wrHalf(std::byte* p, float f) {
    const uint16_t h = f32ToF16(f);
    std::memcpy(p, &h, 2);
}

// ---- 32-element blocks ----

// q4_0: f16 d, 16 bytes of nibbles; element j is low nibble of qs[j], j+16 the high nibble.
void deqQ4_0(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 18, y += QK) {
        const float d = rdHalf(tab, src);
        const uint8_t* qs = u8(src + 2);
        for (int j = 0; j < QK / 2; ++j) {
            const int x0 = (qs[j] & 0x0F) - 8;
            const int x1 = (qs[j] >> 4) - 8;
            y[j] = float(x0) * d;
            y[j + QK / 2] = float(x1) * d;
        }
    }
}

// q4_1: f16 d, f16 m, 16 bytes of nibbles; value = q*d + m.
void deqQ4_1(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 20, y += QK) {
        const float d = rdHalf(tab, src);
        const float m = rdHalf(tab, src + 2);
        const uint8_t* qs = u8(src + 4);
        for (int j = 0; j < QK / 2; ++j) {
            const int x0 = qs[j] & 0x0F;
            const int x1 = qs[j] >> 4;
            y[j] = float(x0) * d + m;
            y[j + QK / 2] = float(x1) * d + m;
        }
    }
}

// q5_0: f16 d, u32 qh (fifth bits, bit j for element j), 16 bytes of nibbles; q - 16.
void deqQ5_0(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 22, y += QK) {
        const float d = rdHalf(tab, src);
        uint32_t qh;
        std::memcpy(&qh, src + 2, 4);
        const uint8_t* qs = u8(src + 6);
        for (int j = 0; j < QK / 2; ++j) {
            const uint8_t xh0 = uint8_t(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh1 = uint8_t(((qh >> (j + 12))) & 0x10);
            const int x0 = ((qs[j] & 0x0F) | xh0) - 16;
            const int x1 = ((qs[j] >> 4) | xh1) - 16;
            y[j] = float(x0) * d;
            y[j + QK / 2] = float(x1) * d;
        }
    }
}

// q5_1: f16 d, f16 m, u32 qh, 16 bytes of nibbles; q*d + m.
void deqQ5_1(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 24, y += QK) {
        const float d = rdHalf(tab, src);
        const float m = rdHalf(tab, src + 2);
        uint32_t qh;
        std::memcpy(&qh, src + 4, 4);
        const uint8_t* qs = u8(src + 8);
        for (int j = 0; j < QK / 2; ++j) {
            const uint8_t xh0 = uint8_t(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh1 = uint8_t(((qh >> (j + 12))) & 0x10);
            const int x0 = (qs[j] & 0x0F) | xh0;
            const int x1 = (qs[j] >> 4) | xh1;
            y[j] = float(x0) * d + m;
            y[j + QK / 2] = float(x1) * d + m;
        }
    }
}

// q8_0: f16 d, 32 int8.
void deqQ8_0(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 34, y += QK) {
        const float d = rdHalf(tab, src);
        const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);
        for (int j = 0; j < QK; ++j) y[j] = float(qs[j]) * d;
    }
}

// ---- k-quants (256-element super-blocks) ----

// q2_k: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), f16 d, f16 dmin.
void deqQ2_K(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 84) {
        const uint8_t* scales = u8(src);
        const uint8_t* q = u8(src + 16);
        const float d = rdHalf(tab, src + 80);
        const float min = rdHalf(tab, src + 82);
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                uint8_t sc = scales[is++];
                float dl = d * float(sc & 0xF), ml = min * float(sc >> 4);
                for (int l = 0; l < 16; ++l) *y++ = dl * float(int8_t((q[l] >> shift) & 3)) - ml;
                sc = scales[is++];
                dl = d * float(sc & 0xF), ml = min * float(sc >> 4);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * float(int8_t((q[l + 16] >> shift) & 3)) - ml;
                shift += 2;
            }
            q += 32;
        }
    }
}

// q3_k: hmask[32] (third bit, cleared means -4), qs[64] (2-bit), scales[12] (16 6-bit scales,
// offset 32), f16 d.
void deqQ3_K(const std::byte* src, float* y, int64_t nb, const float* tab) {
    constexpr uint32_t kmask1 = 0x03030303u;
    constexpr uint32_t kmask2 = 0x0f0f0f0fu;
    for (int64_t i = 0; i < nb; ++i, src += 110) {
        const uint8_t* hm = u8(src);
        const uint8_t* q = u8(src + 32);
        const float dAll = rdHalf(tab, src + 108);
        uint32_t aux[4];
        std::memcpy(aux, src + 96, 12);
        const uint32_t tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        int8_t scales[16];
        std::memcpy(scales, aux, 16);
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                float dl = dAll * float(scales[is++] - 32);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * float(int8_t((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
                dl = dAll * float(scales[is++] - 32);
                for (int l = 0; l < 16; ++l)
                    *y++ =
                        dl * float(int8_t((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
                shift += 2;
                m = uint8_t(m << 1);
            }
            q += 32;
        }
    }
}


// q4_k: f16 d, f16 dmin, scales[12], qs[128]; sub-blocks of 32.
void deqQ4_K(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 144) {
        const float d = rdHalf(tab, src);
        const float min = rdHalf(tab, src + 2);
        const uint8_t* scales = u8(src + 4);
        const uint8_t* q = u8(src + 16);
        int is = 0;
        for (int j = 0; j < QK_K; j += 64) {
            uint8_t sc, m;
            detail::scaleMinK4(is + 0, scales, sc, m);
            const float d1 = d * float(sc), m1 = min * float(m);
            detail::scaleMinK4(is + 1, scales, sc, m);
            const float d2 = d * float(sc), m2 = min * float(m);
            for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

// q5_k: f16 d, f16 dmin, scales[12], qh[32], qs[128].
void deqQ5_K(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 176) {
        const float d = rdHalf(tab, src);
        const float min = rdHalf(tab, src + 2);
        const uint8_t* scales = u8(src + 4);
        const uint8_t* qh = u8(src + 16);
        const uint8_t* ql = u8(src + 48);
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            uint8_t sc, m;
            detail::scaleMinK4(is + 0, scales, sc, m);
            const float d1 = d * float(sc), m1 = min * float(m);
            detail::scaleMinK4(is + 1, scales, sc, m);
            const float d2 = d * float(sc), m2 = min * float(m);
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 = uint8_t(u1 << 2);
            u2 = uint8_t(u2 << 2);
        }
    }
}

// q6_k: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d; value (q-32)*sc*d.
void deqQ6_K(const std::byte* src, float* y, int64_t nb, const float* tab) {
    for (int64_t i = 0; i < nb; ++i, src += 210) {
        const uint8_t* ql = u8(src);
        const uint8_t* qh = u8(src + 128);
        const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
        const float d = rdHalf(tab, src + 208);
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int8_t q1 = int8_t((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = int8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = int8_t((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = int8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * float(sc[is + 0]) * float(q1);
                y[l + 32] = d * float(sc[is + 2]) * float(q2);
                y[l + 64] = d * float(sc[is + 4]) * float(q3);
                y[l + 96] = d * float(sc[is + 6]) * float(q4);
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

// ---- reference quantizers (round-to-nearest, as ggml's *_ref functions) ----

void quantQ4_0(const float* x, std::byte* dst, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK, dst += 18) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; ++j) {
            const float v = x[j];
            if (amax < std::fabs(v)) {
                amax = std::fabs(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        wrHalf(dst, d);
        uint8_t* qs = reinterpret_cast<uint8_t*>(dst + 2);
        for (int j = 0; j < QK / 2; ++j) {
            const float x0 = x[j] * id;
            const float x1 = x[QK / 2 + j] * id;
            const uint8_t xi0 = uint8_t(std::min<int8_t>(15, int8_t(x0 + 8.5f)));
            const uint8_t xi1 = uint8_t(std::min<int8_t>(15, int8_t(x1 + 8.5f)));
            qs[j] = uint8_t(xi0 | (xi1 << 4));
        }
    }
}

void quantQ4_1(const float* x, std::byte* dst, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK, dst += 20) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < QK; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        wrHalf(dst, d);
        wrHalf(dst + 2, min);
        uint8_t* qs = reinterpret_cast<uint8_t*>(dst + 4);
        for (int j = 0; j < QK / 2; ++j) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[QK / 2 + j] - min) * id;
            const uint8_t xi0 = uint8_t(std::min<int8_t>(15, int8_t(x0 + 0.5f)));
            const uint8_t xi1 = uint8_t(std::min<int8_t>(15, int8_t(x1 + 0.5f)));
            qs[j] = uint8_t(xi0 | (xi1 << 4));
        }
    }
}

void quantQ5_0(const float* x, std::byte* dst, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK, dst += 22) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; ++j) {
            const float v = x[j];
            if (amax < std::fabs(v)) {
                amax = std::fabs(v);
                max = v;
            }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        wrHalf(dst, d);
        uint32_t qh = 0;
        uint8_t* qs = reinterpret_cast<uint8_t*>(dst + 6);
        for (int j = 0; j < QK / 2; ++j) {
            const float x0 = x[j] * id;
            const float x1 = x[QK / 2 + j] * id;
            const uint8_t xi0 = uint8_t(std::min<int8_t>(31, int8_t(x0 + 16.5f)));
            const uint8_t xi1 = uint8_t(std::min<int8_t>(31, int8_t(x1 + 16.5f)));
            qs[j] = uint8_t((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= uint32_t((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= uint32_t((xi1 & 0x10u) >> 4) << (j + QK / 2);
        }
        std::memcpy(dst + 2, &qh, 4);
    }
}

void quantQ5_1(const float* x, std::byte* dst, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK, dst += 24) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < QK; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        wrHalf(dst, d);
        wrHalf(dst + 2, min);
        uint32_t qh = 0;
        uint8_t* qs = reinterpret_cast<uint8_t*>(dst + 8);
        for (int j = 0; j < QK / 2; ++j) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[QK / 2 + j] - min) * id;
            const uint8_t xi0 = uint8_t(x0 + 0.5f);
            const uint8_t xi1 = uint8_t(x1 + 0.5f);
            qs[j] = uint8_t((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= uint32_t((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= uint32_t((xi1 & 0x10u) >> 4) << (j + QK / 2);
        }
        std::memcpy(dst + 4, &qh, 4);
    }
}

void quantQ8_0(const float* x, std::byte* dst, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        wrHalf(dst, d);
        int8_t* qs = reinterpret_cast<int8_t*>(dst + 2);
        for (int j = 0; j < QK; ++j) qs[j] = int8_t(std::roundf(x[j] * id));
    }
}

[[noreturn]] void unsupported(const char* what, DType t) {
    throw UnsupportedError(std::string(what) + ": dtype " + std::string(dtypeName(t)) +
                           " is not supported");
}

void checkBlocks(const char* what, DType t, int64_t n) {
    if (n < 0 || n % dtypeBlockElems(t) != 0)
        throw ArgumentError(std::string(what) + ": " + std::to_string(n) +
                            " elements is not a multiple of the " + std::string(dtypeName(t)) +
                            " block size " + std::to_string(dtypeBlockElems(t)));
}

} // namespace

void dequantizeRow(DType t, const std::byte* src, float* dst, int64_t n) {
    checkBlocks("dequantizeRow", t, n);
    const int64_t nb = n / dtypeBlockElems(t);
    switch (t) {
    case DType::F32:
        std::memcpy(dst, src, size_t(n) * 4);
        return;
    case DType::F16: {
        const float* tab = f16Table().v;
        for (int64_t i = 0; i < n; ++i) dst[i] = tab[rdU16(src + 2 * i)];
        return;
    }
    case DType::BF16:
        for (int64_t i = 0; i < n; ++i) {
            const uint32_t u = uint32_t(rdU16(src + 2 * i)) << 16;
            std::memcpy(dst + i, &u, 4);
        }
        return;
    case DType::Q4_0:
        deqQ4_0(src, dst, nb, f16Table().v);
        return;
    case DType::Q4_1:
        deqQ4_1(src, dst, nb, f16Table().v);
        return;
    case DType::Q5_0:
        deqQ5_0(src, dst, nb, f16Table().v);
        return;
    case DType::Q5_1:
        deqQ5_1(src, dst, nb, f16Table().v);
        return;
    case DType::Q8_0:
        deqQ8_0(src, dst, nb, f16Table().v);
        return;
    case DType::Q2_K:
        deqQ2_K(src, dst, nb, f16Table().v);
        return;
    case DType::Q3_K:
        deqQ3_K(src, dst, nb, f16Table().v);
        return;
    case DType::Q4_K:
        deqQ4_K(src, dst, nb, f16Table().v);
        return;
    case DType::Q5_K:
        deqQ5_K(src, dst, nb, f16Table().v);
        return;
    case DType::Q6_K:
        deqQ6_K(src, dst, nb, f16Table().v);
        return;
    case DType::IQ4_NL:
    case DType::IQ4_XS:
        detail::dequantizeIq4(t, src, dst, nb);
        return;
    default:
        unsupported("dequantizeRow", t);
    }
}

void quantizeRow(DType t, const float* src, std::byte* dst, int64_t n, const float* importance) {
    checkBlocks("quantizeRow", t, n);
    const int64_t nb = n / dtypeBlockElems(t);
    switch (t) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
        if (importance) return detail::quantizeRowGgml(t, src, dst, n, importance);
        break;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::IQ4_NL:
    case DType::IQ4_XS:
        return detail::quantizeRowGgml(t, src, dst, n, importance);
    default:
        break;
    }
    switch (t) {
    case DType::F32:
        std::memcpy(dst, src, size_t(n) * 4);
        return;
    case DType::F16:
        for (int64_t i = 0; i < n; ++i) wrHalf(dst + 2 * i, src[i]);
        return;
    case DType::BF16:
        for (int64_t i = 0; i < n; ++i) {
            const uint16_t h = f32ToBf16(src[i]);
            std::memcpy(dst + 2 * i, &h, 2);
        }
        return;
    case DType::Q4_0:
        quantQ4_0(src, dst, nb);
        return;
    case DType::Q4_1:
        quantQ4_1(src, dst, nb);
        return;
    case DType::Q5_0:
        quantQ5_0(src, dst, nb);
        return;
    case DType::Q5_1:
        quantQ5_1(src, dst, nb);
        return;
    case DType::Q8_0:
        quantQ8_0(src, dst, nb);
        return;
    default:
        unsupported("quantizeRow", t);
    }
}

} // namespace lcw
