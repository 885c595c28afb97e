// Pruning (magnitude, Wanda, SparseGPT; unstructured, per-row, N:M), low-rank factorisation (SVD,
// ASVD, SVD-LLM) and structured pruning, checked against double-precision references on
// synthetic matrices and synthetic calibration activations.
#include "core/common/error.h"
#include "core/compress/lowrank.h"
#include "core/compress/sparsity.h"
#include "core/compress/structured.h"
#include "test_util.h"

#include <Eigen/Dense>
#include <QtTest/QtTest>

#include <algorithm>
#include <cmath>
#include <random>

using namespace lcw;
using namespace lcw::compress;

namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::vector<float> randomW(int64_t rows, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.1f);
    std::vector<float> w(size_t(rows * cols));
    for (auto& v : w) v = nd(rng);
    return w;
}

/// Calibration activations X [tokens, cols] with strongly varying column scales (a few
/// "outlier" inputs, as in LLMs), correlated columns and one input that is never active.
MatD randomX(int64_t tokens, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    MatD Z(tokens, cols), X(tokens, cols);
    for (int64_t i = 0; i < Z.size(); ++i) Z.data()[i] = nd(rng);
    X = Z;
    for (int64_t j = 1; j < cols; ++j) X.col(j) += 0.5 * Z.col(j - 1);
    for (int64_t j = 0; j < cols; ++j) {
        const double s = j % 7 == 0 ? 8.0 : 0.2 + double((j * 13) % 10) / 10.0;
        X.col(j) *= s;
    }
    X.col(cols - 1).setZero();
    return X;
}

MatD gram(const MatD& X) {
    return X.transpose() * X;
}

std::vector<double> colNorms(const MatD& X) {
    std::vector<double> n(size_t(X.cols()));
    for (int64_t j = 0; j < X.cols(); ++j) n[size_t(j)] = X.col(j).norm();
    return n;
}

/// ||(W − Ŵ) Xᵀ||_F² directly from the activations (independent of outputError's use of H).
double outErrX(const std::vector<float>& w, const std::vector<float>& wq, int64_t rows,
               int64_t cols, const MatD& X) {
    MatD D(rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) D.data()[i] = double(w[size_t(i)]) - wq[size_t(i)];
    return (X * D.transpose()).squaredNorm();
}

int64_t zeros(const std::vector<uint8_t>& mask) {
    return int64_t(std::count(mask.begin(), mask.end(), uint8_t(0)));
}

} // namespace

class TestSparsity : public QObject {
    Q_OBJECT
private slots:
    void nmMasksExact() {
        const int64_t rows = 24;
        const MatD X = randomX(256, 40, 3);
        const MatD H = gram(X);
        const auto norms = colNorms(X);
        for (int64_t cols : {int64_t(40), int64_t(38)}) {
            const MatD Hc = H.topLeftCorner(cols, cols);
            const auto w = randomW(rows, cols, 7);
            for (auto [n, m] :
                 {std::pair{2, 4}, std::pair{4, 8}, std::pair{1, 3}, std::pair{3, 5}}) {
                for (auto method : {SparsityMethod::Magnitude, SparsityMethod::Wanda,
                                    SparsityMethod::SparseGpt}) {
                    SparsitySettings s;
                    s.method = method;
                    s.pattern = SparsityPattern::NM;
                    s.n = n;
                    s.m = m;
                    s.blockSize = 16;
                    const PruneResult r =
                        prune(w.data(), rows, cols, Hc.data(), norms.data(), s, "t");
                    QVERIFY(checkNM(r.mask.data(), rows, cols, n, m));
                    // full groups keep exactly N, the partial group ceil(k·N/M)
                    int64_t expectZeros = 0;
                    for (int64_t g = 0; g < cols; g += m) {
                        const int64_t k = std::min<int64_t>(m, cols - g);
                        expectZeros += k - (k * n + m - 1) / m;
                    }
                    QCOMPARE(zeros(r.mask), rows * expectZeros);
                    QCOMPARE(zeros(r.mask), prunedCount(rows, cols, s));
                    for (size_t i = 0; i < r.w.size(); ++i)
                        if (!r.mask[i]) QCOMPARE(r.w[i], 0.0f);
                }
            }
        }
        // a mask with 3 kept in a group of 4 fails the 2:4 check
        std::vector<uint8_t> bad = {1, 1, 1, 0, 1, 1, 0, 0};
        QVERIFY(!checkNM(bad.data(), 1, 8, 2, 4));
        QVERIFY(checkNM(bad.data(), 1, 8, 3, 4));
    }

