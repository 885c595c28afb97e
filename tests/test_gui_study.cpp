// The Study panel (widgets/study_panel.h): opens the folder `lcw-cli study` writes, renders the
// report with its SVG plots, refuses a folder whose study.json is not a study, and sits in the
// main window's docks and File menu.
#include "gui_test_util.h"
#include "test_util.h"

#include "core/common/mapped_file.h"
#include "core/eval/study.h"
#include "core/eval/study_report.h"
#include "widgets/main_window.h"
#include "widgets/study_panel.h"

#include <QDockWidget>
#include <QImage>
#include <QMenuBar>
#include <QSignalSpy>
#include <QTextBrowser>
#include <QtTest/QtTest>

#include <cmath>

using namespace lcw;

namespace {

study::StudyResult smallStudy() {
    study::StudyResult r;
    r.model = "stories260K";
    r.baselinePpl = 7.0;
    r.ctx = 128;
    auto row = [&](study::Group g, const char* s, const char* m, int bits, double ppl) {
        study::Row x;
        x.group = g;
        x.setting = s;
        x.method = m;
        x.bits = bits;
        x.ppl = ppl;
        x.lnPplRatio = std::log(ppl / r.baselinePpl);
        x.kld = 0.01 * (ppl - 6.9);
        r.rows.push_back(x);
    };
    row(study::Group::Weight, "W8", "RTN", 8, 7.01);
    row(study::Group::Weight, "W4", "RTN", 4, 7.6);
    row(study::Group::KvCache, "KV8", "RTN", 8, 7.0);
    row(study::Group::KvCache, "KV4", "RTN", 4, 7.2);
    r.conclusions = study::conclusions(r);
    return r;
}

} // namespace

class TestGuiStudy : public QObject {
    Q_OBJECT
private slots:
    void opensAndRendersTheReport();
    void refusesAFolderThatIsNoStudy();
    void mainWindowHasTheStudyDock();
};

void TestGuiStudy::opensAndRendersTheReport() {
    const std::string dir = lcwtest::tempDir("gui-study") + "/report";
    const study::ReportFiles f = study::writeReport(smallStudy(), dir);
    StudyPanel p;
    QSignalSpy opened(&p, &StudyPanel::opened);
    QVERIFY(p.openStudy(QString::fromStdString(f.html))); // the page itself, or its folder
    QCOMPARE(opened.count(), 1);
    QVERIFY(p.study().has_value());
    QCOMPARE(p.study()->rows.size(), size_t(4));
    QCOMPARE(QDir(p.folder()), QDir(QString::fromStdString(dir)));
    const QString text = p.browser()->toPlainText();
    QVERIFY(text.contains("Conclusions for this model"));
    QVERIFY(text.contains("KV-cache quantisation"));
    // Every plot the page shows is an image Qt can render (the SVG image plugin).
    QCOMPARE(f.plots.size(), size_t(4));
    for (const std::string& name : f.plots) {
        const QVariant data = p.browser()->loadResource(QTextDocument::ImageResource,
                                                        QUrl(QString::fromStdString(name)));
        QImage img;
        QVERIFY2(img.loadFromData(data.toByteArray(), "SVG"), name.c_str());
        QVERIFY(img.width() > 100 && img.height() > 100);
    }
    QVERIFY(p.openStudy(QString::fromStdString(dir)));
}

void TestGuiStudy::refusesAFolderThatIsNoStudy() {
    const std::string dir = lcwtest::tempDir("gui-study-bad");
    writeFileAtomic(dir + "/study.json", std::string("{\"lcw_recipe\": 1}"));
    writeFileAtomic(dir + "/report.html", std::string("<html></html>"));
    StudyPanel p;
    QSignalSpy failed(&p, &StudyPanel::failed);
    QVERIFY(!p.openStudy(QString::fromStdString(dir)));
    QCOMPARE(failed.count(), 1);
    QVERIFY(failed.at(0).at(0).toString().contains("study.json"));
    QVERIFY(!p.study().has_value());
    // No study.json at all.
    const std::string empty = lcwtest::tempDir("gui-study-empty");
    QVERIFY(!p.openStudy(QString::fromStdString(empty)));
    QCOMPARE(failed.count(), 2);
}

void TestGuiStudy::mainWindowHasTheStudyDock() {
    MainWindow w(MainWindow::Options{false, false});
    QVERIFY(w.studyPanel());
    QDockWidget* d = w.dock(MainWindow::Panel::Study);
    QVERIFY(d);
    QCOMPARE(d->objectName(), QStringLiteral("dock.study"));
    bool menu = false;
    for (QAction* a : w.menuBar()->actions())
        if (a->menu())
            for (QAction* b : a->menu()->actions())
                menu = menu || b->text().contains("Study Report");
    QVERIFY(menu);
}

QTEST_MAIN(TestGuiStudy)
#include "test_gui_study.moc"
