#pragma once
/// \file
/// Weight pruning of one linear layer W [rows = outputs, cols = inputs], row-major float32:
/// magnitude, Wanda (|W_ij|·||X_j||₂, compared within each output row) and SparseGPT (OBS-style
/// column sweep with the upper Cholesky factor of the damped inverse Gram matrix, lazy blocks and
/// adaptive mask selection per block), each with the patterns unstructured (one threshold over
/// the whole matrix), per-row uniform (the same count in every row) and N:M (at most N non-zeros
/// in every M consecutive inputs of a row). Masks are 1 = kept, one byte per weight here;
/// CompressedModel stores them bit-packed.
#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

enum class SparsityMethod { Magnitude, Wanda, SparseGpt };
enum class SparsityPattern { Unstructured, PerRow, NM };
/// How many weights SparseGPT prunes in each lazy block of B columns (unstructured / per-row).
enum class SparsityCount {
    /// IST-DASLab/sparsegpt sparsegpt.py fasterprune: the scores w²/[H⁻¹]²_cc of the block
    /// (unstructured: all rows·B; per-row: each row's B) are sorted, thresh = sorted[int(n·ratio)]
    /// and every weight with score <= thresh is pruned: int(n·ratio) + 1 per block, more when
    /// scores tie at the threshold (e.g. inputs that are never active), and one weight per block
    /// even at ratio 0.
    Reference,
    /// lcw's exact count: the lowest round(ratio·rows·i2) − round(ratio·rows·i1) scores of block
    /// [i1, i2) (per-row: round(ratio·i2) − round(ratio·i1) per row; ties: the higher index
    /// goes), so the matrix holds exactly round(ratio·rows·cols) (per-row: round(ratio·cols) per
    /// row) pruned weights as magnitude and Wanda prune.
    Exact,
};
const char* sparsityCountName(SparsityCount c); // "reference", "exact"

const char* sparsityMethodName(SparsityMethod m);   // "magnitude", "wanda", "sparsegpt"
const char* sparsityPatternName(SparsityPattern p); // "unstructured", "per_row", "n:m"

struct SparsitySettings {
    SparsityMethod method = SparsityMethod::Magnitude;
    SparsityPattern pattern = SparsityPattern::Unstructured;
    double ratio = 0.5;      ///< fraction of weights set to zero (unstructured / per-row)
    int n = 2, m = 4;        ///< N:M: keep N of every M
    int64_t blockSize = 128; ///< SparseGPT lazy-update block (rounded to a multiple of M)
    double damp = 0.01;      ///< SparseGPT: λ = damp · mean(diag H) added to the diagonal
    /// SparseGPT unstructured / per-row: the count rule per lazy block (N:M and the other
    /// methods ignore it).
    SparsityCount count = SparsityCount::Reference;
    /// "50% unstructured magnitude", "2:4 sparsegpt", "50% unstructured sparsegpt (exact count)".
    std::string describe() const;
    bool needsCalibration() const { return method != SparsityMethod::Magnitude; }
};

/// Number of weights the pattern prunes in a [rows, cols] matrix:
///   unstructured: round(ratio·rows·cols); per-row: rows·round(ratio·cols);
///   N:M: per row, (M−N) per full group and, for a last partial group of k < M inputs,
///   k − ceil(k·N/M) (so the group still has at most N non-zeros);
///   SparseGPT with SparsityCount::Reference (unstructured / per-row): per lazy block of
///   bw = min(blockSize, cols − i1) columns, int(rows·bw·ratio) + 1 (per-row:
///   rows·(int(bw·ratio) + 1)) — exact unless scores tie at a block's threshold, when
///   pruneSparseGpt prunes the tied weights too (the result's mask has the true count).
int64_t prunedCount(int64_t rows, int64_t cols, const SparsitySettings& s);

/// Mask keeping the highest scores under the pattern (ties: the lower index is kept).
/// Wanda-style callers pass PerRow for Unstructured (see pruneWanda).
std::vector<uint8_t> selectMask(const float* score, int64_t rows, int64_t cols,
                                SparsityPattern pattern, double ratio, int n, int m);

struct PruneResult {
    std::vector<float> w;      ///< pruned (SparseGPT: and updated) weights, rows·cols
    std::vector<uint8_t> mask; ///< 1 = kept
};

/// Magnitude pruning (score |W|).
PruneResult pruneMagnitude(const float* w, int64_t rows, int64_t cols, const SparsitySettings& s);
/// Wanda: score |W_ij|·colNorm[j] with colNorm[j] = ||X_j||₂ over the calibration tokens; the
/// unstructured pattern is compared per output row, as in the paper.
PruneResult pruneWanda(const float* w, int64_t rows, int64_t cols, const double* colNorm,
                       const SparsitySettings& s);
/// SparseGPT with Gram matrix H = XᵀX (cols × cols, row-major, double). Inputs whose diagonal is
/// zero (never active) are pruned first. `name` names the layer in errors.
PruneResult pruneSparseGpt(const float* w, int64_t rows, int64_t cols, const double* H,
                           const SparsitySettings& s, const std::string& name);

/// Dispatch on s.method; colNorm / H may be null for magnitude. Throws ArgumentError naming the
/// layer when a method's calibration statistics are missing.
PruneResult prune(const float* w, int64_t rows, int64_t cols, const double* H,
                  const double* colNorm, const SparsitySettings& s, const std::string& name);

/// Layer-output error on calibration statistics: ||(W − Ŵ)X ᵀ||_F² = tr(D H Dᵀ), D = W − Ŵ.
double outputError(const float* w, const float* wq, int64_t rows, int64_t cols, const double* H);
/// ||W X ᵀ||_F² = tr(W H Wᵀ) (to turn outputError into a relative error).
double outputEnergy(const float* w, int64_t rows, int64_t cols, const double* H);

/// True when every group of M consecutive inputs of every row holds at most N kept weights.
bool checkNM(const uint8_t* mask, int64_t rows, int64_t cols, int n, int m);

/// Bit-packed mask (LSB first, rows·cols bits, no row padding) and back.
std::vector<uint8_t> packMask(const std::vector<uint8_t>& mask);
std::vector<uint8_t> unpackMask(const std::vector<uint8_t>& bits, int64_t count);

/// Stored bits of the sparsity metadata of a [rows, cols] weight with `kept` stored values:
///   N:M: ceil(log2 M) bits of in-group index per kept value (NVIDIA's 2:4 format: 2 bits);
///   unstructured / per-row: the smaller of a bitmask (rows·cols bits) and CSR (32-bit column
///   index per kept value + 32-bit row pointer per row + 1).
/// The kept values themselves are counted by the caller (see docs/recipe-format.md).
uint64_t sparsityMetadataBits(int64_t rows, int64_t cols, int64_t kept, const SparsitySettings& s);

} // namespace lcw::compress
