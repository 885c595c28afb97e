#pragma once
/// \file
/// One call that computes everything `lcw-cli stats` shows: weight statistics, activation and
/// KV statistics from calibration text, and the layer ranking; plus the key that identifies the
/// settings in the store.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/stats/stats_store.h"

#include <nlohmann/json.hpp>

#include <string>

namespace lcw {
class Model;
}

namespace lcw::stats {

struct StatsOptions {
    bool weights = true;
    bool activations = true; ///< needs a tokenizer
    WeightStatsOptions weight;
    CalibrationOptions calibration;
};

/// "sha256:<hex>" of the settings that change the numbers: previews, histogram settings, which
/// parts, and (with activations) the calibration file's SHA-256, samples and sequence length.
/// Reads the calibration file to hash it.
std::string statsKey(const StatsOptions& opts);

/// Computes the report (modelFingerprint, statsKey, calibration record and summary filled in).
/// Progress: weights take the first part, calibration the rest. Returns Cancelled, with `out`
/// left incomplete and not to be saved, when the sink asks to stop.
Status computeStats(const Model& model, const StatsOptions& opts, StatsReport& out,
                    Progress& progress);

/// computeStats(), then StatsStore::save() to `path` only when the run completed: a cancelled
/// run writes nothing (no partial file, no temporary file left behind).
Status computeAndSaveStats(const Model& model, const StatsOptions& opts, const std::string& path,
                           StatsReport& out, Progress& progress);

/// The layer ranking and headline numbers as one JSON object (shape in docs/stats-format.md):
/// blocks ranked by weight outlier ratio, weight kurtosis, quantization-preview error and
/// activation outlier ratio (rank 1 = most outlier-prone, by mean rank over the criteria).
nlohmann::ordered_json layerRanking(const StatsReport& r);

/// Mean over layers of channelUnevenness() for sites of one kind ("k", "k_pre_rope", "v").
double meanUnevenness(const StatsReport& r, const std::string& kind);

} // namespace lcw::stats
