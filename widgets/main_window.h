#pragma once
/// \file
/// The main window: opens a model in the background (menu, recent list, drag and drop, command
/// line) and shows it in dockable panels: summary, tensor table, parameters per block, run
/// (generation and perplexity) and log. Layout and theme survive a restart (QSettings).
#include "widgets/export_dialog.h"
#include "widgets/model_blocks.h"
#include "widgets/task_runner.h"
#include "widgets/theme.h"

#include <QElapsedTimer>
#include <QHash>
#include <QMainWindow>
#include <QThreadPool>

#include <functional>
#include <memory>
#include <vector>

class QActionGroup;
class QDockWidget;
class QLabel;
class QLineEdit;
class QMenu;
class QSortFilterProxyModel;
class QTableView;
class QTimer;

namespace lcw {

namespace project {
struct Project;
}

class BarPlot;
class ImatrixManager;
class RecentList;
class ComparePanel;
class ResultsPanel;
class SensitivityPanel;
class StudyPanel;
class LayerTableModel;
class RecipeEditor;
class LogPanel;
class ModelSummaryPanel;
class RunPanel;
class StatsPanel;
class TaskStatusWidget;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    struct Options {
        /// Restore/save geometry and the recent list in QSettings (off for --screenshot).
        bool useSettings = true;
        /// Show errors in modal message boxes (tests turn this off; errorShown() is always
        /// emitted).
        bool modalDialogs = true;
    };
    /// Entries kept in File ▸ Open Recent.
    static constexpr int kMaxRecent = 10;
    /// Version tag of saveState(); layouts saved by older versions are ignored.
    static constexpr int kStateVersion = 7;
    /// The dockable panels.
    enum class Panel {
        Summary,
        Layers,
        Plot,
        Run,
        Log,
        Stats,
        Recipe,
        Compare,
        Results,
        Sensitivity,
        Study
    };
    /// Autosave interval (File ▸ autosave; QSettings "project/autosaveMinutes").
    static constexpr int kDefaultAutosaveMinutes = 5;

    explicit MainWindow(QWidget* parent = nullptr);
    explicit MainWindow(Options options, QWidget* parent = nullptr);
    ~MainWindow() override;

    /// Starts loading a model folder or file in the background. On success the window shows it
    /// and emits modelLoaded(); on failure the current model stays, an error is shown and
    /// loadFailed() is emitted. A load still running is cancelled (its result is discarded).
    void openModel(const QString& path);
    /// Opens a recent entry; an entry that no longer exists is removed with a message.
    void openRecent(const QString& path);

    /// The loaded model (nullptr before the first successful load).
    const Model* model() const { return m_model.get(); }
    std::shared_ptr<const Model> sharedModel() const { return m_model; }
    /// Path of the loaded model as the user gave it.
    QString modelPath() const { return m_modelPath; }
    /// "stories260K/hf", "tinyllama.gguf": the name in the title bar.
    static QString displayName(const QString& path);
    /// True while a model load or a project read (openProject) is queued or running.
    bool isLoading() const { return m_loadJob != 0 || m_projectReadJob != 0; }

    QStringList recentFiles() const;
    void clearRecentFiles();

    /// Filters the layer table: plain text matches any column (case-insensitive), text with
    /// '*' or '?' is a glob over whole cells ("layers.*.mlp.down"), "re:<regex>" a regex.
    void setLayerFilter(const QString& text);
    /// Copies the selected table rows as TSV to the clipboard and returns the text.
    QString copySelectedRows();

    void setModalDialogsEnabled(bool on) { m_options.modalDialogs = on; }
    bool modalDialogsEnabled() const { return m_options.modalDialogs; }

