#pragma once
/// \file
/// llama.cpp's quantisation mixes (Q4_K_M, Q6_K, ...) as lcw presets of a model: the GGUF
/// export's tensor plan (gguf_export.h) fed to llama-quantize's type choice (gguf_mix.h), and
/// that choice as an lcw recipe (one rule per tensor, the GGUF type as the weight method), so a
/// mix can be evaluated, compared, edited tensor by tensor and exported like any recipe.
/// "Q4_K_M-GPTQ" / "Q4_K_M-AWQ" keep the mix's types and sizes but choose the codes with GPTQ
/// (or the scales with AWQ) on those GGUF grids (weight.gguf), which needs calibration text.
#include "core/compress/imatrix.h"
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

/// The llama.cpp mix that gives a recipe's GGUF types for `model` (what a llama-quantize command
/// must reproduce): the preset `base`, or when none is given the preset whose own types agree with
/// the recipe's on the most tensors, plus per-tensor overrides for the tensors that differ. A
/// tensor's type is its lcw tensors' GGUF method (or GPTQ / AWQ grid, planned without compressing
/// anything); settings GGUF has no type for take `reencode`. ArgumentError naming the tensor when
/// such a setting has no `reencode`, or when the parts of one llama.cpp tensor (fused q/k/v)
/// differ.
GgufMix ggufMixForRecipe(const Model& model, const compress::Recipe& recipe,
                         const GgufMixOptions& opts, std::optional<LlamaFtype> base = std::nullopt,
                         std::optional<DType> reencode = std::nullopt);

/// exportGguf's importance callback for an imatrix (per GGUF tensor: its columns' values, all
/// experts' slices for 3-D expert tensors; nullptr without an entry). `m` must outlive the export.
GgufImportance imatrixImportance(const compress::Imatrix& m,
                                 const std::vector<GgufTensorInfo>& plan);
/// The quantize.imatrix.* keys llama-quantize writes for a file quantised with `m` (read from
/// `file`).
std::vector<std::pair<std::string, GgufValue>> imatrixMetadata(const compress::Imatrix& m,
                                                               const std::string& file);

} // namespace lcw
