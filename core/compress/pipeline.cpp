// compress() with calibration data: block by block, each block's inputs captured through the
// overlay built so far (and through the unquantised model for AWQ and SmoothQuant, as their
// references take their statistics), then SmoothQuant folding, AWQ scale search and folding, and
// every layer quantised with its method (RTN, GPTQ, AWQ clipping), outlier columns kept in 16 bits.
#include "core/compress/pipeline.h"

#include "core/common/dtype.h"
#include "core/common/mapped_file.h"
#include "core/compress/awq.h"
#include "core/compress/block_grad.h"
#include "core/compress/compact_formats.h"
#include "core/compress/efficientqat.h"
#include "core/compress/folding.h"
#include "core/compress/gptq.h"
#include "core/compress/omniquant.h"
#include "core/compress/smoothquant.h"
#include "core/compress/threads.h"
#include "core/stats/fingerprint.h"

#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>

namespace lcw::compress {

namespace {

using json = nlohmann::ordered_json;
using MatRF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatRD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int blockIndex(const std::string& name) {
    if (name.rfind("layers.", 0) != 0) return -1;
    return std::stoi(name.substr(7, name.find('.', 7) - 7));
}

/// Sets `out` from j[key] when the section has that key (the recipe parser checked its type).
template <class T> void readIf(const nlohmann::json& j, const char* key, T& out) {
    if (j.contains(key)) out = j[key].get<T>();
}

GptqOptions gptqOptions(const nlohmann::json& w) {
    return gptqOptionsFromJson(w);
}

AwqOptions awqOptions(const nlohmann::json& w) {
    AwqOptions o;
    if (!w.contains("awq")) return o;
    const auto& a = w["awq"];
    readIf(a, "grid", o.grid);
    readIf(a, "clip_search", o.clipSearch);
    readIf(a, "clip_grid", o.clipGrid);
    readIf(a, "max_shrink", o.maxShrink);
    readIf(a, "rows", o.maxRows);
    readIf(a, "seed", o.seed);
    auto str = [&](const char* key, const char* def) {
        return a.contains(key) ? a[key].get<std::string>() : std::string(def);
    };
    o.objective = str("objective", "module-output") == "joint-linears" ? AwqObjective::JointLinears
                                                                       : AwqObjective::ModuleOutput;
    o.gridRule = str("grid_rule", "reference") == "inclusive" ? AwqGridRule::Inclusive
                                                              : AwqGridRule::Reference;
    o.clip = str("clip", "auto") == "range" ? AwqClipMode::Range : AwqClipMode::Auto;
    o.fpStats = str("stats", "fp") != "compressed";
    return o;
}

/// Whether a layer's statistics and search inputs come from the unquantised model (AWQ with
/// "stats": "fp", the default) rather than through the overlay built so far.
bool usesFpInputs(const LayerPlan& lp) {
    return lp.weight.method == WeightMethod::Awq && awqOptions(lp.weightJson).fpStats;
}

/// SmoothQuant's "rule" of the rule that set a layer's α: "reference" (default, smooth_ln_fcs),
/// "ratio" (lcw's earlier (max|X|/max|W|)^α) or "percentile" (DGQ's).
SmoothQuantRule smoothRule(const Recipe& r, int rule) {
    if (rule < 0 || size_t(rule) >= r.rules.size()) return SmoothQuantRule::Reference;
    const auto& q = r.rules[size_t(rule)].smoothquant;
    const std::string name =
        q && q->is_object() ? q->value("rule", std::string("reference")) : "reference";
    return name == "ratio"        ? SmoothQuantRule::Ratio
           : name == "percentile" ? SmoothQuantRule::Percentile
                                  : SmoothQuantRule::Reference;
}

/// SmoothQuant's "stats" of the rule that set a layer's α: "fp" or "compressed"; the default is
/// the reference's: "fp" (smoothquant's get_act_scales on the model), "compressed" for DGQ's
/// percentile rule (its statistics come through the blocks quantised before).
bool smoothFpStats(const Recipe& r, int rule) {
    if (rule < 0 || size_t(rule) >= r.rules.size()) return true;
    const auto& q = r.rules[size_t(rule)].smoothquant;
    const std::string def =
        smoothRule(r, rule) == SmoothQuantRule::Percentile ? "compressed" : "fp";
    return !(q && q->is_object()) || q->value("stats", def) == "fp";
}

const char* smoothRuleName(SmoothQuantRule r) {
    return r == SmoothQuantRule::Ratio        ? "ratio"
           : r == SmoothQuantRule::Percentile ? "percentile"
                                              : "reference";
}

OmniQuantOptions omniOptions(const nlohmann::json& w) {
    OmniQuantOptions o;
    readIf(w, "epochs", o.epochs);
    readIf(w, "lr", o.lr);
    readIf(w, "let", o.let);
    readIf(w, "let_shift", o.letShift);
    readIf(w, "lr_let", o.lrLet);
    // AffineQuant: "affine": true, or an object of its options (the recipe parser checked them).
    if (w.contains("affine")) {
        const nlohmann::json& a = w["affine"];
        o.affine.on = a.is_object() || (a.is_boolean() && a.get<bool>());
        if (a.is_object()) {
            readIf(a, "lr", o.affine.lr);
            readIf(a, "alpha", o.affine.alpha);
            readIf(a, "dominance", o.affine.rho);
            readIf(a, "min_diag", o.affine.dMin);
            const std::string mask = a.value("mask", std::string("gradual"));
            o.affine.mask = mask == "full"       ? AffineMask::Full
                            : mask == "diagonal" ? AffineMask::Diagonal
                                                 : AffineMask::Gradual;
        }
    }
    return o;
}

EfficientQatOptions efficientQatOptions(const nlohmann::json& w) {
    EfficientQatOptions o;
    readIf(w, "epochs", o.epochs);
    readIf(w, "lr_w", o.lrW);
    readIf(w, "lr_q", o.lrQ);
    readIf(w, "e2e_epochs", o.e2eEpochs);
    readIf(w, "lr_e2e", o.lrE2e);
    return o;
}

/// The merged activation section of a layer (later rules override field by field, null resets);
/// null when the layer's activations stay float.
nlohmann::json activationOf(const Recipe& r, const std::string& name) {
    nlohmann::json a;
    for (const Rule& rule : r.rules) {
        if (!rule.activation || !rule.matches(name)) continue;
        if (rule.activation->is_null()) {
            a = nullptr;
            continue;
        }
        if (!a.is_object()) a = nlohmann::json::object();
        for (auto it = rule.activation->begin(); it != rule.activation->end(); ++it)
            a[it.key()] = it.value();
    }
    return a;
}

/// OmniQuant's simulated activation quantisation of block `b`'s sites from the recipe: the
/// runtime's dynamic per-token scheme for sections with bits < 16 (static per-tensor sections
/// are not simulated: 0 = float).
void omniActivation(const Recipe& r, int b, OmniQuantOptions& o) {
    const std::string p = "layers." + std::to_string(b) + ".";
    const char* site[4] = {"attn.q", "attn.o", "mlp.gate", "mlp.down"};
    for (size_t i = 0; i < 4; ++i) {
        const nlohmann::json a = activationOf(r, p + site[i]);
        o.actBits[i] = 0;
        o.actClip[i] = 1.0;
        if (!a.is_object()) continue;
        const int bits = a.contains("bits") ? a["bits"].get<int>() : 8;
        const std::string mode =
            a.contains("mode") ? a["mode"].get<std::string>() : "dynamic_per_token";
        if (bits >= 16 || mode != "dynamic_per_token") continue;
        o.actBits[i] = bits;
        if (a.contains("clip")) o.actClip[i] = a["clip"].get<double>();
    }
}

/// Evenly strided rows of the captured sample, divided by the input scales.
std::vector<float> searchRows(const LinearInputs& in, const std::vector<float>* inScale,
                              int64_t maxRows, int64_t& n) {
    const int64_t c = in.cols;
    const int64_t stride = std::max<int64_t>(1, (in.sampleRows + maxRows - 1) / maxRows);
    std::vector<float> X;
    n = 0;
    for (int64_t r = 0; r < in.sampleRows; r += stride, ++n)
        for (int64_t j = 0; j < c; ++j)
            X.push_back(in.sample[size_t(r * c + j)] / (inScale ? (*inScale)[size_t(j)] : 1.0f));
    return X;
}

/// tr(D H Dᵀ) and tr(W H Wᵀ) with H the Gram of the (scaled) input.
double outputRelError(const std::vector<float>& w, const std::vector<float>& wq, int64_t rows,
                      int64_t cols, const std::vector<double>& gram,
                      const std::vector<float>* inScale) {
    MatRF H = Eigen::Map<const MatRD>(gram.data(), cols, cols).cast<float>();
    if (inScale)
        for (int64_t i = 0; i < cols; ++i)
            for (int64_t j = 0; j < cols; ++j)
                H(i, j) /= (*inScale)[size_t(i)] * (*inScale)[size_t(j)];
    MatRF M(2 * rows, cols);
    const Eigen::Map<const MatRF> W(w.data(), rows, cols), Q(wq.data(), rows, cols);
    M.topRows(rows) = W - Q;
    M.bottomRows(rows) = W;
    const MatRF P = M * H;
    const double num =
        (P.topRows(rows).cast<double>().array() * M.topRows(rows).cast<double>().array()).sum();
    const double den =
        (P.bottomRows(rows).cast<double>().array() * M.bottomRows(rows).cast<double>().array())
            .sum();
    if (!(den > 0)) return num > 0 ? INFINITY : 0.0;
    return std::sqrt(std::max(num, 0.0) / den);
}

} // namespace

std::optional<double> outlierThreshold(const Recipe& r, const std::string& name) {
    std::optional<double> t;
    for (const Rule& rule : r.rules) {
        if (!rule.outliers || !rule.matches(name)) continue;
        if (rule.outliers->is_null()) {
            t.reset();
        } else {
            // LLM.int8()'s default threshold when the rule names none.
            t = rule.outliers->contains("threshold") ? (*rule.outliers)["threshold"].get<double>()
                                                     : 6.0;
        }
    }
    return t;
}

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// The plan's layers by block (in block order) and the layers outside blocks (lm_head, embed).
struct BlockLayout {
    std::map<int, std::vector<size_t>> blocks;
    std::vector<size_t> others;
};

BlockLayout groupByBlock(const Plan& P) {
    BlockLayout g;
    for (size_t i = 0; i < P.layers.size(); ++i) {
        const int b = blockIndex(P.layers[i].name);
        if (b < 0) {
            if (methodNeedsCalibration(P.layers[i].weight.method))
                throw UnsupportedError(P.layers[i].name + ": method '" +
                                       weightMethodName(P.layers[i].weight.method) +
                                       "' applies to the linears inside blocks only");
            g.others.push_back(i);
        } else {
            g.blocks[b];
            g.blocks[b].push_back(i);
        }
    }
    for (const auto& [name, a] : P.smooth)
        if (blockIndex(name) >= 0) g.blocks[blockIndex(name)];
    return g;
}

/// Multiplies per-channel scales `s` into `v` (an empty `v` is all ones).
void multiplyScales(std::vector<float>& v, const std::vector<float>& s) {
    if (v.empty()) v.assign(s.size(), 1.0f);
    for (size_t j = 0; j < s.size(); ++j) v[j] *= s[j];
}

/// What every step of a calibrated compression shares.
struct CalibratedRun {
    CalibratedRun(const Model& base, const Recipe& recipe, const Plan& P, Progress& progress,
                  const CompressOptions& opts, CompressedModel& cm, CompressResult& res)
        : base(base), recipe(recipe), P(P), progress(progress), opts(opts), cal(*opts.calibration),
          cm(cm), res(res) {}

