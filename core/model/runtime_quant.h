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
/// Groups (Atom, Zhao et al. 2023; groupSize > 0, per token only): the channels that are not
/// outliers, in ascending channel order, are cut into groups of groupSize (the last one shorter),
/// and every group of every token gets its own s = clip * max |x[t, c]| / qmax over the group.
/// Outliers with outlierBits < 16 (Atom's mixed precision) are not passed through but quantised
/// together as one group per token at outlierBits (qmax = 2^(outlierBits-1) - 1, no clip), so
/// they never widen a normal group's scale. This is Atom's reorder-to-the-end followed by group
/// quantisation, without moving the data (the weights store the matching column order).
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
///   smoothing (WKVQuant's two-dimensional quantisation, token granularity): a row x is
///                        stored as Q((x − δ) / s) and read as s ⊙ deq + δ with static
///                        per-channel δ, s calibrated offline;
///   past-only (WKVQuant's POQ, token granularity): the query of token t attends to its own
///                        K/V in f32 and to the quantised K/V of tokens < t; the cache itself
///                        holds token t quantised for the later tokens.
/// The cache holds only the codes (bit-packed), the scales/minimums and the f32 tail; attention
/// reads dequantised rows. Keys are quantised after RoPE.
///
/// KV eviction policies (KvPolicySpec; core/runtime/kv_policy.h runs them): each KV head keeps
/// its own set of cached tokens and evicts after every token's attention step, as token-by-token
/// decoding would, whatever the batch:
///   h2o:   Heavy-Hitter Oracle (Zhang et al. 2023): every cached token accumulates the attention
///          it receives (summed over the query heads of its GQA group and over the queries);
///          the cache holds `budget` tokens: the `recent` most recent ones plus the heavy hitters
///          (largest accumulated attention) among the older ones. A query sees the cache plus
///          itself.
///   sinks: attention sinks + sliding window (StreamingLLM, Xiao et al. 2023): the first `sinks`
///          tokens and the last `window` positions (the query itself included).
///   mass:  dynamic pruning by attention mass (no learned parts): outside the `recent` window,
///          a head keeps the fewest tokens whose accumulated attention covers the fraction
///          `mass` of the accumulated attention of all its older tokens; the rest is evicted.
/// Budgets, windows and mass's recent window given as a fraction are fractions of the session's
/// context length (h2o's recent: of its budget). Keys keep the RoPE of their original positions (no
/// re-positioning inside the cache); ALiBi and sliding windows use the original positions too.
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
    int64_t groupSize = 0; ///< channels per group of the non-outlier channels (0: the whole row)
    int outlierBits = 16;  ///< 16: outliers pass through; < 16: one group of their own per token
    float topk = 1.0f;     ///< fraction of each token's entries kept by top-K sparsity (1: dense)
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
    /// WKVQuant past-only quantisation: a query attends to its own token's K/V in f32 and to
    /// every earlier token's quantised K/V (token granularity only).
    bool pastOnly = false;
    /// WKVQuant two-dimensional quantisation: static per-channel shift δ and scale s (one value
    /// per channel of the row, nKvHeads*headDim; empty: none) around the dynamic per-token
    /// quantiser Q: K̂ = s ⊙ Q((K − δ) / s) + δ (token granularity only).
    std::vector<float> kShift, kScale, vShift, vScale;
    bool active() const { return kBits < 16 || vBits < 16; }
    bool operator==(const KvQuantSpec&) const = default;
};

/// Online rotations of a rotated model (QuaRot, core/compress/rotation.h): orthogonal transforms
/// (core/runtime/hadamard.h, without random signs, seeds from rotationSeed(seed, purpose)) the
/// runtime applies to activations whose matching inverse is folded into the weights:
///   down: the MLP intermediate (mlp.down's input) of every dense block, T of size rows(mlp.up),
///         before the down product (and its input quantisation); mlp.down is stored as W·Tᵀ;
///   qk:   every head of q and k after RoPE (and q/k norms), T of size head_dim, so QKᵀ is
///         unchanged and the KV cache holds rotated keys.
struct OnlineRotation {
    bool down = false, qk = false;
    uint64_t seed = 0;
    bool active() const { return down || qk; }
    bool operator==(const OnlineRotation&) const = default;
};

enum class KvPolicyKind { None, H2O, Sinks, Mass };

struct KvPolicySpec {
    KvPolicyKind kind = KvPolicyKind::None;
    /// Token counts: a value in (0, 1) is a fraction of the context length, >= 1 is tokens.
    double budget = 0; ///< h2o: tokens the cache holds between steps
    /// h2o: the budget's most recent tokens (a fraction in [0, 1) of the budget, or tokens);
    /// mass: the recent window (a fraction of the context, or tokens)
    double recent = 0;
    double window = 0; ///< sinks: positions a query sees besides the sinks (itself included)
    int64_t sinks = 0; ///< sinks: first tokens always kept
    double mass = 1.0; ///< mass: fraction of the older tokens' accumulated attention kept
    bool active() const { return kind != KvPolicyKind::None; }
    bool operator==(const KvPolicySpec&) const = default;
    /// A count of tokens: v >= 1 is v (rounded down), v in (0, 1) is v * ctx (rounded down, at
    /// least 1), 0 is 0.
    static int64_t tokens(double v, int64_t ctx) {
        if (v >= 1) return int64_t(v);
        if (v <= 0) return 0;
        const int64_t t = int64_t(v * double(ctx));
        return t < 1 ? 1 : t;
    }
};

/// "h2o", "sinks", "mass", "full".
inline const char* kvPolicyName(KvPolicyKind k) {
    switch (k) {
    case KvPolicyKind::H2O:
        return "h2o";
    case KvPolicyKind::Sinks:
        return "sinks";
    case KvPolicyKind::Mass:
        return "mass";
    case KvPolicyKind::None:
        break;
    }
    return "full";
}

struct RuntimeQuant {
    /// By canonical linear name ("layers.3.attn.q"); only specs that quantise or sparsify
    /// (active() or sparse()) are stored.
    std::map<std::string, ActQuantSpec, std::less<>> activations;
    /// By block index; only active specs are stored.
    std::map<int64_t, KvQuantSpec> kv;
    /// Online transforms of a rotated model (inactive: none).
    OnlineRotation rotation;
    /// KV eviction policy by block index; only active specs are stored.
    std::map<int64_t, KvPolicySpec> kvPolicy;

    const ActQuantSpec* activation(std::string_view name) const {
        auto it = activations.find(name);
        return it == activations.end() ? nullptr : &it->second;
    }
    const KvQuantSpec* kvFor(int64_t layer) const {
        auto it = kv.find(layer);
        return it == kv.end() ? nullptr : &it->second;
    }
    const KvPolicySpec* kvPolicyFor(int64_t layer) const {
        auto it = kvPolicy.find(layer);
        return it == kvPolicy.end() ? nullptr : &it->second;
    }
    bool empty() const {
        return activations.empty() && kv.empty() && kvPolicy.empty() && !rotation.active();
    }
};

} // namespace lcw
