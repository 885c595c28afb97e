// Hostile sizes (issue #22, items 3 and 6): files whose fields claim 2^62-element tensors,
// 2^40-entry vocabularies, absurd dimensions or token ids far beyond the vocabulary. Each must be
// refused fast, before any allocation sized by the claim, with a FormatError whose message names
// the file and the field; lcw-cli under `ulimit -v 4G` exits 1 with such a message (never a
// signal, never "out of memory").
#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/common/npy.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/io/gguf.h"
#include "core/io/hf_config.h"
#include "core/io/llama2c.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QElapsedTimer>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

namespace fs = std::filesystem;

namespace {

constexpr int64_t k2p62 = int64_t(1) << 62;
/// A hostile file must be refused quickly (no big allocation or long loop before the check).
constexpr qint64 kFastMs = 2000;

/// Little-endian byte builder for hand-made binary files.
struct Bytes {
    std::string s;
    template <class T> Bytes& put(T v) {
        s.append(reinterpret_cast<const char*>(&v), sizeof v);
        return *this;
    }
    Bytes& str(const std::string& v) {
        put<uint64_t>(v.size());
        s += v;
        return *this;
    }
};

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

/// Runs fn, which must throw lcw::FormatError quickly; the message must name `file` and
/// contain every one of `needles`. Returns the message.
std::string expectFormatError(const std::function<void()>& fn, const std::string& file,
                              std::initializer_list<const char*> needles) {
    QElapsedTimer timer;
    timer.start();
    std::string msg;
    try {
        fn();
    } catch (const lcw::FormatError& e) {
        msg = e.what();
    } catch (const std::exception& e) {
        qWarning("wrong exception type: %s", e.what());
        return "<wrong type>";
    }
    const qint64 ms = timer.elapsed();
    if (msg.empty()) {
        qWarning("no error for %s", file.c_str());
        return "<no error>";
    }
    if (msg.find(file) == std::string::npos)
        qWarning("message does not name the file: %s", msg.c_str());
    for (const char* n : needles)
        if (msg.find(n) == std::string::npos) qWarning("message lacks \"%s\": %s", n, msg.c_str());
    if (ms > kFastMs)
        qWarning("refusing took %lld ms: %s", static_cast<long long>(ms), msg.c_str());
    bool ok = msg.find(file) != std::string::npos && ms <= kFastMs;
    for (const char* n : needles) ok = ok && msg.find(n) != std::string::npos;
    return ok ? msg : "<bad message> " + msg;
}

#define EXPECT_FORMAT(expr, file, ...)                                                             \
    do {                                                                                           \
        const std::string m_ = expectFormatError([&] { (void)(expr); }, file, {__VA_ARGS__});      \
        QVERIFY2(m_.rfind("<", 0) != 0, m_.c_str());                                               \
    } while (0)

/// A GGUF holding one tensor info with the given dims (ggml order) and type, no metadata.
std::string ggufWithTensor(const std::string& path, std::vector<int64_t> dims, uint32_t type) {
    Bytes b;
    b.s = "GGUF";
    b.put<uint32_t>(3).put<uint64_t>(1).put<uint64_t>(0);
    b.str("x").put<uint32_t>(uint32_t(dims.size()));
    for (int64_t d : dims) b.put<int64_t>(d);
    b.put<uint32_t>(type).put<uint64_t>(0);
    b.s.append(64, '\0');
    writeFile(path, b.s);
    return path;
}

/// A safetensors file whose JSON header is `header` followed by `data` bytes.
std::string safetensorsWith(const std::string& path, const std::string& header, size_t data) {
    Bytes b;
    b.put<uint64_t>(header.size());
    b.s += header;
    b.s.append(data, '\0');
    writeFile(path, b.s);
    return path;
}

const char* kMamba = R"("model_type": "mamba", "hidden_size": 8, "num_hidden_layers": 2)";

std::string configFile(const std::string& dir, const std::string& body) {
    fs::create_directories(dir);
    const std::string p = dir + "/config.json";
    writeFile(p, "{" + body + "}");
    return p;
}

std::string tokenizerJson(const std::string& path, const std::string& vocab,
                          const std::string& added) {
    writeFile(path, R"({"model": {"type": "BPE", "vocab": {)" + vocab +
                        R"(}, "merges": []}, "added_tokens": [)" + added + "]}");
    return path;
}

/// A GGUF model header with the given metadata (no tensors are needed to reach the checks).
std::string ggufModel(const std::string& path, const std::string& arch,
                      std::vector<std::pair<std::string, lcw::GgufValue>> extra) {
    using V = lcw::GgufValue;
    std::vector<std::pair<std::string, V>> md = {{"general.architecture", V::string(arch)}};
    for (auto& e : extra) md.push_back({arch + "." + e.first, e.second});
    lcw::writeGguf(path, md, std::vector<lcw::TensorView>{});
    return path;
}

/// Runs lcw-cli with args under `ulimit -v 4 GiB`.
lcwtest::CliRun runCliLimited(const QStringList& args) {
    QStringList all = {"-c", "ulimit -v 4194304 && exec \"$0\" \"$@\"",
                       QString::fromUtf8(LCW_CLI_PATH)};
    all += args;
    return lcwtest::runProgram("bash", all, 30000);
}

} // namespace

