// The Hugging Face checkpoint writer (see hf_checkpoint.h).
#include "core/export/hf_checkpoint.h"

#include "core/common/temp_files.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/compress/sparsity.h"
#include "core/io/atomic_writer.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_names.h"
#include "core/io/tensor_values.h"
#include "core/model/loaders.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>

#include <sys/stat.h>

namespace lcw {

namespace {

namespace fs = std::filesystem;
using compress::CompressedModel;
using compress::CompressedTensor;
using compress::PackedTensor;
using json = nlohmann::ordered_json;

bool endsWith(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
}

std::string activationText(const ActQuantSpec& a) {
    if (!a.active()) return {};
    return "a" + std::to_string(a.bits) + (a.perToken ? " per-token" : " per-tensor");
}

/// The scheme text of one replaced tensor: "int4 g128 asym", "2:4 magnitude + int8 channel".
std::string schemeText(const CompressedTensor& ct, const ActQuantSpec& act) {
    std::string s;
    if (ct.sparsity) s = ct.sparsity->describe();
    if (ct.quantized) s += (s.empty() ? "" : " + ") + ct.packed.settings.describe();
    if (ct.isFloat && s.empty()) s = "float replacement";
    const std::string a = activationText(act);
    if (!a.empty()) s += (s.empty() ? "" : ", ") + a;
    return s;
}

/// Settings that make two parts' packed rows interchangeable.
bool sameStorage(const compress::WeightSettings& a, const compress::WeightSettings& b) {
    return a.bits == b.bits && a.format == b.format && a.symmetric == b.symmetric &&
           a.granularity == b.granularity && a.method == b.method && a.ggufGrid == b.ggufGrid &&
           (a.granularity != compress::Granularity::Group || a.groupSize == b.groupSize);
}

bool sameSparsity(const std::optional<compress::SparsitySettings>& a,
                  const std::optional<compress::SparsitySettings>& b) {
    if (a.has_value() != b.has_value()) return false;
    return !a || (a->pattern == b->pattern && a->n == b->n && a->m == b->m &&
                  a->method == b->method && a->ratio == b->ratio);
}

enum class Kind { Copy, Module, Float };

/// What is written for one file tensor of the base (or one tensor the overlay added).
struct Item {
    Kind kind = Kind::Copy;
    const TensorView* file = nullptr;     ///< the base's file tensor (null: added)
    std::vector<const TensorView*> parts; ///< canonical tensors made from it (model order)
    std::string name;                     ///< name in the file
    std::vector<int64_t> shape;           ///< file shape
    DType floatType = DType::F32;         ///< Float: the dtype written
    std::string addedCanonical;           ///< a tensor the overlay added
    /// Single part whose rows are reordered in the file (GGUF / llama2.c q and k rows in the
    /// interleaved rotary layout): the file row of each part row. Empty: the identity.
    std::vector<int64_t> rowMap;
    size_t firstDesc = 0, descCount = 0; ///< its tensors in the descriptor list
};

/// A module built for the format (and what its pointers point at).
struct ModuleHolder {
    HfQuantModule m;
    PackedTensor fused;
    std::vector<uint8_t> mask;
    std::vector<float> values;
};

/// The item and blob (a module's n-th tensor) behind one tensor descriptor.
struct DescSource {
    size_t item = 0, blob = 0;
};

/// What one export plans: the file tensors, what each becomes and the descriptors written.
struct RunState {
    bool hfBase = false; ///< the base is a Hugging Face safetensors folder
    SafetensorsSet st;
    std::map<std::string, std::vector<const TensorView*>> byFile;
    std::map<std::string, std::vector<int64_t>> rowMaps;
    std::deque<TensorView> synth; // GGUF / llama2.c bases: the tensors under their HF names
    std::vector<const TensorView*> fileList;
    std::set<std::string> covered;
    std::vector<Item> items;
    std::vector<TensorDesc> descs;
    std::vector<DescSource> sources;
    std::vector<const HfQuantModule*> written;
    std::vector<std::unique_ptr<ModuleHolder>> keep; // modules for quantizationConfig()
    std::vector<KvQuantSpec> kv;
    std::map<std::string, std::unique_ptr<ModuleHolder>> prebuilt;
    uint64_t total = 0; ///< bytes of all tensors
};

/// What the parts of one file tensor are.
struct TensorFacts {
    bool anyReplaced = false, anyQuant = false, linear = false, targetable = false;
};

/// The output folder of an export.
struct OutputFolder {
    fs::path path;
    std::string out;
    bool exists = false; ///< it exists (and is empty)
};

class Writer {
public:
    Writer(const Model& base, const CompressedModel& ov, HfQuantFormat& format)
        : m_base(base), m_ov(ov), m_format(format) {
        try {
            compress::PlanOptions po;
            po.hasCalibration = true;
            const compress::Plan plan = compress::planRecipe(ov.recipe, base, po);
            for (const auto& l : plan.layers) m_weightJson[l.name] = l.weightJson;
        } catch (const std::exception&) {
            // Metadata only (GPTQ's act_order): without a plan the modules carry no method JSON.
        }
    }

    ActQuantSpec activation(const std::string& canonical) const {
        const RuntimeQuant* rq = m_ov.runtimeQuant();
        const ActQuantSpec* a = rq ? rq->activation(canonical) : nullptr;
        return a ? *a : ActQuantSpec{};
    }

