// Tests of the layer sensitivity scan (core/eval/sensitivity), the multiple-choice knapsack and
// autotune (core/eval/autotune) on the demo model, and of `lcw-cli sensitivity` / `autotune`.
// The knapsack is checked against brute force; the autotuned recipe against a real compress().
#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/eval/autotune.h"
#include "core/eval/sensitivity.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace lcw;

namespace {

std::string demoPath() {
    return lcwtest::sourcePath("resources/models/stories260K");
}
std::string textPath() {
    return lcwtest::sourcePath("resources/data/tinystories_eval.txt");
}

/// Brute-force optimum of a multiple-choice knapsack (+inf when infeasible).
double bruteForce(const std::vector<KnapsackItem>& items, uint64_t cap) {
    double best = std::numeric_limits<double>::infinity();
    std::vector<size_t> idx(items.size(), 0);
    while (true) {
        uint64_t c = 0;
        double v = 0;
        for (size_t i = 0; i < items.size(); ++i) {
            c += items[i].cost[idx[i]];
            v += items[i].value[idx[i]];
        }
        if (c <= cap) best = std::min(best, v);
        size_t i = 0;
        while (i < items.size() && ++idx[i] == items[i].cost.size()) idx[i++] = 0;
        if (i == items.size()) break;
    }
    return best;
}

} // namespace

class TestSensitivity : public QObject {
    Q_OBJECT
    std::unique_ptr<Model> m_model;
    std::vector<int32_t> m_tokens;
    PerplexityOptions m_po;
    SensitivityScan m_scan; ///< the four default autotune schemes, layer granularity

private slots:
    void initTestCase() {
        m_model = Model::load(demoPath());
        m_tokens = m_model->tokenizer().encode(readTextFile(textPath()), true);
        m_po.ctx = 128;
        m_po.batch = 128;
        m_po.maxChunks = 2;
        m_po.bosId = m_model->tokenizer().bosId();
        SensitivityOptions so;
        so.eval = m_po;
        std::vector<WeightScheme> schemes;
        for (const char* s : {"W8A16", "W4A16-g64", "W3A16-g64", "W2A16-g32"})
            schemes.push_back(schemeFromPreset(s));
        NullProgress np;
        m_scan = scanSensitivity(*m_model, schemes, m_tokens, so, np);
        QCOMPARE(m_scan.status, Status::Ok);
    }

    void targets() {
        const auto layers = sensitivityTargets(*m_model, SensitivityGranularity::Layer);
        QCOMPARE(layers.size(), size_t(35)); // 5 blocks x q, k, v, o, gate, up, down
        for (const auto& [t, l] : layers) {
            QCOMPARE(l.size(), size_t(1));
            QCOMPARE(l[0], t);
        }
        const auto blocks = sensitivityTargets(*m_model, SensitivityGranularity::Block);
        QCOMPARE(blocks.size(), size_t(5));
        QCOMPARE(blocks[2].first, std::string("layers.2"));
        QCOMPARE(blocks[2].second.size(), size_t(7));
    }

    void ranksSortedAndOverlaysTouchOneLayer() {
        const SchemeScan* s = m_scan.find("W3A16-g64");
        QVERIFY(s);
        QCOMPARE(s->entries.size(), size_t(35));
        for (size_t i = 0; i < s->entries.size(); ++i) {
            QCOMPARE(s->entries[i].rank, int(i + 1));
            if (i) QVERIFY(s->entries[i - 1].stats.kld.mean >= s->entries[i].stats.kld.mean);
            QVERIFY(s->entries[i].stats.kld.mean > 0);
        }
        // The top and the bottom entry: rebuild the one-layer overlay from its rules; it differs
        // from the base exactly in that layer, and a separate evaluation gives the same KLD.
        for (const SensitivityEntry* e : {&s->entries.front(), &s->entries.back()}) {
            const auto recipe = compress::Recipe::fromJson(
                {{"lcw_recipe", 1}, {"name", "one"}, {"rules", e->rules}});
            NullProgress np;
            auto cr = compress::compress(*m_model, recipe, np);
            QCOMPARE(cr.model->replacedNames(), std::vector<std::string>{e->target});
            for (const auto& t : m_model->tensors()) {
                const TensorView* q = cr.model->find(t.name);
                if (t.name == e->target) {
                    QVERIFY(q->data != t.data);
                    QCOMPARE(q->shape, t.shape);
                } else {
                    QVERIFY2(q->data == t.data, t.name.c_str()); // the base's own bytes
                }
            }
            QCOMPARE(cr.model->compressedSize().bits, e->bits);
            QCOMPARE(e->baseBits, uint64_t(m_model->get(e->target).nbytes * 8));
            const auto r =
                compareToBaseline(*m_model, {{"one", cr.model.get()}}, m_tokens, m_po, np);
            QVERIFY(std::abs(r.configs[0].kld.mean - e->stats.kld.mean) <= 1e-12);
        }
        // 3-bit g64: 3 bits + 32 bits (f16 scale + zero) per 64 weights = 3.5 bits/weight.
        for (const auto& e : s->entries)
            if (e.target.find("attn.q") != std::string::npos) QCOMPARE(e.bitsPerWeight(), 3.5);
        // Fewer bits hurt more: W2 on the most sensitive W3 layer beats W3's KLD, W8 is tiny.
        const std::string top = s->entries.front().target;
        auto kldOf = [&](const char* scheme) {
            for (const auto& e : m_scan.find(scheme)->entries)
                if (e.target == top) return e.stats.kld.mean;
            return -1.0;
        };
        QVERIFY(kldOf("W2A16-g32") > kldOf("W3A16-g64"));
        QVERIFY(kldOf("W8A16") < 0.1 * kldOf("W3A16-g64"));
    }

