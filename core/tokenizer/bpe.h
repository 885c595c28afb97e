#pragma once
/// \file
/// Internal building blocks shared by the tokenizers: vocabulary maps with string_view lookup,
/// rank-ordered BPE merging (tokenizers' BPE model, llama.cpp's BPE), score-ordered merging
/// (SentencePiece / llama.cpp SPM / llama2.c), byte tokens "<0xNN>", and a word cache.
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lcw::tok {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
/// token text -> id, looked up with string_view keys without allocating.
using VocabMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

inline int32_t lookup(const VocabMap& v, std::string_view s) {
    auto it = v.find(s);
    return it == v.end() ? -1 : it->second;
}

/// "<0x0A>" for byte 10 (upper-case hex, as SentencePiece and tokenizers write them).
std::string byteTokenText(unsigned char b);
/// The byte of a "<0xNN>" token text (either hex case), or -1.
int parseByteToken(std::string_view s);

/// BPE merges ordered by rank: the pair with the lowest rank merges first, the leftmost among
/// equal ranks (tokenizers' BPE model and llama.cpp's BPE session agree on this order).
class RankedMerges {
public:
    void add(int32_t left, int32_t right, int32_t rank, int32_t merged);
    size_t size() const { return m_map.size(); }
    /// Applies the merges to a word given as its initial symbol ids, in place.
    void apply(std::vector<int32_t>& ids) const;

private:
    struct Merge {
        int32_t rank;
        int32_t merged;
    };
    static uint64_t key(int32_t a, int32_t b) {
        return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
    }
    const Merge* find(int32_t a, int32_t b) const {
        auto it = m_map.find(key(a, b));
        return it == m_map.end() ? nullptr : &it->second;
    }
    std::unordered_map<uint64_t, Merge> m_map;
};

/// Score-ordered merging (SentencePiece BPE as llama.cpp's SPM session and llama2.c run it):
/// symbols are consecutive byte spans of `buf`; repeatedly the adjacent pair whose joined span
/// is a vocabulary token with the highest score merges (the leftmost among equal scores), until
/// no adjacent pair joins into a token. A merged span's id is that token; unmerged spans keep
/// the id they came with (-1 when none).
struct Span {
    uint32_t begin;
    uint32_t end;
    int32_t id;
};
void applyScoredMerges(std::string_view buf, std::vector<Span>& spans, const VocabMap& vocab,
                       const std::vector<float>& scores);

/// A bounded, thread-safe cache of the ids of words (pre-tokens) already encoded.
class WordCache {
public:
    explicit WordCache(size_t maxEntries = 65536, size_t maxWordBytes = 64)
        : m_maxEntries(maxEntries), m_maxWordBytes(maxWordBytes) {}
    bool cacheable(std::string_view word) const { return word.size() <= m_maxWordBytes; }
    /// Appends the cached ids of `word` to out; false when not cached.
    bool get(std::string_view word, std::vector<int32_t>& out) const;
    void put(std::string_view word, const int32_t* ids, size_t n);

private:
    size_t m_maxEntries;
    size_t m_maxWordBytes;
    mutable std::mutex m_mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> m_map;
};

} // namespace lcw::tok
