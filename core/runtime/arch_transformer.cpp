// Attention-family forward on the CPU: Llama, Mistral, Qwen2/3, Gemma, Gemma2, Phi-3, Mixtral,
// OPT, GPT-2, GPT-NeoX (Pythia), StableLM, Falcon and Bloom.
//
// Every family is the same skeleton (embedding → blocks → final norm → lm_head); the spec picks
// the variant of each part:
//   embedding   token rows (× √dim for Gemma), OPT's projection, learned positions, Bloom's norm
//   norms       RMSNorm (Gemma: 1 + w) or LayerNorm with bias
//   block       pre-norm, post-norm (OPT-350m), parallel (NeoX, Falcon, StableLM), Gemma2's extra
//               post-norms, Bloom's residual taken after the norm
//   attention   RoPE (full or partial), learned positions or ALiBi; soft-capping; sliding window
//   MLP         gated (SwiGLU / GeGLU), plain fc1 → act → fc2, or a sparse mixture of experts
// Weight storage: see session.cpp (weights are used in place, tile by tile). Linears a
// compressed overlay holds as lcw codes are bound packed (WeightSource::packedLinear): their
// products read the codes and apply the recipe's activation quantisation themselves; stored
// weights multiply a fake-quantised copy of the input instead.
#include "core/common/error.h"
#include "core/runtime/activation_sparsity.h"
#include "core/runtime/arch.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/hadamard.h"
#include "core/runtime/kv_policy.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/transformer_plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lcw::runtime {

namespace {

struct Expert {
    Weight gate, up, down;
    std::string name[3];
    const ActQuantSpec* aq[3] = {}; // input fake-quantisation of gate, up, down (null: none)
};

/// A linear stored as two factors: y = B (A x), A [rank, in], B [out, rank].
struct LowRank {
    Weight a, b;
    int64_t rank = 0;
};

struct Layer {
    Norm attnNorm, mlpNorm, attnPostNorm, mlpPostNorm;
    Weight q, k, v, o, gate, up, down, router;
    std::vector<Expert> experts;
    std::vector<float> qNorm, kNorm; // Qwen3: [headDim]; StableLM: [heads * headDim]
    std::vector<float> bq, bk, bv, bo, bGate, bUp, bDown;
    bool sliding = false;
    float scale = 1.0f;
    std::string name[8]; // q k v o gate up down router
    LowRank lr[7];       // q k v o gate up down given as factors (their Weight is empty)
    // This block's shapes, read from its tensors (structured pruning can shrink them):
    int64_t heads = 0, kvHeads = 0, qd = 0, kvd = 0, hidden = 0;
    const ActQuantSpec* aq[8] = {};      // input quantisation per linear (null: none)
    const KvQuantSpec* kvq = nullptr;    // quantised KV cache (null: f32 or F16 cache)
    const KvPolicySpec* kvPol = nullptr; // KV eviction policy (null: full cache)
};

/// Same input quantisation (both none, or equal settings)?
bool sameQuant(const ActQuantSpec* a, const ActQuantSpec* b) {
    return a == b || (a && b && *a == *b);
}

class TransformerRunner final : public ArchRunner {
public:
    explicit TransformerRunner(const RunEnv& e) : env(e), s(e.s), w(e.w) { bind(); }

    void run(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
             float* logitsOut) override;
    bool runScored(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                   float* logitsOut, const int32_t* targets, float* logProbs) override;
    std::vector<std::vector<int64_t>> expertTokenCounts() const override { return counts; }
    void resetExpertTokenCounts() override {
        for (auto& c : counts) std::fill(c.begin(), c.end(), 0);
    }
    uint64_t kvCacheBytes(int64_t tokens, bool asF32) const override;

private:
    RunEnv env;
    const ModelSpec& s;
    const WeightSource& w;
    kernels::Activation act = kernels::Activation::Silu;
    int64_t qDim = 0, kvDim = 0, ed = 0;
    Weight embed, lmHead, projIn, projOut;
    const TensorView* posEmbed = nullptr;
    Norm embedNorm, finalNorm;
    std::vector<Layer> layers;
    std::vector<float> alibi;
    kernels::RopeFreqs rope;
    std::vector<std::vector<int64_t>> counts; // MoE: [layer][expert]

    std::vector<kernels::FloatBuffer> kCache, vCache;  // f32 cache [rows, kvd] (!env.kvF16)
    std::vector<std::vector<uint16_t>> kHalf, vHalf; // F16 cache [rows, kvd] (env.kvF16)
    std::vector<runtime::KvStream> kStream, vStream; // layers with a quantised KV cache
    std::vector<runtime::KvPolicyCache> polCache;    // layers with a KV eviction policy
    kernels::FloatBuffer kDeq, vDeq, aqBuf;          // dequantised cache rows; quantised inputs
    kernels::FloatBuffer lrBuf;                      // low-rank intermediate A x
    std::vector<float> kOld, vOld, saved;            // quantisedAttention scratch
    const ActQuantSpec* lmAq = nullptr;
    OnlineRotations rot; // a rotated model's online transforms (RuntimeQuant::rotation)
    int64_t cacheRows = 0;
    kernels::FloatBuffer h, xn, tmp, tmp2, q, k, kPre, v, att, gate, up, cosT, sinT;
    kernels::FloatBuffer xe, ye, routerLogits; // embedding projection / MoE scratch
    std::vector<std::vector<int32_t>> expTok;  // MoE: tokens routed to each expert
    std::vector<std::vector<float>> expW;      // ... and their routing weights
    std::vector<int32_t> routeIds;
    std::vector<float> routeW;

    void bind();
    void ensureCache(int64_t rows);
    void embedTokens(const int32_t* ids, int64_t n, int64_t pos0);
    void attention(int64_t l, const float* x, int64_t n, int64_t pos0, const kernels::RopeFreqs* rf,
                   float* out);
    void mlp(int64_t l, const float* x, int64_t n, float* out);
    void moe(int64_t l, const float* x, int64_t n, float* out);
    bool observed() const { return !env.observers.empty(); }
    void quantisedAttention(int64_t l, int64_t n, int64_t pos0,
                            const kernels::AttentionOptions& ao);
    /// x [n, dim] itself, or its top-K sparsified and fake-quantised copy (in aqBuf) when `a`
    /// is set.
    const float* quantIn(const ActQuantSpec* a, const float* x, int64_t n, int64_t dim);
    /// x itself, or its top-K sparsified copy (in aqBuf) when `a` sparsifies: the input of a
    /// packed product, which quantises in the product.
    const float* sparseIn(const ActQuantSpec* a, const float* x, int64_t n, int64_t dim);
    /// One output of a linearGroup() call.
    struct Out {
        float* y;
        int64_t ldy;
        const float* bias;
    };
    /// Linears sharing the input x [n, dim] (q/k/v, gate/up), x before input quantisation
    /// aq[i]: the packed weights in one batch (each quantises its input in its product), the
    /// stored ones in one batch when their input quantisation is the same (else one product per
    /// weight on its own fake-quantised input), low-rank ones one by one.
    void linearGroup(const Weight* ws, const Out* outs, const ActQuantSpec* const* aq,
                     const LowRank* lr, int count, const float* x, int64_t dim, int64_t n);
    /// y = W x (+ bias), W whole (w) or as low-rank factors (lr); x [n, ldx] is the input before
    /// its quantisation `a` (a packed weight applies it in the product, a stored one multiplies
    /// a fake-quantised copy).
    void applyLinear(const Weight& w, const LowRank& lr, const ActQuantSpec* a, const float* x,
                     int64_t ldx, int64_t n, float* y, int64_t ldy, const float* bias);
    void bindShapes(Layer& L, int64_t l);
    void bindRotations();
    Weight bindLinear(Layer& L, int i, int64_t rows, int64_t cols);

