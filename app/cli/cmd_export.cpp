// lcw-cli export: the model, or a configuration of it (--recipe / --preset / --overlay), as a
// GGUF file for llama.cpp.
#include "args.h"
#include "cmd_export_hf.h"
#include "commands.h"
#include "terminal_progress.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/compress/compressed_model.h"
#include "core/compress/imatrix.h"
#include "core/eval/divergence.h"
#include "core/export/gguf_export.h"
#include "core/export/gguf_preset.h"
#include "core/io/atomic_writer.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/stats/activation_stats.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

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

void writeFileAtomic(const std::string& path, const std::string& text) {
    AtomicFileWriter w(path);
    w.write(text);
    w.commit();
}

// The importance matrix of --imatrix FILE (checked against the model), or one computed from
// --calib (llama-imatrix's chunks) when `computeFromCalib`; null without either.
std::unique_ptr<compress::Imatrix> imatrixFromArgs(const Model& model, const Args& a,
                                                   bool computeFromCalib) {
    if (const auto f = a.get("--imatrix")) {
        auto m = std::make_unique<compress::Imatrix>(compress::readImatrix(*f));
        compress::checkImatrix(*m, model);
        return m;
    }
    if (!computeFromCalib || !a.has("--calib")) return nullptr;
    const compress::CalibrationSet cal = compress::imatrixCalibration(
        model, *a.get("--calib"), a.getInt("--seq-len", 512), a.getInt("--samples", 0));
    TerminalProgress progress("imatrix", !a.flag("--quiet"));
    compress::ImatrixOptions io;
    io.dataset = *a.get("--calib");
    compress::ImatrixResult r = compress::computeImatrix(model, cal, io, progress);
    progress.finish();
    if (r.status == Status::Cancelled) throw Error("cancelled while computing the imatrix");
    return std::make_unique<compress::Imatrix>(std::move(r.imatrix));
}

// KL divergence of the written file against `reference` (the workbench configuration, or the
// model itself) on a few chunks of the bundled text.
nlohmann::ordered_json klReport(const Model& model, const WeightSource& reference,
                                const std::string& referenceName, const std::string& file,
                                const Args& a) {
    nlohmann::ordered_json j;
    if (!model.hasTokenizer()) return j;
    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    const auto written = Model::load(file, lo);
    PerplexityOptions po;
    po.ctx = a.getInt("--kl-ctx", 128);
    po.batch = po.ctx;
    po.maxChunks = a.getInt("--kl-chunks", 8);
    po.exactActivations = a.flag("--exact-activations");
    po.bosId = model.tokenizer().bosId();
    const std::string text = a.getOr("--text", stats::builtinCalibrationPath());
    const auto tokens = model.tokenizer().encode(readTextFile(text), true);
    if (int64_t(tokens.size()) < po.ctx) return j;
    TerminalProgress progress("kl check", !a.flag("--quiet"));
    const DivergenceResult r =
        compareToBaseline(reference, {{"written", written.get()}}, tokens, po, progress);
    progress.finish();
    if (r.configs.empty()) return j;
    const DivergenceStats& d = r.configs[0];
    j["against"] = referenceName;
    j["text"] = text;
    j["chunks"] = r.chunks;
    j["ctx"] = r.ctx;
    j["scored_tokens"] = d.scoredTokens;
    j["kld_mean"] = d.kld.mean;
    j["kld_mean_error"] = d.kld.meanError;
    j["kld_max"] = d.kld.max;
    j["same_top"] = d.sameTop;
    j["ppl_reference"] = d.baselinePpl;
    j["ppl_written"] = d.ppl;
    j["activations"] = activationsPathName(po.exactActivations);
    return j;
}

