// GGUF block quantisers against ggml: byte-identical blocks on the reference rows made with
// llama.cpp b4747 (../shared/reference/gguf-quants), and on every tensor of llama-quantize's files
// of the gguf-k model (../shared/models/gguf-k); dequantisation bit-identical to ggml's; error
// bounds of quantise -> dequantise on random rows; bad input; IQ4 weights in the runtime.
#include "core/common/error.h"
#include "core/compress/compressed_model.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/io/gguf.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/model/synthetic.h"
#include "core/runtime/session.h"
#include "mem_weights.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

using namespace lcw;
using compress::WeightMethod;

namespace {

const char* kRefDir = "reference/gguf-quants";
const char* kModelDir = "models/gguf-k";

struct RefType {
    const char* file; // ggml_type_name as the generator wrote it
    DType type;
};
const RefType kRefTypes[] = {
    {"q4_0", DType::Q4_0}, {"q4_1", DType::Q4_1},     {"q5_0", DType::Q5_0},
    {"q5_1", DType::Q5_1}, {"q8_0", DType::Q8_0},     {"q2_K", DType::Q2_K},
    {"q3_K", DType::Q3_K}, {"q4_K", DType::Q4_K},     {"q5_K", DType::Q5_K},
    {"q6_K", DType::Q6_K}, {"iq4_nl", DType::IQ4_NL}, {"iq4_xs", DType::IQ4_XS},
};

std::vector<char> readAll(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return {};
    return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}
std::vector<float> readFloats(const std::string& path) {
    const auto b = readAll(path);
    std::vector<float> v(b.size() / 4);
    std::memcpy(v.data(), b.data(), v.size() * 4);
    return v;
}

// llama.cpp's legacy imatrix file as llama-quantize reads it: per entry the name, the call count
// and the sums of x^2, which llama-quantize divides by the call count. Enough for this test; the
// reader lcw ships is tested elsewhere.
std::map<std::string, std::vector<float>> readLegacyImatrix(const std::string& path) {
    std::map<std::string, std::vector<float>> out;
    std::ifstream f(path, std::ios::binary);
    auto rd = [&](void* p, size_t n) {
        f.read(static_cast<char*>(p), std::streamsize(n));
        if (!f) throw std::runtime_error("truncated imatrix " + path);
    };
    int32_t n = 0;
    rd(&n, 4);
    for (int32_t i = 0; i < n; ++i) {
        int32_t len = 0, ncall = 0, nval = 0;
        rd(&len, 4);
        std::string name(size_t(len), '\0');
        rd(name.data(), size_t(len));
        rd(&ncall, 4);
        rd(&nval, 4);
        std::vector<float> v(static_cast<size_t>(nval));
        rd(v.data(), size_t(nval) * 4);
        if (ncall > 0)
            for (auto& x : v) x /= float(ncall);
        out[name] = std::move(v);
    }
    return out;
}

double relRms(const float* a, const float* b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(a[i]) * a[i];
    }
    return std::sqrt(num / den);
}

std::vector<float> gaussianRows(int rows, int cols, uint32_t seed) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.f, 0.02f);
    std::vector<float> x(size_t(rows) * cols);
    for (auto& v : x) v = nd(g);
    return x;
}

/// A synthetic llama whose rows are multiples of 256 except the MLP down projections (320 = 10
/// blocks of 32): k-quants apply to most layers and fall back on mlp.down.
const Model& kquantModel() {
    static std::unique_ptr<Model> m = [] {
        ModelSpec spec = syntheticSpec("llama", "llama-tiny");
        spec.dim = 256;
        spec.nHeads = 4;
        spec.nKvHeads = 2;
        spec.headDim = 64;
        spec.hidden = 320;
        spec.nLayers = 2;
        const std::string dir = lcwtest::tempDir("gguf-quants-model");
        NullProgress np;
        SynthOptions so;
        so.seed = 5;
        if (writeSyntheticModel(spec, dir, so, np) != Status::Ok) throw Error("synthetic model");
        return Model::load(dir);
    }();
    return *m;
}

compress::Recipe methodRecipe(const std::string& method, const std::string& target = "*") {
    nlohmann::json rule = nlohmann::json::object();
    rule["targets"] = nlohmann::json::array({target});
    rule["weight"] = nlohmann::json::object({{"method", method}});
    nlohmann::json j = nlohmann::json::object();
    j["lcw_recipe"] = 1;
    j["rules"] = nlohmann::json::array({rule});
    return compress::Recipe::fromJson(j);
}

