// AffineQuant's affine transforms between attn.v and attn.o (see affine.h).
#include "core/compress/affine.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>

namespace lcw::compress {

int affineBand(AffineMask mask, int epoch, int epochs, int64_t n) {
    const int full = int(std::max<int64_t>(0, n - 1));
    switch (mask) {
    case AffineMask::Diagonal:
        return 0;
    case AffineMask::Full:
        return full;
    case AffineMask::Gradual:
        break;
    }
    if (epochs <= 1) return 0;
    const int e = std::clamp(epoch, 0, epochs - 1);
    return int(std::lround(double(e) * double(full) / double(epochs - 1)));
}

AffineParams AffineParams::identity(int64_t n) {
    return {Eigen::VectorXd::Ones(n), MatD::Zero(n, n)};
}

MatD AffineParams::matrix(double alpha, int band) const {
    const int64_t n = d.size();
    MatD a = MatD::Zero(n, n);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = std::max<int64_t>(0, i - band); j <= std::min<int64_t>(n - 1, i + band);
             ++j)
            a(i, j) = i == j ? d(i) : alpha * off(i, j);
    return a;
}

void AffineParams::project(double alpha, int band, double rho, double dMin) {
    const int64_t n = d.size();
    for (int64_t i = 0; i < n; ++i) {
        d(i) = std::max(d(i), dMin);
        double s = 0;
        for (int64_t j = 0; j < n; ++j) {
            if (j == i || std::abs(i - j) > band) {
                off(i, j) = 0.0;
                continue;
            }
            s += std::fabs(off(i, j));
        }
        s *= alpha;
        if (s > rho * d(i)) off.row(i) *= rho * d(i) / s;
    }
}

double dominanceMargin(const MatD& a) {
    double m = 1.0;
    for (int64_t i = 0; i < a.rows(); ++i) {
        const double di = std::fabs(a(i, i));
        const double rest = a.row(i).cwiseAbs().sum() - di;
        m = std::min(m, di > 0 ? (di - rest) / di : -1.0);
    }
    return m;
}

AffineVO::AffineVO(std::vector<MatD> a, int64_t nHeads, int64_t nKvHeads, int64_t headDim)
    : m_a(std::move(a)), m_h(nHeads), m_kv(nKvHeads), m_hd(headDim) {
    if (nKvHeads < 1 || nHeads % nKvHeads != 0 || int64_t(m_a.size()) != nKvHeads)
        throw ArgumentError("affine transform: " + std::to_string(m_a.size()) + " matrices for " +
                            std::to_string(nKvHeads) + " KV heads");
    m_inv.reserve(m_a.size());
    for (const MatD& x : m_a) {
        if (x.rows() != headDim || x.cols() != headDim)
            throw ArgumentError("affine transform: matrices must be head_dim × head_dim (" +
                                std::to_string(headDim) + ")");
        const Eigen::PartialPivLU<Eigen::MatrixXd> lu(x);
        const double det = lu.determinant();
        if (!std::isfinite(det) || det == 0.0)
            throw ArgumentError("affine transform: singular matrix");
        m_inv.emplace_back(lu.inverse());
    }
}

BlockWeights AffineVO::fold(const BlockWeights& w) const {
    BlockWeights f = w;
    const int64_t group = m_h / m_kv;
    for (int64_t g = 0; g < m_kv; ++g) {
        const MatD& a = m_a[size_t(g)];
        f.w[kV].middleRows(g * m_hd, m_hd) = a * w.w[kV].middleRows(g * m_hd, m_hd);
        if (w.b[kV].size()) f.b[kV].segment(g * m_hd, m_hd) = a * w.b[kV].segment(g * m_hd, m_hd);
        for (int64_t h = g * group; h < (g + 1) * group; ++h)
            f.w[kO].middleCols(h * m_hd, m_hd) =
                w.w[kO].middleCols(h * m_hd, m_hd) * m_inv[size_t(g)];
    }
    return f;
}

std::vector<MatD> AffineVO::grads(const BlockWeights& w, BlockGrads& g) const {
    const int64_t group = m_h / m_kv;
    std::vector<MatD> ga(static_cast<size_t>(m_kv));
    for (int64_t kv = 0; kv < m_kv; ++kv) {
        const MatD& a = m_a[size_t(kv)];
        const MatD& inv = m_inv[size_t(kv)];
        auto gv = g.w[kV].middleRows(kv * m_hd, m_hd);
        MatD out = gv * w.w[kV].middleRows(kv * m_hd, m_hd).transpose();
        if (w.b[kV].size() && g.b[kV].size()) {
            auto gb = g.b[kV].segment(kv * m_hd, m_hd);
            out += gb * w.b[kV].segment(kv * m_hd, m_hd).transpose();
            gb = (a.transpose() * gb).eval();
        }
        gv = (a.transpose() * gv).eval();
        MatD gInv = MatD::Zero(m_hd, m_hd); // dL/dA⁻¹
        for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
            auto go = g.w[kO].middleCols(h * m_hd, m_hd);
            gInv += w.w[kO].middleCols(h * m_hd, m_hd).transpose() * go;
            go = (go * inv.transpose()).eval();
        }
        out -= inv.transpose() * gInv * inv.transpose();
        ga[size_t(kv)] = std::move(out);
    }
    return ga;
}

} // namespace lcw::compress
