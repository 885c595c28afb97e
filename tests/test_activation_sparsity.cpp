// Activation sparsity (issue #20): Q-Sparse top-K of linear inputs (recipe section
// activation_sparsity, runtime in core/runtime/activation_sparsity.cpp), the MAC counts of the
// products, and the natural sparsity statistics of the MLP intermediates
// (core/stats/activation_sparsity_stats.cpp).
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/perplexity.h"
#include "core/model/model.h"
#include "core/runtime/activation_sparsity.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "core/stats/activation_sparsity_stats.h"
#include "core/stats/activation_stats.h"
#include "core/stats/stats_engine.h"
#include "core/stats/stats_store.h"
#include "core/tokenizer/tokenizer.h"
#include "core_test_util.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using lcwtest::J;

Recipe parse(const std::string& text) {
    return lcwtest::recipeFromQuoted(text);
}

std::unique_ptr<CompressedModel> applied(const Model& m, const Recipe& r) {
    NullProgress p;
    return std::move(compress::compress(m, r, p).model);
}

void expectRecipeError(const std::function<void()>& fn, int rule, const std::string& field) {
    try {
        fn();
    } catch (const RecipeError& e) {
        QVERIFY2(e.rule() == rule && e.field() == field, e.what());
        return;
    }
    QFAIL("no RecipeError");
}

std::vector<int32_t> demoTokens(const Model& m, size_t n) {
    auto ids = m.tokenizer().encode(readTextFile(lcwtest::demoTextPath()), true);
    ids.resize(n);
    return ids;
}

std::vector<float> allLogits(const WeightSource& w, const std::vector<int32_t>& ids,
                             Session::MacCounts* macs = nullptr) {
    Session s(w);
    std::vector<float> logits;
    s.forward(ids, logits, true);
    if (macs) *macs = s.macCounts();
    return logits;
}

/// Kept count by its definition, counted up: the smallest k >= 1 with k >= topk·dim (a float
/// fraction a hair above the intended one counts as the intended one).
int64_t referenceKept(double topk, int64_t dim) {
    int64_t k = 1;
    while (k < dim && double(k) < topk * double(dim) - 1e-3) ++k;
    return k;
}

/// Top-K by a full sort in double: largest |x| first, ties by lower channel.
std::vector<float> referenceTopK(const std::vector<float>& row, double topk) {
    const int64_t dim = int64_t(row.size()), keep = referenceKept(topk, dim);
    std::vector<int64_t> order(static_cast<size_t>(dim));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        const double fa = std::fabs(double(row[size_t(a)])), fb = std::fabs(double(row[size_t(b)]));
        return fa != fb ? fa > fb : a < b;
    });
    std::vector<float> out(size_t(dim), 0.0f);
    for (int64_t i = 0; i < keep; ++i)
        out[size_t(order[size_t(i)])] = row[size_t(order[size_t(i)])];
    return out;
}

/// Records the input of layers.4.mlp.down and the residual after block 4, and runs a forward.
struct Capture final : Observer {
    std::vector<float> x, res;
    int64_t xDim = 0;
    void onLinearInput(int layer, LinearRole role, const std::string&, const float* in, int64_t n,
                       int64_t d) override {
        if (layer != 4 || role != LinearRole::Down) return;
        xDim = d;
        x.insert(x.end(), in, in + n * d);
    }
    void onResidual(int layer, const float* h, int64_t n, int64_t d) override {
        if (layer == 4) res.insert(res.end(), h, h + n * d);
    }
    std::vector<float> run(const WeightSource& w, const std::vector<int32_t>& ids,
                           Session::MacCounts* macs) {
        Session s(w);
        s.addObserver(this);
        std::vector<float> logits;
        s.forward(ids, logits, true);
        *macs = s.macCounts();
        return logits;
    }
};

std::vector<float> weightOf(const WeightSource& w, const std::string& name) {
    const TensorView& t = w.get(name);
    std::vector<float> v(size_t(t.numel()));
    kernels::dequantizeRows(t, 0, t.rows(), v.data());
    return v;
}

} // namespace

