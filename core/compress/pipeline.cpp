// compress() with calibration data: block by block, each block's inputs captured through the
// overlay built so far, then SmoothQuant folding, AWQ scale search and folding, and every layer
// quantised with its method (RTN, GPTQ, AWQ clipping), outlier columns kept in 16 bits.
#include "core/compress/pipeline.h"

#include "core/common/dtype.h"
#include "core/common/mapped_file.h"
#include "core/compress/awq.h"
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
    GptqOptions o;
    readIf(w, "damp", o.damp);
    readIf(w, "act_order", o.actOrder);
    readIf(w, "block_size", o.blockSize);
    return o;
}

AwqOptions awqOptions(const nlohmann::json& w) {
    AwqOptions o;
    if (!w.contains("awq")) return o;
    const auto& a = w["awq"];
    readIf(a, "grid", o.grid);
    readIf(a, "clip_search", o.clipSearch);
    readIf(a, "clip_grid", o.clipGrid);
    readIf(a, "max_shrink", o.maxShrink);
    return o;
}

OmniQuantOptions omniOptions(const nlohmann::json& w) {
    OmniQuantOptions o;
    readIf(w, "epochs", o.epochs);
    readIf(w, "lr", o.lr);
    readIf(w, "let", o.let);
    readIf(w, "let_shift", o.letShift);
    readIf(w, "lr_let", o.lrLet);
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

    // Once a layer is in the overlay the base's pages of it leave the resident set (file pages
    // stay cached): peak memory is the overlay plus about one block's work, not the base model.
    void releaseBase(const std::string& name) const {
        if (const TensorView* t = base.find(name)) MappedFile::releasePages(t->data, t->nbytes);
    }
};

/// The block being compressed: its captured inputs, its folded tensors and what the steps
/// before quantisation leave for it.
struct BlockWork {
    BlockWork(CompressedModel& cm, int b, const std::vector<size_t>& idx,
              std::map<std::string, LinearInputs> in)
        : b(b), bname("layers." + std::to_string(b)), idx(idx), inputs(std::move(in)), bt(cm) {}

    const int b;
    const std::string bname;
    const std::vector<size_t>& idx; ///< the block's plan entries
    const std::map<std::string, LinearInputs> inputs;
    BlockTensors bt;
    std::map<std::string, std::vector<float>> inScale; ///< input scales folded so far, per linear
    std::map<std::string, json> details;
    std::map<std::string, const LayerPlan*> planOf;
    std::set<std::string> sitesDone;
    std::map<std::string, double> searchSeconds; // AWQ scale search, shared out per site
    std::map<std::string, PackedTensor> omniPacked;
    std::set<std::string> quantised;

