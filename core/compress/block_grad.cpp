// Forward and backward of one pre-norm Llama-style block in double precision (see block_grad.h).
#include "core/compress/block_grad.h"

#include "core/common/error.h"
#include "core/common/parallel.h"
#include "core/runtime/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <string_view>

namespace lcw::compress {

namespace {

constexpr const char* kSuffix[7] = {"attn.q",   "attn.k", "attn.v",  "attn.o",
                                    "mlp.gate", "mlp.up", "mlp.down"};

MatD loadMatrix(const WeightSource& src, const std::string& name, int64_t rows, int64_t cols) {
    const TensorView* t = src.find(name);
    if (!t) throw ArgumentError("block model: the model has no tensor '" + name + "'");
    if (t->shape.size() != 2 || t->shape[0] != rows || t->shape[1] != cols)
        throw ArgumentError("block model: tensor '" + name + "' has an unexpected shape");
    std::vector<float> v(size_t(rows * cols));
    kernels::dequantizeRows(*t, 0, rows, v.data());
    return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
               v.data(), rows, cols)
        .cast<double>();
}

Eigen::VectorXd loadVector(const WeightSource& src, const std::string& name, int64_t n) {
    const TensorView* t = src.find(name);
    if (!t || t->numel() != n)
        throw ArgumentError("block model: the model has no vector '" + name + "' of size " +
                            std::to_string(n));
    std::vector<float> v(static_cast<size_t>(n));
    kernels::dequantizeRows(*t, 0, t->shape.size() == 2 ? t->shape[0] : 1, v.data());
    return Eigen::Map<const Eigen::VectorXf>(v.data(), n).cast<double>();
}

/// Causal softmax of attention scores S [T, T] in place: row t over columns 0..t, the rest zero.
void causalSoftmax(MatD& S) {
    const int64_t T = S.rows();
    for (int64_t t = 0; t < T; ++t) {
        const double mx = S.row(t).head(t + 1).maxCoeff();
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += (S(t, j) = std::exp(S(t, j) - mx));
        S.row(t).head(t + 1) /= sum;
        S.row(t).tail(T - t - 1).setZero();
    }
}

double silu(double x) {
    return x / (1.0 + std::exp(-x));
}

} // namespace

void fakeQuantRows(MatD& a, int bits, double clip, MatD* mask) {
    if (mask) *mask = MatD::Ones(a.rows(), a.cols());
    if (bits <= 0 || bits >= 16) return;
    const double qm = double((1 << (bits - 1)) - 1);
    for (int64_t r = 0; r < a.rows(); ++r) {
        const double h = clip * a.row(r).cwiseAbs().maxCoeff() / qm;
        if (!(h > 0)) continue;
        for (int64_t j = 0; j < a.cols(); ++j) {
            const double q = std::nearbyint(a(r, j) / h);
            if (mask && std::fabs(q) > qm) (*mask)(r, j) = 0.0;
            a(r, j) = std::clamp(q, -qm, qm) * h;
        }
    }
}

BlockWeights foldLet(const BlockWeights& w, const Eigen::VectorXd& sAttn,
                     const Eigen::VectorXd& sMlp, const Eigen::VectorXd& dAttn,
                     const Eigen::VectorXd& dMlp) {
    BlockWeights f = w;
    auto site = [&](const Eigen::VectorXd& s, const Eigen::VectorXd& d, const Eigen::VectorXd& g,
                    const Eigen::VectorXd& nb, Eigen::VectorXd& fg, Eigen::VectorXd& fnb,
                    std::initializer_list<int> ids) {
        if (s.size() == 0) return;
        fg = g.cwiseQuotient(s);
        if (d.size() > 0) {
            fnb = (nb.size() ? Eigen::VectorXd(nb - d) : Eigen::VectorXd(-d)).cwiseQuotient(s);
            for (int i : ids) {
                const Eigen::VectorXd wd = w.w[size_t(i)] * d;
                f.b[size_t(i)] = w.b[size_t(i)].size() ? Eigen::VectorXd(w.b[size_t(i)] + wd) : wd;
            }
        } else if (nb.size()) {
            fnb = nb.cwiseQuotient(s);
        }
        for (int i : ids) f.w[size_t(i)] = w.w[size_t(i)] * s.asDiagonal();
    };
    site(sAttn, dAttn, w.attnNorm, w.attnNormBias, f.attnNorm, f.attnNormBias, {kQ, kK, kV});
    site(sMlp, dMlp, w.mlpNorm, w.mlpNormBias, f.mlpNorm, f.mlpNormBias, {kGate, kUp});
    return f;
}

