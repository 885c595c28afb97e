#include "widgets/metadata_dialog.h"

#include <QDialogButtonBox>
#include <QDir>
#include <QFormLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QSplitter>
#include <QTabWidget>
#include <QTableWidget>
#include <QVBoxLayout>

namespace lcw {

namespace {
QString qs(const std::string& s) {
    return QString::fromStdString(s);
}
} // namespace

MetadataDialog::MetadataDialog(ModelMetadata metadata, QWidget* parent)
    : QDialog(parent), m_md(std::move(metadata)) {
    setWindowTitle(tr("Model Metadata — %1").arg(QDir(qs(m_md.path)).dirName()));
    resize(900, 640);
    auto* lay = new QVBoxLayout(this);

    auto* head = new QLabel(QStringLiteral("<b>%1</b> &nbsp; %2")
                                .arg(qs(m_md.format).toHtmlEscaped(),
                                     QDir::toNativeSeparators(qs(m_md.path)).toHtmlEscaped()),
                            this);
    head->setTextInteractionFlags(Qt::TextSelectableByMouse);
    head->setWordWrap(true);
    lay->addWidget(head);

    m_summary = new QWidget(this);
    m_summary->setObjectName(QStringLiteral("metadataSummary"));
    auto* form = new QFormLayout(m_summary);
    form->setContentsMargins(0, 0, 0, 0);
    for (const auto& [k, v] : m_md.summary) {
        auto* value = new QLabel(qs(v), m_summary);
        value->setObjectName(QStringLiteral("summary:") + qs(k));
        value->setTextFormat(Qt::PlainText); // token texts such as "<s>" are not markup
        value->setTextInteractionFlags(Qt::TextSelectableByMouse);
        value->setWordWrap(true);
        form->addRow(qs(k) + QLatin1Char(':'), value);
    }
    lay->addWidget(m_summary);

    m_tabs = new QTabWidget(this);
    auto* keys = new QWidget(m_tabs);
    auto* kl = new QVBoxLayout(keys);
    auto* filterRow = new QHBoxLayout;
    m_filter = new QLineEdit(keys);
    m_filter->setObjectName(QStringLiteral("metadataFilter"));
    m_filter->setPlaceholderText(tr("Filter keys and values…"));
    m_filter->setClearButtonEnabled(true);
    m_count = new QLabel(keys);
    filterRow->addWidget(m_filter, 1);
    filterRow->addWidget(m_count);
    kl->addLayout(filterRow);

    auto* split = new QSplitter(Qt::Vertical, keys);
    m_table = new QTableWidget(int(m_md.entries.size()), 3, split);
    m_table->setObjectName(QStringLiteral("metadataTable"));
    m_table->setHorizontalHeaderLabels({tr("Key"), tr("Type"), tr("Value")});
    m_table->verticalHeader()->setVisible(false);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::SingleSelection);
    m_table->setWordWrap(false);
    m_table->setAlternatingRowColors(true);
    m_table->horizontalHeader()->setStretchLastSection(true);
    for (int r = 0; r < int(m_md.entries.size()); ++r) {
        const MetadataEntry& e = m_md.entries[size_t(r)];
        auto* key = new QTableWidgetItem(qs(e.key));
        auto* type = new QTableWidgetItem(qs(e.type));
        // One line in the table (long values are elided; the detail pane shows them whole).
        QString value = qs(e.value);
        value.replace(QLatin1Char('\n'), QStringLiteral(" ⏎ "));
        if (value.size() > 300) value = value.left(300) + QStringLiteral("…");
        auto* val = new QTableWidgetItem(value);
        if (e.count > 0) type->setToolTip(tr("%1 elements").arg(qulonglong(e.count)));
        m_table->setItem(r, 0, key);
        m_table->setItem(r, 1, type);
        m_table->setItem(r, 2, val);
    }
    m_table->resizeColumnToContents(0);
    m_table->resizeColumnToContents(1);
    m_table->setColumnWidth(0, std::min(m_table->columnWidth(0), 360));
    m_detail = new QPlainTextEdit(split);
    m_detail->setObjectName(QStringLiteral("metadataDetail"));
    m_detail->setReadOnly(true);
    m_detail->setPlaceholderText(tr("Select a key to see its whole value."));
    m_detail->setMaximumBlockCount(int(kMetadataItems) + 16);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 1);
    kl->addWidget(split, 1);
    m_tabs->addTab(keys, tr("Keys (%1)").arg(m_md.entries.size()));

    for (const auto& [title, text] : m_md.documents) {
        auto* doc = new QPlainTextEdit(m_tabs);
        doc->setObjectName(QStringLiteral("document:") + qs(title));
        doc->setReadOnly(true);
        doc->setLineWrapMode(QPlainTextEdit::NoWrap);
        doc->setPlainText(qs(text));
        QFont mono = doc->font();
        mono.setFamily(QStringLiteral("monospace"));
        mono.setStyleHint(QFont::Monospace);
        doc->setFont(mono);
        m_tabs->addTab(doc, qs(title));
    }
    lay->addWidget(m_tabs, 1);

    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close, this);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    lay->addWidget(buttons);

    connect(m_filter, &QLineEdit::textChanged, this, &MetadataDialog::applyFilter);
    connect(m_table, &QTableWidget::itemSelectionChanged, this, &MetadataDialog::showDetail);
    applyFilter();
}

