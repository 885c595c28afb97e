// The Vulkan backend: weight products in compute shaders (shaders/matmul.comp, one pipeline per
// weight type). Stored weights (F32, F16, BF16 and the GGUF block types) are uploaded once, as
// their raw bytes, and dequantised in registers; activations go up and results come back per
// call. lcw's packed formats and products the layer split keeps on the CPU run through the CPU
// kernels. Float activations throughout: the GPU result equals the CPU's --exact-activations
// product up to float summation order.
#include "core/common/error.h"
#include "core/runtime/backend.h"
#include "core/runtime/vulkan/vk_context.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

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

std::atomic<uint64_t> gBindingLimitForTests{0};

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

/// A weight on the device, in row chunks that each fit one storage-buffer binding.
struct DeviceWeight {
    struct Chunk {
        Buffer buf;
        int64_t row0 = 0, rows = 0;
    };
    std::vector<Chunk> chunks;
    const char* shader = nullptr;
    uint32_t rowBytes = 0;
};

/// The weights of one WeightSource uploaded to one device, shared by every backend (session)
/// over that source while one exists. Keyed by the tensor's bytes: a WeightSource's tensors do
/// not move while it lives, and this cache dies with the last session over it.
class WeightCache {
public:
    explicit WeightCache(std::shared_ptr<Context> c) : ctx(std::move(c)) {}
    ~WeightCache() {
        for (auto& [key, w] : weights)
            for (auto& ch : w.chunks) ctx->destroy(ch.buf);
    }
    /// Called with ctx->mutex() held.
    const DeviceWeight& get(const TensorView& t) {
        auto it = weights.find(t.data);
        if (it != weights.end()) return it->second;
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
        try {
            for (int64_t r0 = 0; r0 < t.rows(); r0 += perChunk) {
                DeviceWeight::Chunk ch;
                ch.row0 = r0;
                ch.rows = std::min(perChunk, t.rows() - r0);
                const uint64_t bytes = uint64_t(ch.rows) * rowBytes;
                // Rounded up to whole 32-bit words: the shaders read words.
                ch.buf = ctx->createDeviceBuffer((bytes + 3) & ~uint64_t(3));
                w.chunks.push_back(ch);
                ctx->upload(w.chunks.back().buf, 0, t.row(r0), bytes);
            }
        } catch (...) {
            for (auto& ch : w.chunks) ctx->destroy(ch.buf);
            throw;
        }
        bytes += [&] {
            uint64_t b = 0;
            for (auto& ch : w.chunks) b += ch.buf.allocBytes;
            return b;
        }();
        return weights.emplace(t.data, std::move(w)).first->second;
    }

    std::shared_ptr<Context> ctx;
    std::map<const void*, DeviceWeight> weights;
    uint64_t bytes = 0;
};

std::shared_ptr<WeightCache> weightCacheFor(const std::shared_ptr<Context>& ctx,
                                            const WeightSource* w) {
    static std::mutex mu;
    static std::map<std::pair<const Context*, const WeightSource*>, std::weak_ptr<WeightCache>> all;
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = all.begin(); it != all.end();)
        it = it->second.expired() ? all.erase(it) : std::next(it);
    auto& slot = all[{ctx.get(), w}];
    if (auto c = slot.lock()) return c;
    auto c = std::make_shared<WeightCache>(ctx);
    slot = c;
    return c;
}

class VulkanBackend final : public Backend {
public:
    VulkanBackend(int index, const WeightSource& w, int gpuLayers)
        : m_ctx(openContext(index)), m_weights(weightCacheFor(m_ctx, &w)), m_gpuLayers(gpuLayers) {
        // Builds every matmul pipeline the source needs now, so that a broken driver fails here
        // (and the session falls back to the CPU) rather than in the middle of a run.
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        m_ctx->pipeline("matvec_f32", 4, sizeof(MatmulPush));
    }
    ~VulkanBackend() override {
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        for (Buffer* b : {&m_x, &m_bias}) m_ctx->destroy(*b);
        for (Buffer& b : m_y) m_ctx->destroy(b);
    }

    const DeviceInfo& device() const override { return m_ctx->info(); }
    BackendCounters counters() const override {
        BackendCounters c = m_counters;
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        c.deviceWeightBytes = m_weights->bytes;
        return c;
    }

