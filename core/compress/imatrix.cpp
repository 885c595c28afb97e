#include "core/compress/imatrix.h"

#include "core/common/mapped_file.h"
#include "core/io/atomic_writer.h"
#include "core/io/tensor_names.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

namespace lcw::compress {

static_assert(std::endian::native == std::endian::little,
              "the imatrix .dat format is little-endian; this build writes host order");

namespace {

// llama-imatrix ignores products of fewer rows (its "why are small batches ignored" rule).
constexpr int64_t kMinRows = 16;
// Names longer than this are not tensor names (GGUF caps them at 64 bytes).
constexpr int32_t kMaxNameLen = 4096;

// ------------------------------------------------------------------------ names

struct Site {
    std::string name;    // llama.cpp tensor name
    int64_t expert = -1; // merged MoE tensors: which slice
    bool lead = true;    // the one canonical linear of a fused tensor that is collected
};

bool startsWith(std::string_view s, std::string_view p) {
    return s.substr(0, p.size()) == p;
}

// "layers.N.mlp.experts.E.role" → (E, role)
std::optional<std::pair<int64_t, std::string>> expertOf(std::string_view rest) {
    constexpr std::string_view head = "mlp.experts.";
    if (!startsWith(rest, head)) return std::nullopt;
    rest.remove_prefix(head.size());
    const size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string_view::npos || dot > 9) return std::nullopt;
    int64_t e = 0;
    for (char c : rest.substr(0, dot)) {
        if (c < '0' || c > '9') return std::nullopt;
        e = e * 10 + (c - '0');
    }
    return std::make_pair(e, std::string(rest.substr(dot + 1)));
}

// Whether two canonical tensors are views of one fused file tensor (Phi-3 qkv_proj / gate_up,
// GPT-2 c_attn, NeoX/Falcon/Bloom query_key_value, llama.cpp attn_qkv).
bool sameFileTensor(const WeightSource& w, const std::string& a, const std::string& b) {
    const TensorView* ta = w.find(a);
    const TensorView* tb = w.find(b);
    return ta && tb && !ta->fileName.empty() && ta->fileName == tb->fileName &&
           ta->file == tb->file;
}

// The llama.cpp tensor a canonical linear is part of; nullopt for products llama.cpp does not
// run as a block weight (OPT's embed projections).
std::optional<Site> siteOf(const WeightSource& w, const std::string& canonical) {
    if (canonical == "lm_head") return Site{"output.weight"};
    const auto ln = splitCanonical(canonical);
    if (!ln || ln->layer < 0) return std::nullopt;
    const std::string blk = "blk." + std::to_string(ln->layer) + ".";
    const std::string lay = "layers." + std::to_string(ln->layer) + ".";
    const std::string& r = ln->role;
    if ((r == "attn.q" || r == "attn.k" || r == "attn.v") &&
        sameFileTensor(w, lay + "attn.q", lay + "attn.k"))
        return Site{blk + "attn_qkv.weight", -1, r == "attn.q"};
    if ((r == "mlp.gate" || r == "mlp.up") && sameFileTensor(w, lay + "mlp.gate", lay + "mlp.up"))
        return Site{blk + "ffn_up.weight", -1, r == "mlp.gate"};
    if (auto e = expertOf(r)) return Site{blk + "ffn_" + e->second + "_exps.weight", e->first};
    auto g = ggufFromCanonical(canonical, w.spec().arch);
    if (!g || !startsWith(*g, "blk.") || !g->ends_with(".weight")) return std::nullopt;
    return Site{*g};
}

// The block linears lcw's runtime reports, per layer, in report order.
std::vector<std::string> blockLinears(const ModelSpec& s, int64_t layer) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    if (s.isMamba())
        return {p + "mixer.in_proj", p + "mixer.x_proj", p + "mixer.dt_proj", p + "mixer.out_proj"};
    std::vector<std::string> v = {p + "attn.q", p + "attn.k", p + "attn.v", p + "attn.o"};
    if (s.isMoe()) {
        v.push_back(p + "mlp.router");
        for (const char* role : {"gate", "up", "down"})
            for (int64_t e = 0; e < s.nExperts; ++e)
                v.push_back(p + "mlp.experts." + std::to_string(e) + "." + role);
    } else {
        if (s.gatedMlp) v.push_back(p + "mlp.gate");
        v.push_back(p + "mlp.up");
        v.push_back(p + "mlp.down");
    }
    return v;
}

