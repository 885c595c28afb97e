#pragma once
/// \file
/// Help ▸ Keyboard Shortcuts: every QAction with a shortcut in a window (gathered from the
/// actions themselves, so the list stays true), with the menu it lives in, searchable.
#include <QDialog>

class QLineEdit;
class QTableWidget;

namespace lcw {

struct ShortcutEntry {
    QString action;   ///< the action's text without mnemonics ("Open Model File…")
    QString where;    ///< menu path ("File"), or the widget it belongs to
    QString shortcut; ///< all its shortcuts, native text, separated by ", "
};

/// The actions with shortcuts among `window`'s descendants, in menu order first, then the rest
/// by name.
QList<ShortcutEntry> collectShortcuts(QWidget* window);

class ShortcutsDialog : public QDialog {
    Q_OBJECT
public:
    explicit ShortcutsDialog(QWidget* window, QWidget* parent = nullptr);

    const QList<ShortcutEntry>& entries() const { return m_entries; }
    void setFilter(const QString& text);
    int visibleCount() const;
    /// The shortcut shown for the action named `action` (empty when none / hidden).
    QString shortcutOf(const QString& action) const;

private:
    QList<ShortcutEntry> m_entries;
    QLineEdit* m_filter;
    QTableWidget* m_table;
};

} // namespace lcw
