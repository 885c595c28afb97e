// ggml's k-quant (Q2_K..Q6_K) and non-linear (IQ4_NL, IQ4_XS) quantisers, with and without
// importance weights, and the importance-weighted variants of Q4_0/Q4_1/Q5_0/Q5_1.
//
// The output must be byte-identical to ggml_quantize_chunk() of llama.cpp b4747, so every
// search below evaluates the same float expressions in the same order as ggml does: single
// precision throughout, products grouped left to right ((w*x)*l, not w*(x*l)), integers
// converted to float where ggml's C arithmetic converts them, the same tie-breaking comparisons
// and the same integer truncations into uint8/int8 fields. The file is compiled with
// -ffp-contract=off (core/CMakeLists.txt) so that no a*b+c becomes a fused multiply-add.
// Nothing here allocates: all scratch lives on the stack.
#include "core/io/ggml_quants.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace lcw::detail {

namespace {

constexpr int kQK = 32;   // elements of a Q4_0..Q5_1 / IQ4_NL block and of a k-quant sub-block
constexpr int kQKK = 256; // elements of a k-quant / IQ4_XS super-block
// Groups whose largest magnitude is below this are stored as zeros (ggml's GROUP_MAX_EPS).
constexpr float kGroupEps = 1e-15f;
// IQ4_NL / IQ4_XS code book (a fact of the format).
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

// Round to nearest (ties to even) for |f| < 2^22 by adding 1.5*2^23 and reading the mantissa;
// ggml rounds this way everywhere in these quantisers (std::lrint would agree only in range).
inline int nearestInt(float f) {
    const float v = f + 12582912.f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

inline void putHalf(uint8_t* p, float f) {
    const uint16_t h = f32ToF16(f);
    std::memcpy(p, &h, 2);
}
inline float getHalf(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return f16ToF32(h);
}
inline int clampi(int v, int lo, int hi) {
    return std::max(lo, std::min(hi, v));
}

// Largest magnitude of x[0..n) and the signed value that has it (first one on ties).
inline float signedAbsMax(int n, const float* x, float& amax) {
    float max = 0;
    amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    return max;
}

// ---- level searches (one per ggml helper; see the header comment on arithmetic order) ----

// Symmetric levels l in [-nmax, nmax-1] (stored as l+nmax) and a scale minimising the weighted
// squared error: the least-squares scale for the rounding at -nmax/max, then for 18 perturbed
// inverse scales, keeping the best (ggml's make_qx_quants with rmse_type 1). Weights are qw, or
// x^2 without it.
float symLevelsLsq(int n, int nmax, const float* x, int8_t* L, const float* qw) {
    float amax;
    const float max = signedAbsMax(n, x, amax);
    if (amax < kGroupEps) {
        std::fill(L, L + n, int8_t(0));
        return 0.f;
    }
    int lt[kQK];
    float iscale = float(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearestInt(iscale * x[i]), -nmax, nmax - 1);
        L[i] = int8_t(l + nmax);
        const float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(float(nmax) + 0.1f * float(is)) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clampi(nearestInt(iscale * x[i]), -nmax, nmax - 1);
            lt[i] = l;
            const float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * float(l);
            suml2 += w * float(l) * float(l);
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) L[i] = int8_t(nmax + lt[i]);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Symmetric levels for q3_K without importance: round at -nmax/max, then up to five passes of
// coordinate descent on the x^2-weighted error (ggml's make_q3_quants with do_rmse).
float symLevelsDescent(int n, int nmax, const float* x, int8_t* L) {
    float amax;
    const float max = signedAbsMax(n, x, amax);
    if (amax < kGroupEps) {
        std::fill(L, L + n, int8_t(0));
        return 0.f;
    }
    const float iscale = float(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearestInt(iscale * x[i]), -nmax, nmax - 1);
        L[i] = int8_t(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * float(L[i]);
            if (slx > 0) {
                float sl2 = suml2 - w * float(L[i]) * float(L[i]);
                const int nl = clampi(nearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (nl != L[i]) {
                    slx += w * x[i] * float(nl);
                    sl2 += w * float(nl) * float(nl);
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = int8_t(nl);
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
    return sumlx / suml2;
}

// Asymmetric levels 0..nmax with scale and min (value = scale*l - theMin): round on [min, max]
// (min clamped to <= 0), then for nstep+1 stretched grids fit scale and min by weighted least
// squares and keep the lowest weighted error (|e| with useMad, e^2 otherwise). This is ggml's
// make_qkx2_quants and make_qkx3_quants (which differ only where weights are null, never here).
float asymLevels(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* theMin,
                 float rmin, float rdelta, int nstep, bool useMad) {
    uint8_t aux[kQK];
    float min = x[0], max = x[0];
    float sumW = weights[0];
    float sumX = sumW * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sumW += w;
        sumX += w * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        std::fill(L, L + n, uint8_t(0));
        *theMin = -min;
        return 0.f;
    }
    float iscale = float(nmax) / (max - min);
    float scale = 1 / iscale;
    float bestErr = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearestInt(iscale * (x[i] - min));
        L[i] = uint8_t(clampi(l, 0, nmax));
        float diff = scale * float(L[i]) + min - x[i];
        diff = useMad ? std::fabs(diff) : diff * diff;
        bestErr += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
        float sumL = 0, sumL2 = 0, sumXL = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clampi(nearestInt(iscale * (x[i] - min)), 0, nmax);
            aux[i] = uint8_t(l);
            const float w = weights[i];
            sumL += w * float(l);
            sumL2 += w * float(l) * float(l);
            sumXL += w * float(l) * x[i];
        }
        const float D = sumW * sumL2 - sumL * sumL;
        if (D > 0) {
            float thisScale = (sumW * sumXL - sumX * sumL) / D;
            float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
            if (thisMin > 0) {
                thisMin = 0;
                thisScale = sumXL / sumL2;
            }
            float err = 0;
            for (int i = 0; i < n; ++i) {
                float diff = thisScale * float(aux[i]) + thisMin - x[i];
                diff = useMad ? std::fabs(diff) : diff * diff;
                err += weights[i] * diff;
            }
            if (err < bestErr) {
                std::memcpy(L, aux, size_t(n));
                bestErr = err;
                scale = thisScale;
                min = thisMin;
            }
        }
    }
    *theMin = -min;
    return scale;
}

// Non-negative levels 0..nmax for the sub-block scales (or mins) of a weighted k-quant: best of
// nine inverse scales by weighted error, then up to five passes of coordinate descent (ggml's
// make_qp_quants as of llama.cpp b4747). Levels are stored through uint8 as ggml does.
float posLevels(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max == 0) {
        std::fill(L, L + n, uint8_t(0));
        return 0.f;
    }
    float iscale = float(nmax) / max;
    for (int i = 0; i < n; ++i) L[i] = uint8_t(nearestInt(iscale * x[i]));
    const float scale = 1 / iscale;
    float bestMse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * float(L[i]);
        bestMse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscaleIs = (0.1f * float(is) + float(nmax)) / max;
        const float scaleIs = 1 / iscaleIs;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::min(nmax, nearestInt(iscaleIs * x[i]));
            const float diff = x[i] - scaleIs * float(l);
            mse += qw[i] * diff * diff;
        }
        if (mse < bestMse) {
            bestMse = mse;
            iscale = iscaleIs;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = std::min(nmax, nearestInt(iscale * x[i]));
        L[i] = uint8_t(l);
        const float w = qw[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = qw[i];
            float slx = sumlx - w * x[i] * float(L[i]);
            float sl2 = suml2 - w * float(L[i]) * float(L[i]);
            if (slx > 0 && sl2 > 0) {
                const int nl = std::min(nmax, nearestInt(x[i] * sl2 / slx));
                if (nl != L[i]) {
                    slx += w * x[i] * float(nl);
                    sl2 += w * float(nl) * float(nl);
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = uint8_t(nl);
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    return sumlx / suml2;
}

// Sum of squares of n values, accumulated in order.
inline float sumSquares(int64_t n, const float* x) {
    float s = 0;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s;
}

// weight[j] = qw[j] * sqrt(sigma2 + x[j]^2): how ggml turns importance into per-element weights.
inline void importanceWeights(int n, const float* qw, const float* x, float sigma2, float* weight) {
    for (int j = 0; j < n; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

inline float sumOf(int n, const float* w) {
    float s = 0;
    for (int j = 0; j < n; ++j) s += w[j];
    return s;
}

// ---- packing shared by several formats ----

// Four 2-bit codes per byte, 128-element halves interleaved by 32 (q2_K and q3_K qs).
void pack2Bit(const uint8_t* L, uint8_t* qs) {
    for (int j = 0; j < kQKK; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                    (L[j + l + 96] << 6));
}

// Eight 6-bit (scale, min) pairs into 12 bytes (q4_K, q5_K).
void packScaleMinK4(const uint8_t* ls, const uint8_t* lm, uint8_t* s) {
    for (int j = 0; j < kQKK / 32; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = uint8_t((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] = uint8_t(s[j - 4] | ((ls[j] >> 4) << 6));
            s[j] = uint8_t(s[j] | ((lm[j] >> 4) << 6));
        }
    }
}

// Re-rounds every sub-block of 32 against its stored (fp16 d * 6-bit scale, fp16 dmin * 6-bit
// min), as the q4_K / q5_K quantisers do after choosing the scales.
void requantizeK4(const float* x, const uint8_t* scales, float d, float dmin, int nmax,
                  uint8_t* L) {
    for (int j = 0; j < kQKK / 32; ++j) {
        uint8_t sc, m;
        scaleMinK4(j, scales, sc, m);
        const float dj = d * float(sc);
        if (dj == 0) continue;
        const float dm = dmin * float(m);
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = uint8_t(clampi(nearestInt((x[32 * j + ii] + dm) / dj), 0, nmax));
    }
}

// Re-rounds every sub-block of 16 of a q2_K block against its stored scale and min.
void requantizeQ2K(const float* x, const uint8_t* scales, float d, float dmin, uint8_t* L) {
    for (int j = 0; j < kQKK / 16; ++j) {
        const float dj = d * float(scales[j] & 0xF);
        if (dj == 0) continue;
        const float m = dmin * float(scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = uint8_t(clampi(nearestInt((x[16 * j + ii] + m) / dj), 0, 3));
    }
}

// ---- q2_K: scales[16] (4-bit scale | 4-bit min << 4), qs[64], f16 d, f16 dmin ----

void q2KBlockRef(const float* x, uint8_t* y) {
    uint8_t L[kQKK];
    float weights[16], mins[16], scales[16];
    constexpr float q4scale = 15.f;
    uint8_t* sc = y;
    float maxScale = 0, maxMin = 0;
    for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
        scales[j] =
            asymLevels(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
        if (scales[j] > maxScale) maxScale = scales[j];
        if (mins[j] > maxMin) maxMin = mins[j];
    }
    if (maxScale > 0) {
        const float iscale = q4scale / maxScale;
        for (int j = 0; j < 16; ++j) sc[j] = uint8_t(nearestInt(iscale * scales[j]));
        putHalf(y + 80, maxScale / q4scale);
    } else {
        std::fill(sc, sc + 16, uint8_t(0));
        putHalf(y + 80, 0.f);
    }
    if (maxMin > 0) {
        const float iscale = q4scale / maxMin;
        for (int j = 0; j < 16; ++j) sc[j] = uint8_t(sc[j] | (nearestInt(iscale * mins[j]) << 4));
        putHalf(y + 82, maxMin / q4scale);
    } else {
        putHalf(y + 82, 0.f);
    }
    requantizeQ2K(x, sc, getHalf(y + 80), getHalf(y + 82), L);
    pack2Bit(L, y + 16);
}

void q2KBlockWeighted(const float* x, const float* qw, uint8_t* y) {
    uint8_t L[kQKK], Ls[16], Lm[16];
    float mins[16], scales[16], sw[16], weight[16];
    const float sigma2 = sumSquares(kQKK, x) / kQKK;
    for (int j = 0; j < 16; ++j) {
        importanceWeights(16, qw + 16 * j, x + 16 * j, sigma2, weight);
        sw[j] = sumOf(16, weight);
        scales[j] =
            asymLevels(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, false);
    }
    const float dm = posLevels(16, 15, scales, Ls, sw);
    const float mm = posLevels(16, 15, mins, Lm, sw);
    putHalf(y + 80, dm);
    putHalf(y + 82, mm);
    for (int j = 0; j < 16; ++j) y[j] = uint8_t(Ls[j] | (Lm[j] << 4));
    requantizeQ2K(x, y, getHalf(y + 80), getHalf(y + 82), L);
    pack2Bit(L, y + 16);
}

// ---- q3_K: hmask[32], qs[64], scales[12] (16 6-bit scales, offset 32), f16 d ----

// Stores 16 6-bit values (already offset by 32) into the 12-byte q3_K scale layout.
void packQ3Scales(const int* l6, uint8_t* s) {
    std::memset(s, 0, 12);
    for (int j = 0; j < 16; ++j) {
        int l = l6[j];
        if (j < 8)
            s[j] = uint8_t(l & 0xF);
        else
            s[j - 8] = uint8_t(s[j - 8] | ((l & 0xF) << 4));
        l >>= 4;
        s[j % 4 + 8] = uint8_t(s[j % 4 + 8] | (l << (2 * (j / 4))));
    }
}

// Re-rounds against the stored scales, then splits the 3-bit levels into hmask and qs.
void finishQ3K(const float* x, int8_t* L, uint8_t* y) {
    const uint8_t* s = y + 96;
    const float d = getHalf(y + 108);
    for (int j = 0; j < 16; ++j) {
        int8_t sc = int8_t(j < 8 ? s[j] & 0xF : s[j - 8] >> 4);
        sc = int8_t((sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
        const float dj = d * float(sc);
        if (dj == 0) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = int8_t(clampi(nearestInt(x[16 * j + ii] / dj), -4, 3) + 4);
    }
    uint8_t* hmask = y;
    std::memset(hmask, 0, 32);
    int m = 0;
    uint8_t hm = 1;
    uint8_t U[kQKK];
    for (int j = 0; j < kQKK; ++j) {
        U[j] = uint8_t(L[j]);
        if (L[j] > 3) {
            hmask[m] = uint8_t(hmask[m] | hm);
            U[j] = uint8_t(L[j] - 4);
        }
        if (++m == kQKK / 8) {
            m = 0;
            hm = uint8_t(hm << 1);
        }
    }
    pack2Bit(U, y + 32);
}

void q3KBlockRef(const float* x, uint8_t* y) {
    int8_t L[kQKK];
    float scales[16];
    float maxScale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
        scales[j] = symLevelsDescent(16, 4, x + 16 * j, L + 16 * j);
        const float a = std::fabs(scales[j]);
        if (a > amax) {
            amax = a;
            maxScale = scales[j];
        }
    }
    if (maxScale != 0) {
        const float iscale = -32.f / maxScale;
        int l6[16];
        for (int j = 0; j < 16; ++j) {
            const int8_t l = int8_t(nearestInt(iscale * scales[j]));
            l6[j] = int8_t(clampi(l, -32, 31) + 32);
        }
        packQ3Scales(l6, y + 96);
        putHalf(y + 108, 1 / iscale);
    } else {
        std::memset(y + 96, 0, 12);
        putHalf(y + 108, 0.f);
    }
    finishQ3K(x, L, y);
}

void q3KBlockWeighted(const float* x, const float* qw, uint8_t* y) {
    int8_t L[kQKK], Ls[16];
    float scales[16], weight[16], sw[16];
    const float sigma2 = 2 * sumSquares(kQKK, x) / kQKK;
    for (int j = 0; j < 16; ++j) {
        importanceWeights(16, qw + 16 * j, x + 16 * j, sigma2, weight);
        sw[j] = sumOf(16, weight);
        scales[j] = symLevelsLsq(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    const float dBlock = symLevelsLsq(16, 32, scales, Ls, sw);
    int l6[16];
    for (int j = 0; j < 16; ++j) l6[j] = Ls[j];
    packQ3Scales(l6, y + 96);
    putHalf(y + 108, dBlock);
    finishQ3K(x, L, y);
}

// ---- q4_K / q5_K: f16 d, f16 dmin, scales[12], (q5_K: qh[32]), qs[128] ----

// Chooses the eight sub-block scales/mins and the levels (0..nmax) of one super-block.
// Without importance: per sub-block fit weighted by rms + |x|, 6-bit scales relative to the
// largest; with it: importance-weighted fits and least-squares 6-bit scales.
void k4Scales(const float* x, const float* qw, int nmax, uint8_t* y, uint8_t* L) {
    float weights[32], mins[8], scales[8];
    uint8_t ls[8], lm[8];
    if (!qw) {
        const float rmin = nmax == 15 ? -1.f : -0.5f;
        const int nstep = nmax == 15 ? 20 : 15;
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; ++j) {
            const float avX = std::sqrt(sumSquares(32, x + 32 * j) / 32);
            for (int l = 0; l < 32; ++l) weights[l] = avX + std::fabs(x[32 * j + l]);
            scales[j] = asymLevels(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin, 0.1f,
                                   nstep, false);
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        const float invScale = maxScale > 0 ? 63.f / maxScale : 0.f;
        const float invMin = maxMin > 0 ? 63.f / maxMin : 0.f;
        for (int j = 0; j < 8; ++j) {
            ls[j] = std::min<uint8_t>(63, uint8_t(nearestInt(invScale * scales[j])));
            lm[j] = std::min<uint8_t>(63, uint8_t(nearestInt(invMin * mins[j])));
        }
        packScaleMinK4(ls, lm, y + 4);
        putHalf(y, maxScale / 63.f);
        putHalf(y + 2, maxMin / 63.f);
    } else {
        float sw[8];
        const float sigma2 = 2 * sumSquares(kQKK, x) / kQKK;
        for (int j = 0; j < 8; ++j) {
            importanceWeights(32, qw + 32 * j, x + 32 * j, sigma2, weights);
            sw[j] = sumOf(32, weights);
            scales[j] = asymLevels(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], -0.9f,
                                   0.05f, 36, false);
        }
        const float dBlock = posLevels(8, 63, scales, ls, sw);
        const float mBlock = posLevels(8, 63, mins, lm, sw);
        // ggml clamps here for q5_K only; it matters only for levels wrapped from negative
        // values, which q4_K then stores as they are.
        if (nmax == 31)
            for (int j = 0; j < 8; ++j) {
                ls[j] = std::min<uint8_t>(63, ls[j]);
                lm[j] = std::min<uint8_t>(63, lm[j]);
            }
        packScaleMinK4(ls, lm, y + 4);
        putHalf(y, dBlock);
        putHalf(y + 2, mBlock);
    }
    requantizeK4(x, y + 4, getHalf(y), getHalf(y + 2), nmax, L);
}

void q4KBlock(const float* x, const float* qw, uint8_t* y) {
    uint8_t L[kQKK];
    k4Scales(x, qw, 15, y, L);
    uint8_t* q = y + 16;
    for (int j = 0; j < kQKK; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

void q5KBlock(const float* x, const float* qw, uint8_t* y) {
    uint8_t L[kQKK];
    k4Scales(x, qw, 31, y, L);
    uint8_t* qh = y + 16;
    uint8_t* ql = y + 48;
    std::memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQKK; n += 64, ql += 32) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] = uint8_t(qh[j] | m1);
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] = uint8_t(qh[j] | m2);
            }
            ql[j] = uint8_t(l1 | (l2 << 4));
        }
        m1 = uint8_t(m1 << 2);
        m2 = uint8_t(m2 << 2);
    }
}

// ---- q6_K: ql[128], qh[64], int8 scales[16], f16 d ----

void q6KBlock(const float* x, const float* qw, uint8_t* y) {
    int8_t L[kQKK];
    float scales[16];
    float maxScale = 0, maxAbsScale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        // The importance goes in as the weights directly (ggml's q6_K, unlike the others).
        const float scale =
            symLevelsLsq(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : nullptr);
        scales[ib] = scale;
        const float a = std::fabs(scale);
        if (a > maxAbsScale) {
            maxAbsScale = a;
            maxScale = scale;
        }
    }
    if (maxAbsScale < kGroupEps) {
        std::memset(y, 0, 210);
        return;
    }
    const float iscale = -128.f / maxScale;
    putHalf(y + 208, 1 / iscale);
    int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
    for (int ib = 0; ib < 16; ++ib) sc[ib] = int8_t(std::min(127, nearestInt(iscale * scales[ib])));
    const float d = getHalf(y + 208);
    for (int j = 0; j < 16; ++j) {
        const float dj = d * float(sc[j]);
        if (dj == 0) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = int8_t(clampi(nearestInt(x[16 * j + ii] / dj), -32, 31) + 32);
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    for (int j = 0; j < kQKK; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l + 0] & 0xF;
            const uint8_t q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF;
            const uint8_t q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = uint8_t(q1 | (q3 << 4));
            ql[l + 32] = uint8_t(q2 | (q4 << 4));
            qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                            ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
    }
}

// ---- weighted 32-element formats (sigma2 is the mean square of the whole row) ----

// Low nibbles from L[0..16), high nibbles from L[16..32); the fifth bits (if qh) into qh.
void packNibbles32(const uint8_t* L, uint8_t* qs, uint8_t* qhOut) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        const uint8_t xi0 = L[j], xi1 = L[j + 16];
        qs[j] = uint8_t((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= uint32_t((xi0 & 0x10u) >> 4) << (j + 0);
        qh |= uint32_t((xi1 & 0x10u) >> 4) << (j + 16);
    }
    if (qhOut) std::memcpy(qhOut, &qh, 4);
}

// Symmetric (q4_0 / q5_0: levels from -nmax, d only) or with min (q4_1 / q5_1).
void quantRow32Weighted(DType t, const float* x, uint8_t* y, int64_t n, const float* qw) {
    const float sigma2 = sumSquares(n, x) / float(n);
    float weight[kQK];
    uint8_t L[kQK];
    const int64_t nb = n / kQK;
    const int64_t bb = dtypeBlockBytes(t);
    for (int64_t ib = 0; ib < nb; ++ib, y += bb) {
        const float* xb = x + kQK * ib;
        importanceWeights(kQK, qw + kQK * ib, xb, sigma2, weight);
        if (t == DType::Q4_0 || t == DType::Q5_0) {
            int8_t Ls[kQK];
            const float d = symLevelsLsq(kQK, t == DType::Q4_0 ? 8 : 16, xb, Ls, weight);
            putHalf(y, d);
            for (int j = 0; j < kQK; ++j) L[j] = uint8_t(Ls[j]);
            if (t == DType::Q4_0)
                packNibbles32(L, y + 2, nullptr);
            else
                packNibbles32(L, y + 6, y + 2);
        } else {
            float min;
            const float d = asymLevels(kQK, t == DType::Q4_1 ? 15 : 31, xb, weight, L, &min, -0.9f,
                                       0.05f, 36, false);
            putHalf(y, d);
            putHalf(y + 2, -min);
            if (t == DType::Q4_1)
                packNibbles32(L, y + 4, nullptr);
            else
                packNibbles32(L, y + 8, y + 4);
        }
    }
}

// ---- IQ4_NL / IQ4_XS ----

// For every integer k in [-127, 112]: the largest i < 15 with kIq4Values[i] <= k.
struct Iq4Floor {
    uint8_t idx[240];
    Iq4Floor() {
        for (int k = -127; k <= 112; ++k) {
            int i = 0;
            while (i < 14 && kIq4Values[i + 1] <= k) ++i;
            idx[k + 127] = uint8_t(i);
        }
    }
};
const Iq4Floor kIq4Floor;

// Index of the code-book value nearest to v, the lower one on ties: what ggml's bisection
// (best_index_int8) returns, found through floor(v) since the code book holds integers (the
// bisection's data-dependent branches made IQ4 quantisation ten times slower).
inline int nearestIq4(float v) {
    if (v <= kIq4Values[0]) return 0;
    if (!(v < kIq4Values[15])) return 15; // also NaN, where the bisection ends at 15
    int f = int(v);                       // truncation; floor below for negative non-integers
    f -= float(f) > v ? 1 : 0;
    const int ml = kIq4Floor.idx[f + 127];
    return v - float(kIq4Values[ml]) < float(kIq4Values[ml + 1]) - v ? ml : ml + 1;
}

// One IQ4_NL block (superSize 32) or IQ4_XS super-block (256) with ggml's search over 15 inverse
// scales per block of 32; for IQ4_XS the block scales are then stored as 6-bit multiples of
// max/32 and the codes re-chosen. dh: f16 d; q4: packed codes; scalesH/scalesL: IQ4_XS only.
void iq4Block(int superSize, const float* x, const float* qw, uint8_t* dh, uint8_t* q4,
              uint8_t* scalesH, uint8_t* scalesL) {
    constexpr int ntry = 7;
    float scales[kQKK / 32], weight[32];
    uint8_t L[kQKK];
    const int nb = superSize / 32;
    float sigma2 = sumSquares(superSize, x);
    sigma2 *= 2.f / float(superSize);
    std::memset(q4, 0, size_t(superSize / 2));
    putHalf(dh, 0.f);
    float maxScale = 0, amaxScale = 0;
    for (int ib = 0; ib < nb; ++ib) {
        const float* xb = x + ib * 32;
        uint8_t* Lb = L + ib * 32;
        if (qw)
            importanceWeights(32, qw + ib * 32, xb, sigma2, weight);
        else
            for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
        float amax;
        const float max = signedAbsMax(32, xb, amax);
        if (amax < kGroupEps) {
            scales[ib] = 0;
            continue;
        }
        float d = -max / float(kIq4Values[0]);
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; ++j) {
            const int l = nearestIq4(id * xb[j]);
            Lb[j] = uint8_t(l);
            const float q = kIq4Values[l];
            const float w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumqx / sumq2;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; ++itry) {
            id = float(itry + kIq4Values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; ++j) {
                const float q = kIq4Values[nearestIq4(id * xb[j])];
                const float w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        const float ad = std::fabs(d);
        if (ad > amaxScale) {
            amaxScale = ad;
            maxScale = d;
        }
    }
    if (nb > 1) {
        std::memset(scalesH, 0, 2);
        uint16_t sh = 0;
        const float d = -maxScale / 32;
        putHalf(dh, d);
        const float id = d != 0 ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ++ib) {
            int l = clampi(nearestInt(id * scales[ib]), -32, 31);
            const float dl = d * float(l);
            const float idl = dl != 0 ? 1 / dl : 0.f;
            uint8_t* Lb = L + ib * 32;
            const float* xb = x + ib * 32;
            for (int j = 0; j < 32; ++j) Lb[j] = uint8_t(nearestIq4(idl * xb[j]));
            l += 32;
            const uint8_t lLow = uint8_t(l & 0xf), lHigh = uint8_t(l >> 4);
            if (ib % 2 == 0)
                scalesL[ib / 2] = lLow;
            else
                scalesL[ib / 2] = uint8_t(scalesL[ib / 2] | (lLow << 4));
            sh = uint16_t(sh | (lHigh << 2 * (ib % 8)));
        }
        std::memcpy(scalesH, &sh, 2);
    } else {
        putHalf(dh, scales[0]);
        const float id = scales[0] != 0 ? 1 / scales[0] : 0;
        for (int j = 0; j < superSize; ++j) L[j] = uint8_t(nearestIq4(id * x[j]));
    }
    for (int i = 0; i < superSize / 32; ++i)
        for (int j = 0; j < 16; ++j)
            q4[16 * i + j] = uint8_t(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

} // namespace

void quantizeRowGgml(DType t, const float* x, std::byte* dst, int64_t n, const float* qw) {
    uint8_t* y = reinterpret_cast<uint8_t*>(dst);
    const int64_t be = dtypeBlockElems(t), bb = dtypeBlockBytes(t);
    const int64_t nb = n / be;
    auto blockQw = [&](int64_t i) { return qw ? qw + i * be : nullptr; };
    switch (t) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
        if (!qw) throw ArgumentError("quantizeRowGgml: the weighted variant needs importance");
        quantRow32Weighted(t, x, y, n, qw);
        return;
    case DType::Q2_K:
        for (int64_t i = 0; i < nb; ++i)
            qw ? q2KBlockWeighted(x + i * be, blockQw(i), y + i * bb)
               : q2KBlockRef(x + i * be, y + i * bb);
        return;
    case DType::Q3_K:
        for (int64_t i = 0; i < nb; ++i)
            qw ? q3KBlockWeighted(x + i * be, blockQw(i), y + i * bb)
               : q3KBlockRef(x + i * be, y + i * bb);
        return;
    case DType::Q4_K:
        for (int64_t i = 0; i < nb; ++i) q4KBlock(x + i * be, blockQw(i), y + i * bb);
        return;
    case DType::Q5_K:
        for (int64_t i = 0; i < nb; ++i) q5KBlock(x + i * be, blockQw(i), y + i * bb);
        return;
    case DType::Q6_K:
        for (int64_t i = 0; i < nb; ++i) q6KBlock(x + i * be, blockQw(i), y + i * bb);
        return;
    case DType::IQ4_NL:
        for (int64_t i = 0; i < nb; ++i)
            iq4Block(32, x + i * be, blockQw(i), y + i * bb, y + i * bb + 2, nullptr, nullptr);
        return;
    case DType::IQ4_XS:
        for (int64_t i = 0; i < nb; ++i) {
            uint8_t* b = y + i * bb;
            iq4Block(kQKK, x + i * be, blockQw(i), b, b + 8, b + 2, b + 4);
        }
        return;
    default:
        throw UnsupportedError("quantizeRow: dtype " + std::string(dtypeName(t)) +
                               " is not supported");
    }
}

void dequantizeIq4(DType t, const std::byte* src, float* y, int64_t nb) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(src);
    if (t == DType::IQ4_NL) {
        for (int64_t i = 0; i < nb; ++i, p += 18, y += 32) {
            const float d = getHalf(p);
            const uint8_t* qs = p + 2;
            for (int j = 0; j < 16; ++j) {
                y[j] = d * float(kIq4Values[qs[j] & 0xf]);
                y[j + 16] = d * float(kIq4Values[qs[j] >> 4]);
            }
        }
        return;
    }
    for (int64_t i = 0; i < nb; ++i, p += 136) {
        const float d = getHalf(p);
        uint16_t sh;
        std::memcpy(&sh, p + 2, 2);
        const uint8_t* sl = p + 4;
        const uint8_t* qs = p + 8;
        for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
            const int ls = ((sl[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((sh >> 2 * ib) & 3) << 4);
            const float dl = d * float(ls - 32);
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * float(kIq4Values[qs[j] & 0xf]);
                y[j + 16] = dl * float(kIq4Values[qs[j] >> 4]);
            }
        }
    }
}

} // namespace lcw::detail
