#pragma once
/// \file
/// GroupedBarPlot: per category (a layer), one bar per series (a configuration) side by side,
/// with a legend, hover tooltips and export. It draws the numbers it is given.
#include "plots/plot_widget.h"

#include <QStringList>
#include <QVector>

namespace lcw {

class GroupedBarPlot : public PlotWidget {
    Q_OBJECT
public:
    explicit GroupedBarPlot(QWidget* parent = nullptr);

    /// values[s][c]: series s at category c (NaN: no bar).
    void setData(const QStringList& categories, const QStringList& series,
                 const QVector<QVector<double>>& values);
    void clear();
    void setValueAxisLabel(const QString& label);
    /// Logarithmic value axis.
    void setLogScale(bool on);

    int seriesCount() const { return int(m_series.size()); }
    int categoryCount() const { return int(m_categories.size()); }
    const QVector<QVector<double>>& values() const { return m_values; }
    /// Draws the data again with the axes fitted to it.
    void resetView() override { rebuild(); }

private:
    /// rebuild() applies the palette itself.
    void onPaletteChange() override { rebuild(); }
    void rebuild() override;
    void onMouseMove(QMouseEvent* event) override;

    QStringList m_categories, m_series;
    QVector<QVector<double>> m_values;
    bool m_log = false;
};

} // namespace lcw
