// MainWindow: the menus and their actions (File, Edit, View, Run, Statistics, Help, the project
// menu, the inspection entries).
#include "widgets/main_window.h"
#include "widgets/main_window_private.h"
#include "widgets/study_panel.h"

#include "core/common/error.h"
#include "core/compress/recipe.h"
#include "core/io/model_metadata.h"
#include "widgets/export_dialog.h"
#include "widgets/imatrix_dialog.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/preferences_dialog.h"
#include "widgets/recent_list.h"
#include "widgets/recipe_editor.h"
#include "widgets/run_panel.h"
#include "widgets/stats_panel.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QDesktopServices>
#include <QDir>
#include <QDockWidget>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QLineEdit>
#include <QMenuBar>
#include <QPushButton>
#include <QSortFilterProxyModel>
#include <QStyle>
#include <QTableView>
#include <QTimer>
#include <QUndoStack>
#include <QUrl>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

namespace lcw {

using namespace mw;

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
    file->addAction(tr("Open &Study Report…"), this, [this] {
        activatePanels();
        showPanel(Panel::Study);
        m_studyPanel->chooseStudy();
    });
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
    edit->addSeparator();
    QAction* prefs = edit->addAction(tr("&Preferences…"), this, [this] {
        auto* d = new PreferencesDialog(this);
        d->setAttribute(Qt::WA_DeleteOnClose);
        d->open();
    });
    prefs->setObjectName(QStringLiteral("actionPreferences"));
    prefs->setMenuRole(QAction::PreferencesRole);
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

} // namespace lcw
