#include "plots/plot_tools.h"

#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenu>
#include <QMessageBox>
#include <qcustomplot.h>

namespace lcw {

bool exportPlot(QCustomPlot* plot, const QString& path, int width, int height) {
    if (QFileInfo(path).suffix().compare(QStringLiteral("pdf"), Qt::CaseInsensitive) == 0)
        return plot->savePdf(path, width, height);
    return plot->savePng(path, width, height, 2.0);
}

void installPlotInteractions(QCustomPlot* plot, QWidget* owner, std::function<QString()> baseName,
                             std::function<void()> resetView) {
    plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    plot->setMouseTracking(true);
    plot->setContextMenuPolicy(Qt::CustomContextMenu);
    QObject::connect(plot, &QCustomPlot::mouseDoubleClick, owner, [resetView](QMouseEvent*) {
        if (resetView) resetView();
    });
    QObject::connect(
        plot, &QWidget::customContextMenuRequested, owner,
        [plot, owner, baseName, resetView](const QPoint& pos) {
            QMenu menu(owner);
            auto exportTo = [plot, owner, baseName](const QString& filter, const QString& suffix) {
                QString base = baseName ? baseName() : QString();
                if (base.isEmpty()) base = QStringLiteral("plot");
                QString path = QFileDialog::getSaveFileName(
                    owner, QObject::tr("Export Plot"), base + QLatin1Char('.') + suffix, filter);
                if (path.isEmpty()) return;
                if (QFileInfo(path).suffix().isEmpty()) path += QLatin1Char('.') + suffix;
                if (!exportPlot(plot, path))
                    QMessageBox::critical(
                        owner, QObject::tr("Export Plot"),
                        QObject::tr("Could not write %1.").arg(QDir::toNativeSeparators(path)));
            };
            if (resetView) menu.addAction(QObject::tr("Reset View"), owner, resetView);
            menu.addSeparator();
            menu.addAction(QObject::tr("Export as PNG…"), owner, [=] {
                exportTo(QObject::tr("PNG images (*.png)"), QStringLiteral("png"));
            });
            menu.addAction(QObject::tr("Export as PDF…"), owner, [=] {
                exportTo(QObject::tr("PDF documents (*.pdf)"), QStringLiteral("pdf"));
            });
            menu.exec(plot->mapToGlobal(pos));
        });
}

} // namespace lcw
