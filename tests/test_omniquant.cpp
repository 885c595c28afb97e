// OmniQuant (core/compress/omniquant, block_grad): the block model's forward against the
// runtime, its gradients against central differences, learnable weight clipping never worse than
// its start (RTN) on the block output, and the calibrated compress / CLI path.
#include "core/common/error.h"
#include "core/compress/block_grad.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/omniquant.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cmath>
#include <fstream>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

std::string demoModel() {
    return lcwtest::demoModelPath();
}

MatD toMat(const std::vector<float>& v, int64_t dim) {
    MatD m(int64_t(v.size()) / dim, dim);
    for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = v[size_t(i)];
    return m;
}

WeightSettings intSettings(int bits, bool sym, Granularity g, int64_t group) {
    WeightSettings s;
    s.bits = bits;
    s.symmetric = sym;
    s.granularity = g;
    s.groupSize = group;
    s.method = WeightMethod::OmniQuant;
    return s;
}

/// Block-output MSE of `qw` against the FP block on the same inputs (double, independent of
/// the omniquant code's loss).
double blockMse(const ModelSpec& spec, int layer, const BlockWeights& fw, const BlockWeights& qw,
                const std::vector<std::vector<float>>& in) {
    double sum = 0;
    for (const auto& x : in) {
        const MatD X = toMat(x, spec.dim);
        const LlamaBlock blk(spec, layer, X.rows());
        MatD y0, y1;
        blk.forward(fw, X, y0, nullptr);
        blk.forward(qw, X, y1, nullptr);
        sum += (y1 - y0).squaredNorm() / double(y0.size());
    }
    return sum / double(in.size());
}

MatD matOf(const std::vector<float>& v, int64_t rows, int64_t cols) {
    MatD m(rows, cols);
    for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = v[size_t(i)];
    return m;
}

} // namespace

class TestOmniQuant : public QObject {
    Q_OBJECT
private slots:
    void forwardMatchesSession() {
        auto m = Model::load(demoModel());
        const CalibrationSet cal = loadCalibration(*m, "", {2, 48});
        for (int l = 0; l + 1 < int(m->spec().nLayers); ++l) {
            const auto in = captureBlockHidden(*m, cal, l);
            const auto out = captureBlockHidden(*m, cal, l + 1);
            QCOMPARE(in.size(), size_t(2));
            const BlockWeights bw = loadBlockWeights(*m, l);
            for (size_t s = 0; s < in.size(); ++s) {
                const MatD X = toMat(in[s], m->spec().dim), Yref = toMat(out[s], m->spec().dim);
                const LlamaBlock blk(m->spec(), l, X.rows());
                MatD Y;
                blk.forward(bw, X, Y, nullptr);
                const double rel = (Y - Yref).norm() / Yref.norm();
                QVERIFY2(rel <= 1e-4, qPrintable(QString("layer %1: rel %2").arg(l).arg(rel)));
            }
        }
    }

