// lcw: the GUI entry point. `lcw [MODEL] [--theme light|dark] [--screenshot FILE.png
// [--demo-run | --demo-stats [--stats-tab TAB] [--imatrix FILE|compute] | --demo-recipe |
// --demo-compare | --demo-results | --demo-sensitivity | --demo-export]]`.
#include "core/version.h"
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
#include "widgets/theme.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QDockWidget>
#include <QFileInfo>
#include <QPixmap>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTimer>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>
#include <optional>

namespace {

bool parseSize(const QString& text, QSize* out) {
    const QStringList parts = text.toLower().split(QLatin1Char('x'));
    if (parts.size() != 2) return false;
    bool okW = false, okH = false;
    const int w = parts[0].toInt(&okW), h = parts[1].toInt(&okH);
    if (!okW || !okH || w < 200 || h < 150 || w > 10000 || h > 10000) return false;
    *out = QSize(w, h);
    return true;
}

/// --help, --version and --screenshot need no display: without one (and without an explicit
/// QT_QPA_PLATFORM) they run on the offscreen platform instead of failing to start.
void preferOffscreenWhenHeadless(int argc, char** argv) {
    if (!qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM") ||
        !qEnvironmentVariableIsEmpty("DISPLAY") || !qEnvironmentVariableIsEmpty("WAYLAND_DISPLAY"))
        return;
    for (int i = 1; i < argc; ++i) {
        const QByteArray a(argv[i]);
        if (a == "-h" || a == "--help" || a == "--help-all" || a == "-v" || a == "--version" ||
            a.startsWith("--screenshot")) {
            qputenv("QT_QPA_PLATFORM", "offscreen");
            return;
        }
    }
}

} // namespace

