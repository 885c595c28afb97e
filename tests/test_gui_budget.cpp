// Tests of the recipe editor's live budget: exact for pruning, low-rank factors and structured
// removal (equal to compress()), one budget definition (whole-model bits per base weight, the
// quantised layers' figure beside it) and fit errors shown on the budget line and on the rule.
#include "core/common/mapped_file.h"
#include "core/common/progress.h"
#include "core/compress/compressed_model.h"
#include "core/eval/sensitivity.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"
#include "widgets/recipe_editor.h"
#include "widgets/sensitivity_panel.h"
#include "widgets/task_runner.h"

#include <QListWidget>
#include <QTableWidget>
#include <QUndoStack>
#include <QtTest/QtTest>

#include <memory>

namespace cz = lcw::compress;
using json = nlohmann::json;

namespace {

std::shared_ptr<const lcw::Model> demo() {
    return std::shared_ptr<const lcw::Model>(lcw::Model::load(lcwtest::demoModelPath()));
}

cz::Recipe recipeOf(const char* text) {
    return cz::Recipe::fromJson(json::parse(text));
}

int rowOf(const QTableWidget* t, const QString& name) {
    for (int r = 0; r < t->rowCount(); ++r)
        if (t->item(r, lcw::RecipeEditor::LayerColumn)->text() == name) return r;
    return -1;
}

} // namespace

