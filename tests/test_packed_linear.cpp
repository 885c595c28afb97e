// lcw's packed weights in the runtime (core/runtime/cpu/packed_linear.h): the runtime layout gives
// compress::dequantize's values bit for bit; the products (float activations, 8-bit activation
// blocks, W8A8 / W4A8 integer GEMMs, 2:4 sparse) against double references, on every
// instruction set this CPU runs, with and without VNNI; results do not depend on the batch.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/lowbit.h"
#include "core/compress/quantizer.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/quant_runtime.h"

#include <QtTest/QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

using namespace lcw;
using namespace lcw::kernels;

namespace {

/// One test configuration: a quantised weight (with optional outliers and mask).
struct Case {
    std::string name;
    compress::PackedTensor pt;
    std::vector<uint8_t> mask; ///< rows * cols or empty
    std::vector<float> ref;    ///< dequantised, outliers placed, mask applied
};

PackedSource sourceOf(const Case& c) {
    const compress::PackedTensor& p = c.pt;
    PackedSource s;
    const auto& st = p.settings;
    s.kind = st.format == compress::WeightFormat::Int   ? PackedSource::Kind::Int
             : st.format == compress::WeightFormat::Nf4 ? PackedSource::Kind::Nf4
                                                        : PackedSource::Kind::Fp8;
    s.bits = st.bits;
    s.symmetric = st.symmetric;
    s.granularity =
        st.granularity == compress::Granularity::Tensor    ? PackedSource::Granularity::Tensor
        : st.granularity == compress::Granularity::Channel ? PackedSource::Granularity::Channel
                                                           : PackedSource::Granularity::Group;
    s.group = st.groupSize;
    s.rows = p.rows, s.cols = p.cols;
    s.codes = p.codes.data(), s.codeBytes = p.codes.size();
    s.scales = p.scales.data(), s.nScales = p.scales.size();
    s.zeros = p.zeros.empty() ? nullptr : p.zeros.data(), s.nZeros = p.zeros.size();
    s.outlierCols = p.outlierCols.empty() ? nullptr : p.outlierCols.data();
    s.nOutlierCols = p.outlierCols.size();
    s.outlierValues = p.outlierValues.empty() ? nullptr : p.outlierValues.data();
    s.mask = c.mask.empty() ? nullptr : c.mask.data();
    s.name = c.name;
    return s;
}

enum class MaskKind { None, TwoFour, TwoFourSparse, Unstructured };

Case makeCase(int64_t rows, int64_t cols, compress::WeightSettings st, MaskKind mk, int nOutliers,
              uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(size_t(rows * cols));
    for (auto& v : w) v = nd(rng) * 0.05f;
    Case c;
    c.name = "w";
    c.pt = compress::quantize(w.data(), rows, cols, st, "w");
    if (nOutliers > 0) {
        for (int k = 0; k < nOutliers; ++k)
            c.pt.outlierCols.push_back(int32_t(3 + k * (cols / nOutliers)));
        for (int64_t r = 0; r < rows; ++r)
            for (int k = 0; k < nOutliers; ++k)
                c.pt.outlierValues.push_back(f32ToF16(nd(rng) * 0.5f));
    }
    if (mk != MaskKind::None) {
        c.mask.assign(size_t(rows * cols), 1);
        std::uniform_int_distribution<int> pick(0, 3), coin(0, 9);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t g = 0; g < cols; g += 4) {
                uint8_t* m = c.mask.data() + r * cols;
                const int64_t e = std::min(cols, g + 4);
                if (mk == MaskKind::Unstructured) {
                    for (int64_t j = g; j < e; ++j) m[j] = coin(rng) < 4;
                    continue;
                }
                // Keep 2 of 4 (TwoFourSparse: sometimes fewer).
                for (int64_t j = g; j < e; ++j) m[j] = 0;
                int keep = 2;
                if (mk == MaskKind::TwoFourSparse) keep = coin(rng) < 2 ? coin(rng) % 2 : 2;
                for (int k = 0; k < keep; ++k) {
                    int64_t j = g + pick(rng);
                    for (int tries = 0; tries < 8 && (j >= e || m[j]); ++tries) j = g + pick(rng);
                    if (j < e) m[j] = 1;
                }
            }
    }
    c.ref = compress::dequantize(c.pt, "w");
    if (!c.mask.empty())
        for (size_t i = 0; i < c.ref.size(); ++i)
            if (!c.mask[i]) c.ref[i] = 0.0f;
    return c;
}

compress::WeightSettings intSettings(int bits, bool sym, compress::Granularity g,
                                     int64_t group = 128) {
    compress::WeightSettings s;
    s.bits = bits;
    s.format = compress::WeightFormat::Int;
    s.symmetric = sym;
    s.granularity = g;
    s.groupSize = group;
    return s;
}

