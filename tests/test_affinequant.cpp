// AffineQuant (core/compress/affine, omniquant with OmniQuantOptions::affine): the per-head
// affine fold between attn.v and attn.o against a loop-and-Gauss–Jordan reference written here,
// its gradients against central differences, the full-precision equivalence of the transformed
// block, the gradual mask's schedule and the projection keeping every matrix strictly diagonally
// dominant (hence invertible) at every step, the diagonal-only mask as the LET-style diagonal
// scaling, block training (never worse than its start, the returned tensors reproducing the
// reported loss) and the recipe / preset / CLI path.
#include "block_test_util.h"
#include "core/common/error.h"
#include "core/compress/affine.h"
#include "core/compress/block_grad.h"
#include "core/compress/calibration.h"
#include "core/compress/omniquant.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cmath>
#include <fstream>
#include <functional>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using lcwtest::BlockGradCase;
using lcwtest::matOf;
using lcwtest::toMat;

std::string demoModel() {
    return lcwtest::demoModelPath();
}

WeightSettings intSettings(int bits) {
    WeightSettings s;
    s.bits = bits;
    s.symmetric = false;
    s.granularity = Granularity::Channel;
    s.method = WeightMethod::OmniQuant;
    return s;
}

/// Gauss–Jordan inverse with partial pivoting (the test's own, independent of Eigen's LU).
MatD refInverse(const MatD& a) {
    const int64_t n = a.rows();
    std::vector<std::vector<double>> m(size_t(n), std::vector<double>(size_t(2 * n), 0.0));
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) m[size_t(i)][size_t(j)] = a(i, j);
        m[size_t(i)][size_t(n + i)] = 1.0;
    }
    for (int64_t c = 0; c < n; ++c) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < n; ++r)
            if (std::fabs(m[size_t(r)][size_t(c)]) > std::fabs(m[size_t(piv)][size_t(c)])) piv = r;
        std::swap(m[size_t(c)], m[size_t(piv)]);
        const double p = m[size_t(c)][size_t(c)];
        for (auto& x : m[size_t(c)]) x /= p;
        for (int64_t r = 0; r < n; ++r) {
            if (r == c) continue;
            const double f = m[size_t(r)][size_t(c)];
            for (int64_t j = 0; j < 2 * n; ++j)
                m[size_t(r)][size_t(j)] -= f * m[size_t(c)][size_t(j)];
        }
    }
    MatD inv(n, n);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) inv(i, j) = m[size_t(i)][size_t(n + j)];
    return inv;
}

/// The paper's equivalent transform written with loops: v rows of KV head g ← A_g ·, v bias
/// likewise, o columns of every query head of the group ← · A_g⁻¹.
BlockWeights refFold(const BlockWeights& w, const std::vector<MatD>& A, const ModelSpec& s) {
    BlockWeights f = w;
    const int64_t hd = s.headDim, group = s.nHeads / s.nKvHeads;
    for (int64_t g = 0; g < s.nKvHeads; ++g) {
        const MatD& a = A[size_t(g)];
        const MatD inv = refInverse(a);
        for (int64_t i = 0; i < hd; ++i) {
            for (int64_t c = 0; c < w.w[kV].cols(); ++c) {
                double acc = 0;
                for (int64_t k = 0; k < hd; ++k) acc += a(i, k) * w.w[kV](g * hd + k, c);
                f.w[kV](g * hd + i, c) = acc;
            }
            if (w.b[kV].size()) {
                double acc = 0;
                for (int64_t k = 0; k < hd; ++k) acc += a(i, k) * w.b[kV](g * hd + k);
                f.b[kV](g * hd + i) = acc;
            }
        }
        for (int64_t h = g * group; h < (g + 1) * group; ++h)
            for (int64_t r = 0; r < w.w[kO].rows(); ++r)
                for (int64_t j = 0; j < hd; ++j) {
                    double acc = 0;
                    for (int64_t k = 0; k < hd; ++k) acc += w.w[kO](r, h * hd + k) * inv(k, j);
                    f.w[kO](r, h * hd + j) = acc;
                }
    }
    return f;
}

