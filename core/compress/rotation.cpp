#include "core/compress/rotation.h"

#include "core/common/error.h"
#include "core/compress/folding.h"
#include "core/compress/spinquant.h"
#include "core/io/quants.h"
#include "core/runtime/hadamard.h"
#include "core/stats/fingerprint.h"

#include <cstring>
#include <functional>
#include <map>

namespace lcw::compress {

using runtime::OrthoTransform;

namespace {

/// An orthogonal transform of vectors of n doubles in place (x ← T x); null: the identity.
using VecFn = std::function<void(double*)>;

VecFn transformFn(const OrthoTransform& t) {
    return [t](double* x) { t.apply(x); };
}
/// x ← M x for a dense row-major n×n matrix.
VecFn matrixFn(const std::vector<double>& m, int64_t n) {
    return [&m, n](double* x) {
        std::vector<double> y(static_cast<size_t>(n), 0.0);
        for (int64_t i = 0; i < n; ++i) {
            double acc = 0;
            for (int64_t j = 0; j < n; ++j) acc += m[size_t(i * n + j)] * x[j];
            y[size_t(i)] = acc;
        }
        std::copy(y.begin(), y.end(), x);
    };
}

/// Every row r of W [rows, n] ← T row (W ← W Tᵀ).
void rotateRows(std::vector<float>& w, int64_t rows, int64_t n, const VecFn& t) {
    if (!t) return;
    std::vector<double> x(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
        float* row = w.data() + r * n;
        for (int64_t i = 0; i < n; ++i) x[size_t(i)] = row[i];
        t(x.data());
        for (int64_t i = 0; i < n; ++i) row[i] = float(x[size_t(i)]);
    }
}

/// Rows [r0, r0 + n) of W [*, cols], column by column ← T column (W ← T W there).
void rotateCols(std::vector<float>& w, int64_t cols, int64_t r0, int64_t n, const VecFn& t) {
    if (!t) return;
    std::vector<double> x(static_cast<size_t>(n));
    for (int64_t c = 0; c < cols; ++c) {
        for (int64_t i = 0; i < n; ++i) x[size_t(i)] = w[size_t((r0 + i) * cols + c)];
        t(x.data());
        for (int64_t i = 0; i < n; ++i) w[size_t((r0 + i) * cols + c)] = float(x[size_t(i)]);
    }
}

/// Every run of n values of every row of W [rows, cols] ← T run (W ← W blockdiag(T)ᵀ).
void rotateRuns(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n, const VecFn& t) {
    if (!t) return;
    std::vector<double> x(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c0 = 0; c0 + n <= cols; c0 += n) {
            float* run = w.data() + r * cols + c0;
            for (int64_t i = 0; i < n; ++i) x[size_t(i)] = run[i];
            t(x.data());
            for (int64_t i = 0; i < n; ++i) run[i] = float(x[size_t(i)]);
        }
}

void scaleCols(std::vector<float>& w, int64_t cols, const std::vector<float>& g) {
    for (size_t i = 0; i < w.size(); ++i) w[i] *= g[i % size_t(cols)];
}

/// Builds the rotated tensors (name → values) of one model: the seeded Hadamard transforms, the
/// learned matrices (`learned`), or none (`unrotated`: the norms and the online down transform
/// folded only).
class Folder {
public:
    Folder(const Model& base, const RotationSettings& rs, const LearnedRotation* learned,
           bool unrotated)
        : b(base), s(base.spec()), rs(rs) {
        if (unrotated) return;
        if (learned) {
            res = matrixFn(learned->r1, s.dim);
            if (rs.kv)
                for (const auto& m : learned->r2) heads.push_back(matrixFn(m, s.headDim));
            return;
        }
        res = transformFn(
            OrthoTransform(s.dim, runtime::rotationSeed(rs.seed, runtime::kRotResidual), true));
        if (rs.kv)
            heads.assign(size_t(s.nLayers),
                         transformFn(OrthoTransform(
                             s.headDim, runtime::rotationSeed(rs.seed, runtime::kRotHead), false)));
    }
    std::map<std::string, std::vector<float>> out;

