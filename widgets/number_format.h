#pragma once
/// \file
/// Number formatting shared by the panels: counts with K/M/B suffixes, exact counts with digit
/// grouping, byte sizes in binary units.
#include <QString>

#include <cstdint>

namespace lcw {

/// "950", "260.0 K", "1.24 B" (decimal suffixes, as parameter counts are usually quoted).
QString formatCountShort(int64_t n);
/// "1,234,567" (grouped, locale-independent so tables and TSV copies look the same everywhere).
QString formatCountExact(int64_t n);
/// "512 B", "43.0 KiB", "1.97 GiB".
QString formatBytes(uint64_t bytes);
/// "45 s", "3 min 05 s", "1 h 02 min" (a remaining time; negative or NaN gives "").
QString formatDuration(double seconds);

} // namespace lcw