/// A dense random matrix, strictly diagonally dominant with row margin ≥ `margin`.
MatD randomDominant(int64_t n, std::mt19937& rng, double margin) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.5, 1.5);
    MatD a(n, n);
    for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int64_t j = 0; j < n; ++j)
            if (j != i) s += std::fabs(a(i, j) = nd(rng));
        a(i, i) = (nd(rng) < 0 ? -1 : 1) * u(rng);
        const double want =
            (1 - margin) * std::fabs(a(i, i)) * std::uniform_real_distribution<>(0.2, 1.0)(rng);
        for (int64_t j = 0; j < n; ++j)
            if (j != i) a(i, j) *= want / s;
    }
    return a;
}

/// The test's strict-dominance margin min_i (|a_ii| − Σ_{j≠i} |a_ij|) / |a_ii|.
double refMargin(const MatD& a) {
    double m = 1e300;
    for (int64_t i = 0; i < a.rows(); ++i) {
        double s = 0;
        for (int64_t j = 0; j < a.cols(); ++j)
            if (j != i) s += std::fabs(a(i, j));
        m = std::min(m, (std::fabs(a(i, i)) - s) / std::fabs(a(i, i)));
    }
    return m;
}

std::vector<MatD> randomHeads(const ModelSpec& s, std::mt19937& rng, double margin) {
    std::vector<MatD> a;
    for (int64_t g = 0; g < s.nKvHeads; ++g) a.push_back(randomDominant(s.headDim, rng, margin));
    return a;
}

std::map<std::string, WeightSettings> allLinears(int layer, int bits) {
    std::map<std::string, WeightSettings> set;
    for (int i = 0; i < 7; ++i)
        set["layers." + std::to_string(layer) + "." + blockLinearSuffix(i)] = intSettings(bits);
    return set;
}

} // namespace

