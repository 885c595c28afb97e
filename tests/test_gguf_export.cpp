// Tests of the GGUF writer (core/export/gguf_export.h): every family round-trips through a GGUF
// file (lcw loads it back and computes the same logits and token ids), the layouts are
// llama.cpp's (the F32 export of gguf-k/hf is byte for byte the file llama.cpp quantised there),
// quantised exports hold exactly quantizeRow's blocks, an overlay's GGUF packing is copied as it
// is, and bad paths or a cancellation leave no file.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/compressed_model.h"
#include "core/compress/imatrix.h"
#include "core/compress/recipe.h"
#include "core/export/gguf_export.h"
#include "core/export/gguf_mix.h"
#include "core/io/gguf.h"
#include "core/io/quants.h"
#include "core/model/expected_tensors.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "mem_weights.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <QtTest/QtTest>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

using namespace lcw;
namespace fs = std::filesystem;

namespace {

const char* kText = " The game 's battle system , the BliTZ system , is carried over directly "
                    "from Valkyira Chronicles . During missions , players select each unit.";

// Float32 activations in every product (SessionOptions::exactActivations): these tests check that
// a file holds the same weights as the model it was written from, whatever kernels serve them.
std::vector<float> logitsOf(const WeightSource& w, const std::vector<int32_t>& ids) {
    SessionOptions o;
    o.exactActivations = true;
    Session s(w, o);
    std::vector<float> out;
    s.forward(ids, out, true);
    return out;
}

double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

std::unique_ptr<Model> load(const std::string& path) {
    LoadOptions lo;
    lo.requireTokenizer = true;
    return Model::load(path, lo);
}

GgufExportResult exportTo(const Model& m, const WeightSource& w, const std::string& path,
                          std::optional<DType> type = std::nullopt) {
    GgufExportOptions o;
    o.path = path;
    o.type = type;
    return exportGguf(m, w, o);
}

const GgufTensorReport* reportOf(const GgufExportResult& r, const std::string& name) {
    for (const auto& t : r.tensors)
        if (t.name == name) return &t;
    return nullptr;
}

// The metadata llama.cpp's loader reads for each family.
void checkMetadata(const GgufFile& g, const std::string& arch, int64_t vocab) {
    QCOMPARE(g.getString("general.architecture").value_or(""), arch);
    QVERIFY(g.getInt("general.file_type").has_value());
    const std::string p = arch + ".";
    for (const char* k : {"block_count", "context_length", "embedding_length"})
        QVERIFY2(g.getInt(p + k).has_value(), (p + k).c_str());
    if (arch == "mamba") {
        for (const char* k :
             {"ssm.conv_kernel", "ssm.inner_size", "ssm.state_size", "ssm.time_step_rank"})
            QVERIFY2(g.getInt(p + k).value_or(0) > 0, (p + k).c_str());
    } else {
        for (const char* k :
             {"feed_forward_length", "attention.head_count", "attention.head_count_kv"})
            QVERIFY2(g.getInt(p + k).value_or(0) > 0, (p + k).c_str());
    }
    const bool ln = arch == "gpt2" || arch == "gptneox" || arch == "stablelm" || arch == "falcon" ||
                    arch == "bloom";
    QVERIFY(
        g.getDouble(p + (ln ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon"))
            .value_or(0) > 0);
    if (arch != "gpt2" && arch != "bloom" && arch != "mamba")
        QVERIFY(g.getInt(p + "rope.dimension_count").value_or(0) > 0);
    const auto model = g.getString("tokenizer.ggml.model");
    QVERIFY(model == "llama" || model == "gpt2");
    const GgufValue* toks = g.find("tokenizer.ggml.tokens");
    QVERIFY(toks && int64_t(toks->count) == vocab);
    const GgufValue* types = g.find("tokenizer.ggml.token_type");
    QVERIFY(types && types->count == toks->count);
    if (model == "gpt2") {
        QVERIFY(g.find("tokenizer.ggml.merges"));
        QVERIFY(g.getString("tokenizer.ggml.pre").has_value());
    } else {
        const GgufValue* scores = g.find("tokenizer.ggml.scores");
        QVERIFY(scores && scores->count == toks->count);
    }
    QVERIFY(g.getBool("tokenizer.ggml.add_bos_token").has_value());
}

// The weights of `m` with every source of an F16 tensor of the plan rounded to f16.
std::unique_ptr<compress::CompressedModel> roundedToF16(const Model& m) {
    auto ov = std::make_unique<compress::CompressedModel>(m);
    for (const auto& t : planGgufTensors(m, DType::F16)) {
        if (t.defaultType != DType::F16) continue;
        for (const auto& name : t.sources) {
            const TensorView& v = m.get(name);
            std::vector<float> x(size_t(v.numel()));
            for (int64_t r = 0; r < v.rows(); ++r)
                dequantizeRow(v.dtype, v.row(r), x.data() + r * v.cols(), v.cols());
            for (float& f : x) f = f16ToF32(f32ToF16(f));
            ov->setFloatTensor(name, std::move(x));
        }
    }
    return ov;
}

// Row r of llama.cpp's q/k layout comes from HF row sourceRow: convert_hf_to_gguf.py reshapes
// each head's rows as (2, hd/2) and swaps the axes, so row 2j + h of a head is HF row
// h * hd/2 + j.
int64_t hfRowOfLlamaRow(int64_t r, int64_t hd) {
    const int64_t head = r / hd, i = r % hd;
    return head * hd + (i % 2) * (hd / 2) + i / 2;
}

// Generated weights of a spec (what expectedTensors lists), norms around 1.
void fillRandom(lcwtest::MemWeights& w, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const auto& e : expectedTensors(w.sp)) {
        int64_t n = 1;
        for (int64_t d : e.shape) n *= d;
        std::vector<float> v(static_cast<size_t>(n));
        const bool norm =
            e.name.find("norm") != std::string::npos && e.name.find(".bias") == std::string::npos;
        for (float& x : v) x = norm ? 1.0f + 0.1f * nd(rng) : 0.2f * nd(rng);
        w.add(e.name, e.shape, v);
    }
}

ModelSpec baseSpec(const std::string& arch) {
    ModelSpec s;
    s.arch = arch;
    s.sourceFormat = "memory";
    s.dim = 32;
    s.nLayers = 2;
    s.nHeads = 4;
    s.nKvHeads = 4;
    s.headDim = 8;
    s.hidden = 48;
    s.vocab = 512;
    s.maxSeq = 64;
    s.normEps = 1e-5f;
    return s;
}

void layerNormFamily(ModelSpec& s, const char* act) {
    s.norm = NormType::LayerNorm;
    s.normBias = true;
    s.gatedMlp = false;
    s.hiddenAct = act;
}

ModelSpec familySpec(const std::string& variant) {
    if (variant == "gpt_neox" || variant == "gpt_neox_seq") {
        ModelSpec s = baseSpec("gpt_neox");
        layerNormFamily(s, "gelu");
        s.attnBias = s.attnOutBias = s.mlpBias = true;
        s.rope.partialRotaryFactor = 0.5;
        if (variant == "gpt_neox") s.residual = ResidualStyle::Parallel;
        return s;
    }
    if (variant == "stablelm" || variant == "stablelm_par") {
        ModelSpec s = baseSpec("stablelm");
        layerNormFamily(s, "silu");
        s.gatedMlp = true;
        s.nKvHeads = 2;
        s.rope.partialRotaryFactor = 0.25;
        if (variant == "stablelm") {
            s.attnBias = true;
            s.qkNorm = s.qkNormPerHead = true;
        } else {
            s.residual = ResidualStyle::Parallel;
            s.sharedParallelNorm = true;
        }
        return s;
    }
    if (variant == "falcon_new" || variant == "falcon_mq") {
        ModelSpec s = baseSpec("falcon");
        layerNormFamily(s, "gelu");
        s.residual = ResidualStyle::Parallel;
        s.tiedEmbeddings = true;
        s.nKvHeads = variant == "falcon_mq" ? 1 : 2;
        s.sharedParallelNorm = variant == "falcon_mq";
        return s;
    }
    if (variant == "bloom") {
        ModelSpec s = baseSpec("bloom");
        layerNormFamily(s, "gelu_tanh");
        s.posEmbed = PosEmbedding::Alibi;
        s.embedNorm = true;
        s.tiedEmbeddings = true;
        s.attnBias = s.attnOutBias = s.mlpBias = true;
        return s;
    }
    if (variant == "gemma2") {
        ModelSpec s = baseSpec("gemma2");
        s.nKvHeads = 2;
        s.hiddenAct = "gelu_tanh";
        s.normPlusOne = s.postNorms = s.tiedEmbeddings = true;
        s.embedScale = float(std::sqrt(double(s.dim)));
        s.attnSoftcap = 2.0f;
        s.finalSoftcap = 1.5f;
        s.slidingWindow = 4;
        s.slidingLayers = {true, false};
        return s;
    }
    if (variant == "qwen3") {
        ModelSpec s = baseSpec("qwen3");
        s.nKvHeads = 2;
        s.qkNorm = true;
        return s;
    }
    // llama with q/k/v/o biases (permuted with the rows) and linear rope scaling
    ModelSpec s = baseSpec("llama");
    s.nKvHeads = 2;
    s.attnBias = s.attnOutBias = true;
    s.rope.type = RopeType::Linear;
    s.rope.factor = 2.0;
    return s;
}

} // namespace

class TestGgufExport : public QObject {
    Q_OBJECT

private:
    std::string m_dir;

private slots:
    void initTestCase() { m_dir = lcwtest::tempDir("gguf-export"); }