    /// For each part, the file row (Conv1D: the file column) of each of its rows: the file
    /// tensor's row numbers sent through the loader's own split (detail::addSplitTensor).
    std::vector<std::vector<int64_t>> fileRows(const Item& it) const {
        const TensorView& f = *it.file;
        if (!it.rowMap.empty()) return {it.rowMap};
        const bool transposed = it.parts[0]->fileTransposed;
        if (it.parts.size() == 1 && !transposed && !f.shape.empty()) {
            std::vector<int64_t> r(size_t(f.shape[0]));
            std::iota(r.begin(), r.end(), int64_t(0));
            return {r};
        }
        const auto c = canonicalFromHf(f.name, m_base.spec().arch);
        if (!c)
            throw UnsupportedError(f.file + ": cannot map tensor '" + f.name + "' to its parts");
        const int64_t n = f.shape.size() == 1 ? f.shape[0] : transposed ? f.shape[1] : f.shape[0];
        std::vector<float> idx(static_cast<size_t>(n));
        std::iota(idx.begin(), idx.end(), 0.0f);
        Model scratch;
        TensorView v;
        v.name = *c;
        v.fileName = f.name;
        v.file = f.file;
        v.dtype = DType::F32;
        v.shape = f.shape.size() == 1 ? std::vector<int64_t>{n}
                  : transposed        ? std::vector<int64_t>{1, n}
                                      : std::vector<int64_t>{n, 1};
        v.data = reinterpret_cast<const std::byte*>(idx.data());
        v.nbytes = uint64_t(n) * 4;
        detail::addSplitTensor(scratch, m_base.spec(), v);
        std::vector<std::vector<int64_t>> out;
        for (const TensorView* p : it.parts) {
            const TensorView* s = scratch.find(p->name);
            if (!s || s->dtype != DType::F32)
                throw UnsupportedError(f.file + ": cannot find the rows of '" + p->name +
                                       "' in tensor '" + f.name + "'");
            std::vector<int64_t> rows(size_t(s->numel()));
            for (size_t i = 0; i < rows.size(); ++i) {
                float x;
                std::memcpy(&x, s->data + i * 4, 4);
                rows[i] = int64_t(x);
            }
            out.push_back(std::move(rows));
        }
        return out;
    }

    /// Float values of one canonical tensor as the workbench uses them.
    std::vector<float> partValues(const TensorView& part) const {
        if (const CompressedTensor* ct = m_ov.compressed(part.name)) return ct->values();
        std::vector<float> v;
        readTensorRows(part, 0, part.rows(), v);
        return v;
    }

    /// The file tensor's values in file layout (fused parts in file order, Conv1D transposed
    /// back to [in, out]).
    std::vector<float> fileValues(const Item& it) const {
        if (!it.addedCanonical.empty()) return m_ov.compressed(it.addedCanonical)->values();
        const TensorView& f = *it.file;
        const auto rows = fileRows(it);
        std::vector<float> out(size_t(f.numel()));
        const bool transposed = it.parts[0]->fileTransposed;
        for (size_t p = 0; p < it.parts.size(); ++p) {
            const std::vector<float> v = partValues(*it.parts[p]);
            const int64_t pr = int64_t(rows[p].size());
            const int64_t w = pr > 0 ? int64_t(v.size()) / pr : 0;
            if (f.shape.size() == 1) {
                for (int64_t r = 0; r < pr; ++r) out[size_t(rows[p][size_t(r)])] = v[size_t(r)];
            } else if (!transposed) {
                for (int64_t r = 0; r < pr; ++r)
                    std::memcpy(out.data() + rows[p][size_t(r)] * w, v.data() + r * w,
                                size_t(w) * 4);
            } else {
                const int64_t outDim = f.shape[1];
                for (int64_t r = 0; r < pr; ++r)
                    for (int64_t i = 0; i < w; ++i)
                        out[size_t(i * outDim + rows[p][size_t(r)])] = v[size_t(r * w + i)];
            }
        }
        return out;
    }

    /// The 0/1 mask of a pruned module in file row order, and its summary (a byte per weight:
    /// attached just before cannotExpress() / encode() and freed after).
    void attachMask(ModuleHolder& h, const Item& it) const {
        HfQuantModule& m = h.m;
        const auto rows = fileRows(it);
        const int64_t cols = m.cols;
        h.mask.assign(size_t(m.rows * cols), 0);
        for (size_t p = 0; p < it.parts.size(); ++p) {
            const CompressedTensor& ct = *m_ov.compressed(it.parts[p]->name);
            const std::vector<uint8_t> pm = compress::unpackMask(ct.maskBits, ct.rows * ct.cols);
            for (int64_t r = 0; r < ct.rows; ++r)
                std::memcpy(h.mask.data() + rows[p][size_t(r)] * cols, pm.data() + r * cols,
                            size_t(cols));
        }
        m.mask = &h.mask;
        m.maskZeros = 0;
        for (uint8_t k : h.mask) m.maskZeros += k == 0;
        m.maskTwoFour = cols % 4 == 0;
        for (size_t i = 0; i + 3 < h.mask.size() && m.maskTwoFour; i += 4)
            m.maskTwoFour = int(h.mask[i] != 0) + int(h.mask[i + 1] != 0) +
                                int(h.mask[i + 2] != 0) + int(h.mask[i + 3] != 0) ==
                            2;
    }
    static void freeMask(ModuleHolder& h) {
        std::vector<uint8_t>().swap(h.mask);
        h.m.mask = nullptr;
    }

    /// The module for a weight whose parts are all quantised / pruned alike (checked by plan()).
    /// Without `withMask` a pruned module gets its mask later (attachMask).
    std::unique_ptr<ModuleHolder> buildModule(const Item& it, bool withMask = true) const {
        auto h = std::make_unique<ModuleHolder>();
        HfQuantModule& m = h->m;
        m.module = it.name.substr(0, it.name.size() - 7); // without ".weight"
        for (const TensorView* p : it.parts) m.canonical.push_back(p->name);
        const CompressedTensor& first = *m_ov.compressed(it.parts[0]->name);
        m.rows = it.shape[0];
        m.cols = it.shape[1];
        m.sparsity = first.sparsity;
        m.activation = activation(it.parts[0]->name);
        if (auto j = m_weightJson.find(it.parts[0]->name); j != m_weightJson.end())
            m.weightJson = j->second;
        const auto rows = fileRows(it);
        const int64_t cols = m.cols;
        if (first.sparsity && withMask) attachMask(*h, it);
        if (!first.quantized) {
            if (it.parts.size() == 1 && it.rowMap.empty() &&
                int64_t(first.floats.size()) == m.rows * cols) {
                m.values = &first.floats; // the overlay's own values: no copy
                return h;
            }
            h->values.assign(size_t(m.rows * cols), 0.0f);
            for (size_t p = 0; p < it.parts.size(); ++p) {
                const std::vector<float> v = partValues(*it.parts[p]);
                for (size_t r = 0; r < rows[p].size(); ++r)
                    std::memcpy(h->values.data() + rows[p][r] * cols, v.data() + r * size_t(cols),
                                size_t(cols) * 4);
            }
            m.values = &h->values;
            return h;
        }
        if (it.parts.size() == 1 && it.rowMap.empty()) {
            m.packed = &first.packed;
            return h;
        }
        // Fused: the parts' packed rows in file row order (row-local scales: exact).
        PackedTensor& f = h->fused;
        f.settings = first.packed.settings;
        f.rows = m.rows;
        f.cols = cols;
        const uint64_t rb = compress::packedCodeBytes(1, cols, f.settings);
        const int64_t gpr = first.packed.groupsPerRow();
        const bool asym = !first.packed.zeros.empty();
        f.colOrder = first.packed.colOrder; // moduleProblem: every part has the same order
        f.codes.assign(size_t(uint64_t(f.rows) * rb), 0);
        f.scales.assign(size_t(f.rows * gpr), 0);
        if (asym) f.zeros.assign(size_t(f.rows * gpr), 0);
        for (size_t p = 0; p < it.parts.size(); ++p) {
            const PackedTensor& s = m_ov.compressed(it.parts[p]->name)->packed;
            for (int64_t r = 0; r < s.rows; ++r) {
                const int64_t fr = rows[p][size_t(r)];
                std::memcpy(f.codes.data() + uint64_t(fr) * rb, s.codes.data() + uint64_t(r) * rb,
                            size_t(rb));
                std::memcpy(f.scales.data() + fr * gpr, s.scales.data() + r * gpr, size_t(gpr) * 2);
                if (asym)
                    std::memcpy(f.zeros.data() + fr * gpr, s.zeros.data() + r * gpr,
                                size_t(gpr) * 2);
            }
        }
        m.packed = &f;
        return h;
    }

