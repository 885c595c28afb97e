// Tests of core/tokenizer: HF tokenizer.json (SentencePiece-style and byte-level BPE), llama2.c
// tokenizer.bin and GGUF vocabularies against reference ids (transformers / llama.cpp, in
// shared/reference and the tiny-random models), the split regexes, round trips and errors.
// Expected ids that are written out below came from Hugging Face tokenizers 0.23.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/tokenizer/pretokenize.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/unicode.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

using json = nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

const char* kStoriesHf = "models/stories260K/hf/tokenizer.json";
const char* kStoriesHfConfig = "models/stories260K/hf/tokenizer_config.json";
const char* kStoriesBin = "models/stories260K/llama2c/tok512.bin";
const char* kStoriesRef = "reference/stories260K.json";
const char* kGpt2Tiny = "models/tiny-random/gpt2/model/tokenizer.json";

json readJson(const std::string& path) {
    return json::parse(lcw::readTextFile(path));
}

std::unique_ptr<lcw::Tokenizer> storiesHf() {
    return lcw::Tokenizer::fromHfJson(lcwtest::sharedPath(kStoriesHf),
                                      lcwtest::sharedPath(kStoriesHfConfig));
}

/// A GgufVocab as llama.cpp's llama2.c converter makes it from tokenizer.bin: ids 0/1/2 are
/// <unk>/<s>/</s>, "<0xNN>" are byte tokens (type 6), spaces are escaped to "▁".
lcw::GgufVocab ggufFromLlama2cBin(const std::string& path, int32_t n) {
    const std::string bytes = lcw::readTextFile(path);
    lcw::GgufVocab v;
    v.model = "llama";
    size_t off = 4;
    for (int32_t i = 0; i < n; ++i) {
        float score;
        int32_t len;
        std::memcpy(&score, bytes.data() + off, 4);
        std::memcpy(&len, bytes.data() + off + 4, 4);
        std::string text = bytes.substr(off + 8, size_t(len));
        off += 8 + size_t(len);
        int32_t type = 1;
        if (i == 0)
            text = "<unk>", type = 2;
        else if (i == 1)
            text = "<s>", type = 3;
        else if (i == 2)
            text = "</s>", type = 3;
        else if (text.size() == 6 && text.rfind("<0x", 0) == 0 && text[5] == '>')
            type = 6;
        std::string escaped;
        for (char c : text) escaped += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
        v.tokens.push_back(escaped);
        v.scores.push_back(score);
        v.tokenTypes.push_back(type);
    }
    v.unkId = 0;
    v.bosId = 1;
    v.eosId = 2;
    return v;
}

/// A byte-level GgufVocab (model gpt2) from an HF tokenizer.json, as convert_hf_to_gguf does.
lcw::GgufVocab ggufFromHfByteLevel(const std::string& path, const std::string& pre) {
    const json doc = readJson(path);
    lcw::GgufVocab v;
    v.model = "gpt2";
    v.pre = pre;
    const json& vocab = doc["model"]["vocab"];
    v.tokens.resize(vocab.size());
    v.tokenTypes.assign(vocab.size(), 1);
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
        v.tokens[it.value().get<size_t>()] = it.key();
    for (const json& a : doc["added_tokens"])
        v.tokenTypes[a["id"].get<size_t>()] = a["special"].get<bool>() ? 3 : 4;
    for (const json& m : doc["model"]["merges"])
        v.merges.push_back(m.is_string() ? m.get<std::string>()
                                         : m[0].get<std::string>() + " " + m[1].get<std::string>());
    v.bosId = v.eosId = 0; // <|endoftext|>
    v.addBos = false;
    v.addSpacePrefix = false;
    return v;
}

const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

