#include "core/eval/study_report.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

namespace lcw::study {

namespace {

std::string fmt(const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

std::string esc(const std::string& s) {
    std::string o;
    for (char c : s) {
        switch (c) {
        case '&':
            o += "&amp;";
            break;
        case '<':
            o += "&lt;";
            break;
        case '>':
            o += "&gt;";
            break;
        case '"':
            o += "&quot;";
            break;
        default:
            o += c;
        }
    }
    return o;
}

std::vector<std::string> methodsOf(const StudyResult& r, Group g) {
    std::vector<std::string> m;
    for (const Row& row : r.rows)
        if (row.group == g && std::find(m.begin(), m.end(), row.method) == m.end())
            m.push_back(row.method);
    return m;
}

const Row* cell(const StudyResult& r, const std::string& setting, const std::string& method) {
    for (const Row& row : r.rows)
        if (row.setting == setting && row.method == method) return &row;
    return nullptr;
}

double metricOf(const Row& row, PlotMetric m) {
    return m == PlotMetric::Ppl ? row.ppl : row.kld;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};

/// Maps values to the plot's y pixels (log or linear) and gives the ticks.
struct YAxis {
    bool log = false;
    double lo = 0, hi = 1;
    double top = 0, bottom = 0;
    double px(double v) const {
        const double t = log ? (std::log10(v) - lo) / (hi - lo) : (v - lo) / (hi - lo);
        return bottom - t * (bottom - top);
    }
    std::vector<double> ticks() const {
        std::vector<double> t;
        for (int i = 0; i <= 4; ++i) {
            const double x = lo + (hi - lo) * i / 4.0;
            t.push_back(log ? std::pow(10.0, x) : x);
        }
        return t;
    }
};

YAxis yAxisFor(std::vector<double> values, double top, double bottom) {
    YAxis y;
    y.top = top;
    y.bottom = bottom;
    values.erase(std::remove_if(values.begin(), values.end(),
                                [](double v) { return !std::isfinite(v) || v <= 0; }),
                 values.end());
    if (values.empty()) values = {1.0};
    const auto [mn, mx] = std::minmax_element(values.begin(), values.end());
    y.log = *mx / *mn > 3.0;
    if (y.log) {
        y.lo = std::log10(*mn) - 0.05;
        y.hi = std::log10(*mx) + 0.05;
    } else {
        const double pad = std::max(1e-9, (*mx - *mn) * 0.08 + *mx * 1e-3);
        y.lo = std::max(0.0, *mn - pad);
        y.hi = *mx + pad;
    }
    return y;
}

} // namespace

std::string svgPlot(const StudyResult& r, Group g, PlotMetric metric) {
    const std::vector<std::string> settings = settingsOf(r, g);
    const std::vector<std::string> methods = methodsOf(r, g);
    std::vector<double> values;
    for (const Row& row : r.rows)
        if (row.group == g && row.ok()) values.push_back(metricOf(row, metric));
    if (values.empty()) return {};
    const bool withBase = metric == PlotMetric::Ppl && r.baselinePpl > 0;
    if (withBase) values.push_back(r.baselinePpl);
    const double W = 560, H = 320, L = 64, R = 130, T = 34, B = 44;
    const YAxis y = yAxisFor(values, T, H - B);
    const double dx = settings.size() > 1 ? (W - L - R) / double(settings.size() - 1) : 0;
    auto xpx = [&](size_t i) { return settings.size() > 1 ? L + dx * double(i) : (W - R + L) / 2; };
    const std::string title = std::string(groupName(g)) + ": " +
                              (metric == PlotMetric::Ppl ? "perplexity" : "KL divergence (nats)") +
                              (y.log ? " (log scale)" : "");
    std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%.0f", W) +
                    "\" height=\"" + fmt("%.0f", H) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s += "<text x=\"" + fmt("%.0f", L) + "\" y=\"20\" font-size=\"14\">" + esc(title) + "</text>\n";
    for (double t : y.ticks()) {
        const double py = y.px(t);
        s += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", W - R) + "\" y1=\"" +
             fmt("%.1f", py) + "\" y2=\"" + fmt("%.1f", py) + "\" stroke=\"#ddd\"/>\n";
        s += "<text x=\"" + fmt("%.1f", L - 6) + "\" y=\"" + fmt("%.1f", py + 4) +
             "\" text-anchor=\"end\">" + fmt("%.3g", t) + "</text>\n";
    }
    s += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", W - R) + "\" y1=\"" +
         fmt("%.1f", H - B) + "\" y2=\"" + fmt("%.1f", H - B) + "\" stroke=\"black\"/>\n";
    for (size_t i = 0; i < settings.size(); ++i)
        s += "<text x=\"" + fmt("%.1f", xpx(i)) + "\" y=\"" + fmt("%.1f", H - B + 18) +
             "\" text-anchor=\"middle\">" + esc(settings[i]) + "</text>\n";
    if (withBase) {
        const double py = y.px(r.baselinePpl);
        s += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", W - R) + "\" y1=\"" +
             fmt("%.1f", py) + "\" y2=\"" + fmt("%.1f", py) +
             "\" stroke=\"black\" stroke-dasharray=\"5,4\"/>\n";
        s += "<text x=\"" + fmt("%.1f", W - R + 6) + "\" y=\"" + fmt("%.1f", py + 4) +
             "\">unquantised</text>\n";
    }
    for (size_t m = 0; m < methods.size(); ++m) {
        const char* color = kColors[m % std::size(kColors)];
        std::string pts;
        for (size_t i = 0; i < settings.size(); ++i) {
            const Row* row = cell(r, settings[i], methods[m]);
            if (!row || !row->ok() || !(metricOf(*row, metric) > 0)) continue;
            const double px = xpx(i), py = y.px(metricOf(*row, metric));
            pts += fmt("%.1f", px) + "," + fmt("%.1f", py) + " ";
            s += "<circle cx=\"" + fmt("%.1f", px) + "\" cy=\"" + fmt("%.1f", py) +
                 "\" r=\"3.5\" fill=\"" + color + "\"/>\n";
        }
        if (!pts.empty())
            s += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + std::string(color) +
                 "\" points=\"" + pts + "\"/>\n";
        const double ly = T + 18.0 * double(m);
        s += "<rect x=\"" + fmt("%.1f", W - R + 8) + "\" y=\"" + fmt("%.1f", ly + 16) +
             "\" width=\"12\" height=\"4\" fill=\"" + color + "\"/>\n";
        s += "<text x=\"" + fmt("%.1f", W - R + 24) + "\" y=\"" + fmt("%.1f", ly + 22) + "\">" +
             esc(methods[m]) + "</text>\n";
    }
    s += "</svg>\n";
    return s;
}

std::string tsv(const StudyResult& r) {
    std::set<std::string> tasks;
    for (const Row& row : r.rows)
        for (const auto& kv : row.taskAcc) tasks.insert(kv.first);
    std::string s = "group\tsetting\tmethod\tbits\tact_bits\tstatus\tbits_per_weight\tbytes\t"
                    "kv_bits_per_value\tppl\tppl_se\tppl_ratio\tkld\tkld_se\tsame_top_percent\t"
                    "compress_seconds\teval_seconds";
    for (const auto& t : tasks) s += "\ttask_" + t;
    s += "\n";
    for (const Row& x : r.rows) {
        std::string status = x.status;
        std::replace(status.begin(), status.end(), '\t', ' ');
        std::replace(status.begin(), status.end(), '\n', ' ');
        s += std::string(groupName(x.group)) + "\t" + x.setting + "\t" + x.method + "\t" +
             std::to_string(x.bits) + "\t" + std::to_string(x.actBits) + "\t" + status + "\t" +
             fmt("%.4f", x.bitsPerWeight) + "\t" + std::to_string(x.bytes) + "\t" +
             fmt("%.4f", x.kvBitsPerValue) + "\t" + fmt("%.6g", x.ppl) + "\t" +
             fmt("%.4g", x.pplError) + "\t" +
             fmt("%.6g", r.baselinePpl > 0 ? x.ppl / r.baselinePpl : 0) + "\t" +
             fmt("%.6g", x.kld) + "\t" + fmt("%.3g", x.kldError) + "\t" +
             fmt("%.3f", x.sameTop * 100) + "\t" + fmt("%.2f", x.compressSeconds) + "\t" +
             fmt("%.2f", x.evalSeconds);
        for (const auto& t : tasks) {
            auto it = x.taskAcc.find(t);
            s += '\t';
            if (it != x.taskAcc.end()) s += fmt("%.4f", it->second);
        }
        s += "\n";
    }
    return s;
}

namespace {

/// The paper's table of one group: settings as rows, methods as columns, PPL (KLD) per cell,
/// the best PPL of a row in bold.
std::string groupTable(const StudyResult& r, Group g) {
    const auto settings = settingsOf(r, g);
    const auto methods = methodsOf(r, g);
    std::string s = "<table><tr><th>setting</th>";
    for (const auto& m : methods) s += "<th>" + esc(m) + "</th>";
    s += "</tr>\n";
    for (const auto& st : settings) {
        double bestPpl = INFINITY;
        for (const auto& m : methods)
            if (const Row* x = cell(r, st, m); x && x->ok()) bestPpl = std::min(bestPpl, x->ppl);
        s += "<tr><td>" + esc(st) + "</td>";
        for (const auto& m : methods) {
            const Row* x = cell(r, st, m);
            if (!x) {
                s += "<td>—</td>";
            } else if (!x->ok()) {
                s += "<td class=\"err\">" + esc(x->status) + "</td>";
            } else {
                const std::string p = fmt("%.4g", x->ppl) + " ± " + fmt("%.2g", x->pplError);
                s += "<td>" + (x->ppl == bestPpl ? "<b>" + p + "</b>" : p) + "<br><small>KLD " +
                     fmt("%.4g", x->kld) + ", same top " + fmt("%.1f", x->sameTop * 100) +
                     " %</small></td>";
            }
        }
        s += "</tr>\n";
    }
    return s + "</table>\n";
}

std::string allRowsTable(const StudyResult& r) {
    std::set<std::string> tasks;
    for (const Row& row : r.rows)
        for (const auto& kv : row.taskAcc) tasks.insert(kv.first);
    std::string s = "<table><tr><th>group</th><th>setting</th><th>method</th><th>bits/weight</th>"
                    "<th>size (MB)</th><th>KV bits/value</th><th>PPL</th><th>KLD</th>"
                    "<th>same top %</th><th>compress s</th><th>eval s</th>";
    for (const auto& t : tasks) s += "<th>" + esc(t) + " acc</th>";
    s += "</tr>\n<tr><td>—</td><td>unquantised</td><td>—</td><td></td><td></td><td></td><td>" +
         fmt("%.4g", r.baselinePpl) + "</td><td>0</td><td>100</td><td></td><td></td>";
    for (const auto& t : tasks) {
        auto it = r.baselineTaskAcc.find(t);
        s += "<td>" + (it == r.baselineTaskAcc.end() ? "" : fmt("%.3f", it->second)) + "</td>";
    }
    s += "</tr>\n";
    for (const Row& x : r.rows) {
        s += "<tr><td>" + std::string(groupName(x.group)) + "</td><td>" + esc(x.setting) +
             "</td><td>" + esc(x.method) + "</td>";
        if (!x.ok()) {
            s += "<td colspan=\"" + std::to_string(8 + tasks.size()) + "\" class=\"err\">" +
                 esc(x.status) + "</td></tr>\n";
            continue;
        }
        s += "<td>" + fmt("%.3f", x.bitsPerWeight) + "</td><td>" +
             fmt("%.3f", double(x.bytes) / 1e6) + "</td><td>" +
             (x.kvBitsPerValue > 0 ? fmt("%.2f", x.kvBitsPerValue) : "") + "</td><td>" +
             fmt("%.4g", x.ppl) + "</td><td>" + fmt("%.4g", x.kld) + "</td><td>" +
             fmt("%.1f", x.sameTop * 100) + "</td><td>" + fmt("%.1f", x.compressSeconds) +
             "</td><td>" + fmt("%.1f", x.evalSeconds) + "</td>";
        for (const auto& t : tasks) {
            auto it = x.taskAcc.find(t);
            s += "<td>" + (it == x.taskAcc.end() ? "" : fmt("%.3f", it->second)) + "</td>";
        }
        s += "</tr>\n";
    }
    return s + "</table>\n";
}

const char* kGroupTitles[] = {"Weight-only quantisation (W)", "Weight-activation quantisation (WA)",
                              "KV-cache quantisation (KV)"};

} // namespace

std::string html(const StudyResult& r, const std::vector<std::string>& plots) {
    std::string s =
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lcw study — " + esc(r.model) +
        "</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;}"
        "table{border-collapse:collapse;margin:0.5em 0 1em 0;}td,th{border:1px solid #bbb;"
        "padding:3px 8px;text-align:right;}th{background:#eee;}.err{color:#a00;text-align:left;}"
        "</style></head><body>\n";
    s += "<h1>Quantisation study</h1>\n<p>Model <code>" + esc(r.model) +
         "</code>; unquantised PPL " + fmt("%.4f", r.baselinePpl) + " ± " +
         fmt("%.4f", r.baselinePplError) + " (ctx " + std::to_string(r.ctx) + ", " +
         std::to_string(r.chunks) + " chunks, " + std::to_string(r.scoredTokens) +
         " scored tokens, llama.cpp's chunks); " + std::to_string(r.rows.size()) +
         " configurations in " + fmt("%.0f", r.seconds) + " s" +
         (r.status == Status::Ok ? "" : " — <b>cancelled</b>, the rows done so far") + ".</p>\n";
    if (!r.settings.empty())
        s += "<p><small>settings: <code>" + esc(r.settings.dump()) + "</code></small></p>\n";
    s += "<h2>Conclusions for this model</h2>\n<ul>\n";
    for (const Conclusion& c : r.conclusions) s += "<li>" + esc(c.text) + "</li>\n";
    s += "</ul>\n";
    for (Group g : {Group::Weight, Group::WeightActivation, Group::KvCache}) {
        if (settingsOf(r, g).empty()) continue;
        s += "<h2>" + std::string(kGroupTitles[int(g)]) + "</h2>\n" + groupTable(r, g);
        const std::string prefix = "plot_" +
                                   std::string(g == Group::Weight    ? "w"
                                               : g == Group::KvCache ? "kv"
                                                                     : "wa") +
                                   "_";
        for (const std::string& p : plots)
            if (p.rfind(prefix, 0) == 0)
                s += "<img src=\"" + esc(p) + "\" alt=\"" + esc(p) + "\"> ";
        s += "\n";
    }
    s += "<h2>All configurations</h2>\n" + allRowsTable(r);
    s += "<p><small>PPL: llama.cpp's perplexity over the same chunks for every configuration; KLD: "
         "mean KL(unquantised ‖ quantised) per token; near-lossless: PPL ≤ " +
         fmt("%.2f", kNearLosslessRatio) +
         " × unquantised. Data: study.json, study.tsv.</small></p>\n</body></html>\n";
    return s;
}

ReportFiles writeReport(const StudyResult& r, const std::string& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw Error("cannot create the report folder " + dir + ": " + ec.message());
    ReportFiles f;
    for (Group g : {Group::Weight, Group::WeightActivation, Group::KvCache})
        for (PlotMetric m : {PlotMetric::Ppl, PlotMetric::Kld}) {
            const std::string svg = svgPlot(r, g, m);
            if (svg.empty()) continue;
            std::string name = std::string("plot_") +
                               (g == Group::Weight    ? "w"
                                : g == Group::KvCache ? "kv"
                                                      : "wa") +
                               (m == PlotMetric::Ppl ? "_ppl.svg" : "_kld.svg");
            writeFileAtomic((fs::path(dir) / name).string(), svg);
            f.plots.push_back(name);
        }
    f.tsv = (fs::path(dir) / "study.tsv").string();
    writeFileAtomic(f.tsv, tsv(r));
    f.json = (fs::path(dir) / "study.json").string();
    writeFileAtomic(f.json, toJson(r).dump(2) + "\n");
    f.html = (fs::path(dir) / "report.html").string();
    writeFileAtomic(f.html, html(r, f.plots));
    return f;
}

} // namespace lcw::study
