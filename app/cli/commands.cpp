#include "commands.h"

#include "args.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/common/npy.h"
#include "core/eval/perplexity.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace lcw::cli {

namespace {

using json = nlohmann::ordered_json;
const std::set<std::string> kCommonValued = {"--tokenizer", "--threads"};
const std::set<std::string> kCommonFlags = {"--quiet", "--json"};

std::set<std::string> with(std::set<std::string> base, std::initializer_list<std::string> more) {
    base.insert(more.begin(), more.end());
    return base;
}

std::string shapeString(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

const char* ropeTypeName(RopeType t) {
    switch (t) {
    case RopeType::Default:
        return "default";
    case RopeType::Linear:
        return "linear";
    case RopeType::Dynamic:
        return "dynamic";
    case RopeType::Llama3:
        return "llama3";
    case RopeType::Yarn:
        return "yarn";
    }
    return "?";
}

std::string humanCount(double n) {
    char buf[32];
    if (n >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
    else if (n >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
    else if (n >= 1e3)
        std::snprintf(buf, sizeof buf, "%.1f K", n / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%.0f", n);
    return buf;
}

std::string humanBytes(double b) {
    char buf[32];
    if (b >= 1024.0 * 1024 * 1024)
        std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024)
        std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0)
        std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
    else
        std::snprintf(buf, sizeof buf, "%.0f B", b);
    return buf;
}

void printJson(const json& j) {
    // Generated text of a random or partly trained model need not be valid UTF-8: invalid bytes
    // become U+FFFD instead of failing the whole output.
    std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
}

} // namespace

std::unique_ptr<Model> openModel(const Args& a, bool needTokenizer) {
    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    lo.requireTokenizer = needTokenizer;
    return Model::load(a.positional(0, "MODEL (a Hugging Face folder, .gguf or llama2.c .bin)"),
                       lo);
}

// ---------------------------------------------------------------------------------------- info
namespace {

using DtypeCounts = std::map<std::string, int64_t>;

/// Elements per storage dtype.
DtypeCounts countDtypes(const Model& model) {
    DtypeCounts dtypeCounts;
    for (const auto& t : model.tensors()) dtypeCounts[std::string(dtypeName(t.dtype))] += t.numel();
    return dtypeCounts;
}

/// The spec's fields of `info --json`, from "path" to "eos_ids".
json infoSpecJson(const Model& model) {
    const ModelSpec& s = model.spec();
    json j;
    j["path"] = model.path();
    j["format"] = s.sourceFormat;
    j["architecture"] = s.arch;
    j["dim"] = s.dim;
    j["n_layers"] = s.nLayers;
    j["n_heads"] = s.nHeads;
    j["n_kv_heads"] = s.nKvHeads;
    j["head_dim"] = s.headDim;
    j["hidden_dim"] = s.hidden;
    j["vocab_size"] = s.vocab;
    j["context_length"] = s.maxSeq;
    j["norm_eps"] = s.normEps;
    j["rope"] = {{"type", ropeTypeName(s.rope.type)},
                 {"theta", s.rope.theta},
                 {"factor", s.rope.factor},
                 {"interleaved", s.rope.interleaved}};
    j["tied_embeddings"] = s.tiedEmbeddings;
    j["attention_bias"] = s.attnBias;
    j["qk_norm"] = s.qkNorm;
    j["sliding_window"] = s.slidingWindow;
    j["norm"] = s.norm == NormType::LayerNorm ? "layernorm" : "rmsnorm";
    j["position_embedding"] = s.isMamba()                         ? "none"
                              : s.posEmbed == PosEmbedding::Rope  ? "rope"
                              : s.posEmbed == PosEmbedding::Alibi ? "alibi"
                                                                  : "learned";
    j["activation"] = s.hiddenAct;
    if (s.isMoe()) j["moe"] = {{"experts", s.nExperts}, {"experts_per_token", s.nExpertsPerTok}};
    if (s.arch == "mamba")
        j["ssm"] = {{"inner", s.ssmInner},
                    {"state", s.ssmState},
                    {"conv_kernel", s.ssmConv},
                    {"dt_rank", s.ssmDtRank}};
    j["bos_id"] = s.bosId;
    j["eos_ids"] = s.eosIds;
    return j;
}

/// Every tensor of `info --json`; counts the tensors stored in a quantised scheme.
json infoTensorsJson(const Model& model, int64_t& quantizedTensors) {
    json tensors = json::array();
    for (const auto& t : model.tensors()) {
        json e = {{"name", t.name},
                  {"file_name", t.fileName},
                  {"dtype", std::string(dtypeName(t.dtype))},
                  {"shape", t.shape},
                  {"parameters", t.numel()},
                  {"bytes", t.nbytes}};
        // Weights dequantised at load (GPTQ / AWQ / compressed-tensors): the stored scheme
        // and the bytes of the quantised tensors in the file.
        if (std::string scheme = model.tensorScheme(t.name); !scheme.empty()) {
            e["scheme"] = scheme;
            e["stored_bytes"] = model.tensorStoredBytes(t);
            ++quantizedTensors;
        }
        tensors.push_back(std::move(e));
    }
    return tensors;
}

void printInfoJson(const Model& model, const DtypeCounts& dtypeCounts) {
    json j = infoSpecJson(model);
    j["parameters"] = model.parameterCount();
    j["stored_bytes"] = model.storedBytes();
    j["dtypes"] = dtypeCounts; // elements per dtype
    if (model.hasTokenizer()) {
        const Tokenizer& tk = model.tokenizer();
        j["tokenizer"] = {{"kind", tk.kind()},
                          {"vocab_size", tk.vocabSize()},
                          {"bos_id", tk.bosId()},
                          {"eos_id", tk.eosId()},
                          {"adds_bos", tk.addsBos()}};
    } else {
        j["tokenizer"] = nullptr;
    }
    int64_t quantizedTensors = 0;
    const json tensors = infoTensorsJson(model, quantizedTensors);
    if (!model.quantizationMethod().empty())
        j["quantization"] = {{"method", model.quantizationMethod()},
                             {"summary", model.quantizationSummary()},
                             {"quantized_tensors", quantizedTensors}};
    j["tensors"] = tensors;
    j["warnings"] = model.warnings();
    printJson(j);
}

/// The text of `info` down to the warnings.
void printInfoSummary(const Model& model, const DtypeCounts& dtypeCounts) {
    const ModelSpec& s = model.spec();
    std::printf("model:        %s\n", model.path().c_str());
    std::printf("format:       %s\n", s.sourceFormat.c_str());
    std::printf("architecture: %s\n", s.arch.c_str());
    std::printf("dims:         dim %lld, layers %lld, heads %lld, kv heads %lld, head dim %lld, "
                "hidden %lld, vocab %lld, context %lld\n",
                (long long)s.dim, (long long)s.nLayers, (long long)s.nHeads, (long long)s.nKvHeads,
                (long long)s.headDim, (long long)s.hidden, (long long)s.vocab, (long long)s.maxSeq);
    if (s.isMoe())
        std::printf("experts:      %lld, %lld per token\n", (long long)s.nExperts,
                    (long long)s.nExpertsPerTok);
    if (s.arch == "mamba")
        std::printf("ssm:          inner %lld, state %lld, conv kernel %lld, dt rank %lld\n",
                    (long long)s.ssmInner, (long long)s.ssmState, (long long)s.ssmConv,
                    (long long)s.ssmDtRank);
    std::printf("blocks:       %s, %s, activation %s\n",
                s.norm == NormType::LayerNorm ? "LayerNorm" : "RMSNorm",
                s.isMamba()                         ? "recurrent state (no positions)"
                : s.posEmbed == PosEmbedding::Rope  ? "rotary positions"
                : s.posEmbed == PosEmbedding::Alibi ? "ALiBi"
                                                    : "learned positions",
                s.hiddenAct.c_str());
    if (s.posEmbed == PosEmbedding::Rope)
        std::printf("rope:         %s, theta %g%s%s\n", ropeTypeName(s.rope.type), s.rope.theta,
                    s.rope.factor != 1.0 ? (", factor " + std::to_string(s.rope.factor)).c_str()
                                         : "",
                    s.rope.interleaved ? ", interleaved pairs" : ", rotate-half pairs");
    std::printf("norm eps:     %g\n", double(s.normEps));
    std::printf("tied embed:   %s%s%s\n", s.tiedEmbeddings ? "yes" : "no",
                s.attnBias ? ", q/k/v bias" : "", s.qkNorm ? ", q/k norm" : "");
    if (s.slidingWindow > 0) std::printf("sliding win:  %lld\n", (long long)s.slidingWindow);
    std::printf("parameters:   %s (%lld)\n", humanCount(double(model.parameterCount())).c_str(),
                (long long)model.parameterCount());
    std::printf("stored size:  %s (%llu bytes)\n", humanBytes(double(model.storedBytes())).c_str(),
                (unsigned long long)model.storedBytes());
    if (!model.quantizationSummary().empty())
        std::printf("quantization: %s (dequantised to f32 at load)\n",
                    model.quantizationSummary().c_str());
    std::printf("dtypes:      ");
    for (const auto& [k, v] : dtypeCounts) std::printf(" %s: %lld", k.c_str(), (long long)v);
    std::printf("\n");
    if (model.hasTokenizer()) {
        const Tokenizer& tk = model.tokenizer();
        std::printf("tokenizer:    %s, vocab %d, bos %d, eos %d%s\n", tk.kind().c_str(),
                    tk.vocabSize(), tk.bosId(), tk.eosId(), tk.addsBos() ? ", adds BOS" : "");
    } else {
        std::printf("tokenizer:    none found\n");
    }
    for (const auto& w : model.warnings()) std::printf("warning:      %s\n", w.c_str());
}

/// The tensor table of `info`, columns as wide as their longest entry.
void printTensorTable(const Model& model) {
    size_t wName = 6, wFile = 9, wShape = 5;
    for (const auto& t : model.tensors()) {
        wName = std::max(wName, t.name.size());
        wFile = std::max(wFile, t.fileName.size());
        wShape = std::max(wShape, shapeString(t.shape).size());
    }
    std::printf("\n%-*s  %-*s  %-6s  %-*s  %12s\n", int(wName), "tensor", int(wFile), "file name",
                "dtype", int(wShape), "shape", "bytes");
    for (const auto& t : model.tensors())
        std::printf("%-*s  %-*s  %-6s  %-*s  %12llu\n", int(wName), t.name.c_str(), int(wFile),
                    t.fileName.c_str(), std::string(dtypeName(t.dtype)).c_str(), int(wShape),
                    shapeString(t.shape).c_str(), (unsigned long long)t.nbytes);
}

} // namespace

int cmdInfo(const std::vector<std::string>& argv) {
    Args a(argv, kCommonValued, kCommonFlags);
    applyThreads(a);
    auto model = openModel(a, false);
    const DtypeCounts dtypeCounts = countDtypes(*model);
    if (a.flag("--json")) {
        printInfoJson(*model, dtypeCounts);
        return 0;
    }
    printInfoSummary(*model, dtypeCounts);
    printTensorTable(*model);
    return 0;
}

// ------------------------------------------------------------------------------------ tokenize
int cmdTokenize(const std::vector<std::string>& argv) {
    Args a(argv, with(kCommonValued, {"--text"}), with(kCommonFlags, {"--no-bos", "--special"}));
    auto model = openModel(a, true);
    const auto text = a.get("--text");
    if (!text) throw UsageError{"--text TEXT is required"};
    const Tokenizer& tk = model->tokenizer();
    const auto ids = tk.encode(*text, !a.flag("--no-bos"), a.flag("--special"));
    if (a.flag("--json")) {
        json pieces = json::array();
        for (int32_t id : ids) pieces.push_back(tk.tokenText(id));
        printJson({{"ids", ids}, {"pieces", pieces}, {"count", ids.size()}});
        return 0;
    }
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
    std::printf("\n");
    for (size_t i = 0; i < ids.size(); ++i)
        std::printf("%6d  %s\n", ids[i], tk.tokenText(ids[i]).c_str());
    std::printf("%zu tokens\n", ids.size());
    return 0;
}

// ------------------------------------------------------------------------------------ generate
namespace {
/// How the session's forwards ran: "cpu", "resident" (the whole forward on the device) or
/// "per-product" (a device ran the products and attention; the rest on the CPU).
const char* forwardPathName(const Session& session) {
    if (session.device().id == "cpu") return "cpu";
    return session.deviceForwards() > 0 && session.residentNote().empty() ? "resident"
                                                                          : "per-product";
}
} // namespace

/// --kv-cache f32|f16 (SessionOptions::kvCache; default f32).
static KvCacheType kvCacheOption(const Args& a) {
    const std::string v = a.getOr("--kv-cache", "f32");
    if (v == "f32") return KvCacheType::F32;
    if (v == "f16") return KvCacheType::F16;
    throw UsageError{"--kv-cache must be f32 or f16, not '" + v + "'"};
}

int cmdGenerate(const std::vector<std::string>& argv) {
    Args a(argv,
           with(kCommonValued, {"--prompt", "-n", "--temp", "--top-k", "--top-p", "--seed", "--ctx",
                                "--recipe", "--preset", "--overlay", "--calib", "--samples",
                                "--seq-len", "--calib-sampling", "--calib-seed", "--kv-cache"}),
           with(kCommonFlags, {"--no-bos", "--exact-activations"}));
    applyThreads(a);
    auto model = openModel(a, true);
    const auto prompt = a.get("--prompt");
    if (!prompt) throw UsageError{"--prompt TEXT is required"};
    const long long n = a.getInt("-n", 64);
    if (n < 0) throw UsageError{"-n must be >= 0"};
    SamplingParams sp;
    sp.temperature = float(a.getDouble("--temp", 0.0));
    sp.topK = int(a.getInt("--top-k", 0));
    sp.topP = float(a.getDouble("--top-p", 1.0));
    sp.seed = uint64_t(a.getInt("--seed", 0));
    if (sp.topP <= 0 || sp.topP > 1) throw UsageError{"--top-p must be in (0, 1]"};
    if (sp.topK < 0) throw UsageError{"--top-k must be >= 0"};

    const Tokenizer& tk = model->tokenizer();
    const auto promptIds = tk.encode(*prompt, !a.flag("--no-bos"));
    if (promptIds.empty()) throw UsageError{"the prompt encodes to no tokens"};
    SessionOptions so;
    so.exactActivations = a.flag("--exact-activations");
    so.kvCache = kvCacheOption(a);
    so.contextLength = a.getInt("--ctx", 0);
    if (so.contextLength == 0)
        so.contextLength = std::min<int64_t>(model->spec().maxSeq > 0 ? model->spec().maxSeq : 4096,
                                             int64_t(promptIds.size()) + n);
    if (int64_t(promptIds.size()) + n > so.contextLength)
        throw UsageError{"prompt (" + std::to_string(promptIds.size()) + " tokens) + -n " +
                         std::to_string(n) + " exceeds the context of " +
                         std::to_string(so.contextLength) + " tokens"};
    const auto weights = applyRecipeOptions(*model, a);
    Session session(*weights, so);
    const bool json = a.flag("--json");

    // Stream text as it is generated: decode everything so far and print the new suffix, which
    // keeps multi-byte characters split over byte-fallback tokens intact.
    std::vector<int32_t> generated;
    std::string printed;
    if (!json) {
        printed = tk.decode(promptIds);
        std::fputs(printed.c_str(), stdout);
        std::fflush(stdout);
    }
    auto all = promptIds;
    auto onToken = [&](int32_t id) {
        if (interrupted()) return false;
        all.push_back(id);
        if (!json) {
            const std::string text = tk.decode(all);
            if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
                std::fputs(text.c_str() + printed.size(), stdout);
                std::fflush(stdout);
                printed = text;
            }
        }
        return true;
    };
    const GenerateResult r = session.generate(promptIds, n, sp, onToken);
    const double prefillTps = r.prefillSeconds > 0 ? double(r.promptTokens) / r.prefillSeconds : 0;
    const double decodeTps = r.decodeSeconds > 0 ? double(r.generatedTokens) / r.decodeSeconds : 0;
    if (json) {
        std::vector<int32_t> newIds(r.ids.begin() + r.promptTokens, r.ids.end());
        printJson({{"prompt", *prompt},
                   {"text", tk.decode(r.ids)},
                   {"completion", tk.decode(newIds)},
                   {"prompt_ids", promptIds},
                   {"ids", r.ids},
                   {"prompt_tokens", r.promptTokens},
                   {"generated_tokens", r.generatedTokens},
                   {"stopped_at_eos", r.stoppedAtEos},
                   {"prefill_seconds", r.prefillSeconds},
                   {"decode_seconds", r.decodeSeconds},
                   {"prefill_tokens_per_second", prefillTps},
                   {"decode_tokens_per_second", decodeTps},
                   {"threads", omp_get_max_threads()},
                   {"activations", activationsPathName(so.exactActivations)},
                   {"kv_cache", session.kvCacheF16() ? "f16" : "f32"},
                   {"device", deviceUsedJson(session.device())},
                   {"forward", forwardPathName(session)},
                   {"sampling",
                    {{"temperature", sp.temperature},
                     {"top_k", sp.topK},
                     {"top_p", sp.topP},
                     {"seed", sp.seed}}}});
    } else {
        std::printf("\n");
        std::fprintf(stderr,
                     "\nprefill: %lld tokens in %.3f s (%.1f tokens/s)\n"
                     "decode:  %lld tokens in %.3f s (%.1f tokens/s)%s, %d threads\n"
                     "device:  %s (%s)\n",
                     (long long)r.promptTokens, r.prefillSeconds, prefillTps,
                     (long long)r.generatedTokens, r.decodeSeconds, decodeTps,
                     r.stoppedAtEos ? ", stopped at EOS" : "", omp_get_max_threads(),
                     session.device().name.c_str(), session.device().id.c_str());
        if (!session.residentNote().empty())
            std::fprintf(stderr, "forward: per product (%s)\n", session.residentNote().c_str());
    }
    return r.status == Status::Cancelled ? 130 : 0;
}

// -------------------------------------------------------------------------------------- logits
int cmdLogits(const std::vector<std::string>& argv) {
    Args a(argv,
           with(kCommonValued,
                {"--ids", "--text", "--out", "--recipe", "--preset", "--overlay", "--calib",
                 "--samples", "--seq-len", "--calib-sampling", "--calib-seed"}),
           with(kCommonFlags, {"--no-bos", "--exact-activations"}));
    applyThreads(a);
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out FILE.npy is required"};
    if (a.has("--ids") == a.has("--text")) throw UsageError{"give exactly one of --ids or --text"};
    auto model = openModel(a, a.has("--text"));
    std::vector<int32_t> ids;
    if (auto s = a.get("--ids")) {
        std::stringstream ss(*s);
        std::string item;
        while (std::getline(ss, item, ',')) {
            try {
                size_t used = 0;
                const long long v = std::stoll(item, &used);
                if (used != item.size()) throw std::invalid_argument(item);
                ids.push_back(int32_t(v));
            } catch (const std::exception&) {
                throw UsageError{"--ids expects comma-separated integers, got '" + item + "'"};
            }
        }
    } else {
        ids = model->tokenizer().encode(*a.get("--text"), !a.flag("--no-bos"));
    }
    if (ids.empty()) throw UsageError{"no tokens to evaluate"};
    for (int32_t id : ids)
        if (id < 0 || id >= model->spec().vocab)
            throw ArgumentError("token id " + std::to_string(id) +
                                " is outside the vocabulary [0, " +
                                std::to_string(model->spec().vocab) + ")");
    SessionOptions so;
    so.contextLength = int64_t(ids.size());
    so.exactActivations = a.flag("--exact-activations");
    const auto weights = applyRecipeOptions(*model, a);
    Session session(*weights, so);
    std::vector<float> logits;
    session.forward(ids, logits, true);
    writeNpyF32(*out, {int64_t(ids.size()), model->spec().vocab}, logits.data());
    if (a.flag("--json"))
        printJson({{"out", *out},
                   {"shape", {ids.size(), model->spec().vocab}},
                   {"ids", ids},
                   {"activations", activationsPathName(so.exactActivations)}});
    else
        std::fprintf(stderr, "wrote %s: float32 [%zu, %lld]\n", out->c_str(), ids.size(),
                     (long long)model->spec().vocab);
    return 0;
}

// ---------------------------------------------------------------------------------- perplexity
int cmdPerplexity(const std::vector<std::string>& argv) {
    Args a(argv,
           with(kCommonValued, {"--text", "--ctx", "--mode", "--stride", "--batch", "--recipe",
                                "--preset", "--overlay", "--calib", "--samples", "--seq-len",
                                "--calib-sampling", "--calib-seed", "--kv-cache"}),
           with(kCommonFlags, {"--exact-activations"}));
    applyThreads(a);
    const auto textPath = a.get("--text");
    if (!textPath) throw UsageError{"--text FILE is required"};
    auto model = openModel(a, true);
    const std::string text = readTextFile(*textPath);
    const Tokenizer& tk = model->tokenizer();
    PerplexityOptions po;
    po.ctx = a.getInt("--ctx", 512);
    if (po.ctx < 4) throw UsageError{"--ctx must be at least 4"};
    const std::string mode = a.getOr("--mode", "llamacpp");
    if (mode == "llamacpp")
        po.mode = PerplexityMode::LlamaCppChunks;
    else if (mode == "sliding")
        po.mode = PerplexityMode::SlidingWindow;
    else
        throw UsageError{"--mode must be llamacpp or sliding"};
    po.stride = a.getInt("--stride", po.ctx / 2);
    po.batch = a.getInt("--batch", po.ctx);
    po.bosId = tk.bosId();
    po.exactActivations = a.flag("--exact-activations");
    po.kvCache = kvCacheOption(a);
    // llama.cpp tokenizes the whole text once with BOS first (when the model uses one).
    const auto tokens = tk.encode(text, true);
    const auto weights = applyRecipeOptions(*model, a);
    TerminalProgress progress("perplexity", !a.flag("--quiet"));
    // computePerplexity's sessions take the process default (--device).
    const runtime::DeviceInfo device = defaultDeviceInfo();
    const PerplexityResult r = computePerplexity(*weights, tokens, po, progress);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled\n");
        return 130;
    }
    if (a.flag("--json")) {
        printJson({{"model", model->path()},
                   {"text_file", *textPath},
                   {"mode", mode == "llamacpp"
                                ? "llama.cpp (non-overlapping chunks, second half scored)"
                                : "sliding window (HF), stride " + std::to_string(po.stride)},
                   {"ctx", po.ctx},
                   {"stride", mode == "sliding" ? json(po.stride) : json(nullptr)},
                   {"tokens", tokens.size()},
                   {"chunks", r.chunks},
                   {"scored_tokens", r.scoredTokens},
                   {"ppl", r.ppl},
                   {"ppl_se", r.pplError},
                   {"mean_nll", r.meanNll},
                   {"seconds", r.seconds},
                   {"tokens_per_second", r.tokensPerSecond},
                   {"kv_cache_bytes", r.kvCacheBytes},
                   {"kv_cache_bytes_f32", r.kvCacheBytesF32},
                   {"kv_cache_bytes_per_token", double(r.kvCacheBytes) / double(po.ctx)},
                   {"macs", macsJson(r.macs, double(r.tokensEvaluated))},
                   {"activations", activationsPathName(po.exactActivations)},
                   {"kv_cache", r.kvCacheF16 ? "f16" : "f32"},
                   {"device", deviceUsedJson(device)},
                   {"threads", omp_get_max_threads()}});
        return 0;
    }
    const std::string modeLabel = mode == "llamacpp"
                                      ? "llama.cpp (non-overlapping chunks, second half scored)"
                                      : "sliding window (HF), stride " + std::to_string(po.stride);
    std::printf("model:   %s\ntext:    %s (%zu tokens)\nmode:    %s, ctx %lld\n",
                model->path().c_str(), textPath->c_str(), tokens.size(), modeLabel.c_str(),
                (long long)po.ctx);
    std::printf("device:  %s (%s)\n", device.name.c_str(), device.id.c_str());
    std::printf("chunks:  %lld, scored tokens %lld\n", (long long)r.chunks,
                (long long)r.scoredTokens);
    std::printf("PPL = %.4f +/- %.5f\n", r.ppl, r.pplError);
    if (r.kvCacheBytes != r.kvCacheBytesF32)
        std::printf("KV cache: %llu bytes per %lld-token chunk, %.1f bytes/token (f32: %llu)\n",
                    (unsigned long long)r.kvCacheBytes, (long long)po.ctx,
                    double(r.kvCacheBytes) / double(po.ctx), (unsigned long long)r.kvCacheBytesF32);
    std::printf("MACs:    %s\n", macsText(macsJson(r.macs, double(r.tokensEvaluated))).c_str());
    std::printf("time:    %.2f s (%.0f tokens/s, %d threads)\n", r.seconds, r.tokensPerSecond,
                omp_get_max_threads());
    return 0;
}