// --format llamacpp-command: the llama-quantize invocation and the per-tensor type list.
int writeLlamaCppCommand(const Model& model, const Args& a, const std::string& out) {
    // The imatrix: the given file, or computed here from --calib and written beside the script.
    std::string imatrixFile;
    std::unique_ptr<compress::Imatrix> imx = imatrixFromArgs(model, a, true);
    if (imx) {
        if (const auto f = a.get("--imatrix")) {
            imatrixFile = *f;
        } else {
            imatrixFile = std::filesystem::path(out).replace_extension(".imatrix.dat").string();
            compress::writeImatrix(*imx, imatrixFile);
        }
    }
    GgufMixOptions mo;
    mo.hasImatrix = imx != nullptr;
    std::optional<LlamaPresetName> preset;
    std::string note;
    if (const auto p = a.get("--preset")) {
        preset = parseLlamaPreset(*p);
        if (!preset)
            throw UsageError{"--format llamacpp-command takes a llama.cpp preset (" +
                             std::string("Q4_K_M, Q6_K, ...), not '") + *p + "'"};
        if (preset->method)
            note = "# " + preset->display + ": llama-quantize chooses the codes with ggml's own "
                   "quantisers; this reproduces the types only\n";
    }
    GgufMix mix;
    if (a.has("--recipe")) {
        const compress::Recipe recipe = compress::Recipe::load(*a.get("--recipe"));
        mix = ggufMixForRecipe(model, recipe, mo,
                               preset ? std::optional<LlamaFtype>(preset->ftype) : std::nullopt,
                               typeFromArgs(a));
        bool methods = false;
        for (const auto& r : recipe.rules)
            if (r.weight && r.weight->contains("gguf")) methods = true;
        if (methods)
            note += "# the recipe chooses codes with GPTQ / AWQ on GGUF grids: llama-quantize "
                    "reproduces its types, not its codes (export the GGUF with lcw for those)\n";
    } else if (preset) {
        mix = ggufMixFor(model, preset->ftype, mo);
    } else {
        throw UsageError{"--format llamacpp-command needs --preset P or --recipe R.json"};
    }
    LlamaQuantizeCommandOptions co;
    co.input = a.getOr("--input", std::filesystem::path(model.path()).filename().string());
    if (!imatrixFile.empty()) co.imatrix = imatrixFile;
    co.output = a.getOr("--output-name", "");
    co.pinAll = a.flag("--pin-all");
    const LlamaQuantizeCommand cmd = renderLlamaQuantizeCommand(mix, co);
    const std::string typesFile = std::filesystem::path(out).replace_extension(".types.txt").string();
    writeFileAtomic(out, "#!/bin/sh\n" + note + cmd.script() + "\n");
    writeFileAtomic(typesFile, renderTensorTypeList(mix));
    if (a.flag("--json")) {
        nlohmann::ordered_json j;
        j["format"] = "llamacpp-command";
        j["model"] = model.path();
        j["preset"] = std::string(llamaFtypeInfo(mix.ftype).name);
        j["script"] = out;
        j["types_file"] = typesFile;
        j["imatrix"] = imatrixFile;
        j["argv"] = cmd.argv;
        j["tensor_type_entries"] = cmd.tensorTypeEntries;
        j["changed_tensors"] = mix.changedCount();
        j["fallbacks"] = mix.fallbacks;
        j["tensors"] = nlohmann::ordered_json::array();
        for (const auto& c : mix.tensors)
            j["tensors"].push_back({{"name", c.name}, {"type", std::string(llamaCppTypeName(c.type))}});
        std::printf("%s\n", j.dump(2).c_str());
    } else {
        std::printf("%s%s\n", note.c_str(), cmd.script().c_str());
        std::fprintf(stderr, "wrote %s and %s (%zu tensors)%s\n", out.c_str(), typesFile.c_str(),
                     mix.tensors.size(),
                     imatrixFile.empty() ? "" : (", imatrix " + imatrixFile).c_str());
    }
    return 0;
}

