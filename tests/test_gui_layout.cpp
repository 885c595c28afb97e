// Tests of the main window's layout (issue #17, part 1): the window fits a 1024×700 screen with
// a model open and every panel shown, the dock separators drag, the default layout shows the
// Tensors table with at least 15 rows at 1600×1000, long texts do not resize the docks, the
// panel shortcuts show panels, and `lcw --screenshot FILE --size WxH` writes an image of
// exactly that size.
#include "gui_test_util.h"
#include "test_util.h"
#include "widgets/elided_label.h"
#include "widgets/log_panel.h"
#include "widgets/main_window.h"
#include "widgets/results_panel.h"

#include <QAbstractButton>
#include <QAction>
#include <QDockWidget>
#include <QHeaderView>
#include <QImage>
#include <QLabel>
#include <QMouseEvent>
#include <QProcess>
#include <QScrollArea>
#include <QStatusBar>
#include <QStyle>
#include <QTableView>
#include <QToolTip>
#include <QtTest/QtTest>

#include <filesystem>
#include <map>

using lcw::MainWindow;
using Panel = lcw::MainWindow::Panel;

namespace {

constexpr Panel kAllPanels[] = {Panel::Summary, Panel::Layers,      Panel::Plot,   Panel::Run,
                                Panel::Log,     Panel::Stats,       Panel::Recipe, Panel::Compare,
                                Panel::Results, Panel::Sensitivity, Panel::Study};

QString demoModel() {
    return QString::fromStdString(lcwtest::demoModelPath());
}

/// Lets the layout settle: queued resizes, the default layout's deferred sizing, plot redraws.
void settle(int ms = 150) {
    QTest::qWait(ms);
    QCoreApplication::processEvents();
}

/// A window of `size` (no settings, no dialogs) with the demo model open in the default layout.
std::unique_ptr<MainWindow> openDemo(QSize size) {
    auto w = std::make_unique<MainWindow>(MainWindow::Options{false, false});
    w->resize(size);
    w->show();
    if (!QTest::qWaitForWindowExposed(w.get())) return nullptr;
    if (!lcwtest::loadAndWait(*w, demoModel())) return nullptr;
    settle();
    return w;
}

std::map<QString, QRect> dockGeometries(const MainWindow& w) {
    std::map<QString, QRect> g;
    for (Panel p : kAllPanels)
        if (QDockWidget* d = w.dock(p); d->isVisible()) g[d->objectName()] = d->geometry();
    return g;
}

QString describe(const std::map<QString, QRect>& g) {
    QString s;
    for (const auto& [name, r] : g)
        s += QStringLiteral("%1 %2x%3+%4+%5; ")
                 .arg(name)
                 .arg(r.width())
                 .arg(r.height())
                 .arg(r.x())
                 .arg(r.y());
    return s;
}

/// Presses the mouse at `from` on the window, moves to `to` in steps, releases: what dragging a
/// separator between two docks does.
void dragOnWindow(QWidget* w, QPoint from, QPoint to) {
    auto send = [w](QEvent::Type type, QPoint pos, Qt::MouseButton button,
                    Qt::MouseButtons buttons) {
        QMouseEvent e(type, QPointF(pos), QPointF(w->mapToGlobal(pos)), button, buttons,
                      Qt::NoModifier);
        QApplication::sendEvent(w, &e);
    };
    send(QEvent::MouseMove, from, Qt::NoButton, Qt::NoButton);
    send(QEvent::MouseButtonPress, from, Qt::LeftButton, Qt::LeftButton);
    const int steps = 8;
    for (int i = 1; i <= steps; ++i) {
        const QPoint p = from + (to - from) * i / steps;
        send(QEvent::MouseMove, p, Qt::NoButton, Qt::LeftButton);
        QTest::qWait(10); // the layout moves the separator on a zero-time timer
    }
    send(QEvent::MouseButtonRelease, to, Qt::LeftButton, Qt::NoButton);
    settle(100);
}

} // namespace

class TestGuiLayout : public QObject {
    Q_OBJECT

private slots:
    void initTestCase() { lcwtest::initGuiTestCase("test_gui_layout"); }

    void minimumSizeFitsSmallScreens();
    void everyControlReachableAt1024x700();
    void separatorsDrag();
    void tensorsTableShowsFifteenRows();
    void longTextKeepsDockSizes();
    void panelShortcutsShowPanels();
    void elidedLabelKeepsWidthAndShowsTooltip();
    void screenshotHasRequestedSize();
};

