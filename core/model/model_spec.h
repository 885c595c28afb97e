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
    double factor = 1.0;               ///< linear/dynamic/llama3/yarn scaling factor
    int64_t originalMaxPositions = 0;  ///< llama3/yarn/dynamic: original_max_position_embeddings
    double lowFreqFactor = 1.0;        ///< llama3
    double highFreqFactor = 4.0;       ///< llama3
    double betaFast = 32.0;            ///< yarn
    double betaSlow = 1.0;             ///< yarn
    double attentionFactor = 0.0;      ///< yarn mscale; 0 = derive 0.1*ln(factor)+1
    double partialRotaryFactor = 1.0;  ///< fraction of head_dim that is rotated
    /// Pairing of rotated dimensions. false: HF "rotate_half" layout, dimension i pairs with
    /// i + rotDim/2 (HF safetensors, GGUF qwen2/qwen3). true: adjacent pairs (2i, 2i+1) as in
    /// Meta's original layout (llama2.c checkpoints, GGUF llama whose q/k rows are permuted).
    bool interleaved = false;
};

struct ModelSpec {
    std::string arch;          ///< "llama", "mistral", "qwen2", "qwen3"
    std::string sourceFormat;  ///< "safetensors", "gguf", "llama2c"
    int64_t dim = 0;           ///< hidden_size
    int64_t nLayers = 0;
    int64_t nHeads = 0;
    int64_t nKvHeads = 0;
    int64_t headDim = 0;       ///< head_dim (defaults to dim / nHeads)
    int64_t hidden = 0;        ///< intermediate_size of the MLP
    int64_t vocab = 0;
    int64_t maxSeq = 0;        ///< max_position_embeddings
    float normEps = 1e-5f;
    RopeConfig rope;
    bool tiedEmbeddings = false;
    bool attnBias = false;     ///< q/k/v biases (Qwen2)
    bool attnOutBias = false;  ///< o_proj bias
    bool mlpBias = false;
    bool qkNorm = false;       ///< per-head RMSNorm on q and k (Qwen3)
    int64_t slidingWindow = 0; ///< 0 = none
    /// Per layer: true when the layer uses the sliding window (empty = all layers use it when
    /// slidingWindow > 0).
    std::vector<bool> slidingLayers;
    int32_t bosId = -1;
    std::vector<int32_t> eosIds;
    std::string hiddenAct = "silu";

    bool layerIsSliding(int64_t layer) const {
        if (slidingWindow <= 0) return false;
        if (slidingLayers.empty()) return true;
        return layer < int64_t(slidingLayers.size()) && slidingLayers[size_t(layer)];
    }
};

} // namespace lcw
