#pragma once
/// \file
/// The base model the recipe and overlay targets use: the bundled stories260K
/// (resources/models/stories260K), loaded once per process.
#include "core/model/model.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace lcw::fuzz {

inline const Model& baseModel() {
    static const std::unique_ptr<Model> m = [] {
        const char* env = std::getenv("LCW_FUZZ_BASE_MODEL");
        const std::string path =
            env && *env ? std::string(env)
                        : std::string(LCW_SOURCE_DIR) + "/resources/models/stories260K";
        try {
            return Model::load(path);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "lcw fuzz: cannot load the base model %s: %s\n", path.c_str(),
                         e.what());
            std::exit(2);
        }
    }();
    return *m;
}

} // namespace lcw::fuzz
