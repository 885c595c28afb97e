#pragma once
/// \file
/// Internal: finds added / special tokens written literally in a text (leftmost match, the
/// longest token among those starting there), as tokenizers' AddedVocabulary and llama.cpp's
/// special-token partition do before any normalization or pre-tokenization.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace lcw::tok {

struct LiteralToken {
    std::string text;
    int32_t id = -1;
    bool special = false;    ///< matched only when the caller parses special tokens
    bool lstrip = false;     ///< the match also takes the white space on its left
    bool rstrip = false;     ///< ... and on its right
    bool singleWord = false; ///< only when not inside a word
};

struct Fragment {
    size_t begin = 0; ///< byte range in the text (a token's range includes stripped space)
    size_t end = 0;
    int32_t token = -1; ///< the literal token's id, or -1 for plain text
};

class LiteralMatcher {
public:
    /// Adds a token (the first definition of a text wins). O(1): call finish() after the
    /// last add (construction stays linear for hostile files with millions of tokens).
    void add(LiteralToken t);
    /// Orders the tokens for matching (longest first); required before split().
    void finish();
    bool empty() const { return m_tokens.empty(); }
    /// Splits text into plain-text fragments and literal-token fragments. Special tokens are
    /// looked for only when includeSpecial. Empty plain fragments are not reported.
    void split(std::string_view text, bool includeSpecial, std::vector<Fragment>& out) const;

private:
    std::vector<LiteralToken> m_tokens;
    std::array<std::vector<uint32_t>, 256> m_byFirstByte; // indices, longest text first
    std::unordered_set<std::string> m_texts;
    bool m_finished = true;
};

} // namespace lcw::tok
