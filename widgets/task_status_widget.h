#pragma once
/// \file
/// Status-bar widget that shows what a TaskRunner is doing: title, stage, progress and Cancel.
#include "widgets/task_runner.h"

#include <QWidget>

class QLabel;
class QProgressBar;
class QToolButton;

namespace lcw {

/// Hidden while the runner is idle. The bar is indeterminate until the job reports a fraction
/// above zero. Cancel asks the running job to stop (TaskRunner::cancel()).
class TaskStatusWidget : public QWidget {
    Q_OBJECT
public:
    explicit TaskStatusWidget(TaskRunner* runner, QWidget* parent = nullptr);

    /// The Cancel button (for tests and keyboard shortcuts).
    QToolButton* cancelButton() const { return m_cancel; }
    QProgressBar* progressBar() const { return m_bar; }

private:
    void onStarted(TaskRunner::JobId id, const QString& title);
    void onProgress(TaskRunner::JobId id, double fraction, const QString& stage);
    void updateLabel();

    TaskRunner* m_runner;
    QLabel* m_label;
    QProgressBar* m_bar;
    QToolButton* m_cancel;
    QString m_title;
    QString m_stage;
};

} // namespace lcw
