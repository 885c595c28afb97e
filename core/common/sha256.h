#pragma once
/// \file
/// SHA-256 (FIPS 180-4): content hashes of files and texts (the statistics keys, the checksum in
/// the userblock of lcw's HDF5 files). Self-contained, no dependency.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace lcw {

/// Incremental SHA-256: update() any number of times, then digest() or hex() once.
class Sha256 {
public:
    using Digest = std::array<uint8_t, 32>;

    void update(const void* data, size_t n);
    void update(const std::string& s) { update(s.data(), s.size()); }
    /// The 32-byte digest; finishes the hash (no update() afterwards).
    Digest digest();
    /// Lower-case hex of digest(); finishes the hash.
    std::string hex();

    static std::string toHex(const Digest& d);

private:
    void block(const uint8_t* b);

    uint32_t m_h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t m_buf[64] = {};
    size_t m_used = 0;
    uint64_t m_len = 0;
};

/// Lower-case hex SHA-256 of n bytes.
std::string sha256Hex(const void* data, size_t n);

} // namespace lcw