std::vector<float> randomActs(int64_t nTok, int64_t cols, uint32_t seed, bool outliers = true) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(size_t(nTok * cols));
    for (auto& v : x) v = nd(rng);
    if (outliers)
        for (int64_t t = 0; t < nTok; ++t) x[size_t(t * cols + 2 % cols)] *= 30.0f;
    return x;
}

/// y = x · W^T in double, and Σ |x||w| per element (for relative tolerances).
void reference(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& x,
               int64_t nTok, std::vector<double>& y, std::vector<double>& mag) {
    y.assign(size_t(nTok * rows), 0.0);
    mag.assign(size_t(nTok * rows), 0.0);
    for (int64_t t = 0; t < nTok; ++t)
        for (int64_t r = 0; r < rows; ++r) {
            double s = 0, m = 0;
            for (int64_t c = 0; c < cols; ++c) {
                const double p = double(x[size_t(t * cols + c)]) * double(w[size_t(r * cols + c)]);
                s += p;
                m += std::fabs(p);
            }
            y[size_t(t * rows + r)] = s;
            mag[size_t(t * rows + r)] = m;
        }
}

std::vector<float> run(const PackedLinear& pl, const std::vector<float>& x, int64_t nTok,
                       const ActQuantSpec* act, bool exact, int64_t r0 = 0, int64_t nRows = -1) {
    if (nRows < 0) nRows = pl.rows();
    std::vector<std::byte> prep(pl.preparedBytes(nTok, act, exact));
    pl.prepare(x.data(), pl.cols(), nTok, act, exact, prep.data());
    std::vector<float> y(size_t(nTok * nRows), -7.0f);
    pl.gemm(r0, nRows, prep.data(), nTok, act, exact, y.data(), nRows);
    return y;
}

struct IsaGuard {
    ~IsaGuard() {
        setIsa(Isa::Auto);
        detail::packedAllowVnni(true);
        detail::packedAllowVbmi(true);
    }
};

/// Every kernel version this CPU runs: ISA level, VNNI allowed, VBMI allowed.
struct Variant {
    Isa isa;
    bool vnni, vbmi;
    void apply() const {
        setIsa(isa);
        detail::packedAllowVnni(vnni);
        detail::packedAllowVbmi(vbmi);
    }
};
std::vector<Variant> variants() {
    std::vector<Variant> v;
    for (Isa isa : supportedIsas()) {
        v.push_back({isa, true, true});
        if (isa == Isa::Generic) continue;
        v.push_back({isa, false, false});
        if (isa == Isa::Avx512) v.push_back({isa, true, false});
    }
    return v;
}

std::vector<Case> allCases() {
    using G = compress::Granularity;
    std::vector<Case> cs;
    uint32_t seed = 1;
    for (int bits = 2; bits <= 8; ++bits)
        for (bool sym : {true, false}) {
            cs.push_back(
                makeCase(9, 200, intSettings(bits, sym, G::Group, 64), MaskKind::None, 0, seed++));
            cs.back().name = "int" + std::to_string(bits) + (sym ? " sym" : " asym") + " g64";
        }
    const std::pair<G, int64_t> grans[] = {{G::Tensor, 0},  {G::Channel, 0}, {G::Group, 32},
                                           {G::Group, 48},  {G::Group, 96},  {G::Group, 128},
                                           {G::Group, 1000}};
    for (auto [g, gs] : grans)
        for (int bits : {4, 8})
            for (bool sym : {true, false}) {
                cs.push_back(
                    makeCase(11, 200, intSettings(bits, sym, g, gs), MaskKind::None, 0, seed++));
                cs.back().name = "int" + std::to_string(bits) + " gran" + std::to_string(int(g)) +
                                 " g" + std::to_string(gs) + (sym ? " sym" : " asym");
            }
    compress::WeightSettings nf4;
    nf4.format = compress::WeightFormat::Nf4, nf4.bits = 4, nf4.granularity = G::Group,
    nf4.groupSize = 64;
    cs.push_back(makeCase(10, 200, nf4, MaskKind::None, 0, seed++));
    cs.back().name = "nf4 g64";
    compress::WeightSettings fp8;
    fp8.format = compress::WeightFormat::Fp8E4M3, fp8.bits = 8, fp8.granularity = G::Channel;
    cs.push_back(makeCase(10, 200, fp8, MaskKind::None, 0, seed++));
    cs.back().name = "fp8 channel";
    // Outlier columns, masks.
    cs.push_back(makeCase(9, 200, intSettings(4, true, G::Group, 64), MaskKind::None, 3, seed++));
    cs.back().name = "int4 g64 outliers";
    cs.push_back(makeCase(9, 200, intSettings(8, false, G::Channel), MaskKind::None, 2, seed++));
    cs.back().name = "int8 asym channel outliers";
    for (auto [st, nm] : {std::pair{intSettings(4, true, G::Group, 128), "int4 g128"},
                          std::pair{intSettings(8, true, G::Channel), "int8 channel"},
                          std::pair{intSettings(3, true, G::Group, 64), "int3 g64"},
                          std::pair{intSettings(4, false, G::Group, 64), "int4 asym g64"},
                          std::pair{nf4, "nf4 g64"}, std::pair{fp8, "fp8 channel"}}) {
        cs.push_back(makeCase(10, 200, st, MaskKind::TwoFour, 0, seed++));
        cs.back().name = std::string(nm) + " 2:4";
        cs.push_back(makeCase(10, 200, st, MaskKind::TwoFourSparse, 2, seed++));
        cs.back().name = std::string(nm) + " 2:4 sparser +outliers";
        cs.push_back(makeCase(10, 200, st, MaskKind::Unstructured, 0, seed++));
        cs.back().name = std::string(nm) + " unstructured";
    }
    return cs;
}

