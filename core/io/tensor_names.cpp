#include "core/io/tensor_names.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

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
    {"output_norm.bias", "final_norm.bias"},
    {"position_embd.weight", "pos_embed"},
    {"token_embd_norm.weight", "embed_norm"},
    {"token_embd_norm.bias", "embed_norm.bias"},
};
constexpr Pair kGgufLayer[] = {
    {"attn_norm.weight", "attn_norm"},
    {"ffn_norm.weight", "mlp_norm"},
    {"attn_q.weight", "attn.q"},
    {"attn_k.weight", "attn.k"},
    {"attn_v.weight", "attn.v"},
    {"attn_output.weight", "attn.o"},
    {"attn_q.bias", "attn.q.bias"},
    {"attn_k.bias", "attn.k.bias"},
    {"attn_v.bias", "attn.v.bias"},
    {"attn_output.bias", "attn.o.bias"},
    {"attn_q_norm.weight", "attn.q_norm"},
    {"attn_k_norm.weight", "attn.k_norm"},
    {"ffn_gate.weight", "mlp.gate"},
    {"ffn_up.weight", "mlp.up"},
    {"ffn_down.weight", "mlp.down"},
    {"ffn_gate.bias", "mlp.gate.bias"},
    {"ffn_up.bias", "mlp.up.bias"},
    {"ffn_down.bias", "mlp.down.bias"},
    {"attn_qkv.weight", "attn.qkv"},
    {"attn_qkv.bias", "attn.qkv.bias"},
    {"ffn_gate_inp.weight", "mlp.router"},
    {"ffn_gate_exps.weight", "mlp.experts_gate"},
    {"ffn_up_exps.weight", "mlp.experts_up"},
    {"ffn_down_exps.weight", "mlp.experts_down"},
    // LayerNorm biases (gpt2, gptneox, stablelm, falcon, bloom)
    {"attn_norm.bias", "attn_norm.bias"},
    {"ffn_norm.bias", "mlp_norm.bias"},
    // Falcon's second input norm (ln_mlp of the new decoder architecture)
    {"attn_norm_2.weight", "mlp_norm"},
    {"attn_norm_2.bias", "mlp_norm.bias"},
    // Gemma2 sandwich norms
    {"post_attention_norm.weight", "attn_post_norm"},
    {"post_ffw_norm.weight", "mlp_post_norm"},
    // Mamba. llama.cpp stores ssm_a as -exp(A_log) and ssm_conv1d squeezed to [d_inner, kernel];
    // the GGUF loader converts both back (core/model/load_gguf.cpp).
    {"ssm_in.weight", "mixer.in_proj"},
    {"ssm_in.bias", "mixer.in_proj.bias"},
    {"ssm_conv1d.weight", "mixer.conv1d"},
    {"ssm_conv1d.bias", "mixer.conv1d.bias"},
    {"ssm_x.weight", "mixer.x_proj"},
    {"ssm_dt.weight", "mixer.dt_proj"},
    {"ssm_dt.bias", "mixer.dt_proj.bias"},
    {"ssm_a", "mixer.A_log"},
    {"ssm_d", "mixer.D"},
    {"ssm_out.weight", "mixer.out_proj"},
    {"ssm_out.bias", "mixer.out_proj.bias"},
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

namespace {

// Per-family HF spellings. Entries of an arch's own table win over the shared Llama table.
struct HfFamily {
    std::vector<std::string_view> layerPrefixes; // first one is used for the inverse mapping
    std::vector<Pair> top;
    std::vector<Pair> layer;
    bool llamaLayerTable = false; // fall back to kHfLayer
};

/// The GPT-style families (their own top-level and block spellings): OPT, GPT-2, GPT-NeoX,
/// Falcon, Bloom; nullptr for the others.
const HfFamily* classicFamily(std::string_view arch) {
    static const HfFamily opt{{"model.decoder.layers.", "decoder.layers."},
                              {{"model.decoder.embed_tokens.weight", "embed"},
                               {"model.decoder.embed_positions.weight", "pos_embed"},
                               {"model.decoder.final_layer_norm.weight", "final_norm"},
                               {"model.decoder.final_layer_norm.bias", "final_norm.bias"},
                               {"model.decoder.project_in.weight", "embed_proj_in"},
                               {"model.decoder.project_out.weight", "embed_proj_out"},
                               {"decoder.embed_tokens.weight", "embed"},
                               {"decoder.embed_positions.weight", "pos_embed"},
                               {"decoder.final_layer_norm.weight", "final_norm"},
                               {"decoder.final_layer_norm.bias", "final_norm.bias"},
                               {"decoder.project_in.weight", "embed_proj_in"},
                               {"decoder.project_out.weight", "embed_proj_out"},
                               {"lm_head.weight", "lm_head"}},
                              {{"self_attn.q_proj.weight", "attn.q"},
                               {"self_attn.k_proj.weight", "attn.k"},
                               {"self_attn.v_proj.weight", "attn.v"},
                               {"self_attn.out_proj.weight", "attn.o"},
                               {"self_attn.q_proj.bias", "attn.q.bias"},
                               {"self_attn.k_proj.bias", "attn.k.bias"},
                               {"self_attn.v_proj.bias", "attn.v.bias"},
                               {"self_attn.out_proj.bias", "attn.o.bias"},
                               {"self_attn_layer_norm.weight", "attn_norm"},
                               {"self_attn_layer_norm.bias", "attn_norm.bias"},
                               {"final_layer_norm.weight", "mlp_norm"},
                               {"final_layer_norm.bias", "mlp_norm.bias"},
                               {"fc1.weight", "mlp.up"},
                               {"fc1.bias", "mlp.up.bias"},
                               {"fc2.weight", "mlp.down"},
                               {"fc2.bias", "mlp.down.bias"}}};
    static const HfFamily gpt2{{"transformer.h.", "h."},
                               {{"transformer.wte.weight", "embed"},
                                {"transformer.wpe.weight", "pos_embed"},
                                {"transformer.ln_f.weight", "final_norm"},
                                {"transformer.ln_f.bias", "final_norm.bias"},
                                {"wte.weight", "embed"},
                                {"wpe.weight", "pos_embed"},
                                {"ln_f.weight", "final_norm"},
                                {"ln_f.bias", "final_norm.bias"},
                                {"lm_head.weight", "lm_head"}},
                               {{"ln_1.weight", "attn_norm"},
                                {"ln_1.bias", "attn_norm.bias"},
                                {"ln_2.weight", "mlp_norm"},
                                {"ln_2.bias", "mlp_norm.bias"},
                                {"attn.c_attn.weight", "attn.qkv"},
                                {"attn.c_attn.bias", "attn.qkv.bias"},
                                {"attn.c_proj.weight", "attn.o"},
                                {"attn.c_proj.bias", "attn.o.bias"},
                                {"mlp.c_fc.weight", "mlp.up"},
                                {"mlp.c_fc.bias", "mlp.up.bias"},
                                {"mlp.c_proj.weight", "mlp.down"},
                                {"mlp.c_proj.bias", "mlp.down.bias"}}};
    static const HfFamily neox{{"gpt_neox.layers."},
                               {{"gpt_neox.embed_in.weight", "embed"},
                                {"gpt_neox.final_layer_norm.weight", "final_norm"},
                                {"gpt_neox.final_layer_norm.bias", "final_norm.bias"},
                                {"embed_out.weight", "lm_head"}},
                               {{"input_layernorm.weight", "attn_norm"},
                                {"input_layernorm.bias", "attn_norm.bias"},
                                {"post_attention_layernorm.weight", "mlp_norm"},
                                {"post_attention_layernorm.bias", "mlp_norm.bias"},
                                {"attention.query_key_value.weight", "attn.qkv"},
                                {"attention.query_key_value.bias", "attn.qkv.bias"},
                                {"attention.dense.weight", "attn.o"},
                                {"attention.dense.bias", "attn.o.bias"},
                                {"mlp.dense_h_to_4h.weight", "mlp.up"},
                                {"mlp.dense_h_to_4h.bias", "mlp.up.bias"},
                                {"mlp.dense_4h_to_h.weight", "mlp.down"},
                                {"mlp.dense_4h_to_h.bias", "mlp.down.bias"}}};
    // Falcon and Bloom share the block spelling ("self_attention.query_key_value", ...).
    static const std::vector<Pair> falconLayer = {
        {"input_layernorm.weight", "attn_norm"},
        {"input_layernorm.bias", "attn_norm.bias"},
        {"ln_attn.weight", "attn_norm"},
        {"ln_attn.bias", "attn_norm.bias"},
        {"post_attention_layernorm.weight", "mlp_norm"},
        {"post_attention_layernorm.bias", "mlp_norm.bias"},
        {"ln_mlp.weight", "mlp_norm"},
        {"ln_mlp.bias", "mlp_norm.bias"},
        {"self_attention.query_key_value.weight", "attn.qkv"},
        {"self_attention.query_key_value.bias", "attn.qkv.bias"},
        {"self_attention.dense.weight", "attn.o"},
        {"self_attention.dense.bias", "attn.o.bias"},
        {"mlp.dense_h_to_4h.weight", "mlp.up"},
        {"mlp.dense_h_to_4h.bias", "mlp.up.bias"},
        {"mlp.dense_4h_to_h.weight", "mlp.down"},
        {"mlp.dense_4h_to_h.bias", "mlp.down.bias"}};
    static const HfFamily falcon{{"transformer.h.", "h."},
                                 {{"transformer.word_embeddings.weight", "embed"},
                                  {"transformer.ln_f.weight", "final_norm"},
                                  {"transformer.ln_f.bias", "final_norm.bias"},
                                  {"word_embeddings.weight", "embed"},
                                  {"ln_f.weight", "final_norm"},
                                  {"ln_f.bias", "final_norm.bias"},
                                  {"lm_head.weight", "lm_head"}},
                                 falconLayer};
    static const HfFamily bloom{{"transformer.h.", "h."},
                                {{"transformer.word_embeddings.weight", "embed"},
                                 {"transformer.word_embeddings_layernorm.weight", "embed_norm"},
                                 {"transformer.word_embeddings_layernorm.bias", "embed_norm.bias"},
                                 {"transformer.ln_f.weight", "final_norm"},
                                 {"transformer.ln_f.bias", "final_norm.bias"},
                                 {"word_embeddings.weight", "embed"},
                                 {"word_embeddings_layernorm.weight", "embed_norm"},
                                 {"word_embeddings_layernorm.bias", "embed_norm.bias"},
                                 {"ln_f.weight", "final_norm"},
                                 {"ln_f.bias", "final_norm.bias"},
                                 {"lm_head.weight", "lm_head"}},
                                falconLayer};
    if (arch == "opt") return &opt;
    if (arch == "gpt2") return &gpt2;
    if (arch == "gpt_neox") return &neox;
    if (arch == "falcon") return &falcon;
    if (arch == "bloom") return &bloom;
    return nullptr;
}

const HfFamily& hfFamily(std::string_view arch) {
    static const HfFamily llama{
        {"model.layers."},
        {kHfTop[0], kHfTop[1], kHfTop[2], {"model.norm.bias", "final_norm.bias"}},
        {{"input_layernorm.bias", "attn_norm.bias"},
         {"post_attention_layernorm.bias", "mlp_norm.bias"}},
        true};
    static const HfFamily gemma2{{"model.layers."},
                                 {kHfTop[0], kHfTop[1], kHfTop[2]},
                                 {{"post_attention_layernorm.weight", "attn_post_norm"},
                                  {"pre_feedforward_layernorm.weight", "mlp_norm"},
                                  {"post_feedforward_layernorm.weight", "mlp_post_norm"}},
                                 true};
    static const HfFamily phi3{{"model.layers."},
                               {kHfTop[0], kHfTop[1], kHfTop[2]},
                               {{"self_attn.qkv_proj.weight", "attn.qkv"},
                                {"self_attn.qkv_proj.bias", "attn.qkv.bias"},
                                {"mlp.gate_up_proj.weight", "mlp.gate_up"}},
                               true};
    static const HfFamily mixtral{{"model.layers."},
                                  {kHfTop[0], kHfTop[1], kHfTop[2]},
                                  {{"block_sparse_moe.gate.weight", "mlp.router"}},
                                  true};
    static const HfFamily mamba{{"backbone.layers."},
                                {{"backbone.embeddings.weight", "embed"},
                                 {"backbone.embedding.weight", "embed"},
                                 {"backbone.norm_f.weight", "final_norm"},
                                 {"lm_head.weight", "lm_head"}},
                                {{"norm.weight", "norm"},
                                 {"mixer.in_proj.weight", "mixer.in_proj"},
                                 {"mixer.in_proj.bias", "mixer.in_proj.bias"},
                                 {"mixer.conv1d.weight", "mixer.conv1d"},
                                 {"mixer.conv1d.bias", "mixer.conv1d.bias"},
                                 {"mixer.x_proj.weight", "mixer.x_proj"},
                                 {"mixer.dt_proj.weight", "mixer.dt_proj"},
                                 {"mixer.dt_proj.bias", "mixer.dt_proj.bias"},
                                 {"mixer.out_proj.weight", "mixer.out_proj"},
                                 {"mixer.out_proj.bias", "mixer.out_proj.bias"},
                                 {"mixer.A_log", "mixer.A_log"},
                                 {"mixer.D", "mixer.D"}}};
    if (const HfFamily* f = classicFamily(arch)) return *f;
    if (arch == "gemma2") return gemma2;
    if (arch == "phi3") return phi3;
    if (arch == "mixtral") return mixtral;
    if (arch == "mamba") return mamba;
    return llama;
}

// "<a><digits><b>" with a fixed prefix a and suffix b: the number, else nullopt.
std::optional<int64_t> numberBetween(std::string_view s, std::string_view a, std::string_view b) {
    if (s.size() <= a.size() + b.size() || s.substr(0, a.size()) != a ||
        s.substr(s.size() - b.size()) != b)
        return std::nullopt;
    const std::string_view mid = s.substr(a.size(), s.size() - a.size() - b.size());
    if (mid.empty() || mid.size() > 9 || (mid.size() > 1 && mid[0] == '0')) return std::nullopt;
    int64_t n = 0;
    for (char ch : mid) {
        if (ch < '0' || ch > '9') return std::nullopt;
        n = n * 10 + (ch - '0');
    }
    return n;
}

// Per-layer roles with an index inside: Mixtral experts, StableLM per-head q/k norms.
std::optional<std::string> indexedRoleFromHf(std::string_view rest, std::string_view arch) {
    if (arch == "mixtral") {
        static constexpr std::pair<std::string_view, std::string_view> w[] = {
            {".w1.weight", "gate"}, {".w3.weight", "up"}, {".w2.weight", "down"}};
        for (const auto& [suffix, role] : w)
            if (auto e = numberBetween(rest, "block_sparse_moe.experts.", suffix))
                return "mlp.experts." + std::to_string(*e) + "." + std::string(role);
    }
    if (arch == "stablelm") {
        if (auto h = numberBetween(rest, "self_attn.q_layernorm.norms.", ".weight"))
            return "attn.q_norm." + std::to_string(*h);
        if (auto h = numberBetween(rest, "self_attn.k_layernorm.norms.", ".weight"))
            return "attn.k_norm." + std::to_string(*h);
    }
    return std::nullopt;
}

std::optional<std::string> indexedRoleToHf(std::string_view role, std::string_view arch) {
    if (arch == "mixtral") {
        static constexpr std::pair<std::string_view, std::string_view> w[] = {
            {".gate", ".w1.weight"}, {".up", ".w3.weight"}, {".down", ".w2.weight"}};
        for (const auto& [suffix, file] : w)
            if (auto e = numberBetween(role, "mlp.experts.", suffix))
                return "block_sparse_moe.experts." + std::to_string(*e) + std::string(file);
    }
    if (arch == "stablelm") {
        if (auto h = numberBetween(role, "attn.q_norm.", ""))
            return "self_attn.q_layernorm.norms." + std::to_string(*h) + ".weight";
        if (auto h = numberBetween(role, "attn.k_norm.", ""))
            return "self_attn.k_layernorm.norms." + std::to_string(*h) + ".weight";
    }
    return std::nullopt;
}

} // namespace

std::optional<std::string> canonicalFromHf(std::string_view n, std::string_view arch) {
    const HfFamily& f = hfFamily(arch);
    for (const auto& p : f.top)
        if (n == p.file) return std::string(p.canon);
    for (std::string_view prefix : f.layerPrefixes) {
        auto l = parseLayer(n, prefix);
        if (!l) continue;
        const std::string head = "layers." + std::to_string(l->first) + ".";
        for (const auto& p : f.layer)
            if (l->second == p.file) return head + std::string(p.canon);
        if (f.llamaLayerTable)
            for (const auto& p : kHfLayer)
                if (l->second == p.file) return head + std::string(p.canon);
        if (auto r = indexedRoleFromHf(l->second, arch)) return head + *r;
        return std::nullopt;
    }
    return std::nullopt;
}

std::optional<std::string> hfFromCanonical(std::string_view c, std::string_view arch) {
    const HfFamily& f = hfFamily(arch);
    for (const auto& p : f.top)
        if (c == p.canon) return std::string(p.file);
    auto l = parseLayer(c, "layers.");
    if (!l) return std::nullopt;
    const std::string head = std::string(f.layerPrefixes.front()) + std::to_string(l->first) + ".";
    std::string_view role = l->second;
    // split logical tensors name their fused file tensor
    const bool fusedQkv = arch == "phi3" || arch == "gpt2" || arch == "gpt_neox" ||
                          arch == "falcon" || arch == "bloom";
    std::string roleBuf;
    if (fusedQkv && (role == "attn.q" || role == "attn.k" || role == "attn.v"))
        role = "attn.qkv";
    else if (fusedQkv && (role == "attn.q.bias" || role == "attn.k.bias" || role == "attn.v.bias"))
        role = "attn.qkv.bias";
    else if (arch == "phi3" && (role == "mlp.gate" || role == "mlp.up"))
        role = "mlp.gate_up";
    for (const auto& p : f.layer)
        if (role == p.canon) return head + std::string(p.file);
    if (f.llamaLayerTable)
        for (const auto& p : kHfLayer)
            if (role == p.canon) return head + std::string(p.file);
    if (auto r = indexedRoleToHf(role, arch)) return head + *r;
    return std::nullopt;
}

std::optional<std::string> canonicalFromGguf(std::string_view n, std::string_view arch) {
    if (auto l = parseLayer(n, "blk.")) {
        const std::string head = "layers." + std::to_string(l->first) + ".";
        // Mamba's per-block RMSNorm is llama.cpp's attn_norm; lcw calls it layers.N.norm.
        if (arch == "mamba" && l->second == "attn_norm.weight") return head + "norm";
        // some writers spell Mamba's A and D with a ".weight" suffix
        if (l->second == "ssm_a.weight") return head + "mixer.A_log";
        if (l->second == "ssm_d.weight") return head + "mixer.D";
    }
    if (auto c = toCanon(n, kGgufTop, kGgufLayer, "blk.")) return c;
    // older llama.cpp Mixtral files: one tensor per expert, "blk.N.ffn_gate.E.weight"
    if (auto l = parseLayer(n, "blk."))
        for (const auto& [file, role] : {std::pair{"ffn_gate.", "gate"}, std::pair{"ffn_up.", "up"},
                                         std::pair{"ffn_down.", "down"}})
            if (auto e = numberBetween(l->second, file, ".weight"))
                return "layers." + std::to_string(l->first) + ".mlp.experts." + std::to_string(*e) +
                       "." + role;
    return std::nullopt;
}
std::optional<std::string> ggufFromCanonical(std::string_view c, std::string_view arch) {
    if (auto l = parseLayer(c, "layers.")) {
        const std::string head = "blk." + std::to_string(l->first) + ".";
        if (arch == "mamba" && l->second == "norm") return head + "attn_norm.weight";
        if (arch == "falcon" && l->second == "mlp_norm") return head + "attn_norm_2.weight";
        if (arch == "falcon" && l->second == "mlp_norm.bias") return head + "attn_norm_2.bias";
    }
    return fromCanon(c, kGgufTop, kGgufLayer, "blk.");
}

} // namespace lcw

