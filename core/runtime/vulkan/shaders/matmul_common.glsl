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
#if defined(WT_LCW)
    // lcw packed weights (lcw_dequant.glsl): the format and where each array starts in W (in
    // 32-bit words).
    uint kind;      // 0 int, 1 nf4, 2 fp8
    uint bits;      // code bits
    uint sym;       // int: 1 symmetric
    uint groupCols; // columns per scale group
    uint gpr;       // groups per row
    uint offScales; // f16 [rows][gpr]
    uint offZeros;  // f16 [rows][gpr] (asymmetric int)
    uint hasMask;   // 1: mask bits [rows][maskWords] at offMask
    uint maskWords;
    uint offMask;
    uint nOut;      // outlier columns
    uint offOv;     // f16 [rows][nOut]
    uint offOcols;  // uint [nOut], ascending stored columns
    uint offOstart; // uint [ceil(cols / 32) + 1]: first outlier at or past column 32 g
    uint hasOrder;  // 1: stored column k reads input column W[offOrder + k]
    uint offOrder;
    uint twoFour;   // 1: codes are 2:4 slots, 2-bit indices [rows][idxWords] at offIdx
    uint offIdx;
    uint idxWords;
#endif
} pc;

#if defined(WT_LCW)
uint xcol(uint k) { return pc.hasOrder != 0u ? W[pc.offOrder + k] : k; }
#include "lcw_dequant.glsl"
#else
uint xcol(uint k) { return k; }
#include "dequant.glsl"
#endif
