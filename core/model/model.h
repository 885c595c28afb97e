#pragma once
/// \file
/// A loaded model: spec, tokenizer and memory-mapped tensors under canonical names.
///
/// Canonical tensor names (whatever the file calls them; TensorView::fileName keeps the original):
///   embed, final_norm, lm_head (absent when tied: lmHead() then returns embed),
///   layers.N.attn_norm, layers.N.mlp_norm,
///   layers.N.attn.q, layers.N.attn.k, layers.N.attn.v, layers.N.attn.o   (weights [out, in])
///   layers.N.attn.q.bias, .k.bias, .v.bias, .o.bias                        (when present)
///   layers.N.attn.q_norm, layers.N.attn.k_norm                             (Qwen3, [head_dim])
///   layers.N.mlp.gate, layers.N.mlp.up, layers.N.mlp.down
///   layers.N.attn_norm.bias, layers.N.mlp_norm.bias, final_norm.bias  (LayerNorm families)
///   layers.N.attn_post_norm, layers.N.mlp_post_norm                     (Gemma2)
///   layers.N.attn.q_norm.H, layers.N.attn.k_norm.H                      (StableLM, per head)
///   layers.N.mlp.up / mlp.down are fc1 / fc2 of non-gated MLPs (OPT, GPT-2, NeoX, Falcon, Bloom)
///   layers.N.mlp.router, layers.N.mlp.experts.E.gate|up|down            (Mixtral)
///   pos_embed (learned positions), embed_norm (Bloom), embed_proj_in/out (OPT)
///   Mamba: layers.N.norm, layers.N.mixer.in_proj, .conv1d, .conv1d.bias, .x_proj, .dt_proj,
///          .dt_proj.bias, .out_proj, .A_log, .D
/// Fused file tensors are exposed as their logical parts: Phi-3 qkv_proj / gate_up_proj and
/// GPT-2 c_attn as zero-copy row slices (q/k/v, gate/up), per-head interleaved qkv (GPT-NeoX,
/// Bloom, Falcon) as de-interleaved copies; fileName keeps the fused name. GPT-2's Conv1D weights
/// ([in, out] in the file) are transposed once at load into owned [out, in] copies so that every
/// consumer (runtime, statistics, quantizers) sees one layout (fileTransposed says so).
/// Tensors lcw does not use (e.g. rotary inv_freq buffers) are kept under "extra.<fileName>".
///
/// Conventions the runtime accepts from any WeightSource (compressed overlays, pruned models):
///   Low rank: when NAME is absent but NAME.lowrank_a [r, in] and NAME.lowrank_b [out, r] exist for
///   a dense block linear (attn.q/k/v/o, mlp.gate/up/down), the runtime computes y = B (A x) (+
///   NAME.bias), two products. Not for MoE experts, the router, embed_proj or lm_head.
///   Per-block shapes (structured pruning): block N has rows(attn.q)/head_dim query heads,
///   rows(attn.k)/head_dim KV heads (attn.v alike, attn.o [dim, heads*head_dim]) and rows(mlp.up)
///   MLP channels (mlp.gate alike, mlp.down [dim, channels]), each between 1 and the spec's value.
///   Query head h uses KV head h / (heads / kv heads), so removing whole GQA groups (a KV head and
///   its query heads) keeps the other heads exact. Not with ALiBi or per-head q/k norms (StableLM),
///   nor for MoE experts or Mamba.
#include "core/common/progress.h"
#include "core/common/tensor.h"
#include "core/model/model_spec.h"
#include "core/model/runtime_quant.h"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lcw {

class Tokenizer;
class MappedFile;
namespace kernels {
class PackedLinear;
}

/// Anything that hands the runtime weights by canonical name: a Model, or (later) a compressed
/// overlay that replaces some tensors and forwards the rest to its base.
class WeightSource {
public:
    virtual ~WeightSource() = default;
    virtual const ModelSpec& spec() const = 0;
    /// nullptr when absent.
    virtual const TensorView* find(std::string_view canonical) const = 0;
    /// Throws Error naming the tensor when absent.
    const TensorView& get(std::string_view canonical) const;
    /// The output projection (lm_head, or embed when tied).
    const TensorView& lmHead() const;
    /// Activation and KV-cache quantisation the runtime applies while it runs (runtime_quant.h);
    /// nullptr: none.
    virtual const RuntimeQuant* runtimeQuant() const { return nullptr; }
    /// The packed runtime form (core/runtime/cpu/packed_linear.h) of a 2-D weight the source holds as
    /// lcw codes (int2..8 / NF4 / FP8 groups, optionally pruned), or nullptr: then find() is the
    /// weight. The runtime asks this first and, when it gets one, multiplies with it and never
    /// calls find(canonical), which may have to materialise float32 values. Valid as long as
    /// the source and the tensor are unchanged.
    virtual const kernels::PackedLinear* packedLinear(std::string_view canonical) const {
        (void)canonical;
        return nullptr;
    }
    /// For error messages: what the weights were loaded from (a model file or folder, "MODEL
    /// with overlay DIR"); empty when unknown.
    virtual std::string describeOrigin() const { return {}; }
    /// For error messages (slow: reads every weight): the first NaN / Inf weight as
    /// "<file>: tensor 'x' (layers.0.attn.q) has NaN at element 17", or nullopt when all are
    /// finite or the source cannot tell.
    virtual std::optional<std::string> firstNonFiniteWeight() const { return std::nullopt; }
};

