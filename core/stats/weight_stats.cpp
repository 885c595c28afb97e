#include "core/stats/weight_stats.h"

#include "core/common/parallel.h"
#include "core/io/quants.h"
#include "core/model/model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace lcw::stats {

namespace {

/// Per-thread accumulators of pass 1.
struct Pass1 {
    std::vector<double> s1, s2, s3, s4, cmin, cmax; // per input channel, shifted by row 0
    AbsKeyHistogram keys;
    Moments total;
    double mn = INFINITY, mx = -INFINITY;
    std::vector<float> bufs[4];
};

/// Per-thread accumulators of pass 2.
struct Pass2 {
    int64_t gt3 = 0, gt6 = 0;
    std::vector<int64_t> hist;
    std::vector<std::vector<float>> cand; // values of the percentile bins, per target bin
    std::vector<double> err, sig;         // per preview
    std::vector<float> buf;
};

const float* rowData(const TensorView& t, int64_t r, std::vector<float>& buf) {
    if (t.dtype == DType::F32) return reinterpret_cast<const float*>(t.row(r));
    buf.resize(size_t(t.cols()));
    dequantizeRow(t.dtype, t.row(r), buf.data(), t.cols());
    return buf.data();
}

/// Round half to even for |v| < 2^51 (the default rounding mode), like std::nearbyint, but
/// inlined and vectorisable (nearbyint is a libm call without SSE4.1).
inline double rne(double v) {
    constexpr double kMagic = 6755399441055744.0; // 1.5 * 2^52
    return (v + kMagic) - kMagic;
}

// The hot loops, compiled for AVX2 and for the baseline ISA with the best picked at load time
// (four doubles per instruction instead of two). No FMA: results equal the baseline's.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LCW_KERNEL __attribute__((target_clones("avx2", "default"), noinline))
#else
#define LCW_KERNEL
#endif

struct RowSums {
    double r1, r2, r3, r4, mn, mx;
};

/// Power sums of x − x0 and extrema of one row.
LCW_KERNEL RowSums rowSums(const float* x, int64_t n, double x0) {
    double r1 = 0, r2 = 0, r3 = 0, r4 = 0, mn = INFINITY, mx = -INFINITY;
#pragma omp simd reduction(+ : r1, r2, r3, r4) reduction(min : mn) reduction(max : mx)
    for (int64_t j = 0; j < n; ++j) {
        const double v = x[j];
        const double d = v - x0, d2 = d * d;
        r1 += d;
        r2 += d2;
        r3 += d2 * d;
        r4 += d2 * d2;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    return {r1, r2, r3, r4, mn, mx};
}

struct ColAcc {
    double *s1, *s2, *s3, *s4, *mn, *mx;
    const float* shift;
};

/// Adds four rows to the per-column power sums (shifted) and extrema.
LCW_KERNEL void colAccum4(const float* xa, const float* xb, const float* xc, const float* xd,
                          int64_t n, ColAcc a) {
    double *s1 = a.s1, *s2 = a.s2, *s3 = a.s3, *s4 = a.s4, *cmn = a.mn, *cmx = a.mx;
    const float* sh = a.shift;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
        const double c = double(sh[j]);
        const double va = xa[j], vb = xb[j], vc = xc[j], vd = xd[j];
        const double da = va - c, db = vb - c, dc = vc - c, dd = vd - c;
        const double qa = da * da, qb = db * db, qc = dc * dc, qd = dd * dd;
        s1[j] += (da + db) + (dc + dd);
        s2[j] += (qa + qb) + (qc + qd);
        s3[j] += (qa * da + qb * db) + (qc * dc + qd * dd);
        s4[j] += (qa * qa + qb * qb) + (qc * qc + qd * qd);
        const double lab = va < vb ? va : vb, lcd = vc < vd ? vc : vd;
        const double hab = va > vb ? va : vb, hcd = vc > vd ? vc : vd;
        const double lo = lab < lcd ? lab : lcd, hi = hab > hcd ? hab : hcd;
        const double om = cmn[j], ox = cmx[j];
        cmn[j] = lo < om ? lo : om;
        cmx[j] = hi > ox ? hi : ox;
    }
}

LCW_KERNEL void colAccum1(const float* x, int64_t n, ColAcc a) {
    double *s1 = a.s1, *s2 = a.s2, *s3 = a.s3, *s4 = a.s4, *cmn = a.mn, *cmx = a.mx;
    const float* sh = a.shift;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
        const double v = x[j];
        const double c = v - double(sh[j]), c2 = c * c;
        s1[j] += c;
        s2[j] += c2;
        s3[j] += c2 * c;
        s4[j] += c2 * c2;
        const double om = cmn[j], ox = cmx[j];
        cmn[j] = v < om ? v : om;
        cmx[j] = v > ox ? v : ox;
    }
}

