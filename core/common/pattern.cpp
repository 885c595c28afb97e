#include "core/common/pattern.h"

#include <re2/re2.h>

#include <charconv>
#include <mutex>
#include <unordered_map>

namespace lcw {

namespace {

/// Compiled patterns of Regex::cached. Bounded: cleared when full (patterns typed into the GUI
/// filter would otherwise accumulate).
constexpr size_t kCacheLimit = 512;

std::mutex& cacheMutex() {
    static std::mutex m;
    return m;
}

std::unordered_map<std::string, Regex>& cache() {
    static std::unordered_map<std::string, Regex> c;
    return c;
}

re2::StringPiece piece(std::string_view s) {
    return re2::StringPiece(s.data(), s.size());
}

/// Backreferences (\1..\9) and lookaround, which RE2 does not have (they need backtracking).
bool usesBacktrackingOnlySyntax(std::string_view p) {
    for (const char* look : {"(?=", "(?!", "(?<=", "(?<!"})
        if (p.find(look) != std::string_view::npos) return true;
    for (size_t i = 0; i + 1 < p.size(); ++i) {
        if (p[i] != '\\') continue;
        if (p[i + 1] >= '1' && p[i + 1] <= '9') return true;
        ++i; // an escaped character
    }
    return false;
}

} // namespace

RegexError::RegexError(std::string pattern, std::string problem)
    : ArgumentError("invalid regex '" + pattern + "': " + problem), m_pattern(std::move(pattern)),
      m_problem(std::move(problem)) {}

Regex::Regex(std::string_view pattern, Case c) : m_pattern(pattern) {
    RE2::Options opt;
    opt.set_log_errors(false); // errors are reported by the exception, not on stderr
    opt.set_case_sensitive(c == Case::Sensitive);
    auto re = std::make_shared<const re2::RE2>(piece(pattern), opt);
    if (!re->ok()) {
        std::string problem = re->error();
        if (usesBacktrackingOnlySyntax(pattern))
            problem += " (backreferences and lookaround are not supported)";
        throw RegexError(m_pattern, problem);
    }
    m_re = std::move(re);
}

Regex Regex::cached(std::string_view pattern, Case c) {
    std::string key(1, c == Case::Sensitive ? 's' : 'i');
    key.append(pattern);
    {
        std::lock_guard<std::mutex> lock(cacheMutex());
        if (auto it = cache().find(key); it != cache().end()) return it->second;
    }
    Regex r(pattern, c); // compiled outside the lock; throws on a bad pattern (not cached)
    std::lock_guard<std::mutex> lock(cacheMutex());
    if (cache().size() >= kCacheLimit) cache().clear();
    cache().emplace(std::move(key), r);
    return r;
}

bool Regex::fullMatch(std::string_view text, std::string* group1) const {
    if (!group1) return m_re->Match(piece(text), 0, text.size(), RE2::ANCHOR_BOTH, nullptr, 0);
    re2::StringPiece sub[2];
    const int n = m_re->NumberOfCapturingGroups() >= 1 ? 2 : 1;
    if (!m_re->Match(piece(text), 0, text.size(), RE2::ANCHOR_BOTH, sub, n)) return false;
    group1->assign(n == 2 && sub[1].data() ? std::string(sub[1].data(), sub[1].size())
                                           : std::string());
    return true;
}

bool Regex::search(std::string_view text) const {
    return m_re->Match(piece(text), 0, text.size(), RE2::UNANCHORED, nullptr, 0);
}

std::string Regex::escape(std::string_view text) {
    return RE2::QuoteMeta(piece(text));
}

std::string Regex::fromGlob(std::string_view glob) {
    std::string re = "^";
    for (const char c : glob)
        re += c == '*' ? std::string(".*") : c == '?' ? std::string(".") : escape({&c, 1});
    return re + "$";
}

bool globMatch(std::string_view p, std::string_view s) {
    // Iterative '*' / '?' matcher ('*' also crosses dots): on a mismatch only the last '*' is
    // retried one character further, so the work is at most |p| * |s|.
    size_t pi = 0, si = 0, star = std::string_view::npos, ss = 0;
    while (si < s.size()) {
        if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
            ++pi, ++si;
        } else if (pi < p.size() && p[pi] == '*') {
            star = pi++;
            ss = si;
        } else if (star != std::string_view::npos) {
            pi = star + 1;
            si = ++ss;
        } else {
            return false;
        }
    }
    while (pi < p.size() && p[pi] == '*') ++pi;
    return pi == p.size();
}

bool namePatternMatches(std::string_view pattern, std::string_view name) {
    if (pattern.substr(0, 3) == "re:") return Regex::cached(pattern.substr(3)).fullMatch(name);
    return globMatch(pattern, name);
}

std::optional<int> layerIndexOf(std::string_view name) {
    constexpr std::string_view kPrefix = "layers.";
    if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
    const char* begin = name.data() + kPrefix.size();
    const char* end = name.data() + name.size();
    if (begin == end || *begin < '0' || *begin > '9') return std::nullopt;
    int n = 0;
    const auto [next, ec] = std::from_chars(begin, end, n);
    if (ec != std::errc() || next == end || *next != '.') return std::nullopt;
    return n;
}

void checkNamePattern(std::string_view pattern) {
    if (pattern.substr(0, 3) == "re:") Regex::cached(pattern.substr(3));
}

} // namespace lcw
