// lcw-cli compare (generations of baseline and configurations side by side) and
// lcw-cli hidden-error (per-block hidden-state error against the baseline).
#include "commands.h"

#include "args.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/config_source.h"
#include "core/eval/generation_compare.h"
#include "core/eval/hidden_error.h"
#include "core/export/gguf_preset.h"
#include "core/model/model.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>
#include <omp.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;

/// Display width in code points (UTF-8 continuation bytes do not count).
size_t displayWidth(const std::string& s) {
    size_t w = 0;
    for (unsigned char ch : s)
        if ((ch & 0xC0) != 0x80) ++w;
    return w;
}

/// Byte length of the UTF-8 sequence starting with `c` (1 for stray bytes).
size_t utf8Len(unsigned char c) {
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

/// Wraps text into lines of at most `width` code points, breaking after spaces when possible;
/// newlines in the text start new lines.
std::vector<std::string> wrap(const std::string& text, size_t width) {
    std::vector<std::string> lines;
    std::string line;
    size_t lineW = 0;
    size_t lastSpace = std::string::npos; // byte offset in `line` after the last space
    size_t wAtSpace = 0;
    for (size_t i = 0; i < text.size();) {
        const size_t n = std::min(utf8Len(static_cast<unsigned char>(text[i])), text.size() - i);
        const std::string ch = text.substr(i, n);
        i += n;
        if (ch == "\n") {
            lines.push_back(line);
            line.clear();
            lineW = 0;
            lastSpace = std::string::npos;
            continue;
        }
        if (lineW == width) {
            if (lastSpace != std::string::npos && lastSpace < line.size()) {
                lines.push_back(line.substr(0, lastSpace));
                line = line.substr(lastSpace);
                lineW -= wAtSpace;
            } else {
                lines.push_back(line);
                line.clear();
                lineW = 0;
            }
            lastSpace = std::string::npos;
        }
        line += ch;
        ++lineW;
        if (ch == " ") {
            lastSpace = line.size();
            wAtSpace = lineW;
        }
    }
    if (!line.empty() || lines.empty()) lines.push_back(line);
    return lines;
}

int terminalWidth() {
    winsize ws{};
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    if (const char* c = std::getenv("COLUMNS"); c && std::atoi(c) > 20) return std::atoi(c);
    return 120;
}

/// Text pieces of generated tokens: what each adds to the decoded text after the prompt (so
/// SentencePiece leading spaces and byte-fallback sequences come out right); a multi-byte
/// character split over several tokens lands on the token that completes it.
std::vector<std::string> tokenPieces(const Tokenizer& tk, const std::vector<int32_t>& prompt,
                                     const std::vector<int32_t>& ids) {
    std::vector<std::string> pieces;
    std::vector<int32_t> all = prompt;
    std::string prev = tk.decode(all);
    for (int32_t id : ids) {
        all.push_back(id);
        const std::string cur = tk.decode(all);
        if (cur.size() >= prev.size() && cur.compare(0, prev.size(), prev) == 0) {
            pieces.push_back(cur.substr(prev.size()));
            prev = cur;
        } else {
            pieces.push_back(tk.tokenText(id));
            prev = cur;
        }
    }
    return pieces;
}

std::string fmtG(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

json numOrNull(int64_t v) {
    return v >= 0 ? json(v) : json(nullptr);
}

} // namespace

ConfigSource::ConfigSource() = default;
ConfigSource::ConfigSource(ConfigSource&&) noexcept = default;
ConfigSource& ConfigSource::operator=(ConfigSource&&) noexcept = default;
ConfigSource::~ConfigSource() = default;

const WeightSource* ConfigSource::weights() const {
    if (overlay) return overlay.get();
    return model ? static_cast<const WeightSource*>(model.get()) : base;
}

std::vector<ConfigSource> loadConfigSources(const Model& model, const Args& a, bool quiet,
                                            const compress::CalibrationSet* cal, bool requireOne) {
    std::vector<ConfigSource> cols;
    auto fromRecipe = [&](ConfigSource c, const compress::Recipe& recipe) {
        TerminalProgress progress("compress " + recipe.name, !quiet);
        compress::CompressOptions co;
        co.calibration = cal;
        compress::CompressResult r = compress::compress(model, recipe, progress, co);
        progress.finish();
        if (r.status == Status::Cancelled) throw Error("cancelled while applying the recipe");
        for (const auto& w : r.plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
        c.recipe = recipe.toJson();
        c.overlay = std::move(r.model);
        cols.push_back(std::move(c));
    };
    for (const auto& path : a.getAll("--recipe")) {
        ConfigSource c;
        const compress::Recipe recipe = compress::Recipe::load(path);
        c.name = recipe.name.empty() ? std::filesystem::path(path).stem().string() : recipe.name;
        c.kind = "recipe";
        c.source = path;
        fromRecipe(std::move(c), recipe);
    }
    for (const auto& name : a.getAll("--preset")) {
        ConfigSource c;
        const compress::Recipe recipe = presetRecipe(model, name);
        c.name = recipe.name;
        c.kind = "preset";
        c.source = name;
        fromRecipe(std::move(c), recipe);
    }
    for (const auto& dir : a.getAll("--overlay")) {
        ConfigSource c;
        c.name = std::filesystem::path(dir).filename().string();
        c.kind = "overlay";
        c.source = dir;
        c.overlay = compress::CompressedModel::load(dir, model);
        cols.push_back(std::move(c));
    }
    for (const auto& path : a.getAll("--compare-model")) {
        ConfigSource c;
        c.name = std::filesystem::path(path).filename().string();
        c.kind = "model";
        c.source = path;
        LoadOptions olo;
        olo.tokenizerPath = a.getOr("--tokenizer", "");
        c.model =
            loadCompareModel(path, model, olo); // Error naming both files on another vocabulary
        c.bitsPerWeight = modelBitsPerWeight(*c.model);
        c.bytes = c.model->storedBytes();
        cols.push_back(std::move(c));
    }
    for (auto& c : cols)
        if (c.overlay) {
            const compress::SizeInfo sz = c.overlay->totalSize();
            c.bitsPerWeight = sz.bitsPerWeight();
            c.bytes = sz.bytes();
        }
    if (cols.empty() && requireOne)
        throw UsageError{"give at least one configuration: --recipe R.json, --preset NAME, "
                         "--overlay DIR or --compare-model FILE"};
    return cols;
}

// ------------------------------------------------------------------------------------- compare
namespace {

/// compare's generation settings, checked.
GenerationCompareOptions parseGenerationOptions(const Args& a) {
    GenerationCompareOptions go;
    go.exactActivations = a.flag("--exact-activations");
    go.maxNewTokens = a.getInt("--max-tokens", 64);
    if (go.maxNewTokens < 1) throw UsageError{"--max-tokens must be at least 1"};
    go.sampling.temperature = float(a.getDouble("--temperature", 0.0));
    if (go.sampling.temperature < 0) throw UsageError{"--temperature must be >= 0"};
    const long long seed = a.getInt("--seed", 0);
    if (seed < 0) throw UsageError{"--seed must be >= 0"};
    go.sampling.seed = uint64_t(seed);
    go.sampling.topK = int(a.getInt("--top-k", 0));
    if (go.sampling.topK < 0) throw UsageError{"--top-k must be >= 0"};
    go.sampling.topP = float(a.getDouble("--top-p", 1.0));
    if (!(go.sampling.topP > 0 && go.sampling.topP <= 1))
        throw UsageError{"--top-p must be in (0, 1]"};
    return go;
}

/// What compare's reports are made of.
struct CompareReport {
    const Model& model;
    const std::string& prompt;
    const std::vector<int32_t>& promptIds;
    const GenerationCompareOptions& go;
    const std::vector<ConfigSource>& cols;
    const GenerationComparison& r;
};

/// One generation of `compare --json`; `c` is null for the baseline.
json trackJson(const CompareReport& rep, const GenerationTrack& t, const ConfigSource* c) {
    const Tokenizer& tk = rep.model.tokenizer();
    json j = {{"name", t.name}};
    if (c) {
        j["kind"] = c->kind;
        j["source"] = c->source;
    } else {
        j["kind"] = "baseline";
        j["source"] = rep.model.path();
    }
    j["ids"] = t.ids;
    j["pieces"] = tokenPieces(tk, rep.promptIds, t.ids);
    j["text"] = tk.decode(t.ids);
    j["logprobs"] = t.logProbs;
    j["stopped_at_eos"] = t.stoppedAtEos;
    j["first_divergence"] = numOrNull(t.firstDivergence);
    j["kld"] = t.kld;
    j["baseline_token_logprobs"] = t.baselineTokenLogProbs;
    j["mean_kld"] = t.meanKld;
    j["max_kld"] = t.maxKld;
    j["seconds"] = t.seconds;
    return j;
}

void printCompareJson(const CompareReport& rep) {
    const GenerationCompareOptions& go = rep.go;
    json cj = json::array();
    for (size_t k = 0; k < rep.cols.size(); ++k)
        cj.push_back(trackJson(rep, rep.r.configs[k], &rep.cols[k]));
    json j = {{"model", rep.model.path()},
              {"prompt", rep.prompt},
              {"prompt_ids", rep.promptIds},
              {"sampling",
               {{"mode", go.sampling.temperature > 0 ? "seeded" : "greedy"},
                {"temperature", go.sampling.temperature},
                {"seed", go.sampling.seed},
                {"top_k", go.sampling.topK},
                {"top_p", go.sampling.topP}}},
              {"max_tokens", go.maxNewTokens},
              {"kld_definition", "KLD(baseline || config) per token of the baseline's "
                                 "generated text, teacher-forced"},
              {"baseline", trackJson(rep, rep.r.baseline, nullptr)},
              {"configs", cj}};
    std::printf("%s\n", j.dump(2).c_str());
}

/// A generation's text with "»" before the first token that differs from the baseline.
std::string markedText(const CompareReport& rep, const GenerationTrack& t) {
    const auto pieces = tokenPieces(rep.model.tokenizer(), rep.promptIds, t.ids);
    std::string text;
    for (size_t i = 0; i < pieces.size(); ++i) {
        if (int64_t(i) == t.firstDivergence) text += "»";
        text += pieces[i];
    }
    if (t.firstDivergence == int64_t(pieces.size())) text += "»";
    if (t.stoppedAtEos) text += " ⟨eos⟩";
    return text;
}

/// Side by side: one column per source (`total` terminal columns), the divergence point marked
/// with "»".
void printSideBySide(const CompareReport& rep, const std::vector<const GenerationTrack*>& tracks,
                     int total) {
    const GenerationCompareOptions& go = rep.go;
    const size_t n = tracks.size();
    const size_t colW = size_t(std::max<int>(12, (total - int(3 * (n - 1))) / int(n)));
    std::vector<std::vector<std::string>> lines(n);
    std::vector<std::string> header(n);
    for (size_t k = 0; k < n; ++k) {
        lines[k] = wrap(markedText(rep, *tracks[k]), colW);
        header[k] = tracks[k]->name;
        if (displayWidth(header[k]) > colW) header[k] = header[k].substr(0, colW);
    }
    auto printCells = [&](const std::vector<std::string>& cells) {
        std::string out;
        for (size_t k = 0; k < n; ++k) {
            out += cells[k];
            if (k + 1 < n)
                out += std::string(colW - std::min(colW, displayWidth(cells[k])), ' ') + " │ ";
        }
        while (!out.empty() && out.back() == ' ') out.pop_back();
        std::printf("%s\n", out.c_str());
    };
    std::printf("prompt: %s\nsampling: %s\n\n", rep.prompt.c_str(),
                go.sampling.temperature > 0
                    ? ("seeded, temperature " + fmtG(go.sampling.temperature) + ", seed " +
                       std::to_string(go.sampling.seed))
                          .c_str()
                    : "greedy");
    printCells(header);
    std::vector<std::string> rule(n);
    for (size_t k = 0; k < n; ++k) {
        rule[k].clear();
        for (size_t i = 0; i < colW; ++i) rule[k] += "─";
    }
    printCells(rule);
    size_t rows = 0;
    for (const auto& l : lines) rows = std::max(rows, l.size());
    for (size_t i = 0; i < rows; ++i) {
        std::vector<std::string> cells(n);
        for (size_t k = 0; k < n; ++k) cells[k] = i < lines[k].size() ? lines[k][i] : "";
        printCells(cells);
    }
}

/// Tokens, mean log-prob, divergence and KLD of every source.
void printCompareSummary(const CompareReport& rep,
                         const std::vector<const GenerationTrack*>& tracks) {
    std::printf("\n%-28s %8s %12s %12s %12s %10s\n", "", "tokens", "mean logp", "diverges at",
                "mean KLD", "max KLD");
    for (const auto* t : tracks) {
        double lp = 0;
        for (double v : t->logProbs) lp += v;
        lp = t->logProbs.empty() ? 0 : lp / double(t->logProbs.size());
        const std::string div = t == &rep.r.baseline     ? "-"
                                : t->firstDivergence < 0 ? "never"
                                                         : std::to_string(t->firstDivergence);
        std::printf("%-28s %8zu %12.4f %12s %12.6f %10.6f\n", t->name.substr(0, 28).c_str(),
                    t->ids.size(), lp, div.c_str(), t->meanKld, t->maxKld);
    }
    std::printf("\nKLD: KLD(baseline || config) along the baseline's text (teacher-forced); "
                "» marks the first token that differs from the baseline.\n");
}

} // namespace

int cmdCompare(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--prompt", "--max-tokens", "--temperature", "--seed",
            "--top-k", "--top-p", "--recipe", "--preset", "--overlay", "--compare-model", "--calib",
            "--samples", "--seq-len", "--calib-sampling", "--calib-seed", "--width"},
           {"--quiet", "--json", "--exact-activations"});
    applyThreads(a);
    const bool quiet = a.flag("--quiet");
    const auto prompt = a.get("--prompt");
    if (!prompt) throw UsageError{"--prompt TEXT is required"};
    const GenerationCompareOptions go = parseGenerationOptions(a);

    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    auto model =
        Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"), lo);
    const auto cal = calibrationFromArgs(*model, a);
    auto cols = loadConfigSources(*model, a, quiet, cal.get());
    const auto promptIds = model->tokenizer().encode(*prompt, true);

    std::vector<DivergenceConfig> configs;
    for (const auto& c : cols) configs.push_back({c.name, c.weights()});
    TerminalProgress progress("compare", !quiet);
    const GenerationComparison r = compareGenerations(*model, configs, promptIds, go, progress);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    const CompareReport rep{*model, *prompt, promptIds, go, cols, r};
    if (a.flag("--json")) {
        printCompareJson(rep);
        return 0;
    }
    std::vector<const GenerationTrack*> tracks = {&r.baseline};
    for (const auto& t : r.configs) tracks.push_back(&t);
    printSideBySide(rep, tracks,
                    a.has("--width") ? int(a.getInt("--width", 120)) : terminalWidth());
    printCompareSummary(rep, tracks);
    return 0;
}

