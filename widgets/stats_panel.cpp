#include "widgets/stats_panel.h"

#include "core/common/json_file.h"
#include "core/compress/quantizer.h"
#include "core/model/model.h"
#include "core/stats/fingerprint.h"
#include "core/stats/quant_grid.h"
#include "core/stats/stats_engine.h"
#include "plots/bar_plot.h"
#include "plots/channel_profile_plot.h"
#include "plots/heat_map_plot.h"
#include "plots/histogram_plot.h"
#include "plots/sparsity_plot.h"
#include "widgets/imatrix_manager.h"
#include "widgets/number_format.h"
#include "widgets/spin_box.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDateTime>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QFutureWatcher>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QRegularExpression>
#include <QSettings>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QStyle>
#include <QTabWidget>
#include <QToolButton>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <nlohmann/json.hpp>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

namespace lcw {

namespace {

using ReportPtr = std::shared_ptr<const stats::StatsReport>;

/// "sha256:0123…" → the first 16 hex digits (enough to tell files apart in a folder).
QString shortHash(const std::string& h) {
    const auto colon = h.find(':');
    return QString::fromStdString(h.substr(colon == std::string::npos ? 0 : colon + 1, 16));
}

stats::StatsOptions toOptions(const StatsSettings& s, bool hasTokenizer) {
    stats::StatsOptions o;
    o.weights = true;
    o.activations = s.activations && hasTokenizer;
    o.weight.histBins = s.histBins;
    o.weight.previews = {stats::PreviewConfig{s.bits, s.group, s.symmetric}};
    o.calibration.textFile = s.calibFile.toStdString();
    o.calibration.samples = s.samples;
    o.calibration.seqLen = s.seqLen;
    return o;
}

QVector<double> toQVector(const std::vector<double>& v) {
    return QVector<double>(v.begin(), v.end());
}

const std::vector<double>* findArray(const stats::TensorStats* t, const char* key) {
    if (!t) return nullptr;
    auto it = t->arrays.find(key);
    return it == t->arrays.end() || it->second.empty() ? nullptr : &it->second;
}

QString groupLabel(int group) {
    if (group < 0) return QObject::tr("per tensor");
    if (group == 0) return QObject::tr("per channel");
    return QObject::tr("groups of %1").arg(group);
}

struct MetricInfo {
    const char* key;
    const char* tensorKey;
    const char* label;
};
constexpr MetricInfo kMetrics[] = {
    {"weight_kurtosis", "weight_kurtosis_tensor", "weight kurtosis (worst tensor, Gaussian = 3)"},
    {"weight_outlier_ratio", "weight_outlier_ratio_tensor",
     "weight outlier ratio absmax/σ (worst tensor)"},
    {"preview_rel_fro", "preview_tensor", "preview rel. error ‖W−Ŵ‖/‖W‖ (worst tensor)"},
    {"act_outlier_ratio", nullptr, "activation outlier ratio absmax/σ (worst site)"},
    {"score", nullptr, "mean rank (1 = most outlier-prone)"},
};

} // namespace

StatsPanel::StatsPanel(TaskRunner* runner, QWidget* parent) : QWidget(parent), m_runner(runner) {
    m_ioPool.setMaxThreadCount(1);
    buildUi();
    connect(m_runner, &TaskRunner::progressChanged, this,
            [this](TaskRunner::JobId id, double fraction, const QString& stage) {
                if (id != m_job) return;
                m_progress->setValue(int(std::lround(fraction * 1000)));
                m_progress->setFormat(stage.isEmpty() ? QStringLiteral("%p%")
                                                      : stage + QStringLiteral("  %p%"));
            });
    syncComputeUi();
}

StatsPanel::~StatsPanel() = default;

void StatsPanel::buildUi() {
    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(6, 6, 6, 6);
    lay->setSpacing(4);
    lay->addLayout(buildHeader());
    m_tabs = new QTabWidget(this);
    m_tabs->setDocumentMode(true);
    m_tabs->addTab(buildWeightsTab(), tr("Weights"));
    m_tabs->addTab(buildActivationsTab(), tr("Activations"));
    m_tabs->addTab(buildKvTab(), tr("KV Cache"));
    m_tabs->addTab(buildSparsityTab(), tr("MLP Sparsity"));
    auto* split = new QSplitter(Qt::Vertical, this);
    split->addWidget(m_tabs);
    split->addWidget(buildOverview());
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 1);
    split->setChildrenCollapsible(false);
    lay->addWidget(split, 1);
    connectControls();
    setReport(nullptr, {});
}

// Header: tensor, its headline numbers, and where the statistics came from.
QLayout* StatsPanel::buildHeader() {
    auto* header = new QHBoxLayout;
    auto* text = new QVBoxLayout;
    text->setSpacing(1);
    m_title = new QLabel(this);
    QFont tf = m_title->font();
    tf.setBold(true);
    tf.setPointSizeF(tf.pointSizeF() * 1.15);
    m_title->setFont(tf);
    m_title->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_details = new QLabel(this);
    m_details->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_details->setWordWrap(true);
    m_provenance = new QLabel(this);
    m_provenance->setForegroundRole(QPalette::PlaceholderText);
    m_provenance->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_provenance->setWordWrap(true);
    text->addWidget(m_title);
    text->addWidget(m_details);
    text->addWidget(m_provenance);
    header->addLayout(text, 1);
    m_progress = new QProgressBar(this);
    m_progress->setRange(0, 1000);
    m_progress->setMinimumWidth(220);
    m_progress->setTextVisible(true);
    m_computeButton = new QToolButton(this);
    m_computeButton->setText(tr("Compute…"));
    m_computeButton->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
    m_computeButton->setIcon(style()->standardIcon(QStyle::SP_BrowserReload));
    m_computeButton->setToolTip(tr("Compute statistics (Statistics ▸ Compute…)"));
    m_cancelButton = new QToolButton(this);
    m_cancelButton->setText(tr("Cancel"));
    m_cancelButton->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
    m_cancelButton->setIcon(style()->standardIcon(QStyle::SP_DialogCancelButton));
    connect(m_computeButton, &QToolButton::clicked, this, &StatsPanel::showComputeDialog);
    connect(m_cancelButton, &QToolButton::clicked, this, &StatsPanel::cancelCompute);
    header->addWidget(m_progress, 0, Qt::AlignTop);
    header->addWidget(m_cancelButton, 0, Qt::AlignTop);
    header->addWidget(m_computeButton, 0, Qt::AlignTop);
    // The header keeps its height whatever it shows (a job starting or ending, another tensor's
    // longer details): otherwise every change resizes, and so redraws, all the plots below.
    const int line = fontMetrics().lineSpacing();
    m_details->setFixedHeight(2 * line);
    m_provenance->setFixedHeight(3 * line);
    for (QLabel* l : {m_details, m_provenance}) {
        l->setAlignment(Qt::AlignLeft | Qt::AlignTop);
        l->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Fixed); // wraps, never widens
    }
    return header;
}

