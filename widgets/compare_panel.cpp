#include "widgets/compare_panel.h"

#include "core/common/json_file.h"
#include "core/common/memory.h"
#include "core/compress/compressed_model.h"
#include "core/eval/config_source.h"
#include "core/eval/divergence.h"
#include "core/eval/generation_compare.h"
#include "core/eval/hidden_error.h"
#include "core/eval/pareto.h"
#include "core/eval/tasks.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "plots/bar_plot.h"
#include "plots/grouped_bar_plot.h"
#include "plots/scatter_plot.h"
#include "widgets/device_selector.h"
#include "widgets/number_format.h"
#include "widgets/results_panel.h"
#include "widgets/run_panel.h"

#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QClipboard>
#include <QComboBox>
#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSignalBlocker>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QTableWidget>
#include <QTextBrowser>
#include <QVBoxLayout>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unordered_set>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lcw {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Results JSON

namespace {
std::vector<std::string> toStd(const QStringList& l) {
    std::vector<std::string> out;
    for (const QString& s : l) out.push_back(s.toStdString());
    return out;
}
} // namespace

std::string CompareResults::toJson() const {
    json j;
    j["baseline"] = baseline.toStdString();
    j["ctx"] = ctx;
    j["chunks"] = chunks;
    j["scored_tokens"] = scoredTokens;
    j["prompt"] = prompt.toStdString();
    j["seconds"] = seconds;
    j["speed_prompt_tokens"] = speedPromptTokens;
    j["speed_decode_tokens"] = speedDecodeTokens;
    j["peak_rss_from_hwm"] = peakRssFromHwm;
    j["hidden_tokens"] = hiddenTokens;
    if (!hiddenProblem.isEmpty()) j["hidden_problem"] = hiddenProblem.toStdString();
    json rs = json::array();
    for (const CompareRow& r : rows) {
        json layers = json::array();
        for (const auto& [n, e] : r.layerError) layers.push_back({n.toStdString(), e});
        json tasks = json::array();
        for (const CompareTask& t : r.tasks)
            tasks.push_back({{"name", t.name.toStdString()},
                             {"items", t.items},
                             {"acc", t.acc},
                             {"acc_se", t.accError}});
        json hidden = json::array();
        for (const CompareHiddenBlock& b : r.hidden)
            hidden.push_back({{"block", b.layer},
                              {"rel_error", b.relError},
                              {"mean_rel_error", b.meanRelError},
                              {"mean_cosine", b.meanCosine},
                              {"min_cosine", b.minCosine}});
        rs.push_back({{"name", r.name.toStdString()},
                      {"model_file", r.modelFile.toStdString()},
                      {"hidden_error", hidden},
                      {"tasks", tasks},
                      {"recipe", r.recipeJson.toStdString()},
                      {"bits_per_weight", r.bitsPerWeight},
                      {"bytes", r.bytes},
                      {"ppl", r.ppl},
                      {"ppl_error", r.pplError},
                      {"kld", r.kld},
                      {"kld_error", r.kldError},
                      {"kld_p99", r.kldP99},
                      {"same_top", r.sameTop},
                      {"same_top_error", r.sameTopError},
                      {"kv_bytes_per_token", r.kvBytesPerToken},
                      {"tokens_per_second", r.tokensPerSecond},
                      {"decode_tokens_per_second", r.decodeTokensPerSecond},
                      {"weight_bytes", r.weightBytes},
                      {"peak_rss_increase_bytes", r.peakRssBytes},
                      {"rss_before_bytes", r.rssBeforeBytes},
                      {"layer_rel_error", layers},
                      {"generation", r.generation.toStdString()},
                      {"tokens", toStd(r.tokens)},
                      {"token_kld", r.tokenKld},
                      {"first_divergence", r.firstDivergence}});
    }
    j["rows"] = rs;
    return j.dump();
}

CompareResults CompareResults::fromJson(const std::string& text) {
    const json j = parseJsonText(text, "comparison results");
    CompareResults c;
    c.baseline = QString::fromStdString(j.at("baseline").get<std::string>());
    c.ctx = j.at("ctx").get<qint64>();
    c.chunks = j.at("chunks").get<qint64>();
    c.scoredTokens = j.at("scored_tokens").get<qint64>();
    c.prompt = QString::fromStdString(j.value("prompt", std::string()));
    c.seconds = j.value("seconds", 0.0);
    c.speedPromptTokens = j.value("speed_prompt_tokens", qint64(0));
    c.speedDecodeTokens = j.value("speed_decode_tokens", qint64(0));
    c.peakRssFromHwm = j.value("peak_rss_from_hwm", false);
    c.hiddenTokens = j.value("hidden_tokens", qint64(0));
    c.hiddenProblem = QString::fromStdString(j.value("hidden_problem", std::string()));
    for (const json& r : j.at("rows")) {
        CompareRow row;
        row.name = QString::fromStdString(r.at("name").get<std::string>());
        row.recipeJson = QString::fromStdString(r.value("recipe", std::string()));
        row.modelFile = QString::fromStdString(r.value("model_file", std::string()));
        for (const json& b : r.value("hidden_error", json::array()))
            row.hidden.push_back({b.at("block").get<int>(), b.at("rel_error").get<double>(),
                                  b.value("mean_rel_error", 0.0), b.value("mean_cosine", 0.0),
                                  b.value("min_cosine", 0.0)});
        row.bitsPerWeight = r.at("bits_per_weight").get<double>();
        row.bytes = r.at("bytes").get<quint64>();
        row.ppl = r.at("ppl").get<double>();
        row.pplError = r.value("ppl_error", 0.0);
        row.kld = r.at("kld").get<double>();
        row.kldError = r.value("kld_error", 0.0);
        row.kldP99 = r.value("kld_p99", 0.0);
        row.sameTop = r.at("same_top").get<double>();
        row.sameTopError = r.value("same_top_error", 0.0);
        row.kvBytesPerToken = r.value("kv_bytes_per_token", 0.0);
        row.tokensPerSecond = r.value("tokens_per_second", 0.0);
        row.decodeTokensPerSecond = r.value("decode_tokens_per_second", 0.0);
        row.weightBytes = r.value("weight_bytes", quint64(0));
        row.peakRssBytes = r.value("peak_rss_increase_bytes", quint64(0));
        row.rssBeforeBytes = r.value("rss_before_bytes", quint64(0));
        for (const json& l : r.value("layer_rel_error", json::array()))
            row.layerError.emplace_back(QString::fromStdString(l.at(0).get<std::string>()),
                                        l.at(1).get<double>());
        row.generation = QString::fromStdString(r.value("generation", std::string()));
        for (const auto& t : r.value("tokens", std::vector<std::string>()))
            row.tokens << QString::fromStdString(t);
        row.tokenKld = r.value("token_kld", std::vector<double>());
        row.firstDivergence = r.value("first_divergence", qint64(-1));
        for (const json& t : r.value("tasks", json::array()))
            row.tasks.push_back({QString::fromStdString(t.at("name").get<std::string>()),
                                 t.value("items", qint64(0)), t.at("acc").get<double>(),
                                 t.value("acc_se", 0.0)});
        c.rows.push_back(std::move(row));
    }
    return c;
}

