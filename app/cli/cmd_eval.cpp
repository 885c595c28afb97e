// lcw-cli eval: baseline and configurations side by side (perplexity and divergence from the
// baseline in one pass over the text).
#include "commands.h"

#include "args.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/common/memory.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/config_source.h"
#include "core/eval/divergence.h"
#include "core/eval/results_store.h"
#include "core/eval/tasks.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/stats/fingerprint.h"
#include "core/tokenizer/tokenizer.h"
#include "core/version.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;

/// Everything that makes one configuration column: its weights and what keeps them alive.
using Column = ConfigSource;

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

namespace {

/// Drops a model's memory-mapped pages from the resident set (they stay in the page cache), so
/// that the next measurement counts only the pages the next configuration touches.
void releaseModelPages(const Model& m) {
    for (const TensorView& t : m.tensors()) MappedFile::releasePages(t.data, t.nbytes);
}

/// Greedy decode speed: prefill a short prompt from the text, then generate `n` tokens.
json decodeSpeed(const WeightSource& w, const std::vector<int32_t>& tokens, int64_t n, bool exact) {
    SessionOptions so;
    so.exactActivations = exact;
    const std::vector<int32_t> prompt(tokens.begin(),
                                      tokens.begin() + std::min<size_t>(tokens.size(), 16));
    so.contextLength = int64_t(prompt.size()) + n + 1;
    so.batchSize = so.contextLength;
    Session s(w, so);
    const GenerateResult g = s.generate(prompt, n, SamplingParams{});
    return {{"decode_tokens", g.generatedTokens},
            {"decode_tokens_per_second", g.decodeSeconds > 0
                                             ? json(double(g.generatedTokens) / g.decodeSeconds)
                                             : json(nullptr)},
            {"stopped_at_eos", g.stoppedAtEos}};
}

json taskJson(const TaskResult& t, const PreparedTask& p) {
    json j = {{"items", t.items},
              {"items_in_file", p.totalItems},
              {"acc", t.acc},
              {"acc_se", t.accError}};
    if (t.hasAccNorm) {
        j["acc_norm"] = t.accNorm;
        j["acc_norm_se"] = t.accNormError;
    }
    if (t.hasPpl) j["ppl"] = t.ppl;
    j["seconds"] = t.seconds;
    j["tokens_evaluated"] = t.tokensEvaluated;
    return j;
}

double num(const json& j, const char* key, double def = 0) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : def;
}

} // namespace

namespace {

/// The lines above the table: model, text, mode, activations, device, tasks and record.
void printEvalHeader(const json& j) {
    const std::string mode = j.value("mode", std::string("?"));
    std::printf("model:   %s\ntext:    %s (%lld tokens)\nmode:    %s, ctx %lld, %lld chunks, %lld "
                "scored tokens\n",
                j.value("model", std::string()).c_str(),
                j.value("text_file", std::string()).c_str(), (long long)num(j, "tokens"),
                mode.c_str(), (long long)num(j, "ctx"), (long long)num(j, "chunks"),
                (long long)num(j, "scored_tokens"));
    if (j.contains("activations") && j["activations"].is_string())
        std::printf("acts:    %s\n", j["activations"].get<std::string>() == "exact-f32"
                                         ? "exact-f32 (float32 activations in every product)"
                                         : "quantized-8bit (8-bit activation blocks where the "
                                           "weights are GGUF or lcw packed codes, bf16 "
                                           "activations for BF16 weights with AVX-512 BF16)");
    if (j.contains("device") && j["device"].is_object())
        std::printf("device:  %s (%s)\n", j["device"].value("name", std::string()).c_str(),
                    j["device"].value("id", std::string()).c_str());
    if (j.contains("settings") && j["settings"].contains("tasks") &&
        !j["settings"]["tasks"].empty()) {
        const json& st = j["settings"];
        std::printf(
            "tasks:   %s, %s (seed %llu)\n", st["tasks"].dump().c_str(),
            num(st, "limit") > 0
                ? ("--limit " + std::to_string((long long)num(st, "limit")) + " items each").c_str()
                : "all items",
            (unsigned long long)num(st, "seed"));
    }
    if (j.contains("id"))
        std::printf("record:  %s (%s)\n", j["id"].get<std::string>().c_str(),
                    j.value("timestamp", std::string()).c_str());
    std::printf("\n");
}

bool has(const json& c, const char* k) {
    return c.contains(k) && !c[k].is_null();
}

/// The side-by-side table: a label, then one cell per column (baseline first).
struct EvalTable {
    std::vector<const json*> cols;
    std::vector<std::string> header = {""};
    std::vector<std::vector<std::string>> rows;

