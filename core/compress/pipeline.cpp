// compress() with calibration data: block by block, each block's inputs captured through the
// overlay built so far, then SmoothQuant folding, AWQ scale search and folding, and every layer
// quantised with its method (RTN, GPTQ, AWQ clipping), outlier columns kept in 16 bits.
#include "core/compress/pipeline.h"

#include "core/common/dtype.h"
#include "core/common/mapped_file.h"
#include "core/compress/awq.h"
#include "core/compress/folding.h"
#include "core/compress/gptq.h"
#include "core/compress/omniquant.h"
#include "core/compress/smoothquant.h"
#include "core/compress/threads.h"
#include "core/stats/fingerprint.h"

#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>

namespace lcw::compress {

namespace {

using json = nlohmann::ordered_json;
using MatRF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatRD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int blockIndex(const std::string& name) {
    if (name.rfind("layers.", 0) != 0) return -1;
    return std::stoi(name.substr(7, name.find('.', 7) - 7));
}

/// Sets `out` from j[key] when the section has that key (the recipe parser checked its type).
template <class T> void readIf(const nlohmann::json& j, const char* key, T& out) {
    if (j.contains(key)) out = j[key].get<T>();
}

GptqOptions gptqOptions(const nlohmann::json& w) {
    GptqOptions o;
    readIf(w, "damp", o.damp);
    readIf(w, "act_order", o.actOrder);
    readIf(w, "block_size", o.blockSize);
    return o;
}

AwqOptions awqOptions(const nlohmann::json& w) {
    AwqOptions o;
    if (!w.contains("awq")) return o;
    const auto& a = w["awq"];
    readIf(a, "grid", o.grid);
    readIf(a, "clip_search", o.clipSearch);
    readIf(a, "clip_grid", o.clipGrid);
    readIf(a, "max_shrink", o.maxShrink);
    return o;
}

OmniQuantOptions omniOptions(const nlohmann::json& w) {
    OmniQuantOptions o;
    readIf(w, "epochs", o.epochs);
    readIf(w, "lr", o.lr);
    readIf(w, "let", o.let);
    readIf(w, "let_shift", o.letShift);
    readIf(w, "lr_let", o.lrLet);
    return o;
}

/// The merged activation section of a layer (later rules override field by field, null resets);
/// null when the layer's activations stay float.
nlohmann::json activationOf(const Recipe& r, const std::string& name) {
    nlohmann::json a;
    for (const Rule& rule : r.rules) {
        if (!rule.activation || !rule.matches(name)) continue;
        if (rule.activation->is_null()) {
            a = nullptr;
            continue;
        }
        if (!a.is_object()) a = nlohmann::json::object();
        for (auto it = rule.activation->begin(); it != rule.activation->end(); ++it)
            a[it.key()] = it.value();
    }
    return a;
}

/// OmniQuant's simulated activation quantisation of block `b`'s sites from the recipe: the
/// runtime's dynamic per-token scheme for sections with bits < 16 (static per-tensor sections
/// are not simulated: 0 = float).
void omniActivation(const Recipe& r, int b, OmniQuantOptions& o) {
    const std::string p = "layers." + std::to_string(b) + ".";
    const char* site[4] = {"attn.q", "attn.o", "mlp.gate", "mlp.down"};
    for (size_t i = 0; i < 4; ++i) {
        const nlohmann::json a = activationOf(r, p + site[i]);
        o.actBits[i] = 0;
        o.actClip[i] = 1.0;
        if (!a.is_object()) continue;
        const int bits = a.contains("bits") ? a["bits"].get<int>() : 8;
        const std::string mode =
            a.contains("mode") ? a["mode"].get<std::string>() : "dynamic_per_token";
        if (bits >= 16 || mode != "dynamic_per_token") continue;
        o.actBits[i] = bits;
        if (a.contains("clip")) o.actClip[i] = a["clip"].get<double>();
    }
}

/// Evenly strided rows of the captured sample, divided by the input scales.
std::vector<float> searchRows(const LinearInputs& in, const std::vector<float>* inScale,
                              int64_t maxRows, int64_t& n) {
    const int64_t c = in.cols;
    const int64_t stride = std::max<int64_t>(1, (in.sampleRows + maxRows - 1) / maxRows);
    std::vector<float> X;
    n = 0;
    for (int64_t r = 0; r < in.sampleRows; r += stride, ++n)
        for (int64_t j = 0; j < c; ++j)
            X.push_back(in.sample[size_t(r * c + j)] / (inScale ? (*inScale)[size_t(j)] : 1.0f));
    return X;
}

/// tr(D H Dᵀ) and tr(W H Wᵀ) with H the Gram of the (scaled) input.
double outputRelError(const std::vector<float>& w, const std::vector<float>& wq, int64_t rows,
                      int64_t cols, const std::vector<double>& gram,
                      const std::vector<float>* inScale) {
    MatRF H = Eigen::Map<const MatRD>(gram.data(), cols, cols).cast<float>();
    if (inScale)
        for (int64_t i = 0; i < cols; ++i)
            for (int64_t j = 0; j < cols; ++j)
                H(i, j) /= (*inScale)[size_t(i)] * (*inScale)[size_t(j)];
    MatRF M(2 * rows, cols);
    const Eigen::Map<const MatRF> W(w.data(), rows, cols), Q(wq.data(), rows, cols);
    M.topRows(rows) = W - Q;
    M.bottomRows(rows) = W;
    const MatRF P = M * H;
    const double num =
        (P.topRows(rows).cast<double>().array() * M.topRows(rows).cast<double>().array()).sum();
    const double den =
        (P.bottomRows(rows).cast<double>().array() * M.bottomRows(rows).cast<double>().array())
            .sum();
    if (!(den > 0)) return num > 0 ? INFINITY : 0.0;
    return std::sqrt(std::max(num, 0.0) / den);
}

} // namespace

std::optional<double> outlierThreshold(const Recipe& r, const std::string& name) {
    std::optional<double> t;
    for (const Rule& rule : r.rules) {
        if (!rule.outliers || !rule.matches(name)) continue;
        if (rule.outliers->is_null()) {
            t.reset();
        } else {
            // LLM.int8()'s default threshold when the rule names none.
            t = rule.outliers->contains("threshold") ? (*rule.outliers)["threshold"].get<double>()
                                                     : 6.0;
        }
    }
    return t;
}

CompressResult compressCalibrated(const Model& base, const Recipe& recipe, Plan plan,
                                  Progress& progress, const CompressOptions& opts) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const CalibrationSet& cal = *opts.calibration;
    // Small models (the demo) compress faster on one thread than on several.
    const SingleThreadIf oneThread(base.spec().dim * cal.seqLen() < (int64_t(1) << 18));
    CompressResult res;
    res.plan = std::move(plan);
    const Plan& P = res.plan;
    auto cm = std::make_unique<CompressedModel>(base);
    cm->recipe = recipe;
    cm->baseFingerprint = stats::modelFingerprint(base);

