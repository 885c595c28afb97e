#include "core/compress/gptq.h"

#include "core/common/error.h"
#include "core/compress/threads.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lcw::compress {

namespace {

using MatD = Eigen::MatrixXd; // column-major: columns of W are contiguous

/// Upper-triangular U with H⁻¹ = Uᵀ U, after dampening; raises the damping until H is positive
/// definite. Without forming H⁻¹: with J the order reversal, chol(J H J) = L gives H = R Rᵀ for
/// the upper-triangular R = J L J, so H⁻¹ = R⁻ᵀ R⁻¹ and U = R⁻¹ (one factorisation and one
/// triangular inverse instead of an inverse and a second factorisation).
MatD inverseCholeskyUpper(const MatD& H, double damp, double& used, const std::string& name) {
    const int64_t n = H.rows();
    const double meanDiag = H.diagonal().mean();
    for (int attempt = 0; attempt < 4; ++attempt, damp *= 10) {
        MatD Hr = H.reverse(); // J H J
        Hr.diagonal().array() += damp * meanDiag;
        Eigen::LLT<MatD> llt(Hr);
        if (llt.info() != Eigen::Success) continue;
        const MatD R = MatD(llt.matrixL()).reverse(); // upper triangular
        MatD U = MatD::Identity(n, n);
        R.triangularView<Eigen::Upper>().solveInPlace(U);
        if (!U.allFinite()) continue;
        used = damp;
        return U;
    }
    throw Error(name + ": GPTQ: the calibration Hessian is not positive definite even with "
                       "dampening " +
                std::to_string(damp / 10) + " (too few calibration tokens?)");
}

} // namespace

