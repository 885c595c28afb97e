#pragma once
/// \file
/// Architecture-level description of a model, filled from config.json, GGUF metadata or a
/// llama2.c header.
#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

enum class RopeType { Default, Linear, Dynamic, Llama3, Yarn };

struct RopeConfig {
    RopeType type = RopeType::Default;
    double theta = 10000.0;
    double factor = 1.0;              ///< linear/dynamic/llama3/yarn scaling factor
    int64_t originalMaxPositions = 0; ///< llama3/yarn/dynamic: original_max_position_embeddings
    double lowFreqFactor = 1.0;       ///< llama3
    double highFreqFactor = 4.0;      ///< llama3
    double betaFast = 32.0;           ///< yarn
    double betaSlow = 1.0;            ///< yarn
    double attentionFactor = 0.0;     ///< yarn mscale; 0 = derive 0.1*ln(factor)+1
    double partialRotaryFactor = 1.0; ///< fraction of head_dim that is rotated
    /// Pairing of rotated dimensions. false: HF "rotate_half" layout, dimension i pairs with
    /// i + rotDim/2 (HF safetensors, GGUF qwen2/qwen3). true: adjacent pairs (2i, 2i+1) as in
    /// Meta's original layout (llama2.c checkpoints, GGUF llama whose q/k rows are permuted).
    bool interleaved = false;
};

enum class NormType { RMSNorm, LayerNorm };
/// How the residual stream combines the attention and MLP sub-layers.
enum class ResidualStyle {
    PreNorm,  ///< h += attn(norm1(h)); h += mlp(norm2(h))          (Llama, GPT-2, OPT, Bloom...)
    PostNorm, ///< h = norm1(h + attn(h)); h = norm2(h + mlp(h))     (OPT
              ///< do_layer_norm_before=false)
    Parallel, ///< h += attn(norm1(h)) + mlp(norm2(h) or norm1(h))   (GPT-NeoX, Falcon, StableLM)
};
enum class PosEmbedding { Rope, Learned, Alibi };
/// Layout of a fused q/k/v weight in the file (runtime always sees separate q, k, v).
enum class QkvLayout {
    Separate,   ///< q_proj / k_proj / v_proj
    Contiguous, ///< [q rows; k rows; v rows] (Phi-3, GPT-2, Falcon multi-query)
    PerHead,    ///< per head [q_h; k_h; v_h] (GPT-NeoX, Bloom, Falcon classic multi-head)
    PerKvGroup, ///< per KV head [q_g0..q_gk; k_g; v_g] (Falcon new decoder architecture)
};

struct ModelSpec {
    /// "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "mixtral", "opt",
    /// "gpt2", "gpt_neox", "stablelm", "falcon", "bloom", "mamba"
    std::string arch;
    std::string sourceFormat; ///< "safetensors", "gguf", "llama2c"
    int64_t dim = 0;          ///< hidden_size
    int64_t nLayers = 0;
    int64_t nHeads = 0;
    int64_t nKvHeads = 0;
    int64_t headDim = 0; ///< head_dim (defaults to dim / nHeads)
    int64_t hidden = 0;  ///< intermediate_size of the MLP
    int64_t vocab = 0;
    int64_t maxSeq = 0; ///< max_position_embeddings
    float normEps = 1e-5f;
    RopeConfig rope;
    bool tiedEmbeddings = false;
    bool attnBias = false;    ///< q/k/v biases (Qwen2)
    bool attnOutBias = false; ///< o_proj bias
    bool mlpBias = false;
    bool qkNorm = false;       ///< per-head RMSNorm on q and k (Qwen3)
    int64_t slidingWindow = 0; ///< 0 = none
    /// Per layer: true when the layer uses the sliding window (empty = all layers use it when
    /// slidingWindow > 0).
    std::vector<bool> slidingLayers;
    int32_t bosId = -1;
    std::vector<int32_t> eosIds;
    std::string hiddenAct = "silu"; ///< silu, gelu (erf), gelu_tanh, relu

    // ---- architecture variants (defaults = Llama) ----
    NormType norm = NormType::RMSNorm;
    bool normBias = false;    ///< LayerNorm weights come with biases
    bool normPlusOne = false; ///< Gemma: RMSNorm scales by (1 + w)
    bool gatedMlp = true;     ///< act(gate) * up -> down; false: act(up) -> down (fc1/fc2)
    ResidualStyle residual = ResidualStyle::PreNorm;
    bool sharedParallelNorm = false; ///< Parallel: one norm feeds attention and MLP (no mlp_norm)
    bool residualFromNorm = false;   ///< Bloom apply_residual_connection_post_layernorm
    bool postNorms = false; ///< Gemma2: attn_post_norm / mlp_post_norm on sub-layer outputs
    bool finalNorm = true;  ///< final_norm present (OPT post-LN models have none)
    PosEmbedding posEmbed = PosEmbedding::Rope;
    int64_t posOffset = 0;   ///< learned positions: row = position + offset (OPT: 2)
    bool embedNorm = false;  ///< Bloom: LayerNorm right after the embedding
    float embedScale = 1.0f; ///< Gemma: sqrt(dim)
    int64_t embedDim = 0;    ///< OPT word_embed_proj_dim (0 = dim; else embed_proj_in/out)
    QkvLayout qkvLayout = QkvLayout::Separate;
    bool gateUpFused = false;         ///< Phi-3 gate_up_proj
    bool conv1dWeights = false;       ///< GPT-2: linear weights stored [in, out] in the file
    float attnScale = 0.0f;           ///< score scale; 0 = 1/sqrt(headDim)
    bool scaleByInverseLayer = false; ///< GPT-2 scale_attn_by_inverse_layer_idx
    bool alibiScaled = false;         ///< Falcon: (q.k + alibi) * scale; Bloom: q.k * scale + alibi
    float attnSoftcap = 0.0f;         ///< Gemma2 attention logit soft-capping (0 = off)
    float finalSoftcap = 0.0f;        ///< Gemma2 final logit soft-capping (0 = off)
    /// q/k norm kind when qkNorm: RMSNorm over head_dim shared by heads (Qwen3), or LayerNorm per
    /// head with weights layers.N.attn.q_norm.H (StableLM).
    bool qkNormPerHead = false;

    // ---- mixture of experts (Mixtral) ----
    int64_t nExperts = 0; ///< 0 = dense MLP
    int64_t nExpertsPerTok = 0;
    bool normTopkProb = true;

    // ---- Mamba (selective state space) ----
    int64_t ssmInner = 0;  ///< intermediate_size (expand * dim)
    int64_t ssmState = 0;  ///< state_size N
    int64_t ssmConv = 0;   ///< conv_kernel
    int64_t ssmDtRank = 0; ///< time_step_rank
    bool ssmConvBias = true;
    bool ssmBias = false; ///< in_proj / out_proj biases

    bool isMamba() const { return arch == "mamba"; }
    bool isMoe() const { return nExperts > 0; }
    int64_t embeddingDim() const { return embedDim > 0 ? embedDim : dim; }

    bool layerIsSliding(int64_t layer) const {
        if (slidingWindow <= 0) return false;
        if (slidingLayers.empty()) return true;
        return layer < int64_t(slidingLayers.size()) && slidingLayers[size_t(layer)];
    }
};

} // namespace lcw
