#include "widgets/export_panel_base.h"

#include "widgets/number_format.h"
#include "widgets/task_status_widget.h"

#include <QLabel>
#include <QProgressBar>
#include <QTableWidget>

#include <cmath>

namespace lcw {

ExportPanelBase::ExportPanelBase(Context context, QWidget* parent)
    : QWidget(parent), m_ctx(std::move(context)) {}

ExportPanelBase::~ExportPanelBase() = default;

void ExportPanelBase::cancel() {
    if (m_job && m_ctx.runner) m_ctx.runner->cancel(m_job);
}

void ExportPanelBase::fail(const QString& message) {
    m_lastError = message;
    m_summary->setText(message);
    emit failed(message);
}

bool ExportPanelBase::canStart() {
    m_lastError.clear();
    if (!m_ctx.model || !m_ctx.runner) {
        fail(tr("Open a model first."));
        return false;
    }
    if (m_job) {
        fail(tr("An export is already running."));
        return false;
    }
    return true;
}

void ExportPanelBase::connectProgress() {
    if (!m_ctx.runner) return;
    connect(m_ctx.runner, &TaskRunner::progressChanged, this,
            [this](TaskRunner::JobId id, double fraction, const QString& stage) {
                if (id != m_job) return;
                m_progress->setValue(int(std::lround(fraction * 1000)));
                m_progress->setFormat(stage.isEmpty() ? QStringLiteral("%p%")
                                                      : stage + QStringLiteral("  %p%"));
                if (!m_eta) return;
                const double left = TaskStatusWidget::estimateSecondsLeft(
                    fraction, double(m_started.nsecsElapsed()) * 1e-9);
                m_eta->setText(std::isnan(left) ? QString()
                                                : tr("%1 left").arg(formatDuration(left)));
            });
}

void ExportPanelBase::beginExport() {
    m_table->setRowCount(0);
    m_progress->setValue(0);
    m_summary->setText(tr("Exporting…"));
}

void ExportPanelBase::jobEnded(TaskRunner::JobId id) {
    if (m_job == id) m_job = 0;
    syncUi();
}

void ExportPanelBase::showStopped(const QString& text) {
    m_summary->setText(text);
    emit cancelled();
}

void ExportPanelBase::showCancelled(const QString& text) {
    m_progress->setValue(0);
    if (m_eta) m_eta->clear();
    showStopped(text);
}

} // namespace lcw
