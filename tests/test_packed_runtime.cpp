// Compressed overlays in the runtime: quantised tensors stay packed (no float32 copy), the
// Session multiplies lcw codes through kernels::PackedLinear and GGUF-typed codes in place, and
// the logits equal those of the float32 path (every replaced tensor dequantised, inputs
// fake-quantised) the runtime used before. --exact-activations in the CLI.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/quantizer.h"
#include "core/compress/recipe.h"
#include "core/compress/sparsity.h"
#include "core/model/model.h"
#include "core/runtime/cpu/packed_linear.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <deque>
#include <map>

using namespace lcw;
using namespace lcw::compress;
using json = nlohmann::json;

namespace {

/// JSON written with single quotes (keeps moc's parser happy: no raw strings).
Recipe recipeJ(std::string s) {
    for (auto& c : s)
        if (c == '\'') c = '"';
    return Recipe::fromJson(json::parse(s));
}

/// The runtime's view of an overlay before packed weights: every replaced tensor as float32
/// values (dequantised, pruned values 0), the rest from the overlay, the same runtime
/// quantisation (inputs fake-quantised before float products).
class FloatPath final : public WeightSource {
public:
    explicit FloatPath(const CompressedModel& m) : m_m(m) {
        for (const auto& name : m.replacedNames()) {
            const CompressedTensor* c = m.compressed(name);
            if (!c || !c->quantized) continue;
            m_values.push_back(c->values());
            TensorView v = c->view;
            v.dtype = DType::F32;
            v.data = reinterpret_cast<const std::byte*>(m_values.back().data());
            v.nbytes = m_values.back().size() * sizeof(float);
            m_views[name] = v;
        }
    }
    const ModelSpec& spec() const override { return m_m.spec(); }
    const TensorView* find(std::string_view n) const override {
        auto it = m_views.find(n);
        return it != m_views.end() ? &it->second : m_m.find(n);
    }
    const RuntimeQuant* runtimeQuant() const override { return m_m.runtimeQuant(); }

private:
    const CompressedModel& m_m;
    std::deque<std::vector<float>> m_values;
    std::map<std::string, TensorView, std::less<>> m_views;
};

std::vector<float> logitsOf(const WeightSource& w, const std::vector<int32_t>& ids, bool exact) {
    SessionOptions so;
    so.contextLength = int64_t(ids.size());
    so.exactActivations = exact;
    Session s(w, so);
    std::vector<float> out;
    s.forward(ids, out, true);
    return out;
}

/// max |a − b| / max |b|.
double relDiff(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, m = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        d = std::max(d, std::fabs(double(a[i]) - double(b[i])));
        m = std::max(m, std::fabs(double(b[i])));
    }
    return m > 0 ? d / m : d;
}

size_t floatBytesOfReplaced(const CompressedModel& m) {
    size_t b = 0;
    for (const auto& n : m.replacedNames())
        if (const CompressedTensor* c = m.compressed(n)) b += size_t(c->rows * c->cols) * 4;
    return b;
}

std::vector<int32_t> demoIds(const Model& m, size_t n) {
    auto ids = m.tokenizer().encode(readTextFile(lcwtest::demoTextPath()), true);
    ids.resize(std::min(ids.size(), n));
    return ids;
}

} // namespace

class TestPackedRuntime : public QObject {
    Q_OBJECT

private slots:
    void overlayHoldsNoFloatCopy() {
        auto m = Model::load(lcwtest::demoModelPath());
        NullProgress np;
        auto r = compress::compress(*m, findPreset("W4A16-g64").recipe, np);
        QCOMPARE(r.status, Status::Ok);
        const CompressedModel& cm = *r.model;
        const size_t compressed = cm.compressedSize().bytes();
        // packed codes, f16 scales and zeros: exactly the stored size, no float32 values
        QVERIFY2(
            cm.residentBytes() <= compressed + 16 && cm.residentBytes() + 16 >= compressed,
            qPrintable(
                QString("resident %1, compressed %2").arg(cm.residentBytes()).arg(compressed)));
        QVERIFY(cm.residentBytes() * 6 < floatBytesOfReplaced(cm));
        for (const auto& n : cm.replacedNames()) {
            const CompressedTensor* c = cm.compressed(n);
            QVERIFY(c->quantized && c->floats.empty() && c->materialised.empty());
            QVERIFY(c->view.data == nullptr); // nothing materialised yet
        }
        // A session binds the packed weights and never materialises floats.
        const auto ids = demoIds(*m, 24);
        logitsOf(cm, ids, false);
        size_t packedBytes = 0;
        for (const auto& n : cm.replacedNames()) {
            const CompressedTensor* c = cm.compressed(n);
            QVERIFY2(c->materialised.empty(), n.c_str());
            const kernels::PackedLinear* p = cm.packedLinear(n);
            QVERIFY2(p, n.c_str());
            QCOMPARE(p->rows(), c->rows);
            QCOMPARE(p->cols(), c->cols);
            packedBytes += p->bytes();
        }
        QCOMPARE(cm.residentBytes(), compressed + packedBytes);
        // base tensors and norms are not packed
        QVERIFY(!cm.packedLinear("embed") && !cm.packedLinear("layers.0.attn_norm"));
        QVERIFY(!cm.packedLinear("nope"));
    }

