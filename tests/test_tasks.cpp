// Tests of core/eval/tasks (zero-shot tasks by log-likelihood) and core/eval/results_store:
// exact accuracies of a fixed scorer on hand-made three-item files of every format, the loaders'
// errors, the fixed subset, the model scorer against a direct computation, and the results
// store's append / load / corrupt-line handling.
#include "core/common/error.h"
#include "core/eval/results_store.h"
#include "core/eval/tasks.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <thread>

using namespace lcw;

namespace {

void writeFile(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
}

/// Byte-level encoder: BOS = 0, byte b = b + 1.
std::vector<int32_t> byteEncode(const std::string& s, bool bos) {
    std::vector<int32_t> out;
    if (bos) out.push_back(0);
    for (unsigned char c : s) out.push_back(int32_t(c) + 1);
    return out;
}

int countX(const std::vector<int32_t>& t) {
    return int(std::count(t.begin(), t.end(), int32_t('x') + 1));
}

/// A fixed scorer: ln-likelihood = −(number of 'x' in context and continuation); greedy when the
/// continuation holds no 'x'. The expected accuracies follow by hand.
class XScorer final : public ContinuationScorer {
public:
    std::vector<ContinuationScore>
    score(int, const std::vector<int32_t>& context,
          const std::vector<std::vector<int32_t>>& continuations) override {
        std::vector<ContinuationScore> out;
        for (const auto& c : continuations) {
            ContinuationScore s;
            s.tokens = int64_t(c.size());
            s.logLikelihood = -double(countX(context) + countX(c));
            s.greedy = countX(c) == 0;
            out.push_back(s);
        }
        return out;
    }
};

std::string demoPath() {
    return lcwtest::sourcePath("resources/models/stories260K");
}

template <class F> QString errorOf(F&& f) {
    try {
        f();
    } catch (const FormatError& e) {
        return QString::fromStdString(e.what());
    } catch (const std::exception& e) {
        return "wrong type: " + QString::fromStdString(e.what());
    }
    return "no error";
}

} // namespace

class TestTasks : public QObject {
    Q_OBJECT

    std::string m_dir;

    TaskResult runX(const Task& t) {
        XScorer s;
        NullProgress np;
        return evaluateTask(prepareTask(t, byteEncode, 0, 1), s, np);
    }

private slots:
    void initTestCase() {
        m_dir = lcwtest::tempDir("tasks");
        writeFile(m_dir + "/lambada_test.jsonl", "{\"text\": \"the cat sat on the mat\"}\n"
                                                 "{\"text\": \"she saw a fox\"}\n"
                                                 "{\"text\": \"a big box of xxtra\"}\n");
        writeFile(
            m_dir + "/ARC-Easy-Test.jsonl",
            R"({"id":"1","question":{"stem":"Q one?","choices":[{"text":"good","label":"A"},{"text":"xbad","label":"B"}]},"answerKey":"A"})"
            "\n"
            R"({"id":"2","question":{"stem":"Q two?","choices":[{"text":"x","label":"A"},{"text":"xxbbbbbbbbbbbbbbbbbb","label":"B"}]},"answerKey":"B"})"
            "\n"
            R"({"id":"3","question":{"stem":"Q three?","choices":[{"text":"xx","label":"1"},{"text":"xyz","label":"2"},{"text":"q","label":"3"}]},"answerKey":"2"})"
            "\n");
        writeFile(m_dir + "/piqa_dev.jsonl",
                  R"({"goal": "g1", "sol1": "fine", "sol2": "xfine"})"
                  "\n"
                  R"({"goal": "g2", "sol1": "a", "sol2": "x"})"
                  "\n"
                  R"({"goal": "g3", "sol1": "x", "sol2": "xxbbbbbbbbbbbbbbbbbb"})"
                  "\n");
        writeFile(m_dir + "/piqa_dev-labels.lst", "0\n1\n1\n");
        writeFile(
            m_dir + "/winogrande_1.1_dev.jsonl",
            R"({"sentence": "Sam saw _ at home.", "option1": "bob", "option2": "xena", "answer": "1"})"
            "\n"
            R"({"sentence": "_ is here.", "option1": "xa", "option2": "b", "answer": "1"})"
            "\n"
            R"({"sentence": "He met _ today.", "option1": "xx", "option2": "xy", "answer": "2"})"
            "\n");
        writeFile(m_dir + "/winogrande_1.1_dev-labels.lst", "1\n1\n2\n");
        writeFile(m_dir + "/hellaswag_val_full.txt", "A man sits.\n0\ngood\nxa\nxb\nxc\n"
                                                     "B\n3\nx\nxx\nxxx\nxxbbbbbbbbbbbbbbbbbb\n"
                                                     "C\n1\na\nb\nc\nd\n");
    }