// Input columns of a linear (low-rank overlays keep NAME.lowrank_a [r, in] instead of NAME).
std::optional<int64_t> colsOf(const WeightSource& w, const std::string& canonical) {
    if (const TensorView* t = w.find(canonical)) return t->cols();
    if (const TensorView* a = w.find(canonical + ".lowrank_a")) return a->cols();
    return std::nullopt;
}

// ------------------------------------------------------------------------ file reading

class Reader {
public:
    Reader(const std::string& path, const std::byte* p, uint64_t n)
        : m_path(path), m_p(p), m_n(n) {}
    uint64_t pos() const { return m_pos; }
    uint64_t left() const { return m_n - m_pos; }
    bool atEnd() const { return m_pos == m_n; }
    int32_t i32(const std::string& what) {
        need(4, what);
        int32_t v;
        std::memcpy(&v, m_p + m_pos, 4);
        m_pos += 4;
        return v;
    }
    std::string bytes(uint64_t n, const std::string& what) {
        need(n, what);
        std::string s(reinterpret_cast<const char*>(m_p + m_pos), size_t(n));
        m_pos += n;
        return s;
    }
    const std::byte* take(uint64_t n, const std::string& what) {
        need(n, what);
        const std::byte* r = m_p + m_pos;
        m_pos += n;
        return r;
    }
    [[noreturn]] void fail(const std::string& problem, uint64_t at) const {
        throw FormatError(m_path, problem, at);
    }

private:
    void need(uint64_t n, const std::string& what) const {
        if (left() < n)
            fail("truncated imatrix: " + what + ": " + std::to_string(n) +
                     " bytes needed, the file has " + std::to_string(left()) + " left",
                 m_pos);
    }
    const std::string& m_path;
    const std::byte* m_p;
    uint64_t m_n;
    uint64_t m_pos = 0;
};

std::string entryLabel(int32_t i, int32_t n, const std::string& name = {}) {
    std::string s = "entry " + std::to_string(i + 1) + "/" + std::to_string(n);
    if (!name.empty()) s += " ('" + name + "')";
    return s;
}

// ------------------------------------------------------------------------ collection

// Sums of x^2 for one llama.cpp tensor, kept in float and added token by token in the order
// llama-imatrix adds them, so that the sums round the same way.
struct Acc {
    std::string name;
    int64_t cols = 0, experts = 1;
    std::vector<float> sum;     // experts * cols
    std::vector<int64_t> count; // per expert (every column of a slice sees the same tokens)
    int32_t ncall = 0;
    bool seen = false;

    void init(std::string n, int64_t c, int64_t e) {
        name = std::move(n);
        cols = c;
        experts = e;
        sum.assign(size_t(c * e), 0.0f);
        count.assign(size_t(e), 0);
    }
};

// s[j] += x[r][j]^2 over the rows in `order` (all rows in sequence when order is empty), each
// column in row order; columns split over threads when the work is large enough.
void addSquares(float* __restrict s, const float* __restrict x, int64_t cols, const int32_t* order,
                int64_t rows) {
    constexpr int64_t kBlock = 256;
    const int64_t nBlocks = (cols + kBlock - 1) / kBlock;
    const bool par = rows * cols >= (int64_t(1) << 18) && nBlocks > 1;
    // omp: nothrow (sums into allocated memory)
#pragma omp parallel for schedule(static) if (par)
    for (int64_t b = 0; b < nBlocks; ++b) {
        const int64_t j0 = b * kBlock, j1 = std::min(cols, j0 + kBlock);
        float* __restrict sb = s + j0;
        const int64_t w = j1 - j0;
        for (int64_t r = 0; r < rows; ++r) {
            const float* __restrict xr = x + int64_t(order ? order[r] : r) * cols + j0;
            for (int64_t j = 0; j < w; ++j) sb[j] += xr[j] * xr[j];
        }
    }
}

