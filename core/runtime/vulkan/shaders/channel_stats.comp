#version 450
// Per-channel statistics of X [n, c] row-major (f32), added into `acc` [c, 12]: float-float sums
// (reduce_ff.glsl) of d, d^2, d^3, d^4 with d = x - shift[channel], and of |x|, then the minimum
// and maximum of x. One invocation per channel walks the rows (neighbouring invocations read
// neighbouring floats of each row).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 64) in;

#include "reduce_ff.glsl"

layout(std430, binding = 0) readonly buffer XBuf { float X[]; };
layout(std430, binding = 1) readonly buffer ShiftBuf { float shift[]; };
layout(std430, binding = 2) buffer AccBuf { float acc[]; };
layout(push_constant) uniform Push {
    uint n, c;
} pc;

void main() {
    const uint j = gl_GlobalInvocationID.x;
    if (j >= pc.c) return;
    const uint at = 12u * j;
    vec2 s1 = vec2(acc[at + 0u], acc[at + 1u]), s2 = vec2(acc[at + 2u], acc[at + 3u]);
    vec2 s3 = vec2(acc[at + 4u], acc[at + 5u]), s4 = vec2(acc[at + 6u], acc[at + 7u]);
    vec2 sa = vec2(acc[at + 8u], acc[at + 9u]);
    float mn = acc[at + 10u], mx = acc[at + 11u];
    const float sh = shift[j];
    for (uint r = 0u; r < pc.n; ++r) {
        const float x = X[r * pc.c + j];
        precise float d = x - sh;
        precise float d2 = d * d;
        precise float d3 = d2 * d;
        precise float d4 = d2 * d2;
        s1 = ffAddF(s1, d);
        s2 = ffAddF(s2, d2);
        s3 = ffAddF(s3, d3);
        s4 = ffAddF(s4, d4);
        sa = ffAddF(sa, abs(x));
        mn = min(mn, x);
        mx = max(mx, x);
    }
    acc[at + 0u] = s1.x, acc[at + 1u] = s1.y, acc[at + 2u] = s2.x, acc[at + 3u] = s2.y;
    acc[at + 4u] = s3.x, acc[at + 5u] = s3.y, acc[at + 6u] = s4.x, acc[at + 7u] = s4.y;
    acc[at + 8u] = sa.x, acc[at + 9u] = sa.y, acc[at + 10u] = mn, acc[at + 11u] = mx;
}
