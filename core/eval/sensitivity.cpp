#include "core/eval/sensitivity.h"

#include "core/compress/compressed_model.h"
#include "core/stats/fingerprint.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <memory>

namespace lcw {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

/// The group size a weight section gives a layer, 0 when it does not quantise by groups (or
/// uses a GGUF block scheme, whose blocks are fixed).
int64_t effectiveGroup(const json& w) {
    if (w.contains("method") && w["method"].is_string()) {
        const auto m = compress::weightMethodFromName(w["method"].get<std::string>());
        if (m && compress::methodIsGguf(*m)) return 0;
    }
    const std::string gran = w.contains("granularity") ? w["granularity"].get<std::string>() : "";
    const bool nf4 = w.contains("format") && w["format"].get<std::string>() == "nf4";
    if (gran == "tensor" || gran == "channel") return 0;
    if (w.contains("group_size")) return w["group_size"].get<int64_t>();
    if (gran == "group") return 128;
    return nf4 ? 64 : 0;
}

json distJson(const Distribution& d) {
    return {{"mean", d.mean},
            {"se", d.meanError},
            {"median", d.median},
            {"p99", d.p99},
            {"max", d.max}};
}

template <class T>
T field(const std::string& path, const json& j, const char* key, const std::string& where) {
    if (!j.contains(key)) throw FormatError(path, where + " has no field '" + key + "'");
    try {
        return j.at(key).get<T>();
    } catch (const json::exception&) {
        throw FormatError(path, where + ", field '" + key + "' has the wrong type");
    }
}

} // namespace

WeightScheme schemeFromPreset(const std::string& preset) {
    // A GGUF type by its recipe name ("q4_k", "Q6_K", "iq4_nl"): ggml's quantiser of that type.
    std::string lower = preset;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (const auto m = compress::weightMethodFromName(lower); m && compress::methodIsGguf(*m) &&
                                                              *m != compress::WeightMethod::F16 &&
                                                              !compress::findPresetIfAny(preset))
        return WeightScheme{lower, json{{"method", lower}}};
    const compress::Preset& p = compress::findPreset(preset);
    WeightScheme s;
    s.name = p.name;
    for (const auto& r : p.recipe.rules)
        if (r.weight && !r.weight->is_null()) s.weight = *r.weight;
    if (s.weight.is_null())
        throw ArgumentError("preset '" + p.name + "' has no weight settings to scan");
    return s;
}

const char* sensitivityGranularityName(SensitivityGranularity g) {
    return g == SensitivityGranularity::Layer ? "layer" : "block";
}

const SchemeScan* SensitivityScan::find(const std::string& scheme) const {
    for (const auto& s : schemes)
        if (s.scheme.name == scheme) return &s;
    return nullptr;
}

std::vector<std::pair<std::string, std::vector<std::string>>>
sensitivityTargets(const Model& model, SensitivityGranularity g) {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    std::map<std::string, size_t> index;
    for (const TensorView& t : model.tensors()) {
        bool explicitOnly = false;
        if (t.shape.size() != 2 || !compress::isTargetable(t.name, &explicitOnly) || explicitOnly)
            continue;
        std::string target = t.name;
        if (g == SensitivityGranularity::Block && t.name.rfind("layers.", 0) == 0)
            target = t.name.substr(0, t.name.find('.', 7));
        auto it = index.find(target);
        if (it == index.end()) {
            index[target] = out.size();
            out.push_back({target, {t.name}});
        } else {
            out[it->second].second.push_back(t.name);
        }
    }
    return out;
}

