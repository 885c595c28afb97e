// Tests of the Run panel's configurations (base model, the recipe editor's recipe, a saved
// overlay folder) and of the Compare view's other model files, per-block hidden-state error and
// editor-recipe names (issue 17, part 6), on stories260K from ../shared: every number the panels
// show is compared with the core functions lcw-cli runs (and with lcw-cli itself where it is
// built).
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/config_source.h"
#include "core/eval/divergence.h"
#include "core/eval/hidden_error.h"
#include "core/eval/perplexity.h"
#include "core/model/model.h"
#include "core/runtime/session.h"
#include "core/tokenizer/tokenizer.h"
#include "gui_test_util.h"
#include "plots/grouped_bar_plot.h"
#include "test_util.h"
#include "widgets/compare_panel.h"
#include "widgets/main_window.h"
#include "widgets/recipe_editor.h"
#include "widgets/results_panel.h"
#include "widgets/run_panel.h"
#include "widgets/task_runner.h"

#include <QCheckBox>
#include <QComboBox>
#include <QTabWidget>
#include <QTableWidget>
#include <QtTest/QtTest>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

namespace {

constexpr int kLongTimeoutMs = 180000;

std::string hfModel() {
    return lcwtest::sharedPath("models/stories260K/hf");
}
std::string q4Gguf() {
    return lcwtest::sharedPath("models/stories260K/gguf/stories260K-q4_k_m.gguf");
}
std::string otherVocabModel() {
    return lcwtest::sharedPath("models/babyllama/tok105_model5000.bin"); // vocabulary 105
}

/// The first 24,000 bytes of the bundled evaluation text, in a file of its own.
std::string shortText(const std::string& tag) {
    std::ifstream in(lcwtest::demoTextPath(), std::ios::binary);
    std::string text(24000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    text.resize(size_t(in.gcount()));
    const std::string path = lcwtest::tempDir(tag) + "/text.txt";
    std::ofstream(path, std::ios::binary) << text;
    return path;
}

std::string readAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// RTN int4, asymmetric, groups of 32 (the W4A16-g32 preset), named.
lcw::compress::Recipe rtnRecipe(const std::string& name) {
    lcw::compress::Recipe r = lcw::compress::findPreset("W4A16-g32").recipe;
    r.name = name;
    return r;
}

lcw::PerplexityOptions pplOptions(const lcw::Model& m, int64_t ctx, int64_t chunks = 0) {
    lcw::PerplexityOptions po;
    po.ctx = ctx;
    po.batch = ctx;
    po.maxChunks = chunks;
    po.bosId = m.tokenizer().bosId();
    return po;
}

bool cliBuilt() {
    return lcwtest::exists(LCW_CLI_PATH);
}

} // namespace

class TestGuiRunCmp : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() { lcwtest::initGuiTestCase("test_gui_runcmp"); }
    void cleanupTestCase() { QSettings().clear(); }

    // ---------------------------------------------------------------------------- Run panel
    void runPanelPerplexityOnEditorRecipeAndOverlay() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        QVERIFY(model->hasTokenizer());
        const std::string textPath = shortText("runcmp-run");
        const std::vector<int32_t> tokens = model->tokenizer().encode(readAll(textPath), true);
        constexpr int kCtx = 64;

        lcw::TaskRunner runner;
        lcw::RunPanel panel(&runner);
        panel.setModel(model);
        panel.setTextFile(QString::fromStdString(textPath));
        panel.setContext(kCtx);
        lcw::compress::Recipe editor = rtnRecipe("rtn-int4-g32");
        panel.setEditorRecipeProvider([&editor] { return editor; });
        QSignalSpy done(&panel, &lcw::RunPanel::perplexityFinished);
        QSignalSpy failed(&panel, &lcw::RunPanel::perplexityFailed);
        auto runPpl = [&]() -> double {
            const int before = done.count();
            if (!panel.runPerplexity()) return -1;
            if (!QTest::qWaitFor([&] { return done.count() > before || !failed.isEmpty(); },
                                 kLongTimeoutMs))
                return -2;
            if (!failed.isEmpty()) qWarning("%s", qPrintable(failed.last()[0].toString()));
            return failed.isEmpty() ? panel.lastPerplexity()->ppl : -3;
        };
        lcw::NullProgress np;
        const lcw::PerplexityOptions po = pplOptions(*model, kCtx);

