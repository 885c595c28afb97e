#pragma once
/// \file
/// The scheduling the chunked evaluations share (perplexity, divergence, tasks): independent
/// items run on OpenMP threads, merged under one lock, with progress, cancellation and the first
/// error carried out of the parallel region.
#include "core/common/progress.h"

#include <cstdint>
#include <functional>
#include <string>

namespace lcw {

/// Runs items 0..n−1 on `workers` OpenMP threads (dynamic, one item at a time; serially when
/// `workers` is 1) after progress.report(0, startStage).
/// - `work(i, thread)` does item i; `thread` in [0, workers) indexes per-thread sessions and
///   scratch.
/// - Then, under one lock, `finish(i, thread)` merges it and returns the stage label, and
///   progress.report(finished / n, label) runs; false stops handing out items.
/// - While `work` runs, a CancelScope on its thread polls progress.stopRequested() (and the
///   thread's enclosing scope): a cancellation stops the item's forward passes at the next block
///   (Session calls checkCancel() per block); the item is dropped, not merged.
/// - The first exception of any item stops the run and is rethrown once every thread has ended.
/// Returns false when cancelled (items done so far stay done: callers keep their own flags).
bool runChunks(
    int64_t n, int workers, Progress& progress, const std::string& startStage,
    const std::function<void(int64_t item, int thread)>& work,
    const std::function<std::string(int64_t item, int thread, int64_t finished)>& finish);

} // namespace lcw
