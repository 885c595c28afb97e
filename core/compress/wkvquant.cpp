// WKVQuant's calibrated two-dimensional KV quantisation (wkvquant.h).
#include "core/compress/wkvquant.h"

#include "core/common/parallel.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/folding.h"
#include "core/compress/lwc.h"
#include "core/runtime/quant_runtime.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

namespace lcw::compress {

ChannelSmoothing smoothingFromRange(const std::vector<float>& lo, const std::vector<float>& hi,
                                    double alpha, bool shift) {
    if (lo.size() != hi.size() || lo.empty())
        throw ArgumentError("WKVQuant smoothing: " + std::to_string(lo.size()) + " minimums and " +
                            std::to_string(hi.size()) + " maximums");
    if (!(alpha >= 0) || !std::isfinite(alpha))
        throw ArgumentError("WKVQuant smoothing: alpha " + std::to_string(alpha) +
                            " (must be >= 0)");
    ChannelSmoothing sm;
    if (alpha == 0 && !shift) return sm;
    const size_t n = lo.size();
    sm.shift.assign(n, 0.0f);
    sm.scale.assign(n, 1.0f);
    std::vector<double> r(n);
    double rMax = 0;
    for (size_t c = 0; c < n; ++c) {
        const double d = shift ? 0.5 * (double(lo[c]) + double(hi[c])) : 0.0;
        sm.shift[c] = float(d);
        r[c] = std::max(std::fabs(double(lo[c]) - d), std::fabs(double(hi[c]) - d));
        if (std::isfinite(r[c])) rMax = std::max(rMax, r[c]);
    }
    if (alpha == 0 || !(rMax > 0)) return sm;
    // Channels that never moved get the floor 1e-6 of the largest range (a finite scale).
    double logMean = 0;
    for (size_t c = 0; c < n; ++c) {
        r[c] = std::isfinite(r[c]) ? std::max(r[c], 1e-6 * rMax) : rMax;
        logMean += alpha * std::log(r[c]);
    }
    logMean /= double(n);
    for (size_t c = 0; c < n; ++c) sm.scale[c] = float(std::exp(alpha * std::log(r[c]) - logMean));
    return sm;
}

void fakeQuantKvRows(MatD& x, int bits, int64_t groupSize, const ChannelSmoothing& sm) {
    if (bits >= 16 || x.rows() == 0) return;
    const int64_t T = x.rows(), W = x.cols();
    runtime::KvStream st;
    st.init(bits, KvGranularity::Token, groupSize, W);
    st.setSmoothing(sm.shift, sm.scale);
    std::vector<float> rows(static_cast<size_t>(T * W));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < W; ++c) rows[size_t(t * W + c)] = float(x(t, c));
    st.append(rows.data(), W, T);
    kernels::FloatBuffer scratch;
    const float* out = st.read(T, scratch, 1);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < W; ++c) x(t, c) = double(out[t * W + c]);
}

void kvSmoothingGrads(const MatD& x, int bits, int64_t groupSize, const ChannelSmoothing& sm,
                      const MatD& g, std::vector<double>& dShift, std::vector<double>& dScale) {
    const int64_t T = x.rows(), W = x.cols();
    if (g.rows() != T || g.cols() != W || int64_t(dShift.size()) != W ||
        int64_t(dScale.size()) != W || (!sm.empty() && int64_t(sm.scale.size()) != W) ||
        groupSize < 1)
        throw ArgumentError("WKVQuant gradient: sizes do not match rows of " + std::to_string(W));
    if (bits >= 16) return;
    const double levels = double((1 << bits) - 1);
    std::vector<double> u(static_cast<size_t>(W)), du(u.size()), uq(u.size());
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < W; ++c) {
            const double d = sm.empty() ? 0.0 : double(sm.shift[size_t(c)]);
            const double s = sm.empty() ? 1.0 : double(sm.scale[size_t(c)]);
            u[size_t(c)] = (x(t, c) - d) / s;
            du[size_t(c)] = g(t, c) * s; // dL/dû_c, and the direct part of dL/du_c
        }
        for (int64_t c0 = 0; c0 < W; c0 += groupSize) {
            const int64_t c1 = std::min(c0 + groupSize, W);
            int64_t lo = c0, hi = c0;
            for (int64_t c = c0 + 1; c < c1; ++c) {
                if (u[size_t(c)] < u[size_t(lo)]) lo = c;
                if (u[size_t(c)] > u[size_t(hi)]) hi = c;
            }
            const double mn = u[size_t(lo)], h = (u[size_t(hi)] - mn) / levels;
            double se = 0; // Σ dL/dû · e over the group: dL/dh
            for (int64_t c = c0; c < c1; ++c) {
                if (!(h > 0)) {
                    uq[size_t(c)] = u[size_t(c)];
                    continue;
                }
                const double r = (u[size_t(c)] - mn) / h;
                const double q = std::clamp(std::nearbyint(r), 0.0, levels);
                uq[size_t(c)] = mn + h * q;
                se += du[size_t(c)] * (q - r);
            }
            if (h > 0) { // h = (u_hi − u_lo) / levels
                du[size_t(hi)] += se / levels;
                du[size_t(lo)] -= se / levels;
            }
        }
        for (int64_t c = 0; c < W; ++c) {
            const double s = sm.empty() ? 1.0 : double(sm.scale[size_t(c)]);
            // x̂ = s·û + δ, u = (x − δ)/s
            dShift[size_t(c)] += g(t, c) - du[size_t(c)] / s;
            dScale[size_t(c)] += g(t, c) * uq[size_t(c)] - du[size_t(c)] * u[size_t(c)] / s;
        }
    }
}