    std::map<int, std::vector<size_t>> blocks;
    std::vector<size_t> others;
    for (size_t i = 0; i < P.layers.size(); ++i) {
        const int b = blockIndex(P.layers[i].name);
        if (b < 0) {
            if (methodNeedsCalibration(P.layers[i].weight.method))
                throw UnsupportedError(P.layers[i].name + ": method '" +
                                       weightMethodName(P.layers[i].weight.method) +
                                       "' applies to the linears inside blocks only");
            others.push_back(i);
        } else {
            blocks[b];
            blocks[b].push_back(i);
        }
    }
    for (const auto& [name, a] : P.smooth)
        if (blockIndex(name) >= 0) blocks[blockIndex(name)];
    const double nUnits = double(blocks.size() + (others.empty() ? 0 : 1));
    double unit = 0;

    std::map<std::string, LayerReport> reports;
    // OmniQuant's full-precision block inputs (targets), carried from block to block.
    std::vector<std::vector<float>> fpHidden;
    int fpLayer = -1;
    auto finishCancel = [&] {
        res.status = Status::Cancelled;
        return std::move(res);
    };
    // Once a layer is in the overlay the base's pages of it leave the resident set (file pages
    // stay cached): peak memory is the overlay plus about one block's work, not the base model.
    auto releaseBase = [&](const std::string& name) {
        if (const TensorView* t = base.find(name)) MappedFile::releasePages(t->data, t->nbytes);
    };

