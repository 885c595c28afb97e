#pragma once
/// \file
/// This process's resident memory (Linux /proc; elsewhere the functions report "unavailable"):
/// the current resident set, its high-water mark, and a reset of the mark so that the peak of
/// one step can be measured on its own.
#include <cstdint>

namespace lcw {

/// Resets the kernel's resident-set high-water mark (VmHWM) of this process to the current
/// resident set (Linux: "5" written to /proc/self/clear_refs). Returns false where that is not
/// possible (not Linux, /proc not mounted or not writable); peakRssBytes() then keeps counting
/// from the start of the process.
bool resetPeakRss();
/// The resident-set high-water mark (VmHWM of /proc/self/status) in bytes: the largest resident
/// set since the process started or since the last successful resetPeakRss(). 0 when unavailable.
uint64_t peakRssBytes();
/// The current resident set (/proc/self/statm, resident pages times the page size) in bytes;
/// cheap enough to sample between tokens. 0 when unavailable.
uint64_t currentRssBytes();

} // namespace lcw
