#pragma once
/// \file
/// This process's resident-set size (Linux /proc; elsewhere the functions report "unknown").
#include <cstdint>

namespace lcw {

/// Resets the kernel's resident-set high-water mark of this process ("5" to
/// /proc/self/clear_refs), so peakRssBytes() then measures from now on. Returns false where that
/// is not possible.
bool resetPeakRss();

/// Peak resident set size (VmHWM of /proc/self/status) in bytes; 0 when unavailable.
uint64_t peakRssBytes();

/// Current resident set size (VmRSS) in bytes; 0 when unavailable.
uint64_t currentRssBytes();

} // namespace lcw
