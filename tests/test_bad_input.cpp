// Malformed, truncated and lying model files: every one must end in a typed lcw error whose
// message names the file and the problem, never in a crash or an out-of-bounds read.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/gguf.h"
#include "core/io/llama2c.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

namespace fs = std::filesystem;

namespace {

// Tiny llama: dim 8, hidden 16, 2 layers, 2 heads, 1 KV head (head dim 4), vocab 16.
constexpr int64_t kDim = 8, kHidden = 16, kLayers = 2, kHeads = 2, kKv = 1, kHd = 4, kVocab = 16;

std::vector<std::pair<std::string, std::vector<int64_t>>> hfTensors() {
    std::vector<std::pair<std::string, std::vector<int64_t>>> t = {
        {"model.embed_tokens.weight", {kVocab, kDim}}, {"model.norm.weight", {kDim}}};
    for (int l = 0; l < kLayers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        t.push_back({p + "input_layernorm.weight", {kDim}});
        t.push_back({p + "post_attention_layernorm.weight", {kDim}});
        t.push_back({p + "self_attn.q_proj.weight", {kHeads * kHd, kDim}});
        t.push_back({p + "self_attn.k_proj.weight", {kKv * kHd, kDim}});
        t.push_back({p + "self_attn.v_proj.weight", {kKv * kHd, kDim}});
        t.push_back({p + "self_attn.o_proj.weight", {kDim, kHeads * kHd}});
        t.push_back({p + "mlp.gate_proj.weight", {kHidden, kDim}});
        t.push_back({p + "mlp.up_proj.weight", {kHidden, kDim}});
        t.push_back({p + "mlp.down_proj.weight", {kDim, kHidden}});
    }
    return t;
}

const char* kConfig = R"({"model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
  "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
  "vocab_size": 16, "tie_word_embeddings": true})";

void fillSmall(size_t i, std::byte* dst, uint64_t n) {
    for (uint64_t k = 0; k < n / 4; ++k) {
        const float v = 0.01f * float((i * 7 + k) % 13) - 0.05f;
        std::memcpy(dst + 4 * k, &v, 4);
    }
}

// Writes a valid tiny HF folder; `mutate` may edit the descriptor list first.
std::string makeHf(const std::string& tag,
                   std::function<void(std::vector<lcw::TensorDesc>&)> mutate = {},
                   const std::string& config = kConfig, lcw::TensorFill fill = fillSmall) {
    const std::string dir = lcwtest::tempDir(tag);
    std::vector<lcw::TensorDesc> d;
    for (auto& [n, s] : hfTensors()) d.push_back({n, lcw::DType::F32, s});
    if (mutate) mutate(d);
    lcw::writeSafetensors(dir + "/model.safetensors", d, fill);
    lcw::writeFileAtomic(dir + "/config.json", config);
    return dir;
}

std::string makeGguf(const std::string& path, const std::string& arch = "llama") {
    using V = lcw::GgufValue;
    std::vector<std::pair<std::string, V>> md = {
        {"general.architecture", V::string(arch)},
        {arch + ".embedding_length", V::u32(kDim)},
        {arch + ".block_count", V::u32(kLayers)},
        {arch + ".feed_forward_length", V::u32(kHidden)},
        {arch + ".attention.head_count", V::u32(kHeads)},
        {arch + ".attention.head_count_kv", V::u32(kKv)},
    };
    std::vector<lcw::TensorDesc> d = {{"token_embd.weight", lcw::DType::F32, {kVocab, kDim}},
                                      {"output_norm.weight", lcw::DType::F32, {kDim}}};
    for (int l = 0; l < kLayers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        d.push_back({p + "attn_norm.weight", lcw::DType::F32, {kDim}});
        d.push_back({p + "ffn_norm.weight", lcw::DType::F32, {kDim}});
        d.push_back({p + "attn_q.weight", lcw::DType::F32, {kHeads * kHd, kDim}});
        d.push_back({p + "attn_k.weight", lcw::DType::F32, {kKv * kHd, kDim}});
        d.push_back({p + "attn_v.weight", lcw::DType::F32, {kKv * kHd, kDim}});
        d.push_back({p + "attn_output.weight", lcw::DType::F32, {kDim, kHeads * kHd}});
        d.push_back({p + "ffn_gate.weight", lcw::DType::F32, {kHidden, kDim}});
        d.push_back({p + "ffn_up.weight", lcw::DType::F32, {kHidden, kDim}});
        d.push_back({p + "ffn_down.weight", lcw::DType::F32, {kDim, kHidden}});
    }
    lcw::writeGguf(path, md, d, fillSmall);
    return path;
}

