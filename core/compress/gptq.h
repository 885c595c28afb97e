#pragma once
/// \file
/// GPTQ (Frantar et al. 2022): quantises a linear weight W [rows, cols] column by column,
/// spreading each column's rounding error onto the columns not yet quantised so that
/// ||X Wᵀ − X Ŵᵀ||² = tr(ΔW H ΔWᵀ), H = XᵀX, stays small.
///   - dampening: H += λ I with λ = damp · mean(diag H) (raised ×10 up to three times when the
///     Cholesky factorisation fails);
///   - dead columns (diag H = 0: the input channel is always zero) get H_jj = 1 and weight 0;
///   - act_order: columns in order of decreasing diag H;
///   - lazy block updates: the error of a block of `blockSize` columns reaches the rest of the
///     matrix in one matrix-matrix product;
///   - groups: a group's grid (scale, zero) is chosen from the group's current, already updated
///     weights when its first column is reached; channel and tensor grids come from the initial
///     weights. Groups are contiguous in the original column order, also with act_order, so the
///     result packs like RTN's.
#include "core/common/dtype.h"
#include "core/compress/quantizer.h"

#include <cstdint>
#include <cstddef>
#include <string>
#include <vector>

namespace lcw::compress {

struct GptqOptions {
    double damp = 0.01;
    bool actOrder = false;
    int64_t blockSize = 128;
};

struct GptqResult {
    PackedTensor packed;
    double damp = 0;         ///< the dampening factor finally used
    int64_t deadColumns = 0; ///< input channels that were always zero
};

/// `w` row-major [rows, cols]; `H` the cols x cols Gram XᵀX (row-major, symmetric). Formats int,
/// fp8, nf4 at every granularity. Throws ArgumentError for GGUF methods, bad sizes, non-finite
/// weights; Error when H stays singular after dampening (naming the layer).
GptqResult gptqQuantize(const float* w, int64_t rows, int64_t cols, const double* H,
                        const WeightSettings& s, const GptqOptions& o, const std::string& name);

struct GptqGgufResult {
    std::vector<std::byte> bytes; ///< rows × (cols / block) ggml blocks of the type, row-major
    double damp = 0;
    int64_t deadColumns = 0;
};

/// GPTQ onto a GGUF block type's grid (Q4_0 … Q8_0, Q2_K … Q6_K, IQ4_NL, IQ4_XS): each block of
/// a row is a group; when GPTQ reaches its first column, ggml's quantiser (quantizeRow, with the
/// block's slice of `importance` when given) chooses the block's scales and minimums from the
/// block's current, already error-corrected weights, and GPTQ then picks every code of the block
/// with error feedback (core/compress/gguf_grid.h). The bytes load in llama.cpp like any file of
/// that type. cols must be a multiple of the type's block size.
GptqGgufResult gptqQuantizeGguf(const float* w, int64_t rows, int64_t cols, const double* H,
                                DType type, const float* importance, const GptqOptions& o,
                                const std::string& name);

} // namespace lcw::compress