class ImatrixObserver final : public Observer {
public:
    ImatrixObserver(const WeightSource& w, const ImatrixOptions& o) {
        const ModelSpec& s = w.spec();
        auto add = [&](const std::string& canonical) {
            const auto site = siteOf(w, canonical);
            const auto cols = colsOf(w, canonical);
            if (!site || !cols) return;
            if (!site->lead) return;
            auto [it, fresh] = m_accIndex.try_emplace(site->name, m_acc.size());
            if (fresh) {
                m_acc.emplace_back();
                m_acc.back().init(site->name, *cols, site->expert >= 0 ? s.nExperts : 1);
            }
            m_route[canonical] = {it->second, site->expert};
        };
        for (int64_t l = 0; l < s.nLayers; ++l)
            for (const auto& c : blockLinears(s, l)) add(c);
        if (o.processOutput && w.find("lm_head")) add("lm_head");
        if (s.isMoe()) {
            m_expAcc.resize(size_t(s.nLayers));
            for (int64_t l = 0; l < s.nLayers; ++l)
                for (const char* role : {"gate", "up", "down"}) {
                    auto it = m_accIndex.find("blk." + std::to_string(l) + ".ffn_" + role +
                                              "_exps.weight");
                    if (it != m_accIndex.end()) m_expAcc[size_t(l)].push_back(it->second);
                }
            m_order.resize(size_t(s.nExperts));
        }
    }

    void onLinearInput(int, LinearRole, const std::string& name, const float* x, int64_t n,
                       int64_t dim) override {
        const auto it = m_route.find(name);
        if (it == m_route.end()) return;
        Acc& a = m_acc[it->second.first];
        const int64_t e = it->second.second;
        if (dim != a.cols) return; // a shape lcw does not expect; leave the entry to the checker
        if (e < 0) {
            // one matrix product, counted as a call only when llama.cpp would collect it
            if (n < kMinRows) return;
            addSquares(a.sum.data(), x, dim, nullptr, n);
            a.count[0] += n;
            ++a.ncall;
            a.seen = true;
            return;
        }
        // An expert's rows arrive in token order; llama.cpp adds them by top-k slot first.
        const auto& ord = m_order[size_t(e)];
        if (int64_t(ord.size()) != n) return;
        addSquares(a.sum.data() + e * dim, x, dim, ord.data(), n);
        a.count[size_t(e)] += n;
        a.seen = true;
    }

    void onExpertRouting(int layer, const int32_t* experts, const float*, int64_t n,
                         int64_t topK) override {
        // Each merged expert tensor runs as one product per call, whichever experts it routes to.
        if (size_t(layer) < m_expAcc.size())
            for (size_t i : m_expAcc[size_t(layer)]) ++m_acc[i].ncall;
        // Rows of expert e in lcw's order are its tokens ascending; llama.cpp visits slot 0's
        // tokens, then slot 1's, ... : a stable sort of the rows by slot.
        std::vector<int64_t> rank(m_order.size(), 0);
        std::vector<std::vector<std::pair<int64_t, int32_t>>> bySlot(m_order.size());
        for (int64_t t = 0; t < n; ++t)
            for (int64_t k = 0; k < topK; ++k) {
                const int32_t e = experts[t * topK + k];
                if (e < 0 || size_t(e) >= m_order.size()) continue;
                bySlot[size_t(e)].push_back({k, int32_t(rank[size_t(e)]++)});
            }
        for (size_t e = 0; e < m_order.size(); ++e) {
            auto& v = bySlot[e];
            std::stable_sort(v.begin(), v.end(),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
            m_order[e].resize(v.size());
            for (size_t i = 0; i < v.size(); ++i) m_order[e][i] = v[i].second;
        }
    }

    // Entries in collection order; partial ones (a slice that saw no token) are reported apart.
    Imatrix finish(std::vector<std::string>& partial) const {
        Imatrix m;
        for (const Acc& a : m_acc) {
            if (!a.seen && a.ncall == 0) continue;
            m.chunks = std::max(m.chunks, a.ncall);
            if (std::any_of(a.count.begin(), a.count.end(), [](int64_t c) { return c == 0; })) {
                partial.push_back(a.name);
                continue;
            }
            ImatrixEntry e;
            e.name = a.name;
            e.ncall = a.ncall;
            e.values.resize(a.sum.size());
            const float nc = float(a.ncall);
            for (int64_t x = 0; x < a.experts; ++x) {
                // llama.cpp keeps counts as int and converts each to float before dividing
                const float cnt = float(int32_t(a.count[size_t(x)]));
                for (int64_t j = 0; j < a.cols; ++j) {
                    const size_t k = size_t(x * a.cols + j);
                    e.values[k] = (a.sum[k] / cnt) * nc;
                }
            }
            m.entries.push_back(std::move(e));
        }
        return m;
    }

private:
    std::vector<Acc> m_acc;
    std::unordered_map<std::string, size_t> m_accIndex;
    std::unordered_map<std::string, std::pair<size_t, int64_t>> m_route; // canonical → acc, expert
    std::vector<std::vector<size_t>> m_expAcc; // per layer: its merged expert tensors
    std::vector<std::vector<int32_t>> m_order; // per expert: its rows in llama.cpp's order
};

} // namespace