    // The resident forward (Backend::transformerForward): the model as a plan, built once; why
    // the runner cannot describe it (empty: it can); whether the current sequence runs on the
    // device (chosen at pos0 == 0 for the whole sequence).
    TransformerPlan plan;
    std::string planWhy;
    bool residentSeq = false;
    bool residentNoted = false;
    void buildPlan();
    void bindLayer(int64_t l);
    void allocateScratch();
    /// Whether this call runs resident; a sequence that started on the device and must
    /// continue on the host (an observer was added) gets the device's cache rows first.
    bool chooseResident(int64_t pos0);
    /// Backend::transformerForward (targets/logProbs: scoring, else null).
    void runResident(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                     float* logitsOut, const int32_t* targets, float* logProbs);
    /// The forward on the host (the backend runs the products and attention).
    void runHost(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom, float* logitsOut);
};

void TransformerRunner::bind() {
    act = kernels::activationFromName(s.hiddenAct);
    if (s.dim <= 0 || s.nLayers <= 0 || s.nHeads <= 0 || s.nKvHeads <= 0 || s.headDim <= 0 ||
        s.hidden <= 0 || s.vocab <= 0)
        throw ArgumentError("model spec has non-positive dimensions");
    if (s.nHeads % s.nKvHeads != 0)
        throw ArgumentError("num_attention_heads (" + std::to_string(s.nHeads) +
                            ") is not a multiple of num_key_value_heads (" +
                            std::to_string(s.nKvHeads) + ")");
    qDim = s.nHeads * s.headDim;
    kvDim = s.nKvHeads * s.headDim;
    ed = s.embeddingDim();
    const int64_t dim = s.dim;

    embed = requireWeight(w, "embed", s.vocab, ed);
    if (Weight head = findWeight(w, "lm_head"))
        lmHead = checkWeight(head, "lm_head", s.vocab, ed);
    else
        lmHead = checkWeight(embed, "embed (tied lm_head)", s.vocab, ed);
    if (s.finalNorm) finalNorm = bindNorm(w, s, "final_norm", dim);
    if (s.embedNorm) embedNorm = bindNorm(w, s, "embed_norm", dim);
    if (s.posEmbed == PosEmbedding::Learned)
        posEmbed = &requireTensor(w, "pos_embed", {s.maxSeq + s.posOffset, dim});
    if (ed != dim) {
        projIn = requireWeight(w, "embed_proj_in", dim, ed);
        projOut = requireWeight(w, "embed_proj_out", ed, dim);
    }
    if (s.posEmbed == PosEmbedding::Alibi) alibi = kernels::alibiSlopes(s.nHeads);

    layers.resize(size_t(s.nLayers));
    for (int64_t l = 0; l < s.nLayers; ++l) bindLayer(l);
    if (s.isMoe()) counts.assign(size_t(s.nLayers), std::vector<int64_t>(size_t(s.nExperts), 0));

    if (s.posEmbed == PosEmbedding::Rope)
        rope = kernels::ropeFrequencies(s.rope, s.headDim, s.maxSeq, env.ctx);
    kCache.resize(size_t(s.nLayers));
    vCache.resize(size_t(s.nLayers));
    kHalf.resize(size_t(s.nLayers));
    vHalf.resize(size_t(s.nLayers));
    kStream.resize(size_t(s.nLayers));
    vStream.resize(size_t(s.nLayers));
    for (int64_t l = 0; l < s.nLayers; ++l)
        if (const KvQuantSpec* kq = layers[size_t(l)].kvq) {
            kStream[size_t(l)].init(kq->kBits, kq->kGranularity, kq->groupSize,
                                    layers[size_t(l)].kvd);
            vStream[size_t(l)].init(kq->vBits, kq->vGranularity, kq->groupSize,
                                    layers[size_t(l)].kvd);
            kStream[size_t(l)].setSmoothing(kq->kShift, kq->kScale);
            vStream[size_t(l)].setSmoothing(kq->vShift, kq->vScale);
            if (kq->pastOnly &&
                (kStream[size_t(l)].channelBlocks() || vStream[size_t(l)].channelBlocks()))
                throw UnsupportedError("KV cache of block " + std::to_string(l) +
                                       ": past-only quantisation needs token granularity");
        }
    polCache.resize(size_t(s.nLayers));
    for (int64_t l = 0; l < s.nLayers; ++l)
        if (const Layer& L = layers[size_t(l)]; L.kvPol)
            polCache[size_t(l)].init(*L.kvPol, L.kvq, L.kvHeads, s.headDim, env.ctx);
    if (const RuntimeQuant* rq = w.runtimeQuant()) lmAq = rq->activation("lm_head");
    bindRotations();
    allocateScratch();
    buildPlan();
}

// Block l's norms, linears (packed or stored), q/k norms, biases, experts, the recipe's
// activation and KV quantisation, and its attention scale.
void TransformerRunner::bindLayer(int64_t l) {
    const int64_t dim = s.dim;
    const bool sharedNorm = s.residual == ResidualStyle::Parallel && s.sharedParallelNorm;
    Layer& L = layers[size_t(l)];
    const std::string p = "layers." + std::to_string(l) + ".";
    L.name[0] = p + "attn.q", L.name[1] = p + "attn.k", L.name[2] = p + "attn.v";
    L.name[3] = p + "attn.o", L.name[4] = p + "mlp.gate", L.name[5] = p + "mlp.up";
    L.name[6] = p + "mlp.down", L.name[7] = p + "mlp.router";
    L.attnNorm = bindNorm(w, s, p + "attn_norm", dim);
    if (!sharedNorm) L.mlpNorm = bindNorm(w, s, p + "mlp_norm", dim);
    if (s.postNorms) {
        L.attnPostNorm = bindNorm(w, s, p + "attn_post_norm", dim);
        L.mlpPostNorm = bindNorm(w, s, p + "mlp_post_norm", dim);
    }
    bindShapes(L, l);
    L.q = bindLinear(L, 0, L.qd, dim);
    L.k = bindLinear(L, 1, L.kvd, dim);
    L.v = bindLinear(L, 2, L.kvd, dim);
    L.o = bindLinear(L, 3, dim, L.qd);
    if (s.qkNorm && s.qkNormPerHead) {
        for (int64_t hh = 0; hh < s.nHeads; ++hh) {
            auto v =
                toFloat(requireTensor(w, p + "attn.q_norm." + std::to_string(hh), {s.headDim}));
            L.qNorm.insert(L.qNorm.end(), v.begin(), v.end());
        }
        for (int64_t hh = 0; hh < s.nKvHeads; ++hh) {
            auto v =
                toFloat(requireTensor(w, p + "attn.k_norm." + std::to_string(hh), {s.headDim}));
            L.kNorm.insert(L.kNorm.end(), v.begin(), v.end());
        }
    } else if (s.qkNorm) {
        L.qNorm = toFloat(requireTensor(w, p + "attn.q_norm", {s.headDim}));
        L.kNorm = toFloat(requireTensor(w, p + "attn.k_norm", {s.headDim}));
    }
    // Biases are used whenever present (the spec flags only say which to expect).
    L.bq = optionalVector(w, L.name[0] + ".bias", L.qd);
    L.bk = optionalVector(w, L.name[1] + ".bias", L.kvd);
    L.bv = optionalVector(w, L.name[2] + ".bias", L.kvd);
    L.bo = optionalVector(w, L.name[3] + ".bias", dim);
    if (s.attnBias && (L.bq.empty() || L.bk.empty() || L.bv.empty()))
        throw Error("model spec says q/k/v have biases but layer " + std::to_string(l) +
                    " lacks them");
    if (s.isMoe()) {
        L.router = requireWeight(w, L.name[7], s.nExperts, dim);
        L.experts.resize(size_t(s.nExperts));
        for (int64_t e = 0; e < s.nExperts; ++e) {
            Expert& E = L.experts[size_t(e)];
            const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
            E.name[0] = x + "gate", E.name[1] = x + "up", E.name[2] = x + "down";
            E.gate = requireWeight(w, E.name[0], s.hidden, dim);
            E.up = requireWeight(w, E.name[1], s.hidden, dim);
            E.down = requireWeight(w, E.name[2], dim, s.hidden);
        }
    } else {
        if (s.gatedMlp) L.gate = bindLinear(L, 4, L.hidden, dim);
        L.up = bindLinear(L, 5, L.hidden, dim);
        L.down = bindLinear(L, 6, dim, L.hidden);
        if (s.gatedMlp) L.bGate = optionalVector(w, L.name[4] + ".bias", L.hidden);
        L.bUp = optionalVector(w, L.name[5] + ".bias", L.hidden);
        L.bDown = optionalVector(w, L.name[6] + ".bias", dim);
    }
    if (const RuntimeQuant* rq = w.runtimeQuant()) {
        for (int i = 0; i < 8; ++i) L.aq[i] = rq->activation(L.name[i]);
        for (Expert& E : L.experts)
            for (int i = 0; i < 3; ++i) E.aq[i] = rq->activation(E.name[i]);
        L.kvq = rq->kvFor(l);
        L.kvPol = rq->kvPolicyFor(l);
    }
    L.sliding = s.layerIsSliding(l);
    L.scale = s.attnScale > 0 ? s.attnScale : float(1.0 / std::sqrt(double(s.headDim)));
    if (s.scaleByInverseLayer) L.scale /= float(l + 1);
}

// The scratch of one batch (env.batch tokens).
void TransformerRunner::allocateScratch() {
    const int64_t dim = s.dim;
    const size_t B = size_t(env.batch);
    h.resize(B * size_t(dim));
    xn.resize(B * size_t(dim));
    tmp.resize(B * size_t(dim));
    if (s.residual == ResidualStyle::Parallel) tmp2.resize(B * size_t(dim));
    q.resize(B * size_t(qDim));
    att.resize(B * size_t(qDim));
    k.resize(B * size_t(kvDim));
    kPre.resize(B * size_t(kvDim));
    v.resize(B * size_t(kvDim));
    gate.resize(B * size_t(s.hidden));
    up.resize(B * size_t(s.hidden));
    if (ed != dim || s.isMoe()) {
        xe.resize(B * size_t(std::max(dim, ed)));
        ye.resize(B * size_t(dim));
    }
    if (s.isMoe()) {
        routerLogits.resize(B * size_t(s.nExperts));
        expTok.resize(size_t(s.nExperts));
        expW.resize(size_t(s.nExperts));
    }
    cosT.resize(B * size_t(rope.rotDim / 2));
    sinT.resize(B * size_t(rope.rotDim / 2));
}

void TransformerRunner::buildPlan() {
    auto why = [&]() -> std::string {
        if (s.isMoe()) return "mixture-of-experts MLPs run per product";
        if (ed != s.dim) return "embedding projections (word_embed_proj_dim) run per product";
        if (lmAq) return "lm_head has input quantisation";
        if (rot.active()) return "online Hadamard rotations run on the host";
        for (int64_t l = 0; l < s.nLayers; ++l) {
            const Layer& L = layers[size_t(l)];
            if (L.kvPol) return "a KV eviction policy runs on the host";
            if (L.kvq) return "a quantised KV cache runs on the host";
            for (int i = 0; i < 7; ++i)
                if (L.lr[i].rank > 0) return "low-rank linears run per product";
            for (int i = 0; i < 7; ++i)
                if (L.aq[i] && L.aq[i]->active())
                    return "activation quantisation (" + L.name[i] + ") runs per product";
            for (int i = 0; i < 7; ++i)
                if (L.aq[i] && L.aq[i]->sparse())
                    return "activation top-K sparsity (" + L.name[i] + ") runs on the host path";
        }
        return {};
    }();
    planWhy = why;
    if (!planWhy.empty()) return;
    auto lin = [](const Weight& W, const std::vector<float>& bias) {
        PlanLinear p;
        p.t = W.t;
        p.p = W.p;
        p.bias = bias.empty() ? nullptr : &bias;
        if (W) p.rows = W.rows(), p.cols = W.cols();
        return p;
    };
    static const std::vector<float> kNoBias;
    plan.dim = s.dim;
    plan.headDim = s.headDim;
    plan.vocab = s.vocab;
    plan.ctx = env.ctx;
    plan.batch = env.batch;
    plan.residual = s.residual;
    plan.residualFromNorm = s.residualFromNorm;
    plan.normEps = s.normEps;
    plan.act = act;
    plan.rotDim = s.posEmbed == PosEmbedding::Rope ? rope.rotDim : 0;
    plan.interleaved = s.rope.interleaved;
    plan.alibi = alibi.empty() ? nullptr : &alibi;
    plan.alibiBeforeScale = s.alibiScaled;
    plan.attnSoftcap = s.attnSoftcap;
    plan.finalSoftcap = s.finalSoftcap;
    plan.finalNorm = finalNorm.present() ? &finalNorm : nullptr;
    plan.lmHead = lin(lmHead, kNoBias);
    plan.layers.resize(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
        const Layer& L = layers[l];
        PlanLayer& P = plan.layers[l];
        P.attnNorm = &L.attnNorm;
        P.mlpNorm = L.mlpNorm.present() ? &L.mlpNorm : nullptr;
        if (s.postNorms) P.attnPostNorm = &L.attnPostNorm, P.mlpPostNorm = &L.mlpPostNorm;
        P.q = lin(L.q, L.bq), P.k = lin(L.k, L.bk), P.v = lin(L.v, L.bv), P.o = lin(L.o, L.bo);
        if (s.gatedMlp) P.gate = lin(L.gate, L.bGate);
        P.up = lin(L.up, L.bUp), P.down = lin(L.down, L.bDown);
        if (s.qkNorm) {
            P.qNorm = &L.qNorm, P.kNorm = &L.kNorm;
            P.qkNormLayer = s.qkNormPerHead;
        }
        P.heads = L.heads, P.kvHeads = L.kvHeads, P.qd = L.qd, P.kvd = L.kvd;
        P.hidden = L.hidden;
        P.scale = L.scale;
        P.window = L.sliding ? s.slidingWindow : 0;
    }
}

bool TransformerRunner::chooseResident(int64_t pos0) {
    std::string why;
    if (observed())
        why = "observers (calibration, statistics) read the activations on the host";
    else if (env.stopAfterLayer >= 0)
        why = "the forward stops after a layer";
    if (pos0 == 0) {
        residentSeq = false;
        if (why.empty()) why = planWhy;
        if (why.empty()) why = env.backend->transformerSupport(plan);
        if (why.empty()) {
            residentSeq = true;
            return true;
        }
        if (!residentNoted) env.backend->noteResident(why);
        residentNoted = true;
        return false;
    }
    if (!residentSeq) return false; // the sequence started on the host: it stays there
    if (why.empty()) return true;
    // The sequence continues on the host: its KV cache comes back from the device.
    ensureCache(pos0);
    for (int64_t l = 0; l < s.nLayers; ++l)
        env.backend->transformerReadCache(plan, int(l), pos0, kCache[size_t(l)].data(),
                                          vCache[size_t(l)].data());
    residentSeq = false;
    return false;
}

void TransformerRunner::runResident(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                                    float* logitsOut, const int32_t* targets, float* logProbs) {
    checkCancel();
    env.layer = -1;
    embedTokens(ids, n, pos0); // on the host: token rows, scale, learned positions, norm
    const float *c = nullptr, *sn = nullptr;
    if (s.posEmbed == PosEmbedding::Rope) {
        const kernels::RopeFreqs* rf = &rope;
        kernels::RopeFreqs dyn;
        if (s.rope.type == RopeType::Dynamic) {
            dyn = kernels::ropeFrequencies(s.rope, s.headDim, s.maxSeq, pos0 + n);
            rf = &dyn;
        }
        kernels::ropeTables(*rf, pos0, n, cosT.data(), sinT.data());
        c = cosT.data(), sn = sinT.data();
    }
    env.backend->transformerForward(plan, h.data(), c, sn, n, pos0, logitsFrom, logitsOut, targets,
                                    logProbs);
}

void TransformerRunner::ensureCache(int64_t rows) {
    if (rows <= cacheRows) return;
    int64_t n = std::max<int64_t>({rows, 2 * cacheRows, 256});
    n = std::min(n, env.ctx);
    for (int64_t l = 0; l < s.nLayers; ++l) {
        if (layers[size_t(l)].kvq || layers[size_t(l)].kvPol) continue; // grow as rows arrive
        if (env.kvF16) {
            kHalf[size_t(l)].resize(size_t(n * kvDim));
            vHalf[size_t(l)].resize(size_t(n * kvDim));
        } else {
            kCache[size_t(l)].resize(size_t(n * kvDim));
            vCache[size_t(l)].resize(size_t(n * kvDim));
        }
    }
    cacheRows = n;
}

void TransformerRunner::embedTokens(const int32_t* ids, int64_t n, int64_t pos0) {
    const int64_t dim = s.dim;
    if (projIn) {
        // OPT with word_embed_proj_dim != hidden_size: embeddings live in the smaller space.
        for (int64_t t = 0; t < n; ++t) embed.rowsF32(ids[t], 1, xe.data() + t * ed);
        if (observed())
            env.notifyLinear(-1, LinearRole::EmbedProjIn, "embed_proj_in", xe.data(), n, ed);
        applyLinear(projIn, {}, nullptr, xe.data(), ed, n, h.data(), dim, nullptr);
    } else {
        for (int64_t t = 0; t < n; ++t) embed.rowsF32(ids[t], 1, h.data() + t * dim);
    }
    if (s.embedScale != 1.0f)
        for (int64_t i = 0; i < n * dim; ++i) h[size_t(i)] *= s.embedScale;
    if (posEmbed) {
        for (int64_t t = 0; t < n; ++t) {
            kernels::dequantizeRows(*posEmbed, pos0 + t + s.posOffset, 1, tmp.data());
            float* hr = h.data() + t * dim;
            for (int64_t i = 0; i < dim; ++i) hr[i] += tmp[size_t(i)];
        }
    }
    if (embedNorm.present()) embedNorm.apply(h.data(), h.data(), n, dim, dim);
}

void TransformerRunner::attention(int64_t l, const float* x, int64_t n, int64_t pos0,
                                  const kernels::RopeFreqs* rf, float* out) {
    const int li = int(l);
    const int64_t dim = s.dim, hd = s.headDim;
    const int nt = env.threads;
    Layer& L = layers[size_t(l)];
    const int64_t qd = L.qd, kvd = L.kvd, nh = L.heads, nkv = L.kvHeads;
    if (observed()) {
        env.notifyLinear(li, LinearRole::Q, L.name[0], x, n, dim);
        env.notifyLinear(li, LinearRole::K, L.name[1], x, n, dim);
        env.notifyLinear(li, LinearRole::V, L.name[2], x, n, dim);
    }
    const Out qkv[3] = {{q.data(), qd, ptrOrNull(L.bq)},
                        {k.data(), kvd, ptrOrNull(L.bk)},
                        {v.data(), kvd, ptrOrNull(L.bv)}};
    const Weight wqkv[3] = {L.q, L.k, L.v};
    linearGroup(wqkv, qkv, L.aq, L.lr, 3, x, dim, n);
    if (s.qkNorm && s.qkNormPerHead) {
        // StableLM: a LayerNorm (no bias) per head with its own weights
        for (int64_t hh = 0; hh < nh; ++hh)
            kernels::layerNorm(q.data() + hh * hd, L.qNorm.data() + hh * hd, nullptr,
                               q.data() + hh * hd, n, hd, qd, s.normEps);
        for (int64_t hh = 0; hh < nkv; ++hh)
            kernels::layerNorm(k.data() + hh * hd, L.kNorm.data() + hh * hd, nullptr,
                               k.data() + hh * hd, n, hd, kvd, s.normEps);
    } else if (s.qkNorm) {
        kernels::rmsNorm(q.data(), L.qNorm.data(), q.data(), n * nh, hd, hd, s.normEps);
        kernels::rmsNorm(k.data(), L.kNorm.data(), k.data(), n * nkv, hd, hd, s.normEps);
    }
    if (rf) {
        if (observed()) std::copy(k.begin(), k.begin() + n * kvd, kPre.begin());
        kernels::applyRope(q.data(), n, qd, nh, hd, rf->rotDim, s.rope.interleaved, cosT.data(),
                           sinT.data());
        kernels::applyRope(k.data(), n, kvd, nkv, hd, rf->rotDim, s.rope.interleaved, cosT.data(),
                           sinT.data());
    }
    if (rot.qk()) { // a rotated model: every head of q and k by the same orthogonal transform
        rot.rotateHeads(q.data(), n, nh, qd, nt);
        rot.rotateHeads(k.data(), n, nkv, kvd, nt);
    }
    if (observed()) {
        const float* kp = rf ? kPre.data() : k.data();
        for (Observer* o : env.observers) o->onKV(li, kp, k.data(), v.data(), n, nkv, hd, pos0);
    }
    kernels::AttentionOptions ao;
    ao.window = L.sliding ? s.slidingWindow : 0;
    ao.scale = L.scale;
    ao.softcap = s.attnSoftcap;
    ao.alibi = alibi.empty() ? nullptr : alibi.data();
    ao.alibiBeforeScale = s.alibiScaled;
    if (L.kvPol) {
        polCache[size_t(l)].attend(q.data(), qd, k.data(), v.data(), kvd, att.data(), qd, n, pos0,
                                   nh, ao, nt);
    } else if (L.kvq) {
        quantisedAttention(l, n, pos0, ao);
    } else if (env.kvF16) {
        uint16_t *kc = kHalf[size_t(l)].data(), *vc = vHalf[size_t(l)].data();
        kernels::convertToF16Saturated(k.data(), kc + pos0 * kvd, n * kvd);
        kernels::convertToF16Saturated(v.data(), vc + pos0 * kvd, n * kvd);
        kernels::attentionExF16(q.data(), qd, kc, vc, att.data(), qd, n, pos0, nh, nkv, hd, ao, nt);
    } else {
        std::copy(k.begin(), k.begin() + n * kvd, kCache[size_t(l)].begin() + pos0 * kvd);
        std::copy(v.begin(), v.begin() + n * kvd, vCache[size_t(l)].begin() + pos0 * kvd);
        env.backend->attention(li, q.data(), qd, kCache[size_t(l)].data(), vCache[size_t(l)].data(),
                               att.data(), qd, n, pos0, nh, nkv, hd, ao, nt);
    }
    if (observed()) env.notifyLinear(li, LinearRole::O, L.name[3], att.data(), n, qd);
    applyLinear(L.o, L.lr[3], L.aq[3], att.data(), qd, n, out, dim, ptrOrNull(L.bo));
}

void TransformerRunner::mlp(int64_t l, const float* x, int64_t n, float* out) {
    if (s.isMoe()) return moe(l, x, n, out);
    const int li = int(l);
    Layer& L = layers[size_t(l)];
    const int64_t dim = s.dim, hid = L.hidden, nh = n * hid;
    const int nt = env.threads;
    if (s.gatedMlp) {
        if (observed()) {
            env.notifyLinear(li, LinearRole::Gate, L.name[4], x, n, dim);
            env.notifyLinear(li, LinearRole::Up, L.name[5], x, n, dim);
        }
        const Out gateUp[2] = {{gate.data(), hid, ptrOrNull(L.bGate)},
                               {up.data(), hid, ptrOrNull(L.bUp)}};
        const Weight wgu[2] = {L.gate, L.up};
        linearGroup(wgu, gateUp, L.aq + 4, L.lr + 4, 2, x, dim, n);
        kernels::activateGated(act, gate.data(), up.data(), nh, nt);
    } else {
        // fc1 → act → fc2 (OPT, GPT-2, NeoX, Falcon, Bloom)
        if (observed()) env.notifyLinear(li, LinearRole::Up, L.name[5], x, n, dim);
        applyLinear(L.up, L.lr[5], L.aq[5], x, dim, n, gate.data(), hid, ptrOrNull(L.bUp));
        kernels::activate(act, gate.data(), nh, nt);
    }
    if (rot.down()) rot.rotateDown(gate.data(), n, hid, hid, nt); // mlp.down stores W·Tᵀ
    if (observed()) env.notifyLinear(li, LinearRole::Down, L.name[6], gate.data(), n, hid);
    applyLinear(L.down, L.lr[6], L.aq[6], gate.data(), hid, n, out, dim, ptrOrNull(L.bDown));
}

// Sparse mixture of experts (Mixtral): softmax over the router logits, the top-k experts per
// token, their probabilities renormalised to sum to one; every expert runs a SwiGLU MLP on the
// tokens routed to it.
void TransformerRunner::moe(int64_t l, const float* x, int64_t n, float* out) {
    const int li = int(l);
    const int64_t dim = s.dim, E = s.nExperts, K = s.nExpertsPerTok;
    const int nt = env.threads;
    Layer& L = layers[size_t(l)];
    if (observed()) env.notifyLinear(li, LinearRole::Router, L.name[7], x, n, dim);
    applyLinear(L.router, {}, L.aq[7], x, dim, n, routerLogits.data(), E, nullptr);
    for (auto& t : expTok) t.clear();
    for (auto& t : expW) t.clear();
    routeIds.resize(size_t(n * K));
    routeW.resize(size_t(n * K));
    std::vector<float> prob(static_cast<size_t>(E));
    std::vector<int32_t> order(static_cast<size_t>(E));
    for (int64_t t = 0; t < n; ++t) {
        const float* lg = routerLogits.data() + t * E;
        float mx = lg[0];
        for (int64_t e = 1; e < E; ++e) mx = std::max(mx, lg[e]);
        float sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += (prob[size_t(e)] = std::exp(lg[e] - mx));
        for (auto& p : prob) p /= sum;
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int32_t a, int32_t b) {
            return prob[size_t(a)] > prob[size_t(b)] ||
                   (prob[size_t(a)] == prob[size_t(b)] && a < b);
        });
        float top = 0;
        for (int64_t j = 0; j < K; ++j) top += prob[size_t(order[size_t(j)])];
        for (int64_t j = 0; j < K; ++j) {
            const int32_t e = order[size_t(j)];
            const float wgt = s.normTopkProb ? prob[size_t(e)] / top : prob[size_t(e)];
            routeIds[size_t(t * K + j)] = e;
            routeW[size_t(t * K + j)] = wgt;
            expTok[size_t(e)].push_back(int32_t(t));
            expW[size_t(e)].push_back(wgt);
            ++counts[size_t(l)][size_t(e)];
        }
    }
    if (observed())
        for (Observer* o : env.observers)
            o->onExpertRouting(li, routeIds.data(), routeW.data(), n, K);
    std::fill(out, out + n * dim, 0.0f);
    for (int64_t e = 0; e < E; ++e) {
        const auto& toks = expTok[size_t(e)];
        const int64_t m = int64_t(toks.size());
        if (m == 0) continue;
        const Expert& X = L.experts[size_t(e)];
        for (int64_t i = 0; i < m; ++i)
            std::copy(x + toks[size_t(i)] * dim, x + (toks[size_t(i)] + 1) * dim,
                      xe.data() + i * dim);
        if (observed()) {
            env.notifyLinear(li, LinearRole::Gate, X.name[0], xe.data(), m, dim);
            env.notifyLinear(li, LinearRole::Up, X.name[1], xe.data(), m, dim);
        }
        const Out gateUp[2] = {{gate.data(), s.hidden, nullptr}, {up.data(), s.hidden, nullptr}};
        const Weight wgu[2] = {X.gate, X.up};
        linearGroup(wgu, gateUp, X.aq, nullptr, 2, xe.data(), dim, m);
        kernels::activateGated(act, gate.data(), up.data(), m * s.hidden, nt);
        if (observed()) env.notifyLinear(li, LinearRole::Down, X.name[2], gate.data(), m, s.hidden);
        applyLinear(X.down, {}, X.aq[2], gate.data(), s.hidden, m, ye.data(), dim, nullptr);
        for (int64_t i = 0; i < m; ++i) {
            float* o = out + toks[size_t(i)] * dim;
            const float* y = ye.data() + i * dim;
            const float wgt = expW[size_t(e)][size_t(i)];
            for (int64_t d = 0; d < dim; ++d) o[d] += wgt * y[d];
        }
    }
}

