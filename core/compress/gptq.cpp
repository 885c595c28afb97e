#include "core/compress/gptq.h"

#include "core/common/error.h"
#include "core/compress/gguf_grid.h"
#include "core/compress/threads.h"
#include "core/io/quants.h"

#include <Eigen/Dense>

#include <algorithm>
#include <functional>
#include <cmath>
#include <numeric>

namespace lcw::compress {

namespace {

using MatD = Eigen::MatrixXd; // column-major: columns of W are contiguous

struct GptqStats {
    double damp = 0;
    int64_t deadColumns = 0;
};

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

namespace {

/// What the GPTQ loop asks of a grid: groups of contiguous columns whose grid is chosen from the
/// group's current weights when its first column is reached (groupLen 0: the grids are fixed
/// before the loop), and the quantisation of one element onto its grid.
class ColumnQuantiser {
public:
    virtual ~ColumnQuantiser() = default;
    virtual int64_t groupLen() const = 0;
    /// vals: the current weights of group gi's columns, [rows, columns of the group].
    virtual void startGroup(int64_t gi, const MatD& vals) = 0;
    /// Quantises element (r, j) with current value x; returns the value it decodes to.
    virtual double quantize(int64_t r, int64_t j, double x) = 0;
};

/// The GPTQ loop (see gptq.h) over W [rows, cols] and H; dead columns are zeroed in W first.
void runGptq(MatD W, MatD H, const GptqOptions& o, ColumnQuantiser& q, GptqStats& st,
             const std::string& name, const std::function<void(MatD&)>& fixedGrids) {
    const int64_t rows = W.rows(), cols = W.cols();
    for (int64_t j = 0; j < cols; ++j)
        if (!(H(j, j) > 0)) {
            H(j, j) = 1.0;
            W.col(j).setZero();
            ++st.deadColumns;
        }
    if (fixedGrids) fixedGrids(W);
    const int64_t gl = q.groupLen() > 0 ? std::min(q.groupLen(), cols) : 0;
    std::vector<char> groupReady(size_t(gl > 0 ? (cols + gl - 1) / gl : 1), 0);

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

    const MatD U = inverseCholeskyUpper(Hperm, o.damp, st.damp, name);
    Hperm.resize(0, 0);

    const int64_t B = o.blockSize;
    MatD W1, Err1, vals;
    Eigen::VectorXd err(rows);
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        const int64_t i2 = std::min(i1 + B, cols), cnt = i2 - i1;
        W1 = Wp.middleCols(i1, cnt);
        Err1.setZero(rows, cnt);
        for (int64_t i = 0; i < cnt; ++i) {
            const int64_t p = i1 + i, j = perm[size_t(p)];
            if (gl > 0 && !groupReady[size_t(j / gl)]) {
                // The group's grid from its current weights: columns in this block are
                // up to date in W1; later blocks still lack this block's pending updates.
                const int64_t gi = j / gl, j0 = gi * gl, j1 = std::min(cols, j0 + gl);
                vals.resize(rows, j1 - j0);
                for (int64_t c = j0; c < j1; ++c) {
                    const int64_t pc = pos[size_t(c)];
                    if (pc < i2)
                        vals.col(c - j0) = W1.col(pc - i1);
                    else
                        vals.col(c - j0) = Wp.col(pc) - Err1.leftCols(i) * U.block(i1, pc, i, 1);
                }
                q.startGroup(gi, vals);
                groupReady[size_t(gi)] = 1;
            }
            const double d = U(p, p);
            for (int64_t r = 0; r < rows; ++r) err(r) = (W1(r, i) - q.quantize(r, j, W1(r, i))) / d;
            // The rest of the block absorbs this column's error (rank-1).
            if (i + 1 < cnt)
                W1.rightCols(cnt - i - 1).noalias() -= err * U.block(p, p + 1, 1, cnt - i - 1);
            Err1.col(i) = err;
        }
        // Lazy update of all later columns: one matrix-matrix product per block.
        if (i2 < cols) Wp.rightCols(cols - i2).noalias() -= Err1 * U.block(i1, i2, cnt, cols - i2);
    }
}

MatD loadW(const float* w, int64_t rows, int64_t cols) {
    return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
               w, rows, cols)
        .cast<double>();
}
MatD loadH(const double* Hp, int64_t cols) {
    return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        Hp, cols, cols);
}

void checkInputs(const float* w, int64_t rows, int64_t cols, const GptqOptions& o,
                 const std::string& name) {
    if (rows <= 0 || cols <= 0) throw ArgumentError(name + ": empty tensor");
    if (!(o.damp > 0) || o.blockSize < 1)
        throw ArgumentError(name + ": GPTQ needs damp > 0 and block_size >= 1");
    for (int64_t i = 0; i < rows * cols; ++i)
        if (!std::isfinite(w[i]))
            throw ArgumentError(name + ": non-finite weight at element " + std::to_string(i));
}

