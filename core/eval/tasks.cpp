#include "core/eval/tasks.h"

#include "core/eval/chunk_runner.h"

#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include <omp.h>

namespace lcw {

namespace {

constexpr TaskKind kAllTasks[] = {TaskKind::Lambada, TaskKind::ArcEasy, TaskKind::Piqa,
                                  TaskKind::WinoGrande, TaskKind::HellaSwag};

/// The file's lines (without "\n" / "\r\n"); a trailing empty line is dropped.
std::vector<std::string> readLines(const std::string& path) {
    if (!std::filesystem::exists(path)) throw FormatError(path, "file not found");
    const std::string text = readTextFile(path);
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(pos, nl - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(std::move(line));
        pos = nl + 1;
    }
    return lines;
}

[[noreturn]] void lineError(const std::string& path, size_t lineNo, const std::string& problem) {
    throw FormatError(path, "line " + std::to_string(lineNo) + ": " + problem);
}

nlohmann::json parseLine(const std::string& path, size_t lineNo, const std::string& line) {
    nlohmann::json j;
    try {
        j = parseJsonText(line, path);
    } catch (const FormatError& e) {
        lineError(path, lineNo, "invalid JSON (" + e.problem() + ")");
    }
    if (!j.is_object()) lineError(path, lineNo, "expected a JSON object");
    return j;
}

std::string getString(const std::string& path, size_t lineNo, const nlohmann::json& j,
                      const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
        lineError(path, lineNo, std::string("missing string field \"") + key + "\"");
    return it->get<std::string>();
}

/// Non-empty lines of a labels file, each an integer in [lo, hi].
std::vector<int> readLabels(const std::string& path, int lo, int hi) {
    std::vector<int> out;
    const auto lines = readLines(path);
    for (size_t i = 0; i < lines.size(); ++i) {
        const std::string& s = lines[i];
        if (s.empty() && i + 1 == lines.size()) break;
        if (s.size() != 1 || s[0] < char('0' + lo) || s[0] > char('0' + hi))
            lineError(path, i + 1,
                      "expected a label " + std::to_string(lo) + ".." + std::to_string(hi) +
                          ", got \"" + s + "\"");
        out.push_back(s[0] - '0');
    }
    return out;
}

/// Data lines that are not blank (JSON lines files may end with an empty line).
template <class F> void forEachJsonLine(const std::string& path, F&& f) {
    const auto lines = readLines(path);
    for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].find_first_not_of(" \t") == std::string::npos) {
            if (i + 1 == lines.size()) break;
            lineError(path, i + 1, "empty line");
        }
        f(i + 1, parseLine(path, i + 1, lines[i]));
    }
}

void attachLabels(Task& t, const std::vector<int>& labels, int offset) {
    if (labels.size() != t.items.size())
        throw FormatError(t.labelsFile, "has " + std::to_string(labels.size()) + " labels but " +
                                            t.file + " has " + std::to_string(t.items.size()) +
                                            " items");
    for (size_t i = 0; i < labels.size(); ++i) t.items[i].label = labels[i] - offset;
}

/// " " + s, built by append (GCC 12 warns falsely about operator+ on a temporary here).
std::string spaced(const std::string& s) {
    std::string out;
    out.reserve(s.size() + 1);
    out.push_back(' ');
    out.append(s);
    return out;
}

int argmaxRow(const float* row, int64_t n) {
    return int(std::max_element(row, row + n) - row);
}

} // namespace

const char* taskName(TaskKind k) {
    switch (k) {
    case TaskKind::Lambada:
        return "lambada";
    case TaskKind::ArcEasy:
        return "arc_easy";
    case TaskKind::Piqa:
        return "piqa";
    case TaskKind::WinoGrande:
        return "winogrande";
    case TaskKind::HellaSwag:
        return "hellaswag";
    case TaskKind::Passkey:
        return "passkey";
    case TaskKind::LambadaLong:
        return "lambada_long";
    }
    return "?";
}

TaskKind parseTaskName(const std::string& name) {
    for (TaskKind k : kAllTasks)
        if (name == taskName(k)) return k;
    for (TaskKind k : {TaskKind::Passkey, TaskKind::LambadaLong})
        if (name == taskName(k)) return k;
    throw ArgumentError("unknown task \"" + name +
                        "\" (known: lambada, arc_easy, piqa, winogrande, hellaswag, passkey, "
                        "lambada_long, all)");
}

