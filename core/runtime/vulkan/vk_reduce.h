#pragma once
/// \file
/// Internal to the Vulkan backend: the device halves of runtime/device_ops.h — a Gram matrix and
/// per-channel statistics accumulated on a device (shaders gram.comp, channel_stats.comp, in
/// float-float sums) and read back into double arrays. Every method may throw Error (no memory,
/// a binding too large, a lost device); the callers then carry on on the CPU.
#include "core/runtime/vulkan/vk_context.h"

#include <cstdint>
#include <memory>

namespace lcw::runtime::vulkan {

class DeviceGram {
public:
    DeviceGram(int index, int64_t dim);
    ~DeviceGram();
    DeviceGram(const DeviceGram&) = delete;
    DeviceGram& operator=(const DeviceGram&) = delete;
    /// The most rows one add() takes.
    int64_t maxRows() const { return m_maxRows; }
    /// Adds rows x [n, dim] (n <= maxRows()).
    void add(const float* x, int64_t n);
    /// Adds the device's sum to out [dim, dim] (both triangles).
    void addTo(double* out) const;

private:
    std::shared_ptr<Context> m_ctx;
    int64_t m_dim, m_maxRows = 0;
    Buffer m_acc, m_x;
};

class DeviceChannelStats {
public:
    DeviceChannelStats(int index, int64_t channels);
    ~DeviceChannelStats();
    DeviceChannelStats(const DeviceChannelStats&) = delete;
    DeviceChannelStats& operator=(const DeviceChannelStats&) = delete;
    int64_t maxRows() const { return m_maxRows; }
    /// The per-channel shift of the power sums (zeros until set).
    void setShift(const float* shift);
    void add(const float* x, int64_t n);
    /// Adds the device's sums to s1..s4 and sumAbs, and merges min / max.
    void addTo(double* s1, double* s2, double* s3, double* s4, double* sumAbs, double* mn,
               double* mx) const;

private:
    std::shared_ptr<Context> m_ctx;
    int64_t m_ch, m_maxRows = 0;
    Buffer m_acc, m_shift, m_x;
};

} // namespace lcw::runtime::vulkan
