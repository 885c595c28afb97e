#pragma once
/// \file
/// Tokenizers: HF tokenizer.json (byte-level BPE with GPT-2 / Llama 3 / Qwen splits, and
/// SentencePiece-style BPE with byte fallback), GGUF vocabularies, llama2.c tokenizer.bin.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lcw {

/// The tokenizer as stored in GGUF metadata (tokenizer.ggml.*), decoupled from the GGUF reader.
struct GgufVocab {
    std::string model; ///< tokenizer.ggml.model: "llama" (SPM) or "gpt2" (BPE)
    std::string pre;   ///< tokenizer.ggml.pre ("default", "llama3", "qwen2", ...)
    std::vector<std::string> tokens;
    std::vector<float> scores; ///< may be empty
    /// May be empty (1 normal, 2 unknown, 3 control, 4 user, 6 byte).
    std::vector<int32_t> tokenTypes;
    std::vector<std::string> merges; ///< "a b" pairs (gpt2 model)
    int32_t bosId = -1;
    int32_t eosId = -1;
    int32_t unkId = -1;
    int32_t padId = -1;
    bool addBos = true; ///< tokenizer.ggml.add_bos_token (default true for llama)
    bool addEos = false;
    bool addSpacePrefix = true; ///< tokenizer.ggml.add_space_prefix
    std::string chatTemplate;   ///< tokenizer.chat_template ("" when none)
};

/// llama.cpp's token types (tokenizer.ggml.token_type).
enum GgufTokenType : int32_t {
    kGgufTokenNormal = 1,
    kGgufTokenUnknown = 2,
    kGgufTokenControl = 3,
    kGgufTokenUserDefined = 4,
    kGgufTokenUnused = 5,
    kGgufTokenByte = 6,
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    /// Text to ids. addBos: prepend BOS when the tokenizer's rules say so (tokenizer_config.json
    /// add_bos_token, the post-processor template, GGUF add_bos_token, always for llama2.c).
    /// parseSpecial: recognise special tokens written literally in the text ("<s>"; HF added
    /// tokens marked special, GGUF control/unknown tokens). Non-special added tokens (HF
    /// added_tokens with special=false, GGUF user-defined tokens) are always recognised, as in
    /// tokenizers and llama.cpp. When addBos is true the rules' suffix (add_eos_token, the
    /// template's tokens after $A) is appended too.
    virtual std::vector<int32_t> encode(std::string_view text, bool addBos = true,
                                        bool parseSpecial = false) const = 0;
    /// Ids to text (UTF-8; invalid byte sequences are kept as bytes). skipSpecial drops
    /// control tokens like <s>. Throws ArgumentError for ids outside the vocabulary.
    virtual std::string decode(const std::vector<int32_t>& ids, bool skipSpecial = true) const = 0;
    /// The token's string as stored in the vocabulary (e.g. "▁the", "Ġthe", "<0x0A>").
    /// Throws ArgumentError for ids outside the vocabulary.
    virtual std::string tokenText(int32_t id) const = 0;
    virtual int32_t vocabSize() const = 0;
    virtual int32_t bosId() const = 0; ///< -1 when none
    virtual int32_t eosId() const = 0; ///< -1 when none
    /// Whether encode(..., addBos=true) actually prepends BOS.
    virtual bool addsBos() const = 0;
    /// "bpe-bytelevel" (HF or GGUF gpt2), "bpe-spm" (HF BPE with merges, SentencePiece-style),
    /// "spm" (GGUF llama: merges by score), "llama2c".
    virtual std::string kind() const = 0;
    /// The vocabulary as a GGUF file stores it (tokenizer.ggml.*), for writing GGUF files that
    /// llama.cpp tokenizes the same way: a GGUF tokenizer returns what it read; a byte-level BPE
    /// tokenizer.json gives model "gpt2" with its merges and the llama.cpp name of its split
    /// regex ("gpt-2", "llama-bpe", "qwen2"); SentencePiece-style BPE and llama2.c give model
    /// "llama" with scores that merge in the same order (the rank of the merge that makes each
    /// token; llama2.c's own scores). Token types: special added tokens control, the unknown
    /// token unknown, other added tokens user-defined, <0xNN> byte. Where llama.cpp cannot
    /// reproduce this tokenizer exactly (e.g. a ByteLevel add_prefix_space), a sentence is
    /// appended to `warnings` when given.
    virtual GgufVocab ggufVocab(std::vector<std::string>* warnings = nullptr) const = 0;

    /// HF tokenizer.json; tokenizerConfigPath (tokenizer_config.json) may be empty.
    /// Throws FormatError naming the file on malformed input, UnsupportedError for model types
    /// other than BPE.
    static std::unique_ptr<Tokenizer> fromHfJson(const std::string& tokenizerJsonPath,
                                                 const std::string& tokenizerConfigPath = {});
    /// llama2.c tokenizer.bin (max_token_length, then per token: float score, int32 len, bytes).
    static std::unique_ptr<Tokenizer> fromLlama2c(const std::string& path, int32_t vocabSize);
    /// GGUF vocabulary; `source` names the file for error messages.
    static std::unique_ptr<Tokenizer> fromGguf(const GgufVocab& vocab, const std::string& source);
};

} // namespace lcw
