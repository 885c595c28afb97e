// EfficientQAT Block-AP for one block (see efficientqat.h).
#include "core/compress/efficientqat.h"

#include "core/common/dtype.h"
#include "core/common/parallel.h"
#include "core/compress/e2e_model.h"
#include "core/runtime/cpu/kernels.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <tuple>

namespace lcw::compress {

double QatQuantizer::qmax() const {
    return settings.symmetric ? double((1 << (settings.bits - 1)) - 1)
                              : double((1 << settings.bits) - 1);
}

void checkEfficientQatOptions(const EfficientQatOptions& o) {
    auto fail = [](const char* field, const std::string& what) {
        throw ArgumentError(std::string("efficientqat: ") + field + " " + what);
    };
    if (o.epochs < 0) fail("epochs", "must be >= 0, got " + std::to_string(o.epochs));
    if (!(o.lrW >= 0 && o.lrW <= 1)) fail("lr_w", "must be in [0, 1]");
    if (!(o.lrQ >= 0 && o.lrQ <= 1)) fail("lr_q", "must be in [0, 1]");
    if (!(o.weightDecay >= 0 && o.weightDecay < 1)) fail("weight_decay", "must be in [0, 1)");
    if (o.e2eEpochs < 0) fail("e2e_epochs", "must be >= 0, got " + std::to_string(o.e2eEpochs));
    if (!(o.lrE2e > 0 && o.lrE2e <= 1)) fail("lr_e2e", "must be in (0, 1]");
}

QatQuantizer qatStart(const WeightSettings& s, const MatD& W, const std::string& name) {
    if (s.format != WeightFormat::Int || methodIsGguf(s.method) || s.ggufGrid)
        throw UnsupportedError(name + ": efficientqat supports int formats only, not " +
                               s.describe());
    if (s.bits < 2 || s.bits > 8) throw ArgumentError(name + ": int bits must be 2..8");
    QatQuantizer q;
    q.settings = s;
    q.rows = W.rows();
    q.cols = W.cols();
    const int64_t gpr = gridsPerRow(s, q.cols);
    const size_t ng = gpr == 0 ? 1 : size_t(q.rows * gpr);
    std::vector<float> mn(ng, 0.0f), mx(ng, 0.0f);
    q.grid.resize(size_t(q.rows * q.cols));
    for (int64_t r = 0; r < q.rows; ++r)
        for (int64_t j = 0; j < q.cols; ++j) {
            const double x = W(r, j);
            if (!std::isfinite(x))
                throw ArgumentError(name + ": non-finite weight at element " +
                                    std::to_string(r * q.cols + j));
            const size_t g = size_t(gridIndex(s, q.cols, r, j));
            q.grid[size_t(r * q.cols + j)] = int64_t(g);
            mn[g] = std::min(mn[g], float(x));
            mx[g] = std::max(mx[g], float(x));
        }
    q.scale.resize(ng);
    q.zero.assign(ng, 0.0);
    q.minScale.resize(ng);
    for (size_t g = 0; g < ng; ++g) {
        // RTN's grid, as quantize() stores it (f16 scale rounded up, integer zero point).
        const GroupGrid gg = groupGrid(s, mn[g], mx[g], name);
        q.scale[g] = double(f16ToF32(gg.scale));
        if (!s.symmetric) q.zero[g] = double(f16ToF32(gg.zero));
        q.minScale[g] = 0.01 * q.scale[g];
    }
    return q;
}

namespace {

/// One element: the rounded zero point, the unclamped code u = round(x / s) + zr and the
/// clamped code q (symmetric: zr = 0, the grid −qmax..qmax).
struct Elem {
    double zr, u, q;
    bool in;
};

Elem quantElem(const QatQuantizer& qz, double x, size_t g) {
    const double qm = qz.qmax(), s = qz.scale[g];
    Elem e{};
    if (qz.settings.symmetric) {
        e.zr = 0.0;
        e.u = std::nearbyint(x / s);
        e.q = std::clamp(e.u, -qm, qm);
    } else {
        e.zr = std::clamp(std::nearbyint(qz.zero[g]), 0.0, qm);
        e.u = std::nearbyint(x / s) + e.zr;
        e.q = std::clamp(e.u, 0.0, qm);
    }
    e.in = e.q == e.u;
    return e;
}

} // namespace

MatD qatFakeQuant(const QatQuantizer& q, const MatD& W) {
    MatD out(q.rows, q.cols);
    for (int64_t i = 0; i < q.rows * q.cols; ++i) {
        const size_t g = size_t(q.grid[size_t(i)]);
        if (!(q.scale[g] > 0)) {
            out.data()[i] = 0.0;
            continue;
        }
        const Elem e = quantElem(q, W.data()[i], g);
        out.data()[i] = (e.q - e.zr) * q.scale[g];
    }
    return out;
}

void qatBackward(const QatQuantizer& q, const MatD& W, const MatD& gWhat, MatD& gW,
                 std::vector<double>& gs, std::vector<double>& gz) {
    gW = MatD::Zero(q.rows, q.cols);
    gs.assign(q.scale.size(), 0.0);
    gz.assign(q.scale.size(), 0.0);
    for (int64_t i = 0; i < q.rows * q.cols; ++i) {
        const size_t g = size_t(q.grid[size_t(i)]);
        const double s = q.scale[g];
        if (!(s > 0)) continue;
        const double x = W.data()[i], d = gWhat.data()[i];
        const Elem e = quantElem(q, x, g);
        if (e.in) {
            // Ŵ = round(x / s) · s with round passed through: dŴ/dx = 1, dŴ/ds = round(x/s) − x/s.
            gW.data()[i] = d;
            gs[g] += d * (e.u - e.zr - x / s);
        } else {
            // Ŵ = (q − round(z)) · s with q a grid end: dŴ/ds = q − zr, dŴ/dz = −s.
            gs[g] += d * (e.q - e.zr);
            if (!q.settings.symmetric) gz[g] -= d * s;
        }
    }
}

PackedTensor qatPack(const QatQuantizer& q, const MatD& W, const std::string& name) {
    const WeightSettings& s = q.settings;
    std::vector<GroupGrid> grids(q.scale.size());
    for (size_t g = 0; g < grids.size(); ++g) {
        uint16_t h = f32ToF16(float(q.scale[g]));
        if (q.scale[g] > 0 && !(f16ToF32(h) > 0)) h = 1; // the smallest f16 step, never 0
        if (!std::isfinite(f16ToF32(h)))
            throw ArgumentError(name + ": efficientqat step size " + std::to_string(q.scale[g]) +
                                " does not fit f16");
        grids[g].scale = h;
        grids[g].zero =
            s.symmetric ? 0 : f32ToF16(float(std::clamp(std::nearbyint(q.zero[g]), 0.0, q.qmax())));
    }
    std::vector<uint32_t> codes(size_t(q.rows * q.cols));
    for (int64_t i = 0; i < q.rows * q.cols; ++i)
        codes[size_t(i)] = encodeOnGrid(s, float(W.data()[i]), grids[size_t(q.grid[size_t(i)])]);
    return packCodes(s, q.rows, q.cols, codes, grids);
}

namespace {

/// One learned linear: its weights and quantiser with Adam moments.
struct QatLinear {
    std::string name;
    int index = 0; ///< BlockLinear
    MatD W0, W, mW, vW;
    QatQuantizer q;
    std::vector<double> ms, vs, mz, vz;
};

QatLinear startLinear(const std::string& bname, const std::string& name, const WeightSettings& s,
                      const BlockWeights& fw) {
    const int idx = blockLinearIndex(bname, name);
    if (idx < 0)
        throw ArgumentError(name + ": efficientqat learns the linears of block " + bname +
                            " only (attn.q/k/v/o, mlp.gate/up/down)");
    QatLinear l;
    l.name = name;
    l.index = idx;
    l.W0 = l.W = fw.w[size_t(idx)];
    l.q = qatStart(s, l.W, name);
    l.mW = l.vW = MatD::Zero(l.W.rows(), l.W.cols());
    l.ms = l.vs = l.mz = l.vz = std::vector<double>(l.q.scale.size(), 0.0);
    return l;
}

/// The learned state kept as the best so far.
struct QatState {
    std::vector<MatD> W;
    std::vector<std::vector<double>> scale, zero;
    std::map<std::string, PackedTensor> packed;
    void keep(const std::vector<QatLinear>& ls) {
        W.clear();
        scale.clear();
        zero.clear();
        for (const QatLinear& l : ls) {
            W.push_back(l.W);
            scale.push_back(l.q.scale);
            zero.push_back(l.q.zero);
        }
    }
};

struct BlockAp {
    const EfficientQatOptions& o;
    const LlamaBlock& block;
    const BlockWeights& fw;
    std::vector<QatLinear>& lin;
    const std::vector<std::vector<float>>& inputs;
    int64_t T, dim;
    double norm;
    std::vector<MatD> target;

