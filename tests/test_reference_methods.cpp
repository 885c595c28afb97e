// lcw's defaults against independent double-precision ports of the authors' reference code:
//   - SparseGPT unstructured: IST-DASLab/sparsegpt sparsegpt.py SparseGPT.fasterprune (per lazy
//     block thresh = sort(W1² / diag(Hinv1)²)[int(numel · sparsity)], mask = tmp <= thresh);
//     lcw's exact count stays as "count": "exact".
//   - SparseGPT 2:4: fasterprune(prunen=2, prunem=4), groups chosen from the updated weights.
//   - Wanda 50 % and 2:4: locuslab/wanda lib/prune.py prune_wanda's masks.
//   - SmoothQuant: mit-han-lab/smoothquant smoothquant/smooth.py smooth_ln_fcs (scales =
//     act_max^α / weight_max^(1−α), weight_max over all fcs sharing the input clamped at 1e-5,
//     scales clamped at 1e-5).
//   - GPTQ "true_sequential" (IST-DASLab/gptq llama.py --true-sequential): the block's linears in
//     the groups [q, k, v], [o], [gate, up], [down], inputs captured again before each group.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/gptq.h"
#include "core/compress/recipe.h"
#include "core/compress/smoothquant.h"
#include "core/compress/sparsity.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "test_util.h"

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Activations with unequal column scales (some heavy), one input never active.
MatD randomX(int64_t n, int64_t cols, unsigned seed) {
    std::mt19937 g(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    MatD X(n, cols);
    for (int64_t j = 0; j < cols; ++j) {
        const double s = j % 7 == 0 ? 6.0 : 0.5 + double(j % 5) * 0.3;
        for (int64_t t = 0; t < n; ++t) X(t, j) = s * nd(g);
    }
    X.col(cols / 3).setZero();
    return X;
}

std::vector<float> randomW(int64_t rows, int64_t cols, unsigned seed) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(size_t(rows * cols));
    for (auto& v : w) v = nd(g);
    return w;
}

struct RefPrune {
    MatD W;
    std::vector<uint8_t> mask; // 1 = kept
};

/// sparsegpt.py fasterprune(sparsity, prunen, prunem, blocksize, percdamp), no quantizer, in
/// double. prunen = 0: unstructured (the mask of a block from its weights at the block start);
/// prunen > 0: N:M, the prunen smallest of every prunem columns chosen when the loop reaches the
/// group's first column, from the weights updated so far.
RefPrune fasterprune(const std::vector<float>& w, int64_t rows, int64_t cols, const MatD& Hin,
                     double sparsity, int64_t blocksize, double percdamp, int64_t prunen = 0,
                     int64_t prunem = 0) {
    MatD W(rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) W.data()[i] = double(w[size_t(i)]);
    MatD H = Hin;
    for (int64_t j = 0; j < cols; ++j)
        if (H(j, j) == 0) { // dead = diag(H) == 0; H[dead, dead] = 1; W[:, dead] = 0
            H(j, j) = 1;
            W.col(j).setZero();
        }
    const double damp = percdamp * H.diagonal().mean();
    H.diagonal().array() += damp;
    // H = cholesky_inverse(cholesky(H)); Hinv = cholesky(H, upper=True)
    const MatD Hi = H.llt().solve(MatD::Identity(cols, cols));
    const MatD Hinv = Hi.llt().matrixU();
    std::vector<uint8_t> mask(size_t(rows * cols), 1);
    for (int64_t i1 = 0; i1 < cols; i1 += blocksize) {
        const int64_t i2 = std::min(i1 + blocksize, cols), count = i2 - i1;
        MatD W1 = W.middleCols(i1, count);
        MatD Q1 = MatD::Zero(rows, count), Err1 = MatD::Zero(rows, count);
        const MatD Hinv1 = Hinv.block(i1, i1, count, count);
        MatD tmp(rows, count);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < count; ++c)
                tmp(r, c) = W1(r, c) * W1(r, c) / (Hinv1(c, c) * Hinv1(c, c));
        // mask1: 1 = pruned
        MatD mask1 = MatD::Zero(rows, count);
        if (prunen == 0) {
            std::vector<double> flat(tmp.data(), tmp.data() + tmp.size());
            std::sort(flat.begin(), flat.end());
            const double thresh = flat[size_t(int64_t(double(tmp.size()) * sparsity))];
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t c = 0; c < count; ++c) mask1(r, c) = tmp(r, c) <= thresh ? 1 : 0;
        }
        for (int64_t i = 0; i < count; ++i) {
            if (prunen != 0 && i % prunem == 0) {
                // topk(W1[:, i:i+m]² / diag(Hinv1)[i:i+m]², prunen, largest=False)
                for (int64_t r = 0; r < rows; ++r) {
                    std::vector<std::pair<double, int64_t>> g;
                    for (int64_t c = i; c < std::min(i + prunem, count); ++c)
                        g.push_back({W1(r, c) * W1(r, c) / (Hinv1(c, c) * Hinv1(c, c)), c});
                    std::sort(g.begin(), g.end());
                    for (int64_t k = 0; k < prunen && k < int64_t(g.size()); ++k)
                        mask1(r, g[size_t(k)].second) = 1;
                }
            }
            const Eigen::VectorXd wcol = W1.col(i);
            const double d = Hinv1(i, i);
            Eigen::VectorXd q = wcol;
            for (int64_t r = 0; r < rows; ++r)
                if (mask1(r, i) != 0) q(r) = 0;
            Q1.col(i) = q;
            const Eigen::VectorXd err1 = (wcol - q) / d;
            W1.rightCols(count - i) -= err1 * Hinv1.row(i).segment(i, count - i);
            Err1.col(i) = err1;
        }
        W.middleCols(i1, count) = Q1;
        if (i2 < cols) W.rightCols(cols - i2) -= Err1 * Hinv.block(i1, i2, count, cols - i2);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < count; ++c)
                mask[size_t(r * cols + i1 + c)] = mask1(r, c) != 0 ? 0 : 1;
    }
    return {W, mask};
}

