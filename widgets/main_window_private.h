#pragma once
/// \file
/// Internal to the MainWindow files (main_window*.cpp): settings keys, project entry names and
/// small helpers they share.
#include <QString>

namespace lcw::mw {

inline constexpr auto kRecentKey = "recent/models";
inline constexpr auto kGeometryKey = "mainWindow/geometry";
inline constexpr auto kStateKey = "mainWindow/state";
inline constexpr auto kThemeKey = "view/theme";
inline constexpr auto kRecentProjectsKey = "recent/projects";
inline constexpr auto kRecentRecipesKey = "recent/recipes";
inline constexpr auto kAutosaveKey = "project/autosaveMinutes";
/// Project names of the recipe editor's recipe and of recipe files in the compare view.
inline constexpr auto kEditorRecipe = "editor";
inline constexpr auto kFileRecipePrefix = "file:";
inline constexpr auto kCompareResults = "compare";
inline constexpr auto kLayerErrors = "layer_errors";
inline constexpr auto kSensitivityScan = "sensitivity";
inline constexpr auto kImatrix = "imatrix";
/// Other model files added to the compare view: {"files": [{"name", "path"}]}.
inline constexpr auto kCompareModelFiles = "compare_model_files";
inline constexpr int kDefaultWidth = 1400;
inline constexpr int kDefaultHeight = 900;

/// Glob to an anchored regex: '*' any run, '?' one character, everything else literal.
QString globToRegex(const QString& glob);

} // namespace lcw::mw