    for (const auto& [b, idx] : blocks) {
        const std::string bname = "layers." + std::to_string(b);
        RangeProgress capP(progress, unit / nUnits, (unit + 0.5) / nUnits);
        const auto c0 = Clock::now();
        const auto inputs = captureBlockInputs(*cm, cal, b, opts.capture, capP);
        res.captureSeconds += std::chrono::duration<double>(Clock::now() - c0).count();
        if (inputs.empty()) return finishCancel();
        if (!progress.report((unit + 0.5) / nUnits, bname + ": quantising")) return finishCancel();

        BlockTensors bt(*cm);
        std::map<std::string, std::vector<float>> inScale;
        std::map<std::string, json> details;
        std::map<std::string, const LayerPlan*> planOf;
        for (size_t i : idx) planOf[P.layers[i].name] = &P.layers[i];
        auto scaleInputs = [&](const FoldSite& site, const std::vector<float>& s) {
            applyFold(bt, site, s);
            for (const auto& l : site.linears) {
                auto& v = inScale[l];
                if (v.empty()) v.assign(s.size(), 1.0f);
                for (size_t j = 0; j < s.size(); ++j) v[j] *= s[j];
            }
        };
        std::set<std::string> sitesDone;
        std::map<std::string, double> searchSeconds; // AWQ scale search, shared out per site

        // 1. SmoothQuant on the norm-fed inputs.
        for (const std::string kind : {"attn.q", "mlp.gate", "mlp.up"}) {
            const std::string lead = bname + "." + kind;
            FoldSite site;
            std::string why;
            if (!inputs.count(lead) || !findFoldSite(*cm, b, lead, site, why)) continue;
            if (sitesDone.count(site.kind + "_sq")) continue;
            std::optional<std::pair<double, int>> alpha;
            for (const auto& l : site.linears)
                if (P.smooth.count(l)) alpha = P.smooth.at(l);
            if (!alpha) continue;
            sitesDone.insert(site.kind + "_sq");
            std::vector<const float*> ws;
            std::vector<int64_t> rows;
            for (const auto& l : site.linears) {
                ws.push_back(bt.get(l).data());
                rows.push_back(bt.rows(l));
            }
            const auto s =
                smoothQuantScales(inputs.at(lead).absMax, ws, rows, site.channels, alpha->first);
            scaleInputs(site, s);
            for (const auto& l : site.linears) details[l]["smoothquant_alpha"] = alpha->first;
        }
        for (const auto& [l, a] : P.smooth) {
            if (blockIndex(l) != b || details[l].contains("smoothquant_alpha")) continue;
            details[l]["note"] = "smoothquant: not applied (no foldable norm before this layer)";
        }

        // 2. AWQ scales, one search per input shared by AWQ layers.
        for (size_t i : idx) {
            const LayerPlan& lp = P.layers[i];
            if (lp.weight.method != WeightMethod::Awq) continue;
            FoldSite site;
            std::string why;
            if (!findFoldSite(*cm, b, lp.name, site, why)) {
                details[lp.name]["note"] = "awq: no scaling (" + why + "), clipping search only";
                continue;
            }
            if (sitesDone.count(site.kind)) continue;
            sitesDone.insert(site.kind);
            const auto s0 = Clock::now();
            const AwqOptions ao = awqOptions(lp.weightJson);
            const LinearInputs& in = inputs.at(site.linears[0]);
            const std::vector<float>* sc =
                inScale.count(site.linears[0]) ? &inScale.at(site.linears[0]) : nullptr;
            int64_t n = 0;
            const std::vector<float> X = searchRows(in, sc, ao.maxRows, n);
            std::vector<float> stat = in.meanAbs;
            if (sc)
                for (size_t j = 0; j < stat.size(); ++j) stat[j] /= (*sc)[j];
            if (!site.kvChannel.empty()) {
                // Heads sharing a kv channel share the scale: average their statistic.
                std::map<int64_t, std::pair<double, int>> acc;
                for (size_t c = 0; c < stat.size(); ++c) {
                    auto& a = acc[site.kvChannel[c]];
                    a.first += stat[c], a.second += 1;
                }
                for (size_t c = 0; c < stat.size(); ++c) {
                    const auto& a = acc[site.kvChannel[c]];
                    stat[c] = float(a.first / a.second);
                }
            }
            std::vector<AwqMember> members;
            for (const auto& l : site.linears) {
                AwqMember m;
                m.w = bt.get(l).data();
                m.rows = bt.rows(l);
                m.name = l;
                const auto it = planOf.find(l);
                m.quantized = it != planOf.end() && !methodIsGguf(it->second->weight.method);
                if (m.quantized) m.settings = it->second->weight;
                members.push_back(m);
            }
            const AwqScaleResult r = awqSearchScale(X.data(), n, site.channels, stat, members, ao);
            scaleInputs(site, r.scale);
            const double secs = std::chrono::duration<double>(Clock::now() - s0).count();
            for (const auto& l : site.linears)
                searchSeconds[l] = secs / double(site.linears.size());
            for (const auto& l : site.linears) {
                details[l]["awq_site"] = site.kind;
                details[l]["awq_alpha"] = r.alpha;
                details[l]["awq_search_error"] = r.error;
                details[l]["awq_identity_error"] = r.identityError;
            }
        }

        // 3. OmniQuant: learned clipping of the block's omniquant linears on the block output.
        std::map<std::string, PackedTensor> omniPacked;
        {
            std::map<std::string, WeightSettings> omniSet;
            OmniQuantOptions oo;
            for (size_t i : idx)
                if (P.layers[i].weight.method == WeightMethod::OmniQuant) {
                    if (omniSet.empty()) {
                        oo = omniOptions(P.layers[i].weightJson);
                        omniActivation(recipe, b, oo);
                    }
                    omniSet[P.layers[i].name] = P.layers[i].weight;
                }
            if (!omniSet.empty()) {
                RangeProgress omP(progress, (unit + 0.5) / nUnits, (unit + 1.0) / nUnits);
                if (fpLayer != b) fpHidden = captureBlockHidden(base, cal, b);
                const auto qIn = captureBlockHidden(*cm, cal, b);
                if (fpHidden.empty() || qIn.empty()) return finishCancel();
                std::map<std::string, std::vector<float>> over;
                for (const auto& name : bt.modified()) over[name] = bt.get(name);
                OmniQuantBlockResult r =
                    omniquantBlock(*cm, b, qIn, fpHidden, omniSet, oo, omP, &over);
                if (r.status == Status::Cancelled) return finishCancel();
                fpHidden = std::move(r.fpOutputs);
                fpLayer = b + 1;
                // LET: the folded norms and scaled weights replace the block's tensors.
                // Shift biases the base lacks go straight into the overlay (1-D float).
                for (auto& [name, v] : r.folded) {
                    if (!base.find(name)) {
                        const int64_t n = int64_t(v.size());
                        cm->setFloatTensor(name, std::move(v), {n});
                        continue;
                    }
                    bt.get(name) = std::move(v);
                    bt.touch(name);
                }
                for (const auto& [norm, sv] : r.letScale) {
                    const bool attn = norm.find("attn_norm") != std::string::npos;
                    for (const char* l :
                         attn ? std::vector<const char*>{"attn.q", "attn.k", "attn.v"}
                              : std::vector<const char*>{"mlp.gate", "mlp.up"}) {
                        auto& v = inScale[bname + "." + l];
                        if (v.empty()) v.assign(sv.size(), 1.0f);
                        for (size_t j = 0; j < sv.size(); ++j) v[j] *= float(sv[j]);
                    }
                }
                for (auto& [name, p] : r.packed) {
                    json& d = details[name];
                    d["omniquant_epochs"] = oo.epochs;
                    d["omniquant_lr"] = oo.lr;
                    d["block_loss_start"] = r.lossStart;
                    d["block_loss_end"] = r.lossEnd;
                    d["best_epoch"] = r.bestEpoch;
                    d["omniquant_seconds"] = r.seconds;
                    d["epoch_loss"] = r.epochLoss;
                    d["clip_max"] = r.meanClip.at(name).first;
                    d["clip_min"] = r.meanClip.at(name).second;
                    d["omniquant_act_bits"] = oo.actBits;
                    for (const auto& [norm, sv] : r.letScale)
                        d["let_scale_range"][norm] = {*std::min_element(sv.begin(), sv.end()),
                                                      *std::max_element(sv.begin(), sv.end())};
                    omniPacked[name] = std::move(p);
                }
            }
        }

        // 4. Quantise every planned layer of the block.
        std::set<std::string> quantised;
        for (size_t k = 0; k < idx.size(); ++k) {
            const LayerPlan& lp = P.layers[idx[k]];
            // Per layer: a block of a large model takes minutes to quantise (GPTQ).
            if (!progress.report((unit + 0.5 + 0.5 * double(k) / double(idx.size())) / nUnits,
                                 lp.name + ": quantising"))
                return finishCancel();
            const auto l0 = Clock::now();
            const int64_t rows = lp.rows, cols = lp.cols;
            const std::vector<float> W = bt.get(lp.name);
            const auto itIn = inputs.find(lp.name);
            if (itIn == inputs.end()) {
                // An expert no calibration token was routed to: RTN is still possible.
                if (methodNeedsCalibration(lp.weight.method))
                    throw Error(lp.name + ": no calibration token reached this layer (an expert "
                                          "the router never chose?); give it an RTN rule or more "
                                          "calibration samples");
                LayerReport lr;
                lr.name = lp.name;
                lr.shape = {rows, cols};
                lr.scheme = lp.weight.describe();
                lr.rule = lp.origin.count("weight") ? lp.origin.at("weight") : -1;
                lr.bits = lp.weight.bits;
                PackedTensor p = quantize(W.data(), rows, cols, lp.weight, lp.name,
                                          dataOrNull(layerImportance(opts, base, lp.name, cols)));
                lr.bitsPerWeight = p.bitsPerWeight();
                lr.storageBits = p.storageBits();
                cm->setTensor(lp.name, std::move(p));
                releaseBase(lp.name);
                quantised.insert(lp.name);
                lr.error = errorStats(W.data(), cm->compressed(lp.name)->values().data(),
                                      int64_t(W.size()));
                lr.details["note"] = "no calibration token reached this layer";
                lr.seconds = std::chrono::duration<double>(Clock::now() - l0).count();
                reports[lp.name] = std::move(lr);
                continue;
            }
            const LinearInputs& in = itIn->second;
            const std::vector<float>* sc = inScale.count(lp.name) ? &inScale.at(lp.name) : nullptr;
            json det = details.count(lp.name) ? details[lp.name] : json::object();

            // Outlier input channels (LLM.int8() weight side): kept in 16 bits.
            std::vector<int32_t> outl;
            if (const auto th = outlierThreshold(recipe, lp.name))
                for (int64_t j = 0; j < cols; ++j) {
                    const float a = in.absMax[size_t(j)] / (sc ? (*sc)[size_t(j)] : 1.0f);
                    if (a >= *th) outl.push_back(int32_t(j));
                }
            std::vector<float> Wq = W;
            for (int32_t j : outl)
                for (int64_t r = 0; r < rows; ++r) Wq[size_t(r * cols + j)] = 0.0f;

            const std::vector<float> imp = layerImportance(opts, base, lp.name, cols);
            PackedTensor packed;
            switch (lp.weight.method) {
            case WeightMethod::Gptq: {
                const GptqOptions go = gptqOptions(lp.weightJson);
                std::vector<double> H = in.gram;
                if (sc)
                    for (int64_t a = 0; a < cols; ++a)
                        for (int64_t c = 0; c < cols; ++c)
                            H[size_t(a * cols + c)] /=
                                double((*sc)[size_t(a)]) * double((*sc)[size_t(c)]);
                for (int32_t j : outl)
                    for (int64_t c = 0; c < cols; ++c)
                        H[size_t(j * cols + c)] = H[size_t(c * cols + j)] = c == j ? 1.0 : 0.0;
                if (lp.weight.ggufGrid) {
                    GptqGgufResult g = gptqQuantizeGguf(Wq.data(), rows, cols, H.data(),
                                                        ggufMethodType(*lp.weight.ggufGrid),
                                                        dataOrNull(imp), go, lp.name);
                    packed.settings = lp.weight.stored();
                    packed.rows = rows;
                    packed.cols = cols;
                    packed.codes.resize(g.bytes.size());
                    std::memcpy(packed.codes.data(), g.bytes.data(), g.bytes.size());
                    det["damp"] = g.damp;
                    det["gguf"] = weightMethodName(*lp.weight.ggufGrid);
                    det["dead_columns"] = g.deadColumns;
                    det["act_order"] = go.actOrder;
                    det["block_size"] = go.blockSize;
                    break;
                }
                GptqResult g =
                    gptqQuantize(Wq.data(), rows, cols, H.data(), lp.weight, go, lp.name);
                packed = std::move(g.packed);
                det["damp"] = g.damp;
                det["act_order"] = go.actOrder;
                det["block_size"] = go.blockSize;
                det["dead_columns"] = g.deadColumns;
                break;
            }
            case WeightMethod::Awq: {
                const AwqOptions ao = awqOptions(lp.weightJson);
                int64_t n = 0;
                const std::vector<float> X = searchRows(in, sc, ao.maxRows, n);
                AwqClipResult c = awqClipQuantize(X.data(), n, cols, Wq.data(), rows, lp.weight, ao,
                                                  lp.name, dataOrNull(imp));
                packed = std::move(c.packed);
                det["clip"] = c.clipped ? c.meanClip : 1.0;
                break;
            }
            case WeightMethod::OmniQuant:
                packed = std::move(omniPacked.at(lp.name));
                break;
            default:
                packed = quantize(Wq.data(), rows, cols, lp.weight, lp.name, dataOrNull(imp));
            }
            if (!outl.empty()) {
                packed.outlierCols = outl;
                packed.outlierValues.resize(size_t(rows) * outl.size());
                for (int64_t r = 0; r < rows; ++r)
                    for (size_t k = 0; k < outl.size(); ++k)
                        packed.outlierValues[size_t(r) * outl.size() + k] =
                            f32ToF16(W[size_t(r * cols + outl[k])]);
            }
            LayerReport lr;
            lr.name = lp.name;
            lr.shape = {rows, cols};
            lr.scheme = lp.weight.describe();
            lr.rule = lp.origin.count("weight") ? lp.origin.at("weight") : -1;
            lr.bits = lp.weight.bits;
            lr.bitsPerWeight = packed.bitsPerWeight();
            lr.storageBits = packed.storageBits();
            lr.outlierColumns = int64_t(outl.size());
            cm->setTensor(lp.name, std::move(packed));
            releaseBase(lp.name);
            quantised.insert(lp.name);
            const std::vector<float> vals = cm->compressed(lp.name)->values();
            lr.error = errorStats(W.data(), vals.data(), int64_t(W.size()));
            lr.outputRelError = outputRelError(W, vals, rows, cols, in.gram, sc);
            lr.details = det;
            lr.seconds = std::chrono::duration<double>(Clock::now() - l0).count() +
                         (searchSeconds.count(lp.name) ? searchSeconds[lp.name] : 0.0);
            reports[lp.name] = std::move(lr);
        }
        // 5. Folded tensors that were not quantised stay float in the overlay.
        for (const auto& name : bt.modified())
            if (!quantised.count(name)) cm->setFloatTensor(name, bt.get(name));
        ++unit;
    }