    TaskRunner* taskRunner() const { return m_runner; }
    LayerTableModel* layerTableModel() const { return m_layerModel; }
    QSortFilterProxyModel* layerProxy() const { return m_proxy; }
    QTableView* layerView() const { return m_table; }
    ModelSummaryPanel* summaryPanel() const { return m_summary; }
    BarPlot* blockPlot() const { return m_plot; }
    QLineEdit* filterEdit() const { return m_filter; }
    RunPanel* runPanel() const { return m_runPanel; }
    LogPanel* logPanel() const { return m_log; }
    StatsPanel* statsPanel() const { return m_statsPanel; }
    /// Selects a tensor's row in the table (clearing a filter that hides it); the statistics
    /// inspector follows. Returns false when the model has no such tensor.
    bool selectTensor(const QString& name);
    QDockWidget* dock(Panel panel) const;
    /// Shows a panel and brings it to the front of its tab group.
    void showPanel(Panel panel);
    /// Puts every panel back where it starts.
    void resetLayout();
    /// Layout for exploring statistics: the tensor table (tabbed with summary, block plot and
    /// log) on the left, the statistics inspector (tabbed with run) on the right, full height.
    void applyInspectorLayout();

    /// Compresses the model with the recipe editor's recipe on the task runner (with the
    /// bundled calibration text, 8 × 128 tokens, when a method needs calibration) and shows each
    /// layer's ‖W−Ŵ‖/‖W‖ in the table's Error column (dimmed once the recipe changes). Returns
    /// false without a model or while a measurement runs; errorsMeasured() follows.
    bool measureLayerErrors();
    bool isMeasuringErrors() const { return m_errorJob != 0; }
    /// Sorts the Tensors table by a LayerTableModel column.
    void sortTensorTable(int column, Qt::SortOrder order);
    /// Shows a LayerTableModel column at another place (as dragging its header does).
    void moveTensorColumn(int column, int visualIndex);

    // Projects ------------------------------------------------------------------------------
    /// Saves model path + fingerprint, statistics, recipes and comparison results to one HDF5
    /// file (core/project). The state is taken now; the file (which embeds the statistics file,
    /// megabytes for a large model) is written on a background thread, atomically. Returns
    /// false without a model; a failed write is reported (error dialog, errorShown()) when it
    /// ends. waitForSaves() waits for it; projectSaved() follows a successful write.
    bool saveProject(const QString& path);
    /// Opens a project in the background, on the task runner (progress in the status bar,
    /// cancellable; the UI thread never waits for the file): reads it, then loads its model
    /// (unless it is the one shown) and restores statistics (no recomputation), recipes and
    /// results; emits projectOpened() at the end. projectFileRead() says when the read ended and
    /// whether it succeeded; a file that cannot be read is reported as an error and changes
    /// nothing. Returns false when the user keeps the unsaved work instead; true when the read
    /// started.
    bool openProject(const QString& path);
    /// Forgets the project: empty recipe and results (the model stays).
    void newProject();
    /// Path of the current project file (empty when unsaved).
    QString projectPath() const { return m_projectPath; }
    QStringList recentProjects() const;
    /// Recipe files opened or saved in the recipe editor, newest first (File ▸ Recent Recipes).
    QStringList recentRecipes() const;
    /// Opens a recipe file in the editor (showing it); a missing file is removed from the recent
    /// list with a message. Returns true when opened.
    bool openRecipeFile(const QString& path);
    /// Where autosaves go (AppDataLocation/autosave.lcwproj).
    static QString autosavePath();
    /// Starts writing the autosave file (as saveProject() does, in the background; failures go
    /// to the log). Returns false without a model.
    bool autosave();
    /// Waits until every project write started so far has ended.
    void waitForSaves();
    /// Opens the autosave file as a project (the recovery offered at start).
    bool recoverAutosave();
    void setAutosaveMinutes(int minutes);
    /// Opens File ▸ Export… on a page (returns the dialog's result).
    int showExportDialog(ExportDialog::Page page = ExportDialog::Page::Files);
    /// What File ▸ Export… offers now (recipe, metrics, Tensors table, scan, plots, and the
    /// GGUF page when a model is open).
    ExportDialog::Sources exportSources() const;
    /// What the GGUF export page exports from: the model, the editor's recipe, the imatrix.
    GgufExportPanel::Context ggufExportContext() const;