    // Every shared family: F32 and F16 exports load back with the same logits and token ids.
    void sharedFamilies_data() {
        QTest::addColumn<QString>("path");
        QTest::addColumn<QString>("arch");
        for (const char* f : {"gemma", "gpt2", "llama2_sp_f32", "mamba", "mixtral_moe", "opt",
                              "phi3", "qwen2_sharded"})
            QTest::newRow(f) << QString("models/tiny-random/%1/model").arg(f) << QString();
        QTest::newRow("stories260K") << QString("models/stories260K/hf") << QString("llama");
        QTest::newRow("gguf-k") << QString("models/gguf-k/hf") << QString("llama");
    }
    void sharedFamilies() {
        QFETCH(QString, path);
        LCW_REQUIRE_SHARED(path.toStdString() + "/config.json");
        auto hf = load(lcwtest::sharedPath(path.toStdString()));
        const std::string out = m_dir + "/" + QTest::currentDataTag() + ".gguf";
        if (hf->spec().arch == "opt") {
            QVERIFY_THROWS_EXCEPTION(UnsupportedError, exportTo(*hf, *hf, out));
            QVERIFY(!fs::exists(out));
            QSKIP("llama.cpp has no OPT architecture: the export refuses it (checked)");
        }
        const auto arch = ggufArchitecture(hf->spec());
        QVERIFY(arch.has_value());
        const std::vector<int32_t> textIds = hf->tokenizer().encode(kText);
        std::vector<int32_t> ids(textIds.begin(), textIds.begin() + 12);
        const auto ref = logitsOf(*hf, ids);

        const auto r = exportTo(*hf, *hf, out, DType::F32);
        QCOMPARE(int(r.status), int(Status::Ok));
        QCOMPARE(r.arch, *arch);
        QVERIFY(r.bytes == fs::file_size(out));
        checkMetadata(readGguf(out), *arch, hf->spec().vocab);
        auto g = load(out);
        QCOMPARE(g->spec().arch, hf->spec().arch == "mixtral" || hf->spec().arch == "mistral"
                                     ? std::string("llama")
                                     : hf->spec().arch);
        const double d32 = maxAbsDiff(logitsOf(*g, ids), ref);
        QVERIFY2(d32 <= 1e-4, qPrintable(QString("F32 logits differ by %1").arg(d32)));
        // llama.cpp tokenizes from the file's vocabulary: the same ids as the HF tokenizer.
        QCOMPARE(g->tokenizer().encode(kText), textIds);
        QCOMPARE(g->tokenizer().encode(kText, false), hf->tokenizer().encode(kText, false));

        // F16: equal to the source with the same weights rounded to f16.
        const std::string out16 = m_dir + "/" + QTest::currentDataTag() + "-f16.gguf";
        const auto r16 = exportTo(*hf, *hf, out16, DType::F16);
        QCOMPARE(r16.fileType, 1u);
        int f16Tensors = 0;
        for (const auto& t : r16.tensors) {
            f16Tensors += t.type == DType::F16;
            QVERIFY(t.type == DType::F16 || t.type == DType::F32);
            QVERIFY(t.type == DType::F32 || t.status == GgufTensorStatus::Converted);
        }
        QVERIFY(f16Tensors > 0);
        auto rounded = roundedToF16(*hf);
        auto g16 = load(out16);
        const double d16 = maxAbsDiff(logitsOf(*g16, ids), logitsOf(*rounded, ids));
        QVERIFY2(d16 <= 1e-4, qPrintable(QString("F16 logits differ by %1").arg(d16)));
    }

