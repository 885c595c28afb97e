#version 450
// Tiled matrix products for many tokens (prefill, perplexity): Y[t, row0 + r] = sum_k X[t, k] *
// W[r, k] (+ bias), same bindings and result as matvec.comp. A workgroup of 64 computes a tile
// of TR rows x TT tokens: per group of 32 input columns, TR invocations dequantise one row's
// group each into shared memory, all load the TT x 32 activations, then each invocation adds
// 32-term dot products to its 4 outputs.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 64) in;

#include "matmul_common.glsl"

#define TR 16u
#define TT 16u
shared float Ws[TR][33];
shared float Xs[TT][33];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint rowBase = gl_WorkGroupID.x * TR, tokBase = gl_WorkGroupID.y * TT;
    const uint lr = tid & 15u, lt = tid >> 4; // this invocation's row and first token
    float acc[4] = float[4](0.0, 0.0, 0.0, 0.0);
    const uint nGroups = (pc.cols + 31u) / 32u;
    for (uint g = 0u; g < nGroups; ++g) {
        if (tid < TR) {
            float v[32];
            for (uint i = 0u; i < 32u; ++i) v[i] = 0.0;
            const uint r = rowBase + tid;
            if (r < pc.rows) dequantGroup(r, g, v);
            for (uint i = 0u; i < 32u; ++i) Ws[tid][i] = v[i];
        }
        for (uint e = tid; e < TT * 32u; e += 64u) {
            const uint t = e >> 5, i = e & 31u;
            const uint tok = tokBase + t, k = g * 32u + i;
            Xs[t][i] = (tok < pc.nTok && k < pc.cols) ? X[tok * pc.cols + xcol(k)] : 0.0;
        }
        barrier();
        for (uint j = 0u; j < 4u; ++j) {
            const uint t = lt + 4u * j;
            float s = 0.0;
            for (uint i = 0u; i < 32u; ++i) s += Ws[lr][i] * Xs[t][i];
            acc[j] += s;
        }
        barrier();
    }
    const uint r = rowBase + lr;
    if (r >= pc.rows) return;
    const float b = pc.hasBias != 0u ? B[pc.biasOffset + pc.row0 + r] : 0.0;
    for (uint j = 0u; j < 4u; ++j) {
        const uint tok = tokBase + lt + 4u * j;
        if (tok < pc.nTok) Y[tok * pc.ldy + pc.row0 + r] = acc[j] + b;
    }
}