// llama2.c v0 checkpoint for the tiny shape (seq 4).
std::string makeLlama2c(const std::string& path, int32_t vocabField = int32_t(kVocab)) {
    const int32_t hdr[7] = {int32_t(kDim),
                            int32_t(kHidden),
                            int32_t(kLayers),
                            int32_t(kHeads),
                            int32_t(kKv),
                            vocabField,
                            4};
    lcw::Llama2cConfig c;
    c.dim = hdr[0], c.hiddenDim = hdr[1], c.nLayers = hdr[2], c.nHeads = hdr[3];
    c.nKvHeads = hdr[4], c.vocabSize = std::abs(vocabField), c.seqLen = 4;
    c.sharedClassifier = vocabField > 0;
    const uint64_t n = lcw::llama2cExpectedBytes(c, path);
    std::string bytes(size_t(n), '\0');
    std::memcpy(bytes.data(), hdr, sizeof hdr);
    for (size_t k = 28; k + 4 <= bytes.size(); k += 4) {
        const float v = 0.01f * float(k % 17);
        std::memcpy(bytes.data() + k, &v, 4);
    }
    lcw::writeFileAtomic(path, bytes);
    return path;
}

std::string readAll(const std::string& p) {
    return lcw::readTextFile(p);
}
void writeAll(const std::string& p, const std::string& s) {
    std::ofstream o(p, std::ios::binary | std::ios::trunc);
    o.write(s.data(), std::streamsize(s.size()));
}

template <class T> void putAt(std::string& s, size_t off, T v) {
    std::memcpy(s.data() + off, &v, sizeof v);
}

enum class Kind { Format, Unsupported, Any };

// Runs f; returns "" when it threw the expected type with every phrase in what(), else a
// description of what happened instead.
std::string check(const std::function<void()>& f, Kind kind, std::vector<std::string> phrases) {
    std::string msg, type;
    try {
        f();
        return "no exception";
    } catch (const lcw::FormatError& e) {
        msg = e.what(), type = "FormatError";
    } catch (const lcw::UnsupportedError& e) {
        msg = e.what(), type = "UnsupportedError";
    } catch (const lcw::Error& e) {
        msg = e.what(), type = "Error";
    } catch (const std::exception& e) {
        return std::string("non-lcw exception: ") + e.what();
    }
    if (kind == Kind::Format && type != "FormatError") return type + ": " + msg;
    if (kind == Kind::Unsupported && type != "UnsupportedError") return type + ": " + msg;
    for (const auto& p : phrases)
        if (msg.find(p) == std::string::npos) return "missing '" + p + "' in: " + msg;
    return {};
}

#define EXPECT_ERR(expr, kind, ...)                                                                \
    do {                                                                                           \
        const std::string r_ = check([&] { (void)(expr); }, kind, {__VA_ARGS__});                  \
        QVERIFY2(r_.empty(), r_.c_str());                                                          \
    } while (0)

// GGUF header bytes: magic, version, counts.
std::string ggufHeader(uint32_t version, uint64_t nTensors, uint64_t nKv) {
    std::string s = "GGUF";
    s.append(reinterpret_cast<const char*>(&version), 4);
    s.append(reinterpret_cast<const char*>(&nTensors), 8);
    s.append(reinterpret_cast<const char*>(&nKv), 8);
    return s;
}
template <class T> void app(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void appStr(std::string& s, const std::string& x) {
    app<uint64_t>(s, x.size());
    s += x;
}

} // namespace

class TestBadInput : public QObject {
    Q_OBJECT
private slots:
    void validTinyFilesLoad() {
        // The fixtures themselves are valid, so every failure below is due to the damage.
        const std::string hf = makeHf("ok-hf");
        auto m = lcw::Model::load(hf);
        QCOMPARE(m->spec().dim, kDim);
        QVERIFY(!m->hasTokenizer());
        QVERIFY(!m->warnings().empty());
        const std::string dir = lcwtest::tempDir("ok-other");
        auto g = lcw::Model::load(makeGguf(dir + "/m.gguf"));
        QCOMPARE(g->spec().nLayers, kLayers);
        auto l = lcw::Model::load(makeLlama2c(dir + "/m.bin"));
        QCOMPARE(l->spec().nKvHeads, kKv);
        auto l2 = lcw::Model::load(makeLlama2c(dir + "/u.bin", -int32_t(kVocab)));
        QVERIFY(l2->find("lm_head"));
    }

