// The Vulkan backend: weight products in compute shaders (shaders/matmul.comp, one pipeline per
// weight type). Stored weights (F32, F16, BF16 and the GGUF block types) are uploaded once, as
// their raw bytes, and lcw's packed weights once in their GPU form (PackedLinear::gpuForm: codes,
// scales, zeros, mask, outliers, column order; shaders/lcw_dequant.glsl); both are dequantised
// in registers. Activations go up and results come back per call. Products the layer split
// keeps on the CPU run through the CPU kernels. Float activations throughout: the GPU result
// equals the CPU's --exact-activations product up to float summation order.
#include "core/common/error.h"
#include "core/runtime/backend.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/vulkan/vk_attention.h"
#include "core/runtime/vulkan/vk_context.h"
#include "core/runtime/vulkan/vk_forward.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

namespace lcw::runtime::vulkan {

namespace {

/// The shaders' name suffix of a stored weight type ("q4_k": matvec_q4_k, matmul_q4_k), or null
/// when there is none.
const char* matmulShader(DType t) {
    switch (t) {
    case DType::F32:
        return "f32";
    case DType::F16:
        return "f16";
    case DType::BF16:
        return "bf16";
    case DType::Q4_0:
        return "q4_0";
    case DType::Q4_1:
        return "q4_1";
    case DType::Q5_0:
        return "q5_0";
    case DType::Q5_1:
        return "q5_1";
    case DType::Q8_0:
        return "q8_0";
    case DType::Q2_K:
        return "q2_k";
    case DType::Q3_K:
        return "q3_k";
    case DType::Q4_K:
        return "q4_k";
    case DType::Q5_K:
        return "q5_k";
    case DType::Q6_K:
        return "q6_k";
    case DType::IQ4_NL:
        return "iq4_nl";
    case DType::IQ4_XS:
        return "iq4_xs";
    default:
        return nullptr;
    }
}

std::atomic<int64_t> gDeviceProducts{0};
std::atomic<int64_t> gResidentForwards{0};
std::atomic<uint64_t> gBindingLimitForTests{0}, gDeviceMemoryForTests{0};

/// The bytes one binding may cover on `ctx` (below 2 GiB: the shaders index bytes in 32 bits).
uint64_t bindingLimit(const Context& ctx) {
    const uint64_t forced = gBindingLimitForTests.load();
    if (forced) return forced;
    return std::min<uint64_t>(ctx.maxBindingBytes(), uint64_t(1) << 31);
}

/// Up to this many tokens a product runs as matrix-vector products (matvec.comp).
constexpr int64_t kMatvecMaxTokens = 4;

struct MatmulPush {
    uint32_t rows, cols, nTok, rowBytes, ldy, row0, hasBias, biasOffset;
};

/// The lcw shaders' extra push constants (matmul_common.glsl, WT_LCW): the format and the word
/// offsets of the arrays in one chunk's buffer.
struct LcwPush {
    uint32_t kind, bits, sym, groupCols, gpr, offScales, offZeros, hasMask, maskWords, offMask,
        nOut, offOv, offOcols, offOstart, hasOrder, offOrder, twoFour, offIdx, idxWords;
};

/// A weight on the device, in row chunks that each fit one storage-buffer binding.
struct DeviceWeight {
    struct Chunk {
        Buffer buf;
        int64_t row0 = 0, rows = 0;
        LcwPush lcw{}; ///< lcw packed weights: the chunk's layout
    };
    std::vector<Chunk> chunks;
    const char* shader = nullptr;
    uint32_t rowBytes = 0;
    bool lcw = false;
};

/// A stored tensor as the cache knows it: where its bytes are, how many, their type, and a hash
/// of a sample of them (so that different contents at a reused address never share an entry).
struct WeightKey {
    const void* data = nullptr;
    uint64_t nbytes = 0;
    DType type = DType::F32;
    uint64_t sample = 0;
    bool packed = false; ///< data is a kernels::PackedLinear
    auto operator<=>(const WeightKey&) const = default;
};

/// A packed weight's key: its address, size, shape, description and a hash of the values of its
/// first and last rows (computed once per backend and weight, VulkanBackend::acquire).
WeightKey keyOf(const kernels::PackedLinear& p) {
    WeightKey k{&p, p.bytes(), DType::F32, 1469598103934665603ull, true};
    auto mix = [&](const void* data, size_t n) {
        const auto* b = static_cast<const uint8_t*>(data);
        for (size_t i = 0; i < n; ++i) k.sample = (k.sample ^ b[i]) * 1099511628211ull;
    };
    const int64_t shape[2] = {p.rows(), p.cols()};
    mix(shape, sizeof shape);
    const std::string d = p.describe();
    mix(d.data(), d.size());
    std::vector<float> row(size_t(p.cols()));
    for (int64_t r : {int64_t(0), p.rows() - 1}) {
        p.dequantizeRows(r, 1, row.data());
        mix(row.data(), row.size() * sizeof(float));
    }
    return k;
}

WeightKey keyOf(const TensorView& t) {
    WeightKey k{t.data, t.nbytes, t.dtype, 1469598103934665603ull};
    const auto* b = reinterpret_cast<const uint8_t*>(t.data);
    auto mix = [&](uint64_t off, uint64_t n) {
        for (uint64_t i = off; i < std::min(off + n, t.nbytes); ++i)
            k.sample = (k.sample ^ b[i]) * 1099511628211ull;
    };
    // 16 slices of 64 bytes spread over the tensor, the first and the last included.
    for (uint64_t i = 0; i < 16; ++i) mix(t.nbytes > 64 ? (t.nbytes - 64) * i / 15 : 0, 64);
    return k;
}

/// The stored weights uploaded to one device, shared by every backend (session) on it: a base
/// model and its compressed overlays (which return the base's tensors for the layers they leave
/// alone) upload each tensor once. An entry lives while a backend that used it lives; a
/// WeightSource's tensors do not move or change while a session over it exists.
class WeightCache {
public:
    explicit WeightCache(std::shared_ptr<Context> c) : ctx(std::move(c)) {}
    ~WeightCache() {
        for (auto& [key, e] : entries)
            for (auto& ch : e.w.chunks) ctx->destroy(ch.buf);
    }
    /// The device copy of `t`, uploaded when absent; `held` records the backend's reference.
    /// Called with ctx->mutex() held.
    const DeviceWeight& acquire(const TensorView& t, std::set<WeightKey>& held) {
        return acquire(keyOf(t), held, [&] { return upload(t); });
    }
    /// The device copy of a packed weight whose key is `key` (keyOf(p)).
    const DeviceWeight& acquire(const kernels::PackedLinear& p, const WeightKey& key,
                                std::set<WeightKey>& held) {
        return acquire(key, held, [&] { return uploadPacked(p); });
    }
    template <class Upload>
    const DeviceWeight& acquire(const WeightKey& key, std::set<WeightKey>& held, Upload&& up) {
        auto it = entries.find(key);
        if (it == entries.end()) {
            Entry e{up(), 0, 0};
            for (const auto& ch : e.w.chunks) e.bytes += ch.buf.allocBytes;
            it = entries.emplace(key, std::move(e)).first;
        }
        if (held.insert(key).second) ++it->second.refs;
        return it->second.w;
    }
    /// Drops a backend's references (ctx->mutex() held).
    void release(const std::set<WeightKey>& held) {
        for (const WeightKey& k : held) {
            auto it = entries.find(k);
            if (it == entries.end() || --it->second.refs > 0) continue;
            for (auto& ch : it->second.w.chunks) ctx->destroy(ch.buf);
            entries.erase(it);
        }
    }
    uint64_t bytesOf(const std::set<WeightKey>& held) const {
        uint64_t b = 0;
        for (const WeightKey& k : held)
            if (auto it = entries.find(k); it != entries.end()) b += it->second.bytes;
        return b;
    }

