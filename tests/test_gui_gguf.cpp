// Tests of the GUI's llama.cpp parts: the importance matrix (open for the right model and plot
// per input channel, refuse another model's, compute on the task runner as core does, cancel,
// save, keep in the project), the Export dialog's GGUF page (llama.cpp presets give
// llama-quantize's files byte for byte, the recipe's types, fallbacks in the report, cancel
// leaves no file, the llama-quantize command and type list) and the time-left estimate.
#include "core/compress/imatrix.h"
#include "core/export/gguf_mix.h"
#include "core/export/gguf_preset.h"
#include "core/io/gguf.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "gui_test_util.h"
#include "plots/channel_profile_plot.h"
#include "test_util.h"
#include "widgets/export_dialog.h"
#include "widgets/gguf_export_panel.h"
#include "widgets/imatrix_dialog.h"
#include "widgets/imatrix_manager.h"
#include "widgets/main_window.h"
#include "widgets/number_format.h"
#include "widgets/recipe_editor.h"
#include "widgets/stats_panel.h"
#include "widgets/task_status_widget.h"

#include <QCheckBox>
#include <QComboBox>
#include <QPlainTextEdit>
#include <QSettings>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTableWidget>
#include <QUndoStack>
#include <QtTest/QtTest>
#include <qcustomplot.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace {

constexpr int kTimeoutMs = 30000;
constexpr int kLongTimeoutMs = 300000;
const char* const kGgufK = "models/gguf-k/model-f32.gguf";
const char* const kGgufKHf = "models/gguf-k/hf";
const char* const kGgufKImatrix = "models/gguf-k/imatrix.dat";

QString shared(const char* rel) {
    return QString::fromStdString(lcwtest::sharedPath(rel));
}

using lcwtest::loadAndWait;

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

/// Runs the page's export to its end; true when it finished (not cancelled or failed).
bool exportAndWait(lcw::GgufExportPanel& p) {
    QSignalSpy done(&p, &lcw::GgufExportPanel::finished);
    QSignalSpy failed(&p, &lcw::GgufExportPanel::failed);
    QSignalSpy cancelled(&p, &lcw::GgufExportPanel::cancelled);
    if (!p.start()) return false;
    if (!QTest::qWaitFor([&] { return done.count() + failed.count() + cancelled.count() > 0; },
                         kLongTimeoutMs))
        return false;
    if (failed.count()) qWarning("export failed: %s", qPrintable(p.lastError()));
    return done.count() == 1 && p.result();
}

/// Empty when `file` has the same tensors (names, types, bytes) as llama-quantize's `ref`,
/// else the first difference.
QString sameTensors(const std::string& file, const std::string& ref) {
    const lcw::GgufFile out = lcw::readGguf(file);
    const lcw::GgufFile want = lcw::readGguf(ref);
    if (out.tensors.size() != want.tensors.size())
        return QStringLiteral("%1 tensors, llama-quantize %2")
            .arg(out.tensors.size())
            .arg(want.tensors.size());
    if (out.getInt("general.file_type") != want.getInt("general.file_type"))
        return QStringLiteral("general.file_type differs");
    for (const auto& t : want.tensors) {
        const lcw::TensorView* x = out.findTensor(t.name);
        if (!x) return QStringLiteral("no %1").arg(QString::fromStdString(t.name));
        if (x->dtype != t.dtype || x->nbytes != t.nbytes ||
            std::memcmp(x->data, t.data, t.nbytes) != 0)
            return QStringLiteral("%1: %2, llama-quantize %3")
                .arg(QString::fromStdString(t.name), lcw::dtypeName(x->dtype).data(),
                     lcw::dtypeName(t.dtype).data());
    }
    return {};
}

/// The report table's row of a tensor (-1 when absent).
int rowOf(QTableWidget* t, const QString& name) {
    for (int r = 0; r < t->rowCount(); ++r)
        if (t->item(r, lcw::GgufExportPanel::NameColumn)->text() == name) return r;
    return -1;
}

} // namespace

