// Activation fake-quantisation and the quantised KV-cache stream (formulas in
// core/model/runtime_quant.h).
#include "core/runtime/quant_runtime.h"

#include "core/common/error.h"
#include "core/common/parallel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace lcw::runtime {

namespace {

/// Packs n codes of `bits` bits (< 16) into a little-endian bit stream.
void packCodes(const uint16_t* codes, int64_t n, int bits, uint8_t* dst) {
    uint64_t acc = 0;
    int have = 0;
    for (int64_t i = 0; i < n; ++i) {
        acc |= uint64_t(codes[i]) << have;
        have += bits;
        while (have >= 8) {
            *dst++ = uint8_t(acc & 0xff);
            acc >>= 8;
            have -= 8;
        }
    }
    if (have > 0) *dst = uint8_t(acc & 0xff);
}

void unpackCodes(const uint8_t* src, int64_t n, int bits, uint16_t* codes) {
    if (bits == 8) {
        for (int64_t i = 0; i < n; ++i) codes[i] = src[i];
        return;
    }
    uint64_t acc = 0;
    int have = 0;
    const uint64_t mask = (uint64_t(1) << bits) - 1;
    for (int64_t i = 0; i < n; ++i) {
        while (have < bits) {
            acc |= uint64_t(*src++) << have;
            have += 8;
        }
        codes[i] = uint16_t(acc & mask);
        acc >>= bits;
        have -= bits;
    }
}

/// Asymmetric range of a set of values: scale = (max - min) / levels (0 for a constant set).
inline void rangeOf(float lo, float hi, int levels, float& scale, float& mn) {
    mn = lo;
    scale = hi > lo ? (hi - lo) / float(levels) : 0.0f;
}

inline uint16_t codeOf(float x, float scale, float mn, int levels) {
    if (scale == 0.0f) return 0;
    const float q = std::nearbyint((x - mn) / scale);
    return uint16_t(std::clamp(q, 0.0f, float(levels)));
}

} // namespace

namespace {

/// Symmetric fake quantisation of the channels idx[0..n) of one row: s = clip * max|x| / qmax.
inline void quantizeGroup(const float* xr, float* o, const int32_t* idx, int64_t n, float qmax,
                          float clip) {
    float m = 0.0f;
    for (int64_t k = 0; k < n; ++k) m = std::max(m, std::fabs(xr[idx[k]]));
    const float s = clip * m / qmax;
    if (!(s > 0.0f)) {
        for (int64_t k = 0; k < n; ++k) o[idx[k]] = 0.0f;
        return;
    }
    for (int64_t k = 0; k < n; ++k)
        o[idx[k]] = std::clamp(std::nearbyint(xr[idx[k]] / s), -qmax, qmax) * s;
}

/// Atom's layout: per token, groups of groupSize over the normal channels (ascending), then the
/// outlier channels as one group at outlierBits (or passed through at 16 bits).
void fakeQuantizeGrouped(const ActQuantSpec& spec, const float* x, int64_t ldx, float* out,
                         int64_t ldo, int64_t n, int64_t dim, const std::vector<uint8_t>& keep,
                         int threads) {
    std::vector<int32_t> normal, outl;
    for (int64_t c = 0; c < dim; ++c) (keep[size_t(c)] ? normal : outl).push_back(int32_t(c));
    const int64_t nn = int64_t(normal.size());
    const int64_t g = spec.groupSize > 0 ? spec.groupSize : std::max<int64_t>(nn, 1);
    const float qmax = float((1 << (spec.bits - 1)) - 1);
    const bool quantOutl = spec.outlierBits < 16 && !outl.empty();
    const float qmaxO = quantOutl ? float((1 << (spec.outlierBits - 1)) - 1) : 0.0f;
    // omp: nothrow (fake quantisation into the caller's buffer)
#pragma omp parallel for schedule(static)                                                          \
    num_threads(threads > 0 ? threads : omp_get_max_threads()) if (n * dim >= 4096)
    for (int64_t t = 0; t < n; ++t) {
        const float* xr = x + t * ldx;
        float* o = out + t * ldo;
        for (int64_t c0 = 0; c0 < nn; c0 += g)
            quantizeGroup(xr, o, normal.data() + c0, std::min(g, nn - c0), qmax, spec.clip);
        if (quantOutl)
            quantizeGroup(xr, o, outl.data(), int64_t(outl.size()), qmaxO, 1.0f);
        else
            for (int32_t c : outl) o[c] = xr[c];
    }
}

} // namespace

