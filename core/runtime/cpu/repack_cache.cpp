// Shared repacked copies of GGUF block weights (repack_cache.h).
#include "core/runtime/cpu/repack_cache.h"

#include "core/common/mapped_file.h"
#include "core/runtime/cpu/qdot.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <tuple>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lcw::kernels {

/// A repacked copy. Copies of 2 MB and more start on a 2 MB boundary and ask for transparent
/// huge pages (Linux, THP "madvise" mode): 512 times fewer page faults while the copy is written
/// (Llama-3-8B Q4_K_M repack and warm-up 3.2-7.0 s -> 2.3-2.5 s) and fewer TLB misses while
/// decode streams it (no decode difference measured beyond noise).
struct RepackedWeight {
    static constexpr size_t kHuge = size_t(2) << 20;
    std::byte* data = nullptr;
    size_t bytes = 0;
    explicit RepackedWeight(size_t n) : bytes(n) {
        data = static_cast<std::byte*>(::operator new[](n, align()));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        // Advice only: without huge pages the copy works the same.
        if (bytes >= kHuge) ::madvise(data, n / kHuge * kHuge, MADV_HUGEPAGE);
#endif
    }
    ~RepackedWeight() {
        ::operator delete[](data, align());
    }
    std::align_val_t align() const {
        return std::align_val_t(bytes >= kHuge ? kHuge : 64);
    }
    RepackedWeight(const RepackedWeight&) = delete;
    RepackedWeight& operator=(const RepackedWeight&) = delete;
};

namespace {

std::atomic<int> g_repack{-1}; // -1: not decided yet (read the environment)

/// Every live repacked weight of the process, by the tensor it copies.
struct Registry {
    using Key = std::tuple<const std::byte*, int, int64_t, int64_t>;
    std::mutex mutex;
    std::map<Key, std::weak_ptr<const RepackedWeight>> weights;
};
Registry& registry() {
    static Registry r;
    return r;
}

std::shared_ptr<const RepackedWeight> makeRepacked(const TensorView& w) {
    const int64_t rows = w.rows(), n = w.cols();
    auto r = std::make_shared<RepackedWeight>(repackedBytes(w.dtype, rows, n));
    const int64_t groups = (rows + kRepackRows - 1) / kRepackRows;
    constexpr int64_t kStep = 4; // groups per task: 64 rows
    // omp: nothrow (byte copies into the buffer allocated above; the type was checked repackable)
#pragma omp parallel for schedule(dynamic, 1) if (groups > kStep)
    for (int64_t g = 0; g < groups; g += kStep)
        repackRows(w.dtype, w.data, w.rowBytes(), rows, n, r->data, g, std::min(groups, g + kStep));
    return r;
}

} // namespace

bool repackWeights() {
    int v = g_repack.load(std::memory_order_relaxed);
    if (v < 0) {
        const char* e = std::getenv("LCW_NO_REPACK");
        v = e && *e && std::strcmp(e, "0") != 0 ? 0 : 1;
        g_repack.store(v, std::memory_order_relaxed);
    }
    return v == 1;
}

void setRepackWeights(bool on) {
    g_repack.store(on ? 1 : 0, std::memory_order_relaxed);
}

RepackCache::RepackCache() = default;
RepackCache::~RepackCache() = default;

const std::byte* RepackCache::get(const TensorView& w) {
    if (!w.data || w.shape.size() != 2 || !repackable(w.dtype) || !repackWeights()) return nullptr;
    const QDotKernel* k = qdotKernel(w.dtype);
    if (!k || !k->gemmRepacked || w.cols() % dtypeBlockElems(w.dtype) != 0 || w.rows() < 1)
        return nullptr;
    if (auto it = m_held.find(w.data); it != m_held.end())
        return it->second ? it->second->data : nullptr; // null: no memory for it, not retried
    const Registry::Key key{w.data, int(w.dtype), w.rows(), w.cols()};
    Registry& reg = registry();
    std::shared_ptr<const RepackedWeight> r;
    {
        std::lock_guard<std::mutex> lock(reg.mutex);
        auto it = reg.weights.find(key);
        if (it != reg.weights.end()) r = it->second.lock();
        if (!r) {
            // Expired entries of other tensors go too (the map stays as small as what lives).
            for (auto e = reg.weights.begin(); e != reg.weights.end();)
                e = e->second.expired() ? reg.weights.erase(e) : std::next(e);
            // Memory for speed only: without the memory the product runs from the file's layout.
            try {
                r = makeRepacked(w);
            } catch (const std::bad_alloc&) {
                m_held.emplace(w.data, nullptr);
                return nullptr;
            }
            reg.weights[key] = r;
            // The products read the copy from now on: the mapped file's pages of this tensor
            // leave the process (they stay in the page cache; anything that still reads the
            // tensor, an embedding lookup or a GPU upload, faults them back in).
            MappedFile::releasePages(w.data, w.nbytes);
        }
    }
    m_bytes += r->bytes;
    return m_held.emplace(w.data, std::move(r)).first->second->data;
}

} // namespace lcw::kernels
