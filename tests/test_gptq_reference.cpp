// GPTQ against the authors' code: a double-precision port of IST-DASLab/gptq's gptq.py
// GPTQ.fasterquant (blocksize, percdamp, groupsize, actorder, static_groups) with quant.py's
// Quantizer (perchannel, no mse), written here without calling lcw's GPTQ, must give the codes,
// scales and zero points lcw stores (core/compress/gptq.h). The one convention the port takes
// from lcw: a scale is stored as the smallest f16 >= the fp32 scale and the zero point is
// computed from that stored scale (the reference keeps the fp32 scale). Also: lcw's earlier
// group rule ("groups": "updated") differs from the reference; act-order groups stored in act
// order (PackedTensor::colOrder) survive the overlay and give the same products in the runtime.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/gptq.h"
#include "core/compress/pipeline.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/session.h"
#include "core_test_util.h"
#include "gptq_reference.h"
#include "test_util.h"

#include <Eigen/Dense>
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

using namespace gptqref;

/// lcw's packed tensor per element in original column order (same fields as RefOut).
RefOut unpack(const PackedTensor& p) {
    const WeightSettings& s = p.settings;
    const int64_t rows = p.rows, cols = p.cols, bits = s.bits;
    const int64_t gl =
        s.granularity == Granularity::Group ? std::min<int64_t>(s.groupSize, cols) : cols;
    const int64_t gpr = s.granularity == Granularity::Group ? (cols + gl - 1) / gl : 1;
    const int64_t rb = (cols * bits + 7) / 8;
    RefOut o;
    o.code.assign(size_t(rows * cols), 0);
    o.scale.assign(size_t(rows * cols), 0);
    o.zero.assign(size_t(rows * cols), 0);
    o.gidx.assign(size_t(cols), 0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k) {
            const int64_t j = p.colOrder.empty() ? k : p.colOrder[size_t(k)];
            uint32_t u = 0;
            for (int64_t b = 0; b < bits; ++b) {
                const int64_t bit = k * bits + b;
                u |= uint32_t((p.codes[size_t(r * rb + bit / 8)] >> (bit % 8)) & 1) << b;
            }
            const size_t gi =
                s.granularity == Granularity::Group ? size_t(r * gpr + k / gl) : size_t(r);
            o.code[size_t(r * cols + j)] = u;
            o.scale[size_t(r * cols + j)] = p.scales[gi];
            o.zero[size_t(r * cols + j)] =
                s.symmetric ? float(1 << (bits - 1)) : f16ToF32(p.zeros[gi]);
            o.gidx[size_t(j)] = s.granularity == Granularity::Group ? int32_t(k / gl) : 0;
        }
    return o;
}

/// The fixed problem: rows x cols weights, H = 2/n XᵀX from n samples whose channels have
/// scales spread over e^±2, one dead channel and a few correlated ones.
struct Problem {
    int64_t rows = 16, cols = 256, n = 512;
    std::vector<float> w;
    MatD H;
    std::vector<double> Hrm;
    Problem() {
        std::mt19937 rng(19);
        std::normal_distribution<double> nd(0.0, 1.0);
        std::uniform_real_distribution<double> ud(-2.0, 2.0);
        std::vector<double> chScale(static_cast<size_t>(cols));
        for (auto& c : chScale) c = std::exp(ud(rng));
        MatD X(n, cols);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t j = 0; j < cols; ++j) X(t, j) = float(nd(rng) * chScale[size_t(j)]);
        X.col(37).setZero(); // a dead input channel
        X.col(5) = X.col(4); // correlated channels
        X.col(200) += X.col(100);
        H = 2.0 / double(n) * X.transpose() * X;
        Hrm.resize(size_t(cols * cols));
        for (int64_t a = 0; a < cols; ++a)
            for (int64_t b = 0; b < cols; ++b) Hrm[size_t(a * cols + b)] = H(a, b);
        w.resize(size_t(rows * cols));
        for (auto& v : w) v = float(0.05 * nd(rng));
        w[size_t(3 * cols + 17)] = 0.6f; // an outlier weight
        w[size_t(9 * cols + 37)] = 0.4f; // a large weight on the dead column
    }
};