void fakeQuantizeActivations(const ActQuantSpec& spec, const float* x, int64_t ldx, float* out,
                             int64_t ldo, int64_t n, int64_t dim, int threads) {
    if (!spec.active()) {
        if (out != x)
            for (int64_t t = 0; t < n; ++t)
                std::copy(x + t * ldx, x + t * ldx + dim, out + t * ldo);
        return;
    }
    std::vector<uint8_t> keep(size_t(dim), 1);
    for (int32_t c : spec.outlierChannels)
        if (c >= 0 && c < dim) keep[size_t(c)] = 0;
    if (spec.perToken &&
        (spec.groupSize > 0 || (spec.outlierBits < 16 && !spec.outlierChannels.empty()))) {
        fakeQuantizeGrouped(spec, x, ldx, out, ldo, n, dim, keep, threads);
        return;
    }
    const uint8_t* kp = keep.data();
    const float qmax = float((1 << (spec.bits - 1)) - 1);
    // omp: nothrow (fake quantisation into the caller's buffer)
#pragma omp parallel for schedule(static)                                                          \
    num_threads(threads > 0 ? threads : omp_get_max_threads()) if (n * dim >= 4096)
    for (int64_t t = 0; t < n; ++t) {
        const float* xr = x + t * ldx;
        float* o = out + t * ldo;
        float m = spec.absMax;
        if (spec.perToken) {
            m = 0.0f;
            for (int64_t c = 0; c < dim; ++c) m = std::max(m, kp[c] ? std::fabs(xr[c]) : 0.0f);
        }
        const float s = spec.clip * m / qmax;
        if (!(s > 0.0f)) {
            for (int64_t c = 0; c < dim; ++c) o[c] = kp[c] ? 0.0f : xr[c];
            continue;
        }
        for (int64_t c = 0; c < dim; ++c) {
            const float q = std::clamp(std::nearbyint(xr[c] / s), -qmax, qmax);
            o[c] = kp[c] ? q * s : xr[c];
        }
    }
}

void pastOnlyAttention(const float* q, int64_t ldq, float* kc, float* vc, const float* kNew,
                       const float* vNew, float* out, int64_t ldo, int64_t n, int64_t pos0,
                       int64_t heads, int64_t kvHeads, int64_t hd,
                       const kernels::AttentionOptions& ao, int threads) {
    const int64_t W = kvHeads * hd;
    std::vector<float> saved(static_cast<size_t>(2 * W));
    for (int64_t t = 0; t < n; ++t) {
        // One query at a time: a later query of the batch sees this row quantised again.
        float* kr = kc + (pos0 + t) * W;
        float* vr = vc + (pos0 + t) * W;
        std::copy(kr, kr + W, saved.begin());
        std::copy(vr, vr + W, saved.begin() + W);
        std::copy(kNew + t * W, kNew + (t + 1) * W, kr);
        std::copy(vNew + t * W, vNew + (t + 1) * W, vr);
        // Threads only where one query's keys are many: a parallel region per query costs more
        // than it saves on short contexts (the output does not depend on the thread count).
        const int th = (pos0 + t + 1) * heads * hd >= (int64_t(1) << 17) ? threads : 1;
        kernels::attentionEx(q + t * ldq, ldq, kc, vc, out + t * ldo, ldo, 1, pos0 + t, heads,
                             kvHeads, hd, ao, th);
        std::copy(saved.begin(), saved.begin() + W, kr);
        std::copy(saved.begin() + W, saved.end(), vr);
    }
}

