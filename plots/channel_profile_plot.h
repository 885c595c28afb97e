#pragma once
/// \file
/// ChannelProfilePlot: one value per channel (or per token) as bars, in index order or sorted
/// largest first, with the entries at or above an outlier threshold drawn in a warning colour and
/// the threshold as a dashed line. Hover shows the channel and value; pan/zoom; PNG/PDF export.
/// It draws the values it is given; the threshold comes from the caller (core's definition).
#include "plots/plot_widget.h"

#include <QMargins>
#include <QString>
#include <QVector>

#include <optional>

namespace lcw {

class ChannelProfilePlot : public PlotWidget {
    Q_OBJECT
public:
    explicit ChannelProfilePlot(QWidget* parent = nullptr);

    /// Values by index (channel or token). `threshold`: entries ≥ it are marked as outliers.
    void setProfile(const QVector<double>& values, std::optional<double> threshold = {},
                    const QString& thresholdLabel = {});
    void clear();
    void setAxisLabels(const QString& x, const QString& y);
    /// Sorted: largest first (the x axis is then the rank; tooltips keep the index).
    void setSorted(bool on);
    bool sorted() const { return m_sorted; }
    /// Logarithmic value axis (bars start under the smallest positive value; zeros draw
    /// nothing).
    void setLogScale(bool on);
    bool logScale() const { return m_log; }
    /// What one value is, for the legend and tooltips ("abs-max" by default).
    void setValueName(const QString& name);
    /// Keeps this plot's key (x) axis equal to `other`'s, both ways: the range (pan/zoom one,
    /// the other follows) and the left margin, so that stacked plots share one x scale on
    /// screen.
    void linkKeyAxis(ChannelProfilePlot* other);

    int count() const { return int(m_values.size()); }
    const QVector<double>& values() const { return m_values; }
    /// Indices of the marked entries, ascending.
    QVector<int> outliers() const;
    /// The outlier threshold and its legend text as given to setProfile().
    std::optional<double> threshold() const { return m_threshold; }
    QString thresholdLabel() const { return m_thresholdLabel; }
    /// Index (channel/token) drawn at position `pos` (0-based x), given the current order.
    int indexAtPosition(int pos) const;
    QString tooltipFor(int pos) const;
    void resetView() override;

private:
    void rebuild() override;
    /// Where bars start on a log axis.
    double logFloor() const;
    void onMouseMove(QMouseEvent* event) override;

    QString m_xLabel, m_thresholdLabel;
    QString m_valueName;
    QVector<double> m_values;
    QVector<int> m_order; ///< drawn position → index
    std::optional<double> m_threshold;
    bool m_sorted = false;
    bool m_log = false;
    ChannelProfilePlot* m_linked = nullptr;
    QMargins m_baseMargins; ///< the axis rect's own minimum margins
    void alignMargins();
};

} // namespace lcw
