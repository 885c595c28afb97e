// GGUF block grids element by element (core/compress/gguf_grid.h) and GPTQ onto them
// (gptqQuantizeGguf): the code of every element of ggml's own blocks decodes to ggml's
// dequantised value; GPTQ with an uncorrelated Hessian is RTN on ggml's grid; with correlated
// calibration inputs it lowers the layer's output error below ggml's quantiser's.
#include "core/common/error.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/compress/gguf_grid.h"
#include "core/compress/gptq.h"
#include "core/compress/imatrix.h"
#include "core/io/quants.h"
#include "core/model/model.h"
#include "test_util.h"

#include <QtTest/QtTest>

#include <cmath>
#include <fstream>
#include <random>
#include <vector>

using lcw::DType;

namespace {

const std::vector<std::pair<DType, const char*>> kTypes = {
    {DType::Q4_0, "q4_0"}, {DType::Q4_1, "q4_1"}, {DType::Q5_0, "q5_0"},
    {DType::Q5_1, "q5_1"}, {DType::Q8_0, "q8_0"}, {DType::Q2_K, "q2_K"},
    {DType::Q3_K, "q3_K"}, {DType::Q4_K, "q4_K"}, {DType::Q5_K, "q5_K"},
    {DType::Q6_K, "q6_K"}, {DType::IQ4_NL, "iq4_nl"}, {DType::IQ4_XS, "iq4_xs"}};

std::vector<char> readAll(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Output error ‖X (W − Ŵ)ᵀ‖² = Σ_r (w_r − ŵ_r) H (w_r − ŵ_r)ᵀ.
double outputError(const std::vector<float>& w, const std::vector<float>& wq,
                   const std::vector<double>& H, int64_t rows, int64_t cols) {
    double total = 0;
    std::vector<double> d(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c)
            d[size_t(c)] = double(w[size_t(r * cols + c)]) - double(wq[size_t(r * cols + c)]);
        for (int64_t a = 0; a < cols; ++a) {
            double s = 0;
            for (int64_t b = 0; b < cols; ++b) s += H[size_t(a * cols + b)] * d[size_t(b)];
            total += d[size_t(a)] * s;
        }
    }
    return total;
}

std::vector<float> dequantAll(DType t, const std::vector<std::byte>& bytes, int64_t rows,
                              int64_t cols) {
    std::vector<float> out(size_t(rows * cols));
    const uint64_t rowBytes = *lcw::dtypeBytesFor(t, uint64_t(cols));
    for (int64_t r = 0; r < rows; ++r)
        lcw::dequantizeRow(t, bytes.data() + r * rowBytes, out.data() + r * cols, cols);
    return out;
}

std::vector<std::byte> rtnAll(DType t, const std::vector<float>& w, int64_t rows, int64_t cols,
                              const float* importance) {
    const uint64_t rowBytes = *lcw::dtypeBytesFor(t, uint64_t(cols));
    std::vector<std::byte> out(size_t(rowBytes * rows));
    for (int64_t r = 0; r < rows; ++r)
        lcw::quantizeRow(t, w.data() + r * cols, out.data() + r * rowBytes, cols, importance);
    return out;
}

} // namespace

namespace {

using nlohmann::json;
using namespace lcw::compress;

Recipe recipeOf(json weight, const std::string& imatrix = "") {
    json j = {{"lcw_recipe", 1},
              {"name", "t"},
              {"rules", json::array({{{"targets", {"*"}}, {"weight", std::move(weight)}}})}};
    if (!imatrix.empty()) j["imatrix"] = imatrix;
    return Recipe::fromJson(j);
}

CompressResult run(const lcw::Model& m, const Recipe& r, const CalibrationSet* cal,
                   const Imatrix* imx = nullptr) {
    lcw::NullProgress np;
    CompressOptions o;
    o.calibration = cal;
    o.imatrix = imx;
    return compress(m, r, np, o);
}

} // namespace

