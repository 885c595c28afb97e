// Calibration and statistics reductions on a Vulkan device (issue #16, runtime/device_ops.h):
// Gram matrices X^T X and per-channel statistics of random data of awkward shapes against
// double-precision sums computed here; the CPU fallback (no device, narrow widths); GPTQ codes
// from a device Hessian against those from the CPU's; captureBlockInputs and activation
// statistics of the demo model with the reductions on the device against the CPU. The device
// tests skip with a message when no Vulkan device can be used; the fallback test always runs.
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/compress/gptq.h"
#include "core/model/model.h"
#include "core/runtime/device.h"
#include "core/runtime/device_ops.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "test_util.h"
#include "vulkan_test_util.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <random>

using namespace lcw;
using runtime::ChannelStatsAccumulator;
using runtime::GramAccumulator;

namespace {

/// Rows [n, d] with per-channel offsets and scales (some channels large, like outliers).
std::vector<float> randomRows(int64_t n, int64_t d, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> off(static_cast<size_t>(d)), sc(static_cast<size_t>(d));
    for (int64_t j = 0; j < d; ++j) {
        off[size_t(j)] = 0.5f * nd(rng);
        sc[size_t(j)] = j % 17 == 3 ? 20.0f : 0.5f + std::fabs(nd(rng));
    }
    std::vector<float> x(size_t(n * d));
    for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < d; ++j)
            x[size_t(t * d + j)] = off[size_t(j)] + sc[size_t(j)] * nd(rng);
    return x;
}

/// Sum over rows of x^T x in double, and sum |x_ti x_tj| (the scale of each entry's rounding).
void gramReference(const std::vector<float>& x, int64_t n, int64_t d, std::vector<double>& g,
                   std::vector<double>& mag) {
    g.assign(size_t(d * d), 0.0);
    mag.assign(size_t(d * d), 0.0);
    for (int64_t t = 0; t < n; ++t) {
        const float* r = x.data() + t * d;
        for (int64_t i = 0; i < d; ++i)
            for (int64_t j = 0; j < d; ++j) {
                const double p = double(r[i]) * double(r[j]);
                g[size_t(i * d + j)] += p;
                mag[size_t(i * d + j)] += std::fabs(p);
            }
    }
}

double frobenius(const std::vector<double>& a) {
    double s = 0;
    for (double v : a) s += v * v;
    return std::sqrt(s);
}

/// Feeds x [n, d] to an accumulator in uneven batches (one empty).
template <class Acc>
void addInBatches(Acc& acc, const std::vector<float>& x, int64_t n, int64_t d) {
    const int64_t sizes[] = {1, 0, 7, 130, 1000};
    int64_t done = 0;
    for (size_t k = 0; done < n; ++k) {
        const int64_t b = std::min(sizes[k % 5], n - done);
        acc.add(x.data() + done * d, b);
        done += b;
    }
}

} // namespace

class TestVulkanReduce : public QObject {
    Q_OBJECT

private slots:
    void init() { runtime::setDeviceReduceMinDim(0); }
    void cleanup() {
        runtime::failDeviceReductionAfterForTests(-1);
        runtime::setDeviceReduceMinDim(256);
        runtime::setDefaultDevice("cpu");
    }

