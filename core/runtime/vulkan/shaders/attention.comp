#version 450
// Causal softmax attention over a float32 KV cache: kernels::attentionEx's semantics (causal,
// GQA/MQA, sliding window, scale, soft-capping, ALiBi before or after the scale).
//
// One workgroup per (query head, query token, key split): gl_WorkGroupID.x is the head, .y the
// token, .z the split. The visible keys [lo, p] of a token are visited in chunks of CHUNK (= the workgroup size): each invocation
// scores one key of the chunk (q . k, q held in shared memory), the workgroup reduces the chunk's
// maximum and sum, and each invocation accumulates the output dimensions d = tid + CHUNK*i
// (i < MAX_HD / CHUNK) over the chunk's keys, with the running softmax state (max m, sum l)
// rescaling what it accumulated so far (online softmax). So any context length runs in O(1)
// shared memory; float accumulation throughout. nSplit > 1 (few queries over a long context:
// flash-decoding): split z takes the keys [lo + z*splitKeys, lo + (z+1)*splitKeys) and writes
// its state (m, l, unnormalised acc) to PART; attention_merge.comp combines the splits.
//
// Buffers: Q [nTok, nHeads*hd] (the tokens of this dispatch), K and V [rows, kvDim] (the device
// mirror of the cache), O [nTok, nHeads*hd], slopes [nHeads] (ALiBi, read when flags & 1).
layout(local_size_x = 64) in;
#define CHUNK 64
#define MAX_HD 256
#define PER_INV (MAX_HD / CHUNK)

layout(std430, binding = 0) readonly buffer QBuf { float q[]; };
layout(std430, binding = 1) readonly buffer KBuf { float kc[]; };
layout(std430, binding = 2) readonly buffer VBuf { float vc[]; };
layout(std430, binding = 3) writeonly buffer OBuf { float o[]; };
layout(std430, binding = 4) readonly buffer SBuf { float slopes[]; };
layout(std430, binding = 5) writeonly buffer PBuf { float part[]; }; // [nTok, nHeads, nSplit, 2 + hd]

layout(push_constant) uniform Push {
    uint pos0;   // position of token 0 of this dispatch
    uint nHeads; // query heads
    uint group;  // query heads per KV head
    uint hd;     // head size (<= MAX_HD)
    uint kvDim;  // K/V row length (KV heads * hd)
    uint window; // sliding window (0: none)
    uint flags;  // 1: ALiBi, 2: ALiBi before the scale, 4: soft-capping
    float scale;
    float softcap;
    uint nSplit;    // key splits (1: the output is written directly)
    uint splitKeys; // keys per split (a multiple of CHUNK)
} pc;

shared float sq[MAX_HD];
shared float sp[CHUNK];
shared float red[CHUNK];

float reduceMax(float x, uint tid) {
    red[tid] = x;
    barrier();
    for (uint s = CHUNK / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] = max(red[tid], red[tid + s]);
        barrier();
    }
    const float r = red[0];
    barrier();
    return r;
}

float reduceSum(float x, uint tid) {
    red[tid] = x;
    barrier();
    for (uint s = CHUNK / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    const float r = red[0];
    barrier();
    return r;
}

// tanh without cancellation for large |x| and to float accuracy near 0.
float tanhAccurate(float x) {
    const float ax = abs(x);
    if (ax < 0.5) {
        const float x2 = x * x;
        float p = -929569.0 / 638512875.0;
        p = p * x2 + 21844.0 / 6081075.0;
        p = p * x2 - 1382.0 / 155925.0;
        p = p * x2 + 62.0 / 2835.0;
        p = p * x2 - 17.0 / 315.0;
        p = p * x2 + 2.0 / 15.0;
        p = p * x2 - 1.0 / 3.0;
        return x + x * x2 * p;
    }
    const float e = exp(-2.0 * ax);
    return sign(x) * (1.0 - e) / (1.0 + e);
}

void main() {
    const uint h = gl_WorkGroupID.x;
    const uint t = gl_WorkGroupID.y;
    const uint tid = gl_LocalInvocationID.x;
    const uint hd = pc.hd;
    const uint p = pc.pos0 + t;
    const uint lo = (pc.window > 0 && p + 1 > pc.window) ? p + 1 - pc.window : 0;
    const uint kvOff = (h / pc.group) * hd;
    const uint qOff = (t * pc.nHeads + h) * hd;
    for (uint d = tid; d < hd; d += CHUNK) sq[d] = q[qOff + d];
    barrier();

    const bool alibi = (pc.flags & 1u) != 0;
    const bool alibiBefore = (pc.flags & 2u) != 0;
    const bool softcap = (pc.flags & 4u) != 0;
    const float slope = alibi ? slopes[h] : 0.0;

    float acc[PER_INV];
    for (uint i = 0; i < PER_INV; ++i) acc[i] = 0.0;
    float m = -1.0 / 0.0; // running maximum (-inf: nothing seen yet)
    float l = 0.0;        // running sum of exp(x - m)

    const uint z = gl_WorkGroupID.z;
    const uint kFrom = lo + z * pc.splitKeys; // this split's keys: [kFrom, kLast]
    const uint kLast = pc.nSplit > 1 ? min(p, kFrom + pc.splitKeys - 1) : p;
    for (uint c0 = kFrom; c0 <= kLast; c0 += CHUNK) {
        const uint j = c0 + tid;
        const bool valid = j <= kLast;
        float x = -1.0 / 0.0;
        if (valid) {
            const uint kb = j * pc.kvDim + kvOff;
            float s = 0.0;
            for (uint d = 0; d < hd; ++d) s += sq[d] * kc[kb + d];
            if (alibi || softcap) {
                const float rel = float(int(j) - int(p));
                x = alibiBefore ? (s + slope * rel) * pc.scale : s * pc.scale + slope * rel;
                if (softcap) x = pc.softcap * tanhAccurate(x / pc.softcap);
            } else {
                x = s * pc.scale;
            }
        }
        const float mc = reduceMax(x, tid); // finite: key c0 <= p is visible
        const float mn = max(m, mc);
        const float fa = l == 0.0 ? 0.0 : exp(m - mn);
        const float e = valid ? exp(x - mn) : 0.0;
        sp[tid] = e;
        const float cs = reduceSum(e, tid); // its barriers publish sp[] too
        l = l * fa + cs;
        m = mn;
        const uint nk = min(uint(CHUNK), kLast + 1 - c0);
        for (uint i = 0; i < PER_INV; ++i) {
            const uint d = tid + i * CHUNK;
            if (d < hd) {
                float a = 0.0;
                uint vb = c0 * pc.kvDim + kvOff + d;
                for (uint jj = 0; jj < nk; ++jj, vb += pc.kvDim) a += sp[jj] * vc[vb];
                acc[i] = acc[i] * fa + a;
            }
        }
        barrier(); // sp[] is rewritten by the next chunk
    }
    if (pc.nSplit > 1) {
        const uint pb = ((t * pc.nHeads + h) * pc.nSplit + z) * (hd + 2);
        if (tid == 0) {
            part[pb] = m; // -inf with l = 0: the split sees no key
            part[pb + 1] = l;
        }
        for (uint i = 0; i < PER_INV; ++i) {
            const uint d = tid + i * CHUNK;
            if (d < hd) part[pb + 2 + d] = acc[i];
        }
        return;
    }
    const float inv = 1.0 / l;
    for (uint i = 0; i < PER_INV; ++i) {
        const uint d = tid + i * CHUNK;
        if (d < hd) o[qOff + d] = acc[i] * inv;
    }
}
