// The linear-layer driver: splits the output rows of one or several weights into tiles, runs
// them in one OpenMP region and picks the product for the weight's storage (kernels.h).
#include "core/common/error.h"
#include "core/runtime/kernels.h"
#include "core/runtime/simd.h"

#include <algorithm>

namespace lcw::kernels {

using namespace detail;

void linear(const TensorView& w, const float* x, int64_t ldx, int64_t nTok, float* y, int64_t ldy,
            const float* bias, int threads) {
    const LinearJob job{&w, y, ldy, bias};
    linearBatch({&job, 1}, x, ldx, nTok, threads);
}

void linearBatch(std::span<const LinearJob> jobs, const float* x, int64_t ldx, int64_t nTok,
                 int threads) {
    if (jobs.empty() || nTok <= 0) return;
    const int64_t n = jobs[0].w->cols();
    int64_t totalRows = 0;
    for (const auto& j : jobs) {
        if (j.w->cols() != n) throw ArgumentError("linearBatch: weights differ in input size");
        totalRows += j.w->rows();
    }
    if (totalRows <= 0) return;
    const int nt = resolveThreads(threads);

    // Row tile: at most ~256 KiB of float weights (stays in L2 while every token of the batch
    // passes over it), a multiple of 4 rows, and small enough that every thread gets several
    // tiles (dynamic scheduling evens out the load).
    int64_t R = std::clamp<int64_t>((65536 / std::max<int64_t>(n, 1)) & ~int64_t(3), 4, 256);
    while (R > 4 && totalRows / R < 8 * nt) R = std::max<int64_t>(4, (R / 2) & ~int64_t(3));
    // Tiles of all jobs in one list, so that one parallel region (one barrier) covers them.
    int64_t tileStart[8] = {0};
    const size_t nJobs = std::min<size_t>(jobs.size(), 7);
    if (jobs.size() > 7) throw ArgumentError("linearBatch: at most 7 weights per call");
    for (size_t j = 0; j < nJobs; ++j)
        tileStart[j + 1] = tileStart[j] + (jobs[j].w->rows() + R - 1) / R;
    const int64_t nTiles = tileStart[nJobs];
    // Below ~256K multiply-adds (~20 us on one core) a parallel region costs more than it saves,
    // and far more when the cores are shared with other processes (spinning barriers).
    const bool parallel = nt > 1 && nTiles > 1 && totalRows * n * nTok >= kMinParallelWork;

    // Converting a tile once pays off when several tokens reuse it; for one to three tokens the
    // conversion is folded into the product instead.
    [[maybe_unused]] const bool fused16 = nTok < 4 && activeIsa() != Isa::Generic;

#pragma omp parallel num_threads(nt) if (parallel)
    {
        thread_local FloatBuffer buf;
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < nTiles; ++tile) {
            size_t j = 0;
            while (tile >= tileStart[j + 1]) ++j;
            const LinearJob& job = jobs[j];
            const TensorView& w = *job.w;
            const int64_t r0 = (tile - tileStart[j]) * R;
            const int64_t rows = std::min(R, w.rows() - r0);
            // F32 weights are read in place. A mapping that is not 32-byte aligned (safetensors
            // only guarantees 8) is copied tile by tile like any other dtype when the batch is
            // large enough for the copy to pay off (split vector loads slow the product ~25%).
            float* y = job.y;
#if LCW_X86
            // Decode with 16-bit floats: convert inside the product (one pass over the weights).
            if (fused16 && (w.dtype == DType::F16 || w.dtype == DType::BF16) &&
                (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
                const auto* w16 = reinterpret_cast<const uint16_t*>(w.data) + r0 * n;
                gemmNT16(w.dtype == DType::BF16, w16, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
                if (job.bias)
                    for (int64_t t = 0; t < nTok; ++t)
                        for (int64_t r = 0; r < rows; ++r)
                            y[t * job.ldy + r0 + r] += job.bias[r0 + r];
                continue;
            }
#endif
            const float* wt;
            const uintptr_t addr = reinterpret_cast<uintptr_t>(w.data + uint64_t(r0 * n) * 4);
            if (w.dtype == DType::F32 && addr % alignof(float) == 0 &&
                (nTok < 16 || addr % 32 == 0)) {
                wt = reinterpret_cast<const float*>(w.data) + r0 * n;
            } else {
                if (buf.size() < size_t(R * n)) buf.resize(size_t(R * n));
                dequantizeRows(w, r0, rows, buf.data());
                wt = buf.data();
            }
            gemmNT(wt, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
            if (job.bias)
                for (int64_t t = 0; t < nTok; ++t)
                    for (int64_t r = 0; r < rows; ++r) y[t * job.ldy + r0 + r] += job.bias[r0 + r];
        }
    }
}

} // namespace lcw::kernels
