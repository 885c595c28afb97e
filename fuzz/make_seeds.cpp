// lcw_fuzz_make_seeds OUTDIR: writes small valid inputs for the fuzz targets with lcw's own
// writers, from the bundled stories260K: overlays (json + split + safetensors) of several
// presets, GGUF exports, a statistics store, a project holding it, a results store, .npy
// arrays, a tiny llama2.c checkpoint + tokenizer.bin, the built-in presets as recipes, and an
// imatrix of the base model (one entry per weight llama-imatrix collects).
// Each seed goes to OUTDIR/<target>/gen-<what>. A seed that fails is reported and skipped.
#include "fuzz/fuzz_base_model.h"
#include "fuzz/fuzz_common.h"

#include "core/common/npy.h"
#include "core/common/progress.h"
#include "core/compress/compressed_model.h"
#include "core/compress/imatrix.h"
#include "core/compress/recipe.h"
#include "core/eval/results_store.h"
#include "core/export/gguf_export.h"
#include "core/io/llama2c.h"
#include "core/io/safetensors.h"
#include "core/project/project.h"
#include "core/stats/stats_engine.h"
#include "core/tokenizer/tokenizer.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

namespace fs = std::filesystem;
using namespace lcw;

namespace {

fs::path g_out;

std::string readAll(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void put(const std::string& target, const std::string& name, const std::string& bytes) {
    fs::create_directories(g_out / target);
    std::ofstream(g_out / target / ("gen-" + name), std::ios::binary) << bytes;
}

void step(const std::string& what, const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lcw_fuzz_make_seeds: %s skipped: %s\n", what.c_str(), e.what());
    }
}

std::string split() {
    return std::string(fuzz::kSplit);
}

/// Overlays of presets that need no calibration, and recipes of every preset.
void seedOverlaysAndRecipes(const Model& base, const fs::path& tmp) {
    NullProgress np;
    int n = 0;
    for (const auto& p : compress::presets()) {
        put("recipe", "preset-" + p.name + ".json", p.recipe.toJson().dump(2));
        step("overlay " + p.name, [&] {
            if (compress::planRecipe(p.recipe, base).needsCalibration() || n >= 8) return;
            auto r = compress::compress(base, p.recipe, np);
            const fs::path dir = tmp / ("ov-" + p.name);
            r.model->save(dir.string());
            const std::string st = readAll(dir / "overlay.safetensors");
            if (st.size() > 600000) return;
            put("overlay", p.name, readAll(dir / "overlay.json") + split() + st);
            ++n;
        });
    }
}

/// GGUF exports.
void seedGguf(const Model& base, const fs::path& tmp) {
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::IQ4_NL, DType::F16}) {
        const std::string name = std::string(dtypeName(t));
        step("gguf " + name, [&] {
            GgufExportOptions o;
            o.path = (tmp / ("m-" + name + ".gguf")).string();
            o.type = t;
            exportGguf(base, base, o);
            put("gguf", name + ".gguf", readAll(o.path));
        });
    }
}

/// Statistics store and a project holding it.
void seedStatsAndProject(const Model& base, const fs::path& tmp) {
    NullProgress np;
    std::string statsBytes;
    step("stats", [&] {
        stats::StatsOptions so;
        so.calibration.samples = 2;
        so.calibration.seqLen = 32;
        stats::StatsReport rep;
        const std::string path = (tmp / "s.h5").string();
        stats::computeAndSaveStats(base, so, path, rep, np);
        put("stats", "stats.h5", readAll(path));
        // A small one: weights of block 0 only, 16 histogram bins.
        so.activations = false;
        so.weight.histBins = 16;
        so.weight.filter = [](const TensorView& t) {
            return t.shape.size() == 2 && t.name.rfind("layers.0.", 0) == 0;
        };
        stats::computeAndSaveStats(base, so, path, rep, np);
        statsBytes = readAll(path);
        put("stats", "stats-small.h5", statsBytes);
    });
    step("project", [&] {
        project::Project p;
        p.modelPath = base.path();
        p.modelFingerprint = "sha256:0123";
        p.statsFile.assign(statsBytes.begin(), statsBytes.end());
        p.statsName = "stats.h5";
        p.recipes.push_back({"w4", compress::presets().front().recipe.toJson().dump()});
        p.results.push_back({"r1", R"({"id":"x","ppl":12.5})"});
        p.uiState = R"({"tab":2})";
        const std::string path = (tmp / "p.lcwproj").string();
        project::save(path, p);
        put("project", "project.h5", readAll(path));
        p.statsFile.clear();
        project::save(path, p);
        put("project", "project-nostats.h5", readAll(path));
    });
}

