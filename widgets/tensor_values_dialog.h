#pragma once
/// \file
/// Raw tensor values: a paged table of one tensor as a matrix [rows, cols] (the innermost
/// dimension across), one page (256 rows by default) dequantised on demand by core
/// (readTensorRows) and never the whole tensor; page navigation and "go to row"; Copy puts the
/// selection on the clipboard as TSV; the page or the whole tensor can be saved as CSV (the whole
/// tensor through the TaskRunner with progress when it is large; atomic writes).
#include <QDialog>

#include <memory>

class QLabel;
class QPushButton;
class QSpinBox;
class QTableView;

namespace lcw {

class Model;
class TaskRunner;
struct TensorView;
class TensorPageModel;

class TensorValuesDialog : public QDialog {
    Q_OBJECT
public:
    /// `model` keeps the tensor's memory alive; `canonical` names the tensor. `runner` (may be
    /// null) writes whole-tensor CSVs in the background.
    TensorValuesDialog(std::shared_ptr<const Model> model, const QString& canonical,
                       TaskRunner* runner, QWidget* parent = nullptr);
    ~TensorValuesDialog() override;

    static constexpr int kDefaultPageRows = 256;
    /// Whole-tensor CSVs of more elements than this go through the TaskRunner (by default).
    static constexpr qint64 kBackgroundElements = 1 << 20;
    void setBackgroundThreshold(qint64 elements) { m_backgroundElements = elements; }

    QString tensorName() const { return m_name; }
    qint64 tensorRows() const;
    qint64 tensorCols() const;
    int page() const { return m_page; }
    int pageCount() const;
    int pageRows() const { return m_pageRows; }
    void setPageRows(int rows);
    void setPage(int page);
    /// Shows the page holding `row` and selects it.
    void goToRow(qint64 row);
    /// The value shown at (row within the page, column) as a float; NaN outside the page.
    float valueAt(int pageRow, int col) const;
    /// First tensor row of the current page.
    qint64 firstRow() const;
    QTableView* table() const { return m_table; }
    /// The selection as TSV (rows by newlines, columns by tabs), as Copy puts it on the clipboard.
    QString selectionTsv() const;
    void copySelection();
    /// Writes the current page as CSV (atomic). Returns false and sets `error` on failure.
    bool savePageCsv(const QString& path, QString* error = nullptr);
    /// Writes the whole tensor as CSV (atomic): through the TaskRunner when it has more than
    /// the background threshold (kBackgroundElements) elements and a runner was given, else at
    /// once. Emits csvSaved() or csvFailed() either way.
    void saveTensorCsv(const QString& path);

signals:
    void csvSaved(const QString& path);
    void csvFailed(const QString& message);

private:
    void loadPage();
    const TensorView* tensor() const;

    std::shared_ptr<const Model> m_model;
    QString m_name;
    TaskRunner* m_runner;
    TensorPageModel* m_pageModel;
    QTableView* m_table;
    QLabel* m_rangeLabel;
    QSpinBox* m_pageSpin;
    QSpinBox* m_rowSpin;
    QPushButton* m_prev;
    QPushButton* m_next;
    int m_page = 0;
    int m_pageRows = kDefaultPageRows;
    qint64 m_backgroundElements = kBackgroundElements;
};

} // namespace lcw
