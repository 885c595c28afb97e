#include "core/compress/sparsity.h"

#include "core/common/error.h"
#include "core/common/parallel.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lcw::compress {

namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Inputs kept in a group of k consecutive inputs under N:M (k = M for full groups).
int64_t nmKeep(int64_t k, int n, int m) {
    return (k * n + m - 1) / m;
}

/// Sets mask[idx[i]] = 0 for the `count` lowest scores among idx (ties: the higher index goes).
void pruneLowest(const float* score, std::vector<int64_t>& idx, int64_t count, uint8_t* mask) {
    if (count <= 0) return;
    count = std::min<int64_t>(count, int64_t(idx.size()));
    auto less = [&](int64_t a, int64_t b) {
        return score[a] < score[b] || (score[a] == score[b] && a > b);
    };
    std::nth_element(idx.begin(), idx.begin() + (count - 1), idx.end(), less);
    for (int64_t i = 0; i < count; ++i) mask[idx[size_t(i)]] = 0;
}

int64_t roundCount(double x) {
    return int64_t(std::llround(x));
}

/// Prunes the N:M groups starting at columns [c0, c1) (c0 a multiple of m) of every row.
void maskNM(const float* score, int64_t rows, int64_t cols, int64_t c0, int64_t c1, int n, int m,
            uint8_t* mask) {
    std::vector<int64_t> idx;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = c0; g < c1; g += m) {
            const int64_t k = std::min<int64_t>(m, cols - g);
            idx.resize(size_t(k));
            for (int64_t j = 0; j < k; ++j) idx[size_t(j)] = r * cols + g + j;
            pruneLowest(score, idx, k - nmKeep(k, n, m), mask);
        }
}

void checkSettings(const SparsitySettings& s, const std::string& name) {
    if (s.pattern == SparsityPattern::NM) {
        if (s.m < 2 || s.n < 1 || s.n >= s.m)
            throw ArgumentError(name + ": N:M sparsity needs 1 <= N < M, got " +
                                std::to_string(s.n) + ":" + std::to_string(s.m));
    } else if (!(s.ratio >= 0.0 && s.ratio < 1.0)) {
        throw ArgumentError(name + ": sparsity ratio must be in [0, 1), got " +
                            std::to_string(s.ratio));
    }
}

} // namespace

const char* sparsityMethodName(SparsityMethod m) {
    switch (m) {
    case SparsityMethod::Magnitude:
        return "magnitude";
    case SparsityMethod::Wanda:
        return "wanda";
    case SparsityMethod::SparseGpt:
        return "sparsegpt";
    }
    return "?";
}

const char* sparsityPatternName(SparsityPattern p) {
    switch (p) {
    case SparsityPattern::Unstructured:
        return "unstructured";
    case SparsityPattern::PerRow:
        return "per_row";
    case SparsityPattern::NM:
        return "n:m";
    }
    return "?";
}

const char* sparsityCountName(SparsityCount c) {
    return c == SparsityCount::Reference ? "reference" : "exact";
}

std::string SparsitySettings::describe() const {
    std::string s;
    if (pattern == SparsityPattern::NM) {
        s = std::to_string(n) + ":" + std::to_string(m);
    } else {
        char b[32];
        std::snprintf(b, sizeof b, "%g%% ", ratio * 100.0);
        s = b;
        s += pattern == SparsityPattern::PerRow ? "per-row" : "unstructured";
    }
    s += std::string(" ") + sparsityMethodName(method);
    if (method == SparsityMethod::SparseGpt && pattern != SparsityPattern::NM &&
        count == SparsityCount::Exact)
        s += " (exact count)";
    return s;
}

namespace {

/// int(n · ratio) as Python computes it (a double product, truncated).
int64_t referenceIndex(int64_t n, double ratio) {
    return int64_t(double(n) * ratio);
}

/// Whether pruneSparseGpt uses the reference per-block threshold.
bool referenceCount(const SparsitySettings& s) {
    return s.method == SparsityMethod::SparseGpt && s.count == SparsityCount::Reference &&
           s.pattern != SparsityPattern::NM;
}

} // namespace

