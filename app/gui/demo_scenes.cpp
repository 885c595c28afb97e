// The screenshot scenes of `lcw --screenshot` (see demo_scenes.h).
#include "demo_scenes.h"

#include "widgets/compare_panel.h"
#include "widgets/export_dialog.h"
#include "widgets/gguf_export_panel.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/main_window.h"
#include "widgets/recipe_editor.h"
#include "widgets/results_panel.h"
#include "widgets/run_panel.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/stats_panel.h"
#include "widgets/study_panel.h"

#include <QApplication>
#include <QDir>
#include <QDockWidget>
#include <QFileInfo>
#include <QPixmap>
#include <QTabWidget>
#include <QTimer>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>

namespace lcw::demo {

ScreenshotSession::ScreenshotSession(MainWindow& window, QSize size, QString outPath,
                                     QString modelPath)
    : m_window(window), m_size(size), m_outPath(std::move(outPath)),
      m_modelPath(std::move(modelPath)) {
    QObject::connect(&m_window, &MainWindow::errorShown, &m_window, [this](const QString& m) {
        std::fprintf(stderr, "lcw: %s\n", qPrintable(m));
        m_exitCode = 1;
        QApplication::quit();
    });
}

void ScreenshotSession::start(const SceneOptions& options) {
    // Grab from the event loop so pending layout and resize events are processed first.
    if (m_modelPath.isEmpty()) {
        QTimer::singleShot(0, &m_window, [this] { grabAndQuit(); });
        return;
    }
    switch (options.scene) {
    case Scene::Plain:
        QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window,
                         [this] { QTimer::singleShot(0, &m_window, [this] { grabAndQuit(); }); });
        break;
    case Scene::Stats:
        startStats(options.statsTab, options.imatrix);
        break;
    case Scene::Export:
        startExport();
        break;
    case Scene::Recipe:
        startRecipe();
        break;
    case Scene::Compare:
        startCompare(options.compareTab);
        break;
    case Scene::Results:
        startResultsOrSensitivity(true);
        break;
    case Scene::Sensitivity:
        startResultsOrSensitivity(false);
        break;
    case Scene::Run:
        startRun();
        break;
    case Scene::Study:
        startStudy(options.studyDir);
        break;
    }
    m_window.openModel(m_modelPath);
}

void ScreenshotSession::grabAndQuit() {
    const QPixmap pixmap = m_window.grab();
    if (m_window.size() != m_size) {
        // The image is the requested size or none: a smaller window than the layout allows
        // would be clipped.
        const QSize min = m_window.minimumSizeHint();
        std::fprintf(stderr, "lcw: --size %dx%d is below the window's minimum size %dx%d\n",
                     m_size.width(), m_size.height(), min.width(), min.height());
        m_exitCode = 1;
    } else if (pixmap.isNull() || !pixmap.save(m_outPath)) {
        std::fprintf(stderr, "lcw: could not write %s\n", qPrintable(m_outPath));
        m_exitCode = 1;
    } else {
        std::printf("%s\n",
                    qPrintable(QDir::toNativeSeparators(QFileInfo(m_outPath).absoluteFilePath())));
    }
    QApplication::quit();
}

void ScreenshotSession::grabSoon() {
    QTimer::singleShot(0, &m_window,
                       [this] { QTimer::singleShot(0, &m_window, [this] { grabAndQuit(); }); });
}

void ScreenshotSession::fail(const QString& scene, const QString& what) {
    std::fprintf(stderr, "lcw: %s: %s\n", qPrintable(scene), qPrintable(what));
    m_exitCode = 1;
    QApplication::quit();
}

void ScreenshotSession::hideSidePanels() {
    m_window.applyInspectorLayout();
    for (auto p : {MainWindow::Panel::Layers, MainWindow::Panel::Summary, MainWindow::Panel::Plot,
                   MainWindow::Panel::Log})
        m_window.dock(p)->hide();
}

