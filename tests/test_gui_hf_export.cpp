// The Export dialog's "Hugging Face (vLLM)" page (widgets/hf_export_panel.h): the recipe's
// configuration of the opened model is written as a compressed-tensors folder on the TaskRunner,
// the per-module report fills the table, a cancelled export leaves nothing, and bad input is
// refused before any work.
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "test_util.h"
#include "widgets/export_dialog.h"
#include "widgets/hf_export_panel.h"
#include "widgets/task_runner.h"

#include <nlohmann/json.hpp>

#include <QLabel>
#include <QPushButton>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTableWidget>
#include <QtTest/QtTest>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

lcw::HfExportPanel::Context contextFor(std::shared_ptr<const lcw::Model> model,
                                       lcw::TaskRunner* runner, const std::string& preset) {
    lcw::HfExportPanel::Context c;
    c.model = std::move(model);
    c.modelPath = QString::fromStdString(c.model->path());
    c.recipe = [preset] {
        return preset.empty() ? lcw::compress::Recipe{} : lcw::compress::findPreset(preset).recipe;
    };
    c.runner = runner;
    return c;
}

int rowOf(QTableWidget* t, const QString& module) {
    for (int r = 0; r < t->rowCount(); ++r)
        if (t->item(r, lcw::HfExportPanel::ModuleColumn)->text() == module) return r;
    return -1;
}

} // namespace

class TestGuiHfExport : public QObject {
    Q_OBJECT
    std::string m_dir;
    std::shared_ptr<const lcw::Model> m_model;

private slots:
    void initTestCase() {
        m_dir = lcwtest::tempDir("gui-hf-export");
        m_model = lcw::Model::load(lcwtest::demoModelPath());
    }
    void cleanupTestCase() { fs::remove_all(m_dir); }

    void exportsAndReports() {
        lcw::TaskRunner runner;
        lcw::HfExportPanel p(contextFor(m_model, &runner, "W4A16-g32"));
        QCOMPARE(p.format(), QStringLiteral("compressed-tensors"));
        const std::string out = m_dir + "/ct";
        p.setOutputFolder(QString::fromStdString(out));
        QSignalSpy done(&p, &lcw::HfExportPanel::finished);
        QSignalSpy failed(&p, &lcw::HfExportPanel::failed);
        QVERIFY(p.start());
        QVERIFY(p.isRunning());
        QVERIFY(!p.startButton()->isEnabled());
        QVERIFY(QTest::qWaitFor([&] { return done.count() + failed.count() > 0; }, 60000));
        QCOMPARE(done.count(), 1);
        QVERIFY(p.result());
        QVERIFY(fs::exists(out + "/config.json"));
        std::ifstream in(out + "/config.json");
        const auto cfg = nlohmann::json::parse(in);
        QCOMPARE(cfg["quantization_config"]["quant_method"].get<std::string>(),
                 std::string("compressed-tensors"));
        QTableWidget* t = p.reportTable();
        const int q = rowOf(t, QStringLiteral("model.layers.0.self_attn.q_proj"));
        QVERIFY(q >= 0);
        QCOMPARE(t->item(q, lcw::HfExportPanel::StatusColumn)->text(), QStringLiteral("written"));
        QCOMPARE(t->item(q, lcw::HfExportPanel::SchemeColumn)->text(),
                 QStringLiteral("int4 g32 asym"));
        const int d = rowOf(t, QStringLiteral("model.layers.0.mlp.down_proj"));
        QCOMPARE(t->item(d, lcw::HfExportPanel::StatusColumn)->text(), QStringLiteral("float"));
        QVERIFY(t->item(d, lcw::HfExportPanel::NoteColumn)->text().contains("does not divide"));
        QVERIFY(p.summaryLabel()->text().contains("30 modules"));
        QVERIFY(p.startButton()->isEnabled());
    }

    void cancelLeavesNothing() {
        lcw::TaskRunner runner;
        lcw::HfExportPanel p(contextFor(m_model, &runner, "W8A16"));
        const std::string parent = m_dir + "/cancel";
        fs::create_directories(parent);
        p.setOutputFolder(QString::fromStdString(parent + "/out"));
        QSignalSpy cancelled(&p, &lcw::HfExportPanel::cancelled);
        QSignalSpy done(&p, &lcw::HfExportPanel::finished);
        // A job ahead of it keeps the export waiting; the export is cancelled while queued.
        std::atomic<bool> release{false};
        runner.submit(QStringLiteral("blocker"), [&release](lcw::Progress& pr) -> std::any {
            while (!release.load() && pr.report(0.5, "waiting")) QThread::msleep(5);
            return {};
        });
        QVERIFY(p.start());
        p.cancel();
        release = true;
        QVERIFY(QTest::qWaitFor([&] { return cancelled.count() + done.count() > 0; }, 60000));
        QCOMPARE(cancelled.count(), 1);
        QVERIFY(fs::is_empty(parent));
        QVERIFY(p.summaryLabel()->text().contains("Cancelled"));
    }

    void refusesBadInput() {
        lcw::TaskRunner runner;
        lcw::HfExportPanel empty(contextFor(m_model, &runner, ""));
        empty.setOutputFolder(QString::fromStdString(m_dir + "/never"));
        QVERIFY(!empty.start());
        QVERIFY(empty.lastError().contains("recipe"));
        lcw::HfExportPanel noOut(contextFor(m_model, &runner, "W8A16"));
        QVERIFY(!noOut.start());
        QVERIFY(noOut.lastError().contains("folder"));
        QVERIFY(!fs::exists(m_dir + "/never"));
    }

    void dialogHasThePage() {
        lcw::TaskRunner runner;
        lcw::ExportDialog::Sources s;
        s.gguf = contextFor(m_model, &runner, "W8A16");
        lcw::ExportDialog d(s);
        QVERIFY(d.hfPanel());
        bool found = false;
        for (int i = 0; i < d.pages()->count(); ++i)
            found |= d.pages()->tabText(i) == QStringLiteral("Hugging Face (vLLM)");
        QVERIFY(found);
    }
};

QTEST_MAIN(TestGuiHfExport)
#include "test_gui_hf_export.moc"
