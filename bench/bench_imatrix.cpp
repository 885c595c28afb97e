// Importance-matrix collection against a plain forward over the same chunks (issue #13 asks for
// <= 1.2x). Prints one JSON line per measurement and one with the ratios.
//   bench_imatrix MODEL [--calib FILE] [--seq-len 512] [--samples 8] [--threads T] [--reps R]
// forward_last: Session::forwardFrom with the last token's logits (what computeImatrix runs);
// forward_all: every logit of the chunk (what llama-imatrix runs). Best of R repetitions each,
// interleaved so that load on a shared machine hits all three alike.
#include "core/compress/imatrix.h"
#include "core/model/model.h"
#include "core/runtime/session.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double loadAvg() {
    std::ifstream in("/proc/loadavg");
    double v = 0;
    in >> v;
    return v;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: bench_imatrix MODEL [--calib FILE] [--seq-len 512] "
                             "[--samples 8] [--threads T] [--reps R]\n");
        return 2;
    }
    const std::string path = argv[1];
    std::string calib;
    int64_t seqLen = 512, samples = 8;
    int threads = 0, reps = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--calib"))
            calib = argv[i + 1];
        else if (!std::strcmp(argv[i], "--seq-len"))
            seqLen = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--samples"))
            samples = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--threads"))
            threads = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--reps"))
            reps = std::atoi(argv[i + 1]);
    }
    if (threads > 0) omp_set_num_threads(threads);
    using json = nlohmann::ordered_json;
    try {
        auto model = lcw::Model::load(path);
        const auto cal = lcw::compress::imatrixCalibration(*model, calib, seqLen, samples);
        lcw::SessionOptions so;
        so.contextLength = cal.seqLen();
        so.batchSize = 512;
        auto forward = [&](bool all) {
            lcw::Session s(*model, so);
            std::vector<float> logits;
            const double t0 = now();
            for (const auto& c : cal.samples) {
                s.reset();
                s.forwardFrom(c, logits, all ? 0 : int64_t(c.size()) - 1);
            }
            return now() - t0;
        };
        auto collect = [&] {
            lcw::NullProgress np;
            const double t0 = now();
            const auto r = lcw::compress::computeImatrix(*model, cal, {}, np);
            return std::make_pair(now() - t0, r.imatrix.entries.size());
        };
        forward(false); // warm the pages and the thread pool
        const double inf = std::numeric_limits<double>::infinity();
        double last = inf, all = inf, imat = inf;
        size_t entries = 0;
        for (int r = 0; r < reps; ++r) {
            last = std::min(last, forward(false));
            const auto c = collect();
            imat = std::min(imat, c.first);
            entries = c.second;
            all = std::min(all, forward(true));
        }
        const double tokens = double(cal.tokens());
        const json base = {{"model", path},
                           {"chunks", cal.samples.size()},
                           {"seq_len", cal.seqLen()},
                           {"threads", threads > 0 ? threads : omp_get_max_threads()},
                           {"reps", reps}};
        for (const auto& [name, sec] :
             {std::pair{"forward_last", last}, std::pair{"forward_all", all},
              std::pair{"imatrix", imat}}) {
            json j = {{"metric", name}, {"seconds", sec}, {"tokens_per_second", tokens / sec}};
            j.update(base);
            std::printf("%s\n", j.dump().c_str());
        }
        json j = {{"metric", "imatrix_over_forward"},
                  {"value", imat / last},
                  {"imatrix_over_forward_all_logits", imat / all},
                  {"tensors", entries},
                  {"loadavg", loadAvg()}};
        j.update(base);
        std::printf("%s\n", j.dump().c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