WeightSettings int4(bool sym, int64_t group) {
    WeightSettings s;
    s.bits = 4;
    s.symmetric = sym;
    s.granularity = group > 0 ? Granularity::Group : Granularity::Channel;
    s.groupSize = group > 0 ? group : 128;
    s.method = WeightMethod::Gptq;
    return s;
}

int64_t countDiff(const RefOut& a, const RefOut& b) {
    int64_t d = 0;
    for (size_t i = 0; i < a.code.size(); ++i) d += a.code[i] != b.code[i];
    return d;
}

std::string demoLinear(const Model& m) {
    for (const char* n : {"layers.0.attn.q", "layers.0.mlp.up", "layers.0.mlp.gate"})
        if (m.find(n)) return n;
    return {};
}

} // namespace

class TestGptqReference : public QObject {
    Q_OBJECT
private slots:
    void codesEqualTheReference() {
        const Problem pb;
        int cases = 0;
        for (const bool sym : {false, true})
            for (const bool act : {false, true})
                for (const bool stat : {false, true})
                    for (const int64_t bs : {int64_t(128), int64_t(48)}) {
                        const std::string tag =
                            std::string(sym ? "sym" : "asym") + (act ? " act_order" : "") +
                            (stat ? " static_groups" : "") + " bs" + std::to_string(bs);
                        GptqOptions o;
                        o.actOrder = act;
                        o.staticGroups = stat;
                        o.blockSize = bs;
                        const GptqResult g = gptqQuantize(pb.w.data(), pb.rows, pb.cols,
                                                          pb.Hrm.data(), int4(sym, 32), o, "t");
                        QCOMPARE(g.deadColumns, int64_t(1));
                        QCOMPARE(g.damp, 0.01);
                        // Act-order groups without static groups are stored in act order.
                        QCOMPARE(g.packed.colOrder.empty(), !act || stat);
                        const RefOut ref = fasterquant(pb.w, pb.rows, pb.cols, pb.H, 4, sym, bs,
                                                       0.01, 32, act, stat);
                        const RefOut got = unpack(g.packed);
                        QVERIFY2(got.gidx == ref.gidx, tag.c_str());
                        QVERIFY2(got.scale == ref.scale, tag.c_str());
                        QVERIFY2(got.zero == ref.zero, tag.c_str());
                        QVERIFY2(
                            countDiff(got, ref) == 0,
                            (tag + ": " + std::to_string(countDiff(got, ref)) + " codes differ")
                                .c_str());
                        ++cases;
                    }
        QCOMPARE(cases, 16);
    }

    void channelGridsFromTheInitialWeights() {
        // groupsize -1: the reference's params come from W before the dead column is zeroed
        // (row 9 holds 0.4 on the dead column).
        const Problem pb;
        for (const bool sym : {false, true})
            for (const bool act : {false, true}) {
                GptqOptions o;
                o.actOrder = act;
                const GptqResult g = gptqQuantize(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(),
                                                  int4(sym, 0), o, "t");
                const RefOut ref =
                    fasterquant(pb.w, pb.rows, pb.cols, pb.H, 4, sym, 128, 0.01, -1, act, false);
                const RefOut got = unpack(g.packed);
                QVERIFY(g.packed.colOrder.empty());
                QVERIFY(got.scale == ref.scale);
                QVERIFY(got.zero == ref.zero);
                QCOMPARE(countDiff(got, ref), int64_t(0));
            }
    }

