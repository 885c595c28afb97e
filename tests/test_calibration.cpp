// Calibration sets and block-input captures (core/compress/calibration.h).
#include "core/common/error.h"
#include "core/compress/calibration.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

using namespace lcw;
using namespace lcw::compress;

namespace {

std::string demoModel() {
    return lcwtest::demoModelPath();
}

/// Records every linear input and residual of one layer as plain copies.
struct Recorder final : Observer {
    int layer;
    explicit Recorder(int l) : layer(l) {}
    std::map<std::string, std::vector<float>> x; // name -> rows appended
    std::map<std::string, int64_t> cols;
    std::vector<float> residualBefore, blockInput;
    void onLinearInput(int l, LinearRole, const std::string& name, const float* p, int64_t n,
                       int64_t dim) override {
        if (l != layer) return;
        x[name].insert(x[name].end(), p, p + n * dim);
        cols[name] = dim;
    }
    void onResidual(int l, const float* h, int64_t n, int64_t dim) override {
        if (l == layer - 1) residualBefore.insert(residualBefore.end(), h, h + n * dim);
    }
    void onBlockInput(int l, const float* h, int64_t n, int64_t dim) override {
        if (l == layer) blockInput.insert(blockInput.end(), h, h + n * dim);
    }
};

} // namespace

class TestCalibration : public QObject {
    Q_OBJECT
private slots:
    // The "consecutive" option is lcw's earlier (and llama-imatrix's) cut: windows from the
    // start, the first token of each replaced by BOS.
    void loadCutsConsecutiveSamples() {
        auto m = Model::load(demoModel());
        const std::string text = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
        CalibrationOptions co{4, 64};
        co.sampling = CalibrationSampling::Consecutive;
        const CalibrationSet cal = loadCalibration(*m, text, co);
        QCOMPARE(cal.sampling, CalibrationSampling::Consecutive);
        QVERIFY(cal.bosFirst);
        QCOMPARE(cal.samples.size(), size_t(4));
        QCOMPARE(cal.seqLen(), int64_t(64));
        QCOMPARE(cal.source, text);
        std::ifstream in(text);
        const std::string all((std::istreambuf_iterator<char>(in)), {});
        const auto ids = m->tokenizer().encode(all, true);
        for (size_t s = 0; s < 4; ++s) {
            QCOMPARE(cal.samples[s][0], m->tokenizer().bosId());
            for (size_t t = 1; t < 64; ++t) QCOMPARE(cal.samples[s][t], ids[s * 64 + t]);
        }
        // The default is the bundled text; the length is clamped to the model's context.
        const CalibrationSet def = loadCalibration(*m, "", {2, 1 << 20});
        QCOMPARE(def.seqLen(), m->spec().maxSeq);
    }

