// EfficientQAT Block-AP (core/compress/efficientqat): the start is exactly RTN, the
// straight-through gradients of W, s and z equal central differences of the straight-through
// surrogate, the whole Block-AP loop equals an independent double-precision implementation written
// here (fake quantisation, STE, Adam with separate learning rates), never worse than RTN on the
// block loss, valid integer codes, exact sizes and overlay reload.
#include "block_test_util.h"
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/block_grad.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/efficientqat.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core_test_util.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cmath>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using lcwtest::blockMse;
using lcwtest::matOf;

std::vector<float> floatsOf(const MatD& m) {
    std::vector<float> v(size_t(m.size()));
    for (int64_t i = 0; i < m.size(); ++i) v[size_t(i)] = float(m.data()[i]);
    return v;
}

WeightSettings qatSettings(int bits, bool sym, int64_t group) {
    WeightSettings s;
    s.bits = bits;
    s.symmetric = sym;
    s.granularity = group > 0 ? Granularity::Group : Granularity::Channel;
    s.groupSize = group > 0 ? group : 128;
    s.method = WeightMethod::EfficientQat;
    return s;
}

/// The test's own description of one quantised linear: its group rule and its parameters.
struct RefLinear {
    int idx = 0;
    int bits = 3;
    bool sym = false;
    int64_t group = 0; ///< 0: per channel
    MatD W, mW, vW;
    std::vector<double> s, z, sLo, ms, vs, mz, vz;

    int64_t groupOf(int64_t r, int64_t j, int64_t cols) const {
        return group > 0 ? r * ((cols + group - 1) / group) + j / group : r;
    }
    double qmax() const { return sym ? std::pow(2.0, bits - 1) - 1 : std::pow(2.0, bits) - 1; }
    /// The paper's quantiser: (clamp(round(w/s) + round(z), 0, qmax) − round(z)) s, symmetric
    /// clamp(round(w/s), −qmax, qmax) s.
    MatD fakeQuant() const {
        MatD out(W.rows(), W.cols());
        for (int64_t r = 0; r < W.rows(); ++r)
            for (int64_t j = 0; j < W.cols(); ++j) {
                const size_t g = size_t(groupOf(r, j, W.cols()));
                const double lo = sym ? -qmax() : 0.0, zr = sym ? 0.0 : std::round(z[g]);
                const double code =
                    std::min(std::max(std::nearbyint(W(r, j) / s[g]) + zr, lo), qmax());
                out(r, j) = (code - zr) * s[g];
            }
        return out;
    }
    /// STE chain from dL/dŴ.
    void grads(const MatD& gq, MatD& gW, std::vector<double>& gs, std::vector<double>& gz) const {
        gW = MatD::Zero(W.rows(), W.cols());
        gs.assign(s.size(), 0.0);
        gz.assign(s.size(), 0.0);
        for (int64_t r = 0; r < W.rows(); ++r)
            for (int64_t j = 0; j < W.cols(); ++j) {
                const size_t g = size_t(groupOf(r, j, W.cols()));
                const double lo = sym ? -qmax() : 0.0, zr = sym ? 0.0 : std::round(z[g]);
                const double v = W(r, j) / s[g], raw = std::nearbyint(v) + zr;
                if (raw >= lo && raw <= qmax()) {
                    gW(r, j) = gq(r, j);
                    gs[g] += gq(r, j) * (std::nearbyint(v) - v);
                } else {
                    const double code = raw < lo ? lo : qmax();
                    gs[g] += gq(r, j) * (code - zr);
                    gz[g] += sym ? 0.0 : -gq(r, j) * s[g];
                }
            }
    }
};

void refAdam(double* p, const double* g, double* m, double* v, size_t n, int t, double lr,
             const double* lo, double hi) {
    for (size_t i = 0; i < n; ++i) {
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
        const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
        p[i] -= lr * mh / (std::sqrt(vh) + 1e-8);
        if (lo) p[i] = std::max(p[i], lo[i]);
        p[i] = std::min(p[i], hi);
    }
}

std::string layerName(int layer, int i) {
    return "layers." + std::to_string(layer) + "." + blockLinearSuffix(i);
}