    for (size_t i : others) {
        const LayerPlan& lp = P.layers[i];
        if (!progress.report(unit / nUnits, lp.name)) return finishCancel();
        const auto l0 = Clock::now();
        BlockTensors bt(base);
        const std::vector<float> W = bt.get(lp.name);
        PackedTensor p = quantize(W.data(), lp.rows, lp.cols, lp.weight, lp.name,
                                  dataOrNull(layerImportance(opts, base, lp.name, lp.cols)));
        LayerReport lr;
        lr.name = lp.name;
        lr.shape = {lp.rows, lp.cols};
        lr.scheme = lp.weight.describe();
        lr.rule = lp.origin.count("weight") ? lp.origin.at("weight") : -1;
        lr.bits = lp.weight.bits;
        lr.bitsPerWeight = p.bitsPerWeight();
        lr.storageBits = p.storageBits();
        cm->setTensor(lp.name, std::move(p));
        releaseBase(lp.name);
        lr.error =
            errorStats(W.data(), cm->compressed(lp.name)->values().data(), int64_t(W.size()));
        lr.seconds = std::chrono::duration<double>(Clock::now() - l0).count();
        reports[lp.name] = std::move(lr);
    }
    for (const auto& lp : P.layers) res.layers.push_back(std::move(reports.at(lp.name)));
    progress.report(1.0, "done");
    res.model = std::move(cm);
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return res;
}

} // namespace lcw::compress