int64_t prunedCount(int64_t rows, int64_t cols, const SparsitySettings& s) {
    if (referenceCount(s)) {
        const int64_t bs = std::max<int64_t>(1, s.blockSize);
        int64_t total = 0;
        for (int64_t i1 = 0; i1 < cols; i1 += bs) {
            const int64_t bw = std::min(cols, i1 + bs) - i1;
            total += s.pattern == SparsityPattern::PerRow ? rows * (referenceIndex(bw, s.ratio) + 1)
                                                          : referenceIndex(rows * bw, s.ratio) + 1;
        }
        return total;
    }
    switch (s.pattern) {
    case SparsityPattern::Unstructured:
        return roundCount(s.ratio * double(rows * cols));
    case SparsityPattern::PerRow:
        return rows * roundCount(s.ratio * double(cols));
    case SparsityPattern::NM: {
        int64_t perRow = 0;
        for (int64_t g = 0; g < cols; g += s.m) {
            const int64_t k = std::min<int64_t>(s.m, cols - g);
            perRow += k - nmKeep(k, s.n, s.m);
        }
        return rows * perRow;
    }
    }
    return 0;
}

std::vector<uint8_t> selectMask(const float* score, int64_t rows, int64_t cols,
                                SparsityPattern pattern, double ratio, int n, int m) {
    std::vector<uint8_t> mask(size_t(rows * cols), 1);
    std::vector<int64_t> idx;
    switch (pattern) {
    case SparsityPattern::Unstructured:
        idx.resize(size_t(rows * cols));
        std::iota(idx.begin(), idx.end(), int64_t(0));
        pruneLowest(score, idx, roundCount(ratio * double(rows * cols)), mask.data());
        break;
    case SparsityPattern::PerRow: {
        const int64_t k = roundCount(ratio * double(cols));
        ParallelErrors errors;
#pragma omp parallel for schedule(static) private(idx) if (rows * cols >= (1 << 16))
        for (int64_t r = 0; r < rows; ++r)
            errors.run([&] {
                idx.resize(size_t(cols));
                std::iota(idx.begin(), idx.end(), r * cols);
                pruneLowest(score, idx, k, mask.data());
            });
        errors.rethrow();
        break;
    }
    case SparsityPattern::NM:
        maskNM(score, rows, cols, 0, cols, n, m, mask.data());
        break;
    }
    return mask;
}

PruneResult pruneMagnitude(const float* w, int64_t rows, int64_t cols, const SparsitySettings& s) {
    checkSettings(s, "magnitude pruning");
    std::vector<float> score(size_t(rows * cols));
    for (size_t i = 0; i < score.size(); ++i) score[i] = std::fabs(w[i]);
    PruneResult r;
    r.mask = selectMask(score.data(), rows, cols, s.pattern, s.ratio, s.n, s.m);
    r.w.assign(w, w + rows * cols);
    for (size_t i = 0; i < r.w.size(); ++i)
        if (!r.mask[i]) r.w[i] = 0.0f;
    return r;
}