void TestGuiLayout::minimumSizeFitsSmallScreens() {
    auto w = openDemo(QSize(1400, 900));
    QVERIFY(w);
    // The default layout, every panel shown (tabbed ones behind their group's front tab).
    for (Panel p : kAllPanels)
        QVERIFY2(!w->dock(p)->isHidden(), qPrintable(w->dock(p)->objectName()));
    const QSize hint = w->minimumSizeHint();
    QVERIFY2(
        hint.width() <= 1024 && hint.height() <= 700,
        qPrintable(QStringLiteral("minimumSizeHint %1x%2").arg(hint.width()).arg(hint.height())));
    const QSize min = w->minimumSize();
    QVERIFY2(min.width() <= 1024 && min.height() <= 700,
             qPrintable(QStringLiteral("minimumSize %1x%2").arg(min.width()).arg(min.height())));
    // Each panel raised in turn: the minimum stays small (tab groups take their largest page).
    for (Panel p : kAllPanels) {
        w->showPanel(p);
        settle(30);
        const QSize h = w->minimumSizeHint();
        QVERIFY2(h.width() <= 1024 && h.height() <= 700,
                 qPrintable(QStringLiteral("%1 raised: minimumSizeHint %2x%3")
                                .arg(w->dock(p)->objectName())
                                .arg(h.width())
                                .arg(h.height())));
    }
    // And the window really takes that size.
    w->resize(1024, 700);
    settle();
    QCOMPARE(w->size(), QSize(1024, 700));
}

void TestGuiLayout::everyControlReachableAt1024x700() {
    auto w = openDemo(QSize(1024, 700));
    QVERIFY(w);
    QCOMPARE(w->size(), QSize(1024, 700));
    const QRect window = w->rect();
    QVERIFY(w->statusBar()->isVisible());
    QVERIFY(window.contains(
        QRect(w->statusBar()->mapTo(w.get(), QPoint(0, 0)), w->statusBar()->size())));
    // Every button of every panel (each raised in turn) lies inside the window, or inside a
    // scroll area that brings it into view.
    for (Panel p : kAllPanels) {
        w->showPanel(p);
        settle(30);
        QDockWidget* d = w->dock(p);
        const QRect dr(d->mapTo(w.get(), QPoint(0, 0)), d->size());
        QVERIFY2(window.contains(dr), qPrintable(d->objectName()));
        for (QAbstractButton* b : d->findChildren<QAbstractButton*>()) {
            if (!b->isVisibleTo(d) || b->objectName().startsWith(QLatin1String("qt_"))) continue;
            bool scrolled = false;
            for (QWidget* a = b->parentWidget(); a && a != d; a = a->parentWidget())
                if (qobject_cast<QScrollArea*>(a)) scrolled = true;
            if (scrolled) continue;
            const QRect br(b->mapTo(w.get(), QPoint(0, 0)), b->size());
            QVERIFY2(window.contains(br) && b->width() > 4 && b->height() > 4,
                     qPrintable(QStringLiteral("%1: button \"%2\" at %3,%4 %5x%6")
                                    .arg(d->objectName(), b->text())
                                    .arg(br.x())
                                    .arg(br.y())
                                    .arg(br.width())
                                    .arg(br.height())));
        }
    }
}

void TestGuiLayout::separatorsDrag() {
    auto w = openDemo(QSize(1600, 1000));
    QVERIFY(w);
    QDockWidget* layers = w->dock(Panel::Layers);
    QDockWidget* stats = w->dock(Panel::Stats);
    QDockWidget* summary = w->dock(Panel::Summary);
    // The separator between the Tensors table and the inspector below it, dragged down 120 px
    // and back up.
    const int h0 = layers->height();
    QVERIFY2(stats->geometry().top() > layers->geometry().bottom(), "Stats is below Tensors");
    // The separator starts right under the Tensors dock (the tab bar of Stats' group is below).
    const int extent =
        w->style()->pixelMetric(QStyle::PM_DockWidgetSeparatorExtent, nullptr, w.get());
    const int sepY = layers->geometry().bottom() + 1 + extent / 2;
    const int x = layers->geometry().center().x();
    dragOnWindow(w.get(), QPoint(x, sepY), QPoint(x, sepY + 120));
    const int h1 = layers->height();
    QVERIFY2(h1 >= h0 + 80, qPrintable(QStringLiteral("Tensors %1 -> %2 px").arg(h0).arg(h1)));
    const int sepY1 = layers->geometry().bottom() + 1 + extent / 2;
    dragOnWindow(w.get(), QPoint(x, sepY1), QPoint(x, sepY1 - 200));
    const int h2 = layers->height();
    QVERIFY2(h2 <= h1 - 150, qPrintable(QStringLiteral("Tensors %1 -> %2 px").arg(h1).arg(h2)));
    // The vertical separator between the left column and the right one.
    const int w0 = summary->width();
    const int sepX = summary->geometry().right() + 1 + extent / 2;
    const int y = summary->geometry().center().y();
    dragOnWindow(w.get(), QPoint(sepX, y), QPoint(sepX + 100, y));
    QVERIFY2(summary->width() >= w0 + 70,
             qPrintable(QStringLiteral("Summary %1 -> %2 px").arg(w0).arg(summary->width())));
    // resizeDocks() moves them too.
    const int h3 = layers->height();
    w->resizeDocks({layers, stats}, {h3 + 150, stats->height() - 150}, Qt::Vertical);
    settle(50);
    QVERIFY2(layers->height() >= h3 + 100,
             qPrintable(QStringLiteral("Tensors %1 -> %2 px").arg(h3).arg(layers->height())));
}

