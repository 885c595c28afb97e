// Quit with a job running: the window cancels the job, waits for it to stop (the job stops
// within one block of its forward pass, even when it never reports progress) and then closes,
// so the application exits instead of hiding its window and working on.
#include "gui_test_util.h"

#include "core/model/model.h"
#include "core/runtime/session.h"
#include "widgets/task_runner.h"
#include "widgets/task_status_widget.h"

#include <QLabel>
#include <QProgressBar>
#include <QToolButton>

#include <QApplication>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

class TestGuiJobs : public QObject {
    Q_OBJECT

private slots:
    void initTestCase() { lcwtest::initGuiTestCase("lcw-test-gui-jobs"); }

    // The status bar's job line: percentage and time left in a fixed place, the title and
    // stage elided (whole in the tooltip) when the bar is narrow.
    void statusShowsEtaAndElidesTheStage();

    // LCW_QUIT_MODEL=DIR runs it on that model instead (bench/cancel_latency.sh: the synthetic
    // 1.1B shape), Quit then arriving in the middle of a forward pass.
    void quitCancelsWaitsAndCloses() {
        const QByteArray big = qgetenv("LCW_QUIT_MODEL");
        const std::string dir =
            big.isEmpty() ? lcwtest::writeNarrowTinyLlama("gui-quit", 704) : big.toStdString();
        QVERIFY(!dir.empty());
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(dir);

        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));

        // A job that only runs forward passes and never reports: only the cancellation checked
        // inside the forward can stop it (it gives up by itself after 20 s, so that the old
        // code fails instead of hanging).
        auto started = std::make_shared<std::atomic<bool>>(false);
        auto running = std::make_shared<std::atomic<bool>>(false);
        auto forwards = std::make_shared<std::atomic<int>>(0);
        std::function<int(lcw::Progress&)> job = [model, started, running,
                                                  forwards](lcw::Progress&) {
            running->store(true);
            started->store(true);
            struct Done {
                std::atomic<bool>& r;
                ~Done() { r.store(false); }
            } done{*running};
            lcw::SessionOptions so;
            so.contextLength = 256;
            lcw::Session s(*model, so);
            std::vector<int32_t> ids(256);
            for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 37) % 4096);
            std::vector<float> logits;
            const auto t0 = std::chrono::steady_clock::now();
            while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20)) {
                s.reset();
                s.forward(ids, logits);
                ++*forwards;
            }
            return 0;
        };
        QSignalSpy cancelled(w.taskRunner(), &lcw::TaskRunner::jobCancelled);
        w.taskRunner()->submit<int>(QStringLiteral("endless forward passes"), job, &w, {});
        if (big.isEmpty()) {
            QVERIFY(QTest::qWaitFor([&] { return forwards->load() >= 2; }, 10000));
        } else {
            QVERIFY(QTest::qWaitFor([&] { return started->load(); }, 60000));
            QTest::qWait(3000); // inside the first forward pass
        }

        QElapsedTimer t;
        t.start();
        w.close(); // File ▸ Quit
        // The window stays up (not hidden while the process works on) until the job stopped.
        bool hiddenWhileRunning = false;
        QVERIFY(QTest::qWaitFor(
            [&] {
                if (!w.isVisible() && running->load()) hiddenWhileRunning = true;
                return !w.isVisible();
            },
            10000));
        const double seconds = double(t.elapsed()) / 1000.0;
        qInfo("closed %.3f s after Quit, %d forwards", seconds, forwards->load());
        QVERIFY(!hiddenWhileRunning);
        QVERIFY(!running->load());
        QCOMPARE(cancelled.count(), 1);
        QVERIFY(!w.taskRunner()->isBusy());
        QVERIFY2(seconds < 3.0, qPrintable(QString::number(seconds)));
        // No window is left open to keep the application's event loop running.
        for (QWidget* top : QApplication::topLevelWidgets()) QVERIFY(!top->isVisible());
        model.reset();
        if (big.isEmpty()) std::filesystem::remove_all(dir);
    }
};

void TestGuiJobs::statusShowsEtaAndElidesTheStage() {
    lcw::TaskRunner runner;
    lcw::TaskStatusWidget status(&runner);
    status.resize(520, 28);
    const std::string stage = "divergence: chunk 3/40 of a long stage label that cannot fit " +
                              std::string(120, 'x') + " END";
    std::function<int(lcw::Progress&)> job = [stage](lcw::Progress& p) {
        const auto t0 = std::chrono::steady_clock::now();
        for (;;) {
            const double s =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!p.report(std::min(s / 10.0, 0.99), stage)) return 0;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    };
    runner.submit<int>(QStringLiteral("Sensitivity scan"), job, &status, {});
    // The time left appears once the job has run 2 s (10 % per second: about 8 s left).
    QVERIFY(QTest::qWaitFor([&] { return !status.eta().isEmpty(); }, 8000));
    QVERIFY(QTest::qWaitFor([&] { return status.isVisible(); }, 1000));
    QCoreApplication::processEvents();
    const QString numbers = status.etaLabel()->text();
    QVERIFY2(numbers.contains(QStringLiteral(" left")) && numbers.contains(QLatin1Char('%')),
             qPrintable(numbers));
    QVERIFY2(numbers.contains(status.eta()), qPrintable(numbers));
    // Never clipped: the numbers get their whole width, the bar and Cancel stay inside the
    // widget; the stage is cut with "…" and the tooltip holds all of it.
    QVERIFY(status.etaLabel()->width() >= status.etaLabel()->sizeHint().width());
    QVERIFY(status.cancelButton()->geometry().right() <= status.width());
    QVERIFY(status.progressBar()->geometry().right() <= status.width());
    QVERIFY2(status.displayedText().endsWith(QChar(0x2026)), qPrintable(status.displayedText()));
    QVERIFY(status.label()->toolTip().contains(QString::fromStdString(stage)));
    QVERIFY(status.label()->toolTip().contains(numbers));
    // Wide enough: the whole text, not cut.
    status.resize(4000, 28);
    QCoreApplication::processEvents();
    QVERIFY2(status.displayedText().endsWith(QStringLiteral(" END")),
             qPrintable(status.displayedText()));
    runner.cancel();
    QVERIFY(QTest::qWaitFor([&] { return !runner.isBusy(); }, 5000));
}

QTEST_MAIN(TestGuiJobs)
#include "test_gui_jobs.moc"
