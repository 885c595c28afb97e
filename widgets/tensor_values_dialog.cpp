#include "widgets/tensor_values_dialog.h"

#include "core/io/tensor_values.h"
#include "core/model/model.h"
#include "widgets/task_runner.h"

#include <QAbstractTableModel>
#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QMessageBox>
#include <QPushButton>
#include <QSaveFile>
#include <QSpinBox>
#include <QTableView>
#include <QVBoxLayout>

#include <cmath>
#include <limits>

namespace lcw {

/// One page of a tensor: rows [first, first + rows) dequantised once when the page changes.
class TensorPageModel : public QAbstractTableModel {
public:
    using QAbstractTableModel::QAbstractTableModel;

    void setPage(qint64 first, int rows, int cols, std::vector<float> values) {
        beginResetModel();
        m_first = first;
        m_rows = rows;
        m_cols = cols;
        m_values = std::move(values);
        endResetModel();
    }
    float value(int r, int c) const {
        if (r < 0 || c < 0 || r >= m_rows || c >= m_cols)
            return std::numeric_limits<float>::quiet_NaN();
        return m_values[size_t(r) * size_t(m_cols) + size_t(c)];
    }
    qint64 first() const { return m_first; }
    int rowCount(const QModelIndex& p = {}) const override { return p.isValid() ? 0 : m_rows; }
    int columnCount(const QModelIndex& p = {}) const override { return p.isValid() ? 0 : m_cols; }
    QVariant data(const QModelIndex& i, int role) const override {
        if (!i.isValid()) return {};
        if (role == Qt::DisplayRole || role == Qt::ToolTipRole)
            return QString::fromStdString(formatTensorValue(value(i.row(), i.column())));
        if (role == Qt::TextAlignmentRole) return int(Qt::AlignRight | Qt::AlignVCenter);
        return {};
    }
    QVariant headerData(int s, Qt::Orientation o, int role) const override {
        if (role != Qt::DisplayRole) return {};
        return o == Qt::Horizontal ? QVariant(s) : QVariant(m_first + s);
    }

private:
    qint64 m_first = 0;
    int m_rows = 0, m_cols = 0;
    std::vector<float> m_values;
};

TensorValuesDialog::TensorValuesDialog(std::shared_ptr<const Model> model, const QString& canonical,
                                       TaskRunner* runner, QWidget* parent)
    : QDialog(parent), m_model(std::move(model)), m_name(canonical), m_runner(runner) {
    const TensorView* t = tensor();
    QString shape;
    if (t) {
        for (int64_t d : t->shape)
            shape += (shape.isEmpty() ? QString() : QStringLiteral(" × ")) + QString::number(d);
    }
    setWindowTitle(tr("Tensor Values — %1").arg(canonical));
    resize(960, 640);
    auto* lay = new QVBoxLayout(this);
    auto* info =
        new QLabel(t ? tr("<b>%1</b> &nbsp; %2 &nbsp; [%3] &nbsp; shown as %4 rows × %5 columns")
                           .arg(canonical.toHtmlEscaped(),
                                QString::fromUtf8(dtypeName(t->dtype).data(),
                                                  qsizetype(dtypeName(t->dtype).size())),
                                shape)
                           .arg(t->rows())
                           .arg(t->cols())
                     : tr("Tensor %1 is not in the model.").arg(canonical.toHtmlEscaped()),
                   this);
    info->setTextInteractionFlags(Qt::TextSelectableByMouse);
    lay->addWidget(info);

    auto* nav = new QHBoxLayout;
    m_prev = new QPushButton(tr("◀ Previous"), this);
    m_next = new QPushButton(tr("Next ▶"), this);
    m_pageSpin = new QSpinBox(this);
    m_pageSpin->setObjectName(QStringLiteral("pageSpin"));
    m_pageSpin->setPrefix(tr("Page "));
    m_rowSpin = new QSpinBox(this);
    m_rowSpin->setObjectName(QStringLiteral("rowSpin"));
    m_rowSpin->setMaximum(std::numeric_limits<int>::max());
    auto* go = new QPushButton(tr("Go to Row"), this);
    m_rangeLabel = new QLabel(this);
    nav->addWidget(m_prev);
    nav->addWidget(m_pageSpin);
    nav->addWidget(m_next);
    nav->addSpacing(12);
    nav->addWidget(m_rowSpin);
    nav->addWidget(go);
    nav->addStretch(1);
    nav->addWidget(m_rangeLabel);
    lay->addLayout(nav);

    m_pageModel = new TensorPageModel(this);
    m_table = new QTableView(this);
    m_table->setModel(m_pageModel);
    m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_table->setWordWrap(false);
    // Fixed section sizes: a row of thousands of columns is laid out without measuring cells.
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::Fixed);
    m_table->horizontalHeader()->setDefaultSectionSize(
        m_table->fontMetrics().horizontalAdvance(QStringLiteral("-0.000000000e-00")) + 8);
    m_table->verticalHeader()->setSectionResizeMode(QHeaderView::Fixed);
    m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 6);
    auto* copy = new QAction(tr("Copy"), m_table);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    connect(copy, &QAction::triggered, this, &TensorValuesDialog::copySelection);
    m_table->addAction(copy);
    m_table->setContextMenuPolicy(Qt::ActionsContextMenu);
    lay->addWidget(m_table, 1);

    auto* buttons = new QHBoxLayout;
    auto* copyBtn = new QPushButton(tr("Copy"), this);
    auto* savePage = new QPushButton(tr("Save Page as CSV…"), this);
    auto* saveAll = new QPushButton(tr("Save Tensor as CSV…"), this);
    auto* close = new QPushButton(tr("Close"), this);
    buttons->addWidget(copyBtn);
    buttons->addWidget(savePage);
    buttons->addWidget(saveAll);
    buttons->addStretch(1);
    buttons->addWidget(close);
    lay->addLayout(buttons);

    const QString base = QString(canonical).replace(QLatin1Char('/'), QLatin1Char('_'));
    connect(copyBtn, &QPushButton::clicked, this, &TensorValuesDialog::copySelection);
    connect(savePage, &QPushButton::clicked, this, [this, base] {
        QString path = QFileDialog::getSaveFileName(
            this, tr("Save Page as CSV"), base + QStringLiteral("-rows%1.csv").arg(firstRow()),
            tr("CSV files (*.csv)"));
        if (path.isEmpty()) return;
        QString err;
        if (!savePageCsv(path, &err)) QMessageBox::critical(this, tr("Save Page as CSV"), err);
    });
    connect(saveAll, &QPushButton::clicked, this, [this, base] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Save Tensor as CSV"), base + QStringLiteral(".csv"), tr("CSV files (*.csv)"));
        if (!path.isEmpty()) saveTensorCsv(path);
    });
    connect(this, &TensorValuesDialog::csvFailed, this, [this](const QString& msg) {
        if (isVisible()) QMessageBox::critical(this, tr("Save Tensor as CSV"), msg);
    });
    connect(close, &QPushButton::clicked, this, &QDialog::reject);
    connect(m_prev, &QPushButton::clicked, this, [this] { setPage(m_page - 1); });
    connect(m_next, &QPushButton::clicked, this, [this] { setPage(m_page + 1); });
    connect(m_pageSpin, &QSpinBox::valueChanged, this, [this](int v) { setPage(v - 1); });
    connect(go, &QPushButton::clicked, this, [this] { goToRow(m_rowSpin->value()); });
    connect(m_rowSpin, &QSpinBox::editingFinished, this, [this] { goToRow(m_rowSpin->value()); });

    for (QWidget* w : {static_cast<QWidget*>(m_prev), static_cast<QWidget*>(m_next),
                       static_cast<QWidget*>(m_pageSpin), static_cast<QWidget*>(m_rowSpin),
                       static_cast<QWidget*>(go), static_cast<QWidget*>(copyBtn),
                       static_cast<QWidget*>(savePage), static_cast<QWidget*>(saveAll)})
        w->setEnabled(t != nullptr);
    loadPage();
}

