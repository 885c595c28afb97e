// Fused and transposed file tensors → the logical [out, in] tensors the rest of lcw uses.
#include "core/common/error.h"
#include "core/model/loaders.h"

#include <cstring>

namespace lcw::detail {

namespace {

// A tensor seen as `units` equal slices: rows of a matrix, elements of a vector.
struct Units {
    int64_t n = 0;
    uint64_t bytes = 0;
};
Units unitsOf(const TensorView& t) {
    if (t.shape.size() == 1)
        return {t.shape[0], t.shape[0] > 0 ? t.nbytes / uint64_t(t.shape[0]) : 0};
    return {t.rows(), t.rowBytes()};
}

TensorView sliceView(const TensorView& t, std::string name, int64_t u0, int64_t nu) {
    const Units u = unitsOf(t);
    TensorView v = t;
    v.name = std::move(name);
    v.data = t.data + uint64_t(u0) * u.bytes;
    v.nbytes = uint64_t(nu) * u.bytes;
    if (t.shape.size() == 1)
        v.shape = {nu};
    else
        v.shape = {nu, t.cols()};
    v.fileRowOffset = t.fileRowOffset + u0;
    return v;
}

// Gathers runs of `runLen` units starting at each of `starts` into one owned tensor.
TensorView gatherView(Model& m, const TensorView& t, std::string name,
                      const std::vector<int64_t>& starts, int64_t runLen) {
    const Units u = unitsOf(t);
    std::vector<std::byte> buf(size_t(uint64_t(starts.size()) * uint64_t(runLen) * u.bytes));
    std::byte* dst = buf.data();
    for (int64_t s : starts) {
        std::memcpy(dst, t.data + uint64_t(s) * u.bytes, size_t(uint64_t(runLen) * u.bytes));
        dst += uint64_t(runLen) * u.bytes;
    }
    TensorView v = t;
    v.name = std::move(name);
    v.nbytes = buf.size();
    const int64_t nu = int64_t(starts.size()) * runLen;
    if (t.shape.size() == 1)
        v.shape = {nu};
    else
        v.shape = {nu, t.cols()};
    v.fileRowOffset = 0;
    v.data = m.ownBuffer(std::move(buf));
    return v;
}

// GPT-2 Conv1D: [in, out] in the file → an owned [out, in] copy.
TensorView transposed(Model& m, const TensorView& t) {
    if (t.shape.size() != 2 || dtypeBlockElems(t.dtype) != 1 || t.numel() == 0)
        throw FormatError(t.file,
                          "tensor '" + t.fileName + "' must be a 2-D float matrix (Conv1D weight)");
    const int64_t in = t.shape[0], out = t.shape[1];
    const uint64_t es = t.nbytes / uint64_t(t.numel());
    std::vector<std::byte> buf(size_t(t.nbytes));
    for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < out; ++o)
            std::memcpy(buf.data() + (uint64_t(o) * uint64_t(in) + uint64_t(i)) * es,
                        t.data + (uint64_t(i) * uint64_t(out) + uint64_t(o)) * es, size_t(es));
    TensorView v = t;
    v.shape = {out, in};
    v.data = m.ownBuffer(std::move(buf));
    v.fileTransposed = true;
    return v;
}

bool endsWith(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
}

// Splits fused qkv (weights and biases) into q, k, v following the spec's layout.
void addQkvSplit(Model& m, const ModelSpec& s, const TensorView& t, const std::string& layerHead,
                 bool bias) {
    const int64_t hd = s.headDim, qDim = s.nHeads * hd, kvDim = s.nKvHeads * hd;
    const Units u = unitsOf(t);
    if (u.n != qDim + 2 * kvDim || (!bias && t.shape.size() != 2) || (bias && t.shape.size() != 1))
        throw FormatError(t.file, "fused tensor '" + t.fileName + "' has " + std::to_string(u.n) +
                                      (bias ? " elements" : " rows") + ", expected " +
                                      std::to_string(qDim + 2 * kvDim) + " (q + k + v)");
    const std::string sfx = bias ? ".bias" : "";
    if (s.qkvLayout == QkvLayout::Contiguous) {
        m.addTensor(sliceView(t, layerHead + "attn.q" + sfx, 0, qDim));
        m.addTensor(sliceView(t, layerHead + "attn.k" + sfx, qDim, kvDim));
        m.addTensor(sliceView(t, layerHead + "attn.v" + sfx, qDim + kvDim, kvDim));
        return;
    }
    // PerHead: groups = heads, one q per group; PerKvGroup: groups = KV heads.
    const int64_t groups = s.qkvLayout == QkvLayout::PerHead ? s.nHeads : s.nKvHeads;
    const int64_t qPer = s.nHeads / groups;
    std::vector<int64_t> qs, ks, vs;
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t base = g * (qPer + 2) * hd;
        for (int64_t i = 0; i < qPer; ++i) qs.push_back(base + i * hd);
        ks.push_back(base + qPer * hd);
        vs.push_back(base + (qPer + 1) * hd);
    }
    if (s.qkvLayout == QkvLayout::PerHead && s.nKvHeads != s.nHeads)
        throw FormatError(t.file, "per-head fused qkv needs as many KV heads as heads");
    m.addTensor(gatherView(m, t, layerHead + "attn.q" + sfx, qs, hd));
    m.addTensor(gatherView(m, t, layerHead + "attn.k" + sfx, ks, hd));
    m.addTensor(gatherView(m, t, layerHead + "attn.v" + sfx, vs, hd));
}

} // namespace