namespace {

struct ConfigSpec {
    QString name;
    bool original = false;
    QString modelFile; ///< another model file
    compress::Recipe recipe;
};

std::string readText(const QString& path) {
    std::ifstream in(path.toStdString(), std::ios::binary);
    if (!in) throw Error(path.toStdString() + ": cannot open the evaluation text");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// Decoded pieces of `ids` (each the text it adds to the decoded prefix, so characters split
/// over byte tokens stay intact) and the whole text.
QStringList tokenPieces(const Tokenizer& tk, const std::vector<int32_t>& ids, QString* whole) {
    QStringList out;
    std::string prev;
    std::vector<int32_t> prefix;
    for (int32_t id : ids) {
        prefix.push_back(id);
        const std::string cur = tk.decode(prefix);
        out << QString::fromStdString(
            cur.compare(0, prev.size(), prev) == 0 ? cur.substr(prev.size()) : cur);
        prev = cur;
    }
    *whole = QString::fromStdString(prev);
    return out;
}

/// Weight bytes `w` holds in memory while it runs (see CompareRow::weightBytes): every tensor
/// view the runtime reads through find() (the base's for tensors the overlay leaves alone, the
/// overlay's for the others), plus the overlay's packed codes, scales, zero points, outliers
/// and masks where they are held apart from those views. Memory shared by two names (tied
/// embeddings) counts once.
uint64_t residentWeightBytes(const Model& base, const compress::CompressedModel* overlay) {
    const WeightSource& w = overlay ? static_cast<const WeightSource&>(*overlay) : base;
    std::unordered_set<const void*> seen;
    uint64_t n = 0;
    auto view = [&](const std::string& name) {
        const TensorView* v = w.find(name);
        if (v && v->data && seen.insert(v->data).second) n += v->nbytes;
    };
    for (const TensorView& t : base.tensors()) view(t.name);
    if (!overlay) return n;
    for (const std::string& name : overlay->addedNames()) view(name);
    for (const std::string& name : overlay->replacedNames()) {
        const compress::CompressedTensor* c = overlay->compressed(name);
        if (!c) continue;
        const compress::PackedTensor& p = c->packed;
        if (!p.codes.empty() && seen.insert(p.codes.data()).second)
            n += p.codes.size() +
                 2 * uint64_t(p.scales.size() + p.zeros.size() + p.outlierValues.size()) +
                 4 * uint64_t(p.outlierCols.size() + p.colOrder.size());
        n += c->maskBits.size();
    }
    return n;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    const size_t h = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(h), v.end());
    if (v.size() % 2) return v[h];
    return 0.5 * (v[h] + *std::max_element(v.begin(), v.begin() + std::ptrdiff_t(h)));
}

/// One configuration's speed run.
struct SpeedRun {
    double prefillTokensPerSecond = 0, decodeTokensPerSecond = 0;
    uint64_t rssBefore = 0, peakIncrease = 0;
    bool fromHwm = false;
    bool cancelled = false;
};

/// Prefills `prompt` in one batch (after an untimed warm-up pass; the median of up to 5 passes),
/// then decodes `n` greedy tokens one forward each (EOS does not stop it: every configuration
/// decodes the same number of tokens; the median time per token), with the peak resident set of the
/// run measured as an increase over the resident set before it.
SpeedRun measureSpeed(const WeightSource& w, const std::vector<int32_t>& prompt, int64_t n,
                      Progress& p) {
    using Clock = std::chrono::steady_clock;
    SpeedRun r;
#if defined(__GLIBC__)
    // Heap pages freed by earlier steps go back to the system first, so that pages this run
    // allocates count as an increase rather than reusing memory already resident.
    malloc_trim(0);
#endif
    r.rssBefore = currentRssBytes();
    r.fromHwm = resetPeakRss();
    uint64_t sampled = r.rssBefore;
    auto sample = [&] {
        if (!r.fromHwm) sampled = std::max(sampled, currentRssBytes());
    };
    {
        SessionOptions so;
        so.contextLength = int64_t(prompt.size()) + n + 1;
        so.batchSize = int64_t(prompt.size());
        Session s(w, so);
        std::vector<float> logits;
        // One untimed pass first, as llama-bench warms up: one-time costs (buffers, lazily
        // prepared weights, worker threads waking) are not prompt-processing speed. Then the
        // median of 5 timed passes (3 when a pass takes 0.2 s or more, 1 from 2 s on): a pass
        // whose threads another process preempts is an outlier, not the configuration's speed.
        auto timedPrefill = [&] {
            s.reset();
            const auto t0 = Clock::now();
            s.forward(prompt, logits);
            return std::chrono::duration<double>(Clock::now() - t0).count();
        };
        const double warm = timedPrefill();
        constexpr int kMaxReps = 5;
        const int reps = warm < 0.2 ? kMaxReps : (warm < 2.0 ? 3 : 1);
        std::vector<double> prefill;
        for (int k = 0; k < reps; ++k) {
            if (!p.report(0.0, "prefill")) {
                r.cancelled = true;
                return r;
            }
            prefill.push_back(timedPrefill());
            sample();
        }
        const double pt = median(prefill);
        r.prefillTokensPerSecond = pt > 0 ? double(prompt.size()) / pt : 0;
        std::mt19937_64 rng(0);
        const int64_t vocab = int64_t(logits.size());
        int32_t next = sampleToken(logits.data(), vocab, SamplingParams{}, rng);
        std::vector<double> decode; // seconds per token
        for (int64_t i = 0; i < n; ++i) {
            if (!p.report(double(i) / double(n), "decode")) {
                r.cancelled = true;
                return r;
            }
            const auto t1 = Clock::now();
            s.forward(std::span<const int32_t>(&next, 1), logits);
            next = sampleToken(logits.data(), vocab, SamplingParams{}, rng);
            decode.push_back(std::chrono::duration<double>(Clock::now() - t1).count());
            sample();
        }
        const double dt = median(decode);
        r.decodeTokensPerSecond = dt > 0 ? 1.0 / dt : 0;
    }
    const uint64_t peak = r.fromHwm ? std::max(peakRssBytes(), sampled) : sampled;
    r.peakIncrease = peak > r.rssBefore ? peak - r.rssBefore : 0;
    return r;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Panel

ComparePanel::ComparePanel(TaskRunner* runner, QWidget* parent)
    : QWidget(parent), m_runner(runner) {
    m_textFile = RunPanel::defaultTextFile();
    {
        const char* shared = std::getenv("LCW_SHARED_DIR");
        m_tasksDir = QString::fromLocal8Bit(shared && *shared ? shared : "../shared") +
                     QStringLiteral("/data/tasks");
    }
    buildUi();
    rebuildConfigList();
    syncUi();
    connect(m_runner, &TaskRunner::progressChanged, this,
            [this](TaskRunner::JobId j, double f, const QString& stage) {
                if (j == 0 || j != m_job) return;
                m_progress->setValue(int(f * 1000));
                m_status->setText(stage);
            });
}

ComparePanel::~ComparePanel() {
    if (m_job) m_runner->cancel(m_job);
}

void ComparePanel::buildUi() {
    auto* split = new QSplitter(Qt::Horizontal, this);
    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(6, 6, 6, 6);
    lay->addWidget(split);
    QWidget* left = buildConfigSide(split);
    // Right: results tabs.
    m_tabs = new QTabWidget(split);
    m_tabs->addTab(buildMetricsTab(), tr("Metrics"));
    m_tabs->addTab(buildLayersTab(), tr("Per Layer"));
    m_tabs->addTab(buildGenerationsTab(), tr("Generations"));
    m_tabs->addTab(buildSpeedTab(), tr("Speed && Memory"));
    m_tabs->addTab(buildHiddenTab(), tr("Hidden State"));
    split->addWidget(left);
    split->addWidget(m_tabs);
    split->setStretchFactor(0, 1);
    split->setStretchFactor(1, 4);
}

// Left: configurations and settings.
QWidget* ComparePanel::buildConfigSide(QWidget* parent) {
    auto* left = new QWidget(parent);
    auto* ll = new QVBoxLayout(left);
    ll->setContentsMargins(0, 0, 0, 0);
    ll->addWidget(new QLabel(tr("Configurations"), left));
    m_configs = new QListWidget(left);
    ll->addWidget(m_configs, 1);
    ll->addWidget(buildAddRecipeButton(left));
    ll->addWidget(buildAddModelButton(left));
    ll->addLayout(buildSettingsForm(left));
    auto* buttons = new QHBoxLayout;
    m_runButton = new QPushButton(tr("Compare"), left);
    m_cancelButton = new QPushButton(tr("Cancel"), left);
    connect(m_runButton, &QPushButton::clicked, this, [this] { run(); });
    connect(m_cancelButton, &QPushButton::clicked, this, &ComparePanel::cancel);
    buttons->addWidget(m_runButton);
    buttons->addWidget(m_cancelButton);
    ll->addLayout(buttons);
    m_progress = new QProgressBar(left);
    m_progress->setRange(0, 1000);
    ll->addWidget(m_progress);
    m_status = new QLabel(left);
    m_status->setWordWrap(true);
    ll->addWidget(m_status);
    connect(m_configs, &QListWidget::itemChanged, this, [this] { syncUi(); });
    return left;
}

QPushButton* ComparePanel::buildAddRecipeButton(QWidget* parent) {
    auto* addFile = new QPushButton(tr("Add Recipe File…"), parent);
    connect(addFile, &QPushButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(this, tr("Add Recipe"), QString(),
                                                       tr("Recipes (*.json);;All files (*)"));
        QString err;
        if (!p.isEmpty() && !addRecipeFile(p, &err)) emit failed(err);
    });
    return addFile;
}

QPushButton* ComparePanel::buildAddModelButton(QWidget* parent) {
    auto* addModel = new QPushButton(tr("Add Model File…"), parent);
    addModel->setToolTip(tr("Another model file with the same vocabulary (a GGUF quantised "
                            "elsewhere, the same model in another format), compared on the same "
                            "tokens as lcw-cli eval --compare-model does"));
    connect(addModel, &QPushButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(
            this, tr("Add Model File"), QString(),
            tr("Models (*.gguf *.safetensors *.bin config.json);;All files (*)"));
        if (p.isEmpty()) return;
        // A Hugging Face folder is chosen through a file in it.
        const QFileInfo fi(p);
        const QString path =
            fi.suffix() == QStringLiteral("json") || fi.suffix() == QStringLiteral("safetensors")
                ? fi.absolutePath()
                : fi.absoluteFilePath();
        QString err;
        if (!addModelFile(path, &err)) emit failed(err);
    });
    return addModel;
}

