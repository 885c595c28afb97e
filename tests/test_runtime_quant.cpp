// Runtime quantisation: activation fake-quantisation at linear inputs, the quantised KV cache,
// their recipe settings, calibration, overlay persistence and the CLI reports.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "core_test_util.h"
#include "mem_weights.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <random>
#include <set>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

std::string demoModel() {
    return lcwtest::demoModelPath();
}

using lcwtest::J;

Recipe parse(const std::string& text) {
    return lcwtest::recipeFromQuoted(text);
}

std::vector<float> randomRows(int64_t n, int64_t dim, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(size_t(n * dim));
    for (auto& v : x) v = nd(rng);
    for (int64_t t = 0; t < n; ++t) x[size_t(t * dim + 3)] *= 30.0f; // an outlier channel
    return x;
}

/// Reference fake-quantisation in double: the code of each value or -999 where the value sits
/// so close to a rounding midpoint that float and double may round differently.
void referenceCodes(const ActQuantSpec& s, const float* x, int64_t dim, std::vector<double>& out,
                    std::vector<int>& ambiguous) {
    const double qmax = double((1 << (s.bits - 1)) - 1);
    double m = s.absMax;
    if (s.perToken) {
        m = 0;
        for (int64_t c = 0; c < dim; ++c)
            if (!std::binary_search(s.outlierChannels.begin(), s.outlierChannels.end(), int32_t(c)))
                m = std::max(m, std::fabs(double(x[c])));
    }
    const double sc = double(s.clip) * m / qmax;
    out.assign(size_t(dim), 0);
    ambiguous.assign(size_t(dim), 0);
    for (int64_t c = 0; c < dim; ++c) {
        if (std::binary_search(s.outlierChannels.begin(), s.outlierChannels.end(), int32_t(c))) {
            out[size_t(c)] = x[c];
            continue;
        }
        const double r = double(x[c]) / sc;
        const double frac = r - std::floor(r);
        ambiguous[size_t(c)] =
            std::fabs(frac - 0.5) < 1e-4 || std::fabs(std::fabs(r) - qmax) < 1e-4;
        out[size_t(c)] = std::clamp(std::nearbyint(r), -qmax, qmax) * sc;
    }
}

/// Mean KL(p_base || p_test) over rows of [rows, vocab] logits, in double.
double meanKld(const std::vector<float>& base, const std::vector<float>& test, int64_t vocab) {
    const int64_t rows = int64_t(base.size()) / vocab;
    double tot = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const float* a = base.data() + r * vocab;
        const float* b = test.data() + r * vocab;
        double ma = a[0], mb = b[0];
        for (int64_t i = 1; i < vocab; ++i)
            ma = std::max(ma, double(a[i])), mb = std::max(mb, double(b[i]));
        double za = 0, zb = 0;
        for (int64_t i = 0; i < vocab; ++i) za += std::exp(a[i] - ma), zb += std::exp(b[i] - mb);
        double kl = 0;
        for (int64_t i = 0; i < vocab; ++i) {
            const double la = a[i] - ma - std::log(za), lb = b[i] - mb - std::log(zb);
            kl += std::exp(la) * (la - lb);
        }
        tot += kl;
    }
    return tot / double(rows);
}

std::vector<int32_t> demoTokens(const Model& m, size_t n) {
    auto ids = m.tokenizer().encode(readTextFile(lcwtest::demoTextPath()), true);
    ids.resize(n);
    return ids;
}

std::vector<float> allLogits(const WeightSource& w, const std::vector<int32_t>& ids,
                             bool exactActivations = false) {
    SessionOptions o;
    o.exactActivations = exactActivations;
    Session s(w, o);
    std::vector<float> logits;
    s.forward(ids, logits, true);
    return logits;
}

std::unique_ptr<CompressedModel> applied(const Model& m, const Recipe& r) {
    NullProgress p;
    auto res = compress::compress(m, r, p);
    return std::move(res.model);
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

/// The demo model with some tensors replaced, added or hidden.
class Patched final : public WeightSource {
public:
    explicit Patched(const WeightSource& b) : m_base(b) {}
    const ModelSpec& spec() const override { return m_base.spec(); }
    const TensorView* find(std::string_view n) const override {
        if (hidden.count(std::string(n))) return nullptr;
        if (const TensorView* t = mem.find(n)) return t;
        return m_base.find(n);
    }
    lcwtest::MemWeights mem;
    std::set<std::string> hidden;

private:
    const WeightSource& m_base;
};

std::vector<float> weightOf(const WeightSource& w, const std::string& name) {
    const TensorView& t = w.get(name);
    std::vector<float> v(size_t(t.numel()));
    kernels::dequantizeRows(t, 0, t.rows(), v.data());
    return v;
}

double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
    return d;
}

} // namespace

