#pragma once
/// \file
/// CPU kernels of the runtime (internal to core/runtime, exposed for tests and benchmarks):
/// linear layers over stored weights of any supported dtype, RMSNorm, RoPE tables and rotation,
/// causal attention over a float32 or F16 KV cache.
#include "core/common/tensor.h"
#include "core/model/model_spec.h"
#include "core/model/runtime_quant.h"

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lcw::kernels {

/// Instruction-set level of the kernels, ordered. Auto picks the best the CPU supports:
/// Avx512 (AVX-512 F/BW/VL/DQ, using VNNI and BF16 where present), Avx2 (AVX2+FMA+F16C, AVX-VNNI
/// where present), else Generic (portable C++, named "portable"). LCW_ISA=portable|avx2|avx512
/// in the environment caps the automatic choice; tests force each supported level in turn.
enum class Isa { Auto, Generic, Avx2, Avx512 };

/// Allocator for 64-byte aligned buffers (vector loads then never straddle cache lines).
template <class T> struct AlignedAllocator {
    using value_type = T;
    AlignedAllocator() = default;
    template <class U> AlignedAllocator(const AlignedAllocator<U>&) {}
    T* allocate(size_t n) {
        return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
    }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U> bool operator==(const AlignedAllocator<U>&) const { return true; }
};
using FloatBuffer = std::vector<float, AlignedAllocator<float>>;
/// Forces a level (Auto: back to the automatic choice); throws UnsupportedError when the CPU
/// lacks it.
void setIsa(Isa isa);
/// The instruction set the kernels actually use now (never Auto).
Isa activeIsa();
/// "auto", "portable", "avx2", "avx512".
const char* isaName(Isa isa);
/// Parses isaName() output ("generic" is accepted for "portable"); nullopt otherwise.
std::optional<Isa> isaFromName(std::string_view name);
/// Whether this CPU can run the level (Auto and Generic: always).
bool isaSupported(Isa isa);
/// Every level this CPU runs, lowest first (Generic always).
std::vector<Isa> supportedIsas();

/// Y[t, o] = sum_i X[t, i] * W[o, i] for t < nTok, o < nRows, i < n, with row strides ldx, ldw,
/// ldy (elements). Float weights already in memory; single-threaded.
void gemmNT(const float* w, int64_t ldw, int64_t nRows, const float* x, int64_t ldx, int64_t nTok,
            float* y, int64_t ldy, int64_t n);

/// C[M, N] = A[M, K] * B[K, N] (row-major, leading dimensions lda, ldb, ldc); single-threaded.
void gemmNN(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
            int64_t M, int64_t N, int64_t K);

/// Converts rows [r0, r0+nRows) of a stored weight to float32 (ld = cols()).
void dequantizeRows(const TensorView& w, int64_t r0, int64_t nRows, float* dst);

/// y[t*ldy + o] = sum_i x[t*ldx + i] * W[o, i] (+ bias[o]) for t < nTok and every output row o
/// of the [out, in] weight `w` (any float-like dtype, used in place). Parallel over row tiles
/// with OpenMP (`threads` <= 0: the OpenMP default). GGUF block types multiply with activations
/// quantised to 8-bit blocks as llama.cpp does (qdot.h); `exact` keeps float32 activations
/// (dequantised weight tiles times float x: the error of the weights alone).
void linear(const TensorView& w, const float* x, int64_t ldx, int64_t nTok, float* y, int64_t ldy,
            const float* bias, int threads, bool exact = false);

class PackedLinear;
/// One weight of a linearBatch() call: y[t*ldy + o] = x[t] . W[o] (+ bias[o]). The weight is a
/// stored tensor `w` or an lcw packed weight `packed` (packed_linear.h; then `act`, when set,
/// quantises its input activations as the recipe asks: integer products where possible).
struct LinearJob {
    const TensorView* w = nullptr;
    float* y = nullptr;
    int64_t ldy = 0;
    const float* bias = nullptr;
    const PackedLinear* packed = nullptr;
    const ActQuantSpec* act = nullptr;
    /// w's rows repacked by repackRows (qdot.h), or null: the product reads them instead of w's
    /// bytes where the active kernel has a repacked form (same result bit for bit as the stored
    /// rows' kernel, or for Q4_K / Q5_K / Q6_K as the portable kernel).
    const std::byte* repacked = nullptr;
};
/// Several weights with the same input (q/k/v, gate/up) in one parallel region (at most 7).
void linearBatch(std::span<const LinearJob> jobs, const float* x, int64_t ldx, int64_t nTok,
                 int threads, bool exact = false);

/// out[t] = x[t] * w / sqrt(mean(x[t]^2) + eps), for nTok rows of length n (in place allowed).
void rmsNorm(const float* x, const float* w, float* out, int64_t nTok, int64_t n, int64_t ld,
             float eps);

/// LayerNorm: out[t] = (x[t] - mean) / sqrt(var + eps) * w (+ b) (in place allowed; b may be null).
void layerNorm(const float* x, const float* w, const float* b, float* out, int64_t nTok, int64_t n,
               int64_t ld, float eps);

enum class Activation { Silu, Gelu, GeluTanh, Relu };
/// "silu", "gelu", "gelu_tanh", "relu" (ModelSpec::hiddenAct); throws UnsupportedError otherwise.
Activation activationFromName(const std::string& name);
/// x[i] = act(x[i]) for i < n.
void activate(Activation a, float* x, int64_t n, int threads);
/// g[i] = act(g[i]) * u[i] for i < n (gated MLPs).
void activateGated(Activation a, float* g, const float* u, int64_t n, int threads);

/// ALiBi slopes of Press et al. as Bloom/Falcon compute them: for the largest power of two
/// p <= nHeads, slope_h = 2^(-8(h+1)/p); the remaining heads take the odd powers of the
/// 2p-head sequence.
std::vector<float> alibiSlopes(int64_t nHeads);

/// Options of attentionEx beyond the plain causal softmax(q.k / sqrt(d)).
struct AttentionOptions {
    int64_t window = 0; ///< sliding window (0 = none)
    float scale = 0;    ///< score scale; 0 = 1/sqrt(headDim)
    float softcap = 0;  ///< score = softcap * tanh(score / softcap) after scaling (0 = off)
    const float* alibi = nullptr;  ///< per-head slopes: score += slope * (key pos - query pos)
    bool alibiBeforeScale = false; ///< Falcon: (q.k + alibi) * scale instead of q.k*scale + alibi
};

/// Per-frequency inverse frequencies of a RoPE configuration (rotDim/2 values, double) and the
/// attention scale applied to cos/sin (YaRN mscale; 1 otherwise). `maxSeq` is the model's
/// max_position_embeddings (used when RopeConfig::originalMaxPositions is 0); `seqLen` is the
/// current sequence length (dynamic NTK grows theta when it exceeds the original maximum).
struct RopeFreqs {
    int64_t rotDim = 0;
    std::vector<double> invFreq;
    double attnScale = 1.0;
};
RopeFreqs ropeFrequencies(const RopeConfig& rope, int64_t headDim, int64_t maxSeq, int64_t seqLen);

/// cos/sin tables [n, rotDim/2] for positions pos0..pos0+n-1 (scaled by attnScale).
void ropeTables(const RopeFreqs& f, int64_t pos0, int64_t n, float* cosOut, float* sinOut);

/// Rotates the first rotDim dimensions of each of nHeads heads of nTok rows (row stride ld) in
/// place. interleaved: pairs (2i, 2i+1); else pairs (i, i + rotDim/2) (HF rotate_half).
void applyRope(float* x, int64_t nTok, int64_t ld, int64_t nHeads, int64_t headDim, int64_t rotDim,
               bool interleaved, const float* cosT, const float* sinT);

/// Causal attention of nTok queries at positions pos0.. against the cache rows 0..pos0+nTok-1.
/// q: [nTok, nHeads*headDim] (ld ldq); kCache/vCache: [ctx, nKvHeads*headDim];
/// out: [nTok, nHeads*headDim] (ld ldo). window > 0: each query sees only the last `window`
/// positions (itself included). Flash-style (online softmax over 128-key chunks, no score row over
/// the context); parallel over KV heads and query blocks, and over the key range when there are
/// few queries (decode). A query's output is bit-identical whatever the batch it is part of and
/// the thread count (at one instruction-set level). Throws ArgumentError unless nHeads is a
/// multiple of nKvHeads.
void attention(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
               int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
               int64_t headDim, int64_t window, int threads);

/// attention() with soft-capping, ALiBi and a custom scale.
void attentionEx(const float* q, int64_t ldq, const float* kCache, const float* vCache, float* out,
                 int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads, int64_t nKvHeads,
                 int64_t headDim, const AttentionOptions& opt, int threads);

/// attentionEx over a KV cache of IEEE half-precision values (F16: SessionOptions::kvCache, as
/// llama.cpp's default cache). Each value is widened exactly
/// as it is loaded, so the output is attentionEx's on the widened cache, bit for bit, at every
/// instruction-set level.
void attentionExF16(const float* q, int64_t ldq, const uint16_t* kCache, const uint16_t* vCache,
                    float* out, int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads,
                    int64_t nKvHeads, int64_t headDim, const AttentionOptions& opt, int threads);

/// dst[i] = src[i] rounded to F16 (to nearest even) for i < n, the rows an F16 KV cache stores:
/// values beyond +-65504 saturate to +-65504 (a cache holds no infinities), NaN stays NaN. The
/// same bits at every instruction-set level.
void convertToF16Saturated(const float* src, uint16_t* dst, int64_t n);

/// Largest working memory (bytes) one attention call has held per thread since the last reset:
/// per-thread scratch (O(key chunk x rows per task), independent of the context length) plus, for
/// a decode split over threads, the partial states (O(context / 512 x heads x headDim)).
size_t attentionScratchPeak();
void resetAttentionScratchPeak();

/// Numerically stable log(softmax(logits)[target]) in double.
double logSoftmaxAt(const float* logits, int64_t vocab, int64_t target);

} // namespace lcw::kernels