// -------------------------------------------------------------------------------- hidden-error
int cmdHiddenError(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--text", "--ctx", "--chunks", "--recipe", "--preset",
            "--overlay", "--compare-model", "--calib", "--samples", "--seq-len", "--calib-sampling",
            "--calib-seed"},
           {"--quiet", "--json", "--exact-activations"});
    applyThreads(a);
    const bool quiet = a.flag("--quiet");
    const std::string textPath = a.getOr("--text", stats::builtinCalibrationPath());
    PerplexityOptions po;
    po.exactActivations = a.flag("--exact-activations");
    po.ctx = a.getInt("--ctx", 256);
    if (po.ctx < 4) throw UsageError{"--ctx must be at least 4"};
    po.batch = po.ctx;
    po.maxChunks = a.getInt("--chunks", 8);
    if (po.maxChunks < 0) throw UsageError{"--chunks must be >= 0"};
    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = true;
    auto model =
        Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"), lo);
    po.bosId = model->tokenizer().bosId();
    const auto tokens = model->tokenizer().encode(readTextFile(textPath), true);
    const auto cal = calibrationFromArgs(*model, a);
    auto cols = loadConfigSources(*model, a, quiet, cal.get());
    std::vector<DivergenceConfig> configs;
    for (const auto& c : cols) configs.push_back({c.name, c.weights()});
    TerminalProgress progress("hidden-error", !quiet);
    const HiddenErrorResult r = hiddenStateError(*model, configs, tokens, po, progress);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    if (a.flag("--json")) {
        json cj = json::array();
        for (size_t k = 0; k < r.configs.size(); ++k) {
            json blocks = json::array();
            for (const auto& b : r.configs[k].blocks)
                blocks.push_back({{"block", b.layer},
                                  {"rel_error", b.relError},
                                  {"mean_rel_error", b.meanRelError},
                                  {"mean_cosine", b.meanCosine},
                                  {"min_cosine", b.minCosine}});
            cj.push_back({{"name", r.configs[k].name},
                          {"kind", cols[k].kind},
                          {"source", cols[k].source},
                          {"blocks", blocks}});
        }
        json j = {{"model", model->path()},
                  {"text_file", textPath},
                  {"ctx", r.ctx},
                  {"chunks", r.chunks},
                  {"tokens", r.tokens},
                  {"definition",
                   "residual stream after each block; rel_error = ||H_q - H||_F / ||H||_F over all "
                   "tokens, mean_rel_error = mean over tokens of ||h_q - h|| / ||h||, "
                   "mean_cosine = mean over tokens of cos(h_q, h)"},
                  {"configs", cj},
                  {"seconds", r.seconds}};
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("model:  %s\ntext:   %s (ctx %lld, %lld chunks, %lld positions per block)\n\n",
                model->path().c_str(), textPath.c_str(), (long long)r.ctx, (long long)r.chunks,
                (long long)r.tokens);
    for (const auto& c : r.configs) {
        std::printf("%s\n  %-6s %12s %14s %12s %12s\n", c.name.c_str(), "block", "rel. error",
                    "mean rel. err", "mean cos", "min cos");
        for (const auto& b : c.blocks)
            std::printf("  %-6d %12.6f %14.6f %12.6f %12.6f\n", b.layer, b.relError, b.meanRelError,
                        b.meanCosine, b.minCosine);
        std::printf("\n");
    }
    std::printf("rel. error = ||H_q - H||_F / ||H||_F over all positions (ratio of sums); mean "
                "rel. err and cos are per-position means.\n");
    return 0;
}

} // namespace lcw::cli
