#include "core/tokenizer/literal_tokens.h"

#include "core/tokenizer/unicode.h"

#include <algorithm>
#include <stdexcept>

namespace lcw::tok {

void LiteralMatcher::add(LiteralToken t) {
    if (t.text.empty()) return;
    if (!m_texts.insert(t.text).second) return; // the first definition wins
    auto& bucket = m_byFirstByte[static_cast<unsigned char>(t.text[0])];
    m_tokens.push_back(std::move(t));
    bucket.push_back(uint32_t(m_tokens.size() - 1));
    m_finished = false;
}

void LiteralMatcher::finish() {
    if (m_finished) return;
    // Longest first; among equal lengths the order of definition.
    for (auto& bucket : m_byFirstByte)
        std::stable_sort(bucket.begin(), bucket.end(), [&](uint32_t a, uint32_t b) {
            return m_tokens[a].text.size() > m_tokens[b].text.size();
        });
    m_finished = true;
}

namespace {

/// Start of the character that ends just before byte `pos` (pos > 0).
size_t prevCharStart(std::string_view s, size_t pos) {
    size_t start = pos - 1;
    while (start > 0 && pos - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80)
        --start;
    uint32_t cp;
    const size_t n = unicode::decodeUtf8(s, start, cp);
    return start + n == pos ? start : pos - 1;
}

uint32_t codepointBefore(std::string_view s, size_t pos) {
    uint32_t cp;
    unicode::decodeUtf8(s, prevCharStart(s, pos), cp);
    return cp;
}

bool isWordChar(uint32_t cp) {
    if (cp == '_') return true;
    const auto c = unicode::classify(cp);
    return c == unicode::CharClass::Letter || c == unicode::CharClass::Number;
}

} // namespace

void LiteralMatcher::split(std::string_view text, bool includeSpecial,
                           std::vector<Fragment>& out) const {
    if (!m_finished) throw std::logic_error("LiteralMatcher::split before finish()");
    size_t plainBegin = 0;
    size_t i = 0;
    while (i < text.size()) {
        const auto& bucket = m_byFirstByte[static_cast<unsigned char>(text[i])];
        const LiteralToken* hit = nullptr;
        for (uint32_t k : bucket) {
            const LiteralToken& t = m_tokens[k];
            if (t.special && !includeSpecial) continue;
            if (text.size() - i < t.text.size() || text.compare(i, t.text.size(), t.text) != 0)
                continue;
            if (t.singleWord) {
                const size_t e = i + t.text.size();
                if (i > 0 && isWordChar(codepointBefore(text, i))) continue;
                uint32_t cp = 0;
                if (e < text.size() && (unicode::decodeUtf8(text, e, cp), isWordChar(cp))) continue;
            }
            hit = &t;
            break;
        }
        if (!hit) {
            ++i;
            continue;
        }
        size_t b = i, e = i + hit->text.size();
        if (hit->lstrip) {
            while (b > plainBegin) {
                const size_t st = prevCharStart(text, b);
                uint32_t cp;
                unicode::decodeUtf8(text, st, cp);
                if (st < plainBegin || !unicode::isWhitespace(cp)) break;
                b = st;
            }
        }
        if (hit->rstrip) {
            while (e < text.size()) {
                uint32_t cp;
                const size_t n = unicode::decodeUtf8(text, e, cp);
                if (!unicode::isWhitespace(cp)) break;
                e += n;
            }
        }
        if (b > plainBegin) out.push_back({plainBegin, b, -1});
        out.push_back({b, e, hit->id});
        plainBegin = i = e;
    }
    if (plainBegin < text.size()) out.push_back({plainBegin, text.size(), -1});
}

} // namespace lcw::tok
