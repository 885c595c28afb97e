#pragma once
/// \file
/// Read-only memory map of a whole file. Weights are used in place from the map: nothing is
/// copied at load, and pages come in as the runtime touches them.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lcw {

class MappedFile {
public:
    /// Maps `path` read-only. Throws FormatError naming the file if it cannot be opened/mapped.
    /// An empty file maps to data()==nullptr, size()==0.
    static std::shared_ptr<const MappedFile> open(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::byte* data() const { return m_data; }
    uint64_t size() const { return m_size; }
    const std::string& path() const { return m_path; }
    /// True when [offset, offset+len) lies inside the file (overflow-safe).
    bool contains(uint64_t offset, uint64_t len) const {
        return offset <= m_size && len <= m_size - offset;
    }

    /// Drops the pages of [p, p + n) from this process's resident set when the range lies in a
    /// live mapping made by open() (file pages stay in the page cache; a later read faults them
    /// back in). Does nothing for any other memory. For streaming passes over whole models
    /// (export) whose peak resident memory should stay well below the model size.
    static void releasePages(const void* p, uint64_t n);

private:
    MappedFile() = default;
    std::string m_path;
    const std::byte* m_data = nullptr;
    uint64_t m_size = 0;
};

/// Reads a whole (small) text file; throws FormatError naming it when missing/unreadable.
std::string readTextFile(const std::string& path);

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsync, then rename.
/// On failure the old file is untouched and the temp file removed. Throws Error.
void writeFileAtomic(const std::string& path, const void* bytes, size_t n);
void writeFileAtomic(const std::string& path, const std::string& text);

} // namespace lcw