class TestGuiBudget : public QObject {
    Q_OBJECT
private slots:
    void budgetOfSparseLowRankRecipeEqualsCompress() {
        // The live budget of a 2:4 + low-rank (+ structured) recipe equals compress() exactly;
        // on the old code it read "needs compress…".
        auto m = demo();
        lcw::RecipeEditor ed;
        ed.setModel(m);
        const cz::Recipe r = recipeOf(R"({"lcw_recipe": 1, "rules": [
            {"targets": ["layers.*.attn.*"], "sparsity": {"pattern": "2:4"},
             "weight": {"bits": 4, "symmetric": false, "granularity": "group", "group_size": 32}},
            {"targets": ["layers.*.mlp.*"], "lowrank": {"param_ratio": 0.5},
             "weight": {"bits": 4, "granularity": "group", "group_size": 64}},
            {"targets": ["layers.4.mlp.*"], "lowrank": null, "structured": {"mlp_ratio": 0.25}}]})");
        ed.setRecipe(r, QStringLiteral("2:4 + low-rank"));
        QVERIFY2(ed.planError().isEmpty(), qPrintable(ed.planError()));
        lcw::NullProgress np;
        const auto real = cz::compress(*m, r, np);
        QCOMPARE(real.status, lcw::Status::Ok);
        QVERIFY(ed.totalSize());
        QCOMPARE(ed.totalSize()->bits, real.model->totalSize().bits);
        QCOMPARE(ed.totalSize()->params, real.model->totalSize().params);
        int64_t baseParams = 0;
        for (const auto& t : m->tensors()) baseParams += t.numel();
        const double bpw = double(real.model->totalSize().bits) / double(baseParams);
        const double qbpw = real.model->compressedSize().bitsPerWeight();
        const QString text = ed.budgetText();
        QVERIFY2(!text.contains(QStringLiteral("needs compress")), qPrintable(text));
        QVERIFY2(text.startsWith(QString::number(bpw, 'f', 3) + QStringLiteral(" bits/weight")),
                 qPrintable(text));
        QVERIFY2(text.contains(QStringLiteral("quantised layers ") + QString::number(qbpw, 'f', 3)),
                 qPrintable(text));
        // Every planned layer's bits/weight in the table: stored bits / the base tensor's weights.
        for (const char* name : {"layers.0.attn.q", "layers.2.mlp.up", "layers.4.mlp.down"}) {
            const int row = rowOf(ed.layerTable(), QString::fromLatin1(name));
            QVERIFY(row >= 0);
            const double want =
                double(real.model->tensorSize(name).bits) / double(m->get(name).numel());
            QCOMPARE(ed.layerTable()->item(row, lcw::RecipeEditor::BitsColumn)->text(),
                     QString::number(want, 'f', 3));
        }
    }

    void fitErrorShownOnBudgetLineAndRule() {
        // Group 128 on 64-wide rows: the budget line says why, and the rule is marked.
        auto m = demo();
        lcw::RecipeEditor ed;
        ed.setModel(m);
        ed.setRecipe(recipeOf(R"({"lcw_recipe": 1, "rules": [
            {"targets": ["layers.*.mlp.down"], "weight": {"bits": 4}},
            {"targets": ["layers.*.attn.*"], "weight": {"bits": 4, "granularity": "group",
                                                         "group_size": 128}}]})"),
                     QStringLiteral("too wide"));
        QVERIFY(!ed.totalSize());
        QCOMPARE(ed.planErrorRule(), 1);
        const QString text = ed.budgetText();
        QVERIFY2(text.startsWith(QStringLiteral("does not fit: ")), qPrintable(text));
        QVERIFY2(text.contains(QStringLiteral("group size 128")), qPrintable(text));
        QListWidgetItem* bad = ed.ruleList()->item(1);
        QVERIFY(bad->text().startsWith(QStringLiteral("⚠")));
        QVERIFY2(bad->toolTip().contains(QStringLiteral("group size 128")),
                 qPrintable(bad->toolTip()));
        QVERIFY(!ed.ruleList()->item(0)->text().startsWith(QStringLiteral("⚠")));

        // A setting compress() rejects although planning accepts it (q8_0 on the 48-wide rows
        // that removing one of four KV groups leaves): the same, naming the layer.
        ed.setRecipe(recipeOf(R"({"lcw_recipe": 1, "rules": [
            {"targets": ["layers.*.mlp.*"], "weight": {"bits": 8}},
            {"targets": ["layers.0.attn.o"], "structured": {"head_ratio": 0.25},
             "weight": {"method": "q8_0"}}]})"),
                     QStringLiteral("narrowed"));
        QVERIFY(!ed.totalSize());
        QCOMPARE(ed.planErrorRule(), 1);
        QVERIFY2(ed.budgetText().contains(QStringLiteral("layers.0.attn.o")),
                 qPrintable(ed.budgetText()));
        QVERIFY(ed.ruleList()->item(1)->text().startsWith(QStringLiteral("⚠")));
        // Undo to a recipe that fits: the mark and the error go.
        ed.undoStack()->undo();
        ed.undoStack()->undo();
        QVERIFY(ed.totalSize());
        QCOMPARE(ed.planErrorRule(), -1);
        QVERIFY(!ed.budgetText().startsWith(QStringLiteral("does not fit")));
    }

    void autotuneLandsWithinTheEditorsTarget() {
        // The Autotune dialog's budget is the editor's (whole-model bits per base weight): right
        // after autotuning to the editor's target, the editor reports being within it, with the
        // same figure compress() gives. (Before, the dialog's budget counted the quantised layers
        // only, and the editor then read "over the target by 78.5%".)
        auto m = demo();
        const std::vector<int32_t> tokens =
            m->tokenizer().encode(lcw::readTextFile(lcwtest::demoTextPath()), true);
        lcw::SensitivityOptions so;
        so.eval.ctx = 64;
        so.eval.batch = 64;
        so.eval.maxChunks = 1;
        so.eval.bosId = m->tokenizer().bosId();
        std::vector<lcw::WeightScheme> schemes;
        for (const char* n : {"W8A16", "W4A16-g64", "W2A16-g32"})
            schemes.push_back(lcw::schemeFromPreset(n));
        lcw::NullProgress np;
        const lcw::SensitivityScan scan = lcw::scanSensitivity(*m, schemes, tokens, so, np);
        const std::string file = lcwtest::tempDir("gui-budget") + "/scan.json";
        lcw::writeFileAtomic(file, lcw::sensitivityToJson(scan).dump());

        lcw::RecipeEditor ed;
        ed.setModel(m);
        lcw::TaskRunner runner;
        lcw::SensitivityPanel sp(&runner);
        sp.setModel(m);
        sp.setBudgetProvider([&ed] { return ed.targetBitsPerWeight(); });
        QVERIFY2(sp.loadScan(QString::fromStdString(file)), qPrintable(sp.lastError()));
        connect(&sp, &lcw::SensitivityPanel::recipeProduced, &ed,
                [&ed](const cz::Recipe& r, const QString& what) { ed.setRecipe(r, what); });
        for (double target : {8.0, 9.5}) {
            ed.setTargetBitsPerWeight(target);
            QVERIFY2(sp.autotuneModel(ed.targetBitsPerWeight()), qPrintable(sp.lastError()));
            QVERIFY(ed.sizeEstimate());
            const double bpw = ed.sizeEstimate()->bitsPerWeight();
            QVERIFY2(bpw <= target && bpw > target - 0.2, qPrintable(ed.budgetText()));
            QVERIFY2(ed.budgetText().contains(QStringLiteral("within the target")),
                     qPrintable(ed.budgetText()));
            const auto real = cz::compress(*m, ed.recipe(), np);
            QCOMPARE(ed.totalSize()->bits, real.model->totalSize().bits);
            // the quantised layers get more than the whole-model figure (the f32 embedding
            // weighs on the latter), and the line shows that figure beside it
            const double q = real.model->compressedSize().bitsPerWeight();
            QVERIFY(q < bpw);
            QVERIFY2(ed.budgetText().contains(QString::number(q, 'f', 3)),
                     qPrintable(ed.budgetText()));
        }
        // A whole-model budget below what the untouched tensors take: refused with the reason.
        QVERIFY(!sp.autotuneModel(3.0));
        QVERIFY2(sp.lastError().contains(QStringLiteral("infeasible")), qPrintable(sp.lastError()));
    }

    void structuredOnlyTensorsShowTheirSize() {
        // Removing MLP channels of a block without other settings: up, gate and down keep their
        // values at the smaller shape; the table and the total show it.
        auto m = demo();
        lcw::RecipeEditor ed;
        ed.setModel(m);
        const cz::Recipe r = recipeOf(R"({"lcw_recipe": 1, "rules": [
            {"targets": ["layers.1.mlp.down"], "structured": {"mlp_ratio": 0.5}}]})");
        ed.setRecipe(r, QStringLiteral("structured"));
        lcw::NullProgress np;
        const auto real = cz::compress(*m, r, np);
        QCOMPARE(ed.totalSize()->bits, real.model->totalSize().bits);
        for (const char* name : {"layers.1.mlp.up", "layers.1.mlp.gate", "layers.1.mlp.down"}) {
            const int row = rowOf(ed.layerTable(), QString::fromLatin1(name));
            QCOMPARE(ed.layerTable()->item(row, lcw::RecipeEditor::SettingColumn)->text(),
                     QStringLiteral("structured only"));
            QCOMPARE(ed.layerTable()->item(row, lcw::RecipeEditor::BitsColumn)->text(),
                     QString::number(double(real.model->tensorSize(name).bits) /
                                         double(m->get(name).numel()),
                                     'f', 3));
        }
    }

    void energyTargetIsAnUpperBound() {
        auto m = demo();
        lcw::RecipeEditor ed;
        ed.setModel(m);
        ed.setRecipe(recipeOf(R"({"lcw_recipe": 1, "rules": [
            {"targets": ["layers.*.mlp.up"], "lowrank": {"energy": 0.7}}]})"),
                     QStringLiteral("energy"));
        QVERIFY(ed.sizeEstimate());
        QVERIFY(!ed.sizeEstimate()->exact());
        QVERIFY2(ed.budgetText().startsWith(QStringLiteral("≤ ")), qPrintable(ed.budgetText()));
        const int row = rowOf(ed.layerTable(), QStringLiteral("layers.0.mlp.up"));
        QVERIFY(ed.layerTable()
                    ->item(row, lcw::RecipeEditor::BitsColumn)
                    ->text()
                    .startsWith(QStringLiteral("≤ ")));
    }
};

QTEST_MAIN(TestGuiBudget)
#include "test_gui_budget.moc"
