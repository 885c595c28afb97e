// Opening quantised Hugging Face checkpoints (compressed-tensors, GPTQ, AWQ): fixture folders
// are built here from tiny-random/llama2_sp_f32 by the independent packers of hf_quant_fixture.h
// (which cites the formats' own sources), opened with Model::load, and every dequantised weight
// is compared exactly with the value the format defines; plus the schemes, the summary,
// `lcw-cli info --json`, `lcw-cli eval --compare-model`, and bad input naming file and field.
#include "core/common/error.h"
#include "core/model/model.h"
#include "hf_quant_fixture.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>

using lcw::FormatError;
using lcw::Model;
using lcw::RuntimeQuant;
using namespace hfq;

namespace {

std::string basePath() {
    return lcwtest::sharedPath(kBase);
}

std::vector<float> f32Values(const lcw::TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    if (t.dtype == lcw::DType::F32) std::memcpy(v.data(), t.data, v.size() * 4);
    return v;
}

/// Every expected weight of `f` equals the loaded one bit for bit; returns how many.
int checkExact(const Model& m, const Fixture& f) {
    int n = 0;
    for (const auto& [hf, expect] : f.expected) {
        const auto canon = lcw::canonicalFromHf(hf, m.spec().arch);
        if (!canon) throw std::runtime_error("no canonical name for " + hf);
        const lcw::TensorView* t = m.find(*canon);
        if (!t) throw std::runtime_error("missing " + *canon);
        if (t->dtype != lcw::DType::F32) throw std::runtime_error(*canon + " is not f32");
        const std::vector<float> got = f32Values(*t);
        if (got.size() != expect.size()) throw std::runtime_error(*canon + ": size differs");
        for (size_t i = 0; i < got.size(); ++i)
            if (std::memcmp(&got[i], &expect[i], 4) != 0)
                throw std::runtime_error(*canon + " element " + std::to_string(i) + ": got " +
                                         std::to_string(got[i]) + ", expected " +
                                         std::to_string(expect[i]));
        ++n;
    }
    return n;
}

/// checkExact as a test assertion: a mismatch fails the test with its message.
#define CHECK_EXACT(model, fixture, count)                                                         \
    do {                                                                                           \
        try {                                                                                      \
            QCOMPARE(checkExact(model, fixture), count);                                           \
        } catch (const std::exception& e) {                                                        \
            QFAIL(e.what());                                                                       \
        }                                                                                          \
    } while (0)

json ctConfig(const std::string& format, const json& weights) {
    json q;
    q["quant_method"] = "compressed-tensors";
    q["format"] = format;
    q["quantization_status"] = "compressed";
    q["config_groups"]["group_0"] = {{"targets", json::array({"Linear"})},
                                     {"weights", weights},
                                     {"input_activations", nullptr},
                                     {"output_activations", nullptr},
                                     {"format", format}};
    q["ignore"] = json::array({"lm_head"});
    q["kv_cache_scheme"] = nullptr;
    q["sparsity_config"] = json::object();
    q["version"] = "0.12.2";
    return q;
}

json intArgs(int bits, bool sym, const std::string& strategy, int64_t group = 0) {
    json w = {{"num_bits", bits},
              {"type", "int"},
              {"symmetric", sym},
              {"strategy", strategy},
              {"group_size", group > 0 ? json(group) : json(nullptr)},
              {"dynamic", false},
              {"actorder", nullptr},
              {"observer", "minmax"}};
    return w;
}

/// Message of the exception Model::load throws for `dir` ("" when it loads).
std::string loadError(const std::string& dir) {
    try {
        Model::load(dir);
    } catch (const std::exception& e) {
        return e.what();
    }
    return {};
}

} // namespace

class TestLoadHfQuant : public QObject {
    Q_OBJECT
    std::string m_tmp;

private slots:
    void initTestCase() {
        LCW_REQUIRE_SHARED(kBase);
        m_tmp = lcwtest::tempDir("hfquant");
    }
    void cleanupTestCase() {
        if (!m_tmp.empty()) std::filesystem::remove_all(m_tmp);
    }

