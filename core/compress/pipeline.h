#pragma once
/// \file
/// Internal to core/compress: the calibrated, block-by-block path of compress().
#include "core/compress/compressed_model.h"

#include <optional>
#include <string>

namespace lcw::compress {

/// compress() when CompressOptions::calibration is set.
CompressResult compressCalibrated(const Model& base, const Recipe& recipe, Plan plan,
                                  Progress& progress, const CompressOptions& opts);

/// The outlier threshold the recipe's rules resolve for layer `name` (the last matching rule
/// with an outliers section; a section without "threshold" means 6.0), none when off.
std::optional<double> outlierThreshold(const Recipe& r, const std::string& name);

} // namespace lcw::compress
