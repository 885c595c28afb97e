// The linear-layer driver: splits the output rows of one or several weights into tiles, runs
// them in one OpenMP region and picks the product for the weight's storage (kernels.h).
#include "core/common/error.h"
#include "core/common/parallel.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/cpu/qdot.h"
#include "core/runtime/cpu/simd.h"

#include <algorithm>

namespace lcw::kernels {

using namespace detail;

void linear(const TensorView& w, const float* x, int64_t ldx, int64_t nTok, float* y, int64_t ldy,
            const float* bias, int threads, bool exact) {
    const LinearJob job{&w, y, ldy, bias};
    linearBatch({&job, 1}, x, ldx, nTok, threads, exact);
}

namespace {
int64_t jobRows(const LinearJob& j) {
    return j.packed ? j.packed->rows() : j.w->rows();
}
int64_t jobCols(const LinearJob& j) {
    return j.packed ? j.packed->cols() : j.w->cols();
}
} // namespace

namespace {

/// What each job's tiles read besides the weight: GGUF block weights with an integer kernel read
/// the activations quantised once to the kernel's 8-bit blocks (unless `exact`); BF16 weights,
/// where the CPU has AVX-512 BF16, the activations rounded once to bf16 (unless `exact`); packed
/// lcw weights read their prepare()d activations; everything else reads x as float (null
/// entries).
struct PreparedInputs {
    const QDotKernel* qk[7] = {};
    const std::byte* data[7] = {};
    size_t ld[7] = {};
    bool bf16[7] = {};            ///< the job multiplies xb (bf16_dot.cpp)
    const uint16_t* xb = nullptr; ///< bf16 activations of the BF16 jobs (bf16RowStride(n) apart)
};

/// Whether a stored weight multiplies bf16 activations (bf16_dot.cpp).
bool usesBf16Dot(const LinearJob& job, bool exact) {
    return !job.packed && !exact && job.w->dtype == DType::BF16 &&
           (reinterpret_cast<uintptr_t>(job.w->data) & 1) == 0 && bf16DotAvailable();
}

PreparedInputs prepareInputs(std::span<const LinearJob> jobs, const float* x, int64_t ldx,
                             int64_t nTok, int64_t n, bool exact) {
    PreparedInputs p;
    thread_local std::vector<std::byte> prepBuf[7];
    thread_local std::vector<uint16_t> bf16Buf;
    for (size_t j = 0; j < jobs.size(); ++j) {
        const LinearJob& job = jobs[j];
        if (usesBf16Dot(job, exact)) {
            p.bf16[j] = true;
            if (!p.xb) {
                bf16Buf.resize(size_t(bf16RowStride(n) * nTok));
                toBf16Rows(x, ldx, nTok, n, bf16Buf.data());
                p.xb = bf16Buf.data();
            }
            continue;
        }
        if (job.packed) {
            const size_t b = job.packed->preparedBytes(nTok, job.act, exact);
            // Jobs with the same preparation share one buffer (q/k/v, gate/up).
            for (size_t i = 0; i < j && !p.data[j]; ++i)
                if (jobs[i].packed && jobs[i].act == job.act &&
                    jobs[i].packed->preparedBytes(nTok, job.act, exact) == b &&
                    jobs[i].packed->sharesPreparation(*job.packed))
                    p.data[j] = p.data[i];
            if (!p.data[j]) {
                if (prepBuf[j].size() < b) prepBuf[j].resize(b);
                job.packed->prepare(x, ldx, nTok, job.act, exact, prepBuf[j].data());
                p.data[j] = prepBuf[j].data();
            }
            continue;
        }
        if (exact || !dtypeIsQuantized(job.w->dtype)) continue;
        p.qk[j] = qdotKernel(job.w->dtype);
        if (!p.qk[j] || n % actBlockElems(p.qk[j]->act) != 0) {
            p.qk[j] = nullptr;
            continue;
        }
        p.ld[j] = actRowBytes(p.qk[j]->act, n);
        for (size_t i = 0; i < j && !p.data[j]; ++i)
            if (p.qk[i] && p.qk[i]->act == p.qk[j]->act) p.data[j] = p.data[i];
        if (!p.data[j]) {
            const size_t b = p.ld[j] * size_t(nTok);
            if (prepBuf[j].size() < b) prepBuf[j].resize(b);
            for (int64_t t = 0; t < nTok; ++t)
                p.qk[j]->quantizeRow(x + t * ldx, prepBuf[j].data() + size_t(t) * p.ld[j], n);
            p.data[j] = prepBuf[j].data();
        }
    }
    return p;
}

/// Rows [r0, r0 + rows) of one job (without its bias). `buf`: the thread's tile buffer.
void productTile(const LinearJob& job, const PreparedInputs& prep, size_t j, int64_t r0,
                 int64_t rows, const float* x, int64_t ldx, int64_t nTok, int64_t n, bool exact,
                 [[maybe_unused]] bool fused16, FloatBuffer& buf) {
    float* y = job.y;
    if (job.packed) {
        job.packed->gemm(r0, rows, prep.data[j], nTok, job.act, exact, y + r0, job.ldy);
        return;
    }
    const TensorView& w = *job.w;
    if (prep.bf16[j]) {
        gemmBf16Dot(reinterpret_cast<const uint16_t*>(w.data) + r0 * n, n, rows, prep.xb, nTok,
                    y + r0, job.ldy, n);
        return;
    }
    if (prep.qk[j]) {
        if (job.repacked && prep.qk[j]->gemmRepacked && r0 % kRepackRows == 0)
            prep.qk[j]->gemmRepacked(job.repacked +
                                         size_t(r0 / kRepackRows) * repackedGroupBytes(w.dtype, n),
                                     rows, prep.data[j], prep.ld[j], nTok, y + r0, job.ldy, n);
        else
            prep.qk[j]->gemm(w.row(r0), w.rowBytes(), rows, prep.data[j], prep.ld[j], nTok, y + r0,
                             job.ldy, n);
        return;
    }
#if LCW_X86
    // Decode with 16-bit floats: convert inside the product (one pass over the weights).
    if (fused16 && (w.dtype == DType::F16 || w.dtype == DType::BF16) &&
        (reinterpret_cast<uintptr_t>(w.data) & 1) == 0) {
        const auto* w16 = reinterpret_cast<const uint16_t*>(w.data) + r0 * n;
        gemmNT16(w.dtype == DType::BF16, w16, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
        return;
    }
#endif
    // F32 weights are read in place. A mapping that is not 32-byte aligned (safetensors only
    // guarantees 8) is copied tile by tile like any other dtype when the batch is large enough
    // for the copy to pay off (split vector loads slow the product ~25%).
    const float* wt;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(w.data + uint64_t(r0 * n) * 4);
    if (w.dtype == DType::F32 && addr % alignof(float) == 0 && (nTok < 16 || addr % 32 == 0)) {
        wt = reinterpret_cast<const float*>(w.data) + r0 * n;
    } else {
        if (buf.size() < size_t(rows * n)) buf.resize(size_t(rows * n));
        dequantizeRows(w, r0, rows, buf.data());
        wt = buf.data();
    }
    gemmNT(wt, n, rows, x, ldx, nTok, y + r0, job.ldy, n);
}

} // namespace

void linearBatch(std::span<const LinearJob> jobs, const float* x, int64_t ldx, int64_t nTok,
                 int threads, bool exact) {
    if (jobs.empty() || nTok <= 0) return;
    if (jobs.size() > 7) throw ArgumentError("linearBatch: at most 7 weights per call");
    const int64_t n = jobCols(jobs[0]);
    int64_t totalRows = 0;
    for (const auto& j : jobs) {
        if (!j.w && !j.packed) throw ArgumentError("linearBatch: a job without a weight");
        if (jobCols(j) != n) throw ArgumentError("linearBatch: weights differ in input size");
        totalRows += jobRows(j);
    }
    if (totalRows <= 0) return;
    const int nt = resolveThreads(threads);
    const size_t nJobs = jobs.size();
    const PreparedInputs prep = prepareInputs(jobs, x, ldx, nTok, n, exact);

    // Repacked rows come in groups of 16: tiles start at a group.
    const int64_t align =
        std::any_of(jobs.begin(), jobs.end(), [](const LinearJob& j) { return j.repacked; })
            ? kRepackRows
            : 4;
    // The tiles of all jobs in one list (job, first row, rows), so that one parallel region (one
    // barrier) covers them; the calling thread's list, reused from call to call (the workers
    // read it through this reference).
    struct Tile {
        size_t job;
        int64_t r0, rows;
    };
    static thread_local std::vector<Tile> tileList;
    std::vector<Tile>& tiles = tileList;
    tiles.clear();
    if (nTok < 4) {
        // Decode reads every weight once: no tile is reused by later tokens, and each tile start
        // breaks a thread's sequential stream (the hardware and software prefetch restart
        // there), so tiles are long; but the threads meet at the region's end, and equal tiles
        // leave one thread waiting for up to a tile there. Guided tiles: each 1/(2·threads) of
        // the rows still left in the call, down to 2 groups of 16, so the first ones are long
        // and the last ones short. Against equal tiles of a quarter of a thread's share (1.1B,
        // 2 threads, Xeon, interleaved medians): Q4_K_M decode 33.5 → 34.7 tok/s, Q8_0 23.5 →
        // 24.1, F16 11.7 → 11.9, Q4_0 40.9 → 41.2; libgomp's share of a Q4_K_M decode profile
        // 8.8 → 6.3 %. (Equal quarter tiles had taken Llama-3-8B Q4_K_M from 9.0 tok/s with
        // 16-row tiles to 13.6: the tiles stay long where it matters.)
        const int64_t minRows = 2 * kRepackRows;
        int64_t left = totalRows;
        for (size_t j = 0; j < nJobs; ++j)
            for (int64_t r0 = 0, rows = jobRows(jobs[j]); r0 < rows;) {
                int64_t t = std::max(minRows, left / (2 * int64_t(nt)));
                t = std::min((t + align - 1) / align * align, rows - r0);
                tiles.push_back({j, r0, t});
                r0 += t, left -= t;
            }
    } else {
        // Row tile: at most ~256 KiB of the weights as the product reads them (stays in L2
        // while every token of the batch passes over it; float rows at 4 bytes per value, the
        // repacked block types in their own bytes, the largest row of the batch counting), a
        // multiple of 4 rows, and small enough that every thread gets several tiles (dynamic
        // scheduling evens out the load). Sizing the repacked types by their bytes (2-7 times
        // the rows of float rows) lets fewer tiles each stream the batch's activations and
        // recompute their per-token block sums (1.1B, 512 tokens, Xeon, interleaved: Q4_0
        // prefill 126-142 -> 159-178 tok/s, Q4_K_M 121-134 -> 132-151, Q6_K within noise).
        size_t rowBytes = 1;
        for (const auto& j : jobs)
            rowBytes =
                std::max(rowBytes, j.repacked ? repackedGroupBytes(j.w->dtype, n) / kRepackRows
                                              : size_t(std::max<int64_t>(n, 1)) * sizeof(float));
        int64_t R = std::clamp<int64_t>(int64_t(262144 / rowBytes) & ~int64_t(3), 4, 256);
        while (R > 4 && totalRows / R < 8 * nt) R = std::max<int64_t>(4, (R / 2) & ~int64_t(3));
        // Packed prefill: the dense integer kernel runs 16 rows at a time (packed_kernels.inc,
        // intDenseRows), and 16 rows of packed codes are far below the float bound above.
        if (nTok >= 8 &&
            std::any_of(jobs.begin(), jobs.end(), [](const LinearJob& j) { return j.packed; }))
            R = std::max<int64_t>(R, 16);
        R = std::max<int64_t>(align, R / align * align);
        for (size_t j = 0; j < nJobs; ++j)
            for (int64_t r0 = 0, rows = jobRows(jobs[j]); r0 < rows; r0 += R)
                tiles.push_back({j, r0, std::min(R, rows - r0)});
    }
    const int64_t nTiles = int64_t(tiles.size());
    // Below ~256K multiply-adds (~20 us on one core) a parallel region costs more than it saves,
    // and far more when the cores are shared with other processes (spinning barriers).
    const bool parallel = nt > 1 && nTiles > 1 && totalRows * n * nTok >= kMinParallelWork;

    // Converting a tile once pays off when several tokens reuse it; for one to three tokens the
    // conversion is folded into the product instead.
    const bool fused16 = nTok < 4 && activeIsa() != Isa::Generic;

    ParallelErrors errors; // allocation, packed kernels
#pragma omp parallel num_threads(nt) if (parallel)
    {
        thread_local FloatBuffer buf;
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < nTiles; ++tile)
            errors.run([&] {
                const Tile& tl = tiles[size_t(tile)];
                const LinearJob& job = jobs[tl.job];
                const int64_t r0 = tl.r0, rows = tl.rows;
                productTile(job, prep, tl.job, r0, rows, x, ldx, nTok, n, exact, fused16, buf);
                if (job.bias)
                    for (int64_t t = 0; t < nTok; ++t)
                        for (int64_t r = 0; r < rows; ++r)
                            job.y[t * job.ldy + r0 + r] += job.bias[r0 + r];
            });
    }
    errors.rethrow();
}

} // namespace lcw::kernels
