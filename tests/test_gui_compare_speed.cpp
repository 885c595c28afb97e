// Tests of the Compare view's speed and memory: the process memory functions (core/common/
// memory.h) against pages this test touches itself, and two configurations of the bundled demo
// model run through the Compare view (offscreen, on the task runner): prefill and decode
// tokens/s, resident weight bytes and the peak RSS increase as columns, bars, tooltips and in the
// results record, with the UI thread free while the runs go on.
#include "core/common/memory.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "gui_test_util.h"
#include "plots/bar_plot.h"
#include "test_util.h"
#include "widgets/compare_panel.h"
#include "widgets/latency_probe.h"
#include "widgets/main_window.h"
#include "widgets/results_panel.h"

#include <QHeaderView>
#include <QSettings>
#include <QTabWidget>
#include <QTableWidget>
#include <QtTest/QtTest>

#include <cstring>
#include <memory>
#include <unordered_set>

namespace {

constexpr int kLongTimeoutMs = 120000;
/// The demo model and text bundled with the sources.
const std::string kDemoModel = lcwtest::demoModelPath();
const std::string kEvalText = lcwtest::demoTextPath();
constexpr uint64_t kMiB = 1024 * 1024;

double cellValue(QTableWidget* t, int row, int col) {
    const QTableWidgetItem* it = t->item(row, col);
    return it ? it->data(Qt::UserRole).toDouble() : -1.0;
}

} // namespace

