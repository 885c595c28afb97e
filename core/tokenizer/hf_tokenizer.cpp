// Hugging Face tokenizer.json with a BPE model: the pipeline of the tokenizers library
// (added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor; decoder chain for
// decode), for the two families LLMs use: SentencePiece-style BPE with byte fallback (Llama 2,
// Mistral) and byte-level BPE (GPT-2, Llama 3, Qwen2).
#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/tokenizer/bpe.h"
#include "core/tokenizer/literal_tokens.h"
#include "core/tokenizer/pretokenize.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/unicode.h"

#include <nlohmann/json.hpp>

#include <array>
#include <filesystem>
#include <optional>

namespace lcw {

namespace {

using json = nlohmann::json;

const std::string kMetaspace = "\xE2\x96\x81"; // ▁

void replaceAll(std::string& s, std::string_view from, std::string_view to) {
    if (from.empty()) return;
    std::string out;
    size_t pos = 0;
    bool any = false;
    while (true) {
        const size_t hit = s.find(from, pos);
        if (hit == std::string::npos) break;
        if (!any) out.reserve(s.size() + s.size() / 8);
        any = true;
        out.append(s, pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
    if (!any) return;
    out.append(s, pos, std::string::npos);
    s = std::move(out);
}

struct NormStep {
    enum Kind { Prepend, Replace, Nfc, StripSpace } kind;
    std::string a, b; // Prepend: a; Replace: a -> b
    bool left = false, right = false;
};

struct PreStep {
    enum Kind { Split, ByteLevel, Metaspace, Digits } kind;
    SplitPattern pattern = SplitPattern::Gpt2; // Split, and ByteLevel with use_regex
    bool useRegex = true;                      // ByteLevel
    bool addPrefixSpace = false;               // ByteLevel
    std::string replacement = kMetaspace;      // Metaspace
    enum Prepend { Always, First, Never } prepend = Always;
    bool split = true; // Metaspace
    bool individualDigits = false;
};

struct DecStep {
    enum Kind { Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace } kind;
    std::string a, b;
    uint32_t stripChar = ' ';
    size_t start = 0, stop = 0;
    bool prependStrip = true; // Metaspace: strip the first token's leading space
};

struct Piece {
    std::string text;
    bool atStart; // begins at byte 0 of the original text (Metaspace prepend_scheme "first")
};

class HfTokenizer final : public Tokenizer {
public:
    std::vector<int32_t> encode(std::string_view text, bool addBos,
                                bool parseSpecial) const override;
    std::string decode(const std::vector<int32_t>& ids, bool skipSpecial) const override;
    std::string tokenText(int32_t id) const override {
        if (id < 0 || id >= vocabSize())
            throw ArgumentError("token id " + std::to_string(id) + " is outside the vocabulary");
        return m_idToToken[size_t(id)];
    }
    int32_t vocabSize() const override { return int32_t(m_idToToken.size()); }
    int32_t bosId() const override { return m_bos; }
    int32_t eosId() const override { return m_eos; }
    bool addsBos() const override { return !m_prefix.empty(); }
    std::string kind() const override { return m_byteLevel ? "bpe-bytelevel" : "bpe-spm"; }
    GgufVocab ggufVocab(std::vector<std::string>* warnings) const override;

    void load(const std::string& path, const std::string& configPath);

private:
    [[noreturn]] void unsupported(const std::string& what) const {
        throw UnsupportedError(m_path + ": " + what);
    }
    [[noreturn]] void malformed(const std::string& what) const { throw FormatError(m_path, what); }

    void loadModel(const json& m);
    void loadAddedTokens(const json& a);
    void loadNormalizer(const json& n);
    void loadPreTokenizer(const json& p);
    void loadDecoder(const json& d);
    void loadPostProcessor(const json& p);
    void loadConfig(const std::string& configPath);
    int32_t idOf(std::string_view token) const {
        const int32_t id = tok::lookup(m_addedVocab, token);
        return id >= 0 ? id : tok::lookup(m_vocab, token);
    }
    SplitPattern patternOf(const json& pattern, const char* where) const;

    void normalize(std::string& s) const;
    void preTokenize(std::string_view segment, bool atStart, std::vector<Piece>& pieces) const;
    void encodeWord(std::string_view word, std::vector<int32_t>& out) const;

    std::string m_path;
    tok::VocabMap m_vocab;      // the model's vocabulary
    tok::VocabMap m_addedVocab; // added tokens (content -> id)
    std::vector<std::string> m_idToToken;
    std::vector<uint8_t> m_special; // per id: an added token marked special
    tok::RankedMerges m_merges;
    std::vector<std::string> m_mergeTexts; // "left right", by rank (for GGUF export)
    std::vector<int32_t> m_mergeRankOf;    // per id: rank of the first merge making it, or -1
    bool m_byteFallback = false;
    bool m_fuseUnk = false;
    bool m_ignoreMerges = false;
    int32_t m_unk = -1;
    std::array<int32_t, 256> m_byteIds{};

    std::vector<NormStep> m_norm;
    std::vector<PreStep> m_pre;
    std::vector<DecStep> m_dec;
    bool m_hasDecoder = false;
    bool m_byteLevel = false;
    tok::LiteralMatcher m_added;
    std::vector<int32_t> m_prefix, m_suffix;
    int32_t m_bos = -1, m_eos = -1, m_pad = -1;
    std::string m_chatTemplate;
    mutable tok::WordCache m_cache;
};

// ---------------------------------------------------------------------------------------------
// Loading

const json* member(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
}

bool boolOr(const json& obj, const char* key, bool dflt) {
    const json* v = member(obj, key);
    return v && v->is_boolean() ? v->get<bool>() : dflt;
}

std::string stringOr(const json& obj, const char* key, const std::string& dflt) {
    const json* v = member(obj, key);
    return v && v->is_string() ? v->get<std::string>() : dflt;
}

/// A token given as "text" or {"content": "text", ...} (tokenizer_config.json); "" when absent.
std::string tokenString(const json* v) {
    if (!v) return {};
    if (v->is_string()) return v->get<std::string>();
    if (v->is_object()) return stringOr(*v, "content", "");
    return {};
}

void HfTokenizer::load(const std::string& path, const std::string& configPath) {
    m_path = path;
    const json doc = parseJsonText(readTextFile(path), path);
    if (!doc.is_object()) malformed("not a tokenizer.json: the top level is not an object");
    const json* model = member(doc, "model");
    if (!model || !model->is_object()) malformed("not a tokenizer.json: no \"model\" object");
    try {
        loadModel(*model);
        if (const json* a = member(doc, "added_tokens")) loadAddedTokens(*a);
        if (const json* n = member(doc, "normalizer")) loadNormalizer(*n);
        if (const json* p = member(doc, "pre_tokenizer")) loadPreTokenizer(*p);
        if (const json* d = member(doc, "decoder")) loadDecoder(*d);
        if (const json* p = member(doc, "post_processor")) loadPostProcessor(*p);
    } catch (const json::exception& e) {
        malformed(std::string("unexpected content: ") + e.what());
    }
    m_added.finish();
    m_special.resize(m_idToToken.size(), 0);
    for (const auto* list : {&m_prefix, &m_suffix})
        for (int32_t id : *list)
            if (id < 0 || size_t(id) >= m_idToToken.size())
                malformed("post_processor token id " + std::to_string(id) +
                          " is not in the vocabulary (" + std::to_string(m_idToToken.size()) +
                          " ids)");
    loadConfig(configPath);
}

void HfTokenizer::loadModel(const json& m) {
    std::string type = stringOr(m, "type", "");
    if (type.empty() && member(m, "merges")) type = "BPE"; // old files leave the type out
    if (type != "BPE")
        unsupported("tokenizer model type \"" + (type.empty() ? std::string("?") : type) +
                    "\" is not supported (only BPE)");
    const json* vocab = member(m, "vocab");
    if (!vocab || !vocab->is_object()) malformed("the BPE model has no \"vocab\" object");
    int32_t maxId = -1;
    // Ids index tables: they must stay proportional to the entries the file holds (an id of
    // 10^8 would otherwise build a 10^8-entry table before anything checks it).
    const int64_t entries = int64_t(vocab->size());
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
        if (!it.value().is_number_integer())
            malformed("vocab entry \"" + it.key() + "\" is not an id");
        const int32_t id = checked::tokenId(it.value().get<int64_t>(), entries, m_path,
                                            "model.vocab id of \"" + it.key() + "\"");
        m_vocab.emplace(it.key(), id);
        maxId = std::max(maxId, int32_t(id));
    }
    m_idToToken.assign(size_t(maxId + 1), std::string());
    for (const auto& [text, id] : m_vocab) m_idToToken[size_t(id)] = text;

    if (!stringOr(m, "continuing_subword_prefix", "").empty() ||
        !stringOr(m, "end_of_word_suffix", "").empty())
        unsupported("BPE continuing_subword_prefix / end_of_word_suffix are not supported");
    m_byteFallback = boolOr(m, "byte_fallback", false);
    m_fuseUnk = boolOr(m, "fuse_unk", false);
    m_ignoreMerges = boolOr(m, "ignore_merges", false);
    const std::string unk = stringOr(m, "unk_token", "");
    if (!unk.empty()) {
        m_unk = tok::lookup(m_vocab, unk);
        if (m_unk < 0) malformed("unk_token \"" + unk + "\" is not in the vocabulary");
    }
    m_byteIds.fill(-1);
    for (int b = 0; b < 256; ++b)
        m_byteIds[size_t(b)] = tok::lookup(m_vocab, tok::byteTokenText(uint8_t(b)));

    if (const json* merges = member(m, "merges")) {
        if (!merges->is_array()) malformed("BPE \"merges\" is not an array");
        int32_t rank = 0;
        for (const json& e : *merges) {
            std::string a, b;
            if (e.is_string()) {
                const std::string& s = e.get_ref<const std::string&>();
                const size_t sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    malformed("merge " + std::to_string(rank) + " (\"" + s +
                              "\") is not \"left right\"");
                a = s.substr(0, sp);
                b = s.substr(sp + 1);
            } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
                a = e[0].get<std::string>();
                b = e[1].get<std::string>();
            } else {
                malformed("merge " + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
            }
            const int32_t ia = tok::lookup(m_vocab, a), ib = tok::lookup(m_vocab, b);
            const int32_t im = tok::lookup(m_vocab, a + b);
            if (ia < 0 || ib < 0 || im < 0)
                malformed("merge " + std::to_string(rank) + " (\"" + a + "\", \"" + b +
                          "\") uses a token that is not in the vocabulary");
            m_merges.add(ia, ib, rank, im);
            m_mergeTexts.push_back(a + " " + b);
            if (size_t(im) >= m_mergeRankOf.size()) m_mergeRankOf.resize(size_t(im) + 1, -1);
            if (m_mergeRankOf[size_t(im)] < 0) m_mergeRankOf[size_t(im)] = rank;
            ++rank;
        }
    }
}

void HfTokenizer::loadAddedTokens(const json& a) {
    if (!a.is_array()) malformed("\"added_tokens\" is not an array");
    const int64_t entries = int64_t(m_vocab.size() + a.size());
    for (const json& t : a) {
        const json* id = member(t, "id");
        const json* content = member(t, "content");
        if (!id || !id->is_number_integer() || !content || !content->is_string())
            malformed("an added token has no id or content");
        tok::LiteralToken lt;
        lt.text = content->get<std::string>();
        lt.id = checked::tokenId(id->get<int64_t>(), entries, m_path,
                                 "added_tokens id of " + json(lt.text).dump());
        // As tokenizers does: a content the model already has keeps the model's id.
        if (const int32_t inModel = tok::lookup(m_vocab, lt.text); inModel >= 0) lt.id = inModel;
        lt.special = boolOr(t, "special", false);
        lt.lstrip = boolOr(t, "lstrip", false);
        lt.rstrip = boolOr(t, "rstrip", false);
        lt.singleWord = boolOr(t, "single_word", false);
        const size_t at = size_t(lt.id);
        if (at >= m_idToToken.size()) m_idToToken.resize(at + 1);
        m_idToToken[at] = lt.text;
        if (at >= m_special.size()) m_special.resize(at + 1, 0);
        if (lt.special) m_special[at] = 1;
        m_addedVocab.emplace(lt.text, lt.id);
        m_added.add(std::move(lt));
    }
}

SplitPattern HfTokenizer::patternOf(const json& pattern, const char* where) const {
    std::string regex;
    if (const json* r = member(pattern, "Regex"); r && r->is_string())
        regex = r->get<std::string>();
    else
        unsupported(std::string(where) + ": only Regex split patterns are supported");
    const auto p = splitPatternFromRegex(regex);
    if (!p)
        unsupported(std::string(where) + ": split regex " + json(regex).dump() +
                    " is not one of the supported patterns (GPT-2, Llama 3, Qwen2)");
    return *p;
}

// loadNormalizer, loadPreTokenizer, loadDecoder and loadPostProcessor recurse into "Sequence"
// entries: the depth of that recursion is bounded by the document's nesting, which parseJsonText
// limits to kMaxJsonDepth (64), so a hostile file cannot exhaust the stack here.
void HfTokenizer::loadNormalizer(const json& n) {
    const std::string type = stringOr(n, "type", "");
    if (type == "Sequence") {
        const json* list = member(n, "normalizers");
        if (!list || !list->is_array()) malformed("normalizer Sequence without \"normalizers\"");
        for (const json& x : *list) loadNormalizer(x);
    } else if (type == "Prepend") {
        m_norm.push_back({NormStep::Prepend, stringOr(n, "prepend", ""), {}});
    } else if (type == "Replace") {
        const json* pat = member(n, "pattern");
        const json* s = pat ? member(*pat, "String") : nullptr;
        if (!s || !s->is_string()) unsupported("normalizer Replace supports only String patterns");
        m_norm.push_back({NormStep::Replace, s->get<std::string>(), stringOr(n, "content", "")});
    } else if (type == "NFC") {
        m_norm.push_back({NormStep::Nfc, {}, {}});
    } else if (type == "Strip") {
        NormStep st{NormStep::StripSpace, {}, {}};
        st.left = boolOr(n, "strip_left", true);
        st.right = boolOr(n, "strip_right", true);
        m_norm.push_back(st);
    } else {
        unsupported("normalizer \"" + type + "\" is not supported");
    }
}

void HfTokenizer::loadPreTokenizer(const json& p) {
    const std::string type = stringOr(p, "type", "");
    if (type == "Sequence") {
        const json* list = member(p, "pretokenizers");
        if (!list || !list->is_array())
            malformed("pre_tokenizer Sequence without \"pretokenizers\"");
        for (const json& x : *list) loadPreTokenizer(x);
    } else if (type == "ByteLevel") {
        PreStep st{PreStep::ByteLevel};
        st.addPrefixSpace = boolOr(p, "add_prefix_space", true);
        st.useRegex = boolOr(p, "use_regex", true);
        m_pre.push_back(st);
        m_byteLevel = true;
    } else if (type == "Split") {
        PreStep st{PreStep::Split};
        const json* pat = member(p, "pattern");
        if (!pat) malformed("pre_tokenizer Split without a pattern");
        st.pattern = patternOf(*pat, "pre_tokenizer Split");
        const std::string behavior = stringOr(p, "behavior", "Isolated");
        if (behavior != "Isolated" || boolOr(p, "invert", false))
            unsupported("pre_tokenizer Split with behavior \"" + behavior +
                        "\" or invert is not supported (only Isolated)");
        m_pre.push_back(st);
    } else if (type == "Metaspace") {
        PreStep st{PreStep::Metaspace};
        st.replacement = stringOr(p, "replacement", kMetaspace);
        if (const json* ps = member(p, "prepend_scheme"); ps && ps->is_string()) {
            const std::string s = ps->get<std::string>();
            st.prepend = s == "first"   ? PreStep::First
                         : s == "never" ? PreStep::Never
                                        : PreStep::Always;
        } else {
            st.prepend = boolOr(p, "add_prefix_space", true) ? PreStep::Always : PreStep::Never;
        }
        st.split = boolOr(p, "split", true);
        m_pre.push_back(st);
    } else if (type == "Digits") {
        PreStep st{PreStep::Digits};
        st.individualDigits = boolOr(p, "individual_digits", false);
        m_pre.push_back(st);
    } else {
        unsupported("pre_tokenizer \"" + type + "\" is not supported");
    }
}

void HfTokenizer::loadDecoder(const json& d) {
    m_hasDecoder = true;
    const std::string type = stringOr(d, "type", "");
    if (type == "Sequence") {
        const json* list = member(d, "decoders");
        if (!list || !list->is_array()) malformed("decoder Sequence without \"decoders\"");
        for (const json& x : *list) loadDecoder(x);
    } else if (type == "Replace") {
        const json* pat = member(d, "pattern");
        const json* s = pat ? member(*pat, "String") : nullptr;
        if (!s || !s->is_string()) unsupported("decoder Replace supports only String patterns");
        m_dec.push_back({DecStep::Replace, s->get<std::string>(), stringOr(d, "content", "")});
    } else if (type == "ByteFallback") {
        m_dec.push_back({DecStep::ByteFallback, {}, {}});
    } else if (type == "Fuse") {
        m_dec.push_back({DecStep::Fuse, {}, {}});
    } else if (type == "Strip") {
        DecStep st{DecStep::Strip, {}, {}};
        const std::string c = stringOr(d, "content", " ");
        uint32_t cp = ' ';
        if (!c.empty()) unicode::decodeUtf8(c, 0, cp);
        st.stripChar = cp;
        const json* start = member(d, "start");
        const json* stop = member(d, "stop");
        st.start = start && start->is_number_unsigned() ? start->get<size_t>() : 0;
        st.stop = stop && stop->is_number_unsigned() ? stop->get<size_t>() : 0;
        m_dec.push_back(st);
    } else if (type == "ByteLevel") {
        m_dec.push_back({DecStep::ByteLevel, {}, {}});
        m_byteLevel = true;
    } else if (type == "Metaspace") {
        DecStep st{DecStep::Metaspace, stringOr(d, "replacement", kMetaspace), {}};
        if (const json* ps = member(d, "prepend_scheme"); ps && ps->is_string())
            st.prependStrip = ps->get<std::string>() != "never";
        else
            st.prependStrip = boolOr(d, "add_prefix_space", true);
        m_dec.push_back(st);
    } else {
        unsupported("decoder \"" + type + "\" is not supported");
    }
}

void HfTokenizer::loadPostProcessor(const json& p) {
    const std::string type = stringOr(p, "type", "");
    // A token id of the post_processor: a JSON integer within the token table (a float such as
    // 1e50 would be undefined behaviour in get<int32_t>()).
    auto tokenIdOf = [&](const json& v, const std::string& what) {
        if (!v.is_number_integer()) malformed("post_processor " + what + " is not a token id");
        return checked::tokenId(v.get<int64_t>(), int64_t(m_vocab.size()), m_path,
                                "post_processor token id");
    };
    auto specialIds = [&](const std::string& name) -> std::vector<int32_t> {
        // TemplateProcessing lists its special tokens with their ids.
        if (const json* st = member(p, "special_tokens"))
            if (const json* t = member(*st, name.c_str()))
                if (const json* ids = member(*t, "ids"); ids && ids->is_array()) {
                    std::vector<int32_t> out;
                    for (const json& v : *ids)
                        out.push_back(tokenIdOf(v, "id of \"" + name + "\""));
                    return out;
                }
        const int32_t id = idOf(name);
        if (id < 0)
            malformed("post_processor special token \"" + name + "\" is not in the vocabulary");
        return {id};
    };
    if (type == "Sequence") {
        const json* list = member(p, "processors");
        if (!list || !list->is_array()) malformed("post_processor Sequence without \"processors\"");
        for (const json& x : *list) loadPostProcessor(x);
    } else if (type == "TemplateProcessing") {
        const json* single = member(p, "single");
        if (!single || !single->is_array())
            malformed("TemplateProcessing without a \"single\" template");
        m_prefix.clear();
        m_suffix.clear();
        bool seenSequence = false;
        for (const json& item : *single) {
            if (member(item, "Sequence")) {
                seenSequence = true;
            } else if (const json* sp = member(item, "SpecialToken")) {
                const std::vector<int32_t> ids = specialIds(stringOr(*sp, "id", ""));
                auto& dst = seenSequence ? m_suffix : m_prefix;
                dst.insert(dst.end(), ids.begin(), ids.end());
            }
        }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
        const json* cls = member(p, "cls");
        const json* sep = member(p, "sep");
        if (!cls || !sep || !cls->is_array() || !sep->is_array() || cls->size() != 2 ||
            sep->size() != 2)
            malformed(type + " without cls/sep");
        m_prefix = {tokenIdOf((*cls)[1], "cls id")};
        m_suffix = {tokenIdOf((*sep)[1], "sep id")};
    } else if (type == "ByteLevel") {
        // adds no tokens (only adjusts offsets)
    } else {
        unsupported("post_processor \"" + type + "\" is not supported");
    }
}

void HfTokenizer::loadConfig(const std::string& configPath) {
    std::string bosText, eosText, padText;
    std::optional<bool> addBos, addEos;
    if (!configPath.empty()) {
        const json cfg = readJsonFile(configPath);
        if (!cfg.is_object()) throw FormatError(configPath, "the top level is not an object");
        bosText = tokenString(member(cfg, "bos_token"));
        eosText = tokenString(member(cfg, "eos_token"));
        padText = tokenString(member(cfg, "pad_token"));
        // A single template, or a list of named ones whose "default" entry is the template.
        if (const json* ct = member(cfg, "chat_template")) {
            if (ct->is_string()) {
                m_chatTemplate = ct->get<std::string>();
            } else if (ct->is_array()) {
                for (const json& e : *ct)
                    if (stringOr(e, "name", "") == "default")
                        m_chatTemplate = stringOr(e, "template", "");
            }
        }
        if (const json* v = member(cfg, "add_bos_token"); v && v->is_boolean())
            addBos = v->get<bool>();
        if (const json* v = member(cfg, "add_eos_token"); v && v->is_boolean())
            addEos = v->get<bool>();
    }
    if (!bosText.empty()) m_bos = idOf(bosText);
    if (!eosText.empty()) m_eos = idOf(eosText);
    if (!padText.empty()) m_pad = idOf(padText);
    // Newer transformers save the template beside the tokenizer as chat_template.jinja.
    if (m_chatTemplate.empty()) {
        const std::string dir = m_path.substr(0, m_path.find_last_of('/') + 1);
        std::error_code ec;
        if (std::filesystem::exists(dir + "chat_template.jinja", ec))
            m_chatTemplate = readTextFile(dir + "chat_template.jinja");
    }
    if (m_bos < 0 && !m_prefix.empty()) m_bos = m_prefix.front();
    if (m_eos < 0 && !m_suffix.empty()) m_eos = m_suffix.back();
    // Neither the config nor the template names them: the usual names.
    for (const char* name :
         {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|endoftext|>"})
        if (m_bos < 0) m_bos = idOf(name);
    for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})
        if (m_eos < 0) m_eos = idOf(name);
    if (addBos) {
        m_prefix.clear();
        if (*addBos && m_bos >= 0) m_prefix.push_back(m_bos);
    }
    if (addEos) {
        m_suffix.clear();
        if (*addEos && m_eos >= 0) m_suffix.push_back(m_eos);
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

void HfTokenizer::normalize(std::string& s) const {
    for (const NormStep& st : m_norm) {
        switch (st.kind) {
        case NormStep::Prepend:
            if (!s.empty()) s.insert(0, st.a);
            break;
        case NormStep::Replace:
            replaceAll(s, st.a, st.b);
            break;
        case NormStep::Nfc:
            s = unicode::nfc(s);
            break;
        case NormStep::StripSpace: {
            size_t b = 0, e = s.size();
            if (st.left) {
                while (b < e) {
                    uint32_t cp;
                    const size_t n = unicode::decodeUtf8(s, b, cp);
                    if (!unicode::isWhitespace(cp)) break;
                    b += n;
                }
            }
            if (st.right) {
                while (e > b) {
                    size_t k = e - 1;
                    while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
                    uint32_t cp;
                    unicode::decodeUtf8(s, k, cp);
                    if (!unicode::isWhitespace(cp)) break;
                    e = k;
                }
            }
            s = s.substr(b, e - b);
            break;
        }
        }
    }
}

void HfTokenizer::preTokenize(std::string_view segment, bool atStart,
                              std::vector<Piece>& pieces) const {
    pieces.clear();
    pieces.push_back({std::string(segment), atStart});
    std::vector<Piece> next;
    std::vector<std::string_view> parts;
    const auto& b2u = unicode::byteToUnicode();
    for (const PreStep& st : m_pre) {
        next.clear();
        for (Piece& p : pieces) {
            switch (st.kind) {
            case PreStep::Split:
                parts.clear();
                splitPretokens(p.text, st.pattern, parts);
                for (size_t i = 0; i < parts.size(); ++i)
                    next.push_back({std::string(parts[i]), p.atStart && i == 0});
                break;
            case PreStep::ByteLevel: {
                if (st.addPrefixSpace && (p.text.empty() || p.text[0] != ' '))
                    p.text.insert(0, " ");
                parts.clear();
                if (st.useRegex)
                    splitPretokens(p.text, SplitPattern::Gpt2, parts);
                else
                    parts.push_back(p.text);
                for (size_t i = 0; i < parts.size(); ++i) {
                    std::string mapped;
                    mapped.reserve(parts[i].size() * 2);
                    for (char c : parts[i]) mapped += b2u[static_cast<unsigned char>(c)];
                    next.push_back({std::move(mapped), p.atStart && i == 0});
                }
                break;
            }
            case PreStep::Metaspace: {
                std::string s = p.text;
                replaceAll(s, " ", st.replacement);
                const bool prepend =
                    st.prepend == PreStep::Always || (st.prepend == PreStep::First && p.atStart);
                if (prepend && s.compare(0, st.replacement.size(), st.replacement) != 0)
                    s.insert(0, st.replacement);
                if (!st.split || st.replacement.empty()) {
                    next.push_back({std::move(s), p.atStart});
                    break;
                }
                // split before each replacement, which stays with the text after it
                const size_t rl = st.replacement.size();
                size_t begin = 0;
                size_t from = s.compare(0, rl, st.replacement) == 0 ? rl : 0;
                while (true) {
                    const size_t hit = s.find(st.replacement, from);
                    if (hit == std::string::npos) {
                        if (begin < s.size())
                            next.push_back({s.substr(begin), p.atStart && begin == 0});
                        break;
                    }
                    next.push_back({s.substr(begin, hit - begin), p.atStart && begin == 0});
                    begin = hit;
                    from = hit + rl;
                }
                break;
            }
            case PreStep::Digits: {
                const std::string& s = p.text;
                size_t i = 0, plain = 0;
                bool first = true;
                auto emit = [&](size_t b, size_t e) {
                    if (e > b) next.push_back({s.substr(b, e - b), p.atStart && first});
                    first = false;
                };
                while (i < s.size()) {
                    uint32_t cp;
                    size_t n = unicode::decodeUtf8(s, i, cp);
                    if (!unicode::isNumber(cp)) {
                        i += n;
                        continue;
                    }
                    emit(plain, i);
                    size_t e = i + n;
                    if (!st.individualDigits) {
                        while (e < s.size()) {
                            const size_t m = unicode::decodeUtf8(s, e, cp);
                            if (!unicode::isNumber(cp)) break;
                            e += m;
                        }
                    }
                    emit(i, e);
                    plain = i = e;
                }
                emit(plain, s.size());
                break;
            }
            }
        }
        pieces.swap(next);
    }
}

void HfTokenizer::encodeWord(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (m_ignoreMerges) {
        const int32_t id = tok::lookup(m_vocab, word);
        if (id >= 0) {
            out.push_back(id);
            return;
        }
    }
    const bool cacheable = m_cache.cacheable(word);
    if (cacheable && m_cache.get(word, out)) return;
    thread_local std::vector<int32_t> syms;
    syms.clear();
    bool pendingUnk = false;
    for (size_t i = 0; i < word.size();) {
        uint32_t cp;
        size_t len = unicode::decodeUtf8(word, i, cp);
        if (cp == unicode::kInvalidCodepoint) len = 1;
        const int32_t id = tok::lookup(m_vocab, word.substr(i, len));
        bool done = false;
        if (id >= 0) {
            if (pendingUnk) syms.push_back(m_unk);
            pendingUnk = false;
            syms.push_back(id);
            done = true;
        } else if (m_byteFallback) {
            bool all = true;
            for (size_t k = i; k < i + len; ++k)
                all = all && m_byteIds[static_cast<unsigned char>(word[k])] >= 0;
            if (all) {
                if (pendingUnk) syms.push_back(m_unk);
                pendingUnk = false;
                for (size_t k = i; k < i + len; ++k)
                    syms.push_back(m_byteIds[static_cast<unsigned char>(word[k])]);
                done = true;
            }
        }
        if (!done && m_unk >= 0) {
            if (pendingUnk && !m_fuseUnk) syms.push_back(m_unk);
            pendingUnk = true;
        }
        i += len;
    }
    if (pendingUnk) syms.push_back(m_unk);
    m_merges.apply(syms);
    if (cacheable) m_cache.put(word, syms.data(), syms.size());
    out.insert(out.end(), syms.begin(), syms.end());
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool addBos,
                                         bool parseSpecial) const {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (addBos) ids.insert(ids.end(), m_prefix.begin(), m_prefix.end());
    std::vector<tok::Fragment> frags;
    if (m_added.empty())
        frags.push_back({0, text.size(), -1});
    else
        m_added.split(text, parseSpecial, frags);
    std::vector<Piece> pieces;
    std::string seg;
    for (const tok::Fragment& f : frags) {
        if (f.token >= 0) {
            ids.push_back(f.token);
            continue;
        }
        seg.assign(text.substr(f.begin, f.end - f.begin));
        normalize(seg);
        if (m_pre.empty()) {
            encodeWord(seg, ids);
            continue;
        }
        preTokenize(seg, f.begin == 0, pieces);
        for (const Piece& p : pieces) encodeWord(p.text, ids);
    }
    if (addBos) ids.insert(ids.end(), m_suffix.begin(), m_suffix.end());
    return ids;
}

// ---------------------------------------------------------------------------------------------
// Decoding

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skipSpecial) const {
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (int32_t id : ids) {
        if (id < 0 || id >= vocabSize())
            throw ArgumentError("token id " + std::to_string(id) + " is outside the vocabulary (" +
                                std::to_string(vocabSize()) + " tokens)");
        if (skipSpecial && m_special[size_t(id)]) continue;
        toks.push_back(m_idToToken[size_t(id)]);
    }
    if (!m_hasDecoder) {
        std::string out;
        for (size_t i = 0; i < toks.size(); ++i) {
            if (i) out += ' ';
            out += toks[i];
        }
        return out;
    }
    for (const DecStep& st : m_dec) {
        switch (st.kind) {
        case DecStep::Replace:
            for (std::string& t : toks) replaceAll(t, st.a, st.b);
            break;
        case DecStep::ByteFallback:
            // Bytes are kept as they are, also when they do not form valid UTF-8.
            for (std::string& t : toks)
                if (const int b = tok::parseByteToken(t); b >= 0) t = std::string(1, char(b));
            break;
        case DecStep::Fuse: {
            std::string all;
            for (const std::string& t : toks) all += t;
            toks.assign(1, std::move(all));
            break;
        }
        case DecStep::Strip:
            for (std::string& t : toks) {
                size_t b = 0, e = t.size();
                for (size_t k = 0; k < st.start && b < e; ++k) {
                    uint32_t cp;
                    const size_t n = unicode::decodeUtf8(t, b, cp);
                    if (cp != st.stripChar) break;
                    b += n;
                }
                for (size_t k = 0; k < st.stop && e > b; ++k) {
                    size_t s = e - 1;
                    while (s > b && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80) --s;
                    uint32_t cp;
                    unicode::decodeUtf8(t, s, cp);
                    if (cp != st.stripChar) break;
                    e = s;
                }
                t = t.substr(b, e - b);
            }
            break;
        case DecStep::ByteLevel: {
            std::string all;
            for (const std::string& t : toks) {
                const size_t mark = all.size();
                bool ok = true;
                for (size_t i = 0; i < t.size() && ok;) {
                    uint32_t cp;
                    const size_t n = unicode::decodeUtf8(t, i, cp);
                    const int b =
                        cp == unicode::kInvalidCodepoint ? -1 : unicode::unicodeToByte(cp);
                    if (b < 0)
                        ok = false;
                    else
                        all += char(b);
                    i += n;
                }
                if (!ok) { // not byte-level text (e.g. an added token): as it is
                    all.resize(mark);
                    all += t;
                }
            }
            toks.assign(1, std::move(all));
            break;
        }
        case DecStep::Metaspace:
            for (size_t i = 0; i < toks.size(); ++i) {
                replaceAll(toks[i], st.a, " ");
                if (i == 0 && st.prependStrip && !toks[i].empty() && toks[i][0] == ' ')
                    toks[i].erase(0, 1);
            }
            break;
        }
    }
    std::string out;
    for (const std::string& t : toks) out += t;
    return out;
}

// ---------------------------------------------------------------------------------------------
// GGUF export

GgufVocab HfTokenizer::ggufVocab(std::vector<std::string>* warnings) const {
    auto warn = [&](const std::string& w) {
        if (warnings) warnings->push_back(m_path + ": " + w);
    };
    GgufVocab v;
    v.model = m_byteLevel ? "gpt2" : "llama";
    v.bosId = m_bos;
    v.eosId = m_eos;
    v.unkId = m_unk;
    v.padId = m_pad;
    v.chatTemplate = m_chatTemplate;
    // What encode(addBos = true) adds around the text.
    v.addBos = !m_prefix.empty();
    v.addEos = !m_suffix.empty();
    if (m_prefix.size() > 1 || (v.addBos && m_prefix[0] != m_bos))
        warn("the post-processor adds more than BOS before the text; GGUF keeps only "
             "add_bos_token");
    if (m_suffix.size() > 1 || (v.addEos && m_suffix[0] != m_eos))
        warn("the post-processor adds more than EOS after the text; GGUF keeps only "
             "add_eos_token");
    const int32_t n = vocabSize();
    const int32_t nMerges = int32_t(m_mergeTexts.size());
    v.tokens.resize(size_t(n));
    v.tokenTypes.assign(size_t(n), kGgufTokenNormal);
    if (!m_byteLevel) v.scores.assign(size_t(n), 0.0f);
    for (int32_t id = 0; id < n; ++id) {
        std::string text = m_idToToken[size_t(id)];
        int32_t& type = v.tokenTypes[size_t(id)];
        if (text.empty()) {
            text = "[PAD" + std::to_string(id) + "]";
            type = kGgufTokenUnused;
        } else if (id == m_unk) {
            type = kGgufTokenUnknown;
        } else if (tok::lookup(m_addedVocab, text) == id) {
            type = m_special[size_t(id)] ? kGgufTokenControl : kGgufTokenUserDefined;
        } else if (!m_byteLevel && tok::parseByteToken(text) >= 0) {
            type = kGgufTokenByte;
        }
        if (!m_byteLevel && type == kGgufTokenNormal) {
            // llama.cpp merges the adjacent pair whose result scores highest: the earlier the
            // merge that makes a token, the higher its score. Tokens no merge makes rank last.
            const int32_t r =
                size_t(id) < m_mergeRankOf.size() ? m_mergeRankOf[size_t(id)] : int32_t(-1);
            v.scores[size_t(id)] = r >= 0 ? -float(r) : -float(nMerges + id);
        }
        v.tokens[size_t(id)] = std::move(text);
    }
    if (m_byteLevel) {
        v.merges = m_mergeTexts;
        // llama.cpp names its split regexes; ByteLevel with use_regex splits like GPT-2.
        std::optional<SplitPattern> pattern;
        bool other = false;
        for (const PreStep& st : m_pre) {
            if (st.kind == PreStep::Split) {
                other |= pattern.has_value();
                pattern = st.pattern;
            } else if (st.kind == PreStep::ByteLevel) {
                if (st.useRegex) {
                    other |= pattern.has_value();
                    pattern = SplitPattern::Gpt2;
                }
                if (st.addPrefixSpace)
                    warn("ByteLevel add_prefix_space has no GGUF equivalent: llama.cpp will "
                         "not prepend a space");
            } else {
                other = true;
            }
        }
        if (m_ignoreMerges && pattern != SplitPattern::Llama3)
            warn("ignore_merges is only part of llama.cpp's llama-bpe pre-tokenizer");
        v.pre = "default";
        if (!pattern || other) {
            warn("the pre-tokenizer has no llama.cpp equivalent; written as \"default\"");
        } else {
            switch (*pattern) {
            case SplitPattern::Gpt2:
                v.pre = "gpt-2";
                break;
            case SplitPattern::Llama3:
                v.pre = "llama-bpe";
                break;
            case SplitPattern::Qwen2:
                v.pre = "qwen2";
                break;
            }
        }
        v.addSpacePrefix = false;
    } else {
        v.pre = "default";
        // SentencePiece's dummy prefix: a normalizer that prepends "▁", or a Metaspace
        // pre-tokenizer that prepends its replacement.
        bool prefix = false;
        for (const NormStep& st : m_norm)
            prefix |= st.kind == NormStep::Prepend && st.a == kMetaspace;
        for (const PreStep& st : m_pre)
            prefix |= st.kind == PreStep::Metaspace && st.prepend != PreStep::Never;
        v.addSpacePrefix = prefix;
        if (m_merges.size() == 0) warn("no merges: SentencePiece scores cannot order the merges");
    }
    return v;
}

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::fromHfJson(const std::string& tokenizerJsonPath,
                                                 const std::string& tokenizerConfigPath) {
    auto t = std::make_unique<HfTokenizer>();
    t->load(tokenizerJsonPath, tokenizerConfigPath);
    return t;
}

} // namespace lcw
