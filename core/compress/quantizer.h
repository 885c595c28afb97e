#pragma once
/// \file
/// Weight quantizers: round-to-nearest (RTN) for int 2..8 bits (symmetric or asymmetric, per
/// tensor / channel / group with a shorter last group), fp8 e4m3 and nf4, and GGUF's weight types
/// (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k..q6_k, iq4_nl, iq4_xs, f16; bit-identical to ggml, with or
/// without importance weights). Every result keeps its packed form (codes, scales, zero points)
/// so sizes are exact and the overlay can be saved; the float32 values are always produced by
/// dequantize() from the packed form.
#include "core/common/lowbit.h"
#include "core/compress/recipe.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

/// A quantised 2-D weight [rows, cols] in packed form.
///   int:  codes are unsigned b-bit values packed LSB-first per row (rows start on a byte);
///         symmetric: w = scale * (u - 2^(b-1)); asymmetric: w = scale * (u - zero).
///   fp8:  one e4m3fn byte per weight; w = scale * e4m3(u).
///   nf4:  4-bit indices into the NF4 table; w = scale * nf4[u].
///   GGUF: `codes` holds the ggml blocks; scales/zeros are empty (they are inside the blocks).
/// scales and zeros are f16 bit patterns, one per group (tensor: 1, channel: one per row,
/// group: rows * ceil(cols / g), row-major).
/// colOrder (optional, int/fp8/nf4 only): the codes are stored in another column order — stored
/// column k holds original column colOrder[k] (a permutation of 0..cols-1), so that groups of
/// columns that are not contiguous in the original order (GPTQ act_order groups, GPTQ's g_idx)
/// are contiguous in the stored order and pack like any other. Empty: the original order.
struct PackedTensor {
    WeightSettings settings;
    int64_t rows = 0, cols = 0;
    std::vector<uint8_t> codes;
    std::vector<uint16_t> scales;
    std::vector<uint16_t> zeros;
    /// LLM.int8()-style outlier input channels kept in 16 bits: ascending column indices and
    /// their f16 values [rows, outlierCols.size()] (row-major). dequantize() puts them back over
    /// whatever the codes of those columns hold.
    std::vector<int32_t> outlierCols;
    std::vector<uint16_t> outlierValues;
    /// Stored column order (see above); outlierCols stay in original column indices.
    std::vector<int32_t> colOrder;
    /// Atom's 8-bit outlier columns (recipe outliers.bits 8), held instead of outlierValues:
    /// symmetric 8-bit codes u [rows, outlierCols.size()] (row-major), w = scale·(u − 128),
    /// u in 1..255, and one f16 scale per row (a row's outlier columns are one group).
    std::vector<uint8_t> outlierCodes;
    std::vector<uint16_t> outlierScales;
    /// Compact methods only (squeezellm, dgq, slim; layouts in compact_formats.h): 8-bit group
    /// codes (dgq: scale codes and zero points; slim: each column group's bits) and the sparse
    /// f16 outliers of squeezellm in CSR (row pointers, columns, values).
    std::vector<uint8_t> groupCodes;
    std::vector<int32_t> sparseRowPtr, sparseCols;
    std::vector<uint16_t> sparseValues;
    /// Stored bits: codes + 16 per scale + 16 per zero + 16 per outlier value + 32 per outlier
    /// column index + 32 per colOrder entry + 8 per outlier code + 16 per outlier scale; + 8 per
    /// group code, 32 per CSR row pointer and column, 16 per CSR value.
    uint64_t storageBits() const;
    double bitsPerWeight() const {
        return rows > 0 && cols > 0 ? double(storageBits()) / double(rows * cols) : 0.0;
    }
    /// Groups per row (tensor: the tensor is one group; GGUF: ggml blocks per row).
    int64_t groupsPerRow() const;
};

/// Quantises w (row-major [rows, cols], float32). `name` names the layer in errors (non-finite
/// values, GGUF rows not a multiple of the type's block: 32, or 256 for k-quants and iq4_xs, whose
/// fallback is the planner's job; unsupported method). `importance` (cols floats, finite, e.g. an
/// imatrix's per-column mean of x^2) makes the GGUF types use ggml's weighted quantisers, as
/// llama-quantize --imatrix does (q8_0 and f16 ignore it; so do the non-GGUF methods). Parallel
/// over rows (OpenMP).
PackedTensor quantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                      const std::string& name, const float* importance = nullptr);

// ---- building blocks for methods that pick their own grids or codes (GPTQ, AWQ) ----

