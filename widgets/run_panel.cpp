#include "widgets/run_panel.h"

#include "core/common/error.h"
#include "core/compress/compressed_model.h"
#include "core/tokenizer/tokenizer.h"
#include "plots/line_plot.h"
#include "widgets/compare_panel.h"
#include "widgets/device_selector.h"
#include "widgets/number_format.h"
#include "widgets/spin_box.h"

#include <QComboBox>
#include <QCoreApplication>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPointer>
#include <QProgressBar>
#include <QPushButton>
#include <QRegularExpression>
#include <QScrollBar>
#include <QSettings>
#include <QSpinBox>
#include <QSplitter>
#include <QStyle>
#include <QTextCursor>
#include <QToolButton>
#include <QVBoxLayout>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>

namespace lcw {

namespace {

constexpr auto kEvalTextName = "tinystories_eval.txt";
/// At most this often the worker asks the UI thread to show new text (~25 updates/s).
constexpr std::chrono::milliseconds kStreamInterval{40};
constexpr int kDefaultMaxTokens = 128;
constexpr int kDefaultCtx = 512;

/// "12,345 tokens/s" with a sensible number of digits.
QString rateText(int64_t tokens, double seconds) {
    if (seconds <= 0.0 || tokens <= 0) return QStringLiteral("–");
    const double r = double(tokens) / seconds;
    if (r >= 100.0)
        return QCoreApplication::translate("lcw::RunPanel", "%1 tokens/s")
            .arg(formatCountExact(int64_t(std::llround(r))));
    return QCoreApplication::translate("lcw::RunPanel", "%1 tokens/s").arg(r, 0, 'f', 1);
}

QString secondsText(double s) {
    if (s < 1.0) return QStringLiteral("%1 ms").arg(s * 1000.0, 0, 'f', s < 0.01 ? 2 : 1);
    return QStringLiteral("%1 s").arg(s, 0, 'f', 2);
}

QLabel* fieldLabel(const QString& text, QWidget* buddy, QWidget* parent) {
    auto* l = new QLabel(text, parent);
    l->setBuddy(buddy);
    // Labels keep their full text; the spin boxes and the stretch give way instead.
    l->setSizePolicy(QSizePolicy::Fixed, QSizePolicy::Preferred);
    // Some platforms' size hints come out a pixel short of the rendered text: keep a margin.
    l->setMinimumWidth(l->fontMetrics().horizontalAdvance(QString(text).remove(QLatin1Char('&'))) +
                       6);
    return l;
}

} // namespace

/// Text generated so far, shared between the worker (writes) and the UI thread (reads).
struct RunPanel::Stream {
    std::mutex mu;
    QString promptText;
    QString text;
    int64_t generated = 0;
    int64_t requested = 0;
    bool pending = false; ///< an update is queued to the UI thread
    std::chrono::steady_clock::time_point lastPost{};