GptqResult gptqQuantize(const float* w, int64_t rows, int64_t cols, const double* Hp,
                        const WeightSettings& s, const GptqOptions& o, const std::string& name) {
    if (rows <= 0 || cols <= 0) throw ArgumentError(name + ": empty tensor");
    if (methodIsGguf(s.method))
        throw ArgumentError(name + ": GPTQ does not apply to the GGUF block scheme " +
                            weightMethodName(s.method));
    if (!(o.damp > 0) || o.blockSize < 1)
        throw ArgumentError(name + ": GPTQ needs damp > 0 and block_size >= 1");
    for (int64_t i = 0; i < rows * cols; ++i)
        if (!std::isfinite(w[i]))
            throw ArgumentError(name + ": non-finite weight at element " + std::to_string(i));
    const SingleThreadIf oneThread(rows * cols < (int64_t(1) << 16));
    GptqResult res;

    // W [rows, cols] in double, H symmetric.
    MatD W =
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            w, rows, cols)
            .cast<double>();
    MatD H =
        Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            Hp, cols, cols);
    for (int64_t j = 0; j < cols; ++j)
        if (!(H(j, j) > 0)) {
            H(j, j) = 1.0;
            W.col(j).setZero();
            ++res.deadColumns;
        }

    // Channel / tensor grids from the initial weights (dead columns already zero).
    std::vector<GroupGrid> grids;
    const int64_t gpr = gridsPerRow(s, cols);
    const bool grouped = s.granularity == Granularity::Group;
    if (s.granularity == Granularity::Tensor) {
        grids.push_back(groupGrid(s, float(W.minCoeff()), float(W.maxCoeff()), name));
    } else if (s.granularity == Granularity::Channel) {
        grids.resize(size_t(rows));
        for (int64_t r = 0; r < rows; ++r)
            grids[size_t(r)] =
                groupGrid(s, float(W.row(r).minCoeff()), float(W.row(r).maxCoeff()), name);
    } else {
        grids.resize(size_t(rows * gpr));
    }
    const int64_t gl = grouped ? std::min<int64_t>(s.groupSize, cols) : cols;
    std::vector<char> groupReady(size_t(std::max<int64_t>(gpr, 1)), 0);

    // Processing order.
    std::vector<int64_t> perm(static_cast<size_t>(cols));
    std::iota(perm.begin(), perm.end(), 0);
    if (o.actOrder)
        std::stable_sort(perm.begin(), perm.end(),
                         [&](int64_t a, int64_t b) { return H(a, a) > H(b, b); });
    std::vector<int64_t> pos(static_cast<size_t>(cols));
    for (int64_t p = 0; p < cols; ++p) pos[size_t(perm[size_t(p)])] = p;
    MatD Wp(rows, cols), Hperm(cols, cols);
    for (int64_t p = 0; p < cols; ++p) Wp.col(p) = W.col(perm[size_t(p)]);
    for (int64_t a = 0; a < cols; ++a)
        for (int64_t b = 0; b < cols; ++b) Hperm(a, b) = H(perm[size_t(a)], perm[size_t(b)]);
    H.resize(0, 0);
    W.resize(0, 0);

    const MatD U = inverseCholeskyUpper(Hperm, o.damp, res.damp, name);
    Hperm.resize(0, 0);

    std::vector<uint32_t> codes(size_t(rows * cols));
    const int64_t B = o.blockSize;
    MatD W1, Err1;
    Eigen::VectorXd err(rows), cur(rows);
    std::vector<float> mn(static_cast<size_t>(rows)), mx(static_cast<size_t>(rows));
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        const int64_t i2 = std::min(i1 + B, cols), cnt = i2 - i1;
        W1 = Wp.middleCols(i1, cnt);
        Err1.setZero(rows, cnt);
        for (int64_t i = 0; i < cnt; ++i) {
            const int64_t p = i1 + i, j = perm[size_t(p)];
            if (grouped && !groupReady[size_t(j / gl)]) {
                // The group's grid from its current weights: columns in this block are
                // up to date in W1; later blocks still lack this block's pending updates.
                const int64_t gi = j / gl, j0 = gi * gl, j1 = std::min(cols, j0 + gl);
                std::fill(mn.begin(), mn.end(), INFINITY);
                std::fill(mx.begin(), mx.end(), -INFINITY);
                for (int64_t c = j0; c < j1; ++c) {
                    const int64_t pc = pos[size_t(c)];
                    if (pc < i2)
                        cur = W1.col(pc - i1);
                    else
                        cur = Wp.col(pc) - Err1.leftCols(i) * U.block(i1, pc, i, 1);
                    for (int64_t r = 0; r < rows; ++r) {
                        mn[size_t(r)] = std::min(mn[size_t(r)], float(cur(r)));
                        mx[size_t(r)] = std::max(mx[size_t(r)], float(cur(r)));
                    }
                }
                for (int64_t r = 0; r < rows; ++r)
                    grids[size_t(r * gpr + gi)] = groupGrid(s, mn[size_t(r)], mx[size_t(r)], name);
                groupReady[size_t(gi)] = 1;
            }
            const double d = U(p, p);
            for (int64_t r = 0; r < rows; ++r) {
                const GroupGrid& g = grids[size_t(gridIndex(s, cols, r, j))];
                const uint32_t u = encodeOnGrid(s, float(W1(r, i)), g);
                codes[size_t(r * cols + j)] = u;
                err(r) = (W1(r, i) - double(decodeOnGrid(s, u, g))) / d;
            }
            // The rest of the block absorbs this column's error (rank-1).
            if (i + 1 < cnt)
                W1.rightCols(cnt - i - 1).noalias() -= err * U.block(p, p + 1, 1, cnt - i - 1);
            Err1.col(i) = err;
        }
        // Lazy update of all later columns: one matrix-matrix product per block.
        if (i2 < cols) Wp.rightCols(cols - i2).noalias() -= Err1 * U.block(i1, i2, cnt, cols - i2);
    }
    res.packed = packCodes(s, rows, cols, codes, grids);
    return res;
}

} // namespace lcw::compress
