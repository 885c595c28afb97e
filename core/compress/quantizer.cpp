#include "core/compress/quantizer.h"

#include "core/compress/compact_formats.h"

#include "core/stats/quant_grid.h"

#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/parallel.h"
#include "core/io/quants.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lcw::compress {

namespace {

/// Below this many weights the threads cost more than they save.
constexpr int64_t kParallelMin = 1 << 16;

DType ggufType(WeightMethod m) {
    return ggufMethodType(m);
}

/// Smallest f16 >= s (s >= 0, finite), so that the stored scale never clips the range.
uint16_t f16RoundUp(float s, const std::string& name) {
    uint16_t h = f32ToF16(s);
    if (f16ToF32(h) < s) ++h;
    if (!std::isfinite(f16ToF32(h)))
        throw ArgumentError(name + ": a quantisation scale (" + std::to_string(s) +
                            ") does not fit in f16");
    return h;
}

inline float rne(float v) {
    return std::nearbyint(v);
}

struct GroupParams {
    uint16_t scale = 0, zero = 0;
};

/// Scale (and zero) of one group from its range.
GroupParams groupParams(const WeightSettings& s, float mn, float mx, const std::string& name) {
    if (s.clipRatio != 1.0) { // the grid of the shrunk range; values beyond it clamp
        mn *= float(s.clipRatio);
        mx *= float(s.clipRatio);
    }
    const float amax = std::max(std::fabs(mn), std::fabs(mx));
    GroupParams g;
    switch (s.format) {
    case WeightFormat::Int:
        if (s.symmetric) {
            const float qmax = float((1 << (s.bits - 1)) - 1);
            g.scale = f16RoundUp(amax / qmax, name);
        } else {
            mn = std::min(mn, 0.0f);
            mx = std::max(mx, 0.0f);
            const float qmax = float((1 << s.bits) - 1);
            g.scale = f16RoundUp((mx - mn) / qmax, name);
            const float sc = f16ToF32(g.scale);
            const float z = sc > 0 ? std::clamp(rne(-mn / sc), 0.0f, qmax) : 0.0f;
            g.zero = f32ToF16(z); // small integers are exact in f16
        }
        break;
    case WeightFormat::Fp8E4M3:
        g.scale = f16RoundUp(amax / 448.0f, name);
        break;
    case WeightFormat::Nf4:
        g.scale = f16RoundUp(amax, name);
        break;
    }
    return g;
}

inline uint32_t encode(const WeightSettings& s, float x, float sc, float zero) {
    switch (s.format) {
    case WeightFormat::Int:
        if (s.symmetric) {
            const float qmax = float((1 << (s.bits - 1)) - 1);
            const float q = sc > 0 ? std::clamp(rne(x / sc), -qmax, qmax) : 0.0f;
            return uint32_t(int32_t(q) + (1 << (s.bits - 1)));
        } else {
            const float qmax = float((1 << s.bits) - 1);
            const float q = sc > 0 ? std::clamp(rne(x / sc) + zero, 0.0f, qmax) : zero;
            return uint32_t(q);
        }
    case WeightFormat::Fp8E4M3:
        return sc > 0 ? f32ToE4m3(x / sc) : 0u;
    case WeightFormat::Nf4: {
        if (!(sc > 0)) return 7; // the 0.0 level
        const float v = x / sc;
        const float* L = nf4Levels();
        uint32_t best = 0;
        float bd = std::fabs(v - L[0]);
        for (uint32_t i = 1; i < 16; ++i) {
            const float d = std::fabs(v - L[i]);
            if (d < bd) bd = d, best = i;
        }
        return best;
    }
    }
    return 0;
}

inline float decode(const WeightSettings& s, uint32_t u, float sc, float zero) {
    switch (s.format) {
    case WeightFormat::Int:
        return s.symmetric ? sc * float(int32_t(u) - (1 << (s.bits - 1))) : sc * (float(u) - zero);
    case WeightFormat::Fp8E4M3:
        return sc * e4m3ToF32(uint8_t(u));
    case WeightFormat::Nf4:
        return sc * nf4Levels()[u & 15];
    }
    return 0;
}

inline void putBits(uint8_t* row, int64_t j, int bits, uint32_t u) {
    const uint64_t bit = uint64_t(j) * uint64_t(bits);
    for (int b = 0; b < bits; ++b)
        if (u >> b & 1u) row[(bit + b) >> 3] |= uint8_t(1u << ((bit + b) & 7));
}

inline uint32_t getBits(const uint8_t* row, int64_t j, int bits) {
    const uint64_t bit = uint64_t(j) * uint64_t(bits);
    uint32_t u = 0;
    for (int b = 0; b < bits; ++b) u |= uint32_t(row[(bit + b) >> 3] >> ((bit + b) & 7) & 1u) << b;
    return u;
}

int codeBits(const WeightSettings& s) {
    return s.format == WeightFormat::Nf4 ? 4 : s.format == WeightFormat::Fp8E4M3 ? 8 : s.bits;
}

uint64_t rowCodeBytes(int64_t cols, const WeightSettings& s) {
    if (methodIsGguf(s.method)) {
        const DType t = ggufType(s.method);
        return uint64_t(cols / dtypeBlockElems(t)) * uint64_t(dtypeBlockBytes(t));
    }
    return (uint64_t(cols) * uint64_t(codeBits(s)) + 7) / 8;
}

int64_t groupLen(const WeightSettings& s, int64_t cols) {
    return s.granularity == Granularity::Group ? std::min<int64_t>(s.groupSize, cols) : cols;
}

} // namespace

