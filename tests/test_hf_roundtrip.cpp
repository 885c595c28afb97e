// Round trips through the Hugging Face quantised-checkpoint formats (issue #14): every tiny
// family of ../shared/models/tiny-random and the bundled demo model is compressed in the
// workbench, written as a compressed-tensors, GPTQ or AWQ folder (core/export/hf_checkpoint.h),
// opened again as a model (core/model/load_hf_quant.cpp, an independent implementation of the
// readers), and must give the workbench configuration's weights bit for bit and its logits
// within 1e-5. The writers and the loader were written separately from the formats' own
// definitions, so a disagreement about packing order, zero-point offsets or scale dtypes fails
// here.
#include "core/common/progress.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/export/compressed_tensors.h"
#include "core/export/gptq_awq.h"
#include "core/export/hf_checkpoint.h"
#include "core/io/tensor_values.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "test_util.h"

#include <QtTest/QtTest>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>

using namespace lcw;
using namespace lcw::compress;

namespace {

struct FormatCase {
    const char* name;
    std::function<std::unique_ptr<HfQuantFormat>()> make;
    const char* preset; // what the format can hold on 64/128-wide rows
};

std::vector<float> allValues(const TensorView& t) {
    std::vector<float> v;
    readTensorRows(t, 0, t.rows(), v);
    return v;
}

std::vector<float> logitsOf(const WeightSource& w, int64_t vocab) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 10; ++i) ids.push_back(int32_t((7 * i + 3) % vocab));
    Session s(w, {.contextLength = 16, .threads = 2, .batchSize = 512, .exactActivations = true});
    std::vector<float> logits;
    s.forward(ids, logits, true);
    return logits;
}

} // namespace

class TestHfRoundtrip : public QObject {
    Q_OBJECT

private slots:
    void roundTrip_data() {
        QTest::addColumn<QString>("model");
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        QTest::newRow("demo") << demo;
        for (const char* f : {"gemma", "gpt2", "llama2_sp_f32", "mamba", "mixtral_moe", "opt",
                              "phi3", "qwen2_sharded"})
            QTest::newRow(f) << QString::fromStdString(
                lcwtest::sharedPath(std::string("models/tiny-random/") + f + "/model"));
    }

