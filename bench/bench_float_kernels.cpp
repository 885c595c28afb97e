// Float kernel micro-benchmark: the machine's FMA peak and memory read bandwidth, then for every
// instruction-set level the prefill GEMM (GFLOP/s against the peak) and the decode product (GB/s
// of weights against the bandwidth) over F32, F16 and BF16 weights. One JSON line per number;
// each is the best of --reps repetitions (the best run is the one least disturbed by other
// processes on a shared machine).
//   bench_float_kernels [--threads T] [--reps R] [--n N] [--rows R] [--tokens T1,T2,...]
//                       [--only-tile 1]   (peak, bandwidth and the one-thread tile GEMM only)
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/simd.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace lcw;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double bestSeconds(int reps, const std::function<void()>& f) {
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
        const double t0 = now();
        f();
        best = std::min(best, now() - t0);
    }
    return best;
}

void emit(nlohmann::json j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
}

#if LCW_X86
// 12 independent multiply-add chains: enough to cover the FMA latency on two pipes.
#define LCW_FMA_PEAK(V, SET1, FMA, LANES)                                                          \
    /* distinct starting values: identical chains would be merged by the compiler */               \
    V a0 = SET1(1.0f), a1 = SET1(1.01f), a2 = SET1(1.02f), a3 = SET1(1.03f), a4 = SET1(1.04f),     \
      a5 = SET1(1.05f), a6 = SET1(1.06f), a7 = SET1(1.07f), a8 = SET1(1.08f), a9 = SET1(1.09f),    \
      a10 = SET1(1.1f), a11 = SET1(1.11f);                                                         \
    const V b = SET1(0.999999f), c = SET1(1e-7f);                                                  \
    const double t0 = now();                                                                       \
    for (long i = 0; i < iters; ++i) {                                                             \
        a0 = FMA(a0, b, c), a1 = FMA(a1, b, c), a2 = FMA(a2, b, c), a3 = FMA(a3, b, c);            \
        a4 = FMA(a4, b, c), a5 = FMA(a5, b, c), a6 = FMA(a6, b, c), a7 = FMA(a7, b, c);            \
        a8 = FMA(a8, b, c), a9 = FMA(a9, b, c), a10 = FMA(a10, b, c), a11 = FMA(a11, b, c);        \
    }                                                                                              \
    const double sec = now() - t0;                                                                 \
    for (V v : {a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11}) a0 = FMA(a0, b, v);                 \
    std::memcpy(sink, &a0, sizeof(float));                                                         \
    return double(iters) * 12 * LANES * 2 / sec / 1e9

LCW_AVX512 double peak512(long iters, float* sink) {
    LCW_FMA_PEAK(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16);
}
LCW_AVX2 double peak256(long iters, float* sink) {
    LCW_FMA_PEAK(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8);
}

// Read bandwidth: a sum over a buffer far larger than the caches, split over `threads`.
LCW_AVX2 float sumFloats(const float* p, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
    }
    return kernels::detail::hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

double readBandwidth(const float* p, int64_t n, int threads, int reps) {
    float total = 0;
    const int64_t chunk = n / threads / 32 * 32;
    const double sec = bestSeconds(reps, [&] {
#pragma omp parallel num_threads(threads) reduction(+ : total)
        total += sumFloats(p + omp_get_thread_num() * chunk, chunk);
    });
    if (total == 1.2345f) std::printf(" ");
    return double(chunk * threads) * 4 / sec / 1e9;
}
#endif

struct Weight {
    std::vector<std::byte> bytes;
    TensorView view;
};