// Weights: histogram with the quantization grid | per-channel abs-max.
QWidget* StatsPanel::buildWeightsTab() {
    auto* weights = new QWidget(m_tabs);
    auto* wl = new QGridLayout(weights);
    wl->setContentsMargins(0, 4, 0, 0);
    m_logBox = new QCheckBox(tr("Log count"), weights);
    m_axisCombo = new QComboBox(weights);
    m_axisCombo->addItem(tr("Output channels (rows)"), int(Axis::Output));
    m_axisCombo->addItem(tr("Input channels (columns)"), int(Axis::Input));
    m_sortedBox = new QCheckBox(tr("Sorted"), weights);
    m_sortedBox->setToolTip(tr("Largest first (applies to the channel profiles)"));
    m_outlierKBox = newDoubleSpin(
        weights, {1.0, 100.0, 0.5, 1}, stats::kDefaultOutlierK,
        tr("Weight outlier channels: abs-max ≥ k × the median channel abs-max of the tensor "
           "(default k = %1). Activations keep LLM.int8()'s absolute |x| ≥ 6.")
            .arg(stats::kDefaultOutlierK));
    m_outlierKBox->setPrefix(tr("k = "));
    auto* wControls = new QHBoxLayout;
    wControls->addWidget(m_logBox);
    wControls->addStretch();
    wControls->addWidget(new QLabel(tr("Channel axis:"), weights));
    wControls->addWidget(m_axisCombo);
    wControls->addWidget(m_sortedBox);
    wControls->addWidget(new QLabel(tr("Outliers:"), weights));
    wControls->addWidget(m_outlierKBox);
    m_hist = new HistogramPlot(weights);
    m_hist->setAxisLabels(tr("weight value"), tr("count"));
    m_weightProfile = new ChannelProfilePlot(weights);
    wl->addLayout(wControls, 0, 0, 1, 2);
    wl->addWidget(m_hist, 1, 0);
    wl->addWidget(m_weightProfile, 1, 1);
    return weights;
}

// Activations of the layer's input site: per channel (SmoothQuant) over the importance matrix's
// mean x² per input column (llama.cpp's imatrix, same channel axis) | per token.
QWidget* StatsPanel::buildActivationsTab() {
    auto* acts = new QWidget(m_tabs);
    auto* al = new QGridLayout(acts);
    al->setContentsMargins(0, 4, 0, 0);
    m_actLogBox = new QCheckBox(tr("Log scale"), acts);
    m_actLogBox->setToolTip(tr("Logarithmic value axis for the plots of this tab"));
    auto* aControls = new QHBoxLayout;
    aControls->addStretch();
    aControls->addWidget(m_actLogBox);
    m_actProfile = new ChannelProfilePlot(acts);
    m_tokenProfile = new ChannelProfilePlot(acts);
    m_imatrixProfile = new ChannelProfilePlot(acts);
    m_imatrixProfile->setValueName(tr("mean x²"));
    m_imatrixProfile->setAxisLabels(tr("input channel"), tr("mean x²"));
    m_imatrixProfile->linkKeyAxis(m_actProfile);
    al->addLayout(aControls, 0, 0, 1, 2);
    al->addWidget(m_actProfile, 1, 0);
    al->addWidget(m_imatrixProfile, 2, 0);
    al->addWidget(m_tokenProfile, 1, 1, 2, 1);
    al->setColumnStretch(0, 1);
    al->setColumnStretch(1, 1);
    return acts;
}

// K and V: layers × (head, channel).
QWidget* StatsPanel::buildKvTab() {
    auto* kv = new QWidget(m_tabs);
    auto* kl = new QHBoxLayout(kv);
    kl->setContentsMargins(0, 4, 0, 0);
    m_kMap = new HeatMapPlot(kv);
    m_vMap = new HeatMapPlot(kv);
    kl->addWidget(m_kMap);
    kl->addWidget(m_vMap);
    return kv;
}

// The MLP intermediates' natural sparsity: near-zero share per layer, its spread over tokens,
// and the predictor-free bound of the MACs a neuron-skipping scheme (PowerInfer) could save.
QWidget* StatsPanel::buildSparsityTab() {
    auto* tab = new QWidget(m_tabs);
    auto* sl = new QVBoxLayout(tab);
    sl->setContentsMargins(0, 4, 0, 0);
    m_sparsity = new SparsityPlot(tab);
    m_sparsity->setTitle(tr("MLP intermediate (input of mlp.down): near-zero share per layer"));
    m_sparsityNote = new QLabel(tab);
    m_sparsityNote->setWordWrap(true);
    m_sparsityNote->setForegroundRole(QPalette::PlaceholderText);
    sl->addWidget(m_sparsity, 1);
    sl->addWidget(m_sparsityNote);
    return tab;
}

void StatsPanel::updateSparsityPlot() {
    const auto rows = m_report ? stats::mlpSparsityRows(m_report->activations)
                               : std::vector<stats::MlpSparsityRow>();
    m_sparsity->setData(rows);
    if (rows.empty()) {
        m_sparsityNote->setText(
            !m_report ? QString()
                      : tr("No MLP sparsity in these statistics (computed without activations, "
                           "or by an older lcw): compute them again."));
        return;
    }
    double block = 0;
    int nb = 0;
    for (const auto& r : rows)
        if (r.oracleBlockSaved >= 0) block += r.oracleBlockSaved, ++nb;
    m_sparsityNote->setText(
        tr("Near zero: |x| ≤ 1e-2 × the token's largest |x|. Oracle bound: the MACs saved if "
           "exactly each token's near-zero neurons skipped their gate/up rows and down columns "
           "(no predictor, no accuracy cost counted), mean over layers %1 of the block's linear "
           "MACs. High values suggest hot/cold neuron splitting (PowerInfer) could pay off.")
            .arg(nb ? block / nb : 0.0, 0, 'f', 3));
}

