#pragma once
/// \file
/// The Study dock: opens the report of `lcw-cli study` (a folder with report.html, study.json,
/// study.tsv and the SVG plots; core/eval/study_report.h) and shows it — the conclusions, the
/// per-type tables and the plots — rendered in place, with the study's rows available to other
/// panels. "Open in Browser" hands report.html to the desktop's browser.
#include "core/eval/study.h"

#include <QWidget>

#include <optional>

class QLabel;
class QPushButton;
class QTextBrowser;

namespace lcw {

class StudyPanel : public QWidget {
    Q_OBJECT
public:
    explicit StudyPanel(QWidget* parent = nullptr);

    /// Opens a study: its folder, its report.html or its study.json. study.json is read and
    /// checked first (a file that is not a study is refused with the reason in the panel and
    /// failed()); the HTML page is then shown with its images. False when refused.
    bool openStudy(const QString& path);
    /// The study shown (nullopt before one is opened).
    const std::optional<study::StudyResult>& study() const { return m_study; }
    /// The folder of the study shown (empty when none).
    QString folder() const { return m_folder; }
    QTextBrowser* browser() const { return m_browser; }

public slots:
    /// Asks for a study folder and opens it.
    void chooseStudy();

signals:
    void opened(const QString& folder);
    void failed(const QString& message);
    void logMessage(const QString& message);

private:
    QLabel* m_path = nullptr;
    QPushButton* m_openInBrowser = nullptr;
    QTextBrowser* m_browser = nullptr;
    std::optional<study::StudyResult> m_study;
    QString m_folder;
};

} // namespace lcw
