#pragma once
/// \file
/// Internal to packed_linear*.cpp: the runtime layout of lcw's packed weights and of prepared
/// activations, shared by the portable code and the instruction-set kernels.
///
/// Weights. Rows are padded to panels of 4; columns to groups of Gp (the scale group's length
/// rounded up to 32, or to 64 for 2:4), so every group starts on a unit boundary. A group is a
/// run of units of `unitCols` columns (64; 2:4: 128 dense columns = 64 kept slots) and, when Gp
/// is not a multiple of unitCols, one half-size tail unit. Memory order: panel, group, unit, row
/// (the 4 rows of a unit are adjacent, so a kernel streams one panel linearly). One unit of one
/// row holds n positions (dense: columns; 2:4: slots) in bit planes:
///   8 bits: n bytes;  otherwise a 4-plane (n/2 bytes: byte j = position j | position j+n/2 << 4)
///   for bits >= 4, a 2-plane (n/4 bytes: byte j holds positions j, j+n/4, j+n/2, j+3n/4 at bit
///   0, 2, 4, 6) for bits 2, 3, 6, 7, a 1-plane (n/8 bytes, bit p = position p) for odd bits;
///   the code is 4-plane | 2-plane << (bits >= 4 ? 4 : 0) | 1-plane << (bits - 1).
///   2:4 units then hold the 2-bit in-group index of every slot as one more 2-plane. Slot j
///   belongs to the 4-column group j/2 of the unit (dense columns 4(j/2) .. 4(j/2)+3).
/// Scales / zeros: f16 [panel][group][4 rows]. Outlier columns: f16 [row][k] (zero where the
/// mask prunes them). Asymmetric int with an unstructured mask keeps the mask as bits
/// [row][Cp/64 words] (no code reads exactly 0 there); other formats store the zero code.
///
/// Prepared activations (one buffer, 64-byte aligned sections after a header):
///   Float:  xf float [nTok][Cp] (0 in padding and at weight-outlier columns)
///   IntW / IntAct: xq int8 [nTok][Cp] (2:4: uint8 xq + 128), d float [nTok][nBlocks],
///           X int32 [nTok][nBlocks] (Σ xq of the block, dense only)
///   always: xo float [nTok][nOutlierCols] (the activation at each weight-outlier column),
///   IntAct: xa float [nTok][na] raw activations of the activation-outlier channels (not
///           weight-outlier columns), acols int32 [na] their columns.
#include "core/runtime/cpu/packed_linear.h"

#include <cstddef>
#include <cstdint>

namespace lcw::kernels::pk {

enum class Mode : int32_t {
    Float = 0,  ///< float activations (exact, NF4/FP8, masks without a zero code, act bits > 8)
    IntW = 1,   ///< weights-only, activations in 8-bit blocks (≤ 256 columns, not exact)
    IntAct = 2, ///< activation quantisation of the recipe (bits ≤ 8) as integers
};

struct Layout {
    PackedSource::Kind kind = PackedSource::Kind::Int;
    int bits = 4;
    bool sym = true;
    int64_t rows = 0, cols = 0;
    int64_t panels = 0;  ///< ceil(rows / 4)
    int64_t glen = 0;    ///< logical columns per group (cols for channel / tensor)
    int64_t gpr = 1;     ///< groups per row
    int64_t Gp = 0;      ///< padded columns per group
    int64_t Cp = 0;      ///< gpr * Gp
    bool sparse = false; ///< 2:4 slots
    bool maskBits = false;
    bool fp8Nan = false;   ///< fp8 codes include NaN (0x7F / 0xFF)
    int64_t unitCols = 64; ///< dense columns of a full unit (128 for 2:4)
    int64_t unitPos = 64;  ///< positions of a full unit (64)
    int64_t fullUnits = 0; ///< full units per group
    bool tail = false;     ///< a half unit closes every group
    size_t unitBytes = 0;  ///< one row's bytes of a full unit (codes + 2:4 indices)
    size_t groupBytes = 0; ///< one panel's bytes of a group
    size_t panelBytes = 0;
    int64_t maskWords = 0; ///< uint64 words per row of the mask bits
    int64_t nOut = 0;      ///< outlier columns

