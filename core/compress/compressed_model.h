#pragma once
/// \file
/// CompressedModel: an overlay over a base Model that holds only the tensors a recipe changed
/// (packed codes + scales for size accounting and export, dequantised float32 for the runtime);
/// find() falls back to the base for everything else. Several overlays can share one base
/// without copying it. compress() builds one from a recipe; save()/load() persist it.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lcw::compress {

/// One replaced tensor.
struct CompressedTensor {
    PackedTensor packed;
    std::vector<float> values; ///< dequantised, rows * cols
    TensorView view;           ///< F32 view of `values` under the canonical name
};

/// Size of a set of weights: original parameter count and stored bits (codes, scales, zeros).
struct SizeInfo {
    int64_t params = 0;
    uint64_t bits = 0;
    double bitsPerWeight() const { return params ? double(bits) / double(params) : 0.0; }
    uint64_t bytes() const { return (bits + 7) / 8; }
};

class CompressedModel final : public WeightSource {
public:
    /// `base` must outlive the overlay.
    explicit CompressedModel(const Model& base);
    ~CompressedModel() override;
    CompressedModel(const CompressedModel&) = delete;
    CompressedModel& operator=(const CompressedModel&) = delete;

    const ModelSpec& spec() const override { return m_base.spec(); }
    const TensorView* find(std::string_view canonical) const override;
    const Model& base() const { return m_base; }
    /// Activation and KV-cache quantisation the runtime applies (nullptr when there is none).
    const RuntimeQuant* runtimeQuant() const override {
        return m_runtime.empty() ? nullptr : &m_runtime;
    }
    /// Replaces the runtime quantisation; throws ArgumentError for a linear the base lacks,
    /// bits outside 2..16, a non-positive clip or group, or outlier channels out of range.
    void setRuntimeQuant(RuntimeQuant rq);

    /// Replaces (or adds) the tensor `name` of the base by a packed tensor; the values are
    /// dequantised from it. Throws ArgumentError when the base has no such 2-D tensor or the
    /// shape differs.
    void setTensor(const std::string& name, PackedTensor packed);
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

    Recipe recipe;
    std::string baseFingerprint;

    /// Writes DIR/overlay.safetensors (packed codes/scales/zeros of the replaced tensors) and
    /// DIR/overlay.json (format version, recipe, base fingerprint, per-tensor settings, and the
    /// runtime quantisation under "runtime_quant" with its calibrated scales), each
    /// atomically, the JSON last. Creates DIR.
    void save(const std::string& dir) const;
    /// Loads an overlay saved by save() over `base`; throws Error when the base's fingerprint
    /// differs from the one recorded, FormatError for malformed files.
    static std::unique_ptr<CompressedModel> load(const std::string& dir, const Model& base);

private:
    const Model& m_base;
    std::map<std::string, std::unique_ptr<CompressedTensor>, std::less<>> m_tensors;
    RuntimeQuant m_runtime;
};

struct LayerReport {
    std::string name;
    std::vector<int64_t> shape;
    std::string scheme; ///< WeightSettings::describe()
    int rule = -1;      ///< last rule whose weight section applied
    int bits = 0;
    double bitsPerWeight = 0;
    uint64_t storageBits = 0;
    ErrorStats error;
    double seconds = 0;
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
};

struct CompressResult {
    Status status = Status::Ok;
    std::unique_ptr<CompressedModel> model; ///< null when cancelled
    Plan plan;
    std::vector<LayerReport> layers;
    double seconds = 0;
};

/// Per-channel abs-max of the inputs of the linears `names`, [name] -> [in channels], from
/// calibration text run through `base`. Throws Error when the model has no tokenizer or the text
/// has fewer than two tokens. Cancelled: returns an empty map.
std::map<std::string, std::vector<float>>
calibrateInputAbsMax(const Model& base, const std::vector<std::string>& names,
                     const ActivationCalibration& opts, Progress& progress);

/// Applies a recipe's weight settings to `base` and resolves its activation / KV settings into
/// the overlay's RuntimeQuant (calibrating when static scales or outliers are asked for). Throws
/// RecipeError for settings that do not fit the model, Error for quantiser failures (naming the
/// layer). Progress after each layer; cancellation returns status Cancelled.
CompressResult compress(const Model& base, const Recipe& recipe, Progress& progress,
                        const CompressOptions& opts = {});

/// JSON for reports: {"layers": [...], "totals": {...}, "rules": [...], "warnings": [...]}.
nlohmann::ordered_json compressReportJson(const CompressResult& r);

} // namespace lcw::compress
