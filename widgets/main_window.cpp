#include "widgets/main_window.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/io/model_metadata.h"
#include "core/model/hf_cache.h"
#include "core/project/project.h"
#include "core/stats/fingerprint.h"
#include "core/version.h"
#include "plots/bar_plot.h"
#include "plots/grouped_bar_plot.h"
#include "plots/plot_style.h"
#include "plots/scatter_plot.h"
#include "widgets/compare_panel.h"
#include "widgets/export_dialog.h"
#include "widgets/imatrix_dialog.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/log_panel.h"
#include "widgets/metadata_dialog.h"
#include "widgets/model_summary_panel.h"
#include "widgets/number_format.h"
#include "widgets/recent_list.h"
#include "widgets/recipe_editor.h"
#include "widgets/results_panel.h"
#include "widgets/run_panel.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/shortcuts_dialog.h"
#include "widgets/stats_panel.h"
#include "widgets/task_status_widget.h"
#include "widgets/tensor_values_dialog.h"

#include <cmath>

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QClipboard>
#include <QCloseEvent>
#include <QDateTime>
#include <QDesktopServices>
#include <QDir>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QElapsedTimer>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFontMetrics>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLineEdit>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPushButton>
#include <QRegularExpression>
#include <QScrollArea>
#include <QSettings>
#include <QSortFilterProxyModel>
#include <QStandardPaths>
#include <QStatusBar>
#include <QStyle>
#include <QTabWidget>
#include <QTableView>
#include <QThreadPool>
#include <QTimer>
#include <QUndoStack>
#include <QUrl>

#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <utility>

namespace lcw {

namespace {

constexpr auto kRecentKey = "recent/models";
constexpr auto kGeometryKey = "mainWindow/geometry";
constexpr auto kStateKey = "mainWindow/state";
constexpr auto kThemeKey = "view/theme";
constexpr auto kRecentProjectsKey = "recent/projects";
constexpr auto kRecentRecipesKey = "recent/recipes";
constexpr auto kAutosaveKey = "project/autosaveMinutes";
/// Project names of the recipe editor's recipe and of recipe files in the compare view.
constexpr auto kEditorRecipe = "editor";
constexpr auto kFileRecipePrefix = "file:";
constexpr auto kCompareResults = "compare";
constexpr auto kLayerErrors = "layer_errors";
constexpr auto kSensitivityScan = "sensitivity";
constexpr auto kImatrix = "imatrix";
constexpr int kDefaultWidth = 1400;
constexpr int kDefaultHeight = 900;

/// Glob to an anchored regex: '*' any run, '?' one character, everything else literal.
QString globToRegex(const QString& glob) {
    QString re;
    for (const QChar c : glob) {
        if (c == QLatin1Char('*'))
            re += QStringLiteral(".*");
        else if (c == QLatin1Char('?'))
            re += QLatin1Char('.');
        else
            re += QRegularExpression::escape(QString(c));
    }
    return QStringLiteral("^%1$").arg(re);
}

} // namespace

MainWindow::MainWindow(QWidget* parent) : MainWindow(Options{}, parent) {}

MainWindow::MainWindow(Options options, QWidget* parent) : QMainWindow(parent), m_options(options) {
    m_savePool.setMaxThreadCount(1);
    // Created first so it is destroyed first: its destructor stops and waits for the running
    // job while the panels that receive its results still exist.
    m_runner = new TaskRunner(this);
    m_recentModels = new RecentList(kRecentKey, kMaxRecent, m_options.useSettings, this);
    m_recentProjects = new RecentList(kRecentProjectsKey, kMaxRecent, m_options.useSettings, this);
    m_recentRecipes = new RecentList(kRecentRecipesKey, kMaxRecent, m_options.useSettings, this);
    connect(m_recentModels, &RecentList::changed, this, &MainWindow::recentFilesChanged);
    m_theme = isDarkPalette(QApplication::palette()) ? Theme::Dark : Theme::Light;
    buildUi();
    buildMenus();
    connectLog();
    connectModifiedTracking();
    setAcceptDrops(true);
    updateWindowTitle();
    resize(kDefaultWidth, kDefaultHeight);
    if (m_options.useSettings) readSettings();
}

MainWindow::~MainWindow() {
    // Project writes hold no pointer into the window; their completions are dropped once it is
    // gone. Wait for them so the files are complete when the window is.
    m_savePool.waitForDone();
}

// ---------------------------------------------------------------------------------------------
// UI construction

void MainWindow::buildUi() {
    setDockNestingEnabled(true);
    setDockOptions(QMainWindow::AnimatedDocks | QMainWindow::AllowNestedDocks |
                   QMainWindow::AllowTabbedDocks | QMainWindow::GroupedDragging);
    setTabPosition(Qt::AllDockWidgetAreas, QTabWidget::North);
    m_welcome = buildWelcomePage();
    setCentralWidget(m_welcome);

    m_summary = new ModelSummaryPanel(this);
    m_plot = new BarPlot(this);
    m_plot->setTitle(tr("Parameters per block"));
    m_plot->setTooltipFormatter([this](int i, const QString&, double) -> QString {
        if (i < 0 || size_t(i) >= m_blocks.size() || !m_model) return {};
        const BlockSize& b = m_blocks[size_t(i)];
        const double share =
            100.0 * double(b.parameters) / double(std::max<int64_t>(1, m_model->parameterCount()));
        QString text = tr("%1\n%2 parameters (%3% of the model)\n%4 stored")
                           .arg(QString::fromStdString(b.label), formatCountExact(b.parameters))
                           .arg(share, 0, 'f', 1)
                           .arg(formatBytes(b.bytes));
        if (size_t(i) + 1 == m_blocks.size())
            text += tr("\nfinal norm%1")
                        .arg(m_model->find("lm_head") ? tr(" + lm_head")
                                                      : tr("; lm_head tied to embed"));
        return text;
    });
    QWidget* layers = buildLayersPanel();
    m_runPanel = new RunPanel(m_runner, this);
    m_log = new LogPanel(this);
    m_statsPanel = new StatsPanel(m_runner, this);
    m_imatrix = new ImatrixManager(m_runner, this);
    m_statsPanel->setImatrixManager(m_imatrix);
    m_recipeEditor = new RecipeEditor(this);
    m_comparePanel = new ComparePanel(m_runner, this);
    m_comparePanel->setEditorRecipeProvider([this] { return m_recipeEditor->recipe(); });
    m_runPanel->setEditorRecipeProvider([this] { return m_recipeEditor->recipe(); });
    m_resultsPanel = new ResultsPanel(this);
    m_sensitivityPanel = new SensitivityPanel(m_runner, this);
    m_sensitivityPanel->setBudgetProvider([this] { return m_recipeEditor->targetBitsPerWeight(); });

    addPanel(Panel::Summary, tr("Summary"), QStringLiteral("dock.summary"), m_summary);
    addPanel(Panel::Plot, tr("Parameters per Block"), QStringLiteral("dock.plot"), m_plot);
    addPanel(Panel::Layers, tr("Tensors"), QStringLiteral("dock.layers"), layers);
    addPanel(Panel::Run, tr("Run"), QStringLiteral("dock.run"), m_runPanel);
    addPanel(Panel::Log, tr("Log"), QStringLiteral("dock.log"), m_log);
    addPanel(Panel::Stats, tr("Statistics"), QStringLiteral("dock.stats"), m_statsPanel);
    addPanel(Panel::Recipe, tr("Recipe"), QStringLiteral("dock.recipe"), m_recipeEditor);
    addPanel(Panel::Compare, tr("Compare"), QStringLiteral("dock.compare"), m_comparePanel);
    addPanel(Panel::Results, tr("Results"), QStringLiteral("dock.results"), m_resultsPanel);
    addPanel(Panel::Sensitivity, tr("Sensitivity"), QStringLiteral("dock.sensitivity"),
             m_sensitivityPanel);
    connect(m_sensitivityPanel, &SensitivityPanel::tensorRequested, this,
            &MainWindow::selectTensor);
    // An autotuned recipe replaces the editor's (one undo step).
    connect(m_sensitivityPanel, &SensitivityPanel::recipeProduced, this,
            [this](const compress::Recipe& r, const QString& what) {
                m_recipeEditor->setRecipe(r, what);
            });
    connect(m_sensitivityPanel, &SensitivityPanel::failed, this, [this](const QString& message) {
        showError(tr("Sensitivity"), tr("The sensitivity scan failed"), message);
    });
    // Every comparison is recorded in the results store; a stored record can be shown again.
    connect(m_comparePanel, &ComparePanel::finished, this, [this] {
        m_resultsPanel->appendCompare(m_comparePanel->results(), m_modelPath,
                                      m_comparePanel->textFile());
    });
    // So is every sensitivity scan run here (not one opened from a file).
    connect(m_sensitivityPanel, &SensitivityPanel::finished, this, [this] {
        if (const SensitivityScan* s = m_sensitivityPanel->scan())
            m_resultsPanel->appendSensitivity(*s, m_modelPath, m_sensitivityPanel->scanTextFile());
    });
    connect(m_resultsPanel, &ResultsPanel::loadIntoCompare, this, [this](const CompareResults& r) {
        m_comparePanel->setResults(r);
        showPanel(Panel::Compare);
    });
    connect(m_recipeEditor, &RecipeEditor::planChanged, this, &MainWindow::updatePlannedColumns);
    // llama.cpp presets use the importance matrix when it is a file (the recipe names it).
    m_recipeEditor->setImatrixPathProvider([this] { return m_imatrix->path(); });
    m_sensitivityPanel->setFingerprintProvider([this] { return m_statsPanel->fingerprint(); });
    m_statsPanel->setRecipeSettingProvider(
        [this](const QString& tensor) -> std::optional<compress::WeightSettings> {
            const compress::Plan* plan = m_recipeEditor->plan();
            if (!plan || m_recipeEditor->recipe().rules.empty()) return std::nullopt;
            const std::string name = tensor.toStdString();
            for (const compress::LayerPlan& l : plan->layers)
                if (l.name == name) return l.quantize ? std::optional(l.weight) : std::nullopt;
            return std::nullopt;
        });
    connect(m_recipeEditor, &RecipeEditor::measureErrorsRequested, this,
            [this] { measureLayerErrors(); });
    connect(m_recipeEditor, &RecipeEditor::recipeFileUsed, this, [this](const QString& path) {
        m_recentRecipes->add(QFileInfo(path).absoluteFilePath());
    });
    connect(m_comparePanel, &ComparePanel::failed, this, [this](const QString& message) {
        showError(tr("Compare"), tr("The comparison failed"), message);
    });
    connect(m_imatrix, &ImatrixManager::failed, this, [this](const QString& message) {
        showError(tr("Importance Matrix"), tr("Could not compute the importance matrix"), message);
    });
    connect(m_imatrix, &ImatrixManager::computed, this, [this] {
        showPanel(Panel::Stats);
        m_statsPanel->tabs()->setCurrentIndex(1); // Activations: where the imatrix is drawn
        if (!m_options.modalDialogs) return;
        const auto answer = QMessageBox::question(
            this, tr("Importance Matrix"),
            tr("The importance matrix is ready (%1). Save it as a .dat file for llama-quantize "
               "--imatrix?")
                .arg(m_imatrix->describe()),
            QMessageBox::Save | QMessageBox::No, QMessageBox::Save);
        if (answer != QMessageBox::Save) return;
        const QString dir =
            QFileInfo(m_modelPath).isDir() ? m_modelPath : QFileInfo(m_modelPath).absolutePath();
        const QString p = QFileDialog::getSaveFileName(
            this, tr("Save Importance Matrix"), dir + QStringLiteral("/imatrix.dat"),
            tr("Importance matrices (*.dat);;All files (*)"));
        if (!p.isEmpty()) saveImatrix(p);
    });
    connect(m_statsPanel, &StatsPanel::tensorRequested, this, &MainWindow::selectTensor);
    connect(m_statsPanel, &StatsPanel::fingerprintReady, this,
            [this] { checkProjectFingerprint(); });
    connect(m_statsPanel, &StatsPanel::computeFailed, this, [this](const QString& message) {
        showError(tr("Statistics"), tr("Could not compute statistics"), message);
    });
    applyDefaultLayout();
    // The welcome page fills the window until a model is open (or a panel is asked for).
    for (QDockWidget* d : std::as_const(m_docks)) d->hide();

    m_taskStatus = new TaskStatusWidget(m_runner, this);
    statusBar()->addPermanentWidget(m_taskStatus);
    statusBar()->showMessage(tr("Open a model folder or file to begin."));
}

QDockWidget* MainWindow::addPanel(Panel panel, const QString& title, const QString& objectName,
                                  QWidget* content) {
    auto* d = new QDockWidget(title, this);
    d->setObjectName(objectName); // saveState()/restoreState() key
    // Panels with forms, buttons and plots scroll when their dock is smaller than what they
    // need, instead of raising the window's minimum size (every control stays reachable on a
    // 1024×700 screen) or growing the dock when their content does. The summary tree, the
    // tensor table, the block plot and the log scroll or shrink by themselves.
    const bool scrolls = panel != Panel::Summary && panel != Panel::Layers &&
                         panel != Panel::Plot && panel != Panel::Log;
    if (scrolls) {
        auto* area = new QScrollArea(d);
        area->setObjectName(objectName + QStringLiteral(".scroll"));
        area->setFrameShape(QFrame::NoFrame);
        area->setWidgetResizable(true);
        area->setWidget(content);
        d->setWidget(area);
    } else {
        d->setWidget(content);
    }
    d->setFeatures(QDockWidget::DockWidgetClosable | QDockWidget::DockWidgetMovable |
                   QDockWidget::DockWidgetFloatable);
    m_docks.insert(int(panel), d);
    addDockWidget(Qt::LeftDockWidgetArea, d);
    return d;
}

QDockWidget* MainWindow::dock(Panel panel) const {
    return m_docks.value(int(panel), nullptr);
}

void MainWindow::applyDefaultLayout() {
    for (QDockWidget* d : std::as_const(m_docks)) {
        d->setFloating(false);
        removeDockWidget(d);
    }
    // Left column: summary over the block plot. Right: the tensor table and the run panel as
    // tabs. Bottom, full width: the log.
    addDockWidget(Qt::LeftDockWidgetArea, dock(Panel::Summary), Qt::Vertical);
    addDockWidget(Qt::LeftDockWidgetArea, dock(Panel::Plot), Qt::Vertical);
    addDockWidget(Qt::RightDockWidgetArea, dock(Panel::Layers));
    // The inspector under the table (selecting a row shows its statistics), tabbed with the
    // run panel.
    splitDockWidget(dock(Panel::Layers), dock(Panel::Stats), Qt::Vertical);
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Run));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Recipe));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Compare));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Results));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Sensitivity));
    addDockWidget(Qt::BottomDockWidgetArea, dock(Panel::Log));
    for (QDockWidget* d : std::as_const(m_docks)) d->show();
    dock(Panel::Layers)->raise();
    dock(Panel::Stats)->raise();
    auto sizeDocks = [this] {
        const int w = std::max(width(), 800), h = std::max(height(), 600);
        // Only the left column: the right one (tabs) takes the rest.
        resizeDocks({dock(Panel::Summary)}, {w * 7 / 20}, Qt::Horizontal);
        resizeDocks({dock(Panel::Summary), dock(Panel::Plot)}, {h * 9 / 20, h * 8 / 20},
                    Qt::Vertical);
        resizeDocks({dock(Panel::Log)}, {h / 10}, Qt::Vertical);
        // The tensor table gets a little more than the tabs below it: ≥ 15 rows at 1000 px.
        resizeDocks({dock(Panel::Layers), dock(Panel::Stats)}, {h * 9 / 20, h * 8 / 20},
                    Qt::Vertical);
    };
    sizeDocks();
    // With the central page hidden, resizeDocks() alone does not move the boundary between the
    // left and right columns: hold the left column at its width through one layout pass.
    QDockWidget* left = dock(Panel::Summary);
    left->setMinimumWidth(std::max(width(), 800) * 7 / 20);
    QTimer::singleShot(0, this, [this, left, sizeDocks] {
        left->setMinimumWidth(0);
        sizeDocks();
    });
}