class TestGgufGptq : public QObject {
    Q_OBJECT

private slots:
    // Every element of ggml's reference blocks: the code read back decodes (through the grid
    // read off the block) to ggml's dequantised value; writing the code back changes no byte.
    void codesOfGgmlBlocksDecodeToGgmlValues() {
        LCW_REQUIRE_SHARED("reference/gguf-quants/rows.f32");
        const std::string dir = lcwtest::sharedPath("reference/gguf-quants/");
        for (const auto& [t, name] : kTypes) {
            for (const char* suffix : {"", "_imatrix"}) {
                const auto bin = readAll(dir + name + suffix + ".bin");
                const auto deq = readAll(dir + name + suffix + ".dequant.f32");
                QVERIFY2(!bin.empty() && deq.size() == 32 * 1024 * 4, name);
                const auto* ref = reinterpret_cast<const float*>(deq.data());
                const int64_t bl = lcw::dtypeBlockElems(t), bb = lcw::dtypeBlockBytes(t);
                const int64_t blocks = int64_t(bin.size()) / bb;
                QCOMPARE(blocks * bl, int64_t(32 * 1024));
                for (int64_t k = 0; k < blocks; ++k) {
                    std::vector<std::byte> blk(static_cast<size_t>(bb));
                    std::memcpy(blk.data(), bin.data() + k * bb, size_t(bb));
                    const auto g = lcw::compress::blockGrid(t, blk.data());
                    float scale = 0;
                    for (int i = 0; i < bl; ++i) scale = std::max(scale, std::fabs(ref[k * bl + i]));
                    for (int i = 0; i < int(bl); ++i) {
                        const uint32_t q = lcw::compress::ggufGetCode(t, blk.data(), i);
                        const float v = g.value(i, q), want = ref[k * bl + i];
                        if (std::fabs(v - want) > 1e-5f * scale + 1e-30f)
                            QFAIL(qPrintable(QString("%1%2 block %3 element %4: code %5 decodes "
                                                     "to %6, ggml %7")
                                                 .arg(name)
                                                 .arg(suffix)
                                                 .arg(k)
                                                 .arg(i)
                                                 .arg(q)
                                                 .arg(double(v))
                                                 .arg(double(want))));
                        lcw::compress::ggufSetCode(t, blk.data(), i, q);
                    }
                    QVERIFY2(std::memcmp(blk.data(), bin.data() + k * bb, size_t(bb)) == 0, name);
                }
            }
        }
    }

    // Setting one element's code changes that element alone, to the grid's value.
    void settingOneCodeChangesOneElement() {
        std::mt19937 rng(5);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (const auto& [t, name] : kTypes) {
            const int64_t bl = lcw::dtypeBlockElems(t);
            std::vector<float> x(static_cast<size_t>(bl));
            for (auto& v : x) v = nd(rng);
            std::vector<std::byte> blk(size_t(lcw::dtypeBlockBytes(t)));
            lcw::quantizeRow(t, x.data(), blk.data(), bl);
            const auto g = lcw::compress::blockGrid(t, blk.data());
            std::vector<float> before(static_cast<size_t>(bl)), after(static_cast<size_t>(bl));
            lcw::dequantizeRow(t, blk.data(), before.data(), bl);
            const auto range = lcw::compress::ggufCodeRange(t);
            for (int i : {0, 1, 17, int(bl) - 1}) {
                auto copy = blk;
                const uint32_t q = range.qmin + (lcw::compress::ggufGetCode(t, blk.data(), i) -
                                                 range.qmin + 1) %
                                                    (range.qmax - range.qmin + 1);
                lcw::compress::ggufSetCode(t, copy.data(), i, q);
                lcw::dequantizeRow(t, copy.data(), after.data(), bl);
                for (int e = 0; e < int(bl); ++e) {
                    if (e == i)
                        QVERIFY2(std::fabs(after[size_t(e)] - g.value(e, q)) <=
                                     1e-5f * (std::fabs(after[size_t(e)]) + 1e-3f),
                                 name);
                    else
                        QCOMPARE(after[size_t(e)], before[size_t(e)]);
                }
            }
        }
    }

