#include "core/compress/gptq.h"

#include "core/common/error.h"
#include "core/compress/compact_formats.h"
#include "core/compress/gguf_grid.h"
#include "core/compress/threads.h"
#include "core/io/quants.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <functional>
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
    throw Error(name +
                ": GPTQ: the calibration Hessian is not positive definite even with "
                "dampening " +
                std::to_string(damp / 10) + " (too few calibration tokens?)");
}

} // namespace

namespace {

/// What the GPTQ loop asks of a grid: groups of `groupLen` storage columns whose grid is chosen
/// when the loop first reaches one of their columns (groupLen 0: the grids are fixed before the
/// loop), and the quantisation of one element onto its grid. Storage column k is the original
/// column perm[k] when the groups follow the processing order, else the original column k.
class ColumnQuantiser {
public:
    virtual ~ColumnQuantiser() = default;
    virtual int64_t groupLen() const = 0;
    /// vals: the chosen weights of group gi's storage columns, [rows, columns of the group].
    virtual void startGroup(int64_t gi, const MatD& vals) = 0;
    /// Quantises element (r, storage column k) with current value x; returns its decoded value.
    virtual double quantize(int64_t r, int64_t k, double x) = 0;
    /// After the factorisation: d[j] = the diagonal of H⁻¹'s upper Cholesky factor at original
    /// column j (GPTQ's divisor of column j's error).
    virtual void factorDiagonal(const Eigen::VectorXd& d) { (void)d; }

protected:
    /// static_groups: every one of `groups` groups of `len` contiguous columns from W.
    void startGroupsFrom(const MatD& W, int64_t groups, int64_t len) {
        for (int64_t gi = 0; gi < groups; ++gi) startGroup(gi, W.middleCols(gi * len, len));
    }
};

/// How the loop forms groups and when it chooses their grids (gptq.h).
struct LoopRule {
    bool reference = true;    ///< grids from the full W as it stands (stale within the block)
    bool processOrder = true; ///< groups are consecutive in processing order (storage = perm)
    /// Grids fixed before the loop; called with the initial W, before dead columns are zeroed
    /// (`beforeDead`) or after.
    std::function<void(const MatD&)> fixedGrids;
    bool beforeDead = false;
    /// Trailing columns left unquantised (GptqOptions::keepTrailing); their final values go to
    /// *kept [rows, keep].
    int64_t keep = 0;
    MatD* kept = nullptr;
};

/// The GPTQ loop (see gptq.h) over W [rows, cols] and H; dead columns are zeroed in W first.
/// Returns the processing order (perm[p] = original column processed p-th).
std::vector<int64_t> runGptq(MatD W, MatD H, const GptqOptions& o, ColumnQuantiser& q,
                             GptqStats& st, const std::string& name, const LoopRule& rule) {
    const int64_t rows = W.rows(), cols = W.cols();
    // Columns [0, n) are quantised; the trailing ones are kept (and never reordered).
    const int64_t n = cols - rule.keep;
    if (rule.fixedGrids && rule.beforeDead) rule.fixedGrids(W.leftCols(n));
    for (int64_t j = 0; j < cols; ++j)
        if (!(H(j, j) > 0)) {
            H(j, j) = 1.0;
            W.col(j).setZero();
            ++st.deadColumns;
        }
    if (rule.fixedGrids && !rule.beforeDead) rule.fixedGrids(W.leftCols(n));
    const int64_t gl = q.groupLen() > 0 ? std::min(q.groupLen(), cols) : 0;
    std::vector<char> groupReady(size_t(gl > 0 ? (cols + gl - 1) / gl : 1), 0);

    // Processing order (the reference: argsort of diag H, descending; stable for ties).
    std::vector<int64_t> perm(static_cast<size_t>(cols));
    std::iota(perm.begin(), perm.end(), 0);
    if (o.actOrder)
        std::stable_sort(perm.begin(), perm.begin() + n,
                         [&](int64_t a, int64_t b) { return H(a, a) > H(b, b); });
    std::vector<int64_t> pos(static_cast<size_t>(cols));
    for (int64_t p = 0; p < cols; ++p) pos[size_t(perm[size_t(p)])] = p;
    // Storage column of processing position p, and back.
    auto storageOf = [&](int64_t p) { return rule.processOrder ? p : perm[size_t(p)]; };
    auto posOfStorage = [&](int64_t k) { return rule.processOrder ? k : pos[size_t(k)]; };
    MatD Wp(rows, cols), Hperm(cols, cols);
    for (int64_t p = 0; p < cols; ++p) Wp.col(p) = W.col(perm[size_t(p)]);
    for (int64_t a = 0; a < cols; ++a)
        for (int64_t b = 0; b < cols; ++b) Hperm(a, b) = H(perm[size_t(a)], perm[size_t(b)]);
    H.resize(0, 0);
    W.resize(0, 0);

    const MatD U = inverseCholeskyUpper(Hperm, o.damp, st.damp, name);
    Hperm.resize(0, 0);
    {
        Eigen::VectorXd d(cols);
        for (int64_t j = 0; j < cols; ++j) d(j) = U(pos[size_t(j)], pos[size_t(j)]);
        q.factorDiagonal(d);
    }

    const int64_t B = o.blockSize;
    MatD W1, Err1, vals;
    Eigen::VectorXd err(rows);
    for (int64_t i1 = 0; i1 < n; i1 += B) {
        const int64_t i2 = std::min(i1 + B, n), cnt = i2 - i1;
        W1 = Wp.middleCols(i1, cnt);
        Err1.setZero(rows, cnt);
        for (int64_t i = 0; i < cnt; ++i) {
            const int64_t p = i1 + i, k = storageOf(p);
            if (gl > 0 && !groupReady[size_t(k / gl)]) {
                // (kept columns stay out of the grids: storage column k >= n is one of them)
                const int64_t gi = k / gl, k0 = gi * gl, k1 = std::min(n, k0 + gl);
                vals.resize(rows, k1 - k0);
                for (int64_t c = k0; c < k1; ++c) {
                    const int64_t pc = posOfStorage(c);
                    if (rule.reference)
                        // The reference: the full W as it stands — this block's columns at
                        // their values when the block started, later blocks with the updates
                        // of the earlier blocks only.
                        vals.col(c - k0) = Wp.col(pc);
                    else if (pc < i2)
                        // "updated": columns of this block are up to date in W1; later blocks
                        // get this block's pending updates.
                        vals.col(c - k0) = W1.col(pc - i1);
                    else
                        vals.col(c - k0) = Wp.col(pc) - Err1.leftCols(i) * U.block(i1, pc, i, 1);
                }
                q.startGroup(gi, vals);
                groupReady[size_t(gi)] = 1;
            }
            const double d = U(p, p);
            for (int64_t r = 0; r < rows; ++r) err(r) = (W1(r, i) - q.quantize(r, k, W1(r, i))) / d;
            // The rest of the block absorbs this column's error (rank-1).
            if (i + 1 < cnt)
                W1.rightCols(cnt - i - 1).noalias() -= err * U.block(p, p + 1, 1, cnt - i - 1);
            Err1.col(i) = err;
        }
        // Lazy update of all later columns: one matrix-matrix product per block.
        if (i2 < cols) Wp.rightCols(cols - i2).noalias() -= Err1 * U.block(i1, i2, cnt, cols - i2);
    }
    if (rule.keep > 0) {
        // The kept columns' codes: 0 on their group's grid (a group of only kept columns gets
        // the grid of zeros).
        for (int64_t k = n; k < cols; ++k) {
            if (gl > 0 && !groupReady[size_t(k / gl)]) {
                const int64_t gi = k / gl, k0 = gi * gl;
                q.startGroup(gi, MatD::Zero(rows, std::min(cols, k0 + gl) - k0));
                groupReady[size_t(gi)] = 1;
            }
            for (int64_t r = 0; r < rows; ++r) q.quantize(r, k, 0.0);
        }
        if (rule.kept) *rule.kept = Wp.rightCols(rule.keep);
    }
    return perm;
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
    if (o.keepTrailing < 0 || o.keepTrailing >= cols)
        throw ArgumentError(name + ": GPTQ: " + std::to_string(o.keepTrailing) +
                            " kept columns of " + std::to_string(cols));
    for (int64_t i = 0; i < rows * cols; ++i)
        if (!std::isfinite(w[i]))
            throw ArgumentError(name + ": non-finite weight at element " + std::to_string(i));
}

/// The reference Quantizer's grid (IST-DASLab/gptq quant.py find_params, perchannel, no mse)
/// for int formats, in lcw's storage: the scale as f16 rounded up, the zero point from it.
GroupGrid referenceIntGrid(const WeightSettings& s, float mn, float mx, const std::string& name) {
    const float maxq = float((1 << s.bits) - 1);
    float xmin = std::min(mn, 0.0f), xmax = std::max(mx, 0.0f);
    if (s.symmetric) {
        xmax = std::max(std::fabs(xmin), xmax);
        if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
    // weight.clip_ratio: the step shrinks, the zero point stays at the unclipped minimum (Atom's
    // Quantizer.find_params), clamped to the codes so that it can be stored.
    const float exact = (xmax - xmin) * float(s.clipRatio) / maxq;
    uint16_t h = f32ToF16(exact);
    if (f16ToF32(h) < exact) ++h;
    if (!std::isfinite(f16ToF32(h)))
        throw ArgumentError(name + ": a quantisation scale (" + std::to_string(exact) +
                            ") does not fit in f16");
    GroupGrid g;
    g.scale = h;
    // Symmetric: the zero point (maxq + 1) / 2 = 2^(b-1) is implied by the storage format.
    if (!s.symmetric) g.zero = f32ToF16(std::min(std::nearbyint(-xmin / f16ToF32(h)), maxq));
    return g;
}

/// int / fp8 / nf4 grids (RTN's, or the reference Quantizer's for int), per tensor, channel or
/// group; codes in storage-column order.
class IntQuantiser final : public ColumnQuantiser {
public:
    IntQuantiser(const WeightSettings& s, int64_t rows, int64_t cols, bool referenceGrid,
                 bool staticGroups, const std::string& name)
        : m_s(s), m_rows(rows), m_cols(cols), m_name(name), m_gpr(gridsPerRow(s, cols)),
          m_refGrid(referenceGrid && s.format == WeightFormat::Int), m_static(staticGroups),
          m_codes(size_t(rows * cols)) {
        if (s.granularity == Granularity::Group) m_grids.resize(size_t(rows * m_gpr));
    }
    int64_t groupLen() const override {
        return m_s.granularity == Granularity::Group && !m_static ? m_s.groupSize : 0;
    }
    /// Channel / tensor grids, and static groups (contiguous in the original order), from W.
    void fixGrids(const MatD& W) {
        if (m_s.granularity == Granularity::Tensor) {
            m_grids.push_back(grid(float(W.minCoeff()), float(W.maxCoeff())));
        } else if (m_s.granularity == Granularity::Channel) {
            m_grids.resize(size_t(m_rows));
            for (int64_t r = 0; r < m_rows; ++r)
                m_grids[size_t(r)] = grid(float(W.row(r).minCoeff()), float(W.row(r).maxCoeff()));
        } else if (m_static) {
            // W may end before m_cols (kept trailing columns, which stay out of the grids; a
            // group of kept columns only gets the grid of zeros).
            const int64_t gl = std::min(m_s.groupSize, m_cols), wc = W.cols();
            for (int64_t gi = 0; gi < m_gpr; ++gi)
                startGroup(gi,
                           gi * gl < wc
                               ? MatD(W.middleCols(gi * gl, std::min(wc, gi * gl + gl) - gi * gl))
                               : MatD::Zero(m_rows, std::min(m_cols, gi * gl + gl) - gi * gl));
        }
    }
    void startGroup(int64_t gi, const MatD& vals) override {
        for (int64_t r = 0; r < m_rows; ++r) {
            float mn = INFINITY, mx = -INFINITY;
            for (int64_t c = 0; c < vals.cols(); ++c) {
                mn = std::min(mn, float(vals(r, c)));
                mx = std::max(mx, float(vals(r, c)));
            }
            m_grids[size_t(r * m_gpr + gi)] = grid(mn, mx);
        }
    }
    double quantize(int64_t r, int64_t k, double x) override {
        const GroupGrid& g = m_grids[size_t(gridIndex(m_s, m_cols, r, k))];
        uint32_t u;
        if (m_refGrid && m_s.symmetric) {
            // The reference: clamp(round(x / scale) + 2^(b-1), 0, 2^b - 1).
            const float maxq = float((1 << m_s.bits) - 1), sc = f16ToF32(g.scale);
            u = uint32_t(
                std::clamp(std::nearbyint(float(x) / sc) + float(1 << (m_s.bits - 1)), 0.0f, maxq));
        } else {
            u = encodeOnGrid(m_s, float(x), g);
        }
        m_codes[size_t(r * m_cols + k)] = u;
        return double(decodeOnGrid(m_s, u, g));
    }
    PackedTensor pack() const { return packCodes(m_s, m_rows, m_cols, m_codes, m_grids); }

private:
    GroupGrid grid(float mn, float mx) const {
        return m_refGrid ? referenceIntGrid(m_s, mn, mx, m_name) : groupGrid(m_s, mn, mx, m_name);
    }
    const WeightSettings& m_s;
    int64_t m_rows, m_cols;
    const std::string& m_name;
    int64_t m_gpr;
    bool m_refGrid, m_static;
    std::vector<GroupGrid> m_grids;
    std::vector<uint32_t> m_codes;
};

/// GGUF block grids: ggml's quantiser picks each block's scales from the block's current
/// weights; GPTQ then chooses the codes.
class GgufQuantiser final : public ColumnQuantiser {
public:
    GgufQuantiser(DType t, int64_t rows, int64_t cols, const float* importance, bool staticGroups)
        : m_t(t), m_rows(rows), m_bl(dtypeBlockElems(t)), m_bpr(cols / m_bl),
          m_blockBytes(size_t(dtypeBlockBytes(t))), m_importance(importance),
          m_static(staticGroups), m_bytes(size_t(rows * m_bpr) * m_blockBytes),
          m_grids(size_t(rows * m_bpr)) {}
    int64_t groupLen() const override { return m_static ? 0 : m_bl; }
    /// static_groups: every block's scales from the initial weights.
    void fixGrids(const MatD& W) {
        if (m_static) startGroupsFrom(W, m_bpr, m_bl);
    }
    void startGroup(int64_t gi, const MatD& vals) override {
        std::vector<float> x(static_cast<size_t>(m_bl));
        for (int64_t r = 0; r < m_rows; ++r) {
            for (int64_t c = 0; c < m_bl; ++c) x[size_t(c)] = float(vals(r, c));
            std::byte* blk = block(r, gi);
            quantizeRow(m_t, x.data(), blk, m_bl,
                        m_importance ? m_importance + gi * m_bl : nullptr);
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
    bool m_static;
    std::vector<std::byte> m_bytes;
    std::vector<BlockGrid> m_grids;
};

/// SliM-LLM's mixed widths: column group gi (contiguous in the original order) at groupBits[gi]
/// bits on the reference Quantizer's asymmetric grid, or SQC's (gptq.h); codes, scales and
/// zeros for slimPack.
class SlimQuantiser final : public ColumnQuantiser {
public:
    SlimQuantiser(const std::vector<uint8_t>& groupBits, int64_t rows, int64_t cols, int64_t group,
                  bool staticGroups, const SlimSqc& sqc, const std::string& name)
        : m_bits(groupBits), m_rows(rows), m_cols(cols), m_g(group), m_G(cols / group),
          m_static(staticGroups), m_sqc(sqc), m_name(name), m_codes(size_t(rows * cols)),
          m_scales(size_t(rows * m_G)), m_zeros(size_t(rows * m_G)), m_sc(size_t(rows * m_G)),
          m_z(size_t(rows * m_G)) {}
    int64_t groupLen() const override { return m_static ? 0 : m_g; }
    void fixGrids(const MatD& W) {
        if (!m_static) return;
        if (m_sqc.enabled)
            m_initial = W; // SQC needs the factor's diagonal: grids chosen in factorDiagonal
        else
            startGroupsFrom(W, m_G, m_g);
    }
    void factorDiagonal(const Eigen::VectorXd& d) override {
        m_d = d;
        if (m_static && m_sqc.enabled) {
            startGroupsFrom(m_initial, m_G, m_g);
            m_initial.resize(0, 0);
        }
    }
    void startGroup(int64_t gi, const MatD& vals) override {
        WeightSettings sb;
        sb.bits = m_bits[size_t(gi)], sb.symmetric = false;
        // SQC: each element's weight in the search error (lambda for the salient ones).
        Eigen::ArrayXXd wt;
        if (m_sqc.enabled) {
            const Eigen::ArrayXXd sens = sensitivities(gi, vals);
            const double t = salientThreshold(sens);
            wt = (sens >= t).select(Eigen::ArrayXXd::Constant(m_rows, vals.cols(), m_sqc.lambda),
                                    1.0);
        }
        for (int64_t r = 0; r < m_rows; ++r) {
            const float mn = float(vals.row(r).minCoeff()), mx = float(vals.row(r).maxCoeff());
            const GroupGrid g = m_sqc.enabled ? sqcGrid(sb, vals, wt, r, mn, mx)
                                              : referenceIntGrid(sb, mn, mx, m_name);
            const size_t i = size_t(r * m_G + gi);
            m_scales[i] = g.scale, m_zeros[i] = g.zero;
            m_sc[i] = f16ToF32(g.scale), m_z[i] = f16ToF32(g.zero);
        }
    }
    double quantize(int64_t r, int64_t k, double x) override {
        const int64_t gi = k / m_g;
        const size_t i = size_t(r * m_G + gi);
        const float maxq = float((1 << m_bits[size_t(gi)]) - 1), sc = m_sc[i], z = m_z[i];
        // The reference: clamp(round(x / scale) + zero, 0, maxq).
        const float u = std::clamp(std::nearbyint(float(x) / sc) + z, 0.0f, maxq);
        m_codes[size_t(r * m_cols + k)] = uint32_t(u);
        return double(sc * (u - z));
    }
    PackedTensor pack(const WeightSettings& s) const {
        return slimPack(m_rows, m_cols, s, m_bits, m_codes, m_scales, m_zeros, m_name);
    }

private:
    /// SQC's sensitivities w² / d_j² of group gi's elements.
    Eigen::ArrayXXd sensitivities(int64_t gi, const MatD& vals) const {
        Eigen::ArrayXXd sens(m_rows, vals.cols());
        for (int64_t c = 0; c < vals.cols(); ++c) {
            const double d = m_d(gi * m_g + c);
            sens.col(c) = vals.col(c).array().square() / (d * d);
        }
        return sens;
    }
    /// SQC's salience split: the smallest sensitivity with |z| > 2 over the group (z with the
    /// unbiased standard deviation, as torch.std); +inf when there is none.
    static double salientThreshold(const Eigen::ArrayXXd& sens) {
        const double n = double(sens.size()), mean = sens.mean();
        const double sd = n > 1 ? std::sqrt((sens - mean).square().sum() / (n - 1)) : 0.0;
        double t = INFINITY;
        if (sd > 0)
            for (Eigen::Index i = 0; i < sens.size(); ++i)
                if (std::fabs((sens(i) - mean) / sd) > 2) t = std::min(t, sens(i));
        return t;
    }
    /// SQC's search for row r of a group (gptq.h); wt: the elements' weights in the error.
    GroupGrid sqcGrid(const WeightSettings& sb, const MatD& vals, const Eigen::ArrayXXd& wt,
                      int64_t r, float mn, float mx) const {
        const float maxq = float((1 << sb.bits) - 1);
        GroupGrid best = referenceIntGrid(sb, mn, mx, m_name);
        double bestErr = INFINITY;
        for (int k = 0; k <= 100; ++k) {
            // p = 1, then 1 + 0.002 k (k = 1..50), then 1 - 0.002 (k - 50) (k = 51..100)
            const float p = k == 0    ? 1.0f
                            : k <= 50 ? float(1.0 + 0.002 * k)
                                      : float(1.0 - 0.002 * (k - 50));
            const GroupGrid g = referenceIntGrid(sb, p * mn, p * mx, m_name);
            const float sc = f16ToF32(g.scale), z = f16ToF32(g.zero);
            double err = 0;
            for (int64_t c = 0; c < vals.cols(); ++c) {
                const float x = float(vals(r, c));
                const float u = std::clamp(std::nearbyint(x / sc) + z, 0.0f, maxq);
                err += wt(r, c) * std::pow(std::fabs(double(sc * (u - z)) - double(x)), 2.4);
            }
            if (err < bestErr) bestErr = err, best = g;
        }
        return best;
    }
    const std::vector<uint8_t>& m_bits;
    int64_t m_rows, m_cols, m_g, m_G;
    bool m_static;
    SlimSqc m_sqc;
    const std::string& m_name;
    std::vector<uint32_t> m_codes;
    std::vector<uint16_t> m_scales, m_zeros;
    std::vector<float> m_sc, m_z;
    Eigen::VectorXd m_d;
    MatD m_initial;
};

/// GPTQ with groups contiguous in the original column order (GGUF blocks, SliM groups; also
/// with act_order), static_groups fixed by q.fixGrids.
template <class Q>
GptqStats runContiguousGroups(const float* w, int64_t rows, int64_t cols, const double* Hp,
                              const GptqOptions& o, Q& q, const std::string& name) {
    if (o.keepTrailing != 0)
        throw ArgumentError(name + ": GPTQ: kept columns apply to int grids only");
    GptqStats st;
    LoopRule rule;
    rule.reference = o.groups == GptqGroups::Reference;
    rule.processOrder = false;
    rule.fixedGrids = [&](const MatD& W) { q.fixGrids(W); };
    runGptq(loadW(w, rows, cols), loadH(Hp, cols), o, q, st, name, rule);
    return st;
}

} // namespace

GptqOptions gptqOptionsFromJson(const nlohmann::json& w) {
    GptqOptions o;
    if (!w.is_object()) return o;
    if (w.contains("damp")) o.damp = w["damp"].get<double>();
    if (w.contains("act_order")) o.actOrder = w["act_order"].get<bool>();
    if (w.contains("block_size")) o.blockSize = w["block_size"].get<int64_t>();
    if (w.contains("static_groups")) o.staticGroups = w["static_groups"].get<bool>();
    if (w.contains("groups"))
        o.groups = w["groups"] == "updated" ? GptqGroups::Updated : GptqGroups::Reference;
    if (w.contains("sym_grid")) o.referenceSymGrid = w["sym_grid"] != "rtn";
    return o;
}

SlimSqc slimSqcFromJson(const nlohmann::json& w) {
    SlimSqc q;
    q.enabled = true;
    if (!w.is_object()) return q;
    if (w.contains("sqc")) q.enabled = w["sqc"].get<bool>();
    if (w.contains("sqc_lambda")) q.lambda = w["sqc_lambda"].get<double>();
    return q;
}

bool gptqStoresColumnOrder(const WeightSettings& s, const GptqOptions& o) {
    return s.method == WeightMethod::Gptq && !s.ggufGrid && !methodIsGguf(s.method) &&
           s.granularity == Granularity::Group && o.actOrder && !o.staticGroups &&
           o.groups == GptqGroups::Reference;
}

GptqResult gptqQuantize(const float* w, int64_t rows, int64_t cols, const double* Hp,
                        const WeightSettings& s, const GptqOptions& o, const std::string& name) {
    if (methodIsGguf(s.method))
        throw ArgumentError(name + ": GPTQ does not apply to the GGUF block scheme " +
                            weightMethodName(s.method) + " (use gptqQuantizeGguf)");
    checkInputs(w, rows, cols, o, name);
    const SingleThreadIf oneThread(rows * cols < (int64_t(1) << 16));
    GptqResult res;
    const bool ref = o.groups == GptqGroups::Reference;
    const bool group = s.granularity == Granularity::Group;
    IntQuantiser q(s, rows, cols, o.referenceSymGrid, group && o.staticGroups, name);
    GptqStats st;
    LoopRule rule;
    rule.reference = ref;
    // Groups consecutive in act order: the reference without static groups.
    rule.processOrder = ref && group && !o.staticGroups;
    rule.fixedGrids = [&](const MatD& W) { q.fixGrids(W); };
    rule.beforeDead = ref && !group; // the reference's first find_params(W)
    MatD kept;
    rule.keep = o.keepTrailing;
    rule.kept = &kept;
    const std::vector<int64_t> perm =
        runGptq(loadW(w, rows, cols), loadH(Hp, cols), o, q, st, name, rule);
    res.packed = q.pack();
    if (o.keepTrailing > 0) {
        res.kept.resize(size_t(rows * o.keepTrailing));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < o.keepTrailing; ++c)
                res.kept[size_t(r * o.keepTrailing + c)] = float(kept(r, c));
    }
    // Stored also when act order happens to be the identity, so that sizes follow the settings.
    if (rule.processOrder && o.actOrder) res.packed.colOrder.assign(perm.begin(), perm.end());
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
    GgufQuantiser q(type, rows, cols, importance, o.staticGroups);
    GptqGgufResult res;
    // ggml blocks are contiguous in the original column order, also with act_order.
    const GptqStats st = runContiguousGroups(w, rows, cols, Hp, o, q, name);
    res.bytes = std::move(q.bytes());
    res.damp = st.damp;
    res.deadColumns = st.deadColumns;
    return res;
}

GptqResult gptqQuantizeSlim(const float* w, int64_t rows, int64_t cols, const double* Hp,
                            const WeightSettings& s, const std::vector<uint8_t>& groupBits,
                            const GptqOptions& o, const std::string& name, const SlimSqc& sqc) {
    const int64_t g = slimGroupLength(s, cols, name);
    if (int64_t(groupBits.size()) != cols / g)
        throw ArgumentError(name + ": slim: " + std::to_string(groupBits.size()) +
                            " group widths for " + std::to_string(cols / g) + " groups");
    for (uint8_t b : groupBits)
        if (b < 2 || b > 4) throw ArgumentError(name + ": slim group width outside 2..4 bits");
    checkInputs(w, rows, cols, o, name);
    const SingleThreadIf oneThread(rows * cols < (int64_t(1) << 16));
    if (sqc.enabled && !(sqc.lambda >= 0))
        throw ArgumentError(name + ": slim: SQC's lambda must be >= 0");
    SlimQuantiser q(groupBits, rows, cols, g, o.staticGroups, sqc, name);
    // The layout has no column order: groups stay contiguous in the original order.
    const GptqStats st = runContiguousGroups(w, rows, cols, Hp, o, q, name);
    GptqResult res;
    res.packed = q.pack(s);
    res.damp = st.damp;
    res.deadColumns = st.deadColumns;
    return res;
}

} // namespace lcw::compress
