// OmniQuant learnable weight clipping for one block (see omniquant.h).
#include "core/compress/omniquant.h"

#include "core/common/dtype.h"
#include "core/common/parallel.h"
#include "core/compress/block_grad.h"
#include "core/compress/lwc.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

namespace lcw::compress {

namespace {

/// Checks the block inputs and options; returns the tokens per sample.
int64_t checkBlockInputs(const std::string& bname, const std::vector<std::vector<float>>& inputs,
                         const std::vector<std::vector<float>>& fpInputs, int64_t dim,
                         const OmniQuantOptions& o) {
    const int64_t T = blockInputTokens(bname, "omniquant", inputs, fpInputs, dim);
    if (o.epochs < 0 || !(o.lr > 0) || !(o.minClip > 0 && o.minClip < 1) || !(o.lrLet > 0))
        throw ArgumentError(bname + ": omniquant options out of range (epochs >= 0, lr > 0, "
                                    "lr_let > 0, 0 < minClip < 1)");
    const AffineQuantOptions& a = o.affine;
    if (a.on && (!(a.lr > 0) || !(a.alpha > 0) || !(a.rho > 0 && a.rho < 1) || !(a.dMin > 0)))
        throw ArgumentError(bname + ": affinequant options out of range (lr > 0, alpha > 0, "
                                    "0 < dominance < 1, min_diag > 0)");
    return T;
}

/// LET's parameters: per site log-scales t (A: attention input, M: MLP input) and shifts δ
/// (d), with Adam moments (m, v) and gradients (g); empty where the site is not learned.
struct LetParams {
    bool attn = false, mlp = false;
    Eigen::VectorXd tA, tM, mA, vA, mM, vM, gtA, gtM;
    Eigen::VectorXd dA, dM, mdA, vdA, mdM, vdM, gdA, gdM;

    bool any() const { return attn || mlp; }
};

/// LET sites: quantised input and every consumer learned; all parameters at their start
/// (scales 1, shifts 0).
LetParams letSites(const OmniQuantOptions& o, const std::vector<Lwc>& lwc, int64_t dim) {
    auto learned = [&](std::initializer_list<int> ids) {
        for (int i : ids) {
            bool found = false;
            for (const Lwc& l : lwc) found |= l.index == i;
            if (!found) return false;
        }
        return true;
    };
    auto quantisedSite = [&](int site) {
        return o.actBits[size_t(site)] > 0 && o.actBits[size_t(site)] < 16;
    };
    LetParams p;
    p.attn = o.let && quantisedSite(kActAttnIn) && learned({kQ, kK, kV});
    p.mlp = o.let && quantisedSite(kActMlpIn) && learned({kGate, kUp});
    p.tA = Eigen::VectorXd::Zero(p.attn ? dim : 0);
    p.tM = Eigen::VectorXd::Zero(p.mlp ? dim : 0);
    p.mA = p.vA = p.gtA = p.tA;
    p.mM = p.vM = p.gtM = p.tM;
    // Shifts δ (start 0) of the same sites.
    p.dA = Eigen::VectorXd::Zero(p.attn && o.letShift ? dim : 0);
    p.dM = Eigen::VectorXd::Zero(p.mlp && o.letShift ? dim : 0);
    p.mdA = p.vdA = p.gdA = p.dA;
    p.mdM = p.vdM = p.gdM = p.dM;
    return p;
}

/// AffineQuant's parameters: one affine matrix per KV head between attn.v and attn.o, with
/// Adam moments (m, v, as AffineParams of the same shapes) and the last gradients dL/dA.
struct AffineState {
    bool on = false;
    int band = 0; ///< the gradual mask's current half-width
    int64_t heads = 0, kvHeads = 0, headDim = 0;
    std::vector<AffineParams> p, m, v;
    std::vector<MatD> g;