PruneResult pruneWanda(const float* w, int64_t rows, int64_t cols, const double* colNorm,
                       const SparsitySettings& s) {
    checkSettings(s, "wanda pruning");
    std::vector<float> score(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            score[size_t(r * cols + j)] = float(std::fabs(double(w[r * cols + j])) * colNorm[j]);
    const SparsityPattern p =
        s.pattern == SparsityPattern::Unstructured ? SparsityPattern::PerRow : s.pattern;
    PruneResult r;
    r.mask = selectMask(score.data(), rows, cols, p, s.ratio, s.n, s.m);
    r.w.assign(w, w + rows * cols);
    for (size_t i = 0; i < r.w.size(); ++i)
        if (!r.mask[i]) r.w[i] = 0.0f;
    return r;
}

namespace {

/// SparseGPT's setup: dead inputs (diag H = 0) get H_jj = 1 and weight 0, H is damped, and the
/// upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU; row i holds the OBS update of column i) returned.
MatD sparseGptInverseFactor(MatD& W, const double* H, int64_t cols, double damp,
                            const std::string& name) {
    MatD Hm = Eigen::Map<const MatD>(H, cols, cols);
    for (int64_t j = 0; j < cols; ++j)
        if (!std::isfinite(Hm(j, j)))
            throw ArgumentError(name + ": the calibration Gram matrix is not finite");
    for (int64_t j = 0; j < cols; ++j)
        if (Hm(j, j) == 0.0) {
            Hm(j, j) = 1.0;
            W.col(j).setZero();
        }
    Hm.diagonal().array() += damp * Hm.diagonal().mean();
    Eigen::LLT<MatD> llt(Hm);
    if (llt.info() != Eigen::Success)
        throw ArgumentError(name + ": the damped calibration Gram matrix is not positive definite");
    const MatD Hinv = llt.solve(MatD::Identity(cols, cols));
    Eigen::LLT<MatD> llt2(Hinv);
    if (llt2.info() != Eigen::Success)
        throw ArgumentError(name + ": the inverse Gram matrix is not positive definite");
    return llt2.matrixU();
}

/// The unstructured / per-row mask of the lazy block of columns [i1, i2) (1 = kept) from its
/// weights W1 at the block start and the OBS scores w² / U_cc². Reference count: sparsegpt.py's
/// thresh = sort(scores)[int(n·s)], every score ≤ thresh pruned (per row: within each row);
/// exact count: the lowest scores up to a cumulative target of round(ratio · n) over the matrix.
void sparseGptBlockMask(const MatD& W1, const MatD& U, int64_t i1, int64_t i2,
                        const SparsitySettings& s, std::vector<uint8_t>& m1) {
    const int64_t rows = W1.rows(), bw = i2 - i1;
    std::vector<double> score(size_t(rows * bw));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < bw; ++c) {
            const double d = U(i1 + c, i1 + c);
            score[size_t(r * bw + c)] = W1(r, c) * W1(r, c) / (d * d);
        }
    const bool unstructured = s.pattern == SparsityPattern::Unstructured;
    if (referenceCount(s)) {
        std::vector<double> sorted;
        auto threshold = [&](size_t b, size_t e) {
            sorted.assign(score.begin() + ptrdiff_t(b), score.begin() + ptrdiff_t(e));
            const int64_t k = referenceIndex(int64_t(e - b), s.ratio);
            std::nth_element(sorted.begin(), sorted.begin() + k, sorted.end());
            const double thresh = sorted[size_t(k)];
            for (size_t i = b; i < e; ++i)
                if (score[i] <= thresh) m1[i] = 0;
        };
        if (unstructured)
            threshold(0, size_t(rows * bw));
        else
            for (int64_t r = 0; r < rows; ++r) threshold(size_t(r * bw), size_t((r + 1) * bw));
        return;
    }
    // lcw's exact count (scores compared in float, as before)
    const std::vector<float> fscore(score.begin(), score.end());
    std::vector<int64_t> idx;
    if (unstructured) {
        const int64_t k =
            roundCount(s.ratio * double(rows * i2)) - roundCount(s.ratio * double(rows * i1));
        idx.resize(size_t(rows * bw));
        std::iota(idx.begin(), idx.end(), int64_t(0));
        pruneLowest(fscore.data(), idx, k, m1.data());
        return;
    }
    const int64_t k = roundCount(s.ratio * double(i2)) - roundCount(s.ratio * double(i1));
    for (int64_t r = 0; r < rows; ++r) {
        idx.resize(size_t(bw));
        std::iota(idx.begin(), idx.end(), r * bw);
        pruneLowest(fscore.data(), idx, k, m1.data());
    }
}

/// N:M at column c of the block: the M-group starting there keeps its N highest scores of the
/// weights updated so far (fasterprune's topk when the loop reaches the group).
void sparseGptNmGroup(const MatD& W1, const MatD& U, int64_t i1, int64_t c,
                      const SparsitySettings& s, std::vector<uint8_t>& m1) {
    const int64_t rows = W1.rows(), bw = W1.cols();
    const int64_t k = std::min<int64_t>(bw, c + s.m) - c;
    std::vector<float> score(static_cast<size_t>(k));
    std::vector<uint8_t> keep(static_cast<size_t>(k));
    std::vector<int64_t> idx(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k; ++j) {
            const double d = U(i1 + c + j, i1 + c + j);
            score[size_t(j)] = float(W1(r, c + j) * W1(r, c + j) / (d * d));
            idx[size_t(j)] = j;
            keep[size_t(j)] = 1;
        }
        pruneLowest(score.data(), idx, k - nmKeep(k, s.n, s.m), keep.data());
        for (int64_t j = 0; j < k; ++j)
            if (!keep[size_t(j)]) m1[size_t(r * bw + c + j)] = 0;
    }
}

} // namespace

