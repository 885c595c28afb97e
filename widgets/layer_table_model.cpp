#include "widgets/layer_table_model.h"

#include <QBrush>
#include <QFont>

#include <cmath>

#include "core/common/dtype.h"
#include "widgets/model_blocks.h"
#include "widgets/number_format.h"

#include <QStringList>

#include <set>

namespace lcw {

LayerTableModel::LayerTableModel(QObject* parent) : QAbstractTableModel(parent) {}

void LayerTableModel::setModel(std::shared_ptr<const Model> model) {
    beginResetModel();
    m_errors.clear();
    m_errorsRecipe.clear();
    m_errorsStale = false;
    m_model = std::move(model);
    m_rows.clear();
    m_planned.clear();
    if (m_model) {
        m_rows.reserve(m_model->tensors().size());
        for (const TensorView& t : m_model->tensors()) {
            Row r;
            r.name = QString::fromStdString(t.name);
            r.role = QString::fromStdString(tensorRole(t.name));
            r.layer = tensorLayer(t.name);
            QStringList dims;
            for (int64_t d : t.shape) dims << QString::number(d);
            r.shape = QLatin1Char('[') + dims.join(QStringLiteral(", ")) + QLatin1Char(']');
            const auto dn = dtypeName(t.dtype);
            r.dtype = QString::fromLatin1(dn.data(), qsizetype(dn.size()));
            r.fileName = QString::fromStdString(t.fileName);
            r.file = QString::fromStdString(t.file);
            r.params = t.numel();
            // Weights dequantised at load count the bytes of their quantised form in the file.
            r.bytes = m_model->tensorStoredBytes(t);
            r.scheme = QString::fromStdString(m_model->tensorScheme(t.name));
            m_rows.push_back(std::move(r));
        }
    }
    endResetModel();
}

int LayerTableModel::rowCount(const QModelIndex& parent) const {
    return parent.isValid() ? 0 : int(m_rows.size());
}

int LayerTableModel::columnCount(const QModelIndex& parent) const {
    return parent.isValid() ? 0 : ColumnCount;
}

QVariant LayerTableModel::data(const QModelIndex& index, int role) const {
    if (!index.isValid() || index.row() >= int(m_rows.size())) return {};
    const Row& r = m_rows[size_t(index.row())];
    const int col = index.column();
    switch (role) {
    case Qt::DisplayRole:
        switch (col) {
        case Name:
            return r.name;
        case Layer:
            return r.layer >= 0 ? QString::number(r.layer) : QStringLiteral("—");
        case Role:
            return r.role;
        case Shape:
            return r.shape;
        case DTypeColumn:
            return r.dtype;
        case Parameters:
            return formatCountExact(r.params);
        case Bytes:
            return formatBytes(r.bytes);
        case Setting:
            if (auto it = m_planned.constFind(r.name); it != m_planned.constEnd())
                return it->setting;
            return r.scheme.isEmpty() ? r.dtype : r.scheme;
        case BitsPerWeight:
            // NaN: no size (the recipe does not fit the model).
            return std::isnan(bitsPerWeightOf(r)) ? QStringLiteral("—")
                                                  : QString::number(bitsPerWeightOf(r), 'f', 2);
        case Error:
            if (auto it = m_errors.constFind(r.name); it != m_errors.constEnd())
                return QString::number(it->weight, 'g', 3);
            return QString();
        }
        break;
    case Qt::ForegroundRole:
        if (col == Error && m_errorsStale) return QBrush(QColor(128, 128, 128));
        break;
    case Qt::FontRole:
        if (col == Error && m_errorsStale) {
            QFont f;
            f.setItalic(true);
            return f;
        }
        break;
    case SortRole:
        switch (col) {
        case Layer:
            return r.layer;
        case Shape:
            return r.params; // shapes sort by size
        case Parameters:
            return r.params;
        case Bytes:
            return r.bytes;
        case BitsPerWeight:
            return bitsPerWeightOf(r);
        case Error:
            // Unmeasured rows sort below every measured one (worst first puts them last).
            if (auto it = m_errors.constFind(r.name); it != m_errors.constEnd()) return it->weight;
            return -1.0;
        default:
            return data(index, Qt::DisplayRole);
        }
    case RawRole:
        switch (col) {
        case Layer:
            return r.layer >= 0 ? QVariant(r.layer) : QVariant(QString());
        case Parameters:
            return r.params;
        case Bytes:
            return r.bytes;
        case BitsPerWeight:
            return bitsPerWeightOf(r);
        case Error:
            if (auto it = m_errors.constFind(r.name); it != m_errors.constEnd()) return it->weight;
            return QString();
        default:
            return data(index, Qt::DisplayRole);
        }
    case Qt::ToolTipRole:
        if (col == Bytes) return tr("%1 bytes").arg(formatCountExact(qlonglong(r.bytes)));
        if (col == Error) {
            auto it = m_errors.constFind(r.name);
            if (it == m_errors.constEnd())
                return m_errors.isEmpty() ? tr("Not measured: Recipe ▸ Measure Layer Errors")
                                          : tr("Not compressed by the measured recipe");
            QString t = tr("‖W−Ŵ‖/‖W‖ = %1").arg(it->weight, 0, 'g', 5);
            if (!std::isnan(it->output))
                t += tr("\noutput error on calibration inputs ‖(W−Ŵ)X‖/‖WX‖ = %1")
                         .arg(it->output, 0, 'g', 5);
            t += tr("\nmeasured with %1").arg(m_errorsRecipe);
            if (m_errorsStale) t += tr("\n(the recipe changed since: measure again)");
            return t;
        }
        if (!r.scheme.isEmpty())
            return tr("%1\nin file as '%2' (%4, dequantised to %5 at load)\n%3")
                .arg(r.name, r.fileName, r.file, r.scheme, r.dtype);
        return tr("%1\nin file as '%2'\n%3").arg(r.name, r.fileName, r.file);
    case Qt::TextAlignmentRole:
        if (col == Layer || col == Parameters || col == Bytes || col == BitsPerWeight ||
            col == Error)
            return int(Qt::AlignRight | Qt::AlignVCenter);
        return int(Qt::AlignLeft | Qt::AlignVCenter);
    default:
        break;
    }
    return {};
}

QVariant LayerTableModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal)
        return QAbstractTableModel::headerData(section, orientation, role);
    if (role == Qt::DisplayRole) {
        switch (section) {
        case Name:
            return tr("Name");
        case Layer:
            return tr("Layer");
        case Role:
            return tr("Role");
        case Shape:
            return tr("Shape");
        case DTypeColumn:
            return tr("DType");
        case Parameters:
            return tr("Parameters");
        case Bytes:
            return tr("Bytes");
        case Setting:
            return tr("Setting");
        case BitsPerWeight:
            return tr("Bits/w");
        case Error:
            return m_errorsStale ? tr("Error (stale)") : tr("Error");
        }
    }
    if (role == Qt::ToolTipRole) {
        switch (section) {
        case Name:
            return tr("Canonical lcw name (hover a row for the name in the file)");
        case Role:
            return tr("What the tensor does, without the layer prefix");
        case Shape:
            return tr("Logical shape, outermost first ([out, in] for linear weights)");
        case Bytes:
            return tr("Stored bytes in the file");
        case Setting:
            return tr("Weight setting under the recipe editor's recipe (else the file's "
                      "quantisation scheme, e.g. a GPTQ / AWQ / compressed-tensors checkpoint's, "
                      "or its dtype)");
        case BitsPerWeight:
            return tr("Stored bits per weight under the recipe (codes, scales and zero points)");
        case Error:
            return tr("Relative weight error ‖W−Ŵ‖/‖W‖ of a compression with the recipe "
                      "(Recipe ▸ Measure Layer Errors); dimmed when the recipe changed since");
        default:
            break;
        }
    }
    return {};
}

