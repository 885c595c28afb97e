#pragma once
/// \file
/// Pareto front of configurations that trade size against error.
#include <cstddef>
#include <vector>

namespace lcw {

/// Indices of the points not dominated when both coordinates are minimised (smaller size, smaller
/// error), ordered by increasing x. A point is dominated when another is <= in both coordinates
/// and < in one. Equal points are all kept. Non-finite points are never on the front. Throws
/// ArgumentError when x and y differ in length.
std::vector<size_t> paretoFront(const std::vector<double>& x, const std::vector<double>& y);

} // namespace lcw