// Baseline, text chunks, generation, speed runs, tasks and the hidden-state error.
QFormLayout* ComparePanel::buildSettingsForm(QWidget* parent) {
    auto* form = new QFormLayout;
    m_baseline = new QComboBox(parent);
    m_ctx = new QSpinBox(parent);
    m_ctx->setRange(8, 8192);
    m_ctx->setValue(128);
    m_chunks = new QSpinBox(parent);
    m_chunks->setRange(0, 100000);
    m_chunks->setValue(8);
    m_chunks->setSpecialValueText(tr("all"));
    m_prompt = new QLineEdit(QStringLiteral("Once upon a time"), parent);
    m_genTokens = new QSpinBox(parent);
    m_genTokens->setRange(0, 4096);
    m_genTokens->setValue(40);
    // The process-wide compute device beside the baseline (one row: the form keeps its height).
    auto* baselineRow = new QHBoxLayout;
    baselineRow->addWidget(m_baseline, 1);
    auto* device = new DeviceSelector(parent);
    auto* deviceLabel = new QLabel(tr("Device:"), parent);
    deviceLabel->setBuddy(device);
    baselineRow->addWidget(deviceLabel);
    baselineRow->addWidget(device, 1);
    form->addRow(tr("Baseline"), baselineRow);
    form->addRow(tr("Context"), m_ctx);
    form->addRow(tr("Chunks"), m_chunks);
    form->addRow(tr("Prompt"), m_prompt);
    form->addRow(tr("New tokens"), m_genTokens);
    m_speedTokens = new QSpinBox(parent);
    m_speedTokens->setRange(0, 4096);
    m_speedTokens->setValue(32);
    m_speedTokens->setSpecialValueText(tr("off"));
    m_speedTokens->setToolTip(
        tr("Each configuration also runs alone: a prompt of min(context, 512) tokens of the text "
           "in one batch (prefill tokens/s), then this many greedy tokens (decode tokens/s), "
           "with the process's peak memory measured around it. Off: no speed runs."));
    form->addRow(tr("Speed tokens"), m_speedTokens);
    m_tasks = new QLineEdit(parent);
    m_tasks->setPlaceholderText(tr("none · e.g. piqa,arc_easy"));
    m_tasks->setToolTip(tr("Zero-shot tasks (lambada, arc_easy, piqa, winogrande, hellaswag) "
                           "scored per configuration; data from the tasks folder"));
    m_taskLimit = new QSpinBox(parent);
    m_taskLimit->setRange(0, 1000000);
    m_taskLimit->setValue(200);
    m_taskLimit->setSpecialValueText(tr("all"));
    m_taskLimit->setToolTip(tr("Items per task: a fixed pseudo-random subset (seed 1234)"));
    form->addRow(tr("Tasks"), m_tasks);
    form->addRow(tr("Task items"), m_taskLimit);
    m_hiddenCheck = new QCheckBox(tr("Hidden-state error per block"), parent);
    m_hiddenCheck->setToolTip(
        tr("Also compare each configuration's residual stream after every block with the "
           "baseline's on the same chunks (lcw-cli hidden-error): the Hidden State tab"));
    form->addRow(QString(), m_hiddenCheck);
    return form;
}

// Metrics: the table, the Pareto axes and the Pareto plot.
QWidget* ComparePanel::buildMetricsTab() {
    auto* metrics = new QWidget(m_tabs);
    auto* ml = new QVBoxLayout(metrics);
    ml->addWidget(buildMetricsTable(metrics), 2);
    ml->addLayout(buildParetoAxes(metrics));
    ml->addWidget(buildParetoPlot(metrics), 3);
    return metrics;
}

QTableWidget* ComparePanel::buildMetricsTable(QWidget* parent) {
    m_table = new QTableWidget(0, ColumnCount, parent);
    m_table->setHorizontalHeaderLabels({tr("Configuration"), tr("Bits/w"), tr("Size"), tr("PPL"),
                                        tr("KLD"), tr("KLD p99"), tr("Same top %"),
                                        tr("Prefill tok/s"), tr("Decode tok/s"),
                                        tr("Weights in RAM"), tr("Peak RSS +"), tr("KV B/token")});
    m_table->horizontalHeaderItem(KldColumn)->setToolTip(
        tr("Mean KL divergence from the baseline per token (nats) ± standard error"));
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->verticalHeader()->setVisible(false);
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->setAlternatingRowColors(true);
    auto* copy = new QAction(tr("Copy as TSV"), m_table);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    connect(copy, &QAction::triggered, this, [this] { copyMetrics(); });
    m_table->addAction(copy);
    m_table->setContextMenuPolicy(Qt::ActionsContextMenu);
    return m_table;
}

QLayout* ComparePanel::buildParetoAxes(QWidget* parent) {
    auto* axes = new QHBoxLayout;
    m_xAxis = new QComboBox(parent);
    m_xAxis->addItems({tr("size (MiB)"), tr("bits/weight"), tr("KV cache (bytes/token)")});
    m_yAxis = new QComboBox(parent);
    m_yAxis->addItems({tr("KLD"), tr("PPL")});
    connect(m_xAxis, &QComboBox::currentIndexChanged, this,
            [this](int i) { setParetoAxes(i, m_paretoY); });
    connect(m_yAxis, &QComboBox::currentIndexChanged, this,
            [this](int i) { setParetoAxes(m_paretoX, i); });
    axes->addWidget(new QLabel(tr("Pareto: x"), parent));
    axes->addWidget(m_xAxis);
    axes->addWidget(new QLabel(tr("y"), parent));
    axes->addWidget(m_yAxis);
    // Sizes and KLDs span orders of magnitude: log axes by default.
    m_paretoLogX = new QCheckBox(tr("Log x"), parent);
    m_paretoLogY = new QCheckBox(tr("Log y"), parent);
    m_paretoLogX->setChecked(true);
    m_paretoLogY->setChecked(true);
    m_paretoLogY->setToolTip(tr("On a log axis a value of 0 (the original's KLD) is drawn on "
                                "the axis floor, hollow"));
    axes->addWidget(m_paretoLogX);
    axes->addWidget(m_paretoLogY);
    axes->addStretch();
    return axes;
}

// The Pareto plot, its point and the table's row selected together.
ScatterPlot* ComparePanel::buildParetoPlot(QWidget* parent) {
    m_pareto = new ScatterPlot(parent);
    m_pareto->setTitle(tr("Size against error"));
    m_pareto->setLogX(true);
    m_pareto->setLogY(true);
    connect(m_paretoLogX, &QCheckBox::toggled, m_pareto, &ScatterPlot::setLogX);
    connect(m_paretoLogY, &QCheckBox::toggled, m_pareto, &ScatterPlot::setLogY);
    connect(m_pareto, &ScatterPlot::pointClicked, this, [this](int i) {
        if (i >= 0 && i < m_pointRows.size()) selectRow(m_pointRows[i]);
    });
    connect(m_table, &QTableWidget::itemSelectionChanged, this, [this] {
        const int row = selectedRow();
        m_pareto->setSelected(m_pointRows.indexOf(row));
    });
    return m_pareto;
}

QWidget* ComparePanel::buildLayersTab() {
    auto* layersPage = new QWidget(m_tabs);
    auto* lpl = new QVBoxLayout(layersPage);
    m_logLayers = new QCheckBox(tr("logarithmic"), layersPage);
    m_logLayers->setChecked(true);
    connect(m_logLayers, &QCheckBox::toggled, this, [this](bool on) { m_layers->setLogScale(on); });
    m_layers = new GroupedBarPlot(layersPage);
    m_layers->setTitle(tr("Relative weight error per layer"));
    m_layers->setValueAxisLabel(tr("‖W − Ŵ‖ / ‖W‖"));
    m_layers->setLogScale(true);
    lpl->addWidget(m_logLayers);
    lpl->addWidget(m_layers, 1);
    return layersPage;
}

QWidget* ComparePanel::buildGenerationsTab() {
    m_genPage = new QWidget(m_tabs);
    auto* gl = new QVBoxLayout(m_genPage);
    m_genNote = new QLabel(m_genPage);
    m_genNote->setWordWrap(true);
    gl->addWidget(m_genNote);
    m_genColumns = new QHBoxLayout;
    gl->addLayout(m_genColumns, 1);
    return m_genPage;
}

// Speed and memory: one small bar plot per metric, a bar per configuration (its colour the
// same in every plot); clicking a bar selects the configuration's row.
QWidget* ComparePanel::buildSpeedTab() {
    m_speedPage = new QWidget(m_tabs);
    auto* spl = new QVBoxLayout(m_speedPage);
    m_speedNote = new QLabel(m_speedPage);
    m_speedNote->setWordWrap(true);
    spl->addWidget(m_speedNote);
    auto* grid = new QGridLayout;
    const QString titles[SpeedMetricCount] = {tr("Prefill (tokens/s)"), tr("Decode (tokens/s)"),
                                              tr("Weights in RAM (MiB)"),
                                              tr("Peak RSS increase of the run (MiB)")};
    for (int m = 0; m < SpeedMetricCount; ++m) {
        m_speedPlots[m] = buildSpeedPlot(m, titles[m]);
        grid->addWidget(m_speedPlots[m], m / 2, m % 2);
    }
    spl->addLayout(grid, 1);
    return m_speedPage;
}

