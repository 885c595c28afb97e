// Tests of the Hugging Face checkpoint writer (core/export/hf_checkpoint.h) with the
// compressed-tensors format (core/export/compressed_tensors.h).
//
// The written folders are decoded by a reader written here from the compressed-tensors sources
// (neuralmagic/compressed-tensors 0.12.2):
//   compressors/quantized_compressors/pack_quantized.py   pack_to_int32 / unpack_from_int32:
//       q + 2^(b-1) packed LSB first, 32 / b values per int32 along dim 1 (zero points: dim 0);
//       weight_packed, weight_scale, weight_zero_point, weight_shape
//   compressors/quantized_compressors/naive_quantized.py  weight in int8 / float8_e4m3fn
//   quantization/lifecycle/forward.py                     dequantize: (x_q - zp) * scale
//   compressors/sparse_compressors/sparse_24_bitmask.py / sparse_bitmask.py, utils/helpers.py
//       pack_bitmasks (numpy.packbits bitorder="little"), compressed / bitmask / shape
//   quantization/quant_args.py, quant_scheme.py, quant_config.py, config/base.py, base.py
//       the enums and keys checked in checkConfig()
// and compared value for value with compress::dequantize of the overlay's packed tensors
// (CompressedTensor::values()).
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/export/compressed_tensors.h"
#include "core/export/gguf_export.h"
#include "core/export/gptq_awq.h"
#include "core/export/hf_checkpoint.h"
#include "core/io/quants.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest/QtTest>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

using namespace lcw;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string readFile(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::unique_ptr<Model> load(const std::string& path) {
    return Model::load(path);
}

std::unique_ptr<compress::CompressedModel> compressWith(const Model& m, const json& recipe) {
    NullProgress p;
    compress::CompressResult r = compress::compress(m, compress::Recipe::fromJson(recipe), p);
    return std::move(r.model);
}

json oneRule(json rule) {
    rule["targets"] = {"*"};
    return {{"lcw_recipe", 1}, {"name", "t"}, {"rules", {rule}}};
}

// ---- an independent compressed-tensors reader ----

float halfToFloat(uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(m | 1024), e - 25);
    if (e == 31) v = m ? NAN : INFINITY;
    return float(s ? -v : v);
}
float e4m3ToFloat(uint8_t b) {
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    const double v = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(double(8 + m), e - 10);
    return float(s ? -v : v);
}

struct Folder {
    SafetensorsSet st;
    json config;
    const TensorView& get(const std::string& name) const {
        const TensorView* t = st.find(name);
        if (!t) throw std::runtime_error("missing tensor " + name);
        return *t;
    }
    bool has(const std::string& name) const { return st.find(name) != nullptr; }
};

Folder openFolder(const std::string& dir) {
    Folder f;
    f.st = readSafetensorsFolder(dir);
    f.config = json::parse(readFile(dir + "/config.json"));
    return f;
}

template <typename T> T at(const TensorView& t, int64_t i) {
    T v;
    std::memcpy(&v, t.data + size_t(i) * sizeof(T), sizeof(T));
    return v;
}

std::vector<float> floatsOf(const TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i)
        v[size_t(i)] = t.dtype == DType::F32   ? at<float>(t, i)
                       : t.dtype == DType::F16 ? halfToFloat(at<uint16_t>(t, i))
                                               : bf16ToF32(at<uint16_t>(t, i));
    return v;
}

/// Dense values [rows * cols] of a sparse-compressed weight, as raw element bytes.
std::vector<uint8_t> sparseDense(const Folder& f, const std::string& m, size_t elem, int64_t& rows,
                                 int64_t& cols) {
    const TensorView& shape = f.get(m + ".shape");
    rows = at<int64_t>(shape, 0);
    cols = at<int64_t>(shape, 1);
    const TensorView& bits = f.get(m + ".bitmask");
    const TensorView& comp = f.get(m + ".compressed");
    const int64_t mb = (cols + 7) / 8;
    std::vector<uint8_t> out(size_t(rows * cols) * elem, 0);
    size_t k = 0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            if (uint8_t(bits.data[size_t(r * mb + j / 8)]) >> (j % 8) & 1) {
                std::memcpy(out.data() + size_t(r * cols + j) * elem, comp.data + k * elem, elem);
                ++k;
            }
    if (int64_t(k) != comp.numel()) throw std::runtime_error(m + ": bitmask count mismatch");
    return out;
}

/// The config group of a module (nullptr when none).
const json* schemeOf(const Folder& f, const std::string& module) {
    const json& qc = f.config["quantization_config"];
    if (!qc.contains("config_groups")) return nullptr;
    for (auto& [name, g] : qc["config_groups"].items())
        for (const auto& t : g["targets"])
            if (t == module) return &g;
    return nullptr;
}

bool sparseTarget(const Folder& f, const std::string& module) {
    const json& sc = f.config["quantization_config"]["sparsity_config"];
    if (!sc.contains("format") || sc["format"] == "dense") return false;
    for (const auto& t : sc["targets"])
        if (t == module) return true;
    return false;
}