    /// Block error of the packed result (stored values) for the current parameters.
    double packedLoss(std::map<std::string, PackedTensor>* out) const {
        BlockWeights qw = fw;
        for (const QatLinear& l : lin) {
            PackedTensor p = qatPack(l.q, l.W, l.name);
            qw.w[size_t(l.index)] = blockMatrix(dequantize(p, l.name), l.W.rows(), l.W.cols());
            if (out) (*out)[l.name] = std::move(p);
        }
        double sum = 0;
        ParallelErrors errors;
#pragma omp parallel for schedule(dynamic) reduction(+ : sum)
        for (int64_t i = 0; i < int64_t(inputs.size()); ++i)
            errors.run([&] {
                MatD y;
                block.forward(qw, blockMatrix(inputs[size_t(i)], T, dim), y, nullptr);
                sum += (y - target[size_t(i)]).squaredNorm() / norm;
            });
        errors.rethrow();
        return sum / double(inputs.size());
    }

    /// Forward and backward of sample i on the fake-quantised weights, then one Adam step of
    /// W, s, z; returns the sample's loss (before the step).
    double step(size_t i, int t, LlamaBlock::Cache& cache, BlockGrads& grads) {
        BlockWeights qw = fw;
        for (const QatLinear& l : lin) qw.w[size_t(l.index)] = qatFakeQuant(l.q, l.W);
        MatD y;
        block.forward(qw, blockMatrix(inputs[i], T, dim), y, &cache);
        const MatD diff = y - target[i];
        const double loss = diff.squaredNorm() / norm;
        grads.zeroLike(qw);
        block.backward(qw, cache, diff * (2.0 / norm), grads);
        MatD gW;
        std::vector<double> gs, gz;
        for (QatLinear& l : lin) {
            qatBackward(l.q, l.W, grads.w[size_t(l.index)], gW, gs, gz);
            adamUpdate(l.W.data(), gW.data(), l.mW.data(), l.vW.data(), size_t(l.W.size()), t,
                       o.lrW, o.weightDecay, nullptr, INFINITY);
            adamUpdate(l.q.scale.data(), gs.data(), l.ms.data(), l.vs.data(), gs.size(), t, o.lrQ,
                       0.0, l.q.minScale.data(), INFINITY);
            if (!l.q.settings.symmetric)
                adamUpdate(l.q.zero.data(), gz.data(), l.mz.data(), l.vz.data(), gz.size(), t,
                           o.lrQ, 0.0, 0.0, l.q.qmax());
        }
        return loss;
    }
};

} // namespace

EfficientQatBlockResult
efficientQatBlock(const WeightSource& w, int layer, const std::vector<std::vector<float>>& inputs,
                  const std::vector<std::vector<float>>& fpInputsArg,
                  const std::map<std::string, WeightSettings>& settings,
                  const EfficientQatOptions& o, Progress& progress,
                  const std::map<std::string, std::vector<float>>* overrides) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelSpec& spec = w.spec();
    const std::string bname = "layers." + std::to_string(layer);
    checkEfficientQatOptions(o);
    const auto& fpInputs = fpInputsArg.empty() ? inputs : fpInputsArg;
    const int64_t dim = spec.dim;
    const int64_t T = blockInputTokens(bname, "efficientqat", inputs, fpInputs, dim);
    const LlamaBlock block(spec, layer, T);
    const EigenSingleThreaded eigenThreads;

