#pragma once
/// \file
/// Guards lcw's HDF5 files (statistics, projects) against libhdf5, which is not safe with
/// damaged or hostile input. Every file lcw writes starts with a 512-byte HDF5 userblock holding
/// a magic, the kind of file, its schema version, the payload length and a SHA-256 of everything
/// after the userblock. Before libhdf5 sees a file, verify() checks that header with plain file
/// I/O: a file that fails is refused, never parsed. A file without the header (an older lcw
/// file, another program's HDF5 file) is converted by `lcw-cli h5-convert` in a child process
/// (convertInChild()), so that a crash of libhdf5 becomes an error message. No HDF5 code here.
#include <chrono>
#include <cstdint>
#include <string>

namespace lcw::h5 {

/// Size of the userblock of every HDF5 file lcw writes (H5Pset_userblock).
inline constexpr uint64_t kUserblockSize = 512;

/// What a file holds (recorded in its userblock; a file of another kind is refused).
enum class Kind { Stats, Project };
/// "stats", "project"
const char* kindName(Kind k);
/// "statistics file", "project file"
const char* kindNoun(Kind k);
/// Kind named `name` ("stats", "project"); false when unknown.
bool parseKind(const std::string& name, Kind& out);

/// Writes the userblock header into `path`, an HDF5 file that was created with a
/// kUserblockSize userblock and is closed: hashes bytes [kUserblockSize, EOF) and writes the
/// header at offset 0 (not fsynced: the caller fsyncs before renaming). Throws Error.
void seal(const std::string& path, Kind kind, int schemaVersion);

enum class Check {
    Verified,   ///< lcw header present and valid: the file is exactly as lcw wrote it
    NoUserblock ///< no lcw header at all: an older lcw file, a foreign file, or not HDF5
};

/// Checks `path` with plain file I/O (never libhdf5). Throws FormatError naming the file when
/// it has an lcw header that does not hold: damaged or modified ("checksum mismatch"),
/// truncated, another kind of lcw file, or a schema version outside 1..maxVersion.
Check verify(const std::string& path, Kind kind, int maxVersion);

/// Whether the file carries the HDF5 signature where libhdf5 looks for it (offset 0, 512,
/// 1024, ...). Plain file I/O.
bool hasHdf5Signature(const std::string& path);

/// The converter run for files without an lcw header: an lcw-cli executable. Set by
/// setConverter() (tests), else $LCW_CLI, else `lcw-cli` beside this executable or one folder
/// up (the build tree's app/gui/lcw beside app/lcw-cli), else in $PATH; empty when none.
std::string converterExecutable();
/// Overrides the converter (empty: back to the search above).
void setConverter(const std::string& executable);
/// Time limit of one conversion; zero (the default) means 5 s plus 1 s per 16 MiB of the file,
/// at most 600 s.
void setConverterTimeout(std::chrono::milliseconds timeout);

/// A temporary folder, removed with its contents on destruction.
class TempDir {
public:
    explicit TempDir(const std::string& prefix);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return m_path; }

private:
    std::string m_path;
};

/// Converts `path`, an HDF5 file without a valid lcw header, in a child process
/// (`lcw-cli h5-convert PATH OUT --kind KIND`, which reads it with the legacy reader and writes
/// a new, sealed file) into `dir`; returns the converted file, verified. The file at `path` is
/// not changed. Throws FormatError naming `path` when the file is not HDF5, when no converter
/// is found, when the converter refuses the file (its message), crashes ("the file crashed the
/// HDF5 reader (signal 11 ...)") or runs past the time limit.
std::string convertInChild(const std::string& path, Kind kind, int maxVersion, const TempDir& dir);

/// Counts the files handed to libhdf5 for reading in this process (the readers call
/// noteLibraryOpen() right before opening): tests check that a refused file never got there.
void noteLibraryOpen();
uint64_t libraryOpens();

} // namespace lcw::h5