// IQ4_NL / IQ4_XS code book.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

std::vector<double> gridLevels(const WeightSettings& settings, double lo, double hi) {
    const WeightSettings s = settings.stored();
    std::vector<double> out;
    if (!std::isfinite(lo) || !std::isfinite(hi) || hi < lo) return out;
    const double amax = std::max(std::fabs(lo), std::fabs(hi));
    // The signed value of largest magnitude (GGUF's symmetric block schemes scale by it).
    const double signedMax = std::fabs(lo) > std::fabs(hi) ? lo : hi;
    auto steps = [&](double d, int q0, int q1, double offset) {
        if (!(d != 0) || !std::isfinite(d)) return;
        for (int q = q0; q <= q1; ++q) out.push_back(offset + q * d);
    };
    // k-quants fit a minimum that is never above 0 (ggml clamps it).
    const double lo0 = std::min(lo, 0.0);
    switch (s.method) {
    case WeightMethod::Q8_0:
        steps(amax / 127.0, -127, 127, 0.0);
        break;
    case WeightMethod::Q4_0:
        steps(-signedMax / 8.0, -8, 7, 0.0);
        break;
    case WeightMethod::Q5_0:
        steps(-signedMax / 16.0, -16, 15, 0.0);
        break;
    case WeightMethod::Q3_K:
        steps(-signedMax / 4.0, -4, 3, 0.0);
        break;
    case WeightMethod::Q6_K:
        steps(-signedMax / 32.0, -32, 31, 0.0);
        break;
    case WeightMethod::Q4_1:
        steps((hi - lo) / 15.0, 0, 15, lo);
        break;
    case WeightMethod::Q5_1:
        steps((hi - lo) / 31.0, 0, 31, lo);
        break;
    case WeightMethod::Q2_K:
        steps((hi - lo0) / 3.0, 0, 3, lo0);
        break;
    case WeightMethod::Q4_K:
        steps((hi - lo0) / 15.0, 0, 15, lo0);
        break;
    case WeightMethod::Q5_K:
        steps((hi - lo0) / 31.0, 0, 31, lo0);
        break;
    case WeightMethod::IQ4_NL:
    case WeightMethod::IQ4_XS:
        if (signedMax != 0)
            for (const int8_t v : kIq4Levels) out.push_back(-signedMax / 127.0 * double(v));
        break;
    case WeightMethod::F16:
        break; // no grid to draw: every half float
    default: {
        const double r = s.clipRatio; // weight.clip_ratio: the grid of the shrunk range
        switch (s.format) {
        case WeightFormat::Int:
            out = stats::quantGridLevels(s.bits, s.symmetric, lo * r, hi * r);
            break;
        case WeightFormat::Nf4:
            if (amax > 0)
                for (int i = 0; i < 16; ++i) out.push_back(double(nf4Levels()[i]) * amax * r);
            break;
        case WeightFormat::Fp8E4M3:
            if (amax > 0)
                for (int v = 0; v < 256; ++v) {
                    const float x = e4m3ToF32(uint8_t(v));
                    if (std::isfinite(x)) out.push_back(double(x) * amax * r / 448.0);
                }
            break;
        }
    }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

uint64_t packedCodeBytes(int64_t rows, int64_t cols, const WeightSettings& settings) {
    return uint64_t(rows) * rowCodeBytes(cols, settings.stored());
}

uint64_t packedStorageBits(int64_t rows, int64_t cols, const WeightSettings& settings) {
    const WeightSettings s = settings.stored();
    if (methodIsCompact(s.method)) return compactStorageBits(rows, cols, s);
    const uint64_t codeBits = 8 * packedCodeBytes(rows, cols, s);
    if (methodIsGguf(s.method)) return codeBits; // scales live inside the blocks
    const bool asym = s.format == WeightFormat::Int && !s.symmetric;
    uint64_t groups = 1;
    if (s.granularity != Granularity::Tensor) {
        const int64_t gl = groupLen(s, cols);
        groups = uint64_t(rows) * uint64_t((cols + gl - 1) / gl);
    }
    return codeBits + 16 * groups * (asym ? 2 : 1);
}

int64_t PackedTensor::groupsPerRow() const {
    if (methodIsGguf(settings.method)) return cols / dtypeBlockElems(ggufType(settings.method));
    if (settings.granularity == Granularity::Group)
        return (cols + settings.groupSize - 1) / settings.groupSize;
    return 1;
}

uint64_t PackedTensor::storageBits() const {
    return 8 * uint64_t(codes.size()) + 16 * uint64_t(scales.size()) + 16 * uint64_t(zeros.size()) +
           16 * uint64_t(outlierValues.size()) + 32 * uint64_t(outlierCols.size()) +
           32 * uint64_t(colOrder.size()) + 8 * uint64_t(outlierCodes.size()) +
           16 * uint64_t(outlierScales.size()) + 8 * uint64_t(groupCodes.size()) +
           32 * uint64_t(sparseRowPtr.size() + sparseCols.size()) +
           16 * uint64_t(sparseValues.size());
}

void checkColumnOrder(const std::vector<int32_t>& order, int64_t cols, const std::string& name) {
    if (order.empty()) return;
    if (int64_t(order.size()) != cols)
        throw Error(name + ": column order has " + std::to_string(order.size()) + " entries for " +
                    std::to_string(cols) + " columns");
    std::vector<char> seen(size_t(cols), 0);
    for (const int32_t c : order) {
        if (c < 0 || c >= cols || seen[size_t(c)])
            throw Error(name + ": column order is not a permutation of the " +
                        std::to_string(cols) + " columns");
        seen[size_t(c)] = 1;
    }
}

namespace {

void checkFinite(const float* w, int64_t rows, int64_t cols, const std::string& name) {
    int64_t bad = -1;
    // omp: nothrow (comparisons only)
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            if (!std::isfinite(w[r * cols + j])) {
#pragma omp critical
                if (bad < 0 || r * cols + j < bad) bad = r * cols + j;
                break;
            }
    if (bad >= 0)
        throw ArgumentError(name + ": non-finite weight at element " + std::to_string(bad));
}

/// A [rows, cols] tensor of settings `s` with every code zero (no scales yet).
PackedTensor zeroCodes(const WeightSettings& s, int64_t rows, int64_t cols) {
    PackedTensor p;
    p.settings = s;
    p.rows = rows;
    p.cols = cols;
    p.codes.assign(size_t(rowCodeBytes(cols, s) * uint64_t(rows)), 0);
    return p;
}

/// RTN for int / fp8 / nf4 with optional per-group range shrink factors.
PackedTensor rtnPacked(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                       const float* clip, const std::string& name) {
    if (s.format == WeightFormat::Int && (s.bits < 2 || s.bits > 8))
        throw ArgumentError(name + ": int bits must be 2..8");
    const bool par = rows * cols >= kParallelMin;
    const uint64_t rb = rowCodeBytes(cols, s);
    PackedTensor p = zeroCodes(s, rows, cols);
    const bool asym = s.format == WeightFormat::Int && !s.symmetric;
    const int bits = codeBits(s);
    if (s.granularity == Granularity::Tensor) {
        float mn = INFINITY, mx = -INFINITY;
        // omp: nothrow (min/max)
#pragma omp parallel for reduction(min : mn) reduction(max : mx) if (par)
        for (int64_t i = 0; i < rows * cols; ++i) mn = std::min(mn, w[i]), mx = std::max(mx, w[i]);
        const float c = clip ? clip[0] : 1.0f;
        const GroupParams g = groupParams(s, mn * c, mx * c, name);
        p.scales = {g.scale};
        if (asym) p.zeros = {g.zero};
        const float sc = f16ToF32(g.scale), z = f16ToF32(g.zero);
        // omp: nothrow (encoding into allocated codes)
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j)
                putBits(p.codes.data() + r * rb, j, bits, encode(s, w[r * cols + j], sc, z));
        return p;
    }
    const int64_t gl = groupLen(s, cols);
    const int64_t gpr = (cols + gl - 1) / gl;
    p.scales.assign(size_t(rows * gpr), 0);
    if (asym) p.zeros.assign(size_t(rows * gpr), 0);
    ParallelErrors errors; // groupParams throws when a scale does not fit in f16
#pragma omp parallel for schedule(static) if (par)
    for (int64_t r = 0; r < rows; ++r)
        errors.run([&] {
            const float* x = w + r * cols;
            uint8_t* row = p.codes.data() + r * rb;
            for (int64_t gi = 0; gi < gpr; ++gi) {
                const int64_t j0 = gi * gl, j1 = std::min(cols, j0 + gl);
                float mn = x[j0], mx = x[j0];
                for (int64_t j = j0 + 1; j < j1; ++j)
                    mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
                const float c = clip ? clip[r * gpr + gi] : 1.0f;
                const GroupParams g = groupParams(s, mn * c, mx * c, name);
                p.scales[size_t(r * gpr + gi)] = g.scale;
                if (asym) p.zeros[size_t(r * gpr + gi)] = g.zero;
                const float sc = f16ToF32(g.scale), z = f16ToF32(g.zero);
                for (int64_t j = j0; j < j1; ++j) putBits(row, j, bits, encode(s, x[j], sc, z));
            }
        });
    errors.rethrow();
    return p;
}

} // namespace

PackedTensor quantize(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                      const std::string& name, const float* importance) {
    if (rows <= 0 || cols <= 0) throw ArgumentError(name + ": empty tensor");
    if (methodIsCompact(s.method)) { // importance: the methods' sensitivity weights
        checkFinite(w, rows, cols, name);
        return quantizeCompact(w, rows, cols, s, name, importance);
    }
    if (methodNeedsCalibration(s.method))
        throw UnsupportedError(name + ": method '" + std::string(weightMethodName(s.method)) +
                               "' needs calibration data (use compress() with a calibration set)");
    checkFinite(w, rows, cols, name);
    if (methodIsGguf(s.method)) {
        const DType t = ggufType(s.method);
        const int64_t block = dtypeBlockElems(t);
        if (cols % block != 0)
            throw ArgumentError(name + ": " + weightMethodName(s.method) +
                                " needs rows that are a multiple of " + std::to_string(block) +
                                ", this layer has rows of " + std::to_string(cols));
        if (importance)
            for (int64_t j = 0; j < cols; ++j)
                if (!std::isfinite(importance[j]))
                    throw ArgumentError(name + ": non-finite importance at column " +
                                        std::to_string(j));
        const uint64_t rb = rowCodeBytes(cols, s);
        PackedTensor p = zeroCodes(s, rows, cols);
        // Dynamic: k-quant rows cost 10-100x more than q8_0 rows and vary with their content.
        ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 16) if (rows * cols >= kParallelMin)
        for (int64_t r = 0; r < rows; ++r)
            errors.run([&] {
                quantizeRow(t, w + r * cols, reinterpret_cast<std::byte*>(p.codes.data() + r * rb),
                            cols, importance);
            });
        errors.rethrow();
        return p;
    }
    return rtnPacked(w, rows, cols, s, nullptr, name);
}

