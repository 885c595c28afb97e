#pragma once
/// \file
/// Regular expressions and name patterns of lcw, matched in linear time.
///
/// Every regular expression that comes from a user (recipe targets "re:...", GGUF mix
/// --tensor-type rules, the tensor filter of the GUI) is compiled and matched here, with RE2:
/// matching takes time linear in the length of the text, whatever the pattern, so a pattern such
/// as `(.*)*x` cannot hang lcw. RE2's syntax is that of Perl/ECMAScript regular expressions
/// without backreferences (\1) and lookaround ((?=...), (?!...), (?<=...), (?<!...)); patterns
/// using them are refused with an error. Compiled expressions are cached, so callers may match
/// the same pattern against many names without compiling it again.
#include "core/common/error.h"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace re2 {
class RE2;
}

namespace lcw {

/// A regular expression that does not compile. what(): "invalid regex 'PATTERN': PROBLEM".
class RegexError : public ArgumentError {
public:
    RegexError(std::string pattern, std::string problem);
    const std::string& pattern() const { return m_pattern; }
    const std::string& problem() const { return m_problem; }

private:
    std::string m_pattern;
    std::string m_problem;
};

/// A compiled regular expression (RE2). Cheap to copy; safe to use from several threads.
class Regex {
public:
    enum class Case { Sensitive, Insensitive };

    /// Compiles `pattern`. Throws RegexError "invalid regex 'PATTERN': PROBLEM" on a syntax
    /// error, an unsupported construct (backreference, lookaround) or a pattern too large to
    /// compile.
    explicit Regex(std::string_view pattern, Case c = Case::Sensitive);

    /// The cached compilation of `pattern` (compiled on first use; same errors as the
    /// constructor). Thread-safe.
    static Regex cached(std::string_view pattern, Case c = Case::Sensitive);

    /// True when the whole of `text` matches. With `group1`, stores the first capture group.
    bool fullMatch(std::string_view text, std::string* group1 = nullptr) const;
    /// True when some part of `text` matches (std::regex_search semantics).
    bool search(std::string_view text) const;

    const std::string& pattern() const { return m_pattern; }

    /// `text` with every special character escaped: a regex matching exactly `text`.
    static std::string escape(std::string_view text);
    /// A glob (see globMatch) as an anchored regex matching the same whole strings.
    static std::string fromGlob(std::string_view glob);

private:
    Regex() = default;
    std::string m_pattern;
    std::shared_ptr<const re2::RE2> m_re;
};

/// Glob match of a whole name: '*' matches any run of characters (dots included), '?' one
/// character; everything else literally. Linear-time in practice (no backtracking blow-up).
bool globMatch(std::string_view pattern, std::string_view name);

/// A recipe target pattern against a tensor or layer name: "re:REGEX" is a regular expression
/// that must match the whole name, anything else a glob (see globMatch). Throws RegexError
/// on an invalid regex.
bool namePatternMatches(std::string_view pattern, std::string_view name);

/// N of a name "layers.N.REST" (what `layers\.(\d+)\..*` captures); nullopt for other names
/// and for an N that does not fit in an int.
std::optional<int> layerIndexOf(std::string_view name);

/// Checks a name pattern without matching: throws RegexError for an invalid "re:" regex.
void checkNamePattern(std::string_view pattern);

} // namespace lcw
