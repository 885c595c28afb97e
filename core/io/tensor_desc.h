#pragma once
/// \file
/// What the weight writers (safetensors, GGUF) take: tensor descriptors and a callback that
/// fills each tensor's bytes, so that huge files are produced without holding them in memory.
#include "core/common/dtype.h"
#include "core/common/tensor.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lcw {

class AtomicFileWriter;

/// One tensor to write. shape is row-major (PyTorch order), as in TensorView.
struct TensorDesc {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
};

/// Fills tensor `index` (into the descriptor list): dst holds exactly nbytes bytes (the whole
/// tensor, in the file's layout). Called once per tensor, in order, from the writing thread.
using TensorFill = std::function<void(size_t index, std::byte* dst, uint64_t nbytes)>;

/// Stored byte size of a descriptor; throws ArgumentError for negative dims, overflow, or a row
/// length that is not a multiple of a block format's block size.
uint64_t tensorDescBytes(const TensorDesc& d);

/// Descriptors + fill for writing existing views (TensorView::name is the name written).
std::vector<TensorDesc> tensorDescsFromViews(const std::vector<TensorView>& views);
TensorFill tensorFillFromViews(const std::vector<TensorView>& views);

/// Fills tensor `index` (nbytes long) through `fill` into `buf` (grown as needed, reused across
/// calls) and appends it to `w`. Shared by the safetensors and GGUF writers.
void appendTensorBytes(AtomicFileWriter& w, const TensorFill& fill, size_t index, uint64_t nbytes,
                       std::vector<std::byte>& buf);

} // namespace lcw