void TestGuiLayout::tensorsTableShowsFifteenRows() {
    auto w = openDemo(QSize(1600, 1000));
    QVERIFY(w);
    QTableView* t = w->layerView();
    QVERIFY(t->isVisible());
    QVERIFY(t->model()->rowCount() >= 15);
    const int rowH = t->verticalHeader()->defaultSectionSize();
    const int shown = t->viewport()->height() / rowH;
    QVERIFY2(shown >= 15, qPrintable(QStringLiteral("%1 rows of %2 px in a %3 px viewport")
                                         .arg(shown)
                                         .arg(rowH)
                                         .arg(t->viewport()->height())));
    // The same after View ▸ Reset Layout.
    w->resetLayout();
    settle();
    QVERIFY(t->viewport()->height() / rowH >= 15);
}

void TestGuiLayout::longTextKeepsDockSizes() {
    // The demo model under a very long path.
    namespace fs = std::filesystem;
    fs::path dir = lcwtest::tempDir("layout-long");
    for (int i = 0; i < 4; ++i)
        dir /= "a-rather-long-folder-name-that-keeps-going-and-going-" + std::to_string(i);
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(lcwtest::demoModelPath()))
        if (e.is_regular_file()) fs::copy_file(e.path(), dir / e.path().filename());

    auto w = std::make_unique<MainWindow>(MainWindow::Options{false, false});
    w->resize(1400, 900);
    w->show();
    QVERIFY(QTest::qWaitForWindowExposed(w.get()));
    QVERIFY(lcwtest::loadAndWait(*w, demoModel()));
    settle();
    const auto before = dockGeometries(*w);
    QVERIFY(lcwtest::loadAndWait(*w, QString::fromStdString(dir.string())));
    settle();
    QCOMPARE(describe(dockGeometries(*w)), describe(before));
    // A very long error in the log and the status bar.
    const QString longText = QStringLiteral("error: ") + QString(600, QLatin1Char('x')) +
                             QStringLiteral(" in /") + QString::fromStdString(dir.string());
    w->logPanel()->error(longText);
    w->statusBar()->showMessage(longText);
    QVERIFY(!lcwtest::loadAndWait(*w, QString::fromStdString(dir.string()) + "/missing" +
                                          QString(300, QLatin1Char('y'))));
    settle();
    QCOMPARE(describe(dockGeometries(*w)), describe(before));
    // Every label of every panel (each raised in turn) given a long path or message.
    for (Panel p : kAllPanels) {
        w->showPanel(p);
        settle(20);
        const auto raised = dockGeometries(*w);
        for (QLabel* l : w->dock(p)->findChildren<QLabel*>())
            if (l->isVisibleTo(w->dock(p))) l->setText(longText);
        settle(50);
        QCOMPARE(describe(dockGeometries(*w)), describe(raised));
    }
    QCOMPARE(w->size(), QSize(1400, 900));
}

