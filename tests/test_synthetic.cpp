// lcw-cli synth's shapes: the real models' parameter counts (published figures, not derived from
// lcw), config.json read back by the HF loader, the qwen2 layout (q/k/v biases) written, loaded
// and run, the free-space check, and the CLI.
#include "core/common/error.h"
#include "core/io/hf_config.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "core/runtime/session.h"
#include "test_util.h"

#include <QJsonDocument>
#include <QJsonObject>

#include <cmath>
#include <filesystem>

namespace {

int64_t paramCount(const std::vector<lcw::TensorDesc>& descs) {
    int64_t n = 0;
    for (const auto& d : descs) {
        int64_t e = 1;
        for (int64_t s : d.shape) e *= s;
        n += e;
    }
    return n;
}

} // namespace

class TestSynthetic : public QObject {
    Q_OBJECT
private slots:
    void parameterCounts_data() {
        QTest::addColumn<QString>("shape");
        QTest::addColumn<qint64>("params");
        // Published parameter counts of the real checkpoints (model cards / safetensors
        // metadata), all with untied embeddings.
        QTest::newRow("TinyLlama-1.1B") << "tinyllama-1.1b" << qint64(1100048384);
        QTest::newRow("Meta-Llama-3-8B") << "llama3-8b" << qint64(8030261248);
        QTest::newRow("Qwen2.5-7B") << "qwen2.5-7b" << qint64(7615616512);
    }
    void parameterCounts() {
        QFETCH(QString, shape);
        QFETCH(qint64, params);
        const lcw::ModelSpec s = lcw::syntheticSpec("", shape.toStdString());
        QCOMPARE(paramCount(lcw::syntheticTensors(s, lcw::DType::F16)), int64_t(params));
        QCOMPARE(lcw::syntheticModelBytes(s, lcw::DType::F16), uint64_t(params) * 2);
        QCOMPARE(lcw::syntheticModelBytes(s, lcw::DType::BF16), uint64_t(params) * 2);
        QCOMPARE(lcw::syntheticModelBytes(s, lcw::DType::F32), uint64_t(params) * 4);
    }

    // The real models' config.json values (Meta-Llama-3-8B, Qwen2.5-7B).
    void realShapes() {
        struct Want {
            const char* shape;
            const char* arch;
            int64_t dim, layers, hidden, heads, kvHeads, vocab;
            double theta;
            bool bias;
        };
        for (const Want& w :
             {Want{"llama3-8b", "llama", 4096, 32, 14336, 32, 8, 128256, 5e5, false},
              Want{"qwen2.5-7b", "qwen2", 3584, 28, 18944, 28, 4, 152064, 1e6, true}}) {
            const lcw::ModelSpec s = lcw::syntheticSpec(w.arch, w.shape);
            QCOMPARE(s.arch, std::string(w.arch));
            const std::vector<int64_t> got = {s.dim,      s.nLayers, s.hidden, s.nHeads,
                                              s.nKvHeads, s.headDim, s.vocab};
            QCOMPARE(got, (std::vector<int64_t>{w.dim, w.layers, w.hidden, w.heads, w.kvHeads, 128,
                                                w.vocab}));
            QCOMPARE(s.rope.theta, w.theta);
            QCOMPARE(s.attnBias, w.bias);
            QVERIFY(!s.attnOutBias && !s.tiedEmbeddings);
        }
        const lcw::ModelSpec q = lcw::syntheticSpec("qwen2", "qwen2.5-7b");

        // Qwen2's q/k/v biases are written, o_proj has none.
        int biases = 0;
        for (const auto& d : lcw::syntheticTensors(q, lcw::DType::F16)) {
            if (!d.name.ends_with(".bias")) continue;
            ++biases;
            QVERIFY2(d.name.find("o_proj") == std::string::npos, d.name.c_str());
            QCOMPARE(d.shape.size(), size_t(1));
            QCOMPARE(d.shape[0],
                     d.name.find("q_proj") != std::string::npos ? int64_t(3584) : int64_t(512));
        }
        QCOMPARE(biases, 3 * 28);
    }

    // The config.json each big shape gets (no weights written) reads back as the same spec.
    void configReadsBack_data() {
        QTest::addColumn<QString>("shape");
        for (const auto& s : lcw::syntheticShapes()) QTest::newRow(s.c_str()) << QString(s.c_str());
    }
    void configReadsBack() {
        QFETCH(QString, shape);
        const lcw::ModelSpec s = lcw::syntheticSpec("", shape.toStdString());
        const lcw::ModelSpec r =
            lcw::parseHfConfig(lcw::syntheticConfigJson(s, {}), "config.json", nullptr);
        QCOMPARE(r.arch, s.arch);
        QCOMPARE(r.dim, s.dim);
        QCOMPARE(r.nLayers, s.nLayers);
        QCOMPARE(r.hidden, s.hidden);
        QCOMPARE(r.nHeads, s.nHeads);
        QCOMPARE(r.nKvHeads, s.nKvHeads);
        QCOMPARE(r.headDim, s.headDim);
        QCOMPARE(r.vocab, s.vocab);
        QCOMPARE(r.maxSeq, s.maxSeq);
        QCOMPARE(r.normEps, s.normEps);
        QCOMPARE(r.rope.theta, s.rope.theta);
        QCOMPARE(r.attnBias, s.attnBias);
        QCOMPARE(r.attnOutBias, s.attnOutBias);
        QCOMPARE(r.tiedEmbeddings, false);
        QCOMPARE(r.slidingWindow, int64_t(0));
    }

