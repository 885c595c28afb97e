#pragma once
/// \file
/// Internal to the Vulkan backend: attention on the device (shaders/attention.comp) over a
/// per-layer device mirror of the runner's float32 KV cache. One per VulkanBackend (session);
/// its buffers are freed with it.
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/vulkan/vk_context.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace lcw::runtime::vulkan {

/// What attention.comp, attention_merge.comp and kv_append.comp share with their callers (the
/// per-product DeviceAttention and the resident forward): the push constants and the splitting
/// of keys over workgroups.
namespace attn {
constexpr int64_t kMaxHeadDim = 256; ///< the shader's MAX_HD
constexpr int64_t kChunk = 64;       ///< the shader's CHUNK (keys per step)
/// Key splits (flash-decoding): when a dispatch has fewer than kTargetGroups (head, token)
/// workgroups, the keys are split into ranges of at least kSplitMinKeys, at most kMaxSplits.
constexpr int64_t kTargetGroups = 512;
constexpr int64_t kSplitMinKeys = 2 * kChunk;
constexpr int64_t kMaxSplits = 64;
struct AttentionPush {
    uint32_t pos0, nHeads, group, hd, kvDim, window, flags;
    float scale, softcap;
    uint32_t nSplit, splitKeys;
};
struct MergePush {
    uint32_t nHeads, hd, nSplit;
};
struct AppendPush {
    uint32_t dst0, n, rowStride;
};
} // namespace attn

class DeviceAttention {
public:
    /// gpuLayers as the backend's: layers >= gpuLayers (when >= 0) run the CPU kernel.
    DeviceAttention(std::shared_ptr<Context> ctx, int gpuLayers);
    ~DeviceAttention(); ///< takes the context's mutex
    DeviceAttention(const DeviceAttention&) = delete;
    DeviceAttention& operator=(const DeviceAttention&) = delete;

    /// Backend::attention's contract. Uploads the cache rows the mirror of `layer` lacks (the
    /// rows [pos0, pos0 + nTok) on a plain prefill/decode step; everything after a restart, a
    /// moved host cache or a device buffer that had to grow), the queries, runs the shader and
    /// downloads the output. Runs the CPU kernel instead for layers past the GPU split, head
    /// sizes over 256, and caches or query blocks that would not fit one buffer binding of
    /// `bindingLimit` bytes.
    void run(int layer, const float* q, int64_t ldq, const float* kCache, const float* vCache,
             float* out, int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
             int64_t headDim, const kernels::AttentionOptions& opt, int threads,
             uint64_t bindingLimit);

    /// Forgets every mirrored row (the resident forward wrote the cache on the device: the
    /// host cache the mirror follows holds other rows now). Context mutex held.
    void invalidate() {
        for (Mirror& m : m_layers) m.rows = 0;
    }
    int64_t deviceCalls() const { return m_deviceCalls; }
    int64_t fallbackCalls() const { return m_fallbackCalls; }

private:
    /// A layer's cache on the device: rows [0, rows) equal the host cache's.
    struct Mirror {
        Buffer k, v;
        int64_t capacity = 0; ///< rows the buffers hold
        int64_t rows = 0;     ///< rows uploaded and valid
        int64_t kvDim = 0;
        const float* hostK = nullptr; ///< the host cache the rows came from
        const float* hostV = nullptr;
    };
    /// Makes m's buffers hold `need` rows (growing them) and sets *from: the rows
    /// [*from, need) must be copied from the host cache (pos0: the first row just written).
    /// False when the buffers would exceed the binding limit or device memory (the mirror is
    /// then emptied).
    bool sync(Mirror& m, const float* kCache, const float* vCache, int64_t kvDim, int64_t pos0,
              int64_t need, uint64_t limit, int64_t* from);
    void ensureHost(Buffer& b, uint64_t bytes);
    /// The kv_append dispatch that copies the host cache rows [from, need) into the mirror
    /// (staged through m_stageK/V); none when there are no new rows.
    std::vector<Dispatch> appendRows(Mirror& m, const Pipeline* copy, const float* kCache,
                                     const float* vCache, int64_t kvDim, int64_t from,
                                     int64_t need);
    void free(Mirror& m);

    std::shared_ptr<Context> m_ctx;
    int m_gpuLayers = -1;
    std::vector<Mirror> m_layers;
    Buffer m_q, m_out, m_slopes;
    Buffer m_part;             ///< the key splits' softmax states (device)
    Buffer m_stageK, m_stageV; ///< new cache rows on their way to the device (host)
    bool m_broken = false;     ///< the pipeline could not be built: the CPU kernel runs
    int64_t m_deviceCalls = 0, m_fallbackCalls = 0;
};

} // namespace lcw::runtime::vulkan