void letGrads(const BlockWeights& f, const BlockGrads& g, Eigen::VectorXd& gtAttn,
              Eigen::VectorXd& gtMlp) {
    auto site = [&](Eigen::VectorXd& gt, const Eigen::VectorXd& fg, const Eigen::VectorXd& gg,
                    const Eigen::VectorXd& fnb, const Eigen::VectorXd& gnb,
                    std::initializer_list<int> ids) {
        if (gt.size() == 0) return;
        gt = -gg.cwiseProduct(fg);
        if (fnb.size() && gnb.size()) gt -= gnb.cwiseProduct(fnb);
        for (int i : ids)
            gt += (g.w[size_t(i)].array() * f.w[size_t(i)].array())
                      .colwise()
                      .sum()
                      .transpose()
                      .matrix();
    };
    site(gtAttn, f.attnNorm, g.attnNorm, f.attnNormBias, g.attnNormBias, {kQ, kK, kV});
    site(gtMlp, f.mlpNorm, g.mlpNorm, f.mlpNormBias, g.mlpNormBias, {kGate, kUp});
}

void letShiftGrads(const BlockWeights& f, const BlockGrads& g, const Eigen::VectorXd& sAttn,
                   const Eigen::VectorXd& sMlp, Eigen::VectorXd& gdAttn, Eigen::VectorXd& gdMlp) {
    auto site = [&](Eigen::VectorXd& gd, const Eigen::VectorXd& s, const Eigen::VectorXd& gnb,
                    std::initializer_list<int> ids) {
        if (gd.size() == 0) return;
        gd = gnb.size() ? Eigen::VectorXd(-gnb) : Eigen::VectorXd::Zero(s.size());
        for (int i : ids)
            if (g.b[size_t(i)].size()) gd += f.w[size_t(i)].transpose() * g.b[size_t(i)];
        gd = gd.cwiseQuotient(s);
    };
    site(gdAttn, sAttn, g.attnNormBias, {kQ, kK, kV});
    site(gdMlp, sMlp, g.mlpNormBias, {kGate, kUp});
}

void LlamaBlock::setActivationQuant(const std::array<int, 4>& bits,
                                    const std::array<double, 4>& clip) {
    for (size_t i = 0; i < 4; ++i) {
        if (bits[i] != 0 && (bits[i] < 2 || bits[i] > 16))
            throw ArgumentError("block model: activation bits must be 2..16 (or 0 = float), got " +
                                std::to_string(bits[i]));
        if (!(clip[i] > 0 && clip[i] <= 1))
            throw ArgumentError("block model: activation clip must be in (0, 1]");
    }
    m_actBits = bits;
    m_actClip = clip;
}

const char* blockLinearSuffix(int i) {
    return kSuffix[i];
}

int blockLinearIndex(const std::string& bname, const std::string& name) {
    if (name.size() <= bname.size() || name.compare(0, bname.size(), bname) != 0 ||
        name[bname.size()] != '.')
        return -1;
    const std::string_view suffix = std::string_view(name).substr(bname.size() + 1);
    for (int i = 0; i < 7; ++i)
        if (suffix == kSuffix[i]) return i;
    return -1;
}

void BlockGrads::zeroLike(const BlockWeights& bw) {
    for (int i = 0; i < 7; ++i)
        w[size_t(i)] = MatD::Zero(bw.w[size_t(i)].rows(), bw.w[size_t(i)].cols());
    attnNorm = Eigen::VectorXd::Zero(bw.attnNorm.size());
    mlpNorm = Eigen::VectorXd::Zero(bw.mlpNorm.size());
    attnNormBias = Eigen::VectorXd::Zero(bw.attnNormBias.size());
    mlpNormBias = Eigen::VectorXd::Zero(bw.mlpNormBias.size());
    for (size_t i = 0; i < 7; ++i) b[i] = Eigen::VectorXd::Zero(bw.b[i].size());
}