    // Families without a shared model: generated weights under canonical names, exported, loaded
    // back by lcw's GGUF loader, the same logits.
    void generatedFamilies_data() {
        QTest::addColumn<QString>("variant");
        QTest::addColumn<QString>("arch");
        const std::pair<const char*, const char*> v[] = {
            {"gpt_neox", "gptneox"},      {"gpt_neox_seq", "gptneox"}, {"stablelm", "stablelm"},
            {"stablelm_par", "stablelm"}, {"falcon_new", "falcon"},    {"falcon_mq", "falcon"},
            {"bloom", "bloom"},           {"gemma2", "gemma2"},        {"qwen3", "qwen3"},
            {"llama_bias", "llama"}};
        for (const auto& [name, arch] : v) QTest::newRow(name) << name << arch;
    }
    void generatedFamilies() {
        QFETCH(QString, variant);
        QFETCH(QString, arch);
        LCW_REQUIRE_SHARED("models/stories260K/hf/tokenizer.json");
        auto tokModel = load(lcwtest::sharedPath("models/stories260K/hf"));
        lcwtest::MemWeights w;
        w.sp = familySpec(variant.toStdString());
        fillRandom(w, 7);
        const std::string out = m_dir + "/gen-" + variant.toStdString() + ".gguf";
        GgufExportOptions o;
        o.path = out;
        const auto r = exportGguf(w, &tokModel->tokenizer(), o);
        QCOMPARE(QString::fromStdString(r.arch), arch);
        checkMetadata(readGguf(out), arch.toStdString(), w.sp.vocab);
        auto g = load(out);
        const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 11, 45, 99, 300, 2, 77, 5};
        const double d = maxAbsDiff(logitsOf(*g, ids), logitsOf(w, ids));
        QVERIFY2(d <= 1e-4, qPrintable(QString("logits differ by %1").arg(d)));
        if (variant == "llama_bias") {
            const GgufFile f = readGguf(out);
            QCOMPARE(f.getString("llama.rope.scaling.type").value_or(""), std::string("linear"));
            QVERIFY(f.findTensor("blk.0.attn_q.bias") && f.findTensor("blk.1.attn_output.bias"));
        }
    }

