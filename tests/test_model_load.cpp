// Model::load over the three formats (HF safetensors folder, GGUF, llama2.c): spec values,
// canonical tensor mapping, cross-format equality of the weights, quantized GGUF tensors.
#include "core/common/error.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <set>

namespace {

const char* kHf = "models/stories260K/hf";
const char* kGguf = "models/stories260K/gguf/stories260K-f32.gguf";
const char* kGgufQ = "models/stories260K/gguf/stories260K-q4_k_m.gguf";
const char* kL2c = "models/stories260K/llama2c/stories260K.bin";

std::vector<float> floats(const lcw::TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        lcw::dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
    return v;
}

// HF's conversion from Meta's layout: within each head, row 2i+j (j in {0,1}) of the
// interleaved layout becomes row j*(hd/2)+i of the rotate-half layout.
std::vector<float> metaToHf(const std::vector<float>& w, int64_t heads, int64_t hd, int64_t cols) {
    std::vector<float> out(w.size());
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < hd / 2; ++i)
            for (int64_t j = 0; j < 2; ++j) {
                const int64_t src = h * hd + 2 * i + j, dst = h * hd + j * (hd / 2) + i;
                std::memcpy(&out[size_t(dst * cols)], &w[size_t(src * cols)],
                            size_t(cols) * sizeof(float));
            }
    return out;
}

void checkStoriesSpec(const lcw::ModelSpec& s) {
    QCOMPARE(s.arch, std::string("llama"));
    QCOMPARE(s.dim, int64_t(64));
    QCOMPARE(s.hidden, int64_t(172));
    QCOMPARE(s.nLayers, int64_t(5));
    QCOMPARE(s.nHeads, int64_t(8));
    QCOMPARE(s.nKvHeads, int64_t(4));
    QCOMPARE(s.headDim, int64_t(8));
    QCOMPARE(s.vocab, int64_t(512));
    QCOMPARE(s.normEps, 1e-5f);
    QCOMPARE(s.rope.theta, 10000.0);
    QCOMPARE(s.bosId, 1);
    QCOMPARE(s.eosIds, (std::vector<int32_t>{2}));
}

double relErr(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(a[i]) * a[i];
    }
    return std::sqrt(num / den);
}

} // namespace