CrrObjective::CrrObjective(const ModelSpec& spec, int layer, const KvQuantSpec& kv, int blocks,
                           const BlockWeights& qWeights, std::vector<BlockWeights> fpWeights,
                           const std::vector<std::vector<float>>& qInputs,
                           const std::vector<std::vector<float>>& targets)
    : m_s(spec), m_layer(layer), m_blocks(blocks), m_kv(kv), m_q(qWeights),
      m_fp(std::move(fpWeights)), m_in(qInputs), m_target(targets) {
    if (m_in.empty() || m_in.size() != m_target.size())
        throw ArgumentError("WKVQuant: " + std::to_string(m_in.size()) + " input and " +
                            std::to_string(m_target.size()) + " target windows");
    if (blocks < 1 || int64_t(m_fp.size()) != blocks - 1)
        throw ArgumentError("WKVQuant: " + std::to_string(m_fp.size()) +
                            " following blocks for an objective over " + std::to_string(blocks));
    const size_t len = m_in[0].size();
    if (len == 0 || len % size_t(spec.dim) != 0)
        throw ArgumentError("WKVQuant: windows of " + std::to_string(len) +
                            " values are not whole tokens of " + std::to_string(spec.dim));
    for (size_t i = 0; i < m_in.size(); ++i)
        if (m_in[i].size() != len || m_target[i].size() != len)
            throw ArgumentError("WKVQuant: calibration windows of unequal length");
    m_T = int64_t(len) / spec.dim;
}

namespace {
MatD toMat(const std::vector<float>& v, int64_t T, int64_t dim) {
    MatD m(T, dim);
    for (int64_t i = 0; i < T * dim; ++i) m.data()[i] = double(v[size_t(i)]);
    return m;
}
} // namespace

std::vector<LlamaBlock> CrrObjective::chain(const ChannelSmoothing& k,
                                            const ChannelSmoothing& v) const {
    std::vector<LlamaBlock> blocks;
    for (int b = 0; b < m_blocks; ++b) blocks.emplace_back(m_s, m_layer + b, m_T);
    blocks[0].setKvQuant(
        [kv = m_kv, &k, &v](MatD& kk, MatD& vv) {
            fakeQuantKvRows(kk, kv.kBits, kv.groupSize, k);
            fakeQuantKvRows(vv, kv.vBits, kv.groupSize, v);
        },
        m_kv.pastOnly);
    return blocks;
}

double CrrObjective::operator()(const ChannelSmoothing& k, const ChannelSmoothing& v) const {
    return (*this)(m_q, k, v);
}

