#pragma once
/// \file
/// The compare view: pick a baseline and configurations (presets, recipe files, the recipe
/// editor's current recipe), run compress + compareToBaseline (+ greedy generations) through
/// the TaskRunner, and show a metrics table (Ctrl+C copies TSV), a Pareto plot of size against
/// KLD or PPL (click a point to select its row), per-layer relative weight error bars per
/// configuration, the same prompt's generations side by side, and per configuration its speed
/// and memory (prefill and decode tokens/s, resident weight bytes, peak RSS increase) measured
/// in a run of that configuration alone, as columns and bars. Other model files of the same
/// vocabulary (a GGUF quantised elsewhere) are configurations too ("Add Model File…", like
/// `lcw-cli eval --compare-model`), and the per-block hidden-state error of each configuration
/// against the baseline (`lcw-cli hidden-error`) is an optional part of the same job, plotted per
/// block on its own tab. Results serialise to JSON for projects.
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "widgets/task_runner.h"

#include <QWidget>

#include <functional>
#include <memory>
#include <vector>

class QCheckBox;
class QComboBox;
class QFormLayout;
class QLabel;
class QLineEdit;
class QListWidget;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QTabWidget;
class QHBoxLayout;
class QLayout;

namespace lcw {

class BarPlot;
class GroupedBarPlot;
class ScatterPlot;

/// Zero-shot accuracy of one task (core/eval/tasks.h), as a fraction.
struct CompareTask {
    QString name; ///< "piqa", "arc_easy", ...
    qint64 items = 0;
    double acc = 0, accError = 0;
};

/// Hidden-state error of one block (core/eval/hidden_error.h BlockError).
struct CompareHiddenBlock {
    int layer = 0;
    double relError = 0, meanRelError = 0, meanCosine = 0, minCosine = 0;
};

/// One configuration's measured results.
struct CompareRow {
    QString name;
    QString recipeJson; ///< empty for the original weights and model files
    QString modelFile;  ///< another model file (its path); empty otherwise
    double bitsPerWeight = 0;
    quint64 bytes = 0;
    double ppl = 0, pplError = 0;
    double kld = 0, kldError = 0, kldP99 = 0;
    double sameTop = 0, sameTopError = 0;
    /// KV cache per token of one context of the text (core measureKvCache: eviction policies
    /// and KV quantisation included); 0 when not measured.
    double kvBytesPerToken = 0;
    /// Prefill (prompt processing) tokens per second: the configuration's speed run (a prompt
    /// of CompareResults::speedPromptTokens in one batch), or, when no speed run was made, its
    /// throughput over the perplexity chunks.
    double tokensPerSecond = 0;
    /// Greedy decode tokens per second (CompareResults::speedDecodeTokens tokens, one per
    /// forward, after the prompt); 0 when not measured.
    double decodeTokensPerSecond = 0;
    /// Weight bytes the configuration holds in memory while it runs: the base tensors the
    /// runtime reads (mapped from the model file, or the loader's copies) plus the overlay's
    /// tensors as held (packed codes, scales, zero points, masks, and the float copy the runtime
    /// multiplies with where it keeps one). 0 when not measured.
    quint64 weightBytes = 0;
    /// Increase of the process's peak resident set during the speed run over the resident set
    /// just before it (KV cache, activations, logits, work buffers, pages touched for the first
    /// time), and that resident set. 0 when not measured.
    quint64 peakRssBytes = 0;
    quint64 rssBeforeBytes = 0;
    /// Per quantised layer: relative Frobenius error of the weights, in model order.
    std::vector<std::pair<QString, double>> layerError;
    QString generation; ///< greedy continuation of the prompt
    /// The continuation token by token (decoded pieces), the per-token KLD from the baseline
    /// along the baseline's text (core compareGenerations, teacher-forced; empty for the
    /// baseline) and the first generated token that differs from the baseline's (-1: none).
    QStringList tokens;
    std::vector<double> tokenKld;
    qint64 firstDivergence = -1;
    /// Task accuracies when the comparison ran tasks (same order in every row).
    std::vector<CompareTask> tasks;
    /// Per block: the residual stream's error against the baseline's (empty for the baseline
    /// and when the comparison did not measure it).
    std::vector<CompareHiddenBlock> hidden;
};

/// Everything one comparison produced.
struct CompareResults {
    QString baseline; ///< "original" or a configuration's name
    qint64 ctx = 0, chunks = 0, scoredTokens = 0;
    QString prompt;
    std::vector<CompareRow> rows; ///< baseline first (KLD 0)
    double seconds = 0;
    /// The speed runs: prompt tokens prefilled and tokens decoded per configuration (0: none
    /// ran), and how the peak was measured: true when the kernel's high-water mark was reset
    /// before each run (/proc/self/clear_refs), false when the resident set was sampled after
    /// the prefill and after each decoded token.
    qint64 speedPromptTokens = 0, speedDecodeTokens = 0;
    bool peakRssFromHwm = false;
    /// Positions compared per block by the hidden-state error (0: not measured), or why it
    /// could not be measured (a configuration of another width or depth).
    qint64 hiddenTokens = 0;
    QString hiddenProblem;
    bool empty() const { return rows.empty(); }
    /// {"baseline", "ctx", ..., "rows": [...]} and back; fromJson throws std::exception on bad
    /// input.
    std::string toJson() const;
    static CompareResults fromJson(const std::string& text);
};

class ComparePanel : public QWidget {
    Q_OBJECT
public:
    enum Column {
        ConfigColumn,
        BitsColumn,
        SizeColumn,
        PplColumn,
        KldColumn,
        KldP99Column,
        SameTopColumn,
        PrefillColumn, ///< prefill tokens/s
        DecodeColumn,  ///< decode tokens/s
        WeightMemoryColumn,
        PeakRssColumn, ///< peak RSS increase of the speed run
        KvColumn,      ///< KV-cache bytes per token of one context
        ColumnCount
    };
    /// The bar plots of the Speed & Memory tab, one bar per configuration (metrics table order).
    enum SpeedMetric {
        PrefillMetric,
        DecodeMetric,
        WeightsMetric,
        PeakRssMetric,
        SpeedMetricCount
    };
    /// Name of the configuration that stands for the unmodified model.
    static QString originalName() { return QStringLiteral("original"); }
    static QString editorName() { return QStringLiteral("editor recipe"); }
    /// What a run of the editor's recipe is called in the results: "editor recipe: NAME", or
    /// for an unnamed recipe "editor recipe #1a2b3c" (a fingerprint of its JSON), as the Results
    /// view labels it, so that two different recipes never read alike.
    static QString editorLabel(const compress::Recipe& recipe);

