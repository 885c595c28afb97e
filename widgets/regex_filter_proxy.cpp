#include "widgets/regex_filter_proxy.h"

namespace lcw {

void RegexFilterProxy::setFilterRegex(std::optional<Regex> re) {
    m_regex = std::move(re);
    invalidateFilter();
}

bool RegexFilterProxy::filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const {
    if (!m_regex) return true;
    const QAbstractItemModel* m = sourceModel();
    if (!m) return true;
    const int key = filterKeyColumn();
    const int first = key < 0 ? 0 : key;
    const int last = key < 0 ? m->columnCount(sourceParent) - 1 : key;
    for (int c = first; c <= last; ++c) {
        const QString text = m->index(sourceRow, c, sourceParent).data(filterRole()).toString();
        if (m_regex->search(text.toStdString())) return true;
    }
    return false;
}

} // namespace lcw