    std::shared_ptr<Context> ctx;

private:
    struct Entry {
        DeviceWeight w;
        int refs = 0;
        uint64_t bytes = 0;
    };
    DeviceWeight upload(const TensorView& t) {
        DeviceWeight w;
        w.shader = matmulShader(t.dtype);
        const uint64_t rowBytes = t.rowBytes();
        const uint64_t limit = bindingLimit(*ctx);
        if (rowBytes == 0 || rowBytes > limit)
            throw Error("Vulkan: weight " + t.name + " has rows of " + std::to_string(rowBytes) +
                        " bytes, more than one buffer binding allows");
        w.rowBytes = uint32_t(rowBytes);
        // Rows per chunk: one binding, and at most 65535 workgroups of 16 rows (the smallest
        // maxComputeWorkGroupCount Vulkan allows).
        const int64_t perChunk = std::min<int64_t>(int64_t(limit / rowBytes), 65535 * 16);
        uploadChunks(w, t.rows(), perChunk, [&](DeviceWeight::Chunk& ch) {
            const uint64_t bytes = uint64_t(ch.rows) * rowBytes;
            // Rounded up to whole 32-bit words: the shaders read words.
            ch.buf = ctx->createDeviceBuffer((bytes + 3) & ~uint64_t(3));
            ctx->upload(ch.buf, 0, t.row(ch.row0), bytes);
        });
        return w;
    }
    /// Splits `rows` into chunks of at most perChunk rows and lets fill() create and upload each
    /// chunk's buffer; on failure the buffers made so far are freed.
    template <class Fill>
    void uploadChunks(DeviceWeight& w, int64_t rows, int64_t perChunk, Fill&& fill) {
        try {
            for (int64_t r0 = 0; r0 < rows; r0 += perChunk) {
                DeviceWeight::Chunk& ch = w.chunks.emplace_back();
                ch.row0 = r0;
                ch.rows = std::min(perChunk, rows - r0);
                fill(ch);
            }
        } catch (...) {
            for (auto& ch : w.chunks) ctx->destroy(ch.buf);
            throw;
        }
    }
    /// An lcw packed weight in chunks of rows, each chunk one buffer holding its rows' gpuForm()
    /// arrays (codes, 2:4 indices, scales, zeros, mask, outlier values) and the weight's outlier
    /// columns, their start per 32 columns and the column order, at word offsets (LcwPush).
    DeviceWeight uploadPacked(const kernels::PackedLinear& p) {
        DeviceWeight w;
        w.shader = "lcw";
        w.lcw = true;
        const int64_t rows = p.rows(), cols = p.cols();
        // The row-independent part, from a one-row form.
        const kernels::GpuPacked g1 = p.gpuForm(0, 1);
        const uint64_t nOut = g1.outlierCols.size(), n32 = uint64_t(cols + 31) / 32;
        const uint64_t asym = g1.kind == kernels::PackedSource::Kind::Int && !g1.symmetric;
        auto halfWords = [](uint64_t n) { return (n + 1) / 2; };
        const uint64_t fixedWords = nOut + n32 + 1 + (g1.colOrder.empty() ? 0 : uint64_t(cols));
        // Words per row, rounded up for the f16 arrays of a chunk (+3 words).
        const uint64_t perRow = uint64_t(g1.rowWords) + uint64_t(g1.maskWords) +
                                uint64_t(g1.idxWords) +
                                (uint64_t(g1.groupsPerRow) * (1 + asym) + nOut + 1) / 2 + 1;
        const uint64_t limit = bindingLimit(*ctx);
        if (4 * (fixedWords + perRow + 3) > limit)
            throw Error("Vulkan: packed weight " + p.describe() + " has rows larger than one " +
                        "buffer binding allows");
        w.rowBytes = uint32_t(g1.rowWords * 4);
        const int64_t perChunk =
            std::min<int64_t>(int64_t((limit / 4 - fixedWords - 3) / perRow), 65535 * 16);
        std::vector<uint32_t> ostart(n32 + 1, 0);
        for (uint64_t b = 0, j = 0; b <= n32; ++b) {
            while (j < nOut && uint64_t(g1.outlierCols[j]) < 32 * b) ++j;
            ostart[b] = uint32_t(j);
        }
        uploadChunks(w, rows, perChunk, [&](DeviceWeight::Chunk& ch) {
            const kernels::GpuPacked g = p.gpuForm(ch.row0, ch.rows);
            std::vector<uint32_t> words;
            auto put = [&](const void* src, uint64_t nWords, uint64_t nBytes) {
                const size_t at = words.size();
                words.resize(at + nWords, 0);
                if (nBytes) std::memcpy(words.data() + at, src, nBytes);
                return uint32_t(at);
            };
            LcwPush& lp = ch.lcw;
            lp.kind = uint32_t(g.kind);
            lp.bits = uint32_t(g.bits);
            lp.sym = g.symmetric ? 1 : 0;
            lp.groupCols = uint32_t(g.groupCols);
            lp.gpr = uint32_t(g.groupsPerRow);
            put(g.codes.data(), g.codes.size(), g.codes.size() * 4);
            lp.offScales = put(g.scales.data(), halfWords(g.scales.size()), g.scales.size() * 2);
            lp.offZeros = put(g.zeros.data(), halfWords(g.zeros.size()), g.zeros.size() * 2);
            lp.hasMask = g.mask.empty() ? 0 : 1;
            lp.maskWords = uint32_t(g.maskWords);
            lp.offMask = put(g.mask.data(), g.mask.size(), g.mask.size() * 4);
            lp.nOut = uint32_t(nOut);
            lp.offOv = put(g.outlierValues.data(), halfWords(g.outlierValues.size()),
                           g.outlierValues.size() * 2);
            lp.offOcols = put(g.outlierCols.data(), nOut, nOut * 4);
            lp.offOstart = put(ostart.data(), ostart.size(), ostart.size() * 4);
            lp.hasOrder = g.colOrder.empty() ? 0 : 1;
            lp.offOrder = put(g.colOrder.data(), g.colOrder.size(), g.colOrder.size() * 4);
            lp.twoFour = g.twoFour ? 1 : 0;
            lp.idxWords = uint32_t(g.idxWords);
            lp.offIdx = put(g.indices.data(), g.indices.size(), g.indices.size() * 4);
            ch.buf = ctx->createDeviceBuffer(std::max<uint64_t>(words.size(), 1) * 4);
            ctx->upload(ch.buf, 0, words.data(), words.size() * 4);
        });
        return w;
    }
    std::map<WeightKey, Entry> entries;
};

std::shared_ptr<WeightCache> weightCacheFor(const std::shared_ptr<Context>& ctx) {
    static std::mutex mu;
    static std::map<const Context*, std::weak_ptr<WeightCache>> all;
    std::lock_guard<std::mutex> lock(mu);
    auto& slot = all[ctx.get()];
    if (auto c = slot.lock()) return c;
    auto c = std::make_shared<WeightCache>(ctx);
    slot = c;
    return c;
}

/// Bytes of the stored linear weights of blocks 0..gpuLayers-1 (all when < 0) and of lm_head: a
/// lower bound of what the session will upload (names as the runners bind them).
uint64_t weightBytesFor(const WeightSource& w, int gpuLayers) {
    const ModelSpec& s = w.spec();
    uint64_t total = 0;
    auto add = [&](const std::string& name) {
        if (const kernels::PackedLinear* p = w.packedLinear(name)) {
            total += p->bytes(); // the GPU form is at least as large
            return;
        }
        if (const TensorView* t = w.find(name); t && matmulShader(t->dtype)) total += t->nbytes;
    };
    static const char* kRoles[] = {
        "attn.q",   "attn.k",        "attn.v",       "attn.o",        "mlp.gate",      "mlp.up",
        "mlp.down", "mixer.in_proj", "mixer.x_proj", "mixer.dt_proj", "mixer.out_proj"};
    const int64_t n = gpuLayers < 0 ? s.nLayers : std::min<int64_t>(gpuLayers, s.nLayers);
    for (int64_t l = 0; l < n; ++l)
        for (const char* r : kRoles) add("layers." + std::to_string(l) + "." + r);
    if (gpuLayers < 0 || gpuLayers > s.nLayers) add(w.find("lm_head") ? "lm_head" : "embed");
    return total;
}

std::string gib(uint64_t b) {
    char buf[32];
    if (b >= (1ull << 30))
        std::snprintf(buf, sizeof buf, "%.1f GiB", double(b) / double(1ull << 30));
    else
        std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1ull << 20));
    return buf;
}

