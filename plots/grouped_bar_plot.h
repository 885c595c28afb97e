#pragma once
/// \file
/// GroupedBarPlot: per category (a layer), one bar per series (a configuration) side by side,
/// with a legend, hover tooltips and export. It draws the numbers it is given.
#include <QStringList>
#include <QVector>
#include <QWidget>

class QCustomPlot;
class QEvent;
class QMouseEvent;

namespace lcw {

class GroupedBarPlot : public QWidget {
    Q_OBJECT
public:
    explicit GroupedBarPlot(QWidget* parent = nullptr);

    /// values[s][c]: series s at category c (NaN: no bar).
    void setData(const QStringList& categories, const QStringList& series,
                 const QVector<QVector<double>>& values);
    void clear();
    void setTitle(const QString& title);
    void setValueAxisLabel(const QString& label);
    /// Logarithmic value axis.
    void setLogScale(bool on);

    int seriesCount() const { return int(m_series.size()); }
    int categoryCount() const { return int(m_categories.size()); }
    const QVector<QVector<double>>& values() const { return m_values; }
    QCustomPlot* plot() const { return m_plot; }

protected:
    void changeEvent(QEvent* event) override;

private:
    void rebuild();
    void onMouseMove(QMouseEvent* event);

    QCustomPlot* m_plot;
    QStringList m_categories, m_series;
    QVector<QVector<double>> m_values;
    QString m_title;
    bool m_log = false;
};

} // namespace lcw
