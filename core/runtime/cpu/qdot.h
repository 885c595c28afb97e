#pragma once
/// \file
/// Integer dot products of GGUF block-quantised weights with activations quantised to 8-bit
/// blocks, as llama.cpp multiplies them (internal to core/runtime, exposed for tests and benches).
/// A weight type names its activation format (its "vec dot type"); an activation row is quantised
/// once per linear call and every weight row of the call is multiplied with it:
///   Q8_0  32 values: f16 d, int8 q[32]                       (34 bytes)   x ≈ d·q
///   Q8_1  32 values: f16 d, f16 s = d·Σq, int8 q[32]         (36 bytes)   for Q4_1 / Q5_1
///   Q8_K 256 values: f32 d, int8 q[256], int16 bsums[16]     (292 bytes)  for the k-quants and
///        IQ4_XS; bsums[j] = Σ of q[16j .. 16j+15]
/// Weight types and their activation format: Q4_0, Q5_0, Q8_0, IQ4_NL → Q8_0; Q4_1, Q5_1 → Q8_1;
/// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS → Q8_K.
/// Every ISA version of a kernel gives the portable version's result to a stated tolerance (the
/// integer block sums are exact; only the float accumulation of block results may be reordered),
/// and the activation quantisers are bit-identical across ISAs. Within one ISA the result of one
/// output element does not depend on how many tokens or rows the call holds.
#include "core/common/dtype.h"
#include "core/runtime/cpu/kernels.h"

#include <cstddef>
#include <cstdint>

namespace lcw::kernels {

enum class ActQ : uint8_t { Q8_0, Q8_1, Q8_K };

/// Bytes of one quantised activation row of n values (n a multiple of the block: 32 or 256).
size_t actRowBytes(ActQ a, int64_t n);
/// Elements per block of the activation format (32 or 256).
int64_t actBlockElems(ActQ a);

struct QDotKernel {
    ActQ act = ActQ::Q8_0;
    /// Quantises one activation row of n values into dst (actRowBytes(act, n) bytes).
    void (*quantizeRow)(const float* x, void* dst, int64_t n) = nullptr;
    /// y[t * ldy + r] = Σ_blocks (weight row r) · (activation row t) for r < nRows, t < nTok:
    /// weight rows start at w + r * wRowBytes (whole blocks of the weight type, n values each),
    /// activation rows at xq + t * xqRowBytes. Single-threaded (the caller splits rows).
    void (*gemm)(const std::byte* w, size_t wRowBytes, int64_t nRows, const std::byte* xq,
                 size_t xqRowBytes, int64_t nTok, float* y, int64_t ldy, int64_t n) = nullptr;
    /// The product from weights repacked by repackRows (nullptr: this kernel has no repacked
    /// form): the 32-element types give this gemm's result bit for bit, the K-quants (Q2_K ..
    /// Q6_K, IQ4_XS) the portable kernel's (Isa::Generic) bit for bit. `wr` points at the repacked
    /// group holding the first row (rows start at a multiple of kRepackRows); nRows rows from
    /// there.
    void (*gemmRepacked)(const std::byte* wr, int64_t nRows, const std::byte* xq, size_t xqRowBytes,
                         int64_t nTok, float* y, int64_t ldy, int64_t n) = nullptr;
};

/// Repacked weights: rows in groups of 16 so that the AVX-512 kernels load a block of 16 rows
/// (the AVX2 kernels a block of 8, each field's 32-byte half) as whole vectors
/// from one stream, one 32-bit lane per row, instead of gathering the rows' bytes in the hot loop
/// (llama.cpp repacks Q4_0 and Q4_K at load for the same reason). The 32-element types (Q4_0, Q4_1,
/// Q5_0, Q5_1, Q8_0, IQ4_NL): per group and block the 16 rows' f16 d, then f16 m (Q4_1 / Q5_1),
/// fifth-bit words (Q5_0 / Q5_1) and code words side by side (word j of rows 0..15, then word j+1,
/// ...). Q4_K, Q5_K and Q6_K, per group and super-block: Q4_K the f16 d of the 16 rows, their f16
/// dmin, the 3 words of packed 6-bit scales and mins, the 32 code words; Q5_K the same with the 8
/// fifth-bit words before the code words; Q6_K the f16 d, the 4 words of int8 scales, the 32 ql
/// words, the 16 qh words (each field word by word, the 16 rows side by side); Q2_K, Q3_K and
/// IQ4_XS likewise (qdot_kquants.cpp: kRepackK lists every type's fields). Same size as the
/// rows (the last group padded with zero rows). Optional: it costs a copy of the weights in memory
/// (repack_cache.h gives a mapped file's pages back).
///
/// Rows per repacked group: a row range that starts at a multiple of it starts a group.
constexpr int64_t kRepackRows = 16;
/// Whether weights of type t have a repacked form.
bool repackable(DType t);
/// Bytes of one repacked group of n-value rows, and of `rows` rows (whole groups).
size_t repackedGroupBytes(DType t, int64_t n);
size_t repackedBytes(DType t, int64_t rows, int64_t n);
/// Writes groups g0..g1-1 of the weight at w (rows of wRowBytes, n values each; rows past `rows`
/// are zero) in the repacked layout to dst + g0 * repackedGroupBytes(t, n). Throws
/// ArgumentError for a type without a repacked form.
void repackRows(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                std::byte* dst, int64_t g0, int64_t g1);

/// The kernel for weight type t at ISA level `isa` (Auto: activeIsa()); nullptr when the type has
/// none (float types, or a quantised type without a kernel yet: callers then dequantise).
const QDotKernel* qdotKernel(DType t, Isa isa = Isa::Auto);

namespace detail {
/// Implemented in qdot_legacy.cpp (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) and qdot_kquants.cpp
/// (Q2_K .. Q6_K, IQ4_XS); nullptr for other types. `isa` is never Auto.
const QDotKernel* qdotLegacy(DType t, Isa isa);
const QDotKernel* qdotKQuants(DType t, Isa isa);
/// The repacked layouts of each family: bytes of one group per weight block (0: the type has
/// none), and repackRows for the family's types.
size_t legacyRepackBlockBytes(DType t);
size_t kquantRepackBlockBytes(DType t);
void repackLegacyGroups(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                        std::byte* dst, int64_t g0, int64_t g1);
void repackKQuantGroups(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                        std::byte* dst, int64_t g0, int64_t g1);
} // namespace detail

} // namespace lcw::kernels