double CrrObjective::operator()(const BlockWeights& q, const ChannelSmoothing& k,
                                const ChannelSmoothing& v) const {
    const int64_t T = m_T, dim = m_s.dim;
    const std::vector<LlamaBlock> blocks = chain(k, v);
    const LlamaBlock& first = blocks[0];
    const size_t nNext = blocks.size() - 1; // the following blocks: blocks[1 + b]
    const int64_t S = int64_t(m_in.size());
    std::vector<double> err(static_cast<size_t>(S), 0.0);
    ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1) if (S > 1)
    for (int64_t i = 0; i < S; ++i)
        errors.run([&] {
            MatD x = toMat(m_in[size_t(i)], T, dim), y;
            first.forward(q, x, y, nullptr);
            for (size_t b = 0; b < nNext; ++b) {
                x = std::move(y);
                blocks[b + 1].forward(m_fp[b], x, y, nullptr);
            }
            const std::vector<float>& t = m_target[size_t(i)];
            double e = 0;
            for (int64_t j = 0; j < T * dim; ++j)
                e += std::fabs(y.data()[j] - double(t[size_t(j)]));
            err[size_t(i)] = e;
        });
    errors.rethrow();
    double sum = 0;
    for (double e : err) sum += e;
    return sum / double(S * T * dim);
}

double CrrObjective::gradient(const ChannelSmoothing& k, const ChannelSmoothing& v,
                              std::vector<double>& dkShift, std::vector<double>& dkScale,
                              std::vector<double>& dvShift, std::vector<double>& dvScale) const {
    return gradient(m_q, k, v, dkShift, dkScale, dvShift, dvScale, nullptr);
}

double CrrObjective::gradient(const BlockWeights& q, const ChannelSmoothing& k,
                              const ChannelSmoothing& v, std::vector<double>& dkShift,
                              std::vector<double>& dkScale, std::vector<double>& dvShift,
                              std::vector<double>& dvScale, BlockGrads* dq) const {
    const int64_t T = m_T, dim = m_s.dim, W = m_s.nKvHeads * m_s.headDim;
    const std::vector<LlamaBlock> blocks = chain(k, v);
    const LlamaBlock& first = blocks[0];
    const size_t nNext = blocks.size() - 1; // the following blocks: blocks[1 + b]
    const int64_t S = int64_t(m_in.size());
    const double N = double(S * T * dim);
    // Per window: the error and the four gradients, summed afterwards in window order.
    std::vector<double> err(static_cast<size_t>(S), 0.0);
    std::vector<std::array<std::vector<double>, 4>> grads(static_cast<size_t>(S));
    std::vector<BlockGrads> wgrads(dq ? size_t(S) : 0); // per window: dL/d(block weights)
    ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1) if (S > 1)
    for (int64_t i = 0; i < S; ++i)
        errors.run([&] {
            std::vector<LlamaBlock::Cache> caches(blocks.size());
            MatD x = toMat(m_in[size_t(i)], T, dim), y;
            first.forward(q, x, y, &caches[0]);
            for (size_t b = 0; b < nNext; ++b) {
                x = std::move(y);
                blocks[b + 1].forward(m_fp[b], x, y, &caches[b + 1]);
            }
            const std::vector<float>& t = m_target[size_t(i)];
            MatD dy(T, dim);
            double e = 0;
            for (int64_t j = 0; j < T * dim; ++j) {
                const double d = y.data()[j] - double(t[size_t(j)]);
                e += std::fabs(d);
                dy.data()[j] = (d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0) / N; // L1, mean over all
            }
            err[size_t(i)] = e;
            for (size_t b = nNext; b-- > 0;) {
                BlockGrads gb;
                gb.zeroLike(m_fp[b]);
                MatD dx;
                blocks[b + 1].backward(m_fp[b], caches[b + 1], dy, gb, &dx);
                dy = std::move(dx);
            }
            MatD dkq, dvq;
            if (dq) { // the weights' gradients and the cache rows' from one backward pass
                BlockGrads& gw = wgrads[size_t(i)];
                gw.zeroLike(q);
                first.backward(q, caches[0], dy, gw, nullptr, &dkq, &dvq);
            } else {
                first.kvBackward(q, caches[0], dy, dkq, dvq);
            }
            auto& gr = grads[size_t(i)];
            for (auto& vec : gr) vec.assign(size_t(W), 0.0);
            kvSmoothingGrads(caches[0].k, m_kv.kBits, m_kv.groupSize, k, dkq, gr[0], gr[1]);
            kvSmoothingGrads(caches[0].v, m_kv.vBits, m_kv.groupSize, v, dvq, gr[2], gr[3]);
        });
    errors.rethrow();
    for (auto* d : {&dkShift, &dkScale, &dvShift, &dvScale}) d->assign(size_t(W), 0.0);
    if (dq) { // the weights' gradients, summed in window order
        dq->zeroLike(q);
        for (const BlockGrads& gw : wgrads)
            for (size_t j = 0; j < gw.w.size(); ++j) dq->w[j] += gw.w[j];
    }
    double sum = 0;
    for (int64_t i = 0; i < S; ++i) {
        sum += err[size_t(i)];
        const auto& gr = grads[size_t(i)];
        for (int64_t c = 0; c < W; ++c) {
            dkShift[size_t(c)] += gr[0][size_t(c)], dkScale[size_t(c)] += gr[1][size_t(c)];
            dvShift[size_t(c)] += gr[2][size_t(c)], dvScale[size_t(c)] += gr[3][size_t(c)];
        }
    }
    return sum / N;
}

