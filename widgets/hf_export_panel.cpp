#include "widgets/hf_export_panel.h"

#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/export/compressed_tensors.h"
#include "core/export/gptq_awq.h"

#include <QComboBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QTableWidget>
#include <QToolButton>
#include <QVBoxLayout>

#include <cmath>

namespace lcw {

namespace {

/// The Hugging Face checkpoint formats of the page (one line each).
struct FormatEntry {
    const char* name;
    std::unique_ptr<HfQuantFormat> (*make)();
};
const FormatEntry kFormats[] = {
    {"compressed-tensors", &compressedTensorsFormat},
    {"gptq", [] { return gptqFormat(); }},
    {"awq", &awqFormat},
};

using Result = std::shared_ptr<const HfCheckpointResult>;

Result runHfExport(std::shared_ptr<const Model> model, const compress::Recipe& recipe,
                   const std::string& format, const std::string& out, Progress& p) {
    std::unique_ptr<HfQuantFormat> fmt;
    for (const auto& f : kFormats)
        if (format == f.name) fmt = f.make();
    if (!fmt) throw ArgumentError("unknown checkpoint format '" + format + "'");
    // The recipe's configuration, calibrated on the bundled text when a method needs it (as the
    // GGUF page and the rest of the workbench do).
    compress::CompressOptions co;
    std::unique_ptr<compress::CalibrationSet> cal;
    compress::PlanOptions po;
    po.hasCalibration = model->hasTokenizer();
    if (po.hasCalibration && compress::planRecipe(recipe, *model, po).needsCalibration()) {
        cal = std::make_unique<compress::CalibrationSet>(
            compress::loadCalibration(*model, "", {8, 128}));
        co.calibration = cal.get();
    }
    RangeProgress cp(p, 0.0, 0.5, "compress: ");
    compress::CompressResult cr = compress::compress(*model, recipe, cp, co);
    auto r = std::make_shared<HfCheckpointResult>();
    if (cr.status == Status::Cancelled || !cr.model) {
        r->status = Status::Cancelled;
        return r;
    }
    RangeProgress ep(p, 0.5, 1.0, "write: ");
    HfCheckpointOptions o;
    o.outDir = out;
    o.progress = &ep;
    *r = exportHfCheckpoint(*model, *cr.model, *fmt, o);
    return r;
}

} // namespace

HfExportPanel::HfExportPanel(Context context, QWidget* parent)
    : ExportPanelBase(std::move(context), parent) {
    auto* form = new QFormLayout;
    m_format = new QComboBox(this);
    for (const auto& f : kFormats) m_format->addItem(QString::fromLatin1(f.name));
    m_format->setToolTip(tr("compressed-tensors: what llm-compressor writes; gptq: AutoGPTQ / "
                            "GPTQModel; awq: AutoAWQ GEMM. vLLM and transformers load them"));
    form->addRow(tr("Format:"), m_format);
    m_output = new QLineEdit(this);
    m_output->setPlaceholderText(tr("a new folder"));
    auto* browse = new QToolButton(this);
    browse->setText(tr("…"));
    connect(browse, &QToolButton::clicked, this, [this] {
        const QString d =
            QFileDialog::getSaveFileName(this, tr("Checkpoint folder"), m_output->text());
        if (!d.isEmpty()) m_output->setText(d);
    });
    auto* outRow = new QHBoxLayout;
    outRow->addWidget(m_output, 1);
    outRow->addWidget(browse);
    form->addRow(tr("Output folder:"), outRow);
    auto* note = new QLabel(
        tr("Writes the recipe editor's configuration. Modules the format cannot hold (NF4, GGUF "
           "types, outlier columns, Conv1D) are written as exact floats and listed as ignored."),
        this);
    note->setWordWrap(true);
    form->addRow(note);

    m_start = new QPushButton(tr("Export"), this);
    m_cancel = new QPushButton(tr("Cancel"), this);
    m_progress = new QProgressBar(this);
    m_progress->setRange(0, 1000);
    auto* runRow = new QHBoxLayout;
    runRow->addWidget(m_start);
    runRow->addWidget(m_cancel);
    runRow->addWidget(m_progress, 1);
    m_summary = new QLabel(this);
    m_summary->setWordWrap(true);
    m_table = new QTableWidget(0, 4, this);
    m_table->setHorizontalHeaderLabels({tr("Module"), tr("Status"), tr("Scheme"), tr("Note")});
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);

