#pragma once
/// \file
/// One driver per fuzz target: feeds one input to a parser the way lcw uses it, swallowing
/// lcw's own error types (the documented outcome for bad input) and letting anything else
/// escape (another exception, a sanitizer report, a hang, an oversized allocation: a finding).
/// The fuzz targets (fuzz/fuzz_<name>.cpp) call them, and so does tests/test_fuzz_regress.cpp
/// with the saved reproducers (built by gcc, without libFuzzer). Each returns true when the main
/// load rejected the input with an lcw error.
#include "fuzz/fuzz_base_model.h"
#include "fuzz/fuzz_common.h"

#include "core/common/json_file.h"
#include "core/common/npy.h"
#include "core/compress/compressed_model.h"
#include "core/compress/imatrix.h"
#include "core/compress/recipe.h"
#include "core/eval/results_store.h"
#include "core/eval/study.h"
#include "core/eval/study_report.h"
#include "core/eval/tasks.h"
#include "core/export/llmcompressor.h"
#include "core/io/gguf.h"
#include "core/io/hf_config.h"
#include "core/io/llama2c.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_values.h"
#include "core/model/model.h"
#include "core/project/project.h"
#include "core/stats/stats_store.h"
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>

namespace lcw::fuzz {

/// GGUF reader (core/io/gguf.*): readGguf, typed getters, value rendering, and the GGUF model
/// loader on top of it (metadata -> spec, tensors, tokenizer from tokenizer.ggml.*).
inline bool driveGguf(std::string_view in) {
    const std::string path = writeTemp("model.gguf", in);
    const bool rejected = !expectLcwErrors([&] {
        const GgufFile g = readGguf(path);
        for (const auto& kv : g.metadata) (void)kv.second.toString();
        for (const char* key : {"general.architecture", "general.alignment", "llama.block_count",
                                "tokenizer.ggml.model"}) {
            expectLcwErrors([&] { (void)g.getString(key); });
            expectLcwErrors([&] { (void)g.getInt(key); });
            expectLcwErrors([&] { (void)g.getDouble(key); });
        }
    });
    expectLcwErrors([&] {
        const auto m = Model::load(path);
        (void)m->parameterCount();
        if (m->hasTokenizer()) {
            const Tokenizer& t = m->tokenizer();
            const auto ids = t.encode("Hello world, <s> 123 \xc3\xbc", true, true);
            (void)t.decode(ids, false);
        }
    });
    return rejected;
}

/// safetensors (core/io/safetensors.*). Without a split: one .safetensors file. With splits:
/// model.safetensors.index.json, then shard-1.safetensors ... shard-5.safetensors (the seeds'
/// weight_map names those), read through the index and through the folder lookup.
inline bool driveSafetensors(std::string_view in) {
    auto touch = [](const SafetensorsSet& s) {
        for (const auto& t : s.tensors) (void)s.find(t.name);
    };
    const auto parts = splitInput(in, 6);
    if (parts.size() == 1) {
        const std::string path = writeTemp("single.safetensors", parts[0]);
        return !expectLcwErrors([&] { touch(readSafetensors(path)); });
    }
    std::filesystem::create_directories(tempDir() / "index");
    for (size_t i = 1; i < 6; ++i) {
        const std::string name = "index/shard-" + std::to_string(i) + ".safetensors";
        if (i < parts.size())
            writeTemp(name, parts[i]);
        else
            removeTemp(name);
    }
    const std::string index = writeTemp("index/model.safetensors.index.json", parts[0]);
    const bool rejected = !expectLcwErrors([&] { touch(readSafetensorsIndex(index)); });
    expectLcwErrors([&] { touch(readSafetensorsFolder((tempDir() / "index").string())); });
    return rejected;
}

/// Hugging Face config.json -> ModelSpec (core/io/hf_config.*).
inline bool driveHfConfig(std::string_view in) {
    std::vector<std::string> warnings;
    return !expectLcwErrors(
        [&] { (void)parseHfConfig(std::string(in), "config.json", &warnings); });
}

/// HF tokenizer.json (core/tokenizer/hf_tokenizer.cpp): tokenizer.json [split
/// tokenizer_config.json]; a tokenizer that loads also encodes and decodes a short text,
/// renders some tokens and exports its GGUF vocabulary.
inline bool driveTokenizer(std::string_view in) {
    const auto parts = splitInput(in, 2);
    const std::string tok = writeTemp("tokenizer.json", parts[0]);
    std::string cfg;
    if (parts.size() > 1) cfg = writeTemp("tokenizer_config.json", parts[1]);
    std::unique_ptr<Tokenizer> t;
    if (!expectLcwErrors([&] { t = Tokenizer::fromHfJson(tok, cfg); })) return true;
    for (bool special : {false, true}) {
        expectLcwErrors([&] {
            const auto ids = t->encode(
                "Once upon a time, <s> there was 42 \xc3\xbc\xe2\x96\x81 x\n", true, special);
            (void)t->decode(ids, true);
            (void)t->decode(ids, false);
        });
    }
    expectLcwErrors([&] {
        for (int32_t id = 0; id < std::min(t->vocabSize(), 64); ++id) (void)t->tokenText(id);
    });
    std::vector<std::string> warnings;
    expectLcwErrors([&] { (void)t->ggufVocab(&warnings); });
    return false;
}

/// llama.c checkpoint + tokenizer.bin (core/io/llama2c.*, core/tokenizer/llama2c_tokenizer.cpp):
/// checkpoint [split tokenizer.bin]. The tokenizer is read with the checkpoint's vocabulary size
/// (or, when the checkpoint is invalid, 1 + its first byte), then the whole model loads with the
/// tokenizer beside it and a short text is encoded and decoded.
inline bool driveLlama2c(std::string_view in) {
    const auto parts = splitInput(in, 2);
    const std::string ckpt = writeTemp("model.bin", parts[0]);
    int32_t vocab = 1 + (parts[0].empty() ? 0 : uint8_t(parts[0][0]));
    const bool rejected = !expectLcwErrors([&] { vocab = readLlama2c(ckpt).config.vocabSize; });
    if (parts.size() < 2) {
        removeTemp("tokenizer.bin");
        return rejected;
    }
    const std::string tokPath = writeTemp("tokenizer.bin", parts[1]);
    expectLcwErrors([&] {
        const auto t = Tokenizer::fromLlama2c(tokPath, vocab);
        const auto ids = t->encode("Once upon a time \xc3\xbc <s>", true, true);
        (void)t->decode(ids, false);
    });
    expectLcwErrors([&] {
        const auto m = Model::load(ckpt);
        if (m->hasTokenizer()) (void)m->tokenizer().encode("Hello", true);
    });
    return rejected;
}

/// .npy arrays (core/common/npy.*).
inline bool driveNpy(std::string_view in) {
    const std::string path = writeTemp("array.npy", in);
    return !expectLcwErrors([&] { (void)readNpy(path); });
}

/// HDF5 statistics store (core/stats/stats_store.*): the header-only read and the full read.
inline bool driveStats(std::string_view in) {
    const std::string path = writeTemp("stats.h5", in);
    const bool rejected = !expectLcwErrors([&] { (void)stats::StatsStore::loadHeader(path); });
    expectLcwErrors([&] { (void)stats::StatsStore::load(path); });
    return rejected;
}

/// HDF5 project files (core/project/project.*): the reader.
inline bool driveProject(std::string_view in) {
    const std::string path = writeTemp("project.lcwproj", in);
    return !expectLcwErrors([&] { (void)project::load(path); });
}

/// Results store (core/eval/results_store.*): loading every record of a results.jsonl, looking
/// records up by id and by prefix, and appending: after an append onto any file the new record
/// must load back (a torn last line must never swallow it).
inline bool driveResults(std::string_view in) {
    const std::string path = writeTemp("results.jsonl", in);
    const bool rejected = !expectLcwErrors([&] {
        const ResultsFile f = loadResults(path);
        for (const auto& r : f.records) {
            if (!r.contains("id") || !r["id"].is_string()) continue;
            const std::string id = r["id"].get<std::string>();
            expectLcwErrors([&] { (void)findResult(f, id); });
            expectLcwErrors([&] { (void)findResult(f, id.substr(0, id.size() / 2)); });
        }
        expectLcwErrors([&] { (void)findResult(f, "2026"); });
    });
    expectLcwErrors([&] {
        appendResult(path, {{"id", "fuzz-appended-record"}, {"kind", "fuzz"}});
        const ResultsFile f = loadResults(path);
        const bool found = std::any_of(f.records.begin(), f.records.end(), [](const auto& r) {
            return r.contains("id") && r["id"] == "fuzz-appended-record";
        });
        if (!found) {
            std::fprintf(stderr, "results store: the record appended to %s does not load back\n",
                         path.c_str());
            std::abort();
        }
    });
    return rejected;
}

/// Recipe JSON (core/compress/recipe.*): loading and validation, rule pattern matching (globs
/// and re: regexes) against canonical names, planning against the bundled stories260K, and the
/// round trip through toJson() (a valid recipe must load again from what it writes).
inline bool driveRecipe(std::string_view in) {
    const Model& base = baseModel();
    const std::string path = writeTemp("recipe.json", in);
    compress::Recipe r;
    if (!expectLcwErrors([&] { r = compress::Recipe::load(path); })) return true;
    static const char* const kNames[] = {"embed",
                                         "lm_head",
                                         "final_norm",
                                         "layers.0.attn.q",
                                         "layers.0.attn.k",
                                         "layers.4.attn.o",
                                         "layers.11.mlp.gate",
                                         "layers.3.mlp.down",
                                         "layers.0.mlp.router",
                                         "layers.1.mlp.experts.7.up",
                                         "mlp.router",
                                         "layers..attn.q",
                                         "",
                                         "layers.99999999999999999999.attn.v"};
    for (const auto& rule : r.rules)
        for (const char* n : kNames) expectLcwErrors([&] { (void)rule.matches(n); });
    for (bool cal : {false, true}) {
        expectLcwErrors([&] {
            compress::PlanOptions po;
            po.hasCalibration = cal;
            (void)compress::planRecipe(r, base, po);
        });
    }
    const nlohmann::json written = r.toJson();
    try {
        (void)compress::Recipe::fromJson(written);
    } catch (const Error& e) {
        std::fprintf(stderr, "recipe: a valid recipe does not load from its own toJson(): %s\n%s\n",
                     e.what(), written.dump().c_str());
        std::abort();
    }
    return false;
}

/// Compressed-model overlays (core/compress/compressed_model.*): overlay.json [split
/// overlay.safetensors] loaded over the bundled stories260K, then every replaced tensor is
/// materialised (find), packed for the runtime (packedLinear) and sized.
inline bool driveOverlay(std::string_view in) {
    const Model& base = baseModel();
    const auto parts = splitInput(in, 2);
    std::filesystem::create_directories(tempDir() / "overlay");
    writeTemp("overlay/overlay.json", parts[0]);
    if (parts.size() > 1)
        writeTemp("overlay/overlay.safetensors", parts[1]);
    else
        removeTemp("overlay/overlay.safetensors");
    std::unique_ptr<compress::CompressedModel> m;
    if (!expectLcwErrors(
            [&] { m = compress::CompressedModel::load((tempDir() / "overlay").string(), base); }))
        return true;
    for (const std::string& name : m->replacedNames()) {
        expectLcwErrors([&] {
            (void)m->find(name);
            (void)m->packedLinear(name);
            (void)m->tensorSize(name);
        });
    }
    expectLcwErrors([&] {
        (void)m->totalSize();
        (void)m->layerSizes();
        (void)m->residentBytes();
    });
    return false;
}

/// Quantised Hugging Face checkpoint (core/model/load_hf_quant.cpp): config.json [split
/// model.safetensors [split quantize_config.json]] opened as a model folder; a model that loads
/// has every tensor's values read, scheme and stored bytes asked for.
inline bool driveHfQuant(std::string_view in) {
    const auto parts = splitInput(in, 3);
    std::filesystem::create_directories(tempDir() / "hfq");
    writeTemp("hfq/config.json", parts[0]);
    const char* const kFiles[] = {"hfq/model.safetensors", "hfq/quantize_config.json"};
    for (size_t i = 0; i < 2; ++i) {
        if (i + 1 < parts.size())
            writeTemp(kFiles[i], parts[i + 1]);
        else
            removeTemp(kFiles[i]);
    }
    std::unique_ptr<Model> m;
    if (!expectLcwErrors([&] { m = Model::load((tempDir() / "hfq").string()); })) return true;
    for (const TensorView& t : m->tensors()) {
        expectLcwErrors([&] {
            std::vector<float> row;
            if (dtypeIsFloatLike(t.dtype) && t.rows() > 0) readTensorRows(t, t.rows() - 1, 1, row);
            (void)m->tensorScheme(t.name);
            (void)m->tensorStoredBytes(t);
        });
    }
    (void)m->quantizationSummary();
    return false;
}

/// llm-compressor recipe YAML (core/export/llmcompressor.cpp), imported with the family
/// spellings of every architecture and of llama; an imported recipe is planned on the bundled
/// stories260K.
inline bool driveLlmcRecipe(std::string_view in) {
    const std::string path = writeTemp("recipe.yaml", in);
    compress::Recipe r;
    if (!expectLcwErrors([&] { r = exporter::importLlmCompressorRecipe(path); })) return true;
    expectLcwErrors([&] { (void)exporter::importLlmCompressorRecipe(path, "llama"); });
    expectLcwErrors([&] { (void)compress::planRecipe(r, baseModel()); });
    return false;
}

/// Target name ("gguf", "hf_config", ...) -> driver.
/// Study results (core/eval/study.*, study_report.*): a study.json as the Study panel opens it,
/// then everything made from it — the conclusions computed again, the TSV, every SVG plot and the
/// HTML page; what lcw writes for a study it loaded must load back.
inline bool driveStudy(std::string_view in) {
    const std::string path = writeTemp("study.json", in);
    study::StudyResult r;
    if (!expectLcwErrors([&] { r = study::fromJson(readJsonFile(path), path); })) return true;
    std::vector<std::string> plots;
    for (study::Group g :
         {study::Group::Weight, study::Group::WeightActivation, study::Group::KvCache})
        for (study::PlotMetric m : {study::PlotMetric::Ppl, study::PlotMetric::Kld})
            plots.push_back(study::svgPlot(r, g, m).empty() ? "" : "plot.svg");
    (void)study::conclusions(r);
    (void)study::tsv(r);
    (void)study::html(r, plots);
    const nlohmann::json written = study::toJson(r);
    try {
        (void)study::fromJson(nlohmann::json::parse(written.dump()), "rewritten study.json");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "study: %s loaded, but its rewritten JSON does not load: %s\n",
                     path.c_str(), e.what());
        std::abort();
    }
    return false;
}

