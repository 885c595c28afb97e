#pragma once
/// \file
/// Cancellation inside one step of a long job. Progress::report() is the job's way to learn that
/// it should stop, but a job reports between its steps (chunks, layers, sequences), and one step
/// can take minutes on a large model. A job (or whatever runs it: TaskRunner, runChunks) installs
/// a CancelScope on the thread that runs the step; code deep inside the step calls checkCancel()
/// at cheap, safe points (each block of a Session forward), which throws Cancelled once the
/// scope says stop. The job catches Cancelled and returns Status::Cancelled, as it does when
/// report() returns false.
#include "core/common/progress.h" // Cancelled

#include <functional>

namespace lcw {

class CancelScope;
void checkCancel();

class CancelScope {
public:
    /// `keepGoing` returns false to stop; it runs on this thread, as often as checkCancel() is
    /// called (once per transformer block): keep it cheap or throttle it.
    explicit CancelScope(std::function<bool()> keepGoing);
    /// Carries `outer` (a scope of another thread, taken with current() before a parallel
    /// region) onto this thread, inside the region: its checks then apply here too.
    explicit CancelScope(const CancelScope* outer, std::function<bool()> keepGoing = {});
    ~CancelScope();
    CancelScope(const CancelScope&) = delete;
    CancelScope& operator=(const CancelScope&) = delete;

    /// The innermost scope of the calling thread (nullptr when none).
    static const CancelScope* current();
    /// False once this scope or an enclosing one says stop.
    bool keepGoing() const;

private:
    friend void checkCancel();
    std::function<bool()> m_keepGoing;
    const CancelScope* m_outer;
    const CancelScope* m_previous; ///< the thread's scope before this one
    int m_level;
};

/// Throws Cancelled when the calling thread's scope says stop. A thread-local load and a
/// comparison when no scope is installed.
void checkCancel();

/// True while the calling thread's scope lets the job go on (no scope: true). Never throws.
bool keepGoing();

} // namespace lcw