std::vector<float> baseFloats(const TensorView& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
    return v;
}

// The packed codes of `name` equal quantizeRow's blocks of the base weights, row by row.
bool codesEqualQuantizeRow(const compress::CompressedModel& cm, const Model& base,
                           const std::string& name, DType t, const float* importance = nullptr) {
    const compress::CompressedTensor* ct = cm.compressed(name);
    if (!ct || !ct->quantized) return false;
    const auto w = baseFloats(base.get(name));
    const int64_t rows = ct->rows, cols = ct->cols;
    const size_t rb = static_cast<size_t>(*dtypeBytesFor(t, uint64_t(cols)));
    if (ct->packed.codes.size() != rb * size_t(rows)) return false;
    std::vector<std::byte> q(rb);
    for (int64_t r = 0; r < rows; ++r) {
        quantizeRow(t, w.data() + r * cols, q.data(), cols, importance);
        if (std::memcmp(q.data(), ct->packed.codes.data() + size_t(r) * rb, rb) != 0) return false;
    }
    return true;
}

} // namespace

class TestGgufQuants : public QObject {
    Q_OBJECT
private slots:
    // ---- ggml's reference blocks ----
    void referenceBytes_data() {
        QTest::addColumn<int>("index");
        QTest::addColumn<bool>("imatrix");
        for (int i = 0; i < int(std::size(kRefTypes)); ++i) {
            QTest::newRow(kRefTypes[i].file) << i << false;
            QTest::newRow((std::string(kRefTypes[i].file) + "_imatrix").c_str()) << i << true;
        }
    }
    void referenceBytes() {
        QFETCH(int, index);
        QFETCH(bool, imatrix);
        LCW_REQUIRE_SHARED(std::string(kRefDir) + "/rows.f32");
        const RefType& rt = kRefTypes[index];
        const std::string dir = lcwtest::sharedPath(kRefDir) + "/";
        const std::string stem = dir + rt.file + (imatrix ? "_imatrix" : "");
        const auto rows = readFloats(dir + "rows.f32");
        const auto imp = readFloats(dir + "importance.f32");
        const auto ref = readAll(stem + ".bin");
        const auto refDeq = readFloats(stem + ".dequant.f32");
        constexpr int R = 32, C = 1024;
        QCOMPARE(rows.size(), size_t(R * C));
        QCOMPARE(imp.size(), size_t(C));
        const int64_t rowBytes = int64_t(*dtypeBytesFor(rt.type, C));
        QCOMPARE(int64_t(ref.size()), R * rowBytes);
        QCOMPARE(refDeq.size(), size_t(R * C));
        const int64_t bb = dtypeBlockBytes(rt.type);

        std::vector<std::byte> q(static_cast<size_t>(rowBytes));
        for (int r = 0; r < R; ++r) {
            quantizeRow(rt.type, rows.data() + r * C, q.data(), C, imatrix ? imp.data() : nullptr);
            const char* want = ref.data() + r * rowBytes;
            if (std::memcmp(q.data(), want, size_t(rowBytes)) != 0) {
                int64_t b = 0;
                while (b < rowBytes && char(q[size_t(b)]) == want[b]) ++b;
                QFAIL(qPrintable(QString("%1: row %2 differs from ggml first in block %3 (byte %4 "
                                         "of the block)")
                                     .arg(QString::fromStdString(stem))
                                     .arg(r)
                                     .arg(b / bb)
                                     .arg(b % bb)));
            }
        }
        std::vector<float> d(C);
        for (int r = 0; r < R; ++r) {
            dequantizeRow(rt.type, reinterpret_cast<const std::byte*>(ref.data() + r * rowBytes),
                          d.data(), C);
            if (std::memcmp(d.data(), refDeq.data() + r * C, C * 4) != 0)
                QFAIL(qPrintable(QString("%1: dequantised row %2 differs from ggml's")
                                     .arg(QString::fromStdString(stem))
                                     .arg(r)));
        }
    }

