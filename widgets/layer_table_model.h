#pragma once
/// \file
/// Table model over a Model's tensors: one row per tensor, in file order.
#include "core/model/model.h"

#include <QAbstractTableModel>
#include <QHash>
#include <QModelIndexList>

#include <limits>
#include <memory>
#include <vector>

namespace lcw {

/// Columns: canonical name, layer, role, shape, dtype, parameters, bytes, the recipe's setting
/// and bits per weight, the measured error. Qt::DisplayRole gives
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
        Setting,       ///< the recipe's weight setting of this tensor ("int4 g128 asym"), else
                       ///< the file's quantisation scheme (Model::tensorScheme) or dtype
        BitsPerWeight, ///< stored bits per weight under the recipe (the file's when unchanged)
        Error, ///< ‖W−Ŵ‖/‖W‖ measured by compressing with a recipe (empty until measured)
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
        double bitsPerWeight = 0; ///< NaN: no size (the recipe does not fit the model)
    };
    /// Sets the per-tensor settings of the current recipe (tensors not in the map keep their
    /// stored precision); an empty map clears the columns' recipe values.
    void setPlannedSettings(const QHash<QString, PlannedSetting>& settings);

    /// A layer's error measured by a real compression (compress::LayerReport).
    struct MeasuredError {
        double weight = 0; ///< ‖W−Ŵ‖/‖W‖ of the final weights
        double output = std::numeric_limits<double>::quiet_NaN(); ///< on calibration inputs
    };
    /// Errors of the layers a compression with `recipeName`'s recipe produced; other tensors show
    /// nothing. Clears the stale mark.
    void setMeasuredErrors(const QHash<QString, MeasuredError>& errors, const QString& recipeName);
    /// Marks the errors as measured for another recipe than the current one (shown dimmed, with
    /// a tooltip saying so) or current again.
    void setErrorsStale(bool stale);
    bool errorsStale() const { return m_errorsStale; }
    bool hasMeasuredErrors() const { return !m_errors.isEmpty(); }
    const QHash<QString, MeasuredError>& measuredErrors() const { return m_errors; }
    QString measuredRecipeName() const { return m_errorsRecipe; }

    /// Tab-separated text of the given rows (any column's index selects its row), with a header
    /// line; exact numbers, one line per row, in the order given.
    QString rowsAsTsv(const QModelIndexList& rows) const;

private:
    struct Row {
        QString name, role, shape, dtype, fileName, file;
        QString scheme; ///< Model::tensorScheme: the quantised checkpoint's scheme, or empty
        int layer = -1;
        qlonglong params = 0;
        qulonglong bytes = 0;
    };
    double bitsPerWeightOf(const Row& r) const;

    std::shared_ptr<const Model> m_model;
    std::vector<Row> m_rows;
    QHash<QString, PlannedSetting> m_planned;
    QHash<QString, MeasuredError> m_errors;
    QString m_errorsRecipe;
    bool m_errorsStale = false;
};

} // namespace lcw
