// No lost or mixed-up work (issue #17, part 3): the unsaved-changes prompt on quit, close project
// and opening another model (Cancel keeps everything, Discard goes on, Save writes the project);
// the autosave offered after a session that did not end cleanly and not after a clean quit; a
// recipe carried to another model only when the user says so, with the rules that match nothing
// there listed and marked; measured errors marked stale in the Tensors table and its exports.
#include "gui_test_util.h"

#include "core/compress/recipe.h"
#include "core/project/project.h"
#include "plots/bar_plot.h"
#include "widgets/compare_panel.h"
#include "widgets/export_dialog.h"
#include "widgets/layer_table_model.h"
#include "widgets/log_panel.h"
#include "widgets/recipe_editor.h"
#include "widgets/sensitivity_panel.h"

#include <QFile>
#include <QLineEdit>
#include <QListWidget>
#include <QSortFilterProxyModel>
#include <QTableView>
#include <QUndoStack>

#include <nlohmann/json.hpp>

using lcw::MainWindow;

namespace {

constexpr int kTimeoutMs = 60000;

QString shared(const char* rel) {
    return QString::fromStdString(lcwtest::sharedPath(rel));
}
/// stories260K as an HF folder: 5 blocks.
QString fiveBlockModel() {
    return shared("models/stories260K/hf");
}
/// A random Llama with 2 blocks.
QString twoBlockModel() {
    return shared("models/tiny-random/llama2_sp_f32/model");
}

#define REQUIRE_SHARED()                                                                           \
    do {                                                                                           \
        if (!QFileInfo::exists(fiveBlockModel()) || !QFileInfo::exists(twoBlockModel()))           \
            QSKIP("needs ../shared/models (stories260K/hf, tiny-random/llama2_sp_f32)");           \
    } while (0)

/// Answers the window's prompts as a test says and records them.
struct Answers {
    MainWindow::Answer unsaved = MainWindow::Answer::Cancel;
    MainWindow::Answer keepRecipe = MainWindow::Answer::Yes;
    MainWindow::Answer recover = MainWindow::Answer::No;
    QList<std::pair<MainWindow::Prompt, QString>> asked;

    void install(MainWindow& w) {
        w.setPromptAnswerer([this](MainWindow::Prompt p, const QString& text) {
            asked.append({p, text});
            switch (p) {
            case MainWindow::Prompt::UnsavedChanges:
                return unsaved;
            case MainWindow::Prompt::KeepRecipe:
                return keepRecipe;
            case MainWindow::Prompt::RecoverAutosave:
                return recover;
            }
            return MainWindow::Answer::Cancel;
        });
    }
    int count(MainWindow::Prompt p) const {
        int n = 0;
        for (const auto& a : asked) n += a.first == p;
        return n;
    }
    QString lastText(MainWindow::Prompt p) const {
        for (auto it = asked.crbegin(); it != asked.crend(); ++it)
            if (it->first == p) return it->second;
        return {};
    }
};

lcw::compress::Recipe recipeFromJson(const char* text) {
    return lcw::compress::Recipe::fromJson(nlohmann::json::parse(text));
}

QString editorRecipeOf(const std::string& projectPath) {
    const lcw::project::Project p = lcw::project::load(projectPath);
    for (const auto& r : p.recipes)
        if (r.name == "editor") return QString::fromStdString(r.json);
    return {};
}

} // namespace

class TestGuiWork : public QObject {
    Q_OBJECT

private slots:
    void initTestCase() { lcwtest::initGuiTestCase("lcw-test-gui-work"); }

    void modifiedStateFollowsTheRecipe() {
        REQUIRE_SHARED();
        MainWindow w(MainWindow::Options{false, false});
        Answers answers;
        answers.install(w);
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        QVERIFY(!w.isProjectModified());
        QVERIFY(w.windowTitle().contains(QStringLiteral("[*]")));
        QVERIFY(!w.isWindowModified());
        QSignalSpy changed(&w, &MainWindow::projectModifiedChanged);
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W4A16-g64")));
        QVERIFY(w.isProjectModified());
        QVERIFY(w.isWindowModified());
        QCOMPARE(changed.count(), 1);
        // Undoing back to the saved state is unmodified again.
        w.recipeEditor()->undoStack()->undo();
        QVERIFY(!w.isProjectModified());
        QVERIFY(!w.isWindowModified());
        w.recipeEditor()->undoStack()->redo();
        QVERIFY(w.isProjectModified());
        // Nothing was asked so far.
        QVERIFY(answers.asked.isEmpty());
        // The budget target is saved with the project too.
        answers.unsaved = MainWindow::Answer::Discard;
        QVERIFY(w.closeProject());
        QVERIFY(!w.isProjectModified());
        w.recipeEditor()->setTargetBitsPerWeight(w.recipeEditor()->targetBitsPerWeight() + 0.5);
        QVERIFY(w.isProjectModified());
    }

