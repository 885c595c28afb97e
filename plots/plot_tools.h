#pragma once
/// \file
/// Interaction shared by the statistics plots: drag to pan, wheel to zoom, double-click to
/// reset the view, a context menu that exports PNG/PDF, and hover tooltips.
#include <QColor>
#include <QString>
#include <QVector>

#include <functional>

class QCPAbstractPlottable;
class QCPAxis;
class QCustomPlot;
class QMenu;
class QWidget;

namespace lcw {

/// Turns on pan (drag) and zoom (wheel) on both axes, double-click calls `resetView`, and the
/// right-click menu offers "Reset View", "Export as PNG…" and "Export as PDF…" (file names
/// start with `baseName()`). `owner` parents the dialogs.
void installPlotInteractions(QCustomPlot* plot, QWidget* owner, std::function<QString()> baseName,
                             std::function<void()> resetView);

/// Coalesces `plot`'s resizes: QCustomPlot renders all its layers again on every resize event,
/// and the first layout of a window resizes each plot several times in one turn of the event
/// loop. Instead the plot is laid out and rendered once at its final size, when it next paints
/// (or in the next turn, when visible); a plot in a hidden tab is not rendered at all until
/// shown. embedPlotWithTitle() installs it.
void coalescePlotResizes(QCustomPlot* plot);

/// Puts `plot` into `owner` filling it, with the minimum sizes the statistics plots use, and adds
/// an (empty) bold title row on top of the plot layout; setPlotTitle() changes its text.
void embedPlotWithTitle(QCustomPlot* plot, QWidget* owner);
/// Sets the text of the title row added by embedPlotWithTitle() and replots.
void setPlotTitle(QCustomPlot* plot, const QString& title);

/// Switches a value axis between linear and logarithmic scale (with the matching ticker).
void setLogAxis(QCPAxis* axis, bool log);

/// True when this build writes SVG (Qt Svg was found at configure time).
bool svgExportAvailable();

/// Adds "Export as PNG…", "Export as PDF…" (and "Export as SVG…" when available) and "Export Data
/// as CSV…" to `menu`: a save
/// dialog (file name starting with `baseName`, "plot" when empty), then exportPlot(); failures are
/// reported in a message box.
void addExportActions(QMenu& menu, QCustomPlot* plot, QWidget* owner, const QString& baseName,
                      bool enabled = true);

/// The data the plot shows as CSV text: one line per point of every visible plottable with data
/// (graphs and curves: x, y; bars and histogram bins: the bar's key and value; heat maps: one
/// line per cell with x, y and value). Columns: series,x,y (+ x_label / y_label when that axis
/// has text tick labels, + value when there is a heat map). Bars drawn as impulses keep their
/// true values (not the clamped drawn ones).
QString plotDataCsv(QCustomPlot* plot);
/// Writes plotDataCsv() atomically (QSaveFile). Returns false and sets `error` on failure.
bool exportPlotData(QCustomPlot* plot, const QString& path, QString* error = nullptr);

/// Writes the plot as PNG (2× pixel ratio), PDF or SVG, chosen by the file suffix (".pdf",
/// ".svg"; SVG only when built with Qt Svg, see svgExportAvailable()). Size 0 means the widget's
/// size. Returns false on failure.
bool exportPlot(QCustomPlot* plot, const QString& path, int width = 0, int height = 0);

/// Adds one value per key as bars: QCPBars (fill not antialiased: bars are axis-aligned) while
/// there are at most `maxBars` of them, otherwise an impulse graph (QCPGraph, lsImpulse, one
/// line from `base` per entry, adaptively sampled to about one line per pixel column, its pen as
/// wide as an entry on screen at every replot), which costs one batch of lines instead of one
/// polygon per bar and looks the same. Keys must be ascending and evenly spaced by `width`; a
/// zero draws nothing, so a second series can highlight some entries by being zero elsewhere.
/// `base` is where bars start (0, or just under one count on a log axis).
QCPAbstractPlottable* addBarSeries(QCPAxis* keyAxis, QCPAxis* valueAxis,
                                   const QVector<double>& keys, const QVector<double>& values,
                                   double width, const QColor& color, double base = 0.0,
                                   int maxBars = 64);

} // namespace lcw