// Model-wide overview: one bar per layer.
QWidget* StatsPanel::buildOverview() {
    auto* overview = new QWidget(this);
    auto* ol = new QVBoxLayout(overview);
    ol->setContentsMargins(0, 0, 0, 0);
    ol->setSpacing(2);
    auto* oControls = new QHBoxLayout;
    oControls->addWidget(new QLabel(tr("Per-layer overview:"), overview));
    m_metricCombo = new QComboBox(overview);
    for (const MetricInfo& m : kMetrics) m_metricCombo->addItem(tr(m.label));
    oControls->addWidget(m_metricCombo);
    oControls->addStretch();
    auto* hint = new QLabel(tr("click a bar to select the layer"), overview);
    hint->setForegroundRole(QPalette::PlaceholderText);
    oControls->addWidget(hint);
    m_overview = new BarPlot(overview);
    m_overview->setMinimumHeight(120);
    m_overview->plot()->setMinimumSize(200, 100);
    // Set before any bars: the plot lays out its title row once.
    m_overview->setTitle(tr("Per layer"));
    ol->addLayout(oControls);
    ol->addWidget(m_overview, 1);
    return overview;
}

void StatsPanel::connectControls() {
    connect(m_logBox, &QCheckBox::toggled, m_hist, &HistogramPlot::setLogCount);
    connect(m_hist, &HistogramPlot::logCountChanged, m_logBox, &QCheckBox::setChecked);
    connect(m_axisCombo, &QComboBox::currentIndexChanged, this, [this] { updateWeightPlots(); });
    connect(m_outlierKBox, &QDoubleSpinBox::valueChanged, this, [this] {
        updateHeader();
        updateWeightPlots();
    });
    connect(m_sortedBox, &QCheckBox::toggled, this, [this](bool on) {
        m_weightProfile->setSorted(on);
        m_actProfile->setSorted(on);
        m_imatrixProfile->setSorted(on);
    });
    connect(m_actLogBox, &QCheckBox::toggled, this, [this](bool on) {
        for (ChannelProfilePlot* p : {m_actProfile, m_tokenProfile, m_imatrixProfile})
            p->setLogScale(on);
    });
    connect(m_metricCombo, &QComboBox::currentIndexChanged, this, [this] { updateOverview(); });
    connect(m_overview, &BarPlot::barClicked, this, &StatsPanel::onOverviewClicked);
}

// ---------------------------------------------------------------------------------------------
// Model, cache and computation

QString StatsPanel::cacheDir() {
    return QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) +
           QStringLiteral("/stats");
}

QString StatsPanel::cacheFileFor(const std::string& fingerprint, const stats::StatsOptions& opts) {
    return cacheDir() + QLatin1Char('/') + shortHash(fingerprint) + QLatin1Char('-') +
           shortHash(stats::statsKey(opts)) + QStringLiteral(".h5");
}

QString StatsPanel::cachePath() const {
    if (!m_model) return {};
    return cacheFileFor(fingerprint(), toOptions(m_settings, m_model->hasTokenizer()));
}

void StatsPanel::setModel(std::shared_ptr<const Model> model, const QString& path,
                          const std::string& fingerprint) {
    if (m_job) cancelCompute();
    ++m_cacheGeneration; // a cache read still running is for the previous model
    m_loadingCache = false;
    m_model = std::move(model);
    m_modelPath = path;
    m_fingerprint = m_model ? fingerprint : std::string();
    m_tensor.clear();
    setReport(nullptr, {});
    if (!m_model) {
        syncComputeUi();
        return;
    }
    // On a worker thread: the fingerprint (when not given: it reads a few bytes of every
    // tensor, page faults into a cold multi-gigabyte file), then the current settings' file,
    // else the newest statistics of this model whatever their settings (they become the
    // current settings). Opening a large model never blocks the UI on either.
    m_loadingCache = true;
    const quint64 gen = m_cacheGeneration;
    const std::shared_ptr<const Model> m = m_model;
    const std::string knownFp = m_fingerprint;
    const stats::StatsOptions opts = toOptions(m_settings, m_model->hasTokenizer());
    auto* watcher = new QFutureWatcher<CacheLoad>(this);
    connect(watcher, &QFutureWatcher<CacheLoad>::finished, this, [this, watcher, gen] {
        watcher->deleteLater();
        if (gen != m_cacheGeneration) return; // another model (or none) since
        m_loadingCache = false;
        const CacheLoad r = watcher->result();
        if (m_fingerprint.empty()) m_fingerprint = r.fingerprint;
        emit fingerprintReady();
        for (const QString& msg : r.messages) emit logMessage(msg);
        if (r.report && !m_report) adopt(r.report, r.path);
        syncComputeUi();
        emit cacheLoadFinished(bool(r.report));
    });
    watcher->setFuture(QtConcurrent::run(&m_ioPool, [m, knownFp, opts] {
        lowerThreadPriority();
        CacheLoad out;
        out.fingerprint = knownFp.empty() ? stats::modelFingerprint(*m) : knownFp;
        QStringList candidates;
        try {
            candidates << cacheFileFor(out.fingerprint, opts);
        } catch (const std::exception& e) {
            out.messages << tr("Statistics cache: %1").arg(QString::fromUtf8(e.what()));
        }
        const QFileInfoList files =
            QDir(cacheDir())
                .entryInfoList({shortHash(out.fingerprint) + QStringLiteral("-*.h5")}, QDir::Files,
                               QDir::Time);
        for (const QFileInfo& f : files)
            if (!candidates.contains(f.absoluteFilePath())) candidates << f.absoluteFilePath();
        for (const QString& path : candidates) {
            if (path.isEmpty() || !QFileInfo::exists(path)) continue;
            try {
                const std::string p = path.toStdString();
                if (stats::StatsStore::loadHeader(p).modelFingerprint != out.fingerprint) continue;
                out.report = std::make_shared<stats::StatsReport>(stats::StatsStore::load(p));
                out.path = path;
                return out;
            } catch (const std::exception& e) {
                out.messages << tr("Ignoring statistics file %1: %2")
                                    .arg(QDir::toNativeSeparators(path),
                                         QString::fromUtf8(e.what()));
            }
        }
        return out;
    }));
    syncComputeUi();
}

