#include "core/eval/study.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/eval/divergence.h"
#include "core/model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

namespace lcw::study {

using nlohmann::json;

const char* groupName(Group g) {
    switch (g) {
    case Group::Weight:
        return "W";
    case Group::WeightActivation:
        return "WA";
    case Group::KvCache:
        return "KV";
    }
    return "?";
}

namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    return s;
}

compress::Recipe makeRecipe(const std::string& name, json rule, bool rotate = false) {
    rule["targets"] = {"*"};
    json j = {{"lcw_recipe", 1},
              {"name", name},
              {"description", "lcw study cell " + name},
              {"rules", json::array({std::move(rule)})}};
    // QuaRot: the seeded Hadamard rotation with its online transforms (down input, q/k heads).
    if (rotate) j["rotation"] = {{"method", "hadamard"}, {"seed", 0}};
    return compress::Recipe::fromJson(j);
}

bool wanted(const GridOptions& o, const std::string& method) {
    if (method == "RTN" || o.methods.empty()) return true;
    for (const auto& m : o.methods)
        if (lower(m) == lower(method)) return true;
    return false;
}

/// Weight-only: asymmetric int groups as the paper (g128).
void addWeightCells(const GridOptions& o, std::vector<Cell>& out) {
    for (int b : {8, 4, 3, 2})
        for (const std::string& m : groupMethods(Group::Weight)) {
            if (!wanted(o, m)) continue;
            json w = {{"bits", b},
                      {"symmetric", false},
                      {"granularity", "group"},
                      {"group_size", o.groupSize}};
            if (m != "RTN") w["method"] = lower(m);
            Cell c;
            c.group = Group::Weight;
            c.setting = "W" + std::to_string(b);
            c.bits = b;
            c.method = m;
            c.calibrated = m != "RTN";
            c.recipe = makeRecipe(c.setting + "-" + m, {{"weight", w}});
            out.push_back(std::move(c));
        }
}

/// Weight-activation: per-channel weights, dynamic per-token activations at every linear input.
void addWeightActivationCells(const GridOptions& o, std::vector<Cell>& out) {
    for (auto [wb, ab] : {std::pair{8, 8}, std::pair{4, 8}, std::pair{4, 4}})
        for (const std::string& m : groupMethods(Group::WeightActivation)) {
            if (!wanted(o, m)) continue;
            json w = {{"bits", wb}, {"symmetric", wb == 8}, {"granularity", "channel"}};
            json rule = {{"activation", {{"bits", ab}, {"mode", "dynamic_per_token"}}}};
            if (m == "SmoothQuant") rule["smoothquant"] = {{"alpha", 0.5}};
            if (m == "OmniQuant") {
                w["method"] = "omniquant";
                w["epochs"] = o.omniquantEpochs;
            }
            if (m == "QuaRot-GPTQ") w["method"] = "gptq";
            if (m == "Atom") {
                // Atom: the top channels by Σ x² at 8 bits, groups over the rest (weights by
                // GPTQ on the reordered matrix, asymmetric; activations per token and group).
                w = {{"bits", wb},
                     {"symmetric", false},
                     {"granularity", "group"},
                     {"group_size", o.groupSize},
                     {"method", "gptq"}};
                rule["activation"]["group_size"] = o.groupSize;
                rule["outliers"] = {{"count", o.atomOutliers}, {"bits", 8}, {"select", "sum_sq"}};
            }
            rule["weight"] = w;
            Cell c;
            c.group = Group::WeightActivation;
            c.setting = "W" + std::to_string(wb) + "A" + std::to_string(ab);
            c.bits = wb;
            c.actBits = ab;
            c.method = m;
            c.calibrated = m != "RTN" && m != "QuaRot";
            c.recipe = makeRecipe(c.setting + "-" + m, rule, m.rfind("QuaRot", 0) == 0);
            out.push_back(std::move(c));
        }
}