class TestAffineQuant : public QObject {
    Q_OBJECT
private slots:
    void foldMatchesReference() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        QVERIFY(spec.nHeads > spec.nKvHeads); // the demo model has GQA: groups share A_g
        std::mt19937 rng(1);
        std::normal_distribution<double> nd(0.0, 0.3);
        for (int l = 0; l < int(spec.nLayers); ++l) {
            BlockWeights w = loadBlockWeights(*m, l);
            w.b[kV] = Eigen::VectorXd(w.w[kV].rows());
            for (int64_t i = 0; i < w.b[kV].size(); ++i) w.b[kV](i) = nd(rng);
            const std::vector<MatD> A = randomHeads(spec, rng, 0.05);
            const AffineVO vo(A, spec.nHeads, spec.nKvHeads, spec.headDim);
            const BlockWeights f = vo.fold(w), r = refFold(w, A, spec);
            for (int i = 0; i < 7; ++i)
                QVERIFY2((f.w[size_t(i)] - r.w[size_t(i)]).cwiseAbs().maxCoeff() <= 1e-12,
                         blockLinearSuffix(i));
            QVERIFY((f.b[kV] - r.b[kV]).cwiseAbs().maxCoeff() <= 1e-12);
            for (size_t g = 0; g < A.size(); ++g)
                QVERIFY((vo.inverses()[g] * A[g] - MatD::Identity(spec.headDim, spec.headDim))
                            .cwiseAbs()
                            .maxCoeff() <= 1e-12);
            // Only v and o change.
            for (int i : {kQ, kK, kGate, kUp, kDown}) QVERIFY(f.w[size_t(i)] == w.w[size_t(i)]);
            QVERIFY(f.attnNorm == w.attnNorm && f.mlpNorm == w.mlpNorm);
        }
    }

    void fullPrecisionOutputUnchanged() {
        // The paper's claim by construction: in full precision the transformed block computes
        // the original function (here on top of LET's diagonal scales and shifts too).
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {2, 24});
        std::mt19937 rng(2);
        std::normal_distribution<double> nd(0.0, 0.3);
        for (int l = 0; l < int(spec.nLayers); ++l) {
            const BlockWeights fw = loadBlockWeights(*m, l);
            Eigen::VectorXd sa(spec.dim), sm(spec.dim), da(spec.dim), dm(spec.dim);
            for (int64_t j = 0; j < spec.dim; ++j) {
                sa(j) = std::exp(nd(rng)), sm(j) = std::exp(nd(rng));
                da(j) = nd(rng), dm(j) = nd(rng);
            }
            const BlockWeights let = foldLet(fw, sa, sm, da, dm);
            for (double margin : {0.5, 0.02}) {
                const AffineVO vo(randomHeads(spec, rng, margin), spec.nHeads, spec.nKvHeads,
                                  spec.headDim);
                const BlockWeights f = vo.fold(let);
                double worst = 0;
                for (const auto& x : captureBlockHidden(*m, cal, l)) {
                    const MatD X = toMat(x, spec.dim);
                    const LlamaBlock blk(spec, l, X.rows());
                    MatD y0, y1;
                    blk.forward(fw, X, y0, nullptr);
                    blk.forward(f, X, y1, nullptr);
                    worst = std::max(worst, (y1 - y0).cwiseAbs().maxCoeff() /
                                                std::max(1.0, y0.cwiseAbs().maxCoeff()));
                }
                QVERIFY2(worst <= 1e-9, qPrintable(QString("layer %1: %2").arg(l).arg(worst)));
            }
        }
    }

    void gradientMatchesFiniteDifferences() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const int layer = 2;
        BlockWeights w = loadBlockWeights(*m, layer);
        std::mt19937 rng(3);
        std::normal_distribution<double> nd(0.0, 0.3);
        w.b[kV] = Eigen::VectorXd(w.w[kV].rows());
        for (int64_t i = 0; i < w.b[kV].size(); ++i) w.b[kV](i) = nd(rng);
        const int64_t T = 6, hd = spec.headDim;
        std::normal_distribution<double> unit(0.0, 1.0);
        const BlockGradCase gc(w, T, spec.dim, rng, unit);
        const LlamaBlock blk(spec, layer, T);
        std::vector<MatD> A = randomHeads(spec, rng, 0.1);
        auto lossAt = [&](const std::vector<MatD>& a, const BlockWeights& ww) {
            return gc.loss(blk, refFold(ww, a, spec));
        };
        const AffineVO vo(A, spec.nHeads, spec.nKvHeads, hd);
        BlockGrads g = gc.grads(blk, vo.fold(w));
        const std::vector<MatD> gA = vo.grads(w, g); // g now w.r.t. the unfolded v / o
        QCOMPARE(gA.size(), size_t(spec.nKvHeads));
        const double eps = 1e-5;
        double maxAbs = 0;
        auto fdCheck = [&](double& x, double analytic, const auto& loss, const QString& what) {
            const double keep = x;
            x = keep + eps;
            const double lp = loss();
            x = keep - eps;
            const double lm = loss();
            x = keep;
            const double fd = (lp - lm) / (2 * eps);
            maxAbs = std::max(maxAbs, std::fabs(fd));
            QVERIFY2(std::fabs(fd - analytic) <= 1e-6 + 1e-5 * std::fabs(fd),
                     qPrintable(what + QString(": fd %1 analytic %2").arg(fd).arg(analytic)));
        };
        auto lossA = [&]() { return lossAt(A, w); };
        for (int64_t kv = 0; kv < spec.nKvHeads; ++kv)
            for (int64_t i = 0; i < hd; ++i)
                for (int64_t j = 0; j < hd; ++j)
                    if (kv == 0 || (i + 2 * j + kv) % 5 == 0)
                        fdCheck(A[size_t(kv)](i, j), gA[size_t(kv)](i, j), lossA,
                                QString("A%1[%2,%3]").arg(kv).arg(i).arg(j));
        QVERIFY2(maxAbs > 1e-3, qPrintable(QString::number(maxAbs))); // not vacuous
        // The pulled-back gradients w.r.t. the weights before the transform.
        std::uniform_int_distribution<int64_t> pick(0, 1 << 30);
        for (int k = 0; k < 10; ++k) {
            const int64_t rv = pick(rng) % w.w[kV].rows(), cv = pick(rng) % w.w[kV].cols();
            fdCheck(w.w[kV](rv, cv), g.w[kV](rv, cv), lossA, QString("W_v[%1,%2]").arg(rv).arg(cv));
            const int64_t ro = pick(rng) % w.w[kO].rows(), co = pick(rng) % w.w[kO].cols();
            fdCheck(w.w[kO](ro, co), g.w[kO](ro, co), lossA, QString("W_o[%1,%2]").arg(ro).arg(co));
            const int64_t b = pick(rng) % w.b[kV].size();
            fdCheck(w.b[kV](b), g.b[kV](b), lossA, QString("b_v[%1]").arg(b));
        }
        // The parametrisation A = D + α (O ⊙ M_band): dL/dD_i = dL/dA_ii, dL/dO_ij = α dL/dA_ij
        // inside the band, 0 outside.
        const double alpha = 0.3;
        const int band = 2;
        AffineParams p = AffineParams::identity(hd);
        for (int64_t i = 0; i < hd; ++i) {
            p.d(i) = 1.0 + 0.2 * nd(rng);
            for (int64_t j = 0; j < hd; ++j)
                if (i != j && std::abs(i - j) <= band) p.off(i, j) = nd(rng);
        }
        std::vector<MatD> A2 = A;
        A2[1] = p.matrix(alpha, band);
        const AffineVO vo2(A2, spec.nHeads, spec.nKvHeads, hd);
        BlockGrads g2 = gc.grads(blk, vo2.fold(w));
        const MatD gA1 = vo2.grads(w, g2)[1];
        auto lossP = [&]() {
            std::vector<MatD> a = A2;
            a[1] = p.matrix(alpha, band);
            return lossAt(a, w);
        };
        for (int64_t i = 0; i < hd; ++i) {
            fdCheck(p.d(i), gA1(i, i), lossP, QString("D[%1]").arg(i));
            for (int64_t j = 0; j < hd; ++j) {
                if (i == j) continue;
                const bool in = std::abs(i - j) <= band;
                fdCheck(p.off(i, j), in ? alpha * gA1(i, j) : 0.0, lossP,
                        QString("O[%1,%2]").arg(i).arg(j));
            }
        }
    }

    void diagonalMaskIsLetScaling() {
        // Diagonal only: A = diag(d) is a per-channel scaling of v rows / o columns — LET's
        // form (producer × s, consumer ÷ s) — and d_i dL/dd_i is LET's log-scale gradient
        // Σ G'⊙W' over the scaled rows minus over the scaled columns.
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const int layer = 1;
        const BlockWeights w = loadBlockWeights(*m, layer);
        std::mt19937 rng(4);
        std::normal_distribution<double> nd(0.0, 0.3);
        const int64_t hd = spec.headDim, group = spec.nHeads / spec.nKvHeads;
        for (int e = 0; e < 7; ++e) QCOMPARE(affineBand(AffineMask::Diagonal, e, 7, hd), 0);
        QCOMPARE(affineBand(AffineMask::Gradual, 0, 7, hd), 0); // the gradual mask starts there
        std::vector<MatD> A;
        std::vector<AffineParams> ps;
        for (int64_t g = 0; g < spec.nKvHeads; ++g) {
            AffineParams p = AffineParams::identity(hd);
            for (int64_t i = 0; i < hd; ++i) {
                p.d(i) = std::exp(nd(rng));
                for (int64_t j = 0; j < hd; ++j)
                    if (i != j) p.off(i, j) = nd(rng); // masked out at band 0
            }
            A.push_back(p.matrix(0.5, 0));
            QVERIFY(A.back().isDiagonal(0.0));
            ps.push_back(p);
        }
        const AffineVO vo(A, spec.nHeads, spec.nKvHeads, hd);
        const BlockWeights f = vo.fold(w);
        for (int64_t g = 0; g < spec.nKvHeads; ++g)
            for (int64_t i = 0; i < hd; ++i) {
                const double s = ps[size_t(g)].d(i);
                QVERIFY(
                    (f.w[kV].row(g * hd + i) - s * w.w[kV].row(g * hd + i)).cwiseAbs().maxCoeff() <=
                    1e-14);
                for (int64_t h = g * group; h < (g + 1) * group; ++h)
                    QVERIFY((f.w[kO].col(h * hd + i) - w.w[kO].col(h * hd + i) / s)
                                .cwiseAbs()
                                .maxCoeff() <= 1e-14);
            }
        std::normal_distribution<double> unit(0.0, 1.0);
        const BlockGradCase gc(w, 5, spec.dim, rng, unit);
        const LlamaBlock blk(spec, layer, 5);
        BlockGrads g = gc.grads(blk, f);
        const BlockGrads gFolded = g;
        const std::vector<MatD> gA = vo.grads(w, g);
        for (int64_t kv = 0; kv < spec.nKvHeads; ++kv)
            for (int64_t i = 0; i < hd; ++i) {
                double let =
                    (gFolded.w[kV].row(kv * hd + i).array() * f.w[kV].row(kv * hd + i).array())
                        .sum();
                for (int64_t h = kv * group; h < (kv + 1) * group; ++h)
                    let -= (gFolded.w[kO].col(h * hd + i).array() * f.w[kO].col(h * hd + i).array())
                               .sum();
                const double mine = ps[size_t(kv)].d(i) * gA[size_t(kv)](i, i);
                QVERIFY2(std::fabs(mine - let) <= 1e-9 * (1 + std::fabs(let)),
                         qPrintable(QString("%1 vs %2").arg(mine).arg(let)));
            }
        // Trained with the diagonal mask, the matrices stay exactly diagonal.
        const CalibrationSet cal = loadCalibration(*m, "", {2, 24});
        OmniQuantOptions o;
        o.epochs = 3;
        o.actBits = {4, 4, 4, 4};
        o.affine.on = true;
        o.affine.mask = AffineMask::Diagonal;
        NullProgress np;
        const auto r =
            omniquantBlock(*m, 0, captureBlockHidden(*m, cal, 0), {}, allLinears(0, 4), o, np);
        QCOMPARE(r.affine.size(), size_t(1));
        for (const auto& a : r.affine.at("layers.0.attn.v")) {
            const MatD am = Eigen::Map<const MatD>(a.data(), hd, hd);
            QVERIFY(am.isDiagonal(0.0));
        }
        QCOMPARE(r.affineOffRatio, 0.0);
    }

    void staysDiagonallyDominantThroughSchedule() {
        // Adversarial updates (large random kicks of D and O) followed by the projection, step
        // by step through the gradual mask's schedule: every matrix is strictly diagonally
        // dominant with margin ≥ 1 − ρ, invertible, and zero outside the current band.
        std::mt19937 rng(5);
        std::normal_distribution<double> nd(0.0, 1.0);
        const int64_t n = 8;
        for (AffineMask mask : {AffineMask::Gradual, AffineMask::Full, AffineMask::Diagonal})
            for (double alpha : {0.05, 1.0, 5.0})
                for (double rho : {0.5, 0.9}) {
                    const int epochs = 6;
                    AffineParams p = AffineParams::identity(n);
                    int lastBand = 0;
                    for (int e = 0; e < epochs; ++e) {
                        const int band = affineBand(mask, e, epochs, n);
                        const int ref =
                            mask == AffineMask::Diagonal ? 0
                            : mask == AffineMask::Full
                                ? int(n - 1)
                                : int(std::lround(double(e) * double(n - 1) / double(epochs - 1)));
                        QCOMPARE(band, ref);
                        QVERIFY(band >= lastBand);
                        lastBand = band;
                        for (int step = 0; step < 10; ++step) {
                            for (int64_t i = 0; i < n; ++i) {
                                p.d(i) += 0.7 * nd(rng);
                                for (int64_t j = 0; j < n; ++j)
                                    if (i != j) p.off(i, j) += 20.0 * nd(rng);
                            }
                            p.project(alpha, band, rho, 0.1);
                            const MatD a = p.matrix(alpha, band);
                            const double margin = refMargin(a);
                            QVERIFY2(margin >= 1 - rho - 1e-12 && margin > 0,
                                     qPrintable(QString::number(margin)));
                            QVERIFY(std::fabs(dominanceMargin(a) - margin) <= 1e-12);
                            for (int64_t i = 0; i < n; ++i) {
                                QVERIFY(p.d(i) >= 0.1);
                                for (int64_t j = 0; j < n; ++j)
                                    if (std::abs(i - j) > band) QCOMPARE(a(i, j), 0.0);
                            }
                            const MatD inv = refInverse(a);
                            QVERIFY((inv * a - MatD::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-9);
                            // Levy–Desplanques bound ‖A⁻¹‖∞ ≤ 1 / ((1 − ρ) min d).
                            QVERIFY(inv.cwiseAbs().rowwise().sum().maxCoeff() <=
                                    1.0 / ((1 - rho) * p.d.minCoeff()) + 1e-9);
                        }
                    }
                    if (mask == AffineMask::Gradual) QCOMPARE(lastBand, int(n - 1));
                }
        // The matrices block training keeps are strictly dominant too (checked here).
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {2, 24});
        OmniQuantOptions o;
        o.epochs = 4;
        o.actBits = {4, 4, 4, 4};
        o.affine.on = true;
        o.affine.alpha = 5.0; // large off-diagonal steps: the projection has to act
        o.affine.lr = 0.05;
        o.affine.mask = AffineMask::Full;
        NullProgress np;
        const auto r =
            omniquantBlock(*m, 1, captureBlockHidden(*m, cal, 1), {}, allLinears(1, 4), o, np);
        double worst = 1;
        for (const auto& a : r.affine.at("layers.1.attn.v"))
            worst = std::min(
                worst, refMargin(Eigen::Map<const MatD>(a.data(), spec.headDim, spec.headDim)));
        QVERIFY2(worst >= 1 - o.affine.rho - 1e-12, qPrintable(QString::number(worst)));
        QVERIFY(std::fabs(worst - r.affineMargin) <= 1e-12);
    }

    void trainingNeverWorseAndTensorsReproduceLoss() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {3, 32});
        OmniQuantOptions o;
        o.epochs = 6;
        o.lr = 1e-2;
        o.actBits = {4, 4, 4, 4};
        o.affine.on = true;
        double sumLet = 0, sumAff = 0;
        for (int l = 0; l < int(spec.nLayers); ++l) {
            const auto in = captureBlockHidden(*m, cal, l);
            const BlockWeights fw = loadBlockWeights(*m, l);
            const std::string p = "layers." + std::to_string(l) + ".";
            NullProgress np;
            const OmniQuantBlockResult r = omniquantBlock(*m, l, in, {}, allLinears(l, 4), o, np);
            OmniQuantOptions lo = o;
            lo.affine.on = false;
            const OmniQuantBlockResult let =
                omniquantBlock(*m, l, in, {}, allLinears(l, 4), lo, np);
            // Identity start: AffineQuant's start is OmniQuant's (RTN weights, A4).
            QVERIFY(std::fabs(r.lossStart - let.lossStart) <= 1e-12 * let.lossStart);
            QVERIFY(r.lossEnd <= r.lossStart);
            QCOMPARE(r.affine.at(p + "attn.v").size(), size_t(spec.nKvHeads));
            QVERIFY(r.folded.count(p + "attn.o") && r.folded.count(p + "attn.v"));
            QCOMPARE(r.affineBand, int(spec.headDim - 1)); // the last epoch's mask is full
            // Independent W4A4 block loss of the returned tensors.
            const BlockWeights qw = lcwtest::returnedBlock(fw, p, r.folded, r.packed);
            const double e = lcwtest::blockMse(spec, l, fw, qw, in, 4);
            QVERIFY2(std::fabs(e - r.lossEnd) <= 1e-6 * e,
                     qPrintable(QString("independent %1 reported %2").arg(e).arg(r.lossEnd)));
            // The float v / o exported are the affine transform of LET's folded weights: the
            // packed o dequantises close to them (int4 rounding only).
            const MatD oF = matOf(r.folded.at(p + "attn.o"), fw.w[kO].rows(), fw.w[kO].cols());
            QVERIFY((qw.w[kO] - oF).cwiseAbs().maxCoeff() <= 0.5 * oF.cwiseAbs().maxCoeff());
            qInfo("layers.%d W4A4 block loss: start %.5g, LWC+LET %.5g, AffineQuant %.5g "
                  "(margin %.3f, max |off|/diag %.3g)",
                  l, r.lossStart, let.lossEnd, r.lossEnd, r.affineMargin, r.affineOffRatio);
            sumLet += let.lossEnd;
            sumAff += r.lossEnd;
        }
        qInfo("summed W4A4 block loss: LWC+LET %.5g, AffineQuant %.5g", sumLet, sumAff);
    }

    void recipePresetAndCli() {
        auto bad = [](json w) {
            return Recipe::fromJson(
                {{"lcw_recipe", 1}, {"rules", json::array({{{"targets", {"*"}}, {"weight", w}}})}});
        };
        auto field = [&](json w) {
            try {
                bad(std::move(w));
            } catch (const RecipeError& e) {
                return std::string(e.what());
            }
            return std::string("no error");
        };
        const json om = {{"method", "omniquant"}};
        auto with = [&](json a) {
            json w = om;
            w["affine"] = std::move(a);
            return w;
        };
        QVERIFY(field(with("yes")).find("weight.affine") != std::string::npos);
        QVERIFY(field(with({{"alpha", 0}})).find("weight.affine.alpha") != std::string::npos);
        QVERIFY(field(with({{"lr", -1}})).find("weight.affine.lr") != std::string::npos);
        QVERIFY(field(with({{"mask", "band"}})).find("weight.affine.mask") != std::string::npos);
        QVERIFY(field(with({{"dominance", 1}})).find("weight.affine.dominance") !=
                std::string::npos);
        QVERIFY(field(with({{"min_diag", 0}})).find("weight.affine.min_diag") != std::string::npos);
        QVERIFY(field(with({{"epochs", 3}})).find("weight.affine.epochs") != std::string::npos);
        bad(with(true));
        bad(with({{"alpha", 0.5}, {"mask", "full"}, {"lr", 0.01}, {"dominance", 0.8}}));
        // With a method other than omniquant: an error when the layers are planned.
        auto m = Model::load(demoModel());
        const Recipe rtn = bad({{"bits", 4}, {"affine", true}});
        PlanOptions po;
        po.hasCalibration = true;
        try {
            planRecipe(rtn, *m, po);
            QFAIL("affine with rtn accepted");
        } catch (const RecipeError& e) {
            QVERIFY2(std::string(e.what()).find("weight.affine") != std::string::npos, e.what());
        }
        // Presets.
        for (const char* name : {"W4A4-AffineQuant", "W3A16-g64-AffineQuant"}) {
            const Preset* p = nullptr;
            for (const Preset& x : presets())
                if (x.name == name) p = &x;
            QVERIFY2(p, name);
            QCOMPARE(p->recipe.rules[0].weight->at("affine"), json(true));
        }
        // CLI: compress with AffineQuant, details carry the affine fields; perplexity runs.
        const std::string dir = lcwtest::tempDir("affinequant");
        const std::string recipe = dir + "/aq.json";
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
                            {"affine", {{"mask", "gradual"}, {"alpha", 0.5}}}}},
                          {"activation", {{"bits", 4}, {"mode", "dynamic_per_token"}}}}}}})
                     .dump();
        }
        const std::string text = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
        const auto r = lcwtest::runCli({"compress", QString::fromStdString(demoModel()), "--recipe",
                                        QString::fromStdString(recipe), "--calib",
                                        QString::fromStdString(text), "--samples", "2", "--seq-len",
                                        "32", "--json", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const json j = json::parse(r.out.toStdString());
        int withAffine = 0;
        for (const auto& l : j["layers"]) {
            const auto& d = l["details"];
            QVERIFY(d["block_loss_end"].get<double>() <= d["block_loss_start"].get<double>());
            if (!d.contains("affine_dominance_margin")) continue;
            ++withAffine;
            QVERIFY(d["affine_dominance_margin"].get<double>() > 0);
            QCOMPARE(d["affine_heads"].get<int>(), int(m->spec().nKvHeads));
            QCOMPARE(d["affine_band"].get<int>(), int(m->spec().headDim - 1));
        }
        QCOMPARE(withAffine, 7 * int(m->spec().nLayers));
        const auto p = lcwtest::runCli({"perplexity", QString::fromStdString(demoModel()), "--text",
                                        QString::fromStdString(text), "--ctx", "64", "--recipe",
                                        QString::fromStdString(recipe), "--calib",
                                        QString::fromStdString(text), "--samples", "2", "--seq-len",
                                        "32", "--json", "--quiet"});
        QVERIFY2(p.code == 0, p.err.constData());
        const double ppl = json::parse(p.out.toStdString())["ppl"].get<double>();
        QVERIFY2(std::isfinite(ppl) && ppl > 1 && ppl < 100, qPrintable(QString::number(ppl)));
    }

    void cancelAndErrors() {
        auto m = Model::load(demoModel());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {2, 16});
        const auto in = captureBlockHidden(*m, cal, 0);
        OmniQuantOptions o;
        o.epochs = 2;
        o.affine.on = true;
        FunctionProgress stop([](double, std::string_view) { return false; });
        QCOMPARE(omniquantBlock(*m, 0, in, {}, allLinears(0, 4), o, stop).status,
                 Status::Cancelled);
        // The progress names the method.
        std::string msg;
        FunctionProgress look([&](double, std::string_view s) {
            if (msg.empty()) msg = std::string(s);
            return true;
        });
        omniquantBlock(*m, 0, in, {}, allLinears(0, 4), o, look);
        QVERIFY2(msg.find("affinequant epoch 1/2") != std::string::npos, msg.c_str());
        NullProgress np;
        for (auto set : std::vector<std::function<void(OmniQuantOptions&)>>{
                 [](OmniQuantOptions& x) { x.affine.alpha = 0; },
                 [](OmniQuantOptions& x) { x.affine.rho = 1; },
                 [](OmniQuantOptions& x) { x.affine.lr = -1; },
                 [](OmniQuantOptions& x) { x.affine.dMin = 0; }}) {
            OmniQuantOptions b = o;
            set(b);
            QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                     omniquantBlock(*m, 0, in, {}, allLinears(0, 4), b, np));
        }
        // Without both v and o learned there is no affine site (the result has no matrices).
        std::map<std::string, WeightSettings> noO = allLinears(0, 4);
        noO.erase("layers.0.attn.o");
        QVERIFY(omniquantBlock(*m, 0, in, {}, noO, o, np).affine.empty());
        // AffineVO: wrong counts and sizes, singular matrices.
        const int64_t hd = spec.headDim;
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError, AffineVO({MatD::Identity(hd, hd)}, spec.nHeads, spec.nKvHeads, hd));
        std::vector<MatD> wrong(size_t(spec.nKvHeads), MatD::Identity(hd + 1, hd + 1));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, AffineVO(wrong, spec.nHeads, spec.nKvHeads, hd));
        std::vector<MatD> sing(size_t(spec.nKvHeads), MatD::Identity(hd, hd));
        sing[0].row(1).setZero();
        QVERIFY_THROWS_EXCEPTION(ArgumentError, AffineVO(sing, spec.nHeads, spec.nKvHeads, hd));
    }
};

QTEST_GUILESS_MAIN(TestAffineQuant)
#include "test_affinequant.moc"
