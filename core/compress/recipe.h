#pragma once
/// \file
/// Compression recipes: a versioned JSON document (docs/recipe-format.md) holding an ordered list
/// of rules. Each rule selects layers by canonical name (globs, or "re:" regexes) and sets weight,
/// activation, KV-cache and outlier settings. Later rules override earlier ones field by field.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/lowrank.h"
#include "core/compress/sparsity.h"
#include "core/compress/structured.h"
#include "core/model/runtime_quant.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lcw {
class Model;
}

namespace lcw::compress {

/// A recipe problem. what() reads "recipe rule 2, field weight.bits: ..." (or "recipe, field
/// name: ..." for top-level fields); rule() is -1 for top-level problems.
class RecipeError : public ArgumentError {
public:
    RecipeError(int rule, std::string field, const std::string& problem);
    int rule() const { return m_rule; }
    const std::string& field() const { return m_field; }

private:
    int m_rule;
    std::string m_field;
};

enum class WeightFormat { Int, Fp8E4M3, Nf4 };
enum class Granularity { Tensor, Channel, Group };
/// Rtn works for every format; Gptq/Awq/OmniQuant need calibration data. The others are GGUF's
/// weight types, quantised bit-identically to ggml (their own bits, blocks and f16 scales):
/// Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 and IQ4_NL in blocks of 32; the k-quants Q2_K..Q6_K and IQ4_XS in
/// super-blocks of 256; F16 (plain half floats: llama.cpp's last fallback). New values are
/// appended (overlays store the names, not the numbers).
enum class WeightMethod {
    Rtn,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Gptq,
    Awq,
    OmniQuant,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
    F16,
    // Compact lcw formats (compact_formats.h): stored in their own layout, multiplied by the
    // runtime through dequantised float32 values.
    SqueezeLlm, ///< per-row non-uniform code book (weighted k-means) + sparse f16 outliers
    Dgq,        ///< int codes per group, group scales as 8-bit codes × an f16 channel scale
    Slim,       ///< salience-driven 2/3/4-bit column groups at an average bit target
    /// EfficientQAT Block-AP (+ E2E-QP): int grids whose weights, steps and zero points are
    /// trained on the block output (efficientqat.h); stored like RTN.
    EfficientQat,
};
/// Number of WeightMethod values (for iterating over them).
inline constexpr int kWeightMethodCount = int(WeightMethod::EfficientQat) + 1;

const char* weightFormatName(WeightFormat f); // "int", "fp8_e4m3", "nf4"
const char* granularityName(Granularity g);   // "tensor", "channel", "group"
/// "rtn", "q8_0", "q4_k", "iq4_nl", "f16", ... (the recipe spelling).
const char* weightMethodName(WeightMethod m);
/// Parses weightMethodName() output; nullopt when unknown.
std::optional<WeightMethod> weightMethodFromName(std::string_view name);
/// The GGUF weight types: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k..q6_k, iq4_nl, iq4_xs, f16.
bool methodIsGguf(WeightMethod m);
bool methodNeedsCalibration(WeightMethod m); // gptq, awq, omniquant, squeezellm, slim, efficientqat
/// slim: whether the weight section asks for SliM-LLM's GPTQ step ("gptq", default true).
bool slimUsesGptq(const nlohmann::json& weight);
/// squeezellm: whether the weight section asks for Fisher sensitivities ("sensitivity":
/// "fisher"; default "gram": Σ x² of the layer's inputs).
bool squeezeUsesFisher(const nlohmann::json& weight);
/// squeezellm, dgq, slim: the layouts of compact_formats.h (no packed runtime kernel).
bool methodIsCompact(WeightMethod m);
/// The ggml type of a GGUF method (DType::Q4_K for q4_k, ...); ArgumentError for other methods.
DType ggufMethodType(WeightMethod m);
/// The GGUF method that writes ggml type t; nullopt for types that are not recipe methods.
std::optional<WeightMethod> ggufMethodForType(DType t);
/// Stored bits per weight of a GGUF method, from its block size (q4_k 4.5, q6_k 6.5625, iq4_xs
/// 4.25, q8_0 8.5, f16 16); 0 for other methods.
double ggufBitsPerWeight(WeightMethod m);
/// llama.cpp's substitute (llama_tensor_get_type in llama-quant.cpp) for a GGUF type that does
/// not fit rows of `cols` weights: q2_k/q3_k/iq4_xs -> iq4_nl, q4_k -> q5_0, q5_k -> q5_1,
/// q6_k -> q8_0 when cols is not a multiple of 256, then f16 when the substitute's block of 32
/// does not fit either. Returns m itself when it fits; nullopt for a 32-element type on rows that
/// are not a multiple of 32 (llama.cpp has no fallback for those: an error in recipes).
std::optional<WeightMethod> ggufFallback(WeightMethod m, int64_t cols);

/// Resolved weight settings of one layer.
struct WeightSettings {
    int bits = 8;
    WeightFormat format = WeightFormat::Int;
    bool symmetric = true;
    Granularity granularity = Granularity::Channel;
    int64_t groupSize = 128;
    WeightMethod method = WeightMethod::Rtn;
    /// GPTQ / AWQ onto a GGUF type's blocks (recipe key weight.gguf): the codes are written in
    /// that type; the other fields are then that type's (ggufSettings) apart from `method`.
    std::optional<WeightMethod> ggufGrid;
    /// squeezellm (recipe weight.outliers_pct): percent of the layer's weights, the largest |w|,
    /// kept exactly in a sparse f16 CSR matrix (0..10).
    double outliersPct = 0;
    /// slim (recipe weight.avg_bits): the average code bits per weight of the layer's mix of
    /// 2/3/4-bit column groups (2..4).
    double avgBits = 3;
    /// rtn / gptq (recipe weight.clip_ratio, (0, 1]): every grid's range shrunk by this factor
    /// before its scale is chosen, values beyond it clamped (Atom's w_clip_ratio). RTN and GPTQ's
    /// RTN-style grids scale min and max; GPTQ's reference grid scales its step only (zero point
    /// from the unclipped minimum, as the reference Quantizer). 1: no clipping.
    double clipRatio = 1.0;
    /// "int4 g128 asym", "q4_0", "nf4 g64", "fp8_e4m3 channel", "gptq q4_k".
    std::string describe() const;
    /// The settings the packed result is stored with: ggufSettings(*ggufGrid) for GPTQ / AWQ on
    /// a GGUF grid, else these.
    WeightSettings stored() const;
};

/// The resolved settings of a GGUF method as the planner stores them: format int, granularity
/// group with groupSize the weights per block scale (32; 16 for q2_k, q3_k, q6_k; 1 for f16),
/// bits the code bits (q2_k 2 ... q8_0 8, iq4 4, f16 16), symmetric unless the blocks store a
/// minimum (q4_1, q5_1, q2_k, q4_k, q5_k). ArgumentError for other methods.
WeightSettings ggufSettings(WeightMethod m);

/// Resolved input-activation settings of one linear (fake-quantised at its input, see
/// core/model/runtime_quant.h). bits 16 means none.
struct ActivationSettings {
    int bits = 8;
    bool perToken = true; ///< "dynamic_per_token"; false: "static_per_tensor" (calibrated)
    double clip = 1.0;
    /// Channels per group of each token (recipe activation.group_size; Atom's fine-grained
    /// groups, taken over the channels that are not outliers in their original order); 0: the
    /// whole row (one scale per token). Per-token mode only.
    int64_t groupSize = 0;
    /// "a8 per-token", "a4 per-tensor clip 0.9", "a4 per-token g128".
    std::string describe() const;
};

/// Resolved outlier settings of one linear: the input channels whose calibrated abs-max is at
/// least `threshold` (LLM.int8() style), or the `count` channels of largest calibrated abs-max
/// (Atom), kept apart from the rest: at 16 bits (passed through, weight columns in f16), or with
/// bits 8 quantised at 8 bits in a group of their own (activations per token, weight columns
/// per output row) while the other channels keep the activation and weight settings.
struct OutlierSettings {
    double threshold = 6.0;
    int64_t count = -1; ///< >= 0: the top-`count` channels (replaces threshold)
    int bits = 16;      ///< 16 or 8 (8 needs count)
    /// How count ranks the channels: false: by the calibrated abs-max (default); true
    /// ("select": "sum_sq"): by Σ x² over the calibration tokens (Atom's code, its "hessian"
    /// metric: the diagonal of XᵀX).
    bool sumSq = false;
    bool byCount() const { return count >= 0; }
};
/// The outlier settings of a merged outliers section (validated by the recipe parser).
OutlierSettings outlierSettingsOf(const nlohmann::json& o);
/// The outlier channels of one linear from its calibrated per-channel score (the input abs-max,
/// or Σ x² with sumSq):
/// threshold: every channel whose score is >= threshold; count: the `count` channels of largest
/// score (ties: the lower channel; NaN scores last). Ascending channel indices.
std::vector<int32_t> outlierChannelsOf(const OutlierSettings& o, const std::vector<float>& score);

/// Resolved KV-cache settings of one block. A kv section applies to block N when its rule matches
/// layers.N.attn.k or layers.N.attn.v. bits 16: that half stays f32.
struct KvSettings {
    int kBits = 8, vBits = 8;
    KvGranularity kGranularity = KvGranularity::Token;
    KvGranularity vGranularity = KvGranularity::Token;
    /// Channels per group (token granularity; at most the row, nKvHeads*headDim) or tokens per
    /// block (channel granularity).
    int64_t groupSize = 128;
    /// WKVQuant: past-only quantisation (the runtime's KvQuantSpec::pastOnly).
    bool pastOnly = false;
    /// WKVQuant: calibrated two-dimensional quantisation (per-channel shift and scale around the
    /// per-token quantiser), chosen by cross-block reconstruction over crrBlocks later blocks.
    bool smooth = false;
    int crrBlocks = 1;
    /// Adam steps on the smoothing after the search (0: search only) and their learning rate.
    int crrSteps = 0;
    double crrLr = 5e-3;
    /// WKVQuant's joint learning: the crrSteps gradient steps also learn the clipping (LWC) of
    /// the block's int-quantised linears (rtn / omniquant) under the CRR objective.
    bool crrWeights = false;
    /// "k4 token g128, v4 token g128".
    std::string describe() const;
    /// Stored bits per cached value including the f32 scale and minimum of each group
    /// (channel granularity: of full blocks); `width` = nKvHeads*headDim. 16 bits: 32 (f32).
    static double bitsPerValue(int bits, KvGranularity g, int64_t groupSize, int64_t width);
};

/// One rule as written. Sections keep their JSON (validated at parse time); an explicit null
/// section switches that part off for the matched layers.
struct Rule {
    std::vector<std::string> targets;
    std::vector<std::string> ignore;
    std::optional<nlohmann::json> weight, activation, kv, outliers;
    /// Pruning, structured pruning and low-rank sections (docs/recipe-format.md).
    std::optional<nlohmann::json> sparsity, structured, lowrank;
    std::optional<nlohmann::json> smoothquant; ///< {"alpha": a}: SmoothQuant migration
    /// {"topk": f}: Q-Sparse top-K sparsity of the input activations (key activation_sparsity)
    std::optional<nlohmann::json> activationSparsity;
    std::string comment;
    /// True when `name` is selected by the targets and not by ignore. embed, lm_head and
    /// mlp.router are selected only by a target equal to their name (no glob or regex).
    bool matches(const std::string& name) const;
};

/// The top-level "rotation" section (QuaRot, core/compress/rotation.h): a seeded randomised
/// Hadamard rotation of the residual stream folded into the weights, and optionally the online
/// transforms of mlp.down's input and of the attention heads.
struct RotationSettings {
    uint64_t seed = 0;
    bool down = true; ///< "online_down": transform the MLP intermediate online, fold into down
    bool kv = true;   ///< "online_qk": per-head transform of q/k online, of v folded into v / o
    /// "method": "spinquant": the residual rotation and the v / o head transforms are learned
    /// on the calibration windows (core/compress/spinquant.h) from the Hadamard start: `steps`
    /// Cayley SGD steps of `batch` windows, learning rate `lr` on a cosine.
    bool learned = false;
    int steps = 100;
    double lr = 1.5;
    int batch = 8;
    bool operator==(const RotationSettings&) const = default;
};

struct Recipe {
    static constexpr int kVersion = 1;
    std::string name;
    std::string description;
    /// Importance matrix for the GGUF types' scale search (llama.cpp's --imatrix): a path to a
    /// llama.cpp imatrix .dat file (relative paths are relative to the recipe file), "calibrate"
    /// (computed from the calibration text, as llama-imatrix does), or empty (none).
    std::string imatrix;
    /// Rotation applied before every rule (absent: none).
    std::optional<RotationSettings> rotation;
    std::vector<Rule> rules;