const std::vector<Case>& cases() {
    static const std::vector<Case> cs = allCases();
    return cs;
}

bool sameBits(const float* a, const float* b, size_t n) {
    return std::memcmp(a, b, n * sizeof(float)) == 0;
}

/// Rows of a GpuPacked as GpuPacked documents them, in input-column order ([g.rows, g.cols]).
std::vector<float> decodeGpuForm(const GpuPacked& g) {
    std::vector<float> out(size_t(g.rows * g.cols), -123.0f);
    const int zc = g.kind == PackedSource::Kind::Int   ? (g.symmetric ? 1 << (g.bits - 1) : -1)
                   : g.kind == PackedSource::Kind::Nf4 ? 7
                                                       : 0;
    for (int64_t r = 0; r < g.rows; ++r) {
        // 2:4: the slot of every column (-1: none).
        std::vector<int64_t> slotOf(size_t(g.cols), -1);
        for (int64_t j = 0; g.twoFour && j < 2 * ((g.cols + 3) / 4); ++j) {
            const uint32_t i = g.indices[size_t(r * g.idxWords + j / 16)] >> (2 * (j % 16)) & 3u;
            const int64_t k = 4 * (j / 2) + i;
            if (k < g.cols) {
                if (slotOf[size_t(k)] >= 0) return {}; // two slots for one weight
                slotOf[size_t(k)] = j;
            }
        }
        for (int64_t k = 0; k < g.cols; ++k) {
            float v;
            const auto oc = std::find(g.outlierCols.begin(), g.outlierCols.end(), int32_t(k));
            const int64_t pos = g.twoFour ? slotOf[size_t(k)] : k;
            const uint64_t bit = uint64_t(std::max<int64_t>(pos, 0)) * uint64_t(g.bits);
            const uint32_t* w = g.codes.data() + r * g.rowWords;
            uint64_t two = w[bit / 32];
            if (bit / 32 + 1 < uint64_t(g.rowWords)) two |= uint64_t(w[bit / 32 + 1]) << 32;
            const uint32_t u = uint32_t(two >> (bit % 32)) & ((1u << g.bits) - 1);
            if (oc != g.outlierCols.end()) {
                v = f16ToF32(g.outlierValues[size_t(r) * g.outlierCols.size() +
                                             size_t(oc - g.outlierCols.begin())]);
            } else if (!g.mask.empty() &&
                       !(g.mask[size_t(r * g.maskWords + k / 32)] >> (k % 32) & 1u)) {
                v = 0.0f;
            } else if (g.twoFour && (pos < 0 || int(u) == zc)) {
                v = 0.0f;
            } else {
                const size_t gi = size_t(r * g.groupsPerRow + k / g.groupCols);
                const float sc = f16ToF32(g.scales[gi]);
                switch (g.kind) {
                case PackedSource::Kind::Int:
                    v = g.symmetric ? sc * float(int(u) - (1 << (g.bits - 1)))
                                    : sc * (float(u) - f16ToF32(g.zeros[gi]));
                    break;
                case PackedSource::Kind::Nf4:
                    v = sc * nf4Levels()[u];
                    break;
                default:
                    v = sc * e4m3ToF32(uint8_t(u));
                }
            }
            const int64_t c = g.colOrder.empty() ? k : g.colOrder[size_t(k)];
            out[size_t(r * g.cols + c)] = v;
        }
    }
    return out;
}

} // namespace

