#pragma once
// A double-precision port of IST-DASLab/gptq's gptq.py GPTQ.fasterquant with quant.py's Quantizer
// (perchannel, no mse), written for the tests without calling lcw's GPTQ (test_gptq_reference,
// test_dgq_slim). The one convention taken from lcw: a scale is stored as the smallest f16 >= the
// fp32 scale and the zero point is computed from that stored scale.
#include "core/common/dtype.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace gptqref {

using lcw::f16ToF32;
using lcw::f32ToF16;
using MatD = Eigen::MatrixXd;

/// Test inputs: n weights ~ N(0, 0.05²).
inline std::vector<float> randomWeights(int64_t n, unsigned seed) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    std::vector<float> w(static_cast<size_t>(n));
    for (auto& v : w) v = nd(g);
    return w;
}

/// Test inputs: a Gram XᵀX of random inputs with a few loud channels (cols x cols).
inline std::vector<double> randomGram(int64_t cols, unsigned seed) {
    std::mt19937 g(seed);
    std::normal_distribution<double> nd(0, 1);
    MatD X(4 * cols, cols);
    for (int64_t i = 0; i < X.rows(); ++i)
        for (int64_t j = 0; j < cols; ++j) X(i, j) = nd(g) * (j % 7 == 3 ? 6.0 : 1.0);
    const MatD H = X.transpose() * X;
    return std::vector<double>(H.data(), H.data() + H.size());
}

/// One element's result: code, stored scale (f16 bits), zero point and group index.
struct RefOut {
    std::vector<uint32_t> code;  ///< [rows, cols], original column order
    std::vector<uint16_t> scale; ///< per element: its group's stored scale
    std::vector<float> zero;     ///< per element: its group's zero point
    std::vector<int32_t> gidx;   ///< per column: its group (g_idx)
};