    const Model& base;
    const Recipe& recipe;
    const Plan& P;
    Progress& progress;
    const CompressOptions& opts;
    const CalibrationSet& cal;
    CompressedModel& cm;
    CompressResult& res;
    double nUnits = 0; ///< progress units: the blocks, plus one for the layers outside blocks
    double unit = 0;   ///< the unit at work
    std::map<std::string, LayerReport> reports;
    // OmniQuant's full-precision block inputs (targets), carried from block to block.
    std::vector<std::vector<float>> fpHidden;
    int fpLayer = -1;
    /// SqueezeLLM's Fisher sensitivities (layers with "sensitivity": "fisher"), of the model
    /// before any layer is quantised.
    std::map<std::string, std::vector<float>> fisher;
    int64_t fisherWindows = 0;

    // Once a layer is in the overlay the base's pages of it leave the resident set (file pages
    // stay cached): peak memory is the overlay plus about one block's work, not the base model.
    void releaseBase(const std::string& name) const {
        if (const TensorView* t = base.find(name)) MappedFile::releasePages(t->data, t->nbytes);
    }
};

/// The block being compressed: its captured inputs, its folded tensors and what the steps
/// before quantisation leave for it.
/// AWQ's module-output objective on a Llama-style block: the block's fp forward (double) on the
/// calibration windows, before any AWQ scaling (after SmoothQuant's folding).
struct AwqModuleData {
    std::unique_ptr<LlamaBlock> block;
    BlockWeights bw;
    std::vector<MatD> xn1, attnRef, xn2, mlpRef;        ///< per window: module inputs and outputs
    std::map<std::string, std::vector<float>> meanAbs;  ///< per site kind, over all tokens
    MatD gramO, gramDown;                               ///< Σ xᵀx of o's and down's inputs
    std::map<std::string, std::vector<float>> clipRows; ///< per site kind: sampled token rows
    int64_t tokens = 0, clipTokens = 0;
};

struct BlockWork {
    BlockWork(CompressedModel& cm, int b, const std::vector<size_t>& idx,
              std::map<std::string, LinearInputs> in, std::map<std::string, LinearInputs> fpIn)
        : b(b), bname("layers." + std::to_string(b)), idx(idx), inputs(std::move(in)),
          fpInputs(std::move(fpIn)), bt(cm) {}

    const int b;
    const std::string bname;
    const std::vector<size_t>& idx; ///< the block's plan entries
    /// Inputs captured through the overlay so far and through the unquantised model; one of the
    /// two may be empty (not needed, or the same capture serves both).
    const std::map<std::string, LinearInputs> inputs, fpInputs;
    BlockTensors bt;
    std::map<std::string, std::vector<float>> awqScale; ///< AWQ's share of inScale (reference)
    std::unique_ptr<AwqModuleData> awqData;

    const std::map<std::string, LinearInputs>& in(bool fp) const {
        if (fp) return fpInputs.empty() ? inputs : fpInputs;
        return inputs.empty() ? fpInputs : inputs;
    }
    std::map<std::string, std::vector<float>> inScale; ///< input scales folded so far, per linear
    std::map<std::string, json> details;
    std::map<std::string, const LayerPlan*> planOf;
    std::set<std::string> sitesDone;
    std::map<std::string, double> searchSeconds;    // AWQ scale search, shared out per site
    std::map<std::string, PackedTensor> omniPacked; ///< OmniQuant's and EfficientQAT's results
    std::set<std::string> quantised;

