// Tests of core/export/gguf_mix: llama.cpp's per-tensor type choice for its presets (checked
// against llama-quantize b4747's files in ../shared/models/gguf-k/ and, for rules that model does
// not reach, against hand-derived expectations), lcw overrides, and the llama-quantize command.
#include "core/common/error.h"
#include "core/export/gguf_mix.h"
#include "core/io/gguf.h"
#include "test_util.h"

#include <algorithm>
#include <set>

using namespace lcw;

namespace {

// A llama-style tensor list in GGUF names, ggml order (ne[0] = row length).
struct ModelSpec {
    int nLayer = 4;
    int64_t dim = 256, kvDim = 128, ff = 768, vocab = 512;
    bool tied = false;
    bool qkNorm = false; // qwen3-style attn_q_norm / attn_k_norm
    int nExpert = 0;     // > 0: MoE FFN (router, merged experts, one shared expert)
};

std::vector<GgufMixTensor> llamaTensors(const ModelSpec& s) {
    std::vector<GgufMixTensor> t;
    auto add = [&](std::string n, std::vector<int64_t> ne) {
        t.push_back({std::move(n), std::move(ne), DType::F32});
    };
    add("token_embd.weight", {s.dim, s.vocab});
    for (int l = 0; l < s.nLayer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        add(b + "attn_norm.weight", {s.dim});
        add(b + "attn_q.weight", {s.dim, s.dim});
        add(b + "attn_k.weight", {s.dim, s.kvDim});
        add(b + "attn_v.weight", {s.dim, s.kvDim});
        add(b + "attn_output.weight", {s.dim, s.dim});
        if (s.qkNorm) {
            add(b + "attn_q_norm.weight", {64});
            add(b + "attn_k_norm.weight", {64});
        }
        add(b + "ffn_norm.weight", {s.dim});
        if (s.nExpert > 0) {
            add(b + "ffn_gate_inp.weight", {s.dim, s.nExpert});
            add(b + "ffn_gate_exps.weight", {s.dim, s.ff, s.nExpert});
            add(b + "ffn_up_exps.weight", {s.dim, s.ff, s.nExpert});
            add(b + "ffn_down_exps.weight", {s.ff, s.dim, s.nExpert});
            add(b + "ffn_down_shexp.weight", {s.ff, s.dim});
        } else {
            add(b + "ffn_gate.weight", {s.dim, s.ff});
            add(b + "ffn_up.weight", {s.dim, s.ff});
            add(b + "ffn_down.weight", {s.ff, s.dim});
        }
    }
    add("output_norm.weight", {s.dim});
    if (!s.tied) add("output.weight", {s.dim, s.vocab});
    return t;
}

GgufMixModel llamaModel(int nLayer, int nHead, int nHeadKv, int nExpert = 0,
                        std::string arch = "llama") {
    GgufMixModel m;
    m.arch = std::move(arch);
    m.nLayer = nLayer;
    m.nHead = nHead;
    m.nHeadKv = nHeadKv;
    m.nExpert = nExpert;
    return m;
}

DType typeOf(const GgufMix& mix, const std::string& name) {
    const GgufMixChoice* c = mix.find(name);
    if (!c) throw std::runtime_error("no tensor " + name);
    return c->type;
}

std::string blk(int l, const char* role) {
    return "blk." + std::to_string(l) + "." + role + ".weight";
}

QString str(DType t) {
    return QString::fromUtf8(llamaCppTypeName(t).data(), int(llamaCppTypeName(t).size()));
}

// QCOMPARE on DTypes with readable failure output.
#define TYPE_IS(mix, name, expected)                                                               \
    QCOMPARE(str(typeOf(mix, name)) + " " + QString::fromStdString(name),                          \
             str(expected) + " " + QString::fromStdString(name))

} // namespace

class TestGgufMix : public QObject {
    Q_OBJECT
private slots:
    void ftypeNamesAndIds() {
        QCOMPARE(llamaFtypeFromName("q4_k_m"), LlamaFtype::Q4_K_M);
        QCOMPARE(llamaFtypeFromName("IQ4_nl"), LlamaFtype::IQ4_NL);
        QCOMPARE(llamaFtypeFromName("Q4_K"), LlamaFtype::Q4_K_M); // llama-quantize's aliases
        QCOMPARE(llamaFtypeFromName("q3_k"), LlamaFtype::Q3_K_M);
        QCOMPARE(llamaFtypeFromName("f32"), LlamaFtype::F32);
        try {
            llamaFtypeFromName("Q4_K_X");
            QFAIL("no error");
        } catch (const ArgumentError& e) {
            const QString m = e.what();
            QVERIFY2(m.contains("Q4_K_X") && m.contains("Q4_K_M") && m.contains("IQ4_XS") &&
                         m.contains("Q2_K_S"),
                     e.what());
        }
        // llama.h's llama_ftype values (general.file_type) and llama_ftype_get_default_type.
        const std::vector<std::tuple<const char*, uint32_t, DType>> expected = {
            {"F32", 0, DType::F32},        {"F16", 1, DType::F16},
            {"Q4_0", 2, DType::Q4_0},      {"Q4_1", 3, DType::Q4_1},
            {"Q8_0", 7, DType::Q8_0},      {"Q5_0", 8, DType::Q5_0},
            {"Q5_1", 9, DType::Q5_1},      {"Q2_K", 10, DType::Q2_K},
            {"Q3_K_S", 11, DType::Q3_K},   {"Q3_K_M", 12, DType::Q3_K},
            {"Q3_K_L", 13, DType::Q3_K},   {"Q4_K_S", 14, DType::Q4_K},
            {"Q4_K_M", 15, DType::Q4_K},   {"Q5_K_S", 16, DType::Q5_K},
            {"Q5_K_M", 17, DType::Q5_K},   {"Q6_K", 18, DType::Q6_K},
            {"Q2_K_S", 21, DType::Q2_K},   {"IQ4_NL", 25, DType::IQ4_NL},
            {"IQ4_XS", 30, DType::IQ4_XS}, {"BF16", 32, DType::BF16},
        };
        QCOMPARE(llamaFtypes().size(), expected.size());
        for (const auto& [name, id, def] : expected) {
            const auto& info = llamaFtypeInfo(llamaFtypeFromName(name));
            QCOMPARE(QString::fromUtf8(info.name.data(), int(info.name.size())), QString(name));
            QCOMPARE(info.id, id);
            QCOMPARE(int(info.defaultType), int(def));
            QCOMPARE(llamaFtypeFromId(id).value(), info.ftype);
        }
        QVERIFY(!llamaFtypeFromId(19).has_value()); // IQ2_XXS: not a type lcw holds
        // ggml's type names as llama-quantize's --tensor-type takes them.
        QCOMPARE(str(DType::Q4_K), QString("q4_K"));
        QCOMPARE(str(DType::Q6_K), QString("q6_K"));
        QCOMPARE(str(DType::IQ4_NL), QString("iq4_nl"));
        QCOMPARE(str(DType::BF16), QString("bf16"));
        QCOMPARE(dtypeFromLlamaCppTypeName("Q5_k").value(), DType::Q5_K);
        QVERIFY(!dtypeFromLlamaCppTypeName("q4_k_m").has_value());
    }