class TestGuiCompareSpeed : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() { lcwtest::initGuiTestCase("test_gui_compare_speed"); }
    void cleanupTestCase() { QSettings().clear(); }

    void processMemoryFunctions() {
#if !defined(__linux__)
        QSKIP("resident-set figures come from Linux /proc");
#endif
        const uint64_t before = lcw::currentRssBytes();
        QVERIFY(before > 0);
        QVERIFY(lcw::peakRssBytes() >= before / 2);
        const bool canReset = lcw::resetPeakRss();
        // 64 MiB touched page by page: the resident set and its peak grow by about that much.
        constexpr size_t kBytes = 64 * kMiB;
        {
            std::unique_ptr<char[]> block(new char[kBytes]);
            std::memset(block.get(), 1, kBytes);
            const uint64_t during = lcw::currentRssBytes();
            QVERIFY2(during >= before + kBytes * 9 / 10,
                     qPrintable(QStringLiteral("%1 -> %2").arg(before).arg(during)));
            QVERIFY(lcw::peakRssBytes() >= during);
            QVERIFY(block[kBytes - 1] == 1);
        } // freed (a large block goes back to the system at once)
        const uint64_t after = lcw::currentRssBytes();
        QVERIFY2(after < before + kBytes / 2,
                 qPrintable(QStringLiteral("%1 after freeing").arg(after)));
        const uint64_t peak = lcw::peakRssBytes();
        QVERIFY(peak >= before + kBytes * 9 / 10);
        if (!canReset) QSKIP("/proc/self/clear_refs is not writable here: no peak reset");
        // A reset brings the high-water mark down to the resident set of now.
        QVERIFY(lcw::resetPeakRss());
        const uint64_t reset = lcw::peakRssBytes();
        QVERIFY2(
            reset < peak - kBytes / 2,
            qPrintable(QStringLiteral("peak %1 after the reset, %2 before").arg(reset).arg(peak)));
        QVERIFY(reset >= lcw::currentRssBytes() / 2);
    }

    void compareShowsSpeedAndMemory() {
        if (!lcwtest::exists(kDemoModel) || !lcwtest::exists(kEvalText))
            QSKIP(qPrintable(
                QStringLiteral("bundled demo model or text not found: %1, %2")
                    .arg(QString::fromStdString(kDemoModel), QString::fromStdString(kEvalText))));
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(kDemoModel)));
        lcw::ComparePanel* cp = w.comparePanel();
        w.showPanel(lcw::MainWindow::Panel::Compare);
        cp->setTextFile(QString::fromStdString(kEvalText));
        // Two configurations: the original F32 weights (the baseline) and the W4A8 recipe.
        cp->setSelectedConfigs({QStringLiteral("W4A8")});
        cp->setContext(64);
        cp->setMaxChunks(1);
        cp->setGenerateTokens(0);
        cp->setSpeedTokens(24);
        QSignalSpy done(cp, &lcw::ComparePanel::finished);
        QSignalSpy failed(cp, &lcw::ComparePanel::failed);
        // The runs happen on the task runner: the UI thread's own work per event-loop turn stays
        // small all along (CPU time, not wall time: the machine may be busy).
        lcw::EventLoopProbe probe(10);
        probe.start();
        QVERIFY(cp->run());
        QVERIFY(cp->isRunning());
        QVERIFY(QTest::qWaitFor([&] { return done.count() + failed.count() > 0; }, kLongTimeoutMs));
        probe.stop();
        QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed[0][0].toString()));
        QVERIFY2(probe.maxBusyMs() < 200,
                 qPrintable(QStringLiteral("UI thread busy %1 ms").arg(probe.maxBusyMs())));

        const lcw::CompareResults& r = cp->results();
        QCOMPARE(r.rows.size(), size_t(2));
        QCOMPARE(r.rows[1].name, QStringLiteral("W4A8"));
        QCOMPARE(r.speedPromptTokens, qint64(64));
        QCOMPARE(r.speedDecodeTokens, qint64(24));
        for (const lcw::CompareRow& row : r.rows) {
            qInfo("%s: prefill %.0f tok/s, decode %.0f tok/s, weights %llu B, peak RSS +%llu B "
                  "over %llu B (%s)",
                  qPrintable(row.name), row.tokensPerSecond, row.decodeTokensPerSecond,
                  static_cast<unsigned long long>(row.weightBytes),
                  static_cast<unsigned long long>(row.peakRssBytes),
                  static_cast<unsigned long long>(row.rssBeforeBytes),
                  r.peakRssFromHwm ? "VmHWM reset" : "VmRSS sampled");
            QVERIFY2(row.tokensPerSecond > 0, qPrintable(row.name));
            QVERIFY2(row.decodeTokensPerSecond > 0, qPrintable(row.name));
            QVERIFY2(row.weightBytes > 0, qPrintable(row.name));
            QVERIFY2(row.rssBeforeBytes > 0, qPrintable(row.name));
            // The run's KV cache and buffers are new pages (the heap was trimmed before it).
            QVERIFY2(row.peakRssBytes > 0, qPrintable(row.name));
            // ... and far less than the whole process.
            QVERIFY2(row.peakRssBytes < row.rssBeforeBytes, qPrintable(row.name));
        }

        // Resident weights, independently: the original holds every tensor of the file once;
        // W4A8 at least its stored size (codes, scales and the tensors it leaves alone).
        const lcw::Model& m = *w.model();
        uint64_t fileBytes = 0;
        std::unordered_set<const std::byte*> seen;
        for (const lcw::TensorView& t : m.tensors())
            if (seen.insert(t.data).second) fileBytes += t.nbytes;
        QCOMPARE(r.rows[0].weightBytes, quint64(fileBytes));
        lcw::NullProgress np;
        const auto w4 = lcw::compress::compressWithBundledCalibration(
            m, lcw::compress::findPreset("W4A8").recipe, np);
        QCOMPARE(r.rows[1].bytes, quint64(w4.model->totalSize().bytes()));
        QVERIFY(r.rows[1].weightBytes >= w4.model->totalSize().bytes());

        // Columns: the table holds the same positive numbers.
        QTableWidget* t = cp->metricsTable();
        QCOMPARE(t->horizontalHeaderItem(lcw::ComparePanel::PrefillColumn)->text(),
                 QStringLiteral("Prefill tok/s"));
        QCOMPARE(t->horizontalHeaderItem(lcw::ComparePanel::DecodeColumn)->text(),
                 QStringLiteral("Decode tok/s"));
        for (int row = 0; row < 2; ++row) {
            const lcw::CompareRow& cr = r.rows[size_t(row)];
            QCOMPARE(cellValue(t, row, lcw::ComparePanel::PrefillColumn), cr.tokensPerSecond);
            QCOMPARE(cellValue(t, row, lcw::ComparePanel::DecodeColumn), cr.decodeTokensPerSecond);
            QCOMPARE(cellValue(t, row, lcw::ComparePanel::WeightMemoryColumn),
                     double(cr.weightBytes));
            QCOMPARE(cellValue(t, row, lcw::ComparePanel::PeakRssColumn), double(cr.peakRssBytes));
            for (int c = lcw::ComparePanel::PrefillColumn; c <= lcw::ComparePanel::PeakRssColumn;
                 ++c)
                QVERIFY(cellValue(t, row, c) > 0);
        }
        // The tooltips say what is measured.
        const QString rssTip = t->horizontalHeaderItem(lcw::ComparePanel::PeakRssColumn)->toolTip();
        QVERIFY(rssTip.contains(QStringLiteral("resident set just before")));
        QCOMPARE(rssTip.contains(QStringLiteral("clear_refs")), r.peakRssFromHwm);
        QVERIFY(t->horizontalHeaderItem(lcw::ComparePanel::DecodeColumn)
                    ->toolTip()
                    .contains(QStringLiteral("24 tokens")));
        QVERIFY(cp->metricsTsv().split('\n')[0].contains(
            QStringLiteral("Prefill tok/s\tDecode tok/s\tWeights in RAM\tPeak RSS +")));

        // The bar chart: two bars per metric, the rows' numbers (memory in MiB).
        const double expect[2][lcw::ComparePanel::SpeedMetricCount] = {
            {r.rows[0].tokensPerSecond, r.rows[0].decodeTokensPerSecond,
             double(r.rows[0].weightBytes) / kMiB, double(r.rows[0].peakRssBytes) / kMiB},
            {r.rows[1].tokensPerSecond, r.rows[1].decodeTokensPerSecond,
             double(r.rows[1].weightBytes) / kMiB, double(r.rows[1].peakRssBytes) / kMiB}};
        for (int k = 0; k < lcw::ComparePanel::SpeedMetricCount; ++k) {
            lcw::BarPlot* bp = cp->speedPlot(lcw::ComparePanel::SpeedMetric(k));
            QCOMPARE(bp->barCount(), 2);
            QCOMPARE(bp->labels(),
                     QStringList({QStringLiteral("original"), QStringLiteral("W4A8")}));
            for (int i = 0; i < 2; ++i) {
                QVERIFY(bp->values()[i] > 0);
                QCOMPARE(bp->values()[i], expect[i][k]);
            }
        }
        QVERIFY(cp->speedPlot(lcw::ComparePanel::DecodeMetric)
                    ->tooltipFor(1)
                    .startsWith(QStringLiteral("W4A8: ")));
        const int tab = cp->tabs()->indexOf(cp->speedView());
        QVERIFY(tab >= 0);
        QCOMPARE(cp->tabs()->tabText(tab), QStringLiteral("Speed && Memory"));
        cp->tabs()->setCurrentIndex(tab);
        QTest::qWait(20);

        // Projects and the results store keep the numbers.
        const lcw::CompareResults back = lcw::CompareResults::fromJson(r.toJson());
        QCOMPARE(back.toJson(), r.toJson());
        const auto rec =
            lcw::ResultsPanel::compareRecord(r, QStringLiteral("m"), QStringLiteral("t"));
        QCOMPARE(rec["configs"][0]["speed"]["decode_tokens_per_second"].get<double>(),
                 r.rows[1].decodeTokensPerSecond);
        QCOMPARE(rec["configs"][0]["peak_rss_bytes"].get<uint64_t>(),
                 r.rows[1].rssBeforeBytes + r.rows[1].peakRssBytes);
        const lcw::CompareResults fromStore = lcw::ResultsPanel::toCompareResults(rec);
        QCOMPARE(fromStore.speedDecodeTokens, r.speedDecodeTokens);
        QCOMPARE(fromStore.peakRssFromHwm, r.peakRssFromHwm);
        for (size_t i = 0; i < 2; ++i) {
            QCOMPARE(fromStore.rows[i].decodeTokensPerSecond, r.rows[i].decodeTokensPerSecond);
            QCOMPARE(fromStore.rows[i].weightBytes, r.rows[i].weightBytes);
            QCOMPARE(fromStore.rows[i].peakRssBytes, r.rows[i].peakRssBytes);
            QCOMPARE(fromStore.rows[i].rssBeforeBytes, r.rows[i].rssBeforeBytes);
        }

        // Speed runs off: no decode or memory figures, prefill from the perplexity chunks.
        cp->setSpeedTokens(0);
        QVERIFY(cp->run());
        QVERIFY(QTest::qWaitFor([&] { return done.count() == 2; }, kLongTimeoutMs));
        QCOMPARE(cp->results().speedDecodeTokens, qint64(0));
        QVERIFY(cp->results().rows[1].tokensPerSecond > 0);
        QCOMPARE(cp->results().rows[1].decodeTokensPerSecond, 0.0);
        QCOMPARE(t->item(1, lcw::ComparePanel::DecodeColumn)->text(), QStringLiteral("—"));
        QCOMPARE(cp->speedPlot(lcw::ComparePanel::DecodeMetric)->barCount(), 0);
        QCOMPARE(cp->speedPlot(lcw::ComparePanel::PrefillMetric)->barCount(), 2);
    }
};

QTEST_MAIN(TestGuiCompareSpeed)
#include "test_gui_compare_speed.moc"
