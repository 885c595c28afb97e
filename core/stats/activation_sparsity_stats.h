#pragma once
/// \file
/// Natural activation sparsity of the MLP intermediate (the input of mlp.down): how many of a
/// token's neurons are near zero, which decides whether PowerInfer-style hot/cold neuron
/// splitting (skip the neurons a predictor expects to be near zero) could pay off.
///
/// Definitions (also in docs/stats-format.md), per token t of a site with C channels:
///   exact zero       x[t, c] == 0
///   near zero (rel)  |x[t, c]| <= kRel * max_c |x[t, c]|   (kRel = 1e-2; a zero row counts
///                    all of its channels)
///   near zero (abs)  |x[t, c]| <= kAbs                     (kAbs = 1e-3)
/// Fractions are over tokens × channels; tok_near_zero_rel holds each token's fraction.
///
/// Predictor-free upper bound of the MACs saved: an oracle that knew each token's near-zero
/// (rel) neurons skips exactly their rows of gate and up and their columns of down, i.e. the
/// near-zero fraction of the MLP's MACs (gated: 3 · dim · hidden per token, fc1/fc2: 2 · dim ·
/// hidden); no predictor costs are counted and skipping near-zero (not only zero) neurons
/// changes the output a little, so this bounds what any neuron-skipping scheme can save.
#include "core/stats/tensor_stats.h"

#include <cstdint>
#include <vector>

namespace lcw::stats {

class NearZeroCounter {
public:
    static constexpr double kRel = 1e-2, kAbs = 1e-3;
    /// Rows x [n, channels] (row stride channels).
    void add(const float* x, int64_t n, int64_t channels);
    /// Scalars near_zero_rel, near_zero_abs, exact_zero, tok_near_zero_rel_p10/p50/p90 and the
    /// array tok_near_zero_rel.
    void put(TensorStats& ts) const;

private:
    std::vector<double> m_tokRel;
    int64_t m_values = 0, m_exact = 0, m_rel = 0, m_abs = 0;
};

/// Whether a site holds an MLP intermediate (layers.N.mlp.down or an expert's down input).
bool isMlpIntermediateSite(const std::string& name);

/// Adds to every layers.N.mlp.down site with near-zero counts the oracle bound: scalars
/// oracle_mlp_macs_per_token, oracle_mlp_saved_frac (= near_zero_rel) and, when the block's
/// attention shapes are in `sites` (attn_in, attn.o, k), oracle_block_macs_per_token and
/// oracle_block_saved_frac (the MLP's saved MACs over the block's linear MACs).
void addOracleMacBounds(std::vector<TensorStats>& sites, bool gatedMlp);

/// The sparsity summary of one block's MLP intermediate, for tables and plots.
struct MlpSparsityRow {
    int layer = 0;
    double nearZeroRel = 0, nearZeroAbs = 0, exactZero = 0;
    double tokP10 = 0, tokP50 = 0, tokP90 = 0;
    double oracleMlpSaved = 0;
    double oracleBlockSaved = -1; ///< -1: unknown (attention shapes not recorded)
};
/// One row per layers.N.mlp.down site that has the near-zero scalars, by layer.
std::vector<MlpSparsityRow> mlpSparsityRows(const std::vector<TensorStats>& sites);

} // namespace lcw::stats
