#include "widgets/log_panel.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QDateTime>
#include <QFontDatabase>
#include <QMenu>
#include <QPlainTextEdit>
#include <QScrollBar>
#include <QTextCursor>
#include <QVBoxLayout>

namespace lcw {

LogPanel::LogPanel(QWidget* parent) : QWidget(parent), m_view(new QPlainTextEdit(this)) {
    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(0, 0, 0, 0);
    lay->addWidget(m_view);
    m_view->setReadOnly(true);
    m_view->setUndoRedoEnabled(false);
    m_view->setMaximumBlockCount(kMaxLines);
    m_view->setLineWrapMode(QPlainTextEdit::NoWrap);
    m_view->setTextInteractionFlags(Qt::TextSelectableByMouse | Qt::TextSelectableByKeyboard);
    m_view->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
    m_view->setPlaceholderText(tr("Messages about models, jobs and results appear here."));
    m_view->setContextMenuPolicy(Qt::CustomContextMenu);
    connect(m_view, &QWidget::customContextMenuRequested, this, [this](const QPoint& pos) {
        QMenu* menu = m_view->createStandardContextMenu(pos);
        menu->addSeparator();
        menu->addAction(tr("Copy All"), this, [this] {
            QApplication::clipboard()->setText(m_lines.join(QLatin1Char('\n')));
        });
        menu->addAction(tr("Clear Log"), this, &LogPanel::clear);
        menu->exec(m_view->mapToGlobal(pos));
        delete menu;
    });
}

void LogPanel::append(Level level, const QString& message) {
    const QString time = QDateTime::currentDateTime().toString(QStringLiteral("HH:mm:ss"));
    const QString tag = level == Level::Error     ? QStringLiteral("error: ")
                        : level == Level::Warning ? QStringLiteral("warning: ")
                                                  : QString();
    QString body = message.trimmed();
    body.replace(QLatin1Char('\n'), QStringLiteral("\n          "));
    const QString line = QStringLiteral("%1  %2%3").arg(time, tag, body);
    m_lines << line;
    while (m_lines.size() > kMaxLines) m_lines.removeFirst();

    // Stay at the bottom only when the user has not scrolled up to read.
    QScrollBar* bar = m_view->verticalScrollBar();
    const bool atEnd = bar->value() >= bar->maximum() - 2;
    QTextCharFormat timeFmt;
    QColor dim = palette().color(QPalette::Text);
    dim.setAlpha(130);
    timeFmt.setForeground(dim);
    QTextCharFormat textFmt;
    if (level == Level::Error) textFmt.setForeground(QColor(0xD9, 0x4A, 0x4A));
    if (level == Level::Warning) textFmt.setForeground(QColor(0xC8, 0x8A, 0x12));
    QTextCursor cursor(m_view->document());
    cursor.movePosition(QTextCursor::End);
    if (!m_view->document()->isEmpty()) cursor.insertBlock();
    cursor.insertText(time + QStringLiteral("  "), timeFmt);
    cursor.insertText(tag + body, textFmt);
    if (atEnd) bar->setValue(bar->maximum());
    emit appended(level, message);
}

void LogPanel::clear() {
    m_lines.clear();
    m_view->clear();
}

QString LogPanel::copy() {
    const QString selected = m_view->textCursor().selectedText();
    const QString text = selected.isEmpty() ? m_lines.join(QLatin1Char('\n'))
                                            : QString(selected).replace(QChar::ParagraphSeparator,
                                                                        QLatin1Char('\n'));
    QApplication::clipboard()->setText(text);
    return text;
}

} // namespace lcw
