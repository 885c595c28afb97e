#pragma once
/// \file
/// llama.cpp's quantisation mixes ("Q4_K_M", "Q3_K_M", ...) as presets, and the llama-quantize
/// command that reproduces a mix with llama.cpp itself.
///
/// chooseGgufMix() gives every tensor of a GGUF model the type `llama-quantize IN OUT <FTYPE>`
/// of llama.cpp b4747 gives it (the build that made ../shared/models/gguf-k/): which tensors are
/// quantised at all, llama_tensor_get_type's per-tensor rules (output / token embedding types,
/// attn_v and ffn_down getting more bits in some layers, GQA / MoE / falcon / 70B specifics, the
/// importance-matrix cases) and the fallback when a row is not a multiple of the type's block.
/// On top of a preset, lcw overrides change any tensor: by regex (like llama-quantize's
/// --tensor-type) or by exact name. An override never changes another tensor's type.
///
/// renderTensorTypeList() / renderLlamaQuantizeCommand() write a mix for models bigger than this
/// machine: the per-tensor type list and the llama-quantize invocation that gives the same types.
///
/// Pure logic: nothing here reads tensor data. Shapes are in ggml order: ne[0] is the row length
/// (the innermost, contiguous dimension), i.e. the row-major shape reversed.
///
/// Typical use (the GUI's recipe editor and `lcw-cli export --preset P`):
/// \code
///   GgufFile f = readGguf(path);
///   GgufMixOptions opt;
///   opt.hasImatrix = true;                                  // an imatrix will be used
///   opt.perTensor["blk.3.ffn_down.weight"] = DType::Q8_0;   // the user's change
///   GgufMix mix = chooseGgufMix(llamaFtypeFromName("q4_k_m"), ggufMixModel(f),
///                               ggufMixTensors(f), opt);
///   for (const auto& c : mix.tensors) { c.name; c.type; c.reason; }
///   std::string list = renderTensorTypeList(mix);
///   LlamaQuantizeCommand cmd = renderLlamaQuantizeCommand(mix, {});
/// \endcode
#include "core/common/dtype.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lcw {

struct GgufFile;

/// The llama.cpp file types (llama_ftype) whose tensors lcw can hold.
enum class LlamaFtype : uint8_t {
    F32, ///< LLAMA_FTYPE_ALL_F32: every tensor F32
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S, ///< needs an importance matrix (llama-quantize refuses without one)
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
};

struct LlamaFtypeInfo {
    LlamaFtype ftype;
    std::string_view name; ///< as llama-quantize spells it: "Q4_K_M", "F32", "IQ4_NL"
    uint32_t id;           ///< llama_ftype value; what llama-quantize writes as general.file_type
    DType defaultType;     ///< the type of every quantised tensor no rule gives another type
};

/// All file types, in llama-quantize's listing order.
const std::vector<LlamaFtypeInfo>& llamaFtypes();
const LlamaFtypeInfo& llamaFtypeInfo(LlamaFtype ftype);
/// Case-insensitive; also llama-quantize's aliases Q3_K, Q4_K, Q5_K (= the _M mixes).
/// ArgumentError listing the known names otherwise.
LlamaFtype llamaFtypeFromName(std::string_view name);
/// general.file_type value → file type (nullopt for ids lcw cannot hold, e.g. IQ2_XXS).
std::optional<LlamaFtype> llamaFtypeFromId(uint32_t id);

/// ggml's type name, as llama-quantize's --tensor-type / --output-tensor-type take it:
/// "f32", "f16", "bf16", "q4_0", "q8_0", "q4_K", "q6_K", "iq4_nl", "iq4_xs" (also "i32", "f64"
/// for tensors that are only ever copied). UnsupportedError for types ggml has no name for.
std::string_view llamaCppTypeName(DType t);
/// Inverse of llamaCppTypeName (case-insensitive, as llama-quantize parses them).
std::optional<DType> dtypeFromLlamaCppTypeName(std::string_view name);

