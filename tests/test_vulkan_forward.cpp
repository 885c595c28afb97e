// The resident transformer forward on the Vulkan device (issue #16): hidden state, activations
// and KV cache stay on the device for a whole forward call. Against the CPU reference (float
// activations): the demo model, every shared tiny-random family (the resident path must run
// where it is supported; MoE and Mamba must fall back and still match), generated in-memory
// models of the variants without a shared model (parallel residual, post-norm, ALiBi, learned
// positions, Gemma2 post-norms and soft-capping, q/k norms, partial and interleaved RoPE, Bloom's
// embedding norm and residual after the norm, GQA/MQA, sliding window, biases, F16/Q8_0 weights),
// key splits over a long context, a switch to the host path in the middle of a sequence, a
// compressed (lcw packed) model, the GPU/CPU layer split's fallback and the demo model's
// perplexity. Runs on lavapipe in CI; skips with a message when no Vulkan device can be used.
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/perplexity.h"
#include "core/runtime/backend.h"
#include "core/runtime/device.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "mem_weights.h"
#include "test_util.h"
#include "vulkan_test_util.h"

#include <QtTest>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

using namespace lcw;

namespace {

/// What a sequence gave on one device: the logits of a prefill (all positions) and of the
/// following calls, and the session's counters.
struct SeqRun {
    std::vector<float> logits;
    std::string deviceId, note, residentNote;
    int64_t forwards = 0, products = 0, attention = 0, calls = 0;
};

/// Prefill `prefill` tokens of ids, then the rest one token per call, except one call of three
/// tokens (a short multi-token step) when there are enough.
SeqRun runSequence(const WeightSource& w, const char* device, const std::vector<int32_t>& ids,
                   size_t prefill, int64_t ctx = 64, int gpuLayers = -2) {
    SessionOptions so;
    so.exactActivations = true;
    so.device = device;
    so.contextLength = ctx;
    so.gpuLayers = gpuLayers;
    Session s(w, so);
    SeqRun r;
    std::vector<float> step;
    s.forward(std::span(ids).first(prefill), r.logits, true);
    ++r.calls;
    for (size_t k = prefill; k < ids.size();) {
        const size_t m = (k == prefill + 2 && ids.size() - k >= 3) ? 3 : 1;
        s.forward(std::span(ids).subspan(k, m), step, true);
        r.logits.insert(r.logits.end(), step.begin(), step.end());
        k += m;
        ++r.calls;
    }
    r.deviceId = s.device().id;
    r.note = s.deviceNote();
    r.residentNote = s.residentNote();
    r.forwards = s.deviceForwards();
    r.products = s.deviceProducts();
    r.attention = s.deviceAttention();
    return r;
}

double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size() || a.empty()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}

std::vector<int32_t> makeIds(size_t n, int64_t vocab) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < n; ++i) ids.push_back(int32_t((i * 37 + 5) % size_t(vocab)));
    return ids;
}

