#pragma once
/// \file
/// Rotations (QuaRot, Ashkboos et al. 2024; docs/methods.md "Rotations"): an orthogonal
/// transform R of the residual stream folded into the weights so that the model computes the
/// same function in exact arithmetic while its activations and weights lose their outlier
/// channels (easier to quantise to 4 bits).
///
/// Column-vector convention (a linear is y = W x, W [out, in]); R = T_dim (core/runtime/
/// hadamard.h, randomised signs, seed rotationSeed(seed, kRotResidual)):
///   - RMSNorm scales are folded first into the linears that read the norm (their columns
///     × g) and become 1 (Gemma's (1 + w) norms: w becomes 0), so every norm commutes with R
///     (‖R x‖ = ‖x‖);
///   - embed rows e ← R e; q, k, v, gate, up and lm_head W ← W Rᵀ; o and down W ← R W and their
///     biases b ← R b: the residual stream carries R h instead of h;
///   - online_down: the runtime transforms the MLP intermediate u ← T u (T = T_hidden, no
///     signs) before mlp.down and its input quantisation; down W ← W Tᵀ;
///   - online_qk: the runtime transforms every q and k head after RoPE by T_head (QKᵀ is
///     unchanged, the KV cache holds rotated keys); every v head is T_head v (v rows ← T_head,
///     bias too) and o's columns of each head ← the same (o W ← W blockdiag(T_head)ᵀ), folded.
/// Tied embeddings: lm_head differs from embed after the final norm is folded, so a rotated
/// model with tied embeddings gets its own lm_head (an added tensor, counted in the size).
/// Restrictions (UnsupportedError, rotationUnsupported()): pre-norm RMSNorm blocks without norm
/// biases, without post-norms, a residual taken after the norm, mixture-of-experts, learned
/// positions, an embedding norm or projection; Mamba is not supported.
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"

#include <memory>
#include <string>
#include <vector>

namespace lcw::compress {

/// Why the rotation cannot be folded into `w` (empty when it can).
std::string rotationUnsupported(const WeightSource& w);

struct RotatedModel {
    /// The base with the rotation folded in: float32 copies of the changed tensors, views of the
    /// base's for the others (the base must outlive it); its RuntimeQuant holds the online
    /// transforms; it shares the base's tokenizer.
    std::unique_ptr<Model> model;
    std::vector<std::string>
        changed; ///< tensors that differ from the base (incl. an added lm_head)
    OnlineRotation online;
};

/// Learned rotations (SpinQuant, core/compress/spinquant.h) in place of the seeded Hadamard
/// transforms R and the per-head transform of v / o; the online transforms stay Hadamard.
struct LearnedRotation {
    std::vector<double> r1;              ///< [dim, dim] row-major, orthogonal: replaces R
    std::vector<std::vector<double>> r2; ///< per block [headDim, headDim] (with online_qk)
};

/// Folds the rotation into `base` (the learned matrices when `learned` is set). Throws
/// UnsupportedError naming the reason for models rotationUnsupported() refuses, ArgumentError
/// for learned matrices of the wrong sizes.
RotatedModel rotateModel(const Model& base, const RotationSettings& rs,
                         const LearnedRotation* learned = nullptr);
/// The same model with only the norm scales folded (norms 1) and, with online_down, the online
/// transform's inverse folded into mlp.down and the transform in the runtime quantisation; the
/// residual stream and the heads unrotated (R = I): the starting point of learned rotations.
RotatedModel normFoldedModel(const Model& base, const RotationSettings& rs);

/// compress() of a recipe with a rotation section: the recipe's rules applied to the rotated
/// model, the result moved onto `base` with every rotated tensor the rules did not replace stored
/// as a float tensor and the online transforms in the runtime quantisation. Refuses (RecipeError)
/// what does not compose with the rotation: AWQ, OmniQuant and SmoothQuant (their block models
/// and fold sites do not see the online transforms), structured pruning, an importance-matrix
/// file (measured on the unrotated model), quantising an lm_head the base ties to embed.
CompressResult compressRotated(const Model& base, const Recipe& recipe, Progress& progress,
                               const CompressOptions& opts);

} // namespace lcw::compress