TensorValuesDialog::~TensorValuesDialog() = default;

const TensorView* TensorValuesDialog::tensor() const {
    return m_model ? m_model->find(m_name.toStdString()) : nullptr;
}

qint64 TensorValuesDialog::tensorRows() const {
    const TensorView* t = tensor();
    return t ? t->rows() : 0;
}
qint64 TensorValuesDialog::tensorCols() const {
    const TensorView* t = tensor();
    return t ? t->cols() : 0;
}
int TensorValuesDialog::pageCount() const {
    return int(std::max<qint64>(1, (tensorRows() + m_pageRows - 1) / m_pageRows));
}
qint64 TensorValuesDialog::firstRow() const {
    return qint64(m_page) * m_pageRows;
}

void TensorValuesDialog::setPageRows(int rows) {
    const qint64 keep = firstRow();
    m_pageRows = std::max(1, rows);
    m_page = int(keep / m_pageRows);
    loadPage();
}

void TensorValuesDialog::setPage(int page) {
    page = std::clamp(page, 0, pageCount() - 1);
    if (page == m_page && m_pageModel->rowCount() > 0) return;
    m_page = page;
    loadPage();
}

void TensorValuesDialog::goToRow(qint64 row) {
    row = std::clamp<qint64>(row, 0, std::max<qint64>(0, tensorRows() - 1));
    setPage(int(row / m_pageRows));
    const int r = int(row - firstRow());
    if (r < m_pageModel->rowCount()) {
        m_table->selectRow(r);
        m_table->scrollTo(m_pageModel->index(r, 0));
    }
}

