#include "core/compress/folding.h"

#include "core/common/error.h"
#include "core/io/quants.h"

#include <cstring>

namespace lcw::compress {

std::vector<float> tensorFloats(const TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    if (t.dtype == DType::F32) {
        std::memcpy(v.data(), t.data, v.size() * sizeof(float));
    } else {
        const int64_t rows = t.rows(), cols = t.cols();
        for (int64_t r = 0; r < rows; ++r)
            dequantizeRow(t.dtype, t.row(r), v.data() + r * cols, cols);
    }
    return v;
}

bool BlockTensors::has(const std::string& name) const {
    return m_values.count(name) || m_src.find(name) != nullptr;
}

std::vector<float>& BlockTensors::get(const std::string& name) {
    auto it = m_values.find(name);
    if (it != m_values.end()) return it->second;
    return m_values[name] = tensorFloats(m_src.get(name));
}

int64_t BlockTensors::rows(const std::string& name) const {
    return m_src.get(name).rows();
}
int64_t BlockTensors::cols(const std::string& name) const {
    return m_src.get(name).cols();
}

bool findFoldSite(const WeightSource& w, int layer, const std::string& linear, FoldSite& site,
                  std::string& why) {
    const ModelSpec& s = w.spec();
    const std::string p = "layers." + std::to_string(layer) + ".";
    if (s.isMamba() || s.arch == "mamba") {
        why = "Mamba blocks have no foldable norm in front of their projections";
        return false;
    }
    const bool normOk =
        s.residual == ResidualStyle::PreNorm && !s.normPlusOne && !s.residualFromNorm;
    auto normWhy = [&] {
        return s.residual != ResidualStyle::PreNorm ? std::string("the block is not pre-norm")
               : s.normPlusOne                      ? std::string("the norm scales by (1 + w)")
                               : std::string("the residual starts from the norm output");
    };
    site = {};
    if (linear == p + "attn.q" || linear == p + "attn.k" || linear == p + "attn.v") {
        if (!normOk) return why = normWhy(), false;
        site.kind = "attn_in";
        site.prev = p + "attn_norm";
        site.linears = {p + "attn.q", p + "attn.k", p + "attn.v"};
        site.channels = s.dim;
    } else if (linear == p + "attn.o") {
        if (s.nKvHeads <= 0 || s.nHeads % s.nKvHeads != 0)
            return why = "heads do not divide into kv groups", false;
        site.kind = "attn_o";
        site.prev = p + "attn.v";
        site.prevIsNorm = false;
        site.linears = {p + "attn.o"};
        site.channels = s.nHeads * s.headDim;
        const int64_t rep = s.nHeads / s.nKvHeads;
        site.kvChannel.resize(size_t(site.channels));
        for (int64_t h = 0; h < s.nHeads; ++h)
            for (int64_t d = 0; d < s.headDim; ++d)
                site.kvChannel[size_t(h * s.headDim + d)] = (h / rep) * s.headDim + d;
    } else if (linear == p + "mlp.gate" || linear == p + "mlp.up") {
        if (!normOk) return why = normWhy(), false;
        if (s.isMoe()) return why = "mixture-of-experts MLP", false;
        site.kind = "mlp_in";
        site.prev = p + "mlp_norm";
        site.linears = s.gatedMlp ? std::vector<std::string>{p + "mlp.gate", p + "mlp.up"}
                                  : std::vector<std::string>{p + "mlp.up"};
        site.channels = s.dim;
    } else if (linear == p + "mlp.down") {
        if (!s.gatedMlp) return why = "the MLP activation sits between up and down", false;
        if (s.isMoe()) return why = "mixture-of-experts MLP", false;
        site.kind = "mlp_down";
        site.prev = p + "mlp.up";
        site.prevIsNorm = false;
        site.linears = {p + "mlp.down"};
        site.channels = s.hidden;
    } else {
        why = "no foldable op precedes " + linear;
        return false;
    }
    if (!w.find(site.prev)) return why = "the model has no " + site.prev, false;
    for (const auto& l : site.linears)
        if (!w.find(l)) return why = "the model has no " + l, false;
    return true;
}

void applyFold(BlockTensors& bt, const FoldSite& site, const std::vector<float>& s) {
    if (int64_t(s.size()) != site.channels)
        throw ArgumentError("fold " + site.kind + ": " + std::to_string(s.size()) + " scales for " +
                            std::to_string(site.channels) + " channels");
    const std::string bias = site.prev + ".bias";
    if (site.prevIsNorm) {
        auto& nw = bt.get(site.prev);
        for (int64_t j = 0; j < site.channels; ++j) nw[size_t(j)] /= s[size_t(j)];
        bt.touch(site.prev);
        if (bt.has(bias)) {
            auto& b = bt.get(bias);
            for (int64_t j = 0; j < site.channels; ++j) b[size_t(j)] /= s[size_t(j)];
            bt.touch(bias);
        }
    } else {
        // Rows of the previous linear (one per output channel); attn_o maps through kv channels.
        auto& pw = bt.get(site.prev);
        const int64_t prow = bt.rows(site.prev), pcol = bt.cols(site.prev);
        std::vector<float> rowScale(size_t(prow), 0.0f);
        for (int64_t c = 0; c < site.channels; ++c) {
            const int64_t r = site.kvChannel.empty() ? c : site.kvChannel[size_t(c)];
            rowScale[size_t(r)] = s[size_t(c)];
        }
        for (int64_t r = 0; r < prow; ++r) {
            const float f = rowScale[size_t(r)] > 0 ? 1.0f / rowScale[size_t(r)] : 1.0f;
            for (int64_t j = 0; j < pcol; ++j) pw[size_t(r * pcol + j)] *= f;
        }
        bt.touch(site.prev);
        if (bt.has(bias)) {
            auto& b = bt.get(bias);
            for (int64_t r = 0; r < prow; ++r)
                if (rowScale[size_t(r)] > 0) b[size_t(r)] /= rowScale[size_t(r)];
            bt.touch(bias);
        }
    }
    for (const auto& l : site.linears) {
        auto& w = bt.get(l);
        const int64_t rows = bt.rows(l), cols = bt.cols(l);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) w[size_t(r * cols + j)] *= s[size_t(j)];
        bt.touch(l);
    }
}

} // namespace lcw::compress