    ComparePanel(TaskRunner* runner, QWidget* parent = nullptr);
    ~ComparePanel() override;

    void setModel(std::shared_ptr<const Model> model);
    /// Where the "editor recipe" configuration comes from.
    void setEditorRecipeProvider(std::function<compress::Recipe()> f) {
        m_editorRecipe = std::move(f);
    }

    /// Configuration names offered (original, editor recipe, presets, added files).
    QStringList availableConfigs() const;
    /// Checks exactly these configurations.
    void setSelectedConfigs(const QStringList& names);
    QStringList selectedConfigs() const;
    /// Adds a recipe file as a configuration (checked). Returns false with `error` when invalid.
    bool addRecipeFile(const QString& path, QString* error = nullptr);
    /// Adds another model file (a GGUF quantised elsewhere, the same model in another format) as
    /// a configuration (checked), named by its file name. It must have the open model's
    /// vocabulary: the comparison fails naming the file when it does not. Returns false with
    /// `error` when the path does not exist.
    bool addModelFile(const QString& path, QString* error = nullptr);
    /// Model files added, (configuration name, path).
    std::vector<std::pair<QString, QString>> modelFiles() const { return m_modelFiles; }
    /// Whether the comparison also measures the per-block hidden-state error.
    void setHiddenErrorEnabled(bool on);
    bool hiddenErrorEnabled() const;
    /// Recipes added from files, (name, JSON), for projects.
    std::vector<std::pair<QString, QString>> extraRecipes() const;
    void addExtraRecipe(const QString& name, const QString& json);
    void setBaseline(const QString& name);
    void setContext(int ctx);
    void setMaxChunks(int chunks);
    void setPrompt(const QString& prompt);
    void setGenerateTokens(int n);
    /// Tokens decoded in each configuration's speed run (after a prompt of min(context, 512)
    /// tokens of the text); 0 skips the speed runs (no decode speed or memory columns; prefill
    /// speed then comes from the perplexity chunks).
    void setSpeedTokens(int n);
    /// Zero-shot tasks scored per configuration ("piqa,arc_easy"; empty: none) on a fixed subset
    /// of `limit` items (0: all), from `dir` (default $LCW_SHARED_DIR/data/tasks, else
    /// ../shared/data/tasks). Accuracies become "TASK acc %" columns of the metrics table.
    void setTasks(const QString& list, int limit = 0);
    void setTasksDir(const QString& dir) { m_tasksDir = dir; }
    QString tasksDir() const { return m_tasksDir; }
    /// Text scored by the comparison (default: the bundled evaluation text).
    void setTextFile(const QString& path);
    QString textFile() const { return m_textFile; }

