// The CPU backend: the kernels of kernels.h / packed_linear.h, the reference of every other
// backend.
#include "core/runtime/backend.h"
#include "core/runtime/cpu/repack_cache.h"

#include <algorithm>

namespace lcw::runtime {

namespace {

class CpuBackend final : public Backend {
public:
    CpuBackend() : m_device(cpuDeviceInfo()) {}
    const DeviceInfo& device() const override { return m_device; }
    void linearBatch(std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
                     int64_t nTok, int threads, bool exact, int layer) override {
        (void)layer;
        if (exact || jobs.size() > 7)
            return kernels::linearBatch(jobs, x, ldx, nTok, threads, exact);
        // Stored GGUF block weights run from their repacked copy where the kernel has one.
        kernels::LinearJob local[7];
        std::copy(jobs.begin(), jobs.end(), local);
        for (size_t j = 0; j < jobs.size(); ++j)
            if (local[j].w && !local[j].packed && !local[j].repacked)
                local[j].repacked = m_repacked.get(*local[j].w);
        kernels::linearBatch({local, jobs.size()}, x, ldx, nTok, threads, exact);
    }
    BackendCounters counters() const override { return {}; }

private:
    DeviceInfo m_device;
    kernels::RepackCache m_repacked;
};

} // namespace

std::unique_ptr<Backend> makeCpuBackend() {
    return std::make_unique<CpuBackend>();
}

} // namespace lcw::runtime