    void ratiosExact() {
        const int64_t rows = 18, cols = 33;
        const MatD X = randomX(200, cols, 5);
        const MatD H = gram(X);
        const auto norms = colNorms(X);
        const auto w = randomW(rows, cols, 11);
        for (double ratio : {0.5, 0.3, 0.77}) {
            for (auto pat : {SparsityPattern::Unstructured, SparsityPattern::PerRow}) {
                for (auto method : {SparsityMethod::Magnitude, SparsityMethod::Wanda,
                                    SparsityMethod::SparseGpt}) {
                    SparsitySettings s;
                    s.method = method;
                    s.pattern = pat;
                    s.ratio = ratio;
                    s.blockSize = 8;
                    const PruneResult r =
                        prune(w.data(), rows, cols, H.data(), norms.data(), s, "t");
                    // wanda compares per row, so its unstructured count is per-row's
                    const bool perRow =
                        pat == SparsityPattern::PerRow || method == SparsityMethod::Wanda;
                    const int64_t expect = perRow ? rows * std::llround(ratio * cols)
                                                  : std::llround(ratio * rows * cols);
                    QCOMPARE(zeros(r.mask), expect);
                    if (perRow)
                        for (int64_t i = 0; i < rows; ++i) {
                            const std::vector<uint8_t> row(r.mask.begin() + i * cols,
                                                           r.mask.begin() + (i + 1) * cols);
                            QCOMPARE(zeros(row), int64_t(std::llround(ratio * cols)));
                        }
                }
            }
        }
    }

    void magnitudeAndWandaKeepTheLargestScores() {
        const int64_t rows = 16, cols = 20;
        const auto w = randomW(rows, cols, 13);
        SparsitySettings s;
        s.ratio = 0.4;
        const PruneResult r = pruneMagnitude(w.data(), rows, cols, s);
        float maxPruned = 0, minKept = 1e30f;
        for (size_t i = 0; i < w.size(); ++i) {
            if (r.mask[i])
                minKept = std::min(minKept, std::fabs(w[i]));
            else
                maxPruned = std::max(maxPruned, std::fabs(w[i]));
            QCOMPARE(r.w[i], r.mask[i] ? w[i] : 0.0f);
        }
        QVERIFY(maxPruned <= minKept);
        const MatD X = randomX(64, cols, 17);
        const auto norms = colNorms(X);
        s.method = SparsityMethod::Wanda;
        const PruneResult rw = pruneWanda(w.data(), rows, cols, norms.data(), s);
        for (int64_t i = 0; i < rows; ++i) {
            double mp = 0, mk = 1e300;
            for (int64_t j = 0; j < cols; ++j) {
                const double sc = std::fabs(double(w[size_t(i * cols + j)])) * norms[size_t(j)];
                if (rw.mask[size_t(i * cols + j)])
                    mk = std::min(mk, sc);
                else
                    mp = std::max(mp, sc);
            }
            QVERIFY(mp <= mk * (1 + 1e-6));
        }
    }

    void sparseGptAndWandaBeatMagnitude() {
        const int64_t rows = 48, cols = 64;
        const MatD X = randomX(512, cols, 21);
        const MatD H = gram(X);
        const auto norms = colNorms(X);
        const auto w = randomW(rows, cols, 23);
        for (auto pat : {SparsityPattern::Unstructured, SparsityPattern::NM}) {
            SparsitySettings s;
            s.pattern = pat;
            s.ratio = 0.5;
            s.blockSize = 32;
            const PruneResult mag = pruneMagnitude(w.data(), rows, cols, s);
            const PruneResult wan = pruneWanda(w.data(), rows, cols, norms.data(), s);
            const PruneResult sg = pruneSparseGpt(w.data(), rows, cols, H.data(), s, "t");
            const double eMag = outErrX(w, mag.w, rows, cols, X);
            const double eWan = outErrX(w, wan.w, rows, cols, X);
            const double eSg = outErrX(w, sg.w, rows, cols, X);
            // outputError(H) agrees with the direct computation from X
            QVERIFY(std::fabs(outputError(w.data(), sg.w.data(), rows, cols, H.data()) - eSg) <=
                    1e-9 * eSg);
            qInfo("%s: output error magnitude %.4g, wanda %.4g, sparsegpt %.4g",
                  pat == SparsityPattern::NM ? "2:4" : "50%", eMag, eWan, eSg);
            QVERIFY(eWan < eMag);
            QVERIFY(eSg < eWan);
            // SparseGPT's reconstruction lies between the optimal least-squares weights for its
            // own mask (lower bound) and that mask without any update (upper bound).
            double optimal = 0, noUpdate = 0;
            for (int64_t i = 0; i < rows; ++i) {
                std::vector<int64_t> keep;
                for (int64_t j = 0; j < cols; ++j)
                    if (sg.mask[size_t(i * cols + j)]) keep.push_back(j);
                const int64_t k = int64_t(keep.size());
                Eigen::VectorXd wr(cols);
                for (int64_t j = 0; j < cols; ++j) wr(j) = w[size_t(i * cols + j)];
                Eigen::MatrixXd Xk(X.rows(), k);
                for (int64_t a = 0; a < k; ++a) Xk.col(a) = X.col(keep[size_t(a)]);
                const Eigen::VectorXd y = X * wr;
                const Eigen::VectorXd sol = Xk.colPivHouseholderQr().solve(y);
                optimal += (y - Xk * sol).squaredNorm();
                Eigen::VectorXd masked = wr;
                for (int64_t j = 0; j < cols; ++j)
                    if (!sg.mask[size_t(i * cols + j)]) masked(j) = 0;
                noUpdate += (y - X * masked).squaredNorm();
            }
            QVERIFY(eSg >= optimal * (1 - 1e-6));
            QVERIFY(eSg <= noUpdate);
        }
        // ratio 0 leaves the weights as they are
        SparsitySettings none;
        none.ratio = 0;
        const PruneResult id =
            pruneSparseGpt(w.data(), rows, cols - 1, gram(X.leftCols(cols - 1)).data(), none, "t");
        QCOMPARE(zeros(id.mask), int64_t(0));
    }

