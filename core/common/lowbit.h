#pragma once
/// \file
/// Scalar codecs of low-bit weight formats, shared by the quantisers (core/compress) and the
/// runtime's packed kernels (core/runtime).
#include <cstdint>

namespace lcw {

/// e4m3fn (bias 7, max 448, no infinities): nearest value (ties to even), saturating.
uint8_t f32ToE4m3(float x);
float e4m3ToF32(uint8_t v);
/// The 16 NF4 levels of QLoRA, ascending, in [-1, 1].
const float* nf4Levels();

} // namespace lcw