// ------------------------------------------------------------------------ Imatrix

const ImatrixEntry* Imatrix::find(std::string_view name) const {
    for (const auto& e : entries)
        if (e.name == name) return &e;
    return nullptr;
}

std::vector<float> Imatrix::importance(std::string_view name, int64_t cols, int64_t experts) const {
    const ImatrixEntry* e = find(name);
    if (!e) return {};
    if (cols <= 0 || experts <= 0 || int64_t(e->values.size()) != cols * experts)
        throw FormatError(source.empty() ? std::string("imatrix") : source,
                          "entry '" + e->name + "' has " + std::to_string(e->values.size()) +
                              " values, the tensor needs " + std::to_string(cols) + " columns" +
                              (experts > 1 ? " x " + std::to_string(experts) + " experts" : ""));
    std::vector<float> v = e->values;
    if (e->ncall > 0) {
        const float nc = float(e->ncall);
        for (float& x : v) x /= nc;
    }
    return v;
}

std::vector<float> importanceFor(const Imatrix& m, const WeightSource& model,
                                 const std::string& canonical) {
    const auto site = siteOf(model, canonical);
    const auto cols = colsOf(model, canonical);
    if (!site || !cols) return {};
    const int64_t experts = site->expert >= 0 ? model.spec().nExperts : 1;
    std::vector<float> v = m.importance(site->name, *cols, experts);
    if (v.empty() || site->expert < 0) return v;
    return std::vector<float>(v.begin() + site->expert * *cols,
                              v.begin() + (site->expert + 1) * *cols);
}

