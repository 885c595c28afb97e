// Atom (Zhao et al. 2023, "Atom: Low-bit Quantization for Efficient and Accurate LLM Serving")
// against a double-precision implementation of the paper's scheme written here: the input
// channels of largest calibrated magnitude are reordered to the end and kept at 8 bits
// (activations per token, the matching weight columns per output row), the other channels are
// quantised at 4 bits in fine-grained groups over the reordered order (activations dynamically
// per token and group, weights asymmetric per row and group). Properties: with no outlier
// channels and one group per row it is plain W4A4 per-token; 8-bit outlier channels never widen
// a normal group's scale; sizes are exact (estimate = compress = overlay) and the overlay
// round-trips.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/folding.h"
#include "core/compress/gptq.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"
#include "core_test_util.h"
#include "gptq_reference.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

// ---- the reference (double precision, the paper's steps) ----

/// The top-`count` channels by score (ties: lower index), ascending.
std::vector<int32_t> refTopChannels(const std::vector<double>& score, int64_t count) {
    std::vector<int32_t> idx(score.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(),
                     [&](int32_t a, int32_t b) { return score[size_t(a)] > score[size_t(b)]; });
    idx.resize(size_t(count));
    std::sort(idx.begin(), idx.end());
    return idx;
}

/// Atom's reorder: normal channels in their order, then the outliers.
std::vector<int32_t> refReorder(int64_t cols, const std::vector<int32_t>& outl) {
    std::vector<int32_t> p;
    for (int64_t c = 0; c < cols; ++c)
        if (std::find(outl.begin(), outl.end(), int32_t(c)) == outl.end()) p.push_back(int32_t(c));
    p.insert(p.end(), outl.begin(), outl.end());
    return p;
}

/// Symmetric fake quantisation of v (in place) with s = max|v| / (2^(b-1) - 1).
void refSymGroup(std::vector<double>& v, int bits) {
    const double qmax = double((1 << (bits - 1)) - 1);
    double m = 0;
    for (double x : v) m = std::max(m, std::fabs(x));
    const double s = m / qmax;
    for (double& x : v) x = s > 0 ? std::clamp(std::nearbyint(x / s), -qmax, qmax) * s : 0.0;
}

/// Activations [n, cols]: reordered; groups of g over the normal part at `bits`, the outlier
/// part one group at 8 bits; back in the original order.
std::vector<double> refActivations(const std::vector<float>& x, int64_t n, int64_t cols,
                                   const std::vector<int32_t>& outl, int64_t g, int bits) {
    const std::vector<int32_t> p = refReorder(cols, outl);
    const int64_t nn = cols - int64_t(outl.size());
    std::vector<double> out(x.size());
    for (int64_t t = 0; t < n; ++t) {
        std::vector<double> r(static_cast<size_t>(cols));
        for (int64_t k = 0; k < cols; ++k) r[size_t(k)] = x[size_t(t * cols + p[size_t(k)])];
        for (int64_t c0 = 0; c0 < nn; c0 += g) {
            std::vector<double> grp(r.begin() + c0, r.begin() + std::min(c0 + g, nn));
            refSymGroup(grp, bits);
            std::copy(grp.begin(), grp.end(), r.begin() + c0);
        }
        std::vector<double> o(r.begin() + nn, r.end());
        refSymGroup(o, 8);
        std::copy(o.begin(), o.end(), r.begin() + nn);
        for (int64_t k = 0; k < cols; ++k) out[size_t(t * cols + p[size_t(k)])] = r[size_t(k)];
    }
    return out;
}

/// The smallest f16 value >= s (scales are stored as f16, rounded up so they never clip).
double f16Up(double s) {
    uint16_t h = f32ToF16(float(s));
    if (double(f16ToF32(h)) < s) ++h;
    return double(f16ToF32(h));
}

/// Weights [rows, cols]: reordered; the normal columns in groups of g, asymmetric int`bits`
/// (range widened to include 0, zero point an integer); the outlier columns symmetric int8 with
/// one scale per row.
std::vector<double> refWeights(const std::vector<float>& w, int64_t rows, int64_t cols,
                               const std::vector<int32_t>& outl, int64_t g, int bits) {
    const std::vector<int32_t> p = refReorder(cols, outl);
    const int64_t nn = cols - int64_t(outl.size());
    const double qmax = double((1 << bits) - 1);
    std::vector<double> out(w.size());
    for (int64_t r = 0; r < rows; ++r) {
        auto at = [&](int64_t k) { return double(w[size_t(r * cols + p[size_t(k)])]); };
        auto put = [&](int64_t k, double v) { out[size_t(r * cols + p[size_t(k)])] = v; };
        for (int64_t c0 = 0; c0 < nn; c0 += g) {
            const int64_t c1 = std::min(c0 + g, nn);
            double mn = 0, mx = 0;
            for (int64_t k = c0; k < c1; ++k) mn = std::min(mn, at(k)), mx = std::max(mx, at(k));
            const double s = f16Up(double(float(mx - mn) / float(qmax)));
            const double z = s > 0 ? std::clamp(std::nearbyint(-mn / s), 0.0, qmax) : 0.0;
            for (int64_t k = c0; k < c1; ++k) {
                const double u = s > 0 ? std::clamp(std::nearbyint(at(k) / s) + z, 0.0, qmax) : z;
                put(k, s * (u - z));
            }
        }
        double amax = 0;
        for (int64_t k = nn; k < cols; ++k) amax = std::max(amax, std::fabs(at(k)));
        const double s = f16Up(double(float(amax) / 127.0f));
        for (int64_t k = nn; k < cols; ++k)
            put(k, s > 0 ? s * std::clamp(std::nearbyint(at(k) / s), -127.0, 127.0) : 0.0);
    }
    return out;
}

