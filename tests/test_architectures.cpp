// Tests of the architecture registry beyond the Llama family: config parsing, canonical names,
// fused/transposed tensors, the forward of each family against the transformers references of
// the shared tiny-random models, and hand-computed checks of the parts that distinguish the
// families without a shared reference (ALiBi, partial rotary, soft-capping, parallel residual).
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/npy.h"
#include "core/io/gguf.h"
#include "core/io/hf_config.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_names.h"
#include "core/model/expected_tensors.h"
#include "core/model/model.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "mem_weights.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest/QtTest>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <tuple>

using namespace lcw;

namespace {

nlohmann::json readJson(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
}

double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

class RecordingObserver : public Observer {
public:
    std::map<std::string, int64_t> tokens; // linear name -> tokens seen
    std::map<std::string, int64_t> dims;
    int kvCalls = 0;
    int64_t routed = 0;
    void onLinearInput(int, LinearRole, const std::string& name, const float*, int64_t nTokens,
                       int64_t dim) override {
        tokens[name] += nTokens;
        dims[name] = dim;
    }
    void onKV(int, const float*, const float*, const float*, int64_t, int64_t, int64_t,
              int64_t) override {
        ++kvCalls;
    }
    void onExpertRouting(int, const int32_t*, const float*, int64_t nTokens,
                         int64_t topK) override {
        routed += nTokens * topK;
    }
};

// ---- an in-memory WeightSource for hand-computed cases ---------------------------------------
using lcwtest::MemWeights;

// ---- generated models of the families without a shared reference -----------------------------
// Logical weights in double; written to a folder in the family's own file layout (fused qkv per
// head, per KV group, ...) and checked against a naive double-precision forward written from the
// published definitions.
struct RefCfg {
    std::string arch;
    int64_t D = 32, H = 4, KV = 4, hd = 8, F = 48, V = 64, L = 2;
    bool layerNorm = true;   // LayerNorm with bias, else RMSNorm
    bool plusOne = false;    // Gemma (1 + w)
    bool parallel = false;   // h + attn(n1(h)) + mlp(n2(h) or n1(h))
    bool sharedNorm = false; // parallel with one norm
    bool postNorms = false;  // Gemma2
    bool embedNorm = false;  // Bloom
    bool gated = false;      // act(gate) * up
    bool qkvBias = false, oBias = false, mlpBias = false;
    bool qkLayerNorm = false; // StableLM per-head LayerNorm
    bool tied = false;
    double rotFrac = 1.0; // 0 = no rotary
    double theta = 10000.0;
    bool alibi = false, alibiBeforeScale = false;
    double scale = 0; // 0 = 1/sqrt(hd)
    double attnCap = 0, finalCap = 0;
    int64_t window = 0; // sliding window on even layers (Gemma2)
    double embScale = 1.0;
    std::string act = "gelu";
    double eps = 1e-5;
    bool postNorm = false;  // OPT do_layer_norm_before=false: no final norm
    int64_t proj = 0;       // OPT word_embed_proj_dim (0 = none)
    int64_t posOffset = -1; // learned positions at row t + offset (-1 = none)
};

using Mat = std::vector<double>; // row-major

struct RefLayer {
    Mat n1w, n1b, n2w, n2b, p1w, p2w;
    Mat wq, wk, wv, wo, bq, bk, bv, bo, wg, wu, wd, bu, bd, bg;
    std::vector<Mat> qn, kn;
};
struct RefWeights {
    Mat embed, lm, enw, enb, fnw, fnb, pos, projIn, projOut;
    std::vector<RefLayer> layers;
};

// Values exactly representable in bf16, so that F32 and BF16 files hold the same numbers.
Mat randMat(std::mt19937_64& rng, size_t n, double sd, double mean = 0) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    Mat m(n);
    for (auto& x : m) x = double(bf16ToF32(f32ToBf16(float(mean + sd * d(rng)))));
    return m;
}

RefWeights makeRefWeights(const RefCfg& c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    RefWeights w;
    const double sd = 0.25;
    const int64_t E = c.proj > 0 ? c.proj : c.D;
    w.embed = randMat(rng, size_t(c.V * E), 1.0);
    w.pos = randMat(rng, size_t(66 * c.D), 0.5);
    w.projIn = randMat(rng, size_t(c.D * E), 0.3);
    w.projOut = randMat(rng, size_t(E * c.D), 0.3);
    if (!c.tied) w.lm = randMat(rng, size_t(c.V * c.D), sd);
    w.enw = randMat(rng, size_t(c.D), 0.1, c.plusOne ? 0.0 : 1.0);
    w.enb = randMat(rng, size_t(c.D), 0.1);
    w.fnw = randMat(rng, size_t(c.D), 0.1, c.plusOne ? 0.0 : 1.0);
    w.fnb = randMat(rng, size_t(c.D), 0.1);
    for (int64_t l = 0; l < c.L; ++l) {
        RefLayer L;
        const double nm = c.plusOne ? 0.0 : 1.0;
        L.n1w = randMat(rng, size_t(c.D), 0.1, nm), L.n1b = randMat(rng, size_t(c.D), 0.1);
        L.n2w = randMat(rng, size_t(c.D), 0.1, nm), L.n2b = randMat(rng, size_t(c.D), 0.1);
        L.p1w = randMat(rng, size_t(c.D), 0.1, nm), L.p2w = randMat(rng, size_t(c.D), 0.1, nm);
        L.wq = randMat(rng, size_t(c.H * c.hd * c.D), sd);
        L.wk = randMat(rng, size_t(c.KV * c.hd * c.D), sd);
        L.wv = randMat(rng, size_t(c.KV * c.hd * c.D), sd);
        L.wo = randMat(rng, size_t(c.D * c.H * c.hd), sd);
        L.bq = randMat(rng, size_t(c.H * c.hd), 0.1);
        L.bk = randMat(rng, size_t(c.KV * c.hd), 0.1);
        L.bv = randMat(rng, size_t(c.KV * c.hd), 0.1);
        L.bo = randMat(rng, size_t(c.D), 0.1);
        L.wg = randMat(rng, size_t(c.F * c.D), sd);
        L.wu = randMat(rng, size_t(c.F * c.D), sd);
        L.wd = randMat(rng, size_t(c.D * c.F), sd);
        L.bg = randMat(rng, size_t(c.F), 0.1);
        L.bu = randMat(rng, size_t(c.F), 0.1);
        L.bd = randMat(rng, size_t(c.D), 0.1);
        for (int64_t h = 0; h < c.H; ++h) L.qn.push_back(randMat(rng, size_t(c.hd), 0.1, 1.0));
        for (int64_t h = 0; h < c.KV; ++h) L.kn.push_back(randMat(rng, size_t(c.hd), 0.1, 1.0));
        w.layers.push_back(std::move(L));
    }
    return w;
}

// y = W x (+ b), W [out, in]
Mat matVec(const Mat& W, const Mat& x, int64_t out, const Mat* b = nullptr) {
    const int64_t in = int64_t(x.size());
    Mat y(size_t(out), 0.0);
    for (int64_t o = 0; o < out; ++o) {
        double a = b ? (*b)[size_t(o)] : 0.0;
        for (int64_t i = 0; i < in; ++i) a += W[size_t(o * in + i)] * x[size_t(i)];
        y[size_t(o)] = a;
    }
    return y;
}

Mat refNorm(const RefCfg& c, const Mat& x, const Mat& w, const Mat* b) {
    const size_t n = x.size();
    Mat y(n);
    if (c.layerNorm) {
        double mean = 0, var = 0;
        for (double v : x) mean += v;
        mean /= double(n);
        for (double v : x) var += (v - mean) * (v - mean);
        var /= double(n);
        for (size_t i = 0; i < n; ++i)
            y[i] = (x[i] - mean) / std::sqrt(var + c.eps) * w[i] + (b ? (*b)[i] : 0.0);
    } else {
        double ms = 0;
        for (double v : x) ms += v * v;
        ms /= double(n);
        for (size_t i = 0; i < n; ++i)
            y[i] = x[i] / std::sqrt(ms + c.eps) * (c.plusOne ? 1.0 + w[i] : w[i]);
    }
    return y;
}

