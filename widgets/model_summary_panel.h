#pragma once
/// \file
/// Read-only summary of a loaded model: file, architecture, dimensions, RoPE, size, tokenizer
/// and load warnings, as a two-column property tree.
#include "core/model/model.h"

#include <QWidget>

class QTreeWidget;
class QTreeWidgetItem;

namespace lcw {

class ModelSummaryPanel : public QWidget {
    Q_OBJECT
public:
    explicit ModelSummaryPanel(QWidget* parent = nullptr);

    /// Shows `model` (nullptr clears the panel). Only reads spec and counts; keeps no pointer.
    void setModel(const Model* model);

    /// Text in the value column of the property named `key` ("Architecture", "Layers",
    /// "Parameters", ...; the first match), empty when absent. For tests and copy actions.
    QString value(const QString& key) const;
    /// Number of warnings shown.
    int warningCount() const { return m_warningCount; }
    /// The whole summary as "key\tvalue" lines (what Ctrl+C copies).
    QString toText() const;

private:
    QTreeWidgetItem* addGroup(const QString& title);
    void addRow(QTreeWidgetItem* group, const QString& key, const QString& value,
                const QString& tooltip = {});

    QTreeWidget* m_tree;
    int m_warningCount = 0;
};

} // namespace lcw
