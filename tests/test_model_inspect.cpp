// Read-only inspection in core: model metadata (GGUF keys, decoded file type, tokenizer facts;
// HF config.json and __metadata__; llama2.c header) and raw tensor values (a page of rows
// dequantised on demand equals ggml's own dequantisation; CSV export of rows).
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/model_metadata.h"
#include "core/io/quants.h"
#include "core/io/tensor_values.h"
#include "core/model/model.h"
#include "test_util.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace {

const lcw::MetadataEntry* entry(const lcw::ModelMetadata& md, const std::string& key) {
    for (const auto& e : md.entries)
        if (e.key == key) return &e;
    return nullptr;
}
std::string summary(const lcw::ModelMetadata& md, const std::string& key) {
    for (const auto& [k, v] : md.summary)
        if (k == key) return v;
    return {};
}

std::vector<char> readAll(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
}

std::vector<std::string> readLines(const std::string& p) {
    std::ifstream in(p);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
}

} // namespace

class TestModelInspect : public QObject {
    Q_OBJECT

private slots:
    void ggufMetadataKeysFileTypeTokenizer() {
        const char* rel = "models/gguf-k/model-Q4_K_M.gguf";
        LCW_REQUIRE_SHARED(rel);
        const lcw::ModelMetadata md = lcw::readModelMetadata(lcwtest::sharedPath(rel));
        QCOMPARE(QString::fromStdString(md.format), QStringLiteral("GGUF v3"));
        const auto* arch = entry(md, "general.architecture");
        QVERIFY(arch);
        QCOMPARE(QString::fromStdString(arch->value), QStringLiteral("llama"));
        QCOMPARE(QString::fromStdString(arch->type), QStringLiteral("string"));
        const auto* ft = entry(md, "general.file_type");
        QVERIFY(ft);
        QCOMPARE(QString::fromStdString(ft->value), QStringLiteral("15"));
        QCOMPARE(QString::fromStdString(summary(md, "File type")),
                 QStringLiteral("MOSTLY_Q4_K_M (15)"));
        const auto* tokens = entry(md, "tokenizer.ggml.tokens");
        QVERIFY(tokens);
        QCOMPARE(QString::fromStdString(tokens->type), QStringLiteral("array[string]"));
        QCOMPARE(tokens->count, uint64_t(512));
        QCOMPARE(tokens->items.size(), size_t(256)); // only the first kMetadataItems are kept
        QVERIFY(QString::fromStdString(tokens->value).startsWith("512 × string: "));
        QCOMPARE(QString::fromStdString(summary(md, "Vocabulary size")), QStringLiteral("512"));
        QVERIFY(!summary(md, "Tokenizer model").empty());
        QVERIFY(QString::fromStdString(summary(md, "Special tokens")).contains("BOS"));
        QVERIFY(QString::fromStdString(summary(md, "Tensors")).contains("q4_k"));
        QCOMPARE(QString::fromStdString(lcw::llamaFileTypeName(7)), QStringLiteral("MOSTLY_Q8_0"));
        QCOMPARE(QString::fromStdString(lcw::llamaFileTypeName(0)), QStringLiteral("ALL_F32"));
        QCOMPARE(QString::fromStdString(lcw::llamaFileTypeName(5)), QStringLiteral("unknown (5)"));
    }

    void hfAndLlama2cMetadata() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/config.json");
        const auto hf = lcw::readModelMetadata(lcwtest::sharedPath("models/stories260K/hf"));
        QCOMPARE(QString::fromStdString(hf.format), QStringLiteral("Hugging Face safetensors"));
        QVERIFY(entry(hf, "config.model_type"));
        QCOMPARE(QString::fromStdString(entry(hf, "config.model_type")->value),
                 QStringLiteral("llama"));
        QCOMPARE(QString::fromStdString(entry(hf, "config.hidden_size")->value),
                 QStringLiteral("64"));
        QVERIFY(!hf.documents.empty());
        QCOMPARE(QString::fromStdString(hf.documents[0].first), QStringLiteral("config.json"));
        QVERIFY(QString::fromStdString(hf.documents[0].second).contains("\"hidden_size\": 64"));