    /// X^T X on the device vs double sums: every entry within 1e-6 of sum |x_i x_j| (64-row f32
    /// partial sums, float-float totals) and the whole within 1e-5 of the Frobenius norm;
    /// exactly symmetric; widths not a multiple of the 64-wide tile, one row, many rows.
    void gramMatchesDouble() {
        REQUIRE_VULKAN();
        struct Shape {
            int64_t n, d;
        };
        const Shape shapes[] = {{1, 1}, {1, 70}, {37, 5}, {300, 130}, {1500, 257}, {6000, 64}};
        double worstEntry = 0, worstFrob = 0;
        for (const Shape& s : shapes) {
            const auto x = randomRows(s.n, s.d, uint32_t(s.n * 131 + s.d));
            std::vector<double> ref, mag;
            gramReference(x, s.n, s.d, ref, mag);
            const int64_t before = runtime::deviceReductionsRun();
            GramAccumulator g(runtime::parseDeviceSpec("vulkan"), s.d);
            QVERIFY2(g.onDevice(), g.note().c_str());
            addInBatches(g, x, s.n, s.d);
            QCOMPARE(g.rows(), s.n);
            QVERIFY(runtime::deviceReductionsRun() > before);
            std::vector<double> got(size_t(s.d * s.d));
            g.result(got.data());
            std::vector<double> diff(got.size());
            for (size_t i = 0; i < got.size(); ++i) {
                diff[i] = got[i] - ref[i];
                const double rel = std::fabs(diff[i]) / std::max(mag[i], 1e-30);
                worstEntry = std::max(worstEntry, rel);
                QVERIFY2(std::fabs(diff[i]) <= 1e-6 * mag[i] + 1e-30,
                         qPrintable(QString("n %1 d %2 entry %3: %4 vs %5")
                                        .arg(s.n)
                                        .arg(s.d)
                                        .arg(i)
                                        .arg(got[i], 0, 'g', 17)
                                        .arg(ref[i], 0, 'g', 17)));
            }
            const double frob = frobenius(diff) / frobenius(ref);
            worstFrob = std::max(worstFrob, frob);
            QVERIFY2(frob <= 1e-5, qPrintable(QString::number(frob)));
            for (int64_t i = 0; i < s.d; ++i)
                for (int64_t j = 0; j < i; ++j)
                    QCOMPARE(got[size_t(i * s.d + j)], got[size_t(j * s.d + i)]);
        }
        qInfo("Gram on the device: worst entry |d| / sum|x_i x_j| %.3g, worst relative "
              "Frobenius error %.3g",
              worstEntry, worstFrob);
    }

    /// Per-channel sums on the device vs double sums: min / max / abs-max exact, power sums of
    /// x - shift within 1e-6 of sum |x - shift|^k, with and without the first-row shift.
    void channelStatsMatchDouble() {
        REQUIRE_VULKAN();
        struct Shape {
            int64_t n, c;
        };
        const Shape shapes[] = {{1, 1}, {1, 33}, {200, 65}, {3000, 300}};
        double worst = 0;
        for (bool shift : {false, true})
            for (const Shape& s : shapes) {
                const auto x = randomRows(s.n, s.c, uint32_t(s.n * 7 + s.c + shift));
                ChannelStatsAccumulator acc(runtime::parseDeviceSpec("vulkan"), s.c, shift);
                QVERIFY2(acc.onDevice(), acc.note().c_str());
                addInBatches(acc, x, s.n, s.c);
                const runtime::ChannelSums r = acc.result();
                QCOMPARE(r.rows, s.n);
                for (int64_t j = 0; j < s.c; ++j) {
                    const double sh = shift ? double(x[size_t(j)]) : 0.0;
                    QCOMPARE(double(r.shift[size_t(j)]), sh);
                    double p[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0}, sa = 0;
                    double mn = INFINITY, mx = -INFINITY;
                    for (int64_t t = 0; t < s.n; ++t) {
                        const double v = x[size_t(t * s.c + j)], d = v - sh;
                        double dk = 1;
                        for (int k = 0; k < 4; ++k) {
                            dk *= d;
                            p[k] += dk;
                            m[k] += std::fabs(dk);
                        }
                        sa += std::fabs(v);
                        mn = std::min(mn, v);
                        mx = std::max(mx, v);
                    }
                    QCOMPARE(r.min[size_t(j)], mn);
                    QCOMPARE(r.max[size_t(j)], mx);
                    QCOMPARE(r.absMax(size_t(j)), std::max(std::fabs(mn), std::fabs(mx)));
                    const double got[4] = {r.s1[size_t(j)], r.s2[size_t(j)], r.s3[size_t(j)],
                                           r.s4[size_t(j)]};
                    for (int k = 0; k < 4; ++k) {
                        worst = std::max(worst, std::fabs(got[k] - p[k]) / std::max(m[k], 1e-300));
                        QVERIFY2(std::fabs(got[k] - p[k]) <= 1e-6 * m[k],
                                 qPrintable(QString("n %1 c %2 channel %3 power %4: %5 vs %6")
                                                .arg(s.n)
                                                .arg(s.c)
                                                .arg(j)
                                                .arg(k + 1)
                                                .arg(got[k], 0, 'g', 17)
                                                .arg(p[k], 0, 'g', 17)));
                    }
                    QVERIFY(std::fabs(r.sumAbs[size_t(j)] - sa) <= 1e-7 * sa);
                }
            }
        qInfo("channel statistics on the device: worst |d| / sum |x - shift|^k %.3g", worst);
    }