    // Importance matrix (llama.cpp's imatrix) --------------------------------------------
    ImatrixManager* imatrixManager() const { return m_imatrix; }
    /// Run ▸ Compute Importance Matrix…: the settings dialog, then the computation on the task
    /// runner; when it ends the window offers to save the .dat file.
    void showComputeImatrixDialog();
    /// Opens a .dat file for the open model and shows it in the statistics inspector's
    /// Activations tab; an unreadable file or one for another model gives an error dialog
    /// (errorShown()) and changes nothing. Returns true when opened.
    bool openImatrix(const QString& path);
    /// Saves the current imatrix (error dialog on failure).
    bool saveImatrix(const QString& path);

    RecipeEditor* recipeEditor() const { return m_recipeEditor; }
    ComparePanel* comparePanel() const { return m_comparePanel; }
    ResultsPanel* resultsPanel() const { return m_resultsPanel; }
    SensitivityPanel* sensitivityPanel() const { return m_sensitivityPanel; }
    StudyPanel* studyPanel() const { return m_studyPanel; }

    // ---- inspection (View ▸ Model Metadata…, tensor values, Help ▸ Keyboard Shortcuts) ----
    /// Opens the metadata dialog of the loaded model (non-modal; a child of the window).
    void showModelMetadata();
    /// Opens the raw values of a tensor (canonical name; empty: the table's current row).
    void showTensorValues(const QString& canonical = {});
    /// Opens the list of every action with a shortcut.
    void showKeyboardShortcuts();
    /// For a Hugging Face cache folder (models--org--name) with several snapshots: asks which
    /// one to open (the chooser hook, else a list dialog when modal dialogs are on) and returns
    /// its folder; empty when cancelled. Any other path comes back unchanged.
    QString chooseHfSnapshot(const QString& path);
    /// Test hook for chooseHfSnapshot(): gets the snapshot labels (refs/main's or the newest
    /// first) and returns the chosen index, or -1 to cancel.
    void setSnapshotChooser(std::function<int(const QStringList&)> chooser) {
        m_snapshotChooser = std::move(chooser);
    }

    /// Switches the application palette (View ▸ Theme) and remembers it.
    void setTheme(Theme theme);
    Theme theme() const { return m_theme; }

    // Unsaved changes, recovery, recipes across models --------------------------------------
    /// The questions the window asks before work is dropped or carried over.
    enum class Prompt {
        /// Quit, File ▸ Close Project, opening another model or project with unsaved changes:
        /// Save, Discard or Cancel (Cancel aborts the action).
        UnsavedChanges,
        /// Another model was opened while the editor holds a recipe: Yes keeps it (its targets
        /// that match nothing there are listed), No clears it.
        KeepRecipe,
        /// An autosave of a session that did not end cleanly: Yes recovers it, No deletes it.
        RecoverAutosave
    };
    Q_ENUM(Prompt)
    enum class Answer { Save, Discard, Cancel, Yes, No };
    Q_ENUM(Answer)
    /// Answers the prompts instead of a message box (tests). Without it and with modal dialogs
    /// off: Discard, Yes (keep the recipe), and no recovery (the autosave stays).
    void setPromptAnswerer(std::function<Answer(Prompt, const QString& text)> answerer) {
        m_promptAnswerer = std::move(answerer);
    }
    /// True when the project (the editor's recipe, comparison results, sensitivity scan,
    /// measured errors, importance matrix) changed since it was last saved, opened, closed or a
    /// model was opened; the title bar shows it ([*]).
    bool isProjectModified() const;
    /// Before `action` drops unsaved work: asks Save / Discard / Cancel (nothing when
    /// unmodified). Save writes the project (its file, else a file dialog; without dialogs and
    /// without a file it fails) and waits for it. Returns false when the action must not go on.
    bool confirmUnsavedChanges(const QString& action);
    /// File ▸ Close Project: asks about unsaved changes, then forgets the project (the model
    /// stays, the recipe is emptied). Returns false when cancelled.
    bool closeProject();

signals:
    void modelLoaded(const QString& path);
    void loadFailed(const QString& path, const QString& message);
    /// Every error or warning the window reports to the user (also when dialogs are off).
    void errorShown(const QString& message);
    void recentFilesChanged();
    /// A project finished opening (its model loaded and everything restored).
    void projectOpened(const QString& path);
    /// The background read of openProject() ended: `ok`, or it failed (the error is shown) or
    /// was cancelled or declined.
    void projectFileRead(const QString& path, bool ok);
    /// saveProject() finished writing `path`.
    void projectSaved(const QString& path);
    /// measureLayerErrors() finished: `layers` layers have an error in the table.
    void errorsMeasured(int layers);
    /// A prompt is asked (with its text), by dialog or by the answerer.
    void promptShown(lcw::MainWindow::Prompt prompt, const QString& text);
    /// isProjectModified() changed.
    void projectModifiedChanged(bool modified);

protected:
    void closeEvent(QCloseEvent* event) override;
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;

private:
    struct LoadResult {
        std::shared_ptr<const Model> model;
        double seconds = 0.0;
    };
    /// What openProject()'s background read hands back.
    struct ProjectRead {
        std::shared_ptr<project::Project> project;
        QString statsWarning; ///< the embedded statistics could not be put back in the cache
    };
    /// Continues openProject() on the UI thread once the file is read; `serial` is
    /// m_changeSerial when the read started.
    void applyProjectRead(const QString& path, ProjectRead r, quint64 serial);