    // CalibrationSampling::Random draws the window starts as IST-DASLab/gptq's datautils.py does
    // (random.seed(seed); random.randint(0, ntokens - seqlen - 1) per sample). The expected
    // values are what CPython 3 prints for
    //   random.seed(0); [random.randint(0, 100000-512-1) for _ in range(8)]
    //   random.seed(1234); [random.randint(0, 5000-128-1) for _ in range(6)]
    //   random.seed(2**40+5); [random.randint(0, 2**40-2-1) for _ in range(4)]
    //   random.seed(3); [random.randint(0, 1) for _ in range(10)]
    void randomStartsArePythonRandint() {
        QCOMPARE(randomWindowStarts(100000, 512, 8, 0),
                 (std::vector<int64_t>{50494, 99346, 55125, 5306, 33936, 67013, 63691, 53075}));
        QCOMPARE(randomWindowStarts(5000, 128, 6, 1234),
                 (std::vector<int64_t>{3610, 957, 61, 742, 4769, 286}));
        QCOMPARE(randomWindowStarts(int64_t(1) << 40, 2, 4, (uint64_t(1) << 40) + 5),
                 (std::vector<int64_t>{569101979940, 727003120297, 34040994016, 835504107977}));
        QCOMPARE(randomWindowStarts(4, 2, 10, 3),
                 (std::vector<int64_t>{0, 0, 1, 1, 0, 0, 1, 1, 0, 0}));
        // exactly one window's tokens: every start is 0; fewer is an error
        QCOMPARE(randomWindowStarts(64, 64, 3, 0), (std::vector<int64_t>{0, 0, 0}));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, randomWindowStarts(63, 64, 1, 0));
    }

    // The default: random windows of the tokenised text (seed 0), no BOS put in, reproducible;
    // another seed gives other windows.
    void loadSamplesRandomWindowsBySeed() {
        auto m = Model::load(demoModel());
        const std::string text = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
        std::ifstream in(text);
        const std::string all((std::istreambuf_iterator<char>(in)), {});
        const auto ids = m->tokenizer().encode(all, true);
        const int64_t T = int64_t(ids.size()), L = 64, N = 12;
        QVERIFY(T > 4 * N * L);
        const CalibrationSet a = loadCalibration(*m, text, {N, L});
        QCOMPARE(a.sampling, CalibrationSampling::Random);
        QCOMPARE(a.seed, uint64_t(0));
        QVERIFY(!a.bosFirst);
        QCOMPARE(a.samples.size(), size_t(N));
        const auto starts = randomWindowStarts(T, L, N, 0);
        std::set<int64_t> distinct;
        for (size_t s = 0; s < size_t(N); ++s) {
            const int64_t i = starts[s];
            QVERIFY(i >= 0 && i + L <= T - 1); // randint's upper bound: the last token is never in
            QCOMPARE(a.samples[s], std::vector<int32_t>(ids.begin() + i, ids.begin() + i + L));
            distinct.insert(i);
        }
        QVERIFY(distinct.size() > size_t(N / 2));
        // Same seed, same windows; seed 1 other windows.
        QVERIFY(loadCalibration(*m, text, {N, L}).samples == a.samples);
        CalibrationOptions o1{N, L};
        o1.seed = 1;
        const CalibrationSet b = loadCalibration(*m, text, o1);
        QCOMPARE(b.seed, uint64_t(1));
        QVERIFY(b.samples != a.samples);
        // Random samples are not limited to tokens / seqLen (drawn with replacement, as the
        // reference), and BOS can be put in on request.
        const int64_t many = T / L + 5;
        o1.samples = many;
        o1.bos = CalibrationBos::Replace;
        const CalibrationSet c = loadCalibration(*m, text, o1);
        QCOMPARE(int64_t(c.samples.size()), many);
        QVERIFY(c.bosFirst);
        for (const auto& smp : c.samples) QCOMPARE(smp[0], m->tokenizer().bosId());
        // The old default cut keeps at most tokens / seqLen windows.
        o1.sampling = CalibrationSampling::Consecutive;
        QCOMPARE(int64_t(loadCalibration(*m, text, o1).samples.size()), T / L);
    }

    // lcw-cli: --calib-sampling / --calib-seed reach loadCalibration and compress --json
    // records them.
    void cliSamplingFlags() {
        const QString model = QString::fromStdString(demoModel());
        const QString text =
            QString::fromStdString(lcwtest::sourcePath("resources/data/tinystories_eval.txt"));
        const std::string dir = lcwtest::tempDir("calib-cli");
        const std::string recipe = dir + "/gptq.json";
        std::ofstream(recipe) << R"({"lcw_recipe": 1, "rules": [{"targets": ["layers.0.attn.q"],
            "weight": {"bits": 4, "group_size": 32, "method": "gptq"}}]})";
        auto compress = [&](QStringList extra) {
            QStringList args = {"compress",  model, "--recipe",  QString::fromStdString(recipe),
                                "--calib",   text,  "--samples", "4",
                                "--seq-len", "64",  "--json",    "--quiet"};
            args += extra;
            return lcwtest::runCli(args);
        };
        auto r = compress({});
        QCOMPARE(r.code, 0);
        const auto a = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(a["calibration"]["sampling"], "random");
        QCOMPARE(a["calibration"]["seed"], 0);
        QCOMPARE(a["calibration"]["bos_first"], false);
        r = compress({"--calib-seed", "7"});
        QCOMPARE(r.code, 0);
        const auto b = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(b["calibration"]["seed"], 7);
        QVERIFY(b["layers"][0]["output_rel_error"] != a["layers"][0]["output_rel_error"]);
        r = compress({"--calib-sampling", "consecutive"});
        QCOMPARE(r.code, 0);
        const auto c = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(c["calibration"]["sampling"], "consecutive");
        QCOMPARE(c["calibration"]["bos_first"], true);
        QVERIFY(!c["calibration"].contains("seed"));
        QCOMPARE(compress({"--calib-sampling", "consecutive", "--calib-seed", "1"}).code, 2);
        QCOMPARE(compress({"--calib-sampling", "shuffled"}).code, 2);
        r = lcwtest::runCli(
            {"compress", model, "--recipe", QString::fromStdString(recipe), "--calib-seed", "1"});
        QCOMPARE(r.code, 2);
        QVERIFY2(r.err.contains("--calib-seed needs --calib"), r.err.constData());
    }

    void loadErrorsNameTheFile() {
        auto m = Model::load(demoModel());
        try {
            loadCalibration(*m, "/nonexistent/calib.txt", {});
            QFAIL("no error");
        } catch (const Error& e) {
            QVERIFY(std::string(e.what()).find("/nonexistent/calib.txt") != std::string::npos);
        }
        const std::string dir = lcwtest::tempDir("calib");
        const std::string shortText = dir + "/short.txt";
        std::ofstream(shortText) << "Once upon a time.";
        try {
            loadCalibration(*m, shortText, {4, 128});
            QFAIL("no error");
        } catch (const Error& e) {
            QVERIFY(std::string(e.what()).find(shortText) != std::string::npos);
            QVERIFY(std::string(e.what()).find("fewer than one sequence") != std::string::npos);
        }
        const std::string empty = dir + "/empty.txt";
        std::ofstream(empty).flush();
        QVERIFY_THROWS_EXCEPTION(Error, loadCalibration(*m, empty, {4, 128}));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, loadCalibration(*m, "", {0, 128}));
    }

    void gramEqualsDoubleReference() {
        auto m = Model::load(demoModel());
        const CalibrationSet cal = loadCalibration(*m, "", {3, 96});
        const int layer = 2;
        CaptureOptions co;
        co.maxSampleRows = 50;
        NullProgress np;
        const auto got = captureBlockInputs(*m, cal, layer, co, np);

        // Reference: a full forward (no stop), inputs copied, X^T X in double.
        Session s(*m);
        Recorder rec(layer);
        s.addObserver(&rec);
        std::vector<float> logits;
        for (const auto& smp : cal.samples) {
            s.reset();
            s.forward(smp, logits, true);
        }
        QCOMPARE(got.size(), rec.x.size());
        const int64_t T = cal.tokens();
        for (const auto& [name, x] : rec.x) {
            QVERIFY2(got.count(name), name.c_str());
            const LinearInputs& li = got.at(name);
            const int64_t c = rec.cols[name];
            QCOMPARE(li.cols, c);
            QCOMPARE(li.tokens, T);
            QCOMPARE(int64_t(x.size()), T * c);
            double maxRel = 0;
            for (int64_t i = 0; i < c; ++i)
                for (int64_t j = 0; j < c; ++j) {
                    double ref = 0, scale = 0;
                    for (int64_t t = 0; t < T; ++t) {
                        ref += double(x[size_t(t * c + i)]) * double(x[size_t(t * c + j)]);
                        scale += std::fabs(double(x[size_t(t * c + i)]) * x[size_t(t * c + j)]);
                    }
                    const double d = std::fabs(li.gram[size_t(i * c + j)] - ref);
                    maxRel = std::max(maxRel, d / std::max(scale, 1e-30));
                }
            QVERIFY2(maxRel < 1e-12, (name + " gram rel " + std::to_string(maxRel)).c_str());
            for (int64_t j = 0; j < c; ++j) {
                float amax = 0;
                double ss = 0, sa = 0;
                for (int64_t t = 0; t < T; ++t) {
                    amax = std::max(amax, std::fabs(x[size_t(t * c + j)]));
                    ss += double(x[size_t(t * c + j)]) * x[size_t(t * c + j)];
                    sa += std::fabs(double(x[size_t(t * c + j)]));
                }
                QVERIFY(std::fabs(li.meanAbs[size_t(j)] - sa / double(T)) <= 1e-6 * sa / double(T));
                QCOMPARE(li.absMax[size_t(j)], amax);
                QVERIFY(std::fabs(li.meanSq[size_t(j)] - ss / double(T)) <= 1e-6 * ss / double(T));
            }
            // Rows are sampled with a stride of ceil(T / 50): rows 0, stride, 2 stride, ...
            const int64_t stride = (T + 49) / 50;
            QCOMPARE(li.sampleRows, std::min<int64_t>(50, (T + stride - 1) / stride));
            for (int64_t r = 0; r < li.sampleRows; ++r)
                for (int64_t j = 0; j < c; ++j)
                    QCOMPARE(li.sample[size_t(r * c + j)], x[size_t(r * stride * c + j)]);
        }
        const std::string q = "layers.2.attn.q";
        QCOMPARE(got.at(q).sharedWith,
                 (std::vector<std::string>{q, "layers.2.attn.k", "layers.2.attn.v"}));
        QCOMPARE(got.at("layers.2.mlp.up").sharedWith,
                 (std::vector<std::string>{"layers.2.mlp.gate", "layers.2.mlp.up"}));
        QCOMPARE(got.at("layers.2.attn.o").sharedWith,
                 (std::vector<std::string>{"layers.2.attn.o"}));
    }

    void stopAfterLayerMatchesFullForward() {
        auto m = Model::load(demoModel());
        const CalibrationSet cal = loadCalibration(*m, "", {1, 80});
        Recorder full(3), stopped(3);
        std::vector<float> logits;
        {
            Session s(*m);
            s.addObserver(&full);
            s.forward(cal.samples[0], logits, false);
            QCOMPARE(int64_t(logits.size()), m->spec().vocab);
        }
        {
            SessionOptions so;
            so.stopAfterLayer = 3;
            Session s(*m, so);
            s.addObserver(&stopped);
            s.forward(cal.samples[0], logits, false);
            QVERIFY(logits.empty()); // nothing after the stop runs
        }
        QCOMPARE(stopped.x, full.x);
        QVERIFY(!full.blockInput.empty());
        QCOMPARE(stopped.blockInput, full.blockInput);
        // The block input is the previous block's output.
        QCOMPARE(full.blockInput, full.residualBefore);
        // Block 4's input is reported after stopping at 3, block 4 itself does not run.
        Recorder next(4);
        SessionOptions so;
        so.stopAfterLayer = 3;
        Session s(*m, so);
        s.addObserver(&next);
        s.forward(cal.samples[0], logits, false);
        QVERIFY(next.x.empty());
        QCOMPARE(next.blockInput, next.residualBefore);
    }

    void hiddenStates() {
        auto m = Model::load(demoModel());
        const CalibrationSet cal = loadCalibration(*m, "", {2, 40});
        const int64_t dim = m->spec().dim;
        const auto h0 = captureBlockHidden(*m, cal, 0);
        QCOMPARE(h0.size(), size_t(2));
        const TensorView& emb = m->get("embed");
        std::vector<float> row(static_cast<size_t>(dim));
        for (size_t s = 0; s < 2; ++s) {
            QCOMPARE(int64_t(h0[s].size()), 40 * dim);
            for (int64_t t = 0; t < 40; ++t) {
                dequantizeRow(emb.dtype, emb.row(cal.samples[s][size_t(t)]), row.data(), dim);
                for (int64_t j = 0; j < dim; ++j) QCOMPARE(h0[s][size_t(t * dim + j)], row[j]);
            }
        }
        // Layer 3: the residual after block 2 of a full forward.
        const auto h3 = captureBlockHidden(*m, cal, 3);
        Recorder rec(3);
        Session s(*m);
        s.addObserver(&rec);
        std::vector<float> logits;
        s.forward(cal.samples[1], logits, false);
        QCOMPARE(h3[1], rec.residualBefore);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, captureBlockHidden(*m, cal, 5));
        // Cancellation returns nothing.
        FunctionProgress stop([](double, std::string_view) { return false; });
        QVERIFY(captureBlockInputs(*m, cal, 1, {}, stop).empty());
    }
};

QTEST_GUILESS_MAIN(TestCalibration)
#include "test_calibration.moc"