BlockWeights loadBlockWeights(const WeightSource& src, int layer,
                              const std::map<std::string, std::vector<float>>* overrides) {
    const ModelSpec& s = src.spec();
    const std::string p = "layers." + std::to_string(layer) + ".";
    const int64_t qd = s.nHeads * s.headDim, kvd = s.nKvHeads * s.headDim;
    const int64_t rows[7] = {qd, kvd, kvd, s.dim, s.hidden, s.hidden, s.dim};
    const int64_t cols[7] = {s.dim, s.dim, s.dim, qd, s.dim, s.dim, s.hidden};
    BlockWeights b;
    for (int i = 0; i < 7; ++i) b.w[size_t(i)] = loadMatrix(src, p + kSuffix[i], rows[i], cols[i]);
    b.attnNorm = loadVector(src, p + "attn_norm", s.dim);
    b.mlpNorm = loadVector(src, p + "mlp_norm", s.dim);
    if (src.find(p + "attn_norm.bias"))
        b.attnNormBias = loadVector(src, p + "attn_norm.bias", s.dim);
    if (src.find(p + "mlp_norm.bias")) b.mlpNormBias = loadVector(src, p + "mlp_norm.bias", s.dim);
    for (int i = 0; i < 7; ++i)
        if (const std::string n = p + kSuffix[i] + ".bias"; src.find(n))
            b.b[size_t(i)] = loadVector(src, n, rows[i]);
    if (!overrides) return b;
    for (int i = 0; i < 7; ++i) {
        const auto it = overrides->find(p + kSuffix[i]);
        if (it == overrides->end()) continue;
        MatD& m = b.w[size_t(i)];
        if (int64_t(it->second.size()) != m.size())
            throw ArgumentError(it->first + ": override has the wrong size");
        m = blockMatrix(it->second, m.rows(), m.cols());
    }
    for (auto [suffix, vec] : {std::pair{"attn_norm", &b.attnNorm}, {"mlp_norm", &b.mlpNorm}}) {
        const auto it = overrides->find(p + suffix);
        if (it == overrides->end()) continue;
        if (int64_t(it->second.size()) != vec->size())
            throw ArgumentError(it->first + ": override has the wrong size");
        *vec = Eigen::Map<const Eigen::VectorXf>(it->second.data(), vec->size()).cast<double>();
    }
    return b;
}

MatD blockMatrix(const std::vector<float>& v, int64_t T, int64_t dim) {
    return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
               v.data(), T, dim)
        .cast<double>();
}

int64_t blockInputTokens(const std::string& bname, const std::string& method,
                         const std::vector<std::vector<float>>& inputs,
                         const std::vector<std::vector<float>>& fpInputs, int64_t dim) {
    if (inputs.empty()) throw ArgumentError(bname + ": " + method + " needs calibration inputs");
    if (fpInputs.size() != inputs.size())
        throw ArgumentError(bname + ": " + method + " got " + std::to_string(inputs.size()) +
                            " quantised-path inputs but " + std::to_string(fpInputs.size()) +
                            " full-precision ones");
    const size_t len = inputs[0].size();
    if (len == 0 || len % size_t(dim) != 0)
        throw ArgumentError(bname + ": block inputs of " + std::to_string(len) +
                            " values are not whole tokens of dim " + std::to_string(dim));
    for (size_t i = 0; i < inputs.size(); ++i)
        if (inputs[i].size() != len || fpInputs[i].size() != len)
            throw ArgumentError(bname + ": " + method + " block inputs differ in length (sample " +
                                std::to_string(i) + ")");
    return int64_t(len) / dim;
}

void blockTargets(const LlamaBlock& fpBlock, const BlockWeights& fw,
                  const std::vector<std::vector<float>>& fpInputs, int64_t T, int64_t dim,
                  std::vector<MatD>& target, std::vector<std::vector<float>>& fpOutputs) {
    const size_t S = fpInputs.size();
    target.resize(S);
    fpOutputs.resize(S);
    ParallelErrors errors;
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < int64_t(S); ++i)
        errors.run([&] {
            fpBlock.forward(fw, blockMatrix(fpInputs[size_t(i)], T, dim), target[size_t(i)],
                            nullptr);
            const Eigen::MatrixXf yf = target[size_t(i)].cast<float>().transpose();
            fpOutputs[size_t(i)].assign(yf.data(), yf.data() + yf.size());
        });
    errors.rethrow();
}