    const std::vector<float>* scaleOf(const std::string& name) const {
        return inScale.count(name) ? &inScale.at(name) : nullptr;
    }
    void scaleInputs(const FoldSite& site, const std::vector<float>& s) {
        applyFold(bt, site, s);
        for (const auto& l : site.linears) multiplyScales(inScale[l], s);
    }
};

/// A layer's report with the plan's fields filled in.
LayerReport planReport(const LayerPlan& lp) {
    LayerReport lr;
    lr.name = lp.name;
    lr.shape = {lp.rows, lp.cols};
    lr.scheme = lp.weight.describe();
    lr.rule = lp.origin.count("weight") ? lp.origin.at("weight") : -1;
    lr.bits = lp.weight.bits;
    return lr;
}

/// Step 1: SmoothQuant on the norm-fed inputs (and, with DGQ's percentile rule, on the down
/// projection's input, folded into the up projection's rows).
void smoothQuantBlock(const CalibratedRun& run, BlockWork& w) {
    for (const std::string kind : {"attn.q", "mlp.gate", "mlp.up", "mlp.down"}) {
        const std::string lead = w.bname + "." + kind;
        FoldSite site;
        std::string why;
        if (!w.in(true).count(lead) || !findFoldSite(run.cm, w.b, lead, site, why)) continue;
        if (w.sitesDone.count(site.kind + "_sq")) continue;
        std::optional<std::pair<double, int>> alpha;
        for (const auto& l : site.linears)
            if (run.P.smooth.count(l)) alpha = run.P.smooth.at(l);
        if (!alpha) continue;
        if (kind == "mlp.down" &&
            smoothRule(run.recipe, alpha->second) != SmoothQuantRule::Percentile)
            continue; // SmoothQuant's reference smooths the norm-fed inputs only
        w.sitesDone.insert(site.kind + "_sq");
        std::vector<const float*> ws;
        std::vector<int64_t> rows;
        for (const auto& l : site.linears) {
            ws.push_back(w.bt.get(l).data());
            rows.push_back(w.bt.rows(l));
        }
        // The reference (smoothquant's get_act_scales) takes max|X| from the unquantised model.
        const bool fp = smoothFpStats(run.recipe, alpha->second);
        const SmoothQuantRule sqRule = smoothRule(run.recipe, alpha->second);
        const auto s = smoothQuantScales(w.in(fp).at(lead).absMax, ws, rows, site.channels,
                                         alpha->first, sqRule);
        w.scaleInputs(site, s);
        for (const auto& l : site.linears) {
            if (sqRule != SmoothQuantRule::Percentile)
                w.details[l]["smoothquant_alpha"] = alpha->first;
            w.details[l]["smoothquant_stats"] = fp ? "fp" : "compressed";
            w.details[l]["smoothquant_rule"] = smoothRuleName(sqRule);
        }
    }
    for (const auto& [l, a] : run.P.smooth) {
        if (blockIndex(l) != w.b || w.details[l].contains("smoothquant_rule")) continue;
        w.details[l]["note"] = "smoothquant: not applied (no foldable norm before this layer)";
    }
}

/// AWQ's per-channel activation statistic of a site, divided by the input scales; heads
/// sharing a kv channel share the scale, so their statistics are averaged.
std::vector<float> awqStatistic(const LinearInputs& in, const std::vector<float>* sc,
                                const FoldSite& site) {
    std::vector<float> stat = in.meanAbs;
    if (sc)
        for (size_t j = 0; j < stat.size(); ++j) stat[j] /= (*sc)[j];
    if (!site.kvChannel.empty()) {
        // Heads sharing a kv channel share the scale: average their statistic.
        std::map<int64_t, std::pair<double, int>> acc;
        for (size_t c = 0; c < stat.size(); ++c) {
            auto& a = acc[site.kvChannel[c]];
            a.first += stat[c], a.second += 1;
        }
        for (size_t c = 0; c < stat.size(); ++c) {
            const auto& a = acc[site.kvChannel[c]];
            stat[c] = float(a.first / a.second);
        }
    }
    return stat;
}

/// The linears of an AWQ site as the scale search sees them.
std::vector<AwqMember> awqMembers(BlockWork& w, const FoldSite& site) {
    std::vector<AwqMember> members;
    for (const auto& l : site.linears) {
        AwqMember m;
        m.w = w.bt.get(l).data();
        m.rows = w.bt.rows(l);
        m.name = l;
        const auto it = w.planOf.find(l);
        m.quantized = it != w.planOf.end() && !methodIsGguf(it->second->weight.method);
        if (m.quantized) m.settings = it->second->weight;
        members.push_back(m);
    }
    return members;
}

/// lcw's joint-linears search of one site: Σ over its linears of the output error on up to
/// ao.maxRows strided rows of the captured input (scaled by the folds so far).
AwqScaleResult jointLinearsSearch(BlockWork& w, const FoldSite& site, const AwqOptions& ao) {
    const LinearInputs& in = w.in(ao.fpStats).at(site.linears[0]);
    const std::vector<float>* sc = w.scaleOf(site.linears[0]);
    int64_t n = 0;
    const std::vector<float> X = searchRows(in, sc, ao.maxRows, n);
    return awqSearchScale(X.data(), n, site.channels, awqStatistic(in, sc, site),
                          awqMembers(w, site), ao);
}

/// The details every linear of an AWQ site reports.
void reportAwqSite(BlockWork& w, const FoldSite& site, const AwqScaleResult& r,
                   const std::string& objective) {
    for (const auto& l : site.linears) {
        json& d = w.details[l];
        d["awq_site"] = site.kind;
        d["awq_alpha"] = r.alpha;
        d["awq_search_error"] = r.error;
        d["awq_identity_error"] = r.identityError;
        d["awq_objective"] = objective;
    }
}

/// Searches and folds the AWQ scale of one site (joint-linears objective).
void awqScaleSite(BlockWork& w, const LayerPlan& lp, const FoldSite& site) {
    const auto s0 = Clock::now();
    const AwqScaleResult r = jointLinearsSearch(w, site, awqOptions(lp.weightJson));
    w.scaleInputs(site, r.scale);
    const double secs = secondsSince(s0);
    for (const auto& l : site.linears) w.searchSeconds[l] = secs / double(site.linears.size());
    reportAwqSite(w, site, r, "joint-linears");
}

/// Index of a block linear in BlockWeights::w from its canonical name, -1 when none.
int blockLinearOf(const std::string& name) {
    for (int i = 0; i < 7; ++i) {
        const std::string suf = std::string(".") + blockLinearSuffix(i);
        if (name.size() > suf.size() &&
            name.compare(name.size() - suf.size(), suf.size(), suf) == 0)
            return i;
    }
    return -1;
}

/// The site kind whose input a block linear reads (attn_in, attn_o, mlp_in, mlp_down).
std::string awqSiteKindOf(const std::string& name) {
    switch (blockLinearOf(name)) {
    case kQ:
    case kK:
    case kV:
        return "attn_in";
    case kO:
        return "attn_o";
    case kGate:
    case kUp:
        return "mlp_in";
    case kDown:
        return "mlp_down";
    default:
        return "";
    }
}

MatD doubleMatrix(const std::vector<float>& v, int64_t rows, int64_t cols) {
    return Eigen::Map<const MatRF>(v.data(), rows, cols).cast<double>();
}

/// down(silu(gate·x) ∘ up·x) of the MLP, double.
MatD mlpOutput(const BlockWeights& bw, const MatD& xn) {
    const MatD g = xn * bw.w[kGate].transpose(), u = xn * bw.w[kUp].transpose();
    const MatD m = g.unaryExpr([](double v) { return v / (1.0 + std::exp(-v)); }).cwiseProduct(u);
    return m * bw.w[kDown].transpose();
}

/// The fp forward of a Llama-style block on the calibration windows (hidden states entering the
/// block from `src`), with the block's weights as they are before AWQ's scaling.
std::unique_ptr<AwqModuleData> awqModuleData(const CalibratedRun& run, BlockWork& w,
                                             const WeightSource& src, const AwqOptions& ao) {
    const ModelSpec& spec = run.base.spec();
    const int64_t T = run.cal.seqLen(), dim = spec.dim;
    const auto hidden = captureBlockHidden(src, run.cal, w.b);
    if (hidden.empty()) return nullptr;
    auto d = std::make_unique<AwqModuleData>();
    d->block = std::make_unique<LlamaBlock>(spec, w.b, T);
    d->bw = loadBlockWeights(run.cm, w.b);
    for (int i = 0; i < 7; ++i) {
        const std::string n = w.bname + "." + blockLinearSuffix(i);
        d->bw.w[size_t(i)] = doubleMatrix(w.bt.get(n), w.bt.rows(n), w.bt.cols(n));
    }
    const std::vector<float>& an = w.bt.get(w.bname + ".attn_norm");
    const std::vector<float>& mn = w.bt.get(w.bname + ".mlp_norm");
    d->bw.attnNorm =
        Eigen::Map<const Eigen::VectorXf>(an.data(), int64_t(an.size())).cast<double>();
    d->bw.mlpNorm = Eigen::Map<const Eigen::VectorXf>(mn.data(), int64_t(mn.size())).cast<double>();
    const int64_t N = int64_t(hidden.size()) * T;
    d->tokens = N;
    const std::vector<int64_t> pick = awqSampleTokens(N, ao.maxRows, ao.seed);
    d->clipTokens = int64_t(pick.size());
    std::map<std::string, Eigen::VectorXd> sumAbs;
    size_t next = 0;
    for (size_t smp = 0; smp < hidden.size(); ++smp) {
        const MatD x = Eigen::Map<const MatRF>(hidden[smp].data(), T, dim).cast<double>();
        MatD y;
        LlamaBlock::Cache c;
        d->block->forward(d->bw, x, y, &c);
        const std::pair<const char*, const MatD*> site[4] = {
            {"attn_in", &c.xn1}, {"attn_o", &c.o}, {"mlp_in", &c.xn2}, {"mlp_down", &c.m}};
        for (const auto& [kind, X] : site) {
            const Eigen::VectorXd a = X->cwiseAbs().colwise().sum().transpose();
            auto& acc = sumAbs[kind];
            if (acc.size() == 0) acc = Eigen::VectorXd::Zero(a.size());
            acc += a;
        }
        if (d->gramO.size() == 0) {
            d->gramO = MatD::Zero(c.o.cols(), c.o.cols());
            d->gramDown = MatD::Zero(c.m.cols(), c.m.cols());
        }
        d->gramO.noalias() += c.o.transpose() * c.o;
        d->gramDown.noalias() += c.m.transpose() * c.m;
        for (; next < pick.size() && pick[next] / T == int64_t(smp); ++next) {
            const int64_t t = pick[next] % T;
            for (const auto& [kind, X] : site)
                for (int64_t j = 0; j < X->cols(); ++j)
                    d->clipRows[kind].push_back(float((*X)(t, j)));
        }
        d->attnRef.push_back(d->block->attentionOutput(d->bw, c.xn1));
        d->mlpRef.push_back(mlpOutput(d->bw, c.xn2));
        d->xn1.push_back(std::move(c.xn1));
        d->xn2.push_back(std::move(c.xn2));
    }
    for (const auto& [kind, acc] : sumAbs) {
        auto& m = d->meanAbs[kind];
        for (int64_t j = 0; j < acc.size(); ++j) m.push_back(float(acc(j) / double(N)));
    }
    return d;
}

/// The module-output loss of a site: the mean squared difference of the inspected module's
/// output (attention for q/k/v, MLP for gate/up, the linear for o and down) from the fp output.
AwqLoss awqModuleLoss(const AwqModuleData& d, const FoldSite& site,
                      const std::vector<AwqMember>& members) {
    auto candidate = [&d, &members, &site](const std::vector<std::vector<float>>& wq) {
        BlockWeights cand = d.bw;
        for (size_t k = 0; k < members.size(); ++k)
            if (!wq[k].empty())
                cand.w[size_t(blockLinearOf(members[k].name))] =
                    doubleMatrix(wq[k], members[k].rows, site.channels);
        return cand;
    };
    const double N = double(d.tokens);
    if (site.kind == "attn_in" || site.kind == "mlp_in") {
        const bool attn = site.kind == "attn_in";
        return [&d, candidate, attn, N](const std::vector<std::vector<float>>& wq,
                                        const std::vector<float>&) {
            const BlockWeights cand = candidate(wq);
            // Per window, summed in order afterwards: the same loss with any thread count.
            std::vector<double> part(d.xn1.size(), 0.0);
            const int64_t width = attn ? d.attnRef[0].cols() : d.mlpRef[0].cols();
            // omp: nothrow (Eigen products on allocated matrices)
#pragma omp parallel for schedule(dynamic)
            for (int64_t s = 0; s < int64_t(d.xn1.size()); ++s) {
                const MatD out = attn ? d.block->attentionOutput(cand, d.xn1[size_t(s)])
                                      : mlpOutput(cand, d.xn2[size_t(s)]);
                part[size_t(s)] = (out - (attn ? d.attnRef : d.mlpRef)[size_t(s)]).squaredNorm();
            }
            double sum = 0;
            for (double v : part) sum += v;
            return sum / (N * double(width));
        };
    }
    // A single linear: mean over tokens and rows of (x·(w − ŵ))², exactly from Σ xᵀx.
    const MatD& G = site.kind == "attn_o" ? d.gramO : d.gramDown;
    return [&G, &members, &site, N](const std::vector<std::vector<float>>& wq,
                                    const std::vector<float>&) {
        const AwqMember& m = members[0];
        if (wq[0].empty()) return 0.0;
        const MatD D = doubleMatrix(wq[0], m.rows, site.channels) -
                       doubleMatrix(std::vector<float>(m.w, m.w + m.rows * site.channels), m.rows,
                                    site.channels);
        return (D * G).cwiseProduct(D).sum() / (N * double(m.rows));
    };
}

/// llm-awq's auto_scale for a block: every site searched on the weights before AWQ's scaling
/// (llm-awq restores the block after each search) in its order q/k/v, o, gate/up, down; o only
/// where v and o have the same shape; then all scales folded. The module-output objective needs
/// a Llama-style block (block_grad.h); other blocks fall back to the joint-linears objective on
/// sampled rows (noted in the layer details).
void awqReferenceSites(const CalibratedRun& run, BlockWork& w,
                       std::vector<std::pair<FoldSite, const LayerPlan*>> sites) {
    const auto s0 = Clock::now();
    auto rank = [](const std::string& k) {
        return k == "attn_in" ? 0 : k == "attn_o" ? 1 : k == "mlp_in" ? 2 : k == "mlp_down" ? 3 : 4;
    };
    std::stable_sort(sites.begin(), sites.end(), [&](const auto& a, const auto& b) {
        return rank(a.first.kind) < rank(b.first.kind);
    });
    std::vector<std::pair<FoldSite, const LayerPlan*>> kept;
    for (auto& sp : sites) {
        const FoldSite& site = sp.first;
        if (site.kind == "attn_o") {
            const std::string v = w.bname + ".attn.v", o = site.linears[0];
            if (w.bt.has(v) && (w.bt.rows(v) != w.bt.rows(o) || w.bt.cols(v) != w.bt.cols(o))) {
                w.details[o]["awq_site"] = "none";
                w.details[o]["note"] =
                    "awq: o's input not scaled (v and o differ in shape: grouped-query "
                    "attention), as llm-awq's auto_scale";
                continue;
            }
        }
        kept.push_back(std::move(sp));
    }
    if (kept.empty()) return;
    const AwqOptions ao0 = awqOptions(kept[0].second->weightJson);
    const std::string why = LlamaBlock::unsupportedReason(run.base.spec(), w.b, run.cal.seqLen());
    if (why.empty()) {
        w.awqData = awqModuleData(run, w,
                                  ao0.fpStats ? static_cast<const WeightSource&>(run.base)
                                              : static_cast<const WeightSource&>(run.cm),
                                  ao0);
    }
    std::vector<AwqScaleResult> found;
    std::vector<std::string> objective;
    for (const auto& [site, lp] : kept) {
        const AwqOptions ao = awqOptions(lp->weightJson);
        const std::vector<AwqMember> members = awqMembers(w, site);
        if (w.awqData && w.awqData->meanAbs.count(site.kind)) {
            found.push_back(awqSearchScaleLoss(site.channels, w.awqData->meanAbs.at(site.kind),
                                               members, ao,
                                               awqModuleLoss(*w.awqData, site, members)));
            objective.push_back("module-output");
            continue;
        }
        found.push_back(jointLinearsSearch(w, site, ao));
        objective.push_back("joint-linears (module-output needs a Llama-style block: " +
                            (why.empty() ? std::string("capture cancelled") : why) + ")");
    }
    const double secs = secondsSince(s0);
    size_t nl = 0;
    for (const auto& sp : kept) nl += sp.first.linears.size();
    for (size_t i = 0; i < kept.size(); ++i) {
        const FoldSite& site = kept[i].first;
        const AwqScaleResult& r = found[i];
        w.scaleInputs(site, r.scale);
        for (const auto& l : site.linears) {
            multiplyScales(w.awqScale[l], r.scale);
            w.searchSeconds[l] = secs / double(nl);
        }
        reportAwqSite(w, site, r, objective[i]);
        for (const auto& l : site.linears)
            w.details[l]["awq_stats"] = ao0.fpStats ? "fp" : "compressed";
    }
}

/// Step 2: AWQ scales, one search per input shared by AWQ layers: llm-awq's procedure
/// (awqReferenceSites) or, with "objective": "joint-linears", lcw's (each site searched and
/// folded in plan order).
void awqScaleBlock(const CalibratedRun& run, BlockWork& w) {
    std::vector<std::pair<FoldSite, const LayerPlan*>> reference;
    for (size_t i : w.idx) {
        const LayerPlan& lp = run.P.layers[i];
        if (lp.weight.method != WeightMethod::Awq) continue;
        FoldSite site;
        std::string why;
        if (!findFoldSite(run.cm, w.b, lp.name, site, why)) {
            w.details[lp.name]["note"] = "awq: no scaling (" + why + "), clipping search only";
            continue;
        }
        if (w.sitesDone.count(site.kind)) continue;
        w.sitesDone.insert(site.kind);
        if (awqOptions(lp.weightJson).objective == AwqObjective::JointLinears)
            awqScaleSite(w, lp, site);
        else
            reference.emplace_back(site, &lp);
    }
    if (!reference.empty()) awqReferenceSites(run, w, std::move(reference));
}

/// LET's folded norms and scaled weights replace the block's tensors; shift biases the base
/// lacks go straight into the overlay (1-D float). The LET scales join the input scales.
void applyLet(CalibratedRun& run, BlockWork& w, OmniQuantBlockResult& r) {
    for (auto& [name, v] : r.folded) {
        if (!run.base.find(name)) {
            const int64_t n = int64_t(v.size());
            run.cm.setFloatTensor(name, std::move(v), {n});
            continue;
        }
        w.bt.get(name) = std::move(v);
        w.bt.touch(name);
    }
    for (const auto& [norm, sv] : r.letScale) {
        const bool attn = norm.find("attn_norm") != std::string::npos;
        for (const char* l : attn ? std::vector<const char*>{"attn.q", "attn.k", "attn.v"}
                                  : std::vector<const char*>{"mlp.gate", "mlp.up"}) {
            auto& v = w.inScale[w.bname + "." + l];
            if (v.empty()) v.assign(sv.size(), 1.0f);
            for (size_t j = 0; j < sv.size(); ++j) v[j] *= float(sv[j]);
        }
    }
}

/// Reports OmniQuant's training on each of its layers and keeps their packed results.
void keepOmniResults(BlockWork& w, OmniQuantBlockResult& r, const OmniQuantOptions& oo) {
    for (auto& [name, p] : r.packed) {
        json& d = w.details[name];
        d["omniquant_epochs"] = oo.epochs;
        d["omniquant_lr"] = oo.lr;
        d["block_loss_start"] = r.lossStart;
        d["block_loss_end"] = r.lossEnd;
        d["best_epoch"] = r.bestEpoch;
        d["omniquant_seconds"] = r.seconds;
        d["epoch_loss"] = r.epochLoss;
        d["clip_max"] = r.meanClip.at(name).first;
        d["clip_min"] = r.meanClip.at(name).second;
        d["omniquant_act_bits"] = oo.actBits;
        for (const auto& [norm, sv] : r.letScale)
            d["let_scale_range"][norm] = {*std::min_element(sv.begin(), sv.end()),
                                          *std::max_element(sv.begin(), sv.end())};
        if (!r.affine.empty()) {
            d["affine_heads"] = r.affine.begin()->second.size();
            d["affine_band"] = r.affineBand;
            d["affine_dominance_margin"] = r.affineMargin;
            d["affine_max_offdiag_ratio"] = r.affineOffRatio;
        }
        w.omniPacked[name] = std::move(p);
    }
}

/// Step 3: OmniQuant: learned clipping of the block's omniquant linears on the block output.
/// False when cancelled.
bool omniquantStep(CalibratedRun& run, BlockWork& w) {
    std::map<std::string, WeightSettings> omniSet;
    OmniQuantOptions oo;
    for (size_t i : w.idx)
        if (run.P.layers[i].weight.method == WeightMethod::OmniQuant) {
            if (omniSet.empty()) {
                oo = omniOptions(run.P.layers[i].weightJson);
                omniActivation(run.recipe, w.b, oo);
            }
            omniSet[run.P.layers[i].name] = run.P.layers[i].weight;
        }
    if (omniSet.empty()) return true;
    RangeProgress omP(run.progress, (run.unit + 0.5) / run.nUnits, (run.unit + 1.0) / run.nUnits);
    if (run.fpLayer != w.b) run.fpHidden = captureBlockHidden(run.base, run.cal, w.b);
    const auto qIn = captureBlockHidden(run.cm, run.cal, w.b);
    if (run.fpHidden.empty() || qIn.empty()) return false;
    std::map<std::string, std::vector<float>> over;
    for (const auto& name : w.bt.modified()) over[name] = w.bt.get(name);
    OmniQuantBlockResult r =
        omniquantBlock(run.cm, w.b, qIn, run.fpHidden, omniSet, oo, omP, &over);
    if (r.status == Status::Cancelled) return false;
    run.fpHidden = std::move(r.fpOutputs);
    run.fpLayer = w.b + 1;
    applyLet(run, w, r);
    keepOmniResults(w, r, oo);
    return true;
}

/// Step 3b: EfficientQAT Block-AP: the block's efficientqat linears (weights, steps, zero points)
/// trained on the block output. False when cancelled.
bool efficientQatStep(CalibratedRun& run, BlockWork& w) {
    std::map<std::string, WeightSettings> set;
    EfficientQatOptions eo;
    for (size_t i : w.idx)
        if (run.P.layers[i].weight.method == WeightMethod::EfficientQat) {
            if (set.empty()) eo = efficientQatOptions(run.P.layers[i].weightJson);
            set[run.P.layers[i].name] = run.P.layers[i].weight;
        }
    if (set.empty()) return true;
    RangeProgress eqP(run.progress, (run.unit + 0.5) / run.nUnits, (run.unit + 1.0) / run.nUnits);
    if (run.fpLayer != w.b) run.fpHidden = captureBlockHidden(run.base, run.cal, w.b);
    const auto qIn = captureBlockHidden(run.cm, run.cal, w.b);
    if (run.fpHidden.empty() || qIn.empty()) return false;
    std::map<std::string, std::vector<float>> over;
    for (const auto& name : w.bt.modified()) over[name] = w.bt.get(name);
    EfficientQatBlockResult r =
        efficientQatBlock(run.cm, w.b, qIn, run.fpHidden, set, eo, eqP, &over);
    if (r.status == Status::Cancelled) return false;
    run.fpHidden = std::move(r.fpOutputs);
    run.fpLayer = w.b + 1;
    for (auto& [name, p] : r.packed) {
        json& d = w.details[name];
        d["efficientqat_epochs"] = eo.epochs;
        d["efficientqat_lr_w"] = eo.lrW;
        d["efficientqat_lr_q"] = eo.lrQ;
        d["block_loss_start"] = r.lossStart;
        d["block_loss_end"] = r.lossEnd;
        d["best_epoch"] = r.bestEpoch;
        d["epoch_loss"] = r.epochLoss;
        d["weight_change"] = r.weightChange.at(name);
        d["efficientqat_seconds"] = r.seconds;
        w.omniPacked[name] = std::move(p);
    }
    return true;
}

/// An expert no calibration token was routed to: RTN is still possible.
void quantiseUnreachedLayer(CalibratedRun& run, BlockWork& w, const LayerPlan& lp,
                            const std::vector<float>& W, Clock::time_point l0) {
    if (methodNeedsCalibration(lp.weight.method))
        throw Error(lp.name + ": no calibration token reached this layer (an expert "
                              "the router never chose?); give it an RTN rule or more "
                              "calibration samples");
    LayerReport lr = planReport(lp);
    PackedTensor p = quantize(W.data(), lp.rows, lp.cols, lp.weight, lp.name,
                              dataOrNull(layerImportance(run.opts, run.base, lp.name, lp.cols)));
    lr.bitsPerWeight = p.bitsPerWeight();
    lr.storageBits = p.storageBits();
    run.cm.setTensor(lp.name, std::move(p));
    run.releaseBase(lp.name);
    w.quantised.insert(lp.name);
    lr.error = errorStats(W.data(), run.cm.compressed(lp.name)->values().data(), int64_t(W.size()));
    lr.details["note"] = "no calibration token reached this layer";
    lr.seconds = secondsSince(l0);
    run.reports[lp.name] = std::move(lr);
}

/// Outlier input channels (LLM.int8() weight side, kept in 16 bits; or Atom's, at 8 bits): those
/// above the threshold, or the top `count` (the set compress() chose for the runtime).
std::vector<int32_t> outlierColumns(const CalibratedRun& run, const LayerPlan& lp,
                                    const LinearInputs& in, const std::vector<float>* sc) {
    const Recipe& recipe = run.recipe;
    std::vector<int32_t> outl;
    if (lp.hasOutliers && lp.outliers.byCount()) {
        // The channels compress() chose on the activation calibration (the runtime's set).
        if (run.opts.outlierChannels)
            if (const auto it = run.opts.outlierChannels->find(lp.name);
                it != run.opts.outlierChannels->end())
                return it->second;
        std::vector<float> score(size_t(lp.cols));
        for (int64_t j = 0; j < lp.cols; ++j) {
            const float s = sc ? (*sc)[size_t(j)] : 1.0f;
            score[size_t(j)] =
                lp.outliers.sumSq ? in.meanSq[size_t(j)] / (s * s) : in.absMax[size_t(j)] / s;
        }
        return outlierChannelsOf(lp.outliers, score);
    }
    if (const auto th = outlierThreshold(recipe, lp.name))
        for (int64_t j = 0; j < lp.cols; ++j) {
            const float a = in.absMax[size_t(j)] / (sc ? (*sc)[size_t(j)] : 1.0f);
            if (a >= *th) outl.push_back(int32_t(j));
        }
    return outl;
}

/// The Gram of the layer's scaled input (SmoothQuant / AWQ scales sc), outlier columns
/// decoupled (1 on the diagonal).
std::vector<double> layerGram(const LinearInputs& in, int64_t cols, const std::vector<float>* sc,
                              const std::vector<int32_t>& outl) {
    std::vector<double> H = in.gram;
    if (sc)
        for (int64_t a = 0; a < cols; ++a)
            for (int64_t c = 0; c < cols; ++c)
                H[size_t(a * cols + c)] /= double((*sc)[size_t(a)]) * double((*sc)[size_t(c)]);
    for (int32_t j : outl)
        for (int64_t c = 0; c < cols; ++c)
            H[size_t(j * cols + c)] = H[size_t(c * cols + j)] = c == j ? 1.0 : 0.0;
    return H;
}

/// GPTQ of a layer (int grids or a GGUF type's blocks) on the Gram of its scaled input, the
/// outlier columns exact.
PackedTensor gptqLayer(const LayerPlan& lp, const std::vector<float>& Wq, const LinearInputs& in,
                       const std::vector<float>* sc, const std::vector<int32_t>& outl,
                       const std::vector<float>& imp, json& det) {
    const int64_t rows = lp.rows, cols = lp.cols;
    const GptqOptions go = gptqOptions(lp.weightJson);
    std::vector<double> H = layerGram(in, cols, sc, outl);
    PackedTensor packed;
    if (lp.weight.ggufGrid) {
        GptqGgufResult g =
            gptqQuantizeGguf(Wq.data(), rows, cols, H.data(), ggufMethodType(*lp.weight.ggufGrid),
                             dataOrNull(imp), go, lp.name);
        packed.settings = lp.weight.stored();
        packed.rows = rows;
        packed.cols = cols;
        packed.codes.resize(g.bytes.size());
        std::memcpy(packed.codes.data(), g.bytes.data(), g.bytes.size());
        det["damp"] = g.damp;
        det["gguf"] = weightMethodName(*lp.weight.ggufGrid);
        det["dead_columns"] = g.deadColumns;
        det["act_order"] = go.actOrder;
        det["block_size"] = go.blockSize;
        det["static_groups"] = go.staticGroups;
        det["groups"] = go.groups == GptqGroups::Updated ? "updated" : "reference";
        return packed;
    }
    GptqResult g = gptqQuantize(Wq.data(), rows, cols, H.data(), lp.weight, go, lp.name);
    packed = std::move(g.packed);
    det["damp"] = g.damp;
    det["act_order"] = go.actOrder;
    det["block_size"] = go.blockSize;
    det["static_groups"] = go.staticGroups;
    det["groups"] = go.groups == GptqGroups::Updated ? "updated" : "reference";
    det["sym_grid"] = go.referenceSymGrid ? "reference" : "rtn";
    det["dead_columns"] = g.deadColumns;
    return packed;
}

/// The layer's weights (outlier columns zeroed) quantised with its method.
PackedTensor quantiseWithMethod(const CalibratedRun& run, BlockWork& w, const LayerPlan& lp,
                                const std::vector<float>& Wq, const LinearInputs& in,
                                const std::vector<int32_t>& outl, json& det) {
    const std::vector<float>* sc = w.scaleOf(lp.name);
    const std::vector<float> imp = layerImportance(run.opts, run.base, lp.name, lp.cols);
    switch (lp.weight.method) {
    case WeightMethod::Gptq:
        return gptqLayer(lp, Wq, in, sc, outl, imp, det);
    case WeightMethod::Awq: {
        AwqOptions ao = awqOptions(lp.weightJson);
        const bool autoClip = ao.clip == AwqClipMode::Auto;
        const int li = blockLinearOf(lp.name);
        std::vector<float> X;
        int64_t n = 0;
        if (autoClip && (li == kQ || li == kK)) {
            // llm-awq's auto_clip skips q and k ("due to qk bmm, it is hard to clip precisely").
            ao.clipSearch = false;
            det["clip_note"] = "auto clip skips q and k, as llm-awq";
        }
        const std::string kind = awqSiteKindOf(lp.name);
        if (!autoClip) {
            X = searchRows(in, sc, ao.maxRows, n);
        } else if (ao.objective == AwqObjective::ModuleOutput && w.awqData &&
                   w.awqData->clipRows.count(kind)) {
            // Sampled tokens of the fp forward, divided by AWQ's scales of this layer.
            X = w.awqData->clipRows.at(kind);
            n = w.awqData->clipTokens;
            if (const auto it = w.awqScale.find(lp.name); it != w.awqScale.end())
                for (int64_t r = 0; r < n; ++r)
                    for (int64_t j = 0; j < lp.cols; ++j)
                        X[size_t(r * lp.cols + j)] /= it->second[size_t(j)];
        } else {
            // Rows of the capture's sample drawn at random (seeded).
            for (int64_t r : awqSampleTokens(in.sampleRows, ao.maxRows, ao.seed)) {
                for (int64_t j = 0; j < lp.cols; ++j)
                    X.push_back(in.sample[size_t(r * lp.cols + j)] /
                                (sc ? (*sc)[size_t(j)] : 1.0f));
                ++n;
            }
        }
        AwqClipResult c = awqClipQuantize(X.data(), n, lp.cols, Wq.data(), lp.rows, lp.weight, ao,
                                          lp.name, dataOrNull(imp));
        det["clip_mode"] = lp.weight.ggufGrid ? "none (GGUF grid)" : autoClip ? "auto" : "range";
        det["clip"] = c.clipped ? c.meanClip : 1.0;
        if (c.clipped) det["clip_min"] = c.minClip;
        if (autoClip && ao.clipSearch && !lp.weight.ggufGrid) det["clip_tokens"] = n;
        return std::move(c.packed);
    }
    case WeightMethod::OmniQuant:
    case WeightMethod::EfficientQat:
        return std::move(w.omniPacked.at(lp.name));
    case WeightMethod::SqueezeLlm:
    case WeightMethod::Slim: { // compact_formats.h: curvature from the captured Gram
        const std::vector<double> H = layerGram(in, lp.cols, sc, outl);
        if (lp.weight.method == WeightMethod::Slim) {
            det["salience"] = "w^2 / [H^-1]_jj^2";
            if (!slimUsesGptq(lp.weightJson)) {
                det["quantiser"] = "rtn";
                return slimQuantize(Wq.data(), lp.rows, lp.cols, lp.weight, H.data(), nullptr,
                                    lp.name);
            }
            // SliM-LLM's GPTQ step on the allocation chosen with RTN.
            const std::vector<uint8_t> alloc = slimChooseAllocation(
                Wq.data(), lp.rows, lp.cols, lp.weight, H.data(), nullptr, lp.name);
            const GptqOptions go = gptqOptions(lp.weightJson);
            const SlimSqc sqc = slimSqcFromJson(lp.weightJson);
            GptqResult g = gptqQuantizeSlim(Wq.data(), lp.rows, lp.cols, H.data(), lp.weight, alloc,
                                            go, lp.name, sqc);
            det["quantiser"] = "gptq";
            det["sqc"] = sqc.enabled;
            if (sqc.enabled) det["sqc_lambda"] = sqc.lambda;
            det["damp"] = g.damp;
            det["act_order"] = go.actOrder;
            det["block_size"] = go.blockSize;
            det["dead_columns"] = g.deadColumns;
            return std::move(g.packed);
        }
        if (const auto it = run.fisher.find(lp.name); it != run.fisher.end()) {
            // The quantised weight is W·diag(s) when smoothing divided the inputs by s, so its
            // Fisher is F / s² column-wise.
            std::vector<float> F = it->second;
            if (sc)
                for (int64_t r = 0; r < lp.rows; ++r)
                    for (int64_t j = 0; j < lp.cols; ++j)
                        F[size_t(r * lp.cols + j)] /= (*sc)[size_t(j)] * (*sc)[size_t(j)];
            det["sensitivity"] =
                "fisher: sum over " + std::to_string(run.fisherWindows) + " windows of (dL/dW)^2";
            return squeezeLlmQuantize(Wq.data(), lp.rows, lp.cols, lp.weight, nullptr, lp.name,
                                      F.data());
        }
        std::vector<float> diag(size_t(lp.cols));
        for (int64_t j = 0; j < lp.cols; ++j) diag[size_t(j)] = float(H[size_t(j * lp.cols + j)]);
        det["sensitivity"] = "diag(X^T X)";
        return squeezeLlmQuantize(Wq.data(), lp.rows, lp.cols, lp.weight, diag.data(), lp.name);
    }
    default:
        return quantize(Wq.data(), lp.rows, lp.cols, lp.weight, lp.name, dataOrNull(imp));
    }
}

/// Atom (Zhao et al. 2023) on the weight side: the outlier columns `outl` are moved after the
/// normal columns (the normal ones keep their order), the normal columns are quantised with the
/// layer's settings and method so that groups are consecutive normal channels, the reordering is
/// stored as the packed tensor's column order, and the outlier columns get 8-bit codes with a
/// scale per row. RTN: the outlier columns are zero in the normal format's groups and rounded
/// from their original values. GPTQ (efeslab/Atom gptq.py): on the full Gram permuted the same
/// way, the loop quantises the normal columns (grids from normal columns only) and its updates
/// reach the outlier columns, which are then rounded to 8 bits from their updated values.
PackedTensor atomQuantize(const LayerPlan& lp, const std::vector<float>& W, const LinearInputs& in,
                          const std::vector<float>* sc, const std::vector<int32_t>& outl,
                          json& det) {
    const int64_t rows = lp.rows, cols = lp.cols, no = int64_t(outl.size());
    std::vector<uint8_t> isOut(size_t(cols), 0);
    for (int32_t j : outl) isOut[size_t(j)] = 1;
    std::vector<int32_t> perm;
    perm.reserve(size_t(cols));
    for (int64_t j = 0; j < cols; ++j)
        if (!isOut[size_t(j)]) perm.push_back(int32_t(j));
    perm.insert(perm.end(), outl.begin(), outl.end());
    const bool gptq = lp.weight.method == WeightMethod::Gptq;
    std::vector<float> Wp(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k) {
            const int32_t j = perm[size_t(k)];
            Wp[size_t(r * cols + k)] = isOut[size_t(j)] && !gptq ? 0.0f : W[size_t(r * cols + j)];
        }
    PackedTensor packed;
    // The weights the outlier columns are rounded from.
    std::vector<float> Wout = W;
    if (gptq) {
        GptqOptions go = gptqOptions(lp.weightJson);
        go.keepTrailing = no;
        const std::vector<double> H = layerGram(in, cols, sc, {});
        std::vector<double> Hp(H.size());
        for (int64_t a = 0; a < cols; ++a)
            for (int64_t b = 0; b < cols; ++b)
                Hp[size_t(a * cols + b)] =
                    H[size_t(perm[size_t(a)]) * size_t(cols) + size_t(perm[size_t(b)])];
        GptqResult g = gptqQuantize(Wp.data(), rows, cols, Hp.data(), lp.weight, go, lp.name);
        packed = std::move(g.packed);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t k = 0; k < no; ++k)
                Wout[size_t(r * cols + outl[size_t(k)])] = g.kept[size_t(r * no + k)];
        det["damp"] = g.damp;
        det["act_order"] = go.actOrder;
        det["dead_columns"] = g.deadColumns;
        det["atom_outliers_absorb_gptq_error"] = true;
    } else {
        // (no importance: it steers only the GGUF types, which Atom layers cannot use)
        packed = quantize(Wp.data(), rows, cols, lp.weight, lp.name);
    }
    // Stored column k holds permuted column k (or the method's own order of them).
    std::vector<int32_t> order(static_cast<size_t>(cols));
    for (int64_t k = 0; k < cols; ++k)
        order[size_t(k)] =
            perm[size_t(packed.colOrder.empty() ? int32_t(k) : packed.colOrder[size_t(k)])];
    packed.colOrder = std::move(order);
    quantizeOutlierColumns8(packed, Wout.data(), rows, cols, outl, lp.name);
    det["atom_outlier_columns"] = no;
    det["atom_outlier_bits"] = 8;
    return packed;
}