void CrrObjective::ranges(std::vector<float>& kLo, std::vector<float>& kHi, std::vector<float>& vLo,
                          std::vector<float>& vHi) const {
    const int64_t W = m_s.nKvHeads * m_s.headDim;
    kLo.assign(size_t(W), INFINITY), kHi.assign(size_t(W), -INFINITY);
    vLo = kLo, vHi = kHi;
    LlamaBlock blk(m_s, m_layer, m_T);
    for (const auto& in : m_in) {
        MatD x = toMat(in, m_T, m_s.dim), y;
        LlamaBlock::Cache c;
        blk.forward(m_q, x, y, &c);
        for (int64_t t = 0; t < m_T; ++t)
            for (int64_t j = 0; j < W; ++j) {
                kLo[size_t(j)] = std::min(kLo[size_t(j)], float(c.k(t, j)));
                kHi[size_t(j)] = std::max(kHi[size_t(j)], float(c.k(t, j)));
                vLo[size_t(j)] = std::min(vLo[size_t(j)], float(c.v(t, j)));
                vHi[size_t(j)] = std::max(vHi[size_t(j)], float(c.v(t, j)));
            }
    }
}

namespace {

/// Joint learning (the header): OmniQuant's clipping of the block's learned linears on the
/// unquantised weights `fp`; the other linears and the norms as stored.
struct JointWeights {
    const BlockWeights& stored;
    const BlockWeights& fp;
    std::vector<Lwc> lwc;
    double lr = 5e-3, minClip = 0.1;

    /// The block's weights with the learned linears fake-quantised (the training forward).
    BlockWeights fakeQuantised() const {
        BlockWeights q = stored;
        for (const Lwc& l : lwc) q.w[size_t(l.index)] = lwcFakeQuant(l, fp.w[size_t(l.index)]);
        return q;
    }
    /// The block's weights with the learned linears packed as they would be stored (into out).
    BlockWeights packed(std::map<std::string, PackedTensor>& out) const {
        BlockWeights q = stored;
        out.clear();
        for (const Lwc& l : lwc) {
            PackedTensor p = lwcPack(l, fp.w[size_t(l.index)]);
            q.w[size_t(l.index)] = lwcPackedWeights(l, p);
            out[l.name] = std::move(p);
        }
        return q;
    }
    /// One Adam step of the factors from dL/d(fake-quantised weights).
    void step(const BlockGrads& g, int t) {
        for (Lwc& l : lwc) {
            lwcFactorGrads(l, fp.w[size_t(l.index)], g.w[size_t(l.index)]);
            lwcAdam(l.a, l.ga, l.ma, l.va, t, lr, 0.0, minClip);
            if (!l.s.symmetric) lwcAdam(l.b, l.gb, l.mb, l.vb, t, lr, 0.0, minClip);
        }
    }
    std::map<std::string, std::pair<double, double>> meanClip() const {
        std::map<std::string, std::pair<double, double>> m;
        for (const Lwc& l : lwc)
            m[l.name] = {lwcMeanFactor(l.a), lwcMeanFactor(l.s.symmetric ? l.a : l.b)};
        return m;
    }
};

/// The smoothing of one tensor as the gradient steps learn it: δ = shift0 + half·d, s = e^t,
/// with Adam moments.
struct SmoothParam {
    bool on = false;
    std::vector<double> shift0, half, d, t, md, vd, mt, vt;