/// locuslab/wanda lib/prune.py prune_wanda's mask (1 = kept) for metric |W|·sqrt(scaler_row),
/// scaler_row_j = ||X_j||² / nsamples: unstructured (use_variant off) prunes the
/// int(cols·sparsity) smallest of every row (stable sort); prune_n:prune_m the prune_n smallest of
/// every prune_m consecutive columns (topk largest=False).
std::vector<uint8_t> wandaMask(const std::vector<float>& w, int64_t rows, int64_t cols,
                               const MatD& X, double sparsity, int64_t prunen, int64_t prunem) {
    std::vector<double> scaler(static_cast<size_t>(cols), 0.0);
    for (int64_t j = 0; j < cols; ++j)
        scaler[size_t(j)] = X.col(j).squaredNorm() / double(X.rows());
    auto metric = [&](int64_t r, int64_t j) {
        return std::fabs(double(w[size_t(r * cols + j)])) * std::sqrt(scaler[size_t(j)]);
    };
    std::vector<uint8_t> mask(size_t(rows * cols), 1);
    for (int64_t r = 0; r < rows; ++r) {
        if (prunen != 0) {
            for (int64_t i = 0; i < cols; i += prunem) {
                std::vector<std::pair<double, int64_t>> g;
                for (int64_t c = i; c < std::min(i + prunem, cols); ++c)
                    g.push_back({metric(r, c), c});
                std::sort(g.begin(), g.end());
                for (int64_t k = 0; k < prunen; ++k)
                    mask[size_t(r * cols + g[size_t(k)].second)] = 0;
            }
            continue;
        }
        std::vector<int64_t> idx(static_cast<size_t>(cols));
        for (int64_t j = 0; j < cols; ++j) idx[size_t(j)] = j;
        std::stable_sort(idx.begin(), idx.end(),
                         [&](int64_t a, int64_t b) { return metric(r, a) < metric(r, b); });
        for (int64_t k = 0; k < int64_t(double(cols) * sparsity); ++k)
            mask[size_t(r * cols + idx[size_t(k)])] = 0;
    }
    return mask;
}

/// Largest |a − b| / max(1, |b|) over the elements (lcw's floats against the port's doubles).
double maxRelDiff(const std::vector<float>& a, const MatD& b) {
    double m = 0;
    for (int64_t i = 0; i < b.size(); ++i)
        m = std::max(m, std::fabs(double(a[size_t(i)]) - b.data()[i]) /
                            std::max(1.0, std::fabs(b.data()[i])));
    return m;
}

int64_t zeros(const std::vector<uint8_t>& m) {
    return int64_t(std::count(m.begin(), m.end(), uint8_t(0)));
}