std::vector<TaskKind> parseTaskList(const std::string& list) {
    std::vector<TaskKind> out;
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        const std::string name = list.substr(pos, comma - pos);
        if (name == "all") {
            out.assign(std::begin(kAllTasks), std::end(kAllTasks));
        } else if (!name.empty()) {
            const TaskKind k = parseTaskName(name);
            if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
        }
        pos = comma + 1;
    }
    if (out.empty()) throw ArgumentError("no task named in \"" + list + "\"");
    return out;
}

std::pair<std::string, std::string> taskFiles(TaskKind k) {
    switch (k) {
    case TaskKind::Lambada:
    case TaskKind::LambadaLong:
        return {"lambada_test.jsonl", ""};
    case TaskKind::ArcEasy:
        return {"ARC-Easy-Test.jsonl", ""};
    case TaskKind::Piqa:
        return {"piqa_dev.jsonl", "piqa_dev-labels.lst"};
    case TaskKind::WinoGrande:
        return {"winogrande_1.1_dev.jsonl", "winogrande_1.1_dev-labels.lst"};
    case TaskKind::HellaSwag:
        return {"hellaswag_val_full.txt", ""};
    case TaskKind::Passkey:
        return {"", ""}; // generated
    }
    return {"", ""};
}

Task loadLambada(const std::string& path) {
    Task t;
    t.kind = TaskKind::Lambada;
    t.file = path;
    forEachJsonLine(path, [&](size_t line, const nlohmann::json& j) {
        std::string text = getString(path, line, j, "text");
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
            text.pop_back();
        const size_t sp = text.find_last_of(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= text.size())
            lineError(path, line, "\"text\" has no last word after a space");
        TaskItem it;
        it.line = int64_t(line);
        it.choices.push_back({text.substr(0, sp), text.substr(sp)});
        t.items.push_back(std::move(it));
    });
    return t;
}

Task loadArc(const std::string& path) {
    Task t;
    t.kind = TaskKind::ArcEasy;
    t.file = path;
    forEachJsonLine(path, [&](size_t line, const nlohmann::json& j) {
        auto q = j.find("question");
        if (q == j.end() || !q->is_object()) lineError(path, line, "missing object \"question\"");
        const std::string stem = getString(path, line, *q, "stem");
        auto ch = q->find("choices");
        if (ch == q->end() || !ch->is_array() || ch->size() < 2)
            lineError(path, line, "\"question.choices\" must be an array of at least 2 choices");
        const std::string key = getString(path, line, j, "answerKey");
        TaskItem it;
        it.line = int64_t(line);
        it.label = -1;
        for (const auto& c : *ch) {
            if (!c.is_object()) lineError(path, line, "a choice is not an object");
            const std::string text = getString(path, line, c, "text");
            const std::string label = getString(path, line, c, "label");
            if (label == key) it.label = int(it.choices.size());
            it.choices.push_back({"Question: " + stem + "\nAnswer:", spaced(text)});
        }
        if (it.label < 0)
            lineError(path, line, "answerKey \"" + key + "\" matches no choice label");
        t.items.push_back(std::move(it));
    });
    return t;
}

Task loadPiqa(const std::string& path, const std::string& labelsPath) {
    Task t;
    t.kind = TaskKind::Piqa;
    t.file = path;
    t.labelsFile = labelsPath;
    forEachJsonLine(path, [&](size_t line, const nlohmann::json& j) {
        const std::string goal = getString(path, line, j, "goal");
        const std::string ctx = "Question: " + goal + "\nAnswer:";
        TaskItem it;
        it.line = int64_t(line);
        it.choices.push_back({ctx, spaced(getString(path, line, j, "sol1"))});
        it.choices.push_back({ctx, spaced(getString(path, line, j, "sol2"))});
        t.items.push_back(std::move(it));
    });
    attachLabels(t, readLabels(labelsPath, 0, 1), 0);
    return t;
}

Task loadWinoGrande(const std::string& path, const std::string& labelsPath) {
    Task t;
    t.kind = TaskKind::WinoGrande;
    t.file = path;
    t.labelsFile = labelsPath;
    forEachJsonLine(path, [&](size_t line, const nlohmann::json& j) {
        const std::string s = getString(path, line, j, "sentence");
        const size_t blank = s.find('_');
        if (blank == std::string::npos) lineError(path, line, "\"sentence\" has no \"_\" blank");
        std::string rest = s.substr(blank + 1);
        const size_t b = rest.find_first_not_of(" \t");
        rest = b == std::string::npos ? "" : rest.substr(b);
        while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.back())))
            rest.pop_back();
        if (rest.empty()) lineError(path, line, "nothing follows the \"_\" blank to score");
        TaskItem it;
        it.line = int64_t(line);
        // Partial scoring: the option completes the context; only the text after it is scored.
        for (const char* key : {"option1", "option2"})
            it.choices.push_back(
                {s.substr(0, blank) + getString(path, line, j, key), spaced(rest)});
        t.items.push_back(std::move(it));
    });
    attachLabels(t, readLabels(labelsPath, 1, 2), 1);
    return t;
}

