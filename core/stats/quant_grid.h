#pragma once
/// \file
/// Reconstruction levels of the round-to-nearest quantizer the preview uses, so that the GUI can
/// draw the grid over a weight histogram without doing numerics itself.
#include <vector>

namespace lcw::stats {

/// Levels x̂ for `bits` over the range [lo, hi] (docs/stats-format.md, "Preview labels"):
/// symmetric s = max|x|/(2^(b−1)−1), x̂ = q·s for q in [−2^(b−1), 2^(b−1)−1]; asymmetric (range
/// widened to include 0) s = (hi−lo)/(2^b−1), z = rne(−lo/s), x̂ = (q−z)·s for q in [0, 2^b−1].
/// Empty when bits is outside 1..12, the range is empty or not finite.
std::vector<double> quantGridLevels(int bits, bool symmetric, double lo, double hi);

} // namespace lcw::stats