Imatrix readImatrix(const std::string& path) {
    const auto f = MappedFile::open(path);
    Reader r(path, f->data(), f->size());
    if (f->size() == 0) r.fail("empty file, not an imatrix", 0);
    Imatrix m;
    m.source = path;
    const int32_t n = r.i32("the entry count");
    // every entry takes at least 4 + 1 + 4 + 4 + 4 bytes
    if (n < 1 || uint64_t(n) > r.left() / 17)
        r.fail("bad entry count " + std::to_string(n) + " (the file has " +
                   std::to_string(f->size()) + " bytes)",
               0);
    std::set<std::string, std::less<>> names;
    m.entries.reserve(size_t(n));
    for (int32_t i = 0; i < n; ++i) {
        const uint64_t at = r.pos();
        const int32_t len = r.i32(entryLabel(i, n) + " name length");
        if (len < 1 || len > kMaxNameLen || uint64_t(len) > r.left())
            r.fail(entryLabel(i, n) + ": bad name length " + std::to_string(len), at);
        ImatrixEntry e;
        e.name = r.bytes(uint64_t(len), entryLabel(i, n) + " name");
        if (e.name.find('\0') != std::string::npos)
            r.fail(entryLabel(i, n) + ": the name holds a NUL byte", at + 4);
        const std::string label = entryLabel(i, n, e.name);
        if (!names.insert(e.name).second) r.fail(label + ": duplicate entry", at);
        const uint64_t atCount = r.pos();
        e.ncall = r.i32(label + " ncall");
        const int32_t nval = r.i32(label + " value count");
        if (e.ncall < 0) r.fail(label + ": negative ncall " + std::to_string(e.ncall), atCount);
        if (nval < 1) r.fail(label + ": bad value count " + std::to_string(nval), atCount + 4);
        const uint64_t atValues = r.pos();
        const std::byte* p = r.take(uint64_t(nval) * 4, label + " values");
        e.values.resize(size_t(nval));
        std::memcpy(e.values.data(), p, size_t(nval) * 4);
        for (int32_t j = 0; j < nval; ++j) {
            const float v = e.values[size_t(j)];
            if (!std::isfinite(v) || v < 0)
                r.fail(label + ": value " + std::to_string(j) + " is " +
                           (std::isnan(v)   ? std::string("NaN")
                            : std::isinf(v) ? std::string("infinite")
                                            : "negative (" + std::to_string(v) + ")"),
                       atValues + uint64_t(j) * 4);
        }
        m.entries.push_back(std::move(e));
    }
    // Files from llama-imatrix since early 2024 end with the chunk count and the dataset name.
    if (!r.atEnd()) {
        const uint64_t at = r.pos();
        m.chunks = r.i32("the chunk count after the entries");
        if (m.chunks < 0) r.fail("negative chunk count " + std::to_string(m.chunks), at);
        const int32_t len = r.i32("the dataset name length");
        if (len < 0) r.fail("bad dataset name length " + std::to_string(len), at + 4);
        m.dataset = r.bytes(uint64_t(len), "the dataset name");
        if (!r.atEnd())
            r.fail(std::to_string(r.left()) + " unexpected bytes after the dataset name", r.pos());
    }
    return m;
}

void writeImatrix(const Imatrix& m, const std::string& path) {
    if (m.entries.empty()) throw ArgumentError(path + ": an imatrix needs at least one entry");
    auto i32 = [](AtomicFileWriter& w, int64_t v) {
        const int32_t x = int32_t(v);
        w.write(&x, 4);
    };
    for (const auto& e : m.entries) {
        if (e.values.empty() || e.name.empty())
            throw ArgumentError(path + ": imatrix entry '" + e.name + "' has no values");
        if (e.values.size() > size_t(std::numeric_limits<int32_t>::max()) ||
            e.name.size() > size_t(kMaxNameLen))
            throw ArgumentError(path + ": imatrix entry '" + e.name.substr(0, 64) +
                                "' is too large for the format");
    }
    AtomicFileWriter w(path);
    i32(w, int64_t(m.entries.size()));
    for (const auto& e : m.entries) {
        i32(w, int64_t(e.name.size()));
        w.write(e.name);
        i32(w, e.ncall);
        i32(w, int64_t(e.values.size()));
        w.write(e.values.data(), e.values.size() * 4);
    }
    i32(w, m.chunks);
    i32(w, int64_t(m.dataset.size()));
    w.write(m.dataset);
    w.commit();
}

// ------------------------------------------------------------------------ model checks

std::vector<ImatrixTarget> imatrixTargets(const WeightSource& w) {
    const ModelSpec& s = w.spec();
    std::vector<ImatrixTarget> out;
    std::unordered_map<std::string, size_t> index;
    auto add = [&](const std::string& canonical) {
        const auto site = siteOf(w, canonical);
        const auto cols = colsOf(w, canonical);
        if (!site || !cols) return;
        auto [it, fresh] = index.try_emplace(site->name, out.size());
        if (fresh) out.push_back({site->name, *cols, site->expert >= 0 ? s.nExperts : 1, {}});
        out[it->second].canonical.push_back(canonical);
    };
    for (int64_t l = 0; l < s.nLayers; ++l)
        for (const auto& c : blockLinears(s, l)) add(c);
    if (w.find("lm_head")) add("lm_head");
    return out;
}

