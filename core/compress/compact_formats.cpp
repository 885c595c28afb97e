#include "core/compress/compact_formats.h"

#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/parallel.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace lcw::compress {

namespace {

constexpr int64_t kParallelMin = 1 << 15;

void putBitsAt(uint8_t* row, uint64_t bit, int bits, uint32_t u) {
    for (int b = 0; b < bits; ++b)
        if (u >> b & 1u) row[(bit + b) >> 3] |= uint8_t(1u << ((bit + b) & 7));
}

uint32_t getBitsAt(const uint8_t* row, uint64_t bit, int bits) {
    uint32_t u = 0;
    for (int b = 0; b < bits; ++b) u |= uint32_t(row[(bit + b) >> 3] >> ((bit + b) & 7) & 1u) << b;
    return u;
}

uint64_t rowBytes(int64_t cols, int bits) {
    return (uint64_t(cols) * uint64_t(bits) + 7) / 8;
}

int64_t groupLength(const WeightSettings& s, int64_t cols) {
    return s.granularity == Granularity::Group ? std::min<int64_t>(s.groupSize, cols) : cols;
}

/// Slim's code bits per row: T·g with T = round(avgBits·G) within [2G, 4G].
int64_t slimTotalGroupBits(double avgBits, int64_t groups) {
    const int64_t t = std::llround(avgBits * double(groups));
    return std::clamp<int64_t>(t, 2 * groups, 4 * groups);
}

[[noreturn]] void bad(const std::string& name, const std::string& what) {
    throw Error(name + ": " + what);
}

} // namespace

// ---------------------------------------------------------------- SqueezeLLM

KMeans1d weightedKMeans1d(const double* x, const double* wt, int64_t n, int k, int maxIter) {
    KMeans1d r;
    std::vector<double> wv(size_t(n), 1.0);
    double tot = 0;
    for (int64_t i = 0; i < n; ++i) tot += (wv[size_t(i)] = wt ? wt[i] : 1.0);
    if (!(tot > 0)) {
        std::fill(wv.begin(), wv.end(), 1.0);
        tot = double(n);
    }
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [x](int64_t a, int64_t b) { return x[a] < x[b]; });
    r.centroids.assign(size_t(k), n > 0 ? x[idx[size_t(n - 1)]] : 0.0);
    int ci = 0;
    double cum = 0;
    for (int64_t t = 0; t < n && ci < k; ++t) {
        cum += wv[size_t(idx[size_t(t)])];
        while (ci < k && cum >= (ci + 0.5) / k * tot) r.centroids[size_t(ci++)] = x[idx[size_t(t)]];
    }
    r.assign.assign(size_t(n), 0);
    std::vector<double> sw(static_cast<size_t>(k)), sx(static_cast<size_t>(k));
    for (int it = 0; it < maxIter; ++it) {
        bool changed = it == 0;
        for (int64_t i = 0; i < n; ++i) {
            uint32_t best = 0;
            for (int c = 1; c < k; ++c)
                if (std::fabs(x[i] - r.centroids[size_t(c)]) < std::fabs(x[i] - r.centroids[best]))
                    best = uint32_t(c);
            changed |= best != r.assign[size_t(i)];
            r.assign[size_t(i)] = best;
        }
        if (!changed) break;
        std::fill(sw.begin(), sw.end(), 0.0);
        std::fill(sx.begin(), sx.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
            sw[r.assign[size_t(i)]] += wv[size_t(i)];
            sx[r.assign[size_t(i)]] += wv[size_t(i)] * x[i];
        }
        for (int c = 0; c < k; ++c)
            if (sw[size_t(c)] > 0) r.centroids[size_t(c)] = sx[size_t(c)] / sw[size_t(c)];
        double obj = 0;
        for (int64_t i = 0; i < n; ++i) {
            const double d = x[i] - r.centroids[r.assign[size_t(i)]];
            obj += wv[size_t(i)] * d * d;
        }
        r.objective.push_back(obj);
    }
    // Ascending centroids, the assignment renumbered.
    std::vector<int> order(static_cast<size_t>(k));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&r](int a, int b) {
        return r.centroids[size_t(a)] < r.centroids[size_t(b)];
    });
    std::vector<uint32_t> rank(static_cast<size_t>(k));
    std::vector<double> sorted(static_cast<size_t>(k));
    for (int c = 0; c < k; ++c) {
        rank[size_t(order[size_t(c)])] = uint32_t(c);
        sorted[size_t(c)] = r.centroids[size_t(order[size_t(c)])];
    }
    r.centroids = sorted;
    for (auto& a : r.assign) a = rank[a];
    return r;
}

