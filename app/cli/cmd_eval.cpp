// lcw-cli eval: baseline and configurations side by side (perplexity and divergence from the
// baseline in one pass over the text).
#include "commands.h"

#include "args.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/divergence.h"
#include "core/model/model.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;

/// Everything that makes one configuration column: its weights and what keeps them alive.
struct Column {
    std::string name;
    std::string kind; ///< "recipe", "preset", "overlay", "model"
    std::string source;
    std::unique_ptr<Model> model;                       ///< --compare-model
    std::unique_ptr<compress::CompressedModel> overlay; ///< --recipe / --preset / --overlay
    double bitsPerWeight = 0;                           ///< 0: unknown
    const WeightSource* weights() const {
        return overlay ? static_cast<const WeightSource*>(overlay.get()) : model.get();
    }
};

double modelBitsPerWeight(const Model& m) {
    int64_t params = 0;
    for (const auto& t : m.tensors()) params += t.numel();
    return params > 0 ? double(m.storedBytes()) * 8.0 / double(params) : 0.0;
}

std::unique_ptr<compress::CompressedModel> compressWith(const Model& model,
                                                        const compress::Recipe& recipe, bool quiet,
                                                        const compress::CalibrationSet* cal) {
    TerminalProgress progress("compress " + recipe.name, !quiet);
    compress::CompressOptions co;
    co.calibration = cal;
    compress::CompressResult r = compress::compress(model, recipe, progress, co);
    progress.finish();
    if (r.status == Status::Cancelled) throw Error("cancelled while applying the recipe");
    for (const auto& w : r.plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    return std::move(r.model);
}

json distributionJson(const Distribution& d, double scale) {
    return {{"mean", d.mean * scale},  {"se", d.meanError * scale}, {"median", d.median * scale},
            {"p99_9", d.p999 * scale}, {"p99", d.p99 * scale},      {"p95", d.p95 * scale},
            {"p90", d.p90 * scale},    {"p10", d.p10 * scale},      {"p5", d.p5 * scale},
            {"p1", d.p1 * scale},      {"p0_1", d.p01 * scale},     {"min", d.min * scale},
            {"max", d.max * scale}};
}

json numOrNull(double v) {
    return v > 0 ? json(v) : json(nullptr);
}

std::string fmt(const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

std::string fmt2(const char* f, double a, double b) {
    char buf[96];
    std::snprintf(buf, sizeof buf, f, a, b);
    return buf;
}

} // namespace

int cmdEval(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--text", "--ctx", "--batch", "--chunks", "--recipe",
            "--preset", "--overlay", "--compare-model", "--calib", "--samples", "--seq-len"},
           {"--quiet", "--json"});
    const long long threads = a.getInt("--threads", 0);
    if (threads < 0) throw UsageError{"--threads must be >= 0"};
    if (threads > 0) omp_set_num_threads(int(threads));
    const bool quiet = a.flag("--quiet");
    // Without --text: the bundled evaluation text (the same file calibration defaults to).
    const std::string textPath = a.getOr("--text", stats::builtinCalibrationPath());
    PerplexityOptions po;
    po.ctx = a.getInt("--ctx", 512);
    if (po.ctx < 4) throw UsageError{"--ctx must be at least 4"};
    po.batch = a.getInt("--batch", po.ctx);
    if (po.batch <= 0) throw UsageError{"--batch must be > 0"};
    po.maxChunks = a.getInt("--chunks", 0);
    if (po.maxChunks < 0) throw UsageError{"--chunks must be >= 0"};

    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    const std::string modelPath =
        a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)");
    auto model = Model::load(modelPath, lo);
    const Tokenizer& tk = model->tokenizer();
    po.bosId = tk.bosId();
    const auto tokens = tk.encode(readTextFile(textPath), true);

    const auto cal = calibrationFromArgs(*model, a);
    std::vector<Column> cols;
    for (const auto& path : a.getAll("--recipe")) {
        Column c;
        const compress::Recipe recipe = compress::Recipe::load(path);
        c.name = recipe.name.empty() ? std::filesystem::path(path).stem().string() : recipe.name;
        c.kind = "recipe";
        c.source = path;
        c.overlay = compressWith(*model, recipe, quiet, cal.get());
        cols.push_back(std::move(c));
    }
    for (const auto& name : a.getAll("--preset")) {
        Column c;
        c.name = name;
        c.kind = "preset";
        c.source = name;
        c.overlay = compressWith(*model, compress::findPreset(name).recipe, quiet, cal.get());
        cols.push_back(std::move(c));
    }
    for (const auto& dir : a.getAll("--overlay")) {
        Column c;
        c.name = std::filesystem::path(dir).filename().string();
        c.kind = "overlay";
        c.source = dir;
        c.overlay = compress::CompressedModel::load(dir, *model);
        cols.push_back(std::move(c));
    }
    for (const auto& path : a.getAll("--compare-model")) {
        Column c;
        c.name = std::filesystem::path(path).filename().string();
        c.kind = "model";
        c.source = path;
        LoadOptions olo;
        olo.tokenizerPath = lo.tokenizerPath;
        c.model = Model::load(path, olo);
        if (c.model->spec().vocab != model->spec().vocab)
            throw Error("--compare-model " + path + " has a vocabulary of " +
                        std::to_string(c.model->spec().vocab) + " tokens, " + modelPath + " " +
                        std::to_string(model->spec().vocab) + "; they cannot be compared");
        c.bitsPerWeight = modelBitsPerWeight(*c.model);
        cols.push_back(std::move(c));
    }
    for (auto& c : cols)
        if (c.overlay) c.bitsPerWeight = c.overlay->totalSize().bitsPerWeight();

    std::vector<DivergenceConfig> configs;
    for (const auto& c : cols) configs.push_back({c.name, c.weights()});
    TerminalProgress progress("eval", !quiet);
    const DivergenceResult r = compareToBaseline(*model, configs, tokens, po, progress);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    const double baseBpw = modelBitsPerWeight(*model);

    if (a.flag("--json")) {
        json cj = json::array();
        json cs = json::array();
        for (size_t k = 0; k < cols.size(); ++k) {
            const DivergenceStats& s = r.configs[k];
            cj.push_back({{"name", s.name},
                          {"kind", cols[k].kind},
                          {"source", cols[k].source},
                          {"bits_per_weight", numOrNull(cols[k].bitsPerWeight)},
                          {"scored_tokens", s.scoredTokens},
                          {"ppl", s.ppl},
                          {"ppl_se", s.pplError},
                          {"ppl_base", s.baselinePpl},
                          {"ppl_ratio", s.pplRatio},
                          {"mean_ln_ppl_ratio", s.meanLnRatio},
                          {"mean_ln_ppl_ratio_se", s.meanLnRatioError},
                          {"ln_prob_correlation", s.lnProbCorrelation},
                          {"kld", distributionJson(s.kld, 1.0)},
                          {"delta_p_percent", distributionJson(s.deltaP, 100.0)},
                          {"rms_delta_p_percent", s.rmsDeltaP * 100},
                          {"rms_delta_p_percent_se", s.rmsDeltaPError * 100},
                          {"same_top_percent", s.sameTop * 100},
                          {"same_top_percent_se", s.sameTopError * 100},
                          {"seconds", s.seconds}});
            cs.push_back(s.seconds);
        }
        json j = {{"model", model->path()},
                  {"text_file", textPath},
                  {"mode", "llama.cpp (non-overlapping chunks, second half scored)"},
                  {"ctx", r.ctx},
                  {"tokens", tokens.size()},
                  {"chunks", r.chunks},
                  {"scored_tokens", r.scoredTokens},
                  {"baseline",
                   {{"name", "baseline"},
                    {"source", model->path()},
                    {"bits_per_weight", numOrNull(baseBpw)},
                    {"ppl", r.baselinePpl},
                    {"ppl_se", r.baselinePplError},
                    {"seconds", r.baselineSeconds}}},
                  {"configs", cj},
                  {"timings",
                   {{"baseline_seconds", r.baselineSeconds},
                    {"config_seconds", cs},
                    {"total_seconds", r.seconds},
                    {"threads", omp_get_max_threads()}}}};
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }

    std::printf("model:   %s\ntext:    %s (%zu tokens)\nmode:    llama.cpp chunks, ctx %lld, "
                "%lld chunks, %lld scored tokens\n\n",
                model->path().c_str(), textPath.c_str(), tokens.size(), (long long)r.ctx,
                (long long)r.chunks, (long long)r.scoredTokens);
    // Rows are metrics, columns baseline then each configuration.
    std::vector<std::string> header = {"", "baseline"};
    for (const auto& s : r.configs) header.push_back(s.name);
    std::vector<std::vector<std::string>> rows;
    auto row = [&](const std::string& label, const std::string& base, auto&& perConfig) {
        std::vector<std::string> cells = {label, base};
        for (const auto& s : r.configs) cells.push_back(perConfig(s));
        rows.push_back(std::move(cells));
    };
    const std::string dash = "-";
    row("PPL", fmt2("%.4f ± %.4f", r.baselinePpl, r.baselinePplError),
        [](const DivergenceStats& s) { return fmt2("%.4f ± %.4f", s.ppl, s.pplError); });
    row("PPL ratio", dash, [](const DivergenceStats& s) { return fmt("%.5f", s.pplRatio); });
    row("mean ln(PPL ratio)", dash, [](const DivergenceStats& s) {
        return fmt2("%.5f ± %.5f", s.meanLnRatio, s.meanLnRatioError);
    });
    row("ln-prob correlation", dash,
        [](const DivergenceStats& s) { return fmt("%.4f %%", s.lnProbCorrelation * 100); });
    row("KLD mean", dash,
        [](const DivergenceStats& s) { return fmt2("%.6f ± %.6f", s.kld.mean, s.kld.meanError); });
    row("KLD median", dash, [](const DivergenceStats& s) { return fmt("%.6f", s.kld.median); });
    row("KLD 99%", dash, [](const DivergenceStats& s) { return fmt("%.6f", s.kld.p99); });
    row("KLD max", dash, [](const DivergenceStats& s) { return fmt("%.6f", s.kld.max); });
    row("same top", dash, [](const DivergenceStats& s) {
        return fmt2("%.3f ± %.3f %%", s.sameTop * 100, s.sameTopError * 100);
    });
    row("mean Δp", dash, [](const DivergenceStats& s) {
        return fmt2("%.3f ± %.3f %%", s.deltaP.mean * 100, s.deltaP.meanError * 100);
    });
    row("RMS Δp", dash, [](const DivergenceStats& s) {
        return fmt2("%.3f ± %.3f %%", s.rmsDeltaP * 100, s.rmsDeltaPError * 100);
    });
    {
        std::vector<std::string> cells = {"bits/weight", baseBpw > 0 ? fmt("%.3f", baseBpw) : dash};
        for (const auto& c : cols)
            cells.push_back(c.bitsPerWeight > 0 ? fmt("%.3f", c.bitsPerWeight) : dash);
        rows.push_back(std::move(cells));
    }
    row("seconds", fmt("%.2f", r.baselineSeconds),
        [](const DivergenceStats& s) { return fmt("%.2f", s.seconds); });

    // Display width counts UTF-8 code points (± and Δ are two bytes each).
    auto width = [](const std::string& s) {
        size_t w = 0;
        for (unsigned char ch : s)
            if ((ch & 0xC0) != 0x80) ++w;
        return w;
    };
    std::vector<size_t> w(header.size(), 0);
    for (size_t i = 0; i < header.size(); ++i) w[i] = width(header[i]);
    for (const auto& cells : rows)
        for (size_t i = 0; i < cells.size(); ++i) w[i] = std::max(w[i], width(cells[i]));
    auto printRow = [&](const std::vector<std::string>& cells) {
        for (size_t i = 0; i < cells.size(); ++i) {
            const size_t pad = w[i] - width(cells[i]);
            if (i == 0)
                std::printf("%s%*s", cells[i].c_str(), int(pad), "");
            else
                std::printf("  %*s%s", int(pad), "", cells[i].c_str());
        }
        std::printf("\n");
    };
    printRow(header);
    for (const auto& cells : rows) printRow(cells);
    std::printf("\ntime:    %.2f s in all (%d threads)\n", r.seconds, omp_get_max_threads());
    return 0;
}

} // namespace lcw::cli
