#include "core/compress/compressed_model.h"
#include "core/common/json_file.h"
#include "core/compress/pipeline.h"

#include "core/common/dtype.h"
#include "core/io/atomic_writer.h"
#include "core/io/quants.h"
#include "core/io/safetensors.h"
#include "core/stats/fingerprint.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

namespace lcw::compress {

using json = nlohmann::ordered_json;

namespace {

constexpr int kOverlayVersion = 1;

json settingsJson(const WeightSettings& s) {
    return {{"bits", s.bits},
            {"format", weightFormatName(s.format)},
            {"symmetric", s.symmetric},
            {"granularity", granularityName(s.granularity)},
            {"group_size", s.groupSize},
            {"method", weightMethodName(s.method)}};
}

WeightSettings settingsFromJson(const nlohmann::json& j, const std::string& where) {
    try {
        WeightSettings s;
        s.bits = j.at("bits").get<int>();
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
        s.groupSize = j.at("group_size").get<int64_t>();
        const auto m = j.at("method").get<std::string>();
        bool found = false;
        for (int i = 0; i <= int(WeightMethod::OmniQuant); ++i)
            if (m == weightMethodName(WeightMethod(i))) s.method = WeightMethod(i), found = true;
        if (!found) throw FormatError(where, "unknown method '" + m + "'");
        if (s.bits < 2 || s.bits > 8 || s.groupSize < 1)
            throw FormatError(where, "bits or group_size out of range");
        return s;
    } catch (const json::exception& e) {
        throw FormatError(where, std::string("bad weight settings: ") + e.what());
    }
}

std::vector<float> floatRows(const TensorView& t) {
    std::vector<float> out(size_t(t.numel()));
    if (t.dtype == DType::F32) {
        std::memcpy(out.data(), t.data, out.size() * sizeof(float));
        return out;
    }
    const int64_t rows = t.rows(), cols = t.cols();
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
    for (int64_t r = 0; r < rows; ++r)
        dequantizeRow(t.dtype, t.row(r), out.data() + r * cols, cols);
    return out;
}

std::string blockOf(const std::string& name) {
    if (name.rfind("layers.", 0) == 0) {
        const auto dot = name.find('.', 7);
        return name.substr(0, dot);
    }
    return "other";
}

} // namespace

CompressedModel::CompressedModel(const Model& base) : m_base(base) {}
CompressedModel::~CompressedModel() = default;

const TensorView* CompressedModel::find(std::string_view canonical) const {
    auto it = m_tensors.find(canonical);
    if (it != m_tensors.end()) return &it->second->view;
    return m_base.find(canonical);
}

void CompressedModel::setTensor(const std::string& name, PackedTensor packed) {
    const TensorView* b = m_base.find(name);
    if (!b || b->shape.size() != 2)
        throw ArgumentError("overlay: the base model has no 2-D tensor '" + name + "'");
    if (b->shape[0] != packed.rows || b->shape[1] != packed.cols)
        throw ArgumentError("overlay: tensor '" + name + "' has shape [" +
                            std::to_string(packed.rows) + ", " + std::to_string(packed.cols) +
                            "] but the base has [" + std::to_string(b->shape[0]) + ", " +
                            std::to_string(b->shape[1]) + "]");
    auto t = std::make_unique<CompressedTensor>();
    t->values = dequantize(packed, name);
    t->packed = std::move(packed);
    t->view = *b;
    t->view.dtype = DType::F32;
    t->view.data = reinterpret_cast<const std::byte*>(t->values.data());
    t->view.nbytes = t->values.size() * sizeof(float);
    t->view.file.clear();
    m_tensors[name] = std::move(t);
}

void CompressedModel::setFloatTensor(const std::string& name, std::vector<float> values) {
    const TensorView* b = m_base.find(name);
    if (!b) throw ArgumentError("overlay: the base model has no tensor '" + name + "'");
    if (int64_t(values.size()) != b->numel())
        throw ArgumentError("overlay: tensor '" + name + "' gets " + std::to_string(values.size()) +
                            " values but has " + std::to_string(b->numel()));
    auto t = std::make_unique<CompressedTensor>();
    t->isFloat = true;
    t->values = std::move(values);
    t->view = *b;
    t->view.dtype = DType::F32;
    t->view.data = reinterpret_cast<const std::byte*>(t->values.data());
    t->view.nbytes = t->values.size() * sizeof(float);
    t->view.file.clear();
    m_tensors[name] = std::move(t);
}

const CompressedTensor* CompressedModel::compressed(std::string_view name) const {
    auto it = m_tensors.find(name);
    return it == m_tensors.end() ? nullptr : it->second.get();
}

std::vector<std::string> CompressedModel::replacedNames() const {
    std::vector<std::string> out;
    for (const auto& t : m_base.tensors())
        if (m_tensors.count(t.name)) out.push_back(t.name);
    return out;
}

SizeInfo CompressedModel::tensorSize(const std::string& name) const {
    const auto* c = compressed(name);
    if (c && !c->isFloat) return {c->packed.rows * c->packed.cols, c->packed.storageBits()};
    const TensorView* t = m_base.find(name);
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
    return out;
}

SizeInfo CompressedModel::totalSize() const {
    SizeInfo tot;
    for (const auto& t : m_base.tensors()) {
        const SizeInfo s = tensorSize(t.name);
        tot.params += s.params;
        tot.bits += s.bits;
    }
    return tot;
}

SizeInfo CompressedModel::compressedSize() const {
    SizeInfo tot;
    for (const auto& [name, t] : m_tensors) {
        if (t->isFloat) continue;
        tot.params += t->packed.rows * t->packed.cols;
        tot.bits += t->packed.storageBits();
    }
    return tot;
}

void CompressedModel::save(const std::string& dir) const {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    std::vector<TensorDesc> descs;
    struct Src {
        const void* data;
        uint64_t bytes;
    };
    std::vector<Src> srcs;
    json tensors = json::array();
    for (const auto& name : replacedNames()) {
        const CompressedTensor* ct = compressed(name);
        if (ct->isFloat) {
            descs.push_back({name + ".values", DType::F32, ct->view.shape});
            srcs.push_back({ct->values.data(), ct->values.size() * sizeof(float)});
            tensors.push_back({{"name", name}, {"shape", ct->view.shape}, {"float", true}});
            continue;
        }
        const PackedTensor& p = ct->packed;
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
        if (!p.outlierCols.empty()) {
            descs.push_back({name + ".outlier_cols", DType::I32, {int64_t(p.outlierCols.size())}});
            srcs.push_back({p.outlierCols.data(), p.outlierCols.size() * 4});
            descs.push_back(
                {name + ".outlier_values", DType::F16, {int64_t(p.outlierValues.size())}});
            srcs.push_back({p.outlierValues.data(), p.outlierValues.size() * 2});
        }
        tensors.push_back({{"name", name},
                           {"shape", {p.rows, p.cols}},
                           {"weight", settingsJson(p.settings)},
                           {"storage_bits", p.storageBits()}});
    }
    writeSafetensors(
        (fs::path(dir) / "overlay.safetensors").string(), descs,
        [&](size_t i, std::byte* dst, uint64_t n) { std::memcpy(dst, srcs[i].data, n); },
        {{"lcw_overlay", std::to_string(kOverlayVersion)}});
    json j = {{"lcw_overlay", kOverlayVersion},
              {"base", {{"path", m_base.path()}, {"fingerprint", baseFingerprint}}},
              {"recipe", recipe.toJson()},
              {"tensors", tensors}};
    AtomicFileWriter w((fs::path(dir) / "overlay.json").string());
    w.write(j.dump(2) + "\n");
    w.commit();
}

std::unique_ptr<CompressedModel> CompressedModel::load(const std::string& dir, const Model& base) {
    namespace fs = std::filesystem;
    const std::string jpath = (fs::path(dir) / "overlay.json").string();
    if (!fs::exists(jpath)) throw Error(jpath + ": cannot open (not an lcw overlay folder?)");
    const nlohmann::json j = readJsonFile(jpath);
    if (!j.is_object() || j.value("lcw_overlay", 0) != kOverlayVersion)
        throw FormatError(jpath,
                          "not an lcw overlay of version " + std::to_string(kOverlayVersion));
    auto m = std::make_unique<CompressedModel>(base);
    try {
        m->baseFingerprint = j.at("base").at("fingerprint").get<std::string>();
        m->recipe = Recipe::fromJson(j.at("recipe"));
    } catch (const json::exception& e) {
        throw FormatError(jpath, std::string("bad overlay description: ") + e.what());
    }
    const std::string fp = stats::modelFingerprint(base);
    if (fp != m->baseFingerprint)
        throw Error(jpath + ": the overlay was made for another base model (fingerprint " +
                    m->baseFingerprint + ", this model has " + fp + ")");
    const SafetensorsSet st = readSafetensors((fs::path(dir) / "overlay.safetensors").string());
    if (!j.contains("tensors") || !j["tensors"].is_array())
        throw FormatError(jpath, "missing tensors list");
    for (const auto& tj : j["tensors"]) {
        PackedTensor p;
        std::string name;
        try {
            name = tj.at("name").get<std::string>();
            if (tj.value("float", false)) {
                const TensorView* v = st.find(name + ".values");
                if (!v || v->dtype != DType::F32)
                    throw FormatError(jpath, "overlay.safetensors lacks " + name + ".values");
                std::vector<float> vals(v->nbytes / 4);
                std::memcpy(vals.data(), v->data, vals.size() * 4);
                try {
                    m->setFloatTensor(name, std::move(vals));
                } catch (const Error& e) {
                    throw FormatError(jpath, e.what());
                }
                continue;
            }
            p.rows = tj.at("shape").at(0).get<int64_t>();
            p.cols = tj.at("shape").at(1).get<int64_t>();
        } catch (const json::exception& e) {
            throw FormatError(jpath, std::string("bad tensor entry: ") + e.what());
        }
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
        try {
            m->setTensor(name, std::move(p));
        } catch (const Error& e) {
            throw FormatError(jpath, e.what());
        }
    }
    return m;
}

CompressResult compress(const Model& base, const Recipe& recipe, Progress& progress,
                        const CompressOptions& opts) {
    const auto t0 = std::chrono::steady_clock::now();
    CompressResult res;
    PlanOptions po;
    const bool calibrated = opts.calibration && !opts.calibration->empty();
    po.hasCalibration = opts.hasCalibration || calibrated;
    res.plan = planRecipe(recipe, base, po);
    if (calibrated) return compressCalibrated(base, recipe, std::move(res.plan), progress, opts);
    for (const auto& lp : res.plan.layers)
        if (methodNeedsCalibration(lp.weight.method))
            throw ArgumentError(lp.name + ": method '" + weightMethodName(lp.weight.method) +
                                "' needs a calibration set (CompressOptions::calibration)");
    if (!res.plan.smooth.empty())
        throw ArgumentError("SmoothQuant needs a calibration set (CompressOptions::calibration)");
    auto cm = std::make_unique<CompressedModel>(base);
    cm->recipe = recipe;
    cm->baseFingerprint = stats::modelFingerprint(base);
    const size_t n = res.plan.layers.size();
    for (size_t i = 0; i < n; ++i) {
        const LayerPlan& lp = res.plan.layers[i];
        if (!progress.report(double(i) / double(std::max<size_t>(n, 1)), lp.name)) {
            res.status = Status::Cancelled;
            return res;
        }
        const auto l0 = std::chrono::steady_clock::now();
        const TensorView& t = base.get(lp.name);
        const std::vector<float> w = floatRows(t);
        PackedTensor p = quantize(w.data(), lp.rows, lp.cols, lp.weight, lp.name);
        LayerReport lr;
        lr.name = lp.name;
        lr.shape = t.shape;
        lr.scheme = lp.weight.describe();
        lr.rule = lp.origin.count("weight") ? lp.origin.at("weight") : -1;
        lr.bits = lp.weight.bits;
        lr.bitsPerWeight = p.bitsPerWeight();
        lr.storageBits = p.storageBits();
        cm->setTensor(lp.name, std::move(p));
        const auto& vals = cm->compressed(lp.name)->values;
        lr.error = errorStats(w.data(), vals.data(), int64_t(w.size()));
        lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - l0).count();
        res.layers.push_back(std::move(lr));
    }
    progress.report(1.0, "done");
    res.model = std::move(cm);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

json compressReportJson(const CompressResult& r) {
    json layers = json::array();
    for (const auto& l : r.layers) {
        auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
        layers.push_back({{"name", l.name},
                          {"shape", l.shape},
                          {"scheme", l.scheme},
                          {"rule", l.rule},
                          {"bits", l.bits},
                          {"bits_per_weight", l.bitsPerWeight},
                          {"storage_bits", l.storageBits},
                          {"mse", l.error.mse},
                          {"sqnr_db", num(l.error.sqnrDb)},
                          {"rel_error", num(l.error.relError)},
                          {"max_abs_error", l.error.maxAbs},
                          {"output_rel_error", num(l.outputRelError)},
                          {"outlier_columns", l.outlierColumns},
                          {"details", l.details},
                          {"seconds", l.seconds}});
    }
    json rules = json::array();
    for (const auto& m : r.plan.matches)
        rules.push_back({{"rule", m.rule}, {"matched", m.layers.size()}, {"layers", m.layers}});
    json j = {{"status", r.status == Status::Ok ? "ok" : "cancelled"}, {"layers", layers}};
    if (r.model) {
        const SizeInfo q = r.model->compressedSize(), tot = r.model->totalSize();
        const SizeInfo base{tot.params, r.model->base().storedBytes() * 8};
        json blocks = json::object();
        for (const auto& [b, s] : r.model->layerSizes())
            blocks[b] = {
                {"params", s.params}, {"bits", s.bits}, {"bits_per_weight", s.bitsPerWeight()}};
        j["totals"] = {{"quantized_params", q.params},
                       {"quantized_bits", q.bits},
                       {"quantized_bits_per_weight", q.bitsPerWeight()},
                       {"model_params", tot.params},
                       {"model_bytes", tot.bytes()},
                       {"model_bits_per_weight", tot.bitsPerWeight()},
                       {"base_bytes", base.bytes()},
                       {"base_bits_per_weight", base.bitsPerWeight()},
                       {"seconds", r.seconds},
                       {"capture_seconds", r.captureSeconds}};
        j["blocks"] = blocks;
    }
    j["rules"] = rules;
    j["warnings"] = r.plan.warnings;
    return j;
}

} // namespace lcw::compress