Weight makeWeight(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
    Weight w;
    const size_t es = dt == DType::F32 ? 4 : 2;
    w.bytes.resize(size_t(rows * cols) * es + 64);
    std::uniform_real_distribution<float> d(-1, 1);
    for (int64_t i = 0; i < rows * cols; ++i) {
        const float f = d(rng);
        if (dt == DType::F32)
            std::memcpy(w.bytes.data() + 4 * i, &f, 4);
        else {
            const uint16_t h = dt == DType::F16 ? f32ToF16(f) : f32ToBf16(f);
            std::memcpy(w.bytes.data() + 2 * i, &h, 2);
        }
    }
    w.view.name = "bench";
    w.view.dtype = dt;
    w.view.shape = {rows, cols};
    w.view.data = w.bytes.data();
    w.view.nbytes = uint64_t(rows * cols) * es;
    return w;
}

} // namespace

int main(int argc, char** argv) {
    int threads = omp_get_max_threads(), reps = 5;
    int64_t n = 2048, rows = 5632;
    std::vector<int64_t> tokens = {1, 64, 512};
    bool onlyTile = false;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--threads"))
            threads = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--reps"))
            reps = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--n"))
            n = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--rows"))
            rows = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--only-tile"))
            onlyTile = std::atoi(argv[i + 1]) != 0;
        else if (!std::strcmp(argv[i], "--tokens")) {
            tokens.clear();
            for (const char* p = argv[i + 1]; *p;) {
                tokens.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
                if (*p == ',') ++p;
            }
        }
    }
    double peakCore = 0, bandwidth = 0;
#if LCW_X86
    {
        float sink = 0;
        const bool has512 = kernels::isaSupported(kernels::Isa::Avx512);
        double p512 = 0, p256 = 0;
        for (int i = 0; i < 50 * reps; ++i) {
            if (has512) p512 = std::max(p512, peak512(100000, &sink));
            p256 = std::max(p256, peak256(100000, &sink));
        }
        peakCore = std::max(p512, p256);
        if (has512)
            emit({{"metric", "fma_peak_gflops_per_core"}, {"isa", "avx512"}, {"value", p512}});
        emit({{"metric", "fma_peak_gflops_per_core"}, {"isa", "avx2"}, {"value", p256}});
        const int64_t bn = int64_t(1) << 26; // 256 MiB
        kernels::FloatBuffer big(size_t(bn), 1.0f);
        for (int t : {1, threads}) {
            const double bw = readBandwidth(big.data(), bn, t, reps);
            if (t == threads) bandwidth = bw;
            emit({{"metric", "read_bandwidth_gbps"}, {"threads", t}, {"value", bw}});
            if (threads == 1) break;
        }
    }
