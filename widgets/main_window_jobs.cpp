// MainWindow: jobs on the model: measured layer errors and the recipe columns, importance
// matrices, export, metadata and tensor-value dialogs, the shortcut list.
#include "widgets/main_window.h"
#include "widgets/main_window_private.h"

#include "core/common/error.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/io/model_metadata.h"
#include "plots/grouped_bar_plot.h"
#include "plots/scatter_plot.h"
#include "widgets/compare_panel.h"
#include "widgets/export_dialog.h"
#include "widgets/imatrix_dialog.h"
#include "widgets/imatrix_manager.h"
#include "widgets/layer_table_model.h"
#include "widgets/log_panel.h"
#include "widgets/metadata_dialog.h"
#include "widgets/recipe_editor.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/shortcuts_dialog.h"
#include "widgets/stats_panel.h"
#include "widgets/tensor_values_dialog.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QHeaderView>
#include <QSortFilterProxyModel>
#include <QStatusBar>
#include <QTableView>
#include <QtConcurrent/QtConcurrentRun>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

namespace lcw {

using namespace mw;

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
    if (HfExportPanel* h = d.hfPanel()) {
        connect(h, &HfExportPanel::logMessage, m_log, &LogPanel::info);
        connect(h, &HfExportPanel::failed, m_log, &LogPanel::error);
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

} // namespace lcw