/// The original weights of the outlier columns, in f16 beside the codes.
void keepOutlierColumns(PackedTensor& packed, const std::vector<float>& W, int64_t rows,
                        int64_t cols, const std::vector<int32_t>& outl) {
    if (outl.empty()) return;
    packed.outlierCols = outl;
    packed.outlierValues.resize(size_t(rows) * outl.size());
    for (int64_t r = 0; r < rows; ++r)
        for (size_t k = 0; k < outl.size(); ++k)
            packed.outlierValues[size_t(r) * outl.size() + k] =
                f32ToF16(W[size_t(r * cols + outl[k])]);
}

/// Quantises one layer on its captured inputs and reports it.
void quantiseCalibratedLayer(CalibratedRun& run, BlockWork& w, const LayerPlan& lp,
                             const std::vector<float>& W, const LinearInputs& in,
                             Clock::time_point l0) {
    const int64_t rows = lp.rows, cols = lp.cols;
    const std::vector<float>* sc = w.scaleOf(lp.name);
    json det = w.details.count(lp.name) ? w.details[lp.name] : json::object();
    const std::vector<int32_t> outl = outlierColumns(run, lp, in, sc);
    PackedTensor packed;
    if (lp.hasOutliers && lp.outliers.bits < 16 && !outl.empty()) {
        packed = atomQuantize(lp, W, in, sc, outl, det);
    } else {
        std::vector<float> Wq = W;
        for (int32_t j : outl)
            for (int64_t r = 0; r < rows; ++r) Wq[size_t(r * cols + j)] = 0.0f;
        packed = quantiseWithMethod(run, w, lp, Wq, in, outl, det);
        keepOutlierColumns(packed, W, rows, cols, outl);
    }
    LayerReport lr = planReport(lp);
    lr.bitsPerWeight = packed.bitsPerWeight();
    lr.storageBits = packed.storageBits();
    lr.outlierColumns = int64_t(outl.size());
    run.cm.setTensor(lp.name, std::move(packed));
    run.releaseBase(lp.name);
    w.quantised.insert(lp.name);
    const std::vector<float> vals = run.cm.compressed(lp.name)->values();
    lr.error = errorStats(W.data(), vals.data(), int64_t(W.size()));
    lr.outputRelError = outputRelError(W, vals, rows, cols, in.gram, sc);
    lr.details = det;
    lr.seconds =
        secondsSince(l0) + (w.searchSeconds.count(lp.name) ? w.searchSeconds[lp.name] : 0.0);
    run.reports[lp.name] = std::move(lr);
}

