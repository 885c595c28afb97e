#include "core/compress/compressed_model.h"

#include "core/common/json_file.h"
#include "core/compress/gptq.h"
#include "core/compress/imatrix.h"
#include "core/compress/overlay_files.h"
#include "core/compress/pipeline.h"
#include "core/compress/rotation.h"
#include "core/compress/weight_stages.h"
#include "core/compress/wkvquant.h"

#include "core/common/checked.h"
#include "core/common/dtype.h"
#include "core/io/atomic_writer.h"
#include "core/io/quants.h"
#include "core/io/safetensors.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/session.h"
#include "core/stats/activation_stats.h"
#include "core/stats/fingerprint.h"
#include "core/tokenizer/tokenizer.h"

#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>

namespace lcw::compress {

using json = nlohmann::ordered_json;

namespace {

/// Version 2 only where a tensor stores its columns in another order (PackedTensor::colOrder,
/// "<name>.col_order"), which a reader of version 1 would ignore; other overlays stay version 1.
constexpr int kOverlayVersion = 1;
constexpr int kOverlayVersionColOrder = 2;

/// An integer of the overlay's JSON (jsonIntegerAs), else FormatError naming the field.
template <class T> T jsonInt(const json& v, const std::string& field, const std::string& where) {
    if (const std::optional<T> i = jsonIntegerAs<T>(v)) return *i;
    throw FormatError(where,
                      field + ": expected an integer in range, got " + v.dump().substr(0, 40));
}
template <class T> T jsonIntAt(const json& j, const char* key, const std::string& where) {
    return jsonInt<T>(j.at(key), key, where);
}
/// j[key] as an integer when present, else `def`.
template <class T> T jsonIntOr(const json& j, const char* key, T def, const std::string& where) {
    return j.contains(key) ? jsonInt<T>(j.at(key), key, where) : def;
}
template <class T>
std::vector<T> jsonIntsAt(const json& j, const char* key, const std::string& where) {
    const json& a = j.at(key);
    if (!a.is_array()) throw FormatError(where, std::string(key) + ": expected an array");
    std::vector<T> out;
    out.reserve(a.size());
    for (const json& v : a) out.push_back(jsonInt<T>(v, key, where));
    return out;
}

json settingsJson(const WeightSettings& s) {
    json j = {{"bits", s.bits},
              {"format", weightFormatName(s.format)},
              {"symmetric", s.symmetric},
              {"granularity", granularityName(s.granularity)},
              {"group_size", s.groupSize},
              {"method", weightMethodName(s.method)}};
    if (s.method == WeightMethod::SqueezeLlm) j["outliers_pct"] = s.outliersPct;
    if (s.method == WeightMethod::Slim) j["avg_bits"] = s.avgBits;
    if (s.clipRatio != 1.0) j["clip_ratio"] = s.clipRatio;
    return j;
}

WeightSettings settingsFromJson(const nlohmann::json& j, const std::string& where) {
    try {
        WeightSettings s;
        s.bits = jsonIntAt<int>(j, "bits", where);
        const auto f = j.at("format").get<std::string>();
        s.format = f == "int"        ? WeightFormat::Int
                   : f == "nf4"      ? WeightFormat::Nf4
                   : f == "fp8_e4m3" ? WeightFormat::Fp8E4M3
                                     : throw FormatError(where, "unknown format '" + f + "'");
        s.symmetric = j.at("symmetric").get<bool>();
        const auto g = j.at("granularity").get<std::string>();
        s.granularity = g == "tensor"    ? Granularity::Tensor
                        : g == "channel" ? Granularity::Channel
                                         : Granularity::Group;
        s.groupSize = jsonIntAt<int64_t>(j, "group_size", where);
        const auto m = j.at("method").get<std::string>();
        const auto method = weightMethodFromName(m);
        if (!method) throw FormatError(where, "unknown method '" + m + "'");
        s.method = *method;
        s.outliersPct = j.value("outliers_pct", 0.0);
        s.avgBits = j.value("avg_bits", 3.0);
        s.clipRatio = j.value("clip_ratio", 1.0);
        if (!(s.outliersPct >= 0 && s.outliersPct <= 100) || !(s.avgBits >= 2 && s.avgBits <= 4) ||
            !(s.clipRatio > 0 && s.clipRatio <= 1))
            throw FormatError(where, "outliers_pct, avg_bits or clip_ratio out of range");
        const bool f16 = s.method == WeightMethod::F16;
        if ((f16 ? s.bits != 16 : (s.bits < 2 || s.bits > 8)) || s.groupSize < 1)
            throw FormatError(where, "bits or group_size out of range");
        return s;
    } catch (const json::exception& e) {
        throw FormatError(where, std::string("bad weight settings: ") + e.what());
    }
}

const char* granName(KvGranularity g) {
    return g == KvGranularity::Channel ? "channel" : "token";
}

json runtimeQuantJson(const RuntimeQuant& rq) {
    json acts = json::array(), kv = json::array();
    for (const auto& [name, a] : rq.activations) {
        json aj = {{"name", name},
                   {"bits", a.bits},
                   {"mode", a.perToken ? "dynamic_per_token" : "static_per_tensor"},
                   {"clip", a.clip},
                   {"abs_max", a.absMax},
                   {"outlier_channels", a.outlierChannels}};
        if (a.sparse()) aj["topk"] = a.topk;
        if (a.groupSize > 0) aj["group_size"] = a.groupSize;
        if (a.outlierBits < 16) aj["outlier_bits"] = a.outlierBits;
        acts.push_back(std::move(aj));
    }
    for (const auto& [layer, k] : rq.kv) {
        json kj = {{"layer", layer},
                   {"k_bits", k.kBits},
                   {"v_bits", k.vBits},
                   {"k_granularity", granName(k.kGranularity)},
                   {"v_granularity", granName(k.vGranularity)},
                   {"group_size", k.groupSize}};
        // WKVQuant (absent otherwise, so older readers see the same entries)
        if (k.pastOnly) kj["past_only"] = true;
        if (!k.kScale.empty()) kj["k_shift"] = k.kShift, kj["k_scale"] = k.kScale;
        if (!k.vScale.empty()) kj["v_shift"] = k.vShift, kj["v_scale"] = k.vScale;
        kv.push_back(std::move(kj));
    }
    json j = {{"activations", acts}, {"kv", kv}};
    if (rq.rotation.active())
        j["rotation"] = {{"online_down", rq.rotation.down},
                         {"online_qk", rq.rotation.qk},
                         {"seed", rq.rotation.seed}};
    if (!rq.kvPolicy.empty()) {
        json pol = json::array();
        for (const auto& [layer, p] : rq.kvPolicy)
            pol.push_back({{"layer", layer},
                           {"policy", kvPolicyName(p.kind)},
                           {"budget", p.budget},
                           {"recent", p.recent},
                           {"window", p.window},
                           {"sinks", p.sinks},
                           {"mass", p.mass}});
        j["kv_policy"] = pol;
    }
    return j;
}

/// The optional "kv_policy" array of an overlay's runtime_quant (older overlays lack it).
void kvPolicyFromJson(const nlohmann::json& j, RuntimeQuant& rq, const std::string& where) {
    if (!j.contains("kv_policy")) return;
    for (const auto& k : j.at("kv_policy")) {
        KvPolicySpec p;
        const auto name = k.at("policy").get<std::string>();
        if (name == "h2o")
            p.kind = KvPolicyKind::H2O;
        else if (name == "sinks")
            p.kind = KvPolicyKind::Sinks;
        else if (name == "mass")
            p.kind = KvPolicyKind::Mass;
        else
            throw FormatError(where, "unknown KV policy '" + name + "'");
        p.budget = k.at("budget").get<double>();
        p.recent = k.at("recent").get<double>();
        p.window = k.at("window").get<double>();
        p.sinks = jsonIntAt<int64_t>(k, "sinks", where);
        p.mass = k.at("mass").get<double>();
        rq.kvPolicy[jsonIntAt<int64_t>(k, "layer", where)] = p;
    }
}

RuntimeQuant runtimeQuantFromJson(const nlohmann::json& j, const std::string& where) {
    RuntimeQuant rq;
    try {
        for (const auto& a : j.at("activations")) {
            ActQuantSpec s;
            s.bits = jsonIntAt<int>(a, "bits", where);
            const auto mode = a.at("mode").get<std::string>();
            if (mode != "dynamic_per_token" && mode != "static_per_tensor")
                throw FormatError(where, "unknown activation mode '" + mode + "'");
            s.perToken = mode == "dynamic_per_token";
            s.clip = a.at("clip").get<float>();
            s.absMax = a.at("abs_max").get<float>();
            s.outlierChannels = jsonIntsAt<int32_t>(a, "outlier_channels", where);
            s.topk = a.value("topk", 1.0f); // absent in overlays written before top-K sparsity
            // Atom's groups and 8-bit outliers (absent: one scale per token, outliers in f32)
            s.groupSize = jsonIntOr<int64_t>(a, "group_size", 0, where);
            s.outlierBits = jsonIntOr<int>(a, "outlier_bits", 16, where);
            if (s.groupSize < 0 || s.outlierBits < 2 || s.outlierBits > 16)
                throw FormatError(where, "bad activation group_size / outlier_bits");
            rq.activations[a.at("name").get<std::string>()] = std::move(s);
        }
        for (const auto& k : j.at("kv")) {
            KvQuantSpec s;
            s.kBits = jsonIntAt<int>(k, "k_bits", where);
            s.vBits = jsonIntAt<int>(k, "v_bits", where);
            auto gran = [&](const char* key) {
                const auto g = k.at(key).get<std::string>();
                if (g != "token" && g != "channel")
                    throw FormatError(where, std::string("unknown ") + key + " '" + g + "'");
                return g == "channel" ? KvGranularity::Channel : KvGranularity::Token;
            };
            s.kGranularity = gran("k_granularity");
            s.vGranularity = gran("v_granularity");
            s.groupSize = jsonIntAt<int64_t>(k, "group_size", where);
            s.pastOnly = k.value("past_only", false); // WKVQuant keys: absent in older overlays
            const std::pair<const char*, std::vector<float>*> smoothing[] = {
                {"k_shift", &s.kShift},
                {"k_scale", &s.kScale},
                {"v_shift", &s.vShift},
                {"v_scale", &s.vScale}};
            for (const auto& [key, dst] : smoothing)
                if (k.contains(key)) *dst = k.at(key).get<std::vector<float>>();
            rq.kv[jsonIntAt<int64_t>(k, "layer", where)] = s;
        }
        if (j.contains("rotation")) {
            const auto& r = j.at("rotation");
            rq.rotation.down = r.at("online_down").get<bool>();
            rq.rotation.qk = r.at("online_qk").get<bool>();
            rq.rotation.seed = jsonIntAt<uint64_t>(r, "seed", where);
        }
        kvPolicyFromJson(j, rq, where);
    } catch (const json::exception& e) {
        throw FormatError(where, std::string("bad runtime_quant: ") + e.what());
    }
    return rq;
}

/// Records the per-channel abs-max of the inputs of chosen linears.
class AbsMaxObserver final : public Observer {
public:
    /// withSumSq: also Σ x² per channel (outliers.select "sum_sq").
    AbsMaxObserver(const std::vector<std::string>& names, bool withSumSq) : m_withSumSq(withSumSq) {
        for (const auto& n : names) m_max[n];
    }
    void onLinearInput(int, LinearRole, const std::string& name, const float* x, int64_t n,
                       int64_t dim) override {
        auto it = m_max.find(name);
        if (it == m_max.end()) return;
        auto& m = it->second;
        if (m.empty()) m.assign(size_t(dim), 0.0f);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t c = 0; c < dim; ++c)
                m[size_t(c)] = std::max(m[size_t(c)], std::fabs(x[t * dim + c]));
        if (!m_withSumSq) return;
        auto& q = m_sumSq[name];
        if (q.empty()) q.assign(size_t(dim), 0.0);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t c = 0; c < dim; ++c)
                q[size_t(c)] += double(x[t * dim + c]) * double(x[t * dim + c]);
    }
    bool m_withSumSq;
    std::map<std::string, std::vector<float>> m_max;
    std::map<std::string, std::vector<double>> m_sumSq; ///< Σ x² per channel
};

