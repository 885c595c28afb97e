#include "widgets/latency_probe.h"

#include <algorithm>

#include <time.h>

namespace lcw {

namespace {
/// CPU time of the calling thread (the UI thread: the probe's timer fires there).
qint64 threadCpuNs() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return qint64(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
} // namespace

EventLoopProbe::EventLoopProbe(int intervalMs, QObject* parent) : QObject(parent) {
    m_timer.setInterval(intervalMs);
    m_timer.setTimerType(Qt::PreciseTimer);
    connect(&m_timer, &QTimer::timeout, this, &EventLoopProbe::onTick);
}

void EventLoopProbe::start() {
    m_ticks = 0;
    m_maxGapNs = 0;
    m_maxGapEndNs = 0;
    m_maxBusyNs = 0;
    m_lastCpuNs = threadCpuNs();
    m_clock.start();
    m_lastNs = 0;
    m_timer.start();
}

void EventLoopProbe::stop() {
    onTick(); // a stall right before stop() counts too
    m_timer.stop();
}

void EventLoopProbe::onTick() {
    if (!m_clock.isValid()) return;
    const qint64 now = m_clock.nsecsElapsed();
    const qint64 cpu = threadCpuNs();
    if (m_lastNs >= 0) {
        if (now - m_lastNs > m_maxGapNs) {
            m_maxGapNs = now - m_lastNs;
            m_maxGapEndNs = now;
        }
        m_maxBusyNs = std::max(m_maxBusyNs, cpu - m_lastCpuNs);
    }
    m_lastNs = now;
    m_lastCpuNs = cpu;
    ++m_ticks;
}

} // namespace lcw
