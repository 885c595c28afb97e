// The Vulkan backend against the CPU reference (issue #16): every weight type the runtime
// multiplies, in both shaders (matvec for few tokens, tiled matmul for many), with biases,
// strides, several weights per call, row and token chunking; the GPU/CPU layer split and the
// fallback counters; whole-model logits of the demo model, every tiny family and llama.cpp's
// K-quant files; the demo model's perplexity. Runs on lavapipe in CI; skips with a message only
// when no Vulkan device can be used at all.
#include "core/eval/perplexity.h"
#include "core/runtime/backend.h"
#include "core/runtime/device.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "mem_weights.h"
#include "test_util.h"
#include "vulkan_test_util.h"

#include <QtTest>

#include <cmath>
#include <fstream>
#include <random>

using namespace lcw;

namespace {

std::vector<float> randomVector(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

struct Case {
    DType type;
    int64_t rows, cols, tokens;
};

/// Runs two weights ("a" with a bias, "b" without) on `backend` with strided x and y and checks
/// each output against a double-precision product of the decoded weights.
void checkProducts(runtime::Backend& backend, lcwtest::MemWeights& mw, const Case& c,
                   const std::string& label) {
    const int64_t ldx = c.cols + 3, ldy = c.rows + 2;
    const auto x = randomVector(size_t(c.tokens * ldx), 7);
    const auto bias = randomVector(size_t(c.rows), 11);
    std::vector<float> ya(size_t(c.tokens * ldy), -1.0f), yb(size_t(c.tokens * ldy), -1.0f);
    kernels::LinearJob jobs[2];
    jobs[0].w = mw.find("a");
    jobs[0].y = ya.data();
    jobs[0].ldy = ldy;
    jobs[0].bias = bias.data();
    jobs[1].w = mw.find("b");
    jobs[1].y = yb.data();
    jobs[1].ldy = ldy;
    backend.linearBatch(jobs, x.data(), ldx, c.tokens, 1, true, 0);
    for (int w = 0; w < 2; ++w) {
        const QString err = lcwtest::checkAgainstDouble(
            label, w, mw.ref[w == 0 ? "a" : "b"], c.rows, c.cols, x, ldx,
            w == 0 ? bias.data() : nullptr, w == 0 ? ya : yb, ldy, c.tokens);
        QVERIFY2(err.isEmpty(), qPrintable(err));
    }
}

std::unique_ptr<lcwtest::MemWeights> weightsFor(const Case& c) {
    auto mw = std::make_unique<lcwtest::MemWeights>();
    mw->add("a", {c.rows, c.cols}, randomVector(size_t(c.rows * c.cols), 1, 0.5f), c.type);
    mw->add("b", {c.rows, c.cols}, randomVector(size_t(c.rows * c.cols), 2, 0.5f), c.type);
    return mw;
}

double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}

/// One attention configuration and the calls of a sequence: prefill `prefill` tokens at
/// position 0, then `steps` more calls (decode steps of `stepTokens` tokens each).
struct AttnCase {
    const char* name;
    int64_t nHeads, nKvHeads, headDim;
    int64_t prefill, steps, stepTokens;
    kernels::AttentionOptions opt;
};

/// Runs `c`'s sequence through backend.attention() and kernels::attentionEx (the CPU reference)
/// on the same random queries and cache rows (layer `layer`, host caches of `ctx` rows that the
/// caller keeps across cases) and returns the largest |GPU - CPU| relative to the largest |V|;
/// checks that the padding of the strided output stays untouched.
double attentionSequence(runtime::Backend& be, const AttnCase& c, int layer, int64_t ctx,
                         std::vector<float>& kCache, std::vector<float>& vCache, uint32_t seed) {
    const int64_t qd = c.nHeads * c.headDim, kvd = c.nKvHeads * c.headDim;
    const int64_t ldq = qd + 3, ldo = qd + 5;
    kCache.assign(size_t(ctx * kvd), 0.0f);
    vCache.assign(size_t(ctx * kvd), 0.0f);
    double worst = 0, vMax = 0;
    int64_t pos = 0;
    for (int64_t call = 0; call <= c.steps; ++call) {
        const int64_t n = call == 0 ? c.prefill : c.stepTokens;
        const auto k = randomVector(size_t(n * kvd), seed + 3 * uint32_t(call));
        const auto v = randomVector(size_t(n * kvd), seed + 3 * uint32_t(call) + 1);
        // Queries twice the size of the keys: scores ~ N(0, 4) (a peaked softmax).
        const auto q = randomVector(size_t(n * ldq), seed + 3 * uint32_t(call) + 2, 2.0f);
        std::copy(k.begin(), k.end(), kCache.begin() + pos * kvd);
        std::copy(v.begin(), v.end(), vCache.begin() + pos * kvd);
        for (float x : v) vMax = std::max(vMax, double(std::fabs(x)));
        std::vector<float> ref(size_t(n * ldo), -7.0f), got(size_t(n * ldo), -7.0f);
        kernels::attentionEx(q.data(), ldq, kCache.data(), vCache.data(), ref.data(), ldo, n, pos,
                             c.nHeads, c.nKvHeads, c.headDim, c.opt, 1);
        be.attention(layer, q.data(), ldq, kCache.data(), vCache.data(), got.data(), ldo, n, pos,
                     c.nHeads, c.nKvHeads, c.headDim, c.opt, 1);
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t i = 0; i < qd; ++i) {
                const float a = got[size_t(t * ldo + i)], b = ref[size_t(t * ldo + i)];
                if (!std::isfinite(a)) return INFINITY;
                worst = std::max(worst, double(std::fabs(a - b)));
            }
            for (int64_t i = qd; i < ldo; ++i)
                if (got[size_t(t * ldo + i)] != -7.0f) return INFINITY;
        }
        pos += n;
    }
    return worst / std::max(vMax, 1e-30);
}

