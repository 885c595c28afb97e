#include "plots/channel_profile_plot.h"

#include "plots/plot_style.h"
#include "plots/plot_tools.h"

#include <QToolTip>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lcw {

namespace {
constexpr int kMaxBars = 64; ///< more entries are drawn as impulses (addBarSeries)
} // namespace

ChannelProfilePlot::ChannelProfilePlot(QWidget* parent) : PlotWidget(parent) {
    m_plot->xAxis->grid()->setVisible(false);
    m_plot->yAxis->setNumberFormat(QStringLiteral("gb"));
    m_plot->legend->setFont(font());
    m_plot->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    applyPalette();
    m_baseMargins = m_plot->axisRect()->minimumMargins();
    rebuild();
}

void ChannelProfilePlot::setProfile(const QVector<double>& values, std::optional<double> threshold,
                                    const QString& thresholdLabel) {
    m_values = values;
    m_threshold = threshold;
    m_thresholdLabel = thresholdLabel;
    rebuild();
}

void ChannelProfilePlot::clear() {
    setProfile({});
}

void ChannelProfilePlot::setAxisLabels(const QString& x, const QString& y) {
    m_xLabel = x;
    m_plot->yAxis->setLabel(y);
    rebuild();
}

void ChannelProfilePlot::setSorted(bool on) {
    if (on == m_sorted) return;
    m_sorted = on;
    rebuild();
}

void ChannelProfilePlot::setLogScale(bool on) {
    if (on == m_log) return;
    m_log = on;
    rebuild();
}

void ChannelProfilePlot::setValueName(const QString& name) {
    m_valueName = name;
    rebuild();
}

void ChannelProfilePlot::linkKeyAxis(ChannelProfilePlot* other) {
    auto follow = [](QCustomPlot* to) {
        return [to](const QCPRange& r) {
            if (to->xAxis->range() == r) return; // the other side of the link
            to->xAxis->setRange(r);
            to->replot(QCustomPlot::rpQueuedReplot);
        };
    };
    connect(m_plot->xAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), other,
            follow(other->m_plot));
    connect(other->m_plot->xAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this,
            follow(m_plot));
    m_linked = other;
    other->m_linked = this;
    connect(m_plot, &QCustomPlot::afterLayout, this, &ChannelProfilePlot::alignMargins);
    connect(other->m_plot, &QCustomPlot::afterLayout, this, &ChannelProfilePlot::alignMargins);
}

void ChannelProfilePlot::alignMargins() {
    if (!m_linked) return;
    QCPAxisRect* a = m_plot->axisRect();
    QCPAxisRect* b = m_linked->m_plot->axisRect();
    const int left = std::max(a->margins().left(), b->margins().left());
    for (auto [rect, plot] : {std::pair{a, m_plot}, std::pair{b, m_linked->m_plot}}) {
        if (rect->margins().left() == left) continue;
        QMargins m = rect->minimumMargins();
        m.setLeft(left);
        rect->setMinimumMargins(m);
        plot->replot(QCustomPlot::rpQueuedReplot);
    }
}

QVector<int> ChannelProfilePlot::outliers() const {
    QVector<int> out;
    if (!m_threshold) return out;
    for (int i = 0; i < m_values.size(); ++i)
        if (m_values[i] >= *m_threshold) out << i;
    return out;
}

int ChannelProfilePlot::indexAtPosition(int pos) const {
    return pos >= 0 && pos < m_order.size() ? m_order[pos] : -1;
}

