#pragma once
/// \file
/// An overlay folder (overlay.json + overlay.safetensors) as one unit on disk.
///
/// Writing: commitOverlayFolder() has both files written into a temporary folder beside the
/// target (core/common/temp_files.h names it) and renames that folder into place, swapping it
/// atomically with an existing overlay folder (renameat2 RENAME_EXCHANGE; two renames where the
/// file system lacks it). A reader sees the old pair or the new pair, never one of each. A
/// folder that holds other files besides an overlay is not replaced: there both files are
/// written in place, each atomically, the JSON last, and the content hash below binds them.
///
/// Content hash: overlay.json records, under "content_hash", the size and a SHA-256 tree hash
/// of overlay.safetensors (SHA-256 over the SHA-256 digests of its consecutive 16 MiB pieces,
/// which are hashed in parallel): a JSON from one save and tensors from another, or a truncated
/// or altered tensor file, are refused on load. Overlays written before the hash existed have no
/// "content_hash" and still load (unchecked).
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

namespace lcw::compress {

/// {"file": "overlay.safetensors", "bytes": N, "algorithm": "sha256-tree-16MiB", "sha256": hex}
/// for the file at `path`. Throws FormatError naming it when it cannot be read.
nlohmann::ordered_json overlayContentHash(const std::string& path);

/// Checks `tensorsPath` against the "content_hash" recorded in the overlay JSON `j` (read from
/// `jsonPath`); returns false (nothing checked) when `j` has none (an older overlay). Throws
/// FormatError naming the tensor file and "content hash mismatch" when size or hash differ, or
/// naming `jsonPath` when the record is malformed.
bool verifyOverlayContentHash(const nlohmann::json& j, const std::string& jsonPath,
                              const std::string& tensorsPath);

/// Writes the overlay folder `dir` as one unit: `writeInto(folder)` writes overlay.safetensors
/// and overlay.json into `folder` (a fresh temporary folder, or `dir` itself when `dir` holds
/// other files). Creates the parent folders. On any failure the temporary folder is removed and
/// `dir` is as it was. Throws Error naming `dir`.
void commitOverlayFolder(const std::string& dir,
                         const std::function<void(const std::string& folder)>& writeInto);

} // namespace lcw::compress
