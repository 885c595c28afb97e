// Structural validation shared by every loader: after this passes, the runtime may index
// tensors by the spec's dimensions without further checks.
#include "core/common/error.h"
#include "core/io/tensor_names.h"
#include "core/model/expected_tensors.h"
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
        n = hfFromCanonical(canonical, spec.arch);
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

} // namespace lcw::detail

namespace lcw {

std::vector<ExpectedTensor> expectedTensors(const ModelSpec& s) {
    std::vector<ExpectedTensor> out;
    auto add = [&](std::string name, std::vector<int64_t> shape) {
        out.push_back({std::move(name), std::move(shape)});
    };
    const bool ln = s.norm == NormType::LayerNorm && s.normBias;
    auto norm = [&](const std::string& name, int64_t n) {
        add(name, {n});
        if (ln) add(name + ".bias", {n});
    };
    const int64_t ed = s.embeddingDim();
    add("embed", {s.vocab, ed});
    if (s.isMamba()) {
        norm("final_norm", s.dim);
        if (!s.tiedEmbeddings) add("lm_head", {s.vocab, s.dim});
        const int64_t di = s.ssmInner, N = s.ssmState, R = s.ssmDtRank;
        for (int64_t l = 0; l < s.nLayers; ++l) {
            const std::string p = "layers." + std::to_string(l) + ".";
            add(p + "norm", {s.dim});
            add(p + "mixer.in_proj", {2 * di, s.dim});
            if (s.ssmBias) add(p + "mixer.in_proj.bias", {2 * di});
            add(p + "mixer.conv1d", {di, 1, s.ssmConv});
            if (s.ssmConvBias) add(p + "mixer.conv1d.bias", {di});
            add(p + "mixer.x_proj", {R + 2 * N, di});
            add(p + "mixer.dt_proj", {di, R});
            add(p + "mixer.dt_proj.bias", {di});
            add(p + "mixer.A_log", {di, N});
            add(p + "mixer.D", {di});
            add(p + "mixer.out_proj", {s.dim, di});
            if (s.ssmBias) add(p + "mixer.out_proj.bias", {s.dim});
        }
        return out;
    }
    if (s.posEmbed == PosEmbedding::Learned) add("pos_embed", {s.maxSeq + s.posOffset, s.dim});
    if (s.embedNorm) norm("embed_norm", s.dim);
    if (ed != s.dim) {
        add("embed_proj_in", {s.dim, ed});
        add("embed_proj_out", {ed, s.dim});
    }
    if (s.finalNorm) norm("final_norm", s.dim);
    if (!s.tiedEmbeddings) add("lm_head", {s.vocab, ed});
    const int64_t qDim = s.nHeads * s.headDim;
    const int64_t kvDim = s.nKvHeads * s.headDim;
    for (int64_t l = 0; l < s.nLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        norm(p + "attn_norm", s.dim);
        if (!(s.residual == ResidualStyle::Parallel && s.sharedParallelNorm))
            norm(p + "mlp_norm", s.dim);
        if (s.postNorms) {
            norm(p + "attn_post_norm", s.dim);
            norm(p + "mlp_post_norm", s.dim);
        }
        add(p + "attn.q", {qDim, s.dim});
        add(p + "attn.k", {kvDim, s.dim});
        add(p + "attn.v", {kvDim, s.dim});
        add(p + "attn.o", {s.dim, qDim});
        if (s.attnBias) {
            add(p + "attn.q.bias", {qDim});
            add(p + "attn.k.bias", {kvDim});
            add(p + "attn.v.bias", {kvDim});
        }
        if (s.attnOutBias) add(p + "attn.o.bias", {s.dim});
        if (s.qkNorm && s.qkNormPerHead) {
            for (int64_t h = 0; h < s.nHeads; ++h)
                add(p + "attn.q_norm." + std::to_string(h), {s.headDim});
            for (int64_t h = 0; h < s.nKvHeads; ++h)
                add(p + "attn.k_norm." + std::to_string(h), {s.headDim});
        } else if (s.qkNorm) {
            add(p + "attn.q_norm", {s.headDim});
            add(p + "attn.k_norm", {s.headDim});
        }
        if (s.isMoe()) {
            add(p + "mlp.router", {s.nExperts, s.dim});
            for (int64_t e = 0; e < s.nExperts; ++e) {
                const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
                add(x + "gate", {s.hidden, s.dim});
                add(x + "up", {s.hidden, s.dim});
                add(x + "down", {s.dim, s.hidden});
            }
            continue;
        }
        if (s.gatedMlp) add(p + "mlp.gate", {s.hidden, s.dim});
        add(p + "mlp.up", {s.hidden, s.dim});
        add(p + "mlp.down", {s.dim, s.hidden});
        if (s.mlpBias) {
            if (s.gatedMlp) add(p + "mlp.gate.bias", {s.hidden});
            add(p + "mlp.up.bias", {s.hidden});
            add(p + "mlp.down.bias", {s.dim});
        }
    }
    return out;
}

} // namespace lcw