void MainWindow::applyInspectorLayout() {
    m_panelsActive = true;
    m_welcome->hide();
    for (QDockWidget* d : std::as_const(m_docks)) {
        d->setFloating(false);
        removeDockWidget(d);
    }
    addDockWidget(Qt::LeftDockWidgetArea, dock(Panel::Layers));
    for (Panel p : {Panel::Summary, Panel::Plot, Panel::Log})
        tabifyDockWidget(dock(Panel::Layers), dock(p));
    addDockWidget(Qt::RightDockWidgetArea, dock(Panel::Stats));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Run));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Recipe));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Compare));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Results));
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Sensitivity));
    for (QDockWidget* d : std::as_const(m_docks)) d->show();
    dock(Panel::Layers)->raise();
    dock(Panel::Stats)->raise();
    const int w = std::max(width(), 800);
    // As in applyDefaultLayout(): hold the left column's width through one layout pass.
    QDockWidget* left = dock(Panel::Layers);
    left->setMinimumWidth(w * 21 / 50);
    QTimer::singleShot(0, this, [this, left, w] {
        left->setMinimumWidth(0);
        resizeDocks({left}, {w * 21 / 50}, Qt::Horizontal);
    });
}

void MainWindow::activatePanels() {
    if (m_panelsActive) return;
    m_panelsActive = true;
    m_welcome->hide();
    if (m_savedState.isEmpty() || !restoreState(m_savedState, kStateVersion)) applyDefaultLayout();
}

void MainWindow::deactivatePanels() {
    if (!m_panelsActive) return;
    m_savedState = saveState(kStateVersion); // the layout comes back with the next model
    for (QDockWidget* d : std::as_const(m_docks)) d->hide();
    m_welcome->show();
    m_panelsActive = false;
}

void MainWindow::showPanel(Panel panel) {
    activatePanels();
    QDockWidget* d = dock(panel);
    d->show();
    d->raise();
}

void MainWindow::resetLayout() {
    m_panelsActive = true;
    m_welcome->hide();
    applyDefaultLayout();
}

void MainWindow::setTheme(Theme theme) {
    m_theme = theme;
    applyTheme(theme);
    if (m_themeGroup)
        for (QAction* a : m_themeGroup->actions())
            a->setChecked(a->data().toString() == themeName(theme));
    if (m_options.useSettings) QSettings().setValue(kThemeKey, themeName(theme));
}

void MainWindow::connectLog() {
    connect(m_runner, &TaskRunner::jobQueued, this,
            [this](TaskRunner::JobId id, const QString& title) { m_jobTitles.insert(id, title); });
    connect(m_runner, &TaskRunner::jobStarted, this,
            [this](TaskRunner::JobId id, const QString& title) {
                m_jobTimers[id].start();
                m_log->info(tr("Started: %1").arg(title));
            });
    auto titleOf = [this](TaskRunner::JobId id) {
        const QString t = m_jobTitles.take(id);
        return t.isEmpty() ? tr("job %1").arg(id) : t;
    };
    auto tookOf = [this](TaskRunner::JobId id) -> QString {
        if (!m_jobTimers.contains(id)) return {};
        const double s = double(m_jobTimers.take(id).nsecsElapsed()) * 1e-9;
        return s < 1.0 ? tr(" in %1 ms").arg(qRound(s * 1000.0)) : tr(" in %1 s").arg(s, 0, 'f', 2);
    };
    connect(m_runner, &TaskRunner::jobFinished, this,
            [this, titleOf, tookOf](TaskRunner::JobId id, const std::any&) {
                const QString took = tookOf(id);
                m_log->info(tr("Finished: %1%2").arg(titleOf(id), took));
            });
    connect(m_runner, &TaskRunner::jobCancelled, this,
            [this, titleOf, tookOf](TaskRunner::JobId id) {
                const QString took = tookOf(id);
                m_log->warning(tr("Cancelled: %1%2").arg(titleOf(id), took));
            });
    connect(m_runner, &TaskRunner::jobFailed, this,
            [this, titleOf, tookOf](TaskRunner::JobId id, const QString& message) {
                tookOf(id);
                const QString title = titleOf(id);
                // A failed load reports through showError(), which logs the whole message.
                if (id == m_loadJob) return;
                m_log->error(tr("Failed: %1: %2").arg(title, message));
            });
    connect(m_runPanel, &RunPanel::logMessage, m_log, &LogPanel::info);
    connect(m_statsPanel, &StatsPanel::logMessage, m_log, &LogPanel::info);
    connect(m_recipeEditor, &RecipeEditor::logMessage, m_log, &LogPanel::info);
    connect(m_comparePanel, &ComparePanel::logMessage, m_log, &LogPanel::info);
    connect(m_resultsPanel, &ResultsPanel::logMessage, m_log, &LogPanel::info);
    connect(m_sensitivityPanel, &SensitivityPanel::logMessage, m_log, &LogPanel::info);
    connect(m_imatrix, &ImatrixManager::logMessage, m_log, &LogPanel::info);
    connect(m_resultsPanel, &ResultsPanel::logWarning, m_log, &LogPanel::warning);
    m_resultsPanel->reload();
}

QWidget* MainWindow::buildWelcomePage() {
    auto* page = new QWidget(this);
    auto* lay = new QVBoxLayout(page);
    lay->addStretch(2);
    auto* title = new QLabel(tr("LLM Compression Workbench"), page);
    QFont tf = title->font();
    tf.setPointSizeF(tf.pointSizeF() * 1.8);
    tf.setBold(true);
    title->setFont(tf);
    title->setAlignment(Qt::AlignCenter);
    auto* hint = new QLabel(tr("Open a Hugging Face model folder, a GGUF file or a llama2.c "
                               "checkpoint — or drop it onto this window."),
                            page);
    hint->setAlignment(Qt::AlignCenter);
    hint->setWordWrap(true);
    auto* buttons = new QHBoxLayout;
    auto* openFolder = new QPushButton(tr("Open Model Folder…"), page);
    auto* openFile = new QPushButton(tr("Open Model File…"), page);
    auto* openProj = new QPushButton(tr("Open Project…"), page);
    connect(openFolder, &QPushButton::clicked, this, &MainWindow::openFolderDialog);
    connect(openFile, &QPushButton::clicked, this, &MainWindow::openFileDialog);
    connect(openProj, &QPushButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(
            this, tr("Open Project"), QString(), tr("lcw projects (*.lcwproj);;All files (*)"));
        if (!p.isEmpty()) openProject(p);
    });
    buttons->addStretch();
    buttons->addWidget(openFolder);
    buttons->addWidget(openFile);
    buttons->addWidget(openProj);
    buttons->addStretch();
    lay->addWidget(title);
    lay->addSpacing(8);
    lay->addWidget(hint);
    lay->addSpacing(16);
    lay->addLayout(buttons);
    lay->addSpacing(16);
    // The most recent models and projects, one click each.
    auto* recentBox = new QWidget(page);
    auto* recentLay = new QVBoxLayout(recentBox);
    recentLay->setContentsMargins(0, 0, 0, 0);
    recentLay->setSpacing(0);
    lay->addWidget(recentBox, 0, Qt::AlignHCenter);
    auto rebuildRecent = [this, recentBox, recentLay] {
        while (QLayoutItem* item = recentLay->takeAt(0)) {
            // Later: the clicked button may be the one whose click removed its entry.
            if (QWidget* w = item->widget()) {
                w->hide();
                w->deleteLater();
            }
            delete item;
        }
        auto add = [&](const QString& heading, const QStringList& paths, auto open) {
            if (paths.isEmpty()) return;
            auto* h = new QLabel(heading, recentBox);
            h->setForegroundRole(QPalette::PlaceholderText);
            recentLay->addWidget(h);
            for (const QString& path : paths.mid(0, 5)) {
                auto* b = new QPushButton(QDir::toNativeSeparators(path), recentBox);
                b->setObjectName(QStringLiteral("welcomeRecent"));
                b->setFlat(true);
                b->setToolTip(path);
                b->setStyleSheet(QStringLiteral("text-align: left"));
                connect(b, &QPushButton::clicked, this, [open, path] { open(path); });
                recentLay->addWidget(b);
            }
        };
        add(tr("Recent models"), m_recentModels->items(),
            [this](const QString& p) { openRecent(p); });
        add(tr("Recent projects"), m_recentProjects->items(),
            [this](const QString& p) { openProject(p); });
    };
    connect(m_recentModels, &RecentList::changed, page, rebuildRecent);
    connect(m_recentProjects, &RecentList::changed, page, rebuildRecent);
    rebuildRecent();
    lay->addSpacing(16);
    auto* keys = new QLabel(tr("Ctrl+O open a file  ·  Ctrl+Shift+O open a folder  ·  "
                               "Ctrl+1…9, 0 show panels  ·  Ctrl+Shift+T switch theme"),
                            page);
    keys->setAlignment(Qt::AlignCenter);
    keys->setForegroundRole(QPalette::PlaceholderText);
    lay->addWidget(keys);
    lay->addStretch(3);
    return page;
}

