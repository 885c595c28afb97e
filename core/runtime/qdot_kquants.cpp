// Placeholder until the kernels land: no type has a kernel, callers dequantise.
#include "core/runtime/qdot.h"

namespace lcw::kernels::detail {

const QDotKernel* qdotKQuants(DType, Isa) {
    return nullptr;
}

} // namespace lcw::kernels::detail
