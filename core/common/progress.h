#pragma once
/// \file
/// The progress sink every long job takes. report() returns false to ask the job to stop;
/// the job then returns Status::Cancelled (it never throws for cancellation).
#include <algorithm>
#include <exception>
#include <functional>
#include <string>
#include <string_view>

namespace lcw {

/// Thrown from inside a step of a job when a CancelScope (core/runtime/cancel.h) says stop; the
/// job catches it and returns Status::Cancelled. Not an lcw::Error: cancellation is an outcome.
class Cancelled : public std::exception {
public:
    const char* what() const noexcept override { return "cancelled"; }
};

class Progress {
public:
    virtual ~Progress() = default;
    /// fraction in [0,1]; stage is a short human label ("loading", "chunk 3/367").
    /// Return false to request cancellation.
    virtual bool report(double fraction, std::string_view stage) = 0;
    /// Whether the sink already knows that the job should stop, without reporting anything.
    /// Polled from inside long steps (before every block of a forward pass, from any thread):
    /// must be cheap and thread-safe. Sinks whose report() answers from a flag return it here;
    /// the default (false) leaves cancellation to the next report().
    virtual bool stopRequested() { return false; }
};

/// Accepts everything and never cancels.
class NullProgress final : public Progress {
public:
    bool report(double, std::string_view) override { return true; }
};

/// Reports nothing to `outer` (a step with its own, coarser reports around it), but answers its
/// stop requests, so the step still stops when the job is cancelled.
class QuietProgress final : public Progress {
public:
    explicit QuietProgress(Progress& outer) : m_outer(outer) {}
    bool report(double, std::string_view) override { return !m_outer.stopRequested(); }
    bool stopRequested() override { return m_outer.stopRequested(); }

private:
    Progress& m_outer;
};

/// Adapts a callable (and optionally one for stopRequested()).
class FunctionProgress final : public Progress {
public:
    explicit FunctionProgress(std::function<bool(double, std::string_view)> fn,
                              std::function<bool()> stop = {})
        : m_fn(std::move(fn)), m_stop(std::move(stop)) {}
    bool report(double f, std::string_view s) override { return m_fn ? m_fn(f, s) : true; }
    bool stopRequested() override { return m_stop && m_stop(); }

private:
    std::function<bool(double, std::string_view)> m_fn;
    std::function<bool()> m_stop;
};

/// Maps a part of a job onto [from, to] of the outer sink (fractions clamped to [0,1]), with
/// `prefix` before each stage label: `RangeProgress sub(p, 0.4, 0.85, "divergence: ")`.
class RangeProgress final : public Progress {
public:
    RangeProgress(Progress& outer, double from, double to, std::string prefix = {})
        : m_outer(outer), m_from(from), m_to(to), m_prefix(std::move(prefix)) {}
    bool report(double f, std::string_view stage) override {
        const double x = m_from + (m_to - m_from) * std::clamp(f, 0.0, 1.0);
        if (m_prefix.empty()) return m_outer.report(x, stage);
        return m_outer.report(x, m_prefix + std::string(stage));
    }
    bool stopRequested() override { return m_outer.stopRequested(); }

private:
    Progress& m_outer;
    double m_from, m_to;
    std::string m_prefix;
};

} // namespace lcw
