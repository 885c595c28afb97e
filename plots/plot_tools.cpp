#include "plots/plot_tools.h"

#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenu>
#include <QMessageBox>
#include <QPointer>
#include <QSaveFile>
#include <QVBoxLayout>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>
#ifdef LCW_HAVE_SVG
#include <QSvgGenerator>
#endif

namespace lcw {

namespace {
/// Event filter behind coalescePlotResizes(), a child of its plot.
class ResizeCoalescer final : public QObject {
public:
    explicit ResizeCoalescer(QCustomPlot* plot) : QObject(plot), m_plot(plot) {}

    bool eventFilter(QObject* watched, QEvent* e) override {
        if (watched != m_plot) return false;
        switch (e->type()) {
        case QEvent::Resize:
            m_pending = true;
            if (m_plot->isVisible()) post();
            return true; // QCustomPlot::resizeEvent would replot now
        case QEvent::Show:
            if (m_pending) post();
            return false;
        case QEvent::Paint:
            flush(); // before QCustomPlot draws its buffers
            return false;
        default:
            return false;
        }
    }

private:
    void post() {
        if (m_posted) return;
        m_posted = true;
        QMetaObject::invokeMethod(
            this,
            [this] {
                m_posted = false;
                if (m_plot->isVisible()) flush();
            },
            Qt::QueuedConnection);
    }
    void flush() {
        if (!m_pending) return;
        m_pending = false;
        m_plot->setViewport(m_plot->rect());
        m_plot->replot(QCustomPlot::rpQueuedRefresh);
    }

