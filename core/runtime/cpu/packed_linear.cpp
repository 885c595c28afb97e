// Packed linear weights (packed_linear.h): the runtime layout (packed_layout.h), activation
// preparation, the portable kernels (the reference every instruction set is tested against) and
// the dispatch to the AVX2 / AVX-512 kernels of packed_linear_x86.cpp.
#include "core/runtime/cpu/packed_linear.h"

#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/lowbit.h"
#include "core/common/parallel.h"
#include "core/runtime/cpu/packed_layout.h"
#include "core/runtime/cpu/simd.h"
#include "core/runtime/quant_runtime.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

namespace lcw::kernels {

using namespace pk;

namespace {

std::atomic<bool> g_allowVnni{true}, g_allowVbmi{true};

using Kind = PackedSource::Kind;
using Gran = PackedSource::Granularity;

constexpr size_t kAlign = 64;
inline size_t alignUp(size_t v) {
    return (v + kAlign - 1) & ~(kAlign - 1);
}

/// Code j of a row of `rowBytes` bytes, LSB-first (bits <= 8: at most two bytes).
inline uint32_t getBits(const uint8_t* row, size_t rowBytes, int64_t j, int bits) {
    const uint64_t bit = uint64_t(j) * uint64_t(bits);
    const size_t byte = size_t(bit >> 3);
    uint32_t v = row[byte];
    if (byte + 1 < rowBytes) v |= uint32_t(row[byte + 1]) << 8;
    return (v >> (bit & 7)) & ((1u << bits) - 1);
}

/// Float value of one code (exactly as compress::dequantize computes it).
inline float decodeValue(const Layout& L, uint32_t u, float s, float z) {
    switch (L.kind) {
    case Kind::Int:
        return L.sym ? s * float(int32_t(u) - (1 << (L.bits - 1))) : s * (float(u) - z);
    case Kind::Nf4:
        return s * nf4Levels()[u & 15];
    case Kind::Fp8:
        return s * e4m3ToF32(uint8_t(u));
    }
    return 0.0f;
}

/// The code that reads exactly 0 (none for asymmetric int).
inline int zeroCode(const Layout& L) {
    switch (L.kind) {
    case Kind::Int:
        return L.sym ? 1 << (L.bits - 1) : -1;
    case Kind::Nf4:
        return 7;
    case Kind::Fp8:
        return 0;
    }
    return -1;
}

/// Packs n positions' codes (0 .. 2^bits-1) into the unit planes (packed_layout.h).
void packUnit(const uint8_t* codes, int n, int bits, uint8_t* out) {
    if (bits == 8) {
        std::memcpy(out, codes, size_t(n));
        return;
    }
    int shift = 0;
    if (bits >= 4) {
        for (int j = 0; j < n / 2; ++j)
            out[j] = uint8_t((codes[j] & 15) | (codes[j + n / 2] & 15) << 4);
        out += n / 2;
        shift = 4;
    }
    if (bits == 2 || bits == 3 || bits == 6 || bits == 7) {
        for (int j = 0; j < n / 4; ++j) {
            uint8_t b = 0;
            for (int i = 0; i < 4; ++i)
                b |= uint8_t(((codes[j + i * n / 4] >> shift) & 3) << 2 * i);
            out[j] = b;
        }
        out += n / 4;
        shift += 2;
    }
    if (bits & 1) {
        for (int j = 0; j < n / 8; ++j) out[j] = 0;
        for (int j = 0; j < n; ++j) out[j >> 3] |= uint8_t(((codes[j] >> shift) & 1) << (j & 7));
    }
}

const KernelSet& kernelsFor(Isa isa);

// ---------------------------------------------------------------------------------------------
// Portable kernels.

/// Codes (dense: per padded column; 2:4: per slot plus the dense column of each slot) of unit u
/// of group g for row i of panel p.
struct UnitCodes {
    uint8_t code[64];
    uint8_t idx[64];
    int n = 0;
};

inline void readUnit(const WeightRef& w, int64_t p, int64_t g, int64_t u, int i, UnitCodes& c) {
    const Layout& L = *w.L;
    c.n = int(u < L.fullUnits ? L.unitPos : L.unitPos / 2);
    const uint8_t* src = w.codes + L.unitOffset(p, g, u, i);
    unpackUnit(src, c.n, L.bits, c.code);
    if (L.sparse) unpackIndices(src, c.n, L.bits, c.idx);
}

/// Dense column (within the unit) of slot j.
inline int slotCol(const UnitCodes& c, int j) {
    return 4 * (j / 2) + c.idx[j];
}

void intGeneric(const WeightRef& w, const PrepView& P, int64_t p0, int64_t np, float* y,
                int64_t ldy) {
    const Layout& L = *w.L;
    const int64_t bu = L.blockUnits(P.mode), bpg = L.blocksPerGroup(P.mode);
    const int zsh = L.bits - 1;
    UnitCodes uc;
    for (int64_t p = p0; p < p0 + np; ++p)
        for (int i = 0; i < 4; ++i)
            for (int64_t t = 0; t < P.nTok; ++t) {
                const int8_t* xq = P.xq + t * L.Cp;
                float acc = 0.0f;
                for (int64_t g = 0; g < L.gpr; ++g) {
                    const size_t si = size_t((p * L.gpr + g) * 4 + i);
                    const float s = f16ToF32(w.scales[si]);
                    const float z = L.sym ? 0.0f : f16ToF32(w.zeros[si]);
                    for (int64_t b = 0; b < bpg; ++b) {
                        int32_t S = 0;
                        for (int64_t u = b * bu; u < std::min((b + 1) * bu, L.unitsPerGroup());
                             ++u) {
                            readUnit(w, p, g, u, i, uc);
                            const int64_t c0 = g * L.Gp + L.unitCol(u);
                            if (!L.sparse) {
                                for (int j = 0; j < uc.n; ++j)
                                    S += int32_t(uc.code[j]) * xq[c0 + j];
                            } else {
                                // xq holds xq + 128 (uint8): Σ (xu - 128) · (u - 2^(b-1)).
                                const uint8_t* xu = reinterpret_cast<const uint8_t*>(xq) + c0;
                                for (int j = 0; j < uc.n; ++j)
                                    S += (int32_t(xu[slotCol(uc, j)]) - 128) *
                                         (int32_t(uc.code[j]) - (1 << zsh));
                            }
                        }
                        const size_t bi = size_t(t * P.nBlocks + g * bpg + b);
                        float v;
                        if (L.sparse)
                            v = float(S);
                        else if (L.sym)
                            v = float(S - P.X[bi] * (1 << zsh));
                        else
                            v = std::fma(-z, float(P.X[bi]), float(S));
                        acc = std::fma(s * P.d[bi], v, acc);
                    }
                }
                y[t * ldy + 4 * (p - p0) + i] = acc;
            }
}

void floatGeneric(const WeightRef& w, const PrepView& P, int64_t p0, int64_t np, float* y,
                  int64_t ldy) {
    const Layout& L = *w.L;
    UnitCodes uc;
    thread_local std::vector<float> wrow;
    wrow.resize(size_t(L.Cp));
    for (int64_t p = p0; p < p0 + np; ++p)
        for (int i = 0; i < 4; ++i) {
            // Dequantise the row over padded columns (2:4: only the kept slots, as pairs).
            std::fill(wrow.begin(), wrow.end(), 0.0f);
            const int64_t r = 4 * p + i;
            for (int64_t g = 0; g < L.gpr; ++g) {
                const size_t si = size_t((p * L.gpr + g) * 4 + i);
                const float s = f16ToF32(w.scales[si]);
                const float z = L.kind == Kind::Int && !L.sym ? f16ToF32(w.zeros[si]) : 0.0f;
                for (int64_t u = 0; u < L.unitsPerGroup(); ++u) {
                    readUnit(w, p, g, u, i, uc);
                    const int64_t c0 = g * L.Gp + L.unitCol(u);
                    for (int j = 0; j < uc.n; ++j) {
                        const float v = decodeValue(L, uc.code[j], s, z);
                        if (!L.sparse) {
                            const int64_t c = c0 + j;
                            const bool keep = !L.maskBits || r >= L.rows ||
                                              (w.mask[r * L.maskWords + (c >> 6)] >> (c & 63) & 1u);
                            wrow[size_t(c)] = keep ? v : 0.0f;
                        } else {
                            wrow[size_t(c0 + slotCol(uc, j))] += v;
                        }
                    }
                }
            }
            for (int64_t t = 0; t < P.nTok; ++t) {
                const float* x = P.xf + t * L.Cp;
                float a[8] = {};
                for (int64_t c = 0; c < L.Cp; c += 8)
                    for (int l = 0; l < 8; ++l)
                        a[l] = std::fma(x[c + l], wrow[size_t(c + l)], a[l]);
                y[t * ldy + 4 * (p - p0) + i] =
                    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
            }
        }
}

float absMaxGeneric(const float* x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) return x[i];
        m = std::max(m, std::fabs(x[i]));
    }
    return m;
}

