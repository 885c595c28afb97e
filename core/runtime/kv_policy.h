#pragma once
/// \file
/// KV-cache eviction policies at run time (internal to core/runtime, exposed for tests): H2O,
/// attention sinks + sliding window (StreamingLLM) and pruning by attention mass; the policies
/// are described in core/model/runtime_quant.h (KvPolicySpec).
///
/// A layer with a policy keeps its cache per KV head: each head has its own K and V stream
/// (f32, or quantised as the layer's KvQuantSpec says, token granularity, with the groups of the
/// whole row so that values dequantise exactly as in the layer's ordinary quantised cache), the
/// original position of every row and its accumulated attention (summed over the query heads of
/// the GQA group and over the queries so far, in double). Tokens are processed one at a time in
/// position order: append the token's K/V row, attend its query, accumulate, evict; so a batch
/// gives the same result as decoding token by token. While no head has evicted anything, the
/// output comes from kernels::attentionEx over the whole cache, bit-identical to a layer without
/// a policy; afterwards an exact attention over each head's rows (original positions for the
/// causal mask, sliding windows and ALiBi) gives the output and the attention mass together.
#include "core/model/runtime_quant.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/quant_runtime.h"

#include <cstdint>
#include <vector>

namespace lcw::runtime {

class KvPolicyCache {
public:
    /// kvq: the layer's KV quantisation (null or inactive: f32; channel granularity throws
    /// UnsupportedError); ctx: the session's context length (for fractions).
    void init(const KvPolicySpec& policy, const KvQuantSpec* kvq, int64_t kvHeads, int64_t headDim,
              int64_t ctx);
    /// Empties the cache (a new sequence).
    void reset();
    /// Tokens seen since the last reset (the position the next call continues from).
    int64_t position() const { return m_next; }
    /// Attention of n new tokens at positions pos0.. (pos0 == 0 resets; otherwise pos0 must be
    /// position(): an evicting cache cannot go back). q [n, heads*headDim] (ldq); k, v the new
    /// rows [n, kvHeads*headDim] (ldkv, keys after RoPE); out [n, heads*headDim] (ldo).
    void attend(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                float* out, int64_t ldo, int64_t n, int64_t pos0, int64_t heads,
                const kernels::AttentionOptions& ao, int threads);
    /// Bytes the cache holds now (all heads' K and V streams).
    uint64_t bytes() const;
    /// Head h's cached positions (ascending) and their accumulated attention.
    const std::vector<int64_t>& positions(int64_t h) const { return m_heads[size_t(h)].pos; }
    const std::vector<double>& scores(int64_t h) const { return m_heads[size_t(h)].score; }
    /// Whether no head has evicted a row since the last reset.
    bool complete() const { return m_complete; }

private:
    struct Head {
        KvStream k, v;
        std::vector<int64_t> pos;
        std::vector<double> score;
        kernels::FloatBuffer kDeq, vDeq; // dequantised rows (quantised streams)
        std::vector<double> prob;        // one query's attention over the rows
    };
    KvPolicySpec m_spec;
    int64_t m_kvHeads = 0, m_hd = 0, m_ctx = 0, m_next = 0;
    int64_t m_budget = 0, m_recent = 0, m_window = 0; // resolved token counts
    bool m_complete = true;
    std::vector<Head> m_heads;
    kernels::FloatBuffer m_kc, m_vc; // whole-cache rows for attentionEx

    /// Query token t (position p): attention mass into each head's prob (and the output into
    /// out when withOutput).
    void step(const float* qRow, int64_t p, int64_t heads, const kernels::AttentionOptions& ao,
              float* out, bool withOutput, int threads);
    /// One KV head of step().
    void headStep(int64_t g, const float* qRow, int64_t p, int64_t heads,
                  const kernels::AttentionOptions& ao, float* out, bool withOutput);
    /// Whether head H evicts after the step at position p; `keep` then lists the rows it keeps
    /// (ascending).
    bool evictions(const Head& H, int64_t p, std::vector<int64_t>& keep) const;
    /// attentionEx for queries [t0, t1) of the current call over the complete cache.
    void flush(const float* q, int64_t ldq, float* out, int64_t ldo, int64_t t0, int64_t t1,
               int64_t pos0, int64_t heads, const kernels::AttentionOptions& ao, int threads);
};

} // namespace lcw::runtime
