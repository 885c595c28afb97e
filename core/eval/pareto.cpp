#include "core/eval/pareto.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>

namespace lcw {

std::vector<size_t> paretoFront(const std::vector<double>& x, const std::vector<double>& y) {
    if (x.size() != y.size())
        throw ArgumentError("paretoFront: " + std::to_string(x.size()) + " x values but " +
                            std::to_string(y.size()) + " y values");
    std::vector<size_t> idx;
    for (size_t i = 0; i < x.size(); ++i)
        if (std::isfinite(x[i]) && std::isfinite(y[i])) idx.push_back(i);
    std::sort(idx.begin(), idx.end(),
              [&](size_t a, size_t b) { return x[a] != x[b] ? x[a] < x[b] : y[a] < y[b]; });
    std::vector<size_t> front;
    double bestY = INFINITY, bestX = -INFINITY;
    for (size_t i : idx) {
        // Sorted by x then y: i is dominated unless its y beats every point at smaller x (or it
        // repeats the last front point exactly).
        if (y[i] < bestY || (y[i] == bestY && x[i] == bestX)) {
            front.push_back(i);
            bestY = y[i];
            bestX = x[i];
        }
    }
    return front;
}

} // namespace lcw
