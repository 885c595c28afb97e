#include "core/compress/overlay_files.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/common/sha256.h"
#include "core/common/temp_files.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lcw::compress {

namespace {

namespace fs = std::filesystem;

constexpr uint64_t kPiece = uint64_t(16) << 20;
constexpr const char* kAlgorithm = "sha256-tree-16MiB";
constexpr const char* kTensorsFile = "overlay.safetensors";

/// SHA-256 over the SHA-256 digests of the consecutive kPiece-byte pieces of [p, p + n).
std::string treeHash(const std::byte* p, uint64_t n) {
    const int64_t pieces = int64_t((n + kPiece - 1) / kPiece);
    std::vector<Sha256::Digest> digests(static_cast<size_t>(pieces));
    // omp: nothrow (Sha256 neither throws nor allocates; the digests are preallocated)
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < pieces; ++i) {
        const uint64_t off = uint64_t(i) * kPiece;
        Sha256 h;
        h.update(p + off, size_t(std::min(kPiece, n - off)));
        digests[size_t(i)] = h.digest();
        MappedFile::releasePages(p + off, std::min(kPiece, n - off));
    }
    Sha256 top;
    for (const auto& d : digests) top.update(d.data(), d.size());
    return top.hex();
}

void fsyncPath(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

/// True when `dir` holds nothing but an overlay's files (or lcw's temporaries of them): it may
/// be replaced as a whole.
bool onlyOverlayFiles(const fs::path& dir) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string n = it->path().filename().string();
        if (n == "overlay.json" || n == kTensorsFile) continue;
        if (isTempNameOf(n, "overlay.json") || isTempNameOf(n, kTensorsFile)) continue;
        return false;
    }
    return !ec;
}

/// Puts the complete folder `tmp` at `dir` (an existing overlay folder or nothing).
void swapIntoPlace(const std::string& tmp, const std::string& dir, bool exists) {
    if (!exists) {
        if (::rename(tmp.c_str(), dir.c_str()) != 0)
            throw Error(dir +
                        ": cannot move the new overlay folder into place: " + std::strerror(errno));
        return;
    }
    // One atomic step: the new folder appears at dir, the old one at tmp (removed below).
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0) {
        if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
            throw Error(dir +
                        ": cannot move the new overlay folder into place: " + std::strerror(errno));
        // File systems without the exchange: move the old folder aside (onto an empty folder of
        // lcw's temporary naming), then the new one in. A crash between the two leaves the old
        // overlay under that name.
        const std::string aside = createTempDirFor(dir);
        if (::rename(dir.c_str(), aside.c_str()) != 0) {
            const int err = errno;
            ::rmdir(aside.c_str());
            throw Error(dir + ": cannot move the old overlay folder aside: " + std::strerror(err));
        }
        if (::rename(tmp.c_str(), dir.c_str()) != 0) {
            const int err = errno;
            ::rename(aside.c_str(), dir.c_str());
            throw Error(dir +
                        ": cannot move the new overlay folder into place: " + std::strerror(err));
        }
        std::error_code ec;
        fs::remove_all(aside, ec);
        return;
    }
    std::error_code ec;
    fs::remove_all(tmp, ec); // the old overlay now
}

} // namespace

nlohmann::ordered_json overlayContentHash(const std::string& path) {
    const auto f = MappedFile::open(path);
    return {{"file", kTensorsFile},
            {"bytes", f->size()},
            {"algorithm", kAlgorithm},
            {"sha256", treeHash(f->data(), f->size())}};
}

bool verifyOverlayContentHash(const nlohmann::json& j, const std::string& jsonPath,
                              const std::string& tensorsPath) {
    if (!j.is_object() || !j.contains("content_hash")) return false;
    const nlohmann::json& c = j["content_hash"];
    if (!c.is_object() || !c.contains("bytes") || !c["bytes"].is_number_unsigned() ||
        !c.contains("sha256") || !c["sha256"].is_string() || !c.contains("algorithm") ||
        c["algorithm"] != kAlgorithm)
        throw FormatError(jsonPath, std::string("\"content_hash\" is malformed (expected bytes, "
                                                "sha256 and algorithm \"") +
                                        kAlgorithm + "\")");
    const uint64_t bytes = c["bytes"].get<uint64_t>();
    const std::string want = c["sha256"].get<std::string>();
    const auto f = MappedFile::open(tensorsPath);
    if (f->size() != bytes)
        throw FormatError(tensorsPath, "content hash mismatch: the file has " +
                                           std::to_string(f->size()) + " bytes, " + jsonPath +
                                           " records " + std::to_string(bytes) +
                                           " (truncated, or not from the same save)");
    const std::string got = treeHash(f->data(), f->size());
    if (got != want)
        throw FormatError(tensorsPath, "content hash mismatch: " + jsonPath + " records sha256 " +
                                           want + ", the file has " + got +
                                           " (the two files are not from the same save)");
    return true;
}

void commitOverlayFolder(const std::string& dirArg,
                         const std::function<void(const std::string& folder)>& writeInto) {
    fs::path dirPath(dirArg);
    if (!dirPath.has_filename()) dirPath = dirPath.parent_path(); // "out/" is the folder "out"
    const std::string dir = dirPath.string();
    std::error_code ec;
    if (dirPath.has_parent_path()) {
        fs::create_directories(dirPath.parent_path(), ec);
        if (ec) throw Error(dir + ": cannot create the parent folder (" + ec.message() + ")");
    }
    const fs::file_status st = fs::symlink_status(dirPath, ec);
    const bool exists = fs::exists(st) || fs::is_symlink(st);
    if (exists && !fs::is_directory(fs::status(dirPath, ec)))
        throw Error(dir + ": exists and is not a folder; an overlay is saved as a folder");
    const bool dotName = dirPath.filename() == "." || dirPath.filename() == "..";
    if (exists && (dotName || fs::is_symlink(st) || !onlyOverlayFiles(dirPath))) {
        // A folder with other files in it (or a link to one, or "."): not ours to replace; write in
        // place, each file atomically and the JSON last; the content hash ties the two together.
        writeInto(dir);
        return;
    }
    const std::string tmp = createTempDirFor(dir);
    try {
        writeInto(tmp);
        fsyncPath(tmp);
        ::chmod(tmp.c_str(), 0755);
        swapIntoPlace(tmp, dir, exists);
        fsyncPath(dirPath.has_parent_path() ? dirPath.parent_path().string() : ".");
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
}

} // namespace lcw::compress
