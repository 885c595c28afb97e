// The Qllm-Eval-style study (core/eval/study.h, study_report.h, lcw-cli study): the grid, the
// conclusions on made-up rows against numbers computed here, the report files, the JSON round
// trip, and a small real run on the demo model whose perplexities are checked against the
// perplexity of the same recipes computed on their own.
#include "test_util.h"

#include "core/common/error.h"
#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/compress/calibration.h"
#include "core/compress/compressed_model.h"
#include "core/eval/study.h"
#include "core/eval/study_report.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

#include <QtTest/QtTest>

#include <cmath>
#include <fstream>
#include <set>

using namespace lcw;
using namespace lcw::study;

namespace {

Row made(Group g, const std::string& setting, const std::string& method, double ppl, double kld,
         double basePpl) {
    Row r;
    r.group = g;
    r.setting = setting;
    r.method = method;
    r.ppl = ppl;
    r.kld = kld;
    r.lnPplRatio = std::log(ppl / basePpl); // the per-token mean equals ln of the PPL ratio
    r.sameTop = 0.9;
    r.bitsPerWeight = 4.5;
    r.bytes = 1000;
    return r;
}

/// Baseline PPL 10. Weights lose ×1.04 at W4 (GPTQ), activations ×1.5 from W4A8 to W4A4, the
/// KV cache ×1.01 at KV4: activations are the most sensitive, then weights, then KV.
StudyResult madeUp() {
    StudyResult r;
    r.model = "made-up";
    r.baselinePpl = 10;
    r.baselinePplError = 0.1;
    const double b = 10;
    r.rows = {made(Group::Weight, "W8", "RTN", 10.01, 1e-4, b),
              made(Group::Weight, "W8", "GPTQ", 10.02, 1e-4, b),
              made(Group::Weight, "W4", "RTN", 10.8, 0.05, b),
              made(Group::Weight, "W4", "GPTQ", 10.4, 0.02, b),
              made(Group::Weight, "W2", "RTN", 400, 3.0, b),
              made(Group::Weight, "W2", "GPTQ", 60, 1.5, b),
              made(Group::WeightActivation, "W8A8", "RTN", 10.05, 1e-3, b),
              made(Group::WeightActivation, "W4A8", "RTN", 11.0, 0.06, b),
              made(Group::WeightActivation, "W4A4", "RTN", 16.5, 0.5, b),
              made(Group::WeightActivation, "W4A4", "SmoothQuant", 18.0, 0.6, b),
              made(Group::KvCache, "KV8", "RTN", 10.0, 1e-5, b),
              made(Group::KvCache, "KV4", "RTN", 10.1, 0.004, b),
              made(Group::KvCache, "KV2", "RTN", 14.0, 0.3, b)};
    Row failed = made(Group::KvCache, "KV2", "KIVI", 0, 0, b);
    failed.status = "failed: made-up error";
    r.rows.push_back(failed);
    r.conclusions = conclusions(r);
    return r;
}

const Conclusion* findConclusion(const StudyResult& r, const std::string& id) {
    for (const auto& c : r.conclusions)
        if (c.id == id) return &c;
    return nullptr;
}

} // namespace

class TestStudy : public QObject {
    Q_OBJECT
private slots:
    void gridHasThePapersSettingsAndMethods();
    void conclusionsFollowTheNumbers();
    void jsonRoundTripsAndRefusesOtherFiles();
    void reportWritesHtmlTsvJsonAndPlots();
    void demoStudyMatchesStandalonePerplexity();
    void cliWritesTheReport();
};

