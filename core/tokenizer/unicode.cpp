#include "core/tokenizer/unicode.h"

#include <algorithm>
#include <vector>

namespace lcw::unicode {

size_t decodeUtf8(std::string_view s, size_t pos, uint32_t& cp) {
    const auto b0 = static_cast<unsigned char>(s[pos]);
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    size_t len = 0;
    uint32_t v = 0;
    uint32_t minValue = 0;
    if ((b0 & 0xE0) == 0xC0) {
        len = 2;
        v = b0 & 0x1F;
        minValue = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
        len = 3;
        v = b0 & 0x0F;
        minValue = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
        len = 4;
        v = b0 & 0x07;
        minValue = 0x10000;
    } else {
        cp = kInvalidCodepoint;
        return 1;
    }
    if (pos + len > s.size()) {
        cp = kInvalidCodepoint;
        return 1;
    }
    for (size_t i = 1; i < len; ++i) {
        const auto b = static_cast<unsigned char>(s[pos + i]);
        if ((b & 0xC0) != 0x80) {
            cp = kInvalidCodepoint;
            return 1;
        }
        v = (v << 6) | (b & 0x3F);
    }
    if (v < minValue || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        cp = kInvalidCodepoint;
        return 1;
    }
    cp = v;
    return len;
}

void appendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

namespace {

uint8_t lookupRange(const CodepointRange* table, size_t n, uint32_t cp) {
    const CodepointRange* end = table + n;
    const CodepointRange* it = std::upper_bound(
        table, end, cp, [](uint32_t c, const CodepointRange& r) { return c < r.first; });
    if (it == table) return 0;
    --it;
    return cp <= it->last ? it->value : 0;
}

struct AsciiClasses {
    std::array<CharClass, 128> cls{};
    AsciiClasses() {
        for (uint32_t c = 0; c < 128; ++c)
            cls[c] = CharClass(lookupRange(tables::kClassRanges, tables::kClassRangeCount, c));
    }
};

} // namespace

CharClass classify(uint32_t cp) {
    static const AsciiClasses ascii;
    if (cp < 128) return ascii.cls[cp];
    if (cp == kInvalidCodepoint) return CharClass::Other;
    return CharClass(lookupRange(tables::kClassRanges, tables::kClassRangeCount, cp));
}

uint8_t combiningClass(uint32_t cp) {
    if (cp < 0x300) return 0;
    return lookupRange(tables::kCombiningRanges, tables::kCombiningRangeCount, cp);
}

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

const Decomposition* findDecomposition(uint32_t cp) {
    const Decomposition* b = tables::kDecompositions;
    const Decomposition* e = b + tables::kDecompositionCount;
    const Decomposition* it =
        std::lower_bound(b, e, cp, [](const Decomposition& d, uint32_t c) { return d.cp < c; });
    return (it != e && it->cp == cp) ? it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        const uint32_t s = cp - kSBase;
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
        return;
    }
    if (cp >= 0xC0 && cp != kInvalidCodepoint) {
        if (const Decomposition* d = findDecomposition(cp)) {
            decompose(d->first, out);
            if (d->second != 0) decompose(d->second, out);
            return;
        }
    }
    out.push_back(cp);
}

uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
        b < kTBase + kTCount)
        return a + (b - kTBase);
    const Composition* first = tables::kCompositions;
    const Composition* last = first + tables::kCompositionCount;
    const Composition* it = std::lower_bound(
        first, last, std::pair{a, b}, [](const Composition& c, std::pair<uint32_t, uint32_t> k) {
            return c.first < k.first || (c.first == k.first && c.second < k.second);
        });
    return (it != last && it->first == a && it->second == b) ? it->composite : 0;
}

} // namespace

std::string nfc(std::string_view text) {
    // Fast path: text below U+0300 is already NFC (nothing there composes or reorders).
    bool simple = true;
    for (size_t i = 0; i < text.size() && simple; ++i) {
        const auto b = static_cast<unsigned char>(text[i]);
        if (b >= 0xCC) simple = false; // lead bytes of U+0300 and above
    }
    if (simple) return std::string(text);

    std::vector<uint32_t> cps;
    cps.reserve(text.size());
    std::vector<unsigned char> rawBytes; // for invalid bytes: kept through unchanged
    for (size_t i = 0; i < text.size();) {
        uint32_t cp;
        const size_t n = decodeUtf8(text, i, cp);
        if (cp == kInvalidCodepoint)
            cps.push_back(0x80000000u | static_cast<unsigned char>(text[i])); // marker
        else
            decompose(cp, cps);
        i += n;
    }
    auto ccc = [](uint32_t c) -> uint8_t { return (c & 0x80000000u) ? 0 : combiningClass(c); };
    // Canonical ordering: stable sort of each run of non-starters by combining class.
    for (size_t i = 0; i < cps.size();) {
        if (ccc(cps[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < cps.size() && ccc(cps[j]) != 0) ++j;
        std::stable_sort(cps.begin() + long(i), cps.begin() + long(j),
                         [&](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
        i = j;
    }
    // Canonical composition.
    std::vector<uint32_t> out;
    out.reserve(cps.size());
    long starter = -1;
    uint8_t lastCcc = 0;
    for (uint32_t c : cps) {
        const uint8_t cc = ccc(c);
        if (starter >= 0 && !(c & 0x80000000u)) {
            const bool adjacent = size_t(starter) + 1 == out.size();
            if (adjacent || (lastCcc != 0 && lastCcc < cc)) {
                if (const uint32_t comp = compose(out[size_t(starter)], c)) {
                    out[size_t(starter)] = comp;
                    continue;
                }
            }
        }
        if (cc == 0) {
            starter = (c & 0x80000000u) ? -1 : long(out.size());
            lastCcc = 0;
        } else {
            lastCcc = cc;
        }
        out.push_back(c);
    }
    std::string s;
    s.reserve(text.size());
    for (uint32_t c : out) {
        if (c & 0x80000000u)
            s += char(c & 0xFF);
        else
            appendUtf8(s, c);
    }
    return s;
}

namespace {

struct ByteMaps {
    std::array<std::string, 256> toUnicode;
    std::array<int16_t, 324> fromUnicode{}; // code points used are all < 324
    ByteMaps() {
        fromUnicode.fill(-1);
        uint32_t extra = 0;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable =
                (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = printable ? b : 256 + extra++;
            appendUtf8(toUnicode[b], cp);
            fromUnicode[cp] = int16_t(b);
        }
    }
};

const ByteMaps& byteMaps() {
    static const ByteMaps maps;
    return maps;
}

} // namespace

const std::array<std::string, 256>& byteToUnicode() {
    return byteMaps().toUnicode;
}

int unicodeToByte(uint32_t cp) {
    const auto& m = byteMaps();
    return cp < m.fromUnicode.size() ? m.fromUnicode[cp] : -1;
}

const char* tablesVersion() {
    return tables::kUnicodeVersion;
}

} // namespace lcw::unicode
