#pragma once
/// \file
/// Shared helpers of the libFuzzer targets: one temporary folder per process (inputs are written
/// to a reused path in it when the parser takes paths), splitting one input into several files,
/// and the rule that lcw's own error types are expected results while anything else (another
/// exception, a sanitizer report, a hang, an allocation over the limit) is a finding.
#include "core/common/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace lcw::fuzz {

/// Separates the files of a multi-file input (overlay json | safetensors, tokenizer.json |
/// tokenizer_config.json, ...). Also in fuzz/dict/*.dict.
inline constexpr std::string_view kSplit = "\n#LCW-FUZZ-SPLIT#\n";

/// The process's temporary folder ($TMPDIR or /tmp, lcw-fuzz-XXXXXX), removed at exit.
inline const std::filesystem::path& tempDir() {
    static const std::filesystem::path dir = [] {
        const char* base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/lcw-fuzz-XXXXXX";
        if (!mkdtemp(tmpl.data())) std::abort();
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(tempDir(), ec);
        });
        return std::filesystem::path(tmpl);
    }();
    return dir;
}

/// Writes bytes to tempDir()/name (replacing it) and returns the path.
inline std::string writeTemp(const std::string& name, std::string_view bytes) {
    const std::filesystem::path p = tempDir() / name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    out.close();
    if (!out) std::abort(); // the temp folder is broken: not a finding in lcw
    return p.string();
}

/// Removes tempDir()/name if present (a part the input does not have).
inline void removeTemp(const std::string& name) {
    std::error_code ec;
    std::filesystem::remove(tempDir() / name, ec);
}

inline std::string_view asView(const uint8_t* data, size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

/// Splits at kSplit into at most maxParts parts (the last one keeps any further separators).
inline std::vector<std::string_view> splitInput(std::string_view in, size_t maxParts) {
    std::vector<std::string_view> parts;
    while (parts.size() + 1 < maxParts) {
        const size_t at = in.find(kSplit);
        if (at == std::string_view::npos) break;
        parts.push_back(in.substr(0, at));
        in.remove_prefix(at + kSplit.size());
    }
    parts.push_back(in);
    return parts;
}

/// Runs f; lcw::Error and its subclasses (FormatError, UnsupportedError, ArgumentError,
/// RecipeError) are the documented outcome for bad input and are swallowed. Any other
/// exception propagates and aborts the fuzzer: a finding.
template <class F> bool expectLcwErrors(F&& f) {
    try {
        f();
        return true;
    } catch (const lcw::Error&) {
        return false;
    }
}

} // namespace lcw::fuzz