PackedTensor quantizeClipped(const float* w, int64_t rows, int64_t cols, const WeightSettings& s,
                             const std::vector<float>& clip, const std::string& name) {
    if (rows <= 0 || cols <= 0) throw ArgumentError(name + ": empty tensor");
    if (methodIsGguf(s.method))
        throw ArgumentError(name + ": clipped RTN does not apply to GGUF block schemes");
    checkFinite(w, rows, cols, name);
    const int64_t gpr = gridsPerRow(s, cols);
    const size_t n = gpr == 0 ? 1 : size_t(rows * gpr);
    if (!clip.empty() && clip.size() != n)
        throw ArgumentError(name + ": " + std::to_string(clip.size()) + " clip factors for " +
                            std::to_string(n) + " groups");
    return rtnPacked(w, rows, cols, s, clip.empty() ? nullptr : clip.data(), name);
}

GroupGrid groupGrid(const WeightSettings& s, float mn, float mx, const std::string& name) {
    const GroupParams g = groupParams(s, mn, mx, name);
    return {g.scale, g.zero};
}

uint32_t encodeOnGrid(const WeightSettings& s, float x, const GroupGrid& g) {
    return encode(s, x, f16ToF32(g.scale), f16ToF32(g.zero));
}

float decodeOnGrid(const WeightSettings& s, uint32_t u, const GroupGrid& g) {
    return decode(s, u, f16ToF32(g.scale), f16ToF32(g.zero));
}