bool isConv1dWeight(const ModelSpec& s, const TensorView& v) {
    return s.conv1dWeights && v.shape.size() == 2 &&
           (endsWith(v.name, ".attn.qkv") || endsWith(v.name, ".attn.o") ||
            endsWith(v.name, ".mlp.up") || endsWith(v.name, ".mlp.down"));
}

void addSplitTensor(Model& m, const ModelSpec& s, TensorView v) {
    if (isConv1dWeight(s, v) && !v.fileTransposed) v = transposed(m, v);
    if (endsWith(v.name, ".attn.qkv") || endsWith(v.name, ".attn.qkv.bias")) {
        const bool bias = endsWith(v.name, ".bias");
        const std::string head = v.name.substr(0, v.name.size() - (bias ? 13 : 8));
        addQkvSplit(m, s, v, head, bias);
        return;
    }
    // llama.cpp stores Phi-3's gate_up_proj as ffn_up with 2 * hidden rows
    if (s.gateUpFused && s.sourceFormat == "gguf" && endsWith(v.name, ".mlp.up") &&
        v.shape.size() == 2 && v.shape[0] == 2 * s.hidden)
        v.name = v.name.substr(0, v.name.size() - 2) + "gate_up";
    // llama.cpp merged experts: [experts, rows, cols] → one [rows, cols] view per expert
    for (const char* role : {"gate", "up", "down"}) {
        const std::string sfx = std::string(".mlp.experts_") + role;
        if (!endsWith(v.name, sfx)) continue;
        if (v.shape.size() != 3 || v.shape[0] != s.nExperts)
            throw FormatError(v.file, "merged expert tensor '" + v.fileName + "' must be [" +
                                          std::to_string(s.nExperts) + ", rows, cols]");
        const std::string head = v.name.substr(0, v.name.size() - sfx.size() + 1);
        const int64_t rows = v.shape[1];
        TensorView flat = v;
        flat.shape = {v.shape[0] * rows, v.shape[2]};
        for (int64_t e = 0; e < s.nExperts; ++e)
            m.addTensor(sliceView(flat, head + "mlp.experts." + std::to_string(e) + "." + role,
                                  e * rows, rows));
        return;
    }
    if (endsWith(v.name, ".mlp.gate_up")) {
        const std::string head = v.name.substr(0, v.name.size() - 11);
        if (v.shape.size() != 2 || v.shape[0] != 2 * s.hidden)
            throw FormatError(v.file, "fused tensor '" + v.fileName + "' must have " +
                                          std::to_string(2 * s.hidden) + " rows (gate + up)");
        m.addTensor(sliceView(v, head + "mlp.gate", 0, s.hidden));
        m.addTensor(sliceView(v, head + "mlp.up", s.hidden, s.hidden));
        return;
    }
    m.addTensor(std::move(v));
}

} // namespace lcw::detail
