#pragma once
/// \file
/// View ▸ Model Metadata…: the summary (architecture, decoded file type, tensor types,
/// tokenizer model, vocabulary size, special tokens), every metadata key with its type and value
/// (arrays summarised; the selected key's first elements in a detail pane) with a filter box, and
/// whole documents (config.json, the safetensors __metadata__) in their own tabs. Read-only.
#include "core/io/model_metadata.h"

#include <QDialog>

class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QTableWidget;
class QTabWidget;

namespace lcw {

class MetadataDialog : public QDialog {
    Q_OBJECT
public:
    MetadataDialog(ModelMetadata metadata, QWidget* parent = nullptr);

    const ModelMetadata& metadata() const { return m_md; }

    // ---- for tests ----
    /// The summary value shown for `name` ("File type"), empty when absent.
    QString summaryValue(const QString& name) const;
    /// Type and value columns of `key`'s row; empty when absent.
    QString typeOf(const QString& key) const;
    QString valueOf(const QString& key) const;
    void setFilter(const QString& text);
    int keyCount() const;
    int visibleKeyCount() const;
    /// Selects `key`'s row; false when there is none.
    bool selectKey(const QString& key);
    /// The detail pane's text (the selected key in full, arrays element by element).
    QString detailText() const;
    /// Titles of the document tabs ("config.json", ...).
    QStringList documentTitles() const;
    QString documentText(const QString& title) const;

private:
    void applyFilter();
    void showDetail();
    int rowOf(const QString& key) const;

    ModelMetadata m_md;
    QLineEdit* m_filter;
    QTableWidget* m_table;
    QPlainTextEdit* m_detail;
    QTabWidget* m_tabs;
    QLabel* m_count;
    QWidget* m_summary;
};

} // namespace lcw
