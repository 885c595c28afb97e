#pragma once
// Shared by the Vulkan backend tests: the skip when no Vulkan device exists, stubs of the test
// hooks for builds without the backend, a short prefill + decode run on a chosen device and the
// demo model's perplexity on one.
#include "core/eval/perplexity.h"
#include "core/model/model.h"
#include "core/runtime/backend.h"
#include "core/runtime/device.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
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
inline int64_t deviceProductsForTests() {
    return 0;
}
inline int64_t residentForwardsForTests() {
    return 0;
}
inline int64_t submissionsForTests() {
    return 0;
}
inline uint64_t residentLogitsBytesForTests() {
    return 0;
}
} // namespace lcw::runtime::vulkan
#endif

namespace lcwtest {

/// The demo model's perplexity (ctx 128, float activations) on the first 6000 characters of the
/// bundled TinyStories text, with `device` as the process default (back to the CPU after).
inline double demoPerplexity(const lcw::Model& model, const char* device) {
    std::ifstream in(LCW_SOURCE_DIR "/resources/data/tinystories_eval.txt");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.resize(std::min<size_t>(text.size(), 6000));
    const auto tokens = model.tokenizer().encode(text, true);
    lcw::PerplexityOptions po;
    po.ctx = 128;
    po.exactActivations = true;
    lcw::NullProgress np;
    lcw::runtime::setDefaultDevice(device);
    struct Reset {
        ~Reset() { lcw::runtime::setDefaultDevice("cpu"); }
    } reset;
    return lcw::computePerplexity(model, tokens, po, np).ppl;
}

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

/// Checks y [nTok, ldy] against a double-precision product of the decoded weights w [rows, cols]
/// with x [nTok, ldx] (+ bias when given): |y - ref| <= 2e-6 * sum|w x| + 1e-6 per output, and
/// the padding column `rows` of each token row still -1 (untouched). Empty when all hold, else
/// the first failure, prefixed with `label` and weight number `index`.
inline QString checkAgainstDouble(const std::string& label, int index, const std::vector<float>& w,
                                  int64_t rows, int64_t cols, const std::vector<float>& x,
                                  int64_t ldx, const float* bias, const std::vector<float>& y,
                                  int64_t ldy, int64_t nTok) {
    for (int64_t t = 0; t < nTok; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
            double s = bias ? bias[r] : 0.0, mag = 0;
            for (int64_t k = 0; k < cols; ++k) {
                const double p = double(w[size_t(r * cols + k)]) * x[size_t(t * ldx + k)];
                s += p;
                mag += std::fabs(p);
            }
            const double got = y[size_t(t * ldy + r)];
            if (!(std::fabs(got - s) <= 2e-6 * mag + 1e-6))
                return QString("%1: weight %2 token %3 row %4: %5 vs %6 (|w||x| %7)")
                    .arg(QString::fromStdString(label))
                    .arg(index)
                    .arg(t)
                    .arg(r)
                    .arg(got, 0, 'g', 9)
                    .arg(s, 0, 'g', 9)
                    .arg(mag);
        }
        if (ldy > rows && y[size_t(t * ldy + rows)] != -1.0f)
            return QString("%1: weight %2 token %3: the padding after the rows was written")
                .arg(QString::fromStdString(label))
                .arg(index)
                .arg(t);
    }
    return {};
}

} // namespace lcwtest
