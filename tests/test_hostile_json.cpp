// Hostile JSON and hostile patterns (issue 22): a million-deep `[[[[...` in any JSON lcw reads
// ends in a FormatError naming the file ("nested deeper than 64 levels"), quickly and without a
// stack overflow; user regexes (recipe "re:" targets, GGUF mix --tensor-type rules) match in
// linear time (RE2), so `(.*)*x` against a long name returns at once; invalid patterns are
// refused with an error naming them; the pattern semantics of recipes are unchanged.
#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/common/pattern.h"
#include "core/compress/recipe.h"
#include "core/eval/results_store.h"
#include "core/export/gguf_mix.h"
#include "core/io/hf_config.h"
#include "core/io/model_metadata.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>

namespace fs = std::filesystem;

namespace {

constexpr size_t kDeep = 1000000;

std::string deepArray(size_t n) {
    return std::string(n, '[') + std::string(n, ']');
}
std::string deepObject(size_t n) {
    std::string s;
    s.reserve(n * 6 + 2);
    for (size_t i = 0; i < n; ++i) s += "{\"a\":";
    s += "1";
    s.append(n, '}');
    return s;
}

/// Runs f; "" when it threw an lcw::Error whose what() holds every phrase (and, with
/// `formatPath`, a FormatError naming that path), else what happened instead. Also fails when
/// f took longer than `maxSeconds`.
std::string check(const std::function<void()>& f, std::vector<std::string> phrases,
                  const std::string& formatPath = {}, double maxSeconds = 5.0) {
    const auto t0 = std::chrono::steady_clock::now();
    std::string msg;
    try {
        f();
        return "no exception";
    } catch (const lcw::FormatError& e) {
        msg = e.what();
        if (!formatPath.empty() && e.path() != formatPath)
            return "FormatError names " + e.path() + ", not " + formatPath + ": " + msg;
    } catch (const lcw::Error& e) {
        if (!formatPath.empty()) return std::string("not a FormatError: ") + e.what();
        msg = e.what();
    } catch (const std::exception& e) {
        return std::string("non-lcw exception: ") + e.what();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > maxSeconds) return "took " + std::to_string(s) + " s: " + msg;
    for (const auto& p : phrases)
        if (msg.find(p) == std::string::npos) return "missing '" + p + "' in: " + msg;
    return {};
}

#define EXPECT_ERR(expr, path, ...)                                                                \
    do {                                                                                           \
        const std::string r_ = check([&] { (void)(expr); }, {__VA_ARGS__}, path);                  \
        QVERIFY2(r_.empty(), r_.c_str());                                                          \
    } while (0)

const char* kTooDeep = "nested deeper than 64 levels";

/// Seconds f takes.
double timed(const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// A copy of the bundled demo model (config.json, tokenizer.json, model.safetensors).
std::string demoCopy(const std::string& tag) {
    const std::string dir = lcwtest::tempDir(tag);
    for (const auto& e : fs::directory_iterator(lcwtest::demoModelPath()))
        fs::copy_file(e.path(), fs::path(dir) / e.path().filename());
    return dir;
}

/// A tokenizer.json (the demo's) whose normalizer is `levels` Sequences nested in each other.
std::string nestedSequenceTokenizer(int levels) {
    nlohmann::json doc = lcw::readJsonFile(lcwtest::demoModelPath() + "/tokenizer.json");
    nlohmann::json n = doc["normalizer"].is_null()
                           ? nlohmann::json{{"type", "Sequence"}, {"normalizers", {}}}
                           : doc["normalizer"];
    for (int i = 0; i < levels; ++i)
        n = nlohmann::json{{"type", "Sequence"}, {"normalizers", nlohmann::json::array({n})}};
    doc["normalizer"] = n;
    return doc.dump();
}

int depthOf(const nlohmann::json& j) {
    int d = 0;
    if (j.is_structured())
        for (const auto& c : j) d = std::max(d, depthOf(c));
    return j.is_structured() ? d + 1 : 0;
}

} // namespace

class TestHostileJson : public QObject {
    Q_OBJECT
private slots:
    // ---------------- the parse helper ----------------
    void depthLimitIsExact() {
        const std::string ok = std::string(64, '[') + std::string(64, ']');
        QCOMPARE(depthOf(lcw::parseJsonText(ok, "ok.json")), 64);
        const std::string deep = std::string(65, '[') + std::string(65, ']');
        try {
            lcw::parseJsonText(deep, "deep.json", 100);
            QFAIL("65 levels were accepted");
        } catch (const lcw::FormatError& e) {
            QCOMPARE(QString::fromStdString(e.path()), QStringLiteral("deep.json"));
            QVERIFY2(e.problem().find(kTooDeep) != std::string::npos, e.what());
            QCOMPARE(e.offset(), uint64_t(100 + 64)); // the 65th '[' (plus the base offset)
        }
        // Brackets inside strings do not count; objects count like arrays.
        const std::string inString = "[\"" + std::string(1000, '[') + "\\\"{{{\"]";
        QCOMPARE(lcw::parseJsonText(inString, "s.json")[0].get<std::string>().size(),
                 size_t(1000 + 4));
        QVERIFY(
            check([] { lcw::parseOrderedJsonText(deepObject(65), "o.json"); }, {kTooDeep}, "o.json")
                .empty());
        QCOMPARE(depthOf(lcw::parseJsonText(deepObject(64), "o.json")), 64);
        // Syntax errors keep their message and offset.
        EXPECT_ERR(lcw::parseJsonText("{\"a\": }", "bad.json"), "bad.json", "not valid JSON");
    }

