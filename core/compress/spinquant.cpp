// Learned rotations (SpinQuant): the simulated quantised model's loss as a function of the
// rotation matrices, its gradient, and Cayley SGD (see spinquant.h).
#include "core/compress/spinquant.h"

#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/parallel.h"
#include "core/compress/e2e_model.h"
#include "core/compress/wkvquant.h"
#include "core/runtime/hadamard.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>

namespace lcw::compress {

namespace {

using runtime::OrthoTransform;

MatD toMat(const std::vector<double>& v, int64_t n) {
    return Eigen::Map<const MatD>(v.data(), n, n);
}
std::vector<double> toVec(const MatD& m) {
    return std::vector<double>(m.data(), m.data() + m.size());
}

/// The activation settings of one linear input site (null: float).
const ActivationPlan* actOf(const Plan& plan, const std::string& name) {
    for (const ActivationPlan& a : plan.activations)
        if (a.name == name) return &a;
    return nullptr;
}

std::string actKey(const ActivationPlan* a) {
    return a ? a->act.describe() : std::string("float");
}

} // namespace

SpinQuantSimulation spinQuantSimulation(const Plan& plan, const ModelSpec& spec) {
    SpinQuantSimulation sim;
    const int64_t L = spec.nLayers;
    sim.actBits.assign(size_t(L), {0, 0, 0, 0});
    sim.actClip.assign(size_t(L), {1, 1, 1, 1});
    sim.kv.assign(size_t(L), {});
    for (const ActivationPlan& a : plan.activations) {
        auto refuse = [&](const std::string& why) {
            throw RecipeError(a.rule, "rotation.method",
                              "learned rotations (spinquant) simulate dynamic per-token "
                              "activations without groups or outliers; " +
                                  a.name + " has " + why);
        };
        if (!a.act.perToken) refuse("static per-tensor activations");
        if (a.act.groupSize > 0) refuse("activation groups");
        if (a.outliers) refuse("outlier channels");
    }
    for (int64_t l = 0; l < L; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        // The block model's four input sites and the linears that share them.
        const std::vector<std::vector<const char*>> sites = {
            {"attn.q", "attn.k", "attn.v"}, {"attn.o"}, {"mlp.gate", "mlp.up"}, {"mlp.down"}};
        for (size_t s = 0; s < sites.size(); ++s) {
            const ActivationPlan* first = actOf(plan, p + sites[s][0]);
            for (const char* n : sites[s]) {
                const ActivationPlan* a = actOf(plan, p + n);
                if (actKey(a) != actKey(first))
                    throw RecipeError(a ? a->rule : first->rule, "rotation.method",
                                      "learned rotations (spinquant) need one activation setting "
                                      "per input: " +
                                          p + sites[s][0] + " has " + actKey(first) + ", " + p + n +
                                          " " + actKey(a));
            }
            if (first) {
                sim.actBits[size_t(l)][s] = first->act.bits;
                sim.actClip[size_t(l)][s] = first->act.clip;
            }
        }
    }
    for (const KvPlan& k : plan.kv) {
        if (k.kv.kGranularity != KvGranularity::Token || k.kv.vGranularity != KvGranularity::Token)
            throw RecipeError(k.rule, "rotation.method",
                              "learned rotations (spinquant) simulate per-token KV quantisation; "
                              "block " +
                                  std::to_string(k.layer) + " quantises its cache per channel");
        SpinQuantSimulation::Kv& kv = sim.kv[size_t(k.layer)];
        kv.kBits = k.kv.kBits;
        kv.vBits = k.kv.vBits;
        kv.groupSize = k.kv.groupSize;
        kv.pastOnly = k.kv.pastOnly;
    }
    for (const LayerPlan& l : plan.layers) {
        if (!l.quantize || l.sparsity || l.lowrank) continue;
        if (l.weight.method != WeightMethod::Rtn && !methodIsGguf(l.weight.method)) continue;
        bool block = false;
        for (int64_t b = 0; b < L && !block; ++b)
            block = blockLinearIndex("layers." + std::to_string(b), l.name) >= 0;
        if (block) sim.weights[l.name] = l.weight;
    }
    return sim;
}

LearnedRotation hadamardRotation(const ModelSpec& spec, const RotationSettings& rs) {
    LearnedRotation r;
    r.r1 = OrthoTransform(spec.dim, runtime::rotationSeed(rs.seed, runtime::kRotResidual), true)
               .matrix();
    if (rs.kv)
        r.r2.assign(
            size_t(spec.nLayers),
            OrthoTransform(spec.headDim, runtime::rotationSeed(rs.seed, runtime::kRotHead), false)
                .matrix());
    return r;
}

double cayleyStep(std::vector<double>& x, const std::vector<double>& g, int64_t n, double lr) {
    const MatD X = toMat(x, n), G = toMat(g, n);
    const MatD W = -0.5 * (G * X.transpose() - X * G.transpose());
    const double norm1 = W.cwiseAbs().colwise().sum().maxCoeff();
    const double alpha = std::min(lr, 1.0 / (norm1 + 1e-8));
    const MatD I = MatD::Identity(n, n);
    const MatD Y = (I - 0.5 * alpha * W).partialPivLu().solve((I + 0.5 * alpha * W) * X);
    x = toVec(Y);
    return alpha;
}

// ---- the objective ----

struct SpinQuantObjective::Impl {
    RotatedModel folded;         ///< norms (and the online down transform) folded, R = I
    std::unique_ptr<E2eModel> a; ///< its weights in double (A below)
    SpinQuantSimulation sim;
    RotationSettings rs;
    OrthoTransform head, down;
    int64_t T = 0;

