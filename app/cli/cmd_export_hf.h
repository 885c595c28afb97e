#pragma once
// lcw-cli export --format <a Hugging Face quantised-checkpoint format>: the table of those formats
// (name -> HfQuantFormat factory) and the command that writes one (cmd_export_hf.cpp).
#include "core/export/hf_quant_format.h"

#include <memory>
#include <string>
#include <vector>

namespace lcw::cli {

class Args;

struct HfExportFormatEntry {
    const char* name; ///< the --format value
    std::unique_ptr<HfQuantFormat> (*make)();
};
/// The Hugging Face checkpoint formats of `export --format` (one line each).
const std::vector<HfExportFormatEntry>& hfExportFormats();
/// The entry for `format`, or nullptr.
const HfExportFormatEntry* findHfExportFormat(const std::string& format);
/// "compressed-tensors, ..." for usage messages.
std::string hfExportFormatNames();
/// export MODEL (--recipe R|--preset P|--overlay DIR) --format F --out DIR [--json] [--quiet].
int cmdExportHf(const Args& a, const HfExportFormatEntry& format);

} // namespace lcw::cli
