#include "core/stats/activation_stats.h"

#include "core/common/mapped_file.h"
#include "core/model/model.h"
#include "core/runtime/device_ops.h"
#include "core/stats/activation_sparsity_stats.h"
#include "core/stats/fingerprint.h"
#include "core/tokenizer/tokenizer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <unistd.h>

namespace lcw::stats {

SiteAccumulator::SiteAccumulator(std::string name, std::string kind, int layer, int64_t channels,
                                 int64_t heads, int histBins, const runtime::DeviceSpec& device)
    : m_name(std::move(name)), m_kind(std::move(kind)), m_layer(layer), m_ch(channels),
      m_heads(std::max<int64_t>(1, heads)),
      m_chan(std::make_unique<runtime::ChannelStatsAccumulator>(device, channels, true)),
      m_hist(histBins) {}

SiteAccumulator::~SiteAccumulator() = default;

void SiteAccumulator::trackNearZero() {
    if (!m_nearZero) m_nearZero = std::make_unique<NearZeroCounter>();
}

void SiteAccumulator::add(const float* x, int64_t nTokens) {
    if (nTokens <= 0) return;
    const int64_t C = m_ch;
    // Per-channel moments (shifted by the first token: stable sums), extrema and sum |x|, on the
    // site's device.
    m_chan->add(x, nTokens);
    if (m_nearZero) m_nearZero->add(x, nTokens, C);
    const int64_t hd = C / m_heads, H = m_heads;
    const int64_t total = nTokens * C;
    // The session calls observers from one thread; spread big batches over the OpenMP threads
    // (the forward pass itself is parallel, so a serial observer would dominate on small models).
    const bool par = total >= 16384 && omp_get_max_threads() > 1 && !omp_in_parallel();
    const size_t base = m_tokAbsmax.size();
    m_tokAbsmax.resize(base + size_t(nTokens));
    m_tokArg.resize(base + size_t(nTokens));
    if (H > 1) m_tokHeadAbsmax.resize((base + size_t(nTokens)) * size_t(H));
    double* ta = m_tokAbsmax.data() + base;
    double* targ = m_tokArg.data() + base;
    double* tha = H > 1 ? m_tokHeadAbsmax.data() + base * size_t(H) : nullptr;
    double batchMax = 0;
    // omp: nothrow (maxima into allocated buffers)
#pragma omp parallel for if (par) reduction(max : batchMax) schedule(static)
    for (int64_t t = 0; t < nTokens; ++t) {
        const float* r = x + t * C;
        double tm = 0, arg = 0;
        for (int64_t h = 0; h < H; ++h) {
            double hm = 0;
            for (int64_t j = h * hd; j < (h + 1) * hd; ++j) {
                const double a = std::fabs(double(r[j]));
                if (a > hm) hm = a;
                if (a > tm) tm = a, arg = double(j);
            }
            if (tha) tha[t * H + h] = hm;
        }
        ta[t] = tm;
        targ[t] = arg;
        batchMax = std::max(batchMax, tm);
    }
    // Grow the histogram once per batch, before binning it.
    m_hist.ensureRange(batchMax);
    m_scratchKey.resize(size_t(total));
    m_scratchBin.resize(size_t(total));
    uint32_t* sk = m_scratchKey.data();
    uint32_t* sb = m_scratchBin.data();
    const AdaptiveHistogram& hist = m_hist;
    // Histogram keys and bins in parallel; the increments follow serially.
    // omp: nothrow (keys and bins into allocated buffers)
#pragma omp parallel for if (par) schedule(static)
    for (int64_t i = 0; i < total; ++i) {
        sk[i] = AbsKeyHistogram::key(x[i]);
        sb[i] = uint32_t(hist.binOf(x[i]));
    }
    uint64_t* kc = m_keys.counts.data();
    int64_t* hc = m_hist.counts.data();
    for (int64_t i = 0; i < total; ++i) {
        ++kc[sk[i]];
        ++hc[sb[i]];
    }
    m_tokens += nTokens;
}

TensorStats SiteAccumulator::finish() const {
    TensorStats ts;
    ts.name = m_name;
    ts.kind = m_kind;
    ts.layer = m_layer;
    ts.shape = {m_tokens, m_ch};
    ts.dtype = "F32";
    const double n = double(m_tokens);
    const runtime::ChannelSums cs = m_chan->result();
    const std::vector<double>&chMin = cs.min, &chMax = cs.max;
    std::vector<Moments> cm(static_cast<size_t>(m_ch));
    Moments all;
    for (int64_t j = 0; j < m_ch; ++j) {
        cm[size_t(j)] =
            Moments::fromShiftedSums(n, cs.shift[size_t(j)], cs.s1[size_t(j)], cs.s2[size_t(j)],
                                     cs.s3[size_t(j)], cs.s4[size_t(j)]);
        all.merge(cm[size_t(j)]);
    }
    double tmin = INFINITY, tmax = -INFINITY;
    for (int64_t j = 0; j < m_ch; ++j) {
        tmin = std::min(tmin, chMin[size_t(j)]);
        tmax = std::max(tmax, chMax[size_t(j)]);
    }
    if (m_tokens == 0) tmin = tmax = 0;
    putTensorScalars(ts, all, tmin, tmax);
    putChannelArrays(ts, "ch", cm, chMin, chMax);
    std::vector<double> meanAbs(static_cast<size_t>(m_ch));
    for (int64_t j = 0; j < m_ch; ++j) meanAbs[size_t(j)] = n > 0 ? cs.sumAbs[size_t(j)] / n : 0;
    ts.arrays["ch_mean_abs"] = std::move(meanAbs);
    ts.arrays["tok_absmax"] = m_tokAbsmax;
    ts.arrays["tok_absmax_channel"] = m_tokArg;
    if (m_heads > 1) {
        const int64_t hd = m_ch / m_heads;
        ts.scalars["heads"] = double(m_heads);
        ts.scalars["head_dim"] = double(hd);
        std::vector<Moments> hm(static_cast<size_t>(m_heads));
        std::vector<double> hmin(static_cast<size_t>(m_heads), INFINITY),
            hmax(static_cast<size_t>(m_heads), -INFINITY);
        for (int64_t h = 0; h < m_heads; ++h)
            for (int64_t j = h * hd; j < (h + 1) * hd; ++j) {
                hm[size_t(h)].merge(cm[size_t(j)]);
                hmin[size_t(h)] = std::min(hmin[size_t(h)], chMin[size_t(j)]);
                hmax[size_t(h)] = std::max(hmax[size_t(h)], chMax[size_t(j)]);
            }
        putChannelArrays(ts, "head", hm, hmin, hmax);
        ts.arrays["tok_head_absmax"] = m_tokHeadAbsmax; // [tokens, heads] row-major
    }
    // Channel outliers (LLM.int8 style), unevenness and massive activations.
    const auto& ca = ts.arrays["ch_absmax"];
    int64_t oc = 0;
    for (double v : ca) oc += v >= 6.0;
    ts.scalars["outlier_channels_ge6"] = double(oc);
    ts.scalars["count_abs_ge6"] = double(m_keys.countAtLeast(6.0f));
    ts.scalars["ch_absmax_max_over_median"] = channelUnevenness(ts);
    {
        std::vector<double> sorted =
            ca; // the SmoothQuant picture: channels by abs-max, largest first
        std::sort(sorted.begin(), sorted.end(), std::greater<>());
        ts.arrays["ch_absmax_sorted"] = std::move(sorted);
    }
    if (!m_tokAbsmax.empty()) {
        std::vector<double> s = m_tokAbsmax;
        std::nth_element(s.begin(), s.begin() + long(s.size() / 2), s.end());
        const double med = s[s.size() / 2];
        ts.scalars["tok_absmax_max_over_median"] =
            med > 0 ? *std::max_element(m_tokAbsmax.begin(), m_tokAbsmax.end()) / med : 0;
    }
    // Approximate (log-spaced key histogram, < 2^-7 relative) percentiles and |x| > kσ.
    for (double p : kPercentiles) ts.scalars[percentileKey(p)] = m_keys.approxQuantile(p / 100);
    const double sd = all.stddev();
    for (int k : {3, 6}) {
        double c = 0;
        const double th = k * sd;
        for (uint32_t b = 0; b < uint32_t(AbsKeyHistogram::kBins); ++b) {
            if (!m_keys.counts[b]) continue;
            const double lo = AbsKeyHistogram::keyLow(b);
            const double hi = b + 1 < uint32_t(AbsKeyHistogram::kBins)
                                  ? AbsKeyHistogram::keyLow(b + 1)
                                  : INFINITY;
            if (lo > th)
                c += double(m_keys.counts[b]);
            else if (hi > th)
                c += double(m_keys.counts[b]) * (hi - th) / (hi - lo);
        }
        ts.scalars["frac_gt_" + std::to_string(k) + "sigma"] = n > 0 ? c / (n * double(m_ch)) : 0;
    }
    {
        auto [first, c] = m_keys.log2Counts();
        ts.scalars["abs_log2_hist_first_exp"] = first - 127;
        ts.counts["abs_log2_hist"] = std::move(c);
    }
    ts.counts["hist"] = m_hist.counts;
    ts.scalars["hist_lo"] = -m_hist.range;
    ts.scalars["hist_hi"] = m_hist.range;
    if (m_nearZero) m_nearZero->put(ts);
    return ts;
}

double channelUnevenness(const TensorStats& s) {
    auto it = s.arrays.find("ch_absmax");
    if (it == s.arrays.end() || it->second.empty()) return 0;
    std::vector<double> v = it->second;
    std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
    const double med = v[v.size() / 2];
    return med > 0 ? *std::max_element(it->second.begin(), it->second.end()) / med : 0;
}

// ------------------------------------------------------------------------------- observer

ActivationStatsObserver::ActivationStatsObserver(ActivationStatsOptions opts)
    : m_opts(opts), m_device(m_opts.device.empty() ? runtime::defaultDevice()
                                                   : runtime::parseDeviceSpec(m_opts.device)) {}
ActivationStatsObserver::~ActivationStatsObserver() = default;

SiteAccumulator& ActivationStatsObserver::site(const std::string& name, const std::string& kind,
                                               int layer, int64_t ch, int64_t heads) {
    auto it = m_sites.find(name);
    if (it != m_sites.end()) return *it->second;
    static const char* kOrder[] = {"attn_in",  "attn.o",     "mlp_in", "mlp.down",
                                   "residual", "k_pre_rope", "k",      "v"};
    int ord = 99;
    const std::string tail = name.substr(name.find('.', 7) + 1);
    for (int i = 0; i < 8; ++i)
        if (tail == kOrder[i]) ord = i;
    m_order[name] = {layer, ord};
    auto& p = m_sites[name];
    p = std::make_unique<SiteAccumulator>(name, kind, layer, ch, heads, m_opts.histBins, m_device);
    if (isMlpIntermediateSite(name)) p->trackNearZero();
    return *p;
}

namespace {
/// "layers.3.mlp.gate" -> "layers.3.mlp_in"; "layers.3.mlp.experts.5.up" ->
/// "layers.3.mlp.experts.5_in".
std::string inputSiteOf(const std::string& weightName) {
    const auto dot = weightName.rfind('.');
    return (dot == std::string::npos ? weightName : weightName.substr(0, dot)) + "_in";
}
} // namespace

void ActivationStatsObserver::onLinearInput(int layer, LinearRole role, const std::string& name,
                                            const float* x, int64_t nTokens, int64_t dim) {
    if (!m_opts.linearInputs) return;
    const std::string L = "layers." + std::to_string(layer) + ".";
    // Sites are keyed so that layers sharing one input (q/k/v; gate/up; an MoE router and its
    // experts' common input) are recorded once; every other linear input is keyed by its weight's
    // canonical name, which covers experts, Mamba projections and embedding projections.
    switch (role) {
    case LinearRole::Q: // q, k and v share the input: record it once
        site(L + "attn_in", "activation", layer, dim, 1).add(x, nTokens);
        break;
    case LinearRole::K:
    case LinearRole::V:
    case LinearRole::Router: // sees the same tokens as the MLP input
        break;
    case LinearRole::O:
        site(L + "attn.o", "activation", layer, dim, 1).add(x, nTokens);
        break;
    case LinearRole::Gate: // gate and up share the input
        site(inputSiteOf(name), "activation", layer, dim, 1).add(x, nTokens);
        break;
    case LinearRole::Up: // alone only in fc1/fc2 MLPs
        if (!m_opts.gatedMlp) site(inputSiteOf(name), "activation", layer, dim, 1).add(x, nTokens);
        break;
    case LinearRole::LmHead: // the final-norm output; reported with layer = nLayers
        site("lm_head", "activation", layer, dim, 1).add(x, nTokens);
        break;
    default: // down projections, experts' down, Mamba and embedding projections
        site(name, "activation", layer, dim, 1).add(x, nTokens);
        break;
    }
}

void ActivationStatsObserver::onKV(int layer, const float* kPre, const float* kPost, const float* v,
                                   int64_t nTokens, int64_t nKvHeads, int64_t headDim, int64_t) {
    if (!m_opts.kv) return;
    const std::string L = "layers." + std::to_string(layer) + ".";
    const int64_t ch = nKvHeads * headDim;
    site(L + "k_pre_rope", "k_pre_rope", layer, ch, nKvHeads).add(kPre, nTokens);
    site(L + "k", "k", layer, ch, nKvHeads).add(kPost, nTokens);
    site(L + "v", "v", layer, ch, nKvHeads).add(v, nTokens);
}

void ActivationStatsObserver::onResidual(int layer, const float* h, int64_t nTokens, int64_t dim) {
    if (!m_opts.residuals) return;
    site("layers." + std::to_string(layer) + ".residual", "residual", layer, dim, 1)
        .add(h, nTokens);
}

std::vector<TensorStats> ActivationStatsObserver::results() const {
    std::vector<std::pair<std::pair<int, int>, std::string>> keys;
    for (auto& [n, o] : m_order) keys.push_back({o, n});
    std::sort(keys.begin(), keys.end());
    std::vector<TensorStats> r;
    for (auto& k : keys) r.push_back(m_sites.at(k.second)->finish());
    addOracleMacBounds(r, m_opts.gatedMlp);
    return r;
}

// ---------------------------------------------------------------------------- calibration

std::string builtinCalibrationPath() {
    const std::string rel = "tinystories_eval.txt";
    if (const char* e = std::getenv("LCW_DATA_DIR")) {
        const std::string p = std::string(e) + "/" + rel;
        if (std::filesystem::exists(p)) return p;
    }
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const auto p = exe.parent_path().parent_path() / "share/lcw/data" / rel;
        if (std::filesystem::exists(p)) return p.string();
    }
#ifdef LCW_DATA_DIR
    return std::string(LCW_DATA_DIR) + "/" + rel;
#else
    return "resources/data/" + rel;
#endif
}

