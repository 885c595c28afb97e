// Gram matrices and per-channel statistics on a Vulkan device (runtime/device_ops.h).
#include "core/runtime/vulkan/vk_reduce.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

namespace lcw::runtime::vulkan {

namespace {

constexpr uint32_t kGramTile = 64;            // gram.comp's T
constexpr uint64_t kMaxBatchBytes = 64 << 20; // rows uploaded per dispatch

std::vector<uint8_t> pushWords(std::initializer_list<uint32_t> w) {
    std::vector<uint8_t> p(w.size() * 4);
    std::memcpy(p.data(), std::data(w), p.size());
    return p;
}

/// The input rows of every accumulator on a context share one device buffer (grown on demand,
/// freed when the last accumulator goes), so that hundreds of statistics sites do not each
/// hold a batch. The buffer is used with the context's mutex held; the map has its own lock
/// (accumulators on two devices may run at once).
struct Scratch {
    Buffer buf;
    int users = 0;
};
std::mutex gScratchMutex;
std::map<const Context*, Scratch>& scratches() {
    static auto* m = new std::map<const Context*, Scratch>;
    return *m;
}
Scratch& scratchOf(const Context& ctx) {
    std::lock_guard<std::mutex> lock(gScratchMutex);
    return scratches()[&ctx]; // map nodes stay put
}
void addUser(Context& ctx) {
    ++scratchOf(ctx).users;
}
void dropUser(Context& ctx) {
    Scratch& s = scratchOf(ctx);
    if (--s.users == 0) ctx.destroy(s.buf);
}
/// Uploads `bytes` of rows into the shared scratch buffer and returns it.
const Buffer& uploadRows(Context& ctx, const float* x, uint64_t bytes) {
    Buffer& b = scratchOf(ctx).buf;
    if (b.size < bytes) {
        ctx.destroy(b);
        b = ctx.createDeviceBuffer(bytes);
    }
    ctx.upload(b, 0, x, bytes);
    return b;
}

/// Groups covering `count` invocations of 256 in a 2-D grid (reduce_copy.comp).
void copyGroups(const Context& ctx, uint64_t count, uint32_t groups[3]) {
    const uint64_t total = std::max<uint64_t>(1, (count + 255) / 256);
    const uint64_t gx = std::min<uint64_t>(total, ctx.maxGroups(0));
    const uint64_t gy = (total + gx - 1) / gx;
    if (gy > ctx.maxGroups(1)) throw Error("Vulkan: accumulator too large to copy");
    groups[0] = uint32_t(gx), groups[1] = uint32_t(gy), groups[2] = 1;
}

/// Fills `count` floats of `dst` with `value` on the device.
void fillDevice(Context& ctx, Buffer& dst, uint64_t count, float value) {
    Dispatch d;
    d.pipeline = &ctx.pipeline("reduce_copy", 2, 12);
    d.buffers = {&dst, &dst};
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    d.push = pushWords({uint32_t(count), 1u, bits});
    copyGroups(ctx, count, d.groups);
    ctx.run({d});
}

/// `count` floats of device buffer `src`, through a host-visible buffer.
std::vector<float> readDevice(Context& ctx, const Buffer& src, uint64_t count) {
    Buffer host = ctx.createHostBuffer(count * 4);
    try {
        Dispatch d;
        d.pipeline = &ctx.pipeline("reduce_copy", 2, 12);
        d.buffers = {&src, &host};
        d.push = pushWords({uint32_t(count), 0u, 0u});
        copyGroups(ctx, count, d.groups);
        ctx.run({d});
        std::vector<float> out(count);
        std::memcpy(out.data(), host.mapped, count * 4);
        ctx.destroy(host);
        return out;
    } catch (...) {
        ctx.destroy(host);
        throw;
    }
}

int64_t rowsPerBatch(const Context& ctx, int64_t width) {
    const uint64_t cap = std::min<uint64_t>(ctx.maxBindingBytes(), kMaxBatchBytes);
    const uint64_t row = uint64_t(width) * 4;
    if (row > cap) throw Error("Vulkan: a row of " + std::to_string(width) + " floats is too wide");
    return int64_t(cap / row);
}

} // namespace

// ------------------------------------------------------------------------------------ Gram

DeviceGram::DeviceGram(int index, int64_t dim) : m_ctx(openContext(index)), m_dim(dim) {
    const uint64_t floats = uint64_t(dim) * uint64_t(dim) * 2;
    if (dim < 1 || floats * 4 > m_ctx->maxBindingBytes() ||
        floats > std::numeric_limits<uint32_t>::max())
        throw Error("Vulkan: a Gram matrix of width " + std::to_string(dim) +
                    " does not fit one storage binding of " + m_ctx->info().name);
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    m_maxRows = rowsPerBatch(*m_ctx, dim);
    m_acc = m_ctx->createDeviceBuffer(floats * 4);
    try {
        fillDevice(*m_ctx, m_acc, floats, 0.0f);
    } catch (...) {
        m_ctx->destroy(m_acc);
        throw;
    }
    addUser(*m_ctx);
}

DeviceGram::~DeviceGram() {
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    m_ctx->destroy(m_acc);
    dropUser(*m_ctx);
}

void DeviceGram::add(const float* x, int64_t n) {
    if (n <= 0) return;
    if (n > m_maxRows) throw Error("DeviceGram::add: too many rows at once");
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    const Buffer& xb = uploadRows(*m_ctx, x, uint64_t(n) * uint64_t(m_dim) * 4);
    Dispatch d;
    d.pipeline = &m_ctx->pipeline("gram", 2, 8);
    d.buffers = {&xb, &m_acc};
    d.push = pushWords({uint32_t(n), uint32_t(m_dim)});
    const uint32_t tiles = uint32_t((m_dim + kGramTile - 1) / kGramTile);
    d.groups[0] = d.groups[1] = tiles;
    m_ctx->run({d});
}

void DeviceGram::addTo(double* out) const {
    std::vector<float> acc;
    {
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        acc = readDevice(*m_ctx, m_acc, uint64_t(m_dim) * uint64_t(m_dim) * 2);
    }
    // Only tiles on or above the diagonal were computed: mirror the others.
    const int64_t d = m_dim, T = kGramTile;
    for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < d; ++j) {
            const int64_t at = j / T >= i / T ? i * d + j : j * d + i;
            out[i * d + j] += double(acc[size_t(2 * at)]) + double(acc[size_t(2 * at + 1)]);
        }
}