/// One quantiser per linear of the block (odd linears int3 asym g16, even int4 sym per channel),
/// s and z moved off RTN's so that elements fall outside the grid on both ends.
std::vector<QatQuantizer> offRtnQuantizers(const BlockWeights& fw, int layer, std::mt19937& rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<QatQuantizer> qs;
    for (int i = 0; i < 7; ++i) {
        QatQuantizer q = qatStart(i % 2 ? qatSettings(3, false, 16) : qatSettings(4, true, 0),
                                  fw.w[size_t(i)], layerName(layer, i));
        for (size_t g = 0; g < q.scale.size(); ++g) {
            q.scale[g] *= 0.6 + 0.5 * u(rng);
            if (!q.settings.symmetric)
                q.zero[g] = std::clamp(q.zero[g] + 2.0 * nd(rng), 0.0, q.qmax());
        }
        qs.push_back(std::move(q));
    }
    return qs;
}

/// The STE's surrogate of one linear's fake quantiser around a base point: round(v) taken as
/// v + c with c frozen there, and the clamp decisions frozen, so Ŵ(W, s, z) is smooth and its
/// central differences are the STE gradients.
struct SteSurrogate {
    const QatQuantizer* q;
    MatD cw;                // round(x/s) − x/s
    MatD in;                // 1 inside the grid
    MatD bound;             // the grid end where clamped
    std::vector<double> cz; // round(z) − z
    SteSurrogate(const QatQuantizer& quant, const MatD& W) : q(&quant) {
        cw = in = bound = MatD::Zero(W.rows(), W.cols());
        cz.resize(q->zero.size());
        for (size_t k = 0; k < q->zero.size(); ++k)
            cz[k] = q->settings.symmetric ? 0.0 : std::round(q->zero[k]) - q->zero[k];
        for (int64_t k = 0; k < W.size(); ++k) {
            const size_t gi = size_t(q->grid[size_t(k)]);
            const double v = W.data()[k] / q->scale[gi];
            const double zr = q->settings.symmetric ? 0.0 : std::round(q->zero[gi]);
            const double lo = q->settings.symmetric ? -q->qmax() : 0.0;
            const double raw = std::nearbyint(v) + zr;
            cw.data()[k] = std::nearbyint(v) - v;
            in.data()[k] = raw >= lo && raw <= q->qmax() ? 1.0 : 0.0;
            bound.data()[k] = raw < lo ? lo : q->qmax();
        }
    }
    MatD operator()(const MatD& W, const std::vector<double>& s,
                    const std::vector<double>& z) const {
        MatD out(W.rows(), W.cols());
        for (int64_t k = 0; k < W.size(); ++k) {
            const size_t gi = size_t(q->grid[size_t(k)]);
            const double zr = q->settings.symmetric ? 0.0 : z[gi] + cz[gi];
            out.data()[k] = in.data()[k] > 0 ? (W.data()[k] / s[gi] + cw.data()[k]) * s[gi]
                                             : (bound.data()[k] - zr) * s[gi];
        }
        return out;
    }
};

} // namespace

class TestEfficientQat : public QObject {
    Q_OBJECT
private slots:
    void startIsRtn() {
        auto m = Model::load(lcwtest::demoModelPath());
        const BlockWeights bw = loadBlockWeights(*m, 1);
        for (const WeightSettings& s : {qatSettings(3, false, 32), qatSettings(2, false, 64),
                                        qatSettings(4, true, 0), qatSettings(3, true, 16)}) {
            for (int i = 0; i < 7; ++i) {
                const MatD& W = bw.w[size_t(i)];
                const std::string name = layerName(1, i);
                WeightSettings rs = s;
                rs.method = WeightMethod::Rtn;
                const std::vector<float> wf = floatsOf(W);
                const PackedTensor rtn = quantize(wf.data(), W.rows(), W.cols(), rs, name);
                const QatQuantizer q = qatStart(s, W, name);
                const PackedTensor p = qatPack(q, W, name);
                QVERIFY(p.codes == rtn.codes);
                QVERIFY(p.scales == rtn.scales);
                QVERIFY(p.zeros == rtn.zeros);
                QCOMPARE(p.storageBits(), rtn.storageBits());
                QCOMPARE(p.settings.method, WeightMethod::EfficientQat);
                // The double fake quantisation at the start is RTN's stored values.
                const MatD fq = qatFakeQuant(q, W);
                const std::vector<float> dq = dequantize(rtn, name);
                for (int64_t k = 0; k < W.size(); ++k)
                    QVERIFY(std::fabs(fq.data()[k] - dq[size_t(k)]) <=
                            1e-6 * (1 + std::fabs(dq[size_t(k)])));
            }
        }
    }

