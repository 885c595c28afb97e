// Opening what users have and showing what they need: the metadata dialog (GGUF keys, decoded
// file type, tokenizer; HF config.json), raw tensor values (pages equal the dequantised values,
// navigation, TSV copy, CSV of a page and of the whole tensor through the TaskRunner), plots'
// data as CSV, Help ▸ Keyboard Shortcuts gathered from the actions, and the snapshot picker for
// Hugging Face cache folders.
#include "core/io/quants.h"
#include "core/model/model.h"
#include "gui_test_util.h"
#include "plots/bar_plot.h"
#include "plots/heat_map_plot.h"
#include "plots/histogram_plot.h"
#include "plots/line_plot.h"
#include "plots/plot_tools.h"
#include "widgets/metadata_dialog.h"
#include "widgets/shortcuts_dialog.h"
#include "widgets/task_runner.h"
#include "widgets/tensor_values_dialog.h"

#include <QAction>
#include <QClipboard>
#include <QGuiApplication>
#include <QLabel>
#include <QMenu>
#include <QTableView>
#include <qcustomplot.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

const char* kQ4km = "models/gguf-k/model-Q4_K_M.gguf";
const char* kStoriesQ = "models/stories260K/gguf/stories260K-q4_k_m.gguf";
const char* kHf = "models/stories260K/hf";

QStringList csvLines(const QString& text) {
    QStringList l = text.split(QLatin1Char('\n'));
    if (!l.isEmpty() && l.back().isEmpty()) l.removeLast();
    return l;
}

QStringList fileLines(const QString& path) {
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) return {};
    return csvLines(QString::fromUtf8(f.readAll()));
}

std::vector<float> dequantRow(const lcw::TensorView& t, int64_t r) {
    std::vector<float> v(size_t(t.cols()));
    lcw::dequantizeRow(t.dtype, t.row(r), v.data(), t.cols());
    return v;
}

/// The first tensor of `dtype` with at least `minRows` rows, or nullptr.
const lcw::TensorView* firstOfType(const lcw::Model& m, lcw::DType dtype, int64_t minRows = 1) {
    for (const auto& t : m.tensors())
        if (t.dtype == dtype && t.rows() >= minRows) return &t;
    return nullptr;
}

} // namespace

class TestGuiInspect : public QObject {
    Q_OBJECT

private slots:
    void initTestCase() { lcwtest::initGuiTestCase("lcw-test-gui-inspect"); }

