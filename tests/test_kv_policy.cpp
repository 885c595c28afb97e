// KV-cache eviction policies: H2O, attention sinks + window, pruning by attention mass; their
// per-head cache against independent reference implementations on random attention, the
// quantised per-head slices, exact equality with the full cache when nothing is evicted, the
// recipe keys and their errors, and overlay persistence.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/kv_policy.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "core_test_util.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using lcwtest::J;

Recipe parse(const std::string& text) {
    return lcwtest::recipeFromQuoted(text);
}

std::vector<float> randomRows(int64_t n, int64_t dim, uint32_t seed, float sd = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> x(size_t(n * dim));
    for (auto& v : x) v = nd(rng);
    return x;
}

/// An independent per-head reference of the policies, in double, written from the papers:
/// every step appends the token, attends its query over the head's kept tokens (summing the
/// probabilities of the group's query heads into the accumulated scores), then evicts.
struct RefCache {
    KvPolicySpec spec;
    int64_t kvHeads = 0, hd = 0, G = 0, budget = 0, recent = 0, window = 0;
    struct Tok {
        int64_t pos;
        double score;
    };
    std::vector<std::vector<Tok>> heads;
    const std::vector<float>*k = nullptr, *v = nullptr; // all tokens' rows [n, kvHeads*hd]

    void step(const float* q, int64_t p, float* out) {
        heads.resize(size_t(kvHeads));
        const int64_t W = kvHeads * hd;
        for (int64_t g = 0; g < kvHeads; ++g) {
            auto& toks = heads[size_t(g)];
            toks.push_back({p, 0.0});
            std::vector<double> add(toks.size(), 0.0);
            for (int64_t j = 0; j < G; ++j) {
                const int64_t hq = g * G + j;
                std::vector<double> e(toks.size());
                double mx = -1e300, sum = 0;
                for (size_t i = 0; i < toks.size(); ++i) {
                    double s = 0;
                    for (int64_t d = 0; d < hd; ++d)
                        s += double(q[hq * hd + d]) *
                             double((*k)[size_t(toks[i].pos * W + g * hd + d)]);
                    e[i] = s / std::sqrt(double(hd));
                    mx = std::max(mx, e[i]);
                }
                for (auto& x : e) sum += (x = std::exp(x - mx));
                for (int64_t d = 0; d < hd; ++d) {
                    double o = 0;
                    for (size_t i = 0; i < toks.size(); ++i)
                        o += e[i] / sum * double((*v)[size_t(toks[i].pos * W + g * hd + d)]);
                    out[hq * hd + d] = float(o);
                }
                for (size_t i = 0; i < toks.size(); ++i) add[i] += e[i] / sum;
            }
            for (size_t i = 0; i < toks.size(); ++i) toks[i].score += add[i];
            evict(toks, p);
        }
    }

    void evict(std::vector<Tok>& toks, int64_t p) const {
        if (spec.kind == KvPolicyKind::H2O) {
            // H2O: while over budget, drop the older token with the least accumulated
            // attention (the oldest among equals); the `recent` newest are never candidates.
            while (int64_t(toks.size()) > budget) {
                const size_t older = toks.size() - size_t(recent);
                size_t worst = 0;
                for (size_t i = 1; i < older; ++i)
                    if (toks[i].score < toks[worst].score) worst = i;
                toks.erase(toks.begin() + std::ptrdiff_t(worst));
            }
        } else if (spec.kind == KvPolicyKind::Sinks) {
            std::vector<Tok> kept;
            for (const Tok& t : toks)
                if (t.pos < spec.sinks || t.pos > p + 1 - window) kept.push_back(t);
            toks = kept;
        } else if (spec.kind == KvPolicyKind::Mass) {
            // Drop the least-attended older tokens as long as what stays covers `mass` of
            // their total.
            const size_t older = toks.size() - std::min(toks.size(), size_t(recent));
            double total = 0;
            for (size_t i = 0; i < older; ++i) total += toks[i].score;
            std::vector<size_t> order(older);
            for (size_t i = 0; i < older; ++i) order[i] = i;
            std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
                return toks[a].score > toks[b].score || (toks[a].score == toks[b].score && a > b);
            });
            std::vector<char> keep(toks.size(), 1);
            double cum = 0;
            size_t i = 0;
            for (; i < order.size() && cum < spec.mass * total; ++i) cum += toks[order[i]].score;
            for (; i < order.size(); ++i) keep[order[i]] = 0;
            std::vector<Tok> kept;
            for (size_t j = 0; j < toks.size(); ++j)
                if (keep[j]) kept.push_back(toks[j]);
            toks = kept;
        }
    }
};

