#pragma once
// Shared by the Vulkan backend tests: the skip when no Vulkan device exists, stubs of the test
// hooks for builds without the backend, and a short prefill + decode run on a chosen device.
#include "core/runtime/backend.h"
#include "core/runtime/device.h"
#include "core/runtime/session.h"

#include <QtTest>

#include <span>
#include <string>
#include <vector>

#define REQUIRE_VULKAN()                                                                           \
    do {                                                                                           \
        std::string why;                                                                           \
        if (lcw::runtime::listDevices(&why).size() < 2)                                            \
            QSKIP(qPrintable(QString("no Vulkan device: %1").arg(QString::fromStdString(why))));   \
    } while (0)

#ifndef LCW_HAVE_VULKAN
// A build without the Vulkan backend lists no Vulkan device: every test skips.
namespace lcw::runtime::vulkan {
inline void setBindingLimitForTests(uint64_t) {}
inline void setDeviceMemoryForTests(uint64_t) {}
inline int64_t attentionSplitDispatchesForTests() {
    return 0;
}
} // namespace lcw::runtime::vulkan
#endif

namespace lcwtest {

/// What one run on a device gave: logits of a 10-token prefill (all positions) and of two decode
/// steps, and where the work ran.
struct DeviceRun {
    std::vector<float> logits;
    std::string deviceId, note;
    int64_t products = 0, fallback = 0, attention = 0;
};

/// `ids` (12 tokens): prefill the first 10 with float activations, then decode 2, on `device`.
inline DeviceRun runOnDevice(const lcw::WeightSource& w, const char* device,
                             const std::vector<int32_t>& ids) {
    lcw::SessionOptions so;
    so.exactActivations = true;
    so.device = device;
    so.contextLength = 64;
    lcw::Session s(w, so);
    DeviceRun r;
    std::vector<float> step;
    s.forward(std::span(ids).first(10), r.logits, true);
    for (size_t k = 10; k < ids.size(); ++k) {
        s.forward(std::span(ids).subspan(k, 1), step);
        r.logits.insert(r.logits.end(), step.begin(), step.end());
    }
    r.deviceId = s.device().id;
    r.note = s.deviceNote();
    r.products = s.deviceProducts();
    r.fallback = s.fallbackProducts();
    r.attention = s.deviceAttention();
    return r;
}

} // namespace lcwtest
