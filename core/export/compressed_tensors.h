#pragma once
/// \file
/// The compressed-tensors checkpoint format (what llm-compressor writes and vLLM / transformers
/// load), followed from neuralmagic/compressed-tensors 0.12.2 (compressors/quantized_compressors/
/// pack_quantized.py and naive_quantized.py, compressors/sparse_compressors/sparse_24_bitmask.py
/// and sparse_bitmask.py, quantization/quant_args.py, quant_scheme.py, quant_config.py,
/// lifecycle/initialize.py, config/format.py, compressors/model_compressors/model_compressor.py).
///
/// Per module the format is what compressed-tensors' own inference picks
/// (config/format.py _get_quant_compression_format):
///   weight-only int4 / int8:            "pack-quantized": weight_packed I32 [out, ceil(in / (32 /
///                                        bits))], signed codes q offset by 2^(b-1) to unsigned
///                                        and packed LSB first along the input dimension;
///                                        weight_shape I64 [2]; asymmetric channel / group: the
///                                        zero points packed the same way along the output
///                                        dimension (weight_zero_point I32 [ceil(out / (32 /
///                                        bits)), groups]);
///   weight-only int2/3/5/6/7:           "naive-quantized": weight I8 [out, in] holding q;
///   int weights with int activations:  "int-quantized": weight I8 [out, in];
///   fp8 e4m3 weights:                   "float-quantized" with activations, "naive-quantized"
///                                        weight-only: weight F8_E4M3 [out, in].
/// weight_scale is F16 (lcw's scales are f16; exact), [1] per tensor, [out, 1] per channel,
/// [out, in / group] per group; asymmetric int zero points (not packed) are I8 like the scale.
/// lcw's unsigned codes u map to q = u - 2^(b-1) and its zero to zp = zero - 2^(b-1), so that
/// w = scale * (q - zp) = scale * (u - zero). Pruned weights: 2:4 masks as "sparse-24-bitmask",
/// other masks as "sparse-bitmask" (a checkpoint has one sparsity format), applied to the float
/// weight (values in F32) or to the I8 / F8_E4M3 quantised weight when its zero point is 0;
/// packed or asymmetric weights keep their dense codes (a pruned weight's code is the zero point,
/// which decodes to exactly 0) and the sparsity config says "dense". GPTQ act_order in lcw keeps
/// groups in column order: actorder "weight" (no weight_g_idx).
/// Not expressible (written as floats by the writer): NF4, GGUF block types, outlier weight
/// columns, activation outlier channels, per-token activation clipping, group sizes that do not
/// divide the input width (compressed-tensors infers the group size as in / groups).
/// lcw's KV-cache quantisation (dynamic asymmetric groups) has no kv_cache_scheme: none is written.
#include "core/export/hf_quant_format.h"

#include <memory>

namespace lcw {

/// The compressed-tensors version whose layout the format writes ("version" in the config).
inline constexpr const char* kCompressedTensorsVersion = "0.12.2";

std::unique_ptr<HfQuantFormat> compressedTensorsFormat();

} // namespace lcw