    void millionDeepIsRefusedQuickly() {
        for (const std::string& text : {deepArray(kDeep), deepObject(kDeep)}) {
            // The parse stops at level 65: no deep document is ever built, copied or destroyed.
            const double s = timed([&] {
                EXPECT_ERR(lcw::parseJsonText(text, "x.json"), "x.json", kTooDeep);
                EXPECT_ERR(lcw::parseOrderedJsonText(text, "y.json"), "y.json", kTooDeep);
            });
            QVERIFY2(s < 2.0, qPrintable(QString::number(s)));
        }
        // Unterminated: the limit comes first as well (no 10^6-deep partial document).
        EXPECT_ERR(lcw::parseJsonText(std::string(kDeep, '['), "u.json"), "u.json", kTooDeep);
    }

    // ---------------- every reader of user JSON ----------------
    void deepConfigJson() {
        const std::string dir = demoCopy("deep-config");
        const std::string cfg = dir + "/config.json";
        lcw::writeFileAtomic(cfg, deepArray(kDeep));
        EXPECT_ERR(lcw::readHfConfig(cfg), cfg, kTooDeep);
        EXPECT_ERR(lcw::Model::load(dir), cfg, kTooDeep);
        EXPECT_ERR(lcw::readModelMetadata(dir), cfg, kTooDeep);
        lcw::writeFileAtomic(cfg, deepObject(kDeep));
        EXPECT_ERR(lcw::Model::load(dir), cfg, kTooDeep);
        // The CLI reports it and exits 1 (was a stack overflow).
        const auto r = lcwtest::runCli({"info", QString::fromStdString(dir)}, 30000);
        QVERIFY2(r.code == 1, r.err.constData());
        QVERIFY2(r.err.contains("config.json") && r.err.contains(kTooDeep), r.err.constData());
    }

