// Attention kernels: causal softmax(q.k * scale) v over a float32 KV cache, with sliding
// windows, soft-capping and ALiBi (kernels.h).
#include "core/runtime/kernels.h"
#include "core/runtime/simd.h"

#include <algorithm>
#include <cmath>

namespace lcw::kernels {

using namespace detail;

namespace {

#if LCW_X86
// exp(x) for x in [-87, 88] with ~2 ulp error: 2^n * p(r), r = x - n ln2, degree-6 polynomial
// (the classic Cephes expf coefficients).
LCW_AVX2 inline __m256 expAvx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// s[i] = exp(s[i] * scale - max), returns the sum (float accumulation in 8 lanes).
LCW_AVX2 float scaledExpAvx2(float* s, int64_t n, float scale, float mx) {
    const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = expAvx2(_mm256_fmsub_ps(_mm256_loadu_ps(s + i), vs, vm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum8(acc);
    if (i < n) {
        const __m256i m =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - (n - i)));
        const __m256 e = expAvx2(_mm256_fmsub_ps(_mm256_maskload_ps(s + i, m), vs, vm));
        const __m256 z = _mm256_and_ps(e, _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(s + i, m, z);
        sum += hsum8(z);
    }
    return sum;
}
#endif

float scaledExpGeneric(float* s, int64_t n, float scale, float mx) {
    float sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        s[i] = std::exp(s[i] * scale - mx);
        sum += s[i];
    }
    return sum;
}

/// Softmax of s[0..n) * scale in place.
void softmaxScaled(float* s, int64_t n, float scale) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, s[i]);
    mx *= scale; // scale > 0
    float sum;
#if LCW_X86
    if (activeIsa() != Isa::Generic)
        sum = scaledExpAvx2(s, n, scale, mx);
    else
#endif
        sum = scaledExpGeneric(s, n, scale, mx);
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

} // namespace

void attention(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
               int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
               int64_t headDim, int64_t window, int threads) {
    AttentionOptions opt;
    opt.window = window;
    attentionEx(q, ldq, kCache, vCache, out, ldo, nTok, pos0, nHeads, nKvHeads, headDim, opt,
                threads);
}

void attentionEx(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
                 int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
                 int64_t headDim, const AttentionOptions& opt, int threads) {
    const int nt = resolveThreads(threads);
    const int64_t window = opt.window;
    const bool plain = opt.softcap <= 0 && opt.alibi == nullptr;
    const int64_t kvDim = nKvHeads * headDim;
    const int64_t group = nHeads / nKvHeads;
    const int64_t hd = headDim;
    const float scale = opt.scale > 0 ? opt.scale : float(1.0 / std::sqrt(double(headDim)));
    // Queries are processed in blocks: S = Q K^T and O = P V are then matrix products (K is
    // transposed into scratch once per block). The part of a block's key range that is masked for
    // its earlier queries is computed and zeroed, which costs ~QB/2 keys per query.
    constexpr int64_t QB = 32;
    const int64_t nBlocks = (nTok + QB - 1) / QB;
    const int64_t tasks = nHeads * nBlocks;
    const int64_t work = nHeads * nTok * (pos0 + nTok) * headDim;
    const bool parallel = nt > 1 && tasks > 1 && work >= kMinParallelWork;

#pragma omp parallel num_threads(nt) if (parallel)
    {
        thread_local FloatBuffer S, KT;
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; ++task) {
            // Block-major order: the longest blocks (last queries) are spread over the threads.
            const int64_t blk = nBlocks - 1 - task / nHeads, h = task % nHeads;
            const int64_t t0 = blk * QB, t1 = std::min(nTok, t0 + QB), nq = t1 - t0;
            const int64_t kvh = h / group;
            const int64_t jLo = window > 0 ? std::max<int64_t>(0, pos0 + t0 - window + 1) : 0;
            const int64_t jHi = pos0 + t1; // exclusive
            const int64_t nk = jHi - jLo;
            const float* kh = kCache + jLo * kvDim + kvh * hd;
            const float* vh = vCache + jLo * kvDim + kvh * hd;
            const float* qb = q + t0 * ldq + h * hd;
            float* ob = out + t0 * ldo + h * hd;
            if (S.size() < size_t(nq * nk)) S.resize(size_t(nq * nk));
            if (nq == 1) {
                // Decode: one query, dot products against the key rows directly.
                gemmNT(kh, kvDim, nk, qb, hd, 1, S.data(), 0, hd);
            } else {
                if (KT.size() < size_t(hd * nk)) KT.resize(size_t(hd * nk));
                for (int64_t j = 0; j < nk; ++j)
                    for (int64_t d = 0; d < hd; ++d) KT[size_t(d * nk + j)] = kh[j * kvDim + d];
                gemmNN(qb, ldq, KT.data(), nk, S.data(), nk, nq, nk, hd);
            }
            for (int64_t t = 0; t < nq; ++t) {
                const int64_t p = pos0 + t0 + t;
                const int64_t a = (window > 0 ? std::max<int64_t>(0, p - window + 1) : 0) - jLo;
                const int64_t b = p - jLo + 1; // exclusive
                float* row = S.data() + t * nk;
                std::fill(row, row + a, 0.0f);
                if (plain) {
                    softmaxScaled(row + a, b - a, scale);
                } else {
                    const float slope = opt.alibi ? opt.alibi[h] : 0.0f;
                    for (int64_t j = a; j < b; ++j) {
                        const float rel = float(jLo + j - p); // key position - query position
                        float sc = row[j];
                        if (opt.alibiBeforeScale)
                            sc = (sc + slope * rel) * scale;
                        else
                            sc = sc * scale + slope * rel;
                        if (opt.softcap > 0) sc = opt.softcap * std::tanh(sc / opt.softcap);
                        row[j] = sc;
                    }
                    softmaxScaled(row + a, b - a, 1.0f);
                }
                std::fill(row + b, row + nk, 0.0f);
            }
            if (nq == 1) {
                std::fill(ob, ob + hd, 0.0f);
                for (int64_t j = 0; j < nk; ++j) {
                    const float pj = S[size_t(j)];
                    const float* vr = vh + j * kvDim;
                    for (int64_t d = 0; d < hd; ++d) ob[d] += pj * vr[d];
                }
            } else {
                gemmNN(S.data(), nk, vh, kvDim, ob, ldo, nq, hd, nk);
            }
        }
    }
}

} // namespace lcw::kernels
