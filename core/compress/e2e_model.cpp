#include "core/compress/e2e_model.h"

#include "core/common/error.h"
#include "core/runtime/cpu/kernels.h"

#include <cmath>

namespace lcw::compress {

int64_t windowLength(const std::vector<std::vector<int32_t>>& windows, const std::string& what) {
    if (windows.empty() || windows[0].size() < 2)
        throw ArgumentError(what + " needs calibration windows of at least 2 tokens");
    for (const auto& win : windows)
        if (win.size() != windows[0].size())
            throw ArgumentError(what + ": calibration windows differ in length");
    return int64_t(windows[0].size());
}

namespace {

MatD loadRows(const TensorView& t, int64_t rows, int64_t cols, const std::string& name,
              const std::string& what) {
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
        throw ArgumentError(what + ": tensor '" + name + "' has an unexpected shape");
    std::vector<float> v(size_t(rows * cols));
    kernels::dequantizeRows(t, 0, rows, v.data());
    return blockMatrix(v, rows, cols);
}

} // namespace

double E2eModel::run(const std::vector<int32_t>& ids, std::vector<BlockGrads>* grads, MatD* dHead,
                     MatD* dEmbed) const {
    const int64_t L = int64_t(blocks.size()), V = head.rows();
    MatD x(T, spec.dim);
    for (int64_t t = 0; t < T; ++t) {
        if (ids[size_t(t)] < 0 || ids[size_t(t)] >= embed.rows())
            throw ArgumentError(what + ": token id " + std::to_string(ids[size_t(t)]) +
                                " out of the vocabulary");
        x.row(t) = embed.row(ids[size_t(t)]);
    }
    std::vector<LlamaBlock::Cache> cache(grads ? size_t(L) : 0);
    for (int64_t l = 0; l < L; ++l) {
        MatD y;
        block[size_t(l)].forward(blocks[size_t(l)], x, y, grads ? &cache[size_t(l)] : nullptr);
        x = std::move(y);
    }
    const double eps = double(spec.normEps);
    const Eigen::VectorXd r =
        ((x.array().square().rowwise().sum() / double(spec.dim)) + eps).rsqrt().matrix();
    const MatD hn = (x.array().colwise() * r.array()).rowwise() * finalNorm.transpose().array();
    MatD logits = hn * head.transpose();
    const double n = double(T - 1);
    double loss = 0;
    MatD dlog = MatD::Zero(T, V);
    for (int64_t t = 0; t + 1 < T; ++t) {
        const double mx = logits.row(t).maxCoeff();
        const Eigen::ArrayXd e = (logits.row(t).array() - mx).exp().transpose();
        const double z = e.sum();
        const int32_t next = ids[size_t(t + 1)];
        if (next < 0 || next >= V)
            throw ArgumentError(what + ": token id " + std::to_string(next) +
                                " out of the vocabulary");
        loss += std::log(z) + mx - logits(t, next);
        if (grads) {
            dlog.row(t) = (e / z).matrix().transpose() / n;
            dlog(t, next) -= 1.0 / n;
        }
    }
    if (!grads) return loss / n;
    if (dHead) *dHead = dlog.transpose() * hn;
    // Final RMSNorm backward (its weight fixed), then the blocks in reverse.
    const MatD a = (dlog * head).array().rowwise() * finalNorm.transpose().array();
    const Eigen::VectorXd dot = (a.array() * x.array()).rowwise().sum();
    MatD dx = (a.array().colwise() * r.array()) -
              x.array().colwise() * (dot.array() * r.array().cube() / double(spec.dim));
    grads->resize(size_t(L));
    for (int64_t l = L - 1; l >= 0; --l) {
        BlockGrads& g = (*grads)[size_t(l)];
        g.zeroLike(blocks[size_t(l)]);
        MatD dprev;
        block[size_t(l)].backward(blocks[size_t(l)], cache[size_t(l)], dx, g, &dprev);
        dx = std::move(dprev);
    }
    if (dEmbed)
        for (int64_t t = 0; t < T; ++t) dEmbed->row(ids[size_t(t)]) += dx.row(t);
    return loss / n;
}

E2eModel loadE2eModel(const WeightSource& w, int64_t T, const std::string& what) {
    const ModelSpec& spec = w.spec();
    if (spec.embedScale != 1.0f || spec.embedNorm || spec.finalSoftcap > 0 || !spec.finalNorm ||
        w.find("pos_embed") || w.find("final_norm.bias"))
        throw UnsupportedError(what +
                               " covers Llama-style models (plain embedding, final "
                               "RMSNorm, no logit soft-capping); arch '" +
                               spec.arch + "' is not supported");
    E2eModel model{spec, {}, {}, {}, {}, {}, T, what};
    const TensorView* emb = w.find("embed");
    const TensorView* fn = w.find("final_norm");
    if (!emb || !fn) throw ArgumentError(what + ": the model has no embed / final_norm");
    model.embed = loadRows(*emb, spec.vocab, spec.dim, "embed", what);
    model.head = loadRows(w.lmHead(), spec.vocab, spec.dim, "lm_head", what);
    std::vector<float> nv(size_t(spec.dim));
    kernels::dequantizeRows(*fn, 0, 1, nv.data());
    model.finalNorm = Eigen::Map<const Eigen::VectorXf>(nv.data(), spec.dim).cast<double>();
    for (int l = 0; l < int(spec.nLayers); ++l) {
        model.block.emplace_back(spec, l, T);
        model.blocks.push_back(loadBlockWeights(w, l));
    }
    return model;
}

} // namespace lcw::compress