    /// Why a replaced weight cannot become one module (empty: it can).
    std::string moduleProblem(const Item& it) const {
        const CompressedTensor& first = *m_ov.compressed(it.parts[0]->name);
        if (it.parts[0]->fileTransposed)
            return "Conv1D weight stored [in, out] (llm-compressor quantises nn.Linear only)";
        if (it.parts[0]->name == "embed" || it.parts[0]->name == "pos_embed")
            return "an embedding table, not a linear layer (the formats quantise nn.Linear)";
        for (const TensorView* p : it.parts) {
            const CompressedTensor& ct = *m_ov.compressed(p->name);
            if (ct.quantized != first.quantized || ct.isFloat ||
                (ct.quantized && !sameStorage(ct.packed.settings, first.packed.settings)) ||
                !sameSparsity(ct.sparsity, first.sparsity))
                return "the parts of the fused tensor (" + it.parts[0]->name +
                       ", ...) have "
                       "different settings";
            if (!(activation(p->name) == activation(it.parts[0]->name)))
                return "the parts of the fused tensor have different activation settings";
            if (ct.quantized && !ct.packed.outlierCols.empty())
                return "outlier weight columns kept in 16 bits (no " + m_format.name() + " form)";
            if (ct.quantized && ct.packed.colOrder != first.packed.colOrder)
                return "the parts of the fused tensor (" + it.parts[0]->name +
                       ", ...) store their columns in different orders (GPTQ act-order groups; "
                       "one g_idx per module)";
        }
        if (it.parts.size() > 1 && first.quantized &&
            first.packed.settings.granularity == compress::Granularity::Tensor)
            return "the fused parts are quantised per tensor (one scale each; a fused module has "
                   "one)";
        if (first.quantized && (compress::methodIsGguf(first.packed.settings.method) ||
                                first.packed.settings.ggufGrid))
            return std::string("GGUF block type ") +
                   compress::weightMethodName(first.packed.settings.stored().method) +
                   " (ggml blocks have no " + m_format.name() + " form)";
        return {};
    }

