#pragma once
/// \file
/// WKVQuant (Yue et al. 2024, "WKVQuant: Quantizing Weight and Key/Value Cache for Large
/// Language Models Gains More"): the calibrated part of a weight + KV recipe.
///
/// The runtime side (core/model/runtime_quant.h, KvQuantSpec) has two of the paper's pieces:
/// past-only quantisation (a query sees its own K/V in f32, the earlier tokens' K/V quantised)
/// and two-dimensional quantisation: a static per-channel shift δ and scale s around the dynamic
/// per-token group quantiser Q of the cache, K̂ = s ⊙ Q((K − δ) / s) + δ (V likewise).
///
/// This file chooses δ and s per block by the paper's third piece, cross-block reconstruction
/// regularisation (CRR): the objective is the mean absolute error (L1) of the output of the
/// block and the next k blocks,
///     L = mean | F_{l..l+k}(x_q; KV quantised in block l) − F_{l..l+k}(x_fp) |,
/// where x_q is the block input produced by the compressed model so far (weights and the KV
/// caches of the earlier blocks quantised as finally stored) and x_fp the unquantised model's;
/// block l runs with its quantised weights and the simulated KV quantisation (the runtime's own
/// KvStream numerics, past-only when asked), blocks l+1..l+k with the unquantised weights and
/// f32 caches on both sides (the regulariser: the error that survives the following blocks).
///
/// The parameters come from a family with two knobs per tensor (K, V), computed from the
/// calibrated per-channel range [lo_c, hi_c] of the block's K (after RoPE) and V:
///     δ_c = (lo_c + hi_c) / 2 when the shift is on, else 0;
///     s_c = r_c^α / (geometric mean over c of r^α),  r_c = max(|lo_c − δ_c|, |hi_c − δ_c|),
/// α ∈ alphas (α = 0 with the shift off is plain per-token quantisation, the start point). A
/// coordinate search over (α, shift) of K, then V, repeated `rounds` times, keeps a candidate
/// only when it lowers L, so the objective never increases and the result is never worse than
/// the start on the calibration windows.
///
/// Then, with learnSteps > 0 (recipe kv.crr_steps), δ and s of every channel are learned as the
/// paper does, by gradient descent on L (Adam), starting from the searched point: the gradient
/// runs back through the following blocks, the block's attention (past-only reads), and the
/// per-token min/max quantiser with the straight-through estimator for the rounding — x̂ = s·û +
/// δ, û = u + h·e with u = (x − δ)/s, h = (max u − min u)/(2^b − 1) of the token's group and the
/// rounding error e held fixed, so dL/du_c = s_c·g_c plus ±Σ s·g·e/(2^b − 1) at the group's
/// maximum / minimum (kvSmoothingGrads). Parameters: log s, and δ in units of the channel's
/// half range. After every step the exact objective of the new point is evaluated; the best
/// point is kept, so the objective still never increases.
///
/// Joint learning (recipe kv.crr_weights, WkvOptions::weights): the paper learns the weights'
/// quantisation parameters together with δ and s on the same objective. The gradient steps then
/// also train OmniQuant's learnable clipping (lwc.h) of the block's int-quantised linears, from
/// factors 1 (RTN of the unquantised weights): the gradient w.r.t. the fake-quantised weights
/// runs back through the following blocks and the block itself, straight through the KV
/// quantiser (LlamaBlock::backward) and round(). Every step is measured with the weights
/// packed as they would be stored; the best point (weights and smoothing together) is kept and
/// the weights stored before (RTN or OmniQuant's MSE-trained clipping) stay unless the learned
/// ones lower the objective, so the result is never worse than without the joint learning on
/// the calibration windows.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/block_grad.h"
#include "core/compress/quantizer.h"
#include "core/model/model.h"
#include "core/model/runtime_quant.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lcw::compress {

struct Plan;
struct CalibrationSet;
struct LayerReport;
class CompressedModel;