/// The dense float weight of `module` ([rows, cols]) decoded from the folder.
std::vector<float> decodeModule(const Folder& f, const std::string& module, int64_t& rows,
                                int64_t& cols) {
    const json* g = schemeOf(f, module);
    if (!g) {
        if (sparseTarget(f, module)) {
            const auto dense = sparseDense(f, module, 4, rows, cols);
            std::vector<float> v(size_t(rows * cols));
            std::memcpy(v.data(), dense.data(), dense.size());
            return v;
        }
        const TensorView& w = f.get(module + ".weight");
        rows = w.shape[0];
        cols = w.shape[1];
        return floatsOf(w);
    }
    const json& wa = (*g)["weights"];
    const int b = wa["num_bits"];
    const std::string fmt = (*g)["format"];
    const std::string strategy = wa["strategy"];
    const bool sym = wa["symmetric"];
    std::vector<int32_t> q; // signed codes (int) or raw e4m3 bytes (float)
    if (fmt == "pack-quantized") {
        const TensorView& shape = f.get(module + ".weight_shape");
        rows = at<int64_t>(shape, 0);
        cols = at<int64_t>(shape, 1);
        const TensorView& p = f.get(module + ".weight_packed");
        if (p.dtype != DType::I32) throw std::runtime_error("weight_packed not int32");
        const int pf = 32 / b;
        q.resize(size_t(rows * cols));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) {
                const uint32_t word = at<uint32_t>(p, r * p.shape[1] + j / pf);
                q[size_t(r * cols + j)] =
                    int32_t((word >> (b * (j % pf))) & ((1u << b) - 1)) - (1 << (b - 1));
            }
    } else {
        const bool fp = wa["type"] == "float";
        std::vector<uint8_t> raw;
        if (sparseTarget(f, module)) {
            raw = sparseDense(f, module, 1, rows, cols);
        } else {
            const TensorView& w = f.get(module + ".weight");
            if (w.dtype != (fp ? DType::F8_E4M3 : DType::I8)) throw std::runtime_error("dtype");
            rows = w.shape[0];
            cols = w.shape[1];
            raw.assign(reinterpret_cast<const uint8_t*>(w.data),
                       reinterpret_cast<const uint8_t*>(w.data) + w.nbytes);
        }
        q.resize(raw.size());
        for (size_t i = 0; i < raw.size(); ++i)
            q[i] = fp ? int32_t(raw[i]) : int32_t(int8_t(raw[i]));
    }
    const TensorView& sc = f.get(module + ".weight_scale");
    if (sc.dtype != DType::F16) throw std::runtime_error("scale dtype");
    const int64_t ng = strategy == "tensor" ? 1 : sc.shape[1];
    // forward.py infers the group size from the shapes
    const int64_t gsz = strategy == "group" ? cols / ng : cols;
    if (strategy == "group" && ng > 1 && wa["group_size"] != gsz)
        throw std::runtime_error("group_size does not match the shapes");
    std::vector<int32_t> zp(size_t(strategy == "tensor" ? 1 : rows * ng), 0);
    if (!sym) {
        const TensorView& z = f.get(module + ".weight_zero_point");
        if (fmt == "pack-quantized" && strategy != "tensor") {
            const int pf = 32 / b;
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t gi = 0; gi < ng; ++gi) {
                    const uint32_t word = at<uint32_t>(z, (r / pf) * ng + gi);
                    zp[size_t(r * ng + gi)] =
                        int32_t((word >> (b * (r % pf))) & ((1u << b) - 1)) - (1 << (b - 1));
                }
        } else {
            for (size_t i = 0; i < zp.size(); ++i) zp[i] = at<int8_t>(z, int64_t(i));
        }
    }
    // actorder "group": weight_g_idx names each input column's group (forward.py's
    // scale[:, g_idx]).
    std::vector<int64_t> gidx(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) gidx[size_t(j)] = j / gsz;
    if (f.has(module + ".weight_g_idx")) {
        const TensorView& g = f.get(module + ".weight_g_idx");
        if (g.dtype != DType::I32 || g.shape != std::vector<int64_t>{cols})
            throw std::runtime_error("weight_g_idx is not i32 [cols]");
        for (int64_t j = 0; j < cols; ++j) gidx[size_t(j)] = at<int32_t>(g, j);
    }
    std::vector<float> out(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
            const size_t gi = strategy == "tensor" ? 0 : size_t(r * ng + gidx[size_t(j)]);
            const float s = halfToFloat(at<uint16_t>(sc, int64_t(gi)));
            const int32_t x = q[size_t(r * cols + j)];
            out[size_t(r * cols + j)] =
                wa["type"] == "float" ? s * e4m3ToFloat(uint8_t(x)) : s * float(x - zp[gi]);
        }
    return out;
}

/// The workbench's values of an HF module: its parts' values stacked in order (the contiguous
/// fused layouts of the test models), Conv1D transposed back to the file's [in, out].
std::vector<float> expectedValues(const compress::CompressedModel& ov,
                                  const std::vector<std::string>& parts, bool conv1d) {
    std::vector<float> v;
    int64_t cols = 0;
    for (const auto& p : parts) {
        std::vector<float> x;
        if (const auto* ct = ov.compressed(p)) {
            x = ct->values();
            cols = ct->cols;
        } else {
            const TensorView& t = ov.base().get(p);
            x.resize(size_t(t.numel()));
            cols = t.cols();
            for (int64_t i = 0; i < t.numel(); ++i)
                x[size_t(i)] =
                    t.dtype == DType::F32 ? at<float>(t, i) : halfToFloat(at<uint16_t>(t, i));
        }
        v.insert(v.end(), x.begin(), x.end());
    }
    // GGUF / llama2.c llama: q and k rows in Meta's adjacent-pair order; the checkpoint has
    // Hugging Face's rotate_half order (HF row h*hd + i*hd/2 + j is lcw row h*hd + 2j + i).
    const ModelSpec& spec = ov.base().spec();
    if (spec.rope.interleaved && parts.size() == 1 &&
        (parts[0].ends_with(".attn.q") || parts[0].ends_with(".attn.k"))) {
        const int64_t hd = spec.headDim, rows = int64_t(v.size()) / cols;
        std::vector<float> p(v.size());
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t h = r / hd, i = r % hd;
            std::memcpy(p.data() + (h * hd + (i % 2) * (hd / 2) + i / 2) * cols,
                        v.data() + r * cols, size_t(cols) * 4);
        }
        v = std::move(p);
    }
    if (!conv1d) return v;
    const int64_t rows = int64_t(v.size()) / cols;
    std::vector<float> t(v.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) t[size_t(c * rows + r)] = v[size_t(r * cols + c)];
    return t;
}

