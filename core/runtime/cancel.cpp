#include "core/runtime/cancel.h"

#include <omp.h>

namespace lcw {

namespace {
thread_local const CancelScope* t_scope = nullptr;
} // namespace

CancelScope::CancelScope(std::function<bool()> keepGoing)
    : m_keepGoing(std::move(keepGoing)), m_outer(t_scope), m_previous(t_scope),
      m_level(omp_get_level()) {
    t_scope = this;
}

CancelScope::CancelScope(const CancelScope* outer, std::function<bool()> keepGoing)
    : m_keepGoing(std::move(keepGoing)), m_outer(outer), m_previous(t_scope),
      m_level(omp_get_level()) {
    t_scope = this;
}

CancelScope::~CancelScope() {
    t_scope = m_previous;
}

const CancelScope* CancelScope::current() {
    return t_scope;
}

bool CancelScope::keepGoing() const {
    for (const CancelScope* s = this; s; s = s->m_outer)
        if (s->m_keepGoing && !s->m_keepGoing()) return false;
    return true;
}

void checkCancel() {
    const CancelScope* s = t_scope;
    if (!s || omp_get_level() != s->m_level) return;
    if (!s->keepGoing()) throw Cancelled();
}

bool keepGoing() {
    const CancelScope* s = t_scope;
    return !s || s->keepGoing();
}

} // namespace lcw