std::vector<float> randomVector(size_t n, uint32_t seed, float scale, float mean = 0.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(mean, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

/// An in-memory model of one architecture variant (canonical tensor names, as the runner
/// binds them).
std::unique_ptr<lcwtest::MemWeights> variantModel(const std::string& var) {
    auto mw = std::make_unique<lcwtest::MemWeights>();
    ModelSpec& s = mw->sp;
    s.arch = "llama";
    s.sourceFormat = "safetensors";
    s.dim = 64, s.nLayers = 2, s.nHeads = 4, s.nKvHeads = 4, s.headDim = 16, s.hidden = 96;
    s.vocab = 96, s.maxSeq = 128;
    DType dt = DType::F32;
    bool bias = false, normBias = false;
    if (var == "neox") { // parallel residual, two norms, partial rotary, gelu fc1/fc2, biases
        s.arch = "gpt_neox", s.residual = ResidualStyle::Parallel, s.norm = NormType::LayerNorm;
        s.rope.partialRotaryFactor = 0.25, s.hiddenAct = "gelu", s.gatedMlp = false;
        bias = normBias = true;
    } else if (var == "stablelm") { // per-head LayerNorm q/k norms, partial rotary, GQA, F16
        s.arch = "stablelm", s.norm = NormType::LayerNorm, s.qkNorm = s.qkNormPerHead = true;
        s.rope.partialRotaryFactor = 0.5, s.nKvHeads = 2, normBias = true, dt = DType::F16;
    } else if (var == "falcon") { // shared parallel norm, ALiBi before the scale, multi-query
        s.arch = "falcon", s.residual = ResidualStyle::Parallel, s.sharedParallelNorm = true;
        s.norm = NormType::LayerNorm, s.posEmbed = PosEmbedding::Alibi, s.alibiScaled = true;
        s.nKvHeads = 1, s.hiddenAct = "gelu", s.gatedMlp = false, normBias = true;
    } else if (var == "bloom") { // embedding norm, residual after the norm, ALiBi, gelu_tanh
        s.arch = "bloom", s.norm = NormType::LayerNorm, s.posEmbed = PosEmbedding::Alibi;
        s.embedNorm = true, s.residualFromNorm = true, s.hiddenAct = "gelu_tanh";
        s.gatedMlp = false, bias = normBias = true;
    } else if (var == "gemma2") { // post-norms, (1 + w), soft-capping, sliding layers, Q8_0
        s.arch = "gemma2", s.postNorms = true, s.normPlusOne = true, s.attnSoftcap = 5.0f;
        s.finalSoftcap = 3.0f, s.slidingWindow = 4, s.slidingLayers = {true, false};
        s.hiddenAct = "gelu_tanh", s.embedScale = 8.0f, s.nKvHeads = 2, s.attnScale = 0.2f;
        dt = DType::Q8_0;
    } else if (var == "qwen3") { // shared RMS q/k norms, interleaved RoPE, relu, RMSNorm bias
        s.arch = "qwen3", s.qkNorm = true, s.rope.interleaved = true, s.nKvHeads = 2;
        s.hiddenAct = "relu", s.normEps = 1e-6f, normBias = true, bias = true;
    } else if (var == "opt_post") { // post-norm, learned positions (offset 2), no final norm
        s.arch = "opt", s.residual = ResidualStyle::PostNorm, s.norm = NormType::LayerNorm;
        s.posEmbed = PosEmbedding::Learned, s.posOffset = 2, s.finalNorm = false;
        s.hiddenAct = "relu", s.gatedMlp = false, bias = normBias = true;
    } else if (var == "gpt2") { // learned positions, scale by inverse layer index
        s.arch = "gpt2", s.norm = NormType::LayerNorm, s.posEmbed = PosEmbedding::Learned;
        s.scaleByInverseLayer = true, s.hiddenAct = "gelu_tanh", s.gatedMlp = false;
        bias = normBias = true;
    }
    uint32_t seed = 1;
    const int64_t D = s.dim, hd = s.headDim, qd = s.nHeads * hd, kvd = s.nKvHeads * hd;
    auto mat = [&](const std::string& n, int64_t rows, int64_t cols, DType t) {
        mw->add(n, {rows, cols}, randomVector(size_t(rows * cols), seed++, 0.15f), t);
    };
    auto vec = [&](const std::string& n, int64_t len, float mean, float scale) {
        mw->add(n, {len}, randomVector(size_t(len), seed++, scale, mean));
    };
    auto norm = [&](const std::string& n) {
        vec(n, D, s.normPlusOne ? 0.0f : 1.0f, 0.1f);
        if (normBias) vec(n + ".bias", D, 0.0f, 0.1f);
    };
    mat("embed", s.vocab, D, DType::F32);
    mat("lm_head", s.vocab, D, dt);
    if (s.finalNorm) norm("final_norm");
    if (s.embedNorm) norm("embed_norm");
    if (s.posEmbed == PosEmbedding::Learned)
        mat("pos_embed", s.maxSeq + s.posOffset, D, DType::F32);
    for (int64_t l = 0; l < s.nLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        norm(p + "attn_norm");
        if (!(s.residual == ResidualStyle::Parallel && s.sharedParallelNorm)) norm(p + "mlp_norm");
        if (s.postNorms) norm(p + "attn_post_norm"), norm(p + "mlp_post_norm");
        mat(p + "attn.q", qd, D, dt), mat(p + "attn.k", kvd, D, dt);
        mat(p + "attn.v", kvd, D, dt), mat(p + "attn.o", D, qd, dt);
        if (s.gatedMlp) mat(p + "mlp.gate", s.hidden, D, dt);
        mat(p + "mlp.up", s.hidden, D, dt), mat(p + "mlp.down", D, s.hidden, dt);
        if (bias) {
            vec(p + "attn.q.bias", qd, 0, 0.1f), vec(p + "attn.k.bias", kvd, 0, 0.1f);
            vec(p + "attn.v.bias", kvd, 0, 0.1f), vec(p + "attn.o.bias", D, 0, 0.1f);
            if (s.gatedMlp) vec(p + "mlp.gate.bias", s.hidden, 0, 0.1f);
            vec(p + "mlp.up.bias", s.hidden, 0, 0.1f), vec(p + "mlp.down.bias", D, 0, 0.1f);
        }
        if (s.qkNorm && s.qkNormPerHead) {
            for (int64_t h = 0; h < s.nHeads; ++h)
                vec(p + "attn.q_norm." + std::to_string(h), hd, 1.0f, 0.2f);
            for (int64_t h = 0; h < s.nKvHeads; ++h)
                vec(p + "attn.k_norm." + std::to_string(h), hd, 1.0f, 0.2f);
        } else if (s.qkNorm) {
            vec(p + "attn.q_norm", hd, 1.0f, 0.2f), vec(p + "attn.k_norm", hd, 1.0f, 0.2f);
        }
    }
    return mw;
}

/// Checks a device run against the CPU's: logits to 1e-3, and the resident path used on every
/// call (or on none, with a reason, when `resident` is false).
void compareRuns(const SeqRun& cpu, const SeqRun& gpu, bool resident, const QString& label) {
    QVERIFY2(gpu.note.empty(), gpu.note.c_str());
    QVERIFY(gpu.deviceId != "cpu");
    QCOMPARE(cpu.forwards, int64_t(0));
    const double d = maxAbsDiff(cpu.logits, gpu.logits);
    qInfo("%s: %s, max |dlogit| %.3g over %zu logits (%lld resident calls of %lld)%s%s",
          qPrintable(label), resident ? "resident" : "per product", d, cpu.logits.size(),
          (long long)gpu.forwards, (long long)gpu.calls, gpu.residentNote.empty() ? "" : ": ",
          gpu.residentNote.c_str());
    QVERIFY2(d <= 1e-3, qPrintable(QString("%1: max |dlogit| %2").arg(label).arg(d)));
    if (resident) {
        QCOMPARE(gpu.forwards, gpu.calls);
        QVERIFY2(gpu.residentNote.empty(), gpu.residentNote.c_str());
        QVERIFY(gpu.products > 0);
    } else {
        QCOMPARE(gpu.forwards, int64_t(0));
    }
}

class LayerCounter : public Observer {
public:
    int blocks = 0;
    void onBlockInput(int, const float*, int64_t, int64_t) override { ++blocks; }
};

} // namespace

class TestVulkanForward : public QObject {
    Q_OBJECT

private slots:
    /// The demo model and every shared tiny-random family: a prefill, decode steps and a
    /// three-token step, resident on the device vs the CPU.
    void families_data() {
        QTest::addColumn<QString>("path");
        QTest::addColumn<bool>("resident");
        QTest::newRow("demo") << QString(LCW_SOURCE_DIR "/resources/models/stories260K") << true;
        for (const char* fam : {"gemma", "gpt2", "llama2_sp_f32", "mamba", "mixtral_moe", "opt",
                                "phi3", "qwen2_sharded"}) {
            const bool res = std::string(fam) != "mamba" && std::string(fam) != "mixtral_moe";
            QTest::newRow(fam) << QString::fromStdString(lcwtest::sharedPath(
                                      std::string("models/tiny-random/") + fam + "/model"))
                               << res;
        }
        QTest::newRow("gguf Q4_K_M")
            << QString::fromStdString(lcwtest::sharedPath("models/gguf-k/model-Q4_K_M.gguf"))
            << true;
    }
    void families() {
        REQUIRE_VULKAN();
        QFETCH(QString, path);
        QFETCH(bool, resident);
        if (!lcwtest::exists(path.toStdString()))
            QSKIP(qPrintable("model not found: " + path + " (shared data missing)"));
        auto model = Model::load(path.toStdString());
        const auto ids = makeIds(16, model->spec().vocab);
        const SeqRun cpu = runSequence(*model, "cpu", ids, 9);
        const SeqRun gpu = runSequence(*model, "vulkan", ids, 9);
        compareRuns(cpu, gpu, resident, QTest::currentDataTag());
        if (path.contains("mixtral"))
            QVERIFY(gpu.residentNote.find("mixture") != std::string::npos);
    }

    /// Generated models of the variants no shared model covers.
    void variants_data() {
        QTest::addColumn<QString>("variant");
        for (const char* v :
             {"neox", "stablelm", "falcon", "bloom", "gemma2", "qwen3", "opt_post", "gpt2"})
            QTest::newRow(v) << v;
    }
    void variants() {
        REQUIRE_VULKAN();
        QFETCH(QString, variant);
        auto mw = variantModel(variant.toStdString());
        const auto ids = makeIds(16, mw->sp.vocab);
        const SeqRun cpu = runSequence(*mw, "cpu", ids, 9);
        const SeqRun gpu = runSequence(*mw, "vulkan", ids, 9);
        compareRuns(cpu, gpu, true, variant);
    }

    /// A resident call is one submission: the demo model's decode step (weights uploaded by the
    /// prefill) and a prefill of 20 tokens each submit one command buffer.
    void oneSubmissionPerCall() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const auto ids = makeIds(21, model->spec().vocab);
        SessionOptions so;
        so.exactActivations = true;
        so.device = "vulkan";
        so.contextLength = 64;
        Session s(*model, so);
        std::vector<float> logits;
        s.forward(std::span(ids).first(20), logits, true);
        const int64_t before = runtime::vulkan::submissionsForTests();
        s.forward(std::span(ids).subspan(20, 1), logits);
        QCOMPARE(runtime::vulkan::submissionsForTests() - before, int64_t(1));
        s.reset();
        const int64_t b2 = runtime::vulkan::submissionsForTests();
        s.forward(std::span(ids).first(20), logits, true);
        QCOMPARE(runtime::vulkan::submissionsForTests() - b2, int64_t(1));
        QCOMPARE(s.deviceForwards(), int64_t(3));
    }

    /// A long context: decode steps whose keys the attention splits over workgroups.
    void longContextSplits() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const auto ids = makeIds(300, model->spec().vocab);
        const SeqRun cpu = runSequence(*model, "cpu", ids, 296, 320);
        const SeqRun gpu = runSequence(*model, "vulkan", ids, 296, 320);
        compareRuns(cpu, gpu, true, "demo, 300 tokens");
    }

    /// A sequence that starts resident and continues on the host (an observer is added: the
    /// device's KV cache comes back), then a new sequence that runs resident again.
    void switchToHostMidSequence() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const auto ids = makeIds(14, model->spec().vocab);
        auto run = [&](const char* device, int64_t* forwards, int* blocks) -> std::vector<float> {
            SessionOptions so;
            so.exactActivations = true;
            so.device = device;
            so.contextLength = 64;
            Session s(*model, so);
            std::vector<float> all, step;
            s.forward(std::span(ids).first(8), all, true);
            LayerCounter obs;
            s.addObserver(&obs);
            s.forward(std::span(ids).subspan(8, 2), step, true);
            all.insert(all.end(), step.begin(), step.end());
            *blocks = obs.blocks; // the host path ran: one call per block
            s.removeObserver(&obs);
            s.forward(std::span(ids).subspan(10, 1), step, true); // stays on the host
            all.insert(all.end(), step.begin(), step.end());
            s.reset();
            s.forward(std::span(ids).first(5), step, true); // a new sequence: resident again
            all.insert(all.end(), step.begin(), step.end());
            *forwards = s.deviceForwards();
            return all;
        };
        int64_t fc = 0, fg = 0;
        int bc = 0, bg = 0;
        const auto cpu = run("cpu", &fc, &bc);
        const auto gpu = run("vulkan", &fg, &bg);
        QCOMPARE(fg, int64_t(2));
        QCOMPARE(bg, int(model->spec().nLayers));
        const double d = maxAbsDiff(cpu, gpu);
        qInfo("resident then host then resident: max |dlogit| %.3g", d);
        QVERIFY(d <= 1e-3);
    }

    /// The GPU/CPU layer split runs per product (with the reason), and still matches.
    void layerSplitFallsBack() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const auto ids = makeIds(12, model->spec().vocab);
        const SeqRun cpu = runSequence(*model, "cpu", ids, 9);
        const SeqRun gpu = runSequence(*model, "vulkan", ids, 9, 64, 1);
        compareRuns(cpu, gpu, false, "demo, --gpu-layers 1");
        QVERIFY2(gpu.residentNote.find("gpu-layers") != std::string::npos,
                 gpu.residentNote.c_str());
    }

    /// A compressed model: lcw packed weights resident (W4A16); W8A8's activation quantisation
    /// runs per product. Both match the CPU.
    void compressedModel_data() {
        QTest::addColumn<QString>("preset");
        QTest::addColumn<bool>("resident");
        QTest::newRow("W4A16-g64") << "W4A16-g64" << true;
        QTest::newRow("W8A8") << "W8A8" << false;
        // layers with a KV eviction policy attend on the host (budget 12 of ctx 64: it evicts)
        QTest::newRow("KV-H2O-20") << "KV-H2O-20" << false;
    }
    void compressedModel() {
        REQUIRE_VULKAN();
        QFETCH(QString, preset);
        QFETCH(bool, resident);
        auto m = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        NullProgress np;
        auto r = compress::compressWithBundledCalibration(
            *m, compress::findPreset(preset.toStdString()).recipe, np, {2, 64});
        QCOMPARE(r.status, Status::Ok);
        const auto ids = makeIds(16, m->spec().vocab);
        const SeqRun cpu = runSequence(*r.model, "cpu", ids, 9);
        const SeqRun gpu = runSequence(*r.model, "vulkan", ids, 9);
        compareRuns(cpu, gpu, resident, preset);
        const char* why = preset.startsWith("KV-") ? "eviction policy" : "quantisation";
        if (!resident)
            QVERIFY2(gpu.residentNote.find(why) != std::string::npos, gpu.residentNote.c_str());
    }

    /// The demo model's perplexity on the bundled text, resident on the device: equal to the
    /// CPU's to 1e-4 (relative).
    void demoPerplexity() {
        REQUIRE_VULKAN();
        auto model = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const double cpu = lcwtest::demoPerplexity(*model, "cpu");
        const int64_t before = runtime::vulkan::residentForwardsForTests();
        const uint64_t logitsBefore = runtime::vulkan::residentLogitsBytesForTests();
        const double gpu = lcwtest::demoPerplexity(*model, "vulkan");
        QVERIFY(runtime::vulkan::residentForwardsForTests() > before); // it ran resident
        // The log-softmax ran on the device: no logits came back.
        QCOMPARE(runtime::vulkan::residentLogitsBytesForTests(), logitsBefore);
        qInfo("demo PPL cpu %.8f vulkan (resident) %.8f", cpu, gpu);
        QVERIFY(std::fabs(gpu - cpu) <= 1e-4 * cpu);
    }

    /// Session::scoreFrom on the resident device path (the log-softmax in logits_score.comp)
    /// against the CPU's log-softmax in double of the CPU's logits, over several batches (the
    /// last token scores nothing), a first logit inside the second batch, and Gemma (tied
    /// embeddings, final soft-capping).
    void scoresOnTheDevice() {
        REQUIRE_VULKAN();
        for (const std::string& path : {std::string(LCW_SOURCE_DIR "/resources/models/stories260K"),
                                        lcwtest::sharedPath("models/tiny-random/gemma/model")}) {
            if (!std::filesystem::exists(path)) continue;
            auto model = Model::load(path);
            const int64_t vocab = model->spec().vocab;
            std::vector<int32_t> ids;
            for (int i = 0; i < 23; ++i) ids.push_back(int32_t((i * 37 + 5) % vocab));
            SessionOptions so;
            so.contextLength = 64;
            so.batchSize = 8;
            so.exactActivations = true;
            Session cpu(*model, so);
            std::vector<float> logits;
            cpu.forwardFrom(ids, logits, 0);
            so.device = "vulkan";
            Session gpu(*model, so);
            const uint64_t logitsBefore = runtime::vulkan::residentLogitsBytesForTests();
            for (int64_t first : {int64_t(0), int64_t(11)}) {
                gpu.reset();
                std::vector<double> lp;
                gpu.scoreFrom(ids, first, lp);
                QCOMPARE(int64_t(lp.size()), int64_t(ids.size()) - 1 - first);
                double worst = 0;
                for (size_t r = 0; r < lp.size(); ++r) {
                    const int64_t i = first + int64_t(r);
                    const double ref =
                        kernels::logSoftmaxAt(logits.data() + i * vocab, vocab, ids[size_t(i + 1)]);
                    worst = std::max(worst, std::fabs(lp[r] - ref));
                }
                qInfo("%s first %lld: max |d log p| %.3g", path.c_str(), (long long)first, worst);
                QVERIFY2(worst <= 1e-4, path.c_str());
            }
            QVERIFY(gpu.deviceForwards() > 0);
            QVERIFY(gpu.residentNote().empty());
            QCOMPARE(runtime::vulkan::residentLogitsBytesForTests(), logitsBefore);
        }
    }
};

QTEST_GUILESS_MAIN(TestVulkanForward)
#include "test_vulkan_forward.moc"
