// Dequantisation of one group of 32 weights (group g of row r, which starts at byte
// r * rowBytes of W) for the weight type selected by WT_<TYPE>. The layouts are ggml's block formats (the same
// bytes the CPU runtime reads, core/io/quants.cpp); values past the row's end (float types
// whose size is not a multiple of 32) are not read by the caller.

uint byteAt(uint b) { return (W[b >> 2] >> ((b & 3u) << 3)) & 0xFFu; }
uint u16At(uint b) { return byteAt(b) | (byteAt(b + 1u) << 8); }
uint u32At(uint b) { return u16At(b) | (u16At(b + 2u) << 16); }
float halfAt(uint b) { return unpackHalf2x16(u16At(b)).x; }
int i8At(uint b) { return int(byteAt(b) << 24) >> 24; }

const float kIq4nl[16] = float[16](-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0,
                                   13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);

// K-quants: 6-bit scale and min number j (0..7) of a 12-byte scales array at byte s.
void scaleMinK4(uint s, uint j, out float sc, out float mn) {
    if (j < 4u) {
        sc = float(byteAt(s + j) & 63u);
        mn = float(byteAt(s + j + 4u) & 63u);
    } else {
        sc = float((byteAt(s + j + 4u) & 0xFu) | ((byteAt(s + j - 4u) >> 6) << 4));
        mn = float((byteAt(s + j + 4u) >> 4) | ((byteAt(s + j) >> 6) << 4));
    }
}

