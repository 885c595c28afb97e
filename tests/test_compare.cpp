// Tests of the generation compare (core/eval/generation_compare) and the hidden-state error
// (core/eval/hidden_error) on the demo model, and of `lcw-cli compare` / `lcw-cli hidden-error`.
// References are recomputed independently: log-probs from full-logit forwards, KLD per decode
// step in double, hidden-state errors from residuals captured by a separate observer.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/eval/generation_compare.h"
#include "core/eval/hidden_error.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>

using namespace lcw;

namespace {

/// Forwards every tensor of another source (an identical configuration that is a different
/// object).
class Forward final : public WeightSource {
public:
    explicit Forward(const WeightSource& base) : m_base(base) {}
    const ModelSpec& spec() const override { return m_base.spec(); }
    const TensorView* find(std::string_view n) const override { return m_base.find(n); }

private:
    const WeightSource& m_base;
};

std::string demoPath() {
    return lcwtest::sourcePath("resources/models/stories260K");
}
std::string textPath() {
    return lcwtest::sourcePath("resources/data/tinystories_eval.txt");
}

/// ln softmax(row)[id] in double.
double logProb(const float* row, int64_t vocab, int32_t id) {
    double mx = row[0];
    for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, double(row[i]));
    double s = 0;
    for (int64_t i = 0; i < vocab; ++i) s += std::exp(double(row[i]) - mx);
    return double(row[id]) - mx - std::log(s);
}

/// Logits [n, vocab] of every position of `ids` in one forward.
std::vector<float> allLogits(const WeightSource& w, const std::vector<int32_t>& ids) {
    SessionOptions so;
    so.contextLength = int64_t(ids.size());
    so.threads = 1;
    Session s(w, so);
    std::vector<float> logits;
    s.forward(ids, logits, true);
    return logits;
}

/// Keeps the residual stream after the last block.
class LastResidual final : public Observer {
public:
    int layer;
    std::vector<float> h;
    explicit LastResidual(int l) : layer(l) {}
    void onResidual(int l, const float* x, int64_t n, int64_t dim) override {
        if (l == layer) h.insert(h.end(), x, x + n * dim);
    }
};

} // namespace

class TestCompare : public QObject {
    Q_OBJECT
    std::unique_ptr<Model> m_model;
    std::unique_ptr<compress::CompressedModel> m_w2, m_w4;
    std::vector<int32_t> m_prompt;

private slots:
    void initTestCase() {
        m_model = Model::load(demoPath());
        NullProgress np;
        m_w2 = std::move(
            compress::compress(*m_model, compress::findPreset("W2A16-g32").recipe, np).model);
        m_w4 = std::move(
            compress::compress(*m_model, compress::findPreset("W4A16-g32").recipe, np).model);
        m_prompt = m_model->tokenizer().encode("Once upon a time", true);
    }

    void selfCompareHasNoDivergence() {
        Forward same(*m_model);
        GenerationCompareOptions o;
        o.threads = 1; // tiny model: threads inside a forward only cost barriers
        o.maxNewTokens = 32;
        NullProgress np;
        const auto r = compareGenerations(*m_model, {{"same", &same}}, m_prompt, o, np);
        QCOMPARE(r.status, Status::Ok);
        QCOMPARE(r.configs.size(), size_t(1));
        const auto& t = r.configs[0];
        QCOMPARE(t.firstDivergence, int64_t(-1));
        QCOMPARE(t.ids, r.baseline.ids);
        QCOMPARE(t.logProbs, r.baseline.logProbs);
        QCOMPARE(t.kld.size(), r.baseline.ids.size());
        for (double k : t.kld) QCOMPARE(k, 0.0);
        QCOMPARE(t.meanKld, 0.0);
        QCOMPARE(t.baselineTokenLogProbs, r.baseline.baselineTokenLogProbs);
    }