int64_t gridsPerRow(const WeightSettings& s, int64_t cols) {
    if (s.granularity == Granularity::Tensor) return 0;
    const int64_t gl = groupLen(s, cols);
    return (cols + gl - 1) / gl;
}

int64_t gridIndex(const WeightSettings& s, int64_t cols, int64_t r, int64_t j) {
    if (s.granularity == Granularity::Tensor) return 0;
    if (s.granularity == Granularity::Channel) return r;
    const int64_t gl = groupLen(s, cols);
    return r * ((cols + gl - 1) / gl) + j / gl;
}

PackedTensor packCodes(const WeightSettings& s, int64_t rows, int64_t cols,
                       const std::vector<uint32_t>& codes, const std::vector<GroupGrid>& grids) {
    const int64_t gpr = gridsPerRow(s, cols);
    const size_t ng = gpr == 0 ? 1 : size_t(rows * gpr);
    if (codes.size() != size_t(rows * cols) || grids.size() != ng)
        throw ArgumentError("packCodes: " + std::to_string(codes.size()) + " codes and " +
                            std::to_string(grids.size()) + " grids for a [" + std::to_string(rows) +
                            ", " + std::to_string(cols) + "] tensor");
    const uint64_t rb = rowCodeBytes(cols, s);
    PackedTensor p = zeroCodes(s, rows, cols);
    const int bits = codeBits(s);
    const uint32_t mask = bits >= 32 ? ~0u : (1u << bits) - 1u;
    // omp: nothrow (bit packing into allocated codes)
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            putBits(p.codes.data() + r * rb, j, bits, codes[size_t(r * cols + j)] & mask);
    const bool asym = s.format == WeightFormat::Int && !s.symmetric;
    p.scales.resize(ng);
    if (asym) p.zeros.resize(ng);
    for (size_t g = 0; g < ng; ++g) {
        p.scales[g] = grids[g].scale;
        if (asym) p.zeros[g] = grids[g].zero;
    }
    return p;
}

