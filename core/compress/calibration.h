#pragma once
/// \file
/// Calibration data for the methods that need it (GPTQ, AWQ, SmoothQuant, OmniQuant, pruning):
/// a tokenised text cut into samples, and captures of what one block sees when a WeightSource
/// (the base model, or an overlay whose earlier blocks are already compressed) runs them.
///
///   CalibrationSet cal = loadCalibration(model, "", {16, 256});  // bundled text
///   auto in = captureBlockInputs(model, cal, 3, {}, progress);   // block 3's linear inputs
///   const LinearInputs& x = in.at("layers.3.attn.q");            // X^T X, abs-max, rows of X
///   auto h = captureBlockHidden(model, cal, 3);                  // residual entering block 3
///
/// Every sample runs from an empty cache with SessionOptions::stopAfterLayer, so only the blocks
/// up to the one captured run (block L costs L + 1 block forwards per sample).
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/model/model.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lcw::compress {

/// How the calibration windows are taken from the tokenised text.
enum class CalibrationSampling {
    /// The reference samplers (IST-DASLab/gptq and sparsegpt datautils.py get_wikitext2 /
    /// get_c4): for each sample, i = randint(0, tokens - seqLen - 1) and the window is
    /// tokens[i, i + seqLen), drawn with replacement (windows may overlap) from Python's
    /// random.seed(seed) stream. lcw reproduces that stream exactly (MT19937 seeded with
    /// init_by_array as CPython does, randint by getrandbits rejection sampling), so the
    /// windows equal the reference's for the same token ids and seed on every platform.
    Random,
    /// lcw's earlier behaviour (and llama-imatrix's chunks): consecutive windows from the
    /// start of the text, at most tokens / seqLen of them.
    Consecutive,
};

/// Whether the first token of every window is replaced by BOS.
enum class CalibrationBos {
    Auto,    ///< Random: no (as the reference); Consecutive: yes (lcw's earlier behaviour)
    Replace, ///< always (when the model has a BOS token)
    Keep,    ///< never: the windows are exactly tokens[i, i + seqLen)
};

const char* calibrationSamplingName(CalibrationSampling s); // "random", "consecutive"

struct CalibrationOptions {
    int64_t samples = 128; ///< sequences (Consecutive: fewer when the text is short)
    int64_t seqLen = 512;  ///< tokens each, clamped to the model's context
    CalibrationSampling sampling = CalibrationSampling::Random;
    uint64_t seed = 0; ///< Random: Python's random.seed(seed) (the reference scripts' --seed 0)
    CalibrationBos bos = CalibrationBos::Auto;
};

/// Token sequences of equal length (see CalibrationOptions for how they are taken).
struct CalibrationSet {
    std::vector<std::vector<int32_t>> samples;
    std::string source; ///< the text file
    CalibrationSampling sampling = CalibrationSampling::Consecutive;
    uint64_t seed = 0;    ///< Random only
    bool bosFirst = true; ///< the first token of every sample was replaced by BOS
    int64_t seqLen() const { return samples.empty() ? 0 : int64_t(samples[0].size()); }
    int64_t tokens() const { return int64_t(samples.size()) * seqLen(); }
    bool empty() const { return samples.empty(); }
};

/// Tokenises `textPath` (empty: the bundled text, stats::builtinCalibrationPath()) once with
/// BOS (the text's first token is BOS when the model has one) and takes opts.samples windows of
/// opts.seqLen tokens (clamped to the model's maximum sequence length) as opts.sampling says.
/// Random needs at least seqLen tokens (with exactly seqLen every window starts at 0);
/// Consecutive takes min(samples, tokens / seqLen) windows.
/// Throws Error naming the file when it cannot be read or holds fewer tokens than one sequence,
/// ArgumentError for samples < 1 or seqLen < 2, Error when the model has no tokenizer.
CalibrationSet loadCalibration(const Model& model, const std::string& textPath,
                               const CalibrationOptions& opts);

/// The window starts CalibrationSampling::Random takes from `tokens` tokens: what Python's
///     random.seed(seed); [random.randint(0, tokens - seqLen - 1) for _ in range(samples)]
/// returns (all 0 when tokens == seqLen). Throws ArgumentError for tokens < seqLen.
std::vector<int64_t> randomWindowStarts(int64_t tokens, int64_t seqLen, int64_t samples,
                                        uint64_t seed);

struct CaptureOptions {
    /// Rows of X kept in LinearInputs::sample (evenly strided over all calibration tokens).
    int64_t maxSampleRows = 4096;
    /// Accumulate X^T X (cols^2 doubles per distinct input; off for statistics only).
    bool gram = true;
    int threads = 0; ///< session threads, 0 = OpenMP default
};

/// What one linear layer saw as input X [tokens, cols] over the calibration set.
struct LinearInputs {
    int64_t cols = 0, tokens = 0;
    /// X^T X, cols x cols, row-major (both triangles), accumulated in double.
    std::vector<double> gram;
    std::vector<float> absMax;  ///< per input channel, max_t |X[t, j]|
    std::vector<float> meanSq;  ///< per input channel, mean_t X[t, j]^2
    std::vector<float> meanAbs; ///< per input channel, mean_t |X[t, j]|
    std::vector<float> sample;  ///< sampleRows rows of X, row-major [sampleRows, cols]
    int64_t sampleRows = 0;
    /// Names of the linears that read this same input, in run order (q/k/v; gate/up; or only
    /// this one). Their LinearInputs are equal.
    std::vector<std::string> sharedWith;
};

/// Inputs of block `layer`'s linears (every linear the runtime reports for that layer: attention,
/// MLP, experts, router, Mamba's projections) when `w` runs the calibration set. Keyed by
/// canonical weight name ("layers.3.attn.q"). Progress after every sample; cancellation returns
/// an empty map (a block always has linears). Throws ArgumentError for a layer out of range or an
/// empty calibration set.
std::map<std::string, LinearInputs> captureBlockInputs(const WeightSource& w,
                                                       const CalibrationSet& cal, int layer,
                                                       const CaptureOptions& opts,
                                                       Progress& progress);

/// The residual stream entering block `layer` (the embeddings for layer 0), one [seqLen * dim]
/// row-major vector per sample. Empty when cancelled.
std::vector<std::vector<float>> captureBlockHidden(const WeightSource& w, const CalibrationSet& cal,
                                                   int layer, Progress* progress = nullptr);

} // namespace lcw::compress