std::string LlamaBlock::unsupportedReason(const ModelSpec& s, int layer, int64_t seqLen) {
    if (s.isMamba()) return "it is a state-space model";
    if (s.isMoe()) return "it has mixture-of-experts MLPs";
    if (s.norm != NormType::RMSNorm) return "it uses LayerNorm";
    if (s.normPlusOne) return "its RMSNorm scales by (1 + w)";
    if (s.residual != ResidualStyle::PreNorm) return "its residual style is not pre-norm";
    if (s.postNorms) return "it has post-norms";
    if (!s.gatedMlp || s.hiddenAct != "silu") return "its MLP is not SwiGLU";
    if (s.attnBias || s.attnOutBias || s.mlpBias) return "its linears have biases";
    if (s.qkNorm) return "it has q/k norms";
    if (s.posEmbed != PosEmbedding::Rope) return "it does not use RoPE";
    if (s.attnSoftcap > 0) return "it soft-caps attention logits";
    if (s.layerIsSliding(layer) && s.slidingWindow < seqLen)
        return "its sliding window is shorter than the sequence";
    if (s.qkvLayout != QkvLayout::Separate || s.gateUpFused) return "it has fused projections";
    if (s.embedDim > 0 && s.embedDim != s.dim) return "it projects embeddings";
    return {};
}

LlamaBlock::LlamaBlock(const ModelSpec& spec, int layer, int64_t seqLen) : m_s(spec), m_T(seqLen) {
    if (layer < 0 || layer >= spec.nLayers)
        throw ArgumentError("block model: layer " + std::to_string(layer) + " out of range");
    if (seqLen < 1) throw ArgumentError("block model: empty sequence");
    const std::string why = unsupportedReason(spec, layer, seqLen);
    if (!why.empty())
        throw UnsupportedError("the block model (OmniQuant) covers pre-norm RMSNorm SwiGLU blocks "
                               "with RoPE and no biases; arch '" +
                               spec.arch + "' is not supported: " + why);
    m_scale = spec.attnScale > 0 ? double(spec.attnScale) : 1.0 / std::sqrt(double(spec.headDim));
    if (spec.scaleByInverseLayer) m_scale /= double(layer + 1);
    const kernels::RopeFreqs f = kernels::ropeFrequencies(
        spec.rope, spec.headDim, spec.maxSeq,
        spec.rope.type == RopeType::Dynamic ? seqLen : std::max(seqLen, spec.maxSeq));
    m_rot = f.rotDim;
    m_cos.resize(size_t(seqLen * (m_rot / 2)));
    m_sin.resize(m_cos.size());
    kernels::ropeTables(f, 0, seqLen, m_cos.data(), m_sin.data());
}

void LlamaBlock::rope(MatD& a, int64_t heads, bool inverse) const {
    // Forward: (x0, x1) -> (x0 c - x1 s, x0 s + x1 c). The backward applies the transpose.
    const int64_t half = m_rot / 2, hd = m_s.headDim;
    const double sg = inverse ? -1.0 : 1.0;
    for (int64_t t = 0; t < m_T; ++t) {
        const float* c = m_cos.data() + t * half;
        const float* s = m_sin.data() + t * half;
        for (int64_t h = 0; h < heads; ++h) {
            double* v = a.row(t).data() + h * hd;
            for (int64_t i = 0; i < half; ++i) {
                const int64_t i0 = m_s.rope.interleaved ? 2 * i : i;
                const int64_t i1 = m_s.rope.interleaved ? 2 * i + 1 : i + half;
                const double x0 = v[i0], x1 = v[i1], ci = c[i], si = sg * double(s[i]);
                v[i0] = x0 * ci - x1 * si;
                v[i1] = x0 * si + x1 * ci;
            }
        }
    }
}

