// Tests of core/eval perplexity: the chunking/scoring rules on small in-memory models with known
// answers, and llama.cpp's reference numbers for stories260K on tinystories_eval.txt.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/eval/perplexity.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "mem_weights.h"
#include "test_util.h"

#include <cmath>
#include <deque>
#include <map>
#include <random>

using namespace lcw;

namespace {

using lcwtest::MemWeights;

/// A small llama; lmScale 0 makes every prediction uniform (PPL = vocab exactly).
std::unique_ptr<MemWeights> makeModel(float lmScale, int64_t vocab = 50) {
    auto m = std::make_unique<MemWeights>();
    ModelSpec& s = m->sp;
    s.arch = "llama";
    s.dim = 32, s.nLayers = 1, s.nHeads = 2, s.nKvHeads = 1, s.headDim = 16, s.hidden = 48;
    s.vocab = vocab, s.maxSeq = 64;
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<float> d(-0.3f, 0.3f);
    auto rnd = [&](int64_t n, float scale = 1.0f) {
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& x : v) x = d(rng) * scale;
        return v;
    };
    const std::vector<float> ones(32, 1.0f);
    m->add("embed", {vocab, 32}, rnd(vocab * 32, 3.0f));
    m->add("layers.0.attn_norm", {32}, ones);
    m->add("layers.0.mlp_norm", {32}, ones);
    m->add("layers.0.attn.q", {32, 32}, rnd(32 * 32));
    m->add("layers.0.attn.k", {16, 32}, rnd(16 * 32));
    m->add("layers.0.attn.v", {16, 32}, rnd(16 * 32));
    m->add("layers.0.attn.o", {32, 32}, rnd(32 * 32));
    m->add("layers.0.mlp.gate", {48, 32}, rnd(48 * 32));
    m->add("layers.0.mlp.up", {48, 32}, rnd(48 * 32));
    m->add("layers.0.mlp.down", {32, 48}, rnd(32 * 48));
    m->add("final_norm", {32}, ones);
    m->add("lm_head", {vocab, 32}, rnd(vocab * 32, lmScale));
    return m;
}

std::vector<int32_t> tokens(int64_t n, int64_t vocab) {
    std::mt19937_64 rng(8);
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = int32_t(rng() % uint64_t(vocab));
    t[0] = 1;
    return t;
}

} // namespace

class TestPerplexity : public QObject {
    Q_OBJECT

