#include "core/compress/awq.h"

#include "core/common/error.h"
#include "core/compress/threads.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace lcw::compress {

namespace {

using MatRF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Per-row sums of squares of X Dᵀ restricted to columns [c0, c1) (the whole row when c1 = cols).
void rowGroupErrors(const float* X, int64_t n, int64_t cols, const MatRF& D, int64_t c0, int64_t c1,
                    Eigen::VectorXd& out) {
    const Eigen::Map<const MatRF> Xm(X, n, cols);
    const MatRF E = Xm.middleCols(c0, c1 - c0) * D.middleCols(c0, c1 - c0).transpose();
    out = E.cast<double>().colwise().squaredNorm().transpose();
}

/// Per (row, column group g) errors `e` of clip factor f: keeps f where it beats the best so far
/// (tensor granularity: one entry, the sum over rows).
void keepBetterClip(const Eigen::VectorXd& e, bool tensor, int64_t g, int64_t gpr, float f,
                    std::vector<double>& bestErr, std::vector<float>& bestClip) {
    if (tensor) {
        if (e.sum() < bestErr[0]) bestErr[0] = e.sum(), bestClip[0] = f;
        return;
    }
    for (int64_t r = 0; r < e.size(); ++r) {
        const size_t idx = size_t(r * gpr + g);
        if (e(r) < bestErr[idx]) bestErr[idx] = e(r), bestClip[idx] = f;
    }
}

/// The units a clipping search chooses a factor for: one per (row, column group) of the grid,
/// or one for the whole tensor (tensor granularity); channel granularity is one group per row.
struct ClipUnits {
    ClipUnits(const WeightSettings& s, int64_t rows, int64_t cols)
        : gpr(gridsPerRow(s, cols)), tensor(gpr == 0),
          gl(tensor || s.granularity == Granularity::Channel
                 ? cols
                 : std::min<int64_t>(s.groupSize, cols)),
          ngr(tensor ? 1 : gpr), count(tensor ? 1 : size_t(rows * gpr)) {}
    int64_t gpr;  ///< groups per row (0: tensor granularity)
    bool tensor;  ///< one unit for the whole tensor
    int64_t gl;   ///< columns per group
    int64_t ngr;  ///< column groups
    size_t count; ///< units
    size_t of(int64_t r, int64_t j) const { return tensor ? 0 : size_t(r * gpr + j / gl); }
};

/// A search's chosen factors into the result: the per-unit ratios, their mean and minimum.
void recordClip(AwqClipResult& res, std::vector<float> bestClip) {
    res.clipped = true;
    double sum = 0;
    for (float c : bestClip) sum += c;
    res.meanClip = sum / double(bestClip.size());
    res.minClip = *std::min_element(bestClip.begin(), bestClip.end());
    res.ratio = std::move(bestClip);
}

} // namespace

double outputSqError(const float* X, int64_t n, int64_t cols, const float* w, const float* wq,
                     int64_t rows) {
    const MatRF D =
        Eigen::Map<const MatRF>(w, rows, cols) - Eigen::Map<const MatRF>(wq, rows, cols);
    Eigen::VectorXd e;
    rowGroupErrors(X, n, cols, D, 0, cols, e);
    return e.sum();
}

std::vector<double> awqAlphas(const AwqOptions& o) {
    const int grid = std::max(o.grid, 1);
    std::vector<double> a;
    for (int i = 0; i < grid; ++i)
        a.push_back(o.gridRule == AwqGridRule::Reference ? double(i) / double(grid)
                    : grid == 1                          ? 0.0
                                                         : double(i) / double(grid - 1));
    return a;
}

std::vector<float> awqScales(const std::vector<float>& meanAbs, double alpha, AwqGridRule rule) {
    const size_t cols = meanAbs.size();
    std::vector<float> s(cols, 1.0f);
    if (alpha == 0) return s;
    if (rule == AwqGridRule::Inclusive) {
        // lcw's earlier form (kept bit for bit): the statistic clamped before the power.
        double smax = 0, smin = std::numeric_limits<double>::infinity();
        for (size_t j = 0; j < cols; ++j) {
            const double v = std::pow(std::max<double>(meanAbs[j], 1e-4), alpha);
            s[j] = float(v);
            smax = std::max(smax, v), smin = std::min(smin, v);
        }
        const double norm = std::sqrt(smax * smin);
        for (auto& v : s) v = float(double(v) / norm);
        return s;
    }
    // llm-awq: x_max.pow(ratio).clamp(min=1e-4); scales / sqrt(max * min).
    std::vector<double> v(cols);
    double smax = 0, smin = std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < cols; ++j) {
        v[j] = std::max(std::pow(double(meanAbs[j]), alpha), 1e-4);
        smax = std::max(smax, v[j]), smin = std::min(smin, v[j]);
    }
    const double norm = std::sqrt(smax * smin);
    for (size_t j = 0; j < cols; ++j) s[j] = float(v[j] / norm);
    return s;
}