Status runCalibration(const Model& model, const CalibrationOptions& opts,
                      std::vector<TensorStats>& out, CalibrationInfo& info, Progress& progress) {
    info = {};
    info.builtin = opts.textFile.empty();
    info.source = info.builtin ? builtinCalibrationPath() : opts.textFile;
    std::ifstream in(info.source, std::ios::binary);
    if (!in) throw Error(info.source + ": cannot read calibration text");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    info.sha256 = sha256Hex(text.data(), text.size());
    const Tokenizer& tk = model.tokenizer();
    std::vector<int32_t> ids = tk.encode(text, true);
    info.textTokens = int64_t(ids.size());
    if (opts.samples <= 0 || opts.seqLen <= 1)
        throw ArgumentError("calibration needs samples >= 1 and seq-len >= 2");
    int64_t L = opts.seqLen;
    if (model.spec().maxSeq > 0) L = std::min(L, model.spec().maxSeq);
    const int64_t N = std::min(opts.samples, int64_t(ids.size()) / L);
    if (N < 1)
        throw Error(info.source + ": calibration text has " + std::to_string(ids.size()) +
                    " tokens, fewer than one sequence of " + std::to_string(L));
    info.samples = N;
    info.seqLen = L;
    info.tokens = N * L;

    SessionOptions so;
    so.contextLength = L;
    so.threads = opts.threads;
    so.batchSize = L;
    Session session(model, so);
    ActivationStatsOptions actOpts = opts.act;
    actOpts.gatedMlp = model.spec().gatedMlp;
    // The per-channel sums run where the session's products do.
    if (actOpts.device.empty()) actOpts.device = session.device().id;
    ActivationStatsObserver obs(actOpts);
    session.addObserver(&obs);
    const int32_t bos = tk.bosId();
    std::vector<float> logits;
    for (int64_t s = 0; s < N; ++s) {
        if (!progress.report(double(s) / double(N), "calibration: sequence " +
                                                        std::to_string(s + 1) + "/" +
                                                        std::to_string(N)))
            return Status::Cancelled;
        std::vector<int32_t> seq(ids.begin() + s * L, ids.begin() + (s + 1) * L);
        if (bos >= 0) seq[0] = bos;
        session.reset();
        // All logits, so that the lm_head observer sees every token's input, not only the last.
        session.forward(seq, logits, true);
    }
    session.removeObserver(&obs);
    if (!progress.report(1.0, "calibration done")) return Status::Cancelled;
    out = obs.results();
    return Status::Ok;
}

} // namespace lcw::stats
