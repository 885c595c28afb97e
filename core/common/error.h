#pragma once
/// \file
/// Typed errors of the core. Every error a user can see names the file (when there is one) and
/// the problem. Cancellation is not an error: long jobs return Status::Cancelled.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lcw {

/// Base class of all lcw errors. what() is a complete, user-facing sentence.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A file is malformed, truncated, lies about shapes/sizes, or cannot be read.
/// what() reads "<path>: <problem>" or "<path>: <problem> (at byte <offset>)".
class FormatError : public Error {
public:
    static constexpr uint64_t kNoOffset = ~uint64_t(0);
    FormatError(std::string path, std::string problem, uint64_t offset = kNoOffset);
    const std::string& path() const { return m_path; }
    const std::string& problem() const { return m_problem; }
    uint64_t offset() const { return m_offset; }

private:
    std::string m_path;
    std::string m_problem;
    uint64_t m_offset;
};

/// The model or its files are valid but describe something lcw does not support
/// (unknown architecture, unsupported dtype, ...).
class UnsupportedError : public Error {
public:
    using Error::Error;
};

/// Invalid arguments from a caller (bad option values, ids out of range, ...).
class ArgumentError : public Error {
public:
    using Error::Error;
};

/// Outcome of long jobs: cancellation is an outcome, not an exception.
enum class Status { Ok, Cancelled };

/// Rethrow the current exception with a context prefix ("loading tokenizer: ...").
/// Keeps the FormatError type (and path/offset) when the original was one.
[[noreturn]] void rethrowWithContext(const std::string& context);

} // namespace lcw
