#pragma once
/// \file
/// Random-initialised models with real shapes, written as sharded safetensors + config.json +
/// a byte-fallback tokenizer.json, so speed and memory can be measured without downloading
/// anything.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/model/model_spec.h"

#include <string>
#include <vector>

namespace lcw {

/// Known shapes: "tinyllama-1.1b" (dim 2048, 22 layers, hidden 5632, 32 heads, 4 KV heads,
/// vocab 32000, ctx 2048) and "llama-tiny" (dim 64, 2 layers, hidden 160, 4 heads, 2 KV heads,
/// vocab 512, ctx 256) for tests. Throws ArgumentError for other names.
ModelSpec syntheticSpec(const std::string& arch, const std::string& shape);
std::vector<std::string> syntheticShapes();

struct SynthOptions {
    DType dtype = DType::F32; ///< F32, F16 or BF16
    uint64_t seed = 1;
    uint64_t maxShardBytes = 1ull << 30;
    double weightStd = 0.02;
};

/// Writes the model into `folder` (created if missing). Weights ~ uniform with the given std,
/// norms 1. Returns Status::Cancelled if progress asks to stop (partial files are removed).
Status writeSyntheticModel(const ModelSpec& spec, const std::string& folder,
                           const SynthOptions& opts, Progress& progress);

} // namespace lcw
