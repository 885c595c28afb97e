#include "core/io/tensor_values.h"

#include "core/common/error.h"
#include "core/io/atomic_writer.h"
#include "core/io/quants.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace lcw {

void readTensorRows(const TensorView& t, int64_t row0, int64_t nRows, std::vector<float>& out) {
    const int64_t rows = t.rows(), cols = t.cols();
    if (row0 < 0 || (row0 >= rows && !(rows == 0 && row0 == 0)))
        throw Error("tensor '" + t.name + "': row " + std::to_string(row0) + " is out of range (" +
                    std::to_string(rows) + " rows)");
    nRows = std::clamp<int64_t>(nRows, 0, rows - row0);
    out.resize(size_t(nRows * cols));
    for (int64_t r = 0; r < nRows; ++r)
        dequantizeRow(t.dtype, t.row(row0 + r), out.data() + r * cols, cols);
}

std::string formatTensorValue(float v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", double(v));
    return buf;
}

void writeTensorCsv(const TensorView& t, const std::string& path, Progress& progress, int64_t row0,
                    int64_t nRows) {
    const int64_t rows = t.rows(), cols = t.cols();
    if (nRows < 0) nRows = rows - row0;
    if (row0 < 0 || row0 + nRows > rows)
        throw Error(path + ": rows " + std::to_string(row0) + "…" + std::to_string(row0 + nRows) +
                    " are outside tensor '" + t.name + "' (" + std::to_string(rows) + " rows)");
    AtomicFileWriter w(path);
    std::string line = "row";
    for (int64_t c = 0; c < cols; ++c) line += ",c" + std::to_string(c);
    line += '\n';
    w.write(line);
    std::vector<float> buf(static_cast<size_t>(cols));
    const int64_t every = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, cols));
    for (int64_t r = 0; r < nRows; ++r) {
        if (r % every == 0) {
            if (!progress.report(double(r) / double(std::max<int64_t>(1, nRows)),
                                 "writing " + t.name) ||
                progress.stopRequested())
                throw Cancelled();
        }
        dequantizeRow(t.dtype, t.row(row0 + r), buf.data(), cols);
        line = std::to_string(row0 + r);
        for (int64_t c = 0; c < cols; ++c) {
            line += ',';
            line += formatTensorValue(buf[size_t(c)]);
        }
        line += '\n';
        w.write(line);
    }
    w.commit();
    progress.report(1.0, "writing " + t.name);
}

} // namespace lcw
