#pragma once
/// \file
/// LogPanel: the timestamped, copyable record of what the application did (models loaded, jobs
/// started, finished, cancelled or failed, results).
#include <QStringList>
#include <QWidget>

class QPlainTextEdit;

namespace lcw {

class LogPanel : public QWidget {
    Q_OBJECT
public:
    enum class Level { Info, Warning, Error };
    /// Oldest lines are dropped beyond this many.
    static constexpr int kMaxLines = 5000;

    explicit LogPanel(QWidget* parent = nullptr);

    /// Appends "hh:mm:ss  message" (multi-line messages are indented under the first line).
    void append(Level level, const QString& message);
    void info(const QString& message) { append(Level::Info, message); }
    void warning(const QString& message) { append(Level::Warning, message); }
    void error(const QString& message) { append(Level::Error, message); }
    void clear();

    /// Lines as plain text ("12:03:04  Loaded stories260K …", errors marked "error:").
    QStringList lines() const { return m_lines; }
    int count() const { return int(m_lines.size()); }
    /// Copies the selection (or everything when nothing is selected) and returns the text.
    QString copy();

    QPlainTextEdit* view() const { return m_view; }

signals:
    void appended(lcw::LogPanel::Level level, const QString& message);

private:
    QPlainTextEdit* m_view;
    QStringList m_lines;
};

} // namespace lcw