BarPlot* ComparePanel::buildSpeedPlot(int m, const QString& title) {
    auto* plot = new BarPlot(m_speedPage);
    plot->setObjectName(QStringLiteral("speedPlot%1").arg(m));
    plot->setTitle(title);
    plot->setValueAxisLabel(m < WeightsMetric ? tr("tokens/s") : tr("MiB"));
    plot->setTooltipFormatter([this, m](int i, const QString& label, double v) {
        if (m < WeightsMetric) return tr("%1: %2 tokens/s").arg(label).arg(v, 0, 'f', 1);
        const CompareRow* r =
            i >= 0 && size_t(i) < m_results.rows.size() ? &m_results.rows[size_t(i)] : nullptr;
        const quint64 b = !r ? 0 : (m == WeightsMetric ? r->weightBytes : r->peakRssBytes);
        return tr("%1: %2").arg(label, formatBytes(b));
    });
    connect(plot, &BarPlot::barClicked, this, [this](int i) { selectRow(i); });
    return plot;
}

// Hidden-state error per block: one series per configuration, and the numbers as a table.
QWidget* ComparePanel::buildHiddenTab() {
    m_hiddenPage = new QWidget(m_tabs);
    auto* hpl = new QVBoxLayout(m_hiddenPage);
    m_hiddenNote = new QLabel(m_hiddenPage);
    m_hiddenNote->setWordWrap(true);
    hpl->addWidget(m_hiddenNote);
    m_hiddenLog = new QCheckBox(tr("logarithmic"), m_hiddenPage);
    m_hiddenLog->setChecked(true);
    hpl->addWidget(m_hiddenLog);
    auto* hsplit = new QSplitter(Qt::Vertical, m_hiddenPage);
    m_hiddenPlot = new GroupedBarPlot(hsplit);
    m_hiddenPlot->setTitle(tr("Hidden-state error per block"));
    m_hiddenPlot->setValueAxisLabel(tr("‖H_q − H‖ / ‖H‖"));
    m_hiddenPlot->setLogScale(true);
    connect(m_hiddenLog, &QCheckBox::toggled, m_hiddenPlot, &GroupedBarPlot::setLogScale);
    m_hiddenTable = new QTableWidget(0, 1, hsplit);
    m_hiddenTable->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_hiddenTable->verticalHeader()->setVisible(false);
    m_hiddenTable->setAlternatingRowColors(true);
    hsplit->addWidget(m_hiddenPlot);
    hsplit->addWidget(m_hiddenTable);
    hsplit->setStretchFactor(0, 3);
    hsplit->setStretchFactor(1, 2);
    hpl->addWidget(hsplit, 1);
    return m_hiddenPage;
}

void ComparePanel::setModel(std::shared_ptr<const Model> model) {
    if (m_job) cancel();
    m_model = std::move(model);
    clearResults();
    syncUi();
}

QStringList ComparePanel::availableConfigs() const {
    QStringList out;
    for (int i = 0; i < m_configs->count(); ++i) out << m_configs->item(i)->text();
    return out;
}

void ComparePanel::rebuildConfigList() {
    const QStringList checked = selectedConfigs();
    m_configs->clear();
    auto add = [this, &checked](const QString& name, const QString& tip, bool def) {
        auto* it = new QListWidgetItem(name, m_configs);
        it->setFlags(it->flags() | Qt::ItemIsUserCheckable);
        it->setCheckState(checked.contains(name) || (checked.isEmpty() && def) ? Qt::Checked
                                                                               : Qt::Unchecked);
        it->setToolTip(tip);
    };
    add(editorName(), tr("The recipe editor's current recipe"), false);
    for (const auto& p : compress::presets()) {
        const QString n = QString::fromStdString(p.name);
        add(n, QString::fromStdString(p.description),
            n == QStringLiteral("W8A16") || n == QStringLiteral("W4A16-g32") ||
                n == QStringLiteral("W3A16-g64"));
    }
    for (const auto& [n, j] : m_extra) add(n, tr("Recipe file"), true);
    for (const auto& [n, path] : m_modelFiles)
        add(n, tr("Model file: %1").arg(QDir::toNativeSeparators(path)), true);
    const QString base = m_baseline->currentText();
    m_baseline->clear();
    m_baseline->addItem(originalName());
    m_baseline->addItems(availableConfigs());
    m_baseline->setCurrentText(base.isEmpty() ? originalName() : base);
}

void ComparePanel::setSelectedConfigs(const QStringList& names) {
    for (int i = 0; i < m_configs->count(); ++i)
        m_configs->item(i)->setCheckState(
            names.contains(m_configs->item(i)->text()) ? Qt::Checked : Qt::Unchecked);
}

QStringList ComparePanel::selectedConfigs() const {
    QStringList out;
    for (int i = 0; i < m_configs->count(); ++i)
        if (m_configs->item(i)->checkState() == Qt::Checked) out << m_configs->item(i)->text();
    return out;
}

bool ComparePanel::addRecipeFile(const QString& path, QString* error) {
    try {
        const compress::Recipe r = compress::Recipe::load(path.toStdString());
        QString name = QFileInfo(path).completeBaseName();
        addExtraRecipe(name, QString::fromStdString(r.toJson().dump()));
        return true;
    } catch (const std::exception& e) {
        if (error) *error = QString::fromUtf8(e.what());
        return false;
    }
}

bool ComparePanel::addModelFile(const QString& path, QString* error) {
    const QFileInfo fi(path);
    if (!fi.exists()) {
        if (error) *error = tr("%1 does not exist").arg(QDir::toNativeSeparators(path));
        return false;
    }
    const QString abs = fi.absoluteFilePath();
    for (const auto& [n, p] : m_modelFiles)
        if (p == abs) return true; // already there
    // The file name, or with its folder when another configuration has that name.
    QString name = fi.fileName();
    if (availableConfigs().contains(name) || name == originalName())
        name = fi.dir().dirName() + QLatin1Char('/') + fi.fileName();
    m_modelFiles.emplace_back(name, abs);
    QStringList keep = selectedConfigs();
    keep << name;
    rebuildConfigList();
    setSelectedConfigs(keep);
    syncUi();
    return true;
}

void ComparePanel::setHiddenErrorEnabled(bool on) {
    m_hiddenCheck->setChecked(on);
}

bool ComparePanel::hiddenErrorEnabled() const {
    return m_hiddenCheck->isChecked();
}

QString ComparePanel::editorLabel(const compress::Recipe& recipe) {
    nlohmann::ordered_json c;
    c["name"] = editorName().toStdString();
    c["recipe"] = parseOrderedJsonText(recipe.toJson().dump(), "recipe " + recipe.name);
    return ResultsPanel::configLabel(c);
}

void ComparePanel::addExtraRecipe(const QString& name, const QString& jsonText) {
    // Validate now so a bad entry never reaches a job.
    compress::Recipe::fromJson(
        parseJsonText(jsonText.toStdString(), "recipe " + name.toStdString()));
    for (auto& [n, j] : m_extra)
        if (n == name) {
            j = jsonText;
            return;
        }
    m_extra.emplace_back(name, jsonText);
    QStringList keep = selectedConfigs();
    keep << name;
    rebuildConfigList();
    setSelectedConfigs(keep);
}

std::vector<std::pair<QString, QString>> ComparePanel::extraRecipes() const {
    return m_extra;
}

void ComparePanel::setBaseline(const QString& name) {
    m_baseline->setCurrentText(name);
}
void ComparePanel::setContext(int ctx) {
    m_ctx->setValue(ctx);
}
void ComparePanel::setMaxChunks(int chunks) {
    m_chunks->setValue(chunks);
}
void ComparePanel::setPrompt(const QString& prompt) {
    m_prompt->setText(prompt);
}
void ComparePanel::setGenerateTokens(int n) {
    m_genTokens->setValue(n);
}
void ComparePanel::setSpeedTokens(int n) {
    m_speedTokens->setValue(n);
}
void ComparePanel::setTasks(const QString& list, int limit) {
    m_tasks->setText(list);
    m_taskLimit->setValue(limit);
}
void ComparePanel::setTextFile(const QString& path) {
    m_textFile = path;
    syncUi();
}

void ComparePanel::syncUi() {
    const bool can = m_model && !m_job && !selectedConfigs().isEmpty() && !m_textFile.isEmpty();
    m_runButton->setEnabled(can);
    m_cancelButton->setEnabled(m_job != 0);
}

// ---------------------------------------------------------------------------------------------
// Comparison job

namespace {

/// Everything a comparison reads, taken on the UI thread.
struct CompareInput {
    std::shared_ptr<const Model> model;
    std::vector<ConfigSpec> specs; ///< the baseline first
    QString textFile;
    PerplexityOptions opts;
    std::string prompt;
    int64_t genTokens = 0;
    int64_t speedTokens = 0;
    std::vector<Task> tasks;
    int64_t taskLimit = 0;
    bool hidden = false;
};

/// The comparison on a worker thread, as a list of steps filling one CompareResults. Progress:
/// 0..35% compress, 35..75% divergence (the last 10% of it the hidden-state error when asked
/// for), 75..85% speed runs, 85..95% tasks, ..100% generations; a stage left out leaves its share
/// to the one before. Each step returns false when cancelled.
class CompareJob {
public:
    CompareJob(const CompareInput& in, Progress& p)
        : m_in(in), m_p(p), m_model(*in.model), m_tk(in.model->tokenizer()) {}

