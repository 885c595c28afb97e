#pragma once
/// \file
/// A QDoubleSpinBox set up in one call: range, step, decimals, value and tool tip, the five
/// settings every numeric field of the panels has (prefix, suffix or special text stay with the
/// caller).
#include <QDoubleSpinBox>

namespace lcw {

struct SpinRange {
    double lo = 0, hi = 1; ///< the range
    double step = 0.1;     ///< single step
    int decimals = 2;
};

inline QDoubleSpinBox* newDoubleSpin(QWidget* parent, SpinRange r, double value,
                                     const QString& toolTip) {
    auto* s = new QDoubleSpinBox(parent);
    s->setRange(r.lo, r.hi);
    s->setSingleStep(r.step);
    s->setDecimals(r.decimals);
    s->setValue(value);
    s->setToolTip(toolTip);
    return s;
}

} // namespace lcw