    std::vector<MatD> matrices(double alpha) const {
        std::vector<MatD> a;
        for (const AffineParams& x : p) a.push_back(x.matrix(alpha, band));
        return a;
    }
};

/// The affine site: on when asked for and both attn.v and attn.o are learned linears.
AffineState affineSite(const OmniQuantOptions& o, const std::vector<Lwc>& lwc,
                       const ModelSpec& spec) {
    AffineState a;
    bool v = false, out = false;
    for (const Lwc& l : lwc) v |= l.index == kV, out |= l.index == kO;
    a.on = o.affine.on && v && out;
    if (!a.on) return a;
    a.heads = spec.nHeads;
    a.kvHeads = spec.nKvHeads;
    a.headDim = spec.headDim;
    const AffineParams id = AffineParams::identity(spec.headDim);
    AffineParams zero{Eigen::VectorXd::Zero(spec.headDim), MatD::Zero(spec.headDim, spec.headDim)};
    a.p.assign(size_t(a.kvHeads), id);
    a.m.assign(size_t(a.kvHeads), zero);
    a.v.assign(size_t(a.kvHeads), zero);
    a.g.assign(size_t(a.kvHeads), zero.off);
    return a;
}

/// The learning of one block: the float weights, the learned linears, LET, the affine
/// transforms and the targets.
struct BlockTrainer {
    const OmniQuantOptions& o;
    const LlamaBlock& block; ///< the quantised path
    const BlockWeights& fw;
    std::vector<Lwc>& lwc;
    LetParams& let;
    AffineState& aff;
    const std::vector<std::vector<float>>& inputs;
    int64_t T, dim;
    size_t S;
    double norm;
    std::vector<MatD> target; ///< the full-precision block's outputs

    /// The folded (scaled, shifted, affine-transformed) float weights for the current
    /// parameters; ranges follow them. `pre` gets the weights before the affine transform and
    /// `vo` the transform (when learned).
    BlockWeights folded(BlockWeights* pre = nullptr, std::unique_ptr<AffineVO>* vo = nullptr) {
        if (!let.any() && !aff.on) {
            if (pre) *pre = fw;
            return fw;
        }
        BlockWeights cw = let.any() ? foldLet(fw, let.tA.array().exp().matrix(),
                                              let.tM.array().exp().matrix(), let.dA, let.dM)
                                    : fw;
        if (aff.on) {
            auto t = std::make_unique<AffineVO>(aff.matrices(o.affine.alpha), aff.heads,
                                                aff.kvHeads, aff.headDim);
            if (pre) *pre = cw;
            cw = t->fold(cw);
            if (vo) *vo = std::move(t);
        } else if (pre) {
            *pre = cw;
        }
        for (Lwc& l : lwc) lwcSetRanges(l, cw.w[size_t(l.index)]);
        return cw;
    }

    /// Block error of the packed result for the current factors.
    double packedLoss(std::map<std::string, PackedTensor>* out) {
        const BlockWeights cw = folded();
        BlockWeights qw = cw;
        // The norms are stored as float.
        qw.attnNorm = cw.attnNorm.cast<float>().cast<double>();
        qw.mlpNorm = cw.mlpNorm.cast<float>().cast<double>();
        for (Eigen::VectorXd* v : {&qw.attnNormBias, &qw.mlpNormBias})
            *v = v->cast<float>().cast<double>();
        for (Eigen::VectorXd& v : qw.b) v = v.cast<float>().cast<double>();
        for (const Lwc& l : lwc) {
            PackedTensor p = lwcPack(l, cw.w[size_t(l.index)]);
            qw.w[size_t(l.index)] = lwcPackedWeights(l, p);
            if (out) (*out)[l.name] = std::move(p);
        }
        double sum = 0;
        ParallelErrors errors;
#pragma omp parallel for schedule(dynamic) reduction(+ : sum)
        for (int64_t i = 0; i < int64_t(S); ++i)
            errors.run([&] {
                MatD y;
                block.forward(qw, blockMatrix(inputs[size_t(i)], T, dim), y, nullptr);
                sum += (y - target[size_t(i)]).squaredNorm() / norm;
            });
        errors.rethrow();
        return sum / double(S);
    }

