#pragma once
/// \file
/// BarPlot: labelled bars (QCustomPlot) with a hover tooltip and PNG/PDF export from the context
/// menu. It draws the numbers it is given and computes nothing.
#include <QColor>
#include <QStringList>
#include <QVector>
#include <QWidget>

#include <functional>

class QCustomPlot;
class QCPBars;
class QCPLayoutGrid;
class QEvent;
class QMouseEvent;

namespace lcw {

class BarPlot : public QWidget {
    Q_OBJECT
public:
    /// Text of the hover tooltip for bar `index`.
    using TooltipFormatter = std::function<QString(int index, const QString& label, double value)>;

    explicit BarPlot(QWidget* parent = nullptr);

    /// One bar per label. `groups` (optional, same length) puts bars in colour groups named by
    /// `groupNames` (a legend is shown when there is more than one named group).
    void setBars(const QStringList& labels, const QVector<double>& values,
                 const QVector<int>& groups = {}, const QStringList& groupNames = {});
    /// Removes all bars.
    void clear();

    void setTitle(const QString& title);
    void setValueAxisLabel(const QString& label);
    void setTooltipFormatter(TooltipFormatter f) { m_tooltip = std::move(f); }
    /// Colours used for groups 0, 1, ... (a default palette otherwise).
    void setPalette(const QVector<QColor>& colors);

    int barCount() const { return int(m_values.size()); }
    const QStringList& labels() const { return m_labels; }
    const QVector<double>& values() const { return m_values; }
    /// Index of the bar under a widget position of the plot, -1 when none.
    int barAt(const QPoint& plotPos) const;
    /// Tooltip text for a bar (what hovering shows).
    QString tooltipFor(int index) const;

    /// Writes the plot; size 0 means the widget's size. Returns false on failure.
    bool exportPng(const QString& path, int width = 0, int height = 0);
    bool exportPdf(const QString& path, int width = 0, int height = 0);

    /// The underlying plot, for styling beyond this API.
    QCustomPlot* plot() const { return m_plot; }

signals:
    /// A bar was clicked.
    void barClicked(int index);

protected:
    /// Follows theme changes (the application palette).
    void changeEvent(QEvent* event) override;

private:
    void rebuild();
    void onMouseMove(QMouseEvent* event);
    void onMousePress(QMouseEvent* event);
    void showContextMenu(const QPoint& pos);

    QCustomPlot* m_plot;
    QCPLayoutGrid* m_legendRow = nullptr;
    QString m_title;
    QStringList m_labels;
    QVector<double> m_values;
    QVector<int> m_groups;
    QStringList m_groupNames;
    QVector<QColor> m_palette;
    TooltipFormatter m_tooltip;
    int m_hovered = -1;
};

} // namespace lcw
