// lcw-cli: the headless face of lcw. Links only the core. Exit codes: 0 ok, 1 error (bad input,
// failed job), 2 usage, 130 cancelled by Ctrl-C.
#include "args.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/runtime/device.h"
#include "core/version.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

const char* kUsage = R"(lcw-cli — LLM Compression Workbench, command line

usage: lcw-cli COMMAND [options]

commands:
  info MODEL [--json]                      architecture, dims, parameters, dtypes, tensors
  generate MODEL --prompt TEXT [-n 64] [--temp T] [--top-k K] [--top-p P] [--seed S] [--json]
                                           generate text; prints prefill/decode tokens/s
  tokenize MODEL --text TEXT [--no-bos] [--json]
                                           token ids and pieces
  logits MODEL (--ids 1,2,3 | --text TEXT) --out FILE.npy
                                           float32 logits [tokens, vocab] to a .npy file
  perplexity MODEL --text FILE [--ctx N] [--mode llamacpp|sliding] [--stride S] [--json]
                                           llama.cpp-compatible perplexity (default) ± s.e.
  eval MODEL [--recipe R.json|--preset P|--overlay DIR|--compare-model OTHER ...] [--text FILE] [--ctx N]
       [--chunks N] [--mode llamacpp|sliding] [--stride S]
       [--tasks lambada,arc_easy,piqa,winogrande,hellaswag,passkey,lambada_long|all]
       [--limit N] [--seed S] [--tasks-dir DIR] [--task-ctx N] [--speed-tokens 32] [--results FILE]
       [--calib FILE [--samples N] [--seq-len L]] [--no-record] [--json]
                                           baseline and configurations side by side: PPL, KLD, same-top, Δp,
                                           task accuracy ± s.e., bits/weight, size, KV bytes/token, tokens/s,
                                           peak RSS; recorded in the results store (passkey: generated
                                           from --text, prompts of ~85 % of the task context;
                                           lambada_long: LAMBADA passages after --text filler, ~85 %)
  results list [--results FILE] [--json]   the recorded evaluations
  results show ID [--results FILE] [--json]
                                           re-print a recorded evaluation's table
  compare MODEL (--recipe R.json|--preset P|--overlay DIR|--compare-model FILE ...) --prompt TEXT
          [--max-tokens 64] [--temperature T --seed S] [--top-k K] [--top-p P] [--width W]
          [--calib FILE [--samples N] [--seq-len L]] [--json]
                                           generations side by side: divergence point, log-probs,
                                           per-token KLD along the baseline's text
  hidden-error MODEL (--recipe|--preset|--overlay|--compare-model ...) [--text FILE] [--ctx 256]
          [--chunks 8] [--calib FILE] [--json]
                                           per-block hidden-state relative error and cosine
  sensitivity MODEL --scheme PRESET[,PRESET...] [--granularity layer|block] [--text FILE]
          [--ctx 256] [--chunks 8] [--top N] [--out SCAN.json] [--json]
                                           quantise one layer (block) at a time, rank by KLD
  autotune MODEL (--budget-bpw B | --model-budget-bpw B) --out R.json
          [--schemes W8A16,W4A16-g64,W3A16-g64,W2A16-g32]
          [--scan SCAN.json] [--uniform P] [--no-verify] [--text FILE] [--ctx N] [--chunks N] [--json]
                                           mixed precision within a bits/weight budget (knapsack),
                                           verified against the uniform recipe of that size;
                                           --budget-bpw: bits/weight of the quantised linears,
                                           --model-budget-bpw: whole-model bits per base weight
                                           (the workbench's budget); both figures are reported
  study MODEL --out DIR [--calib FILE | --no-calib] [--samples 16] [--seq-len 256] [--text FILE]
        [--ctx 256] [--chunks N] [--tasks LIST [--limit 200]] [--groups w,wa,kv]
        [--methods rtn,awq,gptq,smoothquant,omniquant,quarot,quarot-gptq,atom,kivi,wkvquant]
        [--group-size 128]
        [--omniquant-epochs 20] [--json]
                                           the Qllm-Eval grid on this model (W8/W4/W3/W2,
                                           W8A8/W4A8/W4A4, KV8/KV4/KV3/KV2, RTN and each type's
                                           methods): report.html with plots, study.tsv,
                                           study.json, and which tensor type is most sensitive
  stats MODEL [--calib FILE] [--samples N] [--seq-len L] [--out stats.h5] [--bits B] [--group G] [--json]
                                           weight/activation/KV outlier statistics (HDF5) + layer ranking
  compress MODEL (--recipe R.json | --preset NAME) [--calib FILE] [--samples N] [--seq-len L]
           [--calib-sampling random|consecutive] [--calib-seed N]
           [--save OVERLAY] [--json]       compress by a recipe (RTN, GGUF, GPTQ, AWQ,
                                           SmoothQuant, OmniQuant, activation/KV quantisation,
                                           pruning, N:M, low-rank, structured pruning; --calib
                                           for the calibrated methods: --samples windows of
                                           --seq-len tokens at random starts, seed 0, as the
                                           GPTQ/SparseGPT scripts; consecutive: from the start):
                                           per-layer bits, MSE, SQNR, output error, time, totals
  imatrix MODEL --out FILE [--calib FILE] [--samples N] [--seq-len 512] [--process-output] [--json]
                                           llama.cpp importance matrix (llama-imatrix's chunks,
                                           counts and legacy .dat format) for llama-quantize
                                           --imatrix and lcw's GGUF export; --samples 0 = all
  imatrix --show FILE [MODEL] [--json]     list an imatrix's entries (ncall, nval, mean, max);
                                           with MODEL also check that it fits the model
  export MODEL [--recipe R.json|--preset P|--overlay DIR] [--imatrix FILE] [--calib FILE]
         --format gguf --out FILE.gguf [--type f32|f16|bf16|q8_0|q4_k|...] [--no-kl] [--json]
                                           a GGUF v3 file for llama.cpp (all its families
                                           lcw reads): --preset Q4_K_M (any llama.cpp preset)
                                           = llama-quantize's file; Q4_K_M-GPTQ / -AWQ: same
                                           types, codes from calibration; recipes keep their
                                           GGUF types (exact); per-tensor report and the KL
                                           divergence of the written file
  export MODEL (--preset P|--recipe R.json) --format llamacpp-command --out quantize.sh
         [--imatrix FILE|--calib FILE] [--pin-all] [--json]
                                           the llama-quantize command, per-tensor type list
                                           and imatrix that make the mix from the original
  export MODEL (--preset P|--recipe R.json|--overlay DIR) --format llmcompressor
         --out recipe.yaml [--json]
                                           the llm-compressor recipe (stages of GPTQ / AWQ /
                                           SmoothQuant / Quantization / SparseGPT / Wanda
                                           modifiers, re: targets over the transformers module
                                           names) that reproduces the recipe on the full model;
                                           what it cannot express is listed, never dropped
  export MODEL (--recipe R.json|--preset P|--overlay DIR) [--calib FILE]
         --format compressed-tensors|gptq|gptq_v2|awq --out DIR [--json]
                                           a Hugging Face folder for vLLM / transformers
                                           (llm-compressor's format, AutoGPTQ / GPTQModel,
                                           AutoAWQ) from an HF model folder (or a llama-family
                                           GGUF / llama2.c file);
                                           modules the format cannot hold (NF4, GGUF types,
                                           outliers, Conv1D) are written as exact floats and
                                           listed as ignored, with the reason
  recipe presets [--json]                  list the built-in recipes
  recipe check R.json [MODEL] [--json]     validate a recipe; with MODEL also the matched layers
  recipe import recipe.yaml [--out R.json] [--arch A] [--json]
                                           an llm-compressor recipe YAML as an lcw recipe (the
                                           common subset; unsupported keys are errors or
                                           warnings naming the key)
  synth --shape SHAPE [--arch llama|qwen2] --dtype f32|f16|bf16 --out DIR [--seed S]
        [--shard-mb 1024] [--json]         write a random-initialised model with real shapes:
                                           tinyllama-1.1b (2.2 GB in f16), llama3-8b (16 GB),
                                           qwen2.5-7b (15 GB, q/k/v biases), llama-tiny,
                                           qwen2-tiny; checks the free disk space first
  devices [--json]                         the compute devices: the CPU, then every Vulkan
                                           device (id, type, name, memory, driver, API), and why
                                           there is none when Vulkan cannot be used
  version                                  print the version

MODEL is a Hugging Face folder (config.json + safetensors + tokenizer.json), a .gguf file, or a
llama2.c .bin checkpoint (tokenizer.bin / tok<vocab>.bin beside it, or --tokenizer FILE).
Common options: --tokenizer FILE, --threads N, --quiet (no progress on stderr).
Global options (any position):
  --device cpu|vulkan|vulkan:N (every command that runs the model; Vulkan: weight products and
                               attention on the GPU, the rest on the CPU; 'lcw-cli devices' lists
                               the N; a Vulkan device that cannot be used warns and runs on the
                               CPU; LCW_NO_VULKAN=1 in the environment: never touch Vulkan)
  --gpu-layers N               with a Vulkan device: blocks 0..N-1 on the GPU, the rest on the
                               CPU (default -1: all)
--exact-activations (generate, logits, perplexity, eval, compare, hidden-error, sensitivity,
autotune, export's KL check): float32 activations in every product, the error of the weights
alone; by default GGUF and lcw packed weights multiply activations quantised to 8-bit blocks as
llama.cpp does, and BF16 weights on a CPU with AVX-512 BF16 activations rounded to bf16 (reports
say which: "activations": "exact-f32" | "quantized-8bit"). A recipe's own
activation quantisation applies either way.
--kv-cache f32|f16 (generate, perplexity): the element type of the KV cache (default f32, exact;
f16 is llama.cpp's default cache: half the memory and half the cache bytes a decode step reads,
each value rounded to F16; CPU only, a Vulkan device keeps f32; reports say "kv_cache").
generate, logits and perplexity also take --recipe R.json, --preset NAME or --overlay DIR to
run on quantised weights (with --calib FILE [--samples N] [--seq-len L] [--calib-sampling
random|consecutive] [--calib-seed N] for calibrated recipes; eval, compare and export take them
too; the imatrix always takes llama-imatrix's consecutive chunks).
)";

/// Takes the global options --device SPEC and --gpu-layers N out of `args` (any position) and
/// makes them the process defaults of every Session. A Vulkan device that cannot be used is
/// announced once here; the sessions then run on the CPU.
void takeDeviceOptions(std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size();) {
        // "--device X" or "--device=X" (as Args accepts for the other options).
        std::string a = args[i], v;
        size_t taken = 2;
        if (const auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
            v = a.substr(eq + 1);
            a.resize(eq);
            taken = 1;
        }
        if (a != "--device" && a != "--gpu-layers") {
            ++i;
            continue;
        }
        if (taken == 2) {
            if (i + 1 >= args.size()) throw lcw::cli::UsageError{a + " needs a value"};
            v = args[i + 1];
        }
        if (a == "--device") {
            try {
                lcw::runtime::setDefaultDevice(v);
            } catch (const lcw::ArgumentError& e) { // a malformed spec: a usage mistake
                throw lcw::cli::UsageError{std::string("--device: ") + e.what()};
            }
            std::string note;
            const auto d = lcw::runtime::resolveDevice(lcw::runtime::defaultDevice(), &note);
            if (!note.empty()) {
                std::fprintf(stderr, "lcw-cli: warning: --device %s: %s\n", v.c_str(),
                             note.c_str());
                lcw::runtime::setDefaultDevice("cpu");
            } else if (d.id != "cpu") {
                lcw::runtime::setDefaultDevice(d.id);
            }
        } else {
            char* end = nullptr;
            const long n = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end || n < -1 || n > 100000)
                throw lcw::cli::UsageError{
                    "--gpu-layers needs a number of layers (-1: all), got '" + v + "'"};
            lcw::runtime::setDefaultGpuLayers(int(n));
        }
        args.erase(args.begin() + long(i), args.begin() + long(i + taken));
    }
}

} // namespace