    /// Forward and backward of sample i on the fake-quantised weights: fills the gradients of
    /// the factors (and of LET's parameters); returns the sample's loss.
    double sampleGrads(size_t i, LlamaBlock::Cache& cache, BlockGrads& grads) {
        BlockWeights pre;
        std::unique_ptr<AffineVO> vo;
        const BlockWeights cw = folded(&pre, &vo);
        BlockWeights qw = cw;
        for (const Lwc& l : lwc) qw.w[size_t(l.index)] = lwcFakeQuant(l, cw.w[size_t(l.index)]);
        MatD y;
        block.forward(qw, blockMatrix(inputs[i], T, dim), y, &cache);
        const MatD diff = y - target[i];
        const double loss = diff.squaredNorm() / norm;
        grads.zeroLike(qw);
        block.backward(qw, cache, diff * (2.0 / norm), grads);
        for (Lwc& l : lwc) lwcFactorGrads(l, cw.w[size_t(l.index)], grads.w[size_t(l.index)]);
        if (let.any() || aff.on) {
            // Gradients w.r.t. the folded float weights (STE), then through the affine
            // transform (its matrices; the weights before it), then the LET parameters.
            BlockGrads gf = grads;
            for (const Lwc& l : lwc)
                gf.w[size_t(l.index)] =
                    lwcSteGrad(l, cw.w[size_t(l.index)], grads.w[size_t(l.index)]);
            if (vo) aff.g = vo->grads(pre, gf);
            if (let.any()) {
                letGrads(pre, gf, let.gtA, let.gtM);
                letShiftGrads(pre, gf, let.tA.array().exp().matrix(), let.tM.array().exp().matrix(),
                              let.gdA, let.gdM);
            }
        }
        return loss;
    }

    /// One Adam step of every learned parameter.
    void adamUpdate(int step) {
        for (Lwc& l : lwc) {
            lwcAdam(l.a, l.ga, l.ma, l.va, step, o.lr, o.weightDecay, o.minClip);
            if (!l.s.symmetric)
                lwcAdam(l.b, l.gb, l.mb, l.vb, step, o.lr, o.weightDecay, o.minClip);
        }
        constexpr double kInf = std::numeric_limits<double>::infinity();
        if (let.attn)
            compress::adamUpdate(let.tA.data(), let.gtA.data(), let.mA.data(), let.vA.data(),
                                 size_t(let.tA.size()), step, o.lrLet, 0.0, nullptr, kInf);
        if (let.mlp)
            compress::adamUpdate(let.tM.data(), let.gtM.data(), let.mM.data(), let.vM.data(),
                                 size_t(let.tM.size()), step, o.lrLet, 0.0, nullptr, kInf);
        if (let.dA.size())
            compress::adamUpdate(let.dA.data(), let.gdA.data(), let.mdA.data(), let.vdA.data(),
                                 size_t(let.dA.size()), step, o.lrLet, 0.0, nullptr, kInf);
        if (let.dM.size())
            compress::adamUpdate(let.dM.data(), let.gdM.data(), let.mdM.data(), let.vdM.data(),
                                 size_t(let.dM.size()), step, o.lrLet, 0.0, nullptr, kInf);
        if (aff.on) affineUpdate(step);
    }

    /// Adam on the affine matrices' diagonal and masked off-diagonal values (dL/dO = α dL/dA on
    /// the band), then the projection that keeps them strictly diagonally dominant.
    void affineUpdate(int step) {
        const AffineQuantOptions& ao = o.affine;
        for (size_t k = 0; k < aff.p.size(); ++k) {
            const MatD& gA = aff.g[k];
            const int64_t n = gA.rows();
            const Eigen::VectorXd gd = gA.diagonal();
            MatD goff = MatD::Zero(n, n);
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < n; ++j)
                    if (i != j && std::abs(i - j) <= aff.band) goff(i, j) = ao.alpha * gA(i, j);
            AffineParams& p = aff.p[k];
            constexpr double kInf = std::numeric_limits<double>::infinity(); // no bounds
            compress::adamUpdate(p.d.data(), gd.data(), aff.m[k].d.data(), aff.v[k].d.data(),
                                 size_t(n), step, ao.lr, 0.0, -kInf, kInf);
            compress::adamUpdate(p.off.data(), goff.data(), aff.m[k].off.data(),
                                 aff.v[k].off.data(), size_t(n * n), step, ao.lr, 0.0, -kInf, kInf);
            p.project(ao.alpha, aff.band, ao.rho, ao.dMin);
        }
    }
};

/// The parameters with the lowest packed-result loss so far, and that result.
struct BestParams {
    std::map<std::string, PackedTensor> packed;
    std::vector<std::pair<std::vector<double>, std::vector<double>>> factors;
    Eigen::VectorXd tA, tM, dA, dM;
    std::vector<AffineParams> affine;
    int band = 0;

