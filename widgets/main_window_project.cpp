// MainWindow: project I/O: saving, opening and autosaving projects, unsaved-changes prompts,
// crash recovery, a recipe carried to another model.
#include "widgets/main_window.h"
#include "widgets/main_window_private.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/compress/recipe.h"
#include "core/project/project.h"
#include "core/stats/fingerprint.h"
#include "widgets/compare_panel.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/log_panel.h"
#include "widgets/recent_list.h"
#include "widgets/recipe_editor.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/stats_panel.h"

#include <QCoreApplication>
#include <QDir>
#include <QEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QSortFilterProxyModel>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTimer>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

namespace lcw {

using namespace mw;

namespace {

/// How a JSON part of a project file is named in errors: "PROJECT (part NAME)".
std::string projectPart(const QString& projectPath, const std::string& part) {
    return QDir::toNativeSeparators(projectPath).toStdString() + " (part " + part + ")";
}

} // namespace

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
    if (const auto files = m_comparePanel->modelFiles(); !files.empty()) {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& [name, path] : files)
            list.push_back({{"name", name.toStdString()}, {"path", path.toStdString()}});
        p.results.push_back({kCompareModelFiles, nlohmann::json{{"files", list}}.dump()});
    }
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

namespace {

/// Writes a project's statistics file into the statistics cache (where the inspector finds it
/// without recomputing) unless it is there; returns a warning, empty when fine.
QString restoreProjectStats(const project::Project& p, const QString& cacheDir) {
    if (p.statsFile.empty() || p.statsName.empty()) return {};
    const QString target =
        cacheDir + QLatin1Char('/') + QFileInfo(QString::fromStdString(p.statsName)).fileName();
    if (QFileInfo::exists(target)) return {};
    try {
        QDir().mkpath(cacheDir);
        writeFileAtomic(target.toStdString(), p.statsFile.data(), p.statsFile.size());
    } catch (const std::exception& e) {
        return QCoreApplication::translate("lcw::MainWindow",
                                           "Could not restore the statistics: %1")
            .arg(QString::fromUtf8(e.what()));
    }
    return {};
}

} // namespace

bool MainWindow::openProject(const QString& path) {
    if (!confirmUnsavedChanges(tr("opening the project %1").arg(QDir::toNativeSeparators(path))))
        return false;
    // A newer request replaces an older one: the older read's result is dropped.
    if (m_projectReadJob != 0) m_runner->cancel(m_projectReadJob);
    const std::string stdPath = path.toStdString();
    const QString cacheDir = StatsPanel::cacheDir();
    const QString name = QFileInfo(path).fileName();
    // Reading (and, for an older or foreign file, converting it in a child process) and writing
    // the embedded statistics back into the cache happen on the task runner's worker thread.
    std::function<ProjectRead(Progress&)> job = [stdPath, cacheDir, name](Progress& p) {
        p.report(0.0, ("reading " + name).toStdString());
        ProjectRead r;
        r.project = std::make_shared<project::Project>(project::load(stdPath));
        if (!p.report(0.8, "statistics")) return ProjectRead{};
        r.statsWarning = restoreProjectStats(*r.project, cacheDir);
        p.report(1.0, "done");
        return r;
    };
    statusBar()->showMessage(tr("Opening project %1…").arg(QDir::toNativeSeparators(path)));
    const quint64 serial = m_changeSerial; // what the unsaved-changes answer above was about
    auto self = std::make_shared<TaskRunner::JobId>(0);
    *self = m_runner->submit<ProjectRead>(
        tr("Opening project %1").arg(name), std::move(job), this,
        [this, path, self, serial](ProjectRead r) {
            if (m_projectReadJob != *self) return; // superseded by a newer request
            m_projectReadJob = 0;
            applyProjectRead(path, std::move(r), serial);
        },
        [this, path, self](const QString& message) {
            if (m_projectReadJob != *self) return;
            m_projectReadJob = 0;
            statusBar()->clearMessage();
            showError(tr("Open Project"), tr("Could not open the project"), message);
            emit projectFileRead(path, false);
        },
        [this, path, self] {
            if (m_projectReadJob != *self) return;
            m_projectReadJob = 0;
            statusBar()->showMessage(tr("Opening the project cancelled"), 5000);
            emit projectFileRead(path, false);
        });
    m_projectReadJob = *self;
    return true;
}

void MainWindow::applyProjectRead(const QString& path, ProjectRead r, quint64 serial) {
    // Work changed while the file was read: ask again before replacing it.
    if (serial != m_changeSerial &&
        !confirmUnsavedChanges(tr("opening the project %1").arg(QDir::toNativeSeparators(path)))) {
        statusBar()->clearMessage();
        emit projectFileRead(path, false);
        return;
    }
    if (!r.statsWarning.isEmpty()) m_log->warning(r.statsWarning);
    statusBar()->clearMessage();
    const QString modelPath = QString::fromStdString(r.project->modelPath);
    m_pendingProject = std::move(r.project);
    m_pendingProjectPath = path;
    emit projectFileRead(path, true);
    if (m_model && QFileInfo(m_modelPath) == QFileInfo(modelPath)) {
        m_statsPanel->setModel(m_model, m_modelPath, m_statsPanel->fingerprint());
        applyProject();
    } else {
        m_skipUnsavedPrompt = true; // asked above
        openModel(modelPath);
        m_skipUnsavedPrompt = false;
    }
}

void MainWindow::restoreCompareModelFiles(const project::Project& p, const QString& path) {
    for (const project::NamedJson& r : p.results) {
        if (r.name != kCompareModelFiles) continue;
        const nlohmann::json j = parseJsonText(r.json, projectPart(path, r.name));
        for (const auto& f : j.at("files")) {
            const QString file = QString::fromStdString(f.at("path").get<std::string>());
            QString error;
            if (!m_comparePanel->addModelFile(file, &error))
                m_log->warning(tr("The project %1 compares with %2, which cannot be added: %3")
                                   .arg(QDir::toNativeSeparators(path),
                                        QDir::toNativeSeparators(file), error));
        }
    }
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
                editor =
                    compress::Recipe::fromJson(parseJsonText(r.json, projectPart(path, r.name)));
            else if (name.startsWith(QLatin1String(kFileRecipePrefix)))
                m_comparePanel->addExtraRecipe(name.mid(int(strlen(kFileRecipePrefix))),
                                               QString::fromStdString(r.json));
        }
        m_recipeEditor->resetRecipe(editor);
        restoreCompareModelFiles(*p, path);
        CompareResults results;
        for (const project::NamedJson& r : p->results)
            if (r.name == kCompareResults) results = CompareResults::fromJson(r.json);
        m_measuredRecipe.clear();
        m_layerModel->setMeasuredErrors({}, {});
        for (const project::NamedJson& r : p->results)
            if (r.name == kSensitivityScan &&
                !m_sensitivityPanel->showScanJson(parseJsonText(r.json, projectPart(path, r.name)),
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
            const nlohmann::json e = parseJsonText(r.json, projectPart(path, r.name));
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
            const nlohmann::json ui = parseJsonText(p->uiState, projectPart(path, "ui_state"));
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

} // namespace lcw