    void steGradientsMatchSurrogate() {
        // The STE treats round(v) as v + c with c frozen (and the clamp decisions frozen): the
        // surrogate Ŵ(W, s, z) built that way is smooth and its central differences are the STE
        // gradients.
        auto m = Model::load(lcwtest::demoModelPath());
        const ModelSpec& spec = m->spec();
        const int layer = 2;
        const BlockWeights fw = loadBlockWeights(*m, layer);
        std::mt19937 rng(11);
        std::normal_distribution<double> nd(0.0, 1.0);
        std::uniform_real_distribution<double> u(0.0, 1.0);
        const int64_t T = 6;
        MatD X(T, spec.dim), R(T, spec.dim);
        for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = nd(rng), R.data()[i] = nd(rng);
        const LlamaBlock blk(spec, layer, T);
        const std::vector<QatQuantizer> qs = offRtnQuantizers(fw, layer, rng);
        // Library gradients.
        BlockWeights qw = fw;
        for (int i = 0; i < 7; ++i) qw.w[size_t(i)] = qatFakeQuant(qs[size_t(i)], fw.w[size_t(i)]);
        const BlockGrads g = lcwtest::blockLossGrads(blk, qw, X, R);
        std::vector<SteSurrogate> fr;
        for (int i = 0; i < 7; ++i) fr.emplace_back(qs[size_t(i)], fw.w[size_t(i)]);
        auto loss = [&](int i, const MatD& W, const std::vector<double>& s,
                        const std::vector<double>& z) {
            BlockWeights w = qw;
            w.w[size_t(i)] = fr[size_t(i)](W, s, z);
            MatD yy;
            blk.forward(w, X, yy, nullptr);
            return (yy.array() * R.array()).sum();
        };
        int clampedChecked = 0;
        double maxGz = 0;
        for (int i = 0; i < 7; ++i) {
            const QatQuantizer& q = qs[size_t(i)];
            MatD W = fw.w[size_t(i)];
            std::vector<double> s = q.scale, z = q.zero;
            // The surrogate reproduces the fake quantisation at the base point.
            QVERIFY((fr[size_t(i)](W, s, z) - qw.w[size_t(i)]).cwiseAbs().maxCoeff() < 1e-12);
            MatD gW;
            std::vector<double> gs, gz;
            qatBackward(q, W, g.w[size_t(i)], gW, gs, gz);
            auto fd = [&](double& p, double eps) {
                const double keep = p;
                p = keep + eps;
                const double lp = loss(i, W, s, z);
                p = keep - eps;
                const double lm = loss(i, W, s, z);
                p = keep;
                return (lp - lm) / (2 * eps);
            };
            auto near = [](double a, double b) {
                return std::fabs(a - b) <= 1e-6 + 1e-5 * std::fabs(a);
            };
            for (int k = 0; k < 10; ++k) {
                const int64_t e = int64_t(u(rng) * double(W.size())) % W.size();
                const double want = fd(W.data()[e], 1e-6);
                QVERIFY2(near(want, gW.data()[e]), qPrintable(QString("%1 W[%2]: fd %3 ste %4")
                                                                  .arg(blockLinearSuffix(i))
                                                                  .arg(e)
                                                                  .arg(want)
                                                                  .arg(gW.data()[e])));
            }
            // Every clamped element found: its weight gradient is 0 (checked against the FD).
            for (int64_t e = 0; e < W.size() && clampedChecked < 40; ++e)
                if (fr[size_t(i)].in.data()[e] == 0.0) {
                    QCOMPARE(gW.data()[e], 0.0);
                    QVERIFY(std::fabs(fd(W.data()[e], 1e-6)) < 1e-9);
                    ++clampedChecked;
                }
            for (int k = 0; k < 6; ++k) {
                const size_t gi = size_t(u(rng) * double(s.size())) % s.size();
                const double ws = fd(s[gi], 1e-6 * s[gi]);
                QVERIFY2(near(ws, gs[gi]), qPrintable(QString("%1 s[%2]: fd %3 ste %4")
                                                          .arg(blockLinearSuffix(i))
                                                          .arg(gi)
                                                          .arg(ws)
                                                          .arg(gs[gi])));
                if (q.settings.symmetric) {
                    QCOMPARE(gz[gi], 0.0);
                    continue;
                }
                const double wz = fd(z[gi], 1e-5);
                QVERIFY2(near(wz, gz[gi]), qPrintable(QString("%1 z[%2]: fd %3 ste %4")
                                                          .arg(blockLinearSuffix(i))
                                                          .arg(gi)
                                                          .arg(wz)
                                                          .arg(gz[gi])));
                maxGz = std::max(maxGz, std::fabs(gz[gi]));
            }
        }
        QVERIFY2(clampedChecked >= 20, qPrintable(QString::number(clampedChecked)));
        QVERIFY2(maxGz > 1e-3, qPrintable(QString::number(maxGz))); // not vacuous
    }

