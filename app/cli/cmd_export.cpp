// lcw-cli export: the model, or a configuration of it (--recipe / --preset / --overlay), as a
// GGUF file for llama.cpp.
#include "args.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/export/gguf_export.h"
#include "core/model/model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>

namespace lcw::cli {

namespace {

std::optional<DType> typeFromArgs(const Args& a) {
    const auto t = a.get("--type");
    if (!t) return std::nullopt;
    std::string lower = *t;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    const auto d = dtypeFromName(lower);
    if (!d || !(dtypeIsQuantized(*d) || *d == DType::F32 || *d == DType::F16 || *d == DType::BF16))
        throw UsageError{"--type must be f32, f16, bf16 or a GGUF block type (q8_0, q4_0, q4_1, "
                         "q5_0, q5_1, q2_k .. q6_k, iq4_nl, iq4_xs), not '" +
                         *t + "'"};
    return d;
}

std::string shapeText(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) {
        if (i) r += ',';
        r += std::to_string(s[i]);
    }
    return r + "]";
}

} // namespace

int cmdExport(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--recipe", "--preset", "--overlay", "--calib", "--samples",
            "--seq-len", "--format", "--out", "--type"},
           {"--quiet", "--json"});
    applyThreads(a);
    const std::string format = a.getOr("--format", "gguf");
    if (format != "gguf") throw UsageError{"--format must be gguf, not '" + format + "'"};
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out FILE.gguf is required"};
    const std::optional<DType> type = typeFromArgs(a);
    {
        // Before any compression work: the file's folder must exist.
        std::error_code ec;
        const auto dir = std::filesystem::path(*out).parent_path();
        if (!dir.empty() && !std::filesystem::is_directory(dir, ec))
            throw ArgumentError(*out + ": the folder " + dir.string() + " does not exist");
    }
    auto model = openModel(a, a.has("--calib"));
    for (const auto& w : model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
    const auto weights = applyRecipeOptions(*model, a);

    GgufExportOptions o;
    o.path = *out;
    o.type = type;
    TerminalProgress progress("export", !a.flag("--quiet"));
    o.progress = &progress;
    const GgufExportResult r = exportGguf(*model, *weights, o);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled: no file written\n");
        return 130;
    }
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    int64_t params = 0;
    for (const auto& t : r.tensors) {
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        params += n;
    }
    if (a.flag("--json")) {
        auto j = ggufExportReportJson(r);
        j["model"] = model->path();
        for (const char* k : {"--recipe", "--preset", "--overlay"})
            if (const auto v = a.get(k)) j[k + 2] = *v;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("%-32s %-16s %-7s %12s  %-10s %s\n", "tensor", "shape", "type", "bytes", "status",
                "note");
    for (const auto& t : r.tensors)
        std::printf("%-32s %-16s %-7s %12llu  %-10s %s\n", t.name.c_str(),
                    shapeText(t.shape).c_str(), std::string(dtypeName(t.type)).c_str(),
                    (unsigned long long)t.bytes, ggufTensorStatusName(t.status), t.note.c_str());
    std::printf("\nwrote %s: %s, %zu tensors, %llu bytes (%.3f bits/weight), file type %u, "
                "%.2f s\n",
                r.path.c_str(), r.arch.c_str(), r.tensors.size(), (unsigned long long)r.bytes,
                params ? 8.0 * double(r.bytes) / double(params) : 0.0, r.fileType, r.seconds);
    return 0;
}

} // namespace lcw::cli