    /// No device (an index that does not exist, a build without Vulkan) or a narrow width: the
    /// CPU sums, with a note when a device was asked for, equal to double sums.
    void fallsBackToTheCpu() {
        const int64_t n = 50, d = 40;
        const auto x = randomRows(n, d, 5);
        std::vector<double> ref, mag;
        gramReference(x, n, d, ref, mag);
        GramAccumulator missing(runtime::parseDeviceSpec("vulkan:97"), d);
        QVERIFY(!missing.onDevice());
        QVERIFY(!missing.note().empty());
        runtime::setDeviceReduceMinDim(256);
        GramAccumulator narrow(runtime::parseDeviceSpec("vulkan"), d);
        QVERIFY(!narrow.onDevice());
        GramAccumulator cpu(runtime::parseDeviceSpec("cpu"), d);
        QVERIFY(!cpu.onDevice());
        QVERIFY(cpu.note().empty());
        for (GramAccumulator* g : {&missing, &narrow, &cpu}) {
            addInBatches(*g, x, n, d);
            std::vector<double> got(size_t(d * d));
            g->result(got.data());
            for (size_t i = 0; i < got.size(); ++i)
                QVERIFY(std::fabs(got[i] - ref[i]) <= 1e-13 * mag[i] + 1e-300);
        }
        ChannelStatsAccumulator ch(runtime::parseDeviceSpec("vulkan:97"), d, true);
        QVERIFY(!ch.onDevice());
        addInBatches(ch, x, n, d);
        const runtime::ChannelSums r = ch.result();
        QCOMPARE(r.rows, n);
        for (int64_t j = 0; j < d; ++j) {
            double s2 = 0, mx = -INFINITY;
            for (int64_t t = 0; t < n; ++t) {
                const double v = double(x[size_t(t * d + j)]) - double(x[size_t(j)]);
                s2 += v * v;
                mx = std::max(mx, double(x[size_t(t * d + j)]));
            }
            QVERIFY(std::fabs(r.s2[size_t(j)] - s2) <= 1e-12 * s2);
            QCOMPARE(r.max[size_t(j)], mx);
        }
        QVERIFY_THROWS_EXCEPTION(ArgumentError, GramAccumulator(runtime::DeviceSpec{}, 0));
    }

    /// A device error midway (injected after two batches): what the device summed is read back,
    /// the rest is summed on the CPU, and the totals still equal double sums; the note says why.
    void deviceFailureCarriesOnOnTheCpu() {
        REQUIRE_VULKAN();
        const int64_t n = 300, d = 130;
        const auto x = randomRows(n, d, 23);
        std::vector<double> ref, mag;
        gramReference(x, n, d, ref, mag);
        runtime::failDeviceReductionAfterForTests(2);
        GramAccumulator g(runtime::parseDeviceSpec("vulkan"), d);
        QVERIFY(g.onDevice());
        addInBatches(g, x, n, d);
        QVERIFY(!g.onDevice());
        QVERIFY2(g.note().find("injected") != std::string::npos, g.note().c_str());
        QCOMPARE(g.rows(), n);
        std::vector<double> got(size_t(d * d));
        g.result(got.data());
        for (size_t i = 0; i < got.size(); ++i)
            QVERIFY(std::fabs(got[i] - ref[i]) <= 1e-6 * mag[i] + 1e-30);

        runtime::failDeviceReductionAfterForTests(1); // the first row on the device, with its shift
        ChannelStatsAccumulator ch(runtime::parseDeviceSpec("vulkan"), d, true);
        addInBatches(ch, x, n, d);
        QVERIFY(!ch.onDevice());
        const runtime::ChannelSums r = ch.result();
        for (int64_t j = 0; j < d; ++j) {
            double s2 = 0, mn = INFINITY;
            for (int64_t t = 0; t < n; ++t) {
                const double v = x[size_t(t * d + j)], dv = v - double(x[size_t(j)]);
                s2 += dv * dv;
                mn = std::min(mn, v);
            }
            QVERIFY(std::fabs(r.s2[size_t(j)] - s2) <= 1e-6 * s2);
            QCOMPARE(r.min[size_t(j)], mn);
        }
    }

