// Generated long-context tasks (tasks.h): passkey retrieval (a needle in a haystack of a text)
// and LAMBADA at extended context (its passages after filler from a text).
#include "core/eval/tasks.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace lcw {

namespace {

/// A uniform draw in [0, range) from the generator by rejection (the same on every platform,
/// unlike std::uniform_int_distribution).
uint64_t draw(std::mt19937_64& rng, uint64_t range) {
    const uint64_t lim = ~uint64_t(0) - (~uint64_t(0) % range);
    uint64_t r = rng();
    while (r >= lim) r = rng();
    return r % range;
}

/// Offsets where a sentence starts: after ". ", "! ", "? " or a newline (the start of the
/// next non-space character).
std::vector<size_t> sentenceStarts(const std::string& t) {
    std::vector<size_t> out;
    for (size_t i = 0; i + 1 < t.size(); ++i) {
        const char c = t[i];
        const bool end = c == '\n' || ((c == '.' || c == '!' || c == '?') && t[i + 1] == ' ');
        if (!end) continue;
        size_t j = i + 1;
        while (j < t.size() && (t[j] == ' ' || t[j] == '\n' || t[j] == '\r')) ++j;
        if (j < t.size() && (out.empty() || out.back() != j)) out.push_back(j);
    }
    return out;
}

/// The end of the whole sentences from `b` that reach about `chars` characters: the last
/// sentence start at or before b + chars (b + chars itself when no sentence ends in between).
size_t stretchEnd(const std::vector<size_t>& starts, size_t b, size_t chars) {
    auto endIt = std::upper_bound(starts.begin(), starts.end(), b + chars);
    return *(endIt - 1) > b ? *(endIt - 1) : b + chars;
}

/// Stretches of whole sentences of a text, each starting at a sentence drawn from a seeded
/// generator among those from which `chars` characters fit (at least two, else ArgumentError
/// naming `what`).
class Stretches {
public:
    Stretches(const std::string& text, size_t chars, const char* what, uint64_t seed)
        : starts(sentenceStarts(text)), m_rng(seed) {
        for (size_t s : starts)
            if (s + chars < text.size()) m_first.push_back(s);
        if (m_first.size() < 2)
            throw ArgumentError(std::string(what) + ": the text (" + std::to_string(text.size()) +
                                " characters) is too short for a stretch of " +
                                std::to_string(chars) + " characters");
    }
    /// The next stretch's first character.
    size_t nextStart() { return m_first[size_t(lcw::draw(m_rng, m_first.size()))]; }
    /// A uniform draw in [0, range) from the same generator.
    uint64_t draw(uint64_t range) { return lcw::draw(m_rng, range); }
    /// The end of the whole sentences from `b` that reach about `chars` characters.
    size_t end(size_t b, size_t chars) const { return stretchEnd(starts, b, chars); }

    const std::vector<size_t> starts;

private:
    std::mt19937_64 m_rng;
    std::vector<size_t> m_first;
};

std::string trimmed(std::string s) {
    const size_t b = s.find_first_not_of(" \n\r\t");
    if (b == std::string::npos) return {};
    const size_t e = s.find_last_not_of(" \n\r\t");
    return s.substr(b, e - b + 1);
}

} // namespace

Task makePasskeyTask(const std::string& text, const std::string& source, const PasskeyOptions& o) {
    if (o.items < 1 || o.digits < 1 || o.digits > 9 || o.haystackChars < 16)
        throw ArgumentError("passkey: items, digits (1-9) or haystack length out of range");
    Stretches st(text, size_t(o.haystackChars), "passkey", o.seed);
    Task t;
    t.kind = TaskKind::Passkey;
    t.file = source;
    for (int64_t i = 0; i < o.items; ++i) {
        const size_t b = st.nextStart();
        // The haystack: whole sentences from b up to about haystackChars.
        const size_t e = st.end(b, size_t(o.haystackChars));
        // The needle goes before one of the haystack's sentences (not the first).
        std::vector<size_t> inner;
        for (size_t s : st.starts)
            if (s > b && s < e) inner.push_back(s);
        const size_t at = inner.empty() ? e : inner[size_t(st.draw(inner.size()))];
        std::string key(1, char('1' + st.draw(9)));
        for (int d = 1; d < o.digits; ++d) key.push_back(char('0' + st.draw(10)));
        const std::string needle =
            "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
        TaskItem it;
        it.line = i + 1;
        it.choices.push_back({"There is a pass key hidden in the story below. Remember it.\n\n" +
                                  trimmed(text.substr(b, at - b)) + " " + needle + " " +
                                  trimmed(text.substr(at, e - at)) +
                                  "\n\nWhat is the pass key? The pass key is",
                              " " + key});
        t.items.push_back(std::move(it));
    }
    return t;
}

Task makeLongContextLambada(const Task& lambada, const std::string& text, const std::string& source,
                            const LongContextOptions& o) {
    if (o.contextChars < 16)
        throw ArgumentError("lambada_long: a context of " + std::to_string(o.contextChars) +
                            " characters is too short");
    // Starts from which the longest filler any item can need fits; shorter ones start there too.
    Stretches st(text, size_t(o.contextChars), "lambada_long", o.seed);
    Task t;
    t.kind = TaskKind::LambadaLong;
    t.file = lambada.file + " + " + source;
    t.items.reserve(lambada.items.size());
    for (const TaskItem& base : lambada.items) {
        TaskItem it = base;
        // One draw per item whether or not it gets filler, so item i's filler does not depend
        // on the other items' lengths.
        const size_t b = st.nextStart();
        if (it.choices.empty()) continue;
        TaskChoice& ch = it.choices.front();
        const int64_t room = o.contextChars - int64_t(ch.context.size()) - 2;
        if (room >= 16) {
            const std::string filler = trimmed(text.substr(b, st.end(b, size_t(room)) - b));
            if (!filler.empty()) ch.context = filler + "\n\n" + ch.context;
        }
        t.items.push_back(std::move(it));
    }
    return t;
}

} // namespace lcw