PruneResult pruneSparseGpt(const float* w, int64_t rows, int64_t cols, const double* H,
                           const SparsitySettings& s, const std::string& name) {
    checkSettings(s, name);
    MatD W(rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) W.data()[i] = double(w[i]);
    const MatD U = sparseGptInverseFactor(W, H, cols, s.damp, name);

    const bool nm = s.pattern == SparsityPattern::NM;
    int64_t bs = std::max<int64_t>(1, s.blockSize);
    if (nm) bs = (bs + s.m - 1) / s.m * s.m; // groups at absolute multiples of m
    std::vector<uint8_t> mask(size_t(rows * cols), 1);
    for (int64_t i1 = 0; i1 < cols; i1 += bs) {
        const int64_t i2 = std::min(cols, i1 + bs), bw = i2 - i1;
        MatD W1 = W.middleCols(i1, bw);
        MatD Err1 = MatD::Zero(rows, bw);
        std::vector<uint8_t> m1(size_t(rows * bw), 1);
        if (!nm) sparseGptBlockMask(W1, U, i1, i2, s, m1);
        for (int64_t c = 0; c < bw; ++c) {
            if (nm && c % s.m == 0) sparseGptNmGroup(W1, U, i1, c, s, m1);
            const double d = U(i1 + c, i1 + c);
            Eigen::VectorXd err(rows);
            for (int64_t r = 0; r < rows; ++r) {
                const double wv = W1(r, c);
                const double q = m1[size_t(r * bw + c)] ? wv : 0.0;
                err(r) = (wv - q) / d;
            }
            W1.rightCols(bw - c).noalias() -= err * U.row(i1 + c).segment(i1 + c, bw - c);
            for (int64_t r = 0; r < rows; ++r)
                if (!m1[size_t(r * bw + c)]) W1(r, c) = 0.0;
            Err1.col(c) = err;
        }
        W.middleCols(i1, bw) = W1;
        if (i2 < cols) W.rightCols(cols - i2).noalias() -= Err1 * U.block(i1, i2, bw, cols - i2);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < bw; ++c)
                mask[size_t(r * cols + i1 + c)] = m1[size_t(r * bw + c)];
    }
    PruneResult res;
    res.mask = std::move(mask);
    res.w.resize(size_t(rows * cols));
    for (int64_t i = 0; i < rows * cols; ++i) {
        const double v = W.data()[i];
        if (!std::isfinite(v))
            throw ArgumentError(name + ": SparseGPT produced non-finite weights");
        res.w[size_t(i)] = res.mask[size_t(i)] ? float(v) : 0.0f;
    }
    return res;
}

PruneResult prune(const float* w, int64_t rows, int64_t cols, const double* H,
                  const double* colNorm, const SparsitySettings& s, const std::string& name) {
    switch (s.method) {
    case SparsityMethod::Magnitude:
        return pruneMagnitude(w, rows, cols, s);
    case SparsityMethod::Wanda:
        if (!colNorm)
            throw ArgumentError(name + ": wanda pruning needs calibration activation norms");
        return pruneWanda(w, rows, cols, colNorm, s);
    case SparsityMethod::SparseGpt:
        if (!H) throw ArgumentError(name + ": sparsegpt needs the calibration Gram matrix");
        return pruneSparseGpt(w, rows, cols, H, s, name);
    }
    throw ArgumentError(name + ": unknown sparsity method");
}

double outputError(const float* w, const float* wq, int64_t rows, int64_t cols, const double* H) {
    MatD D(rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) D.data()[i] = double(w[i]) - double(wq[i]);
    const Eigen::Map<const MatD> Hm(H, cols, cols);
    return ((D * Hm).array() * D.array()).sum();
}

double outputEnergy(const float* w, int64_t rows, int64_t cols, const double* H) {
    MatD W(rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) W.data()[i] = double(w[i]);
    const Eigen::Map<const MatD> Hm(H, cols, cols);
    return ((W * Hm).array() * W.array()).sum();
}

bool checkNM(const uint8_t* mask, int64_t rows, int64_t cols, int n, int m) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < cols; g += m) {
            int kept = 0;
            for (int64_t j = g; j < std::min<int64_t>(cols, g + m); ++j)
                kept += mask[r * cols + j] != 0;
            if (kept > n) return false;
        }
    return true;
}

std::vector<uint8_t> packMask(const std::vector<uint8_t>& mask) {
    std::vector<uint8_t> bits((mask.size() + 7) / 8, 0);
    for (size_t i = 0; i < mask.size(); ++i)
        if (mask[i]) bits[i / 8] |= uint8_t(1u << (i % 8));
    return bits;
}

std::vector<uint8_t> unpackMask(const std::vector<uint8_t>& bits, int64_t count) {
    if (int64_t(bits.size()) * 8 < count)
        throw FormatError("sparsity mask", "has " + std::to_string(bits.size()) +
                                               " bytes, too few for " + std::to_string(count) +
                                               " weights");
    std::vector<uint8_t> mask(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) mask[size_t(i)] = (bits[size_t(i / 8)] >> (i % 8)) & 1u;
    return mask;
}

uint64_t sparsityMetadataBits(int64_t rows, int64_t cols, int64_t kept, const SparsitySettings& s) {
    if (s.pattern == SparsityPattern::NM) {
        int idxBits = 0;
        while ((1 << idxBits) < s.m) ++idxBits;
        return uint64_t(kept) * uint64_t(idxBits);
    }
    const uint64_t bitmask = uint64_t(rows * cols);
    const uint64_t csr = 32ull * uint64_t(kept) + 32ull * uint64_t(rows + 1);
    return std::min(bitmask, csr);
}

} // namespace lcw::compress
