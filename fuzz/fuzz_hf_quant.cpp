// libFuzzer target "hf_quant": see driveHfQuant() in fuzz/drivers.h.
#include "fuzz/drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    lcw::fuzz::driveHfQuant(lcw::fuzz::asView(data, size));
    return 0;
}
