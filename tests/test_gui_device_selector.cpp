// The device selector (widgets/device_selector.h): the devices of runtime::listDevices() with
// the CPU first, the reason as a disabled entry when there is no Vulkan device, one choice shared
// by every selector and runtime::defaultDevice(), stored in QSettings and applied at start-up;
// the Preferences dialog (Edit → Preferences…), the Run and Compare panels each hold one.
#include "core/model/model.h"
#include "core/runtime/device.h"
#include "core/runtime/session.h"
#include "gui_test_util.h"
#include "widgets/compare_panel.h"
#include "widgets/device_selector.h"
#include "widgets/main_window.h"
#include "widgets/number_format.h"
#include "widgets/preferences_dialog.h"
#include "widgets/run_panel.h"

#include <QAction>
#include <QFormLayout>
#include <QLabel>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardItemModel>
#include <QtTest/QtTest>

using namespace lcw;

namespace {

constexpr int kListTimeoutMs = 60000;

bool waitListed() {
    DeviceNotifier::instance()->ensureListed();
    return QTest::qWaitFor([] { return DeviceNotifier::instance()->listed(); }, kListTimeoutMs);
}

/// The row of the first Vulkan device, -1 without one.
int vulkanRow(const DeviceSelector& s) {
    for (int i = 0; i < s.count(); ++i)
        if (s.itemData(i).toString().startsWith(QStringLiteral("vulkan:"))) return i;
    return -1;
}

bool itemEnabled(const DeviceSelector& s, int row) {
    auto* m = qobject_cast<QStandardItemModel*>(s.model());
    return m && m->item(row)->isEnabled();
}

/// What a user's choice of `row` does: the current index moves and activated() is emitted.
void choose(DeviceSelector& s, int row) {
    s.setCurrentIndex(row);
    emit s.activated(row);
}

/// The label a form or a row gives `w` (its buddy).
QLabel* labelFor(QWidget* top, QWidget* w) {
    for (QLabel* l : top->findChildren<QLabel*>())
        if (l->buddy() == w) return l;
    return nullptr;
}

} // namespace