/// smooth.py smooth_ln_fcs's scales, in double.
std::vector<double> smoothLnFcs(const std::vector<float>& act,
                                const std::vector<std::vector<float>>& fcs,
                                const std::vector<int64_t>& rows, int64_t cols, double alpha) {
    std::vector<double> wmax(static_cast<size_t>(cols), 0.0);
    for (size_t k = 0; k < fcs.size(); ++k)
        for (int64_t r = 0; r < rows[k]; ++r)
            for (int64_t j = 0; j < cols; ++j)
                wmax[size_t(j)] =
                    std::max(wmax[size_t(j)], std::fabs(double(fcs[k][size_t(r * cols + j)])));
    std::vector<double> s(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) {
        const double ws = std::max(wmax[size_t(j)], 1e-5);
        s[size_t(j)] =
            std::max(std::pow(double(act[size_t(j)]), alpha) / std::pow(ws, 1 - alpha), 1e-5);
    }
    return s;
}

Recipe recipeOf(const json& rules) {
    return Recipe::fromJson({{"lcw_recipe", 1}, {"name", "t"}, {"rules", rules}});
}

CompressResult run(const Model& m, const Recipe& r, const CalibrationSet& cal) {
    NullProgress np;
    CompressOptions o;
    o.calibration = &cal;
    return lcw::compress::compress(m, r, np, o);
}

std::vector<float> floats(const Model& m, const std::string& name) {
    const TensorView& t = m.get(name);
    std::vector<float> x(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        dequantizeRow(t.dtype, t.row(r), x.data() + r * t.cols(), t.cols());
    return x;
}

} // namespace

class TestReferenceMethods : public QObject {
    Q_OBJECT
private slots:
    // SparseGPT unstructured (the default count rule): the same mask as fasterprune and the same
    // updated weights, at 50 % and 30 %, blocks of 128 with a partial last block.
    void sparseGptMatchesFasterprune() {
        const int64_t rows = 24, cols = 300;
        const MatD X = randomX(400, cols, 3);
        const MatD H = X.transpose() * X;
        const auto w = randomW(rows, cols, 5);
        for (double ratio : {0.5, 0.3}) {
            SparsitySettings s;
            s.method = SparsityMethod::SparseGpt;
            s.ratio = ratio;
            QCOMPARE(s.count, SparsityCount::Reference);
            QCOMPARE(s.blockSize, int64_t(128));
            const PruneResult got = pruneSparseGpt(w.data(), rows, cols, H.data(), s, "t");
            const RefPrune ref = fasterprune(w, rows, cols, H, ratio, 128, 0.01);
            QVERIFY(got.mask == ref.mask);
            const double maxRel = maxRelDiff(got.w, ref.W);
            QVERIFY2(maxRel < 1e-5, std::to_string(maxRel).c_str());
            // int(n·s) + 1 per block (the dead input ties only within the pruned set here)
            int64_t want = 0;
            for (int64_t i1 = 0; i1 < cols; i1 += 128)
                want += int64_t(double(rows * std::min<int64_t>(128, cols - i1)) * ratio) + 1;
            QCOMPARE(zeros(got.mask), want);
            QCOMPARE(prunedCount(rows, cols, s), want);
        }
    }

    // SparseGPT 2:4: the same mask and weights as fasterprune(prunen=2, prunem=4), whose groups
    // are chosen from the weights updated so far within the block.
    void sparseGpt24MatchesFasterprune() {
        const int64_t rows = 24, cols = 296;
        const MatD X = randomX(400, cols, 13);
        const MatD H = X.transpose() * X;
        const auto w = randomW(rows, cols, 15);
        SparsitySettings s;
        s.method = SparsityMethod::SparseGpt;
        s.pattern = SparsityPattern::NM;
        s.n = 2, s.m = 4;
        const PruneResult got = pruneSparseGpt(w.data(), rows, cols, H.data(), s, "t");
        const RefPrune ref = fasterprune(w, rows, cols, H, 0.0, 128, 0.01, 2, 4);
        QVERIFY(got.mask == ref.mask);
        QVERIFY(checkNM(got.mask.data(), rows, cols, 2, 4));
        const double maxRel = maxRelDiff(got.w, ref.W);
        QVERIFY2(maxRel < 1e-5, std::to_string(maxRel).c_str());
    }