struct Exceed {
    int64_t g3, g6;
    double sq;
};
LCW_KERNEL Exceed exceedSq(const float* x, int64_t n, double th3, double th6) {
    int64_t g3 = 0, g6 = 0;
    double sq = 0;
#pragma omp simd reduction(+ : g3, g6, sq)
    for (int64_t j = 0; j < n; ++j) {
        const double v = std::fabs(double(x[j]));
        g3 += v > th3;
        g6 += v > th6;
        sq += v * v;
    }
    return {g3, g6, sq};
}

LCW_KERNEL void minMax(const float* x, int64_t n, double& loOut, double& hiOut) {
    double lo = INFINITY, hi = -INFINITY;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t j = 0; j < n; ++j) {
        const double v = x[j];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    loOut = lo;
    hiOut = hi;
}

LCW_KERNEL double rtnSym(const float* x, int64_t n, double s, double inv, double qmax) {
    double e = 0;
#pragma omp simd reduction(+ : e)
    for (int64_t j = 0; j < n; ++j) {
        double q = rne(double(x[j]) * inv);
        q = q < -qmax - 1 ? -qmax - 1 : q;
        q = q > qmax ? qmax : q;
        const double d = double(x[j]) - q * s;
        e += d * d;
    }
    return e;
}

LCW_KERNEL double rtnAsym(const float* x, int64_t n, double s, double inv, double z, double qmax) {
    double e = 0;
#pragma omp simd reduction(+ : e)
    for (int64_t j = 0; j < n; ++j) {
        double q = rne(double(x[j]) * inv) + z;
        q = q < 0.0 ? 0.0 : q;
        q = q > qmax ? qmax : q;
        const double d = double(x[j]) - (q - z) * s;
        e += d * d;
    }
    return e;
}

/// Adds Σ(x − x̂)² of round-to-nearest over x[0..n) with one scale from [lo, hi] to err.
/// Symmetric: s = max|x|/(2^(b−1)−1), q = clamp(rne(x/s), −2^(b−1), 2^(b−1)−1), x̂ = q·s.
/// Asymmetric: the range is widened to include 0, s = (hi−lo)/(2^b−1), z = rne(−lo/s),
/// q = clamp(rne(x/s)+z, 0, 2^b−1), x̂ = (q−z)·s. A zero scale (constant group) is exact.
inline void rtnError(const float* x, int64_t n, double lo, double hi, const PreviewConfig& c,
                     double& err) {
    if (c.symmetric) {
        const double am = std::max(std::fabs(lo), std::fabs(hi));
        const double qmax = std::exp2(c.bits - 1) - 1;
        const double s = am / qmax;
        if (s == 0) return; // all zeros: exact
        err += rtnSym(x, n, s, 1.0 / s, qmax);
    } else {
        lo = std::min(lo, 0.0);
        hi = std::max(hi, 0.0);
        const double qmax = std::exp2(c.bits) - 1;
        const double s = (hi - lo) / qmax;
        if (s == 0) return;
        const double inv = 1.0 / s;
        err += rtnAsym(x, n, s, inv, rne(-lo * inv), qmax);
    }
}

} // namespace

int layerOfName(const std::string& name, int nLayers) {
    if (name.rfind("layers.", 0) == 0) return std::atoi(name.c_str() + 7);
    if (name == "embed") return -1;
    if (name == "lm_head" || name == "final_norm") return nLayers;
    return -2;
}

