#pragma once
/// \file
/// The statistics inspector: computes a model's statistics in the background (TaskRunner),
/// caches them in an HDF5 file under the application data folder (StatsStore, keyed by the model
/// fingerprint and the statistics settings) and shows, for the selected tensor, its weight
/// histogram with the preview's quantization grid, per-channel abs-max profiles, the activation
/// per-channel and per-token abs-max of its input site, K and V abs-max per head and channel,
/// and a model-wide per-layer overview. All numbers come from core/stats; the plots draw them.
#include "core/compress/recipe.h"
#include "core/stats/stats_engine.h"
#include "core/stats/stats_store.h"
#include "widgets/task_runner.h"

#include <QString>
#include <QThreadPool>
#include <QWidget>

#include <functional>
#include <memory>
#include <optional>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLayout;
class QProgressBar;
class QSettings;
class QTabWidget;
class QToolButton;

namespace lcw {

class BarPlot;
class ChannelProfilePlot;
class HeatMapPlot;
class HistogramPlot;
class ImatrixManager;
class Model;
class SparsityPlot;

/// What the user chooses in Statistics ▸ Compute….
struct StatsSettings {
    int samples = 16;  ///< calibration sequences
    int seqLen = 128;  ///< tokens per sequence
    QString calibFile; ///< empty: the built-in text
    int bits = 4;      ///< preview (and drawn grid) bit width
    int group = 128;   ///< preview group: > 0 group size, 0 per channel, −1 per tensor
    bool symmetric = false;
    int histBins = 256;
    bool activations = true;

    bool operator==(const StatsSettings&) const = default;
};

class StatsPanel : public QWidget {
    Q_OBJECT
public:
    /// Overview metrics (one bar per layer, from the report's layer ranking).
    enum class Metric { WeightKurtosis, WeightOutlierRatio, PreviewError, ActOutlierRatio, Score };
    /// Weight profile axis.
    enum class Axis { Output, Input };

    /// Outlier threshold for activation channel abs-max, as core/stats counts outlier channels
    /// (`outlier_channels_ge6`: LLM.int8()'s |x| ≥ 6). Weight channels are judged relative to
    /// their tensor instead (see setOutlierK()).
    static constexpr double kOutlierThreshold = 6.0;

    StatsPanel(TaskRunner* runner, QWidget* parent = nullptr);
    ~StatsPanel() override;

    /// Shows `model`; loads its cached statistics when a file exists (the current settings'
    /// file first, else the newest file of this model) on a worker thread, without a runner
    /// job; statsChanged() and cacheLoadFinished() follow.
    /// `fingerprint`: stats::modelFingerprint() of the model when the caller knows it; empty
    /// computes it with the cache lookup on the worker thread (fingerprintReady() follows).
    void setModel(std::shared_ptr<const Model> model, const QString& path,
                  const std::string& fingerprint = {});
    /// stats::modelFingerprint() of the model (empty without one). Computed on this thread when
    /// asked before the background computation ended (see hasFingerprint()).
    const std::string& fingerprint() const;
    bool hasFingerprint() const { return !m_fingerprint.empty(); }

    /// The recipe's weight setting of a tensor (empty: the recipe leaves it unquantised). When
    /// set, the histogram draws that setting's grid instead of the statistics preview's.
    using RecipeSettingFn = std::function<std::optional<compress::WeightSettings>(const QString&)>;
    void setRecipeSettingProvider(RecipeSettingFn f) { m_recipeSetting = std::move(f); }
    /// Redraws the weight plots (the recipe changed).
    void refreshRecipeGrid();
    /// Where the importance matrix comes from: the Activations tab draws its mean x² per input
    /// column for the selected linear under the activation abs-max per channel (same axis),
    /// and follows the manager's changes.
    void setImatrixManager(const ImatrixManager* m);

    StatsSettings settings() const { return m_settings; }
    void setSettings(const StatsSettings& s);
    /// Opens the settings dialog; on OK computes (or loads) with the chosen settings.
    void showComputeDialog();
    /// Loads the cache file of the current settings when it exists, else submits a job. Returns
    /// false when there is no model or a computation is already running.
    bool computeStats();
    /// Cancels the running computation (nothing is written).
    void cancelCompute();
    bool isComputing() const { return m_job != 0; }
    /// True while setModel()'s background read of a cached statistics file runs.
    bool isLoadingCache() const { return m_loadingCache; }
    TaskRunner::JobId computeJob() const { return m_job; }

    /// Where statistics files are cached (AppDataLocation/stats).
    static QString cacheDir();
    /// Cache file of the current model and settings (empty without a model).
    QString cachePath() const;
    /// Cache file of a model fingerprint and statistics options (reads the calibration file to
    /// key it; throws when it is missing). Thread-safe.
    static QString cacheFileFor(const std::string& fingerprint, const stats::StatsOptions& opts);
    /// Cache file that the shown statistics came from (empty when none shown).
    QString loadedPath() const { return m_loadedPath; }

    /// Shows statistics read or computed elsewhere (a statistics file opened by hand, a
    /// synthetic report) without touching the cache; `path` is where they came from.
    void showReport(std::shared_ptr<const stats::StatsReport> r, const QString& path = {}) {
        setReport(std::move(r), path);
    }
    /// Shows the statistics of one tensor (canonical name).
    void showTensor(const QString& name);
    QString currentTensor() const { return m_tensor; }
    std::shared_ptr<const stats::StatsReport> report() const { return m_report; }

