#include "widgets/task_runner.h"

#include "core/runtime/cancel.h"

#include <QtConcurrent/QtConcurrentRun>

#include <cerrno>
#include <chrono>
#include <exception>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace lcw {

namespace {

/// The sink handed to a job on the worker thread. It answers cancellation from an atomic flag
/// and forwards at most ~20 updates per second to the runner's thread as queued calls, so a job
/// that reports per row cannot flood the UI event queue.
class WorkerProgress final : public Progress {
public:
    WorkerProgress(TaskRunner* runner, TaskRunner::JobId id,
                   std::shared_ptr<std::atomic<bool>> cancelFlag)
        : m_runner(runner), m_id(id), m_cancel(std::move(cancelFlag)) {}

    bool report(double fraction, std::string_view stage) override {
        if (m_cancel->load(std::memory_order_relaxed)) return false;
        using Clock = std::chrono::steady_clock;
        const auto now = Clock::now();
        const bool first = !m_sentAny;
        const bool last = fraction >= 1.0;
        if (first || last || now - m_lastSent >= std::chrono::milliseconds(50)) {
            m_sentAny = true;
            m_lastSent = now;
            const double f = fraction < 0.0 ? 0.0 : (fraction > 1.0 ? 1.0 : fraction);
            const QString s = QString::fromUtf8(stage.data(), qsizetype(stage.size()));
            TaskRunner* runner = m_runner;
            const TaskRunner::JobId id = m_id;
            // Queued to the runner's thread; the runner outlives the worker (its destructor
            // waits), and pending calls die with the runner object.
            QMetaObject::invokeMethod(
                runner,
                [runner, id, f, s] {
                    if (runner->currentJob() == id) emit runner->progressChanged(id, f, s);
                },
                Qt::QueuedConnection);
        }
        return !m_cancel->load(std::memory_order_relaxed);
    }
    bool stopRequested() override { return m_cancel->load(std::memory_order_relaxed); }

private:
    TaskRunner* m_runner;
    TaskRunner::JobId m_id;
    std::shared_ptr<std::atomic<bool>> m_cancel;
    std::chrono::steady_clock::time_point m_lastSent{};
    bool m_sentAny = false;
};

} // namespace

void lowerThreadPriority() {
#ifdef __linux__
    // The nice value belongs to each thread on Linux, and threads inherit it from the thread
    // that creates them (OpenMP's workers from the job's thread).
    constexpr int kBackgroundNice = 8;
    thread_local bool lowered = false;
    if (lowered) return;
    lowered = true;
    const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
    errno = 0;
    const int current = ::getpriority(PRIO_PROCESS, tid);
    if (errno == 0 && current < kBackgroundNice) ::setpriority(PRIO_PROCESS, tid, kBackgroundNice);
#endif
}

TaskRunner::TaskRunner(QObject* parent) : QObject(parent) {
    qRegisterMetaType<std::any>("std::any");
    qRegisterMetaType<JobId>("lcw::TaskRunner::JobId");
    m_pool.setMaxThreadCount(1);
    connect(&m_watcher, &QFutureWatcher<Outcome>::finished, this, &TaskRunner::onWorkerFinished);
}

TaskRunner::~TaskRunner() {
    m_destroying = true;
    disconnect(&m_watcher, nullptr, this, nullptr);
    m_queue.clear();
    if (m_current) {
        m_current->cancelFlag->store(true);
        // The job sees cancellation at its next report(); jobs report often, so this is short.
        m_watcher.waitForFinished();
        m_current.reset();
    }
    m_pool.waitForDone();
}

TaskRunner::JobId TaskRunner::submit(const QString& title, Job job, QObject* context,
                                     Callbacks callbacks) {
    Entry e;
    e.id = m_nextId++;
    e.title = title;
    e.job = std::move(job);
    e.context = context;
    e.hasContext = context != nullptr;
    e.callbacks = std::move(callbacks);
    e.cancelFlag = std::make_shared<std::atomic<bool>>(false);
    const JobId id = e.id;
    m_queue.push_back(std::move(e));
    emit jobQueued(id, title);
    setBusy(true);
    if (!m_current) startNext();
    return id;
}

bool TaskRunner::isPending(JobId id) const {
    if (m_current && m_current->id == id) return true;
    for (const Entry& e : m_queue)
        if (e.id == id) return true;
    return false;
}

void TaskRunner::cancel() {
    if (m_current) m_current->cancelFlag->store(true);
}

void TaskRunner::cancelAll() {
    cancel();
    std::deque<Entry> dropped;
    dropped.swap(m_queue);
    for (auto& e : dropped) deliverCancelled(e);
    if (!m_current) setBusy(false);
}

bool TaskRunner::cancel(JobId id) {
    if (m_current && m_current->id == id) {
        m_current->cancelFlag->store(true);
        return true;
    }
    for (auto it = m_queue.begin(); it != m_queue.end(); ++it) {
        if (it->id == id) {
            Entry e = std::move(*it);
            m_queue.erase(it);
            deliverCancelled(e);
            if (!isBusy()) setBusy(false);
            return true;
        }
    }
    return false;
}

void TaskRunner::startNext() {
    if (m_current || m_queue.empty() || m_destroying) return;
    m_current = std::move(m_queue.front());
    m_queue.pop_front();
    Entry& e = *m_current;
    emit jobStarted(e.id, e.title);
    // The worker gets its own copies: the entry may be moved while the job runs.
    Job job = e.job;
    auto flag = e.cancelFlag;
    const JobId id = e.id;
    m_watcher.setFuture(QtConcurrent::run(&m_pool, [this, job = std::move(job), flag, id] {
        lowerThreadPriority();
        Outcome out;
        WorkerProgress progress(this, id, flag);
        try {
            // Forward passes inside the job stop at the next block once cancelled, not only at
            // the job's next report().
            const CancelScope scope([&flag] { return !flag->load(std::memory_order_relaxed); });
            out.value = job(progress);
        } catch (const Cancelled&) {
            out.value = Status::Cancelled;
        } catch (const std::exception& ex) {
            out.failed = true;
            out.error = QString::fromUtf8(ex.what());
        } catch (...) {
            out.failed = true;
            out.error = QStringLiteral("unknown error (non-standard exception)");
        }
        return out;
    }));
}

void TaskRunner::onWorkerFinished() {
    if (!m_current) return;
    Entry e = std::move(*m_current);
    m_current.reset();
    Outcome out = m_watcher.future().result();
    const bool contextAlive = !e.hasContext || !e.context.isNull();

    const Status* st = std::any_cast<Status>(&out.value);
    if (out.failed) {
        emit jobFailed(e.id, out.error);
        if (contextAlive && e.callbacks.failed) e.callbacks.failed(out.error);
    } else if (e.cancelFlag->load() || (st && *st == Status::Cancelled)) {
        deliverCancelled(e);
    } else {
        emit jobFinished(e.id, out.value);
        if (contextAlive && e.callbacks.done) e.callbacks.done(out.value);
    }
    // A callback may have submitted more work (which then already started).
    startNext();
    if (!isBusy()) setBusy(false);
}

void TaskRunner::deliverCancelled(Entry& e) {
    emit jobCancelled(e.id);
    const bool contextAlive = !e.hasContext || !e.context.isNull();
    if (contextAlive && e.callbacks.cancelled) e.callbacks.cancelled();
}

void TaskRunner::setBusy(bool busy) {
    if (busy == m_busy) return;
    m_busy = busy;
    emit busyChanged(busy);
}

} // namespace lcw