namespace {

/// What both passes over a weight tensor share: its shape, the thread count and the per-row
/// results of pass 1 that pass 2 reads.
struct WeightScan {
    const TensorView& t;
    int64_t rows, cols;
    int nt;
    std::vector<Moments> rowM;
    std::vector<double> rowMin, rowMax;
    std::vector<float> shift; ///< row 0: the shift of the per-column sums
};

WeightScan startScan(const TensorView& t) {
    const int64_t rows = t.shape[0], cols = t.shape[1];
    // Small tensors run on one thread: a parallel region costs more than it saves there.
    const int64_t want = std::max<int64_t>(1, rows * cols / (1 << 18));
    const int nt = int(std::min<int64_t>({int64_t(omp_get_max_threads()), rows, want}));
    WeightScan w{t,
                 rows,
                 cols,
                 nt,
                 std::vector<Moments>(size_t(rows)),
                 std::vector<double>(size_t(rows)),
                 std::vector<double>(size_t(rows)),
                 std::vector<float>(size_t(cols))};
    std::vector<float> b;
    const float* x0 = rowData(t, 0, b);
    std::copy(x0, x0 + cols, w.shift.begin());
    return w;
}

/// Pass 1: moments (rows: shifted by the row's first value; columns: by row 0), extrema, |x|
/// key histogram; the threads' accumulators merged into one.
Pass1 momentsPass(WeightScan& w) {
    const int64_t rows = w.rows, cols = w.cols;
    std::vector<Pass1> p1(static_cast<size_t>(w.nt));
    ParallelErrors errors; // allocations, rows of types that cannot be read
#pragma omp parallel num_threads(w.nt)
    {
        Pass1& a = p1[size_t(omp_get_thread_num())];
        errors.run([&] {
            a.s1.assign(size_t(cols), 0);
            a.s2.assign(size_t(cols), 0);
            a.s3.assign(size_t(cols), 0);
            a.s4.assign(size_t(cols), 0);
            a.cmin.assign(size_t(cols), INFINITY);
            a.cmax.assign(size_t(cols), -INFINITY);
        });
        const ColAcc acc{a.s1.data(),   a.s2.data(),   a.s3.data(),   a.s4.data(),
                         a.cmin.data(), a.cmax.data(), w.shift.data()};
        uint64_t* kc = a.keys.counts.data();
        // Blocks of 4 rows: the per-column accumulators are loaded and stored once per block.
#pragma omp for schedule(static)
        for (int64_t rb = 0; rb < (rows + 3) / 4; ++rb)
            errors.run([&] {
                const int64_t r0 = rb * 4, nr = std::min<int64_t>(4, rows - r0);
                const float* xs[4];
                for (int64_t i = 0; i < nr; ++i) xs[i] = rowData(w.t, r0 + i, a.bufs[size_t(i)]);
                for (int64_t i = 0; i < nr; ++i) {
                    const float* x = xs[i];
                    const double x0 = x[0];
                    const RowSums rs = rowSums(x, cols, x0);
                    for (int64_t j = 0; j < cols; ++j) ++kc[AbsKeyHistogram::key(x[j])];
                    const int64_t r = r0 + i;
                    const Moments m =
                        Moments::fromShiftedSums(double(cols), x0, rs.r1, rs.r2, rs.r3, rs.r4);
                    w.rowM[size_t(r)] = m;
                    w.rowMin[size_t(r)] = rs.mn;
                    w.rowMax[size_t(r)] = rs.mx;
                    a.total.merge(m);
                    a.mn = std::min(a.mn, rs.mn);
                    a.mx = std::max(a.mx, rs.mx);
                }
                if (nr == 4)
                    colAccum4(xs[0], xs[1], xs[2], xs[3], cols, acc);
                else
                    for (int64_t i = 0; i < nr; ++i) colAccum1(xs[i], cols, acc);
            });
    }
    errors.rethrow();
    // Merge threads (static schedule: thread order = row order, deterministic).
    Pass1& A = p1[0];
    for (int i = 1; i < w.nt; ++i) {
        Pass1& b = p1[size_t(i)];
        for (int64_t j = 0; j < cols; ++j) {
            A.s1[size_t(j)] += b.s1[size_t(j)];
            A.s2[size_t(j)] += b.s2[size_t(j)];
            A.s3[size_t(j)] += b.s3[size_t(j)];
            A.s4[size_t(j)] += b.s4[size_t(j)];
            A.cmin[size_t(j)] = std::min(A.cmin[size_t(j)], b.cmin[size_t(j)]);
            A.cmax[size_t(j)] = std::max(A.cmax[size_t(j)], b.cmax[size_t(j)]);
        }
        A.keys.merge(b.keys);
        A.total.merge(b.total);
        A.mn = std::min(A.mn, b.mn);
        A.mx = std::max(A.mx, b.mx);
    }
    return std::move(A);
}

/// Tensor scalars, per-channel arrays, outlier counts (absolute and relative) and the log2
/// histogram of |x| from pass 1.
void putMoments(TensorStats& ts, const WeightScan& w, const Pass1& A) {
    std::vector<Moments> colM(static_cast<size_t>(w.cols));
    for (int64_t j = 0; j < w.cols; ++j)
        colM[size_t(j)] =
            Moments::fromShiftedSums(double(w.rows), w.shift[size_t(j)], A.s1[size_t(j)],
                                     A.s2[size_t(j)], A.s3[size_t(j)], A.s4[size_t(j)]);
    putTensorScalars(ts, A.total, A.mn, A.mx);
    putChannelArrays(ts, "out", w.rowM, w.rowMin, w.rowMax);
    putChannelArrays(ts, "in", colM, A.cmin, A.cmax);
    int64_t oi = 0, oo = 0;
    for (double v : ts.arrays["in_absmax"]) oi += v >= 6.0;
    for (double v : ts.arrays["out_absmax"]) oo += v >= 6.0;
    ts.scalars["outlier_in_channels_ge6"] = double(oi);
    ts.scalars["outlier_out_channels_ge6"] = double(oo);
    ts.scalars["count_abs_ge6"] = double(A.keys.countAtLeast(6.0f));
    // Outlier channels relative to the tensor (abs-max ≥ k × the median channel's).
    const RelativeOutliers ri = relativeOutlierChannels(ts.arrays["in_absmax"]);
    const RelativeOutliers ro = relativeOutlierChannels(ts.arrays["out_absmax"]);
    ts.scalars["outlier_rel_k"] = kDefaultOutlierK;
    ts.scalars["in_absmax_median"] = ri.median;
    ts.scalars["out_absmax_median"] = ro.median;
    ts.scalars["outlier_in_channels_rel"] = double(ri.channels.size());
    ts.scalars["outlier_out_channels_rel"] = double(ro.channels.size());
    auto [first, c] = A.keys.log2Counts();
    ts.scalars["abs_log2_hist_first_exp"] = first - 127;
    ts.counts["abs_log2_hist"] = std::move(c);
}

/// The |x| key bins holding the ranks floor(r) and floor(r)+1 of every percentile: pass 2
/// keeps the values of those bins only.
struct PercentileBins {
    struct Target {
        uint64_t rank;
        uint32_t key;
        uint64_t before; // values in lower bins
    };
    std::vector<Target> targets;
    std::vector<uint8_t> slot; ///< per key: 1 + index into keys, 0 when not kept
    std::vector<uint32_t> keys;
};

PercentileBins percentileBins(const AbsKeyHistogram& hist, uint64_t n) {
    PercentileBins pb;
    for (double pct : kPercentiles) {
        const double r = pct / 100.0 * double(n - 1);
        const uint64_t lo = uint64_t(std::floor(r));
        for (uint64_t rk : {lo, std::min(lo + 1, n - 1)}) {
            uint64_t cum = 0;
            for (uint32_t k = 0; k < uint32_t(AbsKeyHistogram::kBins); ++k) {
                if (rk < cum + hist.counts[k]) {
                    pb.targets.push_back({rk, k, cum});
                    break;
                }
                cum += hist.counts[k];
            }
        }
    }
    pb.slot.assign(size_t(AbsKeyHistogram::kBins), 0);
    for (auto& tg : pb.targets)
        if (!pb.slot[tg.key]) {
            pb.keys.push_back(tg.key);
            pb.slot[tg.key] = uint8_t(pb.keys.size());
        }
    return pb;
}

/// The linear histogram's range and the outlier thresholds of pass 2.
struct Pass2Setup {
    double hlo, hhi, invHw, th3, th6;
    int bins;
};

Pass2Setup pass2Setup(const Pass1& A, const WeightStatsOptions& opts) {
    const Moments& M = A.total;
    const double sigma = M.stddev();
    double hlo = A.mn, hhi = A.mx;
    if (opts.histSigma > 0) {
        hlo = std::max(A.mn, M.mean - opts.histSigma * sigma);
        hhi = std::min(A.mx, M.mean + opts.histSigma * sigma);
    }
    const int bins = std::max(1, opts.histBins);
    const double hw = hhi > hlo ? (hhi - hlo) / bins : 1.0;
    return {hlo, hhi, 1.0 / hw, 3 * sigma, 6 * sigma, bins};
}

/// Adds the round-to-nearest error of every preview configuration over row x to a.err / a.sig.
void previewRowErrors(const float* x, int64_t cols, double sq, double rowMin, double rowMax,
                      double tmin, double tmax, const WeightStatsOptions& opts, Pass2& a) {
    for (size_t p = 0; p < opts.previews.size(); ++p) {
        const PreviewConfig& c = opts.previews[p];
        a.sig[p] += sq;
        if (c.group < 0) {
            rtnError(x, cols, tmin, tmax, c, a.err[p]);
        } else if (c.group == 0) {
            rtnError(x, cols, rowMin, rowMax, c, a.err[p]);
        } else {
            for (int64_t g0 = 0; g0 < cols; g0 += c.group) {
                const int64_t gn = std::min(c.group, cols - g0);
                double lo, hi;
                minMax(x + g0, gn, lo, hi);
                rtnError(x + g0, gn, lo, hi, c, a.err[p]);
            }
        }
    }
}

/// Pass 2: outlier fractions, linear histogram, percentile candidates, previews; the threads'
/// accumulators merged into one.
Pass2 outliersPass(const WeightScan& w, const Pass1& A, const PercentileBins& pb,
                   const Pass2Setup& h, const WeightStatsOptions& opts) {
    const size_t np = opts.previews.size();
    std::vector<Pass2> p2(static_cast<size_t>(w.nt));
    ParallelErrors errors; // allocations, rows of types that cannot be read
#pragma omp parallel num_threads(w.nt)
    {
        Pass2& a = p2[size_t(omp_get_thread_num())];
        errors.run([&] {
            a.hist.assign(size_t(h.bins), 0);
            a.cand.resize(pb.keys.size());
            a.err.assign(np, 0);
            a.sig.assign(np, 0);
        });
        const uint8_t* sl = pb.slot.data();
#pragma omp for schedule(static)
        for (int64_t r = 0; r < w.rows; ++r)
            errors.run([&] {
                const float* x = rowData(w.t, r, a.buf);
                const Exceed ex = exceedSq(x, w.cols, h.th3, h.th6);
                a.gt3 += ex.g3;
                a.gt6 += ex.g6;
                for (int64_t j = 0; j < w.cols; ++j) {
                    int64_t b = int64_t((double(x[j]) - h.hlo) * h.invHw);
                    b = std::min<int64_t>(std::max<int64_t>(b, 0), h.bins - 1);
                    ++a.hist[size_t(b)];
                    if (const uint8_t s = sl[AbsKeyHistogram::key(x[j])])
                        a.cand[s - 1u].push_back(std::fabs(x[j]));
                }
                previewRowErrors(x, w.cols, ex.sq, w.rowMin[size_t(r)], w.rowMax[size_t(r)], A.mn,
                                 A.mx, opts, a);
            });
    }
    errors.rethrow();
    Pass2& B = p2[0];
    for (int i = 1; i < w.nt; ++i) {
        Pass2& b = p2[size_t(i)];
        B.gt3 += b.gt3;
        B.gt6 += b.gt6;
        for (int k = 0; k < h.bins; ++k) B.hist[size_t(k)] += b.hist[size_t(k)];
        for (size_t k = 0; k < pb.keys.size(); ++k)
            B.cand[k].insert(B.cand[k].end(), b.cand[k].begin(), b.cand[k].end());
        for (size_t p = 0; p < np; ++p) {
            B.err[p] += b.err[p];
            B.sig[p] += b.sig[p];
        }
    }
    return std::move(B);
}

/// Outlier fractions, the linear histogram, exact percentiles (order statistics inside the
/// narrow bins holding the wanted ranks) and the previews' errors from pass 2.
void putPass2(TensorStats& ts, Pass2& B, const PercentileBins& pb, const Pass2Setup& h, uint64_t n,
              const WeightStatsOptions& opts) {
    ts.scalars["frac_gt_3sigma"] = double(B.gt3) / double(n);
    ts.scalars["frac_gt_6sigma"] = double(B.gt6) / double(n);
    ts.counts["hist"] = std::move(B.hist);
    ts.scalars["hist_lo"] = h.hlo;
    ts.scalars["hist_hi"] = h.hhi;
    auto valueAt = [&](uint64_t rank) -> double {
        for (auto& tg : pb.targets)
            if (tg.rank == rank) {
                auto& c = B.cand[size_t(pb.slot[tg.key] - 1)];
                const auto it = c.begin() + std::ptrdiff_t(rank - tg.before);
                std::nth_element(c.begin(), it, c.end());
                return *it;
            }
        return 0;
    };
    for (double pct : kPercentiles) {
        const double r = pct / 100.0 * double(n - 1);
        const uint64_t lo = uint64_t(std::floor(r));
        const uint64_t hi = std::min(lo + 1, n - 1);
        const double a = valueAt(lo), b = valueAt(hi);
        ts.scalars[percentileKey(pct)] = a + (b - a) * (r - double(lo));
    }
    for (size_t p = 0; p < opts.previews.size(); ++p) {
        const std::string k = "preview." + opts.previews[p].label() + ".";
        const double e = B.err[p], s = B.sig[p];
        ts.scalars[k + "mse"] = e / double(n);
        ts.scalars[k + "sqnr_db"] = e > 0 ? 10 * std::log10(s / e) : INFINITY;
        ts.scalars[k + "rel_fro"] = s > 0 ? std::sqrt(e / s) : 0;
    }
}

} // namespace

