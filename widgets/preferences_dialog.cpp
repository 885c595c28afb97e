#include "widgets/preferences_dialog.h"

#include "widgets/device_selector.h"
#include "widgets/number_format.h"

#include <QDialogButtonBox>
#include <QFormLayout>
#include <QLabel>
#include <QTimer>
#include <QVBoxLayout>

namespace lcw {

PreferencesDialog::PreferencesDialog(QWidget* parent) : QDialog(parent) {
    setWindowTitle(tr("Preferences"));
    setObjectName(QStringLiteral("preferencesDialog"));
    auto* root = new QVBoxLayout(this);
    auto* form = new QFormLayout;
    m_device = new DeviceSelector(this);
    form->addRow(tr("&Device:"), m_device);
    m_memory = new QLabel(this);
    m_memory->setObjectName(QStringLiteral("deviceMemory"));
    form->addRow(tr("In use by lcw:"), m_memory);
    root->addLayout(form);
    // The device memory lcw holds (weights shared by every session, scratch), polled while the
    // dialog is open: reading it never waits for a running product.
    auto* timer = new QTimer(this);
    timer->setInterval(1000);
    connect(timer, &QTimer::timeout, this, &PreferencesDialog::refreshMemory);
    connect(DeviceNotifier::instance(), &DeviceNotifier::deviceChanged, this,
            &PreferencesDialog::refreshMemory);
    timer->start();
    refreshMemory();

    auto* note = new QLabel(this);
    note->setObjectName(QStringLiteral("deviceNote"));
    note->setWordWrap(true);
    note->setTextInteractionFlags(Qt::TextSelectableByMouse);
    root->addWidget(note);
    auto showNote = [note] {
        QString text = tr("Generation, perplexity, comparisons and the other model runs use this "
                          "device from their next start (as lcw-cli --device). On a Vulkan "
                          "device the weight products run on the device and the rest on the "
                          "CPU; the CPU is the reference. Remembered across sessions.");
        const auto* n = DeviceNotifier::instance();
        bool vulkan = false;
        for (const auto& d : n->devices()) vulkan |= d.id != "cpu";
        if (n->listed() && !vulkan)
            text += QStringLiteral("\n\n") +
                    tr("No Vulkan device: %1")
                        .arg(n->whyNoVulkan().empty() ? tr("none found")
                                                      : QString::fromStdString(n->whyNoVulkan()));
        note->setText(text);
    };
    showNote();
    connect(DeviceNotifier::instance(), &DeviceNotifier::devicesListed, note, showNote);
    root->addStretch(1);

    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close, this);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    root->addWidget(buttons);
    resize(520, sizeHint().height());
}

QString PreferencesDialog::memoryText() const {
    return m_memory->text();
}

void PreferencesDialog::refreshMemory() {
    const std::string id = m_device->currentDeviceId().toStdString();
    if (id == "cpu") {
        m_memory->setText(tr("the CPU (weights memory-mapped; see the Run and Compare panels)"));
        return;
    }
    const uint64_t b = runtime::deviceMemoryInUse(id);
    m_memory->setText(tr("%1 of GPU memory on %2").arg(formatBytes(b), QString::fromStdString(id)));
}

} // namespace lcw
