#pragma once
/// \file
/// The Export dialog's "Hugging Face (vLLM)" page: writes the recipe editor's configuration of
/// the opened Hugging Face model as a quantised Hugging Face checkpoint folder
/// (core/export/hf_checkpoint.h) in compressed-tensors (llm-compressor's format), GPTQ or AWQ,
/// which vLLM and transformers load. The job runs on the TaskRunner with progress and Cancel (a
/// cancelled export leaves nothing); the per-module report (written / float with the reason /
/// copied) fills a table. All numbers come from core; this page only collects choices and shows
/// results.
#include "core/export/hf_checkpoint.h"
#include "widgets/gguf_export_panel.h"
#include "widgets/task_runner.h"

#include <QWidget>

#include <memory>

class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QTableWidget;

namespace lcw {

class HfExportPanel : public QWidget {
    Q_OBJECT
public:
    /// The same context as the GGUF page (model, recipe editor, task runner).
    using Context = GgufExportPanel::Context;
    enum Column { ModuleColumn, StatusColumn, SchemeColumn, NoteColumn };

    explicit HfExportPanel(Context context, QWidget* parent = nullptr);
    ~HfExportPanel() override;

    void setOutputFolder(const QString& path);
    QString outputFolder() const;
    /// "compressed-tensors", "gptq" or "awq" (the formats of the combo box).
    bool setFormat(const QString& name);
    QString format() const;

    /// Starts the export job; false, with lastError(), when it cannot start.
    bool start();
    void cancel();
    bool isRunning() const { return m_job != 0; }
    QString lastError() const { return m_lastError; }
    /// The last finished export (nullptr before one).
    const HfCheckpointResult* result() const { return m_result.get(); }

    QTableWidget* reportTable() const { return m_table; }
    QLabel* summaryLabel() const { return m_summary; }
    QPushButton* startButton() const { return m_start; }

signals:
    void finished();
    void cancelled();
    void failed(const QString& message);
    void logMessage(const QString& text);

private:
    void fail(const QString& message);
    void syncUi();
    void showResult(std::shared_ptr<const HfCheckpointResult> r);

    Context m_ctx;
    TaskRunner::JobId m_job = 0;
    std::shared_ptr<const HfCheckpointResult> m_result;
    QString m_lastError;
    QComboBox* m_format = nullptr;
    QLineEdit* m_output = nullptr;
    QPushButton* m_start = nullptr;
    QPushButton* m_cancel = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_summary = nullptr;
    QTableWidget* m_table = nullptr;
};

} // namespace lcw