class TestHostileSizes : public QObject {
    Q_OBJECT

private slots:
    void checkedHelpers() {
        using namespace lcw::checked;
        QCOMPARE(numel({2, 3, 4}, "f", "t"), int64_t(24));
        QCOMPARE(numel({}, "f", "t"), int64_t(1));
        QCOMPARE(numel({k2p62, k2p62, 0}, "f", "t"), int64_t(0)); // a zero dim wins
        EXPECT_FORMAT(numel({k2p62, 4}, "f.bin", "tensor 'w'"), "f.bin", "tensor 'w'",
                      "more elements than fit in 64 bits");
        EXPECT_FORMAT(numel({int64_t(1) << 21, int64_t(1) << 20}, "f.bin", "tensor 'w'"), "f.bin",
                      "tensor 'w'", "2199023255552 elements, more than the limit");
        EXPECT_FORMAT(numel({3, -1}, "f.bin", "tensor 'w'"), "f.bin", "negative");
        EXPECT_FORMAT(mul(k2p62, 4, "c.json", "expand × hidden_size"), "c.json",
                      "expand × hidden_size overflows");
        EXPECT_FORMAT(add(INT64_MAX, 1, "c.json", "a + b"), "c.json", "a + b overflows");
        EXPECT_FORMAT(mul(-2, 4, "c.json", "x × y"), "c.json", "negative");
        QCOMPARE(tokenId(5, 10, "t.json", "id"), int32_t(5));
        EXPECT_FORMAT(tokenId(100000000, 10, "t.json", "added_tokens id"), "t.json",
                      "added_tokens id 100000000 is out of range");
    }

    void ggufTensorOf2p62Elements() {
        const std::string dir = lcwtest::tempDir("hostile-gguf");
        // f16 [2^31, 2^31]: 2^62 elements (the old reader only found the data missing)
        const auto a = ggufWithTensor(dir + "/a.gguf", {int64_t(1) << 31, int64_t(1) << 31}, 1);
        EXPECT_FORMAT(lcw::readGguf(a), a, "tensor 'x'", "4611686018427387904 elements",
                      "more than the limit");
        // four dims whose product overflows 64 bits
        const auto b = ggufWithTensor(dir + "/b.gguf", {1 << 30, 1 << 30, 1 << 30, 16}, 0);
        EXPECT_FORMAT(lcw::readGguf(b), b, "tensor 'x'", "more elements than fit in 64 bits");
        // through the model loader too
        EXPECT_FORMAT(lcw::Model::load(a), a, "tensor 'x'", "more than the limit");
    }

