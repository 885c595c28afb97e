#pragma once
/// \file
/// Internal to core/io: ggml's k-quant and non-linear quantisers (with and without importance
/// weights) and the weighted variants of the 32-element formats. quantizeRow() and
/// dequantizeRow() (core/io/quants.h) dispatch here; use those.
#include "core/common/dtype.h"

#include <cstddef>
#include <cstdint>

namespace lcw::detail {

/// Quantises one row of n elements (a multiple of the block size of t, checked by the caller).
/// t is Q2_K..Q6_K, IQ4_NL or IQ4_XS (importance optional), or Q4_0/Q4_1/Q5_0/Q5_1 with
/// importance (non-null; the weighted variants use the mean square of the whole row, so n must
/// be the full row for results equal to ggml's).
void quantizeRowGgml(DType t, const float* x, std::byte* dst, int64_t n, const float* importance);

/// The 12-byte packing of eight 6-bit (scale, min) pairs of q4_k and q5_k: pair j.
inline void scaleMinK4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
    if (j < 4) {
        d = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = uint8_t((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/// Dequantises nb blocks of IQ4_NL or IQ4_XS.
void dequantizeIq4(DType t, const std::byte* src, float* y, int64_t nb);

} // namespace lcw::detail
