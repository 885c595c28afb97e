// WKVQuant's calibrated two-dimensional KV quantisation (wkvquant.h).
#include "core/compress/wkvquant.h"

#include "core/common/parallel.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/runtime/quant_runtime.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
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

double CrrObjective::operator()(const ChannelSmoothing& k, const ChannelSmoothing& v) const {
    const int64_t T = m_T, dim = m_s.dim;
    LlamaBlock first(m_s, m_layer, T);
    const KvQuantSpec kv = m_kv;
    first.setKvQuant(
        [&](MatD& kk, MatD& vv) {
            fakeQuantKvRows(kk, kv.kBits, kv.groupSize, k);
            fakeQuantKvRows(vv, kv.vBits, kv.groupSize, v);
        },
        kv.pastOnly);
    std::vector<LlamaBlock> next;
    for (int b = 1; b < m_blocks; ++b) next.emplace_back(m_s, m_layer + b, T);
    const int64_t S = int64_t(m_in.size());
    std::vector<double> err(static_cast<size_t>(S), 0.0);
    ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1) if (S > 1)
    for (int64_t i = 0; i < S; ++i)
        errors.run([&] {
            MatD x = toMat(m_in[size_t(i)], T, dim), y;
            first.forward(m_q, x, y, nullptr);
            for (size_t b = 0; b < next.size(); ++b) {
                x = std::move(y);
                next[b].forward(m_fp[b], x, y, nullptr);
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

WkvBlockResult wkvquantBlock(const WeightSource& quantised, const WeightSource& fp, int layer,
                             const KvQuantSpec& kv, const std::vector<std::vector<float>>& qInputs,
                             const std::vector<std::vector<float>>& fpInputs,
                             const WkvOptions& opts, Progress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelSpec& s = quantised.spec();
    if (qInputs.empty() || qInputs.size() != fpInputs.size())
        throw ArgumentError("WKVQuant: " + std::to_string(qInputs.size()) + " and " +
                            std::to_string(fpInputs.size()) + " calibration windows");
    if (opts.crrBlocks < 0 || opts.alphas.empty() || opts.rounds < 1)
        throw ArgumentError("WKVQuant: crr_blocks must be >= 0, with alphas and rounds");
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
    fpW.erase(fpW.begin());
    const CrrObjective objective(s, layer, kv, r.blocks, qW, std::move(fpW), qInputs, targets);
    std::vector<float> kLo, kHi, vLo, vHi;
    objective.ranges(kLo, kHi, vLo, vHi);

    // Coordinate search over (alpha, shift) of K, then V.
    const bool doK = kv.kBits < 16, doV = kv.vBits < 16;
    const int perTensor = int(opts.alphas.size()) * 2;
    const int total = 1 + opts.rounds * perTensor * (int(doK) + int(doV));
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
    r.lossEnd = best;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

Status calibrateWkvQuant(const Model& base, const Plan& plan, CompressedModel& cm,
                         const CalibrationSet* cal, Progress& progress,
                         std::map<int64_t, nlohmann::ordered_json>& details) {
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
        RangeProgress searchP(progress, f0 + 0.2 * (f1 - f0), f1);
        const WkvBlockResult r = wkvquantBlock(cm, base, l, spec, qIn, fpIn, o, searchP);
        if (r.status == Status::Cancelled) return Status::Cancelled;
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
        d["wkvquant_loss_end"] = r.lossEnd;
        d["wkvquant_evaluations"] = r.objective.size();
        d["wkvquant_seconds"] = r.seconds;
        details[kp.layer] = std::move(d);
    }
    return Status::Ok;
}

} // namespace lcw::compress
