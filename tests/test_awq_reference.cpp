// AWQ against an independent double-precision port of the authors' code (mit-han-lab/llm-awq,
// awq/quantize/auto_scale.py auto_scale_block and auto_clip.py auto_clip_layer, with
// pre_quant.py run_awq's order): module-output loss, α = i/20, x̄ = mean|x| over all tokens of
// the unquantised model, every site searched on the original weights, o only without GQA, then
// auto_clip (no q/k) on a seeded random token sample. Q() is lcw's int grid (quantizeClipped):
// the search runs on what lcw stores. Also: lcw's earlier procedure as the named variant
// ("joint-linears", "inclusive", "range", "compressed") reproduces the old code's results.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/awq.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/compress/smoothquant.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <Eigen/Dense>
#include <QtTest/QtTest>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <random>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VecF = std::vector<float>;

CalibrationSet textCalibration(const Model& m, int64_t samples, int64_t seqLen) {
    std::ifstream f(lcwtest::demoTextPath());
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::vector<int32_t> ids = m.tokenizer().encode(text, true);
    CalibrationSet cal;
    for (int64_t s = 0; s < samples; ++s) {
        std::vector<int32_t> v(ids.begin() + s * seqLen, ids.begin() + (s + 1) * seqLen);
        v[0] = m.tokenizer().bosId();
        cal.samples.push_back(v);
    }
    return cal;
}

CalibrationSet randomCalibration(int64_t samples, int64_t seqLen, int32_t vocab) {
    std::mt19937 rng(7);
    CalibrationSet cal;
    for (int64_t s = 0; s < samples; ++s) {
        std::vector<int32_t> v(static_cast<size_t>(seqLen));
        for (auto& t : v) t = int32_t(3 + rng() % uint32_t(vocab - 3));
        v[0] = 1;
        cal.samples.push_back(v);
    }
    return cal;
}

Recipe awqRecipe(int64_t group, json awq = nullptr) {
    json w = {{"bits", 4},
              {"symmetric", false},
              {"granularity", "group"},
              {"group_size", group},
              {"method", "awq"}};
    if (!awq.is_null()) w["awq"] = awq;
    return Recipe::fromJson({{"lcw_recipe", 1},
                             {"name", "t"},
                             {"rules", json::array({{{"targets", {"layers.*"}}, {"weight", w}}})}});
}

CompressResult runCompress(const Model& m, const Recipe& r, const CalibrationSet& cal) {
    NullProgress np;
    CompressOptions o;
    o.calibration = &cal;
    return lcw::compress::compress(m, r, np, o);
}