void dequantGroup(uint r, uint g, inout float v[32]) {
    const uint rowStart = r * pc.rowBytes;
#if defined(WT_F32)
    const uint k0 = g * 32u;
    const uint kn = min(32u, pc.cols - k0);
    for (uint i = 0u; i < kn; ++i) v[i] = uintBitsToFloat(W[(rowStart >> 2) + k0 + i]);
#elif defined(WT_F16)
    const uint k0 = g * 32u;
    const uint kn = min(32u, pc.cols - k0);
    for (uint i = 0u; i < kn; ++i) v[i] = halfAt(rowStart + 2u * (k0 + i));
#elif defined(WT_BF16)
    const uint k0 = g * 32u;
    const uint kn = min(32u, pc.cols - k0);
    for (uint i = 0u; i < kn; ++i) v[i] = uintBitsToFloat(u16At(rowStart + 2u * (k0 + i)) << 16);
#elif defined(WT_Q4_0)
    const uint b = rowStart + g * 18u;
    const float d = halfAt(b);
    for (uint j = 0u; j < 16u; ++j) {
        const uint q = byteAt(b + 2u + j);
        v[j] = float(int(q & 0xFu) - 8) * d;
        v[j + 16u] = float(int(q >> 4) - 8) * d;
    }
#elif defined(WT_Q4_1)
    const uint b = rowStart + g * 20u;
    const float d = halfAt(b), m = halfAt(b + 2u);
    for (uint j = 0u; j < 16u; ++j) {
        const uint q = byteAt(b + 4u + j);
        v[j] = float(q & 0xFu) * d + m;
        v[j + 16u] = float(q >> 4) * d + m;
    }
#elif defined(WT_Q5_0)
    const uint b = rowStart + g * 22u;
    const float d = halfAt(b);
    const uint qh = u32At(b + 2u);
    for (uint j = 0u; j < 16u; ++j) {
        const uint q = byteAt(b + 6u + j);
        const uint h0 = ((qh >> j) << 4) & 0x10u, h1 = (qh >> (j + 12u)) & 0x10u;
        v[j] = float(int((q & 0xFu) | h0) - 16) * d;
        v[j + 16u] = float(int((q >> 4) | h1) - 16) * d;
    }
#elif defined(WT_Q5_1)
    const uint b = rowStart + g * 24u;
    const float d = halfAt(b), m = halfAt(b + 2u);
    const uint qh = u32At(b + 4u);
    for (uint j = 0u; j < 16u; ++j) {
        const uint q = byteAt(b + 8u + j);
        const uint h0 = ((qh >> j) << 4) & 0x10u, h1 = (qh >> (j + 12u)) & 0x10u;
        v[j] = float((q & 0xFu) | h0) * d + m;
        v[j + 16u] = float((q >> 4) | h1) * d + m;
    }
#elif defined(WT_Q8_0)
    const uint b = rowStart + g * 34u;
    const float d = halfAt(b);
    for (uint j = 0u; j < 32u; ++j) v[j] = float(i8At(b + 2u + j)) * d;
#elif defined(WT_IQ4_NL)
    const uint b = rowStart + g * 18u;
    const float d = halfAt(b);
    for (uint j = 0u; j < 16u; ++j) {
        const uint q = byteAt(b + 2u + j);
        v[j] = d * kIq4nl[q & 0xFu];
        v[j + 16u] = d * kIq4nl[q >> 4];
    }
#elif defined(WT_Q2_K)
    // 84 bytes: scales[16], qs[64], d, dmin.
    const uint b = rowStart + (g >> 3) * 84u, s = g & 7u, h = s >> 2, j = s & 3u;
    const float d = halfAt(b + 80u), dmin = halfAt(b + 82u);
    const uint q = b + 16u + h * 32u, shift = 2u * j;
    const uint sc0 = byteAt(b + h * 8u + 2u * j), sc1 = byteAt(b + h * 8u + 2u * j + 1u);
    const float dl0 = d * float(sc0 & 0xFu), ml0 = dmin * float(sc0 >> 4);
    const float dl1 = d * float(sc1 & 0xFu), ml1 = dmin * float(sc1 >> 4);
    for (uint l = 0u; l < 16u; ++l) {
        v[l] = dl0 * float((byteAt(q + l) >> shift) & 3u) - ml0;
        v[l + 16u] = dl1 * float((byteAt(q + l + 16u) >> shift) & 3u) - ml1;
    }
#elif defined(WT_Q3_K)
    // 110 bytes: hmask[32], qs[64], scales[12], d.
    const uint b = rowStart + (g >> 3) * 110u, s = g & 7u, h = s >> 2, j = s & 3u;
    const float d = halfAt(b + 108u);
    const uint q = b + 32u + h * 32u, shift = 2u * j, m = 1u << s;
    float dl[2];
    for (uint e = 0u; e < 2u; ++e) {
        const uint k = h * 8u + 2u * j + e;
        const uint lo = k < 8u ? (byteAt(b + 96u + k) & 0xFu) : (byteAt(b + 96u + k - 8u) >> 4);
        const uint hi = (byteAt(b + 96u + 8u + (k & 3u)) >> (2u * (k >> 2))) & 3u;
        dl[e] = d * float(int(lo | (hi << 4)) - 32);
    }
    for (uint l = 0u; l < 16u; ++l) {
        const int q0 = int((byteAt(q + l) >> shift) & 3u) - ((byteAt(b + l) & m) != 0u ? 0 : 4);
        const int q1 =
            int((byteAt(q + l + 16u) >> shift) & 3u) - ((byteAt(b + l + 16u) & m) != 0u ? 0 : 4);
        v[l] = dl[0] * float(q0);
        v[l + 16u] = dl[1] * float(q1);
    }
#elif defined(WT_Q4_K)
    // 144 bytes: d, dmin, scales[12], qs[128].
    const uint b = rowStart + (g >> 3) * 144u, s = g & 7u;
    const float d = halfAt(b), dmin = halfAt(b + 2u);
    float sc, mn;
    scaleMinK4(b + 4u, s, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    const uint q = b + 16u + (s >> 1) * 32u, shift = (s & 1u) * 4u;
    for (uint l = 0u; l < 32u; ++l) v[l] = d1 * float((byteAt(q + l) >> shift) & 0xFu) - m1;
#elif defined(WT_Q5_K)
    // 176 bytes: d, dmin, scales[12], qh[32], qs[128].
    const uint b = rowStart + (g >> 3) * 176u, s = g & 7u;
    const float d = halfAt(b), dmin = halfAt(b + 2u);
    float sc, mn;
    scaleMinK4(b + 4u, s, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    const uint q = b + 48u + (s >> 1) * 32u, shift = (s & 1u) * 4u, u = 1u << s;
    for (uint l = 0u; l < 32u; ++l) {
        const uint hb = (byteAt(b + 16u + l) & u) != 0u ? 16u : 0u;
        v[l] = d1 * float(((byteAt(q + l) >> shift) & 0xFu) + hb) - m1;
    }
#elif defined(WT_Q6_K)
    // 210 bytes: ql[128], qh[64], scales[16] (int8), d.
    const uint b = rowStart + (g >> 3) * 210u, s = g & 7u, h = s >> 2, qq = s & 3u;
    const float d = halfAt(b + 208u);
    const uint ql = b + h * 64u + ((qq & 1u) != 0u ? 32u : 0u), qh = b + 128u + h * 32u;
    const uint lowShift = qq >= 2u ? 4u : 0u, highShift = 2u * qq;
    const uint scb = b + 192u + h * 8u + 2u * qq;
    for (uint l = 0u; l < 32u; ++l) {
        const float dl = d * float(i8At(scb + (l >> 4)));
        const int q = int(((byteAt(ql + l) >> lowShift) & 0xFu) |
                          (((byteAt(qh + l) >> highShift) & 3u) << 4)) - 32;
        v[l] = dl * float(q);
    }
#elif defined(WT_IQ4_XS)
    // 136 bytes: d, scales_h (u16), scales_l[4], qs[128].
    const uint b = rowStart + (g >> 3) * 136u, s = g & 7u;
    const float d = halfAt(b);
    const uint ls = ((byteAt(b + 4u + (s >> 1)) >> (4u * (s & 1u))) & 0xFu) |
                    (((u16At(b + 2u) >> (2u * s)) & 3u) << 4);
    const float dl = d * float(int(ls) - 32);
    const uint q = b + 8u + s * 16u;
    for (uint j = 0u; j < 16u; ++j) {
        const uint c = byteAt(q + j);
        v[j] = dl * kIq4nl[c & 0xFu];
        v[j + 16u] = dl * kIq4nl[c >> 4];
    }
#else
#error "matmul.comp: define one WT_<TYPE>"
#endif
}
