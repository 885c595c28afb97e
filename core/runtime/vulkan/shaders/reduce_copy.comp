#version 450
// dst[i] = src[i] for i < count, or dst[i] = fill when `mode` is 1 (src unused): reads device
// accumulators back through a host-visible buffer, and initialises them.
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer SrcBuf { float src[]; };
layout(std430, binding = 1) writeonly buffer DstBuf { float dst[]; };
layout(push_constant) uniform Push {
    uint count, mode;
    float fill;
} pc;

void main() {
    const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= pc.count) return;
    dst[i] = pc.mode == 1u ? pc.fill : src[i];
}
