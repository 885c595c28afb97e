#pragma once
/// \file
/// File ▸ Export…: writes the recipe JSON (what lcw-cli --recipe reads), the comparison metrics
/// table (TSV), further text files the window offers (the Tensors table, the sensitivity scan)
/// and the plots (PNG, PDF or SVG when built with Qt Svg) into one folder. Further formats
/// (compressed model exports) add an item here.
#include <QDialog>
#include <QString>

#include <functional>
#include <vector>

class QCheckBox;
class QComboBox;
class QCustomPlot;
class QLineEdit;

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
    };

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

private:
    Sources m_sources;
    QLineEdit* m_folder = nullptr;
    QLineEdit* m_base = nullptr;
    QComboBox* m_format = nullptr;
    QCheckBox* m_recipe = nullptr;
    QCheckBox* m_metrics = nullptr;
    QCheckBox* m_plots = nullptr;
    std::vector<QCheckBox*> m_texts; ///< one per Sources::texts
};

} // namespace lcw