void LlamaBlock::forward(const BlockWeights& w, const MatD& x, MatD& y, Cache* cache) const {
    const ModelSpec& s = m_s;
    const int64_t T = m_T, hd = s.headDim, H = s.nHeads, group = s.nHeads / s.nKvHeads;
    const double eps = double(s.normEps);
    Cache local;
    Cache& c = cache ? *cache : local;
    c.x = x;
    auto rms = [&](const MatD& in, const Eigen::VectorXd& g, const Eigen::VectorXd& nb,
                   Eigen::VectorXd& r, MatD& out) {
        r = ((in.array().square().rowwise().sum() / double(in.cols())) + eps).rsqrt().matrix();
        out = (in.array().colwise() * r.array()).rowwise() * g.transpose().array();
        if (nb.size()) out.rowwise() += nb.transpose();
    };
    auto lin = [&](const MatD& in, int i) {
        MatD out = in * w.w[size_t(i)].transpose();
        if (w.b[size_t(i)].size()) out.rowwise() += w.b[size_t(i)].transpose();
        return out;
    };
    auto aq = [&](MatD& a, int site, MatD& mask) {
        const bool on = m_actBits[size_t(site)] > 0 && m_actBits[size_t(site)] < 16;
        const bool clamps = on && m_actClip[size_t(site)] < 1;
        fakeQuantRows(a, on ? m_actBits[size_t(site)] : 0, m_actClip[size_t(site)],
                      clamps ? &mask : nullptr);
        if (!clamps) mask.resize(0, 0);
    };
    rms(x, w.attnNorm, w.attnNormBias, c.r1, c.xn1);
    aq(c.xn1, kActAttnIn, c.mask1);
    c.q = lin(c.xn1, kQ);
    c.k = lin(c.xn1, kK);
    c.v = lin(c.xn1, kV);
    rope(c.q, H, false);
    rope(c.k, s.nKvHeads, false);
    c.o.resize(T, H * hd);
    c.probs.resize(size_t(H));
    MatD kq, vq; // quantised keys and values (simulated KV-cache quantisation)
    if (m_kvQuant) {
        kq = c.k, vq = c.v;
        m_kvQuant(kq, vq);
    }
    for (int64_t h = 0; h < H; ++h) {
        const int64_t kv = h / group;
        const auto qh = c.q.middleCols(h * hd, hd);
        if (m_kvQuant) {
            MatD S = (qh * kq.middleCols(kv * hd, hd).transpose()) * m_scale;
            if (m_kvPastOnly) // own token: the unquantised key
                for (int64_t i = 0; i < T; ++i)
                    S(i, i) = qh.row(i).dot(c.k.middleCols(kv * hd, hd).row(i)) * m_scale;
            causalSoftmax(S);
            c.o.middleCols(h * hd, hd) = S * vq.middleCols(kv * hd, hd);
            if (m_kvPastOnly) // own token: the unquantised value
                for (int64_t i = 0; i < T; ++i)
                    c.o.middleCols(h * hd, hd).row(i) +=
                        S(i, i) *
                        (c.v.middleCols(kv * hd, hd).row(i) - vq.middleCols(kv * hd, hd).row(i));
            c.probs[size_t(h)] = std::move(S);
            continue;
        }
        MatD S = (qh * c.k.middleCols(kv * hd, hd).transpose()) * m_scale;
        causalSoftmax(S);
        c.o.middleCols(h * hd, hd) = S * c.v.middleCols(kv * hd, hd);
        c.probs[size_t(h)] = std::move(S);
    }
    if (cache && m_kvQuant) c.kq = std::move(kq), c.vq = std::move(vq);
    MatD oq = c.o;
    aq(oq, kActO, c.maskO);
    c.h = x + lin(oq, kO);
    rms(c.h, w.mlpNorm, w.mlpNormBias, c.r2, c.xn2);
    aq(c.xn2, kActMlpIn, c.mask2);
    c.g = lin(c.xn2, kGate);
    c.u = lin(c.xn2, kUp);
    c.m = c.g.unaryExpr([](double v) { return silu(v); }).cwiseProduct(c.u);
    if (m_downRot) m_downRot(c.m, false);
    aq(c.m, kActDown, c.maskM);
    c.oq = std::move(oq);
    y = c.h + lin(c.m, kDown);
}

MatD LlamaBlock::attentionOutput(const BlockWeights& w, const MatD& xn) const {
    const ModelSpec& s = m_s;
    const int64_t T = m_T, hd = s.headDim, H = s.nHeads, group = s.nHeads / s.nKvHeads;
    auto lin = [&](const MatD& in, int i) {
        MatD out = in * w.w[size_t(i)].transpose();
        if (w.b[size_t(i)].size()) out.rowwise() += w.b[size_t(i)].transpose();
        return out;
    };
    MatD q = lin(xn, kQ), k = lin(xn, kK);
    const MatD v = lin(xn, kV);
    rope(q, H, false);
    rope(k, s.nKvHeads, false);
    MatD o(T, H * hd);
    for (int64_t h = 0; h < H; ++h) {
        const int64_t kv = h / group;
        MatD S = (q.middleCols(h * hd, hd) * k.middleCols(kv * hd, hd).transpose()) * m_scale;
        causalSoftmax(S);
        o.middleCols(h * hd, hd) = S * v.middleCols(kv * hd, hd);
    }
    return lin(o, kO);
}

