#pragma once
/// \file
/// Learned rotations (SpinQuant, Liu et al. 2024, "SpinQuant: LLM quantization with learned
/// rotations"; docs/methods.md "Learned rotations"). The rotation of core/compress/rotation.h
/// keeps the model's function for every orthogonal R (residual stream) and every orthogonal
/// per-head R2 (v heads, o columns), but not its quantisation error; SpinQuant learns R (R1 in
/// the paper) and one R2 per block on the Stiefel manifold by Cayley SGD, minimising the
/// next-token cross-entropy of the *quantised* network on calibration windows, and keeps the
/// online Hadamard transforms (q/k heads: R3, MLP intermediate: R4) fixed.
///
/// The loss: the whole model in double (core/compress/e2e_model.h) with the norms folded, R and
/// R2 folded into the weights as rotateModel() folds them, the runtime's simulated activation
/// quantisation at every linear input (dynamic per token), the online transforms and the KV
/// cache's per-token quantisation (keys quantised in the rotated head basis, as the runtime
/// stores them). Block linears quantised by RTN are fake-quantised with their settings, the
/// gradient passing straight through the rounding (STE); linears quantised later by GPTQ stay
/// float, as the reference learns W16A4KV4 rotations before GPTQ.
///
/// Cayley SGD (Li, Fuxin and Todorovic 2020, as SpinQuant's optimiser, momentum 0): with the
/// Euclidean gradient G of X (column-vector convention: the stream carries X h),
///   W = −½ (G Xᵀ − X Gᵀ)  (skew-symmetric),  α = min(lr_t, 1 / ‖W‖₁),
///   X ← (I − α/2 W)⁻¹ (I + α/2 W) X,
/// solved exactly (the reference approximates the inverse by 5 fixed-point iterations); lr_t
/// decays from lr to 0 on a cosine over the steps (the reference's schedule, lr 1.5, 100 steps).
#include "core/common/progress.h"
#include "core/compress/block_grad.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/compress/rotation.h"

#include <nlohmann/json.hpp>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lcw::compress {

/// What the training loss simulates, per block.
struct SpinQuantSimulation {
    /// Block linears fake-quantised by RTN with these settings; the others stay float.
    std::map<std::string, WeightSettings> weights;
    std::vector<std::array<int, 4>> actBits;    ///< LlamaBlock sites, 0: float
    std::vector<std::array<double, 4>> actClip; ///< per site, (0, 1]
    struct Kv {
        int kBits = 16, vBits = 16;
        int64_t groupSize = 128;
        bool pastOnly = false;
    };
    std::vector<Kv> kv;
};

/// The simulation for the plan of a rotated recipe's rules (planned on the rotated model).
/// RecipeError (field rotation.method) for what the loss cannot simulate: activation sections
/// that are not dynamic per token, with groups or with outlier channels, q/k/v (or gate/up) with
/// different activation settings, KV caches quantised per channel.
SpinQuantSimulation spinQuantSimulation(const Plan& plan, const ModelSpec& spec);

/// The Hadamard start: R of rotateModel() and, with online_qk, its per-head transform.
LearnedRotation hadamardRotation(const ModelSpec& spec, const RotationSettings& rs);

/// One Cayley SGD step (above) on the n×n orthogonal row-major x with the Euclidean gradient g
/// and learning rate lr; returns the step size α used.
double cayleyStep(std::vector<double>& x, const std::vector<double>& g, int64_t n, double lr);

/// The training objective: mean next-token cross-entropy of windows of T tokens under `sim`
/// for given matrices. Throws as loadE2eModel / rotateModel.
class SpinQuantObjective {
public:
    SpinQuantObjective(const Model& base, const RotationSettings& rs,
                       const SpinQuantSimulation& sim, int64_t T);
    ~SpinQuantObjective();
    SpinQuantObjective(const SpinQuantObjective&) = delete;
    SpinQuantObjective& operator=(const SpinQuantObjective&) = delete;

    /// The mean loss over `windows` (token ids, T each) with the rotation `r` (r1 and, with
    /// online_qk, r2 of every block; matrices need not be orthogonal); with `grad`, the
    /// Euclidean gradient of that mean w.r.t. r1 and r2 in the same layout. Windows run in
    /// parallel.
    double operator()(const LearnedRotation& r, const std::vector<std::vector<int32_t>>& windows,
                      LearnedRotation* grad = nullptr) const;

private:
    struct Impl;
    std::unique_ptr<Impl> m;
};

struct SpinQuantResult {
    Status status = Status::Ok;
    LearnedRotation rotation; ///< the learned matrices, or the Hadamard start when not kept
    /// Mean loss over all calibration windows (nats) with the Hadamard start and with the
    /// learned matrices; kept: the learned ones are lower and replace the start.
    double lossStart = 0, lossEnd = 0;
    bool kept = false;
    std::vector<double> stepLoss; ///< the batch loss before each step
    int steps = 0, batch = 0;
    double lr = 0, seconds = 0;
    int64_t windows = 0, tokens = 0;
    nlohmann::ordered_json json() const;
};

/// Learns R and R2 from the Hadamard start with rs.steps Cayley SGD steps of rs.batch windows
/// each (cycling through `windows`), lr rs.lr on a cosine. Progress per step; cancellation
/// returns Cancelled.
SpinQuantResult learnRotation(const Model& base, const RotationSettings& rs,
                              const SpinQuantSimulation& sim,
                              const std::vector<std::vector<int32_t>>& windows, Progress& progress);

} // namespace lcw::compress
