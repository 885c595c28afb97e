#pragma once
/// \file
/// The canonical tensors (and their shapes) each architecture's forward needs, derived from the
/// spec: the single list that loaders validate against and `lcw-cli info` can print.
#include "core/model/model_spec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct ExpectedTensor {
    std::string name;
    std::vector<int64_t> shape;
};

/// Every tensor the forward of `spec.arch` reads, in a stable order (model-level first, then
/// layer by layer). Throws ArgumentError when the spec's dimensions are inconsistent.
std::vector<ExpectedTensor> expectedTensors(const ModelSpec& spec);

} // namespace lcw