class VulkanBackend final : public Backend, private ProductRecorder {
public:
    VulkanBackend(int index, const WeightSource& w, int gpuLayers)
        : m_ctx(openContext(index)), m_weights(weightCacheFor(m_ctx)), m_gpuLayers(gpuLayers) {
        // A model that cannot fit says so before anything runs (the session then falls back to
        // the CPU with this message).
        const uint64_t need = weightBytesFor(w, gpuLayers);
        const uint64_t have =
            gDeviceMemoryForTests ? gDeviceMemoryForTests.load() : m_ctx->info().memoryBytes;
        if (have > 0 && need > have - have / 10) {
            const int64_t nl = std::max<int64_t>(w.spec().nLayers, 1);
            const int64_t fit = int64_t(double(have - have / 5) / double(need) * double(nl));
            throw Error("the model's weights need " + gib(need) + " on " + m_ctx->info().name +
                        ", which has " + gib(have) +
                        "; put fewer layers on the GPU (--gpu-layers " +
                        std::to_string(std::max<int64_t>(fit, 0)) + ")");
        }
        // Builds every matmul pipeline the source needs now, so that a broken driver fails here
        // (and the session falls back to the CPU) rather than in the middle of a run.
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        m_ctx->pipeline("matvec_f32", 4, sizeof(MatmulPush));
    }
    ~VulkanBackend() override {
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        m_weights->release(m_held);
        for (Buffer* b : {&m_x, &m_bias}) m_ctx->destroy(*b);
        for (Buffer& b : m_y) m_ctx->destroy(b);
    }

