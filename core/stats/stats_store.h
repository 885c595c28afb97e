#pragma once
/// \file
/// The statistics of a model and calibration run, and their HDF5 file (schema in
/// docs/stats-format.md). Files are keyed by the model fingerprint and a key of the statistics
/// settings, so a model reopened with the same settings shows its statistics without
/// recomputing. Writes are atomic (temporary file in the same folder, then rename).
#include "core/stats/activation_stats.h"
#include "core/stats/tensor_stats.h"
#include "core/stats/weight_stats.h"

#include <string>
#include <vector>

namespace lcw::stats {

/// Everything one `stats` run produces.
struct StatsReport {
    int schemaVersion = 0; ///< as read (kSchemaVersion when written)
    std::string lcwVersion;
    std::string createdUtc;
    std::string modelPath;
    std::string modelFingerprint; ///< modelFingerprint()
    std::string statsKey;         ///< statsKey() of the settings used
    // model shape
    std::string arch;
    int64_t nLayers = 0, dim = 0, nHeads = 0, nKvHeads = 0, headDim = 0, hidden = 0, vocab = 0;
    // settings
    std::vector<PreviewConfig> previews;
    int histBins = 256;
    double histSigma = 0;
    bool hasWeights = false, hasActivations = false;
    CalibrationInfo calibration;
    std::vector<TensorStats> weights;
    std::vector<TensorStats> activations; ///< linear inputs, residuals, K pre/post RoPE, V
    std::string summaryJson;              ///< layerRanking() as JSON text

    const TensorStats* findWeight(const std::string& name) const;
    const TensorStats* findActivation(const std::string& name) const;
};

/// Schema version this build writes and the newest it reads. 2: fixed-length strings only,
/// "order" and the summary JSON as byte datasets, lcw's checksummed userblock
/// (core/common/h5_guard.h). Files of version 1 (variable-length strings, no userblock) are
/// converted in a child process when read.
inline constexpr int kStatsSchemaVersion = 2;

class StatsStore {
public:
    /// Writes the report atomically. Throws Error naming the path on failure; the previous file
    /// (if any) is untouched then.
    static void save(const std::string& path, const StatsReport& report);
    /// Reads a file written by save(). Throws FormatError naming the path when the file is not
    /// HDF5, is corrupt, is another program's HDF5 file, is incomplete, or has a newer schema.
    /// The file's lcw header is checked first (h5::verify: a damaged file is refused without
    /// being parsed); a file without one (older lcw, other programs) is converted by lcw-cli in
    /// a child process (h5::convertInChild) and the converted copy read; the file is not
    /// changed.
    static StatsReport load(const std::string& path);
    /// Reads only the root attributes (version, fingerprints): cheap check whether a file holds
    /// the statistics wanted. Same errors as load().
    static StatsReport loadHeader(const std::string& path);
    /// Reads any lcw statistics file (schema 1 or 2) with libhdf5 directly, without checking a
    /// header, variable-length strings allowed. Only for the converter process
    /// (`lcw-cli h5-convert`): a damaged file can crash libhdf5 here.
    static StatsReport loadLegacyUnverified(const std::string& path);
};

} // namespace lcw::stats
