#include "widgets/device_selector.h"

#include "core/common/error.h"

#include <QFutureWatcher>
#include <QSettings>
#include <QSignalBlocker>
#include <QStandardItemModel>
#include <QtConcurrent/QtConcurrentRun>

#include <utility>

namespace lcw {

namespace {

struct Listing {
    std::vector<runtime::DeviceInfo> devices;
    std::string why;
};

QString tooltipOf(const runtime::DeviceInfo& d) {
    QString t = QStringLiteral("%1 (%2, %3)")
                    .arg(QString::fromStdString(d.name), QString::fromStdString(d.id),
                         QString::fromStdString(d.type));
    if (!d.driver.empty())
        t += QLatin1Char('\n') +
             DeviceSelector::tr("Driver: %1").arg(QString::fromStdString(d.driver));
    if (!d.api.empty())
        t += QLatin1Char('\n') +
             DeviceSelector::tr("Vulkan API: %1").arg(QString::fromStdString(d.api));
    if (d.id != "cpu")
        t += QLatin1Char('\n') +
             DeviceSelector::tr("Weight products run on this device, the rest on the CPU.");
    return t;
}

bool isListed(const QString& id) {
    for (const auto& d : DeviceNotifier::instance()->devices())
        if (QString::fromStdString(d.id) == id) return true;
    return false;
}

} // namespace

DeviceNotifier* DeviceNotifier::instance() {
    static DeviceNotifier* n = new DeviceNotifier; // lives as long as the process
    return n;
}

void DeviceNotifier::ensureListed() {
    if (m_started) return;
    m_started = true;
    auto* watcher = new QFutureWatcher<Listing>(this);
    connect(watcher, &QFutureWatcher<Listing>::finished, this, [this, watcher] {
        Listing l = watcher->result();
        watcher->deleteLater();
        m_devices = std::move(l.devices);
        m_why = std::move(l.why);
        m_listed = true;
        emit devicesListed();
    });
    watcher->setFuture(QtConcurrent::run([] {
        Listing l;
        l.devices = runtime::listDevices(&l.why); // never throws
        return l;
    }));
}

DeviceSelector::DeviceSelector(QWidget* parent) : QComboBox(parent) {
    setObjectName(QStringLiteral("deviceSelector"));
    setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    setMinimumContentsLength(14);
    auto* n = DeviceNotifier::instance();
    populateFromNotifier();
    connect(this, &QComboBox::activated, this, [this](int row) {
        const QString id = itemData(row).toString();
        if (id.isEmpty()) return; // the "no Vulkan device" entry
        if (selectDevice(id)) emit deviceSelected(id);
    });
    connect(n, &DeviceNotifier::deviceChanged, this, &DeviceSelector::showDevice);
    connect(n, &DeviceNotifier::devicesListed, this, &DeviceSelector::populateFromNotifier);
    n->ensureListed();
}

void DeviceSelector::populateFromNotifier() {
    const auto* n = DeviceNotifier::instance();
    if (n->listed()) {
        populate(n->devices(), n->whyNoVulkan());
        return;
    }
    populate({runtime::cpuDeviceInfo()}, std::string());
    // While the enumeration runs: a placeholder instead of "No Vulkan device".
    setItemText(count() - 1, tr("Looking for Vulkan devices…"));
    setItemData(count() - 1, QString(), Qt::ToolTipRole);
}

QString DeviceSelector::entryText(const runtime::DeviceInfo& d) {
    return QStringLiteral("%1 — %2, %3 GiB")
        .arg(QString::fromStdString(d.name), QString::fromStdString(d.type))
        .arg(double(d.memoryBytes) / (1024.0 * 1024.0 * 1024.0), 0, 'f', 1);
}

void DeviceSelector::populate(const std::vector<runtime::DeviceInfo>& devices,
                              const std::string& whyNoVulkan) {
    const QSignalBlocker block(this);
    clear();
    bool vulkan = false;
    for (const auto& d : devices) {
        addItem(entryText(d), QString::fromStdString(d.id));
        setItemData(count() - 1, tooltipOf(d), Qt::ToolTipRole);
        vulkan |= d.id != "cpu";
    }
    QString tip = tr("Where models run: the CPU, or a Vulkan device (the weight products on the "
                     "device, the rest on the CPU); the same as lcw-cli --device.");
    if (!vulkan) {
        const QString why = whyNoVulkan.empty() ? tr("no Vulkan device found")
                                                : QString::fromStdString(whyNoVulkan);
        addItem(tr("No Vulkan device"), QString());
        setItemData(count() - 1, why, Qt::ToolTipRole);
        if (auto* m = qobject_cast<QStandardItemModel*>(model()))
            m->item(count() - 1)->setEnabled(false);
        if (!whyNoVulkan.empty()) tip += QLatin1Char('\n') + tr("No Vulkan device: %1").arg(why);
    }
    setToolTip(tip);
    showDevice(currentDefaultId());
}

QString DeviceSelector::currentDeviceId() const {
    return currentData().toString();
}

void DeviceSelector::showDevice(const QString& id) {
    const int row = findData(id);
    const QSignalBlocker block(this);
    setCurrentIndex(row >= 0 ? row : 0);
}

QString DeviceSelector::currentDefaultId() {
    const runtime::DeviceSpec s = runtime::defaultDevice();
    if (!s.vulkan) return QStringLiteral("cpu");
    // "vulkan" (the best device) is resolved only when the list is known (no blocking here).
    if (s.index < 0 && DeviceNotifier::instance()->listed())
        return QString::fromStdString(runtime::resolveDevice(s).id);
    return QString::fromStdString(s.text());
}

bool DeviceSelector::selectDevice(const QString& id, bool persist) {
    try {
        runtime::setDefaultDevice(id.toStdString());
    } catch (const Error&) {
        return false;
    }
    if (persist) QSettings().setValue(QLatin1String(kSettingsKey), id);
    emit DeviceNotifier::instance()->deviceChanged(id);
    return true;
}

QString DeviceSelector::applyStoredDevice() {
    const QString stored = QSettings().value(QLatin1String(kSettingsKey)).toString();
    auto* n = DeviceNotifier::instance();
    if (stored.isEmpty() || stored == QStringLiteral("cpu") || !selectDevice(stored, false) ||
        (n->listed() && !isListed(stored))) {
        selectDevice(QStringLiteral("cpu"), false);
        return QStringLiteral("cpu");
    }
    if (!n->listed()) {
        // Until the list is known, the stored device (a Session asked for a device that is gone
        // runs on the CPU anyway); then the CPU if it is not listed.
        auto* ctx = new QObject(n);
        QObject::connect(n, &DeviceNotifier::devicesListed, ctx, [stored, ctx] {
            ctx->deleteLater();
            if (!isListed(stored) && currentDefaultId() == stored)
                selectDevice(QStringLiteral("cpu"), false);
        });
        n->ensureListed();
    }
    return stored;
}

} // namespace lcw
