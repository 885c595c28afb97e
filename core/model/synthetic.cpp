#include "core/model/synthetic.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace lcw {

namespace {

// splitmix64: small, fast, and good enough for random initialisation.
inline uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::string tokenizerJson(int64_t vocab) {
    // SentencePiece-style BPE with byte fallback: <unk> <s> </s>, 256 byte tokens, "▁" and the
    // printable ASCII characters, then unused fillers up to the vocabulary size. No merges: text
    // encodes character by character, which is all a speed benchmark needs.
    nlohmann::ordered_json v;
    int64_t id = 0;
    v["<unk>"] = id++;
    v["<s>"] = id++;
    v["</s>"] = id++;
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        v[buf] = id++;
    }
    v["\xe2\x96\x81"] = id++;
    for (int c = 0x21; c < 0x7f; ++c) v[std::string(1, char(c))] = id++;
    while (id < vocab) {
        v["<unused_" + std::to_string(id) + ">"] = id;
        ++id;
    }
    nlohmann::ordered_json j;
    j["version"] = "1.0";
    auto special = [](int i, const char* s) {
        return nlohmann::ordered_json{{"id", i},         {"content", s},    {"single_word", false},
                                      {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                      {"special", true}};
    };
    j["added_tokens"] = {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")};
    j["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}}}}};
    j["pre_tokenizer"] = nullptr;
    j["post_processor"] = nullptr;
    j["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", "<unk>"},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", true},
                  {"byte_fallback", true},
                  {"ignore_merges", false},
                  {"vocab", v},
                  {"merges", nlohmann::json::array()}};
    return j.dump(1);
}

} // namespace

std::vector<std::string> syntheticShapes() {
    return {"tinyllama-1.1b", "llama3-8b", "qwen2.5-7b", "llama-tiny", "qwen2-tiny"};
}

ModelSpec syntheticSpec(const std::string& arch, const std::string& shape) {
    ModelSpec s;
    s.sourceFormat = "safetensors";
    s.arch = "llama";
    s.normEps = 1e-5f;
    if (shape == "tinyllama-1.1b") {
        s.dim = 2048, s.nLayers = 22, s.hidden = 5632, s.nHeads = 32, s.nKvHeads = 4;
        s.vocab = 32000, s.maxSeq = 2048;
    } else if (shape == "llama3-8b") {
        s.dim = 4096, s.nLayers = 32, s.hidden = 14336, s.nHeads = 32, s.nKvHeads = 8;
        s.vocab = 128256, s.maxSeq = 8192, s.rope.theta = 500000.0;
    } else if (shape == "qwen2.5-7b") {
        s.arch = "qwen2", s.attnBias = true, s.normEps = 1e-6f, s.rope.theta = 1e6;
        s.dim = 3584, s.nLayers = 28, s.hidden = 18944, s.nHeads = 28, s.nKvHeads = 4;
        s.vocab = 152064, s.maxSeq = 32768;
    } else if (shape == "llama-tiny" || shape == "qwen2-tiny") {
        s.dim = 64, s.nLayers = 2, s.hidden = 160, s.nHeads = 4, s.nKvHeads = 2;
        s.vocab = 512, s.maxSeq = 256;
        if (shape == "qwen2-tiny") s.arch = "qwen2", s.attnBias = true, s.rope.theta = 1e6;
    } else {
        std::string known;
        for (const auto& k : syntheticShapes()) known += (known.empty() ? "" : ", ") + k;
        throw ArgumentError("synth: unknown --shape '" + shape + "' (known: " + known + ")");
    }
    if (!arch.empty() && arch != s.arch)
        throw ArgumentError("synth: --shape " + shape + " is a '" + s.arch +
                            "' model, not --arch '" + arch + "'");
    s.headDim = s.dim / s.nHeads;
    s.bosId = 1;
    s.eosIds = {2};
    return s;
}

std::vector<TensorDesc> syntheticTensors(const ModelSpec& spec, DType dtype) {
    std::vector<TensorDesc> descs;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
        descs.push_back({name, dtype, std::move(shape)});
    };
    const int64_t qDim = spec.nHeads * spec.headDim, kvDim = spec.nKvHeads * spec.headDim;
    add("model.embed_tokens.weight", {spec.vocab, spec.dim});
    for (int64_t l = 0; l < spec.nLayers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {spec.dim});
        add(p + "self_attn.q_proj.weight", {qDim, spec.dim});
        add(p + "self_attn.k_proj.weight", {kvDim, spec.dim});
        add(p + "self_attn.v_proj.weight", {kvDim, spec.dim});
        if (spec.attnBias) {
            add(p + "self_attn.q_proj.bias", {qDim});
            add(p + "self_attn.k_proj.bias", {kvDim});
            add(p + "self_attn.v_proj.bias", {kvDim});
        }
        add(p + "self_attn.o_proj.weight", {spec.dim, qDim});
        add(p + "post_attention_layernorm.weight", {spec.dim});
        add(p + "mlp.gate_proj.weight", {spec.hidden, spec.dim});
        add(p + "mlp.up_proj.weight", {spec.hidden, spec.dim});
        add(p + "mlp.down_proj.weight", {spec.dim, spec.hidden});
    }
    add("model.norm.weight", {spec.dim});
    add("lm_head.weight", {spec.vocab, spec.dim});
    return descs;
}

uint64_t syntheticModelBytes(const ModelSpec& spec, DType dtype) {
    uint64_t total = 0;
    for (const auto& d : syntheticTensors(spec, dtype)) total += tensorDescBytes(d);
    return total;
}

