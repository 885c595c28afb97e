#pragma once
/// \file
/// Zero-shot tasks scored by log-likelihood (METRICS.md, "Tasks"): LAMBADA, ARC-Easy, PIQA,
/// WinoGrande and HellaSwag from the files in shared/data/tasks.
///
/// Each item is a set of choices, each a (context, continuation) text pair; a choice's score is
/// the log-likelihood of its continuation tokens given its context. acc: the choice with the
/// largest sum is the label; acc_norm: the largest sum divided by the continuation's length in
/// bytes (lm-eval's length normalisation; ARC, PIQA, HellaSwag). WinoGrande uses partial scoring:
/// the option is put in place of "_" in the context and only the text after it is scored.
/// LAMBADA: the context is the passage without its last word, the continuation " word"; acc is
/// greedy exact match (every target token is the argmax), ppl = exp(−mean per-item
/// log-likelihood of the target word).
///
/// LAMBADA at extended context ("lambada_long", core/eval/passkey.cpp): each passage preceded
/// by unrelated whole sentences of a text up to a target length, so that the passage sits at the
/// end of a long context (where KV eviction policies are active); scored as LAMBADA.
///
/// Passkey (generated, core/eval/passkey.cpp): a needle-in-a-haystack retrieval item per seed
/// draw: a stretch of a text with the sentence "The pass key is NNNNN. Remember it. NNNNN is the
/// pass key." put in at a random sentence boundary, followed by "What is the pass key? The pass
/// key is"; the continuation " NNNNN" is scored as LAMBADA's (acc: greedy exact match; ppl).
///
/// Tokenization happens once (prepareTask) with the baseline's tokenizer, so every
/// configuration scores exactly the same token sequences.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/model/model.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lcw {

enum class TaskKind { Lambada, ArcEasy, Piqa, WinoGrande, HellaSwag, Passkey, LambadaLong };

/// "lambada", "arc_easy", "piqa", "winogrande", "hellaswag", "passkey", "lambada_long".
const char* taskName(TaskKind k);
/// Inverse of taskName; throws ArgumentError naming the valid names.
TaskKind parseTaskName(const std::string& name);
/// A comma-separated list ("lambada,piqa"); "all" gives the five read from files (not passkey,
/// not lambada_long).
/// Throws ArgumentError.
std::vector<TaskKind> parseTaskList(const std::string& list);
/// The file(s) a task reads inside a tasks folder: data file, and the labels file or "".
/// lambada_test.jsonl, ARC-Easy-Test.jsonl, piqa_dev.jsonl + piqa_dev-labels.lst,
/// winogrande_1.1_dev.jsonl + winogrande_1.1_dev-labels.lst, hellaswag_val_full.txt.
std::pair<std::string, std::string> taskFiles(TaskKind k);

struct TaskChoice {
    std::string context;
    std::string continuation;
};

struct TaskItem {
    std::vector<TaskChoice> choices; ///< LAMBADA: one (passage, " last-word")
    int label = 0;                   ///< index into choices
    int64_t line = 0;                ///< 1-based line in the data file (for messages)
};

struct Task {
    TaskKind kind = TaskKind::Lambada;
    std::string file;       ///< data file
    std::string labelsFile; ///< "" when the labels are in the data file
    std::vector<TaskItem> items;
};

/// Loaders. Throw FormatError "<file>: line N: <problem>" for unreadable files, malformed JSON,
/// missing fields, bad labels, or a labels file whose line count differs from the data file's.
Task loadLambada(const std::string& path);
Task loadArc(const std::string& path);
Task loadPiqa(const std::string& path, const std::string& labelsPath);
Task loadWinoGrande(const std::string& path, const std::string& labelsPath);
/// llama.cpp's HellaSwag text format: 6 lines per item (context, label 0-3, four endings).
Task loadHellaSwag(const std::string& path);
/// Loads `k` from `dir` (taskFiles names); a missing file gives FormatError naming it. Passkey
/// is generated from the bundled evaluation text with PasskeyOptions' defaults.
Task loadTask(TaskKind k, const std::string& dir);

struct PasskeyOptions {
    int64_t items = 40;           ///< items generated
    int64_t haystackChars = 1500; ///< characters of text around the needle (whole sentences)
    uint64_t seed = 1234;         ///< draws the text stretch, the needle's depth and the key
    int digits = 5;               ///< digits of the key (the first is not 0)
};
/// Passkey items from `text` (`source` names it in Task::file). Deterministic: the same text,
/// options and seed give the same items on every platform. Throws ArgumentError when the text
/// is shorter than the haystack or the options are out of range.
Task makePasskeyTask(const std::string& text, const std::string& source,
                     const PasskeyOptions& opts = {});