int32_t quantizeGeneric(const float* x, int64_t n, float f, bool divide, float qmax, int8_t* q) {
    int32_t sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        const float v = std::clamp(std::nearbyint(divide ? x[i] / f : x[i] * f), -qmax, qmax);
        q[i] = int8_t(v);
        sum += q[i];
    }
    return sum;
}

const KernelSet kGeneric{intGeneric,   intGeneric,    floatGeneric,
                         floatGeneric, absMaxGeneric, quantizeGeneric};

// ---------------------------------------------------------------------------------------------

class PackedImpl final : public PackedLinear {
public:
    explicit PackedImpl(const PackedSource& s);
    int64_t rows() const override { return m_L.rows; }
    int64_t cols() const override { return m_L.cols; }
    size_t bytes() const override {
        return m_codes.size() + 2 * (m_scales.size() + m_zeros.size() + m_ov.size()) +
               4 * m_ocols.size() + 8 * m_mask.size();
    }
    std::string describe() const override { return m_describe; }
    void dequantizeRows(int64_t r0, int64_t n, float* dst) const override;
    GpuPacked gpuForm(int64_t r0, int64_t n) const override;
    bool sharesPreparation(const PackedLinear& other) const override;
    size_t preparedBytes(int64_t nTok, const ActQuantSpec* act, bool exact) const override;
    void prepare(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act, bool exact,
                 std::byte* prepared) const override;
    void gemm(int64_t r0, int64_t nRows, const std::byte* prepared, int64_t nTok,
              const ActQuantSpec* act, bool exact, float* y, int64_t ldy) const override;

private:
    Mode modeFor(const ActQuantSpec* act, bool exact) const;
    /// Activation-outlier channels that go into xa (in range, not weight-outlier columns).
    std::vector<int32_t> actOutliers(const ActQuantSpec* act) const;
    PrepHeader header(int64_t nTok, const ActQuantSpec* act, bool exact) const;
    PrepView view(const std::byte* prepared) const;
    struct IntPrep;
    /// Packs row r of the source into the panel layout (codes, scales, zero points, mask).
    void packRow(const PackedSource& s, int64_t r);
    void prepareFloat(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act,
                      const PrepHeader& h, std::byte* base) const;
    void prepareInt(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act,
                    const PrepHeader& h, std::byte* base) const;
    void prepareIntToken(const IntPrep& ip, const float* xr, int64_t t) const;
    void quantizeTokenVector(const IntPrep& ip, const float* xr, int8_t* q, float* d,
                             int32_t* X) const;
    void quantizeTokenIntAct(const IntPrep& ip, const float* xr, bool finite, int8_t* q, float* d,
                             int64_t t) const;
    void quantizeTokenIntW(const IntPrep& ip, const float* xr, bool finite, int8_t* q, float* d,
                           int64_t t) const;
    WeightRef ref() const {
        return {&m_L, m_codes.data(), m_scales.data(), m_zeros.empty() ? nullptr : m_zeros.data(),
                m_mask.empty() ? nullptr : m_mask.data()};
    }
    float valueAt(int64_t r, int64_t c) const;

    Layout m_L;
    std::string m_name, m_describe;
    std::vector<uint8_t, AlignedAllocator<uint8_t>> m_codes;
    std::vector<uint16_t> m_scales, m_zeros, m_ov;
    std::vector<int32_t> m_ocols;
    std::vector<int64_t> m_ocolPadded;
    std::vector<uint64_t> m_mask;
};

/// Kind, bits, shape and groups of a packed source, checked against its arrays.
Layout sourceLayout(const PackedSource& s) {
    auto fail = [&](const std::string& what) {
        throw ArgumentError("packed weight '" + s.name + "': " + what);
    };
    Layout L;
    L.kind = s.kind;
    L.bits = s.kind == Kind::Int ? s.bits : s.kind == Kind::Nf4 ? 4 : 8;
    L.sym = s.kind != Kind::Int || s.symmetric;
    L.rows = s.rows, L.cols = s.cols;
    if (s.rows <= 0 || s.cols <= 0)
        fail("bad shape " + std::to_string(s.rows) + "x" + std::to_string(s.cols));
    if (L.bits < 2 || L.bits > 8) fail(std::to_string(L.bits) + " bits (int: 2..8)");
    if (s.granularity == Gran::Group && s.group <= 0) fail("group size " + std::to_string(s.group));
    if (s.cols > (int64_t(1) << 30) || s.rows > (int64_t(1) << 40)) fail("too large");
    const size_t rowBytes = size_t((s.cols * L.bits + 7) / 8);
    if (!s.codes || s.codeBytes != rowBytes * size_t(s.rows))
        fail(std::to_string(s.codeBytes) + " code bytes for " + std::to_string(s.rows) + "x" +
             std::to_string(s.cols) + " at " + std::to_string(L.bits) + " bits");
    L.glen = s.granularity == Gran::Group ? std::min(s.group, s.cols) : s.cols;
    L.gpr = (s.cols + L.glen - 1) / L.glen;
    const size_t ng = s.granularity == Gran::Tensor    ? 1
                      : s.granularity == Gran::Channel ? size_t(s.rows)
                                                       : size_t(s.rows * L.gpr);
    if (!s.scales || s.nScales != ng) fail("scale count does not fit");
    if (!L.sym && (!s.zeros || s.nZeros != ng)) fail("zero-point count does not fit");
    if (s.nOutlierCols > 0) {
        if (!s.outlierCols || !s.outlierValues) fail("outlier arrays missing");
        for (size_t k = 0; k < s.nOutlierCols; ++k) {
            const int32_t c = s.outlierCols[k];
            if (c < 0 || c >= s.cols || (k > 0 && c <= s.outlierCols[k - 1]))
                fail("outlier column indices are not ascending within the row");
        }
    }
    L.nOut = int64_t(s.nOutlierCols);
    L.panels = (s.rows + 3) / 4;
    return L;
}

