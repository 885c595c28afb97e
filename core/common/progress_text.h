#pragma once
/// \file
/// The text of a progress line with its time left, shared by lcw-cli's bar and its tests.
#include <string>
#include <string_view>

namespace lcw {

/// Seconds left for a job `fraction` done after `elapsedSeconds`, from the average rate so far;
/// NaN while too early to tell (under 1 % or under 0.5 s) or once done.
double estimateSecondsLeft(double fraction, double elapsedSeconds);

/// "42s", "1m05s", "2h03m" (rounded to whole seconds; "?" for NaN or negative).
std::string formatEta(double seconds);

/// One line of a terminal progress bar that fits in `width` columns:
///   "title [#####-----]  42.0%   12.3s ETA 1m05s   stage"
/// The ETA field has a fixed width ("ETA --" until known), so the stage starts in the same
/// column on every redraw; the stage (then the title) is cut with "…" to fit, never wrapped.
std::string progressLine(std::string_view title, double fraction, double elapsedSeconds,
                         std::string_view stage, int width);

} // namespace lcw
