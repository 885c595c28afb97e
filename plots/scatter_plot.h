#pragma once
/// \file
/// ScatterPlot: labelled points (configurations), an optional polyline through a subset (the
/// Pareto front, computed by the caller), click to select a point, hover tooltips and export.
/// It draws the numbers it is given and computes nothing.
#include <QStringList>
#include <QVector>
#include <QWidget>

class QCustomPlot;
class QCPGraph;
class QEvent;
class QMouseEvent;

namespace lcw {

class ScatterPlot : public QWidget {
    Q_OBJECT
public:
    explicit ScatterPlot(QWidget* parent = nullptr);

    /// One point per label; `front` lists point indices joined by a line, in order.
    void setPoints(const QStringList& labels, const QVector<double>& x, const QVector<double>& y,
                   const QVector<int>& front = {});
    void clear();
    void setTitle(const QString& title);
    void setAxisLabels(const QString& x, const QString& y);
    /// Highlights a point (-1: none); does not emit pointClicked().
    void setSelected(int index);
    int selected() const { return m_selected; }

    int pointCount() const { return int(m_x.size()); }
    const QVector<double>& xValues() const { return m_x; }
    const QVector<double>& yValues() const { return m_y; }
    const QVector<int>& front() const { return m_front; }
    /// Point nearest to a widget position of the plot within a few pixels, -1 when none.
    int pointAt(const QPoint& plotPos) const;
    /// Widget position of a point (for tests and tooltips).
    QPoint pointPosition(int index) const;

    QCustomPlot* plot() const { return m_plot; }

signals:
    void pointClicked(int index);

protected:
    void changeEvent(QEvent* event) override;

private:
    void rebuild();
    void resetView();
    void onMouseMove(QMouseEvent* event);
    void onMousePress(QMouseEvent* event);

    QCustomPlot* m_plot;
    QStringList m_labels;
    QVector<double> m_x, m_y;
    QVector<int> m_front;
    int m_selected = -1;
    QString m_title;
};

} // namespace lcw