// ---- HF module names (llm-compressor / compressed-tensors targets) ----

namespace lcw {

namespace {

constexpr std::string_view kWeightSuffix = ".weight";

bool endsWith(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The canonical roles a per-block module holds: the linear roles themselves, the fused parts for
// the loader's intermediate names; empty for everything else (norms, convolutions, ...).
std::vector<std::string> linearRolesOf(std::string_view role) {
    static constexpr std::string_view kLinear[] = {
        "attn.q",        "attn.k",       "attn.v",        "attn.o",
        "mlp.gate",      "mlp.up",       "mlp.down",      "mlp.router",
        "mixer.in_proj", "mixer.x_proj", "mixer.dt_proj", "mixer.out_proj"};
    if (role == "attn.qkv") return {"attn.q", "attn.k", "attn.v"};
    if (role == "mlp.gate_up") return {"mlp.gate", "mlp.up"};
    for (std::string_view r : kLinear)
        if (role == r) return {std::string(r)};
    return {};
}

std::string joinAlternatives(const std::vector<std::string>& roles) {
    if (roles.size() == 1) return regexEscape(roles[0]);
    std::string r = "(?:";
    for (size_t i = 0; i < roles.size(); ++i) {
        if (i) r += '|';
        r += regexEscape(roles[i]);
    }
    return r + ")";
}

} // namespace

std::string regexEscape(std::string_view literal) {
    std::string r;
    for (char c : literal) {
        if (std::string_view("\\.^$|?*+()[]{}").find(c) != std::string_view::npos) r += '\\';
        r += c;
    }
    return r;
}

std::optional<std::string> hfModuleFromCanonical(std::string_view canonical,
                                                 std::string_view arch) {
    if (canonical.size() >= 5 && canonical.substr(canonical.size() - 5) == ".bias")
        return std::nullopt;
    auto file = hfFromCanonical(canonical, arch);
    if (!file || !endsWith(*file, kWeightSuffix)) return std::nullopt;
    file->resize(file->size() - kWeightSuffix.size());
    return file;
}

std::vector<std::string> canonicalFromHfModule(std::string_view module, std::string_view arch) {
    const auto c = canonicalFromHf(std::string(module) + std::string(kWeightSuffix), arch);
    if (!c) return {};
    const auto l = splitCanonical(*c);
    if (!l || l->layer < 0) return {*c};
    const std::string head = "layers." + std::to_string(l->layer) + ".";
    if (l->role == "attn.qkv" || l->role == "mlp.gate_up") {
        std::vector<std::string> out;
        for (const auto& r : linearRolesOf(l->role)) out.push_back(head + r);
        return out;
    }
    return {*c};
}

std::string hfLayerPrefix(std::string_view arch) {
    return std::string(hfFamily(arch).layerPrefixes.front());
}

std::vector<HfModuleRole> hfModuleRoles(std::string_view arch) {
    std::vector<HfModuleRole> out;
    auto add = [&](const Pair& p) {
        if (!endsWith(p.file, kWeightSuffix)) return;
        std::vector<std::string> roles = linearRolesOf(p.canon);
        if (roles.empty()) return;
        std::string suffix(p.file.substr(0, p.file.size() - kWeightSuffix.size()));
        for (const auto& m : out)
            if (m.suffix == suffix) return;
        out.push_back({std::move(suffix), std::move(roles)});
    };
    const HfFamily& f = hfFamily(arch);
    for (const Pair& p : f.layer) add(p);
    if (f.llamaLayerTable)
        for (const Pair& p : kHfLayer) {
            // the family's own (fused) spelling wins: phi3 has no q_proj
            bool covered = false;
            for (const auto& m : out)
                for (const auto& r : m.roles) covered |= r == p.canon;
            if (!covered) add(p);
        }
    if (arch == "mixtral")
        for (const auto& [w, role] :
             {std::pair{"w1", "gate"}, std::pair{"w3", "up"}, std::pair{"w2", "down"}})
            out.push_back({std::string("block_sparse_moe.experts.*.") + w,
                           {std::string("mlp.experts.*.") + role}});
    return out;
}

bool hfModuleIsLinear(std::string_view canonical, std::string_view arch) {
    if (canonical == "embed" || canonical == "pos_embed") return false;
    if (arch == "gpt2") return canonical == "lm_head"; // transformers' Conv1D in every block
    return hfModuleFromCanonical(canonical, arch).has_value();
}

std::string canonicalRegexFromHfModuleRegex(std::string_view regex, std::string_view arch) {
    // (text in the HF regex, text in the canonical regex), longest first at each position.
    std::vector<std::pair<std::string, std::string>> tokens;
    auto addToken = [&](std::string from, std::string to) {
        for (const auto& t : tokens)
            if (t.first == from) return;
        tokens.emplace_back(std::move(from), std::move(to));
    };
    static constexpr std::string_view kAll[] = {"llama", "phi3",     "mixtral", "gemma2", "opt",
                                                "gpt2",  "gpt_neox", "falcon",  "mamba"};
    std::vector<std::string_view> archs;
    if (arch.empty())
        archs.assign(std::begin(kAll), std::end(kAll));
    else
        archs.push_back(arch);
    for (std::string_view a : archs) {
        for (std::string_view prefix : hfFamily(a).layerPrefixes) {
            addToken(regexEscape(prefix), "layers\\.");
            addToken(std::string(prefix), "layers.");
        }
        for (const HfModuleRole& m : hfModuleRoles(a)) {
            if (m.suffix.find('*') != std::string::npos) continue; // experts: below
            const std::string to = joinAlternatives(m.roles);
            addToken(regexEscape(m.suffix), to);
            addToken(m.suffix, to);
            // the module's own name alone ("re:.*q_proj$"), for names specific enough
            const size_t dot = m.suffix.rfind('.');
            const std::string last = m.suffix.substr(dot == std::string::npos ? 0 : dot + 1);
            if (last.size() >= 3 && last.find_first_of("_0123456789") != std::string::npos)
                addToken(last, to);
        }
        if (a == "mixtral") {
            addToken("block_sparse_moe\\.experts\\.", "mlp\\.experts\\.");
            addToken("block_sparse_moe.experts.", "mlp.experts.");
            addToken("\\.w1", "\\.gate");
            addToken("\\.w3", "\\.up");
            addToken("\\.w2", "\\.down");
            addToken("block_sparse_moe\\.gate", "mlp\\.router");
        }
    }
    std::stable_sort(tokens.begin(), tokens.end(),
                     [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    std::string out;
    for (size_t i = 0; i < regex.size();) {
        bool replaced = false;
        if (regex[i] == '\\' && i + 1 < regex.size() && regex[i + 1] != '.') {
            out += regex.substr(i, 2); // an escape such as \d stays as it is
            i += 2;
            continue;
        }
        for (const auto& [from, to] : tokens)
            if (regex.substr(i, from.size()) == from) {
                out += to;
                i += from.size();
                replaced = true;
                break;
            }
        if (!replaced) out += regex[i++];
    }
    // re.match anchors only at the start; lcw matches the whole name.
    if (out.empty() || out.back() != '$' || (out.size() >= 2 && out[out.size() - 2] == '\\'))
        out += ".*";
    return out;
}

} // namespace lcw