void TransformerRunner::run(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                            float* logitsOut) {
    if (chooseResident(pos0))
        return runResident(ids, n, pos0, logitsFrom, logitsOut, nullptr, nullptr);
    runHost(ids, n, pos0, logitsFrom, logitsOut);
}

bool TransformerRunner::runScored(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                                  float* logitsOut, const int32_t* targets, float* logProbs) {
    if (!chooseResident(pos0)) {
        runHost(ids, n, pos0, logitsFrom, logitsOut);
        return true;
    }
    runResident(ids, n, pos0, logitsFrom, logitsOut, targets, logProbs);
    return false;
}

void TransformerRunner::runHost(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                                float* logitsOut) {
    const int64_t dim = s.dim;
    env.layer = -1;
    ensureCache(pos0 + n);
    embedTokens(ids, n, pos0);

    // RoPE tables for this batch's positions, shared by all layers.
    const kernels::RopeFreqs* rf = nullptr;
    kernels::RopeFreqs dyn;
    if (s.posEmbed == PosEmbedding::Rope) {
        rf = &rope;
        if (s.rope.type == RopeType::Dynamic) {
            dyn = kernels::ropeFrequencies(s.rope, s.headDim, s.maxSeq, pos0 + n);
            rf = &dyn;
        }
        kernels::ropeTables(*rf, pos0, n, cosT.data(), sinT.data());
    }
    auto addInto = [n, dim](float* dst, const float* a) {
        for (int64_t i = 0; i < n * dim; ++i) dst[i] += a[i];
    };

    for (int64_t l = 0; l < s.nLayers; ++l) {
        if (!env.enterBlock(l, h.data(), n)) return;
        Layer& L = layers[size_t(l)];
        switch (s.residual) {
        case ResidualStyle::PreNorm: {
            L.attnNorm.apply(h.data(), xn.data(), n, dim, dim);
            attention(l, xn.data(), n, pos0, rf, tmp.data());
            if (s.postNorms) L.attnPostNorm.apply(tmp.data(), tmp.data(), n, dim, dim);
            if (s.residualFromNorm) std::copy(xn.begin(), xn.begin() + n * dim, h.begin());
            addInto(h.data(), tmp.data());
            L.mlpNorm.apply(h.data(), xn.data(), n, dim, dim);
            mlp(l, xn.data(), n, tmp.data());
            if (s.postNorms) L.mlpPostNorm.apply(tmp.data(), tmp.data(), n, dim, dim);
            if (s.residualFromNorm) std::copy(xn.begin(), xn.begin() + n * dim, h.begin());
            addInto(h.data(), tmp.data());
            break;
        }
        case ResidualStyle::PostNorm: {
            attention(l, h.data(), n, pos0, rf, tmp.data());
            addInto(h.data(), tmp.data());
            L.attnNorm.apply(h.data(), h.data(), n, dim, dim);
            mlp(l, h.data(), n, tmp.data());
            addInto(h.data(), tmp.data());
            L.mlpNorm.apply(h.data(), h.data(), n, dim, dim);
            break;
        }
        case ResidualStyle::Parallel: {
            L.attnNorm.apply(h.data(), xn.data(), n, dim, dim);
            attention(l, xn.data(), n, pos0, rf, tmp.data());
            if (L.mlpNorm.present()) L.mlpNorm.apply(h.data(), xn.data(), n, dim, dim);
            mlp(l, xn.data(), n, tmp2.data());
            for (int64_t i = 0; i < n * dim; ++i) h[size_t(i)] += tmp[size_t(i)] + tmp2[size_t(i)];
            break;
        }
        }
        if (observed())
            for (Observer* o : env.observers) o->onResidual(int(l), h.data(), n, dim);
    }

    if (logitsFrom >= n || env.stopAfterLayer >= 0) return;
    env.layer = int(s.nLayers);
    const int64_t nOut = n - logitsFrom;
    float* xo = xn.data() + logitsFrom * dim;
    if (finalNorm.present())
        finalNorm.apply(h.data() + logitsFrom * dim, xo, nOut, dim, dim);
    else
        std::copy(h.begin() + logitsFrom * dim, h.begin() + n * dim, xo);
    const float* xl = xo;
    if (projOut) {
        if (observed())
            env.notifyLinear(int(s.nLayers), LinearRole::EmbedProjOut, "embed_proj_out", xo, nOut,
                             dim);
        applyLinear(projOut, {}, nullptr, xo, dim, nOut, xe.data(), ed, nullptr);
        xl = xe.data();
    }
    if (observed()) env.notifyLinear(int(s.nLayers), LinearRole::LmHead, "lm_head", xl, nOut, ed);
    applyLinear(lmHead, {}, lmAq, xl, ed, nOut, logitsOut, s.vocab, nullptr);
    if (s.finalSoftcap > 0) {
        const float cap = s.finalSoftcap;
        for (int64_t i = 0; i < nOut * s.vocab; ++i)
            logitsOut[i] = cap * std::tanh(logitsOut[i] / cap);
    }
}

