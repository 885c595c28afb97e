#pragma once
// The lcw-cli commands. Each returns the process exit code and throws lcw::Error (exit 1) or
// UsageError (exit 2).
#include "core/runtime/session.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lcw {
class Model;
class WeightSource;
namespace runtime {
struct DeviceInfo;
} // namespace runtime
namespace compress {
struct CalibrationSet;
class CompressedModel;
} // namespace compress
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
int cmdStudy(const std::vector<std::string>& args);
int cmdResults(const std::vector<std::string>& args);
int cmdImatrix(const std::vector<std::string>& args);
int cmdExport(const std::vector<std::string>& args);
/// devices [--json]: the CPU and the Vulkan devices (app/cli/cmd_devices.cpp).
int cmdDevices(const std::vector<std::string>& args);
/// export --format llmcompressor (app/cli/cmd_export_llmc.cpp) and its argv test.
bool isLlmCompressorExport(const std::vector<std::string>& args);
int cmdExportLlmCompressor(const std::vector<std::string>& args);
/// recipe import recipe.yaml [--out R.json] [--arch A] [--json]
int cmdRecipeImport(const std::vector<std::string>& args);
/// Hidden: converts an HDF5 file without lcw header in a child process (core/common/h5_guard.h).
int cmdH5Convert(const std::vector<std::string>& args);

/// {"id": ..., "name": ...} of the device a command ran on (the "device" key of the reports).
nlohmann::ordered_json deviceUsedJson(const runtime::DeviceInfo& d);
/// The device of Sessions without their own SessionOptions::device: the --device default,
/// resolved (the CPU when a Vulkan device cannot be used).
runtime::DeviceInfo defaultDeviceInfo();

/// The MODEL positional (first), with --tokenizer; FormatError etc. from Model::load.
std::unique_ptr<Model> openModel(const Args& a, bool needTokenizer);

/// The weights the evaluation commands run on: `model` itself, or an overlay from
/// --recipe R.json / --preset NAME (compressed now) / --overlay DIR (loaded). Never null.
std::unique_ptr<WeightSource> applyRecipeOptions(const Model& model, const Args& a);
/// --threads N (0 or absent: OpenMP's default); UsageError when negative.
void applyThreads(const Args& a);
/// How the products treat activations, for reports: "exact-f32" (--exact-activations: float32
/// activations everywhere) or "quantized-8bit" (llama.cpp's path: GGUF and lcw packed weights
/// multiply activations quantised to 8-bit blocks, BF16 weights on a CPU with AVX-512 BF16
/// activations rounded to bf16; a recipe's activation settings apply either way).
const char* activationsPathName(bool exact);
/// The "macs" object of the reports: weight-product multiply-accumulates counted on the host
/// (Session::macCounts) over `tokens` tokens run: dense, zero_input (input entry exactly zero:
/// a product skipping zero columns would not do them), executed = dense - zero_input, per token
/// and executed_fraction; null when nothing was counted (a resident device forward).
nlohmann::ordered_json macsJson(const Session::MacCounts& m, double tokens);
/// "12.3 M/tok (49.8 % of dense)" from a "macs" object; "-" for null.
std::string macsText(const nlohmann::ordered_json& macs);
/// --calib FILE [--samples N] [--seq-len L] (commands that accept them); null without --calib.
std::unique_ptr<compress::CalibrationSet> calibrationFromArgs(const Model& model, const Args& a);

/// One configuration given by --recipe / --preset / --overlay / --compare-model (eval, compare,
/// hidden-error), or the baseline model itself (`base`): its weights and what keeps them alive.
struct ConfigSource {
    ConfigSource();
    ConfigSource(ConfigSource&&) noexcept;
    ConfigSource& operator=(ConfigSource&&) noexcept;
    ~ConfigSource();
    std::string name;
    std::string kind; ///< "recipe", "preset", "overlay", "model" ("baseline" for the base)
    std::string source;
    nlohmann::json recipe;                              ///< recipe / preset: the recipe JSON
    std::unique_ptr<Model> model;                       ///< --compare-model
    std::unique_ptr<compress::CompressedModel> overlay; ///< --recipe / --preset / --overlay
    const Model* base = nullptr;                        ///< the baseline entry: the model
    double bitsPerWeight = 0;                           ///< stored bits / weights; 0: unknown
    uint64_t bytes = 0;                                 ///< stored weight bytes
    const WeightSource* weights() const;
};
/// All configurations of the command line, in option order (recipes, presets, overlays, compare
/// models); recipes and presets are compressed now (with `cal` when given). UsageError when there
/// is none and `requireOne`.
std::vector<ConfigSource> loadConfigSources(const Model& model, const Args& a, bool quiet,
                                            const compress::CalibrationSet* cal = nullptr,
                                            bool requireOne = true);

} // namespace lcw::cli
