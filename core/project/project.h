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
    /// Version this build writes and the newest it reads. 2: fixed-length strings only and
    /// lcw's checksummed userblock (core/common/h5_guard.h); version 1 files are converted in a
    /// child process when opened.
    static constexpr int kVersion = 2;
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
/// corrupt or incomplete, or has a newer version. The lcw header is checked first (a damaged
/// file is refused without being parsed); a file without one (version 1, other programs) is
/// converted by lcw-cli in a child process and the converted copy read (the file itself is not
/// changed; the next save writes version 2).
Project load(const std::string& path);
/// Reads any lcw project (version 1 or 2) with libhdf5 directly, without checking a header,
/// variable-length strings allowed. Only for the converter process (`lcw-cli h5-convert`): a
/// damaged file can crash libhdf5 here.
Project loadLegacyUnverified(const std::string& path);

} // namespace lcw::project
