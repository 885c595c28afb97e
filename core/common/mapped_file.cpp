#include "core/common/mapped_file.h"


#include "core/common/error.h"
#include "core/common/temp_files.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <mutex>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace lcw {

namespace {
// Live mappings, for releasePages (which must never touch anonymous memory).
std::mutex g_mapsMutex;
std::vector<const MappedFile*> g_maps;
} // namespace

void MappedFile::releasePages(const void* p, uint64_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    std::lock_guard<std::mutex> lock(g_mapsMutex);
    for (const MappedFile* m : g_maps) {
        if (b < m->m_data || n > m->m_size || b - m->m_data > std::ptrdiff_t(m->m_size - n))
            continue;
        const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
        const uintptr_t lo = (uintptr_t(b) + page - 1) / page * page;
        const uintptr_t hi = (uintptr_t(b) + n) / page * page;
        if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), size_t(hi - lo), MADV_DONTNEED);
        return;
    }
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
        throw FormatError(path, "is a folder, expected a file");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw FormatError(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        throw FormatError(path, std::string("cannot stat: ") + std::strerror(err));
    }
    std::shared_ptr<MappedFile> f(new MappedFile());
    f->m_path = path;
    f->m_size = uint64_t(st.st_size);
    if (f->m_size > 0) {
        void* p = ::mmap(nullptr, size_t(f->m_size), PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            throw FormatError(path, std::string("cannot memory-map: ") + std::strerror(err));
        }
        f->m_data = static_cast<const std::byte*>(p);
    }
    ::close(fd); // the mapping keeps the file alive
    if (f->m_data) {
        std::lock_guard<std::mutex> lock(g_mapsMutex);
        g_maps.push_back(f.get());
    }
    return f;
}

MappedFile::~MappedFile() {
    if (!m_data) return;
    {
        std::lock_guard<std::mutex> lock(g_mapsMutex);
        g_maps.erase(std::remove(g_maps.begin(), g_maps.end(), this), g_maps.end());
    }
    // In pieces: unmapping holds the process's memory-map lock, and tearing down gigabytes of
    // touched pages at once would stall every other thread that page-faults or allocates
    // meanwhile (the UI thread of the workbench, say) for a noticeable fraction of a second.
    constexpr size_t kPiece = size_t(64) << 20; // a multiple of any page size
    auto* p = const_cast<std::byte*>(m_data);
    for (size_t off = 0, n = size_t(m_size); off < n; off += kPiece)
        ::munmap(p + off, std::min(kPiece, n - off));
}

std::string readTextFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FormatError(path, "cannot open (missing or unreadable)");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw FormatError(path, "read error");
    return ss.str();
}

void writeFileAtomic(const std::string& path, const void* bytes, size_t n) {
    std::string tmpl;
    const int fd = createTempFileFor(path, tmpl); // also removes stale temporaries of path
    const char* p = static_cast<const char*>(bytes);
    size_t left = n;
    while (left > 0) {
        const ssize_t w = ::write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            ::close(fd);
            ::unlink(tmpl.c_str());
            throw Error(path + ": write failed: " + std::strerror(err));
        }
        p += w;
        left -= size_t(w);
    }
    ::fchmod(fd, 0644);
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        const int err = errno;
        ::unlink(tmpl.c_str());
        throw Error(path + ": cannot flush: " + std::strerror(err));
    }
    if (::rename(tmpl.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmpl.c_str());
        throw Error(path + ": cannot rename temporary file into place: " + std::strerror(err));
    }
}

void writeFileAtomic(const std::string& path, const std::string& text) {
    writeFileAtomic(path, text.data(), text.size());
}

} // namespace lcw
