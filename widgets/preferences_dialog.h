#pragma once
/// \file
/// PreferencesDialog (Edit → Preferences…): application-wide settings; for now the compute
/// device every model runs on (a DeviceSelector: stored in QSettings, applied at start-up).
#include <QDialog>

namespace lcw {

class DeviceSelector;

class PreferencesDialog : public QDialog {
    Q_OBJECT
public:
    explicit PreferencesDialog(QWidget* parent = nullptr);
    DeviceSelector* deviceSelector() const { return m_device; }

private:
    DeviceSelector* m_device = nullptr;
};

} // namespace lcw