Task loadHellaSwag(const std::string& path) {
    Task t;
    t.kind = TaskKind::HellaSwag;
    t.file = path;
    auto lines = readLines(path);
    while (!lines.empty() && lines.back().empty()) lines.pop_back();
    if (lines.size() % 6 != 0)
        throw FormatError(path, "has " + std::to_string(lines.size()) +
                                    " lines, not a multiple of 6 (context, label, 4 endings)");
    for (size_t i = 0; i < lines.size(); i += 6) {
        const std::string& lab = lines[i + 1];
        if (lab.size() != 1 || lab[0] < '0' || lab[0] > '3')
            lineError(path, i + 2, "expected a label 0..3, got \"" + lab + "\"");
        TaskItem it;
        it.line = int64_t(i + 1);
        it.label = lab[0] - '0';
        for (int e = 0; e < 4; ++e) {
            if (lines[i + 2 + size_t(e)].empty())
                lineError(path, i + 3 + size_t(e), "empty ending");
            it.choices.push_back({lines[i], spaced(lines[i + 2 + size_t(e)])});
        }
        t.items.push_back(std::move(it));
    }
    return t;
}

Task loadTask(TaskKind k, const std::string& dir) {
    if (k == TaskKind::Passkey) {
        const std::string text = stats::builtinCalibrationPath();
        return makePasskeyTask(readTextFile(text), text);
    }
    const auto [data, labels] = taskFiles(k);
    const std::string dataPath = (std::filesystem::path(dir) / data).string();
    const std::string labelsPath =
        labels.empty() ? "" : (std::filesystem::path(dir) / labels).string();
    for (const std::string& p : {dataPath, labelsPath})
        if (!p.empty() && !std::filesystem::exists(p))
            throw FormatError(p, std::string("task file for ") + taskName(k) +
                                     " not found (use --tasks-dir DIR)");
    switch (k) {
    case TaskKind::Lambada:
        return loadLambada(dataPath);
    case TaskKind::LambadaLong: {
        const std::string text = stats::builtinCalibrationPath();
        return makeLongContextLambada(loadLambada(dataPath), readTextFile(text), text);
    }
    case TaskKind::ArcEasy:
        return loadArc(dataPath);
    case TaskKind::Piqa:
        return loadPiqa(dataPath, labelsPath);
    case TaskKind::WinoGrande:
        return loadWinoGrande(dataPath, labelsPath);
    case TaskKind::HellaSwag:
        return loadHellaSwag(dataPath);
    case TaskKind::Passkey:
        break;
    }
    throw ArgumentError("unknown task kind");
}

std::vector<size_t> subsetIndices(size_t n, int64_t limit, uint64_t seed) {
    std::vector<size_t> idx(n);
    for (size_t i = 0; i < n; ++i) idx[i] = i;
    if (limit <= 0 || uint64_t(limit) >= n) return idx;
    std::mt19937_64 rng(seed);
    // Fisher–Yates from the front; only the first `limit` positions are needed. The bound is
    // drawn by rejection so that it is exactly uniform and platform-independent.
    for (size_t i = 0; i < size_t(limit); ++i) {
        const uint64_t range = uint64_t(n - i);
        const uint64_t lim = ~uint64_t(0) - (~uint64_t(0) % range);
        uint64_t r = rng();
        while (r >= lim) r = rng();
        std::swap(idx[i], idx[i + size_t(r % range)]);
    }
    idx.resize(size_t(limit));
    std::sort(idx.begin(), idx.end());
    return idx;
}

