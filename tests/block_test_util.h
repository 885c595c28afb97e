#pragma once
// Helpers of the block-training tests (test_omniquant, test_affinequant, test_efficientqat): float
// vectors as double matrices, the block-output error of quantised weights, and the loss whose
// gradients the LET / affine / STE checks compare with finite differences.
#include "core/compress/block_grad.h"
#include "core/compress/quantizer.h"
#include "core/model/model.h"

#include <array>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace lcwtest {

using lcw::compress::BlockGrads;
using lcw::compress::BlockWeights;
using lcw::compress::LlamaBlock;
using lcw::compress::MatD;

/// v (row-major, rows × cols) as a double matrix.
inline MatD matOf(const std::vector<float>& v, int64_t rows, int64_t cols) {
    MatD m(rows, cols);
    for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = v[size_t(i)];
    return m;
}

/// A block input of `dim` columns (rows = tokens).
inline MatD toMat(const std::vector<float>& v, int64_t dim) {
    return matOf(v, int64_t(v.size()) / dim, dim);
}

/// Block-output MSE of `qw` against the FP block `fw` on the same inputs, averaged over the
/// inputs (double, independent of the methods' own losses); actBits > 0: the `qw` block's four
/// activation sites fake-quantised to that many bits (per token, no clipping).
inline double blockMse(const lcw::ModelSpec& spec, int layer, const BlockWeights& fw,
                       const BlockWeights& qw, const std::vector<std::vector<float>>& in,
                       int actBits = 0) {
    double sum = 0;
    for (const auto& x : in) {
        const MatD X = toMat(x, spec.dim);
        const LlamaBlock blk(spec, layer, X.rows());
        LlamaBlock qblk(spec, layer, X.rows());
        if (actBits > 0)
            qblk.setActivationQuant({actBits, actBits, actBits, actBits}, {1, 1, 1, 1});
        MatD y0, y1;
        blk.forward(fw, X, y0, nullptr);
        qblk.forward(qw, X, y1, nullptr);
        sum += (y1 - y0).squaredNorm() / double(y0.size());
    }
    return sum / double(in.size());
}

/// The block `fw` with what a block method returned for block prefix `p` ("layers.N."): its
/// folded norms and norm / linear biases (`folded`) and its dequantised linears (`packed`).
inline BlockWeights
returnedBlock(const BlockWeights& fw, const std::string& p,
              const std::map<std::string, std::vector<float>>& folded,
              const std::map<std::string, lcw::compress::PackedTensor>& packed) {
    using namespace lcw::compress;
    BlockWeights qw = fw;
    auto vec = [&](const std::string& name) {
        const std::vector<float>& v = folded.at(name);
        return Eigen::Map<const Eigen::VectorXf>(v.data(), int64_t(v.size())).cast<double>().eval();
    };
    qw.attnNorm = vec(p + "attn_norm");
    qw.mlpNorm = vec(p + "mlp_norm");
    qw.attnNormBias = vec(p + "attn_norm.bias");
    qw.mlpNormBias = vec(p + "mlp_norm.bias");
    for (int i : {kQ, kK, kV, kGate, kUp})
        qw.b[size_t(i)] = vec(p + blockLinearSuffix(i) + ".bias");
    for (int i = 0; i < 7; ++i) {
        const std::string name = p + blockLinearSuffix(i);
        qw.w[size_t(i)] = matOf(dequantize(packed.at(name), name), fw.w[size_t(i)].rows(),
                                fw.w[size_t(i)].cols());
    }
    return qw;
}

/// Analytic weight / norm gradients of L = sum(block(w; X) ∘ R) at `w`.
inline BlockGrads blockLossGrads(const LlamaBlock& blk, const BlockWeights& w, const MatD& X,
                                 const MatD& R) {
    LlamaBlock::Cache c;
    MatD y;
    blk.forward(w, X, y, &c);
    BlockGrads g;
    g.zeroLike(w);
    blk.backward(w, c, R, g);
    return g;
}

/// The gradient checks' loss L = sum(block(W + M) ∘ R) on inputs X: M, a fixed additive
/// perturbation of the weights, stands in for the quantisation error and breaks exact
/// equivalences (else the gradients of a function-preserving transform vanish).
struct BlockGradCase {
    MatD X, R;
    std::array<MatD, 7> M;
    /// X and R (T × dim), then M (0.02 · N(0, 1)), drawn in this order from `nd` over `rng`.
    BlockGradCase(const BlockWeights& bw, int64_t T, int64_t dim, std::mt19937& rng,
                  std::normal_distribution<double>& nd) {
        X.resize(T, dim);
        R.resize(T, dim);
        for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = nd(rng), R.data()[i] = nd(rng);
        for (int i = 0; i < 7; ++i) {
            M[size_t(i)] = MatD(bw.w[size_t(i)].rows(), bw.w[size_t(i)].cols());
            for (int64_t k = 0; k < M[size_t(i)].size(); ++k)
                M[size_t(i)].data()[k] = 0.02 * nd(rng);
        }
    }
    BlockWeights perturbed(const BlockWeights& f) const {
        BlockWeights q = f;
        for (int i = 0; i < 7; ++i) q.w[size_t(i)] = f.w[size_t(i)] + M[size_t(i)];
        return q;
    }
    double loss(const LlamaBlock& blk, const BlockWeights& w) const {
        MatD y;
        blk.forward(perturbed(w), X, y, nullptr);
        return (y.array() * R.array()).sum();
    }
    /// Analytic weight / norm gradients of the loss at `w`.
    BlockGrads grads(const LlamaBlock& blk, const BlockWeights& w) const {
        return blockLossGrads(blk, perturbed(w), X, R);
    }
};

} // namespace lcwtest