    /// cell(column json, is baseline) -> text
    template <class Cell> void row(const std::string& label, Cell&& cell) {
        std::vector<std::string> cells = {label};
        for (size_t i = 0; i < cols.size(); ++i) cells.push_back(cell(*cols[i], i == 0));
        rows.push_back(std::move(cells));
    }
};

/// The rows that compare a configuration with the baseline (KLD, same top, Δp, ...).
void addDivergenceRows(EvalTable& t) {
    const std::string dash = "-";
    auto cfg = [&](const char* f, const char* key, double scale) {
        return [=](const json& c, bool base) {
            return base || !has(c, key) ? std::string("-") : fmt(f, num(c, key) * scale);
        };
    };
    auto cfg2 = [&](const char* f, const char* key, const char* se) {
        return [=](const json& c, bool base) {
            return base || !has(c, key) ? std::string("-") : fmt2(f, num(c, key), num(c, se));
        };
    };
    auto dist = [&](const char* f, const char* obj, const char* key) {
        return [=](const json& c, bool base) {
            return base || !has(c, obj) ? std::string("-") : fmt(f, num(c[obj], key));
        };
    };
    t.row("mean ln(PPL ratio)", cfg2("%.5f ± %.5f", "mean_ln_ppl_ratio", "mean_ln_ppl_ratio_se"));
    t.row("ln-prob correlation", cfg("%.4f %%", "ln_prob_correlation", 100));
    t.row("KLD mean", [&](const json& c, bool base) {
        return base || !has(c, "kld")
                   ? dash
                   : fmt2("%.6f ± %.6f", num(c["kld"], "mean"), num(c["kld"], "se"));
    });
    t.row("KLD median", dist("%.6f", "kld", "median"));
    t.row("KLD 99%", dist("%.6f", "kld", "p99"));
    t.row("KLD max", dist("%.6f", "kld", "max"));
    t.row("same top", cfg2("%.3f ± %.3f %%", "same_top_percent", "same_top_percent_se"));
    t.row("mean Δp", [&](const json& c, bool base) {
        return base || !has(c, "delta_p_percent")
                   ? dash
                   : fmt2("%.3f ± %.3f %%", num(c["delta_p_percent"], "mean"),
                          num(c["delta_p_percent"], "se"));
    });
    t.row("RMS Δp", cfg2("%.3f ± %.3f %%", "rms_delta_p_percent", "rms_delta_p_percent_se"));
}

/// Task rows, in the order of the baseline's tasks.
void addTaskRows(EvalTable& t, const json& baseline) {
    if (!baseline.contains("tasks")) return;
    for (const auto& [name, tj] : baseline["tasks"].items()) {
        auto taskCell = [name = name](const char* key, const char* se, double scale,
                                      const char* f) {
            return [=](const json& c, bool) {
                if (!c.contains("tasks") || !c["tasks"].contains(name) ||
                    !c["tasks"][name].contains(key))
                    return std::string("-");
                const json& tk = c["tasks"][name];
                return se ? fmt2(f, num(tk, key) * scale, num(tk, se) * scale)
                          : fmt(f, num(tk, key));
            };
        };
        t.row(name + " acc", taskCell("acc", "acc_se", 100, "%.2f ± %.2f %%"));
        if (tj.contains("acc_norm"))
            t.row(name + " acc_norm", taskCell("acc_norm", "acc_norm_se", 100, "%.2f ± %.2f %%"));
        if (tj.contains("ppl")) t.row(name + " ppl", taskCell("ppl", nullptr, 1, "%.3f"));
    }
}

/// Size, speed, memory and time of every column.
void addResourceRows(EvalTable& t) {
    const std::string dash = "-";
    t.row("bits/weight", [&](const json& c, bool) {
        return has(c, "bits_per_weight") ? fmt("%.3f", num(c, "bits_per_weight")) : dash;
    });
    t.row("size MB", [&](const json& c, bool) {
        return has(c, "model_bytes") ? fmt("%.3f", num(c, "model_bytes") / 1e6) : dash;
    });
    t.row("KV bytes/token", [&](const json& c, bool) {
        return has(c, "kv_cache_bytes_per_token") ? fmt("%.1f", num(c, "kv_cache_bytes_per_token"))
                                                  : dash;
    });
    t.row("MACs (zero-skip)",
          [&](const json& c, bool) { return c.contains("macs") ? macsText(c["macs"]) : dash; });
    t.row("prefill tok/s", [&](const json& c, bool) {
        return has(c, "prefill_tokens_per_second")
                   ? fmt("%.0f", num(c, "prefill_tokens_per_second"))
                   : dash;
    });
    t.row("decode tok/s", [&](const json& c, bool) {
        return c.contains("speed") && has(c["speed"], "decode_tokens_per_second")
                   ? fmt("%.0f", num(c["speed"], "decode_tokens_per_second"))
                   : dash;
    });
    t.row("peak RSS MB", [&](const json& c, bool) {
        return has(c, "peak_rss_bytes") && num(c, "peak_rss_bytes") > 0
                   ? fmt("%.1f", num(c, "peak_rss_bytes") / 1048576.0)
                   : dash;
    });
    t.row("seconds", [&](const json& c, bool) { return fmt("%.2f", num(c, "seconds")); });
}

/// Display width counts UTF-8 code points (± and Δ are two bytes each).
size_t cellWidth(const std::string& s) {
    size_t w = 0;
    for (unsigned char ch : s)
        if ((ch & 0xC0) != 0x80) ++w;
    return w;
}

/// The label column left-aligned, the others right-aligned, each as wide as its widest cell.
void printAligned(const EvalTable& t) {
    std::vector<size_t> w(t.header.size(), 0);
    for (size_t i = 0; i < t.header.size(); ++i) w[i] = cellWidth(t.header[i]);
    for (const auto& cells : t.rows)
        for (size_t i = 0; i < cells.size(); ++i) w[i] = std::max(w[i], cellWidth(cells[i]));
    auto printRow = [&](const std::vector<std::string>& cells) {
        for (size_t i = 0; i < cells.size(); ++i) {
            const size_t pad = w[i] - cellWidth(cells[i]);
            if (i == 0)
                std::printf("%s%*s", cells[i].c_str(), int(pad), "");
            else
                std::printf("  %*s%s", int(pad), "", cells[i].c_str());
        }
        std::printf("\n");
    };
    printRow(t.header);
    for (const auto& cells : t.rows) printRow(cells);
}

} // namespace