int64_t squeezeOutlierCount(int64_t rows, int64_t cols, double pct) {
    const int64_t n = rows * cols;
    return std::clamp<int64_t>(std::llround(pct / 100.0 * double(n)), 0, n);
}

namespace {

/// Row-major indices of the `count` largest |w| (ties: lower index), ascending.
std::vector<int64_t> largestMagnitudes(const float* w, int64_t n, int64_t count) {
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    auto before = [w](int64_t a, int64_t b) {
        const float fa = std::fabs(w[a]), fb = std::fabs(w[b]);
        return fa > fb || (fa == fb && a < b);
    };
    std::nth_element(idx.begin(), idx.begin() + count, idx.end(), before);
    idx.resize(size_t(count));
    std::sort(idx.begin(), idx.end());
    return idx;
}

/// One row's code book (f16) and codes: k-means, then each weight to its nearest f16 centroid.
void squeezeRow(const float* w, int64_t cols, int bits, const float* colWeight,
                const float* rowWeight, const std::vector<char>& isOutlier, uint16_t* book,
                uint8_t* codes) {
    const int k = 1 << bits;
    std::vector<double> x(static_cast<size_t>(cols)), wt(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) {
        x[size_t(j)] = w[j];
        wt[size_t(j)] = isOutlier[size_t(j)] ? 0.0
                        : rowWeight          ? double(rowWeight[j])
                        : colWeight          ? double(colWeight[j])
                                             : 1.0;
    }
    const KMeans1d km = weightedKMeans1d(x.data(), wt.data(), cols, k);
    std::vector<float> cb(static_cast<size_t>(k));
    for (int c = 0; c < k; ++c) {
        book[c] = f32ToF16(float(km.centroids[size_t(c)]));
        cb[size_t(c)] = f16ToF32(book[c]);
    }
    for (int64_t j = 0; j < cols; ++j) {
        uint32_t best = 0;
        for (int c = 1; c < k; ++c)
            if (std::fabs(w[j] - cb[size_t(c)]) < std::fabs(w[j] - cb[best])) best = uint32_t(c);
        putBitsAt(codes, uint64_t(j) * uint64_t(bits), bits, best);
    }
}

} // namespace

