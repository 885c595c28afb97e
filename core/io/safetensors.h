#pragma once
/// \file
/// safetensors files (single and sharded with model.safetensors.index.json): memory-mapped
/// reading with full validation before anything is used, and streaming atomic writing.
#include "core/common/tensor.h"
#include "core/io/tensor_desc.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lcw {

class MappedFile;

/// A set of tensors mapped from one or more safetensors files. The views point into `files`,
/// which must outlive any use of them. TensorView::name and ::fileName are the stored name,
/// ::file the shard's path.
struct SafetensorsSet {
    std::vector<std::shared_ptr<const MappedFile>> files;
    std::vector<std::string> paths;  ///< the safetensors files, in the order read
    std::vector<TensorView> tensors; ///< per file in data order, files in order
    /// "__metadata__" string entries of the (first) file.
    std::vector<std::pair<std::string, std::string>> metadata;
    /// nullptr when absent.
    const TensorView* find(std::string_view name) const;
};

/// Maps and validates one .safetensors file: header length against the file size, JSON,
/// dtypes (F32 F16 BF16 F64 I8 U8 I16 I32 I64 BOOL), shapes (overflow), data_offsets inside the
/// data section, non-overlapping, and byte length == numel * dtype size.
/// Throws FormatError (malformed) or UnsupportedError (unknown dtype) naming the file.
SafetensorsSet readSafetensors(const std::string& path);

/// Reads model.safetensors.index.json and every shard its weight_map names; checks that each
/// listed tensor is in its shard and no tensor appears in two shards.
SafetensorsSet readSafetensorsIndex(const std::string& indexPath);

/// In a folder: model.safetensors.index.json if present, else model.safetensors, else the only
/// *.safetensors file (several without an index: all of them, sorted by name).
SafetensorsSet readSafetensorsFolder(const std::string& folder);

/// Writes one safetensors file atomically (temp file + rename), streaming: each tensor's bytes
/// come from fill() into a reused buffer, so memory holds at most the largest tensor.
/// Throws ArgumentError for bad descriptors (block dtypes are not allowed), Error on I/O.
void writeSafetensors(const std::string& path, const std::vector<TensorDesc>& tensors,
                      const TensorFill& fill,
                      const std::vector<std::pair<std::string, std::string>>& metadata = {});
/// Convenience: writes views (under TensorView::name).
void writeSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                      const std::vector<std::pair<std::string, std::string>>& metadata = {});

/// Writes tensors (in order) into shards of at most maxShardBytes of data each (a larger tensor
/// gets a shard of its own): `<folder>/<base>-0000i-of-0000N.safetensors` plus
/// `<base>.safetensors.index.json` (metadata.total_size, weight_map). With a single shard it
/// writes `<base>.safetensors` and no index. The fill index is into `tensors`. The folder must
/// exist. Returns the paths written (the index last).
std::vector<std::string>
writeSafetensorsSharded(const std::string& folder, const std::vector<TensorDesc>& tensors,
                        const TensorFill& fill, uint64_t maxShardBytes,
                        const std::vector<std::pair<std::string, std::string>>& metadata = {},
                        const std::string& base = "model");

} // namespace lcw