    void updatedRuleDiffersFromTheReference() {
        // lcw's earlier group rule ("groups": "updated") is not the reference (and neither is
        // RTN's symmetric grid, below): the old code fails codesEqualTheReference.
        const Problem pb;
        for (const bool sym : {false, true})
            for (const bool act : {false, true}) {
                GptqOptions o;
                o.actOrder = act;
                o.groups = GptqGroups::Updated;
                const GptqResult g = gptqQuantize(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(),
                                                  int4(sym, 32), o, "t");
                QVERIFY(g.packed.colOrder.empty()); // groups contiguous in the original order
                const RefOut ref =
                    fasterquant(pb.w, pb.rows, pb.cols, pb.H, 4, sym, 128, 0.01, 32, act, false);
                const RefOut got = unpack(g.packed);
                QVERIFY(countDiff(got, ref) > 0);
                if (act) QVERIFY(got.gidx != ref.gidx);
                // Only the timing differs without act order (asymmetric: same grid rule).
                o.groups = GptqGroups::Reference;
                const RefOut same = unpack(gptqQuantize(pb.w.data(), pb.rows, pb.cols,
                                                        pb.Hrm.data(), int4(sym, 32), o, "t")
                                               .packed);
                QCOMPARE(countDiff(same, ref), int64_t(0));
            }
        // RTN's symmetric grid ("sym_grid": "rtn") never uses the code 0 (−8·scale).
        GptqOptions o;
        o.referenceSymGrid = false;
        const RefOut rtnGrid = unpack(
            gptqQuantize(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(), int4(true, 32), o, "t")
                .packed);
        QVERIFY(std::find(rtnGrid.code.begin(), rtnGrid.code.end(), 0u) == rtnGrid.code.end());
        const RefOut ref =
            fasterquant(pb.w, pb.rows, pb.cols, pb.H, 4, true, 128, 0.01, 32, false, false);
        QVERIFY(countDiff(rtnGrid, ref) > 0);
    }

    void columnOrderPacking() {
        const Problem pb;
        GptqOptions o;
        o.actOrder = true;
        const GptqResult g =
            gptqQuantize(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(), int4(false, 32), o, "t");
        const PackedTensor& p = g.packed;
        QCOMPARE(int64_t(p.colOrder.size()), pb.cols);
        // 32 bits per stored column index.
        QCOMPARE(p.storageBits(), uint64_t(8 * p.codes.size() +
                                           16 * (p.scales.size() + p.zeros.size()) + 32 * p.cols));
        // dequantize() puts every stored column back at its original place.
        const auto v = dequantize(p, "t");
        const RefOut u = unpack(p);
        for (int64_t r = 0; r < pb.rows; ++r)
            for (int64_t j = 0; j < pb.cols; ++j) {
                const size_t i = size_t(r * pb.cols + j);
                QCOMPARE(v[i], f16ToF32(u.scale[i]) * (float(u.code[i]) - u.zero[i]));
            }
        // dequantizeRows agrees.
        std::vector<float> rows3(size_t(3 * pb.cols));
        dequantizeRows(p, 5, 3, rows3.data(), "t");
        QVERIFY(std::equal(rows3.begin(), rows3.end(), v.begin() + 5 * pb.cols));
        // A column order that is not a permutation is refused.
        PackedTensor bad = p;
        bad.colOrder[3] = bad.colOrder[4];
        QVERIFY_THROWS_EXCEPTION(Error, dequantize(bad, "t"));
        bad.colOrder.resize(10);
        QVERIFY_THROWS_EXCEPTION(Error, dequantize(bad, "t"));
    }