    HfCheckpointResult run(const HfCheckpointOptions& opts);

private:
    void collectFileTensors(RunState& s, HfCheckpointResult& res) const;
    void synthesiseHfTensors(RunState& s, HfCheckpointResult& res) const;
    static Item itemFor(const RunState& s, const TensorView& f);
    void prebuildModules(RunState& s) const;
    TensorFacts checkParts(RunState& s, const Item& it) const;
    void planFileTensor(RunState& s, const TensorView& f, HfCheckpointResult& res) const;
    static void planCopy(RunState& s, Item it, const TensorFacts& t, HfModuleReport rep,
                         HfCheckpointResult& res);
    std::string planModule(RunState& s, Item& it, HfModuleReport& rep,
                           HfCheckpointResult& res) const;
    void planFloat(RunState& s, Item it, const TensorFacts& t, const std::string& problem,
                   HfModuleReport rep, HfCheckpointResult& res) const;
    void planAddedTensors(RunState& s, HfCheckpointResult& res) const;
    void checkAllCovered(const RunState& s) const;
    json planQuantizationConfig(RunState& s, HfCheckpointResult& res) const;
    void warnLostActivations(const RunState& s, HfCheckpointResult& res) const;
    static void warnFusedSchemes(HfCheckpointResult& res);
    void warnScaleTypes(const RunState& s, HfCheckpointResult& res) const;
    static OutputFolder prepareOutputFolder(const HfCheckpointOptions& opts);
    bool writeFolder(const RunState& s, const json& qc, const OutputFolder& dst,
                     const HfCheckpointOptions& opts, Progress& progress,
                     HfCheckpointResult& res) const;
    void writeShards(const RunState& s, const std::string& tmp, const HfCheckpointOptions& opts,
                     Progress& progress, HfCheckpointResult& res) const;
    void writeConfig(const RunState& s, const std::string& tmp, const json& qc,
                     HfCheckpointResult& res) const;
    void copyTokenizerFiles(const RunState& s, const std::string& tmp,
                            HfCheckpointResult& res) const;
    static void commitFolder(const std::string& tmp, const OutputFolder& dst);
    const Model& m_base;
    const CompressedModel& m_ov;
    HfQuantFormat& m_format;
    std::map<std::string, nlohmann::json> m_weightJson;
};

/// dtype in which `v` is exact among F32 / F16 / BF16 (`want` when it is, else F32).
DType exactFloatType(const std::vector<float>& v, DType want) {
    if (want == DType::F16) {
        for (float x : v)
            if (f16ToF32(f32ToF16(x)) != x && !(x != x)) return DType::F32;
        return want;
    }
    if (want == DType::BF16) {
        for (float x : v)
            if (bf16ToF32(f32ToBf16(x)) != x && !(x != x)) return DType::F32;
        return want;
    }
    return DType::F32;
}

void writeFloats(const std::vector<float>& v, DType dt, std::byte* dst) {
    if (dt == DType::F32) {
        std::memcpy(dst, v.data(), v.size() * 4);
        return;
    }
    for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t h = dt == DType::F16 ? f32ToF16(v[i]) : f32ToBf16(v[i]);
        std::memcpy(dst + i * 2, &h, 2);
    }
}

std::string readWholeFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FormatError(path, "cannot be read");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// config.json for a model that has none (GGUF, llama2.c): transformers' keys of its family.
json configFor(const Model& m) {
    const ModelSpec& s = m.spec();
    json c;
    c["architectures"] = {s.arch == "qwen2"     ? "Qwen2ForCausalLM"
                          : s.arch == "mistral" ? "MistralForCausalLM"
                                                : "LlamaForCausalLM"};
    c["model_type"] = s.arch;
    c["hidden_size"] = s.dim;
    c["intermediate_size"] = s.hidden;
    c["num_hidden_layers"] = s.nLayers;
    c["num_attention_heads"] = s.nHeads;
    c["num_key_value_heads"] = s.nKvHeads;
    c["head_dim"] = s.headDim;
    c["vocab_size"] = s.vocab;
    c["max_position_embeddings"] = s.maxSeq;
    char eps[32]; // the float as its short decimal (1e-05, not 9.99999975e-06)
    std::snprintf(eps, sizeof eps, "%g", double(s.normEps));
    c["rms_norm_eps"] = std::strtod(eps, nullptr);
    c["rope_theta"] = s.rope.theta;
    const RopeConfig& r = s.rope;
    switch (r.type) {
    case RopeType::Default:
        break;
    case RopeType::Linear:
        c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", r.factor}};
        break;
    case RopeType::Dynamic:
        c["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", r.factor}};
        break;
    case RopeType::Llama3:
        c["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", r.factor},
                             {"low_freq_factor", r.lowFreqFactor},
                             {"high_freq_factor", r.highFreqFactor},
                             {"original_max_position_embeddings", r.originalMaxPositions}};
        break;
    case RopeType::Yarn:
        c["rope_scaling"] = {{"rope_type", "yarn"},
                             {"factor", r.factor},
                             {"original_max_position_embeddings", r.originalMaxPositions},
                             {"beta_fast", r.betaFast},
                             {"beta_slow", r.betaSlow}};
        if (r.attentionFactor > 0) c["rope_scaling"]["attention_factor"] = r.attentionFactor;
        break;
    }
    c["hidden_act"] = s.hiddenAct == "gelu_tanh" ? "gelu_pytorch_tanh" : s.hiddenAct;
    if (s.arch == "llama") {
        c["attention_bias"] = s.attnBias;
        c["mlp_bias"] = s.mlpBias;
    }
    if (s.arch != "llama")
        c["sliding_window"] = s.slidingWindow > 0 ? json(s.slidingWindow) : json(nullptr);
    if (s.arch == "qwen2") c["use_sliding_window"] = s.slidingWindow > 0;
    c["tie_word_embeddings"] = s.tiedEmbeddings;
    if (s.bosId >= 0) c["bos_token_id"] = s.bosId;
    if (s.eosIds.size() == 1)
        c["eos_token_id"] = s.eosIds[0];
    else if (!s.eosIds.empty())
        c["eos_token_id"] = s.eosIds;
    const TensorView* e = m.find("embed");
    c["torch_dtype"] = e && e->dtype == DType::F16    ? "float16"
                       : e && e->dtype == DType::BF16 ? "bfloat16"
                                                      : "float32";
    return c;
}

void writeText(const std::string& path, const std::string& text) {
    AtomicFileWriter w(path);
    w.write(text);
    w.commit();
}