void LlamaBlock::setOnlineDown(std::function<void(MatD& rows, bool transposed)> rot) {
    m_downRot = std::move(rot);
}

void LlamaBlock::setKvQuant(std::function<void(MatD& k, MatD& v)> quant, bool pastOnly) {
    m_kvQuant = std::move(quant);
    m_kvPastOnly = pastOnly;
}

namespace {

/// RMSNorm backward: out = in · r · gw (+ nb), r = (mean(in²) + eps)^-1/2. Adds to dgw / dnb
/// (dnb when it has a size) and sets din.
void rmsBack(const MatD& in, const Eigen::VectorXd& r, const Eigen::VectorXd& gw, const MatD& dout,
             Eigen::VectorXd& dgw, Eigen::VectorXd& dnb, MatD& din) {
    if (dnb.size()) dnb += dout.colwise().sum().transpose();
    dgw += ((dout.array() * in.array()).colwise() * r.array()).colwise().sum().transpose().matrix();
    const MatD a = dout.array().rowwise() * gw.transpose().array(); // d(in * r)
    const Eigen::VectorXd dot = (a.array() * in.array()).rowwise().sum();
    const double n = double(in.cols());
    din = (a.array().colwise() * r.array()) -
          in.array().colwise() * (dot.array() * r.array().cube() / n);
}

} // namespace

MatD LlamaBlock::backToAttention(const BlockWeights& w, const Cache& c, const MatD& dy,
                                 BlockGrads* g, MatD& dh) const {
    auto addW = [&](int i, const MatD& dout, const MatD& in) {
        if (!g) return;
        g->w[size_t(i)] += dout.transpose() * in;
        if (g->b[size_t(i)].size()) g->b[size_t(i)] += dout.colwise().sum().transpose();
    };
    // MLP.
    addW(kDown, dy, c.m);
    MatD dm = dy * w.w[kDown];
    if (c.maskM.size()) dm.array() *= c.maskM.array();
    if (m_downRot) m_downRot(dm, true);
    MatD dgate(c.g.rows(), c.g.cols()), dup(c.u.rows(), c.u.cols());
    for (int64_t i = 0; i < c.g.size(); ++i) {
        const double x = c.g.data()[i], sig = 1.0 / (1.0 + std::exp(-x));
        dup.data()[i] = dm.data()[i] * x * sig;
        dgate.data()[i] = dm.data()[i] * c.u.data()[i] * sig * (1.0 + x * (1.0 - sig));
    }
    addW(kGate, dgate, c.xn2);
    addW(kUp, dup, c.xn2);
    MatD dxn2 = dgate * w.w[kGate] + dup * w.w[kUp];
    if (c.mask2.size()) dxn2.array() *= c.mask2.array();
    Eigen::VectorXd dgw = Eigen::VectorXd::Zero(w.mlpNorm.size()), dnb;
    rmsBack(c.h, c.r2, w.mlpNorm, dxn2, g ? g->mlpNorm : dgw, g ? g->mlpNormBias : dnb, dh);
    dh += dy;
    // The o projection.
    addW(kO, dh, c.oq);
    MatD dO = dh * w.w[kO];
    if (c.maskO.size()) dO.array() *= c.maskO.array();
    return dO;
}