    // The F32 export of gguf-k/hf is the file llama.cpp's tools used there (same tensors, same
    // bytes), and a GGUF source is copied tensor for tensor.
    void matchesLlamaCppInput() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        auto hf = load(lcwtest::sharedPath("models/gguf-k/hf"));
        const std::string out = m_dir + "/gguf-k-f32.gguf";
        exportTo(*hf, *hf, out, DType::F32);
        const GgufFile ref = readGguf(lcwtest::sharedPath("models/gguf-k/model-f32.gguf"));
        auto sameTensors = [&](const GgufFile& a) {
            QCOMPARE(a.tensors.size(), ref.tensors.size());
            for (const auto& t : ref.tensors) {
                const TensorView* x = a.findTensor(t.name);
                QVERIFY2(x, t.name.c_str());
                QVERIFY(x->shape == t.shape && x->dtype == t.dtype && x->nbytes == t.nbytes);
                QVERIFY2(std::memcmp(x->data, t.data, t.nbytes) == 0, t.name.c_str());
            }
        };
        sameTensors(readGguf(out));
        auto g = load(lcwtest::sharedPath("models/gguf-k/model-f32.gguf"));
        const std::string again = m_dir + "/gguf-k-again.gguf";
        const auto r = exportTo(*g, *g, again);
        for (const auto& t : r.tensors) QCOMPARE(int(t.status), int(GgufTensorStatus::Exact));
        sameTensors(readGguf(again));
        const GgufFile a = readGguf(again);
        for (const char* k :
             {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
            QCOMPARE(a.find(k)->strings, ref.find(k)->strings);
            QCOMPARE(a.find(k)->raw, ref.find(k)->raw);
        }
    }