struct LoadOptions {
    /// Explicit tokenizer file (llama2.c tokenizer.bin or tokenizer.json); empty = look beside
    /// the model.
    std::string tokenizerPath;
    /// Fail when no tokenizer is found (otherwise the model loads without one and a warning).
    bool requireTokenizer = false;
};

class Model final : public WeightSource {
public:
    /// Opens an HF folder (config.json + *.safetensors [+ index] + tokenizer.json), a .gguf file,
    /// or a llama2.c .bin checkpoint. Validates everything before use. Throws FormatError /
    /// UnsupportedError with the file and the problem.
    static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& opts = {});

    ~Model() override;

    const ModelSpec& spec() const override { return m_spec; }
    const TensorView* find(std::string_view canonical) const override;

    /// All tensors in file order.
    const std::vector<TensorView>& tensors() const { return m_tensors; }
    bool hasTokenizer() const { return m_tokenizer != nullptr || m_sharedTokenizer != nullptr; }
    /// Throws Error when the model has no tokenizer.
    const Tokenizer& tokenizer() const;
    /// What the user opened.
    const std::string& path() const { return m_path; }
    /// Non-fatal oddities found while loading.
    const std::vector<std::string>& warnings() const { return m_warnings; }
    /// Total elements of all tensors (tied embeddings counted once).
    int64_t parameterCount() const;
    /// Total stored bytes of all tensors (a dequantised tensor counts the bytes of its quantised
    /// form in the file, see tensorStoredBytes()).
    uint64_t storedBytes() const;
    /// Stored bytes of one tensor: its nbytes, or for a weight dequantised at load (GPTQ / AWQ /
    /// compressed-tensors checkpoints) its share of the quantised tensors in the file (codes,
    /// scales, zero points, g_idx, masks).
    uint64_t tensorStoredBytes(const TensorView& t) const;
    /// The quantisation scheme a weight was stored with in the file ("int4 asym group 128",
    /// "gptq int4 sym group 128 desc_act", "fp8 e4m3 channel"); empty when the file stores
    /// it in a plain dtype.
    std::string tensorScheme(std::string_view canonical) const;
    /// One line on the file's quantisation ("compressed-tensors pack-quantized: int4 asym group
    /// 128 (154 linears), 2 ignored"); empty for unquantised files.
    const std::string& quantizationSummary() const { return m_quantSummary; }
    /// The file's quantisation method ("compressed-tensors", "gptq", "awq"); empty when none.
    const std::string& quantizationMethod() const { return m_quantMethod; }
    /// Scans every float tensor for NaN/Inf; returns the first offending tensor's description
    /// ("<file>: tensor 'x' (layers.0.attn.q) has NaN at element 17"), or nullopt when all finite.
    std::optional<std::string> findNonFinite(Progress* progress = nullptr) const;
    std::string describeOrigin() const override { return m_path; }
    std::optional<std::string> firstNonFiniteWeight() const override { return findNonFinite(); }
    /// The input-activation quantisation the file declares and lcw applies as vLLM runs it
    /// (compressed-tensors int8 dynamic per-token or static per-tensor input_activations);
    /// nullptr when there is none.
    const RuntimeQuant* runtimeQuant() const override {
        return m_runtime.empty() ? nullptr : &m_runtime;
    }

    // ---- for loaders (core/model and core/io only) ----
    Model();
    ModelSpec& mutableSpec() { return m_spec; }
    void addTensor(TensorView t);
    void keepAlive(std::shared_ptr<const MappedFile> f);
    /// Keeps `bytes` for the model's lifetime (transposed / de-interleaved copies); returns its
    /// data.
    const std::byte* ownBuffer(std::vector<std::byte> bytes);
    void setTokenizer(std::unique_ptr<Tokenizer> t);
    /// Uses `other`'s tokenizer (none when it has none); `other` must outlive this model. For
    /// models derived in memory from a loaded one (a rotated copy, core/compress/rotation.h).
    void shareTokenizer(const Model& other) {
        m_sharedTokenizer = other.hasTokenizer() ? &other.tokenizer() : nullptr;
    }
    void setPath(std::string p) { m_path = std::move(p); }
    void addWarning(std::string w) { m_warnings.push_back(std::move(w)); }
    /// Records the stored scheme of a (dequantised) tensor and its bytes in the file.
    void setTensorScheme(const std::string& canonical, std::string scheme);
    void setTensorStoredBytes(const std::string& canonical, uint64_t bytes);
    void setRuntimeQuant(RuntimeQuant rq) { m_runtime = std::move(rq); }
    void setQuantization(std::string method, std::string summary) {
        m_quantMethod = std::move(method);
        m_quantSummary = std::move(summary);
    }

private:
    ModelSpec m_spec;
    std::vector<TensorView> m_tensors;
    std::unordered_map<std::string, size_t> m_index;
    std::vector<std::shared_ptr<const MappedFile>> m_files;
    std::vector<std::unique_ptr<std::vector<std::byte>>> m_buffers;
    std::unique_ptr<Tokenizer> m_tokenizer;
    const Tokenizer* m_sharedTokenizer = nullptr;
    std::string m_path;
    std::vector<std::string> m_warnings;
    std::unordered_map<std::string, std::string> m_schemes;
    std::unordered_map<std::string, uint64_t> m_storedBytes;
    std::string m_quantMethod, m_quantSummary;
    RuntimeQuant m_runtime;
};

} // namespace lcw
