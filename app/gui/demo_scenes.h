#pragma once
/// \file
/// The screenshot scenes of `lcw --screenshot FILE.png [--demo-*]` (what scripts/screenshots.sh
/// renders into docs/screenshots): each scene opens the model, drives the panels through their
/// public API, waits for the work to finish, saves the window (or dialog) and quits.
#include <QSize>
#include <QString>
#include <QTemporaryDir>

namespace lcw {

class MainWindow;

namespace demo {

enum class Scene { Plain, Run, Stats, Recipe, Compare, Results, Sensitivity, Export, Study };

struct SceneOptions {
    Scene scene = Scene::Plain;
    int statsTab = 0;   ///< --stats-tab: 0 weights, 1 activations, 2 kv
    QString imatrix;    ///< --imatrix: a .dat file, "compute", or empty
    int compareTab = 0; ///< --compare-tab: 0 metrics, 1 layers, 2 generations, 3 speed
    QString studyDir;   ///< --demo-study: the report folder
};

/// One screenshot: owns the exit code and the temporary results store of the scene.
class ScreenshotSession {
public:
    ScreenshotSession(MainWindow& window, QSize size, QString outPath, QString modelPath);
    /// Connects the scene's steps and opens the model (or grabs the welcome page when there is
    /// none); the result is known once the event loop has quit.
    void start(const SceneOptions& options);
    int exitCode() const { return m_exitCode; }

private:
    void grabAndQuit();
    /// Grabs after two more turns of the event loop (the layout settles in the first).
    void grabSoon();
    void fail(const QString& scene, const QString& what);
    void hideSidePanels();

    void startStats(int tab, const QString& imatrix);
    void startExport();
    void startRecipe();
    void startCompare(int tab);
    void startResultsOrSensitivity(bool showResults);
    void startRun();
    void startStudy(const QString& dir);

    MainWindow& m_window;
    QSize m_size;
    QString m_outPath;
    QString m_modelPath;
    QTemporaryDir m_storeDir; ///< --demo-results / --demo-sensitivity / --demo-export
    int m_exitCode = 0;
};

} // namespace demo
} // namespace lcw