PackedTensor squeezeLlmQuantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                                const float* colWeight, const std::string& name,
                                const float* elemWeight) {
    if (s.bits < 2 || s.bits > 4) throw ArgumentError(name + ": squeezellm needs bits 2..4");
    if (colWeight)
        for (int64_t j = 0; j < cols; ++j)
            if (!(colWeight[j] >= 0) || !std::isfinite(colWeight[j]))
                throw ArgumentError(name + ": bad sensitivity weight at column " +
                                    std::to_string(j));
    if (elemWeight)
        for (int64_t i = 0; i < rows * cols; ++i)
            if (!(elemWeight[i] >= 0) || !std::isfinite(elemWeight[i]))
                throw ArgumentError(name + ": bad sensitivity weight at element " +
                                    std::to_string(i) + " (row " + std::to_string(i / cols) +
                                    ", column " + std::to_string(i % cols) + ")");
    PackedTensor p;
    p.settings = s;
    p.settings.granularity = Granularity::Channel;
    p.rows = rows;
    p.cols = cols;
    const int k = 1 << s.bits;
    const uint64_t rb = rowBytes(cols, s.bits);
    p.codes.assign(size_t(rb * uint64_t(rows)), 0);
    p.scales.assign(size_t(rows * k), 0);
    const int64_t nnz = squeezeOutlierCount(rows, cols, s.outliersPct);
    const std::vector<int64_t> outl = largestMagnitudes(w, rows * cols, nnz);
    std::vector<char> isOut(size_t(rows * cols), 0);
    for (int64_t i : outl) isOut[size_t(i)] = 1;
    ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 4) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        errors.run([&] {
            const std::vector<char> rowOut(isOut.begin() + r * cols,
                                           isOut.begin() + (r + 1) * cols);
            squeezeRow(w + r * cols, cols, s.bits, colWeight,
                       elemWeight ? elemWeight + r * cols : nullptr, rowOut,
                       p.scales.data() + r * k, p.codes.data() + uint64_t(r) * rb);
        });
    errors.rethrow();
    if (nnz > 0) {
        p.sparseRowPtr.assign(size_t(rows + 1), 0);
        for (int64_t i : outl) {
            ++p.sparseRowPtr[size_t(i / cols + 1)];
            p.sparseCols.push_back(int32_t(i % cols));
            p.sparseValues.push_back(f32ToF16(w[i]));
        }
        for (int64_t r = 0; r < rows; ++r)
            p.sparseRowPtr[size_t(r + 1)] += p.sparseRowPtr[size_t(r)];
    }
    return p;
}

// ---------------------------------------------------------------- DGQ

namespace {

struct DgqCodes {
    int bits = 4;
    bool asym = true;
    int umin() const { return asym ? 0 : 1; }
    int umax() const { return (1 << bits) - 1; }
    /// Code of x on scale sc with zero point z, and its value (exact in float for stored
    /// scales: an f16 times an 8-bit code times a small integer).
    int code(double x, double sc, int z) const {
        if (!(sc > 0)) return z;
        return std::clamp(int(std::nearbyint(x / sc)) + z, umin(), umax());
    }
    static double value(int u, double sc, int z) { return sc * double(u - z); }
};

/// Phase 1 of one group: the float scale and zero point of the best shrunk range.
std::pair<double, int> dgqGroupSearch(const float* w, const float* imp, int64_t n,
                                      const DgqCodes& q) {
    double lo = 0, hi = 0;
    for (int64_t j = 0; j < n; ++j)
        lo = std::min(lo, double(w[j])), hi = std::max(hi, double(w[j]));
    double best = std::numeric_limits<double>::infinity();
    std::pair<double, int> out{0.0, q.asym ? 0 : 1 << (q.bits - 1)};
    for (int a = 0; a <= 10; ++a) {
        const double alpha = 1.0 - 0.05 * a;
        double sc;
        int z;
        if (q.asym) {
            sc = alpha * (hi - lo) / q.umax();
            z = sc > 0 ? std::clamp(int(std::nearbyint(-alpha * lo / sc)), 0, q.umax()) : 0;
        } else {
            sc = alpha * std::max(-lo, hi) / ((1 << (q.bits - 1)) - 1);
            z = 1 << (q.bits - 1);
        }
        double err = 0;
        for (int64_t j = 0; j < n; ++j) {
            const double d = double(w[j]) - DgqCodes::value(q.code(w[j], sc, z), sc, z);
            err += (imp ? double(imp[j]) : 1.0) * d * d;
        }
        if (err < best) best = err, out = {sc, z};
    }
    return out;
}

/// The f16 channel scale of candidate b (β = 1 − 0.05·b), at least the smallest positive f16.
uint16_t dgqChannelScale(double smax, int b) {
    const uint16_t h = f32ToF16(float((1.0 - 0.05 * b) * smax / 255.0));
    return f16ToF32(h) > 0 ? h : uint16_t(1);
}

int dgqScaleCode(double sp, double s1) {
    return std::clamp(int(std::nearbyint(sp / s1)), 1, 255);
}

/// Phase 2 of one row: channel scale, scale codes and codes for the best β.
void dgqRow(const float* w, int64_t cols, int64_t gl, const float* imp, const DgqCodes& q,
            uint16_t& chan, uint8_t* gcodes, uint8_t* codes) {
    const int64_t gpr = (cols + gl - 1) / gl;
    const int per = q.asym ? 2 : 1;
    std::vector<double> sp(static_cast<size_t>(gpr));
    std::vector<int> zs(static_cast<size_t>(gpr));
    double smax = 0;
    for (int64_t g = 0; g < gpr; ++g) {
        const int64_t n = std::min(gl, cols - g * gl);
        const auto r = dgqGroupSearch(w + g * gl, imp ? imp + g * gl : nullptr, n, q);
        sp[size_t(g)] = r.first, zs[size_t(g)] = r.second, smax = std::max(smax, r.first);
    }
    double best = std::numeric_limits<double>::infinity();
    uint16_t bestH = 0;
    for (int b = 0; b <= 10; ++b) {
        const uint16_t h = dgqChannelScale(smax, b);
        const double s1 = f16ToF32(h);
        double err = 0;
        for (int64_t j = 0; j < cols; ++j) {
            const size_t g = size_t(j / gl);
            const double sc = s1 * dgqScaleCode(sp[g], s1);
            const double d = double(w[j]) - DgqCodes::value(q.code(w[j], sc, zs[g]), sc, zs[g]);
            err += (imp ? double(imp[j]) : 1.0) * d * d;
        }
        if (err < best) best = err, bestH = h;
    }
    chan = bestH;
    const double s1 = f16ToF32(bestH);
    for (int64_t g = 0; g < gpr; ++g) {
        gcodes[g * per] = uint8_t(dgqScaleCode(sp[size_t(g)], s1));
        if (q.asym) gcodes[g * per + 1] = uint8_t(zs[size_t(g)]);
    }
    for (int64_t j = 0; j < cols; ++j) {
        const int64_t g = j / gl;
        const double sc = s1 * gcodes[g * per];
        const int z = q.asym ? gcodes[g * per + 1] : 1 << (q.bits - 1);
        putBitsAt(codes, uint64_t(j) * uint64_t(q.bits), q.bits, uint32_t(q.code(w[j], sc, z)));
    }
}

} // namespace

