#include "core/common/h5_guard.h"

#include "core/common/error.h"
#include "core/common/sha256.h"
#include "core/common/subprocess.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <mutex>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace lcw::h5 {

namespace {

namespace fs = std::filesystem;

// Userblock header (all integers little-endian), the rest of the 512 bytes is zero except for
// a line of text for people who look at the file with `head -c 512`:
//   0  "LCWH5\0" magic, then uint16 header format (1)
//   8  kind, NUL-padded to 16 bytes ("stats", "project")
//  24  uint32 schema version of the payload
//  28  uint32 userblock size (512)
//  32  uint64 payload length (file size - 512)
//  40  SHA-256 of the payload (32 bytes)
// 128  "lcw HDF5 file; kind=...; schema=...; payload=...; sha256=...\n"
// The whole header is rebuilt from the parsed fields and compared byte for byte, so a change
// anywhere in the userblock is noticed too.
constexpr char kMagic[6] = {'L', 'C', 'W', 'H', '5', '\0'};
constexpr uint16_t kHeaderFormat = 1;
constexpr size_t kKindLen = 16;

struct Header {
    uint16_t format = 0;
    std::string kind;
    uint32_t schemaVersion = 0;
    uint32_t userblockSize = 0;
    uint64_t payloadLength = 0;
    Sha256::Digest sha{};
};

void putLe(uint8_t* p, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint64_t getLe(const uint8_t* p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
    return v;
}

std::vector<uint8_t> buildHeader(const Header& h) {
    std::vector<uint8_t> b(kUserblockSize, 0);
    std::memcpy(b.data(), kMagic, sizeof kMagic);
    putLe(b.data() + 6, h.format, 2);
    std::memcpy(b.data() + 8, h.kind.data(), std::min(h.kind.size(), kKindLen));
    putLe(b.data() + 24, h.schemaVersion, 4);
    putLe(b.data() + 28, h.userblockSize, 4);
    putLe(b.data() + 32, h.payloadLength, 8);
    std::memcpy(b.data() + 40, h.sha.data(), h.sha.size());
    const std::string text = "lcw HDF5 file; kind=" + h.kind.substr(0, kKindLen) +
                             "; schema=" + std::to_string(h.schemaVersion) +
                             "; payload=" + std::to_string(h.payloadLength) +
                             "; sha256=" + Sha256::toHex(h.sha) + "\n";
    std::memcpy(b.data() + 128, text.data(), std::min<size_t>(text.size(), kUserblockSize - 128));
    return b;
}

Header parseHeader(const uint8_t* b) {
    Header h;
    h.format = uint16_t(getLe(b + 6, 2));
    const char* k = reinterpret_cast<const char*>(b + 8);
    h.kind.assign(k, strnlen(k, kKindLen));
    h.schemaVersion = uint32_t(getLe(b + 24, 4));
    h.userblockSize = uint32_t(getLe(b + 28, 4));
    h.payloadLength = getLe(b + 32, 8);
    std::memcpy(h.sha.data(), b + 40, h.sha.size());
    return h;
}

class Fd {
public:
    explicit Fd(int fd) : m_fd(fd) {}
    ~Fd() {
        if (m_fd >= 0) ::close(m_fd);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return m_fd; }

private:
    int m_fd;
};

/// Reads exactly n bytes at offset; false at end of file.
bool readAt(int fd, void* buf, size_t n, uint64_t off) {
    auto* p = static_cast<uint8_t*>(buf);
    while (n > 0) {
        const ssize_t k = ::pread(fd, p, n, off_t(off));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= size_t(k);
        off += uint64_t(k);
    }
    return true;
}

/// SHA-256 of bytes [from, from + n) of fd. Throws Error when they cannot be read.
Sha256::Digest hashRange(int fd, uint64_t from, uint64_t n, const std::string& path) {
    Sha256 h;
    std::vector<uint8_t> buf(1 << 20);
    while (n > 0) {
        const size_t k = size_t(std::min<uint64_t>(n, buf.size()));
        if (!readAt(fd, buf.data(), k, from))
            throw FormatError(path, "file is truncated (shorter than its header says)");
        h.update(buf.data(), k);
        from += k;
        n -= k;
    }
    return h.digest();
}

std::mutex g_convMutex;
std::string g_converter;
std::chrono::milliseconds g_timeout{0}; // 0: by file size (convertInChild)
std::atomic<uint64_t> g_opens{0};

bool isExecutableFile(const std::string& p) {
    struct stat st {};
    return !p.empty() && ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(p.c_str(), X_OK) == 0;
}

std::string signalName(int sig) {
    static const std::pair<int, const char*> names[] = {
        {SIGSEGV, "SIGSEGV"}, {SIGBUS, "SIGBUS"},   {SIGABRT, "SIGABRT"}, {SIGFPE, "SIGFPE"},
        {SIGILL, "SIGILL"},   {SIGKILL, "SIGKILL"}, {SIGTRAP, "SIGTRAP"}, {SIGTERM, "SIGTERM"}};
    std::string s = "signal " + std::to_string(sig);
    for (const auto& [n, name] : names)
        if (n == sig) s += std::string(", ") + name;
    return s;
}

/// The converter's own message: its last line starting "h5-convert: " (`tagged` true), else its
/// last line.
std::string childMessage(const std::string& out, bool* tagged = nullptr) {
    std::string last, tag;
    size_t start = 0;
    while (start < out.size()) {
        size_t end = out.find('\n', start);
        if (end == std::string::npos) end = out.size();
        std::string line = out.substr(start, end - start);
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) last = line;
        if (line.rfind("h5-convert: ", 0) == 0 && line.rfind("h5-convert: note: ", 0) != 0)
            tag = line.substr(12);
        start = end + 1;
    }
    if (tagged) *tagged = !tag.empty();
    std::string m = tag.empty() ? last : tag;
    if (m.size() > 400) m = m.substr(0, 400) + "…";
    return m;
}

} // namespace