double LayerTableModel::bitsPerWeightOf(const Row& r) const {
    if (auto it = m_planned.constFind(r.name); it != m_planned.constEnd()) return it->bitsPerWeight;
    return r.params > 0 ? double(r.bytes) * 8.0 / double(r.params) : 0.0;
}

void LayerTableModel::setPlannedSettings(const QHash<QString, PlannedSetting>& settings) {
    m_planned = settings;
    if (!m_rows.empty())
        emit dataChanged(index(0, Setting), index(int(m_rows.size()) - 1, BitsPerWeight));
}

void LayerTableModel::setMeasuredErrors(const QHash<QString, MeasuredError>& errors,
                                        const QString& recipeName) {
    m_errors = errors;
    m_errorsRecipe = recipeName;
    m_errorsStale = false;
    emit headerDataChanged(Qt::Horizontal, Error, Error);
    if (!m_rows.empty()) emit dataChanged(index(0, Error), index(int(m_rows.size()) - 1, Error));
}

void LayerTableModel::setErrorsStale(bool stale) {
    if (stale == m_errorsStale) return;
    m_errorsStale = stale;
    emit headerDataChanged(Qt::Horizontal, Error, Error);
    if (!m_rows.empty()) emit dataChanged(index(0, Error), index(int(m_rows.size()) - 1, Error));
}

QString LayerTableModel::rowsAsTsv(const QModelIndexList& rows) const {
    std::set<int> seen;
    QStringList lines;
    QStringList header;
    for (int c = 0; c < ColumnCount; ++c) header << headerData(c, Qt::Horizontal).toString();
    // Errors measured for another recipe than the one the other columns show say so.
    if (m_errorsStale && !m_errors.isEmpty())
        header[Error] = tr("Error (stale: measured with %1, not the current recipe)")
                            .arg(m_errorsRecipe.isEmpty() ? tr("another recipe") : m_errorsRecipe);
    lines << header.join(QLatin1Char('\t'));
    for (const QModelIndex& idx : rows) {
        if (!idx.isValid() || idx.model() != this || !seen.insert(idx.row()).second) continue;
        QStringList cells;
        for (int c = 0; c < ColumnCount; ++c)
            cells << data(index(idx.row(), c), RawRole).toString();
        lines << cells.join(QLatin1Char('\t'));
    }
    return lines.join(QLatin1Char('\n')) + QLatin1Char('\n');
}

} // namespace lcw
