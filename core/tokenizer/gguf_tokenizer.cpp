// Tokenizers from GGUF metadata (tokenizer.ggml.*), following llama.cpp:
//  - model "llama": SentencePiece BPE by scores: the text (spaces escaped to "▁", a leading
//    space added when add_space_prefix and the fragment follows BOS/a special token) is split
//    into UTF-8 chars; the adjacent pair whose concatenation is the best-scoring token merges
//    first; symbols that are no token become byte tokens <0xNN> (type 6), else unk.
//  - model "gpt2": byte-level BPE by merge rank, pre-split by the regex tokenizer.ggml.pre names.
// User-defined tokens (type 4) are always matched literally in the text; control and unknown
// tokens (types 3, 2) only with parseSpecial.
#include "core/common/error.h"
#include "core/tokenizer/bpe.h"
#include "core/tokenizer/literal_tokens.h"
#include "core/tokenizer/pretokenize.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/unicode.h"

#include <array>
#include <limits>

namespace lcw {

namespace {

constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUser = 4,
                  kTypeUnused = 5, kTypeByte = 6;

class GgufTokenizer final : public Tokenizer {
public:
    GgufTokenizer(const GgufVocab& v, const std::string& source) : m_v(v) {
        const size_t n = v.tokens.size();
        if (n == 0) throw FormatError(source, "tokenizer.ggml.tokens is empty");
        if (n > size_t(std::numeric_limits<int32_t>::max()))
            throw FormatError(source, "tokenizer.ggml.tokens has " + std::to_string(n) +
                                          " entries, more than token ids can number");
        if (!v.scores.empty() && v.scores.size() != n)
            throw FormatError(source, "tokenizer.ggml.scores has " +
                                          std::to_string(v.scores.size()) + " entries for " +
                                          std::to_string(n) + " tokens");
        if (!v.tokenTypes.empty() && v.tokenTypes.size() != n)
            throw FormatError(source, "tokenizer.ggml.token_type has " +
                                          std::to_string(v.tokenTypes.size()) + " entries for " +
                                          std::to_string(n) + " tokens");
        auto checkId = [&](int32_t id, const char* key) {
            if (id < -1 || id >= int32_t(n))
                throw FormatError(source, std::string(key) + " " + std::to_string(id) +
                                              " is outside the vocabulary of " + std::to_string(n) +
                                              " tokens");
        };
        checkId(v.bosId, "tokenizer.ggml.bos_token_id");
        checkId(v.eosId, "tokenizer.ggml.eos_token_id");
        checkId(v.unkId, "tokenizer.ggml.unknown_token_id");
        if (v.padId < -1 || v.padId >= int32_t(n)) m_v.padId = -1;

        if (v.model == "llama") {
            m_spm = true;
        } else if (v.model == "gpt2") {
            m_spm = false;
            if (v.pre.empty() || v.pre == "default" || v.pre == "gpt-2" || v.pre == "gpt2") {
                m_pattern = SplitPattern::Gpt2;
            } else if (v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3") {
                m_pattern = SplitPattern::Llama3;
                m_ignoreMerges = true;
            } else if (v.pre == "qwen2") {
                m_pattern = SplitPattern::Qwen2;
            } else {
                throw UnsupportedError(source + ": GGUF pre-tokenizer \"" + v.pre +
                                       "\" is not supported (known: default, gpt-2, llama-bpe, "
                                       "llama3, qwen2)");
            }
        } else {
            throw UnsupportedError(source + ": GGUF tokenizer model \"" + v.model +
                                   "\" is not supported (known: llama, gpt2)");
        }

        m_types.resize(n, kTypeNormal);
        if (!v.tokenTypes.empty())
            m_types = v.tokenTypes;
        else {
            for (int32_t id : {v.bosId, v.eosId, m_v.padId})
                if (id >= 0) m_types[size_t(id)] = kTypeControl;
            if (v.unkId >= 0) m_types[size_t(v.unkId)] = kTypeUnknown;
        }
        for (size_t i = 0; i < n; ++i) m_vocab.emplace(v.tokens[i], int32_t(i));
        for (size_t i = 0; i < n; ++i) {
            const int32_t t = m_types[i];
            if (t == kTypeControl || t == kTypeUnknown || t == kTypeUser) {
                tok::LiteralToken lt;
                lt.text = v.tokens[i];
                lt.id = int32_t(i);
                lt.special = t != kTypeUser;
                m_literals.add(std::move(lt));
            }
        }
        m_literals.finish();
        if (m_spm) {
            m_byteIds.fill(-1);
            for (int b = 0; b < 256; ++b) {
                m_byteIds[size_t(b)] = tok::lookup(m_vocab, tok::byteTokenText(uint8_t(b)));
            }
        } else {
            for (size_t r = 0; r < v.merges.size(); ++r) {
                const std::string& m = v.merges[r];
                const size_t sp = m.find(' ', 1);
                if (sp == std::string::npos)
                    throw FormatError(source, "tokenizer.ggml.merges entry " + std::to_string(r) +
                                                  " (\"" + m + "\") is not \"left right\"");
                const std::string_view a(m.data(), sp), b(m.data() + sp + 1, m.size() - sp - 1);
                const int32_t ia = tok::lookup(m_vocab, a), ib = tok::lookup(m_vocab, b);
                const int32_t im = tok::lookup(m_vocab, std::string(a) + std::string(b));
                if (ia < 0 || ib < 0 || im < 0) continue; // llama.cpp ignores such merges too
                m_merges.add(ia, ib, int32_t(r), im);
            }
        }
    }