/// llama.cpp's legacy imatrix.dat (core/compress/imatrix.*), as `compress --imatrix` and
/// `imatrix --show` read it: the file, the check against the base model (stories260K), every
/// entry's importance as the quantisers ask for it (the entry's own length, and a length that
/// does not fit), and a written copy that must read back equal.
inline bool driveImatrix(std::string_view in) {
    const std::string path = writeTemp("imatrix.dat", in);
    compress::Imatrix m;
    if (!expectLcwErrors([&] { m = compress::readImatrix(path); })) return true;
    expectLcwErrors([&] { compress::checkImatrix(m, baseModel()); });
    for (const auto& e : m.entries) {
        const int64_t n = int64_t(e.values.size());
        expectLcwErrors([&] { (void)m.importance(e.name, n); });
        expectLcwErrors([&] { (void)m.importance(e.name, n + 1); });
        expectLcwErrors([&] { (void)m.importance(e.name, std::max<int64_t>(1, n / 2), 2); });
    }
    for (const auto& t : compress::imatrixTargets(baseModel()))
        for (const auto& c : t.canonical)
            expectLcwErrors([&] { (void)compress::importanceFor(m, baseModel(), c); });
    const std::string copy = (tempDir() / "imatrix-copy.dat").string();
    compress::writeImatrix(m, copy);
    const compress::Imatrix back = compress::readImatrix(copy);
    bool same = back.entries.size() == m.entries.size() && back.chunks == m.chunks &&
                back.dataset == m.dataset;
    for (size_t i = 0; same && i < m.entries.size(); ++i)
        same = back.entries[i].name == m.entries[i].name &&
               back.entries[i].ncall == m.entries[i].ncall &&
               back.entries[i].values == m.entries[i].values;
    if (!same) {
        std::fprintf(stderr, "imatrix: %s loaded, but its rewritten copy reads back different\n",
                     path.c_str());
        std::abort();
    }
    return false;
}

