#pragma once
/// \file
/// CompressedModel: an overlay over a base Model that holds only the tensors a recipe changed;
/// find() falls back to the base for everything else. Several overlays can share one base
/// without copying it. compress() builds one from a recipe; save()/load() persist it.
///
/// Memory: a quantised tensor is held packed (codes, f16 scales / zeros, outliers, bit mask),
/// never as a float32 copy. The runtime multiplies with its packed form (packedLinear(): lcw
/// int / NF4 / FP8 codes) or, for GGUF block types, with find()'s view of that type over the
/// blocks. find() of any other quantised tensor materialises its float32 values on first use
/// and keeps them (residentBytes() counts them); code that only reads values should use
/// CompressedTensor::values() / dequantizeRows(), which leave nothing behind.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lcw::compress {

struct Imatrix;

/// How one replaced (or added) tensor is stored.
struct TensorEntry {
    int64_t rows = 0, cols = 0;
    /// Quantised: the packed form (its settings and shape); values are dequantised from it.
    std::optional<PackedTensor> packed;
    /// Not quantised: the float values (rows * cols) and the bits each stored value costs (the
    /// base tensor's storage type).
    std::vector<float> values;
    uint32_t valueBits = 32;
    /// Pruned: the settings and the 0/1 mask (rows * cols, 1 = kept). Pruned values read as 0
    /// (fake-sparse: the runtime multiplies densely).
    std::optional<SparsitySettings> sparsity;
    std::vector<uint8_t> mask;
};

/// One replaced or added tensor.
struct CompressedTensor {
    CompressedTensor();
    ~CompressedTensor();
    CompressedTensor(const CompressedTensor&) = delete;
    CompressedTensor& operator=(const CompressedTensor&) = delete;

    int64_t rows = 0, cols = 0;
    /// A plain float replacement of any base tensor (a norm or projection rewritten by AWQ /
    /// SmoothQuant scale folding), counted at the base's storage size.
    bool isFloat = false;
    PackedTensor packed; ///< quantised form (empty codes when not quantised)
    bool quantized = false;
    uint32_t valueBits = 32; ///< not quantised: bits per stored value
    std::optional<SparsitySettings> sparsity;
    std::vector<uint8_t> maskBits; ///< bit-packed mask (sparsity.h packMask), when pruned
    int64_t kept = 0;              ///< values kept (rows * cols when not pruned)
    /// Float values of a tensor that is not quantised (float replacements, pruned or structurally
    /// pruned float weights, unquantised low-rank factors), pruned values 0; empty when quantised.
    std::vector<float> floats;
    /// What CompressedModel::find() returns (shape and name always right): F32 over `floats`; a
    /// quantised tensor of a GGUF type without mask or outliers: that type over packed.codes;
    /// any other quantised tensor: F32 whose data is null until find() materialises it.
    TensorView view;
    /// Stored bits: quantised codes (pruned values' codes not stored, except in GGUF blocks),
    /// scales and zeros, or valueBits per kept value; plus the sparsity metadata.
    uint64_t storageBits() const;
    /// The float32 values the runtime uses (rows * cols, pruned values 0): a fresh copy,
    /// dequantised from the packed form (compress::dequantize) when quantised.
    std::vector<float> values() const;
    /// Rows [r0, r0 + n) of values() into dst [n, cols].
    void dequantizeRows(int64_t r0, int64_t n, float* dst) const;
    /// Bytes this tensor holds in memory now: packed codes, scales, zeros, outliers and mask, or
    /// its floats; plus the float32 values find() materialised and the runtime's packed weight,
    /// when built.
    size_t residentBytes() const;

    // ---- built on first use by CompressedModel (find(), packedLinear()) ----
    mutable std::once_flag materialiseOnce, packOnce;
    mutable std::vector<float> materialised;
    mutable std::unique_ptr<kernels::PackedLinear> runtimePacked;
};

/// Size of a set of weights: original parameter count and stored bits (codes, scales, zeros).
struct SizeInfo {
    int64_t params = 0;
    uint64_t bits = 0;
    double bitsPerWeight() const { return params ? double(bits) / double(params) : 0.0; }
    uint64_t bytes() const { return (bits + 7) / 8; }
};

