#include "core/io/llama2c.h"

#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"

#include <cstring>

namespace lcw {

namespace {

constexpr uint32_t kMagicV1 = 0x616b3432u; // "ak42" little-endian
constexpr uint64_t kV1Header = 256;

struct Sizes {
    uint64_t dim, hidden, layers, kvDim, vocab, seq, headDim;
};

// The weight count implied by the header, checked (the header is untrusted).
uint64_t mul(uint64_t a, uint64_t b, const std::string& path) {
    return checked::mulU(a, b, path, "the weight count implied by the header dimensions");
}
uint64_t add(uint64_t a, uint64_t b, const std::string& path) {
    return checked::addU(a, b, path, "the weight count implied by the header dimensions");
}

Sizes checkConfig(const Llama2cConfig& c, const std::string& path) {
    auto pos = [&](int32_t v, const char* what) {
        if (v <= 0)
            throw FormatError(path,
                              std::string("header field ") + what + " is " + std::to_string(v) +
                                  ", must be positive (not a llama2.c checkpoint?)",
                              0);
    };
    pos(c.dim, "dim");
    pos(c.hiddenDim, "hidden_dim");
    pos(c.nLayers, "n_layers");
    pos(c.nHeads, "n_heads");
    pos(c.nKvHeads, "n_kv_heads");
    pos(c.vocabSize, "vocab_size");
    pos(c.seqLen, "seq_len");
    if (c.dim % c.nHeads != 0)
        throw FormatError(path,
                          "dim " + std::to_string(c.dim) + " is not a multiple of n_heads " +
                              std::to_string(c.nHeads),
                          0);
    if (c.nHeads % c.nKvHeads != 0)
        throw FormatError(path,
                          "n_heads " + std::to_string(c.nHeads) +
                              " is not a multiple of n_kv_heads " + std::to_string(c.nKvHeads),
                          0);
    Sizes s;
    s.dim = uint64_t(c.dim);
    s.hidden = uint64_t(c.hiddenDim);
    s.layers = uint64_t(c.nLayers);
    s.headDim = s.dim / uint64_t(c.nHeads);
    s.kvDim = s.headDim * uint64_t(c.nKvHeads);
    s.vocab = uint64_t(c.vocabSize);
    s.seq = uint64_t(c.seqLen);
    if (s.headDim % 2 != 0)
        throw FormatError(path, "head size " + std::to_string(s.headDim) + " is odd", 0);
    return s;
}

// Floats of all weights (v0 order, freq_cis included for v0).
uint64_t floatCount(const Llama2cConfig& c, const Sizes& s, const std::string& path) {
    uint64_t n = 0;
    const uint64_t L = s.layers;
    n = add(n, mul(s.vocab, s.dim, path), path);                              // embeddings
    n = add(n, mul(mul(L, 2, path), s.dim, path), path);                      // rms_att, rms_ffn
    n = add(n, mul(L, mul(mul(s.dim, s.dim, path), 2, path), path), path);    // wq, wo
    n = add(n, mul(L, mul(mul(s.kvDim, s.dim, path), 2, path), path), path);  // wk, wv
    n = add(n, mul(L, mul(mul(s.hidden, s.dim, path), 3, path), path), path); // w1 w2 w3
    n = add(n, s.dim, path);                                                  // rms_final
    if (c.version == 0) n = add(n, mul(s.seq, s.headDim, path), path);        // freq_cis re+im
    if (!c.sharedClassifier) n = add(n, mul(s.vocab, s.dim, path), path);     // wcls
    return n;
}

} // namespace

uint64_t llama2cExpectedBytes(const Llama2cConfig& c, const std::string& path) {
    const Sizes s = checkConfig(c, path);
    const uint64_t header = c.version == 0 ? 28 : kV1Header;
    return add(header, mul(floatCount(c, s, path), 4, path), path);
}

Llama2cCheckpoint readLlama2c(const std::string& path) {
    Llama2cCheckpoint ck;
    ck.file = MappedFile::open(path);
    const MappedFile& f = *ck.file;
    if (f.size() < 28)
        throw FormatError(path, "file too short for a llama2.c header (" +
                                    std::to_string(f.size()) + " bytes, need at least 28)");
    auto rdI32 = [&](uint64_t off) {
        int32_t v;
        std::memcpy(&v, f.data() + off, 4);
        return v;
    };
    Llama2cConfig& c = ck.config;
    uint64_t hdr = 28;
    uint32_t magic;
    std::memcpy(&magic, f.data(), 4);
    if (magic == kMagicV1) {
        if (f.size() < kV1Header)
            throw FormatError(path, "file too short for a llama2.c version-1 header", 0);
        const int32_t version = rdI32(4);
        if (version != 1)
            throw UnsupportedError(path + ": llama2.c export version " + std::to_string(version) +
                                   " is not supported (only float32 versions 0 and 1)");
        c.version = 1;
        c.dim = rdI32(8);
        c.hiddenDim = rdI32(12);
        c.nLayers = rdI32(16);
        c.nHeads = rdI32(20);
        c.nKvHeads = rdI32(24);
        c.vocabSize = rdI32(28);
        c.seqLen = rdI32(32);
        c.sharedClassifier = std::to_integer<uint8_t>(f.data()[36]) != 0;
        hdr = kV1Header;
    } else {
        c.version = 0;
        c.dim = rdI32(0);
        c.hiddenDim = rdI32(4);
        c.nLayers = rdI32(8);
        c.nHeads = rdI32(12);
        c.nKvHeads = rdI32(16);
        const int32_t v = rdI32(20);
        c.sharedClassifier = v > 0;
        c.vocabSize = v == INT32_MIN ? 0 : (v < 0 ? -v : v);
        c.seqLen = rdI32(24);
    }
    const Sizes s = checkConfig(c, path);
    const uint64_t expected = llama2cExpectedBytes(c, path);
    if (f.size() != expected)
        throw FormatError(
            path, "file is " + std::to_string(f.size()) + " bytes but its header (dim " +
                      std::to_string(c.dim) + ", hidden " + std::to_string(c.hiddenDim) +
                      ", layers " + std::to_string(c.nLayers) + ", heads " +
                      std::to_string(c.nHeads) + "/" + std::to_string(c.nKvHeads) + ", vocab " +
                      std::to_string(c.vocabSize) + ", seq " + std::to_string(c.seqLen) +
                      ") implies " + std::to_string(expected) + " bytes" +
                      (f.size() < expected ? " (truncated)" : " (trailing data)"));

    // All sizes were checked against the file size above, so the offsets below stay inside.
    uint64_t off = hdr;
    auto take = [&](const std::string& canonical, const std::string& fileName,
                    std::vector<int64_t> shape) {
        TensorView t;
        t.name = canonical;
        t.fileName = fileName;
        t.file = path;
        t.dtype = DType::F32;
        t.shape = std::move(shape);
        t.nbytes = uint64_t(t.numel()) * 4;
        t.data = f.data() + off;
        off += t.nbytes;
        ck.tensors.push_back(std::move(t));
    };
    auto perLayer = [&](const std::string& role, const std::string& field,
                        std::vector<int64_t> shape) {
        for (uint64_t l = 0; l < s.layers; ++l)
            take("layers." + std::to_string(l) + "." + role, field + "[" + std::to_string(l) + "]",
                 shape);
    };
    const int64_t dim = int64_t(s.dim), hid = int64_t(s.hidden), kv = int64_t(s.kvDim),
                  voc = int64_t(s.vocab);
    if (c.version == 0) {
        take("embed", "token_embedding_table", {voc, dim});
        perLayer("attn_norm", "rms_att_weight", {dim});
        perLayer("attn.q", "wq", {dim, dim});
        perLayer("attn.k", "wk", {kv, dim});
        perLayer("attn.v", "wv", {kv, dim});
        perLayer("attn.o", "wo", {dim, dim});
        perLayer("mlp_norm", "rms_ffn_weight", {dim});
        perLayer("mlp.gate", "w1", {hid, dim});
        perLayer("mlp.down", "w2", {dim, hid});
        perLayer("mlp.up", "w3", {hid, dim});
        take("final_norm", "rms_final_weight", {dim});
        off += s.seq * s.headDim * 4; // freq_cis_real + freq_cis_imag
        if (!c.sharedClassifier) take("lm_head", "wcls", {voc, dim});
    } else {
        perLayer("attn_norm", "attention_norm", {dim});
        perLayer("mlp_norm", "ffn_norm", {dim});
        take("final_norm", "norm", {dim});
        take("embed", "tok_embeddings", {voc, dim});
        perLayer("attn.q", "wq", {dim, dim});
        perLayer("attn.k", "wk", {kv, dim});
        perLayer("attn.v", "wv", {kv, dim});
        perLayer("attn.o", "wo", {dim, dim});
        perLayer("mlp.gate", "w1", {hid, dim});
        perLayer("mlp.down", "w2", {dim, hid});
        perLayer("mlp.up", "w3", {hid, dim});
        if (!c.sharedClassifier) take("lm_head", "output", {voc, dim});
    }
    return ck;
}

} // namespace lcw
