// Dequantisation of one group of 32 weights (stored columns 32 g .. 32 g + 31 of row r) of an
// lcw packed weight in the layout of kernels::GpuPacked (core/runtime/packed_linear.h): codes
// bit-packed LSB-first per row (rowBytes / 4 words a row; 2:4: two slots per 4 columns with
// 2-bit indices), f16 scales and zeros per group, mask bits, outlier columns in f16; every array
// at its word offset in W (push constants). The values equal PackedLinear::dequantizeRows()
// exactly (one float multiply, as the CPU decodes them).

const float kNf4[16] = float[16](-1.0, -0.6961928009986877, -0.5250730514526367,
                                 -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
                                 -0.09105003625154495, 0.0, 0.07958029955625534,
                                 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                                 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

// f16 number i of the array starting at word `off`.
float f16At(uint off, uint i) {
    const uint w = W[off + (i >> 1)];
    return unpackHalf2x16((i & 1u) != 0u ? (w >> 16) : w).x;
}

// float8 e4m3fn (no infinities; S.1111.111 is NaN).
float e4m3(uint u) {
    const uint e = (u >> 3) & 15u, m = u & 7u;
    if (e == 15u && m == 7u) return uintBitsToFloat(0x7FC00000u);
    const float a = e == 0u ? float(m) * (1.0 / 512.0) : ldexp(1.0 + float(m) * 0.125, int(e) - 7);
    return (u & 0x80u) != 0u ? -a : a;
}

uint codeAt(uint rowWord, uint pos, uint bits) {
    const uint bit = pos * bits, wi = rowWord + (bit >> 5), sh = bit & 31u;
    uint u = W[wi] >> sh;
    if (sh + bits > 32u) u |= W[wi + 1u] << (32u - sh);
    return u & ((1u << bits) - 1u);
}

float decodeCode(uint u, float s, float z) {
    if (pc.kind == 0u)
        return pc.sym != 0u ? s * float(int(u) - int(1u << (pc.bits - 1u))) : s * (float(u) - z);
    if (pc.kind == 1u) return s * kNf4[u & 15u];
    return s * e4m3(u);
}

// 2:4: the 16 slots of the 8 quads of the block (scale groups are multiples of 64 columns or the
// whole row, so one scale covers the block). Symmetric formats skip slots holding the zero code.
void dequantTwoFour(uint r, uint g, inout float v[32]) {
    const uint k0 = g * 32u, nSlots = 2u * ((pc.cols + 3u) / 4u);
    const uint gi = k0 / pc.groupCols;
    const float s = f16At(pc.offScales, r * pc.gpr + gi);
    const float z = (pc.kind == 0u && pc.sym == 0u) ? f16At(pc.offZeros, r * pc.gpr + gi) : 0.0;
    const int zc = pc.kind == 0u ? (pc.sym != 0u ? int(1u << (pc.bits - 1u)) : -1)
                                 : (pc.kind == 1u ? 7 : 0);
    const uint codes = r * (pc.rowBytes >> 2);
    const uint idx = W[pc.offIdx + r * pc.idxWords + g]; // 16 slots of 2 bits: one word
    for (uint j = 0u; j < 16u; ++j) {
        const uint sl = 16u * g + j;
        if (sl >= nSlots) break;
        const uint k = 4u * (sl >> 1) + ((idx >> (2u * j)) & 3u);
        const uint u = codeAt(codes, sl, pc.bits);
        if (k < pc.cols && int(u) != zc) v[k - k0] = decodeCode(u, s, z);
    }
}

void dequantGroup(uint r, uint g, inout float v[32]) {
    const uint k0 = g * 32u;
    const uint kn = pc.twoFour != 0u ? 0u : min(32u, pc.cols - k0);
    if (pc.twoFour != 0u) dequantTwoFour(r, g, v);
    const uint bits = pc.bits;
    const uint codes = r * (pc.rowBytes >> 2);
    uint gi = k0 / pc.groupCols;
    uint gEnd = (gi + 1u) * pc.groupCols;
    float s = f16At(pc.offScales, r * pc.gpr + gi);
    float z = (pc.kind == 0u && pc.sym == 0u) ? f16At(pc.offZeros, r * pc.gpr + gi) : 0.0;
    for (uint i = 0u; i < kn; ++i) {
        const uint k = k0 + i;
        if (k >= gEnd) {
            gi += 1u;
            gEnd += pc.groupCols;
            s = f16At(pc.offScales, r * pc.gpr + gi);
            if (pc.kind == 0u && pc.sym == 0u) z = f16At(pc.offZeros, r * pc.gpr + gi);
        }
        float val = decodeCode(codeAt(codes, k, bits), s, z);
        if (pc.hasMask != 0u && ((W[pc.offMask + r * pc.maskWords + (k >> 5)] >> (k & 31u)) & 1u) == 0u)
            val = 0.0;
        v[i] = val;
    }
    // Outlier columns replace the decoded values.
    const uint j1 = pc.nOut > 0u ? W[pc.offOstart + g + 1u] : 0u;
    for (uint j = pc.nOut > 0u ? W[pc.offOstart + g] : 0u; j < j1; ++j)
        v[W[pc.offOcols + j] - k0] = f16At(pc.offOv, r * pc.nOut + j);
}