class TestGuiDeviceSelector : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() { lcwtest::initGuiTestCase("test_gui_device_selector"); }
    void init() {
        runtime::setDefaultDevice("cpu");
        QSettings().remove(QLatin1String(DeviceSelector::kSettingsKey));
    }

    void listsTheCpuFirstThenTheVulkanDevices() {
        DeviceSelector s;
        QVERIFY(s.count() >= 2);
        QCOMPARE(s.itemData(0).toString(), QStringLiteral("cpu")); // at once, before the list
        QVERIFY(waitListed());
        std::string why;
        const auto devices = runtime::listDevices(&why);
        QCOMPARE(s.itemData(0).toString(), QStringLiteral("cpu"));
        QCOMPARE(s.currentDeviceId(), QStringLiteral("cpu"));
        const QString cpuText = s.itemText(0);
        QVERIFY2(cpuText.contains(QStringLiteral(" — cpu, ")) && cpuText.endsWith(" GiB"),
                 qPrintable(cpuText));
        QVERIFY(cpuText.startsWith(QString::fromStdString(runtime::cpuDeviceInfo().name)));
        for (size_t i = 0; i < devices.size(); ++i) {
            QCOMPARE(s.itemData(int(i)).toString(), QString::fromStdString(devices[i].id));
            QCOMPARE(s.itemText(int(i)), DeviceSelector::entryText(devices[i]));
            QVERIFY(itemEnabled(s, int(i)));
            const QString tip = s.itemData(int(i), Qt::ToolTipRole).toString();
            if (!devices[i].driver.empty())
                QVERIFY2(tip.contains(QString::fromStdString(devices[i].driver)) &&
                             tip.contains(QString::fromStdString(devices[i].api)),
                         qPrintable(tip));
        }
        if (devices.size() == 1) {
            // No Vulkan device: the reason, as an entry that cannot be chosen.
            QCOMPARE(s.count(), 2);
            QVERIFY(!itemEnabled(s, 1));
            QCOMPARE(s.itemData(1, Qt::ToolTipRole).toString(), QString::fromStdString(why));
        } else {
            QCOMPARE(s.count(), int(devices.size()));
        }
    }

    void withoutVulkanTheReasonIsADisabledLastEntry() {
        DeviceSelector s;
        QVERIFY(waitListed());
        const std::string why = "the Vulkan loader found no usable driver (test)";
        s.populate({runtime::cpuDeviceInfo()}, why);
        QCOMPARE(s.count(), 2);
        QCOMPARE(s.itemData(0).toString(), QStringLiteral("cpu"));
        QVERIFY(!itemEnabled(s, 1));
        QCOMPARE(s.itemData(1).toString(), QString());
        QCOMPARE(s.itemData(1, Qt::ToolTipRole).toString(), QString::fromStdString(why));
        QVERIFY(s.toolTip().contains(QString::fromStdString(why)));
        // The entry does nothing even when activated.
        QSignalSpy chosen(&s, &DeviceSelector::deviceSelected);
        emit s.activated(1);
        QCOMPARE(chosen.count(), 0);
        QCOMPARE(runtime::defaultDevice().text(), std::string("cpu"));
    }

    void choosingAnEntryChangesTheDefaultAndEverySelector() {
        DeviceSelector a, b;
        PreferencesDialog prefs;
        QVERIFY(waitListed());
        const int row = vulkanRow(a);
        if (row < 0)
            QSKIP(qPrintable("no Vulkan device: " +
                             QString::fromStdString(DeviceNotifier::instance()->whyNoVulkan())));
        const QString id = a.itemData(row).toString();
        QSignalSpy chosen(&a, &DeviceSelector::deviceSelected);
        QSignalSpy changed(DeviceNotifier::instance(), &DeviceNotifier::deviceChanged);
        choose(a, row);
        QCOMPARE(chosen.count(), 1);
        QCOMPARE(chosen[0][0].toString(), id);
        QCOMPARE(changed.count(), 1);
        QCOMPARE(QString::fromStdString(runtime::defaultDevice().text()), id);
        QCOMPARE(b.currentDeviceId(), id);
        QCOMPARE(prefs.deviceSelector()->currentDeviceId(), id);
        QCOMPARE(QSettings().value(QLatin1String(DeviceSelector::kSettingsKey)).toString(), id);
        // A selector made later shows the current device.
        DeviceSelector c;
        QCOMPARE(c.currentDeviceId(), id);
        // Back to the CPU from another selector: all follow.
        choose(*prefs.deviceSelector(), 0);
        QCOMPARE(runtime::defaultDevice().text(), std::string("cpu"));
        QCOMPARE(a.currentDeviceId(), QStringLiteral("cpu"));
        QCOMPARE(b.currentDeviceId(), QStringLiteral("cpu"));
        QCOMPARE(c.currentDeviceId(), QStringLiteral("cpu"));
        QCOMPARE(QSettings().value(QLatin1String(DeviceSelector::kSettingsKey)).toString(),
                 QStringLiteral("cpu"));
    }

    void storedDeviceIsAppliedAtStartUp() {
        QVERIFY(waitListed());
        QSettings s;
        const QLatin1String key(DeviceSelector::kSettingsKey);
        // Gone or malformed: the CPU, silently, and the setting is left alone.
        runtime::setDefaultDevice("vulkan:0");
        s.setValue(key, QStringLiteral("vulkan:99"));
        QCOMPARE(DeviceSelector::applyStoredDevice(), QStringLiteral("cpu"));
        QCOMPARE(runtime::defaultDevice().text(), std::string("cpu"));
        QCOMPARE(s.value(key).toString(), QStringLiteral("vulkan:99"));
        s.setValue(key, QStringLiteral("bogus"));
        QCOMPARE(DeviceSelector::applyStoredDevice(), QStringLiteral("cpu"));
        QCOMPARE(runtime::defaultDevice().text(), std::string("cpu"));
        s.remove(key);
        QCOMPARE(DeviceSelector::applyStoredDevice(), QStringLiteral("cpu"));
        // A listed device is applied, and shown by the selectors.
        DeviceSelector sel;
        const int row = vulkanRow(sel);
        if (row < 0) QSKIP("no Vulkan device to store");
        const QString id = sel.itemData(row).toString();
        s.setValue(key, id);
        QCOMPARE(DeviceSelector::applyStoredDevice(), id);
        QCOMPARE(QString::fromStdString(runtime::defaultDevice().text()), id);
        QCOMPARE(sel.currentDeviceId(), id);
    }

    /// The Preferences dialog shows the GPU memory lcw holds on the chosen device: none before a
    /// session ran there, the uploaded weights (and scratch) after one.
    void preferencesShowGpuMemory() {
        QVERIFY(waitListed());
        const auto& devs = DeviceNotifier::instance()->devices();
        if (devs.size() < 2)
            QSKIP(qPrintable("no Vulkan device: " +
                             QString::fromStdString(DeviceNotifier::instance()->whyNoVulkan())));
        PreferencesDialog dlg;
        QVERIFY(dlg.memoryText().contains(QStringLiteral("CPU")));
        const QString id = QString::fromStdString(devs[1].id);
        QVERIFY(DeviceSelector::selectDevice(id, false));
        QVERIFY2(dlg.memoryText().contains(id), qPrintable(dlg.memoryText()));
        auto model = lcw::Model::load(LCW_SOURCE_DIR "/resources/models/stories260K");
        lcw::SessionOptions so;
        so.device = devs[1].id;
        so.contextLength = 16;
        lcw::Session s(*model, so);
        std::vector<float> logits;
        const std::vector<int32_t> ids = {1, 403, 407};
        s.forward(ids, logits);
        dlg.refreshMemory();
        const uint64_t held = runtime::deviceMemoryInUse(devs[1].id);
        QVERIFY2(held > 512 * 1024, qPrintable(dlg.memoryText())); // the demo's ~1 MB of weights
        QVERIFY2(dlg.memoryText().startsWith(formatBytes(held) + QStringLiteral(" of GPU memory")),
                 qPrintable(dlg.memoryText()));
        QVERIFY(DeviceSelector::selectDevice(QStringLiteral("cpu"), false));
    }

    void preferencesRunAndComparePanelsHoldASelector() {
        MainWindow w(MainWindow::Options{false, false});
        QAction* prefsAction = w.findChild<QAction*>(QStringLiteral("actionPreferences"));
        QVERIFY(prefsAction);
        QVERIFY(prefsAction->text().contains(QStringLiteral("Preferences")));
        prefsAction->trigger();
        auto* dlg = w.findChild<PreferencesDialog*>();
        QVERIFY(dlg);
        QVERIFY(dlg->isVisible());
        DeviceSelector* inDialog = dlg->findChild<DeviceSelector*>();
        QVERIFY(inDialog);
        QCOMPARE(inDialog, dlg->deviceSelector());
        QCOMPARE(inDialog->itemData(0).toString(), QStringLiteral("cpu"));
        QLabel* l = labelFor(dlg, inDialog);
        QVERIFY(l);
        QCOMPARE(l->text().remove(QLatin1Char('&')), QStringLiteral("Device:"));
        dlg->close();

        auto* run = w.findChild<RunPanel*>();
        auto* cmp = w.findChild<ComparePanel*>();
        QVERIFY(run && cmp);
        for (QWidget* panel : {static_cast<QWidget*>(run), static_cast<QWidget*>(cmp)}) {
            auto* sel = panel->findChild<DeviceSelector*>();
            QVERIFY2(sel, panel->metaObject()->className());
            QLabel* label = labelFor(panel, sel);
            QVERIFY2(label, panel->metaObject()->className());
            QCOMPARE(label->text().remove(QLatin1Char('&')), QStringLiteral("Device:"));
        }
        // The Compare panel follows a choice made in the Run panel.
        QVERIFY(waitListed());
        auto* runSel = run->findChild<DeviceSelector*>();
        auto* cmpSel = cmp->findChild<DeviceSelector*>();
        const int row = std::max(vulkanRow(*runSel), 0);
        choose(*runSel, row);
        QCOMPARE(cmpSel->currentDeviceId(), runSel->itemData(row).toString());
        QCOMPARE(QString::fromStdString(runtime::defaultDevice().text()),
                 runSel->itemData(row).toString());
        choose(*runSel, 0);
        QCOMPARE(cmpSel->currentDeviceId(), QStringLiteral("cpu"));
    }
};

QTEST_MAIN(TestGuiDeviceSelector)
#include "test_gui_device_selector.moc"