/// The per-channel score that ranks a linear's outlier channels (outlierChannelsOf): the
/// calibrated abs-max, or Σ x² with "select": "sum_sq". Null when not calibrated.
const std::vector<float>* outlierScore(const OutlierSettings& o, const std::string& name,
                                       const std::map<std::string, std::vector<float>>& absMax,
                                       const std::map<std::string, std::vector<float>>& sumSq) {
    const auto& m = o.sumSq ? sumSq : absMax;
    const auto it = m.find(name);
    return it == m.end() || it->second.empty() ? nullptr : &it->second;
}

std::string blockOf(const std::string& name) {
    if (name.rfind("layers.", 0) == 0) {
        const auto dot = name.find('.', 7);
        return name.substr(0, dot);
    }
    return "other";
}

} // namespace

SizeInfo estimateLayerSize(const LayerPlan& layer) {
    return {layer.rows * layer.cols, packedStorageBits(layer.rows, layer.cols, layer.weight)};
}

SizeInfo estimateCompressedSize(const Plan& plan) {
    SizeInfo tot;
    for (const LayerPlan& l : plan.layers) {
        const SizeInfo s = estimateLayerSize(l);
        tot.params += s.params;
        tot.bits += s.bits;
    }
    return tot;
}

namespace {

/// Bits per value of an unquantised replacement: the base tensor's storage type (as
/// applyWeightStages stores it).
uint32_t storedValueBits(const TensorView& t) {
    return uint32_t(std::ceil(double(t.nbytes) * 8.0 / double(std::max<int64_t>(t.numel(), 1))));
}

/// Stored bits of one [rows, cols] entry as CompressedTensor::storageBits() counts it after
/// applyWeightStages: quantised with `w` (when quantize) or at the base's value bits, `pruned`
/// weights dropped (with their metadata). Throws as quantize() does for GGUF widths.
uint64_t entryBits(const std::string& name, int64_t rows, int64_t cols, bool quantize,
                   const WeightSettings& w, uint32_t valueBits,
                   const std::optional<SparsitySettings>& sp) {
    const int64_t n = rows * cols;
    int64_t kept = n;
    if (sp) {
        SparsitySettings eff = *sp;
        // Wanda compares unstructured scores within each output row (pruneWanda).
        if (eff.method == SparsityMethod::Wanda && eff.pattern == SparsityPattern::Unstructured)
            eff.pattern = SparsityPattern::PerRow;
        kept = n - prunedCount(rows, cols, eff);
    }
    uint64_t bits = 0;
    if (quantize) {
        const WeightSettings st = w.stored();
        if (methodIsGguf(st.method)) {
            const int64_t block = dtypeBlockElems(ggufMethodType(st.method));
            if (cols % block != 0)
                throw ArgumentError(name + ": " + weightMethodName(st.method) +
                                    " needs rows that are a multiple of " + std::to_string(block) +
                                    ", this layer has rows of " + std::to_string(cols));
        }
        bits = packedStorageBits(rows, cols, w);
        if (sp && !methodIsGguf(st.method)) bits -= uint64_t(n - kept) * uint64_t(st.bits);
    } else {
        bits = uint64_t(kept) * valueBits;
    }
    if (sp) bits += sparsityMetadataBits(rows, cols, kept, *sp);
    return bits;
}

} // namespace

namespace {

/// The shapes of the plan's tensors after structured removal (applyWeightStages: keptUnits keeps
/// units - round(ratio * units), at least 1), and which tensors it shrinks.
struct PlannedShapes {
    const Model& base;
    std::map<std::string, std::pair<int64_t, int64_t>, std::less<>> shape;
    std::set<std::string, std::less<>> shrunk;

    std::pair<int64_t, int64_t>& of(const std::string& n) {
        auto it = shape.find(n);
        if (it != shape.end()) return it->second;
        const TensorView& t = base.get(n);
        return shape[n] = {t.rows(), t.cols()};
    }
};

int64_t keptUnitCount(int64_t units, double ratio) {
    return std::clamp<int64_t>(units - int64_t(std::llround(ratio * double(units))), 1, units);
}

void shrinkMlp(PlannedShapes& ps, const std::string& p, const StructuredSettings& s) {
    if (ps.base.spec().mlpBias)
        throw UnsupportedError(p + "mlp: structured pruning of MLPs with biases is not "
                                   "supported");
    const bool gated = ps.base.find(p + "mlp.gate") != nullptr;
    auto& down = ps.of(p + "mlp.down");
    const int64_t kept = keptUnitCount(down.second, s.mlpRatio);
    down.second = kept;
    ps.shrunk.insert(p + "mlp.down");
    for (const char* n : {"mlp.up", "mlp.gate"}) {
        if (!gated && std::string(n) == "mlp.gate") continue;
        ps.of(p + n).first = kept;
        ps.shrunk.insert(p + n);
    }
}

void shrinkHeads(PlannedShapes& ps, const std::string& p, const StructuredSettings& s) {
    const ModelSpec& spec = ps.base.spec();
    if (spec.attnBias || spec.attnOutBias || spec.qkNormPerHead)
        throw UnsupportedError(p + "attn: structured head pruning of attention with "
                                   "biases or per-head norms is not supported");
    const int64_t hd = spec.headDim, rep = spec.nHeads / spec.nKvHeads;
    const int64_t kg = keptUnitCount(spec.nKvHeads, s.headRatio);
    ps.of(p + "attn.q").first = kg * rep * hd;
    ps.of(p + "attn.k").first = kg * hd;
    ps.of(p + "attn.v").first = kg * hd;
    ps.of(p + "attn.o").second = kg * rep * hd;
    for (const char* n : {"attn.q", "attn.k", "attn.v", "attn.o"}) ps.shrunk.insert(p + n);
}

/// The staged pipeline (pruning, low-rank, structured) quantises without calibration.
void checkStagedMethods(const Plan& plan) {
    bool staged = !plan.structured.empty();
    for (const auto& lp : plan.layers) staged |= lp.sparsity || lp.lowrank;
    if (staged)
        for (const auto& lp : plan.layers)
            if (lp.quantize && methodNeedsCalibration(lp.weight.method))
                throw ArgumentError(lp.name + ": method '" + weightMethodName(lp.weight.method) +
                                    "' cannot be combined with sparsity, low-rank or structured "
                                    "pruning in one recipe yet (use rtn for the quantisation "
                                    "stage)");
}

void addSize(SizeInfo& to, const SizeInfo& s) {
    to.params += s.params;
    to.bits += s.bits;
}

/// A factorised layer's two factors (an upper bound for energy targets, recorded in est).
SizeInfo lowRankSize(const LayerPlan& lp, int64_t rows, int64_t cols, uint32_t vb,
                     SizeEstimate& est) {
    const LowRankSettings& lr = *lp.lowrank;
    const int64_t full = std::min(rows, cols);
    int64_t r = full;
    if (lr.target == LowRankTarget::Energy)
        est.upperBounds.push_back(lp.name);
    else
        r = chooseRank({}, rows, cols, lr);
    est.ranks[lp.name] = r;
    // the factors are quantised with the group clamped to their rows (fitSettings)
    auto factor = [&](const std::string& fn, int64_t fr, int64_t fc) {
        WeightSettings w = lp.weight;
        if (w.granularity == Granularity::Group && w.groupSize > fc) w.groupSize = fc;
        return SizeInfo{fr * fc, entryBits(fn, fr, fc, lp.quantize, w, vb, std::nullopt)};
    };
    SizeInfo si;
    const SizeInfo a = factor(lp.name, r, cols), b = factor(lp.name, rows, r);
    addSize(si, a);
    addSize(si, b);
    return si;
}

} // namespace

/// GPTQ's act-order groups store a column order: 32 bits per input column.
uint64_t columnOrderBits(const LayerPlan& lp, int64_t cols) {
    if (!lp.quantize || lp.weight.method != WeightMethod::Gptq) return 0;
    return gptqStoresColumnOrder(lp.weight, gptqOptionsFromJson(lp.weightJson))
               ? 32 * uint64_t(cols)
               : 0;
}

/// Outlier columns chosen by count (outliers.count): their stored values and indices, and for
/// 8-bit outliers (Atom) the column order that puts them after the normal columns, unless GPTQ's
/// act order already stores one (columnOrderBits). Threshold outliers depend on the data and are
/// not counted.
uint64_t countedOutlierBits(const LayerPlan& lp, int64_t rows, int64_t cols) {
    if (!lp.quantize || !lp.hasOutliers || !lp.outliers.byCount() || lp.outliers.count == 0)
        return 0;
    uint64_t b = outlierColumnBits(rows, lp.outliers.count, lp.outliers.bits);
    if (lp.outliers.bits < 16 && columnOrderBits(lp, cols) == 0) b += 32 * uint64_t(cols);
    return b;
}