    // Wanda 50 % (per output row, as prune_wanda without the variant) and 2:4: prune_wanda's
    // masks, with the scaler_row statistic computed from X in the test.
    void wandaMatchesPruneWanda() {
        const int64_t rows = 20, cols = 96;
        const MatD X = randomX(300, cols, 21);
        const auto w = randomW(rows, cols, 23);
        std::vector<double> colNorm(static_cast<size_t>(cols));
        for (int64_t j = 0; j < cols; ++j) colNorm[size_t(j)] = X.col(j).norm();
        SparsitySettings s;
        s.method = SparsityMethod::Wanda;
        s.ratio = 0.5;
        QVERIFY(pruneWanda(w.data(), rows, cols, colNorm.data(), s).mask ==
                wandaMask(w, rows, cols, X, 0.5, 0, 0));
        s.pattern = SparsityPattern::NM;
        s.n = 2, s.m = 4;
        QVERIFY(pruneWanda(w.data(), rows, cols, colNorm.data(), s).mask ==
                wandaMask(w, rows, cols, X, 0.0, 2, 4));
    }

    // "count": "exact" is lcw's earlier rule: exactly round(ratio·rows·cols), another mask.
    void sparseGptExactCountOption() {
        const int64_t rows = 24, cols = 300;
        const MatD X = randomX(400, cols, 3);
        const MatD H = X.transpose() * X;
        const auto w = randomW(rows, cols, 5);
        SparsitySettings s;
        s.method = SparsityMethod::SparseGpt;
        s.ratio = 0.5;
        s.count = SparsityCount::Exact;
        const PruneResult ex = pruneSparseGpt(w.data(), rows, cols, H.data(), s, "t");
        QCOMPARE(zeros(ex.mask), int64_t(std::llround(0.5 * double(rows * cols))));
        QCOMPARE(prunedCount(rows, cols, s), zeros(ex.mask));
        QVERIFY(ex.mask != fasterprune(w, rows, cols, H, 0.5, 128, 0.01).mask);
        // the recipe key
        const Recipe r = recipeOf(json::array(
            {{{"targets", {"*"}},
              {"sparsity", {{"method", "sparsegpt"}, {"ratio", 0.5}, {"count", "exact"}}}}}));
        QVERIFY(r.rules[0].sparsity.has_value());
        QVERIFY_THROWS_EXCEPTION(
            RecipeError,
            recipeOf(json::array({{{"targets", {"*"}},
                                   {"sparsity", {{"method", "sparsegpt"}, {"count", "round"}}}}})));
    }

    // SmoothQuant α = 0.5 (and 0.85): smooth_ln_fcs's scales to 1e-6, over three linears that
    // share the input, with an input channel that never fired and a weight column of zeros.
    void smoothQuantMatchesSmoothLnFcs() {
        const int64_t cols = 40;
        const std::vector<int64_t> rows = {16, 8, 8};
        std::vector<std::vector<float>> fcs;
        for (size_t k = 0; k < rows.size(); ++k)
            fcs.push_back(randomW(rows[k], cols, 20 + unsigned(k)));
        for (auto& f : fcs)
            for (int64_t r = 0; r < int64_t(f.size()) / cols; ++r) f[size_t(r * cols + 7)] = 0.0f;
        std::vector<float> act(static_cast<size_t>(cols));
        std::mt19937 g(9);
        std::lognormal_distribution<float> ln(0.0f, 1.5f);
        for (auto& a : act) a = ln(g);
        act[3] = 0.0f;
        std::vector<const float*> ws;
        for (const auto& f : fcs) ws.push_back(f.data());
        for (double alpha : {0.5, 0.85, 0.0}) {
            const auto got = smoothQuantScales(act, ws, rows, cols, alpha);
            const auto ref = smoothLnFcs(act, fcs, rows, cols, alpha);
            for (int64_t j = 0; j < cols; ++j)
                QVERIFY2(std::fabs(got[size_t(j)] - ref[size_t(j)]) <= 1e-6 * ref[size_t(j)],
                         (std::to_string(alpha) + " channel " + std::to_string(j)).c_str());
        }
        // lcw's earlier ratio rule: (x / w)^α, s = 1 where a range is 0 and at α = 0.
        const auto ratio = smoothQuantScales(act, ws, rows, cols, 0.5, SmoothQuantRule::Ratio);
        const auto ref = smoothLnFcs(act, fcs, rows, cols, 0.5);
        QCOMPARE(ratio[3], 1.0f);
        QCOMPARE(ratio[7], 1.0f);
        QVERIFY(std::fabs(ref[3] - 1e-5) < 1e-12);
        for (int64_t j = 0; j < cols; ++j)
            if (j != 3 && j != 7)
                QVERIFY(std::fabs(ratio[size_t(j)] - ref[size_t(j)]) <= 1e-6 * ref[size_t(j)]);
        for (float v : smoothQuantScales(act, ws, rows, cols, 0.0, SmoothQuantRule::Ratio))
            QCOMPARE(v, 1.0f);
    }