    /// The model with R and R2 folded in and the RTN linears fake-quantised.
    E2eModel rotated(const MatD& R, const std::vector<MatD>& R2) const {
        const ModelSpec& s = a->spec;
        const int64_t hd = s.headDim;
        E2eModel m{s,
                   a->embed * R.transpose(),
                   a->head * R.transpose(),
                   a->finalNorm,
                   a->blocks,
                   a->block,
                   T,
                   a->what};
        for (int64_t l = 0; l < s.nLayers; ++l) {
            BlockWeights& w = m.blocks[size_t(l)];
            for (int i : {kQ, kK, kV, kGate, kUp}) w.w[size_t(i)] = w.w[size_t(i)] * R.transpose();
            w.w[kO] = R * w.w[kO];
            w.w[kDown] = R * w.w[kDown];
            for (int i : {kO, kDown})
                if (w.b[size_t(i)].size()) w.b[size_t(i)] = R * w.b[size_t(i)];
            if (!R2.empty()) {
                const MatD& H = R2[size_t(l)];
                for (int64_t r0 = 0; r0 < w.w[kV].rows(); r0 += hd) {
                    w.w[kV].middleRows(r0, hd) = H * w.w[kV].middleRows(r0, hd);
                    if (w.b[kV].size()) w.b[kV].segment(r0, hd) = H * w.b[kV].segment(r0, hd);
                }
                for (int64_t c0 = 0; c0 < w.w[kO].cols(); c0 += hd)
                    w.w[kO].middleCols(c0, hd) = w.w[kO].middleCols(c0, hd) * H.transpose();
            }
            for (int i = 0; i < 7; ++i) {
                const std::string name = "layers." + std::to_string(l) + "." + blockLinearSuffix(i);
                const auto it = sim.weights.find(name);
                if (it == sim.weights.end()) continue;
                MatD& W = w.w[size_t(i)];
                std::vector<float> f(size_t(W.size()));
                for (int64_t k = 0; k < W.size(); ++k) f[size_t(k)] = float(W.data()[k]);
                const std::vector<float> q =
                    dequantize(quantize(f.data(), W.rows(), W.cols(), it->second, name), name);
                for (int64_t k = 0; k < W.size(); ++k) W.data()[k] = double(q[size_t(k)]);
            }
        }
        return m;
    }
};

SpinQuantObjective::SpinQuantObjective(const Model& base, const RotationSettings& rs,
                                       const SpinQuantSimulation& sim, int64_t T)
    : m(std::make_unique<Impl>()) {
    const ModelSpec& s = base.spec();
    m->folded = normFoldedModel(base, rs);
    m->a = std::make_unique<E2eModel>(loadE2eModel(*m->folded.model, T, "spinquant"));
    m->sim = sim;
    m->rs = rs;
    m->T = T;
    if (sim.actBits.size() != size_t(s.nLayers) || sim.kv.size() != size_t(s.nLayers))
        throw ArgumentError("spinquant: a simulation for " + std::to_string(sim.kv.size()) +
                            " blocks, the model has " + std::to_string(s.nLayers));
    if (rs.kv)
        m->head =
            OrthoTransform(s.headDim, runtime::rotationSeed(rs.seed, runtime::kRotHead), false);
    if (rs.down)
        m->down =
            OrthoTransform(s.hidden, runtime::rotationSeed(rs.seed, runtime::kRotDown), false);
    const OrthoTransform* head = rs.kv ? &m->head : nullptr;
    const OrthoTransform* down = rs.down ? &m->down : nullptr;
    const int64_t hd = s.headDim;
    for (int64_t l = 0; l < s.nLayers; ++l) {
        LlamaBlock& b = m->a->block[size_t(l)];
        b.setActivationQuant(sim.actBits[size_t(l)], sim.actClip[size_t(l)]);
        const SpinQuantSimulation::Kv kv = sim.kv[size_t(l)];
        if (kv.kBits < 16 || kv.vBits < 16)
            b.setKvQuant(
                [kv, head, hd](MatD& k, MatD& v) {
                    // Keys are stored in the rotated head basis (online_qk): rotate, quantise,
                    // rotate back (the scores are the same in either basis).
                    auto heads = [&](bool transposed) {
                        if (!head) return;
                        for (int64_t t = 0; t < k.rows(); ++t)
                            for (int64_t c0 = 0; c0 < k.cols(); c0 += hd) {
                                double* x = k.data() + t * k.cols() + c0;
                                transposed ? head->applyTransposed(x) : head->apply(x);
                            }
                    };
                    heads(false);
                    fakeQuantKvRows(k, kv.kBits, kv.groupSize, {});
                    heads(true);
                    fakeQuantKvRows(v, kv.vBits, kv.groupSize, {});
                },
                kv.pastOnly);
        if (down)
            b.setOnlineDown([down](MatD& rows, bool transposed) {
                for (int64_t t = 0; t < rows.rows(); ++t) {
                    double* x = rows.data() + t * rows.cols();
                    transposed ? down->applyTransposed(x) : down->apply(x);
                }
            });
    }
}

SpinQuantObjective::~SpinQuantObjective() = default;

namespace {

double mean(const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / double(v.size());
}

/// Gradients w.r.t. the rotated weights of a model, summed over windows.
struct GradSum {
    std::vector<BlockGrads> blocks;
    MatD head, embed;
    bool used = false; ///< holds at least one window
    /// Adds one window's block gradients (moved in when this sum is still empty).
    void addBlocks(std::vector<BlockGrads>&& g) {
        if (blocks.empty()) {
            blocks = std::move(g);
            return;
        }
        for (size_t l = 0; l < blocks.size(); ++l)
            for (size_t k = 0; k < 7; ++k) {
                blocks[l].w[k] += g[l].w[k];
                if (blocks[l].b[k].size()) blocks[l].b[k] += g[l].b[k];
            }
    }
    void add(GradSum&& o) {
        head += o.head;
        embed += o.embed;
        addBlocks(std::move(o.blocks));
    }
};

/// The windows' losses (into `loss`) and their gradients summed, one partial sum per thread.
/// Static split: the same windows go to the same partial sum in the same order on every run (the
/// sums, and so the learned matrices, are reproducible for a given thread count).
GradSum sumGradients(const E2eModel& M, const std::vector<std::vector<int32_t>>& windows,
                     std::vector<double>& loss) {
    const int64_t S = int64_t(windows.size()), dim = M.spec.dim;
    const int nt = std::max(1, std::min<int>(omp_get_max_threads(), int(S)));
    std::vector<GradSum> part(static_cast<size_t>(nt));
    ParallelErrors errors;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < S; ++i)
        errors.run([&] {
            GradSum& p = part[size_t(omp_get_thread_num())];
            if (!p.used) {
                p.embed = MatD::Zero(M.embed.rows(), dim);
                p.head = MatD::Zero(M.head.rows(), dim);
                p.used = true;
            }
            std::vector<BlockGrads> g;
            MatD dHead;
            loss[size_t(i)] = M.run(windows[size_t(i)], &g, &dHead, &p.embed);
            p.head += dHead;
            p.addBlocks(std::move(g));
        });
    errors.rethrow();
    size_t first = 0;
    while (!part[first].used) ++first; // S >= 1: some thread ran a window
    for (size_t t = first + 1; t < part.size(); ++t)
        if (part[t].used) part[first].add(std::move(part[t]));
    return std::move(part[first]);
}

/// Chain rule from the gradients G of the rotated weights (the unrotated weights A) to R and R2
/// (column-vector convention), divided by `count`:
///   W' = A Rᵀ (embed, lm_head, q, k, gate, up):    dR += G'ᵀ A
///   W' = B A Rᵀ (v, B = blockdiag R2):              dR += G'ᵀ (B A),  dB += G' (A Rᵀ)ᵀ
///   W' = R A Bᵀ (o):                                dR += G' (A Bᵀ)ᵀ, dB += G'ᵀ (R A)
///   W' = R A (down), b' = R b (o, down biases):    dR += G' Aᵀ,      dR += g bᵀ
///   b' = B b (v bias):                              dB += g bᵀ
LearnedRotation rotationGradient(const E2eModel& A, const GradSum& G, const MatD& R,
                                 const std::vector<MatD>& R2, double count) {
    const int64_t hd = A.spec.headDim;
    MatD dR = G.embed.transpose() * A.embed + G.head.transpose() * A.head;
    std::vector<MatD> dR2(R2.size(), MatD::Zero(hd, hd));
    auto blockDiag = [&](const MatD& H, int64_t n) { // blockdiag(H, ..., H), n blocks
        MatD B = MatD::Zero(n * hd, n * hd);
        for (int64_t h = 0; h < n; ++h) B.block(h * hd, h * hd, hd, hd) = H;
        return B;
    };
    auto addDiag = [&](MatD& acc, const MatD& dB) {
        for (int64_t h = 0; h < dB.rows() / hd; ++h) acc += dB.block(h * hd, h * hd, hd, hd);
    };
    for (size_t l = 0; l < A.blocks.size(); ++l) {
        const BlockWeights& w = A.blocks[l];
        const BlockGrads& g = G.blocks[l];
        for (int i : {kQ, kK, kGate, kUp}) dR += g.w[size_t(i)].transpose() * w.w[size_t(i)];
        dR += g.w[kDown] * w.w[kDown].transpose();
        if (w.b[kDown].size()) dR += g.b[kDown] * w.b[kDown].transpose();
        if (w.b[kO].size()) dR += g.b[kO] * w.b[kO].transpose();
        if (R2.empty()) {
            dR += g.w[kV].transpose() * w.w[kV];
            dR += g.w[kO] * w.w[kO].transpose();
            continue;
        }
        const MatD Bv = blockDiag(R2[l], w.w[kV].rows() / hd);
        const MatD Bo = blockDiag(R2[l], w.w[kO].cols() / hd);
        dR += g.w[kV].transpose() * (Bv * w.w[kV]);
        addDiag(dR2[l], g.w[kV] * (w.w[kV] * R.transpose()).transpose());
        if (w.b[kV].size()) addDiag(dR2[l], g.b[kV] * w.b[kV].transpose());
        dR += g.w[kO] * (w.w[kO] * Bo.transpose()).transpose();
        addDiag(dR2[l], g.w[kO].transpose() * (R * w.w[kO]));
    }
    LearnedRotation out;
    out.r1 = toVec(dR / count);
    for (const MatD& d : dR2) out.r2.push_back(toVec(d / count));
    return out;
}

} // namespace