PreparedTask prepareTask(const Task& task, const TaskEncoder& encode, int64_t limit,
                         uint64_t seed) {
    PreparedTask p;
    p.kind = task.kind;
    p.file = task.file;
    p.totalItems = task.items.size();
    p.itemIndex = subsetIndices(task.items.size(), limit, seed);
    for (size_t ii : p.itemIndex) {
        const TaskItem& it = task.items[ii];
        PreparedItem pi;
        pi.label = it.label;
        for (size_t c = 0; c < it.choices.size(); ++c) {
            const TaskChoice& ch = it.choices[c];
            pi.bytes.push_back(double(ch.continuation.size()));
            std::vector<int32_t> ctx = encode(ch.context, true);
            std::vector<int32_t> whole = encode(ch.context + ch.continuation, true);
            size_t common = 0;
            while (common < ctx.size() && common < whole.size() && ctx[common] == whole[common])
                ++common;
            // At least one continuation token, and at least one context token to predict from.
            common = std::min(common, whole.size() > 0 ? whole.size() - 1 : 0);
            if (common == 0)
                throw ArgumentError(task.file + ": item at line " + std::to_string(it.line) +
                                    ": the context encodes to no tokens (and the tokenizer adds "
                                    "no BOS), so the continuation cannot be scored");
            std::vector<int32_t> context(whole.begin(), whole.begin() + std::ptrdiff_t(common));
            std::vector<int32_t> cont(whole.begin() + std::ptrdiff_t(common), whole.end());
            auto g = std::find_if(pi.groups.begin(), pi.groups.end(),
                                  [&](const PreparedGroup& x) { return x.context == context; });
            if (g == pi.groups.end()) {
                pi.groups.push_back({std::move(context), {}, {}});
                g = pi.groups.end() - 1;
            }
            g->continuations.push_back(std::move(cont));
            g->choice.push_back(c);
        }
        p.items.push_back(std::move(pi));
    }
    return p;
}

// ---------------------------------------------------------------------------------- scorer

struct ModelScorer::Impl {
    const WeightSource* weights = nullptr;
    int64_t ctx = 0;
    std::vector<std::unique_ptr<Session>> sessions;
    std::vector<std::vector<float>> logits;
    std::atomic<int64_t> tokens{0};
};

ModelScorer::ModelScorer(const WeightSource& weights, int64_t ctx, int threads,
                         bool exactActivations)
    : m(std::make_unique<Impl>()) {
    const ModelSpec& spec = weights.spec();
    if (ctx < 2) throw ArgumentError("tasks: context must be at least 2 tokens");
    m->weights = &weights;
    m->ctx = ctx;
    const int t = threads > 0 ? threads : omp_get_max_threads();
    // As in perplexity: small models run whole items per single-threaded session.
    const double sessionBytes =
        4.0 * (double(spec.nLayers) * double(ctx) * double(2 * spec.nKvHeads * spec.headDim) +
               double(ctx) * double(4 * spec.dim + 2 * spec.nHeads * spec.headDim +
                                    3 * spec.nKvHeads * spec.headDim + 2 * spec.hidden) +
               double(ctx) * double(spec.vocab));
    const int workers = sessionBytes * t <= 1024.0 * 1024 * 1024 ? t : 1;
    for (int i = 0; i < workers; ++i) {
        SessionOptions so;
        so.contextLength = ctx;
        so.batchSize = ctx;
        so.threads = workers > 1 ? 1 : t;
        so.exactActivations = exactActivations;
        m->sessions.push_back(std::make_unique<Session>(weights, so));
    }
    m->logits.resize(size_t(workers));
}

ModelScorer::~ModelScorer() = default;

int ModelScorer::workers() const {
    return int(m->sessions.size());
}

int64_t ModelScorer::tokensEvaluated() const {
    return m->tokens.load();
}

std::vector<ContinuationScore>
ModelScorer::score(int worker, const std::vector<int32_t>& context,
                   const std::vector<std::vector<int32_t>>& continuations) {
    Session& s = *m->sessions.at(size_t(worker));
    std::vector<float>& logits = m->logits[size_t(worker)];
    const int64_t vocab = m->weights->spec().vocab;
    std::vector<ContinuationScore> out;
    std::vector<int32_t> seq;
    for (const auto& cont : continuations) {
        if (cont.empty()) throw ArgumentError("tasks: an empty continuation cannot be scored");
        ContinuationScore cs;
        // Feed context + continuation without its last token (that one is only predicted).
        // Longer than the window: keep the last ctx inputs (lm-eval's left truncation); when
        // even the continuation does not fit, only its last ctx tokens are scored.
        seq.assign(context.begin(), context.end());
        seq.insert(seq.end(), cont.begin(), cont.end() - 1);
        const int64_t drop = std::max<int64_t>(0, int64_t(seq.size()) - m->ctx);
        seq.erase(seq.begin(), seq.begin() + drop);
        const int64_t scored = std::min<int64_t>(int64_t(cont.size()), int64_t(seq.size()));
        const size_t skip = cont.size() - size_t(scored);
        s.reset();
        s.forwardFrom(seq, logits, int64_t(seq.size()) - scored);
        m->tokens += int64_t(seq.size());
        cs.tokens = scored;
        cs.greedy = true;
        for (int64_t i = 0; i < scored; ++i) {
            const float* row = logits.data() + i * vocab;
            const int32_t target = cont[skip + size_t(i)];
            cs.logLikelihood += kernels::logSoftmaxAt(row, vocab, target);
            if (argmaxRow(row, vocab) != target) cs.greedy = false;
        }
        out.push_back(cs);
    }
    return out;
}