void MetadataDialog::applyFilter() {
    const QString f = m_filter->text().trimmed();
    int shown = 0;
    for (int r = 0; r < m_table->rowCount(); ++r) {
        const bool match = f.isEmpty() ||
                           m_table->item(r, 0)->text().contains(f, Qt::CaseInsensitive) ||
                           m_table->item(r, 2)->text().contains(f, Qt::CaseInsensitive);
        m_table->setRowHidden(r, !match);
        shown += match;
    }
    m_count->setText(f.isEmpty() ? tr("%n key(s)", nullptr, m_table->rowCount())
                                 : tr("%1 of %2").arg(shown).arg(m_table->rowCount()));
}

void MetadataDialog::showDetail() {
    const QList<QTableWidgetItem*> sel = m_table->selectedItems();
    if (sel.isEmpty()) {
        m_detail->clear();
        return;
    }
    const MetadataEntry& e = m_md.entries[size_t(sel.first()->row())];
    QString text = qs(e.key) + QStringLiteral("  (") + qs(e.type) + QStringLiteral(")\n");
    if (e.count == 0 && e.items.empty()) {
        text += qs(e.value);
    } else {
        text += tr("%1 elements").arg(qulonglong(e.count));
        if (e.count > e.items.size()) text += tr(", the first %1 shown").arg(e.items.size());
        text += QLatin1Char('\n');
        for (size_t i = 0; i < e.items.size(); ++i)
            text += QStringLiteral("[%1] %2\n").arg(i).arg(qs(e.items[i]));
        if (e.count > e.items.size())
            text += tr("… %1 more").arg(qulonglong(e.count - e.items.size()));
        if (e.items.empty()) text += qs(e.value); // JSON arrays: the whole value
    }
    m_detail->setPlainText(text);
}

int MetadataDialog::rowOf(const QString& key) const {
    for (int r = 0; r < m_table->rowCount(); ++r)
        if (m_table->item(r, 0)->text() == key) return r;
    return -1;
}

QString MetadataDialog::summaryValue(const QString& name) const {
    auto* l = m_summary->findChild<QLabel*>(QStringLiteral("summary:") + name);
    return l ? l->text() : QString();
}
QString MetadataDialog::typeOf(const QString& key) const {
    const int r = rowOf(key);
    return r < 0 ? QString() : m_table->item(r, 1)->text();
}
QString MetadataDialog::valueOf(const QString& key) const {
    const int r = rowOf(key);
    return r < 0 ? QString() : m_table->item(r, 2)->text();
}
void MetadataDialog::setFilter(const QString& text) {
    m_filter->setText(text);
}
int MetadataDialog::keyCount() const {
    return m_table->rowCount();
}
int MetadataDialog::visibleKeyCount() const {
    int n = 0;
    for (int r = 0; r < m_table->rowCount(); ++r) n += !m_table->isRowHidden(r);
    return n;
}
bool MetadataDialog::selectKey(const QString& key) {
    const int r = rowOf(key);
    if (r < 0) return false;
    m_table->selectRow(r);
    return true;
}
QString MetadataDialog::detailText() const {
    return m_detail->toPlainText();
}
QStringList MetadataDialog::documentTitles() const {
    QStringList t;
    for (const auto& d : m_md.documents) t << qs(d.first);
    return t;
}
QString MetadataDialog::documentText(const QString& title) const {
    auto* d = findChild<QPlainTextEdit*>(QStringLiteral("document:") + title);
    return d ? d->toPlainText() : QString();
}

} // namespace lcw
