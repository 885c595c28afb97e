// The Vulkan instance, device enumeration and the compute context of an opened device.
#include "core/runtime/vulkan/vk_context.h"

#include "core/common/error.h"
#include "core/runtime/backend.h"
#include "core/runtime/vulkan/vk_shaders.h"

#include <cstring>

namespace lcw::runtime::vulkan {

namespace {

const char* resultName(VkResult r) {
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
        return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
        return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
        return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver installed)";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
        return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
        return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_TOO_MANY_OBJECTS:
        return "VK_ERROR_TOO_MANY_OBJECTS";
    default:
        return "VkResult error";
    }
}

void check(VkResult r, const char* what) {
    if (r != VK_SUCCESS)
        throw Error(std::string("Vulkan: ") + what + " failed: " + resultName(r) + " (" +
                    std::to_string(int(r)) + ")");
}

struct PhysicalDevice {
    VkPhysicalDevice handle = VK_NULL_HANDLE;
    uint32_t computeFamily = 0;
    DeviceInfo info;
};

/// The process's instance and devices, made once (never destroyed: devices may be in use until
/// exit, and drivers dislike teardown from static destructors).
struct InstanceState {
    VkInstance instance = VK_NULL_HANDLE;
    std::vector<PhysicalDevice> devices;
    std::string whyNone;
};

std::string versionText(uint32_t v) {
    return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) +
           "." + std::to_string(VK_API_VERSION_PATCH(v));
}

const char* typeName(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return "software";
    default:
        return "other";
    }
}