        // The base model: the core's number.
        QCOMPARE(panel.configuration(), lcw::RunPanel::Configuration::BaseModel);
        const double basePpl = runPpl();
        QVERIFY(basePpl > 0);
        const double coreBase = lcw::computePerplexity(*model, tokens, po, np).ppl;
        QVERIFY2(std::abs(basePpl - coreBase) <= 1e-6,
                 qPrintable(QStringLiteral("%1 vs %2").arg(basePpl, 0, 'g', 17).arg(coreBase)));
        QCOMPARE(panel.lastPerplexityConfiguration(), QStringLiteral("base model"));
        QVERIFY(panel.perplexityResultText().endsWith(QStringLiteral("on base model")));

        // The editor's recipe: compressed in the job, then measured; the same number as
        // `lcw-cli perplexity --recipe` computes through the core.
        panel.setConfiguration(lcw::RunPanel::Configuration::EditorRecipe);
        QCOMPARE(panel.configurationLabel(), QStringLiteral("editor recipe: rtn-int4-g32"));
        const double recipePpl = runPpl();
        QVERIFY(recipePpl > 0);
        const auto cr = lcw::compress::compress(*model, editor, np);
        const double coreRecipe = lcw::computePerplexity(*cr.model, tokens, po, np).ppl;
        qInfo("base PPL %.6f, rtn-int4-g32 PPL %.6f", basePpl, recipePpl);
        QVERIFY2(std::abs(recipePpl - coreRecipe) <= 1e-6,
                 qPrintable(QStringLiteral("%1 vs %2").arg(recipePpl, 0, 'g', 17).arg(coreRecipe)));
        QVERIFY(std::abs(recipePpl - basePpl) > 1e-3);
        QCOMPARE(panel.lastPerplexityConfiguration(),
                 QStringLiteral("editor recipe: rtn-int4-g32"));
        QVERIFY2(
            panel.perplexityResultText().contains(QStringLiteral("editor recipe: rtn-int4-g32")),
            qPrintable(panel.perplexityResultText()));
        // lcw-cli itself, when built: the same number.
        if (cliBuilt()) {
            const std::string recipeFile = lcwtest::tempDir("runcmp-recipe") + "/r.json";
            std::ofstream(recipeFile) << editor.toJson().dump(2);
            const lcwtest::CliRun r =
                lcwtest::runCli({QStringLiteral("perplexity"), QString::fromStdString(hfModel()),
                                 QStringLiteral("--text"), QString::fromStdString(textPath),
                                 QStringLiteral("--ctx"), QString::number(kCtx),
                                 QStringLiteral("--recipe"), QString::fromStdString(recipeFile),
                                 QStringLiteral("--json"), QStringLiteral("--quiet")});
            QVERIFY2(r.code == 0, r.err.constData());
            const double cliPpl = nlohmann::json::parse(r.out.toStdString())["ppl"].get<double>();
            QVERIFY2(std::abs(recipePpl - cliPpl) <= 1e-6,
                     qPrintable(QStringLiteral("%1 vs lcw-cli %2").arg(recipePpl).arg(cliPpl)));
        }
        // Run again: the kept weights, the same number.
        QCOMPARE(runPpl(), recipePpl);

        // Another model (here the same file opened again, as a GGUF would be): the kept weights
        // belong to the first, the recipe is compressed anew.
        panel.setModel(std::shared_ptr<const lcw::Model>(lcw::Model::load(hfModel())));
        QCOMPARE(runPpl(), recipePpl);
        panel.setModel(model);

        // Another editor recipe: compressed anew (not the kept weights of the first).
        editor = rtnRecipe("rtn-int3-g64");
        editor.rules = lcw::compress::findPreset("W3A16-g64").recipe.rules;
        const double r3 = runPpl();
        const double core3 = lcw::computePerplexity(
                                 *lcw::compress::compress(*model, editor, np).model, tokens, po, np)
                                 .ppl;
        QVERIFY2(std::abs(r3 - core3) <= 1e-6,
                 qPrintable(QStringLiteral("%1 vs %2").arg(r3).arg(core3)));
        QVERIFY(std::abs(r3 - recipePpl) > 1e-3);

