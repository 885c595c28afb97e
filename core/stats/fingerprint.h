#pragma once
/// \file
/// Fingerprints that key the statistics store: SHA-256 of bytes, and a fast model fingerprint.
#include <cstddef>
#include <string>

namespace lcw {
class Model;
}

namespace lcw::stats {

/// Lower-case hex SHA-256 (FIPS 180-4) of n bytes.
std::string sha256Hex(const void* data, size_t n);

/// "sha256:<hex>" over every tensor's canonical name, dtype, shape and byte size, plus 3 samples
/// of 256 bytes (start, middle, end) of its data, plus the spec's main dimensions. Reads a few
/// KB per tensor, so it costs milliseconds even for multi-GB models, and changes when a weight
/// file is replaced by another of the same shape (unless identical in all sampled bytes).
std::string modelFingerprint(const Model& model);

} // namespace lcw::stats