    void checkReference(const std::string& rel, double wantPpl, double wantErr) {
        LCW_REQUIRE_SHARED(rel);
        LCW_REQUIRE_SHARED("data/tinystories_eval.txt");
        auto m = Model::load(lcwtest::sharedPath(rel));
        const std::string text =
            lcw::readTextFile(lcwtest::sharedPath("data/tinystories_eval.txt"));
        const auto ids = m->tokenizer().encode(text, true);
        QCOMPARE(int64_t(ids.size()), int64_t(94166));
        QCOMPARE(ids[0], m->tokenizer().bosId());
        PerplexityOptions o;
        o.ctx = 256;
        o.batch = 256;
        o.bosId = m->tokenizer().bosId();
        NullProgress np;
        const auto r = computePerplexity(*m, ids, o, np);
        qInfo("%s: PPL %.6f +/- %.5f over %lld tokens in %lld chunks, %.2f s (%.0f tok/s)",
              rel.c_str(), r.ppl, r.pplError, (long long)r.scoredTokens, (long long)r.chunks,
              r.seconds, r.tokensPerSecond);
        QCOMPARE(r.status, Status::Ok);
        QCOMPARE(r.chunks, int64_t(367));
        QCOMPARE(r.scoredTokens, int64_t(46609));
        QCOMPARE(r.tokensEvaluated, int64_t(367 * 256));
        QVERIFY2(std::abs(r.ppl - wantPpl) < 5e-4, qPrintable(QString::number(r.ppl, 'f', 6)));
        QVERIFY2(std::abs(r.pplError - wantErr) < 5e-4,
                 qPrintable(QString::number(r.pplError, 'f', 6)));
        QCOMPARE(r.runningPpl.size(), size_t(367));
        QCOMPARE(r.runningPpl.back(), r.ppl);
    }

private slots:
    void uniformModelGivesVocabPerplexity() {
        auto m = makeModel(0.0f, 50);
        const auto t = tokens(100, 50);
        PerplexityOptions o;
        o.ctx = 16;
        o.batch = 16;
        NullProgress np;
        const auto r = computePerplexity(*m, t, o, np);
        QCOMPARE(r.chunks, int64_t(6)); // 100 / 16, tail of 4 dropped
        QCOMPARE(r.totalChunks, int64_t(6));
        QCOMPARE(r.scoredTokens, int64_t(6 * 7)); // positions 8..14 per chunk
        QVERIFY(std::abs(r.ppl - 50.0) < 1e-9);
        QVERIFY(std::abs(r.meanNll - std::log(50.0)) < 1e-12);
        QVERIFY(r.pplError < 1e-6);
        QCOMPARE(std::string(perplexityModeName(r.mode)), std::string("llama.cpp chunks"));
    }
    void chunkScoringMatchesManualComputation() {
        // The exact positions and the BOS replacement, recomputed by hand with a Session.
        auto m = makeModel(1.0f, 50);
        const auto t = tokens(70, 50);
        PerplexityOptions o;
        o.ctx = 20;
        o.batch = 7; // several forward passes per chunk
        o.bosId = 3;
        NullProgress np;
        const auto r = computePerplexity(*m, t, o, np);
        QCOMPARE(r.chunks, int64_t(3));
        QCOMPARE(r.scoredTokens, int64_t(3 * 9)); // j = 10..18
        Session s(*m, {.contextLength = 20});
        double sum = 0, sum2 = 0;
        int n = 0;
        std::vector<float> logits;
        for (int c = 0; c < 3; ++c) {
            std::vector<int32_t> chunk(t.begin() + c * 20, t.begin() + (c + 1) * 20);
            chunk[0] = 3;
            s.reset();
            s.forward(chunk, logits, true);
            for (int j = 10; j <= 18; ++j) {
                const double nll =
                    -kernels::logSoftmaxAt(logits.data() + j * 50, 50, chunk[size_t(j + 1)]);
                QVERIFY(std::abs(nll - r.nll[size_t(n)]) < 1e-5);
                sum += nll, sum2 += nll * nll, ++n;
            }
        }
        const double mean = sum / n;
        QVERIFY(std::abs(r.ppl - std::exp(mean)) < 1e-9 * r.ppl);
        const double se = std::sqrt((sum2 / n - mean * mean) / (n - 1));
        QVERIFY(std::abs(r.pplError - std::exp(mean) * se) < 1e-9);
        QVERIFY(r.ppl > 1.0 && r.ppl < 500.0);
        // bosId -1 keeps the tokens: the result changes.
        o.bosId = -1;
        const auto r2 = computePerplexity(*m, t, o, np);
        QVERIFY(std::abs(r2.ppl - r.ppl) > 1e-6);
    }
    void threadCountDoesNotChangeResults() {
        auto m = makeModel(1.0f, 50);
        const auto t = tokens(200, 50);
        NullProgress np;
        for (auto mode : {PerplexityMode::LlamaCppChunks, PerplexityMode::SlidingWindow}) {
            PerplexityOptions o;
            o.ctx = 16;
            o.mode = mode;
            o.threads = 1;
            const auto a = computePerplexity(*m, t, o, np);
            o.threads = 2;
            const auto b = computePerplexity(*m, t, o, np);
            QCOMPARE(a.ppl, b.ppl);
            QCOMPARE(a.pplError, b.pplError);
            QCOMPARE(a.nll, b.nll);
            QCOMPARE(a.runningPpl, b.runningPpl);
            QCOMPARE(a.tokensEvaluated, b.tokensEvaluated);
        }
    }
    void slidingWindowScoresEveryTokenOnce() {
        auto m = makeModel(1.0f, 50);
        const auto t = tokens(70, 50);
        PerplexityOptions o;
        o.mode = PerplexityMode::SlidingWindow;
        o.ctx = 20;
        o.stride = 8;
        NullProgress np;
        const auto r = computePerplexity(*m, t, o, np);
        QCOMPARE(r.scoredTokens, int64_t(69)); // every token but the first
        QCOMPARE(r.chunks, int64_t(8));        // starts 0, 8, ..., 56 (56+20 >= 70)
        QCOMPARE(std::string(perplexityModeName(r.mode)), std::string("sliding window (HF)"));
        // Stride = ctx: non-overlapping windows; first window scores 19, then 20 each.
        o.stride = 20;
        const auto r2 = computePerplexity(*m, t, o, np);
        QCOMPARE(r2.scoredTokens, int64_t(66)); // as in HF: a window's first token has no logit
        QCOMPARE(r2.chunks, int64_t(4));
        // Manual check of the second window with stride 8: window [8, 28) scores tokens 20..27
        // (indices 12..19 of the window).
        Session s(*m, {.contextLength = 20});
        std::vector<float> logits;
        std::vector<int32_t> w(t.begin() + 8, t.begin() + 28);
        s.forward(w, logits, true);
        for (int i = 12; i < 20; ++i) {
            const double nll =
                -kernels::logSoftmaxAt(logits.data() + (i - 1) * 50, 50, w[size_t(i)]);
            QVERIFY(std::abs(nll - r.nll[size_t(19 + i - 12)]) < 1e-5);
        }
    }
    void cancellationAndErrors() {
        auto m = makeModel(1.0f, 50);
        const auto t = tokens(100, 50);
        PerplexityOptions o;
        o.ctx = 16;
        o.threads = 1; // exact chunk count at cancellation
        int calls = 0;
        FunctionProgress stopAfter2([&](double, std::string_view) { return ++calls <= 2; });
        const auto r = computePerplexity(*m, t, o, stopAfter2);
        QCOMPARE(r.status, Status::Cancelled);
        QCOMPARE(r.chunks, int64_t(2));
        QCOMPARE(r.scoredTokens, int64_t(14));
        QVERIFY(r.ppl > 0);
        // With two workers the chunks in flight finish; still cancelled, consistent counts.
        o.threads = 2;
        calls = 0;
        const auto r2 = computePerplexity(*m, t, o, stopAfter2);
        QCOMPARE(r2.status, Status::Cancelled);
        QVERIFY(r2.chunks >= 2 && r2.chunks < 6);
        QCOMPARE(r2.scoredTokens, r2.chunks * 7);
        NullProgress np;
        o.ctx = 200;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, computePerplexity(*m, t, o, np));
        o.ctx = 16;
        o.maxChunks = 3;
        QCOMPARE(computePerplexity(*m, t, o, np).chunks, int64_t(3));
    }

    // llama.cpp llama-perplexity reference: 5.0170 +/- 0.04525 at n_ctx 256 (stories260K.json).
    void stories260KHf() { checkReference("models/stories260K/hf", 5.017045, 0.04525); }
    void stories260KGgufF32() {
        checkReference("models/stories260K/gguf/stories260K-f32.gguf", 5.017045, 0.04525);
    }
    void stories260KLlama2c() {
        checkReference("models/stories260K/llama2c/stories260K.bin", 5.017045, 0.04525);
    }
    void stories260KQ4KM() {
        // Exact dequantised weights with float activations (--exact-activations): 5.111521.
        // By default the integer kernels round activations to 8-bit blocks as llama.cpp does,
        // which prints 5.1137 (reference/stories260K.json). The error is measured, not given.
        LCW_REQUIRE_SHARED("models/stories260K/gguf/stories260K-q4_k_m.gguf");
        LCW_REQUIRE_SHARED("data/tinystories_eval.txt");
        auto m =
            Model::load(lcwtest::sharedPath("models/stories260K/gguf/stories260K-q4_k_m.gguf"));
        const auto ids = m->tokenizer().encode(
            lcw::readTextFile(lcwtest::sharedPath("data/tinystories_eval.txt")), true);
        QCOMPARE(int64_t(ids.size()), int64_t(94166));
        PerplexityOptions o;
        o.ctx = 256;
        o.batch = 256;
        o.bosId = m->tokenizer().bosId();
        NullProgress np;
        o.exactActivations = true;
        const auto exact = computePerplexity(*m, ids, o, np);
        qInfo("q4_k_m exact: PPL %.6f +/- %.5f, %.2f s", exact.ppl, exact.pplError, exact.seconds);
        QCOMPARE(exact.scoredTokens, int64_t(46609));
        QVERIFY2(std::abs(exact.ppl - 5.111521) < 1e-4,
                 qPrintable(QString::number(exact.ppl, 'f', 6)));
        o.exactActivations = false;
        const auto fast = computePerplexity(*m, ids, o, np);
        qInfo("q4_k_m 8-bit activations: PPL %.6f, %.2f s", fast.ppl, fast.seconds);
        QCOMPARE(fast.scoredTokens, int64_t(46609));
        QVERIFY2(std::abs(fast.ppl - 5.113733) < 1e-3,
                 qPrintable(QString::number(fast.ppl, 'f', 6)));
        QVERIFY(fast.ppl != exact.ppl);
    }
};

QTEST_GUILESS_MAIN(TestPerplexity)
#include "test_perplexity.moc"
