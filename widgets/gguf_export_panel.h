#pragma once
/// \file
/// The Export dialog's "GGUF (llama.cpp)" page: writes the model as a GGUF file llama.cpp loads
/// (core/export/gguf_export.h) in the types of a llama.cpp preset (Q4_K_M, ... — gguf_mix.h's
/// choice, the same file as `llama-quantize … Q4_K_M`) or as the recipe editor's recipe chose
/// them, optionally with an importance matrix (the opened one or a .dat file). The export runs
/// on the TaskRunner with progress, time left and Cancel (a cancelled export leaves no file);
/// the per-tensor report (name, shape, type, bytes, exact / converted / re-encoded, fallbacks)
/// fills a table, and lcw reads the file back to give its KL divergence from what it was written
/// from (the model, or the recipe's configuration). The second mode writes the llama-quantize
/// command and the per-tensor type list that reproduce a preset's mix with llama.cpp itself (for
/// models bigger than this machine). All numbers come from core; this page only collects choices
/// and shows results.
#include "core/compress/imatrix.h"
#include "core/compress/recipe.h"
#include "core/eval/divergence.h"
#include "core/export/gguf_export.h"
#include "core/model/model.h"
#include "widgets/export_panel_base.h"

#include <QElapsedTimer>
#include <QWidget>

#include <functional>
#include <memory>
#include <optional>

class QButtonGroup;
class QCheckBox;
class QComboBox;
class QFormLayout;
class QLabel;
class QLayout;
class QLineEdit;
class QPlainTextEdit;
class QRadioButton;
class QToolButton;

namespace lcw {

class GgufExportPanel : public ExportPanelBase {
    Q_OBJECT
public:
    enum class Mode { File, Command };
    enum class ImatrixSource { None, Opened, File };
    enum Column { NameColumn, ShapeColumn, TypeColumn, BytesColumn, StatusColumn, NoteColumn };
    /// The type choice that keeps what the recipe chose (typeChoice()).
    static constexpr const char* kRecipeChoice = "recipe";

    explicit GgufExportPanel(Context context, QWidget* parent = nullptr);
    ~GgufExportPanel() override;

    void setMode(Mode m);
    Mode mode() const;
    void setOutputPath(const QString& path);
    QString outputPath() const;
    /// kRecipeChoice or a llama.cpp file type name ("Q4_K_M", "Q8_0", "F16"; llamaFtypes()).
    bool setTypeChoice(const QString& choice);
    QString typeChoice() const;
    /// In recipe mode: the type of tensors the recipe leaves without a GGUF type (nullopt: the
    /// type they are stored in, F32 for values the recipe changed).
    void setOtherTensorsType(std::optional<DType> t);
    void setImatrixSource(ImatrixSource s, const QString& file = {});
    ImatrixSource imatrixSource() const;

    /// Starts the current mode: the export job (File) or writing the command files (Command,
    /// done at once). False, with lastError(), when it cannot start.
    bool start();

    /// The written file against what it was written from (the model, or the recipe's
    /// configuration): KL divergence on a few chunks of the bundled text.
    struct KlCheck {
        DivergenceStats stats;
        int64_t ctx = 0, chunks = 0;
    };
    /// What an export job hands back.
    struct Outcome {
        GgufExportResult result;
        std::optional<KlCheck> kl; ///< absent when not asked for or impossible (no tokenizer)
        std::string klAgainst;
    };

    /// The last finished export (nullptr before one).
    const GgufExportResult* result() const { return m_result ? &m_result->result : nullptr; }
    /// Its KL check (nullopt when none ran).
    std::optional<KlCheck> klCheck() const { return m_result ? m_result->kl : std::nullopt; }
    /// Measure the KL divergence of the written file (default on).
    void setKlCheck(bool on);
    /// The files the last Command run wrote (script, type list).
    QStringList commandFiles() const { return m_commandFiles; }

    QPlainTextEdit* commandView() const { return m_commandView; }

private:
    QFormLayout* buildForm();
    QLayout* buildModeRow();
    QLayout* buildOutputRow();
    void addTypeRows(QFormLayout* form);
    QLayout* buildImatrixRow();
    QLayout* buildRunRow();
    QTableWidget* buildTensorTable();
    QPlainTextEdit* buildCommandView();
    void connectControls();
    void syncUi() override;
    void showResult(std::shared_ptr<const Outcome> r);
    bool writeCommand();
    /// The imatrix chosen for this run (read and checked when it is a file); nullptr for none.
    /// Throws with a message naming the file.
    std::shared_ptr<const compress::Imatrix> chosenImatrix(QString* path) const;

    std::shared_ptr<const Outcome> m_result;
    QStringList m_commandFiles;

    QRadioButton* m_fileMode = nullptr;
    QRadioButton* m_commandMode = nullptr;
    QLineEdit* m_output = nullptr;
    QComboBox* m_types = nullptr;
    QLabel* m_othersLabel = nullptr;
    QComboBox* m_others = nullptr;
    QComboBox* m_imatrixCombo = nullptr;
    QLineEdit* m_imatrixFile = nullptr;
    QToolButton* m_imatrixBrowse = nullptr;
    QCheckBox* m_klBox = nullptr;
    QPlainTextEdit* m_commandView = nullptr;
};

} // namespace lcw
