#include "terminal_progress.h"

#include <atomic>
#include <csignal>
#include <cstdio>
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
    if (fraction < 0.01 || fraction >= 1.0 || elapsed < 0.5) return {};
    const long s = long(elapsed * (1.0 - fraction) / fraction + 0.5);
    char b[48];
    if (s >= 3600)
        std::snprintf(b, sizeof b, " ETA %ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        std::snprintf(b, sizeof b, " ETA %ldm%02lds", s / 60, s % 60);
    else
        std::snprintf(b, sizeof b, " ETA %lds", s);
    return b;
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
        const int width = 30;
        const int filled = int(fraction * width + 0.5);
        std::string bar(size_t(filled), '#');
        bar.append(size_t(width - filled), '-');
        std::fprintf(stderr, "\r%s [%s] %5.1f%% %6.1fs%s %.*s\033[K", m_title.c_str(), bar.c_str(),
                     fraction * 100.0, elapsed, eta(elapsed, fraction).c_str(), int(stage.size()),
                     stage.data());
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

void TerminalProgress::finish() {
    if (m_open) std::fprintf(stderr, "\n");
    m_open = false;
}

} // namespace lcw::cli
