#pragma once
/// \file
/// Quantised Hugging Face checkpoints (internal to core/model): compressed-tensors (what
/// llm-compressor writes), GPTQ (AutoGPTQ / GPTQModel) and AWQ (AutoAWQ GEMM) folders. The
/// quantised linears are dequantised exactly to float32 at load; the scheme each weight was
/// stored with is kept for display.
#include "core/common/tensor.h"
#include "core/model/model.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace lcw::detail {

struct HfQuantized {
    /// The folder's tensors in file order with every quantised module's parts (qweight, scales,
    /// weight_packed, bitmask, ...) replaced by one F32 "<module>.weight" [out, in] whose bytes
    /// the model owns; everything else (biases, norms, ignored linears, activation scales)
    /// untouched.
    std::vector<TensorView> tensors;
    struct Info {
        std::string scheme;     ///< "pack-quantized int4 asym group 128", "gptq int4 sym ..."
        uint64_t fileBytes = 0; ///< bytes of the module's quantised tensors in the file
    };
    /// By HF weight name "<module>.weight".
    std::unordered_map<std::string, Info> byWeight;
    /// Input activations applied at run time, by HF module name (compressed-tensors int
    /// dynamic per-token / static per-tensor input_activations).
    std::map<std::string, ActQuantSpec> activations;
    std::string method;  ///< "compressed-tensors", "gptq", "awq"
    std::string summary; ///< one line for the Summary and `lcw-cli info`
};

/// Reads config.json's "quantization_config" (or, for AutoGPTQ folders without it,
/// quantize_config.json beside it) and dequantises the quantised modules among `tensors`.
/// nullopt when the folder declares no quantisation. Notes (activation / KV-cache schemes
/// recorded but not applied) go to `warnings`. Throws FormatError / UnsupportedError naming the
/// file and the field.
std::optional<HfQuantized> loadHfQuantized(Model& m, const std::string& cfgPath,
                                           const std::vector<TensorView>& tensors,
                                           std::vector<std::string>& warnings);

} // namespace lcw::detail
