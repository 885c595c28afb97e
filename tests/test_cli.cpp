// End-to-end tests of lcw-cli: the commands and --json outputs are a contract other tools use.
#include "core/common/npy.h"
#include "test_util.h"

#include <QProcess>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace {

using Run = lcwtest::CliRun;
using lcwtest::runCli;

nlohmann::json parse(const Run& r) {
    try {
        return nlohmann::json::parse(r.out.toStdString());
    } catch (const std::exception& e) {
        qWarning("stdout was not JSON: %s\n%s", e.what(), r.out.constData());
        throw;
    }
}

QString demo() {
    return QString::fromStdString(lcwtest::sourcePath("resources/models/stories260K"));
}

nlohmann::json reference() {
    std::ifstream in(lcwtest::sharedPath("reference/stories260K.json"));
    return nlohmann::json::parse(in);
}

} // namespace

class TestCli : public QObject {
    Q_OBJECT
private slots:
    void usageAndUnknownCommand() {
        auto r = runCli({"--help"});
        QCOMPARE(r.code, 0);
        QVERIFY(r.out.contains("perplexity MODEL"));
        r = runCli({"frobnicate"});
        QCOMPARE(r.code, 2);
        r = runCli({"info", demo(), "--bogus"});
        QCOMPARE(r.code, 2);
        QVERIFY(r.err.contains("unknown option --bogus"));
    }