/// The tiny GPT-2 tokenizer.json rewritten the way Llama 3 / Qwen2 files are laid out:
/// Sequence[Split{Regex, Isolated}, ByteLevel{use_regex false}] (+ Llama 3's ignore_merges and
/// BOS template, + Qwen2's NFC normalizer and extra added tokens).
std::string writeVariant(const std::string& dir, const std::string& name) {
    json d = readJson(lcwtest::sharedPath(kGpt2Tiny));
    const bool llama3 = name == "llama3";
    d["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"},
                       {"pattern", {{"Regex", llama3 ? kLlama3Regex : kQwen2Regex}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      {{"type", "ByteLevel"},
                       {"add_prefix_space", false},
                       {"trim_offsets", true},
                       {"use_regex", false}}})}};
    if (llama3) {
        d["model"]["ignore_merges"] = true;
        d["post_processor"] = json::parse(R"({"type":"Sequence","processors":[
            {"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true},
            {"type":"TemplateProcessing",
             "single":[{"SpecialToken":{"id":"<|endoftext|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
             "pair":[],
             "special_tokens":{"<|endoftext|>":{"id":"<|endoftext|>","ids":[0],"tokens":["<|endoftext|>"]}}}]})");
    } else {
        d["normalizer"] = {{"type", "NFC"}};
        d["added_tokens"].push_back(json::parse(
            R"({"id":1024,"content":"<|im_start|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true})"));
        d["added_tokens"].push_back(json::parse(
            R"({"id":1025,"content":"<tool>","single_word":false,"lstrip":true,"rstrip":true,"normalized":false,"special":false})"));
        d["added_tokens"].push_back(json::parse(
            R"({"id":1026,"content":"zq","single_word":true,"lstrip":false,"rstrip":false,"normalized":false,"special":false})"));
    }
    const std::string path = dir + "/" + name + ".json";
    std::ofstream(path) << d.dump();
    return path;
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

template <class E, class F> std::string expectError(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("WRONG TYPE: ") + e.what();
    }
    return "NO ERROR";
}

const char* kRoundTrip[] = {
    "Hello world",
    "naïve café 😀\n\ttabs",
    "  leading and trailing  ",
    "line1\r\nline2\n\n  indented",
    "héllo 世界 🌍! \xE2\x80\x8A ǅ 12345",
    "emoji 👍🏽 and ZWJ 👩‍💻",
};

} // namespace

