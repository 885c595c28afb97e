#include "core/tokenizer/pretokenize.h"

#include "core/tokenizer/unicode.h"

#include <cstdint>

namespace lcw {

namespace {

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

using unicode::CharClass;

/// The text decoded once: code point, class and byte offset of every char.
struct Chars {
    std::vector<uint32_t> cp;
    std::vector<CharClass> cls;
    std::vector<uint32_t> off; // size n+1: byte offset of each char, then the text size

    void decode(std::string_view text) {
        cp.clear();
        cls.clear();
        off.clear();
        for (size_t i = 0; i < text.size();) {
            uint32_t c;
            const size_t len = unicode::decodeUtf8(text, i, c);
            cp.push_back(c);
            cls.push_back(unicode::classify(c));
            off.push_back(uint32_t(i));
            i += len;
        }
        off.push_back(uint32_t(text.size()));
    }
};

inline uint32_t lowerAscii(uint32_t c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/// 's|'t|'re|'ve|'m|'ll|'d at i; case-insensitive (Unicode simple folding) when ci.
size_t matchContraction(const Chars& t, size_t i, size_t n, bool ci) {
    if (t.cp[i] != '\'' || i + 1 >= n) return 0;
    auto norm = [&](uint32_t c) -> uint32_t {
        if (!ci) return c;
        if (c == 0x17F) return 's'; // LATIN SMALL LETTER LONG S folds to s
        return lowerAscii(c);
    };
    const uint32_t a = norm(t.cp[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
        const uint32_t b = norm(t.cp[i + 2]);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return i + 3;
    }
    return 0;
}

/// ` ?X+` where X is class c; returns the end or 0.
size_t matchSpaceThenRun(const Chars& t, size_t i, size_t n, CharClass c) {
    size_t j = i;
    if (t.cp[j] == ' ' && j + 1 < n && t.cls[j + 1] == c) ++j;
    if (t.cls[j] != c) return 0;
    while (j < n && t.cls[j] == c) ++j;
    return j;
}

/// \s+(?!\S)|\s+ at i (t.cls[i] is Space).
size_t matchTrailingSpace(const Chars& t, size_t i, size_t n) {
    size_t k = i;
    while (k < n && t.cls[k] == CharClass::Space) ++k;
    if (k == n) return k;         // \s+ up to the end: (?!\S) holds
    if (k - i >= 2) return k - 1; // leave the last space to the next piece
    return k;                     // \s+
}

size_t nextGpt2(const Chars& t, size_t i, size_t n) {
    if (size_t e = matchContraction(t, i, n, false)) return e;
    if (size_t e = matchSpaceThenRun(t, i, n, CharClass::Letter)) return e;
    if (size_t e = matchSpaceThenRun(t, i, n, CharClass::Number)) return e;
    if (size_t e = matchSpaceThenRun(t, i, n, CharClass::Other)) return e;
    return matchTrailingSpace(t, i, n);
}

inline bool isCrLf(uint32_t c) {
    return c == '\r' || c == '\n';
}

size_t nextLlama3(const Chars& t, size_t i, size_t n, size_t maxDigits) {
    if (size_t e = matchContraction(t, i, n, true)) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    {
        size_t j = i;
        if (t.cls[j] != CharClass::Letter && t.cls[j] != CharClass::Number && !isCrLf(t.cp[j]) &&
            j + 1 < n && t.cls[j + 1] == CharClass::Letter)
            ++j;
        if (t.cls[j] == CharClass::Letter) {
            while (j < n && t.cls[j] == CharClass::Letter) ++j;
            return j;
        }
    }
    // \p{N}{1,maxDigits}
    if (t.cls[i] == CharClass::Number) {
        size_t j = i;
        while (j < n && j - i < maxDigits && t.cls[j] == CharClass::Number) ++j;
        return j;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    {
        size_t j = i;
        if (t.cp[j] == ' ' && j + 1 < n && t.cls[j + 1] == CharClass::Other) ++j;
        if (t.cls[j] == CharClass::Other) {
            while (j < n && t.cls[j] == CharClass::Other) ++j;
            while (j < n && isCrLf(t.cp[j])) ++j;
            return j;
        }
    }
    // \s*[\r\n]+ : whitespace up to and including the last \r or \n of the whitespace run
    {
        size_t lastNl = SIZE_MAX;
        size_t k = i;
        while (k < n && t.cls[k] == CharClass::Space) {
            if (isCrLf(t.cp[k])) lastNl = k;
            ++k;
        }
        if (lastNl != SIZE_MAX) return lastNl + 1;
    }
    return matchTrailingSpace(t, i, n);
}

} // namespace

std::optional<SplitPattern> splitPatternFromRegex(std::string_view regex) {
    if (regex == kGpt2Regex) return SplitPattern::Gpt2;
    if (regex == kLlama3Regex) return SplitPattern::Llama3;
    if (regex == kQwen2Regex) return SplitPattern::Qwen2;
    // Spellings that split the same way: GPT-2's without the final |\s+ (what it would match is
    // left between matches and kept as a piece anyway), and the contractions as ASCII classes
    // (llama.cpp treats them as the same pattern; they differ only for "'ſ").
    if (regex == kGpt2Regex.substr(0, kGpt2Regex.size() - 4)) return SplitPattern::Gpt2;
    constexpr std::string_view ci = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
    constexpr std::string_view ascii = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
    if (regex.substr(0, ascii.size()) == ascii) {
        const std::string_view rest = regex.substr(ascii.size());
        if (rest == kLlama3Regex.substr(ci.size())) return SplitPattern::Llama3;
        if (rest == kQwen2Regex.substr(ci.size())) return SplitPattern::Qwen2;
    }
    return std::nullopt;
}

std::string_view splitPatternRegex(SplitPattern p) {
    switch (p) {
    case SplitPattern::Gpt2:
        return kGpt2Regex;
    case SplitPattern::Llama3:
        return kLlama3Regex;
    case SplitPattern::Qwen2:
        return kQwen2Regex;
    }
    return {};
}

const char* splitPatternName(SplitPattern p) {
    switch (p) {
    case SplitPattern::Gpt2:
        return "gpt2";
    case SplitPattern::Llama3:
        return "llama3";
    case SplitPattern::Qwen2:
        return "qwen2";
    }
    return "?";
}

void splitPretokens(std::string_view text, SplitPattern p, std::vector<std::string_view>& out) {
    thread_local Chars t;
    t.decode(text);
    const size_t n = t.cp.size();
    size_t i = 0;
    while (i < n) {
        size_t e = 0;
        switch (p) {
        case SplitPattern::Gpt2:
            e = nextGpt2(t, i, n);
            break;
        case SplitPattern::Llama3:
            e = nextLlama3(t, i, n, 3);
            break;
        case SplitPattern::Qwen2:
            e = nextLlama3(t, i, n, 1);
            break;
        }
        if (e <= i) e = i + 1; // cannot happen: every class is covered by an alternative
        out.push_back(text.substr(t.off[i], t.off[e] - t.off[i]));
        i = e;
    }
}

std::vector<std::string_view> splitPretokens(std::string_view text, SplitPattern p) {
    std::vector<std::string_view> out;
    splitPretokens(text, p, out);
    return out;
}

} // namespace lcw