void TensorValuesDialog::loadPage() {
    const TensorView* t = tensor();
    std::vector<float> values;
    int rows = 0, cols = 0;
    if (t && t->rows() > 0) {
        try {
            readTensorRows(*t, firstRow(), m_pageRows, values);
            cols = int(t->cols());
            rows = cols > 0 ? int(values.size() / size_t(cols)) : 0;
        } catch (const std::exception& e) {
            m_rangeLabel->setText(QString::fromUtf8(e.what()));
        }
    }
    m_pageModel->setPage(firstRow(), rows, cols, std::move(values));
    const QSignalBlocker b1(m_pageSpin), b2(m_rowSpin);
    m_pageSpin->setRange(1, pageCount());
    m_pageSpin->setSuffix(tr(" of %1").arg(pageCount()));
    m_pageSpin->setValue(m_page + 1);
    m_rowSpin->setRange(0, int(std::min<qint64>(std::max<qint64>(0, tensorRows() - 1),
                                                std::numeric_limits<int>::max())));
    m_prev->setEnabled(t && m_page > 0);
    m_next->setEnabled(t && m_page + 1 < pageCount());
    if (t)
        m_rangeLabel->setText(
            tr("rows %1–%2 of %3").arg(firstRow()).arg(firstRow() + rows - 1).arg(t->rows()));
}

float TensorValuesDialog::valueAt(int pageRow, int col) const {
    return m_pageModel->value(pageRow, col);
}

QString TensorValuesDialog::selectionTsv() const {
    const QModelIndexList sel = m_table->selectionModel()->selectedIndexes();
    if (sel.isEmpty()) return {};
    int r0 = INT_MAX, r1 = -1, c0 = INT_MAX, c1 = -1;
    for (const QModelIndex& i : sel) {
        r0 = std::min(r0, i.row());
        r1 = std::max(r1, i.row());
        c0 = std::min(c0, i.column());
        c1 = std::max(c1, i.column());
    }
    // The bounding box of the selection; cells outside it that are not selected stay empty.
    QSet<qint64> chosen;
    for (const QModelIndex& i : sel) chosen.insert(qint64(i.row()) << 32 | i.column());
    QString out;
    for (int r = r0; r <= r1; ++r) {
        for (int c = c0; c <= c1; ++c) {
            if (c > c0) out += QLatin1Char('\t');
            if (chosen.contains(qint64(r) << 32 | c))
                out += QString::fromStdString(formatTensorValue(m_pageModel->value(r, c)));
        }
        out += QLatin1Char('\n');
    }
    return out;
}

void TensorValuesDialog::copySelection() {
    const QString tsv = selectionTsv();
    if (!tsv.isEmpty()) QApplication::clipboard()->setText(tsv);
}

bool TensorValuesDialog::savePageCsv(const QString& path, QString* error) {
    const TensorView* t = tensor();
    if (!t) {
        if (error) *error = tr("Tensor %1 is not in the model.").arg(m_name);
        return false;
    }
    try {
        NullProgress np;
        writeTensorCsv(*t, path.toStdString(), np, firstRow(), m_pageModel->rowCount());
        return true;
    } catch (const std::exception& e) {
        if (error) *error = QString::fromUtf8(e.what());
        return false;
    }
}

void TensorValuesDialog::saveTensorCsv(const QString& path) {
    const TensorView* t = tensor();
    if (!t) {
        emit csvFailed(tr("Tensor %1 is not in the model.").arg(m_name));
        return;
    }
    const std::string file = path.toStdString();
    if (!m_runner || t->numel() <= m_backgroundElements) {
        try {
            NullProgress np;
            writeTensorCsv(*t, file, np);
            emit csvSaved(path);
        } catch (const std::exception& e) {
            emit csvFailed(QString::fromUtf8(e.what()));
        }
        return;
    }
    // The job holds the model (and so the mapped bytes) until it ends.
    std::shared_ptr<const Model> model = m_model;
    const std::string name = m_name.toStdString();
    TaskRunner::Callbacks cb;
    QPointer<TensorValuesDialog> self(this);
    cb.done = [self, path](const std::any&) {
        if (self) emit self->csvSaved(path);
    };
    cb.failed = [self](const QString& msg) {
        if (self) emit self->csvFailed(msg);
    };
    m_runner->submit(
        tr("Saving %1 as CSV").arg(m_name),
        [model, name, file](Progress& p) -> std::any {
            writeTensorCsv(model->get(name), file, p);
            return true;
        },
        nullptr, std::move(cb));
}

} // namespace lcw
