#pragma once
/// \file
/// A sort/filter proxy whose filter is an lcw::Regex (RE2, linear-time): a pattern typed by the
/// user cannot freeze the UI thread with catastrophic backtracking, as a QRegularExpression
/// (PCRE2) filter could.
#include "core/common/pattern.h"

#include <QSortFilterProxyModel>

#include <optional>

namespace lcw {

class RegexFilterProxy : public QSortFilterProxyModel {
    Q_OBJECT
public:
    using QSortFilterProxyModel::QSortFilterProxyModel;

    /// Keeps the rows where some cell (or the filterKeyColumn's cell, when set) contains a match
    /// (Regex::search) of `re` in its filterRole text; std::nullopt keeps every row.
    void setFilterRegex(std::optional<Regex> re);

protected:
    bool filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const override;

private:
    std::optional<Regex> m_regex;
};

} // namespace lcw