    void deepTokenizerJson() {
        const std::string dir = lcwtest::tempDir("deep-tok");
        const std::string tok = dir + "/tokenizer.json";
        lcw::writeFileAtomic(tok, deepArray(kDeep));
        EXPECT_ERR(lcw::Tokenizer::fromHfJson(tok), tok, kTooDeep);
        lcw::writeFileAtomic(tok, deepObject(kDeep));
        EXPECT_ERR(lcw::Tokenizer::fromHfJson(tok), tok, kTooDeep);
        // Deep inside a valid tokenizer: normalizer Sequences nested 40 deep (81 levels).
        lcw::writeFileAtomic(tok, nestedSequenceTokenizer(40));
        EXPECT_ERR(lcw::Tokenizer::fromHfJson(tok), tok, kTooDeep);
        // 300000 nested Sequences: the loader's recursion used to overflow the stack (SIGSEGV).
        {
            nlohmann::json doc = lcw::readJsonFile(lcwtest::demoModelPath() + "/tokenizer.json");
            doc["normalizer"] = "@";
            std::string text = doc.dump();
            constexpr size_t n = 300000;
            std::string seq;
            seq.reserve(n * 40);
            for (size_t i = 0; i < n; ++i) seq += R"({"type":"Sequence","normalizers":[)";
            seq += R"({"type":"Lowercase"})";
            for (size_t i = 0; i < n; ++i) seq += "]}";
            text.replace(text.find("\"@\""), 3, seq);
            lcw::writeFileAtomic(tok, text);
            EXPECT_ERR(lcw::Tokenizer::fromHfJson(tok), tok, kTooDeep);
        }
        // Nested Sequences within the limit still load (the loader recurses into them).
        lcw::writeFileAtomic(tok, nestedSequenceTokenizer(20));
        QVERIFY(lcw::Tokenizer::fromHfJson(tok)->vocabSize() > 0);
        // A model folder with such a tokenizer: an error naming it (or a warning), never a crash.
        const std::string m = demoCopy("deep-tok-model");
        lcw::writeFileAtomic(m + "/tokenizer.json", deepArray(kDeep));
        const auto r = lcwtest::runCli({"info", QString::fromStdString(m)}, 30000);
        QVERIFY2(r.code == 0 || r.code == 1, r.err.constData());
        const QByteArray all = r.out + r.err; // a warning (continuing without a tokenizer)
        QVERIFY2(all.contains("tokenizer.json") && all.contains(kTooDeep), r.err.constData());
    }

    void legitTokenizersStillLoad() {
        // Real tokenizer.json files (BPE with byte-level and Metaspace pipelines).
        int loaded = 0;
        for (const char* rel : {"models/tiny-random/gpt2/model/tokenizer.json",
                                "models/stories260K/hf/tokenizer.json",
                                "models/tiny-random/qwen2_sharded/model/tokenizer.json"}) {
            const std::string p = lcwtest::sharedPath(rel);
            if (!lcwtest::exists(p)) continue;
            auto t = lcw::Tokenizer::fromHfJson(p);
            QVERIFY(t->vocabSize() > 0);
            QVERIFY(!t->encode("Hello world, once upon a time").empty());
            ++loaded;
        }
        auto demo = lcw::Tokenizer::fromHfJson(lcwtest::demoModelPath() + "/tokenizer.json");
        QVERIFY(!demo->encode("Once upon a time").empty());
        if (loaded == 0) QSKIP("shared tokenizers not found (set LCW_SHARED_DIR)");
    }

    void deepRecipe() {
        const std::string dir = lcwtest::tempDir("deep-recipe");
        const std::string p = dir + "/r.json";
        lcw::writeFileAtomic(p, deepObject(kDeep));
        EXPECT_ERR(lcw::compress::Recipe::load(p), p, kTooDeep);
        // Deep inside a valid recipe: a rule section.
        std::string rule = std::string(100, '[') + std::string(100, ']');
        lcw::writeFileAtomic(p, R"({"lcw_recipe": 1, "name": "d", "rules": [{"targets": ["*"],
            "weight": {"bits": 4, "x": )" +
                                    rule + "}}]}");
        EXPECT_ERR(lcw::compress::Recipe::load(p), p, kTooDeep);
        const auto r = lcwtest::runCli({"recipe", "check", QString::fromStdString(p)}, 30000);
        QVERIFY2(r.code == 1, r.err.constData());
        QVERIFY2(r.err.contains("r.json") && r.err.contains(kTooDeep), r.err.constData());
    }

