#include "core/compress/structured.h"

#include "core/common/error.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lcw::compress {

const char* structuredScoreName(StructuredScore s) {
    switch (s) {
    case StructuredScore::Magnitude:
        return "magnitude";
    case StructuredScore::Wanda:
        return "wanda";
    case StructuredScore::Loss:
        return "loss";
    }
    return "?";
}

namespace {

double blockSquares(const UnitMatrix& m, int64_t u) {
    double s = 0;
    if (m.unitsAreRows) {
        for (int64_t r = u * m.width; r < (u + 1) * m.width; ++r)
            for (int64_t c = 0; c < m.cols; ++c)
                s += double(m.w[r * m.cols + c]) * m.w[r * m.cols + c];
    } else {
        for (int64_t r = 0; r < m.rows; ++r)
            for (int64_t c = u * m.width; c < (u + 1) * m.width; ++c)
                s += double(m.w[r * m.cols + c]) * m.w[r * m.cols + c];
    }
    return s;
}

void checkUnits(const UnitMatrix& m, int64_t units) {
    const int64_t dim = m.unitsAreRows ? m.rows : m.cols;
    if (m.width < 1 || units * m.width != dim)
        throw ArgumentError("structured pruning: " + std::to_string(units) + " units of width " +
                            std::to_string(m.width) + " do not tile a dimension of " +
                            std::to_string(dim));
}

} // namespace

std::vector<double> unitImportance(int64_t units, const UnitMatrix& out,
                                   const std::vector<UnitMatrix>& inputs, const double* colNorm,
                                   const double* H, StructuredScore score) {
    checkUnits(out, units);
    for (const auto& m : inputs) checkUnits(m, units);
    std::vector<double> imp(size_t(units), 0.0);
    for (int64_t u = 0; u < units; ++u) {
        switch (score) {
        case StructuredScore::Magnitude:
            imp[size_t(u)] = blockSquares(out, u);
            for (const auto& m : inputs) imp[size_t(u)] += blockSquares(m, u);
            break;
        case StructuredScore::Wanda: {
            if (!colNorm) throw ArgumentError("structured wanda importance needs activation norms");
            double s = 0;
            for (int64_t r = 0; r < out.rows; ++r)
                for (int64_t c = u * out.width; c < (u + 1) * out.width; ++c)
                    s += std::fabs(double(out.w[r * out.cols + c])) * colNorm[c];
            imp[size_t(u)] = s;
            break;
        }
        case StructuredScore::Loss: {
            if (!H) throw ArgumentError("structured loss importance needs the Gram matrix");
            // tr(Wb Hb Wbᵀ) = Σ_r Σ_{a,b ∈ unit} W[r,a] H[a,b] W[r,b]
            double s = 0;
            const int64_t c0 = u * out.width, c1 = c0 + out.width;
            for (int64_t r = 0; r < out.rows; ++r) {
                const float* wr = out.w + r * out.cols;
                for (int64_t a = c0; a < c1; ++a) {
                    double t = 0;
                    for (int64_t b = c0; b < c1; ++b) t += H[a * out.cols + b] * wr[b];
                    s += wr[a] * t;
                }
            }
            imp[size_t(u)] = s;
            break;
        }
        }
    }
    return imp;
}

std::vector<int64_t> keptUnits(const std::vector<double>& importance, double ratio) {
    const int64_t n = int64_t(importance.size());
    const int64_t keep = std::clamp<int64_t>(n - int64_t(std::llround(ratio * double(n))), 1, n);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), int64_t(0));
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
        return importance[size_t(a)] > importance[size_t(b)];
    });
    idx.resize(size_t(keep));
    std::sort(idx.begin(), idx.end());
    return idx;
}

std::vector<float> gatherUnits(const UnitMatrix& m, const std::vector<int64_t>& kept) {
    std::vector<float> out;
    const int64_t k = int64_t(kept.size());
    if (m.unitsAreRows) {
        out.resize(size_t(k * m.width * m.cols));
        for (int64_t i = 0; i < k; ++i)
            std::copy(m.w + kept[size_t(i)] * m.width * m.cols,
                      m.w + (kept[size_t(i)] + 1) * m.width * m.cols,
                      out.begin() + i * m.width * m.cols);
    } else {
        const int64_t nc = k * m.width;
        out.resize(size_t(m.rows * nc));
        for (int64_t r = 0; r < m.rows; ++r)
            for (int64_t i = 0; i < k; ++i)
                std::copy(m.w + r * m.cols + kept[size_t(i)] * m.width,
                          m.w + r * m.cols + (kept[size_t(i)] + 1) * m.width,
                          out.begin() + r * nc + i * m.width);
    }
    return out;
}

} // namespace lcw::compress
