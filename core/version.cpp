#include "core/version.h"

namespace lcw {
const char* version() {
    return LCW_VERSION;
}
} // namespace lcw