QWidget* MainWindow::buildLayersPanel() {
    // A filter line over the tensor table.
    auto* right = new QWidget(this);
    auto* rl = new QVBoxLayout(right);
    rl->setContentsMargins(6, 6, 6, 6);
    rl->setSpacing(4);
    auto* filterRow = new QHBoxLayout;
    m_filter = new QLineEdit(right);
    m_filter->setPlaceholderText(tr("Filter tensors: text, glob (layers.*.mlp.down) or re:regex"));
    m_filter->setClearButtonEnabled(true);
    m_filterCount = new QLabel(right);
    m_filterCount->setMinimumWidth(120);
    m_filterCount->setAlignment(Qt::AlignRight | Qt::AlignVCenter);
    filterRow->addWidget(m_filter, 1);
    filterRow->addWidget(m_filterCount);
    rl->addLayout(filterRow);

    m_layerModel = new LayerTableModel(this);
    m_proxy = new QSortFilterProxyModel(this);
    m_proxy->setSourceModel(m_layerModel);
    m_proxy->setSortRole(LayerTableModel::SortRole);
    m_proxy->setFilterKeyColumn(-1);
    m_proxy->setFilterCaseSensitivity(Qt::CaseInsensitive);
    m_proxy->setSortCaseSensitivity(Qt::CaseInsensitive);

    m_table = new QTableView(right);
    m_table->setModel(m_proxy);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_table->setAlternatingRowColors(true);
    m_table->setWordWrap(false);
    m_table->setTextElideMode(Qt::ElideMiddle);
    m_table->verticalHeader()->setVisible(false);
    m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 8);
    m_table->horizontalHeader()->setHighlightSections(false);
    // Names are what people read: never elide them (a narrow dock scrolls instead); the last
    // column takes any spare width.
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->horizontalHeader()->setSectionsMovable(true); // drag a header to reorder
    // Fitting columns to their contents measures every cell through the delegate; a few dozen
    // rows tell the width of the number columns well enough and keep opening a model with
    // thousands of tensors quick. The name column is sized from every name (setModel()).
    m_table->horizontalHeader()->setResizeContentsPrecision(64);
    // -1 keeps file order until the user clicks a header.
    m_table->horizontalHeader()->setSortIndicator(-1, Qt::AscendingOrder);
    m_table->setSortingEnabled(true);
    rl->addWidget(m_table, 1);
    connect(m_table->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
            &MainWindow::onCurrentRowChanged);

    auto* copy = new QAction(tr("Copy Rows as TSV"), m_table);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    connect(copy, &QAction::triggered, this, [this] { copySelectedRows(); });
    auto* selectAll = new QAction(tr("Select All"), m_table);
    selectAll->setShortcut(QKeySequence::SelectAll);
    selectAll->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    connect(selectAll, &QAction::triggered, m_table, &QTableView::selectAll);
    m_table->addAction(copy);
    m_table->addAction(selectAll);
    m_table->setContextMenuPolicy(Qt::ActionsContextMenu);

    connect(m_filter, &QLineEdit::textChanged, this, &MainWindow::setLayerFilter);
    connect(m_proxy, &QAbstractItemModel::rowsInserted, this, &MainWindow::updateFilterCount);
    connect(m_proxy, &QAbstractItemModel::rowsRemoved, this, &MainWindow::updateFilterCount);
    connect(m_proxy, &QAbstractItemModel::modelReset, this, &MainWindow::updateFilterCount);
    connect(m_proxy, &QAbstractItemModel::layoutChanged, this, &MainWindow::updateFilterCount);

    return right;
}

void MainWindow::buildMenus() {
    buildFileMenu();
    QMenu* view = menuBar()->addMenu(tr("&View"));
    buildEditMenu();
    buildViewMenu(view);
    buildRunMenu();
    buildStatisticsMenu();
    QMenu* help = menuBar()->addMenu(tr("&Help"));
    QAction* about = help->addAction(tr("&About lcw"), this, &MainWindow::showAbout);
    about->setMenuRole(QAction::AboutRole);
    help->addAction(tr("About &Qt"), qApp, &QApplication::aboutQt);
    buildInspectMenus(view, help);
}

void MainWindow::buildFileMenu() {
    QMenu* file = menuBar()->addMenu(tr("&File"));
    QAction* openFolder =
        file->addAction(tr("Open Model &Folder…"), this, &MainWindow::openFolderDialog);
    openFolder->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_O));
    openFolder->setIcon(style()->standardIcon(QStyle::SP_DirOpenIcon));
    QAction* openFile = file->addAction(tr("&Open Model File…"), this, &MainWindow::openFileDialog);
    openFile->setShortcut(QKeySequence::Open);
    openFile->setIcon(style()->standardIcon(QStyle::SP_FileIcon));
    m_recentModels->attachMenu(
        file->addMenu(tr("Open &Recent")), [this](const QString& p) { openRecent(p); }, true, true);
    file->addSeparator();
    buildProjectMenu(file);
    file->addSeparator();
    QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
    quit->setShortcut(QKeySequence::Quit);
    quit->setMenuRole(QAction::QuitRole);
}

void MainWindow::buildEditMenu() {
    QMenu* edit = menuBar()->addMenu(tr("&Edit"));
    // The recipe editor's own actions: one shortcut owner for Ctrl+Z / Ctrl+Shift+Z.
    QAction* undo = m_recipeEditor->undoStack()->createUndoAction(this, tr("&Undo"));
    undo->setShortcut(QKeySequence::Undo);
    QAction* redo = m_recipeEditor->undoStack()->createRedoAction(this, tr("&Redo"));
    redo->setShortcuts({QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_Z), QKeySequence::Redo});
    edit->addAction(undo);
    edit->addAction(redo);
}

// One entry per panel: the View menu's checkable entry and a Ctrl+digit shortcut that shows it.
void MainWindow::buildViewMenu(QMenu* view) {
    const std::pair<Panel, int> panels[] = {
        {Panel::Summary, Qt::Key_1},    {Panel::Layers, Qt::Key_2},  {Panel::Plot, Qt::Key_3},
        {Panel::Run, Qt::Key_4},        {Panel::Log, Qt::Key_5},     {Panel::Stats, Qt::Key_6},
        {Panel::Recipe, Qt::Key_7},     {Panel::Compare, Qt::Key_8}, {Panel::Results, Qt::Key_9},
        {Panel::Sensitivity, Qt::Key_0}};
    for (const auto& [panel, key] : panels) {
        QDockWidget* d = dock(panel);
        // The View menu's checkable entry hides and shows the panel; its shortcut only ever
        // shows it (and brings it to the front of its tab group), as the welcome page says.
        QAction* toggle = d->toggleViewAction();
        const QKeySequence seq(int(Qt::CTRL) | key);
        toggle->setText(d->windowTitle() + QLatin1Char('\t') +
                        seq.toString(QKeySequence::NativeText));
        // Asking for a panel from the welcome page brings up the whole layout first.
        connect(toggle, &QAction::triggered, this, [this, d](bool on) {
            if (m_panelsActive) return;
            activatePanels();
            d->setVisible(on);
            if (on) d->raise();
        });
        view->addAction(toggle);
        auto* show = new QAction(tr("Show %1").arg(d->windowTitle()), this);
        show->setShortcut(seq);
        connect(show, &QAction::triggered, this, [this, panel] { showPanel(panel); });
        addAction(show);
    }
    view->addSeparator();
    QAction* filter = view->addAction(tr("&Filter Tensors…"), this, [this] {
        showPanel(Panel::Layers);
        m_filter->setFocus(Qt::ShortcutFocusReason);
        m_filter->selectAll();
    });
    filter->setShortcut(QKeySequence::Find);
    view->addAction(tr("&Reset Layout"), this, &MainWindow::resetLayout);
    view->addAction(tr("&Inspector Layout"), this, &MainWindow::applyInspectorLayout);
    view->addSeparator();
    buildThemeMenu(view->addMenu(tr("&Theme")));
}

void MainWindow::buildThemeMenu(QMenu* themes) {
    m_themeGroup = new QActionGroup(this);
    m_themeGroup->setExclusive(true);
    for (const Theme t : {Theme::Light, Theme::Dark}) {
        QAction* a = themes->addAction(t == Theme::Light ? tr("&Light") : tr("&Dark"));
        a->setCheckable(true);
        a->setData(themeName(t));
        a->setChecked(t == m_theme);
        m_themeGroup->addAction(a);
        connect(a, &QAction::triggered, this, [this, t] { setTheme(t); });
    }
    themes->addSeparator();
    QAction* toggleTheme = themes->addAction(tr("&Switch Theme"), this, [this] {
        setTheme(m_theme == Theme::Light ? Theme::Dark : Theme::Light);
    });
    toggleTheme->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_T));
}

void MainWindow::buildRunMenu() {
    QMenu* run = menuBar()->addMenu(tr("&Run"));
    m_actGenerate =
        run->addAction(style()->standardIcon(QStyle::SP_MediaPlay), tr("&Generate"), this, [this] {
            showPanel(Panel::Run);
            m_runPanel->generate();
        });
    m_actGenerate->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Return));
    m_actStop = run->addAction(style()->standardIcon(QStyle::SP_MediaStop), tr("&Stop Generation"),
                               m_runPanel, &RunPanel::stopGeneration);
    m_actStop->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Period));
    run->addSeparator();
    m_actPerplexity = run->addAction(tr("Measure &Perplexity"), this, [this] {
        showPanel(Panel::Run);
        m_runPanel->runPerplexity();
    });
    m_actPerplexity->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_Return));
    m_actCancelPerplexity =
        run->addAction(tr("&Cancel Perplexity"), m_runPanel, &RunPanel::cancelPerplexity);
    run->addSeparator();
    QAction* measure =
        run->addAction(tr("Measure Layer &Errors"), this, [this] { measureLayerErrors(); });
    measure->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_E));
    m_actComputeImatrix = run->addAction(tr("Compute &Importance Matrix…"), this,
                                         &MainWindow::showComputeImatrixDialog);
    run->addSeparator();
    QAction* cancelAll = run->addAction(tr("Cancel &All Jobs"), m_runner, &TaskRunner::cancelAll);
    cancelAll->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_Period));
    auto syncRunActions = [this] {
        m_actGenerate->setEnabled(m_runPanel->generateButton()->isEnabled());
        m_actStop->setEnabled(m_runPanel->stopButton()->isEnabled());
        m_actPerplexity->setEnabled(m_runPanel->perplexityRunButton()->isEnabled());
        m_actCancelPerplexity->setEnabled(m_runPanel->perplexityCancelButton()->isEnabled());
    };
    connect(m_runPanel, &RunPanel::stateChanged, this, syncRunActions);
    syncRunActions();
}