double SpinQuantObjective::operator()(const LearnedRotation& r,
                                      const std::vector<std::vector<int32_t>>& windows,
                                      LearnedRotation* grad) const {
    const ModelSpec& s = m->a->spec;
    const int64_t dim = s.dim, hd = s.headDim;
    if (r.r1.size() != size_t(dim * dim) || (m->rs.kv && r.r2.size() != size_t(s.nLayers)))
        throw ArgumentError("spinquant: rotation matrices of the wrong size");
    if (windows.empty()) throw ArgumentError("spinquant: no calibration windows");
    for (const auto& w : windows)
        if (int64_t(w.size()) != m->T)
            throw ArgumentError("spinquant: a window of " + std::to_string(w.size()) +
                                " tokens, expected " + std::to_string(m->T));
    const MatD R = toMat(r.r1, dim);
    std::vector<MatD> R2;
    for (const auto& h : r.r2) R2.push_back(toMat(h, hd));
    const E2eModel M = m->rotated(R, R2);
    const int64_t S = int64_t(windows.size());
    std::vector<double> loss(size_t(S), 0.0);
    if (!grad) {
        ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1) if (S > 1)
        for (int64_t i = 0; i < S; ++i)
            errors.run([&] { loss[size_t(i)] = M.run(windows[size_t(i)], nullptr); });
        errors.rethrow();
        return mean(loss);
    }
    const GradSum G = sumGradients(M, windows, loss);
    *grad = rotationGradient(*m->a, G, R, R2, double(S));
    return mean(loss);
}

