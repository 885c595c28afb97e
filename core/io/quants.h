#pragma once
/// \file
/// Conversion of stored rows (plain floats and GGUF block formats) to float32.
#include "core/common/dtype.h"

#include <cstddef>
#include <cstdint>

namespace lcw {

/// Converts n consecutive elements starting at src (of type t) to float32.
/// For block formats n must be a multiple of dtypeBlockElems(t) and src must start at a block.
/// Supports F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
/// IQ4_XS; the results are bit-identical to ggml's dequantisation. Throws UnsupportedError
/// otherwise, ArgumentError when n is not a multiple of the block size.
void dequantizeRow(DType t, const std::byte* src, float* dst, int64_t n);

/// Quantizes float32 to a GGUF block format, bit-identical to ggml's quantize_chunk for one row:
/// without importance weights ggml's reference quantisers, with them (n floats, one per column,
/// what an imatrix holds for the tensor) ggml's weighted variants as llama-quantize --imatrix uses
/// them (q8_0 and the float types ignore them). Used to write GGUF files and by compression.
/// Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
/// IQ4_XS (IQ4_NL/IQ4_XS as ggml_quantize_chunk does them, with its 15-scale search also
/// without importance). n must be a multiple of the block size (ArgumentError otherwise). With
/// importance, src must be the whole row: the weighted Q4_0..Q5_1 use the row's mean square.
/// Does not allocate; thread-safe (callers parallelise over rows).
void quantizeRow(DType t, const float* src, std::byte* dst, int64_t n,
                 const float* importance = nullptr);

} // namespace lcw