PackedTensor dgqQuantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                         const float* imp, const std::string& name) {
    if (s.bits < 2 || s.bits > 8) throw ArgumentError(name + ": dgq needs bits 2..8");
    PackedTensor p;
    p.settings = s;
    p.rows = rows;
    p.cols = cols;
    const DgqCodes q{s.bits, !s.symmetric};
    const int64_t gl = groupLength(s, cols), gpr = (cols + gl - 1) / gl;
    const int per = q.asym ? 2 : 1;
    const uint64_t rb = rowBytes(cols, s.bits);
    p.codes.assign(size_t(rb * uint64_t(rows)), 0);
    p.scales.assign(size_t(rows), 0);
    p.groupCodes.assign(size_t(rows * gpr * per), 0);
    ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 4) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        errors.run([&] {
            dgqRow(w + r * cols, cols, gl, imp, q, p.scales[size_t(r)],
                   p.groupCodes.data() + r * gpr * per, p.codes.data() + uint64_t(r) * rb);
        });
    errors.rethrow();
    return p;
}

float dgqGroupScale(const PackedTensor& p, int64_t r, int64_t g) {
    const int64_t gpr = p.groupsPerRow();
    const int per = p.settings.symmetric ? 1 : 2;
    return f16ToF32(p.scales[size_t(r)]) * float(p.groupCodes[size_t((r * gpr + g) * per)]);
}

// ---------------------------------------------------------------- SliM-LLM