/// KV cache: per-token groups (RTN, as the paper); KIVI: keys per channel in blocks of 32
/// tokens, values per token in groups of 32 channels; WKVQuant: RTN's per-token groups with
/// past-only quantisation and the calibrated per-channel smoothing (CRR over one more block).
void addKvCells(const GridOptions& o, std::vector<Cell>& out) {
    for (int b : {8, 4, 3, 2})
        for (const std::string& m : groupMethods(Group::KvCache)) {
            if (!wanted(o, m)) continue;
            json kv = {{"k_bits", b}, {"v_bits", b}, {"v_granularity", "token"}};
            kv["k_granularity"] = m == "KIVI" ? "channel" : "token";
            kv["group_size"] = m == "KIVI" ? o.kiviGroupSize : o.kvGroupSize;
            if (m == "WKVQuant") {
                kv["past_only"] = true;
                kv["smooth"] = true;
                kv["crr_blocks"] = 1;
            }
            Cell c;
            c.group = Group::KvCache;
            c.setting = "KV" + std::to_string(b);
            c.bits = b;
            c.method = m;
            c.calibrated = m == "WKVQuant";
            c.recipe = makeRecipe(c.setting + "-" + m, {{"kv", kv}});
            out.push_back(std::move(c));
        }
}

} // namespace

Group parseGroup(const std::string& s) {
    const std::string l = lower(s);
    if (l == "w") return Group::Weight;
    if (l == "wa") return Group::WeightActivation;
    if (l == "kv") return Group::KvCache;
    throw ArgumentError("unknown study group '" + s + "' (use w, wa, kv)");
}

const std::vector<std::string>& groupMethods(Group g) {
    static const std::vector<std::string> w = {"RTN", "AWQ", "GPTQ"};
    static const std::vector<std::string> wa = {"RTN",    "SmoothQuant", "OmniQuant",
                                                "QuaRot", "QuaRot-GPTQ", "Atom"};
    static const std::vector<std::string> kv = {"RTN", "KIVI", "WKVQuant"};
    return g == Group::Weight ? w : g == Group::WeightActivation ? wa : kv;
}

GridOptions fitToModel(const GridOptions& opts, const Model& model) {
    GridOptions o = opts;
    int64_t narrowest = 0;
    for (const TensorView& t : model.tensors()) {
        bool explicitOnly = false;
        if (t.shape.size() == 2 && compress::isTargetable(t.name, &explicitOnly) && !explicitOnly) {
            o.groupSize = std::min(o.groupSize, t.shape[1]);
            narrowest = narrowest > 0 ? std::min(narrowest, t.shape[1]) : t.shape[1];
        }
    }
    // Atom's share of outlier channels (1/32 of the width), at least one, below the width.
    if (narrowest > 1)
        o.atomOutliers =
            std::clamp<int64_t>(narrowest / 32, 1, std::min(o.atomOutliers, narrowest - 1));
    const int64_t kvRow = model.spec().nKvHeads * model.spec().headDim;
    if (kvRow > 0) {
        o.kvGroupSize = std::min(o.kvGroupSize, kvRow);
        o.kiviGroupSize = std::min(o.kiviGroupSize, kvRow);
    }
    return o;
}

std::vector<Cell> grid(const GridOptions& opts, const Model* model) {
    const GridOptions o = model ? fitToModel(opts, *model) : opts;
    for (const auto& m : o.methods) {
        bool known = false;
        for (Group g : {Group::Weight, Group::WeightActivation, Group::KvCache})
            for (const auto& n : groupMethods(g)) known = known || lower(n) == lower(m);
        if (!known)
            throw ArgumentError(
                "unknown study method '" + m +
                "' (use rtn, awq, gptq, smoothquant, omniquant, quarot, quarot-gptq, atom, "
                "kivi, wkvquant)");
    }
    std::vector<Cell> out;
    for (Group g : {Group::Weight, Group::WeightActivation, Group::KvCache}) {
        if (std::find(o.groups.begin(), o.groups.end(), g) == o.groups.end()) continue;
        if (g == Group::Weight) addWeightCells(o, out);
        if (g == Group::WeightActivation) addWeightActivationCells(o, out);
        if (g == Group::KvCache) addKvCells(o, out);
    }
    return out;
}