// ------------------------------------------------------------------------------- --demo-stats

void ScreenshotSession::startStats(int tab, const QString& imatrix) {
    StatsPanel* stats = m_window.statsPanel();
    ImatrixManager* im = m_window.imatrixManager();
    const QString scene = QStringLiteral("--demo-stats");
    QObject::connect(stats, &StatsPanel::computeFailed, &m_window,
                     [this, scene](const QString& m) { fail(scene, m); });
    QObject::connect(im, &ImatrixManager::failed, &m_window,
                     [this](const QString& m) { fail(QStringLiteral("--imatrix"), m); });
    // Grab once the inspector layout is in place and the statistics are shown (loaded from the
    // cache while the model opens, or computed afterwards), with the importance matrix when one
    // was asked for.
    auto layoutDone = std::make_shared<bool>(false);
    auto grabbed = std::make_shared<bool>(false);
    auto showAndGrab = [this, stats, tab, imatrix, im, grabbed] {
        if (*grabbed || !stats->report() || (!imatrix.isEmpty() && !im->imatrix())) return;
        *grabbed = true;
        m_window.selectTensor(QStringLiteral("layers.1.mlp.down"));
        stats->tabs()->setCurrentIndex(tab);
        grabSoon();
    };
    QObject::connect(stats, &StatsPanel::statsChanged, &m_window, [layoutDone, showAndGrab] {
        if (*layoutDone) showAndGrab();
    });
    QObject::connect(im, &ImatrixManager::changed, &m_window, [layoutDone, showAndGrab] {
        if (*layoutDone) showAndGrab();
    });
    auto computeStats = [stats] {
        StatsSettings s;
        s.samples = 8;
        s.seqLen = 128;
        stats->setSettings(s);
        stats->computeStats();
    };
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window,
                     [this, stats, layoutDone, showAndGrab, computeStats, imatrix, im] {
                         m_window.applyInspectorLayout();
                         *layoutDone = true;
                         if (imatrix == QLatin1String("compute")) {
                             ImatrixSettings s;
                             s.seqLen = 128;
                             s.samples = 8;
                             im->compute(s);
                         } else if (!imatrix.isEmpty()) {
                             m_window.openImatrix(imatrix); // errors quit through errorShown
                         }
                         if (stats->report()) return showAndGrab();
                         // A cached file is read in the background: statsChanged() grabs when it is
                         // in.
                         if (stats->isLoadingCache()) {
                             QObject::connect(stats, &StatsPanel::cacheLoadFinished, &m_window,
                                              [computeStats](bool loaded) {
                                                  if (!loaded) computeStats();
                                              });
                             return;
                         }
                         computeStats();
                     });
}

// ------------------------------------------------------------------------------ --demo-export

void ScreenshotSession::startExport() {
    ImatrixManager* im = m_window.imatrixManager();
    auto failed = [this](const QString& what) { fail(QStringLiteral("--demo-export"), what); };
    QObject::connect(im, &ImatrixManager::failed, &m_window, failed);
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window, [im, failed] {
        ImatrixSettings s;
        s.seqLen = 128;
        s.samples = 8;
        if (!im->compute(s)) failed(im->lastError());
    });
    QObject::connect(im, &ImatrixManager::computed, &m_window, [this, failed] {
        auto* d = new ExportDialog(m_window.exportSources(), &m_window);
        d->resize(m_size);
        d->showPage(ExportDialog::Page::Gguf);
        GgufExportPanel* g = d->ggufPanel();
        g->setTypeChoice(QStringLiteral("Q4_K_M"));
        g->setImatrixSource(GgufExportPanel::ImatrixSource::Opened);
        g->setOutputPath(
            QDir(m_storeDir.path())
                .filePath(QFileInfo(m_modelPath).fileName() + QStringLiteral("-Q4_K_M.gguf")));
        QObject::connect(g, &GgufExportPanel::failed, d, failed);
        QObject::connect(g, &GgufExportPanel::finished, d, [this, d] {
            QTimer::singleShot(0, d, [this, d] {
                if (!d->grab().save(m_outPath)) {
                    std::fprintf(stderr, "lcw: could not write %s\n", qPrintable(m_outPath));
                    m_exitCode = 1;
                } else {
                    std::printf("%s\n", qPrintable(m_outPath));
                }
                QApplication::quit();
            });
        });
        d->show();
        if (!g->start()) failed(g->lastError());
    });
}

