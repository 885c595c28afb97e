#pragma once
/// \file
/// Writes a workbench configuration (a compressed overlay over a Hugging Face model folder) as a
/// Hugging Face checkpoint folder in a quantised-checkpoint format (hf_quant_format.h:
/// compressed-tensors, GPTQ, AWQ) that transformers and vLLM load.
///
/// Every tensor of the base's safetensors files is written under its own name, in its order:
/// tensors the overlay did not change are copied byte for byte (dtype kept); a quantised linear
/// becomes an HfQuantModule and the format's tensors replace "<module>.weight" (a fused file
/// tensor, e.g. Phi-3 qkv_proj, when all its parts share row-local settings: their packed rows
/// gathered in file row order); a module the format cannot express, a Conv1D weight (GPT-2:
/// llm-compressor quantises nn.Linear only) and a fused tensor whose parts differ are written as
/// their exact dequantised values in F32 and listed as ignored, with the reason, in the report;
/// float replacements (AWQ / SmoothQuant folding) are written in the base tensor's dtype when
/// that is exact, else in F32 (the report says which). config.json is the base's with the
/// format's "quantization_config"; the tokenizer files are copied. The folder is written into a
/// temporary folder beside it and renamed into place: complete or absent.
///
/// GGUF and llama2.c bases of the llama, mistral and qwen2 families are written too: every
/// canonical tensor under its Hugging Face name (hfFromCanonical), GGUF block types converted to
/// F32, the q / k rows of Meta's interleaved rotary layout reordered per head into Hugging
/// Face's rotate_half order (a row permutation: quantised rows keep their own scales, exact),
/// and a config.json written from the model's spec; they have no tokenizer files to copy.
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/export/hf_quant_format.h"
#include "core/model/model.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct HfCheckpointOptions {
    std::string outDir; ///< the folder to create (must not exist, or be empty)
    Progress* progress = nullptr;
    /// Shard size limit of the safetensors files (transformers' default "5GB").
    uint64_t maxShardBytes = 5000000000ull;
};

/// One linear (or fused file tensor) of the written checkpoint, or one float replacement.
struct HfModuleReport {
    std::string module;                 ///< HF module ("model.layers.0.self_attn.q_proj")
    std::vector<std::string> canonical; ///< lcw tensors it holds
    /// "written" (in the format), "float" (written as floats: see reason), "copied" (unchanged).
    std::string status;
    std::string scheme; ///< lcw's settings ("int4 g128 asym", "2:4 magnitude"); "" when copied
    std::string reason; ///< why "float"; dtype note for float replacements
};

struct HfCheckpointResult {
    Status status = Status::Ok;
    std::string path;   ///< the folder written
    std::string format; ///< HfQuantFormat::name()
    std::vector<HfModuleReport> modules;
    std::vector<std::string> ignored; ///< HF modules left in floats (quantization_config ignore)
    std::vector<std::string> warnings;
    std::vector<std::string> files; ///< files written, relative to path
    uint64_t tensorBytes = 0;       ///< safetensors data bytes
    nlohmann::ordered_json quantizationConfig;
    double seconds = 0;
};

/// See the file comment. `format` is planned (HfQuantFormat::plan) with every module first.
/// `weights` is normally a compress::CompressedModel over `base`; a plain model (nothing quantised)
/// is refused. Throws ArgumentError (bad options, output folder not empty), UnsupportedError
/// (tensors the overlay added that have no file name, GGUF / llama2.c bases of other families),
/// FormatError / Error on I/O. Cancelled through
/// opts.progress: Status::Cancelled and nothing left behind.
HfCheckpointResult exportHfCheckpoint(const Model& base, const WeightSource& weights,
                                      HfQuantFormat& format, const HfCheckpointOptions& opts);

/// {"format", "path", "bytes", "files", "modules": [...], "ignored", "warnings",
///  "quantization_config", "seconds"}.
nlohmann::ordered_json hfCheckpointReportJson(const HfCheckpointResult& r);

} // namespace lcw
