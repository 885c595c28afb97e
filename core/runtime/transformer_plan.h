#pragma once
/// \file
/// Internal to core/runtime: an attention-family model as a device backend runs it whole
/// (Backend::transformerForward). arch_transformer.cpp fills it once when it binds the weights;
/// the pointers stay valid while the runner lives. Only what the resident forward supports is
/// described: dense MLPs, whole (not low-rank) linears, float32 KV caches, no input
/// fake-quantisation, embeddings computed on the host.
#include "core/model/model.h"
#include "core/runtime/arch.h"
#include "core/runtime/cpu/kernels.h"

#include <cstdint>
#include <vector>

namespace lcw::runtime {

/// y = W x (+ bias): W stored (t) or packed (p); bias empty or [rows].
struct PlanLinear {
    const TensorView* t = nullptr;
    const kernels::PackedLinear* p = nullptr;
    const std::vector<float>* bias = nullptr; ///< null or empty: none
    int64_t rows = 0, cols = 0;
    explicit operator bool() const { return t || p; }
};

struct PlanLayer {
    const Norm *attnNorm = nullptr, *mlpNorm = nullptr; ///< mlpNorm absent: shared parallel norm
    const Norm *attnPostNorm = nullptr, *mlpPostNorm = nullptr; ///< Gemma2 (else null)
    PlanLinear q, k, v, o, gate, up, down;                      ///< gate empty: plain MLP
    /// Qwen3: [headDim] (every head); StableLM: [heads * headDim] (one per head); empty: none.
    const std::vector<float>*qNorm = nullptr, *kNorm = nullptr;
    bool qkNormLayer = false; ///< LayerNorm (StableLM) rather than RMSNorm (Qwen3)
    int64_t heads = 0, kvHeads = 0, qd = 0, kvd = 0, hidden = 0;
    float scale = 1.0f;
    int64_t window = 0; ///< sliding window (0: none)
};

struct TransformerPlan {
    int64_t dim = 0, headDim = 0, vocab = 0;
    int64_t ctx = 0;   ///< KV cache rows
    int64_t batch = 0; ///< most tokens per call
    ResidualStyle residual = ResidualStyle::PreNorm;
    bool residualFromNorm = false; ///< Bloom: the residual is taken after the norm
    float normEps = 1e-5f;         ///< q/k norms
    kernels::Activation act = kernels::Activation::Silu;
    int64_t rotDim = 0; ///< RoPE: rotated values per head (0: no RoPE)
    bool interleaved = false;
    const std::vector<float>* alibi = nullptr; ///< slopes [heads] or null
    bool alibiBeforeScale = false;
    float attnSoftcap = 0, finalSoftcap = 0;
    const Norm* finalNorm = nullptr; ///< null: none
    PlanLinear lmHead;
    std::vector<PlanLayer> layers;
};

} // namespace lcw::runtime
