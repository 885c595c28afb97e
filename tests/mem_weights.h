#pragma once
// An in-memory WeightSource for tests: small hand-built models without files.
#include "core/io/quants.h"
#include "core/model/model.h"

#include <cstddef>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace lcwtest {

class MemWeights final : public lcw::WeightSource {
public:
    lcw::ModelSpec sp;
    const lcw::ModelSpec& spec() const override { return sp; }
    const lcw::TensorView* find(std::string_view n) const override {
        auto it = m_views.find(n);
        return it == m_views.end() ? nullptr : &it->second;
    }
    /// Stores `values` as dtype `dt`; `ref` keeps what the stored bytes decode to.
    void add(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values,
             lcw::DType dt = lcw::DType::F32) {
        lcw::TensorView t;
        t.name = name;
        t.fileName = name;
        t.file = "<memory>";
        t.dtype = dt;
        t.shape = std::move(shape);
        const int64_t cols = t.cols(), rows = t.rows();
        const uint64_t rowBytes = lcw::dtypeBytesFor(dt, uint64_t(cols)).value();
        auto& bytes = m_storage.emplace_back(size_t(rowBytes * uint64_t(rows)));
        std::vector<float>& decoded = ref[name];
        decoded.resize(values.size());
        for (int64_t r = 0; r < rows; ++r) {
            lcw::quantizeRow(dt, values.data() + r * cols, bytes.data() + r * rowBytes, cols);
            lcw::dequantizeRow(dt, bytes.data() + r * rowBytes, decoded.data() + r * cols, cols);
        }
        t.data = bytes.data();
        t.nbytes = bytes.size();
        m_views[name] = t;
    }
    std::map<std::string, std::vector<float>, std::less<>> ref;

private:
    std::deque<std::vector<std::byte>> m_storage;
    std::map<std::string, lcw::TensorView, std::less<>> m_views;
};

} // namespace lcwtest