    void infoJsonOfDemoModel() {
        auto r = runCli({"info", demo(), "--json"});
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["architecture"].get<std::string>(), std::string("llama"));
        QCOMPARE(j["dim"].get<int>(), 64);
        QCOMPARE(j["n_layers"].get<int>(), 5);
        QCOMPARE(j["n_heads"].get<int>(), 8);
        QCOMPARE(j["n_kv_heads"].get<int>(), 4);
        QCOMPARE(j["hidden_dim"].get<int>(), 172);
        QCOMPARE(j["vocab_size"].get<int>(), 512);
        QCOMPARE(j["tied_embeddings"].get<bool>(), true);
        // 512*64 embed + 5*(2*64 norms + 64*64 q + 2*32*64 kv + 64*64 o + 3*172*64) + 64 final
        const long long expected =
            512LL * 64 + 5LL * (128 + 4096 + 4096 + 4096 + 3 * 172 * 64) + 64;
        QCOMPARE(j["parameters"].get<long long>(), expected);
        long long sum = 0;
        for (const auto& t : j["tensors"]) sum += t["parameters"].get<long long>();
        QCOMPARE(sum, expected);
        QVERIFY(j["tokenizer"].is_object());
    }

    void infoJsonOfOtherArchitectures() {
        LCW_REQUIRE_SHARED("models/tiny-random/mixtral_moe/model");
        auto r = runCli(
            {"info",
             QString::fromStdString(lcwtest::sharedPath("models/tiny-random/mixtral_moe/model")),
             "--json"});
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["architecture"].get<std::string>(), std::string("mixtral"));
        QCOMPARE(j["moe"]["experts"].get<int>(), 4);
        bool expertLayer = false;
        for (const auto& t : j["tensors"])
            expertLayer |= t["name"].get<std::string>() == "layers.1.mlp.experts.3.down";
        QVERIFY(expertLayer);
        r = runCli({"info",
                    QString::fromStdString(lcwtest::sharedPath("models/tiny-random/mamba/model")),
                    "--json"});
        QCOMPARE(r.code, 0);
        j = parse(r);
        QCOMPARE(j["ssm"]["state"].get<int>(), 16);
        QCOMPARE(j["position_embedding"].get<std::string>(), std::string("none"));
    }

    void tokenizeMatchesReference() {
        LCW_REQUIRE_SHARED("reference/stories260K.json");
        const auto ref = reference();
        auto r =
            runCli({"tokenize", demo(), "--text",
                    QString::fromStdString(ref["tokenize"]["text"].get<std::string>()), "--json"});
        QCOMPARE(r.code, 0);
        QCOMPARE(parse(r)["ids"].get<std::vector<int>>(),
                 ref["tokenize"]["ids_with_bos"].get<std::vector<int>>());
    }

    void generateGreedyMatchesReference() {
        LCW_REQUIRE_SHARED("reference/stories260K.json");
        const auto ref = reference();
        auto r = runCli({"generate", demo(), "--prompt", "Once upon a time", "-n", "60", "--json"});
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["prompt_ids"].get<std::vector<int>>(),
                 ref["greedy"]["prompt_ids"].get<std::vector<int>>());
        QCOMPARE(j["ids"].get<std::vector<int>>(), ref["greedy"]["ids"].get<std::vector<int>>());
        QCOMPARE(j["text"].get<std::string>(), ref["greedy"]["text"].get<std::string>());
        QVERIFY(j["decode_tokens_per_second"].get<double>() > 0);
        // The plain form prints the text and the speeds.
        r = runCli({"generate", demo(), "--prompt", "Once upon a time", "-n", "8", "--temp", "0.8",
                    "--top-k", "40", "--top-p", "0.9", "--seed", "7"});
        QCOMPARE(r.code, 0);
        QVERIFY(r.out.startsWith("Once upon a time"));
        QVERIFY(r.err.contains("tokens/s"));
    }

    void seededSamplingIsReproducible() {
        QStringList a = {"generate", demo(), "--prompt", "Tom", "-n",    "20",
                         "--temp",   "1.0",  "--seed",   "42",  "--json"};
        auto r1 = runCli(a), r2 = runCli(a);
        QCOMPARE(r1.code, 0);
        QCOMPARE(parse(r1)["ids"], parse(r2)["ids"]);
    }

    void logitsMatchReference() {
        LCW_REQUIRE_SHARED("reference/stories260K_logits_lily.npy");
        const auto ref = reference();
        QStringList ids;
        for (int id : ref["logits"]["ids"].get<std::vector<int>>()) ids << QString::number(id);
        const std::string out = lcwtest::tempDir("cli-logits") + "/l.npy";
        auto r = runCli(
            {"logits", demo(), "--ids", ids.join(','), "--out", QString::fromStdString(out)});
        QCOMPARE(r.code, 0);
        auto got = lcw::readNpy(out);
        auto want = lcw::readNpy(lcwtest::sharedPath("reference/stories260K_logits_lily.npy"));
        QCOMPARE(got.shape, want.shape);
        float maxAbs = 0;
        for (size_t i = 0; i < got.data.size(); ++i)
            maxAbs = std::max(maxAbs, std::fabs(got.data[i] - want.data[i]));
        QVERIFY2(maxAbs < 1e-4f, qPrintable(QString("max abs diff %1").arg(maxAbs)));
        // --text gives the same ids (BOS first) and so the same logits.
        const std::string out2 = lcwtest::tempDir("cli-logits2") + "/l.npy";
        r = runCli({"logits", demo(), "--text",
                    QString::fromStdString(ref["tokenize"]["text"].get<std::string>()), "--out",
                    QString::fromStdString(out2)});
        QCOMPARE(r.code, 0);
        QCOMPARE(lcw::readNpy(out2).data, got.data);
    }

    void perplexityOfDemoModel() {
        auto r = runCli(
            {"perplexity", demo(), "--text",
             QString::fromStdString(lcwtest::sourcePath("resources/data/tinystories_eval.txt")),
             "--ctx", "256", "--json"},
            300000);
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["tokens"].get<int>(), 94166);
        QCOMPARE(j["chunks"].get<int>(), 367);
        QCOMPARE(j["scored_tokens"].get<int>(), 46609);
        QVERIFY2(std::fabs(j["ppl"].get<double>() - 5.0170) <= 0.0005, j.dump().c_str());
        QVERIFY(j["ppl_se"].get<double>() > 0.03 && j["ppl_se"].get<double>() < 0.06);
        QVERIFY(r.err.contains("perplexity")); // progress on stderr
    }

    void perplexityWithF16KvCache() {
        // --kv-cache f16 (llama.cpp's default cache): the cache holds half the bytes, and the
        // perplexity stays within 0.002 of the f32 cache's 5.0170 (measured: see the output).
        auto r = runCli(
            {"perplexity", demo(), "--text",
             QString::fromStdString(lcwtest::sourcePath("resources/data/tinystories_eval.txt")),
             "--ctx", "256", "--kv-cache", "f16", "--json"},
            300000);
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["kv_cache"].get<std::string>(), std::string("f16"));
        QCOMPARE(j["kv_cache_bytes"].get<uint64_t>() * 2, j["kv_cache_bytes_f32"].get<uint64_t>());
        qInfo("PPL with an F16 KV cache %.5f (f32 cache 5.0170)", j["ppl"].get<double>());
        QVERIFY2(std::fabs(j["ppl"].get<double>() - 5.0170) <= 0.002, j.dump().c_str());
        r = runCli(
            {"perplexity", demo(), "--text",
             QString::fromStdString(lcwtest::sourcePath("resources/data/tinystories_eval.txt")),
             "--kv-cache", "f8"});
        QVERIFY(r.code != 0);
        QVERIFY2(r.err.contains("--kv-cache"), r.err.constData());
    }

    void badInputExitsWithOneAndNamesTheFile() {
        const std::string dir = lcwtest::tempDir("cli-bad");
        // Truncated GGUF.
        {
            std::ofstream f(dir + "/t.gguf", std::ios::binary);
            f.write("GGUF\x03\x00\x00\x00", 8);
        }
        auto r = runCli({"info", QString::fromStdString(dir + "/t.gguf")});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("t.gguf"), r.err.constData());
        // Missing path.
        r = runCli({"info", QString::fromStdString(dir + "/nope")});
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("nope"));
        // A folder with a broken config.json.
        std::filesystem::create_directories(dir + "/m");
        {
            std::ofstream f(dir + "/m/config.json");
            f << "{ \"model_type\": \"llama\", ";
        }
        r = runCli({"info", QString::fromStdString(dir + "/m")});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("config.json"), r.err.constData());
        // Ids outside the vocabulary.
        r = runCli({"logits", demo(), "--ids", "1,99999", "--out",
                    QString::fromStdString(dir + "/x.npy")});
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("99999"));
        QVERIFY(!std::filesystem::exists(dir + "/x.npy"));
        // Missing text file for perplexity.
        r = runCli({"perplexity", demo(), "--text", QString::fromStdString(dir + "/missing.txt")});
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("missing.txt"));
    }

    void synthTinyModelRoundTrip() {
        const std::string dir = lcwtest::tempDir("cli-synth");
        for (const char* dt : {"f32", "f16", "bf16"}) {
            const QString out = QString::fromStdString(dir + "/" + dt);
            auto r = runCli({"synth", "--arch", "llama", "--shape", "llama-tiny", "--dtype", dt,
                             "--out", out, "--quiet"});
            QCOMPARE(r.code, 0);
            r = runCli({"info", out, "--json"});
            QCOMPARE(r.code, 0);
            auto j = parse(r);
            QCOMPARE(j["dim"].get<int>(), 64);
            QCOMPARE(j["dtypes"].begin().key(), std::string(dt));
            r = runCli({"generate", out, "--prompt", "hello", "-n", "5", "--json"});
            QCOMPARE(r.code, 0);
            auto g = parse(r);
            QVERIFY(g["generated_tokens"].get<int>() == 5 || g["stopped_at_eos"].get<bool>());
        }
        auto r =
            runCli({"synth", "--shape", "gpt-17", "--out", QString::fromStdString(dir + "/x")});
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("gpt-17"));
    }
};

QTEST_GUILESS_MAIN(TestCli)
#include "test_cli.moc"
