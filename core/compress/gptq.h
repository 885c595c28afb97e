#pragma once
/// \file
/// GPTQ (Frantar et al. 2022): quantises a linear weight W [rows, cols] column by column,
/// spreading each column's rounding error onto the columns not yet quantised so that
/// ||X Wᵀ − X Ŵᵀ||² = tr(ΔW H ΔWᵀ), H = XᵀX, stays small.
///   - dampening: H += λ I with λ = damp · mean(diag H) (raised ×10 up to three times when the
///     Cholesky factorisation fails);
///   - dead columns (diag H = 0: the input channel is always zero) get H_jj = 1 and weight 0;
///   - act_order: columns in order of decreasing diag H;
///   - lazy block updates: the error of a block of `blockSize` columns reaches the rest of the
///     matrix in one matrix-matrix product;
///   - groups (default, "groups": "reference", as IST-DASLab/gptq's gptq.py fasterquant): when
///     the loop reaches a column whose position in the processing order is a multiple of the
///     group size, the grid of the next `groupSize` columns in processing order is chosen from
///     the full matrix W as it stands then — with the lazy updates of the earlier blocks but
///     without the current block's within-block updates. With act_order a group is therefore
///     `groupSize` consecutive columns in act order; the packed tensor stores its columns in that
///     order (PackedTensor::colOrder, GPTQ's g_idx). Channel and tensor grids come from the
///     initial weights (before dead columns are zeroed, as the reference's first find_params);
///   - static_groups (the reference's option): every group's grid is chosen before the loop
///     from the initial weights (dead columns zeroed), groups contiguous in the original order,
///     also with act_order;
///   - "groups": "updated" (lcw's earlier rule): a group's grid is chosen from the group's
///     current, fully updated weights when its first column is reached; groups contiguous in
///     the original column order also with act_order; channel/tensor grids after dead-column
///     zeroing;
///   - symmetric int grid (default "sym_grid": "reference", the reference Quantizer):
///     scale = 2·amax / (2^b − 1) (amax / (2^b − 1) when no value is negative), codes
///     clamp(round(w/scale) + 2^(b−1), 0, 2^b − 1), so the grid reaches −2^(b−1)·scale; "rtn":
///     RTN's grid, scale = amax / (2^(b−1) − 1), codes ±(2^(b−1) − 1). Asymmetric grids are the
///     reference's (xmin = min(min w, 0), xmax = max(max w, 0), scale = (xmax − xmin)/(2^b − 1),
///     zero = round(−xmin/scale); an all-zero group gets xmin = −1, xmax = 1).
///     Scales are stored as f16 rounded up (the zero point is computed from the stored scale),
///     where the reference keeps fp32 scales.
#include "core/common/dtype.h"
#include "core/compress/quantizer.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

/// Which rule chooses group grids (see above).
enum class GptqGroups { Reference, Updated };

struct GptqOptions {
    double damp = 0.01;
    bool actOrder = false;
    int64_t blockSize = 128;
    bool staticGroups = false;                 ///< recipe "static_groups"
    GptqGroups groups = GptqGroups::Reference; ///< recipe "groups": "reference" | "updated"
    bool referenceSymGrid = true;              ///< recipe "sym_grid": "reference" | "rtn"
    /// Atom's outlier columns (not a recipe key; gptqQuantize only): the last keepTrailing
    /// columns are not quantised. The loop (and act order) covers the other columns, their grids
    /// (groups, channel, tensor) come from those columns alone, and the trailing columns absorb
    /// the lazy block updates of every processed column (efeslab/Atom gptq.py with n_out).
    /// GptqResult::kept returns their final values; their codes in the packed tensor are those
    /// of 0 on their group's grid (the caller stores them another way).
    int64_t keepTrailing = 0;
};

/// The options of a recipe's weight section (damp, act_order, block_size, static_groups, groups,
/// sym_grid; validated by the recipe parser); defaults for absent keys.
GptqOptions gptqOptionsFromJson(const nlohmann::json& weight);

