// Learned rotations (SpinQuant): the Cayley step against the reference optimiser's formulas
// written here in its own (row-vector) convention, the loss gradient against central
// differences, the invariance of the full-precision model under any orthogonal R / R2, training
// that lowers the simulated quantised loss, the recipe end to end (the runtime's loss of the
// stored model against the simulated one) and the plan-time refusals.
#include "core/common/error.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/compress/rotation.h"
#include "core/compress/spinquant.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "test_util.h"

#include <Eigen/Dense>
#include <QtTest>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;
using Mat = Eigen::MatrixXd;

namespace {

Mat mat(const std::vector<double>& v, int64_t n) {
    Mat m(n, n);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) m(i, j) = v[size_t(i * n + j)];
    return m;
}
std::vector<double> vec(const Mat& m) {
    std::vector<double> v(size_t(m.size()));
    for (int64_t i = 0; i < m.rows(); ++i)
        for (int64_t j = 0; j < m.cols(); ++j) v[size_t(i * m.cols() + j)] = m(i, j);
    return v;
}
Mat randomMatrix(int64_t n, uint32_t seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> d;
    Mat m(n, n);
    for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = d(gen);
    return m;
}
Mat randomOrthogonal(int64_t n, uint32_t seed) {
    return Eigen::HouseholderQR<Mat>(randomMatrix(n, seed)).householderQ() * Mat::Identity(n, n);
}
double orthError(const std::vector<double>& v, int64_t n) {
    const Mat m = mat(v, n);
    return (m.transpose() * m - Mat::Identity(n, n)).cwiseAbs().maxCoeff();
}

/// The reference optimiser's step (SGD on the Stiefel manifold, momentum 0) for its parameter
/// P (the activations are multiplied as x P, rows) with gradient Gp, its formulas as published,
/// the Cayley transform's fixed point iterated to convergence instead of 5 times.
Mat referenceStep(const Mat& P, const Mat& Gp, double lr) {
    const Mat V = -Gp.transpose();
    const Mat MX = V * P;
    const Mat XMX = P * MX;
    const Mat XXMX = P.transpose() * XMX;
    const Mat What = MX - 0.5 * XXMX;
    const Mat W = What - What.transpose();
    const double norm1 = W.cwiseAbs().colwise().sum().maxCoeff();
    const double t = std::min(lr, 1.0 / (norm1 + 1e-8));
    const Mat X = P.transpose();
    Mat Y = X + t * V;
    for (int i = 0; i < 200; ++i) Y = X + t * W * (0.5 * (X + Y));
    return Y.transpose();
}

Recipe spinRecipe(json rot, json rules) {
    return Recipe::fromJson(
        {{"lcw_recipe", 1}, {"name", "spin"}, {"rotation", rot}, {"rules", rules}});
}
json w4a4kv4Rule(const std::string& method) {
    return {{"targets", {"*"}},
            {"weight",
             {{"bits", 4}, {"symmetric", false}, {"granularity", "channel"}, {"method", method}}},
            {"activation", {{"bits", 4}, {"mode", "dynamic_per_token"}}},
            {"kv", {{"k_bits", 4}, {"v_bits", 4}}}};
}

/// The simulation of a rotated recipe's rules (planned on the Hadamard-rotated model).
SpinQuantSimulation simulationOf(const Model& m, const Recipe& r) {
    RotatedModel rot = rotateModel(m, *r.rotation);
    Recipe inner = r;
    inner.rotation.reset();
    PlanOptions po;
    po.hasCalibration = true;
    return spinQuantSimulation(planRecipe(inner, *rot.model, po), m.spec());
}

SpinQuantSimulation floatSimulation(const ModelSpec& s) {
    SpinQuantSimulation sim;
    sim.actBits.assign(size_t(s.nLayers), {0, 0, 0, 0});
    sim.actClip.assign(size_t(s.nLayers), {1, 1, 1, 1});
    sim.kv.assign(size_t(s.nLayers), {});
    return sim;
}

std::vector<std::vector<int32_t>> windowsOf(const CalibrationSet& cal, size_t n, size_t len) {
    std::vector<std::vector<int32_t>> w;
    for (size_t i = 0; i < n && i < cal.samples.size(); ++i)
        w.emplace_back(cal.samples[i].begin(), cal.samples[i].begin() + long(len));
    return w;
}

/// A random orthogonal rotation (R and every R2).
LearnedRotation randomRotation(const ModelSpec& s, uint32_t seed) {
    LearnedRotation r;
    r.r1 = vec(randomOrthogonal(s.dim, seed));
    for (int64_t l = 0; l < s.nLayers; ++l)
        r.r2.push_back(vec(randomOrthogonal(s.headDim, seed + 1 + uint32_t(l))));
    return r;
}

