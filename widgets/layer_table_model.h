#pragma once
/// \file
/// Table model over a Model's tensors: one row per tensor, in file order.
#include "core/model/model.h"

#include <QAbstractTableModel>
#include <QHash>
#include <QModelIndexList>

#include <memory>
#include <vector>

namespace lcw {

/// Columns: canonical name, layer, role, shape, dtype, parameters, bytes. Qt::DisplayRole gives
/// formatted text; SortRole gives a number for numeric columns (so sorting is numeric);
/// Qt::ToolTipRole gives the tensor's file name and file. The model keeps the Model alive.
class LayerTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        Name,
        Layer,
        Role,
        Shape,
        DTypeColumn,
        Parameters,
        Bytes,
        Setting,       ///< the recipe's weight setting of this tensor ("int4 g128 asym")
        BitsPerWeight, ///< stored bits per weight under the recipe (the file's when unchanged)
        ColumnCount
    };
    /// Role returning a sortable value (qlonglong for numbers, QString otherwise).
    static constexpr int SortRole = Qt::UserRole + 1;
    /// Role returning the plain, unformatted value (exact numbers; used for TSV copies).
    static constexpr int RawRole = Qt::UserRole + 2;

    explicit LayerTableModel(QObject* parent = nullptr);

    /// Shows the tensors of `model` (nullptr clears the table).
    void setModel(std::shared_ptr<const Model> model);
    const Model* model() const { return m_model.get(); }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation,
                        int role = Qt::DisplayRole) const override;

    /// One tensor's compression setting, shown in the Setting and Bits/w columns.
    struct PlannedSetting {
        QString setting;
        double bitsPerWeight = 0; ///< NaN: only a real compression knows (pruned, low-rank)
    };
    /// Sets the per-tensor settings of the current recipe (tensors not in the map keep their
    /// stored precision); an empty map clears the columns' recipe values.
    void setPlannedSettings(const QHash<QString, PlannedSetting>& settings);

    /// Tab-separated text of the given rows (any column's index selects its row), with a header
    /// line; exact numbers, one line per row, in the order given.
    QString rowsAsTsv(const QModelIndexList& rows) const;

private:
    struct Row {
        QString name, role, shape, dtype, fileName, file;
        int layer = -1;
        qlonglong params = 0;
        qulonglong bytes = 0;
    };
    double bitsPerWeightOf(const Row& r) const;

    std::shared_ptr<const Model> m_model;
    std::vector<Row> m_rows;
    QHash<QString, PlannedSetting> m_planned;
};

} // namespace lcw