    CompareResults run() {
        m_out.prompt = QString::fromStdString(m_in.prompt);
        m_out.baseline = m_in.specs.front().name;
        m_tokens = m_tk.encode(readText(m_in.textFile), true);
        m_opts = m_in.opts;
        m_opts.bosId = m_tk.bosId();
        loadModelFiles();
        if (!compressConfigurations()) return m_out;
        collectConfigs();
        if (!scoreDivergence()) return m_out;
        if (m_in.hidden && !scoreHiddenError()) return CompareResults{};
        if (!runSpeeds()) return CompareResults{};
        if (!scoreTasks()) return CompareResults{};
        if (!runGenerations()) return m_out;
        m_p.report(1.0, "done");
        return m_out;
    }

private:
    /// Other model files first: one of another vocabulary fails the job before any work.
    void loadModelFiles() {
        m_others.resize(m_in.specs.size());
        for (size_t i = 0; i < m_in.specs.size(); ++i)
            if (!m_in.specs[i].modelFile.isEmpty()) {
                m_p.report(0.0, "loading " +
                                    QFileInfo(m_in.specs[i].modelFile).fileName().toStdString());
                m_others[i] = loadCompareModel(m_in.specs[i].modelFile.toStdString(), m_model);
            }
    }

    /// A row per configuration with its size; recipes are compressed into overlays (0..35%).
    bool compressConfigurations() {
        m_overlays.resize(m_in.specs.size());
        for (size_t i = 0; i < m_in.specs.size(); ++i) {
            const ConfigSpec& spec = m_in.specs[i];
            CompareRow row;
            row.name = spec.name;
            if (m_others[i]) {
                row.modelFile = spec.modelFile;
                row.bytes = m_others[i]->storedBytes();
                row.bitsPerWeight = modelBitsPerWeight(*m_others[i]);
            } else if (spec.original) {
                row.bytes = m_model.storedBytes();
                row.bitsPerWeight = double(m_model.storedBytes()) * 8.0 /
                                    double(std::max<int64_t>(1, m_model.parameterCount()));
            } else if (!compressRecipe(i, row)) {
                return false;
            }
            m_out.rows.push_back(std::move(row));
        }
        return true;
    }

    bool compressRecipe(size_t i, CompareRow& row) {
        const double n = double(m_in.specs.size());
        RangeProgress rp(m_p, 0.35 * double(i) / n, 0.35 * double(i + 1) / n,
                         row.name.toStdString() + ": ");
        compress::CompressResult cr =
            compress::compressWithBundledCalibration(m_model, m_in.specs[i].recipe, rp);
        if (cr.status == Status::Cancelled) return false;
        const compress::SizeInfo tot = cr.model->totalSize();
        row.bytes = tot.bytes();
        row.bitsPerWeight = tot.bitsPerWeight();
        row.recipeJson = QString::fromStdString(m_in.specs[i].recipe.toJson().dump());
        for (const auto& l : cr.layers)
            row.layerError.emplace_back(QString::fromStdString(l.name), l.error.relError);
        m_overlays[i] = std::move(cr.model);
        return true;
    }

    /// The weights configuration `i` runs with.
    const WeightSource* source(size_t i) const {
        if (m_overlays[i]) return m_overlays[i].get();
        if (m_others[i]) return m_others[i].get();
        return &m_model;
    }

    /// Every configuration after the baseline, for the divergence and generation comparisons.
    void collectConfigs() {
        for (size_t i = 1; i < m_in.specs.size(); ++i)
            m_configs.push_back({m_in.specs[i].name.toStdString(), source(i)});
    }

    /// Divergence up to divergenceEnd(), then the hidden-state error (when asked for) up to
    /// hiddenEnd().
    double hiddenEnd() const { return m_in.speedTokens > 0 ? 0.75 : 0.85; }
    double divergenceEnd() const { return m_in.hidden ? hiddenEnd() - 0.1 : hiddenEnd(); }

    /// Perplexity, KLD and same-top rates against the baseline on the text's chunks.
    bool scoreDivergence() {
        RangeProgress dp(m_p, 0.35, divergenceEnd(), "divergence: ");
        const DivergenceResult d = compareToBaseline(*source(0), m_configs, m_tokens, m_opts, dp);
        if (d.status == Status::Cancelled) return false;
        m_out.ctx = d.ctx;
        m_out.chunks = d.chunks;
        m_out.scoredTokens = d.scoredTokens;
        m_out.seconds = d.seconds;
        const double tokensRun = double(d.chunks * d.ctx);
        CompareRow& base = m_out.rows.front();
        base.ppl = d.baselinePpl;
        base.pplError = d.baselinePplError;
        base.sameTop = 1.0;
        base.tokensPerSecond = d.baselineSeconds > 0 ? tokensRun / d.baselineSeconds : 0;
        for (size_t i = 0; i < d.configs.size(); ++i) {
            const DivergenceStats& s = d.configs[i];
            CompareRow& r = m_out.rows[i + 1];
            r.ppl = s.ppl;
            r.pplError = s.pplError;
            r.kld = s.kld.mean;
            r.kldError = s.kld.meanError;
            r.kldP99 = s.kld.p99;
            r.sameTop = s.sameTop;
            r.sameTopError = s.sameTopError;
            r.tokensPerSecond = s.seconds > 0 ? tokensRun / s.seconds : 0;
        }
        // The KV cache of one context per configuration (eviction policies, KV quantisation).
        for (size_t i = 0; i < m_out.rows.size(); ++i)
            m_out.rows[i].kvBytesPerToken =
                measureKvCache(*source(i), m_tokens, m_opts.ctx).bytesPerToken();
        return true;
    }

    /// Each configuration's residual stream after every block against the baseline's.
    bool scoreHiddenError() {
        RangeProgress hp(m_p, divergenceEnd(), hiddenEnd(), "hidden states: ");
        try {
            const HiddenErrorResult h =
                hiddenStateError(*source(0), m_configs, m_tokens, m_opts, hp);
            if (h.status == Status::Cancelled) return false;
            m_out.hiddenTokens = h.tokens;
            for (size_t k = 0; k < h.configs.size() && k + 1 < m_out.rows.size(); ++k)
                for (const BlockError& b : h.configs[k].blocks)
                    m_out.rows[k + 1].hidden.push_back(
                        {b.layer, b.relError, b.meanRelError, b.meanCosine, b.minCosine});
        } catch (const ArgumentError& e) {
            // A configuration of another width or depth: the rest of the comparison stands.
            m_out.hiddenProblem = QString::fromUtf8(e.what());
        }
        return true;
    }

    /// Speed runs (75..85%), one configuration at a time, after the comparison has read every
    /// weight (file pages already resident: the peak increase is the run's own memory).
    bool runSpeeds() {
        if (m_in.speedTokens <= 0 || m_tokens.empty()) return true;
        const std::vector<int32_t> speedPrompt(
            m_tokens.begin(),
            m_tokens.begin() +
                std::min<int64_t>(int64_t(m_tokens.size()), std::min<int64_t>(m_opts.ctx, 512)));
        m_out.speedPromptTokens = qint64(speedPrompt.size());
        m_out.speedDecodeTokens = m_in.speedTokens;
        const double n = double(m_out.rows.size());
        for (size_t i = 0; i < m_out.rows.size(); ++i) {
            CompareRow& r = m_out.rows[i];
            RangeProgress sp(m_p, 0.75 + 0.1 * double(i) / n, 0.75 + 0.1 * double(i + 1) / n,
                             r.name.toStdString() + ": speed, ");
            const SpeedRun run = measureSpeed(*source(i), speedPrompt, m_in.speedTokens, sp);
            if (run.cancelled) return false;
            r.tokensPerSecond = run.prefillTokensPerSecond;
            r.decodeTokensPerSecond = run.decodeTokensPerSecond;
            r.peakRssBytes = run.peakIncrease;
            r.rssBeforeBytes = run.rssBefore;
            r.weightBytes = m_others[i] ? residentWeightBytes(*m_others[i], nullptr)
                                        : residentWeightBytes(m_model, m_overlays[i].get());
            m_out.peakRssFromHwm = run.fromHwm;
        }
        return true;
    }

    /// Tasks (85..95% when any): the same prepared items for every configuration.
    bool scoreTasks() {
        if (m_in.tasks.empty()) return true;
        const TaskEncoder enc = [this](const std::string& t, bool bos) {
            return m_tk.encode(t, bos);
        };
        std::vector<PreparedTask> prepared;
        for (const Task& t : m_in.tasks)
            prepared.push_back(prepareTask(t, enc, m_in.taskLimit, 1234));
        const int64_t taskCtx =
            std::min<int64_t>(m_model.spec().maxSeq > 0 ? m_model.spec().maxSeq : 2048, 2048);
        const double n = double(m_out.rows.size() * prepared.size());
        for (size_t i = 0; i < m_out.rows.size(); ++i) {
            ModelScorer scorer(*source(i), taskCtx);
            for (size_t k = 0; k < prepared.size(); ++k) {
                const double at = double(i * prepared.size() + k);
                RangeProgress tp(m_p, 0.85 + 0.1 * at / n, 0.85 + 0.1 * (at + 1) / n,
                                 m_out.rows[i].name.toStdString() + ": ");
                const TaskResult tr = evaluateTask(prepared[k], scorer, tp);
                if (tr.status == Status::Cancelled) return false;
                m_out.rows[i].tasks.push_back(
                    {QString::fromLatin1(taskName(tr.kind)), tr.items, tr.acc, tr.accError});
            }
        }
        return true;
    }

