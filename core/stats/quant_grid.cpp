#include "core/stats/quant_grid.h"

#include <algorithm>
#include <cmath>

namespace lcw::stats {

std::vector<double> quantGridLevels(int bits, bool symmetric, double lo, double hi) {
    std::vector<double> levels;
    if (bits < 1 || bits > 12 || !std::isfinite(lo) || !std::isfinite(hi) || hi < lo) return levels;
    if (symmetric) {
        const double amax = std::max(std::fabs(lo), std::fabs(hi));
        const int qmax = (1 << (bits - 1)) - 1;
        if (!(amax > 0) || qmax < 1) return levels;
        const double s = amax / qmax;
        for (int q = -(1 << (bits - 1)); q <= qmax; ++q) levels.push_back(q * s);
        return levels;
    }
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
    const int qmax = (1 << bits) - 1;
    if (!(hi > lo)) return levels;
    const double s = (hi - lo) / qmax;
    // nearbyint rounds half to even in the default rounding mode, as the preview does.
    const double z = std::nearbyint(-lo / s);
    for (int q = 0; q <= qmax; ++q) levels.push_back((q - z) * s);
    return levels;
}

} // namespace lcw::stats
