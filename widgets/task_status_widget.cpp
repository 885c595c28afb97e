#include "widgets/task_status_widget.h"

#include "widgets/number_format.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QProgressBar>
#include <QStyle>
#include <QToolButton>

#include <cmath>
#include <limits>

namespace lcw {

TaskStatusWidget::TaskStatusWidget(TaskRunner* runner, QWidget* parent)
    : QWidget(parent), m_runner(runner) {
    auto* lay = new QHBoxLayout(this);
    lay->setContentsMargins(0, 0, 0, 0);
    lay->setSpacing(6);
    m_label = new QLabel(this);
    m_label->setMinimumWidth(160);
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
    lay->addWidget(m_label);
    lay->addWidget(m_bar);
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
    m_started.start();
    m_bar->setRange(0, 0); // indeterminate until a real fraction arrives
    m_cancel->setEnabled(true);
    setVisible(true);
    updateLabel();
}

void TaskStatusWidget::onProgress(TaskRunner::JobId, double fraction, const QString& stage) {
    if (fraction > 0.0) {
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

void TaskStatusWidget::updateLabel() {
    QString text = m_stage.isEmpty() ? m_title : m_title + QStringLiteral(" — ") + m_stage;
    if (!m_eta.isEmpty()) text += tr(" · %1 left").arg(m_eta);
    if (int q = m_runner->queuedCount(); q > 0) text += tr(" (+%1 queued)").arg(q);
    m_label->setText(text);
    m_label->setToolTip(text);
}

} // namespace lcw
