#pragma once
/// \file
/// Internal to the Vulkan backend: the instance (one per process, created on first use), the
/// devices it finds, and a compute context per opened device — buffers, pipelines built from
/// the embedded SPIR-V, and one-shot command submission. Every call on a Context is serialised
/// by its mutex (sessions on several threads share one device and one queue).
#include "core/runtime/device.h"

#include <vulkan/vulkan.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lcw::runtime::vulkan {

/// A buffer and its memory. Host-visible buffers stay mapped (`mapped`).
struct Buffer {
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkDeviceSize size = 0;
    VkDeviceSize allocBytes = 0; ///< what the allocation took (accounting)
    void* mapped = nullptr;
};

struct Pipeline {
    VkDescriptorSetLayout setLayout = VK_NULL_HANDLE;
    VkPipelineLayout layout = VK_NULL_HANDLE;
    VkPipeline pipeline = VK_NULL_HANDLE;
    uint32_t nBuffers = 0, pushBytes = 0;
};

/// One dispatch of a compute pipeline: its storage buffers (binding order), push constants and
/// workgroup counts.
struct Dispatch {
    const Pipeline* pipeline = nullptr;
    std::vector<const Buffer*> buffers;
    std::vector<uint8_t> push;
    uint32_t groups[3] = {1, 1, 1};
};

class Context {
public:
    /// Opens Vulkan device `index` (listVulkanDevices() order); throws Error.
    explicit Context(int index);
    ~Context();
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    const DeviceInfo& info() const { return m_info; }
    std::mutex& mutex() { return m_mutex; }
    /// The largest range one storage-buffer binding may cover.
    VkDeviceSize maxBindingBytes() const { return m_maxRange; }
    uint32_t maxGroups(int axis) const { return m_maxGroups[axis]; }

    /// A device-local buffer (host-visible too where the device offers such memory).
    Buffer createDeviceBuffer(VkDeviceSize bytes);
    /// A host-visible, coherent (cached where possible) buffer, mapped.
    Buffer createHostBuffer(VkDeviceSize bytes);
    void destroy(Buffer& b);
    /// Copies bytes into a device buffer at offset (directly when it is mapped, else through a
    /// staging buffer and a transfer).
    void upload(Buffer& dst, VkDeviceSize offset, const void* src, VkDeviceSize bytes);

    /// The pipeline of embedded shader `name` with nBuffers storage buffers and pushBytes of push
    /// constants (built once, then cached).
    const Pipeline& pipeline(const std::string& name, uint32_t nBuffers, uint32_t pushBytes);
    /// Records the dispatches in order (with a barrier between consecutive ones), submits them
    /// and waits for the queue: one submission, or several in order when the list needs more
    /// descriptor sets than the pool holds (kDescriptorSets).
    void run(const std::vector<Dispatch>& dispatches);
    /// Submissions run() made so far (tests: a resident forward is one submission).
    int64_t submissions() const { return m_submissions; }
    static constexpr uint32_t kDescriptorSets = 2048, kDescriptors = 12288;
    /// Bytes currently allocated by this context (readable without the mutex: the GUI polls it).
    uint64_t allocatedBytes() const { return m_allocated.load(std::memory_order_relaxed); }

private:
    uint32_t memoryType(uint32_t typeBits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid,
                        bool* ok) const;
    Buffer create(VkDeviceSize bytes, VkBufferUsageFlags usage, VkMemoryPropertyFlags want,
                  VkMemoryPropertyFlags prefer);
    void submitAndWait(VkCommandBuffer cb);

    DeviceInfo m_info;
    VkPhysicalDevice m_phys = VK_NULL_HANDLE;
    VkDevice m_device = VK_NULL_HANDLE;
    VkQueue m_queue = VK_NULL_HANDLE;
    uint32_t m_family = 0;
    VkCommandPool m_pool = VK_NULL_HANDLE;
    VkDescriptorPool m_descPool = VK_NULL_HANDLE;
    VkFence m_fence = VK_NULL_HANDLE;
    VkPhysicalDeviceMemoryProperties m_mem{};
    VkDeviceSize m_maxRange = 0;
    uint32_t m_maxGroups[3] = {65535, 65535, 65535};
    std::map<std::string, Pipeline> m_pipelines;
    std::atomic<uint64_t> m_allocated{0};
    int64_t m_submissions = 0;
    std::mutex m_mutex;
};

/// The shared context of device `index` (opened on first use, kept until the process ends).
std::shared_ptr<Context> openContext(int index);

} // namespace lcw::runtime::vulkan
