#version 450
// The resident forward's normalisations (vk_forward.cpp): RMSNorm (y = w * x / rms(x) (+ b)) or
// LayerNorm (y = (x - mean) / std * w (+ b)) of each row of x, kernels::rmsNorm / layerNorm.
// One workgroup per row. The weights and biases live in the forward's parameter buffer P at
// wOff / bOff; row r uses the weights (r % wPeriod) * dim.. (per-head q/k norms: wPeriod =
// heads, else 1). x and y may be the same buffer (every element is read before it is written
// by the same invocation).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer XBuf { float x[]; };
layout(std430, binding = 1) writeonly buffer YBuf { float y[]; };
layout(std430, binding = 2) readonly buffer PBuf { float P[]; };

layout(push_constant) uniform Push {
    uint rows, dim, inOff, outOff; // element offsets of row 0
    float eps;
    uint flags;   // 1: LayerNorm, 2: bias
    uint wPeriod; // rows per cycle of the weights
    uint wOff, bOff;
} pc;

shared float red[128];

float reduceSum(float v, uint tid) {
    red[tid] = v;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    const float r = red[0];
    barrier();
    return r;
}

void main() {
    const uint r = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (r >= pc.rows) return;
    const uint tid = gl_LocalInvocationID.x;
    const uint xi = pc.inOff + r * pc.dim, yi = pc.outOff + r * pc.dim;
    const uint wi = pc.wOff + (r % pc.wPeriod) * pc.dim;
    const bool layerNorm = (pc.flags & 1u) != 0;
    float mean = 0.0;
    if (layerNorm) {
        float s = 0.0;
        for (uint i = tid; i < pc.dim; i += 128) s += x[xi + i];
        mean = reduceSum(s, tid) / float(pc.dim);
    }
    float ss = 0.0;
    for (uint i = tid; i < pc.dim; i += 128) {
        const float d = x[xi + i] - mean;
        ss += d * d;
    }
    const float inv = 1.0 / sqrt(reduceSum(ss, tid) / float(pc.dim) + pc.eps);
    const bool bias = (pc.flags & 2u) != 0;
    for (uint i = tid; i < pc.dim; i += 128) {
        float v = layerNorm ? (x[xi + i] - mean) * inv * P[wi + i] : P[wi + i] * (x[xi + i] * inv);
        if (bias) v += P[pc.bOff + i];
        y[yi + i] = v;
    }
}