HfCheckpointResult Writer::run(const HfCheckpointOptions& opts) {
    const auto t0 = std::chrono::steady_clock::now();
    HfCheckpointResult res;
    res.format = m_format.name();
    NullProgress nullProgress;
    Progress& progress = opts.progress ? *opts.progress : nullProgress;

    RunState s;
    collectFileTensors(s, res);
    prebuildModules(s);
    for (const TensorView* fp : s.fileList) planFileTensor(s, *fp, res);
    planAddedTensors(s, res);
    checkAllCovered(s);
    const json qc = planQuantizationConfig(s, res);
    warnLostActivations(s, res);
    warnFusedSchemes(res);
    warnScaleTypes(s, res);
    for (const auto& d : s.descs) s.total += tensorDescBytes(d);
    res.tensorBytes = s.total;

    const OutputFolder dst = prepareOutputFolder(opts);
    if (!writeFolder(s, qc, dst, opts, progress, res)) return res; // cancelled
    progress.report(1.0, "done");
    res.path = dst.out;
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

/// The row permutation from Meta's adjacent-pair rotary rows to Hugging Face's rotate_half
/// rows, per head of `hd` rows.
std::vector<int64_t> rotaryRowMap(int64_t n, int64_t hd) {
    std::vector<int64_t> map(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
        const int64_t h = r / hd, i = r % hd;
        map[size_t(r)] = h * hd + (i % 2) * (hd / 2) + i / 2;
    }
    return map;
}

/// The file tensors to write and the canonical tensors each is made from.
void Writer::collectFileTensors(RunState& s, HfCheckpointResult& res) const {
    s.hfBase = m_base.spec().sourceFormat == "safetensors";
    if (!s.hfBase) {
        synthesiseHfTensors(s, res);
        return;
    }
    s.st = readSafetensorsFolder(m_base.path());
    for (const TensorView& t : m_base.tensors()) s.byFile[t.fileName].push_back(&t);
    for (const TensorView& t : s.st.tensors) s.fileList.push_back(&t);
}

/// GGUF / llama2.c bases: the tensors under their Hugging Face names (and rotary row maps).
void Writer::synthesiseHfTensors(RunState& s, HfCheckpointResult& res) const {
    const std::string folder = m_base.path();
    const ModelSpec& spec = m_base.spec();
    res.warnings.push_back(folder + " is a " + spec.sourceFormat +
                           " model: no tokenizer files written (put the original model's "
                           "tokenizer files beside the checkpoint)");
    for (const TensorView& t : m_base.tensors()) {
        if (t.name.rfind("extra.", 0) == 0) {
            res.warnings.push_back("'" + t.fileName + "' of " + folder +
                                   " has no Hugging Face name: not written");
            continue;
        }
        const auto hf = hfFromCanonical(t.name, spec.arch);
        if (!hf || s.byFile.count(*hf))
            throw UnsupportedError(folder + ": tensor '" + t.name +
                                   "' has no Hugging Face "
                                   "tensor of its own in " +
                                   spec.arch);
        TensorView v = t;
        v.name = v.fileName = *hf;
        s.synth.push_back(std::move(v));
        s.byFile[*hf] = {&t};
        s.fileList.push_back(&s.synth.back());
        // Meta's adjacent-pair rotary rows -> Hugging Face's rotate_half rows, per head.
        const bool q = t.name.ends_with(".attn.q") || t.name.ends_with(".attn.q.bias");
        const bool k = t.name.ends_with(".attn.k") || t.name.ends_with(".attn.k.bias");
        if (spec.rope.interleaved && (q || k))
            s.rowMaps[*hf] = rotaryRowMap(t.shape[0], spec.headDim);
    }
}

/// The plan item of one file tensor, with its parts and row map (kind Copy, no descriptors).
Item Writer::itemFor(const RunState& s, const TensorView& f) {
    Item it;
    it.file = &f;
    it.name = f.name;
    it.shape = f.shape;
    if (auto p = s.byFile.find(f.name); p != s.byFile.end()) it.parts = p->second;
    if (auto p = s.rowMaps.find(f.name); p != s.rowMaps.end()) it.rowMap = p->second;
    return it;
}

/// Every module the format will be offered, built first: HfQuantFormat::plan() sees them all
/// before the first cannotExpress() (formats with one global setting pick it there).
void Writer::prebuildModules(RunState& s) const {
    std::vector<const HfQuantModule*> offered;
    for (const TensorView* fp : s.fileList) {
        const Item it = itemFor(s, *fp);
        if (fp->shape.size() != 2 || !endsWith(fp->name, ".weight") || it.parts.empty()) continue;
        bool allReplaced = true, anyQuant = false, plain = true;
        for (const TensorView* p : it.parts) {
            const CompressedTensor* ct = m_ov.compressed(p->name);
            if (!ct) {
                allReplaced = false;
                continue;
            }
            anyQuant |= ct->quantized || (ct->sparsity && !ct->isFloat);
            plain &= ct->rows * ct->cols == p->numel() && !m_ov.isLowRank(p->name);
        }
        if (!allReplaced || !anyQuant || !plain || !moduleProblem(it).empty()) continue;
        auto h = buildModule(it, false); // plan() needs the settings, not the masks
        offered.push_back(&h->m);
        s.prebuilt[fp->name] = std::move(h);
    }
    m_format.plan(offered);
}

/// Marks the parts of `it` covered and checks they can be written (no low-rank factors, no
/// changed shapes); says whether any is replaced / quantised.
TensorFacts Writer::checkParts(RunState& s, const Item& it) const {
    TensorFacts t;
    for (const TensorView* p : it.parts) {
        s.covered.insert(p->name);
        if (m_ov.isLowRank(p->name))
            throw UnsupportedError("'" + p->name +
                                   "' is replaced by low-rank factors, which a "
                                   "Hugging Face checkpoint cannot hold");
        if (const CompressedTensor* ct = m_ov.compressed(p->name)) {
            t.anyReplaced = true;
            t.anyQuant |= ct->quantized || (ct->sparsity && !ct->isFloat);
            if (ct->rows * ct->cols != p->numel())
                throw UnsupportedError("'" + p->name + "' is structurally pruned (" +
                                       std::to_string(ct->rows) + "x" + std::to_string(ct->cols) +
                                       "); a checkpoint of changed shapes needs a changed "
                                       "config.json, which this export does not write");
        }
    }
    return t;
}

/// Gives a one-tensor item its descriptor (the next in the list) and adds it to the plan.
void addSingleDesc(RunState& s, Item& it, TensorDesc d) {
    s.descs.push_back(std::move(d));
    s.sources.push_back({s.items.size(), 0});
    it.firstDesc = s.descs.size() - 1;
    it.descCount = 1;
}

/// Plans one file tensor of the base: its bytes copied, a module in the format, or floats.
void Writer::planFileTensor(RunState& s, const TensorView& f, HfCheckpointResult& res) const {
    Item it = itemFor(s, f);
    // Bytes that can be copied as they are: plain types in the file's row order.
    const bool copyable = it.rowMap.empty() && dtypeBlockElems(f.dtype) == 1;
    TensorFacts t = checkParts(s, it);
    t.linear = f.shape.size() == 2 && endsWith(f.name, ".weight");
    for (const TensorView* p : it.parts) t.targetable |= compress::isTargetable(p->name);
    HfModuleReport rep;
    rep.module = t.linear ? f.name.substr(0, f.name.size() - 7) : f.name;
    for (const TensorView* p : it.parts) rep.canonical.push_back(p->name);
    if (!t.anyReplaced && copyable) {
        planCopy(s, std::move(it), t, std::move(rep), res);
        return;
    }
    std::string problem;
    bool allReplaced = true;
    for (const TensorView* p : it.parts) allReplaced &= m_ov.compressed(p->name) != nullptr;
    const CompressedTensor* first = m_ov.compressed(it.parts[0]->name);
    for (const TensorView* p : it.parts)
        if (const CompressedTensor* ct = m_ov.compressed(p->name); ct && !first) first = ct;
    // None replaced: a base tensor in a block type (GGUF q4_k, ...) written as exact floats.
    if (first) rep.scheme = schemeText(*first, activation(it.parts[0]->name));
    if (t.anyQuant && t.linear) {
        problem =
            allReplaced ? moduleProblem(it) : "only some parts of the fused tensor are compressed";
        if (problem.empty()) {
            problem = planModule(s, it, rep, res);
            if (problem.empty()) return; // written as a module
        }
    }
    planFloat(s, std::move(it), t, problem, std::move(rep), res);
}

/// A tensor whose bytes are copied from the base file as they are.
void Writer::planCopy(RunState& s, Item it, const TensorFacts& t, HfModuleReport rep,
                      HfCheckpointResult& res) {
    const TensorView& f = *it.file;
    it.kind = Kind::Copy;
    if (f.nbytes != tensorDescBytes({f.name, f.dtype, f.shape}))
        throw FormatError(f.file, "tensor '" + f.name + "' has an unexpected size");
    addSingleDesc(s, it, {f.name, f.dtype, f.shape});
    if (t.linear && t.targetable) {
        rep.status = "copied";
        res.modules.push_back(rep);
    }
    s.items.push_back(std::move(it));
}

/// A quantised / pruned weight offered to the format as one module: the format describes its
/// tensors (names, types, shapes) without encoding them; each module is encoded once, while the
/// shards are written. Returns why the format cannot express it; empty: planned (and `it` moved
/// into the plan).
std::string Writer::planModule(RunState& s, Item& it, HfModuleReport& rep,
                               HfCheckpointResult& res) const {
    auto pb = s.prebuilt.find(it.name);
    auto h = pb != s.prebuilt.end() ? std::move(pb->second) : buildModule(it);
    if (h->m.sparsity && !h->m.mask) attachMask(*h, it);
    std::string problem = m_format.cannotExpress(h->m);
    if (!problem.empty()) return problem;
    std::vector<TensorDesc> descs = m_format.describe(h->m);
    it.kind = Kind::Module;
    it.firstDesc = s.descs.size();
    for (size_t b = 0; b < descs.size(); ++b) {
        s.descs.push_back(std::move(descs[b]));
        s.sources.push_back({s.items.size(), b});
    }
    it.descCount = descs.size();
    h->values.clear(); // only the config needs it now: no pointers into data
    h->values.shrink_to_fit();
    h->m.values = nullptr;
    h->fused.codes.clear();
    h->fused.codes.shrink_to_fit();
    freeMask(*h);
    s.written.push_back(&h->m);
    s.keep.push_back(std::move(h));
    rep.status = "written";
    res.modules.push_back(rep);
    s.items.push_back(std::move(it));
    return {};
}

/// Floats: exact values, in the base dtype when that is exact (with the reason reported).
void Writer::planFloat(RunState& s, Item it, const TensorFacts& t, const std::string& problem,
                       HfModuleReport rep, HfCheckpointResult& res) const {
    const TensorView& f = *it.file;
    it.kind = Kind::Float;
    const std::vector<float> v = fileValues(it);
    it.floatType = exactFloatType(v, f.dtype);
    addSingleDesc(s, it, {f.name, it.floatType, f.shape});
    rep.status = "float";
    const std::string dt(dtypeName(it.floatType));
    if (!t.anyReplaced) {
        rep.status = "copied";
        rep.reason = std::string(it.rowMap.empty() ? ""
                                                   : "rows in the Hugging Face rotary "
                                                     "order; ") +
                     "converted from " + std::string(dtypeName(f.dtype)) + " to " + dt;
        if (!(t.linear && t.targetable)) rep.module.clear(); // not reported
    } else if (t.anyQuant) {
        rep.reason = problem + "; written as its dequantised values in " + dt;
        if (t.linear) res.ignored.push_back(rep.module);
    } else {
        rep.reason = "float replacement written in " + dt +
                     (it.floatType == f.dtype
                          ? " (the base's dtype, exact)"
                          : " (not exact in the base's " + std::string(dtypeName(f.dtype)) + ")");
    }
    if (!rep.module.empty()) res.modules.push_back(rep);
    s.items.push_back(std::move(it));
}

/// Tensors the overlay added (folded biases): under their HF names, F32.
void Writer::planAddedTensors(RunState& s, HfCheckpointResult& res) const {
    const ModelSpec& spec = m_base.spec();
    for (const std::string& name : m_ov.addedNames()) {
        const auto hf = hfFromCanonical(name, spec.arch);
        if (!hf || s.byFile.count(*hf))
            throw UnsupportedError("'" + name +
                                   "' was added by the configuration and has no "
                                   "tensor name of its own in a Hugging Face checkpoint of " +
                                   spec.arch);
        s.covered.insert(name);
        Item it;
        it.kind = Kind::Float;
        it.name = *hf;
        it.addedCanonical = name;
        it.shape = m_ov.compressed(name)->view.shape;
        it.floatType = DType::F32;
        addSingleDesc(s, it, {it.name, DType::F32, it.shape});
        HfModuleReport rep;
        rep.module = *hf;
        rep.canonical = {name};
        rep.status = "float";
        rep.scheme = "added tensor";
        rep.reason = "added by the configuration (folded scales), written in f32";
        res.modules.push_back(rep);
        s.items.push_back(std::move(it));
    }
}

/// Every compressed tensor (but low-rank ones, rejected per tensor) has a place in the file.
void Writer::checkAllCovered(const RunState& s) const {
    for (const std::string& name : m_ov.replacedNames())
        if (!s.covered.count(name) && !m_ov.isLowRank(name))
            throw UnsupportedError("'" + name + "' is compressed but has no tensor of its own in " +
                                   m_base.path() + " (tied embeddings?)");
}

/// The format's quantization_config of the written modules (and a warning when the KV-cache
/// quantisation has no form in it).
json Writer::planQuantizationConfig(RunState& s, HfCheckpointResult& res) const {
    if (const RuntimeQuant* rq = m_ov.runtimeQuant())
        for (const auto& [layer, k] : rq->kv) s.kv.push_back(k);
    json qc = m_format.quantizationConfig(s.written, res.ignored, s.kv);
    res.quantizationConfig = qc;
    if (!s.kv.empty() && (!qc.contains("kv_cache_scheme") || qc["kv_cache_scheme"].is_null()))
        res.warnings.push_back("the KV-cache quantisation (" + std::to_string(s.kv.size()) +
                               " blocks, lcw's dynamic asymmetric groups) has no " +
                               m_format.name() + " form: not written");
    else if (std::any_of(s.kv.begin(), s.kv.end(), [](const KvQuantSpec& k) {
                 return k.pastOnly || !k.kScale.empty() || !k.vScale.empty();
             }))
        res.warnings.push_back("WKVQuant's past-only KV quantisation and per-channel K/V "
                               "smoothing have no " +
                               m_format.name() + " form: the KV-cache scheme leaves them out");
    return qc;
}

/// Activation quantisation rides on the modules written in the format; say what is lost.
void Writer::warnLostActivations(const RunState& s, HfCheckpointResult& res) const {
    const RuntimeQuant* rq = m_ov.runtimeQuant();
    if (!rq) return;
    std::set<std::string> carried;
    for (const HfQuantModule* m : s.written)
        if (m->activation.active()) carried.insert(m->canonical.begin(), m->canonical.end());
    int64_t lost = 0;
    std::string first;
    for (const auto& [name, a] : rq->activations)
        if (a.active() && !carried.count(name) && lost++ == 0) first = name;
    if (lost > 0)
        res.warnings.push_back("the input-activation quantisation of " + std::to_string(lost) +
                               " linear(s) (" + first + (lost > 1 ? ", ..." : "") +
                               ") is not written: their weights are not written in " +
                               m_format.name() + " (floats or unquantised)");
}

/// vLLM fuses q/k/v and gate/up into one layer and needs one scheme for the parts.
void Writer::warnFusedSchemes(HfCheckpointResult& res) {
    std::map<std::string, std::set<std::string>> fusedSchemes;
    for (const auto& m : res.modules) {
        if (m.canonical.size() != 1) continue;
        const std::string& c = m.canonical[0];
        const auto dot = c.rfind('.');
        if (dot == std::string::npos) continue;
        const std::string head = c.substr(0, dot), role = c.substr(dot + 1);
        std::string key;
        if (head.ends_with(".attn") && (role == "q" || role == "k" || role == "v"))
            key = head + ".q/k/v";
        else if (head.ends_with(".mlp") && (role == "gate" || role == "up"))
            key = head + ".gate/up";
        if (!key.empty()) fusedSchemes[key].insert(m.status + " " + m.scheme);
    }
    std::string odd;
    int n = 0;
    for (const auto& [key, schemes] : fusedSchemes)
        if (schemes.size() > 1 && n++ < 3) odd += (odd.empty() ? "" : ", ") + key;
    if (n > 0)
        res.warnings.push_back("vLLM loads q/k/v and gate/up as one fused layer with one "
                               "scheme; these differ: " +
                               odd + (n > 3 ? " and " + std::to_string(n - 3) + " more" : ""));
}

/// Warnings on the scale types written: float16 scales of a bfloat16 base, static input scales.
void Writer::warnScaleTypes(const RunState& s, HfCheckpointResult& res) const {
    bool bf16 = false;
    for (const Item& it : s.items)
        if (it.kind == Kind::Module && it.file && it.file->dtype == DType::BF16) bf16 = true;
    if (bf16)
        res.warnings.push_back("the base is bfloat16 and the weight scales are written in float16 "
                               "(lcw's exact scales); a loader that casts them to bfloat16 "
                               "rounds them");
    bool staticAct = false;
    for (const HfQuantModule* m : s.written)
        staticAct |= m->activation.active() && !m->activation.perToken;
    if (staticAct)
        res.warnings.push_back("static activation scales written as input_scale; " +
                               m_format.name() +
                               " clamps codes to [-2^(b-1), 2^(b-1)-1], lcw to ±(2^(b-1)-1)");
}

/// The output folder: absent or empty (an error otherwise), its parent created.
OutputFolder Writer::prepareOutputFolder(const HfCheckpointOptions& opts) {
    OutputFolder o;
    o.path = fs::path(opts.outDir);
    if (opts.outDir.empty()) throw ArgumentError("export: no output folder given");
    if (!o.path.has_filename()) o.path = o.path.parent_path();
    o.out = o.path.string();
    std::error_code ec;
    o.exists = fs::exists(fs::symlink_status(o.path, ec));
    if (o.exists) {
        if (!fs::is_directory(o.path, ec))
            throw ArgumentError(o.out + ": exists and is not a folder");
        if (!fs::is_empty(o.path, ec))
            throw ArgumentError(o.out +
                                ": the folder exists and is not empty (choose a new folder)");
    }
    if (o.path.has_parent_path()) {
        fs::create_directories(o.path.parent_path(), ec);
        if (ec) throw Error(o.out + ": cannot create the parent folder (" + ec.message() + ")");
    }
    return o;
}

/// Writes everything into a temporary folder beside `dst` and renames it into place (removed
/// on failure). Returns false when cancelled (res.status set).
bool Writer::writeFolder(const RunState& s, const json& qc, const OutputFolder& dst,
                         const HfCheckpointOptions& opts, Progress& progress,
                         HfCheckpointResult& res) const {
    const std::string tmp = createTempDirFor(dst.out);
    std::error_code ec;
    try {
        writeShards(s, tmp, opts, progress, res);
        writeConfig(s, tmp, qc, res);
        copyTokenizerFiles(s, tmp, res);
        if (!progress.report(0.99, "config")) throw Cancelled{};
        commitFolder(tmp, dst);
    } catch (const Cancelled&) {
        fs::remove_all(tmp, ec);
        res.status = Status::Cancelled;
        return false;
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
    return true;
}

/// The tensors a module's encode() made are the ones its describe() planned (names, types,
/// shapes, in order).
void checkBlobsMatch(const std::vector<HfTensorBlob>& blobs, const std::vector<TensorDesc>& descs,
                     const Item& it) {
    if (blobs.size() != it.descCount)
        throw Error(it.name + ": the format encoded " + std::to_string(blobs.size()) +
                    " tensors, it described " + std::to_string(it.descCount));
    for (size_t b = 0; b < blobs.size(); ++b) {
        const TensorDesc& d = descs[it.firstDesc + b];
        if (blobs[b].name != d.name || blobs[b].dtype != d.dtype || blobs[b].shape != d.shape)
            throw Error(it.name + ": the format encoded " + blobs[b].name + " (" +
                        std::string(dtypeName(blobs[b].dtype)) + ") where it described " + d.name +
                        " (" + std::string(dtypeName(d.dtype)) + ") or another shape");
    }
}

/// The safetensors shards: each tensor's bytes made as the writer asks for them (each module
/// encoded once, when its first tensor is written), with progress and cancellation per tensor.
void Writer::writeShards(const RunState& s, const std::string& tmp, const HfCheckpointOptions& opts,
                         Progress& progress, HfCheckpointResult& res) const {
    uint64_t done = 0;
    size_t cachedItem = SIZE_MAX;
    std::vector<HfTensorBlob> blobs;
    auto fill = [&](size_t index, std::byte* dst, uint64_t nbytes) {
        const DescSource& src = s.sources[index];
        const Item& it = s.items[src.item];
        switch (it.kind) {
        case Kind::Copy:
            std::memcpy(dst, it.file->data, size_t(nbytes));
            break;
        case Kind::Module: {
            if (cachedItem != src.item) {
                const auto h = buildModule(it);
                blobs = m_format.encode(h->m);
                cachedItem = src.item;
                checkBlobsMatch(blobs, s.descs, it);
            }
            const HfTensorBlob& b = blobs[src.blob];
            if (b.data.size() != nbytes)
                throw Error(b.name + ": the format's tensor has " + std::to_string(b.data.size()) +
                            " bytes, its descriptor " + std::to_string(nbytes));
            std::memcpy(dst, b.data.data(), size_t(nbytes));
            if (src.blob + 1 == it.descCount) {
                blobs.clear();
                cachedItem = SIZE_MAX;
            }
            break;
        }
        case Kind::Float:
            writeFloats(fileValues(it), it.floatType, dst);
            break;
        }
        done += nbytes;
        if (!progress.report(s.total ? 0.98 * double(done) / double(s.total) : 0.0,
                             s.descs[index].name))
            throw Cancelled{};
    };
    const auto paths =
        writeSafetensorsSharded(tmp, s.descs, fill, opts.maxShardBytes, {{"format", "pt"}});
    for (const auto& p : paths) res.files.push_back(fs::path(p).filename().string());
}

/// config.json: the base's with the format's quantization_config; then the format's own files.
void Writer::writeConfig(const RunState& s, const std::string& tmp, const json& qc,
                         HfCheckpointResult& res) const {
    const std::string cfgPath = (fs::path(m_base.path()) / "config.json").string();
    json cfg;
    if (!s.hfBase) {
        cfg = configFor(m_base);
    } else {
        try {
            cfg = json::parse(readWholeFile(cfgPath));
        } catch (const json::exception& e) {
            throw FormatError(cfgPath, std::string("invalid JSON: ") + e.what());
        }
    }
    cfg["quantization_config"] = qc;
    writeText((fs::path(tmp) / "config.json").string(), cfg.dump(2) + "\n");
    res.files.push_back("config.json");
    for (const auto& [name, text] : m_format.extraFiles(qc)) {
        writeText((fs::path(tmp) / name).string(), text);
        res.files.push_back(name);
    }
}

/// The base's tokenizer and generation files, copied as they are (Hugging Face bases only).
void Writer::copyTokenizerFiles(const RunState& s, const std::string& tmp,
                                HfCheckpointResult& res) const {
    std::error_code ec;
    for (const char* name :
         {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
          "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json"}) {
        const fs::path src = fs::path(m_base.path()) / name;
        if (!s.hfBase || !fs::is_regular_file(src, ec)) continue;
        writeText((fs::path(tmp) / name).string(), readWholeFile(src.string()));
        res.files.push_back(name);
    }
}

/// The atomic commit: the finished temporary folder renamed over the (empty or absent) output.
void Writer::commitFolder(const std::string& tmp, const OutputFolder& dst) {
    std::error_code ec;
    ::chmod(tmp.c_str(), 0755);
    if (dst.exists) fs::remove(dst.path, ec); // the empty folder
    fs::rename(tmp, dst.path, ec);
    if (ec) throw Error(dst.out + ": cannot move the new folder into place: " + ec.message());
}

} // namespace

HfCheckpointResult exportHfCheckpoint(const Model& base, const WeightSource& weights,
                                      HfQuantFormat& format, const HfCheckpointOptions& opts) {
    const auto* ov = dynamic_cast<const CompressedModel*>(&weights);
    if (!ov)
        throw ArgumentError("export --format " + format.name() +
                            ": give a configuration (--recipe, --preset or --overlay); the model "
                            "alone has nothing quantised");
    if (&ov->base() != &base)
        throw ArgumentError("export: the configuration is not an overlay of " + base.path());
    if (const RuntimeQuant* rq = ov->runtimeQuant(); rq && rq->rotation.active())
        throw UnsupportedError("export --format " + format.name() +
                               ": the configuration's rotation has online transforms (recipe "
                               "rotation.online_down / online_qk) that the checkpoint format "
                               "cannot express");
    const ModelSpec& spec = base.spec();
    if (spec.sourceFormat != "safetensors") {
        if (spec.arch != "llama" && spec.arch != "mistral" && spec.arch != "qwen2")
            throw UnsupportedError(base.path() + ": a " + spec.sourceFormat + " model of the " +
                                   spec.arch +
                                   " family cannot be written as a Hugging Face checkpoint (lcw "
                                   "writes the config.json of llama, mistral and qwen2; export "
                                   "from the model's Hugging Face folder instead)");
        if (spec.rope.partialRotaryFactor != 1.0)
            throw UnsupportedError(base.path() + ": partial rotary embeddings cannot be written "
                                                 "as a Hugging Face llama checkpoint");
    }
    if (opts.outDir.empty()) throw ArgumentError("export: no output folder given");
    if (opts.maxShardBytes == 0) throw ArgumentError("export: the shard size must be positive");
    Writer w(base, *ov, format);
    return w.run(opts);
}

json hfCheckpointReportJson(const HfCheckpointResult& r) {
    json j;
    j["format"] = r.format;
    j["status"] = r.status == Status::Ok ? "ok" : "cancelled";
    j["path"] = r.path;
    j["bytes"] = r.tensorBytes;
    j["files"] = r.files;
    j["modules"] = json::array();
    int written = 0, floats = 0, copied = 0;
    for (const auto& m : r.modules) {
        json e;
        e["module"] = m.module;
        e["canonical"] = m.canonical;
        e["status"] = m.status;
        e["scheme"] = m.scheme;
        if (!m.reason.empty()) e["reason"] = m.reason;
        j["modules"].push_back(e);
        written += m.status == "written";
        floats += m.status == "float";
        copied += m.status == "copied";
    }
    j["counts"] = {{"written", written}, {"float", floats}, {"copied", copied}};
    j["ignored"] = r.ignored;
    json ne = json::array();
    for (const auto& m : r.modules)
        if (m.status == "float" && !m.reason.empty())
            ne.push_back({{"module", m.module}, {"reason", m.reason}});
    j["not_expressible"] = ne;
    j["warnings"] = r.warnings;
    j["quantization_config"] = r.quantizationConfig;
    j["seconds"] = r.seconds;
    return j;
}

} // namespace lcw
