#include "widgets/export_dialog.h"

#include "core/common/mapped_file.h"
#include "plots/plot_tools.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QDir>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QTabWidget>
#include <QToolButton>
#include <QVBoxLayout>

namespace lcw {

ExportDialog::ExportDialog(Sources sources, QWidget* parent)
    : QDialog(parent), m_sources(std::move(sources)) {
    setWindowTitle(tr("Export"));
    auto* outer = new QVBoxLayout(this);
    m_pages = new QTabWidget(this);
    auto* filesPage = new QWidget(m_pages);
    auto* lay = new QVBoxLayout(filesPage);
    auto* form = new QFormLayout;
    auto* folderRow = new QHBoxLayout;
    m_folder = new QLineEdit(QDir::homePath(), this);
    auto* browse = new QToolButton(this);
    browse->setText(tr("…"));
    connect(browse, &QToolButton::clicked, this, [this] {
        const QString d =
            QFileDialog::getExistingDirectory(this, tr("Export To"), m_folder->text());
        if (!d.isEmpty()) m_folder->setText(d);
    });
    folderRow->addWidget(m_folder, 1);
    folderRow->addWidget(browse);
    form->addRow(tr("Folder"), folderRow);
    m_base = new QLineEdit(QStringLiteral("lcw"), this);
    form->addRow(tr("File names start with"), m_base);
    m_recipe = new QCheckBox(tr("Recipe (JSON, as lcw-cli --recipe reads it)"), this);
    m_metrics = new QCheckBox(tr("Metrics table (TSV)"), this);
    m_plots = new QCheckBox(tr("Plots"), this);
    m_format = new QComboBox(this);
    m_format->addItems({QStringLiteral("png"), QStringLiteral("pdf")});
    if (svgExportAvailable()) m_format->addItem(QStringLiteral("svg"));
    m_recipe->setChecked(bool(m_sources.recipeJson));
    m_recipe->setEnabled(bool(m_sources.recipeJson));
    m_metrics->setChecked(bool(m_sources.metricsTsv));
    m_metrics->setEnabled(bool(m_sources.metricsTsv));
    m_plots->setChecked(!m_sources.plots.empty());
    m_plots->setEnabled(!m_sources.plots.empty());
    form->addRow(m_recipe);
    form->addRow(m_metrics);
    for (const Sources::Text& t : m_sources.texts) {
        auto* box = new QCheckBox(t.label, this);
        box->setChecked(bool(t.text));
        box->setEnabled(bool(t.text));
        form->addRow(box);
        m_texts.push_back(box);
    }
    auto* plotRow = new QHBoxLayout;
    plotRow->addWidget(m_plots);
    plotRow->addWidget(m_format);
    plotRow->addStretch();
    form->addRow(plotRow);
    lay->addLayout(form);
    lay->addStretch();
    m_pages->addTab(filesPage, tr("Files"));
    if (m_sources.gguf) {
        m_gguf = new GgufExportPanel(*m_sources.gguf, m_pages);
        m_pages->addTab(m_gguf, tr("GGUF (llama.cpp)"));
        m_hf = new HfExportPanel(*m_sources.gguf, m_pages);
        m_pages->addTab(m_hf, tr("Hugging Face (vLLM)"));
    }
    outer->addWidget(m_pages, 1);
    auto* box = new QDialogButtonBox(QDialogButtonBox::Close, this);
    QPushButton* go = box->addButton(tr("Export"), QDialogButtonBox::AcceptRole);
    go->setDefault(true);
    m_exportButton = go;
    // The GGUF page has its own Export / Cancel (the job runs while the dialog stays open).
    connect(m_pages, &QTabWidget::currentChanged, this,
            [this](int) { m_exportButton->setVisible(m_pages->currentIndex() == 0); });
    connect(box, &QDialogButtonBox::rejected, this, &QDialog::reject);
    connect(box, &QDialogButtonBox::accepted, this, [this] {
        QString err;
        const QStringList files = exportFiles(&err);
        if (!err.isEmpty()) {
            QMessageBox::critical(this, tr("Export"), err);
            return;
        }
        QMessageBox::information(this, tr("Export"),
                                 tr("Wrote %n file(s):\n", nullptr, int(files.size())) +
                                     files.join(QLatin1Char('\n')));
        accept();
    });
    outer->addWidget(box);
}

bool ExportDialog::showPage(Page page) {
    QWidget* w = page == Page::Gguf ? static_cast<QWidget*>(m_gguf) : m_pages->widget(0);
    if (!w) return false;
    m_pages->setCurrentWidget(w);
    return true;
}

void ExportDialog::done(int r) {
    if (m_gguf) m_gguf->cancel();
    if (m_hf) m_hf->cancel();
    QDialog::done(r);
}

void ExportDialog::setFolder(const QString& folder) {
    m_folder->setText(folder);
}
void ExportDialog::setBaseName(const QString& name) {
    m_base->setText(name);
}
void ExportDialog::setPlotFormat(const QString& suffix) {
    m_format->setCurrentText(suffix);
}
void ExportDialog::setRecipeChecked(bool on) {
    m_recipe->setChecked(on);
}
void ExportDialog::setMetricsChecked(bool on) {
    m_metrics->setChecked(on);
}
void ExportDialog::setPlotsChecked(bool on) {
    m_plots->setChecked(on);
}

QStringList ExportDialog::exportFiles(QString* error) {
    QStringList written;
    const QDir dir(m_folder->text());
    if (!dir.exists() && !QDir().mkpath(dir.absolutePath())) {
        if (error)
            *error = tr("Cannot create %1").arg(QDir::toNativeSeparators(dir.absolutePath()));
        return written;
    }
    const QString base =
        m_base->text().trimmed().isEmpty() ? QStringLiteral("lcw") : m_base->text().trimmed();
    auto writeText = [&](const QString& name, const QString& text) {
        const QString path = dir.absoluteFilePath(name);
        try {
            writeFileAtomic(path.toStdString(), text.toStdString());
            written << path;
            return true;
        } catch (const std::exception& e) {
            if (error) *error = QString::fromUtf8(e.what());
            return false;
        }
    };
    if (m_recipe->isChecked() && m_sources.recipeJson &&
        !writeText(base + QStringLiteral(".recipe.json"), m_sources.recipeJson()))
        return written;
    if (m_metrics->isChecked() && m_sources.metricsTsv) {
        const QString tsv = m_sources.metricsTsv();
        if (!tsv.isEmpty() && !writeText(base + QStringLiteral(".metrics.tsv"), tsv))
            return written;
    }
    for (size_t i = 0; i < m_sources.texts.size(); ++i) {
        const Sources::Text& t = m_sources.texts[i];
        if (!m_texts[i]->isChecked() || !t.text) continue;
        const QString text = t.text();
        if (!text.isEmpty() && !writeText(base + QLatin1Char('.') + t.suffix, text)) return written;
    }
    if (m_plots->isChecked())
        for (const auto& [suffix, plot] : m_sources.plots) {
            const QString path = dir.absoluteFilePath(base + QLatin1Char('.') + suffix +
                                                      QLatin1Char('.') + m_format->currentText());
            if (!exportPlot(plot, path, 900, 600)) {
                if (error) *error = tr("Could not write %1").arg(QDir::toNativeSeparators(path));
                return written;
            }
            written << path;
        }
    return written;
}

} // namespace lcw