// Quantised KV cache: the new rows are quantised once as they enter the cache (a failed or
// repeated call first drops the rows from pos0 on); attention reads dequantised rows. With
// channel blocks, a query sees the cache as it was when its own token was appended, exactly as
// in token-by-token decoding: the block its token falls in is still f32 unless the token
// completes it. A multi-token batch therefore runs attention in segments at block boundaries.
void TransformerRunner::quantisedAttention(int64_t l, int64_t n, int64_t pos0,
                                           const kernels::AttentionOptions& ao) {
    const int nt = env.threads;
    const Layer& L = layers[size_t(l)];
    const int64_t hd = s.headDim, W = L.kvd, qd = L.qd;
    runtime::KvStream &ks = kStream[size_t(l)], &vs = vStream[size_t(l)];
    ks.truncate(pos0);
    vs.truncate(pos0);
    if (ks.rows() != pos0 || vs.rows() != pos0)
        throw Error("KV cache of layer " + std::to_string(l) + " holds " +
                    std::to_string(ks.rows()) + " rows, position " + std::to_string(pos0));
    const bool kCh = ks.channelBlocks(), vCh = vs.channelBlocks();
    const int64_t G = L.kvq->groupSize;
    // f32 rows of the unfinished block before pos0 (they are f32 in the streams until it fills)
    const int64_t first = (kCh || vCh) ? pos0 / G * G : pos0;
    if (first < pos0) {
        const float* kr = ks.read(pos0, kDeq, nt);
        kOld.assign(kr + first * W, kr + pos0 * W);
        const float* vr = vs.read(pos0, vDeq, nt);
        vOld.assign(vr + first * W, vr + pos0 * W);
    }
    ks.append(k.data(), W, n);
    vs.append(v.data(), W, n);
    const float* kc = ks.read(pos0 + n, kDeq, nt);
    const float* vc = vs.read(pos0 + n, vDeq, nt);
    auto attend = [&](int64_t p0, int64_t p1) { // queries at positions [p0, p1)
        if (p1 <= p0) return;
        kernels::attentionEx(q.data() + (p0 - pos0) * qd, qd, kc, vc, att.data() + (p0 - pos0) * qd,
                             qd, p1 - p0, p0, L.heads, L.kvHeads, hd, ao, nt);
    };
    if (L.kvq->pastOnly && (ks.quantized() || vs.quantized())) {
        // WKVQuant's past-only quantisation (token granularity, checked at init). An f32 half
        // is copied into its scratch, which the attention edits row by row.
        auto writable = [&](const float* c, kernels::FloatBuffer& buf) {
            if (c == buf.data()) return buf.data();
            buf.resize(size_t((pos0 + n) * W));
            std::copy(c, c + (pos0 + n) * W, buf.begin());
            return buf.data();
        };
        float* kw = writable(kc, kDeq);
        float* vw = writable(vc, vDeq);
        runtime::pastOnlyAttention(q.data(), qd, kw, vw, k.data(), v.data(), att.data(), qd, n,
                                   pos0, L.heads, L.kvHeads, hd, ao, nt);
        return;
    }
    if (!kCh && !vCh) return attend(pos0, pos0 + n);
    // kc/vc of channel streams point into kDeq/vDeq (writable scratch).
    float* kw = kCh ? kDeq.data() : nullptr;
    float* vw = vCh ? vDeq.data() : nullptr;
    auto f32Row = [&](const kernels::FloatBuffer& cur, const std::vector<float>& old, int64_t r) {
        return r < pos0 ? old.data() + (r - first) * W : cur.data() + (r - pos0) * W;
    };
    for (int64_t p = pos0; p < pos0 + n;) {
        const int64_t b0 = p / G * G, last = b0 + G - 1;
        const int64_t fEnd = std::min(pos0 + n, last); // queries [p, fEnd) see block f32
        const bool complete = last < pos0 + n;         // the block is quantised now
        if (fEnd > p && complete) {
            // show the block's rows [b0, fEnd) as f32, then put the quantised rows back
            saved.assign(size_t(2 * (fEnd - b0) * W), 0.0f);
            for (int64_t r = b0; r < fEnd; ++r) {
                if (kw) {
                    std::copy(kw + r * W, kw + (r + 1) * W, saved.begin() + (r - b0) * W);
                    const float* src = f32Row(k, kOld, r);
                    std::copy(src, src + W, kw + r * W);
                }
                if (vw) {
                    std::copy(vw + r * W, vw + (r + 1) * W,
                              saved.begin() + (fEnd - b0 + r - b0) * W);
                    const float* src = f32Row(v, vOld, r);
                    std::copy(src, src + W, vw + r * W);
                }
            }
            attend(p, fEnd);
            for (int64_t r = b0; r < fEnd; ++r) {
                if (kw)
                    std::copy(saved.begin() + (r - b0) * W, saved.begin() + (r - b0 + 1) * W,
                              kw + r * W);
                if (vw)
                    std::copy(saved.begin() + (fEnd - b0 + r - b0) * W,
                              saved.begin() + (fEnd - b0 + r - b0 + 1) * W, vw + r * W);
            }
        } else {
            attend(p, fEnd); // the block is still f32 in the streams
        }
        if (complete) attend(std::max(p, last), last + 1);
        p = last + 1;
    }
}

