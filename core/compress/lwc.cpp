// OmniQuant's learnable weight clipping of one linear (lwc.h).
#include "core/compress/lwc.h"

#include <algorithm>
#include <cmath>

namespace lcw::compress {

namespace {

double qmaxOf(const WeightSettings& s) {
    return s.symmetric ? double((1 << (s.bits - 1)) - 1) : double((1 << s.bits) - 1);
}

} // namespace

/// Group ranges (min(·, 0), max(·, 0), float-rounded as the stored grid sees them) of W.
void lwcSetRanges(Lwc& l, const MatD& W) {
    std::fill(l.mn.begin(), l.mn.end(), 0.0);
    std::fill(l.mx.begin(), l.mx.end(), 0.0);
    l.imn.assign(l.mn.size(), -1);
    l.imx.assign(l.mn.size(), -1);
    for (int64_t i = 0; i < l.rows * l.cols; ++i) {
        const size_t g = size_t(l.grid[size_t(i)]);
        if (W.data()[i] < l.mn[g]) l.mn[g] = W.data()[i], l.imn[g] = i;
        if (W.data()[i] > l.mx[g]) l.mx[g] = W.data()[i], l.imx[g] = i;
    }
    for (size_t g = 0; g < l.mn.size(); ++g) {
        l.mn[g] = double(float(l.mn[g]));
        l.mx[g] = double(float(l.mx[g]));
    }
}

/// dL/dW from dL/dŴ: straight through round(), zero where the value is clamped, plus the
/// group ranges' dependence on W (through the elements that set each group's min and max; uses
/// gmx/gmn of the last factorGrads).
MatD lwcSteGrad(const Lwc& l, const MatD& W, const MatD& gW) {
    MatD out = gW;
    const double qm = qmaxOf(l.s);
    for (int64_t i = 0; i < l.rows * l.cols; ++i) {
        const size_t g = size_t(l.grid[size_t(i)]);
        const double x = W.data()[i];
        bool in = true;
        if (l.s.symmetric) {
            const double h = l.a[g] * std::max(-l.mn[g], l.mx[g]) / qm;
            in = h > 0 && std::fabs(std::nearbyint(x / h)) <= qm;
        } else {
            const double mnc = l.b[g] * l.mn[g], h = (l.a[g] * l.mx[g] - mnc) / qm;
            if (h > 0) {
                const double z = std::clamp(std::nearbyint(-mnc / h), 0.0, qm);
                const double qr = std::nearbyint(x / h + z);
                in = qr >= 0 && qr <= qm;
            } else {
                in = false;
            }
        }
        if (!in) out.data()[i] = 0.0;
    }
    for (size_t g = 0; g < l.mn.size(); ++g) {
        if (l.s.symmetric) {
            const bool fromMax = l.mx[g] >= -l.mn[g];
            const int64_t i = fromMax ? l.imx[g] : l.imn[g];
            if (i >= 0) out.data()[i] += fromMax ? l.gmx[g] : -l.gmx[g];
        } else {
            if (l.imx[g] >= 0) out.data()[l.imx[g]] += l.gmx[g];
            if (l.imn[g] >= 0) out.data()[l.imn[g]] += l.gmn[g];
        }
    }
    return out;
}

/// Fake-quantised weights (double grid, no f16 rounding) for the current factors.
MatD lwcFakeQuant(const Lwc& l, const MatD& W) {
    MatD out(l.rows, l.cols);
    const double qm = qmaxOf(l.s);
    for (int64_t i = 0; i < l.rows * l.cols; ++i) {
        const size_t g = size_t(l.grid[size_t(i)]);
        const double x = W.data()[i];
        if (l.s.symmetric) {
            const double h = l.a[g] * std::max(-l.mn[g], l.mx[g]) / qm;
            out.data()[i] = h > 0 ? std::clamp(std::nearbyint(x / h), -qm, qm) * h : 0.0;
        } else {
            const double mnc = l.b[g] * l.mn[g], h = (l.a[g] * l.mx[g] - mnc) / qm;
            if (!(h > 0)) {
                out.data()[i] = 0.0;
                continue;
            }
            const double z = std::clamp(std::nearbyint(-mnc / h), 0.0, qm);
            out.data()[i] = (std::clamp(std::nearbyint(x / h + z), 0.0, qm) - z) * h;
        }
    }
    return out;
}

/// Gradients of the factors from dL/dŴ with the straight-through estimator for round().
void lwcFactorGrads(Lwc& l, const MatD& W, const MatD& gW) {
    std::fill(l.ga.begin(), l.ga.end(), 0.0);
    std::fill(l.gb.begin(), l.gb.end(), 0.0);
    l.gmx.assign(l.ga.size(), 0.0);
    l.gmn.assign(l.ga.size(), 0.0);
    const double qm = qmaxOf(l.s);
    for (int64_t i = 0; i < l.rows * l.cols; ++i) {
        const size_t g = size_t(l.grid[size_t(i)]);
        const double x = W.data()[i], gw = gW.data()[i];
        if (l.s.symmetric) {
            const double amax = std::max(-l.mn[g], l.mx[g]), h = l.a[g] * amax / qm;
            if (!(h > 0)) continue;
            const double qr = std::nearbyint(x / h);
            const bool in = std::fabs(qr) <= qm;
            const double q = std::clamp(qr, -qm, qm);
            // Ŵ = q h: dŴ/dh = q − [in] x / h
            l.ga[g] += gw * (q - (in ? x / h : 0.0)) * amax / qm;
            l.gmx[g] += gw * (q - (in ? x / h : 0.0)) * l.a[g] / qm;
        } else {
            const double mnc = l.b[g] * l.mn[g], h = (l.a[g] * l.mx[g] - mnc) / qm;
            if (!(h > 0)) continue;
            const double z = std::clamp(std::nearbyint(-mnc / h), 0.0, qm);
            const double qr = std::nearbyint(x / h + z);
            const double in = (qr >= 0 && qr <= qm) ? 1.0 : 0.0;
            const double q = std::clamp(qr, 0.0, qm);
            // Ŵ = (q − z) h with z = −mnc / h and q = x / h + z passed straight through.
            const double dh = (q - z) - in * x / h + (in - 1.0) * mnc / h;
            const double dmnc = 1.0 - in;
            l.ga[g] += gw * dh * l.mx[g] / qm;
            l.gb[g] += gw * (-dh / qm + dmnc) * l.mn[g];
            l.gmx[g] += gw * dh * l.a[g] / qm;
            l.gmn[g] += gw * (-dh / qm + dmnc) * l.b[g];
        }
    }
}

/// The packed tensor for the current factors (grids as RTN builds them from the clipped range).
PackedTensor lwcPack(const Lwc& l, const MatD& W) {
    const size_t ng = l.mn.size();
    std::vector<GroupGrid> grids(ng);
    for (size_t g = 0; g < ng; ++g) {
        const float lo = l.s.symmetric ? float(l.a[g] * l.mn[g]) : float(l.b[g] * l.mn[g]);
        grids[g] = groupGrid(l.s, lo, float(l.a[g] * l.mx[g]), l.name);
    }
    std::vector<uint32_t> codes(size_t(l.rows * l.cols));
    for (int64_t i = 0; i < l.rows * l.cols; ++i)
        codes[size_t(i)] = encodeOnGrid(l.s, float(W.data()[i]), grids[size_t(l.grid[size_t(i)])]);
    return packCodes(l.s, l.rows, l.cols, codes, grids);
}

void lwcAdam(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m,
             std::vector<double>& v, int step, double lr, double weightDecay, double minClip) {
    adamUpdate(p.data(), g.data(), m.data(), v.data(), p.size(), step, lr, weightDecay, minClip,
               1.0);
}

/// A learned linear at its start point (factors 1: exactly RTN), its grid ranges from W.
Lwc lwcStart(const std::string& bname, const std::string& name, const WeightSettings& s,
             const BlockWeights& fw) {
    const int idx = blockLinearIndex(bname, name);
    if (idx < 0)
        throw ArgumentError(name + ": omniquant learns the linears of block " + bname +
                            " only (attn.q/k/v/o, mlp.gate/up/down)");
    if (s.format != WeightFormat::Int || methodIsGguf(s.method))
        throw UnsupportedError(name + ": omniquant supports int formats only, not " + s.describe());
    if (s.bits < 2 || s.bits > 8) throw ArgumentError(name + ": int bits must be 2..8");
    Lwc l;
    l.name = name;
    l.index = idx;
    l.s = s;
    const MatD& W = fw.w[size_t(idx)];
    l.rows = W.rows();
    l.cols = W.cols();
    const int64_t gpr = gridsPerRow(s, l.cols);
    const size_t ng = s.granularity == Granularity::Tensor    ? 1
                      : s.granularity == Granularity::Channel ? size_t(l.rows)
                                                              : size_t(l.rows * gpr);
    l.mn.assign(ng, 0.0);
    l.mx.assign(ng, 0.0);
    l.grid.resize(size_t(l.rows * l.cols));
    for (int64_t r = 0; r < l.rows; ++r)
        for (int64_t j = 0; j < l.cols; ++j) {
            const double x = W(r, j);
            if (!std::isfinite(x))
                throw ArgumentError(name + ": non-finite weight at element " +
                                    std::to_string(r * l.cols + j));
            const int64_t g = gridIndex(s, l.cols, r, j);
            l.grid[size_t(r * l.cols + j)] = g;
            l.mn[size_t(g)] = std::min(l.mn[size_t(g)], x);
            l.mx[size_t(g)] = std::max(l.mx[size_t(g)], x);
        }
    // The stored grid works in float: use the float range so that factor 1 is exactly RTN.
    for (size_t g = 0; g < ng; ++g) {
        l.mn[g] = double(float(l.mn[g]));
        l.mx[g] = double(float(l.mx[g]));
    }
    l.a.assign(ng, 1.0);
    l.b.assign(ng, 1.0);
    l.ga = l.gb = l.ma = l.va = l.mb = l.vb = std::vector<double>(ng, 0.0);
    return l;
}

double lwcMeanFactor(const std::vector<double>& factors) {
    double s = 0;
    for (double x : factors) s += x;
    return factors.empty() ? 1.0 : s / double(factors.size());
}

MatD lwcPackedWeights(const Lwc& l, const PackedTensor& p) {
    const std::vector<float> v = dequantize(p, l.name);
    return Eigen::Map<const Eigen::MatrixXf>(v.data(), l.cols, l.rows).transpose().cast<double>();
}

} // namespace lcw::compress