    // With H = I no error is propagated: GPTQ's codes are the nearest on ggml's grid, so the
    // reconstruction is ggml's up to ties (no element farther from w than ggml's).
    void identityHessianIsRtnOnGgmlGrid() {
        const int64_t rows = 8, cols = 512;
        std::mt19937 rng(7);
        std::student_t_distribution<float> td(4.0f);
        std::vector<float> w(size_t(rows * cols));
        for (auto& v : w) v = 0.02f * td(rng);
        std::vector<double> H(size_t(cols * cols), 0.0);
        for (int64_t i = 0; i < cols; ++i) H[size_t(i * cols + i)] = 1.0;
        for (const auto& [t, name] : kTypes) {
            lcw::compress::GptqOptions o;
            o.damp = 1e-6;
            const auto res = lcw::compress::gptqQuantizeGguf(w.data(), rows, cols, H.data(), t,
                                                             nullptr, o, "layer");
            const auto mine = dequantAll(t, res.bytes, rows, cols);
            const auto ggml = dequantAll(t, rtnAll(t, w, rows, cols, nullptr), rows, cols);
            int64_t same = 0;
            for (size_t i = 0; i < w.size(); ++i) {
                if (mine[i] == ggml[i]) ++same;
                QVERIFY2(std::fabs(mine[i] - w[i]) <= std::fabs(ggml[i] - w[i]) * 1.0001f + 1e-7f,
                         qPrintable(QString("%1 element %2").arg(name).arg(i)));
            }
            QVERIFY2(double(same) >= 0.99 * double(w.size()), name);
        }
    }

    // Correlated inputs: GPTQ on the GGUF grid has a lower output error than ggml's quantiser of
    // the same type, on every type; with importance weights too.
    void lowersOutputErrorOnEveryType() {
        const int64_t rows = 16, cols = 256, n = 1024;
        std::mt19937 rng(11);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        // X = Z·M: channels mixed so that H = XᵀX is far from diagonal; a few loud channels.
        std::vector<float> M(size_t(cols * cols));
        for (auto& v : M) v = 0.15f * nd(rng);
        for (int64_t i = 0; i < cols; ++i) M[size_t(i * cols + i)] += 1.0f;
        std::vector<double> H(size_t(cols * cols), 0.0);
        std::vector<float> x(static_cast<size_t>(cols)), z(static_cast<size_t>(cols));
        for (int64_t k = 0; k < n; ++k) {
            for (auto& v : z) v = nd(rng);
            for (int64_t c = 0; c < cols; ++c) {
                double s = 0;
                for (int64_t e = 0; e < cols; ++e) s += double(z[size_t(e)]) * M[size_t(e * cols + c)];
                x[size_t(c)] = float(s) * (c % 37 == 0 ? 6.0f : 1.0f);
            }
            for (int64_t a = 0; a < cols; ++a)
                for (int64_t b = 0; b < cols; ++b)
                    H[size_t(a * cols + b)] += double(x[size_t(a)]) * double(x[size_t(b)]);
        }
        std::vector<float> w(size_t(rows * cols)), importance(static_cast<size_t>(cols));
        for (auto& v : w) v = 0.05f * nd(rng);
        for (int64_t c = 0; c < cols; ++c) importance[size_t(c)] = float(H[size_t(c * cols + c)] / n);
        for (const auto& [t, name] : kTypes) {
            for (const float* imp : std::vector<const float*>{nullptr, importance.data()}) {
                lcw::compress::GptqOptions o;
                const auto res =
                    lcw::compress::gptqQuantizeGguf(w.data(), rows, cols, H.data(), t, imp, o, "l");
                QCOMPARE(int64_t(res.bytes.size()),
                         int64_t(*lcw::dtypeBytesFor(t, uint64_t(cols))) * rows);
                const double eG = outputError(w, dequantAll(t, res.bytes, rows, cols), H, rows, cols);
                const double eR = outputError(
                    w, dequantAll(t, rtnAll(t, w, rows, cols, imp), rows, cols), H, rows, cols);
                qInfo("%s%s: output error GPTQ %.4g, ggml %.4g (%.2fx)", name,
                      imp ? " +imatrix" : "", eG, eR, eG / eR);
                QVERIFY2(eG < 0.9 * eR, name);
            }
        }
    }

