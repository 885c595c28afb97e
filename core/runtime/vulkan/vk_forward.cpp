// The resident transformer forward on the Vulkan device (vk_forward.h). Per call: the embedded
// tokens (h [n, dim], computed on the host like the CPU path's embedTokens) and the RoPE tables
// of the batch's positions (kernels::ropeTables: every RoPE variant lcw supports, partial
// rotary and interleaved included) go up in host-visible buffers; one dispatch list then runs
// every block (shaders/fwd_norm.comp, the weight products of vk_backend.cpp, fwd_rope.comp,
// kv_append.comp into the layer's device KV cache, attention.comp (+ attention_merge.comp when
// the keys are split), fwd_eltwise.comp for residuals and activations), the final norm, lm_head
// and soft-capping; the logits of the requested tokens come back. The steps are the CPU runner's
// (arch_transformer.cpp) in the same order, so the results equal the CPU's float-activation
// results up to float summation order.
#include "core/runtime/vulkan/vk_forward.h"

#include "core/runtime/vulkan/vk_attention.h"

#include "core/common/error.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

namespace lcw::runtime::vulkan {

namespace {

using namespace attn;

struct NormPush {
    uint32_t rows, dim, inOff, outOff;
    float eps;
    uint32_t flags, wPeriod, wOff, bOff;
};
struct RopePush {
    uint32_t nTok, ld, nHeads, hd, rotDim, interleaved, rowStride;
};
struct EltPush {
    uint32_t op, n, act, yOff, aOff, rowStride;
    float p;
};
struct ScorePush { // logits_score.comp
    uint32_t vocab, rows;
};

std::atomic<uint64_t> gLogitsBytes{0}; // logits copied back to the host (tests)

enum EltOp : uint32_t { kCopy = 0, kAdd = 1, kAdd2 = 2, kAct = 3, kGated = 4, kSoftcap = 5 };

int64_t ceilDiv(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

template <class P> void setPush(Dispatch& d, const P& p) {
    d.push.resize(sizeof p);
    std::memcpy(d.push.data(), &p, sizeof p);
}

} // namespace

DeviceForward::DeviceForward(std::shared_ptr<Context> ctx) : m_ctx(std::move(ctx)) {}

DeviceForward::~DeviceForward() {
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    freeAll();
}

void DeviceForward::freeAll() {
    for (Buffer* b : {&m_in,    &m_cos, &m_sin,  &m_logitsHost, &m_targets, &m_scores, &m_logits,
                      &m_stage, &m_h,   &m_xn,   &m_tmp,        &m_tmp2,    &m_q,      &m_k,
                      &m_v,     &m_att, &m_gate, &m_up,         &m_part,    &m_slopes, &m_params})
        m_ctx->destroy(*b);
    for (Buffer& b : m_kc) m_ctx->destroy(b);
    for (Buffer& b : m_vc) m_ctx->destroy(b);
    m_kc.clear();
    m_vc.clear();
    m_offsets.clear();
    m_plan = nullptr;
    m_partFloats = 0;
    m_cacheRows = 0;
}

int64_t DeviceForward::offsetOf(const void* p) const {
    auto it = m_offsets.find(p);
    return it == m_offsets.end() ? -1 : it->second;
}

std::string DeviceForward::prepare(const TransformerPlan& plan, uint64_t bindingLimit) {
    if (m_plan == &plan && m_limit == bindingLimit) return {};
    freeAll();
    const int64_t hd = plan.headDim, B = std::max<int64_t>(plan.batch, 1);
    if (hd <= 0 || hd > kMaxHeadDim)
        return "head size " + std::to_string(hd) + " exceeds the attention shader's 256";
    int64_t maxQ = 1, maxKv = 1, maxHid = 1, maxHeads = 1;
    for (const PlanLayer& L : plan.layers) {
        maxQ = std::max(maxQ, L.qd), maxKv = std::max(maxKv, L.kvd);
        maxHid = std::max(maxHid, L.hidden), maxHeads = std::max(maxHeads, L.heads);
    }
    const int64_t widest = std::max({plan.dim, maxQ, maxKv, maxHid, plan.vocab});
    const uint64_t limit = std::min<uint64_t>(bindingLimit, uint64_t(1) << 31);
    if (uint64_t(B) * uint64_t(widest) * 4 > limit)
        return "a batch of " + std::to_string(B) +
               " tokens' activations exceeds one buffer binding";
    if (uint64_t(plan.ctx) * uint64_t(maxKv) * 4 > limit)
        return "the KV cache of " + std::to_string(plan.ctx) + " tokens exceeds one buffer binding";
    if (maxHeads > int64_t(m_ctx->maxGroups(0)) || B > int64_t(m_ctx->maxGroups(1)))
        return "more heads or tokens than one dispatch has workgroups";
    try {
        m_ctx->pipeline("fwd_norm", 3, sizeof(NormPush));
        m_ctx->pipeline("fwd_rope", 3, sizeof(RopePush));
        m_ctx->pipeline("fwd_eltwise", 3, sizeof(EltPush));
        m_ctx->pipeline("attention", 6, sizeof(AttentionPush));
        m_ctx->pipeline("attention_merge", 2, sizeof(MergePush));
        m_ctx->pipeline("kv_append", 4, sizeof(AppendPush));
        m_ctx->pipeline("logits_score", 3, sizeof(ScorePush));
    } catch (const Error& e) {
        return std::string("the forward's shaders could not be built: ") + e.what();
    }
    // Every parameter array (norm weights and biases, q/k norms, linear biases) in one buffer.
    std::vector<float> params;
    auto add = [&](const std::vector<float>* v) {
        if (!v || v->empty() || m_offsets.count(v)) return;
        m_offsets[v] = int64_t(params.size());
        params.insert(params.end(), v->begin(), v->end());
    };
    auto addNorm = [&](const Norm* nm) {
        if (nm) add(&nm->w), add(&nm->b);
    };
    for (const PlanLayer& L : plan.layers) {
        for (const Norm* nm : {L.attnNorm, L.mlpNorm, L.attnPostNorm, L.mlpPostNorm}) addNorm(nm);
        add(L.qNorm), add(L.kNorm);
        for (const PlanLinear* w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) add(w->bias);
    }
    addNorm(plan.finalNorm);
    params.push_back(0.0f);
    if (uint64_t(params.size()) * 4 > limit) {
        m_offsets.clear();
        return "the norm weights and biases exceed one buffer binding";
    }
    try {
        auto dev = [&](Buffer& b, int64_t floats) {
            b = m_ctx->createDeviceBuffer(uint64_t(std::max<int64_t>(floats, 1)) * 4);
        };
        auto host = [&](Buffer& b, int64_t floats) {
            b = m_ctx->createHostBuffer(uint64_t(std::max<int64_t>(floats, 256)) * 4);
        };
        host(m_in, B * plan.dim);
        host(m_cos, B * std::max<int64_t>(plan.rotDim / 2, 1));
        host(m_sin, B * std::max<int64_t>(plan.rotDim / 2, 1));
        host(m_logitsHost, B * plan.vocab);
        host(m_targets, B);
        host(m_scores, B);
        dev(m_logits, B * plan.vocab);
        for (Buffer* b : {&m_h, &m_xn, &m_tmp, &m_tmp2}) dev(*b, B * plan.dim);
        dev(m_q, B * maxQ), dev(m_att, B * maxQ);
        dev(m_k, B * maxKv), dev(m_v, B * maxKv);
        dev(m_gate, B * maxHid), dev(m_up, B * maxHid);
        dev(m_params, int64_t(params.size()));
        m_ctx->upload(m_params, 0, params.data(), params.size() * 4);
        dev(m_slopes, maxHeads);
        if (plan.alibi)
            m_ctx->upload(m_slopes, 0, plan.alibi->data(),
                          std::min<size_t>(plan.alibi->size(), size_t(maxHeads)) * 4);
        m_kc.resize(plan.layers.size());
        m_vc.resize(plan.layers.size());
        m_cacheRows = 0; // allocated as the sequence grows (run())
    } catch (const Error& e) {
        freeAll();
        return std::string("its buffers do not fit the device: ") + e.what();
    }
    m_plan = &plan;
    m_limit = bindingLimit;
    m_headDim = hd;
    return {};
}

void DeviceForward::grid1d(Dispatch& d, int64_t n, uint32_t local, uint32_t* rowStride) const {
    const int64_t groups = std::max<int64_t>(ceilDiv(n, local), 1);
    const uint32_t gx = uint32_t(std::min<int64_t>(groups, m_ctx->maxGroups(0)));
    d.groups[0] = gx;
    d.groups[1] = uint32_t(ceilDiv(groups, gx));
    *rowStride = gx * local;
}

void DeviceForward::norm(std::vector<Dispatch>& ds, const Buffer& x, const Buffer& y, int64_t rows,
                         int64_t dim, int64_t inOff, int64_t outOff, int64_t wOff, int64_t bOff,
                         bool layer, float eps, int64_t wPeriod) {
    Dispatch& d = ds.emplace_back();
    d.pipeline = &m_ctx->pipeline("fwd_norm", 3, sizeof(NormPush));
    d.buffers = {&x, &y, &m_params};
    const NormPush p{uint32_t(rows),
                     uint32_t(dim),
                     uint32_t(inOff),
                     uint32_t(outOff),
                     eps,
                     (layer ? 1u : 0u) | (bOff >= 0 ? 2u : 0u),
                     uint32_t(std::max<int64_t>(wPeriod, 1)),
                     uint32_t(wOff),
                     uint32_t(std::max<int64_t>(bOff, 0))};
    setPush(d, p);
    const uint32_t gx = uint32_t(std::min<int64_t>(rows, m_ctx->maxGroups(0)));
    d.groups[0] = gx;
    d.groups[1] = uint32_t(ceilDiv(rows, gx));
}

void DeviceForward::normOf(std::vector<Dispatch>& ds, const Norm& nm, const Buffer& x,
                           const Buffer& y, int64_t rows, int64_t inOff, int64_t outOff) {
    norm(ds, x, y, rows, int64_t(nm.w.size()), inOff, outOff, offsetOf(&nm.w), offsetOf(&nm.b),
         nm.layer, nm.eps, 1);
}

void DeviceForward::eltwise(std::vector<Dispatch>& ds, uint32_t op, const Buffer& y,
                            const Buffer& a, const Buffer& b, int64_t n, uint32_t act, int64_t yOff,
                            int64_t aOff, float p) {
    Dispatch& d = ds.emplace_back();
    d.pipeline = &m_ctx->pipeline("fwd_eltwise", 3, sizeof(EltPush));
    d.buffers = {&y, &a, &b};
    EltPush pc{op, uint32_t(n), act, uint32_t(yOff), uint32_t(aOff), 0, p};
    grid1d(d, n, 256, &pc.rowStride);
    setPush(d, pc);
}

void DeviceForward::rope(std::vector<Dispatch>& ds, const Buffer& x, int64_t n, int64_t ld,
                         int64_t heads, int64_t rotDim, bool interleaved) {
    Dispatch& d = ds.emplace_back();
    d.pipeline = &m_ctx->pipeline("fwd_rope", 3, sizeof(RopePush));
    d.buffers = {&x, &m_cos, &m_sin};
    RopePush pc{uint32_t(n),
                uint32_t(ld),
                uint32_t(heads),
                uint32_t(m_headDim),
                uint32_t(rotDim),
                interleaved ? 1u : 0u,
                0};
    grid1d(d, n * heads * (rotDim / 2), 64, &pc.rowStride);
    setPush(d, pc);
}

/// The state of one run() call that its recording steps share.
struct DeviceForward::Call {
    ProductRecorder& rec;
    const TransformerPlan& plan;
    int64_t n = 0, pos0 = 0;
    std::vector<Dispatch> ds;
    /// Cache buffers replaced by growCache(): the dispatches read them, so they are freed
    /// after the submission (reserved up front: the dispatches hold pointers into it).
    std::vector<Buffer> retired;
    std::vector<AttentionPush> attnPush; ///< per layer
    int64_t products = 0;
};

int64_t DeviceForward::run(ProductRecorder& rec, const TransformerPlan& plan, const float* h,
                           const float* cosT, const float* sinT, int64_t n, int64_t pos0,
                           int64_t logitsFrom, float* logitsOut, const int32_t* targets,
                           float* logProbs) {
    if (m_plan != &plan) throw Error("Vulkan: resident forward without its buffers");
    if (n <= 0) return 0;
    if (n > plan.batch || pos0 < 0 || pos0 + n > plan.ctx)
        throw Error("Vulkan: resident forward of " + std::to_string(n) + " tokens at " +
                    std::to_string(pos0) + " exceeds the session's batch or context");
    const int64_t dim = plan.dim, half = plan.rotDim / 2;
    std::memcpy(m_in.mapped, h, size_t(n * dim) * 4);
    if (plan.rotDim > 0) {
        std::memcpy(m_cos.mapped, cosT, size_t(n * half) * 4);
        std::memcpy(m_sin.mapped, sinT, size_t(n * half) * 4);
    }
    Call c{rec, plan, n, pos0, {}, {}, {}, 0};
    struct Retire {
        Context& ctx;
        std::vector<Buffer>& bufs;
        ~Retire() {
            for (Buffer& b : bufs) ctx.destroy(b);
        }
    } retire{*m_ctx, c.retired};
    growCache(c);
    eltwise(c.ds, kCopy, m_h, m_in, m_in, n * dim);
    planAttention(c);
    for (size_t l = 0; l < plan.layers.size(); ++l) recordBlock(c, l);
    const int64_t nOut = n - logitsFrom;
    const bool scored = targets != nullptr;
    if (nOut > 0 && scored) std::memcpy(m_targets.mapped, targets, size_t(nOut) * 4);
    if (nOut > 0) recordHead(c, logitsFrom, scored);
    m_ctx->run(c.ds);
    if (nOut > 0 && scored) {
        std::memcpy(logProbs, m_scores.mapped, size_t(nOut) * 4);
    } else if (nOut > 0) {
        std::memcpy(logitsOut, m_logitsHost.mapped, size_t(nOut * plan.vocab) * 4);
        gLogitsBytes += uint64_t(nOut * plan.vocab) * 4;
    }
    return c.products;
}

// The KV cache grows like the host's (doubling, at least 256 rows, at most the context): the
// rows before pos0 move to the new buffers at the start of this submission; the old buffers
// are freed after it.
void DeviceForward::growCache(Call& c) {
    const TransformerPlan& plan = c.plan;
    if (c.pos0 + c.n <= m_cacheRows) return;
    const int64_t cap = std::min(std::max<int64_t>({c.pos0 + c.n, 2 * m_cacheRows, 256}), plan.ctx);
    std::vector<Buffer> nk(m_kc.size()), nv(m_vc.size());
    c.retired.reserve(2 * m_kc.size());
    try {
        for (size_t l = 0; l < m_kc.size(); ++l) {
            nk[l] = m_ctx->createDeviceBuffer(uint64_t(cap * plan.layers[l].kvd) * 4);
            nv[l] = m_ctx->createDeviceBuffer(uint64_t(cap * plan.layers[l].kvd) * 4);
        }
    } catch (...) {
        for (Buffer& b : nk) m_ctx->destroy(b);
        for (Buffer& b : nv) m_ctx->destroy(b);
        throw;
    }
    for (size_t l = 0; l < m_kc.size(); ++l) {
        const int64_t keep = std::min(c.pos0, m_cacheRows) * plan.layers[l].kvd;
        if (keep > 0) {
            c.retired.push_back(m_kc[l]);
            c.retired.push_back(m_vc[l]);
        } else {
            m_ctx->destroy(m_kc[l]);
            m_ctx->destroy(m_vc[l]);
        }
        m_kc[l] = nk[l];
        m_vc[l] = nv[l];
        // (the dispatches point at m_kc/m_vc and retired, which do not move until run())
        if (keep > 0) {
            const Buffer& ok = c.retired[c.retired.size() - 2];
            eltwise(c.ds, kCopy, m_kc[l], ok, ok, keep);
            eltwise(c.ds, kCopy, m_vc[l], c.retired.back(), c.retired.back(), keep);
        }
    }
    m_cacheRows = cap;
}

// Each layer's attention push constants, with key splits (as vk_attention.cpp: few (head,
// token) workgroups over many keys), and the part buffer for the largest split of the call.
void DeviceForward::planAttention(Call& c) {
    const TransformerPlan& plan = c.plan;
    const int64_t n = c.n, pos0 = c.pos0, hd = plan.headDim;
    c.attnPush.resize(plan.layers.size());
    int64_t partFloats = 1;
    for (size_t l = 0; l < plan.layers.size(); ++l) {
        const PlanLayer& L = plan.layers[l];
        AttentionPush& pc = c.attnPush[l];
        pc.pos0 = uint32_t(pos0);
        pc.nHeads = uint32_t(L.heads);
        pc.group = uint32_t(L.heads / L.kvHeads);
        pc.hd = uint32_t(hd);
        pc.kvDim = uint32_t(L.kvd);
        pc.window = uint32_t(std::clamp<int64_t>(L.window, 0, int64_t(UINT32_MAX)));
        pc.flags = (plan.alibi ? 1u : 0u) | (plan.alibiBeforeScale ? 2u : 0u) |
                   (plan.attnSoftcap > 0 ? 4u : 0u);
        pc.scale = L.scale > 0 ? L.scale : float(1.0 / std::sqrt(double(hd)));
        pc.softcap = plan.attnSoftcap > 0 ? plan.attnSoftcap : 0.0f;
        const int64_t keys = L.window > 0 ? std::min(L.window, pos0 + n) : pos0 + n;
        int64_t nSplit = 1, splitKeys = keys;
        if (L.heads * n < kTargetGroups && keys > kSplitMinKeys) {
            nSplit = std::min({ceilDiv(keys, kSplitMinKeys), ceilDiv(kTargetGroups, L.heads * n),
                               kMaxSplits, int64_t(m_ctx->maxGroups(2))});
            splitKeys = ceilDiv(ceilDiv(keys, nSplit), kChunk) * kChunk;
            nSplit = ceilDiv(keys, splitKeys);
            if (uint64_t(n * L.heads * nSplit * (hd + 2)) * 4 > m_limit) nSplit = 1;
        }
        pc.nSplit = uint32_t(nSplit);
        pc.splitKeys = uint32_t(splitKeys);
        if (nSplit > 1) partFloats = std::max(partFloats, n * L.heads * nSplit * (hd + 2));
    }
    if (partFloats > m_partFloats) {
        m_ctx->destroy(m_part);
        m_part = m_ctx->createDeviceBuffer(uint64_t(std::max<int64_t>(partFloats, 256)) * 4);
        m_partFloats = std::max<int64_t>(partFloats, 256);
    } else if (!m_part.buffer) {
        m_part = m_ctx->createDeviceBuffer(1024);
        m_partFloats = 256;
    }
}

void DeviceForward::product(Call& c, const PlanLinear& w, const Buffer& x, const Buffer& y,
                            int64_t nTok) {
    c.rec.record(c.ds, w, x, y, nTok, m_params, offsetOf(w.bias));
    ++c.products;
}

// x [n, dim] → out [n, dim]: q/k/v, q/k norms, RoPE, the cache append, attention, o.
void DeviceForward::recordAttention(Call& c, size_t l, const Buffer& x, const Buffer& out) {
    const TransformerPlan& plan = c.plan;
    const PlanLayer& L = plan.layers[l];
    const int64_t n = c.n, hd = plan.headDim;
    auto& ds = c.ds;
    product(c, L.q, x, m_q, n);
    product(c, L.k, x, m_k, n);
    product(c, L.v, x, m_v, n);
    if (L.qNorm && !L.qNorm->empty()) {
        norm(ds, m_q, m_q, n * L.heads, hd, 0, 0, offsetOf(L.qNorm), -1, L.qkNormLayer,
             plan.normEps, L.qkNormLayer ? L.heads : 1);
        norm(ds, m_k, m_k, n * L.kvHeads, hd, 0, 0, offsetOf(L.kNorm), -1, L.qkNormLayer,
             plan.normEps, L.qkNormLayer ? L.kvHeads : 1);
    }
    if (plan.rotDim > 0) {
        rope(ds, m_q, n, L.qd, L.heads, plan.rotDim, plan.interleaved);
        rope(ds, m_k, n, L.kvd, L.kvHeads, plan.rotDim, plan.interleaved);
    }
    {
        Dispatch& d = ds.emplace_back();
        d.pipeline = &m_ctx->pipeline("kv_append", 4, sizeof(AppendPush));
        d.buffers = {&m_k, &m_v, &m_kc[l], &m_vc[l]};
        AppendPush ap{uint32_t(c.pos0 * L.kvd), uint32_t(n * L.kvd), 0};
        grid1d(d, n * L.kvd, 256, &ap.rowStride);
        setPush(d, ap);
    }
    const AttentionPush& pc = c.attnPush[l];
    {
        Dispatch& a = ds.emplace_back();
        a.pipeline = &m_ctx->pipeline("attention", 6, sizeof(AttentionPush));
        a.buffers = {&m_q, &m_kc[l], &m_vc[l], &m_att, &m_slopes, &m_part};
        setPush(a, pc);
        a.groups[0] = uint32_t(L.heads);
        a.groups[1] = uint32_t(n);
        a.groups[2] = pc.nSplit;
    }
    if (pc.nSplit > 1) {
        Dispatch& d = ds.emplace_back();
        d.pipeline = &m_ctx->pipeline("attention_merge", 2, sizeof(MergePush));
        d.buffers = {&m_part, &m_att};
        setPush(d, MergePush{uint32_t(L.heads), uint32_t(hd), pc.nSplit});
        d.groups[0] = uint32_t(L.heads);
        d.groups[1] = uint32_t(n);
    }
    product(c, L.o, m_att, out, n);
}

// x [n, dim] → out [n, dim]: gate/up, the activation, down.
void DeviceForward::recordMlp(Call& c, size_t l, const Buffer& x, const Buffer& out) {
    const PlanLayer& L = c.plan.layers[l];
    const int64_t n = c.n;
    const uint32_t act = uint32_t(c.plan.act);
    if (L.gate) {
        product(c, L.gate, x, m_gate, n);
        product(c, L.up, x, m_up, n);
        eltwise(c.ds, kGated, m_gate, m_up, m_up, n * L.hidden, act);
    } else {
        product(c, L.up, x, m_gate, n);
        eltwise(c.ds, kAct, m_gate, m_gate, m_gate, n * L.hidden, act);
    }
    product(c, L.down, m_gate, out, n);
}

// One block in the plan's residual style (the CPU runner's steps, in its order).
void DeviceForward::recordBlock(Call& c, size_t l) {
    const TransformerPlan& plan = c.plan;
    const PlanLayer& L = plan.layers[l];
    const int64_t n = c.n, nd = n * plan.dim;
    auto& ds = c.ds;
    switch (plan.residual) {
    case ResidualStyle::PreNorm:
        normOf(ds, *L.attnNorm, m_h, m_xn, n);
        recordAttention(c, l, m_xn, m_tmp);
        if (L.attnPostNorm) normOf(ds, *L.attnPostNorm, m_tmp, m_tmp, n);
        if (plan.residualFromNorm) eltwise(ds, kCopy, m_h, m_xn, m_xn, nd);
        eltwise(ds, kAdd, m_h, m_tmp, m_tmp, nd);
        normOf(ds, *L.mlpNorm, m_h, m_xn, n);
        recordMlp(c, l, m_xn, m_tmp);
        if (L.mlpPostNorm) normOf(ds, *L.mlpPostNorm, m_tmp, m_tmp, n);
        if (plan.residualFromNorm) eltwise(ds, kCopy, m_h, m_xn, m_xn, nd);
        eltwise(ds, kAdd, m_h, m_tmp, m_tmp, nd);
        break;
    case ResidualStyle::PostNorm:
        recordAttention(c, l, m_h, m_tmp);
        eltwise(ds, kAdd, m_h, m_tmp, m_tmp, nd);
        normOf(ds, *L.attnNorm, m_h, m_h, n);
        recordMlp(c, l, m_h, m_tmp);
        eltwise(ds, kAdd, m_h, m_tmp, m_tmp, nd);
        normOf(ds, *L.mlpNorm, m_h, m_h, n);
        break;
    case ResidualStyle::Parallel:
        normOf(ds, *L.attnNorm, m_h, m_xn, n);
        recordAttention(c, l, m_xn, m_tmp);
        if (L.mlpNorm) normOf(ds, *L.mlpNorm, m_h, m_xn, n);
        recordMlp(c, l, m_xn, m_tmp2);
        eltwise(ds, kAdd2, m_h, m_tmp, m_tmp2, nd);
        break;
    }
}

// The final norm of the tokens from logitsFrom on, lm_head, soft-capping; then either the copy
// of the logits into the host-visible buffer or (scored) their log-probabilities at the targets.
void DeviceForward::recordHead(Call& c, int64_t logitsFrom, bool scored) {
    const TransformerPlan& plan = c.plan;
    const int64_t dim = plan.dim, nOut = c.n - logitsFrom;
    if (plan.finalNorm)
        normOf(c.ds, *plan.finalNorm, m_h, m_xn, nOut, logitsFrom * dim, 0);
    else
        eltwise(c.ds, kCopy, m_xn, m_h, m_h, nOut * dim, 0, 0, logitsFrom * dim);
    product(c, plan.lmHead, m_xn, m_logits, nOut);
    if (plan.finalSoftcap > 0)
        eltwise(c.ds, kSoftcap, m_logits, m_logits, m_logits, nOut * plan.vocab, 0, 0, 0,
                plan.finalSoftcap);
    if (!scored) {
        eltwise(c.ds, kCopy, m_logitsHost, m_logits, m_logits, nOut * plan.vocab);
        return;
    }
    Dispatch& d = c.ds.emplace_back();
    d.pipeline = &m_ctx->pipeline("logits_score", 3, sizeof(ScorePush));
    d.buffers = {&m_logits, &m_targets, &m_scores};
    setPush(d, ScorePush{uint32_t(plan.vocab), uint32_t(nOut)});
    d.groups[0] = uint32_t(nOut);
}

uint64_t residentLogitsBytesForTests() {
    return gLogitsBytes.load();
}

void DeviceForward::readCache(int layer, int64_t rows, float* k, float* v) {
    if (!m_plan || layer < 0 || size_t(layer) >= m_kc.size())
        throw Error("Vulkan: no resident KV cache for layer " + std::to_string(layer));
    const int64_t kvd = m_plan->layers[size_t(layer)].kvd, nf = rows * kvd;
    if (nf <= 0) return;
    if (!m_stage.buffer || m_stage.size < uint64_t(2 * nf) * 4) {
        m_ctx->destroy(m_stage);
        m_stage = m_ctx->createHostBuffer(uint64_t(2 * nf) * 4);
    }
    std::vector<Dispatch> ds;
    eltwise(ds, kCopy, m_stage, m_kc[size_t(layer)], m_kc[size_t(layer)], nf);
    eltwise(ds, kCopy, m_stage, m_vc[size_t(layer)], m_vc[size_t(layer)], nf, 0, nf, 0);
    m_ctx->run(ds);
    const float* s = static_cast<const float*>(m_stage.mapped);
    std::memcpy(k, s, size_t(nf) * 4);
    std::memcpy(v, s + nf, size_t(nf) * 4);
}

} // namespace lcw::runtime::vulkan
