// Cancellation inside a chunk: a cancelled evaluation stops within one block of its forward
// pass, not at the end of the chunk (or, for a sensitivity scan, of the chunk's dozens of
// forwards). Latencies are measured against one chunk's time on the same machine, so the bounds
// hold on a slow or busy one; the model is small enough for the whole file to take seconds
// (bench/cancel_latency.sh measures the 1.1B shape).
#include "test_util.h"

#include "core/eval/divergence.h"
#include "core/eval/perplexity.h"
#include "core/eval/sensitivity.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "core/runtime/cancel.h"
#include "core/runtime/session.h"

#include <QtTest>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>

using namespace lcw;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

/// A sink that asks to stop `delay` seconds after `armed(fraction)` first held (the request
/// time): report() answers false from then on and stopRequested() true, as TaskRunner's and
/// lcw-cli's sinks do once Cancel or Ctrl-C set their flag. Thread-safe.
struct DelayedCancel final : Progress {
    std::function<bool(double)> armed;
    double delay = 0;
    std::atomic<int64_t> armedAtNs{0}; ///< 0: not armed yet
    std::mutex mu;

    bool report(double f, std::string_view) override {
        {
            std::lock_guard<std::mutex> lock(mu);
            if (armedAtNs == 0 && armed(f)) armedAtNs = Clock::now().time_since_epoch().count();
        }
        return !stopRequested();
    }
    bool stopRequested() override { return armedAtNs != 0 && Clock::now() >= requestAt(); }
    bool requested() const { return armedAtNs != 0 && Clock::now() >= requestAt(); }
    Clock::time_point requestAt() const {
        return Clock::time_point(Clock::duration(armedAtNs.load())) +
               std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(delay));
    }
    /// Seconds from the request to now.
    double latency() const { return since(requestAt()); }
};

} // namespace

class TestCancel : public QObject {
    Q_OBJECT

    std::string m_dir;
    std::unique_ptr<Model> m_model;
    std::vector<int32_t> m_tokens;
    double m_chunkSeconds = 0; ///< one chunk, one thread

    /// The bound on a cancel latency: under half a chunk (the old code took the rest of the
    /// chunk, 85 % of it), plus the 0.1 s between polls and slack for a busy machine.
    double bound() const { return 0.45 * m_chunkSeconds + 0.1; }

    PerplexityOptions evalOptions(int threads, int64_t chunks) const {
        PerplexityOptions o;
        o.ctx = 1024;
        o.batch = 1024;
        o.threads = threads;
        o.maxChunks = chunks;
        return o;
    }

private slots:
    void initTestCase() {
        // A narrow llama: 16 blocks of dim 512, so one chunk of 1024 tokens takes about a
        // second on one core and each block a sixteenth of that.
        ModelSpec spec = syntheticSpec("llama", "llama-tiny");
        spec.dim = 512, spec.nLayers = 16, spec.hidden = 1408, spec.nHeads = 8, spec.nKvHeads = 2;
        spec.headDim = 64, spec.vocab = 2048, spec.maxSeq = 2048;
        m_dir = lcwtest::tempDir("cancel");
        SynthOptions so;
        so.dtype = DType::F16;
        NullProgress np;
        QCOMPARE(writeSyntheticModel(spec, m_dir, so, np), Status::Ok);
        m_model = Model::load(m_dir);
        std::mt19937 rng(7);
        m_tokens.resize(4 * 1024);
        for (auto& t : m_tokens) t = int32_t(rng() % 2048);

        // The faster of two runs (the first also pages the weights in).
        m_chunkSeconds = 1e9;
        for (int i = 0; i < 2; ++i) {
            const auto t0 = Clock::now();
            const auto r = computePerplexity(*m_model, m_tokens, evalOptions(1, 1), np);
            m_chunkSeconds = std::min(m_chunkSeconds, since(t0));
            QCOMPARE(r.status, Status::Ok);
        }
        qInfo("one chunk: %.3f s", m_chunkSeconds);
    }

    void cleanupTestCase() {
        m_model.reset();
        std::filesystem::remove_all(m_dir);
    }