    /// acc / acc_norm / ppl of the fixed scorer on the hand-made files, worked out by hand.
    void handMadeAccuracyIsExact() {
        const double third = 1.0 / 3.0, se = std::sqrt(third * (1 - third) / 2); // = 1/3
        {
            const TaskResult r = runX(loadTask(TaskKind::Lambada, m_dir));
            QCOMPARE(r.items, int64_t(3));
            // Greedy: only " mat" has no 'x'. ll: 0, −1 (" fox"), −3 (box + " xxtra").
            QCOMPARE(r.acc, third);
            QVERIFY(std::abs(r.accError - se) < 1e-15);
            QVERIFY(r.hasPpl && !r.hasAccNorm);
            QVERIFY(std::abs(r.ppl - std::exp(4.0 / 3.0)) < 1e-12);
        }
        {
            // Item 1: A by both. Item 2: acc A (−1 vs −2), acc_norm B (−1/2 vs −2/21).
            // Item 3: "q" (no x) wins both, label "2" → both wrong.
            const TaskResult r = runX(loadTask(TaskKind::ArcEasy, m_dir));
            QCOMPARE(r.acc, third);
            QCOMPARE(r.accNorm, 2 * third);
            QVERIFY(std::abs(r.accNormError - se) < 1e-15);
            QCOMPARE(r.predicted, (std::vector<int>{0, 0, 2}));
        }
        {
            // Labels 0,1,1: item 1 right (both), item 2 wrong (both), item 3 acc_norm only.
            const TaskResult r = runX(loadTask(TaskKind::Piqa, m_dir));
            QCOMPARE(r.acc, third);
            QCOMPARE(r.accNorm, 2 * third);
        }
        {
            // Partial scoring: the option's 'x' count sits in the context; labels 1,1,2.
            const TaskResult r = runX(loadTask(TaskKind::WinoGrande, m_dir));
            QCOMPARE(r.predicted, (std::vector<int>{0, 1, 1}));
            QCOMPARE(r.acc, 2 * third);
            QVERIFY(!r.hasAccNorm);
        }
        {
            const TaskResult r = runX(loadTask(TaskKind::HellaSwag, m_dir));
            QCOMPARE(r.acc, third);
            QCOMPARE(r.accNorm, 2 * third);
            QCOMPARE(r.choiceLogLikelihood.size(), size_t(12));
        }
    }

    void preparationSplitsAndGroups() {
        const Task t = loadTask(TaskKind::WinoGrande, m_dir);
        QCOMPARE(t.items[0].choices[0].context, std::string("Sam saw bob"));
        QCOMPARE(t.items[0].choices[1].continuation, std::string(" at home."));
        const PreparedTask p = prepareTask(t, byteEncode, 0, 1);
        // Different contexts: two groups of one; the continuation tokens are " at home.".
        QCOMPARE(p.items[0].groups.size(), size_t(2));
        QCOMPARE(p.items[0].groups[0].continuations[0], byteEncode(" at home.", false));
        QCOMPARE(p.items[0].groups[0].context, byteEncode("Sam saw bob", true));
        // ARC: one shared context, every choice in one group.
        const PreparedTask a = prepareTask(loadTask(TaskKind::ArcEasy, m_dir), byteEncode, 0, 1);
        QCOMPARE(a.items[2].groups.size(), size_t(1));
        QCOMPARE(a.items[2].groups[0].continuations.size(), size_t(3));
        QCOMPARE(a.items[2].bytes, (std::vector<double>{3, 4, 2}));
    }