    void knownDivergenceAndReferenceNumbers() {
        GenerationCompareOptions o;
        o.threads = 1; // tiny model: threads inside a forward only cost barriers
        o.maxNewTokens = 40;
        NullProgress np;
        const auto r =
            compareGenerations(*m_model, {{"w4", m_w4.get()}, {"w2", m_w2.get()}}, m_prompt, o, np);
        const auto& base = r.baseline;
        QCOMPARE(int64_t(base.ids.size()), o.maxNewTokens); // the demo model does not stop early
        const int64_t vocab = m_model->spec().vocab;
        for (const auto* t : {&r.configs[0], &r.configs[1]}) {
            // The divergence index: equal before it, different at it.
            const int64_t d = t->firstDivergence;
            QVERIFY2(d >= 0, qPrintable(QString::fromStdString(t->name)));
            for (int64_t i = 0; i < d; ++i) QCOMPARE(t->ids[size_t(i)], base.ids[size_t(i)]);
            QVERIFY(t->ids[size_t(d)] != base.ids[size_t(d)]);
            // Log-probs of its own tokens from one full-logit forward of prompt + its tokens.
            const WeightSource& w = t->name == "w4" ? *m_w4 : *m_w2;
            std::vector<int32_t> seq = m_prompt;
            seq.insert(seq.end(), t->ids.begin(), t->ids.end());
            const auto lg = allLogits(w, seq);
            for (size_t i = 0; i < t->ids.size(); ++i) {
                const double ref = logProb(lg.data() + (m_prompt.size() - 1 + i) * size_t(vocab),
                                           vocab, t->ids[i]);
                QVERIFY2(std::abs(ref - t->logProbs[i]) < 1e-4,
                         qPrintable(QString("%1 token %2: %3 vs %4")
                                        .arg(QString::fromStdString(t->name))
                                        .arg(i)
                                        .arg(t->logProbs[i])
                                        .arg(ref)));
            }
        }
        // W2 diverges at once on this prompt, W4 later; W2's KLD is far larger.
        QVERIFY(r.configs[1].firstDivergence < r.configs[0].firstDivergence);
        QVERIFY(r.configs[1].meanKld > 10 * r.configs[0].meanKld);
        QVERIFY(r.configs[0].meanKld > 0);

        // KLD along the baseline's text: reference from full-logit forwards of both models
        // over prompt + baseline tokens, in double.
        std::vector<int32_t> seq = m_prompt;
        seq.insert(seq.end(), base.ids.begin(), base.ids.end());
        const auto lb = allLogits(*m_model, seq);
        const auto lq = allLogits(*m_w2, seq);
        double maxErr = 0;
        for (size_t i = 0; i < base.ids.size(); ++i) {
            const size_t row = (m_prompt.size() - 1 + i) * size_t(vocab);
            double kld = 0;
            for (int64_t v = 0; v < vocab; ++v) {
                const double pb = logProb(lb.data() + row, vocab, int32_t(v));
                const double pq = logProb(lq.data() + row, vocab, int32_t(v));
                kld += std::exp(pb) * (pb - pq);
            }
            maxErr = std::max(maxErr, std::abs(kld - r.configs[1].kld[i]) / std::max(1.0, kld));
            QVERIFY(std::abs(logProb(lq.data() + row, vocab, base.ids[i]) -
                             r.configs[1].baselineTokenLogProbs[i]) < 1e-4);
        }
        QVERIFY2(maxErr < 1e-4, qPrintable(QString::number(maxErr)));
    }

    void seededSamplingIsReproducible() {
        GenerationCompareOptions o;
        o.threads = 1; // tiny model: threads inside a forward only cost barriers
        o.maxNewTokens = 48;
        o.sampling.temperature = 1.0f;
        o.sampling.seed = 7;
        NullProgress np;
        Forward same(*m_model);
        const auto a =
            compareGenerations(*m_model, {{"w4", m_w4.get()}, {"same", &same}}, m_prompt, o, np);
        const auto b =
            compareGenerations(*m_model, {{"w4", m_w4.get()}, {"same", &same}}, m_prompt, o, np);
        QCOMPARE(a.baseline.ids, b.baseline.ids);
        QCOMPARE(a.configs[0].ids, b.configs[0].ids);
        QCOMPARE(a.configs[0].logProbs, b.configs[0].logProbs);
        // The same distributions with the same seed draw the same tokens.
        QCOMPARE(a.configs[1].firstDivergence, int64_t(-1));
        o.sampling.seed = 8;
        const auto c = compareGenerations(*m_model, {}, m_prompt, o, np);
        QVERIFY(c.baseline.ids != a.baseline.ids);
        // Sampled, not greedy: the greedy continuation differs too.
        o.sampling.temperature = 0;
        const auto g = compareGenerations(*m_model, {}, m_prompt, o, np);
        QVERIFY(g.baseline.ids != a.baseline.ids);
    }