    void gradientMatchesFiniteDifferences() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const int layer = 2;
        BlockWeights bw = loadBlockWeights(*m, layer);
        std::mt19937 rng(7);
        std::normal_distribution<double> nd(0.0, 1.0);
        const int64_t T = 7;
        MatD X(T, spec.dim), R(T, spec.dim);
        for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = nd(rng), R.data()[i] = nd(rng);
        const LlamaBlock blk(spec, layer, T);
        // Loss = sum(y ∘ R): dL/dy = R.
        auto loss = [&](const BlockWeights& w) {
            MatD y;
            blk.forward(w, X, y, nullptr);
            return (y.array() * R.array()).sum();
        };
        LlamaBlock::Cache c;
        MatD y;
        blk.forward(bw, X, y, &c);
        BlockGrads g;
        g.zeroLike(bw);
        blk.backward(bw, c, R, g);
        const double eps = 1e-5;
        auto check = [&](double& param, double analytic, const QString& what) {
            const double keep = param;
            param = keep + eps;
            const double lp = loss(bw);
            param = keep - eps;
            const double lm = loss(bw);
            param = keep;
            const double fd = (lp - lm) / (2 * eps);
            const double tol = 1e-6 + 1e-5 * std::fabs(fd);
            QVERIFY2(std::fabs(fd - analytic) <= tol,
                     qPrintable(what + QString(": fd %1 analytic %2").arg(fd).arg(analytic)));
        };
        std::uniform_real_distribution<double> u(0.0, 1.0);
        for (int i = 0; i < 7; ++i) {
            MatD& W = bw.w[size_t(i)];
            for (int k = 0; k < 12; ++k) {
                const int64_t r = int64_t(u(rng) * double(W.rows())) % W.rows();
                const int64_t cc = int64_t(u(rng) * double(W.cols())) % W.cols();
                check(W(r, cc), g.w[size_t(i)](r, cc),
                      QString("%1[%2,%3]").arg(blockLinearSuffix(i)).arg(r).arg(cc));
            }
        }
        for (int k = 0; k < 6; ++k) {
            const int64_t j = int64_t(u(rng) * double(spec.dim)) % spec.dim;
            check(bw.attnNorm(j), g.attnNorm(j), QString("attn_norm[%1]").arg(j));
            check(bw.mlpNorm(j), g.mlpNorm(j), QString("mlp_norm[%1]").arg(j));
        }
    }

    void lwcNeverWorseThanStart() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {3, 32});
        OmniQuantOptions o;
        o.epochs = 3;
        o.lr = 1e-2;
        int improved = 0;
        for (int bits : {3, 4}) {
            for (int l = 0; l < int(spec.nLayers); ++l) {
                const auto in = captureBlockHidden(*m, cal, l);
                const BlockWeights fw = loadBlockWeights(*m, l);
                std::map<std::string, WeightSettings> set;
                const std::string p = "layers." + std::to_string(l) + ".";
                for (int i = 0; i < 7; ++i)
                    set[p + blockLinearSuffix(i)] =
                        i % 2 ? intSettings(bits, false, Granularity::Group, 32)
                              : intSettings(bits, true, Granularity::Channel, 0);
                NullProgress np;
                const OmniQuantBlockResult r = omniquantBlock(*m, l, in, {}, set, o, np);
                QCOMPARE(r.status, Status::Ok);
                QCOMPARE(r.epochLoss.size(), size_t(3));
                QVERIFY(r.lossEnd <= r.lossStart);
                if (r.lossEnd < r.lossStart * 0.999) ++improved;
                // Independent check: RTN (quantize()) of every linear gives the start loss, the
                // returned packed tensors give the end loss; LWC <= RTN.
                BlockWeights rtn = fw, lwc = fw;
                for (int i = 0; i < 7; ++i) {
                    const std::string name = p + blockLinearSuffix(i);
                    const MatD& W = fw.w[size_t(i)];
                    std::vector<float> wf(size_t(W.size()));
                    for (int64_t k = 0; k < W.size(); ++k) wf[size_t(k)] = float(W.data()[k]);
                    WeightSettings s = set[name];
                    s.method = WeightMethod::Rtn;
                    rtn.w[size_t(i)] =
                        matOf(dequantize(quantize(wf.data(), W.rows(), W.cols(), s, name), name),
                              W.rows(), W.cols());
                    lwc.w[size_t(i)] =
                        matOf(dequantize(r.packed.at(name), name), W.rows(), W.cols());
                    QCOMPARE(r.packed.at(name).settings.method, WeightMethod::OmniQuant);
                }
                const double eRtn = blockMse(spec, l, fw, rtn, in);
                const double eLwc = blockMse(spec, l, fw, lwc, in);
                QVERIFY2(std::fabs(eRtn - r.lossStart) <= 1e-6 * eRtn,
                         qPrintable(QString("rtn %1 start %2").arg(eRtn).arg(r.lossStart)));
                QVERIFY(std::fabs(eLwc - r.lossEnd) <= 1e-6 * eLwc);
                QVERIFY(eLwc <= eRtn);
            }
        }
        // Clipping is learned, not just the start kept: most blocks improve at 3 and 4 bits.
        QVERIFY2(improved >= int(spec.nLayers), qPrintable(QString::number(improved)));
    }

    void cancelAndErrors() {
        auto m = Model::load(demoModel());
        const CalibrationSet cal = loadCalibration(*m, "", {2, 16});
        const auto in = captureBlockHidden(*m, cal, 0);
        std::map<std::string, WeightSettings> set = {
            {"layers.0.attn.q", intSettings(4, false, Granularity::Group, 32)}};
        FunctionProgress stop([](double, std::string_view) { return false; });
        OmniQuantOptions o;
        o.epochs = 2;
        QCOMPARE(omniquantBlock(*m, 0, in, {}, set, o, stop).status, Status::Cancelled);
        NullProgress np;
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError,
            omniquantBlock(*m, 0, in, {}, {{"layers.1.attn.q", set.begin()->second}}, o, np));
        WeightSettings nf4 = set.begin()->second;
        nf4.format = WeightFormat::Nf4;
        QVERIFY_THROWS_EXCEPTION(UnsupportedError,
                                 omniquantBlock(*m, 0, in, {}, {{"layers.0.attn.q", nf4}}, o, np));
        ModelSpec gpt = m->spec();
        gpt.arch = "gpt2";
        gpt.norm = NormType::LayerNorm;
        try {
            LlamaBlock b(gpt, 0, 8);
            QFAIL("no error for a LayerNorm block");
        } catch (const UnsupportedError& e) {
            QVERIFY(std::string(e.what()).find("gpt2") != std::string::npos);
            QVERIFY(std::string(e.what()).find("LayerNorm") != std::string::npos);
        }
        // Recipe keys.
        auto bad = [](json w) {
            return Recipe::fromJson(
                {{"lcw_recipe", 1}, {"rules", json::array({{{"targets", {"*"}}, {"weight", w}}})}});
        };
        QVERIFY_THROWS_EXCEPTION(RecipeError, bad({{"method", "omniquant"}, {"epochs", -1}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, bad({{"method", "omniquant"}, {"lr", 0}}));
        bad({{"method", "omniquant"}, {"epochs", 2}, {"lr", 0.01}});
    }

    void compressAndPerplexity() {
        const std::string dir = lcwtest::tempDir("omni");
        const std::string recipe = dir + "/omni.json";
        {
            std::ofstream f(recipe);
            f << json({{"lcw_recipe", 1},
                       {"name", "omni-w3"},
                       {"rules",
                        {{{"targets", {"layers.*"}},
                          {"weight",
                           {{"bits", 3},
                            {"symmetric", false},
                            {"group_size", 32},
                            {"method", "omniquant"},
                            {"epochs", 2},
                            {"lr", 0.01}}}}}}})
                     .dump();
        }
        const std::string text = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
        const auto r = lcwtest::runCli({"compress", QString::fromStdString(demoModel()), "--recipe",
                                        QString::fromStdString(recipe), "--calib",
                                        QString::fromStdString(text), "--samples", "3", "--seq-len",
                                        "32", "--json", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const json j = json::parse(r.out.toStdString());
        QCOMPARE(j["layers"].size(), size_t(35));
        for (const auto& l : j["layers"]) {
            const auto& d = l["details"];
            QVERIFY(d.contains("block_loss_start"));
            QVERIFY(d["block_loss_end"].get<double>() <= d["block_loss_start"].get<double>());
            QCOMPARE(d["epoch_loss"].size(), size_t(2));
        }
        const auto p = lcwtest::runCli({"perplexity", QString::fromStdString(demoModel()), "--text",
                                        QString::fromStdString(text), "--ctx", "64", "--recipe",
                                        QString::fromStdString(recipe), "--calib",
                                        QString::fromStdString(text), "--samples", "3", "--seq-len",
                                        "32", "--json", "--quiet"});
        QVERIFY2(p.code == 0, p.err.constData());
        const json pj = json::parse(p.out.toStdString());
        QVERIFY(pj.dump().find("ppl") != std::string::npos);
    }
};

QTEST_GUILESS_MAIN(TestOmniQuant)
#include "test_omniquant.moc"
