// Gram matrices and per-channel statistics: the CPU reference and the choice of device.
#include "core/runtime/device_ops.h"

#include "core/common/error.h"

#ifdef LCW_HAVE_VULKAN
#include "core/runtime/vulkan/vk_reduce.h"
#endif

#include <Eigen/Dense>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>

namespace lcw::runtime {

namespace {

std::atomic<int64_t> gMinDim{256};
std::atomic<int64_t> gDeviceRuns{0};
std::atomic<int64_t> gFailAfter{-1};

#ifdef LCW_HAVE_VULKAN
/// Called before every device batch: throws when the test hook says this one fails.
void checkInjectedFailure() {
    int64_t left = gFailAfter.load();
    while (left >= 0 && !gFailAfter.compare_exchange_weak(left, left - 1)) {
    }
    if (left == 0) throw Error("injected device failure (test hook)");
}

/// Feeds rows x [n, width] to a device accumulator in batches of its maxRows(). Returns n, or on
/// a device error the rows fed before it (their sums are on the device; the caller reads them
/// back and carries on on the CPU) with the error in *why.
template <class Dev>
int64_t feedDevice(Dev& dev, const float* x, int64_t n, int64_t width, std::string* why) {
    int64_t done = 0;
    try {
        for (; done < n; done += dev.maxRows()) {
            checkInjectedFailure();
            dev.add(x + done * width, std::min(dev.maxRows(), n - done));
            ++gDeviceRuns;
        }
        return n;
    } catch (const std::exception& e) {
        *why = e.what();
        return done;
    }
}
#endif

/// The Vulkan device index for a reduction of width `width` on `spec`, or -1 for the CPU
/// (`note` says why when a Vulkan device was asked for but cannot serve).
int pickVulkan(const DeviceSpec& spec, int64_t width, std::string* note) {
    if (!spec.vulkan || width < gMinDim.load()) return -1;
    const DeviceInfo d = resolveDevice(spec, note);
    if (d.id.rfind("vulkan:", 0) != 0) return -1;
    return std::stoi(d.id.substr(7));
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LCW_KERNEL __attribute__((target_clones("avx2", "default"), noinline))
#else
#define LCW_KERNEL
#endif

struct ChAcc {
    double *s1, *s2, *s3, *s4, *mn, *mx, *sa;
    const float* shift;
};

/// Adds one row to the per-channel shifted power sums, extrema and sum |x|.
LCW_KERNEL void channelAccum(const float* r, int64_t C, ChAcc a) {
    double *s1 = a.s1, *s2 = a.s2, *s3 = a.s3, *s4 = a.s4, *mn = a.mn, *mx = a.mx, *sa = a.sa;
    const float* sh = a.shift;
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
        const double v = r[j];
        const double d = v - double(sh[j]), d2 = d * d;
        s1[j] += d;
        s2[j] += d2;
        s3[j] += d2 * d;
        s4[j] += d2 * d2;
        const double om = mn[j], ox = mx[j];
        mn[j] = v < om ? v : om;
        mx[j] = v > ox ? v : ox;
        sa[j] += std::fabs(v);
    }
}

} // namespace

void setDeviceReduceMinDim(int64_t dim) {
    gMinDim = std::max<int64_t>(dim, 0);
}
int64_t deviceReduceMinDim() {
    return gMinDim;
}
int64_t deviceReductionsRun() {
    return gDeviceRuns;
}
void failDeviceReductionAfterForTests(int64_t n) {
    gFailAfter = n < 0 ? -1 : n;
}

// ------------------------------------------------------------------------------------ Gram

using MatRD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatRF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct GramAccumulator::Impl {
    int64_t dim = 0, rows = 0;
    std::string note;
    Eigen::MatrixXd cpu; ///< the rows summed on the CPU (empty until the first)
#ifdef LCW_HAVE_VULKAN
    std::unique_ptr<vulkan::DeviceGram> dev;
#endif

    void addCpu(const float* x, int64_t n) {
        if (n <= 0) return;
        if (cpu.size() == 0) cpu = Eigen::MatrixXd::Zero(dim, dim);
        // X^T X of this batch in double, as one matrix-matrix product.
        const MatRD Xd = Eigen::Map<const MatRF>(x, n, dim).cast<double>();
        cpu.noalias() += Xd.transpose() * Xd;
    }
};

GramAccumulator::GramAccumulator(const DeviceSpec& device, int64_t dim) : m(new Impl) {
    if (dim < 1) throw ArgumentError("GramAccumulator: width " + std::to_string(dim));
    m->dim = dim;
    const int index = pickVulkan(device, dim, &m->note);
#ifdef LCW_HAVE_VULKAN
    if (index >= 0) try {
            m->dev = std::make_unique<vulkan::DeviceGram>(index, dim);
        } catch (const std::exception& e) {
            m->note = std::string("Vulkan: ") + e.what() + "; the Gram matrix is summed on the CPU";
        }
#else
    (void)index;
#endif
}

GramAccumulator::~GramAccumulator() = default;

void GramAccumulator::add(const float* x, int64_t n) {
    if (n <= 0) return;
#ifdef LCW_HAVE_VULKAN
    if (m->dev) {
        std::string why;
        const int64_t done = feedDevice(*m->dev, x, n, m->dim, &why);
        if (done < n) {
            // Carry on on the CPU with what the device holds (if it cannot be read back, the
            // sum is lost: that is an error, not a silent difference).
            if (m->cpu.size() == 0) m->cpu = Eigen::MatrixXd::Zero(m->dim, m->dim);
            MatRD held = MatRD::Zero(m->dim, m->dim);
            m->dev->addTo(held.data());
            m->cpu += held;
            m->dev.reset();
            m->note = "Vulkan: " + why + "; carried on on the CPU";
            m->addCpu(x + done * m->dim, n - done);
        }
        m->rows += n;
        return;
    }
#endif
    m->addCpu(x, n);
    m->rows += n;
}

void GramAccumulator::result(double* out) const {
    Eigen::Map<MatRD> o(out, m->dim, m->dim);
    if (m->cpu.size())
        o = m->cpu;
    else
        o.setZero();
#ifdef LCW_HAVE_VULKAN
    if (m->dev) m->dev->addTo(out);
#endif
}

int64_t GramAccumulator::dim() const {
    return m->dim;
}
int64_t GramAccumulator::rows() const {
    return m->rows;
}
bool GramAccumulator::onDevice() const {
#ifdef LCW_HAVE_VULKAN
    return m->dev != nullptr;
#else
    return false;
#endif
}
const std::string& GramAccumulator::note() const {
    return m->note;
}

// ------------------------------------------------------------------------ channel statistics

double ChannelSums::absMax(size_t j) const {
    if (rows == 0) return 0;
    return std::max(std::fabs(min[j]), std::fabs(max[j]));
}

struct ChannelStatsAccumulator::Impl {
    int64_t ch = 0;
    bool shiftFirst = false;
    ChannelSums cpu; ///< rows summed on the CPU, and the shift
#ifdef LCW_HAVE_VULKAN
    std::unique_ptr<vulkan::DeviceChannelStats> dev;
#endif
    std::string note;

