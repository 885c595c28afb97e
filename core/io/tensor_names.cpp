#include "core/io/tensor_names.h"

#include <cstdint>

namespace lcw {

namespace {

struct Pair {
    std::string_view file;  // per-layer suffix (or full name for model-level tensors)
    std::string_view canon; // canonical role
};

constexpr Pair kHfTop[] = {
    {"model.embed_tokens.weight", "embed"},
    {"model.norm.weight", "final_norm"},
    {"lm_head.weight", "lm_head"},
};
constexpr Pair kHfLayer[] = {
    {"input_layernorm.weight", "attn_norm"},    {"post_attention_layernorm.weight", "mlp_norm"},
    {"self_attn.q_proj.weight", "attn.q"},      {"self_attn.k_proj.weight", "attn.k"},
    {"self_attn.v_proj.weight", "attn.v"},      {"self_attn.o_proj.weight", "attn.o"},
    {"self_attn.q_proj.bias", "attn.q.bias"},   {"self_attn.k_proj.bias", "attn.k.bias"},
    {"self_attn.v_proj.bias", "attn.v.bias"},   {"self_attn.o_proj.bias", "attn.o.bias"},
    {"self_attn.q_norm.weight", "attn.q_norm"}, {"self_attn.k_norm.weight", "attn.k_norm"},
    {"mlp.gate_proj.weight", "mlp.gate"},       {"mlp.up_proj.weight", "mlp.up"},
    {"mlp.down_proj.weight", "mlp.down"},       {"mlp.gate_proj.bias", "mlp.gate.bias"},
    {"mlp.up_proj.bias", "mlp.up.bias"},        {"mlp.down_proj.bias", "mlp.down.bias"},
};
constexpr Pair kGgufTop[] = {
    {"token_embd.weight", "embed"},
    {"output_norm.weight", "final_norm"},
    {"output.weight", "lm_head"},
};
constexpr Pair kGgufLayer[] = {
    {"attn_norm.weight", "attn_norm"},     {"ffn_norm.weight", "mlp_norm"},
    {"attn_q.weight", "attn.q"},           {"attn_k.weight", "attn.k"},
    {"attn_v.weight", "attn.v"},           {"attn_output.weight", "attn.o"},
    {"attn_q.bias", "attn.q.bias"},        {"attn_k.bias", "attn.k.bias"},
    {"attn_v.bias", "attn.v.bias"},        {"attn_output.bias", "attn.o.bias"},
    {"attn_q_norm.weight", "attn.q_norm"}, {"attn_k_norm.weight", "attn.k_norm"},
    {"ffn_gate.weight", "mlp.gate"},       {"ffn_up.weight", "mlp.up"},
    {"ffn_down.weight", "mlp.down"},       {"ffn_gate.bias", "mlp.gate.bias"},
    {"ffn_up.bias", "mlp.up.bias"},        {"ffn_down.bias", "mlp.down.bias"},
};

// Parses "<prefix><digits>.<rest>"; the layer number must be plain decimal without sign or
// leading zeros so that the mapping is one-to-one.
std::optional<std::pair<int64_t, std::string_view>> parseLayer(std::string_view name,
                                                               std::string_view prefix) {
    if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
    name.remove_prefix(prefix.size());
    size_t i = 0;
    int64_t n = 0;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
        if (i >= 9) return std::nullopt;
        n = n * 10 + (name[i] - '0');
        ++i;
    }
    if (i == 0 || i >= name.size() || name[i] != '.') return std::nullopt;
    if (i > 1 && name[0] == '0') return std::nullopt;
    return std::make_pair(n, name.substr(i + 1));
}

template <size_t NT, size_t NL>
std::optional<std::string> toCanon(std::string_view name, const Pair (&top)[NT],
                                   const Pair (&layer)[NL], std::string_view layerPrefix) {
    for (const auto& p : top)
        if (name == p.file) return std::string(p.canon);
    auto l = parseLayer(name, layerPrefix);
    if (!l) return std::nullopt;
    for (const auto& p : layer)
        if (l->second == p.file)
            return "layers." + std::to_string(l->first) + "." + std::string(p.canon);
    return std::nullopt;
}

template <size_t NT, size_t NL>
std::optional<std::string> fromCanon(std::string_view canonical, const Pair (&top)[NT],
                                     const Pair (&layer)[NL], std::string_view layerPrefix) {
    for (const auto& p : top)
        if (canonical == p.canon) return std::string(p.file);
    auto l = parseLayer(canonical, "layers.");
    if (!l) return std::nullopt;
    for (const auto& p : layer)
        if (l->second == p.canon)
            return std::string(layerPrefix) + std::to_string(l->first) + "." + std::string(p.file);
    return std::nullopt;
}

} // namespace

std::optional<LayerName> splitCanonical(std::string_view canonical) {
    if (auto l = parseLayer(canonical, "layers."))
        return LayerName{l->first, std::string(l->second)};
    if (canonical.empty() || canonical.substr(0, 7) == "layers.") return std::nullopt;
    return LayerName{-1, std::string(canonical)};
}

std::optional<std::string> canonicalFromHf(std::string_view n) {
    return toCanon(n, kHfTop, kHfLayer, "model.layers.");
}
std::optional<std::string> hfFromCanonical(std::string_view c) {
    return fromCanon(c, kHfTop, kHfLayer, "model.layers.");
}
std::optional<std::string> canonicalFromGguf(std::string_view n) {
    return toCanon(n, kGgufTop, kGgufLayer, "blk.");
}
std::optional<std::string> ggufFromCanonical(std::string_view c) {
    return fromCanon(c, kGgufTop, kGgufLayer, "blk.");
}

} // namespace lcw