    void runtimeProductWithColumnOrder() {
        const Problem pb;
        GptqOptions o;
        o.actOrder = true;
        for (const bool sym : {false, true}) {
            PackedTensor p =
                gptqQuantize(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(), int4(sym, 32), o, "t")
                    .packed;
            // An outlier column (original index 40) kept in f16.
            p.outlierCols = {40};
            p.outlierValues.assign(size_t(pb.rows), f32ToF16(0.25f));
            const auto wq = dequantize(p, "t");
            kernels::PackedSource src;
            src.kind = kernels::PackedSource::Kind::Int;
            src.bits = 4;
            src.symmetric = sym;
            src.granularity = kernels::PackedSource::Granularity::Group;
            src.group = 32;
            src.rows = p.rows;
            src.cols = p.cols;
            src.codes = p.codes.data();
            src.codeBytes = p.codes.size();
            src.scales = p.scales.data();
            src.nScales = p.scales.size();
            if (!sym) src.zeros = p.zeros.data(), src.nZeros = p.zeros.size();
            src.outlierCols = p.outlierCols.data();
            src.nOutlierCols = p.outlierCols.size();
            src.outlierValues = p.outlierValues.data();
            src.colOrder = p.colOrder.data();
            src.name = "t";
            const auto pl = kernels::PackedLinear::pack(src);
            std::vector<float> dq(wq.size());
            pl->dequantizeRows(0, p.rows, dq.data());
            QVERIFY(dq == wq);
            const int64_t nTok = 3;
            std::mt19937 rng(3);
            std::normal_distribution<float> nd(0.0f, 1.0f);
            std::vector<float> x(size_t(nTok * p.cols));
            for (auto& v : x) v = nd(rng);
            // int8 per-token input quantisation with activation-outlier channels (given in
            // input-column order): equal to the fake-quantised activations times the weights.
            ActQuantSpec a8;
            a8.bits = 8;
            a8.outlierChannels = {7, 41, 200};
            x[size_t(7)] = 30.0f;
            std::vector<float> xq(x.size());
            runtime::fakeQuantizeActivations(a8, x.data(), p.cols, xq.data(), p.cols, nTok, p.cols,
                                             0);
            for (const bool withAct : {false, true})
                for (const bool exact : {true, false}) {
                    const ActQuantSpec* act = withAct ? &a8 : nullptr;
                    const std::vector<float>& xin = withAct ? xq : x;
                    std::vector<std::byte> prep(pl->preparedBytes(nTok, act, exact));
                    pl->prepare(x.data(), p.cols, nTok, act, exact, prep.data());
                    std::vector<float> y(size_t(nTok * p.rows));
                    pl->gemm(0, p.rows, prep.data(), nTok, act, exact, y.data(), p.rows);
                    for (int64_t t = 0; t < nTok; ++t) {
                        double xmax = 0;
                        for (int64_t c = 0; c < p.cols; ++c)
                            xmax = std::max(xmax, std::fabs(double(xin[size_t(t * p.cols + c)])));
                        for (int64_t r = 0; r < p.rows; ++r) {
                            double want = 0, mag = 0;
                            for (int64_t c = 0; c < p.cols; ++c) {
                                want += double(xin[size_t(t * p.cols + c)]) *
                                        wq[size_t(r * p.cols + c)];
                                mag += std::fabs(double(wq[size_t(r * p.cols + c)]));
                            }
                            const double got = y[size_t(t * p.rows + r)];
                            // exact or the recipe's activations: float rounding only; int8
                            // blocks: the stated bound.
                            const double tol =
                                exact || withAct ? 1e-5 * mag * xmax : mag * xmax / 254 + 1e-4;
                            QVERIFY2(std::fabs(got - want) <= tol,
                                     (std::to_string(got) + " vs " + std::to_string(want) +
                                      (withAct ? " act" : "") + (exact ? " exact" : ""))
                                         .c_str());
                        }
                    }
                }
        }
    }