// --------------------------------------------------------------------------------------- synth
int cmdSynth(const std::vector<std::string>& argv) {
    Args a(argv, {"--arch", "--shape", "--dtype", "--out", "--seed", "--shard-mb", "--threads"},
           {"--quiet", "--json"});
    applyThreads(a);
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out DIR is required"};
    const std::string shape = a.getOr("--shape", "tinyllama-1.1b");
    const ModelSpec spec = syntheticSpec(a.getOr("--arch", ""), shape);
    SynthOptions so;
    const std::string dt = a.getOr("--dtype", "f32");
    if (dt == "f32")
        so.dtype = DType::F32;
    else if (dt == "f16")
        so.dtype = DType::F16;
    else if (dt == "bf16")
        so.dtype = DType::BF16;
    else
        throw UsageError{"--dtype must be f32, f16 or bf16"};
    so.seed = uint64_t(a.getInt("--seed", 1));
    const long long shardMb = a.getInt("--shard-mb", 1024);
    if (shardMb <= 0) throw UsageError{"--shard-mb must be positive"};
    so.maxShardBytes = uint64_t(shardMb) << 20;
    TerminalProgress progress("synth", !a.flag("--quiet"));
    const auto t0 = std::chrono::steady_clock::now();
    const Status st = writeSyntheticModel(spec, *out, so, progress);
    progress.finish();
    if (st == Status::Cancelled) {
        std::fprintf(stderr, "cancelled; partial files removed\n");
        return 130;
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t bytes = syntheticModelBytes(spec, so.dtype);
    if (a.flag("--json"))
        printJson({{"out", *out},
                   {"shape", shape},
                   {"arch", spec.arch},
                   {"dtype", dt},
                   {"bytes", bytes},
                   {"seconds", secs}});
    else
        std::printf("wrote %s (%s, %s, %.2f GB) in %.1f s\n", out->c_str(), shape.c_str(),
                    dt.c_str(), double(bytes) / 1e9, secs);
    return 0;
}

void applyThreads(const Args& a) {
    const long long t = a.getInt("--threads", 0);
    if (t < 0) throw UsageError{"--threads must be >= 0"};
    if (t > 0) omp_set_num_threads(int(t));
}

const char* activationsPathName(bool exact) {
    return exact ? "exact-f32" : "quantized-8bit";
}

json macsJson(const Session::MacCounts& m, double tokens) {
    if (m.dense <= 0) return nullptr;
    const int64_t executed = m.dense - m.zeroInput;
    const double t = tokens > 0 ? tokens : 1.0;
    return {{"dense", m.dense},
            {"zero_input", m.zeroInput},
            {"executed", executed},
            {"executed_fraction", double(executed) / double(m.dense)},
            {"dense_per_token", double(m.dense) / t},
            {"executed_per_token", double(executed) / t}};
}

std::string macsText(const json& macs) {
    if (!macs.is_object()) return "-";
    char b[96];
    std::snprintf(b, sizeof b, "%.4g M/tok (%.1f %% of dense)",
                  macs.value("executed_per_token", 0.0) / 1e6,
                  100.0 * macs.value("executed_fraction", 0.0));
    return b;
}

} // namespace lcw::cli
