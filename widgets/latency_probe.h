#pragma once
/// \file
/// EventLoopProbe: measures how long the UI thread's event loop stays blocked. A precise timer
/// fires every interval; the largest gap between two consecutive ticks is the worst stall
/// (plus the interval itself) any interaction caused while the probe ran. Besides this wall-clock
/// gap it records the UI thread's own CPU time between ticks: on a machine whose cores are busy
/// with other processes the wall gap also counts time the thread was runnable but not running,
/// while the CPU time is only the work the UI thread itself did without returning to the loop.
#include <QElapsedTimer>
#include <QObject>
#include <QTimer>

namespace lcw {

class EventLoopProbe : public QObject {
    Q_OBJECT
public:
    explicit EventLoopProbe(int intervalMs = 10, QObject* parent = nullptr);

    /// Starts (or restarts) measuring; clears the previous maximum.
    void start();
    void stop();
    bool isRunning() const { return m_timer.isActive(); }
    /// Largest time between two ticks since start(), in milliseconds (>= the interval once two
    /// ticks happened; 0 before).
    double maxGapMs() const { return m_maxGapNs * 1e-6; }
    /// When the largest gap ended, in milliseconds since start() (to tell which interaction
    /// caused it).
    double maxGapEndMs() const { return m_maxGapEndNs * 1e-6; }
    /// Milliseconds since start().
    double elapsedMs() const { return m_clock.isValid() ? m_clock.nsecsElapsed() * 1e-6 : 0.0; }
    /// Largest UI-thread CPU time between two ticks since start(), in milliseconds.
    double maxBusyMs() const { return m_maxBusyNs * 1e-6; }
    /// Ticks seen since start().
    int ticks() const { return m_ticks; }
    int intervalMs() const { return m_timer.interval(); }

private:
    void onTick();

    QTimer m_timer;
    QElapsedTimer m_clock;
    qint64 m_lastNs = -1;
    qint64 m_maxGapNs = 0;
    qint64 m_maxGapEndNs = 0;
    qint64 m_lastCpuNs = 0;
    qint64 m_maxBusyNs = 0;
    int m_ticks = 0;
};

} // namespace lcw
