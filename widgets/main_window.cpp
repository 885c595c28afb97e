#include "widgets/main_window.h"
#include "widgets/main_window_private.h"

#include "core/common/error.h"
#include "core/compress/recipe.h"
#include "core/stats/fingerprint.h"
#include "core/version.h"
#include "plots/bar_plot.h"
#include "plots/plot_style.h"
#include "widgets/compare_panel.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/log_panel.h"
#include "widgets/model_summary_panel.h"
#include "widgets/number_format.h"
#include "widgets/recent_list.h"
#include "widgets/recipe_editor.h"
#include "widgets/regex_filter_proxy.h"
#include "widgets/results_panel.h"
#include "widgets/run_panel.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/stats_panel.h"
#include "widgets/study_panel.h"
#include "widgets/task_status_widget.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QMimeData>
#include <QPushButton>
#include <QScrollArea>
#include <QSettings>
#include <QSortFilterProxyModel>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>
#include <QTimer>
#include <QUrl>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

namespace lcw {

using namespace mw;

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

    createPanels();
    connectPanelSignals();
    connectBackgroundSignals();
    applyDefaultLayout();
    // The welcome page fills the window until a model is open (or a panel is asked for).
    for (QDockWidget* d : std::as_const(m_docks)) d->hide();

    m_taskStatus = new TaskStatusWidget(m_runner, this);
    statusBar()->addPermanentWidget(m_taskStatus);
    statusBar()->showMessage(tr("Open a model folder or file to begin."));
}

/// Every panel, each in its dock.
void MainWindow::createPanels() {
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
    m_studyPanel = new StudyPanel(this);

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
    addPanel(Panel::Study, tr("Study"), QStringLiteral("dock.study"), m_studyPanel);
}

/// How the panels feed each other: recipes, results, tensors selected, providers.
void MainWindow::connectPanelSignals() {
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
}

/// What the panels' background jobs report: failures, a computed importance matrix, the
/// statistics' fingerprint.
void MainWindow::connectBackgroundSignals() {
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
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Study));
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
    tabifyDockWidget(dock(Panel::Stats), dock(Panel::Study));
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
    connect(m_studyPanel, &StudyPanel::logMessage, m_log, &LogPanel::info);
    connect(m_studyPanel, &StudyPanel::failed, m_log, &LogPanel::error);
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
    m_proxy = new RegexFilterProxy(this);
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

} // namespace lcw