/// The demo model, `n` calibration windows of `len` tokens and the full-precision objective
/// (online transforms on, nothing quantised).
struct FloatSetup {
    std::unique_ptr<Model> m;
    std::vector<std::vector<int32_t>> win;
    RotationSettings rs;
    std::unique_ptr<SpinQuantObjective> f;
    FloatSetup(size_t n, size_t len) : m(Model::load(lcwtest::demoModelPath())) {
        win = windowsOf(loadCalibration(*m, "", {int64_t(n), int64_t(len)}), n, len);
        f = std::make_unique<SpinQuantObjective>(*m, rs, floatSimulation(m->spec()), int64_t(len));
    }
};

} // namespace

class TestSpinQuant : public QObject {
    Q_OBJECT
private slots:
    /// lcw's Cayley step (column-vector convention, X = Pᵀ, G = Gpᵀ, exact inverse) equals the
    /// reference optimiser's step, keeps X orthogonal to rounding, caps α at 1 / ‖W‖₁, and
    /// repeated steps descend a smooth objective on the manifold.
    void cayleyStepMatchesTheReferenceOptimiser() {
        for (int64_t n : {4, 8, 16}) {
            const Mat X = randomOrthogonal(n, uint32_t(n));
            const Mat G = randomMatrix(n, uint32_t(100 + n));
            for (double lr : {1e-3, 0.05, 1.5}) {
                std::vector<double> x = vec(X);
                const double alpha = cayleyStep(x, vec(G), n, lr);
                const Mat ref = referenceStep(X.transpose(), G.transpose(), lr).transpose();
                QVERIFY2((mat(x, n) - ref).cwiseAbs().maxCoeff() < 1e-10,
                         qPrintable(QString("n %1 lr %2").arg(n).arg(lr)));
                QVERIFY(orthError(x, n) < 1e-12);
                QVERIFY(alpha <= lr + 1e-15);
            }
        }
        // Descent: f(X) = ½‖X − Q‖² towards an orthogonal Q from the identity.
        const int64_t n = 8;
        const Mat Q = randomOrthogonal(n, 7);
        std::vector<double> x = vec(Mat::Identity(n, n));
        double prev = 0.5 * (mat(x, n) - Q).squaredNorm();
        const double first = prev;
        for (int t = 0; t < 200; ++t) {
            cayleyStep(x, vec(mat(x, n) - Q), n, 0.2);
            const double f = 0.5 * (mat(x, n) - Q).squaredNorm();
            QVERIFY2(f <= prev + 1e-12,
                     qPrintable(QString("step %1: %2 > %3").arg(t).arg(f).arg(prev)));
            prev = f;
        }
        QVERIFY(orthError(x, n) < 1e-10);
        QVERIFY2(prev < 0.5 * first, qPrintable(QString("%1 → %2").arg(first).arg(prev)));
    }

    /// In full precision the model computes the same function for every orthogonal R and R2:
    /// the loss is the unrotated model's for the Hadamard start and for random rotations, the
    /// Riemannian gradient (the skew part of G Xᵀ) vanishes, and rotateModel() with learned
    /// matrices gives the base's logits through the runtime.
    void fullPrecisionLossIsRotationInvariant() {
        const FloatSetup fs(2, 32);
        const Model* m = fs.m.get();
        const ModelSpec& s = m->spec();
        const auto& win = fs.win;
        const RotationSettings& rs = fs.rs;
        const SpinQuantObjective& f = *fs.f;
        LearnedRotation id;
        id.r1 = vec(Mat::Identity(s.dim, s.dim));
        id.r2.assign(size_t(s.nLayers), vec(Mat::Identity(s.headDim, s.headDim)));
        const double l0 = f(id, win);
        QVERIFY(std::isfinite(l0) && l0 > 0);
        for (const LearnedRotation& r : {hadamardRotation(s, rs), randomRotation(s, 3)}) {
            LearnedRotation g;
            const double l = f(r, win, &g);
            QVERIFY2(std::fabs(l - l0) < 1e-9 * l0, qPrintable(QString("%1 vs %2").arg(l).arg(l0)));
            const Mat G = mat(g.r1, s.dim), X = mat(r.r1, s.dim);
            const double skew = (G * X.transpose() - X * G.transpose()).cwiseAbs().maxCoeff();
            QVERIFY2(G.cwiseAbs().maxCoeff() > 1e-4, "the Euclidean gradient is not zero");
            QVERIFY2(skew < 1e-8 * G.cwiseAbs().maxCoeff() * double(s.dim),
                     qPrintable(QString("skew part %1").arg(skew)));
            for (size_t l = 0; l < r.r2.size(); ++l) {
                const Mat G2 = mat(g.r2[l], s.headDim), X2 = mat(r.r2[l], s.headDim);
                QVERIFY((G2 * X2.transpose() - X2 * G2.transpose()).cwiseAbs().maxCoeff() < 1e-8);
            }
        }
        // The runtime: the rotated model with random learned matrices keeps the base's logits.
        const LearnedRotation r = randomRotation(s, 11);
        RotatedModel rot = rotateModel(*m, rs, &r);
        std::vector<int32_t> ids(win[0].begin(), win[0].begin() + 16);
        std::vector<float> a, b;
        Session(*m).forward(ids, a, true);
        Session(*rot.model).forward(ids, b, true);
        QCOMPARE(a.size(), b.size());
        float mx = 0, d = 0;
        for (size_t i = 0; i < a.size(); ++i) {
            mx = std::max(mx, std::fabs(a[i]));
            d = std::max(d, std::fabs(a[i] - b[i]));
        }
        QVERIFY2(d < 1e-4f * mx,
                 qPrintable(QString("logits differ by %1 (max %2)").arg(d).arg(mx)));
        // Wrong sizes are refused.
        LearnedRotation bad = r;
        bad.r2.pop_back();
        QVERIFY_THROWS_EXCEPTION(ArgumentError, rotateModel(*m, rs, &bad));
    }

