#include "core/common/sha256.h"

#include <algorithm>
#include <cstring>

namespace lcw {

namespace {

uint32_t rotr(uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
}

const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

} // namespace

void Sha256::update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    m_len += n;
    if (m_used > 0) {
        const size_t k = std::min(n, size_t(64) - m_used);
        std::memcpy(m_buf + m_used, p, k);
        m_used += k;
        p += k;
        n -= k;
        if (m_used < 64) return;
        block(m_buf);
        m_used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) block(p);
    if (n > 0) {
        std::memcpy(m_buf, p, n);
        m_used = n;
    }
}

Sha256::Digest Sha256::digest() {
    const uint64_t bits = m_len * 8;
    uint8_t pad[72] = {0x80};
    const size_t padLen = m_used < 56 ? 56 - m_used : 120 - m_used;
    for (int i = 0; i < 8; ++i) pad[padLen + i] = uint8_t(bits >> (56 - 8 * i));
    update(pad, padLen + 8);
    Digest d{};
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 4; ++j) d[size_t(4 * i + j)] = uint8_t(m_h[i] >> (24 - 8 * j));
    return d;
}

std::string Sha256::hex() {
    return toHex(digest());
}

std::string Sha256::toHex(const Digest& d) {
    static const char* digits = "0123456789abcdef";
    std::string r;
    r.reserve(64);
    for (uint8_t b : d) {
        r += digits[b >> 4];
        r += digits[b & 15];
    }
    return r;
}

void Sha256::block(const uint8_t* b) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
        w[i] = uint32_t(b[4 * i]) << 24 | uint32_t(b[4 * i + 1]) << 16 |
               uint32_t(b[4 * i + 2]) << 8 | uint32_t(b[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
        const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = m_h[0], bb = m_h[1], c = m_h[2], d = m_h[3], e = m_h[4], f = m_h[5], g = m_h[6],
             h = m_h[7];
    for (int i = 0; i < 64; ++i) {
        const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        const uint32_t ch = (e & f) ^ (~e & g);
        const uint32_t t1 = h + S1 + ch + K[i] + w[i];
        const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        const uint32_t mj = (a & bb) ^ (a & c) ^ (bb & c);
        const uint32_t t2 = S0 + mj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = bb;
        bb = a;
        a = t1 + t2;
    }
    m_h[0] += a, m_h[1] += bb, m_h[2] += c, m_h[3] += d;
    m_h[4] += e, m_h[5] += f, m_h[6] += g, m_h[7] += h;
}

std::string sha256Hex(const void* data, size_t n) {
    Sha256 h;
    h.update(data, n);
    return h.hex();
}

} // namespace lcw
