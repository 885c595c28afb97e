// `lcw-cli export` as users and outside checks call it: llama.cpp's presets reproduce
// llama-quantize's files of ../shared/models/gguf-k tensor for tensor (types and bytes), with and
// without the imatrix; -GPTQ presets keep the preset's types and write the workbench's blocks
// exactly; --format llamacpp-command writes the llama-quantize call and the type list; bad
// imatrix files and paths are clear errors that leave no file.
#include "core/io/gguf.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest/QtTest>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;

namespace {

QString shared(const std::string& rel) {
    return QString::fromStdString(lcwtest::sharedPath(rel));
}

// Every tensor of `mine` has the type and the bytes of the same tensor of `ref`.
void expectSameTensors(const std::string& mine, const std::string& ref) {
    const lcw::GgufFile a = lcw::readGguf(mine), b = lcw::readGguf(ref);
    QCOMPARE(a.tensors.size(), b.tensors.size());
    for (const auto& tb : b.tensors) {
        const lcw::TensorView* ta = a.findTensor(tb.name);
        QVERIFY2(ta, qPrintable(QString::fromStdString(tb.name + " missing in " + mine)));
        QVERIFY2(ta->dtype == tb.dtype,
                 qPrintable(QString::fromStdString(tb.name + ": " +
                                                   std::string(lcw::dtypeName(ta->dtype)) +
                                                   " vs " + std::string(lcw::dtypeName(tb.dtype)))));
        QCOMPARE(ta->nbytes, tb.nbytes);
        QVERIFY2(std::memcmp(ta->data, tb.data, tb.nbytes) == 0,
                 qPrintable(QString::fromStdString(tb.name + ": bytes differ from " + ref)));
    }
    QCOMPARE(a.getInt("general.file_type").value_or(-1), b.getInt("general.file_type").value_or(-2));
}

} // namespace

class TestExportCli : public QObject {
    Q_OBJECT
    std::string m_dir;

private slots:
    void initTestCase() { m_dir = lcwtest::tempDir("export-cli"); }
    void cleanupTestCase() { fs::remove_all(m_dir); }

