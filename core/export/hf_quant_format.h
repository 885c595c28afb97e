#pragma once
/// \file
/// The interface between the Hugging Face checkpoint writer (core/export/hf_checkpoint.h) and
/// the quantised-checkpoint formats it writes: compressed-tensors (what llm-compressor writes,
/// core/export/compressed_tensors.h), GPTQ and AWQ (core/export/gptq_awq.h). The writer walks
/// the model's tensors in Hugging Face names, hands every quantised linear to the format as an
/// HfQuantModule and stores the tensors the format returns in place of "<module>.weight"; the
/// format also writes config.json's "quantization_config" (and any extra file such as GPTQ's
/// quantize_config.json). Modules a format cannot express are written as floats (their exact
/// dequantised values in F32) and listed as ignored: never silently changed.
#include "core/common/dtype.h"
#include "core/compress/quantizer.h"
#include "core/compress/sparsity.h"
#include "core/io/tensor_desc.h"
#include "core/model/runtime_quant.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lcw {

/// One tensor for the safetensors shards.
struct HfTensorBlob {
    std::string name; ///< full name in the file: "model.layers.0.self_attn.q_proj.weight_packed"
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::vector<std::byte> data; ///< row-major, little-endian, numel * dtype size bytes
};

/// A quantised linear as the writer hands it to a format.
struct HfQuantModule {
    /// Hugging Face module name without ".weight": "model.layers.0.self_attn.q_proj".
    std::string module;
    /// The lcw tensors it is made of, in row order (one for unfused modules; q, k, v for a fused
    /// qkv_proj whose parts share their settings).
    std::vector<std::string> canonical;
    /// The packed [out, in] weight (fused modules: the parts' rows gathered in file order).
    /// Never a GGUF block type. Null for a pruned layer that is not quantised: then `values`.
    const compress::PackedTensor* packed = nullptr;
    /// Pruned, not quantised: the float values (out * in, pruned values 0).
    const std::vector<float>* values = nullptr;
    int64_t rows = 0, cols = 0; ///< [out, in]
    /// Pruned: the settings and the 0/1 mask (out * in, row-major, 1 = kept).
    std::optional<compress::SparsitySettings> sparsity;
    /// Valid in cannotExpress() and encode() only: the writer frees it after encode() (a byte
    /// per weight), so quantizationConfig() reads the summary below.
    const std::vector<uint8_t>* mask = nullptr;
    int64_t maskZeros = 0;    ///< pruned weights of the mask
    bool maskTwoFour = false; ///< every run of 4 inputs keeps exactly 2 (cols % 4 == 0)
    /// The layer's merged recipe weight section (method and its options: "method": "gptq",
    /// "damp", "act_order", "block_size"; "awq"; ...) for metadata such as GPTQ's desc_act.
    nlohmann::json weightJson;
    /// Input-activation quantisation the runtime applies to this linear (bits 16: none).
    ActQuantSpec activation;
};

class HfQuantFormat {
public:
    virtual ~HfQuantFormat() = default;
    /// "compressed-tensors", "gptq", "awq".
    virtual std::string name() const = 0;
    /// Called once, before cannotExpress(), with every quantised module the writer will offer.
    /// Formats whose checkpoint has one global setting (AWQ's group_size, GPTQ without dynamic
    /// overrides) pick it here (the most common one); the others then become not expressible.
    /// Optional: without it such a format keeps the setting of the first module it is asked
    /// about. Default: nothing to plan.
    virtual void plan(const std::vector<const HfQuantModule*>& modules) { (void)modules; }
    /// Empty when `m` can be written in this format; else the reason it cannot ("asymmetric
    /// fp8", "tensor granularity", "3-bit codes"), for the export report.
    virtual std::string cannotExpress(const HfQuantModule& m) const = 0;
    /// The tensors that replace "<module>.weight" (a bias stays as it is).
    virtual std::vector<HfTensorBlob> encode(const HfQuantModule& m) const = 0;
    /// The names, types and shapes of encode()'s tensors, in its order, without making their
    /// bytes: the writer plans the file with them and encodes each module once, as it writes
    /// it. Throws what encode() throws for a module it cannot write. Default: encode() without
    /// the bytes (formats override it with the layout alone).
    virtual std::vector<TensorDesc> describe(const HfQuantModule& m) const {
        std::vector<TensorDesc> d;
        for (HfTensorBlob& b : encode(m))
            d.push_back({std::move(b.name), b.dtype, std::move(b.shape)});
        return d;
    }
    /// config.json's "quantization_config" for the modules written and the linears left in
    /// floats (`ignored`: HF module names); `kv` the KV-cache quantisation of the blocks (empty:
    /// none).
    virtual nlohmann::ordered_json
    quantizationConfig(const std::vector<const HfQuantModule*>& written,
                       const std::vector<std::string>& ignored,
                       const std::vector<KvQuantSpec>& kv) const = 0;
    /// Files written beside config.json: (file name, contents), e.g. GPTQ's
    /// quantize_config.json.
    virtual std::vector<std::pair<std::string, std::string>>
    extraFiles(const nlohmann::ordered_json& quantizationConfig) const {
        (void)quantizationConfig;
        return {};
    }
};

} // namespace lcw
