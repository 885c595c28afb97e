// Dispatch of the GGUF integer dot products (qdot.h).
#include "core/runtime/cpu/qdot.h"

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

} // namespace lcw::kernels
