#pragma once
/// \file
/// Reductions over activations on a compute device: the Gram matrix X^T X (GPTQ / SparseGPT
/// Hessians) and per-channel statistics (abs-max, moments) that calibration and activation
/// statistics accumulate while text streams through a model. Rows of X arrive in batches
/// (host memory, f32, row-major); the result is read once at the end.
///
///   runtime::GramAccumulator g(runtime::defaultDevice(), dim);
///   g.add(x, n);              // x [n, dim], as often as needed
///   std::vector<double> G(dim * dim);
///   g.result(G.data());       // sum over all rows of x_t^T x_t, both triangles
///
/// The CPU is the reference (double-precision sums). A Vulkan device is used when the spec
/// resolves to one and the width pays off (dim >= deviceReduceMinDim(), 256 by default); the
/// device accumulates in f32 and folds partial sums into float-float (about 48-bit) totals:
///  - Gram: each entry's f32 partial sums cover at most 64 rows (fma products), so an entry
///    differs from the double sum by about 1e-7 of sum_t |x_ti x_tj|; checked to 1e-5 of the
///    Frobenius norm.
///  - channel statistics: d = x - shift, d^2, d^3, d^4 are rounded to f32 per element (the CPU
///    keeps them in double), the sums are float-float: relative error ~1e-7 of sum |d^k|;
///    minimum, maximum and abs-max are exact.
/// Without Vulkan (not compiled in, no device, LCW_NO_VULKAN, too little device memory, a
/// device error at any point) the accumulators run, or carry on, on the CPU; note() says why.
#include "core/runtime/device.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lcw::runtime {

/// The smallest width (Gram dim, channel count) that goes to a Vulkan device; process-wide.
/// 0 sends every width (tests); default 256.
void setDeviceReduceMinDim(int64_t dim);
int64_t deviceReduceMinDim();
/// Batches reduced on a Vulkan device since the process started (tests check the path ran).
int64_t deviceReductionsRun();
/// Test hook: the device batch after the next `n` fails as a device error would (the
/// accumulator reads back what the device holds and carries on on the CPU); n < 0: never.
void failDeviceReductionAfterForTests(int64_t n);

/// Sum over rows of x^T x for rows x of width dim.
class GramAccumulator {
public:
    GramAccumulator(const DeviceSpec& device, int64_t dim);
    ~GramAccumulator();
    GramAccumulator(const GramAccumulator&) = delete;
    GramAccumulator& operator=(const GramAccumulator&) = delete;

    /// Adds rows x [n, dim] (row-major). n may be 0.
    void add(const float* x, int64_t n);
    /// Writes the dim x dim sum (row-major, both triangles, exactly symmetric) to out.
    void result(double* out) const;
    int64_t dim() const;
    int64_t rows() const;
    /// Whether the sums live on a Vulkan device now.
    bool onDevice() const;
    /// Why the CPU is used although a Vulkan device was asked for (empty otherwise).
    const std::string& note() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m;
};

/// Per-channel sums over rows: power sums of d = x - shift (k = 1..4), sum |x|, min and max.
struct ChannelSums {
    int64_t rows = 0;
    std::vector<float> shift; ///< per channel (all 0 unless shifted by the first row)
    std::vector<double> s1, s2, s3, s4, sumAbs, min, max;
    /// max(|min|, |max|) of channel j (0 before any row).
    double absMax(size_t j) const;
};

class ChannelStatsAccumulator {
public:
    /// shiftFirstRow: the power sums are of x minus the first row added (stable moments, as
    /// activation statistics keep them); else of x itself (s2 = sum x^2).
    ChannelStatsAccumulator(const DeviceSpec& device, int64_t channels, bool shiftFirstRow);
    ~ChannelStatsAccumulator();
    ChannelStatsAccumulator(const ChannelStatsAccumulator&) = delete;
    ChannelStatsAccumulator& operator=(const ChannelStatsAccumulator&) = delete;

    /// Adds rows x [n, channels] (row-major).
    void add(const float* x, int64_t n);
    ChannelSums result() const;
    int64_t channels() const;
    bool onDevice() const;
    const std::string& note() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m;
};

} // namespace lcw::runtime
