#include "widgets/preferences_dialog.h"

#include "widgets/device_selector.h"

#include <QDialogButtonBox>
#include <QFormLayout>
#include <QLabel>
#include <QVBoxLayout>

namespace lcw {

PreferencesDialog::PreferencesDialog(QWidget* parent) : QDialog(parent) {
    setWindowTitle(tr("Preferences"));
    setObjectName(QStringLiteral("preferencesDialog"));
    auto* root = new QVBoxLayout(this);
    auto* form = new QFormLayout;
    m_device = new DeviceSelector(this);
    form->addRow(tr("&Device:"), m_device);
    root->addLayout(form);

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

} // namespace lcw