    void maskPackingAndMetadata() {
        std::vector<uint8_t> mask(37);
        for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i * 5 + 1) % 3 != 0;
        const auto bits = packMask(mask);
        QCOMPARE(int64_t(bits.size()), int64_t(5));
        QCOMPARE(unpackMask(bits, 37), mask);
        QVERIFY_THROWS_EXCEPTION(FormatError, unpackMask(bits, 41));
        SparsitySettings s;
        s.pattern = SparsityPattern::NM;
        s.n = 2;
        s.m = 4;
        QCOMPARE(sparsityMetadataBits(64, 64, 2048, s), uint64_t(2048 * 2));
        s.n = 4;
        s.m = 8;
        QCOMPARE(sparsityMetadataBits(64, 64, 2048, s), uint64_t(2048 * 3));
        s.pattern = SparsityPattern::Unstructured;
        // 50% of 64x64: bitmask 4096 bits < CSR 32·2048 + 32·65
        QCOMPARE(sparsityMetadataBits(64, 64, 2048, s), uint64_t(4096));
        // 99% sparse: CSR (32·41 + 32·65) < bitmask
        QCOMPARE(sparsityMetadataBits(64, 64, 41, s), uint64_t(32 * 41 + 32 * 65));
    }

    void badSettingsAreErrors() {
        const auto w = randomW(4, 8, 1);
        SparsitySettings s;
        s.pattern = SparsityPattern::NM;
        s.n = 4;
        s.m = 4;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, pruneMagnitude(w.data(), 4, 8, s));
        s.method = SparsityMethod::SparseGpt;
        s.n = 2;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, prune(w.data(), 4, 8, nullptr, nullptr, s, "x"));
        LowRankSettings l;
        l.method = LowRankMethod::SvdLlm;
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 factorize(w.data(), 4, 8, nullptr, nullptr, l, "x"));
    }

    void svdEckartYoung() {
        const int64_t out = 40, in = 27;
        const auto w = randomW(out, in, 31);
        Eigen::MatrixXd W(out, in);
        for (int64_t i = 0; i < out; ++i)
            for (int64_t j = 0; j < in; ++j) W(i, j) = w[size_t(i * in + j)];
        Eigen::JacobiSVD<Eigen::MatrixXd> ref(W); // independent SVD
        const Eigen::VectorXd sv = ref.singularValues();
        for (int64_t r : {int64_t(1), int64_t(7), int64_t(20), int64_t(27)}) {
            LowRankSettings s;
            s.target = LowRankTarget::Rank;
            s.rank = r;
            const LowRankResult f = factorize(w.data(), out, in, nullptr, nullptr, s, "t");
            QCOMPARE(f.rank, r);
            QCOMPARE(int64_t(f.a.size()), r * in);
            QCOMPARE(int64_t(f.b.size()), out * r);
            // B·A in double from the stored float factors
            Eigen::MatrixXd A(r, in), B(out, r);
            for (int64_t i = 0; i < r; ++i)
                for (int64_t j = 0; j < in; ++j) A(i, j) = f.a[size_t(i * in + j)];
            for (int64_t i = 0; i < out; ++i)
                for (int64_t j = 0; j < r; ++j) B(i, j) = f.b[size_t(i * r + j)];
            const double err = (W - B * A).squaredNorm();
            const double discarded = sv.tail(in - r).squaredNorm();
            const double total = W.squaredNorm();
            if (r < in) {
                QVERIFY2(std::fabs(err - discarded) <= 1e-6 * discarded,
                         qPrintable(QString("rank %1: %2 vs %3").arg(r).arg(err).arg(discarded)));
            } else {
                QVERIFY(err <= 1e-10 * total); // float factors: ~1e-14 relative
            }
            QVERIFY(std::fabs(f.discardedEnergy - discarded / total) <= 1e-9);
            for (int64_t i = 0; i < in; ++i)
                QVERIFY(std::fabs(f.sigma[size_t(i)] - sv(i)) <= 1e-9 * sv(0));
        }
    }

    void rankTargets() {
        const int64_t out = 30, in = 20;
        const auto w = randomW(out, in, 37);
        LowRankSettings s;
        s.target = LowRankTarget::ParamRatio;
        for (double p : {0.8, 0.5, 0.2}) {
            s.paramRatio = p;
            const auto f = factorize(w.data(), out, in, nullptr, nullptr, s, "t");
            QVERIFY(double(f.rank * (out + in)) <= p * out * in);
            QVERIFY(double((f.rank + 1) * (out + in)) > p * out * in);
        }
        s.target = LowRankTarget::Energy;
        for (double e : {0.5, 0.9, 0.99}) {
            s.energy = e;
            const auto f = factorize(w.data(), out, in, nullptr, nullptr, s, "t");
            double tot = 0, keep = 0, keepLess = 0;
            for (size_t i = 0; i < f.sigma.size(); ++i) {
                tot += f.sigma[i] * f.sigma[i];
                if (int64_t(i) < f.rank) keep += f.sigma[i] * f.sigma[i];
                if (int64_t(i) < f.rank - 1) keepLess += f.sigma[i] * f.sigma[i];
            }
            QVERIFY(keep >= e * tot * (1 - 1e-12));
            QVERIFY(keepLess < e * tot);
        }
    }

    void svdLlmAndAsvdBeatSvdOnCalibrationOutput() {
        const int64_t out = 36, in = 48;
        const auto w = randomW(out, in, 41);
        MatD X = randomX(400, in, 43);
        X.col(in - 1).setConstant(0.01); // keep H positive definite here
        const MatD H = gram(X);
        std::vector<double> meanAbs(static_cast<size_t>(in));
        for (int64_t j = 0; j < in; ++j) meanAbs[size_t(j)] = X.col(j).cwiseAbs().mean();
        Eigen::LLT<Eigen::MatrixXd> llt(Eigen::MatrixXd(H.transpose()));
        QVERIFY(llt.info() == Eigen::Success);
        Eigen::MatrixXd W(out, in);
        for (int64_t i = 0; i < out; ++i)
            for (int64_t j = 0; j < in; ++j) W(i, j) = w[size_t(i * in + j)];
        const Eigen::VectorXd svW =
            Eigen::JacobiSVD<Eigen::MatrixXd>(W * Eigen::MatrixXd(llt.matrixL())).singularValues();
        for (int64_t r = 1; r < std::min(out, in); r += 3) {
            LowRankSettings s;
            s.target = LowRankTarget::Rank;
            s.rank = r;
            auto run = [&](LowRankMethod m) {
                s.method = m;
                const auto f = factorize(w.data(), out, in, H.data(), meanAbs.data(), s, "t");
                return outErrX(w, f.product(out, in), out, in, X);
            };
            const double eSvd = run(LowRankMethod::Svd);
            const double eLlm = run(LowRankMethod::SvdLlm);
            const double eAsvd = run(LowRankMethod::Asvd);
            QVERIFY2(
                eLlm <= eSvd * (1 + 1e-9),
                qPrintable(QString("rank %1: svd-llm %2 > svd %3").arg(r).arg(eLlm).arg(eSvd)));
            // SVD-LLM's output error is exactly the discarded energy of W·L (truncation-aware)
            const double disc = svW.tail(in > out ? out - r : in - r).squaredNorm();
            QVERIFY2(std::fabs(eLlm - disc) <= 1e-5 * disc,
                     qPrintable(QString("rank %1: %2 vs %3").arg(r).arg(eLlm).arg(disc)));
            if (r == 10)
                qInfo("rank 10 output error: svd %.4g asvd %.4g svd-llm %.4g", eSvd, eAsvd, eLlm);
        }
        // full-rank ASVD and SVD-LLM reconstruct W
        for (auto m : {LowRankMethod::Asvd, LowRankMethod::SvdLlm}) {
            LowRankSettings s;
            s.method = m;
            s.target = LowRankTarget::Rank;
            s.rank = std::min(out, in);
            const auto f = factorize(w.data(), out, in, H.data(), meanAbs.data(), s, "t");
            const auto p = f.product(out, in);
            double e = 0, t = 0;
            for (size_t i = 0; i < p.size(); ++i) {
                e += (double(p[i]) - w[i]) * (double(p[i]) - w[i]);
                t += double(w[i]) * w[i];
            }
            QVERIFY(e <= 1e-8 * t);
        }
    }

    void structuredImportanceAndGather() {
        // MLP: gate/up [F, D], down [D, F]; units = F channels
        const int64_t D = 12, F = 20;
        const auto gate = randomW(F, D, 51), up = randomW(F, D, 52), down = randomW(D, F, 53);
        const MatD Hx = randomX(300, F, 54); // activations entering down
        const MatD G = gram(Hx);
        const auto norms = colNorms(Hx);
        const UnitMatrix dm{down.data(), D, F, false, 1};
        const std::vector<UnitMatrix> ins = {{gate.data(), F, D, true, 1},
                                             {up.data(), F, D, true, 1}};
        const auto mag = unitImportance(F, dm, ins, nullptr, nullptr, StructuredScore::Magnitude);
        const auto wan = unitImportance(F, dm, ins, norms.data(), nullptr, StructuredScore::Wanda);
        const auto loss = unitImportance(F, dm, ins, nullptr, G.data(), StructuredScore::Loss);
        for (int64_t c = 0; c < F; ++c) {
            double m = 0, wa = 0;
            for (int64_t j = 0; j < D; ++j) {
                m += double(gate[size_t(c * D + j)]) * gate[size_t(c * D + j)] +
                     double(up[size_t(c * D + j)]) * up[size_t(c * D + j)] +
                     double(down[size_t(j * F + c)]) * down[size_t(j * F + c)];
                wa += std::fabs(double(down[size_t(j * F + c)])) * norms[size_t(c)];
            }
            QVERIFY(std::fabs(mag[size_t(c)] - m) <= 1e-12 * m);
            QVERIFY(std::fabs(wan[size_t(c)] - wa) <= 1e-12 * wa);
            // loss: output change when channel c alone is removed, from the activations
            std::vector<float> removed = down;
            for (int64_t j = 0; j < D; ++j) removed[size_t(j * F + c)] = 0;
            const double direct = outErrX(down, removed, D, F, Hx);
            QVERIFY(std::fabs(loss[size_t(c)] - direct) <= 1e-9 * direct);
        }
        const auto kept = keptUnits(loss, 0.25);
        QCOMPARE(int64_t(kept.size()), F - 5);
        QVERIFY(std::is_sorted(kept.begin(), kept.end()));
        double minKept = 1e300, maxDropped = 0;
        for (int64_t c = 0; c < F; ++c) {
            const bool k = std::find(kept.begin(), kept.end(), c) != kept.end();
            (k ? minKept : maxDropped) =
                k ? std::min(minKept, loss[size_t(c)]) : std::max(maxDropped, loss[size_t(c)]);
        }
        QVERIFY(maxDropped <= minKept);
        const auto g2 = gatherUnits(ins[0], kept);
        const auto d2 = gatherUnits(dm, kept);
        QCOMPARE(int64_t(g2.size()), (F - 5) * D);
        QCOMPARE(int64_t(d2.size()), D * (F - 5));
        for (int64_t i = 0; i < int64_t(kept.size()); ++i)
            for (int64_t j = 0; j < D; ++j) {
                QCOMPARE(g2[size_t(i * D + j)], gate[size_t(kept[size_t(i)] * D + j)]);
                QCOMPARE(d2[size_t(j * (F - 5) + i)], down[size_t(j * F + kept[size_t(i)])]);
            }
        // head blocks of width 4: o [D, 3·4]
        const auto o = randomW(D, 12, 55);
        const UnitMatrix om{o.data(), D, 12, false, 4};
        const auto hk = keptUnits(
            unitImportance(3, om, {}, nullptr, nullptr, StructuredScore::Magnitude), 0.34);
        QCOMPARE(int64_t(hk.size()), int64_t(2));
        QCOMPARE(int64_t(gatherUnits(om, hk).size()), D * 8);
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError, unitImportance(5, om, {}, nullptr, nullptr, StructuredScore::Magnitude));
    }
};

QTEST_GUILESS_MAIN(TestSparsity)
#include "test_sparsity.moc"
