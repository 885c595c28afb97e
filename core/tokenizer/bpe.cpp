#include "core/tokenizer/bpe.h"

#include <algorithm>
#include <queue>

namespace lcw::tok {

std::string byteTokenText(unsigned char b) {
    static const char* hex = "0123456789ABCDEF";
    std::string s = "<0x00>";
    s[3] = hex[b >> 4];
    s[4] = hex[b & 15];
    return s;
}

int parseByteToken(std::string_view s) {
    if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    auto hexValue = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int hi = hexValue(s[3]), lo = hexValue(s[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

void RankedMerges::add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
    // The first occurrence of a pair wins (a later duplicate has a worse rank).
    m_map.emplace(key(left, right), Merge{rank, merged});
}

namespace {

struct Sym {
    int32_t id;
    int32_t prev;
    int32_t next;
};

struct RankedCand {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    // priority_queue is a max-heap: "less" means worse (higher rank, then further right).
    bool operator<(const RankedCand& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
};

} // namespace

void RankedMerges::apply(std::vector<int32_t>& ids) const {
    const size_t n = ids.size();
    if (n < 2 || m_map.empty()) return;
    if (n == 2) {
        if (const Merge* m = find(ids[0], ids[1])) ids = {m->merged};
        return;
    }
    thread_local std::vector<Sym> syms;
    thread_local std::vector<RankedCand> heap;
    syms.resize(n);
    for (size_t i = 0; i < n; ++i)
        syms[i] = {ids[i], int32_t(i) - 1, i + 1 < n ? int32_t(i + 1) : -1};
    heap.clear();
    auto push = [](const RankedCand& c) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end());
    };
    for (size_t i = 0; i + 1 < n; ++i)
        if (const Merge* m = find(ids[i], ids[i + 1]))
            heap.push_back({m->rank, int32_t(i), m->merged});
    std::make_heap(heap.begin(), heap.end());
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const RankedCand c = heap.back();
        heap.pop_back();
        Sym& left = syms[size_t(c.pos)];
        if (left.id < 0 || left.next < 0) continue;
        Sym& right = syms[size_t(left.next)];
        const Merge* m = find(left.id, right.id);
        if (!m || m->merged != c.merged || m->rank != c.rank) continue; // stale candidate
        left.id = c.merged;
        right.id = -1;
        left.next = right.next;
        if (left.next >= 0) syms[size_t(left.next)].prev = c.pos;
        if (left.prev >= 0) {
            if (const Merge* pm = find(syms[size_t(left.prev)].id, left.id))
                push({pm->rank, left.prev, pm->merged});
        }
        if (left.next >= 0) {
            if (const Merge* qm = find(left.id, syms[size_t(left.next)].id))
                push({qm->rank, c.pos, qm->merged});
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = syms[size_t(i)].next) ids[k++] = syms[size_t(i)].id;
    ids.resize(k);
}

namespace {

struct ScoredCand {
    float score;
    int32_t pos;
    int32_t token;
    uint32_t size; // byte length of the joined span when queued (detects stale candidates)
    bool operator<(const ScoredCand& o) const {
        return score != o.score ? score < o.score : pos > o.pos;
    }
};

} // namespace

void applyScoredMerges(std::string_view buf, std::vector<Span>& spans, const VocabMap& vocab,
                       const std::vector<float>& scores) {
    const size_t n = spans.size();
    if (n < 2) return;
    thread_local std::vector<int32_t> prev, next;
    thread_local std::vector<ScoredCand> heap;
    prev.resize(n);
    next.resize(n);
    for (size_t i = 0; i < n; ++i) {
        prev[i] = int32_t(i) - 1;
        next[i] = i + 1 < n ? int32_t(i + 1) : -1;
    }
    heap.clear();
    auto tryPair = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const Span& a = spans[size_t(l)];
        const Span& b = spans[size_t(r)];
        const int32_t tok = lookup(vocab, buf.substr(a.begin, b.end - a.begin));
        if (tok < 0) return;
        const float sc = size_t(tok) < scores.size() ? scores[size_t(tok)] : 0.0f;
        heap.push_back({sc, l, tok, b.end - a.begin});
        std::push_heap(heap.begin(), heap.end());
    };
    for (size_t i = 0; i + 1 < n; ++i) tryPair(int32_t(i), int32_t(i + 1));
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const ScoredCand c = heap.back();
        heap.pop_back();
        Span& left = spans[size_t(c.pos)];
        const int32_t r = next[size_t(c.pos)];
        if (left.end == left.begin || r < 0) continue;
        Span& right = spans[size_t(r)];
        if (right.end - left.begin != c.size) continue; // one side changed since queued
        left.end = right.end;
        left.id = c.token;
        right.begin = right.end; // empty: dead
        next[size_t(c.pos)] = next[size_t(r)];
        if (next[size_t(c.pos)] >= 0) prev[size_t(next[size_t(c.pos)])] = c.pos;
        tryPair(prev[size_t(c.pos)], c.pos);
        tryPair(c.pos, next[size_t(c.pos)]);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[size_t(i)]) spans[k++] = spans[size_t(i)];
    spans.resize(k);
}

bool WordCache::get(std::string_view word, std::vector<int32_t>& out) const {
    std::lock_guard<std::mutex> lock(m_mutex);
    auto it = m_map.find(word);
    if (it == m_map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
}

void WordCache::put(std::string_view word, const int32_t* ids, size_t n) {
    std::lock_guard<std::mutex> lock(m_mutex);
    if (m_map.size() >= m_maxEntries) m_map.clear();
    m_map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
}

} // namespace lcw::tok