    int64_t unitsPerGroup() const { return fullUnits + (tail ? 1 : 0); }
    /// Units per conversion block in a mode (IntW: ≤ 256 dense columns, IntAct: ≤ 32768).
    int64_t blockUnits(Mode m) const { return (m == Mode::IntAct ? 32768 : 256) / unitCols; }
    int64_t blocksPerGroup(Mode m) const {
        const int64_t bu = blockUnits(m);
        return (unitsPerGroup() + bu - 1) / bu;
    }
    /// Padded position of original column c.
    int64_t padded(int64_t c) const { return (c / glen) * Gp + c % glen; }
    /// Bytes of one row's unit u of a group (full or tail).
    size_t unitRowBytes(int64_t u) const { return u < fullUnits ? unitBytes : unitBytes / 2; }
    /// Byte offset of row i (0..3) of unit u, group g, panel p.
    size_t unitOffset(int64_t p, int64_t g, int64_t u, int i) const {
        return size_t(p) * panelBytes + size_t(g) * groupBytes + size_t(u) * 4 * unitBytes +
               size_t(i) * unitRowBytes(u);
    }
    /// First dense column (within the group) of unit u, and its dense width.
    int64_t unitCol(int64_t u) const { return u * unitCols; }
    int64_t unitWidth(int64_t u) const { return u < fullUnits ? unitCols : unitCols / 2; }
};

/// The packed weight's arrays as the kernels read them.
struct WeightRef {
    const Layout* L = nullptr;
    const uint8_t* codes = nullptr;
    const uint16_t* scales = nullptr; ///< [panel][group][4]
    const uint16_t* zeros = nullptr;  ///< asymmetric int, same shape
    const uint64_t* mask = nullptr;   ///< maskBits only
};

/// Header at the start of a prepared buffer and the views of its sections.
struct PrepHeader {
    Mode mode = Mode::Float;
    int64_t nTok = 0, nBlocks = 0, na = 0;
    size_t offXq = 0, offD = 0, offX = 0, offXf = 0, offXo = 0, offXa = 0, offAcols = 0;
    size_t total = 0;
};

struct PrepView {
    Mode mode = Mode::Float;
    int64_t nTok = 0, nBlocks = 0, na = 0;
    const int8_t* xq = nullptr;
    const float* d = nullptr;
    const int32_t* X = nullptr;
    const float* xf = nullptr;
    const float* xo = nullptr;
    const float* xa = nullptr;
    const int32_t* acols = nullptr;
};

/// Kernels of one instruction set: y[t * ldy + 4 * (p - p0) + i] for panels [p0, p0 + np),
/// rows i < 4 of each, tokens t < nTok. Int kernels leave out the side products (outliers).
struct KernelSet {
    void (*intDense)(const WeightRef&, const PrepView&, int64_t p0, int64_t np, float* y,
                     int64_t ldy) = nullptr;
    void (*intSparse)(const WeightRef&, const PrepView&, int64_t p0, int64_t np, float* y,
                      int64_t ldy) = nullptr;
    void (*floatDense)(const WeightRef&, const PrepView&, int64_t p0, int64_t np, float* y,
                       int64_t ldy) = nullptr;
    void (*floatSparse)(const WeightRef&, const PrepView&, int64_t p0, int64_t np, float* y,
                        int64_t ldy) = nullptr;
    /// max |x[i]| over n values (NaN when one is NaN).
    float (*absMax)(const float* x, int64_t n) = nullptr;
    /// q[i] = clamp(rint(x[i] / f or x[i] * f), -qmax, qmax) for finite x; returns Σ q.
    int32_t (*quantize)(const float* x, int64_t n, float f, bool divide, float qmax,
                        int8_t* q) = nullptr;
};

/// Instruction-set kernels (packed_linear_x86.cpp); nullptr where the CPU or build lacks them.
const KernelSet* kernelsAvx2(bool vnni);
const KernelSet* kernelsAvx512(bool vnni, bool vbmi);

/// Scalar helpers shared by all versions.
/// Codes of one unit of one row (n positions) into out[n].
inline void unpackUnit(const uint8_t* p, int n, int bits, uint8_t* out) {
    if (bits == 8) {
        for (int j = 0; j < n; ++j) out[j] = p[j];
        return;
    }
    for (int j = 0; j < n; ++j) out[j] = 0;
    int shift = 0;
    if (bits >= 4) {
        for (int j = 0; j < n / 2; ++j) {
            out[j] = p[j] & 15;
            out[j + n / 2] = uint8_t(p[j] >> 4);
        }
        p += n / 2;
        shift = 4;
    }
    if (bits == 2 || bits == 3 || bits == 6 || bits == 7) {
        for (int j = 0; j < n / 4; ++j)
            for (int i = 0; i < 4; ++i)
                out[j + i * n / 4] |= uint8_t(((p[j] >> (2 * i)) & 3) << shift);
        p += n / 4;
        shift += 2;
    }
    if (bits & 1)
        for (int j = 0; j < n; ++j) out[j] |= uint8_t(((p[j >> 3] >> (j & 7)) & 1) << shift);
}

/// Bytes of the code planes of n positions.
inline size_t planeBytes(int n, int bits) {
    return size_t(n) * size_t(bits) / 8;
}

/// 2:4 in-group indices of one unit of one row (n slots) into out[n] (0..3).
inline void unpackIndices(const uint8_t* unitRow, int n, int bits, uint8_t* out) {
    unpackUnit(unitRow + planeBytes(n, bits), n, 2, out);
}

} // namespace lcw::kernels::pk