/// GPTQ's true-sequential group of a block linear (IST-DASLab/gptq llama.py --true-sequential:
/// [k, v, q], [o], [up, gate], [down]; experts and the router with gate/up; Mamba's projections
/// in the order the mixer runs them).
int sequentialGroup(const std::string& name) {
    const std::string tail = name.substr(name.find('.', 7) + 1); // after "layers.N."
    auto ends = [&](const char* s) {
        const std::string t(s);
        return tail.size() >= t.size() && tail.compare(tail.size() - t.size(), t.size(), t) == 0;
    };
    if (tail == "attn.q" || tail == "attn.k" || tail == "attn.v" || tail == "mixer.in_proj")
        return 0;
    if (tail == "attn.o" || tail == "mixer.x_proj") return 1;
    if (ends(".gate") || ends(".up") || tail == "mlp.router" || tail == "mixer.dt_proj") return 2;
    return 3; // mlp.down, experts' down, mixer.out_proj
}

bool trueSequential(const LayerPlan& lp) {
    return lp.weight.method == WeightMethod::Gptq && lp.weightJson.contains("true_sequential") &&
           lp.weightJson["true_sequential"].get<bool>();
}

/// Step 4: quantise every planned layer of the block. False when cancelled.
/// With GPTQ's "true_sequential" the layers go in sequentialGroup order and, before each group
/// after the first that holds such a layer, the block's inputs are captured again through the
/// overlay (the earlier groups quantised, the folded tensors in place), so that later layers see
/// the quantised earlier ones. Recaptured inputs are already in the folded (scaled) domain.
bool quantiseBlockLayers(CalibratedRun& run, BlockWork& w) {
    std::vector<size_t> order(w.idx.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    bool seq = false;
    for (size_t i : w.idx)
        if (trueSequential(run.P.layers[i])) {
            seq = true;
            w.details[run.P.layers[i].name]["true_sequential"] = true;
        }
    auto groupOf = [&](size_t k) { return seq ? sequentialGroup(run.P.layers[w.idx[k]].name) : 0; };
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return groupOf(a) < groupOf(b); });
    const std::map<std::string, LinearInputs>* inputs = &w.in(false);
    std::map<std::string, LinearInputs> recaptured;
    int group = groupOf(order.empty() ? 0 : order[0]);
    for (size_t n = 0; n < order.size(); ++n) {
        const size_t k = order[n];
        const LayerPlan& lp = run.P.layers[w.idx[k]];
        const double at = (run.unit + 0.5 + 0.5 * double(n) / double(order.size())) / run.nUnits;
        if (seq && groupOf(k) != group) {
            group = groupOf(k);
            bool needed = false;
            for (size_t m = n; m < order.size() && groupOf(order[m]) == group; ++m)
                needed |= trueSequential(run.P.layers[w.idx[order[m]]]);
            if (needed) {
                // the folds not yet stored (norms, unquantised scaled linears) go in first
                for (const auto& name : w.bt.modified())
                    if (!w.quantised.count(name)) run.cm.setFloatTensor(name, w.bt.get(name));
                RangeProgress capP(run.progress, at, at,
                                   "true-sequential recapture before " + lp.name + ": ");
                const auto c0 = Clock::now();
                recaptured = captureBlockInputs(run.cm, run.cal, w.b, run.opts.capture, capP);
                run.res.captureSeconds += secondsSince(c0);
                if (recaptured.empty()) return false;
                inputs = &recaptured;
                for (size_t m = n; m < order.size(); ++m) {
                    const LayerPlan& lpLater = run.P.layers[w.idx[order[m]]];
                    if (usesFpInputs(lpLater)) continue; // keeps the unquantised model's inputs
                    const std::string& later = lpLater.name;
                    w.inScale.erase(later); // its recaptured input is already scaled
                    w.details[later]["inputs"] = "recaptured";
                }
            }
        }
        // Per layer: a block of a large model takes minutes to quantise (GPTQ).
        if (!run.progress.report(at, lp.name + ": quantising")) return false;
        const auto l0 = Clock::now();
        const std::vector<float> W = w.bt.get(lp.name);
        // AWQ / SmoothQuant statistics of the unquantised model are never recaptured.
        const auto& ins = usesFpInputs(lp) ? w.in(true) : *inputs;
        const auto itIn = ins.find(lp.name);
        if (itIn == ins.end())
            quantiseUnreachedLayer(run, w, lp, W, l0);
        else
            quantiseCalibratedLayer(run, w, lp, W, itIn->second, l0);
    }
    return true;
}