SizeEstimate estimatePlan(const Plan& plan, const Model& base) {
    SizeEstimate est;
    PlannedShapes ps{base, {}, {}};
    for (const BlockStructured& b : plan.structured) {
        const std::string p = "layers." + std::to_string(b.layer) + ".";
        if (b.settings.mlpRatio > 0) shrinkMlp(ps, p, b.settings);
        if (b.settings.headRatio > 0) shrinkHeads(ps, p, b.settings);
    }
    checkStagedMethods(plan);
    for (const LayerPlan& lp : plan.layers) {
        const TensorView& bt = base.get(lp.name);
        const auto [rows, cols] = ps.of(lp.name);
        const uint32_t vb = storedValueBits(bt);
        const SizeInfo si =
            lp.lowrank
                ? lowRankSize(lp, rows, cols, vb, est)
                : SizeInfo{rows * cols,
                           entryBits(lp.name, rows, cols, lp.quantize, lp.weight, vb, lp.sparsity) +
                               columnOrderBits(lp, cols) + countedOutlierBits(lp, rows, cols)};
        est.tensors[lp.name] = si;
        addSize(est.compressed, si);
    }
    // structurally shrunk tensors without further settings keep their values
    for (const std::string& n : ps.shrunk) {
        if (est.tensors.count(n)) continue;
        const auto [rows, cols] = ps.shape.at(n);
        const SizeInfo si{rows * cols, uint64_t(rows * cols) * storedValueBits(base.get(n))};
        est.tensors[n] = si;
        addSize(est.compressed, si);
    }
    for (const auto& t : base.tensors()) {
        est.baseParams += t.numel();
        const auto it = est.tensors.find(t.name);
        addSize(est.total,
                it != est.tensors.end() ? it->second : SizeInfo{t.numel(), t.nbytes * 8});
    }
    if (plan.untiedLmHead > 0) // a rotation's own lm_head (rotation.h)
        addSize(est.total, {plan.untiedLmHead, uint64_t(plan.untiedLmHead) * 32});
    return est;
}

SizeInfo estimateSize(const Plan& plan, const Model& base) {
    return estimatePlan(plan, base).total;
}

CompressedModel::CompressedModel(const Model& base) : m_base(base) {}
CompressedModel::~CompressedModel() = default;

std::string CompressedModel::describeOrigin() const {
    return m_base.path() + (m_dir.empty() ? " with an overlay" : " with overlay " + m_dir);
}

std::optional<std::string> CompressedModel::firstNonFiniteWeight() const {
    const std::string where = m_dir.empty() ? "the overlay over " + m_base.path() : m_dir;
    std::vector<float> buf;
    for (const auto& name : replacedNames()) {
        const CompressedTensor* t = compressed(name);
        if (!t || t->rows < 1 || t->cols < 1) continue;
        for (int64_t r = 0; r < t->rows; ++r) {
            const float* row = nullptr;
            if (t->quantized) {
                buf.resize(size_t(t->cols));
                t->dequantizeRows(r, 1, buf.data());
                row = buf.data();
            } else if (int64_t(t->floats.size()) >= (r + 1) * t->cols) {
                row = t->floats.data() + r * t->cols;
            } else {
                break;
            }
            for (int64_t c = 0; c < t->cols; ++c)
                if (!std::isfinite(row[c]))
                    return where + ": tensor '" + name + "' has " +
                           (std::isnan(row[c]) ? "NaN" : "Inf") + " at element " +
                           std::to_string(r * t->cols + c);
        }
    }
    return m_base.findNonFinite();
}

namespace {

/// Whether find() serves a quantised tensor as its GGUF block type over the packed codes (the
/// runtime's GGUF kernels then multiply them in place).
bool servedAsGguf(const CompressedTensor& t) {
    return t.quantized && methodIsGguf(t.packed.settings.method) && !t.sparsity &&
           t.packed.outlierCols.empty();
}

/// Whether the tensor's runtime form is a kernels::PackedLinear (lcw int / NF4 / FP8 codes).
bool servedPacked(const CompressedTensor& t) {
    // compact formats and Atom's 8-bit outlier columns: find()'s floats
    return t.quantized && !methodIsGguf(t.packed.settings.method) &&
           !methodIsCompact(t.packed.settings.method) && t.packed.outlierCodes.empty();
}

kernels::PackedSource packedSource(const CompressedTensor& t, const std::string& name,
                                   const std::vector<uint8_t>& mask) {
    const PackedTensor& p = t.packed;
    const WeightSettings& s = p.settings;
    kernels::PackedSource src;
    src.kind = s.format == WeightFormat::Nf4       ? kernels::PackedSource::Kind::Nf4
               : s.format == WeightFormat::Fp8E4M3 ? kernels::PackedSource::Kind::Fp8
                                                   : kernels::PackedSource::Kind::Int;
    src.bits = s.format == WeightFormat::Nf4 ? 4 : s.format == WeightFormat::Fp8E4M3 ? 8 : s.bits;
    src.symmetric = s.symmetric || s.format != WeightFormat::Int;
    src.granularity =
        s.granularity == Granularity::Tensor    ? kernels::PackedSource::Granularity::Tensor
        : s.granularity == Granularity::Channel ? kernels::PackedSource::Granularity::Channel
                                                : kernels::PackedSource::Granularity::Group;
    // A group longer than the row is the row (quantizer.cpp's groupLen).
    src.group = std::min<int64_t>(s.groupSize, p.cols);
    src.rows = p.rows;
    src.cols = p.cols;
    src.codes = p.codes.data();
    src.codeBytes = p.codes.size();
    src.scales = p.scales.data();
    src.nScales = p.scales.size();
    if (!src.symmetric) {
        src.zeros = p.zeros.data();
        src.nZeros = p.zeros.size();
    }
    if (!p.outlierCols.empty()) {
        src.outlierCols = p.outlierCols.data();
        src.nOutlierCols = p.outlierCols.size();
        src.outlierValues = p.outlierValues.data();
    }
    if (!p.colOrder.empty()) src.colOrder = p.colOrder.data();
    if (!mask.empty()) src.mask = mask.data();
    src.name = name;
    return src;
}

} // namespace

CompressedTensor::CompressedTensor() = default;
CompressedTensor::~CompressedTensor() = default;

std::vector<float> CompressedTensor::values() const {
    if (!quantized) return floats;
    std::vector<float> v(size_t(rows * cols));
    dequantizeRows(0, rows, v.data());
    return v;
}

void CompressedTensor::dequantizeRows(int64_t r0, int64_t n, float* dst) const {
    if (r0 < 0 || n < 0 || r0 + n > rows)
        throw ArgumentError("overlay: rows [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
                            ") of '" + view.name + "' are outside its " + std::to_string(rows));
    if (!quantized) {
        std::copy(floats.begin() + r0 * cols, floats.begin() + (r0 + n) * cols, dst);
        return;
    }
    compress::dequantizeRows(packed, r0, n, dst, view.name);
    if (sparsity)
        for (int64_t i = r0 * cols; i < (r0 + n) * cols; ++i)
            if (!((maskBits[size_t(i / 8)] >> (i % 8)) & 1u)) dst[i - r0 * cols] = 0.0f;
}

size_t CompressedTensor::residentBytes() const {
    const PackedTensor& p = packed;
    size_t b = p.codes.size() + 2 * (p.scales.size() + p.zeros.size() + p.outlierValues.size()) +
               4 * (p.outlierCols.size() + p.colOrder.size()) + maskBits.size() +
               p.outlierCodes.size() + 2 * p.outlierScales.size() + p.groupCodes.size() +
               4 * (p.sparseRowPtr.size() + p.sparseCols.size()) + 2 * p.sparseValues.size() +
               4 * floats.size() + 4 * materialised.size();
    if (runtimePacked) b += runtimePacked->bytes();
    return b;
}

const TensorView* CompressedModel::find(std::string_view canonical) const {
    auto it = m_tensors.find(canonical);
    if (it == m_tensors.end()) {
        if (m_lowRank.count(canonical)) return nullptr; // the runtime multiplies the factors
        return m_base.find(canonical);
    }
    CompressedTensor& t = *it->second;
    if (t.quantized && !servedAsGguf(t))
        std::call_once(t.materialiseOnce, [&t] {
            t.materialised = t.values();
            t.view.data = reinterpret_cast<const std::byte*>(t.materialised.data());
            t.view.nbytes = t.materialised.size() * sizeof(float);
        });
    return &t.view;
}

const kernels::PackedLinear* CompressedModel::packedLinear(std::string_view canonical) const {
    auto it = m_tensors.find(canonical);
    if (it == m_tensors.end() || !servedPacked(*it->second)) return nullptr;
    const CompressedTensor& t = *it->second;
    std::call_once(t.packOnce, [&t] {
        const std::vector<uint8_t> mask =
            t.sparsity ? unpackMask(t.maskBits, t.rows * t.cols) : std::vector<uint8_t>{};
        t.runtimePacked = kernels::PackedLinear::pack(packedSource(t, t.view.name, mask));
    });
    return t.runtimePacked.get();
}

size_t CompressedModel::residentBytes() const {
    size_t b = 0;
    for (const auto& [name, t] : m_tensors) b += t->residentBytes();
    return b;
}

uint64_t CompressedTensor::storageBits() const {
    const int64_t n = rows * cols;
    uint64_t bits = 0;
    if (quantized) {
        bits = packed.storageBits();
        // codes of pruned weights are not stored (GGUF blocks always hold all 32)
        if (sparsity && !methodIsGguf(packed.settings.method))
            bits -= uint64_t(n - kept) * uint64_t(packed.settings.bits);
    } else {
        bits = uint64_t(kept) * valueBits;
    }
    if (sparsity) bits += sparsityMetadataBits(rows, cols, kept, *sparsity);
    return bits;
}

void CompressedModel::setTensor(const std::string& name, PackedTensor packed) {
    TensorEntry e;
    e.rows = packed.rows;
    e.cols = packed.cols;
    e.packed = std::move(packed);
    const TensorView* b = m_base.find(name);
    if (b && b->shape.size() == 2 && (b->shape[0] != e.rows || b->shape[1] != e.cols))
        throw ArgumentError("overlay: tensor '" + name + "' has shape [" + std::to_string(e.rows) +
                            ", " + std::to_string(e.cols) + "] but the base has [" +
                            std::to_string(b->shape[0]) + ", " + std::to_string(b->shape[1]) + "]");
    setEntry(name, std::move(e));
}

