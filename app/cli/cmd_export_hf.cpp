// lcw-cli export --format compressed-tensors | gptq | awq (the Hugging Face checkpoint formats of
// the table below): a configuration of the workbench as a Hugging Face folder for transformers
// and vLLM (core/export/hf_checkpoint.h).
#include "cmd_export_hf.h"

#include "args.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/export/compressed_tensors.h"
#include "core/export/gptq_awq.h"
#include "core/export/hf_checkpoint.h"
#include "core/model/model.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace lcw::cli {

const std::vector<HfExportFormatEntry>& hfExportFormats() {
    static const std::vector<HfExportFormatEntry> table = {
        {"compressed-tensors", &compressedTensorsFormat},
        {"gptq", [] { return gptqFormat(); }},
        // GPTQModel's own convention (zero points as they are): what it loads asymmetric
        // models from.
        {"gptq_v2", [] { return gptqFormat({.v2 = true}); }},
        {"awq", &awqFormat},
    };
    return table;
}

const HfExportFormatEntry* findHfExportFormat(const std::string& format) {
    for (const auto& e : hfExportFormats())
        if (format == e.name) return &e;
    return nullptr;
}

std::string hfExportFormatNames() {
    std::string s;
    for (const auto& e : hfExportFormats()) s += (s.empty() ? "" : ", ") + std::string(e.name);
    return s;
}

int cmdExportHf(const Args& a, const HfExportFormatEntry& entry) {
    const auto out = a.get("--out");
    if (!out)
        throw UsageError{std::string("--format ") + entry.name + " needs --out DIR (a new folder)"};
    if (!a.has("--recipe") && !a.has("--preset") && !a.has("--overlay"))
        throw UsageError{std::string("--format ") + entry.name +
                         " writes a configuration: give --recipe R.json, --preset P or "
                         "--overlay DIR"};
    for (const char* o : {"--type", "--imatrix", "--input", "--output-name"})
        if (a.has(o)) throw UsageError{std::string(o) + " is not used with --format " + entry.name};
    const std::unique_ptr<HfQuantFormat> format = entry.make();
    auto model = openModel(a, a.has("--calib") || a.has("--preset"));
    for (const auto& w : model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
    const std::unique_ptr<WeightSource> weights = applyRecipeOptions(*model, a);
    TerminalProgress progress("export", !a.flag("--quiet"));
    HfCheckpointOptions o;
    o.outDir = *out;
    o.progress = &progress;
    const HfCheckpointResult r = exportHfCheckpoint(*model, *weights, *format, o);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled: nothing written\n");
        return 130;
    }
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (a.flag("--json")) {
        auto j = hfCheckpointReportJson(r);
        j["model"] = model->path();
        for (const char* k : {"--recipe", "--preset", "--overlay"})
            if (const auto v = a.get(k)) j[k + 2] = *v;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("%-48s %-8s %-28s %s\n", "module", "status", "scheme", "note");
    int written = 0;
    for (const auto& m : r.modules) {
        std::printf("%-48s %-8s %-28s %s\n", m.module.c_str(), m.status.c_str(), m.scheme.c_str(),
                    m.reason.c_str());
        written += m.status == "written";
    }
    std::printf("\nwrote %s (%s): %d modules in the format, %zu left in floats, %llu bytes of "
                "tensors, %.2f s\n",
                r.path.c_str(), r.format.c_str(), written, r.ignored.size(),
                (unsigned long long)r.tensorBytes, r.seconds);
    return 0;
}

} // namespace lcw::cli