namespace {

/// Throws unless the packed sizes fit the shape and settings.
void checkPacked(const PackedTensor& p, const std::string& name) {
    const WeightSettings& s = p.settings;
    const bool compact = methodIsCompact(s.method);
    if (compact)
        checkCompact(p, name);
    else if (!p.groupCodes.empty() || !p.sparseRowPtr.empty() || !p.sparseCols.empty() ||
             !p.sparseValues.empty())
        throw Error(name + ": group codes or a sparse matrix belong to compact methods only");
    const uint64_t rb = rowCodeBytes(p.cols, s);
    if (!compact && p.codes.size() != rb * uint64_t(p.rows))
        throw Error(name + ": packed codes have " + std::to_string(p.codes.size()) +
                    " bytes, expected " + std::to_string(rb * uint64_t(p.rows)));
    if (!methodIsGguf(s.method) && !compact) {
        const bool asym = s.format == WeightFormat::Int && !s.symmetric;
        const bool tensor = s.granularity == Granularity::Tensor;
        const int64_t gl = groupLen(s, p.cols);
        const size_t ngroups = tensor ? 1 : size_t(p.rows * ((p.cols + gl - 1) / gl));
        if (p.scales.size() != ngroups || p.zeros.size() != (asym ? ngroups : 0))
            throw Error(name + ": packed scales/zeros do not match the shape");
    }
    const size_t no = p.outlierCols.size();
    if (!p.outlierCodes.empty() || !p.outlierScales.empty()) {
        if (!p.outlierValues.empty() || p.outlierCodes.size() != no * size_t(p.rows) ||
            p.outlierScales.size() != (no > 0 ? size_t(p.rows) : 0))
            throw Error(name + ": " + std::to_string(p.outlierCodes.size()) +
                        " 8-bit outlier codes and " + std::to_string(p.outlierScales.size()) +
                        " scales for " + std::to_string(no) + " columns x " +
                        std::to_string(p.rows) + " rows");
    } else if (p.outlierValues.size() != no * size_t(p.rows)) {
        throw Error(name + ": " + std::to_string(p.outlierValues.size()) + " outlier values for " +
                    std::to_string(no) + " columns x " + std::to_string(p.rows) + " rows");
    }
    for (size_t k = 0; k < no; ++k) {
        const int32_t c = p.outlierCols[k];
        if (c < 0 || c >= p.cols || (k > 0 && c <= p.outlierCols[k - 1]))
            throw Error(name + ": outlier column indices are not ascending within the row");
    }
    if (!p.colOrder.empty() && methodIsGguf(s.method))
        throw Error(name + ": a GGUF block tensor cannot have a column order");
    checkColumnOrder(p.colOrder, p.cols, name);
}

/// Rows [r0, r0 + n) of a checked packed tensor (outlier columns included) into dst [n, cols].
void dequantizeChecked(const PackedTensor& p, int64_t r0, int64_t n, float* dst) {
    const WeightSettings& s = p.settings;
    const int64_t cols = p.cols;
    const uint64_t rb = rowCodeBytes(cols, s);
    const bool par = n * cols >= kParallelMin;
    if (methodIsCompact(s.method)) {
        dequantizeCompactRows(p, r0, n, dst);
    } else if (methodIsGguf(s.method)) {
        const DType t = ggufType(s.method);
        ParallelErrors errors;
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = r0; r < r0 + n; ++r)
            errors.run([&] {
                dequantizeRow(t, reinterpret_cast<const std::byte*>(p.codes.data() + r * rb),
                              dst + (r - r0) * cols, cols);
            });
        errors.rethrow();
    } else {
        const bool asym = s.format == WeightFormat::Int && !s.symmetric;
        const int bits = codeBits(s);
        const bool tensor = s.granularity == Granularity::Tensor;
        const int64_t gl = groupLen(s, cols);
        const int64_t gpr = tensor ? 1 : (cols + gl - 1) / gl;
        const int32_t* order = p.colOrder.empty() ? nullptr : p.colOrder.data();
        // omp: nothrow (decoding checked codes)
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = r0; r < r0 + n; ++r) {
            const uint8_t* row = p.codes.data() + r * rb;
            float* o = dst + (r - r0) * cols;
            // Stored column k is original column order[k].
            for (int64_t k = 0; k < cols; ++k) {
                const size_t gi = tensor ? 0 : size_t(r * gpr + k / gl);
                const float sc = f16ToF32(p.scales[gi]);
                const float z = asym ? f16ToF32(p.zeros[gi]) : 0.0f;
                o[order ? order[k] : k] = decode(s, getBits(row, k, bits), sc, z);
            }
        }
    }
    const size_t no = p.outlierCols.size();
    const bool eight = !p.outlierCodes.empty();
    for (int64_t r = r0; r < r0 + n; ++r) {
        const float sc = eight ? f16ToF32(p.outlierScales[size_t(r)]) : 0.0f;
        for (size_t k = 0; k < no; ++k)
            dst[(r - r0) * cols + p.outlierCols[k]] =
                eight ? sc * float(int(p.outlierCodes[size_t(r) * no + k]) - 128)
                      : f16ToF32(p.outlierValues[size_t(r) * no + k]);
    }
}

} // namespace