    /// captureBlockInputs of the demo model with the default device on Vulkan: the Hessian equals
    /// double sums of the very rows captured (all kept as samples) to 1e-5 of its Frobenius
    /// norm, abs-max exactly; the CPU run's Hessian within 1e-4 (its forward pass runs on the
    /// CPU, so the rows themselves differ by float rounding); GPTQ int4 g32 codes from the
    /// device's Hessian of the CPU's rows equal those from the CPU's Hessian.
    void captureAndGptqOnDevice() {
        REQUIRE_VULKAN();
        auto m = Model::load(lcwtest::demoModelPath());
        const compress::CalibrationSet cal = compress::loadCalibration(*m, "", {3, 64});
        compress::CaptureOptions co;
        co.maxSampleRows = cal.tokens(); // every row: the test's reference sums them itself
        NullProgress np;
        const int layer = 2;
        runtime::setDefaultDevice("cpu");
        const auto cpuIn = compress::captureBlockInputs(*m, cal, layer, co, np);
        runtime::setDefaultDevice("vulkan");
        const int64_t before = runtime::deviceReductionsRun();
        const auto devIn = compress::captureBlockInputs(*m, cal, layer, co, np);
        runtime::setDefaultDevice("cpu");
        QVERIFY(runtime::deviceReductionsRun() > before);
        QCOMPARE(devIn.size(), cpuIn.size());
        double worstOwn = 0, worstCpu = 0;
        int64_t flipped = 0, codes = 0;
        for (const auto& [name, li] : devIn) {
            QVERIFY2(cpuIn.count(name), name.c_str());
            const compress::LinearInputs& ci = cpuIn.at(name);
            const int64_t c = li.cols, T = li.tokens;
            QCOMPARE(li.sampleRows, T);
            std::vector<double> ref, mag;
            gramReference(li.sample, T, c, ref, mag);
            std::vector<double> d(ref.size()), dc(ref.size());
            for (size_t i = 0; i < ref.size(); ++i) {
                d[i] = li.gram[i] - ref[i];
                dc[i] = li.gram[i] - ci.gram[i];
            }
            const double own = frobenius(d) / frobenius(ref),
                         vsCpu = frobenius(dc) / frobenius(ref);
            worstOwn = std::max(worstOwn, own);
            worstCpu = std::max(worstCpu, vsCpu);
            QVERIFY2(own <= 1e-5, qPrintable(QString("%1: %2").arg(name.c_str()).arg(own)));
            QVERIFY2(vsCpu <= 1e-4, qPrintable(QString("%1: %2").arg(name.c_str()).arg(vsCpu)));
            for (int64_t j = 0; j < c; ++j) {
                float am = 0;
                double sq = 0;
                for (int64_t t = 0; t < T; ++t) {
                    const float v = li.sample[size_t(t * c + j)];
                    am = std::max(am, std::fabs(v));
                    sq += double(v) * double(v);
                }
                QCOMPARE(li.absMax[size_t(j)], am);
                QVERIFY(std::fabs(li.meanSq[size_t(j)] - sq / double(T)) <=
                        1e-6 * sq / double(T) + 1e-30);
            }
            if (c % 32 != 0) continue;
            // GPTQ on the CPU rows' Hessian summed on the CPU and on the device.
            GramAccumulator hc(runtime::DeviceSpec{}, c), hd(runtime::parseDeviceSpec("vulkan"), c);
            QVERIFY(hd.onDevice());
            hc.add(ci.sample.data(), T);
            hd.add(ci.sample.data(), T);
            std::vector<double> Hc(size_t(c * c)), Hd(size_t(c * c));
            hc.result(Hc.data());
            hd.result(Hd.data());
            const int64_t rows = 48;
            const auto w = randomRows(rows, c, 11);
            compress::WeightSettings st;
            st.bits = 4;
            st.granularity = compress::Granularity::Group;
            st.groupSize = 32;
            st.method = compress::WeightMethod::Gptq;
            const compress::GptqOptions go;
            const auto qc = compress::gptqQuantize(w.data(), rows, c, Hc.data(), st, go, name);
            const auto qd = compress::gptqQuantize(w.data(), rows, c, Hd.data(), st, go, name);
            QCOMPARE(qd.packed.codes.size(), qc.packed.codes.size());
            for (size_t i = 0; i < qc.packed.codes.size(); ++i)
                flipped += qc.packed.codes[i] != qd.packed.codes[i];
            codes += int64_t(qc.packed.codes.size());
        }
        QVERIFY(codes > 0);
        qInfo("captureBlockInputs on the device: Hessian vs its rows' double sums %.3g, vs the "
              "CPU run %.3g (relative Frobenius); GPTQ: %lld of %lld code bytes differ",
              worstOwn, worstCpu, (long long)flipped, (long long)codes);
        QCOMPARE(flipped, int64_t(0));
    }