int main(int argc, char** argv) {
    using namespace lcw::cli;
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
        std::fputs(kUsage, args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    const std::string cmd = args[0];
    args.erase(args.begin());
    installInterruptHandler();
    try {
        takeDeviceOptions(args);
        if (cmd == "version" || cmd == "--version") {
            std::printf("lcw-cli %s\n", lcw::version());
            return 0;
        }
        if (cmd == "devices") return cmdDevices(args);
        if (cmd == "info") return cmdInfo(args);
        if (cmd == "generate") return cmdGenerate(args);
        if (cmd == "tokenize") return cmdTokenize(args);
        if (cmd == "logits") return cmdLogits(args);
        if (cmd == "perplexity") return cmdPerplexity(args);
        if (cmd == "synth") return cmdSynth(args);
        if (cmd == "stats") return cmdStats(args);
        if (cmd == "eval") return cmdEval(args);
        if (cmd == "results") return cmdResults(args);
        if (cmd == "compress") return cmdCompress(args);
        if (cmd == "recipe") return cmdRecipe(args);
        if (cmd == "compare") return cmdCompare(args);
        if (cmd == "hidden-error") return cmdHiddenError(args);
        if (cmd == "sensitivity") return cmdSensitivity(args);
        if (cmd == "autotune") return cmdAutotune(args);
        if (cmd == "study") return cmdStudy(args);
        if (cmd == "imatrix") return cmdImatrix(args);
        if (cmd == "export") return cmdExport(args);
        if (cmd == "h5-convert") return cmdH5Convert(args); // hidden: h5_guard.h
        std::fprintf(stderr, "lcw-cli: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
        return 2;
    } catch (const UsageError& e) {
        std::fprintf(stderr, "lcw-cli %s: %s\n(run 'lcw-cli --help' for usage)\n", cmd.c_str(),
                     e.message.c_str());
        return 2;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "error: out of memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