/// Tolerance of the GPU attention: max |GPU - CPU| <= 1e-5 x max |V| (outputs are convex
/// combinations of V rows; float accumulation in a different order on each side).
constexpr double kAttnTol = 1e-5;

} // namespace

class TestVulkanBackend : public QObject {
    Q_OBJECT

private slots:
    void deviceSpecs() {
        QVERIFY(!runtime::parseDeviceSpec("cpu").vulkan);
        QVERIFY(runtime::parseDeviceSpec("vulkan").vulkan);
        QCOMPARE(runtime::parseDeviceSpec("vulkan:3").index, 3);
        QCOMPARE(runtime::parseDeviceSpec("gpu").text(), std::string("vulkan"));
        for (const char* bad : {"", "cuda", "vulkan:", "vulkan:x", "vulkan:-1", "CPU"})
            QVERIFY_THROWS_EXCEPTION(ArgumentError, runtime::parseDeviceSpec(bad));
        const auto devs = runtime::listDevices();
        QCOMPARE(devs.front().id, std::string("cpu"));
        QVERIFY(devs.front().memoryBytes > 0);
        // An index past the list resolves to the CPU with a reason.
        std::string note;
        QCOMPARE(runtime::resolveDevice(runtime::parseDeviceSpec("vulkan:99"), &note).id,
                 std::string("cpu"));
        QVERIFY(note.find("running on the CPU") != std::string::npos);
    }

