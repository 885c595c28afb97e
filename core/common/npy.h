#pragma once
/// \file
/// NumPy .npy files (version 1.0/2.0, little-endian float32/float64/int32/int64, C order).
#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct NpyArray {
    std::vector<int64_t> shape;
    std::vector<float> data; ///< converted to float32, C order
};

/// Reads a .npy file; throws FormatError naming the file on anything unexpected.
NpyArray readNpy(const std::string& path);
/// Writes float32 C-order data atomically.
void writeNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

} // namespace lcw
