#include "core/eval/chunk_runner.h"

#include "core/common/parallel.h"

#include "core/runtime/cancel.h"

#include <atomic>
#include <mutex>

#include <omp.h>

namespace lcw {

bool runChunks(int64_t n, int workers, Progress& progress, const std::string& startStage,
               const std::function<void(int64_t, int)>& work,
               const std::function<std::string(int64_t, int, int64_t)>& finish) {
    std::atomic<bool> cancelled{!progress.report(0.0, startStage)};
    std::mutex mu;
    ParallelErrors errors;
    int64_t finished = 0;
    // Checked before every block of the forward passes inside work(): the sink's answer to a
    // cancellation, or another chunk's failure, stops the chunk within a block, not at its end.
    auto poll = [&]() -> bool {
        if (cancelled.load(std::memory_order_relaxed) || errors.failed()) return false;
        if (progress.stopRequested()) cancelled = true;
        return !cancelled.load(std::memory_order_relaxed);
    };
    const CancelScope* outer = CancelScope::current();
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers) if (workers > 1)
    for (int64_t i = 0; i < n; ++i)
        errors.run([&] {
            if (cancelled.load()) return;
            const int thread = workers > 1 ? omp_get_thread_num() : 0;
            try {
                {
                    // Forward passes inside work() check this before every block.
                    const CancelScope scope(outer, poll);
                    work(i, thread);
                }
                std::lock_guard<std::mutex> lock(mu);
                const std::string stage = finish(i, thread, ++finished);
                if (!cancelled.load() && !progress.report(double(finished) / double(n), stage))
                    cancelled = true;
            } catch (const Cancelled&) {
                // The chunk is dropped; the ones done stay done. A Cancelled raised because another
                // chunk failed is not an error of its own: that chunk's error is rethrown below.
                if (!errors.failed()) cancelled = true;
            }
        });
    errors.rethrow();
    return !cancelled.load();
}

} // namespace lcw