    void everyTypeBothShaders_data() {
        QTest::addColumn<int>("type");
        QTest::addColumn<int>("rows");
        QTest::addColumn<int>("cols");
        QTest::addColumn<int>("tokens");
        struct T {
            DType t;
            std::vector<int> cols;
        };
        const T types[] = {{DType::F32, {37, 256}}, {DType::F16, {37, 96}}, {DType::BF16, {100}},
                           {DType::Q4_0, {96}},     {DType::Q4_1, {64}},    {DType::Q5_0, {96}},
                           {DType::Q5_1, {64}},     {DType::Q8_0, {96}},    {DType::IQ4_NL, {64}},
                           {DType::Q2_K, {256}},    {DType::Q3_K, {512}},   {DType::Q4_K, {256}},
                           {DType::Q5_K, {512}},    {DType::Q6_K, {256}},   {DType::IQ4_XS, {512}}};
        for (const T& t : types)
            for (int cols : t.cols)
                for (int tokens : {1, 3, 17}) // matvec (<= 4 tokens) and tiled with tails
                    for (int rows : {1, 33})
                        QTest::addRow("%s-%dx%d-t%d", std::string(dtypeName(t.t)).c_str(), rows,
                                      cols, tokens)
                            << int(t.t) << rows << cols << tokens;
    }
    void everyTypeBothShaders() {
        REQUIRE_VULKAN();
        QFETCH(int, type);
        QFETCH(int, rows);
        QFETCH(int, cols);
        QFETCH(int, tokens);
        const Case c{DType(type), rows, cols, tokens};
        auto mw = weightsFor(c);
        std::string note;
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, -1, &note);
        QVERIFY2(note.empty(), note.c_str());
        QVERIFY(be->device().id != "cpu");
        checkProducts(*be, *mw, c, QTest::currentDataTag());
        QCOMPARE(be->counters().deviceProducts, int64_t(2));
        QCOMPARE(be->counters().fallbackProducts, int64_t(0));
        QVERIFY(be->counters().deviceWeightBytes >= 2 * mw->find("a")->nbytes);
    }

    /// Weights split into row chunks and calls split into token chunks when one buffer binding
    /// cannot hold them (forced with a tiny binding limit).
    void rowAndTokenChunks() {
        REQUIRE_VULKAN();
        runtime::vulkan::setBindingLimitForTests(4096);
        struct Reset {
            ~Reset() { runtime::vulkan::setBindingLimitForTests(0); }
        } reset;
        for (const Case& c : {Case{DType::F32, 33, 256, 17}, Case{DType::Q4_K, 70, 512, 9},
                              Case{DType::Q8_0, 130, 96, 2}}) {
            auto mw = weightsFor(c);
            auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, -1, nullptr);
            checkProducts(*be, *mw, c, std::string(dtypeName(c.type)) + " chunked");
        }
    }

    /// --gpu-layers: blocks from N on (and lm_head) run on the CPU; the results agree.
    void layerSplitAndSharing() {
        REQUIRE_VULKAN();
        const Case c{DType::Q4_0, 2000, 256, 2};
        auto mw = weightsFor(c);
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, 1, nullptr);
        const auto x = randomVector(size_t(c.tokens * c.cols), 3);
        std::vector<float> y0(size_t(c.tokens * c.rows)), y1(y0.size());
        kernels::LinearJob j;
        j.w = mw->find("a");
        j.ldy = c.rows;
        j.y = y0.data();
        be->linearBatch({&j, 1}, x.data(), c.cols, c.tokens, 1, true, 0);
        j.y = y1.data();
        be->linearBatch({&j, 1}, x.data(), c.cols, c.tokens, 1, true, 1);
        QCOMPARE(be->counters().deviceProducts, int64_t(1));
        QCOMPARE(be->counters().fallbackProducts, int64_t(1));
        QVERIFY(maxAbsDiff(y0, y1) < 1e-4);
        const uint64_t weightBytes = be->counters().deviceWeightBytes;
        QVERIFY(weightBytes >= mw->find("a")->nbytes);
        // A second backend (another session, e.g. an overlay's) over the same tensor shares the
        // uploaded copy: the device memory grows by its scratch buffers only.
        const uint64_t before = be->counters().deviceTotalBytes;
        auto be2 = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, -1, nullptr);
        be2->linearBatch({&j, 1}, x.data(), c.cols, c.tokens, 1, true, 0);
        QCOMPARE(be2->counters().deviceWeightBytes, weightBytes);
        QVERIFY(be2->counters().deviceTotalBytes - before < weightBytes);
        // Released with the last backend that used it.
        be.reset();
        be2.reset();
        auto be3 = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, -1, nullptr);
        QVERIFY(be3->counters().deviceTotalBytes < weightBytes);
        // gpuLayers 0: the CPU backend.
        QCOMPARE(
            runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, 0, nullptr)->device().id,
            std::string("cpu"));
    }

    /// A model whose weights do not fit the device says so before running, suggests how many
    /// layers would, and the session runs on the CPU; with that many GPU layers it runs.
    void modelThatDoesNotFit() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        runtime::vulkan::setDeviceMemoryForTests(600000);
        struct Reset {
            ~Reset() { runtime::vulkan::setDeviceMemoryForTests(0); }
        } reset;
        SessionOptions so;
        so.device = "vulkan";
        {
            Session s(*model, so);
            QCOMPARE(s.device().id, std::string("cpu"));
            QVERIFY2(s.deviceNote().find("--gpu-layers") != std::string::npos,
                     s.deviceNote().c_str());
            QVERIFY(s.deviceNote().find("running on the CPU") != std::string::npos);
        }
        so.gpuLayers = 1;
        Session s(*model, so);
        QVERIFY2(s.deviceNote().empty(), s.deviceNote().c_str());
        QVERIFY(s.device().id != "cpu");
    }

    /// Backend::attention on the device against kernels::attentionEx: prefills of 1, 7 and 40
    /// tokens then decode steps, MHA/GQA/MQA, head sizes 16/64/128, sliding windows,
    /// soft-capping, ALiBi before and after the scale, a custom scale; decode steps whose keys
    /// split over several workgroups (flash-decoding) merged by attention_merge; a context over
    /// several of the shader's 64-key chunks whose device mirror grows (256 -> 512 rows)
    /// mid-sequence; a prefill continued at pos0 > 0; a restart (pos0 = 0) on the same layer and
    /// host cache.
    void attentionMatchesCpu() {
        REQUIRE_VULKAN();
        auto mw = weightsFor(Case{DType::F32, 4, 32, 1});
        std::string note;
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, -1, &note);
        QVERIFY2(note.empty(), note.c_str());
        static const float slopes[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
        auto opts = [](int64_t window, float scale, float softcap, bool alibi, bool before) {
            kernels::AttentionOptions o;
            o.window = window;
            o.scale = scale;
            o.softcap = softcap;
            o.alibi = alibi ? slopes : nullptr;
            o.alibiBeforeScale = before;
            return o;
        };
        const AttnCase cases[] = {
            {"mha hd16 prefill1", 4, 4, 16, 1, 3, 1, opts(0, 0, 0, false, false)},
            {"gqa hd64 prefill7", 4, 2, 64, 7, 3, 1, opts(0, 0, 0, false, false)},
            {"mqa hd128 prefill40", 4, 1, 128, 40, 2, 1, opts(0, 0, 0, false, false)},
            {"gqa hd16 window5", 4, 2, 16, 7, 4, 1, opts(5, 0, 0, false, false)},
            {"mha hd64 window5 prefill40", 4, 4, 64, 40, 2, 1, opts(5, 0, 0, false, false)},
            {"mqa hd16 softcap scale", 4, 1, 16, 40, 2, 1, opts(0, 0.3f, 5.0f, false, false)},
            {"gqa hd64 alibi after", 4, 2, 64, 7, 3, 1, opts(0, 0, 0, true, false)},
            {"mha hd16 alibi before", 4, 4, 16, 40, 2, 1, opts(0, 0.2f, 0, true, true)},
            {"mqa hd128 alibi softcap window", 4, 1, 128, 7, 3, 1, opts(5, 0, 3.0f, true, true)},
            {"gqa hd16 continued prefill", 4, 2, 16, 20, 2, 13, opts(0, 0, 0, false, false)},
            {"long: grows, 5 chunks", 4, 2, 16, 200, 3, 40, opts(0, 0, 0, false, false)},
            {"long window 100", 4, 1, 16, 150, 2, 70, opts(100, 0, 2.0f, true, false)},
            // Decode over 300+ keys: the keys split over 3 workgroups per head (flash-decoding).
            {"split decode", 4, 2, 64, 300, 3, 1, opts(0, 0, 0, false, false)},
            {"split decode window 150 alibi", 4, 1, 16, 300, 3, 1, opts(150, 0, 0, true, true)},
            {"split decode softcap", 4, 4, 128, 260, 2, 1, opts(0, 0.1f, 4.0f, false, false)},
        };
        const int64_t splitsBefore = runtime::vulkan::attentionSplitDispatchesForTests();
        std::vector<float> kc, vc;
        int64_t calls = 0;
        for (size_t i = 0; i < std::size(cases); ++i) {
            const AttnCase& c = cases[i];
            // Two cases per layer: the second restarts the layer's mirror at pos0 = 0 (with
            // another head layout) over the same host cache.
            const double d = attentionSequence(*be, c, int(i / 2), 512, kc, vc, 100 + uint32_t(i));
            qInfo("%s: max |gpu - cpu| / max |v| = %.3g", c.name, d);
            QVERIFY2(d <= kAttnTol, c.name);
            calls += 1 + c.steps;
        }
        QCOMPARE(be->counters().deviceAttention, calls);
        QCOMPARE(be->counters().fallbackAttention, int64_t(0));
        // Split: the 40-token steps of "long: grows" (3) and the decode steps (3 + 3 + 2).
        QCOMPARE(runtime::vulkan::attentionSplitDispatchesForTests() - splitsBefore, int64_t(11));
    }

    /// The device mirror takes only the rows [pos0, pos0 + nTok) of a step: a change the runner
    /// never makes (an older row edited behind its back) stays invisible to the GPU until the
    /// sequence restarts at pos0 = 0, or the host cache moves.
    void attentionUploadsOnlyNewRows() {
        REQUIRE_VULKAN();
        auto mw = weightsFor(Case{DType::F32, 4, 32, 1});
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, -1, nullptr);
        const AttnCase c{"mqa hd16", 2, 1, 16, 9, 0, 1, {}};
        std::vector<float> kc, vc;
        QVERIFY(attentionSequence(*be, c, 0, 32, kc, vc, 5) <= kAttnTol);
        const auto q = randomVector(16 * 2, 6);
        const std::vector<float> kOld = kc, vOld = vc;
        for (int i = 0; i < 16; ++i) vc[size_t(16 + i)] += 10.0f; // row 1, behind its back
        for (int i = 0; i < 16; ++i) kc[size_t(9 * 16 + i)] = vc[size_t(9 * 16 + i)] = 0.5f;
        std::vector<float> seen = vOld, kSeen = kOld;
        for (int i = 0; i < 16; ++i) kSeen[size_t(9 * 16 + i)] = seen[size_t(9 * 16 + i)] = 0.5f;
        std::vector<float> got(32), stale(32), fresh(32);
        be->attention(0, q.data(), 32, kc.data(), vc.data(), got.data(), 32, 1, 9, 2, 1, 16, {}, 1);
        kernels::attentionEx(q.data(), 32, kSeen.data(), seen.data(), stale.data(), 32, 1, 9, 2, 1,
                             16, {}, 1);
        kernels::attentionEx(q.data(), 32, kc.data(), vc.data(), fresh.data(), 32, 1, 9, 2, 1, 16,
                             {}, 1);
        QVERIFY(maxAbsDiff(got, stale) <= 1e-5);
        QVERIFY(maxAbsDiff(got, fresh) > 1e-3);
        // A restart re-uploads everything.
        std::vector<float> all(9 * 32), allRef(all.size());
        const auto q9 = randomVector(9 * 32, 7);
        be->attention(0, q9.data(), 32, kc.data(), vc.data(), all.data(), 32, 9, 0, 2, 1, 16, {},
                      1);
        kernels::attentionEx(q9.data(), 32, kc.data(), vc.data(), allRef.data(), 32, 9, 0, 2, 1, 16,
                             {}, 1);
        QVERIFY(maxAbsDiff(all, allRef) <= 1e-5);
    }

    /// A layer whose cache would exceed one buffer binding runs on the CPU (counted), then on the
    /// device again once it fits (the mirror re-uploads every row); query blocks larger than a
    /// binding go in token chunks; layers past --gpu-layers run on the CPU.
    void attentionFallbacks() {
        REQUIRE_VULKAN();
        auto mw = weightsFor(Case{DType::F32, 4, 32, 1});
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), *mw, 1, nullptr);
        const AttnCase c{"gqa hd16", 4, 2, 16, 20, 0, 1, {}};
        std::vector<float> kc, vc;
        {
            // 4096 bytes: 32 cache rows of 2 x 16 floats; 16 query rows of 4 x 16 floats.
            runtime::vulkan::setBindingLimitForTests(4096);
            struct Reset {
                ~Reset() { runtime::vulkan::setBindingLimitForTests(0); }
            } reset;
            QVERIFY(attentionSequence(*be, c, 0, 64, kc, vc, 1) <= kAttnTol); // 20 rows: device
            QCOMPARE(be->counters().deviceAttention, int64_t(1));
            const AttnCase longer{"gqa hd16 40", 4, 2, 16, 40, 1, 1, {}};
            QVERIFY(attentionSequence(*be, longer, 0, 64, kc, vc, 2) <= kAttnTol); // 40, 41: CPU
            QCOMPARE(be->counters().deviceAttention, int64_t(1));
            QCOMPARE(be->counters().fallbackAttention, int64_t(2));
        }
        // The binding limit is back: the next step (pos0 = 41) uploads the whole cache again.
        const int64_t kvd = 32, qd = 64;
        const auto q = randomVector(size_t(qd), 9, 2.0f);
        const auto kv = randomVector(size_t(2 * kvd), 10);
        std::copy(kv.begin(), kv.begin() + kvd, kc.begin() + 41 * kvd);
        std::copy(kv.begin() + kvd, kv.end(), vc.begin() + 41 * kvd);
        std::vector<float> ref(static_cast<size_t>(qd)), got(ref.size());
        kernels::attentionEx(q.data(), qd, kc.data(), vc.data(), ref.data(), qd, 1, 41, 4, 2, 16,
                             {}, 1);
        be->attention(0, q.data(), qd, kc.data(), vc.data(), got.data(), qd, 1, 41, 4, 2, 16, {},
                      1);
        QVERIFY(maxAbsDiff(ref, got) <= 1e-4);
        QCOMPARE(be->counters().deviceAttention, int64_t(2));
        // gpuLayers 1: layer 1 runs on the CPU.
        QVERIFY(attentionSequence(*be, c, 1, 64, kc, vc, 3) <= kAttnTol);
        QCOMPARE(be->counters().deviceAttention, int64_t(2));
        QCOMPARE(be->counters().fallbackAttention, int64_t(3));
    }

    /// Whole models: logits of a prefill and of two decode steps on the GPU (products and
    /// attention) equal the CPU's float-activation results to 1e-3.
    void wholeModelLogits_data() {
        QTest::addColumn<QString>("path");
        QTest::newRow("demo") << QString(LCW_SOURCE_DIR "/resources/models/stories260K");
        for (const char* fam : {"gemma", "gpt2", "llama2_sp_f32", "mamba", "mixtral_moe", "opt",
                                "phi3", "qwen2_sharded"})
            QTest::newRow(fam) << QString::fromStdString(
                lcwtest::sharedPath(std::string("models/tiny-random/") + fam + "/model"));
        for (const char* q :
             {"Q2_K-imat", "Q3_K_M-imat", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL-imat"})
            QTest::newRow(q) << QString::fromStdString(
                lcwtest::sharedPath(std::string("models/gguf-k/model-") + q + ".gguf"));
    }
    void wholeModelLogits() {
        REQUIRE_VULKAN();
        QFETCH(QString, path);
        if (!lcwtest::exists(path.toStdString()))
            QSKIP(qPrintable("model not found: " + path + " (shared data missing)"));
        auto model = Model::load(path.toStdString());
        std::vector<int32_t> ids;
        for (int i = 0; i < 12; ++i) ids.push_back(int32_t((i * 37 + 5) % model->spec().vocab));
        const lcwtest::DeviceRun cpu = lcwtest::runOnDevice(*model, "cpu", ids);
        const lcwtest::DeviceRun gpu = lcwtest::runOnDevice(*model, "vulkan", ids);
        QVERIFY2(gpu.note.empty(), gpu.note.c_str());
        QVERIFY(gpu.deviceId != "cpu");
        QVERIFY(gpu.products > 0);
        // Attention ran on the device: one call per layer and forward (Mamba has none).
        const int64_t layers = model->spec().nLayers;
        QCOMPARE(gpu.attention, path.contains("mamba") ? int64_t(0) : 3 * layers);
        const double d = maxAbsDiff(cpu.logits, gpu.logits);
        qInfo("%s: max |dlogit| %.3g over %zu logits", qPrintable(path), d, cpu.logits.size());
        QVERIFY2(d <= 1e-3, qPrintable(QString("max |dlogit| %1").arg(d)));
    }

    /// The demo model's perplexity on the bundled text: equal to the CPU's to 1e-4.
    void demoPerplexity() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const double cpu = lcwtest::demoPerplexity(*model, "cpu");
        const double gpu = lcwtest::demoPerplexity(*model, "vulkan");
        qInfo("demo PPL cpu %.8f vulkan %.8f", cpu, gpu);
        QVERIFY(std::fabs(gpu - cpu) <= 1e-4 * cpu);
    }
};

QTEST_GUILESS_MAIN(TestVulkanBackend)
#include "test_vulkan_backend.moc"