const std::string& StatsPanel::fingerprint() const {
    if (m_fingerprint.empty() && m_model) m_fingerprint = stats::modelFingerprint(*m_model);
    return m_fingerprint;
}

void StatsPanel::adopt(std::shared_ptr<stats::StatsReport> r, const QString& path) {
    // Adopt the file's settings so the drawn grid and the next computation match it.
    StatsSettings s = m_settings;
    if (!r->previews.empty()) {
        s.bits = r->previews.front().bits;
        s.group = int(r->previews.front().group);
        s.symmetric = r->previews.front().symmetric;
    }
    s.histBins = r->histBins;
    s.activations = r->hasActivations;
    if (r->hasActivations) {
        s.samples = int(r->calibration.samples);
        s.seqLen = int(r->calibration.seqLen);
        s.calibFile =
            r->calibration.builtin ? QString() : QString::fromStdString(r->calibration.source);
    }
    m_settings = s;
    emit logMessage(tr("Loaded cached statistics from %1").arg(QDir::toNativeSeparators(path)));
    setReport(std::move(r), path);
}

bool StatsPanel::tryLoad(const QString& path) {
    if (path.isEmpty() || !QFileInfo::exists(path)) return false;
    try {
        const std::string p = path.toStdString();
        if (stats::StatsStore::loadHeader(p).modelFingerprint != m_fingerprint) return false;
        adopt(std::make_shared<stats::StatsReport>(stats::StatsStore::load(p)), path);
        return true;
    } catch (const std::exception& e) {
        emit logMessage(tr("Ignoring statistics file %1: %2")
                            .arg(QDir::toNativeSeparators(path), QString::fromUtf8(e.what())));
        return false;
    }
}

void StatsPanel::setSettings(const StatsSettings& s) {
    m_settings = s;
}

bool StatsPanel::computeStats() {
    if (!m_model || m_job) return false;
    const stats::StatsOptions opts = toOptions(m_settings, m_model->hasTokenizer());
    QString path;
    if (!m_fingerprint.empty()) {
        try {
            path = cachePath();
        } catch (const std::exception& e) {
            // statsKey() reads the calibration file: a missing file is the user's to fix.
            emit computeFailed(QString::fromUtf8(e.what()));
            return false;
        }
        if (path == m_loadedPath && m_report) return true; // these statistics are shown
        if (tryLoad(path)) return true;
    }
    // Else the fingerprint is still being computed (setModel()): the job computes it, and
    // loads the file instead of computing when one exists.
    if (!QDir().mkpath(cacheDir())) {
        emit computeFailed(tr("Cannot create %1").arg(QDir::toNativeSeparators(cacheDir())));
        return false;
    }
    std::shared_ptr<const Model> model = m_model;
    const std::string knownFp = m_fingerprint;
    std::function<Computed(Progress&)> job = [model, opts, knownFp, path](Progress& progress) {
        Computed out;
        out.fingerprint = knownFp.empty() ? stats::modelFingerprint(*model) : knownFp;
        out.path = path.isEmpty() ? cacheFileFor(out.fingerprint, opts) : path;
        const std::string p = out.path.toStdString();
        if (path.isEmpty() && QFileInfo::exists(out.path)) {
            try {
                if (stats::StatsStore::loadHeader(p).modelFingerprint == out.fingerprint) {
                    out.report = std::make_shared<stats::StatsReport>(stats::StatsStore::load(p));
                    out.loaded = true;
                    return out;
                }
            } catch (const std::exception&) {
                // unreadable: computed afresh and replaced below
            }
        }
        auto r = std::make_shared<stats::StatsReport>();
        // computeAndSaveStats writes nothing when cancelled.
        if (stats::computeAndSaveStats(*model, opts, p, *r, progress) == Status::Cancelled)
            return Computed{};
        out.report = std::move(r);
        return out;
    };
    auto self = std::make_shared<TaskRunner::JobId>(0);
    *self = m_runner->submit<Computed>(
        tr("Statistics (%1)").arg(settingsSummary()), std::move(job), this,
        [this, self](Computed c) {
            if (m_job != *self) return;
            m_job = 0;
            syncComputeUi();
            if (!c.report) return;
            if (m_fingerprint.empty()) {
                m_fingerprint = c.fingerprint;
                emit fingerprintReady();
            }
            if (c.loaded)
                adopt(std::move(c.report), c.path);
            else
                setReport(std::move(c.report), c.path);
            emit computeFinished();
        },
        [this, self](const QString& message) {
            if (m_job != *self) return;
            m_job = 0;
            syncComputeUi();
            emit computeFailed(message);
        },
        [this, self] {
            if (m_job != *self) return;
            m_job = 0;
            syncComputeUi();
            emit computeCancelled();
        });
    m_job = *self;
    m_progress->setValue(0);
    m_progress->setFormat(tr("queued"));
    syncComputeUi();
    return true;
}

void StatsPanel::cancelCompute() {
    if (m_job) m_runner->cancel(m_job);
}

void StatsPanel::syncComputeUi() {
    const bool busy = m_job != 0;
    m_progress->setVisible(busy);
    m_cancelButton->setVisible(busy);
    m_computeButton->setEnabled(m_model && !busy);
}

QString StatsPanel::settingsSummary() const {
    QString s = tr("w%1 %2 %3")
                    .arg(m_settings.bits)
                    .arg(groupLabel(m_settings.group),
                         m_settings.symmetric ? tr("symmetric") : tr("asymmetric"));
    if (m_settings.activations)
        s += tr(", %1 × %2 tokens").arg(m_settings.samples).arg(m_settings.seqLen);
    return s;
}