class TestTokenizer : public QObject {
    Q_OBJECT
private slots:
    // ---- stories260K: the same vocabulary three ways --------------------------------------
    void storiesHfMatchesReference() {
        LCW_REQUIRE_SHARED(kStoriesRef);
        const json ref = readJson(lcwtest::sharedPath(kStoriesRef));
        auto t = storiesHf();
        QCOMPARE(t->kind(), std::string("bpe-spm"));
        QCOMPARE(t->vocabSize(), 512);
        QCOMPARE(t->bosId(), 1);
        QCOMPARE(t->eosId(), 2);
        QVERIFY(t->addsBos());
        const std::string text = ref["tokenize"]["text"];
        const Ids expected = ref["tokenize"]["ids_with_bos"];
        QCOMPARE(t->encode(text), expected);
        QCOMPARE(t->encode(text, false), Ids(expected.begin() + 1, expected.end()));
        const Ids greedy = ref["greedy"]["ids"];
        QCOMPARE(t->decode(greedy), ref["greedy"]["text"].get<std::string>());
        QCOMPARE(t->tokenText(403), std::string("\xE2\x96\x81Once"));
        QCOMPARE(t->tokenText(13), std::string("<0x0A>"));
    }
    void storiesLlama2cMatchesReference() {
        LCW_REQUIRE_SHARED(kStoriesBin);
        const json ref = readJson(lcwtest::sharedPath(kStoriesRef));
        auto t = lcw::Tokenizer::fromLlama2c(lcwtest::sharedPath(kStoriesBin), 512);
        QCOMPARE(t->kind(), std::string("llama2c"));
        QCOMPARE(t->vocabSize(), 512);
        QCOMPARE(t->bosId(), 1);
        QCOMPARE(t->eosId(), 2);
        QVERIFY(t->addsBos());
        const Ids expected = ref["tokenize"]["ids_with_bos"];
        QCOMPARE(t->encode(ref["tokenize"]["text"].get<std::string>()), expected);
        QCOMPARE(t->decode(ref["greedy"]["ids"].get<Ids>()),
                 ref["greedy"]["text"].get<std::string>());
        QCOMPARE(t->tokenText(403), std::string(" Once"));
        QCOMPARE(t->encode(""), Ids{1});
        QCOMPARE(t->encode("", false), Ids{});
    }
    void storiesGgufMatchesReference() {
        LCW_REQUIRE_SHARED(kStoriesBin);
        const json ref = readJson(lcwtest::sharedPath(kStoriesRef));
        auto t = lcw::Tokenizer::fromGguf(ggufFromLlama2cBin(lcwtest::sharedPath(kStoriesBin), 512),
                                          "stories.gguf");
        QCOMPARE(t->kind(), std::string("spm"));
        QCOMPARE(t->bosId(), 1);
        QVERIFY(t->addsBos());
        const Ids expected = ref["tokenize"]["ids_with_bos"];
        QCOMPARE(t->encode(ref["tokenize"]["text"].get<std::string>()), expected);
        QCOMPARE(t->decode(ref["greedy"]["ids"].get<Ids>()),
                 ref["greedy"]["text"].get<std::string>());
        // Special tokens are text unless asked for; with parseSpecial they are the control ids.
        QCOMPARE(t->encode("<s>hi", false, true)[0], 1);
        QVERIFY(t->encode("<s>hi", false, false)[0] != 1);
        QCOMPARE(t->encode("", true), Ids{1});
    }
    void storiesThreeWaysAgreeOnEvalText() {
        // The whole perplexity text: the HF tokenizer must give llama.cpp's count (94166 with
        // BOS), fast; llama2.c and GGUF must give the same ids.
        LCW_REQUIRE_SHARED("data/tinystories_eval.txt");
        const std::string text =
            lcw::readTextFile(lcwtest::sharedPath("data/tinystories_eval.txt"));
        auto hf = storiesHf();
        auto t0 = std::chrono::steady_clock::now();
        const Ids ids = hf->encode(text);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        qInfo("HF tokenizer: %zu bytes -> %zu ids in %.1f ms", text.size(), ids.size(), ms);
        QCOMPARE(ids.size(), size_t(94166));
        QVERIFY2(ms < 1000.0, "tokenizing 185 KB took a second or more");
        QCOMPARE(hf->decode(ids), text);
        auto l2c = lcw::Tokenizer::fromLlama2c(lcwtest::sharedPath(kStoriesBin), 512);
        QCOMPARE(l2c->encode(text), ids);
        auto gguf = lcw::Tokenizer::fromGguf(
            ggufFromLlama2cBin(lcwtest::sharedPath(kStoriesBin), 512), "stories.gguf");
        QCOMPARE(gguf->encode(text), ids);
    }

