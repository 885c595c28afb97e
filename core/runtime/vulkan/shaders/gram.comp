#version 450
// G += X^T X for X [n, d] row-major (f32), G kept as float-float pairs (reduce_ff.glsl) in `acc`
// [d, d, 2]. A workgroup of 16 x 16 invocations computes one 64 x 64 tile of G, only tiles on or
// above the diagonal (the host mirrors the rest): per step of 16 rows all load the step's 64
// columns of both sides into shared memory, then each invocation adds 16 products to each of
// its 4 x 4 entries with fma. The f32 sums are folded into float-float registers every 64 rows,
// and those into `acc` at the end, so the rounding is that of at most 64 f32 terms.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 16, local_size_y = 16) in;

#include "reduce_ff.glsl"

layout(std430, binding = 0) readonly buffer XBuf { float X[]; };
layout(std430, binding = 1) buffer AccBuf { float acc[]; };
layout(push_constant) uniform Push {
    uint n, d;
} pc;

#define T 64u
#define K 16u
shared float As[K][T];
shared float Bs[K][T];

void main() {
    const uint ti = gl_WorkGroupID.y, tj = gl_WorkGroupID.x;
    if (tj < ti) return; // the whole workgroup: below the diagonal
    const uint i0 = ti * T, j0 = tj * T;
    const uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
    const uint tid = ly * 16u + lx;
    float s[16];
    vec2 f[16];
    for (uint e = 0u; e < 16u; ++e) {
        s[e] = 0.0;
        f[e] = vec2(0.0);
    }
    uint steps = 0u;
    for (uint r0 = 0u; r0 < pc.n; r0 += K) {
        for (uint q = 0u; q < 4u; ++q) {
            const uint e = tid + 256u * q, k = e / T, c = e % T;
            const uint r = r0 + k;
            const bool rowOk = r < pc.n;
            As[k][c] = (rowOk && i0 + c < pc.d) ? X[r * pc.d + i0 + c] : 0.0;
            Bs[k][c] = (rowOk && j0 + c < pc.d) ? X[r * pc.d + j0 + c] : 0.0;
        }
        barrier();
        for (uint k = 0u; k < K; ++k) {
            float a[4], b[4];
            for (uint u = 0u; u < 4u; ++u) {
                a[u] = As[k][ly + 16u * u];
                b[u] = Bs[k][lx + 16u * u];
            }
            for (uint u = 0u; u < 4u; ++u)
                for (uint v = 0u; v < 4u; ++v) s[u * 4u + v] = fma(a[u], b[v], s[u * 4u + v]);
        }
        barrier();
        if (++steps == 4u) {
            steps = 0u;
            for (uint e = 0u; e < 16u; ++e) {
                f[e] = ffAddF(f[e], s[e]);
                s[e] = 0.0;
            }
        }
    }
    for (uint u = 0u; u < 4u; ++u)
        for (uint v = 0u; v < 4u; ++v) {
            const uint i = i0 + ly + 16u * u, j = j0 + lx + 16u * v;
            if (i >= pc.d || j >= pc.d) continue;
            const uint e = u * 4u + v, at = 2u * (i * pc.d + j);
            const vec2 g = ffAdd(vec2(acc[at], acc[at + 1u]), ffAddF(f[e], s[e]));
            acc[at] = g.x;
            acc[at + 1u] = g.y;
        }
}
