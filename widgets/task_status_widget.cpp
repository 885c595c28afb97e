#include "widgets/task_status_widget.h"

#include "widgets/number_format.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QPainter>
#include <QProgressBar>
#include <QStyle>
#include <QToolButton>

#include <algorithm>
#include <cmath>
#include <limits>

namespace lcw {

namespace {

/// A label that draws its text elided to its width: its size hint is the whole text (up to 60
/// characters), its minimum a few characters, so a narrow status bar cuts it instead of
/// clipping it or pushing the bar and Cancel out of view.
class ElidedLabel final : public QLabel {
public:
    using QLabel::QLabel;
    QString displayed() const {
        return fontMetrics().elidedText(text(), Qt::ElideRight, contentsRect().width());
    }
    QSize sizeHint() const override {
        const QFontMetrics fm = fontMetrics();
        const int w = std::min(fm.horizontalAdvance(text()), fm.averageCharWidth() * 60);
        return {w + 2 * margin() + 2, QLabel::sizeHint().height()};
    }
    QSize minimumSizeHint() const override {
        return {fontMetrics().averageCharWidth() * 8, QLabel::minimumSizeHint().height()};
    }

protected:
    void paintEvent(QPaintEvent*) override {
        QPainter p(this);
        p.setPen(palette().color(foregroundRole()));
        p.drawText(contentsRect(), int(Qt::AlignLeft | Qt::AlignVCenter), displayed());
    }
};

} // namespace

TaskStatusWidget::TaskStatusWidget(TaskRunner* runner, QWidget* parent)
    : QWidget(parent), m_runner(runner) {
    auto* lay = new QHBoxLayout(this);
    lay->setContentsMargins(0, 0, 0, 0);
    lay->setSpacing(6);
    m_label = new ElidedLabel(this);
    m_label->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Preferred);
    m_etaLabel = new QLabel(this);
    // Wide enough for "100% · 59m59s left": the numbers stay in place as they change.
    m_etaLabel->setMinimumWidth(m_etaLabel->fontMetrics().horizontalAdvance(
        tr("%1% · %2 left").arg(100).arg(QStringLiteral("59m59s"))));
    m_bar = new QProgressBar(this);
    m_bar->setFixedWidth(180);
    m_bar->setMaximumHeight(16);
    m_bar->setTextVisible(false);
    m_cancel = new QToolButton(this);
    m_cancel->setText(tr("Cancel"));
    m_cancel->setToolTip(tr("Stop the running job"));
    m_cancel->setIcon(style()->standardIcon(QStyle::SP_DialogCancelButton));
    m_cancel->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
    m_cancel->setAutoRaise(true);
    lay->addWidget(m_label, 1);
    lay->addWidget(m_bar);
    lay->addWidget(m_etaLabel);
    lay->addWidget(m_cancel);
    setVisible(false);

    connect(m_cancel, &QToolButton::clicked, this, [this] {
        m_runner->cancel();
        m_stage = tr("cancelling…");
        m_cancel->setEnabled(false);
        updateLabel();
    });
    connect(runner, &TaskRunner::jobStarted, this, &TaskStatusWidget::onStarted);
    connect(runner, &TaskRunner::progressChanged, this, &TaskStatusWidget::onProgress);
    connect(runner, &TaskRunner::busyChanged, this, [this](bool busy) { setVisible(busy); });
}

void TaskStatusWidget::onStarted(TaskRunner::JobId, const QString& title) {
    m_title = title;
    m_stage.clear();
    m_eta.clear();
    m_fraction = 0;
    m_started.start();
    m_bar->setRange(0, 0); // indeterminate until a real fraction arrives
    m_cancel->setEnabled(true);
    setVisible(true);
    updateLabel();
}

void TaskStatusWidget::onProgress(TaskRunner::JobId, double fraction, const QString& stage) {
    if (fraction > 0.0) {
        m_fraction = fraction;
        m_bar->setRange(0, 1000);
        m_bar->setValue(int(fraction * 1000.0 + 0.5));
    }
    if (m_cancel->isEnabled()) m_stage = stage;
    const double left = estimateSecondsLeft(fraction, double(m_started.nsecsElapsed()) * 1e-9);
    m_eta = std::isnan(left) || !m_cancel->isEnabled() ? QString() : formatDuration(left);
    updateLabel();
}

double TaskStatusWidget::estimateSecondsLeft(double fraction, double elapsedSeconds) {
    if (!(fraction >= 0.01) || !(elapsedSeconds >= 2.0) || fraction >= 1.0)
        return std::numeric_limits<double>::quiet_NaN();
    return elapsedSeconds * (1.0 - fraction) / fraction;
}

QString TaskStatusWidget::displayedText() const {
    return static_cast<const ElidedLabel*>(m_label)->displayed();
}

void TaskStatusWidget::updateLabel() {
    QString text = m_stage.isEmpty() ? m_title : m_title + QStringLiteral(" — ") + m_stage;
    if (int q = m_runner->queuedCount(); q > 0) text += tr(" (+%1 queued)").arg(q);
    QString numbers;
    if (m_fraction > 0.0) numbers = QStringLiteral("%1%").arg(int(m_fraction * 100.0));
    if (!m_eta.isEmpty()) numbers += tr(" · %1 left").arg(m_eta);
    m_label->setText(text);
    m_label->updateGeometry();
    m_label->update();
    m_etaLabel->setText(numbers);
    const QString tip = numbers.isEmpty() ? text : text + QStringLiteral("\n") + numbers;
    m_label->setToolTip(tip);
    m_etaLabel->setToolTip(tip);
}

} // namespace lcw
