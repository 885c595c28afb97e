#pragma once
/// \file
/// The little Unicode the tokenizers need, without ICU: UTF-8 decoding, the character classes of
/// the pre-tokenizer regexes (\p{L}, \p{N}, \s), NFC normalization, and GPT-2's byte-level
/// mapping. The tables are generated from Python's unicodedata by scripts/gen_unicode_tables.py.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lcw::unicode {

/// Stands for a byte that does not start a valid UTF-8 sequence; classifies as "other".
constexpr uint32_t kInvalidCodepoint = 0xFFFFFFFFu;

/// Decodes the code point starting at s[pos] (pos < s.size()); returns its length in bytes
/// (1..4). A malformed or truncated sequence yields kInvalidCodepoint and length 1.
size_t decodeUtf8(std::string_view s, size_t pos, uint32_t& cp);
/// Appends the UTF-8 encoding of cp (cp <= 0x10FFFF).
void appendUtf8(std::string& out, uint32_t cp);
/// Length of the UTF-8 sequence that starts with byte b as its lead byte says (1 for
/// continuation or invalid bytes), like llama.cpp's utf8_len.
inline size_t utf8LeadLength(unsigned char b) {
    if (b < 0x80) return 1;
    if ((b & 0xE0) == 0xC0) return 2;
    if ((b & 0xF0) == 0xE0) return 3;
    if ((b & 0xF8) == 0xF0) return 4;
    return 1;
}

enum class CharClass : uint8_t { Other = 0, Letter = 1, Number = 2, Space = 3 };
/// \p{L} -> Letter, \p{N} -> Number, White_Space -> Space, anything else (and invalid) -> Other.
CharClass classify(uint32_t cp);
inline bool isLetter(uint32_t cp) {
    return classify(cp) == CharClass::Letter;
}
inline bool isNumber(uint32_t cp) {
    return classify(cp) == CharClass::Number;
}
inline bool isWhitespace(uint32_t cp) {
    return classify(cp) == CharClass::Space;
}

/// Canonical combining class (0 for starters and unassigned code points).
uint8_t combiningClass(uint32_t cp);
/// Unicode Normalization Form C. Invalid UTF-8 bytes are passed through unchanged.
std::string nfc(std::string_view text);

/// GPT-2's byte-level mapping: every byte to a printable code point, as UTF-8 ("Ġ" for ' ').
const std::array<std::string, 256>& byteToUnicode();
/// The inverse: the byte a code point stands for, or -1 when it is not one of the 256.
int unicodeToByte(uint32_t cp);

/// Version of the Unicode data the tables were generated from.
const char* tablesVersion();

// Generated tables (unicode_tables.cpp).
struct CodepointRange {
    uint32_t first;
    uint32_t last;
    uint8_t value;
};
struct Decomposition {
    uint32_t cp;
    uint32_t first;
    uint32_t second; ///< 0 for a singleton decomposition
};
struct Composition {
    uint32_t first;
    uint32_t second;
    uint32_t composite;
};
namespace tables {
extern const char* const kUnicodeVersion;
extern const CodepointRange kClassRanges[];
extern const size_t kClassRangeCount;
extern const CodepointRange kCombiningRanges[];
extern const size_t kCombiningRangeCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];
extern const size_t kCompositionCount;
} // namespace tables

} // namespace lcw::unicode
