// KV-cache eviction policies (kv_policy.h; the policies in core/model/runtime_quant.h).
#include "core/runtime/kv_policy.h"

#include "core/common/error.h"
#include "core/common/parallel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace lcw::runtime {

void KvPolicyCache::init(const KvPolicySpec& policy, const KvQuantSpec* kvq, int64_t kvHeads,
                         int64_t headDim, int64_t ctx) {
    if (kvHeads < 1 || headDim < 1 || ctx < 1)
        throw ArgumentError("KV policy: " + std::to_string(kvHeads) + " KV heads of " +
                            std::to_string(headDim) + " over a context of " + std::to_string(ctx));
    m_spec = policy;
    m_kvHeads = kvHeads, m_hd = headDim, m_ctx = ctx;
    switch (policy.kind) {
    case KvPolicyKind::H2O:
        m_budget = std::max<int64_t>(1, KvPolicySpec::tokens(policy.budget, ctx));
        // recent: a fraction of the budget, or tokens
        m_recent =
            policy.recent >= 1 ? int64_t(policy.recent) : int64_t(policy.recent * double(m_budget));
        m_recent = std::clamp<int64_t>(m_recent, 0, m_budget);
        break;
    case KvPolicyKind::Sinks:
        m_window = std::max<int64_t>(1, KvPolicySpec::tokens(policy.window, ctx));
        break;
    case KvPolicyKind::Mass:
        m_recent = KvPolicySpec::tokens(policy.recent, ctx);
        break;
    case KvPolicyKind::None:
        break;
    }
    const int64_t width = kvHeads * headDim;
    const bool quant = kvq && kvq->active();
    if (quant && kvq->pastOnly)
        throw UnsupportedError("KV policy: past-only KV quantisation (WKVQuant) cannot be "
                               "combined with an eviction policy");
    m_heads.assign(size_t(kvHeads), Head{});
    for (int64_t h = 0; h < kvHeads; ++h) {
        Head& H = m_heads[size_t(h)];
        H.k.initSlice(quant ? kvq->kBits : 16, quant ? kvq->kGranularity : KvGranularity::Token,
                      quant ? kvq->groupSize : 1, width, h * headDim, headDim);
        H.v.initSlice(quant ? kvq->vBits : 16, quant ? kvq->vGranularity : KvGranularity::Token,
                      quant ? kvq->groupSize : 1, width, h * headDim, headDim);
        if (quant) {
            H.k.setSmoothing(kvq->kShift, kvq->kScale);
            H.v.setSmoothing(kvq->vShift, kvq->vScale);
        }
    }
    reset();
}

void KvPolicyCache::reset() {
    for (Head& H : m_heads) {
        H.k.truncate(0);
        H.v.truncate(0);
        H.pos.clear();
        H.score.clear();
    }
    m_next = 0;
    m_complete = true;
}

uint64_t KvPolicyCache::bytes() const {
    uint64_t b = 0;
    for (const Head& H : m_heads) b += H.k.bytes() + H.v.bytes();
    return b;
}