    // Every quantised tensor of llama-quantize's files equals quantizeRow of the F32 model's
    // rows (with the imatrix for the -imat files): many more rows and shapes than above.
    void llamaQuantizeFiles_data() {
        QTest::addColumn<QString>("file");
        for (const char* f :
             {"model-Q4_K_M.gguf", "model-Q5_K_M.gguf", "model-Q6_K.gguf", "model-Q4_K_M-imat.gguf",
              "model-Q2_K-imat.gguf", "model-Q3_K_M-imat.gguf", "model-IQ4_NL-imat.gguf"})
            QTest::newRow(f) << QString(f);
    }
    void llamaQuantizeFiles() {
        QFETCH(QString, file);
        const std::string rel = std::string(kModelDir) + "/" + file.toStdString();
        LCW_REQUIRE_SHARED(rel);
        LCW_REQUIRE_SHARED(std::string(kModelDir) + "/model-f32.gguf");
        const auto f32 = readGguf(lcwtest::sharedPath(std::string(kModelDir) + "/model-f32.gguf"));
        const auto q = readGguf(lcwtest::sharedPath(rel));
        std::map<std::string, std::vector<float>> imat;
        if (file.contains("-imat"))
            imat = readLegacyImatrix(lcwtest::sharedPath(std::string(kModelDir) + "/imatrix.dat"));
        int checked = 0;
        for (const auto& t : q.tensors) {
            if (!dtypeIsQuantized(t.dtype)) continue;
            const TensorView* src = f32.findTensor(t.fileName);
            QVERIFY2(src && src->dtype == DType::F32, t.fileName.c_str());
            QCOMPARE(src->shape, t.shape);
            const auto it = imat.find(t.fileName);
            const float* qw = it == imat.end() ? nullptr : it->second.data();
            if (qw) QCOMPARE(int64_t(it->second.size()), t.cols());
            std::vector<std::byte> buf(size_t(t.rowBytes()));
            for (int64_t r = 0; r < t.rows(); ++r) {
                quantizeRow(t.dtype, reinterpret_cast<const float*>(src->row(r)), buf.data(),
                            t.cols(), qw);
                if (std::memcmp(buf.data(), t.row(r), buf.size()) != 0)
                    QFAIL(
                        qPrintable(QString("%1 (%2, imatrix %3): row %4 differs")
                                       .arg(QString::fromStdString(t.fileName))
                                       .arg(QString::fromStdString(std::string(dtypeName(t.dtype))))
                                       .arg(qw ? "yes" : "no")
                                       .arg(r)));
            }
            ++checked;
        }
        QVERIFY(checked >= 25);
    }

    // ---- properties on random rows ----
    void roundTripError_data() {
        QTest::addColumn<int>("dtype");
        QTest::addColumn<double>("bound");
        // Worst relative RMS error of quantise -> dequantise over 8 Gaussian rows; the bounds are
        // 1.25x what ggml's algorithms give here (with or without importance, within 8%).
        const std::pair<DType, double> b[] = {
            {DType::Q8_0, 0.007}, {DType::Q4_0, 0.11},    {DType::Q4_1, 0.10},
            {DType::Q5_0, 0.055}, {DType::Q5_1, 0.05},    {DType::Q2_K, 0.38},
            {DType::Q3_K, 0.20},  {DType::Q4_K, 0.095},   {DType::Q5_K, 0.046},
            {DType::Q6_K, 0.023}, {DType::IQ4_NL, 0.098}, {DType::IQ4_XS, 0.098},
        };
        for (const auto& [t, bound] : b)
            QTest::newRow(std::string(dtypeName(t)).c_str()) << int(t) << bound;
    }
    void roundTripError() {
        QFETCH(int, dtype);
        QFETCH(double, bound);
        const DType t = DType(dtype);
        constexpr int R = 8, C = 512;
        const auto x = gaussianRows(R, C, 7);
        std::mt19937 g(11);
        std::uniform_real_distribution<float> u(0.1f, 10.f);
        std::vector<float> imp(C);
        for (auto& v : imp) v = u(g);
        std::vector<std::byte> q(size_t(*dtypeBytesFor(t, C)));
        std::vector<float> y(C);
        const float* const modes[] = {nullptr, imp.data()};
        for (const float* qw : modes) {
            double worst = 0;
            for (int r = 0; r < R; ++r) {
                const float* xr = x.data() + r * C;
                quantizeRow(t, xr, q.data(), C, qw);
                dequantizeRow(t, q.data(), y.data(), C);
                worst = std::max(worst, relRms(xr, y.data(), C));
            }
            if (worst > bound)
                QFAIL(qPrintable(QString("%1 (importance %2): relative RMS error %3 > %4")
                                     .arg(QString::fromStdString(std::string(dtypeName(t))))
                                     .arg(qw ? "yes" : "no")
                                     .arg(worst)
                                     .arg(bound)));
        }
    }
    // Importance steers the error: the importance-weighted error is lower with the importance
    // than without it (summed over rows; q8_0 ignores importance and is left out).
    void importanceLowersWeightedError() {
        constexpr int R = 8, C = 512;
        const auto x = gaussianRows(R, C, 5);
        std::vector<float> imp(C);
        for (int c = 0; c < C; ++c) imp[size_t(c)] = (c % 7 == 0) ? 50.f : 0.2f;
        std::vector<float> y(C);
        for (DType t :
             {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
              DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS}) {
            std::vector<std::byte> q(size_t(*dtypeBytesFor(t, C)));
            double e[2] = {0, 0};
            for (int k = 0; k < 2; ++k)
                for (int r = 0; r < R; ++r) {
                    const float* xr = x.data() + r * C;
                    quantizeRow(t, xr, q.data(), C, k ? imp.data() : nullptr);
                    dequantizeRow(t, q.data(), y.data(), C);
                    for (int c = 0; c < C; ++c)
                        e[k] += imp[size_t(c)] * (double(xr[c]) - y[c]) * (double(xr[c]) - y[c]);
                }
            QVERIFY2(e[1] < e[0], std::string(dtypeName(t)).c_str());
        }
    }
    // Deterministic and independent of other rows: quantising a row twice, or inside a larger
    // buffer, gives the same bytes; an all-zero row gives blocks that dequantise to zeros.
    void zeroRowsAndDeterminism() {
        constexpr int C = 512;
        const std::vector<float> zero(C, 0.f);
        const auto x = gaussianRows(1, C, 9);
        std::vector<float> y(C);
        for (const auto& rt : kRefTypes) {
            std::vector<std::byte> a(size_t(*dtypeBytesFor(rt.type, C))), b(a.size());
            quantizeRow(rt.type, zero.data(), a.data(), C);
            dequantizeRow(rt.type, a.data(), y.data(), C);
            for (float v : y) QCOMPARE(v, 0.f);
            quantizeRow(rt.type, x.data(), a.data(), C);
            quantizeRow(rt.type, x.data(), b.data(), C);
            QVERIFY2(a == b, rt.file);
        }
    }

