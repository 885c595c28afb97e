#pragma once
/// \file
/// EfficientQAT (Chen et al. 2024) Block-AP for one decoder block: block-wise training of all
/// parameters of the block's quantised linears — the float weights W, the step sizes s and the
/// zero points z of their group-wise uniform int quantiser — on the block-output error
///     L = mean over samples of ‖block(Ŵ; x_q) − block(W₀; x_fp)‖² / (seqLen · dim)
/// (x_q: the block input through the already-quantised earlier blocks, x_fp the full-precision
/// one; W₀ the original weights). The quantiser of a group with step s and zero point z is
///     asymmetric: Ŵ = (clamp(round(W / s) + round(z), 0, 2^b − 1) − round(z)) · s
///     symmetric:  Ŵ = clamp(round(W / s), −(2^(b−1) − 1), 2^(b−1) − 1) · s
/// with round() passed straight through (STE): inside the grid dŴ/dW = 1, dŴ/ds = round(W/s) −
/// W/s, dŴ/dz = 0; where clamped dŴ/dW = 0, dŴ/ds = q − round(z), dŴ/dz = −s. W is trained with
/// Adam at learning rate lrW, s and z with Adam at lrQ (separate rates, as the paper); after each
/// step s is kept in [0.01 s₀, ∞) and z in [0, 2^b − 1]. Training starts at RTN's grid (s₀, z₀:
/// the f16 scale and the zero point quantize() picks), so the start is exactly RTN; after every
/// epoch the stored result (codes round(W/s) + round(z) with the f16 scale, as packed) is
/// measured on the block loss and the best parameters, the start included, are kept: the result
/// is never worse than RTN on the calibration set. The packed result has RTN's layout and size.
///
/// E2E-QP (the paper's second phase, efficientQatEndToEnd): with the integer codes fixed, only the
/// step sizes s are trained on the next-token cross-entropy of the whole model over the
/// calibration windows (gradients through every block, the final norm and lm_head).
/// Only pre-norm RMSNorm SwiGLU RoPE blocks without biases are covered (LlamaBlock).
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/block_grad.h"
#include "core/compress/quantizer.h"
#include "core/model/model.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lcw::compress {

struct EfficientQatOptions {
    int epochs = 10;        ///< Block-AP passes over the calibration samples
    double lrW = 2e-4;      ///< Adam learning rate of the weights
    double lrQ = 1e-3;      ///< Adam learning rate of the step sizes and zero points
    double weightDecay = 0; ///< AdamW decoupled weight decay of the weights
    int e2eEpochs = 0;      ///< E2E-QP passes over the calibration windows (0: Block-AP only)
    double lrE2e = 2e-4;    ///< Adam learning rate of the step sizes in E2E-QP
};

/// The learnable group-wise uniform quantiser of one linear ([rows, cols], int formats).
struct QatQuantizer {
    WeightSettings settings;
    int64_t rows = 0, cols = 0;
    std::vector<int64_t> grid;       ///< group of every element (row-major)
    std::vector<double> scale, zero; ///< per group: step size s and zero point z (asym only)
    std::vector<double> minScale;    ///< per group: the lower bound of s (0.01 s₀)
    double qmax() const;             ///< 2^b − 1 (asymmetric) or 2^(b−1) − 1 (symmetric)
};

/// RTN's grid of W as the quantiser's start: s = the f16 scale quantize() stores, z its zero
/// point. Throws UnsupportedError for non-int formats / GGUF methods, ArgumentError for bits
/// outside 2..8 or a non-finite weight (naming `name`).
QatQuantizer qatStart(const WeightSettings& s, const MatD& W, const std::string& name);
/// Ŵ for the current s, z (double, s not rounded to f16).
MatD qatFakeQuant(const QatQuantizer& q, const MatD& W);
/// Straight-through gradients from dL/dŴ: dL/dW (gW), dL/ds and dL/dz per group (gz zero for
/// symmetric grids). Groups whose s is 0 pass nothing.
void qatBackward(const QatQuantizer& q, const MatD& W, const MatD& gWhat, MatD& gW,
                 std::vector<double>& gs, std::vector<double>& gz);
/// The stored result: the f16 scale of s, the zero point round(z), codes on that grid (RTN's
/// layout and size; settings as given, method kept).
PackedTensor qatPack(const QatQuantizer& q, const MatD& W, const std::string& name);