/// Runs `spec` on random attention over n tokens in uneven batches, against RefCache.
void checkAgainstReference(const KvPolicySpec& spec, int64_t budget, int64_t recent, int64_t window,
                           uint32_t seed) {
    const int64_t kvHeads = 3, G = 2, hd = 8, n = 90, heads = kvHeads * G;
    const int64_t W = kvHeads * hd, qd = heads * hd;
    // Peaked attention (large scores) makes heavy hitters and ties unlikely.
    const auto q = randomRows(n, qd, seed, 2.0f);
    const auto k = randomRows(n, W, seed + 1, 1.0f);
    const auto v = randomRows(n, W, seed + 2, 1.0f);
    runtime::KvPolicyCache cache;
    cache.init(spec, nullptr, kvHeads, hd, 1000);
    RefCache ref;
    ref.spec = spec, ref.kvHeads = kvHeads, ref.hd = hd, ref.G = G;
    ref.budget = budget, ref.recent = recent, ref.window = window;
    ref.k = &k, ref.v = &v;
    std::vector<float> out(size_t(n * qd)), refOut(size_t(n * qd));
    kernels::AttentionOptions ao;
    const int64_t batches[] = {1, 7, 1, 13, 2, 30, 36};
    int64_t p = 0;
    for (int64_t b : batches) {
        cache.attend(q.data() + p * qd, qd, k.data() + p * W, v.data() + p * W, W,
                     out.data() + p * qd, qd, b, p, heads, ao, 2);
        for (int64_t t = p; t < p + b; ++t) ref.step(q.data() + t * qd, t, refOut.data() + t * qd);
        p += b;
        for (int64_t h = 0; h < kvHeads; ++h) {
            const auto& toks = ref.heads[size_t(h)];
            std::vector<int64_t> want;
            for (const auto& t : toks) want.push_back(t.pos);
            QCOMPARE(cache.positions(h), want);
            for (size_t i = 0; i < toks.size(); ++i)
                QVERIFY(std::fabs(cache.scores(h)[i] - toks[i].score) < 1e-9);
        }
    }
    QCOMPARE(p, n);
    QVERIFY(!cache.complete()); // the policies did evict
    double maxDiff = 0;
    for (size_t i = 0; i < out.size(); ++i)
        maxDiff = std::max(maxDiff, double(std::fabs(out[i] - refOut[i])));
    QVERIFY2(maxDiff < 1e-5, qPrintable(QString::number(maxDiff)));
}

std::vector<int32_t> demoTokens(const Model& m, size_t n) {
    auto ids = m.tokenizer().encode(readTextFile(lcwtest::demoTextPath()), true);
    ids.resize(n);
    return ids;
}

std::vector<float> allLogits(const WeightSource& w, const std::vector<int32_t>& ids,
                             uint64_t* kvBytes = nullptr) {
    Session s(w);
    std::vector<float> logits;
    s.forward(ids, logits, true);
    if (kvBytes) *kvBytes = s.kvCacheBytes();
    return logits;
}

std::unique_ptr<CompressedModel> applied(const Model& m, const Recipe& r) {
    NullProgress p;
    auto res = compress::compress(m, r, p);
    return std::move(res.model);
}

std::unique_ptr<CompressedModel> withKv(const Model& m, const std::string& kv) {
    return applied(m, parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':" + kv + "}]}"));
}

void expectRecipeError(const std::function<void()>& fn, const std::string& field) {
    try {
        fn();
    } catch (const RecipeError& e) {
        QVERIFY2(e.field() == field, e.what());
        return;
    }
    QFAIL(qPrintable(QString::fromStdString("no RecipeError for " + field)));
}

} // namespace

class TestKvPolicy : public QObject {
    Q_OBJECT
private slots:
    void h2oEvictionOrderMatchesIndependentReference() {
        KvPolicySpec s;
        s.kind = KvPolicyKind::H2O;
        s.budget = 20, s.recent = 6; // tokens
        checkAgainstReference(s, 20, 6, 0, 11);
        s.recent = 0.25; // a quarter of the budget: 5 tokens
        checkAgainstReference(s, 20, 5, 0, 23);
        s.recent = 0; // heavy hitters only (the newest token may go too)
        checkAgainstReference(s, 20, 0, 0, 37);
    }

    void sinksAndMassMatchIndependentReference() {
        KvPolicySpec s;
        s.kind = KvPolicyKind::Sinks;
        s.sinks = 3, s.window = 16;
        checkAgainstReference(s, 0, 0, 16, 5);
        KvPolicySpec m;
        m.kind = KvPolicyKind::Mass;
        m.mass = 0.8, m.recent = 8;
        checkAgainstReference(m, 0, 8, 0, 7);
    }

