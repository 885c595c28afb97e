// lcw-cli study: the Qllm-Eval grid on the user's model, written as one report.
#include "commands.h"

#include "args.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/calibration.h"
#include "core/eval/study.h"
#include "core/eval/study_report.h"
#include "core/model/model.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"
#include "core/version.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace lcw::cli {

namespace {

using json = nlohmann::json;

std::vector<std::string> splitComma(const std::string& v) {
    std::vector<std::string> out;
    size_t b = 0;
    while (b <= v.size()) {
        const size_t e = std::min(v.find(',', b), v.size());
        if (e > b) out.push_back(v.substr(b, e - b));
        b = e + 1;
    }
    return out;
}

study::GridOptions gridOptions(const Args& a) {
    study::GridOptions g;
    try {
        if (auto v = a.get("--groups")) {
            g.groups.clear();
            for (const auto& s : splitComma(*v)) g.groups.push_back(study::parseGroup(s));
        }
        if (auto v = a.get("--methods")) g.methods = splitComma(*v);
    } catch (const ArgumentError& e) {
        throw UsageError{e.what()};
    }
    g.groupSize = a.getInt("--group-size", 128);
    if (g.groupSize < 8) throw UsageError{"--group-size must be at least 8"};
    g.omniquantEpochs = int(a.getInt("--omniquant-epochs", 20));
    if (g.omniquantEpochs < 1 || g.omniquantEpochs > 1000)
        throw UsageError{"--omniquant-epochs must be in 1..1000"};
    return g;
}

/// The calibration set: --calib FILE, else the bundled text; 16 windows of 256 tokens by
/// default (the OmniQuant cells dominate the study's time and scale with it).
std::unique_ptr<compress::CalibrationSet> studyCalibration(const Model& model, const Args& a,
                                                           json& settings) {
    if (a.flag("--no-calib")) {
        settings["calibration"] = nullptr;
        return nullptr;
    }
    compress::CalibrationOptions co;
    co.samples = a.getInt("--samples", 16);
    co.seqLen = a.getInt("--seq-len", 256);
    if (co.samples < 1) throw UsageError{"--samples must be >= 1"};
    if (co.seqLen < 2) throw UsageError{"--seq-len must be >= 2"};
    const std::string path = a.getOr("--calib", stats::builtinCalibrationPath());
    auto cal =
        std::make_unique<compress::CalibrationSet>(compress::loadCalibration(model, path, co));
    settings["calibration"] = {{"file", path},
                               {"samples", cal->samples.size()},
                               {"seq_len", cal->samples.empty() ? 0 : cal->samples[0].size()}};
    return cal;
}

std::vector<PreparedTask> studyTasks(const Args& a, const Tokenizer& tk, json& settings) {
    std::vector<PreparedTask> out;
    if (!a.has("--tasks")) return out;
    std::vector<TaskKind> kinds;
    try {
        kinds = parseTaskList(*a.get("--tasks"));
    } catch (const ArgumentError& e) {
        throw UsageError{std::string("--tasks: ") + e.what()};
    }
    const long long limit = a.getInt("--limit", 200);
    if (limit < 0) throw UsageError{"--limit must be >= 0"};
    const char* sharedEnv = std::getenv("LCW_SHARED_DIR");
    const std::string dir = a.getOr(
        "--tasks-dir", (std::filesystem::path(sharedEnv && *sharedEnv ? sharedEnv : "../shared") /
                        "data" / "tasks")
                           .string());
    json names = json::array();
    for (TaskKind k : kinds) {
        const Task t = loadTask(k, dir);
        out.push_back(prepareTask(
            t, [&](const std::string& s, bool bos) { return tk.encode(s, bos); }, limit, 1234));
        names.push_back(taskName(k));
    }
    settings["tasks"] = names;
    settings["tasks_limit"] = limit;
    return out;
}

void printSummary(const study::StudyResult& r, const study::ReportFiles& f) {
    std::printf("unquantised PPL %.4f ± %.4f (ctx %lld, %lld chunks)\n", r.baselinePpl,
                r.baselinePplError, (long long)r.ctx, (long long)r.chunks);
    std::printf("%-3s %-6s %-12s %8s %10s %10s %9s\n", "", "setting", "method", "bits/w", "PPL",
                "KLD", "same-top");
    for (const study::Row& x : r.rows) {
        if (!x.ok()) {
            std::printf("%-3s %-6s %-12s %s\n", study::groupName(x.group), x.setting.c_str(),
                        x.method.c_str(), x.status.c_str());
            continue;
        }
        std::printf("%-3s %-6s %-12s %8.3f %10.4f %10.5f %8.1f%%\n", study::groupName(x.group),
                    x.setting.c_str(), x.method.c_str(), x.bitsPerWeight, x.ppl, x.kld,
                    x.sameTop * 100);
    }
    std::printf("\nconclusions:\n");
    for (const auto& c : r.conclusions) std::printf("  - %s\n", c.text.c_str());
    std::printf("\nreport: %s (%zu plots), %s, %s; %.0f s\n", f.html.c_str(), f.plots.size(),
                f.tsv.c_str(), f.json.c_str(), r.seconds);
}

} // namespace

