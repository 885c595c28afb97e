#pragma once
/// \file
/// Internal to core/compress: float working copies of one block's tensors while methods rewrite
/// them, and the places where per-input-channel scales can be folded into the preceding op
/// (AWQ, SmoothQuant). A linear y = x Wᵀ whose input x comes from `prev` can take
/// x' = x / s, W' = W diag(s) without changing y, when `prev`'s output can be divided by s:
///   attn_in   prev = attn_norm weight (and bias)     linears q, k, v
///   attn_o    prev = v rows (and bias), per kv head  linear o (GQA: heads of a group share s)
///   mlp_in    prev = mlp_norm weight (and bias)      linears gate, up
///   mlp_down  prev = up rows (and bias)              linear down (gated MLPs only)
#include "core/model/model.h"

#include <map>
#include <set>
#include <string>
#include <vector>

namespace lcw::compress {

/// A tensor's values as float32: a copy of F32 data, other dtypes dequantised row by row.
std::vector<float> tensorFloats(const TensorView& t);

class BlockTensors {
public:
    explicit BlockTensors(const WeightSource& src) : m_src(src) {}
    bool has(const std::string& name) const;
    /// Float values (loaded from the source on first use). Throws when absent.
    std::vector<float>& get(const std::string& name);
    /// Marks a tensor as rewritten (it must be stored in the overlay).
    void touch(const std::string& name) { m_modified.insert(name); }
    const std::set<std::string>& modified() const { return m_modified; }
    int64_t rows(const std::string& name) const;
    int64_t cols(const std::string& name) const;

private:
    const WeightSource& m_src;
    std::map<std::string, std::vector<float>> m_values;
    std::set<std::string> m_modified;
};

struct FoldSite {
    std::string kind; ///< attn_in, attn_o, mlp_in, mlp_down
    std::string prev; ///< norm or linear whose output is divided by s
    bool prevIsNorm = true;
    std::vector<std::string> linears; ///< consumers whose columns are multiplied by s
    int64_t channels = 0;             ///< length of s
    /// attn_o: o's input channel c maps to v row kvChannel[c] (size channels); else empty.
    std::vector<int64_t> kvChannel;
};

/// The fold site whose consumers include `linear` in block `layer`; false with `why` set when
/// the structure does not allow folding there.
bool findFoldSite(const WeightSource& w, int layer, const std::string& linear, FoldSite& site,
                  std::string& why);

/// Divides prev's output by s and multiplies the consumers' columns by s (marks them touched).
/// For attn_o, s must be equal over the heads sharing a kv channel.
void applyFold(BlockTensors& bt, const FoldSite& site, const std::vector<float>& s);

} // namespace lcw::compress