/// Checks the quantization_config against compressed-tensors' definitions.
void checkConfig(const json& qc) {
    QCOMPARE(qc["quant_method"].get<std::string>(), std::string("compressed-tensors"));
    QCOMPARE(qc["version"].get<std::string>(), std::string(kCompressedTensorsVersion));
    QVERIFY(qc.contains("sparsity_config") && qc["sparsity_config"].is_object());
    const std::set<std::string> formats = {
        "dense",           "sparse-bitmask",      "sparse-24-bitmask", "int-quantized",
        "float-quantized", "naive-quantized",     "pack-quantized",    "marlin-24",
        "mixed-precision", "nvfp4-pack-quantized"};
    const std::set<std::string> strategies = {"tensor", "channel",      "group",    "block",
                                              "token",  "tensor_group", "attn_head"};
    // QuantizationArgs and QuantizationScheme forbid extra keys (ConfigDict(extra="forbid")).
    const std::set<std::string> argKeys = {
        "num_bits",        "type",    "symmetric", "group_size", "strategy",
        "block_structure", "dynamic", "actorder",  "observer",   "observer_kwargs"};
    const std::set<std::string> schemeKeys = {"targets", "weights", "input_activations",
                                              "output_activations", "format"};
    auto checkArgs = [&](const json& a) {
        for (auto& [k, v] : a.items()) QVERIFY2(argKeys.count(k), k.c_str());
        QVERIFY(a["type"] == "int" || a["type"] == "float");
        QVERIFY(strategies.count(a["strategy"].get<std::string>()));
        if (a["strategy"] == "group")
            QVERIFY(a["group_size"].get<int>() > 0);
        else
            QVERIFY(a["group_size"].is_null());
        if (a["strategy"] == "token") QVERIFY(a["dynamic"] == true);
        QVERIFY(a["actorder"].is_null() || a["actorder"] == "weight" || a["actorder"] == "group");
    };
    const json& sc = qc["sparsity_config"];
    if (!sc.empty()) {
        QVERIFY(formats.count(sc["format"].get<std::string>()));
        QVERIFY(sc["sparsity_structure"] == "2:4" || sc["sparsity_structure"] == "unstructured");
        QVERIFY(sc["targets"].is_array());
    }
    if (!qc.contains("config_groups")) return;
    QVERIFY(formats.count(qc["format"].get<std::string>()));
    QCOMPARE(qc["quantization_status"].get<std::string>(), std::string("compressed"));
    QVERIFY(qc["ignore"].is_array());
    QVERIFY(qc.contains("kv_cache_scheme"));
    int i = 0;
    for (auto& [name, g] : qc["config_groups"].items()) {
        QCOMPARE(name, "group_" + std::to_string(i++));
        for (auto& [k, v] : g.items()) QVERIFY2(schemeKeys.count(k), k.c_str());
        QVERIFY(g["targets"].is_array() && !g["targets"].empty());
        QVERIFY(formats.count(g["format"].get<std::string>()));
        checkArgs(g["weights"]);
        if (!g["input_activations"].is_null()) checkArgs(g["input_activations"]);
    }
}

struct Exported {
    std::unique_ptr<Model> base;
    std::unique_ptr<compress::CompressedModel> ov;
    HfCheckpointResult r;
    Folder f;
};

Exported exportWith(const std::string& model, const json& recipe, const std::string& out,
                    uint64_t shard = 5000000000ull) {
    Exported e;
    e.base = load(model);
    e.ov = compressWith(*e.base, recipe);
    const auto fmt = compressedTensorsFormat();
    HfCheckpointOptions o;
    o.outDir = out;
    o.maxShardBytes = shard;
    e.r = exportHfCheckpoint(*e.base, *e.ov, *fmt, o);
    e.f = openFolder(out);
    return e;
}

/// Every module of the report decodes to the workbench's values; copied tensors are the base's
/// bytes. Returns the number of modules written in the format.
int verifyAll(const Exported& e) {
    int written = 0;
    const bool hfBase = e.base->spec().sourceFormat == "safetensors";
    const SafetensorsSet base = hfBase ? readSafetensorsFolder(e.base->path()) : SafetensorsSet{};
    for (const auto& m : e.r.modules) {
        if (m.status == "copied") {
            if (!hfBase) continue;
            const TensorView& a = *base.find(m.module + ".weight");
            const TensorView& b = e.f.get(m.module + ".weight");
            if (a.nbytes != b.nbytes || std::memcmp(a.data, b.data, a.nbytes) != 0)
                throw std::runtime_error(m.module + ": copy differs");
            continue;
        }
        const bool conv1d = m.reason.find("Conv1D") != std::string::npos;
        int64_t rows = 0, cols = 0;
        const bool isWeight =
            e.f.has(m.module + ".weight") || schemeOf(e.f, m.module) || sparseTarget(e.f, m.module);
        if (!isWeight) continue; // a replaced tensor that is not a linear (checked elsewhere)
        const std::vector<float> got = decodeModule(e.f, m.module, rows, cols);
        const std::vector<float> want = expectedValues(*e.ov, m.canonical, conv1d);
        if (got.size() != want.size()) throw std::runtime_error(m.module + ": size differs");
        for (size_t i = 0; i < got.size(); ++i)
            if (!(got[i] == want[i]))
                throw std::runtime_error(m.module + ": value " + std::to_string(i) + " is " +
                                         std::to_string(got[i]) + ", the workbench's " +
                                         std::to_string(want[i]));
        written += m.status == "written";
        if (m.status == "written" && !schemeOf(e.f, m.module) && !sparseTarget(e.f, m.module))
            throw std::runtime_error(m.module + ": written but in no config group");
    }
    return written;
}

const HfModuleReport* reportOf(const HfCheckpointResult& r, const std::string& module) {
    for (const auto& m : r.modules)
        if (m.module == module) return &m;
    return nullptr;
}

} // namespace

