// The CPU backend: the kernels of kernels.h / packed_linear.h, the reference of every other
// backend.
#include "core/runtime/backend.h"

#include <atomic>

namespace lcw::runtime {

namespace {

class CpuBackend final : public Backend {
public:
    CpuBackend() : m_device(cpuDeviceInfo()) {}
    const DeviceInfo& device() const override { return m_device; }
    void linearBatch(std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
                     int64_t nTok, int threads, bool exact, int layer) override {
        (void)layer;
        kernels::linearBatch(jobs, x, ldx, nTok, threads, exact);
    }
    BackendCounters counters() const override { return {}; }

private:
    DeviceInfo m_device;
};

} // namespace

std::unique_ptr<Backend> makeCpuBackend() { return std::make_unique<CpuBackend>(); }

} // namespace lcw::runtime