void StatsPanel::showComputeDialog() {
    if (!m_model) return;
    QDialog dlg(this);
    dlg.setWindowTitle(tr("Compute Statistics"));
    auto* form = new QFormLayout;
    auto* samples = new QSpinBox(&dlg);
    samples->setRange(1, 100000);
    samples->setValue(m_settings.samples);
    auto* seqLen = new QSpinBox(&dlg);
    seqLen->setRange(2, 1 << 20);
    seqLen->setValue(m_settings.seqLen);
    auto* calib = new QLineEdit(m_settings.calibFile, &dlg);
    calib->setPlaceholderText(tr("built-in TinyStories text"));
    auto* browse = new QToolButton(&dlg);
    browse->setText(QStringLiteral("…"));
    connect(browse, &QToolButton::clicked, &dlg, [&] {
        const QString f = QFileDialog::getOpenFileName(&dlg, tr("Calibration Text"), calib->text(),
                                                       tr("Text (*.txt);;All (*)"));
        if (!f.isEmpty()) calib->setText(f);
    });
    auto* calibRow = new QHBoxLayout;
    calibRow->addWidget(calib, 1);
    calibRow->addWidget(browse);
    auto* activations = new QCheckBox(tr("Activations, K and V from calibration text"), &dlg);
    activations->setChecked(m_settings.activations);
    activations->setEnabled(m_model->hasTokenizer());
    auto* bits = new QSpinBox(&dlg);
    bits->setRange(2, 8);
    bits->setValue(m_settings.bits);
    auto* group = new QComboBox(&dlg);
    for (int g : {-1, 0, 32, 64, 128, 256}) group->addItem(groupLabel(g), g);
    group->setCurrentIndex(std::max(0, group->findData(m_settings.group)));
    auto* sym = new QCheckBox(tr("Symmetric"), &dlg);
    sym->setChecked(m_settings.symmetric);
    auto* bins = new QSpinBox(&dlg);
    bins->setRange(16, 4096);
    bins->setValue(m_settings.histBins);
    form->addRow(tr("Samples:"), samples);
    form->addRow(tr("Sequence length:"), seqLen);
    form->addRow(tr("Calibration file:"), calibRow);
    form->addRow(QString(), activations);
    form->addRow(tr("Preview bits:"), bits);
    form->addRow(tr("Preview group:"), group);
    form->addRow(QString(), sym);
    form->addRow(tr("Histogram bins:"), bins);
    auto* box = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &dlg);
    box->button(QDialogButtonBox::Ok)->setText(tr("Compute"));
    connect(box, &QDialogButtonBox::accepted, &dlg, &QDialog::accept);
    connect(box, &QDialogButtonBox::rejected, &dlg, &QDialog::reject);
    auto* v = new QVBoxLayout(&dlg);
    auto* note = new QLabel(tr("Results are cached per model and settings; the same settings "
                               "load instantly next time."),
                            &dlg);
    note->setWordWrap(true);
    note->setForegroundRole(QPalette::PlaceholderText);
    v->addLayout(form);
    v->addWidget(note);
    v->addWidget(box);
    if (dlg.exec() != QDialog::Accepted) return;
    StatsSettings s;
    s.samples = samples->value();
    s.seqLen = seqLen->value();
    s.calibFile = calib->text().trimmed();
    s.activations = activations->isChecked();
    s.bits = bits->value();
    s.group = group->currentData().toInt();
    s.symmetric = sym->isChecked();
    s.histBins = bins->value();
    setSettings(s);
    computeStats();
}

void StatsPanel::readSettings(QSettings& s) {
    StatsSettings d;
    d.samples = s.value(QStringLiteral("stats/samples"), d.samples).toInt();
    d.seqLen = s.value(QStringLiteral("stats/seqLen"), d.seqLen).toInt();
    d.calibFile = s.value(QStringLiteral("stats/calibFile"), d.calibFile).toString();
    d.bits = s.value(QStringLiteral("stats/bits"), d.bits).toInt();
    d.group = s.value(QStringLiteral("stats/group"), d.group).toInt();
    d.symmetric = s.value(QStringLiteral("stats/symmetric"), d.symmetric).toBool();
    d.histBins = s.value(QStringLiteral("stats/histBins"), d.histBins).toInt();
    d.activations = s.value(QStringLiteral("stats/activations"), d.activations).toBool();
    m_settings = d;
    setLogCount(s.value(QStringLiteral("stats/logCount"), false).toBool());
    setSorted(s.value(QStringLiteral("stats/sorted"), false).toBool());
    setActivationLogScale(s.value(QStringLiteral("stats/activationLog"), false).toBool());
    setOutlierK(s.value(QStringLiteral("stats/outlierK"), stats::kDefaultOutlierK).toDouble());
    m_metricCombo->setCurrentIndex(std::clamp(s.value(QStringLiteral("stats/metric"), 0).toInt(), 0,
                                              m_metricCombo->count() - 1));
}

void StatsPanel::writeSettings(QSettings& s) const {
    s.setValue(QStringLiteral("stats/samples"), m_settings.samples);
    s.setValue(QStringLiteral("stats/seqLen"), m_settings.seqLen);
    s.setValue(QStringLiteral("stats/calibFile"), m_settings.calibFile);
    s.setValue(QStringLiteral("stats/bits"), m_settings.bits);
    s.setValue(QStringLiteral("stats/group"), m_settings.group);
    s.setValue(QStringLiteral("stats/symmetric"), m_settings.symmetric);
    s.setValue(QStringLiteral("stats/histBins"), m_settings.histBins);
    s.setValue(QStringLiteral("stats/activations"), m_settings.activations);
    s.setValue(QStringLiteral("stats/logCount"), m_logBox->isChecked());
    s.setValue(QStringLiteral("stats/sorted"), m_sortedBox->isChecked());
    s.setValue(QStringLiteral("stats/activationLog"), m_actLogBox->isChecked());
    s.setValue(QStringLiteral("stats/outlierK"), outlierK());
    s.setValue(QStringLiteral("stats/metric"), m_metricCombo->currentIndex());
}

// ---------------------------------------------------------------------------------------------
// Display

void StatsPanel::setReport(std::shared_ptr<const stats::StatsReport> r, const QString& path) {
    m_report = std::move(r);
    m_loadedPath = m_report ? path : QString();
    if (m_report && m_tensor.isEmpty() && !m_report->weights.empty()) {
        // Start on the first block's down projection, where outliers usually show first.
        const stats::TensorStats* t = m_report->findWeight("layers.0.mlp.down");
        m_tensor = QString::fromStdString(t ? t->name : m_report->weights.front().name);
    }
    updateHeader();
    updateWeightPlots();
    updateActivationPlots();
    updateImatrixPlot();
    updateKvMaps();
    updateSparsityPlot();
    updateOverview();
    if (m_report) emit statsChanged();
}

