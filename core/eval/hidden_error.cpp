#include "core/eval/hidden_error.h"

#include "core/runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace lcw {

namespace {

/// Keeps the residual stream after every block for the tokens of one chunk: [layer][pos, dim].
class ResidualCapture final : public Observer {
public:
    ResidualCapture(int64_t layers, int64_t dim) : m_dim(dim), h(size_t(layers)) {}
    void clear() {
        for (auto& v : h) v.clear();
    }
    void onResidual(int layer, const float* x, int64_t n, int64_t dim) override {
        if (layer < 0 || size_t(layer) >= h.size() || dim != m_dim) return;
        h[size_t(layer)].insert(h[size_t(layer)].end(), x, x + n * dim);
    }

private:
    int64_t m_dim;

public:
    std::vector<std::vector<float>> h;
};

struct Accum {
    double sumDiff2 = 0, sumRef2 = 0, sumRel = 0, sumCos = 0;
    double minCos = std::numeric_limits<double>::infinity();
    int64_t n = 0;
};

} // namespace

HiddenErrorResult hiddenStateError(const WeightSource& baseline,
                                   const std::vector<DivergenceConfig>& configs,
                                   const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& opts, Progress& progress) {
    using Clock = std::chrono::steady_clock;
    if (opts.mode != PerplexityMode::LlamaCppChunks)
        throw ArgumentError("hidden error: only llama.cpp chunks are supported");
    checkChunkedEvalInput("hidden error", baseline, tokens, opts);
    const ModelSpec& spec = baseline.spec();
    for (const auto& c : configs) {
        if (!c.weights) throw ArgumentError("hidden error: configuration '" + c.name + "' is null");
        const ModelSpec& cs = c.weights->spec();
        if (cs.vocab != spec.vocab || cs.dim != spec.dim || cs.nLayers != spec.nLayers)
            throw ArgumentError("hidden error: configuration '" + c.name +
                                "' has another shape (vocabulary, width or block count) than the "
                                "baseline; hidden states cannot be compared");
    }
    for (int32_t t : tokens)
        if (t < 0 || t >= spec.vocab)
            throw ArgumentError("hidden error: token id " + std::to_string(t) +
                                " is outside the vocabulary");
    const int64_t ctx = opts.ctx, dim = spec.dim, L = spec.nLayers;
    HiddenErrorResult r;
    r.ctx = ctx;
    r.totalChunks = int64_t(tokens.size()) / ctx;
    const int64_t chunks =
        opts.maxChunks > 0 ? std::min(opts.maxChunks, r.totalChunks) : r.totalChunks;

    SessionOptions so;
    so.contextLength = ctx;
    so.batchSize = std::min(opts.batch, ctx);
    so.threads = opts.threads;
    so.exactActivations = opts.exactActivations;
    Session bs(baseline, so);
    ResidualCapture bcap(L, dim);
    bs.addObserver(&bcap);
    std::vector<std::unique_ptr<Session>> sessions;
    for (const auto& c : configs) sessions.push_back(std::make_unique<Session>(*c.weights, so));
    ResidualCapture qcap(L, dim);
    for (auto& s : sessions) s->addObserver(&qcap);

    std::vector<std::vector<Accum>> acc(configs.size(), std::vector<Accum>(size_t(L)));
    std::vector<float> logits;
    std::vector<int32_t> window;
    const auto t0 = Clock::now();
    if (!progress.report(0.0, "hidden error")) r.status = Status::Cancelled;
    for (int64_t c = 0; c < chunks && r.status == Status::Ok; ++c) {
        window.assign(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
        if (opts.bosId >= 0) window[0] = opts.bosId;
        bcap.clear();
        bs.reset();
        bs.forwardFrom(window, logits, ctx - 1);
        for (size_t k = 0; k < configs.size(); ++k) {
            qcap.clear();
            sessions[k]->reset();
            sessions[k]->forwardFrom(window, logits, ctx - 1);
            for (int64_t l = 0; l < L; ++l) {
                const auto& hb = bcap.h[size_t(l)];
                const auto& hq = qcap.h[size_t(l)];
                if (hb.size() != size_t(ctx * dim) || hq.size() != hb.size())
                    throw Error("hidden error: block " + std::to_string(l) +
                                " reported no residual stream for every token");
                Accum& a = acc[k][size_t(l)];
                for (int64_t t = 0; t < ctx; ++t) {
                    const float* x = hb.data() + t * dim;
                    const float* y = hq.data() + t * dim;
                    double d2 = 0, x2 = 0, y2 = 0, xy = 0;
                    for (int64_t i = 0; i < dim; ++i) {
                        const double xi = x[i], yi = y[i];
                        d2 += (yi - xi) * (yi - xi);
                        x2 += xi * xi;
                        y2 += yi * yi;
                        xy += xi * yi;
                    }
                    a.sumDiff2 += d2;
                    a.sumRef2 += x2;
                    a.sumRel += x2 > 0 ? std::sqrt(d2 / x2) : (d2 > 0 ? 1.0 : 0.0);
                    const double cs = (x2 > 0 && y2 > 0) ? xy / std::sqrt(x2 * y2) : 1.0;
                    a.sumCos += cs;
                    a.minCos = std::min(a.minCos, cs);
                    ++a.n;
                }
            }
        }
        ++r.chunks;
        r.tokens += ctx;
        if (!progress.report(double(c + 1) / double(chunks),
                             "chunk " + std::to_string(c + 1) + "/" + std::to_string(chunks)))
            r.status = Status::Cancelled;
    }
    for (size_t k = 0; k < configs.size(); ++k) {
        HiddenErrorStats st;
        st.name = configs[k].name;
        for (int64_t l = 0; l < L; ++l) {
            const Accum& a = acc[k][size_t(l)];
            BlockError b;
            b.layer = int(l);
            if (a.n > 0) {
                b.relError = a.sumRef2 > 0 ? std::sqrt(a.sumDiff2 / a.sumRef2) : 0.0;
                b.meanRelError = a.sumRel / double(a.n);
                b.meanCosine = a.sumCos / double(a.n);
                b.minCosine = a.minCos;
            }
            st.blocks.push_back(b);
        }
        r.configs.push_back(std::move(st));
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
}

} // namespace lcw