    void deepResultsLine() {
        const std::string dir = lcwtest::tempDir("deep-results");
        const std::string p = dir + "/results.jsonl";
        lcw::writeFileAtomic(p, "{\"id\": \"a\"}\n" + deepObject(kDeep) + "\n" +
                                    "{\"id\": \"b\", \"x\": " + deepArray(kDeep) + "}\n" +
                                    "{\"id\": \"c\"}\n");
        lcw::ResultsFile f;
        const double s = timed([&] { f = lcw::loadResults(p); });
        QVERIFY2(s < 5.0, qPrintable(QString::number(s)));
        QCOMPARE(f.records.size(), size_t(2)); // the deep lines are skipped, not the others
        QCOMPARE(f.records[1]["id"].get<std::string>(), std::string("c"));
        QCOMPARE(f.warnings.size(), size_t(2));
        QVERIFY2(f.warnings[0].find(p + ": line 2: ") == 0, f.warnings[0].c_str());
        QVERIFY2(f.warnings[0].find(kTooDeep) != std::string::npos, f.warnings[0].c_str());
        QVERIFY2(f.warnings[1].find(p + ": line 3: ") == 0, f.warnings[1].c_str());
        const auto r =
            lcwtest::runCli({"results", "list", "--results", QString::fromStdString(p)}, 30000);
        QVERIFY2(r.code == 0, r.err.constData());
        QVERIFY2(r.err.contains("line 2") && r.err.contains(kTooDeep), r.err.constData());
    }

    void deepSafetensorsHeader() {
        const std::string dir = lcwtest::tempDir("deep-st");
        const std::string p = dir + "/model.safetensors";
        const std::string header = deepObject(kDeep);
        std::string bytes(8, '\0');
        const uint64_t n = header.size();
        std::memcpy(bytes.data(), &n, 8);
        bytes += header;
        lcw::writeFileAtomic(p, bytes);
        try {
            lcw::readSafetensors(p);
            QFAIL("a million-deep header was accepted");
        } catch (const lcw::FormatError& e) {
            QCOMPARE(QString::fromStdString(e.path()), QString::fromStdString(p));
            QVERIFY2(e.problem().find(kTooDeep) != std::string::npos, e.what());
            QCOMPARE(e.offset(), uint64_t(8 + 64 * 5)); // the 65th '{' (file offset)
        }
        // The index of a sharded model too.
        const std::string idx = dir + "/model.safetensors.index.json";
        lcw::writeFileAtomic(idx, deepArray(kDeep));
        EXPECT_ERR(lcw::readSafetensorsIndex(idx), idx, kTooDeep);
    }

    void deepProjectPartText() {
        // The GUI parses the JSON parts of a project (recipes, results, UI state) with the same
        // helper, naming the project and the part; this checks the text it gets.
        const std::string part = "/tmp/p.lcwproj (part editor_recipe)";
        EXPECT_ERR(lcw::parseJsonText(deepObject(kDeep), part), part, kTooDeep);
    }

    // ---------------- patterns ----------------
    void catastrophicRecipePatternIsFast() {
        lcw::compress::Rule r;
        r.targets = {"re:(.*)*x"};
        const std::string name(5000, 'a');
        bool hit = true;
        const double s = timed([&] { hit = r.matches(name); });
        QVERIFY(!hit);
        QVERIFY2(s < 1.0, qPrintable(QString::number(s)));
        r.targets = {"re:(a|aa)+$", "re:(a+)+b"};
        QVERIFY2(timed([&] { hit = r.matches(name + "!"); }) < 1.0, "nested quantifiers");
        QVERIFY(!hit);
        r.targets = {"re:(a+)+"};
        QVERIFY(r.matches(name));
        // Through a whole recipe (validation + plan), as `lcw-cli recipe check` does.
        const nlohmann::json j = {
            {"lcw_recipe", 1},
            {"name", "slow?"},
            {"rules",
             {{{"targets", {"re:(.*)*x", "re:([a-z]+)*[0-9]"}}, {"weight", {{"bits", 4}}}}}}};
        QVERIFY2(timed([&] { (void)lcw::compress::Recipe::fromJson(j); }) < 1.0, "validation");
    }