/// 2:4: every aligned group of 4 columns keeps at most 2, groups of a multiple of 64 columns
/// (or one group per row); asymmetric int needs padding columns for groups keeping fewer.
bool fitsTwoOfFour(const PackedSource& s, const Layout& L) {
    if (!s.mask || !(s.granularity != Gran::Group || L.gpr == 1 || L.glen % 64 == 0)) return false;
    for (int64_t r = 0; r < s.rows; ++r) {
        const uint8_t* m = s.mask + r * s.cols;
        for (int64_t c = 0; c < s.cols; c += 4) {
            const int64_t e = std::min(c + 4, s.cols);
            int kept = 0;
            for (int64_t j = c; j < e; ++j) kept += m[j] != 0;
            // Asymmetric int: columns past the row end (padding, activation 0) fill slots.
            if (kept > 2 || (!L.sym && kept + (4 - (e - c)) < 2)) return false;
        }
    }
    return true;
}

/// Padded group length, units and byte sizes of the runtime layout (dense or 2:4).
void placeUnits(Layout& L, const PackedSource& s, bool sparse) {
    L.sparse = sparse;
    L.maskBits = s.mask && !sparse && !L.sym;
    const int64_t padTo = sparse ? 64 : 32;
    L.Gp = (L.glen + padTo - 1) / padTo * padTo;
    L.Cp = L.gpr * L.Gp;
    L.unitCols = sparse ? 128 : 64;
    L.unitPos = 64;
    L.fullUnits = L.Gp / L.unitCols;
    L.tail = L.Gp % L.unitCols != 0;
    L.unitBytes = planeBytes(64, L.bits) + (sparse ? 16 : 0);
    L.groupBytes = 4 * (size_t(L.fullUnits) * L.unitBytes + (L.tail ? L.unitBytes / 2 : 0));
    L.panelBytes = size_t(L.gpr) * L.groupBytes;
    L.maskWords = L.maskBits ? (L.Cp + 63) / 64 : 0;
    if (L.kind == Kind::Fp8)
        for (size_t i = 0; i < s.codeBytes && !L.fp8Nan; ++i)
            L.fp8Nan = (s.codes[i] & 0x7F) == 0x7F;
}

/// "int4 g128 sym +2:4" and the like.
std::string describeLayout(const Layout& L, const PackedSource& s) {
    std::string d = L.kind == Kind::Int   ? "int" + std::to_string(L.bits)
                    : L.kind == Kind::Nf4 ? "nf4"
                                          : "fp8";
    d += s.granularity == Gran::Tensor    ? " tensor"
         : s.granularity == Gran::Channel ? " channel"
                                          : " g" + std::to_string(s.group);
    if (L.kind == Kind::Int) d += L.sym ? " sym" : " asym";
    if (L.nOut) d += " +" + std::to_string(L.nOut) + " outlier cols";
    if (L.sparse)
        d += " +2:4";
    else if (s.mask)
        d += " +mask";
    return d;
}

/// One 2:4 unit: for each 4-group of columns the two kept codes and their positions (a missing
/// slot first, pointing at a free column with the zero code, so the kept one is written last).
void packSparseUnit(const uint8_t* d, int64_t uc, int n, int64_t len, const uint8_t* m, int64_t c0,
                    const Layout& L, int zc, uint8_t* dst) {
    uint8_t codes[64], idx[64];
    for (int q = 0; q < n / 2; ++q) {
        // Kept columns of this 4-group (columns past the group's end count as pruned).
        int kept[4], nk = 0, free[4], nf = 0;
        for (int k = 0; k < 4; ++k) {
            const int64_t j = uc + 4 * q + k;
            const bool real = j < len;
            if (real && (!m || m[c0 + j]))
                kept[nk++] = k;
            else if (!real || L.sym)
                free[nf++] = k; // a slot may point here with the zero code
        }
        for (int sl = 0; sl < 2; ++sl) {
            const int miss = 2 - nk;
            if (sl < miss) {
                idx[2 * q + sl] = uint8_t(free[sl]);
                codes[2 * q + sl] = uint8_t(zc >= 0 ? zc : 0);
            } else {
                const int k = kept[sl - miss];
                idx[2 * q + sl] = uint8_t(k);
                codes[2 * q + sl] = d[uc + 4 * q + k];
            }
        }
    }
    packUnit(codes, n, L.bits, dst);
    packUnit(idx, n, 2, dst + planeBytes(n, L.bits));
}

PackedImpl::PackedImpl(const PackedSource& s) : m_L(sourceLayout(s)), m_name(s.name) {
    Layout& L = m_L;
    placeUnits(L, s, fitsTwoOfFour(s, L));
    m_codes.assign(size_t(L.panels) * L.panelBytes, 0);
    m_scales.assign(size_t(L.panels * L.gpr * 4), 0);
    if (!L.sym) m_zeros.assign(m_scales.size(), 0);
    if (L.maskBits) m_mask.assign(size_t(L.rows * L.maskWords), 0);
    m_ocols.assign(s.outlierCols, s.outlierCols + s.nOutlierCols);
    for (int32_t c : m_ocols) m_ocolPadded.push_back(L.padded(c));
    m_ov.assign(s.outlierValues, s.outlierValues + s.nOutlierCols * size_t(s.rows));
    if (s.mask)
        for (int64_t r = 0; r < s.rows; ++r)
            for (size_t k = 0; k < m_ocols.size(); ++k)
                if (!s.mask[r * s.cols + m_ocols[k]]) m_ov[size_t(r) * m_ocols.size() + k] = 0;
    const bool par = s.rows * s.cols >= (int64_t(1) << 18);
    ParallelErrors errors; // wide groups allocate
#pragma omp parallel for schedule(static) if (par)
    for (int64_t r = 0; r < s.rows; ++r) errors.run([&] { packRow(s, r); });
    errors.rethrow();
    m_describe = describeLayout(L, s);
}