    void quantisedSlicesDequantiseAsTheWholeRow() {
        // Head slices of 24 channels under token groups of 32 (groups straddle heads).
        const int64_t W = 72, hd = 24, n = 20;
        const auto x = randomRows(n, W, 3);
        runtime::KvStream whole;
        whole.init(4, KvGranularity::Token, 32, W);
        whole.append(x.data(), W, n);
        kernels::FloatBuffer sw, ss;
        const float* all = whole.read(n, sw, 1);
        uint64_t sliceBytes = 0;
        for (int64_t h = 0; h < W / hd; ++h) {
            runtime::KvStream s;
            s.initSlice(4, KvGranularity::Token, 32, W, h * hd, hd);
            s.append(x.data(), W, n);
            const float* r = s.read(n, ss, 1);
            for (int64_t t = 0; t < n; ++t)
                for (int64_t c = 0; c < hd; ++c) QCOMPARE(r[t * hd + c], all[t * W + h * hd + c]);
            // eviction moves whole rows: rows 1, 4, 19 stay, with their values
            s.compact({1, 4, 19});
            QCOMPARE(s.rows(), int64_t(3));
            const float* c3 = s.read(3, ss, 1);
            const int64_t kept[3] = {1, 4, 19};
            for (int i = 0; i < 3; ++i)
                for (int64_t c = 0; c < hd; ++c)
                    QCOMPARE(c3[i * hd + c], all[kept[i] * W + h * hd + c]);
            sliceBytes += s.bytes();
        }
        // 3 rows; 12 bytes of 4-bit codes per head row, and the scale/min (8 bytes) of each
        // whole-row group a head overlaps: head 0 group 0, head 1 groups 0-1, head 2 groups 1-2
        QCOMPARE(sliceBytes, uint64_t(3 * (3 * 12 + (1 + 2 + 2) * 8)));
        runtime::KvStream ch;
        QVERIFY_THROWS_EXCEPTION(UnsupportedError,
                                 ch.initSlice(4, KvGranularity::Channel, 32, W, 0, hd));
    }

