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

const QDotKernel* qdotKernel(DType t, Isa isa) {
    if (isa == Isa::Auto) isa = activeIsa();
    if (const QDotKernel* k = detail::qdotLegacy(t, isa)) return k;
    return detail::qdotKQuants(t, isa);
}

int64_t repackGroupRows(DType t) {
    return detail::legacyRepackable(t) ? kRepackRows : 0;
}

size_t repackedGroupBytes(DType t, int64_t n) {
    return size_t(repackGroupRows(t)) * size_t(n / dtypeBlockElems(t) * dtypeBlockBytes(t));
}

size_t repackedBytes(DType t, int64_t rows, int64_t n) {
    const int64_t g = repackGroupRows(t);
    return g > 0 ? size_t((rows + g - 1) / g) * repackedGroupBytes(t, n) : 0;
}

void repackRows(DType t, const std::byte* w, size_t wRowBytes, int64_t rows, int64_t n,
                std::byte* dst, int64_t g0, int64_t g1) {
    if (!repackable(t))
        throw ArgumentError("repackRows: " + std::string(dtypeName(t)) + " has no repacked form");
    detail::repackLegacy(t, w, wRowBytes, rows, n, dst, g0, g1);
}

} // namespace lcw::kernels
