#include "plots/scatter_plot.h"

#include "plots/plot_style.h"
#include "plots/plot_tools.h"

#include <QEvent>
#include <QToolTip>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>

namespace lcw {

namespace {
constexpr double kHitPixels = 8.0;
}

ScatterPlot::ScatterPlot(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this)) {
    embedPlotWithTitle(m_plot, this);
    installPlotInteractions(
        m_plot, this, [this] { return m_title.isEmpty() ? QStringLiteral("pareto") : m_title; },
        [this] { resetView(); });
    connect(m_plot, &QCustomPlot::mouseMove, this, &ScatterPlot::onMouseMove);
    connect(m_plot, &QCustomPlot::mousePress, this, &ScatterPlot::onMousePress);
    applyPlotPalette(m_plot, palette());
}

void ScatterPlot::changeEvent(QEvent* event) {
    QWidget::changeEvent(event);
    if (event->type() == QEvent::PaletteChange) rebuild();
}

void ScatterPlot::setPoints(const QStringList& labels, const QVector<double>& x,
                            const QVector<double>& y, const QVector<int>& front) {
    m_labels = labels;
    m_x = x;
    m_y = y;
    m_front = front;
    if (m_selected >= int(m_x.size())) m_selected = -1;
    rebuild();
    resetView();
}

void ScatterPlot::clear() {
    setPoints({}, {}, {}, {});
}

void ScatterPlot::setTitle(const QString& title) {
    m_title = title;
    setPlotTitle(m_plot, title);
}

void ScatterPlot::setAxisLabels(const QString& x, const QString& y) {
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void ScatterPlot::setSelected(int index) {
    m_selected = index >= 0 && index < int(m_x.size()) ? index : -1;
    rebuild();
}

void ScatterPlot::rebuild() {
    m_plot->clearGraphs();
    m_plot->clearItems();
    applyPlotPalette(m_plot, palette());
    const QVector<QColor> colors = seriesColors(palette());
    const QColor text = palette().color(QPalette::Text);
    if (!m_front.isEmpty()) {
        QCPGraph* g = m_plot->addGraph();
        QVector<double> fx, fy;
        for (int i : m_front)
            if (i >= 0 && i < m_x.size()) fx << m_x[i], fy << m_y[i];
        g->setData(fx, fy, true);
        QPen pen(colors.value(1, Qt::red), 1.5, Qt::DashLine);
        g->setPen(pen);
        g->setName(tr("Pareto front"));
    }
    QCPGraph* pts = m_plot->addGraph();
    pts->setLineStyle(QCPGraph::lsNone);
    pts->setScatterStyle(
        QCPScatterStyle(QCPScatterStyle::ssCircle, colors.value(0), colors.value(0), 9));
    pts->setData(m_x, m_y); // unsorted: keeps indices, QCustomPlot sorts by key internally
    for (int i = 0; i < m_x.size(); ++i) {
        auto* label = new QCPItemText(m_plot);
        label->position->setCoords(m_x[i], m_y[i]);
        label->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
        label->setPadding(QMargins(6, 0, 0, 4));
        label->setText(m_labels.value(i));
        label->setColor(text);
        QFont f = font();
        f.setBold(i == m_selected);
        label->setFont(f);
    }
    if (m_selected >= 0) {
        QCPGraph* sel = m_plot->addGraph();
        sel->setLineStyle(QCPGraph::lsNone);
        sel->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle,
                                             QPen(colors.value(3, Qt::red), 2.5), Qt::NoBrush, 15));
        sel->setData({m_x[m_selected]}, {m_y[m_selected]});
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void ScatterPlot::resetView() {
    if (m_x.isEmpty()) {
        m_plot->xAxis->setRange(0, 1);
        m_plot->yAxis->setRange(0, 1);
    } else {
        const auto [x0, x1] = std::minmax_element(m_x.begin(), m_x.end());
        const auto [y0, y1] = std::minmax_element(m_y.begin(), m_y.end());
        const double dx = std::max(*x1 - *x0, std::abs(*x1) * 0.1 + 1e-12);
        const double dy = std::max(*y1 - *y0, std::abs(*y1) * 0.1 + 1e-12);
        // Room on the right for the labels.
        m_plot->xAxis->setRange(*x0 - 0.08 * dx, *x1 + 0.3 * dx);
        m_plot->yAxis->setRange(*y0 - 0.1 * dy, *y1 + 0.15 * dy);
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QPoint ScatterPlot::pointPosition(int index) const {
    if (index < 0 || index >= m_x.size()) return {};
    return QPoint(int(std::lround(m_plot->xAxis->coordToPixel(m_x[index]))),
                  int(std::lround(m_plot->yAxis->coordToPixel(m_y[index]))));
}

int ScatterPlot::pointAt(const QPoint& pos) const {
    int best = -1;
    double bestD = kHitPixels;
    for (int i = 0; i < m_x.size(); ++i) {
        const QPoint p = pointPosition(i);
        const double d = std::hypot(double(p.x() - pos.x()), double(p.y() - pos.y()));
        if (d <= bestD) best = i, bestD = d;
    }
    return best;
}

void ScatterPlot::onMouseMove(QMouseEvent* event) {
    const int i = pointAt(event->pos());
    if (i < 0) {
        QToolTip::hideText();
        return;
    }
    QToolTip::showText(event->globalPosition().toPoint(),
                       tr("%1\n%2: %3\n%4: %5")
                           .arg(m_labels.value(i), m_plot->xAxis->label())
                           .arg(m_x[i], 0, 'g', 5)
                           .arg(m_plot->yAxis->label())
                           .arg(m_y[i], 0, 'g', 5),
                       m_plot);
}

void ScatterPlot::onMousePress(QMouseEvent* event) {
    if (event->button() != Qt::LeftButton) return;
    const int i = pointAt(event->pos());
    if (i < 0) return;
    setSelected(i);
    emit pointClicked(i);
}

} // namespace lcw
