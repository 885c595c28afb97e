#pragma once
/// \file
/// Light and dark palettes for the whole application (View ▸ Theme).
#include <QPalette>
#include <QString>

#include <optional>

namespace lcw {

enum class Theme { Light, Dark };

/// "light", "dark" (the value stored in QSettings).
QString themeName(Theme theme);
/// Parses themeName(); nullopt for anything else.
std::optional<Theme> themeFromName(const QString& name);
/// The palette of a theme (a Fusion-style light palette, or a dark one).
QPalette themePalette(Theme theme);
/// Sets the application palette (and the tooltip palette). Widgets, plots included, follow
/// through their PaletteChange events.
void applyTheme(Theme theme);

} // namespace lcw