    void catastrophicGgufMixRuleIsFast() {
        using namespace lcw;
        GgufMixModel model;
        model.arch = "llama";
        model.nLayer = 1;
        model.nHead = 4;
        model.nHeadKv = 4;
        const std::string longName = "blk.0." + std::string(5000, 'a') + ".weight";
        std::vector<GgufMixTensor> tensors = {{"token_embd.weight", {256, 64}, DType::F32},
                                              {"blk.0.attn_q.weight", {256, 256}, DType::F32},
                                              {longName, {256, 256}, DType::F32},
                                              {"output.weight", {256, 64}, DType::F32}};
        GgufMixOptions o;
        o.tensorTypes = {{"(.*)*x", DType::Q8_0}, {"([a-z]+)*[0-9]z", DType::Q8_0}};
        GgufMix mix;
        const double s = timed([&] { mix = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o); });
        QVERIFY2(s < 1.0, qPrintable(QString::number(s)));
        QVERIFY(mix.find(longName)->source != GgufMixSource::Regex);
        // Search semantics (std::regex_search) as before: a part of the name matches.
        o.tensorTypes = {{"a{100}", DType::Q8_0}, {"attn_q", DType::Q5_K}};
        mix = chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o);
        QCOMPARE(mix.find(longName)->source, GgufMixSource::Regex);
        QCOMPARE(int(mix.find(longName)->type), int(DType::Q8_0));
        QCOMPARE(int(mix.find("blk.0.attn_q.weight")->type), int(DType::Q5_K));
        // Invalid: named in the error.
        o.tensorTypes = {{"attn_(q", DType::Q8_0}};
        try {
            chooseGgufMix(LlamaFtype::Q4_K_M, model, tensors, o);
            QFAIL("invalid regex accepted");
        } catch (const ArgumentError& e) {
            QVERIFY2(std::string(e.what()).find("invalid tensor-type regex 'attn_(q'") == 0,
                     e.what());
        }
    }

    void invalidPatternsNameThePattern() {
        using lcw::compress::Recipe;
        using lcw::compress::RecipeError;
        auto recipeWith = [](const std::string& target) {
            return nlohmann::json{
                {"lcw_recipe", 1},
                {"name", "r"},
                {"rules",
                 {{{"targets", {"*"}}, {"weight", {{"bits", 4}}}},
                  {{"targets", {"layers.0.*", target}}, {"weight", {{"bits", 8}}}}}}};
        };
        for (const auto& [pat, phrase] :
             std::vector<std::pair<std::string, std::string>>{{"re:layers.(", "missing )"},
                                                              {"re:(a)\\1", "backreferences"},
                                                              {"re:(?=x)y", "lookaround"},
                                                              {"re:a**", ""}}) {
            try {
                (void)Recipe::fromJson(recipeWith(pat));
                QFAIL(qPrintable(QString::fromStdString("accepted " + pat)));
            } catch (const RecipeError& e) {
                const std::string w = e.what();
                QVERIFY2(w.find("recipe rule 1, field targets[1]") == 0, w.c_str());
                QVERIFY2(w.find("invalid regex '" + pat.substr(3) + "'") != std::string::npos,
                         w.c_str());
                QVERIFY2(w.find(phrase) != std::string::npos, w.c_str());
            }
        }
        try {
            lcw::Regex r("x(");
            QFAIL("compiled x(");
        } catch (const lcw::RegexError& e) {
            QCOMPARE(QString::fromStdString(e.pattern()), QStringLiteral("x("));
            QVERIFY(std::string(e.what()).find("invalid regex 'x(': ") == 0);
        }
    }

    void patternSemanticsUnchanged() {
        using lcw::namePatternMatches;
        // "re:" is a full match, case-sensitive (std::regex_match before).
        QVERIFY(namePatternMatches("re:layers\\.[0-9]+\\.attn\\..*", "layers.3.attn.q"));
        QVERIFY(!namePatternMatches("re:layers\\.[0-9]+\\.attn\\..*", "xlayers.3.attn.q"));
        QVERIFY(!namePatternMatches("re:attn", "layers.3.attn.q"));
        QVERIFY(namePatternMatches("re:.*attn.*", "layers.3.attn.q"));
        QVERIFY(!namePatternMatches("re:.*ATTN.*", "layers.3.attn.q"));
        QVERIFY(namePatternMatches("re:layers\\.(1|2)\\.mlp\\.(up|down)", "layers.2.mlp.down"));
        QVERIFY(namePatternMatches("re:layers\\.\\d+\\.mlp\\.\\w+", "layers.12.mlp.gate"));
        QVERIFY(namePatternMatches("re:layers\\.[0-3]\\..*?", "layers.3.mlp.gate"));
        QVERIFY(namePatternMatches("re:a|b", "b"));
        QVERIFY(!namePatternMatches("re:a|b", "ab"));
        // Globs: '*' crosses dots, '?' one character, the rest literal; whole name.
        QVERIFY(namePatternMatches("layers.*.mlp.down", "layers.10.mlp.down"));
        QVERIFY(namePatternMatches("*", "embed"));
        QVERIFY(namePatternMatches("layers.?.attn.*", "layers.1.attn.o"));
        QVERIFY(!namePatternMatches("layers.?.attn.*", "layers.10.attn.o"));
        QVERIFY(!namePatternMatches("layers.*.mlp", "layers.1.mlp.up"));
        QVERIFY(namePatternMatches("*.mlp.*", "layers.1.mlp.up"));
        QVERIFY(!namePatternMatches("layers.[0].mlp.up", "layers.0.mlp.up"));
        QVERIFY(namePatternMatches("layers.[0].mlp.up", "layers.[0].mlp.up"));
        QVERIFY(!namePatternMatches("", "x"));
        QVERIFY(namePatternMatches("", ""));
        // Through Rule::matches: ignore, and the explicit-only names.
        lcw::compress::Rule r;
        r.targets = {"re:layers\\.[01]\\..*"};
        r.ignore = {"*.mlp.down"};
        QVERIFY(r.matches("layers.1.attn.q"));
        QVERIFY(!r.matches("layers.1.mlp.down"));
        QVERIFY(!r.matches("layers.2.attn.q"));
        r.targets = {"re:.*"};
        r.ignore.clear();
        QVERIFY(!r.matches("embed")); // embed / lm_head only by their exact name
        r.targets = {"embed"};
        QVERIFY(r.matches("embed"));
        // Globs as anchored regexes (the GUI filter) match the same names.
        const lcw::Regex g(lcw::Regex::fromGlob("layers.*.attn.?"), lcw::Regex::Case::Insensitive);
        QVERIFY(g.search("LAYERS.3.attn.q"));
        QVERIFY(!g.search("layers.3.attn.qq"));
        QVERIFY(lcw::Regex(lcw::Regex::escape("a.b(c)*")).fullMatch("a.b(c)*"));
        QVERIFY(!lcw::Regex(lcw::Regex::escape("a.b")).fullMatch("axb"));
        std::string g1;
        QVERIFY(lcw::Regex("layers\\.(\\d+)\\..*").fullMatch("layers.17.mlp.up", &g1));
        QCOMPARE(g1, std::string("17"));
    }

    void layerIndexIsChecked() {
        QCOMPARE(lcw::layerIndexOf("layers.17.mlp.up").value_or(-1), 17);
        QCOMPARE(lcw::layerIndexOf("layers.0.").value_or(-1), 0);
        QVERIFY(!lcw::layerIndexOf("layers.17"));
        QVERIFY(!lcw::layerIndexOf("layers..mlp"));
        QVERIFY(!lcw::layerIndexOf("xlayers.1.mlp"));
        QVERIFY(!lcw::layerIndexOf("layers.-1.mlp"));
        // Was std::stoi: std::out_of_range escaped the recipe planner.
        QVERIFY(!lcw::layerIndexOf("layers.99999999999999999999.mlp.up"));
    }
};

QTEST_GUILESS_MAIN(TestHostileJson)
#include "test_hostile_json.moc"
