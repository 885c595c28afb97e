#pragma once
/// \file
/// Low-rank factorisation of one linear layer W [out, in] ≈ B·A with A [r, in] and B [out, r]
/// (the runtime computes B·(A·x)):
///   svd:     truncated SVD of W (Eckart–Young: the best rank-r approximation in Frobenius norm;
///            the squared error is the sum of the discarded σ²);
///   asvd:    SVD of W·S with S = diag(s_j), s_j = (mean |x_j|)^α over the calibration tokens,
///            then A = Σ_r V_rᵀ S⁻¹ (activation-aware: inputs with large activations keep more);
///   svd-llm: SVD of W·L with H = XᵀX = L·Lᵀ (Cholesky, damped when H is singular), then
///            A = V_rᵀ L⁻¹: the truncation minimises the calibration-output error ||(W − BA)Xᵀ||.
/// Targets: an explicit rank, the retained energy (smallest r with Σ_{i<r} σ_i² ≥ e·Σσ²) or a
/// parameter ratio p (largest r with r·(in + out) ≤ p·in·out).
#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

enum class LowRankMethod { Svd, Asvd, SvdLlm };
enum class LowRankTarget { Rank, Energy, ParamRatio };

const char* lowRankMethodName(LowRankMethod m); // "svd", "asvd", "svd-llm"

struct LowRankSettings {
    LowRankMethod method = LowRankMethod::Svd;
    LowRankTarget target = LowRankTarget::ParamRatio;
    int64_t rank = 0;        ///< LowRankTarget::Rank
    double energy = 0.9;     ///< LowRankTarget::Energy, in (0, 1]
    double paramRatio = 0.5; ///< LowRankTarget::ParamRatio, in (0, 1)
    double alpha = 0.5;      ///< ASVD exponent
    double damp = 1e-6;      ///< SVD-LLM: relative diagonal damping when H is not positive definite
    /// "svd r=16", "svd-llm 50% params", "asvd 90% energy".
    std::string describe() const;
    bool needsCalibration() const { return method != LowRankMethod::Svd; }
};

struct LowRankResult {
    int64_t rank = 0;
    std::vector<float> a;      ///< [rank, in]
    std::vector<float> b;      ///< [out, rank]
    std::vector<double> sigma; ///< all singular values of the (scaled/whitened) matrix, descending
    /// Σ_{i≥r} σ_i² / Σ σ_i² of the (scaled/whitened) matrix.
    double discardedEnergy = 0;
    /// B·A as a dense [out, in] matrix.
    std::vector<float> product(int64_t out, int64_t in) const;
};

/// Rank chosen by the target for a [out, in] matrix with singular values sigma (descending);
/// at least 1, at most min(out, in).
int64_t chooseRank(const std::vector<double>& sigma, int64_t out, int64_t in,
                   const LowRankSettings& s);

/// Factorises w. `H` (Gram XᵀX, in × in, row-major) is needed by svd-llm, `meanAbs` (per-input
/// mean |x|) by asvd. Throws ArgumentError naming `name` when they are missing or unusable.
LowRankResult factorize(const float* w, int64_t out, int64_t in, const double* H,
                        const double* meanAbs, const LowRankSettings& s, const std::string& name);

} // namespace lcw::compress
