// Bindings and push constants shared by matvec.comp and matmul.comp, and the dequantisation of
// the weight type chosen by -DWT_<TYPE>.
layout(std430, binding = 0) readonly buffer WBuf { uint W[]; };
layout(std430, binding = 1) readonly buffer XBuf { float X[]; };
layout(std430, binding = 2) writeonly buffer YBuf { float Y[]; };
layout(std430, binding = 3) readonly buffer BBuf { float B[]; };

layout(push_constant) uniform PushConstants {
    uint rows;       // rows of this chunk
    uint cols;       // input size
    uint nTok;       // tokens (rows of X, which is [nTok, cols])
    uint rowBytes;   // bytes per stored row
    uint ldy;        // row stride of Y (the weight's rows)
    uint row0;       // first row of the chunk in the weight
    uint hasBias;    // 1: add B[biasOffset + row0 + r]
    uint biasOffset; // where this weight's bias starts in B
} pc;

#include "dequant.glsl"