    void unknownShapeOrArch() {
        QVERIFY_THROWS_EXCEPTION(lcw::ArgumentError, lcw::syntheticSpec("", "llama3-70b"));
        QVERIFY_THROWS_EXCEPTION(lcw::ArgumentError, lcw::syntheticSpec("qwen2", "llama3-8b"));
        QVERIFY_THROWS_EXCEPTION(lcw::ArgumentError, lcw::syntheticSpec("llama", "qwen2.5-7b"));
    }

    // The qwen2 layout end to end at test size: written, loaded with its biases, run.
    void qwenTinyLoadsAndRuns() {
        const std::string dir = lcwtest::tempDir("synth-qwen");
        const lcw::ModelSpec spec = lcw::syntheticSpec("", "qwen2-tiny");
        lcw::SynthOptions so;
        so.dtype = lcw::DType::BF16;
        lcw::NullProgress np;
        QCOMPARE(lcw::writeSyntheticModel(spec, dir, so, np), lcw::Status::Ok);
        auto m = lcw::Model::load(dir);
        const lcw::ModelSpec& s = m->spec();
        QCOMPARE(s.arch, std::string("qwen2"));
        QVERIFY(s.attnBias);
        QCOMPARE(s.rope.theta, 1e6);
        QCOMPARE(m->parameterCount(), paramCount(lcw::syntheticTensors(spec, so.dtype)));
        QCOMPARE(m->storedBytes(), lcw::syntheticModelBytes(spec, so.dtype));
        QVERIFY(m->warnings().empty());

        // Biases random like the weights (not zero), norms exactly 1.
        const lcw::TensorView& b = m->get("layers.1.attn.k.bias");
        QCOMPARE(b.dtype, lcw::DType::BF16);
        std::vector<float> v(size_t(b.numel()));
        lcw::dequantizeRow(b.dtype, b.data, v.data(), b.numel());
        double sq = 0;
        for (float x : v) sq += double(x) * x;
        const double stdDev = std::sqrt(sq / double(v.size()));
        QVERIFY2(stdDev > 0.01 && stdDev < 0.03, std::to_string(stdDev).c_str());
        const lcw::TensorView& n = m->get("layers.0.attn_norm");
        std::vector<float> nv(size_t(n.numel()));
        lcw::dequantizeRow(n.dtype, n.data, nv.data(), n.numel());
        for (float x : nv) QCOMPARE(x, 1.0f);

        lcw::Session sess(*m);
        std::vector<float> logits;
        const std::vector<int32_t> ids = {1, 40, 41, 42};
        sess.forward(ids, logits, false);
        QCOMPARE(logits.size(), size_t(spec.vocab));
        for (float x : logits) QVERIFY(std::isfinite(x));
        std::filesystem::remove_all(dir);
    }

    // More bytes than the disk has: a clear error before anything is written.
    void refusesWhenDiskIsShort() {
        const std::string dir = lcwtest::tempDir("synth-space") + "/model";
        lcw::ModelSpec spec = lcw::syntheticSpec("", "llama-tiny");
        spec.vocab = int64_t(1) << 40; // 2^40 x 64 x 4 bytes of embedding: 256 TiB
        lcw::NullProgress np;
        try {
            lcw::writeSyntheticModel(spec, dir, {}, np);
            QFAIL("no error");
        } catch (const lcw::Error& e) {
            const std::string w = e.what();
            QVERIFY2(w.find(dir) != std::string::npos && w.find("MiB free") != std::string::npos,
                     w.c_str());
        }
        QVERIFY(!std::filesystem::exists(dir));
        std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
    }

    void cli() {
        const std::string dir = lcwtest::tempDir("synth-cli");
        auto r = lcwtest::runCli({"synth", "--shape", "qwen2-tiny", "--dtype", "f16", "--out",
                                  QString::fromStdString(dir + "/m"), "--json", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject j = QJsonDocument::fromJson(r.out).object();
        QCOMPARE(j["arch"].toString(), QString("qwen2"));
        QCOMPARE(j["shape"].toString(), QString("qwen2-tiny"));
        QCOMPARE(uint64_t(j["bytes"].toDouble()),
                 lcw::syntheticModelBytes(lcw::syntheticSpec("", "qwen2-tiny"), lcw::DType::F16));
        r = lcwtest::runCli({"synth", "--shape", "llama3-70b", "--out",
                             QString::fromStdString(dir + "/x"), "--quiet"});
        QVERIFY(r.code != 0);
        QVERIFY2(r.err.contains("llama3-8b") && r.err.contains("qwen2.5-7b"), r.err.constData());
        std::filesystem::remove_all(dir);
    }
};

QTEST_GUILESS_MAIN(TestSynthetic)
#include "test_synthetic.moc"
