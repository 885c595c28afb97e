#pragma once
/// \file
/// HistogramPlot: a binned distribution as bars over [lo, hi] (QCustomPlot), with optional
/// vertical marker lines (e.g. a quantization grid), a linear or logarithmic count axis, hover
/// values, pan/zoom and PNG/PDF export. It draws the counts it is given and computes nothing.
#include "plots/plot_widget.h"

#include <QString>
#include <QVector>

class QCPAbstractPlottable;

namespace lcw {

class HistogramPlot : public PlotWidget {
    Q_OBJECT
public:
    explicit HistogramPlot(QWidget* parent = nullptr);

    /// Equal-width bins covering [lo, hi]; counts.size() is the bin count.
    void setHistogram(double lo, double hi, const QVector<double>& counts);
    /// Vertical lines at the given x positions, named `label` in the legend (empty: none).
    void setMarkers(const QVector<double>& xs, const QString& label);
    void clear();

    void setAxisLabels(const QString& x, const QString& y);
    /// Logarithmic count axis (empty bins are then drawn as nothing).
    void setLogCount(bool on);
    bool logCount() const { return m_log; }

    int binCount() const { return int(m_counts.size()); }
    const QVector<double>& counts() const { return m_counts; }
    double lo() const { return m_lo; }
    double hi() const { return m_hi; }
    int markerCount() const { return int(m_markers.size()); }
    const QVector<double>& markers() const { return m_markers; }
    QString markerLabel() const { return m_markerLabel; }
    /// Index of the bin under a widget position of the plot, −1 when none.
    int binAt(const QPoint& plotPos) const;
    /// What hovering over bin `index` shows.
    QString tooltipFor(int index) const;
    /// Back to the full data range.
    void resetView() override;

signals:
    void logCountChanged(bool on);

private:
    void rebuild() override;
    void onMouseMove(QMouseEvent* event) override;

    QCPAbstractPlottable* m_series = nullptr;
    QString m_markerLabel;
    QVector<double> m_counts, m_markers;
    double m_lo = 0, m_hi = 1;
    bool m_log = false;
};

} // namespace lcw