namespace lcw::detail {

void validateModel(const Model& m, const std::string& source) {
    const ModelSpec& s = m.spec();
    auto bad = [&](const std::string& what) { throw FormatError(source, what); };
    if (s.dim <= 0) bad("model dimension must be positive");
    if (s.nLayers <= 0) bad("layer count must be positive");
    if (s.vocab <= 0) bad("vocabulary size must be positive");
    if (!(s.normEps > 0)) bad("norm epsilon must be positive");
    if (s.isMamba()) {
        if (s.ssmInner <= 0 || s.ssmState <= 0 || s.ssmConv <= 0 || s.ssmDtRank <= 0)
            bad("mamba dimensions must be positive");
        if (s.nLayers > 100000 || s.dim > (int64_t(1) << 24) || s.ssmInner > (int64_t(1) << 26) ||
            s.ssmState > 4096 || s.ssmConv > 1024 || s.vocab > (int64_t(1) << 31))
            bad("dimensions are implausibly large");
    } else {
        if (s.nHeads <= 0 || s.nKvHeads <= 0) bad("head counts must be positive");
        if (s.nHeads % s.nKvHeads != 0)
            bad("head count " + std::to_string(s.nHeads) +
                " is not a multiple of the KV head count " + std::to_string(s.nKvHeads));
        if (s.headDim <= 0 || s.headDim % 2 != 0)
            bad("head dimension " + std::to_string(s.headDim) + " must be positive and even");
        if (s.hidden <= 0) bad("MLP hidden size must be positive");
        if (s.nLayers > 100000 || s.nHeads > 100000 || s.dim > (int64_t(1) << 24) ||
            s.headDim > (int64_t(1) << 20) || s.hidden > (int64_t(1) << 26) ||
            s.vocab > (int64_t(1) << 31) || s.nExperts > 4096)
            bad("dimensions are implausibly large");
        if (s.posEmbed == PosEmbedding::Rope && !(s.rope.theta > 0))
            bad("rope theta must be positive");
        if (s.isMoe() && (s.nExpertsPerTok <= 0 || s.nExpertsPerTok > s.nExperts))
            bad("experts per token must be in [1, " + std::to_string(s.nExperts) + "]");
        if (s.posEmbed == PosEmbedding::Learned && (s.maxSeq <= 0 || s.maxSeq > (int64_t(1) << 24)))
            bad("learned position table size is implausible");
    }
    // The expected list grows with layers × heads (per-head norms) and layers × experts: a
    // spec that implies more tensors than the files hold is refused before the list is built
    // (a hostile config could otherwise ask for 10^10 names).
    int64_t atLeast = s.nLayers;
    if (!s.isMamba() && s.qkNorm && s.qkNormPerHead) atLeast += s.nLayers * (s.nHeads + s.nKvHeads);
    if (!s.isMamba() && s.isMoe()) atLeast += s.nLayers * 3 * s.nExperts;
    if (atLeast > int64_t(m.tensors().size()))
        bad("the configuration implies at least " + std::to_string(atLeast) +
            " tensors but the files hold only " + std::to_string(m.tensors().size()));
    for (const auto& e : expectedTensors(s)) checkTensor(m, source, e.name, e.shape);
}

} // namespace lcw::detail