    std::vector<int32_t> encode(std::string_view text, bool addBos,
                                bool parseSpecial) const override {
        std::vector<int32_t> ids;
        if (addBos && m_v.addBos && m_v.bosId >= 0) ids.push_back(m_v.bosId);
        std::vector<tok::Fragment> frags;
        m_literals.split(text, parseSpecial, frags);
        bool prevSpecial = true;
        for (const tok::Fragment& f : frags) {
            if (f.token >= 0) {
                ids.push_back(f.token);
                prevSpecial = true;
                continue;
            }
            const std::string_view part = text.substr(f.begin, f.end - f.begin);
            if (m_spm)
                encodeSpm(part, m_v.addSpacePrefix && prevSpecial, ids);
            else
                encodeBpe(part, ids);
            prevSpecial = false;
        }
        if (addBos && m_v.addEos && m_v.eosId >= 0) ids.push_back(m_v.eosId);
        return ids;
    }

    std::string decode(const std::vector<int32_t>& ids, bool skipSpecial) const override {
        std::string out;
        std::string bytes; // byte-level: the bytes of normal tokens
        bool first = true;
        for (int32_t id : ids) {
            if (id < 0 || id >= vocabSize())
                throw ArgumentError("token id " + std::to_string(id) +
                                    " is outside the vocabulary (" + std::to_string(vocabSize()) +
                                    " tokens)");
            const int32_t type = m_types[size_t(id)];
            const std::string& t = m_v.tokens[size_t(id)];
            if (skipSpecial && (type == kTypeControl || type == kTypeUnknown)) continue;
            const bool stripSpace = first && m_spm && m_v.addSpacePrefix;
            first = false;
            if (type == kTypeControl || type == kTypeUser || type == kTypeUnknown ||
                type == kTypeUnused) {
                out += t;
                continue;
            }
            if (m_spm) {
                if (type == kTypeByte) {
                    const int b = tok::parseByteToken(t);
                    if (b >= 0) {
                        out += char(b);
                        continue;
                    }
                }
                std::string piece = unescapeSpaces(t);
                if (stripSpace && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
                out += piece;
            } else {
                for (size_t i = 0; i < t.size();) {
                    uint32_t cp;
                    const size_t len = unicode::decodeUtf8(t, i, cp);
                    const int b =
                        cp == unicode::kInvalidCodepoint ? -1 : unicode::unicodeToByte(cp);
                    if (b >= 0)
                        out += char(b);
                    else
                        out.append(t, i, len);
                    i += len;
                }
            }
        }
        return out;
    }

    std::string tokenText(int32_t id) const override {
        if (id < 0 || id >= vocabSize())
            throw ArgumentError("token id " + std::to_string(id) + " is outside the vocabulary");
        return m_v.tokens[size_t(id)];
    }
    int32_t vocabSize() const override { return int32_t(m_v.tokens.size()); }
    int32_t bosId() const override { return m_v.bosId; }
    int32_t eosId() const override { return m_v.eosId; }
    bool addsBos() const override { return m_v.addBos && m_v.bosId >= 0; }
    std::string kind() const override { return m_spm ? "spm" : "bpe-bytelevel"; }
    GgufVocab ggufVocab(std::vector<std::string>*) const override {
        GgufVocab v = m_v;
        v.tokenTypes = m_types; // filled in when the file had none
        return v;
    }

private:
    static std::string unescapeSpaces(std::string_view t) {
        std::string s;
        s.reserve(t.size());
        for (size_t i = 0; i < t.size(); ++i) {
            if (t.compare(i, 3, "\xE2\x96\x81") == 0) {
                s += ' ';
                i += 2;
            } else {
                s += t[i];
            }
        }
        return s;
    }

    void encodeSpm(std::string_view part, bool spacePrefix, std::vector<int32_t>& ids) const {
        std::string buf;
        buf.reserve(part.size() + 8);
        if (spacePrefix) buf += "\xE2\x96\x81";
        for (char c : part) {
            if (c == ' ')
                buf += "\xE2\x96\x81";
            else
                buf += c;
        }
        std::vector<tok::Span> spans;
        spans.reserve(buf.size());
        for (size_t i = 0; i < buf.size();) {
            const size_t len = std::min(unicode::utf8LeadLength(static_cast<unsigned char>(buf[i])),
                                        buf.size() - i);
            spans.push_back({uint32_t(i), uint32_t(i + len), -1});
            i += len;
        }
        tok::applyScoredMerges(buf, spans, m_vocab, m_v.scores);
        for (const tok::Span& s : spans) {
            int32_t id = s.id;
            if (id < 0)
                id = tok::lookup(m_vocab, std::string_view(buf).substr(s.begin, s.end - s.begin));
            if (id >= 0) {
                ids.push_back(id);
                continue;
            }
            for (uint32_t k = s.begin; k < s.end; ++k) {
                const int32_t b = m_byteIds[static_cast<unsigned char>(buf[k])];
                if (b >= 0)
                    ids.push_back(b);
                else if (m_v.unkId >= 0)
                    ids.push_back(m_v.unkId);
            }
        }
    }

    void encodeBpe(std::string_view part, std::vector<int32_t>& ids) const {
        thread_local std::vector<std::string_view> words;
        thread_local std::vector<int32_t> syms;
        words.clear();
        splitPretokens(part, m_pattern, words);
        const auto& b2u = unicode::byteToUnicode();
        std::string mapped;
        for (std::string_view w : words) {
            mapped.clear();
            for (char c : w) mapped += b2u[static_cast<unsigned char>(c)];
            if (m_ignoreMerges) {
                const int32_t id = tok::lookup(m_vocab, mapped);
                if (id >= 0) {
                    ids.push_back(id);
                    continue;
                }
            }
            if (m_cache.cacheable(mapped) && m_cache.get(mapped, ids)) continue;
            syms.clear();
            for (size_t i = 0; i < mapped.size();) {
                const size_t len =
                    std::min(unicode::utf8LeadLength(static_cast<unsigned char>(mapped[i])),
                             mapped.size() - i);
                const int32_t id = tok::lookup(m_vocab, std::string_view(mapped).substr(i, len));
                if (id >= 0)
                    syms.push_back(id);
                else if (m_v.unkId >= 0)
                    syms.push_back(m_v.unkId);
                i += len;
            }
            m_merges.apply(syms);
            if (m_cache.cacheable(mapped)) m_cache.put(mapped, syms.data(), syms.size());
            ids.insert(ids.end(), syms.begin(), syms.end());
        }
    }

    GgufVocab m_v;
    bool m_spm = true;
    SplitPattern m_pattern = SplitPattern::Gpt2;
    bool m_ignoreMerges = false;
    std::vector<int32_t> m_types;
    tok::VocabMap m_vocab;
    tok::LiteralMatcher m_literals;
    std::array<int32_t, 256> m_byteIds{};
    tok::RankedMerges m_merges;
    mutable tok::WordCache m_cache;
};

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::fromGguf(const GgufVocab& vocab, const std::string& source) {
    return std::make_unique<GgufTokenizer>(vocab, source);
}

} // namespace lcw
