// llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length and
// the bytes. Encoding follows llama2.c's encode(): optional BOS (1), a dummy-prefix " " token for
// non-empty text, each UTF-8 code point looked up in the vocabulary (else one byte token per
// byte, id = byte + 3), then the adjacent pair whose concatenation is the best-scoring token is
// merged until none is left.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/tokenizer/bpe.h"
#include "core/tokenizer/tokenizer.h"

#include <cstring>

namespace lcw {

namespace {

class Llama2cTokenizer final : public Tokenizer {
public:
    Llama2cTokenizer(std::vector<std::string> tokens, std::vector<float> scores)
        : m_tokens(std::move(tokens)), m_scores(std::move(scores)) {
        for (size_t i = 0; i < m_tokens.size(); ++i) m_vocab.emplace(m_tokens[i], int32_t(i));
        m_space = tok::lookup(m_vocab, " ");
    }

    std::vector<int32_t> encode(std::string_view text, bool addBos, bool) const override {
        std::vector<int32_t> ids;
        if (addBos && bosId() >= 0) ids.push_back(bosId());
        if (text.empty()) return ids;
        // Working buffer: the texts of the initial tokens, back to back, so that joining two
        // adjacent symbols is a substring (llama2.c joins the two token strings).
        std::string buf;
        buf.reserve(text.size() + 16);
        std::vector<tok::Span> spans;
        spans.reserve(text.size() + 1);
        auto pushToken = [&](int32_t id) {
            const std::string& t = m_tokens[size_t(id)];
            spans.push_back({uint32_t(buf.size()), uint32_t(buf.size() + t.size()), id});
            buf += t;
        };
        if (m_space >= 0) pushToken(m_space);
        for (size_t i = 0; i < text.size();) {
            size_t j = i + 1;
            while (j < text.size() && j - i < 4 &&
                   (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80)
                ++j;
            const int32_t id = tok::lookup(m_vocab, text.substr(i, j - i));
            if (id >= 0) {
                pushToken(id);
            } else {
                for (size_t k = i; k < j; ++k) {
                    const int32_t b = int32_t(static_cast<unsigned char>(text[k])) + 3;
                    if (b < vocabSize()) pushToken(b);
                }
            }
            i = j;
        }
        tok::applyScoredMerges(buf, spans, m_vocab, m_scores);
        for (const tok::Span& s : spans) ids.push_back(s.id);
        return ids;
    }

    std::string decode(const std::vector<int32_t>& ids, bool skipSpecial) const override {
        std::string out;
        int32_t prev = -1;
        for (int32_t id : ids) {
            if (id < 0 || id >= vocabSize())
                throw ArgumentError("token id " + std::to_string(id) +
                                    " is outside the vocabulary (" + std::to_string(vocabSize()) +
                                    " tokens)");
            if (skipSpecial && (id == bosId() || id == eosId())) {
                prev = id;
                continue;
            }
            std::string_view piece = m_tokens[size_t(id)];
            if (prev == bosId() && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
            const int b = tok::parseByteToken(piece);
            if (b >= 0)
                out += char(b);
            else
                out += piece;
            prev = id;
        }
        return out;
    }

    std::string tokenText(int32_t id) const override {
        if (id < 0 || id >= vocabSize())
            throw ArgumentError("token id " + std::to_string(id) + " is outside the vocabulary");
        return m_tokens[size_t(id)];
    }
    int32_t vocabSize() const override { return int32_t(m_tokens.size()); }
    int32_t bosId() const override { return vocabSize() > 1 ? 1 : -1; }
    int32_t eosId() const override { return vocabSize() > 2 ? 2 : -1; }
    bool addsBos() const override { return bosId() >= 0; }
    std::string kind() const override { return "llama2c"; }
    GgufVocab ggufVocab(std::vector<std::string>*) const override {
        // llama2.c's tokenizer.bin is a SentencePiece vocabulary with "▁" written as a plain
        // space and BOS/EOS spelled "\n<s>\n" / "\n</s>\n"; its scores are SentencePiece's.
        GgufVocab v;
        v.model = "llama";
        v.pre = "default";
        v.scores = m_scores;
        v.bosId = bosId();
        v.eosId = eosId();
        v.addBos = true;
        v.addSpacePrefix = true;
        const std::string kSpace = "\xE2\x96\x81";
        for (int32_t id = 0; id < vocabSize(); ++id) {
            std::string text = m_tokens[size_t(id)];
            int32_t type = kGgufTokenNormal;
            if (id == bosId() || id == eosId()) {
                type = kGgufTokenControl;
                const auto a = text.find_first_not_of('\n'), b = text.find_last_not_of('\n');
                if (a != std::string::npos) text = text.substr(a, b - a + 1);
            } else if (text == "<unk>") {
                type = kGgufTokenUnknown;
                if (v.unkId < 0) v.unkId = id;
            } else if (tok::parseByteToken(text) >= 0) {
                type = kGgufTokenByte;
            } else {
                std::string sp;
                for (char c : text) sp += c == ' ' ? kSpace : std::string(1, c);
                text = std::move(sp);
            }
            v.tokens.push_back(std::move(text));
            v.tokenTypes.push_back(type);
        }
        return v;
    }

private:
    std::vector<std::string> m_tokens;
    std::vector<float> m_scores;
    tok::VocabMap m_vocab;
    int32_t m_space = -1;
};

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::fromLlama2c(const std::string& path, int32_t vocabSize) {
    if (vocabSize <= 0)
        throw ArgumentError(path + ": vocabulary size must be positive (got " +
                            std::to_string(vocabSize) + ")");
    auto file = MappedFile::open(path);
    const auto* p = reinterpret_cast<const unsigned char*>(file->data());
    const uint64_t size = file->size();
    uint64_t off = 0;
    auto readI32 = [&](const char* what) {
        if (!file->contains(off, 4))
            throw FormatError(path, std::string("file is truncated: missing ") + what, off);
        int32_t v;
        std::memcpy(&v, p + off, 4);
        off += 4;
        return v;
    };
    auto readF32 = [&](const char* what) {
        if (!file->contains(off, 4))
            throw FormatError(path, std::string("file is truncated: missing ") + what, off);
        float v;
        std::memcpy(&v, p + off, 4);
        off += 4;
        return v;
    };
    const int32_t maxLen = readI32("max_token_length");
    if (maxLen <= 0)
        throw FormatError(path, "max_token_length is " + std::to_string(maxLen) + ", not positive",
                          0);
    // Each token takes at least 8 bytes (score and length): refuse a vocabulary the file cannot
    // hold before reserving tables for it.
    if (uint64_t(vocabSize) > (size - off) / 8)
        throw FormatError(path,
                          "file is truncated: the model's vocabulary of " +
                              std::to_string(vocabSize) + " tokens needs at least " +
                              std::to_string(uint64_t(vocabSize) * 8) + " bytes but only " +
                              std::to_string(size - off) + " remain",
                          off);
    std::vector<std::string> tokens;
    std::vector<float> scores;
    tokens.reserve(size_t(vocabSize));
    scores.reserve(size_t(vocabSize));
    for (int32_t i = 0; i < vocabSize; ++i) {
        const std::string tokenNo =
            "token " + std::to_string(i) + " of " + std::to_string(vocabSize);
        if (off >= size)
            throw FormatError(path,
                              "file is truncated: it holds " + std::to_string(i) +
                                  " tokens but the model's vocabulary has " +
                                  std::to_string(vocabSize),
                              off);
        const float score = readF32(("the score of " + tokenNo).c_str());
        const uint64_t lenAt = off;
        const int32_t len = readI32(("the length of " + tokenNo).c_str());
        if (len < 0)
            throw FormatError(path, "negative length " + std::to_string(len) + " of " + tokenNo,
                              lenAt);
        if (!file->contains(off, uint64_t(len)))
            throw FormatError(path,
                              "file is truncated: " + tokenNo + " has length " +
                                  std::to_string(len) + " but only " + std::to_string(size - off) +
                                  " bytes remain",
                              lenAt);
        tokens.emplace_back(reinterpret_cast<const char*>(p + off), size_t(len));
        scores.push_back(score);
        off += uint64_t(len);
    }
    return std::make_unique<Llama2cTokenizer>(std::move(tokens), std::move(scores));
}

} // namespace lcw
