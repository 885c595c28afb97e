// The AVX2 and AVX-512 versions of the packed-weight kernels (packed_kernels.inc), each compiled
// with its own target options (the binary has no -march) and chosen at run time
// (packed_linear.cpp).
#include "core/common/dtype.h"
#include "core/common/lowbit.h"
#include "core/runtime/cpu/packed_layout.h"
#include "core/runtime/cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if LCW_X86
#include <immintrin.h>

#define PK_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define PK_TARGET_PUSH(T)                                                                          \
    PK_PRAGMA(clang attribute push(__attribute__((target(T))), apply_to = function))
#define PK_TARGET_POP PK_PRAGMA(clang attribute pop)
#else
#define PK_TARGET_PUSH(T) PK_PRAGMA(GCC push_options) PK_PRAGMA(GCC target(T))
#define PK_TARGET_POP PK_PRAGMA(GCC pop_options)
#endif

// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_epi32's self-initialisation) as
// (maybe-)uninitialised once they are inlined into these kernels: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

PK_TARGET_PUSH("avx2,fma,f16c")
#define PK_NS avx2
#define PK_W 256
#define PK_VNNI 0
#define PK_VBMI 0
#define PK_GFNI 0
#include "core/runtime/cpu/packed_kernels.inc"
PK_TARGET_POP

PK_TARGET_PUSH("avx2,fma,f16c,avxvnni")
#define PK_NS avx2vnni
#define PK_W 256
#define PK_VNNI 1
#define PK_VBMI 0
#define PK_GFNI 0
#include "core/runtime/cpu/packed_kernels.inc"
PK_TARGET_POP

PK_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define PK_NS avx512
#define PK_W 512
#define PK_VNNI 0
#define PK_VBMI 0
#define PK_GFNI 0
#include "core/runtime/cpu/packed_kernels.inc"
PK_TARGET_POP

PK_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#define PK_NS avx512vnni
#define PK_W 512
#define PK_VNNI 1
#define PK_VBMI 0
#define PK_GFNI 0
#include "core/runtime/cpu/packed_kernels.inc"
PK_TARGET_POP

PK_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")
#define PK_NS avx512vbmi
#define PK_W 512
#define PK_VNNI 1
#define PK_VBMI 1
#define PK_GFNI 1
#include "core/runtime/cpu/packed_kernels.inc"
PK_TARGET_POP

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace lcw::kernels::pk {

namespace {
bool hasVbmi() {
    static const bool v = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
    }();
    return v;
}
} // namespace

const KernelSet* kernelsAvx2(bool vnni) {
    if (!detail::cpu().avx2) return nullptr;
    return vnni && detail::cpu().avxvnni ? &avx2vnni::kSet : &avx2::kSet;
}

const KernelSet* kernelsAvx512(bool vnni, bool vbmi) {
    if (!detail::cpu().avx512) return nullptr;
    if (!vnni || !detail::cpu().avx512vnni) return &avx512::kSet;
    return vbmi && hasVbmi() ? &avx512vbmi::kSet : &avx512vnni::kSet;
}

} // namespace lcw::kernels::pk
#endif