void checkImatrix(const Imatrix& m, const WeightSource& model) {
    const auto targets = imatrixTargets(model);
    std::unordered_map<std::string_view, const ImatrixTarget*> byName;
    for (const auto& t : targets) byName[t.name] = &t;
    const std::string file = m.source.empty() ? std::string("imatrix") : m.source;
    const std::string hint = " — is this imatrix for another model?";
    for (const auto& e : m.entries) {
        const auto it = byName.find(e.name);
        if (it == byName.end())
            throw FormatError(file, "entry '" + e.name +
                                        "' does not match the model: it has no such weight (" +
                                        std::to_string(model.spec().nLayers) + " blocks, " +
                                        std::to_string(targets.size()) + " linear weights)" + hint);
        const ImatrixTarget& t = *it->second;
        if (int64_t(e.values.size()) != t.cols * t.experts)
            throw FormatError(
                file, "entry '" + e.name + "' has " + std::to_string(e.values.size()) +
                          " values, the model's tensor has " + std::to_string(t.cols) + " columns" +
                          (t.experts > 1 ? " x " + std::to_string(t.experts) + " experts"
                                         : std::string()) +
                          hint);
    }
}

// ------------------------------------------------------------------------ collection

CalibrationSet imatrixCalibration(const Model& model, const std::string& textPath, int64_t seqLen,
                                  int64_t samples) {
    if (seqLen < 2 || samples < 0)
        throw ArgumentError("imatrix needs seq-len >= 2 and samples >= 0 (got " +
                            std::to_string(seqLen) + " and " + std::to_string(samples) + ")");
    CalibrationSet cal;
    cal.source = textPath.empty() ? stats::builtinCalibrationPath() : textPath;
    std::ifstream in(cal.source, std::ios::binary);
    if (!in) throw Error(cal.source + ": cannot read the calibration text");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    // llama.cpp's -f drops one trailing newline
    if (!text.empty() && text.back() == '\n') text.pop_back();
    const Tokenizer& tk = model.tokenizer();
    const std::vector<int32_t> ids = tk.encode(text, true);
    int64_t n = int64_t(ids.size()) / seqLen;
    if (samples > 0) n = std::min(n, samples);
    if (n < 1)
        throw Error(cal.source + ": the calibration text has " + std::to_string(ids.size()) +
                    " tokens, fewer than one chunk of " + std::to_string(seqLen));
    const bool bos = tk.addsBos() && tk.bosId() >= 0;
    cal.samples.reserve(size_t(n));
    for (int64_t c = 0; c < n; ++c) {
        std::vector<int32_t> chunk(ids.begin() + c * seqLen, ids.begin() + (c + 1) * seqLen);
        if (bos) chunk[0] = tk.bosId();
        cal.samples.push_back(std::move(chunk));
    }
    return cal;
}

ImatrixResult computeImatrix(const WeightSource& weights, const CalibrationSet& cal,
                             const ImatrixOptions& opts, Progress& progress) {
    if (cal.empty()) throw ArgumentError("imatrix: the calibration set is empty");
    if (opts.microBatch < 1) throw ArgumentError("imatrix: the micro-batch must be >= 1");
    const auto t0 = std::chrono::steady_clock::now();
    SessionOptions so;
    so.contextLength = cal.seqLen();
    so.batchSize = opts.microBatch;
    so.threads = opts.threads;
    Session session(weights, so);
    ImatrixObserver obs(weights, opts);
    session.addObserver(&obs);
    ImatrixResult r;
    std::vector<float> logits;
    const int64_t N = int64_t(cal.samples.size());
    for (int64_t c = 0; c < N; ++c) {
        if (!progress.report(double(c) / double(N),
                             "chunk " + std::to_string(c + 1) + "/" + std::to_string(N))) {
            session.removeObserver(&obs);
            r.status = Status::Cancelled;
            return r;
        }
        const auto& chunk = cal.samples[size_t(c)];
        session.reset();
        // llama-imatrix computes every logit, but the output product is observed only with
        // processOutput; otherwise the last token's logits are enough.
        const int64_t first = opts.processOutput ? 0 : int64_t(chunk.size()) - 1;
        session.forwardFrom(chunk, logits, first);
        r.tokens += int64_t(chunk.size());
        ++r.chunks;
    }
    session.removeObserver(&obs);
    progress.report(1.0, "done");
    r.imatrix = obs.finish(r.partial);
    r.imatrix.dataset = opts.dataset.empty() ? cal.source : opts.dataset;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

} // namespace lcw::compress
