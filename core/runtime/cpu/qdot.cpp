// Dispatch of the GGUF integer dot products (qdot.h).
#include "core/runtime/cpu/qdot.h"

#include "core/common/error.h"

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
