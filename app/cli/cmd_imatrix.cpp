// lcw-cli imatrix: llama.cpp importance matrices (llama-imatrix's collection and .dat format),
// and --show to list a file's entries.
#include "args.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/compress/imatrix.h"
#include "core/model/model.h"
#include "core/stats/activation_stats.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;

// Mean and max of what the quantiser gets (the stored values / ncall: mean x^2 per column).
std::pair<double, double> meanMax(const compress::ImatrixEntry& e) {
    const double nc = e.ncall > 0 ? double(e.ncall) : 1.0;
    double sum = 0, mx = 0;
    for (float v : e.values) {
        sum += double(v) / nc;
        mx = std::max(mx, double(v) / nc);
    }
    return {e.values.empty() ? 0.0 : sum / double(e.values.size()), mx};
}

int showImatrix(const Args& a) {
    const std::string path = *a.get("--show");
    const compress::Imatrix m = compress::readImatrix(path);
    std::unique_ptr<Model> model;
    if (!a.positionals().empty()) {
        LoadOptions lo;
        lo.tokenizerPath = a.getOr("--tokenizer", "");
        model = Model::load(a.positionals()[0], lo);
        compress::checkImatrix(m, *model);
    }
    if (a.flag("--json")) {
        json j;
        j["file"] = path;
        j["dataset"] = m.dataset;
        j["chunks"] = m.chunks;
        if (model) j["matches_model"] = model->path();
        json entries = json::array();
        for (const auto& e : m.entries) {
            const auto [mean, mx] = meanMax(e);
            entries.push_back({{"name", e.name},
                               {"ncall", e.ncall},
                               {"nval", e.values.size()},
                               {"mean", mean},
                               {"max", mx}});
        }
        j["entries"] = std::move(entries);
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("imatrix:  %s\n", path.c_str());
    std::printf("dataset:  %s (%d chunks)\n", m.dataset.empty() ? "-" : m.dataset.c_str(),
                m.chunks);
    if (model) std::printf("model:    %s (every entry matches)\n", model->path().c_str());
    std::printf("%zu entries; mean and max are over columns of sum(x^2)/tokens\n\n",
                m.entries.size());
    std::printf("%-36s %6s %7s %12s %12s\n", "tensor", "ncall", "nval", "mean", "max");
    for (const auto& e : m.entries) {
        const auto [mean, mx] = meanMax(e);
        std::printf("%-36s %6d %7zu %12.5g %12.5g\n", e.name.c_str(), e.ncall, e.values.size(),
                    mean, mx);
    }
    return 0;
}

} // namespace

int cmdImatrix(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--calib", "--samples", "--seq-len", "--out", "--show"},
           {"--quiet", "--json", "--process-output"});
    applyThreads(a);
    if (a.has("--show")) {
        if (a.has("--out") || a.has("--calib") || a.has("--samples") || a.has("--seq-len"))
            throw UsageError{"--show FILE lists an imatrix; it takes no --out/--calib/--samples/"
                             "--seq-len"};
        return showImatrix(a);
    }
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out FILE is required (or --show FILE to list one)"};
    const long long samples = a.getInt("--samples", 0);
    const long long seqLen = a.getInt("--seq-len", 512);
    if (samples < 0) throw UsageError{"--samples must be >= 0 (0: every chunk the text holds)"};
    if (seqLen < 2) throw UsageError{"--seq-len must be >= 2"};

    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    auto model =
        Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"), lo);
    const std::string calib = a.getOr("--calib", stats::builtinCalibrationPath());
    const compress::CalibrationSet cal =
        compress::imatrixCalibration(*model, calib, seqLen, samples);

    compress::ImatrixOptions io;
    io.processOutput = a.flag("--process-output");
    io.dataset = calib;
    if (!a.flag("--quiet"))
        std::fprintf(stderr, "imatrix: %zu chunks of %lld tokens from %s\n", cal.samples.size(),
                     (long long)cal.seqLen(), calib.c_str());
    TerminalProgress progress("imatrix", !a.flag("--quiet"));
    const compress::ImatrixResult r = compress::computeImatrix(*model, cal, io, progress);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled (nothing written)\n");
        return 130;
    }
    if (r.imatrix.entries.empty())
        throw Error("imatrix: no linear saw enough tokens (llama.cpp collects products of 16 "
                    "tokens or more; use a longer --seq-len)");
    for (const auto& p : r.partial)
        std::fprintf(stderr,
                     "warning: '%s' left out: some experts saw no calibration token (as "
                     "llama-imatrix does)\n",
                     p.c_str());
    compress::writeImatrix(r.imatrix, *out);

    if (a.flag("--json")) {
        json j;
        j["file"] = *out;
        j["model"] = model->path();
        j["dataset"] = calib;
        j["tensors"] = r.imatrix.entries.size();
        j["chunks"] = r.chunks;
        j["seq_len"] = cal.seqLen();
        j["tokens"] = r.tokens;
        j["seconds"] = r.seconds;
        j["tokens_per_second"] = r.seconds > 0 ? double(r.tokens) / r.seconds : 0.0;
        j["partial"] = r.partial;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("wrote %s: %zu tensors, %lld chunks x %lld tokens (%lld tokens) in %.2f s\n",
                out->c_str(), r.imatrix.entries.size(), (long long)r.chunks,
                (long long)cal.seqLen(), (long long)r.tokens, r.seconds);
    return 0;
}

} // namespace lcw::cli