double refAct(const std::string& a, double x) {
    if (a == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    if (a == "gelu_tanh")
        return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    if (a == "silu") return x / (1.0 + std::exp(-x));
    return x > 0 ? x : 0.0;
}

// Press et al. slopes via the closest power of two, written out as Bloom defines them.
std::vector<double> refAlibi(int64_t n) {
    const int64_t p = int64_t(1) << int64_t(std::floor(std::log2(double(n))));
    const double base = std::pow(2.0, -std::pow(2.0, -(std::log2(double(p)) - 3.0)));
    std::vector<double> s;
    for (int64_t i = 1; i <= p; ++i) s.push_back(std::pow(base, double(i)));
    if (p != n) {
        const double eb = std::pow(2.0, -std::pow(2.0, -(std::log2(double(2 * p)) - 3.0)));
        for (int64_t i = 1; i < 1 + 2 * (n - p); i += 2) s.push_back(std::pow(eb, double(i)));
    }
    return s;
}

/// The reference forward pass in double precision, one piece per step of a layer.
struct RefRun {
    const RefCfg& c;
    const RefWeights& w;
    int64_t rot;                ///< rotated dimensions per head
    double scale;               ///< attention score scale
    std::vector<double> slopes; ///< ALiBi slopes per head

    RefRun(const RefCfg& cfg, const RefWeights& wt)
        : c(cfg), w(wt), rot(int64_t(double(cfg.hd) * cfg.rotFrac) / 2 * 2),
          scale(cfg.scale > 0 ? cfg.scale : 1.0 / std::sqrt(double(cfg.hd))),
          slopes(refAlibi(cfg.H)) {}

    /// Token `id` at position t: embedding row, projection, scale, learned positions, norm.
    Mat embed(int32_t id, int64_t t) const {
        const int64_t E = c.proj > 0 ? c.proj : c.D;
        Mat h(w.embed.begin() + id * E, w.embed.begin() + (id + 1) * E);
        if (c.proj > 0) h = matVec(w.projIn, h, c.D);
        for (auto& v : h) v *= c.embScale;
        if (c.posOffset >= 0)
            for (int64_t i = 0; i < c.D; ++i)
                h[size_t(i)] += w.pos[size_t((t + c.posOffset) * c.D + i)];
        if (c.embedNorm) h = refNorm(c, h, w.enw, &w.enb);
        return h;
    }

    /// Rotates the first `rot` dimensions of each of nh heads (NeoX halves) for position pos.
    void rope(Mat& x, int64_t nh, int64_t pos) const {
        const int64_t hd = c.hd;
        for (int64_t hh = 0; hh < nh; ++hh)
            for (int64_t i = 0; i < rot / 2; ++i) {
                const double a = double(pos) * std::pow(c.theta, -double(2 * i) / double(rot));
                double& x0 = x[size_t(hh * hd + i)];
                double& x1 = x[size_t(hh * hd + i + rot / 2)];
                const double r0 = x0 * std::cos(a) - x1 * std::sin(a);
                const double r1 = x1 * std::cos(a) + x0 * std::sin(a);
                x0 = r0, x1 = r1;
            }
    }

    /// LayerNorm of each head with its own weight (StableLM's q/k layernorm).
    void perHeadLn(Mat& x, const std::vector<Mat>& wts) const {
        const int64_t hd = c.hd;
        RefCfg ln = c;
        ln.layerNorm = true;
        for (size_t hh = 0; hh < wts.size(); ++hh) {
            Mat part(x.begin() + int64_t(hh) * hd, x.begin() + int64_t(hh + 1) * hd);
            part = refNorm(ln, part, wts[hh], nullptr);
            std::copy(part.begin(), part.end(), x.begin() + int64_t(hh) * hd);
        }
    }

    /// Attention output of token t (all heads) over tokens [j0, t].
    Mat attend(const std::vector<Mat>& qs, const std::vector<Mat>& ks, const std::vector<Mat>& vs,
               int64_t t, bool sliding) const {
        const int64_t hd = c.hd;
        Mat att(static_cast<size_t>(c.H * hd), 0.0);
        const int64_t j0 = sliding ? std::max<int64_t>(0, t - c.window + 1) : 0;
        for (int64_t hh = 0; hh < c.H; ++hh) {
            const int64_t kvh = hh / (c.H / c.KV);
            std::vector<double> sc;
            for (int64_t j = j0; j <= t; ++j) {
                double dot = 0;
                for (int64_t d = 0; d < hd; ++d)
                    dot += qs[size_t(t)][size_t(hh * hd + d)] * ks[size_t(j)][size_t(kvh * hd + d)];
                double x;
                if (c.alibi && c.alibiBeforeScale)
                    x = (dot + slopes[size_t(hh)] * double(j)) * scale;
                else if (c.alibi)
                    x = dot * scale + slopes[size_t(hh)] * double(j);
                else
                    x = dot * scale;
                if (c.attnCap > 0) x = c.attnCap * std::tanh(x / c.attnCap);
                sc.push_back(x);
            }
            const double mx = *std::max_element(sc.begin(), sc.end());
            double sum = 0;
            for (auto& x : sc) sum += (x = std::exp(x - mx));
            for (int64_t j = j0; j <= t; ++j)
                for (int64_t d = 0; d < hd; ++d)
                    att[size_t(hh * hd + d)] +=
                        sc[size_t(j - j0)] / sum * vs[size_t(j)][size_t(kvh * hd + d)];
        }
        return att;
    }

    Mat mlp(const RefLayer& L, const Mat& x) const {
        Mat u = matVec(L.wu, x, c.F, c.mlpBias ? &L.bu : nullptr);
        if (c.gated) {
            Mat g = matVec(L.wg, x, c.F, c.mlpBias ? &L.bg : nullptr);
            for (int64_t i = 0; i < c.F; ++i) u[size_t(i)] *= refAct(c.act, g[size_t(i)]);
        } else {
            for (auto& v : u) v = refAct(c.act, v);
        }
        Mat y = matVec(L.wd, u, c.D, c.mlpBias ? &L.bd : nullptr);
        if (c.postNorms) y = refNorm(c, y, L.p2w, nullptr);
        return y;
    }

    /// The layer's output for input h given its normed input a and attention projection o:
    /// post-LN, parallel (one shared or two norms) or sequential pre-LN residuals.
    Mat residual(const RefLayer& L, const Mat& h, const Mat& a, const Mat& o) const {
        const auto add = [](Mat& x, const Mat& y) {
            for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
        };
        Mat out = h;
        if (c.postNorm) {
            add(out, o);
            out = refNorm(c, out, L.n1w, &L.n1b);
            add(out, mlp(L, out));
            out = refNorm(c, out, L.n2w, &L.n2b);
        } else if (c.parallel) {
            add(out, o);
            add(out, mlp(L, c.sharedNorm ? a : refNorm(c, h, L.n2w, &L.n2b)));
        } else {
            add(out, o);
            add(out, mlp(L, refNorm(c, out, L.n2w, &L.n2b)));
        }
        return out;
    }

    std::vector<Mat> layer(int64_t l, const std::vector<Mat>& h) const {
        const RefLayer& L = w.layers[size_t(l)];
        const int64_t T = int64_t(h.size()), hd = c.hd;
        const bool sliding = c.window > 0 && l % 2 == 0;
        std::vector<Mat> a(static_cast<size_t>(T)), qs(a), ks(a), vs(a);
        for (int64_t t = 0; t < T; ++t) {
            a[size_t(t)] = c.postNorm ? h[size_t(t)] : refNorm(c, h[size_t(t)], L.n1w, &L.n1b);
            qs[size_t(t)] = matVec(L.wq, a[size_t(t)], c.H * hd, c.qkvBias ? &L.bq : nullptr);
            ks[size_t(t)] = matVec(L.wk, a[size_t(t)], c.KV * hd, c.qkvBias ? &L.bk : nullptr);
            vs[size_t(t)] = matVec(L.wv, a[size_t(t)], c.KV * hd, c.qkvBias ? &L.bv : nullptr);
            if (c.qkLayerNorm) {
                perHeadLn(qs[size_t(t)], L.qn);
                perHeadLn(ks[size_t(t)], L.kn);
            }
            if (rot > 0) {
                rope(qs[size_t(t)], c.H, t);
                rope(ks[size_t(t)], c.KV, t);
            }
        }
        std::vector<Mat> hn(static_cast<size_t>(T));
        for (int64_t t = 0; t < T; ++t) {
            Mat o = matVec(L.wo, attend(qs, ks, vs, t, sliding), c.D, c.oBias ? &L.bo : nullptr);
            if (c.postNorms) o = refNorm(c, o, L.p1w, nullptr);
            hn[size_t(t)] = residual(L, h[size_t(t)], a[size_t(t)], o);
        }
        return hn;
    }
};

std::vector<double> refForwardAll(const RefCfg& c, const RefWeights& w,
                                  const std::vector<int32_t>& ids) {
    const RefRun run(c, w);
    std::vector<Mat> h;
    for (size_t t = 0; t < ids.size(); ++t) h.push_back(run.embed(ids[t], int64_t(t)));
    for (int64_t l = 0; l < c.L; ++l) h = run.layer(l, h);
    std::vector<double> logits;
    for (const Mat& ht : h) {
        Mat x = c.postNorm ? ht : refNorm(c, ht, w.fnw, &w.fnb);
        if (c.proj > 0) x = matVec(w.projOut, x, c.proj);
        Mat y = matVec(c.tied ? w.embed : w.lm, x, c.V);
        if (c.finalCap > 0)
            for (auto& v : y) v = c.finalCap * std::tanh(v / c.finalCap);
        logits.insert(logits.end(), y.begin(), y.end());
    }
    return logits;
}

// ---- writing a generated model in a family's file layout ----
struct FileTensor {
    std::string name;
    std::vector<int64_t> shape;
    Mat values;
};

// q/k/v fused as runs of heads: per group g: qPer q heads, then one k head, then one v head.
Mat fuseQkv(const Mat& q, const Mat& k, const Mat& v, int64_t groups, int64_t qPer, int64_t hd,
            int64_t cols) {
    Mat out;
    auto rows = [&](const Mat& m, int64_t head) {
        out.insert(out.end(), m.begin() + head * hd * cols, m.begin() + (head + 1) * hd * cols);
    };
    for (int64_t g = 0; g < groups; ++g) {
        for (int64_t i = 0; i < qPer; ++i) rows(q, g * qPer + i);
        rows(k, g);
        rows(v, g);
    }
    return out;
}

void writeModel(const std::string& dir, const nlohmann::json& config,
                const std::vector<FileTensor>& tensors, DType dt) {
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/config.json") << config.dump(2);
    std::vector<TensorDesc> descs;
    for (const auto& t : tensors) descs.push_back({t.name, dt, t.shape});
    writeSafetensors(dir + "/model.safetensors", descs, [&](size_t i, std::byte* dst, uint64_t) {
        const Mat& v = tensors[i].values;
        for (size_t j = 0; j < v.size(); ++j) {
            if (dt == DType::F32) {
                const float f = float(v[j]);
                std::memcpy(dst + j * 4, &f, 4);
            } else {
                const uint16_t b =
                    dt == DType::BF16 ? f32ToBf16(float(v[j])) : f32ToF16(float(v[j]));
                std::memcpy(dst + j * 2, &b, 2);
            }
        }
    });
}

std::vector<int32_t> genIds(int64_t n, int64_t vocab) {
    std::mt19937_64 rng(11);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = int32_t(rng() % uint64_t(vocab));
    return ids;
}

// Builds config.json and the file tensors of `variant` from the logical weights.
void buildFamily(const std::string& variant, RefCfg& c, nlohmann::json& cfg) {
    cfg = nlohmann::json::object();
    cfg["vocab_size"] = c.V;
    cfg["max_position_embeddings"] = 64;
    cfg["bos_token_id"] = 1;
    cfg["eos_token_id"] = 2;
    if (variant == "gpt_neox" || variant == "gpt_neox_seq") {
        c.arch = "gpt_neox";
        c.parallel = variant == "gpt_neox";
        c.qkvBias = c.oBias = c.mlpBias = true;
        c.rotFrac = 0.5;
        c.act = "gelu";
        cfg["model_type"] = "gpt_neox";
        cfg["hidden_size"] = c.D, cfg["num_hidden_layers"] = c.L;
        cfg["num_attention_heads"] = c.H, cfg["intermediate_size"] = c.F;
        cfg["rotary_pct"] = 0.5, cfg["rotary_emb_base"] = 10000;
        cfg["layer_norm_eps"] = 1e-5, cfg["use_parallel_residual"] = c.parallel;
        cfg["hidden_act"] = "gelu", cfg["tie_word_embeddings"] = false;
    } else if (variant == "stablelm" || variant == "stablelm_par") {
        c.arch = "stablelm";
        const bool par = variant == "stablelm_par";
        c.KV = 2;
        c.gated = true, c.act = "silu";
        c.qkvBias = !par;
        c.qkLayerNorm = !par;
        c.parallel = c.sharedNorm = par;
        c.rotFrac = 0.25; // StableLM's default partial_rotary_factor
        cfg["model_type"] = "stablelm";
        cfg["hidden_size"] = c.D, cfg["num_hidden_layers"] = c.L;
        cfg["num_attention_heads"] = c.H, cfg["num_key_value_heads"] = c.KV;
        cfg["intermediate_size"] = c.F, cfg["hidden_act"] = "silu";
        cfg["use_qkv_bias"] = c.qkvBias, cfg["qk_layernorm"] = c.qkLayerNorm;
        cfg["use_parallel_residual"] = par, cfg["layer_norm_eps"] = 1e-5;
        cfg["rope_theta"] = 10000, cfg["tie_word_embeddings"] = false;
        if (par) cfg["partial_rotary_factor"] = 0.25;
    } else if (variant.rfind("falcon", 0) == 0) {
        c.arch = "falcon";
        c.tied = true;
        c.act = "gelu";
        cfg["model_type"] = "falcon";
        cfg["hidden_size"] = c.D, cfg["num_hidden_layers"] = c.L;
        cfg["num_attention_heads"] = c.H, cfg["layer_norm_epsilon"] = 1e-5;
        cfg["ffn_hidden_size"] = c.F;
        if (variant == "falcon_alibi") { // Falcon-RW: ALiBi, classic MHA, sequential, biases
            c.alibi = c.alibiBeforeScale = true;
            c.rotFrac = 0;
            c.qkvBias = c.oBias = c.mlpBias = true;
            cfg["alibi"] = true, cfg["multi_query"] = false, cfg["parallel_attn"] = false;
            cfg["bias"] = true, cfg["new_decoder_architecture"] = false;
        } else if (variant == "falcon_mq") { // Falcon-7B: multi-query, parallel, one norm
            c.KV = 1;
            c.parallel = c.sharedNorm = true;
            cfg["alibi"] = false, cfg["multi_query"] = true, cfg["parallel_attn"] = true;
            cfg["bias"] = false, cfg["new_decoder_architecture"] = false;
        } else { // Falcon-40B style: new decoder architecture, GQA, ln_attn + ln_mlp
            c.KV = 2;
            c.parallel = true;
            cfg["alibi"] = false, cfg["parallel_attn"] = true, cfg["bias"] = false;
            cfg["new_decoder_architecture"] = true, cfg["num_kv_heads"] = c.KV;
        }
    } else if (variant == "bloom") {
        c.arch = "bloom";
        c.H = c.KV = 6, c.D = 48, c.F = 4 * 48;
        c.alibi = true, c.rotFrac = 0, c.embedNorm = true, c.tied = true;
        c.qkvBias = c.oBias = c.mlpBias = true;
        c.act = "gelu_tanh";
        cfg["model_type"] = "bloom";
        cfg["hidden_size"] = c.D, cfg["n_layer"] = c.L, cfg["n_head"] = c.H;
        cfg["layer_norm_epsilon"] = 1e-5;
    } else if (variant == "opt350m") { // post-LN with word_embed_proj_dim projections
        c.arch = "opt";
        c.postNorm = true, c.proj = 16, c.posOffset = 2, c.tied = true, c.act = "relu";
        c.qkvBias = c.oBias = c.mlpBias = true;
        c.rotFrac = 0;
        cfg["model_type"] = "opt";
        cfg["hidden_size"] = c.D, cfg["num_hidden_layers"] = c.L;
        cfg["num_attention_heads"] = c.H, cfg["ffn_dim"] = c.F;
        cfg["do_layer_norm_before"] = false, cfg["word_embed_proj_dim"] = c.proj;
        cfg["activation_function"] = "relu", cfg["enable_bias"] = true;
    } else if (variant == "gemma2") {
        c.arch = "gemma2";
        c.KV = 2, c.layerNorm = false, c.plusOne = true, c.postNorms = true, c.gated = true;
        c.act = "gelu_tanh", c.tied = true, c.eps = 1e-6;
        c.scale = 1.0 / std::sqrt(12.0), c.attnCap = 2.0, c.finalCap = 1.5, c.window = 4;
        c.embScale = double(float(std::sqrt(double(c.D))));
        cfg["model_type"] = "gemma2";
        cfg["hidden_size"] = c.D, cfg["num_hidden_layers"] = c.L;
        cfg["num_attention_heads"] = c.H, cfg["num_key_value_heads"] = c.KV;
        cfg["head_dim"] = c.hd, cfg["intermediate_size"] = c.F, cfg["rms_norm_eps"] = 1e-6;
        cfg["hidden_activation"] = "gelu_pytorch_tanh", cfg["query_pre_attn_scalar"] = 12;
        cfg["attn_logit_softcapping"] = 2.0, cfg["final_logit_softcapping"] = 1.5;
        cfg["sliding_window"] = 4, cfg["rope_theta"] = 10000;
    }
}

/// Collects one family's tensors: plain tensors, LayerNorm weight + bias pairs, and fused q/k/v.
struct FileSet {
    const RefCfg& c;
    std::vector<FileTensor> f;
    void add(std::string n, std::vector<int64_t> shape, const Mat& v) {
        f.push_back({std::move(n), std::move(shape), v});
    }
    void ln(const std::string& n, const Mat& wt, const Mat& b) {
        add(n + ".weight", {c.D}, wt);
        add(n + ".bias", {c.D}, b);
    }
    /// A linear layer's n.weight [out, in] and, with b, its n.bias.
    void linear(const std::string& n, int64_t out, int64_t in, const Mat& wt, const Mat* b) {
        add(n + ".weight", {out, in}, wt);
        if (b) add(n + ".bias", {out}, *b);
    }
    /// GPT-NeoX's and BLOOM's block: two LayerNorms, fused multi-head q/k/v (attn:
    /// "attention" | "self_attention"), the output projection and the MLP, all with biases.
    void neoxBlock(const std::string& p, const std::string& attn, const RefLayer& L) {
        ln(p + "input_layernorm", L.n1w, L.n1b);
        ln(p + "post_attention_layernorm", L.n2w, L.n2b);
        fused(p + attn + ".query_key_value", L, c.H, 1, true);
        linear(p + attn + ".dense", c.D, c.H * c.hd, L.wo, &L.bo);
        linear(p + "mlp.dense_h_to_4h", c.F, c.D, L.wu, &L.bu);
        linear(p + "mlp.dense_4h_to_h", c.D, c.F, L.wd, &L.bd);
    }
    /// q/k/v/o projections and the gated MLP under Llama's names (prefix p: "model.layers.N.").
    void llamaProjections(const std::string& p, const RefLayer& L) {
        const int64_t D = c.D, F = c.F, qd = c.H * c.hd, kvd = c.KV * c.hd;
        add(p + "self_attn.q_proj.weight", {qd, D}, L.wq);
        add(p + "self_attn.k_proj.weight", {kvd, D}, L.wk);
        add(p + "self_attn.v_proj.weight", {kvd, D}, L.wv);
        add(p + "self_attn.o_proj.weight", {D, qd}, L.wo);
        add(p + "mlp.gate_proj.weight", {F, D}, L.wg);
        add(p + "mlp.up_proj.weight", {F, D}, L.wu);
        add(p + "mlp.down_proj.weight", {D, F}, L.wd);
    }
    void fused(const std::string& n, const RefLayer& L, int64_t groups, int64_t qPer, bool bias) {
        const int64_t rows = (c.H + 2 * c.KV) * c.hd;
        add(n + ".weight", {rows, c.D}, fuseQkv(L.wq, L.wk, L.wv, groups, qPer, c.hd, c.D));
        if (bias) add(n + ".bias", {rows}, fuseQkv(L.bq, L.bk, L.bv, groups, qPer, c.hd, 1));
    }
};

void gptNeoxFiles(FileSet& s, const RefWeights& w) {
    const RefCfg& c = s.c;
    const int64_t D = c.D, hd = c.hd;
    s.add("gpt_neox.embed_in.weight", {c.V, D}, w.embed);
    for (int64_t l = 0; l < c.L; ++l) {
        const RefLayer& L = w.layers[size_t(l)];
        const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
        s.neoxBlock(p, "attention", L);
        s.add(p + "attention.rotary_emb.inv_freq", {hd / 4}, Mat(size_t(hd / 4), 0.5));
    }
    s.ln("gpt_neox.final_layer_norm", w.fnw, w.fnb);
    s.add("embed_out.weight", {c.V, D}, w.lm);
}

void stablelmFiles(FileSet& s, const RefWeights& w) {
    const RefCfg& c = s.c;
    const int64_t D = c.D, hd = c.hd, qd = c.H * hd, kvd = c.KV * hd;
    s.add("model.embed_tokens.weight", {c.V, D}, w.embed);
    for (int64_t l = 0; l < c.L; ++l) {
        const RefLayer& L = w.layers[size_t(l)];
        const std::string p = "model.layers." + std::to_string(l) + ".";
        s.ln(p + "input_layernorm", L.n1w, L.n1b);
        if (!c.parallel) s.ln(p + "post_attention_layernorm", L.n2w, L.n2b);
        s.llamaProjections(p, L);
        if (c.qkvBias) {
            s.add(p + "self_attn.q_proj.bias", {qd}, L.bq);
            s.add(p + "self_attn.k_proj.bias", {kvd}, L.bk);
            s.add(p + "self_attn.v_proj.bias", {kvd}, L.bv);
        }
        if (c.qkLayerNorm) {
            for (int64_t h = 0; h < c.H; ++h)
                s.add(p + "self_attn.q_layernorm.norms." + std::to_string(h) + ".weight", {hd},
                      L.qn[size_t(h)]);
            for (int64_t h = 0; h < c.KV; ++h)
                s.add(p + "self_attn.k_layernorm.norms." + std::to_string(h) + ".weight", {hd},
                      L.kn[size_t(h)]);
        }
    }
    s.ln("model.norm", w.fnw, w.fnb);
    s.add("lm_head.weight", {c.V, D}, w.lm);
}

void falconFiles(FileSet& s, const RefWeights& w, const std::string& variant) {
    const RefCfg& c = s.c;
    const int64_t D = c.D, F = c.F, qd = c.H * c.hd;
    s.add("transformer.word_embeddings.weight", {c.V, D}, w.embed);
    for (int64_t l = 0; l < c.L; ++l) {
        const RefLayer& L = w.layers[size_t(l)];
        const std::string p = "transformer.h." + std::to_string(l) + ".";
        if (variant == "falcon_new") {
            s.ln(p + "ln_attn", L.n1w, L.n1b);
            s.ln(p + "ln_mlp", L.n2w, L.n2b);
            s.fused(p + "self_attention.query_key_value", L, c.KV, c.H / c.KV, false);
        } else if (variant == "falcon_mq") {
            s.ln(p + "input_layernorm", L.n1w, L.n1b);
            s.fused(p + "self_attention.query_key_value", L, 1, c.H, false);
        } else {
            s.ln(p + "input_layernorm", L.n1w, L.n1b);
            s.ln(p + "post_attention_layernorm", L.n2w, L.n2b);
            s.fused(p + "self_attention.query_key_value", L, c.H, 1, true);
        }
        s.linear(p + "self_attention.dense", D, qd, L.wo, c.qkvBias ? &L.bo : nullptr);
        s.linear(p + "mlp.dense_h_to_4h", F, D, L.wu, c.qkvBias ? &L.bu : nullptr);
        s.linear(p + "mlp.dense_4h_to_h", D, F, L.wd, c.qkvBias ? &L.bd : nullptr);
    }
    s.ln("transformer.ln_f", w.fnw, w.fnb);
}

void bloomFiles(FileSet& s, const RefWeights& w) {
    const RefCfg& c = s.c;
    const int64_t D = c.D;
    s.add("word_embeddings.weight", {c.V, D}, w.embed);
    s.ln("word_embeddings_layernorm", w.enw, w.enb);
    for (int64_t l = 0; l < c.L; ++l) {
        const RefLayer& L = w.layers[size_t(l)];
        const std::string p = "h." + std::to_string(l) + ".";
        s.neoxBlock(p, "self_attention", L);
    }
    s.ln("ln_f", w.fnw, w.fnb);
}

void optFiles(FileSet& s, const RefWeights& w) {
    const RefCfg& c = s.c;
    const int64_t D = c.D, F = c.F, P = c.proj, qd = c.H * c.hd, kvd = c.KV * c.hd;
    s.add("model.decoder.embed_tokens.weight", {c.V, P}, w.embed);
    s.add("model.decoder.embed_positions.weight", {66, D}, w.pos);
    s.add("model.decoder.project_in.weight", {D, P}, w.projIn);
    s.add("model.decoder.project_out.weight", {P, D}, w.projOut);
    for (int64_t l = 0; l < c.L; ++l) {
        const RefLayer& L = w.layers[size_t(l)];
        const std::string p = "model.decoder.layers." + std::to_string(l) + ".";
        s.linear(p + "self_attn.q_proj", qd, D, L.wq, &L.bq);
        s.linear(p + "self_attn.k_proj", kvd, D, L.wk, &L.bk);
        s.linear(p + "self_attn.v_proj", kvd, D, L.wv, &L.bv);
        s.linear(p + "self_attn.out_proj", D, qd, L.wo, &L.bo);
        s.ln(p + "self_attn_layer_norm", L.n1w, L.n1b);
        s.ln(p + "final_layer_norm", L.n2w, L.n2b);
        s.linear(p + "fc1", F, D, L.wu, &L.bu);
        s.linear(p + "fc2", D, F, L.wd, &L.bd);
    }
}

void gemma2Files(FileSet& s, const RefWeights& w) {
    const RefCfg& c = s.c;
    const int64_t D = c.D;
    s.add("model.embed_tokens.weight", {c.V, D}, w.embed);
    for (int64_t l = 0; l < c.L; ++l) {
        const RefLayer& L = w.layers[size_t(l)];
        const std::string p = "model.layers." + std::to_string(l) + ".";
        s.add(p + "input_layernorm.weight", {D}, L.n1w);
        s.add(p + "post_attention_layernorm.weight", {D}, L.p1w);
        s.add(p + "pre_feedforward_layernorm.weight", {D}, L.n2w);
        s.add(p + "post_feedforward_layernorm.weight", {D}, L.p2w);
        s.llamaProjections(p, L);
    }
    s.add("model.norm.weight", {D}, w.fnw);
}

/// The tensors of a generated model as the family's checkpoints name and lay them out.
std::vector<FileTensor> familyFiles(const std::string& variant, const RefCfg& c,
                                    const RefWeights& w) {
    FileSet s{c, {}};
    if (c.arch == "gpt_neox")
        gptNeoxFiles(s, w);
    else if (c.arch == "stablelm")
        stablelmFiles(s, w);
    else if (c.arch == "falcon")
        falconFiles(s, w, variant);
    else if (c.arch == "bloom")
        bloomFiles(s, w);
    else if (c.arch == "opt")
        optFiles(s, w);
    else if (c.arch == "gemma2")
        gemma2Files(s, w);
    return std::move(s.f);
}

// ---- GGUF conversions of the shared models (as llama.cpp's converter lays them out) ----
struct GgufT {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> v;
};
std::vector<float> floatsOf(const TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    kernels::dequantizeRows(t, 0, t.rows(), v.data());
    return v;
}
std::vector<float> concatRows(std::initializer_list<std::vector<float>> parts) {
    std::vector<float> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}
// llama.cpp's q/k permutation for the llama architecture: within each head, rows
// [i, i + hd/2] become adjacent pairs (2i, 2i + 1).
std::vector<float> permuteQk(const std::vector<float>& w, int64_t heads, int64_t hd, int64_t cols) {
    std::vector<float> out(w.size());
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t half = 0; half < 2; ++half)
            for (int64_t i = 0; i < hd / 2; ++i)
                std::copy_n(w.begin() + (h * hd + half * hd / 2 + i) * cols, cols,
                            out.begin() + (h * hd + 2 * i + half) * cols);
    return out;
}
std::vector<std::pair<std::string, GgufValue>> ggufMeta(const std::string& arch,
                                                        const ModelSpec& sp) {
    return {
        {"general.architecture", GgufValue::string(arch)},
        {arch + ".embedding_length", GgufValue::u32(uint32_t(sp.dim))},
        {arch + ".block_count", GgufValue::u32(uint32_t(sp.nLayers))},
        {arch + ".feed_forward_length", GgufValue::u32(uint32_t(sp.hidden))},
        {arch + ".attention.head_count", GgufValue::u32(uint32_t(sp.nHeads))},
        {arch + ".attention.head_count_kv", GgufValue::u32(uint32_t(sp.nKvHeads))},
        {arch + ".attention.key_length", GgufValue::u32(uint32_t(sp.headDim))},
        {arch + ".attention.value_length", GgufValue::u32(uint32_t(sp.headDim))},
        {arch + ".context_length", GgufValue::u32(uint32_t(sp.maxSeq))},
        {arch + ".attention.layer_norm_rms_epsilon", GgufValue::f32(sp.normEps)},
        {arch + ".rope.freq_base", GgufValue::f32(float(sp.rope.theta))},
    };
}
std::string writeGgufModel(const std::string& tag,
                           const std::vector<std::pair<std::string, GgufValue>>& meta,
                           const std::vector<GgufT>& ts) {
    std::vector<TensorDesc> descs;
    for (const auto& t : ts) descs.push_back({t.name, DType::F32, t.shape});
    const std::string out = lcwtest::tempDir(tag) + "/model.gguf";
    writeGguf(out, meta, descs, [&](size_t i, std::byte* dst, uint64_t n) {
        std::memcpy(dst, ts[i].v.data(), size_t(n));
    });
    return out;
}

