#pragma once
/// \file
/// A workbench project in one HDF5 file: the model (path and fingerprint), its statistics (the
/// bytes of a statistics store file, so reopening needs no recomputation), the recipes and the
/// comparison results (JSON texts), and free-form UI state. Writes are atomic (temporary file in
/// the same folder, then rename); the root carries a format name and version.
#include "core/common/error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw::project {

/// A named JSON document (a recipe, a result set, ...).
struct NamedJson {
    std::string name;
    std::string json; ///< JSON text
    bool operator==(const NamedJson&) const = default;
};

struct Project {
    /// Version this build writes and the newest it reads.
    static constexpr int kVersion = 1;
    int version = kVersion; ///< as read
    std::string modelPath;
    std::string modelFingerprint; ///< stats::modelFingerprint() of the model
    std::string savedUtc;         ///< set by save()
    /// Content of a statistics store file (StatsStore::save), empty when none; statsName is the
    /// file name it had (the statistics cache key).
    std::vector<uint8_t> statsFile;
    std::string statsName;
    std::vector<NamedJson> recipes;
    std::vector<NamedJson> results;
    std::string uiState; ///< JSON text owned by the GUI (empty: none)
};

/// Writes the project atomically; throws Error naming the path (the old file is kept then).
void save(const std::string& path, const Project& p);
/// Reads a project; throws FormatError naming the path when the file is not an lcw project, is
/// corrupt or incomplete, or has a newer version.
Project load(const std::string& path);

} // namespace lcw::project
