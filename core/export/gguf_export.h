#pragma once
/// \file
/// GGUF v3 files that llama.cpp loads, written from any lcw model or compressed overlay: the
/// inverse of lcw's GGUF loader (core/model/load_gguf.cpp) and what llama.cpp's
/// convert_hf_to_gguf.py writes for the same family (architecture metadata, the tokenizer,
/// tensor names, fused and permuted layouts).
///
/// Families: llama (also mistral, mixtral and llama2.c checkpoints), qwen2, qwen3, gemma, gemma2,
/// phi3, gpt2, gpt_neox, stablelm, falcon, bloom, mamba. OPT has no llama.cpp architecture.
/// Layouts: llama's q/k rows (and biases) are permuted from the Hugging Face rotate-half order to
/// llama.cpp's adjacent pairs; fused q/k/v ([q; k; v] rows: phi3, gpt2, gpt_neox, falcon,
/// bloom), phi3's [gate; up] as ffn_up, Mixtral's experts stacked [experts, rows, cols],
/// StableLM's per-head q/k norms stacked [heads, head_dim], Gemma's norms stored as 1 + w,
/// Mamba's A = -exp(A_log) and conv1d [d_inner, kernel], llama3 rope scaling as rope_freqs.
/// Biases llama.cpp requires but the model lacks are written as zeros (same function).
///
/// Types: every tensor gets the type a callback chooses (the single point where llama.cpp's
/// mixes plug in); by default 1-D tensors and the ones convert_hf_to_gguf.py keeps in F32
/// (norms, router, positions, Mamba's conv/x/dt/A/D) are F32 and the others `type`. Rows are
/// copied as they are ("exact") when the source already holds them in the chosen type: a base
/// tensor stored in it, or an overlay tensor packed in that GGUF block type (rows may be
/// permuted or concatenated, never changed). Otherwise they are dequantised and quantised with
/// lcw::quantizeRow (importance weights when given): "converted" from full-precision weights,
/// "re-encoded" from lossy ones (another quantisation, pruning, low-rank factors).
///
/// Streaming: one tensor is in memory at a time, quantised in parallel over rows (OpenMP); the
/// file is written to a temporary beside the target and renamed at the end, so a failure or a
/// cancellation leaves no partial file.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/export/gguf_mix.h"
#include "core/io/gguf.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lcw {

class Model;
class Tokenizer;
class WeightSource;
struct ModelSpec;

/// One tensor of the GGUF file as the export plans it (what a type callback sees).
struct GgufTensorInfo {
    std::string name;           ///< GGUF name: "blk.0.attn_q.weight", "token_embd.weight"
    std::vector<int64_t> shape; ///< row-major (PyTorch order; GGUF's ne[] reversed)
    /// lcw's name for it: the canonical name ("layers.0.attn.q"), or for tensors made of
    /// several: "layers.N.attn.qkv" (+ ".bias"), "layers.N.mlp.gate_up" (phi3's ffn_up),
    /// "layers.N.mlp.experts_gate|up|down", "layers.N.attn.q_norm" (StableLM, stacked);
    /// "rope_freqs" for llama3 rope factors.
    std::string canonical;
    /// The lcw tensors it is made of, in row order (empty for generated tensors: rope factors,
    /// zero biases).
    std::vector<std::string> sources;
    int64_t layer = -1; ///< block index, -1 for model-level tensors
    /// convert_hf_to_gguf.py writes it in F32 whatever the output type: 1-D tensors, norms,
    /// the MoE router, learned positions, Mamba's conv1d, x, dt, A and D.
    bool floatOnly = false;
    DType storedType = DType::F32; ///< how the weights hold it now (first source)
    /// Every source holds its rows in this type already (an overlay's GGUF packing, or a base
    /// file tensor): writing this type copies them ("exact").
    std::optional<DType> packedType;
    /// What the export writes without a callback: F32 when floatOnly, else packedType, else
    /// the requested type, else the stored type (F32 for values an overlay changed).
    DType defaultType = DType::F32;
};

/// Chooses a tensor's GGUF type. Rows that do not fit the type's blocks fall back as
/// llama-quantize does (ggufFallbackType), and the report says so.
using GgufTypeChooser = std::function<DType(const GgufTensorInfo&)>;
/// Importance weights of a tensor by GGUF name (what an imatrix holds): `cols` floats, for 3-D
/// expert tensors shape[0] * cols (expert e at e * cols); nullptr for none.
using GgufImportance = std::function<const float*(const std::string& ggufName)>;