        // A saved overlay folder, written through the core, then loaded by the panel.
        const std::string dir = lcwtest::tempDir("runcmp-overlay") + "/rtn-overlay";
        cr.model->save(dir);
        QString error;
        const std::string empty = lcwtest::tempDir("runcmp-not-overlay");
        QVERIFY(!panel.setOverlayFolder(QString::fromStdString(empty), &error));
        QVERIFY2(error.contains(QString::fromStdString(empty)), qPrintable(error));
        QVERIFY(panel.setOverlayFolder(QString::fromStdString(dir), &error));
        QCOMPARE(panel.configuration(), lcw::RunPanel::Configuration::SavedOverlay);
        const double overlayPpl = runPpl();
        const auto loaded = lcw::compress::CompressedModel::load(dir, *model);
        const double coreOverlay = lcw::computePerplexity(*loaded, tokens, po, np).ppl;
        QVERIFY2(std::abs(overlayPpl - coreOverlay) <= 1e-6,
                 qPrintable(QStringLiteral("%1 vs %2").arg(overlayPpl).arg(coreOverlay)));
        QVERIFY(std::abs(overlayPpl - recipePpl) <= 1e-6); // the same weights as the recipe's
        QCOMPARE(panel.lastPerplexityConfiguration(), QStringLiteral("overlay rtn-overlay"));

