#include "terminal_progress.h"

#include "core/common/progress_text.h"

#include <sys/ioctl.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace lcw::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void onSigint(int) {
    g_interrupted = true;
}
// " ETA 1m05s" from the time so far and the fraction done; empty before 1% or at the end.
std::string eta(double elapsed, double fraction) {
    const double left = estimateSecondsLeft(fraction, elapsed);
    return std::isnan(left) ? std::string() : " ETA " + formatEta(left);
}
/// Columns of the terminal on stderr (COLUMNS, else 80, when it cannot tell).
int terminalWidth() {
    winsize ws{};
    if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    if (const char* c = std::getenv("COLUMNS")) {
        const int n = std::atoi(c);
        if (n > 0) return n;
    }
    return 80;
}
} // namespace

void installInterruptHandler() {
    std::signal(SIGINT, onSigint);
}
bool interrupted() {
    return g_interrupted.load();
}

TerminalProgress::TerminalProgress(std::string title, bool enabled)
    : m_title(std::move(title)), m_enabled(enabled), m_tty(::isatty(2) != 0),
      m_start(std::chrono::steady_clock::now()) {}

TerminalProgress::~TerminalProgress() {
    finish();
}

bool TerminalProgress::report(double fraction, std::string_view stage) {
    if (g_interrupted) return false;
    if (!m_enabled) return true;
    if (fraction < 0) fraction = 0;
    if (fraction > 1) fraction = 1;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - m_start).count();
    if (m_tty) {
        if (fraction < 1.0 && now - m_last < std::chrono::milliseconds(100)) return true;
        m_last = now;
        // Cut to the terminal's width: a wrapped line would not be redrawn in place.
        const std::string line =
            progressLine(m_title, fraction, elapsed, stage, terminalWidth() - 1);
        std::fprintf(stderr, "\r%s\033[K", line.c_str());
        m_open = true;
    } else {
        const int decile = int(fraction * 10.0);
        if (decile == m_lastDecile) return true;
        m_lastDecile = decile;
        std::fprintf(stderr, "%s: %3d%% (%.1fs%s) %.*s\n", m_title.c_str(), decile * 10, elapsed,
                     eta(elapsed, fraction).c_str(), int(stage.size()), stage.data());
    }
    return true;
}

bool TerminalProgress::stopRequested() {
    return g_interrupted.load();
}

void TerminalProgress::finish() {
    if (m_open) std::fprintf(stderr, "\n");
    m_open = false;
}

} // namespace lcw::cli