    /// Greedy generations from the prompt (after the tasks, up to 100%), with the KLD per token
    /// against the baseline and the first token where each leaves it.
    bool runGenerations() {
        if (m_in.genTokens <= 0 || m_in.prompt.empty()) return true;
        const std::vector<int32_t> ids = m_tk.encode(m_in.prompt, true);
        GenerationCompareOptions go;
        go.maxNewTokens = m_in.genTokens;
        RangeProgress gp(m_p, m_in.tasks.empty() ? 0.85 : 0.95, 1.0, "generations: ");
        const GenerationComparison g = compareGenerations(*source(0), m_configs, ids, go, gp);
        if (g.status == Status::Cancelled) return false;
        auto fill = [&](CompareRow& row, const GenerationTrack& t) {
            row.tokens = tokenPieces(m_tk, t.ids, &row.generation);
            row.tokenKld = t.kld;
            row.firstDivergence = t.firstDivergence;
        };
        fill(m_out.rows.front(), g.baseline);
        m_out.rows.front().tokenKld.clear();
        for (size_t i = 0; i < g.configs.size(); ++i) fill(m_out.rows[i + 1], g.configs[i]);
        return true;
    }

    const CompareInput& m_in;
    Progress& m_p;
    const Model& m_model;
    const Tokenizer& m_tk;
    std::vector<int32_t> m_tokens;
    PerplexityOptions m_opts;
    std::vector<std::unique_ptr<Model>> m_others;                       ///< loaded model files
    std::vector<std::unique_ptr<compress::CompressedModel>> m_overlays; ///< compressed recipes
    std::vector<DivergenceConfig> m_configs;
    CompareResults m_out;
};

/// Configuration `name` of a comparison: the original weights, the editor's recipe (false when
/// there is no editor), an added recipe or model file, or a preset.
bool resolveConfig(const QString& name, const std::function<compress::Recipe()>& editorRecipe,
                   const std::vector<std::pair<QString, QString>>& extra,
                   const std::vector<std::pair<QString, QString>>& modelFiles, ConfigSpec& s) {
    s.name = name;
    if (name == ComparePanel::originalName()) {
        s.original = true;
    } else if (name == ComparePanel::editorName()) {
        if (!editorRecipe) return false;
        s.recipe = editorRecipe();
        // Named after the recipe: two runs of different recipes stay apart.
        s.name = ComparePanel::editorLabel(s.recipe);
    } else {
        bool found = false;
        for (const auto& [en, ej] : extra)
            if (en == name) {
                s.recipe = compress::Recipe::fromJson(
                    parseJsonText(ej.toStdString(), "recipe " + en.toStdString()));
                found = true;
            }
        for (const auto& [mn, mp] : modelFiles)
            if (mn == name) {
                s.modelFile = mp;
                found = true;
            }
        if (!found) s.recipe = compress::findPreset(name.toStdString()).recipe;
    }
    return true;
}

/// Tasks of a comma-separated list, loaded on the UI thread so that a missing folder or a bad
/// list is reported at once.
std::vector<Task> loadTasks(const QString& list, const QString& dir) {
    std::vector<Task> tasks;
    if (!list.isEmpty())
        for (TaskKind k : parseTaskList(list.toStdString()))
            tasks.push_back(loadTask(k, dir.toStdString()));
    return tasks;
}

} // namespace

QStringList ComparePanel::comparedNames() const {
    const QString baselineName = m_baseline->currentText();
    QStringList names = selectedConfigs();
    if (baselineName != originalName()) {
        names.removeAll(baselineName);
        names.prepend(baselineName);
        names.insert(1, originalName()); // the original weights become a configuration
    } else {
        names.prepend(originalName());
    }
    return names;
}

bool ComparePanel::run() {
    if (!m_model || m_job || m_textFile.isEmpty() || !m_model->hasTokenizer()) return false;
    const QStringList names = comparedNames();
    if (names.size() < 2) return false;
    // Configurations (the editor's recipe is read now) and tasks are resolved on the UI thread.
    CompareInput in;
    try {
        for (const QString& n : names) {
            ConfigSpec s;
            if (resolveConfig(n, m_editorRecipe, m_extra, m_modelFiles, s))
                in.specs.push_back(std::move(s));
        }
        in.tasks = loadTasks(m_tasks->text().trimmed(), m_tasksDir);
    } catch (const std::exception& e) {
        emit failed(QString::fromUtf8(e.what()));
        return false;
    }
    in.model = m_model;
    in.textFile = m_textFile;
    in.opts.ctx = m_ctx->value();
    in.opts.batch = in.opts.ctx;
    in.opts.maxChunks = m_chunks->value();
    in.prompt = m_prompt->text().toStdString();
    in.genTokens = m_genTokens->value();
    in.speedTokens = m_speedTokens->value();
    in.taskLimit = m_taskLimit->value();
    in.hidden = m_hiddenCheck->isChecked();
    const size_t configs = in.specs.size() - 1;
    submitJob([in](Progress& p) { return CompareJob(in, p).run(); }, configs);
    return true;
}

void ComparePanel::submitJob(std::function<CompareResults(Progress&)> job, size_t configs) {
    m_status->setText(tr("Comparing %1 configurations…").arg(configs));
    m_progress->setValue(0);
    m_job = m_runner->submit<CompareResults>(
        tr("Comparing %1 configurations").arg(configs), std::move(job), this,
        [this](CompareResults r) { jobFinished(r); },
        [this](const QString& message) {
            m_job = 0;
            m_status->setText(message);
            syncUi();
            emit failed(message);
        },
        [this] { jobCancelled(); });
    syncUi();
}

void ComparePanel::jobFinished(const CompareResults& r) {
    m_job = 0;
    if (r.rows.empty() || r.chunks == 0) {
        jobCancelled();
        return;
    }
    m_status->setText(tr("%1 chunks of %2 tokens, %3 scored tokens, %4 s")
                          .arg(r.chunks)
                          .arg(r.ctx)
                          .arg(r.scoredTokens)
                          .arg(r.seconds, 0, 'f', 2));
    setResults(r);
    m_progress->setValue(1000);
    syncUi();
    emit logMessage(tr("Comparison finished: %1").arg(m_status->text()));
    emit finished();
}

void ComparePanel::jobCancelled() {
    m_job = 0;
    m_status->setText(tr("Cancelled."));
    syncUi();
    emit cancelled();
}

void ComparePanel::cancel() {
    if (m_job) m_runner->cancel(m_job);
}

void ComparePanel::clearResults() {
    setResults(CompareResults{});
}

void ComparePanel::setResults(const CompareResults& r) {
    m_results = r;
    showResults();
    emit resultsChanged();
}

void ComparePanel::showResults() {
    const auto& rows = m_results.rows;
    // One "TASK acc %" column per task after the fixed columns.
    const size_t nTasks = rows.empty() ? 0 : rows.front().tasks.size();
    m_table->setColumnCount(ColumnCount + int(nTasks));
    for (size_t k = 0; k < nTasks; ++k)
        m_table->setHorizontalHeaderItem(
            ColumnCount + int(k),
            new QTableWidgetItem(tr("%1 acc %").arg(rows.front().tasks[k].name)));
    m_table->setRowCount(int(rows.size()));
    for (int i = 0; i < int(rows.size()); ++i) {
        const CompareRow& r = rows[size_t(i)];
        const bool isBase = i == 0;
        auto set = [&](int col, const QString& text, const QVariant& raw) {
            auto* it = new QTableWidgetItem(text);
            it->setData(Qt::UserRole, raw);
            if (col != ConfigColumn) it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
            m_table->setItem(i, col, it);
        };
        set(ConfigColumn, isBase ? r.name + tr(" (baseline)") : r.name, r.name);
        set(BitsColumn, QString::number(r.bitsPerWeight, 'f', 3), r.bitsPerWeight);
        set(SizeColumn, formatBytes(r.bytes), r.bytes);
        set(PplColumn, QStringLiteral("%1 ± %2").arg(r.ppl, 0, 'f', 4).arg(r.pplError, 0, 'f', 4),
            r.ppl);
        set(KldColumn,
            isBase ? QStringLiteral("—")
                   : QStringLiteral("%1 ± %2").arg(r.kld, 0, 'f', 5).arg(r.kldError, 0, 'f', 5),
            r.kld);
        set(KldP99Column, isBase ? QStringLiteral("—") : QString::number(r.kldP99, 'f', 5),
            r.kldP99);
        set(SameTopColumn,
            isBase ? QStringLiteral("—")
                   : QStringLiteral("%1 ± %2")
                         .arg(100.0 * r.sameTop, 0, 'f', 2)
                         .arg(100.0 * r.sameTopError, 0, 'f', 2),
            100.0 * r.sameTop);
        const QString none = QStringLiteral("—");
        auto speed = [&](double v) { return v > 0 ? QString::number(v, 'f', 1) : none; };
        set(PrefillColumn, speed(r.tokensPerSecond), r.tokensPerSecond);
        set(DecodeColumn, speed(r.decodeTokensPerSecond), r.decodeTokensPerSecond);
        set(WeightMemoryColumn, r.weightBytes > 0 ? formatBytes(r.weightBytes) : none,
            r.weightBytes);
        // A measured increase may be 0 (the run fitted in pages already resident).
        const bool measured = r.rssBeforeBytes > 0;
        set(PeakRssColumn, measured ? formatBytes(r.peakRssBytes) : none, r.peakRssBytes);
        set(KvColumn, r.kvBytesPerToken > 0 ? QString::number(r.kvBytesPerToken, 'f', 1) : none,
            r.kvBytesPerToken);
        for (size_t k = 0; k < nTasks && k < r.tasks.size(); ++k)
            set(ColumnCount + int(k),
                QStringLiteral("%1 ± %2")
                    .arg(100.0 * r.tasks[k].acc, 0, 'f', 2)
                    .arg(100.0 * r.tasks[k].accError, 0, 'f', 2),
                100.0 * r.tasks[k].acc);
    }
    m_table->resizeColumnsToContents();
    updateSpeedTooltips();
    updateParetoYChoices();
    updatePareto();
    updateLayerPlot();
    updateGenerations();
    updateSpeedPlots();
    updateHiddenError();
}