void KvPolicyCache::attend(const float* q, int64_t ldq, const float* k, const float* v,
                           int64_t ldkv, float* out, int64_t ldo, int64_t n, int64_t pos0,
                           int64_t heads, const kernels::AttentionOptions& ao, int threads) {
    if (heads < m_kvHeads || heads % m_kvHeads != 0)
        throw ArgumentError("KV policy: " + std::to_string(heads) + " query heads over " +
                            std::to_string(m_kvHeads) + " KV heads");
    if (pos0 == 0) reset();
    if (pos0 != m_next)
        throw UnsupportedError("a KV cache with an eviction policy continues only from position " +
                               std::to_string(m_next) + " (or restarts at 0), not from " +
                               std::to_string(pos0));
    int64_t fast0 = -1; // first query of this call whose output attentionEx gives (complete cache)
    std::vector<std::vector<int64_t>> keep(static_cast<size_t>(m_kvHeads));
    std::vector<char> evicts(static_cast<size_t>(m_kvHeads));
    for (int64_t t = 0; t < n; ++t) {
        const int64_t p = pos0 + t;
        for (Head& H : m_heads) {
            H.k.append(k + t * ldkv, ldkv, 1);
            H.v.append(v + t * ldkv, ldkv, 1);
            H.pos.push_back(p);
            H.score.push_back(0.0);
        }
        if (m_complete && fast0 < 0) fast0 = t;
        step(q + t * ldq, p, heads, ao, out + t * ldo, !m_complete, threads);
        bool any = false;
        for (int64_t h = 0; h < m_kvHeads; ++h) {
            Head& H = m_heads[size_t(h)];
            for (size_t r = 0; r < H.score.size(); ++r) H.score[r] += H.prob[r];
            evicts[size_t(h)] = evictions(H, p, keep[size_t(h)]);
            any = any || evicts[size_t(h)];
        }
        m_next = p + 1;
        if (!any) continue;
        if (m_complete) {
            flush(q, ldq, out, ldo, fast0, t + 1, pos0, heads, ao, threads);
            fast0 = -1;
            m_complete = false;
        }
        for (int64_t h = 0; h < m_kvHeads; ++h) {
            if (!evicts[size_t(h)]) continue;
            Head& H = m_heads[size_t(h)];
            const std::vector<int64_t>& kp = keep[size_t(h)];
            H.k.compact(kp);
            H.v.compact(kp);
            for (size_t i = 0; i < kp.size(); ++i) {
                H.pos[i] = H.pos[size_t(kp[i])];
                H.score[i] = H.score[size_t(kp[i])];
            }
            H.pos.resize(kp.size());
            H.score.resize(kp.size());
        }
    }
    if (fast0 >= 0) flush(q, ldq, out, ldo, fast0, n, pos0, heads, ao, threads);
}

void KvPolicyCache::step(const float* qRow, int64_t p, int64_t heads,
                         const kernels::AttentionOptions& ao, float* out, bool withOutput,
                         int threads) {
    const int64_t rows = int64_t(m_heads[0].pos.size());
    const bool par = threads != 1 && m_kvHeads > 1 && rows * heads * m_hd >= 32768;
    ParallelErrors errors;
#pragma omp parallel for schedule(static) if (par)                                                 \
    num_threads(threads > 0 ? threads : omp_get_max_threads())
    for (int64_t g = 0; g < m_kvHeads; ++g)
        errors.run([&] { headStep(g, qRow, p, heads, ao, out, withOutput); });
    errors.rethrow();
}

void KvPolicyCache::headStep(int64_t g, const float* qRow, int64_t p, int64_t heads,
                             const kernels::AttentionOptions& ao, float* out, bool withOutput) {
    const int64_t G = heads / m_kvHeads, hd = m_hd;
    const double scale = ao.scale > 0 ? ao.scale : 1.0 / std::sqrt(double(hd));
    Head& H = m_heads[size_t(g)];
    const int64_t S = int64_t(H.pos.size());
    const float* kr = H.k.read(S, H.kDeq, 1);
    const float* vr = H.v.read(S, H.vDeq, 1);
    H.prob.assign(size_t(S), 0.0);
    std::vector<double> x(static_cast<size_t>(S)), acc(static_cast<size_t>(hd));
    for (int64_t j = 0; j < G; ++j) {
        const int64_t hq = g * G + j;
        const float* qh = qRow + hq * hd;
        const double slope = ao.alibi ? double(ao.alibi[hq]) : 0.0;
        double mx = -INFINITY;
        for (int64_t r = 0; r < S; ++r) {
            const int64_t kp = H.pos[size_t(r)];
            if (ao.window > 0 && p - kp >= ao.window) {
                x[size_t(r)] = -INFINITY; // outside the model's own sliding window
                continue;
            }
            double s = 0;
            for (int64_t d = 0; d < hd; ++d) s += double(qh[d]) * double(kr[r * hd + d]);
            const double rel = double(kp - p);
            double xv = ao.alibiBeforeScale ? (s + slope * rel) * scale : s * scale + slope * rel;
            if (ao.softcap > 0) xv = ao.softcap * std::tanh(xv / ao.softcap);
            x[size_t(r)] = xv;
            mx = std::max(mx, xv);
        }
        double sum = 0;
        for (int64_t r = 0; r < S; ++r) {
            x[size_t(r)] = std::isinf(x[size_t(r)]) ? 0.0 : std::exp(x[size_t(r)] - mx);
            sum += x[size_t(r)];
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t r = 0; r < S; ++r) {
            const double pr = x[size_t(r)] / sum;
            H.prob[size_t(r)] += pr;
            if (withOutput && pr != 0)
                for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] += pr * double(vr[r * hd + d]);
        }
        if (withOutput)
            for (int64_t d = 0; d < hd; ++d) out[hq * hd + d] = float(acc[size_t(d)]);
    }
}

