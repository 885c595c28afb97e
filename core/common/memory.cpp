#include "core/common/memory.h"

#include <cstdlib>
#include <fstream>
#include <string>

namespace lcw {

namespace {

// A "Key:   1234 kB" line of /proc/self/status in bytes (0 when absent).
uint64_t statusBytes(const char* key) {
    std::ifstream f("/proc/self/status");
    const std::string k(key);
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(k, 0) == 0)
            return uint64_t(std::strtoull(line.c_str() + k.size(), nullptr, 10)) * 1024;
    return 0;
}

} // namespace

bool resetPeakRss() {
    std::ofstream f("/proc/self/clear_refs");
    if (!f) return false;
    f << "5";
    return bool(f.flush());
}

uint64_t peakRssBytes() {
    return statusBytes("VmHWM:");
}

uint64_t currentRssBytes() {
    return statusBytes("VmRSS:");
}

} // namespace lcw
