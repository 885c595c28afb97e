#version 450
// Matrix-vector products for few tokens (decode): Y[t, row0 + r] = sum_k X[t, k] * W[r, k]
// (+ B[biasOffset + row0 + r]) for the rows r < rows of one chunk of a weight stored in any
// runtime type (compiled once per type with -DWT_<TYPE>, see dequant.glsl). The weight arrives
// as its raw bytes; each invocation dequantises groups of 32 weights in registers and multiplies
// them with up to TOK tokens; a workgroup of 64 sums one row. matmul.comp is the tiled version
// for many tokens.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 64) in;

#include "matmul_common.glsl"

#define TOK 8
shared float red[TOK][64];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tok0 = gl_WorkGroupID.y * TOK;
    const uint ntk = min(uint(TOK), pc.nTok - tok0);
    const uint nGroups = (pc.cols + 31u) / 32u;
    for (uint r = gl_WorkGroupID.x; r < pc.rows; r += gl_NumWorkGroups.x) {
        float acc[TOK];
        for (uint t = 0u; t < TOK; ++t) acc[t] = 0.0;
        for (uint g = tid; g < nGroups; g += 64u) {
            float v[32];
            for (uint i = 0u; i < 32u; ++i) v[i] = 0.0;
            dequantGroup(r, g, v);
            const uint k0 = g * 32u;
            const uint kn = min(32u, pc.cols - k0);
            for (uint t = 0u; t < ntk; ++t) {
                const uint xo = (tok0 + t) * pc.cols;
                float s = 0.0;
                for (uint i = 0u; i < kn; ++i) s += v[i] * X[xo + xcol(k0 + i)];
                acc[t] += s;
            }
        }
        for (uint t = 0u; t < TOK; ++t) red[t][tid] = acc[t];
        barrier();
        for (uint s = 32u; s > 0u; s >>= 1) {
            if (tid < s)
                for (uint t = 0u; t < TOK; ++t) red[t][tid] += red[t][tid + s];
            barrier();
        }
        if (tid < ntk) {
            float y = red[tid][0];
            if (pc.hasBias != 0u) y += B[pc.biasOffset + pc.row0 + r];
            Y[(tok0 + tid) * pc.ldy + pc.row0 + r] = y;
        }
        barrier();
    }
}
