#include "widgets/model_blocks.h"

#include <charconv>

namespace lcw {

namespace {
constexpr std::string_view kLayersPrefix = "layers.";
}

int tensorLayer(std::string_view canonical) {
    if (!canonical.starts_with(kLayersPrefix)) return -1;
    const char* begin = canonical.data() + kLayersPrefix.size();
    const char* end = canonical.data() + canonical.size();
    int layer = -1;
    auto [ptr, ec] = std::from_chars(begin, end, layer);
    if (ec != std::errc() || ptr == begin || (ptr != end && *ptr != '.')) return -1;
    return layer;
}

std::string tensorRole(std::string_view canonical) {
    if (canonical.starts_with("extra.")) return "extra";
    std::string_view rest = canonical;
    if (tensorLayer(canonical) >= 0) {
        const size_t dot = canonical.find('.', kLayersPrefix.size());
        rest = dot == std::string_view::npos ? std::string_view{} : canonical.substr(dot + 1);
    }
    if (rest.ends_with("_norm") || rest == "norm") return "norm";
    return std::string(rest);
}

std::vector<BlockSize> blockSizes(const Model& model) {
    const ModelSpec& spec = model.spec();
    int nLayers = int(spec.nLayers);
    for (const auto& t : model.tensors()) nLayers = std::max(nLayers, tensorLayer(t.name) + 1);

    std::vector<BlockSize> blocks(size_t(nLayers) + 2);
    blocks.front().label = "embed";
    for (int i = 0; i < nLayers; ++i) {
        // append() rather than "L" + to_string(): g++ 12 warns -Wrestrict on the latter.
        blocks[size_t(i) + 1].label.append("L").append(std::to_string(i));
        blocks[size_t(i) + 1].layer = i;
    }
    const bool tied = model.find("lm_head") == nullptr;
    blocks.back().label = tied ? "lm_head (tied)" : "lm_head";

    for (const auto& t : model.tensors()) {
        BlockSize* b = &blocks.back();
        if (t.name == "embed")
            b = &blocks.front();
        else if (const int layer = tensorLayer(t.name); layer >= 0)
            b = &blocks[size_t(layer) + 1];
        b->parameters += t.numel();
        b->bytes += t.nbytes;
    }
    return blocks;
}

} // namespace lcw