/// Results store.
void seedResults(const Model& base, const fs::path& tmp) {
    step("results", [&] {
        const std::string path = (tmp / "results.jsonl").string();
        appendResult(path,
                     {{"kind", "eval"},
                      {"model", base.path()},
                      {"baseline", {{"ppl", 12.5}, {"bytes", 1045040}}},
                      {"configs", {{{"name", "W4A16-g64"}, {"ppl", 13.1}, {"bytes", 300000}}}}});
        appendResult(path, {{"id", "20261204-120000-abcdef"}, {"kind", "compare"}, {"value", 1}});
        put("results", "results.jsonl", readAll(path));
    });
}

/// An imatrix made for the base model (checkImatrix accepts it; importanceFor finds every
/// linear), with the trailer llama-imatrix writes.
void seedImatrix(const Model& base, const fs::path& tmp) {
    step("imatrix", [&] {
        compress::Imatrix m;
        int32_t k = 0;
        for (const auto& t : compress::imatrixTargets(base)) {
            compress::ImatrixEntry e;
            e.name = t.name;
            e.ncall = 4;
            for (int64_t j = 0; j < t.cols * t.experts; ++j) e.values.push_back(float(++k % 7));
            m.entries.push_back(std::move(e));
        }
        m.chunks = 4;
        m.dataset = "calib.txt";
        const std::string path = (tmp / "imatrix.dat").string();
        compress::writeImatrix(m, path);
        put("imatrix", "demo.dat", readAll(path));
    });
}

/// .npy arrays.
void seedNpy(const Model& /*base*/, const fs::path& tmp) {
    NullProgress np;
    step("npy", [&] {
        const std::vector<float> v = {1, -2, 3.5f, 0, 1e-3f, 7};
        const std::string a = (tmp / "a.npy").string(), b = (tmp / "b.npy").string();
        writeNpyF32(a, {2, 3}, v.data());
        writeNpyF32(b, {6}, v.data());
        put("npy", "2x3.npy", readAll(a));
        put("npy", "6.npy", readAll(b));
    });
}

/// Small safetensors files.
void seedSafetensors(const Model& /*base*/, const fs::path& tmp) {
    step("safetensors", [&] {
        std::vector<float> f(24);
        for (size_t i = 0; i < f.size(); ++i) f[i] = float(i) * 0.5f;
        TensorView a;
        a.name = "a";
        a.dtype = DType::F32;
        a.shape = {4, 6};
        a.data = reinterpret_cast<const std::byte*>(f.data());
        a.nbytes = f.size() * 4;
        TensorView b = a;
        b.name = "model.layers.0.self_attn.q_proj.weight";
        b.dtype = DType::I32;
        b.shape = {2, 3};
        b.nbytes = 24;
        const std::string path = (tmp / "t.safetensors").string();
        writeSafetensors(path, std::vector<TensorView>{a, b}, {{"format", "pt"}});
        put("safetensors", "small.safetensors", readAll(path));
    });
}

/// Tiny llama2.c checkpoint (v0: 7 int32 + zero weights) with the bundled tokenizer's
/// vocabulary as tokenizer.bin.
void seedLlama2c(const Model& base, const fs::path& /*tmp*/) {
    step("llama2c", [&] {
        const auto& tok = base.tokenizer();
        const GgufVocab gv = tok.ggufVocab();
        const int32_t vocab = int32_t(gv.tokens.size());
        const int32_t dim = 8, hidden = 16, layers = 1, heads = 2, kv = 2, seq = 16;
        const int32_t hdr[7] = {dim, hidden, layers, heads, kv, vocab, seq};
        Llama2cConfig c;
        c.dim = dim;
        c.hiddenDim = hidden;
        c.nLayers = layers;
        c.nHeads = heads;
        c.nKvHeads = kv;
        c.vocabSize = vocab;
        c.seqLen = seq;
        std::string ck(size_t(llama2cExpectedBytes(c, "tiny.bin")), '\0');
        std::memcpy(ck.data(), hdr, sizeof hdr);
        std::string tb;
        auto i32 = [&](int32_t v) { tb.append(reinterpret_cast<const char*>(&v), 4); };
        auto f32 = [&](float v) { tb.append(reinterpret_cast<const char*>(&v), 4); };
        int32_t maxLen = 1;
        for (const auto& s : gv.tokens) maxLen = std::max<int32_t>(maxLen, int32_t(s.size()));
        i32(maxLen);
        for (size_t i = 0; i < gv.tokens.size(); ++i) {
            f32(i < gv.scores.size() ? gv.scores[i] : 0.f);
            i32(int32_t(gv.tokens[i].size()));
            tb += gv.tokens[i];
        }
        put("llama2c", "tiny.bin", ck + split() + tb);
        put("llama2c", "tiny-ckpt-only.bin", ck);
    });
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    g_out = argv[1];
    const Model& base = fuzz::baseModel();
    const fs::path tmp = fuzz::tempDir();
    for (auto* seed : {seedOverlaysAndRecipes, seedGguf, seedStatsAndProject, seedResults,
                       seedImatrix, seedNpy, seedSafetensors, seedLlama2c})
        seed(base, tmp);
    std::printf("lcw_fuzz_make_seeds: seeds written under %s\n", g_out.string().c_str());
    return 0;
}
