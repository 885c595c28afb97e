#include "plots/line_plot.h"

#include "plots/plot_tools.h"

#include "plots/plot_style.h"

#include <QDir>
#include <QEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenu>
#include <QMessageBox>
#include <QToolTip>
#include <QVBoxLayout>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace lcw {

namespace {
/// Hover snaps to the nearest point when it is within this many pixels (horizontally).
constexpr double kSnapPixels = 24.0;
} // namespace

LinePlot::LinePlot(QWidget* parent)
    : QWidget(parent), m_plot(new QCustomPlot(this)),
      m_refY(std::numeric_limits<double>::quiet_NaN()) {
    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(0, 0, 0, 0);
    lay->addWidget(m_plot);
    setMinimumHeight(140);
    coalescePlotResizes(m_plot);

    m_plot->setMouseTracking(true);
    m_plot->setContextMenuPolicy(Qt::CustomContextMenu);
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    m_plot->xAxis->setSubTicks(false);
    m_plot->yAxis->setNumberFormat(QStringLiteral("g"));
    m_plot->yAxis->setNumberPrecision(4);
    m_plot->legend->setVisible(false);

    m_graph = m_plot->addGraph();
    m_graph->setLineStyle(QCPGraph::lsLine);

    m_refLine = new QCPItemStraightLine(m_plot);
    m_refLine->setVisible(false);
    m_refLabel = new QCPItemText(m_plot);
    m_refLabel->setVisible(false);
    m_refLabel->position->setType(QCPItemPosition::ptPlotCoords);
    m_refLabel->setPositionAlignment(Qt::AlignRight | Qt::AlignBottom);
    m_refLabel->setClipToAxisRect(true);
    m_refLabel->setPadding(QMargins(2, 0, 4, 2));

    m_placeholder = new QCPItemText(m_plot);
    m_placeholder->position->setType(QCPItemPosition::ptAxisRectRatio);
    m_placeholder->position->setCoords(0.5, 0.5);
    m_placeholder->setPositionAlignment(Qt::AlignCenter);
    m_placeholder->setVisible(false);

    m_tracer = new QCPItemTracer(m_plot);
    m_tracer->setStyle(QCPItemTracer::tsCircle);
    m_tracer->setSize(8);
    m_tracer->setInterpolating(false);
    m_tracer->setVisible(false);

    connect(m_plot, &QCustomPlot::mouseMove, this, &LinePlot::onMouseMove);
    connect(m_plot, &QCustomPlot::mouseDoubleClick, this, [this] { resetZoom(); });
    connect(m_plot, &QWidget::customContextMenuRequested, this, &LinePlot::showContextMenu);
    restyle();
    resetZoom();
}

void LinePlot::restyle() {
    applyPlotPalette(m_plot, palette());
    const QPalette& pal = palette();
    const QColor line = seriesColors(pal).front();
    m_graph->setPen(QPen(line, 1.8));
    QColor fill = line;
    fill.setAlpha(28);
    m_graph->setBrush(fill);
    m_graph->setScatterStyle(QCPScatterStyle::ssNone);
    QColor ref = seriesColors(pal)[1];
    m_refLine->setPen(QPen(ref, 1.2, Qt::DashLine));
    m_refLabel->setColor(ref);
    QColor ph = pal.color(QPalette::Text);
    ph.setAlpha(140);
    m_placeholder->setColor(ph);
    m_tracer->setPen(QPen(line.darker(120), 1.5));
    m_tracer->setBrush(pal.color(QPalette::Base));
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void LinePlot::changeEvent(QEvent* event) {
    QWidget::changeEvent(event);
    if (event->type() == QEvent::PaletteChange) restyle();
}

void LinePlot::setData(const QVector<double>& x, const QVector<double>& y) {
    const qsizetype n = std::min(x.size(), y.size());
    m_x = x.mid(0, n);
    m_y = y.mid(0, n);
    m_graph->setData(m_x, m_y, true);
    // Markers on every point only while they stay readable.
    m_graph->setScatterStyle(n <= 40 ? QCPScatterStyle(QCPScatterStyle::ssDisc, 5)
                                     : QCPScatterStyle(QCPScatterStyle::ssNone));
    m_hovered = -1;
    m_tracer->setVisible(false);
    updatePlaceholder();
    resetZoom();
}

void LinePlot::addPoint(double x, double y) {
    m_x << x;
    m_y << y;
    m_graph->addData(x, y);
    if (m_x.size() == 41)
        m_graph->setScatterStyle(QCPScatterStyle::ssNone);
    else if (m_x.size() <= 40)
        m_graph->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, 5));
    updatePlaceholder();
    resetZoom();
}

void LinePlot::clear() {
    m_refY = std::numeric_limits<double>::quiet_NaN();
    m_refLine->setVisible(false);
    m_refLabel->setVisible(false);
    setData({}, {});
}