/// Prints the side-by-side table of an eval record (the --json object of `eval`).
void printEvalTable(const json& j) {
    printEvalHeader(j);
    EvalTable t;
    t.cols = {&j["baseline"]};
    for (const auto& c : j["configs"]) t.cols.push_back(&c);
    for (const json* c : t.cols) t.header.push_back(c->value("name", std::string("?")));
    t.row("PPL", [&](const json& c, bool) {
        return has(c, "ppl") ? fmt2("%.4f ± %.4f", num(c, "ppl"), num(c, "ppl_se"))
                             : std::string("-");
    });
    bool divergence = false;
    for (const auto& c : j["configs"]) divergence = divergence || c.contains("kld");
    if (!j["configs"].empty())
        t.row("PPL ratio", [&](const json& c, bool base) {
            return base || !has(c, "ppl_ratio") ? std::string("-")
                                                : fmt("%.5f", num(c, "ppl_ratio"));
        });
    if (divergence) addDivergenceRows(t);
    addTaskRows(t, j["baseline"]);
    addResourceRows(t);
    printAligned(t);
    if (j.contains("timings"))
        std::printf("\ntime:    %.2f s in all (%d threads)\n", num(j["timings"], "total_seconds"),
                    int(num(j["timings"], "threads")));
}

namespace {

/// lcw-cli eval's settings, checked.
struct EvalSettings {
    bool quiet = false;
    std::string textPath;
    PerplexityOptions po;
    std::string modeArg;
    std::vector<TaskKind> taskKinds;
    long long limit = 0, seed = 1234, speedTokens = 32;
    long long taskCtx = 0; ///< --task-ctx (0: the model's maximum, at most 2048)
    std::string tasksDir;
    bool record = true;
    std::string resultsPath;
};

void parsePerplexitySettings(const Args& a, EvalSettings& e) {
    PerplexityOptions& po = e.po;
    po.ctx = a.getInt("--ctx", 512);
    if (po.ctx < 4) throw UsageError{"--ctx must be at least 4"};
    po.batch = a.getInt("--batch", po.ctx);
    if (po.batch <= 0) throw UsageError{"--batch must be > 0"};
    po.maxChunks = a.getInt("--chunks", 0);
    if (po.maxChunks < 0) throw UsageError{"--chunks must be >= 0"};
    po.exactActivations = a.flag("--exact-activations");
    e.modeArg = a.getOr("--mode", "llamacpp");
    if (e.modeArg == "llamacpp")
        po.mode = PerplexityMode::LlamaCppChunks;
    else if (e.modeArg == "sliding")
        po.mode = PerplexityMode::SlidingWindow;
    else
        throw UsageError{"--mode must be llamacpp or sliding"};
    po.stride = a.getInt("--stride", po.ctx / 2);
    if (po.stride <= 0 || po.stride > po.ctx) throw UsageError{"--stride must be in 1..ctx"};
}

EvalSettings parseEvalSettings(const Args& a) {
    EvalSettings e;
    e.quiet = a.flag("--quiet");
    // Without --text: the bundled evaluation text (the same file calibration defaults to).
    e.textPath = a.getOr("--text", stats::builtinCalibrationPath());
    parsePerplexitySettings(a, e);
    if (auto t = a.get("--tasks")) {
        try {
            e.taskKinds = parseTaskList(*t);
        } catch (const ArgumentError& err) {
            throw UsageError{std::string("--tasks: ") + err.what()};
        }
    }
    e.limit = a.getInt("--limit", 0);
    if (e.limit < 0) throw UsageError{"--limit must be >= 0"};
    e.seed = a.getInt("--seed", 1234);
    if (e.seed < 0) throw UsageError{"--seed must be >= 0"};
    // Default: $LCW_SHARED_DIR/data/tasks, else ../shared/data/tasks (from the checkout's root).
    const char* sharedEnv = std::getenv("LCW_SHARED_DIR");
    e.tasksDir = a.getOr("--tasks-dir",
                         (std::filesystem::path(sharedEnv && *sharedEnv ? sharedEnv : "../shared") /
                          "data" / "tasks")
                             .string());
    e.taskCtx = a.getInt("--task-ctx", 0);
    if (e.taskCtx != 0 && e.taskCtx < 16) throw UsageError{"--task-ctx must be at least 16"};
    e.speedTokens = a.getInt("--speed-tokens", 32);
    if (e.speedTokens < 0) throw UsageError{"--speed-tokens must be >= 0"};
    e.record = !a.flag("--no-record");
    e.resultsPath = a.getOr("--results", defaultResultsPath());
    return e;
}

/// The baseline column, then one per configuration (--recipe, --preset, --overlay,
/// --compare-model).
std::vector<Column> evalColumns(const Model& model, const Args& a, bool quiet) {
    std::vector<Column> cols;
    Column b;
    b.name = "baseline";
    b.kind = "baseline";
    b.source = model.path();
    b.base = &model;
    b.bitsPerWeight = modelBitsPerWeight(model);
    b.bytes = model.storedBytes();
    cols.push_back(std::move(b));
    const auto cal = calibrationFromArgs(model, a);
    for (auto& c : loadConfigSources(model, a, quiet, cal.get(), false))
        cols.push_back(std::move(c));
    return cols;
}

/// What the evaluation measured, per column, and the perplexity pass's header.
struct EvalNumbers {
    std::vector<json> colJson;
    std::vector<double> colSeconds;
    json head;
};

/// llama.cpp chunks: perplexity and divergence from the baseline in one pass over the text.
/// False when cancelled.
bool divergencePass(const Model& model, const std::vector<Column>& cols,
                    const std::vector<int32_t>& tokens, const EvalSettings& e, EvalNumbers& out) {
    std::vector<DivergenceConfig> configs;
    for (size_t k = 1; k < cols.size(); ++k) configs.push_back({cols[k].name, cols[k].weights()});
    TerminalProgress progress("eval", !e.quiet);
    const DivergenceResult r = compareToBaseline(model, configs, tokens, e.po, progress);
    progress.finish();
    if (r.status == Status::Cancelled) return false;
    const double evalTokens = double(r.chunks) * double(r.ctx);
    out.head = {{"mode", "llama.cpp (non-overlapping chunks, second half scored)"},
                {"stride", nullptr},
                {"ctx", r.ctx},
                {"tokens", tokens.size()},
                {"chunks", r.chunks},
                {"scored_tokens", r.scoredTokens}};
    out.colJson[0] = {{"ppl", r.baselinePpl},
                      {"ppl_se", r.baselinePplError},
                      {"ppl_seconds", r.baselineSeconds},
                      {"prefill_tokens_per_second", r.baselineSeconds > 0
                                                        ? json(evalTokens / r.baselineSeconds)
                                                        : json(nullptr)},
                      {"macs", macsJson(r.baselineMacs, evalTokens)}};
    out.colSeconds[0] = r.baselineSeconds;
    for (size_t k = 0; k + 1 < cols.size(); ++k) {
        const DivergenceStats& s = r.configs[k];
        out.colJson[k + 1] = {{"scored_tokens", s.scoredTokens},
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
                              {"ppl_seconds", s.seconds},
                              {"prefill_tokens_per_second",
                               s.seconds > 0 ? json(evalTokens / s.seconds) : json(nullptr)},
                              {"macs", macsJson(s.macs, evalTokens)}};
        out.colSeconds[k + 1] = s.seconds;
    }
    return true;
}

/// Sliding window: perplexity per configuration (no divergence: llama.cpp's KLD is defined on
/// its chunks). False when cancelled.
bool slidingPass(const std::vector<Column>& cols, const std::vector<int32_t>& tokens,
                 const EvalSettings& e, EvalNumbers& out) {
    PerplexityResult r0;
    for (size_t k = 0; k < cols.size(); ++k) {
        TerminalProgress progress("perplexity " + cols[k].name, !e.quiet);
        const PerplexityResult r = computePerplexity(*cols[k].weights(), tokens, e.po, progress);
        progress.finish();
        if (r.status == Status::Cancelled) return false;
        if (k == 0) r0 = r;
        out.colJson[k] = {{"scored_tokens", r.scoredTokens},
                          {"ppl", r.ppl},
                          {"ppl_se", r.pplError},
                          {"ppl_seconds", r.seconds},
                          {"prefill_tokens_per_second", r.tokensPerSecond},
                          {"macs", macsJson(r.macs, double(r.tokensEvaluated))}};
        if (k > 0) out.colJson[k]["ppl_ratio"] = r.ppl / r0.ppl;
        out.colSeconds[k] = r.seconds;
    }
    out.head = {{"mode", "sliding window (HF), stride " + std::to_string(e.po.stride)},
                {"stride", e.po.stride},
                {"ctx", e.po.ctx},
                {"tokens", tokens.size()},
                {"chunks", r0.chunks},
                {"scored_tokens", r0.scoredTokens}};
    return true;
}

/// The context the tasks are scored with: --task-ctx, else the model's maximum (at most 2048).
int64_t taskContext(const Model& model, const EvalSettings& e) {
    if (e.taskCtx > 0) return e.taskCtx;
    return std::min<int64_t>(model.spec().maxSeq > 0 ? model.spec().maxSeq : 2048, 2048);
}

/// The passkey task from the evaluation text: haystacks of about 85 % of the task context (in
/// characters by the text's own characters per token), so that a prompt fits the context.
Task passkeyTask(const Model& model, const EvalSettings& e, const std::string& text,
                 size_t textTokens) {
    PasskeyOptions po;
    po.seed = uint64_t(e.seed);
    const double charsPerToken = double(text.size()) / double(std::max<size_t>(textTokens, 1));
    po.haystackChars = int64_t(0.85 * double(taskContext(model, e) - 40) * charsPerToken);
    return makePasskeyTask(text, e.textPath, po);
}

/// LAMBADA at extended context: each passage after filler from the evaluation text, filler +
/// passage about 85 % of the task context (in characters by the text's characters per token; a
/// longer item is cut from the left when scored).
Task lambadaLongTask(const Model& model, const EvalSettings& e, const std::string& text,
                     size_t textTokens) {
    LongContextOptions lo;
    lo.seed = uint64_t(e.seed);
    const double charsPerToken = double(text.size()) / double(std::max<size_t>(textTokens, 1));
    lo.contextChars = int64_t(0.85 * double(taskContext(model, e)) * charsPerToken);
    return makeLongContextLambada(loadTask(TaskKind::Lambada, e.tasksDir), text, e.textPath, lo);
}

/// The KV cache one context of the text takes with these weights (policies evict, quantised
/// layers store codes): bytes, bytes in f32, bytes per context token.
json kvMemoryJson(const WeightSource& w, const std::vector<int32_t>& tokens, int64_t ctx) {
    const KvMemory m = measureKvCache(w, tokens, ctx);
    return {{"kv_cache_bytes", m.bytes},
            {"kv_cache_bytes_f32", m.bytesF32},
            {"kv_cache_tokens", m.tokens},
            {"kv_cache_bytes_per_token", m.bytesPerToken()}};
}

/// Per configuration: tasks and decode speed, with the peak RSS around them. Before each column
/// the models' mapped pages leave the resident set, so the peak counts the pages this column
/// touches; the overlays of the other columns (resident all along) are subtracted. False when
/// cancelled.
bool tasksAndSpeedPass(const Model& model, const std::vector<Column>& cols,
                       const std::vector<PreparedTask>& prepared,
                       const std::vector<int32_t>& tokens, const EvalSettings& e,
                       EvalNumbers& out) {
    using Clock = std::chrono::steady_clock;
    const bool canResetRss = resetPeakRss();
    const int64_t taskCtx = taskContext(model, e);
    auto overlayBytes = [&](size_t k) -> uint64_t {
        return cols[k].overlay ? cols[k].overlay->residentBytes() : 0;
    };
    for (size_t k = 0; k < cols.size(); ++k) {
        const WeightSource& w = *cols[k].weights();
        if (canResetRss) {
            releaseModelPages(model);
            for (const Column& c : cols)
                if (c.model) releaseModelPages(*c.model);
            resetPeakRss();
        }
        const uint64_t rssBefore = currentRssBytes();
        if (!prepared.empty()) {
            json tj = json::object();
            ModelScorer scorer(w, taskCtx, 0, e.po.exactActivations);
            for (const PreparedTask& p : prepared) {
                TerminalProgress progress(cols[k].name + " " + taskName(p.kind), !e.quiet);
                const TaskResult tr = evaluateTask(p, scorer, progress);
                progress.finish();
                if (tr.status == Status::Cancelled) return false;
                tj[taskName(p.kind)] = taskJson(tr, p);
                out.colSeconds[k] += tr.seconds;
            }
            out.colJson[k]["tasks"] = tj;
        }
        if (e.speedTokens > 0) {
            const auto ts = Clock::now();
            out.colJson[k]["speed"] = decodeSpeed(w, tokens, e.speedTokens, e.po.exactActivations);
            out.colSeconds[k] += std::chrono::duration<double>(Clock::now() - ts).count();
        }
        uint64_t others = 0;
        for (size_t i = 0; i < cols.size(); ++i)
            if (i != k) others += overlayBytes(i);
        const uint64_t peak = peakRssBytes();
        out.colJson[k]["peak_rss_bytes"] =
            canResetRss && peak > 0 ? json(peak - std::min(peak, others)) : json(nullptr);
        out.colJson[k]["rss_before_bytes"] =
            canResetRss ? json(rssBefore - std::min(rssBefore, others)) : json(nullptr);
        if (cols[k].overlay) out.colJson[k]["overlay_resident_bytes"] = overlayBytes(k);
    }
    return true;
}

/// The record: settings, provenance, one object per column.
json evalRecord(const Model& model, const std::vector<Column>& cols, const EvalNumbers& nums,
                const std::vector<PreparedTask>& prepared, const std::string& text,
                const EvalSettings& e, double totalSeconds) {
    auto columnJson = [&](size_t k) {
        const Column& c = cols[k];
        json o = {{"name", c.name}, {"kind", c.kind}, {"source", c.source}};
        if (c.kind == "model") o["fingerprint"] = stats::modelFingerprint(*c.model);
        if (!c.recipe.is_null()) o["recipe"] = c.recipe;
        o["bits_per_weight"] = numOrNull(c.bitsPerWeight);
        o["model_bytes"] = c.bytes;
        for (auto& [key, v] : nums.colJson[k].items()) o[key] = v;
        o["seconds"] = nums.colSeconds[k];
        return o;
    };
    const PerplexityOptions& po = e.po;
    json taskNames = json::array();
    for (TaskKind t : e.taskKinds) taskNames.push_back(taskName(t));
    json j = {{"model", model.path()}, {"text_file", e.textPath}};
    for (auto& [key, v] : nums.head.items()) j[key] = v;
    j["baseline"] = columnJson(0);
    json cj = json::array(), cs = json::array();
    for (size_t k = 1; k < cols.size(); ++k) {
        cj.push_back(columnJson(k));
        cs.push_back(nums.colSeconds[k]);
    }
    j["configs"] = cj;
    j["activations"] = activationsPathName(po.exactActivations);
    j["device"] = deviceUsedJson(defaultDeviceInfo());
    j["timings"] = {{"baseline_seconds", nums.colSeconds[0]},
                    {"config_seconds", cs},
                    {"total_seconds", totalSeconds},
                    {"threads", omp_get_max_threads()}};
    j["settings"] = {
        {"ctx", po.ctx},
        {"mode", e.modeArg},
        {"stride", po.mode == PerplexityMode::SlidingWindow ? json(po.stride) : json(nullptr)},
        {"chunks_limit", po.maxChunks},
        {"tasks", taskNames},
        {"tasks_dir", e.taskKinds.empty() ? json(nullptr) : json(e.tasksDir)},
        {"limit", e.limit},
        {"seed", e.seed},
        {"task_ctx", taskContext(model, e)},
        {"speed_tokens", e.speedTokens},
        {"exact_activations", po.exactActivations},
        {"threads", omp_get_max_threads()}};
    j["model_fingerprint"] = stats::modelFingerprint(model);
    j["text_sha256"] = "sha256:" + stats::sha256Hex(text.data(), text.size());
    json files = json::object();
    for (const PreparedTask& p : prepared) files[taskName(p.kind)] = p.file;
    j["task_files"] = files;
    j["lcw_version"] = version();
    return j;
}

} // namespace

