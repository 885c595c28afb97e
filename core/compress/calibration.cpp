#include "core/compress/calibration.h"

#include "core/runtime/device_ops.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>

namespace lcw::compress {

namespace {

/// Accumulates one distinct linear input: X^T X and the per-channel sums on the session's
/// device (runtime/device_ops.h), the sampled rows on the host.
struct InputAcc {
    int64_t cols = 0, tokens = 0, stride = 1, maxRows = 0;
    std::unique_ptr<runtime::GramAccumulator> gram;
    std::unique_ptr<runtime::ChannelStatsAccumulator> ch;
    std::vector<float> sample;
    int64_t sampleRows = 0;
    std::vector<std::string> names;

    void init(int64_t c, const CaptureOptions& o, int64_t totalTokens,
              const runtime::DeviceSpec& device) {
        cols = c;
        maxRows = std::max<int64_t>(o.maxSampleRows, 0);
        stride = maxRows > 0 ? std::max<int64_t>(1, (totalTokens + maxRows - 1) / maxRows) : 1;
        if (o.gram) gram = std::make_unique<runtime::GramAccumulator>(device, c);
        ch = std::make_unique<runtime::ChannelStatsAccumulator>(device, c, false);
    }

    void add(const float* x, int64_t n) {
        if (gram) gram->add(x, n);
        ch->add(x, n);
        for (int64_t t = 0; t < n; ++t) {
            if (sampleRows < maxRows && (tokens + t) % stride == 0) {
                const float* r = x + t * cols;
                sample.insert(sample.end(), r, r + cols);
                ++sampleRows;
            }
        }
        tokens += n;
    }

    LinearInputs finish() const {
        LinearInputs li;
        li.cols = cols;
        li.tokens = tokens;
        if (gram) {
            li.gram.resize(size_t(cols * cols));
            gram->result(li.gram.data());
        }
        const runtime::ChannelSums cs = ch->result();
        li.absMax.resize(size_t(cols));
        li.meanSq.resize(size_t(cols));
        li.meanAbs.resize(size_t(cols));
        for (int64_t j = 0; j < cols; ++j) {
            li.absMax[size_t(j)] = float(cs.absMax(size_t(j)));
            li.meanSq[size_t(j)] = tokens ? float(cs.s2[size_t(j)] / double(tokens)) : 0.0f;
            li.meanAbs[size_t(j)] = tokens ? float(cs.sumAbs[size_t(j)] / double(tokens)) : 0.0f;
        }
        li.sample = sample;
        li.sampleRows = sampleRows;
        li.sharedWith = names;
        return li;
    }
};

class CaptureObserver final : public Observer {
public:
    CaptureObserver(int layer, const CaptureOptions& o, int64_t totalTokens,
                    runtime::DeviceSpec device)
        : m_layer(layer), m_opts(o), m_total(totalTokens), m_device(device) {}

    void onLinearInput(int layer, LinearRole role, const std::string& name, const float* x,
                       int64_t n, int64_t dim) override {
        if (layer != m_layer) return;
        // q/k/v and gate/up read one buffer: accumulate it once and alias the names.
        const bool shared = x == m_lastX && n == m_lastN &&
                            ((role == LinearRole::K && m_lastRole == LinearRole::Q) ||
                             (role == LinearRole::V && m_lastRole == LinearRole::K) ||
                             (role == LinearRole::Up && m_lastRole == LinearRole::Gate));
        m_lastX = x, m_lastN = n, m_lastRole = role;
        if (shared) {
            const std::string& lead = m_alias.at(m_lastName);
            m_alias[name] = lead;
            auto& acc = *m_acc.at(lead);
            if (std::find(acc.names.begin(), acc.names.end(), name) == acc.names.end())
                acc.names.push_back(name);
            m_lastName = name;
            return;
        }
        m_lastName = name;
        m_alias[name] = name;
        auto& slot = m_acc[name];
        if (!slot) {
            slot = std::make_unique<InputAcc>();
            slot->init(dim, m_opts, m_total, m_device);
            slot->names.push_back(name);
            m_order.push_back(name);
        }
        slot->add(x, n);
    }