    // Q8_0: every block is lcw::quantizeRow's for the source row (llama's q/k rows permuted).
    void q8_0BlocksAreQuantizeRows_data() {
        QTest::addColumn<QString>("path");
        QTest::newRow("qwen2") << "models/tiny-random/qwen2_sharded/model";
        QTest::newRow("gguf-k") << "models/gguf-k/hf";
        QTest::newRow("phi3") << "models/tiny-random/phi3/model";
    }
    void q8_0BlocksAreQuantizeRows() {
        QFETCH(QString, path);
        LCW_REQUIRE_SHARED(path.toStdString() + "/config.json");
        auto hf = load(lcwtest::sharedPath(path.toStdString()));
        const std::string out = m_dir + "/" + QTest::currentDataTag() + "-q8.gguf";
        const auto r = exportTo(*hf, *hf, out, DType::Q8_0);
        QCOMPARE(r.fileType, 7u);
        const GgufFile g = readGguf(out);
        const bool llama = r.arch == "llama";
        int checked = 0;
        for (const auto& info : planGgufTensors(*hf, DType::Q8_0)) {
            const TensorView* t = g.findTensor(info.name);
            QVERIFY(t);
            if (info.floatOnly) {
                QCOMPARE(t->dtype, DType::F32);
                continue;
            }
            QCOMPARE(t->dtype, DType::Q8_0);
            QCOMPARE(int(reportOf(r, info.name)->status), int(GgufTensorStatus::Converted));
            // the sources' rows, concatenated
            std::vector<std::vector<float>> rows;
            for (const auto& s : info.sources) {
                const TensorView& v = hf->get(s);
                for (int64_t i = 0; i < v.rows(); ++i) {
                    rows.emplace_back(size_t(v.cols()));
                    dequantizeRow(v.dtype, v.row(i), rows.back().data(), v.cols());
                }
            }
            QCOMPARE(int64_t(rows.size()), t->rows());
            const bool permuted = llama && (endsWith(info.name, "attn_q.weight") ||
                                            endsWith(info.name, "attn_k.weight"));
            std::vector<std::byte> want(size_t(t->rowBytes()));
            for (int64_t i = 0; i < t->rows(); ++i) {
                const int64_t src = permuted ? hfRowOfLlamaRow(i, hf->spec().headDim) : i;
                quantizeRow(DType::Q8_0, rows[size_t(src)].data(), want.data(), t->cols());
                QVERIFY2(std::memcmp(want.data(), t->row(i), want.size()) == 0,
                         qPrintable(QString("%1 row %2").arg(info.name.c_str()).arg(i)));
            }
            ++checked;
        }
        QVERIFY(checked > 0);
    }

    // An overlay packed in GGUF blocks is copied as it is; other quantisations are re-encoded.
    // Either way lcw runs the file as it ran the configuration.
    void overlayExactAndReEncoded() {
        LCW_REQUIRE_SHARED("models/gguf-k/hf/config.json");
        auto hf = load(lcwtest::sharedPath("models/gguf-k/hf"));
        NullProgress np;
        const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 11, 45, 99, 300, 2};

        auto q4 = compress::compress(*hf, compress::findPreset("Q4_0").recipe, np).model;
        const std::string out = m_dir + "/overlay-q4_0.gguf";
        const auto r = exportTo(*hf, *q4, out);
        const GgufFile g = readGguf(out);
        for (const auto& info : planGgufTensors(*q4)) {
            const GgufTensorReport* t = reportOf(r, info.name);
            if (info.sources.size() == 1 && q4->compressed(info.sources[0])) {
                QCOMPARE(t->type, DType::Q4_0);
                QCOMPARE(int(t->status), int(GgufTensorStatus::Exact));
            }
        }
        // blk.0.attn_v: the overlay's packed codes, byte for byte
        const auto* v = q4->compressed("layers.0.attn.v");
        const TensorView* gv = g.findTensor("blk.0.attn_v.weight");
        QVERIFY(v && gv && gv->nbytes == v->packed.codes.size());
        QVERIFY(std::memcmp(gv->data, v->packed.codes.data(), gv->nbytes) == 0);
        auto gq = load(out);
        double d = maxAbsDiff(logitsOf(*gq, ids), logitsOf(*q4, ids));
        QVERIFY2(d <= 1e-4, qPrintable(QString("q4_0 overlay: logits differ by %1").arg(d)));

        auto w4 = compress::compress(*hf, compress::findPreset("W4A16-g64").recipe, np).model;
        const std::string out4 = m_dir + "/overlay-w4.gguf";
        const auto r4 = exportTo(*hf, *w4, out4);
        const GgufTensorReport* t4 = reportOf(r4, "blk.0.attn_q.weight");
        QCOMPARE(int(t4->status), int(GgufTensorStatus::ReEncoded));
        QCOMPARE(t4->type, DType::F32);
        QVERIFY(t4->note.find("int4") != std::string::npos);
        auto g4 = load(out4);
        d = maxAbsDiff(logitsOf(*g4, ids), logitsOf(*w4, ids));
        QVERIFY2(d <= 1e-4, qPrintable(QString("int4 overlay: logits differ by %1").arg(d)));