void PackedImpl::packRow(const PackedSource& s, int64_t r) {
    const Layout& L = m_L;
    const int zc = zeroCode(L);
    const size_t rowBytes = size_t((s.cols * L.bits + 7) / 8);
    const int64_t p = r / 4;
    const int i = int(r % 4);
    const uint8_t* src = s.codes + size_t(r) * rowBytes;
    const uint8_t* m = s.mask ? s.mask + r * s.cols : nullptr;
    for (int64_t g = 0; g < L.gpr; ++g) {
        const size_t gi = s.granularity == Gran::Tensor    ? 0
                          : s.granularity == Gran::Channel ? size_t(r)
                                                           : size_t(r * L.gpr + g);
        const size_t di = size_t((p * L.gpr + g) * 4 + i);
        m_scales[di] = s.scales[gi];
        if (!L.sym) m_zeros[di] = s.zeros[gi];
        const int64_t c0 = g * L.glen, len = std::min(L.glen, s.cols - c0);
        // Codes of the group over its padded columns (pruned: the zero code).
        uint8_t dense[32768 + 64];
        std::vector<uint8_t> big;
        uint8_t* d = dense;
        if (L.Gp > 32768) {
            big.resize(size_t(L.Gp));
            d = big.data();
        }
        std::memset(d, 0, size_t(L.Gp));
        for (int64_t j = 0; j < len; ++j) {
            const bool keep = !m || m[c0 + j];
            d[j] = uint8_t(getBits(src, rowBytes, c0 + j, L.bits));
            if (!keep && zc >= 0) d[j] = uint8_t(zc);
            if (L.maskBits && keep) {
                const int64_t pc = g * L.Gp + j;
                m_mask[size_t(r * L.maskWords + (pc >> 6))] |= uint64_t(1) << (pc & 63);
            }
        }
        for (int64_t u = 0; u < L.unitsPerGroup(); ++u) {
            uint8_t* dst = m_codes.data() + L.unitOffset(p, g, u, i);
            const int n = int(u < L.fullUnits ? L.unitPos : L.unitPos / 2);
            const int64_t uc = L.unitCol(u);
            if (L.sparse)
                packSparseUnit(d, uc, n, len, m, c0, L, zc, dst);
            else
                packUnit(d + uc, n, L.bits, dst);
        }
    }
}

float PackedImpl::valueAt(int64_t r, int64_t c) const {
    // One weight, exactly as dequantizeRows() gives it (activation-outlier channels).
    const Layout& L = m_L;
    for (size_t k = 0; k < m_ocols.size(); ++k)
        if (m_ocols[k] == c) return f16ToF32(m_ov[size_t(r) * m_ocols.size() + k]);
    const int64_t p = r / 4, g = c / L.glen, pc = c % L.glen;
    const int i = int(r % 4);
    const size_t si = size_t((p * L.gpr + g) * 4 + i);
    const float s = f16ToF32(m_scales[si]);
    const float z = L.sym ? 0.0f : f16ToF32(m_zeros[si]);
    const int64_t u = pc / L.unitCols;
    UnitCodes uc;
    readUnit(ref(), p, g, u, i, uc);
    const int64_t within = pc - L.unitCol(u);
    if (!L.sparse) {
        if (L.maskBits) {
            const int64_t q = g * L.Gp + pc;
            if (!(m_mask[size_t(r * L.maskWords + (q >> 6))] >> (q & 63) & 1u)) return 0.0f;
        }
        return decodeValue(L, uc.code[within], s, z);
    }
    float v = 0.0f;
    const int zc = zeroCode(L);
    for (int j = 0; j < uc.n; ++j)
        if (slotCol(uc, j) == within && int(uc.code[j]) != zc) v = decodeValue(L, uc.code[j], s, z);
    return v;
}

void PackedImpl::dequantizeRows(int64_t r0, int64_t n, float* dst) const {
    const Layout& L = m_L;
    if (r0 < 0 || n < 0 || r0 + n > L.rows)
        throw ArgumentError("packed weight '" + m_name + "': rows out of range");
    const int zc = zeroCode(L);
    UnitCodes uc;
    for (int64_t r = r0; r < r0 + n; ++r) {
        float* o = dst + (r - r0) * L.cols;
        std::fill(o, o + L.cols, 0.0f);
        const int64_t p = r / 4;
        const int i = int(r % 4);
        for (int64_t g = 0; g < L.gpr; ++g) {
            const size_t si = size_t((p * L.gpr + g) * 4 + i);
            const float s = f16ToF32(m_scales[si]);
            const float z = L.sym ? 0.0f : f16ToF32(m_zeros[si]);
            const int64_t c0 = g * L.glen, len = std::min(L.glen, L.cols - c0);
            for (int64_t u = 0; u < L.unitsPerGroup(); ++u) {
                readUnit(ref(), p, g, u, i, uc);
                const int64_t uc0 = L.unitCol(u);
                for (int j = 0; j < uc.n; ++j) {
                    if (!L.sparse) {
                        const int64_t jj = uc0 + j;
                        if (jj >= len) break;
                        if (L.maskBits) {
                            const int64_t q = g * L.Gp + jj;
                            if (!(m_mask[size_t(r * L.maskWords + (q >> 6))] >> (q & 63) & 1u))
                                continue;
                        }
                        o[c0 + jj] = decodeValue(L, uc.code[j], s, z);
                    } else {
                        const int64_t jj = uc0 + slotCol(uc, j);
                        if (jj >= len || int(uc.code[j]) == zc) continue;
                        o[c0 + jj] = decodeValue(L, uc.code[j], s, z);
                    }
                }
            }
        }
        for (size_t k = 0; k < m_ocols.size(); ++k)
            o[m_ocols[k]] = f16ToF32(m_ov[size_t(r) * m_ocols.size() + k]);
    }
}