// ------------------------------------------------------------------------------ --demo-recipe

void ScreenshotSession::startRecipe() {
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window, [this] {
        m_window.applyInspectorLayout();
        m_window.showPanel(MainWindow::Panel::Recipe);
        RecipeEditor* ed = m_window.recipeEditor();
        ed->applyPreset(QStringLiteral("W4A16-g64"));
        ed->selectPattern(QStringLiteral("layers.0.*"));
        ed->setWeightForm(
            nlohmann::json{{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}});
        ed->applyToSelection();
        ed->setTargetBitsPerWeight(5.0);
        ed->selectPattern(QStringLiteral("layers.0.*"));
        // The Tensors table's Error column filled by a real compression, worst first.
        if (!m_window.measureLayerErrors()) {
            m_exitCode = 1;
            QApplication::quit();
        }
    });
    QObject::connect(&m_window, &MainWindow::errorsMeasured, &m_window, [this] {
        m_window.moveTensorColumn(LayerTableModel::Error, 1);
        m_window.sortTensorTable(LayerTableModel::Error, Qt::DescendingOrder);
        grabSoon();
    });
}

// ----------------------------------------------------------------------------- --demo-compare

void ScreenshotSession::startCompare(int tab) {
    ComparePanel* cp = m_window.comparePanel();
    QObject::connect(cp, &ComparePanel::failed, &m_window,
                     [this](const QString& m) { fail(QStringLiteral("--demo-compare"), m); });
    QObject::connect(cp, &ComparePanel::finished, &m_window, [this, cp, tab] {
        cp->tabs()->setCurrentIndex(tab);
        cp->selectRow(2);
        grabSoon();
    });
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window, [this, cp, tab] {
        hideSidePanels(); // the compare view gets the whole width
        m_window.showPanel(MainWindow::Panel::Compare);
        if (tab == 3) // speed and memory: weight-only against integer-GEMM recipes
            cp->setSelectedConfigs({QStringLiteral("W8A16"), QStringLiteral("W4A16-g32"),
                                    QStringLiteral("NF4-g64"), QStringLiteral("W8A8"),
                                    QStringLiteral("W4A8")});
        else
            cp->setSelectedConfigs({QStringLiteral("W8A16"), QStringLiteral("W4A16-g32"),
                                    QStringLiteral("NF4-g64"), QStringLiteral("W3A16-g64"),
                                    QStringLiteral("W2A16-g32")});
        cp->setContext(128);
        cp->setMaxChunks(8);
        cp->setPrompt(QStringLiteral("Once upon a time"));
        cp->setGenerateTokens(40);
        if (!cp->run()) fail(QStringLiteral("--demo-compare"), QStringLiteral("could not start"));
    });
}

// ------------------------------------------------------------ --demo-results / --demo-sensitivity

