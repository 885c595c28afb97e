// lcw-cli export --format llmcompressor: the llm-compressor recipe YAML that reproduces an lcw
// recipe on the full model; lcw-cli recipe import: such a YAML back into an lcw recipe.
#include "args.h"
#include "commands.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/compress/recipe.h"
#include "core/export/gguf_preset.h"
#include "core/export/llmcompressor.h"
#include "core/io/atomic_writer.h"
#include "core/model/model.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>

namespace lcw::cli {

using json = nlohmann::json;

bool isLlmCompressorExport(const std::vector<std::string>& argv) {
    for (size_t i = 0; i + 1 < argv.size(); ++i)
        if (argv[i] == "--format" && argv[i + 1] == "llmcompressor") return true;
    for (const auto& s : argv)
        if (s == "--format=llmcompressor") return true;
    return false;
}

int cmdExportLlmCompressor(const std::vector<std::string>& argv) {
    Args a(argv,
           {"--tokenizer", "--threads", "--recipe", "--preset", "--overlay", "--format", "--out"},
           {"--quiet", "--json"});
    const auto out = a.get("--out");
    if (!out) throw UsageError{"--out recipe.yaml is required"};
    if (int(a.has("--recipe")) + int(a.has("--preset")) + int(a.has("--overlay")) != 1)
        throw UsageError{"--format llmcompressor needs one of --recipe R.json, --preset P and "
                         "--overlay DIR"};
    {
        std::error_code ec;
        const auto dir = std::filesystem::path(*out).parent_path();
        if (!dir.empty() && !std::filesystem::is_directory(dir, ec))
            throw ArgumentError(*out + ": the folder " + dir.string() + " does not exist");
    }
    LoadOptions lo;
    lo.tokenizerPath = a.getOr("--tokenizer", "");
    auto model = Model::load(a.positional(0, "MODEL (a Hugging Face folder)"), lo);
    for (const auto& w : model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
    compress::Recipe recipe;
    exporter::LlmcExportOptions o;
    if (const auto r = a.get("--recipe")) {
        recipe = compress::Recipe::load(*r);
        o.recipeSource = *r;
    } else if (const auto p = a.get("--preset")) {
        recipe = presetRecipe(*model, *p);
        o.recipeSource = "preset " + *p;
    } else {
        // a saved overlay: the recipe it was made with (overlay.json "recipe")
        const std::string file =
            (std::filesystem::path(*a.get("--overlay")) / "overlay.json").string();
        const json j = readJsonFile(file);
        if (!j.contains("recipe") || !j["recipe"].is_object())
            throw FormatError(file, "field recipe: missing (not an lcw overlay)");
        recipe = compress::Recipe::fromJson(j["recipe"]);
        o.recipeSource = "overlay " + *a.get("--overlay");
    }
    const exporter::LlmcExport e = exporter::exportLlmCompressorRecipe(recipe, *model, o);
    exporter::writeLlmCompressorRecipe(*out, e);
    if (a.flag("--json")) {
        json mods = json::array();
        for (const auto& m : e.modifiers)
            mods.push_back(
                {{"stage", m.stage}, {"group", m.group}, {"type", m.type}, {"layers", m.layers}});
        const json j = {{"format", "llmcompressor"},
                        {"out", *out},
                        {"recipe", o.recipeSource},
                        {"arch", model->spec().arch},
                        {"modifiers", mods},
                        {"layers_exported", e.layersExported},
                        {"not_expressible", e.notExpressible},
                        {"approximations", e.approximations},
                        {"warnings", e.warnings}};
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    for (const auto& w : e.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("wrote %s: llm-compressor recipe for %s (%s), %d layers\n", out->c_str(),
                model->path().c_str(), model->spec().arch.c_str(), e.layersExported);
    for (const auto& m : e.modifiers)
        std::printf("  %s.%s: %s%s\n", m.stage.c_str(), m.group.c_str(), m.type.c_str(),
                    m.layers ? (" (" + std::to_string(m.layers) + " layers)").c_str() : "");
    if (e.notExpressible.empty()) {
        std::printf("not expressible: nothing\n");
    } else {
        std::printf("not expressible in llm-compressor (left out of the file):\n");
        for (const auto& l : e.notExpressible) std::printf("  - %s\n", l.c_str());
    }
    if (!e.approximations.empty()) {
        std::printf("written as the closest equivalent:\n");
        for (const auto& l : e.approximations) std::printf("  - %s\n", l.c_str());
    }
    return 0;
}

int cmdRecipeImport(const std::vector<std::string>& argv) {
    Args a(argv, {"--out", "--arch"}, {"--json", "--quiet"});
    const std::string path = a.positional(1, "recipe.yaml (an llm-compressor recipe)");
    const exporter::LlmcImport r =
        exporter::importLlmCompressorRecipeWithWarnings(path, a.getOr("--arch", ""));
    const json rj = r.recipe.toJson();
    if (const auto out = a.get("--out")) {
        AtomicFileWriter w(*out);
        w.write(rj.dump(2) + "\n");
        w.commit();
    }
    if (a.flag("--json")) {
        json j = {{"source", path}, {"recipe", rj}, {"warnings", r.warnings}};
        if (const auto out = a.get("--out")) j["out"] = *out;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (const auto out = a.get("--out"))
        std::printf("wrote %s: %zu rules from %s\n", out->c_str(), r.recipe.rules.size(),
                    path.c_str());
    else
        std::printf("%s\n", rj.dump(2).c_str());
    return 0;
}

} // namespace lcw::cli