    void blockApMatchesDoubleReference() {
        auto m = Model::load(lcwtest::demoModelPath());
        const ModelSpec& spec = m->spec();
        const int layer = 1;
        const CalibrationSet cal = loadCalibration(*m, "", {3, 24});
        const auto in = captureBlockHidden(*m, cal, layer);
        const BlockWeights fw = loadBlockWeights(*m, layer);
        EfficientQatOptions o;
        o.epochs = 3;
        o.lrW = 5e-4;
        o.lrQ = 2e-3;
        std::map<std::string, WeightSettings> set;
        std::vector<RefLinear> ref;
        for (int i = 0; i < 7; ++i) {
            RefLinear r;
            r.idx = i;
            r.bits = i == kDown ? 4 : 3;
            r.sym = i == kO;
            r.group = i == kO ? 0 : 32;
            const WeightSettings s = qatSettings(r.bits, r.sym, r.group);
            set[layerName(layer, i)] = s;
            r.W = fw.w[size_t(i)];
            // The start: RTN's stored grid (quantize()).
            WeightSettings rs = s;
            rs.method = WeightMethod::Rtn;
            const std::vector<float> wf = floatsOf(r.W);
            const PackedTensor p = quantize(wf.data(), r.W.rows(), r.W.cols(), rs, "w");
            for (size_t g = 0; g < p.scales.size(); ++g) {
                r.s.push_back(f16ToF32(p.scales[g]));
                r.z.push_back(r.sym ? 0.0 : f16ToF32(p.zeros[g]));
                r.sLo.push_back(0.01 * r.s.back());
            }
            r.mW = r.vW = MatD::Zero(r.W.rows(), r.W.cols());
            r.ms = r.vs = r.mz = r.vz = std::vector<double>(r.s.size(), 0.0);
            ref.push_back(std::move(r));
        }
        // The reference loop: every sample one Adam step of W (lr_w) and s, z (lr_q).
        std::vector<double> refTrain;
        int t = 0;
        for (int e = 0; e < o.epochs; ++e) {
            double sum = 0;
            for (const auto& x : in) {
                const MatD X = matOf(x, int64_t(x.size()) / spec.dim, spec.dim);
                const LlamaBlock blk(spec, layer, X.rows());
                MatD y0, y;
                blk.forward(fw, X, y0, nullptr);
                BlockWeights qw = fw;
                for (const RefLinear& r : ref) qw.w[size_t(r.idx)] = r.fakeQuant();
                LlamaBlock::Cache c;
                blk.forward(qw, X, y, &c);
                const double n = double(y.size());
                sum += (y - y0).squaredNorm() / n;
                BlockGrads g;
                g.zeroLike(qw);
                blk.backward(qw, c, (y - y0) * (2.0 / n), g);
                ++t;
                for (RefLinear& r : ref) {
                    MatD gW;
                    std::vector<double> gs, gz;
                    r.grads(g.w[size_t(r.idx)], gW, gs, gz);
                    refAdam(r.W.data(), gW.data(), r.mW.data(), r.vW.data(), size_t(r.W.size()), t,
                            o.lrW, nullptr, INFINITY);
                    refAdam(r.s.data(), gs.data(), r.ms.data(), r.vs.data(), gs.size(), t, o.lrQ,
                            r.sLo.data(), INFINITY);
                    if (!r.sym) {
                        const std::vector<double> zlo(gz.size(), 0.0);
                        refAdam(r.z.data(), gz.data(), r.mz.data(), r.vz.data(), gz.size(), t,
                                o.lrQ, zlo.data(), r.qmax());
                    }
                }
            }
            refTrain.push_back(sum / double(in.size()));
        }
        NullProgress np;
        const EfficientQatBlockResult res = efficientQatBlock(*m, layer, in, {}, set, o, np);
        QCOMPARE(res.status, Status::Ok);
        QCOMPARE(res.trainLoss.size(), refTrain.size());
        for (size_t e = 0; e < refTrain.size(); ++e)
            QVERIFY2(std::fabs(res.trainLoss[e] - refTrain[e]) <= 1e-9 * refTrain[e],
                     qPrintable(QString("epoch %1: lib %2 ref %3")
                                    .arg(e)
                                    .arg(res.trainLoss[e])
                                    .arg(refTrain[e])));
        // Training moved the loss (not vacuous) and the first epoch's training loss is RTN's.
        QVERIFY(refTrain.back() < refTrain.front());
        QVERIFY(res.lossEnd <= res.lossStart);
    }

