#include "core/runtime/hadamard.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>
#include <omp.h>
#include <string>

namespace lcw::runtime {

namespace {

uint64_t splitMix(uint64_t& state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// Uniform in (0, 1), 53 bits.
double uniform(uint64_t& state) {
    return (double(splitMix(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/// A random orthogonal m×m matrix: Gaussian rows, modified Gram–Schmidt.
std::vector<double> randomOrthogonal(int64_t m, uint64_t seed) {
    uint64_t st = seed ^ 0x6A09E667F3BCC909ull;
    const double twoPi = 6.283185307179586476925;
    std::vector<double> a(size_t(m * m));
    for (size_t i = 0; i < a.size(); i += 2) {
        const double r = std::sqrt(-2.0 * std::log(uniform(st))), t = twoPi * uniform(st);
        a[i] = r * std::cos(t);
        if (i + 1 < a.size()) a[i + 1] = r * std::sin(t);
    }
    for (int64_t i = 0; i < m; ++i) {
        double* ri = a.data() + i * m;
        for (int64_t pass = 0; pass < 2; ++pass) // twice: orthogonal to rounding
            for (int64_t j = 0; j < i; ++j) {
                const double* rj = a.data() + j * m;
                double d = 0;
                for (int64_t c = 0; c < m; ++c) d += ri[c] * rj[c];
                for (int64_t c = 0; c < m; ++c) ri[c] -= d * rj[c];
            }
        double nrm = 0;
        for (int64_t c = 0; c < m; ++c) nrm += ri[c] * ri[c];
        nrm = std::sqrt(nrm);
        for (int64_t c = 0; c < m; ++c) ri[c] /= nrm;
    }
    return a;
}

/// The p-point fast Walsh–Hadamard transform across the runs of m elements, scaled by 1/√p.
template <class T> void fwht(T* x, int64_t p, int64_t m) {
    for (int64_t len = 1; len < p; len *= 2)
        for (int64_t i = 0; i < p; i += 2 * len)
            for (int64_t j = i; j < i + len; ++j) {
                T* u = x + j * m;
                T* v = x + (j + len) * m;
                for (int64_t b = 0; b < m; ++b) {
                    const T s = u[b], d = v[b];
                    u[b] = s + d;
                    v[b] = s - d;
                }
            }
    const T f = T(1.0 / std::sqrt(double(p)));
    for (int64_t i = 0; i < p * m; ++i) x[i] *= f;
}

/// Each run of m elements ← M · run (transposed: Mᵀ · run); tmp holds m values.
template <class T> void mixRuns(T* x, int64_t p, int64_t m, const T* M, bool transposed, T* tmp) {
    for (int64_t a = 0; a < p; ++a) {
        T* r = x + a * m;
        for (int64_t i = 0; i < m; ++i) {
            T s = 0;
            for (int64_t c = 0; c < m; ++c) s += (transposed ? M[c * m + i] : M[i * m + c]) * r[c];
            tmp[i] = s;
        }
        for (int64_t i = 0; i < m; ++i) r[i] = tmp[i];
    }
}

} // namespace

uint64_t rotationSeed(uint64_t seed, int purpose) {
    uint64_t st = seed * 0x100000001B3ull + uint64_t(purpose) * 0xD1B54A32D192ED03ull;
    return splitMix(st);
}

OrthoTransform::OrthoTransform(int64_t n, uint64_t seed, bool randomSigns) {
    if (n < 1) throw ArgumentError("orthogonal transform of size " + std::to_string(n));
    m_n = n;
    m_p = 1;
    while (n % (2 * m_p) == 0) m_p *= 2;
    m_m = n / m_p;
    if (m_m > 1) {
        m_odd = randomOrthogonal(m_m, seed);
        m_oddF.assign(m_odd.begin(), m_odd.end());
    }
    if (randomSigns) {
        uint64_t st = seed ^ 0xBB67AE8584CAA73Bull;
        m_sign.resize(size_t(n));
        for (auto& s : m_sign) s = (splitMix(st) >> 63) ? int8_t(-1) : int8_t(1);
    }
}

void OrthoTransform::apply(float* x, int64_t rows, int64_t ld, int threads) const {
    const int64_t n = m_n, p = m_p, m = m_m;
    const int nt = std::max(1, threads);
    std::vector<float> tmp(size_t(m) * size_t(nt)); // one run of scratch per thread
    // omp: nothrow (arithmetic on the caller's buffer and preallocated scratch)
#pragma omp parallel for num_threads(nt) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        float* v = x + r * ld;
        if (!m_sign.empty())
            for (int64_t i = 0; i < n; ++i) v[i] *= float(m_sign[size_t(i)]);
        if (m > 1) mixRuns(v, p, m, m_oddF.data(), false, tmp.data() + omp_get_thread_num() * m);
        fwht(v, p, m);
    }
}

void OrthoTransform::apply(double* x) const {
    if (!m_sign.empty())
        for (int64_t i = 0; i < m_n; ++i) x[i] *= double(m_sign[size_t(i)]);
    if (m_m > 1) {
        std::vector<double> tmp(static_cast<size_t>(m_m));
        mixRuns(x, m_p, m_m, m_odd.data(), false, tmp.data());
    }
    fwht(x, m_p, m_m);
}

void OrthoTransform::applyTransposed(double* x) const {
    // Tᵀ = D (H_p ⊗ M_mᵀ) / √p; H_p is symmetric and the two factors of the product commute.
    fwht(x, m_p, m_m);
    if (m_m > 1) {
        std::vector<double> tmp(static_cast<size_t>(m_m));
        mixRuns(x, m_p, m_m, m_odd.data(), true, tmp.data());
    }
    if (!m_sign.empty())
        for (int64_t i = 0; i < m_n; ++i) x[i] *= double(m_sign[size_t(i)]);
}

std::vector<double> OrthoTransform::matrix() const {
    std::vector<double> t(static_cast<size_t>(m_n * m_n)), e(static_cast<size_t>(m_n));
    for (int64_t c = 0; c < m_n; ++c) {
        std::fill(e.begin(), e.end(), 0.0);
        e[size_t(c)] = 1.0;
        apply(e.data());
        for (int64_t r = 0; r < m_n; ++r) t[size_t(r * m_n + c)] = e[size_t(r)];
    }
    return t;
}

void OnlineRotations::init(const OnlineRotation& r, int64_t headDim,
                           const std::vector<int64_t>& mlpWidths) {
    m_rot = r;
    m_down.clear();
    m_head = {};
    if (r.down)
        for (int64_t w : mlpWidths)
            if (!m_down.count(w))
                m_down.emplace(w, OrthoTransform(w, rotationSeed(r.seed, kRotDown), false));
    if (r.qk) m_head = OrthoTransform(headDim, rotationSeed(r.seed, kRotHead), false);
}

void OnlineRotations::rotateDown(float* x, int64_t n, int64_t width, int64_t ld,
                                 int threads) const {
    auto it = m_down.find(width);
    if (it == m_down.end())
        throw Error("online rotation: no transform of size " + std::to_string(width));
    it->second.apply(x, n, ld, threads);
}

void OnlineRotations::rotateHeads(float* x, int64_t n, int64_t heads, int64_t ld,
                                  int threads) const {
    const int64_t hd = m_head.size();
    if (ld == heads * hd) return m_head.apply(x, n * heads, hd, threads);
    for (int64_t t = 0; t < n; ++t) m_head.apply(x + t * ld, heads, hd, threads);
}

} // namespace lcw::runtime
