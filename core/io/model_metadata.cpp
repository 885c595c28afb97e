#include "core/io/model_metadata.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/io/gguf.h"
#include "core/io/llama2c.h"
#include "core/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace lcw {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxString = 4096;

std::string clip(const std::string& s, size_t n = kMaxString) {
    if (s.size() <= n) return s;
    return s.substr(0, n) + "… (" + std::to_string(s.size()) + " bytes)";
}

std::string number(double v) {
    std::ostringstream o;
    o.precision(9);
    o << v;
    return o.str();
}

std::string scalarText(const GgufValue& v) {
    switch (v.type) {
    case GgufType::String:
        return clip(v.str);
    case GgufType::Bool:
        return v.bits ? "true" : "false";
    case GgufType::Float32:
    case GgufType::Float64:
        return number(*v.asDouble());
    case GgufType::UInt64:
        return std::to_string(v.bits);
    default:
        if (auto i = v.asInt()) return std::to_string(*i);
        return std::to_string(v.bits);
    }
}

std::string elemText(const GgufValue& v, uint64_t i) {
    switch (v.elemType) {
    case GgufType::String:
        return clip(v.strings[size_t(i)], 256);
    case GgufType::Array:
        return v.arrays[size_t(i)].toString();
    case GgufType::Float32:
    case GgufType::Float64:
        return number(*v.arrayDouble(i));
    case GgufType::Bool:
        return *v.arrayInt(i) ? "true" : "false";
    default:
        if (auto x = v.arrayInt(i)) return std::to_string(*x);
        return "?";
    }
}

MetadataEntry ggufEntry(const std::string& key, const GgufValue& v) {
    MetadataEntry e;
    e.key = key;
    if (!v.isArray()) {
        e.type = std::string(ggufTypeName(v.type));
        e.value = scalarText(v);
        return e;
    }
    e.type = "array[" + std::string(ggufTypeName(v.elemType)) + "]";
    e.count = v.count;
    const uint64_t keep = std::min<uint64_t>(v.count, kMetadataItems);
    e.items.reserve(size_t(keep));
    for (uint64_t i = 0; i < keep; ++i) e.items.push_back(elemText(v, i));
    e.value = std::to_string(v.count) + " × " + std::string(ggufTypeName(v.elemType));
    if (v.count > 0) {
        e.value += ": ";
        std::string list;
        const uint64_t show = std::min<uint64_t>(v.count, 8);
        for (uint64_t i = 0; i < show; ++i) {
            if (i) list += ", ";
            list += v.elemType == GgufType::String ? "\"" + clip(e.items[size_t(i)], 40) + "\""
                                                   : e.items[size_t(i)];
        }
        if (v.count > show) list += ", …";
        e.value += list;
    }
    return e;
}

ModelMetadata ggufMetadata(const std::string& path) {
    const GgufFile g = readGguf(path);
    ModelMetadata md;
    md.path = path;
    md.format = "GGUF v" + std::to_string(g.version);
    for (const auto& [k, v] : g.metadata) md.entries.push_back(ggufEntry(k, v));

    auto add = [&](const std::string& k, const std::string& v) { md.summary.emplace_back(k, v); };
    auto str = [&](const char* key) -> std::string {
        const GgufValue* v = g.find(key);
        return v && v->type == GgufType::String ? v->str : std::string();
    };
    const std::string arch = str("general.architecture");
    if (!arch.empty()) add("Architecture", arch);
    if (auto n = str("general.name"); !n.empty()) add("Name", n);
    if (const GgufValue* ft = g.find("general.file_type"); ft && ft->asInt())
        add("File type",
            llamaFileTypeName(*ft->asInt()) + " (" + std::to_string(*ft->asInt()) + ")");
    else
        add("File type", "not stated (no general.file_type)");
    // Tensor types by count, most common first.
    std::map<std::string, int> types;
    for (const auto& t : g.tensors) types[std::string(dtypeName(t.dtype))]++;
    std::vector<std::pair<int, std::string>> byCount;
    for (const auto& [k, n] : types) byCount.emplace_back(n, k);
    std::sort(byCount.rbegin(), byCount.rend());
    std::string tt;
    for (const auto& [n, k] : byCount)
        tt += (tt.empty() ? "" : ", ") + k + " ×" + std::to_string(n);
    add("Tensors", std::to_string(g.tensors.size()) + (tt.empty() ? "" : " (" + tt + ")"));
    if (!arch.empty())
        if (const GgufValue* c = g.find(arch + ".context_length"); c && c->asInt())
            add("Context length", std::to_string(*c->asInt()));
    if (auto tm = str("tokenizer.ggml.model"); !tm.empty()) add("Tokenizer model", tm);
    if (auto pre = str("tokenizer.ggml.pre"); !pre.empty()) add("Pre-tokenizer", pre);
    const GgufValue* tokens = g.find("tokenizer.ggml.tokens");
    if (tokens && tokens->isArray()) add("Vocabulary size", std::to_string(tokens->count));
    const char* specials[][2] = {
        {"tokenizer.ggml.bos_token_id", "BOS"},       {"tokenizer.ggml.eos_token_id", "EOS"},
        {"tokenizer.ggml.unknown_token_id", "UNK"},   {"tokenizer.ggml.padding_token_id", "PAD"},
        {"tokenizer.ggml.separator_token_id", "SEP"}, {"tokenizer.ggml.eot_token_id", "EOT"}};
    std::string sp;
    for (const auto& s : specials) {
        const GgufValue* v = g.find(s[0]);
        if (!v || !v->asInt()) continue;
        const int64_t id = *v->asInt();
        std::string text;
        if (tokens && tokens->isArray() && tokens->elemType == GgufType::String && id >= 0 &&
            uint64_t(id) < tokens->count)
            text = " \"" + clip(tokens->strings[size_t(id)], 40) + "\"";
        sp += (sp.empty() ? "" : ", ") + std::string(s[1]) + " " + std::to_string(id) + text;
    }
    if (!sp.empty()) add("Special tokens", sp);
    return md;
}