void KvStream::init(int bits, KvGranularity g, int64_t groupSize, int64_t width) {
    if (bits < 2 || bits > 16 || groupSize < 1 || width < 1)
        throw ArgumentError("KV cache: bits " + std::to_string(bits) + ", group size " +
                            std::to_string(groupSize) + ", width " + std::to_string(width) +
                            " are out of range");
    *this = KvStream();
    m_bits = bits;
    m_gran = g;
    m_width = m_rowWidth = width;
    m_group = g == KvGranularity::Token ? std::min(groupSize, width) : groupSize;
    m_groups = g == KvGranularity::Token ? (width + m_group - 1) / m_group : width;
    m_rowBytes = (width * bits + 7) / 8;
}

void KvStream::initSlice(int bits, KvGranularity g, int64_t groupSize, int64_t rowWidth,
                         int64_t offset, int64_t width) {
    if (offset < 0 || width < 1 || offset + width > rowWidth)
        throw ArgumentError("KV cache: slice [" + std::to_string(offset) + ", " +
                            std::to_string(offset + width) + ") of a row of " +
                            std::to_string(rowWidth) + " values");
    if (bits < 16 && g == KvGranularity::Channel)
        throw UnsupportedError("KV cache: a per-head slice needs token granularity");
    init(bits, g, groupSize, rowWidth);
    if (bits >= 16) {
        m_width = width, m_offset = offset;
        return;
    }
    m_width = width;
    m_offset = offset;
    m_group0 = offset / m_group;
    m_groups = (offset + width - 1) / m_group - m_group0 + 1;
    m_rowBytes = (width * bits + 7) / 8;
}

void KvStream::setSmoothing(const std::vector<float>& shift, const std::vector<float>& scale) {
    if (shift.empty() && scale.empty()) {
        m_sShift.clear(), m_sScale.clear();
        return;
    }
    if (int64_t(shift.size()) != m_rowWidth || int64_t(scale.size()) != m_rowWidth)
        throw ArgumentError("KV cache smoothing: " + std::to_string(shift.size()) + " shifts and " +
                            std::to_string(scale.size()) + " scales for rows of " +
                            std::to_string(m_rowWidth) + " channels");
    for (size_t c = 0; c < scale.size(); ++c)
        if (!(std::isfinite(scale[c]) && scale[c] > 0.0f) || !std::isfinite(shift[c]))
            throw ArgumentError("KV cache smoothing: channel " + std::to_string(c) + " has scale " +
                                std::to_string(scale[c]) + " and shift " +
                                std::to_string(shift[c]) + " (scales must be finite and > 0)");
    if (m_bits >= 16) return; // an f32 half is not quantised: nothing to smooth
    if (m_gran != KvGranularity::Token)
        throw UnsupportedError("KV cache smoothing needs token granularity");
    if (m_rows > 0) throw ArgumentError("KV cache smoothing: set it before the first row");
    m_sShift = shift;
    m_sScale = scale;
}

void KvStream::quantizeTokenRow(const float* x, int64_t row) {
    // x: the whole row (m_rowWidth values); the stream keeps channels [m_offset, +m_width).
    if (!m_sScale.empty()) {
        m_sRow.resize(size_t(m_rowWidth));
        for (int64_t c = 0; c < m_rowWidth; ++c)
            m_sRow[size_t(c)] = (x[c] - m_sShift[size_t(c)]) / m_sScale[size_t(c)];
        x = m_sRow.data();
    }
    const int levels = (1 << m_bits) - 1;
    float* sc = m_scale.data() + row * m_groups;
    float* mn = m_min.data() + row * m_groups;
    std::vector<uint16_t> codes(static_cast<size_t>(m_width));
    for (int64_t g = 0; g < m_groups; ++g) {
        const int64_t c0 = (m_group0 + g) * m_group, c1 = std::min(c0 + m_group, m_rowWidth);
        float lo = x[c0], hi = x[c0];
        for (int64_t c = c0 + 1; c < c1; ++c) lo = std::min(lo, x[c]), hi = std::max(hi, x[c]);
        rangeOf(lo, hi, levels, sc[g], mn[g]);
        const int64_t s0 = std::max(c0, m_offset), s1 = std::min(c1, m_offset + m_width);
        for (int64_t c = s0; c < s1; ++c)
            codes[size_t(c - m_offset)] = codeOf(x[c], sc[g], mn[g], levels);
    }
    packCodes(codes.data(), m_width, m_bits, m_codes.data() + row * m_rowBytes);
}

