#version 450
// The resident forward's element-wise steps (vk_forward.cpp) on n floats, y[yOff + i] with
// a[aOff + i], b[i]:
//   op 0 copy     y = a
//   op 1 add      y += a
//   op 2 add2     y += a + b            (parallel residual)
//   op 3 act      y = act(y)            (kernels::activate)
//   op 4 gated    y = act(y) * a        (kernels::activateGated)
//   op 5 softcap  y = p * tanh(y / p)
layout(local_size_x = 256) in;

layout(std430, binding = 0) buffer YBuf { float y[]; };
layout(std430, binding = 1) readonly buffer ABuf { float a[]; };
layout(std430, binding = 2) readonly buffer BBuf { float b[]; };

layout(push_constant) uniform Push {
    uint op, n, act, yOff, aOff, rowStride;
    float p;
} pc;

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

// erf(x) from the Chebyshev fit of erfc (fractional error below 1.2e-7).
float erfApprox(float x) {
    const float z = abs(x);
    const float t = 1.0 / (1.0 + 0.5 * z);
    const float r =
        t * exp(-z * z - 1.26551223 +
                t * (1.00002368 +
                     t * (0.37409196 +
                          t * (0.09678418 +
                               t * (-0.18628806 +
                                    t * (0.27886807 +
                                         t * (-1.13520398 +
                                              t * (1.48851587 +
                                                   t * (-0.82215223 + t * 0.17087277)))))))));
    return x >= 0.0 ? 1.0 - r : r - 1.0;
}

// kernels::Activation: 0 silu, 1 gelu (erf), 2 gelu (tanh), 3 relu.
float act1(float x) {
    switch (pc.act) {
    case 0u:
        return x / (1.0 + exp(-x));
    case 1u:
        return 0.5 * x * (1.0 + erfApprox(x * 0.70710678118654752));
    case 2u:
        return 0.5 * x * (1.0 + tanhAccurate(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    default:
        return x > 0.0 ? x : 0.0;
    }
}

void main() {
    const uint i = gl_GlobalInvocationID.y * pc.rowStride + gl_GlobalInvocationID.x;
    if (i >= pc.n) return;
    const uint yi = pc.yOff + i;
    switch (pc.op) {
    case 0u:
        y[yi] = a[pc.aOff + i];
        break;
    case 1u:
        y[yi] += a[pc.aOff + i];
        break;
    case 2u:
        y[yi] += a[pc.aOff + i] + b[i];
        break;
    case 3u:
        y[yi] = act1(y[yi]);
        break;
    case 4u:
        y[yi] = act1(y[yi]) * a[pc.aOff + i];
        break;
    default:
        y[yi] = pc.p * tanhAccurate(y[yi] / pc.p);
        break;
    }
}