    void matchesLlamaQuantizeFiles() {
        // Every tensor type of llama-quantize b4747's files equals our choice for that preset.
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        const std::string dir = lcwtest::sharedPath("models/gguf-k/");
        const GgufFile f32 = readGguf(dir + "model-f32.gguf");
        const GgufMixModel model = ggufMixModel(f32);
        QCOMPARE(QString::fromStdString(model.arch), QString("llama"));
        QCOMPARE(model.nLayer, 4);
        QCOMPARE(model.nHead, 4);
        QCOMPARE(model.nHeadKv, 2);
        QCOMPARE(model.nExpert, 0);
        const auto inputs = ggufMixTensors(f32);
        QCOMPARE(inputs.size(), size_t(39));
        QCOMPARE(inputs[0].ne, (std::vector<int64_t>{256, 512})); // token_embd, ggml order

        const std::vector<std::pair<std::string, bool>> files = {
            {"Q4_K_M", false}, {"Q5_K_M", false}, {"Q6_K", false},  {"Q4_K_M", true},
            {"Q2_K", true},    {"Q3_K_M", true},  {"IQ4_NL", true},
        };
        for (const auto& [preset, imat] : files) {
            const std::string file = dir + "model-" + preset + (imat ? "-imat" : "") + ".gguf";
            const GgufFile q = readGguf(file);
            GgufMixOptions opt;
            opt.hasImatrix = imat;
            const GgufMix mix = chooseGgufMix(llamaFtypeFromName(preset), model, inputs, opt);
            QCOMPARE(q.getInt("general.file_type").value(), int64_t(llamaFtypeInfo(mix.ftype).id));
            QCOMPARE(q.tensors.size(), mix.tensors.size());
            QVERIFY(mix.fallbacks.empty());
            QVERIFY(mix.warnings.empty());
            int converted = 0;
            for (const auto& c : mix.tensors) {
                const TensorView* t = q.findTensor(c.name);
                QVERIFY2(t, c.name.c_str());
                QVERIFY2(t->dtype == c.type,
                         qPrintable(QString::fromStdString(file + " " + c.name + ": file ") +
                                    QString::fromStdString(std::string(dtypeName(t->dtype))) +
                                    ", lcw " + str(c.type) + " (" +
                                    QString::fromStdString(c.reason) + ")"));
                QCOMPARE(c.type, c.presetType);
                converted += c.converted() ? 1 : 0;
            }
            QCOMPARE(converted, 30); // 9 norms are copied as F32
            // llama-quantize writes tensors in the order it processes them (which drives its
            // layer counters): non-layer tensors first, then blk.0, blk.1, ..., by name.
            for (size_t k = 0; k < q.tensors.size(); ++k)
                QCOMPARE(QString::fromStdString(q.tensors[k].name),
                         QString::fromStdString(inputs[mix.llamaCppOrder[k]].name));
        }
    }

    void gqaLlama32Layers() {
        // 32 layers, 32 heads / 8 KV heads (n_gqa 4), rows of 4096 / 14336 (multiples of 256).
        // use_more_bits(i, 32) = i < 4 || i >= 28 || (i - 4) % 3 == 2:
        //   {0,1,2,3} ∪ {6,9,...,27} ∪ {28..31}. attn_v counts its own tensors in llama.cpp's
        //   order (by layer number, not by name: blk.10 after blk.9), ffn_down uses the counter
        //   too (dense model), so both follow the layer index.
        const std::set<int> moreBits = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
        ModelSpec s;
        s.nLayer = 32;
        s.dim = 4096;
        s.kvDim = 1024;
        s.ff = 14336;
        s.vocab = 32000;
        auto tensors = llamaTensors(s);
        std::reverse(tensors.begin(), tensors.end()); // input order must not matter
        const GgufMixModel model = llamaModel(32, 32, 8);
        auto mixOf = [&](const char* preset, bool imat = false) {
            GgufMixOptions o;
            o.hasImatrix = imat;
            return chooseGgufMix(llamaFtypeFromName(preset), model, tensors, o);
        };

        // Q4_K_M: attn_v and ffn_down q6_K in use_more_bits layers, output q6_K, rest q4_K.
        GgufMix m = mixOf("Q4_K_M");
        for (int l = 0; l < 32; ++l) {
            const DType more = moreBits.count(l) ? DType::Q6_K : DType::Q4_K;
            TYPE_IS(m, blk(l, "attn_v"), more);
            TYPE_IS(m, blk(l, "ffn_down"), more);
            TYPE_IS(m, blk(l, "attn_q"), DType::Q4_K);
            TYPE_IS(m, blk(l, "attn_k"), DType::Q4_K);
            TYPE_IS(m, blk(l, "attn_output"), DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_gate"), DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_up"), DType::Q4_K);
            TYPE_IS(m, blk(l, "attn_norm"), DType::F32);
        }
        TYPE_IS(m, "output.weight", DType::Q6_K);
        TYPE_IS(m, "token_embd.weight", DType::Q4_K);
        QVERIFY(m.find("blk.6.attn_v.weight")->reason.find("use_more_bits") != std::string::npos);
        QCOMPARE(m.find("blk.0.attn_norm.weight")->source, GgufMixSource::Kept);
        QVERIFY(!m.find("blk.0.attn_norm.weight")->converted());