bool KvPolicyCache::evictions(const Head& H, int64_t p, std::vector<int64_t>& keep) const {
    const int64_t S = int64_t(H.pos.size());
    keep.clear();
    switch (m_spec.kind) {
    case KvPolicyKind::H2O: {
        if (S <= m_budget) return false;
        // Evict the S - budget rows of least accumulated attention among the older ones (all
        // but the `recent` newest); ties: the oldest first.
        const int64_t older = S - std::min(m_recent, S);
        std::vector<int64_t> idx(static_cast<size_t>(older));
        std::iota(idx.begin(), idx.end(), int64_t(0));
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
            return H.score[size_t(a)] < H.score[size_t(b)];
        });
        std::vector<char> drop(size_t(S), 0);
        for (int64_t i = 0; i < std::min(older, S - m_budget); ++i)
            drop[size_t(idx[size_t(i)])] = 1;
        for (int64_t r = 0; r < S; ++r)
            if (!drop[size_t(r)]) keep.push_back(r);
        return true;
    }
    case KvPolicyKind::Sinks: {
        // The next query (p + 1) sees the sinks and positions p + 2 - window .. p + 1.
        for (int64_t r = 0; r < S; ++r) {
            const int64_t kp = H.pos[size_t(r)];
            if (kp < m_spec.sinks || kp >= p + 2 - m_window) keep.push_back(r);
        }
        return int64_t(keep.size()) < S;
    }
    case KvPolicyKind::Mass: {
        if (m_spec.mass >= 1) return false;
        const int64_t older = S - std::min(m_recent, S);
        std::vector<int64_t> idx(static_cast<size_t>(older));
        std::iota(idx.begin(), idx.end(), int64_t(0));
        // Largest accumulated attention first; ties: the newest first.
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
            return H.score[size_t(a)] > H.score[size_t(b)] ||
                   (H.score[size_t(a)] == H.score[size_t(b)] && a > b);
        });
        double total = 0;
        for (int64_t i : idx) total += H.score[size_t(i)];
        std::vector<char> kept(size_t(S), 0);
        double cum = 0;
        for (int64_t i : idx) {
            if (cum >= m_spec.mass * total) break;
            cum += H.score[size_t(i)];
            kept[size_t(i)] = 1;
        }
        for (int64_t r = older; r < S; ++r) kept[size_t(r)] = 1;
        for (int64_t r = 0; r < S; ++r)
            if (kept[size_t(r)]) keep.push_back(r);
        return int64_t(keep.size()) < S;
    }
    case KvPolicyKind::None:
        break;
    }
    return false;
}

void KvPolicyCache::flush(const float* q, int64_t ldq, float* out, int64_t ldo, int64_t t0,
                          int64_t t1, int64_t pos0, int64_t heads,
                          const kernels::AttentionOptions& ao, int threads) {
    const int64_t rows = pos0 + t1, hd = m_hd, W = m_kvHeads * hd;
    m_kc.resize(size_t(rows * W));
    m_vc.resize(size_t(rows * W));
    for (int64_t h = 0; h < m_kvHeads; ++h) {
        Head& H = m_heads[size_t(h)];
        if (int64_t(H.pos.size()) != rows)
            throw Error("KV policy: head " + std::to_string(h) + " holds " +
                        std::to_string(H.pos.size()) + " rows, expected " + std::to_string(rows));
        const float* kr = H.k.read(rows, H.kDeq, threads);
        const float* vr = H.v.read(rows, H.vDeq, threads);
        for (int64_t r = 0; r < rows; ++r) {
            std::copy(kr + r * hd, kr + (r + 1) * hd, m_kc.begin() + r * W + h * hd);
            std::copy(vr + r * hd, vr + (r + 1) * hd, m_vc.begin() + r * W + h * hd);
        }
    }
    kernels::attentionEx(q + t0 * ldq, ldq, m_kc.data(), m_vc.data(), out + t0 * ldo, ldo, t1 - t0,
                         pos0 + t0, heads, m_kvHeads, hd, ao, threads);
}

} // namespace lcw::runtime