    void ggufModelWithAbsurdMetadata() {
        using V = lcw::GgufValue;
        const std::string dir = lcwtest::tempDir("hostile-ggufmeta");
        // Gemma 2 sizes its sliding-layer table by block_count: 2^39 layers were a 64 GiB table.
        const auto p = ggufModel(dir + "/layers.gguf", "gemma2",
                                 {{"embedding_length", V::u64(8)},
                                  {"block_count", V::u64(uint64_t(1) << 39)},
                                  {"feed_forward_length", V::u64(16)},
                                  {"attention.head_count", V::u64(2)}});
        EXPECT_FORMAT(lcw::Model::load(p), p, "gemma2.block_count", "more than the limit");
        // widths within int32 whose products describe a 2^62-element MLP
        const auto q = ggufModel(dir + "/widths.gguf", "llama",
                                 {{"embedding_length", V::u64(uint64_t(1) << 30)},
                                  {"block_count", V::u64(2)},
                                  {"feed_forward_length", V::u64(uint64_t(1) << 30)},
                                  {"attention.head_count", V::u64(2)}});
        EXPECT_FORMAT(lcw::Model::load(q), q, "MLP", "more than the limit");
        const auto r = ggufModel(dir + "/expert.gguf", "llama",
                                 {{"embedding_length", V::u64(8)},
                                  {"block_count", V::u64(2)},
                                  {"feed_forward_length", V::u64(16)},
                                  {"attention.head_count", V::u64(2)},
                                  {"expert_count", V::u64(uint64_t(1) << 40)}});
        EXPECT_FORMAT(lcw::Model::load(r), r, "llama.expert_count", "more than the limit");
        // Floats a JSON config cannot hold: NaN / Inf are refused where they are read, naming
        // the key (an infinite norm epsilon used to run, turning every hidden state into zeros).
        const std::vector<std::pair<std::string, V>> dims = {{"embedding_length", V::u64(8)},
                                                             {"block_count", V::u64(2)},
                                                             {"feed_forward_length", V::u64(16)},
                                                             {"attention.head_count", V::u64(2)}};
        auto with = [&](const std::string& name, const std::string& key, V v) {
            auto md = dims;
            md.push_back({key, v});
            return ggufModel(dir + "/" + name, "llama", md);
        };
        const float inf = std::numeric_limits<float>::infinity();
        const auto e1 = with("eps-inf.gguf", "attention.layer_norm_rms_epsilon", V::f32(inf));
        EXPECT_FORMAT(lcw::Model::load(e1), e1, "llama.attention.layer_norm_rms_epsilon",
                      "not a finite number");
        const auto e2 = with("eps-2.gguf", "attention.layer_norm_rms_epsilon", V::f32(2.0f));
        EXPECT_FORMAT(lcw::Model::load(e2), e2, "llama.attention.layer_norm_rms_epsilon",
                      "not in (0, 1)");
        const auto t = with("theta-nan.gguf", "rope.freq_base", V::f32(std::nanf("")));
        EXPECT_FORMAT(lcw::Model::load(t), t, "llama.rope.freq_base", "not a finite number");
    }

