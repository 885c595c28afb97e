#include "core/io/atomic_writer.h"

#include "core/common/error.h"
#include "core/common/temp_files.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lcw {

namespace {
constexpr size_t kBufSize = size_t(4) << 20;
}

AtomicFileWriter::AtomicFileWriter(std::string path) : m_path(std::move(path)) {
    m_fd = createTempFileFor(m_path, m_tmp); // also removes stale temporaries of m_path
    m_buf.resize(kBufSize);
}

AtomicFileWriter::~AtomicFileWriter() {
    if (!m_committed) {
        if (m_fd >= 0) ::close(m_fd);
        ::unlink(m_tmp.c_str());
    }
}

void AtomicFileWriter::flushBuffer() {
    const char* p = m_buf.data();
    size_t left = m_bufUsed;
    while (left > 0) {
        const ssize_t w = ::write(m_fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw Error(m_path + ": write failed: " + std::strerror(errno));
        }
        p += w;
        left -= size_t(w);
    }
    m_bufUsed = 0;
}

void AtomicFileWriter::write(const void* bytes, size_t n) {
    if (m_committed || m_fd < 0) throw Error(m_path + ": write after commit");
    const char* p = static_cast<const char*>(bytes);
    m_written += n;
    if (n >= m_buf.size()) {
        // Large blocks (whole tensors) go straight to the file without another copy.
        flushBuffer();
        while (n > 0) {
            const ssize_t w = ::write(m_fd, p, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                throw Error(m_path + ": write failed: " + std::strerror(errno));
            }
            p += w;
            n -= size_t(w);
        }
        return;
    }
    while (n > 0) {
        const size_t room = m_buf.size() - m_bufUsed;
        const size_t k = n < room ? n : room;
        std::memcpy(m_buf.data() + m_bufUsed, p, k);
        m_bufUsed += k;
        p += k;
        n -= k;
        if (m_bufUsed == m_buf.size()) flushBuffer();
    }
}

void AtomicFileWriter::writeZeros(size_t n) {
    static const char zeros[256] = {};
    while (n > 0) {
        const size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
        write(zeros, k);
        n -= k;
    }
}

void AtomicFileWriter::commit() {
    if (m_committed) return;
    flushBuffer();
    ::fchmod(m_fd, 0644);
    if (::fsync(m_fd) != 0) throw Error(m_path + ": cannot flush: " + std::strerror(errno));
    const int fd = m_fd;
    m_fd = -1;
    if (::close(fd) != 0) throw Error(m_path + ": cannot close: " + std::strerror(errno));
    if (::rename(m_tmp.c_str(), m_path.c_str()) != 0)
        throw Error(m_path + ": cannot rename temporary file into place: " + std::strerror(errno));
    m_committed = true;
}

} // namespace lcw
