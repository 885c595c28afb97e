#include "widgets/number_format.h"

#include <QLocale>

#include <cmath>

namespace lcw {

QString formatCountShort(int64_t n) {
    const double a = std::fabs(double(n));
    if (a < 1000.0) return QString::number(n);
    static constexpr struct {
        double scale;
        const char* suffix;
    } kUnits[] = {{1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "K"}};
    for (const auto& u : kUnits) {
        if (a >= u.scale) {
            const double v = double(n) / u.scale;
            // Two decimals for small mantissas keep "1.24 B" informative; one is enough above 10.
            const int decimals = std::fabs(v) < 10.0 ? 2 : 1;
            return QStringLiteral("%1 %2").arg(v, 0, 'f', decimals).arg(QLatin1String(u.suffix));
        }
    }
    return QString::number(n);
}

QString formatCountExact(int64_t n) {
    static const QLocale c = [] {
        QLocale l(QLocale::English, QLocale::UnitedStates);
        l.setNumberOptions(QLocale::DefaultNumberOptions);
        return l;
    }();
    return c.toString(qlonglong(n));
}

QString formatBytes(uint64_t bytes) {
    if (bytes < 1024) return QStringLiteral("%1 B").arg(bytes);
    static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
    double v = double(bytes);
    int u = -1;
    while (v >= 1024.0 && u < 3) {
        v /= 1024.0;
        ++u;
    }
    const int decimals = v < 10.0 ? 2 : 1;
    return QStringLiteral("%1 %2").arg(v, 0, 'f', decimals).arg(QLatin1String(kUnits[u]));
}

QString formatDuration(double seconds) {
    if (!(seconds >= 0)) return {};
    const auto s = int64_t(seconds + 0.5);
    if (s < 60) return QStringLiteral("%1 s").arg(s);
    if (s < 3600)
        return QStringLiteral("%1 min %2 s").arg(s / 60).arg(s % 60, 2, 10, QLatin1Char('0'));
    return QStringLiteral("%1 h %2 min")
        .arg(s / 3600)
        .arg((s % 3600) / 60, 2, 10, QLatin1Char('0'));
}

} // namespace lcw
