#pragma once
/// \file
/// RunPanel: generate text from a prompt (streamed as tokens arrive, with prefill and decode
/// speed) and measure perplexity on a text file (progress, cancel, running PPL per chunk). Both
/// run in the background through the window's TaskRunner and keep the model alive while they run.
/// Both run on a chosen configuration: the base model, the recipe editor's recipe or a preset
/// (compressed first, in the same job, with progress and cancellation; the last compressed
/// recipe is kept for the next run), or an overlay folder saved by `lcw-cli compress --save` or
/// the workbench; the results name the configuration that produced them.
#include "core/compress/recipe.h"
#include "core/eval/perplexity.h"
#include "core/runtime/session.h"
#include "widgets/task_runner.h"

#include <QWidget>

#include <functional>
#include <memory>
#include <optional>

class QComboBox;
class QDoubleSpinBox;
class QGroupBox;
class QLabel;
class QLayout;
class QLineEdit;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;
class QSettings;
class QSpinBox;
class QSplitter;

namespace lcw {

namespace compress {
class CompressedModel;
}
class LinePlot;

class RunPanel : public QWidget {
    Q_OBJECT
public:
    /// Numbers of the last finished (or stopped) generation.
    struct GenerationStats {
        int64_t promptTokens = 0;
        int64_t generatedTokens = 0;
        double prefillSeconds = 0;
        double decodeSeconds = 0;
        bool stoppedAtEos = false;
    };

    explicit RunPanel(TaskRunner* runner, QWidget* parent = nullptr);
    ~RunPanel() override;

    /// The model the next jobs run on (running jobs keep the one they started with).
    void setModel(std::shared_ptr<const Model> model);
    std::shared_ptr<const Model> model() const { return m_model; }

    // ---- configuration
    /// What the next jobs run on.
    enum class Configuration { BaseModel, EditorRecipe, SavedOverlay, Preset };
    /// Where "Editor recipe" comes from (read when a job is queued).
    void setEditorRecipeProvider(std::function<compress::Recipe()> f) {
        m_editorRecipe = std::move(f);
    }
    /// Base model or editor recipe (SavedOverlay and Preset need their argument: see below).
    void setConfiguration(Configuration c);
    Configuration configuration() const;
    /// Selects a saved overlay folder (a `compress --save DIR` folder). Returns false with
    /// `error` when it is not a folder with an overlay manifest.
    bool setOverlayFolder(const QString& dir, QString* error = nullptr);
    QString overlayFolder() const { return m_overlayDir; }
    /// Selects a built-in preset by name; false when there is none of that name.
    bool setPreset(const QString& name);
    /// What results of the chosen configuration are labelled with: "base model", "editor
    /// recipe: NAME" (or "editor recipe #1a2b3c" when unnamed), "overlay DIR", "preset NAME".
    QString configurationLabel() const;
    /// The configurations of the last finished generation and perplexity run.
    QString lastGenerationConfiguration() const { return m_lastGenConfig; }
    QString lastPerplexityConfiguration() const { return m_lastPplConfig; }
    QComboBox* configurationCombo() const { return m_config; }

    // ---- generation
    void setPrompt(const QString& text);
    QString prompt() const;
    void setMaxNewTokens(int n);
    int maxNewTokens() const;
    /// Temperature 0 is greedy; top-k 0 and top-p 1 are off.
    void setSampling(const SamplingParams& params);
    SamplingParams sampling() const;
    /// Queues a generation. Returns false (and says why in the status line) when there is no
    /// model, the prompt is empty or a generation is already queued or running.
    bool generate();
    /// Stops the running (or queued) generation; the text so far stays.
    void stopGeneration();
    bool isGenerating() const { return m_genJob != 0; }
    /// The prompt and the generated text (as the tokenizer decodes them).
    QString outputText() const;
    /// "Prefill: 5 tokens … · Decode: 60 tokens …", or the state of the job.
    QString generationStatusText() const;
    const std::optional<GenerationStats>& lastGeneration() const { return m_lastGen; }

    // ---- perplexity
    void setTextFile(const QString& path);
    QString textFile() const;
    void setContext(int ctx);
    int context() const;
    /// Queues a perplexity run (llama.cpp chunks, BOS per chunk). Returns false (and says why)
    /// when there is no model or text file, or a run is already queued or running.
    bool runPerplexity();
    void cancelPerplexity();
    bool isPerplexityRunning() const { return m_pplJob != 0; }
    /// "PPL = 5.0170 ± 0.0319 (367 chunks, 93,952 tokens, 1.8 s)", or the state of the run.
    QString perplexityResultText() const;
    const std::optional<PerplexityResult>& lastPerplexity() const { return m_lastPpl; }
    LinePlot* perplexityPlot() const { return m_pplPlot; }

    /// The bundled evaluation text (resources/data/tinystories_eval.txt in the install's share
    /// folder or the source tree), empty when neither exists.
    static QString defaultTextFile();