    const std::vector<float>* scaleOf(const std::string& name) const {
        return inScale.count(name) ? &inScale.at(name) : nullptr;
    }
    void scaleInputs(const FoldSite& site, const std::vector<float>& s) {
        applyFold(bt, site, s);
        for (const auto& l : site.linears) {
            auto& v = inScale[l];
            if (v.empty()) v.assign(s.size(), 1.0f);
            for (size_t j = 0; j < s.size(); ++j) v[j] *= s[j];
        }
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

/// Step 1: SmoothQuant on the norm-fed inputs.
void smoothQuantBlock(const CalibratedRun& run, BlockWork& w) {
    for (const std::string kind : {"attn.q", "mlp.gate", "mlp.up"}) {
        const std::string lead = w.bname + "." + kind;
        FoldSite site;
        std::string why;
        if (!w.inputs.count(lead) || !findFoldSite(run.cm, w.b, lead, site, why)) continue;
        if (w.sitesDone.count(site.kind + "_sq")) continue;
        std::optional<std::pair<double, int>> alpha;
        for (const auto& l : site.linears)
            if (run.P.smooth.count(l)) alpha = run.P.smooth.at(l);
        if (!alpha) continue;
        w.sitesDone.insert(site.kind + "_sq");
        std::vector<const float*> ws;
        std::vector<int64_t> rows;
        for (const auto& l : site.linears) {
            ws.push_back(w.bt.get(l).data());
            rows.push_back(w.bt.rows(l));
        }
        const auto s =
            smoothQuantScales(w.inputs.at(lead).absMax, ws, rows, site.channels, alpha->first);
        w.scaleInputs(site, s);
        for (const auto& l : site.linears) w.details[l]["smoothquant_alpha"] = alpha->first;
    }
    for (const auto& [l, a] : run.P.smooth) {
        if (blockIndex(l) != w.b || w.details[l].contains("smoothquant_alpha")) continue;
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

/// Searches and folds the AWQ scale of one site.
void awqScaleSite(BlockWork& w, const LayerPlan& lp, const FoldSite& site) {
    const auto s0 = Clock::now();
    const AwqOptions ao = awqOptions(lp.weightJson);
    const LinearInputs& in = w.inputs.at(site.linears[0]);
    const std::vector<float>* sc = w.scaleOf(site.linears[0]);
    int64_t n = 0;
    const std::vector<float> X = searchRows(in, sc, ao.maxRows, n);
    const std::vector<float> stat = awqStatistic(in, sc, site);
    const std::vector<AwqMember> members = awqMembers(w, site);
    const AwqScaleResult r = awqSearchScale(X.data(), n, site.channels, stat, members, ao);
    w.scaleInputs(site, r.scale);
    const double secs = secondsSince(s0);
    for (const auto& l : site.linears) w.searchSeconds[l] = secs / double(site.linears.size());
    for (const auto& l : site.linears) {
        w.details[l]["awq_site"] = site.kind;
        w.details[l]["awq_alpha"] = r.alpha;
        w.details[l]["awq_search_error"] = r.error;
        w.details[l]["awq_identity_error"] = r.identityError;
    }
}

/// Step 2: AWQ scales, one search per input shared by AWQ layers.
void awqScaleBlock(const CalibratedRun& run, BlockWork& w) {
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
        awqScaleSite(w, lp, site);
    }
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

/// Outlier input channels (LLM.int8() weight side): kept in 16 bits.
std::vector<int32_t> outlierColumns(const Recipe& recipe, const LayerPlan& lp,
                                    const LinearInputs& in, const std::vector<float>* sc) {
    std::vector<int32_t> outl;
    if (const auto th = outlierThreshold(recipe, lp.name))
        for (int64_t j = 0; j < lp.cols; ++j) {
            const float a = in.absMax[size_t(j)] / (sc ? (*sc)[size_t(j)] : 1.0f);
            if (a >= *th) outl.push_back(int32_t(j));
        }
    return outl;
}

/// GPTQ of a layer (int grids or a GGUF type's blocks) on the Gram of its scaled input, the
/// outlier columns exact.
PackedTensor gptqLayer(const LayerPlan& lp, const std::vector<float>& Wq, const LinearInputs& in,
                       const std::vector<float>* sc, const std::vector<int32_t>& outl,
                       const std::vector<float>& imp, json& det) {
    const int64_t rows = lp.rows, cols = lp.cols;
    const GptqOptions go = gptqOptions(lp.weightJson);
    std::vector<double> H = in.gram;
    if (sc)
        for (int64_t a = 0; a < cols; ++a)
            for (int64_t c = 0; c < cols; ++c)
                H[size_t(a * cols + c)] /= double((*sc)[size_t(a)]) * double((*sc)[size_t(c)]);
    for (int32_t j : outl)
        for (int64_t c = 0; c < cols; ++c)
            H[size_t(j * cols + c)] = H[size_t(c * cols + j)] = c == j ? 1.0 : 0.0;
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
        return packed;
    }
    GptqResult g = gptqQuantize(Wq.data(), rows, cols, H.data(), lp.weight, go, lp.name);
    packed = std::move(g.packed);
    det["damp"] = g.damp;
    det["act_order"] = go.actOrder;
    det["block_size"] = go.blockSize;
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
        const AwqOptions ao = awqOptions(lp.weightJson);
        int64_t n = 0;
        const std::vector<float> X = searchRows(in, sc, ao.maxRows, n);
        AwqClipResult c = awqClipQuantize(X.data(), n, lp.cols, Wq.data(), lp.rows, lp.weight, ao,
                                          lp.name, dataOrNull(imp));
        det["clip"] = c.clipped ? c.meanClip : 1.0;
        return std::move(c.packed);
    }
    case WeightMethod::OmniQuant:
        return std::move(w.omniPacked.at(lp.name));
    default:
        return quantize(Wq.data(), lp.rows, lp.cols, lp.weight, lp.name, dataOrNull(imp));
    }
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
    const std::vector<int32_t> outl = outlierColumns(run.recipe, lp, in, sc);
    std::vector<float> Wq = W;
    for (int32_t j : outl)
        for (int64_t r = 0; r < rows; ++r) Wq[size_t(r * cols + j)] = 0.0f;
    PackedTensor packed = quantiseWithMethod(run, w, lp, Wq, in, outl, det);
    keepOutlierColumns(packed, W, rows, cols, outl);
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
    const std::map<std::string, LinearInputs>* inputs = &w.inputs;
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
                    const std::string& later = run.P.layers[w.idx[order[m]]].name;
                    w.inScale.erase(later); // its recaptured input is already scaled
                    w.details[later]["inputs"] = "recaptured";
                }
            }
        }
        // Per layer: a block of a large model takes minutes to quantise (GPTQ).
        if (!run.progress.report(at, lp.name + ": quantising")) return false;
        const auto l0 = Clock::now();
        const std::vector<float> W = w.bt.get(lp.name);
        const auto itIn = inputs->find(lp.name);
        if (itIn == inputs->end())
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

/// Captures a block's inputs through the overlay so far and compresses its layers. False when
/// cancelled.
bool compressBlock(CalibratedRun& run, int b, const std::vector<size_t>& idx) {
    RangeProgress capP(run.progress, run.unit / run.nUnits, (run.unit + 0.5) / run.nUnits);
    const auto c0 = Clock::now();
    auto inputs = captureBlockInputs(run.cm, run.cal, b, run.opts.capture, capP);
    run.res.captureSeconds += secondsSince(c0);
    if (inputs.empty()) return false;
    if (!run.progress.report((run.unit + 0.5) / run.nUnits,
                             "layers." + std::to_string(b) + ": quantising"))
        return false;
    BlockWork w(run.cm, b, idx, std::move(inputs));
    for (size_t i : idx) w.planOf[run.P.layers[i].name] = &run.P.layers[i];
    smoothQuantBlock(run, w);
    awqScaleBlock(run, w);
    if (!omniquantStep(run, w)) return false;
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
    run.nUnits = double(layout.blocks.size() + (layout.others.empty() ? 0 : 1));
    auto cancelled = [&] {
        res.status = Status::Cancelled;
        return std::move(res);
    };
    for (const auto& [b, idx] : layout.blocks) {
        if (!compressBlock(run, b, idx)) return cancelled();
        ++run.unit;
    }
    if (!quantiseOutsideBlocks(run, layout.others)) return cancelled();

    for (const auto& lp : res.plan.layers) res.layers.push_back(std::move(run.reports.at(lp.name)));
    progress.report(1.0, "done");
    res.model = std::move(cm);
    res.seconds = secondsSince(t0);
    return res;
}

} // namespace lcw::compress
