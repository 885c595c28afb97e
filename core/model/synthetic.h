#pragma once
/// \file
/// Random-initialised models with real shapes, written as sharded safetensors + config.json +
/// a byte-fallback tokenizer.json, so speed and memory can be measured without downloading
/// anything.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/io/tensor_desc.h"
#include "core/model/model_spec.h"

#include <string>
#include <vector>

namespace lcw {

/// Known shapes (real models' dimensions, untied embeddings, random weights):
///   "tinyllama-1.1b"  llama: dim 2048, 22 layers, hidden 5632, 32 heads, 4 KV heads, vocab 32000,
///                     ctx 2048, rope theta 1e4 (1.10e9 parameters)
///   "llama3-8b"       llama: dim 4096, 32 layers, hidden 14336, 32 heads, 8 KV heads,
///                     vocab 128256, ctx 8192, rope theta 5e5 (8.03e9 parameters)
///   "qwen2.5-7b"      qwen2: dim 3584, 28 layers, hidden 18944, 28 heads, 4 KV heads,
///                     vocab 152064, ctx 32768, rope theta 1e6, q/k/v biases (7.62e9 parameters)
///   "llama-tiny"      llama: dim 64, 2 layers, hidden 160, 4 heads, 2 KV heads, vocab 512,
///                     ctx 256 (tests)
///   "qwen2-tiny"      qwen2: llama-tiny's dims with q/k/v biases, rope theta 1e6 (tests)
/// `arch` must be the shape's architecture ("llama" or "qwen2"); empty = the shape's own.
/// Throws ArgumentError for other names or a mismatching arch.
ModelSpec syntheticSpec(const std::string& arch, const std::string& shape);
std::vector<std::string> syntheticShapes();

/// The tensors writeSyntheticModel writes for `spec` (HF names, in file order, in `dtype`).
std::vector<TensorDesc> syntheticTensors(const ModelSpec& spec, DType dtype);
/// Total bytes of those tensors (the safetensors data; headers and tokenizer come on top).
uint64_t syntheticModelBytes(const ModelSpec& spec, DType dtype);

struct SynthOptions {
    DType dtype = DType::F32; ///< F32, F16 or BF16
    uint64_t seed = 1;
    uint64_t maxShardBytes = 1ull << 30;
    double weightStd = 0.02;
};

/// The config.json writeSyntheticModel writes for `spec` (transformers' keys, model_type =
/// spec.arch, untied embeddings, the synthetic tokenizer's BOS 1 / EOS 2).
std::string syntheticConfigJson(const ModelSpec& spec, const SynthOptions& opts);

/// Writes the model into `folder` (created if missing). Weights ~ uniform with the given std,
/// norms 1, biases like weights. Streams: memory holds one tensor at a time (the largest, the
/// embedding, is 1.1 GB in f16 for llama3-8b / qwen2.5-7b). Checks first that the folder's file
/// system has room for the whole model and throws Error naming the folder, the bytes needed and the
/// bytes free when it has not. Returns Status::Cancelled if progress asks to stop (partial files
/// are removed).
Status writeSyntheticModel(const ModelSpec& spec, const std::string& folder,
                           const SynthOptions& opts, Progress& progress);

} // namespace lcw
