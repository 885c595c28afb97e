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
#include "core/model/model.h"

#include <Eigen/Dense>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Index of the seven linears in BlockWeights::w.
enum BlockLinear { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
/// "attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down".
const char* blockLinearSuffix(int i);

/// Weights of one block ([out, in] row-major like the runtime).
struct BlockWeights {
    std::array<MatD, 7> w;
    Eigen::VectorXd attnNorm, mlpNorm;
};

/// Gradients of a scalar loss w.r.t. the block's weights (same shapes).
struct BlockGrads {
    std::array<MatD, 7> w;
    Eigen::VectorXd attnNorm, mlpNorm;
    void zeroLike(const BlockWeights& bw);
};

/// Reads block `layer`'s weights (any stored dtype) from a WeightSource.
BlockWeights loadBlockWeights(const WeightSource& src, int layer);

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
        MatD x, xn1, q, k, v, o, h, xn2, g, u, m;
        Eigen::VectorXd r1, r2;  ///< 1 / rms per token
        std::vector<MatD> probs; ///< per head, [T, T] (upper triangle zero)
    };

    int64_t seqLen() const { return m_T; }
    /// x, y: [seqLen, dim] row-major. cache may be null (forward only).
    void forward(const BlockWeights& w, const MatD& x, MatD& y, Cache* cache) const;
    /// Adds dLoss/dweights to g given dLoss/dy for the forward that filled `c`.
    void backward(const BlockWeights& w, const Cache& c, const MatD& dy, BlockGrads& g) const;

private:
    void rope(MatD& a, int64_t heads, bool inverse) const;
    const ModelSpec& m_s;
    int64_t m_T, m_rot = 0;
    double m_scale = 1;
    std::vector<float> m_cos, m_sin;
};

} // namespace lcw::compress