// ---- training ----

nlohmann::ordered_json SpinQuantResult::json() const {
    return {{"method", "spinquant"},
            {"steps", steps},
            {"batch", batch},
            {"lr", lr},
            {"windows", windows},
            {"tokens", tokens},
            {"loss_start", lossStart},
            {"loss_end", lossEnd},
            {"kept", kept},
            {"step_loss", stepLoss},
            {"seconds", seconds}};
}

SpinQuantResult learnRotation(const Model& base, const RotationSettings& rs,
                              const SpinQuantSimulation& sim,
                              const std::vector<std::vector<int32_t>>& windows,
                              Progress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t T = windowLength(windows, "spinquant");
    const EigenSingleThreaded eigenThreads;
    const SpinQuantObjective f(base, rs, sim, T);
    const ModelSpec& s = base.spec();
    SpinQuantResult res;
    res.steps = rs.steps;
    res.batch = rs.batch;
    res.lr = rs.lr;
    res.windows = int64_t(windows.size());
    res.tokens = res.windows * T;
    const LearnedRotation start = hadamardRotation(s, rs);
    if (!progress.report(0.0, "spinquant: loss of the Hadamard start")) {
        res.status = Status::Cancelled;
        return res;
    }
    res.lossStart = f(start, windows);
    LearnedRotation x = start;
    const int64_t S = int64_t(windows.size());
    const double total = double(rs.steps) + 2.0;
    for (int t = 0; t < rs.steps; ++t) {
        std::vector<std::vector<int32_t>> batch;
        for (int j = 0; j < rs.batch; ++j)
            batch.push_back(windows[size_t((int64_t(t) * rs.batch + j) % S)]);
        LearnedRotation g;
        const double loss = f(x, batch, &g);
        res.stepLoss.push_back(loss);
        char label[96];
        std::snprintf(label, sizeof label, "spinquant: step %d/%d, loss %.4f", t + 1, rs.steps,
                      loss);
        if (!progress.report((1.0 + t) / total, label)) {
            res.status = Status::Cancelled;
            return res;
        }
        const double lr =
            rs.lr * 0.5 * (1.0 + std::cos(std::numbers::pi * double(t) / double(rs.steps)));
        cayleyStep(x.r1, g.r1, s.dim, lr);
        for (size_t l = 0; l < x.r2.size(); ++l) cayleyStep(x.r2[l], g.r2[l], s.headDim, lr);
    }
    if (!progress.report((1.0 + rs.steps) / total, "spinquant: loss of the learned rotation")) {
        res.status = Status::Cancelled;
        return res;
    }
    res.lossEnd = rs.steps > 0 ? f(x, windows) : res.lossStart;
    res.kept = rs.steps > 0 && res.lossEnd < res.lossStart;
    res.rotation = res.kept ? std::move(x) : start;
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.report(1.0, "spinquant done");
    return res;
}

} // namespace lcw::compress
