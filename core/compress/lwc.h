#pragma once
/// \file
/// OmniQuant's learnable weight clipping (LWC) of one linear, shared by the trainers that learn
/// it on a block objective (omniquant.h: the block-output MSE; wkvquant.h: WKVQuant's
/// cross-block reconstruction with the KV cache quantised).
///
/// Every quantisation group g (tensor, channel or group granularity, int formats) gets a clipped
/// range [b_g · min(W_g, 0), a_g · max(W_g, 0)] (asymmetric) or ±a_g · max|W_g| (symmetric); the
/// int grid is built from that range as RTN does, so factors 1 are exactly RTN. Gradients pass
/// straight through round() and not through clamped values (see omniquant.h for the formulas).
#include "core/compress/block_grad.h"
#include "core/compress/quantizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

/// One learned linear: its group ranges and clipping factors with Adam state.
struct Lwc {
    std::string name;
    int index = 0; ///< BlockLinear
    WeightSettings s;
    int64_t rows = 0, cols = 0;
    std::vector<int64_t> grid;  ///< grid index of every element
    std::vector<double> mn, mx; ///< per grid, min(·, 0) and max(·, 0)
    std::vector<double> a, b;   ///< factors (max side, min side)
    std::vector<double> ga, gb; ///< gradients
    std::vector<double> ma, va, mb, vb;
    /// LET: element index of each group's max / min (-1: the range ends at 0), and dL/dmax,
    /// dL/dmin of the last lwcFactorGrads (sym: dL/dmax|·| in gmx).
    std::vector<int64_t> imx, imn;
    std::vector<double> gmx, gmn;
};

/// A learned linear `name` of block `bname` at its start point (factors 1: exactly RTN), its
/// grid ranges from fw. ArgumentError for a name that is not one of the block's seven linears,
/// bits outside 2..8 or a non-finite weight; UnsupportedError for non-int formats and GGUF
/// block types.
Lwc lwcStart(const std::string& bname, const std::string& name, const WeightSettings& s,
             const BlockWeights& fw);
/// Group ranges (min(·, 0), max(·, 0), float-rounded as the stored grid sees them) of W (after
/// a transform that changed the weights, e.g. LET).
void lwcSetRanges(Lwc& l, const MatD& W);
/// Fake-quantised weights (double grid, no f16 rounding) for the current factors.
MatD lwcFakeQuant(const Lwc& l, const MatD& W);
/// Sets l.ga / l.gb (and gmx / gmn) from dL/dŴ with the straight-through estimator.
void lwcFactorGrads(Lwc& l, const MatD& W, const MatD& gW);
/// dL/dW from dL/dŴ (straight through round(), zero where clamped, plus the group ranges'
/// dependence on W; uses gmx/gmn of the last lwcFactorGrads).
MatD lwcSteGrad(const Lwc& l, const MatD& W, const MatD& gW);
/// The packed tensor for the current factors (grids as RTN builds them from the clipped range).
PackedTensor lwcPack(const Lwc& l, const MatD& W);
/// The weights a packed tensor of `l` stores, as [rows, cols] doubles.
MatD lwcPackedWeights(const Lwc& l, const PackedTensor& p);
/// The mean of a linear's factors (1 for none: no clipping).
double lwcMeanFactor(const std::vector<double>& factors);
/// One Adam(W) step of factors p, kept in [minClip, 1].
void lwcAdam(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m,
             std::vector<double>& v, int step, double lr, double weightDecay, double minClip);

} // namespace lcw::compress