class TestActivationSparsity : public QObject {
    Q_OBJECT
private slots:
    void topKMatchesAFullSortInDouble() {
        std::mt19937 rng(7);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (int64_t dim : {1, 5, 64, 172, 301}) {
            const int64_t n = 9, ldx = dim + 3;
            std::vector<float> x(size_t(n * ldx), 123.0f);
            for (int64_t t = 0; t < n; ++t)
                for (int64_t c = 0; c < dim; ++c) x[size_t(t * ldx + c)] = nd(rng);
            if (dim >= 5) { // ties across the cut: equal magnitudes, both signs
                x[size_t(0 * ldx + 1)] = 0.5f, x[size_t(0 * ldx + 2)] = -0.5f;
                for (int64_t c = 0; c < dim; ++c) x[size_t(1 * ldx + c)] = c % 2 ? 1.0f : -1.0f;
            }
            for (float topk : {0.01f, 0.1f, 0.3f, 0.5f, 0.7f, 0.999f, 1.0f}) {
                std::vector<float> out(size_t(n * dim), -7.0f);
                runtime::topKSparsify(topk, x.data(), ldx, out.data(), dim, n, dim, 2);
                QCOMPARE(runtime::topKCount(topk, dim), referenceKept(topk, dim));
                for (int64_t t = 0; t < n; ++t) {
                    std::vector<float> row(x.begin() + t * ldx, x.begin() + t * ldx + dim);
                    const auto ref = referenceTopK(row, topk);
                    for (int64_t c = 0; c < dim; ++c)
                        QCOMPARE(out[size_t(t * dim + c)], ref[size_t(c)]);
                }
                // in place gives the same
                std::vector<float> inPlace = x;
                runtime::topKSparsify(topk, inPlace.data(), ldx, inPlace.data(), ldx, n, dim, 1);
                for (int64_t t = 0; t < n; ++t)
                    for (int64_t c = 0; c < dim; ++c)
                        QCOMPARE(inPlace[size_t(t * ldx + c)], out[size_t(t * dim + c)]);
            }
        }
        QCOMPARE(runtime::topKCount(0.3f, 10), int64_t(3)); // 0.3f is 0.30000001
        QCOMPARE(runtime::topKCount(0.7f, 64), int64_t(45));
        QCOMPARE(runtime::topKCount(1e-6f, 64), int64_t(1));
    }

