// Memory read bandwidth, STREAM-like: T threads each sum their own contiguous part of a buffer
// much larger than the caches (first touched by the same thread, so on NUMA machines the pages
// are local), R times; the best repetition counts, as in STREAM. This is the ceiling a decode
// step, which reads every weight once, can reach. Each repetition reads the buffer in turn as
// a plain loop; the same with software prefetch 4 KB ahead; and four quarters of each thread's
// part side by side, each prefetched (as the decode kernels read their rows); and, where the CPU
// has AVX2, 32-byte vector loads (as every decode kernel reads). On some CPUs (an Intel Xeon
// with 2 cores: 13 GB/s plain) one core's plain loop keeps too few misses in flight and the
// prefetched loops read much more; on an AMD EPYC of the Zen 3 generation the 8-byte loads of
// the plain loop are a limit (two runs, 2 threads: plain 23.7 / 25.5 GB/s, avx2 26.6 / 28.6)
// and four prefetched streams read less (16.6 / 19.7). "value" is the best of all of them.
// One JSON line:
//   {"metric":"read_bandwidth_gb_per_s","value":<best, 1e9 bytes/s>,"median":...,"threads":T,
//    "bytes":...,"reps":R,"best_by_loop":{"plain":...,"prefetch":...,"prefetch4":...,
//    "avx2":... (x86 CPUs with AVX2 only)}}
//   bench_membw [--threads T] [--mb 1024] [--reps 5]
#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr int64_t kAhead = 512; // elements (4 KB)

// Eight independent sums keep enough loads in flight that the memory system, not the adder,
// is the limit; kPrefetch adds a software prefetch kAhead elements on per cache line.
template <bool kPrefetch> uint64_t sumRange(const uint64_t* p, int64_t n) {
    uint64_t s[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if constexpr (kPrefetch) __builtin_prefetch(p + i + kAhead);
        for (int k = 0; k < 8; ++k) s[k] += p[i + k];
    }
    for (; i < n; ++i) s[0] += p[i];
    uint64_t t = 0;
    for (uint64_t v : s) t += v;
    return t;
}

// Four quarters of the range side by side, one cache line of each per step.
uint64_t sumRange4(const uint64_t* p, int64_t n) {
    const int64_t q = n / 4 / 8 * 8;
    uint64_t s[8] = {};
    for (int64_t i = 0; i < q; i += 8) {
        for (int j = 0; j < 4; ++j) {
            const uint64_t* r = p + j * q + i;
            __builtin_prefetch(r + kAhead);
            for (int k = 0; k < 8; ++k) s[k] += r[k];
        }
    }
    uint64_t t = sumRange<false>(p + 4 * q, n - 4 * q); // the tail
    for (uint64_t v : s) t += v;
    return t;
}

#if defined(__x86_64__) || defined(__i386__)
#define LCW_MEMBW_X86 1
// 32-byte loads into four independent vector sums (GCC vector extension: no intrinsics header
// needed, and the function alone is compiled for AVX2; it runs only where the CPU has it).
typedef uint64_t U64x4 __attribute__((vector_size(32)));
__attribute__((target("avx2"))) uint64_t sumRangeAvx2(const uint64_t* p, int64_t n) {
    U64x4 s[4] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; ++k) {
            U64x4 v;
            std::memcpy(&v, p + i + 4 * k, sizeof v);
            s[k] += v;
        }
    const U64x4 a = s[0] + s[1] + s[2] + s[3];
    return a[0] + a[1] + a[2] + a[3] + sumRange<false>(p + i, n - i);
}
#else
#define LCW_MEMBW_X86 0
#endif

int usage() {
    std::fprintf(stderr, "usage: bench_membw [--threads T] [--mb MiB] [--reps R]\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    long long threads = 0, mb = 1024, reps = 5;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) return usage();
        char* end = nullptr;
        const long long v = std::strtoll(argv[i + 1], &end, 10);
        if (*end != '\0' || v < 0) return usage();
        if (!std::strcmp(argv[i], "--threads"))
            threads = v;
        else if (!std::strcmp(argv[i], "--mb"))
            mb = v;
        else if (!std::strcmp(argv[i], "--reps"))
            reps = v;
        else
            return usage();
    }
    if (mb < 1 || reps < 1) return usage();
    if (threads > 0) omp_set_num_threads(int(threads));
    const int nt = omp_get_max_threads();
    const int64_t n = int64_t(mb) * (1 << 20) / 8;
    std::unique_ptr<uint64_t[]> buf(new (std::nothrow) uint64_t[size_t(n)]);
    if (!buf) {
        std::fprintf(stderr, "error: cannot allocate %lld MiB\n", mb);
        return 1;
    }
    uint64_t* p = buf.get();
    // Each thread's part, the same in the fill and in the reads.
    auto part = [&](int t, int64_t& b, int64_t& e) {
        b = n * t / nt;
        e = n * (t + 1) / nt;
    };
#pragma omp parallel num_threads(nt)
    {
        int64_t b, e;
        part(omp_get_thread_num(), b, e);
        for (int64_t i = b; i < e; ++i) p[i] = uint64_t(i) * 0x9e3779b97f4a7c15ull;
    }
    const char* names[4] = {"plain", "prefetch", "prefetch4", "avx2"};
    uint64_t (*loops[4])(const uint64_t*, int64_t) = {sumRange<false>, sumRange<true>, sumRange4,
                                                      nullptr};
    int nLoops = 3;
#if LCW_MEMBW_X86
    if (__builtin_cpu_supports("avx2")) loops[nLoops++] = sumRangeAvx2;
#endif
    double bestBy[4] = {0, 0, 0, 0};
    std::vector<double> gbps; // per repetition: the best of its loops
    uint64_t check = 0;
    for (long long r = 0; r < reps; ++r) {
        double best = 0;
        for (int l = 0; l < nLoops; ++l) {
            uint64_t total = 0;
            const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt) reduction(+ : total)
            {
                int64_t b, e;
                part(omp_get_thread_num(), b, e);
                total += loops[l](p + b, e - b);
            }
            const double v = double(n) * 8.0 / (omp_get_wtime() - t0) / 1e9;
            bestBy[l] = std::max(bestBy[l], v);
            best = std::max(best, v);
            check += total;
        }
        gbps.push_back(best);
    }
    std::vector<double> sorted = gbps;
    std::sort(sorted.begin(), sorted.end());
    nlohmann::json byLoop = nlohmann::json::object();
    for (int l = 0; l < nLoops; ++l) byLoop[names[l]] = bestBy[l];
    const nlohmann::json j = {{"metric", "read_bandwidth_gb_per_s"},
                              {"value", sorted.back()},
                              {"median", sorted[sorted.size() / 2]},
                              {"runs", gbps},
                              {"threads", nt},
                              {"bytes", n * 8},
                              {"reps", reps},
                              {"checksum", check},
                              {"best_by_loop", byLoop}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
}