    void refusesRowsThatDoNotFitTheBlocks() {
        std::vector<float> w(4 * 96, 0.5f);
        std::vector<double> H(96 * 96, 0.0);
        for (int i = 0; i < 96; ++i) H[size_t(i * 96 + i)] = 1.0;
        lcw::compress::GptqOptions o;
        try {
            lcw::compress::gptqQuantizeGguf(w.data(), 4, 96, H.data(), DType::Q4_K, nullptr, o,
                                            "layers.0.mlp.down");
            QFAIL("expected an error");
        } catch (const lcw::Error& e) {
            QVERIFY(QString(e.what()).contains("layers.0.mlp.down"));
            QVERIFY(QString(e.what()).contains("256"));
        }
        try {
            lcw::compress::gptqQuantizeGguf(w.data(), 4, 96, H.data(), DType::F16, nullptr, o, "x");
            QFAIL("expected an error");
        } catch (const lcw::Error&) {
        }
    }
    // {"method": "gptq", "gguf": "q4_k"} on the 256-multiple gguf-k model: every layer is stored
    // as q4_k blocks (same size as ggml's q4_k), its output error on the calibration inputs is
    // below ggml's q4_k's, and the importance matrix reaches ggml's quantiser.
    void gptqOntoQ4kBeatsGgmlPerLayer() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/gguf-k/model-f32.gguf"));
        const CalibrationSet cal =
            loadCalibration(*m, lcwtest::sharedPath("models/gguf-k/calib.txt"), {8, 128});
        const Imatrix imx = readImatrix(lcwtest::sharedPath("models/gguf-k/imatrix.dat"));
        const auto rtn = run(*m, recipeOf({{"method", "q4_k"}}), &cal, &imx);
        const auto gq = run(*m, recipeOf({{"method", "gptq"}, {"gguf", "q4_k"}}), &cal, &imx);
        QCOMPARE(gq.layers.size(), rtn.layers.size());
        QCOMPARE(gq.layers.size(), size_t(28));
        int better = 0;
        for (size_t i = 0; i < gq.layers.size(); ++i) {
            const auto& a = rtn.layers[i];
            const auto& b = gq.layers[i];
            QCOMPARE(b.storageBits, a.storageBits);
            QCOMPARE(b.scheme, std::string("gptq q4_k"));
            const CompressedTensor* ct = gq.model->compressed(b.name);
            QVERIFY(ct && ct->quantized);
            QVERIFY(ct->packed.settings.method == WeightMethod::Q4_K);
            // The stored blocks decode (ggml's dequantiser) to the overlay's values.
            std::vector<float> row(size_t(ct->packed.cols));
            const size_t rowBytes = ct->packed.codes.size() / size_t(ct->packed.rows);
            lcw::dequantizeRow(DType::Q4_K,
                               reinterpret_cast<const std::byte*>(ct->packed.codes.data()) +
                                   rowBytes * 3,
                               row.data(), ct->packed.cols);
            const std::vector<float> vals = ct->values();
            for (int64_t c = 0; c < ct->packed.cols; ++c)
                QCOMPARE(row[size_t(c)], vals[size_t(3 * ct->packed.cols + c)]);
            if (b.outputRelError < a.outputRelError) ++better;
        }
        QCOMPARE(better, int(gq.layers.size()));
        // The imatrix changes ggml's q4_k blocks (it reached the quantiser).
        const auto plain = run(*m, recipeOf({{"method", "q4_k"}}), &cal);
        QVERIFY(plain.model->compressed("layers.0.attn.q")->values() !=
                rtn.model->compressed("layers.0.attn.q")->values());
    }

    // The recipe's "imatrix" file equals passing the same imatrix; a file for another model is a
    // clear error naming the file.
    void recipeImatrixFile() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/gguf-k/model-f32.gguf"));
        const std::string dat = lcwtest::sharedPath("models/gguf-k/imatrix.dat");
        const Imatrix imx = readImatrix(dat);
        const auto a = run(*m, recipeOf({{"method", "q3_k"}}, dat), nullptr);
        const auto b = run(*m, recipeOf({{"method", "q3_k"}}), nullptr, &imx);
        for (const auto& l : a.layers)
            QVERIFY(a.model->compressed(l.name)->values() == b.model->compressed(l.name)->values());
        auto demo = lcw::Model::load(lcwtest::demoModelPath());
        try {
            run(*demo, recipeOf({{"method", "q8_0"}}, dat), nullptr);
            QFAIL("an imatrix of another model must be refused");
        } catch (const lcw::Error& e) {
            QVERIFY2(QString(e.what()).contains("imatrix.dat"), e.what());
        }
    }

    void recipeErrors() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/gguf-k/model-f32.gguf"));
        auto expect = [&](const Recipe& r, const CalibrationSet* cal, const char* field) {
            try {
                run(*m, r, cal);
                QFAIL(qPrintable(QString("expected an error about ") + field));
            } catch (const RecipeError& e) {
                QVERIFY2(e.field() == field, e.what());
            }
        };
        // A grid goes with gptq / awq only; f16 is no grid; unknown names are refused.
        expect(recipeOf({{"method", "rtn"}, {"gguf", "q4_k"}}), nullptr, "weight.gguf");
        QVERIFY_THROWS_EXCEPTION(RecipeError, recipeOf({{"method", "gptq"}, {"gguf", "f16"}}));
        QVERIFY_THROWS_EXCEPTION(RecipeError, recipeOf({{"method", "gptq"}, {"gguf", "q9_k"}}));
        // "calibrate" needs calibration text.
        expect(recipeOf({{"method", "q4_k"}}, "calibrate"), nullptr, "imatrix");
        QVERIFY_THROWS_EXCEPTION(RecipeError,
                                 Recipe::fromJson({{"lcw_recipe", 1}, {"imatrix", 3}, {"rules", json::array()}}));
    }

    // "calibrate" computes the imatrix from the calibration set (llama-imatrix's collection):
    // the same blocks as compressing with computeImatrix's result. llama-imatrix reads
    // consecutive chunks: a randomly sampled set (the default) is re-cut consecutively, so the
    // imatrix is that of the consecutive set of the same size, not of the random windows.
    void recipeImatrixCalibrate() {
        LCW_REQUIRE_SHARED("models/gguf-k/model-f32.gguf");
        auto m = lcw::Model::load(lcwtest::sharedPath("models/gguf-k/model-f32.gguf"));
        const std::string text = lcwtest::sharedPath("models/gguf-k/calib.txt");
        CalibrationOptions co{4, 128};
        co.sampling = CalibrationSampling::Consecutive;
        const CalibrationSet cal = loadCalibration(*m, text, co);
        const CalibrationSet rnd = loadCalibration(*m, text, {4, 128});
        QCOMPARE(rnd.sampling, CalibrationSampling::Random);
        QVERIFY(rnd.samples != cal.samples);
        lcw::NullProgress np;
        const ImatrixResult ir = computeImatrix(*m, cal, {}, np);
        const ImatrixResult irRnd = computeImatrix(*m, rnd, {}, np);
        const auto a = run(*m, recipeOf({{"method", "iq4_nl"}}, "calibrate"), &cal);
        const auto a2 = run(*m, recipeOf({{"method", "iq4_nl"}}, "calibrate"), &rnd);
        const auto b = run(*m, recipeOf({{"method", "iq4_nl"}}), &cal, &ir.imatrix);
        const auto b2 = run(*m, recipeOf({{"method", "iq4_nl"}}), &cal, &irRnd.imatrix);
        const auto c = run(*m, recipeOf({{"method", "iq4_nl"}}), &cal);
        const auto v = [](const auto& r) {
            return r.model->compressed("layers.1.mlp.down")->values();
        };
        QVERIFY(v(a) == v(b));
        QVERIFY(v(a2) == v(b));
        QVERIFY(v(b2) != v(b)); // the random windows' imatrix would give other blocks
        QVERIFY(v(a) != v(c));
    }
};

QTEST_APPLESS_MAIN(TestGgufGptq)
#include "test_gguf_gptq.moc"