    void keepingEverythingGivesTheDenseLogits() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoTokens(*m, 48);
        Session::MacCounts dense;
        const auto base = allLogits(*m, ids, &dense);
        // topk 1 in a recipe is no sparsity at all: nothing at run time
        auto none = applied(*m, parse("{'lcw_recipe':1,'rules':[{'targets':['*'],"
                                      "'activation_sparsity':{'topk':1.0}}]}"));
        QVERIFY(none->runtimeQuant() == nullptr);
        QCOMPARE(allLogits(*none, ids), base);
        // topk 0.999 keeps all 64 (and 172) inputs but runs the top-K path of every linear
        auto all = applied(*m, parse("{'lcw_recipe':1,'rules':[{'targets':['*'],"
                                     "'activation_sparsity':{'topk':0.999}}]}"));
        QVERIFY(all->runtimeQuant() != nullptr);
        QCOMPARE(int(all->runtimeQuant()->activations.size()), 5 * 7);
        QVERIFY(all->runtimeQuant()->activation("layers.2.mlp.down")->sparse());
        Session::MacCounts macs;
        QCOMPARE(allLogits(*all, ids, &macs), base);
        QCOMPARE(macs.dense, dense.dense);
        QCOMPARE(macs.zeroInput, dense.zeroInput);
    }

    void downProjectionTopKMatchesAnIndependentProduct() {
        // top-K only on layers.4.mlp.down: its input x is the same as in the dense run (nothing
        // before it changed), so the residual after block 4 differs from the dense one by
        // W_down · (topK(x) − x) exactly; observers see x before the runtime sparsifies it.
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoTokens(*m, 20);
        const double topk = 0.3;
        auto cm = applied(*m, parse("{'lcw_recipe':1,'rules':[{'targets':['layers.4.mlp.down'],"
                                    "'activation_sparsity':{'topk':0.3}}]}"));
        QVERIFY(cm && cm->runtimeQuant());
        Capture dense, sparse;
        Session::MacCounts dm, sm;
        const auto ld = dense.run(*m, ids, &dm);
        const auto ls = sparse.run(*cm, ids, &sm);
        QVERIFY(ld != ls);
        QCOMPARE(sparse.x, dense.x);
        const int64_t n = int64_t(ids.size()), dim = m->spec().dim, hid = dense.xDim;
        const std::vector<float> W = weightOf(*m, "layers.4.mlp.down"); // [dim, hid]
        double worst = 0, scale = 0;
        for (int64_t t = 0; t < n; ++t) {
            std::vector<float> row(dense.x.begin() + t * hid, dense.x.begin() + (t + 1) * hid);
            const auto xs = referenceTopK(row, topk);
            for (int64_t o = 0; o < dim; ++o) {
                double dy = 0;
                for (int64_t c = 0; c < hid; ++c)
                    dy += double(W[size_t(o * hid + c)]) *
                          (double(xs[size_t(c)]) - double(row[size_t(c)]));
                const size_t i = size_t(t * dim + o);
                const double got = double(sparse.res[i]) - double(dense.res[i]);
                worst = std::max(worst, std::fabs(got - dy));
                scale = std::max(scale, std::fabs(double(dense.res[i])));
            }
        }
        qInfo("down top-K residual change: max |diff| %.3g at max |residual| %.3g", worst, scale);
        QVERIFY(worst <= 1e-5 * std::max(1.0, scale));
        // the skipped MACs: (hid - K) input columns of each of the dim rows, per token
        QCOMPARE(sm.dense, dm.dense);
        QCOMPARE(sm.zeroInput - dm.zeroInput, n * (hid - referenceKept(topk, hid)) * dim);
    }

    void presetsHalveTheBlockMacsAndCombineWithQuantisation() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoTokens(*m, 64);
        Session::MacCounts dense, s50, s70;
        const auto base = allLogits(*m, ids, &dense);
        auto q50 = applied(*m, findPreset("QSparse-50").recipe);
        auto q70 = applied(*m, findPreset("QSparse-70").recipe);
        const auto l50 = allLogits(*q50, ids, &s50);
        const auto l70 = allLogits(*q70, ids, &s70);
        QVERIFY(l50 != base && l70 != base);
        // every block linear keeps K of its inputs; lm_head stays dense
        const ModelSpec& sp = m->spec();
        const int64_t n = int64_t(ids.size()), d = sp.dim, h = sp.hidden;
        const int64_t qd = sp.nHeads * sp.headDim, kvd = sp.nKvHeads * sp.headDim;
        auto blockSkipped = [&](double topk) {
            const int64_t kd = referenceKept(topk, d), kq = referenceKept(topk, qd),
                          kh = referenceKept(topk, h);
            return sp.nLayers * n *
                   ((d - kd) * (qd + 2 * kvd) + (qd - kq) * d + (d - kd) * 2 * h + (h - kh) * d);
        };
        QCOMPARE(s50.dense, dense.dense);
        QCOMPARE(s50.zeroInput - dense.zeroInput, blockSkipped(0.5));
        QCOMPARE(s70.zeroInput - dense.zeroInput, blockSkipped(0.3));
        // with int8 activations too: top-K first, then the quantisation of the sparse row (the
        // absmax is kept, so the kept entries quantise as in the dense row, the rest stay 0)
        auto both = applied(*m, parse("{'lcw_recipe':1,'rules':[{'targets':['*'],"
                                      "'activation':{'bits':8},"
                                      "'activation_sparsity':{'topk':0.5}}]}"));
        const ActQuantSpec* a = both->runtimeQuant()->activation("layers.1.attn.q");
        QVERIFY(a && a->active() && a->sparse());
        Session::MacCounts sb;
        const auto lb = allLogits(*both, ids, &sb);
        QVERIFY(lb != l50);
        QVERIFY(sb.zeroInput - dense.zeroInput >= blockSkipped(0.5));
        // saved and loaded: the same specs, the same logits
        const std::string dir = lcwtest::tempDir("asp-overlay");
        both->save(dir);
        auto back = CompressedModel::load(dir, *m);
        QVERIFY(back->runtimeQuant()->activations == both->runtimeQuant()->activations);
        QCOMPARE(allLogits(*back, ids), lb);
    }

    void vulkanRunsTopKOnTheHostPath() {
        // The resident forward does not run top-K: with it the forward runs on the host path
        // (products may run on the device), with a reason; the logits stay the CPU's.
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoTokens(*m, 32);
        auto q50 = applied(*m, findPreset("QSparse-50").recipe);
        auto run = [&](const WeightSource& w, const char* device, Session::MacCounts* macs,
                       std::string* note, int64_t* forwards) {
            SessionOptions so;
            so.device = device;
            so.exactActivations = true;
            Session s(w, so);
            std::vector<float> logits;
            s.forward(ids, logits, true);
            *macs = s.macCounts();
            if (note) *note = s.residentNote();
            if (forwards) *forwards = s.deviceForwards();
            if (std::string(device) != "cpu" && s.device().id.rfind("vulkan", 0) != 0)
                logits.clear(); // no Vulkan device here
            return logits;
        };
        Session::MacCounts cm, gm, dm;
        std::string note;
        int64_t forwards = -1, denseForwards = -1;
        const auto cpu = run(*q50, "cpu", &cm, nullptr, nullptr);
        const auto gpu = run(*q50, "vulkan", &gm, &note, &forwards);
        if (gpu.empty()) QSKIP("no Vulkan device");
        QCOMPARE(forwards, int64_t(0));
        QVERIFY2(note.find("activation top-K sparsity (layers.0.attn.q)") != std::string::npos,
                 note.c_str());
        double worst = 0;
        for (size_t i = 0; i < cpu.size(); ++i)
            worst = std::max(worst, double(std::fabs(cpu[i] - gpu[i])));
        QVERIFY2(worst <= 1e-3, std::to_string(worst).c_str());
        QCOMPARE(gm.dense, cm.dense);
        QCOMPARE(gm.zeroInput, cm.zeroInput);
        // the dense model runs resident: nothing is counted there
        run(*m, "vulkan", &dm, nullptr, &denseForwards);
        QVERIFY(denseForwards > 0);
        QCOMPARE(dm.dense, int64_t(0));
    }

    void recipeFieldIsValidated() {
        auto m = Model::load(lcwtest::demoModelPath());
        const char* bad[] = {"{'topk':0}", "{'topk':1.5}", "{'topk':-0.1}", "{'topk':'half'}",
                             "{}"};
        for (const char* b : bad)
            expectRecipeError(
                [&] {
                    parse(std::string("{'lcw_recipe':1,'rules':[{'targets':['*'],"
                                      "'activation_sparsity':") +
                          b + "}]}");
                },
                0, "activation_sparsity.topk");
        expectRecipeError(
            [&] {
                parse("{'lcw_recipe':1,'rules':[{'targets':['*'],"
                      "'activation_sparsity':{'topk':0.5,'k':3}}]}");
            },
            0, "activation_sparsity.k");
        expectRecipeError(
            [&] {
                parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'weight':{'bits':8}},"
                      "{'targets':['*'],'activation_sparsity':[0.5]}]}");
            },
            1, "activation_sparsity");
        expectRecipeError(
            [&] {
                planRecipe(parse("{'lcw_recipe':1,'rules':[{'targets':['embed'],"
                                 "'activation_sparsity':{'topk':0.5}}]}"),
                           *m);
            },
            0, "activation_sparsity");
        // per layer by rules: later rules override, null switches off
        const auto r = parse("{'lcw_recipe':1,'rules':["
                             "{'targets':['*'],'activation_sparsity':{'topk':0.5}},"
                             "{'targets':['layers.0.*'],'activation_sparsity':{'topk':0.25}},"
                             "{'targets':['layers.4.*'],'activation_sparsity':null}]}");
        QCOMPARE(Recipe::fromJson(r.toJson()).toJson(), r.toJson());
        const Plan p = planRecipe(r, *m);
        QCOMPARE(int(p.activationSparsity.size()), 4 * 7);
        for (const auto& a : p.activationSparsity) {
            QVERIFY(a.name.rfind("layers.4.", 0) != 0);
            const bool first = a.name.rfind("layers.0.", 0) == 0;
            QCOMPARE(a.topk, first ? 0.25 : 0.5);
            QCOMPARE(a.rule, first ? 1 : 0);
            QCOMPARE(a.kept, referenceKept(a.topk, a.cols));
        }
    }

    void nearZeroCountsMatchTheirDefinition() {
        std::mt19937 rng(3);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        const int64_t n = 50, C = 40;
        std::vector<float> x(size_t(n * C));
        for (auto& v : x) v = nd(rng) * (std::abs(nd(rng)) < 0.5f ? 1e-3f : 1.0f);
        for (int64_t c = 0; c < C; c += 3) x[size_t(7 * C + c)] = 0.0f;
        std::fill(x.begin() + 9 * C, x.begin() + 10 * C, 0.0f); // an all-zero token
        stats::NearZeroCounter nz;
        nz.add(x.data(), 20, C);
        nz.add(x.data() + 20 * C, n - 20, C);
        stats::TensorStats ts;
        nz.put(ts);
        double rel = 0, abs = 0, exact = 0;
        std::vector<double> tok;
        for (int64_t t = 0; t < n; ++t) {
            double mx = 0;
            for (int64_t c = 0; c < C; ++c)
                mx = std::max(mx, std::fabs(double(x[size_t(t * C + c)])));
            double tr = 0;
            for (int64_t c = 0; c < C; ++c) {
                const double a = std::fabs(double(x[size_t(t * C + c)]));
                tr += a <= 1e-2 * mx;
                abs += a <= 1e-3;
                exact += a == 0;
            }
            rel += tr;
            tok.push_back(tr / double(C));
        }
        const double N = double(n * C);
        QCOMPARE(ts.scalars.at("near_zero_rel"), rel / N);
        QCOMPARE(ts.scalars.at("near_zero_abs"), abs / N);
        QCOMPARE(ts.scalars.at("exact_zero"), exact / N);
        QCOMPARE(ts.arrays.at("tok_near_zero_rel"), tok);
        QCOMPARE(tok[9], 1.0);
        std::sort(tok.begin(), tok.end());
        const double pos = 0.5 * double(n - 1);
        const double p50 = tok[size_t(pos)] + (tok[size_t(pos) + 1] - tok[size_t(pos)]) * 0.5;
        QVERIFY(std::fabs(ts.scalars.at("tok_near_zero_rel_p50") - p50) < 1e-12);
    }

    void calibrationReportsMlpSparsityAndTheOracleBound() {
        auto m = Model::load(lcwtest::demoModelPath());
        stats::CalibrationOptions co;
        co.samples = 2;
        co.seqLen = 32;
        std::vector<stats::TensorStats> sites;
        stats::CalibrationInfo info;
        NullProgress p;
        QCOMPARE(stats::runCalibration(*m, co, sites, info, p), Status::Ok);
        const auto rows = stats::mlpSparsityRows(sites);
        QCOMPARE(int(rows.size()), 5);
        const ModelSpec& sp = m->spec();
        for (const auto& r : rows) {
            QVERIFY(r.nearZeroRel >= 0 && r.nearZeroRel <= 1);
            QVERIFY(r.tokP10 <= r.tokP50 && r.tokP50 <= r.tokP90);
            QCOMPARE(r.oracleMlpSaved, r.nearZeroRel);
            // the block's linear MACs: q, k, v, o and the gated MLP
            const double d = double(sp.dim), h = double(sp.hidden);
            const double qd = double(sp.nHeads * sp.headDim),
                         kvd = double(sp.nKvHeads * sp.headDim);
            const double mlp = 3 * d * h, block = mlp + d * (qd + 2 * kvd) + qd * d;
            QVERIFY(std::fabs(r.oracleBlockSaved - r.nearZeroRel * mlp / block) < 1e-12);
        }
        // the site's stats hold the per-token fractions of all 64 tokens
        int withCounts = 0;
        for (const auto& s : sites) {
            const bool down = s.name.size() > 9 && s.name.substr(s.name.size() - 9) == ".mlp.down";
            QCOMPARE(bool(s.scalars.count("near_zero_rel")), down);
            if (!down) continue;
            ++withCounts;
            QCOMPARE(int(s.arrays.at("tok_near_zero_rel").size()), 64);
        }
        QCOMPARE(withCounts, 5);
    }

    void statsFileKeepsTheSparsityAndTheSummaryShowsIt() {
        auto m = Model::load(lcwtest::demoModelPath());
        stats::StatsOptions so;
        so.weights = false;
        so.calibration.samples = 2;
        so.calibration.seqLen = 32;
        const std::string path = lcwtest::tempDir("asp-stats") + "/s.lcwstats";
        stats::StatsReport rep;
        NullProgress p;
        QCOMPARE(stats::computeAndSaveStats(*m, so, path, rep, p), Status::Ok);
        const stats::StatsReport back = stats::StatsStore::load(path);
        const auto a = stats::mlpSparsityRows(rep.activations);
        const auto b = stats::mlpSparsityRows(back.activations);
        QCOMPARE(int(b.size()), int(a.size()));
        for (size_t i = 0; i < a.size(); ++i) {
            QCOMPARE(b[i].nearZeroRel, a[i].nearZeroRel);
            QCOMPARE(b[i].tokP90, a[i].tokP90);
            QCOMPARE(b[i].oracleBlockSaved, a[i].oracleBlockSaved);
        }
        const auto j = stats::layerRanking(back);
        QCOMPARE(int(j["mlp_sparsity"]["layers"].size()), 5);
        QCOMPARE(j["mlp_sparsity"]["layers"][0]["near_zero_rel"].get<double>(), a[0].nearZeroRel);
        const auto c =
            lcwtest::runCli({"stats", QString::fromStdString(lcwtest::demoModelPath()),
                             "--no-weights", "--samples", "2", "--seq-len", "32", "--quiet"});
        QVERIFY2(c.code == 0, c.err.constData());
        QVERIFY(c.out.contains("MLP intermediate sparsity"));
    }

    void cliReportsMacs() {
        const QString model = QString::fromStdString(lcwtest::demoModelPath());
        const QString text = QString::fromStdString(lcwtest::demoTextPath());
        const auto d = lcwtest::runCli(
            {"perplexity", model, "--text", text, "--ctx", "64", "--json", "--quiet"});
        QVERIFY2(d.code == 0, d.err.constData());
        const auto s = lcwtest::runCli({"perplexity", model, "--text", text, "--ctx", "64",
                                        "--preset", "QSparse-50", "--json", "--quiet"});
        QVERIFY2(s.code == 0, s.err.constData());
        const json dj = json::parse(d.out.toStdString()), sj = json::parse(s.out.toStdString());
        QCOMPARE(dj["macs"]["dense"].get<int64_t>(), sj["macs"]["dense"].get<int64_t>());
        const double fd = dj["macs"]["executed_fraction"].get<double>();
        const double fs = sj["macs"]["executed_fraction"].get<double>();
        QVERIFY(fd > 0.99);
        QVERIFY(fs < 0.75 && fs > 0.5); // lm_head stays dense
        QVERIFY(sj["ppl"].get<double>() > dj["ppl"].get<double>());
        const auto c =
            lcwtest::runCli({"compress", model, "--preset", "QSparse-70", "--json", "--quiet"});
        QVERIFY2(c.code == 0, c.err.constData());
        const json cj = json::parse(c.out.toStdString());
        QCOMPARE(int(cj["activation_sparsity"].size()), 35);
        QCOMPARE(cj["activation_sparsity"][0]["topk"].get<double>(), 0.3);
        const auto& pm = cj["activation_sparsity_macs"];
        QVERIFY(pm["model_kept_per_token"].get<int64_t>() <
                pm["model_dense_per_token"].get<int64_t>());
        const auto e = lcwtest::runCli({"eval", model, "--text", text, "--ctx", "64", "--preset",
                                        "QSparse-50", "--quiet", "--no-record"});
        QVERIFY2(e.code == 0, e.err.constData());
        QVERIFY(e.out.contains("MACs (zero-skip)"));
    }
};

QTEST_GUILESS_MAIN(TestActivationSparsity)
#include "test_activation_sparsity.moc"