void TestStudy::gridHasThePapersSettingsAndMethods() {
    const std::vector<Cell> all = grid({});
    // W8/W4/W3/W2 × RTN, AWQ, GPTQ; W8A8/W4A8/W4A4 × RTN, SmoothQuant, OmniQuant, QuaRot (RTN
    // and GPTQ weights), Atom; KV8/KV4/KV3/KV2 × RTN, KIVI, WKVQuant.
    QCOMPARE(all.size(), size_t(4 * 3 + 3 * 6 + 4 * 3));
    std::set<std::string> settings;
    for (const Cell& c : all) {
        settings.insert(c.setting);
        QCOMPARE(c.calibrated, c.method != "RTN" && c.method != "KIVI" && c.method != "QuaRot");
        QCOMPARE(c.recipe.rotation.has_value(), c.method.rfind("QuaRot", 0) == 0);
        QCOMPARE(c.recipe.rules.size(), size_t(1));
        const auto& rule = c.recipe.rules[0];
        if (c.group == Group::KvCache) {
            QVERIFY(rule.kv && !rule.weight);
            QCOMPARE(rule.kv->at("k_bits").get<int>(), c.bits);
            QCOMPARE(rule.kv->at("k_granularity").get<std::string>(),
                     std::string(c.method == "KIVI" ? "channel" : "token"));
            // WKVQuant: past-only quantisation and the calibrated smoothing
            QCOMPARE(rule.kv->value("past_only", false), c.method == "WKVQuant");
            QCOMPARE(rule.kv->value("smooth", false), c.method == "WKVQuant");
        } else {
            QVERIFY(rule.weight);
            QCOMPARE(rule.weight->at("bits").get<int>(), c.bits);
            QCOMPARE(bool(rule.activation), c.group == Group::WeightActivation);
            if (rule.activation) QCOMPARE(rule.activation->at("bits").get<int>(), c.actBits);
            QCOMPARE(bool(rule.smoothquant), c.method == "SmoothQuant");
            QCOMPARE(bool(rule.outliers), c.method == "Atom");
            if (c.method == "Atom") {
                QCOMPARE(rule.outliers->at("count").get<int64_t>(), int64_t(128));
                QCOMPARE(rule.activation->at("group_size").get<int64_t>(), int64_t(128));
            }
        }
    }
    QCOMPARE(settings, (std::set<std::string>{"W8", "W4", "W3", "W2", "W8A8", "W4A8", "W4A4", "KV8",
                                              "KV4", "KV3", "KV2"}));
    GridOptions o;
    o.groups = {Group::KvCache};
    o.methods = {"kivi"};
    const auto kv = grid(o);
    QCOMPARE(kv.size(), size_t(8)); // RTN stays: every conclusion is relative to it
    o.methods = {"quarot-typo"};
    QVERIFY_THROWS_EXCEPTION(ArgumentError, grid(o));
    QVERIFY_THROWS_EXCEPTION(ArgumentError, parseGroup("weights"));
}

void TestStudy::conclusionsFollowTheNumbers() {
    const StudyResult r = madeUp();
    const Conclusion* s = findConclusion(r, "sensitivity-4bit");
    QVERIFY(s);
    const auto& rank = s->data.at("ranking");
    QCOMPARE(rank.size(), size_t(3));
    QCOMPARE(rank[0].at("type").get<std::string>(), std::string("activations"));
    QCOMPARE(rank[1].at("type").get<std::string>(), std::string("weights"));
    QCOMPARE(rank[2].at("type").get<std::string>(), std::string("KV cache"));
    // Activations: best W4A4 (RTN 16.5) against best W4A8 (11.0): ln(16.5/11).
    QVERIFY(std::abs(rank[0].at("ln_ppl_ratio").get<double>() - std::log(16.5 / 11.0)) < 1e-12);
    QVERIFY(std::abs(rank[1].at("ln_ppl_ratio").get<double>() - std::log(1.04)) < 1e-12);
    QVERIFY(std::abs(rank[2].at("ln_ppl_ratio").get<double>() - std::log(1.01)) < 1e-12);
    QVERIFY(s->text.find("activations") < s->text.find("weights"));
    // With RTN alone: activations ln(16.5/11), weights ln(1.08), KV ln(1.01).
    const Conclusion* rtn = findConclusion(r, "sensitivity-4bit-rtn");
    QVERIFY(rtn);
    QCOMPARE(rtn->data.at("ranking")[1].at("type").get<std::string>(), std::string("weights"));
    QVERIFY(std::abs(rtn->data.at("ranking")[1].at("ln_ppl_ratio").get<double>() - std::log(1.08)) <
            1e-12);

    // Near-lossless (≤ 1.05 × 10): weights down to W4 (GPTQ 10.4), W2 is not; WA only W8A8;
    // KV down to KV4 (KV2 at 14 is not, and its failed KIVI row is ignored).
    const Conclusion* w = findConclusion(r, "lowest-bits-W");
    QVERIFY(w);
    QCOMPARE(w->data.at("setting").get<std::string>(), std::string("W4"));
    QCOMPARE(w->data.at("method").get<std::string>(), std::string("GPTQ"));
    QCOMPARE(findConclusion(r, "lowest-bits-WA")->data.at("setting").get<std::string>(),
             std::string("W8A8"));
    QCOMPARE(findConclusion(r, "lowest-bits-KV")->data.at("setting").get<std::string>(),
             std::string("KV4"));
    // Best method per setting, only where it is not RTN.
    const Conclusion* w2 = findConclusion(r, "best-method-W2");
    QVERIFY(w2);
    QCOMPARE(w2->data.at("method").get<std::string>(), std::string("GPTQ"));
    QCOMPARE(w2->data.at("ppl_rtn").get<double>(), 400.0);
    QVERIFY(!findConclusion(r, "best-method-W4A4")); // SmoothQuant is worse there
    QVERIFY(!findConclusion(r, "best-method-KV4"));

    // Without W4A4 and KV4 there is nothing to rank.
    StudyResult few = r;
    few.rows.erase(std::remove_if(few.rows.begin(), few.rows.end(),
                                  [](const Row& x) { return x.setting != "W4"; }),
                   few.rows.end());
    few.conclusions = conclusions(few);
    QVERIFY(!findConclusion(few, "sensitivity-4bit"));
    QVERIFY(findConclusion(few, "lowest-bits-W"));
}