void MainWindow::buildStatisticsMenu() {
    QMenu* statsMenu = menuBar()->addMenu(tr("&Statistics"));
    m_actComputeStats = statsMenu->addAction(tr("&Compute…"), this, [this] {
        showPanel(Panel::Stats);
        m_statsPanel->showComputeDialog();
    });
    m_actComputeStats->setShortcut(QKeySequence(Qt::CTRL | Qt::ALT | Qt::Key_S));
    m_actCancelStats =
        statsMenu->addAction(tr("C&ancel Computation"), m_statsPanel, &StatsPanel::cancelCompute);
    statsMenu->addSeparator();
    statsMenu->addAction(tr("Open Cache &Folder"), this, [] {
        QDir().mkpath(StatsPanel::cacheDir());
        QDesktopServices::openUrl(QUrl::fromLocalFile(StatsPanel::cacheDir()));
    });
    auto syncStatsActions = [this] {
        m_actComputeStats->setEnabled(m_model && !m_statsPanel->isComputing());
        m_actCancelStats->setEnabled(m_statsPanel->isComputing());
    };
    connect(m_runner, &TaskRunner::busyChanged, this, syncStatsActions);
    connect(this, &MainWindow::modelLoaded, this, syncStatsActions);
    syncStatsActions();
    auto syncImatrixActions = [this] {
        m_actComputeImatrix->setEnabled(m_model && m_model->hasTokenizer() &&
                                        !m_imatrix->isComputing());
        m_actSaveImatrix->setEnabled(bool(m_imatrix->imatrix()));
    };
    connect(m_runner, &TaskRunner::busyChanged, this, syncImatrixActions);
    connect(this, &MainWindow::modelLoaded, this, syncImatrixActions);
    connect(m_imatrix, &ImatrixManager::changed, this, syncImatrixActions);
    syncImatrixActions();
}

// ---------------------------------------------------------------------------------------------
// Opening

void MainWindow::openFolderDialog() {
    const QString start = m_recentModels->items().isEmpty()
                              ? QDir::homePath()
                              : QFileInfo(m_recentModels->newest()).absolutePath();
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open Model Folder"), start);
    if (!dir.isEmpty()) openModelChoosingSnapshot(dir);
}

void MainWindow::openFileDialog() {
    const QString start = m_recentModels->items().isEmpty()
                              ? QDir::homePath()
                              : QFileInfo(m_recentModels->newest()).absolutePath();
    const QString file = QFileDialog::getOpenFileName(
        this, tr("Open Model File"), start,
        tr("Model files (*.gguf *.bin *.safetensors);;GGUF (*.gguf);;llama2.c checkpoints "
           "(*.bin);;safetensors (*.safetensors);;All files (*)"));
    if (!file.isEmpty()) openModel(file);
}

void MainWindow::openRecent(const QString& path) {
    if (!QFileInfo::exists(path)) {
        m_recentModels->remove(path);
        showError(tr("Open Recent"), tr("%1 no longer exists and was removed from the recent list.")
                                         .arg(QDir::toNativeSeparators(path)));
        return;
    }
    openModel(path);
}

void MainWindow::openModel(const QString& path) {
    if (path.isEmpty()) return;
    if (!m_skipUnsavedPrompt &&
        !confirmUnsavedChanges(tr("opening %1").arg(QDir::toNativeSeparators(path))))
        return;
    // A newer request replaces an older one: Model::load cannot be interrupted, but its result
    // will be discarded and the new load starts right after it.
    if (m_loadJob != 0) m_runner->cancel(m_loadJob);
    // Switching models: keep the current work in the autosave file first.
    if (m_model) autosave();

    const QString absPath = QFileInfo(path).absoluteFilePath();
    const std::string stdPath = QDir::cleanPath(absPath).toStdString();
    const QString name = displayName(absPath);
    std::function<LoadResult(Progress&)> job = [stdPath, name](Progress& p) {
        QElapsedTimer timer;
        timer.start();
        p.report(0.0, ("reading " + name).toStdString());
        LoadResult r;
        r.model = Model::load(stdPath);
        r.seconds = double(timer.nsecsElapsed()) * 1e-9;
        p.report(1.0, "done");
        return r;
    };
    statusBar()->showMessage(tr("Loading %1…").arg(QDir::toNativeSeparators(absPath)));
    // The panels come up now, empty, while the model loads: laying out and painting them the
    // first time then happens in its own turn of the event loop, not in the one that fills them
    // (a load that fails with no model open returns to the welcome page).
    activatePanels();
    // The callbacks learn their own id after submit() returns (they run later, on this thread).
    auto self = std::make_shared<TaskRunner::JobId>(0);
    *self = m_runner->submit<LoadResult>(
        tr("Loading %1").arg(name), std::move(job), this,
        [this, absPath, self](LoadResult r) {
            if (m_loadJob == *self) m_loadJob = 0;
            setModel(std::move(r), absPath);
        },
        [this, absPath, self](const QString& message) {
            if (m_loadJob != *self) return; // superseded by a newer request
            m_loadJob = 0;
            m_pendingProject.reset();
            if (!m_model) deactivatePanels();
            statusBar()->showMessage(tr("Could not open %1").arg(displayName(absPath)), 10000);
            emit loadFailed(absPath, message);
            showError(tr("Could not open model"),
                      tr("Could not open %1").arg(QDir::toNativeSeparators(absPath)), message);
        },
        [this, self] {
            if (m_loadJob != *self) return;
            m_loadJob = 0;
            statusBar()->showMessage(tr("Loading cancelled"), 5000);
        });
    m_loadJob = *self;
}

void MainWindow::setModel(LoadResult result, const QString& path) {
    if (!result.model) return;
    const double seconds = result.seconds;
    // The previous model is released below, off the UI thread (unmapping gigabytes of touched
    // pages takes a noticeable fraction of a second).
    std::shared_ptr<const Model> previous = std::exchange(m_model, std::move(result.model));
    m_fingerprintToCheck.clear();
    m_modelPath = path;
    m_blocks = blockSizes(*m_model);
    m_summary->setModel(m_model.get());
    m_layerModel->setModel(m_model);
    m_runPanel->setModel(m_model);
    m_statsPanel->setModel(m_model, path);
    m_recipeEditor->setModel(m_model);
    m_comparePanel->setModel(m_model);
    m_sensitivityPanel->setModel(m_model);
    m_imatrix->setModel(m_model);
    m_table->resizeColumnsToContents();
    // Give the other columns room for their header plus sort arrow.
    for (int c = LayerTableModel::Layer; c < LayerTableModel::ColumnCount; ++c)
        m_table->setColumnWidth(c, m_table->columnWidth(c) + 16);
    // Names are never elided: the widest of them all (a text advance each, no layout) plus the
    // cell margins the contents fit gave the sampled rows.
    const QFontMetrics fm(m_table->font());
    int nameWidth =
        fm.horizontalAdvance(
            m_layerModel->headerData(LayerTableModel::Name, Qt::Horizontal).toString()) +
        16;
    for (const auto& t : m_model->tensors())
        nameWidth = std::max(nameWidth, fm.horizontalAdvance(QString::fromStdString(t.name)));
    const int margins = 4 * m_table->style()->pixelMetric(QStyle::PM_FocusFrameHMargin) + 16;
    m_table->setColumnWidth(
        LayerTableModel::Name,
        std::max(m_table->columnWidth(LayerTableModel::Name), nameWidth + margins));
    updatePlot();
    updateFilterCount();
    activatePanels();
    setWindowFilePath(path);
    updateWindowTitle();
    m_recentModels->add(path);
    const QString took = seconds < 1.0 ? tr("%1 ms").arg(qRound(seconds * 1000.0))
                                       : tr("%1 s").arg(seconds, 0, 'f', 2);
    const QString loaded = tr("Loaded %1: %2 tensors, %3 parameters in %4")
                               .arg(displayName(path))
                               .arg(m_model->tensors().size())
                               .arg(formatCountShort(m_model->parameterCount()), took);
    statusBar()->showMessage(loaded);
    m_log->info(loaded + QStringLiteral(" (") + QDir::toNativeSeparators(path) + QLatin1Char(')'));
    emit modelLoaded(path);
    afterModelSwitch(bool(previous)); // asks about the recipe (not for a project's model)
    if (m_pendingProject) applyProject();
    // Every panel holds the new model now; a job still running keeps its own reference. Not
    // on Qt's global pool: the raster paint engine hands work to it and waits for it.
    if (previous)
        m_savePool.start([previous = std::move(previous)]() mutable {
            lowerThreadPriority();
            previous.reset();
        });
}

void MainWindow::updatePlot() {
    if (m_blocks.empty()) {
        m_plot->clear();
        return;
    }
    int64_t maxParams = 0;
    for (const auto& b : m_blocks) maxParams = std::max(maxParams, b.parameters);
    // Scale only to keep axis tick labels short; tooltips show exact numbers.
    double scale = 1.0;
    QString unit;
    if (maxParams >= 1'000'000'000) {
        scale = 1e9;
        unit = QStringLiteral(" (billions)");
    } else if (maxParams >= 1'000'000) {
        scale = 1e6;
        unit = QStringLiteral(" (millions)");
    } else if (maxParams >= 10'000) {
        scale = 1e3;
        unit = QStringLiteral(" (thousands)");
    }
    QStringList labels;
    QVector<double> values;
    QVector<int> groups;
    for (const auto& b : m_blocks) {
        labels << QString::fromStdString(b.label);
        values << double(b.parameters) / scale;
        groups << (b.layer >= 0 ? 1 : 0);
    }
    m_plot->setValueAxisLabel(tr("parameters%1").arg(unit));
    m_plot->setBars(labels, values, groups, {tr("embedding / head"), tr("transformer layers")});
}

QString MainWindow::displayName(const QString& path) {
    const QFileInfo fi(QDir::cleanPath(path));
    if (!fi.isDir()) return fi.fileName();
    // Folders called "hf" or "model" say little on their own: prefix the parent's name.
    static const QStringList generic = {"hf",         "model",       "models",   "weights",
                                        "checkpoint", "safetensors", "snapshot", "main"};
    const QString name = fi.fileName();
    if (generic.contains(name, Qt::CaseInsensitive)) {
        const QString parent = QFileInfo(fi.absolutePath()).fileName();
        if (!parent.isEmpty()) return parent + QLatin1Char('/') + name;
    }
    return name;
}

// ---------------------------------------------------------------------------------------------
// Table

void MainWindow::onCurrentRowChanged() {
    const QModelIndex cur = m_table->selectionModel()->currentIndex();
    if (!cur.isValid()) return;
    const QString name =
        m_proxy->index(cur.row(), LayerTableModel::Name).data(Qt::DisplayRole).toString();
    if (!name.isEmpty()) m_statsPanel->showTensor(name);
}

