#pragma once
/// \file
/// PreferencesDialog (Edit → Preferences…): application-wide settings; for now the compute
/// device every model runs on (a DeviceSelector: stored in QSettings, applied at start-up) and
/// the device memory lcw holds on it.
#include <QDialog>
#include <QLabel>

namespace lcw {

class DeviceSelector;

class PreferencesDialog : public QDialog {
    Q_OBJECT
public:
    explicit PreferencesDialog(QWidget* parent = nullptr);
    DeviceSelector* deviceSelector() const { return m_device; }
    /// Shows the device memory lcw holds on the selected device now (also every second).
    void refreshMemory();
    QString memoryText() const;

private:
    DeviceSelector* m_device = nullptr;
    QLabel* m_memory = nullptr;
};

} // namespace lcw
