#include "widgets/shortcuts_dialog.h"

#include <QAction>
#include <QDialogButtonBox>
#include <QHash>
#include <QHeaderView>
#include <QLineEdit>
#include <QMainWindow>
#include <QMenu>
#include <QMenuBar>
#include <QSet>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>

namespace lcw {

namespace {

QString plain(QString text) {
    // "&Open" → "Open", "Save && Quit" → "Save & Quit"; drop a trailing "\tShortcut".
    const int tab = int(text.indexOf(QLatin1Char('\t')));
    if (tab >= 0) text.truncate(tab);
    text.replace(QStringLiteral("&&"), QStringLiteral("\x01"));
    text.remove(QLatin1Char('&'));
    text.replace(QStringLiteral("\x01"), QStringLiteral("&"));
    return text;
}

void walkMenu(QMenu* menu, const QString& path, QList<QPair<QAction*, QString>>& out) {
    for (QAction* a : menu->actions()) {
        if (QMenu* sub = a->menu())
            walkMenu(sub, path + QStringLiteral(" ▸ ") + plain(sub->title()), out);
        else if (!a->isSeparator())
            out.append({a, path});
    }
}

} // namespace

QList<ShortcutEntry> collectShortcuts(QWidget* window) {
    QList<ShortcutEntry> out;
    QSet<QAction*> seen;
    auto add = [&](QAction* a, const QString& where) {
        if (seen.contains(a)) return;
        seen.insert(a);
        const QList<QKeySequence> keys = a->shortcuts();
        QStringList texts;
        for (const QKeySequence& k : keys)
            if (!k.isEmpty()) texts << k.toString(QKeySequence::NativeText);
        if (texts.isEmpty()) return;
        out.append({plain(a->text()), where, texts.join(QStringLiteral(", "))});
    };
    // Menu order first: what users see in the menus.
    if (auto* mw = qobject_cast<QMainWindow*>(window); mw && mw->menuWidget()) {
        if (auto* bar = qobject_cast<QMenuBar*>(mw->menuWidget())) {
            QList<QPair<QAction*, QString>> inMenus;
            for (QAction* a : bar->actions())
                if (QMenu* m = a->menu()) walkMenu(m, plain(m->title()), inMenus);
            for (const auto& [a, where] : std::as_const(inMenus)) add(a, where);
        }
    }
    // Then every other action in the window (window-wide shortcuts, table actions).
    QList<ShortcutEntry> rest;
    const qsizetype menuCount = out.size();
    for (QAction* a : window->findChildren<QAction*>()) {
        if (seen.contains(a)) continue;
        QString where;
        if (auto* w = qobject_cast<QWidget*>(a->parent()); w && w != window) {
            where = w->accessibleName();
            if (where.isEmpty()) where = w->windowTitle();
            if (where.isEmpty()) where = w->objectName();
        }
        add(a, where.isEmpty() ? QObject::tr("Window") : where);
    }
    std::sort(out.begin() + menuCount, out.end(),
              [](const ShortcutEntry& x, const ShortcutEntry& y) {
                  return QString::localeAwareCompare(x.action, y.action) < 0;
              });
    return out;
}

ShortcutsDialog::ShortcutsDialog(QWidget* window, QWidget* parent)
    : QDialog(parent), m_entries(collectShortcuts(window)) {
    setWindowTitle(tr("Keyboard Shortcuts"));
    resize(560, 620);
    auto* lay = new QVBoxLayout(this);
    m_filter = new QLineEdit(this);
    m_filter->setObjectName(QStringLiteral("shortcutFilter"));
    m_filter->setPlaceholderText(tr("Search actions and keys…"));
    m_filter->setClearButtonEnabled(true);
    lay->addWidget(m_filter);
    m_table = new QTableWidget(int(m_entries.size()), 3, this);
    m_table->setObjectName(QStringLiteral("shortcutTable"));
    m_table->setHorizontalHeaderLabels({tr("Action"), tr("Shortcut"), tr("Where")});
    m_table->verticalHeader()->setVisible(false);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setAlternatingRowColors(true);
    m_table->horizontalHeader()->setStretchLastSection(true);
    for (int r = 0; r < int(m_entries.size()); ++r) {
        const ShortcutEntry& e = m_entries[r];
        m_table->setItem(r, 0, new QTableWidgetItem(e.action));
        m_table->setItem(r, 1, new QTableWidgetItem(e.shortcut));
        m_table->setItem(r, 2, new QTableWidgetItem(e.where));
    }
    m_table->resizeColumnsToContents();
    lay->addWidget(m_table, 1);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close, this);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    lay->addWidget(buttons);
    connect(m_filter, &QLineEdit::textChanged, this, &ShortcutsDialog::setFilter);
}

void ShortcutsDialog::setFilter(const QString& text) {
    if (m_filter->text() != text) {
        m_filter->setText(text); // re-enters through textChanged
        return;
    }
    const QString f = text.trimmed();
    for (int r = 0; r < m_table->rowCount(); ++r) {
        bool match = f.isEmpty();
        for (int c = 0; c < 3 && !match; ++c)
            match = m_table->item(r, c)->text().contains(f, Qt::CaseInsensitive);
        m_table->setRowHidden(r, !match);
    }
}

int ShortcutsDialog::visibleCount() const {
    int n = 0;
    for (int r = 0; r < m_table->rowCount(); ++r) n += !m_table->isRowHidden(r);
    return n;
}

QString ShortcutsDialog::shortcutOf(const QString& action) const {
    for (int r = 0; r < m_table->rowCount(); ++r)
        if (!m_table->isRowHidden(r) && m_table->item(r, 0)->text() == action)
            return m_table->item(r, 1)->text();
    return {};
}

} // namespace lcw
