// Tests of the Qt layer: TaskRunner (order, progress, cancellation, errors, destruction), the
// main window on the stories260K model (table, filter, summary, plot, errors, recent list,
// drag and drop), BarPlot export and the GUI's formatting helpers.
#include "core/common/error.h"
#include "core/model/model.h"
#include "plots/bar_plot.h"
#include "test_util.h"
#include "widgets/layer_table_model.h"
#include "widgets/main_window.h"
#include "widgets/model_blocks.h"
#include "widgets/model_summary_panel.h"
#include "widgets/number_format.h"
#include "widgets/task_runner.h"

#include <QDropEvent>
#include <QFileInfo>
#include <QLineEdit>
#include <QMimeData>
#include <QSettings>
#include <QSortFilterProxyModel>
#include <QStandardPaths>
#include <QTableView>
#include <QtTest/QtTest>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

using lcw::TaskRunner;

namespace {

constexpr int kTimeoutMs = 30000;
const char* const kStories = "models/stories260K/hf";

/// A job that keeps reporting until it is told to stop; `started` and `sawCancel` let the test
/// synchronise without sleeping.
struct SpinJob {
    std::shared_ptr<std::atomic<bool>> started = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<std::atomic<bool>> sawCancel = std::make_shared<std::atomic<bool>>(false);

    TaskRunner::Job job() const {
        auto st = started;
        auto sc = sawCancel;
        return [st, sc](lcw::Progress& p) -> std::any {
            st->store(true);
            // Bounded so a broken cancel path fails the test instead of hanging it.
            for (long i = 0; i < 2'000'000'000L; ++i) {
                if (!p.report(0.5, "spinning")) {
                    sc->store(true);
                    return lcw::Status::Cancelled;
                }
                std::this_thread::yield();
            }
            return lcw::Status::Ok;
        };
    }
};

QString stories() {
    return QString::fromStdString(lcwtest::sharedPath(kStories));
}

/// Waits for the window's current load to end; returns true when it succeeded.
bool loadAndWait(lcw::MainWindow& w, const QString& path) {
    QSignalSpy loaded(&w, &lcw::MainWindow::modelLoaded);
    QSignalSpy failed(&w, &lcw::MainWindow::loadFailed);
    w.openModel(path);
    if (!QTest::qWaitFor([&] { return loaded.count() + failed.count() > 0; }, kTimeoutMs))
        return false;
    return loaded.count() == 1;
}

} // namespace

