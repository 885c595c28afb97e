// lcw-cli stats: weight, activation and KV-cache statistics, stored in HDF5, and the layer
// ranking.
#include "args.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/stats/fingerprint.h"
#include "core/stats/stats_engine.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

namespace lcw::cli {

namespace {

/// The summary's MLP intermediate sparsity per layer and the oracle bound.
void printMlpSparsity(const nlohmann::ordered_json& sum) {
    if (!sum.contains("mlp_sparsity") || sum["mlp_sparsity"]["layers"].empty()) return;
    const auto& ms = sum["mlp_sparsity"];
    std::printf("\nMLP intermediate sparsity (input of mlp.down; near zero: |x| <= 1e-2 x the "
                "token's max |x| (rel), |x| <= 1e-3 (abs)):\n");
    std::printf("%5s %9s %9s %9s %21s %11s %12s\n", "layer", "rel", "abs", "exact",
                "per token p10/p50/p90", "oracle MLP", "oracle block");
    for (const auto& L : ms["layers"]) {
        char tok[48], blk[16] = "-";
        std::snprintf(tok, sizeof tok, "%.3f/%.3f/%.3f", L["tok_near_zero_rel_p10"].get<double>(),
                      L["tok_near_zero_rel_p50"].get<double>(),
                      L["tok_near_zero_rel_p90"].get<double>());
        if (L.contains("oracle_block_saved_frac"))
            std::snprintf(blk, sizeof blk, "%.3f", L["oracle_block_saved_frac"].get<double>());
        std::printf("%5d %9.4f %9.4f %9.4f %21s %11.4f %12s\n", L["layer"].get<int>(),
                    L["near_zero_rel"].get<double>(), L["near_zero_abs"].get<double>(),
                    L["exact_zero"].get<double>(), tok, L["oracle_mlp_saved_frac"].get<double>(),
                    blk);
    }
    std::printf("oracle: predictor-free upper bound of the MACs saved by skipping the near-zero "
                "(rel) neurons (fraction of the MLP's / the block's linear MACs); mean over "
                "layers %.4f / %.4f\n",
                ms["mean_oracle_mlp_saved_frac"].get<double>(),
                ms["mean_oracle_block_saved_frac"].get<double>());
}

} // namespace

int cmdStats(const std::vector<std::string>& argv) {
    using json = nlohmann::ordered_json;
    Args a(argv,
           {"--tokenizer", "--threads", "--calib", "--samples", "--seq-len", "--out", "--bits",
            "--group", "--top", "--hist-bins"},
           {"--quiet", "--json", "--sym", "--force", "--no-activations", "--no-weights"});
    applyThreads(a);

    stats::StatsOptions so;
    so.weights = !a.flag("--no-weights");
    so.activations = !a.flag("--no-activations");
    so.calibration.textFile = a.getOr("--calib", "");
    so.calibration.samples = a.getInt("--samples", 16);
    so.calibration.seqLen = a.getInt("--seq-len", 256);
    if (so.calibration.samples < 1) throw UsageError{"--samples must be >= 1"};
    if (so.calibration.seqLen < 2) throw UsageError{"--seq-len must be >= 2"};
    stats::PreviewConfig pc;
    pc.bits = int(a.getInt("--bits", 4));
    pc.group = a.getInt("--group", 128);
    pc.symmetric = a.flag("--sym");
    if (pc.bits < 2 || pc.bits > 16) throw UsageError{"--bits must be in 2..16"};
    if (pc.group < -1)
        throw UsageError{"--group must be > 0 (group size), 0 (per channel) or -1 (per tensor)"};
    so.weight.previews = {pc};
    so.weight.histBins = int(a.getInt("--hist-bins", 256));
    if (so.weight.histBins < 2) throw UsageError{"--hist-bins must be >= 2"};
    const int top = int(a.getInt("--top", 10));

    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = so.activations;
    auto model =
        Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"), lo);
    const auto out = a.get("--out");

    const auto t0 = std::chrono::steady_clock::now();
    stats::StatsReport rep;
    bool cached = false;
    if (out && !a.flag("--force") && std::filesystem::exists(*out)) {
        // Reuse the file when it holds this model's statistics with these settings.
        stats::StatsReport h;
        try {
            h = stats::StatsStore::loadHeader(*out);
        } catch (const FormatError& e) {
            throw Error(std::string(e.what()) + " (refusing to overwrite it; use --force)");
        }
        if (h.modelFingerprint == stats::modelFingerprint(*model) &&
            h.statsKey == stats::statsKey(so)) {
            rep = stats::StatsStore::load(*out);
            cached = true;
        }
    }
    if (!cached) {
        TerminalProgress progress("stats", !a.flag("--quiet"));
        const Status st = out ? stats::computeAndSaveStats(*model, so, *out, rep, progress)
                              : stats::computeStats(*model, so, rep, progress);
        progress.finish();
        if (st == Status::Cancelled) {
            std::fprintf(stderr, "cancelled (nothing written)\n");
            return 130;
        }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    json sum = stats::layerRanking(rep);
    if (a.flag("--json")) {
        sum["output"] = out ? json(*out) : json(nullptr);
        sum["cached"] = cached;
        sum["seconds"] = secs;
        std::printf("%s\n", sum.dump(2).c_str());
        return 0;
    }
    std::printf("model:       %s\n", rep.modelPath.c_str());
    std::printf("fingerprint: %s\n", rep.modelFingerprint.c_str());
    if (rep.hasActivations)
        std::printf("calibration: %s%s, %lld x %lld tokens (sha256 %.16s…)\n",
                    rep.calibration.source.c_str(), rep.calibration.builtin ? " (built-in)" : "",
                    (long long)rep.calibration.samples, (long long)rep.calibration.seqLen,
                    rep.calibration.sha256.c_str());
    std::printf("statistics:  %zu weight tensors, %zu activation/KV sites%s%s (%.1f s)\n",
                rep.weights.size(), rep.activations.size(), cached ? ", loaded from " : "",
                cached ? out->c_str() : "", secs);
    if (out && !cached) std::printf("wrote:       %s\n", out->c_str());
    if (rep.hasActivations) {
        const auto& kv = sum["kv_channel_unevenness"];
        std::printf("K/V channel abs-max unevenness (max/median): K post-RoPE %.2f, K pre-RoPE "
                    "%.2f, V %.2f (K/V %.2fx)\n",
                    kv["k_post_rope"].get<double>(), kv["k_pre_rope"].get<double>(),
                    kv["v"].get<double>(), kv["k_post_over_v"].get<double>());
    }
    printMlpSparsity(sum);
    const std::string pl = rep.previews.empty() ? "" : rep.previews.front().label();
    std::printf("\nlayers ranked by outlier-proneness (mean rank of the columns; kurtosis is "
                "m4/σ⁴, non-excess):\n");
    std::printf("%4s %5s %6s  %-26s %8s %8s %7s  %10s %10s %9s\n", "rank", "layer", "score",
                "worst weight (absmax/std)", "ratio", "kurt", "out.ch", ("err " + pl).c_str(),
                "act.ratio", "act.absmax");
    int shown = 0;
    for (const auto& L : sum["layers"]) {
        if (shown++ >= top) break;
        auto d = [&](const char* k) { return L.contains(k) ? L[k].get<double>() : 0.0; };
        std::string wt = L.contains("weight_outlier_ratio_tensor")
                             ? L["weight_outlier_ratio_tensor"].get<std::string>()
                             : "-";
        std::printf("%4d %5d %6.2f  %-26s %8.2f %8.2f %7.0f  %10.4f %10.2f %9.2f\n",
                    L["rank"].get<int>(), L["layer"].get<int>(), d("score"), wt.c_str(),
                    d("weight_outlier_ratio"), d("weight_kurtosis"), d("weight_outlier_channels"),
                    d("preview_rel_fro"), d("act_outlier_ratio"), d("act_absmax"));
    }
    if (rep.hasWeights)
        std::printf("out.ch: weight input channels whose abs-max is >= %g x the median channel's "
                    "(summed over the block's tensors)\n",
                    stats::kDefaultOutlierK);
    return 0;
}

} // namespace lcw::cli