    void keep(const std::vector<Lwc>& lwc, const LetParams& let, const AffineState& aff) {
        for (size_t k = 0; k < lwc.size(); ++k) factors[k] = {lwc[k].a, lwc[k].b};
        tA = let.tA;
        tM = let.tM;
        dA = let.dA;
        dM = let.dM;
        affine = aff.p;
        band = aff.band;
    }
};

/// The epochs of Adam over the samples, keeping the best packed result after each. False
/// when cancelled.
bool trainEpochs(BlockTrainer& tr, const std::string& bname, Progress& progress,
                 OmniQuantBlockResult& res, BestParams& best) {
    const OmniQuantOptions& o = tr.o;
    LlamaBlock::Cache cache;
    BlockGrads grads;
    std::map<std::string, PackedTensor> cur;
    return runTrainingEpochs(
        tr.lwc.empty() ? 0 : o.epochs, tr.S, progress,
        bname + (tr.aff.on ? ": affinequant epoch " : ": omniquant epoch "), res,
        [&](size_t i, int t) {
            const double loss = tr.sampleGrads(i, cache, grads);
            tr.adamUpdate(t);
            return loss;
        },
        [&] {
            cur.clear();
            return tr.packedLoss(&cur);
        },
        [&] {
            best.packed = std::move(cur);
            best.keep(tr.lwc, tr.let, tr.aff);
        },
        [&](int e) {
            if (!tr.aff.on) return;
            tr.aff.band = affineBand(o.affine.mask, e, o.epochs, tr.aff.headDim);
            res.affineBand = tr.aff.band;
        });
}

/// The folded tensors, scales and shifts of the best LET parameters into the result.
void exportLet(BlockTrainer& tr, const BestParams& best, const std::string& bname,
               OmniQuantBlockResult& res) {
    LetParams& let = tr.let;
    tr.aff.p = best.affine;
    tr.aff.band = best.band;
    let.tA = best.tA;
    let.tM = best.tM;
    let.dA = best.dA;
    let.dM = best.dM;
    const BlockWeights cw = tr.folded();
    auto put = [&](const std::string& name, const MatD& m) {
        const Eigen::MatrixXf f = m.cast<float>().transpose(); // column-major of m^T
        res.folded[name].assign(f.data(), f.data() + f.size());
    };
    if (let.attn) {
        put(bname + ".attn_norm", cw.attnNorm.transpose());
        for (int i : {kQ, kK, kV}) put(bname + "." + blockLinearSuffix(i), cw.w[size_t(i)]);
        const Eigen::VectorXd sc = let.tA.array().exp().matrix();
        res.letScale[bname + ".attn_norm"].assign(sc.data(), sc.data() + sc.size());
        if (let.dA.size()) {
            put(bname + ".attn_norm.bias", cw.attnNormBias.transpose());
            for (int i : {kQ, kK, kV})
                put(bname + "." + blockLinearSuffix(i) + ".bias", cw.b[size_t(i)].transpose());
            res.letShift[bname + ".attn_norm"].assign(let.dA.data(), let.dA.data() + let.dA.size());
        }
    }
    if (let.mlp) {
        put(bname + ".mlp_norm", cw.mlpNorm.transpose());
        for (int i : {kGate, kUp}) put(bname + "." + blockLinearSuffix(i), cw.w[size_t(i)]);
        const Eigen::VectorXd sc = let.tM.array().exp().matrix();
        res.letScale[bname + ".mlp_norm"].assign(sc.data(), sc.data() + sc.size());
        if (let.dM.size()) {
            put(bname + ".mlp_norm.bias", cw.mlpNormBias.transpose());
            for (int i : {kGate, kUp})
                put(bname + "." + blockLinearSuffix(i) + ".bias", cw.b[size_t(i)].transpose());
            res.letShift[bname + ".mlp_norm"].assign(let.dM.data(), let.dM.data() + let.dM.size());
        }
    }
    if (tr.aff.on) {
        // v rows and o columns transformed (v's bias too when LET's shift gave it one).
        for (int i : {kV, kO}) put(bname + "." + blockLinearSuffix(i), cw.w[size_t(i)]);
        if (cw.b[kV].size()) put(bname + ".attn.v.bias", cw.b[kV].transpose());
        auto& mats = res.affine[bname + ".attn.v"];
        res.affineMargin = 1;
        res.affineOffRatio = 0;
        for (const MatD& a : tr.aff.matrices(tr.o.affine.alpha)) {
            mats.emplace_back(a.data(), a.data() + a.size());
            res.affineMargin = std::min(res.affineMargin, dominanceMargin(a));
            for (int64_t r = 0; r < a.rows(); ++r)
                for (int64_t c = 0; c < a.cols(); ++c)
                    if (r != c)
                        res.affineOffRatio =
                            std::max(res.affineOffRatio, std::fabs(a(r, c) / a(r, r)));
        }
    }
}

} // namespace

