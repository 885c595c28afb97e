#pragma once
/// \file
/// OmniQuant's learnable weight clipping (LWC, Shao et al. 2023) for one decoder block.
///
/// Every quantisation group g of a learned linear (tensor, channel or group granularity, int
/// formats) gets a clipped range [b_g · min(W_g), a_g · max(W_g)] (asymmetric) or
/// ±a_g · max|W_g| (symmetric); the int grid is built from that range as RTN does. The factors
/// a_g, b_g ∈ [minClip, 1] start at 1 (no clipping: the starting point is exactly RTN) and are
/// trained with Adam(W) on the block-output error
///     L = mean over samples of ‖block(Ŵ; x_q) − block(W; x_fp)‖² / (seqLen · dim)
/// where x_q is the block input produced by the already-quantised earlier blocks and x_fp the
/// full-precision one (as OmniQuant does). round() passes gradients straight through (STE);
/// values outside the grid's range pass none (clamp). The paper parametrises the factors as
/// sigmoid(γ) starting at γ = 4 (0.982); we use the factors themselves, projected onto
/// [minClip, 1] after every step, so that training starts at "no clipping".
/// After every epoch the block error of the packed result (f16 scales, as stored) is measured;
/// the best parameters seen, the start included, are kept, so the result is never worse than
/// RTN on the calibration set.
///
/// LET (learnable equivalent transformation, weight-activation settings): where the block's
/// linear inputs are fake-quantised (OmniQuantOptions::actBits, the runtime's dynamic per-token
/// scheme), per-channel scales s = exp(t) (start 1) divide the input of q/k/v and of gate/up and
/// are folded into the preceding RMSNorm weight (norm /= s) and the consumers' columns (W *= s);
/// they are learned jointly with the clipping (Adam, lrLet), gradients by the chain rule through
/// the folded weights (STE through the weight quantiser, including the groups' min/max moving
/// with s). With letShift, per-channel shifts δ (start 0) are learned too: the input becomes
/// (n − δ) / s, folded into an RMSNorm bias −δ/s (NAME.bias, added after the scale) and consumer
/// biases W·δ (LINEAR.bias), which the runtime applies whenever present. A site is learned only
/// when all its consumers (q, k, v or gate, up) are learned linears.
/// AffineQuant (OmniQuantOptions::affine.on, affine.h): per KV head a full, strictly diagonally
/// dominant matrix A_g between attn.v and attn.o (v rows ← A_g·, o columns ← ·A_g⁻¹) learned
/// jointly (Adam, affine.lr) with the gradual mask opening its off-diagonal band over the epochs;
/// the site is learned when v and o are both learned linears (with or without activation
/// quantisation). The norm-fed sites keep LET's diagonal scales (a full matrix does not fold
/// into an elementwise norm). The folded v / o weights join `folded`.
/// Only pre-norm RMSNorm SwiGLU RoPE blocks without biases are covered (LlamaBlock); others throw
/// UnsupportedError naming the architecture.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/affine.h"
#include "core/compress/quantizer.h"
#include "core/model/model.h"

#include <array>
#include <map>
#include <string>
#include <vector>