std::string syntheticConfigJson(const ModelSpec& spec, const SynthOptions& opts) {
    nlohmann::ordered_json cfg;
    const bool qwen2 = spec.arch == "qwen2";
    cfg["architectures"] = {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
    cfg["model_type"] = spec.arch;
    cfg["hidden_size"] = spec.dim;
    cfg["intermediate_size"] = spec.hidden;
    cfg["num_hidden_layers"] = spec.nLayers;
    cfg["num_attention_heads"] = spec.nHeads;
    cfg["num_key_value_heads"] = spec.nKvHeads;
    cfg["head_dim"] = spec.headDim;
    cfg["vocab_size"] = spec.vocab;
    cfg["max_position_embeddings"] = spec.maxSeq;
    char eps[32]; // the float as its short decimal (1e-06, not 9.99999997e-07)
    std::snprintf(eps, sizeof eps, "%g", double(spec.normEps));
    cfg["rms_norm_eps"] = std::strtod(eps, nullptr);
    cfg["rope_theta"] = spec.rope.theta;
    cfg["hidden_act"] = "silu";
    if (qwen2) cfg["use_sliding_window"] = false;
    cfg["tie_word_embeddings"] = false;
    cfg["bos_token_id"] = 1;
    cfg["eos_token_id"] = 2;
    cfg["torch_dtype"] = opts.dtype == DType::F32   ? "float32"
                         : opts.dtype == DType::F16 ? "float16"
                                                    : "bfloat16";
    cfg["lcw_synthetic"] = {{"seed", opts.seed}, {"weight_std", opts.weightStd}};

    return cfg.dump(2);
}

Status writeSyntheticModel(const ModelSpec& spec, const std::string& folder,
                           const SynthOptions& opts, Progress& progress) {
    namespace fs = std::filesystem;
    if (opts.dtype != DType::F32 && opts.dtype != DType::F16 && opts.dtype != DType::BF16)
        throw ArgumentError("synth: --dtype must be f32, f16 or bf16");
    const bool existed = fs::exists(folder);
    fs::create_directories(folder);

    const std::vector<TensorDesc> descs = syntheticTensors(spec, opts.dtype);
    uint64_t total = 0;
    for (const auto& d : descs) total += tensorDescBytes(d);
    // Fail before writing anything rather than after filling the disk: the shards are written
    // as temporary files, so the whole model must fit beside whatever the folder holds. The
    // tokenizer (~40 bytes a token) and a little slack come on top of the tensor data.
    const uint64_t need = total + uint64_t(spec.vocab) * 64 + (16ull << 20);
    std::error_code ec;
    const fs::space_info sp = fs::space(folder, ec);
    if (!ec && sp.available < need) {
        if (!existed) fs::remove(folder);
        throw Error("synth: " + folder + " has " + std::to_string(sp.available >> 20) +
                    " MiB free, the model needs " + std::to_string(need >> 20) + " MiB");
    }

    uint64_t done = 0;
    const double amp = opts.weightStd * std::sqrt(3.0); // uniform[-a,a] has std a/sqrt(3)
    const DType dt = opts.dtype;

    auto fill = [&](size_t index, std::byte* dst, uint64_t nbytes) {
        const TensorDesc& d = descs[index];
        const bool isNorm = d.name.ends_with("norm.weight");
        const int64_t n = int64_t(nbytes / (dt == DType::F32 ? 4 : 2));
        const int64_t chunk = 1 << 16;
        // omp: nothrow (fills the mapped output)
#pragma omp parallel for schedule(static)
        for (int64_t c0 = 0; c0 < n; c0 += chunk) {
            uint64_t state = opts.seed * 0x100000001b3ull + uint64_t(index) * 0x9e3779b9ull +
                             uint64_t(c0 / chunk) * 0x632be59bd9b4e019ull;
            const int64_t c1 = std::min(n, c0 + chunk);
            for (int64_t i = c0; i < c1; ++i) {
                float v = 1.0f;
                if (!isNorm) {
                    const double u = double(splitmix(state) >> 11) * (1.0 / 9007199254740992.0);
                    v = float((2.0 * u - 1.0) * amp);
                }
                if (dt == DType::F32) {
                    std::memcpy(dst + i * 4, &v, 4);
                } else {
                    const uint16_t h = dt == DType::F16 ? f32ToF16(v) : f32ToBf16(v);
                    std::memcpy(dst + i * 2, &h, 2);
                }
            }
        }
        done += nbytes;
        if (!progress.report(double(done) / double(total), d.name)) throw Cancelled{};
    };

    try {
        writeSafetensorsSharded(folder, descs, fill, opts.maxShardBytes,
                                {{"format", "pt"}, {"lcw_synthetic", "random weights"}});
    } catch (const Cancelled&) {
        for (const auto& e : fs::directory_iterator(folder))
            if (e.path().extension() == ".safetensors" ||
                e.path().filename() == "model.safetensors.index.json")
                fs::remove(e.path());
        return Status::Cancelled;
    }
    writeFileAtomic((fs::path(folder) / "config.json").string(), syntheticConfigJson(spec, opts));
    writeFileAtomic((fs::path(folder) / "tokenizer.json").string(), tokenizerJson(spec.vocab));
    writeFileAtomic(
        (fs::path(folder) / "tokenizer_config.json").string(),
        std::string(
            R"({"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})"));
    return Status::Ok;
}

} // namespace lcw
