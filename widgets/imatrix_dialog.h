#pragma once
/// \file
/// Run ▸ Compute Importance Matrix…: the calibration text (the bundled one or a file), the
/// tokens per chunk and the number of chunks, with llama-imatrix's defaults (-c 512, every whole
/// chunk of the text). The computation itself runs through ImatrixManager on the TaskRunner.
#include "widgets/imatrix_manager.h"

#include <QDialog>

class QLineEdit;
class QSpinBox;

namespace lcw {

class ImatrixDialog : public QDialog {
    Q_OBJECT
public:
    ImatrixDialog(const ImatrixSettings& initial, QWidget* parent = nullptr);

    ImatrixSettings settings() const;
    void setSettings(const ImatrixSettings& s);

    QSpinBox* seqLenBox() const { return m_seqLen; }
    QSpinBox* samplesBox() const { return m_samples; }
    QLineEdit* textEdit() const { return m_text; }

private:
    QSpinBox* m_seqLen = nullptr;
    QSpinBox* m_samples = nullptr;
    QLineEdit* m_text = nullptr;
};

} // namespace lcw