    void subsetIsFixedAndUniform() {
        const auto s1 = subsetIndices(1000, 50, 7);
        QCOMPARE(s1, subsetIndices(1000, 50, 7));
        QCOMPARE(s1.size(), size_t(50));
        QVERIFY(std::is_sorted(s1.begin(), s1.end()));
        QCOMPARE(std::set<size_t>(s1.begin(), s1.end()).size(), size_t(50));
        QVERIFY(s1 != subsetIndices(1000, 50, 8));
        QCOMPARE(subsetIndices(5, 0, 1), (std::vector<size_t>{0, 1, 2, 3, 4}));
        QCOMPARE(subsetIndices(5, 9, 1).size(), size_t(5));
        // Every index is drawn about equally often over many seeds.
        std::vector<int> hits(20, 0);
        for (uint64_t seed = 0; seed < 2000; ++seed)
            for (size_t i : subsetIndices(20, 5, seed)) ++hits[i];
        for (int h : hits) QVERIFY2(h > 400 && h < 600, qPrintable(QString::number(h)));
        const PreparedTask p = prepareTask(loadTask(TaskKind::HellaSwag, m_dir), byteEncode, 2, 3);
        QCOMPARE(p.items.size(), size_t(2));
        QCOMPARE(p.itemIndex, subsetIndices(3, 2, 3));
    }

