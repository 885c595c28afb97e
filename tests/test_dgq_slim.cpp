// DGQ and SliM-LLM (core/compress/compact_formats.h) against double-precision implementations
// of the papers' procedures written here without lcw's code: DGQ's two-phase grid search
// (group scales, then an f16 channel scale whose 8-bit multiples give the group scales), and
// SliM-LLM's salience-driven bit allocation (salience w² / [H⁻¹]²_jj summed per column group,
// the most salient groups wider, the allocation with the least output error kept). Properties:
// DGQ's dequantised scales are code × channel scale; SliM's average bits equal the target and
// more salient groups never get fewer bits; sizes exact; the overlay round-trips.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/compress/compact_formats.h"
#include "core/compress/compressed_model.h"
#include "core/compress/gptq.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/compress/smoothquant.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core_test_util.h"
#include "gptq_reference.h"
#include "test_util.h"

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using gptqref::randomGram;
using gptqref::randomWeights;

uint32_t bitsAt(const uint8_t* row, uint64_t bit, int b) {
    uint32_t u = 0;
    for (int i = 0; i < b; ++i) u |= uint32_t((row[(bit + i) / 8] >> ((bit + i) % 8)) & 1u) << i;
    return u;
}

WeightSettings dgqSettings(int bits, bool sym, int64_t g) {
    WeightSettings s;
    s.method = WeightMethod::Dgq;
    s.bits = bits;
    s.symmetric = sym;
    s.granularity = Granularity::Group;
    s.groupSize = g;
    return s;
}

WeightSettings slimSettings(double avg, int64_t g) {
    WeightSettings s;
    s.method = WeightMethod::Slim;
    s.bits = 4;
    s.symmetric = false;
    s.avgBits = avg;
    s.granularity = Granularity::Group;
    s.groupSize = g;
    return s;
}

/// DGQ reference in double: the dequantised row (w = S2·s1·(u − z)) and the scale codes.
struct DgqRef {
    std::vector<double> value;
    std::vector<int> s2;
    uint16_t s1 = 0;
    int beta = 0; ///< the β candidate chosen (0: β = 1)
};
DgqRef refDgqRow(const float* w, int64_t cols, int64_t g, int bits, bool sym) {
    const int umax = (1 << bits) - 1, umin = sym ? 1 : 0, half = 1 << (bits - 1);
    auto enc = [&](double x, double sc, int z) {
        return sc > 0 ? std::clamp(int(std::nearbyint(x / sc)) + z, umin, umax) : z;
    };
    const int64_t G = (cols + g - 1) / g;
    std::vector<double> sp(static_cast<size_t>(G));
    std::vector<int> zp(static_cast<size_t>(G));
    for (int64_t gi = 0; gi < G; ++gi) { // phase 1: the group's shrunk range
        const int64_t j0 = gi * g, j1 = std::min(cols, j0 + g);
        double lo = 0, hi = 0;
        for (int64_t j = j0; j < j1; ++j)
            lo = std::min(lo, double(w[j])), hi = std::max(hi, double(w[j]));
        double best = INFINITY;
        for (int a = 0; a <= 10; ++a) {
            const double al = 1.0 - 0.05 * a;
            const double sc = sym ? al * std::max(-lo, hi) / (half - 1) : al * (hi - lo) / umax;
            const int z =
                sym ? half : (sc > 0 ? std::clamp(int(std::nearbyint(-al * lo / sc)), 0, umax) : 0);
            double e = 0;
            for (int64_t j = j0; j < j1; ++j) e += std::pow(w[j] - sc * (enc(w[j], sc, z) - z), 2);
            if (e < best) best = e, sp[size_t(gi)] = sc, zp[size_t(gi)] = z;
        }
    }
    const double smax = *std::max_element(sp.begin(), sp.end());
    DgqRef r;
    double best = INFINITY;
    for (int b = 0; b <= 10; ++b) { // phase 2: the channel scale
        uint16_t h = f32ToF16(float((1.0 - 0.05 * b) * smax / 255.0));
        if (!(f16ToF32(h) > 0)) h = 1;
        const double s1 = f16ToF32(h);
        DgqRef c;
        c.s1 = h;
        c.beta = b;
        double e = 0;
        for (int64_t gi = 0; gi < G; ++gi)
            c.s2.push_back(std::clamp(int(std::nearbyint(sp[size_t(gi)] / s1)), 1, 255));
        for (int64_t j = 0; j < cols; ++j) {
            const double sc = s1 * c.s2[size_t(j / g)];
            const int z = zp[size_t(j / g)];
            c.value.push_back(sc * (enc(w[j], sc, z) - z));
            e += std::pow(w[j] - c.value.back(), 2);
        }
        if (e < best) best = e, r = c;
    }
    return r;
}