class TestRuntimeQuant : public QObject {
    Q_OBJECT
private slots:
    void activationFakeQuantMatchesDoubleReference() {
        const int64_t n = 7, dim = 48;
        const auto x = randomRows(n, dim, 1);
        for (int bits : {2, 4, 8, 12}) {
            for (int mode = 0; mode < 3; ++mode) {
                ActQuantSpec s;
                s.bits = bits;
                s.perToken = mode != 1;
                s.clip = mode == 2 ? 0.5f : 1.0f;
                s.absMax = 5.0f;
                if (mode == 2) s.outlierChannels = {3, 40};
                std::vector<float> out(x.size());
                runtime::fakeQuantizeActivations(s, x.data(), dim, out.data(), dim, n, dim, 2);
                std::vector<double> ref;
                std::vector<int> amb;
                int checked = 0;
                for (int64_t t = 0; t < n; ++t) {
                    referenceCodes(s, x.data() + t * dim, dim, ref, amb);
                    for (int64_t c = 0; c < dim; ++c) {
                        if (amb[size_t(c)]) continue;
                        const double got = out[size_t(t * dim + c)];
                        QVERIFY2(std::fabs(got - ref[size_t(c)]) <=
                                     1e-6 * std::max(1.0, std::fabs(ref[size_t(c)])),
                                 qPrintable(QString("bits %1 mode %2 t %3 c %4: %5 vs %6")
                                                .arg(bits)
                                                .arg(mode)
                                                .arg(t)
                                                .arg(c)
                                                .arg(got)
                                                .arg(ref[size_t(c)])));
                        ++checked;
                    }
                }
                QVERIFY(checked > n * dim * 9 / 10);
                // outlier channels pass through bit for bit
                for (int32_t c : s.outlierChannels)
                    for (int64_t t = 0; t < n; ++t)
                        QCOMPARE(out[size_t(t * dim + c)], x[size_t(t * dim + c)]);
                // values take at most 2*qmax + 1 levels per row
                if (s.perToken && bits <= 4) {
                    std::set<float> levels(out.begin(), out.begin() + dim);
                    QVERIFY(int(levels.size()) <= (1 << bits) + 2);
                }
            }
        }
        // in place gives the same result
        ActQuantSpec s;
        s.bits = 4;
        s.outlierChannels = {3};
        std::vector<float> a(x.size()), b = x;
        runtime::fakeQuantizeActivations(s, x.data(), dim, a.data(), dim, n, dim, 1);
        runtime::fakeQuantizeActivations(s, b.data(), dim, b.data(), dim, n, dim, 1);
        QCOMPARE(a, b);
    }