SensitivityScan scanSensitivity(const Model& base, const std::vector<WeightScheme>& schemes,
                                const std::vector<int32_t>& tokens, const SensitivityOptions& opts,
                                Progress& progress) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    if (schemes.empty()) throw ArgumentError("sensitivity: no scheme to scan");
    checkChunkedEvalInput("sensitivity", base, tokens, opts.eval);
    SensitivityScan scan;
    scan.model = base.path();
    scan.baseFingerprint = stats::modelFingerprint(base);
    scan.granularity = opts.granularity;
    scan.ctx = opts.eval.ctx;
    const auto targets = sensitivityTargets(base, opts.granularity);
    if (targets.empty()) throw ArgumentError("sensitivity: the model has no quantisable linear");

    // One overlay per (scheme, target), each holding only that target's tensors.
    std::vector<std::unique_ptr<compress::CompressedModel>> overlays;
    std::vector<std::pair<size_t, size_t>> owner; // (scheme, entry) of each overlay
    const double total = double(schemes.size() * targets.size());
    size_t done = 0;
    scan.schemes.resize(schemes.size());
    for (size_t s = 0; s < schemes.size(); ++s) {
        SchemeScan& ss = scan.schemes[s];
        ss.scheme = schemes[s];
        if (!ss.scheme.weight.is_object())
            throw ArgumentError("sensitivity: scheme '" + ss.scheme.name +
                                "' needs a weight section (a JSON object)");
        for (size_t ti = 0; ti < targets.size(); ++ti) {
            const auto& [target, layers] = targets[ti];
            if (!progress.report(0.1 * double(done++) / total, "quantise " + target)) {
                scan.status = Status::Cancelled;
                return scan;
            }
            SensitivityEntry e;
            e.target = target;
            e.layers = layers;
            e.order = int(ti);
            e.rules = json::array();
            int clamped = 0;
            int64_t clampedFrom = 0, clampedTo = 0;
            for (const auto& name : layers) {
                const TensorView& t = base.get(name);
                json w = ss.scheme.weight;
                const int64_t g = effectiveGroup(w);
                if (g > t.cols()) {
                    w["granularity"] = "group";
                    w["group_size"] = t.cols();
                    ++clamped;
                    clampedFrom = g;
                    clampedTo = clamped == 1 ? t.cols() : std::min(clampedTo, t.cols());
                }
                e.rules.push_back({{"targets", {name}}, {"weight", w}});
            }
            if (clamped > 0)
                e.note = "group " + std::to_string(clampedFrom) + " > row: clamped to the row (" +
                         std::to_string(clampedTo) + ")" +
                         (layers.size() > 1 ? " in " + std::to_string(clamped) + " of " +
                                                  std::to_string(layers.size()) + " tensors"
                                            : "");
            json rj = {{"lcw_recipe", compress::Recipe::kVersion},
                       {"name", ss.scheme.name + " @ " + target},
                       {"rules", e.rules}};
            compress::CompressResult cr;
            try {
                const compress::Recipe recipe = compress::Recipe::fromJson(rj);
                // Quiet (the scan reports per target), but a stop request ends it within a layer.
                QuietProgress quiet(progress);
                cr = compress::compress(base, recipe, quiet);
            } catch (const compress::RecipeError& err) {
                if (err.field().rfind("weight", 0) != 0 || err.rule() < 0) throw;
                // Settings that do not fit this target (not a bad scheme: those fail everywhere).
                ss.skipped.push_back({target, err.what()});
                continue;
            }
            if (cr.status == Status::Cancelled || !cr.model) {
                scan.status = Status::Cancelled;
                return scan;
            }
            for (const auto& name : layers) {
                const compress::SizeInfo si = cr.model->tensorSize(name);
                e.params += si.params;
                e.bits += si.bits;
                e.baseBits += base.get(name).nbytes * 8;
            }
            ss.entries.push_back(std::move(e));
            overlays.push_back(std::move(cr.model));
            owner.push_back({s, ss.entries.size() - 1});
        }
        if (ss.entries.empty())
            throw ArgumentError("sensitivity: scheme '" + ss.scheme.name +
                                "' applies to no layer of the model (" + ss.skipped.front().second +
                                ")");
    }

    std::vector<DivergenceConfig> configs;
    for (size_t i = 0; i < overlays.size(); ++i) {
        const auto [s, k] = owner[i];
        configs.push_back({scan.schemes[s].scheme.name + ":" + scan.schemes[s].entries[k].target,
                           overlays[i].get()});
    }
    RangeProgress sub(progress, 0.1, 1.0);
    const DivergenceResult r = compareToBaseline(base, configs, tokens, opts.eval, sub);
    scan.chunks = r.chunks;
    scan.scoredTokens = r.scoredTokens;
    scan.baselinePpl = r.baselinePpl;
    for (size_t i = 0; i < overlays.size(); ++i)
        scan.schemes[owner[i].first].entries[owner[i].second].stats = r.configs[i];
    for (auto& ss : scan.schemes) {
        std::stable_sort(ss.entries.begin(), ss.entries.end(), [](const auto& a, const auto& b) {
            return a.stats.kld.mean > b.stats.kld.mean;
        });
        for (size_t i = 0; i < ss.entries.size(); ++i) ss.entries[i].rank = int(i + 1);
    }
    scan.status = r.status;
    scan.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return scan;
}

nlohmann::ordered_json sensitivityToJson(const SensitivityScan& s) {
    ojson schemes = ojson::array();
    for (const auto& ss : s.schemes) {
        ojson entries = ojson::array();
        for (const auto& e : ss.entries) {
            entries.push_back({{"rank", e.rank},
                               {"target", e.target},
                               {"order", e.order},
                               {"layers", e.layers},
                               {"params", e.params},
                               {"bits", e.bits},
                               {"base_bits", e.baseBits},
                               {"bits_per_weight", e.bitsPerWeight()},
                               {"delta_bits", e.deltaBits()},
                               {"kld", distJson(e.stats.kld)},
                               {"same_top_percent", e.stats.sameTop * 100},
                               {"same_top_percent_se", e.stats.sameTopError * 100},
                               {"ppl_ratio", e.stats.pplRatio},
                               {"mean_ln_ppl_ratio", e.stats.meanLnRatio},
                               {"note", e.note},
                               {"rules", e.rules}});
        }
        ojson skipped = ojson::array();
        for (const auto& [t, why] : ss.skipped) skipped.push_back({{"target", t}, {"reason", why}});
        schemes.push_back({{"scheme", ss.scheme.name},
                           {"weight", ss.scheme.weight},
                           {"entries", entries},
                           {"skipped", skipped}});
    }
    return {{"lcw_sensitivity", 1},
            {"model", s.model},
            {"base_fingerprint", s.baseFingerprint},
            {"granularity", sensitivityGranularityName(s.granularity)},
            {"ctx", s.ctx},
            {"chunks", s.chunks},
            {"scored_tokens", s.scoredTokens},
            {"baseline_ppl", s.baselinePpl},
            {"complete", s.status == Status::Ok},
            {"seconds", s.seconds},
            {"schemes", schemes}};
}