/// lcw's asymmetric RTN grid of one group at b bits (f16 scale rounded up, integer zero point),
/// the dequantised values.
void refRtnGroup(const float* x, int64_t n, int b, float* out) {
    float mn = x[0], mx = x[0];
    for (int64_t j = 1; j < n; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
    mn = std::min(mn, 0.0f), mx = std::max(mx, 0.0f);
    const float qmax = float((1 << b) - 1);
    uint16_t h = f32ToF16((mx - mn) / qmax);
    if (f16ToF32(h) < (mx - mn) / qmax) ++h;
    const float sc = f16ToF32(h);
    const float z = sc > 0 ? std::clamp(std::nearbyint(-mn / sc), 0.0f, qmax) : 0.0f;
    for (int64_t j = 0; j < n; ++j) {
        const float q = sc > 0 ? std::clamp(std::nearbyint(x[j] / sc) + z, 0.0f, qmax) : z;
        out[j] = sc * (q - z);
    }
}

/// SliM-LLM reference: salience, every feasible allocation, the least tr(ΔHΔᵀ).
std::vector<int> refSlimBits(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t g,
                             const std::vector<double>& Hv, double avg,
                             std::vector<double>& salOut) {
    Eigen::MatrixXd H = Eigen::Map<const Eigen::MatrixXd>(Hv.data(), cols, cols);
    H.diagonal().array() += 0.01 * H.diagonal().mean();
    const Eigen::MatrixXd Hi = H.inverse();
    const int64_t G = cols / g;
    std::vector<double> sal(size_t(G), 0.0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            sal[size_t(j / g)] += std::pow(w[size_t(r * cols + j)], 2) / std::pow(Hi(j, j), 2);
    salOut = sal;
    std::vector<int64_t> ord(static_cast<size_t>(G));
    std::iota(ord.begin(), ord.end(), int64_t(0));
    std::stable_sort(ord.begin(), ord.end(), [&](int64_t a, int64_t b) { return sal[a] > sal[b]; });
    const int64_t T = std::llround(avg * double(G));
    std::vector<int> best;
    double bestE = INFINITY;
    for (int64_t n4 = 0; n4 <= G; ++n4) {
        const int64_t n3 = T - 2 * G - 2 * n4;
        if (n3 < 0 || G - n3 - n4 < 0) continue;
        std::vector<int> bits(size_t(G), 2);
        for (int64_t i = 0; i < n4 + n3; ++i) bits[size_t(ord[size_t(i)])] = i < n4 ? 4 : 3;
        Eigen::MatrixXd D(rows, cols);
        std::vector<float> q(static_cast<size_t>(g));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t gi = 0; gi < G; ++gi) {
                refRtnGroup(&w[size_t(r * cols + gi * g)], g, bits[size_t(gi)], q.data());
                for (int64_t j = 0; j < g; ++j)
                    D(r, gi * g + j) = double(w[size_t(r * cols + gi * g + j)]) - q[size_t(j)];
            }
        const Eigen::Map<const Eigen::MatrixXd> H0(Hv.data(), cols, cols);
        const double e = (D * H0 * D.transpose()).trace();
        if (e < bestE) bestE = e, best = bits;
    }
    return best;
}

Recipe recipeWith(json weight, json activation = nullptr) {
    json rule = {{"targets", {"*"}}, {"weight", std::move(weight)}};
    if (!activation.is_null()) rule["activation"] = activation;
    return Recipe::fromJson({{"lcw_recipe", 1}, {"name", "t"}, {"rules", json::array({rule})}});
}

} // namespace

