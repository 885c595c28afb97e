#pragma once
/// \file
/// lcw's own quantised / sparse linear weights held packed in the runtime layout, and their
/// products (internal to core/runtime; CompressedModel builds them, the runners multiply them).
/// A compressed layer never keeps a float32 copy: the product reads the codes.
///
/// Sources (what compress::PackedTensor holds, described without depending on core/compress):
///   int   b = 2..8 bits, codes u unsigned, LSB-first bit-packed per row (rows start on a byte);
///         symmetric w = scale·(u − 2^(b−1)); asymmetric w = scale·(u − zero) (zero is an f16
///         value, not necessarily an integer);
///   nf4   4-bit indices into the NF4 table, w = scale·nf4[u];
///   fp8   one e4m3fn byte per weight, w = scale·e4m3(u);
///   scales / zeros: f16 bit patterns, one per group: tensor → 1, channel → one per row,
///   group → rows · ceil(cols / g) row-major (the last group of a row may be shorter);
///   outliers: ascending input columns kept in f16 ([rows, nOutliers] values) which replace
///   whatever the codes of those columns hold;
///   colOrder (optional, a permutation of 0..cols−1): codes, scales and zeros are in a stored
///   column order — stored column k is input column colOrder[k] (GPTQ act-order groups); the
///   outliers, the mask and the activations stay in input-column order (the product permutes its
///   input once per call);
///   mask (optional, rows·cols bytes 0/1): pruned weights read as 0 — a 2:4 mask (every aligned
///   group of 4 input columns keeps at most 2) is stored as 2 values + 2-bit indices per group and
///   the product skips the zeros.
/// The runtime layout is private to core/runtime (packed_layout.h: rows in panels of 4, columns
/// in 64-column units of bit planes that AVX2 / AVX-512 unpack in two or three instructions,
/// f16 scales per panel and group; 2:4: the kept codes + 2-bit in-group indices, 3 bits per
/// weight for int4). dequantizeRows() gives the exact float values the float product uses.
///
/// Products and their accuracy (portable, AVX2 (+AVX-VNNI), AVX-512 (+VNNI, +VBMI), chosen by
/// activeIsa(); within one ISA an output does not depend on the tokens or rows of the call):
///  * exact, or NF4 / FP8 / asymmetric int with an unstructured mask (no code reads 0): float
///    activations times the dequantised weights, fused multiply-adds in float (error of float
///    summation only; the weights' error alone);
///  * not exact, int formats, no `act`: activations quantised to symmetric int8 in blocks of at
///    most 256 columns inside one weight group (d = max|x| / 127, rint), integer dot products per
///    block (vpdpbusd / pmaddubsw), then s·d·(Σq·u − z·Σq) in float; |Δy| <= Σ_c |w_c| · max|x|
///    / 254 over the row plus float rounding;
///  * `act` active with 2..8 bits and an int format: the recipe's quantisation (as
///    runtime::fakeQuantizeActivations: per-token or static scale, clip, outlier channels kept in
///    float) as int8 codes, integer GEMM per weight group, scales after the sums: equal to
///    fake-quantised activations times the weights up to float rounding; other bit widths and
///    formats: the fake-quantised float activations times the weights.
/// The integer products are exact, so their results are bit-identical on every ISA.
#include "core/model/runtime_quant.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lcw::kernels {

struct PackedSource {
    enum class Kind : uint8_t { Int, Nf4, Fp8 };
    enum class Granularity : uint8_t { Tensor, Channel, Group };
    Kind kind = Kind::Int;
    int bits = 4;          ///< Int: 2..8; Nf4: 4; Fp8: 8
    bool symmetric = true; ///< Int only
    Granularity granularity = Granularity::Group;
    int64_t group = 128; ///< Group granularity: columns per group
    int64_t rows = 0, cols = 0;
    const uint8_t* codes = nullptr; ///< packed as described above
    size_t codeBytes = 0;
    const uint16_t* scales = nullptr;
    size_t nScales = 0;
    const uint16_t* zeros = nullptr; ///< asymmetric int only
    size_t nZeros = 0;
    const int32_t* outlierCols = nullptr;
    size_t nOutlierCols = 0;
    const uint16_t* outlierValues = nullptr; ///< [rows, nOutlierCols] f16
    const uint8_t* mask = nullptr;           ///< rows·cols 0/1, or null (dense)
    const int32_t* colOrder = nullptr;       ///< cols entries, or null (the input order)
    std::string name;                        ///< for errors
};