/// Sizes of `base` compressed by `plan` (a planRecipe() result for this model), computed from the
/// shapes and settings alone, in milliseconds even for billion-parameter models. Exact for every
/// weight stage compress() applies without calibration-dependent sizes: quantisation (incl. GGUF
/// types and llama.cpp's fallbacks), N:M / per-row / unstructured pruning (kept values plus the
/// index or mask format compress() stores), low-rank factors (with their quantisation) and
/// structured removal of MLP channels / KV groups. Two sizes depend on the weights or the
/// calibration data and are bounds: low-rank ranks chosen by an energy target (counted at full
/// rank, listed in upperBounds) and the outlier weight columns of calibrated runs.
struct SizeEstimate {
    /// == compress(base, recipe).model->totalSize() (tied embeddings counted once; params are
    /// the stored ones: smaller after structured removal, r·(in + out) for low-rank factors).
    SizeInfo total;
    /// == CompressedModel::compressedSize(): the replaced tensors only (what `lcw-cli compress
    /// --json` reports as totals.quantized_bits_per_weight).
    SizeInfo compressed;
    /// Weights of the base model (every tensor, tied embeddings once): the denominator of the
    /// whole-model budget.
    int64_t baseParams = 0;
    /// == CompressedModel::tensorSize(name) for every planned layer and every structurally
    /// shrunk tensor (low-rank layers: both factors together).
    std::map<std::string, SizeInfo, std::less<>> tensors;
    /// Planned low-rank layers: the rank compress() will choose (energy targets: full rank).
    std::map<std::string, int64_t, std::less<>> ranks;
    /// Layers whose size is an upper bound (low-rank with an energy target).
    std::vector<std::string> upperBounds;
    bool exact() const { return upperBounds.empty(); }
    /// The budget figure: whole-model stored bits / base weights (equal to
    /// total.bitsPerWeight() unless low-rank factors or structured removal change the count).
    double bitsPerWeight() const {
        return baseParams ? double(total.bits) / double(baseParams) : 0.0;
    }
    /// Stored bits / stored weights of the replaced (quantised, pruned, factorised) tensors.
    double compressedBitsPerWeight() const { return compressed.bitsPerWeight(); }
};

/// See SizeEstimate. Throws ArgumentError / UnsupportedError naming the layer for settings that
/// compress() rejects although the plan accepts them (a GGUF type on rows that structured
/// removal or a low-rank factor leaves at a width that is not a multiple of its block, structured
/// removal of blocks with biases, calibrated methods combined with pruning or low-rank).
SizeEstimate estimatePlan(const Plan& plan, const Model& base);
/// estimatePlan(plan, base).total: equal to compress(base, recipe).model->totalSize().
SizeInfo estimateSize(const Plan& plan, const Model& base);
/// Only the layers the plan quantises, from their settings alone: equal to
/// CompressedModel::compressedSize() for plans without pruning, low-rank or structured removal
/// (use estimatePlan(plan, base).compressed for those).
SizeInfo estimateCompressedSize(const Plan& plan);
/// Stored size of one planned dense quantised layer from its settings alone (equal to
/// CompressedModel::tensorSize() after compress() when the layer is not pruned, factorised or
/// structurally shrunk; estimatePlan() covers those).
SizeInfo estimateLayerSize(const LayerPlan& layer);

class CompressedModel final : public WeightSource {
public:
    /// `base` must outlive the overlay.
    explicit CompressedModel(const Model& base);
    ~CompressedModel() override;
    CompressedModel(const CompressedModel&) = delete;
    CompressedModel& operator=(const CompressedModel&) = delete;