/// One group's grid: f16 bit patterns of the scale and (asymmetric int) zero point.
struct GroupGrid {
    uint16_t scale = 0, zero = 0;
};
/// The grid RTN picks for a group whose values span [mn, mx] (int, fp8, nf4 formats).
GroupGrid groupGrid(const WeightSettings& s, float mn, float mx, const std::string& name);
/// Nearest code of x on a grid (clamped to the format's range), and the value of a code.
uint32_t encodeOnGrid(const WeightSettings& s, float x, const GroupGrid& g);
float decodeOnGrid(const WeightSettings& s, uint32_t u, const GroupGrid& g);
/// Groups per row for int/fp8/nf4 settings (tensor: 0, the whole tensor is one group).
int64_t gridsPerRow(const WeightSettings& s, int64_t cols);
/// Index into the grid list of element (r, j): tensor 0, channel r, group r * gpr + j / g.
int64_t gridIndex(const WeightSettings& s, int64_t cols, int64_t r, int64_t j);
/// Checks that `order` is empty or a permutation of 0..cols-1 (Error naming `name`).
void checkColumnOrder(const std::vector<int32_t>& order, int64_t cols, const std::string& name);
/// Packs codes chosen elsewhere (rows * cols, row-major) with their grids (tensor: 1,
/// channel: rows, group: rows * ceil(cols / g)) into the PackedTensor layout of quantize().
PackedTensor packCodes(const WeightSettings& s, int64_t rows, int64_t cols,
                       const std::vector<uint32_t>& codes, const std::vector<GroupGrid>& grids);
/// RTN on the grids of ranges shrunk by clip[g] in (0, 1] per group (AWQ's clipping search;
/// empty clip = 1, same result as quantize()). Accepts any non-GGUF method in `s` (the settings
/// are stored as given).
PackedTensor quantizeClipped(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                             const std::vector<float>& clip, const std::string& name);

/// Atom's mixed precision on the weight side: the columns `outl` (ascending original indices)
/// of w [rows, cols] as 8-bit codes with one f16 scale per row (PackedTensor::outlierCodes:
/// scale = amax/127 rounded up to f16, u = clamp(rint(w/scale), −127, 127) + 128), stored into
/// p (outlierCols = outl, outlierValues cleared). Empty outl: nothing.
void quantizeOutlierColumns8(PackedTensor& p, const float* w, int64_t rows, int64_t cols,
                             const std::vector<int32_t>& outl, const std::string& name);
/// Stored bits of `n` outlier columns of a [rows, ·] tensor: 16 per value + 32 per index (bits
/// 16), or 8 per value + 16 per row + 32 per index (bits 8). 0 when n is 0.
uint64_t outlierColumnBits(int64_t rows, int64_t n, int bits);

/// Float32 values of a packed tensor (rows * cols, original column order). Throws FormatError-like
/// Error when the packed sizes do not fit the shape or colOrder is not a permutation.
std::vector<float> dequantize(const PackedTensor& p, const std::string& name);
/// Rows [r0, r0 + n) of dequantize(p) into dst [n, cols] (the same values, without the whole
/// tensor). Throws as dequantize() does, and ArgumentError for rows outside the tensor.
void dequantizeRows(const PackedTensor& p, int64_t r0, int64_t n, float* dst,
                    const std::string& name);

/// Bytes of the packed codes for a shape and settings.
uint64_t packedCodeBytes(int64_t rows, int64_t cols, const WeightSettings& s);
/// Stored bits of a tensor quantised with these settings, without quantising: equal to
/// quantize(...).storageBits() (codes + 16 per scale + 16 per zero point).
uint64_t packedStorageBits(int64_t rows, int64_t cols, const WeightSettings& s);

// e4m3 and NF4 codecs (core/common/lowbit.h).
using lcw::e4m3ToF32;
using lcw::f32ToE4m3;
using lcw::nf4Levels;

/// Reconstruction levels of `s` for one group whose values span [lo, hi] (drawn over a tensor's
/// histogram with its whole range: the grid a per-tensor scale would give; per-channel and group
/// scales make each row or group its own, finer copy of it). int: the RTN grid of
/// stats::quantGridLevels; nf4: the 16 NF4 levels × abs-max; fp8_e4m3: every finite e4m3 value
/// × abs-max/448; GGUF q8_0 d·q (q in −127..127, d = abs-max/127), q4_0 / q5_0 d·(q − 8) /
/// d·(q − 16) with d = −(the signed value of largest magnitude)/8 or /16, q4_1 min + q·d with
/// d = (max − min)/15, q5_1 likewise with 31 steps. k-quants (one sub-block's grid, before the
/// 6- or 4-bit quantisation of its scale): q2_k / q4_k / q5_k m + q·d, q in 0..3 / 0..15 / 0..31,
/// m = min(lo, 0), d = (hi − m)/3, /15, /31; q3_k d·q, q in −4..3, d = −(signed max)/4; q6_k d·q,
/// q in −32..31, d = −(signed max)/32. iq4_nl / iq4_xs: d·k over the 16 non-linear code-book
/// values k (−127..113) with d = −(signed max)/127 (ggml's search then refines d per block).
/// f16: empty (no grid to draw). Ascending; empty for an empty or non-finite range.
std::vector<double> gridLevels(const WeightSettings& s, double lo, double hi);

/// Error statistics of a reconstruction.
struct ErrorStats {
    double mse = 0;
    double sqnrDb = 0;   ///< 10 log10(Σx² / Σ(x−x̂)²); +inf when exact
    double relError = 0; ///< ||x − x̂||_F / ||x||_F
    double maxAbs = 0;
};
ErrorStats errorStats(const float* x, const float* xq, int64_t n);

} // namespace lcw::compress
