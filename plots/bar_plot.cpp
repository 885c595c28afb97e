#include "plots/bar_plot.h"

#include "plots/plot_tools.h"

#include "plots/plot_style.h"

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

namespace lcw {

namespace {
constexpr double kBarWidth = 0.72;
/// Above this many bars tick labels are rotated; above kMaxLabels only every k-th is written.
constexpr int kFlatLabels = 16;
constexpr int kMaxLabels = 48;

QVector<QColor> defaultPalette() {
    return {QColor(0x4C, 0x72, 0xB0), QColor(0xDD, 0x84, 0x52), QColor(0x55, 0xA8, 0x68),
            QColor(0xC4, 0x4E, 0x52), QColor(0x81, 0x72, 0xB3), QColor(0x93, 0x78, 0x60)};
}
} // namespace

BarPlot::BarPlot(QWidget* parent)
    : QWidget(parent), m_plot(new QCustomPlot(this)), m_palette(defaultPalette()) {
    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(0, 0, 0, 0);
    lay->addWidget(m_plot);
    setMinimumHeight(160);
    coalescePlotResizes(m_plot);

    m_plot->setMouseTracking(true);
    m_plot->setContextMenuPolicy(Qt::CustomContextMenu);
    m_plot->xAxis->grid()->setVisible(false);
    m_plot->yAxis->setNumberFormat(QStringLiteral("gb"));
    m_plot->xAxis->setTickLength(0, 3);
    m_plot->xAxis->setSubTicks(false);
    // The legend sits in its own row under the axis rect, laid out horizontally, so it never
    // covers bars.
    m_plot->legend->setVisible(false);
    m_plot->legend->setBorderPen(Qt::NoPen);
    m_plot->legend->setBrush(Qt::NoBrush);
    m_plot->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
    m_plot->legend->setMargins(QMargins(0, 0, 0, 0));
    m_plot->axisRect()->insetLayout()->take(m_plot->legend);
    m_legendRow = new QCPLayoutGrid;
    m_legendRow->setMargins(QMargins(5, 0, 5, 4));
    m_legendRow->addElement(0, 0, m_plot->legend);
    // An empty element to the right takes the spare width: the legend stays compact, left.
    m_legendRow->addElement(0, 1, new QCPLayoutElement(m_plot));
    m_legendRow->setColumnStretchFactor(0, 0.001);
    const int legendRowIndex = m_plot->plotLayout()->rowCount();
    m_plot->plotLayout()->addElement(legendRowIndex, 0, m_legendRow);
    // The axis rect takes all spare height; the legend row only what it needs.
    m_plot->plotLayout()->setRowStretchFactor(legendRowIndex, 0.001);
    m_plot->plotLayout()->setRowSpacing(0);

    connect(m_plot, &QCustomPlot::mouseMove, this, &BarPlot::onMouseMove);
    connect(m_plot, &QCustomPlot::mousePress, this, &BarPlot::onMousePress);
    connect(m_plot, &QWidget::customContextMenuRequested, this, &BarPlot::showContextMenu);
    applyPlotPalette(m_plot, palette());
    rebuild();
}

void BarPlot::changeEvent(QEvent* event) {
    QWidget::changeEvent(event);
    if (event->type() == QEvent::PaletteChange) applyPlotPalette(m_plot, palette());
}

void BarPlot::setBars(const QStringList& labels, const QVector<double>& values,
                      const QVector<int>& groups, const QStringList& groupNames) {
    m_labels = labels;
    m_values = values;
    // Keep labels and values the same length whatever the caller passed.
    while (m_labels.size() < m_values.size()) m_labels << QString();
    m_labels = m_labels.mid(0, m_values.size());
    m_groups = groups.size() == values.size() ? groups : QVector<int>(values.size(), 0);
    m_groupNames = groupNames;
    rebuild();
}

void BarPlot::clear() {
    setBars({}, {});
}

void BarPlot::setTitle(const QString& title) {
    m_title = title;
    rebuild();
}

void BarPlot::setValueAxisLabel(const QString& label) {
    m_plot->yAxis->setLabel(label);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void BarPlot::setPalette(const QVector<QColor>& colors) {
    m_palette = colors.isEmpty() ? defaultPalette() : colors;
    rebuild();
}

void BarPlot::rebuild() {
    m_plot->clearPlottables();

    // Title element in its own layout row above the axis rect (created once).
    QCPTextElement* titleElement = nullptr;
    if (m_plot->plotLayout()->rowCount() > 1)
        titleElement = qobject_cast<QCPTextElement*>(m_plot->plotLayout()->element(0, 0));
    if (!m_title.isEmpty() && !titleElement) {
        m_plot->plotLayout()->insertRow(0);
        m_plot->plotLayout()->setRowStretchFactor(0, 0.001);
        QFont f = font();
        f.setBold(true);
        titleElement = new QCPTextElement(m_plot, m_title, f);
        titleElement->setTextColor(palette().color(QPalette::Text));
        m_plot->plotLayout()->addElement(0, 0, titleElement);
    }
    if (titleElement) titleElement->setText(m_title);

    const int n = int(m_values.size());
    int maxGroup = 0;
    for (int g : m_groups) maxGroup = std::max(maxGroup, g);
    for (int g = 0; g <= maxGroup && n > 0; ++g) {
        QVector<double> keys, vals;
        for (int i = 0; i < n; ++i) {
            if (m_groups[i] != g) continue;
            keys << double(i);
            vals << m_values[i];
        }
        if (keys.isEmpty()) continue;
        auto* bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
        const QColor c = m_palette[g % m_palette.size()];
        bars->setWidth(kBarWidth);
        bars->setPen(QPen(c.darker(130), 1));
        QColor fill = c;
        fill.setAlpha(210);
        bars->setBrush(fill);
        bars->setData(keys, vals, true);
        bars->setName(g < m_groupNames.size() ? m_groupNames[g] : QString());
        if (g >= m_groupNames.size() || m_groupNames[g].isEmpty()) bars->removeFromLegend();
    }
    const bool legend = m_plot->legend->itemCount() > 1;
    m_plot->legend->setVisible(legend);
    m_legendRow->setVisible(legend);
    // Collapse the row when hidden (a hidden element still takes its minimum size otherwise).
    // Only the height: a zero maximum width would cap the whole layout column's width.
    m_legendRow->setMaximumSize(legend ? QSize(QWIDGETSIZE_MAX, QWIDGETSIZE_MAX)
                                       : QSize(QWIDGETSIZE_MAX, 0));

    auto ticker = QSharedPointer<QCPAxisTickerText>::create();
    const int step = n > kMaxLabels ? int(std::ceil(double(n) / kMaxLabels)) : 1;
    for (int i = 0; i < n; i += step) ticker->addTick(double(i), m_labels[i]);
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setTickLabelRotation(n > kFlatLabels ? -60.0 : 0.0);
    m_plot->xAxis->setRange(-0.6, std::max(0, n - 1) + 0.6);

    double lo = 0.0, hi = 0.0;
    for (double v : m_values) {
        if (!std::isfinite(v)) continue;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    if (hi == lo) hi = lo + 1.0;
    // Headroom above the tallest bar; bars start at zero so negative values stay visible.
    m_plot->yAxis->setRange(lo < 0 ? lo * 1.08 : 0.0, hi * 1.08);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int BarPlot::barAt(const QPoint& plotPos) const {
    if (m_values.isEmpty() || !m_plot->axisRect()->rect().contains(plotPos)) return -1;
    const double key = m_plot->xAxis->pixelToCoord(plotPos.x());
    const int idx = int(std::lround(key));
    if (idx < 0 || idx >= m_values.size() || std::fabs(key - idx) > kBarWidth / 2) return -1;
    return idx;
}

QString BarPlot::tooltipFor(int index) const {
    if (index < 0 || index >= m_values.size()) return {};
    if (m_tooltip) return m_tooltip(index, m_labels[index], m_values[index]);
    return QStringLiteral("%1: %2").arg(m_labels[index]).arg(m_values[index], 0, 'g', 6);
}

void BarPlot::onMouseMove(QMouseEvent* event) {
    const int idx = barAt(event->pos());
    if (idx < 0) {
        if (m_hovered >= 0) QToolTip::hideText();
        m_hovered = -1;
        return;
    }
    m_hovered = idx;
    QToolTip::showText(event->globalPosition().toPoint(), tooltipFor(idx), m_plot);
}

void BarPlot::onMousePress(QMouseEvent* event) {
    if (event->button() != Qt::LeftButton) return;
    if (const int idx = barAt(event->pos()); idx >= 0) emit barClicked(idx);
}

bool BarPlot::exportPng(const QString& path, int width, int height) {
    return m_plot->savePng(path, width, height, 2.0);
}

bool BarPlot::exportPdf(const QString& path, int width, int height) {
    return m_plot->savePdf(path, width, height);
}

void BarPlot::showContextMenu(const QPoint& pos) {
    QMenu menu(this);
    addExportActions(menu, m_plot, this, m_title, !m_values.isEmpty());
    menu.exec(m_plot->mapToGlobal(pos));
}

} // namespace lcw
