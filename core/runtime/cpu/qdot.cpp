// Dispatch of the GGUF integer dot products (qdot.h).
#include "core/runtime/cpu/qdot.h"
#include "core/runtime/cpu/qdot_common.h"

#include "core/common/error.h"

#include <cstring>
#include <string>

namespace lcw::kernels {

size_t actRowBytes(ActQ a, int64_t n) {
    switch (a) {
    case ActQ::Q8_0:
        return size_t(n / 32) * 34;
    case ActQ::Q8_1:
        return size_t(n / 32) * 36;
    case ActQ::Q8_K:
        return size_t(n / 256) * 292;
    }
    return 0;
}

int64_t actBlockElems(ActQ a) {
    return a == ActQ::Q8_K ? 256 : 32;
}

void detail::repackSegments(const RepackSeg* seg, int nSeg, size_t rowBlockBytes, int64_t nb,
                            const std::byte* w, size_t wRowBytes, int64_t rows, std::byte* dst,
                            int64_t g0, int64_t g1) {
    const size_t blockBytes = size_t(kRepackRows) * rowBlockBytes; // one block of a group
    const size_t gb = size_t(nb) * blockBytes;
    for (int64_t g = g0; g < g1; ++g) {
        std::byte* out = dst + size_t(g) * gb;
        std::memset(out, 0, gb);
        for (int64_t l = 0; l < kRepackRows; ++l) {
            const int64_t r = g * kRepackRows + l;
            if (r >= rows) break;
            for (int64_t b = 0; b < nb; ++b) {
                const std::byte* src = w + size_t(r) * wRowBytes + size_t(b) * rowBlockBytes;
                std::byte* o = out + size_t(b) * blockBytes;
                for (int i = 0; i < nSeg; ++i) {
                    const RepackSeg& s = seg[i];
                    for (int u = 0; u < s.bytes / s.unit; ++u)
                        std::memcpy(o + (u * kRepackRows + l) * s.unit, src + s.src + u * s.unit,
                                    size_t(s.unit));
                    o += s.bytes * kRepackRows;
                }
            }
        }
    }
}

namespace {
// Bytes of one repacked group of 16 rows per weight block (32 or 256 values); 0: none.
size_t repackedBlockBytes(DType t) {
    if (const size_t b = detail::legacyRepackBlockBytes(t)) return b;
    return detail::kquantRepackBlockBytes(t);
}
} // namespace

bool repackable(DType t) {
    return repackedBlockBytes(t) > 0;
}

size_t repackedGroupBytes(DType t, int64_t n) {
    return size_t(n / dtypeBlockElems(t)) * repackedBlockBytes(t);
}

size_t repackedBytes(DType t, int64_t rows, int64_t n) {
    return size_t((rows + kRepackRows - 1) / kRepackRows) * repackedGroupBytes(t, n);
}

void repackRows(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                std::byte* dst, int64_t g0, int64_t g1) {
    if (detail::legacyRepackBlockBytes(t))
        detail::repackLegacyGroups(t, w, wRowBytes, rows, n, dst, g0, g1);
    else if (detail::kquantRepackBlockBytes(t))
        detail::repackKQuantGroups(t, w, wRowBytes, rows, n, dst, g0, g1);
    else
        throw ArgumentError("repackRows: " + std::string(dtypeName(t)) + " has no repacked form");
}

const QDotKernel* qdotKernel(DType t, Isa isa) {
    if (isa == Isa::Auto) isa = activeIsa();
    if (const QDotKernel* k = detail::qdotLegacy(t, isa)) return k;
    return detail::qdotKQuants(t, isa);
}

} // namespace lcw::kernels
