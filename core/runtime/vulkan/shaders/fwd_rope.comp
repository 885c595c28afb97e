#version 450
// The resident forward's rotary embedding (vk_forward.cpp), kernels::applyRope: rows of x
// [nTok, ld] hold nHeads heads of hd values; the first rotDim of each head are rotated by the
// per-token tables cos/sin [nTok, rotDim/2] (computed on the host by kernels::ropeTables, so
// every RoPE scaling lcw knows works). Neox style pairs (i, i + rotDim/2), interleaved style
// (2i, 2i + 1). One invocation per (token, head, pair).
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer XBuf { float x[]; };
layout(std430, binding = 1) readonly buffer CBuf { float cs[]; };
layout(std430, binding = 2) readonly buffer SBuf { float sn[]; };

layout(push_constant) uniform Push {
    uint nTok, ld, nHeads, hd, rotDim, interleaved, rowStride;
} pc;

void main() {
    const uint g = gl_GlobalInvocationID.y * pc.rowStride + gl_GlobalInvocationID.x;
    const uint half_ = pc.rotDim / 2;
    if (g >= pc.nTok * pc.nHeads * half_) return;
    const uint i = g % half_;
    const uint h = (g / half_) % pc.nHeads;
    const uint t = g / (half_ * pc.nHeads);
    const float c = cs[t * half_ + i], s = sn[t * half_ + i];
    const uint base = t * pc.ld + h * pc.hd;
    const uint ia = pc.interleaved != 0 ? base + 2 * i : base + i;
    const uint ib = pc.interleaved != 0 ? ia + 1 : ia + half_;
    const float a = x[ia], b = x[ib];
    x[ia] = a * c - b * s;
    x[ib] = b * c + a * s;
}