    /// dL/dR and dL/dR2 (the chain rule through every folded weight) against central
    /// differences of the loss, at a non-orthogonal point so that the loss depends on every
    /// direction; with the online down transform and the per-head transform on.
    void gradientMatchesCentralDifferences() {
        const FloatSetup fs(2, 12);
        const ModelSpec& s = fs.m->spec();
        const auto& win = fs.win;
        const SpinQuantObjective& f = *fs.f;
        LearnedRotation x = hadamardRotation(s, fs.rs);
        const Mat noise = randomMatrix(s.dim, 5) * 0.05;
        for (size_t i = 0; i < x.r1.size(); ++i) x.r1[i] += vec(noise)[i];
        for (auto& r2 : x.r2)
            for (size_t i = 0; i < r2.size(); ++i) r2[i] += 0.03 * std::sin(double(i) + 1.0);
        LearnedRotation g;
        f(x, win, &g);
        const double h = 1e-5;
        auto check = [&](std::vector<double>& p, const std::vector<double>& gp, size_t i,
                         const char* what) {
            const double keep = p[i];
            p[i] = keep + h;
            const double up = f(x, win);
            p[i] = keep - h;
            const double dn = f(x, win);
            p[i] = keep;
            const double num = (up - dn) / (2 * h);
            QVERIFY2(std::fabs(num - gp[i]) < 1e-6 + 1e-5 * std::fabs(num),
                     qPrintable(QString("%1[%2]: analytic %3, numeric %4")
                                    .arg(what)
                                    .arg(i)
                                    .arg(gp[i])
                                    .arg(num)));
        };
        for (size_t i : {size_t(0), size_t(65), size_t(1000), size_t(2047), size_t(4095)})
            check(x.r1, g.r1, i, "R");
        for (size_t l : {size_t(0), size_t(s.nLayers - 1)})
            for (size_t i : {size_t(0), size_t(9), size_t(63)}) check(x.r2[l], g.r2[l], i, "R2");
    }

    /// Training on the demo model's simulated W4A4 KV4 (RTN weights) lowers the calibration
    /// loss from the Hadamard start; the learned matrices stay orthogonal.
    void learningLowersTheQuantisedLoss() {
        auto m = Model::load(lcwtest::demoModelPath());
        const ModelSpec& s = m->spec();
        Recipe r = spinRecipe({{"method", "spinquant"}, {"steps", 12}, {"batch", 4}},
                              json::array({w4a4kv4Rule("rtn")}));
        const SpinQuantSimulation sim = simulationOf(*m, r);
        QCOMPARE(sim.weights.size(), size_t(7 * s.nLayers));
        QCOMPARE(sim.actBits[0][kActDown], 4);
        QCOMPARE(sim.kv[0].kBits, 4);
        const CalibrationSet cal = loadCalibration(*m, "", {8, 64});
        NullProgress np;
        const SpinQuantResult res = learnRotation(*m, *r.rotation, sim, cal.samples, np);
        QCOMPARE(res.status, Status::Ok);
        QCOMPARE(int(res.stepLoss.size()), 12);
        qInfo("spinquant W4A4 KV4 RTN, demo, 8 x 64 tokens: loss %.4f -> %.4f (%.1f s)",
              res.lossStart, res.lossEnd, res.seconds);
        QVERIFY2(res.lossEnd < res.lossStart - 0.01,
                 qPrintable(QString("%1 → %2").arg(res.lossStart).arg(res.lossEnd)));
        QVERIFY(res.kept);
        QVERIFY(orthError(res.rotation.r1, s.dim) < 1e-10);
        for (const auto& r2 : res.rotation.r2) QVERIFY(orthError(r2, s.headDim) < 1e-10);
        // GPTQ rules are learned with float weights (the reference's W16A4KV4).
        QVERIFY(simulationOf(
                    *m, spinRecipe({{"method", "spinquant"}}, json::array({w4a4kv4Rule("gptq")})))
                    .weights.empty());
    }