        // Q3_K_M: attn_v q5_K for the first two attn_v tensors, else q4_K; ffn_down q5_K below
        // n/16 = 2, else q4_K (not falcon); attn_output q4_K; rest q3_K.
        m = mixOf("Q3_K_M");
        for (int l = 0; l < 32; ++l) {
            TYPE_IS(m, blk(l, "attn_v"), l < 2 ? DType::Q5_K : DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_down"), l < 2 ? DType::Q5_K : DType::Q4_K);
            TYPE_IS(m, blk(l, "attn_output"), DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_up"), DType::Q3_K);
        }
        TYPE_IS(m, "token_embd.weight", DType::Q3_K);
        TYPE_IS(m, "output.weight", DType::Q6_K);

        // Q2_K: attn_v q4_K because n_gqa >= 4 (q3_K otherwise, as in gguf-k), ffn_down and
        // attn_output q3_K, rest q2_K.
        m = mixOf("Q2_K");
        TYPE_IS(m, blk(7, "attn_v"), DType::Q4_K);
        TYPE_IS(m, blk(7, "ffn_down"), DType::Q3_K);
        TYPE_IS(m, blk(7, "attn_output"), DType::Q3_K);
        TYPE_IS(m, blk(7, "attn_q"), DType::Q2_K);
        TYPE_IS(m, "token_embd.weight", DType::Q2_K);

        // Q2_K_S: llama-quantize refuses without an imatrix; with one: attn_v q4_K (GQA),
        // ffn_down q4_K below n/8 = 4.
        QVERIFY_THROWS_EXCEPTION(ArgumentError, mixOf("Q2_K_S"));
        m = mixOf("Q2_K_S", true);
        TYPE_IS(m, blk(9, "attn_v"), DType::Q4_K);
        TYPE_IS(m, blk(3, "ffn_down"), DType::Q4_K);
        TYPE_IS(m, blk(4, "ffn_down"), DType::Q2_K);

        // IQ4_NL: attn_v q5_K (GQA >= 4); without an imatrix ffn_down q5_K below n/8 = 4.
        m = mixOf("IQ4_NL");
        TYPE_IS(m, blk(20, "attn_v"), DType::Q5_K);
        TYPE_IS(m, blk(3, "ffn_down"), DType::Q5_K);
        TYPE_IS(m, blk(4, "ffn_down"), DType::IQ4_NL);
        TYPE_IS(m, "output.weight", DType::Q6_K); // 4096 is a multiple of iq4_nl's 32
        m = mixOf("IQ4_NL", true);
        TYPE_IS(m, blk(3, "ffn_down"), DType::IQ4_NL);
        m = mixOf("IQ4_XS");
        TYPE_IS(m, blk(0, "ffn_down"), DType::Q5_K);
        TYPE_IS(m, blk(0, "attn_q"), DType::IQ4_XS);

        // Q4_0 / Q5_0: with an imatrix ffn_down below n/8 becomes q4_1 / q5_1; output q6_K.
        m = mixOf("Q4_0");
        TYPE_IS(m, blk(0, "ffn_down"), DType::Q4_0);
        TYPE_IS(m, "output.weight", DType::Q6_K);
        m = mixOf("Q4_0", true);
        TYPE_IS(m, blk(3, "ffn_down"), DType::Q4_1);
        TYPE_IS(m, blk(4, "ffn_down"), DType::Q4_0);
        m = mixOf("Q5_0", true);
        TYPE_IS(m, blk(0, "ffn_down"), DType::Q5_1);

        // Q4_K_S: attn_v q5_K for the first 4, ffn_down q5_K below n/8.
        m = mixOf("Q4_K_S");
        TYPE_IS(m, blk(3, "attn_v"), DType::Q5_K);
        TYPE_IS(m, blk(4, "attn_v"), DType::Q4_K);
        TYPE_IS(m, blk(3, "ffn_down"), DType::Q5_K);
        TYPE_IS(m, blk(31, "ffn_down"), DType::Q4_K);

        // Q5_K_M like Q4_K_M one step up; Q3_K_L: attn_v / ffn_down / attn_output q5_K.
        m = mixOf("Q5_K_M");
        for (int l : {5, 6, 30}) {
            const DType more = moreBits.count(l) ? DType::Q6_K : DType::Q5_K;
            TYPE_IS(m, blk(l, "attn_v"), more);
            TYPE_IS(m, blk(l, "ffn_down"), more);
        }
        m = mixOf("Q3_K_L");
        TYPE_IS(m, blk(10, "attn_v"), DType::Q5_K);
        TYPE_IS(m, blk(10, "ffn_down"), DType::Q5_K);
        TYPE_IS(m, blk(10, "attn_output"), DType::Q5_K);
        TYPE_IS(m, blk(10, "ffn_gate"), DType::Q3_K);

        // Q8_0 keeps output at q8_0; F16 converts every quantisable tensor, norms stay F32.
        m = mixOf("Q8_0");
        TYPE_IS(m, "output.weight", DType::Q8_0);
        TYPE_IS(m, blk(0, "attn_v"), DType::Q8_0);
        m = mixOf("F16");
        TYPE_IS(m, "output.weight", DType::F16);
        TYPE_IS(m, blk(0, "attn_v"), DType::F16);
        TYPE_IS(m, blk(0, "ffn_norm"), DType::F32);
    }

    void llama70BGetsMoreBitsOnAttnV() {
        // llama, 80 layers, GQA: llama.cpp's LLM_TYPE_70B. Q4_K_M's q4_K attn_v becomes q5_K;
        // use_more_bits(i, 80) layers (i < 10, i >= 70, (i - 10) % 3 == 2) stay q6_K.
        ModelSpec s;
        s.nLayer = 80;
        const auto tensors = llamaTensors(s);
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(80, 64, 8), tensors);
        TYPE_IS(m, blk(10, "attn_v"), DType::Q5_K);
        TYPE_IS(m, blk(12, "attn_v"), DType::Q6_K);
        TYPE_IS(m, blk(0, "attn_v"), DType::Q6_K);
        TYPE_IS(m, blk(10, "ffn_down"), DType::Q4_K); // the 70B rule is attn_v only
        // Same shape without GQA is llama.cpp's 65B: no bump.
        m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(80, 64, 64), tensors);
        TYPE_IS(m, blk(10, "attn_v"), DType::Q4_K);
        // qwen2 with 80 layers is 70B too; Q3_K_M's q4_K attn_v becomes q5_K.
        m = chooseGgufMix(LlamaFtype::Q3_K_M, llamaModel(80, 64, 8, 0, "qwen2"), tensors);
        TYPE_IS(m, blk(40, "attn_v"), DType::Q5_K);
    }

    void rowsNotMultipleOf256FallBack() {
        // stories15M's shape: dim 288, 6 layers, 6 heads (no GQA), ffn 768, vocab 32000.
        // Q4_K_M wants q4_K for rows of 288: 288 % 256 != 0 → llama.cpp's fallback q5_0;
        // attn_v in use_more_bits(i, 6) layers {2, 5} wants q6_K → q8_0. ffn_down's rows are
        // 768 = 3 * 256: no fallback. output.weight: 288 % 256 != 0 → the output rule itself
        // gives q8_0 (not a fallback).
        ModelSpec s;
        s.nLayer = 6;
        s.dim = 288;
        s.kvDim = 288;
        s.ff = 768;
        s.vocab = 32000;
        const auto tensors = llamaTensors(s);
        const GgufMixModel model = llamaModel(6, 6, 6);
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors);
        for (int l = 0; l < 6; ++l) {
            const bool more = l == 2 || l == 5;
            TYPE_IS(m, blk(l, "attn_v"), more ? DType::Q8_0 : DType::Q5_0);
            QCOMPARE(int(m.find(blk(l, "attn_v"))->wanted.value()),
                     int(more ? DType::Q6_K : DType::Q4_K));
            TYPE_IS(m, blk(l, "attn_q"), DType::Q5_0);
            TYPE_IS(m, blk(l, "ffn_up"), DType::Q5_0);
            TYPE_IS(m, blk(l, "ffn_down"), more ? DType::Q6_K : DType::Q4_K);
            QVERIFY(!m.find(blk(l, "ffn_down"))->wanted);
        }
        TYPE_IS(m, "token_embd.weight", DType::Q5_0);
        TYPE_IS(m, "output.weight", DType::Q8_0);
        QVERIFY(!m.find("output.weight")->wanted);
        // Reported per tensor: token_embd + 6 layers x (q, k, v, output, gate, up).
        QCOMPARE(m.fallbacks.size(), size_t(37));
        const auto line = std::find_if(m.fallbacks.begin(), m.fallbacks.end(), [](auto& x) {
            return x.rfind("blk.0.attn_q.weight", 0) == 0;
        });
        QVERIFY(line != m.fallbacks.end());
        QVERIFY2(line->find("288") != std::string::npos &&
                     line->find("q4_K") != std::string::npos &&
                     line->find("q5_0") != std::string::npos,
                 line->c_str());
        QVERIFY(m.find("blk.0.attn_q.weight")->reason.find("fallback") != std::string::npos);

        // The other substitutes (b4747): q5_K → q5_1, q6_K → q8_0, q2_K / q3_K / iq4_xs → iq4_nl.
        m = chooseGgufMix(LlamaFtype::Q5_K_M, model, tensors);
        TYPE_IS(m, blk(0, "attn_q"), DType::Q5_1);
        TYPE_IS(m, blk(2, "attn_v"), DType::Q8_0);
        m = chooseGgufMix(LlamaFtype::Q6_K, model, tensors);
        TYPE_IS(m, blk(0, "attn_q"), DType::Q8_0);
        m = chooseGgufMix(LlamaFtype::Q2_K, model, tensors);
        TYPE_IS(m, blk(0, "attn_q"), DType::IQ4_NL); // q2_K wanted
        TYPE_IS(m, blk(0, "attn_v"), DType::IQ4_NL); // q3_K wanted (n_gqa 1)
        TYPE_IS(m, blk(0, "ffn_down"), DType::Q3_K); // rows of 768 fit
        m = chooseGgufMix(LlamaFtype::IQ4_XS, model, tensors);
        TYPE_IS(m, blk(0, "attn_q"), DType::IQ4_NL);

        // Rows that fit no fallback either (100 is not a multiple of 32) become f16; a preset
        // whose own type does not fit and has no fallback makes llama-quantize fail.
        const std::vector<GgufMixTensor> odd = {{"token_embd.weight", {256, 512}, DType::F32},
                                                {"blk.0.attn_q.weight", {100, 64}, DType::F16},
                                                {"output.weight", {256, 512}, DType::F32}};
        m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(1, 1, 1), odd);
        TYPE_IS(m, "blk.0.attn_q.weight", DType::F16);
        QVERIFY(!m.find("blk.0.attn_q.weight")->converted()); // already F16: copied
        QCOMPARE(int(m.find("blk.0.attn_q.weight")->wanted.value()), int(DType::Q4_K));
        QVERIFY_THROWS_EXCEPTION(UnsupportedError,
                                 chooseGgufMix(LlamaFtype::Q8_0, llamaModel(1, 1, 1), odd));
    }

    void tiedEmbeddingsAndFalcon() {
        // No output.weight: llama.cpp gives token_embd.weight the output tensor's rule.
        ModelSpec s;
        s.tied = true;
        const auto tensors = llamaTensors(s);
        const GgufMixModel model = llamaModel(4, 4, 4, 0, "gemma");
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors);
        TYPE_IS(m, "token_embd.weight", DType::Q6_K);
        QVERIFY(m.find("token_embd.weight")->reason.find("tied") != std::string::npos);
        m = chooseGgufMix(LlamaFtype::Q8_0, model, tensors);
        TYPE_IS(m, "token_embd.weight", DType::Q8_0);
        // --token-embedding-type wins; --output-tensor-type alone reaches the tied embedding.
        GgufMixOptions o;
        o.tokenEmbeddingType = DType::Q8_0;
        m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o);
        TYPE_IS(m, "token_embd.weight", DType::Q8_0);
        QCOMPARE(m.find("token_embd.weight")->source, GgufMixSource::Flag);
        QCOMPARE(m.find("token_embd.weight")->presetType, DType::Q6_K);
        o = {};
        o.outputTensorType = DType::Q5_K;
        m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o);
        TYPE_IS(m, "token_embd.weight", DType::Q5_K);

        // Untied: the flags go to their own tensors; --leave-output-tensor copies output.
        ModelSpec u;
        const auto untied = llamaTensors(u);
        o = {};
        o.outputTensorType = DType::Q8_0;
        o.tokenEmbeddingType = DType::F16;
        m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(4, 4, 2), untied, o);
        TYPE_IS(m, "output.weight", DType::Q8_0);
        TYPE_IS(m, "token_embd.weight", DType::F16);
        o = {};
        o.quantizeOutput = false;
        m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(4, 4, 2), untied, o);
        TYPE_IS(m, "output.weight", DType::F32);
        QCOMPARE(m.find("output.weight")->source, GgufMixSource::Kept);

        // Falcon (fused attn_qkv, 32 layers, 71 heads / 1 KV head): output q8_0; Q4_K_M gives
        // attn_qkv q5_K, and ffn_down q6_K below n/16 = 2, q5_K in use_more_bits layers, q4_K
        // elsewhere. The attn_qkv tensors are counted as attention (32 = n_layer: no warning).
        std::vector<GgufMixTensor> falcon = {{"token_embd.weight", {4544, 65024}, DType::F16},
                                             {"output_norm.weight", {4544}, DType::F32},
                                             {"output_norm.bias", {4544}, DType::F32},
                                             {"output.weight", {4544, 65024}, DType::F16}};
        for (int l = 0; l < 32; ++l) {
            const std::string b = "blk." + std::to_string(l) + ".";
            falcon.push_back({b + "attn_norm.weight", {4544}, DType::F32});
            falcon.push_back({b + "attn_norm.bias", {4544}, DType::F32});
            falcon.push_back({b + "attn_qkv.weight", {4544, 4672}, DType::F16});
            falcon.push_back({b + "attn_output.weight", {4544, 4544}, DType::F16});
            falcon.push_back({b + "ffn_up.weight", {4544, 18176}, DType::F16});
            falcon.push_back({b + "ffn_down.weight", {18176, 4544}, DType::F16});
        }
        // 4544 = 17.75 * 256: rows of 4544 fall back (q4_K → q5_0, q5_K → q5_1); 18176 = 71 * 256.
        const GgufMixModel fm = llamaModel(32, 71, 1, 0, "falcon");
        m = chooseGgufMix(LlamaFtype::Q4_K_M, fm, falcon);
        QVERIFY(m.warnings.empty());
        TYPE_IS(m, "output.weight", DType::Q8_0);
        TYPE_IS(m, "token_embd.weight", DType::Q5_0);
        TYPE_IS(m, blk(5, "attn_qkv"), DType::Q5_1);
        QCOMPARE(int(m.find(blk(5, "attn_qkv"))->wanted.value()), int(DType::Q5_K));
        // use_more_bits(i, 32) = {0..3, 6, 9, ..., 27, 28..31}
        TYPE_IS(m, blk(0, "ffn_down"), DType::Q6_K);
        TYPE_IS(m, blk(1, "ffn_down"), DType::Q6_K);
        TYPE_IS(m, blk(2, "ffn_down"), DType::Q5_K);
        TYPE_IS(m, blk(6, "ffn_down"), DType::Q5_K);
        TYPE_IS(m, blk(7, "ffn_down"), DType::Q4_K);
        TYPE_IS(m, blk(3, "attn_norm"), DType::F32);
        QCOMPARE(m.find("blk.3.attn_norm.bias")->source, GgufMixSource::Kept);
        // Q3_K_M: falcon ffn_down is q3_K outside use_more_bits layers.
        m = chooseGgufMix(LlamaFtype::Q3_K_M, fm, falcon);
        TYPE_IS(m, blk(7, "ffn_down"), DType::Q3_K);
        TYPE_IS(m, blk(6, "ffn_down"), DType::Q4_K);
        TYPE_IS(m, blk(7, "attn_qkv"), DType::Q5_0); // q4_K wanted, rows of 4544
    }

    void mixtureOfExperts() {
        // 8 experts, 8 layers, 32 heads / 8 KV heads, merged 3-D expert tensors plus a shared
        // expert. n_expert == 8: attn_v and attn_k q8_0, attn_output q5_K (Q4_K_M and Q2_K are in
        // llama.cpp's list). ffn_down's layer comes from the name (blk.N), so the shared expert
        // (a second ffn_down per layer) does not shift it: use_more_bits(i, 8) = {0, 3, 6, 7}.
        // The router (ffn_gate_inp) is never quantised.
        ModelSpec s;
        s.nLayer = 8;
        s.nExpert = 8;
        s.ff = 512;
        auto tensors = llamaTensors(s);
        std::rotate(tensors.begin(), tensors.begin() + 17, tensors.end());
        const GgufMixModel model = llamaModel(8, 32, 8, 8);
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors);
        for (int l = 0; l < 8; ++l) {
            const bool more = l == 0 || l == 3 || l == 6 || l == 7;
            TYPE_IS(m, blk(l, "attn_v"), DType::Q8_0);
            TYPE_IS(m, blk(l, "attn_k"), DType::Q8_0);
            TYPE_IS(m, blk(l, "attn_q"), DType::Q4_K);
            TYPE_IS(m, blk(l, "attn_output"), DType::Q5_K);
            TYPE_IS(m, blk(l, "ffn_down_exps"), more ? DType::Q6_K : DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_down_shexp"), more ? DType::Q6_K : DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_gate_exps"), DType::Q4_K);
            TYPE_IS(m, blk(l, "ffn_gate_inp"), DType::F32);
            QCOMPARE(m.find(blk(l, "ffn_gate_inp"))->source, GgufMixSource::Kept);
        }
        m = chooseGgufMix(LlamaFtype::Q2_K, model, tensors);
        TYPE_IS(m, blk(1, "attn_v"), DType::Q8_0);
        TYPE_IS(m, blk(1, "attn_output"), DType::Q5_K);
        TYPE_IS(m, blk(1, "ffn_down_exps"), DType::Q3_K);
        TYPE_IS(m, blk(1, "ffn_up_exps"), DType::Q2_K);
        // A MoE ffn tensor whose layer cannot be read from its name: llama.cpp fails.
        tensors.push_back({"extra.ffn_down.weight", {512, 256}, DType::F32});
        QVERIFY_THROWS_EXCEPTION(UnsupportedError,
                                 chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors));
    }

    void overridesOnTopOfAPreset() {
        ModelSpec s;
        s.qkNorm = true;
        const auto tensors = llamaTensors(s);
        const GgufMixModel model = llamaModel(4, 4, 2);
        GgufMixOptions o;
        o.perTensor["blk.1.attn_q.weight"] = DType::Q8_0;
        o.perTensor["blk.1.attn_v.weight"] = DType::Q8_0;
        o.perTensor["blk.0.ffn_up.weight"] = DType::F32; // the source type: copied
        o.tensorTypes = {{"blk\\.[0-9]+\\.attn_k", DType::Q5_K},
                         {"attn_k|ffn_gate", DType::IQ4_NL}};
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o);
        TYPE_IS(m, "blk.1.attn_q.weight", DType::Q8_0);
        QCOMPARE(m.find("blk.1.attn_q.weight")->source, GgufMixSource::PerTensor);
        QCOMPARE(m.find("blk.1.attn_q.weight")->presetType, DType::Q4_K);
        // The override does not move llama.cpp's attn_v counter: blk.2 / blk.3 stay q6_K.
        TYPE_IS(m, "blk.2.attn_v.weight", DType::Q6_K);
        TYPE_IS(m, "blk.3.attn_v.weight", DType::Q6_K);
        TYPE_IS(m, "blk.0.attn_v.weight", DType::Q4_K);
        QVERIFY(!m.find("blk.0.ffn_up.weight")->converted());
        // First matching regex wins; the norms it also matches (attn_k_norm) stay as they are.
        TYPE_IS(m, "blk.3.attn_k.weight", DType::Q5_K);
        QCOMPARE(m.find("blk.3.attn_k.weight")->source, GgufMixSource::Regex);
        TYPE_IS(m, "blk.3.ffn_gate.weight", DType::IQ4_NL);
        TYPE_IS(m, "blk.3.attn_k_norm.weight", DType::F32);
        QCOMPARE(m.changedCount(), 3 + 4 + 4); // per-tensor, attn_k x4, ffn_gate x4
        // An override the rows do not fit falls back like llama.cpp's --tensor-type does.
        ModelSpec n288;
        n288.dim = 288;
        n288.kvDim = 288;
        o = {};
        o.perTensor["blk.0.attn_q.weight"] = DType::Q6_K;
        m = chooseGgufMix(LlamaFtype::Q8_0, llamaModel(4, 6, 6), llamaTensors(n288), o);
        TYPE_IS(m, "blk.0.attn_q.weight", DType::Q8_0);
        QCOMPARE(int(m.find("blk.0.attn_q.weight")->wanted.value()), int(DType::Q6_K));
        QCOMPARE(m.fallbacks.size(), size_t(1));

        // Bad overrides: clear errors.
        auto bad = [&](GgufMixOptions opt) {
            try {
                chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, opt);
            } catch (const ArgumentError& e) {
                return std::string(e.what());
            }
            return std::string();
        };
        o = {};
        o.perTensor["blk.9.attn_q.weight"] = DType::Q8_0;
        QVERIFY(bad(o).find("blk.9.attn_q.weight") != std::string::npos);
        o = {};
        o.perTensor["blk.0.attn_norm.weight"] = DType::Q8_0;
        QVERIFY(bad(o).find("never quantises") != std::string::npos);
        o = {};
        o.tensorTypes = {{"blk\\.(", DType::Q8_0}};
        QVERIFY(bad(o).find("invalid tensor-type regex") != std::string::npos);
        o = {};
        o.perTensor["blk.0.attn_q.weight"] = DType::I8;
        QVERIFY(bad(o).find("i8") != std::string::npos);
    }

    void badInput() {
        std::vector<GgufMixTensor> t = {{"a.weight", {4, 4}, DType::F32},
                                        {"a.weight", {4, 4}, DType::F32}};
        QVERIFY_THROWS_EXCEPTION(ArgumentError, chooseGgufMix(LlamaFtype::Q4_0, {}, t));
        t = {{"a.weight", {4, -1}, DType::F32}};
        QVERIFY_THROWS_EXCEPTION(ArgumentError, chooseGgufMix(LlamaFtype::Q4_0, {}, t));
        t = {{"a.weight", {}, DType::F32}};
        QVERIFY_THROWS_EXCEPTION(ArgumentError, chooseGgufMix(LlamaFtype::Q4_0, {}, t));
        // llama.cpp counts attn_v tensors against the attention layers; a mismatch is reported.
        ModelSpec s;
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(5, 4, 2), llamaTensors(s));
        QCOMPARE(m.warnings.size(), size_t(1));
        // [n, 1] is 1-D for ggml: not quantised.
        t = {{"blk.0.attn_q.weight", {256, 1}, DType::F32}};
        m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(1, 1, 1), t);
        QCOMPARE(m.tensors[0].source, GgufMixSource::Kept);
    }

    void tensorTypeList() {
        ModelSpec s;
        const auto tensors = llamaTensors(s);
        const GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(4, 4, 2), tensors);
        const std::string list = renderTensorTypeList(m);
        QCOMPARE(std::count(list.begin(), list.end(), '\n'), std::ptrdiff_t(tensors.size()));
        QVERIFY(list.rfind("token_embd.weight q4_K\nblk.0.attn_norm.weight f32\n", 0) == 0);
        QVERIFY(list.find("\nblk.2.attn_v.weight q6_K\n") != std::string::npos);
        QVERIFY(list.find("\noutput.weight q6_K\n") != std::string::npos);
    }

    void commandForUnmodifiedPresets() {
        // Every preset on every hand model: no --tensor-type entries, no flags.
        ModelSpec plain, moe, tied, small;
        moe.nLayer = 8;
        moe.nExpert = 8;
        tied.tied = true;
        small.dim = 288;
        small.kvDim = 288;
        small.nLayer = 6;
        const std::vector<std::pair<std::vector<GgufMixTensor>, GgufMixModel>> models = {
            {llamaTensors(plain), llamaModel(4, 4, 2)},
            {llamaTensors(moe), llamaModel(8, 32, 8, 8)},
            {llamaTensors(tied), llamaModel(4, 4, 4, 0, "gemma")},
            {llamaTensors(small), llamaModel(6, 6, 6)},
        };
        for (const auto& [tensors, model] : models)
            for (const auto& info : llamaFtypes()) {
                GgufMixOptions o;
                o.hasImatrix = info.ftype == LlamaFtype::Q2_K_S;
                const GgufMix m = chooseGgufMix(info.ftype, model, tensors, o);
                QCOMPARE(m.changedCount(), 0);
                const LlamaQuantizeCommand c = renderLlamaQuantizeCommand(m, {});
                QVERIFY2(c.tensorTypeEntries.empty(), info.name.data());
                std::vector<std::string> expected = {"llama-quantize"};
                if (o.hasImatrix) expected.insert(expected.end(), {"--imatrix", "imatrix.dat"});
                expected.insert(expected.end(),
                                {"model-f32.gguf", "model-" + std::string(info.name) + "-lcw.gguf",
                                 std::string(info.name)});
                QCOMPARE(c.argv, expected);
                QVERIFY(c.comment.find("b4747 and later") != std::string::npos);
            }
        GgufMixOptions withImatrix;
        withImatrix.hasImatrix = true;
        const GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, llamaModel(4, 4, 2),
                                        llamaTensors(plain), withImatrix);
        LlamaQuantizeCommandOptions co;
        co.input = "/models/My Model/f16.gguf";
        co.output = "out.gguf";
        co.imatrix = "im.dat";
        co.threads = 8;
        const LlamaQuantizeCommand c = renderLlamaQuantizeCommand(m, co);
        QCOMPARE(QString::fromStdString(c.commandLine),
                 QString("llama-quantize \\\n    --imatrix im.dat \\\n"
                         "    '/models/My Model/f16.gguf' out.gguf Q4_K_M 8\n"));
        co.imatrix.clear();
        QVERIFY_THROWS_EXCEPTION(ArgumentError, renderLlamaQuantizeCommand(m, co));
    }

    void commandForModifiedPreset() {
        ModelSpec s;
        const auto tensors = llamaTensors(s);
        const GgufMixModel model = llamaModel(4, 4, 2);
        // Changes that do not move llama.cpp's counters: exactly those tensors get entries.
        GgufMixOptions o;
        o.perTensor["blk.1.attn_q.weight"] = DType::Q8_0;
        o.perTensor["blk.3.ffn_down.weight"] = DType::Q4_K; // preset: q6_K (last layer)
        o.perTensor["blk.0.ffn_gate.weight"] = DType::Q4_K; // the preset's own type: no change
        o.outputTensorType = DType::Q8_0;
        GgufMix m = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o);
        LlamaQuantizeCommand c = renderLlamaQuantizeCommand(m, {});
        QCOMPARE(c.tensorTypeEntries,
                 (std::vector<std::string>{"blk.1.attn_q.weight", "blk.3.ffn_down.weight"}));
        QVERIFY(c.pinnedForCounters.empty());
        QCOMPARE(c.argv, (std::vector<std::string>{
                             "llama-quantize", "--output-tensor-type", "q8_0", "--tensor-type",
                             "blk\\.1\\.attn_q=q8_0", "--tensor-type", "blk\\.3\\.ffn_down=q4_K",
                             "model-f32.gguf", "model-Q4_K_M-lcw.gguf", "Q4_K_M"}));
        QVERIFY(c.commandLine.find("'blk\\.1\\.attn_q=q8_0'") != std::string::npos);
        QVERIFY(c.comment.find("newer than b4747") != std::string::npos);

        // Overriding blk.1.ffn_down: a newer llama-quantize does not count it, so blk.2's
        // ffn_down sees counter 1 instead of 2: use_more_bits(1, 4) is false (q4_K) where the
        // preset has use_more_bits(2, 4) true (q6_K) → blk.2 is pinned to q6_K. Pinned, blk.2 is
        // not counted either, so blk.3 sees 1 as well (q4_K, preset q6_K) → pinned too.
        auto commandFor = [&](const std::string& name) {
            GgufMixOptions one;
            one.perTensor[name] = DType::Q8_0;
            return renderLlamaQuantizeCommand(
                chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, one), {});
        };
        c = commandFor("blk.1.ffn_down.weight");
        QCOMPARE(c.tensorTypeEntries,
                 (std::vector<std::string>{"blk.1.ffn_down.weight", "blk.2.ffn_down.weight",
                                           "blk.3.ffn_down.weight"}));
        QCOMPARE(c.pinnedForCounters,
                 (std::vector<std::string>{"blk.2.ffn_down.weight", "blk.3.ffn_down.weight"}));
        QCOMPARE(c.argv[2], std::string("blk\\.1\\.ffn_down=q8_0"));
        QCOMPARE(c.argv[4], std::string("blk\\.2\\.ffn_down=q6_K"));
        QVERIFY(c.comment.find("2 entries keep their preset type") != std::string::npos);
        // attn_v has its own counter. Overriding blk.0: blk.1 sees 0 (q4_K, as the preset's
        // use_more_bits(1, 4) = false), blk.2 sees 1 (q4_K, preset q6_K) → pinned, then blk.3
        // sees 1 (q4_K, preset q6_K) → pinned.
        c = commandFor("blk.0.attn_v.weight");
        QCOMPARE(c.tensorTypeEntries,
                 (std::vector<std::string>{"blk.0.attn_v.weight", "blk.2.attn_v.weight",
                                           "blk.3.attn_v.weight"}));
        QCOMPARE(c.pinnedForCounters,
                 (std::vector<std::string>{"blk.2.attn_v.weight", "blk.3.attn_v.weight"}));
        // The last layer's ffn_down moves no later counter: just that entry.
        QCOMPARE(commandFor("blk.3.ffn_down.weight").tensorTypeEntries.size(), size_t(1));

        // A stem other names contain (attn_q in attn_q_norm) gets the anchored full name.
        ModelSpec q;
        q.qkNorm = true;
        o = {};
        o.perTensor["blk.0.attn_q.weight"] = DType::Q8_0;
        o.tokenEmbeddingType = DType::Q6_K;
        m = chooseGgufMix(LlamaFtype::Q4_K_M, model, llamaTensors(q), o);
        c = renderLlamaQuantizeCommand(m, {});
        QCOMPARE(c.argv,
                 (std::vector<std::string>{"llama-quantize", "--token-embedding-type", "q6_K",
                                           "--tensor-type", "^blk\\.0\\.attn_q\\.weight$=q8_0",
                                           "model-f32.gguf", "model-Q4_K_M-lcw.gguf", "Q4_K_M"}));

        // pinAll: every quantised tensor explicit (28 linears), output / embedding by flag.
        LlamaQuantizeCommandOptions all;
        all.pinAll = true;
        c = renderLlamaQuantizeCommand(m, all);
        QCOMPARE(c.tensorTypeEntries.size(), size_t(28));
        QVERIFY(std::find(c.argv.begin(), c.argv.end(), "--output-tensor-type") != c.argv.end());

        // An unquantised preset ignores --tensor-type: say so instead of a wrong command.
        o = {};
        o.perTensor["blk.1.attn_q.weight"] = DType::Q8_0;
        m = chooseGgufMix(LlamaFtype::F16, model, tensors, o);
        QVERIFY_THROWS_EXCEPTION(UnsupportedError, renderLlamaQuantizeCommand(m, {}));
        o = {};
        o.outputTensorType = DType::Q8_0; // a flag works for F16 too
        m = chooseGgufMix(LlamaFtype::F16, model, tensors, o);
        c = renderLlamaQuantizeCommand(m, {});
        QVERIFY(c.tensorTypeEntries.empty());
        QCOMPARE(c.argv[1], std::string("--output-tensor-type"));
    }
};

QTEST_GUILESS_MAIN(TestGgufMix)
#include "test_gguf_mix.moc"