class TestDgqSlim : public QObject {
    Q_OBJECT
private slots:
    void dgqMatchesReference() {
        const int64_t rows = 24, cols = 80;
        std::vector<float> w = randomWeights(rows * cols, 7);
        // Groups of very different magnitude in most rows: coarse 8-bit scale codes for the
        // quiet groups, so that the channel-scale search has something to choose.
        std::mt19937 gen(17);
        std::uniform_real_distribution<float> mag(-2.5f, 0.0f);
        for (int64_t r = 4; r < rows; ++r)
            for (int64_t j0 = 0; j0 < cols; j0 += 16) {
                const float f = std::pow(10.0f, mag(gen));
                for (int64_t j = j0; j < j0 + 16; ++j) w[size_t(r * cols + j)] *= f;
            }
        int betaBelowOne = 0;
        for (bool sym : {false, true})
            for (int64_t g : {16, 32}) { // 32: a shorter last group
                const PackedTensor p =
                    dgqQuantize(w.data(), rows, cols, dgqSettings(4, sym, g), nullptr, "t");
                const std::vector<float> dq = dequantize(p, "t");
                const int64_t G = (cols + g - 1) / g;
                for (int64_t r = 0; r < rows; ++r) {
                    const DgqRef ref = refDgqRow(&w[size_t(r * cols)], cols, g, 4, sym);
                    betaBelowOne += ref.beta > 0;
                    QCOMPARE(p.scales[size_t(r)], ref.s1);
                    for (int64_t gi = 0; gi < G; ++gi)
                        QCOMPARE(int(p.groupCodes[size_t((r * G + gi) * (sym ? 1 : 2))]),
                                 ref.s2[size_t(gi)]);
                    for (int64_t j = 0; j < cols; ++j)
                        QCOMPARE(double(dq[size_t(r * cols + j)]), ref.value[size_t(j)]);
                }
            }
        QVERIFY2(betaBelowOne > 0, "no row exercised the channel-scale search");
    }

