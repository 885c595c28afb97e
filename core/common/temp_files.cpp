#include "core/common/temp_files.h"

#include "core/common/error.h"

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lcw {

namespace {

namespace fs = std::filesystem;

bool isDigits(std::string_view s) {
    if (s.empty() || s.size() > 10) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

/// mkstemp/mkdtemp's six characters: letters and digits.
bool isRandomSuffix(std::string_view s) {
    if (s.size() != 6) return false;
    for (char c : s) {
        const bool alnum =
            (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum) return false;
    }
    return true;
}

int64_t toPid(std::string_view digits) {
    int64_t v = 0;
    for (char c : digits) v = v * 10 + (c - '0');
    return v;
}

/// True unless `pid` is certainly not a running process on this machine.
bool processAlive(int64_t pid) {
    if (pid <= 0 || pid > INT32_MAX) return false;
    if (pid == int64_t(::getpid())) return true;
    if (::kill(pid_t(pid), 0) == 0) return true;
    return errno != ESRCH; // EPERM: alive, another user's
}

/// Newest modification time of a temporary: the file's, or for a folder the newest of the folder
/// and its entries (a writer fills a file inside it).
std::time_t newestMtime(const std::string& path, const struct stat& st) {
    std::time_t t = st.st_mtime;
    if (!S_ISDIR(st.st_mode)) return t;
    DIR* d = ::opendir(path.c_str());
    if (!d) return t;
    while (const dirent* e = ::readdir(d)) {
        const std::string_view n = e->d_name;
        if (n == "." || n == "..") continue;
        struct stat es {};
        if (::lstat((path + "/" + e->d_name).c_str(), &es) == 0 && es.st_mtime > t) t = es.st_mtime;
    }
    ::closedir(d);
    return t;
}

fs::path folderOf(const fs::path& target) {
    return target.has_parent_path() ? target.parent_path() : fs::path(".");
}

/// DIR/.NAME.tmp.PID.XXXXXX as a mkstemp template.
std::string tempTemplate(const std::string& target) {
    fs::path t(target);
    if (!t.has_filename()) t = t.parent_path(); // "dir/" names the folder "dir"
    std::string name = ".";
    name += t.filename().string();
    name += ".tmp.";
    name += std::to_string(::getpid());
    name += ".XXXXXX";
    return (folderOf(t) / name).string();
}

} // namespace

bool isTempNameOf(std::string_view f, std::string_view target, int64_t* pid) {
    if (pid) *pid = -1;
    if (target.empty()) return false;
    // Current scheme: .NAME.tmp.PID.XXXXXX, and the older .NAME.tmpXXXXXX.
    if (f.size() > target.size() + 1 && f[0] == '.' && f.substr(1, target.size()) == target) {
        std::string_view rest = f.substr(1 + target.size());
        if (rest.substr(0, 5) == ".tmp.") {
            rest.remove_prefix(5);
            const size_t dot = rest.find('.');
            if (dot == std::string_view::npos) return false;
            if (!isDigits(rest.substr(0, dot)) || !isRandomSuffix(rest.substr(dot + 1)))
                return false;
            if (pid) *pid = toPid(rest.substr(0, dot));
            return true;
        }
        if (rest.substr(0, 4) == ".tmp") return isRandomSuffix(rest.substr(4));
    }
    // Older HDF5 scheme: NAME.tmp.PID.
    if (f.size() > target.size() + 5 && f.substr(0, target.size()) == target &&
        f.substr(target.size(), 5) == ".tmp.") {
        const std::string_view digits = f.substr(target.size() + 5);
        if (!isDigits(digits)) return false;
        if (pid) *pid = toPid(digits);
        return true;
    }
    return false;
}

namespace {
/// The older HDF5 scheme NAME.tmp.PID is not hidden and could be a user's own file: it counts
/// only when it is empty or holds HDF5's signature at byte 0 (no userblock) or 512 (lcw's
/// userblock).
bool isOlderHdf5Temp(const std::string& path, std::string_view fileName, const struct stat& st) {
    if (fileName.empty() || fileName[0] == '.') return true; // not that scheme
    if (!S_ISREG(st.st_mode)) return false;
    if (st.st_size == 0) return true;
    static const char sig[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return false;
    bool ok = false;
    for (const off_t at : {off_t(0), off_t(512)}) {
        char head[8] = {};
        if (::pread(fd, head, 8, at) == 8 && std::memcmp(head, sig, 8) == 0) ok = true;
    }
    ::close(fd);
    return ok;
}
} // namespace

size_t removeStaleTemps(const std::string& target) {
    fs::path t(target);
    if (!t.has_filename()) t = t.parent_path();
    const std::string targetName = t.filename().string();
    if (targetName.empty() || targetName == "." || targetName == "..") return 0;
    const std::string dir = folderOf(t).string();
    DIR* d = ::opendir(dir.c_str());
    if (!d) return 0;
    std::vector<std::string> stale;
    const std::time_t now = std::time(nullptr);
    while (const dirent* e = ::readdir(d)) {
        int64_t pid = -1;
        if (!isTempNameOf(e->d_name, targetName, &pid)) continue;
        const std::string path = dir + "/" + e->d_name;
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) continue;
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) continue; // symlinks and the like
        if (st.st_uid != ::geteuid()) continue;
        if (!isOlderHdf5Temp(path, e->d_name, st)) continue;
        const int64_t age = int64_t(now - newestMtime(path, st));
        if (age < kStaleGraceSeconds) continue;
        const bool writerGone = pid < 0 || !processAlive(pid) || age >= kStaleHours * 3600;
        if (writerGone) stale.push_back(path);
    }
    ::closedir(d);
    size_t removed = 0;
    for (const auto& p : stale) {
        std::error_code ec;
        if (fs::remove_all(p, ec) > 0 && !ec) ++removed;
    }
    return removed;
}

int createTempFileFor(const std::string& target, std::string& tmpPath) {
    removeStaleTemps(target);
    tmpPath = tempTemplate(target);
    const int fd = ::mkostemp(tmpPath.data(), O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        tmpPath.clear();
        throw Error(target + ": cannot create temporary file: " + std::strerror(err));
    }
    return fd;
}

std::string createTempPathFor(const std::string& target) {
    std::string tmp;
    const int fd = createTempFileFor(target, tmp);
    ::fchmod(fd, 0644); // what the other atomic writers give their files
    ::close(fd);
    return tmp;
}

std::string createTempDirFor(const std::string& target) {
    removeStaleTemps(target);
    std::string tmp = tempTemplate(target);
    if (!::mkdtemp(tmp.data()))
        throw Error(target + ": cannot create temporary folder: " + std::strerror(errno));
    return tmp;
}

} // namespace lcw