    /// The recipe end to end: the learned rotation is folded and stored, the report carries the
    /// training, and the runtime's loss of the stored model on the calibration windows is the
    /// simulated loss (the simulation is what the runtime computes).
    void recipeStoresTheLearnedRotation() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {6, 64});
        Recipe r = findPreset("W4A4-KV4-SpinQuant").recipe;
        QVERIFY(r.rotation && r.rotation->learned);
        QCOMPARE(r.rotation->steps, 100);
        QVERIFY(Recipe::fromJson(r.toJson()).rotation == r.rotation);
        r.rotation->steps = 8;
        r.rotation->batch = 3;
        CompressOptions o;
        o.calibration = &cal;
        NullProgress np;
        CompressResult res = lcw::compress::compress(*m, r, np, o);
        QCOMPARE(res.status, Status::Ok);
        const json rep = json::parse(compressReportJson(res).dump());
        QVERIFY(rep.contains("rotation"));
        QCOMPARE(rep["rotation"]["method"].get<std::string>(), std::string("spinquant"));
        QCOMPARE(rep["rotation"]["steps"].get<int>(), 8);
        const double lossEnd = rep["rotation"]["loss_end"].get<double>();
        QVERIFY(rep["rotation"]["kept"].get<bool>());
        QVERIFY(lossEnd < rep["rotation"]["loss_start"].get<double>());
        // The runtime's mean next-token loss of the stored model on the same windows.
        double sum = 0;
        int64_t n = 0;
        for (const auto& w : cal.samples) {
            Session sess(*res.model);
            std::vector<double> lp;
            sess.scoreFrom(w, 0, lp);
            for (double v : lp) sum -= v, ++n;
        }
        const double runtimeLoss = sum / double(n);
        qInfo("simulated loss %.5f, runtime %.5f", lossEnd, runtimeLoss);
        QVERIFY2(std::fabs(runtimeLoss - lossEnd) < 0.002 * lossEnd,
                 qPrintable(QString("runtime %1, simulated %2").arg(runtimeLoss).arg(lossEnd)));
        // Without calibration: refused at plan time.
        QVERIFY_THROWS_EXCEPTION(RecipeError, planRecipe(r, *m));
    }

    /// What the loss cannot simulate is refused at plan time, naming rotation.method; learning
    /// options on a Hadamard rotation are refused too.
    void refusals() {
        auto m = Model::load(lcwtest::demoModelPath());
        PlanOptions po;
        po.hasCalibration = true;
        auto refused = [&](json rule, const std::string& field) {
            try {
                planRecipe(spinRecipe({{"method", "spinquant"}}, json::array({rule})), *m, po);
            } catch (const RecipeError& e) {
                return std::string(e.what()).find(field) != std::string::npos;
            }
            return false;
        };
        json kivi = w4a4kv4Rule("rtn");
        kivi["kv"]["k_granularity"] = "channel";
        QVERIFY(refused(kivi, "rotation.method"));
        json stat = w4a4kv4Rule("rtn");
        stat["activation"]["mode"] = "static_per_tensor";
        QVERIFY(refused(stat, "rotation.method"));
        json groups = w4a4kv4Rule("rtn");
        groups["activation"]["group_size"] = 16;
        QVERIFY(refused(groups, "rotation.method"));
        QVERIFY(!refused(w4a4kv4Rule("rtn"), "rotation.method"));
        QVERIFY_THROWS_EXCEPTION(
            RecipeError, spinRecipe({{"method", "hadamard"}, {"steps", 10}}, json::array()));
        QVERIFY_THROWS_EXCEPTION(RecipeError,
                                 spinRecipe({{"method", "spinquant"}, {"lr", -1}}, json::array()));
    }
};

QTEST_GUILESS_MAIN(TestSpinQuant)
#include "test_spinquant.moc"
