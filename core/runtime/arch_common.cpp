// Weight binding helpers shared by the architecture runners.
#include "core/common/error.h"
#include "core/runtime/arch.h"
#include "core/runtime/cpu/packed_linear.h"

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

int64_t Weight::rows() const {
    return p ? p->rows() : t ? t->rows() : 0;
}
int64_t Weight::cols() const {
    return p ? p->cols() : t ? t->cols() : 0;
}
void Weight::rowsF32(int64_t r0, int64_t n, float* dst) const {
    if (p)
        p->dequantizeRows(r0, n, dst);
    else
        kernels::dequantizeRows(*t, r0, n, dst);
}
kernels::LinearJob Weight::job(float* y, int64_t ldy, const float* bias,
                               const ActQuantSpec* act) const {
    return {t, y, ldy, bias, p, p ? act : nullptr};
}

Weight findWeight(const WeightSource& w, const std::string& name) {
    Weight r;
    r.p = w.packedLinear(name);
    if (!r.p) r.t = w.find(name);
    return r;
}

const Weight& checkWeight(const Weight& wt, const std::string& label, int64_t rows, int64_t cols) {
    if (wt.t) {
        checkTensor(*wt.t, label, {rows, cols});
    } else if (!wt.p) {
        throw Error("tensor '" + label + "' is missing");
    } else if (wt.p->rows() != rows || wt.p->cols() != cols) {
        throw Error("tensor '" + label + "' has shape " +
                    shapeString({wt.p->rows(), wt.p->cols()}) + ", the runtime expects " +
                    shapeString({rows, cols}));
    }
    return wt;
}

Weight requireWeight(const WeightSource& w, const std::string& name, int64_t rows, int64_t cols) {
    const Weight r = findWeight(w, name);
    if (!r) throw Error("model has no tensor '" + name + "'");
    checkWeight(r, name, rows, cols);
    return r;
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
