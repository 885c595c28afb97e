#pragma once
// The lcw-cli commands. Each returns the process exit code and throws lcw::Error (exit 1) or
// UsageError (exit 2).
#include <memory>
#include <string>
#include <vector>

namespace lcw {
class Model;
class WeightSource;
namespace compress {
struct CalibrationSet;
}
} // namespace lcw

namespace lcw::cli {

class Args;

int cmdInfo(const std::vector<std::string>& args);
int cmdGenerate(const std::vector<std::string>& args);
int cmdTokenize(const std::vector<std::string>& args);
int cmdLogits(const std::vector<std::string>& args);
int cmdPerplexity(const std::vector<std::string>& args);
int cmdSynth(const std::vector<std::string>& args);
int cmdStats(const std::vector<std::string>& args);
int cmdCompress(const std::vector<std::string>& args);
int cmdRecipe(const std::vector<std::string>& args);
int cmdEval(const std::vector<std::string>& args);
int cmdCompare(const std::vector<std::string>& args);
int cmdHiddenError(const std::vector<std::string>& args);
int cmdSensitivity(const std::vector<std::string>& args);
int cmdAutotune(const std::vector<std::string>& args);
int cmdResults(const std::vector<std::string>& args);

/// The weights the evaluation commands run on: `model` itself, or an overlay from
/// --recipe R.json / --preset NAME (compressed now) / --overlay DIR (loaded). Never null.
std::unique_ptr<WeightSource> applyRecipeOptions(const Model& model, const Args& a);
/// --calib FILE [--samples N] [--seq-len L] (commands that accept them); null without --calib.
std::unique_ptr<compress::CalibrationSet> calibrationFromArgs(const Model& model, const Args& a);

/// One configuration given by --recipe / --preset / --overlay / --compare-model (compare and
/// hidden-error): its weights and what keeps them alive.
struct ConfigSource {
    std::string name;
    std::string kind; ///< "recipe", "preset", "overlay", "model"
    std::string source;
    std::unique_ptr<Model> model;          ///< --compare-model
    std::unique_ptr<WeightSource> overlay; ///< --recipe / --preset / --overlay
    double bitsPerWeight = 0;              ///< 0: unknown
    const WeightSource* weights() const;
};
/// All configurations of the command line, in option order; UsageError when there is none.
std::vector<ConfigSource> loadConfigSources(const Model& model, const Args& a, bool quiet);

} // namespace lcw::cli