OmniQuantBlockResult omniquantBlock(const WeightSource& w, int layer,
                                    const std::vector<std::vector<float>>& inputs,
                                    const std::vector<std::vector<float>>& fpInputsArg,
                                    const std::map<std::string, WeightSettings>& settings,
                                    const OmniQuantOptions& o, Progress& progress,
                                    const std::map<std::string, std::vector<float>>* overrides) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelSpec& spec = w.spec();
    const std::string bname = "layers." + std::to_string(layer);
    if (inputs.empty()) throw ArgumentError(bname + ": omniquant needs calibration inputs");
    const auto& fpInputs = fpInputsArg.empty() ? inputs : fpInputsArg;
    const int64_t dim = spec.dim;
    const int64_t T = checkBlockInputs(bname, inputs, fpInputs, dim, o);
    const LlamaBlock fpBlock(spec, layer, T); // the targets: float activations
    LlamaBlock block(spec, layer, T);
    block.setActivationQuant(o.actBits, o.actClip);
    const EigenSingleThreaded eigenThreads;

    const BlockWeights fw = loadBlockWeights(w, layer, overrides);
    std::vector<Lwc> lwc;
    for (const auto& [name, s] : settings) lwc.push_back(lwcStart(bname, name, s, fw));
    LetParams let = letSites(o, lwc, dim);
    AffineState aff = affineSite(o, lwc, spec);

    OmniQuantBlockResult res;
    BlockTrainer tr{o, block, fw, lwc, let, aff, inputs, T, dim, inputs.size(), double(T * dim),
                    {}};
    blockTargets(fpBlock, fw, fpInputs, T, dim, tr.target, res.fpOutputs);

    BestParams best;
    res.lossStart = res.lossEnd = tr.packedLoss(&best.packed);
    for (const Lwc& l : lwc) best.factors.emplace_back(l.a, l.b);
    best.tA = let.tA, best.tM = let.tM, best.dA = let.dA, best.dM = let.dM;
    best.affine = aff.p;
    if (!trainEpochs(tr, bname, progress, res, best)) {
        res.status = Status::Cancelled;
        return res;
    }
    if (let.any() || aff.on) exportLet(tr, best, bname, res);
    for (size_t k = 0; k < lwc.size(); ++k)
        res.meanClip[lwc[k].name] = {lwcMeanFactor(best.factors[k].first),
                                     lwc[k].s.symmetric ? lwcMeanFactor(best.factors[k].first)
                                                        : lwcMeanFactor(best.factors[k].second)};
    res.packed = std::move(best.packed);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.report(1.0, bname + ": omniquant done");
    return res;
}

} // namespace lcw::compress
