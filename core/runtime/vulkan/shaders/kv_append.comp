#version 450
// Copies new KV cache rows into the device mirror (vk_attention.cpp): dk[dst0 + i] = sk[i] and
// dv[dst0 + i] = sv[i] for i < n (floats); the host buffers sk/sv hold the rows. Invocation
// (x, y) of the 2-D grid copies element y * rowStride + x.
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer SK { float sk[]; };
layout(std430, binding = 1) readonly buffer SV { float sv[]; };
layout(std430, binding = 2) writeonly buffer DK { float dk[]; };
layout(std430, binding = 3) writeonly buffer DV { float dv[]; };

layout(push_constant) uniform Push {
    uint dst0;
    uint n;
    uint rowStride; // invocations per grid row (groups.x * 256)
} pc;

void main() {
    const uint i = gl_GlobalInvocationID.y * pc.rowStride + gl_GlobalInvocationID.x;
    if (i >= pc.n) return;
    dk[pc.dst0 + i] = sk[i];
    dv[pc.dst0 + i] = sv[i];
}
