#pragma once
/// \file
/// A Qllm-Eval-style study of one model (lcw-cli study, the GUI's Study panel): the grid of the
/// Qllm-Eval paper — weight-only W8/W4/W3/W2, weight-activation W8A8/W4A8/W4A4, KV cache
/// KV8/KV4/KV3/KV2 — each with round-to-nearest and the methods made for that tensor type
/// (AWQ/GPTQ for weights, SmoothQuant/OmniQuant/QuaRot rotations with RTN or GPTQ weights for
/// weight-activation, KIVI for the KV cache),
/// evaluated against the unquantised model on one text (perplexity, KL divergence, same top
/// token) and optionally on the zero-shot tasks, and the paper's kind of conclusions ("which
/// tensor type is most sensitive") computed for this model from the numbers.
///
/// The report (study_report.h) is written from StudyResult alone; conclusions() is a pure
/// function of the rows, so it is tested on rows made up in the test.
#include "core/common/progress.h"
#include "core/compress/recipe.h"
#include "core/eval/perplexity.h"
#include "core/eval/tasks.h"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace lcw {
class Model;
namespace compress {
struct CalibrationSet;
}
} // namespace lcw

namespace lcw::study {

/// The tensor types of the Qllm-Eval paper.
enum class Group { Weight, WeightActivation, KvCache };
/// "W", "WA", "KV".
const char* groupName(Group g);
/// "w", "wa", "kv" (case-insensitive); throws ArgumentError naming the accepted values.
Group parseGroup(const std::string& s);

/// One configuration of the grid.
struct Cell {
    Group group = Group::Weight;
    std::string setting; ///< "W4", "W4A8", "KV4"
    int bits = 16;       ///< weight bits (W, WA) or K/V bits (KV)
    int actBits = 16;    ///< WA: activation bits
    std::string method;  ///< "RTN", "AWQ", "GPTQ", "SmoothQuant", "OmniQuant", "QuaRot", ...
    compress::Recipe recipe;
    bool calibrated = false; ///< the method needs calibration data
};

/// The methods of each group, in display order (RTN first).
const std::vector<std::string>& groupMethods(Group g);

struct GridOptions {
    std::vector<Group> groups = {Group::Weight, Group::WeightActivation, Group::KvCache};
    /// Methods to include (case-insensitive names of groupMethods()); empty: all. RTN is always
    /// included: every conclusion is relative to it.
    std::vector<std::string> methods;
    /// Weight-only group size (the paper: 128).
    int64_t groupSize = 128;
    /// KV-cache groups: channels per group for per-token K/V (the paper: 128) and KIVI's group
    /// (tokens per key block, channels per value group: 32).
    int64_t kvGroupSize = 128, kiviGroupSize = 32;
    /// OmniQuant's epochs (the paper: 20).
    int omniquantEpochs = 20;
    /// Atom's outlier channels per linear (the paper: 128 of 4096, 1/32 of the width).
    int64_t atomOutliers = 128;
};

/// The options fitted to `model`: lcw refuses groups longer than a row, so the weight group size
/// becomes at most the narrowest input width of the linears "*" selects, and the KV group sizes
/// at most a K/V row (KV heads × head size).
GridOptions fitToModel(const GridOptions& opts, const Model& model);

/// The cells of the grid in report order: group, then setting (high to low bits), then method.
/// With a model, the options are fitted to it first (fitToModel). Throws ArgumentError for an
/// unknown method name.
std::vector<Cell> grid(const GridOptions& opts, const Model* model = nullptr);

/// What one cell measured. status "ok", or the error that stopped it (the study goes on).
struct Row {
    Group group = Group::Weight;
    std::string setting, method;
    int bits = 16, actBits = 16;
    std::string status = "ok";
    double bitsPerWeight = 0;  ///< stored bits per weight of the whole model
    uint64_t bytes = 0;        ///< stored weight bytes
    double kvBitsPerValue = 0; ///< KV rows: stored bits per cached value (scales included)
    double ppl = 0, pplError = 0;
    double lnPplRatio = 0, lnPplRatioError = 0; ///< mean ln p_base − ln p_q per token
    double kld = 0, kldError = 0;               ///< mean KL(base ‖ q), nats
    double sameTop = 0;                         ///< fraction of tokens with the same argmax
    std::map<std::string, double> taskAcc;      ///< task name -> accuracy (0..1)
    double compressSeconds = 0, evalSeconds = 0;
    bool ok() const { return status == "ok"; }
};

/// One conclusion: a sentence and the numbers behind it.
struct Conclusion {
    std::string id;   ///< "sensitivity-4bit", "lowest-bits-W", "best-method-W4", ...
    std::string text; ///< the sentence shown in the report
    nlohmann::json data;
};

struct StudyResult {
    std::string model;
    double baselinePpl = 0, baselinePplError = 0;
    std::map<std::string, double> baselineTaskAcc;
    int64_t ctx = 0, chunks = 0, scoredTokens = 0;
    std::vector<Row> rows;
    std::vector<Conclusion> conclusions;
    nlohmann::json settings; ///< what the CLI / GUI ran it with (text, calibration, tasks, ...)
    double seconds = 0;
    Status status = Status::Ok;
};

/// Inputs of a run. `tokens` is the evaluation text, scored in llama.cpp's chunks (`po`).
struct StudyInputs {
    std::vector<int32_t> tokens;
    PerplexityOptions po;
    const compress::CalibrationSet* calibration = nullptr; ///< needed by calibrated cells
    std::vector<PreparedTask> tasks;                       ///< may be empty
    int64_t taskCtx = 2048;
    /// Configurations evaluated against one baseline pass (they are held in memory together).
    int batch = 4;
};

/// Compresses and evaluates every cell. Calibrated cells without calibration data, and cells
/// whose method fails on this model, get a status naming the reason. Cancellation: status
/// Cancelled with the rows done so far. Fills `conclusions`.
StudyResult run(const Model& model, const std::vector<Cell>& cells, const StudyInputs& in,
                Progress& progress);

/// The settings of group `g` in the order the rows have them (high bits first).
std::vector<std::string> settingsOf(const StudyResult& r, Group g);

/// The tolerance of "near-lossless" in the conclusions: PPL at most this factor above the
/// baseline.
inline constexpr double kNearLosslessRatio = 1.05;

/// The conclusions the numbers support (pure function of the rows and the baseline):
/// - for each group, the lowest setting whose best method stays near-lossless;
/// - the 4-bit sensitivity of weights (W4 vs FP), activations (W4A4 vs W4A8) and the KV cache
///   (KV4 vs FP), ranked by ln PPL ratio — the paper's "which tensor type is most sensitive" —
///   once with the best method of each setting and once with round-to-nearest alone;
/// - for each setting, the best method and its gain over RTN.
std::vector<Conclusion> conclusions(const StudyResult& r);

/// The whole result as JSON (rows, conclusions, settings) and back (for the Study panel and
/// tests). fromJson throws FormatError naming `source` on a malformed document.
nlohmann::json toJson(const StudyResult& r);
StudyResult fromJson(const nlohmann::json& j, const std::string& source);

} // namespace lcw::study