const float* TransformerRunner::quantIn(const ActQuantSpec* a, const float* x, int64_t n,
                                        int64_t dim) {
    if (!a) return x;
    const float* src = sparseIn(a, x, n, dim); // top-K first (Q-Sparse), then quantisation
    if (aqBuf.size() < size_t(n * dim)) aqBuf.resize(size_t(n * dim));
    runtime::fakeQuantizeActivations(*a, src, dim, aqBuf.data(), dim, n, dim, env.threads);
    return aqBuf.data();
}

const float* TransformerRunner::sparseIn(const ActQuantSpec* a, const float* x, int64_t n,
                                         int64_t dim) {
    if (!a || !a->sparse()) return x;
    if (aqBuf.size() < size_t(n * dim)) aqBuf.resize(size_t(n * dim));
    runtime::topKSparsify(a->topk, x, dim, aqBuf.data(), dim, n, dim, env.threads);
    return aqBuf.data();
}

void TransformerRunner::linearGroup(const Weight* ws, const Out* outs,
                                    const ActQuantSpec* const* aq, const LowRank* lr, int count,
                                    const float* x, int64_t dim, int64_t n) {
    checkCancel(); // a block of a large model is seconds of products: stop between them too
    static const LowRank kNone;
    if (std::any_of(aq, aq + count, [](const ActQuantSpec* a) { return a && a->sparse(); })) {
        // top-K sparsity: every linear sparsifies its own input (their K may differ)
        for (int i = 0; i < count; ++i)
            applyLinear(ws[i], lr ? lr[i] : kNone, aq[i], x, dim, n, outs[i].y, outs[i].ldy,
                        outs[i].bias);
        return;
    }
    kernels::LinearJob packed[7], stored[7];
    int np = 0, ns = 0, firstStored = -1;
    bool same = true;
    for (int i = 0; i < count; ++i) {
        const Weight& W = ws[i];
        if (!W) continue; // low rank, below
        if (W.p) {
            // Equal settings as one pointer: linearBatch then prepares the input once.
            const ActQuantSpec* a = aq[i];
            for (int j = 0; j < np; ++j)
                if (sameQuant(packed[j].act, a)) a = packed[j].act;
            packed[np++] = W.job(outs[i].y, outs[i].ldy, outs[i].bias, a);
            continue;
        }
        if (firstStored < 0) firstStored = i;
        same = same && sameQuant(aq[firstStored], aq[i]);
        stored[ns++] = W.job(outs[i].y, outs[i].ldy, outs[i].bias);
    }
    if (np > 0) env.linear(std::span(packed, size_t(np)), x, dim, n);
    if (ns > 0 && same)
        env.linear(std::span(stored, size_t(ns)), quantIn(aq[firstStored], x, n, dim), dim, n);
    for (int i = 0; i < count; ++i)
        if (!ws[i] || (!ws[i].p && !same))
            applyLinear(ws[i], lr ? lr[i] : kNone, aq[i], x, dim, n, outs[i].y, outs[i].ldy,
                        outs[i].bias);
}

