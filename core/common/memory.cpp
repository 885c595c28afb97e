#include "core/common/memory.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace lcw {

bool resetPeakRss() {
#if defined(__linux__)
    std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    // "5" resets the peak RSS (Documentation/admin-guide/mm/soft-dirty.rst, proc.rst).
    const bool ok = std::fputs("5", f) >= 0;
    return std::fclose(f) == 0 && ok;
#else
    return false;
#endif
}

uint64_t peakRssBytes() {
#if defined(__linux__)
    std::FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "VmHWM:", 6) == 0) {
            kb = std::strtoull(line + 6, nullptr, 10);
            break;
        }
    std::fclose(f);
    return kb * 1024;
#else
    return 0;
#endif
}

uint64_t currentRssBytes() {
#if defined(__linux__)
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    const int n = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    const long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? uint64_t(resident) * uint64_t(page) : 0;
#else
    return 0;
#endif
}

} // namespace lcw
