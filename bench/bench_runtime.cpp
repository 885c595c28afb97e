// Runtime benchmark: load time, prefill and decode tokens/s, peak RSS. Prints one JSON line per
// measurement so scripts can collect them.
//   bench_runtime MODEL [--prefill N] [--decode N] [--threads T] [--reps R] [--warmup W]
//                       [--exact-activations] [--preset P | --recipe R.json] [--device D]
// --device cpu|vulkan|vulkan:N: where the session runs (a "device" line says which device was
// used, how many forwards ran resident on it and, if not all, why).
// --preset / --recipe: the model compressed by that recipe (round to nearest, no calibration
// data: the speed of the packed form does not depend on how the codes were chosen) is measured;
// "compress_seconds", the overlay's bits/weight and its resident bytes are printed too, and
// decode_weight_bytes counts the overlay's stored bytes in place of the replaced tensors.
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
#include <cstring>
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

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int usage() {
    std::fprintf(stderr, "usage: bench_runtime MODEL [--prefill N] [--decode N] [--threads T] "
                         "[--reps R] [--warmup W] [--exact-activations] "
                         "[--preset P | --recipe R.json] [--device cpu|vulkan|vulkan:N]\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argv[1][0] == '-') return usage();
    std::string path = argv[1];
    int64_t nPrefill = 128, nDecode = 64, warmup = 1;
    int threads = 0, reps = 3;
    bool exact = false;
    std::string preset, recipePath, device;
    for (int i = 2; i < argc; ++i) {
        const std::string k = argv[i];
        if (k == "--exact-activations") {
            exact = true;
            continue;
        }
        if (i + 1 >= argc) return usage();
        if (k == "--device") {
            device = argv[++i];
            continue;
        }
        if (k == "--preset" || k == "--recipe") {
            (k == "--preset" ? preset : recipePath) = argv[++i];
            continue;
        }
        char* end = nullptr;
        const long long v = std::strtoll(argv[i + 1], &end, 10);
        if (*end != '\0' || v < 0) return usage();
        if (k == "--prefill")
            nPrefill = v;
        else if (k == "--decode")
            nDecode = v;
        else if (k == "--threads")
            threads = int(v);
        else if (k == "--reps")
            reps = int(v);
        else if (k == "--warmup")
            warmup = v;
        else
            return usage();
        ++i;
    }
    if (nPrefill < 1 || nDecode < 1 || reps < 1) return usage();
    if (threads > 0) omp_set_num_threads(threads);
    try {
        const double t0 = now();
        auto model = lcw::Model::load(path);
        const double loadSec = now() - t0;
        const auto& spec = model->spec();
        const double f32Bytes = double(model->parameterCount()) * 4.0;
        uint64_t decodeBytes = model->storedBytes();
        if (const lcw::TensorView* e = model->find("embed"); e && model->find("lm_head"))
            decodeBytes -= e->nbytes - e->rowBytes();
        // The configuration measured: the model itself or its overlay.
        const lcw::WeightSource* weights = model.get();
        std::unique_ptr<lcw::compress::CompressedModel> overlay;
        double compressSec = 0.0;
        if (!preset.empty() || !recipePath.empty()) {
            const lcw::compress::Recipe recipe = preset.empty()
                                                     ? lcw::compress::Recipe::load(recipePath)
                                                     : lcw::compress::findPreset(preset).recipe;
            lcw::NullProgress np;
            const double tc = now();
            overlay = lcw::compress::compress(*model, recipe, np).model;
            compressSec = now() - tc;
            if (!overlay) throw std::runtime_error("compress returned no overlay");
            weights = overlay.get();
            for (const std::string& n : overlay->replacedNames()) {
                const lcw::TensorView* t = model->find(n);
                const bool embedRow = n == "embed" && model->find("lm_head");
                if (t) decodeBytes -= embedRow ? t->rowBytes() : t->nbytes;
                const uint64_t stored = overlay->tensorSize(n).bytes();
                decodeBytes += embedRow && t ? stored / uint64_t(t->rows()) : stored;
            }
        }
        nlohmann::json base = {{"model", path},
                               {"arch", spec.arch},
                               {"format", spec.sourceFormat},
                               {"parameters", model->parameterCount()},
                               {"stored_bytes", model->storedBytes()},
                               {"decode_weight_bytes", decodeBytes},
                               {"exact_activations", exact},
                               {"configuration", !preset.empty()       ? preset
                                                 : !recipePath.empty() ? recipePath
                                                                       : std::string("model")},
                               {"threads", omp_get_max_threads()}};
        auto emit = [&](nlohmann::json j) {
            for (auto& [k, v] : base.items()) j[k] = v;
            std::printf("%s\n", j.dump().c_str());
            std::fflush(stdout);
        };
        emit({{"metric", "load_seconds"}, {"value", loadSec}});
        if (overlay) {
            emit({{"metric", "compress_seconds"}, {"value", compressSec}});
            emit({{"metric", "bits_per_weight"}, {"value", overlay->totalSize().bitsPerWeight()}});
        }

        nPrefill = std::min<int64_t>(nPrefill, std::max<int64_t>(1, spec.maxSeq - nDecode - 1));
        lcw::SessionOptions so;
        so.contextLength = nPrefill + nDecode + 1;
        if (exact) setExactActivations(so);
        so.device = device;
        lcw::Session session(*weights, so);
        std::vector<int32_t> prompt(static_cast<size_t>(nPrefill));
        for (int64_t i = 0; i < nPrefill; ++i)
            prompt[size_t(i)] = int32_t((i * 7919 + 13) % spec.vocab);
        std::vector<float> logits;
        auto decode = [&](int32_t tok, int64_t n) {
            for (int64_t i = 0; i < n; ++i) {
                session.forward(std::span<const int32_t>(&tok, 1), logits, false);
                tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
            }
        };
        const double tw = now();
        decode(prompt.back(), std::min(warmup, so.contextLength));
        const double warmSec = now() - tw;
        std::vector<double> prefillTps, decodeTps;
        for (int r = 0; r < reps; ++r) {
            session.reset();
            double a = now();
            session.forward(prompt, logits, false);
            prefillTps.push_back(double(nPrefill) / (now() - a));
            a = now();
            decode(prompt.back(), nDecode);
            decodeTps.push_back(double(nDecode) / (now() - a));
        }
        emit({{"metric", "warmup_seconds"}, {"value", warmSec}, {"tokens", warmup}});
        if (!device.empty())
            emit({{"metric", "device"},
                  {"id", session.device().id},
                  {"name", session.device().name},
                  {"note", session.deviceNote()},
                  {"resident_forwards", session.deviceForwards()},
                  {"resident_note", session.residentNote()},
                  {"device_products", session.deviceProducts()},
                  {"device_memory_bytes", session.deviceMemoryBytes()}});
        emit({{"metric", "prefill_tokens_per_second"},
              {"value", median(prefillTps)},
              {"best", *std::max_element(prefillTps.begin(), prefillTps.end())},
              {"runs", prefillTps},
              {"tokens", nPrefill}});
        emit({{"metric", "decode_tokens_per_second"},
              {"value", median(decodeTps)},
              {"best", *std::max_element(decodeTps.begin(), decodeTps.end())},
              {"runs", decodeTps},
              {"tokens", nDecode}});
        const double peak = double(lcw::peakRssBytes());
        emit({{"metric", "peak_rss_bytes"},
              {"value", peak},
              {"ratio_to_f32_size", peak / f32Bytes},
              {"ratio_to_stored_size", peak / double(model->storedBytes())}});
        if (overlay)
            emit({{"metric", "overlay_resident_bytes"},
                  {"value", overlay->residentBytes()},
                  {"stored_bytes", overlay->totalSize().bytes()}});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
