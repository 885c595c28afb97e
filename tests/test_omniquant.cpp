// OmniQuant (core/compress/omniquant, block_grad): the block model's forward against the
// runtime, its gradients against central differences, learnable weight clipping never worse than
// its start (RTN) on the block output, and the calibrated compress / CLI path.
#include "block_test_util.h"
#include "core/common/error.h"
#include "core/compress/block_grad.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/omniquant.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/arch.h"
#include "core/runtime/session.h"
#include "core/stats/fingerprint.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <array>
#include <cmath>
#include <fstream>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using lcwtest::BlockGradCase;
using lcwtest::blockMse;
using lcwtest::matOf;
using lcwtest::toMat;

std::string demoModel() {
    return lcwtest::demoModelPath();
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
        BlockGrads g = lcwtest::blockLossGrads(blk, bw, X, R);
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

    void activationFakeQuant() {
        // Hand-computed: bits 3 (qmax 3), row max 1.
        MatD a(2, 4);
        a << 1.0, -0.4, 0.26, 0.0, 0.0, 0.0, 0.0, 0.0;
        MatD q = a, mask;
        fakeQuantRows(q, 3, 1.0, &mask);
        const double h = 1.0 / 3;
        const double want[4] = {1.0, -h, h, 0.0};
        for (int j = 0; j < 4; ++j) QVERIFY(std::fabs(q(0, j) - want[j]) < 1e-15);
        QCOMPARE(q.row(1).squaredNorm(), 0.0);
        QCOMPARE(mask.sum(), 8.0);
        // clip 0.5: step 1/6, 1 -> 6 clamped to 3 (0.5, mask 0), -0.4 -> -2, 0.26 -> 2.
        q = a;
        fakeQuantRows(q, 3, 0.5, &mask);
        const double want2[4] = {0.5, -2.0 / 6, 2.0 / 6, 0.0};
        for (int j = 0; j < 4; ++j) QVERIFY(std::fabs(q(0, j) - want2[j]) < 1e-15);
        QCOMPARE(mask(0, 0), 0.0);
        QCOMPARE(mask.sum(), 7.0);
        q = a;
        fakeQuantRows(q, 16, 1.0, nullptr); // 16 bits: float
        QCOMPARE(q, a);
    }

    void letFoldIsEquivalent() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {2, 24});
        std::mt19937 rng(3);
        std::normal_distribution<double> nd(0.0, 0.5);
        for (int l = 0; l < int(spec.nLayers); ++l) {
            const BlockWeights fw = loadBlockWeights(*m, l);
            // s = 1 changes nothing.
            const Eigen::VectorXd one = Eigen::VectorXd::Ones(spec.dim);
            const BlockWeights f1 = foldLet(fw, one, one);
            for (int i = 0; i < 7; ++i) QCOMPARE(f1.w[size_t(i)], fw.w[size_t(i)]);
            QCOMPARE(f1.attnNorm, fw.attnNorm);
            QCOMPARE(f1.mlpNorm, fw.mlpNorm);
            Eigen::VectorXd sa(spec.dim), sm(spec.dim);
            for (int64_t j = 0; j < spec.dim; ++j)
                sa(j) = std::exp(nd(rng)), sm(j) = std::exp(nd(rng));
            const BlockWeights f = foldLet(fw, sa, sm);
            QVERIFY((f.attnNorm.array() * sa.array() - fw.attnNorm.array()).abs().maxCoeff() <
                    1e-12);
            for (const auto& x : captureBlockHidden(*m, cal, l)) {
                const MatD X = toMat(x, spec.dim);
                const LlamaBlock blk(spec, l, X.rows());
                MatD y0, y1;
                blk.forward(fw, X, y0, nullptr);
                blk.forward(f, X, y1, nullptr);
                QVERIFY2((y1 - y0).norm() <= 1e-6 * y0.norm(),
                         qPrintable(QString::number((y1 - y0).norm() / y0.norm())));
            }
        }
    }

    void letGradientMatchesFiniteDifferences() {
        // L(t) = sum(block(fold(W, e^t) + N) ∘ R), see BlockGradCase.
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const int layer = 1;
        const BlockWeights bw = loadBlockWeights(*m, layer);
        std::mt19937 rng(11);
        std::normal_distribution<double> nd(0.0, 1.0);
        const int64_t T = 6;
        const BlockGradCase lc(bw, T, spec.dim, rng, nd);
        Eigen::VectorXd tA(spec.dim), tM(spec.dim);
        for (int64_t j = 0; j < spec.dim; ++j) tA(j) = 0.3 * nd(rng), tM(j) = 0.3 * nd(rng);
        const LlamaBlock blk(spec, layer, T);
        auto loss = [&]() { return lc.loss(blk, foldLet(bw, tA.array().exp(), tM.array().exp())); };
        const BlockWeights f = foldLet(bw, tA.array().exp(), tM.array().exp());
        const BlockGrads g = lc.grads(blk, f);
        Eigen::VectorXd gA = Eigen::VectorXd::Zero(spec.dim), gM = gA;
        letGrads(f, g, gA, gM);
        const double eps = 1e-5;
        double maxAbs = 0;
        for (int64_t j = 0; j < spec.dim; j += 5) {
            for (auto [t, gt] : {std::pair{&tA, &gA}, {&tM, &gM}}) {
                const double keep = (*t)(j);
                (*t)(j) = keep + eps;
                const double lp = loss();
                (*t)(j) = keep - eps;
                const double lm = loss();
                (*t)(j) = keep;
                const double fd = (lp - lm) / (2 * eps);
                maxAbs = std::max(maxAbs, std::fabs(fd));
                QVERIFY2(
                    std::fabs(fd - (*gt)(j)) <= 1e-6 + 1e-5 * std::fabs(fd),
                    qPrintable(QString("t[%1]: fd %2 analytic %3").arg(j).arg(fd).arg((*gt)(j))));
            }
        }
        QVERIFY2(maxAbs > 1e-3, qPrintable(QString::number(maxAbs))); // not vacuous
    }

    void rmsNormBiasMatchesDouble() {
        // Runtime RMSNorm with a bias (bound from NAME.bias) against a double re-implementation.
        std::mt19937 rng(5);
        std::normal_distribution<double> nd(0.0, 1.0);
        const int64_t n = 37, nTok = 3, ld = 41;
        runtime::Norm norm;
        norm.eps = 1e-5f;
        norm.w.resize(size_t(n));
        norm.b.resize(size_t(n));
        std::vector<float> x(size_t(nTok * ld)), out(x.size(), 0.0f);
        for (auto& v : norm.w) v = float(nd(rng));
        for (auto& v : norm.b) v = float(nd(rng));
        for (auto& v : x) v = float(nd(rng));
        norm.apply(x.data(), out.data(), nTok, n, ld);
        for (int64_t t = 0; t < nTok; ++t) {
            double ss = 0;
            for (int64_t i = 0; i < n; ++i)
                ss += double(x[size_t(t * ld + i)]) * x[size_t(t * ld + i)];
            const double r = 1.0 / std::sqrt(ss / double(n) + 1e-5);
            for (int64_t i = 0; i < n; ++i) {
                const double ref =
                    double(x[size_t(t * ld + i)]) * r * norm.w[size_t(i)] + norm.b[size_t(i)];
                QVERIFY2(std::fabs(out[size_t(t * ld + i)] - ref) <= 1e-5 * (1 + std::fabs(ref)),
                         qPrintable(QString("%1 vs %2").arg(out[size_t(t * ld + i)]).arg(ref)));
            }
        }
    }

    void letShiftFoldIsEquivalent() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {2, 24});
        std::mt19937 rng(4);
        std::normal_distribution<double> nd(0.0, 0.5);
        const Eigen::VectorXd zero = Eigen::VectorXd::Zero(spec.dim);
        for (int l = 0; l < int(spec.nLayers); ++l) {
            const BlockWeights fw = loadBlockWeights(*m, l);
            Eigen::VectorXd sa(spec.dim), sm(spec.dim), da(spec.dim), dm(spec.dim);
            for (int64_t j = 0; j < spec.dim; ++j) {
                sa(j) = std::exp(nd(rng)), sm(j) = std::exp(nd(rng));
                da(j) = nd(rng), dm(j) = nd(rng);
            }
            const BlockWeights f = foldLet(fw, sa, sm, da, dm);
            const BlockWeights fs = foldLet(fw, sa, sm);             // scales only
            const BlockWeights f0 = foldLet(fw, sa, sm, zero, zero); // δ = 0
            QCOMPARE(f.attnNormBias.size(), spec.dim);
            QCOMPARE(f.b[kQ].size(), fw.w[kQ].rows());
            QCOMPARE(f.b[kO].size(), Eigen::Index(0));
            QVERIFY((f.attnNormBias.array() * sa.array() + da.array()).abs().maxCoeff() < 1e-12);
            QVERIFY((f.b[kUp] - fw.w[kUp] * dm).norm() < 1e-12);
            LlamaBlock a4(spec, l, 24);
            a4.setActivationQuant({4, 4, 4, 4}, {1, 1, 1, 1});
            for (const auto& x : captureBlockHidden(*m, cal, l)) {
                const MatD X = toMat(x, spec.dim);
                const LlamaBlock blk(spec, l, X.rows());
                MatD y0, y1;
                blk.forward(fw, X, y0, nullptr);
                blk.forward(f, X, y1, nullptr);
                QVERIFY2((y1 - y0).norm() <= 1e-6 * y0.norm(),
                         qPrintable(QString::number((y1 - y0).norm() / y0.norm())));
                // δ = 0 is the scale-only LET exactly, also with quantised activations.
                MatD q0, qs;
                a4.forward(f0, X, q0, nullptr);
                a4.forward(fs, X, qs, nullptr);
                QVERIFY(q0 == qs);
            }
        }
    }

    void letShiftGradientMatchesFiniteDifferences() {
        // L(t, δ) = sum(block(fold(W, e^t, δ) + N) ∘ R), see BlockGradCase.
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const int layer = 3;
        const BlockWeights bw = loadBlockWeights(*m, layer);
        std::mt19937 rng(13);
        std::normal_distribution<double> nd(0.0, 1.0);
        const int64_t T = 6;
        const BlockGradCase lc(bw, T, spec.dim, rng, nd);
        Eigen::VectorXd tA(spec.dim), tM(spec.dim), dA(spec.dim), dM(spec.dim);
        for (int64_t j = 0; j < spec.dim; ++j) {
            tA(j) = 0.3 * nd(rng), tM(j) = 0.3 * nd(rng);
            dA(j) = 0.3 * nd(rng), dM(j) = 0.3 * nd(rng);
        }
        const LlamaBlock blk(spec, layer, T);
        auto fold = [&]() {
            return foldLet(bw, tA.array().exp().matrix(), tM.array().exp().matrix(), dA, dM);
        };
        auto loss = [&]() { return lc.loss(blk, fold()); };
        const BlockWeights f = fold();
        const BlockGrads g = lc.grads(blk, f);
        Eigen::VectorXd gA = Eigen::VectorXd::Zero(spec.dim), gM = gA, gdA = gA, gdM = gA;
        letGrads(f, g, gA, gM);
        letShiftGrads(f, g, tA.array().exp().matrix(), tM.array().exp().matrix(), gdA, gdM);
        const double eps = 1e-5;
        double maxT = 0, maxD = 0;
        for (int64_t j = 0; j < spec.dim; j += 3) {
            for (auto [p, gp, isShift] : {std::tuple{&tA, &gA, false},
                                          {&tM, &gM, false},
                                          {&dA, &gdA, true},
                                          {&dM, &gdM, true}}) {
                const double keep = (*p)(j);
                (*p)(j) = keep + eps;
                const double lp = loss();
                (*p)(j) = keep - eps;
                const double lm = loss();
                (*p)(j) = keep;
                const double fd = (lp - lm) / (2 * eps);
                (isShift ? maxD : maxT) = std::max(isShift ? maxD : maxT, std::fabs(fd));
                QVERIFY2(std::fabs(fd - (*gp)(j)) <= 1e-6 + 1e-5 * std::fabs(fd),
                         qPrintable(QString("%1[%2]: fd %3 analytic %4")
                                        .arg(isShift ? "delta" : "t")
                                        .arg(j)
                                        .arg(fd)
                                        .arg((*gp)(j))));
            }
        }
        QVERIFY2(maxT > 1e-3 && maxD > 1e-3, qPrintable(QString("%1 %2").arg(maxT).arg(maxD)));
    }

    void letShiftFoldedModelMatchesBaseLogits() {
        // Random s, δ folded into every block, written as an overlay (new 1-D bias tensors),
        // saved and loaded: the runtime's float logits equal the base model's.
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        std::mt19937 rng(21);
        std::normal_distribution<double> nd(0.0, 0.3);
        CompressedModel cm(*m);
        cm.baseFingerprint = stats::modelFingerprint(*m);
        auto putVec = [&](const std::string& name, const Eigen::VectorXd& v, bool isNew) {
            std::vector<float> f(size_t(v.size()));
            for (int64_t i = 0; i < v.size(); ++i) f[size_t(i)] = float(v(i));
            QCOMPARE(m->find(name) == nullptr, isNew);
            cm.setFloatTensor(name, std::move(f), {v.size()});
        };
        for (int l = 0; l < int(spec.nLayers); ++l) {
            const BlockWeights fw = loadBlockWeights(*m, l);
            Eigen::VectorXd sa(spec.dim), sm(spec.dim), da(spec.dim), dm(spec.dim);
            for (int64_t j = 0; j < spec.dim; ++j) {
                sa(j) = std::exp(nd(rng)), sm(j) = std::exp(nd(rng));
                da(j) = nd(rng), dm(j) = nd(rng);
            }
            const BlockWeights f = foldLet(fw, sa, sm, da, dm);
            const std::string p = "layers." + std::to_string(l) + ".";
            putVec(p + "attn_norm", f.attnNorm, false);
            putVec(p + "mlp_norm", f.mlpNorm, false);
            putVec(p + "attn_norm.bias", f.attnNormBias, true);
            putVec(p + "mlp_norm.bias", f.mlpNormBias, true);
            for (int i : {kQ, kK, kV, kGate, kUp}) {
                const MatD& w = f.w[size_t(i)];
                std::vector<float> v(size_t(w.size()));
                for (int64_t k = 0; k < w.size(); ++k) v[size_t(k)] = float(w.data()[k]);
                cm.setFloatTensor(p + blockLinearSuffix(i), std::move(v));
                putVec(p + blockLinearSuffix(i) + ".bias", f.b[size_t(i)], true);
            }
        }
        QCOMPARE(cm.addedNames().size(), size_t(7 * spec.nLayers));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, cm.setFloatTensor("layers.0.nope", {1.0f}));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, cm.setFloatTensor("layers.0.nope", {1.0f}, {2}));
        const std::string dir = lcwtest::tempDir("omni-shift-overlay");
        cm.save(dir);
        const auto loaded = CompressedModel::load(dir, *m);
        QVERIFY(loaded->find("layers.2.attn_norm.bias") != nullptr);
        QCOMPARE(loaded->addedNames(), cm.addedNames());
        std::vector<int32_t> ids;
        for (int i = 0; i < 40; ++i) ids.push_back(int32_t((i * 37 + 5) % spec.vocab));
        std::vector<float> ref, got;
        Session s0(*m, {.contextLength = 64, .threads = 2});
        s0.forward(ids, ref, true);
        Session s1(*loaded, {.contextLength = 64, .threads = 2});
        s1.forward(ids, got, true);
        QCOMPARE(got.size(), ref.size());
        double maxd = 0, maxRef = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            maxd = std::max(maxd, double(std::fabs(got[i] - ref[i])));
            maxRef = std::max(maxRef, double(std::fabs(ref[i])));
        }
        QVERIFY2(maxd <= 1e-4 * std::max(1.0, maxRef), qPrintable(QString::number(maxd)));
        // Without the linears' biases W·δ the logits differ (the test is not vacuous).
        CompressedModel noBias(*m);
        for (const auto& name : cm.replacedNames())
            if (m->find(name) || name.ends_with("_norm.bias"))
                noBias.setFloatTensor(name, cm.compressed(name)->values(),
                                      cm.compressed(name)->view.shape);
        Session s2(noBias, {.contextLength = 64, .threads = 2});
        std::vector<float> other;
        s2.forward(ids, other, true);
        double maxo = 0;
        for (size_t i = 0; i < ref.size(); ++i)
            maxo = std::max(maxo, double(std::fabs(other[i] - ref[i])));
        QVERIFY2(maxo > 1e-2, qPrintable(QString::number(maxo)));
    }

    void letW4A4NotWorseThanLwc() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {3, 32});
        OmniQuantOptions o;
        o.epochs = 10;
        o.lr = 1e-2;
        o.actBits = {4, 4, 4, 4};
        double sumStart = 0, sumLwc = 0, sumLet = 0;
        for (int l = 0; l < int(spec.nLayers); ++l) {
            const auto in = captureBlockHidden(*m, cal, l);
            const BlockWeights fw = loadBlockWeights(*m, l);
            std::map<std::string, WeightSettings> set;
            const std::string p = "layers." + std::to_string(l) + ".";
            for (int i = 0; i < 7; ++i)
                set[p + blockLinearSuffix(i)] = intSettings(4, false, Granularity::Channel, 0);
            NullProgress np;
            o.let = false;
            const OmniQuantBlockResult lwc = omniquantBlock(*m, l, in, {}, set, o, np);
            o.let = true;
            const OmniQuantBlockResult let = omniquantBlock(*m, l, in, {}, set, o, np);
            QVERIFY(lwc.folded.empty());
            // 2 norms, q/k/v, gate/up; with shifts 2 norm biases and 5 linear biases.
            QCOMPARE(let.folded.size(), size_t(14));
            QCOMPARE(let.letShift.size(), size_t(2));
            // s = 1 start: LET's start is LWC's start (RTN weights, A4).
            QVERIFY(std::fabs(let.lossStart - lwc.lossStart) <= 1e-12 * lwc.lossStart);
            QVERIFY(lwc.lossEnd <= lwc.lossStart);
            QVERIFY(let.lossEnd <= let.lossStart);
            // Independent W4A4 block loss of the returned tensors.
            const BlockWeights qw = lcwtest::returnedBlock(fw, p, let.folded, let.packed);
            const double e = lcwtest::blockMse(spec, l, fw, qw, in, 4);
            QVERIFY2(std::fabs(e - let.lossEnd) <= 1e-6 * e,
                     qPrintable(QString("independent %1 reported %2").arg(e).arg(let.lossEnd)));
            qInfo("layers.%d W4A4 block loss: start %.5g, LWC %.5g, LWC+LET %.5g", l, lwc.lossStart,
                  lwc.lossEnd, let.lossEnd);
            sumStart += lwc.lossStart;
            sumLwc += lwc.lossEnd;
            sumLet += let.lossEnd;
        }
        // Over the blocks LET lowers the W4A4 loss below LWC alone (block by block it is mixed on
        // this tiny calibration set: +-5 %).
        QVERIFY(sumLwc <= sumStart);
        QVERIFY2(sumLet <= sumLwc, qPrintable(QString("LET %1 LWC %2").arg(sumLet).arg(sumLwc)));
    }

    void compressW4A4WithLet() {
        const std::string dir = lcwtest::tempDir("omni-let");
        const std::string text = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
        for (bool let : {true, false}) {
            const std::string recipe = dir + "/w4a4.json";
            {
                std::ofstream f(recipe);
                f << json({{"lcw_recipe", 1},
                           {"rules",
                            {{{"targets", {"layers.*"}},
                              {"weight",
                               {{"bits", 4},
                                {"symmetric", false},
                                {"granularity", "channel"},
                                {"method", "omniquant"},
                                {"epochs", 2},
                                {"let", let}}},
                              {"activation", {{"bits", 4}, {"mode", "dynamic_per_token"}}}}}}})
                         .dump();
            }
            const auto r = lcwtest::runCli({"compress", QString::fromStdString(demoModel()),
                                            "--recipe", QString::fromStdString(recipe), "--calib",
                                            QString::fromStdString(text), "--samples", "2",
                                            "--seq-len", "32", "--json", "--quiet"});
            QVERIFY2(r.code == 0, r.err.constData());
            const json j = json::parse(r.out.toStdString());
            for (const auto& l : j["layers"]) {
                const auto& d = l["details"];
                QCOMPARE(d["omniquant_act_bits"], json({4, 4, 4, 4}));
                QVERIFY(d["block_loss_end"].get<double>() <= d["block_loss_start"].get<double>());
                QCOMPARE(d.contains("let_scale_range"), let);
                if (let) QCOMPARE(d["let_scale_range"].size(), size_t(2));
            }
        }
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
        QVERIFY_THROWS_EXCEPTION(RecipeError, bad({{"method", "omniquant"}, {"let", "yes"}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, bad({{"method", "omniquant"}, {"lr_let", 0}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, bad({{"method", "omniquant"}, {"let_shift", 1}}));
        bad({{"method", "omniquant"}, {"let", false}, {"lr_let", 0.02}});
        bad({{"method", "omniquant"}, {"let_shift", false}});
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
