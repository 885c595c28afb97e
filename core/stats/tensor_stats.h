#pragma once
/// \file
/// Statistics of one tensor (a weight, an activation site, K or V of a layer) and the streaming
/// accumulators they are computed with.
///
/// Definitions (see docs/stats-format.md and METRICS.md): population moments, std = sqrt(M2/n),
/// skewness = sqrt(n)·M3/M2^1.5, kurtosis = n·M4/M2² (NOT excess: a Gaussian gives 3),
/// percentiles of |x| interpolate linearly between order statistics at rank q·(n−1) (numpy's
/// default), outlier ratio = absmax/std.
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace lcw::stats {

/// n, mean and central moment sums M2..M4 of a set of values; merges exactly (Chan et al. /
/// Pébay's pairwise formulas), so per-thread and per-block partial results combine stably.
struct Moments {
    double n = 0, mean = 0, m2 = 0, m3 = 0, m4 = 0;

    void merge(const Moments& b);
    /// From power sums S_p = Σ (x−shift)^p, p = 1..4, over n values.
    static Moments fromShiftedSums(double n, double shift, double s1, double s2, double s3,
                                   double s4);
    double variance() const { return n > 0 ? m2 / n : 0.0; }
    double stddev() const { return std::sqrt(variance()); }
    /// m4/σ⁴ (non-excess); 0 when the variance is 0.
    double kurtosis() const { return m2 > 0 ? n * m4 / (m2 * m2) : 0.0; }
    double skewness() const { return m2 > 0 ? std::sqrt(n) * m3 / std::pow(m2, 1.5) : 0.0; }
};

/// Histogram of |x| keyed by the top 15 bits of the float's bit pattern (8 exponent bits and
/// 7 mantissa bits): bins are log-spaced with relative width 2^-7 over the whole float range,
/// need no range up front, and are monotone in |x|. Gives percentiles (approximate to one bin,
/// or exact with a refinement pass), counts of |x| ≥ t for t on a bin edge (6.0 is one), and a
/// log2|x| histogram.
struct AbsKeyHistogram {
    static constexpr int kMantBits = 7;
    static constexpr int kShift = 23 - kMantBits;
    static constexpr int kBins = 1 << (31 - kShift); // 32768
    std::vector<uint64_t> counts = std::vector<uint64_t>(kBins, 0);

    static uint32_t key(float x) {
        uint32_t u;
        static_assert(sizeof(u) == sizeof(x));
        __builtin_memcpy(&u, &x, 4);
        return (u & 0x7fffffffu) >> kShift;
    }
    /// Smallest |x| with this key.
    static double keyLow(uint32_t k) {
        uint32_t u = k << kShift;
        float f;
        __builtin_memcpy(&f, &u, 4);
        return f;
    }
    void add(float x) { ++counts[key(x)]; }
    void merge(const AbsKeyHistogram& o) {
        for (int i = 0; i < kBins; ++i) counts[size_t(i)] += o.counts[size_t(i)];
    }
    uint64_t total() const;
    /// Number of values with |x| ≥ t (exact when t is a bin edge, e.g. 6.0; else counts the
    /// whole bin holding t).
    uint64_t countAtLeast(float t) const;
    /// Approximate percentile (q in [0,1]) of |x|: locates the ranks' bins and interpolates
    /// linearly inside them. Error below one bin (2^-7 relative).
    double approxQuantile(double q) const;
    /// Counts per power of two: index e holds |x| in [2^(e-150), 2^(e-149)) for the float
    /// exponent e (0 = zeros and subnormals); returns {first exponent, counts} trimmed to the
    /// non-empty range.
    std::pair<int, std::vector<int64_t>> log2Counts() const;
};

/// Linear histogram over a symmetric range [−R, R] that grows as values stream in: when a value
/// falls outside, R doubles and neighbouring bins merge pairwise, so no second pass is needed.
/// R is a power of two and the bin count is even, so the result equals binning every value
/// directly with the final range (bin = floor((x + R) / (2R / bins)), clamped).
struct AdaptiveHistogram {
    int bins = 256;
    double range = 0; ///< R; 0 until the first non-zero value
    std::vector<int64_t> counts;

    explicit AdaptiveHistogram(int nBins = 256) : bins(nBins), counts(size_t(nBins), 0) {}
    /// Grows R so that |x| ≤ absmax fits (call before add() for a batch).
    void ensureRange(double absmax);
    /// Bin of x at the current range (x must satisfy |x| ≤ R).
    int64_t binOf(float x) const {
        // R is a power of two and so is the bin width when bins is one: multiplying by the
        // inverse width is then exact; x ≥ −R after ensureRange(), so truncation is floor().
        if (!(range > 0)) return bins / 2;
        int64_t b = int64_t((double(x) + range) * (bins / (2 * range)));
        return b < 0 ? 0 : b >= bins ? bins - 1 : b;
    }
    void add(float x) { ++counts[size_t(binOf(x))]; }
    void merge(const AdaptiveHistogram& o);
};

/// Round-to-nearest quantization preview settings.
struct PreviewConfig {
    int bits = 4;
    /// > 0: groups of this many input elements along each row (the last group of a row may be
    /// shorter); 0: per output channel (row); −1: per tensor.
    int64_t group = 128;
    bool symmetric = false;
    std::string label() const; ///< "w4g128a", "w8c s" style key used in the store
};

/// Statistics of one tensor. Scalars and arrays are kept by name so that the store can write
/// and read them generically; the names are documented in docs/stats-format.md.
struct TensorStats {
    std::string name; ///< weight name ("layers.3.attn.q") or site ("layers.3.attn_in")
    std::string kind; ///< "weight", "activation", "residual", "k_pre_rope", "k", "v"
    int layer = -1;   ///< block index, −1 for embed, nLayers for lm_head
    std::vector<int64_t> shape;
    std::string dtype; ///< stored dtype (weights)
    std::map<std::string, double> scalars;
    std::map<std::string, std::vector<double>> arrays;
    std::map<std::string, std::vector<int64_t>> counts;

    double get(const std::string& k) const {
        auto it = scalars.find(k);
        return it == scalars.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
    }
    const std::vector<double>& array(const std::string& k) const;
};

/// The percentiles of |x| that are reported, in percent.
inline constexpr double kPercentiles[] = {0.1, 1, 50, 99, 99.9, 99.99};
/// Scalar key of a percentile: "abs_p0.1", "abs_p1", "abs_p50", "abs_p99", "abs_p99.9",
/// "abs_p99.99".
std::string percentileKey(double pct);

/// Per-channel arrays from per-channel moments and extrema; stores `<prefix>_min`, `_max`,
/// `_absmax`, `_mean`, `_std`, `_kurtosis`, `_skewness`, `_outlier_ratio`.
void putChannelArrays(TensorStats& t, const std::string& prefix, const std::vector<Moments>& m,
                      const std::vector<double>& mn, const std::vector<double>& mx);

/// Default k of relative weight outlier channels (see relativeOutlierChannels()).
inline constexpr double kDefaultOutlierK = 3.0;

/// Weight outlier channels judged relative to their tensor: channel c is an outlier when its
/// abs-max is at least k times the median channel abs-max of the tensor (for an even count the
/// mean of the two middle values), i.e. absmax[c] / median ≥ k, and not zero. Unlike
/// LLM.int8()'s absolute |x| ≥ 6 (kept for activations), this finds the channels that stand out
/// in weights, whose values are usually far below 6. Non-finite entries are left out of the
/// median and are never outliers.
struct RelativeOutliers {
    double k = kDefaultOutlierK;
    double median = 0;             ///< median channel abs-max (0 without finite entries)
    double threshold = 0;          ///< k · median
    std::vector<int64_t> channels; ///< the outlier channels, ascending
};
RelativeOutliers relativeOutlierChannels(const std::vector<double>& channelAbsmax,
                                         double k = kDefaultOutlierK);

/// Fills the tensor-level scalars min..outlier_ratio from merged moments and extrema.
void putTensorScalars(TensorStats& t, const Moments& m, double mn, double mx);

} // namespace lcw::stats