    const ModelSpec& spec() const override { return m_base.spec(); }
    /// Replaced tensors as CompressedTensor::view describes (materialising the float32 values of
    /// a quantised lcw-format tensor on first use), else the base's.
    const TensorView* find(std::string_view canonical) const override;
    /// The runtime form of a replaced tensor quantised to lcw int / NF4 / FP8 codes (with its
    /// mask when pruned), built on first use (thread-safe) and kept; nullptr for every other
    /// tensor (GGUF block types, floats, base tensors: find() serves them).
    const kernels::PackedLinear* packedLinear(std::string_view canonical) const override;
    const Model& base() const { return m_base; }
    /// "BASE with overlay DIR" (DIR when loaded from one, else "with an overlay").
    std::string describeOrigin() const override;
    /// The first NaN / Inf among the replaced tensors' values ("<overlay>: tensor 'x' has NaN at
    /// element 17"), else the base's (Model::findNonFinite()); nullopt when all are finite.
    std::optional<std::string> firstNonFiniteWeight() const override;
    /// Activation and KV-cache quantisation the runtime applies: the recipe's, else the base's
    /// own (a checkpoint's declared input activations, Model::runtimeQuant()); nullptr when
    /// there is none.
    const RuntimeQuant* runtimeQuant() const override {
        return m_runtime.empty() ? m_base.runtimeQuant() : &m_runtime;
    }
    /// Replaces the runtime quantisation; throws ArgumentError for a linear the base lacks,
    /// bits outside 2..16, a non-positive clip or group, or outlier channels out of range.
    void setRuntimeQuant(RuntimeQuant rq);

    /// Replaces (or adds) the tensor `name` of the base by a packed tensor; the values are
    /// dequantised from it. Throws ArgumentError when the base has no such 2-D tensor or the
    /// shape differs.
    void setTensor(const std::string& name, PackedTensor packed);
    /// General form: a quantised and/or pruned tensor, a structurally pruned one (smaller than
    /// the base: rows and cols at most the base's), or a low-rank factor NAME.lowrank_a [r, in] /
    /// NAME.lowrank_b [out, r] of a base tensor NAME. Throws ArgumentError for anything else.
    void setEntry(const std::string& name, TensorEntry e);
    /// Marks a base tensor as replaced by its low-rank factors (set both first): its size is
    /// theirs, and find(name) is null (the runtime multiplies the factors, see model.h).
    void setLowRank(const std::string& name);
    bool isLowRank(std::string_view name) const { return m_lowRank.count(std::string(name)) > 0; }
    /// Replaces tensor `name` of the base (any shape) by float values of the same shape, e.g. a
    /// norm weight with scales folded in. A tensor the base lacks (e.g. a folded bias) is added
    /// with the given `shape` (required then, product = values.size()); find() returns it.
    /// Throws ArgumentError when absent without a shape, or the size differs.
    void setFloatTensor(const std::string& name, std::vector<float> values,
                        const std::vector<int64_t>& shape = {});
    /// A new overlay over `newBase` holding this overlay's tensors, low-rank marks, runtime
    /// quantisation, recipe and fingerprint (this overlay is left empty). `newBase` has the
    /// tensors of this overlay's base under the same names and shapes (the model a rotated copy
    /// was made from, core/compress/rotation.h); a float tensor it lacks becomes an added tensor.
    /// Throws ArgumentError for any other tensor it lacks.
    std::unique_ptr<CompressedModel> moveOnto(const Model& newBase);
    /// Names of the float tensors the base lacks, in the order they were added.
    const std::vector<std::string>& addedNames() const { return m_added; }
    /// nullptr when the tensor is not replaced.
    const CompressedTensor* compressed(std::string_view name) const;
    /// Names of the replaced tensors, in base order.
    std::vector<std::string> replacedNames() const;

    /// Size of one tensor as it is stored in this configuration (base tensors: their stored
    /// bytes); throws when absent.
    SizeInfo tensorSize(const std::string& name) const;
    /// Per block ("layers.N", and "other" for tensors outside blocks), all tensors.
    std::map<std::string, SizeInfo> layerSizes() const;
    /// Whole model (tied embeddings counted once).
    SizeInfo totalSize() const;
    /// Only the replaced tensors.
    SizeInfo compressedSize() const;
    /// Bytes the overlay holds in memory now (CompressedTensor::residentBytes of every replaced
    /// or added tensor): ≈ compressedSize().bytes() plus float replacements, plus what find()
    /// materialised and the runtime's packed weights once a Session has bound them. The base's
    /// pages are not included.
    size_t residentBytes() const;

