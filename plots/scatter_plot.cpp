#include "plots/scatter_plot.h"

#include "plots/plot_style.h"
#include "plots/plot_tools.h"

#include <QToolTip>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>

namespace lcw {

namespace {
constexpr double kHitPixels = 8.0;

/// Log ticks that stay readable over less than two decades (sizes of one model's
/// configurations): QCustomPlot's log ticker falls back to evenly spaced linear ticks there,
/// which crowd at the top of a log axis; this one puts them at 1, 2, 5 × 10^k (or 1..9 × 10^k
/// when that gives too few).
class ReadableLogTicker : public QCPAxisTickerLog {
protected:
    QVector<double> createTickVector(double tickStep, const QCPRange& range) override {
        m_readable = range.lower > 0 && range.upper > range.lower &&
                     std::log10(range.upper / range.lower) < 1.6;
        if (!m_readable) return QCPAxisTickerLog::createTickVector(tickStep, range);
        for (const QVector<double>& mantissas :
             {QVector<double>{1, 2, 5}, QVector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
            QVector<double> t;
            for (int e = int(std::floor(std::log10(range.lower))) - 1;
                 e <= int(std::ceil(std::log10(range.upper))); ++e)
                for (double m : mantissas) {
                    const double v = m * std::pow(10.0, e);
                    if (v >= range.lower && v <= range.upper) t << v;
                }
            if (t.size() >= 3 || mantissas.size() > 3) return t;
        }
        return {};
    }
    QVector<double> createSubTickVector(int subTickCount, const QVector<double>& ticks) override {
        return m_readable ? QVector<double>() // uneven steps: no evenly spaced sub-ticks
                          : QCPAxisTickerLog::createSubTickVector(subTickCount, ticks);
    }

private:
    bool m_readable = false;
};

void setReadableLogAxis(QCPAxis* axis, bool log) {
    setLogAxis(axis, log);
    if (log) axis->setTicker(QSharedPointer<ReadableLogTicker>::create());
}
} // namespace

ScatterPlot::ScatterPlot(QWidget* parent) : PlotWidget(parent, QStringLiteral("pareto")) {
    connect(m_plot, &QCustomPlot::mousePress, this, &ScatterPlot::onMousePress);
    // After every layout (first show, resize, zoom, pan): the labels' pixel offsets.
    connect(m_plot, &QCustomPlot::afterLayout, this, &ScatterPlot::layoutLabels);
    applyPalette();
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

void ScatterPlot::setAxisLabels(const QString& x, const QString& y) {
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void ScatterPlot::setSelected(int index) {
    m_selected = index >= 0 && index < int(m_x.size()) ? index : -1;
    rebuild();
}

void ScatterPlot::setLogX(bool on) {
    if (on == m_logX) return;
    m_logX = on;
    setReadableLogAxis(m_plot->xAxis, on);
    rebuild();
    resetView();
}

void ScatterPlot::setLogY(bool on) {
    if (on == m_logY) return;
    m_logY = on;
    setReadableLogAxis(m_plot->yAxis, on);
    rebuild();
    resetView();
}

double ScatterPlot::drawnX(int i) const {
    return m_logX && !(m_x[i] > 0) ? m_floorX : m_x[i];
}

double ScatterPlot::drawnY(int i) const {
    return m_logY && !(m_y[i] > 0) ? m_floorY : m_y[i];
}

QString ScatterPlot::labelText(int index) const {
    return index >= 0 && index < m_labelItems.size() ? m_labelItems[index]->text() : QString();
}

QVector<QRectF> ScatterPlot::labelRects() const {
    QVector<QRectF> out;
    for (const QCPItemText* t : m_labelItems)
        out << QRectF(t->topLeft->pixelPosition(), t->bottomRight->pixelPosition()).normalized();
    return out;
}

void ScatterPlot::rebuild() {
    m_plot->clearGraphs();
    m_plot->clearItems();
    m_labelItems.clear();
    m_anchors.clear();
    m_leaders.clear();
    // Log axes: values ≤ 0 (the original's KLD of 0) sit on a floor a decade under the
    // smallest positive value.
    auto floorOf = [](const QVector<double>& v) {
        double lo = INFINITY;
        for (double x : v)
            if (x > 0) lo = std::min(lo, x);
        return std::isfinite(lo) ? lo / 10.0 : 1e-3;
    };
    m_floorX = floorOf(m_x);
    m_floorY = floorOf(m_y);
    applyPlotPalette(m_plot, palette());
    const QVector<QColor> colors = seriesColors(palette());
    const QColor text = palette().color(QPalette::Text);
    if (!m_front.isEmpty()) {
        QCPGraph* g = m_plot->addGraph();
        QVector<double> fx, fy;
        for (int i : m_front)
            if (i >= 0 && i < m_x.size()) fx << drawnX(i), fy << drawnY(i);
        g->setData(fx, fy, true);
        QPen pen(colors.value(1, Qt::red), 1.5, Qt::DashLine);
        g->setPen(pen);
        g->setName(tr("Pareto front"));
    }
    QCPGraph* pts = m_plot->addGraph();
    pts->setLineStyle(QCPGraph::lsNone);
    pts->setScatterStyle(
        QCPScatterStyle(QCPScatterStyle::ssCircle, colors.value(0), colors.value(0), 9));
    QVector<double> dx, dy, zx, zy; // drawn points; those on a log axis's floor
    for (int i = 0; i < m_x.size(); ++i) {
        const bool floored = drawnX(i) != m_x[i] || drawnY(i) != m_y[i];
        (floored ? zx : dx) << drawnX(i);
        (floored ? zy : dy) << drawnY(i);
    }
    pts->setData(dx, dy); // unsorted: QCustomPlot sorts by key internally
    if (!zx.isEmpty()) {
        QCPGraph* z = m_plot->addGraph();
        z->setLineStyle(QCPGraph::lsNone);
        z->setScatterStyle(
            QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(colors.value(0), 1.5), Qt::NoBrush, 9));
        z->setData(zx, zy);
    }
    for (int i = 0; i < m_x.size(); ++i) {
        // The label hangs off an invisible anchor at the point: pixel offsets chosen by
        // layoutLabels() keep it beside its point through zoom and pan.
        auto* anchor = new QCPItemTracer(m_plot);
        anchor->setStyle(QCPItemTracer::tsNone);
        anchor->position->setCoords(drawnX(i), drawnY(i));
        auto* leader = new QCPItemLine(m_plot);
        QPen lp(text, 0.8);
        lp.setColor(QColor(text.red(), text.green(), text.blue(), 110));
        leader->setPen(lp);
        leader->setVisible(false);
        auto* label = new QCPItemText(m_plot);
        label->position->setParentAnchor(anchor->position);
        label->position->setType(QCPItemPosition::ptAbsolute);
        label->position->setCoords(6, -4);
        label->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
        label->setPadding(QMargins(1, 0, 1, 0));
        QString t = m_labels.value(i);
        if (m_logY && !(m_y[i] > 0))
            t += tr(" (%1 = %2)")
                     .arg(m_plot->yAxis->label().section(QLatin1Char(' '), 0, 0))
                     .arg(m_y[i], 0, 'g', 3);
        else if (m_logX && !(m_x[i] > 0))
            t += tr(" (%1 = %2)")
                     .arg(m_plot->xAxis->label().section(QLatin1Char(' '), 0, 0))
                     .arg(m_x[i], 0, 'g', 3);
        label->setText(t);
        label->setColor(text);
        QFont f = font();
        f.setBold(i == m_selected);
        label->setFont(f);
        leader->start->setParentAnchor(anchor->position);
        leader->start->setType(QCPItemPosition::ptAbsolute);
        leader->start->setCoords(0, 0);
        leader->end->setParentAnchor(label->position);
        leader->end->setType(QCPItemPosition::ptAbsolute);
        leader->end->setCoords(0, 0);
        m_anchors << anchor;
        m_leaders << leader;
        m_labelItems << label;
    }
    if (m_selected >= 0) {
        QCPGraph* sel = m_plot->addGraph();
        sel->setLineStyle(QCPGraph::lsNone);
        sel->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle,
                                             QPen(colors.value(3, Qt::red), 2.5), Qt::NoBrush, 15));
        sel->setData({drawnX(m_selected)}, {drawnY(m_selected)});
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void ScatterPlot::layoutLabels() {
    const int n = int(m_labelItems.size());
    if (n == 0) return;
    const QRectF area = m_plot->axisRect()->rect();
    QVector<QPointF> px(n);
    for (int i = 0; i < n; ++i)
        px[i] =
            QPointF(m_plot->xAxis->coordToPixel(drawnX(i)), m_plot->yAxis->coordToPixel(drawnY(i)));
    // Obstacles: every point's marker, then every label placed so far.
    QVector<QRectF> taken;
    for (const QPointF& p : px) taken << QRectF(p.x() - 5, p.y() - 5, 10, 10);
    auto freeAt = [&](const QRectF& r) {
        for (const QRectF& o : taken)
            if (o.intersects(r)) return false;
        return true;
    };
    // Top to bottom, then left to right: neighbours settle in reading order.
    QVector<int> order(n);
    for (int i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        return px[a].y() != px[b].y() ? px[a].y() < px[b].y() : px[a].x() < px[b].x();
    });
    for (int i : order) {
        QCPItemText* t = m_labelItems[i];
        const QFontMetricsF fm(t->font());
        const QSizeF sz(fm.horizontalAdvance(t->text()) + 4, fm.height());
        const double w = sz.width(), h = sz.height();
        // Candidate top-left corners relative to the point: beside it (right, left; above,
        // below), then stepping away vertically, then further out horizontally.
        QVector<QPointF> cand = {{7, -h - 1}, {7, 1}, {-w - 7, -h - 1}, {-w - 7, 1}};
        for (int k = 1; k <= 12; ++k)
            for (double sx : {7.0, -w - 7})
                for (double sgn : {-1.0, 1.0})
                    cand << QPointF(sx, sgn < 0 ? -h - 1 - k * (h + 2) : 1 + k * (h + 2));
        for (int k = 1; k <= 4; ++k)
            for (double sgn : {-1.0, 1.0}) cand << QPointF(7 + k * 30, sgn < 0 ? -h - 1 : 1);
        QPointF best = cand.front();
        bool found = false;
        for (int pass = 0; pass < 2 && !found; ++pass)
            for (const QPointF& c : cand) {
                const QRectF r(px[i] + c, sz);
                // First pass: inside the plot area; second: anywhere free.
                if ((pass == 1 || area.contains(r)) && freeAt(r)) {
                    best = c;
                    found = true;
                    break;
                }
            }
        taken << QRectF(px[i] + best, sz);
        t->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
        t->position->setCoords(best.x(), best.y());
        // A label away from its point gets a line to it (to the nearer vertical edge's middle).
        const bool away = best.y() < -h - 2 || best.y() > 2 || best.x() > 8 || best.x() < -w - 8;
        QCPItemLine* l = m_leaders[i];
        l->setVisible(away);
        l->end->setCoords(best.x() < 0 ? w : 0, h / 2);
    }
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
        // Log axes: over the drawn values (the floor included), with room in ratios.
        auto logRange = [this](bool isX) {
            double lo = INFINITY, hi = 0;
            for (int i = 0; i < m_x.size(); ++i) {
                const double v = isX ? drawnX(i) : drawnY(i);
                lo = std::min(lo, v);
                hi = std::max(hi, v);
            }
            if (!(hi > 0)) return QCPRange(0.1, 10);
            const double span = std::max(hi / lo, 1.5);
            return isX ? QCPRange(lo / std::pow(span, 0.05), hi * std::pow(span, 0.3))
                       : QCPRange(lo / std::pow(span, 0.1), hi * std::pow(span, 0.15));
        };
        if (m_logX) m_plot->xAxis->setRange(logRange(true));
        if (m_logY) m_plot->yAxis->setRange(logRange(false));
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QPoint ScatterPlot::pointPosition(int index) const {
    if (index < 0 || index >= m_x.size()) return {};
    return QPoint(int(std::lround(m_plot->xAxis->coordToPixel(drawnX(index)))),
                  int(std::lround(m_plot->yAxis->coordToPixel(drawnY(index)))));
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
