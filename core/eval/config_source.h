#pragma once
/// \file
/// Configurations that are not the recipe applied to the open model: another model file of the
/// same vocabulary (a GGUF quantised elsewhere, the same weights in another format), compared
/// with the baseline on its token ids (lcw-cli `--compare-model`, the Compare view's "Add model
/// file…").
#include "core/model/model.h"

#include <memory>
#include <string>

namespace lcw {

/// Stored bits per weight of a model file's tensors (stored bytes × 8 / parameters; 0 for a
/// model without tensors).
double modelBitsPerWeight(const Model& m);

/// Loads `path` as a configuration to compare with `base`. Throws Error naming both files when
/// the vocabularies differ ("… has a vocabulary of N tokens, BASE M; they cannot be compared"),
/// and what Model::load throws otherwise.
std::unique_ptr<Model> loadCompareModel(const std::string& path, const Model& base,
                                        const LoadOptions& opts = {});

} // namespace lcw