    // compressed-tensors pack-quantized int4 asym group 32 with packed zero points (dim 0).
    void ctPackQuantizedAsym() {
        Fixture f(basePath(), m_tmp + "/ct_pack");
        for (const auto& l : f.linears()) ctPackQuantized(f, l, 4, 32, true);
        f.write(ctConfig("pack-quantized", intArgs(4, false, "group", 32)));
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.1.mlp.down"),
                 std::string("pack-quantized int4 asym group 32"));
        QVERIFY(m->tensorScheme("lm_head").empty());
        QCOMPARE(m->quantizationMethod(), std::string("compressed-tensors"));
        QCOMPARE(
            m->quantizationSummary(),
            std::string(
                "compressed-tensors pack-quantized: int4 asym group 32 (14 linears), 1 ignored"));
        // Stored bytes are the quantised tensors' (int32 words, bf16 scales, packed zeros,
        // shape), not the float32 copy.
        const lcw::TensorView& q = m->get("layers.0.attn.q"); // [64, 64]
        QCOMPARE(m->tensorStoredBytes(q), uint64_t(64 * 8 * 4 + 64 * 2 * 2 + 8 * 2 * 4 + 16));
        uint64_t quantBytes = 0;
        for (const auto& t : f.tensors)
            for (const char* sfx :
                 {".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape"})
                if (t.name.size() > std::strlen(sfx) &&
                    t.name.compare(t.name.size() - std::strlen(sfx), std::strlen(sfx), sfx) == 0)
                    quantBytes += t.data.size();
        int64_t linearElems = 0;
        for (const auto& l : Fixture(basePath(), f.dir).linears()) linearElems += l.rows * l.cols;
        QCOMPARE(m->storedBytes(),
                 Model::load(basePath())->storedBytes() - uint64_t(linearElems) * 4 + quantBytes);

        // lcw-cli info --json shows the summary and the per-tensor scheme.
        const auto run = lcwtest::runCli({"info", QString::fromStdString(f.dir), "--json"});
        QCOMPARE(run.code, 0);
        const auto j = nlohmann::json::parse(run.out.toStdString());
        QCOMPARE(j["quantization"]["method"].get<std::string>(), std::string("compressed-tensors"));
        QCOMPARE(j["quantization"]["summary"].get<std::string>(), m->quantizationSummary());
        QCOMPARE(j["quantization"]["quantized_tensors"].get<int>(), 14);
        bool seen = false;
        for (const auto& t : j["tensors"])
            if (t["name"] == "layers.0.mlp.gate") {
                QCOMPARE(t["scheme"].get<std::string>(),
                         std::string("pack-quantized int4 asym group 32"));
                QCOMPARE(t["dtype"].get<std::string>(), std::string("f32"));
                seen = true;
            } else if (t["name"] == "lm_head") {
                QVERIFY(!t.contains("scheme"));
            }
        QVERIFY(seen);