    /// Parses and validates (keys, types, ranges, regexes). Throws RecipeError.
    static Recipe fromJson(const nlohmann::json& j);
    /// Reads a file; JSON syntax errors become FormatError naming the file.
    static Recipe load(const std::string& path);
    nlohmann::json toJson() const;
};

struct Preset {
    std::string name;
    std::string description;
    Recipe recipe;
};
/// Built-in presets (weights, activations W?A?, KV cache KV?), in display order.
const std::vector<Preset>& presets();
/// Throws ArgumentError listing the names when unknown (case-insensitive match).
const Preset& findPreset(const std::string& name);
/// The same without throwing: nullptr when unknown.
const Preset* findPresetIfAny(const std::string& name);

/// Whether lcw can quantise a tensor with this canonical name: the 2-D linear weights.
/// `explicitOnly` is set for embed, lm_head and mlp.router (selected only when named exactly).
bool isTargetable(const std::string& canonical, bool* explicitOnly = nullptr);

/// The resolved settings of one layer and where each field came from.
struct LayerPlan {
    std::string name;
    int64_t rows = 0, cols = 0;
    WeightSettings weight;
    /// Rule index that last set each weight field ("bits", "format", ...); the "weight" entry
    /// is the last rule whose weight section applied.
    std::map<std::string, int> origin;
    bool hasActivation = false, hasKv = false, hasOutliers = false;
    /// The merged outliers section's settings (when hasOutliers) and the rule that last set it.
    OutlierSettings outliers;
    int outlierRule = -1;
    /// The merged weight section (method options: damp, act_order, block_size, awq).
    nlohmann::json weightJson;
    /// SmoothQuant migration strength of the last rule with a smoothquant section (-1: none).
    double smoothAlpha = -1;
    int smoothRule = -1;
    /// The weight is quantised (a weight section applies); false for layers that are only
    /// pruned or factorised.
    bool quantize = true;
    /// The GGUF method the rules asked for when llama.cpp's fallback replaced it in `weight`
    /// (k-quants and iq4_xs on rows that are not a multiple of 256); the plan warns about it.
    std::optional<WeightMethod> fallbackFrom;
    std::optional<SparsitySettings> sparsity;
    std::optional<LowRankSettings> lowrank;
    int sparsityRule = -1, lowrankRule = -1; ///< last rule whose section applied
    /// "int4 g128 asym", "svd-llm 50% params + int4 g128 asym", "2:4 sparsegpt".
    std::string describe() const;
    bool needsCalibration() const;
};

/// Structured pruning of one block: MLP settings from the rules matching layers.N.mlp.down (or
/// mlp.up for non-gated MLPs: the same), head settings from those matching layers.N.attn.o.
struct BlockStructured {
    int layer = 0;
    StructuredSettings settings;
    int mlpRule = -1, headRule = -1;
};

/// A linear whose input activations are quantised.
struct ActivationPlan {
    std::string name;
    int64_t cols = 0; ///< input channels
    ActivationSettings act;
    std::optional<OutlierSettings> outliers;
    int rule = -1;        ///< last rule whose activation section applied
    int outlierRule = -1; ///< last rule whose outliers section applied
};

/// A linear whose input activations are top-K sparsified (recipe section activation_sparsity;
/// the definition is in core/model/runtime_quant.h).
struct ActivationSparsityPlan {
    std::string name;
    int64_t cols = 0;  ///< input channels
    double topk = 1.0; ///< fraction of each token's input entries kept, (0, 1)
    int64_t kept = 0;  ///< entries kept per token
    int rule = -1;     ///< last rule whose activation_sparsity section applied
};

/// A block whose KV cache is quantised.
struct KvPlan {
    int64_t layer = 0;
    int64_t width = 0; ///< nKvHeads * headDim
    KvSettings kv;
    int rule = -1; ///< last rule whose kv section applied
};

/// A block whose KV cache has an eviction policy (KvPolicySpec, core/model/runtime_quant.h).
struct KvPolicyPlan {
    int64_t layer = 0;
    KvPolicySpec policy;
    int rule = -1; ///< last rule whose kv section applied
    /// "h2o budget 20% of the context, recent 50% of the budget", "sinks 4 + window 64".
    std::string describe() const;
};

struct RuleMatch {
    int rule = 0;
    std::vector<std::string> layers;
};

struct Plan {
    std::vector<LayerPlan> layers; ///< layers quantised, pruned or factorised, in model order
    std::vector<BlockStructured> structured; ///< blocks with structured pruning, in order
    std::vector<ActivationPlan> activations; ///< linears with activation bits < 16, model order
    std::vector<KvPlan> kv;                  ///< blocks with K or V bits < 16
    std::vector<KvPolicyPlan> kvPolicy;      ///< blocks with a KV eviction policy
    /// Linears with top-K activation sparsity (topk < 1), model order.
    std::vector<ActivationSparsityPlan> activationSparsity;
    std::vector<RuleMatch> matches; ///< one per rule
    /// SmoothQuant α of every targetable layer with a smoothquant section (also without weight
    /// quantisation), and the rule that set it.
    std::map<std::string, std::pair<double, int>> smooth;
    std::vector<std::string> warnings;
    /// Elements of the lm_head a rotation unties from embed (stored as an added f32 tensor;
    /// 0 without a rotation or with an untied lm_head).
    int64_t untiedLmHead = 0;
    /// The recipe's rotation is learned (SpinQuant) on the calibration windows.
    bool learnedRotation = false;
    /// The plan uses calibration data: a layer's method, pruning or low-rank score, a structured
    /// score, SmoothQuant or outlier weight columns (planned with hasCalibration; without it the
    /// planner refuses the first four and warns about outlier columns).
    bool needsCalibration() const;
};

struct PlanOptions {
    /// Calibration data will be available (methods needing it are allowed).
    bool hasCalibration = false;
};

/// Matches the recipe against a model's targetable tensors and resolves every layer's settings.
/// Rules matching nothing become warnings; so does every layer where a k-quant or iq4_xs falls
/// back to llama.cpp's substitute because its rows are not a multiple of 256 (ggufFallback; the
/// warning names the layer, the wanted and the substituted type). Settings that do not fit a
/// layer (group larger than the row, 32-element GGUF types on rows that are not a multiple of 32,
/// methods needing calibration without any) throw RecipeError naming the rule and field.
Plan planRecipe(const Recipe& r, const Model& model, const PlanOptions& opts = {});
/// kv.crr_weights (WKVQuant's joint learning, core/compress/wkvquant.h): the int-quantised
/// linears of block kp.layer whose clipping the joint learning learns, name → settings (clip
/// ratio 1: the learned factors take its place). RecipeError (kv.crr_weights) for a linear of the
/// block quantised by a method other than rtn / omniquant or a format other than int2..int8, for
/// one pruned or factorised, and for a block without quantised linears; planRecipe checks it.
std::map<std::string, WeightSettings> wkvJointLinears(const Plan& plan, const KvPlan& kp);

} // namespace lcw::compress