bool MainWindow::selectTensor(const QString& name) {
    auto find = [this, &name]() -> QModelIndex {
        for (int r = 0; r < m_proxy->rowCount(); ++r) {
            const QModelIndex i = m_proxy->index(r, LayerTableModel::Name);
            if (i.data(Qt::DisplayRole).toString() == name) return i;
        }
        return {};
    };
    QModelIndex idx = find();
    if (!idx.isValid() && !m_filter->text().isEmpty()) {
        setLayerFilter(QString());
        idx = find();
    }
    if (!idx.isValid()) return false;
    m_table->selectionModel()->setCurrentIndex(idx, QItemSelectionModel::ClearAndSelect |
                                                        QItemSelectionModel::Rows);
    m_table->scrollTo(idx);
    return true;
}

void MainWindow::setLayerFilter(const QString& text) {
    if (m_filter->text() != text) {
        m_filter->setText(text); // re-enters through textChanged
        return;
    }
    QRegularExpression re;
    const QString t = text.trimmed();
    if (t.startsWith(QStringLiteral("re:")))
        re.setPattern(t.mid(3));
    else if (t.contains(QLatin1Char('*')) || t.contains(QLatin1Char('?')))
        re.setPattern(globToRegex(t));
    else
        re.setPattern(QRegularExpression::escape(t));
    re.setPatternOptions(QRegularExpression::CaseInsensitiveOption);
    const bool valid = re.isValid();
    m_filter->setStyleSheet(valid ? QString() : QStringLiteral("QLineEdit { color: #b00020; }"));
    m_filter->setToolTip(valid ? QString()
                               : tr("Invalid regular expression: %1").arg(re.errorString()));
    if (valid) m_proxy->setFilterRegularExpression(re);
    updateFilterCount();
}

void MainWindow::updateFilterCount() {
    if (!m_filterCount) return;
    const int total = m_layerModel->rowCount();
    const int shown = m_proxy->rowCount();
    m_filterCount->setText(shown == total ? tr("%1 tensors").arg(total)
                                          : tr("%1 of %2 tensors").arg(shown).arg(total));
}

QString MainWindow::copySelectedRows() {
    QModelIndexList rows = m_table->selectionModel()->selectedRows();
    std::sort(rows.begin(), rows.end(),
              [](const QModelIndex& a, const QModelIndex& b) { return a.row() < b.row(); });
    QModelIndexList source;
    for (const QModelIndex& r : rows) source << m_proxy->mapToSource(r);
    if (source.isEmpty()) return {};
    const QString tsv = m_layerModel->rowsAsTsv(source);
    QApplication::clipboard()->setText(tsv);
    statusBar()->showMessage(tr("Copied %n row(s)", nullptr, int(source.size())), 3000);
    return tsv;
}

// ---------------------------------------------------------------------------------------------
// Recent files, settings, dialogs

QStringList MainWindow::recentFiles() const {
    return m_recentModels->items();
}

void MainWindow::clearRecentFiles() {
    m_recentModels->clear();
}

QStringList MainWindow::recentProjects() const {
    return m_recentProjects->items();
}

QStringList MainWindow::recentRecipes() const {
    return m_recentRecipes->items();
}

bool MainWindow::openRecipeFile(const QString& path) {
    if (!QFileInfo::exists(path)) {
        m_recentRecipes->remove(path);
        showError(tr("Open Recipe"), tr("%1 no longer exists and was removed from the recent list.")
                                         .arg(QDir::toNativeSeparators(path)));
        return false;
    }
    QString error;
    if (!m_recipeEditor->openRecipe(path, &error)) {
        showError(tr("Open Recipe"),
                  tr("Could not open the recipe %1").arg(QDir::toNativeSeparators(path)), error);
        return false;
    }
    showPanel(Panel::Recipe);
    return true;
}

void MainWindow::showError(const QString& title, const QString& text, const QString& details) {
    const QString full = details.isEmpty() ? text : text + QStringLiteral(":\n") + details;
    m_log->error(full);
    emit errorShown(full);
    if (!m_options.modalDialogs) return;
    QMessageBox box(QMessageBox::Critical, title, text, QMessageBox::Ok, this);
    if (!details.isEmpty()) box.setInformativeText(details);
    box.exec();
}

void MainWindow::showAbout() {
    QMessageBox::about(
        this, tr("About lcw"),
        tr("<h3>lcw %1</h3><p>LLM Compression Workbench: inspect a model, gather activation "
           "statistics, try quantization, pruning and low-rank recipes per layer, and measure "
           "what they cost.</p><p>Built with Qt %2 and QCustomPlot.</p>")
            .arg(QString::fromLatin1(version()), QString::fromLatin1(qVersion())));
}

void MainWindow::readSettings() {
    QSettings s;
    if (const QByteArray g = s.value(kGeometryKey).toByteArray(); !g.isEmpty()) restoreGeometry(g);
    // Applied when the panels first appear (the welcome page shows none).
    m_savedState = s.value(kStateKey).toByteArray();
    // Without a saved choice, the theme that matches the platform's palette.
    setTheme(themeFromName(s.value(kThemeKey).toString()).value_or(m_theme));
    m_runPanel->readSettings(s);
    m_statsPanel->readSettings(s);
    m_recentModels->load();
    m_recentProjects->load();
    m_recentRecipes->load();
    setAutosaveMinutes(s.value(kAutosaveKey, kDefaultAutosaveMinutes).toInt());
    // After the window is up: an autosave left by a session that did not close cleanly.
    QTimer::singleShot(0, this, &MainWindow::offerAutosaveRecovery);
}

void MainWindow::writeSettings() const {
    QSettings s;
    s.setValue(kGeometryKey, saveGeometry());
    // Before the panels appeared there is no layout of this session to keep.
    if (m_panelsActive) s.setValue(kStateKey, saveState(kStateVersion));
    s.setValue(kThemeKey, themeName(m_theme));
    m_runPanel->writeSettings(s);
    m_statsPanel->writeSettings(s);
    // The recent lists store themselves on every change.
}

void MainWindow::closeEvent(QCloseEvent* event) {
    if (!m_closeConfirmed && !confirmUnsavedChanges(tr("quitting"))) {
        event->ignore();
        return;
    }
    m_closeConfirmed = true;
    if (m_options.useSettings) writeSettings();
    // Quit with a job running: cancel it and close once it has stopped (jobs stop within a block
    // of their forward pass), so the window never disappears while the process keeps working.
    // Quitting again after 5 s closes at once (the runner's destructor then waits for the job).
    if (m_runner->isBusy() && !(m_quitRequested.isValid() && m_quitRequested.elapsed() > 5000)) {
        m_runner->cancelAll();
        if (!m_quitRequested.isValid()) {
            m_quitRequested.start();
            statusBar()->showMessage(tr("Stopping the running job before quitting…"));
            connect(m_runner, &TaskRunner::busyChanged, this, [this](bool busy) {
                if (!busy) QMetaObject::invokeMethod(this, &QWidget::close, Qt::QueuedConnection);
            });
        }
        event->ignore();
        return;
    }
    // A running load cannot be interrupted inside Model::load; ask it to stop so the runner's
    // destructor waits only for the current step.
    m_runner->cancelAll();
    // A clean exit leaves nothing to recover (once no write can bring the file back).
    waitForSaves();
    if (m_options.useSettings) QFile::remove(autosavePath());
    m_closeConfirmed = false; // a window shown again asks again
    event->accept();
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
    const QMimeData* mime = event->mimeData();
    if (mime->hasUrls() && !mime->urls().isEmpty() && mime->urls().front().isLocalFile())
        event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event) {
    const QList<QUrl> urls = event->mimeData()->urls();
    if (urls.isEmpty() || !urls.front().isLocalFile()) return;
    event->acceptProposedAction();
    openModelChoosingSnapshot(urls.front().toLocalFile());
}

// ---------------------------------------------------------------------------------------------
// Recipe columns, projects, autosave, export

void MainWindow::updatePlannedColumns() {
    QHash<QString, LayerTableModel::PlannedSetting> planned;
    if (const compress::Plan* plan = m_recipeEditor->plan())
        for (const compress::LayerPlan& l : plan->layers)
            planned.insert(QString::fromStdString(l.name),
                           {QString::fromStdString(l.describe()),
                            // exact for every stage: bits per weight of the base tensor
                            m_recipeEditor->plannedBitsPerWeight(l.name)});
    if (const compress::SizeEstimate* est = m_recipeEditor->sizeEstimate())
        for (const auto& [name, size] : est->tensors) // shrunk by structured removal alone
            if (const QString n = QString::fromStdString(name); !planned.contains(n))
                planned.insert(n,
                               {tr("structured only"), m_recipeEditor->plannedBitsPerWeight(name)});
    m_layerModel->setPlannedSettings(planned);
    // Widen (never narrow: the user may have sized them) the columns the recipe fills.
    for (int c : {int(LayerTableModel::Setting), int(LayerTableModel::BitsPerWeight),
                  int(LayerTableModel::Error)}) {
        const int before = m_table->columnWidth(c);
        m_table->resizeColumnToContents(c);
        m_table->setColumnWidth(c, std::max(before, m_table->columnWidth(c) + 16));
    }
    if (m_layerModel->hasMeasuredErrors())
        m_layerModel->setErrorsStale(m_recipeEditor->recipe().toJson().dump() != m_measuredRecipe);
    m_statsPanel->refreshRecipeGrid();
}

void MainWindow::sortTensorTable(int column, Qt::SortOrder order) {
    m_table->sortByColumn(column, order);
}

void MainWindow::moveTensorColumn(int column, int visualIndex) {
    QHeaderView* h = m_table->horizontalHeader();
    h->moveSection(h->visualIndex(column), visualIndex);
}

bool MainWindow::measureLayerErrors() {
    if (!m_model) {
        showError(tr("Measure Layer Errors"), tr("Open a model first."));
        return false;
    }
    if (m_errorJob) return false;
    const compress::Recipe recipe = m_recipeEditor->recipe();
    const std::string recipeJson = recipe.toJson().dump();
    const QString recipeName =
        recipe.name.empty() ? tr("the editor's recipe") : QString::fromStdString(recipe.name);
    std::shared_ptr<const Model> model = m_model;
    using Errors = QHash<QString, LayerTableModel::MeasuredError>;
    std::function<std::optional<Errors>(Progress&)> job =
        [model, recipe](Progress& p) -> std::optional<Errors> {
        const compress::CompressResult r =
            compress::compressWithBundledCalibration(*model, recipe, p);
        if (r.status == Status::Cancelled) return std::nullopt;
        Errors out;
        for (const compress::LayerReport& l : r.layers)
            out.insert(QString::fromStdString(l.name), {l.error.relError, l.outputRelError});
        return out;
    };
    auto self = std::make_shared<TaskRunner::JobId>(0);
    *self = m_runner->submit<std::optional<Errors>>(
        tr("Layer errors (%1)").arg(recipeName), std::move(job), this,
        [this, self, recipeJson, recipeName](std::optional<Errors> errors) {
            if (m_errorJob == *self) m_errorJob = 0;
            if (!errors) return;
            m_measuredRecipe = recipeJson;
            m_layerModel->setMeasuredErrors(*errors, recipeName);
            updatePlannedColumns(); // stale already when the recipe changed meanwhile
            double worst = 0;
            QString worstName;
            for (auto it = errors->cbegin(); it != errors->cend(); ++it)
                if (it.value().weight > worst) {
                    worst = it.value().weight;
                    worstName = it.key();
                }
            m_log->info(tr("Measured layer errors of %1: %2 layers, largest %3 (%4)")
                            .arg(recipeName)
                            .arg(errors->size())
                            .arg(worst, 0, 'g', 3)
                            .arg(worstName));
            emit errorsMeasured(int(errors->size()));
        },
        [this, self](const QString& message) {
            if (m_errorJob == *self) m_errorJob = 0;
            showError(tr("Measure Layer Errors"), tr("Could not compress with the recipe"),
                      message);
        },
        [this, self] {
            if (m_errorJob == *self) m_errorJob = 0;
        });
    m_errorJob = *self;
    return true;
}