void KvStream::quantizeBlock(const float* x, int64_t block) {
    const int levels = (1 << m_bits) - 1;
    float* sc = m_scale.data() + block * m_width;
    float* mn = m_min.data() + block * m_width;
    std::vector<float> lo(x, x + m_width), hi(x, x + m_width);
    for (int64_t r = 1; r < m_group; ++r)
        for (int64_t c = 0; c < m_width; ++c) {
            lo[size_t(c)] = std::min(lo[size_t(c)], x[r * m_width + c]);
            hi[size_t(c)] = std::max(hi[size_t(c)], x[r * m_width + c]);
        }
    for (int64_t c = 0; c < m_width; ++c)
        rangeOf(lo[size_t(c)], hi[size_t(c)], levels, sc[c], mn[c]);
    std::vector<uint16_t> codes(static_cast<size_t>(m_width));
    for (int64_t r = 0; r < m_group; ++r) {
        for (int64_t c = 0; c < m_width; ++c)
            codes[size_t(c)] = codeOf(x[r * m_width + c], sc[c], mn[c], levels);
        packCodes(codes.data(), m_width, m_bits,
                  m_codes.data() + (block * m_group + r) * m_rowBytes);
    }
}

void KvStream::append(const float* x, int64_t ld, int64_t n) {
    const int64_t W = m_width;
    if (m_bits >= 16) {
        m_f32.resize(size_t((m_rows + n) * W));
        for (int64_t t = 0; t < n; ++t)
            std::copy(x + t * ld + m_offset, x + t * ld + m_offset + W,
                      m_f32.begin() + (m_rows + t) * W);
        m_rows += n;
        return;
    }
    if (m_gran == KvGranularity::Token) {
        m_codes.resize(size_t((m_rows + n) * m_rowBytes));
        m_scale.resize(size_t((m_rows + n) * m_groups));
        m_min.resize(m_scale.size());
        for (int64_t t = 0; t < n; ++t) quantizeTokenRow(x + t * ld, m_rows + t);
        m_rows += n;
        m_qrows = m_rows;
        return;
    }
    m_f32.resize(size_t(m_group * W));
    for (int64_t t = 0; t < n; ++t) {
        const int64_t inTail = m_rows - m_qrows;
        std::copy(x + t * ld, x + t * ld + W, m_f32.begin() + inTail * W);
        ++m_rows;
        if (inTail + 1 == m_group) {
            const int64_t block = m_qrows / m_group;
            m_codes.resize(size_t((m_qrows + m_group) * m_rowBytes));
            m_scale.resize(size_t((block + 1) * W));
            m_min.resize(m_scale.size());
            quantizeBlock(m_f32.data(), block);
            m_qrows += m_group;
        }
    }
}

void KvStream::compact(const std::vector<int64_t>& keep) {
    if (m_bits < 16 && m_gran == KvGranularity::Channel)
        throw UnsupportedError(
            "KV cache: rows of a per-channel quantised stream cannot be evicted");
    const int64_t W = m_width;
    int64_t dst = 0;
    for (int64_t r : keep) {
        if (r < dst || r >= m_rows)
            throw ArgumentError("KV cache: eviction keeps row " + std::to_string(r) + " of " +
                                std::to_string(m_rows) + " out of order");
        if (r != dst) {
            if (m_bits >= 16) {
                std::copy(m_f32.begin() + r * W, m_f32.begin() + (r + 1) * W,
                          m_f32.begin() + dst * W);
            } else {
                std::copy(m_codes.begin() + r * m_rowBytes, m_codes.begin() + (r + 1) * m_rowBytes,
                          m_codes.begin() + dst * m_rowBytes);
                std::copy(m_scale.begin() + r * m_groups, m_scale.begin() + (r + 1) * m_groups,
                          m_scale.begin() + dst * m_groups);
                std::copy(m_min.begin() + r * m_groups, m_min.begin() + (r + 1) * m_groups,
                          m_min.begin() + dst * m_groups);
            }
        }
        ++dst;
    }
    m_rows = dst;
    if (m_bits < 16) m_qrows = dst;
}