    /// Activation statistics of the demo model: one CPU forward feeds two observers, one with
    /// its per-channel sums on the device. Extrema, abs-max, per-token maxima and histograms are
    /// identical; means, deviations, mean |x| within 1e-5 of the array's scale; skewness and
    /// kurtosis within 1e-4.
    void activationStatsOnDevice() {
        REQUIRE_VULKAN();
        auto m = Model::load(lcwtest::demoModelPath());
        const compress::CalibrationSet cal = compress::loadCalibration(*m, "", {2, 64});
        stats::ActivationStatsOptions cpuOpts, devOpts;
        cpuOpts.device = "cpu";
        devOpts.device = "vulkan";
        stats::ActivationStatsObserver onCpu(cpuOpts), onDev(devOpts);
        const int64_t before = runtime::deviceReductionsRun();
        Session s(*m);
        s.addObserver(&onCpu);
        s.addObserver(&onDev);
        std::vector<float> logits;
        for (const auto& smp : cal.samples) {
            s.reset();
            s.forward(smp, logits, true);
        }
        QVERIFY(runtime::deviceReductionsRun() > before);
        const auto a = onCpu.results(), b = onDev.results();
        QCOMPARE(b.size(), a.size());
        QVERIFY(!a.empty());
        double worst = 0;
        for (size_t i = 0; i < a.size(); ++i) {
            QCOMPARE(b[i].name, a[i].name);
            QVERIFY(b[i].counts == a[i].counts);
            for (const auto& [key, ref] : a[i].arrays) {
                const auto& got = b[i].arrays.at(key);
                QCOMPARE(got.size(), ref.size());
                const bool exact = key.find("min") != std::string::npos ||
                                   key.find("max") != std::string::npos ||
                                   key.rfind("tok_", 0) == 0;
                const double tol = key.find("kurtosis") != std::string::npos ||
                                           key.find("skewness") != std::string::npos
                                       ? 1e-4
                                       : 1e-5;
                double scale = 0;
                for (double v : ref) scale = std::max(scale, std::fabs(v));
                for (size_t k = 0; k < ref.size(); ++k) {
                    if (exact) {
                        QVERIFY2(
                            got[k] == ref[k],
                            qPrintable(
                                QString("%1 %2[%3]").arg(a[i].name.c_str(), key.c_str()).arg(k)));
                        continue;
                    }
                    const double err = std::fabs(got[k] - ref[k]);
                    if (scale > 0) worst = std::max(worst, err / scale);
                    QVERIFY2(err <= tol * scale + 1e-12,
                             qPrintable(QString("%1 %2[%3]: %4 vs %5")
                                            .arg(a[i].name.c_str(), key.c_str())
                                            .arg(k)
                                            .arg(got[k], 0, 'g', 17)
                                            .arg(ref[k], 0, 'g', 17)));
                }
            }
            for (const auto& [key, ref] : a[i].scalars) {
                const double got = b[i].scalars.at(key);
                QVERIFY2(std::fabs(got - ref) <= 1e-4 * std::fabs(ref) + 1e-9,
                         qPrintable(QString("%1 %2: %3 vs %4")
                                        .arg(a[i].name.c_str(), key.c_str())
                                        .arg(got, 0, 'g', 17)
                                        .arg(ref, 0, 'g', 17)));
            }
        }
        qInfo("activation statistics on the device: worst |d| / array scale %.3g", worst);
    }
};

QTEST_GUILESS_MAIN(TestVulkanReduce)
#include "test_vulkan_reduce.moc"