    /// Starts at `start` (empty: δ 0, s 1); half: the channel's half range [lo, hi].
    SmoothParam(bool learn, const ChannelSmoothing& start, const std::vector<float>& lo,
                const std::vector<float>& hi)
        : on(learn) {
        if (!on) return;
        const size_t W = lo.size();
        double maxHalf = 0;
        for (size_t c = 0; c < W; ++c)
            if (std::isfinite(hi[c] - lo[c])) maxHalf = std::max(maxHalf, 0.5 * (hi[c] - lo[c]));
        shift0.assign(W, 0.0), half.assign(W, 0.0), t.assign(W, 0.0);
        for (size_t c = 0; c < W; ++c) {
            if (!start.empty()) {
                shift0[c] = start.shift[c];
                t[c] = std::log(double(start.scale[c]));
            }
            const double h = 0.5 * (double(hi[c]) - double(lo[c]));
            half[c] = std::isfinite(h) ? std::max(h, 1e-6 * maxHalf) : maxHalf;
            if (!(half[c] > 0)) half[c] = 1.0;
        }
        d.assign(W, 0.0);
        md = vd = mt = vt = d;
    }
    ChannelSmoothing at() const {
        ChannelSmoothing sm;
        if (!on) return sm;
        sm.shift.resize(d.size()), sm.scale.resize(d.size());
        for (size_t c = 0; c < d.size(); ++c) {
            sm.shift[c] = float(shift0[c] + half[c] * d[c]);
            sm.scale[c] = float(std::exp(t[c]));
        }
        return sm;
    }
    /// One Adam step from dL/dδ and dL/ds at the point `cur`.
    void step(const std::vector<double>& dShift, const std::vector<double>& dScale,
              const ChannelSmoothing& cur, int stepNo, double lr) {
        if (!on) return;
        const size_t W = d.size();
        std::vector<double> gd(W), gt(W);
        for (size_t c = 0; c < W; ++c) {
            gd[c] = dShift[c] * half[c];              // dδ/dd = half
            gt[c] = dScale[c] * double(cur.scale[c]); // ds/dt = s
        }
        adamUpdate(d.data(), gd.data(), md.data(), vd.data(), W, stepNo, lr, 0.0, nullptr,
                   INFINITY);
        adamUpdate(t.data(), gt.data(), mt.data(), vt.data(), W, stepNo, lr, 0.0, -20.0, 20.0);
    }
};

/// WKVQuant's gradient steps (the header): Adam on log s and on δ per half range of each
/// channel, from r's searched smoothing, and on the clipping factors of `joint` (may be null);
/// after every step the exact objective (weights packed), the best point kept in r (and
/// `best`). False when tick() says cancelled.
template <class Tick>
bool learnSmoothing(const CrrObjective& objective, const std::vector<float>& kLo,
                    const std::vector<float>& kHi, const std::vector<float>& vLo,
                    const std::vector<float>& vHi, bool doK, bool doV, const WkvOptions& opts,
                    JointWeights* joint, WkvBlockResult& r, double& best, Tick tick) {
    SmoothParam pk(doK, r.k, kLo, kHi), pv(doV, r.v, vLo, vHi);
    std::vector<double> dks, dkc, dvs, dvc;
    BlockGrads gw;
    std::map<std::string, PackedTensor> packed;
    for (int step = 1; step <= opts.learnSteps; ++step) {
        const ChannelSmoothing k = pk.at(), v = pv.at();
        if (joint) {
            objective.gradient(joint->fakeQuantised(), k, v, dks, dkc, dvs, dvc, &gw);
            joint->step(gw, step);
        } else {
            objective.gradient(k, v, dks, dkc, dvs, dvc);
        }
        pk.step(dks, dkc, k, step, opts.lr);
        pv.step(dvs, dvc, v, step, opts.lr);
        const ChannelSmoothing nk = pk.at(), nv = pv.at();
        const double L = joint ? objective(joint->packed(packed), nk, nv) : objective(nk, nv);
        r.learnedSteps = step;
        if (L < best) {
            best = L;
            r.bestStep = step;
            if (pk.on) r.k = nk;
            if (pv.on) r.v = nv;
            if (joint) {
                r.packed = std::move(packed); // refilled by the next step's packed()
                r.meanClip = joint->meanClip();
            }
        }
        r.objective.push_back(best);
        if (!tick("learning")) return false;
    }
    return true;
}

/// The joint learning's start (factors 1) for opts.weights of block `layer`. UnsupportedError
/// when the stored block is not the unquantised one up to its quantised linears (norms or
/// biases changed by an earlier stage); ArgumentError for options out of range.
std::unique_ptr<JointWeights> startJoint(int layer, const BlockWeights& stored,
                                         const BlockWeights& fp, const WkvOptions& opts) {
    const std::string bname = "layers." + std::to_string(layer);
    if (!(opts.weightLr > 0) || !std::isfinite(opts.weightLr) ||
        !(opts.minClip > 0 && opts.minClip < 1) || opts.learnSteps < 1)
        throw ArgumentError("WKVQuant: the joint weight learning needs gradient steps, a "
                            "learning rate > 0 and 0 < minimum clipping factor < 1");
    auto same = [](const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
        return a.size() == b.size() &&
               (a.size() == 0 || (a - b).cwiseAbs().maxCoeff() <= 1e-6 * (1 + b.norm()));
    };
    bool biases = stored.attnNormBias.size() || stored.mlpNormBias.size();
    for (const auto& b : stored.b) biases = biases || b.size();
    if (!same(stored.attnNorm, fp.attnNorm) || !same(stored.mlpNorm, fp.mlpNorm) || biases)
        throw UnsupportedError(
            bname +
            ": WKVQuant's joint weight learning (kv.crr_weights) learns the clipping of the "
            "unquantised weights, but an earlier stage changed the block's norms or added "
            "biases (OmniQuant's LET, SmoothQuant); drop that stage or crr_weights");
    auto j =
        std::make_unique<JointWeights>(JointWeights{stored, fp, {}, opts.weightLr, opts.minClip});
    for (const auto& [name, st] : opts.weights) j->lwc.push_back(lwcStart(bname, name, st, fp));
    return j;
}

} // namespace

