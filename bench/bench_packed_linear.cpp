// Micro-benchmark of one linear layer: dense F32 / F16, the GGUF block types as a loaded GGUF
// file runs them (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_XS: ggml's quantiser, rows
// repacked as the CPU backend repacks them) and lcw's packed formats (W4A16 g128, W8A16, W8A8,
// W4A8, 2:4, NF4, FP8), decode (1 token) and prefill (N tokens), through the runtime's
// linearBatch driver. Runs are interleaved (every configuration once per round) and
// the median of the rounds is printed, one JSON line per configuration and batch:
//   bench_packed_linear [--rows R] [--cols C] [--prefill N] [--rounds K] [--threads T] [--isa I]
//                       [--cpu-time 1]   (one thread, its CPU time: robust on a shared machine)
//                       [--copies N]     (N copies of each weight run in turn, times per copy:
//                                         with N x size above the L3 cache the weights stream
//                                         from memory as in a model, not from the cache)
//                       [--only A,B,...] (only the configurations of these names)
// Weight GB/s = packed bytes / time; for prefill also GMAC/s.
#include "core/common/dtype.h"
#include "core/compress/quantizer.h"
#include "core/io/quants.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/cpu/repack_cache.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace lcw;

namespace {

bool g_cpuTime = false;

/// Wall-clock seconds, or with one thread (--cpu-time) the thread's CPU seconds: on a machine
/// shared with other jobs the kernel's own time, without the waits of being descheduled.
double now() {
    if (g_cpuTime) {
        timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Config {
    std::string name;
    size_t bytes = 0;
    std::function<void(const float* x, int64_t nTok, float* y)> run;
};

compress::WeightSettings intSettings(int bits, compress::Granularity g, int64_t group) {
    compress::WeightSettings s;
    s.bits = bits;
    s.format = compress::WeightFormat::Int;
    s.symmetric = true;
    s.granularity = g;
    s.groupSize = group;
    return s;
}

struct Packed {
    compress::PackedTensor pt;
    std::vector<uint8_t> mask;
    std::unique_ptr<kernels::PackedLinear> pl;
};

std::unique_ptr<Packed> makePacked(const std::vector<float>& w, int64_t rows, int64_t cols,
                                   const compress::WeightSettings& st, bool two4) {
    auto p = std::make_unique<Packed>();
    p->pt = compress::quantize(w.data(), rows, cols, st, "bench");
    if (two4) {
        // Keep the 2 largest of every 4 (magnitude pruning).
        p->mask.assign(size_t(rows * cols), 0);
        for (int64_t i = 0; i < rows * cols; i += 4) {
            int a = 0, b = 1;
            if (std::fabs(w[size_t(i + b)]) > std::fabs(w[size_t(i + a)])) std::swap(a, b);
            for (int k = 2; k < 4; ++k) {
                const float v = std::fabs(w[size_t(i + k)]);
                if (v > std::fabs(w[size_t(i + a)]))
                    b = a, a = k;
                else if (v > std::fabs(w[size_t(i + b)]))
                    b = k;
            }
            p->mask[size_t(i + a)] = p->mask[size_t(i + b)] = 1;
        }
    }
    kernels::PackedSource s;
    const auto& q = p->pt;
    s.kind = st.format == compress::WeightFormat::Int   ? kernels::PackedSource::Kind::Int
             : st.format == compress::WeightFormat::Nf4 ? kernels::PackedSource::Kind::Nf4
                                                        : kernels::PackedSource::Kind::Fp8;
    s.bits = st.bits;
    s.symmetric = st.symmetric;
    s.granularity = st.granularity == compress::Granularity::Tensor
                        ? kernels::PackedSource::Granularity::Tensor
                    : st.granularity == compress::Granularity::Channel
                        ? kernels::PackedSource::Granularity::Channel
                        : kernels::PackedSource::Granularity::Group;
    s.group = st.groupSize;
    s.rows = rows, s.cols = cols;
    s.codes = q.codes.data(), s.codeBytes = q.codes.size();
    s.scales = q.scales.data(), s.nScales = q.scales.size();
    s.zeros = q.zeros.empty() ? nullptr : q.zeros.data(), s.nZeros = q.zeros.size();
    s.mask = p->mask.empty() ? nullptr : p->mask.data();
    s.name = "bench";
    const double t0 = now();
    p->pl = kernels::PackedLinear::pack(s);
    std::printf("{\"pack\": \"%s\", \"ms\": %.1f}\n", p->pl->describe().c_str(),
                (now() - t0) * 1e3);
    return p;
}

struct Options {
    int64_t rows = 5632, cols = 2048, prefill = 512;
    int rounds = 5, threads = 2, copies = 1;
    std::string isa, only; ///< only: ",A,B," or empty (every configuration)
    bool wanted(const std::string& name) const {
        return only.empty() || only.find("," + name + ",") != std::string::npos;
    }
};

Options parseOptions(int argc, char** argv) {
    Options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--rows")
            o.rows = std::atoll(argv[i + 1]);
        else if (a == "--cols")
            o.cols = std::atoll(argv[i + 1]);
        else if (a == "--prefill")
            o.prefill = std::atoll(argv[i + 1]);
        else if (a == "--rounds")
            o.rounds = std::atoi(argv[i + 1]);
        else if (a == "--threads")
            o.threads = std::atoi(argv[i + 1]);
        else if (a == "--isa")
            o.isa = argv[i + 1];
        else if (a == "--cpu-time")
            g_cpuTime = std::atoi(argv[i + 1]) != 0;
        else if (a == "--copies")
            o.copies = std::max(1, std::atoi(argv[i + 1]));
        else if (a == "--only")
            o.only.append(",").append(argv[i + 1]).append(",");
    }
    if (g_cpuTime) o.threads = 1;
    return o;
}

/// The configurations to time, each run over its `copies` weights in turn. `owned` keeps the
/// float copies' bytes and `packs` the packed weights alive.
std::vector<Config> makeConfigs(const Options& o, const std::vector<float>& w,
                                std::vector<std::vector<std::byte>>& owned,
                                std::vector<std::unique_ptr<Packed>>& packs) {
    using G = compress::Granularity;
    const int64_t rows = o.rows, cols = o.cols;
    const int threads = o.threads;
    std::vector<Config> cfgs;
    // F32 and F16: copies of the stored bytes, multiplied in place.
    auto addFloat = [&](const char* name, DType dt, const void* data, size_t bytes) {
        if (!o.wanted(name)) return;
        std::vector<TensorView> views(size_t(o.copies));
        for (TensorView& v : views) {
            const auto* b = static_cast<const std::byte*>(data);
            owned.emplace_back(b, b + bytes);
            v.dtype = dt, v.shape = {rows, cols};
            v.data = owned.back().data(), v.nbytes = bytes;
        }
        cfgs.push_back({name, bytes, [=](const float* x, int64_t n, float* y) {
                            for (const TensorView& t : views)
                                kernels::linear(t, x, cols, n, y, rows, nullptr, threads);
                        }});
    };
    std::vector<uint16_t> w16(w.size());
    for (size_t i = 0; i < w.size(); ++i) w16[i] = f32ToF16(w[i]);
    addFloat("F32", DType::F32, w.data(), w.size() * 4);
    addFloat("F16", DType::F16, w16.data(), w16.size() * 2);

    // GGUF block types: quantised once (ggml's quantiser), each copy kept in the file's layout
    // (the TensorView) and repacked by the CPU backend's cache (null where the active level has
    // no repacked form, or with LCW_NO_REPACK=1).
    static kernels::RepackCache repacked;
    struct Gguf {
        TensorView view;
        const std::byte* repacked = nullptr;
    };
    auto addGguf = [&](DType dt) {
        std::string name(dtypeName(dt));
        for (char& c : name) c = char(std::toupper(static_cast<unsigned char>(c)));
        if (!o.wanted(name) || cols % dtypeBlockElems(dt) != 0) return;
        const size_t rowBytes = size_t(*dtypeBytesFor(dt, uint64_t(cols)));
        std::vector<std::byte> q(rowBytes * size_t(rows));
        for (int64_t r = 0; r < rows; ++r)
            quantizeRow(dt, w.data() + r * cols, q.data() + size_t(r) * rowBytes, cols);
        std::vector<Gguf> gs(size_t(o.copies));
        for (Gguf& g : gs) {
            owned.push_back(q);
            g.view.dtype = dt, g.view.shape = {rows, cols};
            g.view.data = owned.back().data(), g.view.nbytes = q.size();
            g.repacked = repacked.get(g.view);
        }
        cfgs.push_back({name, q.size(), [=](const float* x, int64_t n, float* y) {
                            for (const Gguf& g : gs) {
                                kernels::LinearJob j;
                                j.w = &g.view, j.y = y, j.ldy = rows, j.repacked = g.repacked;
                                kernels::linearBatch({&j, 1}, x, cols, n, threads);
                            }
                        }});
    };
    for (DType dt : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q2_K,
                     DType::Q3_K, DType::IQ4_XS})
        addGguf(dt);

    static ActQuantSpec a8;
    a8.bits = 8;
    auto addPacked = [&](const std::string& name, compress::WeightSettings st, bool two4,
                         const ActQuantSpec* act, bool exact) {
        if (!o.wanted(name)) return;
        std::vector<const kernels::PackedLinear*> pls;
        for (int k = 0; k < o.copies; ++k) {
            packs.push_back(makePacked(w, rows, cols, st, two4));
            pls.push_back(packs.back()->pl.get());
        }
        cfgs.push_back({name, pls[0]->bytes(), [=](const float* x, int64_t n, float* y) {
                            for (const kernels::PackedLinear* pl : pls) {
                                kernels::LinearJob j;
                                j.packed = pl, j.y = y, j.ldy = rows, j.act = act;
                                kernels::linearBatch({&j, 1}, x, cols, n, threads, exact);
                            }
                        }});
    };
    addPacked("W4A16 g128", intSettings(4, G::Group, 128), false, nullptr, false);
    addPacked("W4A16 g128 exact", intSettings(4, G::Group, 128), false, nullptr, true);
    addPacked("W8A16 channel", intSettings(8, G::Channel, 0), false, nullptr, false);
    addPacked("W8A8 channel", intSettings(8, G::Channel, 0), false, &a8, false);
    addPacked("W4A8 g128", intSettings(4, G::Group, 128), false, &a8, false);
    addPacked("W4A16 g128 2:4", intSettings(4, G::Group, 128), true, nullptr, false);
    addPacked("W8A8 channel 2:4", intSettings(8, G::Channel, 0), true, &a8, false);
    addPacked("W8A16 channel 2:4", intSettings(8, G::Channel, 0), true, nullptr, false);
    compress::WeightSettings nf4;
    nf4.format = compress::WeightFormat::Nf4, nf4.bits = 4, nf4.granularity = G::Group,
    nf4.groupSize = 64;
    addPacked("NF4 g64", nf4, false, nullptr, false);
    compress::WeightSettings fp8;
    fp8.format = compress::WeightFormat::Fp8E4M3, fp8.bits = 8, fp8.granularity = G::Channel;
    addPacked("FP8 channel", fp8, false, nullptr, false);
    return cfgs;
}

/// Times every configuration on nTok tokens (interleaved rounds, enough repetitions per
/// measurement for ~50 ms) and prints one JSON line each.
void measure(const Options& o, const std::vector<Config>& cfgs, int64_t nTok,
             const std::vector<float>& x, std::vector<float>& y) {
    std::vector<std::vector<double>> times(cfgs.size());
    std::vector<int> reps(cfgs.size(), 1);
    for (size_t c = 0; c < cfgs.size(); ++c) {
        const double t0 = now();
        cfgs[c].run(x.data(), nTok, y.data());
        const double dt = now() - t0;
        reps[c] = std::max(1, int(0.05 / std::max(dt, 1e-6)));
    }
    for (int r = 0; r < o.rounds; ++r)
        for (size_t c = 0; c < cfgs.size(); ++c) {
            const double t0 = now();
            for (int k = 0; k < reps[c]; ++k) cfgs[c].run(x.data(), nTok, y.data());
            times[c].push_back((now() - t0) / reps[c] / o.copies);
        }
    double f32 = 0;
    for (size_t c = 0; c < cfgs.size(); ++c) {
        auto v = times[c];
        std::sort(v.begin(), v.end());
        const double med = v[v.size() / 2];
        if (cfgs[c].name == "F32") f32 = med;
        std::printf("{\"config\": \"%s\", \"isa\": \"%s\", \"rows\": %lld, \"cols\": %lld, "
                    "\"tokens\": %lld, \"ms\": %.3f, \"weight_GBps\": %.2f, \"GMACps\": %.1f, "
                    "\"tokens_per_s\": %.1f, \"bytes\": %zu, \"copies\": %d, "
                    "\"speedup_vs_f32\": %.2f}\n",
                    cfgs[c].name.c_str(), kernels::isaName(kernels::activeIsa()), (long long)o.rows,
                    (long long)o.cols, (long long)nTok, med * 1e3,
                    double(cfgs[c].bytes) / med / 1e9,
                    double(o.rows) * double(o.cols) * double(nTok) / med / 1e9, double(nTok) / med,
                    cfgs[c].bytes, o.copies, f32 > 0 ? f32 / med : 0.0);
    }
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parseOptions(argc, argv);
    if (!o.isa.empty()) kernels::setIsa(*kernels::isaFromName(o.isa));

    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    std::vector<float> w(size_t(o.rows * o.cols));
    for (auto& v : w) v = nd(rng);
    std::vector<std::vector<std::byte>> owned;
    std::vector<std::unique_ptr<Packed>> packs;
    const std::vector<Config> cfgs = makeConfigs(o, w, owned, packs);

    // Room for the decode token even without a prefill batch (--prefill 0 or 1: decode only).
    const int64_t maxTok = std::max<int64_t>(o.prefill, 1);
    std::vector<float> x(size_t(maxTok * o.cols));
    for (auto& v : x) v = nd(rng) * 50.0f;
    std::vector<float> y(size_t(maxTok * o.rows));
    measure(o, cfgs, 1, x, y);
    if (o.prefill > 1) measure(o, cfgs, o.prefill, x, y);
    return 0;
}
