#include "plots/sparsity_plot.h"

#include "plots/plot_style.h"

#include <QToolTip>
#include <qcustomplot.h>

#include <algorithm>
#include <cmath>

namespace lcw {

SparsityPlot::SparsityPlot(QWidget* parent) : PlotWidget(parent, QStringLiteral("mlp-sparsity")) {
    m_plot->legend->setVisible(true);
    m_plot->legend->setFont(font());
    m_plot->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    m_plot->xAxis->setLabel(tr("layer"));
    m_plot->yAxis->setLabel(tr("fraction"));
    applyPalette(); // no rebuild here: the owner sets the title before the first data
}

void SparsityPlot::setData(const std::vector<stats::MlpSparsityRow>& rows) {
    m_rows = rows;
    rebuild();
}

QString SparsityPlot::tooltipFor(int i) const {
    if (i < 0 || i >= int(m_rows.size())) return {};
    const stats::MlpSparsityRow& r = m_rows[size_t(i)];
    QString t = tr("layer %1 MLP intermediate\nnear zero (rel 1e-2): %2\nper token p10/p50/p90: "
                   "%3 / %4 / %5\nnear zero (abs 1e-3): %6\nexact zeros: %7")
                    .arg(r.layer)
                    .arg(r.nearZeroRel, 0, 'f', 4)
                    .arg(r.tokP10, 0, 'f', 3)
                    .arg(r.tokP50, 0, 'f', 3)
                    .arg(r.tokP90, 0, 'f', 3)
                    .arg(r.nearZeroAbs, 0, 'f', 4)
                    .arg(r.exactZero, 0, 'f', 4);
    t += tr("\noracle bound: %1 of the MLP's MACs").arg(r.oracleMlpSaved, 0, 'f', 4);
    if (r.oracleBlockSaved >= 0) t += tr(", %1 of the block's").arg(r.oracleBlockSaved, 0, 'f', 4);
    return t;
}

void SparsityPlot::rebuild() {
    m_plot->clearPlottables();
    applyPlotPalette(m_plot, palette());
    const QVector<QColor> colors = seriesColors(palette());
    QVector<double> keys, mean, lo, hi, oracleKeys, oracle;
    for (size_t i = 0; i < m_rows.size(); ++i) {
        const stats::MlpSparsityRow& r = m_rows[i];
        keys << double(i);
        mean << r.nearZeroRel;
        lo << std::max(0.0, r.nearZeroRel - r.tokP10);
        hi << std::max(0.0, r.tokP90 - r.nearZeroRel);
        if (r.oracleBlockSaved >= 0) oracleKeys << double(i), oracle << r.oracleBlockSaved;
    }
    auto* bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
    bars->setName(tr("near-zero share (whisker: tokens p10–p90)"));
    bars->setWidth(0.6);
    bars->setPen(Qt::NoPen);
    bars->setBrush(colors.value(0));
    bars->setData(keys, mean, true);
    auto* err = new QCPErrorBars(m_plot->xAxis, m_plot->yAxis);
    err->removeFromLegend();
    err->setDataPlottable(bars);
    err->setData(lo, hi);
    err->setPen(QPen(palette().color(QPalette::WindowText)));
    auto* pts = new QCPGraph(m_plot->xAxis, m_plot->yAxis);
    pts->setName(tr("oracle bound: block MACs saved"));
    pts->setLineStyle(QCPGraph::lsNone);
    pts->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, colors.value(1), 9));
    pts->setData(oracleKeys, oracle, true);
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    const int step = std::max<int>(1, int(m_rows.size()) / 40 + 1);
    for (size_t i = 0; i < m_rows.size(); i += size_t(step))
        ticker->addTick(double(i), QString::number(m_rows[i].layer));
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setSubTicks(false);
    m_plot->xAxis->grid()->setVisible(false);
    m_plot->xAxis->setRange(-0.6, std::max<double>(1, double(m_rows.size())) - 0.4);
    m_plot->yAxis->setRange(0, 1.05);
    m_plot->legend->setVisible(!m_rows.empty());
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void SparsityPlot::onMouseMove(QMouseEvent* event) {
    const int i = int(std::lround(m_plot->xAxis->pixelToCoord(event->pos().x())));
    if (i < 0 || i >= int(m_rows.size())) {
        QToolTip::hideText();
        return;
    }
    QToolTip::showText(event->globalPosition().toPoint(), tooltipFor(i), m_plot);
}

} // namespace lcw