void ComparePanel::updateHiddenError() {
    QStringList categories, series;
    QVector<QVector<double>> values;
    std::vector<const CompareRow*> rows;
    int blocks = 0;
    for (const CompareRow& r : m_results.rows)
        if (!r.hidden.empty()) {
            rows.push_back(&r);
            blocks = std::max(blocks, int(r.hidden.size()));
        }
    for (int b = 0; b < blocks; ++b) categories << tr("block %1").arg(b);
    for (const CompareRow* r : rows) {
        series << r->name;
        QVector<double> v(blocks, NAN);
        for (const CompareHiddenBlock& hb : r->hidden)
            if (hb.layer >= 0 && hb.layer < blocks) v[hb.layer] = hb.relError;
        values << v;
    }
    if (rows.empty())
        m_hiddenPlot->clear();
    else
        m_hiddenPlot->setData(categories, series, values);
    m_hiddenPlot->setTitle(
        m_results.baseline.isEmpty()
            ? tr("Hidden-state error per block")
            : tr("Hidden-state error per block against %1").arg(m_results.baseline));

    // Table: a row per block; per configuration its relative error and mean cosine.
    m_hiddenTable->clear();
    m_hiddenTable->setColumnCount(1 + 2 * int(rows.size()));
    m_hiddenTable->setRowCount(blocks);
    QStringList header{tr("Block")};
    for (const CompareRow* r : rows)
        header << tr("%1 rel. error").arg(r->name) << tr("%1 mean cos").arg(r->name);
    m_hiddenTable->setHorizontalHeaderLabels(header);
    auto set = [this](int row, int col, const QString& text, const QVariant& raw) {
        auto* it = new QTableWidgetItem(text);
        it->setData(Qt::UserRole, raw);
        it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        m_hiddenTable->setItem(row, col, it);
    };
    for (int b = 0; b < blocks; ++b) set(b, 0, QString::number(b), b);
    for (int k = 0; k < int(rows.size()); ++k)
        for (const CompareHiddenBlock& hb : rows[size_t(k)]->hidden) {
            if (hb.layer < 0 || hb.layer >= blocks) continue;
            set(hb.layer, 1 + 2 * k, QString::number(hb.relError, 'g', 6), hb.relError);
            auto* rel = m_hiddenTable->item(hb.layer, 1 + 2 * k);
            rel->setToolTip(tr("mean per-position relative error %1, min cosine %2")
                                .arg(hb.meanRelError, 0, 'g', 6)
                                .arg(hb.minCosine, 0, 'g', 6));
            set(hb.layer, 2 + 2 * k, QString::number(hb.meanCosine, 'f', 6), hb.meanCosine);
        }
    m_hiddenTable->resizeColumnsToContents();

    if (!m_results.hiddenProblem.isEmpty())
        m_hiddenNote->setText(
            tr("Hidden-state error not measured: %1").arg(m_results.hiddenProblem));
    else if (rows.empty())
        m_hiddenNote->setText(tr("Run a comparison with “Hidden-state error per block” checked to "
                                 "see where each configuration's error enters."));
    else
        m_hiddenNote->setText(
            tr("Residual stream after each block against %1's on the same chunks (%2 positions "
               "per block): relative error ‖H_q − H‖_F / ‖H‖_F over all positions, and the mean "
               "cosine per position (as lcw-cli hidden-error).")
                .arg(m_results.baseline)
                .arg(m_results.hiddenTokens));
}

void ComparePanel::updateSpeedTooltips() {
    const CompareResults& r = m_results;
    const bool ran = r.speedDecodeTokens > 0;
    auto tip = [this](int col, const QString& text) {
        m_table->horizontalHeaderItem(col)->setToolTip(text);
    };
    tip(PrefillColumn,
        ran ? tr("Prompt processing: %1 tokens of the text in one batch, per second (after a "
                 "warm-up pass, the median of up to 5 passes), each configuration run alone "
                 "after the comparison")
                  .arg(r.speedPromptTokens)
            : tr("Prompt processing tokens per second over the perplexity chunks (%1 tokens "
                 "each)")
                  .arg(r.ctx));
    tip(DecodeColumn,
        tr("Greedy decoding: %1 tokens after the prompt, one forward each; tokens per second "
           "from the median time per token (each configuration run alone)")
            .arg(r.speedDecodeTokens));
    tip(WeightMemoryColumn,
        tr("Weight bytes the configuration holds in memory while it runs: the base model's "
           "tensors it reads (mapped from the file) plus its compressed tensors as held "
           "(packed codes, scales, zero points, masks, and the float copy the runtime multiplies "
           "with where it keeps one)"));
    tip(KvColumn, tr("Bytes the KV cache holds per token after one context of %1 tokens (all "
                     "layers, K and V; eviction policies and KV quantisation included)")
                      .arg(r.ctx));
    tip(PeakRssColumn,
        (r.peakRssFromHwm
             ? tr("Increase of this process's peak resident set (VmHWM, reset through "
                  "/proc/self/clear_refs before the run) over the resident set just before this "
                  "configuration's speed run")
             : tr("Increase of this process's resident set (sampled after the prefill and after "
                  "each decoded token; the peak could not be reset here) over the resident set "
                  "just before this configuration's speed run")) +
            tr(": KV cache, activations, logits, work buffers and pages touched for the first "
               "time. Weights already resident are not counted again (see Weights in RAM); the "
               "process is shared with the GUI, so other work at the same time counts too."));
}

void ComparePanel::updateSpeedPlots() {
    QStringList labels;
    QVector<int> groups;
    QVector<double> v[SpeedMetricCount];
    bool any[SpeedMetricCount] = {};
    for (int i = 0; i < int(m_results.rows.size()); ++i) {
        const CompareRow& r = m_results.rows[size_t(i)];
        labels << r.name;
        groups << i;
        const double mib = 1024.0 * 1024.0;
        const double x[SpeedMetricCount] = {r.tokensPerSecond, r.decodeTokensPerSecond,
                                            double(r.weightBytes) / mib,
                                            double(r.peakRssBytes) / mib};
        for (int m = 0; m < SpeedMetricCount; ++m) {
            v[m] << x[m];
            any[m] = any[m] || x[m] > 0 || (m == PeakRssMetric && r.rssBeforeBytes > 0);
        }
    }
    for (int m = 0; m < SpeedMetricCount; ++m) {
        if (any[m])
            m_speedPlots[m]->setBars(labels, v[m], groups);
        else if (m_speedPlots[m]->barCount() > 0) // nothing to redraw otherwise
            m_speedPlots[m]->clear();
    }
    const CompareResults& r = m_results;
    m_speedNote->setText(
        r.speedDecodeTokens > 0
            ? tr("Each configuration run alone after the comparison: a prompt of %1 tokens in one "
                 "batch (prefill, median of up to 5 passes after a warm-up), then %2 greedy "
                 "tokens (decode, median time per token). Memory: weight bytes held while "
                 "it runs, and the increase of the process's peak resident set during the run "
                 "(%3). Hover a header of the Metrics table for details.")
                  .arg(r.speedPromptTokens)
                  .arg(r.speedDecodeTokens)
                  .arg(r.peakRssFromHwm ? tr("kernel high-water mark reset before each run")
                                        : tr("sampled after each token"))
            : tr("Run a comparison with Speed tokens > 0 to measure each configuration's speed and "
                 "memory."));
}

