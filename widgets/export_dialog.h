#pragma once
/// \file
/// File ▸ Export…: the "Files" page writes the recipe JSON (what lcw-cli --recipe reads), the
/// comparison metrics table (TSV), further text files the window offers (the Tensors table, the
/// sensitivity scan) and the plots (PNG, PDF or SVG when built with Qt Svg) into one folder; the
/// "GGUF (llama.cpp)" page (GgufExportPanel) writes the model as a GGUF file, or the
/// llama-quantize command that reproduces a llama.cpp preset; the "Hugging Face (vLLM)" page
/// (HfExportPanel) writes a compressed-tensors checkpoint folder. Further formats add a page here.
#include "widgets/gguf_export_panel.h"
#include "widgets/hf_export_panel.h"

#include <QDialog>
#include <QString>

#include <functional>
#include <optional>
#include <vector>

class QCheckBox;
class QComboBox;
class QCustomPlot;
class QLineEdit;
class QPushButton;
class QTabWidget;

namespace lcw {

class ExportDialog : public QDialog {
    Q_OBJECT
public:
    struct Sources {
        std::function<QString()> recipeJson; ///< empty function: item disabled
        std::function<QString()> metricsTsv; ///< returns empty text when there are no results
        std::vector<std::pair<QString, QCustomPlot*>> plots; ///< file-name suffix, plot
        /// Further text files: a checkbox each, written as BASE.suffix.
        struct Text {
            QString label;                 ///< the checkbox text
            QString suffix;                ///< "tensors.tsv"
            std::function<QString()> text; ///< empty function: item disabled
        };
        std::vector<Text> texts;
        /// The GGUF page (absent: no page, e.g. without a model).
        std::optional<GgufExportPanel::Context> gguf;
    };
    enum class Page { Files, Gguf };

    ExportDialog(Sources sources, QWidget* parent = nullptr);

    void setFolder(const QString& folder);
    void setBaseName(const QString& name);
    /// "png", "pdf" or "svg".
    void setPlotFormat(const QString& suffix);
    void setRecipeChecked(bool on);
    void setMetricsChecked(bool on);
    void setPlotsChecked(bool on);

    /// Writes the checked items; returns the files written. On failure stops and sets `error`.
    QStringList exportFiles(QString* error = nullptr);

    /// Shows a page (false when the dialog has no such page).
    bool showPage(Page page);
    /// The GGUF page (nullptr without one).
    GgufExportPanel* ggufPanel() const { return m_gguf; }
    /// The Hugging Face checkpoint page (nullptr without a model).
    HfExportPanel* hfPanel() const { return m_hf; }
    QTabWidget* pages() const { return m_pages; }

protected:
    /// Closing the dialog cancels a running GGUF export (it leaves no file).
    void done(int r) override;

private:
    Sources m_sources;
    QLineEdit* m_folder = nullptr;
    QLineEdit* m_base = nullptr;
    QComboBox* m_format = nullptr;
    QCheckBox* m_recipe = nullptr;
    QCheckBox* m_metrics = nullptr;
    QCheckBox* m_plots = nullptr;
    std::vector<QCheckBox*> m_texts; ///< one per Sources::texts
    QTabWidget* m_pages = nullptr;
    GgufExportPanel* m_gguf = nullptr;
    HfExportPanel* m_hf = nullptr;
    QPushButton* m_exportButton = nullptr;
};

} // namespace lcw