std::vector<double> slimGroupSalience(const float* w, int64_t rows, int64_t cols, int64_t group,
                                      const double* H, const float* diagImp) {
    std::vector<double> hinv(size_t(cols), 1.0);
    if (H) {
        Eigen::MatrixXd M = Eigen::Map<const Eigen::MatrixXd>(H, cols, cols);
        for (int64_t j = 0; j < cols; ++j)
            if (M(j, j) == 0) M(j, j) = 1; // dead input, as GPTQ
        const double damp = 0.01 * M.diagonal().mean();
        M.diagonal().array() += damp;
        const Eigen::MatrixXd inv =
            M.ldlt().solve(Eigen::MatrixXd::Identity(Eigen::Index(cols), Eigen::Index(cols)));
        for (int64_t j = 0; j < cols; ++j) hinv[size_t(j)] = inv(j, j);
    } else if (diagImp) {
        for (int64_t j = 0; j < cols; ++j)
            hinv[size_t(j)] = diagImp[j] > 0 ? 1.0 / double(diagImp[j]) : 1.0;
    }
    const int64_t groups = (cols + group - 1) / group;
    std::vector<double> sal(size_t(groups), 0.0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
            const double v = double(w[r * cols + j]);
            sal[size_t(j / group)] += v * v / (hinv[size_t(j)] * hinv[size_t(j)]);
        }
    return sal;
}

std::vector<uint8_t> slimAllocation(const std::vector<double>& salience, double avgBits,
                                    int64_t fours) {
    const int64_t G = int64_t(salience.size());
    const int64_t T = slimTotalGroupBits(avgBits, G);
    const int64_t n4 = fours, n3 = T - 2 * G - 2 * fours, n2 = G - n3 - n4;
    if (n4 < 0 || n3 < 0 || n2 < 0) return {};
    std::vector<int64_t> order(static_cast<size_t>(G));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&salience](int64_t a, int64_t b) {
        return salience[size_t(a)] > salience[size_t(b)];
    });
    std::vector<uint8_t> bits(size_t(G), 2);
    for (int64_t i = 0; i < n4 + n3; ++i) bits[size_t(order[size_t(i)])] = i < n4 ? 4 : 3;
    return bits;
}

namespace {

/// Output error of W − Ŵ: tr(ΔHΔᵀ), or Σ diagImp·Δ² (1 without diagImp).
double slimError(const Eigen::MatrixXd& D, const double* H, const float* diagImp) {
    const int64_t cols = D.cols();
    if (H) {
        const Eigen::Map<const Eigen::MatrixXd> Hm(H, cols, cols);
        return (D * Hm).cwiseProduct(D).sum();
    }
    double e = 0;
    for (int64_t j = 0; j < cols; ++j)
        e += (diagImp ? double(diagImp[j]) : 1.0) * D.col(j).squaredNorm();
    return e;
}

} // namespace

int64_t slimGroupLength(const WeightSettings& s, int64_t cols, const std::string& name) {
    const int64_t g = s.granularity == Granularity::Group ? s.groupSize : cols;
    if (g < 1 || cols % g != 0)
        throw ArgumentError(name + ": slim needs groups that divide the row (" +
                            std::to_string(cols) + " columns, groups of " + std::to_string(g) +
                            ")");
    return g;
}