    void groupLargerThanRowIsClampedOrSkipped() {
        SensitivityOptions so;
        so.eval = m_po;
        so.eval.threads = 1; // tiny model: threads inside a forward only cost barriers
        so.granularity = SensitivityGranularity::Block;
        NullProgress np;
        // g128 on 64-wide rows: clamped to 64 with a note; down (rows of 172) keeps 128.
        const auto a =
            scanSensitivity(*m_model, {schemeFromPreset("W4A16-g128")}, m_tokens, so, np);
        QCOMPARE(a.schemes[0].entries.size(), size_t(5));
        for (const auto& e : a.schemes[0].entries) {
            QVERIFY2(e.note.find("clamped") != std::string::npos, e.note.c_str());
            QCOMPARE(e.rules.size(), size_t(7));
            for (const auto& r : e.rules) {
                const std::string n = r["targets"][0];
                QCOMPARE(r["weight"]["group_size"].get<int>(),
                         n.find("mlp.down") != std::string::npos ? 128 : 64);
            }
        }
        // q4_0 needs rows that are a multiple of 32: the down projections (172) are skipped.
        so.granularity = SensitivityGranularity::Layer;
        const auto b = scanSensitivity(*m_model, {schemeFromPreset("Q4_0")}, m_tokens, so, np);
        QCOMPARE(b.schemes[0].entries.size(), size_t(30));
        QCOMPARE(b.schemes[0].skipped.size(), size_t(5));
        for (const auto& [t, why] : b.schemes[0].skipped) {
            QVERIFY(t.find("mlp.down") != std::string::npos);
            QVERIFY2(why.find("multiple of 32") != std::string::npos, why.c_str());
        }
    }