/// int / fp8 / nf4 grids (RTN's), per tensor, channel or group.
class IntQuantiser final : public ColumnQuantiser {
public:
    IntQuantiser(const WeightSettings& s, int64_t rows, int64_t cols, const std::string& name)
        : m_s(s), m_rows(rows), m_cols(cols), m_name(name), m_gpr(gridsPerRow(s, cols)),
          m_codes(size_t(rows * cols)) {
        if (s.granularity == Granularity::Group) m_grids.resize(size_t(rows * m_gpr));
    }
    int64_t groupLen() const override {
        return m_s.granularity == Granularity::Group ? m_s.groupSize : 0;
    }
    /// Channel / tensor grids from the initial weights (dead columns already zero).
    void fixGrids(const MatD& W) {
        if (m_s.granularity == Granularity::Tensor) {
            m_grids.push_back(groupGrid(m_s, float(W.minCoeff()), float(W.maxCoeff()), m_name));
        } else if (m_s.granularity == Granularity::Channel) {
            m_grids.resize(size_t(m_rows));
            for (int64_t r = 0; r < m_rows; ++r)
                m_grids[size_t(r)] = groupGrid(m_s, float(W.row(r).minCoeff()),
                                               float(W.row(r).maxCoeff()), m_name);
        }
    }
    void startGroup(int64_t gi, const MatD& vals) override {
        for (int64_t r = 0; r < m_rows; ++r) {
            float mn = INFINITY, mx = -INFINITY;
            for (int64_t c = 0; c < vals.cols(); ++c) {
                mn = std::min(mn, float(vals(r, c)));
                mx = std::max(mx, float(vals(r, c)));
            }
            m_grids[size_t(r * m_gpr + gi)] = groupGrid(m_s, mn, mx, m_name);
        }
    }
    double quantize(int64_t r, int64_t j, double x) override {
        const GroupGrid& g = m_grids[size_t(gridIndex(m_s, m_cols, r, j))];
        const uint32_t u = encodeOnGrid(m_s, float(x), g);
        m_codes[size_t(r * m_cols + j)] = u;
        return double(decodeOnGrid(m_s, u, g));
    }
    PackedTensor pack() const { return packCodes(m_s, m_rows, m_cols, m_codes, m_grids); }

private:
    const WeightSettings& m_s;
    int64_t m_rows, m_cols;
    const std::string& m_name;
    int64_t m_gpr;
    std::vector<GroupGrid> m_grids;
    std::vector<uint32_t> m_codes;
};

/// GGUF block grids: ggml's quantiser picks each block's scales from the block's current
/// weights; GPTQ then chooses the codes.
class GgufQuantiser final : public ColumnQuantiser {
public:
    GgufQuantiser(DType t, int64_t rows, int64_t cols, const float* importance)
        : m_t(t), m_rows(rows), m_bl(dtypeBlockElems(t)), m_bpr(cols / m_bl),
          m_blockBytes(size_t(dtypeBlockBytes(t))), m_importance(importance),
          m_bytes(size_t(rows * m_bpr) * m_blockBytes), m_grids(size_t(rows * m_bpr)) {}
    int64_t groupLen() const override { return m_bl; }
    void startGroup(int64_t gi, const MatD& vals) override {
        std::vector<float> x(static_cast<size_t>(m_bl));
        for (int64_t r = 0; r < m_rows; ++r) {
            for (int64_t c = 0; c < m_bl; ++c) x[size_t(c)] = float(vals(r, c));
            std::byte* blk = block(r, gi);
            quantizeRow(m_t, x.data(), blk, m_bl, m_importance ? m_importance + gi * m_bl : nullptr);
            m_grids[size_t(r * m_bpr + gi)] = blockGrid(m_t, blk);
        }
    }
    double quantize(int64_t r, int64_t j, double x) override {
        const int64_t gi = j / m_bl;
        const int i = int(j % m_bl);
        const BlockGrid& g = m_grids[size_t(r * m_bpr + gi)];
        const uint32_t q = g.nearest(i, float(x));
        ggufSetCode(m_t, block(r, gi), i, q);
        return double(g.value(i, q));
    }
    std::vector<std::byte>& bytes() { return m_bytes; }

private:
    std::byte* block(int64_t r, int64_t gi) {
        return m_bytes.data() + size_t(r * m_bpr + gi) * m_blockBytes;
    }
    DType m_t;
    int64_t m_rows, m_bl, m_bpr;
    size_t m_blockBytes;
    const float* m_importance;
    std::vector<std::byte> m_bytes;
    std::vector<BlockGrid> m_grids;
};

} // namespace

GptqResult gptqQuantize(const float* w, int64_t rows, int64_t cols, const double* Hp,
                        const WeightSettings& s, const GptqOptions& o, const std::string& name) {
    if (methodIsGguf(s.method))
        throw ArgumentError(name + ": GPTQ does not apply to the GGUF block scheme " +
                            weightMethodName(s.method) + " (use gptqQuantizeGguf)");
    checkInputs(w, rows, cols, o, name);
    const SingleThreadIf oneThread(rows * cols < (int64_t(1) << 16));
    GptqResult res;
    IntQuantiser q(s, rows, cols, name);
    GptqStats st;
    runGptq(loadW(w, rows, cols), loadH(Hp, cols), o, q, st, name,
            [&](MatD& W) { q.fixGrids(W); });
    res.packed = q.pack();
    res.damp = st.damp;
    res.deadColumns = st.deadColumns;
    return res;
}

GptqGgufResult gptqQuantizeGguf(const float* w, int64_t rows, int64_t cols, const double* Hp,
                                DType type, const float* importance, const GptqOptions& o,
                                const std::string& name) {
    if (!ggufHasCodes(type))
        throw ArgumentError(name + ": GPTQ cannot choose the codes of type " +
                            std::string(dtypeName(type)));
    if (cols % dtypeBlockElems(type) != 0)
        throw ArgumentError(name + ": " + std::to_string(cols) + " columns are not a multiple of " +
                            std::to_string(dtypeBlockElems(type)) + " (" +
                            std::string(dtypeName(type)) + " blocks)");
    checkInputs(w, rows, cols, o, name);
    const SingleThreadIf oneThread(rows * cols < (int64_t(1) << 16));
    GgufQuantiser q(type, rows, cols, importance);
    GptqGgufResult res;
    GptqStats st;
    runGptq(loadW(w, rows, cols), loadH(Hp, cols), o, q, st, name, {});
    res.bytes = std::move(q.bytes());
    res.damp = st.damp;
    res.deadColumns = st.deadColumns;
    return res;
}

} // namespace lcw::compress
