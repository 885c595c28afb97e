#include "core/export/gguf_preset.h"

#include "core/common/error.h"
#include "core/model/model.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <mutex>

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

namespace {

// The GGUF type of every planned tensor from a recipe's plan (absent: left in float).
std::map<std::string, DType> recipeTypes(const Model& model, const compress::Recipe& recipe,
                                         const std::vector<GgufTensorInfo>& plan,
                                         std::optional<DType> reencode) {
    compress::PlanOptions po;
    po.hasCalibration = true;
    const compress::Plan p = compress::planRecipe(recipe, model, po);
    std::map<std::string, const compress::LayerPlan*> byName;
    for (const auto& lp : p.layers) byName[lp.name] = &lp;
    std::map<std::string, DType> out;
    for (const auto& t : plan) {
        std::optional<DType> ty;
        for (const auto& src : t.sources) {
            const auto it = byName.find(src);
            if (it == byName.end() || !it->second->quantize) continue;
            const compress::WeightSettings st = it->second->weight.stored();
            std::optional<DType> d;
            if (compress::methodIsGguf(st.method))
                d = compress::ggufMethodType(st.method);
            else if (reencode)
                d = reencode;
            else
                throw ArgumentError(src + ": " + it->second->weight.describe() +
                                    " has no GGUF type; give a type to re-encode it in");
            if (ty && *ty != *d)
                throw ArgumentError(t.name + ": its parts " + t.sources.front() + " and " + src +
                                    " have different types; llama.cpp stores them as one tensor");
            ty = d;
        }
        if (ty) out[t.name] = *ty;
    }
    return out;
}

} // namespace

GgufMix ggufMixForRecipe(const Model& model, const compress::Recipe& recipe,
                         const GgufMixOptions& opts, std::optional<LlamaFtype> base,
                         std::optional<DType> reencode) {
    const std::vector<GgufTensorInfo> plan = planGgufTensors(model);
    const GgufMixModel mm = ggufMixModelOf(model);
    const std::vector<GgufMixTensor> tensors = ggufMixTensorsOf(plan);
    const std::map<std::string, DType> types = recipeTypes(model, recipe, plan, reencode);
    auto want = [&](const GgufMixChoice& c) {
        const auto it = types.find(c.name);
        return it == types.end() ? c.sourceType : it->second;
    };
    int bestDiff = -1;
    const std::optional<LlamaFtype> only = base;
    for (const LlamaFtypeInfo& f : llamaFtypes()) {
        if (only && f.ftype != *only) continue;
        GgufMix m;
        try {
            m = chooseGgufMix(f.ftype, mm, tensors, opts);
        } catch (const Error&) {
            continue; // e.g. a preset whose blocks do not fit this model's rows
        }
        int diff = 0;
        for (const auto& c : m.tensors) diff += c.quantizable && c.type != want(c);
        if (bestDiff < 0 || diff < bestDiff) bestDiff = diff, base = f.ftype;
    }
    if (!base) throw UnsupportedError("no llama.cpp preset applies to this model");
    GgufMixOptions o = opts;
    for (const auto& c : chooseGgufMix(*base, mm, tensors, opts).tensors)
        if (c.quantizable && c.type != want(c)) o.perTensor[c.name] = want(c);
    return chooseGgufMix(*base, mm, tensors, o);
}

GgufImportance imatrixImportance(const compress::Imatrix& m,
                                 const std::vector<GgufTensorInfo>& plan) {
    struct Held {
        std::mutex mutex;
        std::map<std::string, std::pair<int64_t, int64_t>> dims; // cols, experts
        std::map<std::string, std::vector<float>> values;
    };
    auto held = std::make_shared<Held>();
    for (const auto& t : plan)
        if (t.shape.size() >= 2)
            held->dims[t.name] = {t.shape.back(), t.shape.size() == 3 ? t.shape[0] : 1};
    return [&m, held](const std::string& name) -> const float* {
        const auto d = held->dims.find(name);
        if (d == held->dims.end()) return nullptr;
        const std::lock_guard<std::mutex> lock(held->mutex);
        auto it = held->values.find(name);
        if (it == held->values.end())
            it = held->values
                     .emplace(name, m.importance(name, d->second.first, d->second.second))
                     .first;
        return it->second.empty() ? nullptr : it->second.data();
    };
}

std::vector<std::pair<std::string, GgufValue>> imatrixMetadata(const compress::Imatrix& m,
                                                               const std::string& file) {
    std::vector<std::pair<std::string, GgufValue>> md;
    md.emplace_back("quantize.imatrix.file", GgufValue::string(file));
    md.emplace_back("quantize.imatrix.dataset", GgufValue::string(m.dataset));
    md.emplace_back("quantize.imatrix.entries_count", GgufValue::i32(int32_t(m.entries.size())));
    md.emplace_back("quantize.imatrix.chunks_count", GgufValue::i32(m.chunks));
    return md;
}

} // namespace lcw
