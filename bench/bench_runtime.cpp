// Runtime benchmark: load time, prefill and decode tokens/s, peak RSS. Prints one JSON line per
// measurement so scripts can collect them.
//   bench_runtime MODEL [--prefill N] [--decode N] [--threads T] [--reps R] [--warmup W]
//                       [--exact-activations] [--kv-cache f32|f16]
//                       [--preset P | --recipe R.json]... [--device D]
// --kv-cache: the element type of the KV cache (SessionOptions::kvCache, default f32; f16 is
// llama.cpp's default cache); the lines say which one ran ("kv_cache").
// --device cpu|vulkan|vulkan:N: where the session runs (a "device" line says which device was
// used, how many forwards ran resident on it and, if not all, why).
// --preset / --recipe: the model compressed by that recipe (round to nearest, no calibration
// data: the speed of the packed form does not depend on how the codes were chosen) is measured;
// "compress_seconds", the overlay's bits/weight and its resident bytes are printed too, and
// decode_weight_bytes counts the overlay's stored bytes in place of the replaced tensors.
// Several --preset / --recipe options measure several configurations in one process, their
// repetitions interleaved (one of each in turn, after every configuration's warm-up), so that
// their ratios do not depend on when the machine was busier; peak RSS is then the process's
// (one line, "configuration": "all").
// Each repetition: reset, one prefill of N synthetic ids ((i*7919+13) % vocab, logits of the last
// position only), then N greedy single-token decode steps starting from the prompt's last id.
// "value" is the median over the repetitions ("best" and "runs" carry the rest). W warm-up
// decode steps (default 1) run first and touch every weight, so that page faults of the mmapped
// file are not timed (llama-bench warms up the same way). peak_rss_bytes is the process's high
// water mark (VmHWM: mapped weight pages touched + everything allocated), and
// decode_weight_bytes the weight bytes one decode step reads (every tensor but the embedding, of
// which one row; the whole embedding when it doubles as lm_head).
#include "core/common/memory.h"
#include "core/common/progress.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/session.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Sets SessionOptions::exactActivations where this build's runtime has the switch; a build
// without it cannot honour the flag, so it says so rather than measuring something else.
template <class Options> void setExactActivations(Options& so) {
    if constexpr (requires { so.exactActivations = true; })
        so.exactActivations = true;
    else
        throw std::runtime_error("--exact-activations: this build's runtime has no "
                                 "SessionOptions::exactActivations");
}

// Sets SessionOptions::kvCache ("f32", "f16") where this build's runtime has it.
template <class Options> void setKvCache(Options& so, const std::string& type) {
    if constexpr (requires { so.kvCache = decltype(so.kvCache)::F16; }) {
        using K = decltype(so.kvCache);
        so.kvCache = type == "f16" ? K::F16 : K::F32;
    } else if (type != "f32") {
        throw std::runtime_error("--kv-cache: this build's runtime has no SessionOptions::kvCache");
    }
}

