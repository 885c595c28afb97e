#pragma once
/// \file
/// llama.cpp's quantisation mixes (Q4_K_M, Q6_K, ...) as lcw presets of a model: the GGUF
/// export's tensor plan (gguf_export.h) fed to llama-quantize's type choice (gguf_mix.h), and
/// that choice as an lcw recipe (one rule per tensor, the GGUF type as the weight method), so a
/// mix can be evaluated, compared, edited tensor by tensor and exported like any recipe.
/// "Q4_K_M-GPTQ" / "Q4_K_M-AWQ" keep the mix's types and sizes but choose the codes with GPTQ
/// (or the scales with AWQ) on those GGUF grids (weight.gguf), which needs calibration text.
#include "core/compress/recipe.h"
#include "core/export/gguf_export.h"
#include "core/export/gguf_mix.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lcw {

/// A llama.cpp preset name as lcw accepts it: the file type and an optional method suffix.
struct LlamaPresetName {
    LlamaFtype ftype = LlamaFtype::Q4_K_M;
    /// Gptq / Awq for "-GPTQ" / "-AWQ"; nullopt: ggml's own quantisers (what llama-quantize
    /// writes).
    std::optional<compress::WeightMethod> method;
    std::string display; ///< "Q4_K_M", "Q4_K_M-GPTQ"
};
/// Parses "Q4_K_M", "q4_k_m-gptq", "Q6_K-AWQ" (case-insensitive); nullopt for other names.
/// F32 / F16 / BF16 take no method suffix.
std::optional<LlamaPresetName> parseLlamaPreset(std::string_view name);
/// The names parseLlamaPreset accepts without a suffix, in llamaFtypes() order.
std::vector<std::string> llamaPresetNames();

/// llama-quantize's choice of `ftype` for the export of `weights`.
GgufMix ggufMixFor(const WeightSource& weights, LlamaFtype ftype,
                   const GgufMixOptions& opts = {});

/// The mix as an lcw recipe for `weights`: every tensor the mix writes in another type than the
/// plan's stored one gets a rule naming its lcw tensors (embed / lm_head by name) with the GGUF
/// type as method, or with `method` (gptq / awq) on that type's grid. Tensors kept in float get
/// no rule. `imatrix` becomes the recipe's "imatrix" (empty: none).
compress::Recipe recipeFromGgufMix(const GgufMix& mix, const std::vector<GgufTensorInfo>& plan,
                                   std::optional<compress::WeightMethod> method = std::nullopt,
                                   const std::string& imatrix = "");

/// --preset NAME for a model: a llama.cpp preset (parseLlamaPreset) as recipeFromGgufMix of its
/// mix (with hasImatrix when `imatrix` is given), else lcw's own preset (compress::findPreset).
compress::Recipe presetRecipe(const WeightSource& weights, const std::string& name,
                              const std::string& imatrix = "");

} // namespace lcw