void TestStudy::jsonRoundTripsAndRefusesOtherFiles() {
    StudyResult r = madeUp();
    r.rows[2].taskAcc["lambada"] = 0.25;
    r.baselineTaskAcc["lambada"] = 0.3;
    r.settings = {{"ctx", 128}};
    const StudyResult back = fromJson(toJson(r), "mem");
    QCOMPARE(back.rows.size(), r.rows.size());
    for (size_t i = 0; i < r.rows.size(); ++i) {
        QCOMPARE(back.rows[i].setting, r.rows[i].setting);
        QCOMPARE(back.rows[i].method, r.rows[i].method);
        QCOMPARE(back.rows[i].status, r.rows[i].status);
        QCOMPARE(back.rows[i].ppl, r.rows[i].ppl);
        QCOMPARE(back.rows[i].lnPplRatio, r.rows[i].lnPplRatio);
        QCOMPARE(back.rows[i].taskAcc, r.rows[i].taskAcc);
    }
    QCOMPARE(back.conclusions.size(), r.conclusions.size());
    QCOMPARE(back.baselineTaskAcc.at("lambada"), 0.3);
    QCOMPARE(back.settings.at("ctx").get<int>(), 128);
    try {
        fromJson(nlohmann::json{{"lcw_recipe", 1}}, "other.json");
        QFAIL("a recipe was read as a study");
    } catch (const FormatError& e) {
        QVERIFY(std::string(e.what()).find("other.json") != std::string::npos);
    }
    nlohmann::json broken = toJson(r);
    broken["rows"][0].erase("ppl");
    QVERIFY_THROWS_EXCEPTION(FormatError, fromJson(broken, "broken.json"));
}

void TestStudy::reportWritesHtmlTsvJsonAndPlots() {
    const StudyResult r = madeUp();
    const std::string dir = lcwtest::tempDir("study-report");
    const ReportFiles f = writeReport(r, dir + "/out");
    // PPL and KLD for each of the three groups.
    QCOMPARE(f.plots.size(), size_t(6));
    for (const auto& p : f.plots) {
        const std::string svg = readTextFile(dir + "/out/" + p);
        QVERIFY(svg.rfind("<svg", 0) == 0);
        QVERIFY(svg.find("</svg>") != std::string::npos);
    }
    // The weight PPL plot spans 10..400 (> 3×): log scale, one line per method.
    const std::string wppl = svgPlot(r, Group::Weight, PlotMetric::Ppl);
    QVERIFY(wppl.find("log scale") != std::string::npos);
    size_t lines = 0;
    for (size_t at = 0; (at = wppl.find("<polyline", at)) != std::string::npos; ++at) ++lines;
    QCOMPARE(lines, size_t(2)); // RTN, GPTQ
    QVERIFY(wppl.find("unquantised") != std::string::npos);
    QVERIFY(svgPlot(StudyResult{}, Group::Weight, PlotMetric::Ppl).empty());

    const std::string tsvText = readTextFile(f.tsv);
    std::vector<std::string> rows;
    std::istringstream in(tsvText);
    for (std::string line; std::getline(in, line);) rows.push_back(line);
    QCOMPARE(rows.size(), r.rows.size() + 1);
    auto fields = [](const std::string& s) { return std::count(s.begin(), s.end(), '\t') + 1; };
    for (const auto& row : rows) QCOMPARE(fields(row), fields(rows[0]));
    QVERIFY(rows[3].find("W4\tRTN") != std::string::npos);
    QVERIFY(rows[3].find("\t1.08\t") != std::string::npos); // ppl_ratio 10.8 / 10

    const std::string page = readTextFile(f.html);
    for (const auto& p : f.plots) QVERIFY(page.find("<img src=\"" + p + "\"") != std::string::npos);
    for (const auto& c : r.conclusions)
        QVERIFY(page.find(c.text.substr(0, 30)) != std::string::npos);
    QVERIFY(page.find("failed: made-up error") != std::string::npos);
    QCOMPARE(fromJson(readJsonFile(f.json), f.json).rows.size(), r.rows.size());
}

