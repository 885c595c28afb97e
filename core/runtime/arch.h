#pragma once
/// \file
/// Internal to core/runtime: one forward implementation per architecture family behind a common
/// interface. Session owns the position, batching, sampling and observers; a runner owns the
/// weights it bound, its caches (KV or recurrent state) and the scratch of one batch.
///   arch_transformer.cpp  attention families (Llama, Mistral, Qwen, Gemma/Gemma2, Phi-3,
///                         Mixtral, OPT, GPT-2, GPT-NeoX, StableLM, Falcon, Bloom)
///   arch_mamba.cpp        Mamba selective state-space blocks
#include "core/model/model.h"
#include "core/runtime/activation_sparsity.h"
#include "core/runtime/backend.h"
#include "core/runtime/cancel.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"

#include <memory>
#include <string>
#include <vector>

namespace lcw::runtime {

struct RunEnv {
    const WeightSource& w;
    const ModelSpec& s;
    int threads = 0;
    int64_t ctx = 0;   ///< cache capacity in tokens
    int64_t batch = 0; ///< most tokens per run() call
    const std::vector<Observer*>& observers;
    int stopAfterLayer = -1;    ///< SessionOptions::stopAfterLayer
    bool exact = false;         ///< SessionOptions::exactActivations (every linear's `exact`)
    Backend* backend = nullptr; ///< where the weight products run (never null)
    /// The block being run: -1 before the first (embeddings), nLayers after the last (lm_head);
    /// the backend splits GPU and CPU layers by it.
    mutable int layer = -1;
    /// Counts the MACs of every product run here (null: not counted).
    MacCounter* macs = nullptr;
    /// The plain KV cache (layers without a recipe's KV quantisation or policy) holds F16 values
    /// (SessionOptions::kvCache F16, with the CPU backend), else f32.
    bool kvF16 = false;

    /// The weight products of one call (kernels::linearBatch's contract) on the backend.
    void linear(std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
                int64_t n) const {
        if (macs) countMacs(*macs, jobs, x, ldx, n);
        backend->linearBatch(jobs, x, ldx, n, threads, exact, layer);
    }

    /// Reports the block input of `layer`; returns false when the block must not run.
    /// Throws Cancelled when the thread's CancelScope says stop (checked before every block).
    bool enterBlock(int64_t layer, const float* h, int64_t n) const {
        checkCancel();
        this->layer = int(layer);
        for (Observer* o : observers) o->onBlockInput(int(layer), h, n, s.dim);
        return stopAfterLayer < 0 || layer <= stopAfterLayer;
    }

    void notifyLinear(int layer, LinearRole role, const std::string& name, const float* x,
                      int64_t n, int64_t dim) const {
        for (Observer* o : observers) o->onLinearInput(layer, role, name, x, n, dim);
    }
};

class ArchRunner {
public:
    virtual ~ArchRunner() = default;
    /// Processes n tokens at positions pos0.. (pos0 == 0 starts a fresh sequence); writes the
    /// logits of tokens logitsFrom..n-1 to logitsOut [n - logitsFrom, vocab].
    virtual void run(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                     float* logitsOut) = 0;
    /// run() for scoring (perplexity): targets [n - logitsFrom] are the ids whose
    /// log-probabilities the caller wants from the logits rows (-1: none). A runner that keeps
    /// the logits on a device writes logProbs [n - logitsFrom] as Backend::transformerForward
    /// does (NaN for a row with a non-finite logit) and returns false; otherwise it writes
    /// logitsOut as run() and returns true (the caller scores them).
    virtual bool runScored(const int32_t* ids, int64_t n, int64_t pos0, int64_t logitsFrom,
                           float* logitsOut, const int32_t* targets, float* logProbs) {
        (void)targets, (void)logProbs;
        run(ids, n, pos0, logitsFrom, logitsOut);
        return true;
    }
    /// Mixture of experts: tokens routed to each expert so far, [layer][expert]; empty otherwise.
    virtual std::vector<std::vector<int64_t>> expertTokenCounts() const { return {}; }
    virtual void resetExpertTokenCounts() {}
    /// Bytes the KV cache uses for `tokens` cached tokens (asF32: if it were all f32).
    virtual uint64_t kvCacheBytes(int64_t tokens, bool asF32) const {
        (void)tokens, (void)asF32;
        return 0;
    }
};

std::unique_ptr<ArchRunner> makeTransformerRunner(const RunEnv& env);
std::unique_ptr<ArchRunner> makeMambaRunner(const RunEnv& env);

// ---- helpers shared by the runners (arch_common.cpp) ----
const TensorView& checkTensor(const TensorView& t, const std::string& name,
                              const std::vector<int64_t>& shape);
const TensorView& requireTensor(const WeightSource& w, const std::string& name,
                                const std::vector<int64_t>& shape);

/// A 2-D weight as the runner multiplies it: lcw packed codes (WeightSource::packedLinear) or a
/// stored tensor of any float-like dtype; both null when absent.
struct Weight {
    const TensorView* t = nullptr;
    const kernels::PackedLinear* p = nullptr;
    explicit operator bool() const { return t || p; }
    int64_t rows() const;
    int64_t cols() const;
    /// Rows [r0, r0 + n) as float32 into dst [n, cols] (embedding lookups).
    void rowsF32(int64_t r0, int64_t n, float* dst) const;
    /// A linearBatch job for this weight. `act`: the recipe's quantisation of the input, which
    /// a packed weight applies inside its product (a stored weight's input must be fake-quantised
    /// by the caller instead, so `act` is dropped for it).
    kernels::LinearJob job(float* y, int64_t ldy, const float* bias,
                           const ActQuantSpec* act = nullptr) const;
};
/// The weight `name`: packed when the source offers it (find() is then not called, so nothing
/// is materialised), else the stored tensor.
Weight findWeight(const WeightSource& w, const std::string& name);
/// Throws (naming `label`) unless `wt` is present with shape [rows, cols] and, when stored, a
/// dtype the runtime multiplies.
const Weight& checkWeight(const Weight& wt, const std::string& label, int64_t rows, int64_t cols);
/// findWeight + checkWeight.
Weight requireWeight(const WeightSource& w, const std::string& name, int64_t rows, int64_t cols);
std::vector<float> toFloat(const TensorView& t);
/// Empty when absent; throws when present with another size.
std::vector<float> optionalVector(const WeightSource& w, const std::string& name, int64_t n);
inline const float* ptrOrNull(const std::vector<float>& v) {
    return v.empty() ? nullptr : v.data();
}

/// A normalisation layer bound to float weights (RMSNorm, Gemma's (1+w) folded in, or LayerNorm).
struct Norm {
    std::vector<float> w, b;
    bool layer = false;
    float eps = 1e-5f;
    bool present() const { return !w.empty(); }
    void apply(const float* x, float* out, int64_t nTok, int64_t n, int64_t ld) const {
        if (layer)
            kernels::layerNorm(x, w.data(), ptrOrNull(b), out, nTok, n, ld, eps);
        else {
            kernels::rmsNorm(x, w.data(), out, nTok, n, ld, eps);
            if (!b.empty())
                for (int64_t t = 0; t < nTok; ++t)
                    for (int64_t i = 0; i < n; ++i) out[t * ld + i] += b[size_t(i)];
        }
    }
};
/// Binds norm `name` ([n], + name.bias [n] whenever present: LayerNorm biases, or an RMSNorm
/// bias added after the scale, e.g. OmniQuant's folded LET shift) following the spec.
Norm bindNorm(const WeightSource& w, const ModelSpec& s, const std::string& name, int64_t n);

} // namespace lcw::runtime
