// Statistics engine: every statistic against a straightforward double-precision computation,
// the HDF5 store (round trip, version check, corrupt/foreign files), cancellation, known facts
// on the demo model, and the CLI.
#include "core/common/error.h"
#include "core/common/h5_guard.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/stats/fingerprint.h"
#include "core/stats/quant_grid.h"
#include "core/stats/stats_engine.h"
#include "core/stats/stats_store.h"
#include "core/stats/weight_stats.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <H5Cpp.h>
#include <QProcess>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

using namespace lcw;
using namespace lcw::stats;

namespace {

std::string demoPath() {
    return lcwtest::sourcePath("resources/models/stories260K");
}
const char* kTinyRandom = "models/tiny-random/llama2_sp_f32/model";
const char* kQ4km = "models/stories260K/gguf/stories260K-q4_k_m.gguf";

/// |a − b| ≤ 1e-5 · max(|b|, scale).
bool close(double a, double b, double scale = 1e-12, double rel = 1e-5) {
    if (std::isinf(a) && std::isinf(b)) return true;
    return std::fabs(a - b) <= rel * std::max(std::fabs(b), scale);
}

#define CHECK_CLOSE(a, b, scale, what)                                                             \
    do {                                                                                           \
        const double _a = (a), _b = (b);                                                           \
        if (!close(_a, _b, (scale)))                                                               \
            QFAIL(qPrintable(QString("%1: got %2, reference %3")                                   \
                                 .arg(QString::fromStdString(what))                                \
                                 .arg(_a, 0, 'g', 12)                                              \
                                 .arg(_b, 0, 'g', 12)));                                           \
    } while (0)

/// Straightforward double-precision statistics of a list of values.
struct Ref {
    double n = 0, mn = INFINITY, mx = -INFINITY, absmax = 0, mean = 0, sd = 0, kurt = 0, skew = 0;
    double meanAbs = 0;
    std::vector<double> v;
};
Ref refStats(const std::vector<double>& v) {
    Ref r;
    r.n = double(v.size());
    double s = 0, sa = 0;
    for (double x : v) {
        s += x;
        sa += std::fabs(x);
        r.mn = std::min(r.mn, x);
        r.mx = std::max(r.mx, x);
    }
    r.mean = s / r.n;
    r.meanAbs = sa / r.n;
    r.absmax = std::max(std::fabs(r.mn), std::fabs(r.mx));
    double m2 = 0, m3 = 0, m4 = 0;
    for (double x : v) {
        const double d = x - r.mean;
        m2 += d * d;
        m3 += d * d * d;
        m4 += d * d * d * d;
    }
    m2 /= r.n, m3 /= r.n, m4 /= r.n;
    r.sd = std::sqrt(m2);
    r.kurt = m2 > 0 ? m4 / (m2 * m2) : 0;
    r.skew = m2 > 0 ? m3 / std::pow(m2, 1.5) : 0;
    return r;
}
double refPercentile(std::vector<double> a, double pct) {
    for (auto& x : a) x = std::fabs(x);
    std::sort(a.begin(), a.end());
    const double r = pct / 100 * double(a.size() - 1);
    const size_t lo = size_t(std::floor(r)), hi = std::min(lo + 1, a.size() - 1);
    return a[lo] + (a[hi] - a[lo]) * (r - double(lo));
}
/// Σ(x − RTN(x))² of one group, as documented.
double refRtn(const std::vector<double>& x, const PreviewConfig& c) {
    double lo = *std::min_element(x.begin(), x.end()), hi = *std::max_element(x.begin(), x.end());
    double e = 0;
    if (c.symmetric) {
        const double qmax = std::pow(2.0, c.bits - 1) - 1;
        const double s = std::max(std::fabs(lo), std::fabs(hi)) / qmax;
        if (s == 0) return 0;
        for (double v : x) {
            const double q = std::clamp(std::nearbyint(v / s), -qmax - 1, qmax);
            e += (v - q * s) * (v - q * s);
        }
    } else {
        lo = std::min(lo, 0.0), hi = std::max(hi, 0.0);
        const double qmax = std::pow(2.0, c.bits) - 1;
        const double s = (hi - lo) / qmax;
        if (s == 0) return 0;
        const double z = std::nearbyint(-lo / s);
        for (double v : x) {
            const double q = std::clamp(std::nearbyint(v / s) + z, 0.0, qmax);
            e += (v - (q - z) * s) * (v - (q - z) * s);
        }
    }
    return e;
}

void compareRef(const TensorStats& t, const std::string& prefix, size_t i, const Ref& r,
                const std::string& what) {
    const std::string w = what + " " + prefix + "[" + std::to_string(i) + "]";
    CHECK_CLOSE(t.array(prefix + "_min")[i], r.mn, 1e-12, w + " min");
    CHECK_CLOSE(t.array(prefix + "_max")[i], r.mx, 1e-12, w + " max");
    CHECK_CLOSE(t.array(prefix + "_absmax")[i], r.absmax, 1e-12, w + " absmax");
    CHECK_CLOSE(t.array(prefix + "_mean")[i], r.mean, r.sd, w + " mean");
    CHECK_CLOSE(t.array(prefix + "_std")[i], r.sd, 1e-12, w + " std");
    CHECK_CLOSE(t.array(prefix + "_kurtosis")[i], r.kurt, 1e-12, w + " kurtosis");
    CHECK_CLOSE(t.array(prefix + "_skewness")[i], r.skew, 1e-3, w + " skewness");
    CHECK_CLOSE(t.array(prefix + "_outlier_ratio")[i], r.sd > 0 ? r.absmax / r.sd : 0, 1e-12,
                w + " outlier ratio");
}

/// Checks every weight statistic of one tensor against the reference.
void checkWeightTensor(const TensorView& tv, const WeightStatsOptions& opts) {
    const TensorStats t = computeTensorStats(tv, opts);
    const int64_t R = tv.shape[0], C = tv.shape[1];
    std::vector<std::vector<double>> rows(static_cast<size_t>(R));
    std::vector<float> buf(static_cast<size_t>(C));
    std::vector<double> all;
    for (int64_t r = 0; r < R; ++r) {
        dequantizeRow(tv.dtype, tv.row(r), buf.data(), C);
        rows[size_t(r)].assign(buf.begin(), buf.end());
        all.insert(all.end(), buf.begin(), buf.end());
    }
    const Ref T = refStats(all);
    const std::string w = tv.name;
    QCOMPARE(t.get("count"), double(all.size()));
    CHECK_CLOSE(t.get("min"), T.mn, 1e-12, w + " min");
    CHECK_CLOSE(t.get("max"), T.mx, 1e-12, w + " max");
    CHECK_CLOSE(t.get("absmax"), T.absmax, 1e-12, w + " absmax");
    CHECK_CLOSE(t.get("mean"), T.mean, T.sd, w + " mean");
    CHECK_CLOSE(t.get("std"), T.sd, 1e-12, w + " std");
    CHECK_CLOSE(t.get("kurtosis"), T.kurt, 1e-12, w + " kurtosis");
    CHECK_CLOSE(t.get("skewness"), T.skew, 1e-3, w + " skewness");
    CHECK_CLOSE(t.get("outlier_ratio"), T.absmax / T.sd, 1e-12, w + " outlier ratio");
    for (double p : kPercentiles)
        CHECK_CLOSE(t.get(percentileKey(p)), refPercentile(all, p), 1e-12,
                    w + " " + percentileKey(p));
    double g3 = 0, g6 = 0, ge6 = 0;
    for (double x : all) {
        g3 += std::fabs(x) > 3 * T.sd;
        g6 += std::fabs(x) > 6 * T.sd;
        ge6 += std::fabs(x) >= 6.0;
    }
    CHECK_CLOSE(t.get("frac_gt_3sigma"), g3 / T.n, 1e-9, w + " frac>3σ");
    CHECK_CLOSE(t.get("frac_gt_6sigma"), g6 / T.n, 1e-9, w + " frac>6σ");
    QCOMPARE(t.get("count_abs_ge6"), ge6);
    // Histogram: counts sum to the element count and match direct binning.
    const auto& h = t.counts.at("hist");
    QCOMPARE(int(h.size()), opts.histBins);
    std::vector<int64_t> rh(h.size(), 0);
    const double lo = t.get("hist_lo"), hi = t.get("hist_hi");
    QCOMPARE(lo, T.mn);
    QCOMPARE(hi, T.mx);
    const double inv = 1.0 / ((hi - lo) / opts.histBins); // bin = floor((x − lo) · (1/w))
    for (double x : all)
        ++rh[size_t(std::clamp<int64_t>(int64_t((x - lo) * inv), 0, opts.histBins - 1))];
    QVERIFY(h == rh);
    int64_t hs = 0, ls = 0;
    for (auto c : h) hs += c;
    for (auto c : t.counts.at("abs_log2_hist")) ls += c;
    QCOMPARE(hs, int64_t(all.size()));
    QCOMPARE(ls, int64_t(all.size()));
    // Per output channel (rows) and per input channel (columns).
    for (int64_t r = 0; r < R; ++r) compareRef(t, "out", size_t(r), refStats(rows[size_t(r)]), w);
    for (int64_t c = 0; c < C; ++c) {
        std::vector<double> col(static_cast<size_t>(R));
        for (int64_t r = 0; r < R; ++r) col[size_t(r)] = rows[size_t(r)][size_t(c)];
        compareRef(t, "in", size_t(c), refStats(col), w);
    }
    int64_t oi = 0, oo = 0;
    for (double v : t.array("in_absmax")) oi += v >= 6;
    for (double v : t.array("out_absmax")) oo += v >= 6;
    QCOMPARE(t.get("outlier_in_channels_ge6"), double(oi));
    QCOMPARE(t.get("outlier_out_channels_ge6"), double(oo));
    // Quantization previews.
    double sig = 0;
    for (double x : all) sig += x * x;
    for (const PreviewConfig& c : opts.previews) {
        double e = 0;
        if (c.group < 0) {
            // per tensor: one scale from the tensor's extrema, applied to every element
            std::vector<double> ext = {T.mn, T.mx};
            for (auto& row : rows) {
                std::vector<double> g = row;
                g.push_back(T.mn);
                g.push_back(T.mx); // same scale; the two extra values' errors are removed below
                e += refRtn(g, c) - refRtn(ext, c);
            }
        } else if (c.group == 0) {
            for (auto& row : rows) e += refRtn(row, c);
        } else {
            for (auto& row : rows)
                for (int64_t g0 = 0; g0 < C; g0 += c.group) {
                    std::vector<double> g(row.begin() + g0,
                                          row.begin() + std::min<int64_t>(C, g0 + c.group));
                    e += refRtn(g, c);
                }
        }
        const std::string k = "preview." + c.label() + ".";
        CHECK_CLOSE(t.get(k + "mse"), e / T.n, 1e-15, w + " " + k + "mse");
        CHECK_CLOSE(t.get(k + "rel_fro"), std::sqrt(e / sig), 1e-12, w + " " + k + "rel_fro");
        CHECK_CLOSE(t.get(k + "sqnr_db"), 10 * std::log10(sig / e), 1e-12, w + " " + k + "sqnr");
    }
}

WeightStatsOptions testWeightOptions() {
    WeightStatsOptions o;
    // 48 does not divide 64/128/172/512: the last group of each row is shorter.
    o.previews = {{4, 48, false}, {8, 0, true}, {3, -1, false}, {4, 32, true}};
    o.histBins = 100;
    return o;
}

/// Keeps a copy of everything the stats observer sees, keyed the same way.
class CaptureObserver final : public Observer {
public:
    std::map<std::string, std::vector<float>> data;
    std::map<std::string, int64_t> dims;
    std::map<std::string, int64_t> heads;
    void put(const std::string& n, const float* x, int64_t t, int64_t d, int64_t h = 1) {
        auto& v = data[n];
        v.insert(v.end(), x, x + t * d);
        dims[n] = d;
        heads[n] = h;
    }
    void onLinearInput(int layer, LinearRole role, const std::string&, const float* x,
                       int64_t nTokens, int64_t dim) override {
        const std::string L = "layers." + std::to_string(layer) + ".";
        if (role == LinearRole::Q) put(L + "attn_in", x, nTokens, dim);
        if (role == LinearRole::O) put(L + "attn.o", x, nTokens, dim);
        if (role == LinearRole::Gate) put(L + "mlp_in", x, nTokens, dim);
        if (role == LinearRole::Down) put(L + "mlp.down", x, nTokens, dim);
        if (role == LinearRole::LmHead) put("lm_head", x, nTokens, dim);
    }
    void onKV(int layer, const float* kp, const float* k, const float* v, int64_t t, int64_t h,
              int64_t hd, int64_t) override {
        const std::string L = "layers." + std::to_string(layer) + ".";
        put(L + "k_pre_rope", kp, t, h * hd, h);
        put(L + "k", k, t, h * hd, h);
        put(L + "v", v, t, h * hd, h);
    }
    void onResidual(int layer, const float* x, int64_t t, int64_t d) override {
        put("layers." + std::to_string(layer) + ".residual", x, t, d);
    }
};

class CancelAfter final : public Progress {
public:
    explicit CancelAfter(int n) : m_left(n) {}
    bool report(double, std::string_view) override { return --m_left > 0; }
    int m_left;
};

} // namespace