void TransformerRunner::applyLinear(const Weight& W, const LowRank& lr, const ActQuantSpec* a,
                                    const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                                    const float* bias) {
    checkCancel();
    const Weight& first = W ? W : lr.a;
    // The product's input: x as given for a packed weight (it quantises in its product), else
    // x's fake-quantised copy.
    const float* xin = first.p ? sparseIn(a, x, n, ldx) : quantIn(a, x, n, ldx);
    if (W) {
        const kernels::LinearJob job = W.job(y, ldy, bias, a);
        env.linear({&job, 1}, xin, ldx, n);
        return;
    }
    const int64_t r = lr.rank;
    if (lrBuf.size() < size_t(n * r)) lrBuf.resize(size_t(n * r));
    const kernels::LinearJob ja = lr.a.job(lrBuf.data(), r, nullptr, a);
    env.linear({&ja, 1}, xin, ldx, n);
    const kernels::LinearJob jb = lr.b.job(y, ldy, bias);
    env.linear({&jb, 1}, lrBuf.data(), r, n);
}

// Per-block shapes: heads = rows(q) / head_dim, KV heads = rows(k) / head_dim (v must agree),
// MLP channels = rows(up); each at least 1 and at most the spec's value (the scratch buffers
// and caches are sized by the spec).
void TransformerRunner::bindShapes(Layer& L, int64_t l) {
    const int64_t hd = s.headDim;
    auto outRows = [&](const std::string& nm, int64_t dflt) -> int64_t {
        for (const std::string& n : {nm, nm + ".lowrank_b"}) {
            const Weight W = findWeight(w, n);
            if (W.p) return W.p->rows();
            if (W.t) return W.t->shape.size() == 2 ? W.t->shape[0] : dflt;
        }
        return dflt; // absent: binding reports it
    };
    auto heads = [&](const std::string& nm, int64_t maxHeads) {
        const int64_t rows = outRows(nm, maxHeads * hd);
        if (rows % hd != 0 || rows < hd || rows > maxHeads * hd)
            throw Error("tensor '" + nm + "' has " + std::to_string(rows) +
                        " rows; the runtime expects a multiple of head_dim " + std::to_string(hd) +
                        " between 1 and " + std::to_string(maxHeads) + " heads");
        return rows / hd;
    };
    L.heads = heads(L.name[0], s.nHeads);
    L.kvHeads = heads(L.name[1], s.nKvHeads);
    L.qd = L.heads * hd;
    L.kvd = L.kvHeads * hd;
    if (L.heads % L.kvHeads != 0)
        throw Error("block " + std::to_string(l) + " has " + std::to_string(L.heads) +
                    " query heads, not a multiple of its " + std::to_string(L.kvHeads) +
                    " KV heads");
    const bool shrunk = L.heads != s.nHeads || L.kvHeads != s.nKvHeads;
    if (shrunk && (s.posEmbed == PosEmbedding::Alibi || s.qkNormPerHead))
        throw UnsupportedError("block " + std::to_string(l) +
                               " has fewer attention heads than the model spec, which the runtime "
                               "supports only without ALiBi and per-head q/k norms");
    L.hidden = s.hidden;
    if (!s.isMoe()) {
        L.hidden = outRows(L.name[5], s.hidden);
        if (L.hidden < 1 || L.hidden > s.hidden)
            throw Error("tensor '" + L.name[5] + "' has " + std::to_string(L.hidden) +
                        " rows; the runtime expects 1 to " + std::to_string(s.hidden) +
                        " MLP channels");
    }
}

