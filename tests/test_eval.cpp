// Tests of core/eval divergence from the baseline (KLD, Δp, same-top, PPL ratio) and of
// `lcw-cli eval`: identities, the percentile rule, and the reference numbers of the demo model
// against the llama.cpp-quantized q4_k_m GGUF.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/eval/divergence.h"
#include "core/eval/results_store.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <QProcess>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

using namespace lcw;

namespace {

/// Forwards every tensor to a model; optionally pretends to have another vocabulary size.
class Forward final : public WeightSource {
public:
    Forward(const WeightSource& base, int64_t vocab = 0) : m_base(base), m_spec(base.spec()) {
        if (vocab > 0) m_spec.vocab = vocab;
    }
    const ModelSpec& spec() const override { return m_spec; }
    const TensorView* find(std::string_view n) const override { return m_base.find(n); }

private:
    const WeightSource& m_base;
    ModelSpec m_spec;
};

std::string demoPath() {
    return lcwtest::sourcePath("resources/models/stories260K");
}
std::string textPath() {
    return lcwtest::sourcePath("resources/data/tinystories_eval.txt");
}
const char* kQ4 = "models/stories260K/gguf/stories260K-q4_k_m.gguf";

std::vector<int32_t> demoTokens(const Model& m) {
    return m.tokenizer().encode(readTextFile(textPath()), true);
}

PerplexityOptions demoOptions(const Model& m) {
    PerplexityOptions po;
    po.ctx = 256;
    po.batch = 256;
    po.bosId = m.tokenizer().bosId();
    return po;
}

nlohmann::json reference() {
    std::ifstream in(lcwtest::sharedPath("reference/stories260K.json"));
    return nlohmann::json::parse(in);
}

using Run = lcwtest::CliRun;
using lcwtest::runCli;

} // namespace

class TestEval : public QObject {
    Q_OBJECT
private slots:
    void percentilesInterpolate() {
        std::vector<double> v;
        for (int i = 100; i >= 0; --i) v.push_back(i); // 0..100, unsorted
        const Distribution d = summarize(v);
        QCOMPARE(d.mean, 50.0);
        QCOMPARE(d.median, 50.0);
        QCOMPARE(d.min, 0.0);
        QCOMPARE(d.max, 100.0);
        QVERIFY(std::abs(d.p999 - 99.9) < 1e-9);
        QVERIFY(std::abs(d.p99 - 99.0) < 1e-9);
        QVERIFY(std::abs(d.p95 - 95.0) < 1e-9);
        QVERIFY(std::abs(d.p10 - 10.0) < 1e-9);
        QVERIFY(std::abs(d.p01 - 0.1) < 1e-9);
        // s.e. of the mean, llama.cpp style: sqrt(var / (N - 1)) with the population variance.
        const double var = 10200.0 / 12.0; // (N^2 - 1) / 12 for N = 101 consecutive integers
        QVERIFY(std::abs(d.meanError - std::sqrt(var / 100.0)) < 1e-9);
        const Distribution e = summarize({});
        QCOMPARE(e.mean, 0.0);
        QCOMPARE(e.max, 0.0);
    }

    void selfComparisonIsExactlyZero() {
        auto model = Model::load(demoPath());
        const auto tokens = demoTokens(*model);
        PerplexityOptions po = demoOptions(*model);
        po.maxChunks = 24;
        Forward same(*model);
        NullProgress np;
        const DivergenceResult r =
            compareToBaseline(*model, {{"self", &same}, {"self2", model.get()}}, tokens, po, np);
        QCOMPARE(r.status, Status::Ok);
        QCOMPARE(r.chunks, int64_t(24));
        QCOMPARE(r.scoredTokens, int64_t(24 * 127));
        QCOMPARE(r.configs.size(), size_t(2));
        for (const auto& s : r.configs) {
            QCOMPARE(s.scoredTokens, r.scoredTokens);
            QCOMPARE(s.kld.mean, 0.0);
            QCOMPARE(s.kld.max, 0.0);
            QCOMPARE(s.kld.min, 0.0);
            QCOMPARE(s.deltaP.max, 0.0);
            QCOMPARE(s.deltaP.min, 0.0);
            QCOMPARE(s.rmsDeltaP, 0.0);
            QCOMPARE(s.sameTop, 1.0);
            QCOMPARE(s.sameTopError, 0.0);
            QCOMPARE(s.meanLnRatio, 0.0);
            QCOMPARE(s.pplRatio, 1.0);
            QCOMPARE(s.ppl, r.baselinePpl);
            QVERIFY(std::abs(s.lnProbCorrelation - 1.0) < 1e-12);
        }
        // The baseline PPL is the ordinary llama.cpp perplexity of the same chunks.
        const PerplexityResult p = computePerplexity(*model, tokens, po, np);
        QVERIFY(std::abs(p.ppl - r.baselinePpl) < 1e-9 * p.ppl);
        QVERIFY(std::abs(p.pplError - r.baselinePplError) < 1e-9 * p.ppl);
    }