    void buildUi();
    void createPanels();
    void connectPanelSignals();
    void connectBackgroundSignals();
    void buildMenus();
    void buildFileMenu();
    void buildEditMenu();
    void buildViewMenu(QMenu* view);
    void buildThemeMenu(QMenu* themes);
    void buildRunMenu();
    void buildStatisticsMenu();
    QWidget* buildWelcomePage();
    QWidget* buildLayersPanel();
    QDockWidget* addPanel(Panel panel, const QString& title, const QString& objectName,
                          QWidget* content);
    void applyDefaultLayout();
    void connectLog();
    void openFolderDialog();
    void openFileDialog();
    void showAbout();
    void setModel(LoadResult result, const QString& path);
    void checkProjectFingerprint();
    void updatePlot();
    void onCurrentRowChanged();
    void updateFilterCount();
    void showError(const QString& title, const QString& text, const QString& details = {});
    void readSettings();
    void writeSettings() const;
    void buildProjectMenu(QMenu* file);
    /// View ▸ Model Metadata… / Tensor Values…, the table's "Show Values…" and double-click,
    /// Help ▸ Keyboard Shortcuts.
    void buildInspectMenus(QMenu* view, QMenu* help);
    /// chooseHfSnapshot() then openModel() unless cancelled.
    void openModelChoosingSnapshot(const QString& path);
    /// The project as it is now, without the statistics file's bytes (`statsPath` names the
    /// file to embed; empty when none is shown).
    project::Project collectProject(QString* statsPath) const;
    /// Embeds the statistics file and writes the project (any thread; throws on failure).
    static void writeProjectFile(const QString& path, project::Project p, const QString& statsPath);
    /// Writes collectProject() to `path` on m_savePool; `done(error)` runs on this thread
    /// afterwards (error empty on success), unless the window is gone by then.
    void startProjectWrite(const QString& path, std::function<void(const QString&)> done);
    /// Restores recipes, results and UI state of a project read by openProject().
    void applyProject();
    /// The other model files of the compare view saved in a project (missing ones are logged).
    void restoreCompareModelFiles(const project::Project& p, const QString& path);
    void offerAutosaveRecovery();
    void updatePlannedColumns();

    std::function<int(const QStringList&)> m_snapshotChooser;
    Options m_options;
    TaskRunner* m_runner = nullptr;
    TaskStatusWidget* m_taskStatus = nullptr;
    std::shared_ptr<const Model> m_model;
    /// A project's model fingerprint, compared once the statistics panel has computed the
    /// loaded model's (a warning in the log when they differ).
    std::string m_fingerprintToCheck;
    QString m_modelPath;
    std::vector<BlockSize> m_blocks;
    TaskRunner::JobId m_loadJob = 0;
    TaskRunner::JobId m_errorJob = 0;
    std::string m_measuredRecipe; ///< JSON of the recipe the Error column was measured with
    /// One background thread (not Qt's global pool, which the raster paint engine waits on):
    /// project writes in the order they were started, and releasing replaced models.
    QThreadPool m_savePool;