    Recipe recipe;
    std::string baseFingerprint;

    /// Writes DIR/overlay.safetensors (packed codes/scales/zeros of the replaced tensors) and
    /// DIR/overlay.json (format version, recipe, base fingerprint, per-tensor settings, and the
    /// runtime quantisation under "runtime_quant" with its calibrated scales, and the
    /// "content_hash" of the safetensors file) as one unit: written into a temporary folder that
    /// is renamed into place (overlay_files.h). Creates DIR's parent folders.
    void save(const std::string& dir) const;
    /// Loads an overlay saved by save() over `base`; throws Error when the base's fingerprint
    /// differs from the one recorded, FormatError for malformed files and for a tensor file
    /// whose size or hash differs from the "content_hash" recorded ("content hash mismatch";
    /// overlays saved before that record existed load unchecked).
    static std::unique_ptr<CompressedModel> load(const std::string& dir, const Model& base);

private:
    const Model& m_base;
    std::map<std::string, std::unique_ptr<CompressedTensor>, std::less<>> m_tensors;
    /// Base tensors replaced by their low-rank factors.
    std::set<std::string, std::less<>> m_lowRank;
    std::vector<std::string> m_added; ///< float tensors the base lacks
    RuntimeQuant m_runtime;
    std::string m_dir; ///< the folder load() read, for messages
};

struct LayerReport {
    std::string name;
    std::vector<int64_t> shape;
    std::string scheme; ///< WeightSettings::describe()
    int rule = -1;      ///< last rule whose weight section applied
    int bits = 0;
    double bitsPerWeight = 0;
    uint64_t storageBits = 0;
    ErrorStats error; ///< final weights against the original (all stages together)
    int64_t outlierColumns = 0;
    /// Method details ({"damp": .., "act_order": ..} for GPTQ, {"alpha": .., "clip": ..} for
    /// AWQ, {"smoothquant_alpha": ..}); notes such as fallbacks.
    nlohmann::ordered_json details = nlohmann::ordered_json::object();
    double seconds = 0;
    /// Stored parameter count (smaller after structured pruning; r·(in + out) when low-rank).
    int64_t params = 0;
    /// Calibration-output relative error ||(W − Ŵ)Xᵀ||_F / ||WXᵀ||_F of each stage's result
    /// against the stage's input and of the final weights against the original; NaN when no
    /// calibration statistics were captured for the layer.
    double outputRelError = std::numeric_limits<double>::quiet_NaN();
    struct Stage {
        bool applied = false;
        std::string describe; ///< the stage's settings
        double relError = 0;  ///< ||W_in − W_out||_F / ||W_in||_F
        double outputRelError = std::numeric_limits<double>::quiet_NaN();
    };
    Stage lowrank, sparsity, quant;
    int64_t rank = 0;          ///< low-rank: the rank chosen
    double sparsityRatio = 0;  ///< pruned: zeros / weights of the mask
    uint64_t metadataBits = 0; ///< pruned: mask / index bits
    std::string structured;    ///< "mlp 129/172 channels", "" when not structurally pruned
};

/// Structured pruning of one block as applied.
struct StructuredReport {
    int layer = 0;
    std::string score;
    int64_t mlpKept = 0, mlpTotal = 0;       ///< MLP channels (0/0 when not pruned)
    int64_t groupsKept = 0, groupsTotal = 0; ///< KV groups (0/0 when not pruned)
    int64_t headsKept = 0, headsTotal = 0;   ///< query heads
};

/// Text that calibrates static activation scales and outlier channels: `samples` consecutive
/// sequences of `seqLen` tokens (BOS first) run through the base (unquantised) model; the
/// per-channel abs-max of every quantised linear's input is recorded.
struct ActivationCalibration {
    std::string textFile; ///< empty: the bundled text (stats::builtinCalibrationPath())
    int64_t samples = 4;
    int64_t seqLen = 128; ///< at most the model's maximum sequence length
};