/// Shift and scale of one tensor's channels (empty: none).
struct ChannelSmoothing {
    std::vector<float> shift, scale;
    bool empty() const { return scale.empty(); }
};

/// The family above from a per-channel range; alpha 0 and no shift give empty vectors. Throws
/// ArgumentError for sizes that differ or a negative alpha.
ChannelSmoothing smoothingFromRange(const std::vector<float>& lo, const std::vector<float>& hi,
                                    double alpha, bool shift);

/// Replaces the rows of x [T, width] (K or V of one block, all KV heads) by what the runtime's
/// KV cache reads back after storing them: token granularity, `bits` (16: unchanged), groups of
/// `groupSize` channels, with the smoothing (empty: none).
void fakeQuantKvRows(MatD& x, int bits, int64_t groupSize, const ChannelSmoothing& sm);

/// The straight-through gradient of fakeQuantKvRows (above, the header's formula) w.r.t. the
/// smoothing: x [T, width] the rows before quantisation, g = dLoss/d(the rows read back); adds
/// dLoss/dδ_c and dLoss/ds_c summed over the rows to dShift / dScale (sized width). An empty
/// smoothing is the identity (δ 0, s 1). bits >= 16: nothing to add.
void kvSmoothingGrads(const MatD& x, int bits, int64_t groupSize, const ChannelSmoothing& sm,
                      const MatD& g, std::vector<double>& dShift, std::vector<double>& dScale);

struct WkvOptions {
    int crrBlocks = 1; ///< k: blocks after the block in the objective (cut at the last block)
    std::vector<double> alphas{0.0, 0.25, 0.5, 0.75, 1.0};
    int rounds = 2;     ///< passes of the coordinate search (K, then V)
    int learnSteps = 0; ///< Adam steps on δ and s after the search (0: search only)
    double lr = 5e-3;   ///< Adam learning rate (log s, and δ per half range)
    /// Joint learning: the block's linears (name → int settings) whose clipping the gradient
    /// steps learn too (empty: the smoothing alone).
    std::map<std::string, WeightSettings> weights;
    double weightLr = 5e-3; ///< Adam learning rate of the clipping factors (OmniQuant's)
    double minClip = 0.1;   ///< lower bound of the clipping factors
};

struct WkvBlockResult {
    Status status = Status::Ok;
    ChannelSmoothing k, v; ///< the kept smoothing (empty: none)
    double kAlpha = 0, vAlpha = 0;
    bool kShift = false, vShift = false;
    double lossStart = 0, lossEnd = 0; ///< CRR objective of the start and of the kept point
    double lossSearch = 0;             ///< after the coordinate search (before the gradient steps)
    int learnedSteps = 0; ///< gradient steps taken; bestStep: the kept one (0: the search's)
    int bestStep = 0;
    /// The best objective after each evaluation (the start first): never increases.
    std::vector<double> objective;
    int blocks = 1; ///< blocks in the objective (1 + k, cut at the model's last block)
    double seconds = 0;
    /// Joint learning: the learned linears' packed tensors when the kept point has them (empty:
    /// the stored weights were kept, the learned ones did not lower the objective) and their
    /// mean clipping factors (max side, min side; 1 = none) at that point.
    std::map<std::string, PackedTensor> packed;
    std::map<std::string, std::pair<double, double>> meanClip;
};