// The workbench configuration to write: --overlay (loaded) or --recipe / --preset (compressed now,
// with the imatrix when given); null without any. `cancelled` is set when compression was
// cancelled.
std::unique_ptr<WeightSource> configurationFromArgs(const Model& model, const Args& a,
                                                    const compress::Imatrix* imx, bool& cancelled) {
    if (a.has("--overlay")) return compress::CompressedModel::load(*a.get("--overlay"), model);
    if (!a.has("--recipe") && !a.has("--preset")) return nullptr;
    const compress::Recipe recipe =
        a.has("--recipe") ? compress::Recipe::load(*a.get("--recipe"))
                          : presetRecipe(model, *a.get("--preset"), a.getOr("--imatrix", ""));
    const auto cal = calibrationFromArgs(model, a);
    compress::CompressOptions co;
    co.calibration = cal.get();
    co.imatrix = imx;
    TerminalProgress progress("compress", !a.flag("--quiet"));
    compress::CompressResult r = compress::compress(model, recipe, progress, co);
    progress.finish();
    if (r.status == Status::Cancelled) {
        cancelled = true;
        return nullptr;
    }
    for (const auto& w : r.plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    return std::move(r.model);
}

void printReport(const GgufExportResult& r) {
    int64_t params = 0;
    for (const auto& t : r.tensors) {
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        params += n;
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
}

} // namespace

int cmdExport(const std::vector<std::string>& argv) {
    if (isLlmCompressorExport(argv)) return cmdExportLlmCompressor(argv);
    Args a(argv,
           {"--tokenizer", "--threads", "--recipe", "--preset", "--overlay", "--calib", "--samples",
            "--seq-len", "--calib-sampling", "--calib-seed", "--format", "--out", "--type",
            "--imatrix", "--text", "--kl-chunks", "--kl-ctx", "--input", "--output-name"},
           {"--quiet", "--json", "--no-kl", "--pin-all", "--exact-activations"});
    applyThreads(a);
    const std::string format = a.getOr("--format", "gguf");
    if (const HfExportFormatEntry* hf = findHfExportFormat(format)) return cmdExportHf(a, *hf);
    if (format != "gguf" && format != "llamacpp-command")
        throw UsageError{"--format must be gguf, llamacpp-command, llmcompressor or " +
                         hfExportFormatNames() + ", not '" + format + "'"};
    const auto out = a.get("--out");
    if (!out)
        throw UsageError{format == "gguf" ? "--out FILE.gguf is required"
                                          : "--out FILE.sh is required"};
    const std::optional<DType> type = typeFromArgs(a);
    {
        // Before any compression work: the file's folder must exist.
        std::error_code ec;
        const auto dir = std::filesystem::path(*out).parent_path();
        if (!dir.empty() && !std::filesystem::is_directory(dir, ec))
            throw ArgumentError(*out + ": the folder " + dir.string() + " does not exist");
    }
    const int sources = int(a.has("--recipe")) + int(a.has("--preset")) + int(a.has("--overlay"));
    if (sources > 1 && !(format == "llamacpp-command" && !a.has("--overlay")))
        throw UsageError{"give only one of --recipe, --preset and --overlay"};
    auto model = openModel(a, a.has("--calib") || a.has("--preset"));
    for (const auto& w : model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (format == "llamacpp-command") return writeLlamaCppCommand(*model, a, *out);

    const std::optional<LlamaPresetName> preset =
        a.has("--preset") ? parseLlamaPreset(*a.get("--preset")) : std::nullopt;
    const std::vector<GgufTensorInfo> plan = planGgufTensors(*model);
    GgufExportOptions o;
    o.path = *out;
    o.type = type;
    const std::unique_ptr<compress::Imatrix> imx = imatrixFromArgs(*model, a, false);
    std::unique_ptr<WeightSource> weights;
    std::string klAgainst;
    if (preset && !preset->method) {
        // llama-quantize's own path: its per-tensor types, ggml's quantisers, the imatrix's
        // importance weights, streamed straight from the model's weights.
        GgufMixOptions mo;
        mo.hasImatrix = imx != nullptr;
        const GgufMix mix =
            chooseGgufMix(preset->ftype, ggufMixModelOf(*model), ggufMixTensorsOf(plan), mo);
        for (const auto& f : mix.fallbacks) std::fprintf(stderr, "fallback: %s\n", f.c_str());
        auto types = std::make_shared<std::map<std::string, DType>>();
        for (const auto& c : mix.tensors) (*types)[c.name] = c.type;
        o.typeFor = [types](const GgufTensorInfo& t) {
            const auto it = types->find(t.name);
            return it == types->end() ? t.defaultType : it->second;
        };
        o.fileType = llamaFtypeInfo(preset->ftype).id;
        klAgainst = "the model";
    } else {
        // A configuration of the workbench: compressed now (recipe / preset, with the imatrix
        // when given) or loaded (overlay), then written tensor by tensor.
        bool cancelled = false;
        weights = configurationFromArgs(*model, a, imx.get(), cancelled);
        if (cancelled) {
            std::fprintf(stderr, "cancelled: no file written\n");
            return 130;
        }
        if (weights) {
            klAgainst = "the workbench configuration";
            if (preset) o.fileType = llamaFtypeInfo(preset->ftype).id;
        }
    }
    if (imx) {
        o.importance = imatrixImportance(*imx, plan);
        o.metadata = imatrixMetadata(*imx, a.getOr("--imatrix", imx->source));
    }
    TerminalProgress progress("export", !a.flag("--quiet"));
    o.progress = &progress;
    const WeightSource& src = weights ? *weights : static_cast<const WeightSource&>(*model);
    const GgufExportResult r = exportGguf(*model, src, o);
    progress.finish();
    if (r.status == Status::Cancelled) {
        std::fprintf(stderr, "cancelled: no file written\n");
        return 130;
    }
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    nlohmann::ordered_json kl;
    if (!klAgainst.empty() && !a.flag("--no-kl")) kl = klReport(*model, src, klAgainst, r.path, a);
    if (a.flag("--json")) {
        auto j = ggufExportReportJson(r);
        j["model"] = model->path();
        for (const char* k : {"--recipe", "--preset", "--overlay", "--imatrix"})
            if (const auto v = a.get(k)) j[k + 2] = *v;
        if (!kl.empty()) j["kl"] = kl;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    printReport(r);
    if (!kl.empty())
        std::printf("KL divergence of the written file against %s: mean %.6f ± %.6f, max %.4f, "
                    "same top %.2f %% (%lld tokens of %s)\n",
                    kl["against"].get<std::string>().c_str(), kl["kld_mean"].get<double>(),
                    kl["kld_mean_error"].get<double>(), kl["kld_max"].get<double>(),
                    100.0 * kl["same_top"].get<double>(),
                    (long long)kl["scored_tokens"].get<int64_t>(),
                    kl["text"].get<std::string>().c_str());
    return 0;
}

} // namespace lcw::cli
