// GGUF block quantisers against ggml: byte-identical blocks on the reference rows made with
// llama.cpp b4747 (../shared/reference/gguf-quants), and on every tensor of llama-quantize's files
// of the gguf-k model (../shared/models/gguf-k); dequantisation bit-identical to ggml's; error
// bounds of quantise -> dequantise on random rows; bad input; IQ4 weights in the runtime.
#include "core/common/error.h"
#include "core/io/gguf.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "mem_weights.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>

using namespace lcw;

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
        std::vector<float> lf, lq, ld;
        Session(*ref, {.contextLength = 32, .threads = 2}).forward(ids, lf, true);
        Session(*iq, {.contextLength = 32, .threads = 2}).forward(ids, lq, true);
        Session(deq, {.contextLength = 32, .threads = 2}).forward(ids, ld, true);
        QCOMPARE(lq.size(), lf.size());
        QCOMPARE(lq.size(), ld.size());
        for (float v : lq) QVERIFY(std::isfinite(v));
        const double same = relRms(ld.data(), lq.data(), int64_t(lq.size()));
        QVERIFY2(same < 1e-5, qPrintable(QString("vs dequantised F32: %1").arg(same)));
        const double rel = relRms(lf.data(), lq.data(), int64_t(lq.size()));
        QVERIFY2(rel < 0.8 && rel > 1e-3,
                 qPrintable(QString("relative RMS logit difference to F32 %1").arg(rel)));
    }
};

QTEST_GUILESS_MAIN(TestGgufQuants)
#include "test_gguf_quants.moc"