class TestPackedLinear : public QObject {
    Q_OBJECT
private slots:
    void dequantizeMatchesCompressBitForBit() {
        IsaGuard g;
        for (const Case& c : cases()) {
            const auto pl = PackedLinear::pack(sourceOf(c));
            for (const Variant& v : variants()) {
                v.apply();
                [[maybe_unused]] const Isa isa = v.isa;
                std::vector<float> d(c.ref.size());
                pl->dequantizeRows(0, c.pt.rows, d.data());
                QVERIFY2(sameBits(d.data(), c.ref.data(), d.size()),
                         (c.name + " / " + pl->describe()).c_str());
                std::vector<float> part(size_t(3 * c.pt.cols));
                pl->dequantizeRows(5, 3, part.data());
                QVERIFY2(sameBits(part.data(), c.ref.data() + 5 * c.pt.cols, part.size()),
                         c.name.c_str());
            }
        }
    }

    /// The GPU layout decodes to dequantizeRows() bit for bit: every case, with and without a
    /// column order, whole and for a row range, after the source arrays are gone.
    void gpuFormDecodesExactly() {
        for (const Case& c : cases())
            for (bool ordered : {false, true}) {
                std::unique_ptr<PackedLinear> pl;
                {
                    // Copies of the source arrays that die before gpuForm() runs.
                    Case tmp = c;
                    std::vector<int32_t> order(size_t(c.pt.cols));
                    std::iota(order.begin(), order.end(), 0);
                    std::shuffle(order.begin(), order.end(), std::mt19937(5));
                    PackedSource s = sourceOf(tmp);
                    if (ordered) s.colOrder = order.data();
                    pl = PackedLinear::pack(s);
                    std::fill(tmp.pt.codes.begin(), tmp.pt.codes.end(), uint8_t(0x5A));
                    std::fill(tmp.mask.begin(), tmp.mask.end(), uint8_t(0));
                }
                const std::string what =
                    c.name + (ordered ? " +order" : "") + " / " + pl->describe();
                const int64_t R = pl->rows(), C = pl->cols();
                std::vector<float> want(size_t(R * C));
                pl->dequantizeRows(0, R, want.data());
                const GpuPacked g = pl->gpuForm(0, R);
                QCOMPARE(g.rows, R);
                QCOMPARE(g.colOrder.empty(), !ordered);
                // 2:4 layouts keep their slots; mask bits only where no code reads 0.
                const bool two4 = pl->describe().find("+2:4") != std::string::npos;
                QCOMPARE(g.twoFour, two4);
                QCOMPARE(g.rowWords, ((two4 ? 2 * ((C + 3) / 4) : C) * g.bits + 31) / 32);
                QCOMPARE(g.mask.empty(), c.mask.empty() || g.symmetric || two4);
                const auto got = decodeGpuForm(g);
                QVERIFY2(sameBits(got.data(), want.data(), want.size()), what.c_str());
                const GpuPacked part = pl->gpuForm(2, 5);
                QCOMPARE(part.rows, int64_t(5));
                const auto gotPart = decodeGpuForm(part);
                QVERIFY2(sameBits(gotPart.data(), want.data() + 2 * C, gotPart.size()),
                         what.c_str());
            }
    }

    void layoutChoiceAndSize() {
        using G = compress::Granularity;
        // 2:4 masks become the sparse layout; other masks stay dense.
        for (const Case& c : cases()) {
            const auto pl = PackedLinear::pack(sourceOf(c));
            const bool two4 = c.name.find("2:4") != std::string::npos;
            const bool asymSparser = c.name.find("asym") != std::string::npos &&
                                     c.name.find("sparser") != std::string::npos;
            QCOMPARE(pl->describe().find("+2:4") != std::string::npos, two4 && !asymSparser);
        }
        // bytes(): the packed size, no float copy (int4 g128: 4.125 bits per weight).
        const Case d =
            makeCase(256, 1024, intSettings(4, true, G::Group, 128), MaskKind::None, 0, 7);
        const auto pd = PackedLinear::pack(sourceOf(d));
        const double compressed = double(d.pt.storageBits()) / 8.0;
        QVERIFY2(std::fabs(double(pd->bytes()) / compressed - 1.0) < 0.01,
                 qPrintable(QString("%1 vs %2").arg(pd->bytes()).arg(compressed)));
        // 2:4: half the codes plus 2-bit indices (int4: 3 bits per weight + scales).
        const Case s =
            makeCase(256, 1024, intSettings(4, true, G::Group, 128), MaskKind::TwoFour, 0, 8);
        const auto ps = PackedLinear::pack(sourceOf(s));
        const double expect = 256.0 * 1024 * 3 / 8 + 2.0 * 256 * 8;
        QVERIFY2(std::fabs(double(ps->bytes()) / expect - 1.0) < 0.01,
                 qPrintable(QString("%1 vs %2").arg(ps->bytes()).arg(expect)));
    }