    // ---- tiny-random models --------------------------------------------------------------
    void tinyRandomReferences_data() {
        QTest::addColumn<QString>("model");
        QTest::addColumn<int>("fullLength"); // tokenizers' id count of the whole text
        QTest::addColumn<QString>("kind");
        for (const char* m : {"llama2_sp_f32", "gemma", "mixtral_moe"})
            QTest::newRow(m) << QString(m) << 134 << QString("bpe-spm");
        for (const char* m : {"qwen2_sharded", "gpt2", "opt", "phi3", "mamba"})
            QTest::newRow(m) << QString(m) << 78 << QString("bpe-bytelevel");
    }
    void tinyRandomReferences() {
        QFETCH(QString, model);
        QFETCH(int, fullLength);
        QFETCH(QString, kind);
        const std::string dir = "models/tiny-random/" + model.toStdString();
        LCW_REQUIRE_SHARED(dir + "/reference.json");
        const json ref = readJson(lcwtest::sharedPath(dir + "/reference.json"));
        auto t = lcw::Tokenizer::fromHfJson(lcwtest::sharedPath(dir + "/model/tokenizer.json"));
        QCOMPARE(QString::fromStdString(t->kind()), kind);
        const std::string text = ref["text"];
        const Ids expected = ref["ids"]; // the first 48 ids (the logits window)
        const Ids ids = t->encode(text);
        QCOMPARE(int(ids.size()), fullLength);
        QCOMPARE(Ids(ids.begin(), ids.begin() + long(expected.size())), expected);
        QCOMPARE(t->decode(ids), text);
        QCOMPARE(t->addsBos(), kind == "bpe-spm");
    }
    void byteLevelExactIds() {
        LCW_REQUIRE_SHARED(kGpt2Tiny);
        auto t = lcw::Tokenizer::fromHfJson(lcwtest::sharedPath(kGpt2Tiny));
        QCOMPARE(t->bosId(), 0);
        QCOMPARE(t->eosId(), 0);
        QVERIFY(!t->addsBos());
        const std::string text = "Hello World! It's 2024, they'RE here:\r\n\tnaïve café 😀   end";
        const Ids expected = {40, 524, 79, 377, 769, 1,   640, 7,   83,  488, 18,  20,  12,  653,
                              7,  50,  37, 348, 264, 26,  202, 199, 198, 78,  65,  128, 108, 86,
                              69, 280, 65, 70,  128, 103, 221, 173, 254, 247, 223, 221, 221, 768};
        QCOMPARE(t->encode(text), expected);
        QCOMPARE(t->decode(expected), text);
        QCOMPARE(t->tokenText(79), std::string("o"));
        QCOMPARE(t->tokenText(377), std::string("\xC4\xA0W")); // "ĠW"
        // <|endoftext|> is special: text unless parseSpecial.
        QCOMPARE(t->encode("<|endoftext|>", true, true), Ids{0});
        QVERIFY(t->encode("<|endoftext|>", true, false).size() > 1);
        QCOMPARE(t->decode({0, 40, 524, 79}, true), std::string("Hello"));
        QCOMPARE(t->decode({0, 40, 524, 79}, false), std::string("<|endoftext|>Hello"));
    }
    void llama3StyleTokenizerJson() {
        LCW_REQUIRE_SHARED(kGpt2Tiny);
        const std::string dir = lcwtest::tempDir("tok-llama3");
        auto t = lcw::Tokenizer::fromHfJson(writeVariant(dir, "llama3"));
        QCOMPARE(t->kind(), std::string("bpe-bytelevel"));
        QVERIFY(t->addsBos());
        QCOMPARE(t->bosId(), 0);
        const std::string text = "Hello World! It's 2024, they'RE here:\r\n\tnaïve café 😀   end";
        const Ids expected = {0,   40,  524, 79,  377, 769, 1,   640, 7,   83,  221, 18,
                              16,  18,  20,  12,  653, 7,   50,  37,  348, 264, 26,  202,
                              199, 198, 78,  65,  128, 108, 86,  69,  280, 65,  70,  128,
                              103, 221, 173, 254, 247, 223, 221, 221, 768};
        QCOMPARE(t->encode(text), expected);
        QCOMPARE(t->decode(expected), text);
        // The same vocabulary as GGUF (pre "llama-bpe") gives the same ids.
        lcw::GgufVocab v = ggufFromHfByteLevel(lcwtest::sharedPath(kGpt2Tiny), "llama-bpe");
        v.addBos = true;
        auto g = lcw::Tokenizer::fromGguf(v, "llama3.gguf");
        QCOMPARE(g->encode(text), expected);
        QCOMPARE(g->decode(expected), text);
    }
    void qwen2StyleTokenizerJson() {
        LCW_REQUIRE_SHARED(kGpt2Tiny);
        const std::string dir = lcwtest::tempDir("tok-qwen2");
        auto t = lcw::Tokenizer::fromHfJson(writeVariant(dir, "qwen2"));
        QVERIFY(!t->addsBos());
        QCOMPARE(t->vocabSize(), 1027);
        // NFC ("e" + U+0301 -> "é"), a special token, a non-special added token with lstrip and
        // rstrip, and a single_word added token.
        const std::string text = "<|im_start|>user  <tool>  x\ne\xCC\x81t\xC3\xA9 12345 zq";
        const Ids expected = {1024, 340, 262, 1025, 88, 199, 128, 103, 84,  128,
                              103,  221, 17,  18,   19, 20,  21,  221, 1026};
        QCOMPARE(t->encode(text, true, true), expected);
        QCOMPARE(t->decode(expected, false), std::string("<|im_start|>user<tool>x\nété 12345 zq"));
        QCOMPARE(t->decode(expected, true), std::string("user<tool>x\nété 12345 zq"));
        // Without parseSpecial the special token is plain text; non-special ones still match.
        const Ids plain = t->encode(text, true, false);
        QVERIFY(std::find(plain.begin(), plain.end(), 1024) == plain.end());
        QVERIFY(std::find(plain.begin(), plain.end(), 1025) != plain.end());
        // single_word: not inside a word
        const Ids inWord = t->encode("azq");
        QVERIFY(std::find(inWord.begin(), inWord.end(), 1026) == inWord.end());
        QCOMPARE(t->encode("a zq").back(), 1026);
        // GGUF with pre "qwen2" splits digits one by one like the HF file.
        auto g = lcw::Tokenizer::fromGguf(
            ggufFromHfByteLevel(lcwtest::sharedPath(kGpt2Tiny), "qwen2"), "qwen2.gguf");
        QCOMPARE(g->encode("x 12345"), t->encode("x 12345"));
        QCOMPARE(g->encode("x 12345").size(), size_t(7));
    }
    void ggufGpt2MatchesHf() {
        LCW_REQUIRE_SHARED(kGpt2Tiny);
        auto hf = lcw::Tokenizer::fromHfJson(lcwtest::sharedPath(kGpt2Tiny));
        auto g = lcw::Tokenizer::fromGguf(
            ggufFromHfByteLevel(lcwtest::sharedPath(kGpt2Tiny), "gpt-2"), "gpt2.gguf");
        QCOMPARE(g->kind(), std::string("bpe-bytelevel"));
        QVERIFY(!g->addsBos());
        for (const char* s : kRoundTrip) {
            QCOMPARE(g->encode(s), hf->encode(s));
            QCOMPARE(g->decode(g->encode(s)), std::string(s));
        }
        QCOMPARE(g->encode("a<|endoftext|>", false, true),
                 hf->encode("a<|endoftext|>", false, true));
    }

