#pragma once
/// \file
/// Activation and KV-cache statistics, gathered by a Session Observer while calibration text
/// streams through the model (one pass, no stored activations).
///
/// Sites (TensorStats::name, kind):
///   layers.N.attn_in   (activation) input of q/k/v (one shared input, recorded once)
///   layers.N.attn.o    (activation) input of the output projection
///   layers.N.mlp_in    (activation) input of gate/up (recorded once)
///   layers.N.mlp.down  (activation) input of the down projection, with its natural sparsity
///                      (near-zero fractions and the oracle bound, activation_sparsity_stats.h)
///   layers.N.residual  (residual)   residual stream after block N
///   layers.N.k_pre_rope, layers.N.k (post-RoPE), layers.N.v   (k_pre_rope, k, v), per KV head
/// lm_head's input is not recorded (the session computes it only for the last token).
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/runtime/session.h"
#include "core/stats/tensor_stats.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lcw {
class Model;
}
namespace lcw::runtime {
class ChannelStatsAccumulator; // runtime/device_ops.h
}

namespace lcw::stats {

class NearZeroCounter; // activation_sparsity_stats.h

/// Streaming statistics of one site: [tokens, channels] rows arrive in batches.
class SiteAccumulator {
public:
    /// The per-channel sums (moments, extrema, sum |x|) run on `device` when it is a Vulkan
    /// device and the site is wide enough (runtime/device_ops.h); per-token maxima and the
    /// histograms stay on the CPU.
    SiteAccumulator(std::string name, std::string kind, int layer, int64_t channels,
                    int64_t heads = 1, int histBins = 256, const runtime::DeviceSpec& device = {});
    ~SiteAccumulator();
    void add(const float* x, int64_t nTokens);
    /// Scalars, per-channel (ch_*), per-head (head_*, when heads > 1) and per-token (tok_*)
    /// arrays, the adaptive histogram and the |x| key histogram summaries.
    TensorStats finish() const;
    int64_t tokens() const { return m_tokens; }
    /// Also counts near-zero values (activation_sparsity_stats.h); set before the first add().
    void trackNearZero();

private:
    std::string m_name, m_kind;
    int m_layer;
    int64_t m_ch, m_heads;
    int64_t m_tokens = 0;
    std::unique_ptr<runtime::ChannelStatsAccumulator> m_chan; ///< shifted by the first token
    std::vector<double> m_tokAbsmax, m_tokArg, m_tokHeadAbsmax;
    AbsKeyHistogram m_keys;
    AdaptiveHistogram m_hist;
    std::vector<uint32_t> m_scratchKey, m_scratchBin;
    std::unique_ptr<NearZeroCounter> m_nearZero; ///< MLP intermediates only
};

struct ActivationStatsOptions {
    bool linearInputs = true;
    bool residuals = true;
    bool kv = true;
    int histBins = 256; ///< even; a power of two keeps the doubling exact
    /// false for fc1/fc2 MLPs (OPT, GPT-2, ...): their MLP input arrives as the Up call alone.
    bool gatedMlp = true;
    /// Where the per-channel sums run ("cpu", "vulkan", "vulkan:N"); empty: the process default
    /// (runtime::defaultDevice()). runCalibration passes its session's device.
    std::string device;
};

/// Observer that feeds a SiteAccumulator per site.
class ActivationStatsObserver final : public Observer {
public:
    explicit ActivationStatsObserver(ActivationStatsOptions opts = {});
    ~ActivationStatsObserver() override;
    void onLinearInput(int layer, LinearRole role, const std::string& name, const float* x,
                       int64_t nTokens, int64_t dim) override;
    void onKV(int layer, const float* kPreRope, const float* kPostRope, const float* v,
              int64_t nTokens, int64_t nKvHeads, int64_t headDim, int64_t pos0) override;
    void onResidual(int layer, const float* h, int64_t nTokens, int64_t dim) override;
    /// Finished statistics, ordered by layer, then attn_in, attn.o, mlp_in, mlp.down, residual,
    /// k_pre_rope, k, v.
    std::vector<TensorStats> results() const;

private:
    SiteAccumulator& site(const std::string& name, const std::string& kind, int layer, int64_t ch,
                          int64_t heads);
    ActivationStatsOptions m_opts;
    runtime::DeviceSpec m_device;
    std::map<std::string, std::unique_ptr<SiteAccumulator>> m_sites;
    std::map<std::string, std::pair<int, int>> m_order;
};

struct CalibrationOptions {
    std::string textFile; ///< empty: the built-in text (builtinCalibrationPath())
    int64_t samples = 16; ///< N sequences
    int64_t seqLen = 256; ///< L tokens each (first token replaced by BOS when the model has one)
    int threads = 0;
    ActivationStatsOptions act;
};

/// What calibration actually used (recorded in the store).
struct CalibrationInfo {
    std::string source; ///< file path
    bool builtin = false;
    std::string sha256;  ///< of the file's bytes
    int64_t samples = 0; ///< sequences run (fewer than asked when the text is short)
    int64_t seqLen = 0;
    int64_t tokens = 0;     ///< samples × seqLen
    int64_t textTokens = 0; ///< tokens in the whole text
};

/// resources/data/tinystories_eval.txt: $LCW_DATA_DIR, <exe>/../share/lcw/data, the source tree.
std::string builtinCalibrationPath();

/// Tokenizes the text (BOS first), cuts it into `samples` consecutive sequences of `seqLen`
/// tokens, runs each from an empty cache and returns the statistics of every site.
/// Progress is checked after every sequence; Cancelled leaves `out` empty.
/// Throws Error when the model has no tokenizer or the text is shorter than one sequence.
Status runCalibration(const Model& model, const CalibrationOptions& opts,
                      std::vector<TensorStats>& out, CalibrationInfo& info, Progress& progress);

/// Unevenness of a site's per-channel abs-max: max / median over channels.
double channelUnevenness(const TensorStats& s);

} // namespace lcw::stats