InstanceState makeInstance() {
    InstanceState st;
    VkApplicationInfo app{.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "lcw";
    app.apiVersion = VK_API_VERSION_1_1;
    VkInstanceCreateInfo ci{.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    VkResult r = vkCreateInstance(&ci, nullptr, &st.instance);
    if (r != VK_SUCCESS) {
        st.instance = VK_NULL_HANDLE;
        st.whyNone = std::string("the Vulkan loader found no usable driver (vkCreateInstance: ") +
                     resultName(r) + "; Debian: mesa-vulkan-drivers or the GPU vendor's driver)";
        return st;
    }
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(st.instance, &n, nullptr);
    std::vector<VkPhysicalDevice> phys(n);
    if (n) vkEnumeratePhysicalDevices(st.instance, &n, phys.data());
    for (VkPhysicalDevice p : phys) {
        VkPhysicalDeviceProperties props;
        vkGetPhysicalDeviceProperties(p, &props);
        if (props.apiVersion < VK_API_VERSION_1_1) continue;
        uint32_t nf = 0;
        vkGetPhysicalDeviceQueueFamilyProperties(p, &nf, nullptr);
        std::vector<VkQueueFamilyProperties> fams(nf);
        vkGetPhysicalDeviceQueueFamilyProperties(p, &nf, fams.data());
        int family = -1;
        for (uint32_t i = 0; i < nf && family < 0; ++i)
            if (fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family = int(i);
        if (family < 0) continue;
        PhysicalDevice d;
        d.handle = p;
        d.computeFamily = uint32_t(family);
        d.info.id = "vulkan:" + std::to_string(st.devices.size());
        d.info.name = props.deviceName;
        d.info.type = typeName(props.deviceType);
        d.info.api = versionText(props.apiVersion);
        VkPhysicalDeviceDriverProperties drv{
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
        VkPhysicalDeviceProperties2 p2{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
        if (props.apiVersion >= VK_API_VERSION_1_2) {
            p2.pNext = &drv;
            vkGetPhysicalDeviceProperties2(p, &p2);
            d.info.driver = std::string(drv.driverName) + " " + drv.driverInfo;
        }
        VkPhysicalDeviceMemoryProperties mem;
        vkGetPhysicalDeviceMemoryProperties(p, &mem);
        for (uint32_t h = 0; h < mem.memoryHeapCount; ++h)
            if (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
                d.info.memoryBytes =
                    std::max<uint64_t>(d.info.memoryBytes, mem.memoryHeaps[h].size);
        st.devices.push_back(std::move(d));
    }
    if (st.devices.empty())
        st.whyNone = n == 0 ? "the Vulkan driver reports no device"
                            : "no Vulkan 1.1 device with a compute queue";
    return st;
}

InstanceState& instance() {
    static InstanceState* st = new InstanceState(makeInstance());
    return *st;
}

} // namespace

std::vector<DeviceInfo> listVulkanDevices(std::string* whyNone) {
    const InstanceState& st = instance();
    if (whyNone) *whyNone = st.whyNone;
    std::vector<DeviceInfo> out;
    for (const auto& d : st.devices) out.push_back(d.info);
    return out;
}

Context::Context(int index) {
    InstanceState& st = instance();
    if (index < 0 || size_t(index) >= st.devices.size())
        throw Error("Vulkan: no device " + std::to_string(index) +
                    (st.whyNone.empty() ? "" : " (" + st.whyNone + ")"));
    const PhysicalDevice& pd = st.devices[size_t(index)];
    m_info = pd.info;
    m_phys = pd.handle;
    m_family = pd.computeFamily;
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(m_phys, &props);
    m_maxRange = props.limits.maxStorageBufferRange;
    for (int i = 0; i < 3; ++i) m_maxGroups[i] = props.limits.maxComputeWorkGroupCount[i];
    vkGetPhysicalDeviceMemoryProperties(m_phys, &m_mem);

    const float priority = 1.0f;
    VkDeviceQueueCreateInfo qi{.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueFamilyIndex = m_family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &priority;
    VkDeviceCreateInfo di{.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    check(vkCreateDevice(m_phys, &di, nullptr, &m_device), "vkCreateDevice");
    vkGetDeviceQueue(m_device, m_family, 0, &m_queue);

    VkCommandPoolCreateInfo pi{.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = m_family;
    check(vkCreateCommandPool(m_device, &pi, nullptr, &m_pool), "vkCreateCommandPool");

    VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kDescriptors};
    VkDescriptorPoolCreateInfo dpi{.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpi.maxSets = kDescriptorSets;
    dpi.poolSizeCount = 1;
    dpi.pPoolSizes = &ps;
    check(vkCreateDescriptorPool(m_device, &dpi, nullptr, &m_descPool), "vkCreateDescriptorPool");

    VkFenceCreateInfo fi{.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    check(vkCreateFence(m_device, &fi, nullptr, &m_fence), "vkCreateFence");
}

Context::~Context() {
    if (!m_device) return;
    vkDeviceWaitIdle(m_device);
    for (auto& [name, p] : m_pipelines) {
        vkDestroyPipeline(m_device, p.pipeline, nullptr);
        vkDestroyPipelineLayout(m_device, p.layout, nullptr);
        vkDestroyDescriptorSetLayout(m_device, p.setLayout, nullptr);
    }
    vkDestroyFence(m_device, m_fence, nullptr);
    vkDestroyDescriptorPool(m_device, m_descPool, nullptr);
    vkDestroyCommandPool(m_device, m_pool, nullptr);
    vkDestroyDevice(m_device, nullptr);
}

uint32_t Context::memoryType(uint32_t typeBits, VkMemoryPropertyFlags want,
                             VkMemoryPropertyFlags avoid, bool* ok) const {
    for (uint32_t i = 0; i < m_mem.memoryTypeCount; ++i) {
        const VkMemoryPropertyFlags f = m_mem.memoryTypes[i].propertyFlags;
        if ((typeBits & (1u << i)) && (f & want) == want && (f & avoid) == 0) {
            *ok = true;
            return i;
        }
    }
    *ok = false;
    return 0;
}

Buffer Context::create(VkDeviceSize bytes, VkBufferUsageFlags usage, VkMemoryPropertyFlags want,
                       VkMemoryPropertyFlags prefer) {
    Buffer b;
    b.size = std::max<VkDeviceSize>(bytes, 4);
    VkBufferCreateInfo bi{.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = b.size;
    bi.usage = usage;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    check(vkCreateBuffer(m_device, &bi, nullptr, &b.buffer), "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(m_device, b.buffer, &req);
    bool ok = false;
    uint32_t type = memoryType(req.memoryTypeBits, want | prefer, 0, &ok);
    if (!ok) type = memoryType(req.memoryTypeBits, want, 0, &ok);
    if (!ok) {
        vkDestroyBuffer(m_device, b.buffer, nullptr);
        throw Error("Vulkan: " + m_info.name + " has no suitable memory type");
    }
    VkMemoryAllocateInfo ai{.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = type;
    const VkResult r = vkAllocateMemory(m_device, &ai, nullptr, &b.memory);
    if (r != VK_SUCCESS) {
        vkDestroyBuffer(m_device, b.buffer, nullptr);
        throw Error("Vulkan: " + m_info.name + ": cannot allocate " +
                    std::to_string((req.size + (1u << 20) - 1) >> 20) + " MiB (" + resultName(r) +
                    "; " + std::to_string(m_allocated >> 20) + " MiB already in use by lcw)");
    }
    check(vkBindBufferMemory(m_device, b.buffer, b.memory, 0), "vkBindBufferMemory");
    if (m_mem.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
        check(vkMapMemory(m_device, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped), "vkMapMemory");
    m_allocated += req.size;
    b.allocBytes = req.size;
    b.size = bytes;
    return b;
}

Buffer Context::createDeviceBuffer(VkDeviceSize bytes) {
    // Device-local and, where offered (integrated GPUs, lavapipe, resizable BAR), host-visible
    // and coherent too, so uploads are plain copies.
    return create(bytes, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                  VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                  VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
}

Buffer Context::createHostBuffer(VkDeviceSize bytes) {
    return create(bytes,
                  VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                      VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                  VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                  VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
}

void Context::destroy(Buffer& b) {
    if (b.buffer) vkDestroyBuffer(m_device, b.buffer, nullptr);
    if (b.memory) {
        vkFreeMemory(m_device, b.memory, nullptr);
        m_allocated -= b.allocBytes;
    }
    b = Buffer{};
}

void Context::submitAndWait(VkCommandBuffer cb) {
    VkSubmitInfo si{.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cb;
    check(vkResetFences(m_device, 1, &m_fence), "vkResetFences");
    check(vkQueueSubmit(m_queue, 1, &si, m_fence), "vkQueueSubmit");
    check(vkWaitForFences(m_device, 1, &m_fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
}

void Context::upload(Buffer& dst, VkDeviceSize offset, const void* src, VkDeviceSize bytes) {
    if (dst.mapped) {
        std::memcpy(static_cast<char*>(dst.mapped) + offset, src, bytes);
        return;
    }
    // Through a staging buffer in slices of at most 64 MiB.
    const VkDeviceSize slice = std::min<VkDeviceSize>(bytes, VkDeviceSize(64) << 20);
    Buffer staging = createHostBuffer(slice);
    VkCommandBufferAllocateInfo ai{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = m_pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    VkCommandBuffer cb;
    check(vkAllocateCommandBuffers(m_device, &ai, &cb), "vkAllocateCommandBuffers");
    try {
        for (VkDeviceSize done = 0; done < bytes; done += slice) {
            const VkDeviceSize n = std::min(slice, bytes - done);
            std::memcpy(staging.mapped, static_cast<const char*>(src) + done, n);
            VkCommandBufferBeginInfo bi{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
            bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
            check(vkBeginCommandBuffer(cb, &bi), "vkBeginCommandBuffer");
            VkBufferCopy region{0, offset + done, n};
            vkCmdCopyBuffer(cb, staging.buffer, dst.buffer, 1, &region);
            check(vkEndCommandBuffer(cb), "vkEndCommandBuffer");
            submitAndWait(cb);
        }
    } catch (...) {
        vkFreeCommandBuffers(m_device, m_pool, 1, &cb);
        destroy(staging);
        throw;
    }
    vkFreeCommandBuffers(m_device, m_pool, 1, &cb);
    destroy(staging);
}

const Pipeline& Context::pipeline(const std::string& name, uint32_t nBuffers, uint32_t pushBytes) {
    auto it = m_pipelines.find(name);
    if (it != m_pipelines.end()) return it->second;
    const ShaderCode* code = findShader(name.c_str());
    if (!code) throw Error("Vulkan: no shader '" + name + "' in this build");
    Pipeline p;
    p.nBuffers = nBuffers;
    p.pushBytes = pushBytes;
    std::vector<VkDescriptorSetLayoutBinding> binds(nBuffers);
    for (uint32_t i = 0; i < nBuffers; ++i) {
        binds[i].binding = i;
        binds[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        binds[i].descriptorCount = 1;
        binds[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo li{.sType =
                                           VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    li.bindingCount = nBuffers;
    li.pBindings = binds.data();
    check(vkCreateDescriptorSetLayout(m_device, &li, nullptr, &p.setLayout),
          "vkCreateDescriptorSetLayout");
    VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, pushBytes};
    VkPipelineLayoutCreateInfo pli{.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pli.setLayoutCount = 1;
    pli.pSetLayouts = &p.setLayout;
    pli.pushConstantRangeCount = pushBytes ? 1 : 0;
    pli.pPushConstantRanges = &pr;
    check(vkCreatePipelineLayout(m_device, &pli, nullptr, &p.layout), "vkCreatePipelineLayout");
    VkShaderModuleCreateInfo si{.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    si.codeSize = code->bytes;
    si.pCode = code->words;
    VkShaderModule mod;
    check(vkCreateShaderModule(m_device, &si, nullptr, &mod), "vkCreateShaderModule");
    VkComputePipelineCreateInfo ci{.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = mod;
    ci.stage.pName = "main";
    ci.layout = p.layout;
    const VkResult r =
        vkCreateComputePipelines(m_device, VK_NULL_HANDLE, 1, &ci, nullptr, &p.pipeline);
    vkDestroyShaderModule(m_device, mod, nullptr);
    check(r, ("vkCreateComputePipelines (" + name + ")").c_str());
    return m_pipelines.emplace(name, p).first->second;
}

namespace {
std::atomic<int64_t> gSubmissions{0};
} // namespace

int64_t submissionsForTests() {
    return gSubmissions.load();
}

void Context::run(const std::vector<Dispatch>& dispatches) {
    if (dispatches.empty()) return;
    // One command buffer for all dispatches while the descriptor pool lasts (a long list, e.g.
    // a whole resident forward of a deep model, is submitted in parts: each part waits for the
    // previous one, so the order and the barriers between dispatches hold).
    size_t next = 0;
    while (next < dispatches.size()) {
        check(vkResetDescriptorPool(m_device, m_descPool, 0), "vkResetDescriptorPool");
        VkCommandBufferAllocateInfo ai{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
        ai.commandPool = m_pool;
        ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
        ai.commandBufferCount = 1;
        VkCommandBuffer cb;
        check(vkAllocateCommandBuffers(m_device, &ai, &cb), "vkAllocateCommandBuffers");
        struct FreeCb {
            Context* c;
            VkCommandBuffer cb;
            ~FreeCb() { vkFreeCommandBuffers(c->m_device, c->m_pool, 1, &cb); }
        } freeCb{this, cb};
        VkCommandBufferBeginInfo bi{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
        bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
        check(vkBeginCommandBuffer(cb, &bi), "vkBeginCommandBuffer");
        uint32_t sets = 0, descriptors = 0;
        const size_t first = next;
        for (; next < dispatches.size(); ++next) {
            const Dispatch& d = dispatches[next];
            const Pipeline& p = *d.pipeline;
            if (sets + 1 > kDescriptorSets || descriptors + p.nBuffers > kDescriptors) break;
            ++sets;
            descriptors += p.nBuffers;
            VkDescriptorSetAllocateInfo dai{.sType =
                                                VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
            dai.descriptorPool = m_descPool;
            dai.descriptorSetCount = 1;
            dai.pSetLayouts = &p.setLayout;
            VkDescriptorSet set;
            check(vkAllocateDescriptorSets(m_device, &dai, &set), "vkAllocateDescriptorSets");
            std::vector<VkDescriptorBufferInfo> infos(p.nBuffers);
            std::vector<VkWriteDescriptorSet> writes(p.nBuffers);
            for (uint32_t b = 0; b < p.nBuffers; ++b) {
                infos[b] = {d.buffers[b]->buffer, 0, VK_WHOLE_SIZE};
                writes[b] = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
                writes[b].dstSet = set;
                writes[b].dstBinding = b;
                writes[b].descriptorCount = 1;
                writes[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
                writes[b].pBufferInfo = &infos[b];
            }
            vkUpdateDescriptorSets(m_device, p.nBuffers, writes.data(), 0, nullptr);
            if (next > first) {
                VkMemoryBarrier mb{.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
                mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
                mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
                vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                     VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, nullptr, 0,
                                     nullptr);
            }
            vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
            vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0,
                                    nullptr);
            if (p.pushBytes)
                vkCmdPushConstants(cb, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p.pushBytes,
                                   d.push.data());
            vkCmdDispatch(cb, d.groups[0], d.groups[1], d.groups[2]);
        }
        VkMemoryBarrier mb{.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
        mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
        vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                             0, 1, &mb, 0, nullptr, 0, nullptr);
        check(vkEndCommandBuffer(cb), "vkEndCommandBuffer");
        submitAndWait(cb);
        ++m_submissions;
        ++gSubmissions;
    }
}

namespace {

/// The opened devices (never destroyed, like the instance) and their lock.
std::mutex gOpenMutex;
std::map<int, std::shared_ptr<Context>>& openedContexts() {
    static auto* open = new std::map<int, std::shared_ptr<Context>>;
    return *open;
}

} // namespace

std::shared_ptr<Context> openContext(int index) {
    // Opened devices stay open until the process ends (their pipelines are compiled once; the
    // weights go with the sessions that use them).
    std::lock_guard<std::mutex> lock(gOpenMutex);
    auto& c = openedContexts()[index];
    if (!c) c = std::make_shared<Context>(index);
    return c;
}

uint64_t openedDeviceBytes(int index) {
    std::shared_ptr<Context> c;
    {
        std::lock_guard<std::mutex> lock(gOpenMutex);
        auto it = openedContexts().find(index);
        if (it == openedContexts().end()) return 0;
        c = it->second;
    }
    return c->allocatedBytes();
}

} // namespace lcw::runtime::vulkan
