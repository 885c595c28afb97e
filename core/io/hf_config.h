#pragma once
/// \file
/// Hugging Face config.json → ModelSpec for every supported architecture (see
/// hfSupportedModelTypes()),
/// following transformers' defaults and semantics (both the 4.x `rope_theta` + `rope_scaling`
/// and the 5.x `rope_parameters` / `layer_types` spellings).
#include "core/model/model_spec.h"

#include <string>
#include <vector>

namespace lcw {

/// model_type values parseHfConfig accepts.
const std::vector<std::string>& hfSupportedModelTypes();

/// Refuses (FormatError naming `source`) a spec whose implied weights exceed
/// kMaxTensorElements or whose size products overflow: called on every spec built from file
/// fields before anything is sized by it.
void checkSpecSizes(const ModelSpec& s, const std::string& source);

/// Parses config.json text. `source` names the file in errors. Sets sourceFormat="safetensors"
/// and rope.interleaved=false. Throws FormatError (bad JSON, missing/invalid fields) or
/// UnsupportedError (unknown model_type, rope type, layer type) naming `source`.
/// Non-fatal oddities are appended to *warnings when given.
ModelSpec parseHfConfig(const std::string& jsonText, const std::string& source,
                        std::vector<std::string>* warnings = nullptr);
/// Reads and parses a config.json file.
ModelSpec readHfConfig(const std::string& path, std::vector<std::string>* warnings = nullptr);

} // namespace lcw
