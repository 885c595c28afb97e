// SqueezeLLM (core/compress/compact_formats.h) against a double-precision implementation of the
// paper's procedure written here without lcw's k-means: per output row a weighted k-means code
// book (sensitivity = the curvature diagonal), the dense-and-sparse split of the largest
// weights, codes = nearest f16 centroid. Properties: the weighted k-means objective never rises,
// 0 % outliers is plain non-uniform quantisation, sizes are counted exactly (compress report,
// estimate, overlay) and the overlay round-trips into the runtime.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/calibration.h"
#include "core/compress/compact_formats.h"
#include "core/compress/compressed_model.h"
#include "core/compress/efficientqat.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core_test_util.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

/// The model with one float tensor replaced by an editable copy (for finite differences).
struct Perturbed final : WeightSource {
    const Model& m;
    TensorView view;
    std::vector<float> values;
    Perturbed(const Model& model, const TensorView& t)
        : m(model), view(t), values(static_cast<size_t>(t.numel())) {
        std::memcpy(values.data(), t.data, values.size() * sizeof(float));
        view.data = reinterpret_cast<const std::byte*>(values.data());
    }
    const ModelSpec& spec() const override { return m.spec(); }
    const TensorView* find(std::string_view n) const override {
        return n == view.name ? &view : m.find(n);
    }
};

/// A float32 tensor of the model.
std::vector<float> f32Values(const Model& m, const std::string& name) {
    const TensorView* t = m.find(name);
    std::vector<float> v(static_cast<size_t>(t->numel()));
    std::memcpy(v.data(), t->data, v.size() * sizeof(float));
    return v;
}

std::vector<float> randomWeights(int64_t n, unsigned seed, double heavy = 0.0) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<float> w(static_cast<size_t>(n));
    for (auto& v : w) v = nd(g) * (u(g) < heavy ? 12.0f : 1.0f);
    return w;
}

/// The paper's per-row step in double: weighted k-means (Lloyd, weighted-quantile start), the
/// centroids to f16, every weight to its nearest stored centroid.
struct RefRow {
    std::vector<uint16_t> book;
    std::vector<uint32_t> code;
};
RefRow refSqueezeRow(const std::vector<double>& x, const std::vector<double>& wt0, int K) {
    const size_t n = x.size();
    std::vector<double> wt = wt0;
    double tot = std::accumulate(wt.begin(), wt.end(), 0.0);
    if (!(tot > 0)) wt.assign(n, 1.0), tot = double(n);
    std::vector<size_t> ord(n);
    std::iota(ord.begin(), ord.end(), size_t(0));
    std::stable_sort(ord.begin(), ord.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
    std::vector<double> c(size_t(K), x[ord.back()]);
    double cum = 0;
    int filled = 0;
    for (size_t t = 0; t < n; ++t) {
        cum += wt[ord[t]];
        while (filled < K && cum >= (filled + 0.5) / K * tot) c[size_t(filled++)] = x[ord[t]];
    }
    std::vector<uint32_t> a(n, 0);
    for (int it = 0; it < 50; ++it) {
        bool moved = it == 0;
        for (size_t i = 0; i < n; ++i) {
            uint32_t b = 0;
            for (int k = 1; k < K; ++k)
                if (std::fabs(x[i] - c[size_t(k)]) < std::fabs(x[i] - c[b])) b = uint32_t(k);
            moved |= b != a[i];
            a[i] = b;
        }
        if (!moved) break;
        for (int k = 0; k < K; ++k) {
            double s = 0, sw = 0;
            for (size_t i = 0; i < n; ++i)
                if (a[i] == uint32_t(k)) s += wt[i] * x[i], sw += wt[i];
            if (sw > 0) c[size_t(k)] = s / sw;
        }
    }
    std::sort(c.begin(), c.end());
    RefRow r;
    for (double v : c) r.book.push_back(f32ToF16(float(v)));
    for (size_t i = 0; i < n; ++i) {
        uint32_t b = 0;
        for (int k = 1; k < K; ++k)
            if (std::fabs(float(x[i]) - f16ToF32(r.book[size_t(k)])) <
                std::fabs(float(x[i]) - f16ToF32(r.book[b])))
                b = uint32_t(k);
        r.code.push_back(b);
    }
    return r;
}

uint32_t codeAt(const PackedTensor& p, int64_t r, int64_t j) {
    const int b = p.settings.bits;
    const uint64_t rb = (uint64_t(p.cols) * uint64_t(b) + 7) / 8;
    const uint64_t bit = uint64_t(j) * uint64_t(b);
    uint32_t u = 0;
    for (int i = 0; i < b; ++i)
        u |= uint32_t((p.codes[size_t(uint64_t(r) * rb + (bit + i) / 8)] >> ((bit + i) % 8)) & 1u)
             << i;
    return u;
}

WeightSettings squeezeSettings(int bits, double pct) {
    WeightSettings s;
    s.method = WeightMethod::SqueezeLlm;
    s.bits = bits;
    s.outliersPct = pct;
    s.granularity = Granularity::Channel;
    return s;
}

Recipe recipeWith(json weight) {
    return Recipe::fromJson(
        {{"lcw_recipe", 1},
         {"name", "t"},
         {"rules", json::array({{{"targets", {"*"}}, {"weight", std::move(weight)}}})}});
}

} // namespace