void TestStudy::demoStudyMatchesStandalonePerplexity() {
    auto model = Model::load(lcwtest::demoModelPath());
    const Tokenizer& tk = model->tokenizer();
    StudyInputs in;
    in.tokens = tk.encode(readTextFile(lcwtest::demoTextPath()), true);
    in.po.ctx = 128;
    in.po.batch = 128;
    in.po.maxChunks = 4;
    in.po.bosId = tk.bosId();
    in.batch = 3;
    GridOptions o;
    o.groups = {Group::Weight, Group::KvCache};
    o.methods = {"gptq"};
    const std::vector<Cell> cells = grid(o, model.get());
    QCOMPARE(cells.size(), size_t(8 + 4));
    // The demo model's narrowest linear input is 64 wide and its K/V rows 32: groups of 64 and
    // 32 instead of 128.
    const GridOptions fitted = fitToModel(o, *model);
    QCOMPARE(fitted.groupSize, int64_t(64));
    QCOMPARE(fitted.kvGroupSize, int64_t(32));
    QCOMPARE(cells[0].recipe.rules[0].weight->at("group_size").get<int64_t>(), int64_t(64));
    QCOMPARE(cells.back().recipe.rules[0].kv->at("group_size").get<int64_t>(), int64_t(32));
    NullProgress np;
    const StudyResult r = run(*model, cells, in, np); // no calibration: GPTQ cells are skipped
    QCOMPARE(r.status, Status::Ok);
    QCOMPARE(r.rows.size(), cells.size());
    const PerplexityResult base = computePerplexity(*model, in.tokens, in.po, np);
    QVERIFY(std::abs(r.baselinePpl - base.ppl) < 1e-6 * base.ppl);
    for (size_t i = 0; i < cells.size(); ++i) {
        const Row& row = r.rows[i];
        if (cells[i].calibrated) {
            QVERIFY2(row.status.find("needs calibration") != std::string::npos, row.status.c_str());
            continue;
        }
        QVERIFY2(row.ok(), row.status.c_str());
        // The same recipe compressed and measured on its own.
        compress::CompressResult c = compress::compress(*model, cells[i].recipe, np, {});
        const PerplexityResult p = computePerplexity(*c.model, in.tokens, in.po, np);
        QVERIFY2(std::abs(row.ppl - p.ppl) < 1e-5 * p.ppl,
                 qPrintable(QString("%1 %2: %3 vs %4")
                                .arg(row.setting.c_str(), row.method.c_str())
                                .arg(row.ppl)
                                .arg(p.ppl)));
        QVERIFY(row.kld >= 0);
        QVERIFY(std::abs(row.bitsPerWeight - c.model->totalSize().bitsPerWeight()) < 1e-12);
        if (row.group == Group::KvCache) QVERIFY(row.kvBitsPerValue > row.bits);
    }
    // Fewer bits lose more: W8 < W2 and KV8 < KV2 in KL divergence.
    auto kldOf = [&](const std::string& s) {
        for (const Row& x : r.rows)
            if (x.setting == s && x.method == "RTN") return x.kld;
        return -1.0;
    };
    QVERIFY(kldOf("W8") < kldOf("W4") && kldOf("W4") < kldOf("W2"));
    QVERIFY(kldOf("KV8") < kldOf("KV2"));
    QVERIFY(findConclusion(r, "lowest-bits-W"));
}

void TestStudy::cliWritesTheReport() {
    const std::string dir = lcwtest::tempDir("study-cli") + "/report";
    const auto run =
        lcwtest::runCli({"study", QString::fromStdString(lcwtest::demoModelPath()), "--groups",
                         "kv", "--methods", "kivi", "--ctx", "64", "--chunks", "2", "--no-calib",
                         "--quiet", "--json", "--out", QString::fromStdString(dir)});
    QVERIFY2(run.code == 0, run.err.constData());
    const auto j = nlohmann::json::parse(run.out.toStdString());
    QCOMPARE(j.at("rows").size(), size_t(8));
    QCOMPARE(j.at("status").get<std::string>(), std::string("complete"));
    for (const auto& row : j.at("rows"))
        QCOMPARE(row.at("status").get<std::string>(), std::string("ok"));
    QVERIFY(lcwtest::exists(dir + "/report.html"));
    QVERIFY(lcwtest::exists(dir + "/study.tsv"));
    QVERIFY(lcwtest::exists(dir + "/plot_kv_ppl.svg"));
    QCOMPARE(j.at("report").at("plots").size(), size_t(2));
    // Usage errors: no --out, unknown group.
    QCOMPARE(lcwtest::runCli({"study", QString::fromStdString(lcwtest::demoModelPath())}).code, 2);
    const auto bad = lcwtest::runCli({"study", QString::fromStdString(lcwtest::demoModelPath()),
                                      "--groups", "weights", "--out", QString::fromStdString(dir)});
    QCOMPARE(bad.code, 2);
    QVERIFY(bad.err.contains("unknown study group"));
}

QTEST_GUILESS_MAIN(TestStudy)
#include "test_study.moc"