    void exactProductMatchesDoubleReference() {
        IsaGuard g;
        for (const Case& c : cases()) {
            const auto pl = PackedLinear::pack(sourceOf(c));
            const int64_t R = c.pt.rows, C = c.pt.cols;
            for (int64_t nTok : {1, 6}) {
                const auto x = randomActs(nTok, C, uint32_t(nTok * 31 + R));
                std::vector<double> ref, mag;
                reference(c.ref, R, C, x, nTok, ref, mag);
                for (const Variant& v : variants()) {
                    v.apply();
                    const Isa isa = v.isa;
                    const auto y = run(*pl, x, nTok, nullptr, true);
                    for (size_t i = 0; i < y.size(); ++i)
                        QVERIFY2(std::fabs(y[i] - ref[i]) <= 2e-6 * mag[i] + 1e-30,
                                 qPrintable(QString("%1 %2 tok %3: %4 vs %5")
                                                .arg(c.name.c_str(), isaName(isa))
                                                .arg(nTok)
                                                .arg(y[i])
                                                .arg(ref[i])));
                }
            }
        }
    }

    void blockQuantisedActivationsWithinBound() {
        // Not exact: activations in 8-bit blocks of <= 256 columns. Each activation moves by at
        // most max|x| / 254 of its block, so |y - ref| <= Σ_c |w_c| · max|x| / 254.
        IsaGuard g;
        for (const Case& c : cases()) {
            const auto pl = PackedLinear::pack(sourceOf(c));
            const int64_t R = c.pt.rows, C = c.pt.cols, nTok = 5;
            const auto x = randomActs(nTok, C, 99);
            std::vector<double> ref, mag;
            reference(c.ref, R, C, x, nTok, ref, mag);
            std::vector<float> first;
            for (const Variant& v : variants()) {
                v.apply();
                [[maybe_unused]] const Isa isa = v.isa;
                const auto y = run(*pl, x, nTok, nullptr, false);
                for (int64_t t = 0; t < nTok; ++t) {
                    double xmax = 0;
                    for (int64_t k = 0; k < C; ++k)
                        xmax = std::max(xmax, double(std::fabs(x[size_t(t * C + k)])));
                    for (int64_t r = 0; r < R; ++r) {
                        double wsum = 0;
                        for (int64_t k = 0; k < C; ++k) wsum += std::fabs(c.ref[size_t(r * C + k)]);
                        const size_t i = size_t(t * R + r);
                        QVERIFY2(std::fabs(y[i] - ref[i]) <=
                                     wsum * xmax / 254.0 * 1.001 + 1e-5 * mag[i],
                                 qPrintable(QString("%1 %2: %3 vs %4")
                                                .arg(c.name.c_str(), isaName(isa))
                                                .arg(y[i])
                                                .arg(ref[i])));
                    }
                }
                // Integer products are exact: every instruction set gives the portable result.
                if (first.empty())
                    first = y;
                else if (pl->describe().find("nf4") == std::string::npos &&
                         pl->describe().find("fp8") == std::string::npos &&
                         c.name.find("unstructured") == std::string::npos &&
                         !(c.name.find("asym") != std::string::npos &&
                           c.name.find("2:4") != std::string::npos))
                    QVERIFY2(sameBits(first.data(), y.data(), y.size()),
                             (c.name + " " + isaName(isa)).c_str());
            }
        }
    }

    void activationQuantisationMatchesFakeQuant() {
        // W8A8 / W4A8 / A4 (integer GEMMs), per token and static per tensor, with outlier
        // channels; A12 falls back to fake-quantised floats. Reference: fakeQuantizeActivations
        // then the float product (double).
        IsaGuard g;
        std::vector<ActQuantSpec> specs(5);
        specs[0].bits = 8;
        specs[1].bits = 8, specs[1].clip = 0.9f, specs[1].outlierChannels = {2, 50, 51, 500};
        specs[2].bits = 8, specs[2].perToken = false, specs[2].absMax = 3.0f,
        specs[2].outlierChannels = {2};
        specs[3].bits = 4, specs[3].outlierChannels = {2};
        specs[4].bits = 12;
        for (const Case& c : cases()) {
            const auto pl = PackedLinear::pack(sourceOf(c));
            const int64_t R = c.pt.rows, C = c.pt.cols, nTok = 4;
            const auto x = randomActs(nTok, C, 5);
            for (const ActQuantSpec& a : specs) {
                std::vector<float> xq(x.size());
                runtime::fakeQuantizeActivations(a, x.data(), C, xq.data(), C, nTok, C, 1);
                std::vector<double> ref, mag;
                reference(c.ref, R, C, xq, nTok, ref, mag);
                std::vector<float> first;
                for (const Variant& v : variants()) {
                    v.apply();
                    const Isa isa = v.isa;
                    for (bool exact : {false, true}) {
                        const auto y = run(*pl, x, nTok, &a, exact);
                        for (size_t i = 0; i < y.size(); ++i)
                            QVERIFY2(std::fabs(y[i] - ref[i]) <= 2e-6 * mag[i] + 1e-30,
                                     qPrintable(QString("%1 %2 a%3: %4 vs %5")
                                                    .arg(c.name.c_str(), isaName(isa))
                                                    .arg(a.bits)
                                                    .arg(y[i])
                                                    .arg(ref[i])));
                        if (first.empty())
                            first = y;
                        else if (c.pt.settings.format == compress::WeightFormat::Int &&
                                 a.bits <= 8 && c.name.find("unstructured") == std::string::npos &&
                                 !(c.name.find("asym") != std::string::npos &&
                                   c.name.find("2:4") != std::string::npos))
                            QVERIFY2(sameBits(first.data(), y.data(), y.size()),
                                     (c.name + " " + isaName(isa)).c_str());
                    }
                }
            }
        }
    }