    void metadataDialogShowsGgufKeysFileTypeTokenizer() {
        LCW_REQUIRE_SHARED(kQ4km);
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(lcwtest::sharedPath(kQ4km))));
        w.showModelMetadata(); // reads in the background, then opens the dialog
        QVERIFY(QTest::qWaitFor([&] { return w.findChild<lcw::MetadataDialog*>() != nullptr; }));
        auto* d = w.findChild<lcw::MetadataDialog*>();
        QVERIFY(d->isVisible());
        QCOMPARE(d->valueOf("general.architecture"), QStringLiteral("llama"));
        QCOMPARE(d->typeOf("general.architecture"), QStringLiteral("string"));
        QCOMPARE(d->summaryValue("File type"), QStringLiteral("MOSTLY_Q4_K_M (15)"));
        QCOMPARE(d->summaryValue("Vocabulary size"), QStringLiteral("512"));
        QVERIFY(d->summaryValue("Special tokens").contains("BOS"));
        // Token texts are shown as text, not as markup ("<s>" is no strike-through tag).
        auto* special = d->findChild<QLabel*>("summary:Special tokens");
        QVERIFY(special);
        QCOMPARE(special->textFormat(), Qt::PlainText);
        QVERIFY2(special->text().contains("\"<s>\""), qPrintable(special->text()));
        QCOMPARE(d->typeOf("tokenizer.ggml.tokens"), QStringLiteral("array[string]"));
        QVERIFY(d->valueOf("tokenizer.ggml.tokens").startsWith("512 × string: "));
        // The detail pane lists the first 256 elements and says how many more there are.
        QVERIFY(d->selectKey("tokenizer.ggml.tokens"));
        QVERIFY(d->detailText().contains("[0] "));
        QVERIFY(d->detailText().contains("[255] "));
        QVERIFY(!d->detailText().contains("[256] "));
        QVERIFY(d->detailText().contains("… 256 more"));
        // Filter: only keys (or values) containing the text stay.
        const int all = d->keyCount();
        QVERIFY(all > 10);
        d->setFilter("tokenizer.ggml");
        QVERIFY(d->visibleKeyCount() > 2);
        QVERIFY(d->visibleKeyCount() < all);
        d->setFilter(QString());
        QCOMPARE(d->visibleKeyCount(), all);
        d->close();
    }

    void metadataDialogShowsHfConfig() {
        LCW_REQUIRE_SHARED(kHf);
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(lcwtest::sharedPath(kHf))));
        w.showModelMetadata(); // reads in the background, then opens the dialog
        QVERIFY(QTest::qWaitFor([&] { return w.findChild<lcw::MetadataDialog*>() != nullptr; }));
        auto* d = w.findChild<lcw::MetadataDialog*>();
        QCOMPARE(d->valueOf("config.model_type"), QStringLiteral("llama"));
        QVERIFY(d->documentTitles().contains("config.json"));
        QVERIFY(d->documentText("config.json").contains("\"hidden_size\": 64"));
    }

    void tensorValuesPagesEqualDequantisedValues_data() {
        QTest::addColumn<QString>("file");
        QTest::addColumn<int>("dtype");
        QTest::newRow("Q4_K") << QString(kQ4km) << int(lcw::DType::Q4_K);
        QTest::newRow("Q8_0") << QString(kStoriesQ) << int(lcw::DType::Q8_0);
    }
    void tensorValuesPagesEqualDequantisedValues() {
        QFETCH(QString, file);
        QFETCH(int, dtype);
        LCW_REQUIRE_SHARED(file.toStdString());
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(lcwtest::loadAndWait(
            w, QString::fromStdString(lcwtest::sharedPath(file.toStdString()))));
        const lcw::TensorView* t = firstOfType(*w.model(), lcw::DType(dtype), 2);
        QVERIFY2(t, "the file has a tensor of that type");
        const QString name = QString::fromStdString(t->name);
        // From the table: select the row, then its context menu's "Show Values…".
        QVERIFY(w.selectTensor(name));
        QAction* show = nullptr;
        for (QAction* a : w.layerView()->actions())
            if (a->text() == QStringLiteral("Show Values…")) show = a;
        QVERIFY(show);
        show->trigger();
        auto* d = w.findChild<lcw::TensorValuesDialog*>();
        QVERIFY(d);
        QCOMPARE(d->tensorName(), name);
        QCOMPARE(d->tensorRows(), qint64(t->rows()));
        QCOMPARE(d->tensorCols(), qint64(t->cols()));
        QCOMPARE(d->pageRows(), 256);
        const int pageRows = int(std::min<int64_t>(256, t->rows()));
        QCOMPARE(d->table()->model()->rowCount(), pageRows);
        QCOMPARE(d->table()->model()->columnCount(), int(t->cols()));
        for (int r : {0, pageRows / 2, pageRows - 1}) {
            const std::vector<float> ref = dequantRow(*t, r);
            for (int c = 0; c < int(t->cols()); ++c) QCOMPARE(d->valueAt(r, c), ref[size_t(c)]);
        }
        // Smaller pages: the second page starts at row 16, the last row is reachable.
        d->setPageRows(16);
        d->setPage(1);
        QCOMPARE(d->firstRow(), qint64(16));
        QCOMPARE(d->valueAt(0, 3), dequantRow(*t, 16)[3]);
        d->goToRow(t->rows() - 1);
        QCOMPARE(d->page(), d->pageCount() - 1);
        const int lastInPage = int(t->rows() - 1 - d->firstRow());
        QCOMPARE(d->valueAt(lastInPage, 0), dequantRow(*t, t->rows() - 1)[0]);
        QVERIFY(std::isnan(d->valueAt(lastInPage + 1, 0)));

        // Copy: a 2 × 3 block as TSV.
        d->setPage(0);
        auto* sel = d->table()->selectionModel();
        sel->clearSelection();
        const QAbstractItemModel* m = d->table()->model();
        sel->select(QItemSelection(m->index(1, 2), m->index(2, 4)), QItemSelectionModel::Select);
        d->copySelection();
        const QStringList lines = csvLines(QGuiApplication::clipboard()->text());
        QCOMPARE(lines.size(), 2);
        const QStringList cells = lines[1].split(QLatin1Char('\t'));
        QCOMPARE(cells.size(), 3);
        QCOMPARE(cells[2].toFloat(), dequantRow(*t, 2)[4]);

        // Page as CSV: header + the page's rows, starting at its first row.
        const QString dir = QString::fromStdString(lcwtest::tempDir("gui-inspect-csv"));
        d->setPage(1);
        QString err;
        QVERIFY2(d->savePageCsv(dir + "/page.csv", &err), qPrintable(err));
        const QStringList page = fileLines(dir + "/page.csv");
        QCOMPARE(page.size(), 1 + std::min<int>(16, int(t->rows() - 16)));
        QVERIFY(page[1].startsWith("16,"));
        QCOMPARE(page[1].split(QLatin1Char(',')).size(), int(t->cols()) + 1);

        // Whole tensor through the TaskRunner (threshold lowered so this small tensor counts as
        // large).
        d->setBackgroundThreshold(0);
        QSignalSpy saved(d, &lcw::TensorValuesDialog::csvSaved);
        QSignalSpy started(w.taskRunner(), &lcw::TaskRunner::jobStarted);
        d->saveTensorCsv(dir + "/all.csv");
        QVERIFY(QTest::qWaitFor([&] { return saved.count() == 1; }, 30000));
        QCOMPARE(started.count(), 1);
        const QStringList all = fileLines(dir + "/all.csv");
        QCOMPARE(qint64(all.size()), t->rows() + 1);
        QCOMPARE(all.back().split(QLatin1Char(','))[1].toFloat(), dequantRow(*t, t->rows() - 1)[0]);
    }

    void doubleClickOpensValues() {
        LCW_REQUIRE_SHARED(kStoriesQ);
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QVERIFY(lcwtest::loadAndWait(w, QString::fromStdString(lcwtest::sharedPath(kStoriesQ))));
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(w.selectTensor("layers.1.mlp.up"));
        QTableView* v = w.layerView();
        const QModelIndex idx = v->selectionModel()->currentIndex();
        w.showPanel(lcw::MainWindow::Panel::Layers);
        QVERIFY(QTest::qWaitFor([&] { return v->isVisible() && v->viewport()->height() > 0; }));
        v->scrollTo(idx);
        const QRect rect = v->visualRect(idx);
        QVERIFY2(v->viewport()->rect().contains(rect.center()),
                 qPrintable(QStringLiteral("%1,%2").arg(rect.x()).arg(rect.y())));
        // Press, release, then the double-click event (what a real double-click delivers; the
        // view only reports a double-click on the index the press was on).
        QTest::mousePress(v->viewport(), Qt::LeftButton, {}, rect.center());
        QTest::mouseRelease(v->viewport(), Qt::LeftButton, {}, rect.center());
        QTest::mouseDClick(v->viewport(), Qt::LeftButton, {}, rect.center());
        auto* d = w.findChild<lcw::TensorValuesDialog*>();
        QVERIFY(d);
        QCOMPARE(d->tensorName(), QStringLiteral("layers.1.mlp.up"));
    }

    void plotsExportTheirDataAsCsv() {
        // Histogram: one row per bin (bin centre, count).
        lcw::HistogramPlot h;
        h.setHistogram(0.0, 1.0, {1, 0, 3, 4});
        QStringList l = csvLines(lcw::plotDataCsv(h.plot()));
        QCOMPARE(l.size(), 5);
        QCOMPARE(l[0], QStringLiteral("series,x,y"));
        QCOMPARE(l[1], QStringLiteral("count,0.125,1"));
        QCOMPARE(l[2], QStringLiteral("count,0.375,0"));
        QCOMPARE(l[4], QStringLiteral("count,0.875,4"));
        // Many bins on a log axis are drawn as clamped impulses; the CSV keeps the true counts.
        QVector<double> counts(200);
        for (int i = 0; i < 200; ++i) counts[i] = i % 3 == 0 ? 0 : i;
        h.setHistogram(-1.0, 1.0, counts);
        h.setLogCount(true);
        l = csvLines(lcw::plotDataCsv(h.plot()));
        QCOMPARE(l.size(), 201);
        QCOMPARE(l[1].split(',')[2], QStringLiteral("0"));
        QCOMPARE(l[3].split(',')[2], QStringLiteral("2"));

        // Bar plot: the category labels come along.
        lcw::BarPlot b;
        b.setBars({"layers.0", "layers.1", "layers.2"}, {0.5, 1.5, 2.5});
        l = csvLines(lcw::plotDataCsv(b.plot()));
        QCOMPARE(l.size(), 4);
        QCOMPARE(l[0], QStringLiteral("series,x,x_label,y"));
        QVERIFY2(l[2].endsWith(",layers.1,1.5"), qPrintable(l[2]));

        // Line plot: x, y per point; written atomically to a file.
        lcw::LinePlot lp;
        lp.setData({1, 2, 3, 4, 5}, {10, 20, 15, 5, 1});
        const QString path = QString::fromStdString(lcwtest::tempDir("gui-plot-csv")) + "/line.csv";
        QString err;
        QVERIFY2(lcw::exportPlotData(lp.plot(), path, &err), qPrintable(err));
        l = fileLines(path);
        QCOMPARE(l.size(), 6);
        QVERIFY(l[3].endsWith(",3,15"));

        // Heat map: one row per cell with its value.
        lcw::HeatMapPlot hm;
        hm.setMatrix(3, 2, {1, 2, 3, 4, 5, 6});
        l = csvLines(lcw::plotDataCsv(hm.plot()));
        QCOMPARE(l.size(), 7);
        QVERIFY2(l[0].endsWith(",value"), qPrintable(l[0]));
        QStringList values;
        for (int i = 1; i < l.size(); ++i) values << l[i].split(',').back();
        values.sort();
        QCOMPARE(values, (QStringList{"1", "2", "3", "4", "5", "6"}));

        // The context menu offers it.
        QMenu menu;
        lcw::addExportActions(menu, lp.plot(), &lp, "line");
        bool found = false;
        for (QAction* a : menu.actions())
            found |= a->text() == QStringLiteral("Export Data as CSV…");
        QVERIFY(found);
    }

    void keyboardShortcutsListEveryShortcutAction() {
        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        w.showKeyboardShortcuts();
        auto* d = w.findChild<lcw::ShortcutsDialog*>();
        QVERIFY(d);
        // Every action with a shortcut in the window is listed, once.
        int expected = 0;
        QSet<QAction*> seen;
        for (QAction* a : w.findChildren<QAction*>()) {
            if (seen.contains(a)) continue;
            seen.insert(a);
            for (const QKeySequence& k : a->shortcuts())
                if (!k.isEmpty()) {
                    ++expected;
                    break;
                }
        }
        QVERIFY(expected > 15);
        QCOMPARE(int(d->entries().size()), expected);
        const QString open = QKeySequence(QKeySequence::Open).toString(QKeySequence::NativeText);
        QCOMPARE(d->shortcutOf("Open Model File…"), open);
        QCOMPARE(d->shortcutOf("Keyboard Shortcuts…"),
                 QKeySequence(Qt::CTRL | Qt::Key_Slash).toString(QKeySequence::NativeText));
        QCOMPARE(d->shortcutOf("Model Metadata…"),
                 QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_M).toString(QKeySequence::NativeText));
        // The File menu's actions say where they are.
        bool fileMenu = false;
        for (const auto& e : d->entries())
            fileMenu |= e.action == "Open Model File…" && e.where == "File";
        QVERIFY(fileMenu);
        d->setFilter("metadata");
        QCOMPARE(d->visibleCount(), 1);
        d->setFilter(QString());
        QCOMPARE(d->visibleCount(), expected);
    }

    void hfCacheFolderPickerAndLoad() {
        LCW_REQUIRE_SHARED(kHf);
        const fs::path repo = fs::path(lcwtest::tempDir("gui-hfcache")) / "models--lcw--stories";
        for (const char* hash : {"1111aaaa", "2222bbbb"}) {
            fs::create_directories(repo / "snapshots" / hash);
            fs::create_directories(repo / "blobs");
            for (const auto& e : fs::directory_iterator(lcwtest::sharedPath(kHf))) {
                const std::string blob = std::string(hash) + e.path().filename().string();
                fs::copy_file(e.path(), repo / "blobs" / blob);
                fs::create_symlink(fs::path("../../blobs") / blob,
                                   repo / "snapshots" / hash / e.path().filename());
            }
        }
        fs::create_directories(repo / "refs");
        std::ofstream(repo / "refs" / "main") << "2222bbbb";
        const QString repoPath = QString::fromStdString(repo.string());

        lcw::MainWindow w(lcw::MainWindow::Options{false, false});
        QStringList offered;
        int answer = 1;
        w.setSnapshotChooser([&](const QStringList& labels) {
            offered = labels;
            return answer;
        });
        const QString chosen = w.chooseHfSnapshot(repoPath);
        QCOMPARE(offered.size(), 2);
        QVERIFY2(offered[0].startsWith("2222bbbb (refs: main)"), qPrintable(offered[0]));
        QVERIFY(chosen.endsWith("snapshots/1111aaaa"));
        answer = -1;
        QVERIFY(w.chooseHfSnapshot(repoPath).isEmpty());
        // Ordinary folders pass through untouched.
        const QString plain = QString::fromStdString(lcwtest::sharedPath(kHf));
        QCOMPARE(w.chooseHfSnapshot(plain), plain);
        // Opened directly (recent list, command line), the folder loads refs/main's snapshot.
        QVERIFY(lcwtest::loadAndWait(w, repoPath));
        QCOMPARE(w.model()->spec().dim, int64_t(64));
        QVERIFY(QString::fromStdString(w.model()->path()).endsWith("2222bbbb"));
    }
};

QTEST_MAIN(TestGuiInspect)
#include "test_gui_inspect.moc"