int main(int argc, char** argv) {
    preferOffscreenWhenHeadless(argc, argv);
    QApplication app(argc, argv);
    // Fusion draws the light and dark palettes faithfully on every platform.
    QApplication::setStyle(QStringLiteral("Fusion"));
    QApplication::setOrganizationName(QStringLiteral("lcw"));
    QApplication::setApplicationName(QStringLiteral("lcw"));
    QApplication::setApplicationDisplayName(QStringLiteral("lcw"));
    QApplication::setApplicationVersion(QString::fromLatin1(lcw::version()));

    QCommandLineParser parser;
    parser.setApplicationDescription(
        QStringLiteral("LLM Compression Workbench: inspect and compress language models."));
    parser.addHelpOption();
    parser.addVersionOption();
    parser.addPositionalArgument(
        QStringLiteral("MODEL"),
        QStringLiteral("Model to open: a Hugging Face folder, a .gguf file or a llama2.c .bin."),
        QStringLiteral("[MODEL]"));
    const QCommandLineOption screenshot(
        QStringLiteral("screenshot"),
        QStringLiteral("Open MODEL, wait until it is loaded, save the window to FILE.png, exit "
                       "(exit code 1 when loading or saving fails)."),
        QStringLiteral("FILE.png"));
    const QCommandLineOption size(QStringLiteral("size"),
                                  QStringLiteral("Window size for --screenshot (default "
                                                 "1400x900)."),
                                  QStringLiteral("WxH"), QStringLiteral("1400x900"));
    const QCommandLineOption theme(QStringLiteral("theme"),
                                   QStringLiteral("Colour theme: light or dark (remembered)."),
                                   QStringLiteral("light|dark"));
    const QCommandLineOption demoRun(
        QStringLiteral("demo-run"),
        QStringLiteral("With --screenshot: generate from \"Once upon a time\" and measure "
                       "perplexity on the bundled text (ctx 256) before saving the Run panel."));
    parser.addOption(screenshot);
    parser.addOption(size);
    parser.addOption(theme);
    const QCommandLineOption demoStats(
        QStringLiteral("demo-stats"),
        QStringLiteral("With --screenshot: compute (or load cached) statistics of MODEL "
                       "(8 samples x 128 tokens of the bundled text) and save the Statistics "
                       "inspector on layers.1.mlp.down."));
    const QCommandLineOption statsTab(
        QStringLiteral("stats-tab"),
        QStringLiteral("With --demo-stats: the inspector tab to show (weights, activations, kv)."),
        QStringLiteral("TAB"), QStringLiteral("weights"));
    const QCommandLineOption imatrixOpt(
        QStringLiteral("imatrix"),
        QStringLiteral("With --demo-stats: open this importance matrix (.dat), or \"compute\" one "
                       "(8 chunks x 128 tokens of the bundled text), before saving."),
        QStringLiteral("FILE|compute"));
    parser.addOption(demoRun);
    parser.addOption(demoStats);
    parser.addOption(statsTab);
    parser.addOption(imatrixOpt);
    const QCommandLineOption demoRecipe(
        QStringLiteral("demo-recipe"),
        QStringLiteral("With --screenshot: apply the W4A16-g64 preset, keep block 0 at int8 per "
                       "channel and save the Recipe editor."));
    const QCommandLineOption demoCompare(
        QStringLiteral("demo-compare"),
        QStringLiteral("With --screenshot: compare W8A16, W4A16-g32, NF4-g64, W3A16-g64 and "
                       "W2A16-g32 with the original (ctx 128, 8 chunks of the bundled text, 40 "
                       "generated tokens) and save the Compare view."));
    const QCommandLineOption compareTab(
        QStringLiteral("compare-tab"),
        QStringLiteral(
            "With --demo-compare: the tab to show (metrics, layers, generations, "
            "speed: W8A16, W4A16-g32, NF4-g64, W8A8 and W4A8 instead, speed and memory)."),
        QStringLiteral("TAB"), QStringLiteral("metrics"));
    parser.addOption(demoRecipe);
    parser.addOption(demoCompare);
    parser.addOption(compareTab);
    const QCommandLineOption demoResults(
        QStringLiteral("demo-results"),
        QStringLiteral("With --screenshot: in a temporary results store, record two comparisons "
                       "(ctx 128, 4 chunks of the bundled text) and a sensitivity scan, and save "
                       "the Results panel with the first record selected."));
    const QCommandLineOption demoSensitivity(
        QStringLiteral("demo-sensitivity"),
        QStringLiteral("With --screenshot: scan W4A16-g32 and W2A16-g32 per layer (ctx 128, 4 "
                       "chunks of the bundled text; recorded in a temporary results store) and "
                       "save the Sensitivity panel."));
    const QCommandLineOption demoExport(
        QStringLiteral("demo-export"),
        QStringLiteral("With --screenshot: compute an importance matrix (8 chunks x 128 tokens of "
                       "the bundled text), export MODEL as Q4_K_M with it into a temporary folder "
                       "and save the Export dialog's GGUF page with the per-tensor report."));
    parser.addOption(demoResults);
    parser.addOption(demoSensitivity);
    parser.addOption(demoExport);
    parser.process(app);

    const QStringList args = parser.positionalArguments();
    if (args.size() > 1) {
        std::fprintf(stderr, "lcw: expected at most one MODEL argument, got %lld\n",
                     static_cast<long long>(args.size()));
        return 2;
    }
    const QString modelPath = args.isEmpty() ? QString() : args.front();
    std::optional<lcw::Theme> chosenTheme;
    if (parser.isSet(theme)) {
        chosenTheme = lcw::themeFromName(parser.value(theme));
        if (!chosenTheme) {
            std::fprintf(stderr, "lcw: --theme expects light or dark\n");
            return 2;
        }
    }
    if (parser.isSet(demoRun) && (!parser.isSet(screenshot) || modelPath.isEmpty())) {
        std::fprintf(stderr, "lcw: --demo-run needs --screenshot and a MODEL\n");
        return 2;
    }

    if (parser.isSet(demoStats) &&
        (!parser.isSet(screenshot) || modelPath.isEmpty() || parser.isSet(demoRun))) {
        std::fprintf(stderr, "lcw: --demo-stats needs --screenshot and a MODEL (not --demo-run)\n");
        return 2;
    }

    const int demos = int(parser.isSet(demoRun)) + int(parser.isSet(demoStats)) +
                      int(parser.isSet(demoRecipe)) + int(parser.isSet(demoCompare)) +
                      int(parser.isSet(demoResults)) + int(parser.isSet(demoSensitivity)) +
                      int(parser.isSet(demoExport));
    if (demos > 1 ||
        ((parser.isSet(demoRecipe) || parser.isSet(demoCompare) || parser.isSet(demoResults) ||
          parser.isSet(demoSensitivity) || parser.isSet(demoExport)) &&
         (!parser.isSet(screenshot) || modelPath.isEmpty()))) {
        std::fprintf(stderr, "lcw: one --demo-* option at a time, with --screenshot and a MODEL\n");
        return 2;
    }

    if (!parser.isSet(screenshot)) {
        lcw::MainWindow window;
        if (chosenTheme) window.setTheme(*chosenTheme);
        window.show();
        if (!modelPath.isEmpty()) window.openModel(modelPath);
        return QApplication::exec();
    }

    // Screenshot mode: no settings read or written, errors go to stderr instead of dialogs.
    QSize windowSize;
    if (!parseSize(parser.value(size), &windowSize)) {
        std::fprintf(stderr, "lcw: --size expects WxH, e.g. 1400x900\n");
        return 2;
    }
    const QString outPath = parser.value(screenshot);
    lcw::MainWindow window(lcw::MainWindow::Options{false, false});
    window.setTheme(chosenTheme.value_or(lcw::Theme::Light));
    window.resize(windowSize);
    window.show();

    int exitCode = 0;
    QTemporaryDir storeDir; // --demo-results / --demo-sensitivity: the results store
    auto grabAndQuit = [&] {
        const QPixmap pixmap = window.grab();
        if (window.size() != windowSize) {
            // The image is the requested size or none: a smaller window than the layout allows
            // would be clipped.
            const QSize min = window.minimumSizeHint();
            std::fprintf(stderr, "lcw: --size %dx%d is below the window's minimum size %dx%d\n",
                         windowSize.width(), windowSize.height(), min.width(), min.height());
            exitCode = 1;
        } else if (pixmap.isNull() || !pixmap.save(outPath)) {
            std::fprintf(stderr, "lcw: could not write %s\n", qPrintable(outPath));
            exitCode = 1;
        } else {
            std::printf("%s\n", qPrintable(QDir::toNativeSeparators(
                                    QFileInfo(outPath).absoluteFilePath())));
        }
        QApplication::quit();
    };
    QObject::connect(&window, &lcw::MainWindow::errorShown, &app, [&](const QString& message) {
        std::fprintf(stderr, "lcw: %s\n", qPrintable(message));
        exitCode = 1;
        QApplication::quit();
    });
    // Grab from the event loop so pending layout and resize events are processed first.
    if (modelPath.isEmpty()) {
        QTimer::singleShot(0, &window, grabAndQuit);
    } else if (parser.isSet(demoStats)) {
        // The lambdas outlive this block: they capture values and main()'s locals only.
        lcw::StatsPanel* stats = window.statsPanel();
        QObject::connect(stats, &lcw::StatsPanel::computeFailed, &window,
                         [&exitCode](const QString& m) {
                             std::fprintf(stderr, "lcw: --demo-stats: %s\n", qPrintable(m));
                             exitCode = 1;
                             QApplication::quit();
                         });
        // Grab once the inspector layout is in place and the statistics are shown (loaded
        // from the cache while the model opens, or computed afterwards).
        auto layoutDone = std::make_shared<bool>(false);
        const QStringList tabs = {QStringLiteral("weights"), QStringLiteral("activations"),
                                  QStringLiteral("kv")};
        const int tab = tabs.indexOf(parser.value(statsTab).toLower());
        if (tab < 0) {
            std::fprintf(stderr, "lcw: --stats-tab expects weights, activations or kv\n");
            return 2;
        }
        const QString imatrix = parser.value(imatrixOpt);
        lcw::ImatrixManager* im = window.imatrixManager();
        auto grabbed = std::make_shared<bool>(false);
        auto showAndGrab = [&window, &grabAndQuit, stats, tab, imatrix, im, grabbed] {
            // Both the statistics and (when asked for) the importance matrix are in.
            if (*grabbed || !stats->report() || (!imatrix.isEmpty() && !im->imatrix())) return;
            *grabbed = true;
            window.selectTensor(QStringLiteral("layers.1.mlp.down"));
            stats->tabs()->setCurrentIndex(tab);
            // Two turns of the event loop: the layout settles in the first.
            QTimer::singleShot(0, &window, [&window, &grabAndQuit] {
                QTimer::singleShot(0, &window, grabAndQuit);
            });
        };
        QObject::connect(stats, &lcw::StatsPanel::statsChanged, &window, [layoutDone, showAndGrab] {
            if (*layoutDone) showAndGrab();
        });
        QObject::connect(im, &lcw::ImatrixManager::changed, &window, [layoutDone, showAndGrab] {
            if (*layoutDone) showAndGrab();
        });
        QObject::connect(im, &lcw::ImatrixManager::failed, &window, [&exitCode](const QString& m) {
            std::fprintf(stderr, "lcw: --imatrix: %s\n", qPrintable(m));
            exitCode = 1;
            QApplication::quit();
        });
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window,
                         [&window, stats, layoutDone, showAndGrab, imatrix, im] {
                             window.applyInspectorLayout();
                             *layoutDone = true;
                             if (imatrix == QLatin1String("compute")) {
                                 lcw::ImatrixSettings s;
                                 s.seqLen = 128;
                                 s.samples = 8;
                                 im->compute(s);
                             } else if (!imatrix.isEmpty()) {
                                 window.openImatrix(imatrix); // errors quit through errorShown
                             }
                             if (stats->report()) return showAndGrab();
                             // A cached file is read in the background: statsChanged() grabs when
                             // it is in.
                             if (stats->isLoadingCache()) {
                                 QObject::connect(stats, &lcw::StatsPanel::cacheLoadFinished,
                                                  &window, [stats](bool loaded) {
                                                      if (loaded) return;
                                                      lcw::StatsSettings s;
                                                      s.samples = 8;
                                                      s.seqLen = 128;
                                                      stats->setSettings(s);
                                                      stats->computeStats();
                                                  });
                                 return;
                             }
                             lcw::StatsSettings s;
                             s.samples = 8;
                             s.seqLen = 128;
                             stats->setSettings(s);
                             stats->computeStats();
                         });
        window.openModel(modelPath);
    } else if (parser.isSet(demoExport)) {
        lcw::ImatrixManager* im = window.imatrixManager();
        auto fail = [&exitCode](const QString& what) {
            std::fprintf(stderr, "lcw: --demo-export: %s\n", qPrintable(what));
            exitCode = 1;
            QApplication::quit();
        };
        QObject::connect(im, &lcw::ImatrixManager::failed, &window, fail);
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window, [im, fail] {
            lcw::ImatrixSettings s;
            s.seqLen = 128;
            s.samples = 8;
            if (!im->compute(s)) fail(im->lastError());
        });
        QObject::connect(
            im, &lcw::ImatrixManager::computed, &window,
            [&window, &storeDir, &outPath, &exitCode, windowSize, fail, modelPath] {
                auto* d = new lcw::ExportDialog(window.exportSources(), &window);
                d->resize(windowSize);
                d->showPage(lcw::ExportDialog::Page::Gguf);
                lcw::GgufExportPanel* g = d->ggufPanel();
                g->setTypeChoice(QStringLiteral("Q4_K_M"));
                g->setImatrixSource(lcw::GgufExportPanel::ImatrixSource::Opened);
                g->setOutputPath(QDir(storeDir.path())
                                     .filePath(QFileInfo(modelPath).fileName() +
                                               QStringLiteral("-Q4_K_M.gguf")));
                QObject::connect(g, &lcw::GgufExportPanel::failed, d, fail);
                QObject::connect(g, &lcw::GgufExportPanel::finished, d, [d, &outPath, &exitCode] {
                    QTimer::singleShot(0, d, [d, &outPath, &exitCode] {
                        if (!d->grab().save(outPath)) {
                            std::fprintf(stderr, "lcw: could not write %s\n", qPrintable(outPath));
                            exitCode = 1;
                        } else {
                            std::printf("%s\n", qPrintable(outPath));
                        }
                        QApplication::quit();
                    });
                });
                d->show();
                if (!g->start()) fail(g->lastError());
            });
        window.openModel(modelPath);
    } else if (parser.isSet(demoRecipe)) {
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window, [&] {
            window.applyInspectorLayout();
            window.showPanel(lcw::MainWindow::Panel::Recipe);
            lcw::RecipeEditor* ed = window.recipeEditor();
            ed->applyPreset(QStringLiteral("W4A16-g64"));
            ed->selectPattern(QStringLiteral("layers.0.*"));
            ed->setWeightForm(
                nlohmann::json{{"bits", 8}, {"symmetric", true}, {"granularity", "channel"}});
            ed->applyToSelection();
            ed->setTargetBitsPerWeight(5.0);
            ed->selectPattern(QStringLiteral("layers.0.*"));
            // The Tensors table's Error column filled by a real compression, worst first.
            if (!window.measureLayerErrors()) {
                exitCode = 1;
                QApplication::quit();
            }
        });
        QObject::connect(
            &window, &lcw::MainWindow::errorsMeasured, &window, [&window, &grabAndQuit] {
                window.moveTensorColumn(lcw::LayerTableModel::Error, 1);
                window.sortTensorTable(lcw::LayerTableModel::Error, Qt::DescendingOrder);
                QTimer::singleShot(0, &window, [&window, &grabAndQuit] {
                    QTimer::singleShot(0, &window, grabAndQuit);
                });
            });
        window.openModel(modelPath);
    } else if (parser.isSet(demoCompare)) {
        const QStringList tabs = {QStringLiteral("metrics"), QStringLiteral("layers"),
                                  QStringLiteral("generations"), QStringLiteral("speed")};
        const int tab = tabs.indexOf(parser.value(compareTab).toLower());
        if (tab < 0) {
            std::fprintf(stderr,
                         "lcw: --compare-tab expects metrics, layers, generations or speed\n");
            return 2;
        }
        lcw::ComparePanel* cp = window.comparePanel();
        QObject::connect(cp, &lcw::ComparePanel::failed, &window, [&](const QString& m) {
            std::fprintf(stderr, "lcw: --demo-compare: %s\n", qPrintable(m));
            exitCode = 1;
            QApplication::quit();
        });
        QObject::connect(cp, &lcw::ComparePanel::finished, &window, [&, cp, tab] {
            cp->tabs()->setCurrentIndex(tab);
            cp->selectRow(2);
            QTimer::singleShot(0, &window, [&] { QTimer::singleShot(0, &window, grabAndQuit); });
        });
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window, [&, cp, tab] {
            window.applyInspectorLayout();
            // The compare view gets the whole width.
            for (auto p : {lcw::MainWindow::Panel::Layers, lcw::MainWindow::Panel::Summary,
                           lcw::MainWindow::Panel::Plot, lcw::MainWindow::Panel::Log})
                window.dock(p)->hide();
            window.showPanel(lcw::MainWindow::Panel::Compare);
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
            if (!cp->run()) {
                std::fprintf(stderr, "lcw: --demo-compare: could not start\n");
                exitCode = 1;
                QApplication::quit();
            }
        });
        window.openModel(modelPath);
    } else if (parser.isSet(demoResults) || parser.isSet(demoSensitivity)) {
        // The runs are recorded in a throw-away store, never in the user's.
        if (!storeDir.isValid()) {
            std::fprintf(stderr, "lcw: cannot create a temporary folder\n");
            return 1;
        }
        lcw::ResultsPanel* results = window.resultsPanel();
        lcw::SensitivityPanel* sens = window.sensitivityPanel();
        lcw::ComparePanel* cp = window.comparePanel();
        results->setResultsPath(storeDir.filePath(QStringLiteral("results.jsonl")));
        const bool showResults = parser.isSet(demoResults);
        // The lambdas outlive this block: they capture only values and main()'s locals.
        auto fail = [&exitCode, showResults](const QString& what) {
            std::fprintf(stderr, "lcw: --demo-%s: %s\n", showResults ? "results" : "sensitivity",
                         qPrintable(what));
            exitCode = 1;
            QApplication::quit();
        };
        QObject::connect(cp, &lcw::ComparePanel::failed, &window, fail);
        QObject::connect(sens, &lcw::SensitivityPanel::failed, &window, fail);
        auto scan = [sens, fail] {
            sens->setSchemes({QStringLiteral("W4A16-g32"), QStringLiteral("W2A16-g32")});
            sens->setGranularity(QStringLiteral("layer"));
            sens->setContext(128);
            sens->setMaxChunks(4);
            if (!sens->run()) fail(QStringLiteral("could not start the scan"));
        };
        // --demo-results: comparison 1, comparison 2, then the scan; each lands in the store.
        auto compare = [cp, fail](const QStringList& configs) {
            cp->setSelectedConfigs(configs);
            cp->setContext(128);
            cp->setMaxChunks(4);
            cp->setGenerateTokens(0);
            if (!cp->run()) fail(QStringLiteral("could not start the comparison"));
        };
        QObject::connect(cp, &lcw::ComparePanel::finished, &window,
                         [compare, scan, compares = 0]() mutable {
                             if (++compares == 1)
                                 compare({QStringLiteral("NF4-g64"), QStringLiteral("W3A16-g64"),
                                          QStringLiteral("W2A16-g32")});
                             else
                                 scan();
                         });
        QObject::connect(sens, &lcw::SensitivityPanel::finished, &window,
                         [&window, &grabAndQuit, results, sens, showResults] {
                             if (showResults) {
                                 window.showPanel(lcw::MainWindow::Panel::Results);
                                 results->selectRecord(0);
                             } else {
                                 window.showPanel(lcw::MainWindow::Panel::Sensitivity);
                                 sens->showScheme(QStringLiteral("W4A16-g32"));
                             }
                             QTimer::singleShot(
                                 0, &window, [&] { QTimer::singleShot(0, &window, grabAndQuit); });
                         });
        QObject::connect(
            &window, &lcw::MainWindow::modelLoaded, &window, [&window, showResults, compare, scan] {
                window.applyInspectorLayout();
                // The panel gets the whole width.
                for (auto p : {lcw::MainWindow::Panel::Layers, lcw::MainWindow::Panel::Summary,
                               lcw::MainWindow::Panel::Plot, lcw::MainWindow::Panel::Log})
                    window.dock(p)->hide();
                if (showResults) {
                    window.showPanel(lcw::MainWindow::Panel::Results);
                    compare({QStringLiteral("W8A16"), QStringLiteral("W4A16-g32")});
                } else {
                    window.showPanel(lcw::MainWindow::Panel::Sensitivity);
                    scan();
                }
            });
        window.openModel(modelPath);
    } else if (!parser.isSet(demoRun)) {
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window,
                         [&] { QTimer::singleShot(0, &window, grabAndQuit); });
        window.openModel(modelPath);
    } else {
        // The lambdas outlive this block: they capture values and main()'s locals only.
        lcw::RunPanel* run = window.runPanel();
        auto fail = [&exitCode](const QString& what) {
            std::fprintf(stderr, "lcw: --demo-run: %s\n", qPrintable(what));
            exitCode = 1;
            QApplication::quit();
        };
        QObject::connect(run, &lcw::RunPanel::generationFailed, &window, fail);
        QObject::connect(run, &lcw::RunPanel::perplexityFailed, &window, fail);
        QObject::connect(run, &lcw::RunPanel::perplexityFinished, &window,
                         [&window, &grabAndQuit] { QTimer::singleShot(0, &window, grabAndQuit); });
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window, [&window, run, fail] {
            window.showPanel(lcw::MainWindow::Panel::Run);
            run->setPrompt(QStringLiteral("Once upon a time"));
            run->setMaxNewTokens(120);
            run->setContext(256);
            if (run->textFile().isEmpty()) return fail(QStringLiteral("no evaluation text found"));
            // Both jobs queue on the window's runner: generation first, then perplexity.
            if (!run->generate() || !run->runPerplexity())
                return fail(QStringLiteral("could not start the jobs"));
        });
        window.openModel(modelPath);
    }
    const int rc = QApplication::exec();
    return exitCode != 0 ? exitCode : rc;
}
