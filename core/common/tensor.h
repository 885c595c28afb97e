#pragma once
/// \file
/// A non-owning view of a stored tensor (usually inside a memory map).
#include "core/common/dtype.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct TensorView {
    std::string name;     ///< canonical lcw name ("layers.3.attn.q", "embed", "lm_head", ...)
    std::string fileName; ///< the tensor's own name in its file (kept for export)
    std::string file;     ///< path of the file holding the bytes
    DType dtype = DType::F32;
    /// Row-major logical shape, outermost first (PyTorch order). A linear weight is
    /// [out_features, in_features]. GGUF's ne[] is reversed into this order.
    std::vector<int64_t> shape;
    const std::byte* data = nullptr; ///< first byte (inside the owning MappedFile)
    uint64_t nbytes = 0;
    /// Where the view lies in the file tensor `fileName` when that tensor is fused (Phi-3
    /// qkv_proj / gate_up_proj, GPT-2 c_attn, ...): the first row of the file tensor this view
    /// starts at (contiguous splits; per-head interleaved layouts are de-interleaved copies whose
    /// layout follows from the architecture).
    int64_t fileRowOffset = 0;
    /// The file stores this weight transposed, [in, out] (GPT-2 Conv1D); `data` holds the
    /// transposed copy in the usual [out, in] order.
    bool fileTransposed = false;

    int64_t numel() const {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    /// Innermost dimension (elements per row).
    int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
    /// Product of all but the innermost dimension.
    int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
    /// Bytes of one row (valid for every dtype, block formats included: rows hold whole blocks).
    uint64_t rowBytes() const { return rows() == 0 ? 0 : nbytes / uint64_t(rows()); }
    const std::byte* row(int64_t r) const { return data + uint64_t(r) * rowBytes(); }
};

} // namespace lcw