namespace {

Row rowOf(const Cell& c) {
    Row r;
    r.group = c.group;
    r.setting = c.setting;
    r.method = c.method;
    r.bits = c.bits;
    r.actBits = c.actBits;
    return r;
}

/// Mean stored bits per cached K/V value over the quantised blocks (scales included).
double kvBits(const compress::Plan& plan) {
    if (plan.kv.empty()) return 0;
    double sum = 0;
    for (const auto& k : plan.kv)
        sum += 0.5 * (compress::KvSettings::bitsPerValue(k.kv.kBits, k.kv.kGranularity,
                                                         k.kv.groupSize, k.width) +
                      compress::KvSettings::bitsPerValue(k.kv.vBits, k.kv.vGranularity,
                                                         k.kv.groupSize, k.width));
    return sum / double(plan.kv.size());
}

/// A compressed cell waiting for its evaluation.
struct Pending {
    size_t row = 0;
    std::unique_ptr<compress::CompressedModel> overlay;
};

/// Compresses cell `c` into `p`; errors become the row's status. False when cancelled.
bool compressCell(const Model& model, const Cell& c, const StudyInputs& in, Row& row, Pending& p,
                  Progress& progress) {
    if (c.calibrated && !in.calibration) {
        row.status = "skipped: " + c.method + " needs calibration data";
        return true;
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
        compress::CompressOptions co;
        co.calibration = c.calibrated ? in.calibration : nullptr;
        compress::CompressResult r = compress::compress(model, c.recipe, progress, co);
        if (r.status == Status::Cancelled) return false;
        const compress::SizeInfo sz = r.model->totalSize();
        row.bitsPerWeight = sz.bitsPerWeight();
        row.bytes = sz.bytes();
        row.kvBitsPerValue = kvBits(r.plan);
        p.overlay = std::move(r.model);
    } catch (const Error& e) {
        row.status = std::string("failed: ") + e.what();
    }
    row.compressSeconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return true;
}

/// Perplexity and divergence of the pending overlays against one baseline pass, then their
/// tasks. False when cancelled.
bool evaluateBatch(const Model& model, std::vector<Pending>& batch, const StudyInputs& in,
                   StudyResult& res, Progress& progress) {
    std::vector<DivergenceConfig> configs;
    for (const Pending& p : batch)
        configs.push_back(
            {res.rows[p.row].setting + "-" + res.rows[p.row].method, p.overlay.get()});
    RangeProgress pplProgress(progress, 0.0, in.tasks.empty() ? 1.0 : 0.5, "divergence: ");
    const DivergenceResult d = compareToBaseline(model, configs, in.tokens, in.po, pplProgress);
    if (d.status == Status::Cancelled) return false;
    res.baselinePpl = d.baselinePpl;
    res.baselinePplError = d.baselinePplError;
    res.ctx = d.ctx;
    res.chunks = d.chunks;
    res.scoredTokens = d.scoredTokens;
    for (size_t k = 0; k < batch.size(); ++k) {
        Row& row = res.rows[batch[k].row];
        const DivergenceStats& s = d.configs[k];
        row.ppl = s.ppl;
        row.pplError = s.pplError;
        row.lnPplRatio = s.meanLnRatio;
        row.lnPplRatioError = s.meanLnRatioError;
        row.kld = s.kld.mean;
        row.kldError = s.kld.meanError;
        row.sameTop = s.sameTop;
        row.evalSeconds = s.seconds;
    }
    for (size_t k = 0; k < batch.size() && !in.tasks.empty(); ++k) {
        Row& row = res.rows[batch[k].row];
        ModelScorer scorer(*batch[k].overlay, in.taskCtx, 0, in.po.exactActivations);
        for (const PreparedTask& t : in.tasks) {
            RangeProgress tp(progress, 0.5, 1.0,
                             row.setting + "-" + row.method + " " + taskName(t.kind) + ": ");
            const TaskResult tr = evaluateTask(t, scorer, tp);
            if (tr.status == Status::Cancelled) return false;
            row.taskAcc[taskName(t.kind)] = tr.acc;
            row.evalSeconds += tr.seconds;
        }
    }
    return true;
}

/// The baseline's task accuracies. False when cancelled.
bool baselineTasks(const Model& model, const StudyInputs& in, StudyResult& res,
                   Progress& progress) {
    if (in.tasks.empty()) return true;
    ModelScorer scorer(model, in.taskCtx, 0, in.po.exactActivations);
    for (const PreparedTask& t : in.tasks) {
        RangeProgress tp(progress, 0.0, 1.0, std::string("baseline ") + taskName(t.kind) + ": ");
        const TaskResult tr = evaluateTask(t, scorer, tp);
        if (tr.status == Status::Cancelled) return false;
        res.baselineTaskAcc[taskName(t.kind)] = tr.acc;
    }
    return true;
}

} // namespace