void quantizeOutlierColumns8(PackedTensor& p, const float* w, int64_t rows, int64_t cols,
                             const std::vector<int32_t>& outl, const std::string& name) {
    if (outl.empty()) return;
    for (size_t k = 0; k < outl.size(); ++k)
        if (outl[k] < 0 || outl[k] >= cols || (k > 0 && outl[k] <= outl[k - 1]))
            throw ArgumentError(name + ": outlier columns are not ascending columns of the row");
    const size_t no = outl.size();
    p.outlierCols = outl;
    p.outlierValues.clear();
    p.outlierCodes.assign(no * size_t(rows), 128);
    p.outlierScales.assign(size_t(rows), 0);
    for (int64_t r = 0; r < rows; ++r) {
        float amax = 0.0f;
        for (int32_t c : outl) {
            const float v = w[r * cols + c];
            if (!std::isfinite(v))
                throw ArgumentError(name + ": non-finite weight in outlier column " +
                                    std::to_string(c));
            amax = std::max(amax, std::fabs(v));
        }
        const uint16_t h = f16RoundUp(amax / 127.0f, name);
        p.outlierScales[size_t(r)] = h;
        const float sc = f16ToF32(h);
        for (size_t k = 0; k < no; ++k) {
            const float q =
                sc > 0 ? std::clamp(rne(w[r * cols + outl[k]] / sc), -127.0f, 127.0f) : 0.0f;
            p.outlierCodes[size_t(r) * no + k] = uint8_t(int(q) + 128);
        }
    }
}

