#include "widgets/recent_list.h"

#include <QAction>
#include <QDir>
#include <QMenu>
#include <QSettings>

namespace lcw {

RecentList::RecentList(QString settingsKey, int maxItems, bool persist, QObject* parent)
    : QObject(parent), m_key(std::move(settingsKey)), m_max(maxItems), m_persist(persist) {}

void RecentList::load() {
    if (!m_persist) return;
    m_items = QSettings().value(m_key).toStringList();
    m_items.removeAll(QString());
    while (m_items.size() > m_max) m_items.removeLast();
    rebuildMenu();
    emit changed();
}

void RecentList::attachMenu(QMenu* menu, std::function<void(const QString&)> open, bool numbered,
                            bool clearAction) {
    m_menu = menu;
    m_open = std::move(open);
    m_numbered = numbered;
    m_clearAction = clearAction;
    rebuildMenu();
}

void RecentList::add(const QString& path) {
    if (path.isEmpty()) return;
    m_items.removeAll(path);
    m_items.prepend(path);
    while (m_items.size() > m_max) m_items.removeLast();
    store();
}

bool RecentList::remove(const QString& path) {
    if (m_items.removeAll(path) == 0) return false;
    store();
    return true;
}

void RecentList::clear() {
    m_items.clear();
    store();
}

void RecentList::store() {
    if (m_persist) QSettings().setValue(m_key, m_items);
    rebuildMenu();
    emit changed();
}

void RecentList::rebuildMenu() {
    if (!m_menu) return;
    m_menu->clear();
    for (int i = 0; i < m_items.size(); ++i) {
        const QString path = m_items[i];
        const QString shown = QDir::toNativeSeparators(path);
        const QString label =
            m_numbered ? QStringLiteral("&%1  %2").arg((i + 1) % 10).arg(shown) : shown;
        QAction* a = m_menu->addAction(label, this, [this, path] {
            if (m_open) m_open(path);
        });
        a->setToolTip(path);
    }
    if (m_clearAction) {
        if (!m_items.isEmpty()) m_menu->addSeparator();
        QAction* c = m_menu->addAction(tr("Clear Recent"), this, &RecentList::clear);
        c->setEnabled(!m_items.isEmpty());
    }
    m_menu->setEnabled(m_clearAction || !m_items.isEmpty());
}

} // namespace lcw
