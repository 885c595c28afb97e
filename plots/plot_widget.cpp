#include "plots/plot_widget.h"

#include "plots/plot_style.h"
#include "plots/plot_tools.h"

#include <QEvent>
#include <qcustomplot.h>

namespace lcw {

PlotWidget::PlotWidget(QWidget* parent, const QString& exportName)
    : QWidget(parent), m_plot(new QCustomPlot(this)), m_exportName(exportName) {
    embedPlotWithTitle(m_plot, this);
    installPlotInteractions(
        m_plot, this, [this] { return m_title.isEmpty() ? m_exportName : m_title; },
        [this] { resetView(); });
    connect(m_plot, &QCustomPlot::mouseMove, this, &PlotWidget::onMouseMove);
}

void PlotWidget::setTitle(const QString& title) {
    m_title = title;
    setPlotTitle(m_plot, title);
}

bool PlotWidget::exportImage(const QString& path, int width, int height) {
    return exportPlot(m_plot, path, width, height);
}

void PlotWidget::changeEvent(QEvent* event) {
    QWidget::changeEvent(event);
    if (event->type() == QEvent::PaletteChange) onPaletteChange();
}

void PlotWidget::onPaletteChange() {
    applyPalette();
    rebuild();
}

void PlotWidget::applyPalette() {
    applyPlotPalette(m_plot, palette());
}

void PlotWidget::onMouseMove(QMouseEvent*) {}

} // namespace lcw