WkvBlockResult wkvquantBlock(const WeightSource& quantised, const WeightSource& fp, int layer,
                             const KvQuantSpec& kv, const std::vector<std::vector<float>>& qInputs,
                             const std::vector<std::vector<float>>& fpInputs,
                             const WkvOptions& opts, Progress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelSpec& s = quantised.spec();
    if (qInputs.empty() || qInputs.size() != fpInputs.size())
        throw ArgumentError("WKVQuant: " + std::to_string(qInputs.size()) + " and " +
                            std::to_string(fpInputs.size()) + " calibration windows");
    if (opts.crrBlocks < 0 || opts.alphas.empty() || opts.rounds < 1 || opts.learnSteps < 0 ||
        !(opts.lr > 0) || !std::isfinite(opts.lr))
        throw ArgumentError("WKVQuant: crr_blocks and crr_steps must be >= 0 and the learning "
                            "rate > 0, with alphas and rounds");
    for (double a : opts.alphas)
        if (!(a >= 0) || !std::isfinite(a))
            throw ArgumentError("WKVQuant: alpha " + std::to_string(a) + " (must be >= 0)");
    if (layer < 0 || layer >= s.nLayers)
        throw ArgumentError("WKVQuant: block " + std::to_string(layer) + " of " +
                            std::to_string(s.nLayers));
    WkvBlockResult r;
    r.blocks = int(std::min<int64_t>(opts.crrBlocks, s.nLayers - 1 - layer)) + 1;
    const int64_t T = int64_t(qInputs[0].size()) / std::max<int64_t>(s.dim, 1);
    for (int b = 0; b < r.blocks; ++b) {
        const std::string why = LlamaBlock::unsupportedReason(s, layer + b, T);
        if (!why.empty())
            throw UnsupportedError("WKVQuant's reconstruction search uses the block model, which "
                                   "covers pre-norm RMSNorm SwiGLU blocks with RoPE; arch '" +
                                   s.arch + "' is not supported: " + why);
    }
    // Targets: the unquantised blocks layer .. layer + blocks - 1 on the unquantised inputs.
    std::vector<BlockWeights> fpW;
    for (int b = 0; b < r.blocks; ++b) fpW.push_back(loadBlockWeights(fp, layer + b));
    std::vector<std::vector<float>> targets(fpInputs.size());
    {
        std::vector<LlamaBlock> blk;
        for (int b = 0; b < r.blocks; ++b) blk.emplace_back(s, layer + b, T);
        ParallelErrors errors;
        const int64_t S = int64_t(fpInputs.size());
#pragma omp parallel for schedule(dynamic, 1) if (S > 1)
        for (int64_t i = 0; i < S; ++i)
            errors.run([&] {
                MatD x = toMat(fpInputs[size_t(i)], T, s.dim), y;
                for (int b = 0; b < r.blocks; ++b) {
                    blk[size_t(b)].forward(fpW[size_t(b)], x, y, nullptr);
                    x = std::move(y);
                }
                targets[size_t(i)].assign(x.data(), x.data() + x.size());
            });
        errors.rethrow();
    }
    const BlockWeights qW = loadBlockWeights(quantised, layer);
    const BlockWeights fpBlock = std::move(fpW.front()); // the block's own (the joint start)
    fpW.erase(fpW.begin());
    std::unique_ptr<JointWeights> joint;
    if (!opts.weights.empty()) joint = startJoint(layer, qW, fpBlock, opts);
    const CrrObjective objective(s, layer, kv, r.blocks, qW, std::move(fpW), qInputs, targets);
    std::vector<float> kLo, kHi, vLo, vHi;
    objective.ranges(kLo, kHi, vLo, vHi);

    // Coordinate search over (alpha, shift) of K, then V.
    const bool doK = kv.kBits < 16, doV = kv.vBits < 16;
    const int perTensor = int(opts.alphas.size()) * 2;
    const int total = 1 + opts.rounds * perTensor * (int(doK) + int(doV)) + opts.learnSteps;
    int done = 0;
    auto tick = [&](const char* what) {
        ++done;
        return progress.report(double(done) / double(total),
                               "layers." + std::to_string(layer) + ": WKVQuant " + what);
    };
    double best = objective(r.k, r.v);
    r.lossStart = best;
    r.objective.push_back(best);
    if (!tick("start")) {
        r.status = Status::Cancelled;
        return r;
    }
    for (int round = 0; round < opts.rounds; ++round) {
        bool moved = false;
        for (int which = 0; which < 2; ++which) {
            if ((which == 0 && !doK) || (which == 1 && !doV)) continue;
            for (int sh = 0; sh < 2; ++sh)
                for (double a : opts.alphas) {
                    double& curA = which == 0 ? r.kAlpha : r.vAlpha;
                    bool& curS = which == 0 ? r.kShift : r.vShift;
                    if (a == curA && bool(sh) == curS) { // the current point
                        if (!tick("search")) {
                            r.status = Status::Cancelled;
                            return r;
                        }
                        continue;
                    }
                    const ChannelSmoothing cand = which == 0
                                                      ? smoothingFromRange(kLo, kHi, a, sh != 0)
                                                      : smoothingFromRange(vLo, vHi, a, sh != 0);
                    const double L = which == 0 ? objective(cand, r.v) : objective(r.k, cand);
                    if (L < best) {
                        best = L;
                        curA = a, curS = sh != 0;
                        (which == 0 ? r.k : r.v) = cand;
                        moved = true;
                    }
                    r.objective.push_back(best);
                    if (!tick("search")) {
                        r.status = Status::Cancelled;
                        return r;
                    }
                }
        }
        if (!moved) break;
    }
    r.lossSearch = best;
    if (opts.learnSteps > 0 && !learnSmoothing(objective, kLo, kHi, vLo, vHi, doK, doV, opts,
                                               joint.get(), r, best, tick)) {
        r.status = Status::Cancelled;
        return r;
    }
    r.lossEnd = best;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

namespace {

/// Stores the joint learning's winning linears in cm and brings their reports up to date.
void keepJointWeights(const Model& base, WkvBlockResult& r, CompressedModel& cm,
                      std::vector<LayerReport>* layers) {
    for (auto& [name, p] : r.packed) {
        LayerReport* rep = nullptr;
        if (layers)
            for (LayerReport& x : *layers)
                if (x.name == name) rep = &x;
        if (rep) {
            rep->bitsPerWeight = p.bitsPerWeight();
            rep->storageBits = p.storageBits();
        }
        cm.setTensor(name, std::move(p));
        if (!rep) continue;
        const std::vector<float> W = tensorFloats(base.get(name));
        const std::vector<float> vals = cm.compressed(name)->values();
        rep->error = errorStats(W.data(), vals.data(), int64_t(vals.size()));
        // The calibration statistics of the output error are gone by now.
        rep->outputRelError = std::numeric_limits<double>::quiet_NaN();
        rep->details["wkvquant_joint"] = true;
        rep->details["clip_max"] = r.meanClip.at(name).first;
        rep->details["clip_min"] = r.meanClip.at(name).second;
    }
}

} // namespace

Status calibrateWkvQuant(const Model& base, const Plan& plan, CompressedModel& cm,
                         const CalibrationSet* cal, Progress& progress,
                         std::map<int64_t, nlohmann::ordered_json>& details,
                         std::vector<LayerReport>* layers) {
    std::vector<const KvPlan*> todo;
    for (const KvPlan& kp : plan.kv)
        if (kp.kv.smooth) todo.push_back(&kp);
    if (todo.empty()) return Status::Ok;
    if (!cal || cal->empty())
        throw RecipeError(todo[0]->rule, "kv.smooth",
                          "WKVQuant's smoothing is calibrated (cross-block reconstruction) and "
                          "needs calibration data (--calib)");
    if (cm.runtimeQuant() && cm.runtimeQuant()->rotation.qk)
        throw UnsupportedError("WKVQuant's smoothing cannot be combined with the online q/k "
                               "rotation yet (the block model does not rotate the heads)");
    CalibrationSet sub = *cal;
    if (int64_t(sub.samples.size()) > kWkvMaxWindows) sub.samples.resize(size_t(kWkvMaxWindows));
    const double n = double(todo.size());
    for (size_t i = 0; i < todo.size(); ++i) {
        const KvPlan& kp = *todo[i];
        const int l = int(kp.layer);
        const double f0 = double(i) / n, f1 = double(i + 1) / n;
        RangeProgress capP(progress, f0, f0 + 0.2 * (f1 - f0), "WKVQuant capture: ");
        const auto qIn = captureBlockHidden(cm, sub, l, &capP);
        if (qIn.empty()) return Status::Cancelled;
        const auto fpIn = captureBlockHidden(base, sub, l, &capP);
        if (fpIn.empty()) return Status::Cancelled;
        RuntimeQuant rq = *cm.runtimeQuant();
        KvQuantSpec& spec = rq.kv.at(kp.layer);
        WkvOptions o;
        o.crrBlocks = kp.kv.crrBlocks;
        o.learnSteps = kp.kv.crrSteps;
        o.lr = kp.kv.crrLr;
        if (kp.kv.crrWeights) o.weights = wkvJointLinears(plan, kp);
        RangeProgress searchP(progress, f0 + 0.2 * (f1 - f0), f1);
        WkvBlockResult r = wkvquantBlock(cm, base, l, spec, qIn, fpIn, o, searchP);
        if (r.status == Status::Cancelled) return Status::Cancelled;
        const size_t replaced = r.packed.size();
        if (kp.kv.crrWeights) keepJointWeights(base, r, cm, layers);
        spec.kShift = r.k.shift, spec.kScale = r.k.scale;
        spec.vShift = r.v.shift, spec.vScale = r.v.scale;
        cm.setRuntimeQuant(std::move(rq));
        nlohmann::ordered_json d;
        d["wkvquant_crr_blocks"] = r.blocks - 1;
        d["wkvquant_windows"] = qIn.size();
        d["wkvquant_k_alpha"] = r.kAlpha;
        d["wkvquant_k_shift"] = r.kShift;
        d["wkvquant_v_alpha"] = r.vAlpha;
        d["wkvquant_v_shift"] = r.vShift;
        d["wkvquant_loss_start"] = r.lossStart;
        if (r.learnedSteps > 0) {
            d["wkvquant_loss_search"] = r.lossSearch;
            d["wkvquant_learned_steps"] = r.learnedSteps;
            d["wkvquant_best_step"] = r.bestStep; // 0: the search's point was kept
        }
        if (kp.kv.crrWeights) {
            d["wkvquant_joint_linears"] = o.weights.size();
            d["wkvquant_weights_replaced"] = replaced > 0; // false: the stored ones were better
        }
        d["wkvquant_loss_end"] = r.lossEnd;
        d["wkvquant_evaluations"] = r.objective.size();
        d["wkvquant_seconds"] = r.seconds;
        details[kp.layer] = std::move(d);
    }
    return Status::Ok;
}

} // namespace lcw::compress
