#pragma once
/// \file
/// Exceptions and OpenMP: an exception that leaves an OpenMP parallel region terminates the
/// process, so every region whose body can throw (allocations, lcw errors, cancellation) runs its
/// body through a ParallelErrors, which keeps the first exception and rethrows it after the region:
///
///     ParallelErrors errors;
///     #pragma omp parallel for
///     for (int64_t r = 0; r < rows; ++r)
///         errors.run([&] { work(r); });
///     errors.rethrow();
///
/// After a failure the remaining iterations return at once (OpenMP cannot leave a worksharing
/// loop early). Regions whose body is plain arithmetic on already-allocated memory and cannot
/// throw say so with a comment `// omp: nothrow (reason)` on the pragma's line or the line above;
/// tests/check_omp_regions.cmake fails the build's tests when a region in core/ has neither.
#include <atomic>
#include <exception>
#include <mutex>

namespace lcw {

class ParallelErrors {
public:
    /// Runs `body()` unless an earlier call failed; an exception it throws is kept (the first one
    /// wins) instead of propagating. Safe to call from any thread of the region.
    template <class F> void run(F&& body) noexcept {
        if (m_failed.load(std::memory_order_relaxed)) return;
        try {
            body();
        } catch (...) {
            std::lock_guard<std::mutex> lock(m_mutex);
            if (!m_error) m_error = std::current_exception();
            m_failed.store(true, std::memory_order_relaxed);
        }
    }
    /// True once a body has thrown.
    bool failed() const { return m_failed.load(std::memory_order_relaxed); }
    /// Rethrows the first exception, if any. Call after the region, on the calling thread.
    void rethrow() {
        if (m_error) std::rethrow_exception(m_error);
    }

private:
    std::atomic<bool> m_failed{false};
    std::mutex m_mutex;
    std::exception_ptr m_error;
};

} // namespace lcw