// A Hugging Face-loaded model written the way llama.cpp's convert_hf_to_gguf.py lays it out
// (the assumptions are documented in core/model/load_gguf.cpp):
//  - fused qkv (gpt2, gptneox, falcon, bloom) as [q rows; k rows; v rows] -- the converter
//    transposes GPT-2's Conv1D weights to [out, in] and re-orders the per-head (NeoX, Bloom) and
//    per-KV-group (Falcon) layouts into these blocks;
//  - Gemma2 norm weights stored as 1 + w;
//  - StableLM per-head q/k norms stacked into one [heads, head_dim] tensor;
//  - Falcon-40B's attention norm (ln_attn) as attn_norm_2 and its MLP norm (ln_mlp) as attn_norm;
//  - Mamba ssm_a = -exp(A_log), ssm_conv1d squeezed to [d_inner, kernel], block norm attn_norm;
//  - GPT-2 and Bloom get an explicit output.weight (a copy of the embedding) as the converter
//    writes it.
std::vector<GgufT> ggufTensorsLikeLlamaCpp(const Model& hf) {
    const ModelSpec& sp = hf.spec();
    const std::string& a = sp.arch;
    const bool fused = a == "gpt2" || a == "gpt_neox" || a == "falcon" || a == "bloom";
    std::vector<GgufT> ts;
    for (const auto& t : hf.tensors()) {
        const std::string& n = t.name;
        if (n.rfind("extra.", 0) == 0) continue;
        auto ln = splitCanonical(n);
        const std::string head =
            ln && ln->layer >= 0 ? "layers." + std::to_string(ln->layer) + "." : std::string();
        const std::string blk =
            ln && ln->layer >= 0 ? "blk." + std::to_string(ln->layer) + "." : std::string();
        const std::string role = ln ? ln->role : n;
        std::vector<float> v = floatsOf(t);
        std::vector<int64_t> shape = t.shape;
        if (fused && (role == "attn.q" || role == "attn.q.bias")) {
            const std::string sfx = role == "attn.q" ? "" : ".bias";
            v = concatRows({v, floatsOf(hf.get(head + "attn.k" + sfx)),
                            floatsOf(hf.get(head + "attn.v" + sfx))});
            shape[0] = (sp.nHeads + 2 * sp.nKvHeads) * sp.headDim;
            ts.push_back({blk + "attn_qkv" + (sfx.empty() ? ".weight" : ".bias"), shape, v});
            continue;
        }
        if (fused && (role.rfind("attn.k", 0) == 0 || role.rfind("attn.v", 0) == 0)) continue;
        if (a == "stablelm" &&
            (role.rfind("attn.q_norm.", 0) == 0 || role.rfind("attn.k_norm.", 0) == 0)) {
            if (role != "attn.q_norm.0" && role != "attn.k_norm.0") continue;
            const bool q = role[5] == 'q';
            const int64_t heads = q ? sp.nHeads : sp.nKvHeads;
            std::vector<float> all;
            for (int64_t h = 0; h < heads; ++h) {
                const auto r = floatsOf(
                    hf.get(head + (q ? "attn.q_norm." : "attn.k_norm.") + std::to_string(h)));
                all.insert(all.end(), r.begin(), r.end());
            }
            ts.push_back({blk + (q ? "attn_q_norm.weight" : "attn_k_norm.weight"),
                          {heads, sp.headDim},
                          all});
            continue;
        }
        if (a == "gemma2" && n.find("norm") != std::string::npos)
            for (float& x : v) x += 1.0f;
        if (a == "mamba" && role == "mixer.A_log") {
            for (float& x : v) x = -std::exp(x);
            ts.push_back({blk + "ssm_a", shape, v});
            continue;
        }
        if (a == "mamba" && role == "mixer.D") {
            ts.push_back({blk + "ssm_d", shape, v});
            continue;
        }
        if (a == "mamba" && role == "mixer.conv1d") shape = {shape[0], shape[2]};
        auto g = ggufFromCanonical(n, a);
        if (!g) throw std::runtime_error("no GGUF name for " + n);
        if (a == "falcon" && hf.find(head + "mlp_norm")) {
            // Falcon-40B: the converter names ln_mlp "attn_norm" and ln_attn "attn_norm_2"
            // (gguf-py's tensor_mapping), and llama.cpp feeds attention from attn_norm_2.
            if (role.rfind("attn_norm", 0) == 0)
                g = blk + "attn_norm_2" + role.substr(9) + (role.size() == 9 ? ".weight" : "");
            else if (role.rfind("mlp_norm", 0) == 0)
                g = blk + "attn_norm" + role.substr(8) + (role.size() == 8 ? ".weight" : "");
        }
        ts.push_back({*g, shape, v});
    }
    if ((a == "gpt2" || a == "bloom") && !hf.find("lm_head"))
        ts.push_back({"output.weight", hf.get("embed").shape, floatsOf(hf.get("embed"))});
    return ts;
}

