#pragma once
/// \file
/// llm-compressor recipes (YAML, read by llmcompressor.oneshot(recipe=...)): an lcw recipe
/// resolved against a model is written as the stages and modifiers that reproduce it on the full
/// model (QuantizationModifier, GPTQModifier, AWQModifier, SmoothQuantModifier,
/// SparseGPTModifier, WandaPruningModifier, MagnitudePruningModifier), with `config_groups` whose
/// `targets` are "re:" regexes over the Hugging Face module names of the model's family
/// (core/io/tensor_names.h, hfModuleFromCanonical). What llm-compressor cannot express is listed
/// in the result and in a comment at the top of the file, never dropped silently. The reverse
/// direction reads such a YAML back into an lcw recipe (the common subset).
#include "core/compress/recipe.h"

#include <string>
#include <string_view>
#include <vector>

namespace lcw {
class Model;
}

namespace lcw::exporter {

/// One modifier of the written recipe, for reports.
struct LlmcModifier {
    std::string stage; ///< "sparsity_stage", "quant_stage"
    std::string group; ///< "gptq_modifiers", ...
    std::string type;  ///< "GPTQModifier", ...
    int layers = 0;    ///< lcw layers it covers (0 for SmoothQuant / AWQ transforms)
};

struct LlmcExport {
    std::string yaml;                    ///< the file's text (comment header + YAML)
    std::vector<LlmcModifier> modifiers; ///< in file order
    /// Settings llm-compressor cannot express, one line each ("layers.0.attn.q: nf4 g64: ...");
    /// also in the file's top comment.
    std::vector<std::string> notExpressible;
    /// Settings written as the closest llm-compressor equivalent (also in the top comment).
    std::vector<std::string> approximations;
    std::vector<std::string> warnings; ///< the plan's warnings
    int layersExported = 0;            ///< lcw layers covered by some modifier
};

struct LlmcExportOptions {
    std::string recipeSource; ///< for the header comment: the recipe file or preset name
};

/// Resolves `recipe` against `model` (planRecipe, with calibration assumed: llm-compressor
/// calibrates on its own data) and builds the llm-compressor recipe. Throws RecipeError when the
/// recipe does not fit the model.
LlmcExport exportLlmCompressorRecipe(const compress::Recipe& recipe, const Model& model,
                                     const LlmcExportOptions& opts = {});
/// Writes e.yaml to `path` atomically.
void writeLlmCompressorRecipe(const std::string& path, const LlmcExport& e);

struct LlmcImport {
    compress::Recipe recipe;
    /// Keys read but not reproducible exactly in lcw ("quant_stage.quant_modifiers.GPTQModifier.
    /// offload_hessians: ignored"), each naming the file and the key.
    std::vector<std::string> warnings;
};

/// Reads an llm-compressor recipe YAML into an lcw recipe: config_groups (weights and
/// input_activations QuantizationArgs, schemes W4A16 / W8A8 / FP8 ..., targets "Linear", module
/// names and "re:" regexes, ignore), kv_cache_scheme, GPTQ / AWQ / SmoothQuant / SparseGPT /
/// Wanda / magnitude options. `arch` picks the family's module spellings ("" tries every
/// family). YAML syntax errors, unknown modifiers and unreadable values throw FormatError naming
/// the file and the key; keys lcw ignores become warnings.
LlmcImport importLlmCompressorRecipeWithWarnings(const std::string& path,
                                                 std::string_view arch = "");
/// The same without the warnings.
compress::Recipe importLlmCompressorRecipe(const std::string& path, std::string_view arch = "");

} // namespace lcw::exporter