    auto* lay = new QVBoxLayout(this);
    lay->addLayout(form);
    lay->addLayout(runRow);
    lay->addWidget(m_summary);
    lay->addWidget(m_table, 1);

    connect(m_start, &QPushButton::clicked, this, [this] { start(); });
    connect(m_cancel, &QPushButton::clicked, this, &HfExportPanel::cancel);
    connectProgress();
    syncUi();
}

HfExportPanel::~HfExportPanel() {
    cancel(); // the job keeps what it needs; cancelled, it leaves nothing
}

void HfExportPanel::setOutputFolder(const QString& path) {
    m_output->setText(path);
}
QString HfExportPanel::outputFolder() const {
    return m_output->text();
}
bool HfExportPanel::setFormat(const QString& name) {
    const int i = m_format->findText(name);
    if (i < 0) return false;
    m_format->setCurrentIndex(i);
    return true;
}
QString HfExportPanel::format() const {
    return m_format->currentText();
}

void HfExportPanel::syncUi() {
    m_start->setEnabled(!m_job && m_ctx.model);
    m_cancel->setEnabled(m_job != 0);
}

bool HfExportPanel::start() {
    if (!canStart()) return false;
    const std::string out = outputFolder().toStdString();
    if (out.empty()) {
        fail(tr("Choose the output folder."));
        return false;
    }
    compress::Recipe recipe;
    if (m_ctx.recipe) recipe = m_ctx.recipe();
    if (recipe.rules.empty()) {
        fail(tr("The recipe is empty: choose what to quantise in the recipe editor first."));
        return false;
    }
    std::function<Result(Progress&)> job = [model = m_ctx.model, recipe,
                                            fmt = format().toStdString(), out](Progress& p) {
        return runHfExport(model, recipe, fmt, out, p);
    };
    beginExport();
    m_result.reset();
    submitExport<Result>(
        tr("%1 export to %2").arg(format(), outputFolder()), std::move(job),
        tr("Cancelled: nothing written."),
        [](const Result& r) { return r && r->status == Status::Ok; },
        [this](Result r) { showResult(std::move(r)); });
    return true;
}

void HfExportPanel::showResult(std::shared_ptr<const HfCheckpointResult> r) {
    m_result = std::move(r);
    const HfCheckpointResult& res = *m_result;
    m_progress->setValue(1000);
    m_progress->setFormat(tr("done"));
    m_table->setRowCount(int(res.modules.size()));
    int written = 0;
    for (int i = 0; i < int(res.modules.size()); ++i) {
        const HfModuleReport& m = res.modules[size_t(i)];
        m_table->setItem(i, ModuleColumn, new QTableWidgetItem(QString::fromStdString(m.module)));
        m_table->setItem(i, StatusColumn, new QTableWidgetItem(QString::fromStdString(m.status)));
        m_table->setItem(i, SchemeColumn, new QTableWidgetItem(QString::fromStdString(m.scheme)));
        m_table->setItem(i, NoteColumn, new QTableWidgetItem(QString::fromStdString(m.reason)));
        written += m.status == "written";
    }
    m_summary->setText(
        tr("Wrote %1 (%2): %3 modules in the format, %4 left in floats, %5 MB "
           "of tensors.")
            .arg(QString::fromStdString(res.path), QString::fromStdString(res.format))
            .arg(written)
            .arg(res.ignored.size())
            .arg(double(res.tensorBytes) / 1e6, 0, 'f', 2));
    for (const auto& w : res.warnings) emit logMessage(QString::fromStdString("export: " + w));
    emit logMessage(m_summary->text());
}

} // namespace lcw
