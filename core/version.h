#pragma once
namespace lcw {
/// Version string of the core library, e.g. "0.1.0".
const char* version();
} // namespace lcw
