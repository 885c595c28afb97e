#pragma once
/// \file
/// How the GUI groups a model's tensors: per-tensor layer index and role, and per-block totals
/// (embed, layers 0..N-1, lm_head) for the parameter bar plot.
#include "core/model/model.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lcw {

/// Layer index of a canonical name ("layers.3.attn.q" -> 3), -1 for non-layer tensors.
int tensorLayer(std::string_view canonical);

/// Role of a canonical name with the layer prefix removed: "attn.q", "mlp.down", "attn.q.bias",
/// "embed", "lm_head"; every normalisation weight (attn_norm, mlp_norm, final_norm, q_norm,
/// k_norm) is "norm"; tensors kept under "extra." are "extra".
std::string tensorRole(std::string_view canonical);

/// Parameters and stored bytes of one block of the model.
struct BlockSize {
    std::string label; ///< "embed", "L0".., "lm_head" (or "lm_head (tied)")
    int layer = -1;    ///< layer index, -1 for embed / lm_head
    int64_t parameters = 0;
    uint64_t bytes = 0;
};

/// embed, one entry per layer, then lm_head. lm_head includes the final norm and any extra
/// tensors; a tied lm_head contributes no parameters of its own (they are counted in embed).
std::vector<BlockSize> blockSizes(const Model& model);

} // namespace lcw