    /// The decoded prompt, the text so far; the caller posts an update.
    void start(const QString& prompt) {
        std::lock_guard lock(mu);
        promptText = prompt;
        text = prompt;
        pending = true;
        lastPost = std::chrono::steady_clock::now();
    }
    /// The text after `count` new tokens; true when the caller should post an update (none is
    /// queued and the last was at least kStreamInterval ago).
    bool update(QString newText, int64_t count) {
        std::lock_guard lock(mu);
        text = std::move(newText);
        generated = count;
        const auto now = std::chrono::steady_clock::now();
        if (pending || now - lastPost < kStreamInterval) return false;
        pending = true;
        lastPost = now;
        return true;
    }
};

struct RunPanel::GenOutcome {
    GenerateResult result;
    QString promptText;
    QString text;
    std::string cacheKey; ///< the recipe compressed for this run (empty: none)
    std::shared_ptr<const compress::CompressedModel> overlay;
    std::shared_ptr<const Model> base; ///< what `overlay` refers to (kept alive with it)
    QString device;                    ///< "NAME (ID)" of the device the session ran on
    QString deviceNote;                ///< why a requested GPU was not used (empty otherwise)
    QString residentNote;     ///< why the forward ran per product on the GPU (empty otherwise)
    uint64_t deviceBytes = 0; ///< GPU memory lcw held after the run (0 on the CPU)
};

struct RunPanel::PplOutcome {
    PerplexityResult result;
    int64_t textTokens = 0;
    std::string cacheKey;
    std::shared_ptr<const compress::CompressedModel> overlay;
    std::shared_ptr<const Model> base;
};

/// A configuration resolved on the UI thread, for a job.
struct RunPanel::ConfigRequest {
    RunPanel::Configuration kind = RunPanel::Configuration::BaseModel;
    QString label;
    compress::Recipe recipe;                                 ///< EditorRecipe, Preset
    std::string key;                                         ///< the recipe's JSON (the cache key)
    std::string overlayDir;                                  ///< SavedOverlay
    std::shared_ptr<const compress::CompressedModel> cached; ///< the recipe, compressed before
};

namespace {

/// The weights a job runs on: null for the base model; the recipe compressed now (progress
/// `from`..`to` of the job, cancellable; nullptr with *cancelled set when cancelled), the
/// kept weights of an earlier run of the same recipe, or the overlay folder loaded.
template <typename Request>
std::shared_ptr<const compress::CompressedModel>
prepareWeights(const Model& model, const Request& req, Progress& progress, double to,
               bool* cancelled) {
    using C = RunPanel::Configuration;
    *cancelled = false;
    if (req.kind == C::BaseModel) return nullptr;
    if (req.cached) return req.cached;
    if (req.kind == C::SavedOverlay) {
        progress.report(0.0, "loading the overlay");
        return compress::CompressedModel::load(req.overlayDir, model);
    }
    RangeProgress rp(progress, 0.0, to, "compressing: ");
    compress::CompressResult cr = compress::compressWithBundledCalibration(model, req.recipe, rp);
    if (cr.status == Status::Cancelled) {
        *cancelled = true;
        return nullptr;
    }
    return std::shared_ptr<const compress::CompressedModel>(std::move(cr.model));
}

/// The start of a generation or perplexity job: out.base, out.overlay (a recipe compressed now
/// takes the first 30 % of the job's progress) and out.cacheKey. Returns where the job's own
/// progress starts, or a negative value when it was cancelled meanwhile.
template <typename Outcome, typename Request>
double startOnConfiguration(const std::shared_ptr<const Model>& model, const Request& req,
                            Progress& outer, Outcome& out) {
    out.base = model;
    const bool compressing = !req.key.empty() && !req.cached;
    const double split = compressing ? 0.3 : 0.0;
    bool cancelled = false;
    out.overlay = prepareWeights(*model, req, outer, split, &cancelled);
    if (cancelled) return -1.0;
    if (compressing) out.cacheKey = req.key;
    return split;
}

/// The weights a started job runs on.
template <typename Outcome> const WeightSource& jobWeights(const Outcome& out) {
    return out.overlay ? static_cast<const WeightSource&>(*out.overlay) : *out.base;
}

} // namespace

RunPanel::RunPanel(TaskRunner* runner, QWidget* parent) : QWidget(parent), m_runner(runner) {
    buildUi();
    connect(m_runner, &TaskRunner::jobStarted, this,
            [this](TaskRunner::JobId id, const QString&) { onJobStarted(id); });
    connect(m_runner, &TaskRunner::progressChanged, this, &RunPanel::onProgress);
    setTextFile(defaultTextFile());
    updateButtons();
}

RunPanel::~RunPanel() = default;

// ---------------------------------------------------------------------------------------------
// UI

void RunPanel::buildUi() {
    auto* root = new QVBoxLayout(this);
    root->setContentsMargins(6, 6, 6, 6);
    root->addLayout(buildConfigRow());

    m_split = new QSplitter(Qt::Vertical, this);
    m_split->setChildrenCollapsible(false);
    root->addWidget(m_split);
    QWidget* gen = buildGenerateBox(m_split);
    QWidget* ppl = buildPerplexityBox(m_split);
    m_split->addWidget(gen);
    m_split->addWidget(ppl);
    m_split->setStretchFactor(0, 2);
    m_split->setStretchFactor(1, 3);
    m_split->setSizes({400, 600});

    connect(m_generate, &QPushButton::clicked, this, [this] { generate(); });
    connect(m_stop, &QPushButton::clicked, this, &RunPanel::stopGeneration);
    connect(m_pplRun, &QPushButton::clicked, this, [this] { runPerplexity(); });
    connect(m_pplCancel, &QPushButton::clicked, this, &RunPanel::cancelPerplexity);
    connect(m_textFile, &QLineEdit::textChanged, this, [this] { updateButtons(); });
    connect(m_prompt, &QPlainTextEdit::textChanged, this, [this] { updateButtons(); });
    setPplStatus(tr("Perplexity of the model on a text file, llama.cpp's method."));
}

// The configuration both jobs run on: base model, editor recipe, saved overlay or a preset.
QLayout* RunPanel::buildConfigRow() {
    auto* configRow = new QHBoxLayout;
    configRow->setSpacing(6);
    m_config = new QComboBox(this);
    m_config->setToolTip(
        tr("What generation and perplexity run on: the base model, the recipe editor's recipe or "
           "a preset (compressed first, in the same job), or an overlay folder saved by "
           "“lcw-cli compress --save DIR” or the workbench"));
    m_config->addItem(tr("Base model"), QStringLiteral("base"));
    m_config->addItem(tr("Editor recipe"), QStringLiteral("editor"));
    m_config->addItem(tr("Saved overlay…"), QStringLiteral("overlay"));
    m_config->insertSeparator(m_config->count());
    for (const auto& p : compress::presets()) {
        const QString n = QString::fromStdString(p.name);
        m_config->addItem(tr("Preset %1").arg(n), QStringLiteral("preset:") + n);
        m_config->setItemData(m_config->count() - 1, QString::fromStdString(p.description),
                              Qt::ToolTipRole);
    }
    m_config->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    m_config->setMinimumContentsLength(16);
    connect(m_config, &QComboBox::activated, this, [this](int i) {
        if (m_config->itemData(i).toString() == QStringLiteral("overlay"))
            chooseOverlayFolder();
        else
            m_lastConfigIndex = i;
    });
    configRow->addWidget(fieldLabel(tr("Con&figuration"), m_config, this));
    configRow->addWidget(m_config, 1);
    // The process-wide compute device (Edit → Preferences… shows the same choice).
    auto* device = new DeviceSelector(this);
    configRow->addWidget(fieldLabel(tr("&Device:"), device, this));
    configRow->addWidget(device);
    return configRow;
}

// Generate: the prompt with its buttons, the sampling settings, the output and its status.
QGroupBox* RunPanel::buildGenerateBox(QWidget* parent) {
    auto* gen = new QGroupBox(tr("Generate"), parent);
    auto* gl = new QVBoxLayout(gen);
    gl->setSpacing(6);
    m_prompt = new QPlainTextEdit(gen);
    m_prompt->setPlaceholderText(tr("Prompt, e.g. “Once upon a time”"));
    m_prompt->setTabChangesFocus(true);
    m_prompt->setPlainText(QStringLiteral("Once upon a time"));
    m_prompt->setFixedHeight(m_prompt->fontMetrics().lineSpacing() * 2 + 16);
    auto* promptRow = new QHBoxLayout;
    promptRow->setSpacing(6);
    promptRow->addWidget(m_prompt, 1);
    gl->addLayout(promptRow);
    gl->addLayout(buildSamplingRow(gen));
    // The buttons beside the prompt, made after the sampling fields (the tab order).
    promptRow->addLayout(buildGenerateButtons(gen));

    m_output = new QPlainTextEdit(gen);
    m_output->setReadOnly(true);
    m_output->setPlaceholderText(tr("Generated text appears here as it is produced."));
    m_output->setMinimumHeight(80);
    gl->addWidget(m_output, 1);
    m_genStatus = new QLabel(gen);
    m_genStatus->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_genStatus->setWordWrap(true); // long errors must not widen the window
    m_genStatus->setText(tr("No model loaded."));
    gl->addWidget(m_genStatus);
    return gen;
}

// Max tokens, temperature, top-k, top-p and seed in one compact row.
QLayout* RunPanel::buildSamplingRow(QWidget* parent) {
    createSamplingFields(parent);
    auto* params = new QHBoxLayout;
    params->setSpacing(6);
    params->addWidget(fieldLabel(tr("Max &tokens"), m_maxTokens, parent));
    params->addWidget(m_maxTokens);
    params->addSpacing(6);
    params->addWidget(fieldLabel(tr("T&emperature"), m_temperature, parent));
    params->addWidget(m_temperature);
    params->addSpacing(6);
    params->addWidget(fieldLabel(tr("Top-&k"), m_topK, parent));
    params->addWidget(m_topK);
    params->addSpacing(6);
    params->addWidget(fieldLabel(tr("Top-&p"), m_topP, parent));
    params->addWidget(m_topP);
    params->addSpacing(6);
    params->addWidget(fieldLabel(tr("S&eed"), m_seed, parent));
    params->addWidget(m_seed);
    // Wide enough for their values, no wider: the row stays compact in a narrow dock.
    const auto widthFor = [this](int chars) {
        return fontMetrics().horizontalAdvance(QString(chars, QLatin1Char('0'))) + 36;
    };
    m_maxTokens->setFixedWidth(widthFor(6));
    m_temperature->setFixedWidth(widthFor(7));
    m_topK->setFixedWidth(widthFor(6));
    m_topP->setFixedWidth(widthFor(5));
    m_seed->setFixedWidth(widthFor(10));
    params->addStretch(1);
    return params;
}

void RunPanel::createSamplingFields(QWidget* parent) {
    m_maxTokens = new QSpinBox(parent);
    m_maxTokens->setRange(1, 32768);
    m_maxTokens->setValue(kDefaultMaxTokens);
    m_maxTokens->setToolTip(tr("Stop after this many new tokens (or at end of sequence)"));
    m_temperature = newDoubleSpin(parent, {0.0, 5.0, 0.05, 2}, 0.8,
                                  tr("0 picks the most likely token every step (greedy)"));
    m_temperature->setSpecialValueText(tr("greedy"));
    m_topK = new QSpinBox(parent);
    m_topK->setRange(0, 100000);
    m_topK->setValue(40);
    m_topK->setSpecialValueText(tr("off"));
    m_topK->setToolTip(tr("Sample among the k most likely tokens (0: all)"));
    m_topP = newDoubleSpin(parent, {0.01, 1.0, 0.01, 2}, 0.95,
                           tr("Nucleus sampling: the smallest set of tokens whose probabilities "
                              "add up to p (1: off)"));
    m_seed = new QSpinBox(parent);
    m_seed->setRange(0, 2147483647);
    m_seed->setValue(42);
    m_seed->setToolTip(tr("Random seed: the same seed and settings give the same text"));
}

// Generate and Stop, one above the other, of one width.
QLayout* RunPanel::buildGenerateButtons(QWidget* parent) {
    auto* buttons = new QVBoxLayout;
    buttons->setSpacing(4);
    m_generate =
        new QPushButton(style()->standardIcon(QStyle::SP_MediaPlay), tr("&Generate"), parent);
    m_generate->setToolTip(tr("Generate from the prompt (Ctrl+Return)"));
    m_stop = new QPushButton(style()->standardIcon(QStyle::SP_MediaStop), tr("&Stop"), parent);
    m_stop->setToolTip(tr("Stop generating; the text so far stays (Ctrl+.)"));
    const int buttonWidth = std::max(m_generate->sizeHint().width(), m_stop->sizeHint().width());
    m_generate->setFixedWidth(buttonWidth);
    m_stop->setFixedWidth(buttonWidth);
    buttons->addWidget(m_generate);
    buttons->addWidget(m_stop);
    return buttons;
}

// Perplexity: the text file and context with the run buttons, the status, the running plot.
QGroupBox* RunPanel::buildPerplexityBox(QWidget* parent) {
    auto* ppl = new QGroupBox(tr("Perplexity"), parent);
    auto* pl = new QVBoxLayout(ppl);
    pl->setSpacing(6);
    pl->addLayout(buildTextFileRow(ppl));
    pl->addLayout(buildPplStatusRow(ppl));
    m_pplPlot = new LinePlot(ppl);
    m_pplPlot->setTitle(tr("Running perplexity"));
    m_pplPlot->setAxisLabels(tr("chunks evaluated"), tr("perplexity"));
    m_pplPlot->setPlaceholderText(tr("Run perplexity to see it converge chunk by chunk"));
    m_pplPlot->setTooltipFormatter([](int, double x, double y) {
        return tr("after chunk %1\nPPL %2").arg(qRound64(x)).arg(y, 0, 'f', 4);
    });
    pl->addWidget(m_pplPlot, 1);
    return ppl;
}

QLayout* RunPanel::buildTextFileRow(QWidget* parent) {
    auto* fileRow = new QHBoxLayout;
    fileRow->setSpacing(6);
    m_textFile = new QLineEdit(parent);
    m_textFile->setPlaceholderText(tr("Text file to evaluate (UTF-8)"));
    m_textFile->setClearButtonEnabled(true);
    auto* browse = new QToolButton(parent);
    browse->setText(tr("…"));
    browse->setToolTip(tr("Choose a text file"));
    connect(browse, &QToolButton::clicked, this, &RunPanel::browseTextFile);
    m_ctx = new QSpinBox(parent);
    m_ctx->setRange(16, 32768);
    m_ctx->setValue(kDefaultCtx);
    m_ctx->setSuffix(tr(" tokens"));
    m_ctx->setToolTip(tr("Tokens per chunk; the second half of each chunk is scored "
                         "(llama.cpp's method)"));
    m_pplRun = new QPushButton(style()->standardIcon(QStyle::SP_MediaPlay), tr("&Run"), parent);
    m_pplRun->setToolTip(tr("Measure perplexity on the text (Ctrl+Shift+Return)"));
    m_pplCancel = new QPushButton(style()->standardIcon(QStyle::SP_DialogCancelButton),
                                  tr("&Cancel"), parent);
    fileRow->addWidget(fieldLabel(tr("Te&xt"), m_textFile, parent));
    fileRow->addWidget(m_textFile, 1);
    fileRow->addWidget(browse);
    fileRow->addSpacing(6);
    fileRow->addWidget(fieldLabel(tr("C&ontext"), m_ctx, parent));
    fileRow->addWidget(m_ctx);
    fileRow->addSpacing(6);
    fileRow->addWidget(m_pplRun);
    fileRow->addWidget(m_pplCancel);
    return fileRow;
}

QLayout* RunPanel::buildPplStatusRow(QWidget* parent) {
    auto* statusRow = new QHBoxLayout;
    m_pplStatus = new QLabel(parent);
    m_pplStatus->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_pplStatus->setWordWrap(true);
    QFont bold = m_pplStatus->font();
    bold.setBold(true);
    m_pplStatus->setFont(bold);
    m_pplProgress = new QProgressBar(parent);
    m_pplProgress->setRange(0, 1000);
    m_pplProgress->setValue(0);
    m_pplProgress->setTextVisible(false);
    m_pplProgress->setMaximumHeight(14);
    m_pplProgress->setMaximumWidth(260);
    statusRow->addWidget(m_pplStatus, 1);
    statusRow->addWidget(m_pplProgress);
    return statusRow;
}

void RunPanel::updateButtons() {
    const bool model = m_model != nullptr;
    m_generate->setEnabled(model && m_genJob == 0 && !m_prompt->toPlainText().isEmpty());
    m_stop->setEnabled(m_genJob != 0);
    m_pplRun->setEnabled(model && m_pplJob == 0 && !m_textFile->text().trimmed().isEmpty());
    m_pplCancel->setEnabled(m_pplJob != 0);
    m_pplProgress->setVisible(m_pplJob != 0);
    emit stateChanged();
}

void RunPanel::browseTextFile() {
    const QString current = textFile();
    const QString start = current.isEmpty() ? QDir::homePath() : QFileInfo(current).absolutePath();
    const QString file = QFileDialog::getOpenFileName(this, tr("Choose Evaluation Text"), start,
                                                      tr("Text files (*.txt);;All files (*)"));
    if (!file.isEmpty()) setTextFile(file);
}

void RunPanel::setGenStatus(const QString& text, bool error) {
    m_genStatus->setText(text);
    m_genStatus->setStyleSheet(error ? QStringLiteral("QLabel { color: #d94a4a; }") : QString());
}

void RunPanel::setPplStatus(const QString& text, bool error) {
    m_pplStatus->setText(text);
    m_pplStatus->setStyleSheet(error ? QStringLiteral("QLabel { color: #d94a4a; }") : QString());
}

// ---------------------------------------------------------------------------------------------
// Accessors

void RunPanel::setModel(std::shared_ptr<const Model> model) {
    m_model = std::move(model);
    // Compressed weights belong to the model they were made from.
    m_cached.reset();
    m_cachedKey.clear();
    if (m_model) {
        const int64_t maxSeq = m_model->spec().maxSeq;
        const int maxCtx = maxSeq > 0 ? int(std::min<int64_t>(maxSeq, 1 << 20)) : 32768;
        m_ctx->setMaximum(std::max(16, maxCtx));
        m_maxTokens->setMaximum(std::max(1, maxCtx - 1));
        if (m_genJob == 0)
            setGenStatus(m_model->hasTokenizer()
                             ? tr("Ready.")
                             : tr("This model has no tokenizer: generation needs one."),
                         !m_model->hasTokenizer());
    }
    updateButtons();
}

void RunPanel::setPrompt(const QString& text) {
    m_prompt->setPlainText(text);
}
QString RunPanel::prompt() const {
    return m_prompt->toPlainText();
}
void RunPanel::setMaxNewTokens(int n) {
    m_maxTokens->setValue(n);
}
int RunPanel::maxNewTokens() const {
    return m_maxTokens->value();
}

void RunPanel::setSampling(const SamplingParams& p) {
    m_temperature->setValue(double(p.temperature));
    m_topK->setValue(p.topK);
    m_topP->setValue(double(p.topP));
    m_seed->setValue(int(std::min<uint64_t>(p.seed, uint64_t(m_seed->maximum()))));
}

SamplingParams RunPanel::sampling() const {
    SamplingParams p;
    p.temperature = float(m_temperature->value());
    p.topK = m_topK->value();
    p.topP = float(m_topP->value());
    p.seed = uint64_t(m_seed->value());
    return p;
}

QString RunPanel::outputText() const {
    return m_output->toPlainText();
}
QString RunPanel::generationStatusText() const {
    return m_genStatus->text();
}
void RunPanel::setTextFile(const QString& path) {
    m_textFile->setText(path);
}
QString RunPanel::textFile() const {
    return m_textFile->text().trimmed();
}
void RunPanel::setContext(int ctx) {
    m_ctx->setValue(ctx);
}
int RunPanel::context() const {
    return m_ctx->value();
}
QString RunPanel::perplexityResultText() const {
    return m_pplStatus->text();
}

QString RunPanel::defaultTextFile() {
    QStringList candidates;
    const QString appDir = QCoreApplication::applicationDirPath();
    candidates << appDir + QStringLiteral("/../share/lcw/data/") + QLatin1String(kEvalTextName);
#ifdef LCW_SOURCE_DIR
    candidates << QStringLiteral(LCW_SOURCE_DIR "/resources/data/") + QLatin1String(kEvalTextName);
#endif
    for (const QString& c : candidates)
        if (QFileInfo(c).isFile()) return QDir::cleanPath(QFileInfo(c).absoluteFilePath());
    return {};
}

void RunPanel::readSettings(const QSettings& s) {
    if (s.contains("run/prompt")) setPrompt(s.value("run/prompt").toString());
    m_maxTokens->setValue(s.value("run/maxTokens", m_maxTokens->value()).toInt());
    m_temperature->setValue(s.value("run/temperature", m_temperature->value()).toDouble());
    m_topK->setValue(s.value("run/topK", m_topK->value()).toInt());
    m_topP->setValue(s.value("run/topP", m_topP->value()).toDouble());
    m_seed->setValue(s.value("run/seed", m_seed->value()).toInt());
    m_ctx->setValue(s.value("run/ctx", m_ctx->value()).toInt());
    // A remembered file that has gone falls back to the bundled text.
    const QString file = s.value("run/textFile").toString();
    if (!file.isEmpty() && QFileInfo(file).isFile()) setTextFile(file);
    if (const QByteArray split = s.value("run/split").toByteArray(); !split.isEmpty())
        m_split->restoreState(split);
    // The configuration; an overlay folder that has gone falls back to the base model.
    const QString overlay = s.value("run/overlay").toString();
    if (!overlay.isEmpty()) setOverlayFolder(overlay);
    const int config = m_config->findData(s.value("run/configuration").toString());
    if (config >= 0 &&
        (m_config->itemData(config) != QStringLiteral("overlay") || !m_overlayDir.isEmpty()))
        m_config->setCurrentIndex(config);
    else
        m_config->setCurrentIndex(0);
    m_lastConfigIndex = m_config->currentIndex();
}

void RunPanel::writeSettings(QSettings& s) const {
    s.setValue("run/prompt", prompt());
    s.setValue("run/maxTokens", m_maxTokens->value());
    s.setValue("run/temperature", m_temperature->value());
    s.setValue("run/topK", m_topK->value());
    s.setValue("run/topP", m_topP->value());
    s.setValue("run/seed", m_seed->value());
    s.setValue("run/ctx", m_ctx->value());
    s.setValue("run/textFile", textFile());
    s.setValue("run/split", m_split->saveState());
    s.setValue("run/configuration", m_config->currentData().toString());
    s.setValue("run/overlay", m_overlayDir);
}

// ---------------------------------------------------------------------------------------------
// Configuration

void RunPanel::setConfiguration(Configuration c) {
    const QString key = c == Configuration::EditorRecipe   ? QStringLiteral("editor")
                        : c == Configuration::SavedOverlay ? QStringLiteral("overlay")
                                                           : QStringLiteral("base");
    if (c == Configuration::SavedOverlay && m_overlayDir.isEmpty()) return;
    if (c == Configuration::Preset) return; // setPreset() names the preset
    m_config->setCurrentIndex(m_config->findData(key));
    m_lastConfigIndex = m_config->currentIndex();
}

RunPanel::Configuration RunPanel::configuration() const {
    const QString key = m_config->currentData().toString();
    if (key == QStringLiteral("editor")) return Configuration::EditorRecipe;
    if (key == QStringLiteral("overlay")) return Configuration::SavedOverlay;
    if (key.startsWith(QStringLiteral("preset:"))) return Configuration::Preset;
    return Configuration::BaseModel;
}

bool RunPanel::setOverlayFolder(const QString& dir, QString* error) {
    const QFileInfo manifest(QDir(dir).filePath(QStringLiteral("overlay.json")));
    if (!manifest.isFile()) {
        if (error)
            *error = tr("%1 is not a saved overlay (it has no overlay.json)")
                         .arg(QDir::toNativeSeparators(dir));
        return false;
    }
    m_overlayDir = QFileInfo(dir).absoluteFilePath();
    const int i = m_config->findData(QStringLiteral("overlay"));
    m_config->setItemText(i, tr("Saved overlay: %1…").arg(QFileInfo(m_overlayDir).fileName()));
    m_config->setItemData(i, QDir::toNativeSeparators(m_overlayDir), Qt::ToolTipRole);
    m_config->setCurrentIndex(i);
    m_lastConfigIndex = i;
    return true;
}

bool RunPanel::setPreset(const QString& name) {
    const int i = m_config->findData(QStringLiteral("preset:") + name);
    if (i < 0) return false;
    m_config->setCurrentIndex(i);
    m_lastConfigIndex = i;
    return true;
}

void RunPanel::chooseOverlayFolder() {
    const QString dir =
        QFileDialog::getExistingDirectory(this, tr("Choose a Saved Overlay Folder"),
                                          m_overlayDir.isEmpty() ? QDir::homePath() : m_overlayDir);
    QString error;
    if (!dir.isEmpty() && setOverlayFolder(dir, &error)) return;
    m_config->setCurrentIndex(m_lastConfigIndex); // back to what ran before
    if (!error.isEmpty()) {
        setGenStatus(error, true);
        setPplStatus(error, true);
    }
}

QString RunPanel::configurationLabel() const {
    QString error;
    const auto req = resolveConfiguration(&error);
    return req ? req->label : QString();
}

std::optional<RunPanel::ConfigRequest> RunPanel::resolveConfiguration(QString* error) const {
    ConfigRequest r;
    r.kind = configuration();
    try {
        switch (r.kind) {
        case Configuration::BaseModel:
            r.label = tr("base model");
            return r;
        case Configuration::SavedOverlay:
            if (m_overlayDir.isEmpty()) {
                *error = tr("Choose a saved overlay folder.");
                return std::nullopt;
            }
            r.overlayDir = m_overlayDir.toStdString();
            r.label = tr("overlay %1").arg(QFileInfo(m_overlayDir).fileName());
            return r;
        case Configuration::EditorRecipe:
            if (!m_editorRecipe) {
                *error = tr("There is no recipe editor to take the recipe from.");
                return std::nullopt;
            }
            r.recipe = m_editorRecipe();
            r.label = ComparePanel::editorLabel(r.recipe);
            break;
        case Configuration::Preset: {
            const QString name = m_config->currentData().toString().mid(7);
            r.recipe = compress::findPreset(name.toStdString()).recipe;
            r.label = tr("preset %1").arg(name);
            break;
        }
        }
        r.key = r.recipe.toJson().dump();
    } catch (const std::exception& e) {
        *error = QString::fromUtf8(e.what());
        return std::nullopt;
    }
    if (m_cached && r.key == m_cachedKey) r.cached = m_cached;
    return r;
}

void RunPanel::keepCompressed(const std::shared_ptr<const Model>& base, const std::string& key,
                              std::shared_ptr<const compress::CompressedModel> overlay) {
    // Weights made from a model that has been replaced since are not kept.
    if (key.empty() || !overlay || base != m_model) return;
    m_cachedKey = key;
    m_cached = std::move(overlay);
}

// ---------------------------------------------------------------------------------------------
// Generation

/// A generation on a worker thread: the weights prepared (a recipe compressed in the first 30%),
/// the prompt checked against the context, then tokens streamed to the UI thread.
struct RunPanel::GenJob {
    std::shared_ptr<const Model> model;
    std::string prompt;
    int64_t n = 0;
    SamplingParams sampling;
    std::shared_ptr<Stream> stream;
    std::function<void()> post; ///< asks the UI thread to show the stream
    ConfigRequest request;