std::vector<uint8_t> slimChooseAllocation(const float* w, int64_t rows, int64_t cols,
                                          const WeightSettings& s, const double* H,
                                          const float* diagImp, const std::string& name,
                                          std::vector<PackedTensor>* rtnOut) {
    const int64_t g = slimGroupLength(s, cols, name);
    const int64_t G = cols / g;
    const std::vector<double> sal = slimGroupSalience(w, rows, cols, g, H, diagImp);
    // RTN of every group at 2, 3 and 4 bits (lcw's asymmetric grid).
    std::vector<PackedTensor> rtn;
    std::vector<std::vector<float>> deq;
    for (int b = 2; b <= 4; ++b) {
        WeightSettings sb;
        sb.bits = b, sb.symmetric = false, sb.granularity = Granularity::Group, sb.groupSize = g;
        rtn.push_back(quantize(w, rows, cols, sb, name));
        deq.push_back(dequantize(rtn.back(), name));
    }
    const int64_t T = slimTotalGroupBits(s.avgBits, G);
    std::vector<uint8_t> best;
    double bestErr = std::numeric_limits<double>::infinity();
    Eigen::MatrixXd D(rows, cols);
    for (int64_t k = std::max<int64_t>(0, T - 3 * G); 2 * k <= T - 2 * G; ++k) {
        const std::vector<uint8_t> alloc = slimAllocation(sal, s.avgBits, k);
        if (alloc.empty()) continue;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j)
                D(r, j) = double(w[r * cols + j]) -
                          double(deq[size_t(alloc[size_t(j / g)] - 2)][size_t(r * cols + j)]);
        const double e = slimError(D, H, diagImp);
        if (e < bestErr) bestErr = e, best = alloc;
    }
    if (rtnOut) *rtnOut = std::move(rtn);
    return best;
}

PackedTensor slimPack(int64_t rows, int64_t cols, const WeightSettings& s,
                      const std::vector<uint8_t>& groupBits, const std::vector<uint32_t>& codes,
                      const std::vector<uint16_t>& scales, const std::vector<uint16_t>& zeros,
                      const std::string& name) {
    const int64_t g = slimGroupLength(s, cols, name);
    const int64_t G = cols / g;
    if (int64_t(groupBits.size()) != G || int64_t(codes.size()) != rows * cols ||
        int64_t(scales.size()) != rows * G || int64_t(zeros.size()) != rows * G)
        throw ArgumentError(name + ": slim: group widths, codes or grids do not fit the shape");
    int64_t T = 0;
    for (uint8_t b : groupBits) {
        if (b < 2 || b > 4) throw ArgumentError(name + ": slim group width outside 2..4 bits");
        T += b;
    }
    PackedTensor p;
    p.settings = s;
    p.settings.symmetric = false;
    p.settings.granularity = Granularity::Group;
    p.settings.groupSize = g;
    p.rows = rows;
    p.cols = cols;
    p.groupCodes = groupBits;
    const uint64_t rb = (uint64_t(T * g) + 7) / 8;
    p.codes.assign(size_t(rb * uint64_t(rows)), 0);
    p.scales = scales;
    p.zeros = zeros;
    for (int64_t r = 0; r < rows; ++r) {
        uint64_t bit = 0;
        for (int64_t j = 0; j < cols; ++j) {
            const int b = groupBits[size_t(j / g)];
            putBitsAt(p.codes.data() + uint64_t(r) * rb, bit, b,
                      codes[size_t(r * cols + j)] & ((1u << b) - 1));
            bit += uint64_t(b);
        }
    }
    return p;
}

PackedTensor slimQuantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                          const double* H, const float* diagImp, const std::string& name) {
    std::vector<PackedTensor> rtn;
    const std::vector<uint8_t> best =
        slimChooseAllocation(w, rows, cols, s, H, diagImp, name, &rtn);
    const int64_t g = slimGroupLength(s, cols, name), G = cols / g;
    // Each group takes the codes and grid of RTN at its width.
    std::vector<uint32_t> codes(size_t(rows * cols));
    std::vector<uint16_t> scales(size_t(rows * G)), zeros(size_t(rows * G));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t gi = 0; gi < G; ++gi) {
            const int b = best[size_t(gi)];
            const PackedTensor& src = rtn[size_t(b - 2)];
            const uint8_t* srow = src.codes.data() + uint64_t(r) * rowBytes(cols, b);
            for (int64_t j = gi * g; j < (gi + 1) * g; ++j)
                codes[size_t(r * cols + j)] = getBitsAt(srow, uint64_t(j) * uint64_t(b), b);
            scales[size_t(r * G + gi)] = src.scales[size_t(r * G + gi)];
            zeros[size_t(r * G + gi)] = src.zeros[size_t(r * G + gi)];
        }
    return slimPack(rows, cols, s, best, codes, scales, zeros, name);
}