std::vector<float> randomRows(int64_t n, int64_t cols, unsigned seed,
                              const std::vector<int32_t>& loud = {}, float loudScale = 1.0f) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(size_t(n * cols));
    for (auto& v : x) v = nd(gen);
    for (int64_t t = 0; t < n; ++t)
        for (int32_t c : loud) x[size_t(t * cols + c)] *= loudScale;
    return x;
}

/// The demo-model Atom recipe (the paper's scheme scaled to 64-wide layers).
std::string atomRecipe(const std::string& method, int count, int group,
                       const std::string& select = "") {
    return "{'lcw_recipe': 1, 'name': 'atom', 'rules': [{'targets': ['*'], "
           "'weight': {'bits': 4, 'symmetric': false, 'granularity': 'group', 'group_size': " +
           std::to_string(group) + ", 'method': '" + method +
           "'}, 'activation': {'bits': 4, 'group_size': " + std::to_string(group) +
           "}, 'outliers': {'count': " + std::to_string(count) + ", 'bits': 8" +
           (select.empty() ? "" : ", 'select': '" + select + "'") +
           "}, 'kv': {'k_bits': 4, 'v_bits': 4, 'group_size': 8}}]}";
}

/// The demo model with a calibration set of the bundled text (samples × seqLen tokens) and
/// compress() options that use it.
struct DemoCalibrated {
    std::unique_ptr<Model> m = Model::load(lcwtest::demoModelPath());
    CalibrationSet cal;
    CompressOptions co;
    NullProgress np;
    DemoCalibrated(int64_t samples, int64_t seqLen)
        : cal(loadCalibration(*m, "", {samples, seqLen})) {
        co.calibration = &cal;
    }
    DemoCalibrated(const DemoCalibrated&) = delete;
    DemoCalibrated& operator=(const DemoCalibrated&) = delete;
    CompressResult compress(const Recipe& r) { return compress::compress(*m, r, np, co); }
    CompressResult compress(const std::string& quoted) {
        return compress(lcwtest::recipeFromQuoted(quoted));
    }
};

/// Σ x² per input channel of the named linears, accumulated in double (Atom's "hessian" metric).
class SumSqObserver final : public Observer {
public:
    void onLinearInput(int, LinearRole, const std::string& name, const float* x, int64_t n,
                       int64_t dim) override {
        auto& q = sum[name];
        if (q.empty()) q.assign(size_t(dim), 0.0);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t c = 0; c < dim; ++c)
                q[size_t(c)] += double(x[t * dim + c]) * x[t * dim + c];
    }
    std::map<std::string, std::vector<double>> sum;
};

std::vector<float> logitsOf(const WeightSource& w) {
    const std::vector<int32_t> ids = {1, 5, 9, 23, 40, 7, 3, 11, 60, 2};
    std::vector<float> l;
    Session s(w);
    s.forward(ids, l, true);
    return l;
}

} // namespace

