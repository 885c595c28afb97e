// libFuzzer target "llama2c": see driveLlama2c() in fuzz/drivers.h.
#include "fuzz/drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    lcw::fuzz::driveLlama2c(lcw::fuzz::asView(data, size));
    return 0;
}
