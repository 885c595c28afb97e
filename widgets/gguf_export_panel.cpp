#include "widgets/gguf_export_panel.h"

#include "core/common/mapped_file.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/eval/divergence.h"
#include "core/export/gguf_mix.h"
#include "core/export/gguf_preset.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"
#include "widgets/imatrix_manager.h"
#include "widgets/number_format.h"
#include "widgets/task_status_widget.h"

#include <QButtonGroup>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QRadioButton>
#include <QStandardItemModel>
#include <QStyle>
#include <QTableWidget>
#include <QToolButton>
#include <QVBoxLayout>

#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace lcw {

namespace {

/// Types a tensor without a GGUF type can be re-encoded into (recipe mode).
constexpr DType kOtherTypes[] = {
    DType::F16,  DType::BF16, DType::Q8_0, DType::Q6_K,   DType::Q5_K,   DType::Q5_1, DType::Q5_0,
    DType::Q4_K, DType::Q4_1, DType::Q4_0, DType::IQ4_NL, DType::IQ4_XS, DType::Q3_K, DType::Q2_K};

QString typeName(DType t) {
    try {
        return QString::fromLatin1(llamaCppTypeName(t));
    } catch (const std::exception&) {
        return QString::fromLatin1(dtypeName(t));
    }
}

QString shapeText(const std::vector<int64_t>& s) {
    QStringList parts;
    for (int64_t d : s) parts << QString::number(d);
    return parts.join(QStringLiteral(" × "));
}

/// What the export job needs, taken on the UI thread.
struct Job {
    std::shared_ptr<const Model> model;
    std::optional<LlamaFtype> ftype; ///< nullopt: as the recipe chose
    compress::Recipe recipe;
    std::optional<DType> others;
    std::shared_ptr<const compress::Imatrix> imatrix;
    std::string imatrixPath;
    std::string output;
    bool measureKl = true;
};

/// KL divergence of the written file against `reference` on a few chunks of the bundled text
/// (what lcw-cli export --exact-activations reports): whether the file holds the configuration.
/// Float32 activations in every product, so that weights written exactly give 0 whatever
/// kernels serve them (lcw's int8 g32 codes and the Q8_0 blocks they become read activations
/// in different 8-bit blocks).
std::optional<GgufExportPanel::KlCheck> klCheck(const Model& model, const WeightSource& reference,
                                                const std::string& file, Progress& p) {
    if (!model.hasTokenizer()) return std::nullopt;
    std::ifstream in(stats::builtinCalibrationPath(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::vector<int32_t> tokens = model.tokenizer().encode(ss.str(), true);
    PerplexityOptions po;
    po.ctx = model.spec().maxSeq > 0 ? std::min<int64_t>(128, model.spec().maxSeq) : 128;
    po.batch = po.ctx;
    po.maxChunks = 8;
    po.bosId = model.tokenizer().bosId();
    po.exactActivations = true;
    if (int64_t(tokens.size()) < po.ctx) return std::nullopt;
    const std::unique_ptr<Model> written = Model::load(file);
    const DivergenceResult r =
        compareToBaseline(reference, {{"written", written.get()}}, tokens, po, p);
    if (r.configs.empty() || r.chunks < 1) return std::nullopt;
    return GgufExportPanel::KlCheck{r.configs[0], r.ctx, r.chunks};
}

GgufExportPanel::Outcome runExport(const Job& j, Progress& p) {
    const Model& model = *j.model;
    GgufExportOptions o;
    o.path = j.output;
    // The recipe's configuration (compressed on the bundled calibration text when a method
    // needs it, as everywhere in the workbench; the chosen imatrix replaces the recipe's).
    std::unique_ptr<compress::CompressedModel> overlay;
    double exportFrom = 0.0;
    if (!j.ftype && !j.recipe.rules.empty()) {
        compress::CompressOptions co;
        co.imatrix = j.imatrix.get();
        std::unique_ptr<compress::CalibrationSet> cal;
        compress::PlanOptions po;
        po.hasCalibration = model.hasTokenizer();
        if (po.hasCalibration && compress::planRecipe(j.recipe, model, po).needsCalibration()) {
            cal = std::make_unique<compress::CalibrationSet>(
                compress::loadCalibration(model, "", {8, 128}));
            co.calibration = cal.get();
        }
        RangeProgress cp(p, 0.0, 0.5, "compress: ");
        compress::CompressResult cr = compress::compress(model, j.recipe, cp, co);
        if (cr.status == Status::Cancelled || !cr.model) {
            GgufExportPanel::Outcome r;
            r.result.status = Status::Cancelled;
            return r;
        }
        overlay = std::move(cr.model);
        exportFrom = 0.5;
    }
    const WeightSource& weights = overlay ? static_cast<const WeightSource&>(*overlay) : model;
    std::optional<GgufMix> mixHeld;
    if (j.ftype) {
        GgufMixOptions mo;
        mo.hasImatrix = bool(j.imatrix);
        const GgufMix& mix = mixHeld.emplace(ggufMixFor(model, *j.ftype, mo));
        o.fileType = llamaFtypeInfo(*j.ftype).id;
        o.typeFor = [mix](const GgufTensorInfo& t) {
            const GgufMixChoice* c = mix.find(t.name);
            return c ? c->type : t.defaultType;
        };
    } else {
        o.type = j.others;
    }
    // Importance weights by GGUF name, and what llama-quantize records about the imatrix.
    if (j.imatrix) {
        o.importance = imatrixImportance(*j.imatrix, planGgufTensors(weights, o.type));
        o.metadata = imatrixMetadata(*j.imatrix, j.imatrixPath);
    }
    const bool kl = j.measureKl && model.hasTokenizer();
    const double exportTo = kl ? exportFrom + (1.0 - exportFrom) * 0.7 : 1.0;
    RangeProgress ep(p, exportFrom, exportTo);
    o.progress = &ep;
    GgufExportPanel::Outcome out;
    GgufExportResult& r = out.result;
    r = exportGguf(model, weights, o);
    if (r.status != Status::Ok) return out;
    // A preset's row-length fallbacks happen in the mix (the export then gets the substitute):
    // the report names the type llama.cpp's rules wanted, as llama-quantize's log does.
    if (mixHeld)
        for (GgufTensorReport& t : r.tensors)
            if (const GgufMixChoice* c = mixHeld->find(t.name); c && c->wanted) {
                t.requested = *c->wanted;
                if (t.note.empty())
                    t.note = "rows of " + std::to_string(t.shape.empty() ? 0 : t.shape.back()) +
                             " do not fit " + std::string(llamaCppTypeName(*c->wanted)) + " blocks";
            }
    if (kl) {
        // Cancelling now keeps the file (it is complete); the check is what stops.
        RangeProgress kp(p, exportTo, 1.0, "KL check: ");
        try {
            out.kl = klCheck(model, weights, r.path, kp);
        } catch (const std::exception& e) {
            r.warnings.push_back(std::string("KL check of the written file failed: ") + e.what());
        }
        out.klAgainst = overlay ? "the recipe's configuration" : "the model";
    }
    return out;
}

} // namespace

GgufExportPanel::GgufExportPanel(Context context, QWidget* parent)
    : ExportPanelBase(std::move(context), parent) {
    auto* lay = new QVBoxLayout(this);
    lay->addLayout(buildForm());
    lay->addLayout(buildRunRow());
    m_summary = new QLabel(this);
    m_summary->setWordWrap(true);
    m_summary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    lay->addWidget(m_summary);
    lay->addWidget(buildTensorTable(), 1);
    lay->addWidget(buildCommandView(), 1);
    connectControls();
    syncUi();
}

// What to write, where, with which types and importance matrix, and whether to check it.
QFormLayout* GgufExportPanel::buildForm() {
    auto* form = new QFormLayout;
    form->addRow(tr("Write:"), buildModeRow());
    form->addRow(tr("Output file:"), buildOutputRow());
    addTypeRows(form);
    form->addRow(tr("Importance matrix:"), buildImatrixRow());
    m_klBox = new QCheckBox(tr("Check the written file: KL divergence from what it was written "
                               "from (8 × 128 tokens of the bundled text, float32 activations)"),
                            this);
    m_klBox->setChecked(true);
    form->addRow(QString(), m_klBox);
    return form;
}

QLayout* GgufExportPanel::buildModeRow() {
    m_fileMode = new QRadioButton(tr("GGUF file"), this);
    m_commandMode = new QRadioButton(tr("llama-quantize command and tensor type list"), this);
    m_fileMode->setChecked(true);
    auto* modes = new QButtonGroup(this);
    modes->addButton(m_fileMode);
    modes->addButton(m_commandMode);
    auto* modeRow = new QHBoxLayout;
    modeRow->addWidget(m_fileMode);
    modeRow->addWidget(m_commandMode);
    modeRow->addStretch();
    return modeRow;
}

// The output file, by default beside the model as NAME-lcw.gguf.
QLayout* GgufExportPanel::buildOutputRow() {
    m_output = new QLineEdit(this);
    auto* browse = new QToolButton(this);
    browse->setText(QStringLiteral("…"));
    connect(browse, &QToolButton::clicked, this, [this] {
        const QString p = QFileDialog::getSaveFileName(this, tr("GGUF File"), m_output->text(),
                                                       tr("GGUF (*.gguf);;All files (*)"));
        if (!p.isEmpty()) m_output->setText(p);
    });
    auto* outRow = new QHBoxLayout;
    outRow->addWidget(m_output, 1);
    outRow->addWidget(browse);
    if (m_ctx.model) {
        const QFileInfo fi(m_ctx.modelPath);
        const QString dir = fi.isDir() ? fi.absoluteFilePath() : fi.absolutePath();
        const QString base = fi.isDir() ? fi.fileName() : fi.completeBaseName();
        m_output->setText(QDir(dir).filePath(base + QStringLiteral("-lcw.gguf")));
    }
    return outRow;
}

// Types: the recipe's or a llama.cpp preset's; the type of tensors without a GGUF type.
void GgufExportPanel::addTypeRows(QFormLayout* form) {
    m_types = new QComboBox(this);
    const compress::Recipe editor = m_ctx.recipe ? m_ctx.recipe() : compress::Recipe{};
    m_types->addItem(
        tr("As the recipe chose (%1)")
            .arg(editor.rules.empty()
                     ? tr("empty recipe: stored types")
                     : QString::fromStdString(editor.name.empty() ? "editor recipe" : editor.name)),
        QString::fromLatin1(kRecipeChoice));
    m_types->insertSeparator(m_types->count());
    for (const LlamaFtypeInfo& f : llamaFtypes())
        m_types->addItem(tr("%1 (llama.cpp preset)").arg(QString::fromLatin1(f.name)),
                         QString::fromLatin1(f.name));
    m_types->setCurrentIndex(std::max(0, m_types->findData(QStringLiteral("Q4_K_M"))));
    m_types->setToolTip(tr("llama.cpp presets choose every tensor's type as llama-quantize "
                           "(b4747) does; the recipe keeps the types its GGUF methods chose"));
    form->addRow(tr("Types:"), m_types);
    m_others = new QComboBox(this);
    m_others->addItem(tr("as stored (F32 where the recipe changed values)"));
    for (DType t : kOtherTypes) m_others->addItem(typeName(t), int(t));
    m_othersLabel = new QLabel(tr("Tensors without a GGUF type:"), this);
    form->addRow(m_othersLabel, m_others);
}

// Importance matrix: none, the opened one (chosen when there is one) or a file.
QLayout* GgufExportPanel::buildImatrixRow() {
    m_imatrixCombo = new QComboBox(this);
    m_imatrixCombo->addItem(tr("none"), int(ImatrixSource::None));
    m_imatrixCombo->addItem(tr("the opened one"), int(ImatrixSource::Opened));
    m_imatrixCombo->addItem(tr("a file"), int(ImatrixSource::File));
    m_imatrixFile = new QLineEdit(this);
    m_imatrixFile->setPlaceholderText(tr("imatrix.dat"));
    m_imatrixBrowse = new QToolButton(this);
    m_imatrixBrowse->setText(QStringLiteral("…"));
    connect(m_imatrixBrowse, &QToolButton::clicked, this, [this] {
        const QString p =
            QFileDialog::getOpenFileName(this, tr("Importance Matrix"), m_imatrixFile->text(),
                                         tr("Importance matrices (*.dat);;All files (*)"));
        if (!p.isEmpty()) m_imatrixFile->setText(p);
    });
    auto* imRow = new QHBoxLayout;
    imRow->addWidget(m_imatrixCombo);
    imRow->addWidget(m_imatrixFile, 1);
    imRow->addWidget(m_imatrixBrowse);
    const bool opened = m_ctx.imatrix && m_ctx.imatrix->imatrix();
    if (opened) {
        m_imatrixCombo->setItemText(1, tr("the opened one: %1").arg(m_ctx.imatrix->describe()));
        m_imatrixCombo->setCurrentIndex(1);
    }
    return imRow;
}

QLayout* GgufExportPanel::buildRunRow() {
    auto* runRow = new QHBoxLayout;
    m_start = new QPushButton(tr("Export"), this);
    m_start->setIcon(style()->standardIcon(QStyle::SP_DialogSaveButton));
    m_cancel = new QPushButton(tr("Cancel"), this);
    m_cancel->setIcon(style()->standardIcon(QStyle::SP_DialogCancelButton));
    m_progress = new QProgressBar(this);
    m_progress->setRange(0, 1000);
    m_progress->setTextVisible(true);
    m_eta = new QLabel(this);
    m_eta->setMinimumWidth(110);
    runRow->addWidget(m_start);
    runRow->addWidget(m_cancel);
    runRow->addWidget(m_progress, 1);
    runRow->addWidget(m_eta);
    return runRow;
}

// A row per tensor written (or to be written), in file order until a header is clicked.
QTableWidget* GgufExportPanel::buildTensorTable() {
    m_table = new QTableWidget(0, 6, this);
    m_table->setHorizontalHeaderLabels(
        {tr("Tensor"), tr("Shape"), tr("Type"), tr("Bytes"), tr("Status"), tr("Note")});
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setAlternatingRowColors(true);
    m_table->verticalHeader()->setVisible(false);
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 8);
    // File order until the user clicks a header.
    m_table->horizontalHeader()->setSortIndicator(-1, Qt::AscendingOrder);
    m_table->setSortingEnabled(true);
    return m_table;
}

QPlainTextEdit* GgufExportPanel::buildCommandView() {
    m_commandView = new QPlainTextEdit(this);
    m_commandView->setReadOnly(true);
    m_commandView->setLineWrapMode(QPlainTextEdit::NoWrap);
    QFont mono(QStringLiteral("monospace"));
    mono.setStyleHint(QFont::Monospace);
    m_commandView->setFont(mono);
    return m_commandView;
}

void GgufExportPanel::connectControls() {
    connect(m_start, &QPushButton::clicked, this, [this] { start(); });
    connect(m_cancel, &QPushButton::clicked, this, &GgufExportPanel::cancel);
    connect(m_fileMode, &QRadioButton::toggled, this, [this] { syncUi(); });
    connect(m_types, &QComboBox::currentIndexChanged, this, [this] { syncUi(); });
    connect(m_imatrixCombo, &QComboBox::currentIndexChanged, this, [this] { syncUi(); });
    connectProgress();
}

GgufExportPanel::~GgufExportPanel() {
    // The job keeps what it needs; cancelled, it writes nothing.
    cancel();
}

void GgufExportPanel::syncUi() {
    const bool command = m_commandMode->isChecked();
    const bool recipe = typeChoice() == QLatin1String(kRecipeChoice);
    const bool running = m_job != 0;
    m_start->setText(command ? tr("Write Command") : tr("Export"));
    m_start->setEnabled(bool(m_ctx.model) && !running);
    m_cancel->setEnabled(running);
    m_cancel->setVisible(!command);
    m_progress->setVisible(!command);
    m_eta->setVisible(!command);
    m_table->setVisible(!command);
    m_commandView->setVisible(command);
    m_others->setVisible(recipe && !command);
    m_othersLabel->setVisible(recipe && !command);
    const bool file = m_imatrixCombo->currentData().toInt() == int(ImatrixSource::File);
    m_imatrixFile->setEnabled(file);
    m_imatrixBrowse->setEnabled(file);
    const bool opened = m_ctx.imatrix && m_ctx.imatrix->imatrix();
    if (auto* model = qobject_cast<QStandardItemModel*>(m_imatrixCombo->model()))
        if (QStandardItem* item = model->item(int(ImatrixSource::Opened))) item->setEnabled(opened);
    m_klBox->setVisible(!command);
    for (QWidget* w : std::initializer_list<QWidget*>{m_fileMode, m_commandMode, m_output, m_types,
                                                      m_others, m_imatrixCombo, m_klBox})
        w->setEnabled(!running);
}

void GgufExportPanel::setMode(Mode m) {
    (m == Mode::File ? m_fileMode : m_commandMode)->setChecked(true);
    syncUi();
}

GgufExportPanel::Mode GgufExportPanel::mode() const {
    return m_commandMode->isChecked() ? Mode::Command : Mode::File;
}

void GgufExportPanel::setOutputPath(const QString& path) {
    m_output->setText(path);
}

QString GgufExportPanel::outputPath() const {
    return m_output->text().trimmed();
}

bool GgufExportPanel::setTypeChoice(const QString& choice) {
    for (int i = 0; i < m_types->count(); ++i)
        if (m_types->itemData(i).toString().compare(choice, Qt::CaseInsensitive) == 0) {
            m_types->setCurrentIndex(i);
            return true;
        }
    return false;
}

QString GgufExportPanel::typeChoice() const {
    return m_types->currentData().toString();
}

void GgufExportPanel::setOtherTensorsType(std::optional<DType> t) {
    m_others->setCurrentIndex(t ? std::max(0, m_others->findData(int(*t))) : 0);
}

void GgufExportPanel::setKlCheck(bool on) {
    m_klBox->setChecked(on);
}

void GgufExportPanel::setImatrixSource(ImatrixSource s, const QString& file) {
    m_imatrixCombo->setCurrentIndex(m_imatrixCombo->findData(int(s)));
    if (s == ImatrixSource::File) m_imatrixFile->setText(file);
    syncUi();
}

GgufExportPanel::ImatrixSource GgufExportPanel::imatrixSource() const {
    return ImatrixSource(m_imatrixCombo->currentData().toInt());
}

std::shared_ptr<const compress::Imatrix> GgufExportPanel::chosenImatrix(QString* path) const {
    switch (imatrixSource()) {
    case ImatrixSource::None:
        return nullptr;
    case ImatrixSource::Opened:
        if (!m_ctx.imatrix || !m_ctx.imatrix->imatrix())
            throw Error("no importance matrix is open (File ▸ Open Importance Matrix…)");
        *path = m_ctx.imatrix->path();
        return m_ctx.imatrix->imatrix();
    case ImatrixSource::File: {
        *path = m_imatrixFile->text().trimmed();
        if (path->isEmpty()) throw Error("choose the importance matrix file");
        auto m = std::make_shared<compress::Imatrix>(compress::readImatrix(path->toStdString()));
        compress::checkImatrix(*m, *m_ctx.model);
        return m;
    }
    }
    return nullptr;
}

bool GgufExportPanel::start() {
    if (!canStart()) return false;
    if (mode() == Mode::Command) return writeCommand();
    Job j;
    j.model = m_ctx.model;
    j.output = outputPath().toStdString();
    QString imPath;
    try {
        if (j.output.empty()) throw Error("choose the output file");
        if (typeChoice() != QLatin1String(kRecipeChoice))
            j.ftype = llamaFtypeFromName(typeChoice().toStdString());
        else if (m_ctx.recipe)
            j.recipe = m_ctx.recipe();
        if (m_others->currentIndex() > 0) j.others = DType(m_others->currentData().toInt());
        j.imatrix = chosenImatrix(&imPath);
        // Refused here rather than after the work: llama-quantize needs one for these.
        if (j.ftype == LlamaFtype::Q2_K_S && !j.imatrix)
            throw Error("Q2_K_S needs an importance matrix (as llama-quantize)");
    } catch (const std::exception& e) {
        fail(QString::fromUtf8(e.what()));
        return false;
    }
    j.imatrixPath = imPath.toStdString(); // as llama-quantize records its --imatrix argument
    const QString title =
        tr("GGUF export (%1) to %2")
            .arg(j.ftype ? typeChoice() : tr("recipe"), QFileInfo(outputPath()).fileName());
    j.measureKl = m_klBox->isChecked();
    using Result = std::shared_ptr<const Outcome>;
    std::function<Result(Progress&)> job = [j](Progress& p) -> Result {
        return std::make_shared<const Outcome>(runExport(j, p));
    };
    beginExport();
    m_result.reset();
    m_progress->setFormat(tr("waiting  %p%"));
    m_eta->clear();
    m_started.start();
    submitExport<Result>(
        title, std::move(job), tr("Cancelled: no file written."),
        [](const Result& r) { return r && r->result.status == Status::Ok; },
        [this](Result r) { showResult(std::move(r)); });
    return true;
}

void GgufExportPanel::showResult(std::shared_ptr<const Outcome> r) {
    m_result = std::move(r);
    const GgufExportResult& res = m_result->result;
    m_progress->setValue(1000);
    m_progress->setFormat(tr("done"));
    m_eta->clear();
    m_table->setSortingEnabled(false);
    m_table->setRowCount(int(res.tensors.size()));
    int64_t params = 0;
    int exact = 0, reencoded = 0, fallbacks = 0;
    for (int i = 0; i < int(res.tensors.size()); ++i) {
        const GgufTensorReport& t = res.tensors[size_t(i)];
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        params += n;
        const bool fellBack = t.type != t.requested;
        exact += t.status == GgufTensorStatus::Exact;
        reencoded += t.status == GgufTensorStatus::ReEncoded;
        fallbacks += fellBack;
        QString status = QString::fromLatin1(ggufTensorStatusName(t.status));
        if (fellBack)
            status += tr(", fallback %1 → %2").arg(typeName(t.requested), typeName(t.type));
        auto* name = new QTableWidgetItem(QString::fromStdString(t.name));
        auto* bytes = new QTableWidgetItem;
        bytes->setData(Qt::DisplayRole, qulonglong(t.bytes));
        bytes->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        bytes->setToolTip(formatBytes(t.bytes));
        m_table->setItem(i, NameColumn, name);
        m_table->setItem(i, ShapeColumn, new QTableWidgetItem(shapeText(t.shape)));
        m_table->setItem(i, TypeColumn, new QTableWidgetItem(typeName(t.type)));
        m_table->setItem(i, BytesColumn, bytes);
        m_table->setItem(i, StatusColumn, new QTableWidgetItem(status));
        m_table->setItem(i, NoteColumn, new QTableWidgetItem(QString::fromStdString(t.note)));
    }
    m_table->setSortingEnabled(true);
    m_table->resizeColumnsToContents();
    QString text =
        tr("Wrote %1: %2, %3 tensors, %4 (%5 bits/weight), file type %6, %7 s. %8 exact, %9 "
           "re-encoded, %10 row-length fallbacks.")
            .arg(QDir::toNativeSeparators(QString::fromStdString(res.path)),
                 QString::fromStdString(res.arch))
            .arg(res.tensors.size())
            .arg(formatBytes(res.bytes))
            .arg(params ? 8.0 * double(res.bytes) / double(params) : 0.0, 0, 'f', 3)
            .arg(res.fileType)
            .arg(res.seconds, 0, 'f', 2)
            .arg(exact)
            .arg(reencoded)
            .arg(fallbacks);
    if (const auto& kl = m_result->kl)
        text += QStringLiteral("\n") +
                tr("KL divergence of the written file from %1: mean %2 ± %3 nats, same top token "
                   "%4% (%5 chunks × %6 tokens of the bundled text, float32 activations)")
                    .arg(QString::fromStdString(m_result->klAgainst))
                    .arg(kl->stats.kld.mean, 0, 'g', 4)
                    .arg(kl->stats.kld.meanError, 0, 'g', 2)
                    .arg(100.0 * kl->stats.sameTop, 0, 'f', 2)
                    .arg(kl->chunks)
                    .arg(kl->ctx);
    for (const std::string& w : res.warnings)
        text += QStringLiteral("\n") + tr("Warning: %1").arg(QString::fromStdString(w));
    m_summary->setText(text);
    emit logMessage(tr("Exported %1 (%2, %3)")
                        .arg(QDir::toNativeSeparators(QString::fromStdString(res.path)),
                             QString::fromStdString(res.arch), formatBytes(res.bytes)));
}

bool GgufExportPanel::writeCommand() {
    const bool asRecipe = typeChoice() == QLatin1String(kRecipeChoice);
    const QString out = outputPath();
    if (out.isEmpty()) {
        fail(tr("Choose the output file (the command's output; the script and the type list "
                "are written beside it)."));
        return false;
    }
    try {
        QString imPath;
        const auto imatrix = chosenImatrix(&imPath);
        GgufMixOptions mo;
        mo.hasImatrix = bool(imatrix);
        // The recipe's types: the closest preset plus per-tensor entries for the rest.
        std::optional<DType> others;
        if (m_others->currentIndex() > 0) others = DType(m_others->currentData().toInt());
        const GgufMix mix =
            asRecipe
                ? ggufMixForRecipe(*m_ctx.model, m_ctx.recipe ? m_ctx.recipe() : compress::Recipe{},
                                   mo, std::nullopt, others)
                : ggufMixFor(*m_ctx.model, llamaFtypeFromName(typeChoice().toStdString()), mo);
        LlamaQuantizeCommandOptions co;
        const QFileInfo model(m_ctx.modelPath);
        if (!model.isDir() &&
            model.suffix().compare(QStringLiteral("gguf"), Qt::CaseInsensitive) == 0)
            co.input = model.absoluteFilePath().toStdString();
        co.output = out.toStdString();
        if (!imPath.isEmpty()) co.imatrix = imPath.toStdString();
        const LlamaQuantizeCommand cmd = renderLlamaQuantizeCommand(mix, co);
        const QFileInfo fo(out);
        const QString base = fo.absoluteDir().filePath(fo.completeBaseName());
        const QString script = base + QStringLiteral(".llama-quantize.sh");
        const QString types = base + QStringLiteral(".tensor-types.txt");
        if (!fo.absoluteDir().exists())
            throw Error(QDir::toNativeSeparators(fo.absolutePath()).toStdString() +
                        ": the folder does not exist");
        const std::string scriptText = "#!/bin/sh\n" + cmd.script() + "\n";
        const std::string typeList = renderTensorTypeList(mix);
        writeFileAtomic(script.toStdString(), scriptText);
        writeFileAtomic(types.toStdString(), typeList);
        m_commandFiles = {script, types};
        m_commandView->setPlainText(QString::fromStdString(cmd.script()) +
                                    QStringLiteral("\n\n# ") + QFileInfo(types).fileName() +
                                    QStringLiteral("\n") + QString::fromStdString(typeList));
        m_summary->setText(
            tr("Wrote %1 and %2 (%3 tensors%4).")
                .arg(QDir::toNativeSeparators(script), QDir::toNativeSeparators(types))
                .arg(mix.tensors.size())
                .arg(mix.fallbacks.empty()
                         ? QString()
                         : tr(", %n row-length fallback(s)", nullptr, int(mix.fallbacks.size()))));
        emit logMessage(m_summary->text());
        emit finished();
        return true;
    } catch (const std::exception& e) {
        fail(QString::fromUtf8(e.what()));
        return false;
    }
}

} // namespace lcw