    const DeviceInfo& device() const override { return m_ctx->info(); }
    BackendCounters counters() const override {
        BackendCounters c = m_counters;
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        c.deviceWeightBytes = m_weights->bytesOf(m_held);
        c.deviceTotalBytes = m_ctx->allocatedBytes();
        c.deviceAttention = m_attn.deviceCalls() + m_residentAttention;
        c.fallbackAttention = m_attn.fallbackCalls();
        return c;
    }

    std::string transformerSupport(const TransformerPlan& plan) override {
        const int64_t nl = int64_t(plan.layers.size());
        if (m_gpuLayers >= 0 && m_gpuLayers < nl)
            return "a GPU/CPU layer split (--gpu-layers " + std::to_string(m_gpuLayers) +
                   ") runs per product";
        auto why = [](const PlanLinear& w) -> std::string {
            if (w.p || (w.t && matmulShader(w.t->dtype))) return {};
            return "weight type " + std::string(w.t ? dtypeName(w.t->dtype) : "none") +
                   " has no shader";
        };
        for (const PlanLayer& L : plan.layers)
            for (const PlanLinear* w : {&L.q, &L.k, &L.v, &L.o, &L.up, &L.down})
                if (std::string r = why(*w); !r.empty()) return r;
        for (const PlanLayer& L : plan.layers)
            if (L.gate)
                if (std::string r = why(L.gate); !r.empty()) return r;
        if (std::string r = why(plan.lmHead); !r.empty()) return r;
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        return m_fwd.prepare(plan, bindingLimit(*m_ctx));
    }