    void numbersDoNotDependOnThreads() {
        LCW_REQUIRE_SHARED(kQ4);
        auto model = Model::load(demoPath());
        auto q = Model::load(lcwtest::sharedPath(kQ4));
        const auto tokens = demoTokens(*model);
        PerplexityOptions po = demoOptions(*model);
        po.maxChunks = 8;
        NullProgress np;
        po.threads = 1;
        const auto a = compareToBaseline(*model, {{"q", q.get()}}, tokens, po, np);
        po.threads = 2;
        const auto b = compareToBaseline(*model, {{"q", q.get()}}, tokens, po, np);
        QCOMPARE(a.configs[0].kld.mean, b.configs[0].kld.mean);
        QCOMPARE(a.configs[0].kld.max, b.configs[0].kld.max);
        QCOMPARE(a.configs[0].sameTop, b.configs[0].sameTop);
        QCOMPARE(a.configs[0].ppl, b.configs[0].ppl);
    }

    void rejectsBadInput() {
        auto model = Model::load(demoPath());
        const auto tokens = demoTokens(*model);
        PerplexityOptions po = demoOptions(*model);
        NullProgress np;
        Forward other(*model, model->spec().vocab + 1);
        try {
            compareToBaseline(*model, {{"other", &other}}, tokens, po, np);
            QFAIL("a different vocabulary was accepted");
        } catch (const ArgumentError& e) {
            QVERIFY2(std::string(e.what()).find("vocabulary") != std::string::npos, e.what());
        }
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 compareToBaseline(*model, {{"null", nullptr}}, tokens, po, np));
        PerplexityOptions sliding = po;
        sliding.mode = PerplexityMode::SlidingWindow;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, compareToBaseline(*model, {}, tokens, sliding, np));
        const std::vector<int32_t> shortText(tokens.begin(), tokens.begin() + 100);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, compareToBaseline(*model, {}, shortText, po, np));
    }

    void cancellationKeepsFinishedChunks() {
        auto model = Model::load(demoPath());
        const auto tokens = demoTokens(*model);
        PerplexityOptions po = demoOptions(*model);
        po.threads = 1;
        int calls = 0;
        FunctionProgress stop([&](double, std::string_view) { return ++calls <= 3; });
        const auto r = compareToBaseline(*model, {{"self", model.get()}}, tokens, po, stop);
        QCOMPARE(r.status, Status::Cancelled);
        QCOMPARE(r.chunks, int64_t(3));
        QCOMPARE(r.configs[0].scoredTokens, int64_t(3 * 127));
    }

    void q4kmMatchesReference() {
        LCW_REQUIRE_SHARED(kQ4);
        auto model = Model::load(demoPath());
        auto q = Model::load(lcwtest::sharedPath(kQ4));
        const auto tokens = demoTokens(*model);
        PerplexityOptions po = demoOptions(*model);
        po.exactActivations = true; // the weights' error alone: the exact reference
        NullProgress np;
        const DivergenceResult r = compareToBaseline(*model, {{"q4_k_m", q.get()}}, tokens, po, np);
        const auto ref = reference()["perplexity"]["gguf_q4_k_m"]["exact_dequant_fp32_activations"];
        const DivergenceStats& s = r.configs.at(0);
        qInfo("KLD %.6f ± %.6f median %.6f max %.6f same-top %.3f %% PPL %.4f RMS dp %.3f %%",
              s.kld.mean, s.kld.meanError, s.kld.median, s.kld.max, s.sameTop * 100, s.ppl,
              s.rmsDeltaP * 100);
        QCOMPARE(s.scoredTokens, ref["scored_tokens"].get<int64_t>());
        QVERIFY(std::abs(s.kld.mean - 0.01759) <= 0.0002);
        QVERIFY(std::abs(s.kld.mean - ref["mean_kld_vs_f32"].get<double>()) <= 2e-6);
        QVERIFY(std::abs(s.kld.meanError - ref["kld_se"].get<double>()) <= 2e-6);
        QVERIFY(std::abs(s.sameTop * 100 - 93.01) <= 0.2);
        QVERIFY(std::abs(s.sameTop * 100 - ref["same_top_percent"].get<double>()) <= 0.005);
        QVERIFY(std::abs(s.ppl - 5.1115) <= 0.0005);
        QVERIFY(std::abs(s.ppl - ref["ppl"].get<double>()) <= 5e-5);
        QVERIFY(std::abs(s.kld.median - ref["median_kld"].get<double>()) <= 2e-5);
        QVERIFY(std::abs(s.kld.max - ref["max_kld"].get<double>()) <= 1e-4);
        QVERIFY(std::abs(s.rmsDeltaP * 100 - ref["rms_dp_percent"].get<double>()) <= 0.002);
        // Consistency of the derived numbers.
        QVERIFY(std::abs(s.pplRatio - s.ppl / r.baselinePpl) < 1e-9);
        QVERIFY(s.kld.p01 <= s.kld.p1 && s.kld.p1 <= s.kld.median && s.kld.median <= s.kld.p99);
        QVERIFY(s.kld.min >= -1e-12);
        QVERIFY(s.lnProbCorrelation > 0.99 && s.lnProbCorrelation < 1.0);
        QVERIFY(s.sameTopError > 0.0011 && s.sameTopError < 0.0013);
    }

    // By default the Q5_0 / Q8_0 tensors of this Q4_K_M file multiply activations quantised to
    // 8-bit blocks as llama.cpp's kernels do: the numbers approach what llama.cpp b4747 prints
    // for the same file (reference/stories260K.json), not the exact ones.
    void q4kmQuantisedActivationsMatchLlamaCpp() {
        LCW_REQUIRE_SHARED(kQ4);
        auto model = Model::load(demoPath());
        auto q = Model::load(lcwtest::sharedPath(kQ4));
        const auto tokens = demoTokens(*model);
        const PerplexityOptions po = demoOptions(*model);
        NullProgress np;
        const DivergenceResult r = compareToBaseline(*model, {{"q4_k_m", q.get()}}, tokens, po, np);
        const auto ref = reference()["perplexity"]["gguf_q4_k_m"];
        const auto& llama = ref["llamacpp_b4747_prints"];
        const auto& exact = ref["exact_dequant_fp32_activations"];
        const DivergenceStats& s = r.configs.at(0);
        qInfo("8-bit activations: KLD %.6f same-top %.3f %% PPL %.4f (llama.cpp %.6f %.3f %.4f)",
              s.kld.mean, s.sameTop * 100, s.ppl, llama["mean_kld_vs_f32"].get<double>(),
              llama["same_top_percent"].get<double>(), llama["ppl"].get<double>());
        QCOMPARE(s.scoredTokens, exact["scored_tokens"].get<int64_t>());
        QVERIFY(std::abs(s.kld.mean - llama["mean_kld_vs_f32"].get<double>()) <= 1e-4);
        QVERIFY(std::abs(s.ppl - llama["ppl"].get<double>()) <= 1e-3);
        QVERIFY(std::abs(s.sameTop * 100 - llama["same_top_percent"].get<double>()) <= 0.05);
        // nearer llama.cpp than the exact numbers are
        QVERIFY(std::abs(s.kld.mean - llama["mean_kld_vs_f32"].get<double>()) <
                std::abs(exact["mean_kld_vs_f32"].get<double>() -
                         llama["mean_kld_vs_f32"].get<double>()));
    }

    void cliEvalJson() {
        LCW_REQUIRE_SHARED(kQ4);
        const QString q4 = QString::fromStdString(lcwtest::sharedPath(kQ4));
        auto r = runCli({"eval", QString::fromStdString(demoPath()), "--text",
                         QString::fromStdString(textPath()), "--ctx", "256", "--compare-model", q4,
                         "--preset", "W8A16", "--json", "--quiet", "--exact-activations"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto j = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(j["activations"].get<std::string>(), std::string("exact-f32"));
        QCOMPARE(j["ctx"].get<int>(), 256);
        QCOMPARE(j["scored_tokens"].get<int64_t>(), int64_t(46609));
        QVERIFY(std::abs(j["baseline"]["ppl"].get<double>() - 5.017) < 0.001);
        QCOMPARE(j["baseline"]["bits_per_weight"].get<double>(), 32.0);
        QCOMPARE(j["configs"].size(), size_t(2));
        // --preset columns come before --compare-model columns.
        const auto& w8 = j["configs"][0];
        const auto& q = j["configs"][1];
        QCOMPARE(w8["kind"].get<std::string>(), std::string("preset"));
        QCOMPARE(w8["name"].get<std::string>(), std::string("W8A16"));
        QVERIFY(w8["kld"]["mean"].get<double>() < q["kld"]["mean"].get<double>());
        QVERIFY(w8["bits_per_weight"].get<double>() < 32.0);
        QCOMPARE(q["kind"].get<std::string>(), std::string("model"));
        QVERIFY(std::abs(q["kld"]["mean"].get<double>() - 0.017588) < 2e-6);
        QVERIFY(std::abs(q["same_top_percent"].get<double>() - 93.006) < 0.005);
        QVERIFY(std::abs(q["ppl"].get<double>() - 5.1115) < 0.0005);
        QVERIFY(std::abs(q["rms_delta_p_percent"].get<double>() - 4.396) < 0.002);
        for (const char* k : {"mean", "se", "median", "p99_9", "p99", "p95", "p90", "p10", "p5",
                              "p1", "p0_1", "min", "max"}) {
            QVERIFY2(q["kld"].contains(k), k);
            QVERIFY2(q["delta_p_percent"].contains(k), k);
        }
        for (const char* k : {"ppl_ratio", "mean_ln_ppl_ratio", "mean_ln_ppl_ratio_se",
                              "ln_prob_correlation", "same_top_percent_se", "seconds"})
            QVERIFY2(q.contains(k), k);
        QVERIFY(j["timings"]["baseline_seconds"].get<double>() > 0);
        QCOMPARE(j["timings"]["config_seconds"].size(), size_t(2));
        QVERIFY(j["timings"]["total_seconds"].get<double>() > 0);

        // The table mode prints the baseline first; without --text the bundled text is used.
        r = runCli({"eval", QString::fromStdString(demoPath()), "--text",
                    QString::fromStdString(textPath()), "--ctx", "256", "--chunks", "4",
                    "--compare-model", q4, "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QString out = QString::fromUtf8(r.out);
        QVERIFY(out.contains("KLD mean"));
        QVERIFY(out.indexOf("baseline") < out.indexOf("stories260K-q4_k_m.gguf"));
        r = runCli({"eval", QString::fromStdString(demoPath()), "--ctx", "256", "--chunks", "2",
                    "--quiet", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto d = nlohmann::json::parse(r.out.toStdString());
        QVERIFY(d["text_file"].get<std::string>().find("tinystories_eval.txt") !=
                std::string::npos);
        QCOMPARE(d["tokens"].get<int>(), 94166);
        QCOMPARE(d["activations"].get<std::string>(), std::string("quantized-8bit"));
    }
    /// `results show` on a record that is not an eval record (no "baseline" / "configs": a
    /// sensitivity scan, another tool's line) shows it as JSON instead of crashing.
    void cliResultsShowOtherRecords() {
        if (!lcwtest::exists(LCW_CLI_PATH)) QSKIP("lcw-cli not built");
        const std::string dir = lcwtest::tempDir("results-other");
        const std::string path = dir + "/results.jsonl";
        std::filesystem::remove(path);
        lcw::appendResult(path, {{"id", "scan-1"}, {"kind", "sensitivity"}, {"model", "m"}});
        lcw::appendResult(path, {{"id", "odd-1"}, {"baseline", 3}, {"configs", {1, 2}}});
        lcw::appendResult(path, {{"id", "odd-2"}, {"baseline", {{"name", 1}}}, {"configs", {1}}});
        auto r = runCli({"results", "show", "scan-1", "--results", QString::fromStdString(path)});
        QCOMPARE(r.code, 0);
        QVERIFY(r.out.contains("\"kind\": \"sensitivity\""));
        QVERIFY(r.out.contains("not an evaluation record"));
        r = runCli({"results", "show", "odd-1", "--results", QString::fromStdString(path)});
        QCOMPARE(r.code, 0);
        // A record of the right keys but the wrong shapes: a clear error naming file and record.
        r = runCli({"results", "show", "odd-2", "--results", QString::fromStdString(path)});
        QVERIFY2(r.code == 0 ||
                     (r.code == 1 && r.err.contains("results.jsonl") && r.err.contains("odd-2")),
                 r.err.constData());
    }

    /// The eval contract with tasks, speed, size and the results store: `eval --tasks ... --limit
    /// --json` keys, a configuration equal to the baseline scoring identically, `results
    /// list/show` round trip, a corrupt line skipped with a warning, a missing task file named.
    void cliEvalTasksAndResults() {
        const std::string dir = lcwtest::tempDir("eval-tasks");
        auto write = [&](const std::string& name, const std::string& text) {
            std::ofstream(dir + "/" + name, std::ios::binary) << text;
        };
        write("lambada_test.jsonl", "{\"text\": \"Tom had a red ball\"}\n"
                                    "{\"text\": \"Lily went to the park\"}\n"
                                    "{\"text\": \"The dog was very happy\"}\n");
        write(
            "ARC-Easy-Test.jsonl",
            R"({"question":{"stem":"What is red?","choices":[{"text":"a ball","label":"A"},{"text":"the sky","label":"B"}]},"answerKey":"A"})"
            "\n"
            R"({"question":{"stem":"Who can fly?","choices":[{"text":"a bird","label":"A"},{"text":"a dog","label":"B"}]},"answerKey":"A"})"
            "\n");
        write("piqa_dev.jsonl",
              R"({"goal": "To eat soup,", "sol1": "use a spoon.", "sol2": "use a fork."})"
              "\n"
              R"({"goal": "To open a door,", "sol1": "turn the knob.", "sol2": "eat the knob."})"
              "\n");
        write("piqa_dev-labels.lst", "0\n0\n");
        write(
            "winogrande_1.1_dev.jsonl",
            R"({"sentence": "Tom gave Lily a toy because _ was kind.", "option1": "Tom", "option2": "Lily"})"
            "\n");
        write("winogrande_1.1_dev-labels.lst", "1\n");
        write("hellaswag_val_full.txt", "Tom went to the park. He\n0\nplayed on the swing.\nate "
                                        "a car.\nflew to the moon.\nwas a fish.\n");
        const std::string results = dir + "/results.jsonl";
        int64_t demoParams = 0;
        const auto demoModel = Model::load(demoPath());
        for (const auto& t : demoModel->tensors()) demoParams += t.numel();
        const QString demo = QString::fromStdString(demoPath());
        auto r = runCli({"eval",
                         demo,
                         "--ctx",
                         "64",
                         "--chunks",
                         "2",
                         "--compare-model",
                         demo,
                         "--tasks",
                         "lambada,arc_easy,piqa,winogrande,hellaswag",
                         "--tasks-dir",
                         QString::fromStdString(dir),
                         "--limit",
                         "2",
                         "--speed-tokens",
                         "4",
                         "--results",
                         QString::fromStdString(results),
                         "--json",
                         "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto j = nlohmann::json::parse(r.out.toStdString());
        for (const char* k : {"id", "timestamp", "lcw_version", "model_fingerprint", "text_sha256",
                              "settings", "task_files", "timings", "mode"})
            QVERIFY2(j.contains(k), k);
        QCOMPARE(j["settings"]["limit"].get<int>(), 2);
        QCOMPARE(j["settings"]["seed"].get<int>(), 1234);
        QCOMPARE(j["settings"]["tasks"].size(), size_t(5));
        QVERIFY(j["model_fingerprint"].get<std::string>().rfind("sha256:", 0) == 0);
        const auto& base = j["baseline"];
        const auto& same = j["configs"][0];
        QCOMPARE(same["kind"].get<std::string>(), std::string("model"));
        QCOMPARE(same["fingerprint"], j["model_fingerprint"]);
        for (const auto* c : {&base, &same}) {
            const auto& t = (*c)["tasks"];
            QCOMPARE(t.size(), size_t(5));
            QCOMPARE(t["lambada"]["items"].get<int>(), 2);
            QCOMPARE(t["winogrande"]["items"].get<int>(), 1); // --limit above the file's count
            QCOMPARE(t["piqa"]["items_in_file"].get<int>(), 2);
            for (const auto& [name, tj] : t.items()) {
                const double p = tj["acc"].get<double>();
                const int n = tj["items"].get<int>();
                QVERIFY(p >= 0 && p <= 1);
                const double se = n > 1 ? std::sqrt(p * (1 - p) / (n - 1)) : 0.0;
                QVERIFY(std::abs(tj["acc_se"].get<double>() - se) < 1e-12);
                QCOMPARE(tj.contains("acc_norm"),
                         name == "arc_easy" || name == "piqa" || name == "hellaswag");
            }
            QVERIFY(t["lambada"]["ppl"].get<double>() > 1);
            QVERIFY((*c)["speed"]["decode_tokens_per_second"].get<double>() > 0);
            QVERIFY((*c)["prefill_tokens_per_second"].get<double>() > 0);
            QVERIFY((*c)["peak_rss_bytes"].get<double>() > 1e6);
            QCOMPARE((*c)["model_bytes"].get<int64_t>(), 4 * demoParams); // all F32
            QCOMPARE((*c)["bits_per_weight"].get<double>(), 32.0);
        }
        // The same weights as a configuration: identical task numbers, zero divergence.
        QCOMPARE(same["tasks"]["piqa"]["acc"], base["tasks"]["piqa"]["acc"]);
        QCOMPARE(same["tasks"]["lambada"]["ppl"], base["tasks"]["lambada"]["ppl"]);
        QCOMPARE(same["tasks"]["hellaswag"]["acc_norm"], base["tasks"]["hellaswag"]["acc_norm"]);
        QCOMPARE(same["kld"]["max"].get<double>(), 0.0);
        QCOMPARE(same["ppl"], base["ppl"]);

        // results list / show round trip.
        const QString rf = QString::fromStdString(results);
        r = runCli({"results", "list", "--results", rf, "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        auto l = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(l["records"].size(), size_t(1));
        QCOMPARE(l["records"][0]["id"], j["id"]);
        const QString id = QString::fromStdString(j["id"].get<std::string>());
        r = runCli({"results", "show", id, "--results", rf, "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        QCOMPARE(nlohmann::json::parse(r.out.toStdString()), j);
        r = runCli({"results", "show", id, "--results", rf});
        QVERIFY2(r.code == 0, r.err.constData());
        QString out = QString::fromUtf8(r.out);
        QVERIFY(out.contains("piqa acc_norm") && out.contains("lambada ppl") &&
                out.contains("decode tok/s") && out.contains("KLD mean"));
        QVERIFY(out.indexOf("baseline") < out.indexOf("stories260K", out.indexOf("baseline")));

        // A corrupt line is reported and skipped; the next record is still appended and listed.
        std::ofstream(results, std::ios::app) << "{\"id\": \"torn\n";
        r = runCli({"eval", demo, "--ctx", "64", "--chunks", "1", "--speed-tokens", "0",
                    "--results", rf, "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        QVERIFY(QString::fromUtf8(r.out).contains("recorded in"));
        r = runCli({"results", "list", "--results", rf});
        QVERIFY2(r.code == 0, r.err.constData());
        QVERIFY(QString::fromUtf8(r.err).contains("results.jsonl: line 2: corrupt record"));
        QVERIFY(QString::fromUtf8(r.out).contains("2 record(s)"));
        QVERIFY(QString::fromUtf8(r.out).contains(id));
        r = runCli({"results", "show", "no-such-id", "--results", rf});
        QCOMPARE(r.code, 1);

        // A missing task file is named; sliding mode is labelled and has no divergence rows.
        std::filesystem::remove(dir + "/piqa_dev-labels.lst");
        r = runCli({"eval", demo, "--ctx", "64", "--chunks", "1", "--tasks", "piqa", "--tasks-dir",
                    QString::fromStdString(dir), "--no-record", "--quiet"});
        QCOMPARE(r.code, 1);
        QVERIFY2(QString::fromUtf8(r.err).contains("piqa_dev-labels.lst"), r.err.constData());
        r = runCli({"eval", demo, "--ctx", "128", "--mode", "sliding", "--stride", "64", "--chunks",
                    "3", "--preset", "W8A16", "--speed-tokens", "0", "--no-record", "--json",
                    "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto sl = nlohmann::json::parse(r.out.toStdString());
        QVERIFY(sl["mode"].get<std::string>().find("sliding window") != std::string::npos);
        QCOMPARE(sl["stride"].get<int>(), 64);
        QVERIFY(!sl["configs"][0].contains("kld"));
        QVERIFY(sl["configs"][0]["ppl"].get<double>() > 1);
        QVERIFY(!sl.contains("id"));
    }
};

QTEST_GUILESS_MAIN(TestEval)
#include "test_eval.moc"
