#pragma once
/// \file
/// Raw tensor values for display and export: a window of rows dequantised on demand (any dtype
/// lcw holds, block formats included), and a streaming CSV writer that never holds more than one
/// row of floats.
#include "core/common/progress.h"
#include "core/common/tensor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

/// Rows [row0, row0 + nRows) of `t` (as a 2-D [rows(), cols()] matrix) dequantised to float32,
/// row-major into `out` (resized to nRows * cols()). nRows is clipped to the tensor's end.
/// Throws Error naming the tensor when row0 is out of range.
void readTensorRows(const TensorView& t, int64_t row0, int64_t nRows, std::vector<float>& out);

/// Shortest text that reads back to the same float ("%.9g", "nan", "inf", "-inf").
std::string formatTensorValue(float v);

/// Writes rows [row0, row0 + nRows) of `t` (nRows < 0: to the end) as CSV, atomically: a header
/// "row,c0,c1,…" and one line per row starting with the row index. Reports progress per row
/// block and stops with Cancelled when asked. Throws Error naming `path` on failure.
void writeTensorCsv(const TensorView& t, const std::string& path, Progress& progress,
                    int64_t row0 = 0, int64_t nRows = -1);

} // namespace lcw