    void transformerForward(const TransformerPlan& plan, const float* h, const float* cosT,
                            const float* sinT, int64_t n, int64_t pos0, int64_t logitsFrom,
                            float* logitsOut, const int32_t* targets, float* logProbs) override {
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        // The per-product attention's cache mirror no longer matches the runner's host cache.
        m_attn.invalidate();
        const int64_t products = m_fwd.run(*this, plan, h, cosT, sinT, n, pos0, logitsFrom,
                                           logitsOut, targets, logProbs);
        ++m_counters.deviceForwards;
        ++gResidentForwards;
        m_counters.deviceProducts += products;
        gDeviceProducts += products;
        m_residentAttention += int64_t(plan.layers.size());
    }

    void transformerReadCache(const TransformerPlan& plan, int layer, int64_t rows, float* k,
                              float* v) override {
        (void)plan;
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        m_fwd.readCache(layer, rows, k, v);
    }

    void noteResident(const std::string& why) override {
        if (m_counters.residentNote.empty()) m_counters.residentNote = why;
    }

    void attention(int layer, const float* q, int64_t ldq, const float* kCache, const float* vCache,
                   float* out, int64_t ldo, int64_t nTok, int64_t pos0, int64_t nHeads,
                   int64_t nKvHeads, int64_t headDim, const kernels::AttentionOptions& opt,
                   int threads) override {
        m_attn.run(layer, q, ldq, kCache, vCache, out, ldo, nTok, pos0, nHeads, nKvHeads, headDim,
                   opt, threads, bindingLimit(*m_ctx));
    }