        // A preset.
        QVERIFY(panel.setPreset(QStringLiteral("W4A16-g32")));
        QCOMPARE(panel.configurationLabel(), QStringLiteral("preset W4A16-g32"));
        QVERIFY(std::abs(runPpl() - coreRecipe) <= 1e-6); // the same rules as rtnRecipe()
    }

    void runPanelGeneratesOnEditorRecipe() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        lcw::TaskRunner runner;
        lcw::RunPanel panel(&runner);
        panel.setModel(model);
        const lcw::compress::Recipe editor = rtnRecipe("rtn-int4-g32");
        panel.setEditorRecipeProvider([&editor] { return editor; });
        panel.setConfiguration(lcw::RunPanel::Configuration::EditorRecipe);
        panel.setPrompt(QStringLiteral("Once upon a time"));
        panel.setMaxNewTokens(24);
        lcw::SamplingParams greedy;
        greedy.temperature = 0;
        panel.setSampling(greedy);
        QSignalSpy done(&panel, &lcw::RunPanel::generationFinished);
        QSignalSpy failed(&panel, &lcw::RunPanel::generationFailed);
        QVERIFY(panel.generate());
        QVERIFY(QTest::qWaitFor([&] { return done.count() + failed.count() > 0; }, kLongTimeoutMs));
        QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed[0][0].toString()));
        QCOMPARE(panel.lastGenerationConfiguration(),
                 QStringLiteral("editor recipe: rtn-int4-g32"));
        QVERIFY2(panel.generationStatusText().contains(QStringLiteral("on editor recipe")),
                 qPrintable(panel.generationStatusText()));

        // The core's greedy continuation on the compressed weights.
        lcw::NullProgress np;
        const auto cr = lcw::compress::compress(*model, editor, np);
        const lcw::Tokenizer& tk = model->tokenizer();
        const std::vector<int32_t> ids = tk.encode("Once upon a time", true);
        lcw::SessionOptions so;
        so.contextLength = int64_t(ids.size()) + 24;
        lcw::Session session(*cr.model, so);
        const lcw::GenerateResult g = session.generate(ids, 24, greedy);
        QCOMPARE(panel.outputText(), QString::fromStdString(tk.decode(g.ids)));
    }

    void runPanelCancelsWhileCompressing() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        const std::string textPath = shortText("runcmp-cancel");
        lcw::TaskRunner runner;
        lcw::RunPanel panel(&runner);
        panel.setModel(model);
        panel.setTextFile(QString::fromStdString(textPath));
        panel.setContext(64);
        // GPTQ calibrated on the bundled text: the job compresses first, reporting
        // "compressing: …"; cancelling then ends the job without a result.
        const lcw::compress::Recipe editor = lcw::compress::findPreset("W4A16-g32-GPTQ").recipe;
        panel.setEditorRecipeProvider([&editor] { return editor; });
        panel.setConfiguration(lcw::RunPanel::Configuration::EditorRecipe);
        QStringList stages;
        connect(&runner, &lcw::TaskRunner::progressChanged, &panel,
                [&](lcw::TaskRunner::JobId, double, const QString& stage) {
                    stages << stage;
                    if (stage.startsWith(QStringLiteral("compressing: "))) panel.cancelPerplexity();
                });
        QSignalSpy cancelled(&panel, &lcw::RunPanel::perplexityCancelled);
        QSignalSpy done(&panel, &lcw::RunPanel::perplexityFinished);
        QVERIFY(panel.runPerplexity());
        QVERIFY(
            QTest::qWaitFor([&] { return cancelled.count() + done.count() > 0; }, kLongTimeoutMs));
        QVERIFY2(!stages.isEmpty() && stages.front().startsWith(QStringLiteral("compressing: ")),
                 qPrintable(stages.join(QStringLiteral(" | "))));
        QCOMPARE(cancelled.count(), 1);
        QCOMPARE(done.count(), 0);
        // It stopped while compressing: no perplexity chunk ran.
        for (const QString& st : stages)
            QVERIFY2(!st.startsWith(QStringLiteral("chunk")), qPrintable(st));
        QVERIFY(!panel.lastPerplexity());
        QVERIFY2(panel.perplexityResultText().startsWith(QStringLiteral("Cancelled")),
                 qPrintable(panel.perplexityResultText()));
        QVERIFY(!panel.isPerplexityRunning());
    }

    void runPanelRemembersConfiguration() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        const std::string dir = lcwtest::tempDir("runcmp-settings") + "/ov";
        lcw::NullProgress np;
        lcw::compress::compress(*model, rtnRecipe("x"), np).model->save(dir);
        const QString ini = QString::fromStdString(lcwtest::tempDir("runcmp-ini") + "/s.ini");
        lcw::TaskRunner runner;
        {
            lcw::RunPanel a(&runner);
            QVERIFY(a.setOverlayFolder(QString::fromStdString(dir)));
            QSettings s(ini, QSettings::IniFormat);
            a.writeSettings(s);
            QVERIFY(a.setPreset(QStringLiteral("W8A16")));
            QSettings s2(ini + QStringLiteral(".2"), QSettings::IniFormat);
            a.writeSettings(s2);
        }
        lcw::RunPanel b(&runner);
        b.readSettings(QSettings(ini, QSettings::IniFormat));
        QCOMPARE(b.configuration(), lcw::RunPanel::Configuration::SavedOverlay);
        QCOMPARE(b.overlayFolder(), QFileInfo(QString::fromStdString(dir)).absoluteFilePath());
        QCOMPARE(b.configurationLabel(), QStringLiteral("overlay ov"));
        lcw::RunPanel c(&runner);
        c.readSettings(QSettings(ini + QStringLiteral(".2"), QSettings::IniFormat));
        QCOMPARE(c.configurationLabel(), QStringLiteral("preset W8A16"));
        // A folder that has gone: the base model.
        std::filesystem::remove_all(dir);
        lcw::RunPanel d(&runner);
        d.readSettings(QSettings(ini, QSettings::IniFormat));
        QCOMPARE(d.configuration(), lcw::RunPanel::Configuration::BaseModel);
    }

    void mainWindowHandsTheEditorRecipeToTheRunPanel() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(hfModel())));
        w.recipeEditor()->setRecipe(rtnRecipe("handed-over"), QStringLiteral("test"));
        w.runPanel()->setConfiguration(lcw::RunPanel::Configuration::EditorRecipe);
        QCOMPARE(w.runPanel()->configurationLabel(), QStringLiteral("editor recipe: handed-over"));
    }

    // ------------------------------------------------------------------------------ Compare
    void projectKeepsCompareModelFiles() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        LCW_REQUIRE_SHARED("models/stories260K/gguf/stories260K-q4_k_m.gguf");
        const QString proj =
            QString::fromStdString(lcwtest::tempDir("runcmp-project") + "/p.lcwproj");
        const QString gguf = QFileInfo(QString::fromStdString(q4Gguf())).absoluteFilePath();
        {
            lcw::MainWindow w(lcw::MainWindow::Options{false, false});
            QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(hfModel())));
            QVERIFY(w.comparePanel()->addModelFile(gguf));
            QVERIFY(w.saveProject(proj));
            w.waitForSaves();
        }
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QSignalSpy opened(&w, &lcw::MainWindow::projectOpened);
        QVERIFY(lcwtest::openProjectAndWait(w, proj));
        QTRY_COMPARE_WITH_TIMEOUT(opened.count(), 1, kLongTimeoutMs);
        const auto files = w.comparePanel()->modelFiles();
        QCOMPARE(int(files.size()), 1);
        QCOMPARE(files[0].second, gguf);
        QVERIFY(w.comparePanel()->selectedConfigs().contains(files[0].first));
    }

    void compareAcceptsAnotherModelFile() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        LCW_REQUIRE_SHARED("models/stories260K/gguf/stories260K-q4_k_m.gguf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        const std::string textPath = shortText("runcmp-cmp");
        lcw::TaskRunner runner;
        lcw::ComparePanel cp(&runner);
        cp.setModel(model);
        cp.setTextFile(QString::fromStdString(textPath));
        cp.setContext(64);
        cp.setMaxChunks(4);
        cp.setGenerateTokens(0);
        cp.setSpeedTokens(0);
        QString error;
        QVERIFY(!cp.addModelFile(QStringLiteral("/no/such/model.gguf"), &error));
        QVERIFY2(error.contains(QStringLiteral("/no/such/model.gguf")), qPrintable(error));
        QVERIFY(cp.addModelFile(QString::fromStdString(q4Gguf()), &error));
        const QString name = QStringLiteral("stories260K-q4_k_m.gguf");
        QVERIFY(cp.availableConfigs().contains(name));
        QVERIFY(cp.selectedConfigs().contains(name));
        cp.setSelectedConfigs({name});
        QSignalSpy done(&cp, &lcw::ComparePanel::finished);
        QSignalSpy failed(&cp, &lcw::ComparePanel::failed);
        QVERIFY(cp.run());
        QVERIFY(QTest::qWaitFor([&] { return done.count() + failed.count() > 0; }, kLongTimeoutMs));
        QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed[0][0].toString()));
        const lcw::CompareResults r = cp.results();
        QCOMPARE(r.rows.size(), size_t(2));
        const lcw::CompareRow& row = r.rows[1];
        QCOMPARE(row.name, name);
        QCOMPARE(row.modelFile, QFileInfo(QString::fromStdString(q4Gguf())).absoluteFilePath());
        QCOMPARE(cp.metricsTable()->item(1, lcw::ComparePanel::ConfigColumn)->text(), name);

        // What `lcw-cli eval MODEL --compare-model OTHER` computes through the core.
        const auto other = lcw::loadCompareModel(q4Gguf(), *model);
        QCOMPARE(row.bitsPerWeight, lcw::modelBitsPerWeight(*other));
        QCOMPARE(row.bytes, quint64(other->storedBytes()));
        QVERIFY(row.bitsPerWeight < 8.0); // Q4_K_M, not the F32 original
        const std::vector<int32_t> tokens = model->tokenizer().encode(readAll(textPath), true);
        lcw::NullProgress np;
        const lcw::DivergenceResult d = lcw::compareToBaseline(
            *model, {{name.toStdString(), other.get()}}, tokens, pplOptions(*model, 64, 4), np);
        qInfo("KLD of %s: %.8f (core %.8f), PPL %.5f", qPrintable(name), row.kld,
              d.configs[0].kld.mean, row.ppl);
        QVERIFY(row.kld > 0);
        QCOMPARE(row.kld, d.configs[0].kld.mean);
        QCOMPARE(row.ppl, d.configs[0].ppl);
        QCOMPARE(row.sameTop, d.configs[0].sameTop);
        if (cliBuilt()) {
            const lcwtest::CliRun c = lcwtest::runCli(
                {QStringLiteral("eval"), QString::fromStdString(hfModel()),
                 QStringLiteral("--text"), QString::fromStdString(textPath),
                 QStringLiteral("--ctx"), QStringLiteral("64"), QStringLiteral("--chunks"),
                 QStringLiteral("4"), QStringLiteral("--compare-model"),
                 QString::fromStdString(q4Gguf()), QStringLiteral("--json"),
                 QStringLiteral("--quiet")});
            QVERIFY2(c.code == 0, c.err.constData());
            const auto j = nlohmann::json::parse(c.out.toStdString());
            const double cliKld = j["configs"][0]["kld"]["mean"].get<double>();
            QVERIFY2(std::abs(cliKld - row.kld) <= 1e-9 * std::max(1.0, cliKld),
                     qPrintable(QStringLiteral("%1 vs lcw-cli %2").arg(row.kld).arg(cliKld)));
        }

        // Saved and restored with the results, and in the results store's record.
        const lcw::CompareResults back = lcw::CompareResults::fromJson(r.toJson());
        QCOMPARE(back.rows[1].modelFile, row.modelFile);
        QCOMPARE(back.rows[1].name, name);
        const auto rec =
            lcw::ResultsPanel::compareRecord(r, QStringLiteral("m"), QStringLiteral("t"));
        QCOMPARE(rec["configs"][0]["kind"].get<std::string>(), std::string("model"));
        QCOMPARE(QString::fromStdString(rec["configs"][0]["source"].get<std::string>()),
                 row.modelFile);
        QCOMPARE(lcw::ResultsPanel::toCompareResults(rec).rows[1].modelFile, row.modelFile);

        // Another vocabulary: the comparison fails naming the file.
        if (lcwtest::exists(otherVocabModel())) {
            QVERIFY(cp.addModelFile(QString::fromStdString(otherVocabModel())));
            cp.setSelectedConfigs({name, QStringLiteral("tok105_model5000.bin")});
            QVERIFY(cp.run());
            QVERIFY(
                QTest::qWaitFor([&] { return done.count() + failed.count() > 1; }, kLongTimeoutMs));
            QCOMPARE(failed.count(), 1);
            const QString message = failed[0][0].toString();
            QVERIFY2(message.contains(QStringLiteral("babyllama/tok105_model5000.bin")) &&
                         message.contains(QStringLiteral("vocabulary")),
                     qPrintable(message));
        }
    }

    void compareShowsHiddenStateErrorPerBlock() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        const std::string textPath = shortText("runcmp-hidden");
        lcw::TaskRunner runner;
        lcw::ComparePanel cp(&runner);
        cp.setModel(model);
        cp.setTextFile(QString::fromStdString(textPath));
        cp.setContext(64);
        cp.setMaxChunks(3);
        cp.setGenerateTokens(0);
        cp.setSpeedTokens(0);
        cp.setSelectedConfigs({QStringLiteral("W4A16-g32"), QStringLiteral("W3A16-g64")});
        cp.setHiddenErrorEnabled(true);
        QSignalSpy done(&cp, &lcw::ComparePanel::finished);
        QSignalSpy failed(&cp, &lcw::ComparePanel::failed);
        QVERIFY(cp.run());
        QVERIFY(QTest::qWaitFor([&] { return done.count() + failed.count() > 0; }, kLongTimeoutMs));
        QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed[0][0].toString()));
        const lcw::CompareResults& r = cp.results();
        QCOMPARE(r.rows.size(), size_t(3));
        QVERIFY(r.rows[0].hidden.empty()); // the baseline

        // `lcw-cli hidden-error` through the core.
        lcw::NullProgress np;
        const auto w4 = lcw::compress::compressWithBundledCalibration(
            *model, lcw::compress::findPreset("W4A16-g32").recipe, np);
        const auto w3 = lcw::compress::compressWithBundledCalibration(
            *model, lcw::compress::findPreset("W3A16-g64").recipe, np);
        const std::vector<int32_t> tokens = model->tokenizer().encode(readAll(textPath), true);
        const lcw::HiddenErrorResult h = lcw::hiddenStateError(
            *model, {{"W4A16-g32", w4.model.get()}, {"W3A16-g64", w3.model.get()}}, tokens,
            pplOptions(*model, 64, 3), np);
        const int blocks = int(model->spec().nLayers);
        QVERIFY(blocks > 1);
        QCOMPARE(r.hiddenTokens, h.tokens);
        lcw::GroupedBarPlot* plot = cp.hiddenErrorPlot();
        QTableWidget* t = cp.hiddenErrorTable();
        QCOMPARE(plot->seriesCount(), 2);
        QCOMPARE(plot->categoryCount(), blocks);
        QCOMPARE(t->rowCount(), blocks);
        QCOMPARE(t->columnCount(), 1 + 2 * 2);
        QCOMPARE(t->horizontalHeaderItem(1)->text(), QStringLiteral("W4A16-g32 rel. error"));
        for (int k = 0; k < 2; ++k) {
            const lcw::CompareRow& row = r.rows[size_t(k + 1)];
            QCOMPARE(int(row.hidden.size()), blocks);
            for (int b = 0; b < blocks; ++b) {
                const lcw::BlockError& e = h.configs[size_t(k)].blocks[size_t(b)];
                QCOMPARE(row.hidden[size_t(b)].relError, e.relError);
                QCOMPARE(row.hidden[size_t(b)].meanCosine, e.meanCosine);
                QCOMPARE(row.hidden[size_t(b)].meanRelError, e.meanRelError);
                QCOMPARE(row.hidden[size_t(b)].minCosine, e.minCosine);
                QVERIFY(e.relError > 0);
                QCOMPARE(plot->values()[k][b], e.relError);
                QCOMPARE(t->item(b, 1 + 2 * k)->data(Qt::UserRole).toDouble(), e.relError);
                QCOMPARE(t->item(b, 2 + 2 * k)->data(Qt::UserRole).toDouble(), e.meanCosine);
            }
        }
        // lcw-cli hidden-error itself, when built: the same numbers.
        if (cliBuilt()) {
            const lcwtest::CliRun c = lcwtest::runCli(
                {QStringLiteral("hidden-error"), QString::fromStdString(hfModel()),
                 QStringLiteral("--text"), QString::fromStdString(textPath),
                 QStringLiteral("--ctx"), QStringLiteral("64"), QStringLiteral("--chunks"),
                 QStringLiteral("3"), QStringLiteral("--preset"), QStringLiteral("W4A16-g32"),
                 QStringLiteral("--json"), QStringLiteral("--quiet")});
            QVERIFY2(c.code == 0, c.err.constData());
            const auto j = nlohmann::json::parse(c.out.toStdString());
            const auto& cb = j["configs"][0]["blocks"];
            QCOMPARE(int(cb.size()), blocks);
            for (int b = 0; b < blocks; ++b) {
                const double cli = cb[size_t(b)]["rel_error"].get<double>();
                const double gui = r.rows[1].hidden[size_t(b)].relError;
                QVERIFY2(std::abs(cli - gui) <= 1e-9 * std::max(1.0, cli),
                         qPrintable(QStringLiteral("block %1: %2 vs lcw-cli %3")
                                        .arg(b)
                                        .arg(gui, 0, 'g', 17)
                                        .arg(cli, 0, 'g', 17)));
            }
        }
        qInfo("hidden-state rel. error of the last block: W4A16-g32 %.5f, W3A16-g64 %.5f",
              h.configs[0].blocks.back().relError, h.configs[1].blocks.back().relError);
        // 3-bit weights err more than 4-bit ones by the last block.
        QVERIFY(h.configs[1].blocks.back().relError > h.configs[0].blocks.back().relError);
        const int tab = cp.tabs()->indexOf(cp.hiddenErrorView());
        QVERIFY(tab >= 0);
        QCOMPARE(cp.tabs()->tabText(tab), QStringLiteral("Hidden State"));
        cp.tabs()->setCurrentIndex(tab);
        cp.hiddenErrorLogCheck()->setChecked(false);
        QTest::qWait(20);

        // Saved and restored with the results.
        const lcw::CompareResults back = lcw::CompareResults::fromJson(r.toJson());
        QCOMPARE(back.hiddenTokens, r.hiddenTokens);
        QCOMPARE(back.rows[2].hidden.size(), r.rows[2].hidden.size());
        QCOMPARE(back.rows[2].hidden.back().relError, r.rows[2].hidden.back().relError);
        cp.clearResults();
        QCOMPARE(plot->seriesCount(), 0);
        cp.setResults(back);
        QCOMPARE(plot->seriesCount(), 2);
        QCOMPARE(t->item(blocks - 1, 3)->data(Qt::UserRole).toDouble(),
                 h.configs[1].blocks.back().relError);

        // Off: no hidden-state error measured.
        cp.setHiddenErrorEnabled(false);
        QVERIFY(cp.run());
        QVERIFY(QTest::qWaitFor([&] { return done.count() + failed.count() > 1; }, kLongTimeoutMs));
        QVERIFY(cp.results().rows[1].hidden.empty());
        QCOMPARE(plot->seriesCount(), 0);
    }

    void compareNamesEditorRecipesApart() {
        LCW_REQUIRE_SHARED("models/stories260K/hf");
        std::shared_ptr<const lcw::Model> model = lcw::Model::load(hfModel());
        const std::string textPath = shortText("runcmp-names");
        lcw::TaskRunner runner;
        lcw::ComparePanel cp(&runner);
        cp.setModel(model);
        cp.setTextFile(QString::fromStdString(textPath));
        cp.setContext(64);
        cp.setMaxChunks(2);
        cp.setGenerateTokens(0);
        cp.setSpeedTokens(0);
        lcw::compress::Recipe editor = rtnRecipe("rtn-a");
        cp.setEditorRecipeProvider([&editor] { return editor; });
        cp.setSelectedConfigs({lcw::ComparePanel::editorName()});
        QSignalSpy done(&cp, &lcw::ComparePanel::finished);
        auto runOnce = [&] {
            const int before = done.count();
            return cp.run() &&
                   QTest::qWaitFor([&] { return done.count() > before; }, kLongTimeoutMs);
        };
        QVERIFY(runOnce());
        const lcw::CompareResults first = cp.results();
        QCOMPARE(first.rows[1].name, QStringLiteral("editor recipe: rtn-a"));
        QCOMPARE(cp.metricsTable()->item(1, 0)->text(), QStringLiteral("editor recipe: rtn-a"));
        // An unnamed recipe: a fingerprint, different for different rules.
        editor = lcw::compress::findPreset("W3A16-g64").recipe;
        editor.name.clear();
        QVERIFY(runOnce());
        const QString unnamed = cp.results().rows[1].name;
        QVERIFY2(unnamed.startsWith(QStringLiteral("editor recipe #")), qPrintable(unnamed));
        editor.rules = rtnRecipe("").rules;
        QVERIFY(runOnce());
        const QString unnamed2 = cp.results().rows[1].name;
        QVERIFY2(unnamed2.startsWith(QStringLiteral("editor recipe #")), qPrintable(unnamed2));
        QVERIFY(unnamed != unnamed2);
        // The Results view labels them alike (no second suffix).
        for (const lcw::CompareResults& res : {first, cp.results()}) {
            const auto rec =
                lcw::ResultsPanel::compareRecord(res, QStringLiteral("m"), QStringLiteral("t"));
            QCOMPARE(QString::fromStdString(rec["configs"][0]["label"].get<std::string>()),
                     res.rows[1].name);
        }
        // The editor recipe as the baseline keeps its label there too.
        cp.setBaseline(lcw::ComparePanel::editorName());
        cp.setSelectedConfigs({lcw::ComparePanel::editorName(), QStringLiteral("W8A16")});
        QVERIFY(runOnce());
        QCOMPARE(cp.results().baseline, unnamed2);
        QCOMPARE(cp.results().rows[0].name, unnamed2);
    }
};

QTEST_MAIN(TestGuiRunCmp)
#include "test_gui_runcmp.moc"
