#pragma once
/// \file
/// Status-bar widget that shows what a TaskRunner is doing: title, stage, progress and Cancel.
#include "widgets/task_runner.h"

#include <QElapsedTimer>
#include <QWidget>

class QLabel;
class QProgressBar;
class QToolButton;

namespace lcw {

/// Hidden while the runner is idle. The bar is indeterminate until the job reports a fraction
/// above zero; once a job has run a few seconds the label adds the time left (estimated from
/// the elapsed time and the fraction done). Cancel asks the running job to stop
/// (TaskRunner::cancel()).
class TaskStatusWidget : public QWidget {
    Q_OBJECT
public:
    explicit TaskStatusWidget(TaskRunner* runner, QWidget* parent = nullptr);

    /// The Cancel button (for tests and keyboard shortcuts).
    QToolButton* cancelButton() const { return m_cancel; }
    QLabel* label() const { return m_label; }
    /// Time left of the running job, as shown ("" until it can be estimated).
    QString eta() const { return m_eta; }
    /// The estimate for a job `fraction` done after `elapsedSeconds` (NaN while too early to
    /// tell: under 2 s or 1 %).
    static double estimateSecondsLeft(double fraction, double elapsedSeconds);
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
    QString m_eta;
    QElapsedTimer m_started;
};

} // namespace lcw
