#pragma once
/// \file
/// Compression recipes: a versioned JSON document (docs/recipe-format.md) holding an ordered list
/// of rules. Each rule selects layers by canonical name (globs, or "re:" regexes) and sets weight,
/// activation, KV-cache and outlier settings. Later rules override earlier ones field by field.
#include "core/common/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
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
/// Rtn works for every format; Q8_0/Q4_0/Q4_1/Q5_0 are GGUF's block schemes (their own bits,
/// blocks of 32, f16 scales); Gptq/Awq/OmniQuant need calibration data.
enum class WeightMethod { Rtn, Q8_0, Q4_0, Q4_1, Q5_0, Gptq, Awq, OmniQuant };

const char* weightFormatName(WeightFormat f); // "int", "fp8_e4m3", "nf4"
const char* granularityName(Granularity g);   // "tensor", "channel", "group"
const char* weightMethodName(WeightMethod m); // "rtn", "q8_0", ...
bool methodIsGguf(WeightMethod m);            // q8_0, q4_0, q4_1, q5_0
bool methodNeedsCalibration(WeightMethod m);  // gptq, awq, omniquant

/// Resolved weight settings of one layer.
struct WeightSettings {
    int bits = 8;
    WeightFormat format = WeightFormat::Int;
    bool symmetric = true;
    Granularity granularity = Granularity::Channel;
    int64_t groupSize = 128;
    WeightMethod method = WeightMethod::Rtn;
    /// "int4 g128 asym", "q4_0", "nf4 g64", "fp8_e4m3 channel".
    std::string describe() const;
};

/// One rule as written. Sections keep their JSON (validated at parse time); an explicit null
/// section switches that part off for the matched layers.
struct Rule {
    std::vector<std::string> targets;
    std::vector<std::string> ignore;
    std::optional<nlohmann::json> weight, activation, kv, outliers;
    std::optional<nlohmann::json> smoothquant; ///< {"alpha": a}: SmoothQuant migration
    std::string comment;
    /// True when `name` is selected by the targets and not by ignore. embed, lm_head and
    /// mlp.router are selected only by a target equal to their name (no glob or regex).
    bool matches(const std::string& name) const;
};

struct Recipe {
    static constexpr int kVersion = 1;
    std::string name;
    std::string description;
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
/// Built-in presets (weight-only for now), in display order.
const std::vector<Preset>& presets();
/// Throws ArgumentError listing the names when unknown (case-insensitive match).
const Preset& findPreset(const std::string& name);

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
    /// The merged weight section (method options: damp, act_order, block_size, awq).
    nlohmann::json weightJson;
    /// SmoothQuant migration strength of the last rule with a smoothquant section (-1: none).
    double smoothAlpha = -1;
    int smoothRule = -1;
};

struct RuleMatch {
    int rule = 0;
    std::vector<std::string> layers;
};

struct Plan {
    std::vector<LayerPlan> layers; ///< layers with weight quantisation, in model order
    /// SmoothQuant α of every targetable layer with a smoothquant section (also without weight
    /// quantisation), and the rule that set it.
    std::map<std::string, std::pair<double, int>> smooth;
    std::vector<RuleMatch> matches; ///< one per rule
    std::vector<std::string> warnings;
};

struct PlanOptions {
    /// Calibration data will be available (methods needing it are allowed).
    bool hasCalibration = false;
};

/// Matches the recipe against a model's targetable tensors and resolves every layer's settings.
/// Rules matching nothing become warnings; settings that do not fit a layer (group larger than
/// the row, GGUF block schemes on rows that are not a multiple of 32, methods needing
/// calibration without any) throw RecipeError naming the rule and field.
Plan planRecipe(const Recipe& r, const Model& model, const PlanOptions& opts = {});

} // namespace lcw::compress
