// Runtime benchmark: load time, prefill and decode tokens/s, peak RSS. Prints one JSON line per
// measurement so scripts can collect them.
//   bench_runtime MODEL [--prefill N] [--decode N] [--threads T] [--reps R]
#include "core/model/model.h"
#include "core/runtime/session.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

long statusKb(const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + std::strlen(key));
    return -1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(
            stderr,
            "usage: bench_runtime MODEL [--prefill N] [--decode N] [--threads T] [--reps R]\n");
        return 2;
    }
    std::string path = argv[1];
    int64_t nPrefill = 128, nDecode = 64;
    int threads = 0, reps = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--prefill"))
            nPrefill = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--decode"))
            nDecode = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--threads"))
            threads = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--reps"))
            reps = std::atoi(argv[i + 1]);
    }
    if (threads > 0) omp_set_num_threads(threads);
    try {
        const double t0 = now();
        auto model = lcw::Model::load(path);
        const double loadSec = now() - t0;
        const auto& spec = model->spec();
        const double f32Bytes = double(model->parameterCount()) * 4.0;
        nlohmann::json base = {{"model", path},
                               {"arch", spec.arch},
                               {"format", spec.sourceFormat},
                               {"parameters", model->parameterCount()},
                               {"stored_bytes", model->storedBytes()},
                               {"threads", omp_get_max_threads()}};
        auto emit = [&](nlohmann::json j) {
            for (auto& [k, v] : base.items()) j[k] = v;
            std::printf("%s\n", j.dump().c_str());
            std::fflush(stdout);
        };
        emit({{"metric", "load_seconds"}, {"value", loadSec}});

        nPrefill = std::min<int64_t>(nPrefill, std::max<int64_t>(1, spec.maxSeq - nDecode - 1));
        lcw::SessionOptions so;
        so.contextLength = nPrefill + nDecode + 1;
        lcw::Session session(*model, so);
        std::vector<int32_t> prompt(static_cast<size_t>(nPrefill));
        for (int64_t i = 0; i < nPrefill; ++i)
            prompt[size_t(i)] = int32_t((i * 7919 + 13) % spec.vocab);
        std::vector<float> logits;
        double bestPrefill = 1e30, bestDecode = 1e30;
        for (int r = 0; r < reps; ++r) {
            session.reset();
            double a = now();
            session.forward(prompt, logits, false);
            bestPrefill = std::min(bestPrefill, now() - a);
            a = now();
            int32_t tok = prompt.back();
            for (int64_t i = 0; i < nDecode; ++i) {
                session.forward(std::span<const int32_t>(&tok, 1), logits, false);
                tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
            }
            bestDecode = std::min(bestDecode, now() - a);
        }
        emit({{"metric", "prefill_tokens_per_second"},
              {"value", double(nPrefill) / bestPrefill},
              {"tokens", nPrefill}});
        emit({{"metric", "decode_tokens_per_second"},
              {"value", double(nDecode) / bestDecode},
              {"tokens", nDecode}});
        const long hwm = statusKb("VmHWM:");
        emit({{"metric", "peak_rss_bytes"},
              {"value", double(hwm) * 1024.0},
              {"ratio_to_f32_size", double(hwm) * 1024.0 / f32Bytes}});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