class TestGuiGguf : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() { lcwtest::initGuiTestCase("test_gui_gguf"); }
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
        QVERIFY(lcwtest::openProjectAndWait(w, projPath));
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

    // ---- GGUF export page ----

    // llama.cpp presets through the page give llama-quantize's files byte for byte: Q4_K_M with
    // the opened imatrix, Q2_K with the imatrix as a file, Q6_K without one; the report table
    // lists every tensor as written, and the file records the imatrix as llama-quantize does.
    void ggufExportPresetsMatchLlamaQuantize() {
        LCW_REQUIRE_SHARED(kGgufK);
        LCW_REQUIRE_SHARED(kGgufKImatrix);
        LCW_REQUIRE_SHARED("models/gguf-k/model-Q4_K_M-imat.gguf");
        const std::string dir = lcwtest::tempDir("gui-gguf-presets");
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, shared(kGgufK)));
        QVERIFY(w.openImatrix(shared(kGgufKImatrix)));
        lcw::ExportDialog d(w.exportSources(), &w);
        QVERIFY(d.showPage(lcw::ExportDialog::Page::Gguf));
        lcw::GgufExportPanel* p = d.ggufPanel();
        QVERIFY(p);
        QCOMPARE(p->typeChoice(), QStringLiteral("Q4_K_M")); // the default
        QCOMPARE(p->imatrixSource(), lcw::GgufExportPanel::ImatrixSource::Opened);
        const std::string q4 = dir + "/q4_k_m-imat.gguf";
        p->setOutputPath(QString::fromStdString(q4));
        QSignalSpy queued(w.taskRunner(), &lcw::TaskRunner::jobQueued);
        QVERIFY(exportAndWait(*p));
        QCOMPARE(queued.count(), 1); // on the task runner
        QCOMPARE(sameTensors(q4, lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf")),
                 QString());
        {
            const lcw::GgufFile out = lcw::readGguf(q4);
            const lcw::GgufFile ref =
                lcw::readGguf(lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf"));
            QCOMPARE(out.getString("quantize.imatrix.dataset"),
                     ref.getString("quantize.imatrix.dataset"));
            for (const char* k :
                 {"quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"})
                QVERIFY2(out.getInt(k) && out.getInt(k) == ref.getInt(k), k);
            QCOMPARE(QString::fromStdString(*out.getString("quantize.imatrix.file")),
                     shared(kGgufKImatrix));
        }
        // The report: one row per tensor, as written.
        const lcw::GgufExportResult& r = *p->result();
        QTableWidget* t = p->reportTable();
        QCOMPARE(t->rowCount(), int(r.tensors.size()));
        const lcw::GgufFile out = lcw::readGguf(q4);
        QCOMPARE(size_t(t->rowCount()), out.tensors.size());
        for (const auto& x : out.tensors) {
            const int row = rowOf(t, QString::fromStdString(x.name));
            QVERIFY2(row >= 0, x.name.c_str());
            QCOMPARE(t->item(row, lcw::GgufExportPanel::TypeColumn)->text(),
                     QString::fromLatin1(lcw::llamaCppTypeName(x.dtype)));
            QCOMPARE(t->item(row, lcw::GgufExportPanel::BytesColumn)
                         ->data(Qt::DisplayRole)
                         .toULongLong(),
                     qulonglong(x.nbytes));
        }
        QCOMPARE(t->item(rowOf(t, QStringLiteral("blk.0.attn_v.weight")),
                         lcw::GgufExportPanel::StatusColumn)
                     ->text(),
                 QStringLiteral("converted"));
        QVERIFY(p->summaryLabel()->text().contains(QString::fromStdString(q4)));
        // Against the model it was quantised from: a real, small divergence.
        QVERIFY(p->klCheck());
        QVERIFY(p->klCheck()->stats.kld.mean > 1e-6 && p->klCheck()->stats.kld.mean < 1.0);
        QVERIFY(p->summaryLabel()->text().contains(QStringLiteral("from the model")));

        if (lcwtest::exists(lcwtest::sharedPath("models/gguf-k/model-Q2_K-imat.gguf"))) {
            const std::string q2 = dir + "/q2_k-imat.gguf";
            QVERIFY(p->setTypeChoice(QStringLiteral("Q2_K")));
            p->setImatrixSource(lcw::GgufExportPanel::ImatrixSource::File, shared(kGgufKImatrix));
            p->setOutputPath(QString::fromStdString(q2));
            QVERIFY(exportAndWait(*p));
            QCOMPARE(sameTensors(q2, lcwtest::sharedPath("models/gguf-k/model-Q2_K-imat.gguf")),
                     QString());
        }
        if (lcwtest::exists(lcwtest::sharedPath("models/gguf-k/model-Q6_K.gguf"))) {
            const std::string q6 = dir + "/q6_k.gguf";
            QVERIFY(p->setTypeChoice(QStringLiteral("Q6_K")));
            p->setImatrixSource(lcw::GgufExportPanel::ImatrixSource::None);
            p->setOutputPath(QString::fromStdString(q6));
            QVERIFY(exportAndWait(*p));
            QCOMPARE(sameTensors(q6, lcwtest::sharedPath("models/gguf-k/model-Q6_K.gguf")),
                     QString());
        }
        // Another model's imatrix as the file: refused before any work, naming the file.
        const lcw::compress::Imatrix other = [&] {
            lcw::compress::Imatrix m =
                lcw::compress::readImatrix(lcwtest::sharedPath(kGgufKImatrix));
            m.entries.front().values.pop_back(); // 255 columns: fits no tensor of the model
            return m;
        }();
        const QString bad = QString::fromStdString(dir + "/other.dat");
        lcw::compress::writeImatrix(other, bad.toStdString());
        p->setImatrixSource(lcw::GgufExportPanel::ImatrixSource::File, bad);
        const int jobs = queued.count();
        QVERIFY(!p->start());
        QVERIFY2(p->lastError().contains(bad) &&
                     p->lastError().contains(QStringLiteral("another model")),
                 qPrintable(p->lastError()));
        QCOMPARE(queued.count(), jobs);
    }

    // The recipe's types: the editor's lcw preset Q8_0 puts every linear in q8_0, copied as
    // packed ("exact"); the embedding keeps its stored type unless a type is picked for tensors
    // without one. A llama.cpp preset on 64-wide rows reports llama-quantize's fallbacks.
    void ggufExportRecipeTypesAndFallbacks() {
        LCW_REQUIRE_SHARED(kGgufKHf);
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        if (!lcwtest::exists(demo.toStdString())) QSKIP("bundled demo model not found");
        const std::string dir = lcwtest::tempDir("gui-gguf-recipe");
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, shared(kGgufKHf)));
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("Q8_0")));
        auto p = std::make_unique<lcw::GgufExportPanel>(w.ggufExportContext());
        QVERIFY(p->setTypeChoice(QString::fromLatin1(lcw::GgufExportPanel::kRecipeChoice)));
        p->setImatrixSource(lcw::GgufExportPanel::ImatrixSource::None);
        p->setOutputPath(QString::fromStdString(dir + "/recipe.gguf"));
        QVERIFY(exportAndWait(*p));
        QTableWidget* t = p->reportTable();
        auto cell = [&](const char* name, int col) {
            const int row = rowOf(t, QString::fromLatin1(name));
            return row < 0 ? QString() : t->item(row, col)->text();
        };
        using P = lcw::GgufExportPanel;
        for (const char* name :
             {"blk.0.attn_q.weight", "blk.3.ffn_down.weight", "blk.2.attn_v.weight"}) {
            QCOMPARE(cell(name, P::TypeColumn), QStringLiteral("q8_0"));
            QCOMPARE(cell(name, P::StatusColumn), QStringLiteral("exact"));
        }
        QCOMPARE(cell("blk.0.attn_norm.weight", P::TypeColumn), QStringLiteral("f32"));
        QCOMPARE(cell("token_embd.weight", P::TypeColumn), QStringLiteral("f32"));
        // The written file holds the configuration: lcw reads it back with the same logits.
        {
            const auto kl = p->klCheck();
            QVERIFY(kl);
            QCOMPARE(kl->chunks, int64_t(8));
            QVERIFY2(kl->stats.kld.mean < 1e-9, qPrintable(QString::number(kl->stats.kld.mean)));
            QCOMPARE(kl->stats.sameTop, 1.0);
            QVERIFY(p->summaryLabel()->text().contains(QStringLiteral("recipe's configuration")));
        }
        {
            const lcw::GgufFile g = lcw::readGguf(dir + "/recipe.gguf");
            QCOMPARE(g.findTensor("blk.1.attn_k.weight")->dtype, lcw::DType::Q8_0);
        }
        // Tensors without a GGUF type re-encoded into one the user picks.
        p->setOtherTensorsType(lcw::DType::Q8_0);
        p->setOutputPath(QString::fromStdString(dir + "/recipe-q8-embed.gguf"));
        QVERIFY(exportAndWait(*p));
        QCOMPARE(cell("token_embd.weight", P::TypeColumn), QStringLiteral("q8_0"));
        QCOMPARE(cell("token_embd.weight", P::StatusColumn), QStringLiteral("converted"));
        QCOMPARE(cell("blk.0.attn_q.weight", P::StatusColumn), QStringLiteral("exact"));

        QVERIFY(loadAndWait(w, demo));
        p = std::make_unique<lcw::GgufExportPanel>(w.ggufExportContext());
        t = p->reportTable();
        // Q4_K_M on stories260K: rows of 64 do not fit 256-blocks; llama-quantize's fallback.
        QVERIFY(p->setTypeChoice(QStringLiteral("Q4_K_M")));
        p->setOutputPath(QString::fromStdString(dir + "/q4km.gguf"));
        QVERIFY(exportAndWait(*p));
        const QString q = cell("blk.0.attn_q.weight", P::StatusColumn);
        QVERIFY2(q.contains(QStringLiteral("fallback q4_K → q5_0")), qPrintable(q));
        QCOMPARE(cell("blk.0.attn_q.weight", P::TypeColumn), QStringLiteral("q5_0"));
        QVERIFY(p->summaryLabel()->text().contains(QStringLiteral("fallbacks")));
        const lcw::GgufFile g = lcw::readGguf(dir + "/q4km.gguf");
        QCOMPARE(g.findTensor("blk.0.attn_q.weight")->dtype, lcw::DType::Q5_0);
        QCOMPARE(*g.getInt("general.file_type"),
                 int64_t(lcw::llamaFtypeInfo(lcw::LlamaFtype::Q4_K_M).id));
    }

    // Cancelled while waiting behind another job, and while running: no file, no temporary.
    void ggufExportCancelLeavesNoFile() {
        // 22 blocks of 768-wide MLPs: K-quants without fallbacks, many tensors to write.
        const std::string modelDir = lcwtest::writeNarrowTinyLlama("gui-gguf-synth", 768);
        QVERIFY(!modelDir.empty());
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, QString::fromStdString(modelDir)));
        const std::string out = lcwtest::tempDir("gui-gguf-cancel");
        lcw::GgufExportPanel p(w.ggufExportContext());
        QVERIFY(p.setTypeChoice(QStringLiteral("Q4_K_M")));
        p.setOutputPath(QString::fromStdString(out + "/x.gguf"));

        // Queued behind a job that runs until it is cancelled.
        auto release = std::make_shared<std::atomic<bool>>(false);
        auto started = std::make_shared<std::atomic<bool>>(false);
        const auto blocker = w.taskRunner()->submit(
            QStringLiteral("blocker"), [release, started](lcw::Progress& pr) -> std::any {
                started->store(true);
                while (!release->load() && pr.report(0.5, "waiting"))
                    std::this_thread::sleep_for(std::chrono::milliseconds(2));
                return lcw::Status::Ok;
            });
        QTRY_VERIFY_WITH_TIMEOUT(started->load(), kTimeoutMs);
        QSignalSpy cancelled(&p, &lcw::GgufExportPanel::cancelled);
        QVERIFY(p.start());
        QVERIFY(p.isRunning());
        p.cancel();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, kTimeoutMs);
        QVERIFY(!p.isRunning());
        release->store(true);
        QTRY_VERIFY_WITH_TIMEOUT(!w.taskRunner()->isPending(blocker), kTimeoutMs);
        QVERIFY(std::filesystem::is_empty(out));

        // Running: cancelled at its first progress report.
        QSignalSpy finished(&p, &lcw::GgufExportPanel::finished);
        auto once = std::make_shared<bool>(false);
        connect(w.taskRunner(), &lcw::TaskRunner::progressChanged, &p,
                [&p, once](lcw::TaskRunner::JobId, double f, const QString&) {
                    if (f > 0 && !*once) {
                        *once = true;
                        p.cancel();
                    }
                });
        QVERIFY(p.start());
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count() + finished.count(), 2, kLongTimeoutMs);
        QVERIFY(*once);
        QCOMPARE(finished.count(), 0);
        QVERIFY(!p.result());
        QVERIFY(p.summaryLabel()->text().contains(QStringLiteral("no file")));
        QVERIFY(std::filesystem::is_empty(out));
    }

    // "llama-quantize command": the invocation and the per-tensor type list that reproduce a
    // preset with llama.cpp; the list's types are those of llama-quantize's own file.
    void ggufCommandAndTypeList() {
        LCW_REQUIRE_SHARED(kGgufK);
        LCW_REQUIRE_SHARED(kGgufKImatrix);
        LCW_REQUIRE_SHARED("models/gguf-k/model-Q4_K_M-imat.gguf");
        const std::string dir = lcwtest::tempDir("gui-gguf-command");
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, shared(kGgufK)));
        QVERIFY(w.openImatrix(shared(kGgufKImatrix)));
        lcw::GgufExportPanel p(w.ggufExportContext());
        p.setMode(lcw::GgufExportPanel::Mode::Command);
        QVERIFY(p.setTypeChoice(QStringLiteral("Q4_K_M")));
        const QString outPath = QString::fromStdString(dir + "/model-Q4_K_M.gguf");
        p.setOutputPath(outPath);
        QSignalSpy queued(w.taskRunner(), &lcw::TaskRunner::jobQueued);
        QVERIFY2(p.start(), qPrintable(p.lastError()));
        QCOMPARE(queued.count(), 0); // written at once, no job
        QCOMPARE(p.commandFiles().size(), 2);
        auto read = [](const QString& f) {
            std::ifstream in(f.toStdString(), std::ios::binary);
            return std::string((std::istreambuf_iterator<char>(in)), {});
        };
        const std::string script = read(p.commandFiles()[0]);
        const std::string list = read(p.commandFiles()[1]);
        QVERIFY(p.commandFiles()[0].endsWith(QStringLiteral("model-Q4_K_M.llama-quantize.sh")));
        QVERIFY(p.commandFiles()[1].endsWith(QStringLiteral("model-Q4_K_M.tensor-types.txt")));

        // Core's rendering of the same mix.
        lcw::GgufMixOptions mo;
        mo.hasImatrix = true;
        const lcw::GgufMix mix = lcw::ggufMixFor(*w.model(), lcw::LlamaFtype::Q4_K_M, mo);
        lcw::LlamaQuantizeCommandOptions co;
        co.input = w.modelPath().toStdString(); // the opened GGUF file is the command's input
        co.output = outPath.toStdString();
        co.imatrix = shared(kGgufKImatrix).toStdString();
        QCOMPARE(QString::fromStdString(script),
                 QString::fromStdString("#!/bin/sh\n" +
                                        lcw::renderLlamaQuantizeCommand(mix, co).script() + "\n"));
        QCOMPARE(QString::fromStdString(list),
                 QString::fromStdString(lcw::renderTensorTypeList(mix)));
        QVERIFY(script.find("--imatrix") != std::string::npos);
        QVERIFY(script.find("Q4_K_M") != std::string::npos);
        QVERIFY(p.commandView()->toPlainText().contains(QStringLiteral("blk.0.attn_v.weight")));

        // Independent: each line's type is what llama-quantize wrote for that tensor.
        const lcw::GgufFile ref =
            lcw::readGguf(lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf"));
        std::istringstream lines(list);
        std::string name, type;
        size_t n = 0;
        while (lines >> name >> type) {
            const lcw::TensorView* t = ref.findTensor(name);
            QVERIFY2(t, name.c_str());
            QCOMPARE(QString::fromStdString(type),
                     QString::fromLatin1(lcw::llamaCppTypeName(t->dtype)));
            ++n;
        }
        QCOMPARE(n, ref.tensors.size());

        // The recipe's own types: core's ggufMixForRecipe (closest preset + per-tensor entries).
        QVERIFY(p.setTypeChoice(QString::fromLatin1(lcw::GgufExportPanel::kRecipeChoice)));
        QVERIFY2(p.start(), qPrintable(p.lastError()));
        const lcw::GgufMix rmix = lcw::ggufMixForRecipe(*w.model(), w.recipeEditor()->recipe(), mo);
        QCOMPARE(QString::fromStdString(read(p.commandFiles()[1])),
                 QString::fromStdString(lcw::renderTensorTypeList(rmix)));
    }

    // ---- Recipe editor: llama.cpp presets ----

    // The llama.cpp mixes are a group of their own in the preset list; applying Q4_K_M (with the
    // opened imatrix) gives core's presetRecipe, any tensor's type can then be changed, and the
    // edited recipe exported as the recipe chose is llama-quantize's Q4_K_M file except for the
    // changed tensor.
    void recipeEditorLlamaPresetsEditAndExport() {
        LCW_REQUIRE_SHARED(kGgufK);
        LCW_REQUIRE_SHARED(kGgufKImatrix);
        LCW_REQUIRE_SHARED("models/gguf-k/model-Q4_K_M-imat.gguf");
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, shared(kGgufK)));
        lcw::RecipeEditor* ed = w.recipeEditor();
        QComboBox* presets = ed->presetCombo();
        const int lcwQ8 = presets->findData(QStringLiteral("Q8_0"));
        const int llamaQ4 = presets->findData(QStringLiteral("llama.cpp:Q4_K_M"));
        QVERIFY(lcwQ8 >= 0 && llamaQ4 > lcwQ8); // lcw's own first, then llama.cpp's group
        QCOMPARE(presets->itemText(llamaQ4), QStringLiteral("Q4_K_M (llama.cpp)"));
        for (const std::string& n : lcw::llamaPresetNames())
            QVERIFY2(presets->findData(QStringLiteral("llama.cpp:") + QString::fromStdString(n)) >
                         lcwQ8,
                     n.c_str());
        QVERIFY(presets->findData(QStringLiteral("llama.cpp:Q4_K_M-GPTQ")) > llamaQ4);
        // The lcw preset of the same name stays lcw's.
        QVERIFY(ed->applyPreset(QStringLiteral("Q8_0")));
        QCOMPARE(QString::fromStdString(ed->recipe().toJson().dump()),
                 QString::fromStdString(lcw::compress::findPreset("Q8_0").recipe.toJson().dump()));

        QVERIFY(w.openImatrix(shared(kGgufKImatrix)));
        const int steps = ed->undoStack()->count();
        QVERIFY(ed->applyLlamaPreset(QStringLiteral("Q4_K_M")));
        QCOMPARE(ed->undoStack()->count(), steps + 1);
        const lcw::compress::Recipe want =
            lcw::presetRecipe(*w.model(), "Q4_K_M", shared(kGgufKImatrix).toStdString());
        QCOMPARE(QString::fromStdString(ed->recipe().toJson().dump()),
                 QString::fromStdString(want.toJson().dump()));
        QCOMPARE(QString::fromStdString(ed->recipe().imatrix), shared(kGgufKImatrix));
        QCOMPARE(presets->currentIndex(), llamaQ4);
        QVERIFY(ed->plan());
        QVERIFY2(ed->planError().isEmpty(), qPrintable(ed->planError()));

        // The method list has every GGUF type; a rule's K-quant shows in the form.
        for (const char* m : {"q4_k", "q6_k", "q2_k", "iq4_nl", "iq4_xs", "q5_1", "f16"})
            QVERIFY2(ed->methodCombo()->findText(QString::fromLatin1(m)) >= 0, m);
        ed->setWeightForm(nlohmann::json{{"method", "gptq"}, {"gguf", "q4_k"}});
        QVERIFY(ed->weightFromForm() == (nlohmann::json{{"method", "gptq"}, {"gguf", "q4_k"}}));

        // Change one tensor: blk.0.attn_v to q8_0.
        QCOMPARE(ed->selectPattern(QStringLiteral("layers.0.attn.v")), 1);
        ed->setWeightForm(nlohmann::json{{"method", "q8_0"}});
        QVERIFY(ed->applyToSelection());
        for (const auto& l : ed->plan()->layers)
            if (l.name == "layers.0.attn.v")
                QCOMPARE(l.weight.method, lcw::compress::WeightMethod::Q8_0);

        const std::string dir = lcwtest::tempDir("gui-gguf-editor");
        lcw::GgufExportPanel p(w.ggufExportContext());
        QVERIFY(p.setTypeChoice(QString::fromLatin1(lcw::GgufExportPanel::kRecipeChoice)));
        p.setImatrixSource(lcw::GgufExportPanel::ImatrixSource::None); // the recipe names it
        p.setOutputPath(QString::fromStdString(dir + "/edited.gguf"));
        QVERIFY(exportAndWait(p));
        const lcw::GgufFile out = lcw::readGguf(dir + "/edited.gguf");
        const lcw::GgufFile ref =
            lcw::readGguf(lcwtest::sharedPath("models/gguf-k/model-Q4_K_M-imat.gguf"));
        QCOMPARE(out.tensors.size(), ref.tensors.size());
        QCOMPARE(out.findTensor("blk.0.attn_v.weight")->dtype, lcw::DType::Q8_0);
        QVERIFY(ref.findTensor("blk.0.attn_v.weight")->dtype != lcw::DType::Q8_0);
        for (const auto& t : ref.tensors) {
            if (t.name == "blk.0.attn_v.weight") continue;
            const lcw::TensorView* x = out.findTensor(t.name);
            QVERIFY2(x && x->dtype == t.dtype && x->nbytes == t.nbytes &&
                         std::memcmp(x->data, t.data, t.nbytes) == 0,
                     t.name.c_str());
        }
        // Undo twice: the lcw Q8_0 recipe again.
        ed->undoStack()->undo();
        ed->undoStack()->undo();
        QCOMPARE(QString::fromStdString(ed->recipe().toJson().dump()),
                 QString::fromStdString(lcw::compress::findPreset("Q8_0").recipe.toJson().dump()));
    }
};

QTEST_MAIN(TestGuiGguf)
#include "test_gui_gguf.moc"