    void resultsDoNotDependOnBatchOrRows() {
        IsaGuard g;
        ActQuantSpec a8;
        a8.bits = 8;
        a8.outlierChannels = {7};
        for (const Case& c : cases()) {
            const auto pl = PackedLinear::pack(sourceOf(c));
            // 18 tokens: the integer kernels' prefill path (codes unpacked once per tile, from
            // 16 tokens on) against the one-token decode kernels.
            const int64_t R = c.pt.rows, C = c.pt.cols, nTok = 18;
            const auto x = randomActs(nTok, C, 17);
            for (const Variant& v : variants()) {
                v.apply();
                [[maybe_unused]] const Isa isa = v.isa;
                for (int mode = 0; mode < 3; ++mode) {
                    const ActQuantSpec* act = mode == 2 ? &a8 : nullptr;
                    const bool exact = mode == 0;
                    const auto all = run(*pl, x, nTok, act, exact);
                    for (int64_t t = 0; t < nTok; ++t) {
                        const std::vector<float> one(x.begin() + t * C, x.begin() + (t + 1) * C);
                        const auto y1 = run(*pl, one, 1, act, exact);
                        QVERIFY2(
                            sameBits(y1.data(), all.data() + t * R, size_t(R)),
                            (c.name + " token " + std::to_string(t) + " " + isaName(isa)).c_str());
                    }
                    for (auto [r0, n] : {std::pair<int64_t, int64_t>{4, 4}, {1, 5}, {2, R - 2}}) {
                        const auto part = run(*pl, x, nTok, act, exact, r0, n);
                        for (int64_t t = 0; t < nTok; ++t)
                            QVERIFY2(
                                sameBits(part.data() + t * n, all.data() + t * R + r0, size_t(n)),
                                (c.name + " rows " + std::to_string(r0)).c_str());
                    }
                }
            }
        }
    }

    void largerShapesAllIsas() {
        // Several units per group and panels, prefill-sized token tiles: every ISA against the
        // double reference (exact) and against the portable integer result (bit for bit).
        using G = compress::Granularity;
        IsaGuard g;
        const std::pair<compress::WeightSettings, MaskKind> cfg[] = {
            {intSettings(4, true, G::Group, 128), MaskKind::None},
            {intSettings(8, true, G::Channel), MaskKind::None},
            {intSettings(4, true, G::Group, 128), MaskKind::TwoFour},
            {intSettings(8, true, G::Channel), MaskKind::TwoFour},
            {intSettings(5, false, G::Group, 256), MaskKind::None}};
        ActQuantSpec a8;
        a8.bits = 8;
        for (auto [st, mk] : cfg) {
            const Case c = makeCase(64, 1088, st, mk, 0, 3);
            const auto pl = PackedLinear::pack(sourceOf(c));
            const int64_t R = 64, C = 1088, nTok = 19;
            const auto x = randomActs(nTok, C, 4);
            std::vector<double> ref, mag;
            reference(c.ref, R, C, x, nTok, ref, mag);
            std::vector<float> firstW, firstA;
            for (const Variant& v : variants()) {
                v.apply();
                [[maybe_unused]] const Isa isa = v.isa;
                const auto y = run(*pl, x, nTok, nullptr, true);
                for (size_t i = 0; i < y.size(); ++i)
                    QVERIFY(std::fabs(y[i] - ref[i]) <= 2e-6 * mag[i] + 1e-30);
                const auto yw = run(*pl, x, nTok, nullptr, false);
                const auto ya = run(*pl, x, nTok, &a8, false);
                if (firstW.empty()) {
                    firstW = yw, firstA = ya;
                } else {
                    QVERIFY2(sameBits(firstW.data(), yw.data(), yw.size()), pl->describe().c_str());
                    QVERIFY2(sameBits(firstA.data(), ya.data(), ya.size()), pl->describe().c_str());
                }
            }
        }
    }