void CompressedModel::setEntry(const std::string& name, TensorEntry e) {
    auto shapeStr = [](int64_t r, int64_t c) {
        return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
    };
    // The base tensor this entry belongs to, and the shape limits.
    std::string baseName = name;
    bool factor = false;
    for (const char* suf : {".lowrank_a", ".lowrank_b"}) {
        const std::string sfx = suf;
        if (name.size() > sfx.size() &&
            name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
            baseName = name.substr(0, name.size() - sfx.size());
            factor = true;
        }
    }
    const TensorView* b = m_base.find(baseName);
    if (!b || b->shape.size() != 2)
        throw ArgumentError("overlay: the base model has no 2-D tensor '" + baseName + "'");
    if (e.rows < 1 || e.cols < 1)
        throw ArgumentError("overlay: tensor '" + name + "' has an empty shape");
    if (factor) {
        const bool isA = name.back() == 'a';
        if ((isA && e.cols != b->shape[1]) || (!isA && e.rows != b->shape[0]) ||
            (isA ? e.rows : e.cols) > std::min(b->shape[0], b->shape[1]))
            throw ArgumentError("overlay: low-rank factor '" + name + "' has shape " +
                                shapeStr(e.rows, e.cols) + ", which does not fit the base " +
                                shapeStr(b->shape[0], b->shape[1]));
    } else if (e.rows > b->shape[0] || e.cols > b->shape[1]) {
        throw ArgumentError("overlay: tensor '" + name + "' has shape " + shapeStr(e.rows, e.cols) +
                            " but the base has " + shapeStr(b->shape[0], b->shape[1]));
    }
    const int64_t n = e.rows * e.cols;
    auto t = std::make_unique<CompressedTensor>();
    t->rows = e.rows;
    t->cols = e.cols;
    t->kept = n;
    t->view = *b;
    t->view.name = name;
    t->view.shape = {e.rows, e.cols};
    t->view.file.clear();
    if (e.packed) {
        if (e.packed->rows != e.rows || e.packed->cols != e.cols)
            throw ArgumentError("overlay: packed form of '" + name + "' does not match its shape");
        // The codes are validated now; their float values exist only on demand.
        std::vector<float> probe(size_t(e.cols));
        compress::dequantizeRows(*e.packed, 0, 1, probe.data(), name);
        t->packed = std::move(*e.packed);
        t->quantized = true;
    } else {
        if (int64_t(e.values.size()) != n)
            throw ArgumentError("overlay: tensor '" + name + "' has " +
                                std::to_string(e.values.size()) + " values for shape " +
                                shapeStr(e.rows, e.cols));
        t->floats = std::move(e.values);
        t->valueBits = e.valueBits;
    }
    if (e.sparsity) {
        if (int64_t(e.mask.size()) != n)
            throw ArgumentError("overlay: the mask of '" + name + "' does not match its shape");
        t->sparsity = e.sparsity;
        t->kept = 0;
        for (int64_t i = 0; i < n; ++i) {
            if (e.mask[size_t(i)])
                ++t->kept;
            else if (!t->quantized)
                t->floats[size_t(i)] = 0.0f;
        }
        t->maskBits = packMask(e.mask);
    }
    if (servedAsGguf(*t)) {
        t->view.dtype = ggufMethodType(t->packed.settings.method);
        t->view.data = reinterpret_cast<const std::byte*>(t->packed.codes.data());
        t->view.nbytes = t->packed.codes.size();
    } else {
        t->view.dtype = DType::F32;
        t->view.data =
            t->quantized ? nullptr : reinterpret_cast<const std::byte*>(t->floats.data());
        t->view.nbytes = t->quantized ? 0 : t->floats.size() * sizeof(float);
    }
    m_tensors[name] = std::move(t);
}

void CompressedModel::setLowRank(const std::string& name) {
    const CompressedTensor* a = compressed(name + ".lowrank_a");
    const CompressedTensor* b = compressed(name + ".lowrank_b");
    const TensorView* base = m_base.find(name);
    if (!a || !b || !base || a->rows != b->cols)
        throw ArgumentError("overlay: '" + name + "' needs matching .lowrank_a and .lowrank_b");
    m_tensors.erase(name);
    m_lowRank.insert(name);
}

void CompressedModel::setRuntimeQuant(RuntimeQuant rq) {
    for (const auto& [name, a] : rq.activations) {
        const TensorView* t = m_base.find(name);
        if (!t || t->shape.size() != 2)
            throw ArgumentError("runtime quantisation: the base model has no linear '" + name +
                                "'");
        if (a.bits < 2 || a.bits > 16 || !(a.clip > 0 && a.clip <= 1) || !(a.absMax >= 0) ||
            !(a.topk > 0 && a.topk <= 1))
            throw ArgumentError("runtime quantisation of '" + name +
                                "': bits, clip, abs_max or topk out of range");
        for (int32_t c : a.outlierChannels)
            if (c < 0 || c >= t->shape[1])
                throw ArgumentError("runtime quantisation of '" + name + "': outlier channel " +
                                    std::to_string(c) + " is not an input channel");
    }
    for (const auto& [layer, k] : rq.kv) {
        if (layer < 0 || layer >= spec().nLayers || k.kBits < 2 || k.kBits > 16 || k.vBits < 2 ||
            k.vBits > 16 || k.groupSize < 1)
            throw ArgumentError("runtime quantisation: KV settings of block " +
                                std::to_string(layer) + " are out of range");
        const size_t width = size_t(spec().nKvHeads * spec().headDim);
        auto smoothingOk = [&](const std::vector<float>& sh, const std::vector<float>& sc) {
            if (sh.empty() && sc.empty()) return true;
            if (sh.size() != width || sc.size() != width) return false;
            for (size_t c = 0; c < width; ++c)
                if (!std::isfinite(sh[c]) || !std::isfinite(sc[c]) || !(sc[c] > 0)) return false;
            return true;
        };
        if (!smoothingOk(k.kShift, k.kScale) || !smoothingOk(k.vShift, k.vScale))
            throw ArgumentError("runtime quantisation: KV smoothing of block " +
                                std::to_string(layer) + " needs " + std::to_string(width) +
                                " finite shifts and positive scales for K and V");
        const bool tokenOnly = (k.kBits >= 16 || k.kGranularity == KvGranularity::Token) &&
                               (k.vBits >= 16 || k.vGranularity == KvGranularity::Token);
        if ((k.pastOnly || !k.kScale.empty() || !k.vScale.empty()) && !tokenOnly)
            throw ArgumentError("runtime quantisation: WKVQuant's past-only quantisation and "
                                "smoothing of block " +
                                std::to_string(layer) + " need token granularity");
    }
    for (const auto& [layer, p] : rq.kvPolicy)
        if (layer < 0 || layer >= spec().nLayers || !p.active() || p.budget < 0 || p.recent < 0 ||
            p.window < 0 || p.sinks < 0 || !(p.mass > 0 && p.mass <= 1) ||
            (p.kind == KvPolicyKind::H2O && !(p.budget > 0)) ||
            (p.kind == KvPolicyKind::Sinks && !(p.window > 0)))
            throw ArgumentError("runtime quantisation: KV eviction policy of block " +
                                std::to_string(layer) + " is out of range");
    m_runtime = std::move(rq);
}

void CompressedModel::setFloatTensor(const std::string& name, std::vector<float> values,
                                     const std::vector<int64_t>& shape) {
    const TensorView* b = m_base.find(name);
    TensorView added;
    if (!b) {
        if (shape.empty())
            throw ArgumentError("overlay: the base model has no tensor '" + name +
                                "' (a new tensor needs a shape)");
        int64_t n = 1;
        for (int64_t d : shape) {
            if (d < 1)
                throw ArgumentError("overlay: new tensor '" + name + "' has a non-positive size");
            n *= d;
        }
        if (n != int64_t(values.size()))
            throw ArgumentError("overlay: new tensor '" + name + "' gets " +
                                std::to_string(values.size()) + " values for " + std::to_string(n) +
                                " elements");
        added.name = name;
        added.shape = shape;
        b = &added;
        if (!m_tensors.count(name)) m_added.push_back(name);
    }
    if (int64_t(values.size()) != b->numel())
        throw ArgumentError("overlay: tensor '" + name + "' gets " + std::to_string(values.size()) +
                            " values but has " + std::to_string(b->numel()));
    auto t = std::make_unique<CompressedTensor>();
    t->isFloat = true;
    t->cols = b->cols();
    t->rows = b->rows();
    t->floats = std::move(values);
    t->view = *b;
    t->view.dtype = DType::F32;
    t->view.data = reinterpret_cast<const std::byte*>(t->floats.data());
    t->view.nbytes = t->floats.size() * sizeof(float);
    t->view.file.clear();
    m_tensors[name] = std::move(t);
}

std::unique_ptr<CompressedModel> CompressedModel::moveOnto(const Model& newBase) {
    auto cm = std::make_unique<CompressedModel>(newBase);
    for (const auto& [name, t] : m_tensors) {
        std::string baseName = name;
        for (const char* suf : {".lowrank_a", ".lowrank_b"})
            if (name.size() > std::strlen(suf) &&
                name.compare(name.size() - std::strlen(suf), std::strlen(suf), suf) == 0)
                baseName = name.substr(0, name.size() - std::strlen(suf));
        if (newBase.find(baseName)) continue;
        if (!t->isFloat)
            throw ArgumentError("overlay: the new base has no tensor '" + baseName + "'");
        if (std::find(m_added.begin(), m_added.end(), name) == m_added.end())
            m_added.push_back(name);
    }
    cm->m_tensors = std::move(m_tensors);
    cm->m_lowRank = std::move(m_lowRank);
    cm->m_added = std::move(m_added);
    cm->m_runtime = std::move(m_runtime);
    cm->recipe = std::move(recipe);
    cm->baseFingerprint = std::move(baseFingerprint);
    m_tensors.clear();
    m_lowRank.clear();
    m_added.clear();
    m_runtime = {};
    return cm;
}

const CompressedTensor* CompressedModel::compressed(std::string_view name) const {
    auto it = m_tensors.find(name);
    return it == m_tensors.end() ? nullptr : it->second.get();
}

std::vector<std::string> CompressedModel::replacedNames() const {
    std::vector<std::string> out;
    for (const auto& t : m_base.tensors()) {
        if (m_tensors.count(t.name)) out.push_back(t.name);
        if (m_lowRank.count(t.name)) {
            out.push_back(t.name + ".lowrank_a");
            out.push_back(t.name + ".lowrank_b");
        }
    }
    out.insert(out.end(), m_added.begin(), m_added.end());
    return out;
}

SizeInfo CompressedModel::tensorSize(const std::string& name) const {
    if (const auto* c = compressed(name); c && !c->isFloat)
        return {c->rows * c->cols, c->storageBits()};
    if (isLowRank(name)) {
        const SizeInfo a = tensorSize(name + ".lowrank_a"), b = tensorSize(name + ".lowrank_b");
        return {a.params + b.params, a.bits + b.bits};
    }
    const TensorView* t = m_base.find(name);
    if (!t)
        if (const auto* c = compressed(name)) t = &c->view; // a tensor the overlay adds
    if (!t) throw ArgumentError("no tensor '" + name + "'");
    return {t->numel(), t->nbytes * 8};
}

