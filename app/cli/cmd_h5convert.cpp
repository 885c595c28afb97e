// lcw-cli h5-convert IN OUT --kind stats|project (hidden): reads an HDF5 file that has no lcw
// checksum header (an older lcw file, another program's file) with the legacy reader and writes
// it as a new, sealed lcw file. lcw runs it as a child process (core/common/h5_guard.h), so that
// a crash of libhdf5 on a damaged file ends this process only. Exit codes: 0 converted, 1 the
// file was refused (last line "h5-convert: PROBLEM"), 2 usage.
#include "args.h"
#include "commands.h"

#include "core/common/error.h"
#include "core/common/h5_guard.h"
#include "core/common/subprocess.h"
#include "core/project/project.h"
#include "core/stats/stats_store.h"

#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace lcw::cli {

namespace {

/// A project's embedded statistics file, as a current (sealed) statistics file. An embedded
/// file without a header is converted by yet another child process (this executable), so a
/// crash there only drops the statistics (a cache: the workbench recomputes them).
void convertEmbeddedStats(project::Project& p, const std::string& outPath) {
    if (p.statsFile.empty()) return;
    const h5::TempDir dir("lcw-h5convert-");
    const std::string in = dir.path() + "/embedded.h5";
    {
        std::ofstream f(in, std::ios::binary);
        f.write(reinterpret_cast<const char*>(p.statsFile.data()),
                std::streamsize(p.statsFile.size()));
        if (!f) throw Error(in + ": cannot write");
    }
    try {
        h5::setConverter(selfExecutablePath());
        const stats::StatsReport r = stats::StatsStore::load(in); // verified or converted
        const std::string out = dir.path() + "/converted.h5";
        stats::StatsStore::save(out, r);
        std::ifstream f(out, std::ios::binary);
        p.statsFile.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "h5-convert: note: %s: the embedded statistics were dropped (%s)\n",
                     outPath.c_str(), e.what());
        p.statsFile.clear();
        p.statsName.clear();
    }
}

/// Caps this process's address space: some damaged files make libhdf5 allocate without end
/// (seen: 600 MB in 3 s from a 16 KB file); with the cap that is a failed allocation (exit 1)
/// instead of the machine's memory. Generous for real files: 1 GiB + 32 × the file's size.
/// Not under AddressSanitizer, which reserves terabytes of address space.
#if defined(__SANITIZE_ADDRESS__)
#define LCW_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LCW_ASAN 1
#endif
#endif
void capMemory(const std::string& in) {
#if !defined(LCW_ASAN)
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(in, ec);
    const uint64_t cap = (uint64_t(1) << 30) + 32 * (ec ? 0 : size);
    rlimit rl{};
    if (::getrlimit(RLIMIT_AS, &rl) == 0 && (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > cap)) {
        rl.rlim_cur = rlim_t(cap);
        ::setrlimit(RLIMIT_AS, &rl);
    }
#else
    (void)in;
#endif
}

} // namespace

int cmdH5Convert(const std::vector<std::string>& argv) {
    Args a(argv, {"--kind"}, {});
    const std::string in = a.positional(0, "IN (an HDF5 file)");
    const std::string out = a.positional(1, "OUT (the converted file)");
    h5::Kind kind;
    if (!h5::parseKind(a.getOr("--kind", ""), kind))
        throw UsageError{"--kind must be stats or project"};
    capMemory(in);
    try {
        if (kind == h5::Kind::Stats) {
            stats::StatsStore::save(out, stats::StatsStore::loadLegacyUnverified(in));
        } else {
            project::Project p = project::loadLegacyUnverified(in);
            convertEmbeddedStats(p, in);
            project::save(out, p);
        }
    } catch (const FormatError& e) {
        std::fprintf(stderr, "h5-convert: %s\n", e.problem().c_str());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "h5-convert: %s\n", e.what());
        return 1;
    }
    return 0;
}

} // namespace lcw::cli