int cmdStudy(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--text", "--ctx", "--chunks", "--calib", "--samples",
            "--seq-len", "--tasks", "--limit", "--tasks-dir", "--groups", "--methods",
            "--group-size", "--omniquant-epochs", "--batch", "--out"},
           {"--quiet", "--json", "--no-calib", "--exact-activations"});
    applyThreads(a);
    const bool quiet = a.flag("--quiet");
    const std::string out = a.getOr("--out", "");
    if (out.empty()) throw UsageError{"--out DIR is required (the report folder)"};
    const study::GridOptions go = gridOptions(a);

    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    auto model =
        Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"), lo);
    const Tokenizer& tk = model->tokenizer();
    const std::vector<study::Cell> cells = study::grid(go, model.get());
    if (cells.empty()) throw UsageError{"--groups/--methods select no configuration"};

    study::StudyInputs in;
    json settings;
    const std::string textPath = a.getOr("--text", stats::builtinCalibrationPath());
    in.tokens = tk.encode(readTextFile(textPath), true);
    in.po.ctx = a.getInt("--ctx", 256);
    if (in.po.ctx < 4) throw UsageError{"--ctx must be at least 4"};
    in.po.batch = in.po.ctx;
    in.po.bosId = tk.bosId();
    in.po.maxChunks = a.getInt("--chunks", 0);
    if (in.po.maxChunks < 0) throw UsageError{"--chunks must be >= 0"};
    in.po.exactActivations = a.flag("--exact-activations");
    in.batch = int(a.getInt("--batch", 4));
    if (in.batch < 1) throw UsageError{"--batch must be >= 1"};
    in.taskCtx = std::min<int64_t>(model->spec().maxSeq > 0 ? model->spec().maxSeq : 2048, 2048);
    in.tasks = studyTasks(a, tk, settings);
    const auto cal = studyCalibration(*model, a, settings);
    in.calibration = cal.get();
    settings["text_file"] = textPath;
    settings["ctx"] = in.po.ctx;
    settings["chunks_limit"] = in.po.maxChunks;
    const study::GridOptions fitted = study::fitToModel(go, *model);
    settings["group_size"] = fitted.groupSize;
    settings["kv_group_size"] = fitted.kvGroupSize;
    settings["kivi_group_size"] = fitted.kiviGroupSize;
    settings["group_size_requested"] = go.groupSize;
    settings["omniquant_epochs"] = go.omniquantEpochs;
    settings["threads"] = omp_get_max_threads();
    settings["lcw_version"] = version();

    TerminalProgress progress("study", !quiet);
    study::StudyResult r = study::run(*model, cells, in, progress);
    progress.finish();
    r.settings = settings;
    const study::ReportFiles f = study::writeReport(r, out);
    if (a.flag("--json")) {
        json j = study::toJson(r);
        j["report"] = {{"html", f.html}, {"tsv", f.tsv}, {"json", f.json}, {"plots", f.plots}};
        std::printf("%s\n", j.dump(2).c_str());
    } else {
        printSummary(r, f);
    }
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled (the report holds the rows done so far)\n");
        return 130;
    }
    return 0;
}

} // namespace lcw::cli