std::map<std::string, SizeInfo> CompressedModel::layerSizes() const {
    std::map<std::string, SizeInfo> out;
    for (const auto& t : m_base.tensors()) {
        const SizeInfo s = tensorSize(t.name);
        SizeInfo& d = out[blockOf(t.name)];
        d.params += s.params;
        d.bits += s.bits;
    }
    for (const auto& name : m_added) {
        const SizeInfo s = tensorSize(name);
        SizeInfo& d = out[blockOf(name)];
        d.params += s.params;
        d.bits += s.bits;
    }
    return out;
}

SizeInfo CompressedModel::totalSize() const {
    SizeInfo tot;
    for (const auto& t : m_base.tensors()) {
        const SizeInfo s = tensorSize(t.name);
        tot.params += s.params;
        tot.bits += s.bits;
    }
    for (const auto& name : m_added) {
        const SizeInfo s = tensorSize(name);
        tot.params += s.params;
        tot.bits += s.bits;
    }
    return tot;
}

SizeInfo CompressedModel::compressedSize() const {
    SizeInfo tot;
    for (const auto& [name, t] : m_tensors) {
        if (t->isFloat) continue;
        tot.params += t->rows * t->cols;
        tot.bits += t->storageBits();
    }
    return tot;
}

void CompressedModel::save(const std::string& dir) const {
    namespace fs = std::filesystem;
    std::vector<TensorDesc> descs;
    struct Src {
        const void* data;
        uint64_t bytes;
    };
    std::vector<Src> srcs;
    json tensors = json::array();
    int version = kOverlayVersion;
    for (const auto& name : replacedNames()) {
        const CompressedTensor& c = *compressed(name);
        if (c.isFloat) {
            descs.push_back({name + ".values", DType::F32, c.view.shape});
            srcs.push_back({c.floats.data(), c.floats.size() * sizeof(float)});
            tensors.push_back({{"name", name}, {"shape", c.view.shape}, {"float", true}});
            continue;
        }
        const PackedTensor& p = c.packed;
        json tj = {{"name", name}, {"shape", {c.rows, c.cols}}};
        if (c.quantized) {
            descs.push_back({name + ".codes", DType::U8, {int64_t(p.codes.size())}});
            srcs.push_back({p.codes.data(), p.codes.size()});
            if (!p.scales.empty()) {
                descs.push_back({name + ".scales", DType::F16, {int64_t(p.scales.size())}});
                srcs.push_back({p.scales.data(), p.scales.size() * 2});
            }
            if (!p.zeros.empty()) {
                descs.push_back({name + ".zeros", DType::F16, {int64_t(p.zeros.size())}});
                srcs.push_back({p.zeros.data(), p.zeros.size() * 2});
            }
            tj["weight"] = settingsJson(p.settings);
        } else {
            descs.push_back({name + ".values", DType::F32, {c.rows, c.cols}});
            srcs.push_back({c.floats.data(), c.floats.size() * sizeof(float)});
            tj["value_bits"] = c.valueBits;
        }
        if (c.sparsity) {
            descs.push_back({name + ".mask", DType::U8, {int64_t(c.maskBits.size())}});
            srcs.push_back({c.maskBits.data(), c.maskBits.size()});
            tj["sparsity"] = {{"method", sparsityMethodName(c.sparsity->method)},
                              {"pattern", sparsityPatternName(c.sparsity->pattern)},
                              {"ratio", c.sparsity->ratio},
                              {"n", c.sparsity->n},
                              {"m", c.sparsity->m},
                              {"kept", c.kept}};
            if (c.sparsity->method == SparsityMethod::SparseGpt &&
                c.sparsity->pattern != SparsityPattern::NM)
                tj["sparsity"]["count"] = sparsityCountName(c.sparsity->count);
        }
        if (c.quantized && !p.outlierCols.empty()) {
            descs.push_back({name + ".outlier_cols", DType::I32, {int64_t(p.outlierCols.size())}});
            srcs.push_back({p.outlierCols.data(), p.outlierCols.size() * 4});
            if (!p.outlierCodes.empty()) { // Atom's 8-bit outlier columns
                descs.push_back(
                    {name + ".outlier_codes", DType::U8, {int64_t(p.outlierCodes.size())}});
                srcs.push_back({p.outlierCodes.data(), p.outlierCodes.size()});
                descs.push_back(
                    {name + ".outlier_scales", DType::F16, {int64_t(p.outlierScales.size())}});
                srcs.push_back({p.outlierScales.data(), p.outlierScales.size() * 2});
            } else {
                descs.push_back(
                    {name + ".outlier_values", DType::F16, {int64_t(p.outlierValues.size())}});
                srcs.push_back({p.outlierValues.data(), p.outlierValues.size() * 2});
            }
        }
        if (c.quantized && !p.colOrder.empty()) {
            descs.push_back({name + ".col_order", DType::I32, {int64_t(p.colOrder.size())}});
            srcs.push_back({p.colOrder.data(), p.colOrder.size() * 4});
            version = kOverlayVersionColOrder;
        }
        if (c.quantized) { // compact methods' arrays (compact_formats.h)
            auto add = [&](const char* suffix, DType t, const void* d, size_t n, size_t el) {
                if (n == 0) return;
                descs.push_back({name + suffix, t, {int64_t(n)}});
                srcs.push_back({d, n * el});
            };
            add(".group_codes", DType::U8, p.groupCodes.data(), p.groupCodes.size(), 1);
            add(".sparse_row_ptr", DType::I32, p.sparseRowPtr.data(), p.sparseRowPtr.size(), 4);
            add(".sparse_cols", DType::I32, p.sparseCols.data(), p.sparseCols.size(), 4);
            add(".sparse_values", DType::F16, p.sparseValues.data(), p.sparseValues.size(), 2);
        }
        tj["storage_bits"] = c.storageBits();
        tensors.push_back(std::move(tj));
    }
    json lowRank = json::array();
    for (const auto& name : m_lowRank) lowRank.push_back(name);
    json j = {{"lcw_overlay", version},
              {"base", {{"path", m_base.path()}, {"fingerprint", baseFingerprint}}},
              {"recipe", recipe.toJson()},
              {"tensors", tensors}};
    if (!lowRank.empty()) j["lowrank"] = lowRank;
    if (!m_runtime.empty()) j["runtime_quant"] = runtimeQuantJson(m_runtime);
    // One unit (overlay_files.h): both files go into a temporary folder renamed into place, and
    // the JSON records the content hash of the tensor file.
    commitOverlayFolder(dir, [&](const std::string& folder) {
        const std::string st = (fs::path(folder) / "overlay.safetensors").string();
        writeSafetensors(
            st, descs,
            [&](size_t i, std::byte* dst, uint64_t n) { std::memcpy(dst, srcs[i].data, n); },
            {{"lcw_overlay", std::to_string(version)}});
        j["content_hash"] = overlayContentHash(st);
        AtomicFileWriter w((fs::path(folder) / "overlay.json").string());
        w.write(j.dump(2) + "\n");
        w.commit();
    });
}