    // ---------------- safetensors ----------------
    void safetensorsDamage() {
        const std::string dir = makeHf("st");
        const std::string p = dir + "/model.safetensors";
        const std::string good = readAll(p);
        uint64_t hlen;
        std::memcpy(&hlen, good.data(), 8);
        const std::string header = good.substr(8, size_t(hlen));

        writeAll(p, good.substr(0, good.size() - 10));
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "past the end");
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, p, "past the end");

        writeAll(p, good.substr(0, 5));
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "too short");

        std::string s = good;
        putAt<uint64_t>(s, 0, uint64_t(1) << 40);
        writeAll(p, s);
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "header length");

        auto withHeader = [&](std::string h) {
            h.resize(size_t(hlen), ' ');
            writeAll(p, good.substr(0, 8) + h + good.substr(8 + size_t(hlen)));
        };
        withHeader("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "not valid JSON");
        withHeader(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 99999999]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "'a'", "past the end");
        withHeader(R"({"a": {"dtype": "F32", "shape": [10], "data_offsets": [0, 16]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "holds 16 bytes", "need 40");
        withHeader(R"({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "need 8");
        withHeader(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16],
                       "data_offsets": [0, 16]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "overflows");
        withHeader(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 16]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "non-negative");
        withHeader(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "reversed");
        withHeader(R"({"a": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Unsupported, p, "F8_E5M2");
        withHeader(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                       "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "overlap");
        withHeader(R"([1, 2, 3])");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "not a JSON object");
        withHeader(R"({"a": {"dtype": "F32", "shape": [4]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "data_offsets");
        withHeader(
            R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551615]}})");
        EXPECT_ERR(lcw::readSafetensors(p), Kind::Format, p, "past the end");
    }
    void shardedDamage() {
        const std::string dir = lcwtest::tempDir("shards");
        std::vector<lcw::TensorDesc> d;
        for (auto& [n, s] : hfTensors()) d.push_back({n, lcw::DType::F32, s});
        lcw::writeSafetensorsSharded(dir, d, fillSmall, 1024);
        lcw::writeFileAtomic(dir + "/config.json", std::string(kConfig));
        QVERIFY(lcw::Model::load(dir)->spec().dim == kDim);
        const std::string idx = dir + "/model.safetensors.index.json";
        const std::string goodIdx = readAll(idx);

        writeAll(idx, goodIdx.substr(0, goodIdx.size() / 2));
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, idx, "not valid JSON");
        writeAll(idx, R"({"metadata": {}})");
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, idx, "weight_map");
        writeAll(idx, R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})");
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, idx, "invalid shard");

        writeAll(idx, goodIdx);
        std::string shard;
        for (auto& e : fs::directory_iterator(dir))
            if (e.path().filename().string().find("-00002-of-") != std::string::npos)
                shard = e.path().string();
        QVERIFY(!shard.empty());
        fs::remove(shard);
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, idx, "missing", shard);

        // A tensor the index lists in a shard that does not hold it.
        lcw::writeSafetensorsSharded(dir, d, fillSmall, 1024);
        std::string moved = goodIdx;
        const auto pos = moved.find("model-00001-of-");
        moved.replace(moved.find("model-00003-of-"), 15, "model-00001-of-");
        (void)pos;
        writeAll(idx, moved);
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, "not present in this shard");
    }

    // ---------------- config.json / HF folder ----------------
    void configDamage() {
        const std::string dir = makeHf("cfg");
        const std::string cfg = dir + "/config.json";
        writeAll(cfg, "{\"model_type\": \"llama\", ");
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, cfg, "not valid JSON");
        writeAll(cfg, R"({"model_type": "t5", "hidden_size": 8})");
        EXPECT_ERR(lcw::Model::load(dir), Kind::Unsupported, cfg, "t5", "gpt_neox");
        writeAll(cfg, R"({"model_type": "llama", "hidden_size": 8})");
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, cfg, "num_hidden_layers");
        std::string c = kConfig;
        c.replace(c.find("\"vocab_size\": 16"), 16, "\"vocab_size\": 17");
        writeAll(cfg, c);
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, "model.embed_tokens.weight", "[16, 8]",
                   "expected [17, 8]");
        fs::remove(cfg);
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, dir, "config.json");
        EXPECT_ERR(lcw::Model::load(dir + "/nope"), Kind::Format, dir + "/nope", "no such");
    }
    void hfTensorProblems() {
        // missing tensor
        std::string dir = makeHf("missing", [](std::vector<lcw::TensorDesc>& d) {
            std::erase_if(d, [](auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
        });
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, dir, "missing tensor",
                   "model.layers.1.mlp.up_proj.weight");
        // wrong shape
        dir = makeHf("shape", [](std::vector<lcw::TensorDesc>& d) {
            for (auto& t : d)
                if (t.name == "model.layers.0.self_attn.k_proj.weight") t.shape = {8, 8};
        });
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, dir + "/model.safetensors",
                   "model.layers.0.self_attn.k_proj.weight", "[8, 8]", "expected [4, 8]");
        // integer dtype where a weight belongs
        dir = makeHf("dtype", [](std::vector<lcw::TensorDesc>& d) {
            for (auto& t : d)
                if (t.name == "model.norm.weight") t.dtype = lcw::DType::I32;
        });
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, "model.norm.weight", "i32");
        // untied config without lm_head
        std::string c = kConfig;
        c.replace(c.find("true"), 4, "false");
        dir = makeHf("nohead", {}, c);
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, dir, "lm_head");
        // layer beyond the config
        dir = makeHf("extra-layer", [](std::vector<lcw::TensorDesc>& d) {
            d.push_back({"model.layers.5.mlp.up_proj.weight", lcw::DType::F32, {kHidden, kDim}});
        });
        EXPECT_ERR(lcw::Model::load(dir), Kind::Format, "layer 5");
    }
    void missingTokenizer() {
        const std::string dir = makeHf("notok");
        lcw::LoadOptions o;
        o.requireTokenizer = true;
        EXPECT_ERR(lcw::Model::load(dir, o), Kind::Format, dir, "tokenizer");
        const std::string d2 = lcwtest::tempDir("notok2");
        EXPECT_ERR(lcw::Model::load(makeLlama2c(d2 + "/m.bin"), o), Kind::Format, d2 + "/m.bin",
                   "tokenizer");
        EXPECT_ERR(lcw::Model::load(makeGguf(d2 + "/m.gguf"), o), Kind::Format, d2 + "/m.gguf",
                   "tokenizer");
        o.tokenizerPath = d2 + "/absent.bin";
        o.requireTokenizer = false;
        EXPECT_ERR(lcw::Model::load(d2 + "/m.bin", o), Kind::Format, d2 + "/absent.bin",
                   "loading tokenizer");
        // A garbage tokenizer.bin beside the checkpoint is an error when required.
        writeAll(d2 + "/tokenizer.bin", "garbage");
        o = {};
        o.requireTokenizer = true;
        EXPECT_ERR(lcw::Model::load(d2 + "/m.bin", o), Kind::Any, "tokenizer");
        o.requireTokenizer = false;
        auto m = lcw::Model::load(d2 + "/m.bin", o); // ... and a warning otherwise
        QVERIFY(!m->hasTokenizer());
        QVERIFY(!m->warnings().empty());
    }
    void nanWeights() {
        const std::string dir =
            makeHf("nan", {}, kConfig, [](size_t i, std::byte* dst, uint64_t n) {
                fillSmall(i, dst, n);
                if (hfTensors()[i].first == "model.layers.0.self_attn.v_proj.weight") {
                    const float nan = std::nanf("");
                    std::memcpy(dst + 4 * 5, &nan, 4);
                }
            });
        auto m = lcw::Model::load(dir);
        auto r = m->findNonFinite();
        QVERIFY(r.has_value());
        QVERIFY2(r->find(dir + "/model.safetensors") != std::string::npos, r->c_str());
        QVERIFY2(r->find("model.layers.0.self_attn.v_proj.weight") != std::string::npos,
                 r->c_str());
        QVERIFY2(r->find("NaN") != std::string::npos && r->find("element 5") != std::string::npos,
                 r->c_str());
    }

    // ---------------- GGUF ----------------
    void ggufDamage() {
        const std::string dir = lcwtest::tempDir("gguf-bad");
        const std::string p = makeGguf(dir + "/m.gguf");
        const std::string good = readAll(p);

        writeAll(p, good.substr(0, good.size() - 100));
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "past the end");
        writeAll(p, good.substr(0, 200));
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "tensor count 20 is impossible");
        writeAll(p, good.substr(0, 1000));
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "truncated");
        writeAll(p, good.substr(0, 10));
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "truncated");

        std::string s = good;
        putAt<uint64_t>(s, 8, uint64_t(1) << 62);
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "tensor count 4611686018427387904");
        s = good;
        putAt<uint64_t>(s, 16, ~uint64_t(0));
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "metadata count");
        s = good;
        putAt<uint64_t>(s, 24, uint64_t(1) << 63); // first key's length
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "string length 9223372036854775808");
        s = good;
        s[0] = 'X';
        writeAll(p, s);
        EXPECT_ERR(lcw::Model::load(p), Kind::Any, p);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "bad magic");
        s = good;
        putAt<uint32_t>(s, 4, 1);
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Unsupported, p, "version 1");
        putAt<uint32_t>(s, 4, 0x03000000u);
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Unsupported, p, "big-endian");
    }
    void ggufCraftedHeaders() {
        const std::string dir = lcwtest::tempDir("gguf-craft");
        const std::string p = dir + "/c.gguf";
        // huge array
        std::string s = ggufHeader(3, 0, 1);
        appStr(s, "arr");
        app<uint32_t>(s, 9);
        app<uint32_t>(s, 8); // of strings
        app<uint64_t>(s, uint64_t(1) << 60);
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "'arr'", "cannot fit");
        // deeply nested arrays
        s = ggufHeader(3, 0, 1);
        appStr(s, "deep");
        app<uint32_t>(s, 9);
        for (int i = 0; i < 20; ++i) {
            app<uint32_t>(s, 9);
            app<uint64_t>(s, 1);
        }
        s.append(64, '\0');
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "nested too deeply");
        // unknown value type
        s = ggufHeader(3, 0, 1);
        appStr(s, "k");
        app<uint32_t>(s, 77);
        s.append(16, '\0');
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "unknown type 77");
        // alignment of the wrong type / not a power of two
        s = ggufHeader(3, 0, 1);
        appStr(s, "general.alignment");
        app<uint32_t>(s, 5);
        app<int32_t>(s, 32);
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "general.alignment");
        s = ggufHeader(3, 0, 1);
        appStr(s, "general.alignment");
        app<uint32_t>(s, 4);
        app<uint32_t>(s, 48);
        writeAll(p, s);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "power of two");

        auto tensorFile = [&](uint32_t nd, std::vector<int64_t> ne, uint32_t type, uint64_t off,
                              size_t dataBytes) {
            std::string t = ggufHeader(3, 1, 0);
            appStr(t, "w");
            app<uint32_t>(t, nd);
            for (auto v : ne) app<int64_t>(t, v);
            app<uint32_t>(t, type);
            app<uint64_t>(t, off);
            t.append((32 - t.size() % 32) % 32, '\0');
            t.append(dataBytes, '\0');
            writeAll(p, t);
        };
        tensorFile(5, {1, 1, 1, 1, 1}, 0, 0, 4);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "'w'", "5 dimensions");
        tensorFile(2, {4, 4}, 99, 0, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "unknown ggml type 99");
        tensorFile(2, {256, 1}, 16, 0, 66);
        EXPECT_ERR(lcw::readGguf(p), Kind::Unsupported, p, "iq2_xxs");
        tensorFile(2, {31, 2}, 8, 0, 200);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "not a multiple", "q8_0");
        tensorFile(2, {4, 4}, 0, 7, 128);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "alignment");
        tensorFile(2, {4, 4}, 0, 32, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "'w'", "past the end");
        tensorFile(2, {int64_t(1) << 40, int64_t(1) << 40}, 0, 0, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "overflows");
        // 2^62 elements: refused by the element limit (2^40) before its byte size is computed
        tensorFile(2, {int64_t(1) << 31, int64_t(1) << 31}, 0, 0, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "'w'", "more than the limit");
        tensorFile(2, {int64_t(1) << 20, int64_t(1) << 20}, 0, 0, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "past the end");
        tensorFile(2, {-4, 4}, 0, 0, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "negative");
        tensorFile(1, {4}, 0, ~uint64_t(0) - 31, 64);
        EXPECT_ERR(lcw::readGguf(p), Kind::Format, p, "past the end");
    }
    void ggufModelProblems() {
        const std::string dir = lcwtest::tempDir("gguf-model");
        const std::string p = makeGguf(dir + "/m.gguf", "rwkv6");
        EXPECT_ERR(lcw::Model::load(p), Kind::Unsupported, p, "rwkv6", "gptneox");
        // missing required key
        using V = lcw::GgufValue;
        auto g = lcw::readGguf(makeGguf(dir + "/ok.gguf"));
        auto md = g.metadata;
        std::erase_if(md, [](auto& kv) { return kv.first == "llama.block_count"; });
        lcw::writeGguf(dir + "/nob.gguf", md, g.tensors);
        EXPECT_ERR(lcw::Model::load(dir + "/nob.gguf"), Kind::Format, dir + "/nob.gguf",
                   "llama.block_count");
        // wrong value type for a key
        md = g.metadata;
        for (auto& kv : md)
            if (kv.first == "llama.embedding_length") kv.second = V::string("eight");
        lcw::writeGguf(dir + "/str.gguf", md, g.tensors);
        EXPECT_ERR(lcw::Model::load(dir + "/str.gguf"), Kind::Format, dir + "/str.gguf",
                   "llama.embedding_length", "integer");
        // shape lies relative to the metadata
        md = g.metadata;
        for (auto& kv : md)
            if (kv.first == "llama.feed_forward_length") kv.second = V::u32(24);
        lcw::writeGguf(dir + "/ffn.gguf", md, g.tensors);
        EXPECT_ERR(lcw::Model::load(dir + "/ffn.gguf"), Kind::Format, dir + "/ffn.gguf",
                   "blk.0.ffn_gate.weight", "expected [24, 8]");
        // qwen2 without biases
        const std::string q = makeGguf(dir + "/q.gguf", "qwen2");
        EXPECT_ERR(lcw::Model::load(q), Kind::Format, q, "bias");
        // a broken tokenizer array
        md = g.metadata;
        md.push_back({"tokenizer.ggml.tokens", V::i32Array({1, 2, 3})});
        lcw::writeGguf(dir + "/tok.gguf", md, g.tensors);
        EXPECT_ERR(lcw::Model::load(dir + "/tok.gguf"), Kind::Format, dir + "/tok.gguf",
                   "tokenizer.ggml.tokens");
    }

    // ---------------- llama2.c ----------------
    void llama2cDamage() {
        const std::string dir = lcwtest::tempDir("l2c");
        const std::string p = makeLlama2c(dir + "/m.bin");
        const std::string good = readAll(p);
        writeAll(p, good.substr(0, good.size() - 4));
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "implies", "truncated",
                   std::to_string(good.size()));
        writeAll(p, good + "xxxx");
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "trailing");
        writeAll(p, good.substr(0, 20));
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "too short");
        std::string s = good;
        putAt<int32_t>(s, 0, -8);
        writeAll(p, s);
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "dim", "positive");
        s = good;
        putAt<int32_t>(s, 12, 3); // heads do not divide dim
        writeAll(p, s);
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "multiple of n_heads");
        s = good;
        for (int k = 0; k < 7; ++k) putAt<int32_t>(s, size_t(4 * k), INT32_MAX);
        putAt<int32_t>(s, 12, 1);
        putAt<int32_t>(s, 16, 1);
        writeAll(p, s);
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p);
        s = good;
        putAt<int32_t>(s, 20, INT32_MIN);
        writeAll(p, s);
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p, "vocab_size");
        // text file handed over as a checkpoint
        writeAll(p, "hello, this is not a model at all, just some text.\n");
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p);
        writeAll(p, "");
        EXPECT_ERR(lcw::Model::load(p), Kind::Format, p);
    }
};

QTEST_GUILESS_MAIN(TestBadInput)
#include "test_bad_input.moc"
