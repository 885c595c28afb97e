#pragma once
/// \file
/// Layer sensitivity scan (METRICS.md, "Layer sensitivity"): apply a weight scheme to one
/// linear layer (or one block) at a time, everything else at baseline, and measure the
/// divergence from the baseline. All one-target overlays run as configurations of ONE
/// compareToBaseline pass, so the baseline is computed once per chunk.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/recipe.h"
#include "core/eval/divergence.h"
#include "core/model/model.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

/// A weight scheme: the "weight" section of a recipe rule, with a display name.
struct WeightScheme {
    std::string name;
    nlohmann::json weight;
};
/// The weight section of a built-in preset (its last rule with one), or a GGUF type by its recipe
/// method name ("q4_k", "q6_k", "iq4_nl", …: ggml's quantiser of that type; lcw's presets Q8_0,
/// Q5_0, Q4_1 and Q4_0 keep their meaning). Throws ArgumentError for unknown names (listing the
/// presets).
WeightScheme schemeFromPreset(const std::string& preset);

enum class SensitivityGranularity { Layer, Block };
const char* sensitivityGranularityName(SensitivityGranularity g); // "layer", "block"

struct SensitivityOptions {
    SensitivityGranularity granularity = SensitivityGranularity::Layer;
    PerplexityOptions eval;
};

/// One target (a linear layer, or all targetable linears of a block) at one scheme.
struct SensitivityEntry {
    std::string target;              ///< "layers.3.attn.q" or "layers.3"
    std::vector<std::string> layers; ///< the tensors quantised
    /// The recipe rules that quantise exactly this target with the scheme (one per tensor,
    /// exact names; group sizes clamped where noted). Autotune assembles its recipe from these.
    nlohmann::json rules;
    int64_t params = 0;
    uint64_t bits = 0;     ///< stored bits of the quantised tensors (codes, scales, zeros)
    uint64_t baseBits = 0; ///< stored bits of the same tensors in the base
    std::string note;      ///< e.g. a clamped group size
    int order = 0;         ///< position of the target in the model (sensitivityTargets order)
    int rank = 0;          ///< 1 = largest mean KLD
    DivergenceStats stats; ///< KLD, same-top, PPL ratio, ...
    double bitsPerWeight() const { return params ? double(bits) / double(params) : 0.0; }
    /// Model bits changed by quantising this target (negative: saved).
    double deltaBits() const { return double(bits) - double(baseBits); }
};

struct SchemeScan {
    WeightScheme scheme;
    std::vector<SensitivityEntry> entries; ///< sorted by rank
    /// Targets the scheme cannot be applied to, with the reason.
    std::vector<std::pair<std::string, std::string>> skipped;
};

struct SensitivityScan {
    std::string model;
    std::string baseFingerprint;
    SensitivityGranularity granularity = SensitivityGranularity::Layer;
    int64_t ctx = 0, chunks = 0, scoredTokens = 0;
    double baselinePpl = 0;
    std::vector<SchemeScan> schemes;
    double seconds = 0;
    Status status = Status::Ok;
    /// nullptr when the scheme was not scanned.
    const SchemeScan* find(const std::string& scheme) const;
};

/// The targets of a model at a granularity: each with its targetable linear tensors (explicit-
/// only ones, embed/lm_head/router, excluded), in model order.
std::vector<std::pair<std::string, std::vector<std::string>>>
sensitivityTargets(const Model& model, SensitivityGranularity g);

/// Runs the scan for every scheme. A group size larger than a layer's row is clamped to the row
/// (noted on the entry); a target the scheme cannot quantise otherwise (e.g. a GGUF block scheme
/// on rows not a multiple of 32) is skipped with the reason. Throws ArgumentError for no schemes
/// or an invalid weight section, and what compareToBaseline throws. Progress: quantising, then
/// the chunks; cancelling returns status Cancelled (entries without statistics when cancelled
/// before the evaluation).
SensitivityScan scanSensitivity(const Model& base, const std::vector<WeightScheme>& schemes,
                                const std::vector<int32_t>& tokens, const SensitivityOptions& opts,
                                Progress& progress);

/// JSON of a scan (the file `lcw-cli sensitivity --out` writes, "lcw_sensitivity": 1) and back.
/// fromJson throws FormatError(path, problem naming the field).
nlohmann::ordered_json sensitivityToJson(const SensitivityScan& s);
SensitivityScan sensitivityFromJson(const nlohmann::json& j, const std::string& path);

} // namespace lcw
