// libFuzzer target "tokenizer": see driveTokenizer() in fuzz/drivers.h.
#include "fuzz/drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    lcw::fuzz::driveTokenizer(lcw::fuzz::asView(data, size));
    return 0;
}