    void scanCancels() {
        SensitivityOptions so;
        so.eval = m_po;
        int calls = 0;
        FunctionProgress stop([&](double, std::string_view) { return ++calls < 3; });
        const auto s =
            scanSensitivity(*m_model, {schemeFromPreset("W4A16-g64")}, m_tokens, so, stop);
        QCOMPARE(s.status, Status::Cancelled);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, scanSensitivity(*m_model, {}, m_tokens, so, stop));
    }

    void jsonRoundTripAndBadFile() {
        const auto j = sensitivityToJson(m_scan);
        const auto back = sensitivityFromJson(nlohmann::json::parse(j.dump()), "scan.json");
        QCOMPARE(back.schemes.size(), m_scan.schemes.size());
        for (size_t s = 0; s < back.schemes.size(); ++s)
            for (size_t i = 0; i < back.schemes[s].entries.size(); ++i) {
                const auto& x = back.schemes[s].entries[i];
                const auto& y = m_scan.schemes[s].entries[i];
                QCOMPARE(x.target, y.target);
                QCOMPARE(x.bits, y.bits);
                QCOMPARE(x.order, y.order);
                QCOMPARE(x.stats.kld.mean, y.stats.kld.mean);
            }
        auto broken = nlohmann::json::parse(j.dump());
        broken["schemes"][0]["entries"][3].erase("bits");
        try {
            sensitivityFromJson(broken, "scan.json");
            QFAIL("no error");
        } catch (const FormatError& e) {
            QVERIFY2(std::strstr(e.what(), "scan.json") && std::strstr(e.what(), "'bits'"),
                     e.what());
        }
    }

    void knapsackIsOptimal() {
        std::mt19937_64 rng(11);
        for (int trial = 0; trial < 200; ++trial) {
            const int n = 1 + int(rng() % 6);
            std::vector<KnapsackItem> items(static_cast<size_t>(n));
            uint64_t minSum = 0, maxSum = 0;
            for (auto& it : items) {
                const int k = 1 + int(rng() % 4);
                uint64_t mn = ~uint64_t(0), mx = 0;
                for (int j = 0; j < k; ++j) {
                    it.cost.push_back(rng() % 40);
                    it.value.push_back(double(rng() % 1000) / 97.0);
                    mn = std::min(mn, it.cost.back());
                    mx = std::max(mx, it.cost.back());
                }
                minSum += mn;
                maxSum += mx;
            }
            const uint64_t cap = minSum + rng() % (maxSum - minSum + 1);
            const auto s = solveKnapsack(items, cap);
            uint64_t c = 0;
            double v = 0;
            for (size_t i = 0; i < items.size(); ++i) {
                c += items[i].cost[size_t(s.choice[i])];
                v += items[i].value[size_t(s.choice[i])];
            }
            QCOMPARE(c, s.cost);
            QVERIFY(c <= cap);
            QVERIFY(std::abs(v - s.value) < 1e-9);
            QVERIFY2(
                std::abs(v - bruteForce(items, cap)) < 1e-9,
                qPrintable(
                    QString("trial %1: %2 vs %3").arg(trial).arg(v).arg(bruteForce(items, cap))));
        }
        // A hand-made instance: costs in bits, values in KLD.
        std::vector<KnapsackItem> h = {{{2, 4, 8}, {0.9, 0.3, 0.0}},
                                       {{2, 4, 8}, {0.5, 0.2, 0.0}},
                                       {{2, 4, 8}, {0.1, 0.05, 0.0}}};
        // Capacity 14: costs (8, 4, 2) give 0 + 0.2 + 0.1 = 0.3, the best of all 27 choices.
        const auto s = solveKnapsack(h, 14);
        QCOMPARE(s.value, bruteForce(h, 14));
        QCOMPARE(s.choice, (std::vector<int>{2, 1, 0}));
        // A coarse table (unit > 1) stays feasible and close.
        std::vector<KnapsackItem> big;
        for (int i = 0; i < 8; ++i)
            big.push_back(
                {{1000 + uint64_t(i), 3001 + uint64_t(7 * i), 7919}, {1.0 + i, 0.3, 0.0}});
        const auto coarse = solveKnapsack(big, 30000, 64);
        QVERIFY(coarse.unit > 1);
        QVERIFY(coarse.cost <= 30000);
        QVERIFY(coarse.value <= bruteForce(big, 30000) + 1.0);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, solveKnapsack(h, 5));
    }

    void autotuneMeetsBudget() {
        for (double budget : {3.25, 4.5, 6.0}) {
            const auto plan = planAutotune(m_scan, budget, {});
            NullProgress np;
            auto cr = compress::compress(*m_model, plan.recipe, np);
            const auto size = cr.model->compressedSize();
            // What compress --json reports as totals.quantized_bits_per_weight.
            const double bpw =
                compress::compressReportJson(cr)["totals"]["quantized_bits_per_weight"];
            QCOMPARE(size.bits, plan.bits);
            QCOMPARE(size.params, plan.params);
            QVERIFY2(bpw <= budget, qPrintable(QString("%1 > %2").arg(bpw).arg(budget)));
            QVERIFY2(bpw > budget - 0.1,
                     qPrintable(QString("%1 far below %2").arg(bpw).arg(budget)));
            QCOMPARE(cr.model->replacedNames().size(), size_t(35));
            QCOMPARE(plan.recipe.rules.size(), size_t(35));
            // The estimate is the sum of the chosen scan entries.
            double est = 0;
            for (const auto& c : plan.choices) est += c.estimatedKld;
            QVERIFY(std::abs(est - plan.estimatedKld) < 1e-12);
            // The uniform comparison is the largest scheme not above the budget.
            if (budget == 4.5) QCOMPARE(plan.uniformScheme, std::string("W3A16-g64"));
            if (budget == 3.25) QCOMPARE(plan.uniformScheme, std::string("W2A16-g32"));
            QVERIFY(plan.uniformBits <= plan.budgetBits);
            // Optimal over the scan: no uniform scheme that fits estimates less.
            QVERIFY(plan.estimatedKld <= plan.uniformEstimatedKld + 1e-12);
        }
    }

    void autotuneMeetsWholeModelBudget() {
        // The workbench's budget (whole-model bits per base weight, the recipe editor's target):
        // the planned recipe compresses to at most the budget, and the editor's estimate, the
        // plan and compress --json (bits_per_base_weight) give the same figure.
        NullProgress np;
        for (double budget : {7.5, 9.0, 10.5}) {
            const auto plan = planAutotuneModel(m_scan, *m_model, budget, {});
            auto cr = compress::compress(*m_model, plan.recipe, np);
            const auto totals = compress::compressReportJson(cr)["totals"];
            const double bpw = totals["bits_per_base_weight"];
            QVERIFY2(bpw <= budget, qPrintable(QString("%1 > %2").arg(bpw).arg(budget)));
            QVERIFY2(bpw > budget - 0.1,
                     qPrintable(QString("%1 far below %2").arg(bpw).arg(budget)));
            QCOMPARE(plan.modelBitsPerWeight(), bpw);
            QCOMPARE(plan.modelBudgetBpw, budget);
            const auto est =
                compress::estimatePlan(compress::planRecipe(plan.recipe, *m_model), *m_model);
            QCOMPARE(est.bitsPerWeight(), bpw);
            // the quantised-layer figure beside it is planAutotune's budget definition
            QCOMPARE(plan.bitsPerWeight(), totals["quantized_bits_per_weight"].get<double>());
            QVERIFY(plan.bitsPerWeight() <= plan.budgetBpw);
        }
        // Below what the untouched tensors (the f32 embedding) already take: a clear error.
        try {
            planAutotuneModel(m_scan, *m_model, 3.0, {});
            QFAIL("no error");
        } catch (const ArgumentError& e) {
            QVERIFY2(std::strstr(e.what(), "whole-model budget of 3") &&
                         std::strstr(e.what(), "infeasible"),
                     e.what());
        }
        // Feasible for the rest but not for the cheapest scheme: both figures named.
        try {
            planAutotuneModel(m_scan, *m_model, 6.0, {});
            QFAIL("no error");
        } catch (const ArgumentError& e) {
            QVERIFY2(std::strstr(e.what(), "for the quantised layers") &&
                         std::strstr(e.what(), "3.0282"),
                     e.what());
        }
    }

    void infeasibleBudgetAndBadSchemes() {
        // The cheapest scheme, W2A16-g32, per block: 34304 weights with 64-wide rows at
        // 2 + 32/32 = 3 bits, and mlp.down's 64 rows of 172 = 6 groups: 64 * (2 * 172 + 6 * 32)
        // bits, over 45312 weights: 137216 / 45312 = 3.0282 bits/weight.
        try {
            planAutotune(m_scan, 2.5, {});
            QFAIL("no error");
        } catch (const ArgumentError& e) {
            QVERIFY2(std::strstr(e.what(), "infeasible") && std::strstr(e.what(), "3.0282"),
                     e.what());
        }
        QVERIFY_THROWS_EXCEPTION(ArgumentError, planAutotune(m_scan, 4.5, {"NF4-g64"}));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, planAutotune(m_scan, 0.0, {}));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, planAutotune(m_scan, 4.5, {}, "Q4_0"));
    }

    void verifyMeasuresBoth() {
        const auto plan = planAutotune(m_scan, 4.5, {});
        NullProgress np;
        const auto v = verifyAutotune(*m_model, plan, m_tokens, m_po, np);
        QCOMPARE(v.status, Status::Ok);
        QVERIFY(v.autotuned.measuredValid && v.uniform.measuredValid);
        QCOMPARE(v.autotuned.bits, plan.bits);
        QVERIFY(v.autotuned.bitsPerWeight <= 4.5);
        QVERIFY(v.autotuned.measured.kld.mean > 0);
        // More bits where they matter: the autotuned recipe measures below uniform W3.
        QVERIFY(v.autotuned.measured.kld.mean < v.uniform.measured.kld.mean);
    }

    void cliSensitivityAndAutotune() {
        const std::string dir = lcwtest::tempDir("sens");
        const QString scan = QString::fromStdString(dir + "/scan.json");
        const QString rec = QString::fromStdString(dir + "/r.json");
        const auto s = lcwtest::runCli(
            {"sensitivity", QString::fromStdString(demoPath()), "--scheme", "W3A16-g64,W2A16-g32",
             "--ctx", "128", "--chunks", "1", "--out", scan, "--threads", "1", "--quiet"});
        QVERIFY2(s.code == 0, s.err.constData());
        QVERIFY(s.out.contains("layers.") && s.out.contains("rank"));
        const auto a = lcwtest::runCli({"autotune", QString::fromStdString(demoPath()),
                                        "--budget-bpw", "3.3", "--scan", scan, "--schemes",
                                        "W3A16-g64,W2A16-g32", "--out", rec, "--ctx", "128",
                                        "--chunks", "1", "--threads", "1", "--json", "--quiet"});
        QVERIFY2(a.code == 0, a.err.constData());
        const auto j = nlohmann::json::parse(a.out.toStdString());
        QVERIFY(j["autotuned"]["bits_per_weight"].get<double>() <= 3.3);
        QVERIFY(j["autotuned"].contains("measured_kld"));
        QCOMPARE(j["uniform"]["scheme"].get<std::string>(), std::string("W2A16-g32"));
        // The written recipe compresses to the same size.
        const auto c = lcwtest::runCli(
            {"compress", QString::fromStdString(demoPath()), "--recipe", rec, "--json", "--quiet"});
        QVERIFY2(c.code == 0, c.err.constData());
        const auto cj = nlohmann::json::parse(c.out.toStdString());
        QCOMPARE(cj["totals"]["quantized_bits_per_weight"].get<double>(),
                 j["autotuned"]["bits_per_weight"].get<double>());
        // Beside it, the whole-model figure (new keys; the old ones keep their meaning).
        QCOMPARE(j["budget_mode"].get<std::string>(), std::string("quantized_layers"));
        QCOMPARE(j["budget_bpw"].get<double>(), 3.3);
        QCOMPARE(j["model_bits_per_weight"].get<double>(),
                 cj["totals"]["bits_per_base_weight"].get<double>());
        // The workbench's budget: whole-model bits per base weight.
        const auto mb =
            lcwtest::runCli({"autotune", QString::fromStdString(demoPath()), "--model-budget-bpw",
                             "7.2", "--scan", scan, "--schemes", "W3A16-g64,W2A16-g32", "--out",
                             rec, "--no-verify", "--json", "--quiet"});
        QVERIFY2(mb.code == 0, mb.err.constData());
        const auto mj = nlohmann::json::parse(mb.out.toStdString());
        QCOMPARE(mj["budget_mode"].get<std::string>(), std::string("model"));
        QCOMPARE(mj["model_budget_bpw"].get<double>(), 7.2);
        QVERIFY(mj["model_bits_per_weight"].get<double>() <= 7.2);
        QVERIFY(mj["bits_per_weight"].get<double>() <= mj["budget_bpw"].get<double>());
        const auto mc = lcwtest::runCli(
            {"compress", QString::fromStdString(demoPath()), "--recipe", rec, "--json", "--quiet"});
        QVERIFY2(mc.code == 0, mc.err.constData());
        QCOMPARE(nlohmann::json::parse(mc.out.toStdString())["totals"]["bits_per_base_weight"]
                     .get<double>(),
                 mj["model_bits_per_weight"].get<double>());
        const auto both =
            lcwtest::runCli({"autotune", QString::fromStdString(demoPath()), "--budget-bpw", "4",
                             "--model-budget-bpw", "8", "--scan", scan, "--out", rec, "--quiet"});
        QVERIFY(both.code != 0);
        // A scheme missing from the scan, and an infeasible budget: clear errors, exit 1.
        const auto m =
            lcwtest::runCli({"autotune", QString::fromStdString(demoPath()), "--budget-bpw", "4",
                             "--scan", scan, "--out", rec, "--quiet"});
        QCOMPARE(m.code, 1);
        QVERIFY2(m.err.contains("has no scan of W8A16"), m.err.constData());
        const auto f = lcwtest::runCli({"autotune", QString::fromStdString(demoPath()),
                                        "--budget-bpw", "2", "--scan", scan, "--schemes",
                                        "W3A16-g64,W2A16-g32", "--out", rec, "--quiet"});
        QCOMPARE(f.code, 1);
        QVERIFY2(f.err.contains("infeasible"), f.err.constData());
    }
};

QTEST_GUILESS_MAIN(TestSensitivity)
#include "test_sensitivity.moc"
