#include "core/eval/chunk_runner.h"

#include "core/runtime/cancel.h"

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>

#include <omp.h>

namespace lcw {

bool runChunks(int64_t n, int workers, Progress& progress, const std::string& startStage,
               const std::function<void(int64_t, int)>& work,
               const std::function<std::string(int64_t, int, int64_t)>& finish) {
    using Clock = std::chrono::steady_clock;
    std::atomic<bool> cancelled{!progress.report(0.0, startStage)};
    std::mutex mu;
    std::exception_ptr error;
    int64_t finished = 0;
    // What the sink saw last (under mu): re-reported from inside a chunk so that its answer to
    // a cancellation reaches the chunk's forward passes within one block.
    double lastFraction = 0.0;
    std::string lastStage = startStage;
    std::atomic<int64_t> lastPollNs{Clock::now().time_since_epoch().count()};
    constexpr int64_t kPollIntervalNs = 100'000'000; // 0.1 s
    auto poll = [&]() -> bool {
        if (cancelled.load(std::memory_order_relaxed)) return false;
        const int64_t now = Clock::now().time_since_epoch().count();
        if (now - lastPollNs.load(std::memory_order_relaxed) < kPollIntervalNs) return true;
        std::unique_lock<std::mutex> lock(mu, std::try_to_lock);
        if (!lock.owns_lock()) return true; // another thread is reporting now
        lastPollNs.store(now, std::memory_order_relaxed);
        if (!cancelled.load() && !progress.report(lastFraction, lastStage)) cancelled = true;
        return !cancelled.load();
    };
    const CancelScope* outer = CancelScope::current();
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers) if (workers > 1)
    for (int64_t i = 0; i < n; ++i) {
        if (cancelled.load()) continue;
        const int thread = workers > 1 ? omp_get_thread_num() : 0;
        try {
            {
                // Forward passes inside work() check this before every block.
                const CancelScope scope(outer, poll);
                work(i, thread);
            }
            std::lock_guard<std::mutex> lock(mu);
            const std::string stage = finish(i, thread, ++finished);
            lastFraction = double(finished) / double(n);
            lastStage = stage;
            lastPollNs.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
            if (!cancelled.load() && !progress.report(lastFraction, stage)) cancelled = true;
        } catch (const Cancelled&) {
            cancelled = true; // the chunk is dropped; the ones done stay done
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu);
            if (!error) error = std::current_exception();
            cancelled = true;
        }
    }
    if (error) std::rethrow_exception(error);
    return !cancelled.load();
}

} // namespace lcw
