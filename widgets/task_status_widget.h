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
/// above zero. Left of the bar, the job's title and stage, cut with "…" when the status bar is
/// too narrow (the tooltip holds the whole text); right of it, always in the same place and
/// never cut, the percentage and, once a job has run a few seconds, the time left (estimated
/// from the elapsed time and the fraction done). Cancel asks the running job to stop
/// (TaskRunner::cancel()).
class TaskStatusWidget : public QWidget {
    Q_OBJECT
public:
    explicit TaskStatusWidget(TaskRunner* runner, QWidget* parent = nullptr);

    /// The Cancel button (for tests and keyboard shortcuts).
    QToolButton* cancelButton() const { return m_cancel; }
    /// Title and stage (text() is the whole text; it is drawn elided to the label's width).
    QLabel* label() const { return m_label; }
    /// What label() shows at its current width (ends with "…" when cut).
    QString displayedText() const;
    /// Percentage and time left, e.g. "42% · 1m05s left" (never elided).
    QLabel* etaLabel() const { return m_etaLabel; }
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
    QLabel* m_etaLabel;
    QProgressBar* m_bar;
    QToolButton* m_cancel;
    QString m_title;
    QString m_stage;
    QString m_eta;
    double m_fraction = 0;
    QElapsedTimer m_started;
};

} // namespace lcw