    void linearBatch(std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
                     int64_t nTok, int threads, bool exact, int layer) override {
        std::vector<kernels::LinearJob> cpu;
        // GPU jobs by the activation quantisation of their input (null: x as given).
        std::vector<std::pair<const ActQuantSpec*, std::vector<kernels::LinearJob>>> gpu;
        for (const auto& j : jobs) {
            const bool onGpu = (m_gpuLayers < 0 || layer < m_gpuLayers) &&
                               (j.packed || (j.w && matmulShader(j.w->dtype))) && jobRows(j) > 0;
            if (!onGpu) {
                cpu.push_back(j);
                continue;
            }
            const ActQuantSpec* a = j.packed && j.act && j.act->active() ? j.act : nullptr;
            auto it = std::find_if(gpu.begin(), gpu.end(), [&](const auto& g) {
                return g.first == a || (g.first && a && *g.first == *a);
            });
            if (it == gpu.end()) it = gpu.insert(gpu.end(), {a, {}});
            it->second.push_back(j);
        }
        if (!cpu.empty()) {
            kernels::linearBatch(cpu, x, ldx, nTok, threads, exact);
            m_counters.fallbackProducts += int64_t(cpu.size());
        }
        if (gpu.empty() || nTok <= 0) return;
        const int64_t cols = jobCols(gpu.front().second.front());
        for (auto& [act, group] : gpu) {
            const float* xin = x;
            int64_t ldin = ldx;
            if (act) {
                // Recipe activation quantisation (W8A8, W4A8): the activations fake-quantised on
                // the host as runtime::fakeQuantizeActivations does, then the float product. The
                // CPU's integer product (PackedLinear, `act`) multiplies the same quantised
                // values and applies the scales after the sums, so both agree up to float
                // rounding.
                m_actBuf.resize(size_t(nTok * cols));
                runtime::fakeQuantizeActivations(*act, x, ldx, m_actBuf.data(), cols, nTok, cols,
                                                 threads);
                xin = m_actBuf.data(), ldin = cols;
            }
            std::lock_guard<std::mutex> lock(m_ctx->mutex());
            runOnDevice(group, xin, ldin, nTok);
            m_counters.deviceProducts += int64_t(group.size());
            gDeviceProducts += int64_t(group.size());
        }
    }

private:
    static int64_t jobRows(const kernels::LinearJob& j) {
        return j.packed ? j.packed->rows() : j.w->rows();
    }
    static int64_t jobCols(const kernels::LinearJob& j) {
        return j.packed ? j.packed->cols() : j.w->cols();
    }
    /// The device copy of a job's weight (ctx->mutex() held).
    const DeviceWeight& acquire(const kernels::LinearJob& j) {
        if (!j.packed) return m_weights->acquire(*j.w, m_held);
        // A packed weight does not move or change while a session over its source lives (like
        // the stored tensors): its key (a hash of two decoded rows) is computed once per backend.
        auto it = m_packedKeys.find(j.packed);
        if (it == m_packedKeys.end()) it = m_packedKeys.emplace(j.packed, keyOf(*j.packed)).first;
        return m_weights->acquire(*j.packed, it->second, m_held);
    }