    void intActOnModelShapes() {
        // The W4A8 recipe's shapes on the demo model (64 and 172 columns: tail groups of g32 and
        // partial units), prefill and decode token counts, a8 and a4 with clip: every ISA against
        // fakeQuantizeActivations then the double product.
        using G = compress::Granularity;
        IsaGuard g;
        std::vector<ActQuantSpec> specs(3);
        specs[0].bits = 8;
        specs[1].bits = 4, specs[1].clip = 0.9f;
        specs[2].bits = 8, specs[2].clip = 0.9f, specs[2].outlierChannels = {2, 40};
        uint32_t seed = 40;
        for (auto [R, C] : {std::pair<int64_t, int64_t>{64, 64}, {172, 64}, {64, 172}})
            for (auto st : {intSettings(4, true, G::Group, 32), intSettings(4, false, G::Group, 32),
                            intSettings(8, true, G::Channel)}) {
                const Case c = makeCase(R, C, st, MaskKind::None, 0, seed++);
                const auto pl = PackedLinear::pack(sourceOf(c));
                for (int64_t nTok : {1, 5, 40}) {
                    const auto x = randomActs(nTok, C, seed++);
                    for (const ActQuantSpec& a : specs) {
                        std::vector<float> xq(x.size());
                        runtime::fakeQuantizeActivations(a, x.data(), C, xq.data(), C, nTok, C, 1);
                        std::vector<double> ref, mag;
                        reference(c.ref, R, C, xq, nTok, ref, mag);
                        for (const Variant& v : variants()) {
                            v.apply();
                            // whole, and in tiles of 4 and 12 rows as linearBatch splits them
                            std::vector<float> y = run(*pl, x, nTok, &a, true);
                            for (int64_t tile : {4, 12}) {
                                std::vector<std::byte> prep(pl->preparedBytes(nTok, &a, true));
                                pl->prepare(x.data(), C, nTok, &a, true, prep.data());
                                std::vector<float> yt(y.size(), -7.0f);
                                for (int64_t r0 = 0; r0 < R; r0 += tile)
                                    pl->gemm(r0, std::min(tile, R - r0), prep.data(), nTok, &a,
                                             true, yt.data() + r0, R);
                                QVERIFY2(sameBits(yt.data(), y.data(), y.size()),
                                         qPrintable(QString("tiles of %1 rows").arg(tile)));
                            }
                            for (size_t i = 0; i < y.size(); ++i)
                                QVERIFY2(std::fabs(y[i] - ref[i]) <= 2e-6 * mag[i] + 1e-30,
                                         qPrintable(QString("%1x%2 %3 nTok %4 a%5 %6 vnni %7: "
                                                            "y[%8] %9 vs %10")
                                                        .arg(R)
                                                        .arg(C)
                                                        .arg(pl->describe().c_str())
                                                        .arg(nTok)
                                                        .arg(a.bits)
                                                        .arg(isaName(v.isa))
                                                        .arg(v.vnni)
                                                        .arg(i)
                                                        .arg(y[i])
                                                        .arg(ref[i])));
                        }
                    }
                }
            }
    }

    void fp8NanCodesStayNan() {
        // e4m3fn has NaN codes (0x7F, 0xFF): read as NaN, and a product over them is NaN.
        IsaGuard g;
        compress::WeightSettings fp8;
        fp8.format = compress::WeightFormat::Fp8E4M3, fp8.bits = 8,
        fp8.granularity = compress::Granularity::Channel;
        Case c = makeCase(8, 96, fp8, MaskKind::None, 0, 3);
        c.pt.codes[size_t(1 * 96 + 5)] = 0x7F;
        c.pt.codes[size_t(6 * 96 + 70)] = 0xFF;
        c.ref = compress::dequantize(c.pt, "w");
        const auto pl = PackedLinear::pack(sourceOf(c));
        const auto x = randomActs(2, 96, 8);
        for (const Variant& v : variants()) {
            v.apply();
            std::vector<float> d(c.ref.size());
            pl->dequantizeRows(0, 8, d.data());
            QVERIFY(sameBits(d.data(), c.ref.data(), d.size()));
            const auto y = run(*pl, x, 2, nullptr, true);
            for (int64_t t = 0; t < 2; ++t)
                for (int64_t r = 0; r < 8; ++r)
                    QCOMPARE(std::isnan(y[size_t(t * 8 + r)]), r == 1 || r == 6);
        }
    }