    // ---- bad input ----
    void badInput() {
        std::vector<float> x(300, 0.5f);
        std::vector<std::byte> q(4096);
        for (DType t : {DType::Q2_K, DType::Q4_K, DType::Q6_K, DType::IQ4_XS}) {
            try {
                quantizeRow(t, x.data(), q.data(), 288);
                QFAIL("expected ArgumentError");
            } catch (const ArgumentError& e) {
                const std::string m = e.what();
                QVERIFY2(m.find("288") != std::string::npos, m.c_str());
                QVERIFY2(m.find("256") != std::string::npos, m.c_str());
                QVERIFY2(m.find(dtypeName(t)) != std::string::npos, m.c_str());
            }
            QVERIFY_THROWS_EXCEPTION(ArgumentError, dequantizeRow(t, q.data(), x.data(), 100));
        }
        QVERIFY_THROWS_EXCEPTION(ArgumentError, quantizeRow(DType::IQ4_NL, x.data(), q.data(), 40));
        QVERIFY_THROWS_EXCEPTION(ArgumentError, quantizeRow(DType::Q5_1, x.data(), q.data(), -32));
        QVERIFY_THROWS_EXCEPTION(UnsupportedError, quantizeRow(DType::I8, x.data(), q.data(), 32));
        QVERIFY_THROWS_EXCEPTION(UnsupportedError,
                                 dequantizeRow(DType::I32, q.data(), x.data(), 4));
        // n = 0 is an empty row, not an error.
        quantizeRow(DType::Q4_K, x.data(), q.data(), 0);
    }