void MainWindow::buildProjectMenu(QMenu* file) {
    file->addAction(tr("&New Project"), this, [this] { closeProject(); });
    QAction* open = file->addAction(tr("Open &Project…"), this, [this] {
        const QString p = QFileDialog::getOpenFileName(
            this, tr("Open Project"), QString(), tr("lcw projects (*.lcwproj);;All files (*)"));
        if (!p.isEmpty()) openProject(p);
    });
    open->setShortcut(QKeySequence(Qt::CTRL | Qt::ALT | Qt::Key_O));
    m_recentProjects->attachMenu(file->addMenu(tr("Recent Pro&jects")),
                                 [this](const QString& p) { openProject(p); });
    auto saveAs = [this] {
        QString p = QFileDialog::getSaveFileName(
            this, tr("Save Project"),
            m_projectPath.isEmpty() ? QStringLiteral("project.lcwproj") : m_projectPath,
            tr("lcw projects (*.lcwproj)"));
        if (p.isEmpty()) return;
        if (QFileInfo(p).suffix().isEmpty()) p += QStringLiteral(".lcwproj");
        saveProject(p);
    };
    QAction* save = file->addAction(tr("&Save Project"), this, [this, saveAs] {
        if (m_projectPath.isEmpty())
            saveAs();
        else
            saveProject(m_projectPath);
    });
    save->setShortcut(QKeySequence::Save);
    QAction* saveAsAct = file->addAction(tr("Save Project &As…"), this, saveAs);
    saveAsAct->setShortcut(QKeySequence::SaveAs);
    file->addAction(tr("&Close Project"), this, [this] { closeProject(); });
    file->addSeparator();
    file->addAction(tr("Open Re&cipe…"), this, [this] {
        const QString start = m_recentRecipes->items().isEmpty()
                                  ? QString()
                                  : QFileInfo(m_recentRecipes->newest()).absolutePath();
        const QString p = QFileDialog::getOpenFileName(this, tr("Open Recipe"), start,
                                                       tr("Recipes (*.json);;All files (*)"));
        if (!p.isEmpty()) openRecipeFile(p);
    });
    m_recentRecipes->attachMenu(file->addMenu(tr("Recent Rec&ipes")),
                                [this](const QString& p) { openRecipeFile(p); });
    file->addSeparator();
    file->addAction(tr("Open I&mportance Matrix…"), this, [this] {
        if (!m_model) {
            showError(tr("Open Importance Matrix"), tr("Open a model first."));
            return;
        }
        const QString start =
            m_imatrix->path().isEmpty()
                ? (QFileInfo(m_modelPath).isDir() ? m_modelPath
                                                  : QFileInfo(m_modelPath).absolutePath())
                : QFileInfo(m_imatrix->path()).absolutePath();
        const QString p =
            QFileDialog::getOpenFileName(this, tr("Open Importance Matrix"), start,
                                         tr("Importance matrices (*.dat);;All files (*)"));
        if (!p.isEmpty()) openImatrix(p);
    });
    m_actSaveImatrix = file->addAction(tr("Save Importance Matri&x…"), this, [this] {
        const QString p = QFileDialog::getSaveFileName(
            this, tr("Save Importance Matrix"),
            m_imatrix->path().isEmpty() ? QStringLiteral("imatrix.dat") : m_imatrix->path(),
            tr("Importance matrices (*.dat);;All files (*)"));
        if (!p.isEmpty()) saveImatrix(p);
    });
    file->addSeparator();
    QAction* exp = file->addAction(tr("&Export…"), this, [this] { showExportDialog(); });
    exp->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
    QAction* gguf = file->addAction(tr("Export &GGUF (llama.cpp)…"), this, [this] {
        if (!m_model) {
            showError(tr("Export GGUF"), tr("Open a model first."));
            return;
        }
        showExportDialog(ExportDialog::Page::Gguf);
    });
    gguf->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_G));
    m_autosaveTimer = new QTimer(this);
    connect(m_autosaveTimer, &QTimer::timeout, this, &MainWindow::autosave);
    setAutosaveMinutes(kDefaultAutosaveMinutes);
}

void MainWindow::setAutosaveMinutes(int minutes) {
    if (!m_autosaveTimer) return;
    if (minutes <= 0) {
        m_autosaveTimer->stop();
        return;
    }
    m_autosaveTimer->start(minutes * 60 * 1000);
}

QString MainWindow::autosavePath() {
    return QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) +
           QStringLiteral("/autosave.lcwproj");
}

project::Project MainWindow::collectProject(QString* statsPath) const {
    project::Project p;
    p.modelPath = m_modelPath.toStdString();
    if (m_model) p.modelFingerprint = m_statsPanel->fingerprint();
    *statsPath = m_statsPanel->loadedPath();
    p.recipes.push_back({kEditorRecipe, m_recipeEditor->recipe().toJson().dump()});
    for (const auto& [n, j] : m_comparePanel->extraRecipes())
        p.recipes.push_back({kFileRecipePrefix + n.toStdString(), j.toStdString()});
    if (!m_comparePanel->results().empty())
        p.results.push_back({kCompareResults, m_comparePanel->results().toJson()});
    if (const std::string scan = m_sensitivityPanel->scanJson(); !scan.empty())
        p.results.push_back({kSensitivityScan, scan});
    if (const std::string im = m_imatrix->toJson(); !im.empty())
        p.results.push_back({kImatrix, im});
    if (m_layerModel->hasMeasuredErrors()) {
        // The Error column and the recipe it was measured with (to tell whether it is stale).
        nlohmann::json e;
        e["recipe_json"] = m_measuredRecipe;
        e["recipe_name"] = m_layerModel->measuredRecipeName().toStdString();
        nlohmann::json layers = nlohmann::json::array();
        const auto& errors = m_layerModel->measuredErrors();
        for (auto it = errors.cbegin(); it != errors.cend(); ++it)
            layers.push_back({it.key().toStdString(), it.value().weight,
                              std::isnan(it.value().output) ? nlohmann::json(nullptr)
                                                            : nlohmann::json(it.value().output)});
        e["layers"] = std::move(layers);
        p.results.push_back({kLayerErrors, e.dump()});
    }
    nlohmann::json ui;
    std::vector<std::string> configs;
    for (const QString& c : m_comparePanel->selectedConfigs()) configs.push_back(c.toStdString());
    ui["compare_configs"] = configs;
    ui["target_bits"] = m_recipeEditor->targetBitsPerWeight();
    p.uiState = ui.dump();
    return p;
}

void MainWindow::writeProjectFile(const QString& path, project::Project p,
                                  const QString& statsPath) {
    if (!statsPath.isEmpty()) {
        QFile f(statsPath);
        if (f.open(QIODevice::ReadOnly)) {
            const QByteArray b = f.readAll();
            p.statsFile.assign(b.begin(), b.end());
            p.statsName = QFileInfo(statsPath).fileName().toStdString();
        }
    }
    QDir().mkpath(QFileInfo(path).absolutePath());
    project::save(path.toStdString(), p);
}

void MainWindow::startProjectWrite(const QString& path, std::function<void(const QString&)> done) {
    QString statsPath;
    project::Project p = collectProject(&statsPath);
    // The destructor waits for the pool, so `this` outlives the task; the completion it posts
    // is dropped when the window is destroyed before it is delivered.
    m_savePool.start([this, path, statsPath, p = std::move(p), done = std::move(done)]() mutable {
        lowerThreadPriority();
        QString error;
        try {
            writeProjectFile(path, std::move(p), statsPath);
        } catch (const std::exception& e) {
            error = QString::fromUtf8(e.what());
        }
        QMetaObject::invokeMethod(
            this, [done = std::move(done), error] { done(error); }, Qt::QueuedConnection);
    });
}

void MainWindow::waitForSaves() {
    m_savePool.waitForDone();
    // Deliver the completions that the writes queued.
    QCoreApplication::sendPostedEvents(this, QEvent::MetaCall);
}

bool MainWindow::saveProject(const QString& path) {
    if (!m_model) {
        showError(tr("Save Project"), tr("Open a model first."));
        return false;
    }
    const QString previous = m_projectPath;
    m_projectPath = path;
    m_lastSaveError.clear();
    // What is written: clean afterwards unless it changed meanwhile.
    const quint64 serial = m_changeSerial;
    const std::string recipeJson = m_recipeEditor->recipe().toJson().dump();
    statusBar()->showMessage(tr("Saving %1…").arg(QFileInfo(path).fileName()));
    startProjectWrite(path, [this, path, previous, serial, recipeJson](const QString& error) {
        if (!error.isEmpty()) {
            m_lastSaveError = error;
            if (m_projectPath == path) m_projectPath = previous;
            statusBar()->clearMessage();
            showError(tr("Save Project"), tr("Could not save the project"), error);
            return;
        }
        m_recentProjects->add(path);
        if (serial == m_changeSerial) {
            m_savedRecipeJson = recipeJson;
            m_dirty = false;
        }
        updateModifiedState();
        updateWindowTitle();
        m_log->info(tr("Saved project %1").arg(QDir::toNativeSeparators(path)));
        statusBar()->showMessage(tr("Saved %1").arg(QFileInfo(path).fileName()), 5000);
        emit projectSaved(path);
    });
    return true;
}

bool MainWindow::autosave() {
    if (!m_model) return false;
    startProjectWrite(autosavePath(), [this](const QString& error) {
        if (!error.isEmpty()) m_log->warning(tr("Autosave failed: %1").arg(error));
    });
    return true;
}

bool MainWindow::recoverAutosave() {
    if (!QFileInfo::exists(autosavePath())) return false;
    return openProject(autosavePath());
}

void MainWindow::offerAutosaveRecovery() {
    const QFileInfo fi(autosavePath());
    if (!fi.exists()) return;
    if (!m_options.modalDialogs && !m_promptAnswerer) {
        m_log->info(
            tr("An autosaved project exists: %1").arg(QDir::toNativeSeparators(fi.filePath())));
        return;
    }
    const Answer answer =
        ask(Prompt::RecoverAutosave,
            tr("lcw did not close cleanly. Recover the work autosaved at %1?")
                .arg(QLocale().toString(fi.lastModified(), QLocale::ShortFormat)));
    if (answer == Answer::Yes)
        recoverAutosave();
    else
        QFile::remove(fi.filePath());
}

bool MainWindow::openProject(const QString& path) {
    if (!confirmUnsavedChanges(tr("opening the project %1").arg(QDir::toNativeSeparators(path))))
        return false;
    project::Project p;
    try {
        p = project::load(path.toStdString());
    } catch (const std::exception& e) {
        showError(tr("Open Project"), tr("Could not open the project"),
                  QString::fromUtf8(e.what()));
        return false;
    }
    // Statistics go back into the cache, where the inspector finds them without recomputing.
    if (!p.statsFile.empty() && !p.statsName.empty()) {
        const QString target = StatsPanel::cacheDir() + QLatin1Char('/') +
                               QFileInfo(QString::fromStdString(p.statsName)).fileName();
        if (!QFileInfo::exists(target)) {
            try {
                QDir().mkpath(StatsPanel::cacheDir());
                writeFileAtomic(target.toStdString(), p.statsFile.data(), p.statsFile.size());
            } catch (const std::exception& e) {
                m_log->warning(
                    tr("Could not restore the statistics: %1").arg(QString::fromUtf8(e.what())));
            }
        }
    }
    const QString modelPath = QString::fromStdString(p.modelPath);
    m_pendingProject = std::make_shared<project::Project>(std::move(p));
    m_pendingProjectPath = path;
    if (m_model && QFileInfo(m_modelPath) == QFileInfo(modelPath)) {
        m_statsPanel->setModel(m_model, m_modelPath, m_statsPanel->fingerprint());
        applyProject();
    } else {
        m_skipUnsavedPrompt = true; // asked above
        openModel(modelPath);
        m_skipUnsavedPrompt = false;
    }
    return true;
}

