#pragma once
// Helpers of the core tests that build recipes and compare sessions (no Qt).
#include "core/compress/recipe.h"
#include "core/runtime/cpu/kernels.h"
#include "core/runtime/session.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace lcwtest {

/// JSON written with single quotes (readable inside C++ string literals) as real JSON.
inline std::string J(std::string s) {
    for (auto& c : s)
        if (c == '\'') c = '"';
    return s;
}

/// A recipe from single-quoted JSON (J()).
inline lcw::compress::Recipe recipeFromQuoted(const std::string& text) {
    return lcw::compress::Recipe::fromJson(nlohmann::json::parse(J(text)));
}

/// A tensor's values as floats (any dtype), row-major.
inline std::vector<float> tensorFloats(const lcw::TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    lcw::kernels::dequantizeRows(t, 0, t.rows(), v.data());
    return v;
}

/// Whether two weight sources (an overlay and its saved-and-reloaded copy) give identical,
/// finite logits for a fixed short sequence.
inline bool sameFiniteLogits(const lcw::WeightSource& a, const lcw::WeightSource& b) {
    const std::vector<int32_t> ids = {1, 5, 9, 23, 40, 7, 3, 11};
    std::vector<float> la, lb;
    {
        lcw::Session s(a);
        s.forward(ids, la, true);
    }
    {
        lcw::Session s(b);
        s.forward(ids, lb, true);
    }
    if (la != lb || la.empty()) return false;
    for (float v : la)
        if (!std::isfinite(v)) return false;
    return true;
}

} // namespace lcwtest