    void budgetCoveringTheSequenceEqualsTheFullCacheExactly() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoTokens(*m, 120);
        const auto base = allLogits(*m, ids);
        for (const char* kv :
             {"{'policy':'h2o','budget':120,'recent':0.5}", "{'policy':'h2o','budget':500}",
              "{'policy':'sinks','sinks':4,'window':121}", "{'policy':'mass','mass':1.0}",
              "{'policy':'full'}"}) {
            auto cm = withKv(*m, kv);
            QVERIFY2(allLogits(*cm, ids) == base, kv);
        }
        // with KV4: the per-head slices quantise as the whole-row cache
        const auto kv4 = allLogits(*withKv(*m, "{'k_bits':4,'v_bits':4}"), ids);
        QVERIFY(kv4 != base);
        QVERIFY(allLogits(*withKv(*m, "{'k_bits':4,'v_bits':4,'policy':'h2o','budget':200}"),
                          ids) == kv4);
    }

    void smallBudgetsEvictAndBatchesEqualDecoding() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoTokens(*m, 200);
        uint64_t fullBytes = 0;
        const auto base = allLogits(*m, ids, &fullBytes);
        for (const char* name : {"KV-H2O-20", "KV-sinks-window", "KV4-H2O-20", "KV-mass-90"}) {
            auto cm = applied(*m, findPreset(name).recipe);
            QVERIFY(!cm->runtimeQuant()->kvPolicy.empty());
            uint64_t bytes = 0;
            const auto lg = allLogits(*cm, ids, &bytes);
            QVERIFY2(lg != base, name);
            for (float x : lg) QVERIFY(std::isfinite(x));
            qInfo("%s: KV cache %llu bytes (full %llu)", name, (unsigned long long)bytes,
                  (unsigned long long)fullBytes);
            QVERIFY2(bytes < fullBytes, name);
            // one prefill and token-by-token decoding evict alike (the products differ in the
            // last bits between batch sizes, as for the full cache)
            Session a(*cm), b(*cm);
            std::vector<float> la, lb;
            a.forward(std::span(ids.data(), 150), la, false);
            for (int64_t t = 0; t < 150; ++t) b.forward(std::span(ids.data() + t, 1), lb, false);
            QCOMPARE(a.kvCacheBytes(), b.kvCacheBytes());
            double d = 0;
            for (size_t i = 0; i < la.size(); ++i)
                d = std::max(d, double(std::fabs(la[i] - lb[i])));
            QVERIFY2(d < 1e-3, qPrintable(QString::number(d)));
        }
        // H2O at 20 % of the 512-token context: about 102 tokens of the 200 stay
        auto h2o = applied(*m, findPreset("KV-H2O-20").recipe);
        uint64_t bytes = 0;
        allLogits(*h2o, ids, &bytes);
        QCOMPARE(bytes, fullBytes / 200 * 102);
        // an evicting cache cannot rewind
        Session s(*h2o);
        std::vector<float> lg;
        s.forward(std::span(ids.data(), 150), lg, false);
        s.reset();
        s.forward(std::span(ids.data(), 10), lg, false); // a reset starts again
        QCOMPARE(s.position(), int64_t(10));
    }

    void recipeKeysResolveAndBadValuesNameTheKey() {
        auto m = Model::load(lcwtest::demoModelPath());
        auto plan = [&](const std::string& kv) {
            return planRecipe(parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':" + kv + "}]}"),
                              *m);
        };
        const Plan p = plan("{'policy':'h2o','budget':0.2}");
        QCOMPARE(int(p.kvPolicy.size()), 5);
        QVERIFY(p.kv.empty()); // policy keys alone leave the values in f32
        QCOMPARE(p.kvPolicy[0].policy.kind, KvPolicyKind::H2O);
        QCOMPARE(p.kvPolicy[0].policy.budget, 0.2);
        QCOMPARE(p.kvPolicy[0].policy.recent, 0.5);
        const Plan q = plan("{'policy':'sinks','window':64,'k_bits':4,'v_bits':4}");
        QCOMPARE(int(q.kv.size()), 5);
        QCOMPARE(q.kvPolicy[2].policy.sinks, int64_t(4));
        QCOMPARE(q.kvPolicy[2].policy.window, 64.0);
        QVERIFY(plan("{'policy':'full'}").kvPolicy.empty());

        expectRecipeError(
            [&] {
                parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':{'policy':"
                      "'lru'}}]}");
            },
            "kv.policy");
        for (const auto& [kv, field] : std::vector<std::pair<std::string, std::string>>{
                 {"{'policy':'h2o','budget':1.5}", "kv.budget"},
                 {"{'policy':'h2o','budget':0}", "kv.budget"},
                 {"{'policy':'h2o','budget':0.2,'recent':1.0}", "kv.recent"},
                 {"{'policy':'sinks','window':8,'budget':0.2}", "kv.budget"},
                 {"{'policy':'sinks','window':-3}", "kv.window"},
                 {"{'policy':'mass','mass':0}", "kv.mass"},
                 {"{'policy':'mass','mass':1.2}", "kv.mass"},
                 {"{'policy':'h2o','budget':8,'sinks':2}", "kv.sinks"}})
            expectRecipeError(
                [&k = kv] { parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':" + k + "}]}"); },
                field);
        // merged over the rules: a policy needs its keys; channel blocks cannot evict
        expectRecipeError([&] { plan("{'policy':'h2o'}"); }, "kv.budget");
        expectRecipeError([&] { plan("{'policy':'sinks'}"); }, "kv.window");
        expectRecipeError([&] { plan("{'budget':0.3}"); }, "kv.policy");
        expectRecipeError(
            [&] { plan("{'policy':'h2o','budget':0.2,'k_bits':2,'k_granularity':'channel'}"); },
            "kv.policy");
        expectRecipeError(
            [&] {
                planRecipe(parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':{'policy':'h2o',"
                                 "'budget':0.2}},{'targets':['*'],'kv':{'policy':'sinks'}}]}"),
                           *m);
            },
            "kv.budget");
    }

    void overlaysKeepThePolicy() {
        auto m = Model::load(lcwtest::demoModelPath());
        auto cm = applied(*m, findPreset("KV4-H2O-20").recipe);
        const std::string dir = lcwtest::tempDir("kvpolicy") + "/overlay";
        cm->save(dir);
        auto back = CompressedModel::load(dir, *m);
        QVERIFY(back->runtimeQuant() != nullptr);
        QCOMPARE(back->runtimeQuant()->kvPolicy, cm->runtimeQuant()->kvPolicy);
        QCOMPARE(back->runtimeQuant()->kv, cm->runtimeQuant()->kv);
        const auto ids = demoTokens(*m, 150);
        QVERIFY(allLogits(*back, ids) == allLogits(*cm, ids));
    }
};

QTEST_GUILESS_MAIN(TestKvPolicy)
#include "test_kv_policy.moc"
