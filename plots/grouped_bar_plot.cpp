#include "plots/grouped_bar_plot.h"

#include "plots/plot_style.h"

#include <QToolTip>
#include <qcustomplot.h>

#include <cmath>

namespace lcw {

namespace {
constexpr double kGroupWidth = 0.8;
}

GroupedBarPlot::GroupedBarPlot(QWidget* parent) : PlotWidget(parent, QStringLiteral("layers")) {
    m_plot->legend->setVisible(true);
    m_plot->legend->setFont(font());
    m_plot->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignLeft);
}

void GroupedBarPlot::setData(const QStringList& categories, const QStringList& series,
                             const QVector<QVector<double>>& values) {
    m_categories = categories;
    m_series = series;
    m_values = values;
    rebuild();
}

void GroupedBarPlot::clear() {
    setData({}, {}, {});
}

void GroupedBarPlot::setValueAxisLabel(const QString& label) {
    m_plot->yAxis->setLabel(label);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void GroupedBarPlot::setLogScale(bool on) {
    m_log = on;
    rebuild();
}

void GroupedBarPlot::rebuild() {
    m_plot->clearPlottables();
    applyPlotPalette(m_plot, palette());
    const QVector<QColor> colors = seriesColors(palette());
    const int ns = int(m_series.size());
    const double w = ns > 0 ? kGroupWidth / ns : kGroupWidth;
    double maxV = 0, minV = INFINITY;
    for (int s = 0; s < ns; ++s) {
        auto* bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
        bars->setName(m_series[s]);
        bars->setWidth(w);
        const QColor c = colors.value(s % std::max<int>(1, int(colors.size())));
        bars->setPen(Qt::NoPen);
        bars->setBrush(c);
        QVector<double> keys, vals;
        for (int c2 = 0; c2 < m_categories.size(); ++c2) {
            const double v = m_values.value(s).value(c2, NAN);
            if (!std::isfinite(v)) continue;
            keys << c2 - kGroupWidth / 2 + w * (s + 0.5);
            vals << v;
            maxV = std::max(maxV, v);
            if (v > 0) minV = std::min(minV, v);
        }
        bars->setData(keys, vals, true);
    }
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    const int step = std::max<int>(1, int(m_categories.size()) / 40 + 1);
    for (int c = 0; c < m_categories.size(); c += step) ticker->addTick(c, m_categories[c]);
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setTickLabelRotation(m_categories.size() > 8 ? 60 : 0);
    m_plot->xAxis->setSubTicks(false);
    m_plot->xAxis->grid()->setVisible(false);
    m_plot->xAxis->setRange(-0.6, std::max<double>(1, m_categories.size()) - 0.4);
    if (m_log && std::isfinite(minV)) {
        m_plot->yAxis->setScaleType(QCPAxis::stLogarithmic);
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
        m_plot->yAxis->setRange(minV / 2, maxV * 2);
    } else {
        m_plot->yAxis->setScaleType(QCPAxis::stLinear);
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
        m_plot->yAxis->setRange(0, maxV > 0 ? maxV * 1.1 : 1);
    }
    m_plot->legend->setVisible(ns > 0);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void GroupedBarPlot::onMouseMove(QMouseEvent* event) {
    const double key = m_plot->xAxis->pixelToCoord(event->pos().x());
    const int c = int(std::lround(key));
    if (c < 0 || c >= m_categories.size() || m_series.isEmpty()) {
        QToolTip::hideText();
        return;
    }
    const double w = kGroupWidth / m_series.size();
    const int s = int(std::floor((key - (c - kGroupWidth / 2)) / w));
    if (s < 0 || s >= m_series.size()) {
        QToolTip::hideText();
        return;
    }
    QToolTip::showText(event->globalPosition().toPoint(),
                       tr("%1\n%2: %3")
                           .arg(m_categories[c], m_series[s])
                           .arg(m_values.value(s).value(c, NAN), 0, 'g', 4),
                       m_plot);
}

} // namespace lcw