    // GPTQ "true_sequential": in block 0, q/k/v are fitted on the inputs of the unquantised
    // block (as without it); o is fitted on its input captured again with q/k/v quantised —
    // exactly what gptqQuantize gives on the Gram captured through an overlay holding only
    // those three — while without the option o is fitted on the first capture.
    void gptqTrueSequentialRecaptures() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {8, 128});
        const json w4 = {{"bits", 4}, {"group_size", 32}, {"method", "gptq"}};
        json w4s = w4;
        w4s["true_sequential"] = true;
        const json targets = {"layers.0.attn.*", "layers.0.mlp.*"};
        const auto seq =
            run(*m, recipeOf(json::array({{{"targets", targets}, {"weight", w4s}}})), cal);
        const auto plain =
            run(*m, recipeOf(json::array({{{"targets", targets}, {"weight", w4}}})), cal);
        const auto qkv =
            run(*m,
                recipeOf(json::array(
                    {{{"targets", {"layers.0.attn.q", "layers.0.attn.k", "layers.0.attn.v"}},
                      {"weight", w4}}})),
                cal);
        auto codes = [](const CompressResult& r, const std::string& n) {
            return r.model->compressed(n)->packed.codes;
        };
        for (const char* n : {"layers.0.attn.q", "layers.0.attn.k", "layers.0.attn.v"}) {
            QVERIFY(codes(seq, n) == codes(plain, n));
            QVERIFY(codes(seq, n) == codes(qkv, n));
        }
        NullProgress np;
        const auto in0 = captureBlockInputs(*m, cal, 0, {}, np);
        const auto in1 = captureBlockInputs(*qkv.model, cal, 0, {}, np);
        const std::string o = "layers.0.attn.o";
        QVERIFY(in0.at(o).gram != in1.at(o).gram);
        PlanOptions po;
        po.hasCalibration = true;
        const Plan plan =
            planRecipe(recipeOf(json::array({{{"targets", targets}, {"weight", w4}}})), *m, po);
        const LayerPlan* lp = nullptr;
        for (const auto& l : plan.layers)
            if (l.name == o) lp = &l;
        QVERIFY(lp);
        const auto W = floats(*m, o);
        const GptqResult g0 =
            gptqQuantize(W.data(), lp->rows, lp->cols, in0.at(o).gram.data(), lp->weight, {}, o);
        const GptqResult g1 =
            gptqQuantize(W.data(), lp->rows, lp->cols, in1.at(o).gram.data(), lp->weight, {}, o);
        QVERIFY(g0.packed.codes != g1.packed.codes);
        QVERIFY(codes(plain, o) == g0.packed.codes);
        QVERIFY(codes(seq, o) == g1.packed.codes);
        QVERIFY(seq.model->compressed(o)->packed.scales == g1.packed.scales);
        // The later groups differ too, and the reports say which inputs were recaptured.
        QVERIFY(codes(seq, "layers.0.mlp.down") != codes(plain, "layers.0.mlp.down"));
        for (const auto& l : seq.layers) {
            QCOMPARE(l.details.value("true_sequential", false), true);
            const bool first = l.name.find(".attn.o") == std::string::npos &&
                               l.name.find(".mlp.") == std::string::npos;
            QCOMPARE(l.details.contains("inputs"), !first);
        }
        for (const auto& l : plain.layers) QVERIFY(!l.details.contains("true_sequential"));
        QVERIFY_THROWS_EXCEPTION(
            RecipeError,
            recipeOf(json::array(
                {{{"targets", {"*"}}, {"weight", {{"method", "gptq"}, {"true_sequential", 1}}}}})));
    }
};

QTEST_GUILESS_MAIN(TestReferenceMethods)
#include "test_reference_methods.moc"
