#pragma once
/// \file
/// TaskRunner: the one Qt adapter that runs long core jobs (anything taking an lcw::Progress&)
/// in the background, one at a time, and hands progress, results and errors back to the UI thread.
#include "core/common/error.h"
#include "core/common/progress.h"

#include <QFutureWatcher>
#include <QObject>
#include <QPointer>
#include <QString>
#include <QThreadPool>

#include <any>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <optional>

namespace lcw {

/// Lowers the calling thread's scheduling priority below the UI thread's (nice +8 on Linux;
/// nothing elsewhere), once per thread. Every background thread of the workbench calls it first
/// (TaskRunner jobs, cache reads, project writes, model releases), so work that keeps every core
/// busy does not delay the event loop: the kernel gives a core back to the UI thread as soon as
/// it has something to do.
void lowerThreadPriority();

/// Runs submitted jobs on a worker thread in submission order, one at a time (at the priority
/// lowerThreadPriority() sets).
///
/// A job is `std::any(Progress&)`: it reports through the Progress sink and returns its result
/// (copyable; wrap move-only results in std::shared_ptr). It signals cancellation by returning
/// (normally with Status::Cancelled) once Progress::report() returned false; exceptions thrown by
/// the job are caught on the worker and become jobFailed() with the exception's what(). The
/// worker runs the job inside a CancelScope (core/runtime/cancel.h) that follows cancel(): a
/// forward pass inside the job stops at its next block and throws lcw::Cancelled, which the
/// runner turns into jobCancelled() when the job lets it through.
///
/// All signals and callbacks are delivered on the thread that owns the runner (the UI thread).
/// Progress is throttled to at most ~20 updates per second. The destructor cancels the running
/// job, drops queued jobs and waits for the worker; callbacks are not invoked from the destructor.
class TaskRunner : public QObject {
    Q_OBJECT
public:
    using JobId = quint64;
    using Job = std::function<std::any(Progress&)>;

    /// Per-job callbacks, invoked on the UI thread. Each may be empty. They are skipped when the
    /// context object given to submit() has been destroyed.
    struct Callbacks {
        std::function<void(const std::any&)> done;
        std::function<void(const QString&)> failed;
        std::function<void()> cancelled;
    };

    explicit TaskRunner(QObject* parent = nullptr);
    ~TaskRunner() override;

    /// Queues a job; it starts as soon as the jobs before it are done. Returns its id.
    JobId submit(const QString& title, Job job, QObject* context = nullptr,
                 Callbacks callbacks = {});

    /// Typed convenience: `onDone` receives the job's return value.
    template <class R>
    JobId submit(const QString& title, std::function<R(Progress&)> job, QObject* context,
                 std::function<void(R)> onDone, std::function<void(const QString&)> onFailed = {},
                 std::function<void()> onCancelled = {}) {
        Callbacks cb;
        if (onDone)
            cb.done = [onDone](const std::any& v) {
                if (const R* r = std::any_cast<R>(&v)) onDone(*r);
            };
        cb.failed = std::move(onFailed);
        cb.cancelled = std::move(onCancelled);
        return submit(
            title, [job = std::move(job)](Progress& p) -> std::any { return job(p); }, context,
            std::move(cb));
    }

    /// Asks the running job to stop (its Progress sink returns false from now on). Queued jobs
    /// are kept.
    void cancel();
    /// Cancels the running job and removes every queued job (each gets jobCancelled()).
    void cancelAll();
    /// Cancels one job, running or queued. Returns false when the id is unknown or finished.
    bool cancel(JobId id);

    /// True while a job runs or waits.
    bool isBusy() const { return m_current.has_value() || !m_queue.empty(); }
    /// Jobs waiting behind the running one.
    int queuedCount() const { return int(m_queue.size()); }
    /// Id of the running job, 0 when none.
    JobId currentJob() const { return m_current ? m_current->id : 0; }
    /// True when the job is running or waiting.
    bool isPending(JobId id) const;
    /// Title of the running job, empty when none.
    QString currentTitle() const { return m_current ? m_current->title : QString(); }

signals:
    /// A job was submitted (it starts now or after the jobs before it).
    void jobQueued(lcw::TaskRunner::JobId id, const QString& title);
    /// A job left the queue and started on the worker.
    void jobStarted(lcw::TaskRunner::JobId id, const QString& title);
    /// Throttled progress of the running job; fraction in [0,1].
    void progressChanged(lcw::TaskRunner::JobId id, double fraction, const QString& stage);
    /// The job returned normally and was not cancelled.
    void jobFinished(lcw::TaskRunner::JobId id, const std::any& result);
    /// The job was cancelled (while queued, or it stopped after cancellation was requested, or
    /// it returned Status::Cancelled).
    void jobCancelled(lcw::TaskRunner::JobId id);
    /// The job threw; message is the exception's what().
    void jobFailed(lcw::TaskRunner::JobId id, const QString& message);
    /// Emitted when busy state changes (first job queued / last job done).
    void busyChanged(bool busy);

private:
    struct Entry {
        JobId id = 0;
        QString title;
        Job job;
        QPointer<QObject> context;
        bool hasContext = false;
        Callbacks callbacks;
        std::shared_ptr<std::atomic<bool>> cancelFlag;
    };
    /// What the worker hands back.
    struct Outcome {
        std::any value;
        QString error;
        bool failed = false;
    };

    void startNext();
    void onWorkerFinished();
    void deliverCancelled(Entry& e);
    void setBusy(bool busy);

    std::deque<Entry> m_queue;
    std::optional<Entry> m_current;
    /// Own pool (one thread): long jobs never starve QThreadPool::globalInstance().
    QThreadPool m_pool;
    QFutureWatcher<Outcome> m_watcher;
    JobId m_nextId = 1;
    bool m_busy = false;
    bool m_destroying = false;
};

} // namespace lcw

Q_DECLARE_METATYPE(std::any)