    void findStillServesDequantisedValues() {
        auto m = Model::load(lcwtest::demoModelPath());
        NullProgress np;
        const Recipe rc = recipeJ("{'lcw_recipe': 1, 'rules': ["
                                  "{'targets': ['*'], 'weight': {'bits': 4, 'symmetric': false, "
                                  "'group_size': 64}},"
                                  "{'targets': ['*.mlp.up'], 'weight': {'format': 'nf4', "
                                  "'bits': 4, 'group_size': 32}},"
                                  "{'targets': ['*.attn.o'], 'weight': {'format': 'fp8_e4m3', "
                                  "'bits': 8}},"
                                  "{'targets': ['*.attn.q'], 'weight': {'method': 'q8_0'}}]}");
        auto r = compress::compress(*m, rc, np);
        QCOMPARE(r.status, Status::Ok);
        const CompressedModel& cm = *r.model;
        const size_t before = cm.residentBytes();
        size_t materialised = 0;
        for (const auto& n : cm.replacedNames()) {
            const CompressedTensor* c = cm.compressed(n);
            const TensorView* v = cm.find(n);
            QVERIFY(v && v->shape == (std::vector<int64_t>{c->rows, c->cols}));
            if (methodIsGguf(c->packed.settings.method)) {
                // GGUF types: the blocks in place, for the runtime's GGUF kernels
                QCOMPARE(v->dtype, DType::Q8_0);
                QVERIFY(v->data == reinterpret_cast<const std::byte*>(c->packed.codes.data()));
                QVERIFY(!cm.packedLinear(n));
                continue;
            }
            QCOMPARE(v->dtype, DType::F32);
            const std::vector<float> ref = dequantize(c->packed, n);
            QCOMPARE(v->nbytes, uint64_t(ref.size() * 4));
            QVERIFY2(std::memcmp(v->data, ref.data(), v->nbytes) == 0, n.c_str());
            QVERIFY(c->values() == ref);
            // the same pointer on every call (materialised once)
            QCOMPARE(cm.find(n), v);
            QCOMPARE(static_cast<const void*>(cm.find(n)->data), static_cast<const void*>(v->data));
            std::vector<float> rows(size_t(2 * c->cols));
            c->dequantizeRows(1, 2, rows.data());
            QVERIFY(std::equal(rows.begin(), rows.end(), ref.begin() + c->cols));
            materialised += ref.size() * 4;
            // the packed runtime weight reproduces the same values
            std::vector<float> pk(ref.size());
            cm.packedLinear(n)->dequantizeRows(0, c->rows, pk.data());
            QVERIFY2(pk == ref, n.c_str());
        }
        QVERIFY(materialised > 0);
        size_t packed = 0;
        for (const auto& n : cm.replacedNames())
            if (auto* p = cm.packedLinear(n)) packed += p->bytes();
        QCOMPARE(cm.residentBytes(), before + materialised + packed);
    }

    void packedLogitsMatchTheFloatPath_data() {
        // Relative RMS between the 8-bit-activation path and the float32 one it may reach.
        QTest::addColumn<double>("fastTol");
        QTest::addColumn<QString>("recipe");
        QTest::newRow("int4 asym g64") << 3e-2
                                       << "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], "
                                          "'weight': {'bits': 4, 'symmetric': false, "
                                          "'group_size': 64}}]}";
        // The tied lm_head multiplies the final-norm state in 8-bit blocks too; its few large
        // channels set the block scales, so the logits move more than through the layers.
        QTest::newRow("int3 sym channel, embed (tied lm_head) packed too")
            << 1e-1
            << "{'lcw_recipe': 1, 'rules': [{'targets': ['*', 'embed'], 'weight': "
               "{'bits': 3, 'granularity': 'channel'}}]}";
        QTest::newRow("nf4 / fp8 / q4_0") << 3e-2
                                          << "{'lcw_recipe': 1, 'rules': ["
                                             "{'targets': ['*'], 'weight': {'format': 'nf4', "
                                             "'bits': 4, 'group_size': 64}},"
                                             "{'targets': ['*.attn.*'], 'weight': {'format': "
                                             "'fp8_e4m3', 'bits': 8, 'granularity': 'tensor'}},"
                                             "{'targets': ['*.mlp.gate'], 'weight': {'method': "
                                             "'q4_0'}}]}";
        QTest::newRow("2:4 magnitude + int4, low rank + int8")
            << 3e-2
            << "{'lcw_recipe': 1, 'rules': ["
               "{'targets': ['*.mlp.*'], 'sparsity': {'method': 'magnitude', 'pattern': '2:4'},"
               " 'weight': {'bits': 4, 'symmetric': false, 'group_size': 32}},"
               "{'targets': ['*.attn.q', '*.attn.k'], 'lowrank': {'method': 'svd', "
               "'param_ratio': 0.5}, 'weight': {'bits': 8}}]}";
        QTest::newRow("W8A8") << 3e-2 << "W8A8";
        // 8-bit activations only: with 4-bit ones (15 levels) the float reference's summation
        // order alone can move a value across a rounding boundary, one code step of 1/7 of the
        // range, which the next layers amplify (test_packed_linear checks A4 per product).
        QTest::newRow("W4A8 per-token + clip on down")
            << 3e-2
            << "{'lcw_recipe': 1, 'rules': [{'targets': ['*'], 'weight': {'bits': 4, "
               "'group_size': 32}, 'activation': {'bits': 8}},"
               "{'targets': ['*.mlp.down'], 'activation': {'bits': 8, 'clip': 0.9}}]}";
    }