void StatsPanel::showTensor(const QString& name) {
    if (name == m_tensor) return;
    m_tensor = name;
    updateHeader();
    updateWeightPlots();
    updateActivationPlots();
    updateImatrixPlot();
    updateKvMaps();
}

void StatsPanel::setImatrixManager(const ImatrixManager* m) {
    if (m_imatrix) disconnect(m_imatrix, nullptr, this, nullptr);
    m_imatrix = m;
    if (m_imatrix)
        connect(m_imatrix, &ImatrixManager::changed, this, [this] { updateImatrixPlot(); });
    updateImatrixPlot();
}

void StatsPanel::setOutlierK(double k) {
    m_outlierKBox->setValue(k);
}

double StatsPanel::outlierK() const {
    return m_outlierKBox->value();
}

void StatsPanel::setActivationLogScale(bool on) {
    m_actLogBox->setChecked(on);
}

int StatsPanel::layerOfTensor() const {
    static const QRegularExpression re(QStringLiteral("^layers\\.(\\d+)\\."));
    const auto m = re.match(m_tensor);
    return m.hasMatch() ? m.captured(1).toInt() : -1;
}

QString StatsPanel::inputSiteOf(const QString& weightName) {
    static const QRegularExpression re(QStringLiteral("^(layers\\.\\d+)\\.(attn|mlp)\\.(\\w+)$"));
    const auto m = re.match(weightName);
    if (!m.hasMatch()) return {};
    const QString block = m.captured(1), part = m.captured(2), role = m.captured(3);
    if (part == QLatin1String("attn"))
        return role == QLatin1String("o") ? block + QStringLiteral(".attn.o")
                                          : block + QStringLiteral(".attn_in");
    return role == QLatin1String("down") ? block + QStringLiteral(".mlp.down")
                                         : block + QStringLiteral(".mlp_in");
}

void StatsPanel::updateHeader() {
    if (!m_model) {
        m_title->setText(tr("Statistics"));
        m_details->setText(tr("Open a model to inspect its statistics."));
        m_provenance->clear();
        return;
    }
    if (!m_report) {
        m_title->setText(tr("No statistics yet"));
        m_details->setText(m_job ? tr("Computing…")
                                 : tr("Statistics ▸ Compute… gathers weight, activation and KV "
                                      "statistics in the background (results are cached)."));
        m_provenance->clear();
        return;
    }
    const stats::StatsReport& r = *m_report;
    const stats::TensorStats* w = r.findWeight(m_tensor.toStdString());
    m_title->setText(m_tensor.isEmpty() ? tr("Select a tensor") : m_tensor);
    if (!w) {
        m_details->setText(m_tensor.isEmpty()
                               ? QString()
                               : tr("No weight statistics for this tensor (only 2-D tensors "
                                    "have them)."));
    } else {
        QStringList shape;
        for (int64_t d : w->shape) shape << QString::number(d);
        const double k = outlierK();
        const auto* in = findArray(w, "in_absmax");
        const auto* out = findArray(w, "out_absmax");
        const size_t nIn = in ? stats::relativeOutlierChannels(*in, k).channels.size() : 0;
        const size_t nOut = out ? stats::relativeOutlierChannels(*out, k).channels.size() : 0;
        QString line = tr("%1 %2 · %3 values · kurtosis %4 · absmax/σ %5 · outlier channels "
                          "(abs-max ≥ %6× median): %7 in, %8 out")
                           .arg(shape.join(QStringLiteral("×")), QString::fromStdString(w->dtype),
                                formatCountExact(int64_t(w->get("count"))))
                           .arg(w->get("kurtosis"), 0, 'f', 2)
                           .arg(w->get("outlier_ratio"), 0, 'f', 2)
                           .arg(k, 0, 'g', 3)
                           .arg(nIn)
                           .arg(nOut);
        if (!r.previews.empty()) {
            const std::string label = r.previews.front().label();
            line += tr(" · %1: rel. error %2, SQNR %3 dB")
                        .arg(QString::fromStdString(label))
                        .arg(w->get("preview." + label + ".rel_fro"), 0, 'f', 4)
                        .arg(w->get("preview." + label + ".sqnr_db"), 0, 'f', 1);
        }
        m_details->setText(line);
    }
    QString prov;
    if (r.hasActivations) {
        const QString src =
            r.calibration.builtin
                ? tr("built-in %1")
                      .arg(QFileInfo(QString::fromStdString(r.calibration.source)).fileName())
                : QDir::toNativeSeparators(QString::fromStdString(r.calibration.source));
        prov = tr("Calibration: %1 samples × %2 tokens (%3 tokens) of %4")
                   .arg(r.calibration.samples)
                   .arg(r.calibration.seqLen)
                   .arg(formatCountExact(r.calibration.tokens), src);
    } else {
        prov = tr("Weights only (no calibration)");
    }
    prov += tr(" · %1 histogram bins · computed %2 · %3")
                .arg(r.histBins)
                .arg(QString::fromStdString(r.createdUtc),
                     QDir::toNativeSeparators(QFileInfo(m_loadedPath).fileName()));
    m_provenance->setText(prov);
    m_provenance->setToolTip(QDir::toNativeSeparators(m_loadedPath));
}

void StatsPanel::refreshRecipeGrid() {
    if (const stats::TensorStats* w =
            m_report ? m_report->findWeight(m_tensor.toStdString()) : nullptr)
        updateGrid(*w);
}