    /// Submits the comparison job. Returns false when it cannot start (no model, nothing
    /// selected, a job running, no text).
    bool run();
    void cancel();
    bool isRunning() const { return m_job != 0; }
    TaskRunner::JobId job() const { return m_job; }

    const CompareResults& results() const { return m_results; }
    /// Shows stored results (a reopened project) without recomputing.
    void setResults(const CompareResults& r);
    void clearResults();

    /// TSV of the metrics table (header + rows; only the selected rows when `selectedOnly`
    /// and any are selected); copyMetrics() also puts it on the clipboard.
    QString metricsTsv(bool selectedOnly = false) const;
    QString copyMetrics();
    /// Pareto axes: x 0 = size (MiB), 1 = bits/weight; y 0 = KLD, 1 = PPL.
    /// x: 0 size, 1 bits/weight, 2 KV bytes/token; y: 0 KLD, 1 PPL, 2 + k: the accuracy of the
    /// results' task k (higher is better: its Pareto front is the largest accuracy per x).
    void setParetoAxes(int x, int y);
    /// Selects a configuration's row (and its point).
    void selectRow(int row);
    int selectedRow() const;

    QTableWidget* metricsTable() const { return m_table; }
    ScatterPlot* paretoPlot() const { return m_pareto; }
    GroupedBarPlot* layerErrorPlot() const { return m_layers; }
    QWidget* generationsView() const { return m_genPage; }
    QTabWidget* tabs() const { return m_tabs; }
    BarPlot* speedPlot(SpeedMetric m) const { return m_speedPlots[m]; }
    QWidget* speedView() const { return m_speedPage; }
    /// The Hidden State tab: relative error per block, one series per configuration, and a table
    /// (a row per block; per configuration its relative error and mean cosine).
    GroupedBarPlot* hiddenErrorPlot() const { return m_hiddenPlot; }
    QTableWidget* hiddenErrorTable() const { return m_hiddenTable; }
    QWidget* hiddenErrorView() const { return m_hiddenPage; }
    QCheckBox* hiddenErrorLogCheck() const { return m_hiddenLog; }
    /// Text of each generation column (baseline first).
    QStringList generationTexts() const;
    /// HTML of one row's generation column: tokens before the divergence point on a background
    /// whose strength follows their KLD, the divergence point marked, later tokens plain.
    QString generationHtml(int row) const;

signals:
    void finished();
    void failed(const QString& message);
    void cancelled();
    /// Results were shown (computed or restored).
    void resultsChanged();
    void logMessage(const QString& text);

private:
    void buildUi();
    QWidget* buildConfigSide(QWidget* parent);
    QPushButton* buildAddRecipeButton(QWidget* parent);
    QPushButton* buildAddModelButton(QWidget* parent);
    QFormLayout* buildSettingsForm(QWidget* parent);
    QWidget* buildMetricsTab();
    QTableWidget* buildMetricsTable(QWidget* parent);
    QLayout* buildParetoAxes(QWidget* parent);
    ScatterPlot* buildParetoPlot(QWidget* parent);
    QWidget* buildLayersTab();
    QWidget* buildGenerationsTab();
    QWidget* buildSpeedTab();
    BarPlot* buildSpeedPlot(int metric, const QString& title);
    QWidget* buildHiddenTab();
    /// The configurations to compare, the baseline first (the original weights become one when
    /// another configuration is the baseline).
    QStringList comparedNames() const;
    /// Submits the comparison job of `configs` configurations besides the baseline.
    void submitJob(std::function<CompareResults(Progress&)> job, size_t configs);
    void jobFinished(const CompareResults& r);
    void jobCancelled();
    void rebuildConfigList();
    void syncUi();
    void showResults();
    void updatePareto();
    /// The y-axis choices: KLD, PPL and one "TASK accuracy" per task of the results.
    void updateParetoYChoices();
    void updateLayerPlot();
    void updateGenerations();
    void updateSpeedPlots();
    void updateHiddenError();
    /// Tooltips of the speed and memory column headers for the current results.
    void updateSpeedTooltips();

