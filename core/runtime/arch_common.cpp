// Weight binding helpers shared by the architecture runners.
#include "core/common/error.h"
#include "core/runtime/arch.h"

namespace lcw::runtime {

namespace {
std::string shapeString(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}
} // namespace

const TensorView& checkTensor(const TensorView& t, const std::string& name,
                              const std::vector<int64_t>& shape) {
    if (t.shape != shape)
        throw Error((t.file.empty() ? std::string() : t.file + ": ") + "tensor '" + name +
                    "' has shape " + shapeString(t.shape) + ", the runtime expects " +
                    shapeString(shape));
    if (!dtypeIsFloatLike(t.dtype))
        throw UnsupportedError((t.file.empty() ? std::string() : t.file + ": ") + "tensor '" +
                               name + "' has dtype " + std::string(dtypeName(t.dtype)) +
                               ", which the runtime cannot use as a weight");
    return t;
}

const TensorView& requireTensor(const WeightSource& w, const std::string& name,
                                const std::vector<int64_t>& shape) {
    return checkTensor(w.get(name), name, shape);
}

std::vector<float> toFloat(const TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    if (t.numel() > 0) kernels::dequantizeRows(t, 0, t.rows(), v.data());
    return v;
}

std::vector<float> optionalVector(const WeightSource& w, const std::string& name, int64_t n) {
    const TensorView* t = w.find(name);
    if (!t) return {};
    if (t->numel() != n)
        throw Error((t->file.empty() ? std::string() : t->file + ": ") + "tensor '" + name +
                    "' has shape " + shapeString(t->shape) + ", expected " + std::to_string(n) +
                    " elements");
    return toFloat(*t);
}

Norm bindNorm(const WeightSource& w, const ModelSpec& s, const std::string& name, int64_t n) {
    Norm r;
    r.eps = s.normEps;
    r.layer = s.norm == NormType::LayerNorm;
    r.w = toFloat(requireTensor(w, name, {n}));
    if (s.normPlusOne)
        for (float& x : r.w) x += 1.0f;
    r.b = optionalVector(w, name + ".bias", n);
    return r;
}

} // namespace lcw::runtime
