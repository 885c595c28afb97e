#pragma once
/// \file
/// DeviceSelector: a combo box of the compute devices (runtime::listDevices(): the CPU, then
/// every Vulkan device). Choosing an entry makes it the process default of every new Session
/// (runtime::setDefaultDevice), stores it in QSettings ("runtime/device") and moves every other
/// selector to it. The reason why no Vulkan device can be used is a disabled last entry.
/// The Vulkan enumeration (a few hundred ms, more with some drivers) runs once per process on a
/// worker thread (DeviceNotifier::ensureListed); until it ends the selectors list the CPU.
#include "core/runtime/device.h"

#include <QComboBox>
#include <QObject>
#include <QString>

#include <string>
#include <vector>

namespace lcw {

/// The device list of the process and the changes of the process-wide device (one instance).
class DeviceNotifier : public QObject {
    Q_OBJECT
public:
    static DeviceNotifier* instance();

    /// Starts runtime::listDevices() on a worker thread unless it ran or runs already;
    /// devicesListed() follows.
    void ensureListed();
    /// Whether the list is known (devices(), whyNoVulkan()).
    bool listed() const { return m_listed; }
    const std::vector<runtime::DeviceInfo>& devices() const { return m_devices; }
    const std::string& whyNoVulkan() const { return m_why; }

signals:
    /// The process default changed to `id` ("cpu", "vulkan:N").
    void deviceChanged(const QString& id);
    /// The device list is known.
    void devicesListed();

private:
    DeviceNotifier() = default;
    bool m_started = false, m_listed = false;
    std::vector<runtime::DeviceInfo> m_devices;
    std::string m_why;
};

class DeviceSelector : public QComboBox {
    Q_OBJECT
public:
    /// The QSettings key of the chosen device.
    static constexpr const char* kSettingsKey = "runtime/device";

    /// Lists the devices (the CPU alone until the enumeration ends) and shows the default one.
    explicit DeviceSelector(QWidget* parent = nullptr);

    /// Fills the list from `devices` (the CPU first) and, when no Vulkan device can be used,
    /// `whyNoVulkan` as a disabled last entry.
    void populate(const std::vector<runtime::DeviceInfo>& devices, const std::string& whyNoVulkan);

    /// The id of the current entry ("cpu", "vulkan:N").
    QString currentDeviceId() const;
    /// "NAME — type, X.X GiB".
    static QString entryText(const runtime::DeviceInfo& d);

    /// Makes `id` the device of every new Session, stores it in QSettings when `persist`, and
    /// moves every selector to it. False (and nothing changed) for a malformed id.
    static bool selectDevice(const QString& id, bool persist = true);
    /// The id of runtime::defaultDevice().
    static QString currentDefaultId();
    /// At start-up: the device stored in QSettings; once the list is known, the CPU instead
    /// (silently) when the stored device is not in it. Returns the id applied now.
    static QString applyStoredDevice();

signals:
    /// The user chose `id` in this selector.
    void deviceSelected(const QString& id);

private:
    void showDevice(const QString& id);
    void populateFromNotifier();
};

} // namespace lcw
