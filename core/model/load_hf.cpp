// Hugging Face folder loader: config.json + safetensors (single or sharded) + tokenizer.json.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/hf_config.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_names.h"
#include "core/model/load_hf_quant.h"
#include "core/model/loaders.h"
#include "core/tokenizer/tokenizer.h"

#include <filesystem>

namespace lcw::detail {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> loadTokenizerFile(const std::string& path, int64_t vocab) {
    try {
        std::error_code ec;
        if (!fs::exists(path, ec)) throw FormatError(path, "tokenizer file not found");
        if (fs::path(path).extension() == ".json") {
            const fs::path cfg = fs::path(path).parent_path() / "tokenizer_config.json";
            return Tokenizer::fromHfJson(path, fs::exists(cfg, ec) ? cfg.string() : std::string());
        }
        if (vocab <= 0 || vocab > INT32_MAX)
            throw FormatError(path, "cannot read a llama2.c tokenizer without a vocabulary size");
        return Tokenizer::fromLlama2c(path, int32_t(vocab));
    } catch (...) {
        rethrowWithContext("loading tokenizer");
    }
}

std::unique_ptr<Model> loadHfFolder(const std::string& folder, const LoadOptions& opts) {
    auto m = std::make_unique<Model>();
    m->setPath(folder);
    std::error_code ec;
    const fs::path dir(folder);
    const fs::path cfgPath = dir / "config.json";
    if (!fs::exists(cfgPath, ec))
        throw FormatError(folder, "no config.json in the folder (expected a Hugging Face model "
                                  "folder)");
    std::vector<std::string> warnings;
    ModelSpec spec = readHfConfig(cfgPath.string(), &warnings);

    SafetensorsSet st = readSafetensorsFolder(folder);
    for (auto& f : st.files) m->keepAlive(f);
    // GPTQ / AWQ / compressed-tensors: quantised modules become exact float32 weights.
    std::optional<HfQuantized> quant = loadHfQuantized(*m, cfgPath.string(), st.tensors, warnings);
    const std::vector<TensorView>& fileTensors = quant ? quant->tensors : st.tensors;
    for (const auto& t : fileTensors) {
        TensorView v = t;
        const HfQuantized::Info* qi = nullptr;
        if (quant)
            if (auto it = quant->byWeight.find(t.name); it != quant->byWeight.end())
                qi = &it->second;
        if (auto c = canonicalFromHf(t.name, spec.arch)) {
            auto ln = splitCanonical(*c);
            if (ln && ln->layer >= spec.nLayers)
                throw FormatError(t.file, "tensor '" + t.name + "' belongs to layer " +
                                              std::to_string(ln->layer) + " but " +
                                              cfgPath.string() + " declares " +
                                              std::to_string(spec.nLayers) + " layers");
            v.name = *c;
            // A quantised Conv1D is dequantised as the [out, in] linear already.
            if (qi && isConv1dWeight(spec, v)) v.fileTransposed = true;
            const size_t before = m->tensors().size();
            addSplitTensor(*m, spec, std::move(v));
            if (qi) {
                // The parts of a fused module share its scheme and its file bytes by size.
                const size_t after = m->tensors().size();
                int64_t total = 0;
                for (size_t i = before; i < after; ++i) total += m->tensors()[i].numel();
                uint64_t left = qi->fileBytes;
                for (size_t i = before; i < after; ++i) {
                    const TensorView& p = m->tensors()[i];
                    const uint64_t share =
                        i + 1 == after || total == 0
                            ? left
                            : uint64_t(double(qi->fileBytes) * double(p.numel()) / double(total));
                    left -= std::min(left, share);
                    m->setTensorScheme(p.name, qi->scheme);
                    m->setTensorStoredBytes(p.name, share);
                }
            }
        } else {
            v.name = "extra." + t.name;
            if (qi) {
                m->setTensorScheme(v.name, qi->scheme);
                m->setTensorStoredBytes(v.name, qi->fileBytes);
            }
            m->addTensor(std::move(v));
        }
    }
    if (quant) m->setQuantization(quant->method, quant->summary);
    if (quant && !quant->activations.empty()) {
        // Input activations by module: every lcw linear read from the module's weight (the
        // parts of a fused module share their input).
        RuntimeQuant rq;
        for (const TensorView& t : m->tensors())
            if (t.fileName.ends_with(".weight"))
                if (auto a = quant->activations.find(t.fileName.substr(0, t.fileName.size() - 7));
                    a != quant->activations.end())
                    rq.activations[t.name] = a->second;
        m->setRuntimeQuant(std::move(rq));
    }

    if (spec.tiedEmbeddings && m->find("lm_head")) {
        warnings.push_back(cfgPath.string() +
                           ": tie_word_embeddings is true but the weights contain "
                           "lm_head.weight; using lm_head.weight");
        spec.tiedEmbeddings = false;
    }
    // Biases present although the config does not announce them (e.g. llama with
    // attention_bias missing): use them rather than silently ignoring weights.
    if (!spec.attnBias && !spec.isMamba() && m->find("layers.0.attn.q.bias")) {
        warnings.push_back(cfgPath.string() + ": q/k/v biases found although the config does "
                                              "not declare attention_bias; using them");
        spec.attnBias = true;
    }
    if (!spec.attnOutBias && m->find("layers.0.attn.o.bias")) spec.attnOutBias = true;
    if (!spec.mlpBias && (m->find("layers.0.mlp.gate.bias") || m->find("layers.0.mlp.down.bias")))
        spec.mlpBias = true;
    m->mutableSpec() = spec;
    validateModel(*m, folder);

    // Tokenizer: explicit path, else tokenizer.json beside the weights.
    if (!opts.tokenizerPath.empty()) {
        m->setTokenizer(loadTokenizerFile(opts.tokenizerPath, spec.vocab));
    } else {
        const fs::path tj = dir / "tokenizer.json";
        if (fs::exists(tj, ec)) {
            try {
                m->setTokenizer(loadTokenizerFile(tj.string(), spec.vocab));
            } catch (const std::exception& e) {
                if (opts.requireTokenizer) throw;
                warnings.push_back(std::string(e.what()) + " (continuing without a tokenizer)");
            }
        } else if (opts.requireTokenizer) {
            throw FormatError(folder, "no tokenizer: tokenizer.json is missing from the folder "
                                      "(pass a tokenizer file explicitly)");
        } else {
            warnings.push_back(folder + ": no tokenizer.json; loaded without a tokenizer");
        }
    }
    for (auto& w : warnings) m->addWarning(std::move(w));
    return m;
}

} // namespace lcw::detail
