#include "core/eval/autotune.h"

#include "core/compress/compressed_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>

namespace lcw {

using json = nlohmann::json;

namespace {

std::string fmtBpw(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", v);
    return b;
}

} // namespace

KnapsackSolution solveKnapsack(const std::vector<KnapsackItem>& items, uint64_t capacity,
                               int64_t maxCells) {
    const size_t n = items.size();
    std::vector<uint64_t> minCost(n);
    uint64_t base = 0;
    for (size_t i = 0; i < n; ++i) {
        const auto& it = items[i];
        if (it.cost.empty())
            throw ArgumentError("knapsack: item " + std::to_string(i) + " has no option");
        if (it.cost.size() != it.value.size())
            throw ArgumentError("knapsack: item " + std::to_string(i) +
                                " has a different number of costs and values");
        if (it.cost.size() > 255)
            throw ArgumentError("knapsack: item " + std::to_string(i) + " has over 255 options");
        minCost[i] = *std::min_element(it.cost.begin(), it.cost.end());
        base += minCost[i];
    }
    if (base > capacity)
        throw ArgumentError("knapsack: infeasible: the cheapest options need " +
                            std::to_string(base) + ", the capacity is " + std::to_string(capacity));
    const uint64_t spare = capacity - base;
    // Unit: the gcd of all extra costs (exact), coarsened only when the table would be too big.
    uint64_t g = 0;
    for (size_t i = 0; i < n; ++i)
        for (uint64_t c : items[i].cost) g = std::gcd(g, c - minCost[i]);
    if (g == 0) g = 1;
    maxCells = std::max<int64_t>(
        1, std::min<int64_t>(maxCells, (int64_t(1) << 28) / int64_t(std::max<size_t>(n, 1))));
    uint64_t unit = g;
    if (spare / g > uint64_t(maxCells))
        unit = g * ((spare / g + uint64_t(maxCells) - 1) / uint64_t(maxCells));
    const size_t C = size_t(spare / unit);
    std::vector<std::vector<uint64_t>> w(n);
    for (size_t i = 0; i < n; ++i)
        for (uint64_t c : items[i].cost) w[i].push_back((c - minCost[i] + unit - 1) / unit);

    // dp[c]: least value of the items so far with extra cost <= c units.
    std::vector<double> dp(C + 1, 0.0), next(C + 1);
    std::vector<std::vector<uint8_t>> choice(n, std::vector<uint8_t>(C + 1, 0));
    for (size_t i = 0; i < n; ++i) {
        const auto& val = items[i].value;
        for (size_t c = 0; c <= C; ++c) {
            double best = std::numeric_limits<double>::infinity();
            uint8_t bj = 0;
            for (size_t j = 0; j < w[i].size(); ++j) {
                if (w[i][j] > c) continue;
                const double v = dp[c - size_t(w[i][j])] + val[j];
                if (v < best) {
                    best = v;
                    bj = uint8_t(j);
                }
            }
            next[c] = best;
            choice[i][c] = bj;
        }
        std::swap(dp, next);
    }
    KnapsackSolution s;
    s.unit = unit;
    s.choice.assign(n, 0);
    size_t c = C;
    for (size_t i = n; i-- > 0;) {
        const int j = choice[i][c];
        s.choice[i] = j;
        c -= size_t(w[i][size_t(j)]);
    }
    auto totals = [&] {
        s.cost = 0;
        s.value = 0;
        for (size_t i = 0; i < n; ++i) {
            s.cost += items[i].cost[size_t(s.choice[i])];
            s.value += items[i].value[size_t(s.choice[i])];
        }
    };
    totals();
    // Rounded costs leave exact capacity unused: spend it on the best single switches.
    while (unit > 1) {
        double bestGain = 0;
        size_t bi = 0, bj = 0;
        for (size_t i = 0; i < n; ++i) {
            const size_t cur = size_t(s.choice[i]);
            for (size_t j = 0; j < items[i].cost.size(); ++j) {
                const uint64_t newCost = s.cost - items[i].cost[cur] + items[i].cost[j];
                const double gain = items[i].value[cur] - items[i].value[j];
                if (newCost <= capacity && gain > bestGain) {
                    bestGain = gain;
                    bi = i;
                    bj = j;
                }
            }
        }
        if (bestGain <= 0) break;
        s.choice[bi] = int(bj);
        totals();
    }
    return s;
}

ModelBudgetBase modelBudgetBase(const SensitivityScan& scan, const Model& base) {
    ModelBudgetBase b;
    uint64_t total = 0;
    for (const auto& t : base.tensors()) {
        b.modelParams += t.numel();
        total += t.nbytes * 8;
    }
    // one entry per target (any scheme): its tensors' base bits leave the "other" part
    std::map<std::string, const SensitivityEntry*> targets;
    for (const auto& s : scan.schemes)
        for (const auto& e : s.entries) targets.emplace(e.target, &e);
    uint64_t targetBase = 0;
    for (const auto& [name, e] : targets) {
        targetBase += e->baseBits;
        b.targetParams += e->params;
    }
    b.otherBits = total >= targetBase ? total - targetBase : 0;
    return b;
}

AutotunePlan planAutotuneModel(const SensitivityScan& scan, const Model& base,
                               double modelBudgetBpw, const std::vector<std::string>& schemes,
                               const std::string& uniform, const std::string& recipeName) {
    if (!(modelBudgetBpw > 0) || !std::isfinite(modelBudgetBpw))
        throw ArgumentError("autotune: the budget must be a positive number of bits per weight");
    const ModelBudgetBase mb = modelBudgetBase(scan, base);
    const long double allowed =
        std::floor((long double)modelBudgetBpw * (long double)mb.modelParams + 1e-6L);
    if (mb.targetParams <= 0) throw ArgumentError("autotune: the scan has no targets");
    if (allowed <= (long double)mb.otherBits)
        throw ArgumentError("autotune: a whole-model budget of " + fmtBpw(modelBudgetBpw) +
                            " bits/weight is infeasible: the tensors autotune does not quantise "
                            "(embeddings, norms, ...) already take " +
                            fmtBpw(double(mb.otherBits) / double(mb.modelParams)) +
                            " bits/weight of the whole model");
    const double layerBpw =
        double((allowed - (long double)mb.otherBits) / (long double)mb.targetParams);
    char nameBuf[64];
    std::snprintf(nameBuf, sizeof nameBuf, "autotune-%gbpw", modelBudgetBpw);
    AutotunePlan plan;
    try {
        plan = planAutotune(scan, layerBpw, schemes, uniform,
                            recipeName.empty() ? std::string(nameBuf) : recipeName);
    } catch (const ArgumentError& e) {
        std::string why = e.what();
        if (why.rfind("autotune: ", 0) == 0) why.erase(0, 10);
        throw ArgumentError("autotune: a whole-model budget of " + fmtBpw(modelBudgetBpw) +
                            " bits/weight leaves " + fmtBpw(layerBpw) +
                            " bits/weight for the quantised layers; " + why);
    }
    plan.modelParams = mb.modelParams;
    plan.otherBits = mb.otherBits;
    plan.modelBudgetBpw = modelBudgetBpw;
    return plan;
}

namespace {

/// For each target (in model order): the candidate schemes that apply, as (scheme index, entry).
using TargetOptions = std::map<int, std::vector<std::pair<size_t, const SensitivityEntry*>>>;

/// The scanned schemes named by `schemesIn` (all scanned ones when empty); `scanned` receives
/// their list for messages.
std::vector<const SchemeScan*> candidateSchemes(const SensitivityScan& scan,
                                                const std::vector<std::string>& schemesIn,
                                                std::string& scanned) {
    std::vector<std::string> schemes = schemesIn;
    for (const auto& s : scan.schemes) scanned += (scanned.empty() ? "" : ", ") + s.scheme.name;
    if (schemes.empty())
        for (const auto& s : scan.schemes) schemes.push_back(s.scheme.name);
    std::vector<const SchemeScan*> cand;
    for (const auto& name : schemes) {
        const SchemeScan* s = scan.find(name);
        if (!s)
            throw ArgumentError("autotune: scheme '" + name +
                                "' is not in the scan (scanned: " + scanned + ")");
        cand.push_back(s);
    }
    if (cand.empty()) throw ArgumentError("autotune: no candidate scheme");
    return cand;
}

/// Targets in model order with the entries of the schemes that apply to each; a layer that
/// every scheme skipped is an error.
TargetOptions optionsByTarget(const std::vector<const SchemeScan*>& cand) {
    TargetOptions byTarget;
    std::map<int, std::string> names;
    for (size_t s = 0; s < cand.size(); ++s)
        for (const auto& e : cand[s]->entries) {
            byTarget[e.order].push_back({s, &e});
            names[e.order] = e.target;
        }
    for (const auto& s : cand)
        for (const auto& [t, why] : s->skipped) {
            bool found = false;
            for (const auto& [o, n] : names) found |= n == t;
            if (!found)
                throw ArgumentError("autotune: no candidate scheme applies to " + t + " (" + why +
                                    ")");
        }
    return byTarget;
}

/// The knapsack over the targets within the budget: fills the plan's sizes, estimate and
/// choices and returns the chosen (scheme, entry) per target.
std::vector<std::pair<size_t, const SensitivityEntry*>>
solveBudget(const TargetOptions& byTarget, const std::vector<const SchemeScan*>& cand,
            double budgetBpw, AutotunePlan& plan) {
    std::vector<KnapsackItem> items;
    std::vector<const std::vector<std::pair<size_t, const SensitivityEntry*>>*> opts;
    for (const auto& [order, list] : byTarget) {
        KnapsackItem it;
        for (const auto& [s, e] : list) {
            it.cost.push_back(e->bits);
            it.value.push_back(e->stats.kld.mean);
        }
        plan.params += list.front().second->params;
        items.push_back(std::move(it));
        opts.push_back(&list);
    }
    plan.budgetBits =
        uint64_t(std::floor((long double)budgetBpw * (long double)plan.params + 1e-6L));
    uint64_t minBits = 0;
    for (const auto& it : items) minBits += *std::min_element(it.cost.begin(), it.cost.end());
    if (minBits > plan.budgetBits)
        throw ArgumentError("autotune: a budget of " + fmtBpw(budgetBpw) +
                            " bits/weight is infeasible: the smallest candidate scheme of every "
                            "layer already needs " +
                            fmtBpw(double(minBits) / double(plan.params)) + " bits/weight");
    const KnapsackSolution sol = solveKnapsack(items, plan.budgetBits);
    plan.knapsackUnit = sol.unit;
    plan.bits = sol.cost;
    plan.estimatedKld = sol.value;
    std::vector<std::pair<size_t, const SensitivityEntry*>> chosen;
    for (size_t i = 0; i < opts.size(); ++i) {
        const auto& [s, e] = (*opts[i])[size_t(sol.choice[i])];
        plan.choices.push_back(
            {e->target, cand[s]->scheme.name, e->params, e->bits, e->stats.kld.mean});
        chosen.push_back({s, e});
    }
    return chosen;
}

/// The mixed-precision recipe of the chosen schemes, one commented rule per target rule.
compress::Recipe mixedRecipe(const std::vector<std::pair<size_t, const SensitivityEntry*>>& chosen,
                             const std::vector<const SchemeScan*>& cand, double budgetBpw,
                             const std::string& recipeName) {
    json rules = json::array();
    for (const auto& [s, e] : chosen)
        for (json r : e->rules) {
            char c[160];
            std::snprintf(c, sizeof c, "%s: %s (estimated KLD %.6g)", e->target.c_str(),
                          cand[s]->scheme.name.c_str(), e->stats.kld.mean);
            r["comment"] = c;
            rules.push_back(r);
        }
    char nameBuf[64];
    std::snprintf(nameBuf, sizeof nameBuf, "autotune-%gbpw", budgetBpw);
    std::string schemeList;
    for (const auto* c : cand) schemeList += (schemeList.empty() ? "" : ", ") + c->scheme.name;
    return compress::Recipe::fromJson(
        {{"lcw_recipe", compress::Recipe::kVersion},
         {"name", recipeName.empty() ? std::string(nameBuf) : recipeName},
         {"description", "mixed precision from a sensitivity scan: one scheme per layer among " +
                             schemeList + ", estimated KLD minimal with at most " +
                             fmtBpw(budgetBpw) + " bits/weight over the quantised layers"},
         {"rules", rules}});
}

/// A scheme applied to every target: its bits, estimated KLD and rules; false when it does not
/// cover every target.
bool uniformOf(const SchemeScan& s, const TargetOptions& byTarget, uint64_t& bits, double& kld,
               json& urules) {
    bits = 0;
    kld = 0;
    urules = json::array();
    size_t covered = 0;
    std::vector<const SensitivityEntry*> es(s.entries.size());
    for (size_t i = 0; i < s.entries.size(); ++i) es[i] = &s.entries[i];
    std::sort(es.begin(), es.end(), [](auto a, auto b) { return a->order < b->order; });
    for (const auto* e : es) {
        if (!byTarget.count(e->order)) continue;
        ++covered;
        bits += e->bits;
        kld += e->stats.kld.mean;
        for (const auto& r : e->rules) urules.push_back(r);
    }
    return covered == byTarget.size();
}

/// The uniform comparison: the named scheme, or the largest candidate that fits the budget.
void attachUniform(const SensitivityScan& scan, const std::vector<const SchemeScan*>& cand,
                   const TargetOptions& byTarget, const std::string& uniform,
                   const std::string& scanned, AutotunePlan& plan) {
    const SchemeScan* u = nullptr;
    uint64_t ub = 0;
    double uk = 0;
    json urules;
    if (!uniform.empty()) {
        u = scan.find(uniform);
        if (!u)
            throw ArgumentError("autotune: the uniform scheme '" + uniform +
                                "' is not in the scan (scanned: " + scanned + ")");
        if (!uniformOf(*u, byTarget, ub, uk, urules))
            throw ArgumentError("autotune: the uniform scheme '" + uniform +
                                "' does not apply to every layer");
    } else {
        for (const auto* c : cand) {
            uint64_t b = 0;
            double k = 0;
            json r;
            if (uniformOf(*c, byTarget, b, k, r) && b <= plan.budgetBits && (!u || b > ub)) {
                u = c;
                ub = b;
                uk = k;
                urules = r;
            }
        }
    }
    if (!u) return;
    plan.uniformScheme = u->scheme.name;
    plan.uniformBits = ub;
    plan.uniformEstimatedKld = uk;
    plan.uniformRecipe = compress::Recipe::fromJson({{"lcw_recipe", compress::Recipe::kVersion},
                                                     {"name", "uniform " + u->scheme.name},
                                                     {"rules", urules}});
}

} // namespace

AutotunePlan planAutotune(const SensitivityScan& scan, double budgetBpw,
                          const std::vector<std::string>& schemesIn, const std::string& uniform,
                          const std::string& recipeName) {
    if (!(budgetBpw > 0) || !std::isfinite(budgetBpw))
        throw ArgumentError("autotune: the budget must be a positive number of bits per weight");
    std::string scanned;
    const auto cand = candidateSchemes(scan, schemesIn, scanned);
    const TargetOptions byTarget = optionsByTarget(cand);
    AutotunePlan plan;
    plan.budgetBpw = budgetBpw;
    const auto chosen = solveBudget(byTarget, cand, budgetBpw, plan);
    plan.recipe = mixedRecipe(chosen, cand, budgetBpw, recipeName);
    attachUniform(scan, cand, byTarget, uniform, scanned, plan);
    return plan;
}

AutotuneVerification verifyAutotune(const Model& base, const AutotunePlan& plan,
                                    const std::vector<int32_t>& tokens,
                                    const PerplexityOptions& opts, Progress& progress) {
    AutotuneVerification v;
    std::vector<std::unique_ptr<compress::CompressedModel>> overlays;
    std::vector<AutotuneMeasure*> measures;
    // False when the job was cancelled while compressing.
    auto add = [&](const compress::Recipe& recipe, const std::string& name, uint64_t plannedBits,
                   double est, AutotuneMeasure& m) {
        QuietProgress quiet(progress);
        compress::CompressResult r = compress::compress(base, recipe, quiet);
        if (r.status == Status::Cancelled || !r.model) return false;
        const compress::SizeInfo si = r.model->compressedSize();
        if (si.bits != plannedBits)
            throw Error("autotune: the recipe '" + name + "' compresses to " +
                        std::to_string(si.bits) + " bits, the scan predicted " +
                        std::to_string(plannedBits) +
                        " (was the scan made on another model or version?)");
        m.name = name;
        m.bits = si.bits;
        m.bitsPerWeight = si.bitsPerWeight();
        m.estimatedKld = est;
        overlays.push_back(std::move(r.model));
        measures.push_back(&m);
        return true;
    };
    const bool compressed =
        add(plan.recipe, plan.recipe.name, plan.bits, plan.estimatedKld, v.autotuned) &&
        (plan.uniformScheme.empty() || add(plan.uniformRecipe, "uniform " + plan.uniformScheme,
                                           plan.uniformBits, plan.uniformEstimatedKld, v.uniform));
    if (!compressed) {
        v.status = Status::Cancelled;
        return v;
    }
    std::vector<DivergenceConfig> configs;
    for (size_t i = 0; i < overlays.size(); ++i)
        configs.push_back({measures[i]->name, overlays[i].get()});
    const DivergenceResult r = compareToBaseline(base, configs, tokens, opts, progress);
    v.status = r.status;
    v.baselinePpl = r.baselinePpl;
    v.chunks = r.chunks;
    v.scoredTokens = r.scoredTokens;
    for (size_t i = 0; i < overlays.size(); ++i) {
        measures[i]->measured = r.configs[i];
        measures[i]->measuredValid = r.status == Status::Ok;
    }
    return v;
}

} // namespace lcw