class TestModelLoad : public QObject {
    Q_OBJECT
private slots:
    void storiesHf() {
        LCW_REQUIRE_SHARED(kHf);
        auto m = lcw::Model::load(lcwtest::sharedPath(kHf));
        checkStoriesSpec(m->spec());
        QCOMPARE(m->spec().sourceFormat, std::string("safetensors"));
        QVERIFY(!m->spec().rope.interleaved);
        QVERIFY(m->spec().tiedEmbeddings);
        QVERIFY(!m->find("lm_head"));
        QCOMPARE(&m->lmHead(), m->find("embed"));
        QVERIFY(m->hasTokenizer());
        const auto& q = m->get("layers.2.attn.q");
        QCOMPARE(q.fileName, std::string("model.layers.2.self_attn.q_proj.weight"));
        QVERIFY(q.file.find("model.safetensors") != std::string::npos);
        QCOMPARE(m->get("layers.4.mlp.down").shape, (std::vector<int64_t>{64, 172}));
        QVERIFY(!m->findNonFinite().has_value());
    }
    void storiesGguf() {
        LCW_REQUIRE_SHARED(kGguf);
        auto m = lcw::Model::load(lcwtest::sharedPath(kGguf));
        checkStoriesSpec(m->spec());
        QCOMPARE(m->spec().sourceFormat, std::string("gguf"));
        QVERIFY(m->spec().rope.interleaved);
        QCOMPARE(m->spec().maxSeq, int64_t(128)); // what the converter wrote
        QVERIFY(!m->spec().tiedEmbeddings);       // the converter stored output.weight
        QCOMPARE(m->get("lm_head").fileName, std::string("output.weight"));
        QVERIFY(m->hasTokenizer());
        QCOMPARE(m->tokenizer().vocabSize(), 512);
    }
    void storiesLlama2c() {
        LCW_REQUIRE_SHARED(kL2c);
        auto m = lcw::Model::load(lcwtest::sharedPath(kL2c));
        checkStoriesSpec(m->spec());
        QCOMPARE(m->spec().sourceFormat, std::string("llama2c"));
        QCOMPARE(m->spec().maxSeq, int64_t(512));
        QVERIFY(m->spec().rope.interleaved);
        QVERIFY(m->spec().tiedEmbeddings);
        QVERIFY(m->hasTokenizer()); // tok512.bin beside it
        QCOMPARE(m->get("layers.3.mlp.up").fileName, std::string("w3[3]"));
        QCOMPARE(m->get("layers.3.attn.k").shape, (std::vector<int64_t>{32, 64}));
    }
    void formatsAgree() {
        LCW_REQUIRE_SHARED(kHf);
        LCW_REQUIRE_SHARED(kGguf);
        LCW_REQUIRE_SHARED(kL2c);
        auto hf = lcw::Model::load(lcwtest::sharedPath(kHf));
        auto gg = lcw::Model::load(lcwtest::sharedPath(kGguf));
        auto l2 = lcw::Model::load(lcwtest::sharedPath(kL2c));
        QCOMPARE(hf->parameterCount(), l2->parameterCount());
        // GGUF stores the tied classifier again as output.weight.
        QCOMPARE(gg->parameterCount(), hf->parameterCount() + 512 * 64);
        QCOMPARE(floats(gg->get("lm_head")), floats(gg->get("embed")));
        QCOMPARE(int(hf->tensors().size()), int(l2->tensors().size()));
        // The permutation is not the identity (the comparison below would be vacuous).
        QVERIFY(floats(hf->get("layers.0.attn.q")) != floats(l2->get("layers.0.attn.q")));
        for (const auto& t : l2->tensors()) {
            const auto a = floats(t);
            // GGUF llama keeps Meta's interleaved q/k rows, like llama2.c: equal everywhere.
            QVERIFY2(floats(gg->get(t.name)) == a, t.name.c_str());
            // HF permutes q/k rows to the rotate-half layout.
            std::vector<float> expectHf = a;
            if (t.name.ends_with("attn.q")) expectHf = metaToHf(a, 8, 8, 64);
            if (t.name.ends_with("attn.k")) expectHf = metaToHf(a, 4, 8, 64);
            QVERIFY2(floats(hf->get(t.name)) == expectHf, t.name.c_str());
        }
    }
    void quantizedGguf() {
        LCW_REQUIRE_SHARED(kGguf);
        LCW_REQUIRE_SHARED(kGgufQ);
        auto f = lcw::Model::load(lcwtest::sharedPath(kGguf));
        auto q = lcw::Model::load(lcwtest::sharedPath(kGgufQ));
        checkStoriesSpec(q->spec());
        std::set<lcw::DType> seen;
        for (const auto& t : q->tensors()) {
            seen.insert(t.dtype);
            const double e = relErr(floats(f->get(t.name)), floats(t));
            const double bound = t.dtype == lcw::DType::F32    ? 0.0
                                 : t.dtype == lcw::DType::F16  ? 1e-3
                                 : t.dtype == lcw::DType::Q8_0 ? 0.01
                                                               : 0.05;
            QVERIFY2(
                e <= bound,
                qPrintable(QString("%1 (%2): rel err %3")
                               .arg(QString::fromStdString(t.name))
                               .arg(QString::fromStdString(std::string(lcw::dtypeName(t.dtype))))
                               .arg(e)));
        }
        QVERIFY(seen.count(lcw::DType::Q5_0) && seen.count(lcw::DType::Q8_0) &&
                seen.count(lcw::DType::F16) && seen.count(lcw::DType::F32));
        // First Q5_0 block of token_embd decoded by hand from the format description:
        // f16 d | u32 qh | 16 bytes; element j<16: low nibble of byte j + bit j of qh as bit 4;
        // element 16+j: high nibble of byte j + bit 16+j of qh; value (q - 16) * d.
        const auto& e = q->get("embed");
        QCOMPARE(e.dtype, lcw::DType::Q5_0);
        const auto* b = reinterpret_cast<const uint8_t*>(e.data);
        const float d = lcw::f16ToF32(uint16_t(b[0] | (b[1] << 8)));
        const uint32_t qh =
            uint32_t(b[2]) | uint32_t(b[3]) << 8 | uint32_t(b[4]) << 16 | uint32_t(b[5]) << 24;
        float got[32];
        lcw::dequantizeRow(e.dtype, e.data, got, 32);
        for (int k = 0; k < 32; ++k) {
            const int nib = k < 16 ? (b[6 + k] & 0xF) : (b[6 + k - 16] >> 4);
            const int qv = nib | int((qh >> k) & 1) << 4;
            QCOMPARE(got[k], float(qv - 16) * d);
        }
    }
    void qwen2Sharded() {
        LCW_REQUIRE_SHARED("models/tiny-random/qwen2_sharded/model");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/tiny-random/qwen2_sharded/model"));
        const auto& s = m->spec();
        QCOMPARE(s.arch, std::string("qwen2"));
        QCOMPARE(s.nLayers, int64_t(2));
        QVERIFY(s.attnBias);
        QVERIFY(s.tiedEmbeddings);
        QVERIFY(!s.rope.interleaved);
        std::set<std::string> files;
        for (const auto& t : m->tensors()) files.insert(t.file);
        QCOMPARE(int(files.size()), 5);
        QCOMPARE(m->get("layers.1.attn.k.bias").shape, (std::vector<int64_t>{32}));
        QCOMPARE(m->parameterCount(), int64_t(139840)); // index.json total_parameters
        QVERIFY(m->hasTokenizer());
    }
    void llama2SpF32() {
        LCW_REQUIRE_SHARED("models/tiny-random/llama2_sp_f32/model");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/tiny-random/llama2_sp_f32/model"));
        const auto& s = m->spec();
        QCOMPARE(s.arch, std::string("llama"));
        QCOMPARE(s.headDim, int64_t(16));
        QVERIFY(!s.tiedEmbeddings);
        QCOMPARE(m->lmHead().fileName, std::string("lm_head.weight"));
        QCOMPARE(s.normEps, 1e-6f);
        QVERIFY(m->hasTokenizer());
    }
    void babyllama() {
        LCW_REQUIRE_SHARED("models/babyllama/tok105_model5000.bin");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/babyllama/tok105_model5000.bin"));
        const auto& s = m->spec();
        QCOMPARE(s.dim, int64_t(128));
        QCOMPARE(s.hidden, int64_t(352));
        QCOMPARE(s.vocab, int64_t(105));
        QCOMPARE(s.maxSeq, int64_t(256));
        QVERIFY(m->hasTokenizer()); // tok105.bin
        QCOMPARE(m->tokenizer().vocabSize(), 105);
    }
    void tokenizerOverride() {
        LCW_REQUIRE_SHARED(kL2c);
        lcw::LoadOptions o;
        o.tokenizerPath = lcwtest::sharedPath("models/stories260K/hf/tokenizer.json");
        auto m = lcw::Model::load(lcwtest::sharedPath(kL2c), o);
        QVERIFY(m->hasTokenizer());
        QCOMPARE(m->tokenizer().vocabSize(), 512);
    }
};

QTEST_GUILESS_MAIN(TestModelLoad)
#include "test_model_load.moc"
