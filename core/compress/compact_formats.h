#pragma once
/// \file
/// Compact weight formats with their own layouts (methods squeezellm, dgq, slim): the
/// quantisers, the dequantisation and the exact stored size. The runtime multiplies them through
/// their dequantised float32 values (CompressedModel::find()); sizes always count the compact
/// form. docs/methods.md names the papers and the differences.
///
/// PackedTensor layouts (settings.format int, codes LSB-first per row, rows start on a byte):
///   squeezellm  codes: `bits`-bit indices into the row's code book; scales: the code books,
///               f16 [rows][2^bits]; sparseRowPtr [rows + 1] / sparseCols / sparseValues (f16):
///               the outliers in CSR, whose values replace the code-book value at their position
///               (empty when outliers_pct is 0). Bits: codes + 16·rows·2^b + (32 + 16)·nnz +
///               32·(rows + 1) when nnz > 0.
///   dgq         codes: `bits`-bit group codes as lcw's int format; scales: the f16 channel scale
///               s1 per row; groupCodes: per (row, group) the 8-bit scale code S2 (1..255), then
///               (asymmetric) the integer zero point z (one byte each). Group scale = S2·s1;
///               w = S2·s1·(u − z) (symmetric: z = 2^(b−1)). Bits: codes + 16·rows + 8·groups
///               (asymmetric: 16·groups).
///   slim        groupCodes: the code bits (2, 3 or 4) of each column group (groupSize columns;
///               groups divide the row); codes: per row the groups' codes one after another at
///               their widths; scales / zeros: f16 per (row, group), w = scale·(u − zero).
///               Bits: codes + 32·rows·groups + 8·groups.
#include "core/compress/quantizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

// ---- SqueezeLLM ----

/// One-dimensional weighted k-means (Lloyd) as SqueezeLLM runs it per output row. The centroids
/// start at the weighted quantiles (k + 0.5) / K of the points with positive weight (all points,
/// with weight 1, when none has); each iteration assigns every point to its nearest centroid
/// (ties: the lower index of the ascending centroids), then moves each centroid to the weighted
/// mean of its points (a centroid without weight stays). Stops when no assignment changes or
/// after maxIter iterations. objective[i] = Σ wt·(x − c)² after iteration i's update.
struct KMeans1d {
    std::vector<double> centroids; ///< ascending
    std::vector<uint32_t> assign;
    std::vector<double> objective;
};
KMeans1d weightedKMeans1d(const double* x, const double* wt, int64_t n, int k, int maxIter = 50);

/// Number of sparse outliers of a [rows, cols] layer: round(pct / 100 · rows · cols).
int64_t squeezeOutlierCount(int64_t rows, int64_t cols, double pct);

/// SqueezeLLM: the largest-|w| squeezeOutlierCount() weights (ties: lower row-major index) go to
/// the sparse f16 matrix and get weight 0 in the k-means; every row gets a 2^bits code book by
/// weightedKMeans1d with weights colWeight[j] (cols values, e.g. the diagonal of XᵀX: Σ x_j²;
/// null: 1) or, when given, elemWeight[r·cols + j] (one per weight, e.g. the Fisher diagonal),
/// rounded to f16, each weight coded by its nearest f16 centroid.
PackedTensor squeezeLlmQuantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                                const float* colWeight, const std::string& name,
                                const float* elemWeight = nullptr);

// ---- DGQ ----

/// DGQ's two-phase grid search (in double). Phase 1, per (row, group): the scale s' and integer
/// zero point of the range [α·min(min, 0), α·max(max, 0)] (symmetric: s' = α·absmax / (2^(b−1) −
/// 1)) for α ∈ {1, 0.95, …, 0.5} with the least Σ imp·(w − ŵ)². Phase 2, per row: the channel
/// scale s1 = f16(β · max_g s'_g / 255) for β ∈ {1, 0.95, …, 0.5}, S2 = clamp(round(s'_g / s1), 1,
/// 255), codes re-chosen on S2·s1 with the phase-1 zero point; the β with the least row error is
/// kept. imp: cols importance weights (null: 1).
PackedTensor dgqQuantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                         const float* imp, const std::string& name);
/// The dequantised scale of group g of row r: S2 code × the f16 channel scale.
float dgqGroupScale(const PackedTensor& p, int64_t r, int64_t g);

// ---- SliM-LLM ----

/// SliM-LLM's salience of each column group: Σ over the group's weights of w² / [H⁻¹]_jj², H the
/// dampened Gram XᵀX (cols × cols, damp 0.01·mean diag, dead columns 1 as GPTQ). H null: the
/// diagonal proxy [H⁻¹]_jj = 1 / diagImp_j (diagImp null: 1).
std::vector<double> slimGroupSalience(const float* w, int64_t rows, int64_t cols, int64_t group,
                                      const double* H, const float* diagImp);
/// Bits per group for `fours` groups at 4 bits: groups by descending salience (ties: lower
/// index) get 4 bits for the first n4 = fours, 3 for the next n3 = T − 2G − 2·n4 and 2 for the
/// rest, T = round(avgBits · G). Empty when fours is not feasible (n3 or n2 negative).
std::vector<uint8_t> slimAllocation(const std::vector<double>& salience, double avgBits,
                                    int64_t fours);
/// SliM-LLM's bit allocation: salience, then the feasible allocation (slimAllocation over every
/// count of 4-bit groups) with the least output error tr(ΔHΔᵀ) (H null: Σ diagImp·Δ²) of RTN
/// (asymmetric, lcw's grid) at each group's width. rtnOut (optional): the RTN tensors at 2, 3 and
/// 4 bits. Throws ArgumentError unless the groups divide the row.
std::vector<uint8_t> slimChooseAllocation(const float* w, int64_t rows, int64_t cols,
                                          const WeightSettings& s, const double* H,
                                          const float* diagImp, const std::string& name,
                                          std::vector<PackedTensor>* rtnOut = nullptr);
/// The slim layout from per-element codes [rows, cols] (each below 2^width of its group) and f16
/// scales / zeros [rows, groups]; throws ArgumentError when the arrays do not fit.
PackedTensor slimPack(int64_t rows, int64_t cols, const WeightSettings& s,
                      const std::vector<uint8_t>& groupBits, const std::vector<uint32_t>& codes,
                      const std::vector<uint16_t>& scales, const std::vector<uint16_t>& zeros,
                      const std::string& name);
/// SliM-LLM with RTN groups ("gptq": false): slimChooseAllocation, each group keeping RTN's codes
/// and grid at its width. The GPTQ step ("gptq": true, the default) is gptqQuantizeSlim (gptq.h).
PackedTensor slimQuantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                          const double* H, const float* diagImp, const std::string& name);

/// The group length of slim settings (ArgumentError naming `name` unless it divides the row).
int64_t slimGroupLength(const WeightSettings& s, int64_t cols, const std::string& name);

// ---- shared (quantizer.cpp dispatches here for methodIsCompact) ----

/// The compact method's quantiser; importance as colWeight / imp / diagImp.
PackedTensor quantizeCompact(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                             const std::string& name, const float* importance);
/// Stored bits from the shape and settings alone (== quantizeCompact(...).storageBits()).
uint64_t compactStorageBits(int64_t rows, int64_t cols, const WeightSettings& s);
/// Throws Error naming `name` unless the arrays fit the shape and settings.
void checkCompact(const PackedTensor& p, const std::string& name);
/// Rows [r0, r0 + n) of a checked compact tensor into dst [n, cols].
void dequantizeCompactRows(const PackedTensor& p, int64_t r0, int64_t n, float* dst);

} // namespace lcw::compress
