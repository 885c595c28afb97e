#pragma once
/// \file
/// What the runtime quantises while it runs (as opposed to weights, which a WeightSource hands
/// over already quantised): the input activations of linear layers and the KV cache.
/// A WeightSource that wants them returns a RuntimeQuant from runtimeQuant(); a compressed
/// overlay (core/compress) builds one from a recipe's `activation`, `outliers` and `kv` sections.
///
/// Activation fake-quantisation (at a linear's input, before the product; observers see the
/// input before it is quantised). Symmetric integers, qmax = 2^(bits-1) - 1:
///   per token (dynamic): s = clip * max_c |x[t, c]| / qmax, the max over the channels that are
///                        not outliers, computed for every row as it arrives;
///   per tensor (static): s = clip * absMax / qmax with absMax measured on calibration text;
///   x'[t, c] = s * clamp(rint(x[t, c] / s), -qmax, qmax), rint rounding half to even;
///   outlier channels (LLM.int8() style) are passed through unchanged and take no part in s.
///
/// Activation top-K sparsity (Q-Sparse, Wang et al. 2024; recipe section activation_sparsity),
/// applied at the same place before the quantisation above: per token t the
/// K = clamp(ceil(topk * dim), 1, dim) entries of largest |x[t, c]| are kept and the rest set to
/// zero (ties: the lower channel index is kept); the quantisation then sees the sparse row.
/// A spec with bits 16 and topk < 1 sparsifies without quantising.
///
/// KV cache quantisation (asymmetric integers, codes 0 .. 2^bits - 1, scale and minimum in f32):
///   token granularity:   every cached row (one token, nKvHeads*headDim values) is cut into
///                        groups of groupSize consecutive channels with one scale/min each; a
///                        row is quantised once, when it enters the cache;
///   channel granularity: blocks of groupSize consecutive tokens share one scale/min per channel
///                        (KIVI's per-channel keys); the tokens of an unfinished block stay in
///                        f32 until the block is full and is then quantised once.
/// The cache holds only the codes (bit-packed), the scales/minimums and the f32 tail; attention
/// reads dequantised rows. Keys are quantised after RoPE.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace lcw {

struct ActQuantSpec {
    int bits = 16;        ///< 16: no quantisation
    bool perToken = true; ///< dynamic per-token scale; false: static per-tensor (absMax)
    float clip = 1.0f;    ///< fraction of the abs-max that maps to qmax
    float absMax = 0.0f;  ///< static mode: calibrated abs-max of the input (outliers excluded)
    std::vector<int32_t> outlierChannels; ///< sorted input channels kept unquantised
    float topk = 1.0f; ///< fraction of each token's entries kept by top-K sparsity (1: dense)
    /// Quantises (bits < 16); sparse() is separate.
    bool active() const { return bits < 16; }
    bool sparse() const { return topk < 1.0f; }
    bool operator==(const ActQuantSpec&) const = default;
};

enum class KvGranularity { Token, Channel };

struct KvQuantSpec {
    int kBits = 16, vBits = 16; ///< 16: that half of the cache stays f32
    KvGranularity kGranularity = KvGranularity::Token;
    KvGranularity vGranularity = KvGranularity::Token;
    int64_t groupSize = 128; ///< channels per group (token) or tokens per block (channel)
    bool active() const { return kBits < 16 || vBits < 16; }
    bool operator==(const KvQuantSpec&) const = default;
};

struct RuntimeQuant {
    /// By canonical linear name ("layers.3.attn.q"); only specs that quantise or sparsify
    /// (active() or sparse()) are stored.
    std::map<std::string, ActQuantSpec, std::less<>> activations;
    /// By block index; only active specs are stored.
    std::map<int64_t, KvQuantSpec> kv;

    const ActQuantSpec* activation(std::string_view name) const {
        auto it = activations.find(name);
        return it == activations.end() ? nullptr : &it->second;
    }
    const KvQuantSpec* kvFor(int64_t layer) const {
        auto it = kv.find(layer);
        return it == kv.end() ? nullptr : &it->second;
    }
    bool empty() const { return activations.empty() && kv.empty(); }
};

} // namespace lcw