namespace {

/// The overlay description DIR/overlay.json of this format version (throws naming the file).
nlohmann::json readOverlayJson(const std::string& jpath) {
    namespace fs = std::filesystem;
    if (!fs::exists(jpath)) throw Error(jpath + ": cannot open (not an lcw overlay folder?)");
    nlohmann::json j = readJsonFile(jpath);
    if (!j.is_object() || !j.contains("lcw_overlay") ||
        (j["lcw_overlay"] != kOverlayVersion && j["lcw_overlay"] != kOverlayVersionColOrder))
        throw FormatError(jpath, "not an lcw overlay of version " +
                                     std::to_string(kOverlayVersion) + " or " +
                                     std::to_string(kOverlayVersionColOrder));
    return j;
}

/// The overlay's recipe and base fingerprint; throws when the overlay was made for another
/// base model.
void readOverlayOrigin(CompressedModel& m, const nlohmann::json& j, const Model& base,
                       const std::string& jpath) {
    try {
        m.baseFingerprint = j.at("base").at("fingerprint").get<std::string>();
        m.recipe = Recipe::fromJson(j.at("recipe"));
    } catch (const json::exception& e) {
        throw FormatError(jpath, std::string("bad overlay description: ") + e.what());
    }
    const std::string fp = stats::modelFingerprint(base);
    if (fp != m.baseFingerprint)
        throw Error(jpath + ": the overlay was made for another base model (fingerprint " +
                    m.baseFingerprint + ", this model has " + fp + ")");
}

/// A float tensor of the overlay (folded norms, new biases) into m.
void loadFloatTensor(CompressedModel& m, const Model& base, const SafetensorsSet& st,
                     const nlohmann::json& tj, const std::string& name, const std::string& jpath) {
    const TensorView* v = st.find(name + ".values");
    if (!v || v->dtype != DType::F32)
        throw FormatError(jpath, "overlay.safetensors lacks " + name + ".values");
    std::vector<float> vals(v->nbytes / 4);
    std::memcpy(vals.data(), v->data, vals.size() * 4);
    std::vector<int64_t> shape;
    if (!base.find(name)) {
        shape = jsonIntsAt<int64_t>(tj, "shape", jpath);
        checked::numel(shape, jpath, "tensor '" + name + "'"); // no overflow in setFloatTensor
    }
    try {
        m.setFloatTensor(name, std::move(vals), shape);
    } catch (const Error& ex) {
        throw FormatError(jpath, ex.what());
    }
}

/// A tensor entry's sparsity settings.
SparsitySettings sparsityFromJson(const nlohmann::json& sj, const std::string& name,
                                  const std::string& jpath) {
    SparsitySettings ss;
    const auto meth = sj.at("method").get<std::string>();
    const auto pat = sj.at("pattern").get<std::string>();
    ss.method = meth == "wanda"       ? SparsityMethod::Wanda
                : meth == "sparsegpt" ? SparsityMethod::SparseGpt
                                      : SparsityMethod::Magnitude;
    ss.pattern = pat == "n:m"       ? SparsityPattern::NM
                 : pat == "per_row" ? SparsityPattern::PerRow
                                    : SparsityPattern::Unstructured;
    ss.ratio = sj.at("ratio").get<double>();
    ss.n = jsonIntAt<int>(sj, "n", jpath);
    ss.m = jsonIntAt<int>(sj, "m", jpath);
    // overlays written before the count rule was recorded pruned the exact count
    ss.count = sj.value("count", std::string("exact")) == "reference" ? SparsityCount::Reference
                                                                      : SparsityCount::Exact;
    if (ss.m < 2 || ss.n < 1 || ss.n >= ss.m)
        throw FormatError(jpath, name + ": bad N:M " + sj.dump());
    return ss;
}

/// The packed codes, scales, zeros and outlier columns of a quantised entry.
PackedTensor readPackedEntry(const SafetensorsSet& st, const nlohmann::json& tj,
                             const std::string& name, const TensorEntry& e,
                             const std::string& jpath) {
    PackedTensor p;
    p.rows = e.rows;
    p.cols = e.cols;
    p.settings = settingsFromJson(tj.at("weight"), jpath);
    const TensorView* codes = st.find(name + ".codes");
    if (!codes) throw FormatError(jpath, "overlay.safetensors lacks " + name + ".codes");
    const auto* cb = reinterpret_cast<const uint8_t*>(codes->data);
    p.codes.assign(cb, cb + codes->nbytes);
    auto u16 = [&](const std::string& n, std::vector<uint16_t>& dst) {
        if (const TensorView* t = st.find(n)) {
            dst.resize(t->nbytes / 2);
            std::memcpy(dst.data(), t->data, dst.size() * 2);
        }
    };
    u16(name + ".scales", p.scales);
    u16(name + ".zeros", p.zeros);
    u16(name + ".outlier_values", p.outlierValues);
    if (const TensorView* t = st.find(name + ".outlier_cols")) {
        p.outlierCols.resize(t->nbytes / 4);
        std::memcpy(p.outlierCols.data(), t->data, p.outlierCols.size() * 4);
    }
    // Compact methods' arrays (compact_formats.h; their sizes are checked by setEntry).
    auto raw = [&](const char* suffix, DType type, auto& dst) {
        if (const TensorView* t = st.find(name + suffix)) {
            using T = typename std::decay_t<decltype(dst)>::value_type;
            if (t->dtype != type || t->nbytes % sizeof(T) != 0)
                throw FormatError(jpath, name + suffix + " has the wrong type");
            dst.resize(t->nbytes / sizeof(T));
            std::memcpy(dst.data(), t->data, t->nbytes);
        }
    };
    raw(".group_codes", DType::U8, p.groupCodes);
    raw(".outlier_codes", DType::U8, p.outlierCodes);
    raw(".outlier_scales", DType::F16, p.outlierScales);
    raw(".sparse_row_ptr", DType::I32, p.sparseRowPtr);
    raw(".sparse_cols", DType::I32, p.sparseCols);
    raw(".sparse_values", DType::F16, p.sparseValues);
    if (const TensorView* t = st.find(name + ".col_order")) {
        if (t->dtype != DType::I32 || t->nbytes != uint64_t(p.cols) * 4)
            throw FormatError(jpath, name + ".col_order is not " + std::to_string(p.cols) +
                                         " I32 column indices");
        p.colOrder.resize(size_t(p.cols));
        std::memcpy(p.colOrder.data(), t->data, p.colOrder.size() * 4);
    }
    return p;
}

/// The float values of an unquantised (pruned or shrunk) entry.
void readEntryValues(const SafetensorsSet& st, const std::string& name, TensorEntry& e,
                     const std::string& jpath) {
    const TensorView* v = st.find(name + ".values");
    if (!v || v->dtype != DType::F32 || v->nbytes != uint64_t(e.rows * e.cols) * sizeof(float))
        throw FormatError(jpath, "overlay.safetensors lacks F32 " + name + ".values of " +
                                     std::to_string(e.rows * e.cols) + " values");
    e.values.resize(size_t(e.rows * e.cols));
    std::memcpy(e.values.data(), v->data, v->nbytes);
}

/// The sparsity mask of a pruned entry.
void readEntryMask(const SafetensorsSet& st, const std::string& name, TensorEntry& e,
                   const std::string& jpath) {
    const TensorView* mk = st.find(name + ".mask");
    if (!mk) throw FormatError(jpath, "overlay.safetensors lacks " + name + ".mask");
    const auto* mb = reinterpret_cast<const uint8_t*>(mk->data);
    try {
        e.mask = unpackMask(std::vector<uint8_t>(mb, mb + mk->nbytes), e.rows * e.cols);
    } catch (const Error& ex) {
        throw FormatError(jpath, name + ": " + ex.what());
    }
}

/// One entry of the overlay's tensors list into m.
void loadOverlayTensor(CompressedModel& m, const Model& base, const SafetensorsSet& st,
                       const nlohmann::json& tj, const std::string& jpath) {
    TensorEntry e;
    std::string name;
    try {
        name = tj.at("name").get<std::string>();
        if (tj.value("float", false)) return loadFloatTensor(m, base, st, tj, name, jpath);
        e.rows = jsonInt<int64_t>(tj.at("shape").at(0), "shape", jpath);
        e.cols = jsonInt<int64_t>(tj.at("shape").at(1), "shape", jpath);
        if (tj.contains("sparsity")) e.sparsity = sparsityFromJson(tj["sparsity"], name, jpath);
        if (!tj.contains("weight")) e.valueBits = jsonIntAt<uint32_t>(tj, "value_bits", jpath);
    } catch (const json::exception& ex) {
        throw FormatError(jpath, std::string("bad tensor entry: ") + ex.what());
    }
    if (e.rows < 1 || e.cols < 1)
        throw FormatError(jpath, "tensor '" + name + "': bad shape [" + std::to_string(e.rows) +
                                     ", " + std::to_string(e.cols) + "]");
    // At most kMaxTensorElements, checked before anything multiplies rows by cols.
    checked::numel({e.rows, e.cols}, jpath, "tensor '" + name + "'");
    if (tj.contains("weight"))
        e.packed = readPackedEntry(st, tj, name, e, jpath);
    else
        readEntryValues(st, name, e, jpath);
    if (e.sparsity) readEntryMask(st, name, e, jpath);
    try {
        m.setEntry(name, std::move(e));
    } catch (const Error& ex) {
        throw FormatError(jpath, ex.what());
    }
}

/// The overlay's low-rank list and runtime quantisation, when present.
void loadOverlayExtras(CompressedModel& m, const nlohmann::json& j, const std::string& jpath) {
    if (j.contains("lowrank")) {
        try {
            for (const auto& n : j["lowrank"]) m.setLowRank(n.get<std::string>());
        } catch (const json::exception& ex) {
            throw FormatError(jpath, std::string("bad lowrank list: ") + ex.what());
        } catch (const ArgumentError& ex) {
            throw FormatError(jpath, ex.what());
        }
    }
    if (j.contains("runtime_quant")) {
        try {
            m.setRuntimeQuant(runtimeQuantFromJson(j["runtime_quant"], jpath));
        } catch (const ArgumentError& e) {
            throw FormatError(jpath, e.what());
        }
    }
}

} // namespace

std::unique_ptr<CompressedModel> CompressedModel::load(const std::string& dir, const Model& base) {
    namespace fs = std::filesystem;
    const std::string jpath = (fs::path(dir) / "overlay.json").string();
    const nlohmann::json j = readOverlayJson(jpath);
    auto m = std::make_unique<CompressedModel>(base);
    m->m_dir = dir;
    readOverlayOrigin(*m, j, base, jpath);
    const std::string stpath = (fs::path(dir) / "overlay.safetensors").string();
    verifyOverlayContentHash(j, jpath, stpath); // older overlays without a hash: unchecked
    const SafetensorsSet st = readSafetensors(stpath);
    if (!j.contains("tensors") || !j["tensors"].is_array())
        throw FormatError(jpath, "missing tensors list");
    for (const auto& tj : j["tensors"]) loadOverlayTensor(*m, base, st, tj, jpath);
    loadOverlayExtras(*m, j, jpath);
    return m;
}

std::map<std::string, std::vector<float>>
calibrateInputAbsMax(const Model& base, const std::vector<std::string>& names,
                     const ActivationCalibration& opts, Progress& progress,
                     std::map<std::string, std::vector<float>>* sumSq) {
    const std::string path =
        opts.textFile.empty() ? stats::builtinCalibrationPath() : opts.textFile;
    if (!base.hasTokenizer())
        throw Error(base.path() + ": calibrating activations needs a tokenizer and the model has "
                                  "none");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open the calibration text");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::vector<int32_t> ids = base.tokenizer().encode(ss.str(), true);
    if (ids.size() < 2) throw Error(path + ": the calibration text has fewer than two tokens");
    int64_t L = std::max<int64_t>(2, opts.seqLen);
    if (base.spec().maxSeq > 0) L = std::min(L, base.spec().maxSeq);
    L = std::min<int64_t>(L, int64_t(ids.size()));
    const int64_t nSeq =
        std::max<int64_t>(1, std::min<int64_t>(opts.samples, int64_t(ids.size()) / L));
    SessionOptions so;
    so.contextLength = L;
    Session session(base, so);
    AbsMaxObserver obs(names, sumSq != nullptr);
    session.addObserver(&obs);
    std::vector<float> logits;
    for (int64_t i = 0; i < nSeq; ++i) {
        if (!progress.report(double(i) / double(nSeq), "calibrating activations")) return {};
        session.reset();
        session.forward(std::span<const int32_t>(ids.data() + i * L, size_t(L)), logits);
    }
    if (sumSq)
        for (const auto& [name, q] : obs.m_sumSq)
            (*sumSq)[name] = std::vector<float>(q.begin(), q.end());
    return std::move(obs.m_max);
}

CompressResult compressWithBundledCalibration(const Model& base, const Recipe& recipe,
                                              Progress& progress, CalibrationOptions cal) {
    CompressOptions opts;
    std::unique_ptr<CalibrationSet> set;
    PlanOptions po;
    po.hasCalibration = base.hasTokenizer();
    if (po.hasCalibration && planRecipe(recipe, base, po).needsCalibration()) {
        set = std::make_unique<CalibrationSet>(loadCalibration(base, "", cal));
        opts.calibration = set.get();
    }
    return compress(base, recipe, progress, opts);
}

std::vector<float> layerImportance(const CompressOptions& opts, const WeightSource& base,
                                   const std::string& name, int64_t cols) {
    if (!opts.imatrix) return {};
    std::vector<float> v = importanceFor(*opts.imatrix, base, name);
    if (int64_t(v.size()) != cols) return {};
    return v;
}