void LlamaBlock::attentionBackward(const Cache& c, const MatD& dO, MatD* dq, MatD* dk, MatD* dv,
                                   MatD* dkq, MatD* dvq) const {
    // With simulated KV quantisation the attention read the keys and values back from the cache
    // (Cache::kq / vq; a token's own row unquantised when past-only): the products use the rows
    // as read. dk / dv pass the gradient w.r.t. a read row straight through the quantiser to the
    // row before it (STE), so they keep the form they have without quantisation; dkq / dvq count
    // only the reads of quantised rows.
    const bool kvq = bool(m_kvQuant);
    const bool own = kvq && m_kvPastOnly;
    const MatD& Kr = kvq ? c.kq : c.k;
    const MatD& Vr = kvq ? c.vq : c.v;
    const ModelSpec& s = m_s;
    const int64_t hd = s.headDim, H = s.nHeads, group = s.nHeads / s.nKvHeads;
    for (MatD* m : {dq, dk, dv})
        if (m) *m = MatD::Zero(c.q.rows(), m == dq ? c.q.cols() : c.k.cols());
    for (MatD* m : {dkq, dvq})
        if (m) *m = MatD::Zero(Kr.rows(), Kr.cols());
    for (int64_t h = 0; h < H; ++h) {
        const int64_t kv = h / group;
        const MatD& P = c.probs[size_t(h)];
        const auto dOh = dO.middleCols(h * hd, hd);
        const auto qh = c.q.middleCols(h * hd, hd);
        MatD dP = dOh * Vr.middleCols(kv * hd, hd).transpose();
        if (own)
            for (int64_t i = 0; i < P.rows(); ++i)
                dP(i, i) = dOh.row(i).dot(c.v.middleCols(kv * hd, hd).row(i));
        const Eigen::VectorXd rs = (dP.array() * P.array()).rowwise().sum();
        MatD dS = (P.array() * (dP.array().colwise() - rs.array())).matrix() * m_scale;
        if (dv) dv->middleCols(kv * hd, hd) += P.transpose() * dOh;
        if (dq) {
            dq->middleCols(h * hd, hd) = dS * Kr.middleCols(kv * hd, hd);
            if (own) // the own key was read unquantised
                for (int64_t i = 0; i < P.rows(); ++i)
                    dq->middleCols(h * hd, hd).row(i) +=
                        dS(i, i) *
                        (c.k.middleCols(kv * hd, hd).row(i) - Kr.middleCols(kv * hd, hd).row(i));
        }
        if (dk) dk->middleCols(kv * hd, hd) += dS.transpose() * qh;
        if (!dkq && !dvq) continue;
        MatD Pq = P; // the reads of quantised rows
        if (own) Pq.diagonal().setZero(), dS.diagonal().setZero();
        if (dvq) dvq->middleCols(kv * hd, hd) += Pq.transpose() * dOh;
        if (dkq) dkq->middleCols(kv * hd, hd) += dS.transpose() * qh;
    }
}

void LlamaBlock::kvBackward(const BlockWeights& w, const Cache& c, const MatD& dy, MatD& dkq,
                            MatD& dvq) const {
    if (!m_kvQuant || c.kq.size() == 0 || c.vq.size() == 0)
        throw ArgumentError("kvBackward: the forward ran without simulated KV quantisation");
    MatD dh;
    const MatD dO = backToAttention(w, c, dy, nullptr, dh);
    attentionBackward(c, dO, nullptr, nullptr, nullptr, &dkq, &dvq);
}

void LlamaBlock::backward(const BlockWeights& w, const Cache& c, const MatD& dy, BlockGrads& g,
                          MatD* dxOut, MatD* dkq, MatD* dvq) const {
    const bool kvq = bool(m_kvQuant);
    if (kvq && (c.kq.size() == 0 || c.vq.size() == 0))
        throw ArgumentError("the block model's backward: the forward ran with simulated KV-cache "
                            "quantisation but its cache holds no quantised keys and values");
    if ((dkq || dvq) && !kvq)
        throw ArgumentError("the block model's backward: gradients w.r.t. the quantised keys and "
                            "values asked for without simulated KV quantisation");
    const ModelSpec& s = m_s;
    const int64_t H = s.nHeads;
    auto addBias = [&](int i, const MatD& dout) {
        if (g.b[size_t(i)].size()) g.b[size_t(i)] += dout.colwise().sum().transpose();
    };
    MatD dh;
    const MatD dO = backToAttention(w, c, dy, &g, dh);
    MatD dq, dk, dv;
    attentionBackward(c, dO, &dq, &dk, &dv, dkq, dvq);
    rope(dq, H, true);
    rope(dk, s.nKvHeads, true);
    g.w[kQ] += dq.transpose() * c.xn1;
    g.w[kK] += dk.transpose() * c.xn1;
    g.w[kV] += dv.transpose() * c.xn1;
    addBias(kQ, dq);
    addBias(kK, dk);
    addBias(kV, dv);
    MatD dxn1 = dq * w.w[kQ] + dk * w.w[kK] + dv * w.w[kV];
    if (c.mask1.size()) dxn1.array() *= c.mask1.array();
    MatD dx;
    rmsBack(c.x, c.r1, w.attnNorm, dxn1, g.attnNorm, g.attnNormBias, dx);
    if (dxOut) *dxOut = dx + dh;
}

} // namespace lcw::compress