struct EfficientQatBlockResult {
    Status status = Status::Ok;
    std::map<std::string, PackedTensor> packed; ///< per learned linear
    double lossStart = 0;                       ///< block-output MSE of the start point (RTN)
    double lossEnd = 0;                         ///< of the kept parameters (<= lossStart)
    std::vector<double> epochLoss;              ///< packed-result MSE after each epoch
    std::vector<double> trainLoss;              ///< mean fake-quant training loss of each epoch
    int bestEpoch = 0;                          ///< 0 = the start point was kept
    /// Per linear: ‖W − W₀‖ / ‖W₀‖ of the kept weights (how far Block-AP moved them).
    std::map<std::string, double> weightChange;
    /// The full-precision block's outputs for the FP inputs (the next block's FP inputs).
    std::vector<std::vector<float>> fpOutputs;
    double seconds = 0;
};

/// Block-AP of the linears named in `settings` (canonical names of block `layer`, int formats),
/// inputs and targets as omniquantBlock (omniquant.h). Weights from `w`, or `overrides` where it
/// has them. Progress after every step; cancellation returns status Cancelled. Throws
/// UnsupportedError for blocks the block model does not cover and for non-int formats,
/// ArgumentError for bad sizes, names or options.
EfficientQatBlockResult
efficientQatBlock(const WeightSource& w, int layer, const std::vector<std::vector<float>>& inputs,
                  const std::vector<std::vector<float>>& fpInputs,
                  const std::map<std::string, WeightSettings>& settings,
                  const EfficientQatOptions& opts, Progress& progress,
                  const std::map<std::string, std::vector<float>>* overrides = nullptr);

struct EfficientQatE2eResult {
    Status status = Status::Ok;
    /// The trained linears: the same codes and zero points, the kept step sizes (f16).
    std::map<std::string, PackedTensor> packed;
    /// Mean next-token cross-entropy (nats) over the windows with the stored (f16) steps: at the
    /// start (Block-AP's result) and of the kept steps (<= lossStart).
    double lossStart = 0, lossEnd = 0;
    std::vector<double> epochLoss; ///< after each epoch
    std::vector<double> trainLoss; ///< mean training loss of each epoch
    int bestEpoch = 0;             ///< 0 = the start was kept
    double seconds = 0;
};

/// E2E-QP: trains only the step sizes of the packed int linears in `packed` (block linears of
/// `w`, as stored; codes and zero points fixed: Ŵ = (k − z)·s, dŴ/ds = k − z) with Adam (lrE2e,
/// s kept >= 0.01 of its start) on the mean next-token cross-entropy of the whole model over
/// `windows` (token ids, all of one length >= 2): embedding, every block (block_grad.h), final
/// RMSNorm, lm_head; gradients by backpropagation through all of them (the other tensors of `w`
/// read as they are, e.g. the overlay's values). One step per window, o.e2eEpochs epochs; after
/// each the loss with f16 steps is measured and the best steps, the start included, are kept.
/// Progress per window; cancellation returns Cancelled. UnsupportedError for models outside the
/// block model (and with embedding scales, embedding norms or logit soft-capping).
EfficientQatE2eResult efficientQatEndToEnd(const WeightSource& w,
                                           const std::map<std::string, PackedTensor>& packed,
                                           const std::vector<std::vector<int32_t>>& windows,
                                           const EfficientQatOptions& o, Progress& progress);

/// The E2E-QP objective of one window (mean next-token cross-entropy in nats) with the packed
/// linears' weights (k − z)·s, s taken from `steps` where it names the linear (one per group,
/// double) and from the packed f16 scales otherwise; with `grads`, dL/ds per packed linear.
double efficientQatE2eLoss(const WeightSource& w, const std::map<std::string, PackedTensor>& packed,
                           const std::map<std::string, std::vector<double>>& steps,
                           const std::vector<int32_t>& window,
                           std::map<std::string, std::vector<double>>* grads = nullptr);

/// The empirical Fisher information diagonal of block linears (SqueezeLLM's sensitivity), on the
/// E2E-QP model above: F_ij = Σ over the windows of (∂L_w/∂W_ij)², L_w the mean next-token
/// cross-entropy of window w (nats), gradients by backpropagation through the whole model in
/// double (`w` read as it is). Per name: rows × cols values, row-major.
struct FisherResult {
    Status status = Status::Ok;
    std::map<std::string, std::vector<float>> fisher;
    double meanLoss = 0; ///< mean window loss
    double seconds = 0;
};
/// Windows: token ids, all of one length >= 2. Progress per window; cancellation returns
/// Cancelled. ArgumentError for names that are not block linears, bad windows or token ids;
/// UnsupportedError for models outside the block model, and when the double-precision model and
/// its gradients would need more than maxBytes (the message says how much).
FisherResult blockLinearFisher(const WeightSource& w, const std::vector<std::string>& names,
                               const std::vector<std::vector<int32_t>>& windows, Progress& progress,
                               double maxBytes = 8e9);

/// Checks the options (ArgumentError naming the recipe field: epochs, lr_w, lr_q, e2e_epochs,
/// lr_e2e).
void checkEfficientQatOptions(const EfficientQatOptions& o);

} // namespace lcw::compress