    void roundTrip() {
        QFETCH(QString, model);
        const std::string path = model.toStdString();
        if (!lcwtest::exists(path))
            QSKIP(qPrintable("model not found: " + model + " (set LCW_SHARED_DIR)"));
        auto base = Model::load(path);
        const std::vector<FormatCase> cases = {
            {"compressed-tensors", [] { return compressedTensorsFormat(); }, "W4A16-g32"},
            {"compressed-tensors", [] { return compressedTensorsFormat(); }, "W8A16"},
            {"compressed-tensors", [] { return compressedTensorsFormat(); }, "FP8-E4M3"},
            // Input activations: applied again at load (as vLLM runs them).
            {"compressed-tensors", [] { return compressedTensorsFormat(); }, "W8A8"},
            {"compressed-tensors", [] { return compressedTensorsFormat(); }, "W8A8-static"},
            {"gptq", [] { return gptqFormat(); }, "W8A16"},
            {"gptq", [] { return gptqFormat({.v2 = true}); }, "W4A16-g32"},
            {"awq", [] { return awqFormat(); }, "W4A16-g32"},
        };
        int n = 0;
        for (const auto& c : cases) {
            const std::string what = path + " " + c.name + " " + c.preset;
            const bool activations = std::string(c.preset).starts_with("W8A8");
            if (activations && base->spec().isMamba()) continue; // no activation quantisation

            NullProgress np;
            Recipe recipe = findPreset(c.preset).recipe;
            // Mamba's dt_proj rows hold dt_rank (4) weights: narrower than a group.
            if (base->spec().isMamba())
                for (Rule& rule : recipe.rules) rule.ignore.push_back("layers.*.mixer.dt_proj");
            CompressResult r = compress::compress(*base, recipe, np);
            QVERIFY2(r.model, what.c_str());
            const std::string out = lcwtest::tempDir("hfrt") + "/ckpt";
            auto fmt = c.make();
            HfCheckpointOptions o;
            o.outDir = out;
            const HfCheckpointResult w = exportHfCheckpoint(*base, *r.model, *fmt, o);
            QCOMPARE(int(w.status), int(Status::Ok));
            int written = 0;
            for (const auto& m : w.modules) written += m.status == "written";
            // Every family has linears the format holds (GPT-2's Conv1D ones excepted).
            if (base->spec().arch != "gpt2") QVERIFY2(written > 0, what.c_str());

            auto back = Model::load(out);
            // Read as the format it claims, the written modules' parts carry their scheme.
            QCOMPARE(QString::fromStdString(back->quantizationMethod()), QString(c.name));
            for (const auto& m : w.modules)
                if (m.status == "written")
                    for (const auto& part : m.canonical)
                        QVERIFY2(!back->tensorScheme(part).empty(), (what + ": " + part).c_str());
            // The weights: bit for bit what the workbench configuration uses.
            for (const std::string& name : r.model->replacedNames()) {
                const CompressedTensor* ct = r.model->compressed(name);
                const TensorView* t = back->find(name);
                QVERIFY2(t, (what + ": " + name + " missing after reopening").c_str());
                const std::vector<float> want = ct->values();
                const std::vector<float> got = allValues(*t);
                QCOMPARE(got.size(), want.size());
                for (size_t i = 0; i < want.size(); ++i)
                    if (got[i] != want[i])
                        QFAIL(qPrintable(QString::fromStdString(what + ": " + name) +
                                         QString(" element %1: %2 != %3")
                                             .arg(i)
                                             .arg(double(got[i]), 0, 'g', 9)
                                             .arg(double(want[i]), 0, 'g', 9)));
            }
            // The input activations the runtime quantises: the same specs.
            // Linears the format could not hold (GPT-2's Conv1D) are floats without them.
            std::set<std::string> inFormat;
            for (const auto& m : w.modules)
                if (m.status == "written") inFormat.insert(m.canonical.begin(), m.canonical.end());
            std::map<std::string, ActQuantSpec> wanted;
            size_t lost = 0;
            if (const RuntimeQuant* ra = r.model->runtimeQuant()) {
                for (const auto& [name, spec] : ra->activations) {
                    if (inFormat.count(name))
                        wanted[name] = spec;
                    else
                        ++lost;
                }
            }
            const RuntimeQuant* rb = back->runtimeQuant();
            QCOMPARE(rb != nullptr, !wanted.empty());
            if (rb) {
                QCOMPARE(rb->activations.size(), wanted.size());
                for (const auto& [name, spec] : wanted) {
                    const ActQuantSpec* got = rb->activation(name);
                    QVERIFY2(got, (what + ": no input quantisation of " + name).c_str());
                    QCOMPARE(got->bits, spec.bits);
                    QCOMPARE(got->perToken, spec.perToken);
                    // Static: the scale the runtime derives is the same float.
                    QCOMPARE(got->clip * got->absMax / 127.0f, spec.clip * spec.absMax / 127.0f);
                }
            }
            if (lost > 0) {
                // Said, not silently dropped; the logits then differ by design.
                bool warned = false;
                for (const auto& wn : w.warnings) warned |= wn.find("activation") != wn.npos;
                QVERIFY2(warned, (what + ": lost input quantisation without a warning").c_str());
                std::filesystem::remove_all(std::filesystem::path(out).parent_path());
                ++n;
                continue;
            }
            // The logits.
            const auto a = logitsOf(*r.model, base->spec().vocab);
            const auto b = logitsOf(*back, base->spec().vocab);
            QCOMPARE(a.size(), b.size());
            const size_t V = size_t(base->spec().vocab), T = a.size() / V;
            double d = 0;
            size_t offTokens = 0;
            for (size_t t = 0; t < T; ++t) {
                double dt = 0;
                for (size_t i = t * V; i < (t + 1) * V; ++i)
                    dt = std::max(dt, double(std::fabs(a[i] - b[i])));
                offTokens += dt > 1e-5;
                d = std::max(d, dt);
            }
            if (!activations) {
                QVERIFY2(d <= 1e-5, qPrintable(QString::fromStdString(what) +
                                               QString(": max |logit diff| %1").arg(d)));
            } else {
                // The workbench multiplies integer codes, the reopened model float32 weights:
                // results an ulp apart, which once in a while puts an activation on the other
                // side of a rounding boundary (one code step). So: at most one token of ten
                // off, and by no more than such a step.
                QVERIFY2(
                    offTokens <= 1 && d <= 5e-2,
                    qPrintable(
                        QString::fromStdString(what) +
                        QString(": %1 tokens off, max |logit diff| %2").arg(offTokens).arg(d)));
            }
            std::filesystem::remove_all(std::filesystem::path(out).parent_path());
            ++n;
        }
        QCOMPARE(n, int(cases.size()) - (base->spec().isMamba() ? 2 : 0));
    }

