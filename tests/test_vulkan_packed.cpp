// lcw's packed weights on the Vulkan backend (issue #16): every packed format (int2..8
// symmetric / asymmetric, group / channel / tensor scales, NF4, FP8, outlier columns, masks,
// 2:4, a GPTQ column order) multiplied by the lcw shaders (matvec and tiled matmul) against a
// double-precision product of PackedLinear::dequantizeRows(); recipe activation quantisation
// (fake-quantised on the host) against the CPU's integer product; row chunking; the shared
// weight cache; whole compressed demo models against the CPU. Skips with a message when no
// Vulkan device can be used.
#include "core/common/dtype.h"
#include "core/compress/compressed_model.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "core/runtime/backend.h"
#include "core/runtime/device.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/quant_runtime.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"
#include "vulkan_test_util.h"

#include <QtTest>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace lcw;
using kernels::PackedLinear;
using kernels::PackedSource;

namespace {

/// A weight source with no tensors (the backend's constructor reads its spec only).
class NoWeights final : public WeightSource {
public:
    const ModelSpec& spec() const override { return m_spec; }
    const TensorView* find(std::string_view) const override { return nullptr; }

private:
    ModelSpec m_spec;
};

enum class Mask { None, Unstructured, TwoFour };

struct Variant {
    std::string name;
    compress::WeightSettings st;
    Mask mask = Mask::None;
    int outliers = 0;
    bool order = false;
};

compress::WeightSettings intSt(int bits, bool sym, compress::Granularity g, int64_t group = 64) {
    compress::WeightSettings s;
    s.format = compress::WeightFormat::Int;
    s.bits = bits;
    s.symmetric = sym;
    s.granularity = g;
    s.groupSize = group;
    return s;
}

/// A packed weight of the variant (the source arrays die with this function: the packed form
/// must not need them).
std::unique_ptr<PackedLinear> packedWeight(const Variant& v, int64_t rows, int64_t cols,
                                           uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(size_t(rows * cols));
    for (auto& x : w) x = nd(rng) * 0.05f;
    compress::PackedTensor pt = compress::quantize(w.data(), rows, cols, v.st, "w");
    for (int k = 0; k < v.outliers; ++k)
        pt.outlierCols.push_back(int32_t(1 + k * (cols / v.outliers)));
    for (int64_t r = 0; r < rows * v.outliers; ++r) pt.outlierValues.push_back(f32ToF16(nd(rng)));
    std::vector<uint8_t> mask;
    if (v.mask != Mask::None) {
        mask.assign(size_t(rows * cols), 0);
        std::uniform_int_distribution<int> pick(0, 3), coin(0, 9);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; c += 4) {
                uint8_t* m = mask.data() + r * cols + c;
                if (v.mask == Mask::Unstructured) {
                    for (int64_t j = 0; j < 4 && c + j < cols; ++j) m[j] = coin(rng) < 5;
                } else {
                    const int a = pick(rng), b = (a + 1 + pick(rng) % 3) % 4;
                    m[a] = m[b] = 1;
                }
            }
    }
    std::vector<int32_t> order(static_cast<size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    PackedSource s;
    s.kind = v.st.format == compress::WeightFormat::Int   ? PackedSource::Kind::Int
             : v.st.format == compress::WeightFormat::Nf4 ? PackedSource::Kind::Nf4
                                                          : PackedSource::Kind::Fp8;
    s.bits = v.st.bits;
    s.symmetric = v.st.symmetric;
    s.granularity =
        v.st.granularity == compress::Granularity::Tensor    ? PackedSource::Granularity::Tensor
        : v.st.granularity == compress::Granularity::Channel ? PackedSource::Granularity::Channel
                                                             : PackedSource::Granularity::Group;
    s.group = v.st.groupSize;
    s.rows = rows, s.cols = cols;
    s.codes = pt.codes.data(), s.codeBytes = pt.codes.size();
    s.scales = pt.scales.data(), s.nScales = pt.scales.size();
    s.zeros = pt.zeros.empty() ? nullptr : pt.zeros.data(), s.nZeros = pt.zeros.size();
    s.outlierCols = pt.outlierCols.empty() ? nullptr : pt.outlierCols.data();
    s.nOutlierCols = pt.outlierCols.size();
    s.outlierValues = pt.outlierValues.empty() ? nullptr : pt.outlierValues.data();
    s.mask = mask.empty() ? nullptr : mask.data();
    s.colOrder = v.order ? order.data() : nullptr;
    s.name = v.name;
    return PackedLinear::pack(s);
}

std::vector<Variant> variants() {
    using G = compress::Granularity;
    std::vector<Variant> vs;
    for (int bits : {2, 3, 4, 5, 6, 7, 8})
        for (bool sym : {true, false})
            vs.push_back({"int" + std::to_string(bits) + (sym ? " sym" : " asym") + " g64",
                          intSt(bits, sym, G::Group, 64)});
    for (int bits : {2, 3, 4, 8})
        for (bool sym : {true, false})
            for (int64_t g : {32, 128, 48}) // 200 columns: every size leaves a shorter last group
                vs.push_back({"int" + std::to_string(bits) + (sym ? " sym" : " asym") + " g" +
                                  std::to_string(g),
                              intSt(bits, sym, G::Group, g)});
    for (int bits : {3, 4, 8})
        for (bool sym : {true, false}) {
            const std::string b = "int" + std::to_string(bits) + (sym ? " sym" : " asym");
            vs.push_back({b + " channel", intSt(bits, sym, G::Channel)});
            vs.push_back({b + " tensor", intSt(bits, sym, G::Tensor)});
        }
    compress::WeightSettings nf4;
    nf4.format = compress::WeightFormat::Nf4, nf4.bits = 4, nf4.granularity = G::Group;
    nf4.groupSize = 64;
    compress::WeightSettings fp8;
    fp8.format = compress::WeightFormat::Fp8E4M3, fp8.bits = 8, fp8.granularity = G::Channel;
    vs.push_back({"nf4 g64", nf4});
    vs.push_back({"fp8 channel", fp8});
    vs.push_back({"int4 sym g64 +outliers", intSt(4, true, G::Group, 64), Mask::None, 3});
    vs.push_back({"int8 asym channel +outliers", intSt(8, false, G::Channel), Mask::None, 2});
    vs.push_back({"nf4 +outliers", nf4, Mask::None, 4});
    for (auto [st, nm] : {std::pair{intSt(4, true, G::Group, 64), "int4 sym g64"},
                          std::pair{intSt(4, false, G::Group, 64), "int4 asym g64"},
                          std::pair{intSt(3, true, G::Channel), "int3 sym channel"},
                          std::pair{intSt(8, false, G::Channel), "int8 asym channel"},
                          std::pair{nf4, "nf4 g64"}, std::pair{fp8, "fp8 channel"}}) {
        vs.push_back({std::string(nm) + " +mask", st, Mask::Unstructured});
        vs.push_back({std::string(nm) + " +2:4", st, Mask::TwoFour});
    }
    vs.push_back({"int4 asym g64 +2:4 +outliers", intSt(4, false, G::Group, 64), Mask::TwoFour, 2});
    vs.push_back({"int4 sym g32 +order", intSt(4, true, G::Group, 32), Mask::None, 0, true});
    vs.push_back({"int3 asym g64 +order", intSt(3, false, G::Group, 64), Mask::None, 0, true});
    vs.push_back({"int4 asym g32 +order +outliers +mask", intSt(4, false, G::Group, 32),
                  Mask::Unstructured, 3, true});
    // A 2:4 mask of the input columns is no 2:4 pattern in the stored order: mask bits.
    vs.push_back({"nf4 +order +mask (2 of 4 inputs)", nf4, Mask::TwoFour, 0, true});
    return vs;
}

std::vector<float> randomVector(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

/// Runs `jobs` packed weights with biases on the first, strided x and y, through `be`, and checks
/// every output against a double product of dequantizeRows() (of the activations `xref` when
/// given, else x). Returns false after QFAIL-style messages.
void checkPacked(runtime::Backend& be, const std::vector<const PackedLinear*>& ws, int64_t nTok,
                 const std::string& label, const ActQuantSpec* act = nullptr) {
    const int64_t cols = ws.front()->cols(), ldx = cols + 3;
    const auto x = randomVector(size_t(nTok * ldx), 7);
    std::vector<float> xr = x;
    if (act) runtime::fakeQuantizeActivations(*act, x.data(), ldx, xr.data(), ldx, nTok, cols, 1);
    std::vector<std::vector<float>> ys(ws.size());
    std::vector<kernels::LinearJob> jobs(ws.size());
    const auto bias = randomVector(size_t(ws.front()->rows()), 11);
    for (size_t i = 0; i < ws.size(); ++i) {
        const int64_t ldy = ws[i]->rows() + 2;
        ys[i].assign(size_t(nTok * ldy), -1.0f);
        jobs[i].packed = ws[i];
        jobs[i].y = ys[i].data();
        jobs[i].ldy = ldy;
        jobs[i].bias = i == 0 ? bias.data() : nullptr;
        jobs[i].act = act;
    }
    be.linearBatch(jobs, x.data(), ldx, nTok, 1, true, 0);
    for (size_t i = 0; i < ws.size(); ++i) {
        const int64_t rows = ws[i]->rows(), ldy = rows + 2;
        std::vector<float> w(size_t(rows * cols));
        ws[i]->dequantizeRows(0, rows, w.data());
        const QString err =
            lcwtest::checkAgainstDouble(label, int(i), w, rows, cols, xr, ldx,
                                        i == 0 ? bias.data() : nullptr, ys[i], ldy, nTok);
        QVERIFY2(err.isEmpty(), qPrintable(err));
    }
}

compress::Recipe recipeJ(std::string s) {
    for (auto& c : s)
        if (c == '\'') c = '"';
    return compress::Recipe::fromJson(nlohmann::json::parse(s));
}

} // namespace

class TestVulkanPacked : public QObject {
    Q_OBJECT

private slots:
    void everyPackedVariantBothShaders_data() {
        QTest::addColumn<int>("index");
        QTest::addColumn<int>("tokens");
        const auto vs = variants();
        for (size_t i = 0; i < vs.size(); ++i)
            for (int tokens : {1, 17}) // matvec and the tiled shader (with a token tail)
                QTest::addRow("%s-t%d", vs[i].name.c_str(), tokens) << int(i) << tokens;
    }
    void everyPackedVariantBothShaders() {
        REQUIRE_VULKAN();
        QFETCH(int, index);
        QFETCH(int, tokens);
        const Variant v = variants()[size_t(index)];
        // 200 columns (groups of 32 / 48 / 64 / 128 end short), 13 rows (not a panel multiple).
        const auto a = packedWeight(v, 13, 200, 1);
        const auto b = packedWeight(v, 6, 200, 2);
        // The runtime layouts the variant is meant to reach (2:4 slots, mask bits, order).
        for (const char* tag : {"+2:4", "+mask", "col-order", "outlier"})
            QCOMPARE(a->describe().find(tag) != std::string::npos,
                     v.name.find(std::string(tag) == "col-order" ? "+order" : tag) !=
                         std::string::npos);
        NoWeights nw;
        std::string note;
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), nw, -1, &note);
        QVERIFY2(note.empty(), note.c_str());
        QVERIFY(be->device().id != "cpu");
        checkPacked(*be, {a.get(), b.get()}, tokens, QTest::currentDataTag());
        QCOMPARE(be->counters().deviceProducts, int64_t(2));
        QCOMPARE(be->counters().fallbackProducts, int64_t(0));
        QVERIFY(be->counters().deviceWeightBytes > 0);
    }

    /// W8A8 / W4A8: activations fake-quantised on the host, then the float product: equal to
    /// the fake-quantised product of the dequantised weights, and to the CPU's integer product
    /// up to float rounding.
    void activationQuantisation() {
        REQUIRE_VULKAN();
        using G = compress::Granularity;
        NoWeights nw;
        std::vector<std::unique_ptr<PackedLinear>> alive;
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), nw, -1, nullptr);
        for (int abits : {8, 4}) {
            ActQuantSpec act;
            act.bits = abits;
            act.outlierChannels = {5, 77};
            for (const Variant& v :
                 {Variant{"int8 sym channel", intSt(8, true, G::Channel)},
                  Variant{"int4 asym g32", intSt(4, false, G::Group, 32)},
                  Variant{"int4 sym g64 +outliers", intSt(4, true, G::Group, 64), Mask::None, 2}}) {
                // Kept alive while the backend lives (as a session's source is).
                const PackedLinear* w = alive.emplace_back(packedWeight(v, 12, 192, 3)).get();
                for (int64_t nTok : {1, 9})
                    checkPacked(*be, {w}, nTok, v.name + " a" + std::to_string(abits), &act);
                // Against the CPU's integer product.
                const int64_t nTok = 5, cols = 192;
                const auto x = randomVector(size_t(nTok * cols), 9);
                std::vector<float> yg(size_t(nTok * 12)), yc(yg.size());
                kernels::LinearJob j;
                j.packed = w, j.act = &act, j.ldy = 12;
                j.y = yg.data();
                be->linearBatch({&j, 1}, x.data(), cols, nTok, 1, false, 0);
                j.y = yc.data();
                kernels::linearBatch({&j, 1}, x.data(), cols, nTok, 1, false);
                double d = 0, m = 0;
                for (size_t i = 0; i < yg.size(); ++i) {
                    d = std::max(d, double(std::fabs(yg[i] - yc[i])));
                    m = std::max(m, double(std::fabs(yc[i])));
                }
                QVERIFY2(d <= 1e-5 * m + 1e-6, qPrintable(QString("%1 a%2: %3 vs max %4")
                                                              .arg(v.name.c_str())
                                                              .arg(abits)
                                                              .arg(d)
                                                              .arg(m)));
            }
        }
        QCOMPARE(be->counters().fallbackProducts, int64_t(0));
    }

    /// Weights split into row chunks when one binding cannot hold them; the cache shares one
    /// upload between backends and releases it with the last one.
    void chunksAndSharing() {
        REQUIRE_VULKAN();
        using G = compress::Granularity;
        const auto w = packedWeight({"int4 asym g32 +outliers +order",
                                     intSt(4, false, G::Group, 32), Mask::Unstructured, 2, true},
                                    70, 256, 4);
        NoWeights nw;
        {
            runtime::vulkan::setBindingLimitForTests(2048);
            struct Reset {
                ~Reset() { runtime::vulkan::setBindingLimitForTests(0); }
            } reset;
            auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), nw, -1, nullptr);
            for (int64_t nTok : {2, 9}) checkPacked(*be, {w.get()}, nTok, "chunked");
        }
        auto be = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), nw, -1, nullptr);
        checkPacked(*be, {w.get()}, 1, "shared 1");
        const uint64_t weightBytes = be->counters().deviceWeightBytes;
        QVERIFY(weightBytes > 0);
        const uint64_t before = be->counters().deviceTotalBytes;
        auto be2 = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), nw, -1, nullptr);
        checkPacked(*be2, {w.get()}, 1, "shared 2");
        QCOMPARE(be2->counters().deviceWeightBytes, weightBytes);
        QVERIFY(be2->counters().deviceTotalBytes - before < weightBytes);
        be.reset();
        be2.reset();
        auto be3 = runtime::makeBackend(runtime::parseDeviceSpec("vulkan"), nw, -1, nullptr);
        QVERIFY(be3->counters().deviceTotalBytes < weightBytes);
    }

    /// The demo model compressed with presets and recipes: logits of a prefill and two decode
    /// steps on the GPU equal the CPU's (--exact-activations; W8A8: its integer product) to
    /// 1e-3; every product runs on the GPU.
    void compressedDemoModel_data() {
        QTest::addColumn<QString>("recipe");
        QTest::newRow("W4A16-g64") << "W4A16-g64";
        QTest::newRow("W8A8") << "W8A8";
        QTest::newRow("nf4 g64, fp8 attn")
            << "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'weight': {'format': 'nf4', "
               "'bits': 4, 'group_size': 64}}, {'targets': ['*.attn.*'], 'weight': {'format': "
               "'fp8_e4m3', 'bits': 8, 'granularity': 'channel'}}]}";
        QTest::newRow("2:4 + int4 asym g64, int3 channel")
            << "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'weight': {'bits': 3, "
               "'granularity': 'channel'}}, {'targets': ['*.mlp.*'], 'sparsity': {'method': "
               "'magnitude', 'pattern': '2:4'}, 'weight': {'bits': 4, 'symmetric': false, "
               "'group_size': 64}}]}";
        // Calibrated: GPTQ's column order and weight-outlier columns kept in f16.
        QTest::newRow("gptq act-order g32 + outlier columns")
            << "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'weight': {'bits': 4, "
               "'group_size': 32, 'method': 'gptq', 'act_order': true}, 'outliers': "
               "{'threshold': 2.0}}]}";
        QTest::newRow("unstructured 50% + int8")
            << "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'sparsity': {'method': "
               "'magnitude', 'ratio': 0.5}, 'weight': {'bits': 8, 'symmetric': false}}]}";
    }
    /// Calibration forwards on the GPU (the process default device, as lcw-cli --device sets
    /// it): GPTQ captures its Hessians from activations the GPU computed, and chooses the codes
    /// the CPU's capture gives (float summation order aside: at least 99.9 % identical weights).
    void calibrationOnTheGpu() {
        REQUIRE_VULKAN();
        auto m = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        const compress::Recipe rc = recipeJ("{'lcw_recipe': 1, 'rules': [{'targets': ['*'], "
                                            "'weight': {'bits': 4, 'group_size': 32, 'method': "
                                            "'gptq'}}]}");
        NullProgress np;
        auto onCpu = compress::compressWithBundledCalibration(*m, rc, np, {2, 64});
        const int64_t before = runtime::vulkan::deviceProductsForTests();
        runtime::setDefaultDevice("vulkan");
        struct Reset {
            ~Reset() { runtime::setDefaultDevice("cpu"); }
        } reset;
        auto onGpu = compress::compressWithBundledCalibration(*m, rc, np, {2, 64});
        QVERIFY(runtime::vulkan::deviceProductsForTests() > before); // the capture used the GPU
        QCOMPARE(onCpu.status, Status::Ok);
        QCOMPARE(onGpu.status, Status::Ok);
        int64_t same = 0, total = 0;
        for (const auto& n : onCpu.model->replacedNames()) {
            const PackedLinear* a = onCpu.model->packedLinear(n);
            const PackedLinear* b = onGpu.model->packedLinear(n);
            QVERIFY(a && b);
            std::vector<float> wa(size_t(a->rows() * a->cols())), wb(wa.size());
            a->dequantizeRows(0, a->rows(), wa.data());
            b->dequantizeRows(0, b->rows(), wb.data());
            for (size_t i = 0; i < wa.size(); ++i) same += wa[i] == wb[i];
            total += int64_t(wa.size());
        }
        qInfo("GPTQ calibrated on the GPU: %lld of %lld weights equal to the CPU-calibrated ones",
              (long long)same, (long long)total);
        QVERIFY(total > 0);
        QVERIFY(double(same) >= 0.999 * double(total));
    }

    void compressedDemoModel() {
        REQUIRE_VULKAN();
        QFETCH(QString, recipe);
        auto m = Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        NullProgress np;
        const compress::Recipe rc = recipe.startsWith('{')
                                        ? recipeJ(recipe.toStdString())
                                        : compress::findPreset(recipe.toStdString()).recipe;
        auto r = compress::compressWithBundledCalibration(*m, rc, np, {2, 64});
        QCOMPARE(r.status, Status::Ok);
        const compress::CompressedModel& cm = *r.model;
        int packed = 0, ordered = 0, outliers = 0, sparse = 0;
        for (const auto& n : cm.replacedNames())
            if (const PackedLinear* p = cm.packedLinear(n)) {
                ++packed;
                ordered += p->describe().find("col-order") != std::string::npos;
                outliers += p->describe().find("outlier") != std::string::npos;
                sparse += p->describe().find("+2:4") != std::string::npos;
            }
        QVERIFY(packed > 0);
        if (recipe.contains("act_order")) QVERIFY(ordered > 0 && outliers > 0);
        if (recipe.contains("2:4")) QVERIFY(sparse > 0); // the 2:4 runtime layout
        std::vector<int32_t> ids;
        for (int i = 0; i < 12; ++i) ids.push_back(int32_t((i * 37 + 5) % m->spec().vocab));
        const lcwtest::DeviceRun cpu = lcwtest::runOnDevice(cm, "cpu", ids);
        const lcwtest::DeviceRun gpu = lcwtest::runOnDevice(cm, "vulkan", ids);
        QVERIFY2(gpu.note.empty(), gpu.note.c_str());
        QVERIFY(gpu.deviceId != "cpu");
        QVERIFY(gpu.products > 0);
        // Every product on the GPU (W8A8 too: its activations are fake-quantised on the host).
        QCOMPARE(gpu.fallback, int64_t(0));
        double d = 0;
        QCOMPARE(gpu.logits.size(), cpu.logits.size());
        for (size_t i = 0; i < cpu.logits.size(); ++i)
            d = std::max(d, double(std::fabs(cpu.logits[i] - gpu.logits[i])));
        qInfo("%s: %d packed weights (%d column-ordered, %d with outliers), max |dlogit| %.3g, "
              "%lld device products",
              QTest::currentDataTag(), packed, ordered, outliers, d, (long long)gpu.products);
        QVERIFY2(d <= 1e-3, qPrintable(QString("max |dlogit| %1").arg(d)));
    }
};

QTEST_GUILESS_MAIN(TestVulkanPacked)
#include "test_vulkan_packed.moc"