GpuPacked PackedImpl::gpuForm(int64_t r0, int64_t n) const {
    // Walks the units exactly as dequantizeRows() does, writing codes instead of values.
    const Layout& L = m_L;
    if (r0 < 0 || n < 0 || r0 + n > L.rows)
        throw ArgumentError("packed weight '" + m_name + "': rows out of range");
    GpuPacked g;
    g.kind = L.kind, g.bits = L.bits, g.symmetric = L.sym;
    g.rows = n, g.cols = L.cols;
    g.groupCols = L.glen, g.groupsPerRow = L.gpr;
    // 2:4: the slots as they are (groups start on a multiple of 64 columns, so slot j of a
    // unit is slot (first column of the unit) / 2 + j of the row).
    const int64_t nSlots = 2 * ((L.cols + 3) / 4);
    g.twoFour = L.sparse;
    g.rowWords = ((L.sparse ? nSlots : L.cols) * L.bits + 31) / 32;
    g.codes.assign(size_t(n * g.rowWords), 0);
    if (L.sparse) {
        g.idxWords = (2 * nSlots + 31) / 32;
        g.indices.assign(size_t(n * g.idxWords), 0);
    }
    g.scales.resize(size_t(n * L.gpr));
    if (!L.sym) g.zeros.resize(size_t(n * L.gpr));
    // Unstructured masks of formats with a zero code need no mask bits.
    if (L.maskBits) {
        g.maskWords = (L.cols + 31) / 32;
        g.mask.assign(size_t(n * g.maskWords), 0);
    }
    g.outlierCols = m_ocols;
    g.outlierValues.assign(m_ov.begin() + r0 * L.nOut, m_ov.begin() + (r0 + n) * L.nOut);
    UnitCodes uc;
    for (int64_t r = r0; r < r0 + n; ++r) {
        uint32_t* words = g.codes.data() + (r - r0) * g.rowWords;
        uint32_t* mask = g.mask.empty() ? nullptr : g.mask.data() + (r - r0) * g.maskWords;
        auto put = [&](int64_t k, uint32_t code) {
            const uint64_t bit = uint64_t(k) * uint64_t(L.bits);
            const size_t w = size_t(bit >> 5);
            const unsigned sh = unsigned(bit & 31);
            words[w] |= code << sh;
            if (sh + unsigned(L.bits) > 32) words[w + 1] |= code >> (32 - sh);
        };
        auto keep = [&](int64_t k) { mask[k >> 5] |= 1u << (k & 31); };
        const int64_t p = r / 4;
        const int i = int(r % 4);
        for (int64_t gi = 0; gi < L.gpr; ++gi) {
            const size_t si = size_t((p * L.gpr + gi) * 4 + i);
            g.scales[size_t((r - r0) * L.gpr + gi)] = m_scales[si];
            if (!L.sym) g.zeros[size_t((r - r0) * L.gpr + gi)] = m_zeros[si];
            const int64_t c0 = gi * L.glen, len = std::min(L.glen, L.cols - c0);
            for (int64_t u = 0; u < L.unitsPerGroup(); ++u) {
                readUnit(ref(), p, gi, u, i, uc);
                const int64_t uc0 = L.unitCol(u);
                for (int j = 0; j < uc.n; ++j) {
                    if (!L.sparse) {
                        const int64_t jj = uc0 + j;
                        if (jj >= len) break;
                        put(c0 + jj, uc.code[j]);
                        if (L.maskBits) {
                            const int64_t q = gi * L.Gp + jj;
                            if (m_mask[size_t(r * L.maskWords + (q >> 6))] >> (q & 63) & 1u)
                                keep(c0 + jj);
                        }
                    } else {
                        const int64_t slot = (c0 + uc0) / 2 + j;
                        if (uc0 + 4 * (j / 2) >= len || slot >= nSlots) break;
                        put(slot, uc.code[j]);
                        uint32_t* idx = g.indices.data() + (r - r0) * g.idxWords;
                        idx[slot >> 4] |= uint32_t(uc.idx[j]) << (2 * (slot & 15));
                    }
                }
            }
        }
    }
    return g;
}

Mode PackedImpl::modeFor(const ActQuantSpec* act, bool exact) const {
    const bool intOk = m_L.kind == Kind::Int && !m_L.maskBits && (!m_L.sparse || m_L.sym);
    if (act && act->active()) // the integer path has one scale per token: no Atom groups
        return intOk && act->bits >= 2 && act->bits <= 8 && act->groupSize <= 0 &&
                       (act->outlierBits >= 16 || act->outlierChannels.empty())
                   ? Mode::IntAct
                   : Mode::Float;
    return intOk && !exact ? Mode::IntW : Mode::Float;
}

bool PackedImpl::sharesPreparation(const PackedLinear& other) const {
    const auto* o = dynamic_cast<const PackedImpl*>(&other);
    if (!o) return false;
    const Layout &a = m_L, &b = o->m_L;
    // Same padded columns, blocks and outlier columns, and the same integer capability.
    const auto intOk = [](const Layout& l) {
        return l.kind == Kind::Int && !l.maskBits && (!l.sparse || l.sym);
    };
    return a.cols == b.cols && a.glen == b.glen && a.Gp == b.Gp && a.sparse == b.sparse &&
           a.unitCols == b.unitCols && intOk(a) == intOk(b) && m_ocols == o->m_ocols;
}

