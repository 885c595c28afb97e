// Rotations (QuaRot): the orthogonal transforms against a double-precision reference built in
// the test, the folded weights against dense matrix products, the rotated model's logits against
// the base's (demo model and other RMSNorm families), refusals, and the effect on W4A4 / KV4.
#include "core/common/error.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/compress/rotation.h"
#include "core/export/gguf_export.h"
#include "core/export/llmcompressor.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "core/runtime/hadamard.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <fstream>

using namespace lcw;
using namespace lcw::compress;
using lcw::runtime::OrthoTransform;
using json = nlohmann::json;

namespace {

/// Sylvester–Hadamard entry (i, j) of order p, divided by √p: (−1)^popcount(i & j) / √p.
double hadamard(int64_t i, int64_t j, int64_t p) {
    return (std::popcount(uint64_t(i & j)) % 2 ? -1.0 : 1.0) / std::sqrt(double(p));
}

/// Dense row-major product of a [n, k] and b [k, m], in double.
std::vector<double> matmul(const std::vector<double>& a, const std::vector<double>& b, int64_t n,
                           int64_t k, int64_t m) {
    std::vector<double> c(size_t(n * m), 0.0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t t = 0; t < k; ++t)
            for (int64_t j = 0; j < m; ++j)
                c[size_t(i * m + j)] += a[size_t(i * k + t)] * b[size_t(t * m + j)];
    return c;
}
std::vector<double> transpose(const std::vector<double>& a, int64_t n, int64_t m) {
    std::vector<double> t(size_t(n * m));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) t[size_t(j * n + i)] = a[size_t(i * m + j)];
    return t;
}
std::vector<double> toDouble(const TensorView& t) {
    std::vector<float> f(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        dequantizeRow(t.dtype, t.row(r), f.data() + r * t.cols(), t.cols());
    return {f.begin(), f.end()};
}
/// blockdiag(T, T, ...) of `blocks` copies.
std::vector<double> blockDiag(const std::vector<double>& t, int64_t n, int64_t blocks) {
    const int64_t N = n * blocks;
    std::vector<double> d(size_t(N * N), 0.0);
    for (int64_t b = 0; b < blocks; ++b)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j)
                d[size_t((b * n + i) * N + b * n + j)] = t[size_t(i * n + j)];
    return d;
}
double maxDiff(const std::vector<double>& a, const TensorView& t) {
    const auto b = toDouble(t);
    double d = a.size() == b.size() ? 0 : 1e30;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

Recipe rotationRecipe(json rot, json rules = json::array()) {
    return Recipe::fromJson(
        {{"lcw_recipe", 1}, {"name", "rot"}, {"rotation", rot}, {"rules", rules}});
}

std::vector<float> logitsOf(const WeightSource& w, const std::vector<int32_t>& ids) {
    Session s(w);
    std::vector<float> l;
    s.forward(ids, l, true);
    return l;
}

/// max |a − b| / max(1, max |a|).
double relMaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, m = 1;
    for (size_t i = 0; i < a.size(); ++i) {
        d = std::max(d, std::fabs(double(a[i]) - b[i]));
        m = std::max(m, std::fabs(double(a[i])));
    }
    return a.size() == b.size() ? d / m : 1e30;
}

/// Mean KL(p_ref ‖ p) over the positions of [n, vocab] logits, in double.
double meanKld(const std::vector<float>& ref, const std::vector<float>& q, int64_t vocab) {
    const int64_t n = int64_t(ref.size()) / vocab;
    double sum = 0;
    for (int64_t t = 0; t < n; ++t) {
        const float* a = ref.data() + t * vocab;
        const float* b = q.data() + t * vocab;
        double ma = a[0], mb = b[0];
        for (int64_t i = 1; i < vocab; ++i)
            ma = std::max(ma, double(a[i])), mb = std::max(mb, double(b[i]));
        double za = 0, zb = 0;
        for (int64_t i = 0; i < vocab; ++i) za += std::exp(a[i] - ma), zb += std::exp(b[i] - mb);
        for (int64_t i = 0; i < vocab; ++i) {
            const double la = a[i] - ma - std::log(za), lb = b[i] - mb - std::log(zb);
            sum += std::exp(la) * (la - lb);
        }
    }
    return sum / double(n);
}

