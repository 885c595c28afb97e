#pragma once
/// \file
/// A one-line label for paths and messages of any length: it draws its text elided to the width
/// it gets, asks for almost no width itself (a long text never widens its panel or dock) and
/// shows the whole text as its tooltip while elided.
#include <QLabel>

namespace lcw {

class ElidedLabel : public QLabel {
    Q_OBJECT
public:
    explicit ElidedLabel(QWidget* parent = nullptr, Qt::TextElideMode mode = Qt::ElideMiddle);

    /// True when the text does not fit and is drawn elided.
    bool isElided() const;
    /// The text as drawn now (elided to the current width).
    QString displayedText() const;
    QSize minimumSizeHint() const override;

protected:
    void paintEvent(QPaintEvent* event) override;
    bool event(QEvent* event) override;

private:
    Qt::TextElideMode m_mode;
};

} // namespace lcw
