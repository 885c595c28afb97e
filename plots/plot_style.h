#pragma once
/// \file
/// Colours QCustomPlot widgets from a Qt palette, so plots follow the light and dark themes.
#include <QColor>
#include <QPalette>
#include <QVector>

class QCustomPlot;

namespace lcw {

/// True when the palette's window colour is dark.
bool isDarkPalette(const QPalette& palette);

/// Background from Base; axes, ticks, labels, legend and title text from Text; a faint dashed
/// grid. Data series keep their own colours. Queues a replot.
void applyPlotPalette(QCustomPlot* plot, const QPalette& palette);

/// The colours of data series (the same hues in both themes, brighter on dark backgrounds).
QVector<QColor> seriesColors(const QPalette& palette);

} // namespace lcw
