#include "plots/plot_style.h"

#include <qcustomplot.h>

namespace lcw {

bool isDarkPalette(const QPalette& palette) {
    return palette.color(QPalette::Window).lightness() < 128;
}

void applyPlotPalette(QCustomPlot* plot, const QPalette& palette) {
    const bool dark = isDarkPalette(palette);
    const QColor base = palette.color(QPalette::Base);
    const QColor text = palette.color(QPalette::Text);
    QColor axis = text;
    axis.setAlpha(dark ? 150 : 170);
    QColor grid = text;
    grid.setAlpha(dark ? 40 : 32);

    plot->setBackground(base);
    for (QCPAxisRect* rect : plot->axisRects()) {
        for (QCPAxis* ax : rect->axes()) {
            ax->setBasePen(QPen(axis, 1));
            ax->setTickPen(QPen(axis, 1));
            ax->setSubTickPen(QPen(axis, 1));
            ax->setTickLabelColor(text);
            ax->setLabelColor(text);
            ax->grid()->setPen(QPen(grid, 1, Qt::DashLine));
            ax->grid()->setZeroLinePen(Qt::NoPen);
        }
    }
    plot->legend->setTextColor(text);
    for (QCPLayoutElement* e : plot->plotLayout()->elements(true))
        if (auto* t = qobject_cast<QCPTextElement*>(e)) t->setTextColor(text);
    plot->replot(QCustomPlot::rpQueuedReplot);
}

QVector<QColor> seriesColors(const QPalette& palette) {
    QVector<QColor> c = {QColor(0x4C, 0x72, 0xB0), QColor(0xDD, 0x84, 0x52),
                         QColor(0x55, 0xA8, 0x68), QColor(0xC4, 0x4E, 0x52),
                         QColor(0x81, 0x72, 0xB3), QColor(0x93, 0x78, 0x60)};
    if (isDarkPalette(palette))
        for (QColor& col : c) col = col.lighter(135);
    return c;
}

} // namespace lcw