std::vector<int32_t> demoIds(const Model& m, int64_t n, int64_t offset = 0) {
    std::ifstream f(lcwtest::demoTextPath());
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto ids = m.tokenizer().encode(text, true);
    std::vector<int32_t> v(ids.begin() + offset, ids.begin() + offset + n);
    v[0] = m.tokenizer().bosId();
    return v;
}

CompressResult compressWith(const Model& m, const Recipe& r, const CalibrationSet* cal = nullptr) {
    NullProgress np;
    CompressOptions o;
    o.calibration = cal;
    return lcw::compress::compress(m, r, np, o);
}

} // namespace

class TestRotation : public QObject {
    Q_OBJECT
private slots:
    /// Power-of-two sizes: T equals the Sylvester–Hadamard matrix / √n (no signs) or that matrix
    /// times a ±1 diagonal (signs); float application equals the double matrix-vector product.
    void powerOfTwoIsWalshHadamard() {
        for (int64_t n : {1, 2, 8, 64, 256}) {
            const auto t = OrthoTransform(n, 7, false).matrix();
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < n; ++j)
                    QVERIFY(std::fabs(t[size_t(i * n + j)] - hadamard(i, j, n)) < 1e-12);
            const auto ts = OrthoTransform(n, 7, true).matrix();
            int neg = 0;
            for (int64_t j = 0; j < n; ++j) { // column j is ±column j of H
                const double s = ts[size_t(j)] / hadamard(0, j, n);
                QVERIFY(std::fabs(std::fabs(s) - 1) < 1e-12);
                neg += s < 0;
                for (int64_t i = 0; i < n; ++i)
                    QVERIFY(std::fabs(ts[size_t(i * n + j)] - s * hadamard(i, j, n)) < 1e-12);
            }
            if (n >= 64) QVERIFY(neg > n / 4 && neg < 3 * n / 4); // random signs
        }
    }

    /// Other sizes: T = (H_p ⊗ M_m)·D/√p with M orthogonal — (H_p/√p ⊗ I)ᵀ T is block diagonal
    /// with the same orthogonal m×m block; T is orthogonal; the transpose inverts it; float
    /// application and determinism.
    void otherSizesAreKroneckerProducts() {
        for (int64_t n : {3, 12, 43, 160, 172}) {
            const OrthoTransform tr(n, 11, false);
            const int64_t p = tr.powerOfTwo(), m = tr.oddPart();
            QCOMPARE(p * m, n);
            QVERIFY(m % 2 == 1);
            const auto t = tr.matrix();
            std::vector<double> hk(size_t(n * n), 0.0); // H_p/√p ⊗ I_m
            for (int64_t a = 0; a < p; ++a)
                for (int64_t c = 0; c < p; ++c)
                    for (int64_t b = 0; b < m; ++b)
                        hk[size_t((a * m + b) * n + c * m + b)] = hadamard(a, c, p);
            const auto blocks = matmul(transpose(hk, n, n), t, n, n, n);
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < n; ++j) {
                    const bool same = i / m == j / m;
                    const double want = same ? blocks[size_t((i % m) * n + j % m)] : 0.0;
                    QVERIFY(std::fabs(blocks[size_t(i * n + j)] - want) < 1e-12);
                }
            const auto tt = matmul(transpose(t, n, n), t, n, n, n);
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < n; ++j)
                    QVERIFY(std::fabs(tt[size_t(i * n + j)] - (i == j)) < 1e-12);
            // float rows against the double product; transposed application inverts
            std::vector<float> x(size_t(3 * n));
            for (size_t i = 0; i < x.size(); ++i)
                x[i] = float(std::sin(double(i) * 0.7) + 0.1 * double(i % 5));
            std::vector<float> y = x;
            OrthoTransform(n, 11, true).apply(y.data(), 3, n, 2);
            const auto ts = OrthoTransform(n, 11, true).matrix();
            for (int64_t r = 0; r < 3; ++r)
                for (int64_t i = 0; i < n; ++i) {
                    double want = 0;
                    for (int64_t j = 0; j < n; ++j)
                        want += ts[size_t(i * n + j)] * x[size_t(r * n + j)];
                    QVERIFY(std::fabs(want - y[size_t(r * n + i)]) < 1e-5);
                }
            std::vector<double> v(x.begin(), x.begin() + n), v0 = v;
            const OrthoTransform signs(n, 11, true);
            signs.apply(v.data());
            signs.applyTransposed(v.data());
            for (int64_t i = 0; i < n; ++i)
                QVERIFY(std::fabs(v[size_t(i)] - v0[size_t(i)]) < 1e-12);
            QCOMPARE(OrthoTransform(n, 11, true).matrix(), ts);
            QVERIFY(OrthoTransform(n, 12, true).matrix() != ts);
        }
    }

    /// The folded tensors equal dense double products written here: W_q ← W_q diag(g) Rᵀ,
    /// o ← R W_o blockdiag(T_h)ᵀ, v ← blockdiag(T_h) W_v, down ← R W_down T_dᵀ, embed ← E Rᵀ,
    /// lm_head ← W diag(g_f) Rᵀ, norms 1 (llama-tiny: dim 64, hidden 160 = 32·5, GQA).
    void foldEqualsDenseReference() {
        ModelSpec spec = syntheticSpec("llama", "llama-tiny");
        const std::string dir = lcwtest::tempDir("rot-fold");
        NullProgress np;
        SynthOptions so;
        so.weightStd = 0.1;
        QCOMPARE(writeSyntheticModel(spec, dir, so, np), Status::Ok);
        auto m = Model::load(dir);
        const ModelSpec& s = m->spec();
        RotationSettings rs;
        rs.seed = 5;
        RotatedModel rot = rotateModel(*m, rs);
        const Model& r = *rot.model;
        const int64_t d = s.dim, hd = s.headDim;
        const auto R =
            OrthoTransform(d, runtime::rotationSeed(5, runtime::kRotResidual), true).matrix();
        const auto Th =
            OrthoTransform(hd, runtime::rotationSeed(5, runtime::kRotHead), false).matrix();
        const std::string p = "layers.1.";
        auto diagScale = [&](std::vector<double> w, int64_t rows, int64_t cols,
                             const std::string& norm) {
            const auto g = toDouble(m->get(norm));
            for (int64_t i = 0; i < rows; ++i)
                for (int64_t j = 0; j < cols; ++j) w[size_t(i * cols + j)] *= g[size_t(j)];
            return w;
        };
        const TensorView& q = m->get(p + "attn.q");
        auto wantQ = matmul(diagScale(toDouble(q), q.rows(), d, p + "attn_norm"),
                            transpose(R, d, d), q.rows(), d, d);
        QVERIFY(maxDiff(wantQ, r.get(p + "attn.q")) < 1e-5);
        const TensorView& v = m->get(p + "attn.v");
        auto wantV = matmul(blockDiag(Th, hd, v.rows() / hd),
                            matmul(diagScale(toDouble(v), v.rows(), d, p + "attn_norm"),
                                   transpose(R, d, d), v.rows(), d, d),
                            v.rows(), v.rows(), d);
        QVERIFY(maxDiff(wantV, r.get(p + "attn.v")) < 1e-5);
        const TensorView& o = m->get(p + "attn.o");
        const int64_t qd = o.cols();
        auto wantO = matmul(matmul(R, toDouble(o), d, d, qd),
                            transpose(blockDiag(Th, hd, qd / hd), qd, qd), d, qd, qd);
        QVERIFY(maxDiff(wantO, r.get(p + "attn.o")) < 1e-5);
        const TensorView& dn = m->get(p + "mlp.down");
        const int64_t hid = dn.cols();
        const auto Td =
            OrthoTransform(hid, runtime::rotationSeed(5, runtime::kRotDown), false).matrix();
        auto wantD =
            matmul(matmul(R, toDouble(dn), d, d, hid), transpose(Td, hid, hid), d, hid, hid);
        QVERIFY(maxDiff(wantD, r.get(p + "mlp.down")) < 1e-5);
        const TensorView& e = m->get("embed");
        QVERIFY(maxDiff(matmul(toDouble(e), transpose(R, d, d), e.rows(), d, d), r.get("embed")) <
                1e-5);
        const TensorView& lm = m->lmHead();
        auto wantLm = matmul(diagScale(toDouble(lm), lm.rows(), d, "final_norm"),
                             transpose(R, d, d), lm.rows(), d, d);
        QVERIFY(maxDiff(wantLm, r.get("lm_head")) < 1e-5);
        for (const std::string& n : {p + "attn_norm", p + "mlp_norm", std::string("final_norm")})
            for (double x : toDouble(r.get(n))) QCOMPARE(x, 1.0);
        QVERIFY(r.get("layers.0.attn.k").data != m->get("layers.0.attn.k").data);
        QVERIFY(rot.online.down && rot.online.qk);
    }

    /// The rotated model computes the base's function: logits to 1e-4 (relative to the largest
    /// logit) on the demo model, with and without the online transforms, in memory and after an
    /// overlay round trip.
    void demoLogitsUnchanged() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoIds(*m, 96);
        const auto base = logitsOf(*m, ids);
        for (const json& rot : {json{{"seed", 0}}, json{{"seed", 3}, {"online_down", false}},
                                json{{"seed", 1}, {"online_qk", false}}}) {
            const auto res = compressWith(*m, rotationRecipe(rot));
            QVERIFY(res.model);
            const auto l = logitsOf(*res.model, ids);
            const double d = relMaxDiff(base, l);
            QVERIFY2(d < 1e-4, (rot.dump() + " " + std::to_string(d)).c_str());
            // the weights did change (not a no-op)
            QVERIFY(res.model->compressed("layers.0.attn.q"));
            QVERIFY(res.model->compressed("embed"));
            const std::string dir = lcwtest::tempDir("rot-overlay");
            res.model->save(dir + "/ov");
            auto back = CompressedModel::load(dir + "/ov", *m);
            QCOMPARE(back->runtimeQuant()->rotation, res.model->runtimeQuant()->rotation);
            QCOMPARE(logitsOf(*back, ids), l);
        }
    }

    /// Other RMSNorm families (q/k/v biases, Gemma's (1 + w) norms with tied embeddings and
    /// embedding scale, Phi-3's fused projections): logits unchanged to 1e-4. LayerNorm, Mamba and
    /// mixture-of-experts families are refused with the reason.
    void otherFamilies() {
        int ran = 0;
        for (const char* fam : {"qwen2_sharded", "gemma", "phi3", "llama2_sp_f32"}) {
            const std::string path =
                lcwtest::sharedPath(std::string("models/tiny-random/") + fam + "/model");
            if (!lcwtest::exists(path)) continue;
            auto m = Model::load(path);
            std::vector<int32_t> ids;
            for (int i = 0; i < 24; ++i) ids.push_back(int32_t((i * 37 + 5) % m->spec().vocab));
            const auto base = logitsOf(*m, ids);
            const auto res = compressWith(*m, rotationRecipe({{"seed", 2}}));
            const double d = relMaxDiff(base, logitsOf(*res.model, ids));
            QVERIFY2(d < 1e-4, (std::string(fam) + " " + std::to_string(d)).c_str());
            ++ran;
        }
        for (const char* fam : {"gpt2", "opt", "mamba", "mixtral_moe"}) {
            const std::string path =
                lcwtest::sharedPath(std::string("models/tiny-random/") + fam + "/model");
            if (!lcwtest::exists(path)) continue;
            auto m = Model::load(path);
            QVERIFY(!rotationUnsupported(*m).empty());
            try {
                compressWith(*m, rotationRecipe({{"seed", 0}}));
                QFAIL(fam);
            } catch (const UnsupportedError& e) {
                QVERIFY(std::string(e.what()).find("rotation") != std::string::npos);
            }
            ++ran;
        }
        if (ran == 0) QSKIP("no ../shared/models/tiny-random");
    }

    /// The per-head rotation spreads the demo model's outlier key channels: KV4 (per token)
    /// with the rotation is far closer to FP32 than KV4 alone; W4A4 RTN likewise; GPTQ on the
    /// rotated weights beats RTN on the rotated weights (in-sample KLD).
    void rotationHelpsLowBitKvAndActivations() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto ids = demoIds(*m, 256, 1000);
        const auto ref = logitsOf(*m, ids);
        const int64_t V = m->spec().vocab;
        const json kv4 = {{"targets", {"*"}},
                          {"kv",
                           {{"k_bits", 4},
                            {"v_bits", 4},
                            {"k_granularity", "token"},
                            {"v_granularity", "token"}}}};
        const double kvPlain =
            meanKld(ref, logitsOf(*compressWith(*m, rotationRecipe(nullptr, {kv4})).model, ids), V);
        const double kvRot = meanKld(
            ref, logitsOf(*compressWith(*m, rotationRecipe({{"seed", 0}}, {kv4})).model, ids), V);
        QVERIFY2(kvRot < 0.75 * kvPlain,
                 (std::to_string(kvRot) + " vs " + std::to_string(kvPlain)).c_str());
        const double rtnPlain =
            meanKld(ref, logitsOf(*compressWith(*m, findPreset("W4A4").recipe).model, ids), V);
        // the W4A4 preset's rules (RTN, no KV quantisation) on the rotated model
        const Recipe w4a4Rot =
            rotationRecipe({{"seed", 0}}, findPreset("W4A4").recipe.toJson()["rules"]);
        const double rtnRot = meanKld(ref, logitsOf(*compressWith(*m, w4a4Rot).model, ids), V);
        QVERIFY2(rtnRot < 0.8 * rtnPlain,
                 (std::to_string(rtnRot) + " vs " + std::to_string(rtnPlain)).c_str());
        CalibrationSet cal;
        for (int s = 0; s < 8; ++s) cal.samples.push_back(demoIds(*m, 128, 2000 + 128 * s));
        const auto gptq = compressWith(*m, findPreset("W4A4-KV4-QuaRot-GPTQ").recipe, &cal);
        double kGptq = 0, kRtn = 0;
        const auto rtn = compressWith(*m, findPreset("W4A4-KV4-QuaRot").recipe);
        for (const auto& sample : cal.samples) {
            const auto r = logitsOf(*m, sample);
            kGptq += meanKld(r, logitsOf(*gptq.model, sample), V);
            kRtn += meanKld(r, logitsOf(*rtn.model, sample), V);
        }
        QVERIFY2(kGptq < kRtn, (std::to_string(kGptq) + " vs " + std::to_string(kRtn)).c_str());
        QVERIFY(gptq.model->runtimeQuant()->rotation.active());
        QVERIFY(gptq.model->compressed("layers.0.mlp.down")->quantized);
    }

    /// Exports that cannot carry the online transforms refuse them and leave no file.
    void exportsRefuseOnlineTransforms() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto res = compressWith(*m, rotationRecipe({{"seed", 0}}));
        GgufExportOptions o;
        o.path = lcwtest::tempDir("rot-gguf") + "/rot.gguf";
        QVERIFY_THROWS_EXCEPTION(UnsupportedError, exportGguf(*m, *res.model, o));
        QVERIFY(!lcwtest::exists(o.path));
        QVERIFY_THROWS_EXCEPTION(
            UnsupportedError,
            exporter::exportLlmCompressorRecipe(findPreset("W4A4-KV4-QuaRot").recipe, *m, {}));
    }

    /// Recipe keys, round trip, and what does not compose with a rotation.
    void recipeKeys() {
        const Recipe r =
            rotationRecipe({{"method", "hadamard"}, {"seed", 9}, {"online_down", false}});
        QVERIFY(r.rotation);
        QCOMPARE(r.rotation->seed, uint64_t(9));
        QVERIFY(!r.rotation->down && r.rotation->kv);
        QCOMPARE(Recipe::fromJson(r.toJson()).rotation, r.rotation);
        QVERIFY(!rotationRecipe(nullptr).rotation);
        QVERIFY_THROWS_EXCEPTION(RecipeError, rotationRecipe({{"method", "spin"}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, rotationRecipe({{"bogus", 1}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, rotationRecipe({{"seed", -1}}));
        auto m = Model::load(lcwtest::demoModelPath());
        CalibrationSet cal;
        cal.samples.push_back(demoIds(*m, 64));
        const json awq = {{"targets", {"*"}}, {"weight", {{"bits", 4}, {"method", "awq"}}}};
        QVERIFY_THROWS_EXCEPTION(RecipeError,
                                 compressWith(*m, rotationRecipe({{"seed", 0}}, {awq}), &cal));
        const json sq = {
            {"targets", {"*"}}, {"smoothquant", {{"alpha", 0.5}}}, {"weight", {{"bits", 8}}}};
        QVERIFY_THROWS_EXCEPTION(RecipeError,
                                 compressWith(*m, rotationRecipe({{"seed", 0}}, {sq}), &cal));
        QVERIFY(findPresetIfAny("W4A4-KV4-QuaRot-GPTQ"));
        QVERIFY(findPreset("W4A4-KV4-QuaRot").recipe.rotation);
    }
};

QTEST_GUILESS_MAIN(TestRotation)
#include "test_rotation.moc"