// ------------------------------------------------------------------------------ evaluation

double binomialError(double p, int64_t n) {
    return n > 1 ? std::sqrt(std::max(0.0, p * (1 - p)) / double(n - 1)) : 0.0;
}

TaskResult evaluateTask(const PreparedTask& task, ContinuationScorer& scorer, Progress& progress) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const int64_t n = int64_t(task.items.size());
    std::vector<std::vector<ContinuationScore>> scores(static_cast<size_t>(n));
    std::vector<char> done(size_t(n), 0);
    const int workers = std::max(1, scorer.workers());
    auto* modelScorer = dynamic_cast<ModelScorer*>(&scorer);
    const int64_t tokens0 = modelScorer ? modelScorer->tokensEvaluated() : 0;
    const std::string name = taskName(task.kind);
    auto work = [&](int64_t i, int thread) {
        const PreparedItem& it = task.items[size_t(i)];
        auto& sc = scores[size_t(i)];
        sc.assign(it.bytes.size(), ContinuationScore{});
        for (const PreparedGroup& g : it.groups) {
            const auto r = scorer.score(thread, g.context, g.continuations);
            if (r.size() != g.continuations.size())
                throw Error("tasks: the scorer returned a wrong number of scores");
            for (size_t k = 0; k < r.size(); ++k) sc[g.choice[k]] = r[k];
        }
    };
    auto merge = [&](int64_t i, int, int64_t finished) {
        done[size_t(i)] = 1;
        return name + " " + std::to_string(finished) + "/" + std::to_string(n);
    };
    const bool complete = runChunks(n, workers, progress, name, work, merge);

    TaskResult r;
    r.kind = task.kind;
    r.hasAccNorm = task.kind == TaskKind::ArcEasy || task.kind == TaskKind::Piqa ||
                   task.kind == TaskKind::HellaSwag;
    // LAMBADA (also at extended context) and passkey: one continuation, greedy exact match and
    // perplexity
    const bool greedyTask = task.kind == TaskKind::Lambada || task.kind == TaskKind::Passkey ||
                            task.kind == TaskKind::LambadaLong;
    r.hasPpl = greedyTask;
    int64_t correct = 0, correctNorm = 0;
    double sumLl = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (!done[size_t(i)]) continue;
        const PreparedItem& it = task.items[size_t(i)];
        const auto& sc = scores[size_t(i)];
        ++r.items;
        for (const auto& s : sc) r.choiceLogLikelihood.push_back(s.logLikelihood);
        if (greedyTask) {
            const bool ok = sc[0].greedy;
            correct += ok;
            r.predicted.push_back(ok ? 1 : 0);
            sumLl += sc[0].logLikelihood;
            continue;
        }
        int best = 0, bestNorm = 0;
        for (size_t c = 1; c < sc.size(); ++c) {
            if (sc[c].logLikelihood > sc[size_t(best)].logLikelihood) best = int(c);
            if (sc[c].logLikelihood / it.bytes[c] >
                sc[size_t(bestNorm)].logLikelihood / it.bytes[size_t(bestNorm)])
                bestNorm = int(c);
        }
        r.predicted.push_back(best);
        correct += best == it.label;
        correctNorm += bestNorm == it.label;
    }
    if (r.items > 0) {
        r.acc = double(correct) / double(r.items);
        r.accError = binomialError(r.acc, r.items);
        if (r.hasAccNorm) {
            r.accNorm = double(correctNorm) / double(r.items);
            r.accNormError = binomialError(r.accNorm, r.items);
        }
        if (r.hasPpl) r.ppl = std::exp(-sumLl / double(r.items));
    }
    if (modelScorer) r.tokensEvaluated = modelScorer->tokensEvaluated() - tokens0;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!complete) r.status = Status::Cancelled;
    return r;
}

} // namespace lcw
