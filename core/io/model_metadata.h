#pragma once
/// \file
/// Read-only metadata of a model file for display: every GGUF key with its type and value
/// (arrays summarised), the decoded file type and tokenizer facts; config.json and the
/// safetensors __metadata__ of a Hugging Face folder; the header of a llama2.c checkpoint.
#include <cstdint>
#include <string>
#include <vector>

namespace lcw {

struct MetadataEntry {
    std::string key;
    std::string type;   ///< "u32", "string", "array[string]", "json object", "int32" ...
    std::string value;  ///< scalars in full (strings up to 4096 bytes), arrays summarised
    uint64_t count = 0; ///< arrays: element count (0 for scalars)
    std::vector<std::string> items; ///< arrays: the first kMetadataItems elements, rendered
};

/// How many array elements MetadataEntry::items keeps (a 150k-token vocabulary is not copied).
inline constexpr size_t kMetadataItems = 256;

struct ModelMetadata {
    std::string path;   ///< the file or folder read
    std::string format; ///< "GGUF v3", "Hugging Face safetensors", "llama2.c v0"
    /// Facts first: architecture, file type (GGUF general.file_type decoded, e.g.
    /// "MOSTLY_Q4_K_M (15)"), tensor types, tokenizer model, vocabulary size, special tokens.
    std::vector<std::pair<std::string, std::string>> summary;
    std::vector<MetadataEntry> entries; ///< all keys, in file order
    /// Whole documents worth showing as text: ("config.json", its pretty-printed text), ...
    std::vector<std::pair<std::string, std::string>> documents;
};

/// llama.cpp's llama_ftype names: 15 → "MOSTLY_Q4_K_M", 0 → "ALL_F32"; "unknown (<n>)" otherwise.
std::string llamaFileTypeName(int64_t fileType);

/// Reads the metadata of a .gguf file, a Hugging Face folder (or a file in it) or a llama2.c
/// checkpoint. Throws FormatError naming the file on malformed content.
ModelMetadata readModelMetadata(const std::string& path);

} // namespace lcw