    QCustomPlot* m_plot;
    bool m_pending = false, m_posted = false;
};
} // namespace

void coalescePlotResizes(QCustomPlot* plot) {
    plot->installEventFilter(new ResizeCoalescer(plot));
}

void embedPlotWithTitle(QCustomPlot* plot, QWidget* owner) {
    coalescePlotResizes(plot);
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

void setLogAxis(QCPAxis* axis, bool log) {
    axis->setScaleType(log ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
    if (log)
        axis->setTicker(QSharedPointer<QCPAxisTickerLog>::create());
    else
        axis->setTicker(QSharedPointer<QCPAxisTicker>::create());
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

namespace {
QString csvField(const QString& s) {
    if (!s.contains(QLatin1Char(',')) && !s.contains(QLatin1Char('"')) &&
        !s.contains(QLatin1Char('\n')))
        return s;
    QString q = s;
    q.replace(QLatin1Char('"'), QStringLiteral("\"\""));
    return QLatin1Char('"') + q + QLatin1Char('"');
}
QString csvNumber(double v) {
    if (std::isnan(v)) return QStringLiteral("nan");
    if (std::isinf(v)) return v > 0 ? QStringLiteral("inf") : QStringLiteral("-inf");
    return QString::number(v, 'g', 10);
}
/// The tick label at `coord` when `axis` has a text ticker with a label there.
QString textTick(QCPAxis* axis, double coord) {
    auto t = axis ? axis->ticker().dynamicCast<QCPAxisTickerText>() : nullptr;
    if (!t) return {};
    auto it = t->ticks().constFind(coord);
    if (it != t->ticks().constEnd()) return it.value();
    // Heat-map rows sit at integer coordinates; tolerate rounding.
    it = t->ticks().constFind(std::round(coord));
    return it != t->ticks().constEnd() && std::abs(coord - std::round(coord)) < 1e-9 ? it.value()
                                                                                     : QString();
}
bool hasTextTicker(QCPAxis* axis) {
    return axis && axis->ticker().dynamicCast<QCPAxisTickerText>();
}
} // namespace

QString plotDataCsv(QCustomPlot* plot) {
    struct Row {
        QString series;
        double x, y;
        QCPAxis *kx, *vy;
        bool hasValue = false;
        double value = 0;
    };
    QVector<Row> rows;
    bool xLabels = false, yLabels = false, values = false;
    for (int i = 0; i < plot->plottableCount(); ++i) {
        QCPAbstractPlottable* p = plot->plottable(i);
        if (!p->visible()) continue;
        const QString name =
            p->name().isEmpty() ? QStringLiteral("series %1").arg(i + 1) : p->name();
        QCPAxis* kx = p->keyAxis();
        QCPAxis* vy = p->valueAxis();
        const int before = int(rows.size());
        if (auto* g = qobject_cast<QCPGraph*>(p)) {
            // addBarSeries() keeps the true values of impulse bars (the drawn ones are clamped).
            const QVector<double> trueValues =
                g->property("lcwTrueValues").value<QVector<double>>();
            int j = 0;
            for (auto it = g->data()->constBegin(); it != g->data()->constEnd(); ++it, ++j)
                rows.push_back(
                    {name, it->key, j < trueValues.size() ? trueValues[j] : it->value, kx, vy});
        } else if (auto* b = qobject_cast<QCPBars*>(p)) {
            for (auto it = b->data()->constBegin(); it != b->data()->constEnd(); ++it)
                rows.push_back({name, it->key, it->value, kx, vy});
        } else if (auto* c = qobject_cast<QCPCurve*>(p)) {
            for (auto it = c->data()->constBegin(); it != c->data()->constEnd(); ++it)
                rows.push_back({name, it->key, it->value, kx, vy});
        } else if (auto* m = qobject_cast<QCPColorMap*>(p)) {
            QCPColorMapData* d = m->data();
            for (int yi = 0; yi < d->valueSize(); ++yi)
                for (int xi = 0; xi < d->keySize(); ++xi) {
                    double x = 0, y = 0;
                    d->cellToCoord(xi, yi, &x, &y);
                    rows.push_back({name, x, y, kx, vy, true, d->cell(xi, yi)});
                }
            values |= d->keySize() * d->valueSize() > 0;
        }
        if (rows.size() > before) {
            xLabels |= hasTextTicker(kx);
            yLabels |= hasTextTicker(vy) && qobject_cast<QCPColorMap*>(p);
        }
    }
    QString out = QStringLiteral("series,x");
    if (xLabels) out += QStringLiteral(",x_label");
    out += QStringLiteral(",y");
    if (yLabels) out += QStringLiteral(",y_label");
    if (values) out += QStringLiteral(",value");
    out += QLatin1Char('\n');
    for (const Row& r : std::as_const(rows)) {
        out += csvField(r.series) + QLatin1Char(',') + csvNumber(r.x);
        if (xLabels) out += QLatin1Char(',') + csvField(textTick(r.kx, r.x));
        out += QLatin1Char(',') + csvNumber(r.y);
        if (yLabels)
            out += QLatin1Char(',') + csvField(r.hasValue ? textTick(r.vy, r.y) : QString());
        if (values) out += QLatin1Char(',') + (r.hasValue ? csvNumber(r.value) : QString());
        out += QLatin1Char('\n');
    }
    return out;
}

bool exportPlotData(QCustomPlot* plot, const QString& path, QString* error) {
    QSaveFile f(path);
    const QByteArray bytes = plotDataCsv(plot).toUtf8();
    if (!f.open(QIODevice::WriteOnly) || f.write(bytes) != bytes.size() || !f.commit()) {
        if (error) *error = QDir::toNativeSeparators(path) + QStringLiteral(": ") + f.errorString();
        return false;
    }
    return true;
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
    QAction* csv = menu.addAction(QObject::tr("Export Data as CSV…"), owner, [plot, owner, base] {
        QString path = QFileDialog::getSaveFileName(owner, QObject::tr("Export Plot Data"),
                                                    base + QStringLiteral(".csv"),
                                                    QObject::tr("CSV files (*.csv)"));
        if (path.isEmpty()) return;
        if (QFileInfo(path).suffix().isEmpty()) path += QStringLiteral(".csv");
        QString err;
        if (!exportPlotData(plot, path, &err))
            QMessageBox::critical(owner, QObject::tr("Export Plot Data"),
                                  QObject::tr("Could not write %1.").arg(err));
    });
    csv->setObjectName(QStringLiteral("exportPlotCsv"));
    csv->setEnabled(enabled);
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

QCPAbstractPlottable* addBarSeries(QCPAxis* keyAxis, QCPAxis* valueAxis,
                                   const QVector<double>& keys, const QVector<double>& values,
                                   double width, const QColor& color, double base, int maxBars) {
    const int n = int(std::min(keys.size(), values.size()));
    if (n <= maxBars) {
        auto* bars = new QCPBars(keyAxis, valueAxis);
        bars->setWidthType(QCPBars::wtPlotCoords);
        bars->setWidth(n > 24 ? width : width * 0.8);
        bars->setBrush(color);
        bars->setPen(n > 24 ? QPen(Qt::NoPen) : QPen(color.darker(125), 1));
        bars->setAntialiasedFill(false);
        bars->setBaseValue(base);
        bars->setData(keys.mid(0, n), values.mid(0, n), true);
        return bars;
    }
    // Impulses (vertical lines from the base) whose pen is as wide as one entry on screen, so
    // they read as bars at any zoom; adaptive sampling keeps about one line per pixel column.
    auto* g = new QCPGraph(keyAxis, valueAxis);
    g->setLineStyle(QCPGraph::lsImpulse);
    g->setAdaptiveSampling(true);
    g->setAntialiased(false);
    QVector<double> v(n);
    for (int i = 0; i < n; ++i) v[i] = std::isfinite(values[i]) ? std::max(values[i], base) : base;
    g->setData(keys.mid(0, n), v, true);
    g->setProperty("lcwTrueValues", QVariant::fromValue(values.mid(0, n)));
    QPointer<QCPGraph> guard(g);
    QCustomPlot* plot = keyAxis->parentPlot();
    auto fitPen = [guard, keyAxis, width, color] {
        if (!guard) return;
        const double px = std::abs(keyAxis->coordToPixel(width) - keyAxis->coordToPixel(0.0));
        // Narrow entries touch (a solid area, like bars without gaps); wider ones keep a gap.
        const double w = px < 3.0 ? std::ceil(px) : std::floor(px * 0.85);
        QPen pen(color, std::clamp(w, 1.0, 64.0));
        pen.setCapStyle(Qt::FlatCap);
        guard->setPen(pen);
    };
    fitPen();
    QObject::connect(plot, &QCustomPlot::beforeReplot, g, fitPen);
    return g;
}

} // namespace lcw
