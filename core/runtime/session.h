#pragma once
/// \file
/// Inference session over a WeightSource: KV cache, batched prefill, decode, sampling, and
/// observer hooks at every linear input and at K/V (statistics and compression use them).
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/model/model.h"
#include "core/runtime/device.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace lcw {

/// Roles of the linear layers the observers see.
/// Non-gated MLPs (OPT, GPT-2, NeoX, Falcon, Bloom) report fc1 as Up and fc2 as Down; Mixtral's
/// experts report Gate/Up/Down with their expert names ("layers.N.mlp.experts.E.up") and see only
/// the tokens routed to them. Mamba's linears are SsmIn/SsmX/SsmDt/SsmOut.
enum class LinearRole {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    LmHead,
    Router,       ///< MoE router ("layers.N.mlp.router")
    EmbedProjIn,  ///< OPT project_in (layer -1)
    EmbedProjOut, ///< OPT project_out (layer = nLayers)
    SsmIn,
    SsmX,
    SsmDt,
    SsmOut ///< Mamba in_proj, x_proj, dt_proj, out_proj
};
/// "attn.q", ..., "mlp.down", "lm_head", "mlp.router", "embed_proj_in", "embed_proj_out",
/// "mixer.in_proj", "mixer.x_proj", "mixer.dt_proj", "mixer.out_proj"
const char* linearRoleName(LinearRole r);

/// Observers receive float32 row-major activations [nTokens, dim] for the tokens being processed.
/// Callbacks run on the thread that called forward(); pointers are valid only during the call.
class Observer {
public:
    virtual ~Observer() = default;
    /// Input x of a linear layer, before the product. `name` is the canonical weight name
    /// ("layers.3.attn.q", "lm_head"). Q, K and V share one input: each gets its own call.
    /// lm_head reports layer = nLayers and sees only the rows whose logits are computed (the last
    /// token unless all logits were asked for).
    virtual void onLinearInput(int layer, LinearRole role, const std::string& name, const float* x,
                               int64_t nTokens, int64_t dim) {
        (void)layer, (void)role, (void)name, (void)x, (void)nTokens, (void)dim;
    }
    /// K before RoPE, K after RoPE and V for the new tokens, each [nTokens, nKvHeads*headDim];
    /// pos0 is the position of the first of them.
    virtual void onKV(int layer, const float* kPreRope, const float* kPostRope, const float* v,
                      int64_t nTokens, int64_t nKvHeads, int64_t headDim, int64_t pos0) {
        (void)layer, (void)kPreRope, (void)kPostRope, (void)v, (void)nTokens, (void)nKvHeads,
            (void)headDim, (void)pos0;
    }
    /// Mixture of experts: the top-k experts chosen for each of the nTokens tokens and their
    /// (renormalised) weights, both [nTokens, topK], before the experts run.
    virtual void onExpertRouting(int layer, const int32_t* experts, const float* weights,
                                 int64_t nTokens, int64_t topK) {
        (void)layer, (void)experts, (void)weights, (void)nTokens, (void)topK;
    }
    /// Residual stream entering block `layer` [nTokens, dim] (after the embeddings for layer 0,
    /// equal to onResidual(layer - 1) otherwise). Transformer and Mamba runners.
    virtual void onBlockInput(int layer, const float* h, int64_t nTokens, int64_t dim) {
        (void)layer, (void)h, (void)nTokens, (void)dim;
    }
    /// Residual stream after block `layer` [nTokens, dim].
    virtual void onResidual(int layer, const float* h, int64_t nTokens, int64_t dim) {
        (void)layer, (void)h, (void)nTokens, (void)dim;
    }
};

struct SamplingParams {
    float temperature = 0.0f; ///< <= 0: greedy
    int topK = 0;             ///< 0: off
    float topP = 1.0f;        ///< 1: off
    uint64_t seed = 0;
};

enum class KvCacheType { F32, F16 };

struct SessionOptions {
    int64_t contextLength = 0; ///< KV cache capacity in tokens; 0 = spec().maxSeq
    int threads = 0;           ///< 0 = OpenMP default
    int64_t batchSize = 512;   ///< prefill processes at most this many tokens per forward
    /// >= 0: run only blocks 0..stopAfterLayer (calibration). onBlockInput is still reported for
    /// block stopAfterLayer + 1 (when it exists, without running it); no final norm, lm_head or
    /// logits: forward() returns empty logits. -1: off.
    int stopAfterLayer = -1;
    /// Float32 activations in every product (the error of the weights alone): GGUF block
    /// weights and lcw packed weights then multiply float activations instead of activations
    /// quantised to 8-bit blocks for integer dot products (kernels::linear's `exact`). A
    /// recipe's own activation quantisation (RuntimeQuant) still applies either way.
    bool exactActivations = false;
    /// Where the products run: "cpu", "vulkan", "vulkan:N" (runtime/device.h); empty: the
    /// process default (runtime::defaultDevice(), set by lcw-cli --device or the GUI). A Vulkan
    /// device that cannot be used gives the CPU and Session::deviceNote() says why.
    std::string device = {};
    /// With a Vulkan device: blocks 0..gpuLayers-1 on the GPU, the rest (and lm_head) on the
    /// CPU; -1 all on the GPU; -2 the process default (runtime::defaultGpuLayers()).
    int gpuLayers = -2;
    /// Element type of the KV cache of the layers a recipe gives no KV quantisation or KV
    /// policy: f32 (exact), or F16 (llama.cpp's default cache: half its memory and half the
    /// cache bytes a decode step reads; each value rounded to F16 as it is stored). F16 applies
    /// on the CPU; a Vulkan device keeps f32 (its attention reads an f32 cache).
    KvCacheType kvCache = KvCacheType::F32;
};