struct LongContextOptions {
    int64_t contextChars = 1500; ///< characters of filler + passage an item aims at
    uint64_t seed = 1234;        ///< draws each item's filler stretch
};
/// LAMBADA at extended context (kind LambadaLong): every item of `lambada` (a loadLambada task)
/// gets a stretch of whole sentences of `text` put before its passage, separated by a blank line,
/// so that filler + passage is about `contextChars` characters (no filler when the passage alone
/// is that long); the target word and its scoring are LAMBADA's. The filler starts at a sentence
/// drawn per item from std::mt19937_64(seed), so the items are the same on every platform.
/// `source` (the filler text's path) is added to Task::file. Throws ArgumentError when the text
/// has too few sentences.
Task makeLongContextLambada(const Task& lambada, const std::string& text, const std::string& source,
                            const LongContextOptions& opts = {});

/// Fixed pseudo-random subset: the first `limit` of a Fisher–Yates shuffle of 0..n−1 driven by
/// std::mt19937_64(seed) (the generator is specified by the standard, the shuffle is ours, so
/// the subset is the same on every platform), returned in ascending order. limit <= 0 or >= n:
/// all of 0..n−1.
std::vector<size_t> subsetIndices(size_t n, int64_t limit, uint64_t seed);

/// Token sequences to score: groups of continuations sharing one context.
struct PreparedGroup {
    std::vector<int32_t> context; ///< starts with BOS when the encoder adds one
    std::vector<std::vector<int32_t>> continuations;
    std::vector<size_t> choice; ///< index of each continuation in the item's choices
};
struct PreparedItem {
    std::vector<PreparedGroup> groups;
    std::vector<double> bytes; ///< per choice: continuation length in bytes (acc_norm)
    int label = 0;
};
struct PreparedTask {
    TaskKind kind = TaskKind::Lambada;
    std::string file;
    size_t totalItems = 0;         ///< items in the file
    std::vector<size_t> itemIndex; ///< index in the file of each prepared item
    std::vector<PreparedItem> items;
};

/// encode(text, addBos). The continuation's tokens are those of encode(context + continuation)
/// after the longest common prefix with encode(context) (lm-eval's split; at least one token).
using TaskEncoder = std::function<std::vector<int32_t>(const std::string&, bool)>;
PreparedTask prepareTask(const Task& task, const TaskEncoder& encode, int64_t limit, uint64_t seed);

/// Log-likelihood of one continuation: sum of ln p(token | everything before it), its token
/// count, and whether every token was the argmax (greedy match).
struct ContinuationScore {
    double logLikelihood = 0;
    int64_t tokens = 0;
    bool greedy = false;
};

/// Scores continuations given a context. score() may be called concurrently with different
/// `worker` values in [0, workers()).
class ContinuationScorer {
public:
    virtual ~ContinuationScorer() = default;
    virtual int workers() const { return 1; }
    virtual std::vector<ContinuationScore>
    score(int worker, const std::vector<int32_t>& context,
          const std::vector<std::vector<int32_t>>& continuations) = 0;
};

/// Runs a model: one forward of context + continuation per choice, logits only for the
/// continuation's positions. Sequences longer than `ctx` lose tokens from the left (lm-eval's
/// truncation); a continuation longer than `ctx` has only its last `ctx` tokens scored
/// (ContinuationScore::tokens says how many). Small models get one single-threaded session per
/// thread (items in parallel).
class ModelScorer final : public ContinuationScorer {
public:
    /// exactActivations: SessionOptions::exactActivations of its sessions.
    ModelScorer(const WeightSource& weights, int64_t ctx, int threads = 0,
                bool exactActivations = false);
    ~ModelScorer() override;
    int workers() const override;
    std::vector<ContinuationScore>
    score(int worker, const std::vector<int32_t>& context,
          const std::vector<std::vector<int32_t>>& continuations) override;
    /// Tokens run through the model so far (all workers).
    int64_t tokensEvaluated() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m;
};

struct TaskResult {
    TaskKind kind = TaskKind::Lambada;
    int64_t items = 0;            ///< items scored
    double acc = 0, accError = 0; ///< accError = sqrt(p (1 − p) / (n − 1))
    bool hasAccNorm = false;      ///< ARC, PIQA, HellaSwag
    double accNorm = 0, accNormError = 0;
    bool hasPpl = false;        ///< LAMBADA
    double ppl = 0;             ///< exp(−mean item log-likelihood)
    std::vector<int> predicted; ///< per item: chosen choice by acc (LAMBADA: greedy 0/1)
    std::vector<double> choiceLogLikelihood; ///< all choices' sums, items in order
    double seconds = 0;
    int64_t tokensEvaluated = 0; ///< when the scorer is a ModelScorer
    Status status = Status::Ok;
};

/// Binomial standard error sqrt(p (1 − p) / (n − 1)) (0 for n < 2).
double binomialError(double p, int64_t n);

/// Scores every prepared item (items in parallel over the scorer's workers). Progress after each
/// item ("piqa 12/100"); returning false stops with status Cancelled and the statistics of the
/// items finished so far. The numbers do not depend on the worker count.
TaskResult evaluateTask(const PreparedTask& task, ContinuationScorer& scorer, Progress& progress);

} // namespace lcw
