// Exports an lcw model of the Llama family to a GGUF v3 file that llama.cpp loads as
// general.architecture "llama" (used to benchmark llama.cpp on exactly the weights lcw runs).
//   gguf_export MODEL OUT.gguf [--dtype f32|f16]
//   gguf_export --compare A.gguf B.gguf      (metadata and tensor-by-tensor differences)
//
// Weights: 2-D tensors are written as --dtype (default f32), 1-D ones (norms, biases) always as
// f32, as llama.cpp's converter does. Tied embeddings write no output.weight (llama.cpp falls back
// to token_embd). llama.cpp's llama graph applies RoPE to adjacent pairs (2i, 2i+1), so when the
// source uses the HF rotate-half layout (pairs i, i + rot/2) the rows of q and k (and their
// biases) are permuted per head exactly as convert_hf_to_gguf.py's LlamaModel.permute does.
// The vocabulary is written as a SentencePiece ("llama") vocabulary from Tokenizer::tokenText.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/io/gguf.h"
#include "core/io/quants.h"
#include "core/io/tensor_names.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <string>
#include <vector>

namespace {

using lcw::DType;
using lcw::GgufValue;

// llama.cpp token types.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6 };

bool isByteToken(const std::string& t) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
    return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

struct Vocab {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    int32_t unk = -1;
};

Vocab buildVocab(const lcw::Tokenizer& tok, int64_t modelVocab) {
    Vocab v;
    const int32_t n = tok.vocabSize();
    if (n > modelVocab)
        throw lcw::UnsupportedError("the tokenizer has " + std::to_string(n) +
                                    " tokens but the embedding only " + std::to_string(modelVocab) +
                                    " rows");
    // llama.cpp requires one vocabulary entry per embedding row: pad with unused control tokens.
    v.tokens.reserve(size_t(modelVocab));
    const bool llama2c = tok.kind() == "llama2c";
    for (int64_t id = 0; id < modelVocab; ++id) {
        std::string text = id < n ? tok.tokenText(int32_t(id)) : "<pad" + std::to_string(id) + ">";
        int32_t type = kNormal;
        float score = -float(id);
        if (id >= n) {
            type = kControl;
            score = 0;
        } else if (text == "<unk>") {
            type = kUnknown;
            score = 0;
            if (v.unk < 0) v.unk = int32_t(id);
        } else if (id == tok.bosId() || id == tok.eosId() || text == "<s>" || text == "</s>" ||
                   text == "<pad>") {
            type = kControl;
            score = 0;
            // llama2.c's tokenizer.bin spells BOS/EOS "\n<s>\n" / "\n</s>\n".
            const auto a = text.find_first_not_of('\n'), b = text.find_last_not_of('\n');
            if (a != std::string::npos) text = text.substr(a, b - a + 1);
        } else if (isByteToken(text)) {
            type = kByte;
            score = 0;
        }
        if (llama2c) { // llama2.c vocabularies spell SentencePiece's "▁" as a plain space
            std::string sp;
            for (char c : text) sp += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
            text = std::move(sp);
        }
        v.tokens.push_back(std::move(text));
        v.scores.push_back(score);
        v.types.push_back(type);
    }
    return v;
}

// dst row r of a q/k projection comes from this source row (identity when no permutation).
// Within each head of hd rows, HF's rotate-half pairs (i, i + rot/2) become adjacent rows
// (2i, 2i+1); rows from rot on (partial rotary) stay where they are.
int64_t sourceRow(int64_t r, int64_t hd, int64_t rot) {
    const int64_t h = r / hd, j = r % hd;
    if (j >= rot) return r;
    const int64_t half = rot / 2;
    return h * hd + (j % 2) * half + j / 2;
}

std::vector<float> llama3RopeFactors(const lcw::ModelSpec& s, int64_t rot) {
    const auto& r = s.rope;
    const double oldCtx = double(r.originalMaxPositions > 0 ? r.originalMaxPositions : 8192);
    const double lowWavelen = oldCtx / r.lowFreqFactor, highWavelen = oldCtx / r.highFreqFactor;
    std::vector<float> f;
    for (int64_t i = 0; i < rot; i += 2) {
        const double freq = 1.0 / std::pow(r.theta, double(i) / double(rot));
        const double wavelen = 2 * std::numbers::pi / freq;
        if (wavelen < highWavelen) {
            f.push_back(1.0f);
        } else if (wavelen > lowWavelen) {
            f.push_back(float(r.factor));
        } else {
            const double smooth =
                (oldCtx / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
            f.push_back(float(1.0 / ((1 - smooth) / r.factor + smooth)));
        }
    }
    return f;
}

int exportModel(const std::string& in, const std::string& out, DType wtype) {
    lcw::LoadOptions lo;
    lo.requireTokenizer = true;
    auto model = lcw::Model::load(in, lo);
    const lcw::ModelSpec& s = model->spec();
    for (const auto& w : model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (s.arch != "llama" && s.arch != "mistral")
        throw lcw::UnsupportedError(in + ": architecture '" + s.arch +
                                    "' cannot be exported as GGUF llama (llama, mistral only)");
    if (s.qkNorm) throw lcw::UnsupportedError(in + ": q/k norms are not part of GGUF llama");
    if (s.hiddenAct != "silu")
        throw lcw::UnsupportedError(in + ": activation '" + s.hiddenAct + "' is not silu");
    if (s.slidingWindow > 0)
        std::fprintf(stderr,
                     "warning: sliding window %lld is dropped (llama.cpp's llama "
                     "architecture attends to the whole context)\n",
                     (long long)s.slidingWindow);

    const int64_t hd = s.headDim;
    int64_t rot = int64_t(std::lround(double(hd) * s.rope.partialRotaryFactor));
    rot -= rot % 2;
    const bool permute = !s.rope.interleaved;

    std::vector<std::pair<std::string, GgufValue>> md;
    auto u32 = [](int64_t v) { return GgufValue::u32(uint32_t(v)); };
    md.emplace_back("general.architecture", GgufValue::string("llama"));
    md.emplace_back("general.name",
                    GgufValue::string(std::filesystem::path(in).filename().string()));
    md.emplace_back("general.file_type", u32(wtype == DType::F16 ? 1 : 0));
    md.emplace_back("llama.vocab_size", u32(s.vocab));
    md.emplace_back("llama.context_length", u32(s.maxSeq));
    md.emplace_back("llama.embedding_length", u32(s.dim));
    md.emplace_back("llama.block_count", u32(s.nLayers));
    md.emplace_back("llama.feed_forward_length", u32(s.hidden));
    md.emplace_back("llama.attention.head_count", u32(s.nHeads));
    md.emplace_back("llama.attention.head_count_kv", u32(s.nKvHeads));
    if (hd * s.nHeads != s.dim) {
        md.emplace_back("llama.attention.key_length", u32(hd));
        md.emplace_back("llama.attention.value_length", u32(hd));
    }
    md.emplace_back("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(s.normEps));
    md.emplace_back("llama.rope.freq_base", GgufValue::f32(float(s.rope.theta)));
    md.emplace_back("llama.rope.dimension_count", u32(rot));
    std::vector<float> ropeFactors;
    switch (s.rope.type) {
    case lcw::RopeType::Default:
        break;
    case lcw::RopeType::Linear:
        md.emplace_back("llama.rope.scaling.type", GgufValue::string("linear"));
        md.emplace_back("llama.rope.scaling.factor", GgufValue::f32(float(s.rope.factor)));
        break;
    case lcw::RopeType::Llama3:
        ropeFactors = llama3RopeFactors(s, rot);
        break;
    default:
        throw lcw::UnsupportedError(in + ": this rope scaling type has no GGUF llama export");
    }

    const lcw::Tokenizer& tok = model->tokenizer();
    if (tok.kind() == "bpe-bytelevel")
        std::fprintf(stderr, "warning: byte-level BPE vocabulary written as a SentencePiece "
                             "('llama') vocabulary: token ids are right, llama.cpp's text "
                             "tokenization will not be\n");
    Vocab v = buildVocab(tok, s.vocab);
    md.emplace_back("tokenizer.ggml.model", GgufValue::string("llama"));
    md.emplace_back("tokenizer.ggml.tokens", GgufValue::stringArray(v.tokens));
    md.emplace_back("tokenizer.ggml.scores", GgufValue::f32Array(v.scores));
    md.emplace_back("tokenizer.ggml.token_type", GgufValue::i32Array(v.types));
    if (tok.bosId() >= 0) md.emplace_back("tokenizer.ggml.bos_token_id", u32(tok.bosId()));
    if (tok.eosId() >= 0) md.emplace_back("tokenizer.ggml.eos_token_id", u32(tok.eosId()));
    if (v.unk >= 0) md.emplace_back("tokenizer.ggml.unknown_token_id", u32(v.unk));
    md.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(tok.addsBos()));
    md.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));

    // Tensors in llama.cpp's order: embedding, blocks, final norm, output.
    struct Item {
        const lcw::TensorView* src = nullptr; // nullptr: rope factors
        int64_t permuteHd = 0;                // >0: q/k rows permuted with this head size
    };
    std::vector<lcw::TensorDesc> descs;
    std::vector<Item> items;
    auto add = [&](const std::string& canon, bool required) {
        const lcw::TensorView* t = model->find(canon);
        if (!t) {
            if (required) throw lcw::FormatError(in, "tensor '" + canon + "' is missing");
            return;
        }
        if (!lcw::dtypeIsFloatLike(t->dtype))
            throw lcw::UnsupportedError(in + ": tensor '" + canon + "' has dtype " +
                                        std::string(lcw::dtypeName(t->dtype)));
        auto name = lcw::ggufFromCanonical(canon);
        if (!name) throw lcw::Error("no GGUF name for '" + canon + "'");
        const auto ln = lcw::splitCanonical(canon);
        const bool qk =
            ln && (ln->role.rfind("attn.q", 0) == 0 || ln->role.rfind("attn.k", 0) == 0);
        const bool oneD = t->shape.size() == 1;
        // Row-wise dtypes need whole blocks; f16 rows are any length.
        DType dt = oneD ? DType::F32 : wtype;
        descs.push_back({*name, dt, t->shape});
        items.push_back({t, permute && qk ? hd : 0});
    };
    add("embed", true);
    if (!ropeFactors.empty()) {
        descs.push_back({"rope_freqs.weight", DType::F32, {int64_t(ropeFactors.size())}});
        items.push_back({});
    }
    for (int64_t l = 0; l < s.nLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        add(p + "attn_norm", true);
        add(p + "attn.q", true);
        add(p + "attn.q.bias", false);
        add(p + "attn.k", true);
        add(p + "attn.k.bias", false);
        add(p + "attn.v", true);
        add(p + "attn.v.bias", false);
        add(p + "attn.o", true);
        add(p + "attn.o.bias", false);
        add(p + "mlp_norm", true);
        add(p + "mlp.gate", true);
        add(p + "mlp.up", true);
        add(p + "mlp.down", true);
        for (const char* b : {"mlp.gate.bias", "mlp.up.bias", "mlp.down.bias"})
            if (model->find(p + b))
                throw lcw::UnsupportedError(in + ": MLP biases are not part of GGUF llama");
    }
    add("final_norm", true);
    if (!s.tiedEmbeddings) add("lm_head", true);

    auto fill = [&](size_t i, std::byte* dst, uint64_t nbytes) {
        const Item& it = items[i];
        const lcw::TensorDesc& d = descs[i];
        if (!it.src) {
            std::memcpy(dst, ropeFactors.data(), nbytes);
            return;
        }
        const lcw::TensorView& t = *it.src;
        if (t.shape.size() == 1) { // norms and biases: f32, bias elements permuted like rows
            const int64_t n = t.numel();
            std::vector<float> src(static_cast<size_t>(n)), o(static_cast<size_t>(n));
            lcw::dequantizeRow(t.dtype, t.data, src.data(), n);
            for (int64_t e = 0; e < n; ++e)
                o[size_t(e)] = src[size_t(it.permuteHd > 0 ? sourceRow(e, it.permuteHd, rot) : e)];
            std::memcpy(dst, o.data(), nbytes);
            return;
        }
        const int64_t rows = t.rows(), cols = t.cols();
        const uint64_t dstRowBytes = nbytes / uint64_t(rows);
        std::vector<float> buf(static_cast<size_t>(cols));
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t sr = it.permuteHd > 0 ? sourceRow(r, it.permuteHd, rot) : r;
            lcw::dequantizeRow(t.dtype, t.row(sr), buf.data(), cols);
            std::byte* o = dst + uint64_t(r) * dstRowBytes;
            if (d.dtype == DType::F32) {
                std::memcpy(o, buf.data(), dstRowBytes);
            } else {
                for (int64_t c = 0; c < cols; ++c) {
                    const uint16_t h = lcw::f32ToF16(buf[size_t(c)]);
                    std::memcpy(o + 2 * c, &h, 2);
                }
            }
        }
    };
    lcw::writeGguf(out, md, descs, fill, 3);
    std::fprintf(stderr, "wrote %s: %zu tensors, %s weights, rope %s\n", out.c_str(), descs.size(),
                 std::string(lcw::dtypeName(wtype)).c_str(),
                 permute ? "rows permuted from HF rotate-half" : "already interleaved");
    return 0;
}