    void setMetric(Metric m);
    Metric metric() const;
    void setWeightAxis(Axis a);
    void setSorted(bool on);
    void setLogCount(bool on);
    /// Logarithmic value axis for the Activations tab's plots (abs-max per channel and token,
    /// importance per column).
    void setActivationLogScale(bool on);
    /// k of the weight outlier channels: abs-max ≥ k × the median channel abs-max of the tensor
    /// (stats::relativeOutlierChannels; default stats::kDefaultOutlierK). The weight profile
    /// marks them, its legend and title show k, the header counts them per axis.
    void setOutlierK(double k);
    double outlierK() const;

    void readSettings(QSettings& s);
    void writeSettings(QSettings& s) const;

    HistogramPlot* histogramPlot() const { return m_hist; }
    ChannelProfilePlot* weightProfilePlot() const { return m_weightProfile; }
    ChannelProfilePlot* activationProfilePlot() const { return m_actProfile; }
    ChannelProfilePlot* tokenProfilePlot() const { return m_tokenProfile; }
    /// The importance matrix's mean x² per input column of the selected linear.
    ChannelProfilePlot* imatrixProfilePlot() const { return m_imatrixProfile; }
    /// The MLP intermediates' near-zero fractions per layer (tab "MLP Sparsity").
    SparsityPlot* sparsityPlot() const { return m_sparsity; }
    QCheckBox* activationLogBox() const { return m_actLogBox; }
    HeatMapPlot* kHeatMap() const { return m_kMap; }
    HeatMapPlot* vHeatMap() const { return m_vMap; }
    BarPlot* overviewPlot() const { return m_overview; }
    QCheckBox* logCountBox() const { return m_logBox; }
    QTabWidget* tabs() const { return m_tabs; }

    /// Name of the activation site feeding a weight ("layers.0.mlp.down" → "layers.0.mlp.down",
    /// "layers.0.attn.q" → "layers.0.attn_in"); empty for tensors without one.
    static QString inputSiteOf(const QString& weightName);

signals:
    /// New statistics are shown (computed or loaded).
    void statsChanged();
    /// setModel()'s cache lookup ended; `loaded` tells whether statistics were found.
    void cacheLoadFinished(bool loaded);
    /// The model's fingerprint is known (fingerprint() returns it without computing).
    void fingerprintReady();
    void computeFinished();
    void computeCancelled();
    void computeFailed(const QString& message);
    /// A layer's bar in the overview was clicked: select this tensor.
    void tensorRequested(const QString& name);
    void logMessage(const QString& text);

private:
    void buildUi();
    QLayout* buildHeader();
    QWidget* buildWeightsTab();
    QWidget* buildActivationsTab();
    QWidget* buildKvTab();
    /// Natural sparsity of the MLP intermediates per layer (activation_sparsity_stats.h).
    QWidget* buildSparsityTab();
    QWidget* buildOverview();
    void connectControls();
    bool tryLoad(const QString& path);
    void adopt(std::shared_ptr<stats::StatsReport> r, const QString& path);
    struct CacheLoad {
        std::shared_ptr<stats::StatsReport> report;
        QString path;
        QStringList messages;
        std::string fingerprint;
    };
    /// What a statistics job hands back: computed (and saved to `path`) or, when the file
    /// existed, loaded from it.
    struct Computed {
        std::shared_ptr<stats::StatsReport> report;
        QString path;
        std::string fingerprint;
        bool loaded = false;
    };
    /// Cache lookups (fingerprint, file reads). Not Qt's global pool: the raster paint engine
    /// hands work to that one and waits for it.
    QThreadPool m_ioPool;
    quint64 m_cacheGeneration = 0;
    bool m_loadingCache = false;
    void setReport(std::shared_ptr<const stats::StatsReport> r, const QString& path);
    void updateHeader();
    void updateWeightPlots();
    /// The histogram's quantisation grid for a tensor (the recipe's setting or the preview's).
    void updateGrid(const stats::TensorStats& w);
    void updateActivationPlots();
    void updateImatrixPlot();
    void updateKvMaps();
    void updateSparsityPlot();
    void updateOverview();
    void onOverviewClicked(int index);
    void syncComputeUi();
    int layerOfTensor() const;
    QString settingsSummary() const;

    TaskRunner* m_runner;
    RecipeSettingFn m_recipeSetting;
    const ImatrixManager* m_imatrix = nullptr;
    std::shared_ptr<const Model> m_model;
    QString m_modelPath;
    mutable std::string m_fingerprint; ///< empty until known (see fingerprint())
    StatsSettings m_settings;
    std::shared_ptr<const stats::StatsReport> m_report;
    QString m_loadedPath;
    QString m_tensor;
    TaskRunner::JobId m_job = 0;
    QVector<int> m_overviewLayers;

    QLabel* m_title = nullptr;
    QLabel* m_details = nullptr;
    QLabel* m_provenance = nullptr;
    QToolButton* m_computeButton = nullptr;
    QToolButton* m_cancelButton = nullptr;
    QProgressBar* m_progress = nullptr;
    QTabWidget* m_tabs = nullptr;
    HistogramPlot* m_hist = nullptr;
    ChannelProfilePlot* m_weightProfile = nullptr;
    ChannelProfilePlot* m_actProfile = nullptr;
    ChannelProfilePlot* m_tokenProfile = nullptr;
    ChannelProfilePlot* m_imatrixProfile = nullptr;
    QCheckBox* m_actLogBox = nullptr;
    HeatMapPlot* m_kMap = nullptr;
    HeatMapPlot* m_vMap = nullptr;
    SparsityPlot* m_sparsity = nullptr;
    QLabel* m_sparsityNote = nullptr;
    BarPlot* m_overview = nullptr;
    QCheckBox* m_logBox = nullptr;
    QCheckBox* m_sortedBox = nullptr;
    QComboBox* m_axisCombo = nullptr;
    QDoubleSpinBox* m_outlierKBox = nullptr;
    QComboBox* m_metricCombo = nullptr;
};

} // namespace lcw
