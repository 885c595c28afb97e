// Scalar codecs of low-bit weight formats shared by the quantisers and the runtime (lowbit.h).
#include "core/common/lowbit.h"

#include <cmath>
#include <limits>

namespace lcw {

const float* nf4Levels() {
    static const float L[16] = {-1.0f,
                                -0.6961928009986877f,
                                -0.5250730514526367f,
                                -0.39491748809814453f,
                                -0.28444138169288635f,
                                -0.18477343022823334f,
                                -0.09105003625154495f,
                                0.0f,
                                0.07958029955625534f,
                                0.16093020141124725f,
                                0.24611230194568634f,
                                0.33791524171829224f,
                                0.44070982933044434f,
                                0.5626170039176941f,
                                0.7229568362236023f,
                                1.0f};
    return L;
}

float e4m3ToF32(uint8_t v) {
    const int E = (v >> 3) & 15, m = v & 7;
    if (E == 15 && m == 7) return std::numeric_limits<float>::quiet_NaN();
    const float a = E == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.0f + float(m) / 8.0f, E - 7);
    return (v & 0x80) ? -a : a;
}

uint8_t f32ToE4m3(float x) {
    const uint8_t sign = std::signbit(x) ? 0x80 : 0;
    float a = std::fabs(x);
    if (std::isnan(a)) return 0x7F;
    if (a >= 448.0f) return sign | 0x7E;
    if (a == 0.0f) return sign;
    int e = 0;
    std::frexp(a, &e); // a = m * 2^e, m in [0.5, 1)
    const int ea = e - 1;
    const float step = ea < -6 ? std::ldexp(1.0f, -9) : std::ldexp(1.0f, ea - 3);
    const float q = std::nearbyint(a / step) * step;
    if (q == 0.0f) return sign;
    if (q >= 448.0f) return sign | 0x7E;
    std::frexp(q, &e);
    const int qe = e - 1;
    if (qe < -6) return uint8_t(sign | uint8_t(q / std::ldexp(1.0f, -9)));
    const int mant = int((q / std::ldexp(1.0f, qe) - 1.0f) * 8.0f);
    return uint8_t(sign | uint8_t((qe + 7) << 3) | uint8_t(mant));
}

} // namespace lcw