    const BlockWeights fw = loadBlockWeights(w, layer, overrides);
    std::vector<QatLinear> lin;
    for (const auto& [name, s] : settings) lin.push_back(startLinear(bname, name, s, fw));

    EfficientQatBlockResult res;
    BlockAp ap{o, block, fw, lin, inputs, T, dim, double(T * dim), {}};
    blockTargets(block, fw, fpInputs, T, dim, ap.target, res.fpOutputs);

    QatState best;
    res.lossStart = res.lossEnd = ap.packedLoss(&best.packed);
    best.keep(lin);
    LlamaBlock::Cache cache;
    BlockGrads grads;
    std::map<std::string, PackedTensor> cur;
    const bool done = runTrainingEpochs(
        lin.empty() ? 0 : o.epochs, inputs.size(), progress,
        bname + ": efficientqat block-ap epoch ", res,
        [&](size_t i, int t) { return ap.step(i, t, cache, grads); },
        [&] {
            cur.clear();
            return ap.packedLoss(&cur);
        },
        [&] {
            best.packed = std::move(cur);
            best.keep(lin);
        });
    if (!done) {
        res.status = Status::Cancelled;
        return res;
    }
    for (size_t k = 0; k < lin.size(); ++k) {
        const double n0 = lin[k].W0.norm();
        res.weightChange[lin[k].name] = n0 > 0 ? (best.W[k] - lin[k].W0).norm() / n0 : 0.0;
    }
    res.packed = std::move(best.packed);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.report(1.0, bname + ": efficientqat done");
    return res;
}

} // namespace lcw::compress

