#include "plots/plot_tools.h"

#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenu>
#include <QMessageBox>
#include <QVBoxLayout>
#include <qcustomplot.h>
#ifdef LCW_HAVE_SVG
#include <QSvgGenerator>
#endif

namespace lcw {

void embedPlotWithTitle(QCustomPlot* plot, QWidget* owner) {
    auto* lay = new QVBoxLayout(owner);
    lay->setContentsMargins(0, 0, 0, 0);
    lay->addWidget(plot);
    owner->setMinimumSize(240, 160);
    // An explicit minimum: QCustomPlot's size hint grows with its title's width otherwise.
    plot->setMinimumSize(200, 140);
    plot->plotLayout()->insertRow(0);
    QFont f = owner->font();
    f.setBold(true);
    plot->plotLayout()->addElement(0, 0, new QCPTextElement(plot, QString(), f));
    plot->plotLayout()->setRowStretchFactor(0, 0.001);
}

void setPlotTitle(QCustomPlot* plot, const QString& title) {
    if (auto* t = qobject_cast<QCPTextElement*>(plot->plotLayout()->element(0, 0)))
        t->setText(title);
    plot->replot(QCustomPlot::rpQueuedReplot);
}

bool svgExportAvailable() {
#ifdef LCW_HAVE_SVG
    return true;
#else
    return false;
#endif
}

bool exportPlot(QCustomPlot* plot, const QString& path, int width, int height) {
    const QString suffix = QFileInfo(path).suffix().toLower();
    if (suffix == QStringLiteral("pdf")) return plot->savePdf(path, width, height);
    if (suffix == QStringLiteral("svg")) {
#ifdef LCW_HAVE_SVG
        const int w = width > 0 ? width : plot->width(), h = height > 0 ? height : plot->height();
        // Render to a temporary file first so a failed export leaves no partial file behind.
        const QString tmp = path + QStringLiteral(".tmp");
        {
            QSvgGenerator gen;
            gen.setFileName(tmp);
            gen.setSize(QSize(w, h));
            gen.setViewBox(QRect(0, 0, w, h));
            gen.setTitle(QFileInfo(path).completeBaseName());
            QCPPainter painter;
            if (!painter.begin(&gen)) return false;
            plot->toPainter(&painter, w, h);
            painter.end();
        }
        QFile::remove(path);
        return QFile::rename(tmp, path);
#else
        return false;
#endif
    }
    return plot->savePng(path, width, height, 2.0);
}

void addExportActions(QMenu& menu, QCustomPlot* plot, QWidget* owner, const QString& baseName,
                      bool enabled) {
    const QString base = baseName.isEmpty() ? QStringLiteral("plot") : baseName;
    auto exportTo = [plot, owner, base](const QString& filter, const QString& suffix) {
        QString path = QFileDialog::getSaveFileName(owner, QObject::tr("Export Plot"),
                                                    base + QLatin1Char('.') + suffix, filter);
        if (path.isEmpty()) return;
        if (QFileInfo(path).suffix().isEmpty()) path += QLatin1Char('.') + suffix;
        if (!exportPlot(plot, path))
            QMessageBox::critical(
                owner, QObject::tr("Export Plot"),
                QObject::tr("Could not write %1.").arg(QDir::toNativeSeparators(path)));
    };
    QAction* png = menu.addAction(QObject::tr("Export as PNG…"), owner, [=] {
        exportTo(QObject::tr("PNG images (*.png)"), QStringLiteral("png"));
    });
    QAction* pdf = menu.addAction(QObject::tr("Export as PDF…"), owner, [=] {
        exportTo(QObject::tr("PDF documents (*.pdf)"), QStringLiteral("pdf"));
    });
    png->setEnabled(enabled);
    pdf->setEnabled(enabled);
    if (svgExportAvailable()) {
        QAction* svg = menu.addAction(QObject::tr("Export as SVG…"), owner, [=] {
            exportTo(QObject::tr("SVG images (*.svg)"), QStringLiteral("svg"));
        });
        svg->setEnabled(enabled);
    }
}

void installPlotInteractions(QCustomPlot* plot, QWidget* owner, std::function<QString()> baseName,
                             std::function<void()> resetView) {
    plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    plot->setMouseTracking(true);
    plot->setContextMenuPolicy(Qt::CustomContextMenu);
    QObject::connect(plot, &QCustomPlot::mouseDoubleClick, owner, [resetView](QMouseEvent*) {
        if (resetView) resetView();
    });
    QObject::connect(plot, &QWidget::customContextMenuRequested, owner,
                     [plot, owner, baseName, resetView](const QPoint& pos) {
                         QMenu menu(owner);
                         if (resetView) menu.addAction(QObject::tr("Reset View"), owner, resetView);
                         menu.addSeparator();
                         addExportActions(menu, plot, owner, baseName ? baseName() : QString());
                         menu.exec(plot->mapToGlobal(pos));
                     });
}

} // namespace lcw
