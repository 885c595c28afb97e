#pragma once
/// \file
/// CompressedModel: an overlay over a base Model that holds only the tensors a recipe changed
/// (packed codes + scales for size accounting and export, dequantised float32 for the runtime);
/// find() falls back to the base for everything else. Several overlays can share one base
/// without copying it. compress() builds one from a recipe; save()/load() persist it.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lcw::compress {

/// One replaced tensor: quantised (packed) or a plain float replacement (isFloat: a norm or
/// projection rewritten by AWQ / SmoothQuant scale folding, counted at the base's storage size).
struct CompressedTensor {
    bool isFloat = false;
    PackedTensor packed;       ///< empty when isFloat
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

    /// Replaces (or adds) the tensor `name` of the base by a packed tensor; the values are
    /// dequantised from it. Throws ArgumentError when the base has no such 2-D tensor or the
    /// shape differs.
    void setTensor(const std::string& name, PackedTensor packed);
    /// Replaces tensor `name` of the base (any shape) by float values of the same shape, e.g. a
    /// norm weight with scales folded in. Throws ArgumentError when absent or the size differs.
    void setFloatTensor(const std::string& name, std::vector<float> values);
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
    /// DIR/overlay.json (format version, recipe, base fingerprint, per-tensor settings), each
    /// atomically, the JSON last. Creates DIR.
    void save(const std::string& dir) const;
    /// Loads an overlay saved by save() over `base`; throws Error when the base's fingerprint
    /// differs from the one recorded, FormatError for malformed files.
    static std::unique_ptr<CompressedModel> load(const std::string& dir, const Model& base);

private:
    const Model& m_base;
    std::map<std::string, std::unique_ptr<CompressedTensor>, std::less<>> m_tensors;
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
    /// ||X Wᵀ − X Ŵᵀ||_F / ||X Wᵀ||_F over the calibration tokens, from the Gram:
    /// sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)); NaN without calibration.
    double outputRelError = NAN;
    int64_t outlierColumns = 0;
    /// Method details ({"damp": .., "act_order": ..} for GPTQ, {"alpha": .., "clip": ..} for
    /// AWQ, {"smoothquant_alpha": ..}); notes such as fallbacks.
    nlohmann::ordered_json details = nlohmann::ordered_json::object();
    double seconds = 0;
};

struct CompressOptions {
    /// Calibration data is available (methods that need it are allowed by planRecipe).
    bool hasCalibration = false;
    /// When set (and not empty): block-by-block pipeline. Each block's linear inputs are
    /// captured through the overlay built so far (earlier blocks already compressed), then its
    /// layers are compressed with their methods (RTN, GPTQ, AWQ, SmoothQuant folding, outlier
    /// columns) and every layer gets its output error on the calibration inputs.
    const CalibrationSet* calibration = nullptr;
    CaptureOptions capture;
};

struct CompressResult {
    Status status = Status::Ok;
    std::unique_ptr<CompressedModel> model; ///< null when cancelled
    Plan plan;
    std::vector<LayerReport> layers;
    double seconds = 0;
    /// Calibrated runs: time spent running the calibration set to capture block inputs (not in
    /// the per-layer times, which hold the method's own work incl. its share of AWQ's search).
    double captureSeconds = 0;
};

/// Applies a recipe's weight settings to `base`. Throws RecipeError for settings that do not
/// fit the model, Error for quantiser failures (naming the layer). Progress after each layer;
/// cancellation returns status Cancelled.
CompressResult compress(const Model& base, const Recipe& recipe, Progress& progress,
                        const CompressOptions& opts = {});

/// JSON for reports: {"layers": [...], "totals": {...}, "rules": [...], "warnings": [...]}.
nlohmann::ordered_json compressReportJson(const CompressResult& r);

} // namespace lcw::compress
