#pragma once
/// \file
/// Compute devices the runtime can run a model on: the CPU (always; the reference) and, in
/// builds with LCW_VULKAN, each Vulkan physical device (GPUs, and lavapipe, Mesa's Vulkan on
/// the CPU). A device is named by a spec: "cpu", "vulkan" (the first GPU, else the first
/// Vulkan device) or "vulkan:N" (the N-th Vulkan device as listDevices() numbers them).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lcw::runtime {

struct DeviceInfo {
    std::string id;           ///< "cpu", "vulkan:0", ...
    std::string name;         ///< "NVIDIA H200", "llvmpipe (LLVM 15.0.6, 256 bits)", the CPU model
    std::string type;         ///< "cpu", "discrete-gpu", "integrated-gpu", "virtual-gpu",
                              ///< "software" (a Vulkan device that runs on the CPU: lavapipe)
    uint64_t memoryBytes = 0; ///< device-local memory (the largest heap); RAM for the CPU
    std::string driver;       ///< "Mesa 22.3.6 (LLVM 15.0.6)"; empty for the CPU
    std::string api;          ///< Vulkan API version "1.3.230"; empty for the CPU
};

/// The CPU as listDevices() shows it (cheap: no Vulkan enumeration).
DeviceInfo cpuDeviceInfo();

/// Device memory lcw holds now on device `id` ("vulkan:N": every session's weights, shared,
/// and scratch buffers); 0 for the CPU and for a device no session has opened.
uint64_t deviceMemoryInUse(std::string_view id);

/// Whether this build contains the Vulkan backend (CMake option LCW_VULKAN).
bool vulkanCompiledIn();

/// The CPU first, then every Vulkan device. Never throws: when no Vulkan device can be used
/// (not compiled in, no loader, no driver, no device with a compute queue, LCW_NO_VULKAN set
/// in the environment) `whyNoVulkan` receives the reason.
std::vector<DeviceInfo> listDevices(std::string* whyNoVulkan = nullptr);

/// A parsed device spec.
struct DeviceSpec {
    bool vulkan = false;
    int index = -1; ///< vulkan: -1 = the best device (first discrete/integrated GPU, else 0)
    std::string text() const;
};
/// Parses "cpu", "vulkan", "vulkan:N", "gpu" (= "vulkan"); throws ArgumentError otherwise.
DeviceSpec parseDeviceSpec(std::string_view spec);

/// The device `spec` stands for. Vulkan specs that cannot be served (no device, index out of
/// range) give the CPU with `note` saying why ("running on the CPU").
DeviceInfo resolveDevice(const DeviceSpec& spec, std::string* note = nullptr);

/// The device of Sessions whose SessionOptions::device is empty (process-wide, "cpu" unless
/// set: lcw-cli --device, the GUI's Preferences). Throws ArgumentError on a malformed spec.
void setDefaultDevice(std::string_view spec);
DeviceSpec defaultDevice();

/// Layers 0..N-1 on the GPU and the rest on the CPU (N < 0: all on the GPU; default -1).
/// Process-wide like the device (lcw-cli --gpu-layers).
void setDefaultGpuLayers(int n);
int defaultGpuLayers();

} // namespace lcw::runtime
