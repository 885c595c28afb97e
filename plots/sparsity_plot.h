#pragma once
/// \file
/// SparsityPlot: the natural sparsity of the MLP intermediates per layer (statistics inspector,
/// Activations tab): a bar of the near-zero fraction (|x| <= 1e-2 × the token's max), a whisker
/// from the 10th to the 90th percentile of the per-token fractions, and the predictor-free
/// bound of the block's MACs saved as points. It draws the numbers it is given
/// (core/stats/activation_sparsity_stats.h computes them).
#include "core/stats/activation_sparsity_stats.h"
#include "plots/plot_widget.h"

#include <vector>

namespace lcw {

class SparsityPlot : public PlotWidget {
    Q_OBJECT
public:
    explicit SparsityPlot(QWidget* parent = nullptr);

    /// One row per layer (empty: a placeholder text).
    void setData(const std::vector<stats::MlpSparsityRow>& rows);
    void clear() { setData({}); }
    const std::vector<stats::MlpSparsityRow>& rows() const { return m_rows; }
    /// The hover text of row i.
    QString tooltipFor(int i) const;
    void resetView() override { rebuild(); }

private:
    void onPaletteChange() override { rebuild(); }
    void rebuild() override;
    void onMouseMove(QMouseEvent* event) override;

    std::vector<stats::MlpSparsityRow> m_rows;
};

} // namespace lcw