// llama.cpp's metadata for the families of ggufTensorsLikeLlamaCpp.
std::vector<std::pair<std::string, GgufValue>> ggufMetaLikeLlamaCpp(const ModelSpec& sp) {
    const std::string a = sp.arch == "gpt_neox" ? "gptneox" : sp.arch;
    const std::string p = a + ".";
    std::vector<std::pair<std::string, GgufValue>> m = {
        {"general.architecture", GgufValue::string(a)},
        {p + "embedding_length", GgufValue::u32(uint32_t(sp.dim))},
        {p + "block_count", GgufValue::u32(uint32_t(sp.nLayers))},
    };
    auto u32 = [&](const std::string& k, int64_t v) {
        m.push_back({p + k, GgufValue::u32(uint32_t(v))});
    };
    if (sp.isMamba()) {
        u32("context_length", 1 << 20);
        u32("feed_forward_length", 0);
        u32("attention.head_count", 0);
        u32("ssm.conv_kernel", sp.ssmConv);
        u32("ssm.inner_size", sp.ssmInner);
        u32("ssm.state_size", sp.ssmState);
        u32("ssm.time_step_rank", sp.ssmDtRank);
        m.push_back({p + "attention.layer_norm_rms_epsilon", GgufValue::f32(sp.normEps)});
        return m;
    }
    u32("context_length", sp.maxSeq);
    u32("feed_forward_length", sp.hidden);
    u32("attention.head_count", sp.nHeads);
    u32("attention.head_count_kv", sp.nKvHeads);
    if (sp.norm == NormType::LayerNorm)
        m.push_back({p + "attention.layer_norm_epsilon", GgufValue::f32(sp.normEps)});
    else
        m.push_back({p + "attention.layer_norm_rms_epsilon", GgufValue::f32(sp.normEps)});
    if (sp.posEmbed == PosEmbedding::Rope) {
        m.push_back({p + "rope.freq_base", GgufValue::f32(float(sp.rope.theta))});
        u32("rope.dimension_count",
            int64_t(std::lround(sp.rope.partialRotaryFactor * double(sp.headDim))));
    }
    if (a == "gptneox")
        m.push_back({p + "use_parallel_residual",
                     GgufValue::boolean(sp.residual == ResidualStyle::Parallel)});
    if (a == "stablelm")
        m.push_back({p + "use_parallel_residual",
                     GgufValue::boolean(sp.residual == ResidualStyle::Parallel)});
    if (a == "gemma2") {
        u32("attention.key_length", sp.headDim);
        u32("attention.value_length", sp.headDim);
        m.push_back({p + "attn_logit_softcapping", GgufValue::f32(sp.attnSoftcap)});
        m.push_back({p + "final_logit_softcapping", GgufValue::f32(sp.finalSoftcap)});
        u32("attention.sliding_window", sp.slidingWindow);
    }
    return m;
}