class TestSqueezeLlm : public QObject {
    Q_OBJECT
private slots:
    void matchesReference() {
        // 7 rows x 45 columns, heavy-tailed weights, positive sensitivities; 3 and 2 bits, with
        // and without outliers.
        const int64_t rows = 7, cols = 45;
        const std::vector<float> w = randomWeights(rows * cols, 11, 0.05);
        std::mt19937 g(5);
        std::uniform_real_distribution<float> u(0.01f, 3.0f);
        std::vector<float> sens(static_cast<size_t>(cols));
        for (auto& v : sens) v = u(g);
        for (int bits : {3, 2})
            for (double pct : {0.0, 2.0}) {
                const PackedTensor p = squeezeLlmQuantize(
                    w.data(), rows, cols, squeezeSettings(bits, pct), sens.data(), "t");
                // Outliers: the round(pct% of n) largest |w|, ties to the lower index.
                const int64_t nnz = std::llround(pct / 100.0 * double(rows * cols));
                std::vector<int64_t> idx(static_cast<size_t>(rows * cols));
                std::iota(idx.begin(), idx.end(), int64_t(0));
                std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
                    return std::fabs(w[size_t(a)]) > std::fabs(w[size_t(b)]);
                });
                std::vector<char> out(w.size(), 0);
                for (int64_t i = 0; i < nnz; ++i) out[size_t(idx[size_t(i)])] = 1;
                QCOMPARE(int64_t(p.sparseCols.size()), nnz);
                const std::vector<float> dq = dequantize(p, "t");
                for (int64_t r = 0; r < rows; ++r) {
                    std::vector<double> x, wt;
                    for (int64_t j = 0; j < cols; ++j) {
                        x.push_back(w[size_t(r * cols + j)]);
                        wt.push_back(out[size_t(r * cols + j)] ? 0.0 : double(sens[size_t(j)]));
                    }
                    const RefRow ref = refSqueezeRow(x, wt, 1 << bits);
                    for (int k = 0; k < (1 << bits); ++k)
                        QCOMPARE(p.scales[size_t((r << bits) + k)], ref.book[size_t(k)]);
                    for (int64_t j = 0; j < cols; ++j) {
                        QCOMPARE(codeAt(p, r, j), ref.code[size_t(j)]);
                        const float want = out[size_t(r * cols + j)]
                                               ? f16ToF32(f32ToF16(w[size_t(r * cols + j)]))
                                               : f16ToF32(ref.book[ref.code[size_t(j)]]);
                        QCOMPARE(dq[size_t(r * cols + j)], want);
                    }
                }
            }
    }

    void objectiveNeverIncreases() {
        for (unsigned seed = 1; seed <= 20; ++seed) {
            const std::vector<float> wf = randomWeights(300, seed, 0.1);
            std::vector<double> x(wf.begin(), wf.end()), wt(x.size());
            std::mt19937 g(seed + 100);
            std::exponential_distribution<double> e(1.0);
            for (auto& v : wt) v = e(g);
            for (int k : {4, 8, 16}) {
                const KMeans1d km = weightedKMeans1d(x.data(), wt.data(), int64_t(x.size()), k);
                QVERIFY(!km.objective.empty());
                for (size_t i = 1; i < km.objective.size(); ++i)
                    QVERIFY2(km.objective[i] <= km.objective[i - 1] * (1 + 1e-12),
                             qPrintable(QString("seed %1 k %2 it %3: %4 > %5")
                                            .arg(seed)
                                            .arg(k)
                                            .arg(i)
                                            .arg(km.objective[i])
                                            .arg(km.objective[i - 1])));
                // The final objective is the weighted error of the returned assignment.
                double obj = 0;
                for (size_t i = 0; i < x.size(); ++i) {
                    const double d = x[i] - km.centroids[km.assign[i]];
                    obj += wt[i] * d * d;
                }
                QVERIFY(std::fabs(obj - km.objective.back()) <= 1e-9 * (1 + obj));
                QVERIFY(std::is_sorted(km.centroids.begin(), km.centroids.end()));
            }
        }
    }

    void zeroOutliersIsPlainNonUniform() {
        const int64_t rows = 5, cols = 64;
        const std::vector<float> w = randomWeights(rows * cols, 3, 0.05);
        const PackedTensor p =
            quantize(w.data(), rows, cols, squeezeSettings(3, 0.0), "t", nullptr);
        QVERIFY(p.sparseRowPtr.empty() && p.sparseCols.empty() && p.sparseValues.empty());
        const std::vector<float> dq = dequantize(p, "t");
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j)
                QCOMPARE(dq[size_t(r * cols + j)],
                         f16ToF32(p.scales[size_t(r * 8 + codeAt(p, r, j))]));
        // Exactly the code book and the codes.
        const uint64_t bits = uint64_t(rows) * ((cols * 3 + 7) / 8) * 8 + 16ull * rows * 8;
        QCOMPARE(p.storageBits(), bits);
        QCOMPARE(packedStorageBits(rows, cols, squeezeSettings(3, 0.0)), bits);
        // With outliers: the same code book search on the others, + CSR.
        const PackedTensor q =
            quantize(w.data(), rows, cols, squeezeSettings(3, 1.0), "t", nullptr);
        const uint64_t nnz = uint64_t(std::llround(0.01 * rows * cols));
        QCOMPARE(uint64_t(q.sparseValues.size()), nnz);
        QCOMPARE(q.storageBits(), bits + 48 * nnz + 32 * (rows + 1));
        QCOMPARE(packedStorageBits(rows, cols, squeezeSettings(3, 1.0)), q.storageBits());
        // Keeping the largest weights exactly lowers the error here (heavy tails).
        const std::vector<float> dq1 = dequantize(q, "t");
        double e0 = 0, e1 = 0;
        for (size_t i = 0; i < w.size(); ++i)
            e0 += std::pow(w[i] - dq[i], 2), e1 += std::pow(w[i] - dq1[i], 2);
        QVERIFY(e1 < e0);
    }

    void fisherMatchesFiniteDifferences() {
        // SqueezeLLM's sensitivity: F_ij = Σ over windows of (∂L/∂W_ij)², checked element by
        // element against central differences of the loss (the whole model in double).
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {2, 12});
        QCOMPARE(int(cal.samples.size()), 2);
        const std::vector<std::string> names = {"layers.0.attn.q", "layers.2.mlp.up",
                                                "layers.4.mlp.down"};
        NullProgress np;
        const FisherResult f = blockLinearFisher(*m, names, cal.samples, np);
        QCOMPARE(f.status, Status::Ok);
        QCOMPARE(int(f.fisher.size()), 3);
        int checked = 0;
        for (const std::string& name : names) {
            const TensorView* t = m->find(name);
            QVERIFY(t && t->dtype == DType::F32);
            const int64_t rows = t->shape[0], cols = t->shape[1];
            QCOMPARE(int64_t(f.fisher.at(name).size()), rows * cols);
            for (const auto& [r, j] :
                 {std::pair<int64_t, int64_t>{0, 0}, {rows / 2, cols - 1}, {rows - 1, cols / 3}}) {
                const int64_t i = r * cols + j;
                double F = 0;
                for (const auto& win : cal.samples) {
                    Perturbed plus(*m, *t), minus(*m, *t);
                    const float w0 = plus.values[size_t(i)];
                    plus.values[size_t(i)] = w0 + 1e-3f;
                    minus.values[size_t(i)] = w0 - 1e-3f;
                    const double h = double(plus.values[size_t(i)]) - minus.values[size_t(i)];
                    const double g = (efficientQatE2eLoss(plus, {}, {}, win) -
                                      efficientQatE2eLoss(minus, {}, {}, win)) /
                                     h;
                    F += g * g;
                }
                QVERIFY(F > 1e-8); // a gradient that matters
                const double got = f.fisher.at(name)[size_t(i)];
                QVERIFY2(std::fabs(got - F) <= 2e-3 * F + 1e-12,
                         (name + " (" + std::to_string(r) + ", " + std::to_string(j) +
                          "): " + std::to_string(got) + " vs " + std::to_string(F))
                             .c_str());
                ++checked;
            }
        }
        QCOMPARE(checked, 9);
        QVERIFY(f.meanLoss > 0);
        // Errors: not a block linear, windows of one token, a budget too small for the model.
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 blockLinearFisher(*m, {"lm_head"}, cal.samples, np));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, blockLinearFisher(*m, names, {{1}, {2}}, np));
        QVERIFY_THROWS_EXCEPTION(UnsupportedError,
                                 blockLinearFisher(*m, names, cal.samples, np, 1e3));
    }

    void elementWeightsGeneraliseColumnWeights() {
        // One weight per element that repeats a column weight gives the column-weighted result;
        // per-element weights that differ move the code books toward the heavy elements.
        const int64_t rows = 6, cols = 64;
        std::mt19937 g(3);
        std::normal_distribution<float> nd(0.0f, 0.05f);
        std::uniform_real_distribution<float> ud(0.1f, 4.0f);
        std::vector<float> w(static_cast<size_t>(rows * cols)), colW(static_cast<size_t>(cols)),
            elemW(static_cast<size_t>(rows * cols));
        for (auto& v : w) v = nd(g);
        for (auto& v : colW) v = ud(g);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) elemW[size_t(r * cols + j)] = colW[size_t(j)];
        WeightSettings s;
        s.method = WeightMethod::SqueezeLlm;
        s.bits = 3;
        s.granularity = Granularity::Channel;
        const PackedTensor a = squeezeLlmQuantize(w.data(), rows, cols, s, colW.data(), "t");
        const PackedTensor b =
            squeezeLlmQuantize(w.data(), rows, cols, s, nullptr, "t", elemW.data());
        QVERIFY(a.codes == b.codes && a.scales == b.scales);
        // Row 0 only: a huge weight on one element pulls a centroid onto it.
        std::vector<float> heavy = elemW;
        heavy[5] = 1e6f;
        const PackedTensor c =
            squeezeLlmQuantize(w.data(), rows, cols, s, nullptr, "t", heavy.data());
        const std::vector<float> dq = dequantize(c, "t");
        QVERIFY(std::fabs(dq[5] - w[5]) <= 1e-3f * std::fabs(w[5]) + 1e-4f);
        QVERIFY(std::equal(a.codes.begin() + 3 * 8, a.codes.end(), c.codes.begin() + 3 * 8));
        heavy[7] = -1.0f;
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError, squeezeLlmQuantize(w.data(), rows, cols, s, nullptr, "t", heavy.data()));
    }

    void fisherSensitivityEndToEnd() {
        // "sensitivity": "fisher" through the calibrated pipeline: the details say so, sizes are
        // unchanged, and on the Fisher-weighted error (SqueezeLLM's objective) the Fisher code
        // books beat the Gram-weighted ones.
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {4, 64});
        json rj = findPreset("W3-SqueezeLLM").recipe.toJson();
        for (auto& rule : rj["rules"])
            if (rule.contains("weight") && rule["weight"].is_object())
                rule["weight"]["sensitivity"] = "fisher";
        const Recipe r = Recipe::fromJson(rj);
        NullProgress np;
        CompressOptions co;
        co.calibration = &cal;
        const CompressResult res = lcw::compress::compress(*m, r, np, co);
        QVERIFY(res.model);
        const CompressResult gram =
            lcw::compress::compress(*m, findPreset("W3-SqueezeLLM").recipe, np, co);
        QCOMPARE(res.model->compressedSize().bits, gram.model->compressedSize().bits);
        std::vector<std::string> names;
        for (const auto& l : res.layers) {
            QVERIFY2(l.details.value("sensitivity", "").rfind("fisher", 0) == 0, l.name.c_str());
            names.push_back(l.name);
        }
        // On the Fisher objective Σ F·(w − ŵ)², the Fisher code books beat the Gram ones.
        const FisherResult f = blockLinearFisher(*m, names, cal.samples, np);
        double ef = 0, eg = 0;
        for (const std::string& n : names) {
            const std::vector<float> W = f32Values(*m, n);
            const std::vector<float> a = res.model->compressed(n)->values();
            const std::vector<float> b = gram.model->compressed(n)->values();
            const std::vector<float>& F = f.fisher.at(n);
            for (size_t i = 0; i < W.size(); ++i) {
                ef += double(F[i]) * std::pow(double(W[i]) - a[i], 2);
                eg += double(F[i]) * std::pow(double(W[i]) - b[i], 2);
            }
        }
        QVERIFY2(ef < eg, (std::to_string(ef) + " vs " + std::to_string(eg)).c_str());
    }

    void demoModelSizesAndOverlay() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {4, 64});
        const Recipe r = findPreset("W3-SqueezeLLM").recipe;
        NullProgress np;
        CompressOptions co;
        co.calibration = &cal;
        const CompressResult res = lcw::compress::compress(*m, r, np, co);
        QVERIFY(res.model);
        PlanOptions po;
        po.hasCalibration = true;
        const SizeEstimate est = estimatePlan(planRecipe(r, *m, po), *m);
        QCOMPARE(est.compressed.bits, res.model->compressedSize().bits);
        QCOMPARE(est.total.bits, res.model->totalSize().bits);
        const json rep = compressReportJson(res);
        for (const auto& l : res.layers) {
            const CompressedTensor* c = res.model->compressed(l.name);
            QVERIFY(c && c->quantized);
            QCOMPARE(c->packed.settings.method, WeightMethod::SqueezeLlm);
            QCOMPARE(l.storageBits, c->storageBits());
            QVERIFY(!c->packed.sparseValues.empty());
            QCOMPARE(res.model->packedLinear(l.name), nullptr); // float path
            QCOMPARE(l.details.value("sensitivity", ""), std::string("diag(X^T X)"));
        }
        const std::string dir = lcwtest::tempDir("squeezellm") + "/ov";
        res.model->save(dir);
        auto back = CompressedModel::load(dir, *m);
        QCOMPARE(back->compressedSize().bits, res.model->compressedSize().bits);
        for (const auto& n : res.model->replacedNames()) {
            const PackedTensor& a = res.model->compressed(n)->packed;
            const PackedTensor& b = back->compressed(n)->packed;
            QVERIFY(a.codes == b.codes && a.scales == b.scales);
            QVERIFY(a.sparseRowPtr == b.sparseRowPtr && a.sparseCols == b.sparseCols &&
                    a.sparseValues == b.sparseValues);
            QCOMPARE(b.settings.outliersPct, 0.45);
        }
        QVERIFY(lcwtest::sameFiniteLogits(*res.model, *back));
    }

    void recipeKeys() {
        recipeWith({{"method", "squeezellm"}, {"bits", 3}, {"outliers_pct", 0.5}});
        auto field = [](json w) -> std::string {
            try {
                recipeWith(std::move(w));
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field({{"method", "squeezellm"}, {"outliers_pct", 11}}),
                 std::string("weight.outliers_pct"));
        QCOMPARE(field({{"method", "squeezellm"}, {"outliers_pct", "1"}}),
                 std::string("weight.outliers_pct"));
        // Cross-field checks happen when the recipe is planned on a model.
        auto m = Model::load(lcwtest::demoModelPath());
        PlanOptions po;
        po.hasCalibration = true;
        auto planField = [&](json w) -> std::string {
            try {
                planRecipe(recipeWith(std::move(w)), *m, po);
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(planField({{"method", "rtn"}, {"bits", 4}, {"outliers_pct", 1}}),
                 std::string("weight.outliers_pct"));
        QCOMPARE(planField({{"method", "gptq"}, {"bits", 4}, {"sensitivity", "fisher"}}),
                 std::string("weight.sensitivity"));
        QCOMPARE(field({{"method", "squeezellm"}, {"sensitivity", "hessian"}}),
                 std::string("weight.sensitivity"));
        QVERIFY(squeezeUsesFisher(json{{"method", "squeezellm"}, {"sensitivity", "fisher"}}));
        QVERIFY(!squeezeUsesFisher(json{{"method", "squeezellm"}}));
        QCOMPARE(planField({{"method", "squeezellm"}, {"bits", 6}}), std::string("weight.bits"));
        QCOMPARE(planField({{"method", "squeezellm"}, {"format", "nf4"}}),
                 std::string("weight.format"));
        QCOMPARE(planField({{"method", "squeezellm"}, {"bits", 3}}), std::string());
        PlanOptions none;
        QVERIFY_THROWS_EXCEPTION(
            RecipeError, planRecipe(recipeWith({{"method", "squeezellm"}, {"bits", 3}}), *m, none));
    }
};

QTEST_GUILESS_MAIN(TestSqueezeLlm)
#include "test_squeezellm.moc"