namespace {

/// The recipe's importance matrix (computed from the calibration text for "calibrate", else
/// read from its file), unless the caller gave one. False when cancelled.
bool useRecipeImatrix(const Model& base, const Recipe& recipe, CompressOptions& opts,
                      std::optional<Imatrix>& own, Progress& progress) {
    if (opts.imatrix || recipe.imatrix.empty()) return true;
    if (recipe.imatrix == "calibrate") {
        if (!opts.calibration || opts.calibration->empty())
            throw RecipeError(-1, "imatrix",
                              "\"calibrate\" computes the importance matrix from calibration "
                              "text, and none was given");
        // llama-imatrix reads consecutive chunks: a randomly sampled set is re-cut from its
        // text as consecutive windows of the same length and count.
        const CalibrationSet* cal = opts.calibration;
        CalibrationSet chunks;
        if (cal->sampling != CalibrationSampling::Consecutive) {
            CalibrationOptions co;
            co.samples = int64_t(cal->samples.size());
            co.seqLen = cal->seqLen();
            co.sampling = CalibrationSampling::Consecutive;
            chunks = loadCalibration(base, cal->source, co);
            cal = &chunks;
        }
        ImatrixResult ir = computeImatrix(base, *cal, {}, progress);
        if (ir.status == Status::Cancelled) return false;
        own = std::move(ir.imatrix);
    } else {
        own = readImatrix(recipe.imatrix);
        checkImatrix(*own, base);
    }
    opts.imatrix = &*own;
    return true;
}

/// Whether the plan prunes, factorises or removes structure (the staged pipeline).
bool isStaged(const Plan& plan) {
    bool staged = !plan.structured.empty();
    for (const auto& lp : plan.layers) staged |= lp.sparsity || lp.lowrank;
    return staged;
}

/// The staged (or uncalibrated) pipeline takes neither the calibrated methods nor
/// SmoothQuant: throws naming the layer.
void checkStagedPlan(const Plan& plan, bool staged) {
    for (const auto& lp : plan.layers)
        if (lp.quantize && methodNeedsCalibration(lp.weight.method))
            throw ArgumentError(
                lp.name + ": method '" + weightMethodName(lp.weight.method) + "' " +
                (staged ? "cannot be combined with sparsity, low-rank or structured pruning in "
                          "one recipe yet (use rtn for the quantisation stage)"
                        : "needs a calibration set (CompressOptions::calibration)"));
    for (const auto& lp : plan.layers)
        if (lp.quantize && lp.hasOutliers && lp.outliers.byCount())
            throw ArgumentError(
                lp.name + ": outlier columns chosen by count (outliers.count) " +
                (staged ? "cannot be combined with sparsity, low-rank or structured pruning in "
                          "one recipe yet"
                        : "need a calibration set (CompressOptions::calibration)"));
    if (!plan.smooth.empty())
        throw ArgumentError(staged ? "SmoothQuant cannot be combined with sparsity, low-rank "
                                     "or structured pruning in one recipe yet"
                                   : "SmoothQuant needs a calibration set "
                                     "(CompressOptions::calibration)");
}

/// The input abs-max of the activations that static scales or outlier channels need,
/// calibrated on the base model. False when cancelled.
bool calibrateActivationRanges(const Model& base, const Plan& plan, const CompressOptions& opts,
                               Progress& progress,
                               std::map<std::string, std::vector<float>>& absMax,
                               std::map<std::string, std::vector<float>>& sumSq,
                               bool countedWeights = false) {
    std::vector<std::string> calibNames;
    for (const ActivationPlan& ap : plan.activations)
        if (!ap.act.perToken || ap.outliers) calibNames.push_back(ap.name);
    if (countedWeights) // the weight layers whose outlier columns are chosen by count
        for (const LayerPlan& lp : plan.layers)
            if (lp.quantize && lp.hasOutliers && lp.outliers.byCount() &&
                std::find(calibNames.begin(), calibNames.end(), lp.name) == calibNames.end())
                calibNames.push_back(lp.name);
    if (calibNames.empty()) return true;
    if (!base.hasTokenizer()) {
        const auto at =
            std::find_if(plan.activations.begin(), plan.activations.end(),
                         [&](const ActivationPlan& a) { return a.name == calibNames[0]; });
        if (at == plan.activations.end()) { // a weight layer's counted outlier columns
            const auto lt =
                std::find_if(plan.layers.begin(), plan.layers.end(),
                             [&](const LayerPlan& l) { return l.name == calibNames[0]; });
            throw RecipeError(lt != plan.layers.end() ? lt->outlierRule : -1, "outliers.count",
                              "outlier channels of " + calibNames[0] +
                                  " need calibration text, and the model has no tokenizer");
        }
        const ActivationPlan& ap = *at;
        const bool isStatic = !ap.act.perToken;
        const char* outlField =
            ap.outliers && ap.outliers->byCount() ? "outliers.count" : "outliers.threshold";
        throw RecipeError(
            isStatic ? ap.rule : ap.outlierRule, isStatic ? "activation.mode" : outlField,
            std::string(isStatic ? "static_per_tensor scales" : "outlier channels") + " of " +
                ap.name + " need calibration text, and the model has no tokenizer");
    }
    // Σ x² only where a count ranks by it (outliers.select "sum_sq").
    const bool wantSumSq =
        std::any_of(plan.activations.begin(), plan.activations.end(),
                    [](const ActivationPlan& a) { return a.outliers && a.outliers->sumSq; }) ||
        (countedWeights &&
         std::any_of(plan.layers.begin(), plan.layers.end(), [](const LayerPlan& l) {
             return l.quantize && l.hasOutliers && l.outliers.sumSq;
         }));
    absMax = calibrateInputAbsMax(base, calibNames, opts.activationCalibration, progress,
                                  wantSumSq ? &sumSq : nullptr);
    return !absMax.empty();
}

/// The runtime's activation quantisation of one linear: outlier channels and the static
/// abs-max of the rest from the calibrated ranges (when there are any).
ActQuantSpec activationSpec(const ActivationPlan& ap,
                            const std::map<std::string, std::vector<float>>& absMax,
                            const std::map<std::string, std::vector<float>>& sumSq) {
    ActQuantSpec s;
    s.bits = ap.act.bits;
    s.perToken = ap.act.perToken;
    s.clip = float(ap.act.clip);
    s.groupSize = ap.act.groupSize;
    if (ap.outliers) s.outlierBits = ap.outliers->bits;
    auto it = absMax.find(ap.name);
    if (it != absMax.end() && !it->second.empty()) {
        const auto& m = it->second;
        if (ap.outliers)
            if (const auto* score = outlierScore(*ap.outliers, ap.name, absMax, sumSq))
                s.outlierChannels = outlierChannelsOf(*ap.outliers, *score);
        size_t o = 0;
        for (size_t c = 0; c < m.size(); ++c) {
            if (o < s.outlierChannels.size() && s.outlierChannels[o] == int32_t(c)) {
                ++o;
                continue;
            }
            s.absMax = std::max(s.absMax, m[c]);
        }
    }
    return s;
}

/// Runtime quantisation: activation specs and KV-cache specs.
RuntimeQuant runtimeQuantOf(const Plan& plan,
                            const std::map<std::string, std::vector<float>>& absMax,
                            const std::map<std::string, std::vector<float>>& sumSq) {
    RuntimeQuant rq;
    for (const ActivationPlan& ap : plan.activations)
        rq.activations[ap.name] = activationSpec(ap, absMax, sumSq);
    for (const ActivationSparsityPlan& sp : plan.activationSparsity)
        rq.activations[sp.name].topk = float(sp.topk); // bits 16 when not also quantised
    for (const KvPlan& kp : plan.kv) {
        KvQuantSpec k;
        k.kBits = kp.kv.kBits;
        k.vBits = kp.kv.vBits;
        k.kGranularity = kp.kv.kGranularity;
        k.vGranularity = kp.kv.vGranularity;
        k.groupSize = kp.kv.groupSize;
        k.pastOnly = kp.kv.pastOnly;
        rq.kv[kp.layer] = k;
    }
    for (const KvPolicyPlan& pp : plan.kvPolicy) rq.kvPolicy[pp.layer] = pp.policy;
    return rq;
}

} // namespace

static CompressResult compressImpl(const Model& base, const Recipe& recipe, Progress& progress,
                                   const CompressOptions& options);

namespace {
/// "layers.2.mlp.down: non-finite weight at element 10" from a quantiser, with the file and the
/// file's tensor name in front (other errors unchanged).
[[noreturn]] void rethrowNamingWeightFile(const Model& base) {
    try {
        throw;
    } catch (const ArgumentError& e) {
        const std::string m = e.what();
        const size_t colon = m.find(": non-finite weight");
        if (colon == std::string::npos) throw;
        const std::string name = m.substr(0, colon);
        const TensorView* t = base.find(name);
        if (!t || t->file.empty()) throw ArgumentError(base.path() + ": " + m);
        throw ArgumentError(t->file + ": tensor '" + t->fileName + "' (" + name + ")" +
                            m.substr(colon));
    }
}
} // namespace

CompressResult compress(const Model& base, const Recipe& recipe, Progress& progress,
                        const CompressOptions& options) {
    try {
        if (recipe.rotation) return compressRotated(base, recipe, progress, options);
        return compressImpl(base, recipe, progress, options);
    } catch (const ArgumentError&) {
        rethrowNamingWeightFile(base);
    }
}

