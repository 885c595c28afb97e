// Tests of the GUI's llama.cpp parts: the importance matrix (open for the right model and plot
// per input channel, refuse another model's, compute on the task runner as core does, cancel,
// save, keep in the project) and the status bar's time-left estimate.
#include "core/compress/imatrix.h"
#include "core/model/model.h"
#include "plots/channel_profile_plot.h"
#include "test_util.h"
#include "widgets/imatrix_dialog.h"
#include "widgets/imatrix_manager.h"
#include "widgets/main_window.h"
#include "widgets/number_format.h"
#include "widgets/stats_panel.h"
#include "widgets/task_status_widget.h"

#include <QCheckBox>
#include <QSettings>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTabWidget>
#include <QtTest/QtTest>
#include <qcustomplot.h>

#include <cmath>
#include <fstream>

namespace {

constexpr int kTimeoutMs = 30000;
constexpr int kLongTimeoutMs = 300000;
const char* const kGgufK = "models/gguf-k/model-f32.gguf";
const char* const kGgufKHf = "models/gguf-k/hf";
const char* const kGgufKImatrix = "models/gguf-k/imatrix.dat";

QString shared(const char* rel) {
    return QString::fromStdString(lcwtest::sharedPath(rel));
}

bool loadAndWait(lcw::MainWindow& w, const QString& path) {
    QSignalSpy loaded(&w, &lcw::MainWindow::modelLoaded);
    QSignalSpy failed(&w, &lcw::MainWindow::loadFailed);
    w.openModel(path);
    if (!QTest::qWaitFor([&] { return loaded.count() + failed.count() > 0; }, kTimeoutMs))
        return false;
    return loaded.count() == 1;
}

/// What the plot must show for a canonical tensor: the file's values / ncall for its llama.cpp
/// entry (Imatrix::importance, what llama-quantize hands the quantiser).
QVector<double> expectedImportance(const lcw::compress::Imatrix& m, const lcw::Model& model,
                                   const std::string& canonical, const std::string& llamaName) {
    const lcw::TensorView* t = model.find(canonical);
    if (!t) return {};
    QVector<double> out;
    for (float v : m.importance(llamaName, t->cols())) out << double(v);
    return out;
}

/// Runs the manager's computation to its end; true when it produced an imatrix.
bool computeAndWait(lcw::ImatrixManager* im, const lcw::ImatrixSettings& s) {
    QSignalSpy done(im, &lcw::ImatrixManager::computed);
    QSignalSpy failed(im, &lcw::ImatrixManager::failed);
    if (!im->compute(s)) return false;
    if (!QTest::qWaitFor([&] { return done.count() + failed.count() > 0; }, kLongTimeoutMs))
        return false;
    return done.count() == 1;
}

} // namespace

