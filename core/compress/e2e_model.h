#pragma once
/// \file
/// The whole Llama-style model in double precision for methods trained on the next-token loss
/// of calibration windows (EfficientQAT's E2E-QP, SqueezeLLM's Fisher sensitivity, SpinQuant's
/// learned rotations): embedding, the blocks of block_grad.h (each with its own simulated
/// activation / KV quantisation and online transform where set), final RMSNorm (weight fixed),
/// lm_head, mean next-token cross-entropy, and the backward through all of them.
#include "core/compress/block_grad.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw::compress {

/// The common length of the calibration windows (ArgumentError prefixed `what` unless there is a
/// window, all have one length and it is >= 2).
int64_t windowLength(const std::vector<std::vector<int32_t>>& windows, const std::string& what);

struct E2eModel {
    const ModelSpec& spec;
    MatD embed, head; ///< [vocab, dim]
    Eigen::VectorXd finalNorm;
    std::vector<BlockWeights> blocks;
    std::vector<LlamaBlock> block; ///< block models for windows of T tokens
    int64_t T;
    std::string what; ///< prefix of errors ("efficientqat e2e")

    /// Mean next-token cross-entropy (nats) of one window of T token ids (ArgumentError for ids
    /// outside the vocabulary). With `grads`, backpropagates and sets dL/dweights of every block;
    /// with `dHead`, sets dL/d(lm_head) [vocab, dim]; with `dEmbed` (sized [vocab, dim] by the
    /// caller), adds dL/d(embedding row) to the rows of the window's tokens.
    double run(const std::vector<int32_t>& ids, std::vector<BlockGrads>* grads,
               MatD* dHead = nullptr, MatD* dEmbed = nullptr) const;
};

/// The model `w` in double for windows of T tokens. UnsupportedError for models outside the
/// block model (block_grad.h) and with embedding scales, embedding norms, learned positions or
/// logit soft-capping; errors are prefixed `what`.
E2eModel loadE2eModel(const WeightSource& w, int64_t T, const std::string& what);

} // namespace lcw::compress
