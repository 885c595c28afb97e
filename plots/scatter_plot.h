#pragma once
/// \file
/// ScatterPlot: labelled points (configurations), an optional polyline through a subset (the
/// Pareto front, computed by the caller), click to select a point, hover tooltips and export.
/// Either axis can be logarithmic (a value ≤ 0 is then drawn on the axis floor, hollow, its
/// label saying so); labels are placed so that they overlap neither each other nor the points
/// (next to the point where there is room, else shifted with a leader line), again after every
/// zoom, pan or resize. It draws the numbers it is given and computes nothing.
#include "plots/plot_widget.h"

#include <QRectF>
#include <QStringList>
#include <QVector>

class QCPGraph;
class QCPItemLine;
class QCPItemText;
class QCPItemTracer;

namespace lcw {

class ScatterPlot : public PlotWidget {
    Q_OBJECT
public:
    explicit ScatterPlot(QWidget* parent = nullptr);

    /// One point per label; `front` lists point indices joined by a line, in order.
    void setPoints(const QStringList& labels, const QVector<double>& x, const QVector<double>& y,
                   const QVector<int>& front = {});
    void clear();
    void setAxisLabels(const QString& x, const QString& y);
    /// Highlights a point (-1: none); does not emit pointClicked().
    void setSelected(int index);
    int selected() const { return m_selected; }
    /// Logarithmic x / y axis.
    void setLogX(bool on);
    void setLogY(bool on);
    bool logX() const { return m_logX; }
    bool logY() const { return m_logY; }
    /// Widget (plot) pixel rectangles of the point labels as last laid out, by point index.
    QVector<QRectF> labelRects() const;
    /// Text of a point's label as drawn.
    QString labelText(int index) const;

    int pointCount() const { return int(m_x.size()); }
    const QVector<double>& xValues() const { return m_x; }
    const QVector<double>& yValues() const { return m_y; }
    const QVector<int>& front() const { return m_front; }
    /// Point nearest to a widget position of the plot within a few pixels, -1 when none.
    int pointAt(const QPoint& plotPos) const;
    /// Widget position of a point (for tests and tooltips).
    QPoint pointPosition(int index) const;

signals:
    void pointClicked(int index);

private:
    /// rebuild() applies the palette itself.
    void onPaletteChange() override { rebuild(); }
    void rebuild() override;
    void resetView() override;
    void onMouseMove(QMouseEvent* event) override;
    void onMousePress(QMouseEvent* event);
    /// Places the labels (pixel offsets from their points) without overlaps; runs after every
    /// layout of the plot.
    void layoutLabels();
    /// Where a point is drawn: its value, or on a log axis the floor for a value ≤ 0.
    double drawnX(int i) const;
    double drawnY(int i) const;

    QStringList m_labels;
    QVector<double> m_x, m_y;
    QVector<int> m_front;
    int m_selected = -1;
    bool m_logX = false, m_logY = false;
    double m_floorX = 0, m_floorY = 0; ///< log axes: where values ≤ 0 are drawn
    QVector<QCPItemText*> m_labelItems;
    QVector<QCPItemTracer*> m_anchors;
    QVector<QCPItemLine*> m_leaders;
};

} // namespace lcw