int cmdEval(const std::vector<std::string>& argv) {
    using Clock = std::chrono::steady_clock;
    const auto tStart = Clock::now();
    Args a(argv, {"--tokenizer", "--threads",        "--text",       "--ctx",     "--batch",
                  "--chunks",    "--recipe",         "--preset",     "--overlay", "--compare-model",
                  "--mode",      "--stride",         "--tasks",      "--limit",   "--seed",
                  "--tasks-dir", "--speed-tokens",   "--results",    "--calib",   "--samples",
                  "--seq-len",   "--calib-sampling", "--calib-seed", "--task-ctx"},
           {"--quiet", "--json", "--no-record", "--exact-activations"});
    applyThreads(a);
    EvalSettings e = parseEvalSettings(a);

    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    const std::string modelPath =
        a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)");
    auto model = Model::load(modelPath, lo);
    const Tokenizer& tk = model->tokenizer();
    e.po.bosId = tk.bosId();
    const std::string text = readTextFile(e.textPath);
    const auto tokens = tk.encode(text, true);

    // Task files are read (and their errors reported) before any long computation.
    std::vector<PreparedTask> prepared;
    for (TaskKind k : e.taskKinds) {
        const Task t = k == TaskKind::Passkey ? passkeyTask(*model, e, text, tokens.size())
                       : k == TaskKind::LambadaLong
                           ? lambadaLongTask(*model, e, text, tokens.size())
                           : loadTask(k, e.tasksDir);
        prepared.push_back(prepareTask(
            t, [&](const std::string& s, bool bos) { return tk.encode(s, bos); }, e.limit,
            uint64_t(e.seed)));
    }

    const std::vector<Column> cols = evalColumns(*model, a, e.quiet);
    EvalNumbers nums{std::vector<json>(cols.size(), json::object()),
                     std::vector<double>(cols.size(), 0.0), json()};
    const bool done =
        (e.po.mode == PerplexityMode::LlamaCppChunks ? divergencePass(*model, cols, tokens, e, nums)
                                                     : slidingPass(cols, tokens, e, nums)) &&
        tasksAndSpeedPass(*model, cols, prepared, tokens, e, nums);
    if (!done) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    for (size_t k = 0; k < cols.size(); ++k) {
        const json kv = kvMemoryJson(*cols[k].weights(), tokens, e.po.ctx);
        for (auto& [key, v] : kv.items()) nums.colJson[k][key] = v;
    }
    json j = evalRecord(*model, cols, nums, prepared, text, e,
                        std::chrono::duration<double>(Clock::now() - tStart).count());
    if (e.record) {
        j["id"] = newResultId();
        j["timestamp"] = utcTimestamp();
        j["results_file"] = e.resultsPath;
        appendResult(e.resultsPath, j);
    }

    if (a.flag("--json")) {
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    printEvalTable(j);
    if (e.record) std::printf("recorded in %s\n", e.resultsPath.c_str());
    return 0;
}

