#version 450
// Scores rows of logits on the device for perplexity: out[r] = log softmax(logits[r])[target[r]]
// (0 when target[r] < 0), NaN when the row holds a non-finite logit (the host then reports the
// weights as the CPU path does). One workgroup per row: the row's maximum, then the sum of
// exp(x - max), each reduced over the workgroup in shared memory; float arithmetic.
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer LBuf { float logits[]; }; // [rows, vocab]
layout(std430, binding = 1) readonly buffer TBuf { int targets[]; };  // [rows]
layout(std430, binding = 2) writeonly buffer OBuf { float outv[]; };  // [rows]

layout(push_constant) uniform Push {
    uint vocab;
    uint rows;
};

shared float red[256];
shared uint bad[256];

void main() {
    const uint r = gl_WorkGroupID.x;
    if (r >= rows) return; // uniform over the workgroup
    const uint tid = gl_LocalInvocationID.x;
    const uint base = r * vocab;
    float m = -3.402823e38;
    uint nonFinite = 0u;
    for (uint i = tid; i < vocab; i += 256u) {
        const float x = logits[base + i];
        if (isnan(x) || isinf(x))
            nonFinite = 1u;
        else
            m = max(m, x);
    }
    red[tid] = m;
    bad[tid] = nonFinite;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
        if (tid < s) {
            red[tid] = max(red[tid], red[tid + s]);
            bad[tid] |= bad[tid + s];
        }
        barrier();
    }
    const float mx = red[0];
    const uint anyBad = bad[0];
    barrier();
    float sum = 0.0;
    for (uint i = tid; i < vocab; i += 256u) sum += exp(logits[base + i] - mx);
    red[tid] = sum;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    if (tid == 0u) {
        const int t = targets[r];
        float lp = t >= 0 ? logits[base + uint(t)] - mx - log(red[0]) : 0.0;
        if (anyBad != 0u) lp = uintBitsToFloat(0x7fc00000u);
        outv[r] = lp;
    }
}
