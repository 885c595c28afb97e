// libFuzzer target "tasks": see driveTasks() in fuzz/drivers.h.
#include "fuzz/drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    lcw::fuzz::driveTasks(lcw::fuzz::asView(data, size));
    return 0;
}
