#include "core/stats/activation_sparsity_stats.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

namespace lcw::stats {

void NearZeroCounter::add(const float* x, int64_t n, int64_t channels) {
    const size_t base = m_tokRel.size();
    m_tokRel.resize(base + size_t(n));
    int64_t exact = 0, rel = 0, abs = 0;
    // omp: nothrow (counts into a resized buffer and reductions)
#pragma omp parallel for reduction(+ : exact, rel, abs) schedule(static) if (n * channels >= 16384)
    for (int64_t t = 0; t < n; ++t) {
        const float* r = x + t * channels;
        float mx = 0.0f;
        for (int64_t c = 0; c < channels; ++c) mx = std::max(mx, std::fabs(r[c]));
        const double th = kRel * double(mx);
        int64_t tr = 0;
        for (int64_t c = 0; c < channels; ++c) {
            const double a = std::fabs(double(r[c]));
            exact += r[c] == 0.0f;
            tr += a <= th;
            abs += a <= kAbs;
        }
        rel += tr;
        m_tokRel[base + size_t(t)] = channels > 0 ? double(tr) / double(channels) : 0.0;
    }
    m_values += n * channels;
    m_exact += exact;
    m_rel += rel;
    m_abs += abs;
}

namespace {
/// Percentile q (0..1) with linear interpolation between order statistics (numpy's default).
double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const double pos = q * double(v.size() - 1);
    const size_t lo = size_t(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

double scalarOr(const TensorStats& t, const char* k, double dflt) {
    auto it = t.scalars.find(k);
    return it == t.scalars.end() ? dflt : it->second;
}
} // namespace

void NearZeroCounter::put(TensorStats& ts) const {
    const double n = double(std::max<int64_t>(m_values, 1));
    ts.scalars["near_zero_rel"] = double(m_rel) / n;
    ts.scalars["near_zero_abs"] = double(m_abs) / n;
    ts.scalars["exact_zero"] = double(m_exact) / n;
    ts.scalars["near_zero_rel_threshold"] = kRel;
    ts.scalars["near_zero_abs_threshold"] = kAbs;
    ts.scalars["tok_near_zero_rel_p10"] = percentile(m_tokRel, 0.10);
    ts.scalars["tok_near_zero_rel_p50"] = percentile(m_tokRel, 0.50);
    ts.scalars["tok_near_zero_rel_p90"] = percentile(m_tokRel, 0.90);
    ts.arrays["tok_near_zero_rel"] = m_tokRel;
}

bool isMlpIntermediateSite(const std::string& name) {
    auto ends = [&](const std::string& s) {
        return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    return name.rfind("layers.", 0) == 0 && name.find(".mlp.") != std::string::npos &&
           ends(".down");
}

void addOracleMacBounds(std::vector<TensorStats>& sites, bool gatedMlp) {
    std::map<std::string, const TensorStats*> byName;
    for (const TensorStats& t : sites) byName[t.name] = &t;
    auto channels = [&](const std::string& n) -> double {
        auto it = byName.find(n);
        return it == byName.end() || it->second->shape.size() != 2 ? 0.0
                                                                   : double(it->second->shape[1]);
    };
    for (TensorStats& t : sites) {
        if (t.layer < 0 || t.shape.size() != 2 || !t.scalars.count("near_zero_rel")) continue;
        const std::string L = "layers." + std::to_string(t.layer) + ".";
        if (t.name != L + "mlp.down") continue;
        const double hidden = double(t.shape[1]), dim = channels(L + "mlp_in");
        if (dim <= 0) continue;
        const double mlp = (gatedMlp ? 3.0 : 2.0) * dim * hidden;
        const double f = t.scalars["near_zero_rel"];
        t.scalars["oracle_mlp_macs_per_token"] = mlp;
        t.scalars["oracle_mlp_saved_frac"] = f;
        const double qd = channels(L + "attn.o"), kvd = channels(L + "k");
        if (channels(L + "attn_in") > 0 && qd > 0 && kvd > 0) {
            const double block = mlp + dim * (qd + 2 * kvd) + qd * dim;
            t.scalars["oracle_block_macs_per_token"] = block;
            t.scalars["oracle_block_saved_frac"] = f * mlp / block;
        }
    }
}

std::vector<MlpSparsityRow> mlpSparsityRows(const std::vector<TensorStats>& sites) {
    std::vector<MlpSparsityRow> rows;
    for (const TensorStats& t : sites) {
        if (t.layer < 0 || !t.scalars.count("near_zero_rel")) continue;
        if (t.name != "layers." + std::to_string(t.layer) + ".mlp.down") continue;
        MlpSparsityRow r;
        r.layer = t.layer;
        r.nearZeroRel = scalarOr(t, "near_zero_rel", 0);
        r.nearZeroAbs = scalarOr(t, "near_zero_abs", 0);
        r.exactZero = scalarOr(t, "exact_zero", 0);
        r.tokP10 = scalarOr(t, "tok_near_zero_rel_p10", 0);
        r.tokP50 = scalarOr(t, "tok_near_zero_rel_p50", 0);
        r.tokP90 = scalarOr(t, "tok_near_zero_rel_p90", 0);
        r.oracleMlpSaved = scalarOr(t, "oracle_mlp_saved_frac", r.nearZeroRel);
        r.oracleBlockSaved = scalarOr(t, "oracle_block_saved_frac", -1);
        rows.push_back(r);
    }
    std::sort(rows.begin(), rows.end(),
              [](const MlpSparsityRow& a, const MlpSparsityRow& b) { return a.layer < b.layer; });
    return rows;
}

} // namespace lcw::stats