    void ensure(Buffer& b, uint64_t bytes) {
        if (b.buffer && b.size >= bytes) return;
        m_ctx->destroy(b);
        b = m_ctx->createHostBuffer(std::max<uint64_t>(bytes, 1024));
    }

    void runOnDevice(const std::vector<kernels::LinearJob>& jobs, const float* x, int64_t ldx,
                     int64_t nTok) {
        const int64_t cols = jobCols(jobs.front());
        int64_t maxRows = 0, biasRows = 0;
        for (const auto& j : jobs) {
            maxRows = std::max(maxRows, jobRows(j));
            if (j.bias) biasRows += jobRows(j);
        }
        // Tokens per submission: X [tok, cols] and each Y [tok, rows] must fit one binding.
        const uint64_t limit = bindingLimit(*m_ctx);
        const int64_t perTok = std::max(cols, maxRows) * 4;
        const int64_t tokChunk = std::max<int64_t>(
            1, std::min<int64_t>({nTok, int64_t(limit) / perTok, int64_t(65535) * 8}));
        std::vector<const DeviceWeight*> dw;
        for (const auto& j : jobs) dw.push_back(&acquire(j));
        if (m_y.size() < jobs.size()) m_y.resize(jobs.size());
        ensure(m_bias, uint64_t(std::max<int64_t>(biasRows, 1)) * 4);
        std::vector<uint32_t> biasOffset(jobs.size(), 0);
        {
            int64_t off = 0;
            for (size_t i = 0; i < jobs.size(); ++i)
                if (jobs[i].bias) {
                    biasOffset[i] = uint32_t(off);
                    std::memcpy(static_cast<float*>(m_bias.mapped) + off, jobs[i].bias,
                                size_t(jobRows(jobs[i])) * 4);
                    off += jobRows(jobs[i]);
                }
        }
        for (int64_t t0 = 0; t0 < nTok; t0 += tokChunk) {
            const int64_t nt = std::min(tokChunk, nTok - t0);
            ensure(m_x, uint64_t(nt * cols) * 4);
            float* xs = static_cast<float*>(m_x.mapped);
            for (int64_t t = 0; t < nt; ++t)
                std::memcpy(xs + t * cols, x + (t0 + t) * ldx, size_t(cols) * 4);
            std::vector<Dispatch> ds;
            for (size_t i = 0; i < jobs.size(); ++i) {
                const int64_t rows = jobRows(jobs[i]);
                ensure(m_y[i], uint64_t(nt * rows) * 4);
                appendProduct(ds, *dw[i], cols, nt, m_x, m_y[i], m_bias,
                              jobs[i].bias ? int64_t(biasOffset[i]) : -1);
            }
            m_ctx->run(ds);
            for (size_t i = 0; i < jobs.size(); ++i) {
                const int64_t rows = jobRows(jobs[i]);
                const float* ys = static_cast<const float*>(m_y[i].mapped);
                for (int64_t t = 0; t < nt; ++t)
                    std::memcpy(jobs[i].y + (t0 + t) * jobs[i].ldy, ys + t * rows,
                                size_t(rows) * 4);
            }
        }
    }