/// A packed weight's codes in a plain layout for GPU shaders (PackedLinear::gpuForm), derived
/// from the runtime layout. Everything is indexed by *stored* column k (the input column is
/// colOrder[k] when colOrder is not empty, else k); the value of weight (r, k) is
///   outlier column k (outlierCols holds it): outlierValues[r][j] (f16);
///   else mask bit k of row r clear (mask not empty): 0;
///   else decode(code) as PackedSource describes, with code = bits [k·bits, (k+1)·bits) of the
///   row's words (LSB-first, a code may straddle two words), s = scales[r][k / groupCols],
///   z = zeros[r][k / groupCols] (f16).
/// Pruned weights of formats with a zero code (symmetric int, NF4, FP8) hold that code; the mask
/// is only given where no code reads 0 (asymmetric int with an unstructured mask).
/// 2:4 weights (twoFour) hold 2 slots per 4 columns instead: slot j (j < 2·ceil(cols / 4)) has
/// its code at bits [j·bits, (j+1)·bits) and a 2-bit index i at bits [2j, 2j+2) of the row's
/// index words; it holds weight k = 4·(j / 2) + i unless k >= cols or (symmetric formats) the
/// code is the zero code (2^(bits−1), NF4 7, FP8 0); a weight no slot holds reads 0.
struct GpuPacked {
    PackedSource::Kind kind = PackedSource::Kind::Int;
    int bits = 4;
    bool symmetric = true;
    int64_t rows = 0, cols = 0; ///< rows of this form (n of gpuForm), columns of the weight
    int64_t groupCols = 0;      ///< columns per scale group (cols for channel / tensor)
    int64_t groupsPerRow = 1;
    int64_t rowWords = 0;          ///< words of codes per row: ceil(cols (2:4: slots)·bits / 32)
    std::vector<uint32_t> codes;   ///< [rows][rowWords]
    std::vector<uint16_t> scales;  ///< [rows][groupsPerRow] f16
    std::vector<uint16_t> zeros;   ///< asymmetric int: [rows][groupsPerRow] f16, else empty
    bool twoFour = false;          ///< codes are 2:4 slots (see above)
    int64_t idxWords = 0;          ///< twoFour: uint32 words of indices per row
    std::vector<uint32_t> indices; ///< twoFour: [rows][idxWords]
    int64_t maskWords = 0;         ///< ceil(cols / 32) when mask is given, else 0
    std::vector<uint32_t> mask;    ///< [rows][maskWords], bit k: weight k kept
    std::vector<int32_t> outlierCols;    ///< ascending stored columns
    std::vector<uint16_t> outlierValues; ///< [rows][outlierCols.size()] f16
    std::vector<int32_t> colOrder;       ///< stored column k → input column, or empty (identity)
};

/// A packed linear weight [rows, cols] in the runtime layout.
class PackedLinear {
public:
    /// Packs a source (validates sizes; throws ArgumentError naming `src.name`).
    static std::unique_ptr<PackedLinear> pack(const PackedSource& src);
    virtual ~PackedLinear() = default;
    virtual int64_t rows() const = 0;
    virtual int64_t cols() const = 0;
    /// Bytes the packed weight occupies in memory.
    virtual size_t bytes() const = 0;
    /// Float values of rows [r0, r0 + n) into dst [n, cols] (exactly what products use).
    virtual void dequantizeRows(int64_t r0, int64_t n, float* dst) const = 0;
    /// Rows [r0, r0 + n) in the GPU layout (GpuPacked), built from the runtime layout (no
    /// copy is kept): for every r, k the value equals dequantizeRows() bit for bit. Called once
    /// per weight (or row chunk) when a GPU backend uploads it.
    virtual GpuPacked gpuForm(int64_t r0, int64_t n) const = 0;
    /// "int4 g128 sym", "nf4 g64", "fp8 channel", "+2:4" ... (for reports).
    virtual std::string describe() const = 0;
    /// A linear call runs in two steps. prepare() turns the activations x [nTok, cols] (row
    /// stride ldx) into the form the product reads, once per call: when `act` is set and active
    /// they are quantised as ActQuantSpec describes (dynamic per token or static per tensor,
    /// outlier channels kept in float) so that, where the weight format allows, gemm()
    /// multiplies integers (W8A8, W4A8) and applies the float scales after the integer sums —
    /// equal to fake-quantised activations times the weights up to float rounding. Without
    /// `act` the activations stay float (or whatever exact form the kernels prefer).
    /// True when prepare() output of this weight can be used by `other` (same input size and
    /// activation handling), so one linearBatch call prepares shared inputs once.
    virtual bool sharesPreparation(const PackedLinear& other) const {
        (void)other;
        return false;
    }
    /// Without `act`, `exact` keeps the activations in float32 (the error of the weights alone);
    /// otherwise the kernels may quantise them to 8-bit blocks for integer dot products, as
    /// llama.cpp does for its types (stated tolerance). preparedBytes() is the buffer's size.
    virtual size_t preparedBytes(int64_t nTok, const ActQuantSpec* act, bool exact) const = 0;
    virtual void prepare(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act,
                         bool exact, std::byte* prepared) const = 0;
    /// y[t·ldy + (r − r0)] = Σ_c x[t, c]·W[r, c] for rows r in [r0, r0 + nRows), t < nTok, from
    /// a buffer filled by prepare() with the same nTok, act and exact. Single-threaded and const
    /// (linearBatch calls it for many row tiles in parallel); the result of one element does not
    /// depend on nTok, r0 or nRows.
    virtual void gemm(int64_t r0, int64_t nRows, const std::byte* prepared, int64_t nTok,
                      const ActQuantSpec* act, bool exact, float* y, int64_t ldy) const = 0;
};

namespace detail {
/// Tests and benchmarks: allow (the default) or forbid VNNI instructions in the packed kernels, so
/// that the AVX2 / AVX-512 versions without VNNI run on a CPU that has it.
void packedAllowVnni(bool allow);
/// Likewise for AVX-512 VBMI with GFNI (where allowed the 2:4 gathers use vpermt2b and the 4-bit
/// and 2-bit unpacking vgf2p8affineqb; otherwise pshufb and shifts).
void packedAllowVbmi(bool allow);
} // namespace detail

} // namespace lcw::kernels