/// Step 5: folded tensors that were not quantised stay float in the overlay.
void keepFoldedFloats(CalibratedRun& run, BlockWork& w) {
    for (const auto& name : w.bt.modified())
        if (!w.quantised.count(name)) run.cm.setFloatTensor(name, w.bt.get(name));
}

/// Captures a block's inputs through the overlay so far (GPTQ, RTN, ...) and, for AWQ and
/// SmoothQuant with "stats": "fp" (their references' statistics), through the unquantised model,
/// and compresses its layers. Before the first block both captures are the same and one is
/// made. False when cancelled.
bool compressBlock(CalibratedRun& run, int b, const std::vector<size_t>& idx) {
    bool needFp = false, needOverlay = false;
    for (size_t i : idx) (usesFpInputs(run.P.layers[i]) ? needFp : needOverlay) = true;
    for (const auto& [l, a] : run.P.smooth)
        if (blockIndex(l) == b) (smoothFpStats(run.recipe, a.second) ? needFp : needOverlay) = true;
    const bool overlay = needOverlay || !needFp || run.unit == 0;
    const bool fp = needFp && !(overlay && run.unit == 0);
    const double mid = overlay && fp ? 0.25 : 0.5;
    const auto c0 = Clock::now();
    std::map<std::string, LinearInputs> inputs, fpInputs;
    if (overlay) {
        RangeProgress capP(run.progress, run.unit / run.nUnits, (run.unit + mid) / run.nUnits);
        inputs = captureBlockInputs(run.cm, run.cal, b, run.opts.capture, capP);
        if (inputs.empty()) return false;
    }
    if (fp) {
        RangeProgress capP(run.progress, (run.unit + 0.5 - mid) / run.nUnits,
                           (run.unit + 0.5) / run.nUnits);
        fpInputs = captureBlockInputs(run.base, run.cal, b, run.opts.capture, capP);
        if (fpInputs.empty()) return false;
    }
    run.res.captureSeconds += secondsSince(c0);
    if (!run.progress.report((run.unit + 0.5) / run.nUnits,
                             "layers." + std::to_string(b) + ": quantising"))
        return false;
    BlockWork w(run.cm, b, idx, std::move(inputs), std::move(fpInputs));
    for (size_t i : idx) w.planOf[run.P.layers[i].name] = &run.P.layers[i];
    smoothQuantBlock(run, w);
    awqScaleBlock(run, w);
    if (!omniquantStep(run, w)) return false;
    if (!efficientQatStep(run, w)) return false;
    if (!quantiseBlockLayers(run, w)) return false;
    keepFoldedFloats(run, w);
    return true;
}