    /// The dispatches of y [nt, w's rows] = x [nt, cols] W^T (+ bias[biasOff..] when >= 0),
    /// one per row chunk of the weight (ctx->mutex() held).
    void appendProduct(std::vector<Dispatch>& ds, const DeviceWeight& w, int64_t cols, int64_t nt,
                       const Buffer& x, const Buffer& y, const Buffer& bias, int64_t biasOff) {
        int64_t rows = 0;
        for (const auto& ch : w.chunks) rows = std::max(rows, ch.row0 + ch.rows);
        // Few tokens: one workgroup per row (matvec); more: 16 x 16 tiles (matmul).
        const bool tiled = nt > kMatvecMaxTokens;
        const uint32_t pushBytes = uint32_t(sizeof(MatmulPush) + (w.lcw ? sizeof(LcwPush) : 0));
        const Pipeline& p =
            m_ctx->pipeline(std::string(tiled ? "matmul_" : "matvec_") + w.shader, 4, pushBytes);
        for (const auto& ch : w.chunks) {
            Dispatch d;
            d.pipeline = &p;
            d.buffers = {&ch.buf, &x, &y, &bias};
            MatmulPush pc{uint32_t(ch.rows),      uint32_t(cols),
                          uint32_t(nt),           w.rowBytes,
                          uint32_t(rows),         uint32_t(ch.row0),
                          biasOff >= 0 ? 1u : 0u, uint32_t(std::max<int64_t>(biasOff, 0))};
            d.push.resize(pushBytes);
            std::memcpy(d.push.data(), &pc, sizeof pc);
            if (w.lcw) std::memcpy(d.push.data() + sizeof pc, &ch.lcw, sizeof(LcwPush));
            if (tiled) {
                d.groups[0] = uint32_t((ch.rows + 15) / 16);
                d.groups[1] = uint32_t((nt + 15) / 16);
            } else {
                d.groups[0] = uint32_t(std::min<int64_t>(ch.rows, m_ctx->maxGroups(0)));
                d.groups[1] = uint32_t((nt + 7) / 8);
            }
            ds.push_back(std::move(d));
        }
    }

    /// ProductRecorder (vk_forward.cpp): a plan's linear on device buffers.
    void record(std::vector<Dispatch>& ds, const PlanLinear& w, const Buffer& x, const Buffer& y,
                int64_t nTok, const Buffer& params, int64_t biasOff) override {
        const DeviceWeight* dw = nullptr;
        if (w.p) {
            auto it = m_packedKeys.find(w.p);
            if (it == m_packedKeys.end()) it = m_packedKeys.emplace(w.p, keyOf(*w.p)).first;
            dw = &m_weights->acquire(*w.p, it->second, m_held);
        } else {
            dw = &m_weights->acquire(*w.t, m_held);
        }
        appendProduct(ds, *dw, w.cols, nTok, x, y, params, biasOff);
    }

    std::shared_ptr<Context> m_ctx;
    std::shared_ptr<WeightCache> m_weights;
    std::set<WeightKey> m_held; ///< the cache entries this backend uses
    std::map<const kernels::PackedLinear*, WeightKey> m_packedKeys;
    std::vector<float> m_actBuf; ///< fake-quantised activations
    int m_gpuLayers = -1;
    Buffer m_x, m_bias;
    std::vector<Buffer> m_y;
    BackendCounters m_counters;
    DeviceAttention m_attn{m_ctx, m_gpuLayers}; ///< vk_attention.cpp (after m_ctx: freed first)
    DeviceForward m_fwd{m_ctx};                 ///< vk_forward.cpp (likewise)
    int64_t m_residentAttention = 0;            ///< attention layers run by m_fwd
};

} // namespace

int64_t deviceProductsForTests() {
    return gDeviceProducts.load();
}

int64_t residentForwardsForTests() {
    return gResidentForwards.load();
}

void setBindingLimitForTests(uint64_t bytes) {
    gBindingLimitForTests = bytes;
}
void setDeviceMemoryForTests(uint64_t bytes) {
    gDeviceMemoryForTests = bytes;
}

std::unique_ptr<Backend> makeVulkanBackend(int deviceIndex, const WeightSource& w, int gpuLayers) {
    return std::make_unique<VulkanBackend>(deviceIndex, w, gpuLayers);
}

} // namespace lcw::runtime::vulkan