std::vector<int64_t> awqSampleTokens(int64_t total, int64_t count, uint64_t seed) {
    std::vector<int64_t> idx(size_t(std::max<int64_t>(total, 0)));
    for (int64_t i = 0; i < total; ++i) idx[size_t(i)] = i;
    if (total <= count) return idx;
    std::mt19937_64 rng(seed);
    for (int64_t i = 0; i < count; ++i) {
        const int64_t j = i + int64_t(rng() % uint64_t(total - i));
        std::swap(idx[size_t(i)], idx[size_t(j)]);
    }
    idx.resize(size_t(count));
    std::sort(idx.begin(), idx.end());
    return idx;
}

AwqScaleResult awqSearchScaleLoss(int64_t cols, const std::vector<float>& meanAbs,
                                  const std::vector<AwqMember>& members, const AwqOptions& o,
                                  const AwqLoss& loss) {
    if (int64_t(meanAbs.size()) != cols) throw ArgumentError("AWQ: statistic size mismatch");
    AwqScaleResult best;
    best.error = std::numeric_limits<double>::infinity();
    std::vector<float> ws;
    std::vector<std::vector<float>> wq(members.size());
    for (const double alpha : awqAlphas(o)) {
        const std::vector<float> s = awqScales(meanAbs, alpha, o.gridRule);
        for (size_t k = 0; k < members.size(); ++k) {
            const AwqMember& m = members[k];
            wq[k].clear();
            if (!m.quantized) continue;
            ws.assign(m.w, m.w + m.rows * cols);
            for (int64_t r = 0; r < m.rows; ++r)
                for (int64_t j = 0; j < cols; ++j) ws[size_t(r * cols + j)] *= s[size_t(j)];
            wq[k] =
                dequantize(m.settings.ggufGrid
                               ? quantize(ws.data(), m.rows, cols, m.settings.stored(), m.name)
                               : quantizeClipped(ws.data(), m.rows, cols, m.settings, {}, m.name),
                           m.name);
            for (int64_t r = 0; r < m.rows; ++r)
                for (int64_t j = 0; j < cols; ++j) wq[k][size_t(r * cols + j)] /= s[size_t(j)];
        }
        const double err = loss(wq, s);
        if (alpha == 0) best.identityError = err;
        if (err < best.error) {
            best.error = err;
            best.alpha = alpha;
            best.scale = s;
        }
    }
    return best;
}

AwqScaleResult awqSearchScale(const float* X, int64_t n, int64_t cols,
                              const std::vector<float>& meanAbs,
                              const std::vector<AwqMember>& members, const AwqOptions& o) {
    const SingleThreadIf oneThread(n * cols < (int64_t(1) << 18));
    return awqSearchScaleLoss(
        cols, meanAbs, members, o,
        [&](const std::vector<std::vector<float>>& wq, const std::vector<float>&) {
            double err = 0;
            for (size_t k = 0; k < members.size(); ++k)
                if (!wq[k].empty())
                    err += outputSqError(X, n, cols, members[k].w, wq[k].data(), members[k].rows);
            return err;
        });
}