    // The request comes early in the only chunk: the old code finished the chunk (most of it)
    // before it looked again.
    void perplexityStopsInsideTheChunk() {
        DelayedCancel c;
        c.armed = [](double) { return true; };
        c.delay = 0.15 * m_chunkSeconds;
        const auto r = computePerplexity(*m_model, m_tokens, evalOptions(1, 1), c);
        QCOMPARE(r.status, Status::Cancelled);
        QVERIFY(c.requested());
        const double latency = c.latency();
        qInfo("perplexity cancel latency %.3f s (chunk %.3f s)", latency, m_chunkSeconds);
        QVERIFY2(latency < bound(),
                 qPrintable(QString("stopped %1 s after the request; a chunk takes %2 s")
                                .arg(latency)
                                .arg(m_chunkSeconds)));
        QCOMPARE(r.chunks, int64_t(0)); // the interrupted chunk is not counted
    }

    // Two single-threaded sessions on two threads: both stop, the run returns Cancelled.
    void perplexityWorkersStopInsideTheirChunks() {
        DelayedCancel c;
        c.armed = [](double) { return true; };
        c.delay = 0.15 * m_chunkSeconds;
        const auto t0 = Clock::now();
        const auto r = computePerplexity(*m_model, m_tokens, evalOptions(2, 2), c);
        QCOMPARE(r.status, Status::Cancelled);
        QVERIFY(c.requested());
        const double latency = c.latency();
        qInfo("2 workers: cancel latency %.3f s after %.3f s", latency, since(t0));
        // Two chunks side by side on a machine that may have only two (shared) cores: each can
        // take up to twice as long as alone.
        QVERIFY2(latency < 2 * bound(), qPrintable(QString::number(latency)));
    }

    // The reported defect: a sensitivity scan runs the baseline and every target's overlay in
    // each chunk (17 forwards here, hundreds at 1.1B); Cancel must not wait for all of them.
    void sensitivityStopsInsideTheChunk() {
        DelayedCancel c;
        c.armed = [](double f) { return f >= 0.1; }; // the divergence phase has begun
        c.delay = 0.3 * m_chunkSeconds;
        SensitivityOptions so;
        so.granularity = SensitivityGranularity::Block;
        so.eval = evalOptions(1, 1);
        const auto scan =
            scanSensitivity(*m_model, {schemeFromPreset("W4A16-g128")}, m_tokens, so, c);
        QCOMPARE(scan.status, Status::Cancelled);
        QVERIFY(c.requested());
        const double latency = c.latency();
        qInfo("sensitivity cancel latency %.3f s (chunk of one forward %.3f s)", latency,
              m_chunkSeconds);
        QVERIFY2(latency < bound(), qPrintable(QString::number(latency)));
    }

    // KL divergence against the baseline (the Compare panel's job) likewise.
    void divergenceStopsInsideTheChunk() {
        DelayedCancel c;
        c.armed = [](double) { return true; };
        c.delay = 0.15 * m_chunkSeconds;
        const std::vector<DivergenceConfig> configs{{"self", m_model.get()}};
        const auto r = compareToBaseline(*m_model, configs, m_tokens, evalOptions(1, 1), c);
        QCOMPARE(r.status, Status::Cancelled);
        QVERIFY(c.requested());
        QVERIFY2(c.latency() < bound(), qPrintable(QString::number(c.latency())));
    }

    // The mechanism itself: a Session forward inside a CancelScope that says stop throws
    // Cancelled before its first block and leaves the cache as it was; outside any scope, or
    // inside a parallel region opened below the scope, nothing changes.
    void sessionForwardHonoursTheScope() {
        SessionOptions so;
        so.contextLength = 64;
        so.threads = 1;
        Session s(*m_model, so);
        std::vector<float> logits;
        const std::vector<int32_t> ids(m_tokens.begin(), m_tokens.begin() + 8);
        s.forward(ids, logits);
        QCOMPARE(s.position(), int64_t(8));
        int calls = 0;
        {
            const CancelScope scope([&calls] { return ++calls < 3; }); // stop at the third block
            QVERIFY_THROWS_EXCEPTION(Cancelled, s.forward(ids, logits));
            QCOMPARE(calls, 3);
            QCOMPARE(s.position(), int64_t(8));
            QVERIFY(!keepGoing());
        }
        QVERIFY(keepGoing());
        s.forward(ids, logits); // no scope: runs
        QCOMPARE(s.position(), int64_t(16));
    }
};

QTEST_GUILESS_MAIN(TestCancel)
#include "test_cancel.moc"