// ------------------------------------------------------------------------ channel statistics

DeviceChannelStats::DeviceChannelStats(int index, int64_t channels)
    : m_ctx(openContext(index)), m_ch(channels) {
    if (channels < 1 || uint64_t(channels) * 48 > m_ctx->maxBindingBytes())
        throw Error("Vulkan: too many channels for one binding");
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    m_maxRows = rowsPerBatch(*m_ctx, channels);
    std::vector<float> init(size_t(channels) * 12, 0.0f);
    for (int64_t j = 0; j < channels; ++j) {
        init[size_t(j * 12 + 10)] = std::numeric_limits<float>::infinity();
        init[size_t(j * 12 + 11)] = -std::numeric_limits<float>::infinity();
    }
    const std::vector<float> zeros(size_t(channels), 0.0f);
    try {
        m_acc = m_ctx->createDeviceBuffer(init.size() * 4);
        m_ctx->upload(m_acc, 0, init.data(), init.size() * 4);
        m_shift = m_ctx->createDeviceBuffer(zeros.size() * 4);
        m_ctx->upload(m_shift, 0, zeros.data(), zeros.size() * 4);
    } catch (...) {
        m_ctx->destroy(m_acc);
        m_ctx->destroy(m_shift);
        throw;
    }
    addUser(*m_ctx);
}

DeviceChannelStats::~DeviceChannelStats() {
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    m_ctx->destroy(m_acc);
    m_ctx->destroy(m_shift);
    dropUser(*m_ctx);
}

void DeviceChannelStats::setShift(const float* shift) {
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    m_ctx->upload(m_shift, 0, shift, uint64_t(m_ch) * 4);
}

void DeviceChannelStats::add(const float* x, int64_t n) {
    if (n <= 0) return;
    if (n > m_maxRows) throw Error("DeviceChannelStats::add: too many rows at once");
    std::lock_guard<std::mutex> lock(m_ctx->mutex());
    const Buffer& xb = uploadRows(*m_ctx, x, uint64_t(n) * uint64_t(m_ch) * 4);
    Dispatch d;
    d.pipeline = &m_ctx->pipeline("channel_stats", 3, 8);
    d.buffers = {&xb, &m_shift, &m_acc};
    d.push = pushWords({uint32_t(n), uint32_t(m_ch)});
    d.groups[0] = uint32_t((m_ch + 63) / 64);
    m_ctx->run({d});
}

void DeviceChannelStats::addTo(double* s1, double* s2, double* s3, double* s4, double* sumAbs,
                               double* mn, double* mx) const {
    std::vector<float> acc;
    {
        std::lock_guard<std::mutex> lock(m_ctx->mutex());
        acc = readDevice(*m_ctx, m_acc, uint64_t(m_ch) * 12);
    }
    for (int64_t j = 0; j < m_ch; ++j) {
        const float* a = acc.data() + j * 12;
        s1[j] += double(a[0]) + double(a[1]);
        s2[j] += double(a[2]) + double(a[3]);
        s3[j] += double(a[4]) + double(a[5]);
        s4[j] += double(a[6]) + double(a[7]);
        sumAbs[j] += double(a[8]) + double(a[9]);
        mn[j] = std::min(mn[j], double(a[10]));
        mx[j] = std::max(mx[j], double(a[11]));
    }
}

} // namespace lcw::runtime::vulkan
