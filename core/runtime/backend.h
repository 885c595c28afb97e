#pragma once
/// \file
/// Internal to core/runtime: where the runners' weight products run. The CPU backend
/// (cpu/cpu_backend.cpp) calls the kernels of kernels.h / packed_linear.h and is the reference;
/// the Vulkan backend (vulkan/) runs the same products in compute shaders and hands the jobs it
/// cannot run (yet) to the CPU kernels. One backend per Session; a backend may share the
/// weights it uploaded with other sessions over the same WeightSource.
#include "core/model/model.h"
#include "core/runtime/device.h"
#include "core/runtime/cpu/kernels.h"

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace lcw::runtime {

struct TransformerPlan; // transformer_plan.h

/// What a backend did so far (reports and tests).
struct BackendCounters {
    int64_t deviceProducts = 0;     ///< weight products run on the device
    int64_t fallbackProducts = 0;   ///< products the device could not run, run by the CPU kernels
    uint64_t deviceWeightBytes = 0; ///< weight bytes on the device that this backend uses
    /// Everything lcw holds on the device now (every session's weights, shared once, and
    /// scratch buffers).
    uint64_t deviceTotalBytes = 0;
    int64_t deviceAttention = 0;   ///< attention calls run on the device
    int64_t fallbackAttention = 0; ///< attention calls a device backend ran on the CPU
    /// Whole forward calls run resident on the device (transformerForward).
    int64_t deviceForwards = 0;
    /// Why the resident forward was not used (the first reason only; empty when it was, or on
    /// the CPU).
    std::string residentNote;
};

class Backend {
public:
    virtual ~Backend() = default;
    /// The device it runs on.
    virtual const DeviceInfo& device() const = 0;
    /// kernels::linearBatch's contract: y[t*ldy + o] = x[t] . W[o] (+ bias[o]) for every job.
    /// `layer`: the block the product belongs to (-1 embeddings / nLayers lm_head), for the
    /// GPU/CPU layer split.
    virtual void linearBatch(std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
                             int64_t nTok, int threads, bool exact, int layer) = 0;
    virtual BackendCounters counters() const = 0;
    /// kernels::attentionEx's contract over a float32 KV cache whose rows [pos0, pos0 + nTok)
    /// the runner has just written (kCache/vCache [ctx, nKvHeads*headDim], the same buffers on
    /// every call of a layer; pos0 == 0 starts a new sequence). The default runs the CPU kernel;
    /// a device backend may mirror the cache and run it there. (An F16 cache, which sessions
    /// hold on the CPU backend only, is read by kernels::attentionExF16 in the runner.)
    virtual void attention(int layer, const float* q, int64_t ldq, const float* kCache,
                           const float* vCache, float* out, int64_t ldo, int64_t nTok, int64_t pos0,
                           int64_t nHeads, int64_t nKvHeads, int64_t headDim,
                           const kernels::AttentionOptions& opt, int threads) {
        (void)layer;
        kernels::attentionEx(q, ldq, kCache, vCache, out, ldo, nTok, pos0, nHeads, nKvHeads,
                             headDim, opt, threads);
    }

    /// The resident forward (a device backend): empty when transformerForward can run `plan`,
    /// else why not.
    virtual std::string transformerSupport(const TransformerPlan& plan) {
        (void)plan;
        return "the backend runs single products only";
    }
    /// One forward call of a transformer run wholly on the device: h [n, dim] the embedded
    /// tokens (computed on the host), cosT/sinT [n, rotDim/2] the RoPE tables of positions
    /// pos0.. (null without RoPE); writes the logits of tokens logitsFrom..n-1 to logitsOut
    /// [n - logitsFrom, vocab] (none when logitsFrom >= n). The KV cache stays on the device
    /// (pos0 == 0 starts a new sequence; rows before pos0 are those earlier calls wrote). Only
    /// called when transformerSupport(plan) is empty; `plan` is the same object on every call.
    /// With `targets` (perplexity): the logits stay on the device and logProbs[r] receives
    /// log softmax(logits of token logitsFrom + r)[targets[r]] (0 where targets[r] < 0, NaN
    /// when the row holds a non-finite logit) instead; logitsOut is then not written.
    virtual void transformerForward(const TransformerPlan& plan, const float* h, const float* cosT,
                                    const float* sinT, int64_t n, int64_t pos0, int64_t logitsFrom,
                                    float* logitsOut, const int32_t* targets, float* logProbs) {
        (void)plan, (void)h, (void)cosT, (void)sinT, (void)n, (void)pos0, (void)logitsFrom,
            (void)logitsOut, (void)targets, (void)logProbs;
        throw std::logic_error("transformerForward on a backend without it");
    }
    /// The device KV cache rows [0, rows) of `layer` (written by transformerForward) into
    /// k/v [rows, kvd], so that the host path can continue the sequence.
    virtual void transformerReadCache(const TransformerPlan& plan, int layer, int64_t rows,
                                      float* k, float* v) {
        (void)plan, (void)layer, (void)rows, (void)k, (void)v;
        throw std::logic_error("transformerReadCache on a backend without it");
    }
    /// Records why the resident forward is not used (a device backend keeps the first reason).
    virtual void noteResident(const std::string& why) { (void)why; }
};

/// The CPU kernels.
std::unique_ptr<Backend> makeCpuBackend();
/// The backend for `spec` and the weights `w` (Vulkan: weights uploaded on first use, shared by
/// backends of the same device over the same WeightSource). A Vulkan spec that cannot be served
/// gives the CPU backend and the reason in `note`.
std::unique_ptr<Backend> makeBackend(const DeviceSpec& spec, const WeightSource& w, int gpuLayers,
                                     std::string* note);

#ifdef LCW_HAVE_VULKAN
namespace vulkan {
/// vulkan/vk_backend.cpp. Throws Error when the device cannot be opened.
std::unique_ptr<Backend> makeVulkanBackend(int deviceIndex, const WeightSource& w, int gpuLayers);
/// Vulkan devices (ids "vulkan:N"); whyNone as listDevices().
std::vector<DeviceInfo> listVulkanDevices(std::string* whyNone);
/// Bytes lcw holds on Vulkan device `index` when it has been opened (0 otherwise).
uint64_t openedDeviceBytes(int index);
/// Tests: pretend one storage-buffer binding holds at most `bytes` (0: the device's limit), so
/// that row and token chunking run on small weights.
void setBindingLimitForTests(uint64_t bytes);
/// Tests: pretend the device has `bytes` of memory (0: what it reports).
void setDeviceMemoryForTests(uint64_t bytes);
/// Tests: attention dispatches so far (all backends) whose keys were split over workgroups.
int64_t attentionSplitDispatchesForTests();
/// Tests: weight products run on any Vulkan device by this process so far.
int64_t deviceProductsForTests();
/// Tests: logits bytes the resident forward copied back to the host so far (all backends).
uint64_t residentLogitsBytesForTests();
/// Tests: resident forward calls (Backend::transformerForward) run by this process so far.
int64_t residentForwardsForTests();
/// Tests: queue submissions of dispatch lists (all devices) so far.
int64_t submissionsForTests();
} // namespace vulkan
#endif

} // namespace lcw::runtime