SensitivityScan sensitivityFromJson(const json& j, const std::string& path) {
    if (!j.is_object() || !j.contains("lcw_sensitivity"))
        throw FormatError(path, "not a scan file (no 'lcw_sensitivity' field)");
    if (j["lcw_sensitivity"] != 1)
        throw FormatError(path, "unsupported version " + j["lcw_sensitivity"].dump());
    SensitivityScan s;
    s.model = field<std::string>(path, j, "model", "the scan");
    s.baseFingerprint = field<std::string>(path, j, "base_fingerprint", "the scan");
    const auto g = field<std::string>(path, j, "granularity", "the scan");
    if (g != "layer" && g != "block")
        throw FormatError(path, "granularity must be 'layer' or 'block', got '" + g + "'");
    s.granularity = g == "layer" ? SensitivityGranularity::Layer : SensitivityGranularity::Block;
    s.ctx = field<int64_t>(path, j, "ctx", "the scan");
    s.chunks = field<int64_t>(path, j, "chunks", "the scan");
    s.scoredTokens = field<int64_t>(path, j, "scored_tokens", "the scan");
    s.baselinePpl = field<double>(path, j, "baseline_ppl", "the scan");
    if (j.contains("seconds") && j["seconds"].is_number()) s.seconds = j["seconds"].get<double>();
    if (!field<bool>(path, j, "complete", "the scan"))
        throw FormatError(path, "the scan was cancelled before it finished");
    const json schemes = field<json>(path, j, "schemes", "the scan");
    if (!schemes.is_array()) throw FormatError(path, "'schemes' must be an array");
    for (size_t i = 0; i < schemes.size(); ++i) {
        const json& sj = schemes[i];
        const std::string where = "schemes[" + std::to_string(i) + "]";
        SchemeScan ss;
        ss.scheme.name = field<std::string>(path, sj, "scheme", where);
        ss.scheme.weight = field<json>(path, sj, "weight", where);
        const json entries = field<json>(path, sj, "entries", where);
        if (!entries.is_array()) throw FormatError(path, where + ".entries must be an array");
        for (size_t k = 0; k < entries.size(); ++k) {
            const json& ej = entries[k];
            const std::string ew = where + ".entries[" + std::to_string(k) + "]";
            SensitivityEntry e;
            e.rank = field<int>(path, ej, "rank", ew);
            e.target = field<std::string>(path, ej, "target", ew);
            e.order = field<int>(path, ej, "order", ew);
            e.layers = field<std::vector<std::string>>(path, ej, "layers", ew);
            e.params = field<int64_t>(path, ej, "params", ew);
            e.bits = field<uint64_t>(path, ej, "bits", ew);
            e.baseBits = field<uint64_t>(path, ej, "base_bits", ew);
            e.note = field<std::string>(path, ej, "note", ew);
            e.rules = field<json>(path, ej, "rules", ew);
            if (!e.rules.is_array() || e.rules.empty())
                throw FormatError(path, ew + ".rules must be a non-empty array");
            const json kld = field<json>(path, ej, "kld", ew);
            e.stats.name = ss.scheme.name + ":" + e.target;
            e.stats.kld.mean = field<double>(path, kld, "mean", ew + ".kld");
            e.stats.kld.meanError = field<double>(path, kld, "se", ew + ".kld");
            e.stats.kld.median = field<double>(path, kld, "median", ew + ".kld");
            e.stats.kld.p99 = field<double>(path, kld, "p99", ew + ".kld");
            e.stats.kld.max = field<double>(path, kld, "max", ew + ".kld");
            e.stats.sameTop = field<double>(path, ej, "same_top_percent", ew) / 100;
            e.stats.sameTopError = field<double>(path, ej, "same_top_percent_se", ew) / 100;
            e.stats.pplRatio = field<double>(path, ej, "ppl_ratio", ew);
            e.stats.meanLnRatio = field<double>(path, ej, "mean_ln_ppl_ratio", ew);
            ss.entries.push_back(std::move(e));
        }
        if (sj.contains("skipped"))
            for (const auto& k : sj["skipped"])
                ss.skipped.push_back({field<std::string>(path, k, "target", where + ".skipped"),
                                      field<std::string>(path, k, "reason", where + ".skipped")});
        s.schemes.push_back(std::move(ss));
    }
    return s;
}

} // namespace lcw