void StatsPanel::updateGrid(const stats::TensorStats& w) {
    // The grid of the recipe's setting for this tensor when the recipe quantises it, else the
    // statistics preview's; over the whole tensor's range (per-channel and group scales give
    // each row or group its own, finer copy).
    const std::optional<compress::WeightSettings> rs =
        m_recipeSetting ? m_recipeSetting(m_tensor) : std::nullopt;
    std::vector<double> gridLevels;
    QString gridLabel;
    if (rs) {
        gridLevels = compress::gridLevels(*rs, w.get("min"), w.get("max"));
        gridLabel =
            tr("recipe: %1 grid (tensor range)").arg(QString::fromStdString(rs->describe()));
        m_hist->setToolTip(tr("Dashed lines: the grid of the recipe editor's setting for this "
                              "tensor (%1) over the whole tensor's range; per-channel and group "
                              "scales give each row or group its own, finer grid.")
                               .arg(QString::fromStdString(rs->describe())));
    } else {
        const StatsSettings& s = m_settings;
        gridLevels = stats::quantGridLevels(s.bits, s.symmetric, w.get("min"), w.get("max"));
        gridLabel = tr("w%1 %2 grid (tensor range)")
                        .arg(s.bits)
                        .arg(s.symmetric ? tr("sym.") : tr("asym."));
        // Group-wise previews quantize each group on its own, finer grid.
        m_hist->setToolTip(s.group >= 0
                               ? tr("Dashed lines: the %1-bit preview grid over the whole "
                                    "tensor's range; with %2 each group has its own, finer grid.")
                                     .arg(s.bits)
                                     .arg(groupLabel(s.group))
                               : QString());
    }
    const QVector<double> markers(gridLevels.begin(), gridLevels.end());
    // A recipe edit that leaves this tensor's setting as it was redraws nothing.
    if (markers != m_hist->markers() || gridLabel != m_hist->markerLabel())
        m_hist->setMarkers(markers, gridLabel);
}

void StatsPanel::updateWeightPlots() {
    const stats::TensorStats* w = m_report ? m_report->findWeight(m_tensor.toStdString()) : nullptr;
    if (!w) {
        m_hist->clear();
        m_hist->setTitle(tr("Weight histogram"));
        m_weightProfile->clear();
        m_weightProfile->setTitle(tr("Per-channel abs-max"));
        return;
    }
    auto hc = w->counts.find("hist");
    QVector<double> counts;
    if (hc != w->counts.end())
        for (int64_t c : hc->second) counts << double(c);
    m_hist->setHistogram(w->get("hist_lo"), w->get("hist_hi"), counts);
    m_hist->setTitle(tr("Weight histogram · %1 bins").arg(counts.size()));
    updateGrid(*w);

    const bool input = m_axisCombo->currentData().toInt() == int(Axis::Input);
    const auto* arr = findArray(w, input ? "in_absmax" : "out_absmax");
    m_weightProfile->setAxisLabels(input ? tr("input channel") : tr("output channel"),
                                   tr("abs-max |w|"));
    // Outliers relative to the tensor (core/stats): abs-max ≥ k × the median channel's.
    const double k = outlierK();
    const stats::RelativeOutliers ro =
        arr ? stats::relativeOutlierChannels(*arr, k) : stats::RelativeOutliers{};
    const std::optional<double> threshold =
        arr && ro.threshold > 0 ? std::optional<double>(ro.threshold) : std::nullopt;
    m_weightProfile->setProfile(arr ? toQVector(*arr) : QVector<double>(), threshold,
                                tr("outlier channel: abs-max ≥ k × median %1, k = %2%3")
                                    .arg(ro.median, 0, 'g', 3)
                                    .arg(k, 0, 'g', 3)
                                    .arg(k == stats::kDefaultOutlierK
                                             ? tr(" (default)")
                                             : tr(" (default %1)").arg(stats::kDefaultOutlierK)));
    m_weightProfile->setTitle(tr("Abs-max per %1 channel · %2 outliers (≥ %3× median)")
                                  .arg(input ? tr("input") : tr("output"))
                                  .arg(ro.channels.size())
                                  .arg(k, 0, 'g', 3));
}

void StatsPanel::updateActivationPlots() {
    const QString site = inputSiteOf(m_tensor);
    const stats::TensorStats* a =
        m_report && !site.isEmpty() ? m_report->findActivation(site.toStdString()) : nullptr;
    m_actProfile->setAxisLabels(tr("channel"), tr("abs-max |x|"));
    m_tokenProfile->setAxisLabels(tr("token (sample-major)"), tr("abs-max |x|"));
    if (!a) {
        const QString why = !m_report                   ? QString()
                            : !m_report->hasActivations ? tr(" (no calibration run)")
                            : site.isEmpty()            ? tr(" (no input site for this tensor)")
                                                        : QString();
        m_actProfile->clear();
        m_actProfile->setTitle(tr("Activation abs-max per channel%1").arg(why));
        m_tokenProfile->clear();
        m_tokenProfile->setTitle(tr("Activation abs-max per token%1").arg(why));
        return;
    }
    // The header names the layer; titles keep the site's role so they fit narrow plots.
    const QString role =
        QString(site).remove(QRegularExpression(QStringLiteral("^layers\\.\\d+\\.")));
    const auto* ch = findArray(a, "ch_absmax");
    m_actProfile->setProfile(ch ? toQVector(*ch) : QVector<double>(), kOutlierThreshold,
                             tr("outlier channel: abs-max ≥ 6"));
    m_actProfile->setTitle(tr("%1 input · per-channel abs-max · max/med %2")
                               .arg(role)
                               .arg(a->get("ch_absmax_max_over_median"), 0, 'f', 2));
    const auto* tok = findArray(a, "tok_absmax");
    m_tokenProfile->setProfile(tok ? toQVector(*tok) : QVector<double>());
    m_tokenProfile->setTitle(tr("%1 input · per-token abs-max · max/med %2")
                                 .arg(role)
                                 .arg(a->get("tok_absmax_max_over_median"), 0, 'f', 2));
}

void StatsPanel::updateImatrixPlot() {
    const std::optional<ImatrixProfile> p =
        m_imatrix && !m_tensor.isEmpty() ? m_imatrix->profileOf(m_tensor) : std::nullopt;
    if (!p) {
        QString why;
        if (!m_imatrix || !m_imatrix->imatrix())
            why = tr(" (none: Run ▸ Compute Importance Matrix… or File ▸ Open Importance "
                     "Matrix…)");
        else if (!m_tensor.isEmpty())
            why = m_imatrix->llamaNameOf(m_tensor).isEmpty()
                      ? tr(" (llama.cpp collects none for this tensor)")
                      : tr(" (no entry for %1)").arg(m_imatrix->llamaNameOf(m_tensor));
        m_imatrixProfile->clear();
        m_imatrixProfile->setTitle(tr("Importance matrix%1").arg(why));
        m_imatrixProfile->setToolTip(m_imatrix ? m_imatrix->describe() : QString());
        return;
    }
    // The values llama-quantize hands ggml's quantiser: sum x² / count per input column.
    m_imatrixProfile->setProfile(p->values);
    double mean = 0, top = 0;
    for (double v : p->values) {
        mean += v;
        top = std::max(top, v);
    }
    if (!p->values.isEmpty()) mean /= double(p->values.size());
    const QString entry =
        p->expert >= 0 ? tr("%1 expert %2").arg(p->llamaName).arg(p->expert) : p->llamaName;
    m_imatrixProfile->setTitle(tr("imatrix %1 · mean x² · max/mean %2")
                                   .arg(entry)
                                   .arg(mean > 0 ? top / mean : 0.0, 0, 'f', 2));
    m_imatrixProfile->setToolTip(
        tr("Importance matrix: %1\n%2 calls").arg(m_imatrix->describe()).arg(p->ncall));
}

