#include "core/compress/lowrank.h"

#include "core/common/error.h"

#include <Eigen/Dense>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>

namespace lcw::compress {

namespace {
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMatD = Eigen::MatrixXd;
} // namespace

const char* lowRankMethodName(LowRankMethod m) {
    switch (m) {
    case LowRankMethod::Svd:
        return "svd";
    case LowRankMethod::Asvd:
        return "asvd";
    case LowRankMethod::SvdLlm:
        return "svd-llm";
    }
    return "?";
}

std::string LowRankSettings::describe() const {
    char b[64];
    switch (target) {
    case LowRankTarget::Rank:
        std::snprintf(b, sizeof b, " r=%lld", (long long)rank);
        break;
    case LowRankTarget::Energy:
        std::snprintf(b, sizeof b, " %g%% energy", energy * 100.0);
        break;
    case LowRankTarget::ParamRatio:
        std::snprintf(b, sizeof b, " %g%% params", paramRatio * 100.0);
        break;
    }
    return std::string(lowRankMethodName(method)) + b;
}

std::vector<float> LowRankResult::product(int64_t out, int64_t in) const {
    const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> A(
        a.data(), rank, in),
        B(b.data(), out, rank);
    std::vector<float> w(size_t(out * in));
    Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> W(w.data(),
                                                                                        out, in);
    W.noalias() = (B.cast<double>() * A.cast<double>()).cast<float>();
    return w;
}

int64_t chooseRank(const std::vector<double>& sigma, int64_t out, int64_t in,
                   const LowRankSettings& s) {
    const int64_t full = std::min(out, in);
    int64_t r = 1;
    switch (s.target) {
    case LowRankTarget::Rank:
        r = s.rank;
        break;
    case LowRankTarget::Energy: {
        double tot = 0, acc = 0;
        for (double v : sigma) tot += v * v;
        r = 0;
        // smallest r with retained ≥ e·total (relative slack for rounding in the sums)
        while (r < int64_t(sigma.size()) && acc < s.energy * tot * (1 - 1e-12)) {
            acc += sigma[size_t(r)] * sigma[size_t(r)];
            ++r;
        }
        break;
    }
    case LowRankTarget::ParamRatio:
        r = int64_t(std::floor(s.paramRatio * double(out) * double(in) / double(out + in) + 1e-9));
        break;
    }
    return std::clamp<int64_t>(r, 1, full);
}

LowRankResult factorize(const float* w, int64_t out, int64_t in, const double* H,
                        const double* meanAbs, const LowRankSettings& s, const std::string& name) {
    ColMatD W(out, in);
    for (int64_t r = 0; r < out; ++r)
        for (int64_t c = 0; c < in; ++c) W(r, c) = double(w[r * in + c]);
    // M = W·T with T = S (asvd) or L (svd-llm) or I; afterwards A = Vᵀ T⁻¹.
    ColMatD M;
    Eigen::VectorXd scale; // asvd
    Eigen::MatrixXd L;     // svd-llm (lower triangular)
    switch (s.method) {
    case LowRankMethod::Svd:
        M = W;
        break;
    case LowRankMethod::Asvd: {
        if (!meanAbs) throw ArgumentError(name + ": asvd needs calibration activation statistics");
        scale.resize(in);
        double mean = 0;
        for (int64_t j = 0; j < in; ++j) mean += meanAbs[j];
        mean /= double(std::max<int64_t>(in, 1));
        // inputs that were never active get a small positive scale so S stays invertible
        const double floorV = std::max(mean * 1e-6, 1e-30);
        for (int64_t j = 0; j < in; ++j) {
            if (!std::isfinite(meanAbs[j]))
                throw ArgumentError(name + ": asvd activation statistics are not finite");
            scale(j) = std::pow(std::max(meanAbs[j], floorV), s.alpha);
        }
        M = W * scale.asDiagonal();
        break;
    }
    case LowRankMethod::SvdLlm: {
        if (!H) throw ArgumentError(name + ": svd-llm needs the calibration Gram matrix");
        Eigen::MatrixXd Hm = Eigen::Map<const MatD>(H, in, in);
        if (!Hm.allFinite())
            throw ArgumentError(name + ": the calibration Gram matrix is not finite");
        double damp = 0;
        const double meanDiag = std::max(Hm.diagonal().mean(), 1e-30);
        for (int attempt = 0; attempt < 8; ++attempt) {
            Eigen::MatrixXd Hd = Hm;
            Hd.diagonal().array() += damp;
            Eigen::LLT<Eigen::MatrixXd> llt(Hd);
            if (llt.info() == Eigen::Success) {
                L = llt.matrixL();
                if (L.diagonal().minCoeff() > 0) break;
            }
            L.resize(0, 0);
            damp = damp == 0 ? s.damp * meanDiag : damp * 10;
        }
        if (L.size() == 0)
            throw ArgumentError(name + ": the calibration Gram matrix is not positive definite");
        M = W * L;
        break;
    }
    }
    Eigen::BDCSVD<ColMatD> svd(M, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXd sv = svd.singularValues();
    LowRankResult res;
    res.sigma.assign(sv.data(), sv.data() + sv.size());
    const int64_t r = chooseRank(res.sigma, out, in, s);
    res.rank = r;
    double tot = 0, disc = 0;
    for (int64_t i = 0; i < int64_t(res.sigma.size()); ++i) {
        tot += res.sigma[size_t(i)] * res.sigma[size_t(i)];
        if (i >= r) disc += res.sigma[size_t(i)] * res.sigma[size_t(i)];
    }
    res.discardedEnergy = tot > 0 ? disc / tot : 0.0;
    // B = U_r Σ_r, A = V_rᵀ T⁻¹
    const ColMatD B = svd.matrixU().leftCols(r) * sv.head(r).asDiagonal();
    ColMatD A = svd.matrixV().leftCols(r).transpose(); // [r, in]
    if (s.method == LowRankMethod::Asvd) {
        A = A * scale.cwiseInverse().asDiagonal();
    } else if (s.method == LowRankMethod::SvdLlm) {
        // A L = V_rᵀ  ⇔  Lᵀ Aᵀ = V_r
        A = L.transpose().triangularView<Eigen::Upper>().solve(A.transpose()).transpose();
    }
    res.a.resize(size_t(r * in));
    res.b.resize(size_t(out * r));
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < in; ++j) res.a[size_t(i * in + j)] = float(A(i, j));
    for (int64_t i = 0; i < out; ++i)
        for (int64_t j = 0; j < r; ++j) res.b[size_t(i * r + j)] = float(B(i, j));
    for (float v : res.a)
        if (!std::isfinite(v)) throw ArgumentError(name + ": low-rank factor is not finite");
    return res;
}

} // namespace lcw::compress