    GenOutcome operator()(Progress& outer) const {
        GenOutcome out;
        const double split = startOnConfiguration(model, request, outer, out);
        if (split < 0) return out;
        const WeightSource& weights = jobWeights(out);
        RangeProgress progress(outer, split, 1.0);
        const Tokenizer& tk = model->tokenizer();
        const std::vector<int32_t> ids = encodePrompt(tk);
        SessionOptions so;
        so.contextLength = int64_t(ids.size()) + n;
        Session session(weights, so);
        const QString promptDecoded = QString::fromStdString(tk.decode(ids));
        stream->start(promptDecoded);
        post();
        progress.report(0.0, "prefill");
        std::vector<int32_t> all = ids;
        int64_t count = 0;
        auto onToken = [&](int32_t id) {
            all.push_back(id);
            ++count;
            // Decoding everything so far keeps characters split over byte tokens intact.
            if (stream->update(QString::fromStdString(tk.decode(all)), count)) post();
            char stage[64];
            std::snprintf(stage, sizeof stage, "token %lld/%lld", (long long)count, (long long)n);
            return progress.report(double(count) / double(std::max<int64_t>(n, 1)), stage);
        };
        out.result = session.generate(ids, n, sampling, onToken);
        out.device =
            QString::fromStdString(session.device().name + " (" + session.device().id + ")");
        out.deviceNote = QString::fromStdString(session.deviceNote());
        out.residentNote = QString::fromStdString(session.residentNote());
        out.deviceBytes = session.deviceMemoryBytes();
        out.promptText = promptDecoded;
        out.text = QString::fromStdString(tk.decode(out.result.ids));
        return out;
    }