    void presetsReproduceLlamaQuantize_data() {
        QTest::addColumn<QString>("preset");
        QTest::addColumn<bool>("imatrix");
        QTest::newRow("Q4_K_M") << "Q4_K_M" << false;
        QTest::newRow("Q5_K_M") << "Q5_K_M" << false;
        QTest::newRow("Q6_K") << "Q6_K" << false;
        QTest::newRow("Q4_K_M-imat") << "Q4_K_M" << true;
        QTest::newRow("Q2_K-imat") << "Q2_K" << true;
        QTest::newRow("Q3_K_M-imat") << "Q3_K_M" << true;
        QTest::newRow("IQ4_NL-imat") << "IQ4_NL" << true;
    }
    void presetsReproduceLlamaQuantize() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        QFETCH(QString, preset);
        QFETCH(bool, imatrix);
        const std::string out = m_dir + "/" + preset.toStdString() + (imatrix ? "-imat" : "") +
                                ".gguf";
        QStringList args = {"export", shared("models/gguf-k/model-f32.gguf"), "--preset", preset,
                            "--format", "gguf", "--out", QString::fromStdString(out), "--json",
                            "--quiet", "--kl-chunks", "2"};
        if (imatrix) args << "--imatrix" << shared("models/gguf-k/imatrix.dat");
        const auto r = lcwtest::runCli(args);
        QVERIFY2(r.code == 0, r.err.constData());
        const auto j = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(j["bytes"].get<uint64_t>(), uint64_t(fs::file_size(out)));
        // The report's KL divergence is of the file against the model itself: > 0, finite.
        QVERIFY(j["kl"]["kld_mean"].get<double>() > 0 && j["kl"]["kld_mean"].get<double>() < 5);
        expectSameTensors(out, lcwtest::sharedPath("models/gguf-k/model-" +
                                                   preset.toStdString() +
                                                   (imatrix ? "-imat" : "") + ".gguf"));
        if (imatrix) {
            const lcw::GgufFile g = lcw::readGguf(out);
            QCOMPARE(g.getInt("quantize.imatrix.entries_count").value_or(0), int64_t(28));
            QCOMPARE(g.getInt("quantize.imatrix.chunks_count").value_or(0), int64_t(24));
        }
    }

    // The same preset from the Hugging Face folder (Q/K rows permuted on the way): same bytes.
    void presetFromHfFolder() {
        LCW_REQUIRE_SHARED("models/gguf-k/hf/config.json");
        const std::string out = m_dir + "/hf-q4km.gguf";
        const auto r = lcwtest::runCli({"export", shared("models/gguf-k/hf"), "--preset", "q4_k_m",
                                        "--imatrix", shared("models/gguf-k/imatrix.dat"), "--out",
                                        QString::fromStdString(out), "--quiet", "--no-kl"});
        QVERIFY2(r.code == 0, r.err.constData());
        expectSameTensors(out, lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf"));
    }

    // Q4_K_M-GPTQ: llama.cpp's types and file size, the workbench's GPTQ blocks copied exactly
    // (KL of the written file against the workbench configuration is 0), and a lower KL
    // divergence from the model than llama-quantize's Q4_K_M with the same imatrix.
    void gptqPresetKeepsTypesAndBeatsLlamaCpp() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        const std::string out = m_dir + "/q4km-gptq.gguf";
        const auto r = lcwtest::runCli(
            {"export", shared("models/gguf-k/model-f32.gguf"), "--preset", "Q4_K_M-GPTQ",
             "--imatrix", shared("models/gguf-k/imatrix.dat"), "--calib",
             shared("models/gguf-k/calib.txt"), "--samples", "16", "--seq-len", "128", "--out",
             QString::fromStdString(out), "--json", "--quiet", "--kl-chunks", "2"},
            300000);
        QVERIFY2(r.code == 0, r.err.constData());
        const auto j = nlohmann::json::parse(r.out.toStdString());
        for (const auto& t : j["tensors"])
            QCOMPARE(t["status"].get<std::string>(), std::string("exact"));
        QCOMPARE(j["kl"]["against"].get<std::string>(), std::string("the workbench configuration"));
        QCOMPARE(j["kl"]["kld_mean"].get<double>(), 0.0);
        const std::string ref = lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf");
        const lcw::GgufFile a = lcw::readGguf(out), b = lcw::readGguf(ref);
        for (const auto& tb : b.tensors) QVERIFY(a.findTensor(tb.name)->dtype == tb.dtype);
        QCOMPARE(fs::file_size(out) / 1024, fs::file_size(ref) / 1024);
        const auto e = lcwtest::runCli({"eval", shared("models/gguf-k/model-f32.gguf"),
                                        "--compare-model", QString::fromStdString(out),
                                        "--compare-model", QString::fromStdString(ref), "--ctx",
                                        "128", "--chunks", "6", "--speed-tokens", "0", "--no-record", "--json",
                                        "--quiet"},
                                       300000);
        QVERIFY2(e.code == 0, e.err.constData());
        const auto ej = nlohmann::json::parse(e.out.toStdString());
        double kl[2] = {0, 0};
        int i = 0;
        for (const auto& c : ej["configs"]) {
            if (c.contains("kld_mean")) kl[i] = c["kld_mean"].get<double>();
            else if (c.contains("kld")) kl[i] = c["kld"]["mean"].get<double>();
            if (++i == 2) break;
        }
        qInfo("KLD vs the model: lcw Q4_K_M-GPTQ %.4f, llama.cpp Q4_K_M+imatrix %.4f", kl[0],
              kl[1]);
        QVERIFY(kl[0] > 0 && kl[1] > 0);
        QVERIFY(kl[0] < 0.9 * kl[1]);
    }

    void llamaCppCommand() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        const std::string sh = m_dir + "/q4km.sh";
        auto r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--preset",
                                  "Q4_K_M", "--format", "llamacpp-command", "--imatrix",
                                  shared("models/gguf-k/imatrix.dat"), "--out",
                                  QString::fromStdString(sh), "--json", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        auto j = nlohmann::json::parse(r.out.toStdString());
        QVERIFY(j["tensor_type_entries"].empty());
        std::ifstream scriptFile(sh);
        const std::string script((std::istreambuf_iterator<char>(scriptFile)), {});
        QVERIFY(script.find("llama-quantize") != std::string::npos);
        QVERIFY(script.find("--imatrix") != std::string::npos);
        QVERIFY(script.find("Q4_K_M") != std::string::npos);
        // The type list: one line per tensor of llama.cpp's file, with its type.
        const lcw::GgufFile ref =
            lcw::readGguf(lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf"));
        std::ifstream types(m_dir + "/q4km.types.txt");
        std::string name, type;
        size_t n = 0;
        while (types >> name >> type) {
            const lcw::TensorView* t = ref.findTensor(name);
            QVERIFY2(t, name.c_str());
            std::string want(lcw::dtypeName(t->dtype));
            std::string got = type;
            for (auto& c : got) c = char(std::tolower(static_cast<unsigned char>(c)));
            QCOMPARE(got, want);
            ++n;
        }
        QCOMPARE(n, ref.tensors.size());

        // A recipe that starts from Q4_K_M and changes one tensor: exactly that tensor is
        // given a --tensor-type entry (with the layers after it pinned where llama.cpp's
        // counters would shift).
        const std::string recipe = m_dir + "/edited.json";
        {
            std::ofstream f(recipe);
            f << R"({"lcw_recipe":1,"name":"edited","rules":[)"
              << R"({"targets":["*"],"weight":{"method":"q4_k"}},)"
              << R"({"targets":["layers.1.attn.q"],"weight":{"method":"q8_0"}},)"
              << R"({"targets":["layers.*.attn.v","layers.*.mlp.down"],"weight":{"method":"q6_k"}},)"
              << R"({"targets":["embed"],"weight":{"method":"q4_k"}},)"
              << R"({"targets":["lm_head"],"weight":{"method":"q6_k"}}]})";
        }
        r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--recipe",
                             QString::fromStdString(recipe), "--format", "llamacpp-command",
                             "--out", QString::fromStdString(m_dir + "/edited.sh"), "--json",
                             "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        j = nlohmann::json::parse(r.out.toStdString());
        bool q8 = false;
        for (const auto& t : j["tensors"])
            if (t["name"] == "blk.1.attn_q.weight") q8 = t["type"] == "q8_0";
        QVERIFY(q8);
        bool entry = false;
        for (const auto& e : j["tensor_type_entries"]) entry |= e == "blk.1.attn_q.weight";
        QVERIFY2(entry, r.out.constData());
    }

    // GGUF types as autotune schemes: one GGUF type per linear within the budget, and the
    // recipe exports as those types exactly.
    void autotuneOverGgufTypes() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        const std::string recipe = m_dir + "/at.json";
        auto r = lcwtest::runCli({"autotune", shared("models/gguf-k/model-f32.gguf"),
                                  "--budget-bpw", "5.0", "--schemes", "q4_k,Q5_K,q6_k", "--out",
                                  QString::fromStdString(recipe), "--ctx", "128", "--chunks", "2",
                                  "--no-verify", "--quiet", "--json"},
                                 300000);
        QVERIFY2(r.code == 0, r.err.constData());
        std::ifstream in(recipe);
        const auto j = nlohmann::json::parse(in);
        std::set<std::string> methods;
        for (const auto& rule : j["rules"]) methods.insert(rule["weight"]["method"]);
        QVERIFY(!methods.empty());
        for (const auto& m : methods) QVERIFY2(m == "q4_k" || m == "q5_k" || m == "q6_k", m.c_str());
        QVERIFY(methods.size() >= 2); // a real mix at 5.0 bits between 4.5 and 6.56
        const std::string out = m_dir + "/at.gguf";
        r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--recipe",
                             QString::fromStdString(recipe), "--out", QString::fromStdString(out),
                             "--json", "--quiet", "--kl-chunks", "1"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto e = nlohmann::json::parse(r.out.toStdString());
        double bits = 0, params = 0;
        for (const auto& t : e["tensors"]) {
            if (t["name"].get<std::string>().rfind("blk.", 0) != 0 || t["shape"].size() != 2)
                continue;
            QCOMPARE(t["status"].get<std::string>(), std::string("exact"));
            bits += 8.0 * t["bytes"].get<double>();
            params += t["shape"][0].get<double>() * t["shape"][1].get<double>();
        }
        QVERIFY2(bits / params <= 5.0, qPrintable(QString::number(bits / params)));
        QCOMPARE(e["kl"]["kld_mean"].get<double>(), 0.0);
    }

    void badInput() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        const QString out = QString::fromStdString(m_dir + "/bad.gguf");
        // An imatrix of another model.
        auto r = lcwtest::runCli({"export", shared("models/stories260K/hf"), "--preset", "Q8_0",
                                  "--imatrix", shared("models/gguf-k/imatrix.dat"), "--out", out,
                                  "--quiet"});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("imatrix.dat"), r.err.constData());
        QVERIFY(!lcwtest::exists(out.toStdString()));
        // A truncated imatrix.
        const std::string cut = m_dir + "/cut.dat";
        {
            std::ifstream in(lcwtest::sharedPath("models/gguf-k/imatrix.dat"), std::ios::binary);
            std::string bytes((std::istreambuf_iterator<char>(in)), {});
            std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
        }
        r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--preset",
                             "Q4_K_M", "--imatrix", QString::fromStdString(cut), "--out", out,
                             "--quiet"});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("cut.dat") && r.err.contains("truncated"), r.err.constData());
        QVERIFY(!lcwtest::exists(out.toStdString()));
        // A type that does not fit a row, without a fallback.
        r = lcwtest::runCli({"export", shared("models/stories260K/hf"), "--preset", "Q4_0",
                             "--out", out, "--quiet"});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("ffn_down") && r.err.contains("172"), r.err.constData());
        QVERIFY(!lcwtest::exists(out.toStdString()));
        // A missing folder; an unknown preset; an unknown format.
        r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--preset",
                             "Q4_K_M", "--out", QString::fromStdString(m_dir + "/no/x.gguf")});
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("does not exist"));
        r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--preset",
                             "Q4_K_Q", "--out", out});
        QCOMPARE(r.code, 1);
        QVERIFY(r.err.contains("Q4_K_M"));
        r = lcwtest::runCli({"export", shared("models/gguf-k/model-f32.gguf"), "--format", "onnx",
                             "--out", out});
        QCOMPARE(r.code, 2);
        QVERIFY(!lcwtest::exists(out.toStdString()));
    }
};

QTEST_GUILESS_MAIN(TestExportCli)
#include "test_export_cli.moc"