    void loaderErrorsNameFileAndLine() {
        const std::string d = m_dir + "/bad";
        std::filesystem::create_directories(d);
        writeFile(d + "/l.jsonl", "{\"text\": \"a b\"}\n{\"text\": 3}\n");
        QVERIFY(errorOf([&] { loadLambada(d + "/l.jsonl"); }).contains("l.jsonl: line 2"));
        writeFile(d + "/l2.jsonl", "{\"text\": \"a b\"}\n{not json\n");
        QVERIFY(errorOf([&] { loadLambada(d + "/l2.jsonl"); }).contains("line 2: invalid JSON"));
        writeFile(d + "/l3.jsonl", "{\"text\": \"oneword\"}\n");
        QVERIFY(errorOf([&] { loadLambada(d + "/l3.jsonl"); }).contains("no last word"));
        writeFile(
            d + "/a.jsonl",
            R"({"question":{"stem":"s","choices":[{"text":"a","label":"A"},{"text":"b","label":"B"}]},"answerKey":"C"})"
            "\n");
        QVERIFY(errorOf([&] { loadArc(d + "/a.jsonl"); }).contains("answerKey \"C\""));
        writeFile(d + "/p.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b"})"
                                  "\n");
        writeFile(d + "/p.lst", "0\n1\n");
        QVERIFY(errorOf([&] { loadPiqa(d + "/p.jsonl", d + "/p.lst"); }).contains("2 labels"));
        writeFile(d + "/p2.lst", "2\n");
        QVERIFY(errorOf([&] {
                    loadPiqa(d + "/p.jsonl", d + "/p2.lst");
                }).contains("p2.lst: line 1: expected a label 0..1"));
        writeFile(d + "/w.jsonl", R"({"sentence": "no blank", "option1": "a", "option2": "b"})"
                                  "\n");
        writeFile(d + "/w.lst", "1\n");
        QVERIFY(errorOf([&] {
                    loadWinoGrande(d + "/w.jsonl", d + "/w.lst");
                }).contains("w.jsonl: line 1: \"sentence\" has no \"_\""));
        writeFile(d + "/h.txt", "ctx\n0\na\nb\nc\n");
        QVERIFY(errorOf([&] { loadHellaSwag(d + "/h.txt"); }).contains("not a multiple of 6"));
        writeFile(d + "/h2.txt", "ctx\n7\na\nb\nc\nd\n");
        QVERIFY(errorOf([&] { loadHellaSwag(d + "/h2.txt"); }).contains("h2.txt: line 2"));
        QVERIFY(errorOf([&] { loadTask(TaskKind::Piqa, d); }).contains("piqa_dev.jsonl"));
        QVERIFY(errorOf([&] { loadTask(TaskKind::Piqa, d); }).contains("not found"));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, parseTaskList("piqa,nope"));
        QCOMPARE(parseTaskList("all").size(), size_t(5));
        QCOMPARE(parseTaskList("piqa,lambada,piqa"),
                 (std::vector<TaskKind>{TaskKind::Piqa, TaskKind::Lambada}));
    }

    /// The model scorer against a direct computation with all logits, on the demo model.
    void modelScorerMatchesDirectComputation() {
        auto model = Model::load(demoPath());
        const Tokenizer& tk = model->tokenizer();
        const std::vector<int32_t> ctx = tk.encode("Once upon a time, there was a", true);
        const std::vector<std::vector<int32_t>> conts = {tk.encode(" little girl", false),
                                                         tk.encode(" big dog named Max", false)};
        ModelScorer scorer(*model, 512, 1);
        const auto got = scorer.score(0, ctx, conts);
        QCOMPARE(got.size(), size_t(2));
        const int64_t vocab = model->spec().vocab;
        for (size_t k = 0; k < conts.size(); ++k) {
            std::vector<int32_t> seq = ctx;
            seq.insert(seq.end(), conts[k].begin(), conts[k].end());
            Session s(*model);
            std::vector<float> logits;
            s.forward(seq, logits, true);
            double ll = 0;
            bool greedy = true;
            for (size_t i = 0; i < conts[k].size(); ++i) {
                const float* row = logits.data() + int64_t(ctx.size() - 1 + i) * vocab;
                double mx = row[0], sum = 0;
                int64_t am = 0;
                for (int64_t v = 0; v < vocab; ++v)
                    if (row[v] > mx) mx = row[v], am = v;
                for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
                ll += double(row[conts[k][i]]) - mx - std::log(sum);
                greedy = greedy && am == conts[k][i];
            }
            QVERIFY2(std::abs(got[k].logLikelihood - ll) < 1e-3,
                     qPrintable(QString("%1 vs %2").arg(got[k].logLikelihood).arg(ll)));
            QCOMPARE(got[k].greedy, greedy);
            QCOMPARE(got[k].tokens, int64_t(conts[k].size()));
        }
        // Left truncation: a context longer than the window keeps its last tokens.
        ModelScorer small(*model, 8, 1);
        const auto t = small.score(0, ctx, {conts[0]});
        QVERIFY(std::isfinite(t[0].logLikelihood) && t[0].logLikelihood < 0);
        QCOMPARE(t[0].tokens, int64_t(conts[0].size()));
        const auto longCont =
            tk.encode(" and they played together all day long in the park", false);
        QVERIFY(longCont.size() > 8);
        const auto l = small.score(0, ctx, {longCont});
        QCOMPARE(l[0].tokens, int64_t(8)); // only the last 8 tokens fit the window
        QVERIFY(std::isfinite(l[0].logLikelihood) && l[0].logLikelihood < 0);
    }

    /// A real run on the demo model over the shared task files with --limit: accuracies in
    /// [0, 1], the s.e. formula, and identical numbers for a configuration equal to the
    /// baseline and for any worker count.
    void demoModelOnSharedTasks() {
        LCW_REQUIRE_SHARED("data/tasks/piqa_dev.jsonl");
        auto model = Model::load(demoPath());
        auto copy = Model::load(demoPath());
        const Tokenizer& tk = model->tokenizer();
        auto enc = [&](const std::string& s, bool bos) { return tk.encode(s, bos); };
        const std::string dir = lcwtest::sharedPath("data/tasks");
        for (TaskKind k : parseTaskList("all")) {
            const PreparedTask p = prepareTask(loadTask(k, dir), enc, 12, 1234);
            QCOMPARE(p.items.size(), size_t(12));
            NullProgress np;
            ModelScorer s1(*model, 512, 1), s2(*copy, 512, 2);
            const TaskResult a = evaluateTask(p, s1, np);
            const TaskResult b = evaluateTask(p, s2, np);
            QCOMPARE(a.items, int64_t(12));
            QVERIFY(a.acc >= 0 && a.acc <= 1);
            QVERIFY(std::abs(a.accError - std::sqrt(a.acc * (1 - a.acc) / 11)) < 1e-12);
            QCOMPARE(a.choiceLogLikelihood, b.choiceLogLikelihood);
            QCOMPARE(a.acc, b.acc);
            QCOMPARE(a.accNorm, b.accNorm);
            QVERIFY(a.tokensEvaluated > 0);
            for (double ll : a.choiceLogLikelihood) QVERIFY(ll < 0);
        }
    }

    /// Passkey items: deterministic, the key inside the context once per sentence of the needle,
    /// the right shape; a scorer that retrieves only from the last W context tokens gets exactly
    /// the items whose needle lies there.
    void passkeyItemsAreDeterministicAndScoredByRetrieval() {
        std::string text;
        for (int i = 0; i < 400; ++i)
            text += "Sentence " + std::to_string(i) + " is a quiet line. ";
        PasskeyOptions o;
        o.items = 30, o.haystackChars = 600, o.seed = 5;
        const Task t = makePasskeyTask(text, "synthetic", o);
        QCOMPARE(t.kind, TaskKind::Passkey);
        QCOMPARE(t.items.size(), size_t(30));
        const Task again = makePasskeyTask(text, "synthetic", o);
        o.seed = 6;
        const Task other = makePasskeyTask(text, "synthetic", o);
        std::set<size_t> depths;
        for (size_t i = 0; i < t.items.size(); ++i) {
            const TaskChoice& c = t.items[i].choices[0];
            QCOMPARE(c.context, again.items[i].choices[0].context);
            QCOMPARE(c.continuation.size(), size_t(6));
            QVERIFY(c.continuation[0] == ' ' && c.continuation[1] != '0');
            const std::string key = c.continuation.substr(1);
            for (char ch : key) QVERIFY(ch >= '0' && ch <= '9');
            const size_t at = c.context.find("The pass key is " + key + ". Remember it. " + key +
                                             " is the pass key.");
            QVERIFY(at != std::string::npos);
            depths.insert(at);
            QVERIFY(c.context.size() > 500 && c.context.size() < 800);
            QVERIFY(c.context.ends_with("\n\nWhat is the pass key? The pass key is"));
        }
        QVERIFY(depths.size() > 8); // the needle's depth varies (17 sentence boundaries)
        QVERIFY(t.items[0].choices[0].context != other.items[0].choices[0].context);

        // Retrieval from the last W tokens of the context only (as a sliding window would).
        class WindowScorer final : public ContinuationScorer {
        public:
            size_t window = 0;
            std::vector<ContinuationScore>
            score(int, const std::vector<int32_t>& context,
                  const std::vector<std::vector<int32_t>>& conts) override {
                const size_t from = context.size() > window ? context.size() - window : 0;
                const std::vector<int32_t> seen(context.begin() + std::ptrdiff_t(from),
                                                context.end());
                std::vector<ContinuationScore> out;
                for (const auto& c : conts) {
                    const std::vector<int32_t> key(c.begin() + 1, c.end()); // without " "
                    ContinuationScore s;
                    s.tokens = int64_t(c.size());
                    s.greedy =
                        std::search(seen.begin(), seen.end(), key.begin(), key.end()) != seen.end();
                    s.logLikelihood = s.greedy ? -0.1 : -10.0;
                    out.push_back(s);
                }
                return out;
            }
        };
        WindowScorer ws;
        ws.window = 100000;
        NullProgress np;
        const PreparedTask p = prepareTask(t, byteEncode, 0, 1);
        QCOMPARE(evaluateTask(p, ws, np).acc, 1.0);
        ws.window = 300;
        int64_t want = 0;
        for (const TaskItem& it : t.items) {
            const std::string& ctx = it.choices[0].context;
            const std::string key = it.choices[0].continuation.substr(1);
            // the key's last mention ends inside the last 300 bytes (+ BOS)
            want += ctx.size() + 1 - (ctx.rfind(key) + 1) <= 300;
        }
        const TaskResult r = evaluateTask(p, ws, np);
        QCOMPARE(int64_t(std::lround(r.acc * 30)), want);
        QVERIFY(want > 0 && want < 30);
        QVERIFY(r.hasPpl);

        QCOMPARE(parseTaskName("passkey"), TaskKind::Passkey);
        const auto all = parseTaskList("all");
        QVERIFY(std::find(all.begin(), all.end(), TaskKind::Passkey) == all.end());
        QVERIFY_THROWS_EXCEPTION(ArgumentError, makePasskeyTask("Too short. Really.", "x", o));
        // without a text: the bundled evaluation text
        const Task bundled = loadTask(TaskKind::Passkey, "/nonexistent");
        QCOMPARE(bundled.items.size(), size_t(PasskeyOptions{}.items));
    }

    /// LAMBADA at extended context: every passage kept whole at the end after a blank line,
    /// filler of whole sentences of the text up to the target length, deterministic per item
    /// (an item's filler does not depend on the other items), none for a passage that fills the
    /// target alone; scored as LAMBADA (greedy + ppl).
    void lambadaLongPutsFillerBeforeThePassage() {
        std::string text;
        for (int i = 0; i < 400; ++i)
            text += "Sentence " + std::to_string(i) + " is a quiet line. ";
        Task lambada;
        lambada.kind = TaskKind::Lambada;
        lambada.file = "lambada.jsonl";
        for (int i = 0; i < 20; ++i) {
            TaskItem it;
            it.line = i + 1;
            it.choices.push_back({std::string(size_t(20 + 37 * i), 'a') + " he said to", " Tom"});
            lambada.items.push_back(it);
        }
        LongContextOptions o;
        o.contextChars = 600;
        o.seed = 9;
        const Task t = makeLongContextLambada(lambada, text, "filler.txt", o);
        QCOMPARE(t.kind, TaskKind::LambadaLong);
        QCOMPARE(t.file, std::string("lambada.jsonl + filler.txt"));
        QCOMPARE(t.items.size(), lambada.items.size());
        const Task again = makeLongContextLambada(lambada, text, "filler.txt", o);
        Task shorter = lambada;
        shorter.items[3].choices[0].context = "short";
        const Task other = makeLongContextLambada(shorter, text, "filler.txt", o);
        std::set<std::string> fillers;
        const size_t longestSentence = std::string("Sentence 399 is a quiet line. ").size();
        for (size_t i = 0; i < t.items.size(); ++i) {
            const TaskChoice& c = t.items[i].choices[0];
            const std::string& passage = lambada.items[i].choices[0].context;
            QCOMPARE(c.continuation, std::string(" Tom"));
            QCOMPARE(t.items[i].line, lambada.items[i].line);
            QCOMPARE(c.context, again.items[i].choices[0].context);
            if (i != 3) QCOMPARE(c.context, other.items[i].choices[0].context);
            if (passage.size() + 2 + 16 > 600) {
                QCOMPARE(c.context, passage); // no room for filler
                continue;
            }
            QVERIFY(c.context.ends_with("\n\n" + passage));
            const std::string filler = c.context.substr(0, c.context.size() - passage.size() - 2);
            QVERIFY(filler.starts_with("Sentence ") && filler.ends_with(" is a quiet line."));
            QVERIFY(text.find(filler) != std::string::npos);
            QVERIFY(c.context.size() <= 600);
            QVERIFY(c.context.size() + longestSentence + 2 >= 600);
            fillers.insert(filler.substr(0, 13));
        }
        QVERIFY(fillers.size() > 5); // the stretches start at different sentences
        o.seed = 10;
        QVERIFY(
            makeLongContextLambada(lambada, text, "filler.txt", o).items[0].choices[0].context !=
            t.items[0].choices[0].context);

        // Scored as LAMBADA: one continuation, greedy + ppl; XScorer (log-likelihood = −the
        // x's seen; the filler has none) gives the plain passages' numbers.
        XScorer s;
        NullProgress np;
        const TaskResult r = evaluateTask(prepareTask(t, byteEncode, 0, 1), s, np);
        const TaskResult r0 = evaluateTask(prepareTask(lambada, byteEncode, 0, 1), s, np);
        QVERIFY(r.hasPpl);
        QVERIFY(!r.hasAccNorm);
        QCOMPARE(r.items, int64_t(20));
        QCOMPARE(r.choiceLogLikelihood, r0.choiceLogLikelihood);
        QCOMPARE(r.acc, r0.acc);

        QCOMPARE(parseTaskName("lambada_long"), TaskKind::LambadaLong);
        QCOMPARE(std::string(taskName(TaskKind::LambadaLong)), std::string("lambada_long"));
        const auto all = parseTaskList("all");
        QVERIFY(std::find(all.begin(), all.end(), TaskKind::LambadaLong) == all.end());
        o.contextChars = 8;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, makeLongContextLambada(lambada, text, "x", o));
        o.contextChars = 600;
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 makeLongContextLambada(lambada, "Too short. Really.", "x", o));
        // From a tasks folder: LAMBADA's file with the bundled text as filler.
        const Task fromDir = loadTask(TaskKind::LambadaLong, m_dir);
        const Task plain = loadTask(TaskKind::Lambada, m_dir);
        QCOMPARE(fromDir.items.size(), plain.items.size());
        for (size_t i = 0; i < plain.items.size(); ++i)
            QVERIFY(
                fromDir.items[i].choices[0].context.ends_with(plain.items[i].choices[0].context));
    }

    void cancelStopsEarly() {
        XScorer s;
        int calls = 0;
        FunctionProgress cancel([&](double, std::string_view) { return ++calls < 2; });
        const TaskResult r = evaluateTask(
            prepareTask(loadTask(TaskKind::HellaSwag, m_dir), byteEncode, 0, 1), s, cancel);
        QCOMPARE(r.status, Status::Cancelled);
        QVERIFY(r.items < 3);
    }

    // ------------------------------------------------------------------- results store
    void resultsAppendLoadAndCorruptLines() {
        const std::string path = m_dir + "/store/sub/results.jsonl";
        const std::string id1 = appendResult(path, {{"model", "m1"}, {"value", 1}});
        const std::string id2 = appendResult(path, {{"id", "fixed-id"}, {"model", "m2"}});
        QCOMPARE(id2, std::string("fixed-id"));
        // A torn last line and garbage between records are skipped, never the others.
        {
            std::ofstream f(path, std::ios::app);
            f << "{\"id\": \"torn\", \"mod\n";
            f << "[1, 2]\n";
        }
        appendResult(path, {{"id", "after"}});
        const ResultsFile f = loadResults(path);
        QCOMPARE(f.records.size(), size_t(3));
        QCOMPARE(f.records[0]["id"].get<std::string>(), id1);
        QVERIFY(f.records[0].contains("timestamp"));
        QCOMPARE(f.records[0]["timestamp"].get<std::string>().size(), size_t(20));
        QCOMPARE(f.records[2]["id"].get<std::string>(), std::string("after"));
        QCOMPARE(f.warnings.size(), size_t(2));
        QVERIFY(QString::fromStdString(f.warnings[0]).contains("results.jsonl: line 3"));
        QVERIFY(QString::fromStdString(f.warnings[1]).contains("line 4: not a JSON object"));
        QCOMPARE(findResult(f, "fixed")->at("model").get<std::string>(), std::string("m2"));
        QVERIFY(findResult(f, "nothing") == nullptr);
        QVERIFY(loadResults(m_dir + "/none.jsonl").records.empty());
    }

    void resultsAppendAfterATornLineKeepsTheRecord() {
        // An append interrupted by a kill leaves a last line without its newline; the next record
        // must not be glued to it (it would be lost with the torn line when read).
        const std::string path = m_dir + "/torn.jsonl";
        appendResult(path, {{"id", "first"}});
        {
            std::ofstream f(path, std::ios::app);
            f << "{\"id\": \"torn\", \"mod";
        }
        appendResult(path, {{"id", "second"}});
        const ResultsFile f = loadResults(path);
        QCOMPARE(f.records.size(), size_t(2));
        QCOMPARE(f.records[1]["id"].get<std::string>(), std::string("second"));
        QCOMPARE(f.warnings.size(), size_t(1));
        QVERIFY(QString::fromStdString(f.warnings[0]).contains("line 2"));
    }

    void resultsConcurrentAppendsDoNotInterleave() {
        const std::string path = m_dir + "/concurrent.jsonl";
        const std::string pad(5000, 'p'); // records larger than a pipe buffer
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&, t] {
                for (int i = 0; i < 50; ++i)
                    appendResult(path, {{"thread", t}, {"i", i}, {"pad", pad}});
            });
        for (auto& th : threads) th.join();
        const ResultsFile f = loadResults(path);
        QCOMPARE(f.records.size(), size_t(200));
        QVERIFY(f.warnings.empty());
        std::set<std::string> ids;
        for (const auto& r : f.records) ids.insert(r["id"].get<std::string>());
        QVERIFY(ids.size() > 150); // ids are time + 24 random bits
    }
};

QTEST_GUILESS_MAIN(TestTasks)
#include "test_tasks.moc"
