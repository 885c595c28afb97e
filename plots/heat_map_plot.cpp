#include "plots/heat_map_plot.h"

#include "plots/plot_style.h"

#include <QToolTip>
#include <qcustomplot.h>

#include <cmath>
#include <limits>

namespace lcw {

HeatMapPlot::HeatMapPlot(QWidget* parent) : PlotWidget(parent) {
    m_plot->xAxis->grid()->setVisible(false);
    m_plot->yAxis->grid()->setVisible(false);
    m_plot->yAxis->setRangeReversed(true); // row 0 at the top, like a table

    m_map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
    m_scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(1, 1, m_scale);
    m_scale->setType(QCPAxis::atRight);
    m_scale->setBarWidth(12);
    m_map->setColorScale(m_scale);
    // Viridis: perceptually uniform, readable in both themes and in greyscale print.
    QCPColorGradient viridis;
    viridis.clearColorStops();
    viridis.setColorStopAt(0.0, QColor(0x44, 0x01, 0x54));
    viridis.setColorStopAt(0.25, QColor(0x3b, 0x52, 0x8b));
    viridis.setColorStopAt(0.5, QColor(0x21, 0x90, 0x8d));
    viridis.setColorStopAt(0.75, QColor(0x5d, 0xc8, 0x63));
    viridis.setColorStopAt(1.0, QColor(0xfd, 0xe7, 0x25));
    viridis.setNanHandling(QCPColorGradient::nhTransparent);
    m_map->setGradient(viridis);
    m_map->setInterpolate(false);
    // Whole cells: the first and last rows/columns are drawn at full size.
    m_map->setTightBoundary(false);
    // The scale's height follows the axis rect.
    auto* group = new QCPMarginGroup(m_plot);
    m_plot->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, group);
    m_scale->setMarginGroup(QCP::msBottom | QCP::msTop, group);

    applyPalette();
    rebuild();
}

void HeatMapPlot::setMatrix(int columns, int rows, const QVector<double>& values) {
    m_cols = std::max(0, columns);
    m_rows = std::max(0, rows);
    m_values = values;
    m_values.resize(qsizetype(m_cols) * m_rows);
    if (m_highlight >= m_rows) m_highlight = -1;
    rebuild();
}

void HeatMapPlot::clear() {
    setMatrix(0, 0, {});
}

void HeatMapPlot::setAxisLabels(const QString& x, const QString& y, const QString& colorScale) {
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
    m_scale->axis()->setLabel(colorScale);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void HeatMapPlot::setRowLabels(const QStringList& labels) {
    m_rowLabels = labels;
    rebuild();
}

void HeatMapPlot::setColumnGroup(int n) {
    m_group = std::max(0, n);
    rebuild();
}

void HeatMapPlot::setHighlightedRow(int row) {
    m_highlight = row >= 0 && row < m_rows ? row : -1;
    rebuild();
}

double HeatMapPlot::value(int column, int row) const {
    if (column < 0 || row < 0 || column >= m_cols || row >= m_rows)
        return std::numeric_limits<double>::quiet_NaN();
    return m_values[qsizetype(row) * m_cols + column];
}

void HeatMapPlot::rebuild() {
    m_plot->clearItems();
    const QColor text = palette().color(QPalette::Text);
    m_map->data()->setSize(std::max(1, m_cols), std::max(1, m_rows));
    // Cell centres at integer coordinates.
    m_map->data()->setRange(QCPRange(0, std::max(0, m_cols - 1)),
                            QCPRange(0, std::max(0, m_rows - 1)));
    m_map->data()->fill(std::numeric_limits<double>::quiet_NaN());
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int r = 0; r < m_rows; ++r)
        for (int c = 0; c < m_cols; ++c) {
            const double v = m_values[qsizetype(r) * m_cols + c];
            m_map->data()->setCell(c, r, v);
            if (std::isfinite(v)) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
            }
        }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi == lo) hi = lo + 1;
    m_map->setDataRange(QCPRange(lo, hi));
    m_map->setVisible(m_cols > 0 && m_rows > 0);

    auto ticker = QSharedPointer<QCPAxisTickerText>::create();
    for (int r = 0; r < m_rows; ++r)
        ticker->addTick(r, r < m_rowLabels.size() ? m_rowLabels[r] : QString::number(r));
    m_plot->yAxis->setTicker(ticker);
    m_plot->yAxis->setSubTicks(false);

    if (m_group > 0) {
        QColor c = palette().color(QPalette::Base);
        c.setAlpha(230);
        for (int g = m_group; g < m_cols; g += m_group) {
            auto* line = new QCPItemStraightLine(m_plot);
            line->point1->setCoords(g - 0.5, 0);
            line->point2->setCoords(g - 0.5, 1);
            line->setPen(QPen(c, 2));
        }
    }
    if (m_highlight >= 0) {
        auto* rect = new QCPItemRect(m_plot);
        rect->topLeft->setCoords(-0.5, m_highlight - 0.5);
        rect->bottomRight->setCoords(m_cols - 0.5, m_highlight + 0.5);
        QColor c = isDarkPalette(palette()) ? QColor(0xff, 0x8a, 0x80) : QColor(0xd6, 0x27, 0x28);
        rect->setPen(QPen(c, 2.5));
        rect->setBrush(Qt::NoBrush);
    }
    m_scale->axis()->setBasePen(QPen(text));
    m_scale->axis()->setTickLabelColor(text);
    m_scale->axis()->setLabelColor(text);
    m_scale->axis()->setTickPen(QPen(text));
    m_scale->axis()->setSubTickPen(QPen(text));
    resetView();
}

void HeatMapPlot::resetView() {
    m_plot->xAxis->setRange(-0.5, std::max(1, m_cols) - 0.5);
    m_plot->yAxis->setRange(-0.5, std::max(1, m_rows) - 0.5);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QPoint HeatMapPlot::cellAt(const QPoint& plotPos) const {
    if (m_cols == 0 || !m_plot->axisRect()->rect().contains(plotPos)) return {-1, -1};
    const int c = int(std::lround(m_plot->xAxis->pixelToCoord(plotPos.x())));
    const int r = int(std::lround(m_plot->yAxis->pixelToCoord(plotPos.y())));
    if (c < 0 || r < 0 || c >= m_cols || r >= m_rows) return {-1, -1};
    return {c, r};
}

QString HeatMapPlot::tooltipFor(int column, int row) const {
    if (column < 0 || row < 0 || column >= m_cols || row >= m_rows) return {};
    const double v = value(column, row);
    if (m_tooltip) return m_tooltip(column, row, v);
    return tr("row %1, column %2: %3").arg(row).arg(column).arg(v, 0, 'g', 5);
}

void HeatMapPlot::onMouseMove(QMouseEvent* event) {
    const QPoint cell = cellAt(event->pos());
    if (cell.x() < 0) {
        QToolTip::hideText();
        return;
    }
    QToolTip::showText(event->globalPosition().toPoint(), tooltipFor(cell.x(), cell.y()), m_plot);
}

} // namespace lcw