    void packedLogitsMatchTheFloatPath() {
        QFETCH(QString, recipe);
        QFETCH(double, fastTol);
        auto m = Model::load(lcwtest::demoModelPath());
        NullProgress np;
        const Recipe rc = recipe.startsWith('{') ? recipeJ(recipe.toStdString())
                                                 : findPreset(recipe.toStdString()).recipe;
        auto r = compress::compress(*m, rc, np);
        QCOMPARE(r.status, Status::Ok);
        const CompressedModel& cm = *r.model;
        int packed = 0;
        for (const auto& n : cm.replacedNames()) packed += cm.packedLinear(n) != nullptr;
        QVERIFY(packed > 0);
        const auto ids = demoIds(*m, 40);
        const FloatPath ref(cm);
        const auto want = logitsOf(ref, ids, true);
        const auto exact = logitsOf(cm, ids, true);
        QVERIFY2(relDiff(exact, want) <= 1e-4, qPrintable(QString::number(relDiff(exact, want))));
        // Without --exact-activations the kernels may quantise activations to 8-bit blocks
        // (W4A16 / GGUF weights) or run integer products (W8A8): close, not equal.
        const auto fast = logitsOf(cm, ids, false);
        QVERIFY2(relDiff(fast, want) <= fastTol, qPrintable(QString::number(relDiff(fast, want))));
        // nothing was materialised for the runtime
        for (const auto& n : cm.replacedNames())
            if (const CompressedTensor* c = cm.compressed(n)) QVERIFY(c->materialised.empty());
    }

    void saveLoadKeepsThePackedForm() {
        auto m = Model::load(lcwtest::demoModelPath());
        NullProgress np;
        auto r = compress::compress(*m, findPreset("W4A8").recipe, np);
        QCOMPARE(r.status, Status::Ok);
        const std::string dir = lcwtest::tempDir("packed-runtime") + "/ov";
        r.model->save(dir);
        auto back = CompressedModel::load(dir, *m);
        QCOMPARE(back->residentBytes(), r.model->residentBytes());
        QCOMPARE(back->compressedSize().bits, r.model->compressedSize().bits);
        const auto ids = demoIds(*m, 32);
        for (bool exact : {true, false}) {
            const auto a = logitsOf(*r.model, ids, exact);
            const auto b = logitsOf(*back, ids, exact);
            QVERIFY(a == b);
        }
        for (const auto& n : back->replacedNames()) {
            QVERIFY(back->compressed(n)->packed.codes == r.model->compressed(n)->packed.codes);
            QVERIFY(back->compressed(n)->materialised.empty());
        }
    }

    void cliExactActivations() {
        const QString model = QString::fromStdString(lcwtest::demoModelPath());
        for (bool exact : {false, true}) {
            QStringList args = {"eval",   model, "--preset",    "W4A16-g64", "--chunks",       "2",
                                "--ctx",  "64",  "--no-record", "--json",    "--speed-tokens", "4",
                                "--quiet"};
            if (exact) args << "--exact-activations";
            const auto run = lcwtest::runCli(args);
            QVERIFY2(run.code == 0, run.err.constData());
            const json j = json::parse(run.out.toStdString());
            QCOMPARE(j["activations"].get<std::string>(),
                     std::string(exact ? "exact-f32" : "quantized-8bit"));
            QCOMPARE(j["settings"]["exact_activations"].get<bool>(), exact);
            const json& c = j["configs"][0];
            QVERIFY(c["overlay_resident_bytes"].get<uint64_t>() > 0);
            if (!c["peak_rss_bytes"].is_null()) QVERIFY(c["peak_rss_bytes"].get<uint64_t>() > 0);
        }
        for (const char* cmd : {"perplexity", "logits"}) {
            QStringList args = {cmd,      model,    "--preset", "W4A16-g64", "--exact-activations",
                                "--json", "--quiet"};
            const std::string out = lcwtest::tempDir("packed-cli") + "/l.npy";
            if (std::string(cmd) == "perplexity")
                args << "--text" << QString::fromStdString(lcwtest::demoTextPath()) << "--ctx"
                     << "64";
            else
                args << "--ids"
                     << "1,2,3"
                     << "--out" << QString::fromStdString(out);
            const auto run = lcwtest::runCli(args);
            QVERIFY2(run.code == 0, run.err.constData());
            QCOMPARE(json::parse(run.out.toStdString())["activations"].get<std::string>(),
                     std::string("exact-f32"));
        }
    }
};

QTEST_GUILESS_MAIN(TestPackedRuntime)
#include "test_packed_runtime.moc"
