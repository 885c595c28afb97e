#pragma once
// A progress bar with ETA on stderr for lcw-cli: redraws in place on a terminal, prints a line
// every 10% otherwise (CI logs), and honours SIGINT as cancellation.
#include "core/common/progress.h"

#include <chrono>
#include <string>

namespace lcw::cli {

class TerminalProgress final : public Progress {
public:
    explicit TerminalProgress(std::string title, bool enabled = true);
    ~TerminalProgress() override;
    bool report(double fraction, std::string_view stage) override;
    /// True once SIGINT arrived (polled inside long steps).
    bool stopRequested() override;
    /// Ends the bar line.
    void finish();

private:
    std::string m_title;
    bool m_enabled;
    bool m_tty;
    bool m_open = false;
    int m_lastDecile = -1;
    std::chrono::steady_clock::time_point m_last{};
    std::chrono::steady_clock::time_point m_start;
};

/// Installs a SIGINT handler that makes every TerminalProgress return false (cancel).
void installInterruptHandler();
bool interrupted();

} // namespace lcw::cli