class TestAtom : public QObject {
    Q_OBJECT

private slots:
    void activationsMatchDoubleReference() {
        const int64_t n = 7, cols = 44, g = 8;
        std::vector<float> x = randomRows(n, cols, 1, {3, 17, 30, 41}, 25.0f);
        std::vector<double> score(size_t(cols), 0.0);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t c = 0; c < cols; ++c)
                score[size_t(c)] = std::max(score[size_t(c)], std::fabs(double(x[t * cols + c])));
        std::vector<float> fscore(score.begin(), score.end());
        OutlierSettings os;
        os.count = 4;
        os.bits = 8;
        const std::vector<int32_t> outl = outlierChannelsOf(os, fscore);
        QCOMPARE(outl, refTopChannels(score, 4));
        QCOMPARE(outl, (std::vector<int32_t>{3, 17, 30, 41}));
        ActQuantSpec spec;
        spec.bits = 4;
        spec.groupSize = g;
        spec.outlierBits = 8;
        spec.outlierChannels = outl;
        std::vector<float> got(x.size());
        runtime::fakeQuantizeActivations(spec, x.data(), cols, got.data(), cols, n, cols, 1);
        const std::vector<double> ref = refActivations(x, n, cols, outl, g, 4);
        for (size_t i = 0; i < got.size(); ++i)
            QVERIFY2(std::fabs(double(got[i]) - ref[i]) <= 1e-5 * (1 + std::fabs(ref[i])),
                     qPrintable(QString("element %1: %2 vs %3").arg(i).arg(got[i]).arg(ref[i])));
        // The groups count: with one group per row the result differs.
        spec.groupSize = 0;
        std::vector<float> row(x.size());
        runtime::fakeQuantizeActivations(spec, x.data(), cols, row.data(), cols, n, cols, 1);
        QVERIFY(row != got);
    }

    void outlierChannelsNeverWidenNormalGroups() {
        // Property: with 8-bit outliers in a group of their own, making the outlier channels
        // louder leaves every normal channel's quantised value unchanged (no normal group's scale
        // widens); passed-through LLM.int8() outliers do the same, but a row scale over all
        // channels (no outlier set) does not.
        const int64_t n = 5, cols = 40;
        const std::vector<int32_t> outl = {2, 11, 29};
        for (int64_t g : {int64_t(0), int64_t(8), int64_t(16)}) {
            ActQuantSpec spec;
            spec.bits = 4;
            spec.groupSize = g;
            spec.outlierBits = 8;
            spec.outlierChannels = outl;
            std::vector<float> base;
            for (float loud : {1.0f, 30.0f, 1e4f}) {
                const std::vector<float> x = randomRows(n, cols, 7, outl, loud);
                std::vector<float> q(x.size());
                runtime::fakeQuantizeActivations(spec, x.data(), cols, q.data(), cols, n, cols, 1);
                for (int64_t t = 0; t < n; ++t)
                    for (int32_t c : outl) {
                        // the outlier group: 8-bit steps of its own max / 127
                        double m = 0;
                        for (int32_t o : outl) m = std::max(m, std::fabs(double(x[t * cols + o])));
                        QVERIFY(std::fabs(q[t * cols + c] - x[t * cols + c]) <= m / 127 * 0.5001);
                        q[t * cols + c] = 0.0f; // compare the normal channels only
                    }
                if (base.empty())
                    base = q;
                else
                    QCOMPARE(q, base);
            }
        }
        ActQuantSpec plain;
        plain.bits = 4;
        const std::vector<float> a = randomRows(n, cols, 7, outl, 1.0f),
                                 b = randomRows(n, cols, 7, outl, 30.0f);
        std::vector<float> qa(a.size()), qb(b.size());
        runtime::fakeQuantizeActivations(plain, a.data(), cols, qa.data(), cols, n, cols, 1);
        runtime::fakeQuantizeActivations(plain, b.data(), cols, qb.data(), cols, n, cols, 1);
        QVERIFY(qa[0] != qb[0] || qa[1] != qb[1]); // without the outlier group they widen
    }

    void countZeroIsPlainW4A4PerToken() {
        // Property: outliers.count 0 with one activation group per row is plain W4A4 per-token:
        // the kernel output bitwise, and the whole compressed model's logits.
        const int64_t n = 6, cols = 36;
        const std::vector<float> x = randomRows(n, cols, 3, {5}, 40.0f);
        ActQuantSpec plain;
        plain.bits = 4;
        ActQuantSpec atom = plain;
        atom.outlierBits = 8; // no outlier channels
        std::vector<float> qp(x.size()), qa(x.size());
        runtime::fakeQuantizeActivations(plain, x.data(), cols, qp.data(), cols, n, cols, 1);
        runtime::fakeQuantizeActivations(atom, x.data(), cols, qa.data(), cols, n, cols, 1);
        QCOMPARE(qa, qp);
        atom.groupSize = cols; // one group of the whole row
        runtime::fakeQuantizeActivations(atom, x.data(), cols, qa.data(), cols, n, cols, 1);
        QCOMPARE(qa, qp);

        DemoCalibrated d(2, 32);
        const Model& mm = *d.m;
        NullProgress np;
        const std::string w = "'weight': {'bits': 4, 'symmetric': false, 'granularity': "
                              "'group', 'group_size': 16}, 'activation': {'bits': 4}";
        const Recipe ra =
            lcwtest::recipeFromQuoted("{'lcw_recipe': 1, 'rules': [{'targets': ['*'], " + w +
                                      ", 'outliers': {'count': 0, 'bits': 8}}]}");
        const Recipe rp = lcwtest::recipeFromQuoted(
            "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], " + w + "}]}");
        const CompressResult a = d.compress(ra);
        const CompressResult p = compress::compress(mm, rp, np);
        QVERIFY(a.model && p.model);
        QCOMPARE(a.model->totalSize().bits, p.model->totalSize().bits);
        const std::vector<float> la = logitsOf(*a.model), lp = logitsOf(*p.model);
        QVERIFY(!la.empty());
        QCOMPARE(la, lp);
    }

    void demoLinearMatchesDoubleReference() {
        // An Atom-compressed demo model (RTN weights): the chosen outlier channels are the top
        // `count` of the calibrated abs-max, the same for the weight columns and the runtime's
        // activations; the stored weights equal the reference reorder + mixed-precision group
        // quantisation; the runtime's product on random inputs equals the double reference.
        DemoCalibrated d(4, 64);
        const auto& m = d.m;
        NullProgress& np = d.np;
        const CompressOptions& co = d.co;
        const int count = 4, group = 16;
        const CompressResult res = d.compress(atomRecipe("rtn", count, group));
        QVERIFY(res.model);
        const RuntimeQuant* rq = res.model->runtimeQuant();
        QVERIFY(rq);
        int checked = 0;
        for (const char* name : {"layers.0.attn.q", "layers.1.mlp.down", "layers.3.attn.o"}) {
            const TensorView& bt = m->get(name);
            const int64_t rows = bt.rows(), cols = bt.cols();
            const ActQuantSpec* spec = rq->activation(name);
            QVERIFY(spec);
            const std::map<std::string, std::vector<float>> am =
                calibrateInputAbsMax(*m, {name}, co.activationCalibration, np);
            const std::vector<double> score(am.at(name).begin(), am.at(name).end());
            const std::vector<int32_t> outl = refTopChannels(score, count);
            QCOMPARE(spec->outlierChannels, outl);
            QCOMPARE(spec->groupSize, int64_t(group));
            QCOMPARE(spec->outlierBits, 8);
            const CompressedTensor* c = res.model->compressed(name);
            QVERIFY(c && c->quantized);
            QCOMPARE(c->packed.outlierCols, outl); // the same set on the weight side
            QCOMPARE(int64_t(c->packed.outlierCodes.size()), rows * count);
            QVERIFY(c->packed.outlierValues.empty());
            QCOMPARE(int64_t(c->packed.colOrder.size()), cols);
            // weights
            const std::vector<float> W = tensorFloats(bt);
            const std::vector<double> Wref = refWeights(W, rows, cols, outl, group, 4);
            const std::vector<float> Wq = c->values();
            for (size_t i = 0; i < Wq.size(); ++i)
                QVERIFY2(std::fabs(double(Wq[i]) - Wref[i]) <= 1e-6 * (1 + std::fabs(Wref[i])),
                         qPrintable(QString("%1 weight %2: %3 vs %4")
                                        .arg(name)
                                        .arg(i)
                                        .arg(Wq[i])
                                        .arg(Wref[i])));
            // the runtime's linear: its activation quantisation, then the product with the
            // weights as the overlay serves them
            const int64_t n = 5;
            std::vector<float> x = randomRows(n, cols, 11, outl, 20.0f);
            std::vector<float> xq(x.size()), y(size_t(n * rows));
            runtime::fakeQuantizeActivations(*spec, x.data(), cols, xq.data(), cols, n, cols, 1);
            QCOMPARE(res.model->packedLinear(name), nullptr); // served as floats
            const TensorView* served = res.model->find(name);
            QVERIFY(served);
            kernels::linear(*served, xq.data(), cols, n, y.data(), rows, nullptr, 1, true);
            const std::vector<double> xr = refActivations(x, n, cols, outl, group, 4);
            for (int64_t t = 0; t < n; ++t)
                for (int64_t o = 0; o < rows; ++o) {
                    double ref = 0, mag = 0;
                    for (int64_t k = 0; k < cols; ++k) {
                        ref += xr[size_t(t * cols + k)] * Wref[size_t(o * cols + k)];
                        mag += std::fabs(xr[size_t(t * cols + k)] * Wref[size_t(o * cols + k)]);
                    }
                    QVERIFY(std::fabs(double(y[size_t(t * rows + o)]) - ref) <= 1e-5 * (1 + mag));
                }
            ++checked;
        }
        QCOMPARE(checked, 3);
    }

    void sizesExactAndOverlayRoundTrips() {
        DemoCalibrated d(2, 64);
        const auto& m = d.m;
        for (const char* method : {"rtn", "gptq"}) {
            const Recipe r = lcwtest::recipeFromQuoted(atomRecipe(method, 4, 16));
            const CompressResult res = d.compress(r);
            QVERIFY(res.model);
            PlanOptions po;
            po.hasCalibration = true;
            const Plan plan = planRecipe(r, *m, po);
            const SizeEstimate est = estimatePlan(plan, *m);
            QCOMPARE(est.compressed.bits, res.model->compressedSize().bits);
            QCOMPARE(est.total.bits, res.model->totalSize().bits);
            for (const auto& l : res.layers) {
                const CompressedTensor* c = res.model->compressed(l.name);
                QVERIFY(c && c->quantized);
                QCOMPARE(l.storageBits, c->storageBits());
                QCOMPARE(est.tensors.at(l.name).bits, c->storageBits());
                // codes + scales/zeros of the int4 groups, 8 bits per outlier weight, an f16
                // scale per row, the column indices and the column order
                const PackedTensor& p = c->packed;
                QCOMPARE(p.storageBits(), packedStorageBits(p.rows, p.cols, p.settings) +
                                              8ull * p.rows * 4 + 16ull * p.rows + 32ull * 4 +
                                              32ull * p.cols);
            }
            const std::string dir = lcwtest::tempDir("atom") + "/" + method;
            res.model->save(dir);
            auto back = CompressedModel::load(dir, *m);
            QCOMPARE(back->compressedSize().bits, res.model->compressedSize().bits);
            QVERIFY(lcwtest::sameFiniteLogits(*res.model, *back));
            QVERIFY(back->runtimeQuant()->activations == res.model->runtimeQuant()->activations);
        }
    }

    void sumSqSelectsAtomsHessianChannels() {
        // "select": "sum_sq" ranks the outlier channels by Σ x² over the activation calibration
        // (Atom's default act_sort_metric "hessian": diag(XᵀX)), for the activations and the
        // weight columns alike. Reference: the calibration windows (consecutive windows of
        // seqLen tokens of the calibration text, as many as samples) run through the model with
        // an observer written here.
        DemoCalibrated d(4, 64);
        const auto& m = d.m;
        const int count = 4, group = 16;
        const CompressResult res = d.compress(atomRecipe("gptq", count, group, "sum_sq"));
        QVERIFY(res.model);
        std::ifstream in(stats::builtinCalibrationPath(), std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        const std::vector<int32_t> ids = m->tokenizer().encode(ss.str(), true);
        const int64_t L = std::min<int64_t>(d.co.activationCalibration.seqLen, m->spec().maxSeq);
        const int64_t nSeq =
            std::min<int64_t>(d.co.activationCalibration.samples, int64_t(ids.size()) / L);
        QVERIFY(nSeq >= 1);
        SessionOptions so;
        so.contextLength = L;
        Session session(*m, so);
        SumSqObserver obs;
        session.addObserver(&obs);
        std::vector<float> logits;
        for (int64_t i = 0; i < nSeq; ++i) {
            session.reset();
            session.forward(std::span<const int32_t>(ids.data() + i * L, size_t(L)), logits);
        }
        int differ = 0;
        for (const char* name : {"layers.0.attn.q", "layers.1.mlp.down", "layers.3.attn.o"}) {
            const std::vector<int32_t> want = refTopChannels(obs.sum.at(name), count);
            QCOMPARE(res.model->runtimeQuant()->activation(name)->outlierChannels, want);
            QCOMPARE(res.model->compressed(name)->packed.outlierCols, want);
            const auto am = calibrateInputAbsMax(*m, {name}, d.co.activationCalibration, d.np);
            const std::vector<double> a(am.at(name).begin(), am.at(name).end());
            differ += refTopChannels(a, count) != want;
        }
        QVERIFY2(differ > 0, "sum_sq picked the abs-max channels everywhere: nothing tested");
        // The key: sum_sq or absmax, with count only.
        auto field = [](const std::string& o) -> std::string {
            try {
                lcwtest::recipeFromQuoted("{'lcw_recipe': 1, 'rules': [{'targets': ['*'], "
                                          "'outliers': " +
                                          o + "}]}");
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field("{'count': 4, 'bits': 8, 'select': 'l2'}"), std::string("outliers.select"));
        QCOMPARE(field("{'threshold': 6, 'select': 'sum_sq'}"), std::string("outliers.select"));
        QCOMPARE(field("{'count': 4, 'select': 'absmax'}"), std::string());
    }

    void gptqOutlierColumnsAbsorbErrorAsAtom() {
        // Atom's GPTQ (efeslab/Atom gptq.py, n_out outlier columns at the end): only the normal
        // columns are quantised and give the grids; the outlier columns receive every lazy
        // update and are then rounded to 8 bits from their updated values. Against the double
        // port of the reference with `keep`: same codes/grids, same updated outlier columns.
        const int64_t rows = 8, keep = 4;
        int cases = 0;
        for (const int64_t cols : {int64_t(52), int64_t(44)}) // groups end at n / straddle it
            for (const int64_t g : {int64_t(16), int64_t(-1)})
                for (const int64_t bs : {int64_t(8), int64_t(128)}) {
                    const std::vector<float> w = gptqref::randomWeights(rows * cols, 5);
                    const std::vector<double> H = gptqref::randomGram(cols, 11);
                    const Eigen::MatrixXd Hm =
                        Eigen::Map<const Eigen::MatrixXd>(H.data(), cols, cols);
                    WeightSettings s;
                    s.bits = 4;
                    s.symmetric = false;
                    s.method = WeightMethod::Gptq;
                    s.granularity = g > 0 ? Granularity::Group : Granularity::Channel;
                    if (g > 0) s.groupSize = g;
                    GptqOptions o;
                    o.blockSize = bs;
                    o.keepTrailing = keep;
                    const GptqResult res = gptqQuantize(w.data(), rows, cols, H.data(), s, o, "t");
                    QCOMPARE(int64_t(res.kept.size()), rows * keep);
                    const std::vector<float> dq = dequantize(res.packed, "t");
                    Eigen::MatrixXd kept;
                    const gptqref::RefOut ref = gptqref::fasterquant(
                        w, rows, cols, Hm, 4, false, bs, 0.01, g, false, false, {}, keep, &kept);
                    int64_t diff = 0;
                    double moved = 0;
                    for (int64_t r = 0; r < rows; ++r) {
                        for (int64_t j = 0; j < cols - keep; ++j) {
                            const size_t i = size_t(r * cols + j);
                            const float v =
                                f16ToF32(ref.scale[i]) * (float(ref.code[i]) - ref.zero[i]);
                            diff += dq[i] != v;
                        }
                        for (int64_t c = 0; c < keep; ++c) {
                            const double a = res.kept[size_t(r * keep + c)], b = kept(r, c);
                            QVERIFY2(std::fabs(a - b) <= 1e-7 + 1e-6 * std::fabs(b),
                                     qPrintable(QString("%1 vs %2").arg(a).arg(b)));
                            moved = std::max(
                                moved,
                                std::fabs(b - double(w[size_t(r * cols + cols - keep + c)])));
                        }
                    }
                    QCOMPARE(diff, int64_t(0));
                    QVERIFY(moved > 1e-3); // the updates did reach the outlier columns
                    ++cases;
                }
        QCOMPARE(cases, 8);
        {
            // static_groups with a group of kept columns only: every grid is defined (the kept
            // group's from zeros), the normal columns' codes are those of the static grids.
            const int64_t cols = 52;
            const std::vector<float> w = gptqref::randomWeights(rows * cols, 8);
            const std::vector<double> H = gptqref::randomGram(cols, 9);
            WeightSettings s;
            s.bits = 4, s.symmetric = false, s.method = WeightMethod::Gptq;
            s.granularity = Granularity::Group, s.groupSize = 16;
            GptqOptions o;
            o.staticGroups = true;
            o.keepTrailing = keep;
            const GptqResult res = gptqQuantize(w.data(), rows, cols, H.data(), s, o, "t");
            for (const float v : dequantize(res.packed, "t")) QVERIFY(std::isfinite(v));
            for (const uint16_t sc : res.packed.scales) QVERIFY(f16ToF32(sc) > 0);
        }
        // Kept columns are for int grids: SliM and GGUF refuse them; at least one column is
        // quantised.
        const std::vector<float> w = gptqref::randomWeights(4 * 32, 1);
        const std::vector<double> H = gptqref::randomGram(32, 2);
        WeightSettings s;
        s.bits = 4, s.method = WeightMethod::Gptq, s.granularity = Granularity::Channel;
        GptqOptions o;
        o.keepTrailing = 32;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, gptqQuantize(w.data(), 4, 32, H.data(), s, o, "t"));
        o.keepTrailing = 2;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, gptqQuantizeGguf(w.data(), 4, 32, H.data(),
                                                                 DType::Q8_0, nullptr, o, "t"));
    }

    void weightClipRatioAsAtom() {
        // Atom's w_clip_ratio (the paper's run: 0.85, symmetric weights). GPTQ: the reference
        // Quantizer's step shrinks by the ratio (efeslab/Atom gptq.py find_params) — against the
        // double port with clipRatio, sym and asym, groups and channels. RTN: min and max both
        // shrink (Atom's quant.py quantize_tensor), written out here on lcw's f16 scales.
        const int64_t rows = 8, cols = 48;
        const double r = 0.85;
        int cases = 0;
        for (const bool sym : {true, false})
            for (const int64_t g : {int64_t(16), int64_t(-1)}) {
                const std::vector<float> w = gptqref::randomWeights(rows * cols, 21);
                const std::vector<double> H = gptqref::randomGram(cols, 22);
                const Eigen::MatrixXd Hm = Eigen::Map<const Eigen::MatrixXd>(H.data(), cols, cols);
                WeightSettings s;
                s.bits = 4, s.symmetric = sym, s.method = WeightMethod::Gptq, s.clipRatio = r;
                s.granularity = g > 0 ? Granularity::Group : Granularity::Channel;
                if (g > 0) s.groupSize = g;
                const GptqResult res = gptqQuantize(w.data(), rows, cols, H.data(), s, {}, "t");
                const std::vector<float> dq = dequantize(res.packed, "t");
                const gptqref::RefOut ref = gptqref::fasterquant(
                    w, rows, cols, Hm, 4, sym, 128, 0.01, g, false, false, {}, 0, nullptr, -1, r);
                int64_t diff = 0, clamped = 0;
                for (size_t i = 0; i < dq.size(); ++i) {
                    QVERIFY(ref.zero[i] <= 15); // the unclamped reference zero stays storable
                    const float v = f16ToF32(ref.scale[i]) * (float(ref.code[i]) - ref.zero[i]);
                    diff += dq[i] != v;
                    clamped += ref.code[i] == 0 || ref.code[i] == 15;
                }
                QCOMPARE(diff, int64_t(0));
                QVERIFY(clamped > 0); // the ratio did clip some weights
                ++cases;
            }
        QCOMPARE(cases, 4);

        // RTN, asymmetric g16: scale = (r·max − r·min) / 15 (range including 0, lcw's), zero
        // round(−r·min / scale), values beyond the shrunk range clamped.
        const std::vector<float> w = gptqref::randomWeights(rows * cols, 23);
        WeightSettings s;
        s.bits = 4, s.symmetric = false, s.granularity = Granularity::Group, s.groupSize = 16;
        s.clipRatio = r;
        const std::vector<float> got = dequantize(quantize(w.data(), rows, cols, s, "t"), "t");
        s.clipRatio = 1.0;
        const std::vector<float> full = dequantize(quantize(w.data(), rows, cols, s, "t"), "t");
        double errClip = 0, errFull = 0;
        for (int64_t row = 0; row < rows; ++row)
            for (int64_t c0 = 0; c0 < cols; c0 += 16) {
                float mn = 0, mx = 0;
                for (int64_t k = c0; k < c0 + 16; ++k)
                    mn = std::min(mn, w[size_t(row * cols + k)]),
                    mx = std::max(mx, w[size_t(row * cols + k)]);
                mn *= float(r), mx *= float(r);
                const float exact = (mx - mn) / 15.0f;
                uint16_t h = f32ToF16(exact);
                if (f16ToF32(h) < exact) ++h;
                const float sc = f16ToF32(h);
                const float z = std::clamp(std::nearbyint(-mn / sc), 0.0f, 15.0f);
                for (int64_t k = c0; k < c0 + 16; ++k) {
                    const size_t i = size_t(row * cols + k);
                    const float q = std::clamp(std::nearbyint(w[i] / sc) + z, 0.0f, 15.0f);
                    QCOMPARE(got[i], sc * (q - z));
                    errClip += std::fabs(double(got[i]) - w[i]);
                    errFull += std::fabs(double(full[i]) - w[i]);
                }
            }
        QVERIFY(errClip != errFull);

        // The recipe key: rtn and gptq only; the description names it.
        const std::unique_ptr<Model> m = Model::load(lcwtest::demoModelPath());
        PlanOptions po;
        po.hasCalibration = true;
        const auto planOf = [&](const std::string& wj) {
            return planRecipe(
                lcwtest::recipeFromQuoted(
                    "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'weight': " + wj + "}]}"),
                *m, po);
        };
        const Plan p = planOf("{'bits': 4, 'symmetric': false, 'clip_ratio': 0.85}");
        QVERIFY(!p.layers.empty());
        QCOMPARE(p.layers[0].weight.clipRatio, 0.85);
        QVERIFY(p.layers[0].weight.describe().find("clip 0.85") != std::string::npos);
        const auto field = [&](const std::string& wj) -> std::string {
            try {
                planOf(wj);
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field("{'clip_ratio': 0}"), std::string("weight.clip_ratio"));
        QCOMPARE(field("{'clip_ratio': 1.2}"), std::string("weight.clip_ratio"));
        QCOMPARE(field("{'method': 'q4_0', 'clip_ratio': 0.9}"), std::string("weight.clip_ratio"));
        QCOMPARE(field("{'method': 'squeezellm', 'clip_ratio': 0.9}"),
                 std::string("weight.clip_ratio"));
        QCOMPARE(field("{'method': 'gptq', 'clip_ratio': 0.9}"), std::string());
        // The overlay keeps the ratio (the layer's description) and loads the same weights.
        DemoCalibrated d(2, 32);
        const CompressResult res = d.compress(
            "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'weight': {'bits': 4, 'symmetric': "
            "true, 'group_size': 32, 'method': 'gptq', 'clip_ratio': 0.85}}]}");
        QVERIFY(res.model && !res.layers.empty());
        const std::string dir = lcwtest::tempDir("atom-clip");
        res.model->save(dir);
        const auto back = CompressedModel::load(dir, *d.m);
        const std::string name = res.layers[0].name;
        QCOMPARE(back->compressed(name)->packed.settings.clipRatio, 0.85);
        QVERIFY(lcwtest::sameFiniteLogits(*res.model, *back));
        QCOMPARE(field("{'method': 'awq', 'clip_ratio': 0.9}"), std::string("weight.clip_ratio"));
    }

    void gptqIsNotWorseOnCalibrationOutputs() {
        // GPTQ on the reordered matrix: its output error on the calibration inputs is not above
        // RTN's for the same Atom layout (GPTQ's objective), layer by layer on average.
        DemoCalibrated d(4, 64);
        const CompressResult a = d.compress(atomRecipe("rtn", 4, 16));
        const CompressResult b = d.compress(atomRecipe("gptq", 4, 16));
        QVERIFY(a.model && b.model);
        double ea = 0, eb = 0;
        for (size_t i = 0; i < a.layers.size(); ++i) {
            QCOMPARE(a.layers[i].name, b.layers[i].name);
            if (a.layers[i].name.rfind("layers.0.", 0) != 0) continue; // same inputs: block 0
            ea += a.layers[i].outputRelError;
            eb += b.layers[i].outputRelError;
        }
        QVERIFY2(eb < ea, qPrintable(QString("gptq %1, rtn %2").arg(eb).arg(ea)));
        // GPTQ's updates reach the 8-bit outlier columns (Atom), which RTN rounds unchanged.
        int64_t changed = 0, total = 0;
        for (const auto& l : b.layers) {
            const PackedTensor& pa = a.model->compressed(l.name)->packed;
            const PackedTensor& pb = b.model->compressed(l.name)->packed;
            QVERIFY(pa.outlierCols == pb.outlierCols && !pb.outlierCodes.empty());
            QVERIFY(l.details.value("atom_outliers_absorb_gptq_error", false));
            for (size_t i = 0; i < pb.outlierCodes.size(); ++i)
                changed += pa.outlierCodes[i] != pb.outlierCodes[i];
            total += int64_t(pb.outlierCodes.size());
        }
        QVERIFY2(changed > total / 4, qPrintable(QString("%1 of %2").arg(changed).arg(total)));
    }

    void recipeErrorsNameTheField() {
        auto field = [](const std::string& rule) -> std::string {
            try {
                lcwtest::recipeFromQuoted("{'lcw_recipe': 1, 'rules': [" + rule + "]}");
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field("{'targets': ['*'], 'outliers': {'count': 4, 'bits': 4}}"),
                 std::string("outliers.bits"));
        QCOMPARE(field("{'targets': ['*'], 'outliers': {'threshold': 6, 'bits': 8}}"),
                 std::string("outliers.bits"));
        QCOMPARE(field("{'targets': ['*'], 'outliers': {'threshold': 6, 'count': 4}}"),
                 std::string("outliers.count"));
        QCOMPARE(field("{'targets': ['*'], 'outliers': {'count': -1}}"),
                 std::string("outliers.count"));
        QCOMPARE(field("{'targets': ['*'], 'activation': {'bits': 4, 'group_size': 0}}"),
                 std::string("activation.group_size"));
        QCOMPARE(field("{'targets': ['*'], 'activation': {'bits': 4, 'mode': "
                       "'static_per_tensor', 'group_size': 16}}"),
                 std::string("activation.group_size"));
        auto m = Model::load(lcwtest::demoModelPath());
        auto planField = [&](const std::string& rule, bool calib) -> std::string {
            PlanOptions po;
            po.hasCalibration = calib;
            try {
                planRecipe(lcwtest::recipeFromQuoted("{'lcw_recipe': 1, 'rules': [" + rule + "]}"),
                           *m, po);
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        const std::string w4 = "'weight': {'bits': 4, 'granularity': 'group', 'group_size': 16}";
        QCOMPARE(planField("{'targets': ['*'], " + w4 + ", 'outliers': {'count': 64}}", true),
                 std::string("outliers.count"));
        QCOMPARE(planField("{'targets': ['*'], " + w4 + ", 'outliers': {'count': 4}}", false),
                 std::string("outliers.count"));
        QCOMPARE(planField("{'targets': ['*'], 'activation': {'bits': 4, 'group_size': 65}}", true),
                 std::string("activation.group_size"));
        QCOMPARE(planField("{'targets': ['*'], 'weight': {'bits': 4, 'method': 'awq'}, "
                           "'outliers': {'count': 4, 'bits': 8}}",
                           true),
                 std::string("outliers.bits"));
        QCOMPARE(planField("{'targets': ['layers.0.attn.q'], 'weight': {'method': 'q4_0'}, "
                           "'outliers': {'count': 4, 'bits': 8}}",
                           true),
                 std::string("outliers.bits"));
        // fits: activation-only counted outliers need no calibration set
        QCOMPARE(planField("{'targets': ['*'], 'activation': {'bits': 4, 'group_size': 16}, "
                           "'outliers': {'count': 4, 'bits': 8}}",
                           false),
                 std::string(""));
        // the presets hold the paper's sizes: 128 channels do not fit the 64-wide demo model
        QVERIFY(findPresetIfAny("W4A4-KV4-Atom") && findPresetIfAny("W4A4-KV4-Atom-GPTQ"));
        PlanOptions po;
        po.hasCalibration = true;
        QVERIFY_THROWS_EXCEPTION(RecipeError,
                                 planRecipe(findPreset("W4A4-KV4-Atom").recipe, *m, po));
    }

    void badOverlayArraysAreErrors() {
        PackedTensor p;
        WeightSettings s;
        s.bits = 4;
        s.granularity = Granularity::Channel;
        const std::vector<float> w = randomRows(3, 8, 5);
        p = quantize(w.data(), 3, 8, s, "t");
        quantizeOutlierColumns8(p, w.data(), 3, 8, {1, 6}, "t");
        const std::vector<float> v = dequantize(p, "t");
        for (int64_t r = 0; r < 3; ++r) {
            const double amax = std::max(std::fabs(w[r * 8 + 1]), std::fabs(w[r * 8 + 6]));
            for (int c : {1, 6}) QVERIFY(std::fabs(v[r * 8 + c] - w[r * 8 + c]) <= amax / 127);
        }
        PackedTensor bad = p;
        bad.outlierCodes.pop_back();
        QVERIFY_THROWS_EXCEPTION(Error, dequantize(bad, "t"));
        bad = p;
        bad.outlierScales.push_back(0);
        QVERIFY_THROWS_EXCEPTION(Error, dequantize(bad, "t"));
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 quantizeOutlierColumns8(p, w.data(), 3, 8, {6, 1}, "t"));
        QCOMPARE(outlierColumnBits(3, 2, 8), uint64_t(8 * 6 + 16 * 3 + 64));
    }
};

QTEST_GUILESS_MAIN(TestAtom)
#include "test_atom.moc"