struct GenerateResult {
    std::vector<int32_t> ids; ///< prompt + generated
    int64_t promptTokens = 0;
    int64_t generatedTokens = 0;
    double prefillSeconds = 0, decodeSeconds = 0;
    bool stoppedAtEos = false;
    Status status = Status::Ok;
};

class Session {
public:
    explicit Session(const WeightSource& weights, SessionOptions opts = {});
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    /// Clears the KV cache (position back to 0).
    void reset();
    /// Tokens already in the cache.
    int64_t position() const;
    int64_t contextLength() const;

    /// Runs `ids` at the current position and appends them to the cache. Writes logits into
    /// `logits`: [ids.size(), vocab] when allLogits, else [1, vocab] for the last token.
    /// Throws ArgumentError on ids out of range or cache overflow; Error when the logits are not
    /// finite (naming the tensor that holds NaN/Inf when one does).
    void forward(std::span<const int32_t> ids, std::vector<float>& logits, bool allLogits = false);
    /// As forward(), but writes logits [ids.size() - firstLogit, vocab] for the tokens from index
    /// firstLogit on (perplexity needs only the scored half of a chunk; the lm_head product and
    /// its observers run only for those tokens).
    void forwardFrom(std::span<const int32_t> ids, std::vector<float>& logits, int64_t firstLogit);
    /// Perplexity's scoring: runs `ids` as forwardFrom(ids, ·, firstLogit) does and appends to
    /// logProbs (cleared first) log p(ids[i + 1] | ids[..i]) for i in [firstLogit, n - 1): the
    /// log-softmax of token i's logits at the next id (in double on the CPU). On a device that
    /// runs the forward resident the logits never leave the device: the log-softmax runs there
    /// and only these numbers come back. Errors as forwardFrom().
    void scoreFrom(std::span<const int32_t> ids, int64_t firstLogit, std::vector<double>& logProbs);

    /// Prefill `prompt` from a reset cache, then sample up to maxNewTokens, stopping at EOS.
    /// onToken(id) returning false stops early (status Cancelled).
    GenerateResult generate(const std::vector<int32_t>& prompt, int64_t maxNewTokens,
                            const SamplingParams& sampling,
                            const std::function<bool(int32_t)>& onToken = {});

    void addObserver(Observer* o);
    void removeObserver(Observer* o);

    const WeightSource& weights() const;

    /// The device the session's products run on (the CPU when a requested Vulkan device could
    /// not be used: deviceNote() then says why; empty otherwise).
    const runtime::DeviceInfo& device() const;
    const std::string& deviceNote() const;
    /// Weight products run on the device so far, and those it handed to the CPU kernels
    /// (formats without a shader yet); 0/0 on the CPU.
    int64_t deviceProducts() const;
    int64_t fallbackProducts() const;
    /// Device memory lcw holds on the session's device now (all sessions' weights, each
    /// uploaded once, and scratch); 0 on the CPU.
    uint64_t deviceMemoryBytes() const;
    /// Attention calls (one per layer and forward) run on the device so far.
    int64_t deviceAttention() const;
    /// Forward calls run wholly on the device so far (the resident transformer forward: hidden
    /// state, activations and KV cache stay in device memory; see README "GPU (Vulkan)").
    int64_t deviceForwards() const;
    /// Why forwards on a device ran per product instead of resident (the first reason; empty
    /// when they ran resident, nothing has run yet, or on the CPU).
    std::string residentNote() const;

    /// Mixture-of-experts models: tokens routed to each expert since the session was created (or
    /// since resetExpertTokenCounts()), [layer][expert]; empty for dense models. Experts that see
    /// no calibration tokens cannot be calibrated.
    std::vector<std::vector<int64_t>> expertTokenCounts() const;
    void resetExpertTokenCounts();

    /// Multiply-accumulates of the weight products run on the host since the session was
    /// created (a resident device forward's are not counted; see residentNote()): `dense` is
    /// every weight row × input column × token, `zeroInput` those whose input entry was exactly
    /// zero — the MACs a product that skips zero input columns would save (top-K activation
    /// sparsity, ReLU zeros, zeros of a fake-quantised input).
    struct MacCounts {
        int64_t dense = 0, zeroInput = 0;
    };
    MacCounts macCounts() const;

    /// Bytes the KV cache holds for the tokens cached now (quantised layers: codes, scales and
    /// the f32 tail; other layers: K and V in F16 or f32, kvCacheF16()). 0 for Mamba.
    uint64_t kvCacheBytes() const;
    /// What the same tokens would take in an all-f32 KV cache.
    uint64_t kvCacheBytesF32() const;
    /// Whether the plain KV cache holds F16 values (SessionOptions::kvCache F16 on the CPU);
    /// false for Mamba.
    bool kvCacheF16() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m;
};

/// Samples one id from logits[vocab] (greedy when temperature <= 0: lowest index among ties).
int32_t sampleToken(const float* logits, int64_t vocab, const SamplingParams& p,
                    std::mt19937_64& rng);

} // namespace lcw