StudyResult run(const Model& model, const std::vector<Cell>& cells, const StudyInputs& in,
                Progress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    StudyResult res;
    res.model = model.path();
    for (const Cell& c : cells) res.rows.push_back(rowOf(c));
    const double n = double(cells.size()) + 1;
    auto finish = [&](Status s) {
        res.status = s;
        res.conclusions = conclusions(res);
        res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return res;
    };
    {
        RangeProgress bp(progress, 0.0, 1.0 / n, "baseline: ");
        if (!baselineTasks(model, in, res, bp)) return finish(Status::Cancelled);
    }
    // Progress: cell i compresses in [(1 + i) / n, (1.7 + i) / n]; a batch is evaluated in the
    // last 0.3 / n of its last cell, so the fraction never goes back.
    const size_t batchSize = size_t(std::max(1, in.batch));
    std::vector<Pending> batch;
    size_t last = 0; // the last cell compressed
    for (size_t i = 0; i <= cells.size(); ++i) {
        const bool flush = i == cells.size() || batch.size() == batchSize;
        if (flush && !batch.empty()) {
            const double a = (1.7 + double(last)) / n;
            RangeProgress ep(progress, a, a + 0.3 / n, "evaluate ");
            if (!evaluateBatch(model, batch, in, res, ep)) return finish(Status::Cancelled);
            batch.clear();
        }
        if (i == cells.size()) break;
        const Cell& c = cells[i];
        const double a = (1.0 + double(i)) / n;
        RangeProgress cp(progress, a, a + 0.7 / n, c.setting + "-" + c.method + ": ");
        Pending p;
        p.row = i;
        if (!compressCell(model, c, in, res.rows[i], p, cp)) return finish(Status::Cancelled);
        if (p.overlay) batch.push_back(std::move(p));
        last = i;
    }
    // A study whose cells were all skipped still reports the baseline's perplexity.
    if (res.ctx == 0 && !in.tokens.empty()) {
        RangeProgress pp(progress, 0.95, 1.0, "baseline: ");
        const PerplexityResult r = computePerplexity(model, in.tokens, in.po, pp);
        if (r.status == Status::Cancelled) return finish(Status::Cancelled);
        res.baselinePpl = r.ppl;
        res.baselinePplError = r.pplError;
        res.ctx = r.ctx;
        res.chunks = r.chunks;
        res.scoredTokens = r.scoredTokens;
    }
    progress.report(1.0, "done");
    return finish(Status::Ok);
}