/// "f16" or "f32": the KV cache a session holds (f32 in a runtime without the choice).
template <class S> std::string kvCacheName(const S& session) {
    if constexpr (requires { session.kvCacheF16(); })
        return session.kvCacheF16() ? "f16" : "f32";
    else
        return "f32";
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int usage() {
    std::fprintf(stderr, "usage: bench_runtime MODEL [--prefill N] [--decode N] [--threads T] "
                         "[--reps R] [--warmup W] [--exact-activations] [--kv-cache f32|f16] "
                         "[--preset P | --recipe R.json]... [--device cpu|vulkan|vulkan:N]\n");
    return 2;
}

/// One configuration of the command line: a preset or a recipe file (both empty: the model).
struct ConfigArg {
    std::string preset, recipePath;
    std::string name() const {
        return !preset.empty() ? preset : !recipePath.empty() ? recipePath : std::string("model");
    }
};

struct Args {
    std::string path, device, kvCache = "f32";
    std::vector<ConfigArg> configs;
    int64_t nPrefill = 128, nDecode = 64, warmup = 1;
    int threads = 0, reps = 3;
    bool exact = false;
};

/// The command line; false on a malformed one.
bool parseArgs(int argc, char** argv, Args& a) {
    if (argc < 2 || argv[1][0] == '-') return false;
    a.path = argv[1];
    for (int i = 2; i < argc; ++i) {
        const std::string k = argv[i];
        if (k == "--exact-activations") {
            a.exact = true;
            continue;
        }
        if (i + 1 >= argc) return false;
        if (k == "--device") {
            a.device = argv[++i];
            continue;
        }
        if (k == "--kv-cache") {
            a.kvCache = argv[++i];
            if (a.kvCache != "f32" && a.kvCache != "f16") return false;
            continue;
        }
        if (k == "--preset" || k == "--recipe") {
            a.configs.push_back(k == "--preset" ? ConfigArg{argv[i + 1], {}}
                                                : ConfigArg{{}, argv[i + 1]});
            ++i;
            continue;
        }
        char* end = nullptr;
        const long long v = std::strtoll(argv[i + 1], &end, 10);
        if (*end != '\0' || v < 0) return false;
        if (k == "--prefill")
            a.nPrefill = v;
        else if (k == "--decode")
            a.nDecode = v;
        else if (k == "--threads")
            a.threads = int(v);
        else if (k == "--reps")
            a.reps = int(v);
        else if (k == "--warmup")
            a.warmup = v;
        else
            return false;
        ++i;
    }
    if (a.configs.empty()) a.configs.push_back({});
    return a.nPrefill >= 1 && a.nDecode >= 1 && a.reps >= 1;
}

/// What is measured: the model itself or its overlay under the recipe, and the weight bytes one
/// decode step reads.
struct Configuration {
    const lcw::WeightSource* weights = nullptr;
    std::unique_ptr<lcw::compress::CompressedModel> overlay;
    double compressSec = 0.0;
    uint64_t decodeBytes = 0;
};

Configuration configure(const lcw::Model& model, const ConfigArg& a) {
    Configuration c;
    c.weights = &model;
    c.decodeBytes = model.storedBytes();
    if (const lcw::TensorView* e = model.find("embed"); e && model.find("lm_head"))
        c.decodeBytes -= e->nbytes - e->rowBytes();
    if (a.preset.empty() && a.recipePath.empty()) return c;
    const lcw::compress::Recipe recipe = a.preset.empty()
                                             ? lcw::compress::Recipe::load(a.recipePath)
                                             : lcw::compress::findPreset(a.preset).recipe;
    lcw::NullProgress np;
    const double tc = now();
    c.overlay = lcw::compress::compress(model, recipe, np).model;
    c.compressSec = now() - tc;
    if (!c.overlay) throw std::runtime_error("compress returned no overlay");
    c.weights = c.overlay.get();
    for (const std::string& n : c.overlay->replacedNames()) {
        const lcw::TensorView* t = model.find(n);
        const bool embedRow = n == "embed" && model.find("lm_head");
        if (t) c.decodeBytes -= embedRow ? t->rowBytes() : t->nbytes;
        const uint64_t stored = c.overlay->tensorSize(n).bytes();
        c.decodeBytes += embedRow && t ? stored / uint64_t(t->rows()) : stored;
    }
    return c;
}

/// Tokens per second of each repetition, and the warm-up's seconds.
struct Timings {
    std::vector<double> prefill, decode;
    double warmSec = 0.0;
};

/// One configuration's session and what was measured on it.
struct Run {
    std::unique_ptr<lcw::Session> session;
    std::vector<float> logits;
    Timings t;

    void decode(int32_t tok, int64_t n) {
        for (int64_t i = 0; i < n; ++i) {
            session->forward(std::span<const int32_t>(&tok, 1), logits, false);
            tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
    }
    void warmUp(const std::vector<int32_t>& prompt, int64_t steps) {
        const double tw = now();
        decode(prompt.back(), steps);
        t.warmSec = now() - tw;
    }
    /// One repetition: reset, prefill, decode.
    void repetition(const std::vector<int32_t>& prompt, int64_t nDecode) {
        session->reset();
        double s = now();
        session->forward(prompt, logits, false);
        t.prefill.push_back(double(prompt.size()) / (now() - s));
        s = now();
        decode(prompt.back(), nDecode);
        t.decode.push_back(double(nDecode) / (now() - s));
    }
};

nlohmann::json rates(const char* metric, const std::vector<double>& v, int64_t tokens) {
    return {{"metric", metric},
            {"value", median(v)},
            {"best", *std::max_element(v.begin(), v.end())},
            {"runs", v},
            {"tokens", tokens}};
}

} // namespace

int main(int argc, char** argv) {
    Args a;
    if (!parseArgs(argc, argv, a)) return usage();
    if (a.threads > 0) omp_set_num_threads(a.threads);
    try {
        const double t0 = now();
        auto model = lcw::Model::load(a.path);
        const double loadSec = now() - t0;
        const auto& spec = model->spec();
        const double f32Bytes = double(model->parameterCount()) * 4.0;
        const int64_t nPrefill =
            std::min<int64_t>(a.nPrefill, std::max<int64_t>(1, spec.maxSeq - a.nDecode - 1));
        lcw::SessionOptions so;
        so.contextLength = nPrefill + a.nDecode + 1;
        if (a.exact) setExactActivations(so);
        setKvCache(so, a.kvCache);
        so.device = a.device;
        std::vector<int32_t> prompt(static_cast<size_t>(nPrefill));
        for (int64_t i = 0; i < nPrefill; ++i)
            prompt[size_t(i)] = int32_t((i * 7919 + 13) % spec.vocab);

        const nlohmann::json common = {{"model", a.path},
                                       {"arch", spec.arch},
                                       {"format", spec.sourceFormat},
                                       {"parameters", model->parameterCount()},
                                       {"stored_bytes", model->storedBytes()},
                                       {"exact_activations", a.exact},
                                       {"threads", omp_get_max_threads()}};
        auto emitWith = [&](const nlohmann::json& base, nlohmann::json j) {
            for (auto& [k, v] : common.items()) j[k] = v;
            for (auto& [k, v] : base.items()) j[k] = v;
            std::printf("%s\n", j.dump().c_str());
            std::fflush(stdout);
        };
        const size_t nc = a.configs.size();
        std::vector<Configuration> cs(nc);
        std::vector<nlohmann::json> bases(nc);
        std::vector<Run> runs(nc);
        for (size_t i = 0; i < nc; ++i) {
            cs[i] = configure(*model, a.configs[i]);
            bases[i] = {{"decode_weight_bytes", cs[i].decodeBytes},
                        {"configuration", a.configs[i].name()}};
            emitWith(bases[i], {{"metric", "load_seconds"}, {"value", loadSec}});
            if (cs[i].overlay) {
                emitWith(bases[i], {{"metric", "compress_seconds"}, {"value", cs[i].compressSec}});
                emitWith(bases[i], {{"metric", "bits_per_weight"},
                                    {"value", cs[i].overlay->totalSize().bitsPerWeight()}});
            }
            runs[i].session = std::make_unique<lcw::Session>(*cs[i].weights, so);
            bases[i]["kv_cache"] = kvCacheName(*runs[i].session);
        }
        for (Run& r : runs) r.warmUp(prompt, std::min(a.warmup, so.contextLength));
        for (int rep = 0; rep < a.reps; ++rep)
            for (Run& r : runs) r.repetition(prompt, a.nDecode);

        for (size_t i = 0; i < nc; ++i) {
            const Timings& t = runs[i].t;
            const lcw::Session& session = *runs[i].session;
            emitWith(bases[i],
                     {{"metric", "warmup_seconds"}, {"value", t.warmSec}, {"tokens", a.warmup}});
            if (!a.device.empty())
                emitWith(bases[i], {{"metric", "device"},
                                    {"id", session.device().id},
                                    {"name", session.device().name},
                                    {"note", session.deviceNote()},
                                    {"resident_forwards", session.deviceForwards()},
                                    {"resident_note", session.residentNote()},
                                    {"device_products", session.deviceProducts()},
                                    {"device_memory_bytes", session.deviceMemoryBytes()}});
            emitWith(bases[i], rates("prefill_tokens_per_second", t.prefill, nPrefill));
            emitWith(bases[i], rates("decode_tokens_per_second", t.decode, a.nDecode));
            if (cs[i].overlay)
                emitWith(bases[i], {{"metric", "overlay_resident_bytes"},
                                    {"value", cs[i].overlay->residentBytes()},
                                    {"stored_bytes", cs[i].overlay->totalSize().bytes()}});
        }
        const double peak = double(lcw::peakRssBytes());
        emitWith(nc == 1 ? bases[0] : nlohmann::json{{"configuration", "all"}},
                 {{"metric", "peak_rss_bytes"},
                  {"value", peak},
                  {"ratio_to_f32_size", peak / f32Bytes},
                  {"ratio_to_stored_size", peak / double(model->storedBytes())}});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
