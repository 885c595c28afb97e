#include "core/runtime/activation_sparsity.h"

#include "core/common/tensor.h"
#include "core/runtime/cpu/packed_linear.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <omp.h>
#include <vector>

namespace lcw::runtime {

namespace {
/// |v|, NaN ranked above everything (a strict weak order for the selection).
inline float magnitude(float v) {
    return std::isnan(v) ? INFINITY : std::fabs(v);
}
} // namespace

int64_t topKCount(float topk, int64_t dim) {
    if (dim <= 0) return 0;
    if (!(topk < 1.0f)) return dim;
    const double k = std::ceil(double(topk) * double(dim) - 1e-3);
    return std::clamp<int64_t>(int64_t(k), 1, dim);
}

void topKSparsify(float topk, const float* x, int64_t ldx, float* out, int64_t ldo, int64_t n,
                  int64_t dim, int threads) {
    const int64_t keep = topKCount(topk, dim);
    const int nth = threads > 0 ? threads : omp_get_max_threads();
    // Per-thread scratch, allocated before the region: the row (in place: read before writing)
    // and the channel order.
    std::vector<int32_t> idxAll(size_t(nth) * size_t(dim));
    std::vector<float> rowAll(size_t(nth) * size_t(dim));
    // omp: nothrow (selection and copies into the caller's buffers)
#pragma omp parallel for schedule(static) num_threads(nth) if (n * dim >= 4096)
    for (int64_t t = 0; t < n; ++t) {
        const size_t off = size_t(omp_get_thread_num()) * size_t(dim);
        float* r = rowAll.data() + off;
        int32_t* idx = idxAll.data() + off;
        const float* xr = x + t * ldx;
        float* o = out + t * ldo;
        std::copy(xr, xr + dim, r);
        if (keep >= dim) {
            std::copy(r, r + dim, o);
            continue;
        }
        std::iota(idx, idx + dim, 0);
        std::nth_element(idx, idx + keep, idx + dim, [r](int32_t a, int32_t b) {
            const float fa = magnitude(r[a]), fb = magnitude(r[b]);
            return fa > fb || (fa == fb && a < b);
        });
        std::fill(o, o + dim, 0.0f);
        for (int64_t i = 0; i < keep; ++i) o[idx[i]] = r[idx[i]];
    }
}

void countMacs(MacCounter& c, std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
               int64_t n) {
    if (jobs.empty() || n <= 0) return;
    const kernels::LinearJob& j0 = jobs[0];
    const int64_t cols = j0.packed ? j0.packed->cols() : j0.w ? j0.w->cols() : 0;
    int64_t rows = 0;
    for (const kernels::LinearJob& j : jobs)
        rows += j.packed ? j.packed->rows() : j.w ? j.w->rows() : 0;
    int64_t zeros = 0;
    for (int64_t t = 0; t < n; ++t) {
        const float* xr = x + t * ldx;
        for (int64_t i = 0; i < cols; ++i) zeros += xr[i] == 0.0f;
    }
    c.dense.fetch_add(n * cols * rows, std::memory_order_relaxed);
    c.zeroInput.fetch_add(zeros * rows, std::memory_order_relaxed);
}

} // namespace lcw::runtime
