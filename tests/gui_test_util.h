#pragma once
// Helpers shared by the GUI test executables (test_gui*): throw-away settings and data folders,
// and opening a model in a main window.
#include "core/model/synthetic.h"
#include "test_util.h"
#include "widgets/main_window.h"

#include <QCoreApplication>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QtTest/QtTest>

namespace lcwtest {

/// initTestCase() of a GUI test: settings in Qt's test location under `appName`, cleared, and
/// XDG_DATA_HOME (the results store, the statistics cache) in a fresh temporary folder.
inline void initGuiTestCase(const char* appName) {
    QStandardPaths::setTestModeEnabled(true);
    QCoreApplication::setOrganizationName(QStringLiteral("lcw-test"));
    QCoreApplication::setApplicationName(QString::fromLatin1(appName));
    QSettings().clear();
    qputenv("XDG_DATA_HOME", QByteArray::fromStdString(tempDir(std::string(appName) + "-xdg")));
}

/// Opens `path` in `w` and waits for the load to end; true when it succeeded.
inline bool loadAndWait(lcw::MainWindow& w, const QString& path, int timeoutMs = 30000) {
    QSignalSpy loaded(&w, &lcw::MainWindow::modelLoaded);
    QSignalSpy failed(&w, &lcw::MainWindow::loadFailed);
    w.openModel(path);
    if (!QTest::qWaitFor([&] { return loaded.count() + failed.count() > 0; }, timeoutMs))
        return false;
    return loaded.count() == 1;
}

/// Opens the project `path` in `w` (read in the background) and waits until the read ends;
/// true when it succeeded (the model load and restore then go on: wait for projectOpened()).
/// False when the read failed (the error was shown), was cancelled or declined, or timed out.
inline bool openProjectAndWait(lcw::MainWindow& w, const QString& path, int timeoutMs = 60000) {
    QSignalSpy read(&w, &lcw::MainWindow::projectFileRead);
    if (!w.openProject(path)) return false;
    // The read runs on the task runner: until it ends the window counts as loading.
    if (read.count() == 0 && !w.isLoading()) return false;
    if (!QTest::qWaitFor([&] { return read.count() > 0; }, timeoutMs)) return false;
    return read.at(0).at(1).toBool();
}

/// A synthetic model with TinyLlama-1.1B's layout (22 blocks, 201 tensors, its names and head
/// counts) and narrow widths (dim 256, MLP `hidden`, vocab 4096; F16), written into a fresh
/// temporary folder in well under a second. Returns the folder, empty on failure.
inline std::string writeNarrowTinyLlama(const std::string& tag, int64_t hidden) {
    lcw::ModelSpec spec = lcw::syntheticSpec("llama", "tinyllama-1.1b");
    spec.dim = 256;
    spec.headDim = 8;
    spec.hidden = hidden;
    spec.vocab = 4096;
    lcw::SynthOptions so;
    so.dtype = lcw::DType::F16;
    lcw::NullProgress np;
    const std::string dir = tempDir(tag);
    return lcw::writeSyntheticModel(spec, dir, so, np) == lcw::Status::Ok ? dir : std::string();
}

} // namespace lcwtest
