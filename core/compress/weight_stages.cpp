#include "core/compress/weight_stages.h"

#include "core/common/dtype.h"
#include "core/common/mapped_file.h"
#include "core/common/pattern.h"
#include "core/compress/calibration.h"
#include "core/compress/folding.h"
#include "core/io/quants.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>

namespace lcw::compress {

namespace {

/// Whether the Session runs blocks whose q/k/v/o or gate/up/down are smaller than the spec says
/// (heads = rows(q) / headDim, MLP width = rows(up)). Until it does, the blocks after a
/// structurally pruned one are calibrated on the base model instead of the overlay.
constexpr bool kRuntimeRunsPrunedShapes = true;

uint32_t baseValueBits(const TensorView& t) {
    return uint32_t(std::ceil(double(t.nbytes) * 8.0 / double(std::max<int64_t>(t.numel(), 1))));
}

double relErr(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, n = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        n += double(a[i]) * a[i];
    }
    return n > 0 ? std::sqrt(d / n) : (d > 0 ? INFINITY : 0.0);
}

/// Calibration statistics of one linear's input (possibly restricted to kept channels).
struct Stats {
    int64_t cols = 0, tokens = 0;
    std::vector<double> gram, colNorm, rms;
};

Stats statsFrom(const LinearInputs& li) {
    Stats s;
    s.cols = li.cols;
    s.tokens = li.tokens;
    s.gram = li.gram;
    s.colNorm.resize(size_t(li.cols));
    s.rms.resize(size_t(li.cols));
    for (int64_t j = 0; j < li.cols; ++j) {
        s.rms[size_t(j)] = std::sqrt(std::max(0.0, double(li.meanSq[size_t(j)])));
        s.colNorm[size_t(j)] = s.rms[size_t(j)] * std::sqrt(double(li.tokens));
    }
    return s;
}

/// Keeps the channels of units `kept` (width w each).
Stats restrict(const Stats& s, const std::vector<int64_t>& kept, int64_t w) {
    std::vector<int64_t> ch;
    for (int64_t u : kept)
        for (int64_t i = 0; i < w; ++i) ch.push_back(u * w + i);
    Stats r;
    r.cols = int64_t(ch.size());
    r.tokens = s.tokens;
    for (int64_t c : ch) {
        r.colNorm.push_back(s.colNorm[size_t(c)]);
        r.rms.push_back(s.rms[size_t(c)]);
    }
    if (!s.gram.empty()) {
        r.gram.resize(size_t(r.cols * r.cols));
        for (int64_t a = 0; a < r.cols; ++a)
            for (int64_t b = 0; b < r.cols; ++b)
                r.gram[size_t(a * r.cols + b)] =
                    s.gram[size_t(ch[size_t(a)] * s.cols + ch[size_t(b)])];
    }
    return r;
}

double outRel(const std::vector<float>& w, const std::vector<float>& wq, int64_t rows, int64_t cols,
              const Stats* st) {
    if (!st || st->gram.empty()) return std::numeric_limits<double>::quiet_NaN();
    const double e = outputEnergy(w.data(), rows, cols, st->gram.data());
    const double d = outputError(w.data(), wq.data(), rows, cols, st->gram.data());
    return e > 0 ? std::sqrt(std::max(0.0, d) / e) : 0.0;
}

std::optional<int> blockOfName(const std::string& name) {
    return layerIndexOf(name);
}

/// The current (possibly structurally pruned) weights of one tensor.
struct Current {
    std::vector<float> w;
    int64_t rows = 0, cols = 0;
    bool shrunk = false;
};

WeightSettings fitSettings(WeightSettings s, int64_t cols) {
    if (s.granularity == Granularity::Group && s.groupSize > cols) s.groupSize = cols;
    return s;
}

/// The blocks to work on in model order (-1 last: the layers outside blocks), with their plan
/// layers and structured settings.
struct StageLayout {
    std::map<int, std::vector<const LayerPlan*>> byBlock; ///< -1: outside blocks
    std::map<int, const BlockStructured*> structByBlock;
    std::vector<int> blocks;
};

StageLayout layoutStages(const ModelSpec& spec, const Plan& plan) {
    StageLayout g;
    for (const auto& lp : plan.layers) g.byBlock[blockOfName(lp.name).value_or(-1)].push_back(&lp);
    for (const auto& b : plan.structured) g.structByBlock[b.layer] = &b;
    for (int64_t l = 0; l < spec.nLayers; ++l)
        if (g.byBlock.count(int(l)) || g.structByBlock.count(int(l))) g.blocks.push_back(int(l));
    if (g.byBlock.count(-1)) g.blocks.push_back(-1);
    return g;
}

/// What every stage of applyWeightStages shares.
struct StagesRun {
    const Model& base;
    const ModelSpec& spec;
    const CompressOptions& opts;
    CompressedModel& cm;
    std::vector<LayerReport>& reports;
    std::vector<StructuredReport>& structuredReports;
    double& captureSeconds;
    Progress& progress;
    const CalibrationSet* cal; ///< null without calibration data
    size_t total;              ///< progress units: layers and structurally pruned blocks
    size_t done = 0;
    bool anyShrunk = false;