    void overlayRoundTripAndRuntime() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {8, 128});
        const Recipe r = Recipe::fromJson({{"lcw_recipe", 1},
                                           {"name", "t"},
                                           {"rules", json::array({{{"targets", {"*"}},
                                                                   {"weight",
                                                                    {{"bits", 4},
                                                                     {"symmetric", false},
                                                                     {"granularity", "group"},
                                                                     {"group_size", 32},
                                                                     {"method", "gptq"},
                                                                     {"act_order", true}}}}})}});
        NullProgress np;
        CompressOptions co;
        co.calibration = &cal;
        const CompressResult res = lcw::compress::compress(*m, r, np, co);
        const std::string name = demoLinear(*m);
        QVERIFY(!name.empty());
        const CompressedTensor* c = res.model->compressed(name);
        QVERIFY(c && c->quantized);
        QCOMPARE(int64_t(c->packed.colOrder.size()), c->cols);
        const std::string dir = lcwtest::tempDir("gptq-reference") + "/ov";
        res.model->save(dir);
        auto back = CompressedModel::load(dir, *m);
        for (const auto& n : res.model->replacedNames()) {
            const PackedTensor& a = res.model->compressed(n)->packed;
            const PackedTensor& b = back->compressed(n)->packed;
            QVERIFY(a.codes == b.codes);
            QVERIFY(a.scales == b.scales);
            QVERIFY(a.zeros == b.zeros);
            QVERIFY(a.colOrder == b.colOrder);
        }
        QCOMPARE(back->compressedSize().bits, res.model->compressedSize().bits);
        // The size estimate from the plan counts the column orders (32 bits per column).
        PlanOptions po;
        po.hasCalibration = true;
        const SizeEstimate est = estimatePlan(planRecipe(r, *m, po), *m);
        QCOMPARE(est.compressed.bits, res.model->compressedSize().bits);
        QCOMPARE(est.total.bits, res.model->totalSize().bits);
        // The runtime's packed product equals the dequantised weights' product.
        const kernels::PackedLinear* pl = back->packedLinear(name);
        QVERIFY(pl);
        const auto wq = back->compressed(name)->values();
        std::vector<float> dq(wq.size());
        pl->dequantizeRows(0, pl->rows(), dq.data());
        QVERIFY(dq == wq);
        // Logits of the saved and loaded overlays agree.
        QVERIFY(lcwtest::sameFiniteLogits(*res.model, *back));
    }

    void ggufGridsFollowTheTiming() {
        // GPTQ onto Q4_0 blocks (contiguous in column order): static_groups take ggml's scales
        // of the initial weights (dead column zeroed) for every block; the reference timing and
        // "updated" choose later blocks' scales from different weights.
        const Problem pb;
        const int64_t nb = pb.cols / 32;
        const size_t bb = size_t(dtypeBlockBytes(DType::Q4_0));
        std::vector<float> w0 = pb.w;
        for (int64_t r = 0; r < pb.rows; ++r) w0[size_t(r * pb.cols + 37)] = 0.0f;
        std::vector<std::byte> rtn(size_t(pb.rows * nb) * bb);
        for (int64_t r = 0; r < pb.rows; ++r)
            quantizeRow(DType::Q4_0, w0.data() + r * pb.cols, rtn.data() + size_t(r * nb) * bb,
                        pb.cols, nullptr);
        auto scaleOf = [&](const std::vector<std::byte>& b, size_t blk) {
            uint16_t d;
            std::memcpy(&d, b.data() + blk * bb, 2);
            return d;
        };
        for (const bool act : {false, true}) {
            GptqOptions o;
            o.actOrder = act;
            o.staticGroups = true;
            const auto st = gptqQuantizeGguf(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(),
                                             DType::Q4_0, nullptr, o, "t");
            for (size_t blk = 0; blk < size_t(pb.rows * nb); ++blk)
                QCOMPARE(scaleOf(st.bytes, blk), scaleOf(rtn, blk));
            o.staticGroups = false;
            const auto ref = gptqQuantizeGguf(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(),
                                              DType::Q4_0, nullptr, o, "t");
            o.groups = GptqGroups::Updated;
            const auto upd = gptqQuantizeGguf(pb.w.data(), pb.rows, pb.cols, pb.Hrm.data(),
                                              DType::Q4_0, nullptr, o, "t");
            int refDiff = 0, updDiff = 0;
            for (size_t blk = 0; blk < size_t(pb.rows * nb); ++blk) {
                refDiff += scaleOf(ref.bytes, blk) != scaleOf(upd.bytes, blk);
                updDiff += scaleOf(st.bytes, blk) != scaleOf(upd.bytes, blk);
            }
            QVERIFY(refDiff > 0);
            QVERIFY(updDiff > 0);
            if (!act)
                // The first block of a row is chosen before any update under every rule.
                for (int64_t r = 0; r < pb.rows; ++r)
                    QCOMPARE(scaleOf(ref.bytes, size_t(r * nb)), scaleOf(rtn, size_t(r * nb)));
        }
    }

    void recipeKeys() {
        auto rule = [](json w) {
            w["method"] = "gptq";
            return Recipe::fromJson(
                {{"lcw_recipe", 1},
                 {"name", "t"},
                 {"rules", json::array({{{"targets", {"*"}}, {"weight", w}}})}});
        };
        rule({{"static_groups", true}, {"groups", "updated"}, {"sym_grid", "rtn"}});
        QVERIFY_THROWS_EXCEPTION(RecipeError, rule({{"groups", "fresh"}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, rule({{"static_groups", 1}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, rule({{"sym_grid", "other"}}));
    }
};

QTEST_GUILESS_MAIN(TestGptqReference)
#include "test_gptq_reference.moc"