static CompressResult compressImpl(const Model& base, const Recipe& recipe, Progress& progress,
                                   const CompressOptions& options) {
    CompressOptions opts = options;
    std::optional<Imatrix> ownImatrix;
    if (!useRecipeImatrix(base, recipe, opts, ownImatrix, progress)) {
        CompressResult c;
        c.status = Status::Cancelled;
        return c;
    }
    const auto t0 = std::chrono::steady_clock::now();
    CompressResult res;
    PlanOptions po;
    const bool calibrated = opts.calibration && !opts.calibration->empty();
    po.hasCalibration = opts.hasCalibration || calibrated;
    res.plan = planRecipe(recipe, base, po);
    const bool staged = isStaged(res.plan);
    std::unique_ptr<CompressedModel> cm;
    // Outlier channels chosen by count (Atom): calibrated first, so that the weight columns and
    // the activation channels set apart are the same.
    std::map<std::string, std::vector<float>> absMax, sumSq;
    std::map<std::string, std::vector<int32_t>> counted;
    const bool early =
        calibrated && !staged &&
        std::any_of(res.plan.layers.begin(), res.plan.layers.end(), [](const LayerPlan& l) {
            return l.quantize && l.hasOutliers && l.outliers.byCount();
        });
    if (early) {
        if (!calibrateActivationRanges(base, res.plan, opts, progress, absMax, sumSq, true)) {
            res.status = Status::Cancelled;
            return res;
        }
        for (const LayerPlan& lp : res.plan.layers)
            if (lp.quantize && lp.hasOutliers && lp.outliers.byCount())
                if (const auto* score = outlierScore(lp.outliers, lp.name, absMax, sumSq))
                    counted[lp.name] = outlierChannelsOf(lp.outliers, *score);
        opts.outlierChannels = &counted;
    }
    if (calibrated && !staged) {
        CompressResult q = compressCalibrated(base, recipe, std::move(res.plan), progress, opts);
        if (q.status == Status::Cancelled || !q.model) return q;
        cm = std::move(q.model);
        res = std::move(q);
    } else {
        checkStagedPlan(res.plan, staged);
        cm = std::make_unique<CompressedModel>(base);
        cm->recipe = recipe;
        cm->baseFingerprint = stats::modelFingerprint(base);
        if (applyWeightStages(base, res.plan, opts, *cm, res.layers, res.structured,
                              res.captureSeconds, progress) == Status::Cancelled) {
            res.status = Status::Cancelled;
            return res;
        }
    }
    // Activation ranges are calibrated where static scales or outlier channels are asked for.
    if (!early && !calibrateActivationRanges(base, res.plan, opts, progress, absMax, sumSq)) {
        res.status = Status::Cancelled;
        return res;
    }
    cm->setRuntimeQuant(runtimeQuantOf(res.plan, absMax, sumSq));
    // WKVQuant: the KV smoothing is searched on the compressed model (weights as stored; with
    // kv.crr_weights the block's weights are learned with it and may be replaced).
    if (calibrateWkvQuant(base, res.plan, *cm, opts.calibration, progress, res.kvCalibration,
                          &res.layers) == Status::Cancelled) {
        res.status = Status::Cancelled;
        return res;
    }
    progress.report(1.0, "done");
    res.model = std::move(cm);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

namespace {

json finiteOrNull(double v) {
    return std::isfinite(v) ? json(v) : json(nullptr);
}

/// One layer's report: errors, sizes and each stage applied.
json layerReportJson(const LayerReport& l, const CompressedModel* model) {
    json lj = {{"name", l.name},
               {"shape", l.shape},
               {"scheme", l.scheme},
               {"rule", l.rule},
               {"bits", l.bits},
               {"bits_per_weight", l.bitsPerWeight},
               {"storage_bits", l.storageBits},
               {"mse", l.error.mse},
               {"sqnr_db", finiteOrNull(l.error.sqnrDb)},
               {"rel_error", finiteOrNull(l.error.relError)},
               {"max_abs_error", l.error.maxAbs},
               {"output_rel_error", finiteOrNull(l.outputRelError)},
               {"outlier_columns", l.outlierColumns},
               {"details", l.details},
               {"seconds", l.seconds}};
    lj["params"] = l.params;
    if (model)
        if (const TensorView* bt = model->base().find(l.name)) lj["base_params"] = bt->numel();
    lj["output_rel_error"] = finiteOrNull(l.outputRelError);
    auto stage = [&](const LayerReport::Stage& s) {
        return json{{"settings", s.describe},
                    {"rel_error", finiteOrNull(s.relError)},
                    {"output_rel_error", finiteOrNull(s.outputRelError)}};
    };
    if (!l.structured.empty()) lj["structured"] = l.structured;
    if (l.lowrank.applied) {
        lj["lowrank"] = stage(l.lowrank);
        lj["lowrank"]["rank"] = l.rank;
    }
    if (l.sparsity.applied) {
        lj["sparsity"] = stage(l.sparsity);
        lj["sparsity"]["ratio"] = l.sparsityRatio;
        lj["sparsity"]["metadata_bits"] = l.metadataBits;
    }
    if (l.quant.applied) lj["quant"] = stage(l.quant);
    return lj;
}

json structuredReportJson(const StructuredReport& s) {
    return {{"layer", s.layer},
            {"score", s.score},
            {"mlp_channels_kept", s.mlpKept},
            {"mlp_channels", s.mlpTotal},
            {"kv_groups_kept", s.groupsKept},
            {"kv_groups", s.groupsTotal},
            {"heads_kept", s.headsKept},
            {"heads", s.headsTotal}};
}

/// A linear's activation quantisation, with its calibrated ranges when the runtime has them.
json activationReportJson(const ActivationPlan& a, const RuntimeQuant* rq) {
    json aj = {{"name", a.name},
               {"bits", a.act.bits},
               {"mode", a.act.perToken ? "dynamic_per_token" : "static_per_tensor"},
               {"clip", a.act.clip},
               {"scheme", a.act.describe()},
               {"rule", a.rule}};
    if (a.outliers) aj["outlier_threshold"] = a.outliers->threshold;
    if (const ActQuantSpec* s = rq ? rq->activation(a.name) : nullptr) {
        if (!s->perToken) aj["abs_max"] = s->absMax;
        aj["outlier_channels"] = s->outlierChannels;
    }
    return aj;
}

json activationSparsityReportJson(const ActivationSparsityPlan& a) {
    return {
        {"name", a.name}, {"topk", a.topk}, {"kept", a.kept}, {"cols", a.cols}, {"rule", a.rule}};
}

/// The MACs per token top-K leaves to the weight products, as planned (not measured): over the
/// sparsified linears, and over all linear weights of the model (lm_head, or the tied embedding,
/// included; MoE experts all counted, so an upper bound of what runs there).
json activationSparsityMacsJson(const Plan& plan, const Model& base) {
    int64_t spDense = 0, spKept = 0, modelDense = 0;
    bool head = false;
    for (const TensorView& t : base.tensors()) {
        if (t.shape.size() != 2 || t.name == "embed" || !isTargetable(t.name)) continue;
        modelDense += t.shape[0] * t.shape[1];
        head = head || t.name == "lm_head";
    }
    if (!head)
        if (const TensorView* e = base.find("embed"); e && e->shape.size() == 2)
            modelDense += e->shape[0] * e->shape[1];
    for (const ActivationSparsityPlan& a : plan.activationSparsity) {
        const TensorView* t = base.find(a.name);
        const int64_t rows = t ? t->shape[0] : 0;
        spDense += rows * a.cols;
        spKept += rows * a.kept;
    }
    return {{"sparse_linears_dense_per_token", spDense},
            {"sparse_linears_kept_per_token", spKept},
            {"model_dense_per_token", modelDense},
            {"model_kept_per_token", modelDense - (spDense - spKept)},
            {"model_kept_fraction",
             modelDense > 0 ? double(modelDense - (spDense - spKept)) / double(modelDense) : 1.0}};
}

json kvReportJson(const KvPlan& k) {
    return {{"layer", k.layer},
            {"k_bits", k.kv.kBits},
            {"v_bits", k.kv.vBits},
            {"k_granularity", granName(k.kv.kGranularity)},
            {"v_granularity", granName(k.kv.vGranularity)},
            {"group_size", k.kv.groupSize},
            {"scheme", k.kv.describe()},
            {"k_bits_per_value",
             KvSettings::bitsPerValue(k.kv.kBits, k.kv.kGranularity, k.kv.groupSize, k.width)},
            {"v_bits_per_value",
             KvSettings::bitsPerValue(k.kv.vBits, k.kv.vGranularity, k.kv.groupSize, k.width)},
            {"rule", k.rule}};
}

/// The model's totals (quantised layers, whole model, base) and sizes per block into j.
void addTotals(json& j, const CompressResult& r) {
    const SizeInfo q = r.model->compressedSize(), tot = r.model->totalSize();
    int64_t baseParams = 0;
    for (const auto& t : r.model->base().tensors()) baseParams += t.numel();
    const SizeInfo base{baseParams, r.model->base().storedBytes() * 8};
    json blocks = json::object();
    for (const auto& [b, s] : r.model->layerSizes())
        blocks[b] = {
            {"params", s.params}, {"bits", s.bits}, {"bits_per_weight", s.bitsPerWeight()}};
    j["totals"] = {
        {"quantized_params", q.params},
        {"quantized_bits", q.bits},
        {"quantized_bits_per_weight", q.bitsPerWeight()},
        {"model_params", tot.params},
        {"model_bytes", tot.bytes()},
        {"model_bits_per_weight", tot.bitsPerWeight()},
        {"base_bytes", base.bytes()},
        {"base_bits_per_weight", base.bitsPerWeight()},
        {"base_params", baseParams},
        {"bits_per_base_weight", double(tot.bits) / double(std::max<int64_t>(baseParams, 1))},
        {"seconds", r.seconds},
        {"capture_seconds", r.captureSeconds}};
    j["blocks"] = blocks;
}

} // namespace

json compressReportJson(const CompressResult& r) {
    json layers = json::array();
    for (const auto& l : r.layers) layers.push_back(layerReportJson(l, r.model.get()));
    json structured = json::array();
    for (const auto& s : r.structured) structured.push_back(structuredReportJson(s));
    json acts = json::array(), kvs = json::array();
    const RuntimeQuant* rq = r.model ? r.model->runtimeQuant() : nullptr;
    for (const auto& a : r.plan.activations) acts.push_back(activationReportJson(a, rq));
    for (const auto& k : r.plan.kv) {
        kvs.push_back(kvReportJson(k));
        if (auto it = r.kvCalibration.find(k.layer); it != r.kvCalibration.end())
            kvs.back()["wkvquant"] = it->second;
    }
    json asp = json::array();
    for (const auto& a : r.plan.activationSparsity) asp.push_back(activationSparsityReportJson(a));
    json rules = json::array();
    for (const auto& m : r.plan.matches)
        rules.push_back({{"rule", m.rule}, {"matched", m.layers.size()}, {"layers", m.layers}});
    json j = {{"status", r.status == Status::Ok ? "ok" : "cancelled"}, {"layers", layers}};
    if (r.model) addTotals(j, r);
    if (!structured.empty()) j["structured"] = structured;
    j["activations"] = acts;
    j["kv"] = kvs;
    if (!r.plan.kvPolicy.empty()) {
        json pol = json::array();
        for (const auto& p : r.plan.kvPolicy)
            pol.push_back({{"layer", p.layer},
                           {"policy", kvPolicyName(p.policy.kind)},
                           {"scheme", p.describe()},
                           {"rule", p.rule}});
        j["kv_policy"] = pol;
    }
    j["activation_sparsity"] = asp;
    if (r.model && !asp.empty())
        j["activation_sparsity_macs"] = activationSparsityMacsJson(r.plan, r.model->base());
    if (!r.rotation.is_null()) j["rotation"] = r.rotation;
    j["rules"] = rules;
    j["warnings"] = r.plan.warnings;
    return j;
}

} // namespace lcw::compress