    // ---- the GGUF types as recipe methods ----
    void methodNamesAndSizes() {
        const std::pair<const char*, double> expect[] = {
            {"q8_0", 8.5},   {"q4_0", 4.5},    {"q4_1", 5.0}, {"q5_0", 5.5}, {"q5_1", 6.0},
            {"q2_k", 2.625}, {"q3_k", 3.4375}, {"q4_k", 4.5}, {"q5_k", 5.5}, {"q6_k", 6.5625},
            {"iq4_nl", 4.5}, {"iq4_xs", 4.25}, {"f16", 16.0}};
        for (const auto& [name, bpw] : expect) {
            const auto m = compress::weightMethodFromName(name);
            QVERIFY2(m, name);
            QVERIFY(compress::methodIsGguf(*m));
            QCOMPARE(std::string(compress::weightMethodName(*m)), std::string(name));
            QCOMPARE(compress::ggufBitsPerWeight(*m), bpw);
            QCOMPARE(compress::ggufMethodForType(compress::ggufMethodType(*m)), m);
            QCOMPARE(std::string(dtypeName(compress::ggufMethodType(*m))), std::string(name));
        }
        QVERIFY(!compress::weightMethodFromName("q4_k_m"));
        QVERIFY(!compress::methodIsGguf(WeightMethod::Gptq));
        QCOMPARE(compress::ggufBitsPerWeight(WeightMethod::Rtn), 0.0);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, compress::ggufMethodType(WeightMethod::Awq));
        QVERIFY(!compress::ggufMethodForType(DType::BF16));
        // llama.cpp's fallback table (llama-quant.cpp, b4747)
        using M = WeightMethod;
        const std::tuple<M, int64_t, std::optional<M>> fb[] = {
            {M::Q4_K, 512, M::Q4_K},      {M::Q4_K, 320, M::Q5_0},
            {M::Q5_K, 320, M::Q5_1},      {M::Q6_K, 320, M::Q8_0},
            {M::Q2_K, 320, M::IQ4_NL},    {M::Q3_K, 320, M::IQ4_NL},
            {M::IQ4_XS, 320, M::IQ4_NL},  {M::Q4_K, 172, M::F16},
            {M::Q6_K, 100, M::F16},       {M::IQ4_XS, 172, M::F16},
            {M::Q4_0, 172, std::nullopt}, {M::IQ4_NL, 172, std::nullopt},
            {M::Q5_1, 96, M::Q5_1},       {M::F16, 7, M::F16},
            {M::Rtn, 7, M::Rtn}};
        for (const auto& [m, cols, want] : fb)
            QVERIFY2(compress::ggufFallback(m, cols) == want,
                     qPrintable(QString("%1 on %2").arg(compress::weightMethodName(m)).arg(cols)));
    }

    // A recipe with each GGUF type on a model whose rows are multiples of 256: the packed codes
    // are quantizeRow's bytes, the sizes are the block sizes exactly, and mlp.down (rows of 320)
    // falls back as llama.cpp does, with one warning per tensor.
    void recipeOnModel_data() {
        QTest::addColumn<QString>("method");
        QTest::addColumn<QString>("down"); // what mlp.down (320 wide) gets
        QTest::newRow("q4_k") << "q4_k"
                              << "q5_0";
        QTest::newRow("q5_k") << "q5_k"
                              << "q5_1";
        QTest::newRow("q6_k") << "q6_k"
                              << "q8_0";
        QTest::newRow("q2_k") << "q2_k"
                              << "iq4_nl";
        QTest::newRow("q3_k") << "q3_k"
                              << "iq4_nl";
        QTest::newRow("iq4_xs") << "iq4_xs"
                                << "iq4_nl";
        QTest::newRow("iq4_nl") << "iq4_nl"
                                << "iq4_nl";
        QTest::newRow("q5_1") << "q5_1"
                              << "q5_1";
        QTest::newRow("f16") << "f16"
                             << "f16";
    }
    void recipeOnModel() {
        QFETCH(QString, method);
        QFETCH(QString, down);
        const Model& m = kquantModel();
        const auto recipe = methodRecipe(method.toStdString());
        NullProgress np;
        const compress::CompressResult cr = compress::compress(m, recipe, np);
        QCOMPARE(cr.status, Status::Ok);
        const auto want = *compress::weightMethodFromName(method.toStdString());
        const auto downM = *compress::weightMethodFromName(down.toStdString());
        int fallbacks = 0, checked = 0;
        for (const auto& lp : cr.plan.layers) {
            const bool isDown = lp.name.ends_with("mlp.down");
            QCOMPARE(lp.cols % 256 == 0, !isDown);
            const WeightMethod got = isDown ? downM : want;
            QCOMPARE(lp.weight.method, got);
            QCOMPARE(lp.fallbackFrom.has_value(), got != want);
            const DType t = compress::ggufMethodType(got);
            QVERIFY2(codesEqualQuantizeRow(*cr.model, m, lp.name, t), lp.name.c_str());
            // exact size: the block bytes, and the estimate from the plan alone agrees
            const double bpw = 8.0 * double(dtypeBlockBytes(t)) / double(dtypeBlockElems(t));
            const compress::SizeInfo si = cr.model->tensorSize(lp.name);
            QCOMPARE(si.bits, uint64_t(double(lp.rows * lp.cols) * bpw));
            QCOMPARE(compress::estimateLayerSize(lp).bits, si.bits);
            // dequantised values are ggml's
            const auto vals = cr.model->compressed(lp.name)->values();
            std::vector<float> ref(static_cast<size_t>(lp.cols));
            const auto& codes = cr.model->compressed(lp.name)->packed.codes;
            dequantizeRow(t, reinterpret_cast<const std::byte*>(codes.data()), ref.data(), lp.cols);
            QVERIFY(std::memcmp(ref.data(), vals.data(), size_t(lp.cols) * 4) == 0);
            if (got != want) {
                ++fallbacks;
                const std::string expectMsg = lp.name + ": " + method.toStdString();
                const bool warned = std::any_of(
                    cr.plan.warnings.begin(), cr.plan.warnings.end(), [&](const std::string& w) {
                        return w.rfind(expectMsg, 0) == 0 &&
                               w.find("using " + down.toStdString()) != std::string::npos;
                    });
                QVERIFY2(warned, lp.name.c_str());
            }
            ++checked;
        }
        QCOMPARE(checked, 2 * 7);
        QCOMPARE(fallbacks, want == downM ? 0 : 2);
        QCOMPARE(int(cr.plan.warnings.size()), fallbacks);
        QCOMPARE(compress::estimateCompressedSize(cr.plan).bits, cr.model->compressedSize().bits);
        // the warnings reach the report
        const auto rep = compress::compressReportJson(cr);
        QCOMPARE(int(rep["warnings"].size()), fallbacks);
    }

    // On the demo model (rows of 64 and 172) k-quants fall back to 32-element types or, where
    // even those do not fit (172), to f16; 32-element types on 172 stay an error.
    void fallbackToF16() {
        auto m = Model::load(lcwtest::demoModelPath());
        const auto plan = compress::planRecipe(methodRecipe("q6_k"), *m);
        int f16 = 0, q8 = 0;
        for (const auto& lp : plan.layers) {
            QCOMPARE(lp.fallbackFrom, std::optional<WeightMethod>(WeightMethod::Q6_K));
            QCOMPARE(lp.weight.method, lp.cols == 172 ? WeightMethod::F16 : WeightMethod::Q8_0);
            (lp.cols == 172 ? f16 : q8)++;
            const uint64_t n = uint64_t(lp.rows * lp.cols);
            QCOMPARE(compress::estimateLayerSize(lp).bits, lp.cols == 172 ? n * 16 : n * 17 / 2);
        }
        QVERIFY(f16 > 0 && q8 > 0);
        QCOMPARE(int(plan.warnings.size()), f16 + q8);
        QVERIFY(plan.warnings.front().find("q6_k") != std::string::npos);
        NullProgress np;
        const auto cr = compress::compress(*m, methodRecipe("q4_k", "layers.0.mlp.down"), np);
        const auto* ct = cr.model->compressed("layers.0.mlp.down");
        QVERIFY(ct && ct->quantized);
        QCOMPARE(ct->packed.settings.method, WeightMethod::F16);
        QVERIFY(codesEqualQuantizeRow(*cr.model, *m, "layers.0.mlp.down", DType::F16));
        QCOMPARE(ct->storageBits(), uint64_t(ct->rows * ct->cols * 16));
        for (const char* bad : {"iq4_nl", "q5_1"}) {
            try {
                compress::planRecipe(methodRecipe(bad), *m);
                QFAIL("expected RecipeError");
            } catch (const compress::RecipeError& e) {
                QCOMPARE(e.field(), std::string("weight.method"));
                QVERIFY(std::string(e.what()).find("172") != std::string::npos);
            }
        }
    }

    // compress::quantize passes importance to ggml's weighted quantisers.
    void quantizeWithImportance() {
        constexpr int64_t rows = 5, cols = 512;
        const auto w = gaussianRows(rows, cols, 21);
        std::vector<float> imp(cols);
        for (int64_t c = 0; c < cols; ++c) imp[size_t(c)] = 0.1f + float(c % 13);
        for (WeightMethod m :
             {WeightMethod::Q4_K, WeightMethod::Q2_K, WeightMethod::Q4_0, WeightMethod::IQ4_XS}) {
            const auto s = compress::ggufSettings(m);
            const DType t = compress::ggufMethodType(m);
            const auto with = compress::quantize(w.data(), rows, cols, s, "t", imp.data());
            const auto without = compress::quantize(w.data(), rows, cols, s, "t");
            QVERIFY(with.codes != without.codes);
            const size_t rb = with.codes.size() / rows;
            std::vector<std::byte> q(rb);
            for (int64_t r = 0; r < rows; ++r) {
                quantizeRow(t, w.data() + r * cols, q.data(), cols, imp.data());
                QVERIFY(std::memcmp(q.data(), with.codes.data() + r * rb, rb) == 0);
            }
        }
        imp[7] = NAN;
        QVERIFY_THROWS_EXCEPTION(ArgumentError,
                                 compress::quantize(w.data(), rows, cols,
                                                    compress::ggufSettings(WeightMethod::Q4_K), "t",
                                                    imp.data()));
        // rows that do not fit the block: the error names the layer and the block
        try {
            compress::quantize(w.data(), 4, 320, compress::ggufSettings(WeightMethod::Q5_K),
                               "layers.1.mlp.down");
            QFAIL("expected ArgumentError");
        } catch (const ArgumentError& e) {
            const std::string msg = e.what();
            QVERIFY(msg.find("layers.1.mlp.down") != std::string::npos);
            QVERIFY(msg.find("256") != std::string::npos);
        }
    }

    // Overlays with the new types save and load (method names, f16's 16 bits).
    void overlayRoundTrip() {
        const Model& m = kquantModel();
        nlohmann::json j = nlohmann::json::parse(
            "{\"lcw_recipe\": 1, \"rules\": [{\"targets\": [\"*.attn.*\"], \"weight\": "
            "{\"method\": \"q3_k\"}}, {\"targets\": [\"*.mlp.*\"], \"weight\": "
            "{\"method\": \"f16\"}}]}");
        NullProgress np;
        const auto cr = compress::compress(m, compress::Recipe::fromJson(j), np);
        const std::string dir = lcwtest::tempDir("gguf-quants-overlay");
        cr.model->save(dir);
        const auto back = compress::CompressedModel::load(dir, m);
        for (const auto& name : cr.model->replacedNames()) {
            const auto* a = cr.model->compressed(name);
            const auto* b = back->compressed(name);
            QVERIFY(b);
            QCOMPARE(b->packed.settings.method, a->packed.settings.method);
            QVERIFY(b->packed.codes == a->packed.codes);
            QVERIFY(b->values() == a->values());
        }
        QCOMPARE(back->totalSize().bits, cr.model->totalSize().bits);
    }

    // The grid drawn over a histogram for each new type (compress::gridLevels).
    void gridLevelsOfNewTypes() {
        using compress::gridLevels;
        auto s = [](WeightMethod m) { return compress::ggufSettings(m); };
        auto near = [](double a, double b) { return std::fabs(a - b) < 1e-12; };
        // q4_k: m + q d over [min(lo, 0), hi], 16 levels
        auto g = gridLevels(s(WeightMethod::Q4_K), -1.0, 2.0);
        QCOMPARE(int(g.size()), 16);
        QVERIFY(near(g.front(), -1.0) && near(g.back(), 2.0) && near(g[1] - g[0], 0.2));
        g = gridLevels(s(WeightMethod::Q4_K), 0.5, 2.0); // the minimum is clamped to 0
        QVERIFY(near(g.front(), 0.0) && near(g.back(), 2.0));
        QCOMPARE(int(gridLevels(s(WeightMethod::Q2_K), -1.0, 2.0).size()), 4);
        QCOMPARE(int(gridLevels(s(WeightMethod::Q5_K), -1.0, 2.0).size()), 32);
        g = gridLevels(s(WeightMethod::Q5_1), 0.5, 2.0); // q5_1 keeps its own minimum
        QCOMPARE(int(g.size()), 32);
        QVERIFY(near(g.front(), 0.5) && near(g.back(), 2.0));
        // q3_k / q6_k: d q with d = -(signed max) / 4 or / 32
        g = gridLevels(s(WeightMethod::Q3_K), -3.0, 1.0);
        QCOMPARE(int(g.size()), 8);
        QVERIFY(near(g.front(), -3.0) && near(g.back(), 2.25));
        g = gridLevels(s(WeightMethod::Q6_K), -1.0, 3.2);
        QCOMPARE(int(g.size()), 64);
        QVERIFY(near(g.front(), -3.1) && near(g.back(), 3.2));
        // iq4: the non-linear code book scaled so that the signed max is a level
        g = gridLevels(s(WeightMethod::IQ4_NL), -0.5, 2.0);
        QCOMPARE(int(g.size()), 16);
        QVERIFY(near(g.back(), 2.0) && near(g.front(), -2.0 * 113.0 / 127.0));
        QCOMPARE(gridLevels(s(WeightMethod::IQ4_XS), -0.5, 2.0), g);
        QVERIFY(gridLevels(s(WeightMethod::F16), -1.0, 1.0).empty());
    }

    // ---- the runtime uses IQ4 weights ----
    // llama-quantize's IQ4_NL file (with its q6_K output) loads and runs: its logits equal those
    // of the same weights dequantised to F32 in memory, and stay near the F32 model's (loosely:
    // the model is random and sensitive; Q4_K_M of it is ~0.4 relative RMS away).
    void iq4ModelRuns() {
        const std::string f32Rel = std::string(kModelDir) + "/model-f32.gguf";
        const std::string iqRel = std::string(kModelDir) + "/model-IQ4_NL-imat.gguf";
        LCW_REQUIRE_SHARED(f32Rel);
        LCW_REQUIRE_SHARED(iqRel);
        auto ref = Model::load(lcwtest::sharedPath(f32Rel));
        auto iq = Model::load(lcwtest::sharedPath(iqRel));
        QCOMPARE(iq->get("layers.1.attn.q").dtype, DType::IQ4_NL);
        lcwtest::MemWeights deq;
        deq.sp = iq->spec();
        for (const auto& t : iq->tensors()) {
            std::vector<float> v(static_cast<size_t>(t.numel()));
            for (int64_t r = 0; r < t.rows(); ++r)
                dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
            deq.add(t.name, t.shape, v);
        }
        std::vector<int32_t> ids;
        for (int i = 0; i < 24; ++i) ids.push_back(int32_t((i * 37 + 5) % 512));
        // Float32 activations (exactActivations): the IQ4 kernels decode the same weights as
        // dequantizeRow. By default they read 8-bit activation blocks: close, not equal.
        const SessionOptions exact{.contextLength = 32, .threads = 2, .exactActivations = true};
        std::vector<float> lf, lq, ld, lqFast;
        Session(*ref, exact).forward(ids, lf, true);
        Session(*iq, exact).forward(ids, lq, true);
        Session(deq, exact).forward(ids, ld, true);
        Session(*iq, {.contextLength = 32, .threads = 2}).forward(ids, lqFast, true);
        QCOMPARE(lq.size(), lf.size());
        QCOMPARE(lq.size(), ld.size());
        QCOMPARE(lqFast.size(), ld.size());
        for (float v : lq) QVERIFY(std::isfinite(v));
        const double same = relRms(ld.data(), lq.data(), int64_t(lq.size()));
        QVERIFY2(same < 1e-5, qPrintable(QString("vs dequantised F32: %1").arg(same)));
        const double fast = relRms(ld.data(), lqFast.data(), int64_t(lq.size()));
        QVERIFY2(fast < 0.1 && fast > 0,
                 qPrintable(QString("8-bit activations vs dequantised F32: %1").arg(fast)));
        const double rel = relRms(lf.data(), lq.data(), int64_t(lq.size()));
        QVERIFY2(rel < 0.8 && rel > 1e-3,
                 qPrintable(QString("relative RMS logit difference to F32 %1").arg(rel)));

        // IQ4_XS weights (every 2-D weight of this model has rows of 256 multiples) run too, and
        // equal their dequantised F32 copy.
        lcwtest::MemWeights xs, xsRef;
        xs.sp = xsRef.sp = ref->spec();
        int nXs = 0;
        for (const auto& t : ref->tensors()) {
            const auto v = baseFloats(t);
            const bool q = t.shape.size() == 2 && t.cols() % 256 == 0;
            xs.add(t.name, t.shape, v, q ? DType::IQ4_XS : DType::F32);
            xsRef.add(t.name, t.shape, xs.ref.at(t.name));
            nXs += q;
        }
        QVERIFY(nXs >= 28);
        std::vector<float> lx, lxr;
        Session(xs, exact).forward(ids, lx, true);
        Session(xsRef, exact).forward(ids, lxr, true);
        for (float v : lx) QVERIFY(std::isfinite(v));
        const double sameXs = relRms(lxr.data(), lx.data(), int64_t(lx.size()));
        QVERIFY2(sameXs < 1e-5, qPrintable(QString("iq4_xs vs dequantised F32: %1").arg(sameXs)));
        const double relXs = relRms(lf.data(), lx.data(), int64_t(lx.size()));
        QVERIFY2(relXs < 0.8 && relXs > 1e-3, qPrintable(QString("iq4_xs vs F32 %1").arg(relXs)));
    }
};

QTEST_GUILESS_MAIN(TestGgufQuants)
#include "test_gguf_quants.moc"