    // GPTQ's act-order groups (a non-trivial g_idx / weight_g_idx): written by lcw, reopened by
    // lcw's loader into exactly the workbench's weights and logits.
    void gptqActOrderGidx() {
        auto base = Model::load(lcwtest::demoModelPath());
        const Recipe recipe = Recipe::fromJson(nlohmann::json::parse(R"({"lcw_recipe": 1,
            "name": "ao", "rules": [{"targets": ["*"], "weight": {"bits": 4, "symmetric": false,
            "granularity": "group", "group_size": 32, "method": "gptq", "act_order": true}}]})"));
        NullProgress np;
        CompressResult r = compressWithBundledCalibration(*base, recipe, np, {2, 32});
        QVERIFY(r.model);
        int reordered = 0;
        for (const std::string& name : r.model->replacedNames())
            reordered += !r.model->compressed(name)->packed.colOrder.empty();
        QVERIFY(reordered > 0);
        const std::vector<FormatCase> cases = {
            {"gptq", [] { return gptqFormat({.v2 = true}); }, ""},
            {"compressed-tensors", [] { return compressedTensorsFormat(); }, ""},
        };
        for (const auto& c : cases) {
            const std::string out = lcwtest::tempDir("hfrt-ao") + "/ckpt";
            auto fmt = c.make();
            HfCheckpointOptions o;
            o.outDir = out;
            const HfCheckpointResult w = exportHfCheckpoint(*base, *r.model, *fmt, o);
            QCOMPARE(int(w.status), int(Status::Ok));
            auto back = Model::load(out);
            for (const std::string& name : r.model->replacedNames()) {
                const TensorView* t = back->find(name);
                QVERIFY2(t, (c.name + std::string(": ") + name).c_str());
                QVERIFY2(allValues(*t) == r.model->compressed(name)->values(),
                         (c.name + std::string(": ") + name).c_str());
            }
            const auto a = logitsOf(*r.model, base->spec().vocab);
            const auto b = logitsOf(*back, base->spec().vocab);
            QCOMPARE(a.size(), b.size());
            double d = 0;
            for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
            QVERIFY2(d <= 1e-5, c.name);
            std::filesystem::remove_all(std::filesystem::path(out).parent_path());
        }
    }

    // The command line: each checkpoint format by name, the GPTQ zero-point conventions told
    // apart in config.json, and the folder opens with the scheme it was written with.
    void cliFormats() {
        const std::string dir = lcwtest::tempDir("hfrt_cli");
        const QString demo = QString::fromStdString(lcwtest::demoModelPath());
        const std::pair<const char*, const char*> cases[] = {
            {"compressed-tensors", "compressed-tensors"},
            {"gptq", "gptq"},
            {"gptq_v2", "gptq_v2"},
            {"awq", "awq"}};
        for (const auto& [format, marker] : cases) {
            const std::string out = dir + "/" + format;
            const auto r =
                lcwtest::runCli({"export", demo, "--preset", "W4A16-g32", "--format", format,
                                 "--out", QString::fromStdString(out), "--quiet", "--json"});
            QVERIFY2(r.code == 0, r.err.constData());
            const auto report = nlohmann::json::parse(r.out.toStdString());
            QVERIFY(!report["modules"].empty());
            std::ifstream in(out + "/config.json");
            const auto cfg = nlohmann::json::parse(in);
            const auto& q = cfg["quantization_config"];
            const std::string method = q["quant_method"];
            if (std::string(format).starts_with("gptq")) {
                QCOMPARE(QString::fromStdString(method), QString("gptq"));
                QCOMPARE(QString::fromStdString(q["checkpoint_format"].get<std::string>()),
                         QString(marker));
            } else {
                QCOMPARE(QString::fromStdString(method), QString(marker));
            }
            auto m = Model::load(out);
            QVERIFY(!m->tensorScheme("layers.0.attn.q").empty());
            QVERIFY(m->quantizationSummary().find(std::string(format) == "gptq_v2" ? "v2" : "") !=
                    std::string::npos);
        }
        const auto bad = lcwtest::runCli({"export", demo, "--preset", "W4A16-g32", "--format",
                                          "gptq_v3", "--out", QString::fromStdString(dir + "/x")});
        QCOMPARE(bad.code, 2);
        QVERIFY(bad.err.contains("gptq_v2"));
        std::filesystem::remove_all(dir);
    }
};

QTEST_GUILESS_MAIN(TestHfRoundtrip)
#include "test_hf_roundtrip.moc"