std::string jsonType(const nlohmann::json& j) {
    switch (j.type()) {
    case nlohmann::json::value_t::object:
        return "json object";
    case nlohmann::json::value_t::array:
        return "json array";
    case nlohmann::json::value_t::string:
        return "string";
    case nlohmann::json::value_t::boolean:
        return "bool";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
        return "int";
    case nlohmann::json::value_t::number_float:
        return "float";
    case nlohmann::json::value_t::null:
        return "null";
    default:
        return "json";
    }
}

std::string readText(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw FormatError(p.string(), "cannot open");
    std::ostringstream o;
    o << in.rdbuf();
    return o.str();
}

ModelMetadata hfMetadata(const std::string& folder) {
    ModelMetadata md;
    md.path = folder;
    md.format = "Hugging Face safetensors";
    const fs::path cfg = fs::path(folder) / "config.json";
    std::error_code ec;
    if (fs::exists(cfg, ec)) {
        const std::string text = readText(cfg);
        const nlohmann::json j = parseJsonText(text, cfg.string());
        md.documents.emplace_back("config.json", j.dump(2));
        if (j.is_object()) {
            for (const auto& [k, v] : j.items()) {
                MetadataEntry e;
                e.key = "config." + k;
                e.type = jsonType(v);
                e.value = clip(v.is_string() ? v.get<std::string>() : v.dump());
                if (v.is_array()) e.count = v.size();
                md.entries.push_back(std::move(e));
            }
            auto s = [&](const char* key) -> std::string {
                if (!j.contains(key)) return {};
                const auto& v = j[key];
                return v.is_string() ? v.get<std::string>() : v.dump();
            };
            if (auto a = s("architectures"); !a.empty())
                md.summary.emplace_back("Architectures", a);
            if (auto a = s("model_type"); !a.empty()) md.summary.emplace_back("Model type", a);
            if (auto a = s("torch_dtype"); !a.empty()) md.summary.emplace_back("torch_dtype", a);
            if (auto a = s("vocab_size"); !a.empty()) md.summary.emplace_back("Vocabulary size", a);
            if (auto a = s("quantization_config"); !a.empty())
                md.summary.emplace_back("Quantization", clip(a, 200));
        }
    }
    const SafetensorsSet st = readSafetensorsFolder(folder);
    std::map<std::string, int> types;
    for (const auto& t : st.tensors) types[std::string(dtypeName(t.dtype))]++;
    std::string tt;
    for (const auto& [k, n] : types) tt += (tt.empty() ? "" : ", ") + k + " ×" + std::to_string(n);
    md.summary.emplace_back("Tensors", std::to_string(st.tensors.size()) + " in " +
                                           std::to_string(st.paths.size()) + " file" +
                                           (st.paths.size() == 1 ? "" : "s") +
                                           (tt.empty() ? "" : " (" + tt + ")"));
    for (const auto& [k, v] : st.metadata) {
        MetadataEntry e;
        e.key = "__metadata__." + k;
        e.type = "string";
        e.value = clip(v);
        md.entries.push_back(std::move(e));
    }
    if (!st.metadata.empty()) {
        nlohmann::json m = nlohmann::json::object();
        for (const auto& [k, v] : st.metadata) m[k] = v;
        md.documents.emplace_back("safetensors __metadata__", m.dump(2));
    }
    for (const char* doc : {"generation_config.json", "tokenizer_config.json"}) {
        const fs::path p = fs::path(folder) / doc;
        if (fs::exists(p, ec)) md.documents.emplace_back(doc, clip(readText(p), 1 << 20));
    }
    return md;
}

