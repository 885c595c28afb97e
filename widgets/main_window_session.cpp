// MainWindow: the model session: opening models (dialogs, recent list, Hugging Face snapshots),
// switching to a loaded model, the Tensors table and its filter.
#include "widgets/main_window.h"
#include "widgets/main_window_private.h"

#include "core/common/error.h"
#include "core/compress/recipe.h"
#include "core/model/hf_cache.h"
#include "core/stats/fingerprint.h"
#include "plots/bar_plot.h"
#include "widgets/compare_panel.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/log_panel.h"
#include "widgets/model_summary_panel.h"
#include "widgets/number_format.h"
#include "widgets/recent_list.h"
#include "widgets/recipe_editor.h"
#include "widgets/regex_filter_proxy.h"
#include "widgets/run_panel.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/stats_panel.h"

#include <QApplication>
#include <QClipboard>
#include <QDateTime>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFontMetrics>
#include <QInputDialog>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLineEdit>
#include <QSortFilterProxyModel>
#include <QStatusBar>
#include <QStyle>
#include <QTableView>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

namespace lcw {

using namespace mw;

QString mw::globToRegex(const QString& glob) {
    return QString::fromStdString(Regex::fromGlob(glob.toStdString()));
}

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
    // RE2 (core/common/pattern.h): matching is linear-time, a typed pattern cannot hang the UI.
    const QString t = text.trimmed();
    std::string pattern;
    if (t.startsWith(QStringLiteral("re:")))
        pattern = t.mid(3).toStdString();
    else if (t.contains(QLatin1Char('*')) || t.contains(QLatin1Char('?')))
        pattern = globToRegex(t).toStdString();
    else
        pattern = Regex::escape(t.toStdString());
    QString error;
    try {
        static_cast<RegexFilterProxy*>(m_proxy)->setFilterRegex(
            t.isEmpty() ? std::nullopt
                        : std::optional<Regex>(Regex::cached(pattern, Regex::Case::Insensitive)));
    } catch (const RegexError& e) {
        error = QString::fromStdString(e.problem());
    }
    m_filter->setStyleSheet(error.isEmpty() ? QString()
                                            : QStringLiteral("QLineEdit { color: #b00020; }"));
    m_filter->setToolTip(error.isEmpty() ? QString()
                                         : tr("Invalid regular expression: %1").arg(error));
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
