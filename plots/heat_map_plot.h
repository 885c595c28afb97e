#pragma once
/// \file
/// HeatMapPlot: a matrix of values as coloured cells (QCPColorMap) with a colour scale, an
/// optionally highlighted row, column group separators (e.g. attention heads), hover values,
/// pan/zoom and PNG/PDF export. It draws the numbers it is given and computes nothing.
#include "plots/plot_widget.h"

#include <QString>
#include <QStringList>
#include <QVector>

#include <functional>

class QCPColorMap;
class QCPColorScale;

namespace lcw {

class HeatMapPlot : public PlotWidget {
    Q_OBJECT
public:
    /// Tooltip text for cell (column, row) holding `value`.
    using TooltipFormatter = std::function<QString(int column, int row, double value)>;

    explicit HeatMapPlot(QWidget* parent = nullptr);

    /// `values` is row-major, rows × columns; row 0 is drawn at the top. NaN cells stay empty.
    void setMatrix(int columns, int rows, const QVector<double>& values);
    void clear();
    void setAxisLabels(const QString& x, const QString& y, const QString& colorScale);
    /// Tick labels of the rows (one per row), e.g. "L0".."L4".
    void setRowLabels(const QStringList& labels);
    /// Vertical separators every `n` columns (0: none).
    void setColumnGroup(int n);
    /// Outlines one row (−1: none).
    void setHighlightedRow(int row);
    void setTooltipFormatter(TooltipFormatter f) { m_tooltip = std::move(f); }

    int columns() const { return m_cols; }
    int rows() const { return m_rows; }
    double value(int column, int row) const;
    int highlightedRow() const { return m_highlight; }
    /// Cell under a widget position of the plot, {−1, −1} when none.
    QPoint cellAt(const QPoint& plotPos) const;
    QString tooltipFor(int column, int row) const;
    void resetView() override;

    QCPColorMap* colorMap() const { return m_map; }

private:
    void rebuild() override;
    void onMouseMove(QMouseEvent* event) override;

    QCPColorMap* m_map = nullptr;
    QCPColorScale* m_scale = nullptr;
    QStringList m_rowLabels;
    QVector<double> m_values;
    int m_cols = 0, m_rows = 0, m_group = 0, m_highlight = -1;
    TooltipFormatter m_tooltip;
};

} // namespace lcw