    /// The prompt's tokens; throws when there are none or the new tokens do not fit the context.
    std::vector<int32_t> encodePrompt(const Tokenizer& tk) const {
        const std::vector<int32_t> ids = tk.encode(prompt, true);
        if (ids.empty()) throw ArgumentError("the prompt encodes to no tokens");
        const int64_t maxSeq = model->spec().maxSeq > 0 ? model->spec().maxSeq : 1 << 20;
        if (int64_t(ids.size()) + n > maxSeq)
            throw ArgumentError("the prompt (" + std::to_string(ids.size()) + " tokens) plus " +
                                std::to_string(n) + " new tokens exceed the model's context of " +
                                std::to_string(maxSeq) + " tokens");
        return ids;
    }
};

std::optional<RunPanel::ConfigRequest> RunPanel::generationRequest() {
    if (!m_model) {
        setGenStatus(tr("Open a model first."), true);
        return std::nullopt;
    }
    if (!m_model->hasTokenizer()) {
        setGenStatus(tr("This model has no tokenizer: generation needs one."), true);
        return std::nullopt;
    }
    if (prompt().isEmpty()) {
        setGenStatus(tr("Enter a prompt."), true);
        return std::nullopt;
    }
    QString configError;
    std::optional<ConfigRequest> req = resolveConfiguration(&configError);
    if (!req) setGenStatus(configError, true);
    return req;
}

std::function<void()> RunPanel::streamPoster(const std::shared_ptr<Stream>& stream) {
    // The worker posts to the runner (which outlives every job: its destructor waits) and the
    // posted call checks that the panel still exists on the UI thread.
    TaskRunner* runner = m_runner;
    const QPointer<RunPanel> self(this);
    return [runner, self, stream] {
        QMetaObject::invokeMethod(
            runner,
            [self, stream] {
                if (RunPanel* p = self.data()) p->flushStream(stream);
            },
            Qt::QueuedConnection);
    };
}

bool RunPanel::generate() {
    if (m_genJob != 0) return false;
    const std::optional<ConfigRequest> req = generationRequest();
    if (!req) return false;
    const int64_t n = maxNewTokens();
    auto stream = std::make_shared<Stream>();
    stream->requested = n;
    m_stream = stream;
    m_shownText.clear();
    m_output->clear();
    m_lastGen.reset();
    std::function<GenOutcome(Progress&)> job =
        GenJob{m_model, prompt().toStdString(), n, sampling(), stream, streamPoster(stream), *req};

    m_genConfig = req->label;
    const QString title = (n == 1 ? tr("Generating 1 token") : tr("Generating %1 tokens").arg(n)) +
                          tr(" on %1").arg(req->label);
    m_genJob = m_runner->submit<GenOutcome>(
        title, std::move(job), this,
        [this](GenOutcome out) {
            m_genJob = 0;
            keepCompressed(out.base, out.cacheKey, out.overlay);
            onGenerationDone(out);
        },
        [this](const QString& message) {
            m_genJob = 0;
            setGenStatus(tr("Generation failed: %1").arg(message), true);
            updateButtons();
            emit generationFailed(message);
        },
        [this, stream] { onGenerationStopped(stream); });
    if (m_runner->currentJob() != m_genJob)
        setGenStatus(tr("Queued behind “%1”…").arg(m_runner->currentTitle()));
    else
        setGenStatus(tr("Generating…"));
    updateButtons();
    return true;
}

void RunPanel::onGenerationStopped(const std::shared_ptr<Stream>& stream) {
    m_genJob = 0;
    flushStream(stream);
    int64_t generated = 0;
    {
        std::lock_guard lock(stream->mu);
        generated = stream->generated;
    }
    setGenStatus(generated == 1 ? tr("Stopped after 1 token.")
                                : tr("Stopped after %1 tokens.").arg(generated));
    updateButtons();
    emit generationStopped();
}

void RunPanel::stopGeneration() {
    if (m_genJob == 0) return;
    m_runner->cancel(m_genJob);
    if (m_genJob != 0) setGenStatus(tr("Stopping…"));
}

void RunPanel::flushStream(const std::shared_ptr<Stream>& stream) {
    QString promptText, text;
    int64_t generated = 0, requested = 0;
    {
        std::lock_guard lock(stream->mu);
        stream->pending = false;
        promptText = stream->promptText;
        text = stream->text;
        generated = stream->generated;
        requested = stream->requested;
    }
    if (stream != m_stream) return; // a newer generation replaced this one
    showOutput(promptText, text);
    if (m_genJob != 0)
        setGenStatus(tr("Generating… %1 of %2 tokens").arg(generated).arg(requested));
}

void RunPanel::showOutput(const QString& promptText, const QString& text) {
    if (text == m_shownText) return;
    QScrollBar* bar = m_output->verticalScrollBar();
    const bool atEnd = bar->value() >= bar->maximum() - 2;
    QTextCharFormat promptFmt;
    promptFmt.setFontWeight(QFont::Bold);
    const QTextCharFormat plainFmt;
    QTextCursor cursor(m_output->document());
    if (!m_shownText.isEmpty() && text.startsWith(m_shownText)) {
        // The usual case: new tokens extend the text; append only the new part.
        cursor.movePosition(QTextCursor::End);
        cursor.insertText(text.mid(m_shownText.size()), plainFmt);
    } else {
        m_output->clear();
        cursor = QTextCursor(m_output->document());
        if (!promptText.isEmpty() && text.startsWith(promptText)) {
            cursor.insertText(promptText, promptFmt);
            cursor.insertText(text.mid(promptText.size()), plainFmt);
        } else {
            cursor.insertText(text, plainFmt);
        }
    }
    m_shownText = text;
    if (atEnd) bar->setValue(bar->maximum());
}

void RunPanel::onGenerationDone(const GenOutcome& out) {
    const GenerateResult& r = out.result;
    showOutput(out.promptText, out.text);
    GenerationStats st;
    st.promptTokens = r.promptTokens;
    st.generatedTokens = r.generatedTokens;
    st.prefillSeconds = r.prefillSeconds;
    st.decodeSeconds = r.decodeSeconds;
    st.stoppedAtEos = r.stoppedAtEos;
    m_lastGen = st;
    m_lastGenConfig = m_genConfig;
    const QString stats =
        tr("Prefill: %1 tokens in %2 (%3)  ·  Decode: %4 tokens in %5 (%6)%7  ·  on %8")
            .arg(r.promptTokens)
            .arg(secondsText(r.prefillSeconds), rateText(r.promptTokens, r.prefillSeconds))
            .arg(r.generatedTokens)
            .arg(secondsText(r.decodeSeconds), rateText(r.generatedTokens, r.decodeSeconds),
                 r.stoppedAtEos ? tr("  ·  stopped at end of sequence") : QString(),
                 m_lastGenConfig);
    QString device = tr("  ·  device: %1").arg(out.device);
    if (out.deviceBytes > 0) device += tr(", GPU memory %1").arg(formatBytes(out.deviceBytes));
    setGenStatus(stats + device);
    if (!out.deviceNote.isEmpty()) emit logMessage(tr("Device: %1").arg(out.deviceNote));
    if (!out.residentNote.isEmpty())
        emit logMessage(tr("Device: the forward ran per product, not resident on the GPU: %1")
                            .arg(out.residentNote));
    updateButtons();
    emit logMessage(tr("Generated %1 tokens on %2: prefill %3, decode %4")
                        .arg(r.generatedTokens)
                        .arg(m_lastGenConfig, rateText(r.promptTokens, r.prefillSeconds),
                             rateText(r.generatedTokens, r.decodeSeconds)));
    emit generationFinished();
}

// ---------------------------------------------------------------------------------------------
// Perplexity

bool RunPanel::runPerplexity() {
    if (m_pplJob != 0) return false;
    if (!m_model) {
        setPplStatus(tr("Open a model first."), true);
        return false;
    }
    if (!m_model->hasTokenizer()) {
        setPplStatus(tr("This model has no tokenizer: perplexity needs one."), true);
        return false;
    }
    const QString path = textFile();
    if (path.isEmpty() || !QFileInfo(path).isFile()) {
        setPplStatus(path.isEmpty() ? tr("Choose a text file.")
                                    : tr("%1 does not exist.").arg(QDir::toNativeSeparators(path)),
                     true);
        return false;
    }
    QString configError;
    const std::optional<ConfigRequest> req = resolveConfiguration(&configError);
    if (!req) {
        setPplStatus(configError, true);
        return false;
    }
    auto model = m_model;
    const std::string stdPath = QFileInfo(path).absoluteFilePath().toStdString();
    const int64_t ctx = context();
    const ConfigRequest request = *req;
    std::function<PplOutcome(Progress&)> job = [model, stdPath, ctx, request](Progress& outer) {
        PplOutcome out;
        const double split = startOnConfiguration(model, request, outer, out);
        if (split < 0) return out;
        const WeightSource& weights = jobWeights(out);
        // No prefix: the stages stay "chunk i/N, PPL x" for the live plot.
        RangeProgress progress(outer, split, 1.0);
        progress.report(0.0, "reading text");
        std::ifstream f(stdPath, std::ios::binary);
        if (!f) throw Error("cannot read " + stdPath);
        const std::string text((std::istreambuf_iterator<char>(f)),
                               std::istreambuf_iterator<char>());
        progress.report(0.0, "tokenizing");
        const Tokenizer& tk = model->tokenizer();
        // As llama-perplexity: the whole text tokenized once, BOS first; each chunk starts
        // with BOS.
        const std::vector<int32_t> tokens = tk.encode(text, true);
        PerplexityOptions po;
        po.ctx = ctx;
        po.batch = ctx;
        po.bosId = tk.bosId();
        out.textTokens = int64_t(tokens.size());
        out.result = computePerplexity(weights, tokens, po, progress);
        return out;
    };
    m_pplFileName = QFileInfo(path).fileName();
    m_pplChunksSeen = 0;
    m_pplChunksTotal = 0;
    m_lastPpl.reset();
    m_pplPlot->clear();
    m_pplProgress->setValue(0);
    m_pplConfig = req->label;
    const QString title =
        tr("Perplexity of %1 (ctx %2) on %3").arg(m_pplFileName).arg(ctx).arg(req->label);
    m_pplJob = m_runner->submit<PplOutcome>(
        title, std::move(job), this,
        [this](PplOutcome out) {
            m_pplJob = 0;
            keepCompressed(out.base, out.cacheKey, out.overlay);
            onPerplexityDone(out);
        },
        [this](const QString& message) {
            m_pplJob = 0;
            setPplStatus(tr("Perplexity failed: %1").arg(message), true);
            updateButtons();
            emit perplexityFailed(message);
        },
        [this] {
            m_pplJob = 0;
            setPplStatus(m_pplChunksTotal > 0 ? tr("Cancelled after %1 of %2 chunks.")
                                                    .arg(m_pplChunksSeen)
                                                    .arg(m_pplChunksTotal)
                                              : tr("Cancelled."));
            updateButtons();
            emit perplexityCancelled();
        });
    setPplStatus(
        m_runner->currentJob() != m_pplJob ? tr("Queued behind “%1”…").arg(m_runner->currentTitle())
        : !req->key.empty() && !req->cached ? tr("Compressing for %1…").arg(m_pplConfig)
                                            : tr("Reading and tokenizing %1…").arg(m_pplFileName));
    updateButtons();
    return true;
}

void RunPanel::cancelPerplexity() {
    if (m_pplJob == 0) return;
    m_runner->cancel(m_pplJob);
    if (m_pplJob != 0) setPplStatus(tr("Cancelling…"));
}

void RunPanel::onJobStarted(TaskRunner::JobId id) {
    if (id == 0) return;
    if (id == m_genJob) setGenStatus(tr("Generating on %1…").arg(m_genConfig));
    if (id == m_pplJob) setPplStatus(tr("Reading and tokenizing %1…").arg(m_pplFileName));
}

void RunPanel::onProgress(TaskRunner::JobId id, double fraction, const QString& stage) {
    if (id == 0) return;
    // Compressing for the chosen recipe comes first, in the same job.
    const bool compressing = stage.startsWith(QStringLiteral("compressing: "));
    if (id == m_genJob && compressing)
        setGenStatus(tr("Compressing for %1: %2").arg(m_genConfig, stage.mid(13)));
    if (id != m_pplJob) return;
    m_pplProgress->setValue(int(std::lround(fraction * 1000.0)));
    if (compressing) {
        setPplStatus(tr("Compressing for %1: %2").arg(m_pplConfig, stage.mid(13)));
        return;
    }
    // computePerplexity reports "chunk i/N, PPL x" after each chunk: plot it live. The exact
    // per-chunk curve replaces these points when the run ends.
    static const QRegularExpression re(QStringLiteral("^chunk (\\d+)/(\\d+), PPL ([0-9.eE+-]+)"));
    const QRegularExpressionMatch m = re.match(stage);
    if (!m.hasMatch()) return;
    const int64_t i = m.captured(1).toLongLong();
    m_pplChunksTotal = m.captured(2).toLongLong();
    const double ppl = m.captured(3).toDouble();
    if (i > m_pplChunksSeen) {
        m_pplChunksSeen = i;
        m_pplPlot->addPoint(double(i), ppl);
    }
    setPplStatus(
        tr("Chunk %1 of %2  ·  PPL so far %3").arg(i).arg(m_pplChunksTotal).arg(ppl, 0, 'f', 4));
}

void RunPanel::onPerplexityDone(const PplOutcome& out) {
    const PerplexityResult& r = out.result;
    m_lastPpl = r;
    QVector<double> x, y;
    x.reserve(qsizetype(r.runningPpl.size()));
    y.reserve(qsizetype(r.runningPpl.size()));
    for (size_t i = 0; i < r.runningPpl.size(); ++i) {
        x << double(i + 1);
        y << r.runningPpl[i];
    }
    m_pplPlot->setData(x, y);
    m_pplPlot->setReferenceLine(r.ppl, tr("final %1").arg(r.ppl, 0, 'f', 4));
    m_lastPplConfig = m_pplConfig;
    const QString result = tr("PPL = %1 ± %2 (%3 chunks, %4 tokens, %5 seconds) on %6")
                               .arg(r.ppl, 0, 'f', 4)
                               .arg(r.pplError, 0, 'f', 4)
                               .arg(r.chunks)
                               .arg(formatCountExact(r.tokensEvaluated))
                               .arg(r.seconds, 0, 'f', 2)
                               .arg(m_lastPplConfig);
    setPplStatus(result);
    m_pplStatus->setToolTip(
        tr("%1: %2 tokens in the text, %3 scored; context %4; %5")
            .arg(m_pplFileName, formatCountExact(out.textTokens), formatCountExact(r.scoredTokens))
            .arg(r.ctx)
            .arg(QString::fromLatin1(perplexityModeName(r.mode))));
    updateButtons();
    emit logMessage(tr("Perplexity of %1 at ctx %2: %3").arg(m_pplFileName).arg(r.ctx).arg(result));
    emit perplexityFinished(r.ppl);
}

} // namespace lcw
