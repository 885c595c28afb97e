#include "core/compress/smoothquant.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>

namespace lcw::compress {

std::vector<float> smoothQuantScales(const std::vector<float>& xAbsMax,
                                     const std::vector<const float*>& weights,
                                     const std::vector<int64_t>& rows, int64_t cols, double alpha,
                                     SmoothQuantRule rule) {
    if (int64_t(xAbsMax.size()) != cols || weights.size() != rows.size())
        throw ArgumentError("SmoothQuant: statistic and weight sizes do not match");
    if (rule == SmoothQuantRule::Percentile) {
        if (cols <= 0) return {};
        // maxsv, inds = act_scales.sort(); basl = int(len * 0.005 + 1.5); baseline = maxsv[-basl]
        std::vector<float> sorted = xAbsMax;
        std::sort(sorted.begin(), sorted.end());
        const int64_t k = std::min<int64_t>(cols, int64_t(double(cols) * 0.005 + 1.5));
        const float b = sorted[size_t(cols - k)];
        std::vector<float> s(size_t(cols), 1.0f);
        if (b < 1e-4f) return s;
        for (int64_t j = 0; j < cols; ++j)
            if (xAbsMax[size_t(j)] > b) s[size_t(j)] = xAbsMax[size_t(j)] / b;
        return s;
    }
    if (!(alpha >= 0 && alpha <= 1))
        throw ArgumentError("SmoothQuant: alpha must be in [0, 1], got " + std::to_string(alpha));
    std::vector<float> wmax(size_t(cols), 0.0f);
    for (size_t k = 0; k < weights.size(); ++k)
        for (int64_t r = 0; r < rows[k]; ++r)
            for (int64_t j = 0; j < cols; ++j)
                wmax[size_t(j)] = std::max(wmax[size_t(j)], std::fabs(weights[k][r * cols + j]));
    std::vector<float> s(size_t(cols), 1.0f);
    if (rule == SmoothQuantRule::Reference) {
        // smooth_ln_fcs: weight_scales.clamp(min=1e-5); act^α / w^(1−α); clamp(min=1e-5)
        for (int64_t j = 0; j < cols; ++j) {
            const double x = xAbsMax[size_t(j)];
            const double w = std::max(double(wmax[size_t(j)]), 1e-5);
            s[size_t(j)] = float(std::max(std::pow(x, alpha) / std::pow(w, 1.0 - alpha), 1e-5));
        }
        return s;
    }
    if (alpha == 0) return s;
    for (int64_t j = 0; j < cols; ++j) {
        const double x = xAbsMax[size_t(j)], w = wmax[size_t(j)];
        if (x > 0 && w > 0) s[size_t(j)] = float(std::pow(x / w, alpha));
    }
    return s;
}

} // namespace lcw::compress