#endif
    std::mt19937 rng(1);
    // The prefill kernel alone, one thread, on a float tile shaped as linear() hands it over (R
    // rows of n inputs, ~256 KiB): short calls, best of many, so a quiet time slice decides.
    for (auto [tn, tr] : {std::pair<int64_t, int64_t>{2048, 32}, {5632, 8}}) {
        for (int64_t T : tokens) {
            if (T < 4) continue;
            kernels::FloatBuffer w(size_t(tr * tn), 0.25f), x(size_t(T * tn), 0.5f),
                y(size_t(T * tr));
            for (kernels::Isa isa : kernels::supportedIsas()) {
                kernels::setIsa(isa);
                const double sec = bestSeconds(10 * reps, [&] {
                    kernels::gemmNT(w.data(), tn, tr, x.data(), tn, T, y.data(), tr, tn);
                });
                const double gflops = 2.0 * double(tr * tn * T) / sec / 1e9;
                emit({{"metric", "gemm_tile_gflops_one_thread"},
                      {"isa", kernels::isaName(isa)},
                      {"rows", tr},
                      {"cols", tn},
                      {"tokens", T},
                      {"value", gflops},
                      {"fraction_of_peak", peakCore > 0 ? gflops / peakCore : 0.0}});
            }
            kernels::setIsa(kernels::Isa::Auto);
        }
    }
    // F16 / BF16 weights: converting the tile to floats first (linear() for 4+ tokens) against
    // the fused product (converts inside the loop; linear() for 1..3 tokens).
    for (DType dt : {DType::F16, DType::BF16}) {
        const int64_t tn = 2048, tr = 32;
        Weight w = makeWeight(dt, tr, tn, rng);
        const auto* w16 = reinterpret_cast<const uint16_t*>(w.view.data);
        kernels::FloatBuffer tile(size_t(tr * tn)), x(size_t(512 * tn), 0.5f), y(size_t(512 * tr));
        for (int64_t T : tokens) {
            for (kernels::Isa isa : kernels::supportedIsas()) {
                if (isa == kernels::Isa::Generic) continue;
                kernels::setIsa(isa);
                const double conv = bestSeconds(10 * reps, [&] {
                    kernels::dequantizeRows(w.view, 0, tr, tile.data());
                    kernels::gemmNT(tile.data(), tn, tr, x.data(), tn, T, y.data(), tr, tn);
                });
                const double fused = bestSeconds(10 * reps, [&] {
                    kernels::detail::gemmNT16(dt == DType::BF16, w16, tn, tr, x.data(), tn, T,
                                              y.data(), tr, tn);
                });
                const double flop = 2.0 * double(tr * tn * T);
                emit({{"metric", "half_tile_gflops_one_thread"},
                      {"isa", kernels::isaName(isa)},
                      {"dtype", dtypeName(dt)},
                      {"rows", tr},
                      {"cols", tn},
                      {"tokens", T},
                      {"converted", flop / conv / 1e9},
                      {"fused", flop / fused / 1e9}});
            }
            kernels::setIsa(kernels::Isa::Auto);
        }
    }
    if (onlyTile) return 0;
    // Decode: enough weight rows that one pass (~256 MiB) leaves the caches behind.
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        const int64_t es = dt == DType::F32 ? 4 : 2;
        const int64_t decRows = (int64_t(256) << 20) / (n * es);
        Weight w = makeWeight(dt, decRows, n, rng);
        kernels::FloatBuffer x(size_t(n * 512), 0.5f), y(size_t(decRows * 512));
        for (kernels::Isa isa : kernels::supportedIsas()) {
            kernels::setIsa(isa);
            for (int64_t T : tokens) {
                if (T != 1) continue;
                const double sec = bestSeconds(reps, [&] {
                    kernels::linear(w.view, x.data(), n, 1, y.data(), decRows, nullptr, threads);
                });
                const double gbps = double(w.view.nbytes) / sec / 1e9;
                emit({{"metric", "decode_weight_gbps"},
                      {"isa", kernels::isaName(isa)},
                      {"dtype", dtypeName(dt)},
                      {"rows", decRows},
                      {"cols", n},
                      {"threads", threads},
                      {"value", gbps},
                      {"fraction_of_bandwidth", bandwidth > 0 ? gbps / bandwidth : 0.0}});
            }
        }
        kernels::setIsa(kernels::Isa::Auto);
    }
    // Prefill: one [rows x n] weight times T tokens.
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        Weight w = makeWeight(dt, rows, n, rng);
        for (int64_t T : tokens) {
            if (T < 4) continue;
            kernels::FloatBuffer x(size_t(n * T), 0.5f), y(size_t(rows * T));
            for (kernels::Isa isa : kernels::supportedIsas()) {
                kernels::setIsa(isa);
                const double sec = bestSeconds(std::max(2, reps / 2), [&] {
                    kernels::linear(w.view, x.data(), n, T, y.data(), rows, nullptr, threads);
                });
                const double gflops = 2.0 * double(rows * n * T) / sec / 1e9;
                emit({{"metric", "prefill_gflops"},
                      {"isa", kernels::isaName(isa)},
                      {"dtype", dtypeName(dt)},
                      {"rows", rows},
                      {"cols", n},
                      {"tokens", T},
                      {"threads", threads},
                      {"value", gflops},
                      {"fraction_of_peak", peakCore > 0 ? gflops / (peakCore * threads) : 0.0}});
            }
            kernels::setIsa(kernels::Isa::Auto);
        }
    }
    return 0;
}
