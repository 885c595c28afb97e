#pragma once
/// \file
/// Activation top-K sparsity of linear inputs (Q-Sparse) and the count of multiply-accumulates
/// (MACs) the weight products did and could skip. Internal to core/runtime, exposed for tests.
/// The definition of top-K is in core/model/runtime_quant.h (ActQuantSpec::topk).
#include "core/runtime/cpu/kernels.h"

#include <atomic>
#include <cstdint>
#include <span>

namespace lcw::runtime {

/// Entries kept per token of `dim`: clamp(ceil(topk * dim), 1, dim) (topk >= 1: dim). The
/// product topk * dim is rounded up after subtracting 1e-3, so a float fraction that is a hair
/// above the intended one (0.3f * 10) keeps the intended count.
int64_t topKCount(float topk, int64_t dim);

/// out[t, c] = x[t, c] for the topKCount(topk, dim) channels of largest |x[t, c]| of each row
/// t < n (ties: lower channel first), else 0. Rows of stride ldx / ldo; in place allowed.
/// Parallel over rows.
void topKSparsify(float topk, const float* x, int64_t ldx, float* out, int64_t ldo, int64_t n,
                  int64_t dim, int threads);

/// MACs of weight products: `dense` counts every product row × column × token, `zeroInput`
/// those whose input entry is exactly zero (the columns a product could skip: after top-K,
/// ReLU zeros, and for stored weights the zeros of the fake-quantised input; a packed weight's
/// own input quantisation is not seen). Thread-safe (relaxed atomics).
struct MacCounter {
    std::atomic<int64_t> dense{0}, zeroInput{0};
    void reset() {
        dense = 0;
        zeroInput = 0;
    }
};

/// Adds one linearBatch call (jobs sharing the input x [n, ldx]) to c: each job's rows times
/// the columns of x (the job's weight columns) per token.
void countMacs(MacCounter& c, std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
               int64_t n);

} // namespace lcw::runtime
