#pragma once
/// \file
/// The one naming scheme for the temporary files and folders of lcw's atomic writes, and the
/// cleanup of those a killed process left behind.
///
/// Every atomic write of TARGET (a file or an overlay folder) first creates its temporary beside
/// it, in the same folder, named
///
///     .NAME.tmp.PID.XXXXXX        (NAME = TARGET's file name, PID = the writer's process id,
///                                  XXXXXX = 6 random letters or digits from mkstemp/mkdtemp)
///
/// and renames it onto TARGET when complete. A write that fails, throws or is cancelled removes
/// its temporary itself; one killed by a signal (kill -9, power loss) cannot, so every new
/// temporary for TARGET is created only after removeStaleTemps(TARGET) removed the stale ones of
/// the same TARGET. Stale means all of:
///   - the name is exactly lcw's scheme for this TARGET (or one of the two older schemes:
///     `.NAME.tmpXXXXXX` and `NAME.tmp.PID`), never any other file;
///   - it is a regular file or a real folder (no symlink), owned by this user;
///   - it has not been modified for kStaleGraceSeconds (60 s): a live writer keeps writing;
///   - and its writer is gone: the PID is not a running process here, or the name carries no
///     PID (the older `.NAME.tmpXXXXXX`), or it has not been modified for kStaleHours (24 h:
///     a PID that was reused by another process after a crash).
/// Temporaries of other targets, and any other file, are never touched.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lcw {

inline constexpr int64_t kStaleGraceSeconds = 60;
inline constexpr int64_t kStaleHours = 24;

/// The temporary file for `target`: removes stale temporaries of `target`, then creates
/// DIR/.NAME.tmp.PID.XXXXXX (mode 0600, close-on-exec) and returns its open descriptor; the
/// path goes to `tmpPath`. Throws Error naming `target` when it cannot be created.
int createTempFileFor(const std::string& target, std::string& tmpPath);

/// The same, for writers that open the file themselves by name (HDF5): the file is created
/// (empty) and closed; returns its path.
std::string createTempPathFor(const std::string& target);

/// The temporary folder for a folder `target` (an overlay): removes stale temporaries of
/// `target`, then creates DIR/.NAME.tmp.PID.XXXXXX (mode 0700). Throws Error naming `target`.
std::string createTempDirFor(const std::string& target);

/// Removes the stale temporaries of `target` (see the file comment); returns how many. Never
/// throws (a temporary that cannot be removed stays).
size_t removeStaleTemps(const std::string& target);

/// True when `fileName` is a temporary name of lcw's for the target file name `targetName`
/// (current or older scheme). `pid` gets the PID in the name, or -1 when the scheme has none.
bool isTempNameOf(std::string_view fileName, std::string_view targetName, int64_t* pid = nullptr);

} // namespace lcw
