#pragma once
/// \file
/// Orthogonal transforms for rotations (QuaRot-style, docs/methods.md "Rotations"): the fast
/// Walsh–Hadamard transform, extended to sizes that are not powers of two, optionally randomised.
///
/// For a size n = p·m, p the largest power of two dividing n and m the odd rest:
///   T = (H_p ⊗ M_m) · D / √p
///   H_p  the Sylvester–Hadamard matrix of order p (entries ±1, H_2k = [[H_k, H_k], [H_k, −H_k]]),
///        applied by the fast transform in p·log2(p) additions;
///   M_m  the identity when m = 1, else a seeded random orthogonal m×m matrix (Gaussian entries
///   from
///        SplitMix64 and Box–Muller, rows orthonormalised by modified Gram–Schmidt, in double);
///   D    a seeded ±1 diagonal (randomised Hadamard) or the identity.
/// Element i of a vector is entry (a, b) = (i / m, i % m) of a p×m matrix: M_m mixes within each
/// run of m consecutive elements, H_p across the runs. T is orthogonal (Tᵀ T = I). The same
/// (n, seed, signs) give the same T on every run, so a runtime rebuilds an online transform from
/// the seed an overlay records.
#include "core/model/runtime_quant.h"

#include <cstdint>
#include <map>
#include <vector>

namespace lcw::runtime {

class OrthoTransform {
public:
    OrthoTransform() = default;
    /// Throws ArgumentError when n < 1.
    OrthoTransform(int64_t n, uint64_t seed, bool randomSigns);

    int64_t size() const { return m_n; }
    bool empty() const { return m_n == 0; }
    int64_t powerOfTwo() const { return m_p; }
    int64_t oddPart() const { return m_m; }

    /// x ← T x for `rows` vectors of size() floats, vector r at x + r·ld (in place), parallel
    /// over the vectors.
    void apply(float* x, int64_t rows, int64_t ld, int threads) const;
    /// x ← T x (one vector of size() doubles).
    void apply(double* x) const;
    /// x ← Tᵀ x.
    void applyTransposed(double* x) const;
    /// T as a dense row-major size()×size() matrix (tests).
    std::vector<double> matrix() const;

private:
    int64_t m_n = 0, m_p = 1, m_m = 1;
    std::vector<double> m_odd;  ///< M_m, row-major (empty when m = 1)
    std::vector<float> m_oddF;  ///< the same in float
    std::vector<int8_t> m_sign; ///< D's diagonal (empty: identity)
};

/// The seeds of the transforms of one rotation, derived from the recipe's seed so that the
/// residual rotation, the online transforms and the per-head transform differ.
uint64_t rotationSeed(uint64_t seed, int purpose);
inline constexpr int kRotResidual = 0, kRotDown = 1, kRotHead = 2;

/// The runtime side of RuntimeQuant::rotation for one model: the transforms, built once.
class OnlineRotations {
public:
    /// `mlpWidths`: the MLP channels of the blocks (a transform per distinct width).
    void init(const OnlineRotation& r, int64_t headDim, const std::vector<int64_t>& mlpWidths);
    bool down() const { return m_rot.down; }
    bool qk() const { return m_rot.qk; }
    bool active() const { return m_rot.active(); }
    /// x [n, width] (row stride ld) ← rows by T_width (the MLP intermediate before mlp.down).
    void rotateDown(float* x, int64_t n, int64_t width, int64_t ld, int threads) const;
    /// Every head (headDim values) of x [n, heads·headDim] (row stride ld) ← T_headDim · head.
    void rotateHeads(float* x, int64_t n, int64_t heads, int64_t ld, int threads) const;

private:
    OnlineRotation m_rot;
    std::map<int64_t, OrthoTransform> m_down;
    OrthoTransform m_head;
};

} // namespace lcw::runtime