    void safetensorsHugeShapeAndOffsets() {
        const std::string dir = lcwtest::tempDir("hostile-st");
        const auto a = safetensorsWith(
            dir + "/a.safetensors",
            R"({"w": {"dtype": "F32", "shape": [1073741824, 1073741824], "data_offsets": [0, 4]}})",
            4);
        EXPECT_FORMAT(lcw::readSafetensors(a), a, "tensor 'w'", "more than the limit");
        const auto b = safetensorsWith(
            dir + "/b.safetensors",
            R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 4]}})",
            4);
        EXPECT_FORMAT(lcw::readSafetensors(b), b, "tensor 'w'", "more elements than fit");
        const auto c = safetensorsWith(
            dir + "/c.safetensors",
            R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 9223372036854775807]}})",
            4);
        EXPECT_FORMAT(lcw::readSafetensors(c), c, "tensor 'w'", "run past the end");
        const auto d = safetensorsWith(dir + "/d.safetensors", "{}", 0);
        Bytes h;
        h.put<uint64_t>(uint64_t(1) << 62);
        writeFile(d, h.s + "{}");
        EXPECT_FORMAT(lcw::readSafetensors(d), d, "header length 4611686018427387904");
    }

    void configHugeIntegers() {
        const std::string dir = lcwtest::tempDir("hostile-config");
        // Mamba expand of 2^62 (the old parser multiplied it by hidden_size: signed overflow)
        const auto a =
            configFile(dir + "/a", std::string(kMamba) + R"(, "vocab_size": 16, "expand": )" +
                                       std::to_string(k2p62));
        EXPECT_FORMAT(lcw::readHfConfig(a), a, "\"expand\" is 4611686018427387904",
                      "more than the limit");
        // in range each, but expand × hidden_size makes a 2^49-element in_proj
        const auto b = configFile(dir + "/b", R"("model_type": "mamba", "hidden_size": 65536,
            "num_hidden_layers": 2, "vocab_size": 16, "expand": 65536)");
        EXPECT_FORMAT(lcw::readHfConfig(b), b, "in_proj", "more than the limit");
        // a 2^40-entry vocabulary
        const auto c =
            configFile(dir + "/c", std::string(kMamba) + R"(, "vocab_size": 1099511627776)");
        EXPECT_FORMAT(lcw::readHfConfig(c), c, "\"vocab_size\" is 1099511627776",
                      "more than the limit");
        // 2^40 layers (per-layer tables are sized by it)
        const auto d = configFile(dir + "/d", R"("model_type": "qwen2", "hidden_size": 8,
            "num_hidden_layers": 1099511627776, "num_attention_heads": 2, "intermediate_size": 16,
            "vocab_size": 16, "use_sliding_window": true, "sliding_window": 4)");
        EXPECT_FORMAT(lcw::readHfConfig(d), d, "\"num_hidden_layers\"", "more than the limit");
        // intermediate size × hidden size beyond 2^40 elements
        const auto e = configFile(dir + "/e", R"("model_type": "llama", "hidden_size": 1048576,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 2097152,
            "vocab_size": 16)");
        EXPECT_FORMAT(lcw::readHfConfig(e), e, "MLP", "more than the limit");
        // bloom's 4 × hidden_size and gpt2's n_inner default stay checked
        const auto f = configFile(dir + "/f", R"("model_type": "gpt2", "n_embd": 2147483646,
            "n_layer": 2, "n_head": 2, "vocab_size": 16)");
        EXPECT_FORMAT(lcw::readHfConfig(f), f, "MLP", "limit");
        // negative where meaningless
        const auto g =
            configFile(dir + "/g", std::string(kMamba) + R"(, "vocab_size": 16, "expand": -3)");
        EXPECT_FORMAT(lcw::readHfConfig(g), g, "\"expand\" must be positive");
        // through the model loader: the config is refused before any tensor is looked at
        EXPECT_FORMAT(lcw::Model::load(dir + "/c"), c, "vocab_size");
    }

    void configImplyingBillionsOfTensors() {
        // StableLM's per-head q/k norms: 100000 layers × 100000 heads named 10^10 tensors
        // before the first missing one was reported.
        const std::string dir = lcwtest::tempDir("hostile-names");
        configFile(dir, R"("model_type": "stablelm", "hidden_size": 200000,
            "num_hidden_layers": 100000, "num_attention_heads": 100000, "intermediate_size": 2,
            "vocab_size": 16, "qk_layernorm": true)");
        safetensorsWith(dir + "/model.safetensors", "{}", 0);
        EXPECT_FORMAT(lcw::Model::load(dir), dir, "implies at least 20000100000 tensors",
                      "hold only 0");
    }

    void tokenizerIdsFarBeyondTheVocabulary() {
        const std::string dir = lcwtest::tempDir("hostile-tok");
        // one added token with id 10^8: the old loader built a 10^8-entry table (3.2 GB, 15 s)
        const auto a = tokenizerJson(dir + "/a.json", R"("a": 0, "b": 1)",
                                     R"({"id": 100000000, "content": "<x>", "special": true})");
        EXPECT_FORMAT(lcw::Tokenizer::fromHfJson(a), a, "added_tokens id of \"<x>\"",
                      "100000000 is out of range");
        // a vocabulary id of 10^8 - 1 in a two-token vocabulary
        const auto b = tokenizerJson(dir + "/b.json", R"("a": 0, "b": 99999999)", "");
        EXPECT_FORMAT(lcw::Tokenizer::fromHfJson(b), b, "model.vocab id of \"b\"",
                      "99999999 is out of range");
        // ids with a modest gap (a padded vocabulary) still load
        const auto c = tokenizerJson(dir + "/c.json", R"("a": 0, "b": 1)",
                                     R"({"id": 1000, "content": "<pad>", "special": true})");
        auto t = lcw::Tokenizer::fromHfJson(c);
        QVERIFY(t);
        QCOMPARE(t->vocabSize(), int32_t(1001));
        // a post-processor naming an id outside the table
        writeFile(dir + "/d.json",
                  R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                      "post_processor": {"type": "BertProcessing", "cls": ["a", 5000000],
                                         "sep": ["a", 0]}})");
        EXPECT_FORMAT(lcw::Tokenizer::fromHfJson(dir + "/d.json"), dir + "/d.json",
                      "post_processor token id 5000000");
        // llama2.c tokenizer: a 2^31 - 1 vocabulary (from a checkpoint header) for a tiny file
        Bytes l;
        l.put<int32_t>(8).put<float>(0.0f).put<int32_t>(1);
        l.s += "a";
        writeFile(dir + "/tok.bin", l.s);
        EXPECT_FORMAT(lcw::Tokenizer::fromLlama2c(dir + "/tok.bin", INT32_MAX), dir + "/tok.bin",
                      "vocabulary of 2147483647 tokens");
    }

    void manyLiteralTokensBuildInLinearTime() {
        // 100000 control tokens sharing a first byte: each used to re-sort the whole bucket
        // (quadratic: minutes); now one sort after the last token.
        lcw::GgufVocab v;
        v.model = "gpt2";
        const int n = 100000;
        for (int i = 0; i < n; ++i) v.tokens.push_back("<t" + std::to_string(i) + ">");
        v.tokens.push_back("a");
        v.tokenTypes.assign(size_t(n), lcw::kGgufTokenControl);
        v.tokenTypes.push_back(lcw::kGgufTokenNormal);
        QElapsedTimer timer;
        timer.start();
        auto t = lcw::Tokenizer::fromGguf(v, "many.gguf");
        QVERIFY2(timer.elapsed() < 5000, qPrintable(QString::number(timer.elapsed()) + " ms"));
        // the longest literal wins: "<t12345>" is one token, not "<t1" + ...
        const auto ids = t->encode("<t12345><t7>", false, true);
        QCOMPARE(ids, (std::vector<int32_t>{12345, 7}));
        // a duplicate text keeps its first id
        v.tokens[5] = "<t3>";
        auto u = lcw::Tokenizer::fromGguf(v, "dup.gguf");
        QCOMPARE(u->encode("<t3>", false, true), (std::vector<int32_t>{3}));
    }

    void llama2cAbsurdHeader() {
        const std::string dir = lcwtest::tempDir("hostile-l2c");
        const int32_t hdr[7] = {1 << 30, 1 << 30, 1 << 30, 1, 1, 1 << 30, 1 << 30};
        Bytes b;
        for (int32_t v : hdr) b.put<int32_t>(v);
        b.s.append(64, '\0');
        const std::string p = dir + "/absurd.bin";
        writeFile(p, b.s);
        EXPECT_FORMAT(lcw::readLlama2c(p), p, "weight count implied by the header dimensions",
                      "overflows");
        const int32_t big[7] = {1 << 20, 1 << 20, 1000, 1, 1, 1 << 20, 16};
        Bytes c;
        for (int32_t v : big) c.put<int32_t>(v);
        const std::string q = dir + "/big.bin";
        writeFile(q, c.s);
        EXPECT_FORMAT(lcw::readLlama2c(q), q, "implies", "truncated");
    }

    void npyHugeShape() {
        const std::string dir = lcwtest::tempDir("hostile-npy");
        auto npy = [&](const std::string& name, const std::string& shape) {
            std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
            while ((10 + h.size() + 1) % 64 != 0) h += ' ';
            h += '\n';
            std::string out = "\x93NUMPY";
            out += char(1);
            out += char(0);
            out += char(h.size() & 0xff);
            out += char((h.size() >> 8) & 0xff);
            out += h;
            out.append(16, '\0');
            writeFile(dir + "/" + name, out);
            return dir + "/" + name;
        };
        const auto a = npy("a.npy", "1099511627776, 1099511627776");
        EXPECT_FORMAT(lcw::readNpy(a), a, "npy header shape", "more elements than fit");
        const auto b = npy("b.npy", "2147483648, 2048");
        EXPECT_FORMAT(lcw::readNpy(b), b, "npy header shape", "more than the limit");
        // 20 digits: std::stoll's out_of_range used to escape as a foreign exception
        const auto c = npy("c.npy", "99999999999999999999,");
        EXPECT_FORMAT(lcw::readNpy(c), c, "99999999999999999999", "too large");
        // in the limits but larger than the file
        const auto d = npy("d.npy", "1024, 1024");
        EXPECT_FORMAT(lcw::readNpy(d), d, "shorter than its shape");
    }

    void overlayTensorOf2p62Elements() {
        auto base = lcw::Model::load(lcwtest::demoModelPath());
        lcw::NullProgress np;
        auto res = lcw::compress::compress(*base, lcw::compress::findPreset("W8A16").recipe, np);
        QVERIFY(res.model);
        const std::string dir = lcwtest::tempDir("hostile-overlay") + "/ov";
        res.model->save(dir);
        const std::string jpath = dir + "/overlay.json";
        nlohmann::json j = nlohmann::json::parse(lcw::readTextFile(jpath));
        bool edited = false;
        for (auto& t : j["tensors"])
            if (!t.value("float", false) && !edited) {
                t["shape"] = {k2p62, 4};
                edited = true;
            }
        QVERIFY(edited);
        writeFile(jpath, j.dump());
        EXPECT_FORMAT(lcw::compress::CompressedModel::load(dir, *base), jpath,
                      "more elements than fit in 64 bits");
        for (auto& t : j["tensors"])
            if (t["shape"][0] == k2p62) t["shape"] = {int64_t(1) << 30, int64_t(1) << 30};
        writeFile(jpath, j.dump());
        EXPECT_FORMAT(lcw::compress::CompressedModel::load(dir, *base), jpath,
                      "1152921504606846976 elements", "more than the limit");
    }

    void cliUnderAddressSpaceLimit() {
#if defined(__SANITIZE_ADDRESS__)
        QSKIP("AddressSanitizer cannot run under ulimit -v (its shadow memory needs terabytes of "
              "address space)");
#endif
        using V = lcw::GgufValue;
        const std::string dir = lcwtest::tempDir("hostile-cli");
        struct Case {
            QStringList args;
            std::string names; ///< the file the message must name
            const char* field; ///< and the field
        };
        std::vector<Case> cases;
        const auto g = ggufWithTensor(dir + "/t.gguf", {int64_t(1) << 31, int64_t(1) << 31}, 1);
        cases.push_back({{"info", QString::fromStdString(g)}, g, "tensor 'x'"});
        const auto gl = ggufModel(dir + "/layers.gguf", "gemma2",
                                  {{"embedding_length", V::u64(8)},
                                   {"block_count", V::u64(uint64_t(1) << 39)},
                                   {"feed_forward_length", V::u64(16)},
                                   {"attention.head_count", V::u64(2)}});
        cases.push_back({{"info", QString::fromStdString(gl)}, gl, "block_count"});
        const auto c =
            configFile(dir + "/vocab", std::string(kMamba) + R"(, "vocab_size": 1099511627776)");
        cases.push_back({{"info", QString::fromStdString(dir + "/vocab")}, c, "vocab_size"});
        const auto e =
            configFile(dir + "/expand", std::string(kMamba) + R"(, "vocab_size": 16, "expand": )" +
                                            std::to_string(k2p62));
        cases.push_back({{"info", QString::fromStdString(dir + "/expand")}, e, "expand"});
        const auto t = tokenizerJson(dir + "/tokenizer.json", R"("a": 0, "b": 1)",
                                     R"({"id": 100000000, "content": "<x>", "special": true})");
        cases.push_back({{"info", QString::fromStdString(lcwtest::demoModelPath()), "--tokenizer",
                          QString::fromStdString(t)},
                         t,
                         "added_tokens id"});
        fs::create_directories(dir + "/st");
        safetensorsWith(
            dir + "/st/model.safetensors",
            R"({"w": {"dtype": "F32", "shape": [1073741824, 1073741824], "data_offsets": [0, 4]}})",
            4);
        configFile(dir + "/st", R"("model_type": "llama", "hidden_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16,
            "vocab_size": 16)");
        cases.push_back({{"info", QString::fromStdString(dir + "/st")},
                         dir + "/st/model.safetensors",
                         "tensor 'w'"});
        Bytes l2c;
        for (int32_t v : {1 << 30, 1 << 30, 1 << 30, 1, 1, 1 << 30, 1 << 30}) l2c.put<int32_t>(v);
        l2c.s.append(64, '\0');
        writeFile(dir + "/absurd.bin", l2c.s);
        cases.push_back({{"info", QString::fromStdString(dir + "/absurd.bin")},
                         dir + "/absurd.bin",
                         "header dimensions"});
        for (const auto& k : cases) {
            QElapsedTimer timer;
            timer.start();
            const auto r = runCliLimited(k.args);
            const std::string err = r.err.toStdString();
            const std::string what = k.args.join(' ').toStdString() + " → code " +
                                     std::to_string(r.code) + ", stderr: " + err;
            QVERIFY2(r.code == 1, what.c_str());
            QVERIFY2(err.find(k.names) != std::string::npos, what.c_str());
            QVERIFY2(err.find(k.field) != std::string::npos, what.c_str());
            QVERIFY2(err.find("out of memory") == std::string::npos, what.c_str());
            QVERIFY2(timer.elapsed() < 10000, what.c_str());
        }
    }
};

QTEST_GUILESS_MAIN(TestHostileSizes)
#include "test_hostile_sizes.moc"
