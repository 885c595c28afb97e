#pragma once
/// \file
/// The Hugging Face hub cache layout (~/.cache/huggingface/hub/models--org--name):
///   refs/main            the commit hash of the "main" revision (other refs alike)
///   snapshots/<hash>/    config.json, *.safetensors, tokenizer.json ... (symlinks into blobs/)
///   blobs/<sha>          the file contents
/// Model::load accepts such a folder and opens the snapshot refs/main names, else the newest
/// snapshot (by modification time); the GUI offers a choice when there are several.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lcw {

struct HfSnapshot {
    std::string path;              ///< snapshots/<hash>
    std::string hash;              ///< the folder name
    std::vector<std::string> refs; ///< names of the refs/ files that point at it ("main", ...)
    int64_t mtime = 0;             ///< modification time, seconds since the epoch (for sorting)
};

/// True when `folder` looks like a hub cache repository folder: it has a snapshots/ subfolder and
/// its name starts with "models--" (or it also has refs/ or blobs/).
bool isHfCacheRepo(const std::string& folder);

/// The snapshots of a hub cache repository folder: the one refs/main names first, then the others
/// newest first. Empty when there are none.
std::vector<HfSnapshot> listHfSnapshots(const std::string& repoFolder);

struct HfCacheResolution {
    std::string path;   ///< what to load: the snapshot folder (or its only .gguf file)
    std::string reason; ///< e.g. "snapshot 1a2b3c… (refs/main) of models--org--name"
    int snapshotCount = 0;
};

/// For a hub cache repository folder: the snapshot to open (refs/main's, else the newest), with a
/// sentence saying which; nullopt for any other path. A snapshot without config.json but with
/// exactly one .gguf file resolves to that file. Throws FormatError naming the folder when it has
/// no snapshot.
std::optional<HfCacheResolution> resolveHfCache(const std::string& path);

/// The loadable path inside one snapshot folder (the folder, or its only .gguf file when it has
/// no config.json).
std::string hfSnapshotLoadPath(const std::string& snapshotFolder);

} // namespace lcw
