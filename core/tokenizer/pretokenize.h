#pragma once
/// \file
/// Pre-tokenizer splits of the byte-level BPE tokenizers, written as hand-made matchers of the
/// three well-known regexes (no regex engine: std::regex has no \p{..} and is slow). Each
/// behaves exactly like the regex run leftmost-first over the text (as tokenizers' Split with
/// behavior Isolated, and llama.cpp, do), with \p{L}, \p{N} and \s from unicode.h.
#include <optional>
#include <string_view>
#include <vector>

namespace lcw {

enum class SplitPattern {
    /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    Gpt2,
    /// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    ///  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    Llama3,
    /// As Llama3 but \p{N} (single digits).
    Qwen2,
};

/// The pattern whose regex source is exactly `regex` (as it appears in tokenizer.json after
/// JSON unescaping), or nullopt for any other regex.
std::optional<SplitPattern> splitPatternFromRegex(std::string_view regex);
/// The regex source of a pattern.
std::string_view splitPatternRegex(SplitPattern p);
/// Name for messages: "gpt2", "llama3", "qwen2".
const char* splitPatternName(SplitPattern p);

/// Splits text into the consecutive matches of the pattern (they cover the whole text; the
/// concatenation of the pieces is the text). Invalid UTF-8 bytes count as single "other" chars.
std::vector<std::string_view> splitPretokens(std::string_view text, SplitPattern p);
/// Same, appending to `out` (no allocation when out has capacity).
void splitPretokens(std::string_view text, SplitPattern p, std::vector<std::string_view>& out);

} // namespace lcw