/// The CRR objective of one smoothing for block `layer` (see above): qInputs are the block's
/// inputs on the compressed model, targets the unquantised model's output of block
/// layer + blocks - 1 for the same windows (all [seqLen * dim]); qWeights the block's quantised
/// weights, fpWeights the following blocks' unquantised ones.
class CrrObjective {
public:
    CrrObjective(const ModelSpec& spec, int layer, const KvQuantSpec& kv, int blocks,
                 const BlockWeights& qWeights, std::vector<BlockWeights> fpWeights,
                 const std::vector<std::vector<float>>& qInputs,
                 const std::vector<std::vector<float>>& targets);
    double operator()(const ChannelSmoothing& k, const ChannelSmoothing& v) const;
    /// The objective with other weights of the block (same shapes as qWeights).
    double operator()(const BlockWeights& q, const ChannelSmoothing& k,
                      const ChannelSmoothing& v) const;
    /// L and its gradient w.r.t. the smoothing of K and V (straight-through, see above; vectors
    /// sized nKvHeads*headDim; K's stay zero when K is not quantised, V's likewise).
    double gradient(const ChannelSmoothing& k, const ChannelSmoothing& v,
                    std::vector<double>& dkShift, std::vector<double>& dkScale,
                    std::vector<double>& dvShift, std::vector<double>& dvScale) const;
    /// The same with weights q for the block; with dq, also dL/d(the linears' weights of q)
    /// (straight through the KV quantiser; dq's norms and biases stay zero), summed over the
    /// windows.
    double gradient(const BlockWeights& q, const ChannelSmoothing& k, const ChannelSmoothing& v,
                    std::vector<double>& dkShift, std::vector<double>& dkScale,
                    std::vector<double>& dvShift, std::vector<double>& dvScale,
                    BlockGrads* dq) const;
    /// Per-channel min/max of the block's K (after RoPE) and V on qInputs (no quantisation).
    void ranges(std::vector<float>& kLo, std::vector<float>& kHi, std::vector<float>& vLo,
                std::vector<float>& vHi) const;

private:
    /// The blocks of the objective: the first with the smoothing's simulated KV quantisation (k
    /// and v are referenced, not copied), then the following ones.
    std::vector<LlamaBlock> chain(const ChannelSmoothing& k, const ChannelSmoothing& v) const;
    const ModelSpec& m_s;
    int m_layer, m_blocks;
    KvQuantSpec m_kv;
    int64_t m_T = 0;
    const BlockWeights& m_q;
    std::vector<BlockWeights> m_fp;
    const std::vector<std::vector<float>>& m_in;
    const std::vector<std::vector<float>>& m_target;
};

/// The coordinate search of one block, then the gradient steps (with the joint learning of
/// opts.weights when given). Progress after every evaluation; cancellation returns status
/// Cancelled. Throws UnsupportedError for blocks the block model does not cover (and, with
/// opts.weights, when the stored block's norms differ from the unquantised ones: an earlier
/// stage folded scales into them) and ArgumentError for empty or unequal inputs.
WkvBlockResult wkvquantBlock(const WeightSource& quantised, const WeightSource& fp, int layer,
                             const KvQuantSpec& kv, const std::vector<std::vector<float>>& qInputs,
                             const std::vector<std::vector<float>>& fpInputs,
                             const WkvOptions& opts, Progress& progress);

/// Calibration windows the search uses (the first ones of the set).
inline constexpr int64_t kWkvMaxWindows = 8;

/// The compression stage: for every block whose KV plan has smooth (in block order) captures
/// the block's inputs through `cm` (its weights and the KV caches of the earlier blocks as
/// stored, the caches already smoothed) and through `base`, runs wkvquantBlock and stores the
/// result in cm's runtime quantisation; with kv.crr_weights the learned linears replace the
/// stored ones when they won (and their reports in `layers`, when given, are updated). Per block
/// the search's report goes into details[block]. Throws RecipeError (kv.smooth) without
/// calibration data, RecipeError (kv.crr_weights) when a linear of the block is quantised by a
/// method other than rtn / omniquant or is pruned or factorised.
Status calibrateWkvQuant(const Model& base, const Plan& plan, CompressedModel& cm,
                         const CalibrationSet* cal, Progress& progress,
                         std::map<int64_t, nlohmann::ordered_json>& details,
                         std::vector<LayerReport>* layers = nullptr);

} // namespace lcw::compress
