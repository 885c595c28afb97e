#include "core/stats/tensor_stats.h"

#include "core/common/error.h"

#include <algorithm>
#include <cstdio>

namespace lcw::stats {

void Moments::merge(const Moments& b) {
    if (b.n == 0) return;
    if (n == 0) {
        *this = b;
        return;
    }
    const double na = n, nb = b.n, nn = na + nb;
    const double d = b.mean - mean, d2 = d * d;
    const double m2n = m2 + b.m2 + d2 * na * nb / nn;
    const double m3n =
        m3 + b.m3 + d2 * d * na * nb * (na - nb) / (nn * nn) + 3 * d * (na * b.m2 - nb * m2) / nn;
    const double m4n =
        m4 + b.m4 + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (nn * nn * nn) +
        6 * d2 * (na * na * b.m2 + nb * nb * m2) / (nn * nn) + 4 * d * (na * b.m3 - nb * m3) / nn;
    mean += d * nb / nn;
    n = nn;
    m2 = std::max(0.0, m2n);
    m3 = m3n;
    m4 = std::max(0.0, m4n);
}

Moments Moments::fromShiftedSums(double n, double shift, double s1, double s2, double s3,
                                 double s4) {
    Moments r;
    if (n <= 0) return r;
    const double mu = s1 / n, mu2 = mu * mu;
    r.n = n;
    r.mean = shift + mu;
    r.m2 = std::max(0.0, s2 - n * mu2);
    r.m3 = s3 - 3 * mu * s2 + 2 * n * mu2 * mu;
    r.m4 = std::max(0.0, s4 - 4 * mu * s3 + 6 * mu2 * s2 - 3 * n * mu2 * mu2);
    return r;
}

uint64_t AbsKeyHistogram::total() const {
    uint64_t t = 0;
    for (auto c : counts) t += c;
    return t;
}

uint64_t AbsKeyHistogram::countAtLeast(float t) const {
    uint64_t c = 0;
    for (uint32_t k = key(t); k < uint32_t(kBins); ++k) c += counts[k];
    return c;
}

double AbsKeyHistogram::approxQuantile(double q) const {
    const uint64_t n = total();
    if (n == 0) return 0;
    const double r = q * double(n - 1);
    // Value at integer rank via uniform spread inside the bin.
    auto at = [&](uint64_t rank) {
        uint64_t cum = 0;
        for (uint32_t k = 0; k < uint32_t(kBins); ++k) {
            const uint64_t c = counts[k];
            if (rank < cum + c) {
                const double lo = keyLow(k);
                const double hi = k + 1 < uint32_t(kBins) ? keyLow(k + 1) : lo;
                return lo + (hi - lo) * (double(rank - cum) + 0.5) / double(c);
            }
            cum += c;
        }
        return keyLow(uint32_t(kBins - 1));
    };
    const uint64_t lo = uint64_t(std::floor(r));
    const uint64_t hi = std::min<uint64_t>(lo + 1, n - 1);
    const double vlo = at(lo), vhi = hi == lo ? vlo : at(hi);
    return vlo + (vhi - vlo) * (r - double(lo));
}

std::pair<int, std::vector<int64_t>> AbsKeyHistogram::log2Counts() const {
    std::vector<int64_t> e(256, 0);
    for (int k = 0; k < kBins; ++k) e[size_t(k >> kMantBits)] += int64_t(counts[size_t(k)]);
    int first = 0, last = 255;
    while (first < 256 && e[size_t(first)] == 0) ++first;
    while (last >= first && e[size_t(last)] == 0) --last;
    if (first > last) return {0, {}};
    return {first, std::vector<int64_t>(e.begin() + first, e.begin() + last + 1)};
}

void AdaptiveHistogram::ensureRange(double absmax) {
    if (!(absmax > 0) || !std::isfinite(absmax)) return;
    if (range == 0) {
        // Smallest power of two ≥ absmax.
        range = std::exp2(std::ceil(std::log2(absmax)));
        if (range < absmax) range *= 2;
        return;
    }
    while (absmax > range) {
        // Double the range: old bins occupy the middle half, pairs merge.
        std::vector<int64_t> n(static_cast<size_t>(bins), 0);
        for (int i = 0; i < bins; ++i) n[size_t(bins / 4 + i / 2)] += counts[size_t(i)];
        counts.swap(n);
        range *= 2;
    }
}

void AdaptiveHistogram::merge(const AdaptiveHistogram& o) {
    if (o.bins != bins) throw Error("histogram merge: bin counts differ");
    if (o.range == 0) { // only zeros so far: they sit in the middle bin at any range
        for (int i = 0; i < bins; ++i) counts[size_t(i)] += o.counts[size_t(i)];
        return;
    }
    AdaptiveHistogram b = o;
    ensureRange(b.range);
    b.ensureRange(range);
    if (range == 0) range = b.range;
    for (int i = 0; i < bins; ++i) counts[size_t(i)] += b.counts[size_t(i)];
}

std::string PreviewConfig::label() const {
    std::string s = "w";
    s += std::to_string(bits);
    if (group < 0)
        s += 't';
    else if (group == 0)
        s += 'c';
    else {
        s += 'g';
        s += std::to_string(group);
    }
    s += symmetric ? 's' : 'a';
    return s;
}

const std::vector<double>& TensorStats::array(const std::string& k) const {
    auto it = arrays.find(k);
    if (it == arrays.end()) throw Error("statistics of '" + name + "' have no array '" + k + "'");
    return it->second;
}

std::string percentileKey(double pct) {
    char b[32];
    std::snprintf(b, sizeof b, "abs_p%g", pct);
    return b;
}

void putChannelArrays(TensorStats& t, const std::string& p, const std::vector<Moments>& m,
                      const std::vector<double>& mn, const std::vector<double>& mx) {
    const size_t c = m.size();
    std::vector<double> amin(c), amax(c), aabs(c), mean(c), sd(c), ku(c), sk(c), orat(c);
    for (size_t i = 0; i < c; ++i) {
        amin[i] = mn[i];
        amax[i] = mx[i];
        aabs[i] = std::max(std::fabs(mn[i]), std::fabs(mx[i]));
        mean[i] = m[i].mean;
        sd[i] = m[i].stddev();
        ku[i] = m[i].kurtosis();
        sk[i] = m[i].skewness();
        orat[i] = sd[i] > 0 ? aabs[i] / sd[i] : 0;
    }
    t.arrays[p + "_min"] = std::move(amin);
    t.arrays[p + "_max"] = std::move(amax);
    t.arrays[p + "_absmax"] = std::move(aabs);
    t.arrays[p + "_mean"] = std::move(mean);
    t.arrays[p + "_std"] = std::move(sd);
    t.arrays[p + "_kurtosis"] = std::move(ku);
    t.arrays[p + "_skewness"] = std::move(sk);
    t.arrays[p + "_outlier_ratio"] = std::move(orat);
}

void putTensorScalars(TensorStats& t, const Moments& m, double mn, double mx) {
    t.scalars["count"] = m.n;
    t.scalars["min"] = mn;
    t.scalars["max"] = mx;
    const double am = std::max(std::fabs(mn), std::fabs(mx));
    t.scalars["absmax"] = am;
    t.scalars["mean"] = m.mean;
    t.scalars["std"] = m.stddev();
    t.scalars["kurtosis"] = m.kurtosis();
    t.scalars["skewness"] = m.skewness();
    t.scalars["outlier_ratio"] = m.stddev() > 0 ? am / m.stddev() : 0;
}

RelativeOutliers relativeOutlierChannels(const std::vector<double>& channelAbsmax, double k) {
    RelativeOutliers r;
    r.k = k;
    std::vector<double> v;
    v.reserve(channelAbsmax.size());
    for (double a : channelAbsmax)
        if (std::isfinite(a)) v.push_back(a);
    if (v.empty()) return r;
    const size_t mid = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(mid), v.end());
    double med = v[mid];
    if (v.size() % 2 == 0)
        med = 0.5 * (med + *std::max_element(v.begin(), v.begin() + std::ptrdiff_t(mid)));
    r.median = med;
    r.threshold = k * med;
    for (size_t c = 0; c < channelAbsmax.size(); ++c) {
        const double a = channelAbsmax[c];
        if (std::isfinite(a) && a > 0 && a >= r.threshold) r.channels.push_back(int64_t(c));
    }
    return r;
}

} // namespace lcw::stats