namespace lcw::compress {

/// AffineQuant's options (see affine.h).
struct AffineQuantOptions {
    bool on = false;    ///< learn the per-head affine matrices between attn.v and attn.o
    double lr = 1e-2;   ///< Adam learning rate of the diagonal and off-diagonal values
    double alpha = 1.0; ///< stability factor α scaling the off-diagonal values
    AffineMask mask = AffineMask::Gradual;
    double rho = 0.9;  ///< dominance bound: α Σ_{j≠i} |O_ij| ≤ ρ d_i (0 < ρ < 1)
    double dMin = 0.1; ///< lower bound of the diagonal
};

struct OmniQuantOptions {
    int epochs = 20;        ///< passes over the calibration samples (paper: 20)
    double lr = 5e-3;       ///< Adam learning rate of the clipping factors (paper: 5e-3)
    double weightDecay = 0; ///< AdamW decoupled weight decay on the factors
    double minClip = 0.1;   ///< lower bound of the clipping factors
    /// Simulated activation bits per site (ActSite: q/k/v input, o input, gate/up input, down
    /// input); 0 or 16 = float. Applied to the quantised path only (targets stay float).
    std::array<int, 4> actBits{0, 0, 0, 0};
    std::array<double, 4> actClip{1, 1, 1, 1};
    bool let = true;      ///< learn LET scales where the site's input is quantised (< 16 bits)
    bool letShift = true; ///< with let: learn the shifts δ too (norm and linear biases)
    /// Adam learning rate of the log-scales (paper: 1e-2; 5e-3 measured better on the demo model)
    double lrLet = 5e-3;
    AffineQuantOptions affine; ///< AffineQuant (off by default)
};

struct OmniQuantBlockResult {
    Status status = Status::Ok;
    /// Packed tensors of the learned linears (settings as given, method kept).
    std::map<std::string, PackedTensor> packed;
    /// Mean learned factor per linear (max side, and min side for asymmetric; 1 = no clipping).
    std::map<std::string, std::pair<double, double>> meanClip;
    double lossStart = 0;          ///< block-output MSE of the start point (RTN, no clipping)
    double lossEnd = 0;            ///< of the kept parameters (<= lossStart)
    std::vector<double> epochLoss; ///< packed-result MSE after each epoch
    std::vector<double> trainLoss; ///< mean fake-quant training loss of each epoch
    int bestEpoch = 0;             ///< 0 = the start point was kept
    /// The full-precision block's outputs for the FP inputs (the targets; the FP inputs of the
    /// next block), one [seqLen * dim] vector per sample.
    std::vector<std::vector<float>> fpOutputs;
    double seconds = 0;
    /// Folded tensors of the kept result when LET was learned: the norm vectors
    /// ("layers.N.attn_norm", "layers.N.mlp_norm") and the scaled float weights of their
    /// consumers (row-major), which `packed` quantises; with shifts also the new 1-D biases
    /// ("layers.N.attn_norm.bias", "layers.N.attn.q.bias", ...). Empty without LET.
    std::map<std::string, std::vector<float>> folded;
    /// Per LET site (norm name): the learned scales s (the site's input is divided by s).
    std::map<std::string, std::vector<double>> letScale;
    /// Per LET site (norm name): the learned shifts δ (only with letShift).
    std::map<std::string, std::vector<double>> letShift;
    /// AffineQuant: the kept matrices A_g per KV head (row-major hd × hd), keyed by the v name.
    std::map<std::string, std::vector<std::vector<double>>> affine;
    /// AffineQuant: smallest strict-dominance margin of the kept matrices (> 0) and the largest
    /// |off-diagonal| / diagonal ratio; the band of the last epoch.
    double affineMargin = 1, affineOffRatio = 0;
    int affineBand = 0;
};

/// Learns the clipping of the linears named in `settings` (canonical names of block `layer`,
/// int formats, any granularity) on the block inputs `inputs` (quantised path) with targets from
/// `fpInputs` (empty: `inputs`), one [seqLen * dim] vector per sample, all of equal length.
/// Weights come from `w`, or from `overrides` for the names it holds (e.g. folded tensors).
/// Linears of the block not in `settings` keep their values. Progress after every step;
/// cancellation returns status Cancelled. Throws UnsupportedError for blocks the block model does
/// not cover and for non-int formats / GGUF methods, ArgumentError for bad sizes or names.
OmniQuantBlockResult
omniquantBlock(const WeightSource& w, int layer, const std::vector<std::vector<float>>& inputs,
               const std::vector<std::vector<float>>& fpInputs,
               const std::map<std::string, WeightSettings>& settings, const OmniQuantOptions& opts,
               Progress& progress,
               const std::map<std::string, std::vector<float>>* overrides = nullptr);

} // namespace lcw::compress
