#pragma once
/// \file
/// Streaming atomic file writer: bytes go to a temporary file in the target's folder, and
/// commit() fsyncs and renames it into place. Nothing is held in memory beyond a small buffer,
/// so multi-GB files can be written. If commit() is never reached (error, exception), the
/// destructor removes the temporary file and the old target stays untouched.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

class AtomicFileWriter {
public:
    /// Creates the temporary file. Throws Error naming `path` when that is impossible.
    explicit AtomicFileWriter(std::string path);
    ~AtomicFileWriter();
    AtomicFileWriter(const AtomicFileWriter&) = delete;
    AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

    /// Appends bytes. Throws Error on write failure.
    void write(const void* bytes, size_t n);
    void write(const std::string& s) { write(s.data(), s.size()); }
    /// Appends n zero bytes (padding).
    void writeZeros(size_t n);
    /// Bytes written so far.
    uint64_t size() const { return m_written; }
    /// Flushes, fsyncs and renames the temporary file onto the target. Throws Error.
    void commit();
    const std::string& path() const { return m_path; }

private:
    void flushBuffer();
    std::string m_path;
    std::string m_tmp;
    int m_fd = -1;
    std::vector<char> m_buf;
    size_t m_bufUsed = 0;
    uint64_t m_written = 0;
    bool m_committed = false;
};

} // namespace lcw
