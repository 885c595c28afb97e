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
#include "widgets/export_panel_base.h"

#include <QWidget>

#include <memory>

class QComboBox;
class QLineEdit;

namespace lcw {

class HfExportPanel : public ExportPanelBase {
    Q_OBJECT
public:
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
    /// The last finished export (nullptr before one).
    const HfCheckpointResult* result() const { return m_result.get(); }

private:
    void syncUi() override;
    void showResult(std::shared_ptr<const HfCheckpointResult> r);

    std::shared_ptr<const HfCheckpointResult> m_result;
    QComboBox* m_format = nullptr;
    QLineEdit* m_output = nullptr;
};

} // namespace lcw