// ---- E2E-QP ----

namespace lcw::compress {

namespace {

/// Block and index (block_grad.h) of a block linear; layer -1 when `name` is none.
std::pair<int, int> blockLinearOf(const ModelSpec& spec, const std::string& name) {
    for (int b = 0; b < int(spec.nLayers); ++b) {
        const int i = blockLinearIndex("layers." + std::to_string(b), name);
        if (i >= 0) return {b, i};
    }
    return {-1, 0};
}

/// A packed linear with its codes fixed: K = k − z per element, the step sizes trained.
struct E2eLinear {
    std::string name;
    int layer = 0, index = 0;
    PackedTensor packed;
    std::vector<int64_t> grid;
    MatD K;
    std::vector<double> s, sLo, m, v;
};

E2eLinear e2eLinear(const ModelSpec& spec, const std::string& name, const PackedTensor& p) {
    E2eLinear l;
    l.name = name;
    std::tie(l.layer, l.index) = blockLinearOf(spec, name);
    if (l.layer < 0) throw ArgumentError(name + ": efficientqat e2e trains block linears only");
    const WeightSettings& s = p.settings;
    if (s.format != WeightFormat::Int || methodIsGguf(s.method) || s.ggufGrid ||
        methodIsCompact(s.method) || !p.colOrder.empty() || !p.outlierCols.empty())
        throw UnsupportedError(name + ": efficientqat e2e needs plain int group codes, not " +
                               s.describe());
    l.packed = p;
    const std::vector<float> vals = dequantize(p, name);
    const double qm = s.symmetric ? double((1 << (s.bits - 1)) - 1) : double((1 << s.bits) - 1);
    l.K.resize(p.rows, p.cols);
    l.grid.resize(size_t(p.rows * p.cols));
    for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t j = 0; j < p.cols; ++j) {
            const size_t g = size_t(gridIndex(s, p.cols, r, j));
            l.grid[size_t(r * p.cols + j)] = int64_t(g);
            const double sc = f16ToF32(p.scales[g]);
            const double z = s.symmetric ? 0.0 : f16ToF32(p.zeros[g]);
            // The stored value is (k − z)·sc exactly: the code is recovered by rounding.
            const double k =
                sc > 0 ? std::nearbyint(double(vals[size_t(r * p.cols + j)]) / sc + z) : z;
            l.K(r, j) = std::clamp(k, s.symmetric ? -qm : 0.0, qm) - z;
        }
    for (uint16_t h : p.scales) l.s.push_back(f16ToF32(h));
    for (double x : l.s) l.sLo.push_back(0.01 * x);
    l.m = l.v = std::vector<double>(l.s.size(), 0.0);
    return l;
}

MatD e2eWeights(const E2eLinear& l, const std::vector<double>& s) {
    MatD W(l.K.rows(), l.K.cols());
    for (int64_t i = 0; i < W.size(); ++i)
        W.data()[i] = l.K.data()[i] * s[size_t(l.grid[size_t(i)])];
    return W;
}

std::vector<double> f16Steps(const std::vector<double>& s) {
    std::vector<double> out(s.size());
    for (size_t g = 0; g < s.size(); ++g) {
        uint16_t h = f32ToF16(float(s[g]));
        if (s[g] > 0 && !(f16ToF32(h) > 0)) h = 1;
        out[g] = f16ToF32(h);
    }
    return out;
}

/// dL/ds of a linear from dL/dŴ (Ŵ = K·s per group).
std::vector<double> stepGrads(const E2eLinear& l, const MatD& gW) {
    std::vector<double> gs(l.s.size(), 0.0);
    for (int64_t k = 0; k < gW.size(); ++k)
        gs[size_t(l.grid[size_t(k)])] += gW.data()[k] * l.K.data()[k];
    return gs;
}

} // namespace

