#include "widgets/imatrix_dialog.h"

#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QToolButton>
#include <QVBoxLayout>

namespace lcw {

ImatrixDialog::ImatrixDialog(const ImatrixSettings& initial, QWidget* parent) : QDialog(parent) {
    setWindowTitle(tr("Compute Importance Matrix"));
    auto* form = new QFormLayout;
    m_text = new QLineEdit(this);
    m_text->setPlaceholderText(tr("bundled calibration text"));
    auto* browse = new QToolButton(this);
    browse->setText(QStringLiteral("…"));
    connect(browse, &QToolButton::clicked, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Calibration Text"), m_text->text(),
                                                       tr("Text (*.txt);;All (*)"));
        if (!f.isEmpty()) m_text->setText(f);
    });
    auto* textRow = new QHBoxLayout;
    textRow->addWidget(m_text, 1);
    textRow->addWidget(browse);
    m_seqLen = new QSpinBox(this);
    m_seqLen->setRange(16, 1 << 20); // llama.cpp collects products of 16 tokens or more
    m_seqLen->setToolTip(tr("Tokens per chunk (llama-imatrix -c); each chunk starts with BOS"));
    m_samples = new QSpinBox(this);
    m_samples->setRange(0, 1 << 20);
    m_samples->setSpecialValueText(tr("all"));
    m_samples->setToolTip(tr("Chunks to run (llama-imatrix --chunks); all: every whole chunk the "
                             "text holds"));
    form->addRow(tr("Calibration text:"), textRow);
    form->addRow(tr("Tokens per chunk:"), m_seqLen);
    form->addRow(tr("Chunks:"), m_samples);
    auto* note = new QLabel(tr("As llama-imatrix computes it: consecutive chunks from the start "
                               "of the text, mean x² per input column of every linear. The "
                               "defaults are llama-imatrix's (-c 512, all chunks)."),
                            this);
    note->setWordWrap(true);
    note->setForegroundRole(QPalette::PlaceholderText);
    auto* box = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
    box->button(QDialogButtonBox::Ok)->setText(tr("Compute"));
    connect(box, &QDialogButtonBox::accepted, this, &QDialog::accept);
    connect(box, &QDialogButtonBox::rejected, this, &QDialog::reject);
    auto* v = new QVBoxLayout(this);
    v->addLayout(form);
    v->addWidget(note);
    v->addWidget(box);
    setSettings(initial);
}

ImatrixSettings ImatrixDialog::settings() const {
    ImatrixSettings s;
    s.seqLen = m_seqLen->value();
    s.samples = m_samples->value();
    s.textFile = m_text->text().trimmed();
    return s;
}

void ImatrixDialog::setSettings(const ImatrixSettings& s) {
    m_seqLen->setValue(s.seqLen);
    m_samples->setValue(s.samples);
    m_text->setText(s.textFile);
}

} // namespace lcw