struct GgufExportOptions {
    std::string path; ///< the .gguf to write (its folder must exist)
    /// Type of the quantisable tensors; nullopt: each keeps the type it is stored in (F32 for
    /// tensors an overlay changed without a GGUF packing).
    std::optional<DType> type;
    GgufTypeChooser typeFor;   ///< null: GgufTensorInfo::defaultType
    GgufImportance importance; ///< null: no importance weights
    /// general.file_type (llama_ftype, e.g. 15 for Q4_K_M); unset: llamaFileType() of `type`,
    /// or of the type most weights are written in.
    std::optional<uint32_t> fileType;
    std::string name; ///< general.name; empty: the model's folder or file name
    /// Extra metadata written after the export's own keys (a key given here replaces the
    /// export's value), e.g. quantize.imatrix.file.
    std::vector<std::pair<std::string, GgufValue>> metadata;
    Progress* progress = nullptr; ///< fraction of bytes written; returning false cancels
};

enum class GgufTensorStatus {
    Exact,     ///< rows copied as they are
    Converted, ///< full-precision weights converted / quantised to the type
    ReEncoded, ///< lossy weights (another quantisation, pruned, low-rank) re-quantised
};
/// "exact", "converted", "re-encoded".
const char* ggufTensorStatusName(GgufTensorStatus s);

struct GgufTensorReport {
    std::string name; ///< GGUF name
    std::vector<int64_t> shape;
    DType type = DType::F32;      ///< as written
    DType requested = DType::F32; ///< chosen before a fallback
    uint64_t bytes = 0;
    GgufTensorStatus status = GgufTensorStatus::Converted;
    std::string note; ///< the fallback, or what was re-encoded ("" when nothing to say)
};

struct GgufExportResult {
    Status status = Status::Ok; ///< Cancelled: no file was written
    std::string path;
    std::string arch;   ///< general.architecture
    uint64_t bytes = 0; ///< file size
    double seconds = 0;
    uint32_t fileType = 0; ///< general.file_type
    std::vector<GgufTensorReport> tensors;
    /// What llama.cpp will do differently from lcw (dropped sliding window, tokenizer details,
    /// activation / KV-cache quantisation that GGUF cannot hold, ...).
    std::vector<std::string> warnings;
};

/// llama.cpp's architecture name for a spec ("llama" for mistral/mixtral, "gptneox", ...);
/// nullopt when llama.cpp has none (opt).
std::optional<std::string> ggufArchitecture(const ModelSpec& spec);

/// llama-quantize's substitute for a type whose blocks do not fit rows of `cols`
/// (compress::ggufFallback: Q2_K, Q3_K, IQ4_XS → IQ4_NL; Q4_K → Q5_0; Q5_K → Q5_1; Q6_K → Q8_0;
/// then F16 when that does not fit either), and F16 for the 32-element types, where
/// convert_hf_to_gguf.py falls back to F16. Returns `t` when it fits.
DType ggufFallbackType(DType t, int64_t cols);

/// llama_ftype of a file whose weights are mostly `t` (general.file_type): the first of
/// llamaFtypes() with that default type (F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9,
/// Q2_K 10, Q3_K 11 (Q3_K_S), Q4_K 14 (Q4_K_S), Q5_K 16 (Q5_K_S), Q6_K 18, IQ4_NL 25, IQ4_XS 30,
/// BF16 32). UnsupportedError for other types.
uint32_t llamaFileType(DType t);

/// The tensors an export of `weights` writes, in file order, with their default types (as
/// exportGguf would choose them for `type`). Throws UnsupportedError when llama.cpp has no
/// architecture for the model or cannot hold one of its tensors.
std::vector<GgufTensorInfo> planGgufTensors(const WeightSource& weights,
                                            std::optional<DType> type = std::nullopt);

/// What llama-quantize would read for this export (the model's hyper-parameters and tensors as
/// convert_hf_to_gguf.py writes them: F32 where it keeps F32, else the stored type): the input
/// of chooseGgufMix() (core/export/gguf_mix.h), whose choice per name becomes
/// GgufExportOptions::typeFor. Any source works (HF folder, llama2.c, GGUF, overlay).
GgufMixModel ggufMixModelOf(const WeightSource& weights);
std::vector<GgufMixTensor> ggufMixTensorsOf(const std::vector<GgufTensorInfo>& plan);

/// Writes `weights` (the model itself, or a compressed overlay over it) as a GGUF v3 file with
/// the model's tokenizer. Throws ArgumentError when the output folder does not exist,
/// UnsupportedError for models or tensors llama.cpp cannot hold, Error naming the tensor for
/// quantisation failures; in every case no file is left. Cancellation returns Cancelled.
GgufExportResult exportGguf(const Model& model, const WeightSource& weights,
                            const GgufExportOptions& o);
/// Same from any WeightSource and tokenizer (nullptr: the file gets no vocabulary).
GgufExportResult exportGguf(const WeightSource& weights, const Tokenizer* tokenizer,
                            const GgufExportOptions& o);

/// {"file", "architecture", "file_type", "bytes", "seconds", "status", "tensors": [{"name",
/// "shape", "type", "requested", "bytes", "status", "note"}], "warnings"}.
nlohmann::ordered_json ggufExportReportJson(const GgufExportResult& r);

} // namespace lcw
