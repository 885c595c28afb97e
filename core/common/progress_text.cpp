#include "core/common/progress_text.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace lcw {

namespace {

/// Display columns of UTF-8 text (code points; lcw's labels have no wide characters).
int columns(std::string_view s) {
    int n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}

/// The first `cols` columns of `s`, with "…" as the last one when it had to be cut.
std::string fit(std::string_view s, int cols) {
    if (cols <= 0) return {};
    if (columns(s) <= cols) return std::string(s);
    std::string out;
    int n = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if ((c & 0xC0) != 0x80 && ++n > cols - 1) break;
        out.push_back(s[i]);
    }
    out.append("\xE2\x80\xA6"); // …
    return out;
}

} // namespace

double estimateSecondsLeft(double fraction, double elapsedSeconds) {
    if (!(fraction >= 0.01) || !(elapsedSeconds >= 0.5) || fraction >= 1.0)
        return std::numeric_limits<double>::quiet_NaN();
    return elapsedSeconds * (1.0 - fraction) / fraction;
}

std::string formatEta(double seconds) {
    if (!(seconds >= 0)) return "?";
    const long s = long(seconds + 0.5);
    char b[48];
    if (s >= 3600)
        std::snprintf(b, sizeof b, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        std::snprintf(b, sizeof b, "%ldm%02lds", s / 60, s % 60);
    else
        std::snprintf(b, sizeof b, "%lds", s);
    return b;
}

std::string progressLine(std::string_view title, double fraction, double elapsedSeconds,
                         std::string_view stage, int width) {
    fraction = std::clamp(fraction, 0.0, 1.0);
    const double left = estimateSecondsLeft(fraction, elapsedSeconds);
    const std::string eta = std::isnan(left) ? (fraction >= 1.0 ? "" : "--") : formatEta(left);
    const int barWidth = width >= 100 ? 30 : (width >= 70 ? 20 : 10);
    const int filled = int(fraction * barWidth + 0.5);
    std::string bar(size_t(filled), '#');
    bar.append(size_t(barWidth - filled), '-');
    std::string etaField;
    if (!eta.empty()) etaField.append("ETA ").append(eta);
    char nums[128];
    // "ETA 10h59m" is the widest ETA: a 10-column field. Narrow terminals drop the elapsed time.
    if (width >= 60)
        std::snprintf(nums, sizeof nums, " [%s] %5.1f%% %7.1fs %-10s", bar.c_str(),
                      fraction * 100.0, elapsedSeconds, etaField.c_str());
    else
        std::snprintf(nums, sizeof nums, " [%s] %5.1f%% %-10s", bar.c_str(), fraction * 100.0,
                      etaField.c_str());
    const int numCols = columns(nums);
    // The title gives way first to the stage (16 columns), but keeps at least 8.
    const int titleCols = std::max(8, std::min(columns(title), width - numCols - 1 - 16));
    // Appends rather than operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
    std::string line = fit(title, titleCols);
    line.append(nums);
    const int room = width - columns(line) - 1;
    if (!stage.empty() && room >= 2) {
        line.push_back(' ');
        line.append(fit(stage, room));
    }
    line = fit(line, width); // terminals narrower than the numbers
    return line;
}

} // namespace lcw