    void kvStreamQuantisesOnceAndBoundsTheError() {
        const int64_t W = 24, N = 37;
        const auto x = randomRows(N, W, 2);
        for (auto g : {KvGranularity::Token, KvGranularity::Channel}) {
            for (int bits : {2, 4, 8}) {
                const int64_t G = g == KvGranularity::Token ? 10 : 8;
                runtime::KvStream whole, oneByOne, chunks;
                whole.init(bits, g, G, W);
                oneByOne.init(bits, g, G, W);
                chunks.init(bits, g, G, W);
                whole.append(x.data(), W, N);
                for (int64_t t = 0; t < N; ++t) oneByOne.append(x.data() + t * W, W, 1);
                chunks.append(x.data(), W, 5);
                chunks.append(x.data() + 5 * W, W, 19);
                chunks.append(x.data() + 24 * W, W, N - 24);
                kernels::FloatBuffer b1, b2, b3;
                const float* r1 = whole.read(N, b1, 2);
                const float* r2 = oneByOne.read(N, b2, 1);
                const float* r3 = chunks.read(N, b3, 1);
                for (int64_t i = 0; i < N * W; ++i) {
                    QCOMPARE(r2[i], r1[i]);
                    QCOMPARE(r3[i], r1[i]);
                }
                // error within half a step of each value's own group range
                const double levels = double((1 << bits) - 1);
                const int64_t qrows = g == KvGranularity::Channel ? N / G * G : N;
                for (int64_t t = 0; t < N; ++t)
                    for (int64_t c = 0; c < W; ++c) {
                        double lo = 1e30, hi = -1e30;
                        if (g == KvGranularity::Token) {
                            const int64_t c0 = c / G * G, c1 = std::min(c0 + G, W);
                            for (int64_t k = c0; k < c1; ++k)
                                lo = std::min(lo, double(x[size_t(t * W + k)])),
                                hi = std::max(hi, double(x[size_t(t * W + k)]));
                        } else {
                            const int64_t t0 = t / G * G;
                            for (int64_t k = t0; k < std::min(t0 + G, N); ++k)
                                lo = std::min(lo, double(x[size_t(k * W + c)])),
                                hi = std::max(hi, double(x[size_t(k * W + c)]));
                        }
                        const double err = std::fabs(double(r1[t * W + c]) - x[size_t(t * W + c)]);
                        if (t >= qrows) {
                            QCOMPARE(r1[t * W + c], x[size_t(t * W + c)]); // f32 tail
                            continue;
                        }
                        QVERIFY2(err <= (hi - lo) / levels * 0.5 + 1e-5 * (1 + std::fabs(hi)),
                                 qPrintable(QString("bits %1 t %2 c %3 err %4")
                                                .arg(bits)
                                                .arg(t)
                                                .arg(c)
                                                .arg(err)));
                    }
                // bytes: bit-packed codes + f32 scale and minimum per group + f32 tail
                const uint64_t rowBytes = uint64_t((W * bits + 7) / 8);
                const uint64_t expect = g == KvGranularity::Token
                                            ? uint64_t(N) * (rowBytes + 3 * 8)
                                            : uint64_t(qrows) * rowBytes +
                                                  uint64_t(qrows / G) * uint64_t(W) * 8 +
                                                  uint64_t(N - qrows) * uint64_t(W) * 4;
                QCOMPARE(whole.bytes(), expect);
                // truncate then re-append the same rows: the same cache
                whole.truncate(13);
                QCOMPARE(whole.rows(), int64_t(13));
                if (g == KvGranularity::Token) {
                    whole.append(x.data() + 13 * W, W, N - 13);
                    const float* r4 = whole.read(N, b1, 1);
                    for (int64_t i = 0; i < N * W; ++i) QCOMPARE(r4[i], r2[i]);
                }
            }
        }
    }