class TestExportCompressedTensors : public QObject {
    Q_OBJECT
    std::string m_dir;

private slots:
    void initTestCase() { m_dir = lcwtest::tempDir("ct-export"); }
    void cleanupTestCase() { fs::remove_all(m_dir); }

    void storiesSchemes_data() {
        QTest::addColumn<QString>("recipe");
        QTest::addColumn<QString>("format");
        QTest::addColumn<int>("written");
        QTest::newRow("w4a16 asym g32") << QString(R"({"weight": {"bits": 4, "symmetric": false,
            "granularity": "group", "group_size": 32}})")
                                        << QString("pack-quantized") << 30;
        QTest::newRow("w8a16 sym channel") << QString(R"({"weight": {"bits": 8, "symmetric": true,
            "granularity": "channel"}})") << QString("pack-quantized")
                                           << 35;
        QTest::newRow("w4 asym tensor") << QString(R"({"weight": {"bits": 4, "symmetric": false,
            "granularity": "tensor"}})") << QString("pack-quantized")
                                        << 35;
        QTest::newRow("w3 asym g4 naive") << QString(R"({"weight": {"bits": 3, "symmetric": false,
            "granularity": "group", "group_size": 4}})")
                                          << QString("naive-quantized") << 35;
        QTest::newRow("fp8 channel") << QString(R"({"weight": {"format": "fp8_e4m3",
            "granularity": "channel"}})")
                                     << QString("naive-quantized") << 35;
        QTest::newRow("w8a8 dynamic") << QString(R"({"weight": {"bits": 8, "symmetric": true,
            "granularity": "channel"}, "activation": {"bits": 8, "mode": "dynamic_per_token"}})")
                                      << QString("int-quantized") << 35;
        QTest::newRow("fp8 + a8") << QString(R"({"weight": {"format": "fp8_e4m3",
            "granularity": "channel"}, "activation": {"bits": 8, "mode": "dynamic_per_token"}})")
                                  << QString("float-quantized") << 35;
        QTest::newRow("2:4 floats")
            << QString(R"({"sparsity": {"pattern": "2:4"}})") << QString("") << 35;
        QTest::newRow("2:4 + w8a8") << QString(R"({"sparsity": {"pattern": "2:4"}, "weight":
            {"bits": 8, "granularity": "channel"}, "activation": {"bits": 8}})")
                                    << QString("int-quantized") << 35;
        QTest::newRow("2:4 + w4a16 asym") << QString(R"({"sparsity": {"pattern": "2:4"}, "weight":
            {"bits": 4, "symmetric": false, "granularity": "channel"}})")
                                          << QString("pack-quantized") << 35;
        QTest::newRow("50% unstructured + fp8") << QString(R"({"sparsity": {"ratio": 0.5},
            "weight": {"format": "fp8_e4m3", "granularity": "channel"}})")
                                                << QString("naive-quantized") << 35;
    }
    void storiesSchemes() {
        QFETCH(QString, recipe);
        QFETCH(QString, format);
        QFETCH(int, written);
        const std::string out =
            m_dir + "/s-" + std::to_string(std::hash<std::string>()(recipe.toStdString()));
        const Exported e =
            exportWith(lcwtest::demoModelPath(), oneRule(json::parse(recipe.toStdString())), out);
        QCOMPARE(e.r.status, Status::Ok);
        const json& qc = e.f.config["quantization_config"];
        checkConfig(qc);
        if (!format.isEmpty()) QCOMPARE(qc["format"].get<std::string>(), format.toStdString());
        int n = 0;
        try {
            n = verifyAll(e);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }
        QCOMPARE(n, written);
        // The base config's keys are kept; the tokenizer files are copies.
        const json baseCfg = json::parse(readFile(lcwtest::demoModelPath() + "/config.json"));
        for (auto& [k, v] : baseCfg.items()) QCOMPARE(e.f.config[k], v);
        QCOMPARE(readFile(out + "/tokenizer.json"),
                 readFile(lcwtest::demoModelPath() + "/tokenizer.json"));
        QCOMPARE(readFile(out + "/tokenizer_config.json"),
                 readFile(lcwtest::demoModelPath() + "/tokenizer_config.json"));
        // Untouched tensors keep their names (embedding, norms).
        QVERIFY(e.f.has("model.embed_tokens.weight"));
        QVERIFY(e.f.has("model.norm.weight"));
    }

    void detailsOfSchemes() {
        // group 32 does not divide mlp.down's 172 inputs: floats, ignored, with the reason
        const Exported e =
            exportWith(lcwtest::demoModelPath(), compress::findPreset("W4A16-g32").recipe.toJson(),
                       m_dir + "/g32");
        const HfModuleReport* down = reportOf(e.r, "model.layers.0.mlp.down_proj");
        QVERIFY(down);
        QCOMPARE(down->status, std::string("float"));
        QVERIFY(down->reason.find("does not divide") != std::string::npos);
        const json& qc = e.f.config["quantization_config"];
        QVERIFY(std::find(qc["ignore"].begin(), qc["ignore"].end(),
                          "model.layers.0.mlp.down_proj") != qc["ignore"].end());
        QCOMPARE(e.f.get("model.layers.0.mlp.down_proj.weight").dtype, DType::F32);
        // pack-quantized tensors: names, dtypes, shapes as pack_quantized.py writes them
        const std::string q = "model.layers.0.self_attn.q_proj";
        QCOMPARE(e.f.get(q + ".weight_packed").dtype, DType::I32);
        QCOMPARE(e.f.get(q + ".weight_packed").shape, (std::vector<int64_t>{64, 8}));
        QCOMPARE(e.f.get(q + ".weight_scale").shape, (std::vector<int64_t>{64, 2}));
        QCOMPARE(e.f.get(q + ".weight_zero_point").dtype, DType::I32);
        QCOMPARE(e.f.get(q + ".weight_zero_point").shape, (std::vector<int64_t>{8, 2}));
        QCOMPARE(e.f.get(q + ".weight_shape").dtype, DType::I64);
        QVERIFY(!e.f.has(q + ".weight"));

        // NF4: not expressible, every linear in floats with the reason
        const Exported n =
            exportWith(lcwtest::demoModelPath(), compress::findPreset("NF4-g64").recipe.toJson(),
                       m_dir + "/nf4");
        QVERIFY(n.r.ignored.size() == 35);
        QVERIFY(reportOf(n.r, q)->reason.find("NF4") != std::string::npos);
        QVERIFY(!n.f.config["quantization_config"].contains("config_groups"));
        try {
            QCOMPARE(verifyAll(n), 0);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }

        // Static per-tensor activations: input_scale = clip * absMax / qmax
        const Exported s = exportWith(lcwtest::demoModelPath(), oneRule(json::parse(R"({
            "weight": {"bits": 8, "granularity": "channel"},
            "activation": {"bits": 8, "mode": "static_per_tensor"}})")),
                                      m_dir + "/static");
        const ActQuantSpec* a = s.ov->runtimeQuant()->activation("layers.0.attn.q");
        QVERIFY(a);
        QCOMPARE(at<float>(s.f.get(q + ".input_scale"), 0), a->clip * a->absMax / 127.0f);
        const json* g = schemeOf(s.f, q);
        QCOMPARE((*g)["input_activations"]["strategy"].get<std::string>(), std::string("tensor"));
        QCOMPARE((*g)["input_activations"]["dynamic"].get<bool>(), false);

        // 2:4 floats: sparse-24-bitmask tensors
        const Exported p =
            exportWith(lcwtest::demoModelPath(),
                       oneRule(json::parse(R"({"sparsity": {"pattern": "2:4"}})")), m_dir + "/24");
        const json& sc = p.f.config["quantization_config"]["sparsity_config"];
        QCOMPARE(sc["format"].get<std::string>(), std::string("sparse-24-bitmask"));
        QCOMPARE(sc["sparsity_structure"].get<std::string>(), std::string("2:4"));
        QCOMPARE(p.f.get(q + ".compressed").shape, (std::vector<int64_t>{64, 32}));
        QCOMPARE(p.f.get(q + ".bitmask").dtype, DType::U8);
        QCOMPARE(p.f.get(q + ".bitmask").shape, (std::vector<int64_t>{64, 8}));
        QCOMPARE(p.f.get(q + ".shape").shape, (std::vector<int64_t>{2, 1}));

        // The embedding (an nn.Embedding) stays in floats, with the reason; lm_head is a linear
        LCW_REQUIRE_SHARED("models/tiny-random/llama2_sp_f32/model/config.json");
        json er = oneRule(json::parse(R"({"weight": {"bits": 8, "granularity": "channel"}})"));
        er["rules"][0]["targets"] = {"embed", "lm_head"};
        const Exported em = exportWith(
            lcwtest::sharedPath("models/tiny-random/llama2_sp_f32/model"), er, m_dir + "/embed");
        QVERIFY(reportOf(em.r, "model.embed_tokens") && reportOf(em.r, "lm_head"));
        QCOMPARE(reportOf(em.r, "model.embed_tokens")->status, std::string("float"));
        QVERIFY(reportOf(em.r, "model.embed_tokens")->reason.find("embedding") !=
                std::string::npos);
        QCOMPARE(reportOf(em.r, "lm_head")->status, std::string("written"));
        try {
            QCOMPARE(verifyAll(em), 1);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }

        // Activations of a linear written as floats: a warning
        json ar = oneRule(json::parse(R"({"weight": {"bits": 8, "granularity": "channel"},
            "activation": {"bits": 8}})"));
        ar["rules"].push_back(
            {{"targets", {"layers.0.attn.q"}},
             {"weight",
              {{"format", "nf4"}, {"bits", 4}, {"granularity", "group"}, {"group_size", 32}}}});
        const Exported ae = exportWith(lcwtest::demoModelPath(), ar, m_dir + "/act-lost");
        bool lost = false;
        for (const auto& w : ae.r.warnings)
            lost |= w.find("layers.0.attn.q") != std::string::npos &&
                    w.find("not written") != std::string::npos;
        QVERIFY(lost);

        // KV cache: not expressible, a warning
        const Exported kv = exportWith(lcwtest::demoModelPath(), oneRule(json::parse(R"({
            "weight": {"bits": 8, "granularity": "channel"}, "kv": {"k_bits": 8, "v_bits": 8}})")),
                                       m_dir + "/kv");
        QVERIFY(kv.f.config["quantization_config"]["kv_cache_scheme"].is_null());
        QVERIFY(!kv.r.warnings.empty());
        QVERIFY(kv.r.warnings[0].find("KV") != std::string::npos);
    }

    // GPTQ with act_order: the reference's groups (consecutive in act order) are
    // compressed-tensors' actorder "group" with weight_g_idx; static_groups keep them in column
    // order: actorder "weight", no weight_g_idx. The codes are GPTQ's, exactly.
    void gptqActOrder() {
        for (const bool staticGroups : {false, true}) {
            auto base = load(lcwtest::demoModelPath());
            json w = json::parse(R"({"bits": 4, "symmetric": false, "granularity": "group",
                "group_size": 32, "method": "gptq", "act_order": true})");
            if (staticGroups) w["static_groups"] = true;
            const json recipe = oneRule({{"weight", w}});
            NullProgress np;
            compress::CompressResult cr = compress::compressWithBundledCalibration(
                *base, compress::Recipe::fromJson(recipe), np, {2, 32});
            QVERIFY(cr.model);
            const auto fmt = compressedTensorsFormat();
            HfCheckpointOptions o;
            o.outDir = m_dir + (staticGroups ? "/gptq-static" : "/gptq");
            Exported e;
            e.r = exportHfCheckpoint(*base, *cr.model, *fmt, o);
            e.f = openFolder(o.outDir);
            e.base = std::move(base);
            e.ov = std::move(cr.model);
            const std::string q = "model.layers.0.self_attn.q_proj";
            const json* g = schemeOf(e.f, q);
            QVERIFY(g);
            QCOMPARE((*g)["weights"]["actorder"].get<std::string>(),
                     std::string(staticGroups ? "weight" : "group"));
            QCOMPARE(e.f.has(q + ".weight_g_idx"), !staticGroups);
            if (!staticGroups) {
                const TensorView& gi = e.f.get(q + ".weight_g_idx");
                bool trivial = true;
                for (int64_t j = 0; j < gi.shape[0]; ++j)
                    trivial = trivial && at<int32_t>(gi, j) == int32_t(j / 32);
                QVERIFY(!trivial);
            }
            try {
                QCOMPARE(verifyAll(e), 30);
            } catch (const std::exception& ex) {
                QFAIL(ex.what());
            }
        }
    }

    // SmoothQuant folds scales into the norms: float replacements, written in the base's dtype
    // when exact (f32 here), with the workbench's values; the linears in int-quantized W8A8.
    void floatReplacements() {
        auto base = load(lcwtest::demoModelPath());
        NullProgress np;
        compress::CompressResult cr = compress::compressWithBundledCalibration(
            *base, compress::findPreset("W8A8-SQ").recipe, np, {2, 32});
        QVERIFY(cr.model);
        const auto fmt = compressedTensorsFormat();
        HfCheckpointOptions o;
        o.outDir = m_dir + "/sq";
        const HfCheckpointResult r = exportHfCheckpoint(*base, *cr.model, *fmt, o);
        const Folder f = openFolder(o.outDir);
        const std::string norm = "model.layers.0.input_layernorm.weight";
        const HfModuleReport* rep = reportOf(r, norm);
        QVERIFY(rep);
        QCOMPARE(rep->status, std::string("float"));
        QVERIFY(rep->reason.find("exact") != std::string::npos);
        QCOMPARE(f.get(norm).dtype, DType::F32);
        const auto* ct = cr.model->compressed("layers.0.attn_norm");
        QVERIFY(ct && ct->isFloat);
        QCOMPARE(floatsOf(f.get(norm)), ct->floats);
        QCOMPARE(f.config["quantization_config"]["format"].get<std::string>(),
                 std::string("int-quantized"));
        Exported e;
        e.r = r;
        e.f = openFolder(o.outDir);
        e.base = std::move(base);
        e.ov = std::move(cr.model);
        try {
            QCOMPARE(verifyAll(e), 35);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }
    }

    void fusedPhi3() {
        LCW_REQUIRE_SHARED("models/tiny-random/phi3/model/config.json");
        const std::string model = lcwtest::sharedPath("models/tiny-random/phi3/model");
        const Exported e = exportWith(model, oneRule(json::parse(R"({"weight": {"bits": 4,
            "symmetric": false, "granularity": "group", "group_size": 32}})")),
                                      m_dir + "/phi3");
        const HfModuleReport* qkv = reportOf(e.r, "model.layers.0.self_attn.qkv_proj");
        QVERIFY(qkv);
        QCOMPARE(qkv->status, std::string("written"));
        QCOMPARE(qkv->canonical, (std::vector<std::string>{"layers.0.attn.q", "layers.0.attn.k",
                                                           "layers.0.attn.v"}));
        QCOMPARE(reportOf(e.r, "model.layers.0.mlp.gate_up_proj")->status, std::string("written"));
        checkConfig(e.f.config["quantization_config"]);
        try {
            QVERIFY(verifyAll(e) > 0);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }
        QCOMPARE(readFile(m_dir + "/phi3/generation_config.json"),
                 readFile(model + "/generation_config.json"));

        // 2:4-pruned float parts gathered into the fused sparse-24-bitmask module
        const Exported sp = exportWith(
            model, oneRule(json::parse(R"({"sparsity": {"pattern": "2:4"}})")), m_dir + "/phi3-24");
        QCOMPARE(reportOf(sp.r, "model.layers.0.self_attn.qkv_proj")->status,
                 std::string("written"));
        QVERIFY(sp.f.has("model.layers.0.self_attn.qkv_proj.bitmask"));
        try {
            QVERIFY(verifyAll(sp) > 0);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }

        // Parts with different settings: the fused tensor in floats, with the reason
        json r = oneRule(json::parse(R"({"weight": {"bits": 4, "granularity": "channel"}})"));
        r["rules"].push_back({{"targets", {"layers.*.attn.k"}}, {"weight", {{"bits", 8}}}});
        const Exported m = exportWith(model, r, m_dir + "/phi3-mixed");
        const HfModuleReport* mq = reportOf(m.r, "model.layers.0.self_attn.qkv_proj");
        QCOMPARE(mq->status, std::string("float"));
        QVERIFY(mq->reason.find("different settings") != std::string::npos);
        try {
            verifyAll(m);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }
    }

    void conv1dGpt2() {
        LCW_REQUIRE_SHARED("models/tiny-random/gpt2/model/config.json");
        const Exported e =
            exportWith(lcwtest::sharedPath("models/tiny-random/gpt2/model"),
                       oneRule(json::parse(R"({"weight": {"bits": 8}})")), m_dir + "/gpt2");
        const HfModuleReport* a = reportOf(e.r, "transformer.h.0.attn.c_attn");
        QVERIFY(a);
        QCOMPARE(a->status, std::string("float"));
        QVERIFY(a->reason.find("Conv1D") != std::string::npos);
        try {
            verifyAll(e);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }
    }

    void biasesAndShards() {
        LCW_REQUIRE_SHARED("models/tiny-random/qwen2_sharded/model/config.json");
        const std::string model = lcwtest::sharedPath("models/tiny-random/qwen2_sharded/model");
        const Exported e = exportWith(model, oneRule(json::parse(R"({"weight": {"bits": 4,
            "symmetric": false, "granularity": "group", "group_size": 32}})")),
                                      m_dir + "/qwen2", 60000);
        try {
            QVERIFY(verifyAll(e) > 0);
        } catch (const std::exception& ex) {
            QFAIL(ex.what());
        }
        QVERIFY(fs::exists(m_dir + "/qwen2/model.safetensors.index.json"));
        // Biases are copied byte for byte beside the packed weight.
        const SafetensorsSet base = readSafetensorsFolder(model);
        const TensorView& b0 = *base.find("model.layers.0.self_attn.q_proj.bias");
        const TensorView& b1 = e.f.get("model.layers.0.self_attn.q_proj.bias");
        QCOMPARE(b1.dtype, b0.dtype);
        QVERIFY(std::memcmp(b0.data, b1.data, b0.nbytes) == 0);
        QVERIFY(e.f.has("model.layers.0.self_attn.q_proj.weight_packed"));
    }

    // GGUF and llama2.c bases of the same model: the same checkpoint tensors as from its Hugging
    // Face folder (the q / k rows back in the rotate_half order, quantised rows permuted with
    // their scales), a config.json of the family, no tokenizer files (a warning).
    void ggufAndLlama2cBases() {
        LCW_REQUIRE_SHARED("models/stories260K/gguf/stories260K-f32.gguf");
        LCW_REQUIRE_SHARED("models/stories260K/llama2c/stories260K.bin");
        LCW_REQUIRE_SHARED("models/stories260K/hf/config.json");
        for (const char* preset : {"W8A16", "W4A16-g32"}) {
            const json recipe = compress::findPreset(preset).recipe.toJson();
            const std::string tag = preset;
            const Exported hf = exportWith(lcwtest::sharedPath("models/stories260K/hf"), recipe,
                                           m_dir + "/hf-" + tag);
            for (const char* other : {"models/stories260K/gguf/stories260K-f32.gguf",
                                      "models/stories260K/llama2c/stories260K.bin"}) {
                const std::string out =
                    m_dir + "/other-" + tag + "-" + fs::path(other).extension().string().substr(1);
                const Exported e = exportWith(lcwtest::sharedPath(other), recipe, out);
                QVERIFY(!e.r.warnings.empty());
                QVERIFY(e.r.warnings[0].find("tokenizer") != std::string::npos);
                QVERIFY(!fs::exists(out + "/tokenizer.json"));
                QCOMPARE(e.f.config["model_type"].get<std::string>(), std::string("llama"));
                QCOMPARE(e.f.config["num_key_value_heads"], hf.f.config["num_key_value_heads"]);
                QCOMPARE(e.f.config["quantization_config"]["config_groups"]["group_0"]["weights"],
                         hf.f.config["quantization_config"]["config_groups"]["group_0"]["weights"]);
                int compared = 0;
                for (const TensorView& t : hf.f.st.tensors) {
                    const TensorView* o = e.f.st.find(t.name);
                    QVERIFY2(o, t.name.c_str());
                    QCOMPARE(o->dtype, t.dtype);
                    QCOMPARE(o->shape, t.shape);
                    QVERIFY2(std::memcmp(o->data, t.data, t.nbytes) == 0, t.name.c_str());
                    ++compared;
                }
                QVERIFY(compared > 100);
                // the embedding and norms: plain f32 copies
                QCOMPARE(e.f.get("model.embed_tokens.weight").dtype, DType::F32);
                try {
                    verifyAll(e);
                } catch (const std::exception& ex) {
                    QFAIL(ex.what());
                }
            }
        }
    }

    // A GGUF base whose untouched tensors are in block types (llama.cpp's Q4_K_M file: the
    // embedding and the linears the recipe leaves alone): those are written as their exact
    // dequantised floats (this crashed on a null settings pointer before).
    void ggufBlockTypedBaseTensorsBecomeFloats() {
        LCW_REQUIRE_SHARED("models/stories260K/gguf/stories260K-q4_k_m.gguf");
        json recipe = oneRule(json::parse(
            R"({"weight": {"bits": 4, "symmetric": false, "granularity": "group", "group_size": 32}})"));
        recipe["rules"][0]["targets"] = {"layers.0.*"};
        const Exported e =
            exportWith(lcwtest::sharedPath("models/stories260K/gguf/stories260K-q4_k_m.gguf"),
                       recipe, m_dir + "/q4km");
        QVERIFY(e.f.has("model.layers.0.self_attn.q_proj.weight_packed"));
        const TensorView& emb = e.f.get("model.embed_tokens.weight");
        QCOMPARE(emb.dtype, DType::F32);
        const TensorView& src = e.base->get("embed");
        QVERIFY(dtypeBlockElems(src.dtype) > 1); // block-typed in the base
        std::vector<float> want(size_t(src.numel()));
        for (int64_t r = 0; r < src.rows(); ++r)
            dequantizeRow(src.dtype, src.row(r), want.data() + r * src.cols(), src.cols());
        QCOMPARE(emb.nbytes, want.size() * sizeof(float));
        QVERIFY(std::memcmp(emb.data, want.data(), emb.nbytes) == 0);
        const TensorView& k1 = e.f.get("model.layers.1.self_attn.k_proj.weight");
        QCOMPARE(k1.dtype, DType::F32);
    }

    // The writer plans the format with every module first (HfQuantFormat::plan): AWQ's one
    // group_size is the majority's, although the first module in the file (block 0's gate_proj)
    // has another.
    void otherFormatsArePlanned() {
        LCW_REQUIRE_SHARED("models/tiny-random/qwen2_sharded/model/config.json");
        auto base = load(lcwtest::sharedPath("models/tiny-random/qwen2_sharded/model"));
        json r = oneRule(json::parse(
            R"({"weight": {"bits": 4, "symmetric": false, "granularity": "group", "group_size": 32}})"));
        r["rules"].push_back(
            {{"targets", {"layers.0.mlp.gate"}}, {"weight", {{"group_size", 64}}}});
        auto ov = compressWith(*base, r);
        for (const auto& make : {+[] { return awqFormat(); },
                                 +[] {
                                     return gptqFormat({false, false});
                                 }}) {
            auto fmt = make();
            HfCheckpointOptions o;
            o.outDir = m_dir + "/planned-" + fmt->name();
            const HfCheckpointResult res = exportHfCheckpoint(*base, *ov, *fmt, o);
            QCOMPARE(res.quantizationConfig["quant_method"].get<std::string>(), fmt->name());
            QCOMPARE(res.quantizationConfig["group_size"].get<int>(), 32);
            QCOMPARE(reportOf(res, "model.layers.0.mlp.gate_proj")->status, std::string("float"));
            QCOMPARE(reportOf(res, "model.layers.0.mlp.up_proj")->status, std::string("written"));
            QCOMPARE(res.ignored.size(), size_t(1));
            // gate and up of block 0 now differ: vLLM's fused gate_up needs one scheme
            bool warned = false;
            for (const auto& w : res.warnings)
                warned |= w.find("layers.0.mlp.gate/up") != std::string::npos;
            QVERIFY(warned);
        }
    }

    void cancellationLeavesNothing() {
        auto base = load(lcwtest::demoModelPath());
        auto ov = compressWith(*base, compress::findPreset("W8A16").recipe.toJson());
        const auto fmt = compressedTensorsFormat();
        const std::string parent = m_dir + "/cancel";
        fs::create_directories(parent);
        int calls = 0;
        FunctionProgress p([&](double, std::string_view) { return ++calls < 5; });
        HfCheckpointOptions o;
        o.outDir = parent + "/out";
        o.progress = &p;
        const HfCheckpointResult r = exportHfCheckpoint(*base, *ov, *fmt, o);
        QCOMPARE(r.status, Status::Cancelled);
        QVERIFY(fs::is_empty(parent));
    }

    void badArguments() {
        auto base = load(lcwtest::demoModelPath());
        auto ov = compressWith(*base, compress::findPreset("W8A16").recipe.toJson());
        const auto fmt = compressedTensorsFormat();
        HfCheckpointOptions o;
        // not an overlay
        o.outDir = m_dir + "/bad1";
        QVERIFY_THROWS_EXCEPTION(ArgumentError, exportHfCheckpoint(*base, *base, *fmt, o));
        // a folder that holds something
        fs::create_directories(m_dir + "/full");
        std::ofstream(m_dir + "/full/x") << "x";
        o.outDir = m_dir + "/full";
        try {
            exportHfCheckpoint(*base, *ov, *fmt, o);
            QFAIL("no error for a non-empty folder");
        } catch (const ArgumentError& e) {
            QVERIFY(std::string(e.what()).find("not empty") != std::string::npos);
        }
        QVERIFY(fs::exists(m_dir + "/full/x"));
        // an empty folder is fine
        fs::create_directories(m_dir + "/empty");
        o.outDir = m_dir + "/empty";
        QCOMPARE(exportHfCheckpoint(*base, *ov, *fmt, o).status, Status::Ok);
        QVERIFY(fs::exists(m_dir + "/empty/config.json"));
        // a GGUF base of a family whose config.json lcw does not write (GPT-2, written as GGUF
        // here first)
        const std::string gpt2 = lcwtest::sharedPath("models/tiny-random/gpt2/model");
        if (lcwtest::exists(gpt2)) {
            auto hf = load(gpt2);
            GgufExportOptions go;
            go.path = m_dir + "/gpt2.gguf";
            QCOMPARE(exportGguf(*hf, *hf, go).status, Status::Ok);
            auto g = load(go.path);
            auto gov = compressWith(*g, compress::findPreset("W8A16").recipe.toJson());
            o.outDir = m_dir + "/gguf";
            try {
                exportHfCheckpoint(*g, *gov, *fmt, o);
                QFAIL("no error for a GGUF GPT-2");
            } catch (const UnsupportedError& e) {
                QVERIFY(std::string(e.what()).find("gpt2") != std::string::npos);
            }
            QVERIFY(!fs::exists(m_dir + "/gguf"));
        }
    }

    void cli() {
        const std::string out = m_dir + "/cli";
        const auto r = lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()),
                                        "--preset", "W8A16", "--format", "compressed-tensors",
                                        "--out", QString::fromStdString(out), "--json", "--quiet"});
        QVERIFY2(r.code == 0, r.err.constData());
        const json j = json::parse(r.out.toStdString());
        QCOMPARE(j["format"].get<std::string>(), std::string("compressed-tensors"));
        QCOMPARE(j["counts"]["written"].get<int>(), 35);
        QVERIFY(j["ignored"].empty());
        QVERIFY(j["bytes"].get<uint64_t>() > 0);
        QVERIFY(fs::exists(out + "/model.safetensors"));
        // bad arguments: clear messages, exit 2
        const auto nf = lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()),
                                         "--format", "compressed-tensors", "--out",
                                         QString::fromStdString(m_dir + "/cli2")});
        QCOMPARE(nf.code, 2);
        QVERIFY(nf.err.contains("--recipe"));
        const auto bf = lcwtest::runCli({"export", QString::fromStdString(lcwtest::demoModelPath()),
                                         "--preset", "W8A16", "--format", "compresed-tensors",
                                         "--out", QString::fromStdString(m_dir + "/cli3")});
        QCOMPARE(bf.code, 2);
        QVERIFY(bf.err.contains("compressed-tensors"));
        const auto again = lcwtest::runCli(
            {"export", QString::fromStdString(lcwtest::demoModelPath()), "--preset", "W8A16",
             "--format", "compressed-tensors", "--out", QString::fromStdString(out), "--quiet"});
        QCOMPARE(again.code, 1);
        QVERIFY(again.err.contains("not empty"));
    }
};

QTEST_GUILESS_MAIN(TestExportCompressedTensors)
#include "test_export_compressed_tensors.moc"