void ComparePanel::setParetoAxes(int x, int y) {
    m_paretoX = std::clamp(x, 0, m_xAxis->count() - 1);
    m_paretoY = std::clamp(y, 0, m_yAxis->count() - 1);
    x = m_paretoX;
    y = m_paretoY;
    if (m_xAxis->currentIndex() != x) m_xAxis->setCurrentIndex(x);
    if (m_yAxis->currentIndex() != y) m_yAxis->setCurrentIndex(y);
    updatePareto();
}

void ComparePanel::updateParetoYChoices() {
    QStringList items = {tr("KLD"), tr("PPL")};
    if (!m_results.rows.empty())
        for (const CompareTask& t : m_results.rows.front().tasks)
            items << tr("%1 accuracy").arg(t.name);
    QStringList now;
    for (int i = 0; i < m_yAxis->count(); ++i) now << m_yAxis->itemText(i);
    if (now == items) return;
    const QString current = m_yAxis->currentText();
    const QSignalBlocker block(m_yAxis);
    m_yAxis->clear();
    m_yAxis->addItems(items);
    // Keep the chosen axis when the new results have it (a task by its name).
    const int keep = int(items.indexOf(current));
    m_paretoY = keep >= 0 ? keep : 0;
    m_yAxis->setCurrentIndex(m_paretoY);
}

void ComparePanel::updatePareto() {
    QStringList labels;
    QVector<double> xs, ys;
    m_pointRows.clear();
    std::vector<double> fx, fy;
    const int task = m_paretoY - 2; // >= 0: a task's accuracy (in %)
    const QString taskName =
        task >= 0 && !m_results.rows.empty() && size_t(task) < m_results.rows.front().tasks.size()
            ? m_results.rows.front().tasks[size_t(task)].name
            : QString();
    for (int i = 0; i < int(m_results.rows.size()); ++i) {
        const CompareRow& r = m_results.rows[size_t(i)];
        const double x = m_paretoX == 0   ? double(r.bytes) / (1024.0 * 1024.0)
                         : m_paretoX == 1 ? r.bitsPerWeight
                                          : r.kvBytesPerToken;
        const double y =
            m_paretoY == 0 ? r.kld
            : m_paretoY == 1
                ? r.ppl
                : (size_t(task) < r.tasks.size() ? 100.0 * r.tasks[size_t(task)].acc : NAN);
        labels << r.name;
        xs << x;
        ys << y;
        fx.push_back(x);
        fy.push_back(task >= 0 ? -y : y); // accuracy: higher is better
        m_pointRows << i;
    }
    QVector<int> front;
    for (size_t i : paretoFront(fx, fy)) front << int(i);
    const QString xLabel = m_paretoX == 0   ? tr("size (MiB)")
                           : m_paretoX == 1 ? tr("bits/weight")
                                            : tr("KV cache (bytes/token)");
    m_pareto->setAxisLabels(xLabel, m_paretoY == 0 ? tr("KLD vs %1 (nats)").arg(m_results.baseline)
                                    : m_paretoY == 1 ? tr("PPL")
                                                     : tr("%1 accuracy (%)").arg(taskName));
    m_pareto->setPoints(labels, xs, ys, front);
    m_pareto->setSelected(m_pointRows.indexOf(selectedRow()));
}

void ComparePanel::updateLayerPlot() {
    QStringList categories, series;
    QVector<QVector<double>> values;
    QHash<QString, int> index;
    for (const CompareRow& r : m_results.rows)
        for (const auto& [n, e] : r.layerError)
            if (!index.contains(n)) {
                index.insert(n, int(categories.size()));
                categories << n;
            }
    for (const CompareRow& r : m_results.rows) {
        if (r.layerError.empty()) continue;
        series << r.name;
        QVector<double> v(categories.size(), NAN);
        for (const auto& [n, e] : r.layerError) v[index.value(n)] = e;
        values << v;
    }
    m_layers->setData(categories, series, values);
}

QString ComparePanel::generationHtml(int row) const {
    if (row < 0 || size_t(row) >= m_results.rows.size()) return {};
    const CompareRow& r = m_results.rows[size_t(row)];
    QString html = QStringLiteral("<i>%1</i>").arg(m_results.prompt.toHtmlEscaped());
    if (r.tokens.isEmpty()) return html + r.generation.toHtmlEscaped();
    const bool isBase = row == 0;
    for (int i = 0; i < r.tokens.size(); ++i) {
        const QString piece = r.tokens[i].toHtmlEscaped();
        if (!isBase && i == r.firstDivergence) {
            // The divergence point: this token differs from the baseline's.
            html += QStringLiteral("<span style=\"background:#c0392b;color:white;\" "
                                   "title=\"first token that differs from the baseline\">"
                                   "&#9654;%1</span>")
                        .arg(piece);
            continue;
        }
        const bool diverged = !isBase && r.firstDivergence >= 0 && i > r.firstDivergence;
        if (isBase || diverged || i >= int(r.tokenKld.size())) {
            html += diverged ? QStringLiteral("<span style=\"color:gray;\">%1</span>").arg(piece)
                             : piece;
            continue;
        }
        // KLD 1e-4 nats or less: no colour; 1 nat or more: full colour (log scale).
        const double kld = r.tokenKld[size_t(i)];
        const double t = std::clamp(kld > 0 ? (std::log10(kld) + 4.0) / 4.0 : 0.0, 0.0, 1.0);
        html += QStringLiteral("<span style=\"background:rgba(230,126,34,%1);\" "
                               "title=\"KLD %2 nats\">%3</span>")
                    .arg(int(std::lround(t * 255)))
                    .arg(kld, 0, 'g', 3)
                    .arg(piece);
    }
    return html;
}

void ComparePanel::updateGenerations() {
    while (QLayoutItem* it = m_genColumns->takeAt(0)) {
        delete it->widget();
        delete it;
    }
    bool any = false;
    for (int i = 0; i < int(m_results.rows.size()); ++i) {
        const CompareRow& r = m_results.rows[size_t(i)];
        if (r.generation.isEmpty() && r.tokens.isEmpty()) continue;
        any = true;
        auto* col = new QWidget(m_genPage);
        auto* cl = new QVBoxLayout(col);
        cl->setContentsMargins(0, 0, 0, 0);
        QString head = QStringLiteral("<b>%1</b>").arg(r.name.toHtmlEscaped());
        if (i == 0)
            head += tr(" (baseline)");
        else if (r.firstDivergence >= 0)
            head += tr(" · diverges at token %1").arg(r.firstDivergence);
        else if (!r.tokens.isEmpty())
            head += tr(" · same tokens");
        auto* title = new QLabel(head, col);
        auto* text = new QTextBrowser(col);
        text->setObjectName(QStringLiteral("generation"));
        text->setHtml(generationHtml(i));
        cl->addWidget(title);
        cl->addWidget(text, 1);
        m_genColumns->addWidget(col, 1);
    }
    m_genNote->setText(any ? tr("Continuations of \"%1\" under each configuration. Tokens that "
                                "match the baseline are shaded by their KLD from it (log scale, "
                                "1e-4 … 1 nat); ▶ marks the first token that differs.")
                                 .arg(m_results.prompt)
                           : tr("Run a comparison with a prompt to see generations side by side."));
}

QStringList ComparePanel::generationTexts() const {
    QStringList out;
    for (const CompareRow& r : m_results.rows)
        if (!r.generation.isEmpty() || !r.tokens.isEmpty()) out << r.generation;
    return out;
}

int ComparePanel::selectedRow() const {
    const auto rows = m_table->selectionModel()->selectedRows();
    return rows.isEmpty() ? -1 : rows.front().row();
}

void ComparePanel::selectRow(int row) {
    if (row < 0 || row >= m_table->rowCount()) return m_table->clearSelection();
    // Not QTableView::selectRow(): that extends the selection while Shift or Ctrl is held.
    const QModelIndex idx = m_table->model()->index(row, 0);
    m_table->selectionModel()->setCurrentIndex(idx, QItemSelectionModel::ClearAndSelect |
                                                        QItemSelectionModel::Rows);
}

QString ComparePanel::metricsTsv(bool selectedOnly) const {
    QStringList lines;
    QStringList header;
    for (int c = 0; c < m_table->columnCount(); ++c)
        header << m_table->horizontalHeaderItem(c)->text();
    lines << header.join(QLatin1Char('\t'));
    QSet<int> sel;
    if (selectedOnly)
        for (const QModelIndex& i : m_table->selectionModel()->selectedRows()) sel.insert(i.row());
    for (int r = 0; r < m_table->rowCount(); ++r) {
        if (!sel.isEmpty() && !sel.contains(r)) continue;
        QStringList cells;
        for (int c = 0; c < m_table->columnCount(); ++c) {
            const QTableWidgetItem* it = m_table->item(r, c);
            cells << (it ? it->data(Qt::UserRole).toString() : QString());
        }
        lines << cells.join(QLatin1Char('\t'));
    }
    return lines.join(QLatin1Char('\n')) + QLatin1Char('\n');
}

QString ComparePanel::copyMetrics() {
    const QString tsv = metricsTsv(true);
    QApplication::clipboard()->setText(tsv);
    return tsv;
}

} // namespace lcw
