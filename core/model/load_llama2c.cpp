// llama2.c checkpoint loader: header → spec, weights as views into the map, tokenizer.bin or
// tok<vocab>.bin beside the checkpoint.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/llama2c.h"
#include "core/model/loaders.h"
#include "core/tokenizer/tokenizer.h"

#include <filesystem>

namespace lcw::detail {

std::unique_ptr<Model> loadLlama2cModel(const std::string& file, const LoadOptions& opts) {
    namespace fs = std::filesystem;
    Llama2cCheckpoint ck = readLlama2c(file);
    const Llama2cConfig& c = ck.config;
    auto m = std::make_unique<Model>();
    m->setPath(file);
    ModelSpec& s = m->mutableSpec();
    s.arch = "llama";
    s.sourceFormat = "llama2c";
    s.dim = c.dim;
    s.nLayers = c.nLayers;
    s.nHeads = c.nHeads;
    s.nKvHeads = c.nKvHeads;
    s.headDim = c.dim / c.nHeads;
    s.hidden = c.hiddenDim;
    s.vocab = c.vocabSize;
    s.maxSeq = c.seqLen;
    s.normEps = 1e-5f;
    s.rope = RopeConfig{};
    s.rope.theta = 10000.0;
    s.rope.interleaved = true; // Meta's original adjacent-pair layout
    s.tiedEmbeddings = c.sharedClassifier;
    s.bosId = 1;
    s.eosIds = {2};
    s.hiddenAct = "silu";
    m->keepAlive(ck.file);
    for (auto& t : ck.tensors) m->addTensor(std::move(t));
    validateModel(*m, file);

    if (!opts.tokenizerPath.empty()) {
        m->setTokenizer(loadTokenizerFile(opts.tokenizerPath, s.vocab));
        return m;
    }
    const fs::path dir = fs::path(file).parent_path();
    std::error_code ec;
    fs::path found;
    for (const fs::path& cand :
         {dir / "tokenizer.bin", dir / ("tok" + std::to_string(s.vocab) + ".bin")})
        if (fs::is_regular_file(cand, ec)) {
            found = cand;
            break;
        }
    if (found.empty()) {
        const std::string msg = "no tokenizer beside the checkpoint (looked for tokenizer.bin "
                                "and tok" +
                                std::to_string(s.vocab) + ".bin)";
        if (opts.requireTokenizer) throw FormatError(file, msg);
        m->addWarning(file + ": " + msg + "; loaded without a tokenizer");
        return m;
    }
    try {
        m->setTokenizer(loadTokenizerFile(found.string(), s.vocab));
    } catch (const std::exception& e) {
        if (opts.requireTokenizer) throw;
        m->addWarning(std::string(e.what()) + " (continuing without a tokenizer)");
    }
    return m;
}

} // namespace lcw::detail
