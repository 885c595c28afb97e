#pragma once
/// \file
/// Repacked copies of stored GGUF block weights (qdot.h: repackRows) for the CPU backend: made on
/// a weight's first product, in parallel, and shared by every backend of the process that
/// multiplies the same tensor (one copy however many sessions run over a model and its
/// overlays); freed with the last backend that used it. A weight read from a memory-mapped file
/// gives its mapped pages back once repacked (MappedFile::releasePages), so the process holds
/// one copy; a weight in anonymous memory (converted, in-memory models) is held twice. Off with
/// setRepackWeights(false) or LCW_NO_REPACK=1 in the environment.
#include "core/common/tensor.h"

#include <cstddef>
#include <memory>
#include <unordered_map>

namespace lcw::kernels {

struct RepackedWeight;

/// Whether backends repack (default: yes, unless LCW_NO_REPACK is set to a non-empty value
/// other than "0"). Process-wide; affects weights first multiplied afterwards.
bool repackWeights();
void setRepackWeights(bool on);

/// One backend's handles on the shared repacked weights.
class RepackCache {
public:
    RepackCache();
    ~RepackCache();
    RepackCache(const RepackCache&) = delete;
    RepackCache& operator=(const RepackCache&) = delete;
    /// w's repacked rows, or null when the active kernel for w's type has no repacked form,
    /// w's shape does not allow it, or repacking is off.
    const std::byte* get(const TensorView& w);
    /// Bytes of the repacked weights this cache holds.
    size_t bytes() const { return m_bytes; }

private:
    std::unordered_map<const std::byte*, std::shared_ptr<const RepackedWeight>> m_held;
    size_t m_bytes = 0;
};

} // namespace lcw::kernels
