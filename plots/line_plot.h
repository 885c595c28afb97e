#pragma once
/// \file
/// LinePlot: one series of (x, y) points (QCustomPlot) with zoom and pan, a hover marker and
/// tooltip, an optional horizontal reference line, and PNG/PDF export from the context menu.
/// It draws the numbers it is given and computes nothing.
#include <QString>
#include <QVector>
#include <QWidget>

#include <functional>

class QCustomPlot;
class QCPGraph;
class QCPItemStraightLine;
class QCPItemText;
class QCPItemTracer;
class QEvent;
class QMouseEvent;

namespace lcw {

class LinePlot : public QWidget {
    Q_OBJECT
public:
    /// Text of the hover tooltip for point `index`.
    using TooltipFormatter = std::function<QString(int index, double x, double y)>;

    explicit LinePlot(QWidget* parent = nullptr);

    /// Replaces the series (x ascending) and fits the axes to it.
    void setData(const QVector<double>& x, const QVector<double>& y);
    /// Appends one point (x not below the last one) and refits the axes.
    void addPoint(double x, double y);
    /// Removes all points and the reference line.
    void clear();

    void setTitle(const QString& title);
    void setAxisLabels(const QString& xLabel, const QString& yLabel);
    /// A dashed horizontal line at y with a label at its right end; NaN hides it.
    void setReferenceLine(double y, const QString& label = {});
    /// Text shown in the middle of an empty plot ("Run perplexity to see …").
    void setPlaceholderText(const QString& text);
    void setTooltipFormatter(TooltipFormatter f) { m_tooltip = std::move(f); }

    int pointCount() const { return int(m_x.size()); }
    const QVector<double>& xValues() const { return m_x; }
    const QVector<double>& yValues() const { return m_y; }
    /// Index of the point nearest (in x) to a widget position inside the axis rect, -1 when none.
    int pointAt(const QPoint& plotPos) const;
    /// Tooltip text for a point (what hovering shows).
    QString tooltipFor(int index) const;
    /// Fits both axes to the data (double-click and the context menu do the same).
    void resetZoom();

    /// Writes the plot; size 0 means the widget's size. Returns false on failure.
    bool exportPng(const QString& path, int width = 0, int height = 0);
    bool exportPdf(const QString& path, int width = 0, int height = 0);

    /// The underlying plot, for styling beyond this API.
    QCustomPlot* plot() const { return m_plot; }

protected:
    /// Follows theme changes (the application palette).
    void changeEvent(QEvent* event) override;

private:
    void restyle();
    void updatePlaceholder();
    void onMouseMove(QMouseEvent* event);
    void showContextMenu(const QPoint& pos);

    QCustomPlot* m_plot;
    QCPGraph* m_graph = nullptr;
    QCPItemStraightLine* m_refLine = nullptr;
    QCPItemText* m_refLabel = nullptr;
    QCPItemText* m_placeholder = nullptr;
    QCPItemTracer* m_tracer = nullptr;
    QString m_title;
    QString m_placeholderText;
    QVector<double> m_x;
    QVector<double> m_y;
    double m_refY;
    TooltipFormatter m_tooltip;
    int m_hovered = -1;
};

} // namespace lcw