    double fraction() const { return double(done) / double(std::max<size_t>(total, 1)); }
};

/// One block's calibration statistics and current (float, possibly shrunk) weights.
struct BlockStage {
    BlockStage(const Model& base, int block) : base(base), block(block) {}

    const Model& base;
    const int block;
    std::map<std::string, Stats> stats;
    std::map<std::string, Current> cur;
    std::map<std::string, std::string> structNote; ///< "mlp 129/172 channels" per shrunk tensor
    std::set<std::string> handled;

    const Stats* statsOf(const std::string& n) const {
        auto it = stats.find(n);
        return it == stats.end() ? nullptr : &it->second;
    }
    Current& current(const std::string& n) {
        auto it = cur.find(n);
        if (it != cur.end()) return it->second;
        const TensorView& t = base.get(n);
        Current c;
        c.w = tensorFloats(t);
        c.rows = t.rows();
        c.cols = t.cols();
        return cur[n] = std::move(c);
    }
};

/// Captures the block's linear-input statistics through the overlay so far, when a stage of
/// the block uses them and calibration data is given. False when cancelled.
bool captureStageStats(StagesRun& run, BlockStage& bs, const std::vector<const LayerPlan*>& lps,
                       const BlockStructured* sb) {
    const int block = bs.block;
    bool wantStats = sb != nullptr;
    for (const LayerPlan* lp : lps) wantStats |= bool(lp->sparsity) || bool(lp->lowrank);
    if (!(wantStats && run.cal && block >= 0)) return true;
    CaptureOptions capo = run.opts.capture;
    capo.maxSampleRows = 0;
    const WeightSource& src = run.anyShrunk && !kRuntimeRunsPrunedShapes
                                  ? static_cast<const WeightSource&>(run.base)
                                  : static_cast<const WeightSource&>(run.cm);
    FunctionProgress sub([&](double f, std::string_view) {
        return run.progress.report((double(run.done) + 0.5 * f) /
                                       double(std::max<size_t>(run.total, 1)),
                                   "calibrating block " + std::to_string(block));
    });
    const auto c0 = std::chrono::steady_clock::now();
    auto in = captureBlockInputs(src, *run.cal, block, capo, sub);
    run.captureSeconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    if (in.empty()) return false;
    for (const auto& [name, li] : in) bs.stats[name] = statsFrom(li);
    return true;
}

/// The statistics a structured score uses; throws when the score needs calibration and there
/// are none.
const Stats* structuredStats(const BlockStage& bs, const StructuredSettings& s,
                             const std::string& score, const std::string& n) {
    const Stats* st = bs.statsOf(n);
    if (s.needsCalibration() && !st)
        throw ArgumentError(n + ": structured '" + score +
                            "' importance needs calibration statistics");
    return st;
}

/// Removes the block's least important MLP channels (rows of gate/up, columns of down).
void pruneMlpChannels(const StagesRun& run, BlockStage& bs, const StructuredSettings& s,
                      StructuredReport& rep) {
    const std::string p = "layers." + std::to_string(bs.block) + ".";
    if (run.spec.mlpBias)
        throw UnsupportedError(p + "mlp: structured pruning of MLPs with biases is not "
                                   "supported");
    Current& down = bs.current(p + "mlp.down");
    Current& up = bs.current(p + "mlp.up");
    const bool gated = run.base.find(p + "mlp.gate") != nullptr;
    const int64_t F = down.cols;
    const Stats* st = structuredStats(bs, s, rep.score, p + "mlp.down");
    std::vector<UnitMatrix> ins = {{up.w.data(), up.rows, up.cols, true, 1}};
    if (gated) {
        Current& gate = bs.current(p + "mlp.gate");
        ins.push_back({gate.w.data(), gate.rows, gate.cols, true, 1});
    }
    const UnitMatrix om{down.w.data(), down.rows, down.cols, false, 1};
    const auto imp = unitImportance(F, om, ins, st ? st->colNorm.data() : nullptr,
                                    st && !st->gram.empty() ? st->gram.data() : nullptr, s.score);
    const auto kept = keptUnits(imp, s.mlpRatio);
    rep.mlpKept = int64_t(kept.size());
    rep.mlpTotal = F;
    const std::string note =
        "mlp " + std::to_string(kept.size()) + "/" + std::to_string(F) + " channels";
    for (const char* n : {"mlp.up", "mlp.gate"}) {
        if (!gated && std::string(n) == "mlp.gate") continue;
        Current& c = bs.current(p + n);
        c.w = gatherUnits({c.w.data(), c.rows, c.cols, true, 1}, kept);
        c.rows = int64_t(kept.size());
        c.shrunk = true;
        bs.structNote[p + n] = note;
    }
    down.w = gatherUnits(om, kept);
    down.cols = int64_t(kept.size());
    down.shrunk = true;
    bs.structNote[p + "mlp.down"] = note;
    if (st) bs.stats[p + "mlp.down"] = restrict(*st, kept, 1);
}

/// Removes the block's least important KV groups with their query heads (rows of q/k/v,
/// columns of o).
void pruneKvGroups(const StagesRun& run, BlockStage& bs, const StructuredSettings& s,
                   StructuredReport& rep) {
    const ModelSpec& spec = run.spec;
    const std::string p = "layers." + std::to_string(bs.block) + ".";
    if (spec.attnBias || spec.attnOutBias || spec.qkNormPerHead)
        throw UnsupportedError(p + "attn: structured head pruning of attention with "
                                   "biases or per-head norms is not supported");
    const int64_t hd = spec.headDim, groups = spec.nKvHeads, rep2 = spec.nHeads / spec.nKvHeads;
    Current& o = bs.current(p + "attn.o");
    Current& q = bs.current(p + "attn.q");
    Current& k = bs.current(p + "attn.k");
    Current& v = bs.current(p + "attn.v");
    const Stats* st = structuredStats(bs, s, rep.score, p + "attn.o");
    const UnitMatrix om{o.w.data(), o.rows, o.cols, false, rep2 * hd};
    const std::vector<UnitMatrix> ins = {{q.w.data(), q.rows, q.cols, true, rep2 * hd},
                                         {k.w.data(), k.rows, k.cols, true, hd},
                                         {v.w.data(), v.rows, v.cols, true, hd}};
    const auto imp = unitImportance(groups, om, ins, st ? st->colNorm.data() : nullptr,
                                    st && !st->gram.empty() ? st->gram.data() : nullptr, s.score);
    const auto kept = keptUnits(imp, s.headRatio);
    const int64_t kg = int64_t(kept.size());
    rep.groupsKept = kg;
    rep.groupsTotal = groups;
    rep.headsKept = kg * rep2;
    rep.headsTotal = spec.nHeads;
    const std::string note =
        "heads " + std::to_string(kg * rep2) + "/" + std::to_string(spec.nHeads);
    q.w = gatherUnits(ins[0], kept);
    q.rows = kg * rep2 * hd;
    k.w = gatherUnits(ins[1], kept);
    k.rows = kg * hd;
    v.w = gatherUnits(ins[2], kept);
    v.rows = kg * hd;
    o.w = gatherUnits(om, kept);
    o.cols = kg * rep2 * hd;
    for (const char* n : {"attn.q", "attn.k", "attn.v", "attn.o"}) {
        bs.cur[p + n].shrunk = true;
        bs.structNote[p + n] = note;
    }
    if (st) bs.stats[p + "attn.o"] = restrict(*st, kept, rep2 * hd);
}

/// Structured pruning of one block: MLP channels, then KV groups. False when cancelled.
bool structuredStage(StagesRun& run, BlockStage& bs, const BlockStructured& sb) {
    if (!run.progress.report(run.fraction(),
                             "structured pruning block " + std::to_string(bs.block)))
        return false;
    const StructuredSettings& s = sb.settings;
    StructuredReport rep;
    rep.layer = bs.block;
    rep.score = structuredScoreName(s.score);
    if (s.mlpRatio > 0) pruneMlpChannels(run, bs, s, rep);
    if (s.headRatio > 0) pruneKvGroups(run, bs, s, rep);
    run.anyShrunk = true;
    run.structuredReports.push_back(rep);
    ++run.done;
    return true;
}

/// Throws when a method needs calibration statistics that the layer lacks.
void requireStats(const LayerPlan& lp, const Stats* st, bool needs, const char* what) {
    if (needs && !st)
        throw ArgumentError(lp.name + ": " + what +
                            " needs calibration statistics of this layer's input, "
                            "which exist only for the linears of blocks");
}

/// One low-rank factor as an overlay entry: quantised with the layer's settings, or float.
TensorEntry factorEntry(const LayerPlan& lp, const TensorView& bt, const std::vector<float>& v,
                        int64_t r, int64_t cc) {
    TensorEntry e;
    e.rows = r;
    e.cols = cc;
    if (lp.quantize)
        e.packed = quantize(v.data(), r, cc, fitSettings(lp.weight, cc), lp.name);
    else
        e.values = v, e.valueBits = baseValueBits(bt);
    return e;
}

/// Low-rank factorisation (then quantisation of both factors); returns the final weights.
std::vector<float> lowRankLayer(StagesRun& run, const LayerPlan& lp, const TensorView& bt,
                                const Current& c, const Stats* st, LayerReport& lr) {
    const int64_t rows = c.rows, cols = c.cols;
    const std::vector<float>& W = c.w;
    const double* H = st && !st->gram.empty() ? st->gram.data() : nullptr;
    requireStats(lp, st, lp.lowrank->needsCalibration(), lowRankMethodName(lp.lowrank->method));
    const LowRankResult f =
        factorize(W.data(), rows, cols, H, st ? st->rms.data() : nullptr, *lp.lowrank, lp.name);
    const auto prod = f.product(rows, cols);
    lr.rank = f.rank;
    lr.lowrank = {true, lp.lowrank->describe(), relErr(W, prod), outRel(W, prod, rows, cols, st)};
    run.cm.setEntry(lp.name + ".lowrank_a", factorEntry(lp, bt, f.a, f.rank, cols));
    run.cm.setEntry(lp.name + ".lowrank_b", factorEntry(lp, bt, f.b, rows, f.rank));
    run.cm.setLowRank(lp.name);
    const CompressedTensor* a = run.cm.compressed(lp.name + ".lowrank_a");
    const CompressedTensor* b = run.cm.compressed(lp.name + ".lowrank_b");
    LowRankResult q;
    q.rank = f.rank;
    q.a = a->values();
    q.b = b->values();
    std::vector<float> finalW = q.product(rows, cols);
    if (lp.quantize)
        lr.quant = {true, lp.weight.describe(), relErr(prod, finalW),
                    outRel(prod, finalW, rows, cols, st)};
    lr.storageBits = a->storageBits() + b->storageBits();
    lr.params = a->rows * a->cols + b->rows * b->cols;
    return finalW;
}

/// Pruning (when set) then quantisation (when set); returns the final weights.
std::vector<float> pruneAndQuantiseLayer(StagesRun& run, const LayerPlan& lp, const TensorView& bt,
                                         const Current& c, const Stats* st, LayerReport& lr) {
    const int64_t rows = c.rows, cols = c.cols;
    const std::vector<float>& W = c.w;
    const double* H = st && !st->gram.empty() ? st->gram.data() : nullptr;
    std::vector<float> pruned = W;
    std::vector<uint8_t> mask;
    if (lp.sparsity) {
        requireStats(lp, st, lp.sparsity->needsCalibration(),
                     sparsityMethodName(lp.sparsity->method));
        PruneResult pr = prune(W.data(), rows, cols, H, st ? st->colNorm.data() : nullptr,
                               *lp.sparsity, lp.name);
        lr.sparsity = {true, lp.sparsity->describe(), relErr(W, pr.w),
                       outRel(W, pr.w, rows, cols, st)};
        pruned = std::move(pr.w);
        mask = std::move(pr.mask);
    }
    TensorEntry e;
    e.rows = rows;
    e.cols = cols;
    if (lp.quantize)
        e.packed = quantize(pruned.data(), rows, cols, lp.weight, lp.name,
                            dataOrNull(layerImportance(run.opts, run.base, lp.name, cols)));
    else
        e.values = pruned, e.valueBits = baseValueBits(bt);
    if (lp.sparsity) {
        e.sparsity = *lp.sparsity;
        e.mask = mask;
    }
    run.cm.setEntry(lp.name, std::move(e));
    const CompressedTensor* ct = run.cm.compressed(lp.name);
    std::vector<float> finalW = ct->values();
    if (lp.quantize)
        lr.quant = {true, lp.weight.describe(), relErr(pruned, finalW),
                    outRel(pruned, finalW, rows, cols, st)};
    if (lp.sparsity) {
        lr.sparsityRatio = double(rows * cols - ct->kept) / double(rows * cols);
        lr.metadataBits = sparsityMetadataBits(rows, cols, ct->kept, *lp.sparsity);
    }
    lr.storageBits = ct->storageBits();
    lr.params = rows * cols;
    return finalW;
}

/// One layer: low-rank → pruning → quantisation, reported. False when cancelled.
bool layerStages(StagesRun& run, BlockStage& bs, const LayerPlan& lp) {
    if (!run.progress.report(run.fraction(), lp.name)) return false;
    const auto l0 = std::chrono::steady_clock::now();
    const TensorView& bt = run.base.get(lp.name);
    Current& c = bs.current(lp.name);
    const int64_t rows = c.rows, cols = c.cols;
    const std::vector<float>& W = c.w;
    const Stats* st = bs.statsOf(lp.name);
    LayerReport lr;
    lr.name = lp.name;
    lr.shape = {rows, cols};
    lr.scheme = lp.describe();
    lr.rule = lp.origin.count("weight") ? lp.origin.at("weight")
              : lp.sparsityRule >= 0    ? lp.sparsityRule
                                        : lp.lowrankRule;
    lr.bits = lp.quantize ? lp.weight.bits : 0;
    if (bs.structNote.count(lp.name)) lr.structured = bs.structNote[lp.name];
    const std::vector<float> finalW = lp.lowrank ? lowRankLayer(run, lp, bt, c, st, lr)
                                                 : pruneAndQuantiseLayer(run, lp, bt, c, st, lr);
    lr.bitsPerWeight = double(lr.storageBits) / double(rows * cols);
    lr.error = errorStats(W.data(), finalW.data(), int64_t(W.size()));
    lr.outputRelError = outRel(W, finalW, rows, cols, st);
    lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - l0).count();
    run.reports.push_back(std::move(lr));
    bs.handled.insert(lp.name);
    // The layer is in the overlay now: its float copy goes, and the base's pages leave
    // the resident set (peak memory: the overlay plus about one block's work).
    bs.cur.erase(lp.name);
    MappedFile::releasePages(bt.data, bt.nbytes);
    ++run.done;
    return true;
}