/// Whether gptqQuantize stores a column order (PackedTensor::colOrder, 32 bits per column) for
/// these settings: act_order with the reference groups (not static) at group granularity.
bool gptqStoresColumnOrder(const WeightSettings& s, const GptqOptions& o);

struct GptqResult {
    PackedTensor packed;
    double damp = 0;         ///< the dampening factor finally used
    int64_t deadColumns = 0; ///< input channels that were always zero
    /// With keepTrailing = n: the n trailing columns after GPTQ's updates, [rows, n] row-major.
    std::vector<float> kept;
};

/// `w` row-major [rows, cols]; `H` the cols x cols Gram XᵀX (row-major, symmetric). Formats int,
/// fp8, nf4 at every granularity. Throws ArgumentError for GGUF methods, bad sizes, non-finite
/// weights; Error when H stays singular after dampening (naming the layer).
GptqResult gptqQuantize(const float* w, int64_t rows, int64_t cols, const double* H,
                        const WeightSettings& s, const GptqOptions& o, const std::string& name);

struct GptqGgufResult {
    std::vector<std::byte> bytes; ///< rows × (cols / block) ggml blocks of the type, row-major
    double damp = 0;
    int64_t deadColumns = 0;
};

/// GPTQ onto a GGUF block type's grid (Q4_0 … Q8_0, Q2_K … Q6_K, IQ4_NL, IQ4_XS): each block of
/// a row is a group (contiguous in the original column order, also with act_order: ggml cannot
/// store another order); when GPTQ reaches its first column, ggml's quantiser (quantizeRow, with
/// the block's slice of `importance` when given) chooses the block's scales and minimums from
/// the block's weights as the reference timing has them ("groups": "reference": the full W as it
/// stands, without the current lazy block's updates; "updated": the fully error-corrected
/// weights; static_groups: the initial weights), and GPTQ then picks every code of the block
/// with error feedback (core/compress/gguf_grid.h). o.referenceSymGrid does not apply. The bytes
/// load in llama.cpp like any file of that type. cols must be a multiple of the type's block size.
GptqGgufResult gptqQuantizeGguf(const float* w, int64_t rows, int64_t cols, const double* H,
                                DType type, const float* importance, const GptqOptions& o,
                                const std::string& name);

/// SliM-LLM's salience-determined quantizer calibration (SQC; the reference's
/// mixed_quantizer.py Quantizer.fit): the grid of each (row, group) is the reference
/// Quantizer's asymmetric grid of (p·xmin, p·xmax) for the p in {1, 1 + 0.002 k, 1 − 0.002 k :
/// k = 1..50} that minimises Σ_non-salient |ŵ − w|^2.4 + λ Σ_salient |ŵ − w|^2.4 over the row's
/// elements of the group (the first p wins ties; candidates scored on their stored grids). The
/// salient elements: sensitivity w² / d_j² (d_j the diagonal of H⁻¹'s upper Cholesky factor, as
/// GPTQ uses it) at least the smallest sensitivity whose z-score over the group's rows × columns
/// exceeds 2 in magnitude (none when no element does). The reference's default λ is 1, with
/// which the split does not matter.
struct SlimSqc {
    bool enabled = false;
    double lambda = 1.0;
};

/// A slim weight section's SQC settings: "sqc" (default true), "sqc_lambda" (default 1).
SlimSqc slimSqcFromJson(const nlohmann::json& weight);

/// SliM-LLM's GPTQ step: GPTQ with column group gi (s.groupSize columns, contiguous in the
/// original order, also with act_order) at groupBits[gi] ∈ {2, 3, 4} bits on the reference
/// Quantizer's asymmetric grid (scale f16 rounded up, zero point from it), chosen when the loop
/// first reaches the group (o.groups / static_groups as for int groups); the result in the slim
/// layout (compact_formats.h). groupBits usually from slimChooseAllocation.
/// With sqc.enabled the group grids come from SQC (above) instead.
GptqResult gptqQuantizeSlim(const float* w, int64_t rows, int64_t cols, const double* H,
                            const WeightSettings& s, const std::vector<uint8_t>& groupBits,
                            const GptqOptions& o, const std::string& name, const SlimSqc& sqc = {});

} // namespace lcw::compress
