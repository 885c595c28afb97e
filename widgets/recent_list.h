#pragma once
/// \file
/// RecentList: a most-recent-first list of paths (models, projects, recipes) kept in QSettings,
/// with the menu that reopens them.
#include <QObject>
#include <QPointer>
#include <QString>
#include <QStringList>

#include <functional>

class QMenu;

namespace lcw {

class RecentList : public QObject {
    Q_OBJECT
public:
    /// `settingsKey`: where the list lives in QSettings; `persist` false keeps it in memory only
    /// (tests). At most `maxItems` entries.
    RecentList(QString settingsKey, int maxItems, bool persist, QObject* parent = nullptr);

    /// Reads the stored list (when persisting).
    void load();
    /// Fills `menu` with one action per entry calling `open(path)` ("&1  path" numbered when
    /// `numbered`), and a "Clear Recent" action when `clearAction`; kept up to date. An empty
    /// list disables the menu unless it has the clear action.
    void attachMenu(QMenu* menu, std::function<void(const QString&)> open, bool numbered = false,
                    bool clearAction = false);

    const QStringList& items() const { return m_items; }
    QString newest() const { return m_items.isEmpty() ? QString() : m_items.front(); }
    /// Moves `path` to the top (adding it when new) and drops the oldest beyond the maximum.
    void add(const QString& path);
    /// Removes `path`; returns whether it was there.
    bool remove(const QString& path);
    void clear();

signals:
    void changed();

private:
    void store();
    void rebuildMenu();

    QString m_key;
    int m_max;
    bool m_persist;
    QStringList m_items;
    QPointer<QMenu> m_menu;
    std::function<void(const QString&)> m_open;
    bool m_numbered = false, m_clearAction = false;
};

} // namespace lcw
