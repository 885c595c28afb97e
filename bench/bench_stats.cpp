// Statistics engine benchmark; prints JSON lines.
//   bench_stats [--weights MODEL] [--act MODEL] [--threads N] [--max-gb G] [--samples N]
//               [--seq-len L]
// 1. weight statistics throughput (GB of stored weights per second, per core) over the model's
//    2-D tensors (default: the synthetic 1.1B F32 model in /tmp/lcw-bench);
// 2. activation statistics cost: the same calibration tokens through a Session with and without
//    the ActivationStatsObserver (ratio = with / without; target ≤ 1.3).
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/stats/weight_stats.h"
#include "core/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

using namespace lcw;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

int main(int argc, char** argv) {
    std::string wmodel = "/tmp/lcw-bench/tinyllama-1.1b-f32";
    std::string amodel = "/tmp/lcw-bench/tinyllama-1.1b-f32";
    int threads = 0;
    double maxGb = 0;
    int64_t samples = 2, seqLen = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--weights")
            wmodel = v;
        else if (k == "--act")
            amodel = v;
        else if (k == "--threads")
            threads = std::stoi(v);
        else if (k == "--max-gb")
            maxGb = std::stod(v);
        else if (k == "--samples")
            samples = std::stoll(v);
        else if (k == "--seq-len")
            seqLen = std::stoll(v);
        else {
            std::fprintf(stderr, "unknown option %s\n", k.c_str());
            return 2;
        }
    }
    if (threads > 0) omp_set_num_threads(threads);
    const int nt = omp_get_max_threads();
    using json = nlohmann::ordered_json;

    if (!wmodel.empty() && wmodel != "none") {
        if (!std::filesystem::exists(wmodel)) {
            std::printf("%s\n",
                        json{{"bench", "weight_stats"}, {"skipped", "model not found: " + wmodel}}
                            .dump()
                            .c_str());
        } else {
            auto m = Model::load(wmodel);
            stats::WeightStatsOptions wo; // default preview w4g128a, 256 bins
            // Touch the pages first so the number is compute throughput, not disk reads.
            uint64_t bytes = 0, touched = 0;
            for (const TensorView& t : m->tensors()) {
                if (t.shape.size() != 2) continue;
                if (maxGb > 0 && double(touched) > maxGb * 1e9) break;
                volatile uint8_t sink = 0;
                for (uint64_t o = 0; o < t.nbytes; o += 4096) sink = sink ^ uint8_t(t.data[o]);
                touched += t.nbytes;
            }
            const auto t0 = Clock::now();
            int n = 0;
            for (const TensorView& t : m->tensors()) {
                if (t.shape.size() != 2) continue;
                if (maxGb > 0 && double(bytes) > maxGb * 1e9) break;
                auto s = stats::computeTensorStats(t, wo);
                bytes += t.nbytes;
                ++n;
            }
            const double sec = since(t0);
            std::printf("%s\n", json{{"bench", "weight_stats"},
                                     {"model", wmodel},
                                     {"tensors", n},
                                     {"gb", double(bytes) / 1e9},
                                     {"seconds", sec},
                                     {"threads", nt},
                                     {"gb_per_s", double(bytes) / 1e9 / sec},
                                     {"gb_per_s_per_core", double(bytes) / 1e9 / sec / nt},
                                     {"previews", "w4g128a"},
                                     {"target_gb_per_s_per_core", 1.0}}
                                    .dump()
                                    .c_str());
            std::fflush(stdout);
        }
    }

    if (!amodel.empty() && amodel != "none") {
        if (!std::filesystem::exists(amodel)) {
            std::printf("%s\n", json{{"bench", "activation_stats"},
                                     {"skipped", "model not found: " + amodel}}
                                    .dump()
                                    .c_str());
            return 0;
        }
        auto m = Model::load(amodel);
        std::ifstream in(stats::builtinCalibrationPath());
        std::stringstream ss;
        ss << in.rdbuf();
        const auto ids = m->tokenizer().encode(ss.str(), true);
        SessionOptions so;
        so.contextLength = seqLen;
        so.batchSize = seqLen;
        std::vector<float> logits;
        auto runAll = [&](Observer* obs) {
            Session s(*m, so);
            if (obs) s.addObserver(obs);
            const auto t0 = Clock::now();
            for (int64_t i = 0; i < samples; ++i) {
                std::vector<int32_t> seq(ids.begin() + i * seqLen, ids.begin() + (i + 1) * seqLen);
                s.reset();
                s.forward(seq, logits, false);
            }
            return since(t0);
        };
        runAll(nullptr); // warm-up (page cache, allocations)
        double plain = 1e30, with = 1e30;
        for (int rep = 0; rep < 2; ++rep) {
            plain = std::min(plain, runAll(nullptr));
            stats::ActivationStatsObserver obs;
            const auto t0 = Clock::now();
            const double fw = runAll(&obs);
            auto res = obs.results(); // finishing is part of the cost
            (void)fw;
            with = std::min(with, since(t0));
        }
        std::printf("%s\n", json{{"bench", "activation_stats"},
                                 {"model", amodel},
                                 {"samples", samples},
                                 {"seq_len", seqLen},
                                 {"tokens", samples * seqLen},
                                 {"threads", nt},
                                 {"forward_seconds", plain},
                                 {"forward_with_stats_seconds", with},
                                 {"ratio", with / plain},
                                 {"target_ratio", 1.3}}
                                .dump()
                                .c_str());
    }
    return 0;
}