    void dgqScalesAreCodeTimesChannelScale() {
        const int64_t rows = 9, cols = 96, g = 32;
        const std::vector<float> w = randomWeights(rows * cols, 21);
        const PackedTensor p =
            dgqQuantize(w.data(), rows, cols, dgqSettings(4, false, g), nullptr, "t");
        const std::vector<float> dq = dequantize(p, "t");
        const uint64_t rb = (cols * 4 + 7) / 8;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t gi = 0; gi < cols / g; ++gi) {
                const uint8_t s2 = p.groupCodes[size_t((r * 3 + gi) * 2)];
                const uint8_t z = p.groupCodes[size_t((r * 3 + gi) * 2 + 1)];
                QVERIFY(s2 >= 1);
                QVERIFY(z < 16);
                const float scale = dgqGroupScale(p, r, gi);
                QCOMPARE(scale, float(s2) * f16ToF32(p.scales[size_t(r)]));
                for (int64_t j = gi * g; j < (gi + 1) * g; ++j) {
                    const int u = int(bitsAt(p.codes.data() + r * rb, uint64_t(j) * 4, 4));
                    QCOMPARE(dq[size_t(r * cols + j)], scale * float(u - int(z)));
                }
            }
        // int4 codes + f16 channel scale + 8-bit scale code and zero point per group.
        const uint64_t bits = rows * rb * 8 + 16 * rows + 16 * rows * (cols / g);
        QCOMPARE(p.storageBits(), bits);
        QCOMPARE(packedStorageBits(rows, cols, dgqSettings(4, false, g)), bits);
        // Dual grain costs little against plain int4 g32 (f16 scale and zero per group).
        WeightSettings rtn = dgqSettings(4, false, g);
        rtn.method = WeightMethod::Rtn;
        const PackedTensor pr = quantize(w.data(), rows, cols, rtn, "t");
        QVERIFY(p.storageBits() < pr.storageBits());
    }

    void slimMatchesReference() {
        const int64_t rows = 8, cols = 96, g = 16;
        const std::vector<float> w = randomWeights(rows * cols, 4);
        const std::vector<double> H = randomGram(cols, 9);
        for (double avg : {2.5, 3.0, 3.5}) {
            const PackedTensor p =
                slimQuantize(w.data(), rows, cols, slimSettings(avg, g), H.data(), nullptr, "t");
            std::vector<double> sal;
            const std::vector<int> ref = refSlimBits(w, rows, cols, g, H, avg, sal);
            QCOMPARE(int64_t(p.groupCodes.size()), cols / g);
            for (int64_t gi = 0; gi < cols / g; ++gi)
                QCOMPARE(int(p.groupCodes[size_t(gi)]), ref[size_t(gi)]);
            // The values are RTN at each group's bits.
            const std::vector<float> dq = dequantize(p, "t");
            std::vector<float> q(static_cast<size_t>(g));
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t gi = 0; gi < cols / g; ++gi) {
                    refRtnGroup(&w[size_t(r * cols + gi * g)], g, ref[size_t(gi)], q.data());
                    for (int64_t j = 0; j < g; ++j)
                        QCOMPARE(dq[size_t(r * cols + gi * g + j)], q[size_t(j)]);
                }
            const std::vector<double> mine =
                slimGroupSalience(w.data(), rows, cols, g, H.data(), nullptr);
            for (size_t i = 0; i < sal.size(); ++i)
                QVERIFY(std::fabs(mine[i] - sal[i]) <= 1e-9 * sal[i]);
        }
    }

    void slimGptqMatchesReference() {
        // SliM-LLM's GPTQ step: the reference fasterquant (gptq_reference.h, double) with each
        // column group at the width SliM's allocation gave it; same codes, scales and zeros.
        const int64_t rows = 8, cols = 96, g = 16;
        const std::vector<float> w = randomWeights(rows * cols, 4);
        const std::vector<double> H = randomGram(cols, 9);
        const Eigen::MatrixXd Hm = Eigen::Map<const Eigen::MatrixXd>(H.data(), cols, cols);
        auto outputError = [&](const std::vector<float>& dq) {
            Eigen::MatrixXd D(rows, cols);
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t j = 0; j < cols; ++j)
                    D(r, j) = double(w[size_t(r * cols + j)]) - double(dq[size_t(r * cols + j)]);
            return (D * Hm).cwiseProduct(D).sum();
        };
        int cases = 0;
        for (const double avg : {2.5, 3.0})
            for (const int64_t bs : {int64_t(32), int64_t(128)})
                for (const bool updated : {false, true}) {
                    const WeightSettings s = slimSettings(avg, g);
                    const std::vector<uint8_t> alloc =
                        slimChooseAllocation(w.data(), rows, cols, s, H.data(), nullptr, "t");
                    GptqOptions o;
                    o.blockSize = bs;
                    if (updated) o.groups = GptqGroups::Updated;
                    const GptqResult res =
                        gptqQuantizeSlim(w.data(), rows, cols, H.data(), s, alloc, o, "t");
                    QVERIFY(res.packed.groupCodes == alloc);
                    QCOMPARE(res.packed.storageBits(), packedStorageBits(rows, cols, s));
                    const std::vector<float> dq = dequantize(res.packed, "t");
                    const PackedTensor rtn =
                        slimQuantize(w.data(), rows, cols, s, H.data(), nullptr, "t");
                    QVERIFY(rtn.groupCodes == alloc);
                    QVERIFY(outputError(dq) < outputError(dequantize(rtn, "t")));
                    if (updated) { // grids from updated weights: not the reference's timing
                        ++cases;
                        continue;
                    }
                    const gptqref::RefOut ref =
                        gptqref::fasterquant(w, rows, cols, Hm, 4, false, bs, 0.01, g, false, false,
                                             std::vector<int>(alloc.begin(), alloc.end()));
                    int64_t diff = 0;
                    for (int64_t i = 0; i < rows * cols; ++i) {
                        const float v = f16ToF32(ref.scale[size_t(i)]) *
                                        (float(ref.code[size_t(i)]) - ref.zero[size_t(i)]);
                        const int bits = alloc[size_t((i % cols) / g)];
                        QVERIFY(ref.code[size_t(i)] < (1u << bits));
                        diff += dq[size_t(i)] != v;
                    }
                    QCOMPARE(diff, int64_t(0));
                    ++cases;
                }
        QCOMPARE(cases, 8);
        // Wrong allocations are refused.
        GptqOptions o;
        const WeightSettings s = slimSettings(3.0, g);
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 gptqQuantizeSlim(w.data(), rows, cols, H.data(), s,
                                                  std::vector<uint8_t>(5, 3), o, "t"));
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 gptqQuantizeSlim(w.data(), rows, cols, H.data(), s,
                                                  std::vector<uint8_t>(6, 5), o, "t"));
    }

    void slimSqcMatchesReference() {
        // SliM-LLM's SQC (the reference's mixed_quantizer.py Quantizer.fit): every group grid is
        // the asymmetric grid of the range scaled by the best p in [0.9, 1.1] under the
        // salience-weighted |error|^2.4; against the double port in gptq_reference.h, at the
        // reference's lambda 1 and at lambda 8 (salient errors weigh more), block sizes equal
        // to the group and larger.
        const int64_t rows = 8, cols = 96, g = 16;
        const std::vector<float> w = randomWeights(rows * cols, 6);
        const std::vector<double> H = randomGram(cols, 13);
        const Eigen::MatrixXd Hm = Eigen::Map<const Eigen::MatrixXd>(H.data(), cols, cols);
        const WeightSettings s = slimSettings(3.0, g);
        const std::vector<uint8_t> alloc =
            slimChooseAllocation(w.data(), rows, cols, s, H.data(), nullptr, "t");
        GptqOptions o;
        const GptqResult plain = gptqQuantizeSlim(w.data(), rows, cols, H.data(), s, alloc, o, "t");
        int cases = 0;
        for (const double lambda : {1.0, 8.0})
            for (const int64_t bs : {g, int64_t(128)}) {
                o.blockSize = bs;
                SlimSqc sqc;
                sqc.enabled = true;
                sqc.lambda = lambda;
                const GptqResult res =
                    gptqQuantizeSlim(w.data(), rows, cols, H.data(), s, alloc, o, "t", sqc);
                QCOMPARE(res.packed.storageBits(), packedStorageBits(rows, cols, s));
                const std::vector<float> dq = dequantize(res.packed, "t");
                const gptqref::RefOut ref = gptqref::fasterquant(
                    w, rows, cols, Hm, 4, false, bs, 0.01, g, false, false,
                    std::vector<int>(alloc.begin(), alloc.end()), 0, nullptr, lambda);
                int64_t diff = 0;
                for (int64_t i = 0; i < rows * cols; ++i) {
                    const float v = f16ToF32(ref.scale[size_t(i)]) *
                                    (float(ref.code[size_t(i)]) - ref.zero[size_t(i)]);
                    diff += dq[size_t(i)] != v;
                }
                QCOMPARE(diff, int64_t(0));
                // The search moved some grids away from the plain range (p = 1).
                int64_t moved = 0;
                for (size_t i = 0; i < res.packed.scales.size(); ++i)
                    moved += res.packed.scales[i] != plain.packed.scales[i];
                QVERIFY2(moved > 0, "SQC chose p = 1 everywhere");
                ++cases;
            }
        QCOMPARE(cases, 4);
        SlimSqc bad;
        bad.enabled = true;
        bad.lambda = -1;
        QVERIFY_THROWS_EXCEPTION(
            ArgumentError, gptqQuantizeSlim(w.data(), rows, cols, H.data(), s, alloc, o, "t", bad));
    }

    void dgqPercentileSmoothing() {
        // DGQ's percentile clipping smoothing (ilur98/DGQ smooth.py): the k = int(0.005 C + 1.5)
        // -th largest activation range is the baseline; louder channels are scaled down to it.
        auto reference = [](const std::vector<float>& a) {
            std::vector<double> sorted(a.begin(), a.end());
            std::sort(sorted.begin(), sorted.end());
            const size_t k = size_t(double(a.size()) * 0.005 + 1.5);
            const double b = sorted[sorted.size() - k];
            std::vector<float> s(a.size(), 1.0f);
            if (b < 1e-4) return s;
            for (size_t j = 0; j < a.size(); ++j)
                if (a[j] > b) s[j] = float(double(a[j]) / b);
            return s;
        };
        std::mt19937 g(3);
        std::uniform_real_distribution<float> u(0.1f, 2.0f);
        for (const size_t C : {size_t(64), size_t(128), size_t(1000), size_t(4096)}) {
            std::vector<float> a(C);
            for (auto& v : a) v = u(g);
            for (size_t j = 0; j < C; j += 97) a[j] *= 40.0f; // loud channels
            const std::vector<float> s =
                smoothQuantScales(a, {}, {}, int64_t(C), 0.0, SmoothQuantRule::Percentile);
            const std::vector<float> want = reference(a);
            for (size_t j = 0; j < C; ++j) QVERIFY(std::fabs(s[j] - want[j]) <= 1e-6f * want[j]);
            const auto scaled = std::count_if(s.begin(), s.end(), [](float v) { return v > 1; });
            QCOMPARE(size_t(scaled), size_t(double(C) * 0.005 + 1.5) - 1);
        }
        // A model whose loudest channel is below 1e-4 is left alone.
        for (float v : smoothQuantScales(std::vector<float>(300, 5e-5f), {}, {}, 300, 0.0,
                                         SmoothQuantRule::Percentile))
            QCOMPARE(v, 1.0f);

        // On the demo model (64-wide norms: k = 1, nothing to scale; the 172-wide down input:
        // k = 2, its loudest channel scaled to the second): the function is unchanged, the up
        // rows and down columns carry the scales of the captured down inputs, statistics through
        // the overlay ("compressed", DGQ's default).
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {4, 64});
        NullProgress np;
        CompressOptions co;
        co.calibration = &cal;
        const Recipe r = Recipe::fromJson(
            {{"lcw_recipe", 1},
             {"name", "dgq-smooth"},
             {"rules",
              json::array({{{"targets", {"*"}}, {"smoothquant", {{"rule", "percentile"}}}}})}});
        const CompressResult res = lcw::compress::compress(*m, r, np, co);
        QVERIFY(res.model);
        const std::vector<int32_t> ids = {1, 5, 9, 23, 40, 7, 3, 11};
        std::vector<float> l0, l1;
        Session(*m).forward(ids, l0, true);
        Session(*res.model).forward(ids, l1, true);
        double d = 0;
        for (size_t i = 0; i < l0.size(); ++i) d = std::max(d, double(std::fabs(l0[i] - l1[i])));
        QVERIFY2(d < 1e-4, qPrintable(QString::number(d)));
        const auto in = captureBlockInputs(*m, cal, 1, {}, np);
        const std::vector<float>& a = in.at("layers.1.mlp.down").absMax;
        const std::vector<float> want = reference(a);
        QCOMPARE(std::count_if(want.begin(), want.end(), [](float v) { return v > 1; }),
                 std::ptrdiff_t(1));
        auto floats = [&](const std::string& name) { return lcwtest::tensorFloats(m->get(name)); };
        const std::vector<float> up = floats("layers.1.mlp.up"), down = floats("layers.1.mlp.down");
        const std::vector<float> up1 = res.model->compressed("layers.1.mlp.up")->values();
        const std::vector<float> down1 = res.model->compressed("layers.1.mlp.down")->values();
        const int64_t hid = int64_t(a.size()), dim = int64_t(up.size()) / hid;
        for (int64_t j = 0; j < hid; ++j) {
            const double sj = want[size_t(j)];
            for (int64_t c = 0; c < dim; ++c) {
                const double e = up[size_t(j * dim + c)] / sj;
                QVERIFY(std::fabs(up1[size_t(j * dim + c)] - e) <= 1e-6 * std::fabs(e) + 1e-9);
            }
            for (int64_t rr = 0; rr < dim; ++rr) {
                const double e = down[size_t(rr * hid + j)] * sj;
                QVERIFY(std::fabs(down1[size_t(rr * hid + j)] - e) <= 1e-6 * std::fabs(e) + 1e-9);
            }
        }
        // The q/k/v inputs (64 channels) are not scaled: the norm is unchanged.
        if (const auto* c = res.model->compressed("layers.1.attn_norm"))
            QVERIFY(c->values() == floats("layers.1.attn_norm"));
        // Recipe keys: no alpha with the percentile rule.
        auto field = [](json sq) -> std::string {
            try {
                Recipe::fromJson(
                    {{"lcw_recipe", 1},
                     {"name", "t"},
                     {"rules", json::array({{{"targets", {"*"}}, {"smoothquant", sq}}})}});
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field({{"rule", "percentile"}, {"alpha", 0.5}}), std::string("smoothquant.alpha"));
        QCOMPARE(field({{"rule", "percentile"}}), std::string());
        QCOMPARE(field({{"rule", "quantile"}}), std::string("smoothquant.rule"));
    }

    void slimAverageAndSalientGroups() {
        const int64_t rows = 6, cols = 256, g = 32; // 8 groups
        std::vector<float> w = randomWeights(rows * cols, 8);
        for (int64_t r = 0; r < rows; ++r) // louder columns in groups 2 and 5
            for (int64_t j = 0; j < cols; ++j)
                if (j / g == 2 || j / g == 5) w[size_t(r * cols + j)] *= 6.0f;
        const std::vector<double> H = randomGram(cols, 3);
        for (double avg : {2.0, 2.5, 3.0, 3.25, 4.0}) {
            const PackedTensor p =
                slimQuantize(w.data(), rows, cols, slimSettings(avg, g), H.data(), nullptr, "t");
            const std::vector<double> sal =
                slimGroupSalience(w.data(), rows, cols, g, H.data(), nullptr);
            double sum = 0;
            for (uint8_t b : p.groupCodes) sum += b;
            QCOMPARE(sum / double(p.groupCodes.size()), avg); // avg · 8 is an integer here
            for (size_t a = 0; a < sal.size(); ++a)
                for (size_t b = 0; b < sal.size(); ++b)
                    if (sal[a] > sal[b]) QVERIFY(p.groupCodes[a] >= p.groupCodes[b]);
            if (avg > 2.0 && avg < 4.0) QVERIFY(p.groupCodes[2] > 2 && p.groupCodes[5] > 2);
            QCOMPARE(p.storageBits(), packedStorageBits(rows, cols, slimSettings(avg, g)));
            QCOMPARE(p.storageBits(),
                     uint64_t(rows) * uint64_t(avg * cols) + 32ull * rows * 8 + 8 * 8);
        }
        // The allocation helper: infeasible counts give nothing.
        QVERIFY(slimAllocation(std::vector<double>(8, 1.0), 2.5, 3).empty());
        QCOMPARE(int(slimAllocation(std::vector<double>(8, 1.0), 2.5, 2).size()), 8);
    }

    void demoModelEndToEnd() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = loadCalibration(*m, "", {4, 64});
        for (const char* preset : {"W4A8-DGQ", "W2.5-SliM"}) {
            const Recipe r = findPreset(preset).recipe;
            NullProgress np;
            CompressOptions co;
            co.calibration = &cal;
            const CompressResult res = lcw::compress::compress(*m, r, np, co);
            QVERIFY(res.model);
            PlanOptions po;
            po.hasCalibration = true;
            const Plan plan = planRecipe(r, *m, po);
            const SizeEstimate est = estimatePlan(plan, *m);
            QCOMPARE(est.compressed.bits, res.model->compressedSize().bits);
            QCOMPARE(est.total.bits, res.model->totalSize().bits);
            for (const auto& l : res.layers) {
                const CompressedTensor* c = res.model->compressed(l.name);
                QVERIFY(c && c->quantized);
                QCOMPARE(l.storageBits, c->storageBits());
                QCOMPARE(res.model->packedLinear(l.name), nullptr);
                if (c->packed.settings.method == WeightMethod::Slim) {
                    QCOMPARE(l.details.value("quantiser", std::string()), std::string("gptq"));
                    QVERIFY(l.details.value("sqc", false)); // SQC by default
                }
                if (c->packed.settings.method == WeightMethod::Slim) {
                    double sum = 0;
                    for (uint8_t b : c->packed.groupCodes) sum += b;
                    const double G = double(c->packed.groupCodes.size());
                    QCOMPARE(sum, double(std::llround(2.5 * G)));
                }
            }
            const std::string dir = lcwtest::tempDir("dgq-slim") + "/" + preset;
            res.model->save(dir);
            auto back = CompressedModel::load(dir, *m);
            QCOMPARE(back->compressedSize().bits, res.model->compressedSize().bits);
            QVERIFY(lcwtest::sameFiniteLogits(*res.model, *back));
        }
    }

    void recipeKeys() {
        auto field = [](json w) -> std::string {
            try {
                recipeWith(std::move(w));
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(field({{"method", "slim"}, {"avg_bits", 5}}), std::string("weight.avg_bits"));
        QCOMPARE(field({{"method", "slim"}, {"avg_bits", 1.5}}), std::string("weight.avg_bits"));
        QCOMPARE(field({{"method", "dgq"}, {"bits", 9}}), std::string("weight.bits"));
        auto m = Model::load(lcwtest::demoModelPath());
        PlanOptions po;
        po.hasCalibration = true;
        auto planField = [&](json w) -> std::string {
            try {
                planRecipe(recipeWith(std::move(w)), *m, po);
            } catch (const RecipeError& e) {
                return e.field();
            }
            return "";
        };
        QCOMPARE(planField({{"method", "gptq"}, {"avg_bits", 3}}), std::string("weight.avg_bits"));
        QCOMPARE(planField({{"method", "rtn"}, {"gptq", true}}), std::string("weight.gptq"));
        QCOMPARE(field({{"method", "slim"}, {"gptq", 1}}), std::string("weight.gptq"));
        QVERIFY(slimUsesGptq(json{{"method", "slim"}}));
        QVERIFY(!slimUsesGptq(json{{"method", "slim"}, {"gptq", false}}));
        // SQC: slim's GPTQ step only; on by default with the reference's lambda 1.
        QCOMPARE(planField({{"method", "gptq"}, {"sqc", true}}), std::string("weight.sqc"));
        QCOMPARE(planField({{"method", "rtn"}, {"sqc_lambda", 2}}),
                 std::string("weight.sqc_lambda"));
        QCOMPARE(planField({{"method", "slim"}, {"gptq", false}, {"sqc", true}}),
                 std::string("weight.sqc"));
        QCOMPARE(field({{"method", "slim"}, {"sqc_lambda", -1}}), std::string("weight.sqc_lambda"));
        QCOMPARE(field({{"method", "slim"}, {"sqc", "yes"}}), std::string("weight.sqc"));
        QCOMPARE(planField({{"method", "slim"}, {"group_size", 32}, {"gptq", false}}),
                 std::string());
        QVERIFY(slimSqcFromJson(json{{"method", "slim"}}).enabled);
        QCOMPARE(slimSqcFromJson(json{{"method", "slim"}}).lambda, 1.0);
        QVERIFY(!slimSqcFromJson(json{{"method", "slim"}, {"sqc", false}}).enabled);
        QCOMPARE(slimSqcFromJson(json{{"method", "slim"}, {"sqc_lambda", 4}}).lambda, 4.0);
        QCOMPARE(planField({{"method", "slim"}, {"bits", 3}}), std::string("weight.bits"));
        QCOMPARE(planField({{"method", "slim"}, {"granularity", "channel"}}),
                 std::string("weight.granularity"));
        QCOMPARE(planField({{"method", "dgq"}, {"group_size", 4096}}),
                 std::string("weight.group_size"));
        QCOMPARE(planField({{"method", "dgq"}, {"format", "fp8_e4m3"}}),
                 std::string("weight.format"));
        // Slim groups that do not divide a row shrink to a divisor, with a warning.
        const Plan plan = planRecipe(findPreset("W2.5-SliM").recipe, *m, po);
        bool warned = false;
        for (const auto& wmsg : plan.warnings)
            warned |= wmsg.find("slim groups") != std::string::npos;
        for (const auto& lp : plan.layers) QCOMPARE(lp.cols % lp.weight.groupSize, int64_t(0));
        QVERIFY(warned);
        // DGQ needs no calibration; SliM does.
        PlanOptions none;
        planRecipe(findPreset("W4A8-DGQ").recipe, *m, none);
        QVERIFY_THROWS_EXCEPTION(RecipeError, planRecipe(findPreset("W2.5-SliM").recipe, *m, none));
    }
};

QTEST_GUILESS_MAIN(TestDgqSlim)
#include "test_dgq_slim.moc"
