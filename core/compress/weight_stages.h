#pragma once
/// \file
/// The weight stages of compress(), block by block in model order, in this order per layer:
///   structured pruning (shrinks a block's MLP channels / KV groups) →
///   low-rank factorisation → pruning (unstructured, per-row or N:M) → quantisation.
/// Statistics of the linear inputs (Gram XᵀX, mean squares) are captured for a block just before
/// it is compressed, running opts.calibration through the overlay built so far (earlier blocks
/// already compressed), whenever a calibration set is given and the block is pruned or
/// factorised. Each stage's weight and calibration-output error is reported separately.
#include "core/common/progress.h"
#include "core/compress/compressed_model.h"

namespace lcw::compress {

/// Fills `cm` with the plan's layers and `layers` / `structured` with their reports. Throws
/// RecipeError / ArgumentError / UnsupportedError naming the layer for settings that cannot be
/// applied. Returns Cancelled when progress asked to stop.
Status applyWeightStages(const Model& base, const Plan& plan, const CompressOptions& opts,
                         CompressedModel& cm, std::vector<LayerReport>& layers,
                         std::vector<StructuredReport>& structured, double& captureSeconds,
                         Progress& progress);

} // namespace lcw::compress