    void neverWorseThanRtnWithValidCodes() {
        auto m = Model::load(lcwtest::demoModelPath());
        const ModelSpec& spec = m->spec();
        const CalibrationSet cal = loadCalibration(*m, "", {3, 32});
        EfficientQatOptions o;
        o.epochs = 4;
        int improved = 0;
        for (int bits : {2, 3}) {
            for (int l = 0; l < int(spec.nLayers); ++l) {
                const auto in = captureBlockHidden(*m, cal, l);
                const BlockWeights fw = loadBlockWeights(*m, l);
                std::map<std::string, WeightSettings> set;
                for (int i = 0; i < 7; ++i) set[layerName(l, i)] = qatSettings(bits, i == kV, 64);
                NullProgress np;
                const EfficientQatBlockResult r = efficientQatBlock(*m, l, in, {}, set, o, np);
                QCOMPARE(r.status, Status::Ok);
                QCOMPARE(r.epochLoss.size(), size_t(4));
                QVERIFY(r.lossEnd <= r.lossStart);
                if (r.lossEnd < 0.99 * r.lossStart) ++improved;
                BlockWeights rtn = fw, qat = fw;
                for (int i = 0; i < 7; ++i) {
                    const std::string name = layerName(l, i);
                    const MatD& W = fw.w[size_t(i)];
                    WeightSettings rs = set[name];
                    rs.method = WeightMethod::Rtn;
                    const std::vector<float> wf = floatsOf(W);
                    const PackedTensor pr = quantize(wf.data(), W.rows(), W.cols(), rs, name);
                    rtn.w[size_t(i)] = matOf(dequantize(pr, name), W.rows(), W.cols());
                    const PackedTensor& p = r.packed.at(name);
                    QCOMPARE(p.settings.method, WeightMethod::EfficientQat);
                    QCOMPARE(p.storageBits(), pr.storageBits()); // RTN's layout and size
                    const std::vector<float> v = dequantize(p, name);
                    qat.w[size_t(i)] = matOf(v, W.rows(), W.cols());
                    // Every stored value is (k − z)·s for an integer code k on the grid.
                    const QatQuantizer layout = qatStart(set[name], W, name);
                    const double lo = rs.symmetric ? -layout.qmax() : 0.0;
                    for (int64_t k = 0; k < W.size(); ++k) {
                        const size_t g = size_t(layout.grid[size_t(k)]);
                        const double sc = f16ToF32(p.scales[g]);
                        const double z = rs.symmetric ? 0.0 : f16ToF32(p.zeros[g]);
                        QVERIFY(sc > 0);
                        QVERIFY(z == std::round(z) && z >= 0 && z <= layout.qmax());
                        const double code = double(v[size_t(k)]) / sc + z;
                        QVERIFY2(
                            std::fabs(code - std::round(code)) < 1e-3,
                            qPrintable(
                                QString("%1[%2]: code %3").arg(name.c_str()).arg(k).arg(code)));
                        QVERIFY(std::round(code) >= lo && std::round(code) <= layout.qmax());
                    }
                    const auto wc = r.weightChange.at(name);
                    QVERIFY(wc >= 0 && wc < 0.5);
                }
                const double eRtn = blockMse(spec, l, fw, rtn, in);
                const double eQat = blockMse(spec, l, fw, qat, in);
                QVERIFY2(std::fabs(eRtn - r.lossStart) <= 1e-6 * eRtn,
                         qPrintable(QString("rtn %1 start %2").arg(eRtn).arg(r.lossStart)));
                QVERIFY(std::fabs(eQat - r.lossEnd) <= 1e-6 * eQat);
                QVERIFY(eQat <= eRtn);
            }
        }
        // The training does something: most blocks improve on RTN by more than 1 %.
        QVERIFY2(improved >= int(spec.nLayers), qPrintable(QString::number(improved)));
    }

