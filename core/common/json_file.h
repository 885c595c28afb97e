#pragma once
/// \file
/// Reading a JSON file with the errors every reader of lcw gives.
#include <nlohmann/json.hpp>

#include <string>

namespace lcw {

/// Reads and parses `path`. Throws FormatError naming the file: "cannot open ..." when it is
/// missing or unreadable, "not valid JSON: ..." (with the byte offset) when it does not parse.
nlohmann::json readJsonFile(const std::string& path);

} // namespace lcw