    std::map<std::string, LinearInputs> results() const {
        std::map<std::string, LinearInputs> out;
        for (const auto& lead : m_order) {
            const LinearInputs li = m_acc.at(lead)->finish();
            for (const auto& n : li.sharedWith) out[n] = li;
        }
        return out;
    }

private:
    int m_layer;
    CaptureOptions m_opts;
    int64_t m_total;
    runtime::DeviceSpec m_device;
    const float* m_lastX = nullptr;
    int64_t m_lastN = 0;
    LinearRole m_lastRole = LinearRole::LmHead;
    std::string m_lastName;
    std::map<std::string, std::string> m_alias;
    std::map<std::string, std::unique_ptr<InputAcc>> m_acc;
    std::vector<std::string> m_order;
};

class HiddenObserver final : public Observer {
public:
    explicit HiddenObserver(int layer) : m_layer(layer) {}
    void onBlockInput(int layer, const float* h, int64_t n, int64_t dim) override {
        if (layer == m_layer) current.insert(current.end(), h, h + n * dim);
    }
    std::vector<float> current;

private:
    int m_layer;
};

/// CPython's random.Random: MT19937 seeded by init_by_array with the seed's 32-bit words
/// (Modules/_randommodule.c), getrandbits and randbelow as Lib/random.py. Only integer
/// arithmetic on fixed-width unsigned types: the stream is the same on every platform.
class PyRandom {
public:
    explicit PyRandom(uint64_t seed) {
        // random.seed(int): the words of abs(seed), least significant first; 0 -> [0]
        std::vector<uint32_t> key{uint32_t(seed & 0xffffffffu)};
        if (seed >> 32) key.push_back(uint32_t(seed >> 32));
        initByArray(key);
    }

    uint32_t genrand() {
        if (m_index >= kN) twist();
        uint32_t y = m_mt[size_t(m_index++)];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        return y;
    }

    /// random.getrandbits(k), 1 <= k <= 64 (32-bit words, least significant first).
    uint64_t getrandbits(int k) {
        if (k <= 32) return uint64_t(genrand() >> (32 - k));
        const uint64_t lo = genrand();
        const uint64_t hi = uint64_t(genrand() >> (64 - k));
        return lo | (hi << 32);
    }

    /// random._randbelow(n), n >= 1: getrandbits(n.bit_length()) until below n.
    uint64_t randbelow(uint64_t n) {
        int k = 0;
        while (k < 64 && (n >> k) != 0) ++k;
        uint64_t r = getrandbits(k);
        while (r >= n) r = getrandbits(k);
        return r;
    }

private:
    static constexpr int kN = 624, kM = 397;

    void initGenrand(uint32_t s) {
        m_mt[0] = s;
        for (int i = 1; i < kN; ++i)
            m_mt[size_t(i)] =
                1812433253u * (m_mt[size_t(i - 1)] ^ (m_mt[size_t(i - 1)] >> 30)) + uint32_t(i);
        m_index = kN;
    }

    void initByArray(const std::vector<uint32_t>& key) {
        initGenrand(19650218u);
        const int len = int(key.size());
        int i = 1, j = 0;
        for (int k = std::max(kN, len); k > 0; --k) {
            m_mt[size_t(i)] = (m_mt[size_t(i)] ^
                               ((m_mt[size_t(i - 1)] ^ (m_mt[size_t(i - 1)] >> 30)) * 1664525u)) +
                              key[size_t(j)] + uint32_t(j);
            ++i, ++j;
            if (i >= kN) m_mt[0] = m_mt[kN - 1], i = 1;
            if (j >= len) j = 0;
        }
        for (int k = kN - 1; k > 0; --k) {
            m_mt[size_t(i)] =
                (m_mt[size_t(i)] ^
                 ((m_mt[size_t(i - 1)] ^ (m_mt[size_t(i - 1)] >> 30)) * 1566083941u)) -
                uint32_t(i);
            ++i;
            if (i >= kN) m_mt[0] = m_mt[kN - 1], i = 1;
        }
        m_mt[0] = 0x80000000u;
    }