    TaskRunner* m_runner;
    std::shared_ptr<const Model> m_model;
    std::function<compress::Recipe()> m_editorRecipe;
    std::vector<std::pair<QString, QString>> m_extra;      ///< name, recipe JSON
    std::vector<std::pair<QString, QString>> m_modelFiles; ///< name, path
    QString m_textFile;
    QString m_tasksDir;
    TaskRunner::JobId m_job = 0;
    CompareResults m_results;
    int m_paretoX = 0, m_paretoY = 0;
    QVector<int> m_pointRows;

    QListWidget* m_configs = nullptr;
    QComboBox* m_baseline = nullptr;
    QSpinBox* m_ctx = nullptr;
    QSpinBox* m_chunks = nullptr;
    QLineEdit* m_prompt = nullptr;
    QSpinBox* m_genTokens = nullptr;
    QSpinBox* m_speedTokens = nullptr;
    QLineEdit* m_tasks = nullptr;
    QSpinBox* m_taskLimit = nullptr;
    QPushButton* m_runButton = nullptr;
    QPushButton* m_cancelButton = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_status = nullptr;
    QTabWidget* m_tabs = nullptr;
    QTableWidget* m_table = nullptr;
    ScatterPlot* m_pareto = nullptr;
    QComboBox* m_xAxis = nullptr;
    QComboBox* m_yAxis = nullptr;
    QCheckBox* m_paretoLogX = nullptr;
    QCheckBox* m_paretoLogY = nullptr;
    GroupedBarPlot* m_layers = nullptr;
    QCheckBox* m_logLayers = nullptr;
    QWidget* m_genPage = nullptr;
    QHBoxLayout* m_genColumns = nullptr;
    QLabel* m_genNote = nullptr;
    QWidget* m_speedPage = nullptr;
    QLabel* m_speedNote = nullptr;
    BarPlot* m_speedPlots[SpeedMetricCount] = {};
    QCheckBox* m_hiddenCheck = nullptr;
    QWidget* m_hiddenPage = nullptr;
    QLabel* m_hiddenNote = nullptr;
    QCheckBox* m_hiddenLog = nullptr;
    GroupedBarPlot* m_hiddenPlot = nullptr;
    QTableWidget* m_hiddenTable = nullptr;
};

} // namespace lcw
