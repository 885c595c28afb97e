#pragma once
/// \file
/// Explicit forward and backward pass of one pre-norm Llama-style decoder block in double
/// precision, for methods that optimise a block's output error by gradient descent (OmniQuant):
///   x → RMSNorm(attn_norm) → q, k, v (GQA) → RoPE → causal softmax attention → o → + x = h
///   h → RMSNorm(mlp_norm) → silu(gate) · up → down → + h = y
/// RoPE uses the model's settings (kernels::ropeFrequencies / ropeTables, interleaved or
/// rotate-half pairs). Other block kinds (LayerNorm, biases, q/k norms, post-norms, parallel
/// residuals, ALiBi, soft-capping, sliding windows shorter than the sequence, MoE, Mamba) are not
/// covered: LlamaBlock throws UnsupportedError naming the architecture and the feature.
#include "core/common/progress.h"
#include "core/model/model.h"

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace lcw::compress {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Index of the seven linears in BlockWeights::w.
enum BlockLinear { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
/// Activation-quantisation sites of a block (inputs of q/k/v, o, gate/up, down).
enum ActSite { kActAttnIn = 0, kActO, kActMlpIn, kActDown };

/// Fake-quantises every row of `a` in place (symmetric, per row, see setActivationQuant);
/// `mask` (may be null) gets 1 where the value was inside the grid, 0 where clamped.
void fakeQuantRows(MatD& a, int bits, double clip, MatD* mask);
/// "attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down".
const char* blockLinearSuffix(int i);
/// The BlockLinear index of `name` when it is "<bname>.<suffix>" of one of the seven linears,
/// else -1.
int blockLinearIndex(const std::string& bname, const std::string& name);

/// Weights of one block ([out, in] row-major like the runtime). Biases are optional (empty =
/// none): attnNormBias / mlpNormBias are added after the RMSNorm scale, b[i] to linear i's output
/// (before RoPE for q/k), as the runtime does with NAME.bias tensors (e.g. a folded LET shift).
struct BlockWeights {
    std::array<MatD, 7> w;
    Eigen::VectorXd attnNorm, mlpNorm;
    Eigen::VectorXd attnNormBias, mlpNormBias;
    std::array<Eigen::VectorXd, 7> b;
};

/// Gradients of a scalar loss w.r.t. the block's weights (same shapes; biases where present).
struct BlockGrads {
    std::array<MatD, 7> w;
    Eigen::VectorXd attnNorm, mlpNorm;
    Eigen::VectorXd attnNormBias, mlpNormBias;
    std::array<Eigen::VectorXd, 7> b;
    void zeroLike(const BlockWeights& bw);
};

/// Reads block `layer`'s weights (any stored dtype) from a WeightSource, with the optional
/// biases (attn_norm.bias, mlp_norm.bias, LINEAR.bias) where the source has them; the linears
/// and norms named in `overrides` (row-major float, e.g. folded tensors) replace the source's.
BlockWeights loadBlockWeights(const WeightSource& src, int layer,
                              const std::map<std::string, std::vector<float>>* overrides = nullptr);

/// A [T, dim] double matrix of one sample's row-major float block input.
MatD blockMatrix(const std::vector<float>& v, int64_t T, int64_t dim);
/// Checks a block's calibration inputs for `method` (equal counts, whole tokens, equal lengths;
/// ArgumentError naming the block); returns the tokens per sample.
int64_t blockInputTokens(const std::string& bname, const std::string& method,
                         const std::vector<std::vector<float>>& inputs,
                         const std::vector<std::vector<float>>& fpInputs, int64_t dim);
class LlamaBlock;
/// The targets of block-output training: the full-precision block on the full-precision inputs
/// (parallel over samples), also as float outputs (the next block's full-precision inputs).
void blockTargets(const LlamaBlock& fpBlock, const BlockWeights& fw,
                  const std::vector<std::vector<float>>& fpInputs, int64_t T, int64_t dim,
                  std::vector<MatD>& target, std::vector<std::vector<float>>& fpOutputs);

/// The block's products are small: Eigen's own threads cost far more than they save (10x slower
/// on a loaded machine). Single-threaded products while alive; samples run in parallel instead.
struct EigenSingleThreaded {
    int keep = Eigen::nbThreads();
    EigenSingleThreaded() { Eigen::setNbThreads(1); }
    ~EigenSingleThreaded() { Eigen::setNbThreads(keep); }
    EigenSingleThreaded(const EigenSingleThreaded&) = delete;
    EigenSingleThreaded& operator=(const EigenSingleThreaded&) = delete;
};

/// LET (learnable equivalent transformation): the input n of q/k/v becomes (n − dAttn) / sAttn
/// per channel (attn_norm /= s, attn_norm.bias = (bias − δ) / s, q/k/v columns *= s, q/k/v bias
/// += W·δ with the unscaled W), the input of gate/up likewise with sMlp, dMlp. Equivalent in
/// exact arithmetic. An empty s leaves that site; an empty δ folds the scales only (no biases).
BlockWeights foldLet(const BlockWeights& w, const Eigen::VectorXd& sAttn,
                     const Eigen::VectorXd& sMlp, const Eigen::VectorXd& dAttn = {},
                     const Eigen::VectorXd& dMlp = {});
/// Gradients w.r.t. the log-scales t = log s of foldLet, from the gradients `g` w.r.t. the folded
/// weights `folded`: dL/dt_j = −dL/dnorm'_j · norm'_j − dL/dbias'_j · bias'_j (norm bias, when
/// present) + Σ_r dL/dW'_rj · W'_rj over the site's linears. Sites with an empty `gt*` are skipped
/// (pass sizes as wanted).
void letGrads(const BlockWeights& folded, const BlockGrads& g, Eigen::VectorXd& gtAttn,
              Eigen::VectorXd& gtMlp);
/// Gradients w.r.t. the shifts δ of foldLet (scales s): dL/dδ_j = (−dL/dbias'_j + Σ_i Σ_r
/// dL/db'_ir · W'_irj) / s_j, norm bias' and the consumers' biases b'_i. Sites with an empty
/// `gd*` are skipped.
void letShiftGrads(const BlockWeights& folded, const BlockGrads& g, const Eigen::VectorXd& sAttn,
                   const Eigen::VectorXd& sMlp, Eigen::VectorXd& gdAttn, Eigen::VectorXd& gdMlp);

class LlamaBlock {
public:
    /// Throws UnsupportedError ("OmniQuant's block model covers pre-norm RMSNorm SwiGLU blocks
    /// with RoPE; arch 'gpt2' has LayerNorm") when the block is not of that kind, ArgumentError
    /// for a layer out of range or seqLen < 1.
    LlamaBlock(const ModelSpec& spec, int layer, int64_t seqLen);
    /// Empty when supported, else the reason.
    static std::string unsupportedReason(const ModelSpec& spec, int layer, int64_t seqLen);

    /// Intermediate values of one forward, kept for the backward.
    struct Cache {
        /// xn1, o, xn2, m are the linears' inputs as used (fake-quantised when set).
        MatD x, xn1, q, k, v, o, oq, h, xn2, g, u, m;
        /// 0/1 masks of the fake-quantised inputs (0 where clamped); empty = all pass.
        MatD mask1, maskO, mask2, maskM;
        Eigen::VectorXd r1, r2;  ///< 1 / rms per token
        std::vector<MatD> probs; ///< per head, [T, T] (upper triangle zero)
        /// With simulated KV quantisation: the keys (after RoPE) and values as read back.
        MatD kq, vq;
    };

    int64_t seqLen() const { return m_T; }
    /// Simulated activation quantisation of the linears' inputs, per site (kActAttnIn: input of
    /// q/k/v, kActO: of o, kActMlpIn: of gate/up, kActDown: of down): bits 2..15 quantise each
    /// token's row symmetrically with scale clip · max|x_row| / (2^(bits−1) − 1), round to
    /// nearest, clamp (the runtime's dynamic per-token scheme); bits 0 or >= 16 leave it float.
    /// The backward passes gradients straight through round() and stops them where clamped.
    void setActivationQuant(const std::array<int, 4>& bits, const std::array<double, 4>& clip);
    /// Simulated KV-cache quantisation (WKVQuant's cross-block reconstruction):
    /// `quant(k, v)` replaces the keys (after RoPE) and values, [seqLen, nKvHeads*headDim], by
    /// their quantised-then-dequantised values; with pastOnly each query attends to its own
    /// token's unquantised k and v and to the quantised rows of the earlier tokens. An empty
    /// function switches it off. While it is set, backward() uses the rows as read and passes
    /// the gradients straight through the quantiser (dLoss/d(read row) taken as dLoss/d(row),
    /// the STE of WKVQuant's joint weight learning); kvBackward() gives the gradients w.r.t. the
    /// quantised keys and values.
    void setKvQuant(std::function<void(MatD& k, MatD& v)> quant, bool pastOnly);
    /// An online orthogonal transform of the MLP intermediate (a rotation's online_down): every
    /// row m of silu(gate)·up becomes T m before down's input quantisation and product (down's
    /// weights then hold W Tᵀ). `rot(rows, false)` applies T to every row of `rows` in place,
    /// `rot(rows, true)` Tᵀ (the backward). An empty function switches it off. Cache::m holds the
    /// transformed (and quantised) rows.
    void setOnlineDown(std::function<void(MatD& rows, bool transposed)> rot);
    /// x, y: [seqLen, dim] row-major. cache may be null (forward only).
    void forward(const BlockWeights& w, const MatD& x, MatD& y, Cache* cache) const;
    /// The attention sub-module alone (no activation quantisation): q/k/v of the normed input xn
    /// [seqLen, dim], RoPE, causal softmax attention (GQA), o — the o projection's output
    /// (h − x of forward), for AWQ's module-output objective.
    MatD attentionOutput(const BlockWeights& w, const MatD& xn) const;
    /// Adds dLoss/dweights to g given dLoss/dy for the forward that filled `c`; with `dx`, also
    /// sets dLoss/dx (the block input, through both residual paths).
    /// With simulated KV quantisation, dkq / dvq (when given) also get what kvBackward() gives,
    /// from the same pass.
    void backward(const BlockWeights& w, const Cache& c, const MatD& dy, BlockGrads& g,
                  MatD* dx = nullptr, MatD* dkq = nullptr, MatD* dvq = nullptr) const;
    /// With simulated KV quantisation (setKvQuant): dLoss/d(the keys and values as read back
    /// from the cache, Cache::kq / vq, [seqLen, nKvHeads*headDim]) given dLoss/dy for the forward
    /// that filled `c`, the weights held fixed. With pastOnly a token's own row is read
    /// unquantised, so only the reads by later tokens count. ArgumentError without KV
    /// quantisation or a cache without kq / vq.
    void kvBackward(const BlockWeights& w, const Cache& c, const MatD& dy, MatD& dkq,
                    MatD& dvq) const;

private:
    /// The backward from dy to dLoss/d(attention output o) (through o's activation-quantisation
    /// mask when set); dh = dLoss/dh.
    /// Adds the weight gradients of down/gate/up/o and the MLP norm to *g when g is not null.
    MatD backToAttention(const BlockWeights& w, const Cache& c, const MatD& dy, BlockGrads* g,
                         MatD& dh) const;
    /// The attention's backward from dO = dLoss/d(attention output), the keys and values as
    /// read (quantised rows when KV quantisation is set): sets dq, dk, dv (after RoPE; dk / dv
    /// straight through the KV quantiser) and dkq, dvq (w.r.t. the quantised rows as read, see
    /// kvBackward) where not null.
    void attentionBackward(const Cache& c, const MatD& dO, MatD* dq, MatD* dk, MatD* dv, MatD* dkq,
                           MatD* dvq) const;
    void rope(MatD& a, int64_t heads, bool inverse) const;
    const ModelSpec& m_s;
    int64_t m_T, m_rot = 0;
    double m_scale = 1;
    std::vector<float> m_cos, m_sin;
    std::array<int, 4> m_actBits{0, 0, 0, 0};
    std::array<double, 4> m_actClip{1, 1, 1, 1};
    std::function<void(MatD&, MatD&)> m_kvQuant;
    bool m_kvPastOnly = false;
    std::function<void(MatD&, bool)> m_downRot;
};

/// One Adam(W) step (β 0.9 / 0.999, ε 1e-8, bias-corrected; `step` 1-based) over n values, with
/// decoupled weight decay wd; afterwards each value is kept in [lo(i), hi]; `lo` is a function
/// of the index.
template <class Lo>
inline void adamUpdateBounded(double* p, const double* g, double* m, double* v, size_t n, int step,
                              double lr, double wd, Lo lo, double hi) {
    constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double c1 = 1.0 - std::pow(b1, step), c2 = 1.0 - std::pow(b2, step);
    for (size_t i = 0; i < n; ++i) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        p[i] -= lr * (m[i] / c1 / (std::sqrt(v[i] / c2) + eps) + wd * p[i]);
        p[i] = std::min(std::max(p[i], lo(i)), hi);
    }
}
/// adamUpdateBounded with per-value lower bounds lo[i] (lo null: no lower bound).
inline void adamUpdate(double* p, const double* g, double* m, double* v, size_t n, int step,
                       double lr, double wd, const double* lo, double hi) {
    constexpr double kNoBound = -std::numeric_limits<double>::infinity();
    adamUpdateBounded(
        p, g, m, v, n, step, lr, wd, [lo](size_t i) { return lo ? lo[i] : kNoBound; }, hi);
}
/// adamUpdateBounded with one lower bound for every value.
inline void adamUpdate(double* p, const double* g, double* m, double* v, size_t n, int step,
                       double lr, double wd, double lo, double hi) {
    adamUpdateBounded(
        p, g, m, v, n, step, lr, wd, [lo](size_t) { return lo; }, hi);
}

/// The epoch loop of the trainers (OmniQuant / AffineQuant, EfficientQAT Block-AP and E2E-QP):
/// `epochs` passes over `samples` samples. Before every step the progress (steps done / all
/// steps, `label` + "e/epochs"; false: cancelled, the loop returns false); step(i, t) trains on
/// sample i as step t (1-based, for Adam) and returns its training loss; after each epoch the
/// mean training loss joins res.trainLoss, measure() (the stored result's loss) joins
/// res.epochLoss, and when it is below res.lossEnd the epoch becomes res.bestEpoch and keep()
/// stores the parameters. startEpoch(e) runs before epoch e (0-based).
template <class Res, class Step, class Measure, class Keep>
bool runTrainingEpochs(int epochs, size_t samples, Progress& progress, const std::string& label,
                       Res& res, Step step, Measure measure, Keep keep,
                       const std::function<void(int)>& startEpoch = {}) {
    const double steps = double(std::max(1, epochs)) * double(samples);
    int t = 0;
    for (int e = 0; e < epochs; ++e) {
        if (startEpoch) startEpoch(e);
        double trainSum = 0;
        for (size_t i = 0; i < samples; ++i) {
            if (!progress.report(double(t) / steps,
                                 label + std::to_string(e + 1) + "/" + std::to_string(epochs)))
                return false;
            trainSum += step(i, ++t);
        }
        res.trainLoss.push_back(trainSum / double(samples));
        const double loss = measure();
        res.epochLoss.push_back(loss);
        if (loss < res.lossEnd) {
            res.lossEnd = loss;
            res.bestEpoch = e + 1;
            keep();
        }
    }
    return true;
}

} // namespace lcw::compress
