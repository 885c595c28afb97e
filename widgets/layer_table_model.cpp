#include "widgets/layer_table_model.h"

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
            r.bytes = t.nbytes;
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
            return r.dtype;
        case BitsPerWeight:
            // NaN: a pruned / factorised layer whose size only a real compression gives.
            return std::isnan(bitsPerWeightOf(r)) ? tr("needs compress")
                                                  : QString::number(bitsPerWeightOf(r), 'f', 2);
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
        default:
            return data(index, Qt::DisplayRole);
        }
    case Qt::ToolTipRole:
        if (col == Bytes) return tr("%1 bytes").arg(formatCountExact(qlonglong(r.bytes)));
        return tr("%1\nin file as '%2'\n%3").arg(r.name, r.fileName, r.file);
    case Qt::TextAlignmentRole:
        if (col == Layer || col == Parameters || col == Bytes || col == BitsPerWeight)
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
            return tr("Weight setting under the recipe editor's recipe (else the file's dtype)");
        case BitsPerWeight:
            return tr("Stored bits per weight under the recipe (codes, scales and zero points)");
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

QString LayerTableModel::rowsAsTsv(const QModelIndexList& rows) const {
    std::set<int> seen;
    QStringList lines;
    QStringList header;
    for (int c = 0; c < ColumnCount; ++c) header << headerData(c, Qt::Horizontal).toString();
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