void KvStream::truncate(int64_t n) {
    if (n >= m_rows) return;
    n = std::max<int64_t>(n, 0);
    if (m_bits < 16 && m_gran == KvGranularity::Channel && n < m_qrows) {
        // Keep the first rows of the block that is cut as their dequantised values.
        const int64_t b0 = n / m_group * m_group;
        kernels::FloatBuffer tmp;
        const float* rows = read(n, tmp, 1);
        m_f32.resize(size_t(m_group * m_width));
        std::copy(rows + b0 * m_width, rows + n * m_width, m_f32.begin());
        m_qrows = b0;
    }
    m_rows = n;
    if (m_bits < 16 && m_gran == KvGranularity::Token) m_qrows = n;
}

const float* KvStream::read(int64_t n, kernels::FloatBuffer& scratch, int threads) const {
    if (n > m_rows)
        throw ArgumentError("KV cache: reading " + std::to_string(n) + " rows of " +
                            std::to_string(m_rows));
    const int64_t W = m_width;
    if (m_bits >= 16) return m_f32.data();
    if (scratch.size() < size_t(n * W)) scratch.resize(size_t(n * W));
    float* dst = scratch.data();
    const int64_t nq = std::min(n, m_qrows);
    const bool tok = m_gran == KvGranularity::Token;
    ParallelErrors errors; // the per-thread code buffer
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads()) if (nq * W >= 8192)
    {
        std::vector<uint16_t> codes;
        errors.run([&] { codes.resize(static_cast<size_t>(W)); });
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nq; ++r) {
            if (errors.failed()) continue;
            unpackCodes(m_codes.data() + r * m_rowBytes, W, m_bits, codes.data());
            float* o = dst + r * W;
            if (tok) {
                const float* sc = m_scale.data() + r * m_groups;
                const float* mn = m_min.data() + r * m_groups;
                for (int64_t c = 0; c < W; ++c) {
                    const int64_t g = (c + m_offset) / m_group - m_group0;
                    o[c] = mn[g] + float(codes[size_t(c)]) * sc[g];
                }
                if (!m_sScale.empty())
                    for (int64_t c = 0; c < W; ++c)
                        o[c] =
                            o[c] * m_sScale[size_t(c + m_offset)] + m_sShift[size_t(c + m_offset)];
            } else {
                const float* sc = m_scale.data() + (r / m_group) * W;
                const float* mn = m_min.data() + (r / m_group) * W;
                for (int64_t c = 0; c < W; ++c) o[c] = mn[c] + float(codes[size_t(c)]) * sc[c];
            }
        }
    }
    errors.rethrow();
    if (n > nq) std::copy(m_f32.begin(), m_f32.begin() + (n - nq) * W, dst + nq * W);
    return dst;
}

uint64_t KvStream::bytes() const {
    const uint64_t W = uint64_t(m_width);
    if (m_bits >= 16) return uint64_t(m_rows) * W * 4;
    const uint64_t tail = uint64_t(m_rows - m_qrows) * W * 4;
    const uint64_t nScales = m_gran == KvGranularity::Token ? uint64_t(m_qrows) * uint64_t(m_groups)
                                                            : uint64_t(m_qrows / m_group) * W;
    return uint64_t(m_qrows) * uint64_t(m_rowBytes) + nScales * 8 + tail;
}

} // namespace lcw::runtime
