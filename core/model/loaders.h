#pragma once
/// \file
/// Format-specific model loaders behind Model::load (internal to core/model).
#include "core/model/model.h"

namespace lcw::detail {

/// Hugging Face folder: config.json, model.safetensors or model.safetensors.index.json + shards,
/// tokenizer.json (+ tokenizer_config.json).
std::unique_ptr<Model> loadHfFolder(const std::string& folder, const LoadOptions& opts);
/// GGUF v2/v3 file; architecture and tokenizer from its metadata.
std::unique_ptr<Model> loadGgufModel(const std::string& file, const LoadOptions& opts);
/// llama2.c v0 checkpoint; tokenizer.bin beside it (tokenizer.bin, tok<vocab>.bin) or opts.
std::unique_ptr<Model> loadLlama2cModel(const std::string& file, const LoadOptions& opts);

/// Loads a tokenizer file the user named (or one found beside a model): *.json as HF
/// tokenizer.json (with tokenizer_config.json from the same folder when present), anything else
/// as a llama2.c tokenizer.bin with `vocab` entries. Errors gain the context "loading tokenizer".
std::unique_ptr<Tokenizer> loadTokenizerFile(const std::string& path, int64_t vocab);

/// Adds a file tensor (already under its canonical or intermediate name) to the model, splitting
/// fused tensors ("layers.N.attn.qkv" per spec.qkvLayout, "layers.N.mlp.gate_up", llama.cpp's
/// merged "layers.N.mlp.experts_gate|up|down" and Phi-3's GGUF ffn_up) into their logical parts
/// and transposing Conv1D weights (isConv1dWeight) unless the view already holds them in
/// [out, in] order (fileTransposed set: a weight a quantised checkpoint's loader dequantised).
/// The spec's dimensions must be set.
void addSplitTensor(Model& m, const ModelSpec& s, TensorView v);
/// A GPT-2-style Conv1D weight, stored [in, out] in Hugging Face files: spec.conv1dWeights and a
/// 2-D tensor named "....attn.qkv", "....attn.o", "....mlp.up" or "....mlp.down".
bool isConv1dWeight(const ModelSpec& s, const TensorView& v);

/// Validates the spec and the presence/shape/dtype of every tensor the architecture's forward
/// needs (see expectedTensors()); throws FormatError naming `source` and the tensor on the first
/// problem.
void validateModel(const Model& m, const std::string& source);

} // namespace lcw::detail
