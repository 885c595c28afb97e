#pragma once
/// \file
/// What the Export dialog's pages share: the context they export from (model, recipe editor,
/// importance matrix, task runner), and one export job at a time on the TaskRunner with a
/// progress bar (and time left where the page shows it), Cancel, a summary line and the
/// finished / cancelled / failed signals. A page builds its own controls, sets the pointers
/// below, and hands its job to submitExport().
#include "core/compress/recipe.h"
#include "core/model/model.h"
#include "widgets/task_runner.h"

#include <QElapsedTimer>
#include <QWidget>

#include <functional>
#include <memory>

class QLabel;
class QProgressBar;
class QPushButton;
class QTableWidget;

namespace lcw {

class ImatrixManager;

class ExportPanelBase : public QWidget {
    Q_OBJECT
public:
    /// What the pages export from (the main window's state).
    struct Context {
        std::shared_ptr<const Model> model;
        QString modelPath;
        std::function<compress::Recipe()> recipe; ///< the recipe editor's
        const ImatrixManager* imatrix = nullptr;  ///< the opened / computed imatrix
        TaskRunner* runner = nullptr;
    };

    /// A page cancels its running export in its own destructor (cancelling can call back into
    /// syncUi(), which must still be the page's).
    ~ExportPanelBase() override;

    /// Cancels the running export (no file is left).
    void cancel();
    bool isRunning() const { return m_job != 0; }
    QString lastError() const { return m_lastError; }

    QTableWidget* reportTable() const { return m_table; }
    QProgressBar* progressBar() const { return m_progress; }
    QLabel* summaryLabel() const { return m_summary; }
    QPushButton* startButton() const { return m_start; }

signals:
    void finished();
    void cancelled();
    void failed(const QString& message);
    void logMessage(const QString& text);

protected:
    ExportPanelBase(Context context, QWidget* parent);

    /// Enables and shows the page's controls for the current state.
    virtual void syncUi() = 0;
    /// Shows `message` as the summary and emits failed().
    void fail(const QString& message);
    /// Clears lastError(); false (after fail()) without a model or runner, or while an export
    /// runs.
    bool canStart();
    /// Moves the progress bar (and the time left, when the page has m_eta) with the job's
    /// progress.
    void connectProgress();
    /// Clears the report table and the progress bar and says "Exporting…".
    void beginExport();

    /// Submits `job`. Its result goes to `show` when `succeeded(result)` holds; a job that
    /// returns without success, or is cancelled, shows `cancelledText` and emits cancelled().
    template <class R>
    void submitExport(const QString& title, std::function<R(Progress&)> job,
                      const QString& cancelledText, std::function<bool(const R&)> succeeded,
                      std::function<void(R)> show) {
        auto self = std::make_shared<TaskRunner::JobId>(0);
        *self = m_ctx.runner->submit<R>(
            title, std::move(job), this,
            [this, self, cancelledText, succeeded, show](R r) {
                jobEnded(*self);
                if (!succeeded(r)) {
                    showStopped(cancelledText);
                    return;
                }
                show(r);
                emit finished();
            },
            [this, self](const QString& message) {
                jobEnded(*self);
                fail(message);
            },
            [this, self, cancelledText] {
                jobEnded(*self);
                showCancelled(cancelledText);
            });
        m_job = *self;
        syncUi();
    }

    Context m_ctx;
    TaskRunner::JobId m_job = 0;
    QElapsedTimer m_started;
    QString m_lastError;
    // Set by the page.
    QPushButton* m_start = nullptr;
    QPushButton* m_cancel = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_eta = nullptr; ///< optional: time left
    QLabel* m_summary = nullptr;
    QTableWidget* m_table = nullptr;

private:
    void jobEnded(TaskRunner::JobId id);
    /// A job that returned without a result: `text` as the summary, cancelled().
    void showStopped(const QString& text);
    /// A cancelled job: the progress bar (and time left) reset, then as showStopped().
    void showCancelled(const QString& text);
};

} // namespace lcw
