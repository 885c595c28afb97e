#pragma once
/// \file
/// Checked size arithmetic for values read from files. Every size that a reader derives from
/// file fields (element counts, byte sizes, table sizes) goes through these helpers before
/// anything is allocated: an overflow or an absurd value becomes a FormatError that names the
/// file and the field, never a wrapped number, a bad_alloc or a multi-gigabyte allocation.
#include "core/common/error.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace lcw {

/// The most elements lcw accepts in one tensor (2^40, 4 TiB of f32).
inline constexpr int64_t kMaxTensorElements = int64_t(1) << 40;
/// The largest single dimension, count or id read from a file (int32 range).
inline constexpr int64_t kMaxFileDim = std::numeric_limits<int32_t>::max();
/// The most layers (blocks) a model may claim; per-layer tables are sized by it.
inline constexpr int64_t kMaxLayers = 100000;
/// A token table may have this many unused ids beyond its entries (ids with gaps), no more.
inline constexpr int64_t kMaxTokenIdGap = int64_t(1) << 20;

namespace checked {

/// "[a, b, c]".
inline std::string shapeString(const std::vector<int64_t>& shape) {
    std::string r = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) r += ", ";
        r += std::to_string(shape[i]);
    }
    return r + "]";
}

/// A count read from a file: non-negative and at most `max`, else "<field> is <v>, ...".
inline int64_t count(int64_t v, const std::string& path, const std::string& field,
                     int64_t max = kMaxFileDim) {
    if (v < 0)
        throw FormatError(path, field + " is " + std::to_string(v) + ", must not be negative");
    if (v > max)
        throw FormatError(path, field + " is " + std::to_string(v) + ", more than the limit " +
                                    std::to_string(max));
    return v;
}

/// a * b for non-negative sizes; overflow (or a negative operand) throws naming `field`
/// (e.g. "expand × hidden_size").
inline int64_t mul(int64_t a, int64_t b, const std::string& path, const std::string& field) {
    int64_t r = 0;
    if (a < 0 || b < 0)
        throw FormatError(path, field + " has a negative operand (" + std::to_string(a) + " × " +
                                    std::to_string(b) + ")");
    if (__builtin_mul_overflow(a, b, &r))
        throw FormatError(path, field + " overflows (" + std::to_string(a) + " × " +
                                    std::to_string(b) + ")");
    return r;
}

/// a + b for non-negative sizes; overflow (or a negative operand) throws naming `field`.
inline int64_t add(int64_t a, int64_t b, const std::string& path, const std::string& field) {
    int64_t r = 0;
    if (a < 0 || b < 0)
        throw FormatError(path, field + " has a negative operand (" + std::to_string(a) + " + " +
                                    std::to_string(b) + ")");
    if (__builtin_add_overflow(a, b, &r))
        throw FormatError(path, field + " overflows (" + std::to_string(a) + " + " +
                                    std::to_string(b) + ")");
    return r;
}

/// Unsigned variants (byte offsets, file positions).
inline uint64_t mulU(uint64_t a, uint64_t b, const std::string& path, const std::string& field) {
    uint64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r))
        throw FormatError(path, field + " overflows (" + std::to_string(a) + " × " +
                                    std::to_string(b) + ")");
    return r;
}
inline uint64_t addU(uint64_t a, uint64_t b, const std::string& path, const std::string& field) {
    uint64_t r = 0;
    if (__builtin_add_overflow(a, b, &r))
        throw FormatError(path, field + " overflows (" + std::to_string(a) + " + " +
                                    std::to_string(b) + ")");
    return r;
}

/// Element count of `shape`: every dimension non-negative, the product at most `maxElements`.
/// `what` names the tensor or field ("tensor 'x'"). Throws "<what>: shape [..] has N elements,
/// more than the limit ..." or "... overflows".
inline int64_t numel(const std::vector<int64_t>& shape, const std::string& path,
                     const std::string& what, int64_t maxElements = kMaxTensorElements) {
    int64_t n = 1;
    bool overflow = false;
    for (int64_t d : shape) {
        if (d < 0)
            throw FormatError(path,
                              what + ": shape " + shapeString(shape) + " has a negative dimension");
        if (!overflow && __builtin_mul_overflow(n, d, &n)) overflow = true;
    }
    // A zero dimension makes the product 0 even when an earlier prefix overflowed.
    for (int64_t d : shape)
        if (d == 0) return 0;
    if (overflow)
        throw FormatError(path, what + ": shape " + shapeString(shape) +
                                    " overflows: more elements than fit in 64 bits (the limit is " +
                                    std::to_string(maxElements) + ")");
    if (n > maxElements)
        throw FormatError(path, what + ": shape " + shapeString(shape) + " has " +
                                    std::to_string(n) + " elements, more than the limit " +
                                    std::to_string(maxElements));
    return n;
}

/// `bytes` must fit in `available` (the file or mapping it has to live in).
inline void fits(uint64_t bytes, uint64_t available, const std::string& path,
                 const std::string& what) {
    if (bytes > available)
        throw FormatError(path, what + " needs " + std::to_string(bytes) +
                                    " bytes but the file holds only " + std::to_string(available));
}

/// A token id from a tokenizer file: 0 <= id < entries + kMaxTokenIdGap, so that a table
/// indexed by id stays proportional to what the file actually holds.
inline int32_t tokenId(int64_t id, int64_t entries, const std::string& path,
                       const std::string& what) {
    const int64_t limit = std::min<int64_t>(kMaxFileDim, entries + kMaxTokenIdGap);
    if (id < 0 || id >= limit)
        throw FormatError(path, what + " " + std::to_string(id) +
                                    " is out of range (the file has " + std::to_string(entries) +
                                    " tokens; ids must be below " + std::to_string(limit) + ")");
    return int32_t(id);
}

} // namespace checked

} // namespace lcw