/// The layers outside blocks (lm_head, embed): RTN / GGUF on the base weights. False when
/// cancelled.
bool quantiseOutsideBlocks(CalibratedRun& run, const std::vector<size_t>& others) {
    for (size_t i : others) {
        const LayerPlan& lp = run.P.layers[i];
        if (!run.progress.report(run.unit / run.nUnits, lp.name)) return false;
        const auto l0 = Clock::now();
        BlockTensors bt(run.base);
        const std::vector<float> W = bt.get(lp.name);
        PackedTensor p =
            quantize(W.data(), lp.rows, lp.cols, lp.weight, lp.name,
                     dataOrNull(layerImportance(run.opts, run.base, lp.name, lp.cols)));
        LayerReport lr = planReport(lp);
        lr.bitsPerWeight = p.bitsPerWeight();
        lr.storageBits = p.storageBits();
        run.cm.setTensor(lp.name, std::move(p));
        run.releaseBase(lp.name);
        lr.error =
            errorStats(W.data(), run.cm.compressed(lp.name)->values().data(), int64_t(W.size()));
        lr.seconds = secondsSince(l0);
        run.reports[lp.name] = std::move(lr);
    }
    return true;
}

/// The E2E-QP options of the plan's first efficientqat layer with e2e_epochs > 0 (nullopt: none).
std::optional<EfficientQatOptions> e2eOptions(const Plan& P) {
    for (const LayerPlan& lp : P.layers)
        if (lp.quantize && lp.weight.method == WeightMethod::EfficientQat) {
            const EfficientQatOptions o = efficientQatOptions(lp.weightJson);
            if (o.e2eEpochs > 0) return o;
        }
    return std::nullopt;
}