class TestGui : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() {
        // Settings of the recent-files test go to a throw-away test location.
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("lcw-test"));
        QCoreApplication::setApplicationName(QStringLiteral("test_gui"));
        QSettings().clear();
    }
    void cleanupTestCase() { QSettings().clear(); }

    // ---- TaskRunner ----

    void runnerRunsJobsInOrder() {
        TaskRunner runner;
        QSignalSpy finished(&runner, &TaskRunner::jobFinished);
        QSignalSpy busy(&runner, &TaskRunner::busyChanged);
        std::mutex mu;
        std::vector<int> order;
        std::vector<int> results;
        std::atomic<int> running{0};
        std::atomic<bool> overlapped{false};
        for (int i = 0; i < 4; ++i) {
            std::function<int(lcw::Progress&)> job = [i, &mu, &order, &running,
                                                      &overlapped](lcw::Progress&) {
                if (running.fetch_add(1) != 0) overlapped = true;
                {
                    std::lock_guard lock(mu);
                    order.push_back(i);
                }
                running.fetch_sub(1);
                return i * 10;
            };
            runner.submit<int>(QStringLiteral("job %1").arg(i), job, this,
                               [&results](int r) { results.push_back(r); });
        }
        QVERIFY(runner.isBusy());
        QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 4, kTimeoutMs);
        QCOMPARE(order, (std::vector<int>{0, 1, 2, 3}));
        QCOMPARE(results, (std::vector<int>{0, 10, 20, 30}));
        QVERIFY(!overlapped);
        QVERIFY(!runner.isBusy());
        QCOMPARE(busy.count(), 2); // true once, false once
        QCOMPARE(busy.last().at(0).toBool(), false);
        // Ids increase in submission order.
        QVERIFY(finished.at(0).at(0).toULongLong() < finished.at(3).at(0).toULongLong());
        QCOMPARE(std::any_cast<int>(finished.at(2).at(1).value<std::any>()), 20);
    }

    void runnerReportsThrottledProgress() {
        TaskRunner runner;
        QSignalSpy progress(&runner, &TaskRunner::progressChanged);
        QSignalSpy finished(&runner, &TaskRunner::jobFinished);
        const int steps = 200000;
        runner.submit(QStringLiteral("count"), [steps](lcw::Progress& p) -> std::any {
            for (int i = 0; i <= steps; ++i)
                if (!p.report(double(i) / steps, "counting")) return lcw::Status::Cancelled;
            return steps;
        });
        QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, kTimeoutMs);
        // First and last updates always arrive; the rest is throttled far below one per call.
        QVERIFY(progress.count() >= 2);
        QVERIFY2(progress.count() < 1000, qPrintable(QString::number(progress.count())));
        QCOMPARE(progress.first().at(1).toDouble(), 0.0);
        QCOMPARE(progress.last().at(1).toDouble(), 1.0);
        QCOMPARE(progress.last().at(2).toString(), QStringLiteral("counting"));
    }

    void runnerCancelRunningJob() {
        TaskRunner runner;
        QSignalSpy cancelled(&runner, &TaskRunner::jobCancelled);
        QSignalSpy finished(&runner, &TaskRunner::jobFinished);
        bool callbackCancelled = false;
        SpinJob spin;
        TaskRunner::Callbacks cb;
        cb.cancelled = [&] { callbackCancelled = true; };
        const auto id = runner.submit(QStringLiteral("spin"), spin.job(), this, cb);
        QTRY_VERIFY_WITH_TIMEOUT(spin.started->load(), kTimeoutMs);
        QCOMPARE(runner.currentJob(), id);
        QCOMPARE(runner.currentTitle(), QStringLiteral("spin"));
        runner.cancel();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, kTimeoutMs);
        QVERIFY(spin.sawCancel->load());
        QVERIFY(callbackCancelled);
        QCOMPARE(finished.count(), 0);
        QCOMPARE(cancelled.first().at(0).toULongLong(), id);
        QVERIFY(!runner.isBusy());
    }

    void runnerStatusCancelledIsCancellation() {
        // A job that returns Status::Cancelled on its own is reported as cancelled.
        TaskRunner runner;
        QSignalSpy cancelled(&runner, &TaskRunner::jobCancelled);
        runner.submit(QStringLiteral("self-cancel"),
                      [](lcw::Progress&) -> std::any { return lcw::Status::Cancelled; });
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 1, kTimeoutMs);
    }

    void runnerCancelQueuedJobs() {
        TaskRunner runner;
        QSignalSpy cancelled(&runner, &TaskRunner::jobCancelled);
        QSignalSpy finished(&runner, &TaskRunner::jobFinished);
        SpinJob spin;
        runner.submit(QStringLiteral("spin"), spin.job());
        std::atomic<bool> queuedRan{false};
        const auto queued =
            runner.submit(QStringLiteral("queued"), [&queuedRan](lcw::Progress&) -> std::any {
                queuedRan = true;
                return {};
            });
        const auto queued2 =
            runner.submit(QStringLiteral("queued 2"), [](lcw::Progress&) -> std::any { return 2; });
        QCOMPARE(runner.queuedCount(), 2);
        QVERIFY(runner.cancel(queued));
        QCOMPARE(cancelled.count(), 1); // queued jobs are cancelled at once
        QCOMPARE(cancelled.first().at(0).toULongLong(), queued);
        QVERIFY(!runner.cancel(queued));
        QCOMPARE(runner.queuedCount(), 1);
        runner.cancel(); // the running one; queued2 then runs
        QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, kTimeoutMs);
        QCOMPARE(finished.first().at(0).toULongLong(), queued2);
        QCOMPARE(cancelled.count(), 2);
        QVERIFY(!queuedRan);

        // cancelAll drops everything.
        SpinJob spin2;
        runner.submit(QStringLiteral("spin 2"), spin2.job());
        runner.submit(QStringLiteral("never"), [](lcw::Progress&) -> std::any { return 0; });
        QTRY_VERIFY_WITH_TIMEOUT(spin2.started->load(), kTimeoutMs);
        runner.cancelAll();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.count(), 4, kTimeoutMs);
        QTRY_VERIFY_WITH_TIMEOUT(!runner.isBusy(), kTimeoutMs);
        QCOMPARE(finished.count(), 1);
    }

    void runnerExceptionsBecomeErrors() {
        TaskRunner runner;
        QSignalSpy failed(&runner, &TaskRunner::jobFailed);
        QSignalSpy finished(&runner, &TaskRunner::jobFinished);
        QString callbackMessage;
        TaskRunner::Callbacks cb;
        cb.failed = [&](const QString& m) { callbackMessage = m; };
        runner.submit(
            QStringLiteral("throws"),
            [](lcw::Progress&) -> std::any { throw lcw::FormatError("x.gguf", "bad magic", 0); },
            this, cb);
        runner.submit(QStringLiteral("throws int"), [](lcw::Progress&) -> std::any { throw 42; });
        runner.submit(QStringLiteral("fine"), [](lcw::Progress&) -> std::any { return 1; });
        QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, kTimeoutMs);
        QCOMPARE(failed.count(), 2);
        const QString msg = failed.at(0).at(1).toString();
        QVERIFY2(msg.contains(QStringLiteral("x.gguf")) &&
                     msg.contains(QStringLiteral("bad magic")),
                 qPrintable(msg));
        QCOMPARE(callbackMessage, msg);
        QVERIFY(failed.at(1).at(1).toString().contains(QStringLiteral("unknown error")));
    }

    void runnerSkipsCallbacksOfDestroyedContext() {
        TaskRunner runner;
        QSignalSpy finished(&runner, &TaskRunner::jobFinished);
        bool called = false;
        auto* context = new QObject;
        SpinJob spin;
        TaskRunner::Callbacks cb;
        cb.cancelled = [&] { called = true; };
        cb.done = [&](const std::any&) { called = true; };
        runner.submit(QStringLiteral("spin"), spin.job(), context, cb);
        QTRY_VERIFY_WITH_TIMEOUT(spin.started->load(), kTimeoutMs);
        delete context;
        runner.cancel();
        QTRY_VERIFY_WITH_TIMEOUT(!runner.isBusy(), kTimeoutMs);
        QVERIFY(!called);
    }

    void runnerDestructorCancelsAndWaits() {
        SpinJob spin;
        QElapsedTimer timer;
        {
            TaskRunner runner;
            bool called = false;
            TaskRunner::Callbacks cb;
            cb.cancelled = [&] { called = true; };
            runner.submit(QStringLiteral("spin"), spin.job(), nullptr, cb);
            runner.submit(QStringLiteral("queued"), [](lcw::Progress&) -> std::any { return 1; });
            QTRY_VERIFY_WITH_TIMEOUT(spin.started->load(), kTimeoutMs);
            timer.start();
            // Leaving the scope destroys the runner with the job still running.
            QVERIFY(!called);
        }
        QVERIFY(spin.sawCancel->load()); // the worker saw the cancel before the runner died
        QVERIFY(timer.elapsed() < 10000);
    }

    // ---- helpers ----

    void tensorRolesAndLayers() {
        QCOMPARE(lcw::tensorLayer("layers.3.attn.q"), 3);
        QCOMPARE(lcw::tensorLayer("layers.12.mlp.down"), 12);
        QCOMPARE(lcw::tensorLayer("embed"), -1);
        QCOMPARE(lcw::tensorLayer("layers.x.attn.q"), -1);
        QCOMPARE(lcw::tensorRole("layers.3.attn.q"), std::string("attn.q"));
        QCOMPARE(lcw::tensorRole("layers.3.attn.q.bias"), std::string("attn.q.bias"));
        QCOMPARE(lcw::tensorRole("layers.0.mlp.down"), std::string("mlp.down"));
        QCOMPARE(lcw::tensorRole("layers.0.attn_norm"), std::string("norm"));
        QCOMPARE(lcw::tensorRole("layers.0.attn.q_norm"), std::string("norm"));
        QCOMPARE(lcw::tensorRole("final_norm"), std::string("norm"));
        QCOMPARE(lcw::tensorRole("embed"), std::string("embed"));
        QCOMPARE(lcw::tensorRole("lm_head"), std::string("lm_head"));
        QCOMPARE(lcw::tensorRole("extra.rotary.inv_freq"), std::string("extra"));
    }

    void numberFormatting() {
        QCOMPARE(lcw::formatCountShort(950), QStringLiteral("950"));
        QCOMPARE(lcw::formatCountShort(260032), QStringLiteral("260.0 K"));
        QCOMPARE(lcw::formatCountShort(1'100'048'384), QStringLiteral("1.10 B"));
        QCOMPARE(lcw::formatCountExact(1040128), QStringLiteral("1,040,128"));
        QCOMPARE(lcw::formatBytes(512), QStringLiteral("512 B"));
        QCOMPARE(lcw::formatBytes(44032), QStringLiteral("43.0 KiB"));
        QCOMPARE(lcw::formatBytes(3ull << 30), QStringLiteral("3.00 GiB"));
    }

    void barPlotDrawsAndExports() {
        lcw::BarPlot plot;
        plot.resize(600, 300);
        plot.setTitle(QStringLiteral("Parameters"));
        plot.setBars({"embed", "L0", "L1", "lm_head"}, {4.0, 2.0, 2.5, 0.5}, {0, 1, 1, 0},
                     {"ends", "layers"});
        QCOMPARE(plot.barCount(), 4);
        QVERIFY(plot.tooltipFor(1).contains(QStringLiteral("L0")));
        plot.setTooltipFormatter([](int i, const QString& l, double v) {
            return QStringLiteral("%1|%2|%3").arg(i).arg(l).arg(v);
        });
        QCOMPARE(plot.tooltipFor(2), QStringLiteral("2|L1|2.5"));
        QCOMPARE(plot.tooltipFor(7), QString());
        const std::string dir = lcwtest::tempDir("barplot");
        const QString png = QString::fromStdString(dir + "/bars.png");
        const QString pdf = QString::fromStdString(dir + "/bars.pdf");
        QVERIFY(plot.exportPng(png, 600, 300));
        QVERIFY(plot.exportPdf(pdf, 600, 300));
        QVERIFY(QFileInfo(png).size() > 1000);
        QVERIFY(QFileInfo(pdf).size() > 500);
        plot.clear();
        QCOMPARE(plot.barCount(), 0);
    }

    // ---- MainWindow ----

    void mainWindowOpensModel() {
        LCW_REQUIRE_SHARED(kStories);
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        w.show();
        QVERIFY(!w.model());
        QVERIFY(loadAndWait(w, stories()));
        const lcw::Model* m = w.model();
        QVERIFY(m);
        // stories260K/hf/model.safetensors holds 47 tensors: 5 layers x 9 + embed + final_norm
        // (lm_head is tied to embed and not stored).
        QCOMPARE(int(m->tensors().size()), 47);
        QCOMPARE(w.layerTableModel()->rowCount(), int(m->tensors().size()));
        QCOMPARE(w.layerProxy()->rowCount(), 47);
        QVERIFY(w.windowTitle().startsWith(QStringLiteral("lcw — ")));
        QVERIFY2(w.windowTitle().contains(QStringLiteral("stories260K")),
                 qPrintable(w.windowTitle()));
        QVERIFY(!w.isLoading());

        w.setLayerFilter(QStringLiteral("mlp.down"));
        QCOMPARE(w.layerProxy()->rowCount(), 5);
        QCOMPARE(w.filterEdit()->text(), QStringLiteral("mlp.down"));
        w.setLayerFilter(QStringLiteral("layers.*.attn.?"));
        QCOMPARE(w.layerProxy()->rowCount(), 20);
        w.setLayerFilter(QStringLiteral("re:^layers\\.[01]\\."));
        QCOMPARE(w.layerProxy()->rowCount(), 18);
        w.setLayerFilter(QStringLiteral("re:(")); // invalid: the previous filter stays
        QCOMPARE(w.layerProxy()->rowCount(), 18);
        w.setLayerFilter(QString());
        QCOMPARE(w.layerProxy()->rowCount(), 47);

        // Numeric sort on the parameter column: largest first when descending.
        w.layerView()->sortByColumn(lcw::LayerTableModel::Parameters, Qt::DescendingOrder);
        const QModelIndex top = w.layerProxy()->index(0, lcw::LayerTableModel::Parameters);
        QCOMPARE(top.data(lcw::LayerTableModel::RawRole).toLongLong(), qlonglong(512 * 64));

        // Copy two rows as TSV.
        w.layerView()->selectRow(0);
        w.layerView()->selectionModel()->select(
            w.layerProxy()->index(1, 0), QItemSelectionModel::Select | QItemSelectionModel::Rows);
        const QString tsv = w.copySelectedRows();
        const QStringList lines = tsv.trimmed().split(QLatin1Char('\n'));
        QCOMPARE(lines.size(), 3);
        QVERIFY(lines[0].startsWith(QStringLiteral("Name\tLayer\tRole\tShape")));
        QVERIFY(lines[1].startsWith(QStringLiteral("embed\t")));
        QVERIFY(lines[1].contains(QStringLiteral("\t32768\t131072")));

        // Summary panel and plot.
        lcw::ModelSummaryPanel* s = w.summaryPanel();
        QCOMPARE(s->value(QStringLiteral("Architecture")), QStringLiteral("llama"));
        QCOMPARE(s->value(QStringLiteral("Layers")), QStringLiteral("5"));
        QCOMPARE(s->value(QStringLiteral("Vocabulary")), QStringLiteral("512"));
        QVERIFY(s->value(QStringLiteral("Parameters")).contains(QStringLiteral("260,032")));
        QVERIFY(s->value(QStringLiteral("Tied embeddings")) == QStringLiteral("yes"));
        QCOMPARE(w.blockPlot()->barCount(), 7); // embed, L0..L4, lm_head
        QCOMPARE(w.blockPlot()->labels().front(), QStringLiteral("embed"));
        QVERIFY(w.blockPlot()->tooltipFor(1).contains(QStringLiteral("45,440")));
    }

    void mainWindowBadPathShowsError() {
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QSignalSpy errors(&w, &lcw::MainWindow::errorShown);
        QSignalSpy failed(&w, &lcw::MainWindow::loadFailed);
        const std::string dir = lcwtest::tempDir("gui-bad");
        const std::string bad = dir + "/broken.gguf";
        {
            std::ofstream f(bad, std::ios::binary);
            f << "GGUF\x03\x00\x00\x00 not really";
        }
        w.openModel(QString::fromStdString(bad));
        QTRY_COMPARE_WITH_TIMEOUT(errors.count(), 1, kTimeoutMs);
        QCOMPARE(failed.count(), 1);
        const QString msg = errors.first().at(0).toString();
        QVERIFY2(msg.contains(QStringLiteral("broken.gguf")), qPrintable(msg));
        QVERIFY(!w.model());
        QVERIFY(!w.isLoading());
        QVERIFY(w.recentFiles().isEmpty());
    }

    void mainWindowBadPathKeepsPreviousModel() {
        LCW_REQUIRE_SHARED(kStories);
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(loadAndWait(w, stories()));
        const lcw::Model* before = w.model();
        const QString title = w.windowTitle();
        QSignalSpy errors(&w, &lcw::MainWindow::errorShown);
        QVERIFY(!loadAndWait(w, QStringLiteral("/nonexistent/lcw/model.gguf")));
        QCOMPARE(errors.count(), 1);
        QVERIFY(errors.first().at(0).toString().contains(
            QStringLiteral("/nonexistent/lcw/model.gguf")));
        QCOMPARE(w.model(), before);
        QCOMPARE(w.layerTableModel()->rowCount(), 47);
        QCOMPARE(w.windowTitle(), title);
    }

    void mainWindowRecentFiles() {
        LCW_REQUIRE_SHARED(kStories);
        QSettings().clear();
        // Eleven distinct paths to the same model (symlinks), so the list can overflow.
        const std::string dir = lcwtest::tempDir("gui-recent");
        QStringList paths;
        for (int i = 0; i < lcw::MainWindow::kMaxRecent + 1; ++i) {
            const std::string link = dir + "/m" + std::to_string(i);
            std::filesystem::create_directory_symlink(lcwtest::sharedPath(kStories), link);
            paths << QString::fromStdString(link);
        }
        {
            lcw::MainWindow w; // uses (test-mode) settings
            w.setModalDialogsEnabled(false);
            QSignalSpy changed(&w, &lcw::MainWindow::recentFilesChanged);
            for (const QString& p : paths) QVERIFY(loadAndWait(w, p));
            QCOMPARE(changed.count(), paths.size());
            QCOMPARE(w.recentFiles().size(), lcw::MainWindow::kMaxRecent);
            QCOMPARE(w.recentFiles().front(), paths.back()); // newest first
            QVERIFY(!w.recentFiles().contains(paths.front()));
            // Re-opening moves an entry to the top without duplicating it.
            QVERIFY(loadAndWait(w, paths[5]));
            QCOMPARE(w.recentFiles().front(), paths[5]);
            QCOMPARE(w.recentFiles().count(paths[5]), 1);
            w.close(); // writes settings
        }
        {
            lcw::MainWindow w;
            w.setModalDialogsEnabled(false);
            QCOMPARE(w.recentFiles().size(), lcw::MainWindow::kMaxRecent);
            QCOMPARE(w.recentFiles().front(), paths[5]);
            // An entry that vanished is removed when used, with a message.
            std::filesystem::remove(paths[5].toStdString());
            QSignalSpy errors(&w, &lcw::MainWindow::errorShown);
            w.openRecent(paths[5]);
            QCOMPARE(errors.count(), 1);
            QVERIFY(errors.first().at(0).toString().contains(QStringLiteral("no longer exists")));
            QVERIFY(!w.recentFiles().contains(paths[5]));
            QCOMPARE(w.recentFiles().size(), lcw::MainWindow::kMaxRecent - 1);
            QVERIFY(!w.isLoading());
            QCOMPARE(QSettings().value("recent/models").toStringList(), w.recentFiles());
            w.clearRecentFiles();
            QVERIFY(w.recentFiles().isEmpty());
        }
        std::filesystem::remove_all(dir);
    }

    void mainWindowDropOpensModel() {
        LCW_REQUIRE_SHARED(kStories);
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        w.show();
        QSignalSpy loaded(&w, &lcw::MainWindow::modelLoaded);
        QMimeData mime;
        mime.setUrls({QUrl::fromLocalFile(stories())});
        QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton,
                              Qt::NoModifier);
        QApplication::sendEvent(&w, &enter);
        QVERIFY(enter.isAccepted());
        QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(&w, &drop);
        QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, kTimeoutMs);
        QCOMPARE(w.layerTableModel()->rowCount(), 47);
    }

    void mainWindowCloseWhileLoading() {
        LCW_REQUIRE_SHARED(kStories);
        // Destroying the window with a load in flight must neither hang nor crash.
        auto* w = new lcw::MainWindow(lcw::MainWindow::Options{false, false});
        w->openModel(stories());
        QVERIFY(w->isLoading());
        delete w;
    }
};

QTEST_MAIN(TestGui)
#include "test_gui.moc"