void LinePlot::setTitle(const QString& title) {
    m_title = title;
    QCPTextElement* titleElement = nullptr;
    if (m_plot->plotLayout()->rowCount() > 1)
        titleElement = qobject_cast<QCPTextElement*>(m_plot->plotLayout()->element(0, 0));
    if (!titleElement) {
        m_plot->plotLayout()->insertRow(0);
        m_plot->plotLayout()->setRowStretchFactor(0, 0.001);
        QFont f = font();
        f.setBold(true);
        titleElement = new QCPTextElement(m_plot, title, f);
        titleElement->setTextColor(palette().color(QPalette::Text));
        m_plot->plotLayout()->addElement(0, 0, titleElement);
    }
    titleElement->setText(title);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void LinePlot::setAxisLabels(const QString& xLabel, const QString& yLabel) {
    m_plot->xAxis->setLabel(xLabel);
    m_plot->yAxis->setLabel(yLabel);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void LinePlot::setReferenceLine(double y, const QString& label) {
    m_refY = y;
    const bool on = std::isfinite(y);
    m_refLine->setVisible(on);
    m_refLabel->setVisible(on && !label.isEmpty());
    if (on) {
        m_refLine->point1->setCoords(0.0, y);
        m_refLine->point2->setCoords(1.0, y);
        m_refLabel->setText(label);
    }
    resetZoom();
}

void LinePlot::setPlaceholderText(const QString& text) {
    m_placeholderText = text;
    m_placeholder->setText(text);
    updatePlaceholder();
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void LinePlot::updatePlaceholder() {
    m_placeholder->setVisible(m_x.isEmpty() && !m_placeholderText.isEmpty());
}

void LinePlot::resetZoom() {
    if (m_x.isEmpty()) {
        m_plot->xAxis->setRange(0.0, 1.0);
        m_plot->yAxis->setRange(0.0, 1.0);
    } else {
        double lo = std::numeric_limits<double>::infinity(), hi = -lo;
        for (double v : m_y) {
            if (!std::isfinite(v)) continue;
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
        if (std::isfinite(m_refY)) {
            lo = std::min(lo, m_refY);
            hi = std::max(hi, m_refY);
        }
        if (!std::isfinite(lo)) lo = 0.0, hi = 1.0;
        const double span = hi > lo ? hi - lo : std::max(1e-6, std::fabs(hi) * 0.1);
        // Room above for the reference line's label.
        const double top = m_refLabel->visible() ? 0.22 : 0.12;
        m_plot->yAxis->setRange(lo - span * 0.08, hi + span * top);
        const double x0 = m_x.front(), x1 = m_x.back();
        const double xs = x1 > x0 ? x1 - x0 : 1.0;
        m_plot->xAxis->setRange(x0 - xs * 0.02, x1 + xs * 0.02);
    }
    if (m_refLabel->visible())
        m_refLabel->position->setCoords(m_plot->xAxis->range().upper, m_refY);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int LinePlot::pointAt(const QPoint& plotPos) const {
    if (m_x.isEmpty() || !m_plot->axisRect()->rect().contains(plotPos)) return -1;
    const double key = m_plot->xAxis->pixelToCoord(plotPos.x());
    const auto it = std::lower_bound(m_x.begin(), m_x.end(), key);
    int best = -1;
    double bestDist = kSnapPixels;
    for (auto c : {it - 1, it}) {
        if (c < m_x.begin() || c >= m_x.end()) continue;
        const double d = std::fabs(m_plot->xAxis->coordToPixel(*c) - plotPos.x());
        if (d <= bestDist) {
            bestDist = d;
            best = int(c - m_x.begin());
        }
    }
    return best;
}

QString LinePlot::tooltipFor(int index) const {
    if (index < 0 || index >= m_x.size()) return {};
    if (m_tooltip) return m_tooltip(index, m_x[index], m_y[index]);
    return QStringLiteral("%1: %2").arg(m_x[index], 0, 'g', 6).arg(m_y[index], 0, 'g', 6);
}

void LinePlot::onMouseMove(QMouseEvent* event) {
    const int idx = pointAt(event->pos());
    if (idx < 0) {
        if (m_hovered >= 0) {
            QToolTip::hideText();
            m_tracer->setVisible(false);
            m_plot->replot(QCustomPlot::rpQueuedReplot);
        }
        m_hovered = -1;
        return;
    }
    if (idx != m_hovered) {
        m_hovered = idx;
        m_tracer->position->setCoords(m_x[idx], m_y[idx]);
        m_tracer->setVisible(true);
        m_plot->replot(QCustomPlot::rpQueuedReplot);
    }
    QToolTip::showText(event->globalPosition().toPoint(), tooltipFor(idx), m_plot);
}

bool LinePlot::exportPng(const QString& path, int width, int height) {
    return m_plot->savePng(path, width, height, 2.0);
}

bool LinePlot::exportPdf(const QString& path, int width, int height) {
    return m_plot->savePdf(path, width, height);
}

void LinePlot::showContextMenu(const QPoint& pos) {
    QMenu menu(this);
    menu.addAction(tr("Reset Zoom"), this, &LinePlot::resetZoom);
    menu.addSeparator();
    addExportActions(menu, m_plot, this, m_title, !m_x.isEmpty());
    menu.exec(m_plot->mapToGlobal(pos));
}

} // namespace lcw