TensorStats computeTensorStats(const TensorView& t, const WeightStatsOptions& opts) {
    if (t.shape.size() != 2) throw ArgumentError("tensor '" + t.name + "' is not 2-D");
    TensorStats ts;
    ts.name = t.name;
    ts.kind = "weight";
    ts.shape = t.shape;
    ts.dtype = std::string(dtypeName(t.dtype));
    if (t.shape[0] == 0 || t.shape[1] == 0) return ts;

    WeightScan w = startScan(t);
    const Pass1 A = momentsPass(w);
    putMoments(ts, w, A);
    const uint64_t n = uint64_t(w.rows) * uint64_t(w.cols);
    const PercentileBins pb = percentileBins(A.keys, n);
    const Pass2Setup h = pass2Setup(A, opts);
    Pass2 B = outliersPass(w, A, pb, h, opts);
    putPass2(ts, B, pb, h, n, opts);
    return ts;
}

Status computeWeightStats(const Model& model, const WeightStatsOptions& opts,
                          std::vector<TensorStats>& out, Progress& progress) {
    std::vector<const TensorView*> sel;
    uint64_t total = 0;
    for (const TensorView& t : model.tensors()) {
        const bool ok = opts.filter ? opts.filter(t) : t.shape.size() == 2;
        if (!ok || t.shape.size() != 2) continue;
        sel.push_back(&t);
        total += t.nbytes;
    }
    const int nLayers = int(model.spec().nLayers);
    uint64_t done = 0;
    for (size_t i = 0; i < sel.size(); ++i) {
        const TensorView& t = *sel[i];
        if (!progress.report(total ? double(done) / double(total) : 0,
                             "weights: " + t.name + " (" + std::to_string(i + 1) + "/" +
                                 std::to_string(sel.size()) + ")"))
            return Status::Cancelled;
        TensorStats s = computeTensorStats(t, opts);
        s.layer = layerOfName(t.name, nLayers);
        out.push_back(std::move(s));
        done += t.nbytes;
    }
    progress.report(1.0, "weights done");
    return Status::Ok;
}

} // namespace lcw::stats
