// Attention on the Vulkan device: kernels::attentionEx's contract, run by shaders/attention.comp
// over a device mirror of each layer's float32 KV cache. A step uploads only the cache rows the
// mirror lacks (a decode step: one row of K and one of V per layer; shaders/kv_append.comp puts
// them in place), the queries and the ALiBi slopes, all in one submission, and downloads the
// output. The mirror's buffers grow by doubling (re-uploading the rows from the host cache,
// which holds them all); a cache that would exceed one buffer binding runs on the CPU. Few query
// tokens over a long context (decode) split the keys over workgroups (attention_merge.comp
// combines them), so that a decode step keeps the GPU busy.
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
constexpr int64_t kMinRows = 256; // the smallest mirror

std::atomic<int64_t> gSplitDispatches{0};

int64_t ceilDiv(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

} // namespace

DeviceAttention::DeviceAttention(std::shared_ptr<Context> ctx, int gpuLayers)
    : m_ctx(std::move(ctx)), m_gpuLayers(gpuLayers) {}

DeviceAttention::~DeviceAttention() {
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    for (Mirror& m : m_layers) free(m);
    for (Buffer* b : {&m_q, &m_out, &m_slopes, &m_part, &m_stageK, &m_stageV}) m_ctx->destroy(*b);
}

void DeviceAttention::free(Mirror& m) {
    m_ctx->destroy(m.k);
    m_ctx->destroy(m.v);
    m.capacity = 0;
    m.rows = 0;
}

void DeviceAttention::ensureHost(Buffer& b, uint64_t bytes) {
    if (b.buffer && b.size >= bytes) return;
    m_ctx->destroy(b);
    b = m_ctx->createHostBuffer(std::max<uint64_t>(bytes, 1024));
}

bool DeviceAttention::sync(Mirror& m, const float* kCache, const float* vCache, int64_t kvDim,
                           int64_t pos0, int64_t need, uint64_t limit, int64_t* from) {
    if (m.kvDim != kvDim || m.hostK != kCache || m.hostV != vCache) {
        // Another cache (a new session's, or the runner's grown one): nothing is known to match.
        m.rows = 0;
        m.kvDim = kvDim;
        m.hostK = kCache;
        m.hostV = vCache;
    }
    // Rows below pos0 stay as they were; the runner has just (re)written those from pos0 on.
    int64_t valid = std::min(m.rows, pos0);
    const uint64_t rowBytes = uint64_t(kvDim) * 4;
    if (need > m.capacity || m.k.size < uint64_t(need) * rowBytes) {
        const int64_t maxRows = int64_t(limit / rowBytes);
        if (need > maxRows) {
            free(m);
            return false;
        }
        const int64_t cap = std::min(std::max({need, 2 * m.capacity, kMinRows}), maxRows);
        free(m);
        try {
            m.k = m_ctx->createDeviceBuffer(uint64_t(cap) * rowBytes);
            m.v = m_ctx->createDeviceBuffer(uint64_t(cap) * rowBytes);
        } catch (const Error&) { // out of device memory: this call runs on the CPU
            free(m);
            return false;
        }
        m.capacity = cap;
        valid = 0;
    }
    *from = valid;
    m.rows = valid; // until the rows [valid, need) have been copied
    return true;
}

std::vector<Dispatch> DeviceAttention::appendRows(Mirror& m, const Pipeline* copy,
                                                  const float* kCache, const float* vCache,
                                                  int64_t kvDim, int64_t from, int64_t need) {
    // Through two host buffers and kv_append.comp (device-local memory need not be
    // host-visible; no transfer of its own).
    std::vector<Dispatch> append;
    if (need <= from) return append;
    const size_t n = size_t((need - from) * kvDim);
    ensureHost(m_stageK, n * 4);
    ensureHost(m_stageV, n * 4);
    std::memcpy(m_stageK.mapped, kCache + from * kvDim, n * 4);
    std::memcpy(m_stageV.mapped, vCache + from * kvDim, n * 4);
    const uint32_t groups = uint32_t(ceilDiv(int64_t(n), 256));
    const uint32_t gx = std::min<uint32_t>(groups, m_ctx->maxGroups(0));
    const AppendPush ap{uint32_t(from * kvDim), uint32_t(n), gx * 256};
    Dispatch& d = append.emplace_back();
    d.pipeline = copy;
    d.buffers = {&m_stageK, &m_stageV, &m.k, &m.v};
    d.push.resize(sizeof ap);
    std::memcpy(d.push.data(), &ap, sizeof ap);
    d.groups[0] = gx;
    d.groups[1] = (groups + gx - 1) / gx;
    return append;
}

