#pragma once
/// \file
/// The progress sink every long job takes. report() returns false to ask the job to stop;
/// the job then returns Status::Cancelled (it never throws for cancellation).
#include <functional>
#include <string_view>

namespace lcw {

class Progress {
public:
    virtual ~Progress() = default;
    /// fraction in [0,1]; stage is a short human label ("loading", "chunk 3/367").
    /// Return false to request cancellation.
    virtual bool report(double fraction, std::string_view stage) = 0;
};

/// Accepts everything and never cancels.
class NullProgress final : public Progress {
public:
    bool report(double, std::string_view) override { return true; }
};

/// Adapts a callable.
class FunctionProgress final : public Progress {
public:
    explicit FunctionProgress(std::function<bool(double, std::string_view)> fn)
        : m_fn(std::move(fn)) {}
    bool report(double f, std::string_view s) override { return m_fn ? m_fn(f, s) : true; }

private:
    std::function<bool(double, std::string_view)> m_fn;
};

} // namespace lcw
