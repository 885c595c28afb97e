#include "core/export/gguf_preset.h"

#include "core/common/error.h"
#include "core/model/model.h"

#include <algorithm>
#include <cctype>

namespace lcw {

namespace {

std::string upper(std::string_view s) {
    std::string u(s);
    for (char& c : u) c = char(std::toupper(static_cast<unsigned char>(c)));
    return u;
}

bool isFloatFtype(LlamaFtype f) {
    return f == LlamaFtype::F32 || f == LlamaFtype::F16 || f == LlamaFtype::BF16;
}

} // namespace

std::optional<LlamaPresetName> parseLlamaPreset(std::string_view name) {
    std::string u = upper(name);
    std::optional<compress::WeightMethod> method;
    for (const auto& [suffix, m] : {std::pair<std::string_view, compress::WeightMethod>{
                                        "-GPTQ", compress::WeightMethod::Gptq},
                                    {"-AWQ", compress::WeightMethod::Awq}}) {
        if (u.size() > suffix.size() && u.ends_with(suffix)) {
            method = m;
            u.resize(u.size() - suffix.size());
        }
    }
    for (const LlamaFtypeInfo& f : llamaFtypes()) {
        if (upper(f.name) != u) continue;
        if (method && isFloatFtype(f.ftype)) return std::nullopt;
        LlamaPresetName p;
        p.ftype = f.ftype;
        p.method = method;
        p.display = std::string(f.name) +
                    (method ? (*method == compress::WeightMethod::Gptq ? "-GPTQ" : "-AWQ") : "");
        return p;
    }
    return std::nullopt;
}

std::vector<std::string> llamaPresetNames() {
    std::vector<std::string> v;
    for (const LlamaFtypeInfo& f : llamaFtypes()) v.emplace_back(f.name);
    return v;
}

GgufMix ggufMixFor(const WeightSource& weights, LlamaFtype ftype, const GgufMixOptions& opts) {
    return chooseGgufMix(ftype, ggufMixModelOf(weights), ggufMixTensorsOf(planGgufTensors(weights)),
                         opts);
}

compress::Recipe recipeFromGgufMix(const GgufMix& mix, const std::vector<GgufTensorInfo>& plan,
                                   std::optional<compress::WeightMethod> method,
                                   const std::string& imatrix) {
    using compress::WeightMethod;
    compress::Recipe r;
    r.name = std::string(llamaFtypeInfo(mix.ftype).name);
    if (method) r.name += *method == WeightMethod::Gptq ? "-GPTQ" : "-AWQ";
    r.description = "llama.cpp's " + std::string(llamaFtypeInfo(mix.ftype).name) +
                    " mix for this model (llama-quantize's per-tensor types)" +
                    (method ? std::string(", codes by ") + compress::weightMethodName(*method) +
                                  " on the GGUF grids"
                            : std::string());
    r.imatrix = imatrix;
    for (const GgufTensorInfo& t : plan) {
        const GgufMixChoice* c = mix.find(t.name);
        if (!c || t.sources.empty() || !c->converted() || c->type == DType::F32) continue;
        const auto gm = compress::ggufMethodForType(c->type);
        if (!gm)
            throw UnsupportedError(t.name + ": lcw has no recipe method for GGUF type " +
                                   std::string(dtypeName(c->type)));
        compress::Rule rule;
        rule.targets = t.sources;
        rule.comment = t.name + " " + std::string(llamaCppTypeName(c->type)) +
                       (c->reason.empty() ? "" : " (" + c->reason + ")");
        // GPTQ / AWQ run on the blocks' linears (the calibrated pipeline's units); the
        // embedding and the output projection get ggml's quantiser.
        const bool calibrated = method && *gm != WeightMethod::F16 && t.layer >= 0;
        nlohmann::json w;
        if (calibrated)
            w = {{"method", compress::weightMethodName(*method)},
                 {"gguf", compress::weightMethodName(*gm)}};
        else
            w = {{"method", compress::weightMethodName(*gm)}};
        rule.weight = std::move(w);
        r.rules.push_back(std::move(rule));
    }
    return r;
}

compress::Recipe presetRecipe(const WeightSource& weights, const std::string& name,
                              const std::string& imatrix) {
    const auto p = parseLlamaPreset(name);
    if (!p) {
        try {
            return compress::findPreset(name).recipe;
        } catch (const ArgumentError& e) {
            std::string names;
            for (const auto& n : llamaPresetNames()) names += (names.empty() ? "" : ", ") + n;
            throw ArgumentError(std::string(e.what()) + "; llama.cpp presets: " + names +
                                " (add -GPTQ or -AWQ for codes chosen on calibration data)");
        }
    }
    const std::vector<GgufTensorInfo> plan = planGgufTensors(weights);
    GgufMixOptions o;
    o.hasImatrix = !imatrix.empty();
    const GgufMix mix =
        chooseGgufMix(p->ftype, ggufMixModelOf(weights), ggufMixTensorsOf(plan), o);
    compress::Recipe r = recipeFromGgufMix(mix, plan, p->method, imatrix);
    r.name = p->display;
    return r;
}

} // namespace lcw
