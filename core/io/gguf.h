#pragma once
/// \file
/// GGUF v2/v3 files: a validating, memory-mapped reader (every count, length, offset and size is
/// checked against the file before anything is allocated or touched) and a streaming atomic
/// writer.
#include "core/common/tensor.h"
#include "core/io/tensor_desc.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lcw {

class MappedFile;

/// GGUF metadata value types (numbering as in the format).
enum class GgufType : uint32_t {
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
};
std::string_view ggufTypeName(GgufType t);

/// One metadata value: a scalar, a string, or an array (of scalars, strings or arrays).
struct GgufValue {
    GgufType type = GgufType::UInt32;
    uint64_t bits = 0; ///< numeric/bool scalars: the little-endian bits, zero-extended
    std::string str;   ///< String
    GgufType elemType = GgufType::UInt8; ///< Array: element type
    uint64_t count = 0;                  ///< Array: element count
    std::vector<uint8_t> raw;            ///< Array of numbers/bools: packed elements
    std::vector<std::string> strings;    ///< Array of strings
    std::vector<GgufValue> arrays;       ///< Array of arrays

    // ---- construction ----
    static GgufValue u8(uint8_t v);
    static GgufValue i8(int8_t v);
    static GgufValue u16(uint16_t v);
    static GgufValue i16(int16_t v);
    static GgufValue u32(uint32_t v);
    static GgufValue i32(int32_t v);
    static GgufValue u64(uint64_t v);
    static GgufValue i64(int64_t v);
    static GgufValue f32(float v);
    static GgufValue f64(double v);
    static GgufValue boolean(bool v);
    static GgufValue string(std::string v);
    static GgufValue stringArray(std::vector<std::string> v);
    static GgufValue f32Array(const std::vector<float>& v);
    static GgufValue i32Array(const std::vector<int32_t>& v);
    /// Array of a numeric/bool type from packed little-endian bytes (count = bytes / size).
    static GgufValue numericArray(GgufType elem, std::vector<uint8_t> packed);
    /// Array of arrays.
    static GgufValue arrayArray(std::vector<GgufValue> v);

    // ---- access ----
    bool isArray() const { return type == GgufType::Array; }
    /// Integer scalars (and bool) as int64; nullopt for other types or uint64 > INT64_MAX.
    std::optional<int64_t> asInt() const;
    /// Any numeric scalar as double.
    std::optional<double> asDouble() const;
    std::optional<bool> asBool() const;
    /// Element i of a numeric array as int64 / double (nullopt when not numeric).
    std::optional<int64_t> arrayInt(uint64_t i) const;
    std::optional<double> arrayDouble(uint64_t i) const;
    /// Human-readable rendering (arrays abbreviated).
    std::string toString() const;
};

/// Byte size of a numeric/bool GGUF scalar type (0 for String/Array).
size_t ggufScalarSize(GgufType t);

/// ggml tensor type id ↔ DType (nullopt / UnsupportedError for types lcw cannot hold).
std::optional<DType> dtypeFromGgmlType(uint32_t ggmlType);
uint32_t ggmlTypeId(DType t);
/// "q4_k", "iq2_xs", ... or "type <n>".
std::string ggmlTypeName(uint32_t ggmlType);

struct GgufFile {
    std::string path;
    std::shared_ptr<const MappedFile> file;
    uint32_t version = 3;
    uint64_t alignment = 32;
    uint64_t dataOffset = 0; ///< absolute offset of the data section
    std::vector<std::pair<std::string, GgufValue>> metadata; ///< in file order
    /// In header order; name == fileName == the GGUF name; shape row-major (ne reversed).
    std::vector<TensorView> tensors;
    std::vector<uint64_t> tensorOffsets; ///< per tensor, relative to dataOffset

    const GgufValue* find(std::string_view key) const;
    const TensorView* findTensor(std::string_view name) const;
    /// Typed getters: nullopt when the key is absent; FormatError naming the file and key when
    /// the value has the wrong type.
    std::optional<int64_t> getInt(std::string_view key) const;
    std::optional<double> getDouble(std::string_view key) const;
    std::optional<bool> getBool(std::string_view key) const;
    std::optional<std::string> getString(std::string_view key) const;
};

/// Maps and validates a GGUF v2/v3 file. Throws FormatError naming the file (with the byte
/// offset) on any malformed content, UnsupportedError for tensor types lcw cannot use.
GgufFile readGguf(const std::string& path);

/// Writes a GGUF file atomically, streaming tensor data from fill(). Tensor data is aligned to
/// general.alignment when the metadata sets it (as UInt32), else 32. version 2 or 3.
void writeGguf(const std::string& path,
               const std::vector<std::pair<std::string, GgufValue>>& metadata,
               const std::vector<TensorDesc>& tensors, const TensorFill& fill,
               uint32_t version = 3);
/// Convenience: writes views (under TensorView::name).
void writeGguf(const std::string& path,
               const std::vector<std::pair<std::string, GgufValue>>& metadata,
               const std::vector<TensorView>& tensors, uint32_t version = 3);

} // namespace lcw