// ---------------------------------------------------------------- shared

PackedTensor quantizeCompact(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                             const std::string& name, const float* importance) {
    switch (s.method) {
    case WeightMethod::SqueezeLlm:
        return squeezeLlmQuantize(w, rows, cols, s, importance, name);
    case WeightMethod::Dgq:
        return dgqQuantize(w, rows, cols, s, importance, name);
    case WeightMethod::Slim:
        return slimQuantize(w, rows, cols, s, nullptr, importance, name);
    default:
        throw ArgumentError(name + ": not a compact method");
    }
}

uint64_t compactStorageBits(int64_t rows, int64_t cols, const WeightSettings& s) {
    const uint64_t R = uint64_t(rows);
    if (s.method == WeightMethod::SqueezeLlm) {
        const uint64_t nnz = uint64_t(squeezeOutlierCount(rows, cols, s.outliersPct));
        return 8 * R * rowBytes(cols, s.bits) + 16 * R * (uint64_t(1) << s.bits) +
               (nnz > 0 ? 48 * nnz + 32 * (R + 1) : 0);
    }
    const int64_t gl = groupLength(s, cols), G = (cols + gl - 1) / gl;
    if (s.method == WeightMethod::Dgq)
        return 8 * R * rowBytes(cols, s.bits) + 16 * R +
               8 * R * uint64_t(G) * (s.symmetric ? 1 : 2);
    const int64_t T = slimTotalGroupBits(s.avgBits, G);
    return 8 * R * ((uint64_t(T * gl) + 7) / 8) + 32 * R * uint64_t(G) + 8 * uint64_t(G);
}

void checkCompact(const PackedTensor& p, const std::string& name) {
    const WeightSettings& s = p.settings;
    const int64_t rows = p.rows, cols = p.cols;
    if (!p.colOrder.empty()) bad(name, "compact formats have no column order");
    auto need = [&](size_t have, uint64_t want, const char* what) {
        if (have != want)
            bad(name, std::string(what) + " has " + std::to_string(have) + " entries, expected " +
                          std::to_string(want));
    };
    if (s.method == WeightMethod::SqueezeLlm) {
        if (s.bits < 2 || s.bits > 4) bad(name, "squeezellm bits out of range");
        need(p.codes.size(), rowBytes(cols, s.bits) * uint64_t(rows), "codes");
        need(p.scales.size(), uint64_t(rows) << s.bits, "code books");
        if (p.sparseRowPtr.empty()) {
            if (!p.sparseCols.empty() || !p.sparseValues.empty()) bad(name, "CSR without rows");
            return;
        }
        need(p.sparseRowPtr.size(), uint64_t(rows + 1), "CSR row pointers");
        need(p.sparseValues.size(), p.sparseCols.size(), "CSR values");
        if (p.sparseRowPtr[0] != 0 || size_t(p.sparseRowPtr.back()) != p.sparseCols.size())
            bad(name, "CSR row pointers do not span the values");
        for (int64_t r = 0; r < rows; ++r) {
            if (p.sparseRowPtr[size_t(r + 1)] < p.sparseRowPtr[size_t(r)])
                bad(name, "CSR row pointers decrease");
            for (int32_t k = p.sparseRowPtr[size_t(r)]; k < p.sparseRowPtr[size_t(r + 1)]; ++k)
                if (p.sparseCols[size_t(k)] < 0 || p.sparseCols[size_t(k)] >= cols ||
                    (k > p.sparseRowPtr[size_t(r)] &&
                     p.sparseCols[size_t(k)] <= p.sparseCols[size_t(k - 1)]))
                    bad(name, "CSR columns out of range or not ascending");
        }
        return;
    }
    if (!p.sparseRowPtr.empty() || !p.sparseCols.empty() || !p.sparseValues.empty())
        bad(name, "only squeezellm stores a sparse matrix");
    const int64_t gl = groupLength(s, cols), G = (cols + gl - 1) / gl;
    if (s.method == WeightMethod::Dgq) {
        if (s.bits < 2 || s.bits > 8) bad(name, "dgq bits out of range");
        const int per = s.symmetric ? 1 : 2;
        need(p.codes.size(), rowBytes(cols, s.bits) * uint64_t(rows), "codes");
        need(p.scales.size(), uint64_t(rows), "channel scales");
        need(p.groupCodes.size(), uint64_t(rows * G * per), "group codes");
        for (size_t i = 0; i < p.groupCodes.size(); ++i)
            if ((i % size_t(per) == 0 && p.groupCodes[i] == 0) ||
                (i % size_t(per) == 1 && p.groupCodes[i] >= (1u << s.bits)))
                bad(name, "dgq scale code 0 or zero point out of range");
        return;
    }
    if (s.method != WeightMethod::Slim) bad(name, "not a compact method");
    if (cols % gl != 0) bad(name, "slim groups do not divide the row");
    need(p.groupCodes.size(), uint64_t(G), "group bit widths");
    int64_t T = 0;
    for (uint8_t b : p.groupCodes) {
        if (b < 2 || b > 4) bad(name, "slim group bits outside 2..4");
        T += b;
    }
    need(p.codes.size(), (uint64_t(T * gl) + 7) / 8 * uint64_t(rows), "codes");
    need(p.scales.size(), uint64_t(rows * G), "scales");
    need(p.zeros.size(), uint64_t(rows * G), "zero points");
}