// --------------------------------------------------------------------------------- conclusions
namespace {

/// The ok row of `setting` with the lowest perplexity (nullptr when none).
const Row* best(const StudyResult& r, const std::string& setting) {
    const Row* b = nullptr;
    for (const Row& row : r.rows)
        if (row.ok() && std::isfinite(row.ppl) && row.setting == setting &&
            (!b || row.ppl < b->ppl))
            b = &row;
    return b;
}

const Row* find(const StudyResult& r, const std::string& setting, const std::string& method) {
    for (const Row& row : r.rows)
        if (row.ok() && row.setting == setting && row.method == method) return &row;
    return nullptr;
}

std::string num(const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

void lowestNearLossless(const StudyResult& r, std::vector<Conclusion>& out) {
    static const char* kNames[] = {"weights", "weights and activations", "the KV cache"};
    for (Group g : {Group::Weight, Group::WeightActivation, Group::KvCache}) {
        const std::vector<std::string> settings = settingsOf(r, g);
        if (settings.empty() || r.baselinePpl <= 0) continue;
        const Row* lowest = nullptr;
        for (const std::string& s : settings) { // high to low bits: stop at the first loss
            const Row* b = best(r, s);
            if (!b || b->ppl > kNearLosslessRatio * r.baselinePpl) break;
            lowest = b;
        }
        Conclusion c;
        c.id = std::string("lowest-bits-") + groupName(g);
        if (lowest) {
            c.text = "Lowest near-lossless setting for " + std::string(kNames[int(g)]) + ": " +
                     lowest->setting + " with " + lowest->method + " (PPL " +
                     num("%.4g", lowest->ppl) + " vs " + num("%.4g", r.baselinePpl) +
                     " unquantised, ≤ " + num("%.0f", (kNearLosslessRatio - 1) * 100) +
                     " % above).";
            c.data = {
                {"setting", lowest->setting}, {"method", lowest->method}, {"ppl", lowest->ppl}};
        } else {
            c.text = "No setting of " + std::string(kNames[int(g)]) + " stays within " +
                     num("%.0f", (kNearLosslessRatio - 1) * 100) + " % of the unquantised PPL (" +
                     settings.front() + " is the highest tried).";
            c.data = {{"setting", nullptr}};
        }
        c.data["group"] = groupName(g);
        c.data["threshold_ratio"] = kNearLosslessRatio;
        out.push_back(std::move(c));
    }
}

/// The paper's headline comparison at 4 bits: which tensor type loses most, with the best
/// method of each setting (`rtnOnly` false) or with round-to-nearest alone.
void sensitivityAt4(const StudyResult& r, bool rtnOnly, std::vector<Conclusion>& out) {
    struct Item {
        std::string type, how;
        double cost;
    };
    auto pick = [&](const char* s) { return rtnOnly ? find(r, s, "RTN") : best(r, s); };
    std::vector<Item> items;
    if (const Row* w = pick("W4")) items.push_back({"weights", "W4 vs unquantised", w->lnPplRatio});
    const Row* a4 = pick("W4A4");
    const Row* a8 = pick("W4A8");
    if (a4 && a8) items.push_back({"activations", "W4A4 vs W4A8", a4->lnPplRatio - a8->lnPplRatio});
    if (const Row* k = pick("KV4"))
        items.push_back({"KV cache", "KV4 vs unquantised", k->lnPplRatio});
    if (items.size() < 2) return;
    std::stable_sort(items.begin(), items.end(),
                     [](const Item& x, const Item& y) { return x.cost > y.cost; });
    Conclusion c;
    c.id = rtnOnly ? "sensitivity-4bit-rtn" : "sensitivity-4bit";
    c.text = std::string("Most sensitive to 4-bit quantisation ") +
             (rtnOnly ? "with round-to-nearest: " : "with the best method of each setting: ");
    json arr = json::array();
    for (size_t i = 0; i < items.size(); ++i) {
        if (i) c.text += ", then ";
        c.text += items[i].type + " (PPL ×" + num("%.3f", std::exp(items[i].cost)) + ", " +
                  items[i].how + ")";
        arr.push_back({{"type", items[i].type},
                       {"comparison", items[i].how},
                       {"ln_ppl_ratio", items[i].cost},
                       {"ppl_factor", std::exp(items[i].cost)}});
    }
    c.text += ".";
    c.data = {{"ranking", arr}, {"methods", rtnOnly ? "RTN" : "best"}};
    out.push_back(std::move(c));
}

void bestMethods(const StudyResult& r, std::vector<Conclusion>& out) {
    for (Group g : {Group::Weight, Group::WeightActivation, Group::KvCache})
        for (const std::string& s : settingsOf(r, g)) {
            const Row* b = best(r, s);
            const Row* rtn = find(r, s, "RTN");
            if (!b || !rtn || b == rtn) continue;
            Conclusion c;
            c.id = "best-method-" + s;
            c.text = s + ": " + b->method + " is best (PPL " + num("%.4g", b->ppl) + " vs RTN " +
                     num("%.4g", rtn->ppl) + ", KLD " + num("%.3g", b->kld) + " vs " +
                     num("%.3g", rtn->kld) + ").";
            c.data = {{"setting", s},        {"method", b->method}, {"ppl", b->ppl},
                      {"ppl_rtn", rtn->ppl}, {"kld", b->kld},       {"kld_rtn", rtn->kld}};
            out.push_back(std::move(c));
        }
}

} // namespace

std::vector<std::string> settingsOf(const StudyResult& r, Group g) {
    std::vector<std::string> s;
    for (const Row& row : r.rows)
        if (row.group == g && std::find(s.begin(), s.end(), row.setting) == s.end())
            s.push_back(row.setting);
    return s;
}

std::vector<Conclusion> conclusions(const StudyResult& r) {
    std::vector<Conclusion> out;
    sensitivityAt4(r, false, out);
    sensitivityAt4(r, true, out);
    lowestNearLossless(r, out);
    bestMethods(r, out);
    return out;
}

// ------------------------------------------------------------------------------------- JSON
json toJson(const StudyResult& r) {
    json rows = json::array();
    for (const Row& x : r.rows) {
        json o = {{"group", groupName(x.group)},
                  {"setting", x.setting},
                  {"method", x.method},
                  {"bits", x.bits},
                  {"act_bits", x.actBits},
                  {"status", x.status},
                  {"bits_per_weight", x.bitsPerWeight},
                  {"bytes", x.bytes},
                  {"kv_bits_per_value", x.kvBitsPerValue},
                  {"ppl", x.ppl},
                  {"ppl_se", x.pplError},
                  {"ln_ppl_ratio", x.lnPplRatio},
                  {"ln_ppl_ratio_se", x.lnPplRatioError},
                  {"kld", x.kld},
                  {"kld_se", x.kldError},
                  {"same_top", x.sameTop},
                  {"tasks", x.taskAcc},
                  {"compress_seconds", x.compressSeconds},
                  {"eval_seconds", x.evalSeconds}};
        rows.push_back(std::move(o));
    }
    json cs = json::array();
    for (const Conclusion& c : r.conclusions)
        cs.push_back({{"id", c.id}, {"text", c.text}, {"data", c.data}});
    return {
        {"lcw_study", 1},
        {"model", r.model},
        {"status", r.status == Status::Ok ? "complete" : "cancelled"},
        {"baseline",
         {{"ppl", r.baselinePpl}, {"ppl_se", r.baselinePplError}, {"tasks", r.baselineTaskAcc}}},
        {"ctx", r.ctx},
        {"chunks", r.chunks},
        {"scored_tokens", r.scoredTokens},
        {"rows", rows},
        {"conclusions", cs},
        {"settings", r.settings},
        {"seconds", r.seconds}};
}

StudyResult fromJson(const json& j, const std::string& source) {
    // Non-finite numbers (a diverged configuration's PPL) are written as null.
    auto d = [](const json& o, const char* key) {
        const json& v = o.at(key);
        return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
    };
    // Integers must be JSON integers in range: a float such as 1e30 read as an integer would be
    // undefined behaviour.
    auto integer = [&](const json& o, const char* key, int64_t lo, int64_t hi) {
        const json& v = o.at(key);
        const std::optional<int64_t> i = jsonIntegerAs<int64_t>(v);
        if (!i || *i < lo || *i > hi)
            throw FormatError(source, std::string("malformed study: \"") + key +
                                          "\" must be an integer in [" + std::to_string(lo) + ", " +
                                          std::to_string(hi) + "], got " + v.dump());
        return *i;
    };
    constexpr int64_t kMaxI = std::numeric_limits<int64_t>::max();
    try {
        if (!j.is_object() || !j.contains("lcw_study") || !j["lcw_study"].is_number_integer() ||
            j["lcw_study"].get<int64_t>() != 1)
            throw FormatError(source, "not an lcw study (no \"lcw_study\": 1)");
        StudyResult r;
        r.model = j.at("model").get<std::string>();
        r.status = j.at("status").get<std::string>() == "complete" ? Status::Ok : Status::Cancelled;
        r.baselinePpl = d(j.at("baseline"), "ppl");
        r.baselinePplError = d(j.at("baseline"), "ppl_se");
        r.baselineTaskAcc = j.at("baseline").at("tasks").get<std::map<std::string, double>>();
        r.ctx = integer(j, "ctx", 0, kMaxI);
        r.chunks = integer(j, "chunks", 0, kMaxI);
        r.scoredTokens = integer(j, "scored_tokens", 0, kMaxI);
        for (const json& o : j.at("rows")) {
            Row x;
            x.group = parseGroup(o.at("group").get<std::string>());
            x.setting = o.at("setting").get<std::string>();
            x.method = o.at("method").get<std::string>();
            x.bits = int(integer(o, "bits", 0, 64));
            x.actBits = int(integer(o, "act_bits", 0, 64));
            x.status = o.at("status").get<std::string>();
            x.bitsPerWeight = d(o, "bits_per_weight");
            x.bytes = uint64_t(integer(o, "bytes", 0, kMaxI));
            x.kvBitsPerValue = d(o, "kv_bits_per_value");
            x.ppl = d(o, "ppl");
            x.pplError = d(o, "ppl_se");
            x.lnPplRatio = d(o, "ln_ppl_ratio");
            x.lnPplRatioError = d(o, "ln_ppl_ratio_se");
            x.kld = d(o, "kld");
            x.kldError = d(o, "kld_se");
            x.sameTop = d(o, "same_top");
            x.taskAcc = o.at("tasks").get<std::map<std::string, double>>();
            x.compressSeconds = d(o, "compress_seconds");
            x.evalSeconds = d(o, "eval_seconds");
            r.rows.push_back(std::move(x));
        }
        for (const json& o : j.at("conclusions"))
            r.conclusions.push_back(
                {o.at("id").get<std::string>(), o.at("text").get<std::string>(), o.at("data")});
        r.settings = j.value("settings", json::object());
        r.seconds = j.value("seconds", 0.0);
        return r;
    } catch (const json::exception& e) {
        throw FormatError(source, std::string("malformed study: ") + e.what());
    } catch (const ArgumentError& e) {
        throw FormatError(source, e.what());
    }
}

} // namespace lcw::study
