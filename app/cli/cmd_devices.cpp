// lcw-cli devices: the compute devices this build and machine can run a model on (the CPU, then
// every Vulkan device), and the device --device selects.
#include "args.h"
#include "commands.h"

#include "core/runtime/device.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

namespace lcw::cli {

nlohmann::ordered_json deviceUsedJson(const runtime::DeviceInfo& d) {
    return {{"id", d.id}, {"name", d.name}};
}

runtime::DeviceInfo defaultDeviceInfo() {
    return runtime::resolveDevice(runtime::defaultDevice());
}

int cmdDevices(const std::vector<std::string>& argv) {
    using json = nlohmann::ordered_json;
    Args a(argv, {}, {"--json", "--quiet"});
    if (!a.positionals().empty())
        throw UsageError{"devices takes no arguments, got '" + a.positionals()[0] + "'"};
    std::string why;
    const auto devices = runtime::listDevices(&why);
    bool anyVulkan = false;
    for (const auto& d : devices) anyVulkan |= d.id != "cpu";
    if (anyVulkan) why.clear();
    const runtime::DeviceInfo chosen = defaultDeviceInfo();

    if (a.flag("--json")) {
        json list = json::array();
        for (const auto& d : devices)
            list.push_back({{"id", d.id},
                            {"name", d.name},
                            {"type", d.type},
                            {"memory_bytes", d.memoryBytes},
                            {"driver", d.driver},
                            {"api", d.api}});
        const json j = {{"devices", list},
                        {"vulkan_compiled_in", runtime::vulkanCompiledIn()},
                        {"vulkan_note", why},
                        {"default", chosen.id}};
        std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
        return 0;
    }
    size_t wId = 2, wType = 4;
    for (const auto& d : devices) {
        wId = std::max(wId, d.id.size());
        wType = std::max(wType, d.type.size());
    }
    for (const auto& d : devices) {
        std::printf("%s %-*s  %-*s  %s, %.1f GiB", d.id == chosen.id ? "*" : " ", int(wId),
                    d.id.c_str(), int(wType), d.type.c_str(), d.name.c_str(),
                    double(d.memoryBytes) / (1024.0 * 1024.0 * 1024.0));
        if (!d.driver.empty()) std::printf(", driver %s", d.driver.c_str());
        if (!d.api.empty()) std::printf(", Vulkan %s", d.api.c_str());
        std::printf("\n");
    }
    if (!why.empty()) std::printf("no Vulkan device: %s\n", why.c_str());
    std::printf("(* = the device --device selects: %s)\n", chosen.id.c_str());
    return 0;
}

} // namespace lcw::cli
