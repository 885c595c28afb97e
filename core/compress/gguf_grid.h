#pragma once
/// \file
/// The grids of GGUF block types, element by element: which code an element of a ggml block holds
/// and which value each code gives it, so that methods choosing their own codes (GPTQ's error
/// feedback) can quantise onto a block whose scales and minimums ggml's quantiser chose.
///
/// Every supported type decodes element i of a block as value(q) = a_i + b_i · g(q) for the
/// element's code q: g(q) = q − qmin for the linear types (Q4_0 … Q8_0, Q2_K … Q6_K) and
/// g(q) = the IQ4 table entry for IQ4_NL / IQ4_XS. a_i and b_i are read off the block by
/// dequantising it with every code set to qmin and qmin + 1 (or to the table's entry 1), so they
/// come from the same dequantiser the runtime uses.
#include "core/common/dtype.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

/// Types with code access: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
/// IQ4_XS.
bool ggufHasCodes(DType t);
/// The codes ggml's quantiser writes: [qmin, qmax] (Q8_0 stores int8 −127..127 as 1..255).
struct CodeRange {
    uint32_t qmin = 0, qmax = 0;
};
CodeRange ggufCodeRange(DType t);
/// Code of element i (0 ≤ i < dtypeBlockElems(t)) of one block, and setting it.
uint32_t ggufGetCode(DType t, const std::byte* block, int i);
void ggufSetCode(DType t, std::byte* block, int i, uint32_t q);

/// The decode of one block's elements (see the file comment).
struct BlockGrid {
    DType type = DType::Q4_0;
    std::vector<float> a, b; ///< per element of the block
    /// Nearest code of x for element i (clamped to the type's range).
    uint32_t nearest(int i, float x) const;
    /// The value code q gives element i (a_i + b_i · g(q)).
    float value(int i, uint32_t q) const;
};
/// Reads the grid of one block (ggml bytes of type t).
BlockGrid blockGrid(DType t, const std::byte* block);

} // namespace lcw::compress