uint64_t outlierColumnBits(int64_t rows, int64_t n, int bits) {
    if (n <= 0) return 0;
    if (bits >= 16) return 16 * uint64_t(rows) * uint64_t(n) + 32 * uint64_t(n);
    return 8 * uint64_t(rows) * uint64_t(n) + 16 * uint64_t(rows) + 32 * uint64_t(n);
}

std::vector<float> dequantize(const PackedTensor& p, const std::string& name) {
    checkPacked(p, name);
    std::vector<float> out(size_t(p.rows * p.cols));
    dequantizeChecked(p, 0, p.rows, out.data());
    return out;
}

void dequantizeRows(const PackedTensor& p, int64_t r0, int64_t n, float* dst,
                    const std::string& name) {
    checkPacked(p, name);
    if (r0 < 0 || n < 0 || r0 + n > p.rows)
        throw ArgumentError(name + ": rows [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
                            ") are outside the tensor's " + std::to_string(p.rows));
    dequantizeChecked(p, r0, n, dst);
}

ErrorStats errorStats(const float* x, const float* xq, int64_t n) {
    double se = 0, sx = 0, mx = 0;
    // omp: nothrow (sums)
#pragma omp parallel for reduction(+ : se, sx) reduction(max : mx) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
        const double d = double(x[i]) - double(xq[i]);
        se += d * d;
        sx += double(x[i]) * double(x[i]);
        mx = std::max(mx, std::fabs(d));
    }
    ErrorStats e;
    e.mse = n ? se / double(n) : 0;
    e.sqnrDb = se > 0 ? 10.0 * std::log10(sx / se) : INFINITY;
    e.relError = sx > 0 ? std::sqrt(se / sx) : (se > 0 ? INFINITY : 0.0);
    e.maxAbs = mx;
    return e;
}

} // namespace lcw::compress
