#include "core/compress/awq.h"

#include "core/common/error.h"
#include "core/compress/threads.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>

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

} // namespace

double outputSqError(const float* X, int64_t n, int64_t cols, const float* w, const float* wq,
                     int64_t rows) {
    const MatRF D =
        Eigen::Map<const MatRF>(w, rows, cols) - Eigen::Map<const MatRF>(wq, rows, cols);
    Eigen::VectorXd e;
    rowGroupErrors(X, n, cols, D, 0, cols, e);
    return e.sum();
}

AwqScaleResult awqSearchScale(const float* X, int64_t n, int64_t cols,
                              const std::vector<float>& meanAbs,
                              const std::vector<AwqMember>& members, const AwqOptions& o) {
    if (int64_t(meanAbs.size()) != cols) throw ArgumentError("AWQ: statistic size mismatch");
    const SingleThreadIf oneThread(n * cols < (int64_t(1) << 18));
    const int grid = std::max(o.grid, 1);
    AwqScaleResult best;
    best.error = std::numeric_limits<double>::infinity();
    std::vector<float> s(static_cast<size_t>(cols)), ws, wq;
    for (int gi = 0; gi < grid; ++gi) {
        const double alpha = grid == 1 ? 0.0 : double(gi) / double(grid - 1);
        double smax = 0, smin = std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < cols; ++j) {
            const double m = std::max<double>(meanAbs[size_t(j)], 1e-4);
            const double v = alpha == 0 ? 1.0 : std::pow(m, alpha);
            s[size_t(j)] = float(v);
            smax = std::max(smax, v), smin = std::min(smin, v);
        }
        const double norm = std::sqrt(smax * smin);
        for (auto& v : s) v = float(double(v) / norm);
        if (alpha == 0) std::fill(s.begin(), s.end(), 1.0f);
        double err = 0;
        for (const AwqMember& m : members) {
            if (!m.quantized) continue;
            ws.assign(m.w, m.w + m.rows * cols);
            for (int64_t r = 0; r < m.rows; ++r)
                for (int64_t j = 0; j < cols; ++j) ws[size_t(r * cols + j)] *= s[size_t(j)];
            wq = dequantize(m.settings.ggufGrid
                                ? quantize(ws.data(), m.rows, cols, m.settings.stored(), m.name)
                                : quantizeClipped(ws.data(), m.rows, cols, m.settings, {}, m.name),
                            m.name);
            for (int64_t r = 0; r < m.rows; ++r)
                for (int64_t j = 0; j < cols; ++j) wq[size_t(r * cols + j)] /= s[size_t(j)];
            err += outputSqError(X, n, cols, m.w, wq.data(), m.rows);
        }
        if (alpha == 0) best.identityError = err;
        if (err < best.error) {
            best.error = err;
            best.alpha = alpha;
            best.scale = s;
        }
    }
    return best;
}

AwqClipResult awqClipQuantize(const float* X, int64_t n, int64_t cols, const float* w, int64_t rows,
                              const WeightSettings& s, const AwqOptions& o,
                              const std::string& name, const float* importance) {
    const SingleThreadIf oneThread(n * cols < (int64_t(1) << 18));
    AwqClipResult res;
    res.packed = s.ggufGrid ? quantize(w, rows, cols, s.stored(), name, importance)
                            : quantizeClipped(w, rows, cols, s, {}, name);
    std::vector<float> wq = dequantize(res.packed, name);
    res.unclippedError = res.error = outputSqError(X, n, cols, w, wq.data(), rows);
    if (s.ggufGrid || !o.clipSearch || o.clipGrid < 1 || !(o.maxShrink > 0)) return res;

    const int64_t gpr = gridsPerRow(s, cols);
    const bool tensor = gpr == 0;
    const int64_t gl =
        tensor
            ? cols
            : (s.granularity == Granularity::Channel ? cols : std::min<int64_t>(s.groupSize, cols));
    const int64_t ngr = tensor ? 1 : gpr; // column groups
    const size_t nclip = tensor ? 1 : size_t(rows * gpr);
    std::vector<float> bestClip(nclip, 1.0f), clip(nclip);
    // Error per (row, column group) at each factor; tensor granularity sums over rows.
    std::vector<double> bestErr(nclip, std::numeric_limits<double>::infinity());
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
        for (int64_t g = 0; g < ngr; ++g) {
            const int64_t c0 = g * gl, c1 = std::min(cols, c0 + gl);
            rowGroupErrors(X, n, cols, D, c0, c1, e);
            if (tensor) {
                if (e.sum() < bestErr[0]) bestErr[0] = e.sum(), bestClip[0] = f;
                continue;
            }
            for (int64_t r = 0; r < rows; ++r) {
                const size_t idx = size_t(r * gpr + g);
                if (e(r) < bestErr[idx]) bestErr[idx] = e(r), bestClip[idx] = f;
            }
        }
    }
    PackedTensor cp = quantizeClipped(w, rows, cols, s, bestClip, name);
    const std::vector<float> cq = dequantize(cp, name);
    const double cerr = outputSqError(X, n, cols, w, cq.data(), rows);
    if (cerr < res.unclippedError) {
        res.packed = std::move(cp);
        res.error = cerr;
        res.clipped = true;
        double sum = 0;
        for (float c : bestClip) sum += c;
        res.meanClip = sum / double(bestClip.size());
    }
    return res;
}

} // namespace lcw::compress
