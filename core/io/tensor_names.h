#pragma once
/// \file
/// Mapping between lcw's canonical tensor names (see core/model/model.h) and the names the
/// file formats use (Hugging Face Llama-family safetensors, GGUF/llama.cpp).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lcw {

/// Splits "layers.N.rest" (or the file-format equivalents) into N and rest; nullopt otherwise.
struct LayerName {
    int64_t layer = -1; ///< -1 for model-level tensors
    std::string role;   ///< canonical name without "layers.N." ("attn.q", "embed", ...)
};
/// Parses a canonical name into layer and role (nullopt when not canonical-shaped).
std::optional<LayerName> splitCanonical(std::string_view canonical);

/// "model.layers.3.self_attn.q_proj.weight" → "layers.3.attn.q"; nullopt for names lcw does not
/// know (loaders keep those as "extra.<name>"). `arch` is the config's model_type: the file names
/// differ between families (GPT-2 "transformer.h.3.attn.c_proj.weight", Mamba
/// "backbone.layers.3.mixer.in_proj.weight", ...). Fused tensors map to intermediate names that
/// the loader splits: "layers.N.attn.qkv" (+ ".bias") and "layers.N.mlp.gate_up".
std::optional<std::string> canonicalFromHf(std::string_view hfName,
                                           std::string_view arch = "llama");
/// Inverse of canonicalFromHf; nullopt for names without an HF spelling. Split logical tensors
/// (q/k/v of a fused qkv, gate/up of a fused gate_up) give the fused file name.
std::optional<std::string> hfFromCanonical(std::string_view canonical,
                                           std::string_view arch = "llama");

/// "blk.3.attn_q.weight" → "layers.3.attn.q"; nullopt when unknown. `arch` is the GGUF
/// general.architecture; it matters where llama.cpp reuses a name (Mamba's block norm is
/// "attn_norm", lcw's "layers.N.norm"). The value layout of a few tensors differs from lcw's and
/// is converted by the GGUF loader (Mamba ssm_a = -exp(A_log), ssm_conv1d squeezed).
std::optional<std::string> canonicalFromGguf(std::string_view ggufName,
                                             std::string_view arch = "llama");
/// Inverse of canonicalFromGguf. Falcon: "attn_norm_2" is read as mlp_norm here; in a two-norm
/// (Falcon-40B) file llama.cpp's attn_norm_2 is the attention's norm and attn_norm the MLP's, and
/// the GGUF loader and writer swap the two for such files.
std::optional<std::string> ggufFromCanonical(std::string_view canonical,
                                             std::string_view arch = "llama");

/// Hugging Face *module* names (what llm-compressor and compressed-tensors target: the
/// nn.Linear's name, the tensor name without ".weight"): "layers.3.attn.q" →
/// "model.layers.3.self_attn.q_proj", "lm_head" → "lm_head". Split logical parts of a fused
/// module (phi3 q/k/v → "self_attn.qkv_proj", gpt2 c_attn, falcon/bloom/gpt_neox
/// query_key_value, phi3 gate/up → "mlp.gate_up_proj") give the fused module; norms give their
/// norm module ("model.layers.3.input_layernorm", what SmoothQuant / AWQ mappings name).
/// nullopt for names that are not a module's weight (biases, Mamba's A_log / D).
std::optional<std::string> hfModuleFromCanonical(std::string_view canonical,
                                                 std::string_view arch = "llama");
/// Inverse of hfModuleFromCanonical: the canonical weight names a module holds, in order
/// (one for a plain module, q/k/v or gate/up for a fused one); empty when unknown.
std::vector<std::string> canonicalFromHfModule(std::string_view module,
                                               std::string_view arch = "llama");
/// The per-block linear modules of a family as (module suffix after "<prefix>N.", canonical
/// roles after "layers.N."): llama {"self_attn.q_proj", {"attn.q"}}, phi3
/// {"self_attn.qkv_proj", {"attn.q", "attn.k", "attn.v"}}, mixtral experts as
/// {"block_sparse_moe.experts.*.w1", {"mlp.experts.*.gate"}} (the expert index is "*").
struct HfModuleRole {
    std::string suffix;
    std::vector<std::string> roles;
};
std::vector<HfModuleRole> hfModuleRoles(std::string_view arch = "llama");
/// The block prefix of a family's module names: "model.layers.", "transformer.h.",
/// "model.decoder.layers.", "gpt_neox.layers.", "backbone.layers.".
std::string hfLayerPrefix(std::string_view arch = "llama");
/// Whether the family stores this canonical weight in a module llm-compressor can quantise as
/// an nn.Linear (false for GPT-2's Conv1D c_attn / c_proj / c_fc and for embeddings).
bool hfModuleIsLinear(std::string_view canonical, std::string_view arch = "llama");
/// A regular expression over HF module names (an llm-compressor "re:" target without the
/// prefix) rewritten over canonical names: the family's block prefix becomes "layers\.", each
/// module suffix its canonical role (a fused module the alternation of its parts), the rest is
/// kept. With `arch` empty every family's spellings are tried (longest first).
std::string canonicalRegexFromHfModuleRegex(std::string_view regex, std::string_view arch = "");
/// Escapes the regex metacharacters of a literal name ("." → "\.").
std::string regexEscape(std::string_view literal);

} // namespace lcw