    /// Prompt, sampling, text file and context (under "run/").
    void readSettings(const QSettings& settings);
    void writeSettings(QSettings& settings) const;

    QPushButton* generateButton() const { return m_generate; }
    QPushButton* stopButton() const { return m_stop; }
    QPushButton* perplexityRunButton() const { return m_pplRun; }
    QPushButton* perplexityCancelButton() const { return m_pplCancel; }
    QProgressBar* perplexityProgress() const { return m_pplProgress; }
    QPlainTextEdit* outputView() const { return m_output; }

signals:
    void generationFinished();
    /// Stopped by the user (the partial text stays).
    void generationStopped();
    void generationFailed(const QString& message);
    void perplexityFinished(double ppl);
    void perplexityCancelled();
    void perplexityFailed(const QString& message);
    /// A result worth keeping in the log.
    void logMessage(const QString& text);
    /// Buttons changed state (a job was queued, started or ended; a model arrived).
    void stateChanged();

private:
    struct Stream;
    struct GenOutcome;
    struct PplOutcome;
    struct ConfigRequest;

    /// The chosen configuration, resolved on the UI thread (the editor's recipe read now);
    /// nullopt with `error` when it cannot run (no provider, no overlay folder).
    std::optional<ConfigRequest> resolveConfiguration(QString* error) const;
    /// Keeps a recipe's compressed weights (made from `base`) for the next run of the same
    /// recipe, when `base` is still the panel's model.
    void keepCompressed(const std::shared_ptr<const Model>& base, const std::string& key,
                        std::shared_ptr<const compress::CompressedModel> overlay);
    void chooseOverlayFolder();

    struct GenJob;

    void buildUi();
    QLayout* buildConfigRow();
    QGroupBox* buildGenerateBox(QWidget* parent);
    QLayout* buildSamplingRow(QWidget* parent);
    void createSamplingFields(QWidget* parent);
    QLayout* buildGenerateButtons(QWidget* parent);
    QGroupBox* buildPerplexityBox(QWidget* parent);
    QLayout* buildTextFileRow(QWidget* parent);
    QLayout* buildPplStatusRow(QWidget* parent);
    /// The configuration to generate with; nullopt, shown in the status, when there is no model,
    /// tokenizer, prompt or usable configuration.
    std::optional<ConfigRequest> generationRequest();
    /// A call that asks the UI thread to show `stream` (safe from a worker).
    std::function<void()> streamPoster(const std::shared_ptr<Stream>& stream);
    void onGenerationStopped(const std::shared_ptr<Stream>& stream);
    void updateButtons();
    void browseTextFile();
    void flushStream(const std::shared_ptr<Stream>& stream);
    void showOutput(const QString& promptText, const QString& text);
    void setGenStatus(const QString& text, bool error = false);
    void setPplStatus(const QString& text, bool error = false);
    void onJobStarted(TaskRunner::JobId id);
    void onProgress(TaskRunner::JobId id, double fraction, const QString& stage);
    void onGenerationDone(const GenOutcome& out);
    void onPerplexityDone(const PplOutcome& out);

    TaskRunner* m_runner;
    std::shared_ptr<const Model> m_model;
    std::function<compress::Recipe()> m_editorRecipe;
    QString m_overlayDir;
    int m_lastConfigIndex = 0;
    /// The last compressed recipe (its JSON) and its weights, on m_model.
    std::string m_cachedKey;
    std::shared_ptr<const compress::CompressedModel> m_cached;
    QString m_genConfig, m_pplConfig;         ///< of the queued or running jobs
    QString m_lastGenConfig, m_lastPplConfig; ///< of the last finished ones
    TaskRunner::JobId m_genJob = 0;
    TaskRunner::JobId m_pplJob = 0;
    std::shared_ptr<Stream> m_stream;
    QString m_shownText;
    std::optional<GenerationStats> m_lastGen;
    std::optional<PerplexityResult> m_lastPpl;
    int64_t m_pplChunksSeen = 0;
    int64_t m_pplChunksTotal = 0;
    QString m_pplFileName;

    QSplitter* m_split = nullptr;
    QComboBox* m_config = nullptr;
    QPlainTextEdit* m_prompt = nullptr;
    QSpinBox* m_maxTokens = nullptr;
    QDoubleSpinBox* m_temperature = nullptr;
    QSpinBox* m_topK = nullptr;
    QDoubleSpinBox* m_topP = nullptr;
    QSpinBox* m_seed = nullptr;
    QPushButton* m_generate = nullptr;
    QPushButton* m_stop = nullptr;
    QPlainTextEdit* m_output = nullptr;
    QLabel* m_genStatus = nullptr;

    QLineEdit* m_textFile = nullptr;
    QSpinBox* m_ctx = nullptr;
    QPushButton* m_pplRun = nullptr;
    QPushButton* m_pplCancel = nullptr;
    QProgressBar* m_pplProgress = nullptr;
    QLabel* m_pplStatus = nullptr;
    LinePlot* m_pplPlot = nullptr;
};

} // namespace lcw