double efficientQatE2eLoss(const WeightSource& w, const std::map<std::string, PackedTensor>& packed,
                           const std::map<std::string, std::vector<double>>& steps,
                           const std::vector<int32_t>& window,
                           std::map<std::string, std::vector<double>>* grads) {
    if (window.size() < 2) throw ArgumentError("efficientqat e2e needs windows of >= 2 tokens");
    const EigenSingleThreaded eigenThreads;
    E2eModel model = loadE2eModel(w, int64_t(window.size()), "efficientqat e2e");
    std::vector<E2eLinear> lin;
    for (const auto& [name, p] : packed) {
        lin.push_back(e2eLinear(w.spec(), name, p));
        E2eLinear& l = lin.back();
        if (const auto it = steps.find(name); it != steps.end()) {
            if (it->second.size() != l.s.size())
                throw ArgumentError(name + ": " + std::to_string(it->second.size()) +
                                    " step sizes for " + std::to_string(l.s.size()) + " groups");
            l.s = it->second;
        }
        model.blocks[size_t(l.layer)].w[size_t(l.index)] = e2eWeights(l, l.s);
    }
    std::vector<BlockGrads> g;
    const double loss = model.run(window, grads ? &g : nullptr);
    if (grads)
        for (const E2eLinear& l : lin)
            (*grads)[l.name] = stepGrads(l, g[size_t(l.layer)].w[size_t(l.index)]);
    return loss;
}

FisherResult blockLinearFisher(const WeightSource& w, const std::vector<std::string>& names,
                               const std::vector<std::vector<int32_t>>& windows, Progress& progress,
                               double maxBytes) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelSpec& spec = w.spec();
    const int64_t T = windowLength(windows, "fisher");
    std::vector<std::pair<int, int>> where;
    for (const std::string& name : names) {
        where.push_back(blockLinearOf(spec, name));
        if (where.back().first < 0)
            throw ArgumentError(name + ": the Fisher sensitivity covers block linears only");
    }
    // The model and one set of gradients per thread, in double (plus the Fisher sums, float).
    const double params = double(spec.vocab) * double(spec.dim) * 2 +
                          double(spec.nLayers) * (double(spec.dim) * double(spec.headDim) *
                                                      double(2 * spec.nHeads + 2 * spec.nKvHeads) +
                                                  3.0 * double(spec.dim) * double(spec.hidden));
    const double need =
        8 * params * double(1 + 2 * std::max(1, omp_get_max_threads())) + 4 * params;
    if (need > maxBytes)
        throw UnsupportedError("the Fisher sensitivity backpropagates through the whole model in "
                               "double precision: about " +
                               std::to_string(int64_t(need / 1e9 + 0.5)) +
                               " GB here; use \"sensitivity\": \"gram\"");
    const EigenSingleThreaded eigenThreads;
    const E2eModel model = loadE2eModel(w, T, "fisher");
    FisherResult res;
    for (size_t k = 0; k < names.size(); ++k) {
        const MatD& W = model.blocks[size_t(where[k].first)].w[size_t(where[k].second)];
        res.fisher[names[k]].assign(size_t(W.size()), 0.0f);
    }
    // Windows in batches of one per thread; each slot accumulates its own squared gradients.
    const int64_t nt = std::max(1, omp_get_max_threads());
    std::vector<std::vector<MatD>> part(static_cast<size_t>(nt));
    for (auto& pt : part)
        for (size_t k = 0; k < names.size(); ++k) {
            const MatD& W = model.blocks[size_t(where[k].first)].w[size_t(where[k].second)];
            pt.push_back(MatD::Zero(W.rows(), W.cols()));
        }
    std::vector<std::vector<BlockGrads>> grads(static_cast<size_t>(nt));
    std::vector<double> loss(windows.size(), 0.0);
    const int64_t S = int64_t(windows.size());
    for (int64_t i0 = 0; i0 < S; i0 += nt) {
        if (!progress.report(double(i0) / double(S), "fisher: window " + std::to_string(i0 + 1) +
                                                         "/" + std::to_string(S))) {
            res.status = Status::Cancelled;
            return res;
        }
        const int64_t n = std::min(nt, S - i0);
        ParallelErrors errors;
#pragma omp parallel for schedule(static) num_threads(int(nt))
        for (int64_t k = 0; k < n; ++k)
            errors.run([&] {
                loss[size_t(i0 + k)] = model.run(windows[size_t(i0 + k)], &grads[size_t(k)]);
                for (size_t q = 0; q < names.size(); ++q)
                    part[size_t(k)][q].array() += grads[size_t(k)][size_t(where[q].first)]
                                                      .w[size_t(where[q].second)]
                                                      .array()
                                                      .square();
            });
        errors.rethrow();
    }
    for (int64_t t = 1; t < nt; ++t)
        for (size_t q = 0; q < names.size(); ++q) part[0][q] += part[size_t(t)][q];
    const std::vector<MatD>& sum = part[0];
    // Row-major, as the weights.
    for (size_t k = 0; k < names.size(); ++k) {
        std::vector<float>& f = res.fisher[names[k]];
        const int64_t cols = sum[k].cols();
        for (int64_t r = 0; r < sum[k].rows(); ++r)
            for (int64_t j = 0; j < cols; ++j) f[size_t(r * cols + j)] = float(sum[k](r, j));
    }
    double tot = 0;
    for (double v : loss) tot += v;
    res.meanLoss = tot / double(windows.size());
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