/// The hyper-parameters llama.cpp's type choice reads.
struct GgufMixModel {
    std::string arch; ///< general.architecture ("llama", "qwen2", "falcon", ...)
    int nLayer = 0;   ///< {arch}.block_count
    int nHead = 0;    ///< {arch}.attention.head_count (layer 0's when per layer)
    int nHeadKv = 0;  ///< {arch}.attention.head_count_kv (defaults to nHead)
    int nExpert = 0;  ///< {arch}.expert_count (0: dense)
    /// Per-layer KV head counts when they differ between layers (hybrids with attention-free
    /// layers); empty: every layer has nHeadKv. n_gqa uses layer 0 (llama.cpp does the same).
    std::vector<int> nHeadKvPerLayer;
    /// llama.cpp's model size class is LLM_TYPE_70B (llama with 80 layers and GQA, qwen2 / olmo /
    /// deci with 80 layers): attn_v gets Q5_K instead of Q3_K / Q4_K. nullopt: derived as
    /// llama.cpp b4747 derives it.
    std::optional<bool> is70B;
};

/// One tensor of the GGUF file, in llama.cpp's naming ("blk.3.attn_v.weight").
struct GgufMixTensor {
    std::string name;
    std::vector<int64_t> ne; ///< ggml order: ne[0] = elements per row
    DType type = DType::F32; ///< the type it has in the input file
    /// From a row-major (PyTorch-order) shape, as TensorView::shape holds it.
    static GgufMixTensor fromRowMajor(std::string name, const std::vector<int64_t>& shape,
                                      DType type);
};

/// llama-quantize's options that change types, and lcw's overrides on top of a preset.
struct GgufMixOptions {
    bool hasImatrix = false;    ///< an importance matrix will be used (--imatrix)
    bool quantizeOutput = true; ///< false: --leave-output-tensor (output.weight is copied)
    std::optional<DType> outputTensorType;   ///< --output-tensor-type
    std::optional<DType> tokenEmbeddingType; ///< --token-embedding-type
    /// Regex (ECMAScript, searched anywhere in the name, like --tensor-type) → type; the first
    /// matching entry wins. Tensors llama.cpp never quantises (norms, 1-D, routers, ...) ignore
    /// these; output.weight / token_embd.weight ignore them when the flag above is set.
    std::vector<std::pair<std::string, DType>> tensorTypes;
    /// Exact GGUF name → type; wins over everything. Naming a tensor that does not exist or that
    /// llama.cpp never quantises is an ArgumentError. The source type means "copy unchanged".
    std::map<std::string, DType> perTensor;
};

/// Where a tensor's type came from.
enum class GgufMixSource : uint8_t {
    Kept,      ///< llama.cpp never quantises this tensor: copied in its source type
    Preset,    ///< the file type's default type or one of llama_tensor_get_type's rules
    Flag,      ///< --output-tensor-type / --token-embedding-type
    Regex,     ///< a GgufMixOptions::tensorTypes entry
    PerTensor, ///< a GgufMixOptions::perTensor entry
};
std::string_view ggufMixSourceName(GgufMixSource s);

struct GgufMixChoice {
    std::string name;
    DType sourceType = DType::F32;
    DType type = DType::F32; ///< the type written
    /// The type the pure preset gives it (`llama-quantize IN OUT FTYPE`, no flags or overrides).
    DType presetType = DType::F32;
    /// The type chosen before the row-length fallback, when one happened (then type is the
    /// substitute: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K / Q3_K / IQ4_XS → IQ4_NL, and F16
    /// when even that does not fit).
    std::optional<DType> wanted;
    GgufMixSource source = GgufMixSource::Kept;
    bool quantizable = false; ///< llama.cpp's rules allow (re)quantising this tensor at all
    /// Written in another type than the source's (false: the bytes are copied unchanged).
    bool converted() const { return type != sourceType; }
    std::string reason; ///< e.g. "Q4_K_M: attn_v in a use_more_bits layer (2 of 4) → q6_K"
};

