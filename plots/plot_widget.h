#pragma once
/// \file
/// PlotWidget: the shape shared by the statistics plots. It owns a QCustomPlot filling the
/// widget with a title row (embedPlotWithTitle), pan/zoom, double-click reset and the export
/// context menu (installPlotInteractions), routes hover moves to onMouseMove(), and follows
/// theme changes (the palette is applied again and the plot rebuilt). A derived plot sets up
/// its axes in its constructor, then calls applyPalette() (and usually rebuild()).
#include <QString>
#include <QWidget>

class QCustomPlot;
class QEvent;
class QMouseEvent;

namespace lcw {

class PlotWidget : public QWidget {
    Q_OBJECT
public:
    /// The title row's text; also the start of export file names.
    void setTitle(const QString& title);
    QString title() const { return m_title; }
    /// Writes the plot as PNG, PDF or SVG by the file suffix (see exportPlot()); size 0 means
    /// the widget's size. Returns false on failure.
    bool exportImage(const QString& path, int width = 0, int height = 0);
    /// The underlying plot, for styling beyond the derived plot's API.
    QCustomPlot* plot() const { return m_plot; }
    /// Back to the full data range (double-click and "Reset View" call it).
    virtual void resetView() = 0;

protected:
    /// Creates and embeds the plot and installs the interactions. `exportName` starts export
    /// file names while the title is empty ("plot" when both are empty).
    explicit PlotWidget(QWidget* parent = nullptr, const QString& exportName = {});

    /// On QEvent::PaletteChange calls onPaletteChange().
    void changeEvent(QEvent* event) override;
    /// Follows a theme change: by default applyPalette() then rebuild().
    virtual void onPaletteChange();
    /// Colours the plot from the widget's palette (applyPlotPalette()).
    void applyPalette();
    /// Draws the data again (after a data, option or palette change).
    virtual void rebuild() = 0;
    /// Hover over the plot (QCustomPlot::mouseMove); does nothing by default.
    virtual void onMouseMove(QMouseEvent* event);

    QCustomPlot* m_plot;
    QString m_title;

private:
    QString m_exportName;
};

} // namespace lcw