void MainWindow::applyProject() {
    const std::shared_ptr<project::Project> p = std::move(m_pendingProject);
    m_pendingProject.reset();
    if (!p) return;
    const QString path = m_pendingProjectPath;
    // The model's fingerprint is computed in the background after it loads: checked now or
    // when it is known.
    m_fingerprintToCheck = p->modelFingerprint;
    if (m_statsPanel->hasFingerprint()) checkProjectFingerprint();
    try {
        compress::Recipe editor;
        editor.name = "untitled";
        for (const project::NamedJson& r : p->recipes) {
            const QString name = QString::fromStdString(r.name);
            if (r.name == kEditorRecipe)
                editor = compress::Recipe::fromJson(nlohmann::json::parse(r.json));
            else if (name.startsWith(QLatin1String(kFileRecipePrefix)))
                m_comparePanel->addExtraRecipe(name.mid(int(strlen(kFileRecipePrefix))),
                                               QString::fromStdString(r.json));
        }
        m_recipeEditor->resetRecipe(editor);
        CompareResults results;
        for (const project::NamedJson& r : p->results)
            if (r.name == kCompareResults) results = CompareResults::fromJson(r.json);
        m_measuredRecipe.clear();
        m_layerModel->setMeasuredErrors({}, {});
        for (const project::NamedJson& r : p->results)
            if (r.name == kSensitivityScan &&
                !m_sensitivityPanel->showScanJson(nlohmann::json::parse(r.json),
                                                  tr("in the project %1").arg(path)))
                m_log->warning(m_sensitivityPanel->lastError());
        // The project's importance matrix, checked against the model like an opened file.
        m_imatrix->clear();
        for (const project::NamedJson& r : p->results) {
            if (r.name != kImatrix) continue;
            QString imPath, error;
            const QString origin = tr("the project %1").arg(path);
            try {
                compress::Imatrix m =
                    ImatrixManager::fromJson(r.json, origin.toStdString(), &imPath);
                if (!m_imatrix->adopt(std::move(m), imPath, origin)) error = m_imatrix->lastError();
            } catch (const std::exception& e) {
                error = QString::fromUtf8(e.what());
            }
            if (!error.isEmpty())
                m_log->warning(
                    tr("The project's importance matrix was not restored: %1").arg(error));
        }
        for (const project::NamedJson& r : p->results) {
            if (r.name != kLayerErrors) continue;
            const nlohmann::json e = nlohmann::json::parse(r.json);
            QHash<QString, LayerTableModel::MeasuredError> errors;
            for (const auto& l : e.at("layers")) {
                LayerTableModel::MeasuredError m;
                m.weight = l.at(1).get<double>();
                if (!l.at(2).is_null()) m.output = l.at(2).get<double>();
                errors.insert(QString::fromStdString(l.at(0).get<std::string>()), m);
            }
            m_measuredRecipe = e.at("recipe_json").get<std::string>();
            m_layerModel->setMeasuredErrors(
                errors, QString::fromStdString(e.at("recipe_name").get<std::string>()));
            updatePlannedColumns(); // stale or not against the restored editor recipe
        }
        m_comparePanel->setResults(results);
        if (!p->uiState.empty()) {
            const nlohmann::json ui = nlohmann::json::parse(p->uiState);
            if (ui.contains("compare_configs")) {
                QStringList configs;
                for (const auto& c : ui["compare_configs"])
                    configs << QString::fromStdString(c.get<std::string>());
                m_comparePanel->setSelectedConfigs(configs);
            }
            if (ui.contains("target_bits"))
                m_recipeEditor->setTargetBitsPerWeight(ui["target_bits"].get<double>());
        }
    } catch (const std::exception& e) {
        showError(tr("Open Project"), tr("Could not restore the project"),
                  QString::fromUtf8(e.what()));
        return;
    }
    if (path != autosavePath()) {
        m_projectPath = path;
        m_recentProjects->add(path);
    }
    // An opened project is saved work; recovered work is not saved anywhere yet.
    markProjectClean();
    if (path == autosavePath()) markProjectDirty();
    updateWindowTitle();
    m_log->info(tr("Opened project %1").arg(QDir::toNativeSeparators(path)));
    emit projectOpened(path);
}

void MainWindow::checkProjectFingerprint() {
    if (m_fingerprintToCheck.empty() || !m_model) return;
    if (m_statsPanel->fingerprint() != m_fingerprintToCheck)
        m_log->warning(tr("The model's files changed since the project was saved; statistics and "
                          "results may not match it."));
    m_fingerprintToCheck.clear();
}

void MainWindow::newProject() {
    m_projectPath.clear();
    compress::Recipe r;
    r.name = "untitled";
    m_recipeEditor->resetRecipe(r);
    m_comparePanel->clearResults();
    m_imatrix->clear();
    markProjectClean();
    updateWindowTitle();
}

void MainWindow::showComputeImatrixDialog() {
    if (!m_model) {
        showError(tr("Compute Importance Matrix"), tr("Open a model first."));
        return;
    }
    ImatrixDialog d(m_imatrix->lastSettings(), this);
    if (d.exec() != QDialog::Accepted) return;
    if (!m_imatrix->compute(d.settings()))
        showError(tr("Compute Importance Matrix"), m_imatrix->lastError());
}

bool MainWindow::openImatrix(const QString& path) {
    if (m_imatrix->open(path)) {
        showPanel(Panel::Stats);
        m_statsPanel->tabs()->setCurrentIndex(1); // Activations: where the imatrix is drawn
        return true;
    }
    showError(tr("Open Importance Matrix"),
              tr("Could not open the importance matrix %1").arg(QDir::toNativeSeparators(path)),
              m_imatrix->lastError());
    return false;
}

bool MainWindow::saveImatrix(const QString& path) {
    if (m_imatrix->save(path)) return true;
    showError(tr("Save Importance Matrix"), tr("Could not save the importance matrix"),
              m_imatrix->lastError());
    return false;
}

int MainWindow::showExportDialog(ExportDialog::Page page) {
    ExportDialog d(exportSources(), this);
    if (!m_projectPath.isEmpty()) d.setFolder(QFileInfo(m_projectPath).absolutePath());
    d.showPage(page);
    if (GgufExportPanel* g = d.ggufPanel()) {
        connect(g, &GgufExportPanel::logMessage, m_log, &LogPanel::info);
        connect(g, &GgufExportPanel::failed, m_log, &LogPanel::error);
    }
    return d.exec();
}

GgufExportPanel::Context MainWindow::ggufExportContext() const {
    GgufExportPanel::Context c;
    c.model = m_model;
    c.modelPath = m_modelPath;
    c.recipe = [this] { return m_recipeEditor->recipe(); };
    c.imatrix = m_imatrix;
    c.runner = m_runner;
    return c;
}

ExportDialog::Sources MainWindow::exportSources() const {
    ExportDialog::Sources src;
    if (m_model) src.gguf = ggufExportContext();
    src.recipeJson = [this] { return m_recipeEditor->recipeJsonText(); };
    src.metricsTsv = [this] {
        return m_comparePanel->results().empty() ? QString() : m_comparePanel->metricsTsv();
    };
    if (!m_comparePanel->results().empty()) {
        src.plots.emplace_back(QStringLiteral("pareto"), m_comparePanel->paretoPlot()->plot());
        src.plots.emplace_back(QStringLiteral("layer-error"),
                               m_comparePanel->layerErrorPlot()->plot());
    }
    if (m_model) {
        // Every tensor in file order with its setting, bits/weight and measured error.
        src.texts.push_back({tr("Tensors table (TSV: setting, bits/weight, measured error)"),
                             QStringLiteral("tensors.tsv"), [this] {
                                 QModelIndexList rows;
                                 for (int r = 0; r < m_layerModel->rowCount(); ++r)
                                     rows << m_layerModel->index(r, 0);
                                 return m_layerModel->rowsAsTsv(rows);
                             }});
    }
    if (m_sensitivityPanel->scan()) {
        src.texts.push_back({tr("Sensitivity scan (JSON, as lcw-cli autotune --scan reads it)"),
                             QStringLiteral("sensitivity.json"), [this] {
                                 return QString::fromStdString(m_sensitivityPanel->scanJson());
                             }});
    }
    return src;
}

// ---------------------------------------------------------------------------------------------
// Unsaved changes, crash recovery, recipes across models

namespace {
/// The editor's recipe of a new project.
std::string emptyRecipeJson() {
    compress::Recipe r;
    r.name = "untitled";
    return r.toJson().dump();
}
} // namespace

void MainWindow::connectModifiedTracking() {
    m_savedRecipeJson = emptyRecipeJson();
    connect(m_recipeEditor, &RecipeEditor::recipeChanged, this, [this] {
        ++m_changeSerial;
        updateModifiedState();
    });
    // The rest of what a project saves; model switches, opening and closing a project change
    // them too and mark the project clean afterwards.
    connect(m_comparePanel, &ComparePanel::resultsChanged, this, &MainWindow::markProjectDirty);
    connect(m_sensitivityPanel, &SensitivityPanel::finished, this, &MainWindow::markProjectDirty);
    connect(m_sensitivityPanel, &SensitivityPanel::scanLoaded, this, &MainWindow::markProjectDirty);
    connect(m_imatrix, &ImatrixManager::changed, this, &MainWindow::markProjectDirty);
    connect(this, &MainWindow::errorsMeasured, this, &MainWindow::markProjectDirty);
    connect(m_recipeEditor, &RecipeEditor::targetChanged, this, &MainWindow::markProjectDirty);
}

bool MainWindow::isProjectModified() const {
    if (!m_model) return false; // nothing can be saved
    return m_dirty || m_recipeEditor->recipe().toJson().dump() != m_savedRecipeJson;
}

void MainWindow::markProjectDirty() {
    m_dirty = true;
    ++m_changeSerial;
    updateModifiedState();
}

void MainWindow::markProjectClean() {
    m_savedRecipeJson = m_recipeEditor->recipe().toJson().dump();
    m_dirty = false;
    updateModifiedState();
}

void MainWindow::updateModifiedState() {
    const bool modified = isProjectModified();
    setWindowModified(modified);
    if (modified == m_modified) return;
    m_modified = modified;
    emit projectModifiedChanged(modified);
}

void MainWindow::updateWindowTitle() {
    QString title = QStringLiteral("lcw");
    if (m_model) title += QStringLiteral(" — ") + displayName(m_modelPath);
    if (!m_projectPath.isEmpty())
        title += QStringLiteral(" — ") + QFileInfo(m_projectPath).fileName();
    setWindowTitle(title + QStringLiteral("[*]"));
    setWindowModified(isProjectModified());
}