// tokenizer.ggml.* of a byte-level BPE tokenizer.json (GPT-2).
void addGpt2Vocab(std::vector<std::pair<std::string, GgufValue>>& meta, const std::string& path) {
    const auto tj = readJson(path);
    const auto& vocab = tj["model"]["vocab"];
    std::vector<std::string> toks(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
        toks.at(size_t(it.value().get<int64_t>())) = it.key();
    std::vector<std::string> merges;
    for (const auto& mg : tj["model"]["merges"])
        merges.push_back(mg.is_string()
                             ? mg.get<std::string>()
                             : mg[0].get<std::string>() + " " + mg[1].get<std::string>());
    meta.push_back({"tokenizer.ggml.model", GgufValue::string("gpt2")});
    meta.push_back({"tokenizer.ggml.pre", GgufValue::string("gpt-2")});
    meta.push_back({"tokenizer.ggml.tokens", GgufValue::stringArray(toks)});
    meta.push_back({"tokenizer.ggml.merges", GgufValue::stringArray(merges)});
    meta.push_back({"tokenizer.ggml.bos_token_id", GgufValue::u32(0)});
    meta.push_back({"tokenizer.ggml.eos_token_id", GgufValue::u32(0)});
}

} // namespace

class TestArchitectures : public QObject {
    Q_OBJECT

    std::unique_ptr<Model> loadShared(const std::string& rel) {
        try {
            return Model::load(lcwtest::sharedPath(rel));
        } catch (const std::exception& e) {
            qWarning("loading %s: %s", rel.c_str(), e.what());
            throw;
        }
    }

private slots:

    // ================= generated families vs the naive reference =================
    void generatedFamilies_data() {
        QTest::addColumn<QString>("variant");
        for (const char* v :
             {"gpt_neox", "gpt_neox_seq", "stablelm", "stablelm_par", "falcon_alibi", "falcon_mq",
              "falcon_new", "bloom", "gemma2", "opt350m"})
            QTest::newRow(v) << v;
    }
    void generatedFamilies() {
        QFETCH(QString, variant);
        const std::string var = variant.toStdString();
        RefCfg c;
        nlohmann::json cfg;
        buildFamily(var, c, cfg);
        const RefWeights w = makeRefWeights(c, 1234);
        const auto files = familyFiles(var, c, w);
        const auto ids = genIds(12, c.V);
        const auto want = refForwardAll(c, w, ids);
        std::vector<float> f32Logits;
        for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
            const std::string dir =
                lcwtest::tempDir("arch_" + var + "_" + std::string(dtypeName(dt)));
            // F16 cannot hold every bf16 value exactly: compare it loosely against F32.
            writeModel(dir, cfg, files, dt);
            auto m = Model::load(dir);
            QCOMPARE(QString::fromStdString(m->spec().arch), QString::fromStdString(c.arch));
            // BF16 with float32 activations (on CPUs with AVX-512 BF16 the default rounds them
            // to bf16, as llama.cpp does; test_runtime bounds that): the architecture's exact
            // arithmetic is what is checked here.
            Session s(*m, {.contextLength = 32,
                           .threads = 2,
                           .batchSize = 512,
                           .exactActivations = dt == DType::BF16});
            RecordingObserver obs;
            s.addObserver(&obs);
            std::vector<float> logits;
            s.forward(ids, logits, true);
            QCOMPARE(logits.size(), want.size());
            double d = 0;
            for (size_t i = 0; i < want.size(); ++i)
                d = std::max(d, std::abs(double(logits[i]) - want[i]));
            qInfo("%s %s: max |logit diff| vs naive reference %.3g", var.c_str(),
                  std::string(dtypeName(dt)).c_str(), d);
            QVERIFY(d < (dt == DType::F16 ? 5e-2 : 1e-4));
            for (int64_t l = 0; l < c.L; ++l)
                for (const char* r :
                     {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"}) {
                    const std::string n = "layers." + std::to_string(l) + "." + r;
                    QCOMPARE(obs.tokens[n], int64_t(ids.size()));
                    QVERIFY(m->find(n) != nullptr);
                }
            QCOMPARE(obs.kvCalls, int(c.L));
            // Batched prefill + one-token decode steps give the same logits.
            Session inc(*m, {.contextLength = 32,
                             .threads = 2,
                             .batchSize = 5,
                             .exactActivations = dt == DType::BF16});
            std::vector<float> all, part;
            inc.forward(std::span(ids).first(7), part, true);
            all = part;
            for (size_t i = 7; i < ids.size(); ++i) {
                inc.forward(std::span(ids).subspan(i, 1), part, false);
                all.insert(all.end(), part.begin(), part.end());
            }
            QVERIFY(maxAbsDiff(all, logits) < 1e-4);
            std::filesystem::remove_all(dir);
        }
    }