/// quant.py Quantizer.find_params(x, weight=True), perchannel, for one row's values; the scale
/// rounded up to f16 as lcw stores it, the zero point from the stored scale. clipRatio: Atom's
/// variant of the Quantizer (efeslab/Atom model/gptq.py): scale = (xmax − xmin) · clip_ratio /
/// maxq, the zero point from that scale (not clamped).
struct RefParams {
    uint16_t scaleBits = 0;
    float scale = 0, zero = 0, maxq = 0;
};
inline RefParams findParams(const double* x, int64_t n, int64_t stride, int bits, bool sym,
                            double clipRatio = 1.0) {
    const float maxq = float((1 << bits) - 1);
    float xmin = 0, xmax = 0; // torch.minimum(x.min(), 0), torch.maximum(x.max(), 0)
    for (int64_t i = 0; i < n; ++i) {
        xmin = std::min(xmin, float(x[i * stride]));
        xmax = std::max(xmax, float(x[i * stride]));
    }
    if (sym) {
        xmax = std::max(std::fabs(xmin), xmax);
        if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
    const float exact = (xmax - xmin) * float(clipRatio) / maxq;
    RefParams p;
    p.scaleBits = f32ToF16(exact);
    if (f16ToF32(p.scaleBits) < exact) ++p.scaleBits;
    p.scale = f16ToF32(p.scaleBits);
    p.zero = sym ? (maxq + 1) / 2 : std::nearbyint(-xmin / p.scale);
    p.maxq = maxq;
    return p;
}

/// SliM-LLM's SQC (mixed_quantizer.py Quantizer.fit, asymmetric) for row r of the group of
/// columns [c0, c0 + n) of W: sensitivities W² / d² (d: diag of H⁻¹'s upper Cholesky factor)
/// over the whole group, salient = at least the smallest one with |z| > 2 (unbiased std), then
/// the scale factor p ∈ {1, 1 + 0.002 k, 1 − 0.002 k} minimising Σ |ŵ − w|^2.4 with the salient
/// errors × lambda; each candidate's params as findParams (lcw's stored-scale convention).
inline RefParams sqcParams(const MatD& W, int64_t r, int64_t c0, int64_t n, const MatD& Hinv,
                           int bits, double lambda) {
    const int64_t rows = W.rows();
    std::vector<double> sens;
    for (int64_t c = c0; c < c0 + n; ++c)
        for (int64_t i = 0; i < rows; ++i)
            sens.push_back(W(i, c) * W(i, c) / (Hinv(c, c) * Hinv(c, c)));
    double mean = 0, var = 0;
    for (double v : sens) mean += v;
    mean /= double(sens.size());
    for (double v : sens) var += (v - mean) * (v - mean);
    const double sd = std::sqrt(var / double(sens.size() - 1));
    double minOutlier = INFINITY;
    for (double v : sens)
        if (sd > 0 && std::fabs(v - mean) / sd > 2) minOutlier = std::min(minOutlier, v);
    std::vector<double> row(static_cast<size_t>(n));
    for (int64_t c = 0; c < n; ++c) row[size_t(c)] = W(r, c0 + c);
    // The candidates in the reference's order: 1, linspace(1, 1.1, 51)[1:], linspace(1, 0.9,
    // 51)[1:].
    std::vector<float> ps{1.0f};
    for (int k = 1; k <= 50; ++k) ps.push_back(float(1.0 + 0.002 * k));
    for (int k = 1; k <= 50; ++k) ps.push_back(float(1.0 - 0.002 * k));
    float xmin = 0, xmax = 0;
    for (double v : row) xmin = std::min(xmin, float(v)), xmax = std::max(xmax, float(v));
    RefParams best;
    double bestErr = INFINITY;
    for (float p : ps) {
        const double scaled[2] = {double(p * xmin), double(p * xmax)};
        const RefParams q = findParams(scaled, 2, 1, bits, false);
        double err = 0;
        for (int64_t c = 0; c < n; ++c) {
            const float x = float(row[size_t(c)]);
            const float code = std::clamp(std::nearbyint(x / q.scale) + q.zero, 0.0f, q.maxq);
            const double e =
                std::pow(std::fabs(double(q.scale * (code - q.zero)) - double(x)), 2.4);
            const double s =
                W(r, c0 + c) * W(r, c0 + c) / (Hinv(c0 + c, c0 + c) * Hinv(c0 + c, c0 + c));
            err += s >= minOutlier ? lambda * e : e;
        }
        if (err < bestErr) bestErr = err, best = q;
    }
    return best;
}

/// gptq.py GPTQ.fasterquant in double. groupsize -1: per channel (params of the initial W, before
/// dead columns are zeroed, as the reference's first find_params). groupBits (SliM-LLM's mixed
/// widths, without act order): group i's params at groupBits[i] bits instead of `bits`. keep
/// (efeslab/Atom's gptq.py, n_out outlier columns at the end, without act order): only the first
/// cols - keep columns are quantised and give the params; the last `keep` columns receive the
/// lazy updates and their final values are returned in *kept (their codes stay 0). clipRatio:
/// Atom's w_clip_ratio in every find_params.
inline RefOut fasterquant(const std::vector<float>& w, int64_t rows, int64_t cols, MatD H, int bits,
                          bool sym, int64_t blocksize, double percdamp, int64_t groupsize,
                          bool actorder, bool staticGroups, const std::vector<int>& groupBits = {},
                          int64_t keep = 0, MatD* kept = nullptr, double sqcLambda = -1,
                          double clipRatio = 1.0) {
    const int64_t n = cols - keep; // Atom's n_nonout
    auto bitsOf = [&](int64_t g) { return groupBits.empty() ? bits : groupBits[size_t(g)]; };
    MatD W(rows, cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) W(r, j) = w[size_t(r * cols + j)];
    // self.quantizer.find_params(W) when not ready: per-channel params of the initial W.
    std::vector<RefParams> cur(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
        cur[size_t(r)] = findParams(&W(r, 0), n, rows, bits, sym, clipRatio);
    for (int64_t j = 0; j < cols; ++j)
        if (H(j, j) == 0) H(j, j) = 1, W.col(j).setZero();
    std::vector<std::vector<RefParams>> groups; // static_groups: [group][row]
    if (staticGroups && groupsize > 0)
        for (int64_t i = 0; i < n; i += groupsize) {
            std::vector<RefParams> g(static_cast<size_t>(rows));
            for (int64_t r = 0; r < rows; ++r)
                g[size_t(r)] = findParams(&W(r, i), std::min(groupsize, n - i), rows,
                                          bitsOf(i / groupsize), sym, clipRatio);
            groups.push_back(g);
        }
    std::vector<int64_t> perm(static_cast<size_t>(cols));
    std::iota(perm.begin(), perm.end(), 0);
    if (actorder) {
        std::stable_sort(perm.begin(), perm.end(),
                         [&](int64_t a, int64_t b) { return H(a, a) > H(b, b); });
        MatD W2(rows, cols), H2(cols, cols);
        for (int64_t p = 0; p < cols; ++p) W2.col(p) = W.col(perm[size_t(p)]);
        for (int64_t a = 0; a < cols; ++a)
            for (int64_t b = 0; b < cols; ++b) H2(a, b) = H(perm[size_t(a)], perm[size_t(b)]);
        W = W2, H = H2;
    }
    const double damp = percdamp * H.diagonal().mean();
    H.diagonal().array() += damp;
    // H = cholesky(H); H = cholesky_inverse(H); H = cholesky(H, upper=True)
    const Eigen::LLT<MatD> l1(H);
    const MatD Hi = l1.solve(MatD::Identity(cols, cols));
    const Eigen::LLT<MatD> l2(Hi);
    const MatD Hinv = l2.matrixU();

    RefOut out;
    out.code.assign(size_t(rows * cols), 0);
    out.scale.assign(size_t(rows * cols), 0);
    out.zero.assign(size_t(rows * cols), 0);
    out.gidx.assign(size_t(cols), 0);
    for (int64_t i1 = 0; i1 < n; i1 += blocksize) {
        const int64_t i2 = std::min(i1 + blocksize, n), count = i2 - i1;
        MatD W1 = W.middleCols(i1, count);
        MatD Err1 = MatD::Zero(rows, count);
        const MatD Hinv1 = Hinv.block(i1, i1, count, count);
        for (int64_t i = 0; i < count; ++i) {
            const double d = Hinv1(i, i);
            if (groupsize != -1) {
                if (!staticGroups) {
                    if ((i1 + i) % groupsize == 0)
                        for (int64_t r = 0; r < rows; ++r)
                            cur[size_t(r)] =
                                sqcLambda >= 0 // SliM-LLM's SQC (asymmetric)
                                    ? sqcParams(W, r, i1 + i, std::min(groupsize, n - (i1 + i)),
                                                Hinv, bitsOf((i1 + i) / groupsize), sqcLambda)
                                    : findParams(&W(r, i1 + i), std::min(groupsize, n - (i1 + i)),
                                                 rows, bitsOf((i1 + i) / groupsize), sym,
                                                 clipRatio);
                } else {
                    int64_t idx = i1 + i;
                    if (actorder) idx = perm[size_t(idx)];
                    cur = groups[size_t(idx / groupsize)];
                }
            }
            const int64_t j = perm[size_t(i1 + i)]; // original column
            out.gidx[size_t(j)] = groupsize == -1 ? 0
                                  : staticGroups  ? int32_t(j / groupsize)
                                                  : int32_t((i1 + i) / groupsize);
            for (int64_t r = 0; r < rows; ++r) {
                const RefParams& p = cur[size_t(r)];
                const double x = W1(r, i);
                const float q =
                    std::clamp(std::nearbyint(float(x) / p.scale) + p.zero, 0.0f, p.maxq);
                const double qv = double(p.scale * (q - p.zero));
                out.code[size_t(r * cols + j)] = uint32_t(q);
                out.scale[size_t(r * cols + j)] = p.scaleBits;
                out.zero[size_t(r * cols + j)] = p.zero;
                const double err1 = (x - qv) / d;
                for (int64_t c = i; c < count; ++c) W1(r, c) -= err1 * Hinv1(i, c);
                Err1(r, i) = err1;
            }
        }
        if (i2 < cols) W.rightCols(cols - i2) -= Err1 * Hinv.block(i1, i2, count, cols - i2);
    }
    if (kept) *kept = W.rightCols(keep);
    return out;
}

} // namespace gptqref