MainWindow::Answer MainWindow::ask(Prompt prompt, const QString& text) {
    emit promptShown(prompt, text);
    if (m_promptAnswerer) return m_promptAnswerer(prompt, text);
    if (!m_options.modalDialogs) {
        // Without dialogs (screenshots, scripted runs): go on as before the prompts existed.
        switch (prompt) {
        case Prompt::UnsavedChanges:
            return Answer::Discard;
        case Prompt::KeepRecipe:
            return Answer::Yes;
        case Prompt::RecoverAutosave:
            return Answer::No;
        }
    }
    switch (prompt) {
    case Prompt::UnsavedChanges: {
        QMessageBox box(QMessageBox::Warning, tr("Unsaved Changes"), text,
                        QMessageBox::Save | QMessageBox::Discard | QMessageBox::Cancel, this);
        box.setDefaultButton(QMessageBox::Save);
        switch (box.exec()) {
        case QMessageBox::Save:
            return Answer::Save;
        case QMessageBox::Discard:
            return Answer::Discard;
        default:
            return Answer::Cancel;
        }
    }
    case Prompt::KeepRecipe: {
        QMessageBox box(QMessageBox::Question, tr("Keep the Recipe?"), text, QMessageBox::NoButton,
                        this);
        QPushButton* keep = box.addButton(tr("&Keep Recipe"), QMessageBox::YesRole);
        box.addButton(tr("&Clear Recipe"), QMessageBox::NoRole);
        box.setDefaultButton(keep);
        box.exec();
        return box.clickedButton() == keep ? Answer::Yes : Answer::No;
    }
    case Prompt::RecoverAutosave:
        return QMessageBox::question(this, tr("Recover Autosave"), text,
                                     QMessageBox::Yes | QMessageBox::No,
                                     QMessageBox::Yes) == QMessageBox::Yes
                   ? Answer::Yes
                   : Answer::No;
    }
    return Answer::Cancel;
}

bool MainWindow::confirmUnsavedChanges(const QString& action) {
    if (!isProjectModified()) return true;
    const QString project = m_projectPath.isEmpty()
                                ? tr("The work on %1").arg(displayName(m_modelPath))
                                : tr("The project %1").arg(QFileInfo(m_projectPath).fileName());
    const Answer a = ask(Prompt::UnsavedChanges,
                         tr("%1 has unsaved changes. Save them before %2?").arg(project, action));
    if (a == Answer::Cancel) return false;
    if (a == Answer::Discard || a == Answer::No) return true;
    QString path = m_projectPath;
    if (path.isEmpty()) {
        if (!m_options.modalDialogs) {
            showError(tr("Save Project"),
                      tr("The project has no file yet: save it with File ▸ Save Project As…"));
            return false;
        }
        path = QFileDialog::getSaveFileName(this, tr("Save Project"),
                                            QStringLiteral("project.lcwproj"),
                                            tr("lcw projects (*.lcwproj)"));
        if (path.isEmpty()) return false;
        if (QFileInfo(path).suffix().isEmpty()) path += QStringLiteral(".lcwproj");
    }
    if (!saveProject(path)) return false;
    waitForSaves(); // the write ends (and reports) before the action goes on
    return m_lastSaveError.isEmpty() && !isProjectModified();
}

bool MainWindow::closeProject() {
    if (!confirmUnsavedChanges(tr("closing it"))) return false;
    newProject();
    return true;
}

void MainWindow::afterModelSwitch(bool hadModel) {
    const QString model = displayName(m_modelPath);
    m_recipeEditor->setModelLabel(model);
    // A tensor filter that hides every tensor of this model was about the previous one.
    if (!m_filter->text().isEmpty() && m_proxy->rowCount() == 0) {
        m_log->info(tr("Cleared the tensor filter \"%1\": it matches no tensor of %2")
                        .arg(m_filter->text(), model));
        m_filter->clear();
    }
    if (m_pendingProject) return; // the project brings its own recipe
    const compress::Recipe& r = m_recipeEditor->recipe();
    if (hadModel && !r.rules.empty()) {
        // A recipe names layers of the model it was made for: ask before using it on this one,
        // and say which of its targets select nothing here.
        const QString recipeName =
            r.name.empty() ? tr("(unnamed)") : QString::fromStdString(r.name);
        const QMap<int, QStringList> unmatched = m_recipeEditor->unmatchedTargets();
        QStringList lines;
        for (auto it = unmatched.cbegin(); it != unmatched.cend(); ++it)
            lines << tr("rule %1: %2").arg(it.key()).arg(it.value().join(QStringLiteral(", ")));
        // Which blocks it reaches here: exact names of a smaller model cover only the first
        // blocks of a larger one.
        QString coverage;
        std::vector<int> blocks, reached;
        for (const TensorView& t : m_model->tensors())
            if (const int l = tensorLayer(t.name); l >= 0) blocks.push_back(l);
        if (const compress::Plan* plan = m_recipeEditor->plan())
            for (const compress::LayerPlan& l : plan->layers)
                if (const int b = tensorLayer(l.name); b >= 0) reached.push_back(b);
        for (std::vector<int>* v : {&blocks, &reached}) {
            std::sort(v->begin(), v->end());
            v->erase(std::unique(v->begin(), v->end()), v->end());
        }
        if (!blocks.empty())
            coverage = tr("Here its rules reach %1 of the %2 blocks.")
                           .arg(reached.size())
                           .arg(blocks.size());
        QString text =
            tr("The recipe editor holds the recipe \"%1\" (%2), made for the "
               "previous model. Keep it for %3?")
                .arg(recipeName,
                     r.rules.size() == 1 ? tr("1 rule") : tr("%1 rules").arg(r.rules.size()),
                     model);
        if (!coverage.isEmpty()) text += QLatin1Char(' ') + coverage;
        if (!lines.isEmpty())
            text += QStringLiteral("\n\n") + tr("Targets that match no tensor of %1:\n%2")
                                                 .arg(model, lines.join(QLatin1Char('\n')));
        else
            text += QStringLiteral("\n\n") +
                    tr("Every target matches tensors of %1 (exact layer names now mean this "
                       "model's layers).")
                        .arg(model);
        const Answer a = ask(Prompt::KeepRecipe, text);
        if (a == Answer::Yes || a == Answer::Save) {
            if (lines.isEmpty())
                m_log->info(tr("Kept the recipe %1 for %2. %3").arg(recipeName, model, coverage));
            else
                m_log->warning(
                    tr("Kept the recipe %1 for %2. %3 Targets that match no tensor of "
                       "%2: %4")
                        .arg(recipeName, model, coverage, lines.join(QStringLiteral("; "))));
        } else {
            compress::Recipe empty;
            empty.name = "untitled";
            m_recipeEditor->resetRecipe(empty);
            m_log->info(tr("Cleared the recipe %1 for %2").arg(recipeName, model));
        }
    }
    // The new model's work starts unsaved from an empty recipe: a kept recipe is a change.
    m_savedRecipeJson = emptyRecipeJson();
    m_dirty = false;
    updateModifiedState();
}

// ---------------------------------------------------------------------------------------------
// Inspection: metadata, tensor values, keyboard shortcuts, Hugging Face cache snapshots

void MainWindow::buildInspectMenus(QMenu* view, QMenu* help) {
    view->addSeparator();
    QAction* meta = view->addAction(tr("Model &Metadata…"), this, [this] { showModelMetadata(); });
    meta->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_M));
    QAction* values = view->addAction(tr("Tensor &Values…"), this, [this] { showTensorValues(); });
    values->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_V));
    auto sync = [this, meta, values] {
        meta->setEnabled(bool(m_model));
        values->setEnabled(bool(m_model));
    };
    connect(this, &MainWindow::modelLoaded, this, sync);
    sync();

    // The Tensors table: "Show Values…" in its context menu, and double-click.
    auto* show = new QAction(tr("Show Values…"), m_table);
    connect(show, &QAction::triggered, this, [this] { showTensorValues(); });
    m_table->addAction(show);
    connect(m_table, &QAbstractItemView::doubleClicked, this, [this](const QModelIndex& i) {
        showTensorValues(m_proxy->index(i.row(), LayerTableModel::Name).data().toString());
    });

    help->addSeparator();
    QAction* keys =
        help->addAction(tr("&Keyboard Shortcuts…"), this, [this] { showKeyboardShortcuts(); });
    keys->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Slash));
}

void MainWindow::showModelMetadata() {
    if (!m_model) return;
    // Read off the UI thread: a large GGUF's header (150k-token vocabulary, merges) takes a
    // moment to parse. The model is held so its files stay while the read runs.
    struct Outcome {
        std::optional<ModelMetadata> md;
        QString error;
    };
    std::shared_ptr<const Model> model = m_model;
    auto* watcher = new QFutureWatcher<Outcome>(this);
    connect(watcher, &QFutureWatcher<Outcome>::finished, this, [this, watcher] {
        watcher->deleteLater();
        Outcome o = watcher->result();
        if (!o.md) {
            showError(tr("Model Metadata"), o.error);
            return;
        }
        auto* d = new MetadataDialog(std::move(*o.md), this);
        d->setAttribute(Qt::WA_DeleteOnClose);
        d->show();
    });
    watcher->setFuture(QtConcurrent::run([model]() -> Outcome {
        lowerThreadPriority();
        try {
            return {readModelMetadata(model->path()), {}};
        } catch (const std::exception& e) {
            return {std::nullopt, QString::fromUtf8(e.what())};
        }
    }));
}

void MainWindow::showTensorValues(const QString& canonical) {
    if (!m_model) return;
    QString name = canonical;
    if (name.isEmpty()) {
        const QModelIndex cur = m_table->selectionModel()->currentIndex();
        if (cur.isValid())
            name = m_proxy->index(cur.row(), LayerTableModel::Name).data().toString();
    }
    if (name.isEmpty() || !m_model->find(name.toStdString())) {
        showError(tr("Tensor Values"), tr("Select a tensor in the Tensors table first."));
        return;
    }
    auto* d = new TensorValuesDialog(m_model, name, m_runner, this);
    d->setAttribute(Qt::WA_DeleteOnClose);
    connect(d, &TensorValuesDialog::csvSaved, this, [this](const QString& path) {
        statusBar()->showMessage(tr("Wrote %1").arg(QDir::toNativeSeparators(path)), 5000);
    });
    d->show();
}

void MainWindow::showKeyboardShortcuts() {
    auto* d = new ShortcutsDialog(this, this);
    d->setAttribute(Qt::WA_DeleteOnClose);
    d->show();
}

QString MainWindow::chooseHfSnapshot(const QString& path) {
    if (!isHfCacheRepo(path.toStdString())) return path;
    const std::vector<HfSnapshot> snaps = listHfSnapshots(path.toStdString());
    if (snaps.size() < 2 || (!m_snapshotChooser && !m_options.modalDialogs)) return path;
    QStringList labels;
    for (const HfSnapshot& s : snaps) {
        QString label = QString::fromStdString(s.hash);
        if (!s.refs.empty()) {
            QStringList refs;
            for (const auto& r : s.refs) refs << QString::fromStdString(r);
            label += tr(" (refs: %1)").arg(refs.join(QStringLiteral(", ")));
        }
        label += QStringLiteral(" — ") + QDateTime::fromSecsSinceEpoch(s.mtime).toString(
                                             QStringLiteral("yyyy-MM-dd HH:mm"));
        labels << label;
    }
    int chosen = 0;
    if (m_snapshotChooser) {
        chosen = m_snapshotChooser(labels);
    } else {
        bool ok = false;
        const QString item = QInputDialog::getItem(this, tr("Choose Snapshot"),
                                                   tr("%1 holds %2 snapshots. Open which one?")
                                                       .arg(QDir(path).dirName())
                                                       .arg(labels.size()),
                                                   labels, 0, false, &ok);
        chosen = ok ? int(labels.indexOf(item)) : -1;
    }
    if (chosen < 0 || chosen >= int(snaps.size())) return {};
    return QString::fromStdString(hfSnapshotLoadPath(snaps[size_t(chosen)].path));
}

void MainWindow::openModelChoosingSnapshot(const QString& path) {
    const QString chosen = chooseHfSnapshot(path);
    if (!chosen.isEmpty()) openModel(chosen);
}

} // namespace lcw