ModelMetadata llama2cMetadata(const std::string& path) {
    const Llama2cCheckpoint ck = readLlama2c(path);
    const Llama2cConfig& c = ck.config;
    ModelMetadata md;
    md.path = path;
    md.format = "llama2.c v" + std::to_string(c.version);
    auto add = [&](const char* k, int64_t v) {
        md.entries.push_back({std::string("header.") + k, "int32", std::to_string(v), 0, {}});
    };
    add("dim", c.dim);
    add("hidden_dim", c.hiddenDim);
    add("n_layers", c.nLayers);
    add("n_heads", c.nHeads);
    add("n_kv_heads", c.nKvHeads);
    add("vocab_size", c.vocabSize);
    add("seq_len", c.seqLen);
    md.entries.push_back(
        {"header.shared_classifier", "bool", c.sharedClassifier ? "true" : "false", 0, {}});
    md.summary.emplace_back("Architecture", "llama (llama2.c)");
    md.summary.emplace_back("File type", "ALL_F32");
    md.summary.emplace_back("Vocabulary size", std::to_string(c.vocabSize));
    md.summary.emplace_back("Tensors", std::to_string(ck.tensors.size()));
    return md;
}

} // namespace

std::string llamaFileTypeName(int64_t t) {
    static const char* const kNames[] = {
        "ALL_F32",         "MOSTLY_F16",           "MOSTLY_Q4_0",
        "MOSTLY_Q4_1",     "MOSTLY_Q4_1_SOME_F16", nullptr,
        nullptr,           "MOSTLY_Q8_0",          "MOSTLY_Q5_0",
        "MOSTLY_Q5_1",     "MOSTLY_Q2_K",          "MOSTLY_Q3_K_S",
        "MOSTLY_Q3_K_M",   "MOSTLY_Q3_K_L",        "MOSTLY_Q4_K_S",
        "MOSTLY_Q4_K_M",   "MOSTLY_Q5_K_S",        "MOSTLY_Q5_K_M",
        "MOSTLY_Q6_K",     "MOSTLY_IQ2_XXS",       "MOSTLY_IQ2_XS",
        "MOSTLY_Q2_K_S",   "MOSTLY_IQ3_XS",        "MOSTLY_IQ3_XXS",
        "MOSTLY_IQ1_S",    "MOSTLY_IQ4_NL",        "MOSTLY_IQ3_S",
        "MOSTLY_IQ3_M",    "MOSTLY_IQ2_S",         "MOSTLY_IQ2_M",
        "MOSTLY_IQ4_XS",   "MOSTLY_IQ1_M",         "MOSTLY_BF16",
        "MOSTLY_Q4_0_4_4", "MOSTLY_Q4_0_4_8",      "MOSTLY_Q4_0_8_8",
        "MOSTLY_TQ1_0",    "MOSTLY_TQ2_0"};
    constexpr int64_t n = int64_t(sizeof(kNames) / sizeof(kNames[0]));
    if (t == 1024) return "GUESSED";
    if (t >= 0 && t < n && kNames[t]) return kNames[t];
    return "unknown (" + std::to_string(t) + ")";
}

ModelMetadata readModelMetadata(const std::string& path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) throw FormatError(path, "no such file or folder");
    if (fs::is_directory(path, ec)) return hfMetadata(path);
    char magic[4] = {0, 0, 0, 0};
    {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw FormatError(path, "cannot open");
        in.read(magic, 4);
    }
    if (std::string(magic, 4) == "GGUF") return ggufMetadata(path);
    const fs::path p(path);
    if (p.extension() == ".safetensors" || p.filename() == "config.json")
        return hfMetadata(p.parent_path().string());
    return llama2cMetadata(path);
}

} // namespace lcw
