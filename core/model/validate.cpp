// Structural validation shared by every loader: after this passes, the runtime may index
// tensors by the spec's dimensions without further checks.
#include "core/common/error.h"
#include "core/io/tensor_names.h"
#include "core/model/loaders.h"

namespace lcw::detail {

namespace {

std::string shapeStr(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

std::string fileNameHint(const ModelSpec& spec, const std::string& canonical) {
    std::optional<std::string> n;
    if (spec.sourceFormat == "safetensors")
        n = hfFromCanonical(canonical);
    else if (spec.sourceFormat == "gguf")
        n = ggufFromCanonical(canonical);
    return n ? " ('" + *n + "')" : std::string();
}

void checkTensor(const Model& m, const std::string& source, const std::string& name,
                 const std::vector<int64_t>& shape) {
    const TensorView* t = m.find(name);
    if (!t)
        throw FormatError(source, "missing tensor '" + name + "'" + fileNameHint(m.spec(), name));
    const std::string file = t->file.empty() ? source : t->file;
    if (t->shape != shape)
        throw FormatError(file, "tensor '" + t->fileName + "' (" + name + ") has shape " +
                                    shapeStr(t->shape) + ", expected " + shapeStr(shape));
    if (!dtypeIsFloatLike(t->dtype))
        throw FormatError(file, "tensor '" + t->fileName + "' (" + name + ") has dtype " +
                                    std::string(dtypeName(t->dtype)) +
                                    ", which is not a float or GGUF block type");
    if (t->numel() > 0 && t->data == nullptr)
        throw FormatError(file, "tensor '" + t->fileName + "' (" + name + ") has no data");
    const auto need = dtypeBytesFor(t->dtype, uint64_t(t->numel()));
    if (!need || *need != t->nbytes || t->cols() % dtypeBlockElems(t->dtype) != 0)
        throw FormatError(file, "tensor '" + t->fileName + "' (" + name + ") byte size " +
                                    std::to_string(t->nbytes) + " does not match its shape " +
                                    shapeStr(t->shape) + " and dtype " +
                                    std::string(dtypeName(t->dtype)));
}

} // namespace

void validateLlamaFamily(const Model& m, const std::string& source) {
    const ModelSpec& s = m.spec();
    auto bad = [&](const std::string& what) { throw FormatError(source, what); };
    if (s.dim <= 0) bad("model dimension must be positive");
    if (s.nLayers <= 0) bad("layer count must be positive");
    if (s.nHeads <= 0 || s.nKvHeads <= 0) bad("head counts must be positive");
    if (s.nHeads % s.nKvHeads != 0)
        bad("head count " + std::to_string(s.nHeads) + " is not a multiple of the KV head count " +
            std::to_string(s.nKvHeads));
    if (s.headDim <= 0 || s.headDim % 2 != 0)
        bad("head dimension " + std::to_string(s.headDim) + " must be positive and even");
    if (s.hidden <= 0) bad("MLP hidden size must be positive");
    if (s.vocab <= 0) bad("vocabulary size must be positive");
    if (s.nLayers > 100000 || s.nHeads > 100000 || s.dim > (int64_t(1) << 24) ||
        s.headDim > (int64_t(1) << 20) || s.hidden > (int64_t(1) << 26) ||
        s.vocab > (int64_t(1) << 31))
        bad("dimensions are implausibly large");
    if (!(s.normEps > 0)) bad("norm epsilon must be positive");
    if (!(s.rope.theta > 0)) bad("rope theta must be positive");

    const int64_t qDim = s.nHeads * s.headDim;
    const int64_t kvDim = s.nKvHeads * s.headDim;
    checkTensor(m, source, "embed", {s.vocab, s.dim});
    checkTensor(m, source, "final_norm", {s.dim});
    if (!s.tiedEmbeddings || m.find("lm_head")) checkTensor(m, source, "lm_head", {s.vocab, s.dim});
    for (int64_t l = 0; l < s.nLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        checkTensor(m, source, p + "attn_norm", {s.dim});
        checkTensor(m, source, p + "mlp_norm", {s.dim});
        checkTensor(m, source, p + "attn.q", {qDim, s.dim});
        checkTensor(m, source, p + "attn.k", {kvDim, s.dim});
        checkTensor(m, source, p + "attn.v", {kvDim, s.dim});
        checkTensor(m, source, p + "attn.o", {s.dim, qDim});
        checkTensor(m, source, p + "mlp.gate", {s.hidden, s.dim});
        checkTensor(m, source, p + "mlp.up", {s.hidden, s.dim});
        checkTensor(m, source, p + "mlp.down", {s.dim, s.hidden});
        if (s.attnBias) {
            checkTensor(m, source, p + "attn.q.bias", {qDim});
            checkTensor(m, source, p + "attn.k.bias", {kvDim});
            checkTensor(m, source, p + "attn.v.bias", {kvDim});
        }
        if (s.attnOutBias) checkTensor(m, source, p + "attn.o.bias", {s.dim});
        if (s.mlpBias) {
            checkTensor(m, source, p + "mlp.gate.bias", {s.hidden});
            checkTensor(m, source, p + "mlp.up.bias", {s.hidden});
            checkTensor(m, source, p + "mlp.down.bias", {s.dim});
        }
        if (s.qkNorm) {
            checkTensor(m, source, p + "attn.q_norm", {s.headDim});
            checkTensor(m, source, p + "attn.k_norm", {s.headDim});
        }
    }
}

} // namespace lcw::detail