namespace {
/// "PATH: record ID has an unexpected shape (...)" for a record `results list` cannot summarise.
std::string unexpectedShape(const std::string& path, const json& r, const json::exception& e) {
    return path + ": record " + r["id"].get<std::string>() + " has an unexpected shape (" +
           e.what() + ")";
}
} // namespace

int cmdResults(const std::vector<std::string>& argv) {
    Args a(argv, {"--results"}, {"--json", "--quiet"});
    const std::string sub = a.positional(0, "list | show ID");
    const std::string path = a.getOr("--results", defaultResultsPath());
    const ResultsFile f = loadResults(path);
    for (const auto& w : f.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (sub == "list") {
        if (a.flag("--json")) {
            json arr = json::array();
            for (const auto& r : f.records) {
                try {
                    json configs = json::array();
                    if (r.contains("configs"))
                        for (const auto& c : r["configs"]) configs.push_back(c.value("name", ""));
                    arr.push_back({{"id", r["id"]},
                                   {"timestamp", r.value("timestamp", "")},
                                   {"model", r.value("model", "")},
                                   {"configs", configs},
                                   {"baseline_ppl", r.contains("baseline")
                                                        ? r["baseline"].value("ppl", json(nullptr))
                                                        : json(nullptr)}});
                } catch (const json::exception& e) {
                    arr.push_back({{"id", r["id"]}, {"error", unexpectedShape(path, r, e)}});
                }
            }
            std::printf("%s\n", json({{"results_file", path},
                                      {"records", arr},
                                      {"skipped_lines", f.warnings.size()}})
                                    .dump(2)
                                    .c_str());
            return 0;
        }
        std::printf("%s: %zu record(s)\n", path.c_str(), f.records.size());
        for (const auto& r : f.records) {
            std::string line;
            try {
                line = r["id"].get<std::string>() + "  " + r.value("timestamp", "") + "  " +
                       std::filesystem::path(r.value("model", "")).filename().string();
                if (r.contains("baseline"))
                    line += "  PPL " + fmt("%.4f", num(r["baseline"], "ppl"));
                if (r.contains("configs"))
                    for (const auto& c : r["configs"]) {
                        line += " | " + c.value("name", std::string("?")) + " PPL " +
                                fmt("%.4f", num(c, "ppl"));
                        if (c.contains("kld")) line += " KLD " + fmt("%.5f", num(c["kld"], "mean"));
                    }
            } catch (const json::exception& e) {
                line = r["id"].get<std::string>() + "  (" + unexpectedShape(path, r, e) + ")";
            }
            std::printf("%s\n", line.c_str());
        }
        return 0;
    }
    if (sub == "show") {
        const std::string id = a.positional(1, "ID");
        const json* r = nullptr;
        try {
            r = findResult(f, id);
        } catch (const ArgumentError& e) {
            throw UsageError{e.what()};
        }
        if (!r) throw Error(path + ": no record with id " + id);
        const bool evalRecord = r->contains("baseline") && (*r)["baseline"].is_object() &&
                                r->contains("configs") && (*r)["configs"].is_array();
        if (a.flag("--json") || !evalRecord) {
            // Records of other kinds (a sensitivity scan, another tool's) are shown as they are.
            std::printf("%s\n", r->dump(2).c_str());
            if (!a.flag("--json"))
                std::printf("(%s: record %s is not an evaluation record: shown as JSON)\n",
                            path.c_str(), id.c_str());
            return 0;
        }
        try {
            printEvalTable(*r);
        } catch (const json::exception& e) {
            throw Error(path + ": record " + id + " has an unexpected shape (" + e.what() + ")");
        }
        return 0;
    }
    throw UsageError{"results: unknown subcommand '" + sub + "' (list, show ID)"};
}

} // namespace lcw::cli