        // re-encoded into q8_0: quantizeRow of the overlay's values
        const std::string out8 = m_dir + "/overlay-w4-q8.gguf";
        const auto r8 = exportTo(*hf, *w4, out8, DType::Q8_0);
        QCOMPARE(int(reportOf(r8, "blk.1.ffn_down.weight")->status),
                 int(GgufTensorStatus::ReEncoded));
        const GgufFile g8 = readGguf(out8);
        const TensorView* down = g8.findTensor("blk.1.ffn_down.weight");
        const TensorView& src = w4->get("layers.1.mlp.down");
        std::vector<std::byte> want(size_t(down->rowBytes()));
        for (int64_t i = 0; i < down->rows(); ++i) {
            quantizeRow(DType::Q8_0, reinterpret_cast<const float*>(src.row(i)), want.data(),
                        down->cols());
            QVERIFY(std::memcmp(want.data(), down->row(i), want.size()) == 0);
        }
    }

    // Low-rank factors are multiplied out and pruned int4 weights re-encoded, so the F32 file
    // runs as the configuration; per-block shapes (structured pruning) have no GGUF form.
    void lowRankPrunedAndStructured() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/config.json");
        auto hf = load(lcwtest::sharedPath("models/stories260K/hf"));
        NullProgress np;
        const auto recipe = compress::Recipe::fromJson(nlohmann::json::parse(R"({
            "lcw_recipe": 1, "name": "mixed", "rules": [
              {"targets": ["layers.*.mlp.*"], "lowrank": {"rank": 16}},
              {"targets": ["layers.*.attn.*"], "sparsity": {"ratio": 0.5},
               "weight": {"bits": 4, "granularity": "group", "group_size": 32,
                          "symmetric": false}}]})"));
        auto ov = compress::compress(*hf, recipe, np).model;
        const std::string out = m_dir + "/lowrank.gguf";
        const auto r = exportTo(*hf, *ov, out);
        const GgufTensorReport* gate = reportOf(r, "blk.2.ffn_gate.weight");
        QCOMPARE(int(gate->status), int(GgufTensorStatus::ReEncoded));
        QVERIFY(gate->note.find("low-rank") != std::string::npos);
        QVERIFY(reportOf(r, "blk.0.attn_k.weight")->note.find("pruned") != std::string::npos);
        const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 11, 45, 99};
        auto g = load(out);
        const double d = maxAbsDiff(logitsOf(*g, ids), logitsOf(*ov, ids));
        QVERIFY2(d <= 1e-4, qPrintable(QString("logits differ by %1").arg(d)));

        const auto st = compress::Recipe::fromJson(nlohmann::json::parse(R"({
            "lcw_recipe": 1, "name": "st", "rules": [
              {"targets": ["layers.*.mlp.down"], "structured": {"mlp_ratio": 0.25}}]})"));
        auto sov = compress::compress(*hf, st, np).model;
        const std::string outS = m_dir + "/structured.gguf";
        QVERIFY_THROWS_EXCEPTION(UnsupportedError, exportTo(*hf, *sov, outS));
        QVERIFY(!fs::exists(outS));
    }

    // llama.cpp's mixes plug in through the type callback: from gguf-k's F32 GGUF, with and
    // without its imatrix, every tensor has the type and the bytes llama-quantize wrote.
    void llamaCppMixThroughTheTypeCallback_data() {
        QTest::addColumn<QString>("preset");
        QTest::addColumn<bool>("imatrix");
        QTest::newRow("Q4_K_M") << "Q4_K_M" << false;
        QTest::newRow("Q6_K") << "Q6_K" << false;
        QTest::newRow("Q4_K_M-imat") << "Q4_K_M" << true;
        QTest::newRow("Q2_K-imat") << "Q2_K" << true;
        QTest::newRow("IQ4_NL-imat") << "IQ4_NL" << true;
    }
    void llamaCppMixThroughTheTypeCallback() {
        QFETCH(QString, preset);
        QFETCH(bool, imatrix);
        const std::string dir = "models/gguf-k/";
        const std::string refName =
            dir + "model-" + preset.toStdString() + (imatrix ? "-imat" : "") + ".gguf";
        LCW_REQUIRE_SHARED(refName);
        const std::string srcPath = lcwtest::sharedPath(dir + "model-f32.gguf");
        auto src = load(srcPath);
        const GgufFile in = readGguf(srcPath);
        GgufMixOptions mo;
        mo.hasImatrix = imatrix;
        const LlamaFtype ft = llamaFtypeFromName(preset.toStdString());
        const GgufMix mix = chooseGgufMix(ft, ggufMixModel(in), ggufMixTensors(in), mo);
        compress::Imatrix im;
        if (imatrix) im = compress::readImatrix(lcwtest::sharedPath(dir + "imatrix.dat"));
        std::map<std::string, std::vector<float>> importance;
        GgufExportOptions o;
        o.path = m_dir + "/mix-" + std::string(QTest::currentDataTag()) + ".gguf";
        o.fileType = llamaFtypeInfo(ft).id;
        o.typeFor = [&](const GgufTensorInfo& t) { return mix.find(t.name)->type; };
        o.importance = [&](const std::string& name) -> const float* {
            if (!imatrix) return nullptr;
            const TensorView* t = in.findTensor(name);
            auto v = im.importance(name, t->cols(), t->shape.size() == 3 ? t->shape[0] : 1);
            if (v.empty()) return nullptr;
            return (importance[name] = std::move(v)).data();
        };
        const auto r = exportGguf(*src, *src, o);
        const GgufFile out = readGguf(o.path);
        const GgufFile ref = readGguf(lcwtest::sharedPath(refName));
        QCOMPARE(out.getInt("general.file_type"), ref.getInt("general.file_type"));
        QCOMPARE(out.tensors.size(), ref.tensors.size());
        for (const auto& t : ref.tensors) {
            const TensorView* x = out.findTensor(t.name);
            QVERIFY2(x, t.name.c_str());
            QVERIFY2(x->dtype == t.dtype, qPrintable(QString("%1: %2, llama-quantize %3")
                                                         .arg(t.name.c_str())
                                                         .arg(dtypeName(x->dtype).data())
                                                         .arg(dtypeName(t.dtype).data())));
            QVERIFY(x->nbytes == t.nbytes);
            QVERIFY2(std::memcmp(x->data, t.data, t.nbytes) == 0, t.name.c_str());
        }
        QVERIFY(!r.tensors.empty());

        // From the Hugging Face folder (q/k rows permuted on the way): the same file.
        auto hf = load(lcwtest::sharedPath(dir + "hf"));
        const auto plan = planGgufTensors(*hf);
        const GgufMix hfMix = chooseGgufMix(ft, ggufMixModelOf(*hf), ggufMixTensorsOf(plan), mo);
        o.path = m_dir + "/mix-hf-" + std::string(QTest::currentDataTag()) + ".gguf";
        o.typeFor = [&](const GgufTensorInfo& t) { return hfMix.find(t.name)->type; };
        exportGguf(*hf, *hf, o);
        const GgufFile fromHf = readGguf(o.path);
        for (const auto& t : ref.tensors) {
            const TensorView* x = fromHf.findTensor(t.name);
            QVERIFY2(x && x->dtype == t.dtype && x->nbytes == t.nbytes, t.name.c_str());
            QVERIFY2(std::memcmp(x->data, t.data, t.nbytes) == 0, t.name.c_str());
        }
    }

    // The type callback sees every tensor; rows that do not fit fall back as llama-quantize does.
    void typeCallbackAndFallback() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/config.json");
        auto hf = load(lcwtest::sharedPath("models/stories260K/hf"));
        GgufExportOptions o;
        o.path = m_dir + "/stories-callback.gguf";
        std::vector<std::string> seen;
        o.typeFor = [&](const GgufTensorInfo& t) {
            seen.push_back(t.name);
            if (t.floatOnly) return DType::F32;
            return t.name.find("attn_v") != std::string::npos ? DType::Q8_0 : DType::Q4_K;
        };
        std::vector<std::string> asked;
        o.importance = [&](const std::string& name) -> const float* {
            asked.push_back(name);
            return nullptr;
        };
        const auto r = exportGguf(*hf, *hf, o);
        QCOMPARE(seen.size(), r.tensors.size());
        QCOMPARE(asked.size(), r.tensors.size());
        const GgufTensorReport* q = reportOf(r, "blk.0.attn_q.weight"); // rows of 64
        QCOMPARE(q->requested, DType::Q4_K);
        QCOMPARE(q->type, DType::Q5_0);
        QVERIFY(q->note.find("fallback to q5_0") != std::string::npos);
        const GgufTensorReport* down = reportOf(r, "blk.0.ffn_down.weight"); // rows of 172
        QCOMPARE(down->type, DType::F16);
        QCOMPARE(reportOf(r, "blk.0.attn_v.weight")->type, DType::Q8_0);
        QCOMPARE(reportOf(r, "blk.0.attn_norm.weight")->type, DType::F32);
        const GgufFile g = readGguf(o.path);
        QCOMPARE(g.findTensor("blk.0.attn_q.weight")->dtype, DType::Q5_0);
        QCOMPARE(g.findTensor("blk.0.ffn_down.weight")->dtype, DType::F16);
        QCOMPARE(ggufFallbackType(DType::Q6_K, 512), DType::Q6_K);
        QCOMPARE(ggufFallbackType(DType::Q6_K, 96), DType::Q8_0);
        QCOMPARE(ggufFallbackType(DType::Q3_K, 96), DType::IQ4_NL);
        QCOMPARE(ggufFallbackType(DType::Q5_K, 100), DType::F16);
        QCOMPARE(ggufFallbackType(DType::Q4_0, 100), DType::F16);
    }

    void badPathsAndCancelLeaveNoFile() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/config.json");
        auto hf = load(lcwtest::sharedPath("models/stories260K/hf"));
        const std::string missing = m_dir + "/no-such-folder/x.gguf";
        try {
            exportTo(*hf, *hf, missing);
            QFAIL("no error for a missing folder");
        } catch (const ArgumentError& e) {
            QVERIFY(std::string(e.what()).find("does not exist") != std::string::npos);
        }
        QVERIFY(!fs::exists(m_dir + "/no-such-folder"));

        const std::string dir = m_dir + "/cancel";
        fs::create_directories(dir);
        GgufExportOptions o;
        o.path = dir + "/c.gguf";
        o.type = DType::Q8_0;
        int calls = 0;
        FunctionProgress p([&](double, std::string_view) { return ++calls < 5; });
        o.progress = &p;
        const auto r = exportGguf(*hf, *hf, o);
        QCOMPARE(int(r.status), int(Status::Cancelled));
        QCOMPARE(calls, 5);
        QVERIFY(fs::is_empty(dir)); // neither the file nor a temporary
    }

    void cliExportJson() {
        LCW_REQUIRE_SHARED("models/gguf-k/hf/config.json");
        const QString out = QString::fromStdString(m_dir + "/cli-q8.gguf");
        const auto run = lcwtest::runCli(
            {"export", QString::fromStdString(lcwtest::sharedPath("models/gguf-k/hf")), "--preset",
             "Q8_0", "--format", "gguf", "--out", out, "--json", "--quiet"});
        QVERIFY2(run.code == 0, run.err.constData());
        const auto j = nlohmann::json::parse(run.out.toStdString());
        QCOMPARE(j["architecture"].get<std::string>(), std::string("llama"));
        QCOMPARE(j["preset"].get<std::string>(), std::string("Q8_0"));
        QCOMPARE(j["bytes"].get<uint64_t>(), uint64_t(fs::file_size(out.toStdString())));
        // llama.cpp's Q8_0 mix: every matrix in q8_0 (general.file_type 7), norms in f32.
        int q8 = 0;
        for (const auto& t : j["tensors"]) {
            QVERIFY(t.contains("name") && t.contains("type") && t.contains("bytes"));
            q8 += t["type"] == "q8_0";
            if (t["shape"].size() == 1) QCOMPARE(t["type"].get<std::string>(), std::string("f32"));
        }
        QCOMPARE(j["file_type"].get<int>(), 7);
        QCOMPARE(q8, 4 * 7 + 2);
        const auto bad = lcwtest::runCli(
            {"export", QString::fromStdString(lcwtest::sharedPath("models/stories260K/hf")),
             "--out", QString::fromStdString(m_dir + "/nope/x.gguf")});
        QCOMPARE(bad.code, 1);
        QVERIFY(bad.err.contains("does not exist"));
        const auto badType = lcwtest::runCli(
            {"export", QString::fromStdString(lcwtest::sharedPath("models/stories260K/hf")),
             "--out", out, "--type", "q9_9"});
        QCOMPARE(badType.code, 2);
    }

private:
    static bool endsWith(const std::string& s, const std::string& x) {
        return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
    }
};

QTEST_GUILESS_MAIN(TestGgufExport)
#include "test_gguf_export.moc"
