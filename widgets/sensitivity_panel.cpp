#include "widgets/sensitivity_panel.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/eval/autotune.h"
#include "core/stats/fingerprint.h"
#include "core/tokenizer/tokenizer.h"
#include "plots/bar_plot.h"
#include "widgets/run_panel.h"

#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QLabel>
#include <QListWidget>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <set>

namespace lcw {

SensitivityPanel::SensitivityPanel(TaskRunner* runner, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_textFile(RunPanel::defaultTextFile()) {
    auto* top = new QVBoxLayout(this);
    top->setContentsMargins(6, 6, 6, 6);
    top->addLayout(buildControls());
    top->addLayout(buildStatusRow());
    top->addWidget(m_status);
    top->addWidget(buildResults(), 1);
    connectButtons();
    connectResults();
    syncUi();
}

// Schemes to scan | granularity, context, chunks | scan, autotune and file buttons.
QLayout* SensitivityPanel::buildControls() {
    auto* controls = new QHBoxLayout;
    m_schemeList = new QListWidget(this);
    m_schemeList->setMaximumHeight(90);
    m_schemeList->setToolTip(tr("Weight schemes (the presets' weight sections) to scan"));
    for (const auto& p : compress::presets()) {
        auto* it = new QListWidgetItem(QString::fromStdString(p.name), m_schemeList);
        it->setFlags(it->flags() | Qt::ItemIsUserCheckable);
        it->setCheckState(p.name == "W4A16-g32" ? Qt::Checked : Qt::Unchecked);
        it->setToolTip(QString::fromStdString(p.description));
    }
    auto* form = new QFormLayout;
    m_granularity = new QComboBox(this);
    m_granularity->addItems({QStringLiteral("layer"), QStringLiteral("block")});
    m_ctx = new QSpinBox(this);
    m_ctx->setRange(4, 8192);
    m_ctx->setValue(128);
    m_chunks = new QSpinBox(this);
    m_chunks->setRange(1, 100000);
    m_chunks->setValue(4);
    form->addRow(tr("Granularity"), m_granularity);
    form->addRow(tr("Context"), m_ctx);
    form->addRow(tr("Chunks"), m_chunks);
    controls->addWidget(m_schemeList, 1);
    controls->addLayout(form);
    controls->addLayout(buildButtons());
    return controls;
}

QLayout* SensitivityPanel::buildButtons() {
    auto* buttons = new QVBoxLayout;
    m_runButton = new QPushButton(tr("Scan"), this);
    m_cancelButton = new QPushButton(tr("Cancel"), this);
    m_autotuneButton = new QPushButton(tr("Autotune to Budget…"), this);
    m_autotuneButton->setToolTip(
        tr("Mixed precision from this scan: one scanned scheme per target, least summed KLD within "
           "a whole-model bits/weight budget, as the recipe editor's budget line counts it "
           "(default: the recipe editor's target)"));
    buttons->addWidget(m_runButton);
    buttons->addWidget(m_cancelButton);
    buttons->addWidget(m_autotuneButton);
    auto* files = new QHBoxLayout;
    m_openButton = new QPushButton(tr("Open Scan…"), this);
    m_openButton->setToolTip(tr("Show a scan saved here or by 'lcw-cli sensitivity --out' (it "
                                "must be of the open model)"));
    m_saveButton = new QPushButton(tr("Save Scan…"), this);
    m_saveButton->setToolTip(tr("Write the scan as JSON ('lcw-cli autotune --scan' reads it)"));
    files->addWidget(m_openButton);
    files->addWidget(m_saveButton);
    buttons->addLayout(files);
    return buttons;
}

// Progress and the scheme shown; the status line (m_status) goes below it.
QLayout* SensitivityPanel::buildStatusRow() {
    auto* statusRow = new QHBoxLayout;
    m_progress = new QProgressBar(this);
    m_progress->setRange(0, 1000);
    m_status = new QLabel(this);
    m_status->setWordWrap(true);
    m_show = new QComboBox(this);
    m_show->setSizeAdjustPolicy(QComboBox::AdjustToContents);
    statusRow->addWidget(m_progress);
    statusRow->addWidget(new QLabel(tr("Show:"), this));
    statusRow->addWidget(m_show);
    return statusRow;
}

// The shown scheme's targets: bars of their mean KLD above the ranked table.
QWidget* SensitivityPanel::buildResults() {
    auto* split = new QSplitter(Qt::Vertical, this);
    m_bars = new BarPlot(split);
    m_bars->setValueAxisLabel(tr("mean KLD (nats)"));
    m_bars->setTooltipFormatter([this](int i, const QString& label, double v) {
        QString t = tr("%1\nmean KLD %2").arg(label).arg(v, 0, 'g', 4);
        if (i >= 0 && i < int(m_barEntries.size()))
            t += tr("\nrank %1, %2 bits/weight")
                     .arg(m_barEntries[size_t(i)]->rank)
                     .arg(m_barEntries[size_t(i)]->bitsPerWeight(), 0, 'f', 3);
        return t;
    });
    m_table = new QTableWidget(0, ColumnCount, split);
    m_table->setHorizontalHeaderLabels(
        {tr("Rank"), tr("Target"), tr("Mean KLD"), tr("Same top %"), tr("Bits/w")});
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->verticalHeader()->setVisible(false);
    m_table->horizontalHeader()->setStretchLastSection(true);
    split->addWidget(m_bars);
    split->addWidget(m_table);
    // The bars (one per target, rotated labels) need more room than the ranked table.
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    split->setSizes({600, 400});
    return split;
}

void SensitivityPanel::connectButtons() {
    connect(m_runButton, &QPushButton::clicked, this, &SensitivityPanel::run);
    connect(m_cancelButton, &QPushButton::clicked, this, &SensitivityPanel::cancel);
    connect(m_autotuneButton, &QPushButton::clicked, this, [this] {
        bool ok = false;
        const double b = QInputDialog::getDouble(
            this, tr("Autotune"),
            tr("Budget (whole-model bits/weight, as the recipe editor's target):"),
            m_budget ? m_budget() : 4.5, 0.5, 64.0, 3, &ok);
        if (ok) autotuneModel(b);
    });
    connect(m_openButton, &QPushButton::clicked, this, [this] {
        const QString p =
            QFileDialog::getOpenFileName(this, tr("Open Sensitivity Scan"), QString(),
                                         tr("Sensitivity scans (*.json);;All files (*)"));
        if (!p.isEmpty() && !loadScan(p)) QMessageBox::warning(this, tr("Open Scan"), m_lastError);
    });
    connect(m_saveButton, &QPushButton::clicked, this, [this] {
        QString p = QFileDialog::getSaveFileName(this, tr("Save Sensitivity Scan"),
                                                 QStringLiteral("sensitivity.json"),
                                                 tr("Sensitivity scans (*.json);;All files (*)"));
        if (p.isEmpty()) return;
        if (QFileInfo(p).suffix().isEmpty()) p += QStringLiteral(".json");
        if (!saveScan(p)) QMessageBox::warning(this, tr("Save Scan"), m_lastError);
    });
}

// The scheme shown, a target clicked or double-clicked (its first layer requested), progress.
void SensitivityPanel::connectResults() {
    connect(m_show, &QComboBox::currentTextChanged, this, &SensitivityPanel::showScheme);
    connect(m_bars, &BarPlot::barClicked, this, [this](int i) {
        if (i >= 0 && i < int(m_barEntries.size()) && !m_barEntries[size_t(i)]->layers.empty())
            emit tensorRequested(QString::fromStdString(m_barEntries[size_t(i)]->layers.front()));
    });
    connect(m_table, &QTableWidget::cellDoubleClicked, this, [this](int row, int) {
        const SchemeScan* s = shown();
        if (s && row < int(s->entries.size()) && !s->entries[size_t(row)].layers.empty())
            emit tensorRequested(QString::fromStdString(s->entries[size_t(row)].layers.front()));
    });
    connect(m_runner, &TaskRunner::progressChanged, this,
            [this](TaskRunner::JobId id, double f, const QString& stage) {
                if (id != m_job) return;
                m_progress->setValue(int(f * 1000));
                m_status->setText(stage);
            });
}

void SensitivityPanel::setModel(std::shared_ptr<const Model> model) {
    cancel();
    m_model = std::move(model);
    m_scan.reset();
    m_barEntries.clear();
    m_bars->clear();
    m_table->setRowCount(0);
    m_show->clear();
    m_status->clear();
    syncUi();
}

void SensitivityPanel::setSchemes(const QStringList& presets) {
    for (int i = 0; i < m_schemeList->count(); ++i)
        m_schemeList->item(i)->setCheckState(
            presets.contains(m_schemeList->item(i)->text()) ? Qt::Checked : Qt::Unchecked);
}

QStringList SensitivityPanel::schemes() const {
    QStringList out;
    for (int i = 0; i < m_schemeList->count(); ++i)
        if (m_schemeList->item(i)->checkState() == Qt::Checked)
            out << m_schemeList->item(i)->text();
    return out;
}

void SensitivityPanel::setGranularity(const QString& g) {
    m_granularity->setCurrentText(g);
}
void SensitivityPanel::setContext(int ctx) {
    m_ctx->setValue(ctx);
}
void SensitivityPanel::setMaxChunks(int chunks) {
    m_chunks->setValue(chunks);
}

void SensitivityPanel::syncUi() {
    const bool running = m_job != 0;
    m_runButton->setEnabled(!running && m_model);
    m_cancelButton->setEnabled(running);
    m_autotuneButton->setEnabled(!running && m_scan);
    m_saveButton->setEnabled(bool(m_scan));
    m_openButton->setEnabled(!running && m_model);
}

bool SensitivityPanel::run() {
    if (!m_model || m_job || !m_model->hasTokenizer()) return false;
    std::vector<WeightScheme> schemeList;
    try {
        for (const QString& n : schemes()) schemeList.push_back(schemeFromPreset(n.toStdString()));
    } catch (const std::exception& e) {
        emit failed(QString::fromUtf8(e.what()));
        return false;
    }
    if (schemeList.empty()) return false;
    SensitivityOptions so;
    so.granularity = m_granularity->currentIndex() == 1 ? SensitivityGranularity::Block
                                                        : SensitivityGranularity::Layer;
    so.eval.ctx = m_ctx->value();
    so.eval.batch = so.eval.ctx;
    so.eval.maxChunks = m_chunks->value();
    auto model = m_model;
    const std::string textFile = m_textFile.toStdString();
    std::function<std::shared_ptr<const SensitivityScan>(Progress&)> job = [model, schemeList, so,
                                                                            textFile](Progress& p) {
        const Tokenizer& tk = model->tokenizer();
        SensitivityOptions o = so;
        o.eval.bosId = tk.bosId();
        const std::vector<int32_t> tokens = tk.encode(readTextFile(textFile), true);
        return std::make_shared<const SensitivityScan>(
            scanSensitivity(*model, schemeList, tokens, o, p));
    };
    m_progress->setValue(0);
    m_status->setText(tr("Scanning…"));
    m_job = m_runner->submit<std::shared_ptr<const SensitivityScan>>(
        tr("Sensitivity scan"), job, this,
        [this, textFile](std::shared_ptr<const SensitivityScan> s) {
            m_job = 0;
            syncUi();
            if (s->status == Status::Cancelled) {
                m_status->setText(tr("Cancelled."));
                emit cancelled();
                return;
            }
            setScan(std::move(s), QString::fromStdString(textFile));
            emit logMessage(tr("Sensitivity scan done: %1").arg(m_status->text()));
            emit finished();
        },
        [this](const QString& message) {
            m_job = 0;
            m_status->setText(message);
            syncUi();
            emit failed(message);
        },
        [this] {
            m_job = 0;
            m_status->setText(tr("Cancelled."));
            syncUi();
            emit cancelled();
        });
    syncUi();
    return true;
}

void SensitivityPanel::cancel() {
    if (m_job) m_runner->cancel(m_job);
}

const SchemeScan* SensitivityPanel::shown() const {
    return m_scan ? m_scan->find(m_show->currentText().toStdString()) : nullptr;
}

QString SensitivityPanel::shownScheme() const {
    return shown() ? m_show->currentText() : QString();
}

void SensitivityPanel::showScheme(const QString& name) {
    if (m_show->currentText() != name) m_show->setCurrentText(name);
    m_barEntries.clear();
    m_table->setRowCount(0);
    const SchemeScan* s = shown();
    if (!s) return m_bars->clear();
    // Bars in model order, the table in rank order (the scan's).
    for (const SensitivityEntry& e : s->entries) m_barEntries.push_back(&e);
    std::sort(
        m_barEntries.begin(), m_barEntries.end(),
        [](const SensitivityEntry* a, const SensitivityEntry* b) { return a->order < b->order; });
    QStringList labels;
    QVector<double> values;
    for (const SensitivityEntry* e : m_barEntries) {
        labels << QString::fromStdString(e->target);
        values << e->stats.kld.mean;
    }
    m_bars->setTitle(
        tr("Mean KLD per %1, %2")
            .arg(QString::fromLatin1(sensitivityGranularityName(m_scan->granularity)), name));
    m_bars->setBars(labels, values);
    m_table->setRowCount(int(s->entries.size()));
    for (int i = 0; i < int(s->entries.size()); ++i) {
        const SensitivityEntry& e = s->entries[size_t(i)];
        const QString cells[] = {QString::number(e.rank), QString::fromStdString(e.target),
                                 QString::number(e.stats.kld.mean, 'g', 5),
                                 QString::number(e.stats.sameTop * 100.0, 'f', 2),
                                 QString::number(e.bitsPerWeight(), 'f', 3)};
        for (int c = 0; c < ColumnCount; ++c) {
            auto* it = new QTableWidgetItem(cells[c]);
            if (c != TargetColumn) it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
            if (c == TargetColumn && !e.note.empty())
                it->setToolTip(QString::fromStdString(e.note));
            m_table->setItem(i, c, it);
        }
    }
    m_table->resizeColumnsToContents();
}

void SensitivityPanel::setScan(std::shared_ptr<const SensitivityScan> scan,
                               const QString& textFile) {
    m_scan = std::move(scan);
    m_scanTextFile = textFile;
    const QString keep = m_show->currentText();
    m_show->blockSignals(true);
    m_show->clear();
    for (const SchemeScan& sc : m_scan->schemes)
        m_show->addItem(QString::fromStdString(sc.scheme.name));
    if (m_show->findText(keep) >= 0) m_show->setCurrentText(keep);
    m_show->blockSignals(false);
    showScheme(m_show->currentText());
    m_progress->setValue(1000);
    m_status->setText(tr("%1 chunks of %2 tokens, baseline PPL %3, %4 s")
                          .arg(m_scan->chunks)
                          .arg(m_scan->ctx)
                          .arg(m_scan->baselinePpl, 0, 'f', 3)
                          .arg(m_scan->seconds, 0, 'f', 1));
    syncUi();
}

void SensitivityPanel::fail(const QString& message) {
    m_lastError = message;
    m_status->setText(message);
    emit logMessage(message);
}

namespace {
/// The problem without the file name for FormatError (the message names the file already).
QString problemOf(const std::exception& e) {
    if (const auto* f = dynamic_cast<const FormatError*>(&e))
        return QString::fromStdString(f->problem());
    return QString::fromUtf8(e.what());
}
} // namespace

std::string SensitivityPanel::scanJson() const {
    if (!m_scan) return {};
    nlohmann::ordered_json j = sensitivityToJson(*m_scan);
    j["text_file"] = m_scanTextFile.toStdString();
    return j.dump(1) + "\n";
}

bool SensitivityPanel::saveScan(const QString& path) {
    if (!m_scan) {
        fail(tr("Save Scan: there is no scan to save"));
        return false;
    }
    try {
        // The same layout as `lcw-cli sensitivity --out`.
        writeFileAtomic(path.toStdString(), scanJson());
    } catch (const std::exception& e) {
        fail(tr("Could not save the scan to %1: %2").arg(path, QString::fromUtf8(e.what())));
        return false;
    }
    m_lastError.clear();
    emit logMessage(tr("Sensitivity scan saved to %1").arg(path));
    return true;
}

bool SensitivityPanel::loadScan(const QString& path) {
    nlohmann::json j;
    try {
        j = readJsonFile(path.toStdString());
    } catch (const std::exception& e) {
        fail(tr("Cannot open the scan %1: %2").arg(path, problemOf(e)));
        return false;
    }
    if (!showScanJson(j, path)) return false;
    emit scanLoaded(path);
    return true;
}

bool SensitivityPanel::showScanJson(const nlohmann::json& j, const QString& origin) {
    const std::string p = origin.toStdString();
    if (m_job) {
        fail(tr("Cannot open the scan %1 while a scan runs").arg(origin));
        return false;
    }
    if (!m_model) {
        fail(tr("Cannot open the scan %1: open its model first").arg(origin));
        return false;
    }
    std::shared_ptr<SensitivityScan> scan;
    QString textFile;
    try {
        scan = std::make_shared<SensitivityScan>(sensitivityFromJson(j, p));
        if (j.contains("text_file") && j["text_file"].is_string())
            textFile = QString::fromStdString(j["text_file"].get<std::string>());
        // A scan's sizes and KLDs belong to one model: the fingerprint, and every target must
        // be one of this model's (the same check as `lcw-cli autotune --scan`).
        const std::string fp = m_fingerprint ? m_fingerprint() : stats::modelFingerprint(*m_model);
        if (scan->baseFingerprint != fp)
            throw FormatError(p, "it was made on another model (" + scan->model + ", fingerprint " +
                                     scan->baseFingerprint + ")");
        std::set<std::string> targets;
        for (const auto& t : sensitivityTargets(*m_model, scan->granularity))
            targets.insert(t.first);
        for (const SchemeScan& ss : scan->schemes)
            for (const SensitivityEntry& e : ss.entries)
                if (!targets.count(e.target))
                    throw FormatError(p, "target '" + e.target + "' is not in the open model");
        if (scan->schemes.empty()) throw FormatError(p, "the scan has no schemes");
    } catch (const std::exception& e) {
        fail(tr("Cannot open the scan %1: %2").arg(origin, problemOf(e)));
        return false;
    }
    // The controls show the settings of the scan.
    m_granularity->setCurrentIndex(scan->granularity == SensitivityGranularity::Block ? 1 : 0);
    if (scan->ctx >= m_ctx->minimum() && scan->ctx <= m_ctx->maximum())
        m_ctx->setValue(int(scan->ctx));
    QStringList names;
    for (const SchemeScan& ss : scan->schemes) names << QString::fromStdString(ss.scheme.name);
    setSchemes(names);
    setScan(std::move(scan), textFile);
    m_lastError.clear();
    emit logMessage(tr("Sensitivity scan opened from %1: %2").arg(origin, m_status->text()));
    return true;
}

bool SensitivityPanel::runAutotune(double budgetBpw,
                                   const std::function<AutotunePlan(const std::string&)>& plan,
                                   const std::function<QString(const AutotunePlan&)>& summary) {
    try {
        const AutotunePlan p = plan("autotune-" + QString::number(budgetBpw, 'f', 2).toStdString());
        const QString what = tr("Autotune to %1 bits/weight").arg(budgetBpw, 0, 'f', 2);
        emit logMessage(tr("%1: %2").arg(what, summary(p)));
        m_lastError.clear();
        emit recipeProduced(p.recipe, what);
        return true;
    } catch (const std::exception& e) {
        m_lastError = QString::fromUtf8(e.what());
        m_status->setText(m_lastError);
        emit logMessage(tr("Autotune: %1").arg(m_lastError));
        return false;
    }
}

bool SensitivityPanel::autotune(double budgetBpw) {
    if (!m_scan) return false;
    return runAutotune(
        budgetBpw,
        [&](const std::string& name) { return planAutotune(*m_scan, budgetBpw, {}, {}, name); },
        [](const AutotunePlan& p) {
            return tr("%1 bits/weight of the quantised layers, estimated KLD %2")
                .arg(p.bitsPerWeight(), 0, 'f', 3)
                .arg(p.estimatedKld, 0, 'g', 4);
        });
}

bool SensitivityPanel::autotuneModel(double modelBudgetBpw) {
    if (!m_scan) return false;
    if (!m_model) {
        m_lastError = tr("Autotune: no model is open");
        m_status->setText(m_lastError);
        return false;
    }
    return runAutotune(
        modelBudgetBpw,
        [&](const std::string& name) {
            return planAutotuneModel(*m_scan, *m_model, modelBudgetBpw, {}, {}, name);
        },
        [](const AutotunePlan& p) {
            return tr("%1 bits/weight (whole model; quantised layers %2), estimated KLD %3")
                .arg(p.modelBitsPerWeight(), 0, 'f', 3)
                .arg(p.bitsPerWeight(), 0, 'f', 3)
                .arg(p.estimatedKld, 0, 'g', 4);
        });
}

} // namespace lcw
