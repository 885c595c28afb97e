// Packed linear weights (packed_linear.h): reference implementation. The weight keeps the source's
// codes, scales and zeros; a product dequantises a few rows at a time into per-thread scratch and
// multiplies them with gemmNT (activations fake-quantised when `act` is active).
#include "core/runtime/packed_linear.h"

#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/lowbit.h"
#include "core/runtime/kernels.h"
#include "core/runtime/quant_runtime.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lcw::kernels {

namespace {

class RefPacked final : public PackedLinear {
public:
    explicit RefPacked(const PackedSource& s) : m_s(s) {
        const int cb = s.kind == PackedSource::Kind::Int   ? s.bits
                       : s.kind == PackedSource::Kind::Nf4 ? 4
                                                           : 8;
        if (s.rows <= 0 || s.cols <= 0 || cb < 2 || cb > 8)
            throw ArgumentError("packed weight '" + s.name + "': bad shape or bits");
        m_codeBits = cb;
        m_rowBytes = size_t((s.cols * cb + 7) / 8);
        if (s.codeBytes != m_rowBytes * size_t(s.rows))
            throw ArgumentError("packed weight '" + s.name + "': " + std::to_string(s.codeBytes) +
                                " code bytes for " + std::to_string(s.rows) + "x" +
                                std::to_string(s.cols));
        m_gpr = s.granularity == PackedSource::Granularity::Group ? (s.cols + s.group - 1) / s.group
                                                                  : 1;
        const size_t ng = s.granularity == PackedSource::Granularity::Tensor ? 1
                          : s.granularity == PackedSource::Granularity::Channel
                              ? size_t(s.rows)
                              : size_t(s.rows * m_gpr);
        if (s.nScales != ng ||
            (s.kind == PackedSource::Kind::Int && !s.symmetric && s.nZeros != ng))
            throw ArgumentError("packed weight '" + s.name + "': scale/zero count does not fit");
        m_codes.assign(s.codes, s.codes + s.codeBytes);
        m_scales.assign(s.scales, s.scales + s.nScales);
        if (s.zeros) m_zeros.assign(s.zeros, s.zeros + s.nZeros);
        if (s.outlierCols) {
            m_ocols.assign(s.outlierCols, s.outlierCols + s.nOutlierCols);
            m_ovals.assign(s.outlierValues, s.outlierValues + s.nOutlierCols * size_t(s.rows));
        }
        if (s.mask) m_mask.assign(s.mask, s.mask + size_t(s.rows * s.cols));
        m_s.codes = nullptr, m_s.scales = nullptr, m_s.zeros = nullptr, m_s.outlierCols = nullptr;
        m_s.outlierValues = nullptr, m_s.mask = nullptr;
    }
    int64_t rows() const override { return m_s.rows; }
    int64_t cols() const override { return m_s.cols; }
    size_t bytes() const override {
        return m_codes.size() + 2 * (m_scales.size() + m_zeros.size() + m_ovals.size()) +
               4 * m_ocols.size() + m_mask.size();
    }
    std::string describe() const override { return "packed (reference)"; }

    void dequantizeRows(int64_t r0, int64_t n, float* dst) const override {
        const int64_t C = m_s.cols;
        for (int64_t r = r0; r < r0 + n; ++r) {
            float* o = dst + (r - r0) * C;
            const uint8_t* row = m_codes.data() + size_t(r) * m_rowBytes;
            for (int64_t j = 0; j < C; ++j) {
                const uint64_t bit = uint64_t(j) * uint64_t(m_codeBits);
                uint32_t u = 0;
                for (int b = 0; b < m_codeBits; ++b)
                    u |= uint32_t(row[(bit + b) >> 3] >> ((bit + b) & 7) & 1u) << b;
                const size_t g = m_s.granularity == PackedSource::Granularity::Tensor ? 0
                                 : m_s.granularity == PackedSource::Granularity::Channel
                                     ? size_t(r)
                                     : size_t(r * m_gpr + j / m_s.group);
                const float sc = f16ToF32(m_scales[g]);
                float v = 0;
                switch (m_s.kind) {
                case PackedSource::Kind::Int:
                    v = m_s.symmetric ? sc * float(int32_t(u) - (1 << (m_s.bits - 1)))
                                      : sc * (float(u) - f16ToF32(m_zeros[g]));
                    break;
                case PackedSource::Kind::Nf4:
                    v = sc * nf4Levels()[u & 15];
                    break;
                case PackedSource::Kind::Fp8:
                    v = sc * e4m3ToF32(uint8_t(u));
                    break;
                }
                o[j] = v;
            }
            for (size_t k = 0; k < m_ocols.size(); ++k)
                o[m_ocols[k]] = f16ToF32(m_ovals[size_t(r) * m_ocols.size() + k]);
            if (!m_mask.empty())
                for (int64_t j = 0; j < C; ++j)
                    if (!m_mask[size_t(r * C + j)]) o[j] = 0.0f;
        }
    }

    size_t preparedBytes(int64_t nTok, const ActQuantSpec*, bool) const override {
        return size_t(nTok * m_s.cols) * sizeof(float);
    }
    void prepare(const float* x, int64_t ldx, int64_t nTok, const ActQuantSpec* act, bool,
                 std::byte* prepared) const override {
        float* p = reinterpret_cast<float*>(prepared);
        if (act && act->active())
            runtime::fakeQuantizeActivations(*act, x, ldx, p, m_s.cols, nTok, m_s.cols, 1);
        else
            for (int64_t t = 0; t < nTok; ++t)
                std::memcpy(p + t * m_s.cols, x + t * ldx, size_t(m_s.cols) * sizeof(float));
    }
    void gemm(int64_t r0, int64_t nRows, const std::byte* prepared, int64_t nTok,
              const ActQuantSpec*, bool, float* y, int64_t ldy) const override {
        thread_local FloatBuffer buf;
        constexpr int64_t R = 16;
        if (buf.size() < size_t(R * m_s.cols)) buf.resize(size_t(R * m_s.cols));
        for (int64_t r = r0; r < r0 + nRows; r += R) {
            const int64_t n = std::min(R, r0 + nRows - r);
            dequantizeRows(r, n, buf.data());
            gemmNT(buf.data(), m_s.cols, n, reinterpret_cast<const float*>(prepared), m_s.cols,
                   nTok, y + (r - r0), ldy, m_s.cols);
        }
    }

private:
    PackedSource m_s;
    int m_codeBits = 4;
    size_t m_rowBytes = 0;
    int64_t m_gpr = 1;
    std::vector<uint8_t> m_codes, m_mask;
    std::vector<uint16_t> m_scales, m_zeros, m_ovals;
    std::vector<int32_t> m_ocols;
};

} // namespace

std::unique_ptr<PackedLinear> PackedLinear::pack(const PackedSource& src) {
    return std::make_unique<RefPacked>(src);
}

} // namespace lcw::kernels