EfficientQatE2eResult efficientQatEndToEnd(const WeightSource& w,
                                           const std::map<std::string, PackedTensor>& packed,
                                           const std::vector<std::vector<int32_t>>& windows,
                                           const EfficientQatOptions& o, Progress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    checkEfficientQatOptions(o);
    const ModelSpec& spec = w.spec();
    const int64_t T = windowLength(windows, "efficientqat e2e");
    const EigenSingleThreaded eigenThreads;
    E2eModel model = loadE2eModel(w, T, "efficientqat e2e");
    std::vector<E2eLinear> lin;
    for (const auto& [name, p] : packed) lin.push_back(e2eLinear(spec, name, p));
    auto setWeights = [&](bool stored) {
        for (const E2eLinear& l : lin)
            model.blocks[size_t(l.layer)].w[size_t(l.index)] =
                e2eWeights(l, stored ? f16Steps(l.s) : l.s);
    };
    auto meanLoss = [&] {
        setWeights(true);
        std::vector<double> part(windows.size(), 0.0);
        ParallelErrors errors;
#pragma omp parallel for schedule(dynamic)
        for (int64_t i = 0; i < int64_t(windows.size()); ++i)
            errors.run([&] { part[size_t(i)] = model.run(windows[size_t(i)], nullptr); });
        errors.rethrow();
        double sum = 0;
        for (double v : part) sum += v;
        return sum / double(windows.size());
    };
    EfficientQatE2eResult res;
    res.lossStart = res.lossEnd = meanLoss();
    std::vector<std::vector<double>> best;
    for (const E2eLinear& l : lin) best.push_back(l.s);
    std::vector<BlockGrads> grads;
    const bool done = runTrainingEpochs(
        lin.empty() ? 0 : o.e2eEpochs, windows.size(), progress, "efficientqat e2e-qp epoch ", res,
        [&](size_t i, int t) {
            setWeights(false);
            const double loss = model.run(windows[i], &grads);
            for (E2eLinear& l : lin) {
                const std::vector<double> gs =
                    stepGrads(l, grads[size_t(l.layer)].w[size_t(l.index)]);
                adamUpdate(l.s.data(), gs.data(), l.m.data(), l.v.data(), gs.size(), t, o.lrE2e,
                           0.0, l.sLo.data(), INFINITY);
            }
            return loss;
        },
        meanLoss,
        [&] {
            for (size_t k = 0; k < lin.size(); ++k) best[k] = lin[k].s;
        });
    if (!done) {
        res.status = Status::Cancelled;
        return res;
    }
    for (size_t k = 0; k < lin.size(); ++k) {
        PackedTensor p = lin[k].packed;
        const std::vector<double> s16 = f16Steps(best[k]);
        for (size_t g = 0; g < s16.size(); ++g) p.scales[g] = f32ToF16(float(s16[g]));
        res.packed[lin[k].name] = std::move(p);
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.report(1.0, "efficientqat e2e-qp done");
    return res;
}

} // namespace lcw::compress
