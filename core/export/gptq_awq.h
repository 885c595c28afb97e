#pragma once
/// \file
/// GPTQ and AWQ checkpoints as HfQuantFormat implementations (the layouts are described in
/// docs/hf-formats.md). Pure functions of the packed tensors: nothing here touches files.
///
/// GPTQ (AutoGPTQ / GPTQModel / transformers' GPTQ integration), per module:
///   qweight int32 [in * bits / 32, out]: the codes of each output column as one continuous
///           little-endian bit stream along the input dim (LSB first; 3 bits run across words,
///           which is exactly AutoGPTQ's 3-bit packing);
///   qzeros  int32 [groups, out * bits / 32]: zero points, same stream along the output dim;
///           v1 (checkpoint_format "gptq", the default) stores zero - 1, v2 ("gptq_v2") zero;
///   scales  f16 [groups, out];   g_idx int32 [in] = j / group_size (groups stay contiguous).
///   Symmetric lcw codes have zero = 2^(bits-1). Bits 2, 3, 4, 8; group or channel
///   (group_size -1); in and out multiples of 32; no shorter last group.
/// AWQ (AutoAWQ GEMM), per module:
///   qweight int32 [in, out / 8]: word (i, c) holds the codes of outputs 8c .. 8c+7, nibble k
///           (bits 4k..4k+3) the output 8c + [0, 2, 4, 6, 1, 3, 5, 7][k];
///   qzeros  int32 [groups, out / 8] in the same order, zero points as they are;
///   scales  f16 [groups, out]. 4 bits only; zero_point true (symmetric codes: zero 8).
#include "core/export/hf_quant_format.h"

#include <memory>

namespace lcw {

struct GptqFormatOptions {
    /// false: v1 zero points (stored zero - 1, checkpoint_format "gptq", what AutoGPTQ and
    /// transformers read); true: v2 (stored zero, checkpoint_format "gptq_v2", GPTQModel only).
    bool v2 = false;
    /// Modules whose bits / group_size / sym differ from the checkpoint's most common setting
    /// get GPTQModel "dynamic" per-module overrides (and linears left in floats a "-:" skip
    /// entry). false: such modules are not expressible (a plain one-setting GPTQ checkpoint).
    bool dynamic = true;
};

std::unique_ptr<HfQuantFormat> gptqFormat(GptqFormatOptions o = {});
std::unique_ptr<HfQuantFormat> awqFormat();

} // namespace lcw