std::vector<int32_t> PackedImpl::actOutliers(const ActQuantSpec* act) const {
    std::vector<int32_t> v;
    if (!act) return v;
    for (int32_t c : act->outlierChannels)
        if (c >= 0 && c < m_L.cols && !std::binary_search(m_ocols.begin(), m_ocols.end(), c))
            v.push_back(c);
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

PrepHeader PackedImpl::header(int64_t nTok, const ActQuantSpec* act, bool exact) const {
    PrepHeader h;
    h.mode = modeFor(act, exact);
    h.nTok = nTok;
    const Layout& L = m_L;
    size_t off = alignUp(sizeof(PrepHeader));
    if (h.mode == Mode::Float) {
        h.offXf = off;
        off = alignUp(off + size_t(nTok * L.Cp) * sizeof(float));
    } else {
        h.nBlocks = L.gpr * L.blocksPerGroup(h.mode);
        h.offXq = off;
        off = alignUp(off + size_t(nTok * L.Cp));
        h.offD = off;
        off = alignUp(off + size_t(nTok * h.nBlocks) * sizeof(float));
        h.offX = off;
        off = alignUp(off + size_t(nTok * h.nBlocks) * sizeof(int32_t));
        if (h.mode == Mode::IntAct) h.na = int64_t(actOutliers(act).size());
    }
    h.offXo = off;
    off = alignUp(off + size_t(nTok * L.nOut) * sizeof(float));
    h.offXa = off;
    off = alignUp(off + size_t(nTok * h.na) * sizeof(float));
    h.offAcols = off;
    off = alignUp(off + size_t(h.na) * sizeof(int32_t));
    h.total = off;
    return h;
}

size_t PackedImpl::preparedBytes(int64_t nTok, const ActQuantSpec* act, bool exact) const {
    return header(std::max<int64_t>(nTok, 0), act, exact).total + kAlign;
}

PrepView PackedImpl::view(const std::byte* prepared) const {
    // The buffer's start is aligned up to 64 bytes by prepare().
    const std::byte* base = reinterpret_cast<const std::byte*>(
        (reinterpret_cast<uintptr_t>(prepared) + kAlign - 1) & ~uintptr_t(kAlign - 1));
    PrepHeader h;
    std::memcpy(&h, base, sizeof h);
    PrepView v;
    v.mode = h.mode, v.nTok = h.nTok, v.nBlocks = h.nBlocks, v.na = h.na;
    v.xq = reinterpret_cast<const int8_t*>(base + h.offXq);
    v.d = reinterpret_cast<const float*>(base + h.offD);
    v.X = reinterpret_cast<const int32_t*>(base + h.offX);
    v.xf = reinterpret_cast<const float*>(base + h.offXf);
    v.xo = reinterpret_cast<const float*>(base + h.offXo);
    v.xa = reinterpret_cast<const float*>(base + h.offXa);
    v.acols = reinterpret_cast<const int32_t*>(base + h.offAcols);
    return v;
}

void PackedImpl::prepare(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act,
                         bool exact, std::byte* prepared) const {
    std::byte* base = reinterpret_cast<std::byte*>(
        (reinterpret_cast<uintptr_t>(prepared) + kAlign - 1) & ~uintptr_t(kAlign - 1));
    const PrepHeader h = header(nTok, act, exact);
    std::memcpy(base, &h, sizeof h);
    if (h.mode == Mode::Float)
        prepareFloat(x, ldx, nTok, act, h, base);
    else
        prepareInt(x, ldx, nTok, act, h, base);
}

void PackedImpl::prepareFloat(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act,
                              const PrepHeader& h, std::byte* base) const {
    const Layout& L = m_L;
    float* xo = reinterpret_cast<float*>(base + h.offXo);
    const int64_t no = L.nOut;
    const bool par = nTok * L.cols >= (int64_t(1) << 16);
    // Float activations (fake-quantised when the recipe asks) over padded columns.
    thread_local std::vector<float> fq;
    const float* src = x;
    int64_t lds = ldx;
    if (act && act->active()) {
        fq.resize(size_t(nTok * L.cols));
        runtime::fakeQuantizeActivations(*act, x, ldx, fq.data(), L.cols, nTok, L.cols, 0);
        src = fq.data(), lds = L.cols;
    }
    float* xf = reinterpret_cast<float*>(base + h.offXf);
    // omp: nothrow (copies into the prepared buffer)
#pragma omp parallel for schedule(static) if (par)
    for (int64_t t = 0; t < nTok; ++t) {
        const float* xr = src + t * lds;
        float* o = xf + t * L.Cp;
        std::fill(o, o + L.Cp, 0.0f);
        for (int64_t g = 0; g < L.gpr; ++g) {
            const int64_t c0 = g * L.glen, len = std::min(L.glen, L.cols - c0);
            std::memcpy(o + g * L.Gp, xr + c0, size_t(len) * sizeof(float));
        }
        for (int64_t k = 0; k < no; ++k) {
            xo[t * no + k] = xr[m_ocols[size_t(k)]];
            o[m_ocolPadded[size_t(k)]] = 0.0f;
        }
    }
}

/// What every token of an integer preparation shares: the output sections, the channels that
/// take no part in the product, the block sizes and the kernels.
struct PackedImpl::IntPrep {
    const PrepHeader& h;
    const ActQuantSpec* act;
    int8_t* xq;
    float* dv;
    int32_t* Xv;
    float* xa;
    float* xo;
    std::vector<int32_t> ao;      ///< IntAct: activation-outlier channels kept in float (xa)
    std::vector<uint8_t> skip;    ///< per channel: 1 weight-outlier column, 2 activation outlier
    std::vector<int64_t> actSkip; ///< activation-outlier channels (no part in the scale)
    int64_t bu, bpg;
    int8_t offset; ///< 2:4 kernels take uint8 codes: xq + 128
    const KernelSet& ks;
};

void PackedImpl::prepareInt(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act,
                            const PrepHeader& h, std::byte* base) const {
    const Layout& L = m_L;
    // Integer activations: int8 codes, a scale and the code sum per block.
    IntPrep ip{h,
               act,
               reinterpret_cast<int8_t*>(base + h.offXq),
               reinterpret_cast<float*>(base + h.offD),
               reinterpret_cast<int32_t*>(base + h.offX),
               reinterpret_cast<float*>(base + h.offXa),
               reinterpret_cast<float*>(base + h.offXo),
               h.mode == Mode::IntAct ? actOutliers(act) : std::vector<int32_t>{},
               std::vector<uint8_t>(size_t(L.cols), 0),
               {},
               L.blockUnits(h.mode),
               L.blocksPerGroup(h.mode),
               L.sparse ? int8_t(-128) : int8_t(0),
               kernelsFor(activeIsa())};
    std::copy(ip.ao.begin(), ip.ao.end(), reinterpret_cast<int32_t*>(base + h.offAcols));
    // Channels that take no part in the integer product: weight-outlier columns and (IntAct)
    // the recipe's activation-outlier channels. The latter also take no part in the scale.
    for (int32_t c : m_ocols) ip.skip[size_t(c)] = 1;
    if (act && h.mode == Mode::IntAct)
        for (int32_t c : act->outlierChannels)
            if (c >= 0 && c < L.cols) ip.skip[size_t(c)] = 2;
    for (int64_t c = 0; c < L.cols; ++c)
        if (ip.skip[size_t(c)] == 2) ip.actSkip.push_back(c);
    const bool par = nTok * L.cols >= (int64_t(1) << 16);
    ParallelErrors errors;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t t = 0; t < nTok; ++t) errors.run([&] { prepareIntToken(ip, x + t * ldx, t); });
    errors.rethrow();
}

void PackedImpl::prepareIntToken(const IntPrep& ip, const float* xr, int64_t t) const {
    const Layout& L = m_L;
    const PrepHeader& h = ip.h;
    int8_t* q = ip.xq + t * L.Cp;
    std::memset(q, 0, size_t(L.Cp));
    float* d = ip.dv + t * h.nBlocks;
    int32_t* X = ip.Xv + t * h.nBlocks;
    std::fill(X, X + h.nBlocks, 0);
    // Finite rows take the vector path (the same codes as the scalar ones, which keep the NaN /
    // infinity cases of fakeQuantizeActivations).
    const bool finite = std::isfinite(ip.ks.absMax(xr, L.cols));
    if (finite) quantizeTokenVector(ip, xr, q, d, X);
    if (h.mode == Mode::IntAct)
        quantizeTokenIntAct(ip, xr, finite, q, d, t);
    else
        quantizeTokenIntW(ip, xr, finite, q, d, t);
    // Code sums per block (the vector path returned them), then the 2:4 offset to unsigned.
    for (int64_t g = 0; g < L.gpr && !finite; ++g)
        for (int64_t b = 0; b < ip.bpg; ++b) {
            const int64_t j0 = g * L.Gp + b * ip.bu * L.unitCols;
            const int64_t j1 = std::min(g * L.Gp + L.Gp, j0 + ip.bu * L.unitCols);
            int32_t sum = 0;
            for (int64_t j = j0; j < j1; ++j) sum += q[j];
            X[g * ip.bpg + b] = sum;
        }
    if (ip.offset)
        for (int64_t j = 0; j < L.Cp; ++j) q[j] = int8_t(uint8_t(q[j]) ^ 0x80);
}

void PackedImpl::quantizeTokenVector(const IntPrep& ip, const float* xr, int8_t* q, float* d,
                                     int32_t* X) const {
    const Layout& L = m_L;
    const Mode mode = ip.h.mode;
    thread_local std::vector<float> tmp;
    tmp.assign(xr, xr + L.cols);
    float* xs = tmp.data();
    float f = 0.0f, qmax = 127.0f, scale = 0.0f;
    if (mode == Mode::IntAct) {
        qmax = float((1 << (ip.act->bits - 1)) - 1);
        for (int64_t c : ip.actSkip) xs[c] = 0.0f;
        const float m = ip.act->perToken ? ip.ks.absMax(xs, L.cols) : ip.act->absMax;
        scale = f = ip.act->clip * m / qmax;
    }
    for (int32_t c : m_ocols) xs[c] = 0.0f;
    for (int64_t g = 0; g < L.gpr; ++g) {
        const int64_t c0 = g * L.glen, len = std::min(L.glen, L.cols - c0);
        for (int64_t b = 0; b < ip.bpg; ++b) {
            const int64_t j0 = b * ip.bu * L.unitCols;
            const int64_t j1 = std::min(len, (b + 1) * ip.bu * L.unitCols);
            if (mode == Mode::IntW) {
                const float amax = j1 > j0 ? ip.ks.absMax(xs + c0 + j0, j1 - j0) : 0.0f;
                f = amax > 0.0f ? 127.0f / amax : 0.0f;
                scale = amax / 127.0f;
            }
            const bool divide = mode == Mode::IntAct;
            if (j1 > j0 && (divide ? f > 0.0f : true))
                X[g * ip.bpg + b] =
                    ip.ks.quantize(xs + c0 + j0, j1 - j0, f, divide, qmax, q + g * L.Gp + j0);
            d[g * ip.bpg + b] = scale > 0.0f ? scale : 0.0f;
        }
    }
}