/// Structurally pruned tensors without further settings keep their (shrunk) values.
void keepShrunkTensors(StagesRun& run, BlockStage& bs) {
    for (auto& [name, c] : bs.cur) {
        if (!c.shrunk || bs.handled.count(name)) continue;
        const TensorView& bt = run.base.get(name);
        TensorEntry e;
        e.rows = c.rows;
        e.cols = c.cols;
        e.values = c.w;
        e.valueBits = baseValueBits(bt);
        run.cm.setEntry(name, std::move(e));
        LayerReport lr;
        lr.name = name;
        lr.shape = {c.rows, c.cols};
        lr.scheme = "structured only";
        lr.structured = bs.structNote[name];
        lr.storageBits = run.cm.compressed(name)->storageBits();
        lr.params = c.rows * c.cols;
        lr.bitsPerWeight = double(lr.storageBits) / double(lr.params);
        run.reports.push_back(std::move(lr));
    }
}

/// One block's stages: statistics, structured pruning, each layer, the shrunk rest. False when
/// cancelled.
bool blockStages(StagesRun& run, int block, const std::vector<const LayerPlan*>& lps,
                 const BlockStructured* sb) {
    BlockStage bs(run.base, block);
    if (!captureStageStats(run, bs, lps, sb)) return false;
    if (sb && !structuredStage(run, bs, *sb)) return false;
    for (const LayerPlan* lp : lps)
        if (!layerStages(run, bs, *lp)) return false;
    keepShrunkTensors(run, bs);
    return true;
}

} // namespace

Status applyWeightStages(const Model& base, const Plan& plan, const CompressOptions& opts,
                         CompressedModel& cm, std::vector<LayerReport>& reports,
                         std::vector<StructuredReport>& structuredReports, double& captureSeconds,
                         Progress& progress) {
    const ModelSpec& spec = base.spec();
    StageLayout g = layoutStages(spec, plan);
    const CalibrationSet* cal =
        opts.calibration && !opts.calibration->empty() ? opts.calibration : nullptr;
    StagesRun run{base,
                  spec,
                  opts,
                  cm,
                  reports,
                  structuredReports,
                  captureSeconds,
                  progress,
                  cal,
                  plan.layers.size() + plan.structured.size()};
    for (int block : g.blocks) {
        const BlockStructured* sb = g.structByBlock.count(block) ? g.structByBlock[block] : nullptr;
        if (!blockStages(run, block, g.byBlock[block], sb)) return Status::Cancelled;
    }
    return Status::Ok;
}

} // namespace lcw::compress