    void compressSizesAndOverlay() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {3, 32});
        const Recipe r = lcwtest::recipeFromQuoted(
            "{'lcw_recipe': 1, 'rules': [{'targets': ['layers.*'], 'weight': {'bits': 3, "
            "'symmetric': false, 'group_size': 64, 'method': 'efficientqat', 'epochs': 2, "
            "'lr_w': 0.0005, 'lr_q': 0.002}}]}");
        NullProgress np;
        CompressOptions co;
        co.calibration = &cal;
        const CompressResult res = lcw::compress::compress(*m, r, np, co);
        QVERIFY(res.model);
        PlanOptions po;
        po.hasCalibration = true;
        const SizeEstimate est = estimatePlan(planRecipe(r, *m, po), *m);
        QCOMPARE(est.total.bits, res.model->totalSize().bits);
        QCOMPARE(res.layers.size(), size_t(7 * m->spec().nLayers));
        for (const auto& l : res.layers) {
            QCOMPARE(res.model->compressed(l.name)->packed.settings.method,
                     WeightMethod::EfficientQat);
            QVERIFY(l.details["block_loss_end"].get<double>() <=
                    l.details["block_loss_start"].get<double>());
            QCOMPARE(l.details["epoch_loss"].size(), size_t(2));
            QCOMPARE(l.details["efficientqat_lr_w"].get<double>(), 0.0005);
        }
        const std::string dir = lcwtest::tempDir("efficientqat") + "/ov";
        res.model->save(dir);
        auto back = CompressedModel::load(dir, *m);
        QCOMPARE(back->compressedSize().bits, res.model->compressedSize().bits);
        for (const auto& n : res.model->replacedNames()) {
            const PackedTensor& a = res.model->compressed(n)->packed;
            const PackedTensor& b = back->compressed(n)->packed;
            QVERIFY(a.codes == b.codes && a.scales == b.scales && a.zeros == b.zeros);
            QCOMPARE(b.settings.method, WeightMethod::EfficientQat);
        }
        QVERIFY(lcwtest::sameFiniteLogits(*res.model, *back));
    }

    void presetAndCli() {
        const Preset* p = findPresetIfAny("W2-g64-EfficientQAT");
        QVERIFY(p);
        QVERIFY(findPresetIfAny("W3-g64-EfficientQAT"));
        const std::string text = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
        const auto r =
            lcwtest::runCli({"compress", QString::fromStdString(lcwtest::demoModelPath()),
                             "--preset", "W2-g64-EfficientQAT", "--calib",
                             QString::fromStdString(text), "--samples", "2", "--seq-len", "32"});
        QVERIFY2(r.code == 0, r.err.constData());
        QVERIFY(r.out.contains("efficientqat block output MSE"));
    }

    void blockInputGradient() {
        // dL/dx of LlamaBlock::backward (E2E-QP chains blocks through it) against central
        // differences.
        auto m = Model::load(lcwtest::demoModelPath());
        const ModelSpec& spec = m->spec();
        const BlockWeights bw = loadBlockWeights(*m, 3);
        std::mt19937 rng(5);
        std::normal_distribution<double> nd(0.0, 1.0);
        const int64_t T = 5;
        MatD X(T, spec.dim), R(T, spec.dim);
        for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = nd(rng), R.data()[i] = nd(rng);
        const LlamaBlock blk(spec, 3, T);
        LlamaBlock::Cache c;
        MatD y, dx;
        blk.forward(bw, X, y, &c);
        BlockGrads g;
        g.zeroLike(bw);
        blk.backward(bw, c, R, g, &dx);
        QCOMPARE(dx.rows(), T);
        auto loss = [&] {
            MatD yy;
            blk.forward(bw, X, yy, nullptr);
            return (yy.array() * R.array()).sum();
        };
        for (int64_t k = 0; k < X.size(); k += 7) {
            const double keep = X.data()[k];
            X.data()[k] = keep + 1e-6;
            const double lp = loss();
            X.data()[k] = keep - 1e-6;
            const double lm = loss();
            X.data()[k] = keep;
            const double fd = (lp - lm) / 2e-6;
            QVERIFY2(
                std::fabs(fd - dx.data()[k]) <= 1e-6 + 1e-5 * std::fabs(fd),
                qPrintable(QString("x[%1]: fd %2 analytic %3").arg(k).arg(fd).arg(dx.data()[k])));
        }
    }

    void e2eLossAndStepGradients() {
        auto m = Model::load(lcwtest::demoModelPath());
        const Recipe r = lcwtest::recipeFromQuoted(
            "{'lcw_recipe': 1, 'rules': [{'targets': ['layers.*'], 'weight': {'bits': 3, "
            "'symmetric': false, 'group_size': 32}}, {'targets': ['layers.*.attn.o'], 'weight': "
            "{'bits': 4, 'symmetric': true, 'granularity': 'channel'}}]}");
        NullProgress np;
        const CompressResult res = lcw::compress::compress(*m, r, np, {});
        QVERIFY(res.model);
        std::map<std::string, PackedTensor> packed;
        for (const auto& n : res.model->replacedNames())
            packed[n] = res.model->compressed(n)->packed;
        QCOMPARE(packed.size(), size_t(7 * m->spec().nLayers));
        const std::vector<int32_t> ids = {1, 403, 261, 280, 378, 263, 423, 271, 266, 302, 91, 30};
        // The double model's cross-entropy equals the runtime's on the overlay.
        std::vector<float> logits;
        {
            Session sess(*res.model);
            sess.forward(ids, logits, true);
        }
        const int64_t V = m->spec().vocab;
        double ce = 0;
        for (size_t t = 0; t + 1 < ids.size(); ++t) {
            const float* row = logits.data() + int64_t(t) * V;
            double mx = row[0], z = 0;
            for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
            for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
            ce += std::log(z) + mx - double(row[ids[t + 1]]);
        }
        ce /= double(ids.size() - 1);
        std::map<std::string, std::vector<double>> grads;
        const double loss = efficientQatE2eLoss(*res.model, packed, {}, ids, &grads);
        // (The runtime multiplies in float with quantised activations in its packed products.)
        QVERIFY2(std::fabs(loss - ce) <= 1e-3 * ce,
                 qPrintable(QString("double %1 runtime %2").arg(loss).arg(ce)));
        // dL/ds against central differences of the loss in s (exactly smooth: codes fixed).
        std::mt19937 rng(3);
        double maxG = 0;
        for (const char* name :
             {"layers.0.attn.q", "layers.2.attn.o", "layers.4.mlp.down", "layers.1.mlp.gate"}) {
            std::vector<double> s;
            for (uint16_t h : packed.at(name).scales) s.push_back(f16ToF32(h));
            for (int k = 0; k < 4; ++k) {
                const size_t g = size_t(rng()) % s.size();
                const double eps = 1e-4 * s[g];
                std::vector<double> sp = s, sm = s;
                sp[g] += eps;
                sm[g] -= eps;
                const double fd = (efficientQatE2eLoss(*res.model, packed, {{name, sp}}, ids) -
                                   efficientQatE2eLoss(*res.model, packed, {{name, sm}}, ids)) /
                                  (2 * eps);
                const double an = grads.at(name)[g];
                QVERIFY2(
                    std::fabs(fd - an) <= 1e-7 + 1e-4 * std::fabs(fd),
                    qPrintable(
                        QString("%1 s[%2]: fd %3 analytic %4").arg(name).arg(g).arg(fd).arg(an)));
                maxG = std::max(maxG, std::fabs(an));
            }
        }
        QVERIFY(maxG > 1e-3);
    }

    void e2eNeverWorseCodesFixed() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {3, 32});
        const Recipe r = lcwtest::recipeFromQuoted(
            "{'lcw_recipe': 1, 'rules': [{'targets': ['layers.*'], 'weight': {'bits': 3, "
            "'symmetric': false, 'group_size': 64, 'method': 'efficientqat', 'epochs': 1, "
            "'e2e_epochs': 3, 'lr_e2e': 0.001}}]}");
        NullProgress np;
        CompressOptions co;
        co.calibration = &cal;
        const CompressResult res = lcw::compress::compress(*m, r, np, co);
        QVERIFY(res.model);
        double start = -1, end = -1;
        for (const auto& l : res.layers) {
            QCOMPARE(l.details["e2e_epoch_loss"].size(), size_t(3));
            start = l.details["e2e_loss_start"].get<double>();
            end = l.details["e2e_loss_end"].get<double>();
            QVERIFY(end <= start);
        }
        QVERIFY2(end < start, qPrintable(QString("%1 -> %2").arg(start).arg(end))); // it trains
        // Independent: the stored model's mean cross-entropy over the windows is the kept loss.
        std::map<std::string, PackedTensor> packed;
        for (const auto& n : res.model->replacedNames())
            packed[n] = res.model->compressed(n)->packed;
        double sum = 0;
        for (const auto& w : cal.samples) sum += efficientQatE2eLoss(*res.model, packed, {}, w);
        QVERIFY2(std::fabs(sum / double(cal.samples.size()) - end) <= 1e-9 * end,
                 qPrintable(QString("%1 vs %2").arg(sum / 3).arg(end)));
        // The codes and zero points are Block-AP's: the same run without E2E-QP.
        const Recipe r0 = lcwtest::recipeFromQuoted(
            "{'lcw_recipe': 1, 'rules': [{'targets': ['layers.*'], 'weight': {'bits': 3, "
            "'symmetric': false, 'group_size': 64, 'method': 'efficientqat', 'epochs': 1}}]}");
        const CompressResult res0 = lcw::compress::compress(*m, r0, np, co);
        int scalesMoved = 0;
        for (const auto& n : res.model->replacedNames()) {
            const PackedTensor& a = res.model->compressed(n)->packed;
            const PackedTensor& b = res0.model->compressed(n)->packed;
            QVERIFY(a.codes == b.codes && a.zeros == b.zeros);
            scalesMoved += a.scales != b.scales;
        }
        QVERIFY(scalesMoved > 0);
        // The E2E options check and its cancellation.
        EfficientQatOptions o;
        o.e2eEpochs = 2;
        FunctionProgress stop([](double, std::string_view) { return false; });
        QCOMPARE(efficientQatEndToEnd(*res.model, packed, cal.samples, o, stop).status,
                 Status::Cancelled);
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 efficientQatEndToEnd(*res.model, packed, {{1}}, o, np));
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 efficientQatE2eLoss(*res.model, packed, {}, {1, 100000}));
    }

    void cancelAndErrors() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {2, 16});
        const auto in = captureBlockHidden(*m, cal, 0);
        std::map<std::string, WeightSettings> set = {
            {"layers.0.attn.q", qatSettings(3, false, 32)}};
        FunctionProgress stop([](double, std::string_view) { return false; });
        EfficientQatOptions o;
        o.epochs = 2;
        QCOMPARE(efficientQatBlock(*m, 0, in, {}, set, o, stop).status, Status::Cancelled);
        NullProgress np;
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError,
            efficientQatBlock(*m, 0, in, {}, {{"layers.1.attn.q", set.begin()->second}}, o, np));
        WeightSettings nf4 = set.begin()->second;
        nf4.format = WeightFormat::Nf4;
        QVERIFY_THROWS_EXCEPTION(
            UnsupportedError, efficientQatBlock(*m, 0, in, {}, {{"layers.0.attn.q", nf4}}, o, np));
        EfficientQatOptions bad = o;
        bad.lrW = -1;
        QVERIFY_THROWS_EXCEPTION(ArgumentError, efficientQatBlock(*m, 0, in, {}, set, bad, np));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, efficientQatBlock(*m, 0, {}, {}, set, o, np));
        // Recipe fields: errors name the field.
        auto field = [&](const std::string& weight, bool calib = true) -> std::string {
            try {
                const Recipe r = lcwtest::recipeFromQuoted(
                    "{'lcw_recipe': 1, 'rules': [{'targets': ['layers.*'], 'weight': " + weight +
                    "}]}");
                PlanOptions po;
                po.hasCalibration = calib;
                planRecipe(r, *m, po);
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field("{'method': 'efficientqat', 'lr_w': -1}"), std::string("weight.lr_w"));
        QCOMPARE(field("{'method': 'efficientqat', 'lr_q': 2}"), std::string("weight.lr_q"));
        QCOMPARE(field("{'method': 'efficientqat', 'e2e_epochs': -1}"),
                 std::string("weight.e2e_epochs"));
        QCOMPARE(field("{'method': 'efficientqat', 'lr_e2e': 0}"), std::string("weight.lr_e2e"));
        QCOMPARE(field("{'method': 'efficientqat', 'epochs': -2}"), std::string("weight.epochs"));
        QCOMPARE(field("{'method': 'gptq', 'lr_w': 0.001}"), std::string("weight.lr_w"));
        QCOMPARE(field("{'method': 'efficientqat', 'format': 'nf4'}"),
                 std::string("weight.format"));
        QCOMPARE(field("{'method': 'efficientqat'}", false), std::string("weight.method"));
        QCOMPARE(field("{'method': 'efficientqat', 'gguf': 'q4_k'}"), std::string("weight.gguf"));
        QCOMPARE(field("{'method': 'efficientqat', 'lr_w': 0.001, 'lr_q': 0.01, 'epochs': 3}"),
                 std::string());
    }
};

QTEST_GUILESS_MAIN(TestEfficientQat)
#include "test_efficientqat.moc"
