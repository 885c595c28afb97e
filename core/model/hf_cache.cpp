#include "core/model/hf_cache.h"

#include "core/common/error.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

namespace lcw {

namespace fs = std::filesystem;

namespace {

std::string trim(std::string s) {
    while (!s.empty() &&
           (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
        s.pop_back();
    size_t b = 0;
    while (b < s.size() && (s[b] == ' ' || s[b] == '\t')) ++b;
    return s.substr(b);
}

int64_t mtimeSeconds(const fs::path& p) {
    std::error_code ec;
    const auto t = fs::last_write_time(p, ec);
    if (ec) return 0;
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

} // namespace

bool isHfCacheRepo(const std::string& folder) {
    std::error_code ec;
    const fs::path dir(folder);
    if (!fs::is_directory(dir / "snapshots", ec)) return false;
    std::string name = dir.filename().string();
    if (name.empty()) name = dir.parent_path().filename().string(); // trailing slash
    if (name.rfind("models--", 0) == 0) return true;
    return fs::is_directory(dir / "refs", ec) || fs::is_directory(dir / "blobs", ec);
}

std::vector<HfSnapshot> listHfSnapshots(const std::string& repoFolder) {
    std::vector<HfSnapshot> out;
    std::error_code ec;
    const fs::path dir(repoFolder);
    for (const auto& e : fs::directory_iterator(dir / "snapshots", ec)) {
        std::error_code ec2;
        if (!e.is_directory(ec2)) continue;
        HfSnapshot s;
        s.path = e.path().string();
        s.hash = e.path().filename().string();
        s.mtime = mtimeSeconds(e.path());
        out.push_back(std::move(s));
    }
    // refs/<name> (also nested, e.g. refs/pr/1) hold a commit hash.
    if (fs::is_directory(dir / "refs", ec)) {
        for (auto it = fs::recursive_directory_iterator(dir / "refs", ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            std::error_code ec2;
            if (!it->is_regular_file(ec2)) continue;
            std::ifstream in(it->path());
            std::string hash;
            std::getline(in, hash);
            hash = trim(hash);
            const std::string ref = it->path().lexically_relative(dir / "refs").generic_string();
            for (auto& s : out)
                if (s.hash == hash) s.refs.push_back(ref);
        }
    }
    for (auto& s : out) std::sort(s.refs.begin(), s.refs.end());
    auto isMain = [](const HfSnapshot& s) {
        return std::find(s.refs.begin(), s.refs.end(), "main") != s.refs.end();
    };
    std::sort(out.begin(), out.end(), [&](const HfSnapshot& a, const HfSnapshot& b) {
        if (isMain(a) != isMain(b)) return isMain(a);
        if (a.mtime != b.mtime) return a.mtime > b.mtime;
        return a.hash < b.hash;
    });
    return out;
}

std::string hfSnapshotLoadPath(const std::string& snapshotFolder) {
    std::error_code ec;
    const fs::path dir(snapshotFolder);
    if (fs::exists(dir / "config.json", ec)) return snapshotFolder;
    std::vector<fs::path> ggufs;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        std::error_code ec2;
        if (e.is_regular_file(ec2) && e.path().extension() == ".gguf") ggufs.push_back(e.path());
    }
    return ggufs.size() == 1 ? ggufs.front().string() : snapshotFolder;
}

std::optional<HfCacheResolution> resolveHfCache(const std::string& path) {
    if (!isHfCacheRepo(path)) return std::nullopt;
    const std::vector<HfSnapshot> snaps = listHfSnapshots(path);
    if (snaps.empty())
        throw FormatError(path, "Hugging Face cache folder without any snapshot (snapshots/ is "
                                "empty; download the model again or open a snapshot folder)");
    const HfSnapshot& s = snaps.front();
    const bool main = std::find(s.refs.begin(), s.refs.end(), "main") != s.refs.end();
    HfCacheResolution r;
    r.path = hfSnapshotLoadPath(s.path);
    r.snapshotCount = int(snaps.size());
    std::string name = fs::path(path).filename().string();
    if (name.empty()) name = fs::path(path).parent_path().filename().string();
    r.reason =
        "opened snapshot " + s.hash + (main ? " (refs/main)" : " (the newest)") + " of " + name;
    if (snaps.size() > 1)
        r.reason += "; " + std::to_string(snaps.size() - 1) + " other snapshot" +
                    (snaps.size() > 2 ? "s" : "") + " not opened";
    return r;
}

} // namespace lcw
