// Exceptions thrown inside OpenMP regions (issue #22): they must reach the caller as lcw errors
// instead of terminating the process.
#include "core/common/error.h"
#include "core/common/parallel.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/io/safetensors.h"
#include "test_util.h"

#include <QtTest>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace fs = std::filesystem;

class TestParallelErrors : public QObject {
    Q_OBJECT
private slots:
    // The first exception is rethrown after the region; later bodies are skipped.
    void keepsFirstErrorAndSkipsTheRest() {
        lcw::ParallelErrors errors;
        std::atomic<int> ran{0};
#pragma omp parallel for schedule(static, 1) num_threads(2)
        for (int i = 0; i < 1000; ++i)
            errors.run([&] {
                ++ran;
                if (i == 0) throw lcw::ArgumentError("row 0 failed");
            });
        QVERIFY(errors.failed());
        QVERIFY(ran.load() < 1000);
        try {
            errors.rethrow();
            QFAIL("no exception rethrown");
        } catch (const lcw::ArgumentError& e) {
            QCOMPARE(QString(e.what()), QString("row 0 failed"));
        }
        lcw::ParallelErrors clean;
#pragma omp parallel for
        for (int i = 0; i < 100; ++i) clean.run([&] {});
        QVERIFY(!clean.failed());
        clean.rethrow(); // nothing to throw
    }

    // The packed RTN loop throws when a group's scale does not fit in f16 (finite but huge
    // weights); with a tensor large enough to run in parallel this used to call std::terminate.
    void hugeWeightsInParallelQuantiser() {
        const int64_t rows = 512, cols = 256; // 2^17 elements: the parallel path
        std::vector<float> w(size_t(rows * cols), 0.01f);
        for (int64_t j = 0; j < cols; ++j) w[size_t(300 * cols + j)] = j % 2 ? 3e9f : -3e9f;
        lcw::compress::WeightSettings s;
        s.bits = 4;
        s.symmetric = false;
        s.granularity = lcw::compress::Granularity::Group;
        s.groupSize = 64;
        try {
            lcw::compress::quantize(w.data(), rows, cols, s, "layers.0.mlp.down");
            QFAIL("no error for a scale beyond f16");
        } catch (const lcw::Error& e) {
            const QString m = e.what();
            QVERIFY2(m.contains("layers.0.mlp.down") && m.contains("f16"), qPrintable(m));
        }
    }

    // End to end: a model whose weights are finite but beyond f16, compressed with a preset,
    // ends with exit code 1 and the tensor's name, not an abort.
    void cliCompressHugeWeights() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/model.safetensors");
        const std::string src = lcwtest::sharedPath("models/stories260K/hf");
        const std::string dir = lcwtest::tempDir("parallel-errors-huge");
        for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
            fs::copy_file(src + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
        const lcw::SafetensorsSet in = lcw::readSafetensors(src + "/model.safetensors");
        std::vector<lcw::TensorDesc> descs;
        for (const lcw::TensorView& t : in.tensors) descs.push_back({t.fileName, t.dtype, t.shape});
        lcw::writeSafetensors(
            dir + "/model.safetensors", descs, [&](size_t i, std::byte* dst, uint64_t n) {
                const lcw::TensorView& t = in.tensors[i];
                std::memcpy(dst, t.data, n);
                if (t.dtype != lcw::DType::F32 ||
                    t.fileName.find("layers.0.mlp.down_proj") == std::string::npos)
                    return;
                float* f = reinterpret_cast<float*>(dst);
                for (uint64_t k = 0; k < n / 4; ++k) f[k] *= 1e9f;
            });
        const lcwtest::CliRun r =
            lcwtest::runCli({"compress", QString::fromStdString(dir), "--preset", "W4A16-g64"});
        QVERIFY2(r.code == 1, qPrintable("exit " + QString::number(r.code) + ": " + r.err));
        QVERIFY2(r.err.contains("f16") && r.err.contains("mlp.down"), r.err.constData());
    }
};

QTEST_GUILESS_MAIN(TestParallelErrors)
#include "test_parallel_errors.moc"
