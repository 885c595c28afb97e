#include "core/model/model.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/quants.h"
#include "core/model/hf_cache.h"
#include "core/model/loaders.h"
#include "core/tokenizer/tokenizer.h"

#include <cmath>
#include <filesystem>
#include <fstream>

namespace lcw {

const TensorView& WeightSource::get(std::string_view canonical) const {
    if (const TensorView* t = find(canonical)) return *t;
    throw Error("model has no tensor '" + std::string(canonical) + "'");
}

const TensorView& WeightSource::lmHead() const {
    if (const TensorView* t = find("lm_head")) return *t;
    return get("embed");
}

Model::Model() = default;
Model::~Model() = default;

const TensorView* Model::find(std::string_view canonical) const {
    auto it = m_index.find(std::string(canonical));
    return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

void Model::addTensor(TensorView t) {
    if (m_index.count(t.name))
        throw FormatError(t.file, "tensor '" + t.fileName + "' maps to '" + t.name +
                                      "', which is already present (duplicate tensor)");
    m_index.emplace(t.name, m_tensors.size());
    m_tensors.push_back(std::move(t));
}

void Model::keepAlive(std::shared_ptr<const MappedFile> f) {
    m_files.push_back(std::move(f));
}

const std::byte* Model::ownBuffer(std::vector<std::byte> bytes) {
    m_buffers.push_back(std::make_unique<std::vector<std::byte>>(std::move(bytes)));
    return m_buffers.back()->data();
}

void Model::setTokenizer(std::unique_ptr<Tokenizer> t) {
    m_tokenizer = std::move(t);
}

const Tokenizer& Model::tokenizer() const {
    if (m_sharedTokenizer) return *m_sharedTokenizer;
    if (!m_tokenizer)
        throw Error(m_path + ": no tokenizer found (pass --tokenizer FILE, or put tokenizer.json / "
                             "tokenizer.bin beside the model)");
    return *m_tokenizer;
}

int64_t Model::parameterCount() const {
    int64_t n = 0;
    for (const auto& t : m_tensors) n += t.numel();
    return n;
}

uint64_t Model::storedBytes() const {
    uint64_t n = 0;
    for (const auto& t : m_tensors) n += tensorStoredBytes(t);
    return n;
}

uint64_t Model::tensorStoredBytes(const TensorView& t) const {
    if (m_storedBytes.empty()) return t.nbytes;
    auto it = m_storedBytes.find(t.name);
    return it == m_storedBytes.end() ? t.nbytes : it->second;
}

std::string Model::tensorScheme(std::string_view canonical) const {
    auto it = m_schemes.find(std::string(canonical));
    return it == m_schemes.end() ? std::string() : it->second;
}

void Model::setTensorScheme(const std::string& canonical, std::string scheme) {
    m_schemes[canonical] = std::move(scheme);
}

void Model::setTensorStoredBytes(const std::string& canonical, uint64_t bytes) {
    m_storedBytes[canonical] = bytes;
}

std::optional<std::string> Model::findNonFinite(Progress* progress) const {
    std::vector<float> buf;
    for (size_t i = 0; i < m_tensors.size(); ++i) {
        const auto& t = m_tensors[i];
        if (progress && !progress->report(double(i) / double(m_tensors.size()), "checking weights"))
            return std::nullopt;
        if (!dtypeIsFloatLike(t.dtype) || t.numel() == 0) continue;
        const int64_t cols = t.cols();
        buf.resize(size_t(cols));
        for (int64_t r = 0; r < t.rows(); ++r) {
            dequantizeRow(t.dtype, t.row(r), buf.data(), cols);
            for (int64_t c = 0; c < cols; ++c) {
                if (!std::isfinite(buf[size_t(c)])) {
                    return t.file + ": tensor '" + t.fileName + "' (" + t.name + ") has " +
                           (std::isnan(buf[size_t(c)]) ? "NaN" : "Inf") + " at element " +
                           std::to_string(r * cols + c);
                }
            }
        }
    }
    return std::nullopt;
}

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& opts) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(path, ec)) throw FormatError(path, "no such file or folder");
    if (fs::is_directory(path, ec)) {
        // A Hugging Face hub cache folder (models--org--name): its refs/main or newest snapshot.
        if (auto hf = resolveHfCache(path)) {
            std::unique_ptr<Model> m = load(hf->path, opts);
            m->addWarning("Hugging Face cache: " + hf->reason);
            return m;
        }
        return detail::loadHfFolder(path, opts);
    }
    // Sniff the magic rather than trusting the extension.
    char magic[4] = {0, 0, 0, 0};
    {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw FormatError(path, "cannot open");
        in.read(magic, 4);
    }
    if (std::string(magic, 4) == "GGUF") return detail::loadGgufModel(path, opts);
    const std::string ext = fs::path(path).extension().string();
    if (ext == ".safetensors" || fs::path(path).filename() == "config.json")
        return detail::loadHfFolder(fs::path(path).parent_path().string(), opts);
    if (ext == ".gguf") throw FormatError(path, "not a GGUF file (bad magic)", 0);
    return detail::loadLlama2cModel(path, opts);
}

} // namespace lcw