    void sixteenBitSettingsLeaveLogitsIdentical() {
        auto m = Model::load(demoModel());
        const auto ids = demoTokens(*m, 40);
        const auto base = allLogits(*m, ids);
        const auto r = parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'activation':{'bits':16},"
                             "'kv':{'k_bits':16,'v_bits':16}}]}");
        auto cm = applied(*m, r);
        QVERIFY(cm->runtimeQuant() == nullptr);
        QCOMPARE(allLogits(*cm, ids), base);
        // and a quantised configuration does change them (against float32 activations: without
        // --exact-activations W8A16 reads activations as 8-bit blocks too, which on this
        // 64-wide model are W8A8's per-token scales)
        auto w8a8 = applied(*m, findPreset("W8A8").recipe);
        auto w8 = applied(*m, findPreset("W8A16").recipe);
        QVERIFY(w8a8->runtimeQuant() != nullptr);
        QCOMPARE(int(w8a8->runtimeQuant()->activations.size()), 5 * 7);
        QVERIFY(allLogits(*w8a8, ids, true) != allLogits(*w8, ids, true));
    }

    void kvBitsOrderTheDivergence() {
        auto m = Model::load(demoModel());
        const auto ids = demoTokens(*m, 128);
        const int64_t vocab = m->spec().vocab;
        const auto base = allLogits(*m, ids);
        double kld[3];
        const char* names[3] = {"KV8", "KV4", "KV2"};
        for (int i = 0; i < 3; ++i) {
            auto cm = applied(*m, findPreset(names[i]).recipe);
            QCOMPARE(int(cm->runtimeQuant()->kv.size()), 5);
            kld[i] = meanKld(base, allLogits(*cm, ids), vocab);
        }
        qInfo("mean KLD vs base: KV8 %.3g, KV4 %.3g, KV2 %.3g", kld[0], kld[1], kld[2]);
        QVERIFY(kld[0] > 0);
        QVERIFY(kld[0] < 2e-3);
        QVERIFY(kld[0] < kld[1]);
        QVERIFY(kld[1] < kld[2]);
    }

    void quantisedCacheDecodeEqualsPrefill() {
        // The cache is quantised once per row (token granularity) or per full block (channel
        // granularity) and a query sees the cache as it was when its token arrived, so one
        // prefill and token-by-token decoding give the same logits for every token.
        auto m = Model::load(demoModel());
        const auto ids = demoTokens(*m, 70);
        for (const char* kvs :
             {"{'k_bits':4,'v_bits':4}",
              "{'k_bits':3,'v_bits':2,'k_granularity':'channel','group_size':16}",
              "{'k_bits':2,'v_bits':4,'v_granularity':'channel','group_size':7}"}) {
            auto cm =
                applied(*m, parse(std::string("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':") +
                                  kvs + "}]}"));
            // A: prefill of 50 tokens (not a multiple of the block), B: 50 single steps;
            // then both decode 20 more tokens.
            Session a(*cm), b(*cm);
            std::vector<float> la, lb, stepLogits;
            a.forward(std::span(ids.data(), 50), la, true);
            for (int64_t t = 0; t < 50; ++t) {
                b.forward(std::span(ids.data() + t, 1), lb, false);
                stepLogits.insert(stepLogits.end(), lb.begin(), lb.end());
            }
            QCOMPARE(a.kvCacheBytes(), b.kvCacheBytes());
            QVERIFY(a.kvCacheBytes() < a.kvCacheBytesF32() / 2);
            double maxDiff = 0;
            for (size_t i = 0; i < la.size(); ++i)
                maxDiff = std::max(maxDiff, double(std::fabs(la[i] - stepLogits[i])));
            for (int64_t t = 50; t < 70; ++t) {
                a.forward(std::span(ids.data() + t, 1), la, false);
                b.forward(std::span(ids.data() + t, 1), lb, false);
                for (size_t i = 0; i < la.size(); ++i)
                    maxDiff = std::max(maxDiff, double(std::fabs(la[i] - lb[i])));
            }
            qInfo("%s: decode vs prefill max |dlogit| %.3g", kvs, maxDiff);
            QVERIFY2(maxDiff < 1e-3, qPrintable(QString::number(maxDiff)));
        }
    }

    void outlierChannelsAndStaticScalesFromCalibration() {
        auto m = Model::load(demoModel());
        const auto r =
            parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'activation':{'bits':8,"
                  "'mode':'static_per_tensor','clip':0.9},'outliers':{'threshold':4.0}}]}");
        auto cm = applied(*m, r);
        const RuntimeQuant* rq = cm->runtimeQuant();
        QVERIFY(rq);
        NullProgress p;
        const auto absMax =
            calibrateInputAbsMax(*m, {"layers.4.mlp.down", "layers.0.attn.q"}, {}, p);
        int outliers = 0;
        for (const auto& [name, mx] : absMax) {
            const ActQuantSpec* s = rq->activation(name);
            QVERIFY(s && !s->perToken && s->bits == 8 && std::fabs(s->clip - 0.9f) < 1e-7);
            std::vector<int32_t> expect;
            float rest = 0;
            for (size_t c = 0; c < mx.size(); ++c) {
                if (mx[c] >= 4.0f)
                    expect.push_back(int32_t(c));
                else
                    rest = std::max(rest, mx[c]);
            }
            QCOMPARE(s->outlierChannels, expect);
            QCOMPARE(s->absMax, rest);
            outliers += int(expect.size());
        }
        QVERIFY(outliers > 0); // the demo model has inputs above 4 (layers.4.mlp.down: 10.7)

        // saved and loaded: the same specs, the same logits
        const std::string dir = lcwtest::tempDir("rtq-overlay");
        cm->save(dir);
        auto back = CompressedModel::load(dir, *m);
        QVERIFY(back->runtimeQuant());
        QVERIFY(back->runtimeQuant()->activations == rq->activations);
        QVERIFY(back->runtimeQuant()->kv == rq->kv);
        const auto ids = demoTokens(*m, 30);
        QCOMPARE(allLogits(*back, ids), allLogits(*cm, ids));
        auto kv = applied(*m, findPreset("KV2-KIVI").recipe);
        kv->save(dir);
        auto kvBack = CompressedModel::load(dir, *m);
        QVERIFY(kvBack->runtimeQuant()->kv == kv->runtimeQuant()->kv);
        QCOMPARE(kvBack->runtimeQuant()->kv.at(0).kGranularity, KvGranularity::Channel);
    }

    void recipeSettingsResolveAndBadOnesAreRecipeErrors() {
        auto m = Model::load(demoModel());
        const auto r =
            parse("{'lcw_recipe':1,'rules':["
                  "{'targets':['*'],'activation':{'bits':4},'kv':{'k_bits':4,'v_bits':8}},"
                  "{'targets':['*.mlp.down'],'activation':{'clip':0.8}},"
                  "{'targets':['layers.1.*'],'activation':null,'kv':{'k_granularity':'channel'}},"
                  "{'targets':['layers.2.attn.v'],'kv':null},"
                  "{'targets':['layers.3.attn.o'],'weight':{'bits':8}}]}");
        const Plan plan = planRecipe(r, *m);
        QCOMPARE(int(plan.layers.size()), 1); // weights only where a weight section applies
        QCOMPARE(int(plan.activations.size()), 4 * 7);
        for (const auto& a : plan.activations) {
            QVERIFY(a.name.rfind("layers.1.", 0) != 0);
            QCOMPARE(a.act.bits, 4);
            const bool down = a.name.find("mlp.down") != std::string::npos;
            QCOMPARE(a.act.clip, down ? 0.8 : 1.0);
            QCOMPARE(a.rule, down ? 1 : 0);
        }
        // block 2: the null in rule 3 (matching attn.v) clears its kv section
        QCOMPARE(int(plan.kv.size()), 4);
        for (const auto& k : plan.kv) {
            QVERIFY(k.layer != 2);
            QCOMPARE(k.kv.kBits, 4);
            QCOMPARE(k.kv.vBits, 8);
            QCOMPARE(k.kv.kGranularity,
                     k.layer == 1 ? KvGranularity::Channel : KvGranularity::Token);
            QCOMPARE(k.width, int64_t(32));
        }
        QCOMPARE(KvSettings::bitsPerValue(4, KvGranularity::Token, 128, 32), 4.0 + 64.0 / 32);
        QCOMPARE(KvSettings::bitsPerValue(2, KvGranularity::Channel, 32, 32), 2.0 + 2.0);

        expectRecipeError(
            [&] {
                planRecipe(parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'weight':{'bits':8}},"
                                 "{'targets':['embed'],'activation':{'bits':8}}]}"),
                           *m);
            },
            1, "activation");
        expectRecipeError(
            [&] {
                planRecipe(
                    parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':{'group_size':64}}]}"),
                    *m);
            },
            0, "kv.group_size");
        expectRecipeError(
            [&] { parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'kv':{'v_bits':1}}]}"); }, 0,
            "kv.v_bits");
        expectRecipeError(
            [&] {
                parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'weight':{'bits':8}},"
                      "{'targets':['*'],'activation':{'mode':'per_row'}}]}");
            },
            1, "activation.mode");
        expectRecipeError(
            [&] { parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'activation':{'clip':0}}]}"); },
            0, "activation.clip");
        expectRecipeError(
            [&] {
                parse("{'lcw_recipe':1,'rules':[{'targets':['*'],'outliers':{'threshold':-1}}]}");
            },
            0, "outliers.threshold");
        // presets cover Qllm-Eval's and OmniQuant's settings
        for (const char* p : {"W8A8", "W6A6", "W4A8", "W4A4", "KV8", "KV4", "KV2"})
            QVERIFY(!findPreset(p).description.empty());
    }

    void cliReportsActivationsKvAndCacheBytes() {
        const auto c = lcwtest::runCli(
            {"compress", QString::fromStdString(demoModel()), "--preset", "W4A8", "--json"});
        QVERIFY2(c.code == 0, c.err.constData());
        const json j = json::parse(c.out.toStdString());
        QCOMPARE(int(j["activations"].size()), 35);
        QCOMPARE(j["activations"][0]["bits"].get<int>(), 8);
        QCOMPARE(j["activations"][0]["mode"].get<std::string>(), std::string("dynamic_per_token"));
        QVERIFY(j["kv"].empty());
        const auto k = lcwtest::runCli(
            {"compress", QString::fromStdString(demoModel()), "--preset", "KV4", "--json"});
        QVERIFY2(k.code == 0, k.err.constData());
        const json kj = json::parse(k.out.toStdString());
        QCOMPARE(int(kj["kv"].size()), 5);
        QCOMPARE(kj["kv"][0]["k_bits"].get<int>(), 4);
        QCOMPARE(kj["kv"][0]["k_bits_per_value"].get<double>(), 6.0);
        const auto p = lcwtest::runCli(
            {"perplexity", QString::fromStdString(demoModel()), "--text",
             QString::fromStdString(lcwtest::sourcePath("resources/data/tinystories_eval.txt")),
             "--ctx", "64", "--preset", "KV4", "--json", "--quiet"});
        QVERIFY2(p.code == 0, p.err.constData());
        const json pj = json::parse(p.out.toStdString());
        // 64 tokens x 5 layers x (K + V) rows of 32 values: 4-bit codes + two f32 per row
        QCOMPARE(pj["kv_cache_bytes"].get<uint64_t>(), uint64_t(64 * 5 * 2 * (16 + 8)));
        QCOMPARE(pj["kv_cache_bytes_f32"].get<uint64_t>(), uint64_t(64 * 5 * 2 * 32 * 4));
    }

    void lowRankFactorsGiveTheLogitsOfTheirProduct() {
        auto m = Model::load(demoModel());
        const auto ids = demoTokens(*m, 24);
        std::mt19937 rng(5);
        std::normal_distribution<float> nd(0.0f, 0.15f);
        Patched dense(*m), lowRank(*m);
        for (const std::string name : {"layers.1.attn.q", "layers.2.mlp.down", "layers.3.mlp.up"}) {
            const TensorView& t = m->get(name);
            const int64_t out = t.shape[0], in = t.shape[1], r = 12;
            std::vector<float> a(size_t(r * in)), b(size_t(out * r)), p(size_t(out * in));
            for (auto& x : a) x = nd(rng);
            for (auto& x : b) x = nd(rng);
            for (int64_t o = 0; o < out; ++o)
                for (int64_t i = 0; i < in; ++i) {
                    double acc = 0;
                    for (int64_t k = 0; k < r; ++k)
                        acc += double(b[size_t(o * r + k)]) * double(a[size_t(k * in + i)]);
                    p[size_t(o * in + i)] = float(acc);
                }
            dense.mem.add(name, {out, in}, p);
            lowRank.hidden.insert(name);
            lowRank.mem.add(name + ".lowrank_a", {r, in}, a);
            lowRank.mem.add(name + ".lowrank_b", {out, r}, b);
        }
        const auto ld = allLogits(dense, ids), ll = allLogits(lowRank, ids);
        QVERIFY(maxAbsDiff(ld, allLogits(*m, ids)) > 0.1); // the replaced layers matter
        const double d = maxAbsDiff(ld, ll);
        qInfo("low rank vs product: max |dlogit| %.3g", d);
        QVERIFY2(d < 1e-4, qPrintable(QString::number(d)));

        Patched bad(*m);
        bad.hidden.insert("layers.0.mlp.up");
        bad.mem.add("layers.0.mlp.up.lowrank_a", {4, 64}, std::vector<float>(256, 0.0f));
        QVERIFY_THROWS_EXCEPTION(Error, Session s(bad));
    }

    void prunedMlpChannelsEqualZeroedChannels() {
        auto m = Model::load(demoModel());
        const auto ids = demoTokens(*m, 24);
        const int64_t dim = 64, hid = 172;
        std::vector<int64_t> keep;
        for (int64_t c = 0; c < hid; ++c)
            if (c % 4 != 1) keep.push_back(c);
        const int64_t kh = int64_t(keep.size());
        Patched pruned(*m), zeroed(*m);
        for (const char* nm : {"layers.2.mlp.gate", "layers.2.mlp.up"}) {
            const auto w = weightOf(*m, nm);
            std::vector<float> pr(size_t(kh * dim)), z(w.size(), 0.0f);
            for (int64_t i = 0; i < kh; ++i)
                for (int64_t j = 0; j < dim; ++j) {
                    pr[size_t(i * dim + j)] = w[size_t(keep[size_t(i)] * dim + j)];
                    z[size_t(keep[size_t(i)] * dim + j)] = w[size_t(keep[size_t(i)] * dim + j)];
                }
            pruned.mem.add(nm, {kh, dim}, pr);
            zeroed.mem.add(nm, {hid, dim}, z);
        }
        const auto down = weightOf(*m, "layers.2.mlp.down");
        std::vector<float> pd(size_t(dim * kh));
        for (int64_t o = 0; o < dim; ++o)
            for (int64_t i = 0; i < kh; ++i)
                pd[size_t(o * kh + i)] = down[size_t(o * hid + keep[size_t(i)])];
        pruned.mem.add("layers.2.mlp.down", {dim, kh}, pd);
        const auto lp = allLogits(pruned, ids), lz = allLogits(zeroed, ids);
        QVERIFY(maxAbsDiff(lz, allLogits(*m, ids)) > 0.01);
        const double d = maxAbsDiff(lp, lz);
        qInfo("MLP channels removed vs zeroed: max |dlogit| %.3g", d);
        QVERIFY2(d < 1e-4, qPrintable(QString::number(d)));
    }

    void prunedAttentionHeadsEqualZeroedOutputColumns() {
        // Remove KV head 1 of block 1 with its two query heads (2, 3): the remaining heads keep
        // their GQA groups. Reference: the full block with those heads' o-proj columns zeroed.
        auto m = Model::load(demoModel());
        const auto ids = demoTokens(*m, 24);
        const int64_t dim = 64, hd = 8;
        auto dropRows = [&](const std::vector<float>& w, int64_t rows, int64_t cols, int64_t r0,
                            int64_t r1) {
            std::vector<float> out;
            for (int64_t r = 0; r < rows; ++r)
                if (r < r0 || r >= r1)
                    out.insert(out.end(), w.begin() + r * cols, w.begin() + (r + 1) * cols);
            return out;
        };
        Patched pruned(*m), zeroed(*m);
        pruned.mem.add("layers.1.attn.q", {6 * hd, dim},
                       dropRows(weightOf(*m, "layers.1.attn.q"), 8 * hd, dim, 2 * hd, 4 * hd));
        for (const char* nm : {"layers.1.attn.k", "layers.1.attn.v"})
            pruned.mem.add(nm, {3 * hd, dim}, dropRows(weightOf(*m, nm), 4 * hd, dim, hd, 2 * hd));
        const auto o = weightOf(*m, "layers.1.attn.o");
        std::vector<float> po, zo = o;
        for (int64_t r = 0; r < dim; ++r)
            for (int64_t c = 0; c < 8 * hd; ++c) {
                if (c >= 2 * hd && c < 4 * hd)
                    zo[size_t(r * 8 * hd + c)] = 0.0f;
                else
                    po.push_back(o[size_t(r * 8 * hd + c)]);
            }
        pruned.mem.add("layers.1.attn.o", {dim, 6 * hd}, po);
        zeroed.mem.add("layers.1.attn.o", {dim, 8 * hd}, zo);
        const auto lp = allLogits(pruned, ids), lz = allLogits(zeroed, ids);
        QVERIFY(maxAbsDiff(lz, allLogits(*m, ids)) > 0.01);
        const double d = maxAbsDiff(lp, lz);
        qInfo("attention heads removed vs zeroed: max |dlogit| %.3g", d);
        QVERIFY2(d < 1e-4, qPrintable(QString::number(d)));
        // the pruned block's cache is a quarter smaller
        Session s(pruned);
        std::vector<float> lg;
        s.forward(std::span(ids.data(), 10), lg);
        QCOMPARE(s.kvCacheBytes(), uint64_t(10 * (4 * 4 + 3) * hd * 2 * 4));
        // shapes the runtime cannot run
        Patched bad(*m);
        bad.mem.add("layers.0.attn.q", {60, dim}, std::vector<float>(60 * dim, 0.0f));
        QVERIFY_THROWS_EXCEPTION(Error, Session s2(bad));
        Patched bad2(*m);
        bad2.mem.add("layers.0.attn.q", {3 * hd, dim}, std::vector<float>(3 * hd * dim, 0.0f));
        QVERIFY_THROWS_EXCEPTION(Error, Session s3(bad2)); // 3 query heads over 4 KV heads
    }
};

QTEST_GUILESS_MAIN(TestRuntimeQuant)
#include "test_runtime_quant.moc"
