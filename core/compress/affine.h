#pragma once
/// \file
/// AffineQuant's learned affine transform (Ma et al., ICLR 2024) for the block model of
/// OmniQuant (block_grad.h).
///
/// AffineQuant replaces the diagonal scaling of SmoothQuant / OmniQuant's LET by a full matrix A:
/// a linear's input becomes X A⁻¹ and its weight A Wᵀ-style, so that X Wᵀ is unchanged in exact
/// arithmetic while both the weights and the activations that get quantised are reshaped. A full
/// matrix has to be folded into the neighbouring weights to cost nothing at inference. In a
/// pre-norm Llama block that is possible between attn.v and attn.o, per KV head: the attention
/// output of a head is P·V (P the softmax probabilities), linear in V, so with the v rows of KV
/// head g multiplied by A_g (W_v[g] ← A_g W_v[g], b_v[g] ← A_g b_v[g]) every query head h of that
/// group sees o_h A_gᵀ, and the o columns of head h multiplied by A_g⁻¹ (W_o[:, h] ← W_o[:, h]
/// A_g⁻¹) restore the block's output. The inputs of q/k/v and gate/up come from an elementwise
/// RMSNorm and the input of down from the elementwise silu(gate)·up: a full matrix does not fold
/// there, and (as in the paper) those sites keep diagonal transforms (OmniQuant's LET).
///
/// The matrix of each head is A = D + α·(O ⊙ M_band): D the learned diagonal (start 1), O the
/// learned off-diagonal values (start 0), α the stability factor and M_band the gradual mask
/// (1 where 0 < |i − j| ≤ band, else 0; the band opens from 0 = diagonal only to n − 1 = full over
/// the epochs). After every optimiser step the parameters are projected so that A stays strictly
/// diagonally dominant with margin: D ≥ dMin > 0 and α Σ_{j≠i} |O_ij| ≤ ρ D_i for every row (the
/// row's off-diagonal values scaled down where needed), hence invertible (Levy–Desplanques) with
/// ‖A⁻¹‖∞ ≤ 1 / ((1 − ρ) min D). The inverse is computed in double (LU).
#include "core/compress/block_grad.h"

#include <string>
#include <vector>

namespace lcw::compress {

/// How the off-diagonal band of the affine matrices opens over the epochs.
enum class AffineMask {
    Gradual,  ///< the paper's gradual mask: diagonal only in epoch 1, full in the last
    Full,     ///< all off-diagonal entries learned from the start
    Diagonal, ///< the diagonal only (a diagonal scaling of v rows / o columns)
};

/// Half-width of the learned band in epoch `epoch` (0-based) of `epochs` for n × n matrices:
/// Gradual = round(epoch · (n − 1) / (epochs − 1)) (0 with one epoch), Full = n − 1,
/// Diagonal = 0.
int affineBand(AffineMask mask, int epoch, int epochs, int64_t n);

/// The learned parameters of one n × n affine matrix.
struct AffineParams {
    Eigen::VectorXd d; ///< diagonal (start 1)
    MatD off;          ///< off-diagonal values (start 0; the diagonal entries are unused, 0)

    static AffineParams identity(int64_t n);
    /// A = D + α (O ⊙ M_band).
    MatD matrix(double alpha, int band) const;
    /// Projects onto the strictly diagonally dominant set: d ≥ dMin, and per row
    /// α Σ_{0<|i−j|≤band} |off_ij| ≤ rho · d_i (scaling the row's band down); entries outside
    /// the band are zeroed.
    void project(double alpha, int band, double rho, double dMin);
};

/// Smallest row margin (|a_ii| − Σ_{j≠i} |a_ij|) / |a_ii| of a square matrix; > 0 means strictly
/// diagonally dominant (hence invertible).
double dominanceMargin(const MatD& a);

/// The per-KV-head transforms between attn.v and attn.o of one block, with their inverses.
class AffineVO {
public:
    /// One hd × hd matrix per KV head (nKvHeads of them); throws ArgumentError for wrong sizes
    /// and for a singular matrix.
    AffineVO(std::vector<MatD> a, int64_t nHeads, int64_t nKvHeads, int64_t headDim);
    /// W_v[g] ← A_g W_v[g], b_v[g] ← A_g b_v[g] (when present), W_o[:, h] ← W_o[:, h] A_g⁻¹ for
    /// the query heads h of group g. Equivalent in exact arithmetic.
    BlockWeights fold(const BlockWeights& w) const;
    /// From the gradients `g` w.r.t. the folded weights of `fold(w)`, returns dL/dA_g per KV head
    /// (dL/dA = G_v Wᵀ_v + g_b bᵀ_v − A⁻ᵀ (Σ_h W_o[:, h]ᵀ G_o[:, h]) A⁻ᵀ) and replaces the
    /// v and o gradients of `g` by those w.r.t. the unfolded weights of `w` (G_v ← Aᵀ G_v,
    /// g_b ← Aᵀ g_b, G_o[:, h] ← G_o[:, h] A⁻ᵀ), for the chain rule into earlier transforms.
    std::vector<MatD> grads(const BlockWeights& w, BlockGrads& g) const;
    const std::vector<MatD>& matrices() const { return m_a; }
    const std::vector<MatD>& inverses() const { return m_inv; }

private:
    std::vector<MatD> m_a, m_inv;
    int64_t m_h, m_kv, m_hd;
};

} // namespace lcw::compress