// ---- --compare ----

std::vector<float> toF32(const lcw::TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        lcw::dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
    return v;
}

int compare(const std::string& a, const std::string& b) {
    const lcw::GgufFile ga = lcw::readGguf(a), gb = lcw::readGguf(b);
    int differences = 0;
    for (const auto& [k, va] : ga.metadata) {
        const GgufValue* vb = gb.find(k);
        const std::string sa = va.toString(), sb = vb ? vb->toString() : "(absent)";
        if (!vb || sa != sb || va.type != vb->type || va.elemType != vb->elemType) {
            std::printf("metadata %-45s A=%s [%s] B=%s\n", k.c_str(), sa.substr(0, 60).c_str(),
                        std::string(lcw::ggufTypeName(va.type)).c_str(), sb.substr(0, 60).c_str());
            ++differences;
        }
        // Arrays are abbreviated by toString: compare whole string arrays and numeric payloads.
        if (vb && va.isArray() && (va.strings != vb->strings || va.raw != vb->raw)) {
            size_t first = 0;
            while (first < va.count && first < vb->count &&
                   (va.elemType == lcw::GgufType::String
                        ? va.strings[first] == vb->strings[first]
                        : va.arrayDouble(first) == vb->arrayDouble(first)))
                ++first;
            std::printf("metadata %-45s arrays differ (first at %zu of %llu/%llu)\n", k.c_str(),
                        first, (unsigned long long)va.count, (unsigned long long)vb->count);
            ++differences;
        }
    }
    for (const auto& [k, vb] : gb.metadata)
        if (!ga.find(k)) {
            std::printf("metadata %-45s only in B: %s\n", k.c_str(),
                        vb.toString().substr(0, 60).c_str());
            ++differences;
        }
    for (const auto& ta : ga.tensors) {
        const lcw::TensorView* tb = gb.findTensor(ta.name);
        if (!tb) {
            std::printf("tensor %-28s only in A\n", ta.name.c_str());
            ++differences;
            continue;
        }
        if (ta.shape != tb->shape) {
            std::printf("tensor %-28s shapes differ\n", ta.name.c_str());
            ++differences;
            continue;
        }
        const auto xa = toF32(ta), xb = toF32(*tb);
        double maxAbs = 0;
        for (size_t i = 0; i < xa.size(); ++i)
            maxAbs = std::max(maxAbs, double(std::fabs(xa[i] - xb[i])));
        std::printf("tensor %-28s %s/%s max|A-B| = %g\n", ta.name.c_str(),
                    std::string(lcw::dtypeName(ta.dtype)).c_str(),
                    std::string(lcw::dtypeName(tb->dtype)).c_str(), maxAbs);
        if (maxAbs != 0) ++differences;
    }
    for (const auto& tb : gb.tensors)
        if (!ga.findTensor(tb.name)) {
            std::printf("tensor %-28s only in B\n", tb.name.c_str());
            ++differences;
        }
    std::printf("%d difference(s)\n", differences);
    return differences == 0 ? 0 : 3;
}

} // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: gguf_export MODEL OUT.gguf [--dtype f32|f16]\n"
                        "       gguf_export --compare A.gguf B.gguf\n";
    try {
        if (argc == 4 && !std::strcmp(argv[1], "--compare")) return compare(argv[2], argv[3]);
        if (argc != 3 && argc != 5) {
            std::fputs(usage, stderr);
            return 2;
        }
        DType wtype = DType::F32;
        if (argc == 5) {
            if (std::strcmp(argv[3], "--dtype")) {
                std::fputs(usage, stderr);
                return 2;
            }
            if (!std::strcmp(argv[4], "f16"))
                wtype = DType::F16;
            else if (std::strcmp(argv[4], "f32")) {
                std::fprintf(stderr, "error: --dtype must be f32 or f16, not '%s'\n", argv[4]);
                return 2;
            }
        }
        return exportModel(argv[1], argv[2], wtype);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