VecF floatsOf(const Model& m, const std::string& name) {
    const TensorView& t = m.get(name);
    VecF v(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
    return v;
}

MatD mat(const VecF& v, int64_t rows, int64_t cols) {
    MatD m(rows, cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) m(r, j) = double(v[size_t(r * cols + j)]);
    return m;
}

/// The reference's fake quantisation: Q(W) on lcw's grid, dequantised.
VecF pseudoQuantize(const VecF& w, int64_t rows, int64_t cols, const WeightSettings& s) {
    return dequantize(quantizeClipped(w.data(), rows, cols, s, {}, "t"), "t");
}

/// One Llama block of the test model, float weights as stored.
struct Block {
    // q, k, v, o, gate, up, down
    VecF w[7];
    int64_t rows[7] = {}, cols[7] = {};
    VecF attnNorm, mlpNorm;
};

const char* kNames[7] = {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"};

Block loadBlock(const Model& m, int b) {
    Block B;
    const std::string p = "layers." + std::to_string(b) + ".";
    for (int i = 0; i < 7; ++i) {
        const TensorView& t = m.get(p + kNames[i]);
        B.rows[i] = t.rows();
        B.cols[i] = t.cols();
        B.w[i] = floatsOf(m, p + kNames[i]);
    }
    B.attnNorm = floatsOf(m, p + "attn_norm");
    B.mlpNorm = floatsOf(m, p + "mlp_norm");
    return B;
}

/// A straightforward forward of the modules of a pre-norm Llama block (HF LlamaAttention /
/// LlamaMLP), double.
struct Forward {
    const ModelSpec& s;
    int64_t T;

    MatD rms(const MatD& x, const VecF& g) const {
        MatD y = x;
        for (int64_t t = 0; t < x.rows(); ++t) {
            double ms = 0;
            for (int64_t j = 0; j < x.cols(); ++j) ms += x(t, j) * x(t, j);
            const double r = 1.0 / std::sqrt(ms / double(x.cols()) + double(s.normEps));
            for (int64_t j = 0; j < x.cols(); ++j) y(t, j) = x(t, j) * r * double(g[size_t(j)]);
        }
        return y;
    }
    void rope(MatD& a, int64_t heads) const {
        const int64_t hd = s.headDim, half = hd / 2;
        for (int64_t t = 0; t < a.rows(); ++t)
            for (int64_t h = 0; h < heads; ++h)
                for (int64_t i = 0; i < half; ++i) {
                    const double ang =
                        double(t) * std::pow(s.rope.theta, -2.0 * double(i) / double(hd));
                    const int64_t i0 = h * hd + (s.rope.interleaved ? 2 * i : i);
                    const int64_t i1 = h * hd + (s.rope.interleaved ? 2 * i + 1 : i + half);
                    const double x0 = a(t, i0), x1 = a(t, i1);
                    a(t, i0) = x0 * std::cos(ang) - x1 * std::sin(ang);
                    a(t, i1) = x0 * std::sin(ang) + x1 * std::cos(ang);
                }
    }
    /// Attention's output (after o) and o's input.
    MatD attention(const MatD& xn, const MatD& q0, const MatD& k0, const MatD& v0, const MatD& o0,
                   MatD* oIn = nullptr) const {
        MatD q = xn * q0.transpose(), k = xn * k0.transpose();
        const MatD v = xn * v0.transpose();
        rope(q, s.nHeads);
        rope(k, s.nKvHeads);
        const int64_t hd = s.headDim, rep = s.nHeads / s.nKvHeads;
        MatD o = MatD::Zero(xn.rows(), s.nHeads * hd);
        for (int64_t h = 0; h < s.nHeads; ++h) {
            const int64_t kv = h / rep;
            for (int64_t t = 0; t < xn.rows(); ++t) {
                std::vector<double> p(size_t(t + 1));
                double mx = -INFINITY, sum = 0;
                for (int64_t u = 0; u <= t; ++u) {
                    double d = 0;
                    for (int64_t i = 0; i < hd; ++i) d += q(t, h * hd + i) * k(u, kv * hd + i);
                    p[size_t(u)] = d / std::sqrt(double(hd));
                    mx = std::max(mx, p[size_t(u)]);
                }
                for (auto& e : p) sum += (e = std::exp(e - mx));
                for (int64_t u = 0; u <= t; ++u)
                    for (int64_t i = 0; i < hd; ++i)
                        o(t, h * hd + i) += p[size_t(u)] / sum * v(u, kv * hd + i);
            }
        }
        if (oIn) *oIn = o;
        return o * o0.transpose();
    }
    MatD mlp(const MatD& xn, const MatD& g0, const MatD& u0, const MatD& d0,
             MatD* mIn = nullptr) const {
        const MatD g = xn * g0.transpose(), u = xn * u0.transpose();
        MatD m(g.rows(), g.cols());
        for (int64_t t = 0; t < g.rows(); ++t)
            for (int64_t j = 0; j < g.cols(); ++j)
                m(t, j) = g(t, j) / (1.0 + std::exp(-g(t, j))) * u(t, j);
        if (mIn) *mIn = m;
        return m * d0.transpose();
    }
};

std::vector<int64_t> sampleTokens(int64_t total, int64_t count, uint64_t seed) {
    std::vector<int64_t> idx(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) idx[size_t(i)] = i;
    if (total <= count) return idx;
    std::mt19937_64 rng(seed);
    for (int64_t i = 0; i < count; ++i)
        std::swap(idx[size_t(i)], idx[size_t(i + int64_t(rng() % uint64_t(total - i)))]);
    idx.resize(size_t(count));
    std::sort(idx.begin(), idx.end());
    return idx;
}

/// llm-awq's scales for one ratio: x_max.pow(ratio).clamp(min=1e-4), / sqrt(max·min).
VecF refScales(const std::vector<double>& xmax, double ratio) {
    std::vector<double> v(xmax.size());
    double mx = 0, mn = INFINITY;
    for (size_t j = 0; j < v.size(); ++j) {
        v[j] = std::max(std::pow(xmax[j], ratio), 1e-4);
        mx = std::max(mx, v[j]), mn = std::min(mn, v[j]);
    }
    VecF s(v.size());
    for (size_t j = 0; j < v.size(); ++j) s[j] = float(v[j] / std::sqrt(mx * mn));
    return s;
}

/// auto_clip_layer: per (row, group) the shrink with the smallest mean (x·(Q(clamp w) − w))².
struct ClipRef {
    std::vector<float> ratio;
    VecF result; ///< dequantised clamped-and-quantised weights
};
ClipRef refAutoClip(const VecF& w, int64_t rows, int64_t cols, const MatD& X,
                    const WeightSettings& s) {
    const int64_t gl = s.groupSize, ng = (cols + gl - 1) / gl;
    std::vector<float> amax(size_t(rows * ng), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            amax[size_t(r * ng + j / gl)] =
                std::max(amax[size_t(r * ng + j / gl)], std::fabs(w[size_t(r * cols + j)]));
    auto clampBy = [&](const std::vector<float>& f) {
        VecF c = w;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) {
                const float mv = amax[size_t(r * ng + j / gl)] * f[size_t(r * ng + j / gl)];
                c[size_t(r * cols + j)] = std::min(std::max(c[size_t(r * cols + j)], -mv), mv);
            }
        return c;
    };
    ClipRef out;
    out.ratio.assign(size_t(rows * ng), 1.0f);
    std::vector<double> best(size_t(rows * ng), 1e300);
    for (int i = 0; i < 10; ++i) { // int(max_shrink * n_grid) = int(0.5 * 20)
        const float f = float(1.0 - double(i) / 20.0);
        const VecF q =
            pseudoQuantize(clampBy(std::vector<float>(size_t(rows * ng), f)), rows, cols, s);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t g = 0; g < ng; ++g) {
                double err = 0;
                for (int64_t t = 0; t < X.rows(); ++t) {
                    double d = 0;
                    for (int64_t j = g * gl; j < std::min(cols, (g + 1) * gl); ++j)
                        d += X(t, j) *
                             (double(q[size_t(r * cols + j)]) - double(w[size_t(r * cols + j)]));
                    err += d * d;
                }
                err /= double(X.rows());
                if (err < best[size_t(r * ng + g)])
                    best[size_t(r * ng + g)] = err, out.ratio[size_t(r * ng + g)] = f;
            }
    }
    out.result = pseudoQuantize(clampBy(out.ratio), rows, cols, s);
    return out;
}

/// What the reference does with one block: chosen ratio per site, final weights per linear,
/// mean clip ratio per clipped linear.
struct RefResult {
    std::map<std::string, double> alpha; ///< per site: qkv, o, mlp_in, down (absent = skipped)
    VecF result[7];
    double meanClip[7] = {1, 1, 1, 1, 1, 1, 1};
    ClipRef clipV; ///< v's clip (ratios per (row, group)) and its inputs
    MatD clipXv;
    VecF scaledV;
};

RefResult referenceAwqBlock(const Model& m, const CalibrationSet& cal, int b,
                            const WeightSettings& ws) {
    const ModelSpec& spec = m.spec();
    const int64_t T = cal.seqLen(), dim = spec.dim;
    Block B = loadBlock(m, b);
    const Forward F{spec, T};
    // Inputs of block b from the unquantised model (pre_quant.py: inps = layer(inps) before
    // scaling and clipping).
    const auto hidden = captureBlockHidden(m, cal, b);
    std::vector<MatD> xn1, xn2, oIn, mIn, attnRef, mlpRef;
    MatD W[7];
    for (int i = 0; i < 7; ++i) W[i] = mat(B.w[i], B.rows[i], B.cols[i]);
    for (const auto& h : hidden) {
        const MatD x = mat(h, T, dim);
        MatD a = F.rms(x, B.attnNorm), oi, mi;
        const MatD ao = F.attention(a, W[0], W[1], W[2], W[3], &oi);
        const MatD hh = x + ao;
        MatD c = F.rms(hh, B.mlpNorm);
        const MatD mo = F.mlp(c, W[4], W[5], W[6], &mi);
        xn1.push_back(a), xn2.push_back(c), oIn.push_back(oi), mIn.push_back(mi);
        attnRef.push_back(ao), mlpRef.push_back(mo);
    }
    const double N = double(hidden.size() * size_t(T));
    auto meanAbs = [&](const std::vector<MatD>& xs) {
        std::vector<double> v(size_t(xs[0].cols()), 0.0);
        for (const auto& x : xs)
            for (int64_t t = 0; t < x.rows(); ++t)
                for (int64_t j = 0; j < x.cols(); ++j) v[size_t(j)] += std::fabs(x(t, j));
        for (auto& e : v) e = double(float(e / N)); // the statistic is kept in float
        return v;
    };
    // Q(W·s)/s of one linear.
    auto fq = [&](int i, const VecF& s) {
        VecF w = B.w[i];
        for (int64_t r = 0; r < B.rows[i]; ++r)
            for (int64_t j = 0; j < B.cols[i]; ++j) w[size_t(r * B.cols[i] + j)] *= s[size_t(j)];
        VecF q = pseudoQuantize(w, B.rows[i], B.cols[i], ws);
        for (int64_t r = 0; r < B.rows[i]; ++r)
            for (int64_t j = 0; j < B.cols[i]; ++j) q[size_t(r * B.cols[i] + j)] /= s[size_t(j)];
        return mat(q, B.rows[i], B.cols[i]);
    };
    // _search_module_scale: every site on the original weights.
    auto search = [&](const std::vector<double>& xmax,
                      const std::function<double(const VecF&)>& loss, double& bestRatio) {
        double best = INFINITY;
        VecF bestS;
        for (int i = 0; i < 20; ++i) {
            const double ratio = double(i) / 20.0;
            const VecF s = refScales(xmax, ratio);
            const double l = loss(s);
            if (l < best) best = l, bestRatio = ratio, bestS = s;
        }
        return bestS;
    };
    RefResult R;
    double r1 = -1, r2 = -1, r3 = -1, r4 = -1;
    const VecF s1 = search(
        meanAbs(xn1),
        [&](const VecF& s) {
            const MatD q = fq(0, s), k = fq(1, s), v = fq(2, s);
            double l = 0;
            for (size_t i = 0; i < xn1.size(); ++i)
                l += (F.attention(xn1[i], q, k, v, W[3]) - attnRef[i]).squaredNorm();
            return l / (N * double(dim));
        },
        r1);
    R.alpha["attn_in"] = r1;
    VecF s2;
    const bool oSite = B.rows[2] == B.rows[3] && B.cols[2] == B.cols[3];
    if (oSite) {
        s2 = search(
            meanAbs(oIn),
            [&](const VecF& s) {
                const MatD o = fq(3, s);
                double l = 0;
                for (size_t i = 0; i < oIn.size(); ++i)
                    l += (oIn[i] * o.transpose() - oIn[i] * W[3].transpose()).squaredNorm();
                return l / (N * double(B.rows[3]));
            },
            r2);
        R.alpha["attn_o"] = r2;
    }
    const VecF s3 = search(
        meanAbs(xn2),
        [&](const VecF& s) {
            const MatD g = fq(4, s), u = fq(5, s);
            double l = 0;
            for (size_t i = 0; i < xn2.size(); ++i)
                l += (F.mlp(xn2[i], g, u, W[6]) - mlpRef[i]).squaredNorm();
            return l / (N * double(dim));
        },
        r3);
    R.alpha["mlp_in"] = r3;
    const VecF s4 = search(
        meanAbs(mIn),
        [&](const VecF& s) {
            const MatD d = fq(6, s);
            double l = 0;
            for (size_t i = 0; i < mIn.size(); ++i)
                l += (mIn[i] * d.transpose() - mIn[i] * W[6].transpose()).squaredNorm();
            return l / (N * double(B.rows[6]));
        },
        r4);
    R.alpha["mlp_down"] = r4;
    // apply_scale (scale_ln_fcs / scale_fc_fc), as lcw folds in float.
    auto cols = [&](int i, const VecF& s) {
        for (int64_t r = 0; r < B.rows[i]; ++r)
            for (int64_t j = 0; j < B.cols[i]; ++j)
                B.w[i][size_t(r * B.cols[i] + j)] *= s[size_t(j)];
    };
    auto rowsDiv = [&](int i, const VecF& s) {
        for (int64_t r = 0; r < B.rows[i]; ++r) {
            const float f = 1.0f / s[size_t(r)];
            for (int64_t j = 0; j < B.cols[i]; ++j) B.w[i][size_t(r * B.cols[i] + j)] *= f;
        }
    };
    for (int i : {0, 1, 2}) cols(i, s1);
    if (oSite) rowsDiv(2, s2), cols(3, s2);
    for (int i : {4, 5}) cols(i, s3);
    rowsDiv(5, s4), cols(6, s4);
    // auto_clip_block on every linear but q and k, inputs divided by the scales.
    const std::vector<int64_t> pick = sampleTokens(int64_t(N), 512, 0);
    auto rowsOf = [&](const std::vector<MatD>& xs, const VecF* s) {
        MatD X(int64_t(pick.size()), xs[0].cols());
        for (size_t k = 0; k < pick.size(); ++k)
            for (int64_t j = 0; j < X.cols(); ++j) {
                float v = float(xs[size_t(pick[k] / T)](pick[k] % T, j));
                if (s) v /= (*s)[size_t(j)];
                X(int64_t(k), j) = double(v);
            }
        return X;
    };
    for (int i = 0; i < 7; ++i) {
        if (i == 0 || i == 1) {
            R.result[i] = pseudoQuantize(B.w[i], B.rows[i], B.cols[i], ws);
            continue;
        }
        const MatD X = i == 2   ? rowsOf(xn1, &s1)
                       : i == 3 ? rowsOf(oIn, oSite ? &s2 : nullptr)
                       : i == 6 ? rowsOf(mIn, &s4)
                                : rowsOf(xn2, &s3);
        ClipRef c = refAutoClip(B.w[i], B.rows[i], B.cols[i], X, ws);
        double sum = 0;
        for (float f : c.ratio) sum += f;
        R.meanClip[i] = sum / double(c.ratio.size());
        R.result[i] = c.result;
        if (i == 2) R.clipXv = X, R.scaledV = B.w[i], R.clipV = std::move(c);
    }
    return R;
}

WeightSettings int4g(int64_t group) {
    WeightSettings s;
    s.bits = 4;
    s.symmetric = false;
    s.granularity = Granularity::Group;
    s.groupSize = group;
    s.method = WeightMethod::Awq;
    return s;
}

/// lcw's AWQ (defaults) against the port above on every block of `m`.
void checkAgainstReference(const Model& m, const CalibrationSet& cal, int64_t group) {
    const CompressResult res = runCompress(m, awqRecipe(group), cal);
    std::map<std::string, const LayerReport*> rep;
    for (const auto& l : res.layers) rep[l.name] = &l;
    const WeightSettings ws = int4g(group);
    for (int b = 0; b < int(m.spec().nLayers); ++b) {
        const RefResult R = referenceAwqBlock(m, cal, b, ws);
        const std::string p = "layers." + std::to_string(b) + ".";
        for (int i = 0; i < 7; ++i) {
            const std::string name = p + kNames[i];
            const json& d = rep.at(name)->details;
            const std::string tag = name + " " + d.dump();
            const std::string kind = i < 3    ? "attn_in"
                                     : i == 3 ? "attn_o"
                                     : i < 6  ? "mlp_in"
                                              : "mlp_down";
            if (R.alpha.count(kind)) {
                QVERIFY2(d.contains("awq_alpha"), tag.c_str());
                QVERIFY2(d["awq_alpha"].get<double>() == R.alpha.at(kind), tag.c_str());
                QCOMPARE(d["awq_objective"].get<std::string>(), std::string("module-output"));
            } else {
                QVERIFY2(!d.contains("awq_alpha"), tag.c_str());
                QCOMPARE(d["awq_site"].get<std::string>(), std::string("none"));
            }
            QVERIFY2(std::fabs(d["clip"].get<double>() - R.meanClip[i]) < 1e-9, tag.c_str());
            const VecF got = res.model->compressed(name)->values();
            QCOMPARE(got.size(), R.result[i].size());
            int64_t diff = 0;
            for (size_t k = 0; k < got.size(); ++k)
                if (std::fabs(got[k] - R.result[i][k]) > 1e-6f * (1 + std::fabs(R.result[i][k])))
                    ++diff;
            QVERIFY2(diff == 0, (tag + ": " + std::to_string(diff) + " values differ").c_str());
        }
        // The clip ratio of every (row, group) of v, from lcw's clip search on the same inputs.
        AwqOptions o;
        const VecF X = [&] {
            VecF x;
            for (int64_t t = 0; t < R.clipXv.rows(); ++t)
                for (int64_t j = 0; j < R.clipXv.cols(); ++j) x.push_back(float(R.clipXv(t, j)));
            return x;
        }();
        const TensorView& vt = m.get(p + "attn.v");
        const AwqClipResult c = awqClipQuantize(X.data(), R.clipXv.rows(), vt.cols(),
                                                R.scaledV.data(), vt.rows(), ws, o, "v");
        QCOMPARE(c.ratio, R.clipV.ratio);
    }
}

/// lcw's AWQ before the reference procedure became the default (commit 1a49f33), demo model,
/// textCalibration(8, 128), W4 g64 asym: α, mean clip, Σ values and Σ values² per layer.
struct OldRow {
    const char* name;
    double alpha, clip, sum, sumSq;
};
const OldRow kOld[] = {
    {"layers.0.mlp.down", 0.42105263157894735, 0.95156249372909463, 4.2125396728515625,
     117.58362542255782},
    {"layers.0.mlp.gate", 0.42105263157894735, 0.95290696863518209, -1.2639312744140625,
     169.80185158061795},
    {"layers.0.mlp.up", 0.42105263157894735, 0.95406975822393281, 8.877593994140625,
     209.35113278590143},
    {"layers.0.attn.k", 0.10526315789473684, 0.96406249329447746, -16.1129150390625,
     107.98241463815793},
    {"layers.0.attn.o", 0.052631578947368418, 0.94609374273568392, 3.7173614501953125,
     14.773222516174428},
    {"layers.0.attn.q", 0.10526315789473684, 0.95078124105930328, -25.773529052734375,
     230.84179239487275},
    {"layers.0.attn.v", 0.10526315789473684, 0.91093749180436134, -0.01033782958984375,
     4.1323435211670585},
    {"layers.1.mlp.down", 0.57894736842105265, 0.95338540710508823, 20.08306884765625,
     155.06668704096228},
    {"layers.1.mlp.gate", 0.15789473684210525, 0.95319766672544703, -24.851974487304688,
     207.34893185202964},
    {"layers.1.mlp.up", 0.15789473684210525, 0.95203487505746442, -18.409652709960938,
     122.52025200542994},
    {"layers.1.attn.k", 0.42105263157894735, 0.94843748956918716, -5.043701171875,
     99.518392928875983},
    {"layers.1.attn.o", 0.84210526315789469, 0.95703124161809683, 8.7245559692382812,
     13.234773701347876},
    {"layers.1.attn.q", 0.42105263157894735, 0.95390624459832907, 21.157394409179688,
     257.30880603729747},
    {"layers.1.attn.v", 0.42105263157894735, 0.93593749031424522, -0.7879638671875,
     3.1601598964771256},
    {"layers.2.mlp.down", 0.63157894736842102, 0.95338540679464734, -6.38165283203125,
     144.85053843166679},
    {"layers.2.mlp.gate", 0.10526315789473684, 0.94970929380073099, -26.816375732421875,
     173.06900374405086},
    {"layers.2.mlp.up", 0.10526315789473684, 0.95319766568583109, 35.378463745117188,
     192.10458666388877},
    {"layers.2.attn.k", 0.36842105263157893, 0.96249999105930328, -3.532470703125,
     61.309210236184299},
    {"layers.2.attn.o", 0.21052631578947367, 0.94531249161809683, 4.3188705444335938,
     20.168390002509113},
    {"layers.2.attn.q", 0.36842105263157893, 0.95546874217689037, 3.5078887939453125,
     151.77000299817882},
    {"layers.2.attn.v", 0.36842105263157893, 0.95781248994171619, 1.5640487670898438,
     5.4782276733894832},
    {"layers.3.mlp.down", 0.57894736842105265, 0.96041665847102797, -11.137481689453125,
     157.63189349928871},
    {"layers.3.mlp.gate", 0.21052631578947367, 0.95319766499275382, -29.202316284179688,
     163.46927034086548},
    {"layers.3.mlp.up", 0.21052631578947367, 0.94970929380073099, 7.4716644287109375,
     217.4303444607649},
    {"layers.3.attn.k", 0.31578947368421051, 0.96718749217689037, -1.1634521484375,
     81.513772656209767},
    {"layers.3.attn.o", 0.57894736842105265, 0.94999999273568392, 9.816497802734375,
     25.201572499587201},
    {"layers.3.attn.q", 0.31578947368421051, 0.94843749143183231, -4.589019775390625,
     194.06241974572185},
    {"layers.3.attn.v", 0.31578947368421051, 0.93593749590218067, -4.5395050048828125,
     8.7577170481672511},
    {"layers.4.mlp.down", 0.36842105263157893, 0.95286457271625602, 22.479827880859375,
     186.6775051727891},
    {"layers.4.mlp.gate", 0.31578947368421051, 0.95261626915876252, 8.1812744140625,
     147.68484011851251},
    {"layers.4.mlp.up", 0.31578947368421051, 0.95610464173693988, -7.6713714599609375,
     197.63653230457567},
    {"layers.4.attn.k", 0.15789473684210525, 0.96562499366700649, 2.567230224609375,
     43.849377268459648},
    {"layers.4.attn.o", 0.26315789473684209, 0.94765624217689037, 4.9727630615234375,
     57.257488989504054},
    {"layers.4.attn.q", 0.15789473684210525, 0.95156249031424522, 4.0114898681640625,
     107.00002301798668},
    {"layers.4.attn.v", 0.15789473684210525, 0.93437499366700649, -2.5008544921875,
     18.712062848266214},
};

} // namespace