    void addCpu(const float* x, int64_t n) {
        const int64_t C = ch;
        double* s1 = cpu.s1.data();
        double* s2 = cpu.s2.data();
        double* s3 = cpu.s3.data();
        double* s4 = cpu.s4.data();
        double* mn = cpu.min.data();
        double* mx = cpu.max.data();
        double* sa = cpu.sumAbs.data();
        const float* sh = cpu.shift.data();
        constexpr int64_t kChunk = 64;
        const int64_t nChunks = (C + kChunk - 1) / kChunk;
        // The session calls observers from one thread; spread big batches over the OpenMP
        // threads (threads own disjoint channel ranges).
        const bool par = n * C >= 16384 && omp_get_max_threads() > 1 && !omp_in_parallel();
        // omp: nothrow (sums into allocated buffers)
#pragma omp parallel for if (par) schedule(static)
        for (int64_t cb = 0; cb < nChunks; ++cb) {
            const int64_t c0 = cb * kChunk, cn = std::min(kChunk, C - c0);
            const ChAcc acc{s1 + c0, s2 + c0, s3 + c0, s4 + c0, mn + c0, mx + c0, sa + c0, sh + c0};
            for (int64_t t = 0; t < n; ++t) channelAccum(x + t * C + c0, cn, acc);
        }
    }
};

ChannelStatsAccumulator::ChannelStatsAccumulator(const DeviceSpec& device, int64_t channels,
                                                 bool shiftFirstRow)
    : m(new Impl) {
    if (channels < 1)
        throw ArgumentError("ChannelStatsAccumulator: " + std::to_string(channels) + " channels");
    m->ch = channels;
    m->shiftFirst = shiftFirstRow;
    const size_t C = size_t(channels);
    ChannelSums& c = m->cpu;
    c.shift.assign(C, 0.0f);
    for (auto* v : {&c.s1, &c.s2, &c.s3, &c.s4, &c.sumAbs}) v->assign(C, 0.0);
    c.min.assign(C, INFINITY);
    c.max.assign(C, -INFINITY);
    const int index = pickVulkan(device, channels, &m->note);
#ifdef LCW_HAVE_VULKAN
    if (index >= 0) try {
            m->dev = std::make_unique<vulkan::DeviceChannelStats>(index, channels);
        } catch (const std::exception& e) {
            m->note = std::string("Vulkan: ") + e.what() + "; channel statistics on the CPU";
        }
#else
    (void)index;
#endif
}

ChannelStatsAccumulator::~ChannelStatsAccumulator() = default;

void ChannelStatsAccumulator::add(const float* x, int64_t n) {
    if (n <= 0) return;
    ChannelSums& c = m->cpu;
    const bool first = c.rows == 0;
    if (first && m->shiftFirst) c.shift.assign(x, x + m->ch); // shift by the first row
    c.rows += n;
#ifdef LCW_HAVE_VULKAN
    if (m->dev) {
        std::string why;
        int64_t done = 0;
        try {
            if (first && m->shiftFirst) m->dev->setShift(c.shift.data());
            done = feedDevice(*m->dev, x, n, m->ch, &why);
        } catch (const std::exception& e) {
            why = e.what(); // setShift failed: nothing was fed
        }
        if (done < n) {
            m->dev->addTo(c.s1.data(), c.s2.data(), c.s3.data(), c.s4.data(), c.sumAbs.data(),
                          c.min.data(), c.max.data());
            m->dev.reset();
            m->note = "Vulkan: " + why + "; carried on on the CPU";
            m->addCpu(x + done * m->ch, n - done);
        }
        return;
    }
#endif
    m->addCpu(x, n);
}

ChannelSums ChannelStatsAccumulator::result() const {
    ChannelSums r = m->cpu;
#ifdef LCW_HAVE_VULKAN
    if (m->dev)
        m->dev->addTo(r.s1.data(), r.s2.data(), r.s3.data(), r.s4.data(), r.sumAbs.data(),
                      r.min.data(), r.max.data());
#endif
    return r;
}

int64_t ChannelStatsAccumulator::channels() const {
    return m->ch;
}
bool ChannelStatsAccumulator::onDevice() const {
#ifdef LCW_HAVE_VULKAN
    return m->dev != nullptr;
#else
    return false;
#endif
}
const std::string& ChannelStatsAccumulator::note() const {
    return m->note;
}

} // namespace lcw::runtime
