#include "plots/histogram_plot.h"

#include "plots/plot_style.h"
#include "plots/plot_tools.h"

#include <QToolTip>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>

namespace lcw {

HistogramPlot::HistogramPlot(QWidget* parent) : PlotWidget(parent) {
    m_plot->xAxis->grid()->setVisible(false);
    m_plot->yAxis->setNumberFormat(QStringLiteral("gb"));
    m_plot->legend->setVisible(false);
    m_plot->legend->setFont(font());
    m_plot->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignLeft);
    applyPalette();
    rebuild();
}

void HistogramPlot::setHistogram(double lo, double hi, const QVector<double>& counts) {
    m_lo = lo;
    m_hi = hi > lo ? hi : lo + 1.0;
    m_counts = counts;
    rebuild();
}

void HistogramPlot::setMarkers(const QVector<double>& xs, const QString& label) {
    m_markers = xs;
    m_markerLabel = label;
    rebuild();
}

void HistogramPlot::clear() {
    m_counts.clear();
    m_markers.clear();
    m_markerLabel.clear();
    rebuild();
}

void HistogramPlot::setAxisLabels(const QString& x, const QString& y) {
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void HistogramPlot::setLogCount(bool on) {
    if (on == m_log) return;
    m_log = on;
    rebuild();
    emit logCountChanged(on);
}

void HistogramPlot::rebuild() {
    m_plot->clearPlottables();
    m_plot->clearItems();
    m_series = nullptr;
    const QVector<QColor> colors = seriesColors(palette());
    const int n = int(m_counts.size());
    const double width = n > 0 ? (m_hi - m_lo) / n : 1.0;

    setLogAxis(m_plot->yAxis, m_log);

    if (n > 0) {
        QColor fill = colors[0];
        fill.setAlpha(200);
        QVector<double> keys(n);
        for (int i = 0; i < n; ++i) keys[i] = m_lo + (i + 0.5) * width;
        // On a log axis bars start just under one count so single counts stay visible.
        m_series = addBarSeries(m_plot->xAxis, m_plot->yAxis, keys, m_counts, width, fill,
                                m_log ? 0.5 : 0.0);
        m_series->setName(tr("count"));
        m_series->removeFromLegend();
    }
    if (!m_markers.isEmpty()) {
        QColor c = colors[3];
        c.setAlpha(m_markers.size() > 64 ? 90 : 170);
        const QPen pen(c, 1, Qt::DashLine);
        for (double x : std::as_const(m_markers)) {
            auto* line = new QCPItemStraightLine(m_plot);
            line->point1->setCoords(x, 0);
            line->point2->setCoords(x, 1);
            line->setPen(pen);
            line->setSelectable(false);
        }
        // A legend entry for the lines: an empty graph that carries their pen.
        auto* legendProxy = new QCPGraph(m_plot->xAxis, m_plot->yAxis);
        legendProxy->setPen(pen);
        legendProxy->setName(m_markerLabel);
    }
    m_plot->legend->setVisible(!m_markers.isEmpty() && !m_markerLabel.isEmpty());
    QColor legendBg = palette().color(QPalette::Base);
    legendBg.setAlpha(220);
    m_plot->legend->setBrush(legendBg);
    m_plot->legend->setTextColor(palette().color(QPalette::Text));
    m_plot->legend->setBorderPen(QPen(palette().color(QPalette::Mid)));
    resetView();
}

void HistogramPlot::resetView() {
    const double pad = (m_hi - m_lo) * 0.02;
    double lo = m_lo, hi = m_hi;
    for (double x : std::as_const(m_markers)) {
        lo = std::min(lo, x);
        hi = std::max(hi, x);
    }
    m_plot->xAxis->setRange(lo - pad, hi + pad);
    double top = 1.0;
    for (double c : std::as_const(m_counts)) top = std::max(top, c);
    if (m_log)
        m_plot->yAxis->setRange(0.5, top * 2.0);
    else
        m_plot->yAxis->setRange(0.0, top * 1.08);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int HistogramPlot::binAt(const QPoint& plotPos) const {
    if (m_counts.isEmpty() || !m_plot->axisRect()->rect().contains(plotPos)) return -1;
    const double x = m_plot->xAxis->pixelToCoord(plotPos.x());
    const int n = int(m_counts.size());
    const int i = int(std::floor((x - m_lo) / (m_hi - m_lo) * n));
    return i >= 0 && i < n ? i : -1;
}

QString HistogramPlot::tooltipFor(int index) const {
    if (index < 0 || index >= m_counts.size()) return {};
    const double w = (m_hi - m_lo) / double(m_counts.size());
    return tr("bin %1: [%2, %3)\ncount %4")
        .arg(index)
        .arg(m_lo + index * w, 0, 'g', 5)
        .arg(m_lo + (index + 1) * w, 0, 'g', 5)
        .arg(m_counts[index], 0, 'f', 0);
}

void HistogramPlot::onMouseMove(QMouseEvent* event) {
    const int i = binAt(event->pos());
    if (i < 0) {
        QToolTip::hideText();
        return;
    }
    QToolTip::showText(event->globalPosition().toPoint(), tooltipFor(i), m_plot);
}

} // namespace lcw
