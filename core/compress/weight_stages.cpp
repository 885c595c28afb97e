#include "core/compress/weight_stages.h"

#include "core/common/dtype.h"
#include "core/common/mapped_file.h"
#include "core/compress/calibration.h"
#include "core/io/quants.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <regex>
#include <set>

namespace lcw::compress {

namespace {

/// Whether the Session runs blocks whose q/k/v/o or gate/up/down are smaller than the spec says
/// (heads = rows(q) / headDim, MLP width = rows(up)). Until it does, the blocks after a
/// structurally pruned one are calibrated on the base model instead of the overlay.
constexpr bool kRuntimeRunsPrunedShapes = true;

std::vector<float> toFloat(const TensorView& t) {
    std::vector<float> out(size_t(t.numel()));
    if (t.dtype == DType::F32) {
        std::memcpy(out.data(), t.data, out.size() * sizeof(float));
        return out;
    }
    for (int64_t r = 0; r < t.rows(); ++r)
        dequantizeRow(t.dtype, t.row(r), out.data() + r * t.cols(), t.cols());
    return out;
}

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
    static const std::regex re(R"(layers\.(\d+)\..*)");
    std::smatch m;
    if (!std::regex_match(name, m, re)) return std::nullopt;
    return std::stoi(m[1].str());
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

} // namespace

Status applyWeightStages(const Model& base, const Plan& plan, const CompressOptions& opts,
                         CompressedModel& cm, std::vector<LayerReport>& reports,
                         std::vector<StructuredReport>& structuredReports, double& captureSeconds,
                         Progress& progress) {
    const ModelSpec& spec = base.spec();
    // Work per block: plan layers by block (-1: outside blocks), structured settings by block.
    std::map<int, std::vector<const LayerPlan*>> byBlock;
    for (const auto& lp : plan.layers) byBlock[blockOfName(lp.name).value_or(-1)].push_back(&lp);
    std::map<int, const BlockStructured*> structByBlock;
    for (const auto& b : plan.structured) structByBlock[b.layer] = &b;
    std::vector<int> blocks;
    for (int64_t l = 0; l < spec.nLayers; ++l)
        if (byBlock.count(int(l)) || structByBlock.count(int(l))) blocks.push_back(int(l));
    if (byBlock.count(-1)) blocks.push_back(-1);

    const CalibrationSet* cal =
        opts.calibration && !opts.calibration->empty() ? opts.calibration : nullptr;
    bool anyShrunk = false;
    const size_t total = plan.layers.size() + plan.structured.size();
    size_t done = 0;

    for (int block : blocks) {
        const auto& lps = byBlock[block];
        const BlockStructured* sb = structByBlock.count(block) ? structByBlock[block] : nullptr;
        bool wantStats = sb != nullptr;
        for (const LayerPlan* lp : lps) wantStats |= bool(lp->sparsity) || bool(lp->lowrank);
        std::map<std::string, Stats> stats;
        if (wantStats && cal && block >= 0) {
            CaptureOptions capo = opts.capture;
            capo.maxSampleRows = 0;
            const WeightSource& src = anyShrunk && !kRuntimeRunsPrunedShapes
                                          ? static_cast<const WeightSource&>(base)
                                          : static_cast<const WeightSource&>(cm);
            FunctionProgress sub([&](double f, std::string_view) {
                return progress.report((double(done) + 0.5 * f) /
                                           double(std::max<size_t>(total, 1)),
                                       "calibrating block " + std::to_string(block));
            });
            const auto c0 = std::chrono::steady_clock::now();
            auto in = captureBlockInputs(src, *cal, block, capo, sub);
            captureSeconds +=
                std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
            if (in.empty()) return Status::Cancelled;
            for (const auto& [name, li] : in) stats[name] = statsFrom(li);
        }
        auto statsOf = [&](const std::string& n) -> const Stats* {
            auto it = stats.find(n);
            return it == stats.end() ? nullptr : &it->second;
        };
        std::map<std::string, Current> cur;
        auto current = [&](const std::string& n) -> Current& {
            auto it = cur.find(n);
            if (it != cur.end()) return it->second;
            const TensorView& t = base.get(n);
            Current c;
            c.w = toFloat(t);
            c.rows = t.rows();
            c.cols = t.cols();
            return cur[n] = std::move(c);
        };

        // ---- structured pruning ----
        std::map<std::string, std::string> structNote;
        if (sb) {
            if (!progress.report(double(done) / double(std::max<size_t>(total, 1)),
                                 "structured pruning block " + std::to_string(block)))
                return Status::Cancelled;
            const std::string p = "layers." + std::to_string(block) + ".";
            const StructuredSettings& s = sb->settings;
            StructuredReport rep;
            rep.layer = block;
            rep.score = structuredScoreName(s.score);
            auto need = [&](const std::string& n) -> const Stats* {
                const Stats* st = statsOf(n);
                if (s.needsCalibration() && !st)
                    throw ArgumentError(n + ": structured '" + std::string(rep.score) +
                                        "' importance needs calibration statistics");
                return st;
            };
            if (s.mlpRatio > 0) {
                if (spec.mlpBias)
                    throw UnsupportedError(p + "mlp: structured pruning of MLPs with biases is not "
                                               "supported");
                Current& down = current(p + "mlp.down");
                Current& up = current(p + "mlp.up");
                const bool gated = base.find(p + "mlp.gate") != nullptr;
                const int64_t F = down.cols;
                const Stats* st = need(p + "mlp.down");
                std::vector<UnitMatrix> ins = {{up.w.data(), up.rows, up.cols, true, 1}};
                if (gated) {
                    Current& gate = current(p + "mlp.gate");
                    ins.push_back({gate.w.data(), gate.rows, gate.cols, true, 1});
                }
                const UnitMatrix om{down.w.data(), down.rows, down.cols, false, 1};
                const auto imp =
                    unitImportance(F, om, ins, st ? st->colNorm.data() : nullptr,
                                   st && !st->gram.empty() ? st->gram.data() : nullptr, s.score);
                const auto kept = keptUnits(imp, s.mlpRatio);
                rep.mlpKept = int64_t(kept.size());
                rep.mlpTotal = F;
                const std::string note =
                    "mlp " + std::to_string(kept.size()) + "/" + std::to_string(F) + " channels";
                for (const char* n : {"mlp.up", "mlp.gate"}) {
                    if (!gated && std::string(n) == "mlp.gate") continue;
                    Current& c = current(p + n);
                    c.w = gatherUnits({c.w.data(), c.rows, c.cols, true, 1}, kept);
                    c.rows = int64_t(kept.size());
                    c.shrunk = true;
                    structNote[p + n] = note;
                }
                down.w = gatherUnits(om, kept);
                down.cols = int64_t(kept.size());
                down.shrunk = true;
                structNote[p + "mlp.down"] = note;
                if (st) stats[p + "mlp.down"] = restrict(*st, kept, 1);
            }
            if (s.headRatio > 0) {
                if (spec.attnBias || spec.attnOutBias || spec.qkNormPerHead)
                    throw UnsupportedError(p + "attn: structured head pruning of attention with "
                                               "biases or per-head norms is not supported");
                const int64_t hd = spec.headDim, groups = spec.nKvHeads,
                              rep2 = spec.nHeads / spec.nKvHeads;
                Current& o = current(p + "attn.o");
                Current& q = current(p + "attn.q");
                Current& k = current(p + "attn.k");
                Current& v = current(p + "attn.v");
                const Stats* st = need(p + "attn.o");
                const UnitMatrix om{o.w.data(), o.rows, o.cols, false, rep2 * hd};
                const std::vector<UnitMatrix> ins = {{q.w.data(), q.rows, q.cols, true, rep2 * hd},
                                                     {k.w.data(), k.rows, k.cols, true, hd},
                                                     {v.w.data(), v.rows, v.cols, true, hd}};
                const auto imp =
                    unitImportance(groups, om, ins, st ? st->colNorm.data() : nullptr,
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
                    cur[p + n].shrunk = true;
                    structNote[p + n] = note;
                }
                if (st) stats[p + "attn.o"] = restrict(*st, kept, rep2 * hd);
            }
            anyShrunk = true;
            structuredReports.push_back(rep);
            ++done;
        }

        // ---- per layer: low-rank → pruning → quantisation ----
        std::set<std::string> handled;
        for (const LayerPlan* lpp : lps) {
            const LayerPlan& lp = *lpp;
            if (!progress.report(double(done) / double(std::max<size_t>(total, 1)), lp.name))
                return Status::Cancelled;
            const auto l0 = std::chrono::steady_clock::now();
            const TensorView& bt = base.get(lp.name);
            Current& c = current(lp.name);
            const int64_t rows = c.rows, cols = c.cols;
            const std::vector<float>& W = c.w;
            const Stats* st = statsOf(lp.name);
            const double* H = st && !st->gram.empty() ? st->gram.data() : nullptr;
            LayerReport lr;
            lr.name = lp.name;
            lr.shape = {rows, cols};
            lr.scheme = lp.describe();
            lr.rule = lp.origin.count("weight") ? lp.origin.at("weight")
                      : lp.sparsityRule >= 0    ? lp.sparsityRule
                                                : lp.lowrankRule;
            lr.bits = lp.quantize ? lp.weight.bits : 0;
            if (structNote.count(lp.name)) lr.structured = structNote[lp.name];
            auto needStats = [&](bool needs, const char* what) {
                if (needs && !st)
                    throw ArgumentError(lp.name + ": " + what +
                                        " needs calibration statistics of this layer's input, "
                                        "which exist only for the linears of blocks");
            };
            std::vector<float> finalW;
            if (lp.lowrank) {
                needStats(lp.lowrank->needsCalibration(), lowRankMethodName(lp.lowrank->method));
                const LowRankResult f = factorize(
                    W.data(), rows, cols, H, st ? st->rms.data() : nullptr, *lp.lowrank, lp.name);
                const auto prod = f.product(rows, cols);
                lr.rank = f.rank;
                lr.lowrank = {true, lp.lowrank->describe(), relErr(W, prod),
                              outRel(W, prod, rows, cols, st)};
                auto entry = [&](const std::vector<float>& v, int64_t r, int64_t cc) {
                    TensorEntry e;
                    e.rows = r;
                    e.cols = cc;
                    if (lp.quantize)
                        e.packed = quantize(v.data(), r, cc, fitSettings(lp.weight, cc), lp.name);
                    else
                        e.values = v, e.valueBits = baseValueBits(bt);
                    return e;
                };
                cm.setEntry(lp.name + ".lowrank_a", entry(f.a, f.rank, cols));
                cm.setEntry(lp.name + ".lowrank_b", entry(f.b, rows, f.rank));
                cm.setLowRank(lp.name);
                const CompressedTensor* a = cm.compressed(lp.name + ".lowrank_a");
                const CompressedTensor* b = cm.compressed(lp.name + ".lowrank_b");
                LowRankResult q;
                q.rank = f.rank;
                q.a = a->values();
                q.b = b->values();
                finalW = q.product(rows, cols);
                if (lp.quantize)
                    lr.quant = {true, lp.weight.describe(), relErr(prod, finalW),
                                outRel(prod, finalW, rows, cols, st)};
                lr.storageBits = a->storageBits() + b->storageBits();
                lr.params = a->rows * a->cols + b->rows * b->cols;
            } else {
                std::vector<float> pruned = W;
                std::vector<uint8_t> mask;
                if (lp.sparsity) {
                    needStats(lp.sparsity->needsCalibration(),
                              sparsityMethodName(lp.sparsity->method));
                    PruneResult pr =
                        prune(W.data(), rows, cols, H, st ? st->colNorm.data() : nullptr,
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
                                        dataOrNull(layerImportance(opts, base, lp.name, cols)));
                else
                    e.values = pruned, e.valueBits = baseValueBits(bt);
                if (lp.sparsity) {
                    e.sparsity = *lp.sparsity;
                    e.mask = mask;
                }
                cm.setEntry(lp.name, std::move(e));
                const CompressedTensor* ct = cm.compressed(lp.name);
                finalW = ct->values();
                if (lp.quantize)
                    lr.quant = {true, lp.weight.describe(), relErr(pruned, finalW),
                                outRel(pruned, finalW, rows, cols, st)};
                if (lp.sparsity) {
                    lr.sparsityRatio = double(rows * cols - ct->kept) / double(rows * cols);
                    lr.metadataBits = sparsityMetadataBits(rows, cols, ct->kept, *lp.sparsity);
                }
                lr.storageBits = ct->storageBits();
                lr.params = rows * cols;
            }
            lr.bitsPerWeight = double(lr.storageBits) / double(rows * cols);
            lr.error = errorStats(W.data(), finalW.data(), int64_t(W.size()));
            lr.outputRelError = outRel(W, finalW, rows, cols, st);
            lr.seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - l0).count();
            reports.push_back(std::move(lr));
            handled.insert(lp.name);
            // The layer is in the overlay now: its float copy goes, and the base's pages leave
            // the resident set (peak memory: the overlay plus about one block's work).
            cur.erase(lp.name);
            MappedFile::releasePages(bt.data, bt.nbytes);
            ++done;
        }
        // structurally pruned tensors without further settings keep their values
        for (auto& [name, c] : cur) {
            if (!c.shrunk || handled.count(name)) continue;
            const TensorView& bt = base.get(name);
            TensorEntry e;
            e.rows = c.rows;
            e.cols = c.cols;
            e.values = c.w;
            e.valueBits = baseValueBits(bt);
            cm.setEntry(name, std::move(e));
            LayerReport lr;
            lr.name = name;
            lr.shape = {c.rows, c.cols};
            lr.scheme = "structured only";
            lr.structured = structNote[name];
            lr.storageBits = cm.compressed(name)->storageBits();
            lr.params = c.rows * c.cols;
            lr.bitsPerWeight = double(lr.storageBits) / double(lr.params);
            reports.push_back(std::move(lr));
        }
    }
    return Status::Ok;
}

} // namespace lcw::compress