    // ================= hand-computed cases =================
    void alibiSlopes() {
        // 8 heads: 2^-1 ... 2^-8
        const auto s8 = kernels::alibiSlopes(8);
        QCOMPARE(s8.size(), size_t(8));
        for (int h = 0; h < 8; ++h) QCOMPARE(s8[size_t(h)], float(std::ldexp(1.0, -(h + 1))));
        // 4 heads: 2^-2, 2^-4, 2^-6, 2^-8
        const auto s4 = kernels::alibiSlopes(4);
        for (int h = 0; h < 4; ++h) QCOMPARE(s4[size_t(h)], float(std::ldexp(1.0, -2 * (h + 1))));
        // 12 heads (not a power of two): the 8-head slopes, then the odd powers of 2^-0.5
        const auto s12 = kernels::alibiSlopes(12);
        QCOMPARE(s12.size(), size_t(12));
        for (int h = 0; h < 8; ++h) QCOMPARE(s12[size_t(h)], s8[size_t(h)]);
        const double want[4] = {std::pow(2.0, -0.5), std::pow(2.0, -1.5), std::pow(2.0, -2.5),
                                std::pow(2.0, -3.5)};
        for (int i = 0; i < 4; ++i) QVERIFY(std::abs(s12[size_t(8 + i)] - want[i]) < 1e-7);
    }
    void alibiAndSoftcapAttention() {
        // One head, head_dim 1: q = [2] at position 1 against keys k = [1, 3], v = [10, 20].
        const float q[2] = {0.0f, 2.0f}, kc[2] = {1.0f, 3.0f}, vc[2] = {10.0f, 20.0f};
        const float slope[1] = {0.5f};
        auto run = [&](kernels::AttentionOptions o) {
            float out[2] = {0, 0};
            kernels::attentionEx(q, 1, kc, vc, out, 1, 2, 0, 1, 1, 1, o, 1);
            return out[1];
        };
        auto mix = [](double s0, double s1) {
            const double p1 = 1.0 / (1.0 + std::exp(s0 - s1));
            return 10.0 * (1.0 - p1) + 20.0 * p1;
        };
        // Bloom: q.k * scale + slope * (j - i); scale 1 for head_dim 1: scores 2 - 0.5, 6
        kernels::AttentionOptions bloom;
        bloom.alibi = slope;
        QVERIFY(std::abs(run(bloom) - mix(2.0 - 0.5, 6.0)) < 1e-5);
        // Falcon: (q.k + slope * (j - i)) * scale with scale 0.25: (2 - 0.5) / 4, 6 / 4
        kernels::AttentionOptions falcon;
        falcon.alibi = slope, falcon.alibiBeforeScale = true, falcon.scale = 0.25f;
        QVERIFY(std::abs(run(falcon) - mix(1.5 / 4, 6.0 / 4)) < 1e-5);
        // Gemma2 soft-capping: cap * tanh(score / cap) with cap 2: 2 tanh(1), 2 tanh(3)
        kernels::AttentionOptions cap;
        cap.softcap = 2.0f;
        QVERIFY(std::abs(run(cap) - mix(2 * std::tanh(1.0), 2 * std::tanh(3.0))) < 1e-5);
        // Query at position 0 sees only key 0.
        float out[2] = {0, 0};
        kernels::attentionEx(q, 1, kc, vc, out, 1, 2, 0, 1, 1, 1, cap, 1);
        QCOMPARE(out[0], 10.0f);
    }
    void partialRotary() {
        // partial_rotary_factor 0.25 of head_dim 16: 4 rotated dimensions (pairs i, i + 2),
        // frequencies theta^(-2i/4); the other 12 stay as they are.
        RopeConfig rc;
        rc.partialRotaryFactor = 0.25;
        rc.theta = 100.0;
        const auto f = kernels::ropeFrequencies(rc, 16, 64, 64);
        QCOMPARE(f.rotDim, int64_t(4));
        QCOMPARE(f.invFreq.size(), size_t(2));
        QVERIFY(std::abs(f.invFreq[0] - 1.0) < 1e-12);
        QVERIFY(std::abs(f.invFreq[1] - 0.1) < 1e-12);
        std::vector<float> cosT(2), sinT(2);
        kernels::ropeTables(f, 3, 1, cosT.data(), sinT.data()); // position 3
        std::vector<float> x(16);
        for (int i = 0; i < 16; ++i) x[size_t(i)] = float(i + 1);
        kernels::applyRope(x.data(), 1, 16, 1, 16, f.rotDim, false, cosT.data(), sinT.data());
        const double a0 = 3.0, a1 = 0.3;
        QVERIFY(std::abs(x[0] - (1 * std::cos(a0) - 3 * std::sin(a0))) < 1e-5);
        QVERIFY(std::abs(x[2] - (3 * std::cos(a0) + 1 * std::sin(a0))) < 1e-5);
        QVERIFY(std::abs(x[1] - (2 * std::cos(a1) - 4 * std::sin(a1))) < 1e-5);
        QVERIFY(std::abs(x[3] - (4 * std::cos(a1) + 2 * std::sin(a1))) < 1e-5);
        for (int i = 4; i < 16; ++i) QCOMPARE(x[size_t(i)], float(i + 1));
        // Config spellings: NeoX rotary_pct, StableLM's default 0.25.
        const auto neox = parseHfConfig(R"({"model_type":"gpt_neox","hidden_size":64,
            "num_hidden_layers":1,"num_attention_heads":4,"intermediate_size":256,
            "vocab_size":100,"rotary_pct":0.25,"rotary_emb_base":500})",
                                        "neox");
        QCOMPARE(neox.rope.partialRotaryFactor, 0.25);
        QCOMPARE(neox.rope.theta, 500.0);
        QVERIFY(neox.residual == ResidualStyle::Parallel);
        const auto slm = parseHfConfig(R"({"model_type":"stablelm","hidden_size":64,
            "num_hidden_layers":1,"num_attention_heads":4,"intermediate_size":256,
            "vocab_size":100})",
                                       "stablelm");
        QCOMPARE(slm.rope.partialRotaryFactor, 0.25);
        QVERIFY(slm.norm == NormType::LayerNorm);
    }
    void parallelResidualByHand() {
        // One GPT-NeoX layer, dim 2, one head, no rotary (the attention of a single token returns
        // its value), every weight chosen so that the result can be written down:
        //   h0 = [1, 3];  LN(h0) = [-1, 1] (eps ~ 0)
        //   attn: v = I x, o = I  ->  [-1, 1];   mlp: up = I, relu, down = I -> relu(LN2(h0))
        //   parallel:   h1 = h0 + attn(LN1 h0) + mlp(LN2 h0) = [1,3] + [-1,1] + [0,1] = [0, 5]
        //   sequential: h1 = h' + mlp(LN2 h'), h' = [0, 4], LN2(h') = [-1, 1] -> [0, 5] too, so
        //   the MLP norm gets a bias of +2 on dim 0 that tells them apart:
        //   parallel LN2(h0)+b = [1, 1] -> h1 = [0,4] + [1,1] = [1, 5]
        //   sequential: LN2([0,4]) + b = [1, 1] -> [1, 5] ... equal again, so use scale instead.
        // Use an MLP norm weight [2, 1]: parallel mlp([-2, 1]) = [0, 1] -> [0, 5];
        // with LN1 weight [1, 3] the attention output is [-1, 3]: parallel h1 = [1,3]+[-1,3]+[0,1]
        // = [0, 7]; sequential h' = [0, 6], LN2 = [-2, 1] -> [0, 7]. Equal by construction of
        // LayerNorm's shift invariance; the distinguishing case needs a non-symmetric input,
        // which the generated-model test against the reference covers (gpt_neox vs
        // gpt_neox_seq). Here: check the parallel value.
        MemWeights w;
        ModelSpec& s = w.sp;
        s.arch = "gpt_neox";
        s.dim = 2, s.nLayers = 1, s.nHeads = 1, s.nKvHeads = 1, s.headDim = 2, s.hidden = 2;
        s.vocab = 1, s.maxSeq = 4, s.normEps = 1e-12f, s.norm = NormType::LayerNorm;
        s.normBias = true, s.gatedMlp = false, s.hiddenAct = "relu";
        s.residual = ResidualStyle::Parallel, s.posEmbed = PosEmbedding::Alibi;
        s.tiedEmbeddings = true;
        const std::vector<float> I = {1, 0, 0, 1}, Z = {0, 0, 0, 0};
        w.add("embed", {1, 2}, {1, 3});
        w.add("final_norm", {2}, {1, 1});
        w.add("final_norm.bias", {2}, {0, 0});
        w.add("layers.0.attn_norm", {2}, {1, 3});
        w.add("layers.0.attn_norm.bias", {2}, {0, 0});
        w.add("layers.0.mlp_norm", {2}, {2, 1});
        w.add("layers.0.mlp_norm.bias", {2}, {0, 0});
        w.add("layers.0.attn.q", {2, 2}, Z);
        w.add("layers.0.attn.k", {2, 2}, Z);
        w.add("layers.0.attn.v", {2, 2}, I);
        w.add("layers.0.attn.o", {2, 2}, I);
        w.add("layers.0.mlp.up", {2, 2}, I);
        w.add("layers.0.mlp.down", {2, 2}, I);
        struct Res : Observer {
            std::vector<float> h;
            void onResidual(int, const float* x, int64_t n, int64_t d) override {
                h.assign(x, x + n * d);
            }
        } res;
        Session sess(w, {.contextLength = 4, .threads = 1, .batchSize = 4});
        sess.addObserver(&res);
        std::vector<float> logits;
        sess.forward(std::vector<int32_t>{0}, logits);
        // attn = o(v(LN1 h0)) = [-1, 3]; mlp = relu(LN2 h0) = relu([-2, 1]) = [0, 1]
        QCOMPARE(res.h.size(), size_t(2));
        QVERIFY(std::abs(res.h[0] - 0.0f) < 1e-5 && std::abs(res.h[1] - 7.0f) < 1e-5);
        // Sequential with a shift in the attention output: o has a bias [5, 0] ->
        // parallel:   h1 = [1,3] + [4,3] + relu(2*[-1], 1*[1]) = [5, 7]
        // sequential: h' = [5, 6], LN2(h') = [-2, 1] -> h1 = [5, 7]  (LayerNorm is shift- and
        // scale-invariant on two dims; three dims break the tie in the generated-model tests).
        w.add("layers.0.attn.o.bias", {2}, {5, 0});
        Session sess2(w, {.contextLength = 4, .threads = 1, .batchSize = 4});
        sess2.addObserver(&res);
        sess2.forward(std::vector<int32_t>{0}, logits);
        QVERIFY(std::abs(res.h[0] - 5.0f) < 1e-5 && std::abs(res.h[1] - 7.0f) < 1e-5);
    }
    void finalSoftcapping() {
        // Gemma2's final soft-capping bounds every logit by the cap.
        MemWeights w;
        ModelSpec& s = w.sp;
        s.arch = "gemma2";
        s.dim = 2, s.nLayers = 1, s.nHeads = 1, s.nKvHeads = 1, s.headDim = 2, s.hidden = 2;
        s.vocab = 2, s.maxSeq = 4, s.normEps = 1e-6f, s.normPlusOne = true, s.postNorms = true;
        s.hiddenAct = "gelu_tanh", s.finalSoftcap = 3.0f, s.attnSoftcap = 50.0f;
        s.tiedEmbeddings = false;
        const std::vector<float> Z = {0, 0, 0, 0};
        w.add("embed", {2, 2}, {1, -1, 2, 0.5f});
        w.add("lm_head", {2, 2}, {100, 0, 0, -0.001f});
        w.add("final_norm", {2}, {0, 0}); // (1 + 0)
        for (const char* n : {"attn_norm", "mlp_norm", "attn_post_norm", "mlp_post_norm"})
            w.add(std::string("layers.0.") + n, {2}, {0, 0});
        for (const char* n :
             {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"})
            w.add(std::string("layers.0.") + n, {2, 2}, Z);
        Session sess(w, {.contextLength = 4, .threads = 1, .batchSize = 4});
        std::vector<float> logits;
        sess.forward(std::vector<int32_t>{0}, logits);
        // h = embed * sqrt(2) = [1.414, -1.414]; RMSNorm -> [1, -1]; lm_head -> [100, 0.001]
        QVERIFY(std::abs(logits[0] - 3.0f * std::tanh(100.0f / 3.0f)) < 1e-5);
        QVERIFY(std::abs(logits[1] - 3.0f * std::tanh(0.001f / 3.0f)) < 1e-6);
    }

    // ================= registry, names, fused tensors =================
    void unsupportedModelTypeListsSupported() {
        try {
            parseHfConfig(R"({"model_type":"t5"})", "cfg.json");
            QFAIL("expected UnsupportedError");
        } catch (const UnsupportedError& e) {
            const QString msg = e.what();
            for (const auto& a : hfSupportedModelTypes())
                QVERIFY2(msg.contains(QString::fromStdString(a)), qPrintable(msg));
            QVERIFY(msg.contains("t5"));
        }
        for (const char* a : {"gemma", "gemma2", "phi3", "mixtral", "opt", "gpt2", "gpt_neox",
                              "stablelm", "falcon", "bloom", "mamba"})
            QVERIFY(std::find(hfSupportedModelTypes().begin(), hfSupportedModelTypes().end(), a) !=
                    hfSupportedModelTypes().end());
    }
    void canonicalNames() {
        QCOMPARE(canonicalFromHf("transformer.h.3.attn.c_proj.weight", "gpt2").value(),
                 std::string("layers.3.attn.o"));
        QCOMPARE(canonicalFromHf("h.0.mlp.c_fc.bias", "gpt2").value(),
                 std::string("layers.0.mlp.up.bias"));
        QCOMPARE(canonicalFromHf("model.decoder.layers.1.fc2.weight", "opt").value(),
                 std::string("layers.1.mlp.down"));
        QCOMPARE(canonicalFromHf("model.decoder.embed_positions.weight", "opt").value(),
                 std::string("pos_embed"));
        QCOMPARE(canonicalFromHf("model.layers.0.block_sparse_moe.experts.3.w2.weight", "mixtral")
                     .value(),
                 std::string("layers.0.mlp.experts.3.down"));
        QCOMPARE(canonicalFromHf("model.layers.2.block_sparse_moe.gate.weight", "mixtral").value(),
                 std::string("layers.2.mlp.router"));
        QCOMPARE(canonicalFromHf("backbone.layers.1.mixer.A_log", "mamba").value(),
                 std::string("layers.1.mixer.A_log"));
        QCOMPARE(
            canonicalFromHf("model.layers.1.post_attention_layernorm.weight", "gemma2").value(),
            std::string("layers.1.attn_post_norm"));
        QCOMPARE(
            canonicalFromHf("model.layers.1.pre_feedforward_layernorm.weight", "gemma2").value(),
            std::string("layers.1.mlp_norm"));
        QCOMPARE(canonicalFromHf("model.layers.1.post_attention_layernorm.weight", "gemma").value(),
                 std::string("layers.1.mlp_norm"));
        QCOMPARE(canonicalFromHf("model.layers.0.self_attn.k_layernorm.norms.1.weight", "stablelm")
                     .value(),
                 std::string("layers.0.attn.k_norm.1"));
        QVERIFY(
            !canonicalFromHf("model.layers.0.block_sparse_moe.experts.01.w1.weight", "mixtral"));
        // split logical tensors name their fused file tensor
        QCOMPARE(hfFromCanonical("layers.4.attn.k", "phi3").value(),
                 std::string("model.layers.4.self_attn.qkv_proj.weight"));
        QCOMPARE(hfFromCanonical("layers.4.mlp.up", "phi3").value(),
                 std::string("model.layers.4.mlp.gate_up_proj.weight"));
        QCOMPARE(hfFromCanonical("layers.1.attn.v.bias", "bloom").value(),
                 std::string("transformer.h.1.self_attention.query_key_value.bias"));
        QCOMPARE(hfFromCanonical("layers.0.mlp.experts.2.up", "mixtral").value(),
                 std::string("model.layers.0.block_sparse_moe.experts.2.w3.weight"));
        QCOMPARE(hfFromCanonical("layers.0.mixer.dt_proj.bias", "mamba").value(),
                 std::string("backbone.layers.0.mixer.dt_proj.bias"));
    }
    void fusedAndTransposedViews() {
        LCW_REQUIRE_SHARED("models/tiny-random/phi3/model/config.json");
        {
            auto m = loadShared("models/tiny-random/phi3/model");
            const TensorView& q = m->get("layers.0.attn.q");
            const TensorView& k = m->get("layers.0.attn.k");
            const TensorView& v = m->get("layers.0.attn.v");
            QCOMPARE(q.fileName, std::string("model.layers.0.self_attn.qkv_proj.weight"));
            QCOMPARE(k.fileName, q.fileName);
            QCOMPARE(q.shape, (std::vector<int64_t>{64, 64}));
            QCOMPARE(k.shape, (std::vector<int64_t>{32, 64}));
            // zero-copy: consecutive row ranges of the mapped fused tensor
            QCOMPARE(k.data, q.data + q.nbytes);
            QCOMPARE(v.data, k.data + k.nbytes);
            QCOMPARE(k.fileRowOffset, int64_t(64));
            QCOMPARE(v.fileRowOffset, int64_t(96));
            const TensorView& g = m->get("layers.1.mlp.gate");
            const TensorView& u = m->get("layers.1.mlp.up");
            QCOMPARE(u.data, g.data + g.nbytes);
            QCOMPARE(g.fileName, std::string("model.layers.1.mlp.gate_up_proj.weight"));
            QVERIFY(m->find("layers.0.attn.qkv") == nullptr);
        }
        LCW_REQUIRE_SHARED("models/tiny-random/gpt2/model/config.json");
        auto m = loadShared("models/tiny-random/gpt2/model");
        const TensorView& up = m->get("layers.0.mlp.up");
        QVERIFY(up.fileTransposed);
        QCOMPARE(up.shape, (std::vector<int64_t>{256, 64})); // [out, in]; file [64, 256]
        QCOMPARE(up.fileName, std::string("transformer.h.0.mlp.c_fc.weight"));
        QCOMPARE(m->get("layers.0.attn.v").fileName,
                 std::string("transformer.h.0.attn.c_attn.weight"));
        QCOMPARE(m->get("layers.0.attn.v.bias").shape, (std::vector<int64_t>{64}));
        QVERIFY(!m->get("embed").fileTransposed);
        // every expected tensor is present
        for (const auto& e : expectedTensors(m->spec())) QVERIFY(m->find(e.name) != nullptr);
    }
    void expertTokenCounts() {
        LCW_REQUIRE_SHARED("models/tiny-random/mixtral_moe/model/config.json");
        auto m = loadShared("models/tiny-random/mixtral_moe/model");
        Session s(*m);
        std::vector<float> logits;
        s.forward(genIds(20, 512), logits);
        auto counts = s.expertTokenCounts();
        QCOMPARE(counts.size(), size_t(2));
        for (const auto& layer : counts) {
            QCOMPARE(layer.size(), size_t(4));
            int64_t sum = 0;
            for (auto c : layer) sum += c;
            QCOMPARE(sum, int64_t(20 * 2)); // top-2 routing
        }
        s.forward(std::vector<int32_t>{5}, logits);
        counts = s.expertTokenCounts();
        int64_t sum = 0;
        for (auto c : counts[0]) sum += c;
        QCOMPARE(sum, int64_t(21 * 2));
        s.resetExpertTokenCounts();
        counts = s.expertTokenCounts();
        for (auto c : counts[1]) QCOMPARE(c, int64_t(0));
        // Dense models: empty.
        LCW_REQUIRE_SHARED("models/tiny-random/gemma/model/config.json");
        auto g = loadShared("models/tiny-random/gemma/model");
        QVERIFY(Session(*g).expertTokenCounts().empty());
    }

    double ggufDiffVsReference(const std::string& name, const std::string& file,
                               const std::string& arch) {
        auto m = Model::load(file);
        if (m->spec().arch != arch) return INFINITY;
        const std::string dir = "models/tiny-random/" + name;
        const auto ref = readJson(lcwtest::sharedPath(dir + "/reference.json"));
        const auto ids = ref["ids"].get<std::vector<int32_t>>();
        const NpyArray want = readNpy(lcwtest::sharedPath(dir + "/logits.npy"));
        Session s(*m);
        std::vector<float> logits;
        s.forward(ids, logits, true);
        std::filesystem::remove_all(std::filesystem::path(file).parent_path());
        return maxAbsDiff(logits, want.data);
    }
    void mixtralGguf() {
        // llama.cpp's Mixtral: architecture "llama", permuted q/k, experts merged into
        // [experts, rows, cols] tensors (ffn_gate_exps, ...), router ffn_gate_inp.
        LCW_REQUIRE_SHARED("models/tiny-random/mixtral_moe/reference.json");
        auto hf = loadShared("models/tiny-random/mixtral_moe/model");
        const ModelSpec& sp = hf->spec();
        auto meta = ggufMeta("llama", sp);
        meta.push_back({"llama.expert_count", GgufValue::u32(uint32_t(sp.nExperts))});
        meta.push_back({"llama.expert_used_count", GgufValue::u32(uint32_t(sp.nExpertsPerTok))});
        std::vector<GgufT> ts;
        ts.push_back({"token_embd.weight", hf->get("embed").shape, floatsOf(hf->get("embed"))});
        ts.push_back({"output.weight", hf->get("lm_head").shape, floatsOf(hf->get("lm_head"))});
        ts.push_back({"output_norm.weight", {sp.dim}, floatsOf(hf->get("final_norm"))});
        for (int64_t l = 0; l < sp.nLayers; ++l) {
            const std::string p = "layers." + std::to_string(l) + ".";
            const std::string b = "blk." + std::to_string(l) + ".";
            auto get = [&](const std::string& n) { return floatsOf(hf->get(p + n)); };
            ts.push_back({b + "attn_norm.weight", {sp.dim}, get("attn_norm")});
            ts.push_back({b + "ffn_norm.weight", {sp.dim}, get("mlp_norm")});
            ts.push_back({b + "attn_q.weight",
                          {sp.nHeads * sp.headDim, sp.dim},
                          permuteQk(get("attn.q"), sp.nHeads, sp.headDim, sp.dim)});
            ts.push_back({b + "attn_k.weight",
                          {sp.nKvHeads * sp.headDim, sp.dim},
                          permuteQk(get("attn.k"), sp.nKvHeads, sp.headDim, sp.dim)});
            ts.push_back({b + "attn_v.weight", {sp.nKvHeads * sp.headDim, sp.dim}, get("attn.v")});
            ts.push_back(
                {b + "attn_output.weight", {sp.dim, sp.nHeads * sp.headDim}, get("attn.o")});
            ts.push_back({b + "ffn_gate_inp.weight", {sp.nExperts, sp.dim}, get("mlp.router")});
            for (const char* r : {"gate", "up", "down"}) {
                std::vector<float> all;
                for (int64_t e = 0; e < sp.nExperts; ++e) {
                    const auto v = get("mlp.experts." + std::to_string(e) + "." + r);
                    all.insert(all.end(), v.begin(), v.end());
                }
                const bool down = std::string(r) == "down";
                ts.push_back({b + "ffn_" + r + "_exps.weight",
                              {sp.nExperts, down ? sp.dim : sp.hidden, down ? sp.hidden : sp.dim},
                              all});
            }
        }
        const double d =
            ggufDiffVsReference("mixtral_moe", writeGgufModel("mixtral_gguf", meta, ts), "llama");
        qInfo("mixtral GGUF: max |logit diff| %.3g", d);
        QVERIFY(d < 1e-4);
    }
    void phi3Gguf() {
        // llama.cpp's Phi-3: fused attn_qkv and ffn_up = [gate; up], rotate-half rope.
        LCW_REQUIRE_SHARED("models/tiny-random/phi3/reference.json");
        auto hf = loadShared("models/tiny-random/phi3/model");
        const ModelSpec& sp = hf->spec();
        auto meta = ggufMeta("phi3", sp);
        meta.push_back({"phi3.rope.dimension_count", GgufValue::u32(uint32_t(sp.headDim))});
        std::vector<GgufT> ts;
        ts.push_back({"token_embd.weight", hf->get("embed").shape, floatsOf(hf->get("embed"))});
        ts.push_back({"output.weight", hf->get("lm_head").shape, floatsOf(hf->get("lm_head"))});
        ts.push_back({"output_norm.weight", {sp.dim}, floatsOf(hf->get("final_norm"))});
        const int64_t qkv = (sp.nHeads + 2 * sp.nKvHeads) * sp.headDim;
        for (int64_t l = 0; l < sp.nLayers; ++l) {
            const std::string p = "layers." + std::to_string(l) + ".";
            const std::string b = "blk." + std::to_string(l) + ".";
            auto get = [&](const std::string& n) { return floatsOf(hf->get(p + n)); };
            ts.push_back({b + "attn_norm.weight", {sp.dim}, get("attn_norm")});
            ts.push_back({b + "ffn_norm.weight", {sp.dim}, get("mlp_norm")});
            ts.push_back({b + "attn_qkv.weight",
                          {qkv, sp.dim},
                          concatRows({get("attn.q"), get("attn.k"), get("attn.v")})});
            ts.push_back(
                {b + "attn_output.weight", {sp.dim, sp.nHeads * sp.headDim}, get("attn.o")});
            ts.push_back({b + "ffn_up.weight",
                          {2 * sp.hidden, sp.dim},
                          concatRows({get("mlp.gate"), get("mlp.up")})});
            ts.push_back({b + "ffn_down.weight", {sp.dim, sp.hidden}, get("mlp.down")});
        }
        const double d = ggufDiffVsReference("phi3", writeGgufModel("phi3_gguf", meta, ts), "phi3");
        qInfo("phi3 GGUF: max |logit diff| %.3g", d);
        QVERIFY(d < 1e-4);
    }
    void gemmaGguf() {
        // The tiny Gemma converted the way llama.cpp's converter does it (llama tensor names,
        // RMSNorm weights stored as 1 + w) gives the transformers logits.
        const std::string dir = "models/tiny-random/gemma";
        LCW_REQUIRE_SHARED(dir + "/reference.json");
        auto hf = loadShared(dir + "/model");
        const ModelSpec& sp = hf->spec();
        std::vector<std::pair<std::string, GgufValue>> meta = {
            {"general.architecture", GgufValue::string("gemma")},
            {"gemma.embedding_length", GgufValue::u32(uint32_t(sp.dim))},
            {"gemma.block_count", GgufValue::u32(uint32_t(sp.nLayers))},
            {"gemma.feed_forward_length", GgufValue::u32(uint32_t(sp.hidden))},
            {"gemma.attention.head_count", GgufValue::u32(uint32_t(sp.nHeads))},
            {"gemma.attention.head_count_kv", GgufValue::u32(uint32_t(sp.nKvHeads))},
            {"gemma.attention.key_length", GgufValue::u32(uint32_t(sp.headDim))},
            {"gemma.attention.value_length", GgufValue::u32(uint32_t(sp.headDim))},
            {"gemma.context_length", GgufValue::u32(uint32_t(sp.maxSeq))},
            {"gemma.attention.layer_norm_rms_epsilon", GgufValue::f32(sp.normEps)},
            {"gemma.rope.freq_base", GgufValue::f32(float(sp.rope.theta))},
        };
        std::vector<TensorDesc> descs;
        std::vector<std::vector<float>> data;
        for (const auto& t : hf->tensors()) {
            const auto g = ggufFromCanonical(t.name);
            QVERIFY2(g.has_value(), t.name.c_str());
            std::vector<int64_t> shape = t.shape;
            std::vector<float> v(size_t(t.numel()));
            kernels::dequantizeRows(t, 0, t.rows(), v.data());
            if (t.name.find("norm") != std::string::npos)
                for (float& x : v) x += 1.0f;
            descs.push_back({*g, DType::F32, shape});
            data.push_back(std::move(v));
        }
        const std::string out = lcwtest::tempDir("gemma_gguf") + "/gemma.gguf";
        writeGguf(out, meta, descs, [&](size_t i, std::byte* dst, uint64_t n) {
            std::memcpy(dst, data[i].data(), size_t(n));
        });
        auto m = Model::load(out);
        QCOMPARE(QString::fromStdString(m->spec().arch), QString("gemma"));
        const auto ref = readJson(lcwtest::sharedPath(dir + "/reference.json"));
        const auto ids = ref["ids"].get<std::vector<int32_t>>();
        const NpyArray want = readNpy(lcwtest::sharedPath(dir + "/logits.npy"));
        Session s(*m);
        std::vector<float> logits;
        s.forward(ids, logits, true);
        const double d = maxAbsDiff(logits, want.data);
        qInfo("gemma GGUF: max |logit diff| %.3g", d);
        QVERIFY(d < 1e-4);
        std::filesystem::remove_all(std::filesystem::path(out).parent_path());
    }

    // ================= GGUF files as llama.cpp's converter writes them =================
    void ggufFamilies_data() {
        QTest::addColumn<QString>("variant");
        for (const char* v : {"gpt2", "mamba", "gemma2", "gpt_neox", "gpt_neox_seq", "stablelm",
                              "stablelm_par", "falcon_mq", "falcon_new", "bloom"})
            QTest::newRow(v) << v;
    }
    void ggufFamilies() {
        QFETCH(QString, variant);
        const std::string var = variant.toStdString();
        std::unique_ptr<Model> hf;
        std::vector<int32_t> ids;
        std::string dir;
        const bool shared = var == "gpt2" || var == "mamba";
        if (shared) {
            const std::string rel = "models/tiny-random/" + var;
            LCW_REQUIRE_SHARED(rel + "/reference.json");
            hf = loadShared(rel + "/model");
            ids = readJson(lcwtest::sharedPath(rel + "/reference.json"))["ids"]
                      .get<std::vector<int32_t>>();
        } else {
            RefCfg c;
            nlohmann::json cfg;
            buildFamily(var, c, cfg);
            // GGUF has no query_pre_attn_scalar: llama.cpp scales Gemma2 (but 27B) queries by
            // 1/sqrt(head_dim), so the converted model must use that value.
            if (var == "gemma2") cfg["query_pre_attn_scalar"] = c.hd;
            const RefWeights w = makeRefWeights(c, 4321);
            dir = lcwtest::tempDir("gguf_hf_" + var);
            writeModel(dir, cfg, familyFiles(var, c, w), DType::F32);
            hf = Model::load(dir);
            ids = genIds(12, c.V);
        }
        const ModelSpec& sp = hf->spec();
        auto meta = ggufMetaLikeLlamaCpp(sp);
        if (var == "gpt2")
            addGpt2Vocab(meta, lcwtest::sharedPath("models/tiny-random/gpt2/model/tokenizer.json"));
        const std::string file = writeGgufModel("gguf_" + var, meta, ggufTensorsLikeLlamaCpp(*hf));
        auto m = Model::load(file);
        QCOMPARE(QString::fromStdString(m->spec().arch), QString::fromStdString(sp.arch));
        QCOMPARE(m->spec().sourceFormat, std::string("gguf"));
        for (const auto& e : expectedTensors(m->spec())) QVERIFY2(m->find(e.name), e.name.c_str());
        std::vector<float> want, got;
        Session(*hf).forward(ids, want, true);
        Session(*m).forward(ids, got, true);
        const double d = maxAbsDiff(got, want);
        qInfo("%s GGUF vs Hugging Face load: max |logit diff| %.3g", var.c_str(), d);
        QVERIFY(d < 1e-5);
        const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 4);
        Session ga(*hf), gb(*m);
        const auto ra = ga.generate(prompt, 8, {});
        auto rb = gb.generate(prompt, 8, {});
        // A GGUF without tokenizer.ggml.* has no EOS id: compare up to the HF model's stop.
        if (ra.stoppedAtEos && rb.ids.size() > ra.ids.size()) rb.ids.resize(ra.ids.size());
        QCOMPARE(rb.ids, ra.ids);
        if (var == "gpt2") {
            // tokenizer from tokenizer.ggml.* (byte-level BPE, pre "gpt-2")
            const auto ref =
                readJson(lcwtest::sharedPath("models/tiny-random/gpt2/reference.json"));
            const auto enc = m->tokenizer().encode(ref["text"].get<std::string>());
            QVERIFY(enc.size() >= ids.size());
            QCOMPARE(std::vector<int32_t>(enc.begin(), enc.begin() + int64_t(ids.size())), ids);
        }
        std::filesystem::remove_all(std::filesystem::path(file).parent_path());
        if (!dir.empty()) std::filesystem::remove_all(dir);
    }

    // ================= shared transformers references =================
    void references_data() {
        QTest::addColumn<QString>("name");
        for (const char* n : {"gemma", "phi3", "mixtral_moe", "opt", "gpt2", "mamba"})
            QTest::newRow(n) << n;
    }
    void references() {
        QFETCH(QString, name);
        const std::string dir = "models/tiny-random/" + name.toStdString();
        LCW_REQUIRE_SHARED(dir + "/reference.json");
        const auto ref = readJson(lcwtest::sharedPath(dir + "/reference.json"));
        auto m = loadShared(dir + "/model");
        QCOMPARE(QString::fromStdString(m->spec().arch),
                 QString::fromStdString(ref["model_type"].get<std::string>()));
        const auto ids = ref["ids"].get<std::vector<int32_t>>();
        // Tokenizer: the reference ids are the first tokens of the text.
        const auto enc = m->tokenizer().encode(ref["text"].get<std::string>());
        QVERIFY(enc.size() >= ids.size());
        QCOMPARE(std::vector<int32_t>(enc.begin(), enc.begin() + int64_t(ids.size())), ids);

        const NpyArray want = readNpy(lcwtest::sharedPath(dir + "/logits.npy"));
        {
            Session s(*m);
            RecordingObserver obs;
            s.addObserver(&obs);
            std::vector<float> logits;
            s.forward(ids, logits, true);
            const double d = maxAbsDiff(logits, want.data);
            qInfo("%s (%s): max |logit diff| %.3g", dir.c_str(),
                  ref["stored_dtype"].get<std::string>().c_str(), d);
            QVERIFY(d < 1e-4);
            // Every linear weight of the model was observed.
            int64_t linears = 0;
            for (const auto& t : m->tensors()) {
                const auto& n = t.name;
                const bool isLinear = t.shape.size() == 2 && n.rfind("layers.", 0) == 0 &&
                                      (n.find(".attn.") != std::string::npos ||
                                       n.find(".mlp.") != std::string::npos ||
                                       n.find(".mixer.") != std::string::npos) &&
                                      n.find("norm") == std::string::npos &&
                                      n.find("A_log") == std::string::npos;
                if (!isLinear) continue;
                ++linears;
                if (!obs.tokens.count(n))
                    QFAIL(qPrintable(QString("no observer call for ") + n.c_str()));
            }
            QVERIFY(linears > 0);
            QCOMPARE(obs.tokens["lm_head"], int64_t(ids.size()));
            if (m->spec().isMamba())
                QCOMPARE(obs.kvCalls, 0);
            else
                QCOMPARE(obs.kvCalls, int(m->spec().nLayers));
        }
        // Incremental decoding (cache / recurrent state) gives the same logits as the batch.
        {
            Session s(*m, {.contextLength = 0, .threads = 0, .batchSize = 7});
            std::vector<float> all, part;
            s.forward(std::span(ids).first(20), part, true);
            all = part;
            for (size_t i = 20; i < ids.size(); ++i) {
                s.forward(std::span(ids).subspan(i, 1), part, false);
                all.insert(all.end(), part.begin(), part.end());
            }
            QVERIFY(maxAbsDiff(all, want.data) < 1e-4);
        }
        const auto prompt = ref["greedy_prompt"].get<std::vector<int32_t>>();
        const auto greedy = ref["greedy_ids"].get<std::vector<int32_t>>();
        Session g(*m);
        const auto r = g.generate(prompt, int64_t(greedy.size() - prompt.size()), {});
        QCOMPARE(r.ids, greedy);
    }
};

QTEST_GUILESS_MAIN(TestArchitectures)
#include "test_architectures.moc"