    void quitWithUnsavedChangesAsks() {
        REQUIRE_SHARED();
        const QString path = QString::fromStdString(lcwtest::tempDir("gui-work-quit")) +
                             QStringLiteral("/p.lcwproj");
        MainWindow w(MainWindow::Options{false, false});
        Answers answers;
        answers.install(w);
        QSignalSpy prompted(&w, &MainWindow::promptShown);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W4A16-g64")));
        QSignalSpy saved(&w, &MainWindow::projectSaved);
        QVERIFY(w.saveProject(path));
        QTRY_COMPARE_WITH_TIMEOUT(saved.count(), 1, kTimeoutMs);
        QVERIFY(!w.isProjectModified());

        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W8A16")));
        QVERIFY(w.isProjectModified());

        // Cancel: the window stays, with its model and recipe.
        answers.unsaved = MainWindow::Answer::Cancel;
        QVERIFY(!w.close());
        QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 1);
        QCOMPARE(prompted.count(), 1);
        QCOMPARE(prompted.front().at(0).value<MainWindow::Prompt>(),
                 MainWindow::Prompt::UnsavedChanges);
        QVERIFY(w.isVisible());
        QVERIFY(w.model());
        QVERIFY(w.isProjectModified());
        QCOMPARE(w.recipeEditor()->recipe().name, std::string("W8A16"));