void PackedImpl::quantizeTokenIntAct(const IntPrep& ip, const float* xr, bool finite, int8_t* q,
                                     float* d, int64_t t) const {
    const Layout& L = m_L;
    const ActQuantSpec* act = ip.act;
    const uint8_t* sk = ip.skip.data();
    const int64_t no = L.nOut;
    // runtime::fakeQuantizeActivations, kept as integer codes and one scale per token.
    const float qmax = float((1 << (act->bits - 1)) - 1);
    float m = act->absMax;
    if (act->perToken) {
        m = 0.0f;
        for (int64_t c = 0; c < L.cols; ++c) m = std::max(m, sk[c] != 2 ? std::fabs(xr[c]) : 0.0f);
    }
    const float s = act->clip * m / qmax;
    if (!finite) {
        bool isNan = false;
        for (int64_t g = 0; g < L.gpr; ++g) {
            const int64_t c0 = g * L.glen, len = std::min(L.glen, L.cols - c0);
            int8_t* qg = q + g * L.Gp;
            for (int64_t j = 0; j < len; ++j) {
                if (sk[c0 + j] == 2) continue;
                float v = 0.0f;
                if (s > 0.0f) {
                    v = std::clamp(std::nearbyint(xr[c0 + j] / s), -qmax, qmax);
                    if (std::isnan(v)) isNan = true, v = 0.0f;
                }
                if (sk[c0 + j] == 0) qg[j] = int8_t(v);
            }
        }
        const float nan = std::numeric_limits<float>::quiet_NaN();
        for (int64_t b = 0; b < ip.h.nBlocks; ++b) d[b] = isNan ? nan : (s > 0.0f ? s : 0.0f);
    }
    for (int64_t k = 0; k < no; ++k) {
        const int32_t c = m_ocols[size_t(k)];
        float v = 0.0f;
        if (s > 0.0f) v = std::clamp(std::nearbyint(xr[c] / s), -qmax, qmax) * s;
        ip.xo[t * no + k] = v;
    }
    for (size_t j = 0; j < ip.ao.size(); ++j)
        ip.xa[t * int64_t(ip.ao.size()) + int64_t(j)] = xr[ip.ao[j]];
}

void PackedImpl::quantizeTokenIntW(const IntPrep& ip, const float* xr, bool finite, int8_t* q,
                                   float* d, int64_t t) const {
    const Layout& L = m_L;
    const uint8_t* sk = ip.skip.data();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int64_t g = 0; g < L.gpr && !finite; ++g) {
        const int64_t c0 = g * L.glen, len = std::min(L.glen, L.cols - c0);
        for (int64_t b = 0; b < ip.bpg; ++b) {
            // Block b: padded columns [b * bu * unitCols, ...) of the group. A non-finite
            // activation makes the block's scale NaN (its codes stay 0).
            const int64_t j0 = b * ip.bu * L.unitCols;
            const int64_t j1 = std::min(len, (b + 1) * ip.bu * L.unitCols);
            float amax = 0.0f;
            bool bad = false;
            for (int64_t j = j0; j < j1; ++j)
                if (!sk[c0 + j]) {
                    amax = std::max(amax, std::fabs(xr[c0 + j]));
                    bad |= !std::isfinite(xr[c0 + j]);
                }
            const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            for (int64_t j = j0; j < j1 && !bad; ++j)
                if (!sk[c0 + j])
                    q[g * L.Gp + j] =
                        int8_t(std::clamp(std::nearbyint(xr[c0 + j] * id), -127.0f, 127.0f));
            d[g * ip.bpg + b] = bad ? nan : amax / 127.0f;
        }
    }
    const int64_t no = L.nOut;
    for (int64_t k = 0; k < no; ++k) ip.xo[t * no + k] = xr[m_ocols[size_t(k)]];
}

const KernelSet& kernelsFor(Isa isa) {
#if LCW_X86
    const bool vnniOk = g_allowVnni.load();
    if (isa == Isa::Avx512)
        if (const KernelSet* k = kernelsAvx512(vnniOk, g_allowVbmi.load())) return *k;
    if (isa == Isa::Avx512 || isa == Isa::Avx2)
        if (const KernelSet* k = kernelsAvx2(vnniOk && detail::cpu().avxvnni)) return *k;
#endif
    (void)isa;
    return kGeneric;
}

void PackedImpl::gemm(int64_t r0, int64_t nRows, const std::byte* prepared, int64_t nTok,
                      const ActQuantSpec* act, bool exact, float* y, int64_t ldy) const {
    (void)act, (void)exact;
    if (nRows <= 0 || nTok <= 0) return;
    const Layout& L = m_L;
    const PrepView P = view(prepared);
    if (P.nTok != nTok)
        throw ArgumentError("packed weight '" + m_name + "': prepared for " +
                            std::to_string(P.nTok) + " tokens, called with " +
                            std::to_string(nTok));
    if (r0 < 0 || r0 + nRows > L.rows)
        throw ArgumentError("packed weight '" + m_name + "': rows out of range");
    const KernelSet& ks = kernelsFor(activeIsa());
    const WeightRef w = ref();
    const int64_t p0 = r0 / 4, p1 = (r0 + nRows + 3) / 4;
    auto run = [&](float* out, int64_t ldo, int64_t pa, int64_t np) {
        if (P.mode == Mode::Float)
            (L.sparse ? ks.floatSparse : ks.floatDense)(w, P, pa, np, out, ldo);
        else
            (L.sparse ? ks.intSparse : ks.intDense)(w, P, pa, np, out, ldo);
    };
    if (r0 % 4 == 0 && (nRows % 4 == 0)) {
        run(y, ldy, p0, p1 - p0);
    } else {
        // Whole panels into scratch, then the rows asked for (results do not depend on it).
        thread_local std::vector<float> tmp;
        const int64_t w4 = 4 * (p1 - p0);
        tmp.resize(size_t(nTok * w4));
        run(tmp.data(), w4, p0, p1 - p0);
        for (int64_t t = 0; t < nTok; ++t)
            std::memcpy(y + t * ldy, tmp.data() + t * w4 + (r0 - 4 * p0),
                        size_t(nRows) * sizeof(float));
    }
    // Side products in a fixed order: weight-outlier columns, then activation-outlier channels
    // (their weights decoded once per call).
    if (L.nOut)
        for (int64_t t = 0; t < nTok; ++t) {
            const float* xo = P.xo + t * L.nOut;
            for (int64_t r = 0; r < nRows; ++r) {
                const uint16_t* ov = m_ov.data() + size_t(r0 + r) * size_t(L.nOut);
                float acc = y[t * ldy + r];
                for (int64_t k = 0; k < L.nOut; ++k) acc = std::fma(xo[k], f16ToF32(ov[k]), acc);
                y[t * ldy + r] = acc;
            }
        }
    if (P.na) {
        thread_local std::vector<float> wa;
        wa.resize(size_t(nRows * P.na));
        for (int64_t r = 0; r < nRows; ++r)
            for (int64_t j = 0; j < P.na; ++j)
                wa[size_t(r * P.na + j)] = valueAt(r0 + r, P.acols[j]);
        for (int64_t t = 0; t < nTok; ++t) {
            const float* xa = P.xa + t * P.na;
            for (int64_t r = 0; r < nRows; ++r) {
                float acc = y[t * ldy + r];
                for (int64_t j = 0; j < P.na; ++j)
                    acc = std::fma(xa[j], wa[size_t(r * P.na + j)], acc);
                y[t * ldy + r] = acc;
            }
        }
    }
}

} // namespace

