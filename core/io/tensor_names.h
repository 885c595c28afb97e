#pragma once
/// \file
/// Mapping between lcw's canonical tensor names (see core/model/model.h) and the names the
/// file formats use (Hugging Face Llama-family safetensors, GGUF/llama.cpp).
#include <optional>
#include <string>
#include <string_view>

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

} // namespace lcw
