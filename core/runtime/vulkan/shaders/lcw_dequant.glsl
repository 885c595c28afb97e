// Dequantisation of one group of 32 weights (stored columns 32 g .. 32 g + 31 of row r) of an
// lcw packed weight in the layout of kernels::GpuPacked (core/runtime/packed_linear.h): codes
// bit-packed LSB-first per row (rowBytes / 4 words a row), f16 scales and zeros per group, mask
// bits, outlier columns in f16; every array at its word offset in W (push constants). The values
// equal PackedLinear::dequantizeRows() exactly (one float multiply, as the CPU decodes them).

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

void dequantGroup(uint r, uint g, inout float v[32]) {
    const uint k0 = g * 32u;
    const uint kn = min(32u, pc.cols - k0);
    const uint bits = pc.bits, cmask = (1u << bits) - 1u;
    const uint codes = r * (pc.rowBytes >> 2);
    uint gi = k0 / pc.groupCols;
    uint gEnd = (gi + 1u) * pc.groupCols;
    float s = f16At(pc.offScales, r * pc.gpr + gi);
    float z = (pc.kind == 0u && pc.sym == 0u) ? f16At(pc.offZeros, r * pc.gpr + gi) : 0.0;
    const int half_ = int(1u << (bits - 1u));
    for (uint i = 0u; i < kn; ++i) {
        const uint k = k0 + i;
        if (k >= gEnd) {
            gi += 1u;
            gEnd += pc.groupCols;
            s = f16At(pc.offScales, r * pc.gpr + gi);
            if (pc.kind == 0u && pc.sym == 0u) z = f16At(pc.offZeros, r * pc.gpr + gi);
        }
        const uint bit = k * bits, wi = codes + (bit >> 5), sh = bit & 31u;
        uint u = W[wi] >> sh;
        if (sh + bits > 32u) u |= W[wi + 1u] << (32u - sh);
        u &= cmask;
        float val;
        if (pc.kind == 0u)
            val = pc.sym != 0u ? s * float(int(u) - half_) : s * (float(u) - z);
        else if (pc.kind == 1u)
            val = s * kNf4[u & 15u];
        else
            val = s * e4m3(u);
        if (pc.hasMask != 0u && ((W[pc.offMask + r * pc.maskWords + (k >> 5)] >> (k & 31u)) & 1u) == 0u)
            val = 0.0;
        v[i] = val;
    }
    // Outlier columns replace the decoded values.
    const uint j1 = pc.nOut > 0u ? W[pc.offOstart + g + 1u] : 0u;
    for (uint j = pc.nOut > 0u ? W[pc.offOstart + g] : 0u; j < j1; ++j)
        v[W[pc.offOcols + j] - k0] = f16At(pc.offOv, r * pc.nOut + j);
}