namespace pk {
#if !LCW_X86
const KernelSet* kernelsAvx2(bool) {
    return nullptr;
}
const KernelSet* kernelsAvx512(bool, bool) {
    return nullptr;
}
#endif
} // namespace pk

namespace detail {
void packedAllowVnni(bool allow) {
    g_allowVnni.store(allow);
}
void packedAllowVbmi(bool allow) {
    g_allowVbmi.store(allow);
}
} // namespace detail

namespace {

/// A weight whose codes are stored in another column order (PackedSource::colOrder): the inner
/// weight is packed in the stored order (outliers and mask moved there); every call permutes the
/// input columns (and the activation-outlier channels) once and multiplies in the stored order.
class ColumnOrderedLinear final : public PackedLinear {
public:
    explicit ColumnOrderedLinear(const PackedSource& src)
        : m_order(src.colOrder, src.colOrder + src.cols), m_pos(size_t(src.cols), -1) {
        for (int64_t k = 0; k < src.cols; ++k) {
            const int32_t c = m_order[size_t(k)];
            if (c < 0 || c >= src.cols || m_pos[size_t(c)] >= 0)
                throw ArgumentError("packed weight '" + src.name +
                                    "': the column order is not a permutation of " +
                                    std::to_string(src.cols) + " columns");
            m_pos[size_t(c)] = int32_t(k);
        }
        PackedSource s = src;
        s.colOrder = nullptr;
        // Outlier columns into stored indices (ascending), their values along.
        std::vector<int32_t> ocols;
        std::vector<uint16_t> ovals;
        const size_t no = src.nOutlierCols;
        if (no > 0 && src.outlierCols && src.outlierValues) {
            std::vector<size_t> idx(no);
            for (size_t k = 0; k < no; ++k) idx[k] = k;
            auto stored = [&](size_t k) {
                const int32_t c = src.outlierCols[k];
                return c >= 0 && c < src.cols ? m_pos[size_t(c)] : c; // bad ones fail later
            };
            std::sort(idx.begin(), idx.end(),
                      [&](size_t a, size_t b) { return stored(a) < stored(b); });
            ocols.resize(no);
            ovals.resize(no * size_t(src.rows));
            for (size_t k = 0; k < no; ++k) {
                ocols[k] = stored(idx[k]);
                for (int64_t r = 0; r < src.rows; ++r)
                    ovals[size_t(r) * no + k] = src.outlierValues[size_t(r) * no + idx[k]];
            }
            s.outlierCols = ocols.data();
            s.outlierValues = ovals.data();
        }
        std::vector<uint8_t> mask;
        if (src.mask) {
            mask.resize(size_t(src.rows * src.cols));
            for (int64_t r = 0; r < src.rows; ++r)
                for (int64_t k = 0; k < src.cols; ++k)
                    mask[size_t(r * src.cols + k)] = src.mask[r * src.cols + m_order[size_t(k)]];
            s.mask = mask.data();
        }
        m_inner = std::make_unique<PackedImpl>(s);
    }
    int64_t rows() const override { return m_inner->rows(); }
    int64_t cols() const override { return m_inner->cols(); }
    size_t bytes() const override { return m_inner->bytes() + 8 * m_order.size(); }
    void dequantizeRows(int64_t r0, int64_t n, float* dst) const override {
        const int64_t c = cols();
        std::vector<float> tmp(static_cast<size_t>(c));
        for (int64_t r = 0; r < n; ++r) {
            m_inner->dequantizeRows(r0 + r, 1, tmp.data());
            for (int64_t k = 0; k < c; ++k) dst[r * c + m_order[size_t(k)]] = tmp[size_t(k)];
        }
    }
    std::string describe() const override { return m_inner->describe() + " +col-order"; }
    /// The inner (stored-order) form with the order.
    GpuPacked gpuForm(int64_t r0, int64_t n) const override {
        GpuPacked g = m_inner->gpuForm(r0, n);
        g.colOrder = m_order;
        return g;
    }
    /// The inner weight's buffer, then the permuted activations [nTok, cols] (float).
    size_t preparedBytes(int64_t nTok, const ActQuantSpec* act, bool exact) const override {
        return alignUp(m_inner->preparedBytes(nTok, act, exact)) +
               size_t(std::max<int64_t>(nTok, 0)) * size_t(cols()) * sizeof(float);
    }
    void prepare(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act, bool exact,
                 std::byte* prepared) const override {
        const int64_t c = cols();
        float* xp =
            reinterpret_cast<float*>(prepared + alignUp(m_inner->preparedBytes(nTok, act, exact)));
        for (int64_t t = 0; t < nTok; ++t)
            for (int64_t k = 0; k < c; ++k) xp[t * c + k] = x[t * ldx + m_order[size_t(k)]];
        if (!act || act->outlierChannels.empty())
            return m_inner->prepare(xp, c, nTok, act, exact, prepared);
        const ActQuantSpec stored = storedSpec(act);
        m_inner->prepare(xp, c, nTok, &stored, exact, prepared);
    }
    void gemm(int64_t r0, int64_t nRows, const std::byte* prepared, int64_t nTok,
              const ActQuantSpec* act, bool exact, float* y, int64_t ldy) const override {
        if (!act || act->outlierChannels.empty())
            return m_inner->gemm(r0, nRows, prepared, nTok, act, exact, y, ldy);
        const ActQuantSpec stored = storedSpec(act);
        m_inner->gemm(r0, nRows, prepared, nTok, &stored, exact, y, ldy);
    }

private:
    /// The activation spec with its outlier channels in stored column indices.
    ActQuantSpec storedSpec(const ActQuantSpec* act) const {
        ActQuantSpec s = act ? *act : ActQuantSpec{};
        for (int32_t& ch : s.outlierChannels)
            if (ch >= 0 && ch < int32_t(m_pos.size())) ch = m_pos[size_t(ch)];
        std::sort(s.outlierChannels.begin(), s.outlierChannels.end());
        return s;
    }
    std::vector<int32_t> m_order, m_pos;
    std::unique_ptr<PackedImpl> m_inner;
};

} // namespace

std::unique_ptr<PackedLinear> PackedLinear::pack(const PackedSource& src) {
    if (src.colOrder) return std::make_unique<ColumnOrderedLinear>(src);
    return std::make_unique<PackedImpl>(src);
}

} // namespace lcw::kernels
