#pragma once
/// \file
/// Structured pruning: removing whole MLP intermediate channels (rows of gate/up, columns of
/// down) or whole attention KV groups (the q rows and o columns of the query heads that share a
/// KV head, plus that KV head's k and v rows), which physically shrinks the shapes. Removing
/// whole KV groups keeps the query-head → KV-head mapping (heads / kv heads) of GQA intact.
///
/// A unit's importance (unit = one channel or one KV group; its "output block" is its columns
/// in down / o):
///   magnitude: Σ of the squared weights of the unit over all its matrices;
///   wanda:     Σ_i Σ_{j∈unit} |W_out[i, j]|·||X_j||₂ (X = the input of down / o);
///   loss:      tr(W_out[:, unit] · H[unit, unit] · W_out[:, unit]ᵀ) with H the Gram matrix of
///              the input of down / o: the squared calibration-output change when that unit
///              alone is removed.
#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

enum class StructuredScore { Magnitude, Wanda, Loss };
const char* structuredScoreName(StructuredScore s); // "magnitude", "wanda", "loss"

struct StructuredSettings {
    double mlpRatio = 0;  ///< fraction of MLP intermediate channels removed
    double headRatio = 0; ///< fraction of KV groups (with their query heads) removed
    StructuredScore score = StructuredScore::Magnitude;
    bool needsCalibration() const { return score != StructuredScore::Magnitude; }
    bool active() const { return mlpRatio > 0 || headRatio > 0; }
};

/// A row-major matrix and which of its dimensions is indexed by the units.
struct UnitMatrix {
    const float* w = nullptr;
    int64_t rows = 0, cols = 0;
    bool unitsAreRows = true; ///< true: unit u owns rows [u·width, (u+1)·width)
    int64_t width = 1;        ///< rows or columns per unit
};

/// Importance of each of `units` units. `out` is the output projection (units are column blocks);
/// `inputs` the input projections (row blocks), used by magnitude only. colNorm (||X_j||₂ of
/// out's input) for wanda, H (Gram of out's input, cols × cols) for loss.
std::vector<double> unitImportance(int64_t units, const UnitMatrix& out,
                                   const std::vector<UnitMatrix>& inputs, const double* colNorm,
                                   const double* H, StructuredScore score);

/// Units kept: the units − round(ratio·units) most important (at least 1), in ascending order
/// (ties: the lower index is kept).
std::vector<int64_t> keptUnits(const std::vector<double>& importance, double ratio);

/// Gathers the row blocks (or column blocks) of the kept units into a new row-major matrix.
std::vector<float> gatherUnits(const UnitMatrix& m, const std::vector<int64_t>& kept);

} // namespace lcw::compress