void ScreenshotSession::startResultsOrSensitivity(bool showResults) {
    const QString scene =
        showResults ? QStringLiteral("--demo-results") : QStringLiteral("--demo-sensitivity");
    auto failed = [this, scene](const QString& what) { fail(scene, what); };
    // The runs are recorded in a throw-away store, never in the user's.
    if (!m_storeDir.isValid()) return failed(QStringLiteral("cannot create a temporary folder"));
    ResultsPanel* results = m_window.resultsPanel();
    SensitivityPanel* sens = m_window.sensitivityPanel();
    ComparePanel* cp = m_window.comparePanel();
    results->setResultsPath(m_storeDir.filePath(QStringLiteral("results.jsonl")));
    QObject::connect(cp, &ComparePanel::failed, &m_window, failed);
    QObject::connect(sens, &SensitivityPanel::failed, &m_window, failed);
    auto scan = [sens, failed] {
        sens->setSchemes({QStringLiteral("W4A16-g32"), QStringLiteral("W2A16-g32")});
        sens->setGranularity(QStringLiteral("layer"));
        sens->setContext(128);
        sens->setMaxChunks(4);
        if (!sens->run()) failed(QStringLiteral("could not start the scan"));
    };
    // --demo-results: comparison 1, comparison 2, then the scan; each lands in the store.
    auto compare = [cp, failed](const QStringList& configs) {
        cp->setSelectedConfigs(configs);
        cp->setContext(128);
        cp->setMaxChunks(4);
        cp->setGenerateTokens(0);
        if (!cp->run()) failed(QStringLiteral("could not start the comparison"));
    };
    QObject::connect(cp, &ComparePanel::finished, &m_window,
                     [compare, scan, compares = 0]() mutable {
                         if (++compares == 1)
                             compare({QStringLiteral("NF4-g64"), QStringLiteral("W3A16-g64"),
                                      QStringLiteral("W2A16-g32")});
                         else
                             scan();
                     });
    QObject::connect(sens, &SensitivityPanel::finished, &m_window,
                     [this, results, sens, showResults] {
                         if (showResults) {
                             m_window.showPanel(MainWindow::Panel::Results);
                             results->selectRecord(0);
                         } else {
                             m_window.showPanel(MainWindow::Panel::Sensitivity);
                             sens->showScheme(QStringLiteral("W4A16-g32"));
                         }
                         grabSoon();
                     });
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window,
                     [this, showResults, compare, scan] {
                         hideSidePanels(); // the panel gets the whole width
                         if (showResults) {
                             m_window.showPanel(MainWindow::Panel::Results);
                             compare({QStringLiteral("W8A16"), QStringLiteral("W4A16-g32")});
                         } else {
                             m_window.showPanel(MainWindow::Panel::Sensitivity);
                             scan();
                         }
                     });
}

// --------------------------------------------------------------------------------- --demo-run

void ScreenshotSession::startRun() {
    RunPanel* run = m_window.runPanel();
    auto failed = [this](const QString& what) { fail(QStringLiteral("--demo-run"), what); };
    QObject::connect(run, &RunPanel::generationFailed, &m_window, failed);
    QObject::connect(run, &RunPanel::perplexityFailed, &m_window, failed);
    QObject::connect(run, &RunPanel::perplexityFinished, &m_window,
                     [this] { QTimer::singleShot(0, &m_window, [this] { grabAndQuit(); }); });
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window, [this, run, failed] {
        m_window.showPanel(MainWindow::Panel::Run);
        run->setPrompt(QStringLiteral("Once upon a time"));
        run->setMaxNewTokens(120);
        run->setContext(256);
        if (run->textFile().isEmpty()) return failed(QStringLiteral("no evaluation text found"));
        // Both jobs queue on the window's runner: generation first, then perplexity.
        if (!run->generate() || !run->runPerplexity())
            return failed(QStringLiteral("could not start the jobs"));
    });
}

// ------------------------------------------------------------------------------- --demo-study

void ScreenshotSession::startStudy(const QString& dir) {
    QObject::connect(&m_window, &MainWindow::modelLoaded, &m_window, [this, dir] {
        hideSidePanels();
        m_window.showPanel(MainWindow::Panel::Study);
        if (!m_window.studyPanel()->openStudy(dir))
            return fail(QStringLiteral("--demo-study"), QStringLiteral("cannot open ") + dir);
        grabSoon();
    });
}

} // namespace lcw::demo
