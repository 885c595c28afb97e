#pragma once
/// \file
/// llama2.c checkpoints: the legacy v0 layout (7 int32 header + float32 weights, as written by
/// run.c's export) and the version-1 float32 export (256-byte header with magic "ak42").
/// Weights are mapped, not copied: every per-layer slice is its own TensorView into the map.
#include "core/common/tensor.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lcw {

class MappedFile;

struct Llama2cConfig {
    int32_t version = 0; ///< 0 (legacy) or 1
    int32_t dim = 0;
    int32_t hiddenDim = 0;
    int32_t nLayers = 0;
    int32_t nHeads = 0;
    int32_t nKvHeads = 0;
    int32_t vocabSize = 0; ///< always positive here (v0 stores it negated when unshared)
    int32_t seqLen = 0;
    bool sharedClassifier = true; ///< false: a separate wcls [vocab, dim] follows
};

struct Llama2cCheckpoint {
    std::shared_ptr<const MappedFile> file;
    Llama2cConfig config;
    /// Canonical names (embed, final_norm, lm_head when unshared, layers.N.attn_norm,
    /// layers.N.attn.{q,k,v,o}, layers.N.mlp_norm, layers.N.mlp.{gate,up,down}) with fileName
    /// the llama2.c field ("wq[3]", "w1[0]", "token_embedding_table"). freq_cis is skipped (it
    /// is derived from the rope parameters).
    std::vector<TensorView> tensors;
};

/// Maps and validates a checkpoint: header values positive and consistent (heads divide dim,
/// KV heads divide heads), and the file size exactly what the header implies.
/// Throws FormatError naming the file (expected vs actual bytes) or UnsupportedError
/// (version-2 quantized exports).
Llama2cCheckpoint readLlama2c(const std::string& path);

/// Bytes a v0 checkpoint with this header must have; throws FormatError(path, ...) on overflow
/// or inconsistent values.
uint64_t llama2cExpectedBytes(const Llama2cConfig& c, const std::string& path);

} // namespace lcw