        const auto l2c = lcw::readModelMetadata(
            lcwtest::sharedPath("models/stories260K/llama2c/stories260K.bin"));
        QCOMPARE(QString::fromStdString(entry(l2c, "header.dim")->value), QStringLiteral("64"));
        QCOMPARE(QString::fromStdString(entry(l2c, "header.vocab_size")->value),
                 QStringLiteral("512"));
        QCOMPARE(QString::fromStdString(entry(l2c, "header.n_layers")->value), QStringLiteral("5"));
    }

    /// A page of rows dequantised by readTensorRows equals ggml's own dequantisation of the
    /// same bytes (shared/reference/gguf-quants: 32 rows × 1024).
    void pageEqualsGgmlDequantisation_data() {
        QTest::addColumn<QString>("type");
        QTest::addColumn<int>("dtype");
        QTest::newRow("q4_K") << "q4_K" << int(lcw::DType::Q4_K);
        QTest::newRow("q8_0") << "q8_0" << int(lcw::DType::Q8_0);
        QTest::newRow("q6_K") << "q6_K" << int(lcw::DType::Q6_K);
    }
    void pageEqualsGgmlDequantisation() {
        QFETCH(QString, type);
        QFETCH(int, dtype);
        const std::string base = "reference/gguf-quants/" + type.toStdString();
        LCW_REQUIRE_SHARED(base + ".bin");
        std::vector<char> bytes = readAll(lcwtest::sharedPath(base + ".bin"));
        std::vector<char> ref = readAll(lcwtest::sharedPath(base + ".dequant.f32"));
        QCOMPARE(ref.size(), size_t(32 * 1024 * 4));
        lcw::TensorView t;
        t.name = "ref." + type.toStdString();
        t.dtype = lcw::DType(dtype);
        t.shape = {32, 1024};
        t.data = reinterpret_cast<const std::byte*>(bytes.data());
        t.nbytes = bytes.size();
        std::vector<float> page;
        lcw::readTensorRows(t, 8, 16, page);
        QCOMPARE(page.size(), size_t(16 * 1024));
        QVERIFY(std::memcmp(page.data(), ref.data() + 8 * 1024 * 4, page.size() * 4) == 0);
        // Clipped at the end; out of range throws.
        lcw::readTensorRows(t, 30, 256, page);
        QCOMPARE(page.size(), size_t(2 * 1024));
        QVERIFY_THROWS_EXCEPTION(lcw::Error, lcw::readTensorRows(t, 32, 1, page));

        // CSV of rows 4..6: header + 3 lines, values read back exactly.
        const std::string csv = lcwtest::tempDir("inspect-csv") + "/t.csv";
        lcw::NullProgress np;
        lcw::writeTensorCsv(t, csv, np, 4, 3);
        const auto lines = readLines(csv);
        QCOMPARE(int(lines.size()), 4);
        QVERIFY(QString::fromStdString(lines[0]).startsWith("row,c0,c1,"));
        QCOMPARE(QString::fromStdString(lines[0]).count(','), 1024);
        const QStringList cells = QString::fromStdString(lines[2]).split(',');
        QCOMPARE(cells.size(), 1025);
        QCOMPARE(cells[0], QStringLiteral("5"));
        const float* rf = reinterpret_cast<const float*>(ref.data()) + 5 * 1024;
        for (int c : {0, 1, 31, 500, 1023}) QCOMPARE(cells[c + 1].toFloat(), rf[c]);
    }

    void wholeTensorCsvOfModelTensor() {
        const char* rel = "models/stories260K/gguf/stories260K-q4_k_m.gguf";
        LCW_REQUIRE_SHARED(rel);
        auto m = lcw::Model::load(lcwtest::sharedPath(rel));
        const lcw::TensorView& t = m->get("layers.0.attn.q");
        const std::string csv = lcwtest::tempDir("inspect-csv2") + "/q.csv";
        int reports = 0;
        lcw::FunctionProgress fp([&](double, std::string_view) {
            ++reports;
            return true;
        });
        lcw::writeTensorCsv(t, csv, fp);
        const auto lines = readLines(csv);
        QCOMPARE(int64_t(lines.size()), t.rows() + 1);
        QVERIFY(reports >= 2);
        std::vector<float> row(size_t(t.cols()));
        lcw::dequantizeRow(t.dtype, t.row(t.rows() - 1), row.data(), t.cols());
        const QStringList cells = QString::fromStdString(lines.back()).split(',');
        QCOMPARE(int64_t(cells.size()), t.cols() + 1);
        for (int64_t c = 0; c < t.cols(); ++c)
            QCOMPARE(cells[int(c) + 1].toFloat(), row[size_t(c)]);
        // Cancelling leaves no file behind (atomic write).
        const std::string csv2 = lcwtest::tempDir("inspect-csv3") + "/q.csv";
        lcw::FunctionProgress stop([](double, std::string_view) { return false; });
        QVERIFY_THROWS_EXCEPTION(lcw::Cancelled, lcw::writeTensorCsv(t, csv2, stop));
        QVERIFY(!lcwtest::exists(csv2));
    }
};

QTEST_GUILESS_MAIN(TestModelInspect)
#include "test_model_inspect.moc"
