#include "widgets/study_panel.h"

#include "core/common/error.h"
#include "core/common/json_file.h"

#include <QDesktopServices>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QTextBrowser>
#include <QUrl>
#include <QVBoxLayout>

namespace lcw {

StudyPanel::StudyPanel(QWidget* parent) : QWidget(parent) {
    auto* open = new QPushButton(tr("Open Study…"), this);
    open->setToolTip(tr("A folder written by 'lcw-cli study MODEL --out DIR'"));
    m_openInBrowser = new QPushButton(tr("Open in Browser"), this);
    m_openInBrowser->setEnabled(false);
    m_path =
        new QLabel(tr("No study open. Run 'lcw-cli study MODEL --out DIR', then open DIR."), this);
    m_path->setWordWrap(true);
    m_path->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_browser = new QTextBrowser(this);
    m_browser->setObjectName(QStringLiteral("study.browser"));
    m_browser->setOpenExternalLinks(true);
    m_browser->setMinimumHeight(240);

    auto* top = new QHBoxLayout;
    top->addWidget(open);
    top->addWidget(m_openInBrowser);
    top->addWidget(m_path, 1);
    auto* lay = new QVBoxLayout(this);
    lay->addLayout(top);
    lay->addWidget(m_browser, 1);

    connect(open, &QPushButton::clicked, this, &StudyPanel::chooseStudy);
    connect(m_openInBrowser, &QPushButton::clicked, this, [this] {
        QDesktopServices::openUrl(QUrl::fromLocalFile(QDir(m_folder).filePath("report.html")));
    });
}

void StudyPanel::chooseStudy() {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open Study Folder"), m_folder);
    if (!dir.isEmpty()) openStudy(dir);
}

bool StudyPanel::openStudy(const QString& path) {
    const QFileInfo fi(path);
    const QString folder = fi.isDir() ? fi.absoluteFilePath() : fi.absolutePath();
    const QString jsonPath = QDir(folder).filePath(QStringLiteral("study.json"));
    const QString htmlPath = QDir(folder).filePath(QStringLiteral("report.html"));
    auto refuse = [&](const QString& why) {
        m_path->setText(
            tr("Could not open the study %1: %2").arg(QDir::toNativeSeparators(folder), why));
        emit failed(why);
        return false;
    };
    try {
        study::StudyResult r =
            study::fromJson(readJsonFile(jsonPath.toStdString()), jsonPath.toStdString());
        if (!QFileInfo::exists(htmlPath))
            return refuse(tr("%1 is missing").arg(QDir::toNativeSeparators(htmlPath)));
        m_study = std::move(r);
    } catch (const Error& e) {
        return refuse(QString::fromStdString(e.what()));
    }
    m_folder = folder;
    m_browser->setSearchPaths({folder});
    m_browser->setSource(QUrl::fromLocalFile(htmlPath));
    m_openInBrowser->setEnabled(true);
    m_path->setText(tr("%1 — %2 configurations, %3")
                        .arg(QDir::toNativeSeparators(folder))
                        .arg(m_study->rows.size())
                        .arg(QString::fromStdString(m_study->model)));
    emit logMessage(tr("Study opened: %1").arg(QDir::toNativeSeparators(folder)));
    emit opened(folder);
    return true;
}

} // namespace lcw