void StatsPanel::updateKvMaps() {
    const int layer = layerOfTensor();
    for (const char* kind : {"k", "v"}) {
        HeatMapPlot* map = kind[0] == 'k' ? m_kMap : m_vMap;
        const QString what = kind[0] == 'k' ? tr("K (post-RoPE)") : tr("V");
        if (!m_report || !m_report->hasActivations || m_report->nLayers <= 0) {
            map->clear();
            map->setTitle(tr("%1 abs-max per head × channel").arg(what));
            continue;
        }
        const stats::StatsReport& r = *m_report;
        const int rows = int(r.nLayers), cols = int(r.nKvHeads * r.headDim);
        QVector<double> values(qsizetype(rows) * cols, std::numeric_limits<double>::quiet_NaN());
        QStringList rowLabels;
        for (int l = 0; l < rows; ++l) {
            rowLabels << tr("L%1").arg(l);
            const auto* s = r.findActivation("layers." + std::to_string(l) + "." + kind);
            const auto* ch = findArray(s, "ch_absmax");
            if (!ch) continue;
            for (int c = 0; c < cols && c < int(ch->size()); ++c)
                values[qsizetype(l) * cols + c] = (*ch)[size_t(c)];
        }
        const int headDim = int(r.headDim);
        map->setTooltipFormatter([headDim](int c, int row, double v) {
            return tr("layer %1, KV head %2, channel %3\nabs-max %4")
                .arg(row)
                .arg(c / std::max(1, headDim))
                .arg(c % std::max(1, headDim))
                .arg(v, 0, 'g', 5);
        });
        map->setAxisLabels(tr("KV head × channel (%1 heads × %2)").arg(r.nKvHeads).arg(r.headDim),
                           tr("layer"), tr("abs-max"));
        map->setRowLabels(rowLabels);
        map->setColumnGroup(headDim);
        map->setMatrix(cols, rows, values);
        map->setHighlightedRow(layer);
        // The selected layer is outlined on the map.
        map->setTitle(tr("%1 abs-max per head × channel").arg(what));
    }
}

void StatsPanel::updateOverview() {
    m_overviewLayers.clear();
    if (!m_report || m_report->summaryJson.empty()) {
        m_overview->clear();
        return;
    }
    const MetricInfo& mi =
        kMetrics[std::clamp(m_metricCombo->currentIndex(), 0, int(std::size(kMetrics)) - 1)];
    nlohmann::json j;
    try {
        j = parseJsonText(m_report->summaryJson, "statistics summary");
    } catch (const std::exception&) {
        m_overview->clear();
        return;
    }
    std::vector<std::pair<int, double>> rows;
    if (j.contains("layers") && j["layers"].is_array())
        for (const auto& l : j["layers"]) {
            const int layer = l.value("layer", -1);
            const double v = l.contains(mi.key) && l[mi.key].is_number()
                                 ? l[mi.key].get<double>()
                                 : std::numeric_limits<double>::quiet_NaN();
            rows.emplace_back(layer, v);
        }
    std::sort(rows.begin(), rows.end());
    QStringList labels;
    QVector<double> values;
    for (const auto& [layer, v] : rows) {
        m_overviewLayers << layer;
        labels << tr("L%1").arg(layer);
        values << (std::isfinite(v) ? v : 0.0);
    }
    const QString label = tr(mi.label);
    m_overview->setBars(labels, values);
    m_overview->setValueAxisLabel(
        QString::fromUtf8(mi.key).replace(QLatin1Char('_'), QLatin1Char(' ')));
    m_overview->setTitle(tr("Per layer: %1").arg(label));
    m_overview->setTooltipFormatter([label](int, const QString& l, double v) {
        return tr("%1\n%2: %3\nclick to select").arg(l, label).arg(v, 0, 'g', 5);
    });
}

void StatsPanel::onOverviewClicked(int index) {
    if (index < 0 || index >= m_overviewLayers.size() || !m_report) return;
    const int layer = m_overviewLayers[index];
    // Keep the role of the current tensor; otherwise the tensor the metric names.
    static const QRegularExpression re(QStringLiteral("^layers\\.\\d+\\.(.+)$"));
    const auto m = re.match(m_tensor);
    QString name;
    if (m.hasMatch()) name = QStringLiteral("layers.%1.%2").arg(layer).arg(m.captured(1));
    if (name.isEmpty() || !m_report->findWeight(name.toStdString())) {
        const MetricInfo& mi =
            kMetrics[std::clamp(m_metricCombo->currentIndex(), 0, int(std::size(kMetrics)) - 1)];
        try {
            const auto j = parseJsonText(m_report->summaryJson, "statistics summary");
            for (const auto& l : j.at("layers"))
                if (l.value("layer", -1) == layer && mi.tensorKey && l.contains(mi.tensorKey))
                    name = QString::fromStdString(l[mi.tensorKey].get<std::string>());
        } catch (const std::exception&) {
        }
        if (name.isEmpty() || !m_report->findWeight(name.toStdString()))
            name = QStringLiteral("layers.%1.attn.q").arg(layer);
    }
    showTensor(name);
    emit tensorRequested(name);
}

void StatsPanel::setMetric(Metric m) {
    m_metricCombo->setCurrentIndex(int(m));
}

StatsPanel::Metric StatsPanel::metric() const {
    return Metric(m_metricCombo->currentIndex());
}

void StatsPanel::setWeightAxis(Axis a) {
    m_axisCombo->setCurrentIndex(m_axisCombo->findData(int(a)));
}

void StatsPanel::setSorted(bool on) {
    m_sortedBox->setChecked(on);
}

void StatsPanel::setLogCount(bool on) {
    m_logBox->setChecked(on);
}

} // namespace lcw