class TestGuiGguf : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() {
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("lcw-test"));
        QCoreApplication::setApplicationName(QStringLiteral("test_gui_gguf"));
        QSettings().clear();
        qputenv("XDG_DATA_HOME", QByteArray::fromStdString(lcwtest::tempDir("gui-gguf-xdg")));
    }
    void cleanupTestCase() { QSettings().clear(); }

    void timeLeftEstimate() {
        using lcw::TaskStatusWidget;
        QVERIFY(std::isnan(TaskStatusWidget::estimateSecondsLeft(0.5, 1.0)));    // too early
        QVERIFY(std::isnan(TaskStatusWidget::estimateSecondsLeft(0.001, 30.0))); // too little
        QCOMPARE(TaskStatusWidget::estimateSecondsLeft(0.25, 10.0), 30.0);
        QCOMPARE(TaskStatusWidget::estimateSecondsLeft(0.8, 40.0), 10.0);
        QCOMPARE(lcw::formatDuration(44.6), QStringLiteral("45 s"));
        QCOMPARE(lcw::formatDuration(185), QStringLiteral("3 min 05 s"));
        QCOMPARE(lcw::formatDuration(3720), QStringLiteral("1 h 02 min"));
        QCOMPARE(lcw::formatDuration(std::nan("")), QString());
    }

    void imatrixDialogHasLlamaImatrixDefaults() {
        lcw::ImatrixDialog d(lcw::ImatrixSettings{});
        QCOMPARE(d.seqLenBox()->value(), 512); // llama-imatrix -c
        QCOMPARE(d.samplesBox()->value(), 0);  // every chunk
        QCOMPARE(d.samplesBox()->text(), QStringLiteral("all"));
        QVERIFY(d.textEdit()->text().isEmpty()); // the bundled text
        lcw::ImatrixSettings s;
        s.seqLen = 128;
        s.samples = 24;
        s.textFile = QStringLiteral("/tmp/calib.txt");
        d.setSettings(s);
        QVERIFY(d.settings() == s);
    }

    // The imatrix llama-imatrix wrote for gguf-k, opened for that model: the Activations tab
    // draws each selected linear's mean x² per input column, exactly the values
    // Imatrix::importance gives for its llama.cpp name.
    void imatrixOpensForTheRightModelAndPlots() {
        LCW_REQUIRE_SHARED(kGgufK);
        LCW_REQUIRE_SHARED(kGgufKImatrix);
        QDir(lcw::StatsPanel::cacheDir()).removeRecursively();
        const lcw::compress::Imatrix ref =
            lcw::compress::readImatrix(shared(kGgufKImatrix).toStdString());
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        w.show();
        QVERIFY(loadAndWait(w, shared(kGgufK)));
        lcw::StatsPanel* sp = w.statsPanel();
        lcw::ChannelProfilePlot* plot = sp->imatrixProfilePlot();
        QVERIFY(plot->values().isEmpty());
        QVERIFY(plot->plot()->plottableCount() == 0);

        QSignalSpy errors(&w, &lcw::MainWindow::errorShown);
        QSignalSpy changed(w.imatrixManager(), &lcw::ImatrixManager::changed);
        QVERIFY(w.openImatrix(shared(kGgufKImatrix)));
        QCOMPARE(errors.count(), 0);
        QCOMPARE(changed.count(), 1);
        QCOMPARE(w.imatrixManager()->path(), shared(kGgufKImatrix));
        QVERIFY(!w.imatrixManager()->isUnsaved());
        QCOMPARE(sp->tabs()->currentIndex(), 1); // the Activations tab is shown

        const std::pair<const char*, const char*> cases[] = {
            {"layers.1.attn.q", "blk.1.attn_q.weight"},
            {"layers.0.attn.k", "blk.0.attn_k.weight"},
            {"layers.2.attn.o", "blk.2.attn_output.weight"},
            {"layers.3.mlp.gate", "blk.3.ffn_gate.weight"},
            {"layers.3.mlp.down", "blk.3.ffn_down.weight"},
        };
        for (const auto& [canonical, llama] : cases) {
            QVERIFY(w.selectTensor(QString::fromLatin1(canonical)));
            const QVector<double> want = expectedImportance(ref, *w.model(), canonical, llama);
            QCOMPARE(want.size(),
                     std::string_view(canonical).ends_with("down") ? 768 : 256); // input columns
            QCOMPARE(plot->values(), want);
            QVERIFY(plot->plot()->plottableCount() > 0);
            QVERIFY2(plot->title().contains(QString::fromLatin1(llama)), qPrintable(plot->title()));
            // the values are what the file stores divided by the calls (24 chunks)
            const lcw::compress::ImatrixEntry* e = ref.find(llama);
            QVERIFY(e);
            QCOMPARE(e->ncall, 24);
            QCOMPARE(float(plot->values()[7]), e->values[7] / 24.0f);
        }
        // Not collected by llama-imatrix without --process-output: nothing drawn.
        QVERIFY(w.selectTensor(QStringLiteral("lm_head")));
        QVERIFY(plot->values().isEmpty());
        QVERIFY2(plot->title().contains(QStringLiteral("output.weight")),
                 qPrintable(plot->title()));

        // Log scale: the tab's value axes turn logarithmic, the values stay.
        QVERIFY(w.selectTensor(QStringLiteral("layers.1.attn.q")));
        sp->setActivationLogScale(true);
        QVERIFY(plot->logScale());
        QCOMPARE(plot->plot()->yAxis->scaleType(), QCPAxis::stLogarithmic);
        QVERIFY(sp->activationProfilePlot()->logScale());
        QCOMPARE(plot->values(),
                 expectedImportance(ref, *w.model(), "layers.1.attn.q", "blk.1.attn_q.weight"));
        sp->setActivationLogScale(false);
        QCOMPARE(plot->plot()->yAxis->scaleType(), QCPAxis::stLinear);

        // With statistics, the activation abs-max per channel above it has the same axis: one
        // entry per input column, and panning one pans the other.
        lcw::StatsSettings st;
        st.samples = 2;
        st.seqLen = 64;
        st.histBins = 64;
        sp->setSettings(st);
        QSignalSpy statsDone(sp, &lcw::StatsPanel::computeFinished);
        QVERIFY(sp->computeStats());
        QTRY_VERIFY_WITH_TIMEOUT(statsDone.count() == 1, kLongTimeoutMs);
        QCOMPARE(sp->activationProfilePlot()->count(), plot->count());
        QCOMPARE(plot->values(),
                 expectedImportance(ref, *w.model(), "layers.1.attn.q", "blk.1.attn_q.weight"));
        sp->activationProfilePlot()->plot()->xAxis->setRange(10, 50);
        QCOMPARE(plot->plot()->xAxis->range().lower, 10.0);
        QCOMPARE(plot->plot()->xAxis->range().upper, 50.0);
        // Stacked, they share one x scale on screen: the same left edge of the axis rect.
        sp->tabs()->setCurrentIndex(1);
        QTRY_COMPARE(plot->plot()->axisRect()->left(),
                     sp->activationProfilePlot()->plot()->axisRect()->left());

        // The same file fits the same weights read from the Hugging Face folder (lcw's names are
        // the same; the Q/K row permutation does not change input columns).
        if (lcwtest::exists(lcwtest::sharedPath(kGgufKHf))) {
            QVERIFY(loadAndWait(w, shared(kGgufKHf)));
            QVERIFY(!w.imatrixManager()->imatrix()); // a new model drops the old one
            QVERIFY(w.openImatrix(shared(kGgufKImatrix)));
            QVERIFY(w.selectTensor(QStringLiteral("layers.2.mlp.up")));
            QCOMPARE(plot->values(),
                     expectedImportance(ref, *w.model(), "layers.2.mlp.up", "blk.2.ffn_up.weight"));
        }
    }

    // Another model's imatrix, a truncated file and a missing one: an error naming the file and
    // the problem; the imatrix shown stays.
    void imatrixForAnotherModelIsRefused() {
        LCW_REQUIRE_SHARED(kGgufKImatrix);
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        if (!lcwtest::exists(demo.toStdString())) QSKIP("bundled demo model not found");
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, demo));
        lcw::ImatrixManager* im = w.imatrixManager();
        lcw::ImatrixSettings s;
        s.seqLen = 32;
        s.samples = 2;
        s.textFile = QString::fromStdString(lcwtest::demoTextPath());
        QVERIFY(computeAndWait(im, s));
        const auto before = im->imatrix();
        QVERIFY(before);
        QVERIFY(w.selectTensor(QStringLiteral("layers.0.mlp.down")));
        const QVector<double> shown = w.statsPanel()->imatrixProfilePlot()->values();
        QCOMPARE(shown.size(), 172); // stories260K's hidden width

        const std::string dir = lcwtest::tempDir("gui-imatrix-bad");
        std::ifstream in(lcwtest::sharedPath(kGgufKImatrix), std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(in)), {});
        const QString truncated = QString::fromStdString(dir + "/truncated.dat");
        std::ofstream(truncated.toStdString(), std::ios::binary)
            << bytes.substr(0, bytes.size() / 2);
        QSignalSpy changed(im, &lcw::ImatrixManager::changed);
        auto refused = [&](const QString& file, const QString& problem) -> QString {
            QSignalSpy errors(&w, &lcw::MainWindow::errorShown);
            if (w.openImatrix(file)) return QStringLiteral("opened %1").arg(file);
            if (errors.count() != 1) return QStringLiteral("no error shown for %1").arg(file);
            const QString msg = errors.first().first().toString();
            if (!msg.contains(file) || !msg.contains(problem))
                return QStringLiteral("error '%1' lacks '%2'").arg(msg, problem);
            if (im->imatrix() != before || changed.count() != 0)
                return QStringLiteral("%1 replaced the imatrix").arg(file);
            if (w.statsPanel()->imatrixProfilePlot()->values() != shown)
                return QStringLiteral("%1 changed the plot").arg(file);
            return {};
        };
        QCOMPARE(refused(shared(kGgufKImatrix), QStringLiteral("another model")), QString());
        QCOMPARE(refused(truncated, QStringLiteral("truncated")), QString());
        QCOMPARE(
            refused(QString::fromStdString(dir + "/missing.dat"), QStringLiteral("cannot open")),
            QString());
        QCOMPARE(im->path(), QString()); // still the computed, unsaved one
    }

    // Run ▸ Compute Importance Matrix… on the task runner gives core's computeImatrix result;
    // cancelling keeps the previous one; save writes the .dat llama-quantize reads; a project
    // keeps it.
    void imatrixComputesCancelsSavesAndIsKeptInProjects() {
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        if (!lcwtest::exists(demo.toStdString())) QSKIP("bundled demo model not found");
        QFile::remove(lcw::MainWindow::autosavePath());
        const std::string text = lcwtest::demoTextPath();
        const std::string dir = lcwtest::tempDir("gui-imatrix-compute");
        lcw::compress::Imatrix computed;
        const QString datPath = QString::fromStdString(dir + "/imatrix.dat");
        const QString projPath = QString::fromStdString(dir + "/p.lcwproj");
        {
            lcw::MainWindow w(lcw::MainWindow::Options{false, false});
            QVERIFY(loadAndWait(w, demo));
            lcw::ImatrixManager* im = w.imatrixManager();
            lcw::ImatrixSettings s;
            s.seqLen = 64;
            s.samples = 3;
            s.textFile = QString::fromStdString(text);
            QSignalSpy queued(w.taskRunner(), &lcw::TaskRunner::jobQueued);
            QVERIFY(computeAndWait(im, s));
            QCOMPARE(queued.count(), 1); // on the task runner
            QVERIFY(im->isUnsaved());
            computed = *im->imatrix();

            // Core on the same chunks.
            const lcw::compress::CalibrationSet cal =
                lcw::compress::imatrixCalibration(*w.model(), text, 64, 3);
            lcw::compress::ImatrixOptions o;
            o.dataset = text;
            lcw::NullProgress np;
            const lcw::compress::ImatrixResult r =
                lcw::compress::computeImatrix(*w.model(), cal, o, np);
            QCOMPARE(computed.entries.size(), r.imatrix.entries.size());
            QCOMPARE(computed.entries.size(), size_t(5 * 7)); // 5 blocks × q k v o gate up down
            QCOMPARE(computed.chunks, 3);
            QCOMPARE(computed.dataset, text);
            for (size_t i = 0; i < computed.entries.size(); ++i) {
                const auto& a = computed.entries[i];
                const auto& b = r.imatrix.entries[i];
                QCOMPARE(a.name, b.name);
                QCOMPARE(a.ncall, b.ncall);
                QCOMPARE(a.values.size(), b.values.size());
                for (size_t j = 0; j < a.values.size(); ++j)
                    QVERIFY2(std::abs(a.values[j] - b.values[j]) <=
                                 1e-5f * std::max(1.0f, std::abs(b.values[j])),
                             qPrintable(QString::fromStdString(a.name)));
            }

            // Cancelled: nothing changes.
            lcw::ImatrixSettings longRun;
            longRun.seqLen = 16;
            longRun.samples = 0; // every chunk of the evaluation text: many
            longRun.textFile = QString::fromStdString(text);
            QSignalSpy cancelled(im, &lcw::ImatrixManager::cancelled);
            QSignalSpy changed(im, &lcw::ImatrixManager::changed);
            QVERIFY(im->compute(longRun));
            QVERIFY(im->isComputing());
            QVERIFY(!im->compute(longRun)); // one at a time
            QTRY_VERIFY_WITH_TIMEOUT(w.taskRunner()->currentJob() == im->computeJob(), kTimeoutMs);
            im->cancel();
            QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, kLongTimeoutMs);
            QVERIFY(!im->isComputing());
            QCOMPARE(changed.count(), 0);
            QCOMPARE(im->imatrix()->entries.size(), computed.entries.size());

            // Saved: llama.cpp's legacy .dat, read back equal.
            QVERIFY(w.saveImatrix(datPath));
            QVERIFY(!im->isUnsaved());
            QCOMPARE(im->path(), datPath);
            const lcw::compress::Imatrix back = lcw::compress::readImatrix(datPath.toStdString());
            QCOMPARE(back.entries.size(), computed.entries.size());
            for (size_t i = 0; i < back.entries.size(); ++i) {
                QCOMPARE(back.entries[i].name, computed.entries[i].name);
                QCOMPARE(back.entries[i].ncall, computed.entries[i].ncall);
                QVERIFY(back.entries[i].values == computed.entries[i].values);
            }
            QVERIFY(w.saveProject(projPath));
            w.waitForSaves();
        }
        // Reopened from the project: the same imatrix (bit for bit), its path, and the plot.
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QSignalSpy opened(&w, &lcw::MainWindow::projectOpened);
        QVERIFY(w.openProject(projPath));
        QTRY_COMPARE_WITH_TIMEOUT(opened.count(), 1, kTimeoutMs);
        const auto m = w.imatrixManager()->imatrix();
        QVERIFY(m);
        QCOMPARE(w.imatrixManager()->path(), datPath);
        QCOMPARE(m->entries.size(), computed.entries.size());
        QCOMPARE(m->chunks, computed.chunks);
        QCOMPARE(m->dataset, computed.dataset);
        for (size_t i = 0; i < m->entries.size(); ++i) {
            QCOMPARE(m->entries[i].name, computed.entries[i].name);
            QCOMPARE(m->entries[i].ncall, computed.entries[i].ncall);
            QVERIFY(m->entries[i].values == computed.entries[i].values);
        }
        QVERIFY(w.selectTensor(QStringLiteral("layers.4.attn.v")));
        QCOMPARE(
            w.statsPanel()->imatrixProfilePlot()->values(),
            expectedImportance(computed, *w.model(), "layers.4.attn.v", "blk.4.attn_v.weight"));
        // File ▸ New Project forgets it.
        w.newProject();
        QVERIFY(!w.imatrixManager()->imatrix());
        QVERIFY(w.statsPanel()->imatrixProfilePlot()->values().isEmpty());
    }
};

QTEST_MAIN(TestGuiGguf)
#include "test_gui_gguf.moc"