struct CompressOptions {
    /// Calibration data is available (methods that need it are allowed by planRecipe).
    bool hasCalibration = false;
    /// Used only when a recipe has static per-tensor activations or outlier thresholds.
    ActivationCalibration activationCalibration;
    /// When set (and not empty): block-by-block pipeline. Each block's linear inputs are
    /// captured through the overlay built so far (earlier blocks already compressed), then its
    /// layers are compressed with their methods (RTN, GPTQ, AWQ, SmoothQuant folding, outlier
    /// columns) and every layer gets its output error on the calibration inputs.
    const CalibrationSet* calibration = nullptr;
    CaptureOptions capture;
    /// Importance matrix for the GGUF types' scale search and GPTQ / AWQ on GGUF grids (not
    /// owned). Null: the recipe's "imatrix" (a file, or "calibrate" from `calibration`), if any.
    const Imatrix* imatrix = nullptr;
    /// Outlier channels chosen by count (outliers.count), by linear (not owned): set by
    /// compress() from the activation calibration so that the weight columns set apart and the
    /// runtime's activation outlier channels are the same set. Layers not in it choose from
    /// their captured inputs' abs-max.
    const std::map<std::string, std::vector<int32_t>>* outlierChannels = nullptr;
};

/// The importance of layer `name` (cols input columns) from opts.imatrix: empty when there is no
/// imatrix, no entry for the layer, or the entry does not have `cols` values.
std::vector<float> layerImportance(const CompressOptions& opts, const WeightSource& base,
                                   const std::string& name, int64_t cols);
inline const float* dataOrNull(const std::vector<float>& v) {
    return v.empty() ? nullptr : v.data();
}

struct CompressResult {
    Status status = Status::Ok;
    std::unique_ptr<CompressedModel> model; ///< null when cancelled
    Plan plan;
    std::vector<LayerReport> layers;
    std::vector<StructuredReport> structured;
    double seconds = 0;
    /// Calibrated runs: time spent running the calibration set to capture block inputs (not in
    /// the per-layer times, which hold the method's own work incl. its share of AWQ's search).
    double captureSeconds = 0;
    /// WKVQuant's smoothing search per block (kv.smooth): the chosen parameters and the
    /// objective (core/compress/wkvquant.h); empty otherwise.
    std::map<int64_t, nlohmann::ordered_json> kvCalibration;
    /// A learned rotation (SpinQuant, core/compress/spinquant.h): its training report; null
    /// otherwise.
    nlohmann::ordered_json rotation;
};

/// Per-channel abs-max of the inputs of the linears `names`, [name] -> [in channels], from
/// calibration text run through `base`; with `sumSq`, also Σ x² per channel over the same tokens.
/// Throws Error when the model has no tokenizer or the text has fewer than two tokens.
/// Cancelled: returns an empty map.
std::map<std::string, std::vector<float>>
calibrateInputAbsMax(const Model& base, const std::vector<std::string>& names,
                     const ActivationCalibration& opts, Progress& progress,
                     std::map<std::string, std::vector<float>>* sumSq = nullptr);

/// Applies a recipe's weight settings to `base` and resolves its activation / KV settings into
/// the overlay's RuntimeQuant (calibrating when static scales or outliers are asked for). Throws
/// RecipeError for settings that do not fit the model, Error for quantiser failures (naming the
/// layer). Progress after each layer; cancellation returns status Cancelled.
CompressResult compress(const Model& base, const Recipe& recipe, Progress& progress,
                        const CompressOptions& opts = {});

/// compress() calibrated on the bundled text (stats::builtinCalibrationPath(), `cal` samples ×
/// tokens) when the recipe's plan needs calibration and the model has a tokenizer, uncalibrated
/// otherwise: what the workbench runs, where no calibration file is chosen per run.
CompressResult compressWithBundledCalibration(const Model& base, const Recipe& recipe,
                                              Progress& progress,
                                              CalibrationOptions cal = {8, 128});

/// JSON for reports: {"layers": [...], "totals": {...}, "rules": [...], "warnings": [...]}.
nlohmann::ordered_json compressReportJson(const CompressResult& r);

} // namespace lcw::compress