        // Save: the project file gets the current recipe, then the window closes.
        answers.unsaved = MainWindow::Answer::Save;
        QVERIFY(w.close());
        QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 2);
        QVERIFY(!w.isVisible());
        QVERIFY(!w.isProjectModified());
        const QString onDisk = editorRecipeOf(path.toStdString());
        QCOMPARE(recipeFromJson(onDisk.toUtf8().constData()).name, std::string("W8A16"));
    }

    void openModelAndCloseProjectAsk() {
        REQUIRE_SHARED();
        MainWindow w(MainWindow::Options{false, false});
        Answers answers;
        answers.install(w);
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W4A16-g64")));

        // Opening another model: Cancel keeps the model (no load starts).
        answers.unsaved = MainWindow::Answer::Cancel;
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(twoBlockModel());
        QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 1);
        QVERIFY(answers.lastText(MainWindow::Prompt::UnsavedChanges)
                    .contains(QStringLiteral("llama2_sp_f32")));
        QVERIFY(!w.isLoading());
        QTest::qWait(50);
        QCOMPARE(loaded.count(), 0);
        QCOMPARE(QFileInfo(w.modelPath()), QFileInfo(fiveBlockModel()));
        QVERIFY(w.isProjectModified());

        // File ▸ Close Project: Cancel keeps the recipe, Discard forgets it (model stays).
        QVERIFY(!w.closeProject());
        QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 2);
        QVERIFY(!w.recipeEditor()->recipe().rules.empty());
        answers.unsaved = MainWindow::Answer::Discard;
        QVERIFY(w.closeProject());
        QVERIFY(w.recipeEditor()->recipe().rules.empty());
        QVERIFY(!w.isProjectModified());
        QVERIFY(w.model());
        // Nothing unsaved: closing the project again asks nothing.
        QVERIFY(w.closeProject());
        QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 3);

        // Discard when opening another model: it loads.
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W8A16")));
        answers.keepRecipe = MainWindow::Answer::No;
        QVERIFY(lcwtest::loadAndWait(w, twoBlockModel()));
        QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 4);
        QCOMPARE(QFileInfo(w.modelPath()), QFileInfo(twoBlockModel()));
        QVERIFY(!w.isProjectModified());
    }

    void recoveryOfferedAfterUncleanEndOnly() {
        REQUIRE_SHARED();
        QFile::remove(MainWindow::autosavePath());
        {
            // A session that ends without closing its window (a crash): its autosave stays.
            MainWindow w(MainWindow::Options{true, false});
            Answers answers;
            answers.install(w);
            QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
            QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W4A16-g64")));
            QVERIFY(w.autosave());
            w.waitForSaves();
            QCOMPARE(answers.count(MainWindow::Prompt::RecoverAutosave), 0);
        }
        QVERIFY(QFileInfo::exists(MainWindow::autosavePath()));
        {
            // The next start offers it; Yes recovers the work (unsaved: no project file yet).
            MainWindow w(MainWindow::Options{true, false});
            Answers answers;
            answers.recover = MainWindow::Answer::Yes;
            answers.install(w);
            QSignalSpy opened(&w, &MainWindow::projectOpened);
            QTRY_COMPARE_WITH_TIMEOUT(answers.count(MainWindow::Prompt::RecoverAutosave), 1,
                                      kTimeoutMs);
            QTRY_COMPARE_WITH_TIMEOUT(opened.count(), 1, kTimeoutMs);
            QCOMPARE(w.recipeEditor()->recipe().name, std::string("W4A16-g64"));
            QVERIFY(w.projectPath().isEmpty());
            QVERIFY(w.isProjectModified());
            // A clean quit (discarding the recovered work) leaves nothing to recover.
            answers.unsaved = MainWindow::Answer::Discard;
            w.show();
            QVERIFY(w.close());
            QCOMPARE(answers.count(MainWindow::Prompt::UnsavedChanges), 1);
        }
        QVERIFY(!QFileInfo::exists(MainWindow::autosavePath()));
        {
            MainWindow w(MainWindow::Options{true, false});
            Answers answers;
            answers.recover = MainWindow::Answer::Yes;
            answers.install(w);
            QTest::qWait(200);
            QCOMPARE(answers.count(MainWindow::Prompt::RecoverAutosave), 0);
            QVERIFY(!w.model());
            QVERIFY(!w.isLoading());
        }
        // Declining the offer deletes the autosave.
        {
            MainWindow w(MainWindow::Options{true, false});
            QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
            QVERIFY(w.autosave());
            w.waitForSaves();
        }
        {
            MainWindow w(MainWindow::Options{true, false});
            Answers answers;
            answers.recover = MainWindow::Answer::No;
            answers.install(w);
            QTRY_COMPARE_WITH_TIMEOUT(answers.count(MainWindow::Prompt::RecoverAutosave), 1,
                                      kTimeoutMs);
            QVERIFY(!QFileInfo::exists(MainWindow::autosavePath()));
            QVERIFY(!w.isLoading());
        }
    }

    void recipeCarriedToAnotherModelAsks() {
        REQUIRE_SHARED();
        MainWindow w(MainWindow::Options{false, false});
        Answers answers;
        answers.unsaved = MainWindow::Answer::Discard;
        answers.install(w);
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        lcw::RecipeEditor* ed = w.recipeEditor();
        // Exact names of the 5-block model (two of them exist in a 2-block model) and a glob.
        const lcw::compress::Recipe recipe = recipeFromJson(R"({"lcw_recipe": 1, "name": "mine",
            "rules": [
              {"targets": ["layers.0.attn.q", "layers.3.mlp.down", "layers.4.mlp.down"],
               "weight": {"bits": 4, "granularity": "channel"}},
              {"targets": ["layers.*.mlp.up"], "weight": {"bits": 8, "granularity": "channel"}},
              {"targets": ["layers.4.attn.o"], "weight": {"bits": 6, "granularity": "channel"}}
            ]})");
        ed->setRecipe(recipe, QStringLiteral("test recipe"));
        QVERIFY(ed->unmatchedTargets().isEmpty()); // all match the 5-block model

        // Measured errors, a sensitivity scan and comparison results belong to this model.
        QSignalSpy measured(&w, &MainWindow::errorsMeasured);
        QVERIFY(w.measureLayerErrors());
        QTRY_COMPARE_WITH_TIMEOUT(measured.count(), 1, kTimeoutMs);
        QVERIFY(w.layerTableModel()->hasMeasuredErrors());
        lcw::SensitivityPanel* sens = w.sensitivityPanel();
        sens->setTextFile(QString::fromStdString(lcwtest::demoTextPath()));
        sens->setSchemes({QStringLiteral("W8A16")});
        sens->setContext(32);
        sens->setMaxChunks(1);
        QSignalSpy scanned(sens, &lcw::SensitivityPanel::finished);
        QVERIFY(sens->run());
        QTRY_COMPARE_WITH_TIMEOUT(scanned.count(), 1, kTimeoutMs);
        QVERIFY(sens->scan());
        QVERIFY(sens->barPlot()->barCount() > 0);
        lcw::CompareResults res;
        res.baseline = QStringLiteral("original");
        lcw::CompareRow row;
        row.name = QStringLiteral("original");
        row.ppl = 10.5;
        res.rows = {row};
        w.comparePanel()->setResults(res);
        QVERIFY(!w.comparePanel()->results().empty());
        // A filter for tensors only this model has.
        w.setLayerFilter(QStringLiteral("layers.4.*"));
        QVERIFY(w.layerProxy()->rowCount() > 0);

        // Keep: the recipe stays; the targets that match nothing are listed and marked.
        answers.keepRecipe = MainWindow::Answer::Yes;
        QVERIFY(lcwtest::loadAndWait(w, twoBlockModel()));
        QCOMPARE(answers.count(MainWindow::Prompt::KeepRecipe), 1);
        const QString question = answers.lastText(MainWindow::Prompt::KeepRecipe);
        QVERIFY2(question.contains(QStringLiteral("mine")), qPrintable(question));
        QVERIFY2(question.contains(QStringLiteral("layers.4.attn.o")), qPrintable(question));
        QCOMPARE(ed->recipe().toJson().dump(), recipe.toJson().dump());
        const QMap<int, QStringList> unmatched = ed->unmatchedTargets();
        QCOMPARE(unmatched.size(), 2);
        QCOMPARE(unmatched.value(0), QStringList({QStringLiteral("layers.3.mlp.down"),
                                                  QStringLiteral("layers.4.mlp.down")}));
        QCOMPARE(unmatched.value(2), QStringList({QStringLiteral("layers.4.attn.o")}));
        QListWidget* rules = ed->ruleList();
        QCOMPARE(rules->count(), 3);
        QVERIFY2(rules->item(0)->toolTip().contains(QStringLiteral("matches no tensor of")),
                 qPrintable(rules->item(0)->toolTip()));
        QVERIFY(rules->item(0)->toolTip().contains(QStringLiteral("layers.4.mlp.down")));
        QVERIFY(rules->item(2)->toolTip().contains(QStringLiteral("matches no tensor of")));
        QVERIFY(rules->item(0)->foreground().color() != rules->item(1)->foreground().color());
        QVERIFY(!rules->item(1)->toolTip().contains(QStringLiteral("matches no tensor")));
        // ... and in the log.
        const QStringList log = w.logPanel()->lines();
        QVERIFY(std::any_of(log.begin(), log.end(), [](const QString& l) {
            return l.contains(QStringLiteral("match no tensor")) &&
                   l.contains(QStringLiteral("layers.4.attn.o"));
        }));
        // Nothing measured for the previous model shows for this one.
        QVERIFY(!w.layerTableModel()->hasMeasuredErrors());
        QVERIFY(!sens->scan());
        QCOMPARE(sens->barPlot()->barCount(), 0);
        QVERIFY(w.comparePanel()->results().empty());
        // The filter that would hide every tensor of this model is cleared.
        QVERIFY(w.filterEdit()->text().isEmpty());
        QCOMPARE(w.layerProxy()->rowCount(), w.layerTableModel()->rowCount());
        // A kept recipe is unsaved work for this model.
        QVERIFY(w.isProjectModified());

        // Clear: the next model starts with an empty recipe.
        answers.keepRecipe = MainWindow::Answer::No;
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        QCOMPARE(answers.count(MainWindow::Prompt::KeepRecipe), 2);
        QVERIFY(ed->recipe().rules.empty());
        QVERIFY(ed->unmatchedTargets().isEmpty());
        QVERIFY(!w.isProjectModified());

        // An empty recipe: nothing to ask.
        QVERIFY(lcwtest::loadAndWait(w, twoBlockModel()));
        QCOMPARE(answers.count(MainWindow::Prompt::KeepRecipe), 2);
    }

    // The reported case: exact layer names of a 5-block model opened on a 22-block model match
    // its blocks 0-4. Every target matches, so the question says how many blocks they reach.
    void exactNamesOfASmallerModelAsk() {
        REQUIRE_SHARED();
        const std::string big = lcwtest::writeNarrowTinyLlama("gui-work-22", 704);
        QVERIFY(!big.empty());
        MainWindow w(MainWindow::Options{false, false});
        Answers answers;
        answers.unsaved = MainWindow::Answer::Discard;
        answers.install(w);
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        std::vector<std::string> names;
        for (int b = 0; b < 5; ++b) names.push_back("layers." + std::to_string(b) + ".mlp.down");
        nlohmann::json j = {
            {"lcw_recipe", 1},
            {"name", "five"},
            {"rules",
             {{{"targets", names}, {"weight", {{"bits", 4}, {"granularity", "channel"}}}}}}};
        w.recipeEditor()->setRecipe(lcw::compress::Recipe::fromJson(j), QStringLiteral("five"));
        QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(big)));
        QCOMPARE(answers.count(MainWindow::Prompt::KeepRecipe), 1);
        const QString question = answers.lastText(MainWindow::Prompt::KeepRecipe);
        QVERIFY2(question.contains(QStringLiteral("5 of the 22 blocks")), qPrintable(question));
        QVERIFY(w.recipeEditor()->unmatchedTargets().isEmpty());
        const QStringList log = w.logPanel()->lines();
        QVERIFY(std::any_of(log.begin(), log.end(), [](const QString& l) {
            return l.contains(QStringLiteral("Kept the recipe five")) &&
                   l.contains(QStringLiteral("5 of the 22 blocks"));
        }));
    }

    void staleErrorsMarkedInGuiAndExport() {
        REQUIRE_SHARED();
        MainWindow w(MainWindow::Options{false, false});
        Answers answers;
        answers.install(w);
        QVERIFY(lcwtest::loadAndWait(w, fiveBlockModel()));
        lcw::LayerTableModel* tm = w.layerTableModel();
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W4A16-g64")));
        QSignalSpy measured(&w, &MainWindow::errorsMeasured);
        QVERIFY(w.measureLayerErrors());
        QTRY_COMPARE_WITH_TIMEOUT(measured.count(), 1, kTimeoutMs);
        QVERIFY(!tm->errorsStale());
        const QString dir = QString::fromStdString(lcwtest::tempDir("gui-work-export"));
        auto exportTable = [&](const QString& base) -> QStringList {
            lcw::ExportDialog dlg(w.exportSources());
            dlg.setFolder(dir);
            dlg.setBaseName(base);
            QString err;
            const QStringList files = dlg.exportFiles(&err);
            if (!err.isEmpty()) return {};
            QFile f(dir + QLatin1Char('/') + base + QStringLiteral(".tensors.tsv"));
            if (!f.open(QIODevice::ReadOnly)) return {};
            return QString::fromUtf8(f.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
        };
        const QStringList current = exportTable(QStringLiteral("current"));
        QVERIFY(!current.isEmpty());
        QVERIFY(current.front().endsWith(QStringLiteral("\tError")));
        const QString headerNow =
            tm->headerData(lcw::LayerTableModel::Error, Qt::Horizontal).toString();
        QVERIFY(!headerNow.contains(QStringLiteral("stale")));

        // Another recipe: the column header says stale, and so does every export of the table.
        QVERIFY(w.recipeEditor()->applyPreset(QStringLiteral("W8A16")));
        QVERIFY(tm->errorsStale());
        QVERIFY(tm->headerData(lcw::LayerTableModel::Error, Qt::Horizontal)
                    .toString()
                    .contains(QStringLiteral("stale")));
        const QStringList stale = exportTable(QStringLiteral("stale"));
        QVERIFY(!stale.isEmpty());
        const QString lastHeader = stale.front().split(QLatin1Char('\t')).back();
        QVERIFY2(lastHeader.contains(QStringLiteral("stale")), qPrintable(lastHeader));
        QVERIFY2(lastHeader.contains(QStringLiteral("W4A16-g64")), qPrintable(lastHeader));
        QCOMPARE(stale.size(), current.size());
        // The copied rows say it too.
        w.layerView()->selectAll();
        QVERIFY(w.copySelectedRows()
                    .section(QLatin1Char('\n'), 0, 0)
                    .contains(QStringLiteral("stale")));

        // Back to the measured recipe: current again.
        w.recipeEditor()->undoStack()->undo();
        QVERIFY(!tm->errorsStale());
        const QStringList again = exportTable(QStringLiteral("again"));
        QVERIFY(!again.isEmpty());
        QCOMPARE(again.front(), current.front());
    }
};

QTEST_MAIN(TestGuiWork)
#include "test_gui_work.moc"