    void twist() {
        for (int i = 0; i < kN; ++i) {
            const uint32_t y =
                (m_mt[size_t(i)] & 0x80000000u) | (m_mt[size_t((i + 1) % kN)] & 0x7fffffffu);
            m_mt[size_t(i)] =
                m_mt[size_t((i + kM) % kN)] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        m_index = 0;
    }

    std::array<uint32_t, kN> m_mt{};
    int m_index = kN;
};

void checkArgs(const WeightSource& w, const CalibrationSet& cal, int layer) {
    if (cal.empty()) throw ArgumentError("calibration: the calibration set is empty");
    if (layer < 0 || layer >= w.spec().nLayers)
        throw ArgumentError("calibration: layer " + std::to_string(layer) +
                            " is out of range (the model has " + std::to_string(w.spec().nLayers) +
                            " blocks)");
}

SessionOptions sessionFor(const CalibrationSet& cal, int stopAfter, int threads) {
    SessionOptions so;
    so.contextLength = cal.seqLen();
    so.batchSize = cal.seqLen();
    so.threads = threads;
    so.stopAfterLayer = stopAfter;
    // The inputs a layer is compressed for come through float32 products of the blocks before
    // it (packed or GGUF weights, no 8-bit activation blocks): results do not depend on the
    // kernels' instruction set.
    so.exactActivations = true;
    return so;
}

} // namespace

const char* calibrationSamplingName(CalibrationSampling s) {
    return s == CalibrationSampling::Random ? "random" : "consecutive";
}

std::vector<int64_t> randomWindowStarts(int64_t tokens, int64_t seqLen, int64_t samples,
                                        uint64_t seed) {
    if (seqLen < 1 || tokens < seqLen || samples < 0)
        throw ArgumentError("calibration: cannot take windows of " + std::to_string(seqLen) +
                            " tokens from " + std::to_string(tokens));
    std::vector<int64_t> starts(size_t(samples), 0);
    if (tokens == seqLen) return starts; // randint(0, -1) has no value: the only window
    PyRandom rng(seed);
    // randint(0, tokens - seqLen - 1) = randrange(tokens - seqLen) = _randbelow(tokens - seqLen)
    for (auto& s : starts) s = int64_t(rng.randbelow(uint64_t(tokens - seqLen)));
    return starts;
}

CalibrationSet loadCalibration(const Model& model, const std::string& textPath,
                               const CalibrationOptions& opts) {
    CalibrationSet cal;
    cal.source = textPath.empty() ? stats::builtinCalibrationPath() : textPath;
    if (opts.samples < 1 || opts.seqLen < 2)
        throw ArgumentError("calibration needs samples >= 1 and seq-len >= 2 (got " +
                            std::to_string(opts.samples) + " and " + std::to_string(opts.seqLen) +
                            ")");
    std::ifstream in(cal.source, std::ios::binary);
    if (!in) throw Error(cal.source + ": cannot read the calibration text");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const Tokenizer& tk = model.tokenizer();
    const std::vector<int32_t> ids = tk.encode(text, true);
    int64_t L = opts.seqLen;
    if (model.spec().maxSeq > 0) L = std::min(L, model.spec().maxSeq);
    const int64_t T = int64_t(ids.size());
    if (T < L)
        throw Error(cal.source + ": the calibration text has " + std::to_string(ids.size()) +
                    " tokens, fewer than one sequence of " + std::to_string(L));
    cal.sampling = opts.sampling;
    cal.seed = opts.sampling == CalibrationSampling::Random ? opts.seed : 0;
    const int32_t bos = tk.bosId();
    cal.bosFirst =
        bos >= 0 &&
        (opts.bos == CalibrationBos::Replace ||
         (opts.bos == CalibrationBos::Auto && opts.sampling == CalibrationSampling::Consecutive));
    std::vector<int64_t> starts;
    if (opts.sampling == CalibrationSampling::Random) {
        starts = randomWindowStarts(T, L, opts.samples, opts.seed);
    } else {
        for (int64_t s = 0; s < std::min(opts.samples, T / L); ++s) starts.push_back(s * L);
    }
    for (const int64_t i : starts) {
        std::vector<int32_t> seq(ids.begin() + i, ids.begin() + i + L);
        if (cal.bosFirst) seq[0] = bos;
        cal.samples.push_back(std::move(seq));
    }
    return cal;
}

std::map<std::string, LinearInputs> captureBlockInputs(const WeightSource& w,
                                                       const CalibrationSet& cal, int layer,
                                                       const CaptureOptions& opts,
                                                       Progress& progress) {
    checkArgs(w, cal, layer);
    Session session(w, sessionFor(cal, layer, opts.threads));
    // The reductions run where the session's products do (the CPU when the device fell back).
    CaptureObserver obs(layer, opts, cal.tokens(), runtime::parseDeviceSpec(session.device().id));
    session.addObserver(&obs);
    std::vector<float> logits;
    const size_t N = cal.samples.size();
    for (size_t s = 0; s < N; ++s) {
        if (!progress.report(double(s) / double(N),
                             "layer " + std::to_string(layer) + ": calibration sample " +
                                 std::to_string(s + 1) + "/" + std::to_string(N)))
            return {};
        session.reset();
        session.forward(cal.samples[s], logits, false);
    }
    session.removeObserver(&obs);
    return obs.results();
}

std::vector<std::vector<float>> captureBlockHidden(const WeightSource& w, const CalibrationSet& cal,
                                                   int layer, Progress* progress) {
    checkArgs(w, cal, layer);
    // Block `layer` itself need not run: its input is reported before the stop.
    Session session(w, sessionFor(cal, std::max(layer - 1, 0), 0));
    HiddenObserver obs(layer);
    session.addObserver(&obs);
    std::vector<std::vector<float>> out;
    std::vector<float> logits;
    const size_t N = cal.samples.size();
    for (size_t s = 0; s < N; ++s) {
        if (progress && !progress->report(double(s) / double(N),
                                          "layer " + std::to_string(layer) + ": hidden states " +
                                              std::to_string(s + 1) + "/" + std::to_string(N)))
            return {};
        obs.current.clear();
        session.reset();
        session.forward(cal.samples[s], logits, false);
        out.push_back(std::move(obs.current));
        obs.current = {};
    }
    session.removeObserver(&obs);
    return out;
}

} // namespace lcw::compress
