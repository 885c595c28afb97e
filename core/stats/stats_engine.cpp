#include "core/stats/stats_engine.h"

#include "core/model/model.h"
#include "core/stats/fingerprint.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <sstream>

#include "core/stats/activation_sparsity_stats.h"

namespace lcw::stats {

namespace {

std::string utcNow() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

double num(double v) {
    return std::isfinite(v) ? v : 0.0;
}

/// The "mlp_sparsity" object of the summary: natural sparsity of every block's MLP intermediate
/// and the oracle bound of the MACs a neuron-skipping scheme could save
/// (activation_sparsity_stats.h).
nlohmann::ordered_json mlpSparsityJson(const StatsReport& r) {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    double sumMlp = 0, sumBlock = 0;
    int nBlock = 0;
    const auto rows = mlpSparsityRows(r.activations);
    for (const MlpSparsityRow& m : rows) {
        nlohmann::ordered_json L = {{"layer", m.layer},
                                    {"near_zero_rel", m.nearZeroRel},
                                    {"near_zero_abs", m.nearZeroAbs},
                                    {"exact_zero", m.exactZero},
                                    {"tok_near_zero_rel_p10", m.tokP10},
                                    {"tok_near_zero_rel_p50", m.tokP50},
                                    {"tok_near_zero_rel_p90", m.tokP90},
                                    {"oracle_mlp_saved_frac", m.oracleMlpSaved}};
        sumMlp += m.oracleMlpSaved;
        if (m.oracleBlockSaved >= 0) {
            L["oracle_block_saved_frac"] = m.oracleBlockSaved;
            sumBlock += m.oracleBlockSaved;
            ++nBlock;
        }
        layers.push_back(std::move(L));
    }
    return {{"site", "layers.N.mlp.down input (the MLP intermediate)"},
            {"near_zero_rel_definition", "|x| <= 1e-2 * max over the token's channels of |x|"},
            {"near_zero_abs_definition", "|x| <= 1e-3"},
            {"oracle_definition",
             "predictor-free upper bound: the near-zero (rel) neurons' rows of gate/up and "
             "columns of down skipped, as a fraction of the MLP's and of the block's linear MACs"},
            {"mean_oracle_mlp_saved_frac", rows.empty() ? 0.0 : sumMlp / double(rows.size())},
            {"mean_oracle_block_saved_frac", nBlock ? sumBlock / nBlock : 0.0},
            {"layers", layers}};
}

} // namespace

std::string statsKey(const StatsOptions& o) {
    std::ostringstream s;
    s << "schema=" << kStatsSchemaVersion << ";weights=" << o.weights
      << ";activations=" << o.activations << ";bins=" << o.weight.histBins
      << ";sigma=" << o.weight.histSigma << ";previews=";
    for (auto& p : o.weight.previews) s << p.label() << ",";
    if (o.activations) {
        const std::string path =
            o.calibration.textFile.empty() ? builtinCalibrationPath() : o.calibration.textFile;
        std::ifstream in(path, std::ios::binary);
        if (!in) throw Error(path + ": cannot read calibration text");
        std::stringstream t;
        t << in.rdbuf();
        const std::string text = t.str();
        s << ";calib=" << sha256Hex(text.data(), text.size())
          << ";samples=" << o.calibration.samples << ";seq=" << o.calibration.seqLen
          << ";abins=" << o.calibration.act.histBins << ";sites=" << o.calibration.act.linearInputs
          << o.calibration.act.residuals << o.calibration.act.kv
          << ";mlp_sparsity=1"; // near-zero counts of the MLP intermediates (files before lack
                                // them)
    }
    const std::string k = s.str();
    return "sha256:" + sha256Hex(k.data(), k.size());
}

Status computeStats(const Model& model, const StatsOptions& opts, StatsReport& r,
                    Progress& progress) {
    r = {};
    r.schemaVersion = kStatsSchemaVersion;
#ifdef LCW_VERSION
    r.lcwVersion = LCW_VERSION;
#endif
    r.createdUtc = utcNow();
    r.modelPath = model.path();
    r.modelFingerprint = modelFingerprint(model);
    r.statsKey = statsKey(opts);
    const ModelSpec& s = model.spec();
    r.arch = s.arch;
    r.nLayers = s.nLayers;
    r.dim = s.dim;
    r.nHeads = s.nHeads;
    r.nKvHeads = s.nKvHeads;
    r.headDim = s.headDim;
    r.hidden = s.hidden;
    r.vocab = s.vocab;
    r.previews = opts.weight.previews;
    r.histBins = opts.weight.histBins;
    r.histSigma = opts.weight.histSigma;
    const double split = opts.weights && opts.activations ? 0.5 : opts.weights ? 1.0 : 0.0;
    if (opts.weights) {
        RangeProgress sp(progress, 0, split);
        if (computeWeightStats(model, opts.weight, r.weights, sp) == Status::Cancelled)
            return Status::Cancelled;
        r.hasWeights = true;
    }
    if (opts.activations) {
        RangeProgress sp(progress, split, 1);
        if (runCalibration(model, opts.calibration, r.activations, r.calibration, sp) ==
            Status::Cancelled)
            return Status::Cancelled;
        r.hasActivations = true;
    }
    r.summaryJson = layerRanking(r).dump();
    return Status::Ok;
}

Status computeAndSaveStats(const Model& model, const StatsOptions& opts, const std::string& path,
                           StatsReport& out, Progress& progress) {
    const Status st = computeStats(model, opts, out, progress);
    if (st == Status::Ok) StatsStore::save(path, out);
    return st;
}

double meanUnevenness(const StatsReport& r, const std::string& kind) {
    double s = 0;
    int n = 0;
    for (auto& a : r.activations)
        if (a.kind == kind) {
            s += channelUnevenness(a);
            ++n;
        }
    return n ? s / n : 0;
}

nlohmann::ordered_json layerRanking(const StatsReport& r) {
    using json = nlohmann::ordered_json;
    struct Row {
        int layer = 0;
        double wOut = 0, wKurt = 0, prev = 0, aOut = 0, aMax = 0, aOutCh = 0, kU = 0, vU = 0;
        int64_t wRelCh = 0; ///< relative weight outlier input channels, summed over tensors
        std::string wOutT, wKurtT, prevT, aOutT;
        double score = 0;
    };
    std::vector<Row> rows;
    for (int l = 0; l < int(r.nLayers); ++l) {
        rows.emplace_back();
        rows.back().layer = l;
    }
    const std::string pk =
        r.previews.empty() ? "" : "preview." + r.previews.front().label() + ".rel_fro";
    for (auto& t : r.weights) {
        if (t.layer < 0 || t.layer >= int(r.nLayers)) continue;
        Row& w = rows[size_t(t.layer)];
        if (num(t.get("outlier_ratio")) > w.wOut) w.wOut = t.get("outlier_ratio"), w.wOutT = t.name;
        if (num(t.get("kurtosis")) > w.wKurt) w.wKurt = t.get("kurtosis"), w.wKurtT = t.name;
        if (!pk.empty() && num(t.get(pk)) > w.prev) w.prev = t.get(pk), w.prevT = t.name;
        // From the per-channel array, so files written before the scalar existed give it too.
        if (auto it = t.arrays.find("in_absmax"); it != t.arrays.end())
            w.wRelCh += int64_t(relativeOutlierChannels(it->second).channels.size());
    }
    for (auto& a : r.activations) {
        if (a.layer < 0 || a.layer >= int(r.nLayers)) continue;
        Row& w = rows[size_t(a.layer)];
        if (a.kind == "activation" || a.kind == "residual") {
            if (a.kind == "activation" && num(a.get("outlier_ratio")) > w.aOut)
                w.aOut = a.get("outlier_ratio"), w.aOutT = a.name;
            w.aMax = std::max(w.aMax, num(a.get("absmax")));
            if (a.kind == "activation")
                w.aOutCh = std::max(w.aOutCh, num(a.get("outlier_channels_ge6")));
        } else if (a.kind == "k") {
            w.kU = channelUnevenness(a);
        } else if (a.kind == "v") {
            w.vU = channelUnevenness(a);
        }
    }
    // Mean rank over the criteria present (rank 1 = largest value).
    std::vector<double Row::*> crit;
    if (r.hasWeights) crit = {&Row::wOut, &Row::wKurt};
    if (r.hasWeights && !pk.empty()) crit.push_back(&Row::prev);
    if (r.hasActivations) crit.push_back(&Row::aOut);
    for (auto c : crit) {
        std::vector<size_t> idx(rows.size());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
        std::stable_sort(idx.begin(), idx.end(),
                         [&](size_t a, size_t b) { return rows[a].*c > rows[b].*c; });
        for (size_t k = 0; k < idx.size(); ++k) rows[idx[k]].score += double(k + 1);
    }
    for (auto& w : rows) w.score = crit.empty() ? 0 : w.score / double(crit.size());
    std::stable_sort(rows.begin(), rows.end(),
                     [](const Row& a, const Row& b) { return a.score < b.score; });

    json j;
    j["model"] = r.modelPath;
    j["model_fingerprint"] = r.modelFingerprint;
    j["stats_key"] = r.statsKey;
    j["schema_version"] = kStatsSchemaVersion;
    j["kurtosis_definition"] = "m4/sigma^4 (non-excess; Gaussian = 3)";
    json pv = json::array();
    for (auto& p : r.previews) pv.push_back(p.label());
    j["previews"] = pv;
    if (r.hasActivations) {
        const auto& c = r.calibration;
        j["calibration"] = {{"source", c.source},   {"builtin", c.builtin}, {"sha256", c.sha256},
                            {"samples", c.samples}, {"seq_len", c.seqLen},  {"tokens", c.tokens}};
        const double k = meanUnevenness(r, "k"), kp = meanUnevenness(r, "k_pre_rope"),
                     v = meanUnevenness(r, "v");
        j["kv_channel_unevenness"] = {
            {"definition", "per-channel absmax: max / median, mean over layers"},
            {"k_post_rope", k},
            {"k_pre_rope", kp},
            {"v", v},
            {"k_post_over_v", v > 0 ? k / v : 0.0},
            {"k_pre_over_v", v > 0 ? kp / v : 0.0}};
        double massive = 0;
        std::string massiveSite;
        for (auto& a : r.activations)
            if (a.kind == "residual" && num(a.get("tok_absmax_max_over_median")) > massive)
                massive = a.get("tok_absmax_max_over_median"), massiveSite = a.name;
        j["massive_activation"] = {{"site", massiveSite}, {"tok_absmax_max_over_median", massive}};
        j["mlp_sparsity"] = mlpSparsityJson(r);
    }
    j["weight_tensors"] = r.weights.size();
    if (r.hasWeights) j["weight_outlier_k"] = kDefaultOutlierK;
    j["activation_sites"] = r.activations.size();
    json layers = json::array();
    int rank = 1;
    for (auto& w : rows) {
        json L;
        L["rank"] = rank++;
        L["layer"] = w.layer;
        L["score"] = w.score;
        if (r.hasWeights) {
            L["weight_outlier_ratio"] = w.wOut;
            L["weight_outlier_ratio_tensor"] = w.wOutT;
            L["weight_kurtosis"] = w.wKurt;
            L["weight_kurtosis_tensor"] = w.wKurtT;
            L["weight_outlier_channels"] = w.wRelCh;
            if (!pk.empty()) {
                L["preview_rel_fro"] = w.prev;
                L["preview_tensor"] = w.prevT;
            }
        }
        if (r.hasActivations) {
            L["act_outlier_ratio"] = w.aOut;
            L["act_outlier_ratio_site"] = w.aOutT;
            L["act_absmax"] = w.aMax;
            L["act_outlier_channels_ge6"] = w.aOutCh;
            L["k_unevenness"] = w.kU;
            L["v_unevenness"] = w.vU;
        }
        layers.push_back(L);
    }
    j["layers"] = layers;
    return j;
}

} // namespace lcw::stats
