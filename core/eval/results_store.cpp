#include "core/eval/results_store.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <random>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lcw {

std::string defaultResultsPath() {
    const char* xdg = std::getenv("XDG_DATA_HOME");
    std::filesystem::path base;
    if (xdg && *xdg) {
        base = xdg;
    } else {
        const char* home = std::getenv("HOME");
        base = std::filesystem::path(home && *home ? home : ".") / ".local" / "share";
    }
    return (base / "lcw" / "results.jsonl").string();
}

namespace {
std::string formatUtc(const char* f) {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char b[64];
    std::strftime(b, sizeof b, f, &tm);
    return b;
}
} // namespace

std::string utcTimestamp() {
    return formatUtc("%Y-%m-%dT%H:%M:%SZ");
}

std::string newResultId() {
    std::random_device rd;
    char hex[8];
    std::snprintf(hex, sizeof hex, "%06x", unsigned(rd()) & 0xFFFFFFu);
    return formatUtc("%Y%m%d-%H%M%S-") + hex;
}

std::string appendResult(const std::string& path, nlohmann::ordered_json record) {
    if (!record.is_object()) throw ArgumentError("results: a record must be a JSON object");
    if (!record.contains("id")) record["id"] = newResultId();
    if (!record.contains("timestamp")) record["timestamp"] = utcTimestamp();
    const std::filesystem::path p(path);
    std::error_code ec;
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
    const std::string line =
        record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(path + ": cannot open the results file (" + std::strerror(errno) + ")");
    // Appenders of lcw take turns (an advisory lock), so that the check of the last line below
    // and the undo of a failed write see nobody else's half-written line.
    while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) continue;
    // A write that was interrupted (killed process, full disk) leaves a torn last line without
    // its newline: it is set aside on a line of its own (the loader skips it with a warning)
    // instead of the new record being glued to it (and lost with it when the file is read).
    std::string out = line;
    struct stat st {};
    const bool sized = ::fstat(fd, &st) == 0;
    char last = '\n';
    if (sized && st.st_size > 0 && ::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
        out.insert(out.begin(), '\n');
    // One write() of the whole line, newline included: with O_APPEND the line lands at the end
    // in one piece.
    ssize_t n;
    do {
        n = ::write(fd, out.data(), out.size());
    } while (n < 0 && errno == EINTR);
    const int err = errno;
    // A short write (full disk, file size limit) would leave a torn line: cut it off again.
    // (Should that fail too, the next append sets the torn line aside.)
    if (n != ssize_t(out.size()) && n > 0 && sized) (void)!::ftruncate(fd, st.st_size);
    ::close(fd); // releases the lock
    if (n != ssize_t(out.size()))
        throw Error(path + ": cannot append the result (" +
                    (n < 0 ? std::string(std::strerror(err)) : std::string("short write")) + ")");
    return record["id"].get<std::string>();
}

ResultsFile loadResults(const std::string& path) {
    ResultsFile f;
    if (!std::filesystem::exists(path)) return f;
    const std::string text = readTextFile(path);
    size_t pos = 0, lineNo = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        const std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        ++lineNo;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        std::string problem;
        try {
            auto j = parseOrderedJsonText(line, path);
            if (!j.is_object())
                problem = "not a JSON object";
            else if (!j.contains("id") || !j["id"].is_string())
                problem = "record has no \"id\"";
            else
                f.records.push_back(std::move(j));
        } catch (const FormatError& e) {
            const bool invalid = e.problem().rfind("not valid JSON", 0) == 0;
            // No newline after it: a write that was interrupted.
            problem = invalid && nl == text.size() ? "incomplete last record (an interrupted write)"
                      : invalid                    ? "corrupt record (invalid JSON)"
                                                   : "corrupt record (" + e.problem() + ")";
        }
        if (!problem.empty())
            f.warnings.push_back(path + ": line " + std::to_string(lineNo) + ": " + problem +
                                 ", skipped");
    }
    return f;
}

const nlohmann::ordered_json* findResult(const ResultsFile& f, const std::string& id) {
    const nlohmann::ordered_json* hit = nullptr;
    int prefixHits = 0;
    for (const auto& r : f.records) {
        const std::string rid = r["id"].get<std::string>();
        if (rid == id) return &r;
        if (!id.empty() && rid.compare(0, id.size(), id) == 0) {
            hit = &r;
            ++prefixHits;
        }
    }
    if (prefixHits > 1)
        throw ArgumentError("results: id prefix \"" + id + "\" matches " +
                            std::to_string(prefixHits) + " records");
    return hit;
}

} // namespace lcw