/// Evaluation task files (core/eval/tasks.*) as `eval --tasks ... --tasks-dir DIR` reads them.
/// The first byte picks the task (lambada, arc_easy, piqa, winogrande, hellaswag); the rest is
/// the data file [split the labels file], written under the task's file names. A task that
/// loads is prepared as the scorer would be (byte tokens; the second byte sets --limit).
inline bool driveTasks(std::string_view in) {
    if (in.empty()) return true;
    static const TaskKind kinds[] = {TaskKind::Lambada, TaskKind::ArcEasy, TaskKind::Piqa,
                                     TaskKind::WinoGrande, TaskKind::HellaSwag};
    const TaskKind kind = kinds[uint8_t(in[0]) % 5];
    const int64_t limit = in.size() > 1 ? uint8_t(in[1]) % 16 : 0;
    in.remove_prefix(1);
    const auto parts = splitInput(in, 2);
    const auto [data, labels] = taskFiles(kind);
    std::filesystem::create_directories(tempDir() / "tasks");
    writeTemp("tasks/" + data, parts[0]);
    if (!labels.empty()) {
        if (parts.size() > 1)
            writeTemp("tasks/" + labels, parts[1]);
        else
            removeTemp("tasks/" + labels);
    }
    Task task;
    if (!expectLcwErrors([&] { task = loadTask(kind, (tempDir() / "tasks").string()); }))
        return true;
    const TaskEncoder bytes = [](const std::string& text, bool bos) {
        std::vector<int32_t> ids;
        if (bos) ids.push_back(1);
        for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
        return ids;
    };
    expectLcwErrors([&] { (void)prepareTask(task, bytes, limit, 1234); });
    return false;
}

inline const std::map<std::string, std::function<bool(std::string_view)>>& drivers() {
    static const std::map<std::string, std::function<bool(std::string_view)>> m = {
        {"gguf", driveGguf},
        {"safetensors", driveSafetensors},
        {"hf_config", driveHfConfig},
        {"tokenizer", driveTokenizer},
        {"llama2c", driveLlama2c},
        {"npy", driveNpy},
        {"stats", driveStats},
        {"project", driveProject},
        {"results", driveResults},
        {"recipe", driveRecipe},
        {"overlay", driveOverlay},
        {"hf_quant", driveHfQuant},
        {"llmc_recipe", driveLlmcRecipe},
        {"study", driveStudy},
        {"imatrix", driveImatrix},
        {"tasks", driveTasks}};
    return m;
}

} // namespace lcw::fuzz
