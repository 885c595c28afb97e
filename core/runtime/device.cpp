// Device specs, the device list and the choice of backend for a Session.
#include "core/runtime/device.h"

#include "core/common/error.h"
#include "core/runtime/backend.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <mutex>

namespace lcw::runtime {

bool vulkanCompiledIn() {
#ifdef LCW_HAVE_VULKAN
    return true;
#else
    return false;
#endif
}

namespace {

DeviceInfo cpuDeviceImpl() {
    DeviceInfo d;
    d.id = "cpu";
    d.type = "cpu";
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) d.name = line.substr(colon + 2);
            break;
        }
    if (d.name.empty()) d.name = "CPU";
    d.name += std::string(" (kernels: ") + kernels::isaName(kernels::activeIsa()) + ")";
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) d.memoryBytes = uint64_t(pages) * uint64_t(page);
    return d;
}

std::mutex gDefaultMutex;
DeviceSpec gDefault;
std::atomic<int> gGpuLayers{-1};

} // namespace

DeviceInfo cpuDeviceInfo() {
    static const DeviceInfo d = cpuDeviceImpl();
    return d;
}

std::vector<DeviceInfo> listDevices(std::string* whyNoVulkan) {
    std::vector<DeviceInfo> out{cpuDeviceInfo()};
#ifdef LCW_HAVE_VULKAN
    // A broken Vulkan driver can crash inside the loader; LCW_NO_VULKAN=1 keeps lcw away from it.
    if (const char* off = std::getenv("LCW_NO_VULKAN"); off && *off && std::string(off) != "0") {
        if (whyNoVulkan) *whyNoVulkan = "Vulkan is switched off (LCW_NO_VULKAN is set)";
        return out;
    }
    for (auto& d : vulkan::listVulkanDevices(whyNoVulkan)) out.push_back(std::move(d));
#else
    if (whyNoVulkan)
        *whyNoVulkan =
            "this build of lcw has no Vulkan backend (configure with -DLCW_VULKAN=ON and "
            "the Vulkan headers and glslc installed)";
#endif
    return out;
}

std::string DeviceSpec::text() const {
    if (!vulkan) return "cpu";
    return index < 0 ? "vulkan" : "vulkan:" + std::to_string(index);
}

DeviceSpec parseDeviceSpec(std::string_view spec) {
    DeviceSpec d;
    if (spec == "cpu") return d;
    if (spec == "vulkan" || spec == "gpu") {
        d.vulkan = true;
        return d;
    }
    if (spec.rfind("vulkan:", 0) == 0 && spec.size() > 7 && spec.size() <= 10) {
        int n = 0;
        for (char c : spec.substr(7)) {
            if (c < '0' || c > '9') n = -1;
            if (n >= 0) n = n * 10 + (c - '0');
        }
        if (n >= 0) {
            d.vulkan = true;
            d.index = n;
            return d;
        }
    }
    throw ArgumentError("unknown device '" + std::string(spec) +
                        "': expected cpu, vulkan or vulkan:N (lcw-cli devices lists them)");
}

DeviceInfo resolveDevice(const DeviceSpec& spec, std::string* note) {
    std::string why;
    const auto all = listDevices(&why);
    if (!spec.vulkan) return all.front();
    if (all.size() == 1) {
        if (note) *note = "no Vulkan device: " + why + "; running on the CPU";
        return all.front();
    }
    if (spec.index < 0) {
        for (size_t i = 1; i < all.size(); ++i)
            if (all[i].type == "discrete-gpu" || all[i].type == "integrated-gpu") return all[i];
        return all[1];
    }
    if (size_t(spec.index) + 1 < all.size()) return all[size_t(spec.index) + 1];
    if (note)
        *note = "no Vulkan device " + std::to_string(spec.index) + " (this machine has " +
                std::to_string(all.size() - 1) + "); running on the CPU";
    return all.front();
}

uint64_t deviceMemoryInUse(std::string_view id) {
#ifdef LCW_HAVE_VULKAN
    if (id.rfind("vulkan:", 0) != 0) return 0;
    try {
        const DeviceSpec d = parseDeviceSpec(id);
        return vulkan::openedDeviceBytes(d.index);
    } catch (const std::exception&) {
        return 0;
    }
#else
    (void)id;
    return 0;
#endif
}

void setDefaultDevice(std::string_view spec) {
    const DeviceSpec d = parseDeviceSpec(spec);
    std::lock_guard<std::mutex> lock(gDefaultMutex);
    gDefault = d;
}

DeviceSpec defaultDevice() {
    std::lock_guard<std::mutex> lock(gDefaultMutex);
    return gDefault;
}

void setDefaultGpuLayers(int n) {
    gGpuLayers = n < 0 ? -1 : n;
}
int defaultGpuLayers() {
    return gGpuLayers;
}

std::unique_ptr<Backend> makeBackend(const DeviceSpec& spec, const WeightSource& w, int gpuLayers,
                                     std::string* note) {
    if (!spec.vulkan || gpuLayers == 0) return makeCpuBackend();
    std::string why;
    const DeviceInfo d = resolveDevice(spec, &why);
    if (d.id == "cpu") {
        if (note) *note = why;
        return makeCpuBackend();
    }
#ifdef LCW_HAVE_VULKAN
    try {
        return vulkan::makeVulkanBackend(std::stoi(d.id.substr(7)), w, gpuLayers);
    } catch (const std::exception& e) {
        if (note)
            *note = std::string("Vulkan device ") + d.id + ": " + e.what() + "; running on the CPU";
        return makeCpuBackend();
    }
#else
    (void)w;
    return makeCpuBackend();
#endif
}

} // namespace lcw::runtime
