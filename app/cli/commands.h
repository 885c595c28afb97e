#pragma once
// The lcw-cli commands. Each returns the process exit code and throws lcw::Error (exit 1) or
// UsageError (exit 2).
#include <string>
#include <vector>

namespace lcw::cli {

int cmdInfo(const std::vector<std::string>& args);
int cmdGenerate(const std::vector<std::string>& args);
int cmdTokenize(const std::vector<std::string>& args);
int cmdLogits(const std::vector<std::string>& args);
int cmdPerplexity(const std::vector<std::string>& args);
int cmdSynth(const std::vector<std::string>& args);
int cmdStats(const std::vector<std::string>& args);

} // namespace lcw::cli
