#include "widgets/latency_probe.h"

#include <algorithm>

namespace lcw {

EventLoopProbe::EventLoopProbe(int intervalMs, QObject* parent) : QObject(parent) {
    m_timer.setInterval(intervalMs);
    m_timer.setTimerType(Qt::PreciseTimer);
    connect(&m_timer, &QTimer::timeout, this, &EventLoopProbe::onTick);
}

void EventLoopProbe::start() {
    m_ticks = 0;
    m_maxGapNs = 0;
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
    if (m_lastNs >= 0) m_maxGapNs = std::max(m_maxGapNs, now - m_lastNs);
    m_lastNs = now;
    ++m_ticks;
}

} // namespace lcw