    /// Leaves the welcome page: restores the saved panel layout (or the default one).
    void activatePanels();
    /// Back to the welcome page (the first load failed), keeping the panel layout for later.
    void deactivatePanels();

    QWidget* m_welcome = nullptr;
    bool m_panelsActive = false;
    QByteArray m_savedState;
    QHash<int, QDockWidget*> m_docks;
    RunPanel* m_runPanel = nullptr;
    StatsPanel* m_statsPanel = nullptr;
    QAction* m_actComputeStats = nullptr;
    QAction* m_actCancelStats = nullptr;
    LogPanel* m_log = nullptr;
    Theme m_theme = Theme::Light;
    QActionGroup* m_themeGroup = nullptr;
    QAction* m_actGenerate = nullptr;
    QAction* m_actStop = nullptr;
    QAction* m_actPerplexity = nullptr;
    QAction* m_actCancelPerplexity = nullptr;
    /// Titles and start times of the runner's jobs, for the log.
    QHash<TaskRunner::JobId, QString> m_jobTitles;
    QHash<TaskRunner::JobId, QElapsedTimer> m_jobTimers;
    QElapsedTimer m_quitRequested; ///< valid once Quit waits for a running job to stop
    ModelSummaryPanel* m_summary = nullptr;
    BarPlot* m_plot = nullptr;
    LayerTableModel* m_layerModel = nullptr;
    QSortFilterProxyModel* m_proxy = nullptr;
    QTableView* m_table = nullptr;
    QLineEdit* m_filter = nullptr;
    QLabel* m_filterCount = nullptr;
    RecentList* m_recentModels = nullptr;
    RecentList* m_recentProjects = nullptr;
    RecentList* m_recentRecipes = nullptr;
    RecipeEditor* m_recipeEditor = nullptr;
    ComparePanel* m_comparePanel = nullptr;
    ResultsPanel* m_resultsPanel = nullptr;
    SensitivityPanel* m_sensitivityPanel = nullptr;
    StudyPanel* m_studyPanel = nullptr;
    ImatrixManager* m_imatrix = nullptr;
    QAction* m_actSaveImatrix = nullptr;
    QAction* m_actComputeImatrix = nullptr;
    QString m_projectPath;
    QTimer* m_autosaveTimer = nullptr;
    /// A project read by openProject() waiting for its model to load.
    std::shared_ptr<project::Project> m_pendingProject;
    QString m_pendingProjectPath;
    TaskRunner::JobId m_projectReadJob = 0; ///< openProject()'s read, 0 when none

    // Unsaved changes (main_window.cpp, end of file).
    Answer ask(Prompt prompt, const QString& text);
    /// The current state becomes the saved one (after save, open, close, model switch).
    void markProjectClean();
    /// Something saved in the project other than the editor's recipe changed.
    void markProjectDirty();
    void updateModifiedState();
    void updateWindowTitle();
    /// After a model loaded (not by a project): asks whether to keep a non-empty recipe and
    /// lists its targets that match nothing; the new model starts unmodified.
    void afterModelSwitch(bool hadModel);
    void connectModifiedTracking();
    std::function<Answer(Prompt, const QString&)> m_promptAnswerer;
    std::string m_savedRecipeJson;    ///< the editor's recipe when last saved / opened
    bool m_dirty = false;             ///< other project state changed since
    bool m_modified = false;          ///< as last shown
    bool m_closeConfirmed = false;    ///< the unsaved-changes prompt of this quit was answered
    bool m_skipUnsavedPrompt = false; ///< openModel() called by openProject()
    quint64 m_changeSerial = 0;       ///< counts markProjectDirty() and recipe edits
    QString m_lastSaveError;
};

} // namespace lcw