void TestGuiLayout::panelShortcutsShowPanels() {
    auto w = openDemo(QSize(1400, 900));
    QVERIFY(w);
    QDockWidget* log = w->dock(Panel::Log);
    QDockWidget* compare = w->dock(Panel::Compare);
    QVERIFY(log->isVisible());
    // Ctrl+5 on a shown panel keeps it shown (the welcome page says "show panels").
    QTest::keyClick(w.get(), Qt::Key_5, Qt::ControlModifier);
    settle(30);
    QVERIFY(log->isVisible());
    // Ctrl+8 brings a tabbed panel to the front, twice in a row too.
    QTest::keyClick(w.get(), Qt::Key_8, Qt::ControlModifier);
    settle(30);
    QVERIFY(compare->isVisible() && !compare->visibleRegion().isEmpty());
    QTest::keyClick(w.get(), Qt::Key_8, Qt::ControlModifier);
    settle(30);
    QVERIFY(compare->isVisible() && !compare->visibleRegion().isEmpty());
    // A closed panel comes back.
    log->close();
    settle(30);
    QVERIFY(!log->isVisible());
    QTest::keyClick(w.get(), Qt::Key_5, Qt::ControlModifier);
    settle(30);
    QVERIFY(log->isVisible());
    // The View menu still hides and shows panels (its checkable entries).
    log->toggleViewAction()->trigger();
    settle(30);
    QVERIFY(!log->isVisible());
}

void TestGuiLayout::elidedLabelKeepsWidthAndShowsTooltip() {
    const QString path = QStringLiteral("/home/someone/") + QString(40, QLatin1Char('d')) +
                         QStringLiteral("/models/a-very-long-model-name/results.jsonl");
    QWidget host;
    auto* l = new lcw::ElidedLabel(&host);
    l->setText(QStringLiteral("short"));
    const int minShort = l->minimumSizeHint().width();
    l->setText(path);
    QCOMPARE(l->minimumSizeHint().width(), minShort);
    QVERIFY(l->sizeHint().width() > l->fontMetrics().horizontalAdvance(path) - 2);
    l->setGeometry(0, 0, 200, 20);
    host.resize(220, 40);
    host.show();
    QVERIFY(QTest::qWaitForWindowExposed(&host));
    QVERIFY(l->isElided());
    const QString shown = l->displayedText();
    QVERIFY(shown.contains(QChar(0x2026)));
    QVERIFY(l->fontMetrics().horizontalAdvance(shown) <= 200);
    QVERIFY(shown.endsWith(QStringLiteral("results.jsonl"))); // elided in the middle
    QHelpEvent tip(QEvent::ToolTip, QPoint(10, 10), l->mapToGlobal(QPoint(10, 10)));
    QApplication::sendEvent(l, &tip);
    QTRY_COMPARE(QToolTip::text(), path);
    QToolTip::hideText();
    // The Results panel keeps its minimum width with a long results path.
    lcw::ResultsPanel panel;
    const QString dir = QString::fromStdString(lcwtest::tempDir("layout-results"));
    panel.setResultsPath(dir + QStringLiteral("/r.jsonl"));
    panel.show();
    QVERIFY(QTest::qWaitForWindowExposed(&panel));
    settle(20);
    const int before = panel.minimumSizeHint().width();
    panel.setResultsPath(dir + QLatin1Char('/') + QString(300, QLatin1Char('r')) +
                         QStringLiteral(".jsonl"));
    settle(20);
    QCOMPARE(panel.minimumSizeHint().width(), before);
}

void TestGuiLayout::screenshotHasRequestedSize() {
    const QString dir = QString::fromStdString(lcwtest::tempDir("layout-shot"));
    for (const QSize size : {QSize(1400, 900), QSize(1024, 700), QSize(1920, 1080)}) {
        const QString out =
            dir + QStringLiteral("/shot-%1x%2.png").arg(size.width()).arg(size.height());
        QProcess p;
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        env.insert(QStringLiteral("QT_QPA_PLATFORM"), QStringLiteral("offscreen"));
        p.setProcessEnvironment(env);
        p.start(QStringLiteral(LCW_GUI_PATH),
                {demoModel(), QStringLiteral("--screenshot"), out, QStringLiteral("--size"),
                 QStringLiteral("%1x%2").arg(size.width()).arg(size.height())});
        QVERIFY(p.waitForFinished(60000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        const QImage img(out);
        QVERIFY(!img.isNull());
        QCOMPARE(img.size(), size);
    }
    // Below the window's minimum: an error that says so, and no image of another size.
    const QString out = dir + QStringLiteral("/too-small.png");
    QProcess p;
    p.start(QStringLiteral(LCW_GUI_PATH), {demoModel(), QStringLiteral("--screenshot"), out,
                                           QStringLiteral("--size"), QStringLiteral("300x200")});
    QVERIFY(p.waitForFinished(60000));
    QCOMPARE(p.exitCode(), 1);
    QVERIFY(p.readAllStandardError().contains("minimum size"));
    QVERIFY(!QFileInfo::exists(out));
}

QTEST_MAIN(TestGuiLayout)
#include "test_gui_layout.moc"