void DeviceAttention::run(int layer, const float* q, int64_t ldq, const float* kCache,
                          const float* vCache, float* out, int64_t ldo, int64_t nTok, int64_t pos0,
                          int64_t nHeads, int64_t nKvHeads, int64_t headDim,
                          const kernels::AttentionOptions& opt, int threads,
                          uint64_t bindingLimit) {
    auto onCpu = [&] {
        kernels::attentionEx(q, ldq, kCache, vCache, out, ldo, nTok, pos0, nHeads, nKvHeads,
                             headDim, opt, threads);
        ++m_fallbackCalls;
    };
    if (nTok <= 0) return;
    // The CPU kernel also validates the shapes (and throws what it throws).
    if ((m_gpuLayers >= 0 && layer >= m_gpuLayers) || layer < 0 || m_broken || nKvHeads <= 0 ||
        nHeads % nKvHeads != 0 || headDim <= 0 || headDim > kMaxHeadDim || pos0 < 0)
        return onCpu();
    const int64_t qd = nHeads * headDim, kvDim = nKvHeads * headDim;
    const uint64_t limit = std::min<uint64_t>(bindingLimit, uint64_t(1) << 31);
    const int64_t tokChunk =
        std::min<int64_t>({nTok, int64_t(limit / uint64_t(qd * 4)), int64_t(m_ctx->maxGroups(1))});
    if (tokChunk < 1 || nHeads > int64_t(m_ctx->maxGroups(0))) return onCpu();

    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    const Pipeline *pipe = nullptr, *merge = nullptr, *copy = nullptr;
    try {
        pipe = &m_ctx->pipeline("attention", 6, sizeof(AttentionPush));
        merge = &m_ctx->pipeline("attention_merge", 2, sizeof(MergePush));
        copy = &m_ctx->pipeline("kv_append", 4, sizeof(AppendPush));
    } catch (const Error&) {
        m_broken = true;
    }
    if (!pipe || !merge || !copy) return onCpu();
    if (size_t(layer) >= m_layers.size()) m_layers.resize(size_t(layer) + 1);
    Mirror& m = m_layers[size_t(layer)];
    const int64_t need = pos0 + nTok;
    int64_t from = 0;
    if (!sync(m, kCache, vCache, kvDim, pos0, need, limit, &from)) return onCpu();
    // The new rows go up in the same submission as the first attention dispatch.
    std::vector<Dispatch> append = appendRows(m, copy, kCache, vCache, kvDim, from, need);

    AttentionPush pc{};
    pc.nHeads = uint32_t(nHeads);
    pc.group = uint32_t(nHeads / nKvHeads);
    pc.hd = uint32_t(headDim);
    pc.kvDim = uint32_t(kvDim);
    pc.window = uint32_t(std::clamp<int64_t>(opt.window, 0, int64_t(UINT32_MAX)));
    pc.flags =
        (opt.alibi ? 1u : 0u) | (opt.alibiBeforeScale ? 2u : 0u) | (opt.softcap > 0 ? 4u : 0u);
    pc.scale = opt.scale > 0 ? opt.scale : float(1.0 / std::sqrt(double(headDim)));
    pc.softcap = opt.softcap > 0 ? opt.softcap : 0.0f;
    ensureHost(m_slopes, uint64_t(nHeads) * 4);
    if (opt.alibi) std::memcpy(m_slopes.mapped, opt.alibi, size_t(nHeads) * 4);
    ensureHost(m_q, uint64_t(tokChunk * qd) * 4);
    ensureHost(m_out, uint64_t(tokChunk * qd) * 4);
    for (int64_t t0 = 0; t0 < nTok; t0 += tokChunk) {
        const int64_t nt = std::min(tokChunk, nTok - t0);
        float* qs = static_cast<float*>(m_q.mapped);
        for (int64_t t = 0; t < nt; ++t)
            std::memcpy(qs + t * qd, q + (t0 + t) * ldq, size_t(qd) * 4);
        pc.pos0 = uint32_t(pos0 + t0);
        // Few (head, token) workgroups over many keys: split the keys too.
        const int64_t keys = opt.window > 0 ? std::min(opt.window, pos0 + t0 + nt) : pos0 + t0 + nt;
        int64_t nSplit = 1, splitKeys = keys;
        if (nHeads * nt < kTargetGroups && keys > kSplitMinKeys) {
            nSplit = std::min({ceilDiv(keys, kSplitMinKeys), ceilDiv(kTargetGroups, nHeads * nt),
                               kMaxSplits, int64_t(m_ctx->maxGroups(2))});
            splitKeys = ceilDiv(ceilDiv(keys, nSplit), kChunk) * kChunk;
            nSplit = ceilDiv(keys, splitKeys);
            if (uint64_t(nt * nHeads * nSplit * (headDim + 2)) * 4 > limit) nSplit = 1;
        }
        pc.nSplit = uint32_t(nSplit);
        pc.splitKeys = uint32_t(splitKeys);
        const uint64_t partBytes =
            nSplit > 1 ? uint64_t(nt * nHeads * nSplit * (headDim + 2)) * 4 : 4;
        if (!m_part.buffer || m_part.size < partBytes) {
            m_ctx->destroy(m_part);
            m_part = m_ctx->createDeviceBuffer(std::max<uint64_t>(partBytes, 1024));
        }
        std::vector<Dispatch> ds = t0 == 0 ? std::move(append) : std::vector<Dispatch>{};
        Dispatch& a = ds.emplace_back();
        a.pipeline = pipe;
        a.buffers = {&m_q, &m.k, &m.v, &m_out, &m_slopes, &m_part};
        a.push.resize(sizeof pc);
        std::memcpy(a.push.data(), &pc, sizeof pc);
        a.groups[0] = uint32_t(nHeads);
        a.groups[1] = uint32_t(nt);
        a.groups[2] = uint32_t(nSplit);
        if (nSplit > 1) {
            const MergePush mp{uint32_t(nHeads), uint32_t(headDim), uint32_t(nSplit)};
            Dispatch& d = ds.emplace_back();
            d.pipeline = merge;
            d.buffers = {&m_part, &m_out};
            d.push.resize(sizeof mp);
            std::memcpy(d.push.data(), &mp, sizeof mp);
            d.groups[0] = uint32_t(nHeads);
            d.groups[1] = uint32_t(nt);
            ++gSplitDispatches;
        }
        m_ctx->run(ds);
        m.rows = need;
        const float* os = static_cast<const float*>(m_out.mapped);
        for (int64_t t = 0; t < nt; ++t)
            std::memcpy(out + (t0 + t) * ldo, os + t * qd, size_t(qd) * 4);
    }
    ++m_deviceCalls;
}

int64_t attentionSplitDispatchesForTests() {
    return gSplitDispatches.load();
}

} // namespace lcw::runtime::vulkan