void dequantizeCompactRows(const PackedTensor& p, int64_t r0, int64_t n, float* dst) {
    const WeightSettings& s = p.settings;
    const int64_t cols = p.cols;
    const int64_t gl = groupLength(s, cols), G = (cols + gl - 1) / gl;
    const uint64_t rb = p.codes.size() / uint64_t(std::max<int64_t>(p.rows, 1));
    // omp: nothrow (decoding checked arrays)
#pragma omp parallel for schedule(static) if (n * cols >= kParallelMin)
    for (int64_t r = r0; r < r0 + n; ++r) {
        const uint8_t* row = p.codes.data() + uint64_t(r) * rb;
        float* o = dst + (r - r0) * cols;
        if (s.method == WeightMethod::SqueezeLlm) {
            const uint16_t* book = p.scales.data() + (r << s.bits);
            for (int64_t j = 0; j < cols; ++j)
                o[j] = f16ToF32(book[getBitsAt(row, uint64_t(j) * uint64_t(s.bits), s.bits)]);
            if (!p.sparseRowPtr.empty())
                for (int32_t k = p.sparseRowPtr[size_t(r)]; k < p.sparseRowPtr[size_t(r + 1)]; ++k)
                    o[p.sparseCols[size_t(k)]] = f16ToF32(p.sparseValues[size_t(k)]);
        } else if (s.method == WeightMethod::Dgq) {
            const int per = s.symmetric ? 1 : 2;
            const uint8_t* gc = p.groupCodes.data() + r * G * per;
            const float s1 = f16ToF32(p.scales[size_t(r)]);
            for (int64_t j = 0; j < cols; ++j) {
                const int64_t g = j / gl;
                const int z = s.symmetric ? 1 << (s.bits - 1) : gc[g * per + 1];
                const int u = int(getBitsAt(row, uint64_t(j) * uint64_t(s.bits), s.bits));
                o[j] = (s1 * float(gc[g * per])) * float(u - z);
            }
        } else {
            uint64_t bit = 0;
            for (int64_t g = 0; g < G; ++g) {
                const int b = p.groupCodes[size_t(g)];
                const float sc = f16ToF32(p.scales[size_t(r * G + g)]);
                const float z = f16ToF32(p.zeros[size_t(r * G + g)]);
                for (int64_t j = g * gl; j < (g + 1) * gl; ++j, bit += uint64_t(b))
                    o[j] = sc * (float(getBitsAt(row, bit, b)) - z);
            }
        }
    }
}

} // namespace lcw::compress