namespace {

/// llm-awq's auto_clip on lcw's grid: per (row, group) the clamp ±f·max|w| with the smallest
/// mean over X's rows of (x·(Q(clamp(w)) − w))², then the tensor quantised with those clamps.
AwqClipResult autoClipQuantize(const float* X, int64_t n, int64_t cols, const float* w,
                               int64_t rows, const WeightSettings& s, const AwqOptions& o,
                               const std::string& name, AwqClipResult res) {
    const ClipUnits cu(s, rows, cols);
    // max|w| per clip unit (the whole tensor for tensor granularity).
    std::vector<float> amax(cu.count, 0.0f);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
            const size_t u = cu.of(r, j);
            amax[u] = std::max(amax[u], std::fabs(w[r * cols + j]));
        }
    auto clamped = [&](const std::vector<float>& f) {
        std::vector<float> c(w, w + rows * cols);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) {
                const size_t u = cu.of(r, j);
                const float mv = amax[u] * f[u];
                float& v = c[size_t(r * cols + j)];
                v = std::clamp(v, -mv, mv);
            }
        return c;
    };
    std::vector<float> bestClip(cu.count, 1.0f), clip(cu.count);
    std::vector<double> bestErr(cu.count, std::numeric_limits<double>::infinity());
    const int steps = int(std::floor(o.maxShrink * o.clipGrid + 1e-9));
    using MatRD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const MatRD Xd = Eigen::Map<const MatRF>(X, n, cols).cast<double>();
    const MatRD Wd = Eigen::Map<const MatRF>(w, rows, cols).cast<double>();
    Eigen::VectorXd e;
    for (int k = 0; k < std::max(steps, 1); ++k) {
        const float f = float(1.0 - double(k) / double(o.clipGrid));
        std::fill(clip.begin(), clip.end(), f);
        const std::vector<float> cw = clamped(clip);
        const std::vector<float> q =
            dequantize(quantizeClipped(cw.data(), rows, cols, s, {}, name), name);
        const MatRD D = Eigen::Map<const MatRF>(q.data(), rows, cols).cast<double>() - Wd;
        for (int64_t g = 0; g < cu.ngr; ++g) {
            const int64_t c0 = g * cu.gl, c1 = std::min(cols, c0 + cu.gl);
            const MatRD E = Xd.middleCols(c0, c1 - c0) * D.middleCols(c0, c1 - c0).transpose();
            e = E.colwise().squaredNorm().transpose() / double(std::max<int64_t>(n, 1));
            keepBetterClip(e, cu.tensor, g, cu.gpr, f, bestErr, bestClip);
        }
    }
    const std::vector<float> cw = clamped(bestClip);
    res.packed = quantizeClipped(cw.data(), rows, cols, s, {}, name);
    const std::vector<float> cq = dequantize(res.packed, name);
    res.error = outputSqError(X, n, cols, w, cq.data(), rows);
    recordClip(res, std::move(bestClip));
    return res;
}

} // namespace

AwqClipResult awqClipQuantize(const float* X, int64_t n, int64_t cols, const float* w, int64_t rows,
                              const WeightSettings& s, const AwqOptions& o, const std::string& name,
                              const float* importance) {
    const SingleThreadIf oneThread(n * cols < (int64_t(1) << 18));
    AwqClipResult res;
    res.packed = s.ggufGrid ? quantize(w, rows, cols, s.stored(), name, importance)
                            : quantizeClipped(w, rows, cols, s, {}, name);
    std::vector<float> wq = dequantize(res.packed, name);
    res.unclippedError = res.error = outputSqError(X, n, cols, w, wq.data(), rows);
    if (s.ggufGrid || !o.clipSearch || o.clipGrid < 1 || !(o.maxShrink > 0)) return res;
    if (o.clip == AwqClipMode::Auto)
        return autoClipQuantize(X, n, cols, w, rows, s, o, name, std::move(res));

    const ClipUnits cu(s, rows, cols);
    std::vector<float> bestClip(cu.count, 1.0f), clip(cu.count);
    // Error per (row, column group) at each factor; tensor granularity sums over rows.
    std::vector<double> bestErr(cu.count, std::numeric_limits<double>::infinity());
    const int steps = std::max(1, int(std::ceil(o.maxShrink * o.clipGrid)));
    Eigen::VectorXd e;
    for (int k = 0; k < steps; ++k) {
        const float f = float(1.0 - double(k) / double(o.clipGrid));
        if (!(f > 1.0 - o.maxShrink - 1e-9)) break;
        std::fill(clip.begin(), clip.end(), f);
        const std::vector<float> q =
            dequantize(quantizeClipped(w, rows, cols, s, clip, name), name);
        const MatRF D =
            Eigen::Map<const MatRF>(w, rows, cols) - Eigen::Map<const MatRF>(q.data(), rows, cols);
        for (int64_t g = 0; g < cu.ngr; ++g) {
            const int64_t c0 = g * cu.gl, c1 = std::min(cols, c0 + cu.gl);
            rowGroupErrors(X, n, cols, D, c0, c1, e);
            keepBetterClip(e, cu.tensor, g, cu.gpr, f, bestErr, bestClip);
        }
    }
    PackedTensor cp = quantizeClipped(w, rows, cols, s, bestClip, name);
    const std::vector<float> cq = dequantize(cp, name);
    const double cerr = outputSqError(X, n, cols, w, cq.data(), rows);
    if (cerr < res.unclippedError) {
        res.packed = std::move(cp);
        res.error = cerr;
        recordClip(res, std::move(bestClip));
    }
    return res;
}

} // namespace lcw::compress