    void badInputAndCancel() {
        GenerationCompareOptions o;
        o.threads = 1; // tiny model: threads inside a forward only cost barriers
        NullProgress np;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, compareGenerations(*m_model, {}, {}, o, np));
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 compareGenerations(*m_model, {}, {1, 100000}, o, np));
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError, compareGenerations(*m_model, {{"null", nullptr}}, m_prompt, o, np));
        o.maxNewTokens = 0;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, compareGenerations(*m_model, {}, m_prompt, o, np));
        o.maxNewTokens = 30;
        int calls = 0;
        FunctionProgress stop([&](double, std::string_view) { return ++calls < 5; });
        const auto r = compareGenerations(*m_model, {{"w4", m_w4.get()}}, m_prompt, o, stop);
        QCOMPARE(r.status, Status::Cancelled);
    }

    void hiddenErrorZeroForIdentityPositiveForW2() {
        const auto tokens = m_model->tokenizer().encode(readTextFile(textPath()), true);
        PerplexityOptions po;
        po.ctx = 64;
        po.batch = 64;
        po.maxChunks = 2;
        po.threads = 1;
        po.bosId = m_model->tokenizer().bosId();
        Forward same(*m_model);
        NullProgress np;
        const auto r =
            hiddenStateError(*m_model, {{"same", &same}, {"w2", m_w2.get()}}, tokens, po, np);
        QCOMPARE(r.status, Status::Ok);
        QCOMPARE(r.tokens, int64_t(128));
        const int L = int(m_model->spec().nLayers);
        QCOMPARE(int(r.configs[0].blocks.size()), L);
        for (const auto& b : r.configs[0].blocks) {
            QCOMPARE(b.relError, 0.0);
            QCOMPARE(b.meanRelError, 0.0);
            QVERIFY(std::abs(b.meanCosine - 1.0) < 1e-12);
        }
        for (const auto& b : r.configs[1].blocks) {
            QVERIFY(b.relError > 0.1);
            QVERIFY(b.meanCosine < 0.99);
            QVERIFY(b.minCosine <= b.meanCosine);
        }
        // Reference for the last block: residuals captured separately, errors in double.
        LastResidual cb(L - 1), cq(L - 1);
        SessionOptions so;
        so.contextLength = 64;
        so.threads = 1;
        Session sb(*m_model, so), sq(*m_w2, so);
        sb.addObserver(&cb);
        sq.addObserver(&cq);
        std::vector<float> logits;
        double d2 = 0, r2 = 0, cosSum = 0;
        const int64_t dim = m_model->spec().dim;
        for (int c = 0; c < 2; ++c) {
            std::vector<int32_t> w(tokens.begin() + c * 64, tokens.begin() + (c + 1) * 64);
            w[0] = po.bosId;
            cb.h.clear();
            cq.h.clear();
            sb.reset();
            sq.reset();
            sb.forward(w, logits, false);
            sq.forward(w, logits, false);
            for (int64_t t = 0; t < 64; ++t) {
                double xy = 0, xx = 0, yy = 0;
                for (int64_t i = 0; i < dim; ++i) {
                    const double x = cb.h[size_t(t * dim + i)], y = cq.h[size_t(t * dim + i)];
                    d2 += (x - y) * (x - y);
                    r2 += x * x;
                    xy += x * y;
                    xx += x * x;
                    yy += y * y;
                }
                cosSum += xy / std::sqrt(xx * yy);
            }
        }
        const auto& last = r.configs[1].blocks.back();
        QVERIFY(std::abs(last.relError - std::sqrt(d2 / r2)) < 1e-6);
        QVERIFY(std::abs(last.meanCosine - cosSum / 128) < 1e-6);
    }

    void cliCompareJson() {
        const auto r =
            lcwtest::runCli({"compare", QString::fromStdString(demoPath()), "--preset", "W4A16-g32",
                             "--preset", "W2A16-g32", "--prompt", "Once upon a time",
                             "--max-tokens", "24", "--json", "--threads", "1", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto j = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(j["sampling"]["mode"].get<std::string>(), std::string("greedy"));
        const auto& b = j["baseline"];
        QVERIFY(b["first_divergence"].is_null());
        const size_t n = b["ids"].size();
        QCOMPARE(n, size_t(24));
        QCOMPARE(j["configs"].size(), size_t(2));
        for (const auto& c : j["configs"]) {
            QCOMPARE(c["pieces"].size(), c["ids"].size());
            QCOMPARE(c["logprobs"].size(), c["ids"].size());
            QCOMPARE(c["kld"].size(), n);
            std::string text;
            for (const auto& p : c["pieces"]) text += p.get<std::string>();
            QCOMPARE(text, c["text"].get<std::string>().substr(c["text"].get<std::string>().size() -
                                                               text.size()));
        }
        QVERIFY(j["configs"][1]["first_divergence"].get<int>() >= 0);

        const auto t = lcwtest::runCli({"compare", QString::fromStdString(demoPath()), "--preset",
                                        "W2A16-g32", "--prompt", "Once upon a time", "--max-tokens",
                                        "16", "--width", "80", "--threads", "1", "--quiet"});
        QVERIFY2(t.code == 0, t.err.constData());
        QVERIFY(t.out.contains("»"));
        QVERIFY(t.out.contains("W2A16-g32"));
        const auto none = lcwtest::runCli({"compare", QString::fromStdString(demoPath()),
                                           "--prompt", "x", "--threads", "1", "--quiet"});
        QCOMPARE(none.code, 2);
    }

    void cliHiddenErrorJson() {
        const auto r = lcwtest::runCli({"hidden-error", QString::fromStdString(demoPath()),
                                        "--preset", "W4A16-g32", "--ctx", "64", "--chunks", "2",
                                        "--json", "--threads", "1", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const auto j = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(j["configs"][0]["blocks"].size(), size_t(5));
        for (const auto& b : j["configs"][0]["blocks"]) {
            QVERIFY(b["rel_error"].get<double>() > 0);
            QVERIFY(b["mean_cosine"].get<double>() < 1);
        }
    }
};

QTEST_GUILESS_MAIN(TestCompare)
#include "test_compare.moc"