    void run() {
        foldHead();
        auto& e = get("embed");
        rotateRows(e, int64_t(e.size()) / s.dim, s.dim, res);
        for (int64_t l = 0; l < s.nLayers; ++l) foldBlock(l);
    }

private:
    const Model& b;
    const ModelSpec& s;
    RotationSettings rs;
    VecFn res;                ///< the residual stream's transform
    std::vector<VecFn> heads; ///< per block: the v heads' transform (empty: none)

    std::vector<float>& get(const std::string& name) {
        auto it = out.find(name);
        return it != out.end() ? it->second : out[name] = tensorFloats(b.get(name));
    }
    int64_t cols(const std::string& name) const { return b.get(name).cols(); }

    /// The norm's effective scale, then the norm set to the identity.
    std::vector<float> takeNorm(const std::string& name) {
        auto& g = get(name);
        std::vector<float> eff = g;
        if (s.normPlusOne)
            for (float& x : eff) x += 1.0f;
        std::fill(g.begin(), g.end(), s.normPlusOne ? 0.0f : 1.0f);
        return eff;
    }
    /// Linears reading the norm / the residual: W ← (W diag(g)) Rᵀ.
    void foldInput(const std::string& name, const std::vector<float>* g) {
        auto& w = get(name);
        if (g) scaleCols(w, s.dim, *g);
        rotateRows(w, int64_t(w.size()) / s.dim, s.dim, res);
    }
    /// Linears writing the residual: W ← R W, b ← R b.
    void foldOutput(const std::string& name) {
        auto& w = get(name);
        rotateCols(w, cols(name), 0, s.dim, res);
        if (b.find(name + ".bias")) {
            auto& bias = get(name + ".bias");
            rotateCols(bias, 1, 0, s.dim, res);
        }
    }
    void foldHead() {
        std::vector<float> g;
        if (s.finalNorm && b.find("final_norm")) g = takeNorm("final_norm");
        if (b.find("lm_head")) {
            foldInput("lm_head", g.empty() ? nullptr : &g);
        } else { // tied: lm_head becomes its own tensor
            out["lm_head"] = tensorFloats(b.get("embed"));
            foldInput("lm_head", g.empty() ? nullptr : &g);
        }
    }
    void foldBlock(int64_t l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        const std::vector<float> ga = takeNorm(p + "attn_norm");
        for (const char* n : {"attn.q", "attn.k", "attn.v"}) foldInput(p + n, &ga);
        const std::vector<float> gm = takeNorm(p + "mlp_norm");
        if (s.gatedMlp) foldInput(p + "mlp.gate", &gm);
        foldInput(p + "mlp.up", &gm);
        foldOutput(p + "attn.o");
        foldOutput(p + "mlp.down");
        if (rs.down) {
            auto& d = get(p + "mlp.down");
            const int64_t hid = cols(p + "mlp.down");
            rotateRows(d, int64_t(d.size()) / hid, hid,
                       transformFn(OrthoTransform(
                           hid, runtime::rotationSeed(rs.seed, runtime::kRotDown), false)));
        }
        if (size_t(l) < heads.size()) {
            const VecFn& head = heads[size_t(l)];
            const int64_t hd = s.headDim;
            const std::string v = p + "attn.v";
            auto& wv = get(v);
            const int64_t kvRows = int64_t(wv.size()) / s.dim;
            for (int64_t r0 = 0; r0 < kvRows; r0 += hd) rotateCols(wv, s.dim, r0, hd, head);
            if (b.find(v + ".bias")) {
                auto& bv = get(v + ".bias");
                for (int64_t r0 = 0; r0 < kvRows; r0 += hd) rotateCols(bv, 1, r0, hd, head);
            }
            auto& wo = get(p + "attn.o");
            rotateRuns(wo, int64_t(wo.size()) / cols(p + "attn.o"), cols(p + "attn.o"), hd, head);
        }
    }
};

} // namespace

std::string rotationUnsupported(const WeightSource& w) {
    const ModelSpec& s = w.spec();
    if (s.isMamba() || s.arch == "mamba") return "Mamba blocks have no residual stream to rotate";
    if (s.norm != NormType::RMSNorm || s.normBias)
        return "the norms are LayerNorms (mean subtraction and bias do not commute with a "
               "rotation; QuaRot needs RMSNorm)";
    if (s.residual != ResidualStyle::PreNorm) return "the blocks are not pre-norm";
    if (s.residualFromNorm) return "the residual starts from the norm output";
    if (s.postNorms) return "post-norms on the sub-layer outputs";
    if (s.isMoe()) return "mixture-of-experts MLPs";
    if (s.posEmbed == PosEmbedding::Learned) return "learned position embeddings";
    if (s.embedNorm) return "a norm right after the embedding";
    if (s.embeddingDim() != s.dim) return "an embedding projection";
    for (int64_t l = 0; l < s.nLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        if (w.find(p + "attn_norm.bias") || w.find(p + "mlp_norm.bias"))
            return "norm biases in block " + std::to_string(l);
        if (!w.find(p + "attn_norm") || !w.find(p + "mlp_norm"))
            return "block " + std::to_string(l) + " lacks a norm";
        for (const char* n : {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"})
            if (!w.find(p + n)) return "block " + std::to_string(l) + " has no " + n;
    }
    if (w.find("final_norm.bias")) return "a final norm bias";
    if (w.runtimeQuant()) return "the model file declares its own activation quantisation";
    return {};
}

namespace {

RotatedModel buildRotated(const Model& base, const RotationSettings& rs,
                          const LearnedRotation* learned, bool unrotated) {
    const std::string why = rotationUnsupported(base);
    if (!why.empty())
        throw UnsupportedError("rotation (QuaRot) of " + base.path() + " (" + base.spec().arch +
                               "): " + why);
    const ModelSpec& s = base.spec();
    if (learned && (learned->r1.size() != size_t(s.dim * s.dim) ||
                    (rs.kv && learned->r2.size() != size_t(s.nLayers))))
        throw ArgumentError("learned rotation of " + base.path() +
                            ": matrices of the wrong size for the model");
    if (learned)
        for (const auto& m : learned->r2)
            if (m.size() != size_t(s.headDim * s.headDim))
                throw ArgumentError("learned rotation of " + base.path() +
                                    ": a head matrix of the wrong size");
    Folder f(base, rs, learned, unrotated);
    f.run();
    RotatedModel r;
    r.model = std::make_unique<Model>();
    Model& m = *r.model;
    m.mutableSpec() = base.spec();
    m.setPath(base.path());
    m.shareTokenizer(base);
    auto addFloat = [&](TensorView t, std::vector<float>& v) {
        std::vector<std::byte> bytes(v.size() * sizeof(float));
        std::memcpy(bytes.data(), v.data(), bytes.size());
        t.dtype = DType::F32;
        t.nbytes = bytes.size();
        t.data = m.ownBuffer(std::move(bytes));
        t.file.clear();
        r.changed.push_back(t.name);
        m.addTensor(std::move(t));
    };
    for (const TensorView& t : base.tensors()) {
        auto it = f.out.find(t.name);
        if (it == f.out.end())
            m.addTensor(t);
        else
            addFloat(t, it->second);
    }
    if (!base.find("lm_head")) {
        TensorView t = base.get("embed");
        t.name = "lm_head";
        t.fileName.clear();
        addFloat(t, f.out["lm_head"]);
    }
    r.online.down = rs.down;
    r.online.qk = rs.kv;
    r.online.seed = rs.seed;
    RuntimeQuant rq;
    rq.rotation = r.online;
    m.setRuntimeQuant(std::move(rq));
    return r;
}

} // namespace

RotatedModel rotateModel(const Model& base, const RotationSettings& rs,
                         const LearnedRotation* learned) {
    return buildRotated(base, rs, learned, false);
}

RotatedModel normFoldedModel(const Model& base, const RotationSettings& rs) {
    return buildRotated(base, rs, nullptr, true);
}

namespace {

/// What does not compose with the rotation (RecipeError naming the rule).
void checkRotatedPlan(const Recipe& recipe, const Model& base, const Plan& plan) {
    if (!recipe.imatrix.empty() && recipe.imatrix != "calibrate")
        throw RecipeError(-1, "imatrix",
                          "an importance-matrix file measures the unrotated model; with a "
                          "rotation use \"calibrate\"");
    for (const LayerPlan& l : plan.layers) {
        const int rule = l.origin.count("weight") ? l.origin.at("weight") : -1;
        if (l.quantize &&
            (l.weight.method == WeightMethod::Awq || l.weight.method == WeightMethod::OmniQuant ||
             l.weight.method == WeightMethod::EfficientQat))
            throw RecipeError(rule, "weight.method",
                              std::string(weightMethodName(l.weight.method)) +
                                  " does not compose with a rotation (its block model does not "
                                  "apply the online transforms); use rtn or gptq");
        if (l.name == "lm_head" && !base.find("lm_head"))
            throw RecipeError(rule, "targets",
                              "lm_head is tied to embed in this model; a rotation unties it and "
                              "keeps it in float");
    }
    if (!plan.smooth.empty())
        throw RecipeError(
            plan.smooth.begin()->second.second, "smoothquant",
            "SmoothQuant does not compose with a rotation (the rotation replaces it)");
    if (!plan.structured.empty())
        throw RecipeError(plan.structured.front().mlpRule >= 0 ? plan.structured.front().mlpRule
                                                               : plan.structured.front().headRule,
                          "structured",
                          "structured pruning does not compose with a rotation (the online "
                          "transforms mix the MLP channels)");
}

} // namespace

CompressResult compressRotated(const Model& base, const Recipe& recipe, Progress& outer,
                               const CompressOptions& opts) {
    const RotationSettings& rs = *recipe.rotation;
    RotatedModel rot = rotateModel(base, rs);
    Recipe inner = recipe;
    inner.rotation.reset();
    PlanOptions po;
    po.hasCalibration = opts.hasCalibration || (opts.calibration && !opts.calibration->empty());
    const Plan innerPlan = planRecipe(inner, *rot.model, po);
    checkRotatedPlan(recipe, base, innerPlan);
    for (const KvPlan& k : innerPlan.kv)
        if (k.kv.smooth && recipe.rotation->kv)
            throw RecipeError(k.rule, "kv.smooth",
                              "WKVQuant's calibrated smoothing cannot be combined with the "
                              "rotation's online q/k transform (rotation.online_qk)");
    // SpinQuant: the rotation is learned first (the first half of the progress), then folded.
    nlohmann::ordered_json learnedReport;
    RangeProgress learnProgress(outer, 0.0, 0.5);
    RangeProgress rest(outer, rs.learned ? 0.5 : 0.0, 1.0);
    if (rs.learned) {
        if (!opts.calibration || opts.calibration->empty())
            throw RecipeError(-1, "rotation.method",
                              "learned rotations (spinquant) need calibration data (--calib)");
        const SpinQuantResult sr =
            learnRotation(base, rs, spinQuantSimulation(innerPlan, base.spec()),
                          opts.calibration->samples, learnProgress);
        if (sr.status == Status::Cancelled) {
            CompressResult c;
            c.status = Status::Cancelled;
            return c;
        }
        rot = rotateModel(base, rs, &sr.rotation);
        learnedReport = sr.json();
    }
    CompressResult res = compress(*rot.model, inner, rest, opts);
    if (res.status == Status::Cancelled || !res.model) return res;
    RuntimeQuant rq;
    if (const RuntimeQuant* q = res.model->runtimeQuant()) rq = *q;
    rq.rotation = rot.online;
    std::unique_ptr<CompressedModel> cm = res.model->moveOnto(base);
    res.model.reset();
    for (const std::string& name : rot.changed) {
        if (cm->compressed(name) || cm->isLowRank(name)) continue;
        const TensorView& t = rot.model->get(name);
        cm->setFloatTensor(name, tensorFloats(t),
                           base.find(name) ? std::vector<int64_t>{} : t.shape);
    }
    cm->setRuntimeQuant(std::move(rq));
    cm->recipe = recipe;
    if (learnedReport.is_object()) res.seconds += learnedReport["seconds"].get<double>();
    res.rotation = std::move(learnedReport);
    cm->baseFingerprint = stats::modelFingerprint(base);
    res.model = std::move(cm);
    return res;
}

} // namespace lcw::compress