    void linearBatch(std::span<const kernels::LinearJob> jobs, const float* x, int64_t ldx,
                     int64_t nTok, int threads, bool exact, int layer) override {
        std::vector<kernels::LinearJob> cpu, gpu;
        for (const auto& j : jobs) {
            const bool onGpu = (m_gpuLayers < 0 || layer < m_gpuLayers) && j.w && !j.packed &&
                               matmulShader(j.w->dtype) && j.w->rows() > 0;
            (onGpu ? gpu : cpu).push_back(j);
        }
        if (!cpu.empty()) {
            kernels::linearBatch(cpu, x, ldx, nTok, threads, exact);
            m_counters.fallbackProducts += int64_t(cpu.size());
        }
        if (gpu.empty() || nTok <= 0) return;
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        runOnDevice(gpu, x, ldx, nTok);
        m_counters.deviceProducts += int64_t(gpu.size());
    }

private:
    void ensure(Buffer& b, uint64_t bytes) {
        if (b.buffer && b.size >= bytes) return;
        m_ctx->destroy(b);
        b = m_ctx->createHostBuffer(std::max<uint64_t>(bytes, 1024));
    }

    void runOnDevice(const std::vector<kernels::LinearJob>& jobs, const float* x, int64_t ldx,
                     int64_t nTok) {
        const int64_t cols = jobs.front().w->cols();
        int64_t maxRows = 0, biasRows = 0;
        for (const auto& j : jobs) {
            maxRows = std::max(maxRows, j.w->rows());
            if (j.bias) biasRows += j.w->rows();
        }
        // Tokens per submission: X [tok, cols] and each Y [tok, rows] must fit one binding.
        const uint64_t limit = bindingLimit(*m_ctx);
        const int64_t perTok = std::max(cols, maxRows) * 4;
        const int64_t tokChunk = std::max<int64_t>(
            1, std::min<int64_t>({nTok, int64_t(limit) / perTok, int64_t(65535) * 8}));
        std::vector<const DeviceWeight*> dw;
        for (const auto& j : jobs) dw.push_back(&m_weights->get(*j.w));
        if (m_y.size() < jobs.size()) m_y.resize(jobs.size());
        ensure(m_bias, uint64_t(std::max<int64_t>(biasRows, 1)) * 4);
        std::vector<uint32_t> biasOffset(jobs.size(), 0);
        {
            int64_t off = 0;
            for (size_t i = 0; i < jobs.size(); ++i)
                if (jobs[i].bias) {
                    biasOffset[i] = uint32_t(off);
                    std::memcpy(static_cast<float*>(m_bias.mapped) + off, jobs[i].bias,
                                size_t(jobs[i].w->rows()) * 4);
                    off += jobs[i].w->rows();
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
                const int64_t rows = jobs[i].w->rows();
                ensure(m_y[i], uint64_t(nt * rows) * 4);
                // Few tokens: one workgroup per row (matvec); more: 16 x 16 tiles (matmul).
                const bool tiled = nt > kMatvecMaxTokens;
                const Pipeline& p = m_ctx->pipeline(
                    std::string(tiled ? "matmul_" : "matvec_") + dw[i]->shader, 4,
                    sizeof(MatmulPush));
                for (const auto& ch : dw[i]->chunks) {
                    Dispatch d;
                    d.pipeline = &p;
                    d.buffers = {&ch.buf, &m_x, &m_y[i], &m_bias};
                    MatmulPush pc{uint32_t(ch.rows),       uint32_t(cols),  uint32_t(nt),
                                  dw[i]->rowBytes,         uint32_t(rows),  uint32_t(ch.row0),
                                  jobs[i].bias ? 1u : 0u, biasOffset[i]};
                    d.push.resize(sizeof pc);
                    std::memcpy(d.push.data(), &pc, sizeof pc);
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
            m_ctx->run(ds);
            for (size_t i = 0; i < jobs.size(); ++i) {
                const int64_t rows = jobs[i].w->rows();
                const float* ys = static_cast<const float*>(m_y[i].mapped);
                for (int64_t t = 0; t < nt; ++t)
                    std::memcpy(jobs[i].y + (t0 + t) * jobs[i].ldy, ys + t * rows,
                                size_t(rows) * 4);
            }
        }
    }

    std::shared_ptr<Context> m_ctx;
    std::shared_ptr<WeightCache> m_weights;
    int m_gpuLayers = -1;
    Buffer m_x, m_bias;
    std::vector<Buffer> m_y;
    BackendCounters m_counters;
};

} // namespace

void setBindingLimitForTests(uint64_t bytes) { gBindingLimitForTests = bytes; }

std::unique_ptr<Backend> makeVulkanBackend(int deviceIndex, const WeightSource& w, int gpuLayers) {
    return std::make_unique<VulkanBackend>(deviceIndex, w, gpuLayers);
}

} // namespace lcw::runtime::vulkan