    void nonFiniteActivationsGiveNonFiniteOutputs() {
        // A NaN or infinite activation makes its token's outputs non-finite in every mode (as
        // the fake-quantised reference does) and leaves the other tokens alone.
        using G = compress::Granularity;
        IsaGuard g;
        const Case c = makeCase(8, 200, intSettings(4, true, G::Group, 64), MaskKind::None, 1, 5);
        const auto pl = PackedLinear::pack(sourceOf(c));
        auto x = randomActs(3, 200, 6);
        x[size_t(0 * 200 + 17)] = std::numeric_limits<float>::quiet_NaN();
        x[size_t(2 * 200 + 150)] = std::numeric_limits<float>::infinity();
        ActQuantSpec a8;
        a8.bits = 8;
        for (const Variant& v : variants()) {
            v.apply();
            for (int mode = 0; mode < 3; ++mode) {
                const auto y = run(*pl, x, 3, mode == 2 ? &a8 : nullptr, mode == 0);
                const std::vector<float> mid(x.begin() + 200, x.begin() + 400);
                const auto y1 = run(*pl, mid, 1, mode == 2 ? &a8 : nullptr, mode == 0);
                for (int64_t r = 0; r < 8; ++r) {
                    QVERIFY(!std::isfinite(y[size_t(r)]));
                    QVERIFY(!std::isfinite(y[size_t(16 + r)]));
                }
                QVERIFY(sameBits(y.data() + 8, y1.data(), 8));
            }
        }
    }

    void linearBatchSharesPreparation() {
        using G = compress::Granularity;
        const Case a =
            makeCase(12, 256, intSettings(4, true, G::Group, 128), MaskKind::None, 0, 21);
        const Case b =
            makeCase(20, 256, intSettings(4, true, G::Group, 128), MaskKind::None, 0, 22);
        const Case c = makeCase(8, 256, intSettings(4, true, G::Group, 64), MaskKind::None, 0, 23);
        const auto pa = PackedLinear::pack(sourceOf(a)), pb = PackedLinear::pack(sourceOf(b)),
                   pc = PackedLinear::pack(sourceOf(c));
        QVERIFY(pa->sharesPreparation(*pb));
        QVERIFY(!pa->sharesPreparation(*pc));
        const int64_t nTok = 3;
        const auto x = randomActs(nTok, 256, 1);
        ActQuantSpec a8;
        a8.bits = 8;
        std::vector<float> ya(size_t(nTok * 12)), yb(size_t(nTok * 20)), yc(size_t(nTok * 8));
        LinearJob jobs[3];
        jobs[0].packed = pa.get(), jobs[0].y = ya.data(), jobs[0].ldy = 12, jobs[0].act = &a8;
        jobs[1].packed = pb.get(), jobs[1].y = yb.data(), jobs[1].ldy = 20, jobs[1].act = &a8;
        jobs[2].packed = pc.get(), jobs[2].y = yc.data(), jobs[2].ldy = 8, jobs[2].act = &a8;
        linearBatch(jobs, x.data(), 256, nTok, 2, false);
        QVERIFY(sameBits(ya.data(), run(*pa, x, nTok, &a8, false).data(), ya.size()));
        QVERIFY(sameBits(yb.data(), run(*pb, x, nTok, &a8, false).data(), yb.size()));
        QVERIFY(sameBits(yc.data(), run(*pc, x, nTok, &a8, false).data(), yc.size()));
    }

    void rejectsBadSources() {
        using G = compress::Granularity;
        const Case c = makeCase(4, 64, intSettings(4, false, G::Group, 32), MaskKind::None, 2, 1);
        auto expectThrow = [&](auto mutate) {
            PackedSource s = sourceOf(c);
            mutate(s);
            bool threw = false;
            try {
                PackedLinear::pack(s);
            } catch (const ArgumentError& e) {
                threw = std::string(e.what()).find("'w'") != std::string::npos;
            }
            return threw;
        };
        QVERIFY(expectThrow([](PackedSource& s) { s.codeBytes -= 1; }));
        QVERIFY(expectThrow([](PackedSource& s) { s.nScales -= 1; }));
        QVERIFY(expectThrow([](PackedSource& s) { s.zeros = nullptr; }));
        QVERIFY(expectThrow([](PackedSource& s) { s.bits = 9; }));
        QVERIFY(expectThrow([](PackedSource& s) { s.group = 0; }));
        QVERIFY(expectThrow([](PackedSource& s) { s.rows = 0; }));
        std::vector<int32_t> bad = {5, 5};
        QVERIFY(expectThrow([&](PackedSource& s) { s.outlierCols = bad.data(); }));
    }
};

QTEST_GUILESS_MAIN(TestPackedLinear)
#include "test_packed_linear.moc"