/// EfficientQAT's second phase after every block: the step sizes of all efficientqat layers
/// trained end to end on the calibration windows (codes fixed). False when cancelled.
bool efficientQatE2eStep(CalibratedRun& run, const EfficientQatOptions& o) {
    std::map<std::string, PackedTensor> packed;
    for (const LayerPlan& lp : run.P.layers)
        if (lp.quantize && lp.weight.method == WeightMethod::EfficientQat)
            if (const CompressedTensor* c = run.cm.compressed(lp.name)) packed[lp.name] = c->packed;
    RangeProgress eP(run.progress, run.unit / run.nUnits, (run.unit + 1.0) / run.nUnits);
    EfficientQatE2eResult r = efficientQatEndToEnd(run.cm, packed, run.cal.samples, o, eP);
    if (r.status == Status::Cancelled) return false;
    BlockTensors base(run.base);
    for (auto& [name, p] : r.packed) {
        run.cm.setTensor(name, std::move(p));
        LayerReport& lr = run.reports.at(name);
        const std::vector<float> W = base.get(name);
        lr.error =
            errorStats(W.data(), run.cm.compressed(name)->values().data(), int64_t(W.size()));
        lr.outputRelError = std::numeric_limits<double>::quiet_NaN(); // the Gram is stale
        lr.details["e2e_epochs"] = o.e2eEpochs;
        lr.details["e2e_lr"] = o.lrE2e;
        lr.details["e2e_loss_start"] = r.lossStart;
        lr.details["e2e_loss_end"] = r.lossEnd;
        lr.details["e2e_best_epoch"] = r.bestEpoch;
        lr.details["e2e_epoch_loss"] = r.epochLoss;
        lr.details["e2e_seconds"] = r.seconds;
    }
    return true;
}

} // namespace

CompressResult compressCalibrated(const Model& base, const Recipe& recipe, Plan plan,
                                  Progress& progress, const CompressOptions& opts) {
    const auto t0 = Clock::now();
    const CalibrationSet& cal = *opts.calibration;
    // Small models (the demo) compress faster on one thread than on several.
    const SingleThreadIf oneThread(base.spec().dim * cal.seqLen() < (int64_t(1) << 18));
    CompressResult res;
    res.plan = std::move(plan);
    auto cm = std::make_unique<CompressedModel>(base);
    cm->recipe = recipe;
    cm->baseFingerprint = stats::modelFingerprint(base);
    const BlockLayout layout = groupByBlock(res.plan);

    CalibratedRun run(base, recipe, res.plan, progress, opts, *cm, res);
    const std::optional<EfficientQatOptions> e2e = e2eOptions(res.plan);
    std::vector<std::string> fisherLayers;
    for (const LayerPlan& lp : res.plan.layers)
        if (lp.quantize && lp.weight.method == WeightMethod::SqueezeLlm &&
            squeezeUsesFisher(lp.weightJson))
            fisherLayers.push_back(lp.name);
    run.nUnits = double(layout.blocks.size() + (layout.others.empty() ? 0 : 1) + (e2e ? 1 : 0) +
                        (fisherLayers.empty() ? 0 : 1));
    auto cancelled = [&] {
        res.status = Status::Cancelled;
        return std::move(res);
    };
    if (!fisherLayers.empty()) {
        // SqueezeLLM's sensitivity: the Fisher diagonal of the unquantised model, up front.
        RangeProgress fP(progress, 0.0, 1.0 / run.nUnits);
        FisherResult f = blockLinearFisher(*cm, fisherLayers, cal.samples, fP);
        if (f.status == Status::Cancelled) return cancelled();
        run.fisher = std::move(f.fisher);
        run.fisherWindows = int64_t(cal.samples.size());
        ++run.unit;
    }
    for (const auto& [b, idx] : layout.blocks) {
        if (!compressBlock(run, b, idx)) return cancelled();
        ++run.unit;
    }
    if (!quantiseOutsideBlocks(run, layout.others)) return cancelled();
    if (!layout.others.empty()) ++run.unit;
    if (e2e && !efficientQatE2eStep(run, *e2e)) return cancelled();

    for (const auto& lp : res.plan.layers) res.layers.push_back(std::move(run.reports.at(lp.name)));
    progress.report(1.0, "done");
    res.model = std::move(cm);
    res.seconds = secondsSince(t0);
    return res;
}

} // namespace lcw::compress