    // ---- split regexes -------------------------------------------------------------------
    void splitPatterns_data() {
        QTest::addColumn<int>("pattern");
        QTest::addColumn<QString>("text");
        QTest::addColumn<QStringList>("pieces");
        using P = lcw::SplitPattern;
        auto row = [](P p, const char* name, const char* text, QStringList pieces) {
            QTest::newRow(name) << int(p) << QString::fromUtf8(text) << pieces;
        };
        // GPT-2: case-sensitive contractions, digit runs, \s+(?!\S)
        row(P::Gpt2, "gpt2 contractions", "I'm you're they'LL HE'S it's",
            {"I", "'m", " you", "'re", " they", "'", "LL", " HE", "'", "S", " it", "'s"});
        row(P::Gpt2, "gpt2 digits", "12345 1 22 333 4444", {"12345", " 1", " 22", " 333", " 4444"});
        row(P::Gpt2, "gpt2 crlf", "a\r\n\r\nb", {"a", "\r\n\r", "\n", "b"});
        row(P::Gpt2, "gpt2 spaces newline", "x  \n  y", {"x", "  \n ", " y"});
        row(P::Gpt2, "gpt2 trailing", "end   ", {"end", "   "});
        row(P::Gpt2, "gpt2 inner spaces", "a   b", {"a", "  ", " b"});
        row(P::Gpt2, "gpt2 unicode", "héllo 世界 🌍!", {"héllo", " 世界", " 🌍!"});
        row(P::Gpt2, "gpt2 punct", "\"quoted\" (x) ...!?",
            {"\"", "quoted", "\"", " (", "x", ")", " ...!?"});
        row(P::Gpt2, "gpt2 tabs", "\tindent\n\tcode();",
            {"\t", "indent", "\n", "\t", "code", "();"});
        // Llama 3: case-insensitive contractions, digits in threes, newlines kept together
        row(P::Llama3, "llama3 contractions", "I'm you're they'LL HE'S it's",
            {"I", "'m", " you", "'re", " they", "'LL", " HE", "'S", " it", "'s"});
        row(P::Llama3, "llama3 digits", "12345 1 22 333 4444",
            {"123", "45", " ", "1", " ", "22", " ", "333", " ", "444", "4"});
        row(P::Llama3, "llama3 crlf", "a\r\n\r\nb", {"a", "\r\n\r\n", "b"});
        row(P::Llama3, "llama3 spaces newline", "x  \n  y", {"x", "  \n", " ", " y"});
        row(P::Llama3, "llama3 trailing", "end   ", {"end", "   "});
        row(P::Llama3, "llama3 inner spaces", "a   b", {"a", "  ", " b"});
        row(P::Llama3, "llama3 unicode", "héllo 世界 🌍!", {"héllo", " 世界", " 🌍!"});
        row(P::Llama3, "llama3 punct", "\"quoted\" (x) ...!?",
            {"\"quoted", "\"", " (", "x", ")", " ...!?"});
        row(P::Llama3, "llama3 tabs", "\tindent\n\tcode();", {"\tindent", "\n", "\tcode", "();"});
        // Qwen2: as Llama 3 but single digits
        row(P::Qwen2, "qwen2 digits", "12345 1 22",
            {"1", "2", "3", "4", "5", " ", "1", " ", "2", "2"});
        row(P::Qwen2, "qwen2 contractions", "they'LL HE'S", {"they", "'LL", " HE", "'S"});
        row(P::Qwen2, "qwen2 crlf", "a\r\n\r\nb", {"a", "\r\n\r\n", "b"});
    }
    void splitPatterns() {
        QFETCH(int, pattern);
        QFETCH(QString, text);
        QFETCH(QStringList, pieces);
        const std::string s = text.toStdString();
        QStringList got;
        for (std::string_view p : lcw::splitPretokens(s, lcw::SplitPattern(pattern)))
            got << QString::fromUtf8(p.data(), qsizetype(p.size()));
        QCOMPARE(got, pieces);
    }
    void splitPatternRecognition() {
        using P = lcw::SplitPattern;
        for (P p : {P::Gpt2, P::Llama3, P::Qwen2})
            QCOMPARE(lcw::splitPatternFromRegex(lcw::splitPatternRegex(p)).value(), p);
        QCOMPARE(lcw::splitPatternFromRegex(kLlama3Regex).value(), P::Llama3);
        QCOMPARE(lcw::splitPatternFromRegex(kQwen2Regex).value(), P::Qwen2);
        QVERIFY(!lcw::splitPatternFromRegex("\\s+").has_value());
        QCOMPARE(
            lcw::splitPatternFromRegex(
                R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)")
                .value(),
            P::Llama3);
        QCOMPARE(lcw::splitPatternFromRegex(
                     R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))")
                     .value(),
                 P::Gpt2);
        // Pieces always cover the text, also with invalid UTF-8.
        const std::string bad = "ab\xFF\xC3 x\x80";
        std::string joined;
        for (auto p : lcw::splitPretokens(bad, P::Llama3)) joined += p;
        QCOMPARE(joined, bad);
    }
    void unicodeBasics() {
        using namespace lcw::unicode;
        QVERIFY(isLetter(U'é') && isLetter(U'世') && isLetter(U'ǅ'));
        QVERIFY(isNumber(U'7') && isNumber(U'²') && isNumber(U'Ⅻ') && isNumber(0x663));
        QVERIFY(isWhitespace(U'\u00a0') && isWhitespace(0x85) && isWhitespace(0x3000));
        QVERIFY(!isWhitespace(0x200B) && !isWhitespace(0x1C));
        QVERIFY(!isLetter(0x1F600) && !isNumber(U'_'));
        QCOMPARE(nfc("e\xCC\x81"), std::string("\xC3\xA9"));                     // é
        QCOMPARE(nfc("\xE1\x84\x80\xE1\x85\xA1"), std::string("\xEA\xB0\x80"));  // Hangul 가
        QCOMPARE(nfc("a\xCC\xA3\xCC\x87"), std::string("\xE1\xBA\xA1\xCC\x87")); // reorder
        QCOMPARE(nfc("plain ascii"), std::string("plain ascii"));
        QCOMPARE(byteToUnicode()[' '], std::string("\xC4\xA0")); // Ġ
        QCOMPARE(unicodeToByte(0x120), int(' '));
    }

    // ---- round trips ---------------------------------------------------------------------
    void roundTrips() {
        LCW_REQUIRE_SHARED(kStoriesBin);
        std::vector<std::pair<std::string, std::unique_ptr<lcw::Tokenizer>>> all;
        all.emplace_back("hf-spm", storiesHf());
        all.emplace_back("llama2c",
                         lcw::Tokenizer::fromLlama2c(lcwtest::sharedPath(kStoriesBin), 512));
        all.emplace_back("gguf-spm",
                         lcw::Tokenizer::fromGguf(
                             ggufFromLlama2cBin(lcwtest::sharedPath(kStoriesBin), 512), "x"));
        all.emplace_back("hf-bytelevel",
                         lcw::Tokenizer::fromHfJson(lcwtest::sharedPath(kGpt2Tiny)));
        const std::string dir = lcwtest::tempDir("tok-rt");
        all.emplace_back("hf-llama3", lcw::Tokenizer::fromHfJson(writeVariant(dir, "llama3")));
        all.emplace_back("gguf-qwen2",
                         lcw::Tokenizer::fromGguf(
                             ggufFromHfByteLevel(lcwtest::sharedPath(kGpt2Tiny), "qwen2"), "y"));
        for (const auto& [name, t] : all) {
            for (const char* s : kRoundTrip) {
                const Ids ids = t->encode(s);
                QVERIFY2(t->decode(ids) == s, (name + ": " + s).c_str());
            }
        }
        // Byte fallback: the SPM vocabulary has no "ï", "é", emoji: they become <0xNN> tokens.
        auto hf = storiesHf();
        const Ids ids = hf->encode("😀", false);
        QCOMPARE(ids.size(), size_t(5)); // "▁" + 4 byte tokens
        QCOMPARE(hf->tokenText(ids[1]), std::string("<0xF0>"));
        // Invalid UTF-8 is kept as bytes.
        QCOMPARE(hf->decode(hf->encode("a\xFF"
                                       "b")),
                 std::string("a\xFF"
                             "b"));
    }

    // ---- errors --------------------------------------------------------------------------
    void malformedHfJson() {
        const std::string dir = lcwtest::tempDir("tok-bad");
        const std::string badJson = dir + "/bad.json";
        writeFile(badJson, "{\"model\": {\"type\": \"BPE\", ");
        QVERIFY(expectError<lcw::FormatError>([&] {
                    lcw::Tokenizer::fromHfJson(badJson);
                }).find(badJson) == 0);
        const std::string noModel = dir + "/nomodel.json";
        writeFile(noModel, "{\"version\": \"1.0\"}");
        std::string msg =
            expectError<lcw::FormatError>([&] { lcw::Tokenizer::fromHfJson(noModel); });
        QVERIFY2(msg.find(noModel) == 0 && msg.find("model") != std::string::npos, msg.c_str());
        const std::string unigram = dir + "/unigram.json";
        writeFile(unigram, R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})");
        msg = expectError<lcw::UnsupportedError>([&] { lcw::Tokenizer::fromHfJson(unigram); });
        QVERIFY2(msg.find(unigram) != std::string::npos && msg.find("Unigram") != std::string::npos,
                 msg.c_str());
        const std::string regex = dir + "/regex.json";
        writeFile(regex, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"}})");
        msg = expectError<lcw::UnsupportedError>([&] { lcw::Tokenizer::fromHfJson(regex); });
        QVERIFY2(msg.find(regex) != std::string::npos, msg.c_str());
        const std::string badMerge = dir + "/merge.json";
        writeFile(badMerge, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})");
        msg = expectError<lcw::FormatError>([&] { lcw::Tokenizer::fromHfJson(badMerge); });
        QVERIFY2(msg.find(badMerge) == 0, msg.c_str());
        msg = expectError<lcw::FormatError>(
            [&] { lcw::Tokenizer::fromHfJson(dir + "/missing.json"); });
        QVERIFY2(msg.find(dir + "/missing.json") == 0, msg.c_str());
        // A bad tokenizer_config.json is named too.
        if (lcwtest::exists(lcwtest::sharedPath(kStoriesHf))) {
            msg = expectError<lcw::FormatError>(
                [&] { lcw::Tokenizer::fromHfJson(lcwtest::sharedPath(kStoriesHf), badJson); });
            QVERIFY2(msg.find(badJson) == 0, msg.c_str());
        }
    }
    void malformedLlama2cBin() {
        LCW_REQUIRE_SHARED(kStoriesBin);
        const std::string dir = lcwtest::tempDir("tok-bin");
        const std::string good = lcw::readTextFile(lcwtest::sharedPath(kStoriesBin));
        const std::string truncated = dir + "/truncated.bin";
        writeFile(truncated, good.substr(0, good.size() - 3));
        std::string msg =
            expectError<lcw::FormatError>([&] { lcw::Tokenizer::fromLlama2c(truncated, 512); });
        QVERIFY2(msg.find(truncated) == 0 && msg.find("truncated") != std::string::npos,
                 msg.c_str());
        const std::string fewer = dir + "/fewer.bin";
        writeFile(fewer, good.substr(0, 4 + 8 + 5));
        msg = expectError<lcw::FormatError>([&] { lcw::Tokenizer::fromLlama2c(fewer, 512); });
        QVERIFY2(msg.find(fewer) == 0, msg.c_str());
        std::string neg = good;
        const int32_t minus = -5;
        std::memcpy(&neg[4 + 4], &minus, 4); // length of token 0
        const std::string negative = dir + "/negative.bin";
        writeFile(negative, neg);
        msg = expectError<lcw::FormatError>([&] { lcw::Tokenizer::fromLlama2c(negative, 512); });
        QVERIFY2(msg.find(negative) == 0 && msg.find("negative") != std::string::npos, msg.c_str());
        std::string huge = good;
        const int32_t big = 1 << 30;
        std::memcpy(&huge[4 + 4], &big, 4);
        const std::string tooLong = dir + "/toolong.bin";
        writeFile(tooLong, huge);
        msg = expectError<lcw::FormatError>([&] { lcw::Tokenizer::fromLlama2c(tooLong, 512); });
        QVERIFY2(msg.find(tooLong) == 0, msg.c_str());
        // A vocabulary smaller than the file is fine (the model decides).
        QCOMPARE(lcw::Tokenizer::fromLlama2c(lcwtest::sharedPath(kStoriesBin), 300)->vocabSize(),
                 300);
    }
    void malformedGgufVocab() {
        lcw::GgufVocab v;
        v.model = "llama";
        QVERIFY(expectError<lcw::FormatError>([&] {
                    lcw::Tokenizer::fromGguf(v, "m.gguf");
                }).find("m.gguf") == 0);
        v.tokens = {"a", "b"};
        v.scores = {0.0f};
        QVERIFY(expectError<lcw::FormatError>([&] {
                    lcw::Tokenizer::fromGguf(v, "m.gguf");
                }).find("scores") != std::string::npos);
        v.scores.clear();
        v.model = "bert";
        std::string msg =
            expectError<lcw::UnsupportedError>([&] { lcw::Tokenizer::fromGguf(v, "m.gguf"); });
        QVERIFY2(msg.find("m.gguf") != std::string::npos && msg.find("bert") != std::string::npos,
                 msg.c_str());
        v.model = "gpt2";
        v.pre = "deepseek-coder";
        msg = expectError<lcw::UnsupportedError>([&] { lcw::Tokenizer::fromGguf(v, "m.gguf"); });
        QVERIFY2(msg.find("deepseek-coder") != std::string::npos, msg.c_str());
        v.pre = "default";
        v.bosId = 7;
        QVERIFY(expectError<lcw::FormatError>([&] {
                    lcw::Tokenizer::fromGguf(v, "m.gguf");
                }).find("bos") != std::string::npos);
    }
    void idsOutOfRange() {
        LCW_REQUIRE_SHARED(kStoriesHf);
        auto t = storiesHf();
        QVERIFY_THROWS_EXCEPTION(lcw::ArgumentError, t->decode({1, 600}));
        QVERIFY_THROWS_EXCEPTION(lcw::ArgumentError, t->tokenText(-1));
    }
};

QTEST_GUILESS_MAIN(TestTokenizer)
#include "test_tokenizer.moc"
