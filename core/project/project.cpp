#include "core/project/project.h"

#include "core/stats/h5_util.h"

#include <H5Cpp.h>

#include <chrono>
#include <ctime>
#include <filesystem>

namespace lcw::project {

using h5::putInt;
using h5::putStr;

namespace {

const char* kFormat = "lcw-project";

using h5::getBytes;
using h5::putBytes;

// `legacy`: the reader of files without lcw's userblock (version 1), which runs only in the
// converter child process (lcw-cli h5-convert): variable-length strings are read there and
// refused everywhere else.
std::string getStr(const H5::H5Object& o, const std::string& name, bool legacy) {
    return h5::readStr(o.openAttribute(name), legacy);
}
int64_t getInt(const H5::H5Object& o, const std::string& name) {
    int64_t v = 0;
    o.openAttribute(name).read(H5::PredType::NATIVE_INT64, &v);
    return v;
}

void putList(H5::Group& root, const std::string& group, const std::vector<NamedJson>& items) {
    H5::Group g = root.createGroup(group);
    putInt(g, "count", int64_t(items.size()));
    for (size_t i = 0; i < items.size(); ++i) {
        const std::string key = std::to_string(i);
        putBytes(g, key, items[i].json.data(), items[i].json.size());
        H5::DataSet ds = g.openDataSet(key);
        putStr(ds, "name", items[i].name);
    }
}
std::vector<NamedJson> getList(const H5::Group& root, const std::string& group, bool legacy) {
    H5::Group g = root.openGroup(group);
    const int64_t n = getInt(g, "count");
    std::vector<NamedJson> out;
    for (int64_t i = 0; i < n; ++i) {
        const std::string key = std::to_string(i);
        const std::vector<uint8_t> b = getBytes(g, key);
        NamedJson item;
        item.json.assign(b.begin(), b.end());
        item.name = getStr(g.openDataSet(key), "name", legacy);
        out.push_back(std::move(item));
    }
    return out;
}

std::string utcNow() {
    const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/// Reads with libhdf5: only files that passed h5::verify() (or, with `legacy`, in the converter
/// child process).
Project readHdf5(const std::string& path, bool legacy) {
    if (!std::filesystem::exists(path)) throw FormatError(path, "no such file");
    if (!h5::hasHdf5Signature(path)) throw FormatError(path, "not an HDF5 file");
    const std::lock_guard<std::mutex> lock(h5::fileMutex());
    H5::Exception::dontPrint();
    auto str = [legacy](const H5::H5Object& o, const std::string& name) {
        return getStr(o, name, legacy);
    };
    try {
        h5::noteLibraryOpen();
        H5::H5File f(path, H5F_ACC_RDONLY);
        H5::Group root = f.openGroup("/");
        if (!root.attrExists("format") || str(root, "format") != kFormat)
            throw FormatError(path, "not an lcw project (another program's HDF5 file)");
        Project p;
        p.version = int(getInt(root, "version"));
        if (p.version > Project::kVersion)
            throw FormatError(path, "project version " + std::to_string(p.version) +
                                        " is newer than this lcw reads (" +
                                        std::to_string(Project::kVersion) + ")");
        if (!root.attrExists("complete"))
            throw FormatError(path, "incomplete project file (writing was interrupted)");
        p.modelPath = str(root, "model_path");
        p.modelFingerprint = str(root, "model_fingerprint");
        p.savedUtc = str(root, "saved_utc");
        H5::Group stats = root.openGroup("statistics");
        p.statsName = str(stats, "name");
        p.statsFile = getBytes(stats, "file");
        p.recipes = getList(root, "recipes", legacy);
        p.results = getList(root, "results", legacy);
        const std::vector<uint8_t> ui = getBytes(root, "ui_state");
        p.uiState.assign(ui.begin(), ui.end());
        return p;
    } catch (const H5::Exception& e) {
        throw FormatError(path, "corrupt or incomplete project: " + e.getDetailMsg());
    }
}

} // namespace

void save(const std::string& path, const Project& p) {
    h5::writeFileAtomically(path, "project", h5::Kind::Project, Project::kVersion,
                            [&](H5::H5File& f) {
                                H5::Group root = f.openGroup("/");
                                putStr(root, "format", kFormat);
                                putInt(root, "version", Project::kVersion);
                                putStr(root, "model_path", p.modelPath);
                                putStr(root, "model_fingerprint", p.modelFingerprint);
                                putStr(root, "saved_utc", utcNow());
                                H5::Group stats = root.createGroup("statistics");
                                putStr(stats, "name", p.statsName);
                                putBytes(stats, "file", p.statsFile.data(), p.statsFile.size());
                                putList(root, "recipes", p.recipes);
                                putList(root, "results", p.results);
                                putBytes(root, "ui_state", p.uiState.data(), p.uiState.size());
                                // Written last: a file without it is incomplete.
                                putInt(root, "complete", 1);
                            });
}

Project load(const std::string& path) {
    if (h5::verify(path, h5::Kind::Project, Project::kVersion) == h5::Check::Verified)
        return readHdf5(path, false);
    // No lcw header (a version 1 project, another program's file): converted in a child
    // process; the file itself stays as it is until the user saves (then in version 2).
    const h5::TempDir dir("lcw-h5convert-");
    const std::string converted =
        h5::convertInChild(path, h5::Kind::Project, Project::kVersion, dir);
    try {
        return readHdf5(converted, false);
    } catch (const FormatError& e) {
        throw FormatError(path, "the converted copy cannot be read: " + e.problem());
    }
}

Project loadLegacyUnverified(const std::string& path) {
    return readHdf5(path, true);
}

} // namespace lcw::project