const char* kindName(Kind k) {
    return k == Kind::Stats ? "stats" : "project";
}
const char* kindNoun(Kind k) {
    return k == Kind::Stats ? "statistics file" : "project file";
}
bool parseKind(const std::string& name, Kind& out) {
    if (name == "stats")
        out = Kind::Stats;
    else if (name == "project")
        out = Kind::Project;
    else
        return false;
    return true;
}

void seal(const std::string& path, Kind kind, int schemaVersion) {
    Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (fd.get() < 0) throw Error(path + ": cannot open to seal: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || uint64_t(st.st_size) < kUserblockSize)
        throw Error(path + ": cannot seal: the file has no userblock");
    Header h;
    h.format = kHeaderFormat;
    h.kind = kindName(kind);
    h.schemaVersion = uint32_t(schemaVersion);
    h.userblockSize = uint32_t(kUserblockSize);
    h.payloadLength = uint64_t(st.st_size) - kUserblockSize;
    h.sha = hashRange(fd.get(), kUserblockSize, h.payloadLength, path);
    // HDF5 never writes into the userblock; it must still be all zero here.
    std::vector<uint8_t> old(kUserblockSize);
    if (!readAt(fd.get(), old.data(), old.size(), 0))
        throw Error(path + ": cannot seal: cannot read the userblock");
    for (uint8_t c : old)
        if (c != 0) throw Error(path + ": cannot seal: the userblock is not empty");
    const std::vector<uint8_t> b = buildHeader(h);
    size_t done = 0;
    while (done < b.size()) {
        const ssize_t k = ::pwrite(fd.get(), b.data() + done, b.size() - done, off_t(done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) throw Error(path + ": cannot write the userblock: " + std::strerror(errno));
        done += size_t(k);
    }
}

Check verify(const std::string& path, Kind kind, int maxVersion) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0) {
        const int e = errno;
        throw FormatError(path, e == ENOENT ? "file not found" : std::strerror(e));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw FormatError(path, std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw FormatError(path, "not a regular file");
    const uint64_t size = uint64_t(st.st_size);
    uint8_t b[kUserblockSize];
    const size_t have = size_t(std::min<uint64_t>(size, kUserblockSize));
    if (have < sizeof kMagic || !readAt(fd.get(), b, sizeof kMagic, 0) ||
        std::memcmp(b, kMagic, sizeof kMagic) != 0)
        return Check::NoUserblock;
    if (size < kUserblockSize || !readAt(fd.get(), b, kUserblockSize, 0))
        throw FormatError(path, "file is truncated (it ends inside its lcw header)");
    const Header h = parseHeader(b);
    if (h.format != kHeaderFormat)
        throw FormatError(path, "lcw header format " + std::to_string(h.format) +
                                    " is not known to this lcw (written by a newer lcw?)");
    if (buildHeader(h) != std::vector<uint8_t>(b, b + kUserblockSize) ||
        h.userblockSize != kUserblockSize)
        throw FormatError(path, "the lcw header is damaged (the file was modified or damaged)");
    if (h.kind != kindName(kind)) {
        Kind other;
        const std::string what = parseKind(h.kind, other) ? std::string("an lcw ") + kindNoun(other)
                                                          : "an lcw file of kind '" + h.kind + "'";
        throw FormatError(path, "is " + what + ", not an lcw " + kindNoun(kind));
    }
    if (h.schemaVersion < 1 || h.schemaVersion > uint32_t(maxVersion))
        throw FormatError(path, std::string(kindNoun(kind)) + " schema version " +
                                    std::to_string(h.schemaVersion) +
                                    " is not supported (this lcw reads 1.." +
                                    std::to_string(maxVersion) + ")");
    if (h.payloadLength != size - kUserblockSize)
        throw FormatError(
            path, size - kUserblockSize < h.payloadLength
                      ? "file is truncated (" + std::to_string(size) + " bytes, its header says " +
                            std::to_string(h.payloadLength + kUserblockSize) + ")"
                      : "file is longer than its header says (" + std::to_string(size) +
                            " bytes, expected " + std::to_string(h.payloadLength + kUserblockSize) +
                            "): the file was modified or damaged");
    if (hashRange(fd.get(), kUserblockSize, h.payloadLength, path) != h.sha)
        throw FormatError(path, "checksum mismatch: the file was modified or damaged");
    return Check::Verified;
}

bool hasHdf5Signature(const std::string& path) {
    static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    struct stat st {};
    // O_NONBLOCK above: a FIFO must not block the open; only regular files are read.
    if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    const uint64_t size = uint64_t(st.st_size);
    for (uint64_t off = 0; off + sizeof sig <= size; off = off ? off * 2 : 512) {
        uint8_t b[sizeof sig];
        if (!readAt(fd.get(), b, sizeof b, off)) return false;
        if (std::memcmp(b, sig, sizeof sig) == 0) return true;
    }
    return false;
}

std::string converterExecutable() {
    {
        const std::lock_guard<std::mutex> lock(g_convMutex);
        if (!g_converter.empty()) return g_converter;
    }
    if (const char* e = std::getenv("LCW_CLI"); e && *e) return e;
    const std::string self = selfExecutablePath();
    if (!self.empty()) {
        const fs::path dir = fs::path(self).parent_path();
        for (const fs::path& cand : {dir / "lcw-cli", dir.parent_path() / "lcw-cli"})
            if (isExecutableFile(cand.string())) return cand.string();
    }
    return findInPath("lcw-cli");
}

void setConverter(const std::string& executable) {
    const std::lock_guard<std::mutex> lock(g_convMutex);
    g_converter = executable;
}

void setConverterTimeout(std::chrono::milliseconds timeout) {
    const std::lock_guard<std::mutex> lock(g_convMutex);
    g_timeout = timeout;
}

TempDir::TempDir(const std::string& prefix) {
    std::error_code ec;
    fs::path base = fs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string tmpl = (base / (prefix + "XXXXXX")).string();
    if (!::mkdtemp(tmpl.data()))
        throw Error(tmpl + ": cannot create a temporary folder: " + std::strerror(errno));
    m_path = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
}

std::string convertInChild(const std::string& path, Kind kind, int maxVersion, const TempDir& dir) {
    if (!hasHdf5Signature(path)) throw FormatError(path, "not an HDF5 file");
    const std::string exe = converterExecutable();
    if (exe.empty())
        throw FormatError(path, std::string("the file has no lcw checksum header (an older lcw "
                                            "file or another program's HDF5 file); such files "
                                            "are opened only by lcw-cli in a separate process, "
                                            "and lcw-cli was not found (set LCW_CLI to its "
                                            "path)"));
    std::chrono::milliseconds timeout;
    {
        const std::lock_guard<std::mutex> lock(g_convMutex);
        timeout = g_timeout;
    }
    if (timeout.count() <= 0) {
        // 5 s plus 1 s per 16 MiB: a conversion reads at well over 16 MiB/s, and a small
        // hostile file that makes libhdf5 spin is given up on quickly.
        std::error_code ec;
        const auto size = fs::file_size(path, ec);
        const long long extra = ec ? 0 : (long long)(size >> 24);
        timeout = std::chrono::milliseconds(1000 * std::min<long long>(5 + extra, 600));
    }
    const std::string out = dir.path() + "/converted.h5";
    const ProcessResult r =
        runProcess({exe, "h5-convert", path, out, "--kind", kindName(kind)}, timeout);
    if (!r.started)
        throw FormatError(path, "cannot run the HDF5 converter " + exe + " (" + r.output + ")");
    if (r.timedOut) {
        const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout).count();
        throw FormatError(path, "the HDF5 reader did not finish within " +
                                    std::to_string(std::max<long long>(secs, 1)) +
                                    " s; the file is damaged or not an lcw " + kindNoun(kind));
    }
    if (!r.exited)
        throw FormatError(path, "the file crashed the HDF5 reader (" + signalName(r.signal) +
                                    "); it is damaged or not an lcw " + kindNoun(kind) +
                                    " (it was read in a separate process, lcw is unaffected)");
    bool tagged = false;
    std::string m = childMessage(r.output, &tagged);
    if (r.exitCode == 1 && !tagged) // died in a way of its own (a sanitizer's report, abort())
        throw FormatError(path, "the file crashed the HDF5 reader (exit code 1 without a message" +
                                    (m.empty() ? std::string() : "; its last output: " + m) +
                                    "); it is damaged or not an lcw " + kindNoun(kind) +
                                    " (it was read in a separate process, lcw is unaffected)");
    if (r.exitCode == 1) {
        // The converter names the file itself; FormatError adds the name again.
        if (m.rfind(path + ": ", 0) == 0) m = m.substr(path.size() + 2);
        throw FormatError(path, m.empty() ? "the HDF5 converter refused the file" : m);
    }
    if (r.exitCode != 0)
        throw FormatError(path, "the HDF5 converter " + exe + " failed (exit code " +
                                    std::to_string(r.exitCode) + "): " + childMessage(r.output));
    try {
        if (verify(out, kind, maxVersion) != Check::Verified)
            throw FormatError(out, "has no lcw header");
    } catch (const FormatError& e) {
        throw FormatError(path, "the HDF5 converter " + exe + " wrote no valid file: " + e.what());
    }
    return out;
}

void noteLibraryOpen() {
    g_opens.fetch_add(1, std::memory_order_relaxed);
}
uint64_t libraryOpens() {
    return g_opens.load(std::memory_order_relaxed);
}

} // namespace lcw::h5