class TestStats : public QObject {
    Q_OBJECT
private slots:
    void momentsMergeAndHistograms() {
        std::mt19937 rng(7);
        std::normal_distribution<float> nd(3.0f, 2.0f);
        std::vector<double> v;
        Moments all;
        AdaptiveHistogram h(64);
        for (int b = 0; b < 20; ++b) {
            std::vector<double> part;
            const float scale = float(1 << (b / 4)); // the range keeps growing
            double am = 0;
            std::vector<float> f;
            for (int i = 0; i < 50 + b; ++i) {
                f.push_back(nd(rng) * scale);
                am = std::max(am, std::fabs(double(f.back())));
            }
            h.ensureRange(am);
            for (float x : f) h.add(x), part.push_back(x), v.push_back(x);
            const Ref r = refStats(part);
            Moments m;
            m.n = r.n, m.mean = r.mean;
            for (double x : part) {
                const double d = x - r.mean;
                m.m2 += d * d, m.m3 += d * d * d, m.m4 += d * d * d * d;
            }
            all.merge(m);
        }
        const Ref R = refStats(v);
        CHECK_CLOSE(all.mean, R.mean, 1e-12, std::string("merged mean"));
        CHECK_CLOSE(all.stddev(), R.sd, 1e-12, std::string("merged std"));
        CHECK_CLOSE(all.kurtosis(), R.kurt, 1e-12, std::string("merged kurtosis"));
        CHECK_CLOSE(all.skewness(), R.skew, 1e-12, std::string("merged skewness"));
        // The grown histogram equals direct binning at the final range.
        std::vector<int64_t> d(64, 0);
        const double w = 2 * h.range / 64;
        for (double x : v)
            ++d[size_t(std::clamp<int64_t>(int64_t(std::floor((x + h.range) / w)), 0, 63))];
        QVERIFY(h.counts == d);
        int64_t s = 0;
        for (auto c : h.counts) s += c;
        QCOMPARE(s, int64_t(v.size()));
        QCOMPARE(PreviewConfig({4, 128, false}).label(), std::string("w4g128a"));
        QCOMPARE(sha256Hex("abc", 3),
                 std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    }

    void weightStatsTinyRandom() {
        LCW_REQUIRE_SHARED(kTinyRandom);
        auto m = Model::load(lcwtest::sharedPath(kTinyRandom));
        int n = 0;
        for (const TensorView& t : m->tensors())
            if (t.shape.size() == 2) {
                checkWeightTensor(t, testWeightOptions());
                ++n;
            }
        QVERIFY(n >= 9);
    }

    void weightStatsDemoModel() {
        auto m = Model::load(demoPath());
        for (const TensorView& t : m->tensors())
            if (t.shape.size() == 2) checkWeightTensor(t, testWeightOptions());
        // Whole-model pass: every 2-D tensor, layer indices, cancellation between tensors.
        std::vector<TensorStats> out;
        NullProgress np;
        QCOMPARE(computeWeightStats(*m, {}, out, np), Status::Ok);
        QCOMPARE(int(out.size()), 36);
        QCOMPARE(out.front().layer, -1);
        QCOMPARE(out[1].layer, 0);
        std::vector<TensorStats> part;
        CancelAfter c(3);
        QCOMPARE(computeWeightStats(*m, {}, part, c), Status::Cancelled);
        QVERIFY(part.size() < out.size());
    }

    void weightStatsQuantizedGguf() {
        // Q4_K/Q6_K blocks: statistics are of the dequantized values the model computes with.
        LCW_REQUIRE_SHARED(kQ4km);
        auto m = Model::load(lcwtest::sharedPath(kQ4km));
        int quant = 0;
        for (const TensorView& t : m->tensors())
            if (t.shape.size() == 2 && t.dtype != DType::F32) {
                checkWeightTensor(t, testWeightOptions());
                ++quant;
            }
        QVERIFY(quant > 0);
    }

    void relativeWeightOutlierChannels() {
        // Weights sit far below LLM.int8()'s |x| ≥ 6, so the absolute count says 0; a channel at
        // 4× the typical abs-max must still be found, relative to its tensor.
        const int64_t R = 64, C = 256, hot = 17;
        std::vector<float> w(size_t(R * C));
        std::mt19937 rng(7);
        std::uniform_real_distribution<float> u(-0.05f, 0.05f);
        for (int64_t r = 0; r < R; ++r)
            for (int64_t c = 0; c < C; ++c) {
                float v = r == 0 ? 0.05f : u(rng); // every column's abs-max is exactly 0.05f
                if (c == hot) v *= 4.0f;           // ... except this one's: 4× (exact)
                w[size_t(r * C + c)] = v;
            }
        TensorView tv;
        tv.name = "layers.0.mlp.down";
        tv.dtype = DType::F32;
        tv.shape = {R, C};
        tv.data = reinterpret_cast<const std::byte*>(w.data());
        tv.nbytes = w.size() * sizeof(float);
        const TensorStats t = computeTensorStats(tv, {});
        QCOMPARE(t.get("outlier_in_channels_ge6"), 0.0); // the absolute threshold misses it
        QCOMPARE(t.get("outlier_rel_k"), kDefaultOutlierK);
        QCOMPARE(t.get("in_absmax_median"), double(0.05f));
        QCOMPARE(t.get("outlier_in_channels_rel"), 1.0);
        // Every row holds the hot column: the rows are even, none stands out.
        QCOMPARE(t.get("outlier_out_channels_rel"), 0.0);
        QCOMPARE(t.get("out_absmax_median"), relativeOutlierChannels(t.array("out_absmax")).median);
        const auto& in = t.array("in_absmax");
        RelativeOutliers o = relativeOutlierChannels(in);
        QCOMPARE(o.channels, std::vector<int64_t>{hot});
        QCOMPARE(o.median, double(0.05f));
        QCOMPARE(o.threshold, kDefaultOutlierK * double(0.05f));
        // k is configurable: at 4 the channel (exactly 4×) is still marked, at 4.5 it is not.
        QCOMPARE(relativeOutlierChannels(in, 4.0).channels, std::vector<int64_t>{hot});
        QVERIFY(relativeOutlierChannels(in, 4.5).channels.empty());
        QCOMPARE(relativeOutlierChannels(in, 4.5).k, 4.5);
        // Even count: median = mean of the two middle values; zeros and non-finite entries.
        o = relativeOutlierChannels({1, 2, 3, 40}, 3.0);
        QCOMPARE(o.median, 2.5);
        QCOMPARE(o.channels, std::vector<int64_t>{3});
        o = relativeOutlierChannels({0, 0, 0, 0.5, NAN}, 3.0);
        QCOMPARE(o.median, 0.0);
        QCOMPARE(o.channels, std::vector<int64_t>{3}); // zeros never, NaN never
        QVERIFY(relativeOutlierChannels({}, 3.0).channels.empty());

        // A file written before these scalars existed is still read, and the layer ranking
        // counts the channels from the per-channel array.
        StatsReport rep;
        rep.hasWeights = true;
        rep.nLayers = 1;
        rep.weights.push_back(t);
        rep.weights.back().layer = 0;
        for (const char* k : {"outlier_rel_k", "in_absmax_median", "out_absmax_median",
                              "outlier_in_channels_rel", "outlier_out_channels_rel"})
            rep.weights.back().scalars.erase(k);
        const std::string path = lcwtest::tempDir("stats-rel") + "/old.h5";
        StatsStore::save(path, rep);
        const StatsReport back = StatsStore::load(path);
        QVERIFY(std::isnan(back.weights.at(0).get("outlier_in_channels_rel")));
        const auto j = layerRanking(back);
        QCOMPARE(j["weight_outlier_k"].get<double>(), kDefaultOutlierK);
        QCOMPARE(j["layers"][0]["weight_outlier_channels"].get<int64_t>(), int64_t(1));
    }

    void quantGridLevelsMatchThePreviewQuantizer() {
        // Symmetric 3 bits over [-0.6, 0.3]: s = 0.6/3, levels -4s..3s.
        auto g = quantGridLevels(3, true, -0.6, 0.3);
        QCOMPARE(int(g.size()), 8);
        QVERIFY(std::fabs(g.front() + 0.8) < 1e-12 && std::fabs(g.back() - 0.6) < 1e-12);
        // Asymmetric 2 bits over [0.5, 2]: range widened to [0, 2], s = 2/3, z = 0.
        g = quantGridLevels(2, false, 0.5, 2.0);
        QCOMPARE(int(g.size()), 4);
        QVERIFY(std::fabs(g[1] - 2.0 / 3.0) < 1e-12 && std::fabs(g[3] - 2.0) < 1e-12);
        // Every level is a fixed point of RTN onto the grid, and zero is representable.
        g = quantGridLevels(4, false, -0.37, 1.21);
        QVERIFY(std::any_of(g.begin(), g.end(), [](double v) { return std::fabs(v) < 1e-12; }));
        QVERIFY(quantGridLevels(0, true, -1, 1).empty());
        QVERIFY(quantGridLevels(4, true, 0, 0).empty());
        QVERIFY(quantGridLevels(4, true, 1, -1).empty());
    }

    void activationSitesOfOtherArchitectures() {
        // fc1/fc2 MLPs (OPT) report their MLP input, MoE experts get their own sites, Mamba's
        // projections are recorded under their canonical names.
        const std::map<std::string, std::vector<std::string>> want = {
            {"opt", {"layers.0.attn_in", "layers.0.mlp_in", "layers.0.mlp.down", "lm_head"}},
            {"mixtral_moe", {"layers.0.mlp.experts.0_in", "layers.0.mlp.experts.0.down"}},
            {"mamba", {"layers.0.mixer.in_proj", "layers.0.mixer.out_proj"}}};
        for (const auto& [arch, sites] : want) {
            const std::string dir = "models/tiny-random/" + arch + "/model";
            if (!lcwtest::exists(lcwtest::sharedPath(dir))) QSKIP("tiny-random models not found");
            auto m = Model::load(lcwtest::sharedPath(dir));
            CalibrationOptions co;
            co.textFile = lcwtest::sourcePath("resources/data/tinystories_eval.txt");
            co.samples = 2;
            co.seqLen = 24;
            std::vector<TensorStats> out;
            CalibrationInfo info;
            NullProgress np;
            QCOMPARE(runCalibration(*m, co, out, info, np), Status::Ok);
            for (const auto& name : sites) {
                const auto it = std::find_if(out.begin(), out.end(),
                                             [&](const TensorStats& t) { return t.name == name; });
                QVERIFY2(it != out.end(), (arch + ": no site " + name).c_str());
                QVERIFY(it->get("count") > 0);
            }
        }
    }

    void activationStatsMatchCapturedActivations() {
        auto m = Model::load(demoPath());
        SessionOptions so;
        so.contextLength = 96;
        so.batchSize = 40; // several batches per sequence: the histogram grows between them
        Session s(*m, so);
        CaptureObserver cap;
        ActivationStatsObserver obs;
        s.addObserver(&cap);
        s.addObserver(&obs);
        const auto ids = m->tokenizer().encode("Once upon a time, there was a little girl named "
                                               "Lily. She loved to play outside in the park. One "
                                               "day she saw a big red ball and ran to get it.",
                                               true);
        std::vector<float> logits;
        for (int rep = 0; rep < 2; ++rep) {
            s.reset();
            std::vector<int32_t> seq(ids.begin(), ids.begin() + std::min<size_t>(ids.size(), 90));
            s.forward(seq, logits, true); // all logits: lm_head sees every token
        }
        const auto res = obs.results();
        QCOMPARE(res.size(), cap.data.size());
        QCOMPARE(int(res.size()), 5 * 8 + 1);
        for (const TensorStats& t : res) {
            const auto& x = cap.data.at(t.name);
            const int64_t D = cap.dims.at(t.name), H = cap.heads.at(t.name),
                          N = int64_t(x.size()) / D;
            const std::string w = t.name;
            QCOMPARE(t.shape, (std::vector<int64_t>{N, D}));
            std::vector<double> all(x.begin(), x.end());
            const Ref T = refStats(all);
            CHECK_CLOSE(t.get("mean"), T.mean, T.sd, w + " mean");
            CHECK_CLOSE(t.get("std"), T.sd, 1e-12, w + " std");
            CHECK_CLOSE(t.get("kurtosis"), T.kurt, 1e-12, w + " kurtosis");
            CHECK_CLOSE(t.get("skewness"), T.skew, 1e-3, w + " skewness");
            CHECK_CLOSE(t.get("absmax"), T.absmax, 1e-12, w + " absmax");
            CHECK_CLOSE(t.get("min"), T.mn, 1e-12, w + " min");
            CHECK_CLOSE(t.get("max"), T.mx, 1e-12, w + " max");
            for (double p : kPercentiles) {
                // approximate by design: within one key bin (2^-7 relative)
                const double ref = refPercentile(all, p);
                QVERIFY2(std::fabs(t.get(percentileKey(p)) - ref) <= 0.008 * ref + 1e-30,
                         qPrintable(QString::fromStdString(w + " " + percentileKey(p))));
            }
            int64_t ge6 = 0;
            for (double v : all) ge6 += std::fabs(v) >= 6.0;
            QCOMPARE(t.get("count_abs_ge6"), double(ge6));
            for (int64_t c = 0; c < D; ++c) {
                std::vector<double> col(static_cast<size_t>(N));
                for (int64_t i = 0; i < N; ++i) col[size_t(i)] = x[size_t(i * D + c)];
                const Ref r = refStats(col);
                compareRef(t, "ch", size_t(c), r, w);
                CHECK_CLOSE(t.array("ch_mean_abs")[size_t(c)], r.meanAbs, 1e-12, w + " mean|x|");
            }
            auto sorted = t.array("ch_absmax");
            std::sort(sorted.rbegin(), sorted.rend());
            QVERIFY(t.array("ch_absmax_sorted") == sorted);
            int64_t oc = 0;
            for (double v : t.array("ch_absmax")) oc += v >= 6;
            QCOMPARE(t.get("outlier_channels_ge6"), double(oc));
            const auto& ta = t.array("tok_absmax");
            QCOMPARE(int64_t(ta.size()), N);
            for (int64_t i = 0; i < N; ++i) {
                double m2 = 0;
                for (int64_t c = 0; c < D; ++c)
                    m2 = std::max(m2, std::fabs(double(x[size_t(i * D + c)])));
                QCOMPARE(ta[size_t(i)], m2);
                if (H > 1)
                    for (int64_t h = 0; h < H; ++h) {
                        double hm = 0;
                        for (int64_t c = h * (D / H); c < (h + 1) * (D / H); ++c)
                            hm = std::max(hm, std::fabs(double(x[size_t(i * D + c)])));
                        QCOMPARE(t.array("tok_head_absmax")[size_t(i * H + h)], hm);
                    }
            }
            if (H > 1) {
                QCOMPARE(t.get("heads"), double(H));
                for (int64_t h = 0; h < H; ++h) {
                    std::vector<double> hv;
                    for (int64_t i = 0; i < N; ++i)
                        for (int64_t c = h * (D / H); c < (h + 1) * (D / H); ++c)
                            hv.push_back(x[size_t(i * D + c)]);
                    compareRef(t, "head", size_t(h), refStats(hv), w);
                }
            }
            // Adaptive histogram = direct binning at the final range; counts sum to elements.
            const auto& hc = t.counts.at("hist");
            const double R = t.get("hist_hi");
            QCOMPARE(t.get("hist_lo"), -R);
            QVERIFY(R >= T.absmax);
            std::vector<int64_t> d(hc.size(), 0);
            const double bw = 2 * R / double(hc.size());
            for (double v : all)
                ++d[size_t(std::clamp<int64_t>(int64_t(std::floor((v + R) / bw)), 0,
                                               int64_t(hc.size()) - 1))];
            QVERIFY2(hc == d, qPrintable(QString::fromStdString(w + " histogram")));
            int64_t hs = 0, ls = 0;
            for (auto c : hc) hs += c;
            for (auto c : t.counts.at("abs_log2_hist")) ls += c;
            QCOMPARE(hs, int64_t(all.size()));
            QCOMPARE(ls, int64_t(all.size()));
        }
    }

    void kvChannelUnevennessOnDemoModel() {
        auto m = Model::load(demoPath());
        CalibrationOptions co;
        co.samples = 4;
        co.seqLen = 128;
        std::vector<TensorStats> out;
        CalibrationInfo info;
        NullProgress np;
        QCOMPARE(runCalibration(*m, co, out, info, np), Status::Ok);
        QVERIFY(info.builtin);
        QCOMPARE(info.tokens, int64_t(512));
        QCOMPARE(info.sha256.size(), size_t(64));
        StatsReport r;
        r.activations = out;
        const double k = meanUnevenness(r, "k"), kp = meanUnevenness(r, "k_pre_rope"),
                     v = meanUnevenness(r, "v");
        qInfo("K/V per-channel abs-max unevenness (max/median, mean of 5 layers): K post-RoPE "
              "%.3f, K pre-RoPE %.3f, V %.3f; K/V = %.2f (post), %.2f (pre)",
              k, kp, v, k / v, kp / v);
        QVERIFY(k > v);
        QVERIFY(kp > v);
    }

    void storeRoundTripAndErrors() {
        auto m = Model::load(demoPath());
        StatsOptions so;
        so.calibration.samples = 2;
        so.calibration.seqLen = 64;
        so.weight.previews = {{4, 48, false}, {8, 0, true}};
        StatsReport r;
        NullProgress np;
        QCOMPARE(computeStats(*m, so, r, np), Status::Ok);
        const std::string dir = lcwtest::tempDir("stats");
        const std::string path = dir + "/s.h5";
        StatsStore::save(path, r);
        QCOMPARE(int(std::distance(std::filesystem::directory_iterator(dir),
                                   std::filesystem::directory_iterator())),
                 1); // no temporary file left
        const StatsReport b = StatsStore::load(path);
        QCOMPARE(b.schemaVersion, kStatsSchemaVersion);
        QCOMPARE(b.modelFingerprint, modelFingerprint(*m));
        QCOMPARE(b.statsKey, statsKey(so));
        QCOMPARE(b.nLayers, int64_t(5));
        QCOMPARE(b.calibration.sha256, r.calibration.sha256);
        QCOMPARE(b.calibration.tokens, int64_t(128));
        QCOMPARE(b.previews.size(), size_t(2));
        QCOMPARE(b.previews[0].label(), std::string("w4g48a"));
        QCOMPARE(b.previews[1].label(), std::string("w8cs"));
        QCOMPARE(b.summaryJson, r.summaryJson);
        QCOMPARE(b.weights.size(), r.weights.size());
        QCOMPARE(b.activations.size(), r.activations.size());
        for (size_t s = 0; s < 2; ++s) {
            const auto& A = s ? r.activations : r.weights;
            const auto& B = s ? b.activations : b.weights;
            for (size_t i = 0; i < A.size(); ++i) {
                QCOMPARE(B[i].name, A[i].name);
                QCOMPARE(B[i].kind, A[i].kind);
                QCOMPARE(B[i].layer, A[i].layer);
                QCOMPARE(B[i].shape, A[i].shape);
                QCOMPARE(B[i].dtype, A[i].dtype);
                QVERIFY(B[i].scalars == A[i].scalars);
                QVERIFY(B[i].arrays == A[i].arrays);
                QVERIFY(B[i].counts == A[i].counts);
            }
        }
        const auto summary = nlohmann::json::parse(b.summaryJson);
        QCOMPARE(summary["layers"].size(), size_t(5));

        auto expectFormatError = [&](const std::string& p, const char* needle) {
            try {
                StatsStore::load(p);
                QFAIL("no error");
            } catch (const FormatError& e) {
                QVERIFY2(std::string(e.what()).find(p) != std::string::npos, e.what());
                QVERIFY2(std::string(e.what()).find(needle) != std::string::npos, e.what());
            }
        };
        // Not HDF5 at all.
        const std::string junk = dir + "/junk.h5";
        std::ofstream(junk) << "this is not an HDF5 file";
        expectFormatError(junk, "not an HDF5 file");
        // Truncated copy of a real file.
        const std::string cut = dir + "/cut.h5";
        std::filesystem::copy_file(path, cut);
        std::filesystem::resize_file(cut, std::filesystem::file_size(path) / 3);
        expectFormatError(cut, "");
        // Another program's HDF5 file (no lcw header: read by the converter child process).
        h5::setConverter(LCW_CLI_PATH);
        const std::string foreign = dir + "/foreign.h5";
        {
            H5::H5File f(foreign, H5F_ACC_TRUNC);
            hsize_t d = 3;
            double v[3] = {1, 2, 3};
            f.createDataSet("x", H5::PredType::IEEE_F64LE, H5::DataSpace(1, &d))
                .write(v, H5::PredType::NATIVE_DOUBLE);
        }
        expectFormatError(foreign, "not an lcw statistics file");
        // Changed after writing (here by libhdf5 itself): the checksum no longer holds.
        const std::string newer = dir + "/newer.h5";
        std::filesystem::copy_file(path, newer);
        {
            H5::H5File f(newer, H5F_ACC_RDWR);
            int64_t v = 99;
            f.openAttribute("schema_version").write(H5::PredType::NATIVE_INT64, &v);
        }
        expectFormatError(newer, "checksum mismatch");
        // A newer schema version, with a valid header (resealed after zeroing the userblock).
        {
            std::fstream f(newer, std::ios::in | std::ios::out | std::ios::binary);
            f.write(std::string(h5::kUserblockSize, '\0').data(), h5::kUserblockSize);
        }
        h5::seal(newer, h5::Kind::Stats, 99);
        expectFormatError(newer, "schema version 99");
        expectFormatError(dir + "/missing.h5", "not found");
        std::filesystem::remove_all(dir);
    }

    void cancellationWritesNothing() {
        auto m = Model::load(demoPath());
        StatsOptions so;
        so.calibration.samples = 3;
        so.calibration.seqLen = 32;
        const std::string dir = lcwtest::tempDir("stats-cancel");
        const std::string path = dir + "/s.h5";
        // Cancel during the weights (2nd report) and during calibration (after all tensors).
        for (int n : {2, 38, 40}) {
            CancelAfter c(n);
            StatsReport r;
            QCOMPARE(computeAndSaveStats(*m, so, path, r, c), Status::Cancelled);
            QVERIFY(std::filesystem::is_empty(dir));
        }
        NullProgress np;
        StatsReport r;
        QCOMPARE(computeAndSaveStats(*m, so, path, r, np), Status::Ok);
        QVERIFY(std::filesystem::exists(path));
        std::filesystem::remove_all(dir);
    }

    void cliStatsJsonAndCache() {
        const std::string dir = lcwtest::tempDir("stats-cli");
        const QString out = QString::fromStdString(dir + "/demo.h5");
        auto run = [&](const QStringList& args) {
            QProcess p;
            p.start(QString::fromUtf8(LCW_CLI_PATH), args);
            p.waitForFinished(60000);
            return std::make_pair(p.exitCode(), p.readAllStandardOutput());
        };
        const QStringList args = {"stats",     QString::fromStdString(demoPath()),
                                  "--samples", "2",
                                  "--seq-len", "64",
                                  "--out",     out,
                                  "--bits",    "4",
                                  "--group",   "32",
                                  "--json",    "--quiet"};
        auto [code, text] = run(args);
        QCOMPARE(code, 0);
        auto j = nlohmann::json::parse(text.toStdString());
        QCOMPARE(j["layers"].size(), size_t(5));
        QCOMPARE(j["previews"][0].get<std::string>(), std::string("w4g32a"));
        QCOMPARE(j["cached"].get<bool>(), false);
        QCOMPARE(j["calibration"]["tokens"].get<int>(), 128);
        QVERIFY(j["kv_channel_unevenness"]["k_post_over_v"].get<double>() > 1.0);
        auto [code2, text2] = run(args);
        QCOMPARE(code2, 0);
        QCOMPARE(nlohmann::json::parse(text2.toStdString())["cached"].get<bool>(), true);
        // Table output.
        auto [code3, text3] = run({"stats", QString::fromStdString(demoPath()), "--samples", "1",
                                   "--seq-len", "32", "--quiet"});
        QCOMPARE(code3, 0);
        QVERIFY(text3.contains("layers ranked"));
        std::filesystem::remove_all(dir);
    }
};

QTEST_GUILESS_MAIN(TestStats)
#include "test_stats.moc"