        // The dequantised checkpoint evaluates against its base: eval BASE --compare-model DIR.
        const std::string text = m_tmp + "/text.txt";
        std::ofstream(text) << "Once upon a time there was a little girl who liked to play in the "
                               "park with her dog. One day the dog ran away and she looked for it "
                               "everywhere until the sun went down.\n";
        const auto ev = lcwtest::runCli({"eval", QString::fromStdString(basePath()),
                                         "--compare-model", QString::fromStdString(f.dir), "--text",
                                         QString::fromStdString(text), "--ctx", "32"});
        QVERIFY2(ev.code == 0, ev.err.constData());
        QVERIFY(ev.out.contains("ct_pack"));
    }

    // Symmetric pack-quantized with activation ordering: weight_g_idx maps permuted columns.
    void ctPackQuantizedActorder() {
        Fixture f(basePath(), m_tmp + "/ct_actorder");
        unsigned seed = 1;
        for (const auto& l : f.linears()) {
            const auto g = permutedGroups(l.cols, 32, seed++);
            ctPackQuantized(f, l, 4, 32, false, &g);
        }
        json w = intArgs(4, true, "group", 32);
        w["actorder"] = "group";
        f.write(ctConfig("pack-quantized", w));
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.0.attn.k"),
                 std::string("pack-quantized int4 sym group 32 actorder group"));
    }

    // int-quantized int8 per channel; input activations applied, the KV cache recorded only;
    // static per-tensor input activations need their input_scale.
    void ctIntQuantizedWithActivations() {
        Fixture f(basePath(), m_tmp + "/ct_int8");
        for (const auto& l : f.linears()) ctInt8Channel(f, l);
        json q = ctConfig("int-quantized", intArgs(8, true, "channel"));
        q["config_groups"]["group_0"]["input_activations"] = {{"num_bits", 8},
                                                              {"type", "int"},
                                                              {"symmetric", true},
                                                              {"strategy", "token"},
                                                              {"dynamic", true}};
        q["kv_cache_scheme"] = {{"num_bits", 8},
                                {"type", "float"},
                                {"symmetric", true},
                                {"strategy", "tensor"},
                                {"dynamic", false}};
        f.write(q);
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.0.attn.o"), std::string("int-quantized int8 sym channel"));
        const std::string s = m->quantizationSummary();
        QVERIFY2(s.find("int8 sym channel (14 linears), 1 ignored; input activations int8 "
                        "dynamic per token (14 linears) (applied); not applied: KV cache fp8 "
                        "tensor") != std::string::npos,
                 s.c_str());
        // The input activations run as vLLM runs them: lcw's dynamic per-token int8.
        const RuntimeQuant* rq = m->runtimeQuant();
        QVERIFY(rq);
        QCOMPARE(rq->activations.size(), size_t(14));
        for (const auto& [name, a] : rq->activations) {
            QCOMPARE(a.bits, 8);
            QVERIFY(a.perToken);
            QVERIFY(m->find(name));
        }
        QVERIFY(rq->kv.empty());
        bool warned = false;
        for (const auto& w : m->warnings())
            if (w.find("config.json") != std::string::npos &&
                w.find("not applied") != std::string::npos)
                warned = true;
        QVERIFY(warned);

        q["config_groups"]["group_0"]["input_activations"]["strategy"] = "tensor";
        q["config_groups"]["group_0"]["input_activations"]["dynamic"] = false;
        f.write(q);
        try {
            Model::load(f.dir);
            QFAIL("static input activations without input_scale loaded");
        } catch (const FormatError& e) {
            const std::string msg = e.what();
            QVERIFY2(msg.find("input_scale") != std::string::npos &&
                         msg.find(".safetensors") != std::string::npos,
                     msg.c_str());
        }
    }

    // float-quantized fp8 e4m3: per channel (bf16 scales) and per tensor (f32 scale).
    void ctFloatQuantized() {
        Fixture f(basePath(), m_tmp + "/ct_fp8");
        json w = {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"strategy", "channel"}};
        for (const auto& l : f.linears()) ctFp8(f, l, false, false);
        f.write(ctConfig("float-quantized", w));
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.1.mlp.up"), std::string("float-quantized fp8 channel"));

        Fixture t(basePath(), m_tmp + "/ct_fp8_tensor");
        w["strategy"] = "tensor";
        for (const auto& l : t.linears()) ctFp8(t, l, true, false);
        t.write(ctConfig("float-quantized", w));
        CHECK_EXACT(*Model::load(t.dir), t, 14);
    }

    // sparse-24-bitmask over fp8 weights (quantised first, then 2:4 bitmask compressed).
    void ctSparse24Fp8() {
        Fixture f(basePath(), m_tmp + "/ct_24");
        json w = {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"strategy", "tensor"}};
        for (const auto& l : f.linears()) ctFp8(f, l, true, true);
        json q = ctConfig("float-quantized", w);
        q["sparsity_config"] = {{"format", "sparse-24-bitmask"},
                                {"global_sparsity", 0.5},
                                {"sparsity_structure", "2:4"},
                                {"targets", json::array({"Linear"})},
                                {"ignore", json::array({"lm_head"})}};
        f.write(q);
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.0.attn.v"),
                 std::string("sparse-24-bitmask + float-quantized fp8 tensor"));
        QVERIFY(m->quantizationSummary().find("2:4 sparse fp8 tensor (14 linears)") !=
                std::string::npos);
        // Half the values are zero, exactly where the mask says.
        const auto v = f32Values(m->get("layers.0.attn.q"));
        QCOMPARE(int64_t(std::count(v.begin(), v.end(), 0.0f)) >= int64_t(v.size() / 2), true);
    }

    // Unstructured sparse-bitmask over bf16 values without quantisation (format dense):
    // values row-major, bitmask little-endian, row_offsets the first value of each row.
    void ctSparseBitmaskDense() {
        Fixture f(basePath(), m_tmp + "/ct_sparse");
        for (const auto& l : f.linears()) {
            std::vector<float> vals, expect(l.w.size(), 0.0f);
            const int64_t bc = (l.cols + 7) / 8;
            std::vector<uint8_t> bits(size_t(l.rows * bc), 0);
            std::vector<int64_t> offs;
            for (int64_t r = 0; r < l.rows; ++r) {
                offs.push_back(int64_t(vals.size()));
                for (int64_t c = 0; c < l.cols; ++c) {
                    const float x = l.w[size_t(r * l.cols + c)];
                    if ((r + c) % 3 == 0 || std::fabs(x) < 0.02f) continue; // pruned
                    vals.push_back(toBf16(x));
                    expect[size_t(r * l.cols + c)] = toBf16(x);
                    bits[size_t(r * bc + c / 8)] |= uint8_t(1u << (c % 8));
                }
            }
            f.replace(l.module,
                      {{l.module + ".compressed",
                        lcw::DType::BF16,
                        {int64_t(vals.size())},
                        bf16Bytes(vals)},
                       {l.module + ".bitmask", lcw::DType::U8, {l.rows, bc}, bytesOf(bits)},
                       {l.module + ".shape",
                        lcw::DType::I64,
                        {2},
                        bytesOf(std::vector<int64_t>{l.rows, l.cols})},
                       {l.module + ".row_offsets", lcw::DType::I64, {l.rows}, bytesOf(offs)}},
                      std::move(expect));
        }
        json q = {{"quant_method", "compressed-tensors"},
                  {"format", "dense"},
                  {"sparsity_config",
                   {{"format", "sparse-bitmask"},
                    {"global_sparsity", 0.4},
                    {"sparsity_structure", "unstructured"},
                    {"targets", json::array({"Linear"})},
                    {"ignore", json::array({"lm_head"})}}},
                  {"version", "0.9.4"}};
        f.write(q);
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.1.attn.o"), std::string("sparse-bitmask bf16"));
        // A row offset that disagrees with the mask names the tensor.
        auto* ro = f.find("model.layers.1.mlp.up_proj.row_offsets");
        const int64_t bad = 3;
        std::memcpy(ro->data.data() + 8 * 2, &bad, 8);
        f.write(q);
        const std::string e = loadError(f.dir);
        QVERIFY2(e.find("model.safetensors") != std::string::npos &&
                     e.find("up_proj.row_offsets") != std::string::npos &&
                     e.find("row 2") != std::string::npos,
                 e.c_str());
    }

    // GPTQ v1 (AutoGPTQ) 4-bit, desc_act with a permuted g_idx.
    void gptqDescAct() {
        Fixture f(basePath(), m_tmp + "/gptq4");
        unsigned seed = 7;
        for (const auto& l : f.linears())
            gptq(f, l, 4, 32, permutedGroups(l.cols, 32, seed++), true);
        f.write({{"quant_method", "gptq"},
                 {"bits", 4},
                 {"group_size", 32},
                 {"desc_act", true},
                 {"sym", false},
                 {"checkpoint_format", "gptq"},
                 {"true_sequential", true},
                 {"damp_percent", 0.01}});
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.0.mlp.down"),
                 std::string("gptq int4 asym group 32 desc_act"));
        QCOMPARE(m->quantizationSummary(),
                 std::string("gptq (v1 checkpoint): int4 asym group 32 desc_act (14 linears)"));
    }

    // GPTQ 3-bit (values straddle int32 words) and 2/8-bit, checkpoint_format gptq_v2
    // (GPTQModel: the zero itself); column-order g_idx.
    void gptqBitsV2() {
        for (int bits : {2, 3, 8}) {
            Fixture f(basePath(), m_tmp + "/gptq_v2_" + std::to_string(bits));
            for (const auto& l : f.linears()) {
                std::vector<int32_t> g(static_cast<size_t>(l.cols));
                for (int64_t c = 0; c < l.cols; ++c) g[size_t(c)] = int32_t(c / 64);
                gptq(f, l, bits, 64, g, false);
            }
            f.write({{"quant_method", "gptq"},
                     {"bits", bits},
                     {"group_size", 64},
                     {"desc_act", false},
                     {"sym", false},
                     {"format", "gptq_v2"}});
            auto m = Model::load(f.dir);
            CHECK_EXACT(*m, f, 14);
            QCOMPARE(m->tensorScheme("layers.1.attn.q"),
                     "gptq int" + std::to_string(bits) + " asym group 64");
        }
    }

    // GPT-2: GPTQ packs Conv1D weights as the [out, in] linear (AutoGPTQ's pack transposes
    // them); the fused c_attn is split into q, k, v like a float checkpoint's.
    void gptqGpt2Conv1dFused() {
        const std::string base = lcwtest::sharedPath("models/tiny-random/gpt2/model");
        if (!lcwtest::exists(base)) QSKIP("tiny-random/gpt2 not found");
        Fixture f(base, m_tmp + "/gptq_gpt2");
        std::vector<Linear> ls;
        for (const auto& t : f.tensors) {
            const std::string& n = t.name;
            if (n.find("transformer.h.") != 0 || t.shape.size() != 2) continue;
            Linear l;
            l.module = n.substr(0, n.size() - 7);
            l.rows = t.shape[1]; // Conv1D stores [in, out]
            l.cols = t.shape[0];
            l.w.resize(size_t(l.rows * l.cols));
            std::vector<float> w(l.w.size());
            std::memcpy(w.data(), t.data.data(), w.size() * 4);
            for (int64_t i = 0; i < l.cols; ++i)
                for (int64_t o = 0; o < l.rows; ++o)
                    l.w[size_t(o * l.cols + i)] = w[size_t(i * l.rows + o)];
            ls.push_back(std::move(l));
        }
        QCOMPARE(int(ls.size()), 8);
        for (const auto& l : ls) {
            std::vector<int32_t> g(size_t(l.cols));
            for (int64_t c = 0; c < l.cols; ++c) g[size_t(c)] = int32_t(c / 32);
            gptq(f, l, 4, 32, g, true);
        }
        f.write({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"desc_act", false}});
        auto m = Model::load(f.dir);
        for (int layer = 0; layer < 2; ++layer) {
            const std::string h = "transformer.h." + std::to_string(layer) + ".";
            const std::string c = "layers." + std::to_string(layer) + ".";
            auto same = [&](const std::string& canon, const std::string& hf, int64_t row0) {
                const auto got = f32Values(m->get(canon));
                const auto& e = f.expected.at(hf);
                return std::memcmp(got.data(), e.data() + row0 * 64, got.size() * 4) == 0;
            };
            QVERIFY(same(c + "attn.q", h + "attn.c_attn.weight", 0));
            QVERIFY(same(c + "attn.k", h + "attn.c_attn.weight", 64));
            QVERIFY(same(c + "attn.v", h + "attn.c_attn.weight", 128));
            QVERIFY(same(c + "attn.o", h + "attn.c_proj.weight", 0));
            QVERIFY(same(c + "mlp.up", h + "mlp.c_fc.weight", 0));
            const auto down = f32Values(m->get(c + "mlp.down")); // [64, 256]
            QVERIFY(std::memcmp(down.data(), f.expected.at(h + "mlp.c_proj.weight").data(),
                                down.size() * 4) == 0);
            QCOMPARE(m->tensorScheme(c + "attn.k"), std::string("gptq int4 sym group 32"));
        }
        // The fused module's file bytes are shared by its parts.
        uint64_t parts = 0;
        for (const char* p : {"attn.q", "attn.k", "attn.v"})
            parts += m->tensorStoredBytes(m->get(std::string("layers.0.") + p));
        QCOMPARE(parts, uint64_t(8 * 192 * 4 + 2 * 24 * 4 + 2 * 192 * 2 + 64 * 4));
    }

    // AutoGPTQ folders keep the settings in quantize_config.json.
    void gptqQuantizeConfigJson() {
        Fixture f(basePath(), m_tmp + "/gptq_qc");
        for (const auto& l : f.linears()) {
            std::vector<int32_t> g(static_cast<size_t>(l.cols));
            for (int64_t c = 0; c < l.cols; ++c) g[size_t(c)] = int32_t(c / 32);
            gptq(f, l, 4, 32, g, true);
        }
        f.write(nullptr);
        std::ofstream(f.dir + "/quantize_config.json")
            << R"({"bits": 4, "group_size": 32, "desc_act": false, "sym": true})";
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->quantizationMethod(), std::string("gptq"));
    }

    // AWQ GEMM: AutoAWQ's interleaved column order in qweight and qzeros.
    void awqGemm() {
        Fixture f(basePath(), m_tmp + "/awq");
        for (const auto& l : f.linears()) awq(f, l, 32);
        f.write({{"quant_method", "awq"},
                 {"bits", 4},
                 {"group_size", 32},
                 {"zero_point", true},
                 {"version", "gemm"},
                 {"modules_to_not_convert", json::array({"lm_head"})}});
        auto m = Model::load(f.dir);
        CHECK_EXACT(*m, f, 14);
        QCOMPARE(m->tensorScheme("layers.0.attn.q"), std::string("awq gemm int4 asym group 32"));
        QCOMPARE(m->quantizationSummary(),
                 std::string("awq gemm: int4 asym group 32 (14 linears), 1 ignored"));
    }

    // Bad input: each error names the file and the field or tensor.
    void badInput() {
        const std::string cfg = "config.json";
        auto ct = [&](const std::string& tag) {
            Fixture f(basePath(), m_tmp + "/bad_" + tag);
            for (const auto& l : f.linears()) ctPackQuantized(f, l, 4, 32, true);
            return f;
        };
        auto expectIn = [](const std::string& msg, std::initializer_list<const char*> parts) {
            QVERIFY2(!msg.empty(), "loaded although the input is bad");
            for (const char* p : parts)
                QVERIFY2(msg.find(p) != std::string::npos,
                         (msg + "  [missing: " + p + "]").c_str());
        };
        {
            Fixture f = ct("strategy");
            json w = intArgs(4, false, "group", 32);
            w["strategy"] = "blockwise";
            f.write(ctConfig("pack-quantized", w));
            expectIn(loadError(f.dir),
                     {"config.json: quantization_config.config_groups.group_0.weights.strategy: "
                      "unknown 'blockwise'"});
        }
        {
            Fixture f = ct("format");
            f.write(ctConfig("foo-quantized", intArgs(4, false, "group", 32)));
            expectIn(loadError(f.dir),
                     {"config.json", "quantization_config.format: unknown 'foo-quantized'"});
        }
        {
            Fixture f = ct("method");
            json q = ctConfig("pack-quantized", intArgs(4, false, "group", 32));
            q["quant_method"] = "bitsandbytes";
            f.write(q);
            expectIn(loadError(f.dir),
                     {"config.json", "quantization_config.quant_method", "bitsandbytes"});
        }
        {
            Fixture f = ct("missing");
            f.removeTensor("model.layers.1.self_attn.k_proj.weight_scale");
            f.write(ctConfig("pack-quantized", intArgs(4, false, "group", 32)));
            expectIn(loadError(f.dir),
                     {"model.safetensors", "model.layers.1.self_attn.k_proj.weight_scale"});
        }
        {
            Fixture f = ct("scaleshape"); // weight_shape says 72 columns: 9 words, not 8
            auto* ws = f.find("model.layers.0.self_attn.q_proj.weight_shape");
            const std::vector<int64_t> s = {64, 72};
            std::memcpy(ws->data.data(), s.data(), 16);
            f.write(ctConfig("pack-quantized", intArgs(4, false, "group", 32)));
            expectIn(loadError(f.dir),
                     {"model.safetensors", "q_proj.weight_packed", "expected [64, 9]"});
        }
        {
            Fixture f = ct("zpshape"); // scale of the wrong group count
            auto* sc = f.find("model.layers.0.mlp.down_proj.weight_scale");
            sc->shape = {64, 2};
            sc->data.resize(64 * 2 * 2);
            f.write(ctConfig("pack-quantized", intArgs(4, false, "group", 32)));
            expectIn(loadError(f.dir),
                     {"model.safetensors", "down_proj.weight_scale", "expected [64, 4]"});
        }
        {
            Fixture f = ct("asymnozp");
            f.removeTensor("model.layers.0.mlp.up_proj.weight_zero_point");
            f.write(ctConfig("pack-quantized", intArgs(4, false, "group", 32)));
            expectIn(loadError(f.dir),
                     {"model.safetensors", "up_proj.weight_zero_point", "asymmetric"});
        }
        {
            // int-quantized 4-bit with an int8 zero point out of the 4-bit range.
            Fixture f(basePath(), m_tmp + "/bad_zprange");
            for (const auto& l : f.linears()) ctInt8Channel(f, l);
            for (auto& t : f.tensors)
                if (t.name.find(".weight") != std::string::npos && t.dtype == lcw::DType::I8)
                    for (auto& b : t.data) b = std::byte(int8_t(std::clamp<int>(int8_t(b), -8, 7)));
            for (const auto& l : f.linears()) {
                std::vector<int8_t> zp(size_t(l.rows), 0);
                if (l.module == "model.layers.0.self_attn.q_proj") zp[5] = 9;
                f.tensors.push_back(Tensor{
                    l.module + ".weight_zero_point", lcw::DType::I8, {l.rows, 1}, bytesOf(zp)});
            }
            f.write(ctConfig("int-quantized", intArgs(4, false, "channel")));
            expectIn(loadError(f.dir),
                     {"model.safetensors", "q_proj.weight_zero_point", "9", "outside [-8, 7]"});
        }
        {
            Fixture f(basePath(), m_tmp + "/bad_gptqfmt");
            for (const auto& l : f.linears()) {
                std::vector<int32_t> g(static_cast<size_t>(l.cols));
                for (int64_t c = 0; c < l.cols; ++c) g[size_t(c)] = int32_t(c / 32);
                gptq(f, l, 4, 32, g, true);
            }
            f.write({{"quant_method", "gptq"},
                     {"bits", 4},
                     {"group_size", 32},
                     {"checkpoint_format", "marlin"}});
            expectIn(loadError(f.dir),
                     {"config.json", "quantization_config.checkpoint_format", "marlin"});
            // A g_idx out of range names the tensor.
            auto* gi = f.find("model.layers.1.mlp.gate_proj.g_idx");
            const int32_t bad = 5;
            std::memcpy(gi->data.data() + 4 * 3, &bad, 4);
            f.write(
                {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"desc_act", true}});
            expectIn(loadError(f.dir),
                     {"model.safetensors", "gate_proj.g_idx", "group 5", "column 3"});
            // qweight of the wrong dtype.
            auto* qw = f.find("model.layers.1.mlp.up_proj.qweight");
            qw->dtype = lcw::DType::F32;
            std::memcpy(gi->data.data() + 4 * 3, "\0\0\0\0", 4);
            f.write({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}});
            expectIn(loadError(f.dir), {"model.safetensors", "up_proj.qweight", "dtype f32"});
        }
        {
            Fixture f(basePath(), m_tmp + "/bad_awq");
            for (const auto& l : f.linears()) awq(f, l, 32);
            f.write(
                {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 32}, {"version", "gemv"}});
            expectIn(loadError(f.dir), {"config.json", "quantization_config.version", "gemv"});
            f.removeTensor("model.layers.0.self_attn.o_proj.scales");
            f.write(
                {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 32}, {"version", "gemm"}});
            expectIn(loadError(f.dir), {"model.safetensors", "o_proj.scales"});
        }
    }
};

QTEST_GUILESS_MAIN(TestLoadHfQuant)
#include "test_load_hf_quant.moc"
