#pragma once
/// \file
/// Internal to the Vulkan backend: the resident transformer forward (Backend::transformerForward).
/// The hidden state, every intermediate activation and the KV cache live in device buffers for
/// the whole call; the call uploads the embedded tokens and the RoPE tables of its positions,
/// records every step (norms, products, RoPE, cache append, attention, MLP, residuals, final
/// norm, lm_head, soft-capping) into one dispatch list, submits it once and downloads the
/// requested logits. One per VulkanBackend (session); its buffers are freed with it.
#include "core/runtime/transformer_plan.h"
#include "core/runtime/vulkan/vk_context.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lcw::runtime::vulkan {

/// Records one weight product y [nTok, w.rows] = x [nTok, w.cols] W^T (+ bias from `params` at
/// float offset biasOff when >= 0) into a dispatch list (vk_backend.cpp, its weight cache and
/// matmul pipelines). Called with the context's mutex held.
class ProductRecorder {
public:
    virtual ~ProductRecorder() = default;
    virtual void record(std::vector<Dispatch>& ds, const PlanLinear& w, const Buffer& x,
                        const Buffer& y, int64_t nTok, const Buffer& params, int64_t biasOff) = 0;
};

class DeviceForward {
public:
    explicit DeviceForward(std::shared_ptr<Context> ctx);
    ~DeviceForward(); ///< takes the context's mutex
    DeviceForward(const DeviceForward&) = delete;
    DeviceForward& operator=(const DeviceForward&) = delete;

    /// Empty when `plan` can run (its buffers are then allocated and its parameters uploaded,
    /// once per plan), else why not. `bindingLimit`: the bytes one binding may cover. Context
    /// mutex held.
    std::string prepare(const TransformerPlan& plan, uint64_t bindingLimit);
    /// Backend::transformerForward (after prepare() said yes). Context mutex held. Returns the
    /// number of weight products it ran.
    int64_t run(ProductRecorder& rec, const TransformerPlan& plan, const float* h,
                const float* cosT, const float* sinT, int64_t n, int64_t pos0, int64_t logitsFrom,
                float* logitsOut, const int32_t* targets, float* logProbs);
    /// Backend::transformerReadCache. Context mutex held.
    void readCache(int layer, int64_t rows, float* k, float* v);

private:
    void freeAll();
    /// One-dimensional grid over n elements of 256-invocation groups: (groups x, y, row stride).
    void grid1d(Dispatch& d, int64_t n, uint32_t local, uint32_t* rowStride) const;
    void norm(std::vector<Dispatch>& ds, const Buffer& x, const Buffer& y, int64_t rows,
              int64_t dim, int64_t inOff, int64_t outOff, int64_t wOff, int64_t bOff, bool layer,
              float eps, int64_t wPeriod);
    void normOf(std::vector<Dispatch>& ds, const Norm& nm, const Buffer& x, const Buffer& y,
                int64_t rows, int64_t inOff = 0, int64_t outOff = 0);
    void eltwise(std::vector<Dispatch>& ds, uint32_t op, const Buffer& y, const Buffer& a,
                 const Buffer& b, int64_t n, uint32_t act = 0, int64_t yOff = 0, int64_t aOff = 0,
                 float p = 0);
    void rope(std::vector<Dispatch>& ds, const Buffer& x, int64_t n, int64_t ld, int64_t heads,
              int64_t rotDim, bool interleaved);
    int64_t offsetOf(const void* p) const; ///< a parameter array's float offset (-1: none)
    // The steps of run(), recording into the call's dispatch list.
    struct Call;
    void growCache(Call& c);
    void planAttention(Call& c);
    void product(Call& c, const PlanLinear& w, const Buffer& x, const Buffer& y, int64_t nTok);
    void recordAttention(Call& c, size_t l, const Buffer& x, const Buffer& out);
    void recordMlp(Call& c, size_t l, const Buffer& x, const Buffer& out);
    void recordBlock(Call& c, size_t l);
    void recordHead(Call& c, int64_t logitsFrom, bool scored);

    std::shared_ptr<Context> m_ctx;
    const TransformerPlan* m_plan = nullptr; ///< the plan the buffers were made for
    int64_t m_headDim = 0;
    Buffer m_in, m_cos, m_sin, m_logitsHost, m_stage; ///< host-visible
    Buffer m_targets, m_scores;                       ///< host-visible: perplexity scoring
    Buffer m_logits;                                  ///< lm_head's output (device)
    Buffer m_h, m_xn, m_tmp, m_tmp2, m_q, m_k, m_v, m_att, m_gate, m_up, m_part, m_slopes;
    Buffer m_params; ///< norm weights and biases, q/k norms, linear biases
    std::map<const void*, int64_t> m_offsets;
    std::vector<Buffer> m_kc, m_vc; ///< the KV cache per layer [m_cacheRows, kvd]
    int64_t m_cacheRows = 0;
    uint64_t m_limit = 0;
    int64_t m_partFloats = 0;
};

} // namespace lcw::runtime::vulkan