class TestAwqReference : public QObject {
    Q_OBJECT
private slots:
    /// Demo model (GQA: 8 heads, 4 KV heads, so no o site), every block, W4 g64 asym.
    void demoModelMatchesReference() {
        auto m = Model::load(lcwtest::demoModelPath());
        checkAgainstReference(*m, textCalibration(*m, 8, 128), 64);
    }

    /// A random Llama without GQA (the o site is searched), two blocks, W4 g32 asym.
    void randomLlamaWithOSiteMatchesReference() {
        ModelSpec spec = syntheticSpec("llama", "llama-tiny");
        spec.nKvHeads = spec.nHeads;
        const std::string dir = lcwtest::tempDir("awq-ref-llama");
        NullProgress np;
        SynthOptions so;
        so.weightStd = 0.1;
        QCOMPARE(writeSyntheticModel(spec, dir, so, np), Status::Ok);
        auto m = Model::load(dir);
        QCOMPARE(m->spec().nKvHeads, m->spec().nHeads);
        checkAgainstReference(*m, randomCalibration(6, 64, int32_t(m->spec().vocab)), 32);
    }

    /// lcw's earlier AWQ as named options gives the old code's results bit for bit.
    void jointLinearsVariantIsTheOldAwq() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = textCalibration(*m, 8, 128);
        const auto res = runCompress(*m,
                                     awqRecipe(64, {{"objective", "joint-linears"},
                                                    {"grid_rule", "inclusive"},
                                                    {"clip", "range"},
                                                    {"stats", "compressed"}}),
                                     cal);
        std::map<std::string, const LayerReport*> rep;
        for (const auto& l : res.layers) rep[l.name] = &l;
        QCOMPARE(rep.size(), std::size(kOld));
        for (const OldRow& o : kOld) {
            const LayerReport& l = *rep.at(o.name);
            QCOMPARE(l.details["awq_alpha"].get<double>(), o.alpha);
            QCOMPARE(l.details["awq_objective"].get<std::string>(), std::string("joint-linears"));
            QCOMPARE(l.details["clip_mode"].get<std::string>(), std::string("range"));
            QVERIFY(std::fabs(l.details["clip"].get<double>() - o.clip) < 1e-12);
            const auto v = res.model->compressed(o.name)->values();
            double s = 0, s2 = 0;
            for (float x : v) s += x, s2 += double(x) * x;
            QVERIFY2(s == o.sum && s2 == o.sumSq, o.name);
        }
        // The reference default differs from it (α grid i/20, module output, auto clip).
        const auto def = runCompress(*m, awqRecipe(64), cal);
        int same = 0;
        for (const auto& l : def.layers)
            if (l.details.contains("awq_alpha") &&
                l.details["awq_alpha"].get<double>() ==
                    rep.at(l.name)->details["awq_alpha"].get<double>())
                ++same;
        QVERIFY(same < int(def.layers.size()));
    }

    /// SmoothQuant takes max|X| from the unquantised model (smoothquant's get_act_scales runs
    /// the original model), also for blocks after quantised ones; "stats": "compressed" keeps
    /// lcw's earlier capture through the overlay.
    void smoothQuantStatsFromTheUnquantisedModel() {
        auto m = Model::load(lcwtest::demoModelPath());
        const CalibrationSet cal = textCalibration(*m, 8, 128);
        auto recipe = [](json sq) {
            return Recipe::fromJson(
                {{"lcw_recipe", 1},
                 {"name", "sq"},
                 {"rules", json::array({{{"targets", {"layers.*"}},
                                         {"weight", {{"bits", 3}, {"granularity", "channel"}}},
                                         {"smoothquant", sq}}})}});
        };
        NullProgress np;
        const auto base = captureBlockInputs(*m, cal, 2, {}, np);
        const LinearInputs& x = base.at("layers.2.attn.q");
        VecF w[3];
        std::vector<const float*> ws;
        std::vector<int64_t> rows;
        for (int i = 0; i < 3; ++i) {
            w[i] = floatsOf(*m, std::string("layers.2.") + kNames[i]);
            ws.push_back(w[i].data());
            rows.push_back(m->get(std::string("layers.2.") + kNames[i]).rows());
        }
        const VecF s = smoothQuantScales(x.absMax, ws, rows, x.cols, 0.5);
        const VecF norm = floatsOf(*m, "layers.2.attn_norm");
        auto maxDiff = [&](const CompressResult& r) {
            const VecF got = r.model->compressed("layers.2.attn_norm")->values();
            double d = 0;
            for (size_t j = 0; j < got.size(); ++j)
                d = std::max(d, double(std::fabs(got[j] - norm[j] / s[j])));
            return d;
        };
        const auto fp = runCompress(*m, recipe({{"alpha", 0.5}}), cal);
        QVERIFY(maxDiff(fp) < 1e-7);
        const auto comp = runCompress(*m, recipe({{"alpha", 0.5}, {"stats", "compressed"}}), cal);
        QVERIFY(maxDiff(comp) > 1e-5);
        for (const auto& l : comp.layers)
            if (l.name == "layers.2.attn.q")
                QCOMPARE(l.details.value("smoothquant_stats", ""), std::string("compressed"));
    }

    void grids() {
        AwqOptions o;
        const auto a = awqAlphas(o);
        QCOMPARE(a.size(), size_t(20));
        QCOMPARE(a.front(), 0.0);
        QCOMPARE(a.back(), 0.95);
        o.gridRule = AwqGridRule::Inclusive;
        QCOMPARE(awqAlphas(o).back(), 1.0);
        // The clip sample: distinct, sorted, seeded, never a fixed stride.
        const auto t = awqSampleTokens(8 * 128, 512, 0);
        QCOMPARE(t.size(), size_t(512));
        QVERIFY(std::adjacent_find(t.begin(), t.end(), std::greater_equal<int64_t>()) == t.end());
        QCOMPARE(t, sampleTokens(8 * 128, 512, 0));
        QVERIFY(t != awqSampleTokens(8 * 128, 512, 1));
        QCOMPARE(awqSampleTokens(100, 512, 0).size(), size_t(100));
    }

    void recipeKeys() {
        auto bad = [](json awq, const char* field) {
            try {
                awqRecipe(64, awq);
                QFAIL("accepted");
            } catch (const Error& e) {
                QVERIFY2(std::string(e.what()).find(field) != std::string::npos, e.what());
            }
        };
        bad({{"objective", "output"}}, "weight.awq.objective");
        bad({{"grid_rule", "all"}}, "weight.awq.grid_rule");
        bad({{"clip", "none"}}, "weight.awq.clip");
        bad({{"stats", "overlay"}}, "weight.awq.stats");
        bad({{"rows", 0}}, "weight.awq.rows");
        awqRecipe(64, {{"objective", "joint-linears"},
                       {"grid_rule", "inclusive"},
                       {"clip", "range"},
                       {"stats", "compressed"},
                       {"rows", 256},
                       {"seed", 3},
                       {"grid", 10}});
    }
};

QTEST_GUILESS_MAIN(TestAwqReference)
#include "test_awq_reference.moc"
