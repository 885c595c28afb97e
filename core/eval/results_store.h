#pragma once
/// \file
/// The results store: every evaluation as one JSON object per line in a JSON-lines file
/// (default $XDG_DATA_HOME/lcw/results.jsonl, else ~/.local/share/lcw/results.jsonl).
///
/// A record holds at least "id" and "timestamp" (UTC, ISO 8601); lcw-cli eval writes the
/// model path and fingerprint, the data file and its SHA-256, the settings, the lcw version and
/// one entry per configuration (recipe JSON or compare-model path and fingerprint, metrics,
/// timings); see README "Results store". Appends are atomic: each record is written with one
/// write() on a file opened with O_APPEND, so concurrent writers never interleave and a crash
/// leaves at most one incomplete last line, which the loader skips with a warning.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace lcw {

/// $XDG_DATA_HOME/lcw/results.jsonl, or $HOME/.local/share/lcw/results.jsonl.
std::string defaultResultsPath();

/// Current UTC time as "2026-11-23T21:04:05Z".
std::string utcTimestamp();

/// A new record id: "YYYYMMDD-HHMMSS-xxxxxx" (UTC time and 6 random hex digits).
std::string newResultId();

/// Appends `record` (one line, compact JSON) to `path`, creating the file and its folders.
/// Fills "id" and "timestamp" when absent. Throws Error when the file cannot be written.
/// Returns the record's id.
std::string appendResult(const std::string& path, nlohmann::ordered_json record);

struct ResultsFile {
    std::vector<nlohmann::ordered_json> records; ///< in file order
    /// "<path>: line N: <problem>, skipped" for each line that is not a JSON object with an "id".
    std::vector<std::string> warnings;
};

/// Reads every record; a missing file gives no records. Corrupt lines are skipped with a
/// warning, never the others. Throws FormatError only when the file exists but cannot be read.
ResultsFile loadResults(const std::string& path);

/// The record whose id equals `id`, else the only one whose id starts with it; nullptr when none.
/// Throws ArgumentError when a prefix matches several records.
const nlohmann::ordered_json* findResult(const ResultsFile& f, const std::string& id);

} // namespace lcw