// A linear's weight NAME [rows, cols], or when NAME is absent its factors NAME.lowrank_a
// [r, cols] and NAME.lowrank_b [rows, r] (then the returned Weight is empty).
Weight TransformerRunner::bindLinear(Layer& L, int i, int64_t rows, int64_t cols) {
    const std::string& nm = L.name[i];
    const Weight whole = findWeight(w, nm);
    const Weight a = whole ? Weight{} : findWeight(w, nm + ".lowrank_a");
    if (whole || !a) return requireWeight(w, nm, rows, cols);
    const Weight b = findWeight(w, nm + ".lowrank_b");
    if (!b) throw Error("tensor '" + nm + ".lowrank_a' has no matching '" + nm + ".lowrank_b'");
    const int64_t r = a.p ? a.p->rows() : a.t->shape.size() == 2 ? a.t->shape[0] : 0;
    if (r < 1) throw Error("tensor '" + nm + ".lowrank_a' is not a non-empty 2-D matrix");
    checkWeight(a, nm + ".lowrank_a", r, cols);
    checkWeight(b, nm + ".lowrank_b", rows, r);
    L.lr[i] = {a, b, r};
    return {};
}

// A rotated model's online transforms (core/runtime/hadamard.h): the MLP intermediate of every
// dense block and / or each q/k head after RoPE.
void TransformerRunner::bindRotations() {
    const RuntimeQuant* rq = w.runtimeQuant();
    if (!rq || !rq->rotation.active()) return;
    if (rq->rotation.down && s.isMoe())
        throw UnsupportedError("online rotation of the MLP intermediate: mixture-of-experts "
                               "blocks are not supported");
    std::vector<int64_t> widths;
    for (const Layer& L : layers) widths.push_back(L.hidden);
    rot.init(rq->rotation, s.headDim, widths);
}

uint64_t TransformerRunner::kvCacheBytes(int64_t tokens, bool asF32) const {
    uint64_t b = 0;
    for (int64_t l = 0; l < s.nLayers; ++l) {
        if (layers[size_t(l)].kvPol && !asF32)
            b += polCache[size_t(l)].bytes();
        else if (layers[size_t(l)].kvq && !asF32)
            b += kStream[size_t(l)].bytes() + vStream[size_t(l)].bytes();
        else
            b += uint64_t(tokens) * uint64_t(layers[size_t(l)].kvd) * 2 *
                 (env.kvF16 && !asF32 ? sizeof(uint16_t) : sizeof(float));
    }
    return b;
}

} // namespace

std::unique_ptr<ArchRunner> makeTransformerRunner(const RunEnv& env) {
    return std::make_unique<TransformerRunner>(env);
}

} // namespace lcw::runtime
