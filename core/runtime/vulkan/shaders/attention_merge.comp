#version 450
// The second step of a split attention (attention.comp with nSplit > 1): combines the key
// splits' softmax states of one (query head, query token) — workgroup (x, y) — into the output,
// in split order: out = sum_s acc_s exp(m_s - M) / sum_s l_s exp(m_s - M), M = max m_s over the
// splits that saw keys (l_s > 0).
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer PBuf { float part[]; }; // [nTok, nHeads, nSplit, 2 + hd]
layout(std430, binding = 1) writeonly buffer OBuf { float o[]; };  // [nTok, nHeads * hd]

layout(push_constant) uniform Push {
    uint nHeads;
    uint hd;
    uint nSplit;
} pc;

void main() {
    const uint h = gl_WorkGroupID.x;
    const uint t = gl_WorkGroupID.y;
    const uint hd = pc.hd;
    const uint base = (t * pc.nHeads + h) * pc.nSplit * (hd + 2);
    float mx = -1.0 / 0.0;
    for (uint s = 0; s < pc.nSplit; ++s)
        if (part[base + s * (hd + 2) + 1] > 0.0) mx = max(mx, part[base + s * (hd + 2)]);
    float l = 0.0;
    for (uint s = 0; s < pc.nSplit; ++s) {
        const uint b = base + s * (hd + 2);
        if (part[b + 1] > 0.0) l += part[b + 1] * exp(part[b] - mx);
    }
    const float inv = 1.0 / l;
    for (uint d = gl_LocalInvocationID.x; d < hd; d += 64) {
        float a = 0.0;
        for (uint s = 0; s < pc.nSplit; ++s) {
            const uint b = base + s * (hd + 2);
            if (part[b + 1] > 0.0) a += part[b + 2 + d] * exp(part[b] - mx);
        }
        o[(t * pc.nHeads + h) * hd + d] = a * inv;
    }
}
