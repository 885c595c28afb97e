#pragma once
/// \file
/// Reading and parsing JSON with the errors every reader of lcw gives.
///
/// Every JSON text lcw reads (files, file headers, results-store lines, project parts, text a
/// user typed) goes through parseJsonText / parseOrderedJsonText: they refuse nesting deeper
/// than kMaxJsonDepth while parsing (nlohmann's parser callback stops the parse at the first
/// array or object past the limit), so a hostile `[[[[...` neither builds a deep document nor
/// reaches the recursive parts of nlohmann (copy, dump, comparison) or lcw's own recursive
/// walks of JSON, which therefore need no depth checks of their own.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace lcw {

/// Deepest nesting of arrays and objects accepted in any JSON lcw reads. lcw's own files and
/// Hugging Face files need far less (tokenizer.json with nested Sequence normalizers,
/// pre-tokenizers and post-processors is under 10, a results-store record under 12).
inline constexpr int kMaxJsonDepth = 64;

/// Parses `text`. Throws FormatError naming `sourceName`: "not valid JSON: ..." when it does not
/// parse, "JSON nested deeper than 64 levels" when it is too deep, both with
/// the byte offset (plus `baseOffset`, for text taken from inside a file).
nlohmann::json parseJsonText(std::string_view text, const std::string& sourceName,
                             uint64_t baseOffset = 0);

/// As parseJsonText, keeping the order of object keys.
nlohmann::ordered_json parseOrderedJsonText(std::string_view text, const std::string& sourceName,
                                            uint64_t baseOffset = 0);

/// `v` as a T when it is a JSON integer that T represents; nullopt for anything else — a float
/// such as 3.7e57 (get<int>() of it is undefined behaviour), an integer out of T's range (it
/// would wrap), a string. Readers of lcw's own files use it for every integer field and throw
/// their FormatError naming the field.
template <class T> std::optional<T> jsonIntegerAs(const nlohmann::json& v) {
    using L = std::numeric_limits<T>;
    if (v.is_number_unsigned()) {
        const uint64_t u = v.get<uint64_t>();
        if (u <= uint64_t(L::max())) return T(u);
    } else if (v.is_number_integer()) {
        const int64_t i = v.get<int64_t>();
        if (L::is_signed ? i >= int64_t(L::min()) && i <= int64_t(L::max()) : i >= 0) return T(i);
    }
    return std::nullopt;
}

/// Reads and parses `path`. Throws FormatError naming the file: "cannot open ..." when it is
/// missing or unreadable, and the errors of parseJsonText.
nlohmann::json readJsonFile(const std::string& path);

} // namespace lcw