struct GgufMix {
    LlamaFtype ftype = LlamaFtype::Q4_K_M; ///< the preset (general.file_type = its id)
    GgufMixModel model;
    std::vector<GgufMixTensor> inputs; ///< as given
    GgufMixOptions options;
    std::vector<GgufMixChoice> tensors; ///< one per input, in input order
    /// One line per row-length fallback, as llama-quantize warns ("blk.0.attn_q.weight: rows of
    /// 288 are not a multiple of 256 (q4_K) → q5_0").
    std::vector<std::string> fallbacks;
    /// Things llama-quantize would complain about that do not stop lcw (e.g. its attention-layer
    /// count check failing).
    std::vector<std::string> warnings;
    /// Input indices in the order llama-quantize processes and writes tensors: non-layer tensors
    /// first, then blk.0, blk.1, ... (numerically), by name within each.
    std::vector<size_t> llamaCppOrder;

    const GgufMixChoice* find(std::string_view name) const;
    /// Tensors whose type differs from the pure preset's.
    int changedCount() const;
};

/// The per-tensor types of `ftype` for this model, as llama-quantize (b4747) chooses them, with
/// the options' flags and overrides applied. Throws ArgumentError for bad input (duplicate
/// names, negative dimensions, an invalid regex, an override naming an unknown tensor, Q2_K_S
/// without an importance matrix) and UnsupportedError where llama.cpp itself fails (a row
/// length no fallback fits, a MoE tensor whose layer cannot be parsed).
GgufMix chooseGgufMix(LlamaFtype ftype, const GgufMixModel& model,
                      const std::vector<GgufMixTensor>& tensors,
                      const GgufMixOptions& options = {});

/// The model description from a GGUF file's metadata (FormatError naming the file and key when
/// block_count or the architecture is missing).
GgufMixModel ggufMixModel(const GgufFile& file);
/// The file's tensors (names, ne, types) in file order.
std::vector<GgufMixTensor> ggufMixTensors(const GgufFile& file);

// ---- for models bigger than this machine: let llama.cpp do it ----

/// One `name type` line per tensor (input order), in llama.cpp's tensor and type names
/// ("blk.0.attn_v.weight q6_K"); tensors copied unchanged carry their source type.
std::string renderTensorTypeList(const GgufMix& mix);

struct LlamaQuantizeCommandOptions {
    std::string program = "llama-quantize";
    std::string input = "model-f32.gguf"; ///< the full-size original (F32/F16/BF16 GGUF)
    std::string output;                   ///< empty: "model-<FTYPE>-lcw.gguf"
    std::string imatrix = "imatrix.dat";  ///< used when the mix was chosen with an imatrix
    int threads = 0;                      ///< > 0: appended as llama-quantize's nthreads
    /// Give every quantised tensor a --tensor-type entry, so the command does not depend on the
    /// preset rules of the llama.cpp version that runs it (they changed after b4747).
    bool pinAll = false;
};

struct LlamaQuantizeCommand {
    std::vector<std::string> argv; ///< program first, unquoted
    std::string commandLine;       ///< argv shell-quoted, one option per line (" \" continued)
    std::string comment;           ///< "# " lines: base preset, llama.cpp version needed, counts
    std::string script() const { return comment + commandLine; }
    /// Tensors given a --tensor-type entry, in llama.cpp's order.
    std::vector<std::string> tensorTypeEntries;
    /// The subset whose type equals the preset's: pinned only because newer llama-quantize skips
    /// a --tensor-type tensor when it counts layers (attn_v / ffn_down), which would shift the
    /// preset's choice for the tensors after it.
    std::vector<std::string> pinnedForCounters;
};

/// The llama-quantize invocation that reproduces `mix` from the full-size original:
/// `llama-quantize [--imatrix F] [--output-tensor-type T] [--token-embedding-type T]
/// [--tensor-type REGEX=TYPE ...] IN OUT FTYPE [threads]`. Only tensors whose type differs from
/// the preset's get --tensor-type entries (plus counter pins, see above); an unmodified preset
/// needs none and runs on b4747. UnsupportedError when the changes need --tensor-type but the
/// preset is F32/F16/BF16 (llama-quantize ignores --tensor-type then).
LlamaQuantizeCommand renderLlamaQuantizeCommand(const GgufMix& mix,
                                                const LlamaQuantizeCommandOptions& options);

} // namespace lcw