void ChannelProfilePlot::rebuild() {
    // Margins aligned with a linked plot start over: the labels may be narrower now.
    m_plot->axisRect()->setMinimumMargins(m_baseMargins);
    if (m_linked) {
        m_linked->m_plot->axisRect()->setMinimumMargins(m_linked->m_baseMargins);
        m_linked->m_plot->replot(QCustomPlot::rpQueuedReplot);
    }
    m_plot->clearPlottables();
    m_plot->clearItems();
    const QVector<QColor> colors = seriesColors(palette());
    const int n = int(m_values.size());
    m_order.resize(n);
    std::iota(m_order.begin(), m_order.end(), 0);
    if (m_sorted)
        std::stable_sort(m_order.begin(), m_order.end(),
                         [this](int a, int b) { return m_values[a] > m_values[b]; });
    m_plot->xAxis->setLabel(m_sorted ? tr("rank (largest first) of %1").arg(m_xLabel) : m_xLabel);
    setLogAxis(m_plot->yAxis, m_log);
    const double base = m_log ? logFloor() : 0.0;

    // Bars in drawing order; the outliers again as a second series in the warning colour. With
    // many entries both are impulse graphs (see addBarSeries) and the outlier series is
    // zero at the other positions, so each keeps its place.
    const bool dense = n > kMaxBars;
    QVector<double> keys, vals, okeys, ovals;
    for (int p = 0; p < n; ++p) {
        const double v = m_values[m_order[p]];
        const bool outlier = m_threshold && v >= *m_threshold;
        if (dense || !outlier) {
            keys << double(p);
            vals << v;
        }
        if (outlier || dense) {
            okeys << double(p);
            ovals << (outlier ? v : 0.0);
        }
    }
    QColor fill = colors[0], ofill = colors[3];
    fill.setAlpha(210);
    ofill.setAlpha(230);
    const int nOutliers = int(outliers().size());
    if (n > 0) {
        addBarSeries(m_plot->xAxis, m_plot->yAxis, keys, vals, 1.0, fill, base, kMaxBars)
            ->setName(m_valueName.isEmpty() ? tr("abs-max") : m_valueName);
        if (nOutliers > 0)
            addBarSeries(m_plot->xAxis, m_plot->yAxis, okeys, ovals, 1.0, ofill, base, kMaxBars)
                ->setName(tr("outliers (%1)").arg(nOutliers));
    }
    if (m_threshold) {
        QColor c = colors[3];
        c.setAlpha(200);
        auto* line = new QCPItemStraightLine(m_plot);
        line->point1->setCoords(0, *m_threshold);
        line->point2->setCoords(1, *m_threshold);
        line->setPen(QPen(c, 1, Qt::DashLine));
        auto* label = new QCPItemText(m_plot);
        label->position->setType(QCPItemPosition::ptAxisRectRatio);
        label->position->setAxisRect(m_plot->axisRect());
        label->position->setCoords(0.99, 0.02);
        label->setPositionAlignment(Qt::AlignTop | Qt::AlignRight);
        label->setColor(c.darker(110));
        label->setText(m_thresholdLabel.isEmpty()
                           ? tr("outlier threshold %1").arg(*m_threshold, 0, 'g', 4)
                           : m_thresholdLabel);
        label->setFont(font());
    }
    m_plot->legend->setVisible(false);
    resetView();
}

void ChannelProfilePlot::resetView() {
    const int n = int(m_values.size());
    m_plot->xAxis->setRange(-0.8, std::max(1, n) - 0.2);
    double top = 0.0;
    for (double v : std::as_const(m_values))
        if (std::isfinite(v)) top = std::max(top, v);
    // Keep the threshold line in view when it is close to the data.
    if (m_threshold && *m_threshold < top * 3.0) top = std::max(top, *m_threshold);
    if (top <= 0) top = 1.0;
    if (m_log)
        m_plot->yAxis->setRange(logFloor(), top * 2.0);
    else
        m_plot->yAxis->setRange(0.0, top * 1.08);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

double ChannelProfilePlot::logFloor() const {
    // Half the smallest positive value: every positive entry shows as a bar.
    double low = 0.0;
    for (double v : std::as_const(m_values))
        if (std::isfinite(v) && v > 0 && (low == 0.0 || v < low)) low = v;
    return low > 0 ? low * 0.5 : 0.5;
}

QString ChannelProfilePlot::tooltipFor(int pos) const {
    const int i = indexAtPosition(pos);
    if (i < 0) return {};
    QString text = tr("%1 %2: %3").arg(m_xLabel).arg(i).arg(m_values[i], 0, 'g', 5);
    if (m_sorted) text += tr("\nrank %1 of %2").arg(pos + 1).arg(m_values.size());
    if (m_threshold && m_values[i] >= *m_threshold) text += tr("\noutlier");
    return text;
}

void ChannelProfilePlot::onMouseMove(QMouseEvent* event) {
    if (m_values.isEmpty() || !m_plot->axisRect()->rect().contains(event->pos())) {
        QToolTip::hideText();
        return;
    }
    const int pos = int(std::lround(m_plot->xAxis->pixelToCoord(event->pos().x())));
    const QString tip = tooltipFor(pos);
    if (tip.isEmpty())
        QToolTip::hideText();
    else
        QToolTip::showText(event->globalPosition().toPoint(), tip, m_plot);
}

} // namespace lcw
